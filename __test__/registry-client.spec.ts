// The registry client (ts/image/) against a real registry (distribution v3), with crane as the
// independent client: images crane pushed are read back by digest, images we push pass
// `crane validate --remote`. Auth in the three modes, faults through a proxy, redirects to a
// second host. Needs the programs of scripts/test-tools.sh; no btrfs, no root.
import test, { type ExecutionContext } from 'ava'
import { execFileSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import { gunzipSync, gzipSync } from 'node:zlib'
import { BtrfsError } from '../ts/errors'
import { MediaType, parsePlatform } from '../ts/image/manifest'
import { parseReference } from '../ts/image/reference'
import { RegistryClient, sha256, type RegistryOptions } from '../ts/image/registry'
import {
  startBlobHost,
  startFaultProxy,
  startRegistry,
  useRegistryTools,
  writeDockerConfig,
  type AuthMode,
  type TestRegistry,
} from './helpers/registry'

const { registryTest } = useRegistryTools(test)

let work: string
test.before(async () => {
  work = await fsp.mkdtemp(path.join(os.tmpdir(), 'btrfs-layers-registry-spec-'))
})
test.after.always(async () => {
  if (work) await fsp.rm(work, { recursive: true, force: true })
})

/** A tarball of a few files with random content (so every layer is new), made with tar. */
async function tarball(name: string, files = 3, bytes = 2000): Promise<string> {
  const dir = path.join(work, `${name}-${randomBytes(4).toString('hex')}`)
  await fsp.mkdir(path.join(dir, 'etc'), { recursive: true })
  for (let i = 0; i < files; i++) await fsp.writeFile(path.join(dir, 'etc', `${name}-${i}`), randomBytes(bytes))
  const file = `${dir}.tar`
  execFileSync('tar', ['-cf', file, '-C', dir, '.'])
  return file
}

async function started(t: ExecutionContext, auth: AuthMode = 'none'): Promise<TestRegistry> {
  const reg = await startRegistry({ auth })
  t.teardown(() => reg.stop())
  return reg
}

function client(reg: TestRegistry, o: RegistryOptions = {}, via?: string): RegistryClient {
  return new RegistryClient(parseReference(`${via ?? reg.host}/x`), { ...(reg.user ? { auth: reg.user } : {}), ...o })
}

async function drain(s: Readable): Promise<{ digest: string; size: number }> {
  const h = createHash('sha256')
  let size = 0
  for await (const c of s) {
    h.update(c as Buffer)
    size += (c as Buffer).length
  }
  return { digest: `sha256:${h.digest('hex')}`, size }
}

/** crane appends `layers` tarballs onto an empty base (OCI or Docker media types). */
async function cranePush(reg: TestRegistry, ref: string, o: { oci?: boolean; layers?: number; platform?: string } = {}): Promise<string> {
  const files: string[] = []
  for (let i = 0; i < (o.layers ?? 2); i++) files.push('-f', await tarball(`l${i}`))
  await reg.crane(['append', ...files, '-t', `${reg.host}/${ref}`, ...(o.oci ? ['--oci-empty-base'] : [])])
  if (o.platform) await reg.crane(['mutate', '--set-platform', o.platform, `${reg.host}/${ref}`, '-t', `${reg.host}/${ref}`])
  return (await reg.crane(['digest', `${reg.host}/${ref}`])).trim()
}

async function expectCode(t: ExecutionContext, p: Promise<unknown>, code: string, label = ''): Promise<BtrfsError> {
  const e = await t.throwsAsync(p, undefined, label)
  t.true(e instanceof BtrfsError, `${label} not a BtrfsError: ${String(e)}`)
  t.is((e as BtrfsError).code, code, `${label}: ${e?.message}`)
  t.true(e?.message.includes(code), `${label}: the message names the code: ${e?.message}`)
  return e as BtrfsError
}

// ---------------------------------------------------------------------------------------------
// Pull side
// ---------------------------------------------------------------------------------------------

for (const oci of [false, true]) {
  registryTest(`manifest and blobs of an image crane pushed, ${oci ? 'OCI' : 'Docker schema 2'} media types`, async (t) => {
    const reg = await started(t)
    const digest = await cranePush(reg, 'app/one:v1', { oci, layers: 3 })
    const c = client(reg)
    const m = await c.getManifest('app/one', 'v1')
    t.is(m.mediaType, oci ? MediaType.ociManifest : MediaType.dockerManifest)
    t.is(m.digest, digest, 'the digest crane reports')
    t.deepEqual(m.bytes, Buffer.from(await reg.crane(['manifest', `${reg.host}/app/one:v1`])), 'the bytes crane reads')
    t.deepEqual(await c.getManifest('app/one', digest), m, 'by digest: the same')
    const head = await c.headManifest('app/one', 'v1')
    t.is(head?.digest, digest)
    t.is(head?.size, m.bytes.length)
    if (m.parsed.kind !== 'manifest') return t.fail('not an image manifest')
    t.is(m.parsed.layers.length, 3)
    const configDigest = (await reg.crane(['config', `${reg.host}/app/one:v1`])).trim()
    t.is(m.parsed.config.digest, sha256(Buffer.from(configDigest)), 'the config crane reads')
    const getsBefore = await reg.blobGets('app/one')
    for (const d of [m.parsed.config, ...m.parsed.layers]) {
      t.deepEqual(await c.headBlob('app/one', d.digest), { size: d.size })
      const s = await c.getBlob('app/one', d.digest, { size: d.size })
      t.is(s.size, d.size)
      t.deepEqual(await drain(s), { digest: d.digest, size: d.size }, d.digest)
    }
    t.is((await reg.blobGets('app/one')) - getsBefore, 4, 'one GET per blob, counted in the registry log')
    t.is(await c.headBlob('app/one', `sha256:${'0'.repeat(64)}`), undefined)
    t.is(await c.headManifest('app/one', 'nope'), undefined)
    await expectCode(t, c.getManifest('app/one', 'nope'), 'ENOENT')
    await expectCode(t, c.getBlob('app/one', `sha256:${'0'.repeat(64)}`), 'ENOENT')
  })
}

for (const docker of [false, true]) {
  registryTest(`platform selection from ${docker ? 'a Docker manifest list' : 'an OCI index'}`, async (t) => {
    const reg = await started(t)
    const amd = await cranePush(reg, 'multi/img:amd64', { oci: !docker, platform: 'linux/amd64' })
    const arm = await cranePush(reg, 'multi/img:arm64', { oci: !docker, platform: 'linux/arm64/v8' })
    const armv7 = await cranePush(reg, 'multi/img:armv7', { oci: !docker, platform: 'linux/arm/v7' })
    await reg.crane([
      'index', 'append', ...(docker ? ['--docker-empty-base'] : []),
      '-m', `${reg.host}/multi/img:amd64`, '-m', `${reg.host}/multi/img:arm64`, '-m', `${reg.host}/multi/img:armv7`,
      '-t', `${reg.host}/multi/img:all`,
    ]) // prettier-ignore
    const indexDigest = (await reg.crane(['digest', `${reg.host}/multi/img:all`])).trim()
    const c = client(reg)
    const idx = await c.getManifest('multi/img', 'all')
    t.is(idx.mediaType, docker ? MediaType.dockerManifestList : MediaType.ociIndex)
    t.is(idx.digest, indexDigest)
    if (idx.parsed.kind !== 'index') return t.fail('not an index')
    t.is(idx.parsed.manifests.length, 3)
    for (const [platform, want] of [['linux/amd64', amd], ['linux/arm64', arm], ['linux/arm64/v8', arm], ['linux/arm/v7', armv7]] as const) {
      const { manifest, index } = await c.getImageManifest('multi/img', 'all', { platform: parsePlatform(platform) })
      t.is(manifest.digest, want, platform)
      t.is(manifest.digest, (await reg.crane(['digest', '--platform', platform, `${reg.host}/multi/img:all`])).trim(), `crane agrees: ${platform}`)
      t.is(index?.digest, indexDigest)
    }
    if (process.platform === 'linux' && (process.arch === 'x64' || process.arch === 'arm64')) {
      const { manifest } = await c.getImageManifest('multi/img', 'all')
      t.is(manifest.digest, process.arch === 'x64' ? amd : arm, 'this machine by default')
    }
    await expectCode(t, c.getImageManifest('multi/img', 'all', { platform: parsePlatform('linux/s390x') }), 'ENOENT')
  })
}

registryTest('a tampered blob gives ERR_DIGEST, and so does a tampered manifest fetched by digest', async (t) => {
  const reg = await started(t)
  const digest = await cranePush(reg, 'tamper/me:v1', { layers: 1 })
  const c = client(reg)
  const m = await c.getManifest('tamper/me', 'v1')
  if (m.parsed.kind !== 'manifest') return t.fail('not an image manifest')
  const layer = m.parsed.layers[0]
  // Same length, other bytes: the registry serves them as they are.
  const file = reg.blobPath(layer.digest)
  const bytes = await fsp.readFile(file)
  bytes[bytes.length >> 1] ^= 0xff
  await fsp.writeFile(file, bytes)
  const s = await c.getBlob('tamper/me', layer.digest, { size: layer.size })
  await expectCode(t, drain(s), 'ERR_DIGEST', 'blob')
  const manifestFile = reg.blobPath(digest)
  const mb = await fsp.readFile(manifestFile)
  await fsp.writeFile(manifestFile, mb.toString('utf8').replace(/"schemaVersion":\s*2/, '"schemaVersion":  2'))
  t.notDeepEqual(await fsp.readFile(manifestFile), mb, 'the manifest file changed')
  await expectCode(t, c.getManifest('tamper/me', digest), 'ERR_DIGEST', 'manifest')
})

// ---------------------------------------------------------------------------------------------
// Auth
// ---------------------------------------------------------------------------------------------

for (const mode of ['htpasswd', 'token'] as const) {
  registryTest(`${mode} auth: the right credentials, wrong ones, none, and config.json`, async (t) => {
    const reg = await started(t, mode)
    const digest = await cranePush(reg, 'private/app:v1', { layers: 1 })
    const user = reg.user as { username: string; password: string }
    const good = client(reg)
    const m = await good.getManifest('private/app', 'v1')
    t.is(m.digest, digest)
    if (m.parsed.kind !== 'manifest') return t.fail('not an image manifest')
    const layer = m.parsed.layers[0]
    t.is((await drain(await good.getBlob('private/app', layer.digest))).digest, layer.digest)
    if (reg.tokenServer) {
      const before = reg.tokenServer.requests.length
      await drain(await good.getBlob('private/app', m.parsed.config.digest))
      await good.headBlob('private/app', layer.digest)
      t.is(reg.tokenServer.requests.length, before, 'the token of the scope is reused')
      t.true(reg.tokenServer.requests.every((r) => r.user === user.username && !r.refused), 'the token requests carried the user')
    }

    const wrong = client(reg, { auth: { username: user.username, password: 'not-the-password' } })
    const e = await expectCode(t, wrong.getManifest('private/app', 'v1'), 'ERR_REGISTRY_AUTH', 'wrong password')
    t.false(e.message.includes('not-the-password'), 'no password in the message')
    t.false(e.message.includes(Buffer.from(`${user.username}:not-the-password`).toString('base64')), 'no basic header in the message')
    const nobody = await writeDockerConfig('elsewhere:1', { username: 'x', password: 'y' })
    t.teardown(() => fsp.rm(nobody, { recursive: true, force: true }))
    await expectCode(t, new RegistryClient(parseReference(`${reg.host}/x`), { dockerConfig: nobody }).getManifest('private/app', 'v1'), 'ERR_REGISTRY_AUTH', 'anonymous')

    // Credentials from config.json: the option, and DOCKER_CONFIG.
    const fromConfig = new RegistryClient(parseReference(`${reg.host}/x`), { dockerConfig: await reg.dockerConfig() })
    t.is((await fromConfig.getManifest('private/app', 'v1')).digest, digest, 'config.json (option)')
    const badConfig = await writeDockerConfig(reg.host, { username: user.username, password: 'wrong' })
    t.teardown(() => fsp.rm(badConfig, { recursive: true, force: true }))
    await expectCode(t, new RegistryClient(parseReference(`${reg.host}/x`), { dockerConfig: badConfig }).getManifest('private/app', 'v1'), 'ERR_REGISTRY_AUTH', 'config.json with a wrong password')
  })
}

registryTest('token auth: an identity token from config.json (OAuth2 refresh-token POST)', async (t) => {
  const reg = await started(t, 'token')
  const digest = await cranePush(reg, 'private/id:v1', { layers: 1 })
  const server = reg.tokenServer as NonNullable<TestRegistry['tokenServer']>
  server.identityTokens.set('refresh-123', (reg.user as { username: string }).username)
  const good = await writeDockerConfig(reg.host, { identitytoken: 'refresh-123' })
  const bad = await writeDockerConfig(reg.host, { identitytoken: 'refresh-999' })
  t.teardown(() => Promise.all([good, bad].map((d) => fsp.rm(d, { recursive: true, force: true }))).then(() => {}))
  const c = new RegistryClient(parseReference(`${reg.host}/x`), { dockerConfig: good })
  t.is((await c.getManifest('private/id', 'v1')).digest, digest)
  t.true(server.requests.some((r) => r.method === 'POST' && r.user === (reg.user as { username: string }).username))
  await expectCode(t, new RegistryClient(parseReference(`${reg.host}/x`), { dockerConfig: bad }).getManifest('private/id', 'v1'), 'ERR_REGISTRY_AUTH')
})

// ---------------------------------------------------------------------------------------------
// Faults: retries, resumes, redirects
// ---------------------------------------------------------------------------------------------

const isBlobGet = (method?: string, url?: string) => method === 'GET' && /\/blobs\/sha256:/.test(url ?? '')

registryTest('retries: 503 twice and a connection reset, then success', async (t) => {
  const reg = await started(t, 'htpasswd')
  const digest = await cranePush(reg, 'flaky/app:v1', { layers: 1 })
  let blob503 = 0
  let manifestResets = 0
  const proxy = await startFaultProxy(reg.url, (req) => {
    if (isBlobGet(req.method, req.url) && blob503 < 2) return (blob503++, { status: 503 })
    if (req.method === 'GET' && /\/manifests\//.test(req.url ?? '') && manifestResets < 1) return (manifestResets++, 'reset')
    return 'pass'
  })
  t.teardown(() => proxy.stop())
  const c = client(reg, { retryDelay: 1 }, proxy.host)
  const m = await c.getManifest('flaky/app', 'v1')
  t.is(m.digest, digest)
  t.is(manifestResets, 1, 'the manifest GET was reset once')
  if (m.parsed.kind !== 'manifest') return t.fail('not an image manifest')
  const layer = m.parsed.layers[0]
  t.deepEqual(await drain(await c.getBlob('flaky/app', layer.digest)), { digest: layer.digest, size: layer.size })
  t.is(blob503, 2)
  t.deepEqual(
    proxy.requests.filter((r) => isBlobGet(r.method, r.url)).map((r) => r.action),
    ['{"status":503}', '{"status":503}', 'pass'],
  )
  // Always failing: the retries run out, and it says so.
  const down = await startFaultProxy(reg.url, () => ({ status: 503 }))
  t.teardown(() => down.stop())
  await expectCode(t, client(reg, { retries: 2, retryDelay: 1 }, down.host).getManifest('flaky/app', 'v1'), 'ERR_REGISTRY')
  t.is(down.requests.length, 3, 'the first attempt and 2 retries')
})

registryTest('a connection cut in the middle of a blob is resumed with a Range request', async (t) => {
  const reg = await started(t)
  await reg.crane(['append', '-f', await tarball('big', 4, 200_000), '-t', `${reg.host}/cut/app:v1`])
  let cut = false
  let layerDigest = ''
  const proxy = await startFaultProxy(reg.url, (req) => {
    if (isBlobGet(req.method, req.url) && !req.headers.range && !cut && /\/cut\/app\//.test(req.url ?? '')) {
      const m = /sha256:[0-9a-f]+/.exec(req.url ?? '')
      if (m && m[0] === layerDigest) return (cut = true, { cutAfter: 100_000 })
    }
    return 'pass'
  })
  t.teardown(() => proxy.stop())
  const c = client(reg, { retryDelay: 1 }, proxy.host)
  const m = await c.getManifest('cut/app', 'v1')
  if (m.parsed.kind !== 'manifest') return t.fail('not an image manifest')
  layerDigest = m.parsed.layers[0].digest
  t.true(m.parsed.layers[0].size > 200_000, 'the layer is bigger than the cut')
  t.deepEqual(await drain(await c.getBlob('cut/app', layerDigest, { size: m.parsed.layers[0].size })), { digest: layerDigest, size: m.parsed.layers[0].size })
  t.true(cut, 'the connection was cut')
  const gets = proxy.requests.filter((r) => isBlobGet(r.method, r.url))
  t.is(gets.length, 2)
  t.regex(gets[1].range ?? '', /^bytes=[1-9][0-9]*-$/, 'the second GET resumes where the first stopped')
})

registryTest('a 307 to another host is followed without the Authorization header', async (t) => {
  const reg = await started(t, 'htpasswd')
  await cranePush(reg, 'redir/app:v1', { layers: 1 })
  const blobs = await startBlobHost(reg)
  t.teardown(() => blobs.stop())
  const proxy = await startFaultProxy(reg.url, (req) => {
    const m = /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(req.url ?? '')
    return req.method === 'GET' && m ? { redirect: `${blobs.url}/blobs/${m[1]}` } : 'pass'
  })
  t.teardown(() => proxy.stop())
  const c = client(reg, {}, proxy.host)
  const m = await c.getManifest('redir/app', 'v1')
  if (m.parsed.kind !== 'manifest') return t.fail('not an image manifest')
  const layer = m.parsed.layers[0]
  t.deepEqual(await drain(await c.getBlob('redir/app', layer.digest)), { digest: layer.digest, size: layer.size })
  const atRegistry = proxy.requests.filter((r) => isBlobGet(r.method, r.url))
  t.is(atRegistry.length, 1)
  t.regex(atRegistry[0].authorization ?? '', /^Basic /, 'the registry got the credentials')
  t.deepEqual(blobs.requests, [{ method: 'GET', url: `/blobs/${layer.digest}` }], 'the other host got no Authorization')
})

// ---------------------------------------------------------------------------------------------
// Push side
// ---------------------------------------------------------------------------------------------

/** An OCI image of gzip `layers`: its config, layers and manifest bytes. */
function ociImage(layers: Buffer[]) {
  const desc = (mediaType: string, b: Buffer) => ({ mediaType, digest: sha256(b), size: b.length })
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: layers.map((l) => sha256(gunzipSync(l))) },
      config: {},
    }),
  )
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: desc(MediaType.ociConfig, config),
      layers: layers.map((l) => desc(MediaType.ociLayerGzip, l)),
    }),
  )
  return { config, layers, manifest, digest: sha256(manifest) }
}

/** A gzip layer of 300 KiB of random bytes. */
function layerTar(): Buffer {
  const dir = path.join(work, `push-${randomBytes(4).toString('hex')}`)
  execFileSync('mkdir', ['-p', dir])
  execFileSync('dd', ['if=/dev/urandom', `of=${dir}/data`, 'bs=1k', 'count=300'], { stdio: 'ignore' })
  return gzipSync(execFileSync('tar', ['-cf', '-', '-C', dir, '.'], { maxBuffer: 64 * 1024 * 1024 }))
}

registryTest('push: chunked and monolithic uploads and a manifest, which crane validates; present blobs are skipped', async (t) => {
  const reg = await started(t, 'token')
  const img = ociImage([layerTar(), layerTar()])
  const c = client(reg)
  const repo = 'pushed/app'
  const logSince = async (n: number) => (await reg.requests()).slice(n)
  let mark = (await reg.requests()).length
  // Chunked, in 64 KiB PATCHes, from a stream.
  const streamOf = (b: Buffer) => () => Readable.from([b.subarray(0, 1000), b.subarray(1000)])
  t.is(await c.pushBlob(repo, { digest: sha256(img.layers[0]), size: img.layers[0].length }, streamOf(img.layers[0]), { upload: 'chunked', chunkSize: 64 * 1024 }), 'uploaded')
  const patches = (await logSince(mark)).filter((r) => r.method === 'PATCH' && r.status === 202)
  t.is(patches.length, Math.ceil(img.layers[0].length / (64 * 1024)), 'one PATCH per chunk')
  // Monolithic: POST, then one PUT with the bytes.
  mark = (await reg.requests()).length
  t.is(await c.pushBlob(repo, { digest: sha256(img.layers[1]), size: img.layers[1].length }, streamOf(img.layers[1]), { upload: 'monolithic' }), 'uploaded')
  t.deepEqual((await logSince(mark)).filter((r) => r.method !== 'HEAD').map((r) => `${r.method} ${r.status}`), ['POST 202', 'PUT 201'])
  t.is(await c.pushBlob(repo, { digest: sha256(img.config), size: img.config.length }, img.config), 'uploaded')
  // Present now: HEAD only.
  mark = (await reg.requests()).length
  t.is(await c.pushBlob(repo, { digest: sha256(img.config), size: img.config.length }, img.config), 'present')
  t.deepEqual((await logSince(mark)).map((r) => r.method), ['HEAD'])

  t.is(await c.putManifest(repo, 'v1', img.manifest, MediaType.ociManifest), img.digest)
  t.is(await reg.crane(['manifest', `${reg.host}/${repo}:v1`]), img.manifest.toString('utf8'), 'crane reads our bytes')
  t.is((await reg.crane(['digest', `${reg.host}/${repo}:v1`])).trim(), img.digest)
  await reg.crane(['validate', '--remote', `${reg.host}/${repo}:v1`])
  t.pass('crane validate --remote accepted the image')
  // A blob whose bytes do not match its digest is refused by the registry: ERR_DIGEST.
  const liar = randomBytes(5000)
  await expectCode(t, c.pushBlob(repo, { digest: sha256(randomBytes(5000)), size: liar.length }, liar, { upload: 'monolithic' }), 'ERR_DIGEST')

  await c.putManifest(repo, 'v2', img.manifest, MediaType.ociManifest)
  t.deepEqual((await c.listTags(repo)).sort(), ['v1', 'v2'])
  t.deepEqual((await c.listTags(repo)).sort(), (await reg.crane(['ls', `${reg.host}/${repo}`])).trim().split('\n').sort(), 'crane ls agrees')
})

registryTest('push: the same blob to a second repository is mounted, not uploaded', async (t) => {
  const reg = await started(t, 'token')
  const c = client(reg)
  const blob = layerTar()
  const desc = { digest: sha256(blob), size: blob.length }
  t.is(await c.pushBlob('mount/a', desc, blob), 'uploaded')
  const mark = (await reg.requests()).length
  t.is(await c.pushBlob('mount/b', desc, blob, { mountFrom: 'mount/a' }), 'mounted')
  const after = (await reg.requests()).slice(mark)
  t.deepEqual(after.map((r) => `${r.method} ${r.status}`).filter((s) => !s.endsWith(' 401')), ['HEAD 404', 'POST 201'])
  t.true(after.some((r) => r.method === 'POST' && r.uri.includes(`mount=${encodeURIComponent(desc.digest)}`) && r.uri.includes('from=mount%2Fa')))
  t.false(after.some((r) => r.method === 'PATCH' || r.method === 'PUT'), 'no bytes sent')
  t.deepEqual(await c.headBlob('mount/b', desc.digest), { size: desc.size })
  // From a repository that lacks it: the registry opens an upload instead (202), and we upload.
  const other = layerTar()
  t.false(await c.mountBlob('mount/c', sha256(other), 'mount/a'))
  t.is(await c.pushBlob('mount/c', { digest: sha256(other), size: other.length }, other, { mountFrom: 'mount/a' }), 'uploaded')
  t.is((await drain(await c.getBlob('mount/c', sha256(other)))).digest, sha256(other))
})

registryTest('push: a source stream that fails after some chunks were sent cancels the upload (DELETE), chunked or monolithic; no blob is left', async (t) => {
  const reg = await started(t)
  const c = client(reg)
  const blob = randomBytes(200_000)
  const desc = { digest: sha256(blob), size: blob.length }
  // What a copy's source does on a mismatch: its bytes, then ERR_DIGEST at the end.
  const failing = () =>
    Readable.from(
      (async function* () {
        yield blob.subarray(0, 150_000)
        throw new BtrfsError('ERR_DIGEST', 'ERR_DIGEST: the source served other bytes')
      })(),
    )
  for (const upload of ['chunked', 'monolithic'] as const) {
    const repo = `cancel/${upload}`
    const mark = (await reg.requests()).length
    await expectCode(t, c.pushBlob(repo, desc, failing, { upload, chunkSize: 64 * 1024 }), 'ERR_DIGEST')
    const log = (await reg.requests()).slice(mark)
    if (upload === 'chunked') t.is(log.filter((r) => r.method === 'PATCH' && r.status === 202).length, 2, 'two chunks were sent')
    t.true(log.some((r) => r.method === 'DELETE' && r.uri.includes('/blobs/uploads/')), `${upload}: the upload was cancelled`)
    t.false(log.some((r) => r.method === 'PUT' && r.status === 201), `${upload}: never completed`)
    t.is(await c.headBlob(repo, desc.digest), undefined)
  }
})

registryTest('an aborted call rejects with ABORT_ERR', async (t) => {
  const reg = await started(t)
  await cranePush(reg, 'abort/app:v1', { layers: 1 })
  const c = client(reg)
  const ac = new AbortController()
  ac.abort()
  await expectCode(t, c.getManifest('abort/app', 'v1', { signal: ac.signal }), 'ABORT_ERR')
  // In the middle of a blob: the stream errors.
  const m = await c.getManifest('abort/app', 'v1')
  if (m.parsed.kind !== 'manifest') return t.fail('not an image manifest')
  const ac2 = new AbortController()
  const s = await c.getBlob('abort/app', m.parsed.layers[0].digest, { signal: ac2.signal })
  ac2.abort()
  const e = await t.throwsAsync(drain(s))
  t.true(e?.name === 'AbortError' || (e as BtrfsError).code === 'ABORT_ERR', `${e?.name} ${e?.message}`)
})

registryTest('push: a registry that refuses chunks gets the blob in one PUT (monolithic fallback)', async (t) => {
  const reg = await started(t, 'htpasswd')
  const proxy = await startFaultProxy(reg.url, (req) => (req.method === 'PATCH' ? { status: 405 } : 'pass'))
  t.teardown(() => proxy.stop())
  const c = client(reg, {}, proxy.host)
  const blob = layerTar()
  let opened = 0
  const source = () => (opened++, Readable.from([blob]))
  t.is(await c.pushBlob('fallback/app', { digest: sha256(blob), size: blob.length }, source, { chunkSize: 64 * 1024 }), 'uploaded')
  t.is(opened, 2, 'the source was opened again for the fallback')
  t.deepEqual(
    proxy.requests.map((r) => `${r.method} ${r.action}`).filter((s) => !s.startsWith('HEAD')),
    ['POST pass', 'PATCH {"status":405}', 'DELETE pass', 'POST pass', 'PUT pass'],
  )
  t.is((await drain(await c.getBlob('fallback/app', sha256(blob)))).digest, sha256(blob))
  // Forced chunked: the refusal is an error.
  const other = layerTar()
  await expectCode(t, c.pushBlob('fallback/app', { digest: sha256(other), size: other.length }, other, { upload: 'chunked' }), 'ERR_REGISTRY')
})
