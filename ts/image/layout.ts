/**
 * OCI image layouts (image spec image-layout.md), the directory skopeo, umoci, crane and buildah
 * read and write: `oci-layout`, `index.json`, `blobs/sha256/<hex>`. Export writes an image's
 * layers as diffs of its driver layers (one pass each: the blob is written and hashed at once,
 * then renamed to its digest); import applies the layout's layer blobs with `applyLayer`, every
 * digest, size and diffID checked.
 */
import { randomBytes } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { pipeline } from 'node:stream/promises'
import type { BtrfsDriver } from '../driver'
import { BtrfsError } from '../errors'
import { abortError } from '../validate'
import { chainIds, layerIdOf } from './chain'
import { parseConfig, type ImageConfig } from './config'
import { MediaType, parseManifest, selectPlatform, type Descriptor, type Platform } from './manifest'
import { checkLayerTypes } from './pull'
import { imageRecord, type StoredImage } from './records'
import { isSha256Digest } from './reference'
import { digestError, sha256 } from './registry'

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
  /** The layers' compression: `'gzip'` (default) or `'zstd'`. */
  compression?: 'gzip' | 'zstd'
  signal?: AbortSignal
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

/** Write `image` into the layout `dir` (made when missing; an existing one gets another entry). Resolves with the manifest descriptor. */
export async function exportLayout(driver: BtrfsDriver, image: StoredImage, dir: string, o: ExportLayoutOptions & { tag?: string }): Promise<Descriptor> {
  const compression = o.compression ?? 'gzip'
  await fsp.mkdir(path.join(dir, 'blobs', 'sha256'), { recursive: true })
  const layers: Descriptor[] = []
  const diffIds: string[] = []
  for (const [i, id] of image.layers.entries()) {
    if (o.signal?.aborted) throw abortError(o.signal)
    const tmp = path.join(dir, 'blobs', 'sha256', `.tmp-${randomBytes(6).toString('hex')}`)
    try {
      const s = await driver.diff(id, { parent: i === 0 ? null : image.layers[i - 1], compression, digests: true, ...(o.signal ? { signal: o.signal } : {}) })
      await pipeline(s, createWriteStream(tmp))
      const d = await s.digests
      await fsp.rename(tmp, blobFile(dir, d.digest))
      layers.push({ mediaType: compression === 'zstd' ? MediaType.ociLayerZstd : MediaType.ociLayerGzip, digest: d.digest, size: d.size })
      diffIds.push(d.diffId)
    } finally {
      await fsp.rm(tmp, { force: true })
    }
  }
  const same = diffIds.every((x, i) => x === image.diffIds[i])
  const configBytes = same ? Buffer.from(image.config) : Buffer.from(JSON.stringify({ ...(JSON.parse(image.config) as ImageConfig), rootfs: { type: 'layers', diff_ids: diffIds } }))
  const config = { ...(await putBlob(dir, configBytes)), mediaType: MediaType.ociConfig }
  const manifestBytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config, layers }))
  const manifest: Descriptor = {
    ...(await putBlob(dir, manifestBytes)),
    mediaType: MediaType.ociManifest,
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
  return manifest
}
