// ImageStore records and layer lifetime: references moving between images, remove dropping
// references, images and the layers nothing else uses (but not a layer a second image or a
// child layer uses), records on disk across re-opens and a crash's leftovers, commit of a layer
// chain (diffIDs against sha256 of the diff computed here), read-only stores, bad arguments.
import test, { type ExecutionContext } from 'ava'
import { createHash, randomBytes } from 'node:crypto'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { BtrfsDriver, BtrfsError, ImageStore } from '../ts/index'
import { chainIds, layerIdOf } from '../ts/image/chain'
import { useBtrfs } from './helpers/btrfs'
import { dir, file } from './helpers/diff-tar'
import { image, layer, sha256, writeLayout, type BuiltImage, type BuiltLayer } from './helpers/oci-layout'
import { startRegistry, useRegistryTools, type TestRegistry } from './helpers/registry'

const { btrfsTest } = useBtrfs(test, { size: 1024 * 1024 * 1024 })
const registry = useRegistryTools(test)
const imageTest = (title: string, impl: (t: ExecutionContext, dir: string) => Promise<void>) =>
  registry.available ? btrfsTest(title, impl) : registry.registryTest(title, async () => undefined)

interface Setup {
  reg: TestRegistry
  driver: BtrfsDriver
  images: ImageStore
  home: string
  dir: string
}

async function setup(t: ExecutionContext, d: string): Promise<Setup> {
  const reg = await startRegistry()
  t.teardown(() => reg.stop())
  const home = path.join(d, 'store')
  const driver = await BtrfsDriver.init(home)
  t.teardown(() => driver.cleanup())
  return { reg, driver, images: await ImageStore.open(driver), home, dir: d }
}

const randomLayer = (name: string): Promise<BuiltLayer> => layer([dir(`${name}/`), file(`${name}/data`, randomBytes(20_000))], 'gzip')

let layouts = 0
async function push(s: Setup, ref: string, img: BuiltImage): Promise<string> {
  const d = path.join(s.dir, `layout-${++layouts}`)
  await writeLayout(d, [img])
  await s.reg.crane(['push', d, `${s.reg.host}/${ref}`])
  return `${s.reg.host}/${ref}`
}

const idsOf = (img: BuiltImage) => chainIds(img.layers.map((l) => l.diffId)).map(layerIdOf)

async function expectCode(t: ExecutionContext, p: Promise<unknown>, code: string): Promise<void> {
  const e = await t.throwsAsync(p)
  t.is((e as BtrfsError).code, code, e?.message)
}

imageTest('remove drops references, then the image, then the layers no other image or child layer uses', async (t, d) => {
  const s = await setup(t, d)
  const [base, mid, topA, topB] = await Promise.all(['base', 'mid', 'a', 'b'].map(randomLayer))
  const a = image([base, mid, topA])
  const b = image([base, mid, topB])
  const a1 = await push(s, 'x/a:v1', a)
  const a2 = await push(s, 'x/a:v2', a)
  const b1 = await push(s, 'x/b:v1', b)
  await s.images.pull(a1)
  const ra = await s.images.pull(a2)
  t.deepEqual(ra.references, [a1, a2], 'one image, two references')
  await s.images.pull(b1)
  const [idBase, idMid, idA] = idsOf(a)
  const idB = idsOf(b)[2]

  t.deepEqual(await s.images.remove(a1), { untagged: [a1], deleted: null, layers: [] })
  t.deepEqual((await s.images.get(a.digest)).references, [a2])
  t.deepEqual(await s.images.remove(a2), { untagged: [a2], deleted: a.digest, layers: [idA] }, 'only its own layer: b uses the others')
  await expectCode(t, s.images.get(a2), 'ENOENT')
  t.deepEqual((await s.driver.layers()).sort(), [idBase, idMid, idB].sort())

  // A container layer on b's top keeps the whole chain.
  await s.driver.create('ct1', { parent: idB })
  t.deepEqual(await s.images.remove(b1), { untagged: [b1], deleted: b.digest, layers: [] })
  t.deepEqual((await s.driver.layers()).sort(), [idBase, idMid, idB, 'ct1'].sort())
  t.deepEqual(await s.images.list(), [])
  await expectCode(t, s.images.remove(b1), 'ENOENT')

  // Pull b again (its layers are there: no blob but the config), then drop the child and b.
  const g0 = await s.reg.blobGets()
  await s.images.pull(b1)
  t.is((await s.reg.blobGets()) - g0, 1)
  await s.driver.remove('ct1')
  t.deepEqual(await s.images.remove(b.digest), { untagged: [b1], deleted: b.digest, layers: [idB, idMid, idBase] }, 'by digest; top down')
  t.deepEqual(await s.driver.layers(), [])
  t.deepEqual(await fsp.readdir(path.join(s.home, 'images')), [])
})

imageTest('a tag pulled again with a new digest moves; a crash between the two record writes resolves to the newer', async (t, d) => {
  const s = await setup(t, d)
  const one = image([await randomLayer('one')])
  const two = image([await randomLayer('two')])
  const ref = await push(s, 'moving/tag:latest', one)
  await s.images.pull(ref)
  await push(s, 'moving/tag:latest', two)
  const r2 = await s.images.pull(`${s.reg.host}/moving/tag`)
  t.deepEqual(r2.references, [ref], 'normalized: :latest')
  t.deepEqual((await s.images.get(one.digest)).references, [], 'the old image is dangling, by digest still')
  t.is((await s.images.get(ref)).digest, two.digest)
  // On disk: the old record, as a crash before its rewrite would have left it (it still
  // claims the tag, with an older write time).
  const oldFile = path.join(s.home, 'images', `${one.digest.slice(7)}.json`)
  const rec = JSON.parse(await fsp.readFile(oldFile, 'utf8'))
  t.deepEqual(rec.references, [])
  await fsp.writeFile(oldFile, JSON.stringify({ ...rec, references: [ref], updated: rec.updated - 1000 }))
  const again = await ImageStore.open(s.driver)
  t.is((await again.get(ref)).digest, two.digest)
  t.deepEqual((await again.get(one.digest)).references, [])
  // Removing the dangling image by digest prefix takes its layer.
  t.deepEqual((await again.remove(one.digest.slice(7, 20))).layers, idsOf(one))
})

imageTest('two pulls at once that share a base fetch it once', async (t, d) => {
  const s = await setup(t, d)
  const base = await layer([dir('big/'), file('big/data', randomBytes(2_000_000))], 'gzip')
  const a = image([base, await randomLayer('a')])
  const b = image([base, await randomLayer('b')])
  const ra = await push(s, 'par/a:v1', a)
  const rb = await push(s, 'par/b:v1', b)
  const g0 = await s.reg.blobGets()
  const [x, y] = await Promise.all([s.images.pull(ra), s.images.pull(rb)])
  t.is(x.layers[0], y.layers[0])
  t.is((await s.reg.blobGets()) - g0, 5, 'two configs, two tops, one base')
})

btrfsTest('commit: an image of a layer chain, diffIDs the sha256 of each diff', async (t, d) => {
  const home = path.join(d, 'store')
  const driver = await BtrfsDriver.init(home)
  t.teardown(() => driver.cleanup())
  const images = await ImageStore.open(driver)
  await driver.create('c1')
  await fsp.writeFile(path.join(await driver.get('c1'), 'hello'), 'hello\n')
  await driver.put('c1')
  await driver.create('c2', { parent: 'c1' })
  const p2 = await driver.get('c2')
  await fsp.writeFile(path.join(p2, 'world'), 'world\n')
  await fsp.rm(path.join(p2, 'hello'))
  await driver.put('c2')
  const rec = await images.commit('c2', { reference: 'local/app:v1', config: { config: { Cmd: ['/bin/sh'] } } })
  t.deepEqual(rec.layers, ['c1', 'c2'])
  t.deepEqual(rec.references, ['docker.io/local/app:v1'])
  const hashDiff = async (id: string, parent: string | null) => {
    const h = createHash('sha256')
    for await (const c of await driver.diff(id, { parent, compression: 'none' })) h.update(c as Buffer)
    return `sha256:${h.digest('hex')}`
  }
  t.deepEqual(rec.diffIds, [await hashDiff('c1', null), await hashDiff('c2', 'c1')])
  t.deepEqual(rec.config.rootfs, { type: 'layers', diff_ids: rec.diffIds })
  t.is(rec.config.history?.length, 2)
  t.deepEqual(rec.config.config, { Cmd: ['/bin/sh'] })
  t.is((await images.get('local/app:v1')).digest, rec.digest)
  // The manifest on disk hashes to the digest and names the config and the uncompressed diffs.
  const stored = JSON.parse(await fsp.readFile(path.join(home, 'images', `${rec.digest.slice(7)}.json`), 'utf8'))
  t.is(sha256(Buffer.from(stored.manifest)), rec.digest)
  const manifest = JSON.parse(stored.manifest)
  t.is(manifest.config.digest, sha256(Buffer.from(stored.config)))
  t.deepEqual(manifest.layers.map((l: { digest: string }) => l.digest), rec.diffIds)
  await t.throwsAsync(images.commit('nope'), { code: 'ENOENT' })
})

btrfsTest('a read-only store reads beside the writer and refuses writes with EROFS; bad arguments', async (t, d) => {
  const home = path.join(d, 'store')
  const driver = await BtrfsDriver.init(home)
  t.teardown(() => driver.cleanup())
  const images = await ImageStore.open(driver)
  await driver.create('base')
  const rec = await images.commit('base', { reference: 'local/base' })
  const reader = await BtrfsDriver.init(home, { readOnly: true })
  t.teardown(() => reader.cleanup())
  const ro = await ImageStore.open(reader)
  t.true(ro.readOnly)
  t.deepEqual(await ro.list(), await images.list())
  await images.commit('base', { reference: 'local/base2' })
  t.deepEqual((await ro.get('local/base2')).references, ['docker.io/local/base2:latest'], 'sees the writer (a second commit: another created time, another image)')
  await expectCode(t, ro.remove('local/base'), 'EROFS')
  await expectCode(t, ro.pull('local/base'), 'EROFS')
  await expectCode(t, ro.commit('base'), 'EROFS')
  t.deepEqual((await images.get(rec.digest)).references, ['docker.io/local/base:latest'])

  // Wrong types and values, before anything happens.
  for (const [p, code] of [
    [() => images.pull(5 as unknown as string), 'ERR_INVALID_ARG_TYPE'],
    [() => images.pull('a', { bogus: 1 } as never), 'EINVAL'],
    [() => images.pull('a', { concurrency: 0 }), 'EINVAL'],
    [() => images.pull('a', { platform: 'linux' }), 'EINVAL'],
    [() => images.pull('library/UPPER'), 'EINVAL'],
    [() => images.get(null as unknown as string), 'ERR_INVALID_ARG_TYPE'],
    [() => images.get('sha256:0000000000000000000000000000000000000000000000000000000000000000'), 'ENOENT'],
    [() => images.remove('nothing:here'), 'ENOENT'],
    [() => images.commit('base', { reference: 'Bad Ref' }), 'EINVAL'],
    [() => ImageStore.open({} as BtrfsDriver), 'ERR_INVALID_ARG_TYPE'],
  ] as const) {
    await expectCode(t, p() as Promise<unknown>, code)
  }
  t.is((await images.list()).length, 2)
})
