import test from 'ava'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import {
  createSubvolume,
  isReadOnly,
  isSubvolume,
  listSubvolumes,
  setReadOnly,
  snapshot,
  subvolumeInfo,
  sync,
} from '../ts/index'
import {
  btrfsCli,
  fill,
  mkSubvol,
  oracleBelow,
  oracleIsSubvolume,
  oracleListAll,
  oracleListBelow,
  oracleReadOnly,
  oracleShow,
  sh,
  treeState,
  useBtrfs,
} from './helpers/btrfs'

const { btrfsTest, fs } = useBtrfs(test)

/** Whether `list` is in pre-order: every entry's subtree follows it contiguously. */
function isPreOrder(list: { path: string }[]): boolean {
  for (let i = 0; i < list.length; i++) {
    const p = list[i].path
    // The nearest listed ancestor must appear before, and nothing outside p's subtree may sit
    // between p and one of its descendants.
    let j = i + 1
    while (j < list.length && list[j].path.startsWith(p + '/')) j++
    for (let k = j; k < list.length; k++) if (list[k].path.startsWith(p + '/')) return false
    for (let k = 0; k < i; k++) if (list[k].path.startsWith(p + '/')) return false
  }
  return true
}

async function expectEROFS(t: import('ava').ExecutionContext, file: string) {
  const e = await t.throwsAsync(fsp.writeFile(file, 'x'))
  t.is((e as NodeJS.ErrnoException).code, 'EROFS')
}

// ---------------------------------------------------------------------------------------------
// isSubvolume
// ---------------------------------------------------------------------------------------------

btrfsTest('isSubvolume agrees with btrfs subvolume show on every kind of entry', async (t, dir) => {
  const sv = path.join(dir, 'sv')
  await mkSubvol(sv)
  await fsp.mkdir(path.join(sv, 'inner'))
  await mkSubvol(path.join(sv, 'inner', 'nested'))
  await fsp.mkdir(path.join(dir, 'plain'))
  await fsp.writeFile(path.join(dir, 'file'), 'data')
  await btrfsCli('subvolume', 'snapshot', '-r', sv, path.join(dir, 'snap'))
  const cases: [string, boolean][] = [
    [fs().mnt, true], // the top-level subvolume
    [sv, true],
    [path.join(sv, 'inner'), false],
    [path.join(sv, 'inner', 'nested'), true],
    [path.join(dir, 'plain'), false],
    [path.join(dir, 'file'), false],
    [path.join(dir, 'snap'), true],
    [dir, false],
  ]
  for (const [p, want] of cases) {
    t.is(await isSubvolume(p), want, p)
    if (p !== path.join(dir, 'file')) t.is(await oracleIsSubvolume(p), want, `oracle ${p}`)
  }
})

// ---------------------------------------------------------------------------------------------
// createSubvolume
// ---------------------------------------------------------------------------------------------

btrfsTest('createSubvolume makes an empty subvolume that btrfs-progs sees', async (t, dir) => {
  const p = path.join(dir, 'base')
  t.is(await createSubvolume(p), undefined)
  t.true(await isSubvolume(p))
  t.deepEqual(await fsp.readdir(p), [])
  const show = await oracleShow(p)
  t.is(show.name, 'base')
  t.is(show.parentUuid, null, 'not a snapshot')
  t.is(show.parentId, 5, 'lives in the top-level subvolume')
  t.is(show.flags, '-')
  t.false(await oracleReadOnly(p))
  const listed = (await oracleListAll(fs().mnt)).find((s) => s.id === show.id)
  t.is(listed?.path, path.relative(fs().mnt, p))
  // It is writable.
  await fsp.writeFile(path.join(p, 'x'), 'hello')
  t.is(await fsp.readFile(path.join(p, 'x'), 'utf8'), 'hello')
})

btrfsTest('createSubvolume inside a plain directory of a nested subvolume', async (t, dir) => {
  const outer = path.join(dir, 'outer')
  await createSubvolume(outer)
  await fsp.mkdir(path.join(outer, 'a', 'b'), { recursive: true })
  const inner = path.join(outer, 'a', 'b', 'inner')
  await createSubvolume(inner)
  const o = await oracleShow(outer)
  const i = await oracleShow(inner)
  t.is(i.parentId, o.id, 'parent subvolume is outer')
  t.deepEqual(await oracleListBelow(outer).then((l) => l.map((s) => s.id)), [i.id])
  t.deepEqual(await listSubvolumes(outer), [{ path: 'a/b/inner', id: i.id }])
})

btrfsTest('createSubvolume accepts names of exactly 255 bytes, unicode names and a trailing slash', async (t, dir) => {
  const ascii = path.join(dir, 'a'.repeat(255))
  await createSubvolume(ascii)
  t.true(await oracleIsSubvolume(ascii))
  const multi = path.join(dir, 'é'.repeat(127) + 'x') // 255 bytes in UTF-8
  t.is(Buffer.byteLength(path.basename(multi)), 255)
  await createSubvolume(multi)
  t.true(await oracleIsSubvolume(multi))
  const uni = path.join(dir, 'naïve layer ✓')
  await createSubvolume(uni)
  t.is((await oracleShow(uni)).name, 'naïve layer ✓')
  const slash = path.join(dir, 'slashed')
  await createSubvolume(slash + '/')
  t.true(await oracleIsSubvolume(slash))
  const names = (await oracleBelow(fs().mnt, dir)).map((s) => s.path).sort()
  t.deepEqual(names, [path.basename(ascii), path.basename(multi), 'naïve layer ✓', 'slashed'].sort())
})

btrfsTest('createSubvolume: many concurrent creations all land', async (t, dir) => {
  const names = Array.from({ length: 40 }, (_, i) => `c${i}`)
  await Promise.all(names.map((n) => createSubvolume(path.join(dir, n))))
  const got = (await oracleBelow(fs().mnt, dir)).map((s) => s.path).sort()
  t.deepEqual(got, [...names].sort())
})

// ---------------------------------------------------------------------------------------------
// snapshot
// ---------------------------------------------------------------------------------------------

btrfsTest('snapshot makes a writable copy-on-write copy whose parent uuid is the source', async (t, dir) => {
  const src = path.join(dir, 'src')
  await mkSubvol(src)
  await fill(src, 5)
  const srcState = await treeState(src)
  const dst = path.join(dir, 'dst')
  t.is(await snapshot(src, dst), undefined)
  t.deepEqual(await treeState(dst), srcState, 'same content')
  const s = await oracleShow(src)
  const d = await oracleShow(dst)
  t.is(d.parentUuid, s.uuid)
  t.not(d.uuid, s.uuid)
  t.not(d.id, s.id)
  t.is(d.flags, '-')
  t.false(await oracleReadOnly(dst))
  t.false(await isReadOnly(dst))
  // Copy-on-write: a change on either side does not show on the other.
  await fsp.writeFile(path.join(dst, 'file0.txt'), 'changed in the snapshot')
  await fsp.writeFile(path.join(dst, 'new.txt'), 'new')
  t.deepEqual(await treeState(src), srcState, 'source untouched')
  // Option forms that mean "writable".
  await snapshot(src, path.join(dir, 'dst2'), {})
  await snapshot(src, path.join(dir, 'dst3'), { readOnly: false })
  await snapshot(src, path.join(dir, 'dst4'), undefined)
  for (const n of ['dst2', 'dst3', 'dst4']) {
    t.false(await oracleReadOnly(path.join(dir, n)), n)
    t.is((await oracleShow(path.join(dir, n))).parentUuid, s.uuid)
  }
})

btrfsTest('snapshot with readOnly makes a read-only snapshot', async (t, dir) => {
  const src = path.join(dir, 'src')
  await mkSubvol(src)
  await fill(src)
  const dst = path.join(dir, 'ro')
  await snapshot(src, dst, { readOnly: true })
  const d = await oracleShow(dst)
  t.is(d.flags, 'readonly')
  t.is(d.parentUuid, (await oracleShow(src)).uuid)
  t.true(await oracleReadOnly(dst))
  t.true(await isReadOnly(dst))
  t.true((await subvolumeInfo(dst)).readOnly)
  t.deepEqual(await treeState(dst), await treeState(src))
  await expectEROFS(t, path.join(dst, 'file0.txt'))
  await expectEROFS(t, path.join(dst, 'new'))
  // The source stays writable.
  t.false(await oracleReadOnly(src))
  await fsp.writeFile(path.join(src, 'after'), 'x')
  // A snapshot of a read-only snapshot is writable unless asked otherwise.
  const again = path.join(dir, 'again')
  await snapshot(dst, again)
  t.false(await oracleReadOnly(again))
  t.is((await oracleShow(again)).parentUuid, d.uuid)
})

btrfsTest('snapshot is not recursive: nested subvolumes show as empty directories', async (t, dir) => {
  const src = path.join(dir, 'src')
  await mkSubvol(src)
  await mkSubvol(path.join(src, 'nested'))
  await fsp.writeFile(path.join(src, 'nested', 'inside'), 'x')
  const dst = path.join(dir, 'dst')
  await snapshot(src, dst)
  t.deepEqual(await listSubvolumes(dst), [])
  t.deepEqual(await oracleListBelow(dst), [])
  const st = await fsp.stat(path.join(dst, 'nested'))
  t.true(st.isDirectory())
  t.deepEqual(await fsp.readdir(path.join(dst, 'nested')), [])
})

btrfsTest('snapshot of the top-level subvolume and into a nested directory', async (t, dir) => {
  const top = path.join(dir, 'top')
  await snapshot(fs().mnt, top, { readOnly: true })
  const show = await oracleShow(top)
  t.is(show.parentUuid, (await oracleShow(fs().mnt)).uuid)
  t.is(show.flags, 'readonly')
  const src = path.join(dir, 'src')
  await mkSubvol(src)
  await fsp.mkdir(path.join(src, 'deep', 'er'), { recursive: true })
  const into = path.join(src, 'deep', 'er', 'snap')
  await snapshot(src, into)
  t.is((await oracleShow(into)).parentId, (await oracleShow(src)).id)
  t.deepEqual(await listSubvolumes(src), [{ path: 'deep/er/snap', id: (await oracleShow(into)).id }])
})

// ---------------------------------------------------------------------------------------------
// subvolumeInfo
// ---------------------------------------------------------------------------------------------

function parseProgsTime(s: string): number {
  // "2026-11-27 13:16:19 +0000" -> epoch seconds
  const m = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d) ([+-]\d\d)(\d\d)$/.exec(s)
  if (!m) throw new Error(`cannot parse time ${s}`)
  return Date.parse(`${m[1]}T${m[2]}${m[3]}:${m[4]}`) / 1000
}

async function compareWithShow(t: import('ava').ExecutionContext, p: string) {
  await sync(p)
  const info = await subvolumeInfo(p)
  const show = await oracleShow(p)
  t.is(info.id, show.id, `id of ${p}`)
  t.is(info.uuid as string | null, show.uuid, `uuid of ${p}`)
  t.is(info.parentUuid, show.parentUuid, `parent uuid of ${p}`)
  t.is(info.receivedUuid, show.receivedUuid, `received uuid of ${p}`)
  t.is(info.generation, show.generation, `generation of ${p}`)
  t.is(info.otransid, show.genAtCreation, `otransid of ${p}`)
  t.is(info.parentId, show.parentId, `parent id of ${p}`)
  t.is(info.readOnly, show.flags.includes('readonly'), `read-only of ${p}`)
  t.is(Math.floor(info.otime.getTime() / 1000), parseProgsTime(show.creationTime), `otime of ${p}`)
  if (show.id !== 5) t.is(info.name, show.name)
  return { info, show }
}

btrfsTest('subvolumeInfo matches btrfs subvolume show', async (t, dir) => {
  const base = path.join(dir, 'base')
  await mkSubvol(base)
  await fill(base)
  await fsp.mkdir(path.join(base, 'd'))
  await mkSubvol(path.join(base, 'd', 'nested'))
  await btrfsCli('subvolume', 'snapshot', base, path.join(dir, 'snap'))
  await btrfsCli('subvolume', 'snapshot', '-r', base, path.join(dir, 'rosnap'))
  for (const p of ['base', 'base/d/nested', 'snap', 'rosnap']) await compareWithShow(t, path.join(dir, p))

  const b = await subvolumeInfo(base)
  t.is(b.name, 'base')
  t.is(b.parentId, 5)
  t.is(b.dirId, (await fsp.stat(dir)).ino, 'dirId is the inode of the directory holding it')
  t.regex(b.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
  t.is(b.parentUuid, null)
  t.is(b.receivedUuid, null)
  t.true(b.otime instanceof Date && b.ctime instanceof Date)
  t.true(b.ctransid >= b.otransid)
  t.true(b.generation >= b.ctransid)
  const n = await subvolumeInfo(path.join(base, 'd', 'nested'))
  t.is(n.parentId, b.id)
  t.is(n.dirId, (await fsp.stat(path.join(base, 'd'))).ino)
  const s = await subvolumeInfo(path.join(dir, 'snap'))
  t.is(s.parentUuid, b.uuid)
  t.false(s.readOnly)
  t.true((await subvolumeInfo(path.join(dir, 'rosnap'))).readOnly)
})

// Serial: concurrent tests change the top-level subvolume (and so its generation).
btrfsTest.serial('subvolumeInfo of the top-level subvolume', async (t) => {
  const { info } = await compareWithShow(t, fs().mnt)
  t.is(info.id, 5)
  t.is(info.parentId, 0)
  t.is(info.otransid, 0)
})

btrfsTest('subvolumeInfo: a change raises generation and ctransid, not otransid', async (t, dir) => {
  const p = path.join(dir, 'sv')
  await createSubvolume(p)
  await sync(p)
  const before = await subvolumeInfo(p)
  await new Promise((r) => setTimeout(r, 20))
  await fsp.writeFile(path.join(p, 'new-file'), 'x')
  await sync(p)
  const after = await subvolumeInfo(p)
  t.true(after.generation > before.generation, `${after.generation} > ${before.generation}`)
  t.true(after.ctransid > before.ctransid, `${after.ctransid} > ${before.ctransid}`)
  t.is(after.otransid, before.otransid)
  t.is(after.otime.getTime(), before.otime.getTime())
  t.true(after.ctime.getTime() > before.ctime.getTime())
  t.is(after.generation, (await oracleShow(p)).generation)
})

// ---------------------------------------------------------------------------------------------
// listSubvolumes
// ---------------------------------------------------------------------------------------------

async function buildTree(root: string): Promise<void> {
  await mkSubvol(root)
  await fill(root)
  for (const d of ['a', 'a/b', 'a/b/c', 'a/b/c/d']) await mkSubvol(path.join(root, d))
  await fsp.mkdir(path.join(root, 'plain', 'deeper'), { recursive: true })
  await mkSubvol(path.join(root, 'plain', 'deeper', 'x'))
  await fsp.mkdir(path.join(root, 'plain', 'deeper', 'x', 'dir'))
  await mkSubvol(path.join(root, 'plain', 'deeper', 'x', 'dir', 'y'))
  await mkSubvol(path.join(root, 'plain', 'z'))
  await fsp.mkdir(path.join(root, 'a', 'b', 'in-b'))
  await mkSubvol(path.join(root, 'a', 'b', 'in-b', 'w'))
  await mkSubvol(path.join(root, 'zz'))
  await mkSubvol(path.join(root, 'a b ✓'))
}

btrfsTest('listSubvolumes lists every nested subvolume, pre-order, relative, like btrfs subvolume list', async (t, dir) => {
  const root = path.join(dir, 'root')
  await buildTree(root)
  // A sibling outside root must not be listed.
  await mkSubvol(path.join(dir, 'sibling'))
  const got = await listSubvolumes(root)
  const oracle = await oracleBelow(fs().mnt, root)
  t.is(oracle.length, 10)
  t.deepEqual(
    [...got].sort((a, b) => (a.path < b.path ? -1 : 1)),
    oracle,
    'same paths and ids as btrfs subvolume list',
  )
  t.true(isPreOrder(got), JSON.stringify(got.map((g) => g.path)))
  for (const g of got) {
    t.false(path.isAbsolute(g.path))
    t.true(typeof g.id === 'number' && g.id > 255)
  }
  // The top-level entries are exactly `btrfs subvolume list -o`.
  const direct = got.filter((g) => !got.some((o) => o !== g && g.path.startsWith(o.path + '/')))
  const o = await oracleListBelow(root)
  t.deepEqual(direct.map((d) => d.id).sort(), o.map((s) => s.id).sort())
  // Listing from a nested subvolume is relative to it.
  const a = await listSubvolumes(path.join(root, 'a'))
  t.deepEqual(a, [
    { path: 'b', id: got.find((g) => g.path === 'a/b')!.id },
    { path: 'b/c', id: got.find((g) => g.path === 'a/b/c')!.id },
    { path: 'b/c/d', id: got.find((g) => g.path === 'a/b/c/d')!.id },
    { path: 'b/in-b/w', id: got.find((g) => g.path === 'a/b/in-b/w')!.id },
  ])
  t.deepEqual(await listSubvolumes(path.join(root, 'a', 'b', 'c', 'd')), [])
})

btrfsTest('listSubvolumes: a name that is not UTF-8 comes with its bytes, which reach the subvolume', async (t, dir) => {
  const root = path.join(dir, 'root')
  await mkSubvol(root)
  await mkSubvol(path.join(root, 'plain'))
  // btrfs-progs makes it: the JS API takes paths as strings, which are UTF-8.
  await sh('sh', ['-c', 'btrfs subvolume create "$1/caf$(printf "\\351")"', 'sh', root])
  const got = [...(await listSubvolumes(root))].sort((a, b) => (a.path < b.path ? -1 : 1))
  t.deepEqual(
    got.map((g) => g.path),
    ['caf\ufffd', 'plain'],
  )
  const name = Buffer.from([0x63, 0x61, 0x66, 0xe9]) // "café" in Latin-1
  t.deepEqual(got[0].rawPath, name)
  t.false('rawPath' in got[1], 'a UTF-8 path has no rawPath')
  const st = await fsp.stat(Buffer.concat([Buffer.from(`${root}/`), got[0].rawPath!]))
  t.is(st.ino, 256, 'the bytes name the subvolume root')
  t.is(got[0].id, (await oracleListBelow(root)).find((s) => s.id !== got[1].id)?.id)
})

btrfsTest('listSubvolumes follows renames and sees into read-only subvolumes', async (t, dir) => {
  const root = path.join(dir, 'root')
  await mkSubvol(root)
  await fsp.mkdir(path.join(root, 'old'))
  await mkSubvol(path.join(root, 'old', 'kid'))
  await mkSubvol(path.join(root, 'old', 'kid', 'grandkid'))
  await fsp.rename(path.join(root, 'old'), path.join(root, 'new'))
  await btrfsCli('property', 'set', '-t', 'subvol', path.join(root, 'new', 'kid'), 'ro', 'true')
  await btrfsCli('property', 'set', '-t', 'subvol', root, 'ro', 'true')
  const got = await listSubvolumes(root)
  t.deepEqual(
    got.map((g) => g.path),
    ['new/kid', 'new/kid/grandkid'],
  )
  t.deepEqual(
    [...got].sort((a, b) => (a.path < b.path ? -1 : 1)),
    await oracleBelow(fs().mnt, root),
  )
})

btrfsTest('listSubvolumes with more than 255 direct children (rootref continuation)', async (t, dir) => {
  const root = path.join(dir, 'root')
  await createSubvolume(root)
  await fsp.mkdir(path.join(root, 'd'))
  const names = Array.from({ length: 300 }, (_, i) => (i % 2 ? `d/k${i}` : `k${i}`))
  await Promise.all(names.map((n) => createSubvolume(path.join(root, n))))
  const got = await listSubvolumes(root)
  t.is(got.length, 300)
  t.deepEqual(
    [...got].sort((a, b) => (a.path < b.path ? -1 : 1)),
    await oracleBelow(fs().mnt, root),
  )
  t.is(new Set(got.map((g) => g.id)).size, 300)
})

btrfsTest.serial('listSubvolumes of the top-level subvolume equals btrfs subvolume list', async (t, dir) => {
  await mkSubvol(path.join(dir, 'one'))
  await mkSubvol(path.join(dir, 'one', 'two'))
  const got = await listSubvolumes(fs().mnt)
  const oracle = (await oracleListAll(fs().mnt)).map((s) => ({ path: s.path, id: s.id }))
  t.deepEqual([...got].sort((a, b) => (a.path < b.path ? -1 : 1)), oracle.sort((a, b) => (a.path < b.path ? -1 : 1)))
  t.true(isPreOrder(got))
})

// ---------------------------------------------------------------------------------------------
// isReadOnly / setReadOnly
// ---------------------------------------------------------------------------------------------

btrfsTest('setReadOnly and isReadOnly agree with btrfs property get ro', async (t, dir) => {
  const p = path.join(dir, 'sv')
  await mkSubvol(p)
  await fsp.writeFile(path.join(p, 'f'), 'content')
  t.false(await isReadOnly(p))
  t.false(await oracleReadOnly(p))

  t.is(await setReadOnly(p, true), undefined)
  t.true(await oracleReadOnly(p))
  t.true(await isReadOnly(p))
  t.is((await oracleShow(p)).flags, 'readonly')
  await expectEROFS(t, path.join(p, 'f'))
  await expectEROFS(t, path.join(p, 'g'))
  t.is(await fsp.readFile(path.join(p, 'f'), 'utf8'), 'content')

  await setReadOnly(p, true) // idempotent
  t.true(await oracleReadOnly(p))

  await setReadOnly(p, false)
  t.false(await oracleReadOnly(p))
  t.false(await isReadOnly(p))
  await fsp.writeFile(path.join(p, 'g'), 'writable again')
  await setReadOnly(p, false) // idempotent
  t.false(await oracleReadOnly(p))

  // The other direction: btrfs-progs sets, the library reads.
  await btrfsCli('property', 'set', '-t', 'subvol', p, 'ro', 'true')
  t.true(await isReadOnly(p))
  await btrfsCli('property', 'set', '-t', 'subvol', p, 'ro', 'false')
  t.false(await isReadOnly(p))
})

btrfsTest('setReadOnly on a read-only snapshot and on a nested subvolume leaves the others alone', async (t, dir) => {
  const parent = path.join(dir, 'parent')
  await mkSubvol(parent)
  await mkSubvol(path.join(parent, 'kid'))
  await btrfsCli('subvolume', 'snapshot', '-r', parent, path.join(dir, 'ro'))
  t.true(await isReadOnly(path.join(dir, 'ro')))
  await setReadOnly(path.join(dir, 'ro'), false)
  t.false(await oracleReadOnly(path.join(dir, 'ro')))
  await setReadOnly(path.join(parent, 'kid'), true)
  t.true(await oracleReadOnly(path.join(parent, 'kid')))
  t.false(await oracleReadOnly(parent))
  t.false(await isReadOnly(parent))
  await fsp.writeFile(path.join(parent, 'still-writable'), 'x')
})

// ---------------------------------------------------------------------------------------------
// Path forms
// ---------------------------------------------------------------------------------------------

// Serial (and restoring the working directory) because it changes the process' cwd.
btrfsTest.serial('relative paths resolve against the working directory', async (t, dir) => {
  const cwd = process.cwd()
  process.chdir(dir)
  try {
    await createSubvolume('rel')
    t.true(await isSubvolume('rel'))
    await fsp.mkdir('rel/d')
    await createSubvolume('rel/d/kid')
    t.deepEqual((await listSubvolumes('rel')).map((s) => s.path), ['d/kid'])
    await snapshot('rel', 'rel-snap', { readOnly: true })
    t.true(await isReadOnly('rel-snap'))
    t.is((await subvolumeInfo('rel/d/kid')).name, 'kid')
    await setReadOnly('rel-snap', false)
    await (await import('../ts/index')).deleteSubvolume('rel', { recursive: true })
  } finally {
    process.chdir(cwd)
  }
  t.deepEqual((await oracleBelow(fs().mnt, dir)).map((s) => s.path), ['rel-snap'])
  t.false(await oracleReadOnly(path.join(dir, 'rel-snap')))
})

btrfsTest('redundant slashes and a trailing slash name the same subvolume', async (t, dir) => {
  const { deleteSubvolume } = await import('../ts/index')
  await createSubvolume(`${dir}//double//`)
  t.true(await oracleIsSubvolume(path.join(dir, 'double')))
  t.true(await isSubvolume(`${dir}/double/`))
  t.is((await subvolumeInfo(`${dir}//double/`)).name, 'double')
  await snapshot(`${dir}/double/`, `${dir}//snap/`)
  t.true(await oracleIsSubvolume(path.join(dir, 'snap')))
  await deleteSubvolume(`${dir}/snap/`)
  await deleteSubvolume(`${dir}//double`, { recursive: true })
  t.deepEqual(await oracleBelow(fs().mnt, dir), [])
})
