import test from 'ava'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { filesystemInfo, sync } from '../ts/index'
import { btrfsCli, GIB, loopDevices, mkSubvol, sh, useBtrfs } from './helpers/btrfs'

const LABEL = 'btrfs-layers-test'
const { btrfsTest, fs, extra } = useBtrfs(test, { label: LABEL, mkfsArgs: ['--nodesize', '32768'] })

interface Super {
  fsid: string
  label: string
  generation: number
  nodesize: number
  sectorsize: number
  devUuid: string
}

/** `btrfs inspect-internal dump-super` of the device: what is on disk. */
async function dumpSuper(device: string): Promise<Super> {
  const out = await btrfsCli('inspect-internal', 'dump-super', device)
  const f = (name: string) => {
    const m = new RegExp(`^${name.replace('.', '\\.')}\\s+(.*)$`, 'm').exec(out)
    if (!m) throw new Error(`dump-super: no ${name}`)
    return m[1].trim()
  }
  return {
    fsid: f('fsid'),
    label: f('label'),
    generation: Number(f('generation')),
    nodesize: Number(f('nodesize')),
    sectorsize: Number(f('sectorsize')),
    devUuid: f('dev_item.uuid'),
  }
}

/** `btrfs filesystem df -b`: bytes per block group type (GlobalReserve left out). */
async function oracleDf(mnt: string): Promise<Record<string, { total: number; used: number }>> {
  const out = await btrfsCli('filesystem', 'df', '-b', mnt)
  const res: Record<string, { total: number; used: number }> = {}
  for (const m of out.matchAll(/^(\w+), [^:]+: total=(\d+), used=(\d+)$/gm)) {
    if (m[1] === 'GlobalReserve') continue
    const k = m[1].toLowerCase()
    res[k] ??= { total: 0, used: 0 }
    res[k].total += Number(m[2])
    res[k].used += Number(m[3])
  }
  return res
}

btrfsTest.serial('filesystemInfo matches btrfs filesystem show, filesystem df and the superblock', async (t, dir) => {
  const { mnt, image } = fs()
  await mkSubvol(path.join(dir, 'sv'))
  // fsync writes the data out (sync only commits the transaction: START_SYNC + WAIT_SYNC).
  const fh = await fsp.open(path.join(dir, 'sv', 'data'), 'w')
  await fh.writeFile(Buffer.alloc(3 * 1024 * 1024, 7))
  await fh.sync()
  await fh.close()
  await sync(mnt)
  const info = await filesystemInfo(mnt)
  const show = await btrfsCli('filesystem', 'show', '--raw', mnt)
  const df = await oracleDf(mnt)
  const [dev] = loopDevices(image)
  const sb = await dumpSuper(dev)

  t.regex(info.fsid, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
  t.true(show.includes(`uuid: ${info.fsid}`), show)
  t.is(info.fsid, sb.fsid)
  t.is(info.label, LABEL)
  t.true(show.includes(`Label: '${LABEL}'`), show)
  t.is(info.nodeSize, 32768)
  t.is(info.nodeSize, sb.nodesize)
  t.is(info.sectorSize, sb.sectorsize)
  t.is(info.generation, sb.generation, 'generation of the last committed transaction')

  t.is(info.devices.length, 1)
  const d = info.devices[0]
  t.is(d.id, 1)
  t.is(d.path, dev)
  t.is(d.uuid, sb.devUuid)
  t.is(d.totalBytes, GIB)
  const m = /devid\s+1 size (\d+) used (\d+) path (\S+)/.exec(show)
  t.truthy(m, show)
  t.is(d.totalBytes, Number(m![1]))
  t.is(d.bytesUsed, Number(m![2]))
  t.is(d.path, m![3])

  t.deepEqual(
    { data: info.space.data, metadata: info.space.metadata, system: info.space.system },
    { data: df.data, metadata: df.metadata, system: df.system },
  )
  t.true(info.space.data.used >= 3 * 1024 * 1024, `data used ${info.space.data.used}`)
  t.true(info.space.data.total >= info.space.data.used)
})

btrfsTest('filesystemInfo from any path inside the filesystem gives the same answer', async (t, dir) => {
  const sv = path.join(dir, 'sv')
  await mkSubvol(sv)
  await fsp.mkdir(path.join(sv, 'deep', 'er'), { recursive: true })
  const a = await filesystemInfo(fs().mnt)
  const b = await filesystemInfo(path.join(sv, 'deep', 'er'))
  t.is(b.fsid, a.fsid)
  t.is(b.label, a.label)
  t.deepEqual(b.devices.map((x) => [x.id, x.path, x.uuid]), a.devices.map((x) => [x.id, x.path, x.uuid]))
})

btrfsTest('filesystemInfo of an unlabelled filesystem with default node size', async (t) => {
  const other = await extra()
  const info = await filesystemInfo(other.mnt)
  t.is(info.label, '')
  t.is(info.nodeSize, 16384)
  const show = await btrfsCli('filesystem', 'show', other.mnt)
  t.true(show.includes('Label: none'), show)
  t.true(show.includes(`uuid: ${info.fsid}`), show)
  t.not(info.fsid, (await filesystemInfo(fs().mnt)).fsid)
  t.deepEqual(info.devices.map((d) => d.path), loopDevices(other.image))
})

btrfsTest('filesystemInfo with a label set after mkfs (btrfs filesystem label)', async (t) => {
  const other = await extra({ label: 'first' })
  t.is((await filesystemInfo(other.mnt)).label, 'first')
  await btrfsCli('filesystem', 'label', other.mnt, 'second ✓')
  t.is((await filesystemInfo(other.mnt)).label, 'second ✓')
  t.is((await btrfsCli('filesystem', 'label', other.mnt)).trim(), 'second ✓')
})

btrfsTest.serial('sync commits the running transaction to disk', async (t, dir) => {
  const { mnt, image } = fs()
  const [dev] = loopDevices(image)
  await sync(mnt)
  const before = await dumpSuper(dev)
  t.is((await filesystemInfo(mnt)).generation, before.generation)
  // A change opens a new transaction that is not on disk yet...
  await fsp.writeFile(path.join(dir, 'f'), 'change')
  await mkSubvol(path.join(dir, 'sv'))
  // ...until sync commits it (from any path on the filesystem).
  t.is(await sync(path.join(dir, 'sv')), undefined)
  const after = await dumpSuper(dev)
  t.true(after.generation > before.generation, `${after.generation} > ${before.generation}`)
  t.is((await filesystemInfo(mnt)).generation, after.generation)
  // The committed superblock on the image file itself says the same.
  const raw = await sh('btrfs', ['inspect-internal', 'dump-super', image])
  t.regex(raw, new RegExp(`^generation\\s+${after.generation}$`, 'm'))
})
