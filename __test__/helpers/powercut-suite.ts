/**
 * What the power-cut specs share (powercut.spec.ts for layers, images-powercut.spec.ts for
 * image records): their gate and serial registration, the rig's work directory and logged
 * disk torn down after the file, a layer as a crash must show it, the store's leftovers after
 * a re-open, and the loop over a plan's crash states of one kind.
 *
 *   const suite = usePowercut(test)
 *   suite.register('the workload runs', async (t) => { suite.disk = await LoggedDisk.start(suite.bin, suite.work) ... })
 *   suite.register('crash states: prefixes', (t) => checkStates(t, suite, plan, 'prefix', describe, inspect))
 */
import type { ExecutionContext, TestFn } from 'ava'
import { randomInt } from 'node:crypto'
import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { BtrfsDriver, isReadOnly } from '../../ts/index'
import { oracleListAll, requireBtrfs } from './btrfs'
import { isTemporary } from './driver-util'
import { describeTree, explain, isAllowed, type LayerHistory, type LayerState } from './powercut-model'
import { checkCrashImage, fuseUnavailable, powercutBinary, teardownCrashImage, type CrashState, type LoggedDisk, type Plan } from './powercut-rig'

export const STATES = Number(process.env.BTRFS_LAYERS_POWERCUT_STATES ?? 200)
export const SEED = process.env.BTRFS_LAYERS_POWERCUT_SEED !== undefined ? Number(process.env.BTRFS_LAYERS_POWERCUT_SEED) : randomInt(2 ** 31)
const KEEP = process.env.BTRFS_LAYERS_POWERCUT_KEEP === '1'

export interface PowercutSuite {
  /** Register a serial test that needs the rig: skipped loudly without it, failing when required. */
  register(title: string, impl: (t: ExecutionContext) => Promise<void>): void
  /** The `powercut` program (built in `before`). */
  bin: string
  /** The file's work directory (made in `before`, removed after unless KEEP). */
  work: string
  /** The logged disk, once a test started it: torn down after the file. */
  disk: LoggedDisk | undefined
}

/**
 * Gate the file's tests on btrfs, FUSE and cargo (and `also`, a reason they cannot run, if
 * any), and set up and tear down the rig's work directory around them.
 */
export function usePowercut(test: TestFn, also?: () => string | undefined): PowercutSuite {
  const gate = requireBtrfs(test.meta.file)
  const why = gate.available ? (fuseUnavailable() ?? also?.()) : undefined
  if (gate.available && why) {
    const bar = '!'.repeat(100)
    const verdict = gate.required ? 'BTRFS_LAYERS_REQUIRE_BTRFS=1 is set, so they FAIL.' : 'They are SKIPPED.'
    console.error(`\n${bar}\n!!! btrfs-layers: the power-cut tests of ${path.basename(test.meta.file)} cannot run: ${why}\n!!! ${verdict}\n${bar}\n`)
  }
  const runnable = gate.available && !why
  const suite: PowercutSuite = {
    bin: '',
    work: '',
    disk: undefined,
    register(title, impl) {
      if (runnable) {
        test.serial(title, async (t) => {
          t.timeout(10 * 60_000)
          await impl(t)
        })
      } else if (gate.required) {
        test.serial(title, (t) => t.fail(`cannot run with BTRFS_LAYERS_REQUIRE_BTRFS=1: ${gate.reason ?? why}`))
      } else {
        test.serial.skip(title, () => {})
      }
    },
  }
  if (runnable) {
    test.before(async () => {
      suite.bin = powercutBinary()
      suite.work = await fsp.mkdtemp(path.join(os.tmpdir(), 'btrfs-layers-powercut-'))
    })
    test.after.always(async (t) => {
      await suite.disk?.teardown()
      if (!suite.work) return
      await teardownCrashImage(suite.work)
      if (KEEP) t.log(`kept the base image, write log and plan in ${suite.work} (powercut build --base base.img --log writes.log --plan plan.json --state ID --out FILE)`)
      else await fsp.rm(suite.work, { recursive: true, force: true })
    })
  }
  return suite
}

/** A layer as the driver shows it: its tree, read-only flag and recorded parent. */
export async function observeLayer(driver: BtrfsDriver, id: string): Promise<LayerState> {
  const dir = await driver.get(id)
  try {
    let parent: string
    try {
      parent = (await driver.getMetadata(id)).parent ?? ''
    } catch (e) {
      parent = `<getMetadata fails: ${(e as { code?: string }).code ?? (e as Error).message}>`
    }
    return { tree: await describeTree(dir), readOnly: await isReadOnly(dir), parent }
  } finally {
    await driver.put(id)
  }
}

/** Re-open the store at `home` of a crash image with `BtrfsDriver.init` and run `fn` on it (cleaned up after): what is wrong. */
export async function withCrashedStore(home: string, fn: (driver: BtrfsDriver) => Promise<string[]>): Promise<string[]> {
  let driver: BtrfsDriver
  try {
    driver = await BtrfsDriver.init(home)
  } catch (e) {
    return [`BtrfsDriver.init fails: ${(e as Error).message}`]
  }
  try {
    return await fn(driver)
  } finally {
    await driver.cleanup()
  }
}

/** Each layer the workload made, or the driver has, that is in none of the states a crash before `cut` may show. */
export async function layerProblems(driver: BtrfsDriver, history: LayerHistory, cut: number, present: ReadonlySet<string>): Promise<string[]> {
  const problems: string[] = []
  const allowed = history.allowed(cut)
  for (const id of [...new Set([...history.layers(), ...present])].sort()) {
    const may = allowed.get(id)
    if (!may) {
      problems.push(`layer '${id}' was never made by the workload`)
      continue
    }
    const seen = present.has(id) ? await observeLayer(driver, id) : null
    if (!isAllowed(seen, may)) problems.push(explain(id, seen, may))
  }
  return problems
}

/**
 * What a re-opened store at `home` (on the crash image mounted at `mnt`) still has that it
 * should not: temporaries in home, subvolumes/ and metadata/, entries of subvolumes/ that are
 * no layer (`present`), temporary subvolumes anywhere (btrfs-progs' list).
 */
export async function storeLeftovers(mnt: string, home: string, present: ReadonlySet<string>): Promise<string[]> {
  const problems: string[] = []
  const store = path.relative(mnt, home)
  for (const d of ['', 'subvolumes', 'metadata']) {
    const names = await fsp.readdir(path.join(home, d)).catch(() => [] as string[])
    for (const n of names.filter(isTemporary)) problems.push(`a temporary is left after init: ${path.posix.join(store, d, n)}`)
    if (d !== 'subvolumes') continue
    for (const n of names.filter((n) => !isTemporary(n) && !present.has(n))) problems.push(`${store}/subvolumes/${n} is left, but is no layer`)
  }
  for (const s of await oracleListAll(mnt)) {
    if (s.path.split('/').some(isTemporary)) problems.push(`a temporary subvolume is left after init: ${s.path}`)
  }
  return problems
}

/** A crash state, and where the workload was when the power went. */
export function describeState(s: CrashState, history: LayerHistory): string {
  const returned = history.returned(s.cut)
  const inFlight = history.steps.find((st) => st.begin < s.cut && st.end >= s.cut)
  const last = returned.slice(-2).map((st) => `'${st.name}'`)
  return (
    `crash state ${s.id} (${s.kind}): ${s.label}\n` +
    `  returned before the cut: ${returned.length} of ${history.steps.length} steps${last.length ? `, the last ${last.join(', ')}` : ''}` +
    `${inFlight ? `; in flight: '${inFlight.name}'` : ''}`
  )
}

/** Check every crash state of `kind` with `inspect` (what is wrong on its mounted image); fail with the first few. */
export async function checkStates(
  t: ExecutionContext,
  suite: PowercutSuite,
  plan: Plan | undefined,
  history: LayerHistory | undefined,
  kind: CrashState['kind'],
  inspect: (mnt: string, s: CrashState, history: LayerHistory) => Promise<string[]>,
): Promise<void> {
  const disk = suite.disk
  if (!disk || !history || !plan) {
    t.fail('the workload did not run')
    return
  }
  const states = plan.states.filter((s) => s.kind === kind)
  const started = Date.now()
  const failures: string[] = []
  for (const s of states) {
    // A check that throws is a finding about this state; the others still run.
    const problems = await checkCrashImage(suite.bin, disk, plan, s, (mnt) => inspect(mnt, s, history)).catch((e: Error) => [`checking it throws: ${e.stack ?? e.message}`])
    if (problems.length > 0) failures.push(`${describeState(s, history)}\n${problems.map((p) => `  - ${p.replace(/\n/g, '\n    ')}`).join('\n')}`)
  }
  t.log(`${states.length} ${kind} crash states checked in ${((Date.now() - started) / 1000).toFixed(1)} s`)
  if (failures.length === 0) {
    t.pass()
    return
  }
  t.fail(
    `${failures.length} of ${states.length} ${kind} crash states are wrong (seed ${SEED}: BTRFS_LAYERS_POWERCUT_SEED=${SEED} ` +
      `chooses the same states from the same log; BTRFS_LAYERS_POWERCUT_KEEP=1 keeps the log):\n\n${failures.slice(0, 4).join('\n\n')}` +
      (failures.length > 4 ? `\n\n... and ${failures.length - 4} more` : ''),
  )
}
