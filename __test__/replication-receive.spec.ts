/**
 * `receive` (issue 15) on real btrfs, between two stores on two separate loop-mounted
 * filesystems, with btrfs-progs as the oracle: round trips (protocol 1 and 2), a chain of
 * three incremental sends, reflinks still shared after the receive (`btrfs filesystem du`),
 * streams of `btrfs send` (full and incremental) received by us equal to what `btrfs receive`
 * makes, and an aborted or bad receive that leaves nothing. These need the receive core
 * (branch recvcore): until it lands, `receive` is ENOSYS and they fail.
 */
import test from 'ava'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import { BtrfsDriver, type BtrfsError } from '../ts/index'
import { btrfsCli, oracleReadOnly, oracleShow, useBtrfs, type Btrfs } from './helpers/btrfs'
import { collectDriversBeforeTeardown, isTemporary, rejectsCode, storeEntries } from './helpers/driver-util'
import { makeLayer, mutateSendable, oracleReceive, populateSendable, sendToFile, treeDiffs } from './helpers/replication'

collectDriversBeforeTeardown(test)

const { btrfsTest, extra } = useBtrfs(test, { size: 4 * 1024 * 1024 * 1024, tools: ['getfattr', 'setfattr', 'setcap', 'setfacl'] })

let other: Btrfs | undefined
/** A second filesystem, shared by the tests of this file (each uses its own directory in it). */
async function otherFs(): Promise<Btrfs> {
  other ??= await extra({ size: 4 * 1024 * 1024 * 1024 })
  return other
}

interface Pair {
  src: BtrfsDriver
  dst: BtrfsDriver
  srcHome: string
  dstHome: string
  dir: string
  close(): Promise<void>
}

/** A store on this file's filesystem and one on the other filesystem. */
async function pair(dir: string): Promise<Pair> {
  const o = await otherFs()
  const dstHome = path.join(o.mnt, path.basename(dir), 'home')
  await fsp.mkdir(path.dirname(dstHome), { recursive: true })
  const src = await BtrfsDriver.init(path.join(dir, 'home'))
  const dst = await BtrfsDriver.init(dstHome)
  return { src, dst, srcHome: path.join(dir, 'home'), dstHome, dir, close: async () => (await src.cleanup(), await dst.cleanup()) }
}

const layer = (home: string, id: string) => path.join(home, 'subvolumes', id)

async function withPair(dir: string, fn: (p: Pair) => Promise<void>): Promise<void> {
  const p = await pair(dir)
  try {
    await fn(p)
  } finally {
    await p.close()
  }
}

for (const protocol of [1, 2] as const) {
  btrfsTest(`protocol ${protocol}: a layer sent to a store on another filesystem arrives the same, read-only, with its received UUID`, async (t, dir) => {
    await withPair(dir, async ({ src, dst, srcHome, dstHome }) => {
      await makeLayer(src, 'base', undefined, populateSendable)
      const r = await dst.receive('base', await src.send('base', { protocol }))
      t.is(r.parent, null)
      t.true(r.bytes > 0 && r.commands > 0)
      t.is(r.receivedUuid, (await src.getMetadata('base')).uuid)
      t.deepEqual(await treeDiffs(layer(srcHome, 'base'), layer(dstHome, 'base')), [])
      t.true(await oracleReadOnly(layer(dstHome, 'base')))
      t.is((await oracleShow(layer(dstHome, 'base'))).receivedUuid, r.receivedUuid, 'btrfs subvolume show sees the received UUID')
      t.deepEqual(await dst.layers(), ['base'])
    })
  })
}

btrfsTest('a chain of three incremental sends, each parent found by its received UUID', async (t, dir) => {
  await withPair(dir, async ({ src, dst, srcHome, dstHome }) => {
    await makeLayer(src, 'l0', undefined, populateSendable)
    await makeLayer(src, 'l1', 'l0', mutateSendable)
    await makeLayer(src, 'l2', 'l1', async (p) => fsp.writeFile(path.join(p, 'two'), 'second change'))
    await makeLayer(src, 'l3', 'l2', async (p) => {
      await fsp.rm(path.join(p, 'two'))
      await fsp.rename(path.join(p, 'text.txt'), path.join(p, 'renamed.txt'))
    })
    await dst.receive('l0', await src.send('l0'))
    let prev = 'l0'
    for (const id of ['l1', 'l2', 'l3']) {
      const file = await sendToFile(src, id, path.join(dir, `${id}.stream`), { parent: prev })
      const r = await dst.receive(id, file)
      t.is(r.parent, prev, `${id} applied to ${prev}`)
      t.deepEqual(await treeDiffs(layer(srcHome, id), layer(dstHome, id)), [], id)
      prev = id
    }
    t.deepEqual(await dst.layers(), ['l0', 'l1', 'l2', 'l3'])
  })
})

/** The `Set shared` column of `btrfs filesystem du --raw -s`: bytes shared with other files or subvolumes. */
async function sharedBytes(p: string): Promise<number> {
  const out = await btrfsCli('filesystem', 'du', '--raw', '-s', p)
  const row = out.trim().split('\n').pop()!.trim().split(/\s+/)
  return Number(row[2])
}

btrfsTest('reflinked files are still shared after the receive', async (t, dir) => {
  await withPair(dir, async ({ src, dst, dstHome }) => {
    await makeLayer(src, 'refl', undefined, async (p) => {
      await fsp.writeFile(path.join(p, 'a'), Buffer.alloc(8 << 20, 3))
      await fsp.copyFile(path.join(p, 'a'), path.join(p, 'b'), fs.constants.COPYFILE_FICLONE_FORCE)
    })
    await dst.receive('refl', await src.send('refl'))
    await btrfsCli('filesystem', 'sync', dstHome)
    const a = path.join(layer(dstHome, 'refl'), 'a')
    const b = path.join(layer(dstHome, 'refl'), 'b')
    t.deepEqual(await fsp.readFile(a), await fsp.readFile(b))
    // Both files' 8 MiB are the same extents: shared, not written twice.
    t.true((await sharedBytes(layer(dstHome, 'refl'))) >= 8 << 20, 'the received copies share their extents')
  })
})

btrfsTest('streams of btrfs send (full and incremental) received by us equal what btrfs receive makes', async (t, dir) => {
  await withPair(dir, async ({ dst, dstHome, dir: d }) => {
    const v0 = path.join(d, 'v0')
    const v1 = path.join(d, 'v1')
    await btrfsCli('subvolume', 'create', path.join(d, 'work'))
    await populateSendable(path.join(d, 'work'))
    await btrfsCli('subvolume', 'snapshot', '-r', path.join(d, 'work'), v0)
    await mutateSendable(path.join(d, 'work'))
    await btrfsCli('subvolume', 'snapshot', '-r', path.join(d, 'work'), v1)
    const full = path.join(d, 'v0.stream')
    const inc = path.join(d, 'v1.stream')
    await btrfsCli('send', '-q', '-f', full, v0)
    await btrfsCli('send', '-q', '-p', v0, '-f', inc, v1)
    const oracle = path.join((await otherFs()).mnt, path.basename(d), 'oracle')
    const r0 = await dst.receive('v0', full)
    t.deepEqual(await treeDiffs(await oracleReceive(full, oracle), layer(dstHome, 'v0')), [], 'full')
    const r1 = await dst.receive('v1', fs.createReadStream(inc))
    t.is(r1.parent, 'v0')
    t.is(r0.receivedUuid, (await oracleShow(v0)).uuid)
    t.deepEqual(await treeDiffs(await oracleReceive(inc, oracle), layer(dstHome, 'v1')), [], 'incremental')
  })
})

const temporaries = async (home: string) => (await storeEntries(home)).subvolumes.filter(isTemporary)

btrfsTest('an aborted receive and a bad stream leave nothing', async (t, dir) => {
  await withPair(dir, async ({ src, dst, dstHome, dir: d }) => {
    await makeLayer(src, 'base', undefined, populateSendable)
    const stream = await fsp.readFile(await sendToFile(src, 'base', path.join(d, 'base.stream')))
    // Half the stream, then nothing: the receive waits until it is aborted.
    const ac = new AbortController()
    const stalled = new Readable({ read() {} })
    stalled.push(stream.subarray(0, stream.length >> 1))
    const p = dst.receive('cut', stalled, { signal: ac.signal })
    setTimeout(() => ac.abort(new Error('stop')), 300)
    const err = (await rejectsCode(t, p, 'ABORT_ERR')) as BtrfsError | undefined
    t.is((err?.cause as Error | undefined)?.message, 'stop')
    t.false(await dst.exists('cut'))
    t.deepEqual(await temporaries(dstHome), [])
    // A truncated stream, garbage, and a flipped byte (bad CRC).
    const flipped = Buffer.from(stream)
    flipped[flipped.length >> 1] ^= 0xff
    for (const [what, bad] of [
      ['truncated', stream.subarray(0, stream.length - 100)],
      ['garbage', Buffer.from('not a send stream at all, not even close')],
      ['bad crc', flipped],
    ] as const) {
      await rejectsCode(t, dst.receive('bad', bad), 'ERR_BAD_LAYER', what)
      t.false(await dst.exists('bad'), what)
      t.deepEqual(await temporaries(dstHome), [], what)
    }
    // EEXIST before anything.
    await dst.receive('base', stream)
    await rejectsCode(t, dst.receive('base', stream), 'EEXIST')
    t.deepEqual(await dst.layers(), ['base'])
  })
})
