import test from 'ava'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { deleteSubvolume, listSubvolumes } from '../ts/index'
import {
  btrfsCli,
  exists,
  expectErrorNoChange,
  fill,
  mkSubvol,
  mkSubvols,
  oracleBelow,
  oracleReadOnly,
  oracleShow,
  treeState,
  useBtrfs,
} from './helpers/btrfs'

const { btrfsTest, fs } = useBtrfs(test)

const setRo = (p: string, v = true) => btrfsCli('property', 'set', '-t', 'subvol', p, 'ro', String(v))

/** Subvolumes below `dir` per btrfs subvolume list, as paths relative to `dir`. */
const oraclePaths = async (dir: string) => (await oracleBelow(fs().mnt, dir)).map((s) => s.path)

/**
 * A subvolume `root` with nested subvolumes at depths 1 to 4, inside plain directories at
 * several depths, each holding files.
 */
async function buildTree(root: string): Promise<string[]> {
  const nested = [
    'a',
    'a/b',
    'a/b/c',
    'a/b/c/d',
    'plain/x',
    'plain/deeper/still/y',
    'plain/deeper/still/y/in-y/z',
    'a/b/dir/w',
    'q',
  ]
  await mkSubvol(root)
  await fill(root)
  for (const n of nested) {
    await fsp.mkdir(path.dirname(path.join(root, n)), { recursive: true })
    await mkSubvol(path.join(root, n))
    await fill(path.join(root, n), 2)
  }
  return nested
}

btrfsTest('deleteSubvolume deletes a subvolume and its files', async (t, dir) => {
  const p = path.join(dir, 'sv')
  await mkSubvol(p)
  await fill(p, 10)
  const keep = path.join(dir, 'keep')
  await mkSubvol(keep)
  await fill(keep)
  const keepState = await treeState(keep)
  t.deepEqual(await oraclePaths(dir), ['keep', 'sv'])
  t.is(await deleteSubvolume(p), undefined)
  t.false(await exists(p))
  t.deepEqual(await oraclePaths(dir), ['keep'])
  t.deepEqual(await treeState(keep), keepState)
  t.deepEqual(await fsp.readdir(dir), ['keep'])
})

btrfsTest('deleteSubvolume with recursive: false, {} and on a read-only leaf', async (t, dir) => {
  for (const n of ['a', 'b', 'c', 'ro']) await mkSubvol(path.join(dir, n))
  await setRo(path.join(dir, 'ro'))
  await deleteSubvolume(path.join(dir, 'a'), { recursive: false })
  await deleteSubvolume(path.join(dir, 'b'), {})
  await deleteSubvolume(path.join(dir, 'c'), { recursive: true })
  await deleteSubvolume(path.join(dir, 'ro'))
  t.deepEqual(await oraclePaths(dir), [])
  t.deepEqual(await fsp.readdir(dir), [])
})

btrfsTest('deleteSubvolume of a nested subvolume leaves its parent and siblings', async (t, dir) => {
  const root = path.join(dir, 'root')
  await buildTree(root)
  const before = await oraclePaths(dir)
  await deleteSubvolume(path.join(root, 'plain', 'x'))
  t.deepEqual(await oraclePaths(dir), before.filter((p) => p !== 'root/plain/x'))
  t.true(await exists(path.join(root, 'plain', 'deeper', 'still', 'y', 'file0.txt')))
  t.true(await exists(path.join(root, 'plain')))
})

btrfsTest('recursive delete removes nested subvolumes at every depth, also inside plain directories', async (t, dir) => {
  const root = path.join(dir, 'root')
  const nested = await buildTree(root)
  // Neighbours that must survive: a sibling with a shared name prefix, its own nested one,
  // and a snapshot of the tree.
  await mkSubvol(path.join(dir, 'root2'))
  await mkSubvol(path.join(dir, 'root2', 'a'))
  await btrfsCli('subvolume', 'snapshot', root, path.join(dir, 'root-snap'))
  const survivors = await treeState(path.join(dir, 'root2'))
  t.is((await listSubvolumes(root)).length, nested.length)
  t.is(await deleteSubvolume(root, { recursive: true }), undefined)
  t.false(await exists(root))
  t.deepEqual(await oraclePaths(dir), ['root-snap', 'root2', 'root2/a'])
  t.deepEqual(await treeState(path.join(dir, 'root2')), survivors)
  t.true(await exists(path.join(dir, 'root-snap', 'file0.txt')))
})

btrfsTest('recursive delete of a subtree: only that subtree goes', async (t, dir) => {
  const root = path.join(dir, 'root')
  await buildTree(root)
  await deleteSubvolume(path.join(root, 'a'), { recursive: true })
  t.deepEqual(await oraclePaths(dir), [
    'root',
    'root/plain/deeper/still/y',
    'root/plain/deeper/still/y/in-y/z',
    'root/plain/x',
    'root/q',
  ])
  t.false(await exists(path.join(root, 'a')))
  t.true(await exists(path.join(root, 'file0.txt')))
})

btrfsTest('recursive delete clears read-only nested subvolumes at several depths', async (t, dir) => {
  const root = path.join(dir, 'root')
  await buildTree(root)
  for (const n of ['a/b', 'a/b/c/d', 'plain/deeper/still/y/in-y/z', 'q']) await setRo(path.join(root, n))
  t.true(await oracleReadOnly(path.join(root, 'a', 'b')))
  await deleteSubvolume(root, { recursive: true })
  t.false(await exists(root))
  t.deepEqual(await oraclePaths(dir), [])
})

btrfsTest('recursive delete of a read-only parent with nested children', async (t, dir) => {
  const root = path.join(dir, 'root')
  await buildTree(root)
  await setRo(root)
  t.true(await oracleReadOnly(root))
  await deleteSubvolume(root, { recursive: true })
  t.false(await exists(root))
  t.deepEqual(await oraclePaths(dir), [])
})

btrfsTest('recursive delete when every subvolume of the tree is read-only', async (t, dir) => {
  const root = path.join(dir, 'root')
  const nested = await buildTree(root)
  for (const n of [...nested].reverse()) await setRo(path.join(root, n))
  await setRo(root)
  for (const n of nested) t.true(await oracleReadOnly(path.join(root, n)), n)
  await deleteSubvolume(root, { recursive: true })
  t.false(await exists(root))
  t.deepEqual(await oraclePaths(dir), [])
})

btrfsTest('recursive delete of a read-only snapshot holding a nested subvolume made afterwards', async (t, dir) => {
  const src = path.join(dir, 'src')
  await mkSubvol(src)
  await fsp.mkdir(path.join(src, 'mnt-point'))
  const snap = path.join(dir, 'snap')
  await btrfsCli('subvolume', 'snapshot', src, snap)
  await mkSubvol(path.join(snap, 'mnt-point', 'kid'))
  await setRo(snap)
  t.is((await oracleShow(snap)).flags, 'readonly')
  await deleteSubvolume(snap, { recursive: true })
  t.deepEqual(await oraclePaths(dir), ['src'])
})

btrfsTest('non-recursive delete of a subvolume with nested ones is ENOTEMPTY and changes nothing', async (t, dir) => {
  const root = path.join(dir, 'root')
  await buildTree(root)
  await setRo(path.join(root, 'a', 'b'))
  for (const opts of [undefined, {}, { recursive: false }]) {
    await expectErrorNoChange(t, fs().mnt, [dir], () => deleteSubvolume(root, opts), {
      code: 'ENOTEMPTY',
      path: root,
    })
  }
  t.true(await oracleReadOnly(path.join(root, 'a', 'b')), 'read-only flag of a nested subvolume kept')
  t.false(await oracleReadOnly(root))
})

btrfsTest('recursive delete of many nested subvolumes (wide and deep)', async (t, dir) => {
  const root = path.join(dir, 'root')
  await mkSubvol(root)
  // 300 children (more than one GET_SUBVOL_ROOTREF batch) and a chain 12 deep.
  await fsp.mkdir(path.join(root, 'w'))
  const kids = Array.from({ length: 300 }, (_, i) => path.join(root, i % 3 ? 'w' : '', `k${i}`))
  await mkSubvols(kids)
  let chain = path.join(root, 'chain')
  for (let i = 0; i < 12; i++) {
    await mkSubvol(chain)
    chain = path.join(chain, `level${i}`)
  }
  t.is((await oraclePaths(dir)).length, 1 + 300 + 12)
  await deleteSubvolume(root, { recursive: true })
  t.deepEqual(await oraclePaths(dir), [])
  t.false(await exists(root))
})
