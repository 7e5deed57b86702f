/**
 * BtrfsDriver size limits (btrfs qgroups) against a real loop-mounted btrfs, checked with
 * `btrfs qgroup show`: quotas enabled only on the first limit, EDQUOT inside a full layer while
 * others keep working, the qgroup released with the layer, minSpace, and the limit re-applied
 * by init.
 *
 * Quotas are a property of the whole filesystem, so this file has its own filesystem and its
 * tests run serially, in order.
 */
import test, { type ExecutionContext } from 'ava'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { BtrfsDriver, statusPairs } from '../ts/index'
import { btrfsCli, observe, oracleShow, useBtrfs } from './helpers/btrfs'
import { collectDriversBeforeTeardown, oracleQgroups, rejectsCode, withDriver } from './helpers/driver-util'

collectDriversBeforeTeardown(test)
const { btrfsTest, fs } = useBtrfs(test, { size: 2 * 1024 * 1024 * 1024 })

const MiB = 1024 * 1024

/** Write `mib` MiB to `file` in 1 MiB chunks, fsync, close. Resolves to the error, if any. */
async function writeMiB(file: string, mib: number): Promise<NodeJS.ErrnoException | undefined> {
  const chunk = Buffer.alloc(MiB, 0x5a)
  // Distinct content per chunk, so nothing could be deduplicated or compressed away.
  let fh: fsp.FileHandle | undefined
  try {
    fh = await fsp.open(file, 'w')
    for (let i = 0; i < mib; i++) {
      chunk.writeUInt32LE(i, 0)
      await fh.write(chunk)
    }
    await fh.sync()
    return undefined
  } catch (e) {
    return e as NodeJS.ErrnoException
  } finally {
    await fh?.close().catch(() => {})
  }
}

/** EDQUOT (122); this Node version may report code 'UNKNOWN' for it. */
function assertEDQUOT(t: ExecutionContext, e: NodeJS.ErrnoException | undefined, what: string) {
  t.truthy(e, `${what}: the write past the limit failed`)
  if (!e) return
  t.true(e.errno === -122 || /disk quota exceeded/i.test(e.message) || e.code === 'EDQUOT', `${what}: EDQUOT, got ${e.code} ${e.errno} ${e.message}`)
}

const qgroupOf = async (mnt: string, subvolumeId: string | number) =>
  (await oracleQgroups(mnt)).find((q) => q.id === `0/${subvolumeId}`)

btrfsTest.serial('quotas stay off until the first size limit, which sets max_rfer on the layer qgroup', async (t, dir) => {
  await withDriver(path.join(dir, 'home'), undefined, async (d) => {
    await d.create('plain')
    t.is(new Map(statusPairs(await d.status())).get('Quotas'), 'disabled')
    t.deepEqual(await oracleQgroups(fs().mnt), [], 'btrfs qgroup show: quotas are off')
    await d.create('limited', 'plain', { size: '64M' })
    t.is(new Map(statusPairs(await d.status())).get('Quotas'), 'enabled')
    const m = await d.getMetadata('limited')
    t.is(m.size, 64 * MiB)
    t.is(m.subvolumeId, (await oracleShow(await d.get('limited'))).id)
    await d.put('limited')
    const q = await qgroupOf(fs().mnt, m.subvolumeId)
    t.truthy(q, `qgroup 0/${m.subvolumeId} exists`)
    t.is(q?.maxRfer, 64 * MiB, 'max referenced = 64 MiB')
    const plain = await qgroupOf(fs().mnt, (await d.getMetadata('plain')).subvolumeId)
    t.is(plain?.maxRfer ?? null, null, 'the unlimited layer has no limit')
    t.is((await d.getMetadata('plain')).size, null)
    // Sizes in bytes and with other units.
    await d.create('bytes', undefined, { size: 100 * MiB })
    await d.create('gib', undefined, { size: '1G' })
    t.is((await qgroupOf(fs().mnt, (await d.getMetadata('bytes')).subvolumeId))?.maxRfer, 100 * MiB)
    t.is((await qgroupOf(fs().mnt, (await d.getMetadata('gib')).subvolumeId))?.maxRfer, 1024 * MiB)
  })
})

btrfsTest.serial('writing past the limit fails with EDQUOT inside the layer while other layers keep accepting writes', async (t, dir) => {
  await withDriver(path.join(dir, 'home'), undefined, async (d) => {
    await d.create('base')
    await d.create('small', 'base', { size: '64M' })
    await d.create('free', 'base')
    await d.create('roomy', 'base', { size: '512M' })
    const small = await d.get('small')
    t.is(await writeMiB(path.join(small, 'fits'), 8), undefined, 'a write within the limit works')
    const e = await writeMiB(path.join(small, 'big'), 100)
    assertEDQUOT(t, e, 'small')
    for (const id of ['free', 'roomy']) {
      const p = await d.get(id)
      t.is(await writeMiB(path.join(p, 'data'), 100), undefined, `${id} still accepts 100 MiB`)
      t.is((await fsp.stat(path.join(p, 'data'))).size, 100 * MiB)
      await d.put(id)
    }
    // Freeing space inside the full layer makes it writable again.
    await fsp.rm(path.join(small, 'big'))
    await btrfsCli('filesystem', 'sync', small)
    t.is(await writeMiB(path.join(small, 'again'), 4), undefined, 'writable again after freeing space')
    await d.put('small')
    await d.remove('small')
    t.false(await d.exists('small'))
  })
})

btrfsTest.serial('after remove and releaseQgroups() the layer qgroup is gone', async (t, dir) => {
  await withDriver(path.join(dir, 'home'), undefined, async (d) => {
    await d.create('a', undefined, { size: '64M' })
    await d.create('b', 'a')
    await d.create('c', 'a', { size: '128M', readOnly: true })
    const p = await d.get('a')
    t.is(await writeMiB(path.join(p, 'f'), 4), undefined)
    await d.put('a')
    const ids = Object.fromEntries(await Promise.all(['a', 'b', 'c'].map(async (id) => [id, (await d.getMetadata(id)).subvolumeId])))
    for (const id of ['a', 'b', 'c']) t.truthy(await qgroupOf(fs().mnt, ids[id]), `0/${ids[id]} (${id}) exists`)
    await d.remove('a')
    await d.remove('c')
    // Commit first, which wakes the kernel's cleaner: releaseQgroups() alone waits out the
    // commit interval (see 'releaseQgroups() returns promptly' below).
    await btrfsCli('filesystem', 'sync', fs().mnt)
    await d.releaseQgroups()
    t.is(await qgroupOf(fs().mnt, ids.a), undefined, `qgroup 0/${ids.a} of a removed limited layer is gone`)
    t.is(await qgroupOf(fs().mnt, ids.c), undefined, `qgroup 0/${ids.c} of a removed read-only limited layer is gone`)
    t.truthy(await qgroupOf(fs().mnt, ids.b), 'the remaining layer keeps its qgroup')
    // With quotas on, even a layer without a limit has a qgroup; it goes too.
    await d.remove('b')
    await btrfsCli('filesystem', 'sync', fs().mnt)
    await d.releaseQgroups()
    t.is(await qgroupOf(fs().mnt, ids.b), undefined, `qgroup 0/${ids.b} of a removed unlimited layer is gone`)
    t.deepEqual(await d.layers(), [])
  })
})

btrfsTest.serial('releaseQgroups() returns promptly after a remove (does not wait out the 30 s commit interval)', async (t, dir) => {
  await withDriver(path.join(dir, 'home'), undefined, async (d) => {
    await d.create('x', undefined, { size: '64M' })
    const id = (await d.getMetadata('x')).subvolumeId
    await d.remove('x')
    const t0 = Date.now()
    await d.releaseQgroups()
    const ms = Date.now() - t0
    t.log(`releaseQgroups() took ${ms} ms`)
    t.true(ms < 10_000, `releaseQgroups() took ${ms} ms: it should commit the transaction (waking the cleaner) before waiting for the dropped subvolume`)
    t.is(await qgroupOf(fs().mnt, id), undefined, `qgroup 0/${id} is gone`)
  })
})

btrfsTest.serial('a size below minSpace is EINVAL and creates nothing', async (t, dir) => {
  await withDriver(path.join(dir, 'home'), { minSpace: '100M' }, async (d) => {
    t.is(new Map(statusPairs(await d.status())).get('Min Space'), String(100 * MiB))
    await d.create('base')
    const before = await observe(fs().mnt, [dir])
    await rejectsCode(t, d.create('tiny', 'base', { size: '64M' }), 'EINVAL', '64M < 100M')
    await rejectsCode(t, d.create('tiny', undefined, { size: 100 * MiB - 1 }), 'EINVAL', 'one byte below')
    await rejectsCode(t, d.createReadWrite('tiny', 'base', { size: 1 }), 'EINVAL', 'createReadWrite')
    t.deepEqual(await observe(fs().mnt, [dir]), before)
    t.false(await d.exists('tiny'))
    await d.create('exact', 'base', { size: 100 * MiB })
    await d.create('more', 'base', { size: '200M' })
    // No size at all is not limited by minSpace.
    await d.create('unlimited', 'base')
    t.deepEqual(await d.layers(), ['base', 'exact', 'more', 'unlimited'])
    t.is((await qgroupOf(fs().mnt, (await d.getMetadata('exact')).subvolumeId))?.maxRfer, 100 * MiB)
  })
})

btrfsTest.serial('init re-applies persisted limits', async (t, dir) => {
  const home = path.join(dir, 'home')
  let id = 0
  await withDriver(home, undefined, async (d) => {
    await d.create('keep', undefined, { size: '64M' })
    await d.create('other', undefined, { size: '96M' })
    id = (await d.getMetadata('keep')).subvolumeId
  })
  const layer = path.join(home, 'subvolumes', 'keep')
  t.is((await qgroupOf(fs().mnt, id))?.maxRfer, 64 * MiB)
  // Someone lifts the limit behind the driver's back.
  await btrfsCli('qgroup', 'limit', 'none', layer)
  t.is((await qgroupOf(fs().mnt, id))?.maxRfer ?? null, null, 'the limit was lifted')
  await withDriver(home, undefined, async (d) => {
    t.is((await qgroupOf(fs().mnt, id))?.maxRfer, 64 * MiB, 'init put the limit back')
    t.is((await d.getMetadata('keep')).size, 64 * MiB)
    const p = await d.get('keep')
    assertEDQUOT(t, await writeMiB(path.join(p, 'big'), 100), 'after re-init')
    await d.put('keep')
  })
  // And once more with a different limit set by hand.
  await btrfsCli('qgroup', 'limit', String(1024 * MiB), layer)
  const d = await BtrfsDriver.init(home)
  try {
    t.is((await qgroupOf(fs().mnt, id))?.maxRfer, 64 * MiB)
    t.is((await qgroupOf(fs().mnt, (await d.getMetadata('other')).subvolumeId))?.maxRfer, 96 * MiB)
  } finally {
    await d.cleanup()
  }
})
