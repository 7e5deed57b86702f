import { BtrfsError, call, callSync } from './errors'
import { native } from './native'
import type { AppliedLayer as NativeAppliedLayer, ApplySink, DiffStream, LayerSink, NativeDriver, IdMapEntry, ReceivedLayer as NativeReceivedLayer, ReceiveSink } from '../native/index'
import { pullStream } from './pull'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import type { RemapResult } from './remap'
import { runTask, throwIfAborted } from './task'
import { argType, checkBool, checkCallback, checkIdMaps, checkKeys, checkMapping, checkProtocol, checkSignal, checkString, checkVerify, invalid, type IdMap } from './validate'

export type { IdMap } from './validate'

// Node 20.0 to 20.3 lack Symbol.asyncDispose; define it as later Node versions' own polyfill does.
if (typeof Symbol.asyncDispose !== 'symbol') {
  Object.defineProperty(Symbol, 'asyncDispose', { value: Symbol.for('nodejs.asyncDispose') })
}

/**
 * Options of `BtrfsDriver.init`: the id maps the store's layers are owned under (a user
 * namespace's), and the smallest size limit a layer may be given.
 * @example await BtrfsDriver.init('/mnt/pool/store', { uidMaps: [{ containerId: 0, hostId: 100000, size: 65536 }], gidMaps: [{ containerId: 0, hostId: 100000, size: 65536 }], minSpace: '16M' })
 */
export interface DriverOptions {
  /** Uid ranges; layers are owned by the host uid that container root (0) maps to. */
  uidMaps?: IdMap[]
  /** Gid ranges, as `uidMaps`. */
  gidMaps?: IdMap[]
  /** Smallest per-layer `size` accepted, in bytes or with a unit (`'100M'`). */
  minSpace?: number | string
  /**
   * Open an existing store for reading only: no lock (it works while another process holds
   * the store), no private mount, no crash recovery, no qgroup work, never a write (`changes`
   * walks the trees where a writer would take read-only snapshots). `create`, `remove`, `get`,
   * `put`, `applyDiff`, `remap` and `mountIdmapped` reject with `EROFS` before touching anything.
   */
  readOnly?: boolean
}

/** Options of `BtrfsDriver.create`. */
export interface CreateOptions {
  /** The layer to snapshot; omitted or `null`: an empty layer. */
  parent?: string | null
  /** SELinux label of the layer root; accepted and ignored where SELinux is off. */
  mountLabel?: string
  /** Limit on the layer's referenced bytes, through a btrfs qgroup: bytes or `'10G'`. */
  size?: number | string
  /** Make the layer immutable (the read-only subvolume flag). */
  readOnly?: boolean
}

/** One changed entry between a layer and its parent. */
export interface Change {
  /** Path inside the layer, starting with `/`. */
  path: string
  kind: 'add' | 'modify' | 'delete'
  /**
   * The path's bytes (with the leading `/`), present only when they are not valid UTF-8: a
   * Linux file name is any bytes, and `path` then shows U+FFFD in place of the bad ones. Pass
   * `rawPath` to `fs` calls (they take Buffers) to reach the file.
   */
  rawPath?: Buffer
}

/** Compression of a diff stream. */
export type Compression = 'none' | 'gzip' | 'zstd'

/**
 * Options of `changes` and `diffSize`: what to compare against, and a signal to stop the
 * comparison.
 */
export interface ChangesOptions {
  /**
   * The layer to compare against. Omitted (`undefined`): the layer's own parent, as given to
   * `create`; `null` or `''`: none, so every entry of the layer is an addition.
   */
  parent?: string | null
  /** Stops the comparison: the call rejects with an `AbortError`. */
  signal?: AbortSignal
}

/** Options of `BtrfsDriver.diff`. */
export interface DiffOptions extends ChangesOptions {
  /** Compression of the tar stream; default `'none'`. */
  compression?: Compression
  /**
   * Compute the stream's digests as it is written (sha256 of the bytes produced, and of the
   * tar before compression), given as the stream's `digests` promise. Without it, no hashing.
   */
  digests?: boolean
}

/** The digests of a layer blob (OCI: a layer descriptor's `digest` and `size`, and the config's `diff_ids`). */
export interface LayerDigests {
  /** `sha256:<hex>` of the blob: the bytes as stored or sent (compressed, or the tar itself). */
  digest: string
  /** Bytes of the blob. */
  size: number
  /** `sha256:<hex>` of the whole uncompressed tar (the OCI diffID); `digest` for a plain tar. */
  diffId: string
  /** Bytes of the uncompressed tar. */
  uncompressedSize: number
}

/** What a layer blob must be; each part is checked only when given, and a mismatch is `ERR_DIGEST`. */
export interface LayerVerify {
  /** `sha256:` and 64 lowercase hex digits: the digest of the input as given. */
  digest?: string
  /** Bytes of the input as given. */
  size?: number
  /** `sha256:` and 64 lowercase hex digits: the digest of the uncompressed tar. */
  diffId?: string
}

/** What `applyLayer` made: the bytes of file content applied, and the digests of its input. */
export interface AppliedLayer extends LayerDigests {
  /** Bytes of file content applied. */
  applied: number
}

/**
 * The stream `diff` returns; with `digests: true` it carries them in `digests`, resolved once
 * the whole stream is produced (before its `'end'`), rejected when it fails or is destroyed
 * first.
 */
export interface DiffReadable extends Readable {
  digests?: Promise<LayerDigests>
}

/** Options of `BtrfsDriver.applyDiff`. */
export interface ApplyDiffOptions {
  /** The layer `id` descends from (checked to exist); omitted or `null`: none. With `create`, what it is made from. */
  parent?: string | null
  /**
   * Make `id` as a new layer (it must not exist): a snapshot of `parent` (else empty) with the
   * tar applied, visible only once complete; nothing is left on a failure or an abort. As
   * `applyLayer`, which also returns the digests.
   */
  create?: boolean
  /** With `create` only: what the input must be (see `applyLayer`). */
  verify?: LayerVerify
  signal?: AbortSignal
  /** Called with the uncompressed tar bytes consumed so far (about every 100 ms, and at the end). */
  onProgress?: (bytes: number) => void
}

/** Options of `BtrfsDriver.applyLayer`. */
export interface ApplyLayerOptions {
  /** The layer to make it from (a snapshot of it); omitted or `null`: an empty layer. */
  parent?: string | null
  /** What the input must be: a mismatch is `ERR_DIGEST`, and nothing is kept. */
  verify?: LayerVerify
  signal?: AbortSignal
  /** Called with the uncompressed tar bytes consumed so far (about every 100 ms, and at the end). */
  onProgress?: (bytes: number) => void
}

/** Options of `BtrfsDriver.send`. */
export interface SendOptions {
  /**
   * Send only the difference against this layer of the store, which the receiver must hold
   * too (received from this store, or the same stream received). Omitted or `null`: the
   * whole layer.
   */
  parent?: string | null
  /** The send protocol: 1, or 2 (Linux 6.0+); omitted: the best the kernel writes. */
  protocol?: 1 | 2
  /**
   * With protocol 2, send compressed extents as they are (the receiver writes them without
   * recompressing). Default: `true` when the protocol is 2; with protocol 1 it is `EINVAL`.
   */
  compressed?: boolean
  /** Stops the stream: it is destroyed with an `AbortError`, and any temporary snapshot goes. */
  signal?: AbortSignal
  /** Called with the bytes of stream produced so far (about every 100 ms, and at the end). */
  onProgress?: (bytes: number) => void
}

/** Options of `BtrfsDriver.receive`. */
export interface ReceiveOptions {
  /**
   * The layer an incremental stream applies to. Omitted or `null`: found among the store's
   * layers by the stream's parent UUID (a layer received from that parent, or that parent
   * itself); needed for a stream sent against a read-write parent, whose UUID no layer has.
   */
  parent?: string | null
  signal?: AbortSignal
  /** Called with the bytes of stream read so far (about every 100 ms, and at the end). */
  onProgress?: (bytes: number) => void
}

/** What `BtrfsDriver.receive` made. */
export interface ReceivedLayer {
  /** Bytes of send stream read. */
  bytes: number
  /** Commands of the stream applied. */
  commands: number
  /** The layer an incremental stream was applied to; `null` for a full stream. */
  parent: string | null
  /** The received UUID set on the new layer: the UUID of the subvolume the sender sent. */
  receivedUuid: string
}

/** What the driver knows of a layer (`getMetadata`): its record, and what the kernel keeps. */
export interface LayerMetadata {
  id: string
  /** The layer it was created from; `null` for a base layer. */
  parent: string | null
  created: Date
  /** The read-only flag of the layer's subvolume. */
  readOnly: boolean
  /** The size limit in bytes (a qgroup limit); `null` when none. */
  size: number | null
  /** The btrfs subvolume id of the layer. */
  subvolumeId: number
  /** The UUID of the layer's subvolume (a new one after `applyDiff`). */
  uuid: string
  /** The SELinux label given to `create`, when one was. */
  mountLabel?: string
  /** Only for a layer stored under other id maps than the driver's (made by `remap`, and its children). */
  uidMaps?: IdMap[]
  gidMaps?: IdMap[]
}

/** Allocated (`total`) and used bytes of one kind of block group. */
export interface SpaceUse {
  used: number
  total: number
}

/** What `BtrfsDriver.status()` reports about the store. */
export interface DriverStatus {
  /** The absolute path of the store. */
  home: string
  /** The btrfs filesystem holding the store. */
  filesystem: { uuid: string; label: string; devices: string[]; nodeSize: number; sectorSize: number }
  space: { data: SpaceUse; metadata: SpaceUse }
  /** How many layers the store holds. */
  layers: number
  /** Whether btrfs quotas (qgroups) are enabled, as size limits need. */
  quotas: boolean
  /** The kernel release, as `uname -r` prints it. */
  kernel: string
  /** The smallest size limit a layer may ask for (`minSpace`), `null` when none. */
  minSpace: number | null
  /** Whether this kernel and filesystem support idmapped mounts (`mountIdmapped`). */
  idmappedMounts: boolean
  /** The host uid and gid container root maps to, when the driver's maps shift ids; else `null`. */
  remappedRoot: { uid: number; gid: number } | null
}

/**
 * The Docker-style `[key, value]` display pairs of a `status()` (what `docker info` shows
 * under the storage driver), for printing.
 * @example for (const [k, v] of statusPairs(await driver.status())) console.log(`${k}: ${v}`)
 */
export function statusPairs(status: DriverStatus): [string, string][] {
  const pairs: [string, string][] = [
    ['Home', status.home],
    ['Filesystem UUID', status.filesystem.uuid],
    ['Label', status.filesystem.label],
    ['Devices', status.filesystem.devices.join(',')],
    ['Data Space Used', String(status.space.data.used)],
    ['Data Space Total', String(status.space.data.total)],
    ['Metadata Space Used', String(status.space.metadata.used)],
    ['Metadata Space Total', String(status.space.metadata.total)],
    ['Layers', String(status.layers)],
    ['Quotas', status.quotas ? 'enabled' : 'disabled'],
    ['Kernel Version', status.kernel],
    ['Node Size', String(status.filesystem.nodeSize)],
    ['Sector Size', String(status.filesystem.sectorSize)],
  ]
  if (status.minSpace !== null) pairs.push(['Min Space', String(status.minSpace)])
  pairs.push(['Idmapped Mounts', status.idmappedMounts ? 'supported' : 'unsupported'])
  if (status.remappedRoot) pairs.push(['Remapped Root', `${status.remappedRoot.uid}:${status.remappedRoot.gid}`])
  return pairs
}

function idMaps(m: IdMapEntry[] | undefined): IdMap[] | undefined {
  return m?.map(({ containerId, hostId, size }) => ({ containerId, hostId, size }))
}

const UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50 }

/**
 * Parse a byte count: a safe non-negative integer, or a string like `'512M'`, `'10GiB'`, `'4096'`.
 * @example parseBytes('size', '512M') // 536870912
 */
export function parseBytes(name: string, value: unknown): number {
  let n: number
  if (typeof value === 'number') {
    n = value
  } else if (typeof value === 'string') {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$/i.exec(value)
    if (!m) throw new BtrfsError('EINVAL', `EINVAL: ${name} '${value}' is not a size (bytes, or a number with K/M/G/T)`)
    n = Math.floor(Number(m[1]) * UNITS[m[2].toLowerCase()])
  } else {
    throw argType(name, 'of type number or string', value)
  }
  if (!Number.isSafeInteger(n) || n < 0) throw new BtrfsError('EINVAL', `EINVAL: ${name} must be a non-negative integer number of bytes`)
  return n
}

/** `undefined`: the recorded parent; `null`/`''`: none (the whole layer); else a layer id. */
function parentArg(parent: unknown): [string | undefined, boolean] {
  if (parent === undefined) return [undefined, false]
  if (parent === null || parent === '') return [undefined, true]
  return [checkId('parent', parent), false]
}

/**
 * The options of a method whose parent is optional, from either of its call forms:
 * `(id, options)`, or the deprecated positional `(id, parent, options)` (a string or `null`
 * second argument, or `undefined` followed by options). In the positional form the parent
 * goes into the returned options (omitted when `undefined`).
 */
function withParent(a: unknown, b: unknown, keys: readonly string[]): Record<string, unknown> {
  const positional = a === null || typeof a === 'string' || (a === undefined && b !== undefined)
  if (!positional) return { ...checkKeys('options', a, ['parent', ...keys]) }
  const o = checkKeys('options', b, keys)
  return a === undefined ? { ...o } : { ...o, parent: a }
}

/** A stream `applyDiff` can read: a Node Readable, or anything with `pipe` and async iteration. */
function isStream(x: unknown): x is Readable {
  return x instanceof Readable || (typeof x === 'object' && x !== null && typeof (x as Readable).pipe === 'function' && Symbol.asyncIterator in x)
}

/** What `applyDiff` takes as its input: a Readable, a Buffer or a file path. */
function isInput(x: unknown): x is Readable | Uint8Array | string {
  return typeof x === 'string' || x instanceof Uint8Array || isStream(x)
}

function checkId(name: string, value: unknown): string {
  return checkString(name, value)
}

/** An options object's `parent`: none when absent, `null` or `''` (the whole layer). */
function optionalParent(value: unknown): string | undefined {
  return value === undefined || value === null || value === '' ? undefined : checkId('parent', value)
}

/**
 * A layer store in the shape of a container engine's btrfs graph driver: every layer is a
 * btrfs subvolume under `home/subvolumes`, and a child layer is a snapshot of its parent.
 *
 * @example
 * await using driver = await BtrfsDriver.init('/var/lib/mystore') // released at the end of the block
 * await driver.create('base')
 * await driver.create('child', { parent: 'base' })
 * {
 *   await using layer = await driver.acquire('child') // write files under layer.path
 * }
 * const changes = await driver.changes('child') // against its parent, 'base'
 * await driver.remove('child')
 */
export class BtrfsDriver implements AsyncDisposable {
  /** The graph driver's name. */
  readonly name = 'btrfs'
  readonly #native: NativeDriver
  readonly #queues = new Map<string, Promise<unknown>>()
  readonly #readOnly: boolean

  private constructor(n: NativeDriver, readOnly: boolean) {
    this.#native = n
    this.#readOnly = readOnly
  }

  /** Whether the driver was opened with `readOnly`. */
  get readOnly(): boolean {
    return this.#readOnly
  }

  /** `EROFS` on a driver opened with `readOnly`, before anything is touched. */
  #writable(op: string): void {
    if (this.#readOnly) throw new BtrfsError('EROFS', `EROFS: the driver was opened read-only, ${op}`)
  }

  /**
   * Open the store at `home`, creating it (as its own subvolume, mode 0700, owned by the
   * remapped root) when missing. Removes what a crash left behind, re-applies size limits,
   * takes an exclusive lock on the store (writing its process id into `home/.lock`), and as
   * root makes `home` a private mount. With `readOnly`, opens an existing store without any
   * of that (see `DriverOptions.readOnly`).
   * @throws {BtrfsError} `ERR_PREREQUISITES` when `home` (or its parent) is not on btrfs,
   *   `EBUSY` when another driver holds the store (the message names its process id),
   *   `EINVAL` for bad options, `ENOENT` when the parent of `home` is missing (with
   *   `readOnly`: when `home` is).
   * @example const driver = await BtrfsDriver.init('/mnt/pool/store', { minSpace: '16M' })
   */
  static async init(home: string, options?: DriverOptions): Promise<BtrfsDriver> {
    checkString('home', home)
    const o = checkKeys('options', options, ['uidMaps', 'gidMaps', 'minSpace', 'readOnly'])
    if (o.readOnly !== undefined) checkBool('options.readOnly', o.readOnly)
    const opts = {
      uidMaps: checkIdMaps('options.uidMaps', o.uidMaps),
      gidMaps: checkIdMaps('options.gidMaps', o.gidMaps),
      minSpace: o.minSpace === undefined ? undefined : parseBytes('options.minSpace', o.minSpace),
      readOnly: o.readOnly === true,
    }
    return new BtrfsDriver(await call('init', () => native.driverInit(home, opts)), opts.readOnly)
  }

  /** The absolute path of the store. */
  get home(): string {
    return this.#native.home
  }

  /** Run `fn` after every earlier call on the same layer id has settled. */
  #serial<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#queues.get(id)
    // The common case, no call on this id under way: run now, one promise less.
    const next = prev ? prev.then(fn, fn) : fn()
    this.#queues.set(id, next)
    const settled = (): void => {
      if (this.#queues.get(id) === next) this.#queues.delete(id)
    }
    next.then(settled, settled)
    return next
  }

  /**
   * Create layer `id`: an empty subvolume, or a snapshot of layer `options.parent`. The layer
   * becomes visible only when complete.
   * @example await driver.create('app', { parent: 'base', size: '1G' })
   * @throws {BtrfsError} `EINVAL` for a bad id or option (or `size` below `minSpace`),
   *   `EEXIST` when `id` exists, `ENOENT` when `parent` does not.
   */
  async create(id: string, options?: CreateOptions): Promise<void>
  /**
   * The graph driver's positional form, `create(id, parent, options)`.
   * @deprecated Pass the parent in the options: `create(id, { parent })`.
   * @example await driver.create('app', 'base')
   */
  async create(id: string, parent: string | null | undefined, options?: Omit<CreateOptions, 'parent'>): Promise<void>
  async create(id: string, a?: string | null | CreateOptions, b?: Omit<CreateOptions, 'parent'>): Promise<void> {
    this.#writable('create')
    checkId('id', id)
    const o = withParent(a, b, ['mountLabel', 'size', 'readOnly'])
    const parent = optionalParent(o.parent)
    if (o.mountLabel !== undefined) checkString('options.mountLabel', o.mountLabel)
    if (o.readOnly !== undefined) checkBool('options.readOnly', o.readOnly)
    const opts = {
      mountLabel: o.mountLabel as string | undefined,
      size: o.size === undefined ? undefined : parseBytes('options.size', o.size),
      readOnly: o.readOnly as boolean | undefined,
    }
    await this.#serial(id, () => call('create', () => this.#native.create(id, parent, opts)))
  }

  /**
   * `create` for a writable container layer (the same as `create` without `readOnly`).
   * @example await driver.createReadWrite('container-1', { parent: 'image', size: '2G' })
   */
  async createReadWrite(id: string, options?: Omit<CreateOptions, 'readOnly'>): Promise<void>
  /**
   * The graph driver's positional form, `createReadWrite(id, parent, options)`.
   * @deprecated Pass the parent in the options: `createReadWrite(id, { parent })`.
   * @example await driver.createReadWrite('container-1', 'image')
   */
  async createReadWrite(id: string, parent: string | null | undefined, options?: Omit<CreateOptions, 'readOnly' | 'parent'>): Promise<void>
  async createReadWrite(id: string, a?: string | null | Omit<CreateOptions, 'readOnly'>, b?: Omit<CreateOptions, 'readOnly' | 'parent'>): Promise<void> {
    const o = withParent(a, b, ['mountLabel', 'size'])
    await this.create(id, { ...o, readOnly: false } as CreateOptions)
  }

  /**
   * Remove layer `id`, with any subvolumes nested inside it, its record and size limit.
   * Layers snapshotted from it are independent and stay.
   * @throws {BtrfsError} `ENOENT` when missing, `EBUSY` while held by `get` or while a
   *   filesystem is mounted on the layer, `EINVAL` for a bad id.
   * @example await driver.remove('container-1')
   */
  async remove(id: string): Promise<void> {
    this.#writable('remove')
    checkId('id', id)
    await this.#serial(id, () => call('remove', () => this.#native.remove(id)))
  }

  /**
   * The absolute path of layer `id`, held (counted) until `put(id)`.
   * @throws {BtrfsError} `ENOENT` when missing, `EBUSY` while a filesystem is mounted on the
   *   layer, `EINVAL` for a bad id.
   * @example const rootfs = await driver.get('container-1') // '/mnt/pool/store/subvolumes/container-1'
   */
  async get(id: string, options?: { mountLabel?: string }): Promise<string> {
    this.#writable('get')
    checkId('id', id)
    const o = checkKeys('options', options, ['mountLabel'])
    if (o.mountLabel !== undefined) checkString('options.mountLabel', o.mountLabel)
    const label = o.mountLabel as string | undefined
    return this.#serial(id, () => call('get', () => this.#native.get(id, label)))
  }

  /**
   * Release one `get` of layer `id`.
   * @throws {BtrfsError} `EINVAL` when the layer is not held.
   * @example await driver.put('container-1')
   */
  async put(id: string): Promise<void> {
    this.#writable('put')
    checkId('id', id)
    await this.#serial(id, () => call('put', () => this.#native.put(id)))
  }

  /**
   * How many `get`s of layer `id` have not been `put` yet (synchronous: a counter, no I/O).
   * @throws {BtrfsError} `EINVAL` for a bad id (thrown, not a rejection).
   * @example driver.refCount('container-1') // 0 after as many puts as gets
   */
  refCount(id: string): number {
    checkId('id', id)
    return callSync('refCount', () => this.#native.refCount(id))
  }

  /**
   * Whether layer `id` exists (complete), a filesystem mounted on it or not.
   * @throws {BtrfsError} `EINVAL` for a bad id.
   * @example if (!(await driver.exists('base'))) await driver.create('base')
   */
  async exists(id: string): Promise<boolean> {
    checkId('id', id)
    return call('exists', () => this.#native.exists(id))
  }

  /**
   * Ids of all layers, sorted.
   * @example for (const id of await driver.layers()) console.log(id)
   */
  async layers(): Promise<string[]> {
    return call('layers', () => this.#native.layers())
  }

  /**
   * What the store is on and holds: the filesystem (UUID, label, devices), its data and
   * metadata space, the layer count, whether quotas are on, the kernel, `minSpace`, idmapped
   * mount support and the remapped root. `statusPairs()` renders it as Docker's display pairs.
   * @example const { space, layers, quotas } = await driver.status()
   */
  async status(): Promise<DriverStatus> {
    const s = await call('status', () => this.#native.status())
    return {
      home: s.home,
      filesystem: s.filesystem,
      space: s.space,
      layers: s.layers,
      quotas: s.quotas,
      kernel: s.kernel,
      minSpace: s.minSpace ?? null,
      idmappedMounts: s.idmappedMounts,
      remappedRoot: s.remappedRoot ?? null,
    }
  }

  /**
   * What the driver knows of layer `id`: parent, creation time, size limit and mount label
   * from its record (an xattr on the layer's root), read-only flag and subvolume id from the
   * kernel.
   * @throws {BtrfsError} `ENOENT` when missing, `EBUSY` when a filesystem is mounted on it.
   * @example const { parent, created, size } = await driver.getMetadata('container-1')
   */
  async getMetadata(id: string): Promise<LayerMetadata> {
    checkId('id', id)
    const m = await call('getMetadata', () => this.#native.metadata(id))
    const uidMaps = idMaps(m.uidMaps)
    const gidMaps = idMaps(m.gidMaps)
    return {
      id: m.id,
      parent: m.parent ?? null,
      created: new Date(m.createdMs),
      readOnly: m.readOnly,
      size: m.size ?? null,
      subvolumeId: m.subvolumeId,
      uuid: m.uuid,
      ...(m.mountLabel ? { mountLabel: m.mountLabel } : {}),
      ...(uidMaps ? { uidMaps } : {}),
      ...(gidMaps ? { gidMaps } : {}),
    }
  }

  /**
   * Changes of layer `id` against `options.parent`: `{ path, kind }` sorted by path, parents
   * first. With `parent` omitted, the layer's own parent (as given to `create`) is used; with
   * `null` or `''`, every entry of the layer is an addition. An entry is modified when its
   * type, mode, owner, rdev or file capability differ, or (not for directories) its size or
   * mtime; the directory holding an added or deleted entry is modified. As root the cost
   * follows the size of the change: a layer descending from `parent` by snapshots is compared
   * by a search of the inode items written since (no snapshot taken), other pairs by btrfs
   * send between read-only snapshots; without privilege, a parallel tree walk. `signal`
   * stops the comparison (the walk of a large layer can take seconds).
   * @example await driver.changes('app') // [{ path: '/etc', kind: 'modify' }, { path: '/etc/app.conf', kind: 'add' }]
   * @throws {BtrfsError} `ENOENT` when a layer is missing, `EINVAL` for a bad id; `AbortError`.
   */
  async changes(id: string, options?: ChangesOptions): Promise<Change[]>
  /**
   * The positional form, `changes(id, parent, options)`.
   * @deprecated Pass the parent in the options: `changes(id, { parent })`.
   * @example await driver.changes('app', 'base')
   */
  async changes(id: string, parent: string | null | undefined, options?: Omit<ChangesOptions, 'parent'>): Promise<Change[]>
  async changes(id: string, a?: string | null | ChangesOptions, b?: Omit<ChangesOptions, 'parent'>): Promise<Change[]> {
    checkId('id', id)
    const o = withParent(a, b, ['signal'])
    const [p, whole] = parentArg(o.parent)
    const signal = checkSignal(o.signal)
    return this.#serial(id, () => runTask(() => this.#native.changesStart(id, p, whole), { api: 'changes', signal, readsOnly: true }))
  }

  /**
   * Bytes of the added and modified regular files of layer `id` against `options.parent` (as
   * in `changes`), each inode counted once. `signal` stops it.
   * @throws {BtrfsError} `ENOENT` when a layer is missing; `AbortError`.
   * @example const bytes = await driver.diffSize('container-1') // what a diff of it would carry in file content
   */
  async diffSize(id: string, options?: ChangesOptions): Promise<number>
  /**
   * The positional form, `diffSize(id, parent, options)`.
   * @deprecated Pass the parent in the options: `diffSize(id, { parent })`.
   * @example await driver.diffSize('container-1', 'image')
   */
  async diffSize(id: string, parent: string | null | undefined, options?: Omit<ChangesOptions, 'parent'>): Promise<number>
  async diffSize(id: string, a?: string | null | ChangesOptions, b?: Omit<ChangesOptions, 'parent'>): Promise<number> {
    checkId('id', id)
    const o = withParent(a, b, ['signal'])
    const [p, whole] = parentArg(o.parent)
    const signal = checkSignal(o.signal)
    return this.#serial(id, () => runTask(() => this.#native.diffSizeStart(id, p, whole), { api: 'diffSize', signal, readsOnly: true }))
  }

  /**
   * The OCI image layer (a PAX tar, optionally gzip or zstd compressed) of layer `id` against
   * `options.parent` (as in `changes`): entries sorted, parents first, deletions as `.wh.`
   * whiteouts, hardlinks as links, xattrs, devices; ids mapped back to container ids. Streams
   * with flat memory; errors (`ERR_ID_MAPPING`, ...) arrive as the stream's `error` event.
   * @example await pipeline(await driver.diff('app', { compression: 'gzip' }), fs.createWriteStream('app.tar.gz'))
   * @throws {BtrfsError} `ENOENT` when a layer is missing, `EINVAL` for a bad id or option.
   */
  async diff(id: string, options: DiffOptions & { digests: true }): Promise<Readable & { digests: Promise<LayerDigests> }>
  async diff(id: string, options?: DiffOptions): Promise<DiffReadable>
  /**
   * The positional form, `diff(id, parent, options)`.
   * @deprecated Pass the parent in the options: `diff(id, { parent })`.
   * @example await driver.diff('app', 'base', { compression: 'zstd' })
   */
  async diff(id: string, parent: string | null | undefined, options?: Omit<DiffOptions, 'parent'>): Promise<DiffReadable>
  async diff(id: string, a?: string | null | DiffOptions, b?: Omit<DiffOptions, 'parent'>): Promise<DiffReadable> {
    checkId('id', id)
    const o = withParent(a, b, ['compression', 'signal', 'digests'])
    const [p, whole] = parentArg(o.parent)
    const compression = o.compression ?? 'none'
    if (typeof compression !== 'string') throw argType('options.compression', 'of type string', compression)
    if (compression !== 'none' && compression !== 'gzip' && compression !== 'zstd') throw invalid(`compression must be 'none', 'gzip' or 'zstd', got '${compression}'`)
    const wantDigests = checkBool('options.digests', o.digests)
    const signal = checkSignal(o.signal)
    let settle: { resolve: (d: LayerDigests) => void; reject: (e: Error) => void } | undefined
    const digests = wantDigests ? new Promise<LayerDigests>((resolve, reject) => (settle = { resolve, reject })) : undefined
    // A caller that never looks at the digests hears of a failure from the stream only.
    digests?.catch(() => undefined)
    let stream: DiffStream | undefined
    const out: DiffReadable = await pullStream(() => (stream = this.#native.diffStart(id, p, whole, compression, wantDigests)), {
      api: 'diff',
      signal,
      onEnd: () => {
        const d = stream?.digests()
        if (d) settle?.resolve({ digest: d.digest, size: d.size, diffId: d.diffId, uncompressedSize: d.uncompressedSize })
        else settle?.reject(new BtrfsError('ERR_INTERNAL', 'ERR_INTERNAL: the stream ended without its digests, diff'))
      },
      onDestroy: (err) => settle?.reject(err),
    })
    if (digests) out.digests = digests
    return out
  }

  /**
   * Apply an OCI layer tar (plain, gzip or zstd, detected from its first bytes) to layer `id`
   * (which descends from `options.parent`, when given). `input` is a Readable, a Buffer, or
   * the path of a tar file. Whiteouts and opaque whiteouts, hardlinks, symlinks, devices,
   * fifos, xattrs, setuid bits, file capabilities and mtimes are applied; ids are mapped
   * through the driver's maps. Every path stays inside the layer whatever the stream holds.
   * The layer changes only when the whole stream applied: a bad stream (`ERR_BAD_LAYER`), an
   * abort (`AbortError`) or any other failure leaves it as it was.
   * @returns the bytes of file content applied.
   * @throws {BtrfsError} `ERR_BAD_LAYER`, `ERR_ID_MAPPING`, `ENOENT`, `EBUSY` while the layer is
   *   held or a filesystem is mounted on it, `EINVAL` for a file path with a NUL byte or that is
   *   not a regular file or a FIFO (before the layer is touched); `AbortError`.
   * @example await driver.applyDiff('app', fs.createReadStream('app.tar.gz'), { parent: 'base', onProgress: (n) => bar.update(n) })
   */
  async applyDiff(id: string, input: Readable | Buffer | Uint8Array | string, options?: ApplyDiffOptions): Promise<number>
  /**
   * The graph driver's positional form, `applyDiff(id, parent, input, options)`.
   * @deprecated Pass the parent in the options: `applyDiff(id, input, { parent })`.
   * @example await driver.applyDiff('app', 'base', 'app.tar')
   */
  async applyDiff(id: string, parent: string | null | undefined, input: Readable | Buffer | Uint8Array | string, options?: Omit<ApplyDiffOptions, 'parent'>): Promise<number>
  async applyDiff(id: string, ...args: unknown[]): Promise<number> {
    this.#writable('applyDiff')
    checkId('id', id)
    // The options form: an input, then nothing or options. Else the positional form.
    const optionsForm = args.length <= 2 && isInput(args[0]) && (args[1] === undefined || (typeof args[1] === 'object' && !isInput(args[1])))
    const input = optionsForm ? args[0] : args[1]
    const o = optionsForm ? checkKeys('options', args[1], ['parent', 'create', 'verify', 'signal', 'onProgress']) : { ...checkKeys('options', args[2], ['signal', 'onProgress']), parent: args[0] }
    const parent = optionalParent(o.parent)
    const create = checkBool('options.create', o.create)
    const verify = checkVerify('options.verify', o.verify)
    if (verify && !create) throw invalid('options.verify needs options.create: true (an existing layer is applied to unverified)')
    const signal = checkSignal(o.signal)
    const onProgress = checkCallback<(n: number) => void>('options.onProgress', o.onProgress)
    if (!isInput(input)) throw argType('input', 'of type string or an instance of Buffer, Uint8Array or Readable', input)
    if (create) return (await this.#applyNew('applyDiff', id, input, parent, verify, signal, onProgress)).applied
    return this.#serial(id, () =>
      runTask(() => (typeof input === 'string' ? this.#native.applyFile(id, parent, input) : this.#native.applyStart(id, parent)), {
        api: 'applyDiff',
        signal,
        onProgress,
        // A stalled input would keep the feed waiting for its next chunk.
        onAbort: () => (isStream(input) ? input.destroy() : undefined),
        feed: (sink, aborted, stopped) => feed(sink, input, aborted, stopped),
      }),
    )
  }

  /**
   * Make the new layer `id` from an OCI layer blob: a snapshot of `options.parent` (else an
   * empty layer) with the tar (plain, gzip or zstd, detected) applied as `applyDiff` applies
   * it, while the sha256 of the input as given (the blob's `digest`) and of the whole
   * uncompressed tar (its `diffId`) are computed in the same pass. The layer is visible only
   * once complete and verified (its data written back, then one rename): a mismatch with
   * `options.verify` (`ERR_DIGEST`), a bad stream, an abort or a crash leaves no layer.
   * Its record carries `parent`, as `create` does.
   * @returns the bytes of file content applied, and the digests and sizes of the input.
   * @throws {BtrfsError} `EEXIST` when `id` exists (before any work), `ENOENT` when `parent`
   *   does not, `ERR_DIGEST`, `ERR_BAD_LAYER`, `ERR_ID_MAPPING`, `EINVAL` for a bad id or
   *   `verify` value (before anything happens); `AbortError`.
   * @example const { diffId } = await driver.applyLayer(chainId, response.body, { parent, verify: { digest: desc.digest, size: desc.size } })
   */
  async applyLayer(id: string, input: Readable | Buffer | Uint8Array | string, options?: ApplyLayerOptions): Promise<AppliedLayer> {
    this.#writable('applyLayer')
    checkId('id', id)
    const o = checkKeys('options', options, ['parent', 'verify', 'signal', 'onProgress'])
    const parent = optionalParent(o.parent)
    const verify = checkVerify('options.verify', o.verify)
    const signal = checkSignal(o.signal)
    const onProgress = checkCallback<(n: number) => void>('options.onProgress', o.onProgress)
    if (!isInput(input)) throw argType('input', 'of type string or an instance of Buffer, Uint8Array or Readable', input)
    return this.#applyNew('applyLayer', id, input, parent, verify, signal, onProgress)
  }

  /** `EEXIST` when layer `id` exists, before any byte of an input is taken (the native side checks again). */
  async #requireNew(api: string, id: string): Promise<void> {
    if (await call(api, () => this.#native.exists(id))) {
      const where = path.join(this.home, 'subvolumes', id)
      throw new BtrfsError('EEXIST', `EEXIST: layer already exists, ${api} '${where}'`, { errno: -17, path: where })
    }
  }

  /** The native create-and-apply of `applyLayer` and `applyDiff` with `create`. */
  #applyNew(
    api: string,
    id: string,
    input: Readable | Uint8Array | string,
    parent: string | undefined,
    verify: LayerVerify | undefined,
    signal: AbortSignal | undefined,
    onProgress: ((n: number) => void) | undefined,
  ): Promise<AppliedLayer> {
    return this.#serial(id, async () => {
      // Before a byte of the input is taken (the native side checks again, and its publish
      // refuses a name taken meanwhile).
      throwIfAborted(signal)
      await this.#requireNew(api, id)
      const r = await runTask<NativeAppliedLayer, LayerSink>(() => (typeof input === 'string' ? this.#native.applyLayerFile(id, parent, verify, input) : this.#native.applyLayerStart(id, parent, verify)), {
        api,
        signal,
        onProgress,
        onAbort: () => (isStream(input) ? input.destroy() : undefined),
        feed: (sink, aborted, stopped) => feed(sink, input, aborted, stopped),
      })
      return { applied: r.applied, digest: r.digest, size: r.size, diffId: r.diffId, uncompressedSize: r.uncompressedSize }
    })
  }

  /**
   * A btrfs send stream of layer `id` (what `btrfs send` writes): the whole layer, or with
   * `options.parent` only its difference against that layer, which the receiver must hold.
   * It is BTRFS_IOC_SEND of the layer when it is read-only, else of a temporary read-only
   * snapshot (removed when the stream ends, fails or is destroyed; a crash leaves it for
   * `init` to remove); a read-write parent is sent against the same way, as it is now. The
   * stream is received by `receive` (of this or another store) or by `btrfs receive`. Needs
   * `CAP_SYS_ADMIN` (else `EPERM`). Errors after the first chunk arrive as the stream's
   * `'error'` event.
   * @throws {BtrfsError} `ENOENT` when a layer is missing, `EINVAL` for a bad id or an
   *   unsupported protocol (2 before Linux 6.0, compression with protocol 1), `EROFS` for a
   *   read-write layer on a driver opened `readOnly`, `EPERM`; `AbortError`.
   * @example await pipeline(await driver.send('app', { parent: 'base' }), fs.createWriteStream('app.btrfs'))
   */
  async send(id: string, options?: SendOptions): Promise<Readable> {
    checkId('id', id)
    const o = checkKeys('options', options, ['parent', 'protocol', 'compressed', 'signal', 'onProgress'])
    const parent = optionalParent(o.parent)
    const protocol = checkProtocol('options.protocol', o.protocol)
    const compressed = checkBool('options.compressed', o.compressed, (protocol ?? native.sendStreamVersion()) >= 2)
    const signal = checkSignal(o.signal)
    const onProgress = checkCallback<(n: number) => void>('options.onProgress', o.onProgress)
    return pullStream(() => this.#native.sendStart(id, parent, protocol, compressed), { api: 'send', signal, onProgress })
  }

  /**
   * Make the new layer `id` from a btrfs send stream (ours or `btrfs send`'s): a Readable, a
   * Buffer, or the path of a file or FIFO. Applied in Rust, every path confined to the new
   * layer, clones only from this store's layers; the layer gets the stream's received UUID and
   * is made read-only, as `btrfs receive` does. An incremental stream is applied to a snapshot
   * of its parent (`options.parent`, else the layer whose UUID or received UUID the stream
   * names). The layer is visible only once complete: a bad stream (`ERR_BAD_LAYER`), an abort
   * or a crash leaves no layer.
   * @returns the bytes and commands read, the parent used and the received UUID.
   * @throws {BtrfsError} `EEXIST` when `id` exists (before any work), `ENOENT` when the parent
   *   is missing, `ERR_BAD_LAYER`, `EINVAL` for a bad id or a file path that is not a regular
   *   file or a FIFO, `EPERM`; `AbortError`.
   * @example await driver.receive('app', fs.createReadStream('app.btrfs'), { parent: 'base' })
   */
  async receive(id: string, input: Readable | Buffer | Uint8Array | string, options?: ReceiveOptions): Promise<ReceivedLayer> {
    this.#writable('receive')
    checkId('id', id)
    const o = checkKeys('options', options, ['parent', 'signal', 'onProgress'])
    const parent = optionalParent(o.parent)
    const signal = checkSignal(o.signal)
    const onProgress = checkCallback<(n: number) => void>('options.onProgress', o.onProgress)
    if (!isInput(input)) throw argType('input', 'of type string or an instance of Buffer, Uint8Array or Readable', input)
    return this.#serial(id, async () => {
      throwIfAborted(signal)
      await this.#requireNew('receive', id)
      const r = await runTask<NativeReceivedLayer, ReceiveSink>(() => (typeof input === 'string' ? this.#native.receiveFile(id, parent, input) : this.#native.receiveStart(id, parent)), {
        api: 'receive',
        signal,
        onProgress,
        onAbort: () => (isStream(input) ? input.destroy() : undefined),
        feed: (sink, aborted, stopped) => feed(sink, input, aborted, stopped),
      })
      return { bytes: r.bytes, commands: r.commands, parent: r.parent ?? null, receivedUuid: r.receivedUuid }
    })
  }

  /**
   * Create layer `target` holding layer `id`'s tree with every owner shifted from `id`'s id
   * maps to `uidMaps`/`gidMaps` (a snapshot, then a parallel remap of the snapshot; `id` is
   * never touched). Diffs of `target` and of its children map ids back through these maps.
   * @example await driver.remap('image', 'image-userns', { uidMaps: [{ containerId: 0, hostId: 200000, size: 65536 }], gidMaps: [...] })
   * @throws {BtrfsError} `ERR_ID_MAPPING` when an owner is outside the maps (with every such
   *   path in `errors`; nothing is created), `EEXIST`, `ENOENT`, `EINVAL`, `ABORT_ERR`.
   */
  async remap(
    id: string,
    target: string,
    options: { uidMaps?: IdMap[]; gidMaps?: IdMap[]; signal?: AbortSignal; onProgress?: (inodes: number) => void },
  ): Promise<RemapResult> {
    this.#writable('remap')
    checkId('id', id)
    checkId('target', target)
    const o = checkKeys('options', options, ['uidMaps', 'gidMaps', 'signal', 'onProgress'])
    const to = checkMapping('options', { uidMaps: o.uidMaps, gidMaps: o.gidMaps })
    const signal = checkSignal(o.signal)
    const onProgress = checkCallback<(n: number) => void>('options.onProgress', o.onProgress)
    return this.#serial(target, () =>
      runTask(() => this.#native.remapStart(id, target, to), { api: 'remap', paths: { path: id, dest: target }, signal, onProgress }),
    )
  }

  /**
   * Mount layer `id` on the existing directory `target` with its owners shown under
   * `uidMaps`/`gidMaps` (an idmapped mount: Linux 5.15+, root): no inode changes. `status()`
   * tells whether this kernel supports it. Undo with `unmount(target)`.
   * @throws {BtrfsError} `EINVAL` (kernel or filesystem without idmapped mounts, bad maps), `EPERM`, `ENOENT`.
   * @example await driver.mountIdmapped('image', '/run/ct1/rootfs', { uidMaps: [{ containerId: 0, hostId: 200000, size: 65536 }], gidMaps: [{ containerId: 0, hostId: 200000, size: 65536 }] })
   */
  async mountIdmapped(id: string, target: string, maps: { uidMaps?: IdMap[]; gidMaps?: IdMap[] }): Promise<void> {
    this.#writable('mountIdmapped')
    checkId('id', id)
    checkString('target', target)
    const m = checkMapping('maps', maps)
    await call('mountIdmapped', () => this.#native.mountIdmapped(id, target, m), { path: id, dest: target })
  }

  /**
   * Make every call that returned before this one durable: writes back the filesystem's data
   * and commits. Without it, a power cut may lose the newest calls (those since btrfs's last
   * commit, 30 s at most by default), never part of one: every layer is complete or absent.
   * @example await driver.applyDiff('app', null, 'app.tar'); await driver.sync()
   */
  async sync(): Promise<void> {
    await call('sync', () => this.#native.sync())
  }

  /**
   * Wait until the kernel has dropped removed layers (a minute at most each) and destroy their
   * qgroups: btrfs frees a deleted subvolume in the background, and this wakes its cleaner.
   * @example await driver.remove('limited'); await driver.releaseQgroups()
   */
  async releaseQgroups(): Promise<void> {
    await call('releaseQgroups', () => this.#native.releaseQgroups())
  }

  /**
   * Release the store: undo the private mount, drop the lock. The driver is unusable after;
   * calling it again does nothing.
   * @example process.on('SIGTERM', () => void driver.cleanup())
   */
  async cleanup(): Promise<void> {
    await call('cleanup', () => this.#native.cleanup())
  }

  /**
   * The same as `cleanup()`: release the store.
   * @example const driver = await BtrfsDriver.init(home); try { ... } finally { await driver.close() }
   */
  async close(): Promise<void> {
    await this.cleanup()
  }

  /**
   * `await using driver = await BtrfsDriver.init(home)` releases the store (`cleanup()`) when
   * the block is left, normally or by an exception.
   * @example { await using driver = await BtrfsDriver.init(home); await driver.create('base') } // released here
   */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.cleanup()
  }

  /**
   * Hold layer `id` (`get`) and return a handle whose `path` is valid until the handle is
   * released: by `release()`, or by leaving the block of an `await using` declaration. The
   * graph driver's `get`/`put` do the same by hand.
   * @throws {BtrfsError} as `get`: `ENOENT` when missing, `EBUSY` while a filesystem is mounted
   *   on the layer, `EINVAL` for a bad id.
   * @example { await using layer = await driver.acquire('container-1'); await fs.promises.writeFile(`${layer.path}/hello`, 'hi') } // put here
   */
  async acquire(id: string, options?: { mountLabel?: string }): Promise<LayerHandle> {
    const where = await this.get(id, options)
    return new LayerHandle(id, where, () => this.put(id))
  }
}

/**
 * A layer held by `BtrfsDriver.acquire`: `path` is valid until `release()` (or the end of the
 * `await using` block that holds it). Releasing twice does nothing.
 * @example const layer = await driver.acquire('app'); try { run(layer.path) } finally { await layer.release() }
 */
export class LayerHandle implements AsyncDisposable {
  /** The layer id. */
  readonly id: string
  /** The absolute path of the layer's tree. */
  readonly path: string
  #release: (() => Promise<void>) | undefined

  /** @internal */
  constructor(id: string, where: string, release: () => Promise<void>) {
    this.id = id
    this.path = where
    this.#release = release
  }

  /** Whether the handle was released (its `path` may then go away). */
  get released(): boolean {
    return this.#release === undefined
  }

  /**
   * Release the layer (`put`); the second and later calls do nothing.
   * @example await layer.release()
   */
  async release(): Promise<void> {
    const release = this.#release
    this.#release = undefined
    if (release) await release()
  }

  /**
   * Release the layer at the end of an `await using` block.
   * @example { await using layer = await driver.acquire('app') } // released here
   */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.release()
  }
}

/** Bytes handed to the native applier at a time from a stream. */
const FEED_BATCH = 1 << 20

/**
 * Push `input` to the native applier: a Buffer at once, a stream in chunks of about 1 MiB
 * (queued without a thread-pool round trip while the applier keeps up). A file path is read
 * by the native side: nothing to push. `write` and `tryWrite` copy the bytes before they
 * return, so one batch buffer serves the whole stream: no 1 MiB of garbage per MiB fed, which
 * V8 would free only at its next full GC (Buffers do not press it to run).
 */
async function feed(
  sink: Pick<ApplySink | LayerSink | ReceiveSink, 'write' | 'tryWrite'>,
  input: Readable | Uint8Array | string,
  aborted: () => boolean,
  stopped: Promise<void>,
): Promise<void> {
  if (typeof input === 'string') return
  if (input instanceof Uint8Array) {
    await sink.write(Buffer.from(input.buffer, input.byteOffset, input.byteLength))
    return
  }
  const batch = Buffer.allocUnsafeSlow(FEED_BATCH)
  let size = 0
  // Else wait for room off the event loop; false: the applier stopped (finish says why).
  const push = async (b: Buffer): Promise<boolean> => sink.tryWrite(b) || (await sink.write(b))
  // Not `for await`: a destroyed Readable.from() whose generator waits on a promise that never
  // settles never ends its iteration, and an abort must not wait for the input.
  const it = (input as AsyncIterable<unknown>)[Symbol.asyncIterator]()
  const stop = stopped.then(() => undefined)
  let ended = false
  try {
    for (;;) {
      const next = it.next()
      next.catch(() => undefined) // lost the race to an abort: its failure is moot
      const r = await Promise.race([next, stop])
      if (r === undefined) return
      if (r.done) {
        ended = true
        break
      }
      if (aborted()) return
      let b = typeof r.value === 'string' ? Buffer.from(r.value) : (r.value as Buffer)
      if (size === 0 && b.length >= FEED_BATCH) {
        if (!(await push(b))) return
        continue
      }
      while (b.length > 0) {
        const n = b.copy(batch, size)
        size += n
        b = b.subarray(n)
        if (size === FEED_BATCH) {
          size = 0
          if (!(await push(batch))) return
        }
      }
    }
  } finally {
    // As `for await` does when left early (it destroys a stream), without waiting for it.
    if (!ended) it.return?.().catch(() => undefined)
  }
  if (size > 0 && !aborted()) await sink.write(batch.subarray(0, size))
}
