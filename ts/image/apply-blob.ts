/**
 * One layer blob into the driver: the single place the pull calls the apply path.
 *
 * TEMPORARY until the `blobs` branch lands `driver.applyLayer(id, input, { parent, verify })`
 * (atomic create, digest and diffID verified in Rust): `create` + `applyDiff`, the compressed
 * sha256 and (for gzip and plain layers) the diffID hashed here on the way, and the layer
 * removed again on any failure. Unlike applyLayer, the layer is visible between `create` and
 * the end of `applyDiff`.
 */
import { createHash, type Hash } from 'node:crypto'
import { PassThrough, Transform, type Readable } from 'node:stream'
import { createGunzip } from 'node:zlib'
import type { BtrfsDriver } from '../driver'
import { digestError } from './registry'

/** What the layer must be: the manifest's descriptor and the config's diffID. */
export interface BlobExpectation {
  digest: string
  size: number
  diffId: string
}

/** What was applied. */
export interface AppliedBlob {
  digest: string
  size: number
  diffId: string
  uncompressedSize: number
}

type Format = 'gzip' | 'zstd' | 'plain'

function formatOf(b: Buffer): Format {
  if (b[0] === 0x1f && b[1] === 0x8b) return 'gzip'
  if (b[0] === 0x28 && b[1] === 0xb5 && b[2] === 0x2f && b[3] === 0xfd) return 'zstd'
  return 'plain'
}

/** Hashes the bytes going through, and the uncompressed bytes of a gzip or plain stream. */
class Hasher extends Transform {
  readonly compressed: Hash = createHash('sha256')
  size = 0
  format: Format | undefined
  #gunzip: ReturnType<typeof createGunzip> | undefined
  #plain: Hash | undefined
  readonly #uncompressed: Hash = createHash('sha256')
  #uncompressedSize = 0
  #done: Promise<void> = Promise.resolve()

  _transform(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null, data?: Buffer) => void): void {
    if (this.format === undefined) {
      this.format = formatOf(chunk)
      if (this.format === 'gzip') {
        const g = createGunzip()
        g.on('data', (d: Buffer) => {
          this.#uncompressed.update(d)
          this.#uncompressedSize += d.length
        })
        this.#done = new Promise((resolve, reject) => {
          g.once('end', resolve)
          g.once('error', reject)
        })
        this.#done.catch(() => undefined)
        this.#gunzip = g
      } else if (this.format === 'plain') {
        this.#plain = this.#uncompressed
      }
    }
    this.compressed.update(chunk)
    this.size += chunk.length
    if (this.#plain) {
      this.#plain.update(chunk)
      this.#uncompressedSize += chunk.length
    }
    const g = this.#gunzip
    if (g && !g.destroyed && !g.write(chunk)) {
      // A gzip stream that breaks never drains: its error then lets the bytes go on (the diffID check fails).
      const go = () => {
        g.off('drain', go)
        g.off('close', go)
        cb(null, chunk)
      }
      g.on('drain', go)
      g.on('close', go)
    } else cb(null, chunk)
  }

  _flush(cb: (err?: Error | null) => void): void {
    this.#gunzip?.end()
    cb()
  }

  /** The diffID and uncompressed size; `undefined` for zstd (not hashed here). */
  async uncompressed(): Promise<{ diffId: string; size: number } | undefined> {
    if (this.format === 'zstd') return undefined
    await this.#done
    return { diffId: `sha256:${this.#uncompressed.digest('hex')}`, size: this.#uncompressedSize }
  }
}

/**
 * Create layer `id` (on `parent`) from the blob bytes in `input`, verified against `expect`.
 * Nothing of the layer is left when it fails.
 * @throws {BtrfsError} `ERR_DIGEST` (nothing kept), `EEXIST`, `ERR_BAD_LAYER`, `AbortError`, ...
 */
export async function applyBlob(
  driver: BtrfsDriver,
  id: string,
  parent: string | null,
  input: Readable,
  expect: BlobExpectation,
  o: { signal?: AbortSignal } = {},
): Promise<AppliedBlob> {
  if (input.errored) throw input.errored
  const hasher = new Hasher()
  const out = new PassThrough({ highWaterMark: 1 << 20 })
  // Errors go down the chain (pipe() does not carry them); `out` keeps its error for applyDiff.
  input.on('error', (e) => hasher.destroy(e))
  hasher.on('error', (e) => out.destroy(e))
  out.on('error', () => undefined)
  input.pipe(hasher).pipe(out)
  try {
    await driver.create(id, { parent })
  } catch (e) {
    input.destroy()
    throw e
  }
  try {
    if (out.errored) throw out.errored
    await driver.applyDiff(id, out, { parent, signal: o.signal })
    const digest = `sha256:${hasher.compressed.digest('hex')}`
    if (digest !== expect.digest) throw digestError(`layer ${id}`, expect.digest, digest)
    if (hasher.size !== expect.size) throw digestError(`layer ${id}: size`, `${expect.size} bytes`, String(hasher.size))
    const u = await hasher.uncompressed()
    if (u && u.diffId !== expect.diffId) throw digestError(`layer ${id}: diffID`, expect.diffId, u.diffId)
    return { digest, size: hasher.size, diffId: u?.diffId ?? expect.diffId, uncompressedSize: u?.size ?? -1 }
  } catch (e) {
    input.destroy()
    await driver.remove(id).catch(() => undefined)
    throw e
  }
}
