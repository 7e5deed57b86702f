// Plain unit tests of the registry client's parsing (no registry, no btrfs): references,
// WWW-Authenticate challenges, scopes, Docker config.json credentials, platform selection.
import test from 'ava'
import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { dockerConfigCredentials, mergeScopes, parseChallenges } from '../ts/image/auth'
import { hostPlatform, MediaType, parsePlatform, selectPlatform, type Descriptor } from '../ts/image/manifest'
import { formatReference, isLoopbackHost, parseReference } from '../ts/image/reference'
import { BtrfsError } from '../ts/errors'

const D = (c: string) => `sha256:${c.repeat(64)}`

test('Docker Hub names are normalized as Docker does', (t) => {
  const cases: [string, string, string][] = [
    ['alpine', 'docker.io/library/alpine:latest', 'registry-1.docker.io'],
    ['alpine:3.20', 'docker.io/library/alpine:3.20', 'registry-1.docker.io'],
    ['library/alpine', 'docker.io/library/alpine:latest', 'registry-1.docker.io'],
    ['user/app:v1', 'docker.io/user/app:v1', 'registry-1.docker.io'],
    ['docker.io/alpine', 'docker.io/library/alpine:latest', 'registry-1.docker.io'],
    ['index.docker.io/user/app', 'docker.io/user/app:latest', 'registry-1.docker.io'],
    ['localhost/app', 'localhost/app:latest', 'localhost'],
    ['localhost:5000/a/b:tag', 'localhost:5000/a/b:tag', 'localhost:5000'],
    ['ghcr.io/o/r/deep/name:1.0-rc_1', 'ghcr.io/o/r/deep/name:1.0-rc_1', 'ghcr.io'],
    ['[::1]:5000/x:y', '[::1]:5000/x:y', '[::1]:5000'],
    ['a__b/c.d-e', 'docker.io/a__b/c.d-e:latest', 'registry-1.docker.io'],
    // An upper-case first component is a host name, as in Docker.
    ['Example/app', 'Example/app:latest', 'Example'],
  ]
  for (const [input, canonical, host] of cases) {
    const ref = parseReference(input)
    t.is(formatReference(ref), canonical, input)
    t.is(ref.host, host, input)
  }
  const hub = parseReference('alpine')
  t.deepEqual(hub, { registry: 'docker.io', host: 'registry-1.docker.io', repository: 'library/alpine', tag: 'latest' })
})

test('digests: alone, and with a tag', (t) => {
  const d = D('a')
  t.deepEqual(parseReference(`127.0.0.1:5000/x@${d}`), { registry: '127.0.0.1:5000', host: '127.0.0.1:5000', repository: 'x', digest: d })
  const both = parseReference(`localhost:5000/a/b:v1@${d}`)
  t.is(both.tag, 'v1')
  t.is(both.digest, d)
  t.is(formatReference(both), `localhost:5000/a/b:v1@${d}`)
})

test('bad references are EINVAL', (t) => {
  const bad = [
    '',
    'a/UPPER',
    'docker.io/Upper',
    'a//b',
    'a/b/',
    '/a',
    'a:',
    'a:-tag',
    `a:${'t'.repeat(129)}`,
    'a@sha256:abc',
    `a@sha256:${'A'.repeat(64)}`,
    `a@sha512:${'a'.repeat(128)}`,
    'a b',
    'host:port:x/a',
    '-host.com/a',
    `x.io/${'a'.repeat(256)}`,
    'a/b@',
    'a..b',
  ]
  for (const input of bad) {
    const e = t.throws(() => parseReference(input), undefined, JSON.stringify(input))
    t.true(e instanceof BtrfsError, JSON.stringify(input))
    t.is((e as BtrfsError).code, 'EINVAL', JSON.stringify(input))
  }
  const typed = t.throws(() => parseReference(42 as unknown as string))
  t.is((typed as NodeJS.ErrnoException).code, 'ERR_INVALID_ARG_TYPE')
})

test('loopback hosts', (t) => {
  for (const h of ['localhost', 'localhost:5000', '127.0.0.1', '127.0.0.1:1', '[::1]', '[::1]:5000']) t.true(isLoopbackHost(h), h)
  for (const h of ['localhost.example.com', '127.0.0.2', 'example.com', '[::2]:5000', 'registry-1.docker.io']) t.false(isLoopbackHost(h), h)
})

test('WWW-Authenticate: bearer with quoted commas, several challenges, odd spacing', (t) => {
  t.deepEqual(
    parseChallenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push"'),
    [
      {
        scheme: 'bearer',
        params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull,push' },
      },
    ],
  )
  t.deepEqual(parseChallenges('Basic realm="a, \\"quoted\\" realm", Bearer realm=http://x/t , service = svc,error="invalid_token"'), [
    { scheme: 'basic', params: { realm: 'a, "quoted" realm' } },
    { scheme: 'bearer', params: { realm: 'http://x/t', service: 'svc', error: 'invalid_token' } },
  ])
  t.deepEqual(parseChallenges('Negotiate abc123==, Basic realm="r"'), [
    { scheme: 'negotiate', params: {} },
    { scheme: 'basic', params: { realm: 'r' } },
  ])
  t.deepEqual(parseChallenges(''), [])
  t.deepEqual(parseChallenges('BEARER REALM="x"'), [{ scheme: 'bearer', params: { realm: 'x' } }])
})

test('scopes merge per resource', (t) => {
  t.deepEqual(mergeScopes(['repository:a/b:pull', 'repository:a/b:push', 'repository:c:pull', 'repository:a/b:pull']), [
    'repository:a/b:pull,push',
    'repository:c:pull',
  ])
})

test('credentials from a Docker config.json', async (t) => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'btrfs-layers-dockercfg-'))
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }))
  const auth = (s: string) => Buffer.from(s).toString('base64')
  await fsp.writeFile(
    path.join(dir, 'config.json'),
    JSON.stringify({
      auths: {
        'https://index.docker.io/v1/': { auth: auth('hubuser:hub:pass') },
        'localhost:5000': { username: 'u', password: 'p' },
        'https://ghcr.io': { identitytoken: 'refresh-me', auth: auth('tokenuser:') },
        'http://reg.example/v2/': { registrytoken: 'bearer-me' },
        'empty.example': {},
      },
    }),
  )
  t.deepEqual(dockerConfigCredentials('docker.io', dir), { username: 'hubuser', password: 'hub:pass' })
  t.deepEqual(dockerConfigCredentials('localhost:5000', dir), { username: 'u', password: 'p' })
  t.deepEqual(dockerConfigCredentials('ghcr.io', dir), { identityToken: 'refresh-me', username: 'tokenuser' })
  t.deepEqual(dockerConfigCredentials('reg.example', dir), { token: 'bearer-me' })
  t.is(dockerConfigCredentials('empty.example', dir), undefined)
  t.is(dockerConfigCredentials('other.example', dir), undefined)
  t.is(dockerConfigCredentials('localhost:5000', path.join(dir, 'missing')), undefined)
  // DOCKER_CONFIG is where it looks without a directory.
  const saved = process.env.DOCKER_CONFIG
  process.env.DOCKER_CONFIG = dir
  t.teardown(() => (saved === undefined ? delete process.env.DOCKER_CONFIG : (process.env.DOCKER_CONFIG = saved)))
  t.deepEqual(dockerConfigCredentials('localhost:5000'), { username: 'u', password: 'p' })
  // A broken file is an auth error that does not quote the file.
  await fsp.writeFile(path.join(dir, 'config.json'), '{"auths": {"x": {"auth": "c2VjcmV0"}')
  const e = t.throws(() => dockerConfigCredentials('x', dir))
  t.is((e as BtrfsError).code, 'ERR_REGISTRY_AUTH')
  t.false(e?.message.includes('c2VjcmV0'))
})

test('platform selection from an index', (t) => {
  const entry = (c: string, platform: Descriptor['platform']): Descriptor => ({ mediaType: MediaType.ociManifest, digest: D(c), size: 1, platform })
  const index = [
    entry('1', { os: 'linux', architecture: 'amd64' }),
    entry('2', { os: 'linux', architecture: 'amd64', variant: 'v3' }),
    entry('3', { os: 'linux', architecture: 'arm64' }),
    entry('4', { os: 'linux', architecture: 'arm', variant: 'v6' }),
    entry('5', { os: 'linux', architecture: 'arm', variant: 'v7' }),
    entry('6', { os: 'windows', architecture: 'amd64' }),
    { mediaType: MediaType.ociManifest, digest: D('7'), size: 1, platform: { os: 'unknown', architecture: 'unknown' } },
  ]
  t.is(selectPlatform(index, parsePlatform('linux/amd64')).digest, D('1'))
  t.is(selectPlatform(index, parsePlatform('linux/amd64/v3')).digest, D('2'))
  t.is(selectPlatform(index, parsePlatform('linux/arm64/v8')).digest, D('3'), 'arm64 without a variant is v8')
  t.is(selectPlatform(index, parsePlatform('linux/arm64')).digest, D('3'))
  t.is(selectPlatform(index, parsePlatform('linux/arm/v7')).digest, D('5'))
  t.is(selectPlatform(index, parsePlatform('windows/amd64')).digest, D('6'))
  const e = t.throws(() => selectPlatform(index, parsePlatform('linux/s390x')))
  t.is((e as BtrfsError).code, 'ENOENT')
  t.regex(e?.message ?? '', /linux\/amd64, linux\/amd64\/v3, linux\/arm64/)
  const noV5 = t.throws(() => selectPlatform(index, parsePlatform('linux/arm/v5')))
  t.is((noV5 as BtrfsError).code, 'ENOENT')
  t.is((t.throws(() => parsePlatform('linux')) as BtrfsError).code, 'EINVAL')
  // This machine, in OCI's names.
  const host = hostPlatform()
  t.is(host.os, process.platform === 'win32' ? 'windows' : process.platform)
  const expected: Record<string, string> = { x64: 'amd64', arm64: 'arm64', ia32: '386' }
  if (process.arch in expected) t.is(host.architecture, expected[process.arch])
  if (process.arch === 'arm64') t.is(host.variant, 'v8')
})
