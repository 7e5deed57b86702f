// ImageStore.push against a real registry, with crane as the oracle: what we push passes
// `crane validate --remote` (gzip; zstd layers checked blob by blob with the zstd program), `crane export` of it equals our layer tree,
// a second push uploads nothing, a committed image pushes too, wrong credentials are refused.
// A pulled image keeps its blobs: pushed within its registry they are mounted (the registry's
// log shows no upload) and its digest stays; a blob the target has is skipped; one it has not
// and cannot mount is diffed and uploaded; a record from before blobs were kept pushes diffs.
import test, { type ExecutionContext } from 'ava'
import { randomBytes } from 'node:crypto'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { BtrfsDriver, BtrfsError, ImageStore, type PushProgress } from '../ts/index'
import { sh, useBtrfs } from './helpers/btrfs'
import { dir, file, hardlink, symlink, zstdDecompress } from './helpers/diff-tar'
import { gunzipSync } from 'node:zlib'
import { compareTrees, snapshotTree } from './helpers/diff-tree'
import { image, layer, sha256, writeLayout, type BuiltImage } from './helpers/oci-layout'
import { startRegistry, useRegistryTools, type AuthMode, type LoggedRequest, type TestRegistry } from './helpers/registry'

const { btrfsTest } = useBtrfs(test, { size: 1024 * 1024 * 1024, tools: ['getfattr', 'tar', 'zstd'] })
const registry = useRegistryTools(test)
const imageTest = (title: string, impl: (t: ExecutionContext, dir: string) => Promise<void>) =>
  registry.available ? btrfsTest(title, impl) : registry.registryTest(title, async () => undefined)

const T = 1700000000

interface Setup {
  reg: TestRegistry
  driver: BtrfsDriver
  images: ImageStore
  dir: string
}

async function setup(t: ExecutionContext, d: string, auth: AuthMode = 'none'): Promise<Setup> {
  const reg = await startRegistry({ auth })
  t.teardown(() => reg.stop())
  const driver = await BtrfsDriver.init(path.join(d, 'store'))
  t.teardown(() => driver.cleanup())
  return { reg, driver, images: await ImageStore.open(driver), dir: d }
}

/** crane export of `ref`, extracted by GNU tar, against the tree of layer `id`. */
async function sameAsExport(t: ExecutionContext, s: Setup, ref: string, id: string, label: string): Promise<void> {
  const name = `export-${randomBytes(4).toString('hex')}`
  const tarFile = path.join(s.dir, `${name}.tar`)
  await s.reg.crane(['export', ref, tarFile])
  const out = path.join(s.dir, name)
  await fsp.mkdir(out)
  await sh('tar', ['-x', '--xattrs', '--xattrs-include=*', '--numeric-owner', '-p', '-f', tarFile, '-C', out])
  const ours = await snapshotTree(await s.driver.get(id))
  await s.driver.put(id)
  t.deepEqual(compareTrees(ours, await snapshotTree(out), { rootMeta: false, mtime: 's' }), [], label)
}

/** A two-layer gzip image (crane validate reads gzip only), pushed by crane from a layout and pulled. */
async function pulledGzip(s: Setup, ref = 'src/app:v1'): Promise<{ ref: string; built: BuiltImage }> {
  const l0 = await layer([dir('etc/', { mtime: T }), file('etc/a', 'alpha', { mtime: T }), file('tool', randomBytes(50_000), { mode: 0o755, mtime: T })], 'gzip')
  const l1 = await layer([dir('etc/', { mtime: T + 1 }), file('etc/.wh.a', '', { mtime: T + 1 }), file('etc/c', randomBytes(20_000), { mtime: T + 1 })], 'gzip')
  const built = image([l0, l1])
  const l = path.join(s.dir, `layout-${randomBytes(4).toString('hex')}`)
  await writeLayout(l, [built])
  await s.reg.crane(['push', l, `${s.reg.host}/${ref}`])
  await s.images.pull(`${s.reg.host}/${ref}`)
  return { ref: `${s.reg.host}/${ref}`, built }
}

/** What `reg` answered since `from` requests: blob uploads (PATCH, the closing PUT), mounts (201), and the rest. */
async function since(reg: TestRegistry, from: number): Promise<{ all: LoggedRequest[]; uploads: LoggedRequest[]; mounts: LoggedRequest[] }> {
  const all = (await reg.requests()).slice(from)
  return {
    all,
    uploads: all.filter((q) => q.uri.includes('/blobs/uploads/') && (q.method === 'PATCH' || q.method === 'PUT')),
    mounts: all.filter((q) => q.method === 'POST' && q.uri.includes('mount=') && q.status === 201),
  }
}

const layerDigests = async (reg: TestRegistry, ref: string) => (JSON.parse(await reg.crane(['manifest', ref])).layers as { digest: string }[]).map((l) => l.digest)

async function pulledFixture(s: Setup): Promise<string> {
  const l0 = await layer(
    [
      dir('etc/', { mtime: T }),
      file('etc/a', 'alpha', { mtime: T }),
      file('etc/b', 'beta', { mtime: T }),
      file('etc/x', 'xattr', { mtime: T, pax: { 'SCHILY.xattr.user.test': 'hello' } }),
      symlink('etc/link', 'a', { mtime: T }),
      hardlink('etc/hard', 'etc/a', { mtime: T }),
      file('tool', randomBytes(50_000), { mode: 0o755, uid: 1000, gid: 1000, mtime: T }),
    ],
    'gzip',
  )
  const l1 = await layer([dir('etc/', { mtime: T + 1 }), file('etc/.wh.b', '', { mtime: T + 1 }), file('etc/c', 'c', { mtime: T + 1 })], 'zstd')
  const img = image([l0, l1])
  const l = path.join(s.dir, 'layout')
  await writeLayout(l, [img])
  await s.reg.crane(['push', l, `${s.reg.host}/src/app:v1`])
  await s.images.pull(`${s.reg.host}/src/app:v1`)
  return `${s.reg.host}/src/app:v1`
}

imageTest('push gzip and zstd: crane validate --remote, crane export equals the layer; a second push uploads nothing', async (t, d) => {
  const s = await setup(t, d)
  const src = await pulledFixture(s)
  const rec = await s.images.get(src)
  for (const compression of ['gzip', 'zstd'] as const) {
    const target = `${s.reg.host}/pushed/app:${compression}`
    const events: PushProgress[] = []
    const r = await s.images.push(src, target, { compression, onProgress: (e) => events.push(e) })
    t.is(r.reference, target)
    t.is(r.digest, (await s.reg.crane(['digest', target])).trim())
    t.deepEqual(r.layers.map((l) => l.id), rec.layers)
    const manifest = JSON.parse(await s.reg.crane(['manifest', target]))
    if (compression === 'gzip') await s.reg.crane(['validate', '--remote', target])
    else {
      // crane validate reads layers as gzip (it fails on crane's own zstd images): check each
      // blob by hand, its sha256 and the sha256 of what the zstd program makes of it.
      const config = JSON.parse(await s.reg.crane(['config', target]))
      for (const [i, l] of (manifest.layers as { digest: string }[]).entries()) {
        const blob = Buffer.from(await (await fetch(`${s.reg.url}/v2/pushed/app/blobs/${l.digest}`)).arrayBuffer())
        t.is(sha256(blob), l.digest)
        t.is(sha256(await zstdDecompress(blob)), config.rootfs.diff_ids[i])
      }
    }
    t.true(manifest.layers.every((l: { mediaType: string }) => l.mediaType.endsWith(compression === 'zstd' ? '+zstd' : '+gzip')))
    t.deepEqual(events.filter((e) => e.state !== 'uploading').map((e) => e.layer), [0, 1])
    await sameAsExport(t, s, target, rec.layers[1], `${compression}: crane export of what we pushed`)
  }
  const before = (await s.reg.requests()).filter((q) => q.method === 'POST').length
  const again = await s.images.push(src, `${s.reg.host}/pushed/app:gzip`, { compression: 'gzip' })
  t.deepEqual(again.layers.map((l) => l.blob), ['present', 'present'])
  t.is(again.config, 'present')
  t.is((await s.reg.requests()).filter((q) => q.method === 'POST').length, before, 'no upload started')
})

imageTest('a committed image pushes, and pulls back into another store with the same trees', async (t, d) => {
  const s = await setup(t, d)
  await s.driver.create('c1')
  const p1 = await s.driver.get('c1')
  await fsp.writeFile(path.join(p1, 'hello'), 'hello\n')
  await fsp.mkdir(path.join(p1, 'dir'))
  await fsp.writeFile(path.join(p1, 'dir', 'gone'), 'x')
  await s.driver.put('c1')
  await s.driver.create('c2', { parent: 'c1' })
  const p2 = await s.driver.get('c2')
  await fsp.rm(path.join(p2, 'dir', 'gone'))
  await fsp.writeFile(path.join(p2, 'world'), randomBytes(10_000))
  await s.driver.put('c2')
  const rec = await s.images.commit('c2', { reference: 'local/app:v1' })
  const target = `${s.reg.host}/committed/app:v1`
  const r = await s.images.push('local/app:v1', target)
  await s.reg.crane(['validate', '--remote', target])
  await sameAsExport(t, s, target, 'c2', 'crane export of the committed image')
  const config = JSON.parse(await s.reg.crane(['config', target]))
  t.deepEqual(config.rootfs.diff_ids, rec.diffIds, 'the diffIDs commit recorded')

  const other = await BtrfsDriver.init(path.join(d, 'other'))
  t.teardown(() => other.cleanup())
  const back = await (await ImageStore.open(other)).pull(target)
  t.is(back.digest, r.digest)
  t.deepEqual(back.diffIds, rec.diffIds)
  const a = await snapshotTree(await s.driver.get('c2'))
  const b = await snapshotTree(await other.get(back.layers[1]))
  t.deepEqual(compareTrees(a, b, { rootMeta: false }), [])
  await s.driver.put('c2')
  await other.put(back.layers[1])
})

imageTest('push with wrong credentials: ERR_REGISTRY_AUTH', async (t, d) => {
  const s = await setup(t, d, 'htpasswd')
  await s.driver.create('base')
  await s.images.commit('base', { reference: 'local/base' })
  const user = s.reg.user as { username: string; password: string }
  const e = await t.throwsAsync(s.images.push('local/base', `${s.reg.host}/x/base:v1`, { auth: { username: user.username, password: 'nope' } }))
  t.true(e instanceof BtrfsError)
  t.is((e as BtrfsError).code, 'ERR_REGISTRY_AUTH')
  const ok = await s.images.push('local/base', `${s.reg.host}/x/base:v1`, { auth: user })
  await s.reg.crane(['validate', '--remote', ok.reference])
  await t.throwsAsync(s.images.push('local/base', 'x', { compression: 'lz4' as 'gzip' }), { code: 'EINVAL' })
  await t.throwsAsync(s.images.push('nope/nothing', 'x'), { code: 'ENOENT' })
})

imageTest('a pulled image pushed within its registry: its blobs are mounted or present, nothing is uploaded, its digest stays', async (t, d) => {
  const s = await setup(t, d)
  const { ref: src, built } = await pulledGzip(s)
  const rec = await s.images.get(src)
  const source = { registry: s.reg.host, repository: 'src/app' }
  t.deepEqual(rec.blobs, built.layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.blob.length, sources: [source] })), 'each layer keeps its blob and where it came from')
  // Pulled again from a second repository: the record knows both.
  await s.reg.crane(['copy', src, `${s.reg.host}/src2/app:v1`])
  await s.images.pull(`${s.reg.host}/src2/app:v1`)
  const sources = (await s.images.get(src)).blobs?.[0].sources ?? []
  t.deepEqual([...sources].sort((a, b) => a.repository.localeCompare(b.repository)), [source, { registry: s.reg.host, repository: 'src2/app' }])

  const srcDigest = (await s.reg.crane(['digest', src])).trim()
  const target = `${s.reg.host}/other/app:v1`
  const n0 = (await s.reg.requests()).length
  const r = await s.images.push(src, target)
  const log = await since(s.reg, n0)
  t.deepEqual(r.layers.map((l) => l.blob), ['mounted', 'mounted'])
  t.is(r.config, 'mounted')
  t.deepEqual(log.uploads, [], 'no blob uploaded')
  t.is(log.mounts.length, 3, 'two layers and the config mounted')
  t.deepEqual(
    log.all.filter((q) => q.method === 'PUT').map((q) => q.uri),
    ['/v2/other/app/manifests/v1'],
    'the one PUT is the manifest',
  )
  t.deepEqual(await layerDigests(s.reg, target), built.layers.map((l) => l.digest))
  t.is((await s.reg.crane(['digest', target])).trim(), srcDigest, 'crane digest of the source and the target agree')
  t.is(r.digest, srcDigest)
  t.is(r.digest, rec.digest)
  await s.reg.crane(['validate', '--remote', target])

  // Into the source repository under another tag: every blob is there.
  const n1 = (await s.reg.requests()).length
  const again = await s.images.push(src, `${s.reg.host}/src/app:v2`)
  const log2 = await since(s.reg, n1)
  t.deepEqual(again.layers.map((l) => l.blob), ['present', 'present'])
  t.is(again.config, 'present')
  t.deepEqual(log2.all.filter((q) => q.method === 'POST'), [], 'no upload started, no mount')
  t.is(again.digest, srcDigest)
})

imageTest('to a second registry: a blob it has is skipped, the others are diffed and uploaded; crane validate and crane export agree', async (t, d) => {
  const s = await setup(t, d)
  const { ref: src, built } = await pulledGzip(s)
  const rec = await s.images.get(src)
  const reg2 = await startRegistry()
  t.teardown(() => reg2.stop())
  // The target repository has the base layer's blob already (crane pushed an image of it).
  const seed = path.join(d, 'seed')
  await writeLayout(seed, [image([built.layers[0]])])
  await reg2.crane(['push', seed, `${reg2.host}/mirror/app:base`])
  const target = `${reg2.host}/mirror/app:v1`
  const n0 = (await reg2.requests()).length
  const r = await s.images.push(src, target)
  const log = await since(reg2, n0)
  t.deepEqual(r.layers.map((l) => l.blob), ['present', 'uploaded'])
  t.is(r.layers[0].digest, built.layers[0].digest, 'the base keeps its blob')
  t.not(r.layers[1].digest, built.layers[1].digest, 'the top is a diff made again')
  t.deepEqual(log.mounts, [], 'nothing to mount from on another registry')
  const closing = log.uploads.filter((q) => q.method === 'PUT').map((q) => /digest=(sha256(?:%3A|:)[0-9a-f]{64})/.exec(q.uri)?.[1]?.replace('%3A', ':'))
  t.false(closing.includes(built.layers[0].digest), 'the base is not uploaded')
  t.true(closing.includes(r.layers[1].digest), 'the top is uploaded')
  t.deepEqual(await layerDigests(reg2, target), r.layers.map((l) => l.digest))
  await reg2.crane(['validate', '--remote', target])
  const config = JSON.parse(await reg2.crane(['config', target]))
  t.is(config.rootfs.diff_ids[0], rec.diffIds[0])
  const blob = Buffer.from(await (await fetch(`${reg2.url}/v2/mirror/app/blobs/${r.layers[1].digest}`)).arrayBuffer())
  t.is(config.rootfs.diff_ids[1], sha256(gunzipSync(blob)), "the config names the uploaded diff's diffID")
  t.not(r.digest, rec.digest)
  await sameAsExport(t, { ...s, reg: reg2 }, target, rec.layers[1], 'crane export of the mixed image')
})

imageTest('a blob the target lacks and cannot mount (its source repository lost it) is diffed and uploaded as before', async (t, d) => {
  const s = await setup(t, d)
  const { ref: src, built } = await pulledGzip(s)
  const res = await fetch(`${s.reg.url}/v2/src/app/blobs/${built.layers[1].digest}`, { method: 'DELETE' })
  t.is(res.status, 202, 'the registry dropped the top blob from the source repository')
  const target = `${s.reg.host}/other/app:v1`
  const n0 = (await s.reg.requests()).length
  const r = await s.images.push(src, target)
  const log = await since(s.reg, n0)
  t.deepEqual(r.layers.map((l) => l.blob), ['mounted', 'uploaded'])
  t.is(log.mounts.length, 1, 'the base mounted (the config is new: it names the new diff)')
  t.is(r.config, 'uploaded')
  t.true(log.all.some((q) => q.method === 'POST' && q.uri.includes(`mount=${encodeURIComponent(built.layers[1].digest)}`) && q.status === 202), 'the top was tried first')
  t.true(log.uploads.length > 0)
  t.not(r.layers[1].digest, built.layers[1].digest)
  await s.reg.crane(['validate', '--remote', target])
})

imageTest('a record written before blobs were kept still reads, and pushes the diffs', async (t, d) => {
  const s = await setup(t, d)
  const { ref: src } = await pulledGzip(s)
  const rec = await s.images.get(src)
  const file = path.join(s.driver.home, 'images', `${rec.digest.slice(7)}.json`)
  const stored = JSON.parse(await fsp.readFile(file, 'utf8'))
  delete stored.blobs
  await fsp.writeFile(file, JSON.stringify(stored))
  const reopened = await ImageStore.open(s.driver)
  const old = await reopened.get(src)
  t.is(old.blobs, undefined)
  t.deepEqual(old.layers, rec.layers)
  const target = `${s.reg.host}/other/app:v1`
  const r = await reopened.push(src, target)
  t.deepEqual(r.layers.map((l) => l.blob), ['uploaded', 'uploaded'])
  await s.reg.crane(['validate', '--remote', target])
  await sameAsExport(t, s, target, rec.layers[1], 'crane export of the diffs')
})
