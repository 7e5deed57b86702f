/**
 * `BtrfsDriver.init(home, { readOnly: true })`: an existing store opened for reading while
 * another driver holds it (no lock, no private mount), whose write methods reject with EROFS
 * before touching anything (`btrfs subvolume list` and the trees as the oracle); a writer
 * refused with EBUSY is told the holder's process id. Against a real loop-mounted btrfs.
 */
import test from 'ava'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { BtrfsDriver } from '../ts/index'
import { expectBtrfsError, expectErrorNoChange, mountsAtOrBelow, useBtrfs } from './helpers/btrfs'

const { btrfsTest, fs } = useBtrfs(test)

btrfsTest('a reader works while a writer holds the store; its writes are EROFS and change nothing', async (t, dir) => {
  const home = path.join(dir, 'home')
  const writer = await BtrfsDriver.init(home)
  t.teardown(() => writer.cleanup())
  await writer.create('base')
  await fsp.writeFile(path.join(await writer.get('base'), 'file'), 'x\n')
  await writer.put('base')
  await writer.create('child', 'base')

  const reader = await BtrfsDriver.init(home, { readOnly: true })
  t.teardown(() => reader.cleanup())
  t.true(reader.readOnly)
  t.false(writer.readOnly)
  t.deepEqual(await reader.layers(), ['base', 'child'])
  t.is((await reader.getMetadata('child')).parent, 'base')
  t.deepEqual(await reader.changes('child'), [])
  t.true((await reader.changes('child', null)).some((c) => c.path === '/file'))
  const mounts = mountsAtOrBelow(home)
  const store = [home]
  const calls: [string, () => Promise<unknown>][] = [
    ['create', () => reader.create('x')],
    ['createReadWrite', () => reader.createReadWrite('x', 'base')],
    ['remove', () => reader.remove('base')],
    ['get', () => reader.get('base')],
    ['put', () => reader.put('base')],
    ['applyDiff', () => reader.applyDiff('base', null, Buffer.alloc(1024))],
    ['remap', () => reader.remap('base', 'y', { uidMaps: [{ containerId: 0, hostId: 1000, size: 1 }] })],
    ['mountIdmapped', () => reader.mountIdmapped('base', dir, { uidMaps: [{ containerId: 0, hostId: 1000, size: 1 }] })],
  ]
  for (const [label, call] of calls) await expectErrorNoChange(t, fs().mnt, store, call, { code: 'EROFS', path: null, label })
  t.deepEqual(mountsAtOrBelow(home), mounts, 'the reader mounted nothing')
  await reader.cleanup()

  const e = await expectBtrfsError(t, BtrfsDriver.init(home), { code: 'EBUSY', syscall: 'flock' })
  t.regex(e.message, new RegExp(`process ${process.pid}\\b`))
  t.is((await fsp.readFile(path.join(home, '.lock'), 'utf8')).trim(), String(process.pid))
})

btrfsTest('a reader needs an existing store and makes none', async (t, dir) => {
  const home = path.join(dir, 'never')
  await expectBtrfsError(t, BtrfsDriver.init(home, { readOnly: true }), { code: 'ENOENT' })
  await t.throwsAsync(fsp.stat(home))
  await t.throwsAsync(BtrfsDriver.init(home, { readOnly: 'yes' as unknown as boolean }), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' }, 'a wrong type is a TypeError, as everywhere in the facade')
})
