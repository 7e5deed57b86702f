/**
 * `ImageStore.pull`: resolve the manifest (an index's entry for the platform), fetch and check
 * the config, derive the layer ids from the chain IDs, and fetch the layers that are missing,
 * several at once, each streaming from the HTTP body into the apply path, applied in order as
 * soon as its parent is complete. What it returns is the record to write; the store writes it.
 */
import { PassThrough } from 'node:stream'
import type { BtrfsDriver } from '../driver'
import { BtrfsError } from '../errors'
import { trace } from '../trace'
import { abortError } from '../validate'
import { applyBlob } from './apply-blob'
import type { Credentials } from './auth'
import { chainIds, layerIdOf } from './chain'
import { parseConfig } from './config'
import { MediaType, type Descriptor, type Platform } from './manifest'
import { imageRecord, type StoredImage } from './records'
import { formatReference, type Reference } from './reference'
import { RegistryClient } from './registry'
import { Semaphore } from './semaphore'

/**
 * Options of `ImageStore.pull`.
 * @example await images.pull('ghcr.io/org/app:v1', { auth: { username: 'me', password: token }, concurrency: 4, signal: AbortSignal.timeout(60_000) })
 */
export interface PullOptions {
  /** The platform to take from an index: `'linux/arm64/v8'` or an object; default this machine's. */
  platform?: Platform | string
  /** Credentials; without them `~/.docker/config.json` (`DOCKER_CONFIG`) `auths`, else anonymous. */
  auth?: Credentials
  /** Plain http for a registry that is not on this machine (loopback hosts always get http). */
  insecure?: boolean
  /** Stops the pull: it rejects with an `AbortError`, and leaves no half layer and no record. */
  signal?: AbortSignal
  /** Per-layer events; see {@link PullProgress}. */
  onProgress?: (event: PullProgress) => void
  /** Blob requests open at once; 3 by default. */
  concurrency?: number
  /** Attempts after the first for a 5xx or a lost connection (blobs resume with `Range`); 4 by default. */
  retries?: number
  /** The first backoff in ms, doubled each retry; 200 by default. */
  retryDelay?: number
}

/**
 * One event of a pull, for one layer: `reused` (present already, not fetched), then for a
 * fetched layer `downloading` (about every 100 ms, `bytes` of `total` compressed bytes
 * received) and `done` (applied and verified). Layers are numbered from 0, base first.
 * @example await images.pull('alpine', { onProgress: (e) => console.log(`${e.layer + 1}/${e.layers} ${e.state} ${e.bytes}/${e.total}`) })
 */
export interface PullProgress {
  /** The layer's index, 0 for the base. */
  layer: number
  /** How many layers the image has. */
  layers: number
  /** The layer id (the chain ID's hex). */
  id: string
  /** The blob's digest. */
  digest: string
  state: 'reused' | 'downloading' | 'done'
  /** Compressed bytes received so far (`total` once `done`; 0 when `reused`). */
  bytes: number
  /** The blob's size from the manifest. */
  total: number
}

/** What the pull needs of the store. */
export interface PullHost {
  driver: BtrfsDriver
  /** Run `fn` while no other call changes records or removes layers. */
  locked<T>(fn: () => Promise<T>): Promise<T>
  /** Keep `remove` off these layers until the returned function is called. */
  pin(ids: readonly string[]): () => void
  /** Layers being fetched by another pull of the store, and its promise. */
  inflight: Map<string, Promise<unknown>>
}

const LAYER_TYPES: readonly string[] = [MediaType.ociLayer, MediaType.ociLayerGzip, MediaType.ociLayerZstd, MediaType.dockerLayerGzip, 'application/vnd.docker.image.rootfs.diff.tar']
const CONFIG_MAX = 8 << 20
/**
 * Bytes of a blob read ahead while its parent layer is still being applied: the readable side
 * of its PassThrough. Its writable side takes only what one write brings (READ_AHEAD_IN), so
 * a waiting blob holds at most about READ_AHEAD + READ_AHEAD_IN (a PassThrough given one
 * highWaterMark buffers that much on each side: twice it). Chunks held long are promoted to
 * V8's old space and freed only by a full GC, so what is read ahead also weighs as garbage
 * later: kept small, it bounds the pull's memory (flat in the layer size) without slowing it.
 * 1 MiB, not 4: peak RSS 154 vs 165 MiB for a 96 vs 193 MiB image (4 MiB: 160 vs 214), at
 * the same speed (bench/results/images/NOTES.md); the socket buffers read ahead the rest.
 */
const READ_AHEAD = 1 << 20
const READ_AHEAD_IN = 64 << 10
const PROGRESS_MS = 100

function unsupportedLayer(d: Descriptor, i: number): BtrfsError {
  const foreign = /nondistributable|foreign/.test(d.mediaType)
  return new BtrfsError(
    'ERR_UNSUPPORTED_LAYER',
    `ERR_UNSUPPORTED_LAYER: layer ${i} (${d.digest}) has media type ${JSON.stringify(d.mediaType)}${foreign ? ', a foreign (non-distributable) layer this store does not fetch' : ', not an OCI or Docker layer tar (plain, gzip or zstd)'}`,
  )
}

/**
 * Refuse, before anything is fetched or applied, a layer that is not an OCI or Docker layer tar.
 * @throws {BtrfsError} `ERR_UNSUPPORTED_LAYER`.
 */
export function checkLayerTypes(layers: readonly Descriptor[]): void {
  layers.forEach((d, i) => {
    if (!LAYER_TYPES.includes(d.mediaType)) throw unsupportedLayer(d, i)
  })
}

/** Read a small blob whole (the config), its digest checked by the stream. */
async function readBlob(client: RegistryClient, repository: string, d: Descriptor, signal?: AbortSignal): Promise<Buffer> {
  if (d.size > CONFIG_MAX) throw new BtrfsError('ERR_BAD_MANIFEST', `ERR_BAD_MANIFEST: the config is ${d.size} bytes, more than ${CONFIG_MAX}`)
  const s = await client.getBlob(repository, d.digest, { size: d.size, signal })
  const parts: Buffer[] = []
  for await (const c of s) parts.push(c as Buffer)
  return Buffer.concat(parts)
}

/**
 * Fetch and apply what `ref` needs, then hand its record (references: just `ref`'s) to
 * `record`, which writes it; the layers stay pinned against `remove` until it has.
 */
export async function pullImage<T>(
  host: PullHost,
  ref: Reference,
  o: Omit<PullOptions, 'platform'> & { platform?: Platform },
  record: (rec: StoredImage) => Promise<T>,
): Promise<T> {
  const { driver } = host
  const signal = o.signal
  const client = new RegistryClient(ref, {
    ...(o.auth ? { auth: o.auth } : {}),
    ...(o.insecure ? { insecure: true } : {}),
    ...(o.retries !== undefined ? { retries: o.retries } : {}),
    ...(o.retryDelay !== undefined ? { retryDelay: o.retryDelay } : {}),
  })
  const repo = ref.repository
  trace('pull.start', formatReference(ref))
  const { manifest, index } = await client.getImageManifest(repo, ref.digest ?? (ref.tag as string), { signal, platform: o.platform })
  if (manifest.parsed.kind !== 'manifest') throw new BtrfsError('ERR_BAD_MANIFEST', 'ERR_BAD_MANIFEST: not an image manifest')
  const layers = manifest.parsed.layers
  checkLayerTypes(layers)
  trace('pull.manifest', manifest.digest)
  const configBytes = await readBlob(client, repo, manifest.parsed.config, signal)
  trace('pull.config', manifest.parsed.config.digest)
  const config = parseConfig(configBytes, layers.length)
  const diffIds = config.rootfs.diff_ids
  const ids = chainIds(diffIds).map(layerIdOf)
  const fromIndex = index?.parsed.kind === 'index' ? index.parsed.manifests.find((m) => m.digest === manifest.digest)?.platform : undefined
  const platform: Platform = fromIndex ?? { os: config.os, architecture: config.architecture, ...(config.variant ? { variant: config.variant } : {}) }

  const emit = (e: PullProgress) => {
    try {
      o.onProgress?.(e)
    } catch {
      // a listener's failure is not the pull's
    }
  }
  // Pinned against `remove` from the moment we look at what is present until the record is written.
  let present: boolean[] = []
  const unpin = await host.locked(async () => {
    const un = host.pin(ids)
    try {
      present = await Promise.all(ids.map((id) => driver.exists(id)))
    } catch (e) {
      un()
      throw e
    }
    return un
  })
  try {
    await fetchLayers(host, client, repo, layers, diffIds, ids, present, { ...o, emit })
    trace('pull.layers', `${layers.length}`)
    const written = await record(
      imageRecord({ digest: manifest.digest, mediaType: manifest.mediaType, bytes: manifest.bytes, layers, config: manifest.parsed.config }, configBytes, {
        diffIds,
        layers: ids,
        references: [formatReference(ref)],
        platform,
        source: { registry: ref.registry, repository: repo },
      }),
    )
    trace('pull.recorded', manifest.digest)
    return written
  } finally {
    unpin()
  }
}

/** `p`, or an `AbortError` as soon as `signal` fires. */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal, user?: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(abortError(user))
  return new Promise<T>((resolve, reject) => {
    const stop = () => reject(abortError(user))
    signal.addEventListener('abort', stop, { once: true })
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', stop))
  })
}

async function fetchLayers(
  host: PullHost,
  client: RegistryClient,
  repo: string,
  layers: Descriptor[],
  diffIds: string[],
  ids: string[],
  present: boolean[],
  o: { signal?: AbortSignal; concurrency?: number; emit: (e: PullProgress) => void },
): Promise<void> {
  const { driver } = host
  const n = layers.length
  const inner = new AbortController()
  const stop = () => inner.abort(o.signal?.reason)
  if (o.signal?.aborted) throw abortError(o.signal)
  o.signal?.addEventListener('abort', stop, { once: true })
  const slots = new Semaphore(o.concurrency ?? 3)
  let first: { error: unknown } | undefined
  let parentDone: Promise<void> = Promise.resolve()
  const tasks: Promise<void>[] = []
  for (let i = 0; i < n; i++) {
    const d = layers[i]
    const id = ids[i]
    const parent = i === 0 ? null : ids[i - 1]
    const event = (state: PullProgress['state'], bytes: number) => o.emit({ layer: i, layers: n, id, digest: d.digest, state, bytes, total: d.size })
    if (present[i]) {
      event('reused', 0)
      continue
    }
    const other = host.inflight.get(id)
    const waitParent = parentDone
    const task = (async () => {
      if (other) {
        // Another pull of this store fetches it: wait, and fetch it ourselves only if that failed.
        await untilAborted(other.catch(() => undefined), inner.signal, o.signal)
        if (await driver.exists(id)) {
          event('reused', 0)
          return
        }
      }
      await slots.acquire(inner.signal)
      try {
        trace('blob.request', `${i} ${d.digest}`)
        const blob = await client.getBlob(repo, d.digest, { size: d.size, signal: inner.signal })
        trace('blob.response', `${i}`)
        let bytes = 0
        let last = 0
        blob.on('data', (c: Buffer) => {
          if (bytes === 0) trace('blob.firstByte', `${i}`)
          bytes += c.length
          const t = performance.now()
          if (t - last >= PROGRESS_MS) {
            last = t
            event('downloading', bytes)
          }
        })
        const ahead = new PassThrough({ readableHighWaterMark: READ_AHEAD, writableHighWaterMark: READ_AHEAD_IN })
        // Errors (ERR_DIGEST at the end) must reach the reader: pipe() does not carry them.
        blob.on('error', (e) => ahead.destroy(e))
        ahead.on('error', () => undefined) // kept in ahead.errored for applyBlob
        blob.pipe(ahead)
        blob.once('end', () => trace('blob.lastByte', `${i}`))
        ahead.once('close', () => blob.destroy())
        try {
          await waitParent
        } catch (e) {
          ahead.destroy()
          throw e
        }
        if (inner.signal.aborted) {
          ahead.destroy()
          throw abortError(o.signal)
        }
        trace('blob.applyStart', `${i} ${id}`)
        await applyBlob(driver, id, parent, ahead, { digest: d.digest, size: d.size, diffId: diffIds[i] }, { signal: inner.signal })
        trace('blob.applyEnd', `${i} ${id}`)
        event('done', d.size)
      } finally {
        slots.release()
      }
    })()
    const settled = task.catch((e: unknown) => {
      // The first failure is the cause; the others follow from the abort it triggers.
      first ??= { error: e }
      inner.abort(e)
      throw e
    })
    if (!other) {
      host.inflight.set(id, settled)
      const off = () => {
        if (host.inflight.get(id) === settled) host.inflight.delete(id)
      }
      settled.then(off, off)
    }
    tasks.push(settled)
    parentDone = settled
  }
  try {
    await Promise.allSettled(tasks)
  } finally {
    o.signal?.removeEventListener('abort', stop)
  }
  if (first) {
    if (o.signal?.aborted) throw abortError(o.signal)
    throw (first as { error: unknown }).error
  }
}
