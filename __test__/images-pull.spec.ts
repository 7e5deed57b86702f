// ImageStore.pull against a real registry (distribution), with crane as the oracle: images
// crane pushed from layouts built here (gzip, zstd and plain layers, whiteouts, xattrs, owners,
// hardlinks, a multi-platform index) are pulled, and the top layer's tree equals what
// `crane export` flattens, extracted by GNU tar. Reuse counted in the registry's log; faults
// (a tampered blob, a connection cut with no resume, wrong credentials, an abort) leave no half
// layer and no record.
import test, { type ExecutionContext } from 'ava'
import { randomBytes } from 'node:crypto'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { BtrfsDriver, BtrfsError, ImageStore, type PullProgress } from '../ts/index'
import { chainIds, layerIdOf } from '../ts/image/chain'
import { useBtrfs, sh } from './helpers/btrfs'
import { dir, file, symlink, hardlink } from './helpers/diff-tar'
import { compareTrees, snapshotTree } from './helpers/diff-tree'
import { isTemporary, storeEntries } from './helpers/driver-util'
import { image, layer, sha256, writeLayout, type BuiltImage } from './helpers/oci-layout'
import { startFaultProxy, startRegistry, useRegistryTools, type AuthMode, type TestRegistry } from './helpers/registry'

const { btrfsTest } = useBtrfs(test, { size: 2 * 1024 * 1024 * 1024, tools: ['getfattr', 'tar', 'zstd'] })
const registry = useRegistryTools(test)
const imageTest = (title: string, impl: (t: ExecutionContext, dir: string) => Promise<void>) =>
  registry.available ? btrfsTest(title, impl) : registry.registryTest(title, async () => undefined)

const T = 1700000000

/** The three layers of the main fixture: gzip base, zstd with a whiteout, plain tar. */
async function fixtureLayers(seed = randomBytes(4).toString('hex')) {
  const l0 = await layer(
    [
      dir('etc/', { mtime: T }),
      file('etc/a', `alpha ${seed}`, { mtime: T }),
      file('etc/b', 'beta: deleted by the layer above', { mtime: T }),
      file('etc/m', 'before', { mtime: T }),
      file('etc/x', 'has an xattr', { mtime: T, pax: { 'SCHILY.xattr.user.test': 'hello' } }),
      symlink('etc/link', 'a', { mtime: T }),
      hardlink('etc/hard', 'etc/a', { mtime: T }),
      dir('bin/', { mtime: T }),
      file('bin/tool', randomBytes(100_000), { mode: 0o755, uid: 1000, gid: 1001, mtime: T }),
    ],
    'gzip',
  )
  const l1 = await layer(
    [
      dir('etc/', { mtime: T + 100 }),
      file('etc/.wh.b', '', { mtime: T + 100 }),
      file('etc/c', 'new in layer 1', { mtime: T + 100, mode: 0o600 }),
      file('etc/m', 'after', { mtime: T + 100 }),
    ],
    'zstd',
  )
  const l2 = await layer([dir('usr/', { mtime: T }), dir('usr/share/', { mtime: T }), file('usr/share/big', randomBytes(300_000), { mtime: T + 5 })], 'none')
  return [l0, l1, l2]
}

interface Setup {
  reg: TestRegistry
  driver: BtrfsDriver
  images: ImageStore
  home: string
  dir: string
}

async function setup(t: ExecutionContext, d: string, auth: AuthMode = 'none'): Promise<Setup> {
  const reg = await startRegistry({ auth })
  t.teardown(() => reg.stop())
  const home = path.join(d, 'store')
  const driver = await BtrfsDriver.init(home)
  t.teardown(() => driver.cleanup())
  return { reg, driver, images: await ImageStore.open(driver), home, dir: d }
}

let layouts = 0
/** crane pushes `imgs` (an index of them with `index`) as `ref` of the registry. */
async function push(s: Setup, ref: string, imgs: BuiltImage[], o: { index?: boolean } = {}): Promise<string> {
  const dir = path.join(s.dir, `layout-${++layouts}`)
  const { digest } = await writeLayout(dir, imgs, o)
  await s.reg.crane(['push', dir, `${s.reg.host}/${ref}`])
  return digest
}

/** The layer ids of an image built here. */
const idsOf = (img: BuiltImage) => chainIds(img.layers.map((l) => l.diffId)).map(layerIdOf)

async function expectCode(t: ExecutionContext, p: Promise<unknown>, code: string): Promise<BtrfsError> {
  const e = await t.throwsAsync(p)
  t.true(e instanceof BtrfsError, String(e))
  t.is((e as BtrfsError).code, code, e?.message)
  return e as BtrfsError
}

/** Nothing half-made in the store: no temporary subvolume, no temporary record. */
async function noLeftovers(t: ExecutionContext, s: Setup): Promise<void> {
  const { subvolumes } = await storeEntries(s.home)
  t.deepEqual(subvolumes.filter(isTemporary), [], 'no temporary subvolumes')
  t.deepEqual((await fsp.readdir(path.join(s.home, 'images'))).filter((n) => n.startsWith('.')), [], 'no temporary records')
}

imageTest('pull of gzip, zstd and plain layers with a whiteout: each layer as crane export flattens it', async (t, d) => {
  const s = await setup(t, d)
  const layers = await fixtureLayers()
  const img = image(layers)
  const digest = await push(s, 'app/one:v1', [img])
  t.is(digest, img.digest)
  const events: PullProgress[] = []
  const rec = await s.images.pull(`${s.reg.host}/app/one:v1`, { onProgress: (e) => events.push(e) })
  const ids = idsOf(img)
  t.is(rec.digest, img.digest)
  t.deepEqual(rec.references, [`${s.reg.host}/app/one:v1`])
  t.deepEqual(rec.layers, ids)
  t.deepEqual(rec.diffIds, layers.map((l) => l.diffId))
  t.is(rec.config.rootfs.diff_ids.length, 3)
  t.deepEqual(rec.platform, { os: 'linux', architecture: 'amd64' })
  t.is(rec.size, layers.reduce((n, l) => n + l.blob.length, 0))
  // Chain: each layer's parent is the one below.
  for (const [i, id] of ids.entries()) t.is((await s.driver.getMetadata(id)).parent, i === 0 ? null : ids[i - 1])
  // Progress: a done per layer, in order.
  t.deepEqual(events.filter((e) => e.state === 'done').map((e) => e.layer), [0, 1, 2])
  t.true(events.every((e) => e.layers === 3 && e.id === ids[e.layer] && e.digest === layers[e.layer].digest))

  // The oracle: crane export of the image (and of each prefix of it) = our layer trees.
  for (let n = 1; n <= 3; n++) {
    const ref = `${s.reg.host}/app/prefix:${n}`
    if (n < 3) await push(s, `app/prefix:${n}`, [image(layers.slice(0, n))])
    else await s.reg.crane(['tag', `${s.reg.host}/app/one:v1`, `${n}`])
    const tarFile = path.join(d, `export-${n}.tar`)
    await s.reg.crane(['export', n < 3 ? ref : `${s.reg.host}/app/one:v1`, tarFile])
    const out = path.join(d, `export-${n}`)
    await fsp.mkdir(out)
    await sh('tar', ['-x', '--xattrs', '--xattrs-include=*', '--numeric-owner', '-p', '-f', tarFile, '-C', out])
    const theirs = await snapshotTree(out)
    const ours = await snapshotTree(await s.driver.get(ids[n - 1]))
    await s.driver.put(ids[n - 1])
    t.deepEqual(compareTrees(ours, theirs, { rootMeta: false, mtime: 's' }), [], `layer ${n - 1} against crane export`)
    if (n === 3) {
      t.false(ours.entries.has('etc/b'), 'the whiteout deleted etc/b')
      t.is(ours.entries.get('etc/x')?.xattrs['user.test'], Buffer.from('hello').toString('hex').replace(/^/, '0x'))
      t.is(ours.entries.get('bin/tool')?.uid, 1000)
    }
  }
  await noLeftovers(t, s)
})

imageTest('a re-pull fetches no blob; a second image on the same base fetches only its own layers; records survive a re-open', async (t, d) => {
  const s = await setup(t, d)
  const layers = await fixtureLayers()
  const a = image(layers)
  await push(s, 'shared/a:v1', [a])
  const other = await layer([dir('opt/', { mtime: T }), file('opt/only-b', randomBytes(5000), { mtime: T })], 'gzip')
  const b = image([layers[0], layers[1], other])
  await push(s, 'shared/b:v1', [b])
  await s.images.pull(`${s.reg.host}/shared/a:v1`)
  const g0 = await s.reg.blobGets()
  const events: PullProgress[] = []
  await s.images.pull(`${s.reg.host}/shared/a:v1`, { onProgress: (e) => events.push(e) })
  t.is((await s.reg.blobGets()) - g0, 1, 're-pull: the config only')
  t.deepEqual(events.map((e) => e.state), ['reused', 'reused', 'reused'])
  const rb = await s.images.pull(`${s.reg.host}/shared/b:v1`)
  t.is((await s.reg.blobGets()) - g0, 3, 'b: its config and its one own layer')
  t.deepEqual(rb.layers.slice(0, 2), idsOf(a).slice(0, 2), 'the base is shared')
  t.is(rb.layers[2], idsOf(b)[2])
  t.is((await s.images.list()).length, 2)

  // Re-open: the same records; a temporary record file a crash left is removed.
  await fsp.writeFile(path.join(s.home, 'images', '.tmp-crashed.json'), '{"half')
  const again = await ImageStore.open(s.driver)
  t.deepEqual(await again.list(), await s.images.list())
  t.deepEqual(await fsp.readdir(path.join(s.home, 'images')).then((n) => n.filter((x) => x.startsWith('.'))), [])
  t.is((await again.get(rb.digest)).digest, rb.digest)
  t.is((await again.get(rb.digest.slice(7, 19))).digest, rb.digest, 'a 12-digit prefix')
  t.is((await again.get(`${s.reg.host}/shared/b@${rb.digest}`)).digest, rb.digest, 'by repo@digest')
})

imageTest('a multi-platform index: the platform asked for, and this machine by default', async (t, d) => {
  const s = await setup(t, d)
  const amd = image(await fixtureLayers(), { os: 'linux', architecture: 'amd64' })
  const arm = image([await layer([file('arm', 'arm64 only', { mtime: T })], 'gzip')], { os: 'linux', architecture: 'arm64', variant: 'v8' })
  await push(s, 'multi/img:all', [amd, arm], { index: true })
  const r = await s.images.pull(`${s.reg.host}/multi/img:all`, { platform: 'linux/arm64' })
  t.is(r.digest, arm.digest)
  t.deepEqual(r.layers, idsOf(arm))
  t.deepEqual(r.platform, { os: 'linux', architecture: 'arm64', variant: 'v8' })
  if (process.arch === 'x64') {
    const def = await s.images.pull(`${s.reg.host}/multi/img:all`)
    t.is(def.digest, amd.digest, 'this machine: amd64')
    t.deepEqual((await s.images.get(arm.digest)).references, [], 'the tag moved to the amd64 image')
  }
  await expectCode(t, s.images.pull(`${s.reg.host}/multi/img:all`, { platform: 'linux/s390x' }), 'ENOENT')
})

for (const where of ['base', 'top'] as const) {
  imageTest(`a tampered ${where} layer blob: ERR_DIGEST, no layer from it up, no record`, async (t, d) => {
    const s = await setup(t, d)
    const layers = await fixtureLayers()
    const img = image(layers)
    await push(s, 'tamper/me:v1', [img])
    const victim = where === 'base' ? 0 : 2
    const f = s.reg.blobPath(layers[victim].digest)
    const bytes = await fsp.readFile(f)
    bytes[bytes.length >> 1] ^= 0xff
    await fsp.writeFile(f, bytes)
    await expectCode(t, s.images.pull(`${s.reg.host}/tamper/me:v1`), 'ERR_DIGEST')
    const ids = idsOf(img)
    for (const [i, id] of ids.entries()) t.is(await s.driver.exists(id), i < victim, `layer ${i}`)
    t.deepEqual(await s.images.list(), [])
    await noLeftovers(t, s)
  })
}

imageTest('a config whose diffID does not match the layer: ERR_DIGEST, nothing kept', async (t, d) => {
  const s = await setup(t, d)
  const [l0, l1] = await fixtureLayers()
  const img = image([l0, { ...l1, diffId: sha256(Buffer.from('not this layer')) }])
  await push(s, 'diffid/bad:v1', [img])
  const e = await expectCode(t, s.images.pull(`${s.reg.host}/diffid/bad:v1`), 'ERR_DIGEST')
  t.regex(e.message, /diff/i)
  const ids = idsOf(img)
  t.deepEqual(await Promise.all(ids.map((id) => s.driver.exists(id))), [true, false], 'the good base stays, the bad layer is not kept')
  t.deepEqual(await s.images.list(), [])
  await noLeftovers(t, s)
})

imageTest('the connection cut in the middle of a blob with no resume: a clean failure; the next pull reuses the complete layers', async (t, d) => {
  const s = await setup(t, d)
  const layers = await fixtureLayers()
  const img = image(layers)
  await push(s, 'cut/img:v1', [img])
  const top = layers[2].digest
  // Every GET of the top blob is cut after 1000 bytes, resumes included.
  const proxy = await startFaultProxy(s.reg.url, (req) => (req.method === 'GET' && req.url?.endsWith(`/blobs/${top}`) ? { cutAfter: 1000 } : 'pass'))
  t.teardown(() => proxy.stop())
  const e = await expectCode(t, s.images.pull(`${proxy.host}/cut/img:v1`, { concurrency: 1, retries: 1, retryDelay: 1 }), 'ERR_REGISTRY')
  t.regex(e.message, /blob/)
  const ids = idsOf(img)
  t.deepEqual(await Promise.all(ids.map((id) => s.driver.exists(id))), [true, true, false])
  t.deepEqual(await s.images.list(), [])
  await noLeftovers(t, s)
  const g0 = await s.reg.blobGets()
  const events: PullProgress[] = []
  await s.images.pull(`${s.reg.host}/cut/img:v1`, { onProgress: (ev) => events.push(ev) })
  t.is((await s.reg.blobGets()) - g0, 2, 'the config and the top layer only')
  t.deepEqual(events.filter((ev) => ev.state === 'reused').map((ev) => ev.layer), [0, 1])
})

imageTest('the registry stopped: a clean failure, nothing half made', async (t, d) => {
  const s = await setup(t, d)
  await push(s, 'gone/img:v1', [image(await fixtureLayers())])
  const host = s.reg.host
  await s.reg.stop()
  await expectCode(t, s.images.pull(`${host}/gone/img:v1`, { retries: 1, retryDelay: 1 }), 'ERR_REGISTRY')
  t.deepEqual(await s.driver.layers(), [])
  t.deepEqual(await s.images.list(), [])
})

imageTest('wrong credentials: ERR_REGISTRY_AUTH; the right ones pull', async (t, d) => {
  const s = await setup(t, d, 'htpasswd')
  const img = image(await fixtureLayers())
  await push(s, 'private/img:v1', [img])
  const user = s.reg.user as { username: string; password: string }
  const e = await expectCode(t, s.images.pull(`${s.reg.host}/private/img:v1`, { auth: { username: user.username, password: 'wrong' } }), 'ERR_REGISTRY_AUTH')
  t.false(e.message.includes('wrong'), 'no password in the message')
  t.deepEqual(await s.driver.layers(), [])
  const r = await s.images.pull(`${s.reg.host}/private/img:v1`, { auth: user })
  t.is(r.digest, img.digest)
})

imageTest('an abort leaves no half layer and no record', async (t, d) => {
  const s = await setup(t, d)
  const img = image(await fixtureLayers())
  await push(s, 'abort/img:v1', [img])
  const before = new AbortController()
  before.abort(new Error('not now'))
  const e0 = await t.throwsAsync(s.images.pull(`${s.reg.host}/abort/img:v1`, { signal: before.signal }))
  t.is(e0?.name, 'AbortError')
  const ac = new AbortController()
  const reason = new Error('stop')
  const e = await t.throwsAsync(
    s.images.pull(`${s.reg.host}/abort/img:v1`, { signal: ac.signal, concurrency: 1, onProgress: (ev) => ev.state === 'done' && ev.layer === 0 && ac.abort(reason) }),
  )
  t.is(e?.name, 'AbortError')
  t.is((e as BtrfsError).code, 'ABORT_ERR')
  t.is(e?.cause, reason)
  const ids = idsOf(img)
  t.true(await s.driver.exists(ids[0]), 'the complete base stays')
  t.false(await s.driver.exists(ids[2]))
  t.deepEqual(await s.images.list(), [])
  await noLeftovers(t, s)
})

imageTest('foreign layers are refused before anything is fetched', async (t, d) => {
  const s = await setup(t, d)
  const l = await layer([file('x', 'x')], 'gzip')
  const img = image([{ ...l, mediaType: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip' }])
  await writeLayout(path.join(d, 'foreign'), [img])
  await s.reg.crane(['push', '--allow-nondistributable-artifacts', path.join(d, 'foreign'), `${s.reg.host}/foreign/img:v1`])
  const g0 = await s.reg.blobGets()
  await expectCode(t, s.images.pull(`${s.reg.host}/foreign/img:v1`), 'ERR_UNSUPPORTED_LAYER')
  t.is(await s.reg.blobGets(), g0)
  t.deepEqual(await s.driver.layers(), [])
})
