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
import type { Platform } from './manifest'

/** The directory of the records, inside the driver's home. */
export const IMAGES_DIR = 'images'
const RECORD = /^([0-9a-f]{64})\.json$/
const TEMP_PREFIX = '.tmp-'

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
  return r as StoredImage
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
