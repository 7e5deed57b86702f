/**
 * OCI image layouts (image spec image-layout.md), the directory skopeo, umoci, crane and buildah
 * read and write: `oci-layout`, `index.json`, `blobs/sha256/<hex>`. Export writes an image's
 * layers as diffs of its driver layers (one pass each: the blob is written and hashed at once,
 * then renamed to its digest); import applies the layout's layer blobs with `applyLayer`, every
 * digest, size and diffID checked.
 */
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { BtrfsDriver } from '../driver'
import { BtrfsError } from '../errors'
import { abortError } from '../validate'
import type { Credentials } from './auth'
import { chainIds, layerIdOf } from './chain'
import { parseConfig, type ImageConfig } from './config'
import { layerCompression, MediaType, ociLayerType, parseManifest, selectPlatform, type Descriptor, type Platform } from './manifest'
import { checkLayerTypes } from './pull'
import { imageRecord, recordBytes, type StoredBlob, type StoredImage } from './records'
import { isSha256Digest } from './reference'
import { digestError, sha256 } from './registry'
import { sourceName, SourceBlobs } from './source-blobs'

/**
 * Options of `ImageStore.importLayout`.
 * @example await images.importLayout('/tmp/app-oci', { reference: 'localhost:5000/app:v1', platform: 'linux/arm64' })
 */
export interface ImportLayoutOptions {
  /** The reference to give the image; the layout's `org.opencontainers.image.ref.name` picks among several entries when it is this tag. */
  reference?: string
  /** The platform to take from an index; default this machine's. */
  platform?: Platform | string
  signal?: AbortSignal
}

/**
 * Options of `ImageStore.exportLayout`.
 * @example await images.exportLayout('alpine', '/tmp/alpine-oci', { compression: 'zstd' })
 */
export interface ExportLayoutOptions {
  /**
   * The layers' compression: `'gzip'` or `'zstd'`. Unset, a layer's own blob goes as it came
   * (any compression) and a diff as gzip; set, only blobs of this compression are kept.
   */
  compression?: 'gzip' | 'zstd'
  /** Every layer as its diff made again (other digests), as before blobs were kept: no network. */
  rediff?: boolean
  /** No network: a layer's own blob is kept only when the layout has it already; the others are diffs made again. */
  offline?: boolean
  /**
   * Credentials for the registries the blobs are fetched from, keyed by registry as
   * references name it (`docker.io`, `127.0.0.1:5000`); a registry without an entry gets its
   * `~/.docker/config.json` entry, else none.
   */
  sourceAuth?: Record<string, Credentials>
  signal?: AbortSignal
  /** One event per layer, once it is in the layout; see {@link ExportedLayer}. */
  onProgress?: (event: ExportedLayer & { layer: number; layers: number }) => void
}

/** How one layer went into the layout. */
export interface ExportedLayer {
  id: string
  digest: string
  size: number
  /**
   * `present` (the layout had the layer's own blob), `copied` (its own blob, fetched from
   * `from`, a repository it was pulled from, and verified) or `diffed` (its diff made again).
   */
  blob: 'present' | 'copied' | 'diffed'
  /** For `copied`: the repository the blob came from, `registry/repository`. */
  from?: string
  /** For `diffed`: why each source of the blob asked for it failed (unreachable, 404, credentials refused). */
  sourceErrors?: string[]
}

/**
 * What `ImageStore.exportLayout` wrote.
 * @example const { digest, layers } = await images.exportLayout('alpine', '/tmp/alpine-oci')
 */
export interface ExportResult {
  /** The manifest's digest: the pulled one when every layer kept its blob. */
  digest: string
  size: number
  mediaType: string
  /** Per layer, base first. */
  layers: ExportedLayer[]
}

const REF_NAME = 'org.opencontainers.image.ref.name'
const SMALL_MAX = 8 << 20

function bad(why: string): BtrfsError {
  return new BtrfsError('ERR_BAD_MANIFEST', `ERR_BAD_MANIFEST: OCI layout: ${why}`)
}

function blobFile(dir: string, digest: string): string {
  if (!isSha256Digest(digest)) throw bad(`${JSON.stringify(digest)} is not a sha256 digest`)
  return path.join(dir, 'blobs', 'sha256', digest.slice(7))
}

/** A small blob of the layout (a manifest, an index, a config), read whole and checked. */
async function readBlob(dir: string, d: Pick<Descriptor, 'digest' | 'size'>): Promise<Buffer> {
  if (d.size > SMALL_MAX) throw bad(`${d.digest} is ${d.size} bytes, more than ${SMALL_MAX}`)
  const file = blobFile(dir, d.digest)
  let bytes: Buffer
  try {
    bytes = await fsp.readFile(file)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new BtrfsError('ENOENT', `ENOENT: blob ${d.digest} is missing from the layout`, { path: file })
    throw e
  }
  if (bytes.length !== d.size) throw digestError(`layout blob ${d.digest}: size`, `${d.size} bytes`, String(bytes.length))
  const got = sha256(bytes)
  if (got !== d.digest) throw digestError(`layout blob ${file}`, d.digest, got)
  return bytes
}

async function readJson(file: string): Promise<unknown> {
  try {
    return JSON.parse(await fsp.readFile(file, 'utf8'))
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new BtrfsError('ENOENT', `ENOENT: ${file} does not exist (not an OCI layout?)`, { path: file })
    throw bad(`${file} is not JSON`)
  }
}

/** Apply the image `dir` holds; resolves with its record (references: `reference`'s, when given). */
export async function importLayout(
  driver: BtrfsDriver,
  dir: string,
  o: { reference?: string; tag?: string; platform?: Platform; signal?: AbortSignal },
  present: (ids: string[]) => Promise<boolean[]>,
): Promise<StoredImage> {
  const layoutFile = (await readJson(path.join(dir, 'oci-layout'))) as { imageLayoutVersion?: unknown }
  if (typeof layoutFile?.imageLayoutVersion !== 'string') throw bad('oci-layout has no imageLayoutVersion')
  const indexBytes = await fsp.readFile(path.join(dir, 'index.json'))
  const index = parseManifest(indexBytes, MediaType.ociIndex)
  if (index.kind !== 'index') throw bad('index.json is not an index')
  let entries = index.manifests
  const named = o.tag !== undefined ? entries.filter((m) => m.annotations?.[REF_NAME] === o.tag) : []
  if (named.length > 0) entries = named
  let entry: Descriptor = entries.length === 1 ? entries[0] : selectPlatform(entries, o.platform)
  let platform = entry.platform
  for (let depth = 0; entry.mediaType === MediaType.ociIndex || entry.mediaType === MediaType.dockerManifestList; depth++) {
    if (depth > 4) throw bad('indexes nested more than 4 deep')
    const inner = parseManifest(await readBlob(dir, entry), entry.mediaType)
    if (inner.kind !== 'index') throw bad(`${entry.digest} is not an index`)
    entry = selectPlatform(inner.manifests, o.platform)
    platform = entry.platform
  }
  const manifestBytes = await readBlob(dir, entry)
  const manifest = parseManifest(manifestBytes, entry.mediaType)
  if (manifest.kind !== 'manifest') throw bad(`${entry.digest} is not an image manifest`)
  checkLayerTypes(manifest.layers)
  const configBytes = await readBlob(dir, manifest.config)
  const config = parseConfig(configBytes, manifest.layers.length)
  const diffIds = config.rootfs.diff_ids
  const ids = chainIds(diffIds).map(layerIdOf)
  const have = await present(ids)
  for (const [i, d] of manifest.layers.entries()) {
    if (have[i]) continue
    if (o.signal?.aborted) throw abortError(o.signal)
    await driver.applyLayer(ids[i], blobFile(dir, d.digest), {
      parent: i === 0 ? null : ids[i - 1],
      verify: { digest: d.digest, size: d.size, diffId: diffIds[i] },
      ...(o.signal ? { signal: o.signal } : {}),
    })
  }
  return imageRecord({ digest: entry.digest, mediaType: entry.mediaType, bytes: manifestBytes, layers: manifest.layers, config: manifest.config }, configBytes, {
    diffIds,
    layers: ids,
    references: o.reference ? [o.reference] : [],
    platform: platform ?? { os: config.os, architecture: config.architecture, ...(config.variant ? { variant: config.variant } : {}) },
  })
}

/** Write `bytes` as a blob of the layout (no-op when it is there). */
async function putBlob(dir: string, bytes: Buffer): Promise<Descriptor & { mediaType: '' }> {
  const digest = sha256(bytes)
  const file = blobFile(dir, digest)
  const tmp = `${file}.tmp-${randomBytes(4).toString('hex')}`
  await fsp.writeFile(tmp, bytes)
  await fsp.rename(tmp, file)
  return { mediaType: '', digest, size: bytes.length }
}

/** Whether the layout's file of `blob` holds exactly its bytes (size, then sha256). */
async function hasBlob(dir: string, blob: StoredBlob, signal?: AbortSignal): Promise<boolean> {
  const file = blobFile(dir, blob.digest)
  try {
    if ((await fsp.stat(file)).size !== blob.size) return false
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false
    throw e
  }
  const hash = createHash('sha256')
  await pipeline(createReadStream(file), hash, { ...(signal ? { signal } : {}) })
  return `sha256:${hash.digest('hex')}` === blob.digest
}

/**
 * Stream `input` into the layout as a blob: a temporary file, renamed to its digest (given, or
 * known once the stream ended) only when the stream ended without error (verified).
 */
async function writeStreamed(dir: string, input: Readable, digest: string | (() => Promise<string>)): Promise<void> {
  const tmp = path.join(dir, 'blobs', 'sha256', `.tmp-${randomBytes(6).toString('hex')}`)
  try {
    await pipeline(input, createWriteStream(tmp))
    await fsp.rename(tmp, blobFile(dir, typeof digest === 'string' ? digest : await digest()))
  } finally {
    await fsp.rm(tmp, { force: true })
  }
}

/** The layer's own blob into the layout: there already, or fetched from a source; `undefined` when neither. */
async function keepBlob(dir: string, blob: StoredBlob, sources: SourceBlobs | undefined, signal?: AbortSignal): Promise<Pick<ExportedLayer, 'blob' | 'from'> | undefined> {
  if (await hasBlob(dir, blob, signal)) return { blob: 'present' }
  if (!sources) return undefined
  for await (const opened of sources.each(blob)) {
    try {
      await writeStreamed(dir, opened.stream, blob.digest)
      return { blob: 'copied', from: sourceName(opened.source) }
    } catch (e) {
      sources.failed(opened.source, e)
    }
  }
  return undefined
}

/**
 * Write `image` into the layout `dir` (made when missing; an existing one gets another entry):
 * each layer's own blob when the layout has it or a source serves it, else its diff; then the
 * image's own config and manifest when every layer kept its blob, else a config naming the
 * diffs' diffIDs and an OCI manifest. Resolves with the manifest descriptor and what each layer did.
 */
export async function exportLayout(driver: BtrfsDriver, image: StoredImage, dir: string, o: ExportLayoutOptions & { tag?: string }): Promise<{ manifest: Descriptor; layers: ExportedLayer[] }> {
  await fsp.mkdir(path.join(dir, 'blobs', 'sha256'), { recursive: true })
  const sources = o.offline || o.rediff ? undefined : new SourceBlobs({ ...(o.sourceAuth ? { sourceAuth: o.sourceAuth } : {}), ...(o.signal ? { signal: o.signal } : {}) })
  const layers: Descriptor[] = []
  const done: ExportedLayer[] = []
  const diffIds: string[] = []
  for (const [i, id] of image.layers.entries()) {
    if (o.signal?.aborted) throw abortError(o.signal)
    const known = image.blobs?.[i]
    const failed = sources?.failures.length ?? 0
    const kept = known && !o.rediff && (o.compression === undefined || layerCompression(known.mediaType) === o.compression) ? await keepBlob(dir, known, sources, o.signal) : undefined
    if (known && kept) {
      // In an OCI manifest (when another layer is diffed) Docker's layer type goes as OCI's.
      layers.push({ mediaType: ociLayerType(known.mediaType), digest: known.digest, size: known.size })
      done.push({ id, digest: known.digest, size: known.size, ...kept })
      diffIds.push(image.diffIds[i])
    } else {
      const compression = o.compression ?? 'gzip'
      const s = await driver.diff(id, { parent: i === 0 ? null : image.layers[i - 1], compression, digests: true, ...(o.signal ? { signal: o.signal } : {}) })
      await writeStreamed(dir, s, async () => (await s.digests).digest)
      const d = await s.digests
      layers.push({ mediaType: compression === 'zstd' ? MediaType.ociLayerZstd : MediaType.ociLayerGzip, digest: d.digest, size: d.size })
      const sourceErrors = sources?.failures.slice(failed) ?? []
      done.push({ id, digest: d.digest, size: d.size, blob: 'diffed', ...(sourceErrors.length > 0 ? { sourceErrors } : {}) })
      diffIds.push(d.diffId)
    }
    try {
      o.onProgress?.({ ...done[i], layer: i, layers: image.layers.length })
    } catch {
      // a listener's failure is not the export's
    }
  }
  const original = recordBytes(image)
  const same = diffIds.every((x, i) => x === image.diffIds[i])
  const whole = image.blobs !== undefined && done.every((l) => l.blob !== 'diffed') && sha256(original.manifest) === image.digest && sha256(original.config) === image.configDigest
  const configBytes = same ? original.config : Buffer.from(JSON.stringify({ ...(JSON.parse(image.config) as ImageConfig), rootfs: { type: 'layers', diff_ids: diffIds } }))
  const config = { ...(await putBlob(dir, configBytes)), mediaType: MediaType.ociConfig }
  // Every layer kept its blob: the image's own manifest, so its digest stays.
  const manifestBytes = whole ? original.manifest : Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config, layers }))
  const manifest: Descriptor = {
    ...(await putBlob(dir, manifestBytes)),
    mediaType: whole ? image.mediaType : MediaType.ociManifest,
    ...(image.platform ? { platform: image.platform } : {}),
    ...(o.tag ? { annotations: { [REF_NAME]: o.tag } } : {}),
  }
  await fsp.writeFile(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }))
  // index.json: this entry in place of one with the same tag (or digest), the others kept.
  let manifests: Descriptor[] = []
  try {
    const old = parseManifest(await fsp.readFile(path.join(dir, 'index.json')), MediaType.ociIndex)
    if (old.kind === 'index') manifests = old.manifests
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e
  }
  manifests = manifests.filter((m) => m.digest !== manifest.digest && !(o.tag && m.annotations?.[REF_NAME] === o.tag))
  manifests.push(manifest)
  const tmp = path.join(dir, `.index.json.tmp-${randomBytes(4).toString('hex')}`)
  await fsp.writeFile(tmp, JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests }))
  await fsp.rename(tmp, path.join(dir, 'index.json'))
  return { manifest, layers: done }
}
