/**
 * A client of one OCI registry (distribution spec v1.1, Docker registry API v2): manifests,
 * blobs as streams, uploads, tags. Internal: the `ImageStore` is built on it.
 */
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import { BtrfsError } from '../errors'
import { abortError } from '../validate'
import { Authorizer, dockerConfigCredentials, type Credentials, type ResolvedCredentials } from './auth'
import { MANIFEST_TYPES, manifestMediaType, parseManifest, selectPlatform, type Descriptor, type ParsedManifest, type Platform } from './manifest'
import { isLoopbackHost, isSha256Digest, type Reference } from './reference'
import { registryError, sleep, Transport, type RetryOptions } from './transport'

export interface RegistryOptions extends RetryOptions {
  /** Credentials; without them, `<dockerConfig>/config.json`'s `auths` entry, else anonymous. */
  auth?: Credentials
  /** The directory of Docker's `config.json`: `DOCKER_CONFIG`, else `~/.docker`. */
  dockerConfig?: string
  /** Plain http for a registry that is not on this machine (loopback hosts always get http). */
  insecure?: boolean
}

export interface CallOptions {
  signal?: AbortSignal
}

/** A manifest or index as fetched: its exact bytes, media type and digest. */
export interface FetchedManifest {
  bytes: Buffer
  mediaType: string
  /** `sha256:` of `bytes`, checked against the digest asked for or the registry's header. */
  digest: string
  parsed: ParsedManifest
}

/** A blob's bytes as they arrive; it errors with `ERR_DIGEST` when they do not match. */
export interface BlobStream extends Readable {
  /** The registry's `Content-Length` (the descriptor's size, unless the registry lies). */
  readonly size?: number
}

/** What pushing a blob did. */
export type PushedBlob = 'present' | 'mounted' | 'uploaded'

export interface PushBlobOptions extends CallOptions {
  /** Try a cross-repository mount from this repository of the same registry first. */
  mountFrom?: string
  /** `auto` (chunked, falling back to monolithic when refused), or force one way. */
  upload?: 'auto' | 'chunked' | 'monolithic'
  /** Bytes per PATCH; 8 MiB by default, raised to the registry's `OCI-Chunk-Min-Length`. */
  chunkSize?: number
  /** `false`: no HEAD first (the caller has just asked). */
  head?: boolean
}

/** Opens the blob's bytes from the start (again, for a fallback); or the bytes themselves. */
export type BlobSource = Buffer | (() => Readable)

/** Manifests larger than this are refused before they are read whole (registries cap at 4 MiB). */
const MANIFEST_MAX = 4 * 1024 * 1024
const DEFAULT_CHUNK = 8 * 1024 * 1024

export function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`
}

export function digestError(what: string, want: string, got: string): BtrfsError {
  return new BtrfsError('ERR_DIGEST', `ERR_DIGEST: ${what}: expected ${want}, got ${got}`)
}

function checkDigest(digest: string): void {
  if (!isSha256Digest(digest)) throw new BtrfsError('EINVAL', `EINVAL: ${JSON.stringify(digest)} is not a sha256 digest`)
}

function checkRepository(repository: string): void {
  if (!/^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)*$/.test(repository)) {
    throw new BtrfsError('EINVAL', `EINVAL: ${JSON.stringify(repository)} is not a repository name`)
  }
}

/** Read a body whole, refusing more than `max` bytes. */
async function readLimited(res: Response, max: number, what: string): Promise<Buffer> {
  const length = Number(res.headers.get('content-length') ?? NaN)
  if (length > max) {
    await res.body?.cancel()
    throw registryError(`${what}: ${length} bytes, more than the ${max} this client reads`)
  }
  const chunks: Buffer[] = []
  let total = 0
  if (res.body) {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      total += chunk.byteLength
      if (total > max) throw registryError(`${what}: more than the ${max} bytes this client reads`)
      chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))
    }
  }
  return Buffer.concat(chunks, total)
}

/** Read exactly `n` bytes (fewer only at the end) from an async iterator of chunks. */
async function readChunk(it: AsyncIterator<Buffer>, carry: { rest: Buffer | undefined }, n: number): Promise<Buffer> {
  const parts: Buffer[] = []
  let have = 0
  while (have < n) {
    let chunk = carry.rest
    carry.rest = undefined
    if (!chunk) {
      const r = await it.next()
      if (r.done) break
      chunk = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value)
    }
    if (have + chunk.length > n) {
      carry.rest = chunk.subarray(n - have)
      chunk = chunk.subarray(0, n - have)
    }
    parts.push(chunk)
    have += chunk.length
  }
  return Buffer.concat(parts, have)
}

/**
 * A client of one registry. Every method takes `{ signal }`; failures are `BtrfsError`s:
 * `EINVAL` (a bad digest or repository name), `ENOENT` (404), `ERR_REGISTRY_AUTH`,
 * `ERR_DIGEST`, `ERR_BAD_MANIFEST`, `ERR_REGISTRY` (anything else the registry answered, or
 * a connection that failed through every retry), `ABORT_ERR`.
 */
export class RegistryClient {
  /** The registry as references name it: `docker.io`, `localhost:5000`. */
  readonly registry: string
  readonly #transport: Transport

  /**
   * @param registry the registry part of a `Reference` (its `host` is where requests go).
   */
  constructor(ref: Pick<Reference, 'registry' | 'host'>, options: RegistryOptions = {}) {
    this.registry = ref.registry
    const scheme = options.insecure || isLoopbackHost(ref.host) ? 'http' : 'https'
    const credentials: ResolvedCredentials | undefined = options.auth ?? dockerConfigCredentials(ref.registry, options.dockerConfig)
    this.#transport = new Transport(`${scheme}://${ref.host}`, new Authorizer(ref.registry, credentials), options)
  }

  /** `scheme://host` requests go to. */
  get origin(): string {
    return this.#transport.origin
  }

  // -------------------------------------------------------------------------------------------
  // Manifests
  // -------------------------------------------------------------------------------------------

  /**
   * GET a manifest or index by tag or digest, with the `Accept` of every type this client
   * reads. By digest, the bytes must hash to it; by tag, to the registry's
   * `Docker-Content-Digest` when it sends one.
   * @throws {BtrfsError} `ERR_DIGEST`, `ERR_BAD_MANIFEST`, `ENOENT`, ...
   */
  async getManifest(repository: string, reference: string, o: CallOptions = {}): Promise<FetchedManifest> {
    checkRepository(repository)
    const byDigest = reference.includes(':')
    if (byDigest) checkDigest(reference)
    const what = `GET manifest ${repository}${byDigest ? '@' : ':'}${reference}`
    const res = await this.#transport.request({
      method: 'GET',
      url: `/v2/${repository}/manifests/${reference}`,
      scopes: [`repository:${repository}:pull`],
      headers: { accept: MANIFEST_TYPES.join(', ') },
      signal: o.signal,
      ok: [200],
      what,
    })
    const bytes = await readLimited(res, MANIFEST_MAX, what)
    const digest = sha256(bytes)
    const header = res.headers.get('docker-content-digest')
    const want = byDigest ? reference : header && isSha256Digest(header) ? header : undefined
    if (want !== undefined && want !== digest) throw digestError(what, want, digest)
    const mediaType = manifestMediaType(res.headers.get('content-type'), bytes)
    return { bytes, mediaType, digest, parsed: parseManifest(bytes, mediaType) }
  }

  /**
   * HEAD a manifest: its digest, media type and size without its bytes; `undefined` when the
   * registry has none by that name.
   */
  async headManifest(repository: string, reference: string, o: CallOptions = {}): Promise<Descriptor | undefined> {
    checkRepository(repository)
    if (reference.includes(':')) checkDigest(reference)
    const res = await this.#transport.request({
      method: 'HEAD',
      url: `/v2/${repository}/manifests/${reference}`,
      scopes: [`repository:${repository}:pull`],
      headers: { accept: MANIFEST_TYPES.join(', ') },
      signal: o.signal,
      ok: [200, 404],
      what: `HEAD manifest ${repository}:${reference}`,
    })
    if (res.status === 404) return undefined
    const digest = res.headers.get('docker-content-digest') ?? (reference.includes(':') ? reference : '')
    const mediaType = (res.headers.get('content-type') ?? '').split(';')[0].trim()
    return { digest, mediaType, size: Number(res.headers.get('content-length') ?? 0) }
  }

  /**
   * The image manifest for `platform` (this machine's by default): the manifest `reference`
   * names, or, when that is an index or manifest list, the entry for the platform.
   */
  async getImageManifest(
    repository: string,
    reference: string,
    o: CallOptions & { platform?: Platform } = {},
  ): Promise<{ manifest: FetchedManifest; index?: FetchedManifest }> {
    const first = await this.getManifest(repository, reference, o)
    if (first.parsed.kind === 'manifest') return { manifest: first }
    const entry = selectPlatform(first.parsed.manifests, o.platform)
    const manifest = await this.getManifest(repository, entry.digest, o)
    if (manifest.parsed.kind !== 'manifest') {
      throw new BtrfsError('ERR_BAD_MANIFEST', `ERR_BAD_MANIFEST: ${repository}@${entry.digest}, chosen from an index, is an index too`)
    }
    return { manifest, index: first }
  }

  /**
   * PUT a manifest by tag or digest; resolves with its digest (the sha256 of `bytes`).
   * @throws {BtrfsError} `ERR_REGISTRY` when the registry refuses it (`MANIFEST_INVALID`,
   *   `MANIFEST_BLOB_UNKNOWN`, ...), `ERR_DIGEST` when it names another digest.
   */
  async putManifest(repository: string, reference: string, bytes: Buffer, mediaType: string, o: CallOptions = {}): Promise<string> {
    checkRepository(repository)
    const digest = sha256(bytes)
    if (reference.includes(':') && reference !== digest) throw digestError(`PUT manifest ${repository}`, reference, digest)
    const res = await this.#transport.request({
      method: 'PUT',
      url: `/v2/${repository}/manifests/${reference}`,
      scopes: [`repository:${repository}:pull,push`],
      headers: { 'content-type': mediaType },
      body: bytes,
      signal: o.signal,
      ok: [201],
      what: `PUT manifest ${repository}:${reference}`,
    })
    await res.body?.cancel()
    const header = res.headers.get('docker-content-digest')
    if (header && isSha256Digest(header) && header !== digest) throw digestError(`PUT manifest ${repository}:${reference}`, digest, header)
    return digest
  }

  /** Every tag of `repository`, following the `Link` pages. */
  async listTags(repository: string, o: CallOptions = {}): Promise<string[]> {
    checkRepository(repository)
    const tags: string[] = []
    let url: string | undefined = `/v2/${repository}/tags/list`
    for (let page = 0; url !== undefined; page++) {
      if (page > 10000) throw registryError(`tags of ${repository}: more than 10000 pages`)
      const res = await this.#transport.request({
        method: 'GET',
        url,
        scopes: [`repository:${repository}:pull`],
        signal: o.signal,
        ok: [200],
        what: `GET tags of ${repository}`,
      })
      const doc = JSON.parse((await readLimited(res, MANIFEST_MAX, `tags of ${repository}`)).toString('utf8')) as { tags?: unknown }
      if (Array.isArray(doc.tags)) tags.push(...doc.tags.filter((t): t is string => typeof t === 'string'))
      const link = /<([^>]+)>\s*;\s*rel="?next"?/.exec(res.headers.get('link') ?? '')
      url = link ? new URL(link[1], new URL(url, this.origin)).href : undefined
    }
    return tags
  }

  // -------------------------------------------------------------------------------------------
  // Blobs
  // -------------------------------------------------------------------------------------------

  /** HEAD a blob: its size, or `undefined` when the repository has no such blob. */
  async headBlob(repository: string, digest: string, o: CallOptions = {}): Promise<{ size: number } | undefined> {
    checkRepository(repository)
    checkDigest(digest)
    const res = await this.#transport.request({
      method: 'HEAD',
      url: `/v2/${repository}/blobs/${digest}`,
      scopes: [`repository:${repository}:pull`],
      signal: o.signal,
      ok: [200, 404],
      what: `HEAD blob ${repository}@${digest}`,
    })
    if (res.status === 404) return undefined
    return { size: Number(res.headers.get('content-length') ?? 0) }
  }

  /**
   * GET a blob as a stream of its bytes, never held whole. The promise resolves once the
   * registry answered (so a 404 or an auth failure rejects it); the stream then hashes what
   * it passes on and errors with `ERR_DIGEST` at the end when the sha256 (or, with `size`,
   * the length) differs. A connection lost in the middle of the body is resumed with a
   * `Range` request from the next byte (the hash goes on), up to the retry count; after that
   * the stream errors with `ERR_REGISTRY`, and the caller starts over.
   */
  async getBlob(repository: string, digest: string, o: CallOptions & { size?: number } = {}): Promise<BlobStream> {
    checkRepository(repository)
    checkDigest(digest)
    const what = `GET blob ${repository}@${digest}`
    const open = (from: number) =>
      this.#transport.request({
        method: 'GET',
        url: `/v2/${repository}/blobs/${digest}`,
        scopes: [`repository:${repository}:pull`],
        headers: from > 0 ? { range: `bytes=${from}-` } : {},
        signal: o.signal,
        ok: from > 0 ? [200, 206] : [200],
        what,
      })
    const first = await open(0)
    const length = first.headers.get('content-length')
    const size = length !== null && /^[0-9]+$/.test(length) ? Number(length) : undefined
    if (o.size !== undefined && size !== undefined && size !== o.size) {
      await first.body?.cancel()
      throw digestError(`${what}: size`, String(o.size), String(size))
    }
    const transport = this.#transport
    const signal = o.signal
    async function* bytes(): AsyncGenerator<Buffer> {
      const hash = createHash('sha256')
      let received = 0
      let res: Response | undefined = first
      let resumes = 0
      while (res) {
        let skip = 0
        if (res !== first && res.status === 200) skip = received // the server ignored the Range
        const body = res.body as unknown as AsyncIterable<Uint8Array> | null
        try {
          if (body) {
            for await (const chunk of body) {
              let buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
              if (skip > 0) {
                const n = Math.min(skip, buf.length)
                skip -= n
                buf = buf.subarray(n)
                if (buf.length === 0) continue
              }
              hash.update(buf)
              received += buf.length
              yield buf
            }
          }
          res = undefined
        } catch (e) {
          if (signal?.aborted) throw abortError()
          if (e instanceof BtrfsError || resumes >= transport.retries) {
            throw e instanceof BtrfsError ? e : registryError(`${what}: the connection failed after ${received} bytes, ${resumes} resumes`)
          }
          await sleep(transport.backoff(resumes++), signal)
          res = await open(received)
        }
      }
      const got = `sha256:${hash.digest('hex')}`
      const want = o.size ?? size
      if (want !== undefined && received !== want) throw digestError(`${what}: length`, `${want} bytes`, `${received}`)
      if (got !== digest) throw digestError(what, digest, got)
    }
    const stream = Readable.from(bytes(), { objectMode: false }) as Readable & { size?: number }
    Object.defineProperty(stream, 'size', { value: o.size ?? size, enumerable: true })
    return stream as BlobStream
  }

  /**
   * Mount `digest` from repository `from` of the same registry into `repository`. Resolves
   * `true` when mounted (201); `false` when the registry declined and opened an upload instead
   * (202), which this method cancels.
   */
  async mountBlob(repository: string, digest: string, from: string, o: CallOptions = {}): Promise<boolean> {
    checkRepository(from)
    const started = await this.#startUpload(repository, o, { mount: digest, from })
    if (started.mounted) return true
    await this.#cancelUpload(repository, started.location, o)
    return false
  }

  /**
   * Push a blob unless the repository has it: HEAD (present: skipped), then a cross-repository
   * mount when `mountFrom` is given, then an upload, chunked (POST, PATCH with Content-Range,
   * PUT with the digest) or, when the registry refuses chunks, monolithic (POST, one PUT).
   * The registry checks the digest. An upload that fails (the source's stream errors, the
   * registry refuses a request) is cancelled (DELETE), so it leaves nothing to complete.
   */
  async pushBlob(repository: string, desc: Pick<Descriptor, 'digest' | 'size'>, source: BlobSource, o: PushBlobOptions = {}): Promise<PushedBlob> {
    checkRepository(repository)
    checkDigest(desc.digest)
    if (o.head !== false && (await this.headBlob(repository, desc.digest, o))) return 'present'
    const mode = o.upload ?? 'auto'
    const started = await this.#startUpload(repository, o, o.mountFrom ? { mount: desc.digest, from: o.mountFrom } : undefined)
    if (started.mounted) return 'mounted'
    if (mode === 'monolithic') {
      await this.#putMonolithic(repository, started.location, desc, source, o)
      return 'uploaded'
    }
    const chunkSize = Math.max(o.chunkSize ?? DEFAULT_CHUNK, started.minChunk)
    const chunked = await this.#uploadChunks(repository, started.location, desc, source, chunkSize, o)
    if (chunked === 'refused') {
      if (mode === 'chunked') throw registryError(`PATCH blob upload ${repository}: the registry refused chunks`)
      const again = await this.#startUpload(repository, o)
      if (again.mounted) return 'mounted'
      await this.#putMonolithic(repository, again.location, desc, source, o)
    }
    return 'uploaded'
  }

  /** POST an upload (or a mount): the upload's location, or `mounted`. */
  async #startUpload(
    repository: string,
    o: CallOptions,
    mount?: { mount: string; from: string },
  ): Promise<{ mounted: true } | { mounted: false; location: string; minChunk: number }> {
    checkRepository(repository)
    const query = mount ? `?mount=${encodeURIComponent(mount.mount)}&from=${encodeURIComponent(mount.from)}` : ''
    const res = await this.#transport.request({
      method: 'POST',
      url: `/v2/${repository}/blobs/uploads/${query}`,
      scopes: [`repository:${repository}:pull,push`, ...(mount ? [`repository:${mount.from}:pull`] : [])],
      headers: { 'content-length': '0' },
      signal: o.signal,
      ok: mount ? [201, 202] : [202],
      what: `POST blob upload ${repository}${mount ? ` (mount ${mount.mount} from ${mount.from})` : ''}`,
    })
    await res.body?.cancel()
    if (res.status === 201) return { mounted: true }
    const location = res.headers.get('location')
    if (!location) throw registryError(`POST blob upload ${repository}: no Location in the answer`)
    const min = Number(res.headers.get('oci-chunk-min-length') ?? 0)
    return { mounted: false, location: new URL(location, this.origin).href, minChunk: Number.isSafeInteger(min) && min > 0 ? min : 0 }
  }

  async #cancelUpload(repository: string, location: string, o: CallOptions): Promise<void> {
    try {
      const res = await this.#transport.request({
        method: 'DELETE',
        url: location,
        scopes: [`repository:${repository}:pull,push`],
        signal: o.signal,
        ok: [204, 200, 202, 404],
        what: `DELETE blob upload ${repository}`,
      })
      await res.body?.cancel()
    } catch (e) {
      // An upload left open expires on the registry's side; only an abort is the caller's.
      if ((e as BtrfsError).code === 'ABORT_ERR') throw e
    }
  }

  /** The upload's next URL with `digest` added to its query. */
  #withDigest(location: string, digest: string): string {
    const url = new URL(location, this.origin)
    url.searchParams.set('digest', digest)
    return url.href
  }

  async #putMonolithic(repository: string, location: string, desc: Pick<Descriptor, 'digest' | 'size'>, source: BlobSource, o: CallOptions): Promise<void> {
    const input = Buffer.isBuffer(source) ? undefined : source()
    const body = input ? (Readable.toWeb(input) as ReadableStream<Uint8Array>) : (source as Buffer)
    let res: Response
    try {
      res = await this.#transport.request({
        method: 'PUT',
        url: this.#withDigest(location, desc.digest),
        scopes: [`repository:${repository}:pull,push`],
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(desc.size) },
        body,
        signal: o.signal,
        ok: [201],
        what: `PUT blob ${repository}@${desc.digest}`,
      })
    } catch (e) {
      await this.#cancelUpload(repository, location, {})
      // The source's own error (ERR_DIGEST at its end), not fetch's report of a body that broke off.
      throw input?.errored instanceof BtrfsError ? input.errored : e
    }
    await res.body?.cancel()
  }

  /** PATCH the bytes in chunks, then PUT the digest. `refused` when the first PATCH is. */
  async #uploadChunks(
    repository: string,
    location: string,
    desc: Pick<Descriptor, 'digest' | 'size'>,
    source: BlobSource,
    chunkSize: number,
    o: CallOptions,
  ): Promise<'done' | 'refused'> {
    const input = Buffer.isBuffer(source) ? Readable.from([source]) : source()
    const it = input[Symbol.asyncIterator]() as AsyncIterator<Buffer>
    const carry: { rest: Buffer | undefined } = { rest: undefined }
    let offset = 0
    let refused = false
    try {
      for (;;) {
        if (o.signal?.aborted) throw abortError()
        const chunk = await readChunk(it, carry, chunkSize)
        if (chunk.length === 0) break
        const res = await this.#transport.request({
          method: 'PATCH',
          url: location,
          scopes: [`repository:${repository}:pull,push`],
          headers: {
            'content-type': 'application/octet-stream',
            'content-range': `${offset}-${offset + chunk.length - 1}`,
            'content-length': String(chunk.length),
          },
          body: chunk,
          signal: o.signal,
          ok: offset === 0 ? [202, 400, 405, 416, 501] : [202],
          what: `PATCH blob upload ${repository} (bytes ${offset}-${offset + chunk.length - 1})`,
        })
        await res.body?.cancel()
        if (res.status !== 202) {
          refused = true
          await this.#cancelUpload(repository, location, o)
          return 'refused'
        }
        const next = res.headers.get('location')
        if (!next) throw registryError(`PATCH blob upload ${repository}: no Location in the answer`)
        location = new URL(next, location).href
        offset += chunk.length
      }
    } catch (e) {
      // A source that failed (ERR_DIGEST at its end) or a refused chunk: the upload is not completed.
      if (!refused) await this.#cancelUpload(repository, location, {})
      throw e
    } finally {
      input.destroy()
    }
    if (offset !== desc.size) throw digestError(`upload of ${repository}@${desc.digest}: size`, `${desc.size} bytes`, `${offset}`)
    const res = await this.#transport.request({
      method: 'PUT',
      url: this.#withDigest(location, desc.digest),
      scopes: [`repository:${repository}:pull,push`],
      headers: { 'content-length': '0' },
      signal: o.signal,
      ok: [201],
      what: `PUT blob ${repository}@${desc.digest}`,
    })
    await res.body?.cancel()
    return 'done'
  }
}
