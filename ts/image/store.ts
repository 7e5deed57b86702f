/**
 * The image store: images (a manifest digest, references, a config and a chain of layers) kept
 * as records beside the driver's layers, with pull from OCI registries and commit of a layer
 * chain. Layer ids are chain IDs' hex, so images share the layers they have in common.
 */
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import type { BtrfsDriver } from '../driver'
import { BtrfsError } from '../errors'
import { argType, checkCallback, checkKeys, checkSignal, checkString, invalid } from '../validate'
import type { Credentials } from './auth'
import { commitImage, layerChain, type CommitOptions } from './commit'
import type { ImageConfig } from './config'
import { parsePlatform, type Platform } from './manifest'
import { pullImage, type PullHost, type PullOptions } from './pull'
import { pushImage, type PushOptions, type PushResult } from './push'
import { exportLayout, importLayout, type ExportLayoutOptions, type ImportLayoutOptions } from './layout'
import { deleteRecord, IMAGES_DIR, mergeBlobs, readRecords, writeRecord, type StoredImage } from './records'
import { formatReference, parseReference } from './reference'

export type { CommitOptions } from './commit'
export type { HistoryEntry, ImageConfig } from './config'
export type { Platform } from './manifest'
export type { PullOptions, PullProgress } from './pull'
export type { PushOptions, PushProgress, PushResult } from './push'
export type { ExportLayoutOptions, ImportLayoutOptions } from './layout'
export type { Credentials } from './auth'

/**
 * An image in the store.
 * @example const { layers } = await images.get('alpine'); await driver.create('ct1', { parent: layers.at(-1) })
 */
export interface ImageRecord {
  /** The manifest digest, `sha256:<hex>`: the image's identity. */
  digest: string
  /** Normalized references (`docker.io/library/alpine:latest`, `127.0.0.1:5000/a/b:v1`), sorted; empty for a dangling image. */
  references: string[]
  /** The manifest's media type (OCI or Docker schema 2). */
  mediaType: string
  /** The parsed image config. */
  config: ImageConfig
  /** The config blob's digest. */
  configDigest: string
  /** Layer ids, base first: `driver.create(id, { parent: layers.at(-1) })` starts a container on it. */
  layers: string[]
  /** The uncompressed digests of the layers (the config's `rootfs.diff_ids`). */
  diffIds: string[]
  /** The platform the image is for (from the index entry, else the config). */
  platform?: Platform
  /** Bytes of the layer blobs, as the manifest gives them. */
  size: number
  /** When the image came into the store. */
  created: Date
  /**
   * Per layer, base first, the blob it came in as (pull, importLayout) and the repositories it
   * was pulled from (`registry`, `repository`): what `push` sends again unchanged. Absent for a
   * committed image and for images recorded before this was kept.
   */
  blobs?: { mediaType: string; digest: string; size: number; sources: { registry: string; repository: string }[] }[]
}

/**
 * What `ImageStore.remove` did.
 * @example const { untagged, deleted, layers } = await images.remove('alpine')
 */
export interface RemoveResult {
  /** The references dropped. */
  untagged: string[]
  /** The digest of the image removed with its last reference; `null` when it stays. */
  deleted: string | null
  /** Layer ids removed, top first. */
  layers: string[]
}

const PREFIX = /^(?:sha256:)?([0-9a-f]{12,64})$/

function notFound(what: string): BtrfsError {
  return new BtrfsError('ENOENT', `ENOENT: no image ${what} in the store`)
}

function toRecord(s: StoredImage): ImageRecord {
  return {
    digest: s.digest,
    references: [...s.references],
    mediaType: s.mediaType,
    config: JSON.parse(s.config) as ImageConfig,
    configDigest: s.configDigest,
    layers: [...s.layers],
    diffIds: [...s.diffIds],
    ...(s.platform ? { platform: s.platform } : {}),
    size: s.size,
    created: new Date(s.created),
    ...(s.blobs ? { blobs: s.blobs.map((b) => ({ ...b, sources: b.sources.map((x) => ({ ...x })) })) } : {}),
  }
}

/** A reference claimed by several records (a crash while one moved): the newest record keeps it. */
function settleReferences(records: StoredImage[]): void {
  const owner = new Map<string, StoredImage>()
  for (const r of records) {
    for (const ref of r.references) {
      const o = owner.get(ref)
      if (!o || r.updated > o.updated) owner.set(ref, r)
    }
  }
  for (const r of records) r.references = r.references.filter((ref) => owner.get(ref) === r)
}

/**
 * Images over a `BtrfsDriver`: records under `<home>/images/` (one JSON file per image, named
 * by its manifest digest, written crash-safely), layers in the driver under chain-ID ids. A
 * store on a read-only driver reads (and pushes) only: `pull`, `commit` and `remove` reject with `EROFS`.
 * Calls that change records are serialized.
 *
 * @example
 * const images = await ImageStore.open(driver)
 * const image = await images.pull('alpine:3.20', { onProgress: (e) => console.log(e.layer, e.state, e.bytes) })
 * await driver.create('ct1', { parent: image.layers.at(-1) })
 * await images.remove('alpine:3.20') // its layers go unless another image or a layer uses them
 */
export class ImageStore {
  readonly #driver: BtrfsDriver
  readonly #dir: string
  #records = new Map<string, StoredImage>()
  #queue: Promise<unknown> = Promise.resolve()
  readonly #pins = new Map<string, number>()
  readonly #inflight = new Map<string, Promise<unknown>>()

  private constructor(driver: BtrfsDriver, dir: string) {
    this.#driver = driver
    this.#dir = dir
  }

  /**
   * Open the image store of `driver`, creating its directory when missing, and removing
   * temporary record files a crash left (not on a read-only driver).
   * @throws {BtrfsError} `ERR_BAD_RECORD` for a file in `<home>/images` that is not a record.
   * @example const images = await ImageStore.open(await BtrfsDriver.init('/mnt/pool/store'))
   */
  static async open(driver: BtrfsDriver): Promise<ImageStore> {
    if (typeof driver !== 'object' || driver === null || typeof (driver as BtrfsDriver).layers !== 'function') {
      throw argType('driver', 'an instance of BtrfsDriver', driver)
    }
    const store = new ImageStore(driver, path.join(driver.home, IMAGES_DIR))
    if (!driver.readOnly) await fsp.mkdir(store.#dir, { recursive: true, mode: 0o755 })
    await store.#load()
    return store
  }

  /** Whether the store only reads (its driver was opened `readOnly`). */
  get readOnly(): boolean {
    return this.#driver.readOnly
  }

  /** The driver the layers are in. */
  get driver(): BtrfsDriver {
    return this.#driver
  }

  async #load(): Promise<void> {
    const records = await readRecords(this.#dir, { clean: !this.#driver.readOnly })
    settleReferences(records)
    this.#records = new Map(records.map((r) => [r.digest, r]))
  }

  /** A read-only store reads beside a writer: it loads the records again on every call. */
  async #fresh(): Promise<void> {
    if (this.#driver.readOnly) await this.#load()
  }

  #writable(op: string): void {
    if (this.#driver.readOnly) throw new BtrfsError('EROFS', `EROFS: the driver was opened read-only, ${op}`)
  }

  /** Run `fn` after every earlier call that changes records has settled. */
  #locked<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(fn, fn)
    this.#queue = next.catch(() => undefined)
    return next
  }

  #pin(ids: readonly string[]): () => void {
    for (const id of ids) this.#pins.set(id, (this.#pins.get(id) ?? 0) + 1)
    let done = false
    return () => {
      if (done) return
      done = true
      for (const id of ids) {
        const n = (this.#pins.get(id) ?? 1) - 1
        if (n > 0) this.#pins.set(id, n)
        else this.#pins.delete(id)
      }
    }
  }

  /** The image `s` names: a digest (or a unique prefix of 12+ hex digits), or a reference. */
  #resolve(s: string): { image: StoredImage; reference?: string } {
    const m = PREFIX.exec(s)
    if (m) {
      const hits = [...this.#records.values()].filter((r) => r.digest.slice(7).startsWith(m[1]))
      if (hits.length === 1) return { image: hits[0] }
      if (hits.length > 1) throw invalid(`${s} matches ${hits.length} images; give more digits`)
      if (s.startsWith('sha256:')) throw notFound(s)
    }
    const ref = parseReference(s)
    const normalized = formatReference(ref)
    for (const r of this.#records.values()) if (r.references.includes(normalized)) return { image: r, reference: normalized }
    if (ref.digest) {
      const image = this.#records.get(ref.digest)
      if (image) return { image }
    }
    throw notFound(normalized)
  }

  /**
   * Every image, newest first.
   * @example for (const i of await images.list()) console.log(i.references.join(', '), i.digest)
   */
  async list(): Promise<ImageRecord[]> {
    await this.#fresh()
    return [...this.#records.values()].sort((a, b) => b.created - a.created || a.digest.localeCompare(b.digest)).map(toRecord)
  }

  /**
   * The image a reference (normalized first: `alpine` is `docker.io/library/alpine:latest`),
   * a digest `sha256:...` or a unique prefix of at least 12 hex digits names.
   * @throws {BtrfsError} `ENOENT` when there is none, `EINVAL` for a bad reference or an
   *   ambiguous prefix.
   * @example const image = await images.get('127.0.0.1:5000/app:v1')
   */
  async get(refOrDigest: string): Promise<ImageRecord> {
    checkString('refOrDigest', refOrDigest)
    await this.#fresh()
    return toRecord(this.#resolve(refOrDigest).image)
  }

  /**
   * Pull `ref` from its registry: the manifest (from an index, the entry for
   * `options.platform`, by default this machine's), the config, and every layer whose chain ID
   * is not in the driver yet, up to `concurrency` blobs at once, each streamed from the HTTP
   * body into the apply path, with its digest and diffID verified; layers are applied in order,
   * each as soon as its parent is complete. The record is written once every layer is. A
   * failure or an abort leaves no half layer and no record; complete layers stay, for the next
   * pull to reuse. A tag another image had moves to this one.
   * @throws {BtrfsError} `ERR_DIGEST` (nothing of the failing layer kept), `ERR_REGISTRY_AUTH`,
   *   `ERR_REGISTRY`, `ERR_BAD_MANIFEST`, `ERR_UNSUPPORTED_LAYER` (a foreign or unknown layer
   *   type, before anything is fetched), `ENOENT` (no such image or platform), `EINVAL`,
   *   `EROFS`, `AbortError`.
   * @example const image = await images.pull('127.0.0.1:5000/app:v1', { platform: 'linux/arm64', concurrency: 4 })
   */
  async pull(ref: string, options?: PullOptions): Promise<ImageRecord> {
    checkString('ref', ref)
    const o = checkKeys('options', options, ['platform', 'auth', 'insecure', 'signal', 'onProgress', 'concurrency', 'retries', 'retryDelay'])
    this.#writable('pull')
    let platform: Platform | undefined
    if (typeof o.platform === 'string') platform = parsePlatform(o.platform)
    else if (o.platform !== undefined) {
      const p = checkKeys('options.platform', o.platform, ['os', 'architecture', 'variant', 'os.version', 'os.features']) as Partial<Platform>
      platform = parsePlatform([checkString('options.platform.os', p.os), checkString('options.platform.architecture', p.architecture), ...(p.variant !== undefined ? [checkString('options.platform.variant', p.variant)] : [])].join('/'))
    }
    if (o.auth !== undefined && (typeof o.auth !== 'object' || o.auth === null)) throw argType('options.auth', 'of type object', o.auth)
    if (o.insecure !== undefined && typeof o.insecure !== 'boolean') throw argType('options.insecure', 'of type boolean', o.insecure)
    for (const k of ['concurrency', 'retries', 'retryDelay'] as const) {
      const v = o[k]
      if (v === undefined) continue
      if (typeof v !== 'number') throw argType(`options.${k}`, 'of type number', v)
      if (!Number.isSafeInteger(v) || v < (k === 'concurrency' ? 1 : 0)) throw invalid(`options.${k} must be an integer ${k === 'concurrency' ? 'from 1' : 'from 0'}, got ${v}`)
    }
    const signal = checkSignal(o.signal)
    const onProgress = checkCallback<NonNullable<PullOptions['onProgress']>>('options.onProgress', o.onProgress)
    const parsed = parseReference(ref)
    const host: PullHost = {
      driver: this.#driver,
      locked: (fn) => this.#locked(fn),
      pin: (ids) => this.#pin(ids),
      inflight: this.#inflight,
    }
    const opts = {
      ...(platform ? { platform } : {}),
      ...(o.auth ? { auth: o.auth as Credentials } : {}),
      ...(o.insecure ? { insecure: true } : {}),
      ...(signal ? { signal } : {}),
      ...(onProgress ? { onProgress } : {}),
      ...(o.concurrency !== undefined ? { concurrency: o.concurrency as number } : {}),
      ...(o.retries !== undefined ? { retries: o.retries as number } : {}),
      ...(o.retryDelay !== undefined ? { retryDelay: o.retryDelay as number } : {}),
    }
    return pullImage(host, parsed, opts, (rec) => this.#locked(() => this.#put(rec)))
  }

  /**
   * Push an image (a reference, a digest or a unique prefix of 12+ hex digits of one) to
   * `targetRef`. A layer that came by pull or importLayout goes as its own blob (`blobs`) when
   * the target repository has it (HEAD) or it mounts from a repository of the same registry it
   * was pulled from; then no diff is made and nothing uploaded. Otherwise the layer goes as its
   * diff against its parent, compressed with `gzip` (or `zstd`), hashed in a first pass and
   * streamed in a second, skipped when the registry has it and mounted where it can. With
   * `compression` set, only blobs of that compression are reused. When every layer kept its
   * blob, the image's own config and manifest follow (same digest); else a config whose
   * `rootfs.diff_ids` are those of what was pushed and an OCI manifest, under the tag. The
   * store's record is not changed.
   * @throws {BtrfsError} `ENOENT` (no such image), `ERR_REGISTRY_AUTH`, `ERR_REGISTRY`,
   *   `ERR_DIGEST` (the registry found another digest), `EINVAL`, `AbortError`.
   * @example const { digest } = await images.push('app:v1', 'localhost:5000/team/app:v1', { compression: 'zstd' })
   */
  async push(refOrDigest: string, targetRef: string, options?: PushOptions): Promise<PushResult> {
    checkString('refOrDigest', refOrDigest)
    checkString('targetRef', targetRef)
    const o = checkKeys('options', options, ['compression', 'auth', 'insecure', 'signal', 'onProgress', 'retries', 'retryDelay'])
    if (o.compression !== undefined && o.compression !== 'gzip' && o.compression !== 'zstd') {
      if (typeof o.compression !== 'string') throw argType('options.compression', 'of type string', o.compression)
      throw invalid(`options.compression must be 'gzip' or 'zstd', got '${o.compression}'`)
    }
    if (o.auth !== undefined && (typeof o.auth !== 'object' || o.auth === null)) throw argType('options.auth', 'of type object', o.auth)
    if (o.insecure !== undefined && typeof o.insecure !== 'boolean') throw argType('options.insecure', 'of type boolean', o.insecure)
    for (const k of ['retries', 'retryDelay'] as const) {
      const v = o[k]
      if (v === undefined) continue
      if (typeof v !== 'number') throw argType(`options.${k}`, 'of type number', v)
      if (!Number.isSafeInteger(v) || v < 0) throw invalid(`options.${k} must be an integer from 0, got ${v}`)
    }
    const signal = checkSignal(o.signal)
    const onProgress = checkCallback<NonNullable<PushOptions['onProgress']>>('options.onProgress', o.onProgress)
    const target = parseReference(targetRef)
    await this.#fresh()
    // Its layers stay while the push reads them.
    const { image, unpin } = await this.#locked(async () => {
      const found = this.#resolve(refOrDigest).image
      return { image: found, unpin: this.#pin(found.layers) }
    })
    try {
      return await pushImage(this.#driver, image, target, {
        ...(o.compression ? { compression: o.compression as 'gzip' | 'zstd' } : {}),
        ...(o.auth ? { auth: o.auth as Credentials } : {}),
        ...(o.insecure ? { insecure: true } : {}),
        ...(signal ? { signal } : {}),
        ...(onProgress ? { onProgress } : {}),
        ...(o.retries !== undefined ? { retries: o.retries as number } : {}),
        ...(o.retryDelay !== undefined ? { retryDelay: o.retryDelay as number } : {}),
      })
    } finally {
      unpin()
    }
  }

  /**
   * Import the image of an OCI image layout directory (what skopeo, umoci, crane and buildah
   * write): `index.json`'s entry (the one whose `org.opencontainers.image.ref.name` is the
   * reference's tag, else the one for `platform`, through nested indexes), its manifest and
   * config, and each layer blob not yet present as a layer, applied from its file with its
   * digest, size and diffID checked. A failure leaves no half layer and no record.
   * @throws {BtrfsError} `ENOENT` (not a layout, a missing blob, no entry for the platform),
   *   `ERR_DIGEST`, `ERR_BAD_MANIFEST`, `ERR_UNSUPPORTED_LAYER`, `EINVAL`, `EROFS`, `AbortError`.
   * @example const image = await images.importLayout('/tmp/app-oci', { reference: 'localhost:5000/app:v1' })
   */
  async importLayout(dir: string, options?: ImportLayoutOptions): Promise<ImageRecord> {
    checkString('dir', dir)
    const o = checkKeys('options', options, ['reference', 'platform', 'signal'])
    this.#writable('importLayout')
    const ref = o.reference === undefined ? undefined : parseReference(checkString('options.reference', o.reference))
    let platform: Platform | undefined
    if (typeof o.platform === 'string') platform = parsePlatform(o.platform)
    else if (o.platform !== undefined) platform = checkKeys('options.platform', o.platform, ['os', 'architecture', 'variant', 'os.version', 'os.features']) as unknown as Platform
    const signal = checkSignal(o.signal)
    let unpin: (() => void) | undefined
    try {
      const rec = await importLayout(
        this.#driver,
        dir,
        {
          ...(ref ? { reference: formatReference(ref), ...(ref.tag ? { tag: ref.tag } : {}) } : {}),
          ...(platform ? { platform } : {}),
          ...(signal ? { signal } : {}),
        },
        (ids) =>
          this.#locked(async () => {
            unpin = this.#pin(ids)
            return Promise.all(ids.map((id) => this.#driver.exists(id)))
          }),
      )
      return await this.#locked(() => this.#put(rec))
    } finally {
      unpin?.()
    }
  }

  /**
   * Write an image into an OCI image layout directory (made when missing; an existing layout
   * gets another entry, in place of one with the same tag): its layers as diffs of its driver
   * layers (gzip, or zstd), its config (with the diffs' diffIDs) and an OCI manifest, named in
   * `index.json` with the tag of the reference given (or of its first reference) as
   * `org.opencontainers.image.ref.name`. The store keeps no blobs, so a pulled image's layers
   * are diffs made again: other tars, so other layer digests and diffIDs, a config naming those
   * (the rest of it kept) and another manifest digest than the one pulled.
   * @throws {BtrfsError} `ENOENT` (no such image), `EINVAL`, `AbortError`; file system errors.
   * @example const { digest } = await images.exportLayout('alpine:3.20', '/tmp/alpine-oci')
   */
  async exportLayout(refOrDigest: string, dir: string, options?: ExportLayoutOptions): Promise<{ digest: string; size: number; mediaType: string }> {
    checkString('refOrDigest', refOrDigest)
    checkString('dir', dir)
    const o = checkKeys('options', options, ['compression', 'signal'])
    if (o.compression !== undefined && o.compression !== 'gzip' && o.compression !== 'zstd') {
      if (typeof o.compression !== 'string') throw argType('options.compression', 'of type string', o.compression)
      throw invalid(`options.compression must be 'gzip' or 'zstd', got '${o.compression}'`)
    }
    const signal = checkSignal(o.signal)
    await this.#fresh()
    const { image, reference, unpin } = await this.#locked(async () => {
      const found = this.#resolve(refOrDigest)
      return { ...found, unpin: this.#pin(found.image.layers) }
    })
    try {
      const named = reference ?? image.references[0]
      const tag = named ? parseReference(named).tag : undefined
      const d = await exportLayout(this.#driver, image, dir, {
        ...(o.compression ? { compression: o.compression as 'gzip' | 'zstd' } : {}),
        ...(signal ? { signal } : {}),
        ...(tag ? { tag } : {}),
      })
      return { digest: d.digest, size: d.size, mediaType: d.mediaType }
    } finally {
      unpin()
    }
  }

  /**
   * Make an image of layer `layerId` and its parents (followed through `getMetadata().parent`
   * to the base), like `docker commit`: the diffIDs are the sha256 of each layer's
   * uncompressed diff against its parent; `config.rootfs` and `history` are filled in. The
   * image's `layers` are the chain's own ids (`remove` of its last reference removes them,
   * as it would pulled layers, unless another image or a child layer uses them). The
   * recorded manifest is an OCI manifest whose layer descriptors are the uncompressed diffs.
   * @throws {BtrfsError} `ENOENT` (a missing layer), `EINVAL` (a bad reference), `EROFS`, `AbortError`.
   * @example const image = await images.commit('ct1', { reference: 'localhost:5000/app:v2', config: { config: { Cmd: ['/bin/sh'] } } })
   */
  async commit(layerId: string, options?: CommitOptions): Promise<ImageRecord> {
    checkString('layerId', layerId)
    const o = checkKeys('options', options, ['reference', 'config', 'signal'])
    this.#writable('commit')
    const reference = o.reference === undefined ? undefined : formatReference(parseReference(checkString('options.reference', o.reference)))
    if (o.config !== undefined && (typeof o.config !== 'object' || o.config === null || Array.isArray(o.config))) throw argType('options.config', 'of type object', o.config)
    const signal = checkSignal(o.signal)
    const { layers, unpin } = await this.#locked(async () => {
      const chain = await layerChain(this.#driver, layerId)
      return { layers: chain, unpin: this.#pin(chain) }
    })
    try {
      const rec = await commitImage(this.#driver, layers, reference, { ...(o.config ? { config: o.config as Partial<ImageConfig> } : {}), ...(signal ? { signal } : {}) })
      return await this.#locked(() => this.#put(rec))
    } finally {
      unpin()
    }
  }

  /** Write `rec` (merged with a record of the same digest), moving its references off other images. */
  async #put(rec: StoredImage): Promise<ImageRecord> {
    const old = this.#records.get(rec.digest)
    const blobs = mergeBlobs(rec, old)
    const merged: StoredImage = {
      ...rec,
      ...(blobs ? { blobs } : {}),
      references: [...new Set([...(old?.references ?? []), ...rec.references])].sort(),
      created: old?.created ?? rec.created,
      updated: Math.max(Date.now(), (old?.updated ?? 0) + 1),
    }
    // The layers the record names were published by renames that no fsync of the record's
    // directory is sure to carry (they are in another directory, and name subvolumes): one
    // syncfs makes them durable first. Nothing new (a re-pull) leaves it next to nothing to do.
    await this.#driver.sync()
    // The new owner first: after a crash in between, the newer record keeps the reference.
    await writeRecord(this.#dir, merged)
    this.#records.set(merged.digest, merged)
    for (const other of this.#records.values()) {
      if (other.digest === merged.digest || !other.references.some((r) => rec.references.includes(r))) continue
      const moved = { ...other, references: other.references.filter((r) => !rec.references.includes(r)), updated: merged.updated }
      await writeRecord(this.#dir, moved)
      this.#records.set(moved.digest, moved)
    }
    return toRecord(merged)
  }

  /**
   * Drop a reference. The image goes with its last reference, and then each of its layers,
   * top down, unless another image, a layer made from it (a child: `getMetadata(x).parent`)
   * or a pull under way uses it. A digest (or a unique prefix of 12+ hex digits) removes the
   * image with all its references.
   * @throws {BtrfsError} `ENOENT` when no image has it, `EINVAL`, `EROFS`; a layer's `remove`
   *   error (`EBUSY` while it is held), after the record is gone.
   * @example const { deleted, layers } = await images.remove('docker.io/library/alpine:latest')
   */
  async remove(ref: string): Promise<RemoveResult> {
    checkString('ref', ref)
    this.#writable('remove')
    return this.#locked(async () => {
      const { image, reference } = this.#resolve(ref)
      const untagged = reference ? [reference] : [...image.references]
      const rest = image.references.filter((r) => !untagged.includes(r))
      if (rest.length > 0) {
        const kept = { ...image, references: rest, updated: Math.max(Date.now(), image.updated + 1) }
        await writeRecord(this.#dir, kept)
        this.#records.set(kept.digest, kept)
        return { untagged, deleted: null, layers: [] }
      }
      // Commit point: the record goes first; layers left by a crash after it are unused, and reused by a pull.
      await deleteRecord(this.#dir, image.digest)
      this.#records.delete(image.digest)
      return { untagged, deleted: image.digest, layers: await this.#removeUnused(image.layers) }
    })
  }

  /** Remove those of `layers` (base first) no image, child layer or pull uses; top down. */
  async #removeUnused(layers: string[]): Promise<string[]> {
    const used = new Set([...this.#records.values()].flatMap((r) => r.layers))
    const all = await this.#driver.layers()
    const parents = new Map<string, string | null>()
    const children = new Map<string, number>()
    for (const id of all) {
      let parent: string | null
      try {
        parent = (await this.#driver.getMetadata(id)).parent
      } catch (e) {
        if (e instanceof BtrfsError && e.code === 'ENOENT') continue
        throw e
      }
      parents.set(id, parent)
      if (parent !== null) children.set(parent, (children.get(parent) ?? 0) + 1)
    }
    const removed: string[] = []
    for (const id of [...layers].reverse()) {
      if (!parents.has(id) || used.has(id) || this.#pins.has(id) || (children.get(id) ?? 0) > 0) continue
      await this.#driver.remove(id)
      removed.push(id)
      const parent = parents.get(id)
      if (parent) children.set(parent, (children.get(parent) ?? 1) - 1)
    }
    return removed
  }
}
