/**
 * The power-cut test of the image store (DESIGN.md, invariant 2, for image records): pulls, an
 * importLayout, tag moves and removes run on a btrfs whose disk logs every write and flush
 * (helpers/powercut-rig.ts); the registry and the layout live outside it. Each crash image
 * rebuilt from the log must open (`BtrfsDriver.init`, then `ImageStore.open`: every record
 * parses), show each image's record in a state the workload gave it (every call fsyncs its
 * records before it returns, so what a returned call wrote stays), every layer a record names
 * present, every layer complete with its files or absent (never half; what a returned
 * `driver.sync()` made durable stays), no temporaries, and pulling the images again completes.
 *
 * Environment: as powercut.spec.ts (BTRFS_LAYERS_POWERCUT_STATES, _SEED, _KEEP).
 */
import test, { type ExecutionContext } from 'ava'
import { createHash, randomBytes } from 'node:crypto'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { BtrfsDriver, ImageStore } from '../ts/index'
import { dir, file, type RawEntry } from './helpers/diff-tar'
import { prng } from './helpers/driver-util'
import { image, layer, writeLayout, type BuiltImage } from './helpers/oci-layout'
import { LayerHistory, type LayerState } from './helpers/powercut-model'
import { LoggedDisk, planCrashStates, type CrashState, type Plan } from './helpers/powercut-rig'
import { checkStates, layerProblems, observeLayer, SEED, STATES, storeLeftovers, usePowercut, withCrashedStore } from './helpers/powercut-suite'
import { startRegistry, useRegistryTools, type TestRegistry } from './helpers/registry'

const STORE = 'store'
const tools = useRegistryTools(test)
const suite = usePowercut(test, () => (tools.available ? undefined : 'the registry tools are not installed (bash scripts/test-tools.sh)'))

// ---------------------------------------------------------------------------------------------
// The images: A (base, a1, a2), B (base, b1), C (base, c1, imported), D (base, d1: b:v1 moves to it)
// ---------------------------------------------------------------------------------------------

/** `n` files under `top/` of known contents from 1 byte to ~9 KiB (inline extents and regular ones). */
function files(top: string, n: number): RawEntry[] {
  const rnd = prng(createHash('sha256').update(top).digest().readUInt32LE(0))
  const out: RawEntry[] = [dir(`${top}/`)]
  for (let i = 0; i < n; i++) out.push(file(`${top}/f${i}.dat`, Buffer.from(Array.from({ length: 1 + ((i * 997) % 9000) }, () => Math.floor(rnd() * 256)))))
  return out
}

interface Fixture {
  a: BuiltImage
  b: BuiltImage
  c: BuiltImage
  d: BuiltImage
}

async function fixture(): Promise<Fixture> {
  const base = await layer(files('usr', 60), 'gzip')
  const own = async (name: string, n: number, extra: RawEntry[] = []) => layer([...files(name, n), ...extra], 'gzip')
  const a1 = await own('a1', 20, [file('usr/.wh.f3.dat')])
  return {
    a: image([base, a1, await own('a2', 8)]),
    b: image([base, await own('b1', 15)]),
    c: image([base, await own('c1', 12)]),
    d: image([base, await own('d1', 10)]),
  }
}

// ---------------------------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------------------------

interface Ctx {
  driver: BtrfsDriver
  images: ImageStore
}

interface Step {
  name: string
  /** Done before the begin mark (on the registry, off the logged disk). */
  before?: () => Promise<unknown>
  run: (c: Ctx) => Promise<unknown>
  sync?: boolean
}

let reg: TestRegistry | undefined
let fx: Fixture | undefined
let layoutC = ''
let history: LayerHistory | undefined
let plan: Plan | undefined
/** Each image's record after each step: digest -> its references, space-separated (absent: not in the map). */
const recordsAfter: Map<string, string>[] = [new Map()]

const refOf = (r: TestRegistry, tag: string) => `${r.host}/img/${tag}`

async function pushImage(r: TestRegistry, work: string, img: BuiltImage, ref: string): Promise<void> {
  const l = path.join(work, `layout-${randomBytes(4).toString('hex')}`)
  await writeLayout(l, [img])
  await r.crane(['push', l, ref])
}

function steps(r: TestRegistry, f: Fixture, work: string): Step[] {
  return [
    { name: 'pull app:v1 (A, 3 layers)', run: (c) => c.images.pull(refOf(r, 'app:v1')) },
    { name: 'pull b:v1 (B: the base reused, 1 layer)', run: (c) => c.images.pull(refOf(r, 'b:v1')) },
    { name: 'pull app:again (A: a second reference)', run: (c) => c.images.pull(refOf(r, 'app:again')) },
    { name: 'sync', run: (c) => c.driver.sync(), sync: true },
    { name: 'remove app:v1 (A keeps app:again)', run: (c) => c.images.remove(refOf(r, 'app:v1')) },
    { name: 'importLayout C (the base reused, 1 layer)', run: (c) => c.images.importLayout(layoutC, { reference: 'local/c:v1' }) },
    { name: 'remove app:again (A goes, and its 2 own layers)', run: (c) => c.images.remove(refOf(r, 'app:again')) },
    {
      name: 'pull b:v1 moved to D (the tag moves off B)',
      before: () => pushImage(r, work, f.d, refOf(r, 'b:v1')),
      run: (c) => c.images.pull(refOf(r, 'b:v1')),
    },
    { name: 'remove B by digest (its own layer goes)', run: (c) => c.images.remove(f.b.digest) },
  ]
}

async function recordStates(images: ImageStore): Promise<Map<string, string>> {
  return new Map((await images.list()).map((i) => [i.digest, i.references.join(' ')]))
}

async function runWorkload(disk: LoggedDisk, list: Step[]): Promise<LayerHistory> {
  const driver = await BtrfsDriver.init(path.join(disk.mnt, STORE))
  const h = new LayerHistory()
  try {
    const images = await ImageStore.open(driver)
    let layers = new Set<string>()
    for (const [i, step] of list.entries()) {
      await step.before?.()
      disk.mark(`begin ${i} ${step.name}`)
      await step.run({ driver, images })
      disk.mark(`end ${i} ${step.name}`)
      // Read between the steps (noatime: reading writes nothing).
      const now = new Set(await driver.layers())
      const changed = new Map<string, LayerState | null>()
      for (const id of now) if (!layers.has(id)) changed.set(id, await observeLayer(driver, id))
      for (const id of layers) if (!now.has(id)) changed.set(id, null)
      layers = now
      h.push(step.name, step.sync === true, changed)
      recordsAfter.push(await recordStates(images))
    }
  } finally {
    await driver.cleanup()
  }
  return h
}

// ---------------------------------------------------------------------------------------------
// Checking one crash image
// ---------------------------------------------------------------------------------------------

/**
 * The references each image's record may show after a crash before record `cut`: what the
 * steps that returned wrote (fsynced before they returned), up to what the steps that began may have.
 */
function allowedRecords(h: LayerHistory, cut: number): Map<string, (string | null)[]> {
  const returned = h.steps.filter((s) => s.end < cut).length
  const started = h.steps.filter((s) => s.begin < cut).length
  const digests = new Set(recordsAfter.flatMap((m) => [...m.keys()]))
  const out = new Map<string, (string | null)[]>()
  for (const d of digests) {
    const states = new Set<string | null>()
    for (let t = returned; t <= started; t++) states.add(recordsAfter[t].get(d) ?? null)
    out.set(d, [...states])
  }
  return out
}

function nameOf(digest: string): string {
  const f = fx as Fixture
  const name = (['a', 'b', 'c', 'd'] as const).find((k) => f[k].digest === digest)
  return name ? `image ${name.toUpperCase()}` : `image ${digest}`
}

const shown = (refs: string | null) => (refs === null ? 'absent' : `[${refs}]`)

async function inspect(mnt: string, state: CrashState, h: LayerHistory): Promise<string[]> {
  const home = path.join(mnt, STORE)
  return withCrashedStore(home, async (driver) => {
    let images: ImageStore
    try {
      images = await ImageStore.open(driver)
    } catch (e) {
      return [`ImageStore.open fails: ${(e as Error).message}`]
    }
    const present = new Set(await driver.layers())
    const problems = await layerProblems(driver, h, state.cut, present)
    const seen = await recordStates(images)
    const may = allowedRecords(h, state.cut)
    for (const d of new Set([...may.keys(), ...seen.keys()])) {
      const allowed = may.get(d) ?? [null]
      const refs = seen.get(d) ?? null
      if (!allowed.includes(refs)) problems.push(`${nameOf(d)}'s record is ${shown(refs)}; it may be ${allowed.map(shown).join(' or ')}`)
    }
    for (const rec of await images.list()) {
      for (const [i, id] of rec.layers.entries()) if (!present.has(id)) problems.push(`${nameOf(rec.digest)}'s record names layer ${i} (${id}), which is absent`)
    }
    problems.push(...(await storeLeftovers(mnt, home, present)))
    const temps = (await fsp.readdir(path.join(home, 'images'))).filter((n) => n.startsWith('.'))
    if (temps.length > 0) problems.push(`temporary records are left after open: ${temps.join(', ')}`)
    if (problems.length > 0) return problems
    // And the images come back whole.
    const r = reg as TestRegistry
    try {
      await images.pull(refOf(r, 'app:v1'))
      await images.pull(refOf(r, 'b:v1'))
      await images.importLayout(layoutC, { reference: 'local/c:v1' })
      const after = await images.list()
      for (const rec of after) {
        for (const id of rec.layers) if (!(await driver.exists(id))) problems.push(`after pulling again, ${nameOf(rec.digest)} names ${id}, which is absent`)
      }
      if (after.length < 3) problems.push(`after pulling again, ${after.length} images, not 3 or more`)
    } catch (e) {
      problems.push(`pulling again fails: ${(e as Error).message}`)
    }
    return problems
  })
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

test.after.always(async () => {
  await reg?.stop()
})

suite.register('the image workload runs on a disk that logs every write and flush, with its calls marked', async (t) => {
  t.log(`seed ${SEED} (BTRFS_LAYERS_POWERCUT_SEED), ${STATES} crash states (BTRFS_LAYERS_POWERCUT_STATES)`)
  const started = Date.now()
  const r = await startRegistry()
  reg = r
  const f = await fixture()
  fx = f
  await pushImage(r, suite.work, f.a, refOf(r, 'app:v1'))
  await r.crane(['copy', refOf(r, 'app:v1'), refOf(r, 'app:again')])
  await pushImage(r, suite.work, f.b, refOf(r, 'b:v1'))
  layoutC = path.join(suite.work, 'layout-c')
  await writeLayout(layoutC, [f.c])
  const disk = await LoggedDisk.start(suite.bin, suite.work, 4 * 2 ** 30)
  suite.disk = disk
  const list = steps(r, f, suite.work)
  const h = await runWorkload(disk, list)
  await disk.release()
  const p = planCrashStates(suite.bin, disk, { states: STATES, seed: SEED })
  h.place(p.marks)
  t.log(`workload: ${h.steps.length} steps in ${Date.now() - started} ms; the log: ${p.records} records, ${p.writes} writes (${(p.written / 2 ** 20).toFixed(1)} MiB), ${p.flushes} flushes`)

  // The model: the records and layers the workload left, as it meant to.
  const final = recordsAfter.at(-1) as Map<string, string>
  t.deepEqual(
    [...final.entries()].sort(),
    [
      [f.c.digest, 'docker.io/local/c:v1'],
      [f.d.digest, refOf(r, 'b:v1')],
    ].sort(),
    'C and D are left, D with the tag B had',
  )
  t.is(recordsAfter[3].get(f.a.digest), `${refOf(r, 'app:again')} ${refOf(r, 'app:v1')}`, 'A had both references before the removes')
  t.is(h.layers().length, 6, 'six layers in all: the base, a1, a2, b1, c1, d1')
  const left = [...h.allowed(Number.MAX_SAFE_INTEGER).values()].filter((v) => v.at(-1)?.state).length
  t.is(left, 3, 'the base, c1 and d1 are left')
  history = h
  plan = p
})

const check = (kind: CrashState['kind']) => (t: ExecutionContext) => checkStates(t, suite, plan, history, kind, inspect)

suite.register('image crash states: every flushed prefix of the log (the commits first)', check('prefix'))
suite.register('image crash states: the writes after the last flush lost or reordered', check('reordered'))
suite.register('image crash states: the writes after the last flush torn at 4 KiB', check('torn'))
