/**
 * remapLayer on real trees of a loop-mounted btrfs, checked with stat(1), getcap, getfattr and
 * getfacl: every kind of inode, setuid/setgid bits, capabilities (v2 kept, v3 rootid shifted),
 * ACL ids, symlinks never followed (the outside keeps its owner), hardlinks remapped once,
 * nested subvolumes (only with crossSubvolumes), bind mounts never entered, a round trip
 * restoring every id, errors collected with their paths, abort and progress.
 */
import test from 'ava'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { remapLayer, type Mapping } from '../ts/index'
import { bindMount, makeSentinel, mkSubvol, sh, unmountIfMounted, useBtrfs } from './helpers/btrfs'
import { rejectsCode } from './helpers/driver-util'
import {
  CAP_NET_RAW,
  IDENTITY,
  RICH_INODES,
  S1,
  S2,
  buildRich,
  capRevisionRootid,
  capV3Hex,
  fullState,
  getcap,
  getfacl,
  manyFiles,
  ownerOf,
  richOwnerProblems,
  setXattrHex,
  shifted,
  stateDiff,
  statOf,
  xattrHex,
} from './helpers/idmap-util'

const { btrfsTest } = useBtrfs(test, { tools: ['setfacl', 'getfacl', 'setcap', 'getcap', 'getfattr', 'setfattr'] })

const remap = (p: string, from: Mapping, to: Mapping, extra: { crossSubvolumes?: boolean } = {}) => remapLayer(p, { from, to, ...extra })

btrfsTest('every kind of inode gets the shifted owner; the outside keeps its owners', async (t, dir) => {
  const outside = await makeSentinel('remap-rich')
  try {
    await fsp.lchown(outside.dir, 1234, 1234)
    await buildRich(dir, IDENTITY, outside.dir)
    await fsp.lchown(path.join(outside.dir, 'outside-file'), 1234, 1235)
    await fsp.lchown(path.join(outside.dir, 'outside-dir'), 1236, 1237)
    const before = await statOf(['chr', 'blk', 'hl-a', 'hl-b', 'dir/hl-c'].map((r) => path.join(dir, r)))

    const res = await remap(dir, IDENTITY, shifted(S1))

    t.deepEqual(await richOwnerProblems(dir, shifted(S1)), [], 'owner, mode and type of every entry (stat)')
    t.deepEqual(res, { visited: RICH_INODES, changed: RICH_INODES }, 'each inode once, hardlinks included')
    const after = await statOf(['chr', 'blk', 'hl-a', 'hl-b', 'dir/hl-c'].map((r) => path.join(dir, r)))
    for (const r of ['chr', 'blk']) t.is(after.get(path.join(dir, r))?.rdev, before.get(path.join(dir, r))?.rdev, `${r} device numbers`)
    const ino = before.get(path.join(dir, 'hl-a'))?.ino
    for (const r of ['hl-a', 'hl-b', 'dir/hl-c']) {
      const s = after.get(path.join(dir, r))
      t.is(s?.ino, ino, `${r} is still the same inode`)
      t.is(s?.nlink, 3)
      t.deepEqual([s?.uid, s?.gid], [S1 + 1000, S1 + 1000], `${r} shows the new owner`)
    }
    // Symlinks were lchown'ed; their targets outside the filesystem were not touched.
    t.deepEqual(await ownerOf(path.join(outside.dir, 'outside-file')), [1234, 1235], 'file behind link-out')
    t.deepEqual(await ownerOf(path.join(outside.dir, 'outside-dir')), [1236, 1237], 'directory behind link-dir-out')
    t.deepEqual(await ownerOf(outside.dir), [1234, 1234])
    t.deepEqual((await outside.verify()).filter((p) => p !== 'extra: outside-file'), [], 'sentinel files intact')
  } finally {
    await outside.remove()
  }
})

btrfsTest('setuid/setgid bits and a capability survive the chown (stat, getcap)', async (t, dir) => {
  const outside = await makeSentinel('remap-cap')
  try {
    await buildRich(dir, IDENTITY, outside.dir)
    const capBefore = await xattrHex(path.join(dir, 'cap'), 'security.capability')
    t.truthy(capBefore)
    await remap(dir, IDENTITY, shifted(S1))
    const st = await statOf(['suid', 'sgid', 'suid-sgid', 'sgid-dir', 'cap'].map((r) => path.join(dir, r)))
    t.is(st.get(path.join(dir, 'suid'))?.mode, '4755')
    t.is(st.get(path.join(dir, 'sgid'))?.mode, '2755')
    t.is(st.get(path.join(dir, 'suid-sgid'))?.mode, '6750')
    t.is(st.get(path.join(dir, 'sgid-dir'))?.mode, '2775')
    t.deepEqual([st.get(path.join(dir, 'suid'))?.uid, st.get(path.join(dir, 'suid'))?.gid], [S1, S1])
    t.is(await getcap(path.join(dir, 'cap')), 'cap_net_raw=ep', 'getcap after the remap')
    t.deepEqual([st.get(path.join(dir, 'cap'))?.uid], [S1])
    const capAfter = await xattrHex(path.join(dir, 'cap'), 'security.capability')
    t.log(`v2 capability remapped from {} to ${S1}: before ${capBefore}, after ${capAfter}`)
  } finally {
    await outside.remove()
  }
})

btrfsTest('a v3 capability has its rootid shifted from the old root to the new one', async (t, dir) => {
  const f = path.join(dir, 'ping')
  await fsp.writeFile(f, '#!/bin/sh\n')
  await fsp.lchown(dir, S1, S1)
  await fsp.lchown(f, S1, S1)
  await setXattrHex(f, 'security.capability', capV3Hex(CAP_NET_RAW, S1))
  t.deepEqual(capRevisionRootid((await xattrHex(f, 'security.capability'))!), { revision: 3, rootid: S1 })

  await remap(dir, shifted(S1), shifted(S2))

  const hex = (await xattrHex(f, 'security.capability'))!
  t.deepEqual(capRevisionRootid(hex), { revision: 3, rootid: S2 }, `rootid shifted: 0x${hex}`)
  t.is(hex.slice(0, 40), capV3Hex(CAP_NET_RAW, S2).slice(0, 40), 'the capability sets are unchanged')
  t.deepEqual(await ownerOf(f), [S2, S2])
  t.regex(await getcap(f), /cap_net_raw[=+]ep/)
})

btrfsTest('POSIX ACLs name the shifted ids (getfacl -n)', async (t, dir) => {
  const outside = await makeSentinel('remap-acl')
  try {
    await buildRich(dir, IDENTITY, outside.dir)
    await remap(dir, IDENTITY, shifted(S1))
    const file = await getfacl(path.join(dir, 'acl-file'))
    t.true(file.includes(`user:${S1 + 1000}:r-x`), file.join(' '))
    t.true(file.includes(`group:${S1 + 1000}:r--`), file.join(' '))
    t.false(file.some((l) => /:1000:/.test(l)), 'no unshifted id left')
    const d = await getfacl(path.join(dir, 'acl-dir'))
    t.true(d.includes(`user:${S1 + 1000}:r-x`), d.join(' '))
    t.true(d.includes(`default:user:${S1 + 1000}:rwx`), d.join(' '))
    t.true(d.includes(`default:group:${S1 + 1001}:r-x`), d.join(' '))
  } finally {
    await outside.remove()
  }
})

btrfsTest('the ACL of the remapped directory itself is shifted too', async (t, dir) => {
  await sh('setfacl', ['-m', 'u:1000:rx,g:1000:r', dir])
  await sh('setfacl', ['-d', '-m', 'u:1000:rwx', dir])
  await remap(dir, IDENTITY, shifted(S1))
  t.deepEqual(await ownerOf(dir), [S1, S1])
  const acl = await getfacl(dir)
  t.true(acl.includes(`user:${S1 + 1000}:r-x`), `access ACL of the root: ${acl.join(' ')}`)
  t.true(acl.includes(`default:user:${S1 + 1000}:rwx`), `default ACL of the root: ${acl.join(' ')}`)
})

btrfsTest('a nested subvolume is not entered unless crossSubvolumes: true', async (t, dir) => {
  const nested = path.join(dir, 'nested')
  await mkSubvol(nested)
  await fsp.mkdir(path.join(nested, 'sub'))
  await fsp.writeFile(path.join(nested, 'top'), 't')
  await fsp.writeFile(path.join(nested, 'sub', 'deep'), 'd')
  const inside = ['', 'top', 'sub', 'sub/deep'].map((r) => path.join(nested, r))
  for (const p of inside) await fsp.lchown(p, 1000, 1000)
  await fsp.writeFile(path.join(dir, 'plain'), 'p')

  await remap(dir, IDENTITY, shifted(S1))
  t.deepEqual(await ownerOf(path.join(dir, 'plain')), [S1, S1])
  for (const p of inside) t.deepEqual(await ownerOf(p), [1000, 1000], `not entered: ${path.relative(dir, p) || 'nested'}`)

  // Bring the nested subvolume to the same mapping, then cross into it.
  await remap(nested, IDENTITY, shifted(S1))
  await remap(dir, shifted(S1), shifted(S2), { crossSubvolumes: true })
  t.deepEqual(await ownerOf(path.join(dir, 'plain')), [S2, S2])
  for (const p of inside) t.deepEqual(await ownerOf(p), [S2 + 1000, S2 + 1000], `crossSubvolumes: ${path.relative(dir, p) || 'nested'}`)
})

btrfsTest('a bind mount of an outside directory inside the tree is never entered', async (t, dir) => {
  const outside = await makeSentinel('remap-bind')
  const mnt = path.join(dir, 'mnt')
  try {
    await fsp.lchown(outside.dir, 1234, 1234)
    await fsp.lchown(path.join(outside.dir, 'f1'), 1234, 1235)
    await fsp.mkdir(mnt)
    await fsp.writeFile(path.join(dir, 'plain'), 'p')
    await bindMount(outside.dir, mnt)
    const res = await remap(dir, IDENTITY, shifted(S1))
    t.deepEqual(await ownerOf(path.join(dir, 'plain')), [S1, S1])
    t.deepEqual(await ownerOf(path.join(outside.dir, 'f1')), [1234, 1235], 'a file of the mounted directory')
    t.deepEqual(await ownerOf(outside.dir), [1234, 1234], 'the mounted directory')
    t.log(`remap result with a bind mount inside: ${JSON.stringify(res)}`)
  } finally {
    await unmountIfMounted(mnt)
    await outside.remove()
  }
})

btrfsTest('a bind mount of a directory of the same filesystem inside the tree is never touched', async (t, dir) => {
  const elsewhere = path.join(dir, 'elsewhere')
  const tree = path.join(dir, 'tree')
  const mnt = path.join(tree, 'mnt')
  await fsp.mkdir(path.join(elsewhere, 'sub'), { recursive: true })
  await fsp.writeFile(path.join(elsewhere, 'sub', 'f'), 'f')
  for (const p of [elsewhere, path.join(elsewhere, 'sub'), path.join(elsewhere, 'sub', 'f')]) await fsp.lchown(p, 1234, 1235)
  await fsp.mkdir(mnt, { recursive: true })
  try {
    await bindMount(elsewhere, mnt)
    await remap(tree, IDENTITY, shifted(S1))
    t.deepEqual(await ownerOf(tree), [S1, S1])
    t.deepEqual(await ownerOf(path.join(elsewhere, 'sub', 'f')), [1234, 1235], 'a file below the mounted directory')
    t.deepEqual(await ownerOf(path.join(elsewhere, 'sub')), [1234, 1235], 'a directory below the mounted directory')
    t.deepEqual(await ownerOf(elsewhere), [1234, 1235], 'the mounted directory itself (outside the tree)')
  } finally {
    await unmountIfMounted(mnt)
  }
})

btrfsTest('a file bind-mounted from outside onto a file of the tree is never touched', async (t, dir) => {
  const outside = await makeSentinel('remap-filebind')
  const covered = path.join(dir, 'covered')
  const f = path.join(outside.dir, 'f1')
  try {
    await fsp.lchown(f, 1234, 1235)
    await fsp.writeFile(covered, 'covered')
    await bindMount(f, covered)
    await remap(dir, IDENTITY, shifted(S1))
    t.deepEqual(await ownerOf(dir), [S1, S1])
    t.deepEqual(await ownerOf(f), [1234, 1235], 'the outside file keeps its owner')
  } finally {
    await unmountIfMounted(covered)
    await outside.remove()
  }
})

btrfsTest('round trip host -> container -> host restores every id (full stat but ctime, xattrs)', async (t, dir) => {
  const outside = await makeSentinel('remap-rt')
  try {
    await buildRich(dir, IDENTITY, outside.dir)
    manyFiles(path.join(dir, 'dir'), 300, 50)
    const before = await fullState(dir)
    const a = await remap(dir, IDENTITY, shifted(S1))
    const mid = await fullState(dir)
    t.true(stateDiff(before, mid).length > 300, 'the shifted tree differs')
    const b = await remap(dir, shifted(S1), IDENTITY)
    t.deepEqual(a, b)
    const after = await fullState(dir)
    t.deepEqual(stateDiff(before, after), [], 'every entry as it was')
  } finally {
    await outside.remove()
  }
})

btrfsTest('ids at the edges of several ranges map both ways; one past is ERR_ID_MAPPING', async (t, dir) => {
  // from: host 100000.. holds container 0..999, host 200000.. holds container 1000..1009.
  const from: Mapping = {
    uidMaps: [
      { containerId: 1000, hostId: 200000, size: 10 },
      { containerId: 0, hostId: 100000, size: 1000 },
    ],
    gidMaps: [{ containerId: 0, hostId: 50000, size: 2000 }],
  }
  // to: container 0..9 at 300000, 10..1999 at 400010.
  const to: Mapping = {
    uidMaps: [
      { containerId: 0, hostId: 300000, size: 10 },
      { containerId: 10, hostId: 400010, size: 1990 },
    ],
    gidMaps: [{ containerId: 0, hostId: 7, size: 2000 }],
  }
  const cases: [string, number, number, number, number][] = [
    // name, on-disk uid, gid, want uid, gid
    ['a', 100000, 50000, 300000, 7],
    ['b', 100009, 50009, 300009, 16],
    ['c', 100010, 50010, 400010, 17],
    ['d', 100999, 51999, 400999, 2006],
    ['e', 200000, 50000, 401000, 7],
    ['f', 200009, 50000, 401009, 7],
  ]
  const bad: [string, number, number][] = [
    ['x-uid-past-range', 200010, 50000],
    ['x-uid-below', 99999, 50000],
    ['x-gid-past', 100000, 52000],
  ]
  await fsp.lchown(dir, 100000, 50000)
  for (const [n, u, g] of [...cases.map((c) => [c[0], c[1], c[2]] as [string, number, number]), ...bad]) {
    await fsp.writeFile(path.join(dir, n), n)
    await fsp.lchown(path.join(dir, n), u, g)
  }
  const err = await rejectsCode(t, remap(dir, from, to), 'ERR_ID_MAPPING')
  const paths = (err?.errors ?? []).map((e) => e.path).sort()
  t.deepEqual(paths, bad.map((b) => path.join(dir, b[0])).sort(), 'each unmapped entry reported with its path')
  for (const e of err?.errors ?? []) t.is(e.code, 'ERR_ID_MAPPING')
  for (const [n, , , u, g] of cases) t.deepEqual(await ownerOf(path.join(dir, n)), [u, g], `${n} remapped`)
  for (const [n, u, g] of bad) t.deepEqual(await ownerOf(path.join(dir, n)), [u, g], `${n} left as it was`)
})

btrfsTest('an id outside the maps on a name that is not UTF-8: the error carries its bytes', async (t, dir) => {
  const name = Buffer.from([0x62, 0x61, 0x64, 0xff]) // "bad" and a byte that is not UTF-8
  const file = Buffer.concat([Buffer.from(`${dir}/`), name])
  await fsp.writeFile(file, 'x')
  await fsp.lchown(file, 70000, 0)
  const err = await rejectsCode(t, remap(dir, IDENTITY, shifted(S1, 1000)), 'ERR_ID_MAPPING')
  t.is(err?.path, `${dir}/bad\ufffd`)
  t.deepEqual(err?.rawPath, file)
  t.deepEqual(
    (err?.errors ?? []).map((e) => e.rawPath),
    [file],
  )
  t.is((await fsp.lstat(err!.rawPath!)).uid, 70000, 'the bytes reach the file, left as it was')
})

btrfsTest('an id outside the maps: that path is in err.errors, the other entries are still remapped', async (t, dir) => {
  await fsp.mkdir(path.join(dir, 'd'))
  for (const f of ['ok1', 'd/ok2', 'd/bad-uid', 'bad-gid']) await fsp.writeFile(path.join(dir, f), f)
  await fsp.lchown(path.join(dir, 'ok1'), 999, 999)
  await fsp.lchown(path.join(dir, 'd/ok2'), 1, 2)
  await fsp.lchown(path.join(dir, 'd/bad-uid'), 70000, 0)
  await fsp.lchown(path.join(dir, 'bad-gid'), 0, 1000)
  const err = await rejectsCode(t, remap(dir, IDENTITY, shifted(S1, 1000)), 'ERR_ID_MAPPING')
  t.truthy(err?.errors, 'err.errors is set')
  const paths = (err?.errors ?? []).map((e) => e.path).sort()
  t.deepEqual(paths, [path.join(dir, 'bad-gid'), path.join(dir, 'd/bad-uid')])
  t.true([path.join(dir, 'bad-gid'), path.join(dir, 'd/bad-uid')].includes(err?.path ?? ''), `err.path is one of them: ${err?.path}`)
  t.regex(err?.message ?? '', /1 more error/, err?.message)
  t.deepEqual(await ownerOf(path.join(dir, 'ok1')), [S1 + 999, S1 + 999])
  t.deepEqual(await ownerOf(path.join(dir, 'd/ok2')), [S1 + 1, S1 + 2])
  t.deepEqual(await ownerOf(path.join(dir, 'd')), [S1, S1])
  t.deepEqual(await ownerOf(path.join(dir, 'd/bad-uid')), [70000, 0])
  t.deepEqual(await ownerOf(path.join(dir, 'bad-gid')), [0, 1000])
})

btrfsTest('an AbortSignal aborts with ABORT_ERR (already aborted: nothing changed)', async (t, dir) => {
  manyFiles(dir, 12000, 20)
  const probe = path.join(dir, 'd0000', 'f0')
  const pre = new AbortController()
  pre.abort()
  await rejectsCode(t, remapLayer(dir, { from: IDENTITY, to: shifted(S1), signal: pre.signal }), 'ABORT_ERR', 'already aborted')
  t.deepEqual(await ownerOf(probe), [0, 0], 'an already aborted signal changes nothing')
  t.deepEqual(await ownerOf(dir), [0, 0])

  const ac = new AbortController()
  const p = remapLayer(dir, { from: IDENTITY, to: shifted(S1), signal: ac.signal })
  ac.abort()
  await rejectsCode(t, p, 'ABORT_ERR', 'aborted while running')
  const owners = await statOf((await fsp.readdir(dir)).flatMap((d) => [path.join(dir, d, `f${Number(d.slice(1)) * 20}`)]))
  const left = [...owners.values()].filter((s) => s.uid < S1).length
  t.log(`aborted right after the start: ${left} of ${owners.size} sampled files left unshifted`)
})

btrfsTest('onProgress is called with increasing counts, the last one the total', async (t, dir) => {
  manyFiles(dir, 20000, 100)
  const seen: number[] = []
  const res = await remapLayer(dir, { from: IDENTITY, to: shifted(S1), onProgress: (n) => seen.push(n) })
  t.is(res.visited, 20000 + 200 + 1)
  t.is(res.changed, res.visited)
  t.true(seen.length >= 1, 'called at least at the end')
  for (let i = 1; i < seen.length; i++) t.true(seen[i] > seen[i - 1], `increasing: ${seen.join(',')}`)
  t.is(seen[seen.length - 1], res.visited, 'the last report is the total')
  t.log(`progress reports: ${seen.join(', ')}`)
  const sample = await statOf([path.join(dir, 'd0199', 'f19999'), path.join(dir, 'd0000', 'f7')])
  t.deepEqual([...sample.values()].map((s) => [s.uid, s.gid]), [
    [S1 + 999, S1 + ((19999 * 7) % 1000)],
    [S1 + 7, S1 + 49],
  ])
})
