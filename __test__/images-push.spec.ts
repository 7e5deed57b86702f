// ImageStore.push against a real registry, with crane as the oracle: what we push passes
// `crane validate --remote` (gzip; zstd layers checked blob by blob with the zstd program), `crane export` of it equals our layer tree,
// a second push uploads nothing, a committed image pushes too, wrong credentials are refused.
import test, { type ExecutionContext } from 'ava'
import { randomBytes } from 'node:crypto'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { BtrfsDriver, BtrfsError, ImageStore, type PushProgress } from '../ts/index'
import { sh, useBtrfs } from './helpers/btrfs'
import { dir, file, hardlink, symlink, zstdDecompress } from './helpers/diff-tar'
import { compareTrees, snapshotTree } from './helpers/diff-tree'
import { image, layer, sha256, writeLayout } from './helpers/oci-layout'
import { startRegistry, useRegistryTools, type AuthMode, type TestRegistry } from './helpers/registry'

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
  const again = await s.images.push(src, `${s.reg.host}/pushed/app:gzip`)
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
