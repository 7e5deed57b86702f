/**
 * One registry's HTTP: Node's own `fetch` with the authorization flow, retries with backoff
 * on 5xx, 429 and connection failures, and redirects followed by hand so that the
 * `Authorization` header never leaves the registry's origin (a 307 to blob storage on another
 * host gets none).
 */
import { BtrfsError } from '../errors'
import { abortError } from '../validate'
import { Authorizer, authError, describeFetchError } from './auth'

export interface RetryOptions {
  /** Attempts after the first one, for a 5xx, a 429 or a connection failure; 4 by default. */
  retries?: number
  /** The first backoff in ms, doubled each time (with jitter), at most 5 s; 200 by default. */
  retryDelay?: number
}

export interface RequestOptions {
  method: 'GET' | 'HEAD' | 'POST' | 'PATCH' | 'PUT' | 'DELETE'
  /** A path below the registry (`/v2/...`) or an absolute URL (an upload's `Location`). */
  url: string
  /** The token scopes the request needs: `repository:a/b:pull`. */
  scopes: readonly string[]
  headers?: Record<string, string>
  /** A Buffer is sent again on a retry; a stream is sent once (no retry after it started). */
  body?: Buffer | ReadableStream<Uint8Array>
  signal?: AbortSignal
  /** Statuses that are answers, not failures; everything else not retried is `ERR_REGISTRY`. */
  ok: readonly number[]
  /** What the request is, for error messages: `GET manifest a/b:tag`. */
  what: string
}

const REDIRECTS = new Set([301, 302, 303, 307, 308])
const MAX_REDIRECTS = 10
const MAX_AUTH_ROUNDS = 3
const RETRY_STATUS = new Set([429, 500, 502, 503, 504])

/** `ERR_REGISTRY`: the registry answered something this client cannot use. */
export function registryError(message: string): BtrfsError {
  return new BtrfsError('ERR_REGISTRY', `ERR_REGISTRY: ${message}`)
}

/** An abortable sleep. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError())
    const onAbort = () => {
      clearTimeout(timer)
      reject(abortError())
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/** The registry's error document (`{"errors":[{"code":"BLOB_UNKNOWN",...}]}`): its first code and a short text. */
async function errorDetail(res: Response): Promise<{ code?: string; text: string }> {
  try {
    const text = (await res.text()).slice(0, 2000)
    const doc = JSON.parse(text) as { errors?: { code?: string; message?: string }[] }
    const e = doc.errors?.[0]
    if (e) return { code: e.code, text: `: ${[e.code, e.message].filter(Boolean).join(' ')}`.slice(0, 300) }
  } catch {
    // not the registry's JSON error format
  }
  return { text: '' }
}

export class Transport {
  readonly origin: string
  readonly authorizer: Authorizer
  readonly #retries: number
  readonly #retryDelay: number

  constructor(origin: string, authorizer: Authorizer, retry: RetryOptions = {}) {
    this.origin = origin
    this.authorizer = authorizer
    this.#retries = retry.retries ?? 4
    this.#retryDelay = retry.retryDelay ?? 200
  }

  /** The backoff before retry `n` (0-based): doubling, with jitter, capped. */
  backoff(n: number, retryAfter?: string | null): number {
    const seconds = retryAfter ? Number(retryAfter) : NaN
    if (Number.isFinite(seconds) && seconds >= 0) return Math.min(seconds * 1000, 5000)
    const base = Math.min(this.#retryDelay * 2 ** n, 5000)
    return base / 2 + Math.random() * (base / 2)
  }

  get retries(): number {
    return this.#retries
  }

  /**
   * Send a request; resolve with the first response whose status is in `ok` (its body unread).
   * @throws {BtrfsError} `ERR_REGISTRY_AUTH` (401 or 403 after the auth flow), `ERR_REGISTRY`
   *   (another status, a connection failure after the retries, too many redirects),
   *   `ABORT_ERR`.
   */
  async request(o: RequestOptions): Promise<Response> {
    let url = new URL(o.url, this.origin)
    let method = o.method
    let body = o.body
    let attempt = 0
    let authRounds = 0
    let redirects = 0
    let bodySent = false
    for (;;) {
      if (o.signal?.aborted) throw abortError()
      // Credentials only ever go to the registry's own origin.
      const sameOrigin = url.origin === this.origin
      const authorization = sameOrigin ? this.authorizer.header(o.scopes) : undefined
      const headers: Record<string, string> = { ...o.headers }
      if (authorization) headers.authorization = authorization
      if (bodySent && body !== undefined && !Buffer.isBuffer(body)) {
        throw registryError(`${o.what}: the request failed after its body was sent, and a stream cannot be sent again`)
      }
      let res: Response
      try {
        const init: RequestInit & { duplex?: 'half' } = { method, headers, redirect: 'manual', signal: o.signal }
        if (body !== undefined) {
          init.body = body
          if (!Buffer.isBuffer(body)) init.duplex = 'half'
          bodySent = true
        }
        res = await fetch(url, init)
      } catch (e) {
        if (o.signal?.aborted) throw abortError()
        if (attempt < this.#retries && (body === undefined || Buffer.isBuffer(body))) {
          await sleep(this.backoff(attempt++), o.signal)
          continue
        }
        throw registryError(`${o.what}: ${describeFetchError(e)} (after ${attempt + 1} attempts)`)
      }
      if (res.status === 401 && sameOrigin) {
        const challenge = res.headers.get('www-authenticate')
        await res.body?.cancel()
        if (++authRounds > MAX_AUTH_ROUNDS) throw authError(`${o.what}: still refused after ${MAX_AUTH_ROUNDS} rounds of authentication`)
        await this.authorizer.answer(challenge, o.scopes, authorization, o.signal)
        bodySent = false
        continue
      }
      if (o.ok.includes(res.status)) return res
      if (REDIRECTS.has(res.status) && res.headers.has('location')) {
        await res.body?.cancel()
        if (++redirects > MAX_REDIRECTS) throw registryError(`${o.what}: more than ${MAX_REDIRECTS} redirects`)
        url = new URL(res.headers.get('location') as string, url)
        if (url.protocol !== 'https:' && url.protocol !== 'http:') throw registryError(`${o.what}: redirected to a ${url.protocol} URL`)
        if (res.status === 303 && method !== 'HEAD') {
          method = 'GET'
          body = undefined
        }
        bodySent = false
        continue
      }
      if (RETRY_STATUS.has(res.status) && attempt < this.#retries && (body === undefined || Buffer.isBuffer(body))) {
        await res.body?.cancel()
        await sleep(this.backoff(attempt++, res.headers.get('retry-after')), o.signal)
        bodySent = false
        continue
      }
      const { code, text: detail } = await errorDetail(res)
      if (code === 'DIGEST_INVALID') throw new BtrfsError('ERR_DIGEST', `ERR_DIGEST: ${o.what}: HTTP ${res.status}${detail}`)
      if (res.status === 401 || res.status === 403) {
        throw authError(`${o.what}: HTTP ${res.status}${detail}${this.authorizer.hasCredentials ? '' : ' (no credentials were given or found)'}`)
      }
      if (res.status === 404) throw new BtrfsError('ENOENT', `ENOENT: ${o.what}: not found (HTTP 404${detail})`)
      throw registryError(`${o.what}: HTTP ${res.status}${detail}`)
    }
  }
}
