/**
 * `send` (issue 15) on a real btrfs, with btrfs-progs as the oracle: our streams (full and
 * incremental, protocol 1 and 2) are accepted by `btrfs receive` and give the same tree
 * (contents, modes, owners, xattrs, hardlinks, holes, mtimes); a read-write layer or parent is
 * sent through temporary read-only snapshots that never outlive the call, also when it is
 * aborted; bad input is refused with a typed error before anything is made.
 */
import test from 'ava'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { BtrfsDriver, BtrfsError } from '../ts/index'
import { btrfsCli, oracleReadOnly, useBtrfs } from './helpers/btrfs'
import { collectDriversBeforeTeardown, isTemporary, rejectsCode, storeEntries, withDriver } from './helpers/driver-util'
import { makeLayer, mutateSendable, oracleReceive, populateSendable, sendToFile, streamVersion, treeDiffs } from './helpers/replication'

collectDriversBeforeTeardown(test)

const { btrfsTest } = useBtrfs(test, { size: 4 * 1024 * 1024 * 1024, tools: ['getfattr', 'setfattr', 'setcap', 'setfacl'] })

const home = (dir: string) => path.join(dir, 'home')
const layerPath = (dir: string, id: string) => path.join(home(dir), 'subvolumes', id)
const temporaries = async (dir: string) => (await storeEntries(home(dir))).subvolumes.filter(isTemporary)

for (const protocol of [1, 2] as const) {
  btrfsTest(`protocol ${protocol}: a full and an incremental send are accepted by btrfs receive with the same trees`, async (t, dir) => {
    await withDriver(home(dir), undefined, async (d) => {
      await makeLayer(d, 'base', undefined, populateSendable)
      await makeLayer(d, 'child', 'base', mutateSendable)
      const full = await sendToFile(d, 'base', path.join(dir, 'base.stream'), { protocol })
      const inc = await sendToFile(d, 'child', path.join(dir, 'child.stream'), { parent: 'base', protocol })
      t.is(await streamVersion(full), protocol)
      t.is(await streamVersion(inc), protocol)
      // Only the change travels.
      t.true((await fsp.stat(inc)).size < (await fsp.stat(full)).size / 4, 'the incremental stream is small')
      const got = path.join(dir, 'received')
      const base = await oracleReceive(full, got)
      t.is(path.basename(base), 'base', 'a read-only layer is sent under its own name')
      t.deepEqual(await treeDiffs(layerPath(dir, 'base'), base), [])
      const child = await oracleReceive(inc, got)
      t.deepEqual(await treeDiffs(layerPath(dir, 'child'), child), [])
      t.true(await oracleReadOnly(child))
      t.deepEqual(await temporaries(dir), [])
    })
  })
}

btrfsTest('the default protocol is the best the kernel writes', async (t, dir) => {
  const offered = Number((await fsp.readFile('/sys/fs/btrfs/features/send_stream_version', 'utf8').catch(() => '1')).trim())
  await withDriver(home(dir), undefined, async (d) => {
    await makeLayer(d, 'base', undefined, async (p) => fsp.writeFile(path.join(p, 'f'), 'x'))
    t.is(await streamVersion(await sendToFile(d, 'base', path.join(dir, 's'))), offered)
    if (offered < 2) await rejectsCode(t, d.send('base', { protocol: 2 }), 'EINVAL', 'protocol 2 on a kernel without it')
  })
})

btrfsTest('a read-write layer and a read-write parent are sent through temporary snapshots that go afterwards', async (t, dir) => {
  await withDriver(home(dir), undefined, async (d) => {
    await d.create('rw')
    const p = await d.get('rw')
    await fsp.writeFile(path.join(p, 'file'), 'first')
    await d.put('rw')
    const full = await sendToFile(d, 'rw', path.join(dir, 'rw.stream'))
    t.deepEqual(await temporaries(dir), [], 'no temporary snapshot after the send')
    t.false(await oracleReadOnly(layerPath(dir, 'rw')), 'the layer stays writable')
    const got = await oracleReceive(full, path.join(dir, 'received'))
    t.regex(path.basename(got), /^\.tmp-rw-/, 'btrfs receive names it after the temporary snapshot')
    t.deepEqual(await treeDiffs(layerPath(dir, 'rw'), got), [])
    // Against a read-write parent: the stream names a snapshot no receiver has (the receiver
    // names the parent); it holds just the change.
    await d.create('rw2', { parent: 'rw' })
    const p2 = await d.get('rw2')
    await fsp.writeFile(path.join(p2, 'second'), 'added')
    await d.put('rw2')
    const inc = await sendToFile(d, 'rw2', path.join(dir, 'rw2.stream'), { parent: 'rw' })
    t.true((await fsp.readFile(inc)).includes(Buffer.from('second')))
    t.false((await fsp.readFile(inc)).includes(Buffer.from('first')), 'the parent\'s data is not sent again')
    t.deepEqual(await temporaries(dir), [])
  })
})

btrfsTest('an aborted send stops at once and leaves no temporary snapshot', async (t, dir) => {
  await withDriver(home(dir), undefined, async (d) => {
    await d.create('big')
    const p = await d.get('big')
    const fh = await fsp.open(path.join(p, 'data'), 'w')
    const block = Buffer.alloc(1 << 20)
    for (let i = 0; i < 96; i++) await fh.write(block.fill(i + 1))
    await fh.close()
    await d.put('big')
    const ac = new AbortController()
    const stream = await d.send('big', { signal: ac.signal })
    t.true((await temporaries(dir)).length === 1, 'the read-write layer is sent from a temporary snapshot')
    const failed = new Promise<Error>((resolve) => stream.once('error', resolve))
    let got = 0
    stream.on('data', (c: Buffer) => {
      got += c.length
      if (got > 0) stream.pause()
      ac.abort(new Error('enough'))
    })
    const err = await failed
    t.is(err.name, 'AbortError')
    t.is((err as BtrfsError).code, 'ABORT_ERR')
    t.is((err.cause as Error).message, 'enough')
    t.true(got < 96 << 20, 'stopped before the end')
    await new Promise((r) => setTimeout(r, 300))
    t.deepEqual(await temporaries(dir), [], 'the temporary snapshot went with the abort')
    // A consumer that destroys the stream has the same effect.
    const s2 = await d.send('big')
    s2.destroy()
    await new Promise((r) => s2.once('close', r))
    await new Promise((r) => setTimeout(r, 300))
    t.deepEqual(await temporaries(dir), [])
    // An aborted signal refuses before anything.
    await rejectsCode(t, d.send('big', { signal: AbortSignal.abort() }), 'ABORT_ERR')
  })
})

btrfsTest('bad input is refused with a typed error and makes nothing', async (t, dir) => {
  await withDriver(home(dir), undefined, async (d) => {
    await makeLayer(d, 'base', undefined, async (p) => fsp.writeFile(path.join(p, 'f'), 'x'))
    const before = await storeEntries(home(dir))
    await rejectsCode(t, d.send('missing'), 'ENOENT', 'missing layer')
    await rejectsCode(t, d.send('base', { parent: 'missing' }), 'ENOENT', 'missing parent')
    await rejectsCode(t, d.send('../base'), 'EINVAL', 'bad id')
    await rejectsCode(t, d.send('base', { parent: '.tmp-x' }), 'EINVAL', 'reserved parent id')
    await rejectsCode(t, d.send('base', { protocol: 3 as 2 }), 'EINVAL', 'protocol 3')
    await rejectsCode(t, d.send('base', { protocol: 1, compressed: true }), 'EINVAL', 'compression with protocol 1')
    await rejectsCode(t, d.send('base', { bogus: 1 } as object), 'EINVAL', 'unknown option')
    await rejectsCode(t, d.send('base', { protocol: '2' as unknown as 2 }), 'ERR_INVALID_ARG_TYPE', 'protocol as a string')
    await rejectsCode(t, d.send('base', { compressed: 1 as unknown as boolean }), 'ERR_INVALID_ARG_TYPE', 'compressed as a number')
    await rejectsCode(t, d.send(5 as unknown as string), 'ERR_INVALID_ARG_TYPE', 'id as a number')
    t.deepEqual(await storeEntries(home(dir)), before, 'nothing was made')
  })
})

btrfsTest('a reader (readOnly driver) sends a read-only layer, and refuses a read-write one with EROFS', async (t, dir) => {
  await withDriver(home(dir), undefined, async (d) => {
    await makeLayer(d, 'base', undefined, async (p) => fsp.writeFile(path.join(p, 'f'), 'x'))
    await d.create('rw')
  })
  const r = await BtrfsDriver.init(home(dir), { readOnly: true })
  try {
    const s = await sendToFile(r, 'base', path.join(dir, 'base.stream'))
    t.true((await fsp.stat(s)).size > 0)
    await rejectsCode(t, r.send('rw'), 'EROFS')
    await rejectsCode(t, r.send('base', { parent: 'rw' }), 'EROFS')
  } finally {
    await r.cleanup()
  }
  t.deepEqual(await temporaries(dir), [])
})

btrfsTest('protocol 2 sends compressed extents as they are (compressed: false decompresses them); btrfs receive takes both', async (t, dir) => {
  const offered = Number((await fsp.readFile('/sys/fs/btrfs/features/send_stream_version', 'utf8').catch(() => '1')).trim())
  if (offered < 2) {
    t.pass('this kernel writes protocol 1 only')
    return
  }
  await withDriver(home(dir), undefined, async (d) => {
    await makeLayer(d, 'zipped', undefined, async (p) => {
      await fsp.mkdir(path.join(p, 'z'))
      // New files below inherit the property: their extents are written zstd-compressed.
      await btrfsCli('property', 'set', path.join(p, 'z'), 'compression', 'zstd')
      await fsp.writeFile(path.join(p, 'z', 'text'), 'compressible line of text\n'.repeat(400_000))
    })
    const packed = await sendToFile(d, 'zipped', path.join(dir, 'packed.stream'))
    const plain = await sendToFile(d, 'zipped', path.join(dir, 'plain.stream'), { compressed: false })
    const size = (f: string) => fsp.stat(f).then((s) => s.size)
    t.true((await size(packed)) * 4 < (await size(plain)), `compressed ${await size(packed)} vs ${await size(plain)} bytes`)
    for (const [what, file] of [['compressed', packed], ['plain', plain]]) {
      const got = await oracleReceive(file, path.join(dir, `received-${what}`))
      t.deepEqual(await treeDiffs(layerPath(dir, 'zipped'), got, { holes: false }), [], what)
    }
  })
})
