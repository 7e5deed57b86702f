/**
 * The 1.0 shapes of results and errors, on a real btrfs: getMetadata and status fields have
 * their run-time types (numbers, booleans, Date, null); a wrong JS type is Node's TypeError
 * ERR_INVALID_ARG_TYPE before anything happens; an abort is an AbortError (name, code, cause
 * the signal's reason) for every call that takes a signal; errno is negative as in Node's fs
 * errors; syscall names a real system call; two-path calls name both paths; diff of a missing
 * layer rejects from the diff itself.
 */
import test from 'ava'
import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import { AbortError, BtrfsDriver, BtrfsError, remapLayer, statusPairs } from '../ts/index'
import { expectArgTypeNoChange, isSystemCall, observe, oracleShow, useBtrfs } from './helpers/btrfs'
import { collectDriversBeforeTeardown, rejectsCode } from './helpers/driver-util'
import { BLOCK, END, buildTar, file, header } from './helpers/diff-tar'

collectDriversBeforeTeardown(test)

const drivers: BtrfsDriver[] = []
test.after.always(async () => {
  for (const d of drivers) await d.cleanup().catch(() => undefined)
})

const { btrfsTest, fs } = useBtrfs(test, { tools: ['getfattr'] })

const SHIFT = { uidMaps: [{ containerId: 0, hostId: 300000, size: 65536 }], gidMaps: [{ containerId: 0, hostId: 300000, size: 65536 }] }

async function store(dir: string): Promise<BtrfsDriver> {
  const d = await BtrfsDriver.init(path.join(dir, 'home'))
  drivers.push(d)
  await d.create('base')
  const p = await d.get('base')
  await fsp.writeFile(path.join(p, 'f'), 'base file\n')
  await d.put('base')
  await d.create('child', { parent: 'base', size: '64M', mountLabel: 'system_u:object_r:container_file_t:s0' })
  return d
}

btrfsTest('getMetadata: every field has its run-time type', async (t, dir) => {
  const d = await store(dir)
  const m = await d.getMetadata('child')
  t.deepEqual(Object.keys(m).sort(), ['created', 'id', 'mountLabel', 'parent', 'readOnly', 'size', 'subvolumeId', 'uuid'])
  t.is(m.id, 'child')
  t.is(m.parent, 'base')
  t.true(m.created instanceof Date && !Number.isNaN(m.created.getTime()))
  t.is(m.readOnly, false)
  t.is(m.size, 64 * 1024 * 1024)
  const show = await oracleShow(path.join(d.home, 'subvolumes', 'child'))
  t.is(typeof m.subvolumeId, 'number')
  t.is(m.subvolumeId, show.id)
  t.is(typeof m.uuid, 'string')
  t.is<string | null, string | null>(m.uuid, show.uuid, 'the kernel subvolume uuid')
  t.is(m.mountLabel, 'system_u:object_r:container_file_t:s0')
  const base = await d.getMetadata('base')
  t.is(base.parent, null)
  t.is(base.size, null)
  t.false('mountLabel' in base)
  t.false('uidMaps' in base)
  // A remapped layer records its own id maps.
  await d.remap('base', 'shifted', SHIFT)
  const shifted = await d.getMetadata('shifted')
  t.deepEqual(shifted.uidMaps, SHIFT.uidMaps)
  t.deepEqual(shifted.gidMaps, SHIFT.gidMaps)
  t.is((await fsp.stat(path.join(d.home, 'subvolumes', 'shifted', 'f'))).uid, 300000, 'the owners were shifted')
})

btrfsTest('status: every field has its run-time type; statusPairs renders strings', async (t, dir) => {
  const d = await store(dir)
  const s = await d.status()
  t.is(typeof s.home, 'string')
  t.is(typeof s.filesystem.uuid, 'string')
  t.regex(s.filesystem.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
  t.is(typeof s.filesystem.label, 'string')
  t.true(Array.isArray(s.filesystem.devices) && s.filesystem.devices.every((x) => typeof x === 'string'))
  for (const n of [s.filesystem.nodeSize, s.filesystem.sectorSize, s.space.data.used, s.space.data.total, s.space.metadata.used, s.space.metadata.total, s.layers]) {
    t.true(Number.isSafeInteger(n) && n >= 0, String(n))
  }
  t.is(s.layers, 2)
  t.is(s.quotas, true, 'a size limit turned quotas on')
  t.is(typeof s.kernel, 'string')
  t.is(s.minSpace, null)
  t.is(typeof s.idmappedMounts, 'boolean')
  t.is(s.remappedRoot, null)
  for (const [k, v] of statusPairs(s)) t.true(typeof k === 'string' && typeof v === 'string', k)
  t.is(new Map(statusPairs(s)).get('Quotas'), 'enabled')
  // With id maps and minSpace, the two optional fields are set.
  const other = await BtrfsDriver.init(path.join(dir, 'home2'), { ...SHIFT, minSpace: '16M' })
  drivers.push(other)
  const s2 = await other.status()
  t.is(s2.minSpace, 16 * 1024 * 1024)
  t.deepEqual(s2.remappedRoot, { uid: 300000, gid: 300000 })
  t.is(new Map(statusPairs(s2)).get('Remapped Root'), '300000:300000')
})

btrfsTest('a wrong JS type is a TypeError ERR_INVALID_ARG_TYPE for every driver method, and nothing changes', async (t, dir) => {
  const d = await store(dir)
  const target = path.join(dir, 'target')
  await fsp.mkdir(target)
  /* eslint-disable @typescript-eslint/no-explicit-any */
  const bad = 5 as any
  const calls: [string, () => unknown][] = [
    ['init(5)', () => BtrfsDriver.init(bad)],
    ['init(home, { minSpace: {} })', () => BtrfsDriver.init(path.join(dir, 'home'), { minSpace: {} as any })],
    ['create(5)', () => d.create(bad)],
    ['create(id, { parent: 5 })', () => d.create('x', { parent: bad })],
    ['create(id, { size: true })', () => d.create('x', { size: true as any })],
    ['create(id, { readOnly: "yes" })', () => d.create('x', { readOnly: 'yes' as any })],
    ['createReadWrite(5)', () => d.createReadWrite(bad)],
    ['remove(5)', () => d.remove(bad)],
    ['get(5)', () => d.get(bad)],
    ['get(id, { mountLabel: 5 })', () => d.get('base', { mountLabel: bad })],
    ['put(5)', () => d.put(bad)],
    ['refCount(5)', () => d.refCount(bad)],
    ['exists(5)', () => d.exists(bad)],
    ['getMetadata(5)', () => d.getMetadata(bad)],
    ['changes(5)', () => d.changes(bad)],
    ['changes(id, { signal: {} })', () => d.changes('child', { signal: {} as any })],
    ['diffSize(5)', () => d.diffSize(bad)],
    ['diff(5)', () => d.diff(bad)],
    ['diff(id, { compression: 1 })', () => d.diff('child', { compression: 1 as any })],
    ['applyDiff(5, input)', () => d.applyDiff(bad, buildTar([file('a', 'b')]))],
    ['applyDiff(id, 5)', () => d.applyDiff('child', bad)],
    ['applyDiff(id, input, { onProgress: 1 })', () => d.applyDiff('child', buildTar([file('a', 'b')]), { onProgress: bad })],
    ['remap(id, 5)', () => d.remap('base', bad, SHIFT)],
    ['remap(id, target, { uidMaps: {} })', () => d.remap('base', 'r', { uidMaps: {} as any })],
    ['remap(id, target, { uidMaps: [{ containerId: "0" }] })', () => d.remap('base', 'r', { uidMaps: [{ containerId: '0', hostId: 1, size: 1 } as any] })],
    ['mountIdmapped(id, 5, maps)', () => d.mountIdmapped('base', bad, SHIFT)],
    ['remapLayer(5, ...)', () => remapLayer(bad, { from: {}, to: SHIFT })],
    ['remapLayer(path, { from: null })', () => remapLayer(path.join(d.home, 'subvolumes', 'base'), { from: null as any, to: SHIFT })],
  ]
  /* eslint-enable @typescript-eslint/no-explicit-any */
  for (const [label, call] of calls) await expectArgTypeNoChange(t, fs().mnt, [dir], call, label)
  t.deepEqual(await d.layers(), ['base', 'child'])
  // A synchronous method throws rather than rejects.
  t.throws(() => d.refCount(bad), { instanceOf: TypeError, message: 'The "id" argument must be of type string. Received type number (5)' })
  // Bad values of the right type stay BtrfsError EINVAL.
  await rejectsCode(t, d.create('../x'), 'EINVAL', 'a bad id')
  await rejectsCode(t, d.create('x', { sizee: 1 } as never), 'EINVAL', 'an unknown option key')
  await rejectsCode(t, d.create('x', { size: -1 }), 'EINVAL', 'a negative size')
  await rejectsCode(t, d.diff('child', { compression: 'lz4' as never }), 'EINVAL', 'an unknown compression')
})

btrfsTest('an abort is an AbortError (name, code, cause) for every call that takes a signal', async (t, dir) => {
  const d = await store(dir)
  const reason = new Error('stop, from the test')
  const pre = AbortSignal.abort(reason)
  const before = await observe(fs().mnt, [dir])
  const calls: [string, () => Promise<unknown>][] = [
    ['changes', () => d.changes('child', { signal: pre })],
    ['diffSize', () => d.diffSize('child', { signal: pre })],
    ['diff', () => d.diff('child', { signal: pre })],
    ['applyDiff', () => d.applyDiff('child', buildTar([file('x', 'y')]), { signal: pre })],
    ['remap', () => d.remap('base', 'r', { ...SHIFT, signal: pre })],
    ['remapLayer', () => remapLayer(path.join(d.home, 'subvolumes', 'child'), { from: {}, to: SHIFT, signal: pre })],
  ]
  for (const [label, call] of calls) {
    const e = await t.throwsAsync(call(), undefined, label)
    t.true(e instanceof AbortError, `${label}: an AbortError`)
    t.true(e instanceof BtrfsError, `${label}: still a BtrfsError`)
    t.is(e?.name, 'AbortError', label)
    t.is((e as AbortError).code, 'ABORT_ERR', label)
    t.is(e?.cause, reason, `${label}: cause is the signal's reason`)
  }
  t.deepEqual(await observe(fs().mnt, [dir]), before, 'nothing changed')

  // Aborted while running: applyDiff of a slow stream, and a diff being read.
  const ac = new AbortController()
  const why = new Error('mid-way')
  async function* slow() {
    yield header({ name: 'big', type: '0', size: 64 << 20 })
    for (let i = 0; i < 64; i++) {
      if (i === 4) ac.abort(why)
      yield Buffer.alloc(1 << 20, i)
      await new Promise((r) => setTimeout(r, 5))
    }
    yield Buffer.alloc(BLOCK - ((64 << 20) % BLOCK || BLOCK))
    yield END
  }
  const applying = await t.throwsAsync(d.applyDiff('child', Readable.from(slow()), { signal: ac.signal }))
  t.is(applying?.name, 'AbortError')
  t.is(applying?.cause, why)
  t.false((await fsp.readdir(path.join(d.home, 'subvolumes', 'child'))).includes('big'), 'the layer is as it was')
  const ac2 = new AbortController()
  const why2 = new Error('reader went away')
  const stream = await d.diff('child', { parent: null, signal: ac2.signal })
  const got = new Promise<unknown>((resolve) => stream.on('error', resolve))
  ac2.abort(why2)
  const e = (await got) as AbortError
  t.is(e.name, 'AbortError')
  t.is(e.code, 'ABORT_ERR')
  t.is(e.cause, why2)
})

btrfsTest('errno is negative, syscall a real call, and the message names the API call and its paths', async (t, dir) => {
  const d = await store(dir)
  const missing = await rejectsCode(t, d.getMetadata('nope'), 'ENOENT')
  t.is(missing?.errno, -os.constants.errno.ENOENT)
  t.is(missing?.syscall, undefined, 'a check of the store, before any call on the layer')
  t.is(missing?.message, `ENOENT: layer does not exist, getMetadata '${path.join(d.home, 'subvolumes', 'nope')}'`)
  // Creating over an existing layer: the kernel refuses it, and its ioctl is named.
  const exists = await rejectsCode(t, d.create('base'), 'EEXIST')
  t.is(exists?.errno, -os.constants.errno.EEXIST)
  t.is(exists?.syscall, 'BTRFS_IOC_SUBVOL_CREATE_V2')
  t.true(isSystemCall(exists?.syscall))
  t.regex(exists?.message ?? '', /^EEXIST: layer already exists, create '.*\/subvolumes\/base'$/)
  // Two-path calls: path and dest, as Node's rename.
  const remap = await rejectsCode(t, d.remap('nope', 'target', SHIFT), 'ENOENT')
  t.is(remap?.path, 'nope')
  t.is(remap?.dest, 'target')
  t.is(remap?.message, `ENOENT: layer does not exist, remap 'nope' -> 'target'`)
  const mount = await rejectsCode(t, d.mountIdmapped('nope', path.join(dir, 'nowhere'), SHIFT), 'ENOENT')
  t.is(mount?.dest, path.join(dir, 'nowhere'))
  t.true(mount?.message.endsWith(`mountIdmapped 'nope' -> '${path.join(dir, 'nowhere')}'`), mount?.message)
  // A bad id: EINVAL, no syscall.
  const badId = await rejectsCode(t, d.remove('a/b'), 'EINVAL')
  t.is(badId?.syscall, undefined)
  t.is(badId?.errno, -os.constants.errno.EINVAL)
})

btrfsTest('diff of a missing layer rejects from the diff itself, with no exists() round trip', async (t, dir) => {
  const d = await store(dir)
  let existsCalls = 0
  const realExists = d.exists.bind(d)
  d.exists = async (id: string) => {
    existsCalls++
    return realExists(id)
  }
  const e = await rejectsCode(t, d.diff('nope'), 'ENOENT', 'missing layer')
  t.is(e?.errno, -os.constants.errno.ENOENT)
  t.true(e?.message.startsWith('ENOENT: layer does not exist, diff '), e?.message)
  await rejectsCode(t, d.diff('child', { parent: 'nope' }), 'ENOENT', 'missing parent')
  t.is(existsCalls, 0, 'diff never asked exists()')
  // And a present layer still streams.
  const chunks: Buffer[] = []
  for await (const c of await d.diff('child', { parent: null })) chunks.push(c as Buffer)
  t.true(Buffer.concat(chunks).includes(Buffer.from('base file')))
})
