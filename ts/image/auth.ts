/**
 * Registry authentication: credentials (from the options or Docker's config.json), the
 * `WWW-Authenticate` challenges, and the anonymous, basic and bearer-token flows of the
 * distribution token spec, with tokens cached per scope. Credentials never appear in an error.
 */
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { BtrfsError } from '../errors'
import { abortError } from '../validate'

/**
 * What a caller can pass as `auth`: a user and password, or a registry bearer token.
 * @example await images.pull('registry.example.com/app:v1', { auth: { username: 'me', password: process.env.TOKEN ?? '' } })
 */
export type Credentials = { username: string; password: string } | { token: string }

/** What the flows use: `Credentials`, plus Docker's identity (OAuth2 refresh) token. */
export type ResolvedCredentials = Credentials | { identityToken: string; username?: string }

/** One `WWW-Authenticate` challenge: `Bearer realm="...",service="..."`. */
export interface Challenge {
  /** Lower case: `basic`, `bearer`. */
  scheme: string
  /** Parameter names in lower case; values unquoted. */
  params: Record<string, string>
}

export const AUTH_ERROR = 'ERR_REGISTRY_AUTH'

export function authError(message: string): BtrfsError {
  return new BtrfsError(AUTH_ERROR, `${AUTH_ERROR}: ${message}`)
}

// RFC 7230 token characters, and RFC 7235's token68 for a challenge without parameters.
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+/
const TOKEN68 = /^[A-Za-z0-9._~+/-]+=*/

/**
 * Parse a `WWW-Authenticate` value (several challenges may be joined by commas, as fetch joins
 * repeated headers) into challenges. Quoted values may hold commas, `=` and `\"`. Malformed
 * parts are skipped, never thrown on: a server's header is not the caller's fault.
 */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = []
  let s = header
  let current: Challenge | undefined
  const skip = (re: RegExp) => {
    const m = re.exec(s)
    if (m) s = s.slice(m[0].length)
    return m?.[0] ?? ''
  }
  while (s.length > 0) {
    skip(/^[\s,]+/)
    if (s.length === 0) break
    const token = skip(TOKEN)
    if (token === '') {
      // Not a token: drop up to the next comma and try again.
      s = s.replace(/^[^,]*/, '')
      continue
    }
    const afterToken = s
    skip(/^[ \t]*/)
    if (current && s.startsWith('=')) {
      // A parameter of the current challenge.
      s = s.slice(1)
      skip(/^[ \t]*/)
      let value: string
      if (s.startsWith('"')) {
        value = ''
        let i = 1
        for (; i < s.length && s[i] !== '"'; i++) {
          if (s[i] === '\\' && i + 1 < s.length) i++
          value += s[i]
        }
        s = s.slice(i + 1)
      } else {
        value = skip(/^[^,\s]*/)
      }
      current.params[token.toLowerCase()] = value
      continue
    }
    // A new challenge: `scheme` then parameters (or a token68, which no registry scheme uses).
    s = afterToken
    current = { scheme: token.toLowerCase(), params: {} }
    out.push(current)
    const ws = skip(/^[ \t]+/)
    if (ws && !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+[ \t]*=(?!=)/.test(s)) skip(TOKEN68)
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// Credentials from Docker's config.json
// ---------------------------------------------------------------------------------------------

/** The `auths` keys Docker uses for a registry: `host`, `https://host`, and Hub's legacy URL. */
function configKeys(registry: string): string[] {
  if (registry === 'docker.io') return ['https://index.docker.io/v1/', 'index.docker.io', 'docker.io', 'registry-1.docker.io']
  return [registry]
}

function hostOfKey(key: string): string {
  return key.replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '')
}

/**
 * Credentials for `registry` from `<dir>/config.json` (`dir`: `DOCKER_CONFIG`, else
 * `~/.docker`): an `auths` entry's `identitytoken`, `registrytoken`, `auth` (base64
 * `user:password`) or `username` and `password`. `undefined` when there is none; credential
 * helpers (`credsStore`, `credHelpers`) are not run.
 * @throws {BtrfsError} `ERR_REGISTRY_AUTH` when the file exists and is not valid JSON, or an
 *   entry is malformed (the message names the file and entry, never the secret).
 */
export function dockerConfigCredentials(registry: string, dir?: string): ResolvedCredentials | undefined {
  const base = dir ?? process.env.DOCKER_CONFIG ?? path.join(os.homedir(), '.docker')
  const file = path.join(base, 'config.json')
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch {
    return undefined
  }
  let auths: Record<string, Record<string, unknown>>
  try {
    const parsed = JSON.parse(text) as { auths?: unknown }
    auths = parsed && typeof parsed.auths === 'object' && parsed.auths !== null ? (parsed.auths as typeof auths) : {}
  } catch {
    throw authError(`${file} is not valid JSON`)
  }
  const wanted = configKeys(registry)
  const key = wanted.find((k) => k in auths) ?? Object.keys(auths).find((k) => wanted.includes(hostOfKey(k)))
  if (key === undefined) return undefined
  const entry = auths[key] ?? {}
  const str = (name: string) => (typeof entry[name] === 'string' && entry[name] !== '' ? (entry[name] as string) : undefined)
  let username = str('username')
  let password = str('password')
  const encoded = str('auth')
  if (encoded !== undefined) {
    const decoded = Buffer.from(encoded, 'base64').toString('utf8')
    const colon = decoded.indexOf(':')
    if (colon === -1) throw authError(`${file}: the "auth" of ${JSON.stringify(key)} is not base64 of user:password`)
    username = decoded.slice(0, colon)
    password = decoded.slice(colon + 1)
  }
  const identityToken = str('identitytoken')
  if (identityToken !== undefined) return { identityToken, ...(username !== undefined ? { username } : {}) }
  const registryToken = str('registrytoken')
  if (registryToken !== undefined) return { token: registryToken }
  if (username !== undefined && password !== undefined) return { username, password }
  return undefined
}

// ---------------------------------------------------------------------------------------------
// The flows
// ---------------------------------------------------------------------------------------------

interface CachedToken {
  header: string
  /** The scopes it was asked for, merged. */
  scopes: string
  /** Date.now() after which it is not used again. */
  expires: number
}

/**
 * Scopes merged per resource, in a stable order, for the token cache's keys and the token
 * request: `repository:a:pull` and `repository:a:push` make `repository:a:pull,push`.
 */
export function mergeScopes(scopes: readonly string[]): string[] {
  const byResource = new Map<string, Set<string>>()
  for (const scope of scopes) {
    const last = scope.lastIndexOf(':')
    if (last <= 0) continue
    const resource = scope.slice(0, last)
    const actions = byResource.get(resource) ?? new Set<string>()
    for (const a of scope.slice(last + 1).split(',')) if (a) actions.add(a)
    byResource.set(resource, actions)
  }
  return [...byResource].map(([resource, actions]) => `${resource}:${[...actions].sort().join(',')}`).sort()
}

/**
 * The authorization state of one registry: which scheme it asked for, and the bearer tokens
 * got so far, one per set of scopes.
 */
export class Authorizer {
  readonly #registry: string
  readonly #credentials: ResolvedCredentials | undefined
  #basic = false
  readonly #tokens = new Map<string, CachedToken>()

  constructor(registry: string, credentials: ResolvedCredentials | undefined) {
    this.#registry = registry
    this.#credentials = credentials
  }

  /** Whether any credentials were given or found. */
  get hasCredentials(): boolean {
    return this.#credentials !== undefined
  }

  /** The `Authorization` value to send for a request that needs `scopes`, if one is known. */
  header(scopes: readonly string[]): string | undefined {
    const c = this.#credentials
    if (c && 'token' in c) return `Bearer ${c.token}`
    const cached = this.#tokens.get(mergeScopes(scopes).join(' '))
    if (cached && cached.expires > Date.now()) return cached.header
    if (this.#basic && c && 'password' in c) return basicHeader(c.username, c.password)
    return undefined
  }

  /**
   * Answer a 401: learn the scheme, get a token for the scopes the challenge asks for (and
   * `scopes`). Returns when the request is worth sending again.
   * @throws {BtrfsError} `ERR_REGISTRY_AUTH` when there is nothing new to try: no credentials
   *   for a basic challenge, credentials already refused, a token server that refuses them.
   */
  async answer(challengeHeader: string | null, scopes: readonly string[], sent: string | undefined, signal?: AbortSignal): Promise<void> {
    const challenges = parseChallenges(challengeHeader ?? '')
    const c = this.#credentials
    const key = mergeScopes(scopes).join(' ')
    const where = `${this.#registry} (${key || 'no scope'})`
    const refused = () => authError(`${where} refused access ${c ? 'with the credentials given' : 'without credentials'}`)
    if (c && 'token' in c) throw authError(`${where} refused the bearer token given`)
    const bearer = challenges.find((ch) => ch.scheme === 'bearer')
    if (bearer) {
      const realm = bearer.params.realm
      if (!realm) throw authError(`${where} sent a Bearer challenge without a realm`)
      const wanted = mergeScopes([...scopes, ...(bearer.params.scope ?? '').split(' ').filter(Boolean)])
      const cached = this.#tokens.get(key)
      if (sent !== undefined && cached?.header === sent) {
        this.#tokens.delete(key)
        // A token for these very scopes was refused: another would be too, unless the
        // challenge asks for more or says this one is no longer valid.
        if (bearer.params.error !== 'invalid_token' && wanted.join(' ') === cached.scopes) throw refused()
      }
      const token = await this.#fetchToken(realm, bearer.params.service, wanted, signal)
      this.#tokens.set(key, { header: `Bearer ${token.token}`, scopes: wanted.join(' '), expires: Date.now() + token.expiresIn * 900 })
      return
    }
    if (challenges.some((ch) => ch.scheme === 'basic')) {
      if (!c || !('password' in c)) throw authError(`${where} needs a user name and password`)
      if (sent !== undefined && sent.startsWith('Basic ')) throw refused()
      this.#basic = true
      return
    }
    throw authError(`${where} answered 401 without a Basic or Bearer challenge`)
  }

  /** GET (or, for an identity token, POST) the realm for a token, per the token spec. */
  async #fetchToken(realm: string, service: string | undefined, scopes: string[], signal?: AbortSignal): Promise<{ token: string; expiresIn: number }> {
    let url: URL
    try {
      url = new URL(realm)
    } catch {
      throw authError(`${this.#registry} named a token realm that is not a URL`)
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw authError(`${this.#registry} named a token realm that is not http(s)`)
    const c = this.#credentials
    const headers: Record<string, string> = { accept: 'application/json' }
    let init: RequestInit
    if (c && 'identityToken' in c) {
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: c.identityToken, client_id: 'btrfs-layers' })
      if (service) form.set('service', service)
      if (scopes.length > 0) form.set('scope', scopes.join(' '))
      headers['content-type'] = 'application/x-www-form-urlencoded'
      init = { method: 'POST', headers, body: form.toString() }
    } else {
      if (service) url.searchParams.set('service', service)
      for (const s of scopes) url.searchParams.append('scope', s)
      if (c && 'password' in c) headers.authorization = basicHeader(c.username, c.password)
      init = { method: 'GET', headers }
    }
    let res: Response
    try {
      res = await fetch(url, { ...init, signal, redirect: 'follow' })
    } catch (e) {
      if (signal?.aborted) throw abortError()
      throw authError(`the token server of ${this.#registry} (${url.origin}${url.pathname}) could not be reached: ${describeFetchError(e)}`)
    }
    if (res.status === 401 || res.status === 403) {
      await res.body?.cancel()
      throw authError(`the token server of ${this.#registry} refused ${c ? 'the credentials given' : 'anonymous access'} (HTTP ${res.status})`)
    }
    if (!res.ok) {
      await res.body?.cancel()
      throw authError(`the token server of ${this.#registry} answered HTTP ${res.status}`)
    }
    let body: { token?: unknown; access_token?: unknown; expires_in?: unknown }
    try {
      body = (await res.json()) as typeof body
    } catch {
      throw authError(`the token server of ${this.#registry} answered something that is not JSON`)
    }
    const token = typeof body.token === 'string' && body.token ? body.token : body.access_token
    if (typeof token !== 'string' || token === '') throw authError(`the token server of ${this.#registry} answered without a token`)
    // The spec's default lifetime is 60 s.
    const expiresIn = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : 60
    return { token, expiresIn }
  }
}

function basicHeader(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}`
}

/** `ECONNRESET`, `ECONNREFUSED`, ... out of fetch's `TypeError: fetch failed` (and its cause). */
export function describeFetchError(e: unknown): string {
  const cause = (e as { cause?: { code?: string; message?: string } })?.cause
  return cause?.code ?? cause?.message ?? (e instanceof Error ? e.message : String(e))
}
