/**
 * Failure paths give the space back at once: a temporary subvolume that a failed call deletes
 * is dropped by the kernel's cleaner before the call returns, instead of at the next periodic
 * commit (up to 30 s later), so the store is not left full.
 *
 * On a 300 MiB filesystem, a 400 MiB applyDiff fails with ENOSPC, and right after it a create
 * and a 10 MiB applyDiff succeed. A failed remap leaves no deleted subvolume for the cleaner
 * either. `btrfs subvolume list -d` (deleted, not yet cleaned) is the oracle.
 */
import test from 'ava'
import { randomBytes } from 'node:crypto'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import { btrfsCli, useBtrfs } from './helpers/btrfs'
import { header } from './helpers/diff-tar'
import { REMAP, collectDriversBeforeTeardown, isTemporary, rejectsCode, storeEntries, withDriver } from './helpers/driver-util'

collectDriversBeforeTeardown(test)
const MIB = 1024 * 1024
const { btrfsTest, fs } = useBtrfs(test, { size: 300 * MIB })

/** A layer tar holding one file `name` of `bytes` incompressible bytes, made as it is read. */
function bigTar(name: string, bytes: number): Readable {
  const chunk = randomBytes(MIB)
  let left = bytes
  let started = false
  return new Readable({
    read() {
      if (!started) {
        started = true
        this.push(header({ name, size: bytes }))
        return
      }
      if (left > 0) {
        const n = Math.min(left, chunk.length)
        // A fresh first byte per chunk: no two chunks alike, whatever the filesystem does.
        const piece = Buffer.from(chunk.subarray(0, n))
        piece.writeUInt32LE(left >>> 0, 0)
        left -= n
        this.push(piece)
        return
      }
      const pad = (512 - (bytes % 512)) % 512
      this.push(Buffer.alloc(pad + 1024))
      this.push(null)
    },
  })
}

/** Subvolumes deleted but not yet dropped by the cleaner (btrfs subvolume list -d). */
async function deletedNotCleaned(): Promise<string[]> {
  return (await btrfsCli('subvolume', 'list', '-d', fs().mnt)).split('\n').filter((l) => l.trim() !== '')
}

btrfsTest.serial('a 400 MiB applyDiff on a 300 MiB filesystem fails with ENOSPC; a create and a 10 MiB applyDiff succeed right after', async (t, dir) => {
  const home = path.join(dir, 'home')
  await withDriver(home, undefined, async (d) => {
    await d.create('base')
    await rejectsCode(t, d.applyDiff('base', null, bigTar('big', 400 * MIB)), 'ENOSPC', 'the 400 MiB layer does not fit')
    t.deepEqual(await deletedNotCleaned(), [], 'the failed temporary is already dropped by the cleaner')
    t.deepEqual((await storeEntries(home)).subvolumes.filter(isTemporary), [], 'no temporary left')
    t.deepEqual(await fsp.readdir(path.join(home, 'subvolumes', 'base')), [], 'the layer is as it was')
    // Right away, without waiting for a commit: the space is there again.
    await d.create('next', 'base')
    const applied = await d.applyDiff('next', null, bigTar('ten', 10 * MIB))
    t.is(applied, 10 * MIB)
    t.is((await fsp.stat(path.join(home, 'subvolumes', 'next', 'ten'))).size, 10 * MIB)
  })
})

btrfsTest.serial('a failed remap leaves no deleted subvolume for the cleaner', async (t, dir) => {
  const home = path.join(dir, 'home')
  await withDriver(home, REMAP, async (d) => {
    await d.create('src')
    const p = await d.get('src')
    // Owned by host uid 5, outside the driver's maps: the remap cannot shift it.
    await fsp.writeFile(path.join(p, 'stray'), 'x')
    await fsp.chown(path.join(p, 'stray'), 5, 5)
    await d.put('src')
    const to = { uidMaps: [{ containerId: 0, hostId: 200000, size: 65536 }], gidMaps: [{ containerId: 0, hostId: 200000, size: 65536 }] }
    await rejectsCode(t, d.remap('src', 'dst', to), 'ERR_ID_MAPPING', 'the remap reports the file it could not shift')
    t.false(await d.exists('dst'))
    t.deepEqual(await deletedNotCleaned(), [], 'its temporary is already dropped by the cleaner')
    t.deepEqual((await storeEntries(home)).subvolumes, ['src'])
  })
})
