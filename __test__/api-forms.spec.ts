/**
 * The 1.0 call forms: an optional parent goes in the options object (`create(id, { parent })`,
 * `changes(id, { parent })`, `diff(id, { compression })`, `applyDiff(id, input, { parent })`),
 * the graph driver's positional forms still work and mean the same, and the driver and held
 * layers are disposable (`close()`, `Symbol.asyncDispose`, `acquire`). Effects are checked with
 * btrfs-progs (snapshot parentage, subvolume list) and GNU tar (the diffs' contents), and the
 * private mount and lock through /proc/self/mountinfo and a second driver.
 */
import test from 'ava'
import { execFile } from 'node:child_process'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { promisify } from 'node:util'
import { Readable } from 'node:stream'
import { buffer } from 'node:stream/consumers'
import { BtrfsDriver, LayerHandle } from '../ts/index'
import { isMountPoint, oracleShow, useBtrfs } from './helpers/btrfs'
import { collectDriversBeforeTeardown, rejectsCode } from './helpers/driver-util'

collectDriversBeforeTeardown(test)
const { btrfsTest } = useBtrfs(test, { tools: ['tar'] })
const run = promisify(execFile)

/** Names in a tar stream, by GNU tar (`-t`), whatever its compression. */
async function tarNames(tar: Buffer, dir: string, name: string): Promise<string[]> {
  const file = path.join(dir, name)
  await fsp.writeFile(file, tar)
  const { stdout } = await run('tar', ['-taf', file])
  return stdout.split('\n').filter(Boolean).sort()
}

/** A store with `base` (file a) and `child` (snapshot of base, plus file b). */
async function chain(d: BtrfsDriver): Promise<void> {
  await d.create('base')
  await fsp.writeFile(path.join(await d.get('base'), 'a'), 'A')
  await d.put('base')
  await d.create('child', { parent: 'base' })
  await fsp.writeFile(path.join(await d.get('child'), 'b'), 'B')
  await d.put('child')
}

btrfsTest('create(id, { parent }) snapshots the parent, as the positional create(id, parent) does', async (t, dir) => {
  await using d = await BtrfsDriver.init(path.join(dir, 'store'))
  await chain(d)
  await d.create('positional', 'base', { readOnly: true })
  await d.createReadWrite('rw', { parent: 'base', size: '64M' })
  await d.createReadWrite('rw-positional', 'base')
  const sub = (id: string) => path.join(d.home, 'subvolumes', id)
  const base = await oracleShow(sub('base'))
  for (const id of ['child', 'positional', 'rw', 'rw-positional']) {
    t.is((await oracleShow(sub(id))).parentUuid, base.uuid, `${id} is a snapshot of base (btrfs subvolume show)`)
    t.is(await fsp.readFile(path.join(sub(id), 'a'), 'utf8'), 'A', `${id} has base's file`)
    t.is((await d.getMetadata(id)).parent, 'base')
  }
  t.deepEqual((await oracleShow(sub('positional'))).flags, 'readonly')
  t.is((await oracleShow(sub('rw'))).flags, '-')
  // No parent: an empty layer, whichever form says so.
  await d.create('empty', {})
  await d.create('empty-null', { parent: null })
  await d.create('empty-positional', null)
  for (const id of ['empty', 'empty-null', 'empty-positional']) {
    t.deepEqual(await fsp.readdir(sub(id)), [], `${id} is empty`)
    t.is((await oracleShow(sub(id))).parentUuid, null, `${id} is no snapshot`)
  }
  // The options form refuses a parent in both places and unknown keys, before anything changes.
  await rejectsCode(t, () => d.create('twice', 'base', { parent: 'base' } as never), 'EINVAL')
  await rejectsCode(t, () => d.create('typo', { parnet: 'base' } as never), 'EINVAL')
  await rejectsCode(t, () => d.create('missing', { parent: 'nope' }), 'ENOENT')
  t.false(await d.exists('twice'))
  t.false(await d.exists('typo'))
  t.false(await d.exists('missing'))
})

btrfsTest('changes and diffSize take the parent in the options; the positional form means the same', async (t, dir) => {
  await using d = await BtrfsDriver.init(path.join(dir, 'store'))
  await chain(d)
  const recorded = await d.changes('child')
  t.deepEqual(
    recorded.map((c) => `${c.kind} ${c.path}`),
    ['add /b'],
  )
  t.deepEqual(await d.changes('child', { parent: 'base' }), recorded)
  t.deepEqual(await d.changes('child', 'base'), recorded)
  t.deepEqual(await d.changes('child', undefined, {}), recorded)
  const whole = await d.changes('child', { parent: null })
  t.deepEqual(
    whole.map((c) => `${c.kind} ${c.path}`),
    ['add /a', 'add /b'],
  )
  t.deepEqual(await d.changes('child', { parent: '' }), whole)
  t.deepEqual(await d.changes('child', null), whole)
  t.is(await d.diffSize('child'), 1)
  t.is(await d.diffSize('child', { parent: null }), 2)
  t.is(await d.diffSize('child', null), 2)
  const signal = new AbortController().signal
  t.deepEqual(await d.changes('child', { parent: 'base', signal }), recorded)
  await rejectsCode(t, () => d.changes('child', { parent: 'nope' }), 'ENOENT')
  await rejectsCode(t, () => d.changes('child', { compression: 'gzip' } as never), 'EINVAL')
})

btrfsTest('diff(id, { compression, parent }) needs no placeholder; GNU tar reads what it gives', async (t, dir) => {
  await using d = await BtrfsDriver.init(path.join(dir, 'store'))
  await chain(d)
  const gz = await buffer(await d.diff('child', { compression: 'gzip' }))
  t.deepEqual([gz[0], gz[1]], [0x1f, 0x8b], 'gzip magic')
  t.deepEqual(await tarNames(gz, dir, 'child.tar.gz'), ['b'])
  const whole = await buffer(await d.diff('child', { parent: null, compression: 'zstd' }))
  t.deepEqual([...whole.subarray(0, 4)], [0x28, 0xb5, 0x2f, 0xfd], 'zstd magic')
  t.deepEqual(await tarNames(whole, dir, 'whole.tar.zst'), ['a', 'b'])
  const positional = await buffer(await d.diff('child', undefined, { compression: 'gzip' }))
  t.deepEqual(await tarNames(positional, dir, 'positional.tar.gz'), ['b'])
  t.deepEqual(await tarNames(await buffer(await d.diff('child', null)), dir, 'null.tar'), ['a', 'b'])
})

btrfsTest('applyDiff(id, input, { parent }) and the positional applyDiff(id, parent, input) apply the same', async (t, dir) => {
  await using d = await BtrfsDriver.init(path.join(dir, 'store'))
  await chain(d)
  const tar = await buffer(await d.diff('child'))
  const file = path.join(dir, 'child.tar')
  await fsp.writeFile(file, tar)
  const inputs: [string, () => Promise<number>][] = [
    ['buffer, options form', () => d.applyDiff('c1', tar, { parent: 'base' })],
    ['file, options form', () => d.applyDiff('c2', file, { parent: 'base' })],
    ['stream, options form', () => d.applyDiff('c3', Readable.from([tar]), { parent: 'base', onProgress: () => undefined })],
    ['file, no options', () => d.applyDiff('c4', file)],
    ['buffer, positional', () => d.applyDiff('c5', 'base', tar)],
    ['file, positional with options', () => d.applyDiff('c6', 'base', file, { onProgress: () => undefined })],
    ['stream, positional null parent', () => d.applyDiff('c7', null, Readable.from([tar]))],
  ]
  for (const [i, [what, apply]] of inputs.entries()) {
    await d.create(`c${i + 1}`, { parent: 'base' })
    t.is(await apply(), 1, `${what}: one byte of file content`)
    t.is(await fsp.readFile(path.join(d.home, 'subvolumes', `c${i + 1}`, 'b'), 'utf8'), 'B', what)
  }
  // The options form checks the parent exists, as the positional form does; the layer stays as it was.
  await rejectsCode(t, () => d.applyDiff('c1', tar, { parent: 'nope' }), 'ENOENT')
  await rejectsCode(t, () => d.applyDiff('c1', tar, { parnet: 'base' } as never), 'EINVAL')
})

btrfsTest('await using releases the store: its private mount goes and another driver can take it', async (t, dir) => {
  const home = path.join(dir, 'store')
  {
    await using d = await BtrfsDriver.init(home)
    await d.create('base')
    t.true(isMountPoint(home), 'the store is a private mount while open')
    await rejectsCode(t, () => BtrfsDriver.init(home), 'EBUSY', 'a second driver is refused while the first is open')
  }
  t.false(isMountPoint(home), 'the private mount went at the end of the block')
  const again = await BtrfsDriver.init(home)
  t.deepEqual(await again.layers(), ['base'])
  await again.close()
  t.false(isMountPoint(home), 'close() released it')
  await again.close() // a second close does nothing
  await again[Symbol.asyncDispose]()
  // Also when the block is left by an exception.
  const err = await t.throwsAsync(async () => {
    await using d = await BtrfsDriver.init(home)
    await d.create('base') // EEXIST
  })
  t.is((err as { code?: string }).code, 'EEXIST')
  t.false(isMountPoint(home), 'released after the exception')
  await (await BtrfsDriver.init(home)).close()
})

btrfsTest('acquire holds a layer until the handle is disposed or released, once', async (t, dir) => {
  await using d = await BtrfsDriver.init(path.join(dir, 'store'))
  await d.create('base')
  let seen: LayerHandle | undefined
  {
    await using layer = await d.acquire('base')
    seen = layer
    t.true(layer instanceof LayerHandle)
    t.is(layer.id, 'base')
    t.is(layer.path, path.join(d.home, 'subvolumes', 'base'))
    await fsp.writeFile(path.join(layer.path, 'hello'), 'hi')
    t.is(d.refCount('base'), 1)
    t.false(layer.released)
    await rejectsCode(t, () => d.remove('base'), 'EBUSY', 'a held layer is not removed')
  }
  t.true(seen.released)
  t.is(d.refCount('base'), 0, 'put at the end of the block')
  const a = await d.acquire('base')
  const b = await d.acquire('base')
  t.is(d.refCount('base'), 2)
  await a.release()
  await a.release() // the second release does nothing: b still holds the layer
  await a[Symbol.asyncDispose]()
  t.is(d.refCount('base'), 1)
  await b.release()
  t.is(d.refCount('base'), 0)
  await rejectsCode(t, () => d.acquire('nope'), 'ENOENT')
  t.is(d.refCount('nope'), 0)
  await d.remove('base')
})
