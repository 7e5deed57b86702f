/**
 * Invariant 1 of DESIGN.md for the low-level API: nothing outside the path given to a call is
 * created, changed or deleted, whatever a layer holds: symlinks out of the filesystem, bind
 * mounts of outside directories, bind mounts of other subvolumes of the same filesystem,
 * symlinks where a nested subvolume's directory used to be, read-only nesting.
 */
import test, { type ExecutionContext } from 'ava'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { BtrfsError, deleteSubvolume, listSubvolumes } from '../ts/index'
import {
  bindMount,
  btrfsCli,
  exists,
  fill,
  isMountPoint,
  makeSentinel,
  mkSubvol,
  oracleBelow,
  oracleReadOnly,
  type Sentinel,
  treeState,
  unmountIfMounted,
  useBtrfs,
} from './helpers/btrfs'

const { btrfsTest, fs } = useBtrfs(test)

const setRo = (p: string) => btrfsCli('property', 'set', '-t', 'subvol', p, 'ro', 'true')
const oraclePaths = async (dir: string) => (await oracleBelow(fs().mnt, dir)).map((s) => s.path)

async function sentinel(t: ExecutionContext, tag: string): Promise<Sentinel> {
  const s = await makeSentinel(tag)
  t.teardown(() => s.remove())
  return s
}

/** Bind-mount `src` on `dst` and make sure it is gone when the test ends, pass or fail. */
async function bind(t: ExecutionContext, src: string, dst: string): Promise<void> {
  await bindMount(src, dst)
  t.teardown(() => unmountIfMounted(dst))
  t.true(isMountPoint(dst), `bind mount on ${dst}`)
}

async function intact(t: ExecutionContext, ...sentinels: Sentinel[]) {
  for (const s of sentinels) t.deepEqual(await s.verify(), [], `sentinel ${s.dir} keeps every file`)
}

btrfsTest(
  'recursive delete with a symlink and a bind mount to outside directories inside: the outside keeps every file',
  async (t, dir) => {
    const viaLink = await sentinel(t, 'symlink')
    const viaBind = await sentinel(t, 'bind')
    const viaNestedBind = await sentinel(t, 'nested-bind')
    const layer = path.join(dir, 'layer')
    await mkSubvol(layer)
    await fill(layer)
    for (const n of ['a', 'a/b', 'dir/c', 'dir/c/d']) {
      await fsp.mkdir(path.dirname(path.join(layer, n)), { recursive: true })
      await mkSubvol(path.join(layer, n))
      await fill(path.join(layer, n))
    }
    // (a) symlinks to a directory outside the filesystem, at the top and in nested subvolumes,
    // including one named like a nested subvolume would be.
    await fsp.symlink(viaLink.dir, path.join(layer, 'escape'))
    await fsp.symlink(viaLink.dir, path.join(layer, 'a', 'b', 'escape'))
    await fsp.symlink(viaLink.dir, path.join(layer, 'dir', 'c', 'd', 'looks-like-a-subvolume'))
    await fsp.symlink('../../../../..', path.join(layer, 'a', 'up'))
    // (b) bind mounts of outside directories on directories inside the layer.
    await fsp.mkdir(path.join(layer, 'bound'))
    await bind(t, viaBind.dir, path.join(layer, 'bound'))
    await fsp.mkdir(path.join(layer, 'a', 'b', 'deep-bound'))
    await bind(t, viaNestedBind.dir, path.join(layer, 'a', 'b', 'deep-bound'))
    // A neighbour on the same filesystem.
    const neighbour = path.join(dir, 'neighbour')
    await mkSubvol(neighbour)
    await fill(neighbour)
    const neighbourState = await treeState(neighbour)

    t.is((await listSubvolumes(layer)).length, 4)
    await deleteSubvolume(layer, { recursive: true })

    await intact(t, viaLink, viaBind, viaNestedBind)
    t.false(await exists(layer))
    t.deepEqual(await oraclePaths(dir), ['neighbour'])
    t.deepEqual(await treeState(neighbour), neighbourState)
  },
)

btrfsTest('a nested leaf subvolume hidden under a bind mount is deleted; the bound directory is not touched', async (t, dir) => {
  const outside = await sentinel(t, 'cover')
  const layer = path.join(dir, 'layer')
  await mkSubvol(layer)
  await fsp.mkdir(path.join(layer, 'd'))
  await mkSubvol(path.join(layer, 'd', 'hidden'))
  await fill(path.join(layer, 'd', 'hidden'))
  await mkSubvol(path.join(layer, 'visible'))
  await bind(t, outside.dir, path.join(layer, 'd'))
  // Walking the files could not find it any more; the subvolume tree still does.
  t.false(await exists(path.join(layer, 'd', 'hidden')))
  t.deepEqual(await oraclePaths(dir), ['layer', 'layer/d/hidden', 'layer/visible'])
  // Listing cannot open the hidden one; it lists it or refuses, but never lists the cover.
  const listed = await listSubvolumes(layer).then(
    (l) => l.map((s) => s.path),
    (e: BtrfsError) => e.code,
  )
  t.true(
    JSON.stringify(listed) === JSON.stringify(['d/hidden', 'visible']) || listed === 'EXDEV',
    JSON.stringify(listed),
  )
  await deleteSubvolume(layer, { recursive: true })
  await intact(t, outside)
  t.deepEqual(await oraclePaths(dir), [], 'the hidden subvolume went with its parent')
})

btrfsTest('a nested subtree hidden under a bind mount: deleted or refused, never followed', async (t, dir) => {
  const outside = await sentinel(t, 'cover-tree')
  // The cover holds a directory named like the hidden subvolume, with files in it.
  await fsp.mkdir(path.join(outside.dir, 'hidden'))
  await fsp.writeFile(path.join(outside.dir, 'hidden', 'bait'), 'do not delete')
  outside.files.set('hidden/bait', (await import('node:crypto')).createHash('sha256').update('do not delete').digest('hex'))
  const layer = path.join(dir, 'layer')
  await mkSubvol(layer)
  await fsp.mkdir(path.join(layer, 'd'))
  await mkSubvol(path.join(layer, 'd', 'hidden'))
  await mkSubvol(path.join(layer, 'd', 'hidden', 'grandchild'))
  await bind(t, outside.dir, path.join(layer, 'd'))
  let error: unknown
  await deleteSubvolume(layer, { recursive: true }).catch((e) => (error = e))
  await intact(t, outside)
  if (error === undefined) {
    t.deepEqual(await oraclePaths(dir), [])
  } else {
    t.true(error instanceof BtrfsError, String(error))
    t.true(['EXDEV', 'EBUSY'].includes((error as BtrfsError).code), (error as BtrfsError).code)
    t.true(((error as BtrfsError).path ?? '').startsWith(layer), (error as BtrfsError).path)
    // Refused: the hidden subtree is still there, in the tree.
    t.true((await oraclePaths(dir)).includes('layer/d/hidden/grandchild'))
  }
})

btrfsTest('a symlink named like a nested subvolume\'s parent directory is not followed', async (t, dir) => {
  const outside = await sentinel(t, 'renamed-parent')
  // A victim on the same filesystem with the same layout as the layer's nested subvolume.
  const victim = path.join(dir, 'victim')
  await mkSubvol(victim)
  await fsp.mkdir(path.join(victim, 'parentdir'))
  await mkSubvol(path.join(victim, 'parentdir', 'kid'))
  await fill(path.join(victim, 'parentdir', 'kid'))
  const victimState = await treeState(victim)

  const layer = path.join(dir, 'layer')
  await mkSubvol(layer)
  await fsp.mkdir(path.join(layer, 'parentdir'))
  await mkSubvol(path.join(layer, 'parentdir', 'kid'))
  await fsp.mkdir(path.join(layer, 'other'))
  await mkSubvol(path.join(layer, 'other', 'kid2'))
  // Move the real directories away and put symlinks with their names in their place.
  await fsp.rename(path.join(layer, 'parentdir'), path.join(layer, 'moved'))
  await fsp.symlink(path.join(victim, 'parentdir'), path.join(layer, 'parentdir'))
  await fsp.rename(path.join(layer, 'other'), path.join(layer, 'moved2'))
  await fsp.symlink(outside.dir, path.join(layer, 'other'))
  // And a symlink that looks like a nested subvolume pointing at the victim itself.
  await fsp.symlink(victim, path.join(layer, 'kid'))

  await deleteSubvolume(layer, { recursive: true })

  await intact(t, outside)
  t.deepEqual(await oraclePaths(dir), ['victim', 'victim/parentdir/kid'])
  t.deepEqual(await treeState(victim), victimState)
})

btrfsTest('a bind mount of another subvolume of the same filesystem inside a layer is not deleted', async (t, dir) => {
  const victim = path.join(dir, 'victim')
  await mkSubvol(victim)
  await fill(victim)
  await mkSubvol(path.join(victim, 'victim-kid'))
  await fill(path.join(victim, 'victim-kid'))
  const victimState = await treeState(victim)
  const layer = path.join(dir, 'layer')
  await mkSubvol(layer)
  await fsp.mkdir(path.join(layer, 'd'))
  await bind(t, victim, path.join(layer, 'd'))
  // Also cover a nested leaf subvolume of the layer with the victim.
  await mkSubvol(path.join(layer, 'leaf'))
  await bind(t, victim, path.join(layer, 'leaf'))
  t.true(await exists(path.join(layer, 'leaf', 'victim-kid')))

  await deleteSubvolume(layer, { recursive: true })

  t.deepEqual(await oraclePaths(dir), ['victim', 'victim/victim-kid'])
  t.deepEqual(await treeState(victim), victimState)
})

btrfsTest('a read-only nested subvolume inside a read-only parent, with escapes inside', async (t, dir) => {
  const outside = await sentinel(t, 'ro')
  const layer = path.join(dir, 'layer')
  await mkSubvol(layer)
  await fsp.mkdir(path.join(layer, 'x'))
  await mkSubvol(path.join(layer, 'x', 'ro-kid'))
  await mkSubvol(path.join(layer, 'x', 'ro-kid', 'ro-grandkid'))
  await fsp.symlink(outside.dir, path.join(layer, 'x', 'ro-kid', 'escape'))
  await fsp.symlink(outside.dir, path.join(layer, 'x', 'ro-kid', 'ro-grandkid', 'escape'))
  await setRo(path.join(layer, 'x', 'ro-kid', 'ro-grandkid'))
  await setRo(path.join(layer, 'x', 'ro-kid'))
  await setRo(layer)
  t.true(await oracleReadOnly(layer))
  t.true(await oracleReadOnly(path.join(layer, 'x', 'ro-kid')))
  await deleteSubvolume(layer, { recursive: true })
  await intact(t, outside)
  t.deepEqual(await oraclePaths(dir), [])
})

btrfsTest('deleting a path covered by a bind mount is refused and deletes nothing', async (t, dir) => {
  const outside = await sentinel(t, 'over-target')
  const victim = path.join(dir, 'victim')
  await mkSubvol(victim)
  await fill(victim)
  const victimState = await treeState(victim)
  // A layer with the victim mounted over it: the name leads to the victim.
  const layer = path.join(dir, 'layer')
  await mkSubvol(layer)
  await mkSubvol(path.join(layer, 'kid'))
  await bind(t, victim, layer)
  const e1 = await t.throwsAsync(deleteSubvolume(layer, { recursive: true }))
  t.true(e1 instanceof BtrfsError)
  t.is((e1 as BtrfsError).code, 'EBUSY', e1?.message)
  // A layer with an outside directory mounted over it.
  const layer2 = path.join(dir, 'layer2')
  await mkSubvol(layer2)
  await bind(t, outside.dir, layer2)
  const e2 = await t.throwsAsync(deleteSubvolume(layer2, { recursive: true }))
  t.true(e2 instanceof BtrfsError)
  t.true(['EBUSY', 'ERR_NOT_BTRFS'].includes((e2 as BtrfsError).code), e2?.message)

  await intact(t, outside)
  await unmountIfMounted(layer)
  await unmountIfMounted(layer2)
  t.deepEqual(await treeState(victim), victimState)
  t.deepEqual(await oraclePaths(dir), ['layer', 'layer/kid', 'layer2', 'victim'])
})

btrfsTest('recursive delete through a caller-given symlinked parent deletes only the named subvolume', async (t, dir) => {
  const real = path.join(dir, 'real')
  await fsp.mkdir(real)
  await mkSubvol(path.join(real, 'layer'))
  await mkSubvol(path.join(real, 'layer', 'kid'))
  await mkSubvol(path.join(real, 'sibling'))
  await fsp.symlink(real, path.join(dir, 'alias'))
  await deleteSubvolume(path.join(dir, 'alias', 'layer'), { recursive: true })
  t.deepEqual(await oraclePaths(dir), ['real/sibling'])
})
