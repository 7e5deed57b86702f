/**
 * The graph-driver conformance suite for BtrfsDriver, against a real loop-mounted btrfs, with
 * btrfs-progs as the oracle: create, snapshot, chains, remove in any order, get/put counting,
 * exists, layers, status, metadata, read-only layers, id remapping, mount labels, bad ids,
 * missing parents, existing ids, nested subvolumes and concurrency.
 *
 * (Quotas are in driver-quota.spec.ts, init in driver-init.spec.ts, crashes in
 * driver-crash.spec.ts: each file has its own filesystem.)
 */
import test, { type ExecutionContext } from 'ava'
import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { statusPairs, type BtrfsDriver } from '../ts/index'
import {
  btrfsCli,
  exists,
  fill,
  loopDevices,
  mkSubvol,
  observe,
  oracleReadOnly,
  oracleShow,
  treeState,
  useBtrfs,
} from './helpers/btrfs'
import {
  HOST_ROOT,
  REMAP,
  collectDriversBeforeTeardown,
  oracleRecord,
  oracleStoreSubvolumes,
  prng,
  rejectsCode,
  shuffle,
  storeEntries,
  withDriver,
} from './helpers/driver-util'

const LABEL = 'drv-conformance'
collectDriversBeforeTeardown(test)
const { btrfsTest, fs } = useBtrfs(test, { label: LABEL })

/** Run `fn` with a driver on a fresh store `dir/home`. */
const store = <T>(dir: string, fn: (d: BtrfsDriver, home: string) => Promise<T>, opts?: Parameters<typeof withDriver>[1]) => {
  const home = path.join(dir, 'home')
  return withDriver(home, opts, (d) => fn(d, home))
}

/** Write `files` (name -> content) into layer `id` through get/put. */
async function writeLayer(d: BtrfsDriver, id: string, files: Record<string, string>): Promise<void> {
  const p = await d.get(id)
  try {
    for (const [name, body] of Object.entries(files)) {
      await fsp.mkdir(path.dirname(path.join(p, name)), { recursive: true })
      await fsp.writeFile(path.join(p, name), body)
    }
  } finally {
    await d.put(id)
  }
}

/** Files of layer `id` (relative path -> content), through get/put. */
async function readLayer(d: BtrfsDriver, id: string): Promise<Record<string, string>> {
  const p = await d.get(id)
  try {
    const out: Record<string, string> = {}
    const walk = async (abs: string, rel: string) => {
      for (const e of await fsp.readdir(abs, { withFileTypes: true })) {
        const r = rel ? `${rel}/${e.name}` : e.name
        if (e.isDirectory()) await walk(path.join(abs, e.name), r)
        else out[r] = await fsp.readFile(path.join(abs, e.name), 'utf8')
      }
    }
    await walk(p, '')
    return out
  } finally {
    await d.put(id)
  }
}

/** The store's subvolumes per btrfs subvolume list, relative to home ('' = home). */
const oracleStore = (home: string) => oracleStoreSubvolumes(fs().mnt, home)
const expectedStore = (ids: string[]) => ['', ...ids.map((i) => `subvolumes/${i}`)].sort()

async function expectEROFS(t: ExecutionContext, file: string) {
  const e = await t.throwsAsync(fsp.writeFile(file, 'x'))
  t.is((e as NodeJS.ErrnoException).code, 'EROFS')
}

// ---------------------------------------------------------------------------------------------
// Create and read
// ---------------------------------------------------------------------------------------------

btrfsTest.needing(['getfattr'])('create an empty layer', async (t, dir) => {
  await store(dir, async (d, home) => {
    await d.create('empty')
    t.true(await d.exists('empty'))
    t.deepEqual(await d.layers(), ['empty'])
    const p = await d.get('empty')
    t.is(p, path.join(home, 'subvolumes', 'empty'))
    t.true(path.isAbsolute(p))
    t.deepEqual(await fsp.readdir(p), [])
    t.is((await fsp.stat(p)).ino, 256, 'the layer is a subvolume root')
    const show = await oracleShow(p)
    t.is(show.name, 'empty')
    t.is(show.parentUuid, null, 'not a snapshot')
    t.false(await oracleReadOnly(p))
    await d.put('empty')
    t.deepEqual(await oracleStore(home), expectedStore(['empty']))
    t.deepEqual(await storeEntries(home), { subvolumes: ['empty'], metadata: [] })
    t.is(await oracleRecord(p), null, 'an empty layer without options needs no record: one SUBVOL_CREATE')
    t.is((await d.getMetadata('empty')).parent, null)
  })
})

btrfsTest('create a base with files, a snapshot of it, and read through the snapshot', async (t, dir) => {
  await store(dir, async (d, home) => {
    await d.create('base')
    const base = await d.get('base')
    await fill(base, 5)
    await fsp.symlink('file0.txt', path.join(base, 'link'))
    await fsp.chmod(path.join(base, 'file1.txt'), 0o751)
    await d.put('base')
    const baseTree = await treeState(base)

    await d.create('child', 'base')
    const child = await d.get('child')
    t.is(child, path.join(home, 'subvolumes', 'child'))
    t.deepEqual(await treeState(child), baseTree, 'the snapshot reads exactly the base')
    t.is((await oracleShow(child)).parentUuid, (await oracleShow(base)).uuid, 'child is a snapshot of base')
    // Copy-on-write: changing the child leaves the base alone, and the other way round.
    await fsp.writeFile(path.join(child, 'file0.txt'), 'changed in child')
    await fsp.rm(path.join(child, 'sub'), { recursive: true })
    await fsp.writeFile(path.join(child, 'new'), 'new')
    t.deepEqual(await treeState(base), baseTree)
    await writeLayer(d, 'base', { 'later.txt': 'later' })
    t.false(await exists(path.join(child, 'later.txt')))
    await d.put('child')
    t.is((await d.getMetadata('child')).parent, 'base')
    t.deepEqual(await oracleStore(home), expectedStore(['base', 'child']))
  })
})

btrfsTest('a chain of 50 layers, each adding a file: the top reads all 50', async (t, dir) => {
  await store(dir, async (d, home) => {
    const N = 50
    for (let i = 0; i < N; i++) {
      await d.create(`l${i}`, i === 0 ? undefined : `l${i - 1}`)
      await writeLayer(d, `l${i}`, { [`f${String(i).padStart(2, '0')}`]: `layer ${i}\n` })
    }
    const top = await readLayer(d, `l${N - 1}`)
    const want: Record<string, string> = {}
    for (let i = 0; i < N; i++) want[`f${String(i).padStart(2, '0')}`] = `layer ${i}\n`
    t.deepEqual(top, want)
    // Every layer sees exactly its own and its ancestors' files.
    const mid = await readLayer(d, 'l24')
    t.is(Object.keys(mid).length, 25)
    t.is((await d.getMetadata(`l${N - 1}`)).parent, `l${N - 2}`)
    t.is((await d.layers()).length, N)
    t.is((await oracleStore(home)).length, N + 1)
  })
})

// ---------------------------------------------------------------------------------------------
// Remove
// ---------------------------------------------------------------------------------------------

for (const order of ['top-down', 'bottom-up', 'random', 'middle-out'] as const) {
  btrfsTest(`remove a chain ${order}: every other layer stays readable`, async (t, dir) => {
    await store(dir, async (d, home) => {
      const N = 8
      const ids = Array.from({ length: N }, (_, i) => `c${i}`)
      const expected = new Map<string, Record<string, string>>()
      const acc: Record<string, string> = {}
      for (let i = 0; i < N; i++) {
        await d.create(ids[i], i === 0 ? undefined : ids[i - 1])
        acc[`f${i}`] = `content ${i}`
        await writeLayer(d, ids[i], { [`f${i}`]: `content ${i}` })
        expected.set(ids[i], { ...acc })
      }
      const rnd = prng(0xc0ffee)
      const sequence =
        order === 'top-down'
          ? [...ids].reverse()
          : order === 'bottom-up'
            ? ids
            : order === 'random'
              ? shuffle(ids, rnd)
              : [3, 4, 2, 5, 1, 6, 0, 7].map((i) => ids[i])
      const left = new Set(ids)
      for (const id of sequence) {
        await d.remove(id)
        left.delete(id)
        t.false(await d.exists(id), `${id} gone`)
        t.deepEqual(await d.layers(), [...left].sort())
        for (const other of left) t.deepEqual(await readLayer(d, other), expected.get(other), `${other} intact after removing ${id}`)
        t.deepEqual(await oracleStore(home), expectedStore([...left]), 'btrfs subvolume list agrees')
      }
      t.deepEqual(await storeEntries(home), { subvolumes: [], metadata: [] })
    })
  })
}

btrfsTest('exists after remove is false; get, getMetadata and remove are then ENOENT', async (t, dir) => {
  await store(dir, async (d, home) => {
    await d.create('a')
    await writeLayer(d, 'a', { x: 'x' })
    t.true(await d.exists('a'))
    await d.remove('a')
    t.false(await d.exists('a'))
    t.false(await exists(path.join(home, 'subvolumes', 'a')))
    await rejectsCode(t, d.get('a'), 'ENOENT', 'get')
    await rejectsCode(t, d.getMetadata('a'), 'ENOENT', 'getMetadata')
    await rejectsCode(t, d.remove('a'), 'ENOENT', 'remove')
    t.is(d.refCount('a'), 0)
    t.false(await d.exists('never-was'))
    t.deepEqual(await oracleStore(home), [''])
    // The id can be used again.
    await d.create('a')
    t.deepEqual(await readLayer(d, 'a'), {})
  })
})

btrfsTest('removing a layer others were snapshotted from leaves the children intact', async (t, dir) => {
  await store(dir, async (d, home) => {
    await d.create('base')
    await writeLayer(d, 'base', { 'etc/os-release': 'base', 'bin/sh': 'sh' })
    await d.create('c1', 'base')
    await writeLayer(d, 'c1', { c1: 'c1' })
    await d.create('c2', 'base', { readOnly: true })
    await d.create('c1a', 'c1')
    const before: Record<string, Record<string, string>> = {}
    for (const id of ['c1', 'c2', 'c1a']) before[id] = await readLayer(d, id)
    await d.remove('base')
    await d.remove('c1')
    t.deepEqual(await d.layers(), ['c1a', 'c2'])
    for (const id of ['c2', 'c1a']) t.deepEqual(await readLayer(d, id), before[id], `${id} intact`)
    t.is((await d.getMetadata('c1a')).parent, 'c1', 'metadata still records where it came from')
    await rejectsCode(t, d.create('c3', 'base'), 'ENOENT', 'snapshot of a removed parent')
    t.false(await d.exists('c3'))
    t.deepEqual(await oracleStore(home), expectedStore(['c1a', 'c2']))
  })
})

btrfsTest('remove a layer holding nested subvolumes (also read-only ones)', async (t, dir) => {
  await store(dir, async (d, home) => {
    await d.create('outer')
    await d.create('keep')
    const p = await d.get('outer')
    await fill(p)
    await mkSubvol(path.join(p, 'inner'))
    await fill(path.join(p, 'inner'))
    await fsp.mkdir(path.join(p, 'deep', 'er'), { recursive: true })
    await mkSubvol(path.join(p, 'deep', 'er', 'nested'))
    await mkSubvol(path.join(p, 'inner', 'innermost'))
    await btrfsCli('subvolume', 'snapshot', '-r', path.join(p, 'inner'), path.join(p, 'ro-snap'))
    await d.put('outer')
    t.is((await oracleStore(home)).length, 7)
    await d.remove('outer')
    t.false(await d.exists('outer'))
    t.deepEqual(await oracleStore(home), expectedStore(['keep']), 'every nested subvolume went with it')
    t.deepEqual(await storeEntries(home), { subvolumes: ['keep'], metadata: [] })
  })
})

// ---------------------------------------------------------------------------------------------
// get / put
// ---------------------------------------------------------------------------------------------

btrfsTest('get/put are counted; remove of a held layer is EBUSY; put without get is EINVAL', async (t, dir) => {
  await store(dir, async (d, home) => {
    await d.create('a')
    await writeLayer(d, 'a', { f: 'data' })
    t.is(d.refCount('a'), 0)
    const p1 = await d.get('a')
    const p2 = await d.get('a', { mountLabel: '' })
    t.is(p1, p2)
    t.is(d.refCount('a'), 2)
    await rejectsCode(t, d.remove('a'), 'EBUSY', 'remove while held twice')
    await d.put('a')
    t.is(d.refCount('a'), 1)
    await rejectsCode(t, d.remove('a'), 'EBUSY', 'remove while held once')
    t.true(await d.exists('a'))
    t.is(await fsp.readFile(path.join(p1, 'f'), 'utf8'), 'data', 'untouched by the refused removes')
    t.deepEqual(await oracleStore(home), expectedStore(['a']))
    await d.put('a')
    t.is(d.refCount('a'), 0)
    await rejectsCode(t, d.put('a'), 'EINVAL', 'put once too often')
    t.is(d.refCount('a'), 0)
    await d.create('b')
    await rejectsCode(t, d.put('b'), 'EINVAL', 'put without any get')
    await rejectsCode(t, d.put('missing'), 'EINVAL', 'put of a missing layer')
    await rejectsCode(t, d.get('missing'), 'ENOENT', 'get of a missing layer')
    t.is(d.refCount('missing'), 0, 'a failed get is not counted')
    await d.remove('a')
    t.false(await d.exists('a'))
  })
})

// ---------------------------------------------------------------------------------------------
// layers, status, metadata
// ---------------------------------------------------------------------------------------------

btrfsTest('layers() lists exactly the complete layers', async (t, dir) => {
  await store(dir, async (d, home) => {
    t.deepEqual(await d.layers(), [])
    for (const id of ['zeta', 'alpha', 'Mid.1', '9-nine']) await d.create(id)
    const sub = path.join(home, 'subvolumes')
    // What is not a complete layer: a half-built subvolume, a plain directory, a file.
    await mkSubvol(path.join(sub, '.tmp-half-99-0'))
    await fsp.mkdir(path.join(sub, 'plaindir'))
    await fsp.writeFile(path.join(sub, 'afile'), '')
    t.deepEqual(await d.layers(), ['9-nine', 'Mid.1', 'alpha', 'zeta'])
    t.false(await d.exists('plaindir'))
    t.false(await d.exists('afile'))
    t.is((await d.status()).layers, 4)
    await d.remove('alpha')
    t.deepEqual(await d.layers(), ['9-nine', 'Mid.1', 'zeta'])
    await btrfsCli('subvolume', 'delete', path.join(sub, '.tmp-half-99-0'))
    await fsp.rmdir(path.join(sub, 'plaindir'))
    await fsp.rm(path.join(sub, 'afile'))
  })
})

btrfsTest('status() reports the filesystem, layers, quotas and kernel, typed; statusPairs() renders the display pairs', async (t, dir) => {
  await store(dir, async (d, home) => {
    await d.create('a')
    await d.create('b', 'a')
    const status = await d.status()
    const show = await btrfsCli('filesystem', 'show', fs().mnt)
    const uuid = /uuid: ([0-9a-f-]{36})/.exec(show)?.[1] ?? ''
    t.truthy(uuid)
    t.is(status.home, home)
    t.is(status.filesystem.uuid, uuid)
    t.is(status.filesystem.label, LABEL)
    t.deepEqual(status.filesystem.devices, loopDevices(fs().image))
    t.is(status.filesystem.nodeSize, 16384, 'mkfs.btrfs default node size')
    t.is(status.filesystem.sectorSize, 4096)
    t.is(status.layers, 2)
    t.is(status.quotas, false, 'quotas stay off until a size is asked for')
    t.is(status.kernel, os.release())
    t.is(status.minSpace, null)
    t.is(typeof status.idmappedMounts, 'boolean')
    t.is(status.remappedRoot, null)
    for (const [k, v] of Object.entries({ ...status.space.data, ...{ mUsed: status.space.metadata.used, mTotal: status.space.metadata.total } })) {
      t.true(Number.isSafeInteger(v) && v >= 0, `${k}: ${v}`)
    }
    t.true(status.space.data.used <= status.space.data.total)
    t.true(status.space.metadata.used > 0)
    t.true(status.space.metadata.used <= status.space.metadata.total)
    // The oracle's view of the space (btrfs filesystem df --raw).
    const df = await btrfsCli('filesystem', 'df', '--raw', fs().mnt)
    const dataTotal = /^Data, \w+: total=(\d+), used=\d+/m.exec(df)?.[1]
    t.is(status.space.data.total, Number(dataTotal))
    // The display pairs, as the graph driver's Status shows them.
    const pairs = statusPairs(status)
    const s = new Map(pairs)
    t.is(s.size, pairs.length, 'keys are unique')
    t.is(s.get('Filesystem UUID'), uuid)
    t.is(s.get('Label'), LABEL)
    t.deepEqual(s.get('Devices')?.split(','), loopDevices(fs().image))
    t.is(s.get('Layers'), '2')
    t.is(s.get('Quotas'), 'disabled')
    t.is(s.get('Kernel Version'), os.release())
    t.is(s.get('Home'), home)
    t.is(s.get('Data Space Total'), dataTotal)
    t.is(s.get('Idmapped Mounts'), status.idmappedMounts ? 'supported' : 'unsupported')
    t.false(s.has('Min Space'))
    t.false(s.has('Remapped Root'))
  })
})

btrfsTest.needing(['getfattr'])('getMetadata() records parent, creation time, read-only, size and subvolume id', async (t, dir) => {
  await store(dir, async (d, home) => {
    const t0 = Date.now()
    await d.create('base')
    await d.create('img', 'base', { readOnly: true })
    await d.createReadWrite('rw', 'img', { mountLabel: 'system_u:object_r:container_file_t:s0:c1,c2' })
    const t1 = Date.now()
    for (const [id, parent, ro] of [
      ['base', null, false],
      ['img', 'base', true],
      ['rw', 'img', false],
    ] as const) {
      const m = await d.getMetadata(id)
      t.is(m.id, id)
      t.is(m.parent, parent, `${id} parent`)
      t.is(m.readOnly, ro, `${id} readOnly`)
      t.is(m.size, null, `${id} has no size limit`)
      t.true(m.created instanceof Date, `${id} created is a Date`)
      const created = m.created.getTime()
      t.true(created >= t0 - 1000 && created <= t1 + 1000, `${id} created ${m.created.toISOString()} within the test`)
      const show = await oracleShow(path.join(home, 'subvolumes', id))
      t.is(m.subvolumeId, show.id, `${id} subvolume id (a number) agrees with btrfs subvolume show`)
      t.is<string | null, string | null>(m.uuid, show.uuid, `${id} uuid agrees with btrfs subvolume show`)
      t.false('uidMaps' in m || 'gidMaps' in m, `${id}: no id maps of its own`)
      t.is(m.mountLabel, id === 'rw' ? 'system_u:object_r:container_file_t:s0:c1,c2' : undefined)
      // The record is an xattr on the layer's root, there exactly when the kernel's defaults
      // do not say it all (a parent, a label).
      const rec = await oracleRecord(path.join(home, 'subvolumes', id))
      t.is(rec?.parent ?? null, parent, `${id}: the record on the layer (getfattr) names its parent`)
      if (id === 'base') t.is(rec, null)
    }
    const ids = new Set((await Promise.all(['base', 'img', 'rw'].map((i) => d.getMetadata(i)))).map((m) => m.subvolumeId))
    t.is(ids.size, 3)
  })
})

// ---------------------------------------------------------------------------------------------
// Read-only layers, remapped root, mount labels
// ---------------------------------------------------------------------------------------------

btrfsTest('a read-only layer refuses writes; its child is writable', async (t, dir) => {
  await store(dir, async (d, home) => {
    await d.create('base')
    await writeLayer(d, 'base', { 'etc/conf': 'v1' })
    await d.create('image', 'base', { readOnly: true })
    const img = await d.get('image')
    t.true(await oracleReadOnly(img), 'btrfs property get ro says true')
    await expectEROFS(t, path.join(img, 'new-file'))
    await expectEROFS(t, path.join(img, 'etc', 'conf'))
    t.is(await fsp.readFile(path.join(img, 'etc', 'conf'), 'utf8'), 'v1', 'readable')
    await d.put('image')
    await d.create('container', 'image')
    const c = await d.get('container')
    t.false(await oracleReadOnly(c), 'the child of a read-only layer is writable')
    await fsp.writeFile(path.join(c, 'etc', 'conf'), 'v2')
    await fsp.writeFile(path.join(c, 'new-file'), 'new')
    await d.put('container')
    t.is((await readLayer(d, 'image'))['etc/conf'], 'v1')
    await d.create('empty-ro', undefined, { readOnly: true })
    await expectEROFS(t, path.join(home, 'subvolumes', 'empty-ro', 'x'))
    // Read-only layers are removable.
    await d.remove('image')
    await d.remove('empty-ro')
    t.deepEqual(await d.layers(), ['base', 'container'])
    t.deepEqual(await oracleStore(home), expectedStore(['base', 'container']))
  })
})

btrfsTest('with id maps, the remapped root owns the root of every new layer', async (t, dir) => {
  await store(
    dir,
    async (d, home) => {
      await d.create('base')
      const base = await d.get('base')
      let st = await fsp.stat(base)
      t.is(st.uid, HOST_ROOT)
      t.is(st.gid, HOST_ROOT)
      await fsp.writeFile(path.join(base, 'by-root'), 'x')
      await d.put('base')
      await d.create('child', 'base')
      await d.create('ro', 'base', { readOnly: true })
      for (const id of ['child', 'ro']) {
        st = await fsp.stat(path.join(home, 'subvolumes', id))
        t.is(st.uid, HOST_ROOT, `${id} uid`)
        t.is(st.gid, HOST_ROOT, `${id} gid`)
      }
      // Only the layer root is chowned: files keep their owner.
      t.is((await fsp.stat(path.join(home, 'subvolumes', 'child', 'by-root'))).uid, 0)
    },
    REMAP,
  )
})

btrfsTest('without id maps, layer roots are owned by root', async (t, dir) => {
  await store(dir, async (d, home) => {
    await d.create('a')
    const st = await fsp.stat(path.join(home, 'subvolumes', 'a'))
    t.is(st.uid, 0)
    t.is(st.gid, 0)
  })
})

btrfsTest('mountLabel is accepted by create and get (SELinux off: ignored)', async (t, dir) => {
  const label = 'system_u:object_r:container_file_t:s0:c100,c200'
  await store(dir, async (d) => {
    await d.create('a', undefined, { mountLabel: label })
    await d.createReadWrite('b', 'a', { mountLabel: label })
    const p = await d.get('b', { mountLabel: label })
    await fsp.writeFile(path.join(p, 'f'), 'ok')
    await d.put('b')
    t.deepEqual(await d.layers(), ['a', 'b'])
    await rejectsCode(t, d.create('c', undefined, { mountLabel: 42 as never }), 'ERR_INVALID_ARG_TYPE', 'non-string label')
    t.false(await d.exists('c'))
  })
})

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

const ESCAPE = `/tmp/btrfs-layers-bad-id-${process.pid}`
const BAD_IDS: [string, unknown][] = [
  ['empty', ''],
  ['dot', '.'],
  ['dot-dot', '..'],
  ['slash', '/'],
  ['a/b', 'a/b'],
  ['absolute path', ESCAPE],
  ['../escape', '../escape'],
  ['../../escape', '../../escape'],
  ['leading dot', '.hidden'],
  ['temporary name', '.tmp-x-1-1'],
  ['removal name', '.del-x-1-1'],
  ['leading dash', '-x'],
  ['leading underscore', '_x'],
  ['NUL byte', 'a\0b'],
  ['only NUL', '\0'],
  ['space', 'a b'],
  ['leading space', ' a'],
  ['trailing newline', 'a\n'],
  ['newline', 'a\nb'],
  ['tab', 'a\tb'],
  ['129 chars', 'x'.repeat(129)],
  ['unicode', 'é'],
  ['unicode inside', 'layer-ü'],
  ['CJK', '層'],
  ['emoji', 'a😀'],
  ['star', '*'],
  ['glob', 'a*'],
  ['colon', 'a:b'],
  ['backslash', 'a\\b'],
  ['tilde', '~a'],
  ['at', 'a@b'],
  ['number', 1],
  ['zero', 0],
  ['null', null],
  ['undefined', undefined],
  ['object', {}],
  ['object with toString', { toString: () => 'a' }],
  ['array', ['a']],
  ['boolean', true],
  ['bigint', 1n],
]

btrfsTest(`every bad id (${BAD_IDS.length}) is EINVAL (a string) or a TypeError (another type) for every method, and nothing is created`, async (t, dir) => {
  await store(dir, async (d, home) => {
    await d.create('ok')
    await writeLayer(d, 'ok', { f: 'x' })
    // The longest valid id works (the control for '129 chars').
    await d.create('x'.repeat(128))
    const before = await observe(fs().mnt, [dir])
    const outside = await fsp.readdir(path.dirname(dir))
    for (const [what, id] of BAD_IDS) {
      const bad = id as string
      const code = typeof id === 'string' ? 'EINVAL' : 'ERR_INVALID_ARG_TYPE'
      await rejectsCode(t, () => d.create(bad), code, `create(${what})`)
      await rejectsCode(t, () => d.create(bad, 'ok'), code, `create(${what}, 'ok')`)
      await rejectsCode(t, () => d.createReadWrite(bad), code, `createReadWrite(${what})`)
      await rejectsCode(t, () => d.remove(bad), code, `remove(${what})`)
      await rejectsCode(t, () => d.get(bad), code, `get(${what})`)
      await rejectsCode(t, () => d.put(bad), code, `put(${what})`)
      await rejectsCode(t, () => d.exists(bad), code, `exists(${what})`)
      await rejectsCode(t, () => d.getMetadata(bad), code, `getMetadata(${what})`)
      await rejectsCode(t, () => d.changes(bad), code, `changes(${what})`)
      await rejectsCode(t, () => d.diffSize(bad), code, `diffSize(${what})`)
      await rejectsCode(t, () => d.diff(bad), code, `diff(${what})`)
      // As the parent ('' and null/undefined mean "no parent"), in the options and positionally
      // (where a plain object is the options object, so only the other types are parents).
      if (id !== '' && id !== null && id !== undefined) {
        await rejectsCode(t, () => d.create('child-of-bad', { parent: bad }), code, `create('child-of-bad', { parent: ${what} })`)
        if (typeof id !== 'object') await rejectsCode(t, () => d.create('child-of-bad', bad), code, `create('child-of-bad', ${what})`)
      }
    }
    t.deepEqual(await observe(fs().mnt, [dir]), before, 'nothing changed in the store')
    t.deepEqual(await fsp.readdir(path.dirname(dir)), outside, 'nothing created beside the test directory')
    t.false(await exists(ESCAPE), 'nothing created at the absolute path')
    t.false(await exists(path.join(home, 'escape')))
    t.false(await exists(path.join(dir, 'escape')))
    t.deepEqual(await d.layers(), ['ok', 'x'.repeat(128)].sort())
    t.is(d.refCount('ok'), 0)
  })
})

btrfsTest('bad create options are EINVAL and create nothing', async (t, dir) => {
  await store(dir, async (d) => {
    await d.create('base')
    const before = await observe(fs().mnt, [dir])
    const cases: [string, unknown][] = [
      ['unknown key', { sizee: '1G' }],
      ['size not a size', { size: 'big' }],
      ['negative size', { size: -1 }],
      ['fractional size', { size: 1.5 }],
      ['zero size', { size: 0 }],
    ]
    for (const [what, opts] of cases) {
      await rejectsCode(t, () => d.create('new', 'base', opts as never), 'EINVAL', what)
    }
    // A wrong JS type is Node's TypeError, before anything happens.
    const wrongType: [string, unknown][] = [
      ['readOnly not boolean', { readOnly: 'yes' }],
      ['size an object', { size: {} }],
      ['mountLabel a number', { mountLabel: 1 }],
      ['options a string', 'ro'],
      ['options null', null],
    ]
    for (const [what, opts] of wrongType) {
      await rejectsCode(t, () => d.create('new', 'base', opts as never), 'ERR_INVALID_ARG_TYPE', what)
    }
    await rejectsCode(t, () => d.createReadWrite('new', 'base', { readOnly: true } as never), 'EINVAL', 'createReadWrite with readOnly')
    await rejectsCode(t, () => d.get('base', { label: 'x' } as never), 'EINVAL', 'get with an unknown option')
    t.is(d.refCount('base'), 0)
    t.deepEqual(await observe(fs().mnt, [dir]), before)
    t.false(await d.exists('new'))
  })
})

btrfsTest('a missing parent is ENOENT and creates nothing', async (t, dir) => {
  await store(dir, async (d) => {
    await d.create('base')
    const before = await observe(fs().mnt, [dir])
    await rejectsCode(t, d.create('child', 'nope'), 'ENOENT')
    await rejectsCode(t, d.create('child', 'nope', { readOnly: true }), 'ENOENT')
    t.deepEqual(await observe(fs().mnt, [dir]), before)
    t.false(await d.exists('child'))
    t.deepEqual(await d.layers(), ['base'])
  })
})

btrfsTest('an existing id is EEXIST and the existing layer is untouched', async (t, dir) => {
  await store(dir, async (d, home) => {
    await d.create('base')
    await writeLayer(d, 'base', { a: '1' })
    await d.create('other')
    await writeLayer(d, 'other', { b: '2' })
    const meta = await d.getMetadata('base')
    const before = await observe(fs().mnt, [dir])
    await rejectsCode(t, d.create('base'), 'EEXIST', 'empty over existing')
    await rejectsCode(t, d.create('base', 'other'), 'EEXIST', 'snapshot over existing')
    await rejectsCode(t, d.create('base', undefined, { readOnly: true }), 'EEXIST', 'read-only over existing')
    await rejectsCode(t, d.create('base', 'base'), 'EEXIST', 'onto itself')
    t.deepEqual(await observe(fs().mnt, [dir]), before)
    t.deepEqual(await d.getMetadata('base'), meta)
    t.deepEqual(await readLayer(d, 'base'), { a: '1' })
    t.false(await oracleReadOnly(path.join(home, 'subvolumes', 'base')))
  })
})

// ---------------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------------

btrfsTest('many concurrent creates and removes of different ids all succeed', async (t, dir) => {
  await store(dir, async (d, home) => {
    await d.create('base')
    await writeLayer(d, 'base', { f: 'base' })
    const N = 40
    const ids = Array.from({ length: N }, (_, i) => `p${i}`)
    await Promise.all(ids.map((id, i) => d.create(id, i % 2 === 0 ? 'base' : undefined, i % 5 === 0 ? { readOnly: true } : undefined)))
    t.deepEqual(await d.layers(), ['base', ...ids].sort())
    t.deepEqual(await oracleStore(home), expectedStore(['base', ...ids]))
    for (const [i, id] of ids.entries()) {
      t.deepEqual(await readLayer(d, id), i % 2 === 0 ? { f: 'base' } : {}, id)
      t.is((await d.getMetadata(id)).parent, i % 2 === 0 ? 'base' : null)
    }
    // Remove half while creating others, all at once.
    const gone = ids.filter((_, i) => i % 2 === 1)
    const fresh = Array.from({ length: 20 }, (_, i) => `q${i}`)
    await Promise.all([...gone.map((id) => d.remove(id)), ...fresh.map((id) => d.create(id, 'p0'))])
    const want = ['base', ...ids.filter((_, i) => i % 2 === 0), ...fresh].sort()
    t.deepEqual(await d.layers(), want)
    t.deepEqual(await oracleStore(home), expectedStore(want))
    await Promise.all(want.map((id) => d.remove(id)))
    t.deepEqual(await d.layers(), [])
    t.deepEqual(await storeEntries(home), { subvolumes: [], metadata: [] })
    t.deepEqual(await oracleStore(home), [''])
  })
})

btrfsTest('concurrent calls on the same id are serialized in call order', async (t, dir) => {
  await store(dir, async (d) => {
    await d.create('base')
    await writeLayer(d, 'base', { f: 'base' })
    const order: string[] = []
    const track = (label: string, p: Promise<unknown>) =>
      p.then(
        () => order.push(`${label}:ok`),
        (e) => order.push(`${label}:${(e as { code?: string }).code}`),
      )
    // Fired without awaiting: each must see the effect of the one before.
    await Promise.all([
      track('create', d.create('x')),
      track('remove', d.remove('x')),
      track('create-from-base', d.create('x', 'base')),
      track('get', d.get('x')),
      track('remove-held', d.remove('x')),
      track('put', d.put('x')),
      track('remove-again', d.remove('x')),
      track('create-twice-1', d.create('x')),
      track('create-twice-2', d.create('x')),
    ])
    t.deepEqual(order, [
      'create:ok',
      'remove:ok',
      'create-from-base:ok',
      'get:ok',
      'remove-held:EBUSY',
      'put:ok',
      'remove-again:ok',
      'create-twice-1:ok',
      'create-twice-2:EEXIST',
    ])
    t.deepEqual(await readLayer(d, 'x'), {})
    // Many rounds on one id, all fired at once.
    const rounds: Promise<unknown>[] = []
    for (let i = 0; i < 10; i++) rounds.push(d.remove('x'), d.create('x', i % 2 ? 'base' : undefined))
    await Promise.all(rounds)
    t.deepEqual(await readLayer(d, 'x'), { f: 'base' }, 'the last create (from base) won')
    t.deepEqual(await d.layers(), ['base', 'x'])
  })
})
