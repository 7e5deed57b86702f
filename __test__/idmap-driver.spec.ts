/**
 * The driver under id maps, on a real loop-mounted btrfs: layers owned by the remapped root,
 * applyDiff mapping tar ids to host ids (and refusing ids outside the maps without touching
 * the layer), diff mapping them back (GNU tar is the oracle), driver.remap producing a layer
 * under other maps while the source stays as it was, and what changes() says about it.
 */
import test from 'ava'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { pipeline } from 'node:stream/promises'
import { createWriteStream } from 'node:fs'
import type { BtrfsDriver } from '../ts/index'
import { sh, useBtrfs } from './helpers/btrfs'
import { HOST_ROOT, REMAP, collectDriversBeforeTeardown, isTemporary, rejectsCode, storeEntries, withDriver } from './helpers/driver-util'
import { S1, S2, fullState, getfacl, makeTar, manyFiles, ownerOf, shifted, stateDiff, statOf, tarList, tempDir, type TarEntry } from './helpers/idmap-util'

collectDriversBeforeTeardown(test)
const { btrfsTest } = useBtrfs(test, { tools: ['setfacl', 'getfacl', 'getfattr', 'tar'] })

/** A driver with container ids 0..65535 at host 100000, on `dir/home`. */
const remapped = <T>(dir: string, fn: (d: BtrfsDriver, home: string) => Promise<T>) => {
  const home = path.join(dir, 'home')
  return withDriver(home, REMAP, (d) => fn(d, home))
}

/** The layer tar of `id` (against `parent`, as diff takes it) written to a file in `into`. */
async function diffToFile(d: BtrfsDriver, id: string, parent: string | null | undefined, into: string): Promise<string> {
  const file = path.join(into, `${id}-${Date.now()}-${Math.random().toString(36).slice(2)}.tar`)
  await pipeline(await d.diff(id, parent), createWriteStream(file))
  return file
}

/** name -> "uid/gid" of a tar listing. */
const owners = (list: TarEntry[]) => Object.fromEntries(list.map((e) => [e.name, `${e.uid}/${e.gid}`]))

/** A tar with container ids 0 and 1000 (files, directories, a setuid file). */
const IMAGE: Record<string, [number, number, string]> = {
  etc: [0, 0, 'dir'],
  'etc/passwd': [0, 0, 'root:x:0:0::/root:/bin/sh\n'],
  home: [0, 0, 'dir'],
  'home/user': [1000, 1000, 'dir'],
  'home/user/notes': [1000, 1000, 'notes\n'],
  'home/user/mixed': [1000, 0, 'mixed\n'],
  tmp: [0, 0, 'dir'],
}

btrfsTest('init with maps: the store and every layer root are owned by the remapped root', async (t, dir) => {
  await remapped(dir, async (d, home) => {
    await d.create('base')
    await d.create('child', 'base')
    await d.createReadWrite('rw', 'child')
    const st = await statOf([home, ...['base', 'child', 'rw'].map((id) => path.join(home, 'subvolumes', id))])
    for (const [p, s] of st) t.deepEqual([s.uid, s.gid], [HOST_ROOT, HOST_ROOT], p)
    t.deepEqual((await d.status()).remappedRoot, { uid: HOST_ROOT, gid: HOST_ROOT })
  })
})

btrfsTest('applyDiff maps tar ids 0 and 1000 to host 100000 and 101000; diff maps them back', async (t, dir) => {
  const tmp = await tempDir('apply')
  try {
    const tar = await makeTar(tmp.dir, 'image', IMAGE)
    t.deepEqual(owners(await tarList(tar)), Object.fromEntries(Object.entries(IMAGE).map(([n, [u, g]]) => [n, `${u}/${g}`])), 'the input tar as GNU tar lists it')
    await remapped(dir, async (d, home) => {
      await d.create('img')
      await d.applyDiff('img', null, tar)
      const root = path.join(home, 'subvolumes', 'img')
      const st = await statOf(Object.keys(IMAGE).map((r) => path.join(root, r)))
      for (const [rel, [u, g]] of Object.entries(IMAGE)) {
        const s = st.get(path.join(root, rel))
        t.deepEqual([s?.uid, s?.gid], [S1 + u, S1 + g], `${rel} on disk`)
      }
      const out = await diffToFile(d, 'img', null, tmp.dir)
      const listed = owners(await tarList(out))
      for (const [rel, [u, g]] of Object.entries(IMAGE)) t.is(listed[rel], `${u}/${g}`, `${rel} in the diff (tar -tvf --numeric-owner)`)
      t.false(Object.values(listed).some((o) => /\b1\d{5}\b/.test(o)), `no host id in the diff: ${JSON.stringify(listed)}`)
    })
  } finally {
    await tmp.remove()
  }
})

btrfsTest('applyDiff of a tar holding an id outside the maps: ERR_ID_MAPPING, the layer unchanged', async (t, dir) => {
  const tmp = await tempDir('apply-bad')
  try {
    const good = await makeTar(tmp.dir, 'good', IMAGE)
    const bad = await makeTar(tmp.dir, 'bad', {
      'etc/passwd': [0, 0, 'replaced\n'],
      'new-file': [0, 0, 'new\n'],
      'outside-uid': [70000, 0, 'x\n'],
      'outside-gid': [0, 65536, 'y\n'],
    })
    await remapped(dir, async (d, home) => {
      await d.create('img')
      await d.applyDiff('img', null, good)
      const root = path.join(home, 'subvolumes', 'img')
      const before = await fullState(root)
      const err = await rejectsCode(t, d.applyDiff('img', null, bad), 'ERR_ID_MAPPING')
      t.log(`error: ${err?.message} (path ${err?.path})`)
      t.deepEqual(stateDiff(before, await fullState(root)), [], 'the layer is exactly as it was')
      t.false((await storeEntries(home)).subvolumes.some(isTemporary), 'no temporary left behind')
    })
  } finally {
    await tmp.remove()
  }
})

btrfsTest('driver.remap: a new layer with shifted owners, the source untouched, diffs in the same container ids', async (t, dir) => {
  const tmp = await tempDir('remap')
  try {
    const tar = await makeTar(tmp.dir, 'image', IMAGE)
    await remapped(dir, async (d, home) => {
      await d.create('img')
      await d.applyDiff('img', null, tar)
      const src = path.join(home, 'subvolumes', 'img')
      const before = await fullState(src)
      const progress: number[] = []
      const res = await d.remap('img', 'img-s2', { ...shifted(S2), onProgress: (n) => progress.push(n) })
      t.is(res.visited, Object.keys(IMAGE).length + 1, 'every inode of the layer, its root included')
      t.is(res.changed, res.visited)
      t.is(progress[progress.length - 1], res.visited, 'progress ends at the total')

      const dst = path.join(home, 'subvolumes', 'img-s2')
      const st = await statOf([dst, ...Object.keys(IMAGE).map((r) => path.join(dst, r))])
      t.deepEqual([st.get(dst)?.uid, st.get(dst)?.gid], [S2, S2], 'the new layer root')
      for (const [rel, [u, g]] of Object.entries(IMAGE)) {
        const s = st.get(path.join(dst, rel))
        t.deepEqual([s?.uid, s?.gid], [S2 + u, S2 + g], `${rel} in the remapped layer`)
      }
      t.deepEqual(stateDiff(before, await fullState(src)), [], 'the source layer is untouched')
      t.true(await d.exists('img-s2'))
      t.deepEqual(await d.layers(), ['img', 'img-s2'])
      t.false((await storeEntries(home)).subvolumes.some(isTemporary))
      t.log(`metadata of the remapped layer: ${JSON.stringify(await d.getMetadata('img-s2'))}`)

      const a = await tarList(await diffToFile(d, 'img', null, tmp.dir))
      const b = await tarList(await diffToFile(d, 'img-s2', null, tmp.dir))
      t.deepEqual(owners(b), owners(a), 'whole-layer diffs of source and target list the same container ids')
      for (const [rel, [u, g]] of Object.entries(IMAGE)) t.is(owners(b)[rel], `${u}/${g}`, rel)

      // A child of the remapped layer lives under the same maps: new files map back too.
      await d.create('child', 'img-s2')
      const child = await d.get('child')
      await fsp.writeFile(path.join(child, 'home/user/new'), 'new\n')
      await fsp.lchown(path.join(child, 'home/user/new'), S2 + 1000, S2 + 1000)
      await d.put('child')
      t.deepEqual(await ownerOf(child), [S2, S2], 'the child root')
      const c = owners(await tarList(await diffToFile(d, 'child', undefined, tmp.dir)))
      t.is(c['home/user/new'], '1000/1000', `the child's diff against its remapped parent: ${JSON.stringify(c)}`)
      t.deepEqual(await d.changes('child'), [
        { path: '/home/user', kind: 'modify' },
        { path: '/home/user/new', kind: 'add' },
      ])
    })
  } finally {
    await tmp.remove()
  }
})

btrfsTest('changes of a remapped layer against its source (observation, in container ids)', async (t, dir) => {
  const tmp = await tempDir('changes')
  try {
    const tar = await makeTar(tmp.dir, 'image', IMAGE)
    await remapped(dir, async (d) => {
      await d.create('img')
      await d.applyDiff('img', null, tar)
      await d.remap('img', 'img-s2', shifted(S2))
      const explicit = await d.changes('img-s2', 'img')
      const recorded = await d.changes('img-s2')
      const reverse = await d.changes('img', 'img-s2')
      t.log(`changes('img-s2', 'img'): ${JSON.stringify(explicit)}`)
      t.log(`changes('img-s2') (recorded parent '${(await d.getMetadata('img-s2')).parent}'): ${JSON.stringify(recorded)}`)
      t.log(`changes('img', 'img-s2'): ${JSON.stringify(reverse)}`)
      t.log(`diffSize('img-s2', 'img'): ${await d.diffSize('img-s2', 'img')}`)
      // "changes compares in container ids": owners that are the same container ids are no change.
      t.deepEqual(explicit, [], 'no ownership noise: the same container ids everywhere')
      t.deepEqual(reverse, [])
    })
  } finally {
    await tmp.remove()
  }
})

btrfsTest('driver.remap refuses ids outside the new maps: ERR_ID_MAPPING with every path, nothing created', async (t, dir) => {
  const tmp = await tempDir('remap-bad')
  try {
    const tar = await makeTar(tmp.dir, 'image', { ...IMAGE, 'big-uid': [5000, 0, 'x'], 'big-gid': [0, 4000, 'y'] })
    await remapped(dir, async (d, home) => {
      await d.create('img')
      await d.applyDiff('img', null, tar)
      const src = path.join(home, 'subvolumes', 'img')
      const before = await fullState(src)
      const entries = await storeEntries(home)
      const err = await rejectsCode(t, d.remap('img', 'small', shifted(S2, 2000)), 'ERR_ID_MAPPING')
      const paths = (err?.errors ?? []).map((e) => e.path ?? '').sort()
      t.is(paths.length, 2, JSON.stringify(paths))
      t.true(paths[0].endsWith('/big-gid') && paths[1].endsWith('/big-uid'), `each unmapped file named: ${paths.join(', ')}`)
      t.log(`paths reported by driver.remap: ${paths.join(', ')}`)
      t.false(await d.exists('small'))
      t.deepEqual(await storeEntries(home), entries, 'no layer, metadata or temporary left')
      t.deepEqual(stateDiff(before, await fullState(src)), [], 'the source layer is untouched')
    })
  } finally {
    await tmp.remove()
  }
})

btrfsTest('driver.remap: EEXIST, ENOENT, EINVAL and an aborted signal change nothing', async (t, dir) => {
  await remapped(dir, async (d, home) => {
    await d.create('img')
    await d.create('other')
    const entries = await storeEntries(home)
    await rejectsCode(t, d.remap('img', 'other', shifted(S2)), 'EEXIST', 'existing target')
    await rejectsCode(t, d.remap('missing', 'x', shifted(S2)), 'ENOENT', 'missing source')
    await rejectsCode(t, d.remap('img', '../x', shifted(S2)), 'EINVAL', 'bad target id')
    await rejectsCode(t, d.remap('img', 'x', { uidMaps: [{ containerId: 0, hostId: 1, size: 0 }] }), 'EINVAL', 'empty range')
    await rejectsCode(
      t,
      d.remap('img', 'x', { uidMaps: [{ containerId: 0, hostId: 1, size: 10 }, { containerId: 5, hostId: 100, size: 10 }] }),
      'EINVAL',
      'overlapping ranges',
    )
    const pre = new AbortController()
    pre.abort()
    await rejectsCode(t, d.remap('img', 'x', { ...shifted(S2), signal: pre.signal }), 'ABORT_ERR', 'already aborted')
    t.false(await d.exists('x'))
    t.deepEqual(await storeEntries(home), entries, 'nothing created or left behind')
  })
})

/** A layer 'img' of `n` files owned by container root, in a remapped store. */
async function bigLayer(d: BtrfsDriver, n: number): Promise<string> {
  await d.create('img')
  const p = await d.get('img')
  manyFiles(p, n, 100, shifted(S1))
  await d.put('img')
  return p
}

btrfsTest('driver.remap aborted while the walk runs: ABORT_ERR, no layer, source untouched', async (t, dir) => {
  await remapped(dir, async (d, home) => {
    const src = await bigLayer(d, 12000)
    const entries = await storeEntries(home)
    const ac = new AbortController()
    const running = d.remap('img', 'x', { ...shifted(S2), signal: ac.signal })
    // Once the native task has started (the call is queued behind nothing on 'x').
    await new Promise((r) => setImmediate(r))
    ac.abort()
    await rejectsCode(t, running, 'ABORT_ERR', 'aborted while running')
    t.false(await d.exists('x'))
    t.deepEqual(await storeEntries(home), entries, 'nothing created or left behind')
    t.deepEqual(await ownerOf(path.join(src, 'd0000', 'f1')), [S1 + 1, S1 + 7], 'source untouched')
  })
})

btrfsTest('driver.remap aborted in the same tick as the call: ABORT_ERR, no layer', async (t, dir) => {
  await remapped(dir, async (d, home) => {
    await bigLayer(d, 3000)
    const entries = await storeEntries(home)
    const ac = new AbortController()
    const running = d.remap('img', 'x', { ...shifted(S2), signal: ac.signal })
    ac.abort()
    await rejectsCode(t, running, 'ABORT_ERR', 'aborted before the queued call started')
    t.false(await d.exists('x'), 'the aborted remap created no layer')
    t.deepEqual(await storeEntries(home), entries)
  })
})

btrfsTest('applyDiff maps the ids of POSIX ACLs in the tar to host ids', async (t, dir) => {
  const tmp = await tempDir('acl-in')
  try {
    // An identity store makes a tar whose ACL names container ids 1000 (SCHILY.xattr.system.posix_acl_access).
    const tar = await withDriver(path.join(dir, 'plain'), undefined, async (d) => {
      await d.create('src')
      const p = await d.get('src')
      await fsp.writeFile(path.join(p, 'shared'), 'x')
      await sh('setfacl', ['-m', 'u:1000:rx,g:1000:r', path.join(p, 'shared')])
      await d.put('src')
      return diffToFile(d, 'src', null, tmp.dir)
    })
    await remapped(dir, async (d, home) => {
      await d.create('img')
      await d.applyDiff('img', null, tar)
      const acl = await getfacl(path.join(home, 'subvolumes', 'img', 'shared'))
      t.deepEqual(await ownerOf(path.join(home, 'subvolumes', 'img', 'shared')), [S1, S1])
      t.true(acl.includes(`user:${S1 + 1000}:r-x`) && acl.includes(`group:${S1 + 1000}:r--`), `ACL on disk under the remapped store: ${acl.join(' ')}`)
    })
  } finally {
    await tmp.remove()
  }
})

btrfsTest('diff maps the ids of POSIX ACLs back to container ids', async (t, dir) => {
  const tmp = await tempDir('acl-out')
  try {
    const tar = await remapped(dir, async (d) => {
      await d.create('img')
      const p = await d.get('img')
      await fsp.writeFile(path.join(p, 'shared'), 'x')
      await fsp.lchown(path.join(p, 'shared'), S1, S1)
      // Container uid/gid 1000 are host 101000 in this store.
      await sh('setfacl', ['-m', `u:${S1 + 1000}:rx,g:${S1 + 1000}:r`, path.join(p, 'shared')])
      await d.put('img')
      return diffToFile(d, 'img', null, tmp.dir)
    })
    // Applied to an identity store (no mapping on the way in), the ACL shows what the tar holds.
    const plain = path.join(dir, 'plain')
    await withDriver(plain, undefined, async (d) => {
      await d.create('back')
      await d.applyDiff('back', null, tar)
      const acl = await getfacl(path.join(plain, 'subvolumes', 'back', 'shared'))
      t.deepEqual(await ownerOf(path.join(plain, 'subvolumes', 'back', 'shared')), [0, 0], 'the owner is a container id')
      t.true(acl.includes('user:1000:r-x') && acl.includes('group:1000:r--'), `ACL as the diff wrote it: ${acl.join(' ')}`)
    })
  } finally {
    await tmp.remove()
  }
})

btrfsTest('ERR_ID_MAPPING of driver.remap names paths a caller can find (not a deleted temporary)', async (t, dir) => {
  const tmp = await tempDir('remap-paths')
  try {
    const tar = await makeTar(tmp.dir, 'image', { etc: [0, 0, 'dir'], 'etc/big': [5000, 0, 'x'] })
    await remapped(dir, async (d, home) => {
      await d.create('img')
      await d.applyDiff('img', null, tar)
      const err = await rejectsCode(t, d.remap('img', 'small', shifted(S2, 2000)), 'ERR_ID_MAPPING')
      const paths = (err?.errors ?? []).map((e) => e.path ?? '')
      t.is(paths.length, 1)
      t.log(`reported: ${paths.join(', ')}`)
      const findable = [path.join(home, 'subvolumes', 'img', 'etc', 'big'), path.join(home, 'subvolumes', 'small', 'etc', 'big'), '/etc/big', 'etc/big']
      t.true(findable.includes(paths[0]), `the path names the file in the source layer (or its layer path), got ${paths[0]}`)
    })
  } finally {
    await tmp.remove()
  }
})
