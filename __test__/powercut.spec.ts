/**
 * The power-cut test (DESIGN.md, invariant 2): every driver call that publishes or removes a
 * layer runs on a btrfs whose disk logs every write and flush it receives (this kernel has no
 * dm-log-writes: the loop device's backing file is served by crates/powercut over FUSE). Crash
 * images are rebuilt from the log: each flushed prefix, and random subsets of the writes after
 * the last flush, whole or torn at 4 KiB. Each must pass `btrfs check`, mount, open with
 * `BtrfsDriver.init`, show every layer complete (one of the states the workload gave it) or
 * absent, keep no temporaries, and lose nothing that a returned sync made durable.
 *
 * Environment: BTRFS_LAYERS_POWERCUT_STATES (crash states, default 200),
 * BTRFS_LAYERS_POWERCUT_SEED (which states; printed, random by default),
 * BTRFS_LAYERS_POWERCUT_KEEP=1 (keep the base image, log and plan, and print where).
 */
import test, { type ExecutionContext } from 'ava'
import { createHash } from 'node:crypto'
import * as path from 'node:path'
import { BtrfsDriver, sync, type IdMap } from '../ts/index'
import { buildTar, dir, file, symlink, type RawEntry } from './helpers/diff-tar'
import { prng } from './helpers/driver-util'
import { LayerHistory, type LayerState } from './helpers/powercut-model'
import { LoggedDisk, planCrashStates, type CrashState, type Plan } from './helpers/powercut-rig'
import { checkStates, layerProblems, observeLayer, SEED, STATES, storeLeftovers, usePowercut, withCrashedStore } from './helpers/powercut-suite'

const STORE = 'store'
const SHIFT: { uidMaps: IdMap[]; gidMaps: IdMap[] } = {
  uidMaps: [{ containerId: 0, hostId: 100000, size: 65536 }],
  gidMaps: [{ containerId: 0, hostId: 100000, size: 65536 }],
}

// ---------------------------------------------------------------------------------------------
// The layers' contents
// ---------------------------------------------------------------------------------------------

const DIRS = ['etc', 'etc/app', 'usr', 'usr/lib', 'usr/lib/app', 'var', 'var/lib', 'var/lib/app']
const FILE_DIRS = ['etc/app', 'usr/lib/app', 'var/lib/app', '']
const fileName = (i: number) => path.posix.join(FILE_DIRS[i % 4], `f${String(i).padStart(3, '0')}.dat`)

/** Known, non-empty contents from 1 byte to ~9 KiB: inline extents and regular ones. */
function content(tag: string, i: number): Buffer {
  const rnd = prng(createHash('sha256').update(`${tag}${i}`).digest().readUInt32LE(0))
  return Buffer.from(Array.from({ length: 1 + ((i * 997) % 9000) }, () => Math.floor(rnd() * 256)))
}

/** The base layer's diff: 8 directories, 200 files, a symlink. */
function baseEntries(): RawEntry[] {
  const entries: RawEntry[] = DIRS.map((d) => dir(`${d}/`, { mode: 0o755 }))
  for (let i = 0; i < 200; i++) {
    const owner = i % 5 === 0 ? 1000 : 0
    entries.push(file(fileName(i), content('base', i), { mode: [0o644, 0o600, 0o755][i % 3], uid: owner, gid: owner }))
  }
  entries.push(symlink('etc/app/current', 'f000.dat'))
  return entries
}

/** The child layer's diff: 20 files rewritten, 10 added, 5 deleted (whiteouts). */
function childEntries(): RawEntry[] {
  const entries: RawEntry[] = []
  for (let i = 0; i < 20; i++) entries.push(file(fileName(i), content('child', i), { mode: 0o644 }))
  for (let i = 0; i < 10; i++) entries.push(file(`etc/app/new${i}.conf`, content('new', i + 50), { mode: 0o640 }))
  for (let i = 190; i < 195; i++) entries.push(file(path.posix.join(path.posix.dirname(fileName(i)), `.wh.${path.posix.basename(fileName(i))}`)))
  return entries
}

/** What `describeTree` must show of the files and links of a diff applied on nothing. */
function expectedFiles(entries: RawEntry[]): Record<string, string> {
  const out: Record<string, string> = {}
  for (const e of entries) {
    const name = String(e.name)
    if (e.type === '0') {
      const body = Buffer.from(e.body ?? '')
      const sha = createHash('sha256').update(body).digest('hex').slice(0, 16)
      out[name] = `file ${(e.mode ?? 0o644).toString(8)} ${e.uid ?? 0}:${e.gid ?? 0} ${body.length} ${sha}`
    } else if (e.type === '2') {
      out[name] = `link ${e.linkname} ${e.uid ?? 0}:${e.gid ?? 0}`
    }
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// The workload: every call that publishes or removes a layer
// ---------------------------------------------------------------------------------------------

/** The durability point: `driver.sync()` once the driver has one, else a sync of the store's filesystem. */
async function syncStore(driver: BtrfsDriver, home: string): Promise<void> {
  const own = (driver as unknown as { sync?: () => Promise<void> }).sync
  if (typeof own === 'function') await own.call(driver)
  else await sync(home)
}

interface Step {
  name: string
  run: (d: BtrfsDriver, home: string) => Promise<unknown>
  /** Layers whose state it sets; `removes` sets them absent. */
  changes: string[]
  removes?: boolean
  sync?: boolean
}

const STEPS: Step[] = [
  { name: 'create other (empty)', run: (d) => d.create('other'), changes: ['other'] },
  { name: 'create base (empty)', run: (d) => d.create('base'), changes: ['base'] },
  { name: 'applyDiff base (200 files)', run: (d) => d.applyDiff('base', null, buildTar(baseEntries())), changes: ['base'] },
  // Right after an applyDiff, a snapshot of another parent commits the transaction.
  { name: 'create sibling from other', run: (d) => d.create('sibling', 'other'), changes: ['sibling'] },
  { name: 'create child from base', run: (d) => d.create('child', 'base'), changes: ['child'] },
  { name: 'applyDiff child (20 rewritten, 10 added, 5 deleted)', run: (d) => d.applyDiff('child', 'base', buildTar(childEntries())), changes: ['child'] },
  { name: 'create image from child, read-only', run: (d) => d.create('image', 'child', { readOnly: true }), changes: ['image'] },
  { name: 'remap image to image-ns', run: (d) => d.remap('image', 'image-ns', SHIFT), changes: ['image-ns'] },
  { name: 'remove sibling', run: (d) => d.remove('sibling'), changes: ['sibling'], removes: true },
  { name: 'sync', run: (d, home) => syncStore(d, home), changes: [], sync: true },
  // After the sync: these may be lost, what came before may not.
  { name: 'create late (empty)', run: (d) => d.create('late'), changes: ['late'] },
  { name: 'remove other', run: (d) => d.remove('other'), changes: ['other'], removes: true },
]

/**
 * Run the steps between marks and record each layer's state after each step. A layer is read
 * only just before a later step changes it (or at the end), so that nothing but the workload
 * runs between one step and the next.
 */
async function runWorkload(disk: LoggedDisk): Promise<LayerHistory> {
  const home = path.join(disk.mnt, STORE)
  const changed: Map<string, LayerState | null>[] = STEPS.map(() => new Map())
  const unread = new Map<string, number>()
  const driver = await BtrfsDriver.init(home)
  try {
    const read = async (ids: Iterable<string>) => {
      for (const id of ids) {
        const step = unread.get(id)
        if (step === undefined) continue
        changed[step].set(id, await observeLayer(driver, id))
        unread.delete(id)
      }
    }
    for (const [i, step] of STEPS.entries()) {
      await read(step.changes)
      disk.mark(`begin ${i} ${step.name}`)
      await step.run(driver, home)
      disk.mark(`end ${i} ${step.name}`)
      for (const id of step.changes) {
        if (step.removes) changed[i].set(id, null)
        else unread.set(id, i)
      }
    }
    await read([...unread.keys()])
  } finally {
    await driver.cleanup()
  }
  const history = new LayerHistory()
  STEPS.forEach((s, i) => history.push(s.name, s.sync === true, changed[i]))
  return history
}

// ---------------------------------------------------------------------------------------------
// Checking one crash image
// ---------------------------------------------------------------------------------------------

/** What is wrong with the store on the mounted crash image of `state`. */
async function inspect(mnt: string, state: CrashState, history: LayerHistory): Promise<string[]> {
  const home = path.join(mnt, STORE)
  return withCrashedStore(home, async (driver) => {
    const present = new Set(await driver.layers())
    return [...(await layerProblems(driver, history, state.cut, present)), ...(await storeLeftovers(mnt, home, present))]
  })
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

const suite = usePowercut(test)
const register = suite.register
let history: LayerHistory | undefined
let plan: Plan | undefined

register('the workload runs on a disk that logs every write and flush, with its calls marked', async (t) => {
  t.log(`seed ${SEED} (BTRFS_LAYERS_POWERCUT_SEED), ${STATES} crash states (BTRFS_LAYERS_POWERCUT_STATES)`)
  const started = Date.now()
  const disk = await LoggedDisk.start(suite.bin, suite.work, 4 * 2 ** 30)
  suite.disk = disk
  const h = await runWorkload(disk)
  await disk.release()
  const p = planCrashStates(suite.bin, disk, { states: STATES, seed: SEED })
  h.place(p.marks)
  t.log(
    `workload: ${h.steps.length} steps in ${Date.now() - started} ms; the log: ${p.records} records, ${p.writes} writes ` +
      `(${(p.written / 2 ** 20).toFixed(1)} MiB), ${p.flushes} flushes, ${p.superblockWrites.length} superblock writes`,
  )

  // The rig itself: flushes arrive, and the sync's commit is inside its marks.
  t.true(p.flushes > 0, 'the log holds flushes')
  const syncStep = h.steps.find((s) => s.sync)!
  const within = (records: number[]) => records.some((r) => r > syncStep.begin && r < syncStep.end)
  t.true(within(p.flushRecords), 'a flush was logged while the sync ran')
  t.true(within(p.superblockWrites), 'a superblock was written while the sync ran')
  t.true(p.flushRecords.some((f) => p.superblockWrites.some((w) => w < f && w > syncStep.begin && f < syncStep.end)), 'the new superblock was flushed before the sync returned')

  // The model: the workload gave the layers the trees its diffs describe.
  const final = h.allowed(Number.MAX_SAFE_INTEGER)
  const last = (id: string) => final.get(id)?.at(-1)?.state
  const files = (s: LayerState | null | undefined) => Object.fromEntries(Object.entries(s?.tree ?? {}).filter(([, v]) => !v.startsWith('dir ')))
  t.deepEqual(files(last('base')), expectedFiles(baseEntries()), 'base holds its diff')
  const child = { ...expectedFiles(baseEntries()), ...expectedFiles(childEntries().filter((e) => !String(e.name).includes('.wh.'))) }
  for (let i = 190; i < 195; i++) delete child[fileName(i)]
  t.deepEqual(files(last('child')), child, 'child holds base with its own diff applied')
  t.deepEqual(files(last('image')), child, 'image is a snapshot of child')
  t.true(last('image')?.readOnly, 'image is read-only')
  t.true(Object.values(last('image-ns')?.tree ?? {}).every((v) => /\s10[01]\d{3}:10[01]\d{3}(\s|$)/.test(v)), 'image-ns is owned by the shifted ids')
  history = h
  plan = p
})

const check = (kind: CrashState['kind']) => (t: ExecutionContext) => checkStates(t, suite, plan, history, kind, inspect)

register('crash states: every flushed prefix of the log (the commits first)', check('prefix'))
register('crash states: the writes after the last flush lost or reordered', check('reordered'))
register('crash states: the writes after the last flush torn at 4 KiB', check('torn'))
