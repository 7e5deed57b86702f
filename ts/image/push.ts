/**
 * `ImageStore.push`: an image's layers as diffs of the driver's layers (gzip, or zstd if asked),
 * each hashed in a first pass (the registry needs the digest before the bytes: HEAD, mount, and
 * the upload's closing PUT) and streamed in a second, skipped when the registry has it; then
 * the config (its diffIDs those of the diffs, when they differ from the recorded ones) and an
 * OCI manifest, under the tag. The diffs are made the same way twice, so their bytes are the
 * same; a registry that finds otherwise refuses the blob (`ERR_DIGEST`).
 */
import { PassThrough, type Readable } from 'node:stream'
import type { BtrfsDriver, LayerDigests } from '../driver'
import { abortError } from '../validate'
import type { Credentials } from './auth'
import type { ImageConfig } from './config'
import { MediaType, type Descriptor } from './manifest'
import type { StoredImage } from './records'
import { formatReference, type Reference } from './reference'
import { RegistryClient, sha256 } from './registry'

/**
 * Options of `ImageStore.push`.
 * @example await images.push('app:v1', 'registry.example.com/team/app:v1', { compression: 'zstd', auth: { username, password } })
 */
export interface PushOptions {
  /** The layers' compression: `'gzip'` (default) or `'zstd'`. */
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

/** Push `image` to `target`. */
export async function pushImage(driver: BtrfsDriver, image: StoredImage, target: Reference, o: PushOptions): Promise<PushResult> {
  const compression = o.compression ?? 'gzip'
  const signal = o.signal
  const client = new RegistryClient(target, {
    ...(o.auth ? { auth: o.auth } : {}),
    ...(o.insecure ? { insecure: true } : {}),
    ...(o.retries !== undefined ? { retries: o.retries } : {}),
    ...(o.retryDelay !== undefined ? { retryDelay: o.retryDelay } : {}),
  })
  const repo = target.repository
  // A repository of the same registry that has the image: where a mount may come from.
  const mountFrom = image.references
    .map((r) => /^([^/]+)\/([^:@]+)/.exec(r))
    .find((m) => m && m[1] === target.registry && m[2] !== repo)?.[2]
  const n = image.layers.length
  const layers: PushResult['layers'] = []
  const diffIds: string[] = []
  for (const [i, id] of image.layers.entries()) {
    if (signal?.aborted) throw abortError(signal)
    const parent = i === 0 ? null : image.layers[i - 1]
    const d = await digestsOf(driver, id, parent, compression, signal)
    diffIds.push(d.diffId)
    const event = (state: PushProgress['state'], bytes: number) => {
      try {
        o.onProgress?.({ layer: i, layers: n, id, digest: d.digest, state, bytes, total: d.size })
      } catch {
        // a listener's failure is not the push's
      }
    }
    const blob = await client.pushBlob(repo, d, () => diffStream(driver, id, parent, compression, signal, (b) => event('uploading', b)), {
      ...(signal ? { signal } : {}),
      ...(mountFrom ? { mountFrom } : {}),
    })
    event(blob, d.size)
    layers.push({ id, digest: d.digest, size: d.size, blob })
  }
  const sameDiffs = diffIds.every((x, i) => x === image.diffIds[i])
  const configBytes = sameDiffs
    ? Buffer.from(image.config)
    : Buffer.from(JSON.stringify({ ...(JSON.parse(image.config) as ImageConfig), rootfs: { type: 'layers', diff_ids: diffIds } }))
  const configDesc: Descriptor = { mediaType: MediaType.ociConfig, digest: sha256(configBytes), size: configBytes.length }
  const config = await client.pushBlob(repo, configDesc, configBytes, { ...(signal ? { signal } : {}) })
  const layerType = compression === 'zstd' ? MediaType.ociLayerZstd : MediaType.ociLayerGzip
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: configDesc,
      layers: layers.map((l) => ({ mediaType: layerType, digest: l.digest, size: l.size })),
    }),
  )
  const digest = await client.putManifest(repo, target.digest ?? target.tag ?? 'latest', manifest, MediaType.ociManifest, { ...(signal ? { signal } : {}) })
  return { reference: formatReference(target), digest, layers, config }
}
