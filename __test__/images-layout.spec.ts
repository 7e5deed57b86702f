// OCI image layouts: import of layouts built here (gzip, zstd and plain layers, a whiteout,
// a multi-platform index), compared with crane export of the same layout pushed to a real
// registry; tampered and missing blobs; export that crane pushes and validates, whose export
// equals our layer, and that imports back into another store.
import test, { type ExecutionContext } from 'ava'
import { randomBytes } from 'node:crypto'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { gunzipSync } from 'node:zlib'
import { BtrfsDriver, BtrfsError, ImageStore } from '../ts/index'
import { chainIds, layerIdOf } from '../ts/image/chain'
import { sh, useBtrfs } from './helpers/btrfs'
import { dir, file, hardlink, symlink } from './helpers/diff-tar'
import { compareTrees, snapshotTree } from './helpers/diff-tree'
import { image, layer, sha256, writeLayout, type BuiltImage } from './helpers/oci-layout'
import { startRegistry, useRegistryTools, type TestRegistry } from './helpers/registry'

const { btrfsTest } = useBtrfs(test, { size: 1024 * 1024 * 1024, tools: ['getfattr', 'tar', 'zstd'] })
const registry = useRegistryTools(test)
const imageTest = (title: string, impl: (t: ExecutionContext, dir: string) => Promise<void>) =>
  registry.available ? btrfsTest(title, impl) : registry.registryTest(title, async () => undefined)

const T = 1700000000

async function fixture(): Promise<BuiltImage> {
  const l0 = await layer(
    [
      dir('etc/', { mtime: T }),
      file('etc/a', 'alpha', { mtime: T }),
      file('etc/b', 'beta', { mtime: T }),
      file('etc/x', 'xattr', { mtime: T, pax: { 'SCHILY.xattr.user.test': 'hi' } }),
      symlink('etc/link', 'a', { mtime: T }),
      hardlink('etc/hard', 'etc/a', { mtime: T }),
      file('tool', randomBytes(40_000), { mode: 0o755, uid: 1000, gid: 1000, mtime: T }),
    ],
    'gzip',
  )
  const l1 = await layer([dir('etc/', { mtime: T + 1 }), file('etc/.wh.b', '', { mtime: T + 1 }), file('etc/c', 'c', { mtime: T + 1 })], 'zstd')
  const l2 = await layer([dir('usr/', { mtime: T }), file('usr/big', randomBytes(100_000), { mtime: T })], 'none')
  return image([l0, l1, l2])
}

interface Setup {
  reg: TestRegistry
  driver: BtrfsDriver
  images: ImageStore
  dir: string
}

async function setup(t: ExecutionContext, d: string, name = 'store'): Promise<Setup> {
  const reg = await startRegistry()
  t.teardown(() => reg.stop())
  const driver = await BtrfsDriver.init(path.join(d, name))
  t.teardown(() => driver.cleanup())
  return { reg, driver, images: await ImageStore.open(driver), dir: d }
}

async function sameAsExport(t: ExecutionContext, s: Setup, driver: BtrfsDriver, ref: string, id: string, label: string): Promise<void> {
  const name = `export-${randomBytes(4).toString('hex')}`
  const tarFile = path.join(s.dir, `${name}.tar`)
  await s.reg.crane(['export', ref, tarFile])
  const out = path.join(s.dir, name)
  await fsp.mkdir(out)
  await sh('tar', ['-x', '--xattrs', '--xattrs-include=*', '--numeric-owner', '-p', '-f', tarFile, '-C', out])
  const ours = await snapshotTree(await driver.get(id))
  await driver.put(id)
  t.deepEqual(compareTrees(ours, await snapshotTree(out), { rootMeta: false, mtime: 's' }), [], label)
}

const idsOf = (img: BuiltImage) => chainIds(img.layers.map((l) => l.diffId)).map(layerIdOf)

imageTest('import a layout: the layers crane export flattens; a multi-platform index by platform', async (t, d) => {
  const s = await setup(t, d)
  const img = await fixture()
  const layout = path.join(d, 'layout')
  await writeLayout(layout, [img])
  const rec = await s.images.importLayout(layout, { reference: 'local/imported:v1' })
  t.is(rec.digest, img.digest)
  t.deepEqual(rec.layers, idsOf(img))
  t.deepEqual(rec.references, ['docker.io/local/imported:v1'])
  await s.reg.crane(['push', layout, `${s.reg.host}/imp/app:v1`])
  await sameAsExport(t, s, s.driver, `${s.reg.host}/imp/app:v1`, rec.layers[2], 'imported top layer')
  t.deepEqual(rec.blobs, img.layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.blob.length, sources: [] })), 'the layout blobs, from no registry')
  // The registry has the layout's blobs (crane pushed it): pushed, the imported image is the same image.
  const pushed = await s.images.push('local/imported:v1', `${s.reg.host}/imp/app:v2`)
  t.deepEqual(pushed.layers.map((l) => l.blob), ['present', 'present', 'present'])
  t.is(pushed.digest, img.digest)
  // Importing again applies nothing (the layers are there) and adds nothing but a reference.
  const again = await s.images.importLayout(layout, { reference: 'local/imported:v2' })
  t.deepEqual(again.references, ['docker.io/local/imported:v1', 'docker.io/local/imported:v2'])

  const arm = image([await layer([file('arm', 'arm only')], 'gzip')], { os: 'linux', architecture: 'arm64', variant: 'v8' })
  const multi = path.join(d, 'multi')
  await writeLayout(multi, [img, arm], { index: true })
  const r = await s.images.importLayout(multi, { platform: 'linux/arm64' })
  t.is(r.digest, arm.digest)
  t.deepEqual(r.references, [])
  t.deepEqual(r.platform, { os: 'linux', architecture: 'arm64', variant: 'v8' })
})

imageTest('import: a tampered layer blob is ERR_DIGEST and a missing one ENOENT; nothing of them is kept', async (t, d) => {
  const s = await setup(t, d)
  const img = await fixture()
  const layout = path.join(d, 'layout')
  await writeLayout(layout, [img])
  const top = path.join(layout, 'blobs', 'sha256', img.layers[2].digest.slice(7))
  const bytes = await fsp.readFile(top)
  bytes[bytes.length >> 1] ^= 0xff
  await fsp.writeFile(top, bytes)
  const e = await t.throwsAsync(s.images.importLayout(layout, { reference: 'local/bad' }))
  t.is((e as BtrfsError).code, 'ERR_DIGEST', e?.message)
  const ids = idsOf(img)
  t.deepEqual(await Promise.all(ids.map((id) => s.driver.exists(id))), [true, true, false])
  t.deepEqual(await s.images.list(), [])
  await fsp.rm(top)
  const e2 = await t.throwsAsync(s.images.importLayout(layout))
  t.is((e2 as BtrfsError).code, 'ENOENT', e2?.message)
  t.deepEqual(await s.images.list(), [])
  const e3 = await t.throwsAsync(s.images.importLayout(path.join(d, 'nowhere')))
  t.is((e3 as BtrfsError).code, 'ENOENT')
})

imageTest('export: crane pushes and validates it, its export equals our layer, and it imports into another store', async (t, d) => {
  const s = await setup(t, d)
  const img = await fixture()
  const layout = path.join(d, 'layout')
  await writeLayout(layout, [img])
  const rec = await s.images.importLayout(layout, { reference: 'local/app:v1' })
  const out = path.join(d, 'exported')
  const ex = await s.images.exportLayout('local/app:v1', out)
  const index = JSON.parse(await fsp.readFile(path.join(out, 'index.json'), 'utf8'))
  t.is(index.manifests.length, 1)
  t.is(index.manifests[0].digest, ex.digest)
  t.is(index.manifests[0].annotations['org.opencontainers.image.ref.name'], 'v1')
  t.deepEqual(
    (await fsp.readdir(path.join(out, 'blobs', 'sha256'))).filter((n) => n.startsWith('.')),
    [],
    'no temporary blob',
  )
  await s.reg.crane(['push', out, `${s.reg.host}/exp/app:v1`])
  await s.reg.crane(['validate', '--remote', `${s.reg.host}/exp/app:v1`])
  t.is((await s.reg.crane(['digest', `${s.reg.host}/exp/app:v1`])).trim(), ex.digest)
  await sameAsExport(t, s, s.driver, `${s.reg.host}/exp/app:v1`, rec.layers[2], 'crane export of our export')

  // zstd into the same layout under another tag: a second entry; then import the v1 one into another store.
  await s.images.importLayout(layout, { reference: 'local/app:zstd' })
  const z = await s.images.exportLayout('local/app:zstd', out, { compression: 'zstd' })
  const index2 = JSON.parse(await fsp.readFile(path.join(out, 'index.json'), 'utf8'))
  t.deepEqual(index2.manifests.map((m: { digest: string }) => m.digest), [ex.digest, z.digest])
  const other = await BtrfsDriver.init(path.join(d, 'other'))
  t.teardown(() => other.cleanup())
  const back = await (await ImageStore.open(other)).importLayout(out, { reference: 'local/app:v1' })
  t.is(back.digest, ex.digest, 'the entry named v1')
  const a = await snapshotTree(await s.driver.get(rec.layers[2]))
  const b = await snapshotTree(await other.get(back.layers[2]))
  t.deepEqual(compareTrees(a, b, { rootMeta: false }), [])
  await s.driver.put(rec.layers[2])
  await other.put(back.layers[2])
})

imageTest('export of a pulled image: its layers are diffs made again, and the config names their diffIDs; crane validates it', async (t, d) => {
  const s = await setup(t, d)
  const img = await fixture()
  const layout = path.join(d, 'layout')
  await writeLayout(layout, [img])
  const src = `${s.reg.host}/src/app:v1`
  await s.reg.crane(['push', layout, src])
  const rec = await s.images.pull(src)
  const out = path.join(d, 'exported')
  const ex = await s.images.exportLayout(src, out)
  const blob = (digest: string) => fsp.readFile(path.join(out, 'blobs', 'sha256', digest.slice(7)))
  const manifest = JSON.parse((await blob(ex.digest)).toString('utf8'))
  const config = JSON.parse((await blob(manifest.config.digest)).toString('utf8'))
  const diffIds = await Promise.all((manifest.layers as { digest: string }[]).map(async (l) => sha256(gunzipSync(await blob(l.digest)))))
  t.deepEqual(config.rootfs.diff_ids, diffIds, "the config's diff_ids are those of the exported layers")
  t.is(config.rootfs.diff_ids.length, rec.layers.length)
  t.deepEqual(config.history, JSON.parse(await s.reg.crane(['config', src])).history, 'the rest of the config is kept')
  await s.reg.crane(['push', out, `${s.reg.host}/exp/app:v1`])
  await s.reg.crane(['validate', '--remote', `${s.reg.host}/exp/app:v1`])
  await sameAsExport(t, s, s.driver, `${s.reg.host}/exp/app:v1`, rec.layers[2], 'crane export of the exported layout')
})
