/**
 * Bad input is refused with a typed error before anything changes (issue 11, item 4), on a
 * real btrfs with btrfs-progs as the oracle:
 * - applyDiff with a path holding a NUL byte: EINVAL;
 * - applyDiff with a path to a directory, a character device or a socket: EINVAL, before any
 *   temporary snapshot exists (the next subvolume id shows none was made); a regular file and
 *   a FIFO still apply;
 * - refCount checks its id like every other method (a synchronous throw);
 * - a layer a filesystem is mounted on (a tmpfs, a bind mount) is busy: remove and get are
 *   EBUSY and leave it whole, while exists and layers still report it.
 */
import test, { type ExecutionContext } from 'ava'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as net from 'node:net'
import * as os from 'node:os'
import * as path from 'node:path'
import { BtrfsDriver, BtrfsError } from '../ts/index'
import { bindMount, oracleListAll, sh, unmountIfMounted, useBtrfs } from './helpers/btrfs'
import { collectDriversBeforeTeardown, oracleStoreSubvolumes, rejectsCode, storeEntries } from './helpers/driver-util'
import { inLayer, layerSnapshot, run } from './helpers/diff-fixtures'
import { buildTar, file } from './helpers/diff-tar'
import { compareTrees } from './helpers/diff-tree'

collectDriversBeforeTeardown(test)

const drivers: BtrfsDriver[] = []
test.after.always(async () => {
  for (const d of drivers) await d.cleanup().catch(() => undefined)
})

const { btrfsTest } = useBtrfs(test, { tools: ['getfattr'] })

/** A store in `dir/home` with layer `base` (holding `kept`) and its child `layer`. */
async function store(dir: string): Promise<BtrfsDriver> {
  const d = await BtrfsDriver.init(path.join(dir, 'home'))
  drivers.push(d)
  await d.create('base')
  await inLayer(d, 'base', (p) => fsp.writeFile(path.join(p, 'kept'), 'lower\n'))
  await d.create('layer', 'base')
  return d
}

let probes = 0

/**
 * The subvolume id a new layer gets now (made and removed again, per `btrfs subvolume list`).
 * btrfs hands out ids in order and never twice within a mount, so two probes one id apart
 * show that no subvolume was made between them, not even one deleted again. (The tests of
 * this file run serially: nothing else makes subvolumes meanwhile.)
 */
async function probeSubvolumeId(d: BtrfsDriver, mnt: string): Promise<number> {
  const id = `probe-${++probes}`
  await d.create(id)
  const rel = path.relative(mnt, path.join(d.home, 'subvolumes', id))
  const made = (await oracleListAll(mnt)).find((s) => s.path === rel)
  await d.remove(id)
  if (!made) throw new Error(`btrfs subvolume list does not show ${rel}`)
  return made.id
}

/**
 * That nothing changed since `before` was taken: the layer's tree, the store's entries, the
 * store's subvolumes per btrfs-progs, and no subvolume made meanwhile.
 */
async function nothingChanged(
  t: ExecutionContext,
  d: BtrfsDriver,
  mnt: string,
  before: { tree: Awaited<ReturnType<typeof layerSnapshot>>; probe: number },
  what: string,
): Promise<void> {
  t.deepEqual(compareTrees(before.tree, await layerSnapshot(d, 'layer'), { rootMtime: true }), [], `${what}: the layer is as it was`)
  t.deepEqual(await storeEntries(d.home), { subvolumes: ['base', 'layer'], metadata: [] }, `${what}: store entries`)
  t.deepEqual(await oracleStoreSubvolumes(mnt, d.home), ['', 'subvolumes/base', 'subvolumes/layer'], `${what}: btrfs subvolume list`)
  t.is(await probeSubvolumeId(d, mnt), before.probe + 1, `${what}: no temporary snapshot was made (the next layer has the next subvolume id)`)
}

async function snapshotOf(d: BtrfsDriver, mnt: string) {
  return { tree: await layerSnapshot(d, 'layer'), probe: await probeSubvolumeId(d, mnt) }
}

btrfsTest.serial('applyDiff of a path with a NUL byte is EINVAL and changes nothing', async (t, dir) => {
  const d = await store(dir)
  const mnt = path.dirname(dir)
  const tar = path.join(dir, 'layer.tar')
  await fsp.writeFile(tar, buildTar([file('new', 'data')]))
  const before = await snapshotOf(d, mnt)
  await rejectsCode(t, d.applyDiff('layer', 'base', `${tar}\0.gz`), 'EINVAL', 'NUL byte in the path')
  await nothingChanged(t, d, mnt, before, 'NUL byte')
})

btrfsTest.serial('applyDiff of a directory, a character device or a socket is EINVAL before any snapshot; nothing changes', async (t, dir) => {
  const d = await store(dir)
  const mnt = path.dirname(dir)
  // Outside the test filesystem: a socket's path must fit in 108 bytes.
  const sockDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'bad-input-'))
  const sock = path.join(sockDir, 's')
  const server = net.createServer()
  await new Promise<void>((r) => server.listen(sock, r))
  t.teardown(async () => {
    await new Promise((r) => server.close(r))
    await fsp.rm(sockDir, { recursive: true, force: true })
  })
  for (const [what, input] of [
    ['a directory', dir],
    ['a character device (/dev/null)', '/dev/null'],
    ['a socket', sock],
  ]) {
    const before = await snapshotOf(d, mnt)
    const e = await rejectsCode(t, d.applyDiff('layer', 'base', input), 'EINVAL', what)
    t.is(e?.path, input, `${what}: the error names the input`)
    await nothingChanged(t, d, mnt, before, what)
  }
})

btrfsTest.serial('applyDiff still reads a regular file and a FIFO given by path', async (t, dir) => {
  const d = await store(dir)
  const tar = path.join(dir, 'layer.tar')
  await fsp.writeFile(tar, buildTar([file('from-file', 'file data')]))
  t.is(await d.applyDiff('layer', 'base', tar), 9, 'a regular file')
  const fifo = path.join(dir, 'layer.fifo')
  await run('mkfifo', fifo)
  const writing = fsp.writeFile(fifo, buildTar([file('from-fifo', 'fifo data!')]))
  t.is(await d.applyDiff('layer', 'base', fifo), 10, 'a FIFO')
  await writing
  await inLayer(d, 'layer', async (p) => {
    t.is(await fsp.readFile(path.join(p, 'from-file'), 'utf8'), 'file data')
    t.is(await fsp.readFile(path.join(p, 'from-fifo'), 'utf8'), 'fifo data!')
  })
})

btrfsTest.serial('refCount checks the id like every other method: a bad id throws EINVAL', async (t, dir) => {
  const d = await store(dir)
  for (const bad of ['../x', '', '.hidden', 'a/b', 'a\0b', 'x'.repeat(129)]) {
    const e = t.throws(() => d.refCount(bad), { instanceOf: BtrfsError }, JSON.stringify(bad))
    t.is(e?.code, 'EINVAL', `${JSON.stringify(bad)}: code`)
  }
  t.is(d.refCount('layer'), 0)
  t.is(d.refCount('never-made'), 0, 'a good id of no layer: nothing held')
  await d.get('layer')
  t.is(d.refCount('layer'), 1)
  await d.put('layer')
})

type Mount = (at: string, dir: string) => Promise<unknown>

/** `fn` with `mount` done on layer `layer`; unmounted afterwards, pass or fail. */
async function covered(t: ExecutionContext, d: BtrfsDriver, dir: string, mount: Mount, fn: () => Promise<void>): Promise<void> {
  const at = path.join(d.home, 'subvolumes', 'layer')
  await mount(at, dir)
  try {
    await fn()
  } finally {
    await unmountIfMounted(at)
  }
  t.false(fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${at} `), 'unmounted')
}

const mounts: [string, Mount][] = [
  ['a tmpfs', (at) => sh('mount', ['-t', 'tmpfs', 'tmpfs', at])],
  // A directory of the same filesystem: a stat of the name sees a plain directory.
  [
    'a bind mount of a plain directory',
    async (at, dir) => {
      await fsp.mkdir(path.join(dir, 'plain'))
      await bindMount(path.join(dir, 'plain'), at)
    },
  ],
  // A subvolume root: a stat of the name alone takes it for the layer.
  ['a bind mount of another layer', (at) => bindMount(path.join(path.dirname(at), 'base'), at)],
]

for (const [kind, mount] of mounts) {
  btrfsTest.serial(`a layer with ${kind} mounted on it: remove and get are EBUSY and keep it; exists and layers report it`, async (t, dir) => {
    const d = await store(dir)
    const mnt = path.dirname(dir)
    await inLayer(d, 'layer', (p) => fsp.writeFile(path.join(p, 'mine'), 'upper\n'))
    const before = await snapshotOf(d, mnt)
    await covered(t, d, dir, mount, async () => {
      await rejectsCode(t, d.remove('layer'), 'EBUSY', 'remove')
      await rejectsCode(t, d.get('layer'), 'EBUSY', 'get')
      t.is(d.refCount('layer'), 0, 'a refused get holds nothing')
      t.true(await d.exists('layer'), 'exists')
      t.deepEqual(await d.layers(), ['base', 'layer'], 'layers')
      t.deepEqual(await oracleStoreSubvolumes(mnt, d.home), ['', 'subvolumes/base', 'subvolumes/layer'], 'btrfs subvolume list, while covered')
    })
    await nothingChanged(t, d, mnt, before, kind)
    await inLayer(d, 'base', async (p) => t.deepEqual(await fsp.readdir(p), ['kept'], 'the base layer is untouched'))
    await d.remove('layer')
    t.false(await d.exists('layer'), 'uncovered, it is removed as any layer')
  })
}
