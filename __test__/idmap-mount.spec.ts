/**
 * Idmapped mounts of layers (mount_setattr MOUNT_ATTR_IDMAP, Linux 5.15+ on btrfs): status()
 * reports support; through the mount the owners show under the given maps while the inodes on
 * disk keep theirs; writes through the mount land on disk with unmapped ids; unmount removes
 * it. Where the kernel refuses (unsupported, EPERM, EINVAL) the tests say why and pass.
 * Every mount made here is unmounted in a finally.
 */
import test, { type ExecutionContext } from 'ava'
import { spawnSync } from 'node:child_process'
import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { BtrfsError, statusPairs, unmount, type BtrfsDriver } from '../ts/index'
import { isMountPoint, unmountIfMounted, useBtrfs } from './helpers/btrfs'
import { REMAP, collectDriversBeforeTeardown, rejectsCode, withDriver } from './helpers/driver-util'
import { S1, ownerOf, shifted, statOf } from './helpers/idmap-util'

collectDriversBeforeTeardown(test)
const { btrfsTest } = useBtrfs(test)

/** An empty directory every uid can reach (mount target), outside the filesystem under test. */
async function target(): Promise<{ dir: string; remove(): Promise<void> }> {
  const parent = await fsp.mkdtemp(path.join(os.tmpdir(), 'btrfs-layers-idmount-'))
  await fsp.chmod(parent, 0o755)
  const dir = path.join(parent, 'mnt')
  await fsp.mkdir(dir, { mode: 0o755 })
  return {
    dir,
    remove: async () => {
      await unmountIfMounted(dir)
      if (!isMountPoint(dir)) await fsp.rm(parent, { recursive: true, force: true })
    },
  }
}

/** Whether idmapped mounts can be tested here; logs the reason when not. */
async function supported(t: ExecutionContext, d: BtrfsDriver): Promise<boolean> {
  const status = new Map(statusPairs(await d.status()))
  const v = status.get('Idmapped Mounts')
  if (v !== 'supported') {
    t.log(`SKIPPED: status() says Idmapped Mounts = ${v} on kernel ${status.get('Kernel Version')}`)
    return false
  }
  return true
}

/** mountIdmapped, or false (with the reason logged) when the kernel refuses with EPERM/EINVAL. */
async function mountOrSkip(t: ExecutionContext, d: BtrfsDriver, id: string, dir: string, maps: Parameters<BtrfsDriver['mountIdmapped']>[2]): Promise<boolean> {
  try {
    await d.mountIdmapped(id, dir, maps)
    return true
  } catch (e) {
    if (e instanceof BtrfsError && (e.code === 'EPERM' || e.code === 'EINVAL')) {
      t.log(`SKIPPED: the kernel refused the idmapped mount: ${e.message}`)
      return false
    }
    throw e
  }
}

/** A layer 'base' with container-owned files: root 0, home/user 1000, a 1000:1001 file. */
async function makeBase(d: BtrfsDriver, stored: { uid: (c: number) => number }): Promise<string> {
  await d.create('base')
  const p = await d.get('base')
  await fsp.mkdir(path.join(p, 'home/user'), { recursive: true, mode: 0o755 })
  await fsp.writeFile(path.join(p, 'etc-passwd'), 'root\n')
  await fsp.writeFile(path.join(p, 'home/user/notes'), 'notes\n')
  await fsp.lchown(path.join(p, 'home'), stored.uid(0), stored.uid(0))
  await fsp.lchown(path.join(p, 'etc-passwd'), stored.uid(0), stored.uid(0))
  await fsp.lchown(path.join(p, 'home/user'), stored.uid(1000), stored.uid(1000))
  await fsp.lchown(path.join(p, 'home/user/notes'), stored.uid(1000), stored.uid(1001))
  await d.put('base')
  return p
}

btrfsTest('status() reports Idmapped Mounts', async (t, dir) => {
  await withDriver(path.join(dir, 'home'), undefined, async (d) => {
    const status = new Map(statusPairs(await d.status()))
    t.true(status.has('Idmapped Mounts'))
    t.true(['supported', 'unsupported'].includes(status.get('Idmapped Mounts') ?? ''), status.get('Idmapped Mounts'))
    t.log(`Idmapped Mounts: ${status.get('Idmapped Mounts')} (kernel ${status.get('Kernel Version')})`)
  })
})

btrfsTest('an idmapped mount shows mapped ids while the files on disk keep theirs; writes land unmapped', async (t, dir) => {
  const tgt = await target()
  try {
    await withDriver(path.join(dir, 'home'), undefined, async (d) => {
      if (!(await supported(t, d))) return t.pass('idmapped mounts unsupported here')
      const layer = await makeBase(d, { uid: (c) => c })
      const before = await statOf(['', 'etc-passwd', 'home/user', 'home/user/notes'].map((r) => path.join(layer, r)))
      if (!(await mountOrSkip(t, d, 'base', tgt.dir, shifted(S1)))) return t.pass('kernel refused the idmapped mount')
      try {
        t.true(isMountPoint(tgt.dir))
        // Through the mount: shifted by S1.
        t.deepEqual(await ownerOf(tgt.dir), [S1, S1], 'the layer root through the mount')
        t.deepEqual(await ownerOf(path.join(tgt.dir, 'etc-passwd')), [S1, S1])
        t.deepEqual(await ownerOf(path.join(tgt.dir, 'home/user')), [S1 + 1000, S1 + 1000])
        t.deepEqual(await ownerOf(path.join(tgt.dir, 'home/user/notes')), [S1 + 1000, S1 + 1001])
        t.is(await fsp.readFile(path.join(tgt.dir, 'home/user/notes'), 'utf8'), 'notes\n')
        // On disk (through the layer path): nothing changed.
        const now = await statOf(['', 'etc-passwd', 'home/user', 'home/user/notes'].map((r) => path.join(layer, r)))
        t.deepEqual([...now.entries()], [...before.entries()], 'stat through the layer path is as before')

        // A process running as mapped uid 101000 writes through the mount: on disk it is 1000.
        const w = spawnSync('sh', ['-c', 'echo hi > new-file && mkdir new-dir'], { cwd: path.join(tgt.dir, 'home/user'), uid: S1 + 1000, gid: S1 + 1000, encoding: 'utf8' })
        t.is(w.status, 0, `write as ${S1 + 1000} through the mount: ${w.stderr}`)
        t.deepEqual(await ownerOf(path.join(tgt.dir, 'home/user/new-file')), [S1 + 1000, S1 + 1000], 'shown mapped')
        t.deepEqual(await ownerOf(path.join(layer, 'home/user/new-file')), [1000, 1000], 'stored unmapped')
        t.deepEqual(await ownerOf(path.join(layer, 'home/user/new-dir')), [1000, 1000], 'stored unmapped')
        // chown through the mount to a shown id stores the unmapped id.
        await fsp.lchown(path.join(tgt.dir, 'etc-passwd'), S1 + 5, S1 + 6)
        t.deepEqual(await ownerOf(path.join(layer, 'etc-passwd')), [5, 6])
        // Host root is not in the mount's maps: the kernel cannot store its id.
        const asRoot = await fsp.writeFile(path.join(tgt.dir, 'by-host-root'), 'x').then(
          () => 'created',
          (e: NodeJS.ErrnoException) => e.code,
        )
        t.log(`creating a file through the mount as host root (uid 0, outside the maps): ${asRoot}`)
        if (asRoot === 'created') t.log(`  stored as ${JSON.stringify(await ownerOf(path.join(layer, 'by-host-root')))}`)
      } finally {
        await unmount(tgt.dir).catch(() => undefined)
        await unmountIfMounted(tgt.dir)
      }
      t.false(isMountPoint(tgt.dir), 'unmount(target) removed the mount')
      t.deepEqual(await fsp.readdir(tgt.dir), [], 'the target is an empty directory again')
      t.deepEqual(await ownerOf(path.join(layer, 'home/user/notes')), [1000, 1001], 'the layer keeps its owners')
    })
  } finally {
    await tgt.remove()
  }
})

btrfsTest('a layer stored under the driver maps, mounted with no maps, shows container ids', async (t, dir) => {
  const tgt = await target()
  try {
    await withDriver(path.join(dir, 'home'), REMAP, async (d) => {
      if (!(await supported(t, d))) return t.pass('idmapped mounts unsupported here')
      const layer = await makeBase(d, { uid: (c) => S1 + c })
      if (!(await mountOrSkip(t, d, 'base', tgt.dir, {}))) return t.pass('kernel refused the idmapped mount')
      try {
        t.deepEqual(await ownerOf(tgt.dir), [0, 0], 'container root shows as 0')
        t.deepEqual(await ownerOf(path.join(tgt.dir, 'home/user/notes')), [1000, 1001])
        t.deepEqual(await ownerOf(path.join(layer, 'home/user/notes')), [S1 + 1000, S1 + 1001], 'on disk: host ids')
      } finally {
        await unmount(tgt.dir).catch(() => undefined)
        await unmountIfMounted(tgt.dir)
      }
      t.false(isMountPoint(tgt.dir))
    })
  } finally {
    await tgt.remove()
  }
})

btrfsTest('mountIdmapped refuses bad maps, missing layers and targets; unmount of a non-mount is EINVAL', async (t, dir) => {
  const tgt = await target()
  try {
    await withDriver(path.join(dir, 'home'), undefined, async (d) => {
      await d.create('base')
      const bad = { uidMaps: [{ containerId: 0, hostId: 1, size: 10 }, { containerId: 9, hostId: 100, size: 1 }] }
      await rejectsCode(t, d.mountIdmapped('base', tgt.dir, bad), 'EINVAL', 'overlapping maps')
      await rejectsCode(t, d.mountIdmapped('base', tgt.dir, { gidMaps: [{ containerId: 0, hostId: 1, size: 0 }] }), 'EINVAL', 'empty range')
      await rejectsCode(t, d.mountIdmapped('base', tgt.dir, { uidMaps: [{ containerId: -1, hostId: 1, size: 1 }] }), 'EINVAL', 'negative id')
      await rejectsCode(t, d.mountIdmapped('missing', tgt.dir, shifted(S1)), 'ENOENT', 'missing layer')
      await rejectsCode(t, d.mountIdmapped('base', path.join(tgt.dir, 'nope'), shifted(S1)), 'ENOENT', 'missing target')
      t.false(isMountPoint(tgt.dir), 'nothing mounted')
      await rejectsCode(t, unmount(tgt.dir), 'EINVAL', 'unmount of a directory that is no mount point')
    })
  } finally {
    await tgt.remove()
  }
})
