/**
 * Test harness for the image code: a real OCI registry (distribution's `registry`, pinned, from
 * scripts/test-tools.sh) on 127.0.0.1 on a free port, with filesystem storage in a temp dir, in
 * three auth modes (none, htpasswd, token with a token server here), `crane` as the independent
 * client, and a fault-injecting proxy and a second host for the retry and redirect tests.
 * Never a mock registry.
 *
 *   import test from 'ava'
 *   import { useRegistryTools, startRegistry } from './helpers/registry'
 *   const { registryTest } = useRegistryTools(test)
 *   registryTest('pulls', async (t) => {
 *     const reg = await startRegistry({ auth: 'token' })
 *     t.teardown(reg.stop)
 *     await reg.crane(['append', '-f', tarball, '-t', `${reg.host}/a/b:v1`])
 *   })
 *
 * Gating: without the programs (run `bash scripts/test-tools.sh`), the tests are SKIPPED with a
 * loud message, unless BTRFS_LAYERS_REQUIRE_BTRFS=1 (as in CI), when they FAIL.
 */
import type { ExecutionContext, TestFn } from 'ava'
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as http from 'node:http'
import type { AddressInfo } from 'node:net'
import * as os from 'node:os'
import * as path from 'node:path'

const REQUIRE_ENV = 'BTRFS_LAYERS_REQUIRE_BTRFS'

/** Where scripts/test-tools.sh installs: `BTRFS_LAYERS_TOOLS_BIN`, else its default. */
export const TOOLS_BIN =
  process.env.BTRFS_LAYERS_TOOLS_BIN ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'btrfs-layers-ci', 'bin')

export type RegistryTool = 'registry' | 'crane' | 'btrfs-layers-bcrypt'
const TOOLS: readonly RegistryTool[] = ['registry', 'crane', 'btrfs-layers-bcrypt']

/** The path of `tool`: in TOOLS_BIN, else on PATH; undefined when neither has it. */
export function toolPath(tool: RegistryTool): string | undefined {
  const dirs = [TOOLS_BIN, ...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean)]
  for (const dir of dirs) {
    const p = path.join(dir, tool)
    try {
      fs.accessSync(p, fs.constants.X_OK)
      return p
    } catch {
      continue
    }
  }
  return undefined
}

let warned = false

export interface RegistryTests {
  /** A test that needs the registry tools: skipped loudly, or failing, without them. */
  registryTest: ((title: string, impl: (t: ExecutionContext) => Promise<void>) => void) & {
    serial(title: string, impl: (t: ExecutionContext) => Promise<void>): void
  }
  available: boolean
}

/** Gate a file's registry tests on the tools, like `useBtrfs` gates on btrfs. */
export function useRegistryTools(test: TestFn): RegistryTests {
  const missing = TOOLS.filter((t) => toolPath(t) === undefined)
  const required = process.env[REQUIRE_ENV] === '1'
  if (missing.length > 0 && !warned) {
    warned = true
    const bar = '!'.repeat(100)
    console.error(
      [
        '',
        bar,
        `!!! btrfs-layers: REGISTRY TESTS NEED PROGRAMS THAT ARE NOT INSTALLED${test.meta?.file ? ` (${path.basename(test.meta.file)})` : ''}: ${missing.join(', ')}`,
        `!!! Looked in ${TOOLS_BIN} (BTRFS_LAYERS_TOOLS_BIN) and on PATH. Install them: bash scripts/test-tools.sh`,
        `!!! ${required ? `${REQUIRE_ENV}=1 is set, so these tests FAIL.` : `These tests are SKIPPED. Set ${REQUIRE_ENV}=1 to make this a failure.`}`,
        bar,
        '',
      ].join('\n'),
    )
  }
  const register = (fn: TestFn | TestFn['serial'], title: string, impl: (t: ExecutionContext) => Promise<void>) => {
    if (missing.length === 0) fn(title, impl)
    else if (required) fn(title, (t) => t.fail(`${missing.join(', ')} not installed and ${REQUIRE_ENV}=1 (bash scripts/test-tools.sh): ${title}`))
    else fn.skip(title, () => {})
  }
  const registryTest = ((title: string, impl: (t: ExecutionContext) => Promise<void>) => register(test, title, impl)) as RegistryTests['registryTest']
  registryTest.serial = (title, impl) => register(test.serial, title, impl)
  return { registryTest, available: missing.length === 0 }
}

// ---------------------------------------------------------------------------------------------
// Running programs
// ---------------------------------------------------------------------------------------------

/** Run a program; resolve with its stdout (a Buffer), reject with its stderr in the message. */
export function runTool(file: string, args: readonly string[], o: { env?: NodeJS.ProcessEnv; input?: Buffer | string } = {}): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { env: o.env ?? process.env, encoding: 'buffer', maxBuffer: 256 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${path.basename(file)} ${args.join(' ')}: ${err.message}\n${stderr.toString()}`))
      else resolve(stdout)
    })
    // A program that exits without reading its input (crane, mostly) closes the pipe first: EPIPE, not a failure.
    child.stdin?.on('error', () => undefined)
    child.stdin?.end(o.input ?? '')
  })
}

function need(tool: RegistryTool): string {
  const p = toolPath(tool)
  if (!p) throw new Error(`${tool} is not installed (bash scripts/test-tools.sh)`)
  return p
}

// ---------------------------------------------------------------------------------------------
// Docker config.json
// ---------------------------------------------------------------------------------------------

export type ConfigAuth = { username: string; password: string } | { identitytoken: string; username?: string } | { auth: string }

/** A fresh directory holding a Docker `config.json` with `auths` for `host`; for DOCKER_CONFIG. */
export async function writeDockerConfig(host: string, entry: ConfigAuth | Record<string, unknown>): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'btrfs-layers-docker-config-'))
  const e: Record<string, unknown> = { ...entry }
  // crane reads `auth`, so write it beside username and password.
  if ('username' in e && 'password' in e) e.auth = Buffer.from(`${e.username}:${e.password}`).toString('base64')
  await fsp.writeFile(path.join(dir, 'config.json'), JSON.stringify({ auths: { [host]: e } }, null, 2))
  return dir
}

// ---------------------------------------------------------------------------------------------
// The token server (distribution's token spec: GET with basic auth, POST for refresh tokens)
// ---------------------------------------------------------------------------------------------

export interface TokenServer {
  url: string
  service: string
  issuer: string
  /** The JWKS the registry trusts (the public half of the signing key). */
  jwks: { keys: Record<string, unknown>[] }
  /** Each token request: who asked (undefined: anonymous) and for which scopes. */
  requests: { method: string; user?: string; scopes: string[]; refused: boolean }[]
  /** Identity (refresh) tokens the POST flow accepts, and whose they are. */
  identityTokens: Map<string, string>
  stop(): Promise<void>
}

function base64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url')
}

function signJwt(key: KeyObject, kid: string, claims: Record<string, unknown>): string {
  const head = base64url(JSON.stringify({ alg: 'ES256', typ: 'JWT', kid }))
  const body = base64url(JSON.stringify(claims))
  const signature = sign('sha256', Buffer.from(`${head}.${body}`), { key, dsaEncoding: 'ieee-p1363' })
  return `${head}.${body}.${base64url(signature)}`
}

function parseScope(scope: string): { type: string; name: string; actions: string[] } | undefined {
  const first = scope.indexOf(':')
  const last = scope.lastIndexOf(':')
  if (first <= 0 || last <= first) return undefined
  return { type: scope.slice(0, first), name: scope.slice(first + 1, last), actions: scope.slice(last + 1).split(',').filter(Boolean) }
}

async function listen(server: http.Server, host = '127.0.0.1', port = 0): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  return (server.address() as AddressInfo).port
}

/**
 * Serve `handler` on `localhost` (127.0.0.1 and, where there is one, ::1, on one port): a host
 * name, not an IP literal, and another origin than the registry's 127.0.0.1.
 */
async function listenLocalhost(handler: http.RequestListener): Promise<{ port: number; stop(): Promise<void> }> {
  const v4 = http.createServer(handler)
  const port = await listen(v4, '127.0.0.1')
  const v6 = http.createServer(handler)
  const hasV6 = await listen(v6, '::1', port).then(
    () => true,
    () => false,
  )
  return {
    port,
    stop: async () => {
      await close(v4)
      if (hasV6) await close(v6)
    },
  }
}

function close(server: http.Server): Promise<void> {
  server.closeAllConnections()
  return new Promise((resolve) => server.close(() => resolve()))
}

async function readBody(req: http.IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of req) chunks.push(c as Buffer)
  return Buffer.concat(chunks)
}

/**
 * A token server granting `users` whatever they ask for, and anonymous callers nothing. It is
 * at `http://localhost:PORT/token`: crane refuses a realm that is an IP literal of a private
 * or loopback range (unless it is the registry's own host:port).
 */
export async function startTokenServer(users: readonly { username: string; password: string }[]): Promise<TokenServer> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const kid = randomBytes(8).toString('hex')
  const service = 'btrfs-layers-test-registry'
  const issuer = 'btrfs-layers-test-token-server'
  const requests: TokenServer['requests'] = []
  const identityTokens = new Map<string, string>()
  const server = await listenLocalhost(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://token')
    let user: string | undefined
    let scopes: string[]
    let refused = false
    if (req.method === 'POST') {
      const form = new URLSearchParams((await readBody(req)).toString('utf8'))
      scopes = (form.get('scope') ?? '').split(' ').filter(Boolean)
      if (form.get('grant_type') === 'refresh_token') {
        user = identityTokens.get(form.get('refresh_token') ?? '')
        refused = user === undefined
      } else if (form.get('grant_type') === 'password') {
        const u = users.find((x) => x.username === form.get('username') && x.password === form.get('password'))
        user = u?.username
        refused = !u
      } else refused = true
    } else {
      scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean)
      const auth = req.headers.authorization
      if (auth) {
        const m = /^Basic (.+)$/i.exec(auth)
        const decoded = m ? Buffer.from(m[1], 'base64').toString('utf8') : ''
        const colon = decoded.indexOf(':')
        const u = users.find((x) => colon > 0 && x.username === decoded.slice(0, colon) && x.password === decoded.slice(colon + 1))
        user = u?.username
        refused = !u
      }
    }
    requests.push({ method: req.method ?? '', user, scopes, refused })
    if (refused) {
      res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Basic realm="btrfs-layers-test-token-server"' })
      res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] }))
      return
    }
    const now = Math.floor(Date.now() / 1000)
    const access = user
      ? scopes.map(parseScope).filter((s): s is NonNullable<typeof s> => s !== undefined)
      : []
    const token = signJwt(privateKey, kid, {
      iss: issuer,
      sub: user ?? '',
      aud: service,
      exp: now + 300,
      nbf: now - 10,
      iat: now,
      jti: randomBytes(8).toString('hex'),
      access,
    })
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ token, access_token: token, expires_in: 300, issued_at: new Date(now * 1000).toISOString() }))
  })
  const jwk = publicKey.export({ format: 'jwk' }) as Record<string, unknown>
  return {
    url: `http://localhost:${server.port}/token`,
    service,
    issuer,
    jwks: { keys: [{ ...jwk, kid, alg: 'ES256', use: 'sig' }] },
    requests,
    identityTokens,
    stop: () => server.stop(),
  }
}

// ---------------------------------------------------------------------------------------------
// The registry
// ---------------------------------------------------------------------------------------------

export type AuthMode = 'none' | 'htpasswd' | 'token'

export interface RegistryOptions {
  auth?: AuthMode
  /** Users of the htpasswd and token modes; one random user by default. */
  users?: { username: string; password: string }[]
}

/** One request as the registry logged it ("response completed"). */
export interface LoggedRequest {
  method: string
  /** The request URI: path and query. */
  uri: string
  status: number
}

export interface TestRegistry {
  /** `http://127.0.0.1:PORT`. */
  url: string
  /** `127.0.0.1:PORT`, the registry part of references. */
  host: string
  auth: AuthMode
  /** The first user (htpasswd and token modes). */
  user?: { username: string; password: string }
  tokenServer?: TokenServer
  /** The registry's storage root (filesystem driver). */
  storage: string
  /** The file that holds a blob's bytes in the storage. */
  blobPath(digest: string): string
  /** The registry's log lines so far (JSON), up to a request made now (see `sync`). */
  logs(): Promise<string[]>
  /** The requests the registry answered so far, from its log. */
  requests(): Promise<LoggedRequest[]>
  /** How many blob GETs the registry answered (with content or a redirect), for a repository or all. */
  blobGets(repository?: string): Promise<number>
  /**
   * Wait until the log has caught up with every request answered so far: the registry logs a
   * request before it answers it, into one pipe, so once the line of a marker request sent now
   * is read, so are the lines of every request answered before it.
   */
  sync(): Promise<void>
  /** A DOCKER_CONFIG directory with the first user's credentials for this registry (made once). */
  dockerConfig(): Promise<string>
  /** Run crane against this registry, as the first user (DOCKER_CONFIG) unless `anonymous`. */
  crane(args: readonly string[], o?: { anonymous?: boolean; input?: Buffer }): Promise<string>
  stop(): Promise<void>
}

interface LogLine {
  msg?: string
  'http.request.method'?: string
  'http.request.uri'?: string
  'http.response.status'?: number
}

/** Start a registry on 127.0.0.1 on a free port; stop it with `stop()` (t.teardown). */
export async function startRegistry(o: RegistryOptions = {}): Promise<TestRegistry> {
  const auth = o.auth ?? 'none'
  const users = o.users ?? [{ username: 'tester', password: randomBytes(12).toString('hex') }]
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'btrfs-layers-registry-'))
  const storage = path.join(dir, 'storage')
  await fsp.mkdir(storage)
  let tokenServer: TokenServer | undefined
  let authConfig: Record<string, unknown> | undefined
  if (auth === 'htpasswd') {
    const lines: string[] = []
    for (const u of users) lines.push((await runTool(need('btrfs-layers-bcrypt'), [u.username], { input: u.password })).toString('utf8').trim())
    await fsp.writeFile(path.join(dir, 'htpasswd'), `${lines.join('\n')}\n`)
    authConfig = { htpasswd: { realm: 'btrfs-layers-test', path: path.join(dir, 'htpasswd') } }
  } else if (auth === 'token') {
    tokenServer = await startTokenServer(users)
    await fsp.writeFile(path.join(dir, 'jwks.json'), JSON.stringify(tokenServer.jwks))
    authConfig = {
      token: { realm: tokenServer.url, service: tokenServer.service, issuer: tokenServer.issuer, jwks: path.join(dir, 'jwks.json') },
    }
  }
  // JSON is YAML: the registry reads this as its config.yml.
  const config = {
    version: '0.1',
    log: { level: 'info', formatter: 'json', accesslog: { disabled: true } },
    storage: { filesystem: { rootdirectory: storage }, delete: { enabled: true }, maintenance: { uploadpurging: { enabled: false } } },
    http: { addr: '127.0.0.1:0', secret: randomBytes(16).toString('hex') },
    ...(authConfig ? { auth: authConfig } : {}),
  }
  await fsp.writeFile(path.join(dir, 'config.yml'), JSON.stringify(config, null, 2))

  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: dir, OTEL_SDK_DISABLED: 'true', OTEL_TRACES_EXPORTER: 'none' }
  const child: ChildProcess = spawn(need('registry'), ['serve', path.join(dir, 'config.yml')], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: string[] = []
  const waiters = new Map<string, () => void>()
  let partial = ''
  const onData = (chunk: Buffer) => {
    const text = partial + chunk.toString('utf8')
    const parts = text.split('\n')
    partial = parts.pop() ?? ''
    for (const line of parts.filter(Boolean)) {
      lines.push(line)
      for (const [marker, wake] of waiters) if (line.includes(marker)) wake()
    }
  }
  child.stdout?.on('data', onData)
  child.stderr?.on('data', onData)
  let exited = false
  const exit = new Promise<void>((resolve) => child.once('exit', () => ((exited = true), resolve())))

  const stopAll = async () => {
    if (!exited) {
      child.kill('SIGTERM')
      const killer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exit
      clearTimeout(killer)
    }
    await tokenServer?.stop()
    await fsp.rm(dir, { recursive: true, force: true })
  }

  // Ready when it logs "listening on 127.0.0.1:PORT" (port 0: the kernel picked it).
  let port: number | undefined
  for (let i = 0; i < 400 && port === undefined; i++) {
    for (const l of lines) {
      const m = /listening on 127\.0\.0\.1:([0-9]+)/.exec(l)
      if (m) port = Number(m[1])
    }
    if (port === undefined) {
      if (exited) break
      await new Promise((r) => setTimeout(r, 25))
    }
  }
  if (port === undefined) {
    await stopAll()
    throw new Error(`the registry did not start:\n${lines.join('\n')}`)
  }
  const host = `127.0.0.1:${port}`
  const user = auth === 'none' ? undefined : users[0]

  const parsed = (): LogLine[] =>
    lines.flatMap((l) => {
      try {
        return [JSON.parse(l) as LogLine]
      } catch {
        return []
      }
    })
  const sync = async () => {
    const marker = `sync-${randomBytes(8).toString('hex')}`
    const seen = new Promise<void>((resolve) => waiters.set(marker, resolve))
    const res = await fetch(`http://${host}/v2/${marker}/tags/list`)
    await res.body?.cancel()
    await seen
    waiters.delete(marker)
  }
  const requests = async (): Promise<LoggedRequest[]> => {
    await sync()
    return parsed()
      .filter((l) => l.msg?.startsWith('response completed') && l['http.request.method'])
      .map((l) => ({ method: l['http.request.method'] as string, uri: l['http.request.uri'] ?? '', status: Number(l['http.response.status'] ?? 0) }))
      .filter((r) => !r.uri.startsWith('/v2/sync-'))
  }
  let configDir: string | undefined
  const dockerConfig = async () => {
    if (!user) throw new Error('this registry has no users (auth: none)')
    configDir ??= await writeDockerConfig(host, user)
    return configDir
  }
  const emptyConfig = await writeDockerConfig('nowhere.invalid', {})
  return {
    url: `http://${host}`,
    host,
    auth,
    ...(user ? { user } : {}),
    ...(tokenServer ? { tokenServer } : {}),
    storage,
    blobPath: (digest) => {
      const hex = digest.replace(/^sha256:/, '')
      return path.join(storage, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data')
    },
    logs: async () => {
      await sync()
      return [...lines]
    },
    requests,
    sync,
    blobGets: async (repository) =>
      (await requests()).filter(
        (r) =>
          r.method === 'GET' &&
          (r.status === 200 || r.status === 206 || r.status === 307) &&
          /^\/v2\/.+\/blobs\/sha256:[0-9a-f]{64}$/.test(r.uri) &&
          (repository === undefined || r.uri.startsWith(`/v2/${repository}/blobs/`)),
      ).length,
    dockerConfig,
    crane: async (args, co = {}) => {
      const DOCKER_CONFIG = co.anonymous || !user ? emptyConfig : await dockerConfig()
      const out = await runTool(need('crane'), args, { env: { PATH: process.env.PATH, HOME: dir, DOCKER_CONFIG }, input: co.input })
      return out.toString('utf8')
    },
    stop: async () => {
      await stopAll()
      await fsp.rm(emptyConfig, { recursive: true, force: true })
      if (configDir) await fsp.rm(configDir, { recursive: true, force: true })
    },
  }
}

// ---------------------------------------------------------------------------------------------
// Faults: a proxy in front of the registry, and a second host for redirects
// ---------------------------------------------------------------------------------------------

/** What the proxy does with one request. */
export type FaultAction =
  | 'pass'
  /** Close the connection without an answer. */
  | 'reset'
  /** Answer this status with an empty body. */
  | { status: number; headers?: Record<string, string> }
  /** Answer 307 with this Location. */
  | { redirect: string }
  /** Pass, but cut the connection after this many bytes of the response body. */
  | { cutAfter: number }

export interface ProxiedRequest {
  method: string
  url: string
  /** The Authorization header the client sent, if any. */
  authorization?: string
  /** The Range header, if any. */
  range?: string
  action: string
}

export interface FaultProxy {
  url: string
  host: string
  requests: ProxiedRequest[]
  stop(): Promise<void>
}

/**
 * An HTTP proxy on 127.0.0.1 in front of `target` (`http://127.0.0.1:PORT`) that asks
 * `decide(req, n)` (n: how many requests came before) what to do with each request.
 */
export async function startFaultProxy(target: string, decide: (req: http.IncomingMessage, n: number) => FaultAction): Promise<FaultProxy> {
  const requests: ProxiedRequest[] = []
  const t = new URL(target)
  const server = http.createServer((req, res) => {
    const action = decide(req, requests.length)
    requests.push({
      method: req.method ?? '',
      url: req.url ?? '',
      ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
      ...(req.headers.range ? { range: req.headers.range } : {}),
      action: typeof action === 'string' ? action : JSON.stringify(action),
    })
    if (action === 'reset') {
      req.socket.destroy()
      return
    }
    if (typeof action === 'object' && 'status' in action) {
      req.resume()
      res.writeHead(action.status, { 'content-length': '0', ...action.headers })
      res.end()
      return
    }
    if (typeof action === 'object' && 'redirect' in action) {
      req.resume()
      res.writeHead(307, { location: action.redirect, 'content-length': '0' })
      res.end()
      return
    }
    const cutAfter = typeof action === 'object' && 'cutAfter' in action ? action.cutAfter : undefined
    const upstream = http.request(
      { host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers)
        if (cutAfter === undefined) {
          up.pipe(res)
          return
        }
        let sent = 0
        up.on('data', (chunk: Buffer) => {
          if (sent >= cutAfter) return
          const part = chunk.subarray(0, cutAfter - sent)
          sent += part.length
          res.write(part)
          if (sent >= cutAfter) {
            up.destroy()
            // Let the bytes written so far reach the client, then drop the connection.
            res.socket?.end(() => res.socket?.destroy())
          }
        })
        up.on('end', () => res.end())
      },
    )
    upstream.on('error', () => res.destroy())
    req.pipe(upstream)
  })
  const port = await listen(server)
  return { url: `http://127.0.0.1:${port}`, host: `127.0.0.1:${port}`, requests, stop: () => close(server) }
}

export interface BlobHost {
  /** `http://localhost:PORT`: another host name than the registry's 127.0.0.1. */
  url: string
  /** Each request, with the Authorization header it carried (which must be none). */
  requests: { method: string; url: string; authorization?: string }[]
  stop(): Promise<void>
}

/**
 * A "blob storage" host: serves `/blobs/sha256:<hex>` from the registry's storage directory,
 * on `localhost` (127.0.0.1 and, where there is one, ::1), so that a redirect to it goes to
 * another origin than the registry's.
 */
export async function startBlobHost(registry: Pick<TestRegistry, 'blobPath'>): Promise<BlobHost> {
  const requests: BlobHost['requests'] = []
  const handler: http.RequestListener = (req, res) => {
    requests.push({
      method: req.method ?? '',
      url: req.url ?? '',
      ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
    })
    const m = /^\/blobs\/(sha256:[0-9a-f]{64})$/.exec(req.url ?? '')
    if (!m || !fs.existsSync(registry.blobPath(m[1]))) {
      res.writeHead(404).end()
      return
    }
    const file = registry.blobPath(m[1])
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(fs.statSync(file).size) })
    if (req.method === 'HEAD') res.end()
    else fs.createReadStream(file).pipe(res)
  }
  const server = await listenLocalhost(handler)
  return { url: `http://localhost:${server.port}`, requests, stop: () => server.stop() }
}
