/**
 * `ImageStore.push`: each layer's own blob (the one it was pulled or imported as) where the
 * target repository has it (HEAD) or can mount it from a repository of the same registry it
 * came from; only otherwise the layer's diff against its parent (gzip, or zstd if asked), hashed
 * in a first pass (the registry needs the digest before the bytes: HEAD, mount, and the upload's
 * closing PUT) and streamed in a second. When every layer kept its blob, the image's own config
 * and manifest follow, so its digest stays; else a config with the diffIDs of what was pushed
 * and an OCI manifest. The diffs are made the same way twice, so their bytes are the same; a
 * registry that finds otherwise refuses the blob (`ERR_DIGEST`).
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
  /** Credentials; without them `~/.docker/config.json` (`DOCKER_CONFIG`) `auths`, else anonymous. */
  auth?: Credentials
  /** Plain http for a registry that is not on this machine. */
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
 * One event of a push, for one layer (`layer` from 0, base first): `uploading` with the bytes
 * sent so far, then `present` (the registry had it), `mounted` (from another repository) or
 * `uploaded`.
 * @example await images.push('app:v1', 'localhost:5000/app:v1', { onProgress: (e) => console.log(e.layer, e.state, e.bytes) })
 */
export interface PushProgress {
  layer: number
  layers: number
  id: string
  digest: string
  state: 'uploading' | 'present' | 'mounted' | 'uploaded'
  bytes: number
  total: number
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
  layers: { id: string; digest: string; size: number; blob: 'present' | 'mounted' | 'uploaded' }[]
  /** What was done for the config. */
  config: 'present' | 'mounted' | 'uploaded'
}

/** The diff of `id` against `parent` as the stream a push source returns at once. */
function diffStream(driver: BtrfsDriver, id: string, parent: string | null, compression: 'gzip' | 'zstd', signal?: AbortSignal, onBytes?: (n: number) => void): Readable {
  const out = new PassThrough({ highWaterMark: 1 << 20 })
  let n = 0
  driver.diff(id, { parent, compression, ...(signal ? { signal } : {}) }).then(
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
 * Push `image` to `target`: each layer's original blob where the target has it or can mount
 * it, else its diff; then the original config and manifest when every layer kept its blob,
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
  const n = image.layers.length
  const layers: PushResult['layers'] = []
  const types: string[] = []
  const diffIds: string[] = []
  for (const [i, id] of image.layers.entries()) {
    if (signal?.aborted) throw abortError(signal)
    const event = (state: PushProgress['state'], digest: string, bytes: number, total: number) => {
      try {
        o.onProgress?.({ layer: i, layers: n, id, digest, state, bytes, total })
      } catch {
        // a listener's failure is not the push's
      }
    }
    const known = image.blobs?.[i]
    if (known && (o.compression === undefined || layerCompression(known.mediaType) === o.compression)) {
      const blob = await reuseBlob(client, repo, known, mountable([...known.sources, ...referenced]), call)
      if (blob) {
        event(blob, known.digest, known.size, known.size)
        layers.push({ id, digest: known.digest, size: known.size, blob })
        types.push(known.mediaType)
        diffIds.push(image.diffIds[i])
        continue
      }
    }
    const compression = o.compression ?? 'gzip'
    const parent = i === 0 ? null : image.layers[i - 1]
    const d = await digestsOf(driver, id, parent, compression, signal)
    diffIds.push(d.diffId)
    const blob = await client.pushBlob(repo, d, () => diffStream(driver, id, parent, compression, signal, (b) => event('uploading', d.digest, b, d.size)), {
      ...call,
      ...(referenced[0] ? { mountFrom: referenced[0].repository } : {}),
    })
    event(blob, d.digest, d.size, d.size)
    layers.push({ id, digest: d.digest, size: d.size, blob })
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
