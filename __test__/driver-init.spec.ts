/**
 * BtrfsDriver.init and cleanup against a real loop-mounted btrfs: the store's layout, its
 * ownership, the prerequisites check, the private mount, the lock against a second process,
 * option validation and the recovery sweep.
 */
import test from 'ava'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { spawnSync } from 'node:child_process'
import { BtrfsDriver, statusPairs } from '../ts/index'
import {
  exists,
  fill,
  mkSubvol,
  nonBtrfsDir,
  oracleIsSubvolume,
  oracleShow,
  treeState,
  useBtrfs,
} from './helpers/btrfs'
import {
  HOST_ROOT,
  REMAP,
  collectDriversBeforeTeardown,
  fdsOpenOn,
  mountCount,
  oracleStoreSubvolumes,
  rejectsCode,
  runFixture,
  storeEntries,
  withDriver,
} from './helpers/driver-util'

collectDriversBeforeTeardown(test)
const { btrfsTest, fs, extra } = useBtrfs(test)

btrfsTest('init creates home as its own subvolume, mode 0700, owned by the remapped root', async (t, dir) => {
  const home = path.join(dir, 'home')
  t.false(await exists(home))
  await withDriver(home, REMAP, async (d) => {
    t.is(d.name, 'btrfs')
    t.is(d.home, home)
    const show = await oracleShow(home)
    t.is(show.name, 'home')
    const st = await fsp.stat(home)
    t.is(st.ino, 256, 'home is the root of a subvolume')
    t.is(st.mode & 0o7777, 0o700)
    t.is(st.uid, HOST_ROOT)
    t.is(st.gid, HOST_ROOT)
    t.true((await fsp.stat(path.join(home, 'subvolumes'))).isDirectory())
    t.deepEqual(await oracleStoreSubvolumes(fs().mnt, home), [''], 'only home itself is a subvolume')
    t.deepEqual(await d.layers(), [])
    const status = new Map(statusPairs(await d.status()))
    t.is(status.get('Remapped Root'), `${HOST_ROOT}:${HOST_ROOT}`)
  })
})

btrfsTest('init without id maps: home owned by root', async (t, dir) => {
  const home = path.join(dir, 'home')
  await withDriver(home, undefined, async () => {
    const st = await fsp.stat(home)
    t.is(st.uid, 0)
    t.is(st.gid, 0)
    t.is(st.mode & 0o7777, 0o700)
    t.true(await oracleIsSubvolume(home))
  })
})

btrfsTest('init opens an existing store and keeps its layers', async (t, dir) => {
  const home = path.join(dir, 'home')
  let tree: Record<string, string> = {}
  await withDriver(home, undefined, async (d) => {
    await d.create('base')
    const p = await d.get('base')
    await fill(p, 4)
    await d.put('base')
    tree = await treeState(p)
  })
  await withDriver(home, undefined, async (d) => {
    t.deepEqual(await d.layers(), ['base'])
    t.deepEqual(await treeState(path.join(home, 'subvolumes', 'base')), tree)
    t.is((await d.getMetadata('base')).parent, null)
  })
})

btrfsTest('init on an existing plain directory uses it', async (t, dir) => {
  const home = path.join(dir, 'home')
  await fsp.mkdir(home)
  await withDriver(home, undefined, async (d) => {
    await d.create('a')
    t.true(await d.exists('a'))
    t.true((await fsp.stat(path.join(home, 'subvolumes'))).isDirectory())
  })
})

btrfsTest('init on a path not on btrfs is ERR_PREREQUISITES and creates nothing', async (t) => {
  const other = await nonBtrfsDir()
  try {
    const missing = path.join(other.dir, 'home')
    await rejectsCode(t, BtrfsDriver.init(missing), 'ERR_PREREQUISITES', 'missing home')
    t.false(await exists(missing), 'home not created')
    const existing = path.join(other.dir, 'existing')
    await fsp.mkdir(existing)
    await rejectsCode(t, BtrfsDriver.init(existing), 'ERR_PREREQUISITES', 'existing home')
    t.deepEqual(await fsp.readdir(existing), [], 'nothing created inside')
    t.deepEqual((await fsp.readdir(other.dir)).sort(), ['existing'])
    t.is(await mountCount(existing), 0)
  } finally {
    await other.remove()
  }
})

btrfsTest('init where the parent of home is missing is ENOENT and creates nothing', async (t, dir) => {
  const home = path.join(dir, 'missing', 'home')
  await rejectsCode(t, BtrfsDriver.init(home), 'ENOENT')
  t.false(await exists(path.join(dir, 'missing')))
  t.deepEqual(await fsp.readdir(dir), [])
})

btrfsTest('as root, home becomes a private mount point and cleanup() removes it', async (t, dir) => {
  const home = path.join(dir, 'home')
  const d = await BtrfsDriver.init(home)
  let cleaned = false
  try {
    t.is(await mountCount(home), 1, 'home is a mount point')
    const info = await fsp.readFile('/proc/self/mountinfo', 'utf8')
    const line = info.split('\n').find((l) => l.split(' ')[4] === home)
    t.truthy(line)
    // Optional fields sit between field 6 and the '-' separator: a private mount has no shared:N.
    const optional = line!.split(' ').slice(6, line!.split(' ').indexOf('-'))
    t.false(optional.some((f) => f.startsWith('shared:')), `not shared: ${line}`)
    await d.create('a')
    await d.cleanup()
    cleaned = true
    t.is(await mountCount(home), 0, 'cleanup unmounted home')
    t.true(await exists(path.join(home, 'subvolumes', 'a')), 'the store is still there')
    await rejectsCode(t, d.create('b'), 'EINVAL', 'a cleaned-up driver refuses work')
    t.false(await exists(path.join(home, 'subvolumes', 'b')))
  } finally {
    if (!cleaned) await d.cleanup()
  }
  // The lock was released: the store opens again, and cleanup again leaves no mount.
  await withDriver(home, undefined, async (d2) => {
    t.deepEqual(await d2.layers(), ['a'])
    t.is(await mountCount(home), 1)
  })
  t.is(await mountCount(home), 0)
})

btrfsTest('a second process opening the same home gets EBUSY until cleanup()', async (t, dir) => {
  const home = path.join(dir, 'home')
  const d = await BtrfsDriver.init(home)
  let cleaned = false
  try {
    await d.create('held')
    const busy = await runFixture('driver-lock-child.ts', [home])
    t.is(busy.code, 0, busy.stderr)
    const r = JSON.parse(busy.stdout.trim())
    t.false(r.ok, busy.stdout)
    t.is(r.name, 'BtrfsError')
    t.is(r.code, 'EBUSY', r.message)
    // The refused opener changed nothing: the first driver still works, home mounted once.
    t.is(await mountCount(home), 1)
    await d.create('after')
    t.deepEqual(await d.layers(), ['after', 'held'])
    // A second driver in this very process is refused too.
    await rejectsCode(t, BtrfsDriver.init(home), 'EBUSY', 'same process')
    t.is(await mountCount(home), 1)
    await d.cleanup()
    cleaned = true
  } finally {
    if (!cleaned) await d.cleanup()
  }
  const ok = await runFixture('driver-lock-child.ts', [home])
  t.is(ok.code, 0, ok.stderr)
  t.deepEqual(JSON.parse(ok.stdout.trim()), { ok: true, layers: ['after', 'held'] })
  t.is(await mountCount(home), 0, 'the child cleaned up its mount')
})

btrfsTest('bad init options are EINVAL and create nothing', async (t, dir) => {
  const cases: [string, unknown][] = [
    ['overlapping container ranges', { uidMaps: [{ containerId: 0, hostId: 100000, size: 65536 }, { containerId: 1000, hostId: 300000, size: 10 }] }],
    ['overlapping host ranges', { gidMaps: [{ containerId: 0, hostId: 100000, size: 65536 }, { containerId: 70000, hostId: 100010, size: 10 }] }],
    ['maps that do not map root', { uidMaps: [{ containerId: 1, hostId: 100000, size: 10 }] }],
    ['an empty range', { uidMaps: [{ containerId: 0, hostId: 100000, size: 0 }] }],
    ['a range past 2^32', { uidMaps: [{ containerId: 0, hostId: 4294967295, size: 2 }] }],
    ['a negative id', { uidMaps: [{ containerId: -1, hostId: 100000, size: 10 }] }],
    ['a fractional id', { uidMaps: [{ containerId: 0, hostId: 1.5, size: 10 }] }],
    ['unknown option key', { uidMap: [] }],
    ['unknown map key', { uidMaps: [{ containerId: 0, hostId: 100000, size: 10, extra: 1 }] }],
    ['negative minSpace', { minSpace: -1 }],
    ['non-numeric minSpace', { minSpace: 'lots' }],
    ['NaN minSpace', { minSpace: Number.NaN }],
  ]
  for (const [i, [what, opts]] of cases.entries()) {
    const home = path.join(dir, `home${i}`)
    await rejectsCode(t, () => BtrfsDriver.init(home, opts as never), 'EINVAL', what)
    t.false(await exists(home), `${what}: home not created`)
  }
  // Wrong JS types: Node's TypeError.
  const wrongType: [string, unknown][] = [
    ['maps not an array', { uidMaps: { containerId: 0, hostId: 100000, size: 10 } }],
    ['missing map key', { uidMaps: [{ containerId: 0, hostId: 100000 }] }],
    ['options not an object', 'fast'],
    ['options an array', []],
  ]
  for (const [i, [what, opts]] of wrongType.entries()) {
    const home = path.join(dir, `typed${i}`)
    await rejectsCode(t, () => BtrfsDriver.init(home, opts as never), 'ERR_INVALID_ARG_TYPE', what)
    t.false(await exists(home), `${what}: home not created`)
  }
  await rejectsCode(t, () => BtrfsDriver.init(1 as never), 'ERR_INVALID_ARG_TYPE', 'home not a string')
  t.deepEqual(await fsp.readdir(dir), [])
})

btrfsTest('init sweeps what a crash left behind and keeps complete layers', async (t, dir) => {
  const home = path.join(dir, 'home')
  let keepTree: Record<string, string> = {}
  await withDriver(home, undefined, async (d) => {
    await d.create('keep')
    const p = await d.get('keep')
    await fill(p, 3)
    await d.put('keep')
    keepTree = await treeState(p)
  })
  const sub = path.join(home, 'subvolumes')
  const meta = path.join(home, 'metadata')
  // A half-built layer (subvolume with a nested one), a half-removed one, a plain temp dir,
  // a temporary metadata file and metadata of a layer that does not exist.
  await mkSubvol(path.join(sub, '.tmp-half-1-0'))
  await fill(path.join(sub, '.tmp-half-1-0'))
  await mkSubvol(path.join(sub, '.tmp-half-1-0', 'nested'))
  await mkSubvol(path.join(sub, '.del-gone-1-1'))
  await fsp.mkdir(path.join(sub, '.tmp-plain-1-2'))
  await fsp.writeFile(path.join(meta, '.tmp-half-1-3'), '{')
  await fsp.writeFile(path.join(meta, 'ghost.json'), JSON.stringify({ id: 'ghost', parent: null, created: 0, readOnly: false, size: null, subvolumeId: 999, mountLabel: null }))
  await withDriver(home, undefined, async (d) => {
    t.deepEqual(await storeEntries(home), { subvolumes: ['keep'], metadata: [] })
    t.deepEqual(await oracleStoreSubvolumes(fs().mnt, home), ['', 'subvolumes/keep'])
    t.deepEqual(await d.layers(), ['keep'])
    t.deepEqual(await treeState(path.join(sub, 'keep')), keepTree)
    t.is((await d.getMetadata('keep')).id, 'keep')
  })
})

btrfsTest('cleanup() closes every fd the driver held, so the filesystem can be unmounted', async (t) => {
  // A filesystem of its own, so that nothing else of this file keeps it busy.
  const other = await extra({ size: 256 * 1024 * 1024 })
  const home = path.join(other.mnt, 'home')
  const d = await BtrfsDriver.init(home)
  await d.create('a')
  await d.cleanup()
  t.is(await mountCount(home), 0)
  for (const p of [path.join(home, 'subvolumes'), path.join(home, 'metadata'), path.join(home, '.lock')]) {
    t.deepEqual(await fdsOpenOn(p), [], `no fd of this process still refers to ${p} after cleanup()`)
  }
  // The user-visible consequence: unmounting the filesystem right after cleanup() works.
  const r = spawnSync('umount', [other.mnt], { encoding: 'utf8' })
  t.is(r.status, 0, `umount after cleanup(): ${r.stderr.trim()}`)
})
