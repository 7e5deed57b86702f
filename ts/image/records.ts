/**
 * The image records on disk: one JSON file per image, `<home>/images/<manifest hex>.json`,
 * written crash-safely (a temporary file, fsynced, renamed into place, the directory fsynced),
 * so a record is either the old one, the new one, or absent, plus `.tmp-*` files that `open`
 * removes.
 */
import { randomBytes } from 'node:crypto'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { BtrfsError } from '../errors'
import type { Descriptor, Platform } from './manifest'

/** The directory of the records, inside the driver's home. */
export const IMAGES_DIR = 'images'
const RECORD = /^([0-9a-f]{64})\.json$/
const TEMP_PREFIX = '.tmp-'

/** A repository a blob came from: where a push to the same registry may mount it from. */
export interface BlobSource {
  /** As references name it: `docker.io`, `127.0.0.1:5000`. */
  registry: string
  repository: string
}

/**
 * A layer's blob as it came into the store (by pull or importLayout): pushed again, it keeps
 * its digest, where a re-made diff would not (the tar and its compression differ).
 */
export interface StoredBlob {
  mediaType: string
  digest: string
  size: number
  /** The repositories it was pulled from (none for a layout). */
  sources: BlobSource[]
}

/** One image as stored (version 1 of the record format). */
export interface StoredImage {
  schemaVersion: 1
  /** `sha256:` of `manifest`. */
  digest: string
  /** Normalized references, sorted. */
  references: string[]
  mediaType: string
  /** The manifest's exact text (its digest is over these bytes). */
  manifest: string
  configDigest: string
  /** The config blob's exact text. */
  config: string
  diffIds: string[]
  /** Layer ids, base first. */
  layers: string[]
  platform?: Platform
  /** Bytes of the layer blobs as the manifest gives them. */
  size: number
  /** When the image came into the store (ms since the epoch). */
  created: number
  /** When the record was last written (ms since the epoch): the newest claim of a reference wins. */
  updated: number
  /** Per layer, base first, the blob it came from; absent for a committed image and in records written before. */
  blobs?: StoredBlob[]
  /** base64 of the manifest's and the config's bytes, only when their text above is not exact (not UTF-8). */
  raw?: { manifest?: string; config?: string }
}

/** `bytes` as record text, and as base64 too when the text would not give the same bytes back. */
export function recordText(bytes: Buffer): { text: string; raw?: string } {
  const text = bytes.toString('utf8')
  return Buffer.from(text, 'utf8').equals(bytes) ? { text } : { text, raw: bytes.toString('base64') }
}

/**
 * The record of an image that came from a registry or a layout: the manifest's and config's
 * exact bytes, and each layer's blob descriptor with where it came from (`source`).
 */
export function imageRecord(
  manifest: { digest: string; mediaType: string; bytes: Buffer; layers: readonly Descriptor[]; config: Descriptor },
  config: Buffer,
  o: { diffIds: string[]; layers: string[]; references: string[]; platform: Platform; source?: BlobSource },
): StoredImage {
  const m = recordText(manifest.bytes)
  const c = recordText(config)
  const raw = { ...(m.raw !== undefined ? { manifest: m.raw } : {}), ...(c.raw !== undefined ? { config: c.raw } : {}) }
  const now = Date.now()
  return {
    schemaVersion: 1,
    digest: manifest.digest,
    references: o.references,
    mediaType: manifest.mediaType,
    manifest: m.text,
    configDigest: manifest.config.digest,
    config: c.text,
    diffIds: o.diffIds,
    layers: o.layers,
    platform: o.platform,
    size: manifest.layers.reduce((n, d) => n + d.size, 0),
    created: now,
    updated: now,
    blobs: manifest.layers.map((d) => ({ mediaType: d.mediaType, digest: d.digest, size: d.size, sources: o.source ? [o.source] : [] })),
    ...(Object.keys(raw).length > 0 ? { raw } : {}),
  }
}

/** Each layer's blob of `rec`, with the sources `old` (a record of the same image) knew as well. */
export function mergeBlobs(rec: StoredImage, old: StoredImage | undefined): StoredBlob[] | undefined {
  const blobs = rec.blobs ?? old?.blobs
  if (!blobs) return undefined
  return blobs.map((b, i) => {
    const sources = [...b.sources]
    for (const s of [rec.blobs?.[i], old?.blobs?.[i]].filter((x) => x?.digest === b.digest).flatMap((x) => x?.sources ?? [])) {
      if (!sources.some((k) => k.registry === s.registry && k.repository === s.repository)) sources.push(s)
    }
    return { ...b, sources }
  })
}

/** The exact bytes of the record's manifest and config. */
export function recordBytes(rec: StoredImage): { manifest: Buffer; config: Buffer } {
  const bytes = (text: string, raw: string | undefined) => (raw === undefined ? Buffer.from(text, 'utf8') : Buffer.from(raw, 'base64'))
  return { manifest: bytes(rec.manifest, rec.raw?.manifest), config: bytes(rec.config, rec.raw?.config) }
}

function badRecord(file: string, why: string): BtrfsError {
  return new BtrfsError('ERR_BAD_RECORD', `ERR_BAD_RECORD: image record ${file}: ${why}`, { path: file })
}

async function syncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

export function recordPath(dir: string, digest: string): string {
  return path.join(dir, `${digest.slice('sha256:'.length)}.json`)
}

/** Write `rec` in place of its record: temp file, fsync, rename, fsync of the directory. */
export async function writeRecord(dir: string, rec: StoredImage): Promise<void> {
  const tmp = path.join(dir, `${TEMP_PREFIX}${randomBytes(6).toString('hex')}.json`)
  const fh = await fsp.open(tmp, 'wx', 0o644)
  try {
    try {
      await fh.writeFile(`${JSON.stringify(rec, null, 2)}\n`)
      await fh.sync()
    } finally {
      await fh.close()
    }
    // Commit point: the rename publishes the whole record.
    await fsp.rename(tmp, recordPath(dir, rec.digest))
  } catch (e) {
    await fsp.rm(tmp, { force: true })
    throw e
  }
  await syncDir(dir)
}

/** Remove an image's record (durably: the directory is fsynced). */
export async function deleteRecord(dir: string, digest: string): Promise<void> {
  await fsp.rm(recordPath(dir, digest), { force: true })
  await syncDir(dir)
}

function checkStored(file: string, v: unknown): StoredImage {
  const r = v as Partial<StoredImage> | null
  if (!r || typeof r !== 'object' || r.schemaVersion !== 1) throw badRecord(file, 'not a version 1 record')
  const strings = (a: unknown) => Array.isArray(a) && a.every((x) => typeof x === 'string')
  if (typeof r.digest !== 'string' || !strings(r.references) || !strings(r.layers) || !strings(r.diffIds)) throw badRecord(file, 'fields missing')
  if (typeof r.manifest !== 'string' || typeof r.config !== 'string' || typeof r.mediaType !== 'string') throw badRecord(file, 'fields missing')
  if (recordPath(path.dirname(file), r.digest) !== file) throw badRecord(file, `it holds ${r.digest}`)
  if (r.blobs !== undefined && !(Array.isArray(r.blobs) && r.blobs.length === r.layers.length && r.blobs.every(isStoredBlob))) throw badRecord(file, 'bad blobs')
  if (r.raw !== undefined && (typeof r.raw !== 'object' || r.raw === null || !Object.values(r.raw).every((v) => typeof v === 'string'))) throw badRecord(file, 'bad raw')
  return r as StoredImage
}

function isStoredBlob(v: unknown): v is StoredBlob {
  const b = v as Partial<StoredBlob> | null
  return (
    !!b &&
    typeof b.mediaType === 'string' &&
    typeof b.digest === 'string' &&
    typeof b.size === 'number' &&
    Array.isArray(b.sources) &&
    b.sources.every((x: Partial<BlobSource> | null) => !!x && typeof x.registry === 'string' && typeof x.repository === 'string')
  )
}

/**
 * Every record in `dir` (none when it does not exist). With `clean`, temporary files a crash
 * left are removed first.
 * @throws {BtrfsError} `ERR_BAD_RECORD` for a record that is not one (never written by us).
 */
export async function readRecords(dir: string, o: { clean: boolean }): Promise<StoredImage[]> {
  let names: string[]
  try {
    names = await fsp.readdir(dir)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw e
  }
  const out: StoredImage[] = []
  for (const name of names.sort()) {
    const file = path.join(dir, name)
    if (name.startsWith(TEMP_PREFIX)) {
      if (o.clean) await fsp.rm(file, { force: true })
      continue
    }
    if (!RECORD.test(name)) continue
    let text: string
    try {
      text = await fsp.readFile(file, 'utf8')
    } catch (e) {
      // Removed meanwhile by the writer (a read-only store reads beside one).
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue
      throw e
    }
    let v: unknown
    try {
      v = JSON.parse(text)
    } catch {
      throw badRecord(file, 'not JSON')
    }
    out.push(checkStored(file, v))
  }
  return out
}
