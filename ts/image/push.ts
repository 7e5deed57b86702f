/**
 * `ImageStore.push`: each layer's own blob (the one it was pulled or imported as) where the
 * target repository has it (HEAD) or can mount it from a repository of the same registry it
 * came from, else copied from a repository it was pulled from (streamed from that registry's
 * response into the upload, verified on the way); only when no source serves it, the layer's
 * diff against its parent (gzip, or zstd if asked), hashed in a first pass (the registry needs
 * the digest before the bytes: HEAD, mount, and the upload's closing PUT) and streamed in a
 * second. When every layer kept its blob, the image's own config and manifest follow, so its
 * digest stays; else a config with the diffIDs of what was pushed and an OCI manifest. The
 * diffs are made the same way twice, so their bytes are the same; a registry that finds
 * otherwise refuses the blob (`ERR_DIGEST`).
 */
import { PassThrough, type Readable } from 'node:stream'
import type { BtrfsDriver, LayerDigests } from '../driver'
import { abortError } from '../validate'
import type { Credentials } from './auth'
import type { ImageConfig } from './config'
import { layerCompression, MediaType, ociLayerType, parseManifest, type Descriptor } from './manifest'
import { recordBytes, type BlobSource, type StoredBlob, type StoredImage } from './records'
import { formatReference, parseReference, type Reference } from './reference'
import { RegistryClient, sha256 } from './registry'
import { sourceName, SourceBlobs } from './source-blobs'

/**
 * Options of `ImageStore.push`.
 * @example await images.push('app:v1', 'registry.example.com/team/app:v1', { compression: 'zstd', auth: { username, password } })
 */
export interface PushOptions {
  /**
   * The layers' compression: `'gzip'` or `'zstd'`. Unset, a layer's own blob goes as it came
   * (any compression) and a diff as gzip; set, only blobs of this compression are reused.
   */
  compression?: 'gzip' | 'zstd'
  /** Credentials for the target; without them `~/.docker/config.json` (`DOCKER_CONFIG`) `auths`, else anonymous. */
  auth?: Credentials
  /**
   * Credentials for the registries a layer's blob is copied from, keyed by registry as
   * references name it (`docker.io`, `127.0.0.1:5000`). A registry without an entry gets its
   * `~/.docker/config.json` entry, else none; the target's own registry always gets `auth`.
   * @example await images.push('127.0.0.1:5000/app:v1', 'registry.example.com/app:v1', { auth: target, sourceAuth: { '127.0.0.1:5000': source } })
   */
  sourceAuth?: Record<string, Credentials>
  /** Plain http for a target registry that is not on this machine (sources are reached over https unless on this machine). */
  insecure?: boolean
  signal?: AbortSignal
  /** Per-blob events; see {@link PushProgress}. */
  onProgress?: (event: PushProgress) => void
  /** Attempts after the first for a 5xx or a lost connection; 4 by default. */
  retries?: number
  /** The first backoff in ms; 200 by default. */
  retryDelay?: number
}

/**
 * One event of a push, for one layer (`layer` from 0, base first): `copying` or `uploading`
 * with the bytes sent so far, then `present` (the registry had it), `mounted` (from another
 * repository of that registry), `copied` (the layer's own blob, streamed from `from`, a
 * repository it was pulled from) or `uploaded` (its diff, made again).
 * @example await images.push('app:v1', 'localhost:5000/app:v1', { onProgress: (e) => console.log(e.layer, e.state, e.bytes) })
 */
export interface PushProgress {
  layer: number
  layers: number
  id: string
  digest: string
  state: 'copying' | 'uploading' | PushedLayer['blob']
  bytes: number
  total: number
  /** For `copying` and `copied`: the repository the blob comes from, `registry/repository`. */
  from?: string
}

/** What `ImageStore.push` did with one layer. */
export interface PushedLayer {
  id: string
  digest: string
  size: number
  /**
   * `present` (the target had the blob), `mounted` (from a repository of the same registry),
   * `copied` (the layer's own blob, from a repository it was pulled from) or `uploaded` (its
   * diff, made again: no source served the blob).
   */
  blob: 'present' | 'mounted' | 'copied' | 'uploaded'
  /** For `copied`: the repository the blob came from, `registry/repository`. */
  from?: string
  /** For `uploaded`: why each source of the blob asked for it failed (unreachable, 404, credentials refused). */
  sourceErrors?: string[]
}

/**
 * What `ImageStore.push` did.
 * @example const { digest } = await images.push('app:v1', 'localhost:5000/app:v1')
 */
export interface PushResult {
  /** The reference pushed to, normalized. */
  reference: string
  /** The digest of the manifest pushed. */
  digest: string
  /** What was done for each layer, base first. */
  layers: PushedLayer[]
  /** What was done for the config. */
  config: 'present' | 'mounted' | 'uploaded'
}

/**
 * The stream `open` resolves with, as a stream returned at once (what an upload's source
 * gives), its bytes counted; an error of `open` or of its stream errors it.
 */
function deferredStream(open: () => Promise<Readable>, onBytes?: (n: number) => void): Readable {
  const out = new PassThrough({ highWaterMark: 1 << 20 })
  let n = 0
  open().then(
    (s) => {
      s.on('error', (e) => out.destroy(e))
      if (onBytes) s.on('data', (c: Buffer) => onBytes((n += c.length)))
      out.once('close', () => s.destroy())
      s.pipe(out)
    },
    (e: Error) => out.destroy(e),
  )
  return out
}

async function digestsOf(driver: BtrfsDriver, id: string, parent: string | null, compression: 'gzip' | 'zstd', signal?: AbortSignal): Promise<LayerDigests> {
  const s = await driver.diff(id, { parent, compression, digests: true, ...(signal ? { signal } : {}) })
  s.resume()
  return s.digests
}

/** How many repositories a blob's mount is tried from before it is uploaded. */
const MOUNT_TRIES = 3

/** A blob the target repository has (`present`) or gets by a mount from one of `from`; `undefined` otherwise. */
async function reuseBlob(client: RegistryClient, repo: string, blob: StoredBlob, from: readonly BlobSource[], o: { signal?: AbortSignal }): Promise<'present' | 'mounted' | undefined> {
  if (await client.headBlob(repo, blob.digest, o)) return 'present'
  for (const s of from.slice(0, MOUNT_TRIES)) if (await client.mountBlob(repo, blob.digest, s.repository, o)) return 'mounted'
  return undefined
}

/**
 * Copy `blob` into `repo` from the first of its sources that serves it, streamed from the
 * source's response into a chunked upload; `undefined` when none does. A source whose stream
 * fails is noted and the next one tried; the target's own failures are thrown.
 * @throws {BtrfsError} `ERR_DIGEST` (a source served other bytes: the upload is cancelled).
 */
async function copyBlob(
  client: RegistryClient,
  repo: string,
  blob: StoredBlob,
  sources: SourceBlobs,
  onBytes: (from: string, n: number) => void,
  o: { signal?: AbortSignal },
): Promise<string | undefined> {
  for await (const opened of sources.each(blob)) {
    const from = sourceName(opened.source)
    const given: Readable[] = []
    // The first open is the one that answered; a fallback to a monolithic upload opens it again.
    const open = () => {
      const s = deferredStream(given.length === 0 ? async () => opened.stream : opened.reopen, (n) => onBytes(from, n))
      given.push(s)
      return s
    }
    try {
      await client.pushBlob(repo, blob, open, { ...o, head: false })
      return from
    } catch (e) {
      const fromSource = given.find((s) => s.errored)?.errored
      if (!fromSource) throw e
      sources.failed(opened.source, fromSource)
    } finally {
      opened.stream.destroy()
    }
  }
  return undefined
}

/**
 * Push `image` to `target`: each layer's original blob where the target has it or can mount
 * it, else copied from a source repository, else its diff; then the original config and manifest when every layer kept its blob,
 * else a config with the diffIDs of what was pushed and an OCI manifest.
 */
export async function pushImage(driver: BtrfsDriver, image: StoredImage, target: Reference, o: PushOptions): Promise<PushResult> {
  const signal = o.signal
  const call = signal ? { signal } : {}
  const client = new RegistryClient(target, {
    ...(o.auth ? { auth: o.auth } : {}),
    ...(o.insecure ? { insecure: true } : {}),
    ...(o.retries !== undefined ? { retries: o.retries } : {}),
    ...(o.retryDelay !== undefined ? { retryDelay: o.retryDelay } : {}),
  })
  const repo = target.repository
  // Repositories of the target's registry that have the image: where a mount may come from.
  const mountable = (sources: readonly BlobSource[]) => {
    const out: BlobSource[] = []
    for (const s of sources) if (s.registry === target.registry && s.repository !== repo && !out.some((x) => x.repository === s.repository)) out.push(s)
    return out
  }
  const referenced = mountable(image.references.map(parseReference))
  const sources = new SourceBlobs(
    {
      ...(o.sourceAuth ? { sourceAuth: o.sourceAuth } : {}),
      ...(signal ? { signal } : {}),
      ...(o.retries !== undefined ? { retries: o.retries } : {}),
      ...(o.retryDelay !== undefined ? { retryDelay: o.retryDelay } : {}),
    },
    client,
  )
  const n = image.layers.length
  const layers: PushResult['layers'] = []
  const types: string[] = []
  const diffIds: string[] = []
  for (const [i, id] of image.layers.entries()) {
    if (signal?.aborted) throw abortError(signal)
    const event = (state: PushProgress['state'], digest: string, bytes: number, total: number, from?: string) => {
      try {
        o.onProgress?.({ layer: i, layers: n, id, digest, state, bytes, total, ...(from !== undefined ? { from } : {}) })
      } catch {
        // a listener's failure is not the push's
      }
    }
    const known = image.blobs?.[i]
    const failed = sources.failures.length
    if (known && (o.compression === undefined || layerCompression(known.mediaType) === o.compression)) {
      let blob: PushedLayer['blob'] | undefined = await reuseBlob(client, repo, known, mountable([...known.sources, ...referenced]), call)
      let from: string | undefined
      if (!blob) {
        const elsewhere = { ...known, sources: known.sources.filter((s) => !(s.registry === target.registry && s.repository === repo)) }
        from = await copyBlob(client, repo, elsewhere, sources, (f, b) => event('copying', known.digest, b, known.size, f), call)
        if (from !== undefined) blob = 'copied'
      }
      if (blob) {
        event(blob, known.digest, known.size, known.size, from)
        layers.push({ id, digest: known.digest, size: known.size, blob, ...(from !== undefined ? { from } : {}) })
        types.push(known.mediaType)
        diffIds.push(image.diffIds[i])
        continue
      }
    }
    const compression = o.compression ?? 'gzip'
    const parent = i === 0 ? null : image.layers[i - 1]
    const d = await digestsOf(driver, id, parent, compression, signal)
    diffIds.push(d.diffId)
    const diff = () => driver.diff(id, { parent, compression, ...(signal ? { signal } : {}) })
    const blob = await client.pushBlob(repo, d, () => deferredStream(diff, (b) => event('uploading', d.digest, b, d.size)), {
      ...call,
      ...(referenced[0] ? { mountFrom: referenced[0].repository } : {}),
    })
    event(blob, d.digest, d.size, d.size)
    const sourceErrors = sources.failures.slice(failed)
    layers.push({ id, digest: d.digest, size: d.size, blob, ...(sourceErrors.length > 0 ? { sourceErrors } : {}) })
    types.push(compression === 'zstd' ? MediaType.ociLayerZstd : MediaType.ociLayerGzip)
  }
  const original = recordBytes(image)
  const mountFrom = mountable([...(image.blobs ?? []).flatMap((b) => b.sources), ...referenced])[0]
  const tag = target.digest ?? target.tag ?? 'latest'
  const kept = image.blobs !== undefined && layers.every((l, i) => l.digest === image.blobs?.[i].digest)
  if (kept && sha256(original.manifest) === image.digest && sha256(original.config) === image.configDigest) {
    // Every layer kept its blob: the image's own config and manifest, so its digest stays.
    const parsed = parseManifest(original.manifest, image.mediaType)
    if (parsed.kind === 'manifest') {
      const config = await client.pushBlob(repo, parsed.config, original.config, { ...call, ...(mountFrom ? { mountFrom: mountFrom.repository } : {}) })
      const digest = await client.putManifest(repo, tag, original.manifest, image.mediaType, call)
      return { reference: formatReference(target), digest, layers, config }
    }
  }
  const sameDiffs = diffIds.every((x, i) => x === image.diffIds[i])
  const configBytes = sameDiffs ? original.config : Buffer.from(JSON.stringify({ ...(JSON.parse(image.config) as ImageConfig), rootfs: { type: 'layers', diff_ids: diffIds } }))
  const configDesc: Descriptor = { mediaType: MediaType.ociConfig, digest: sha256(configBytes), size: configBytes.length }
  const config = await client.pushBlob(repo, configDesc, configBytes, { ...call, ...(mountFrom ? { mountFrom: mountFrom.repository } : {}) })
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: configDesc,
      layers: layers.map((l, i) => ({ mediaType: ociLayerType(types[i]), digest: l.digest, size: l.size })),
    }),
  )
  const digest = await client.putManifest(repo, tag, manifest, MediaType.ociManifest, call)
  return { reference: formatReference(target), digest, layers, config }
}
