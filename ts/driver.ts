import { BtrfsError, call, fromNative } from './errors'
import { native } from './native'
import type { AbortFlag, ApplySink, NativeDriver } from '../native/index'
import { Readable } from 'node:stream'
import { runRemap, type RemapResult } from './remap'
import { abortError, checkBool, checkCallback, checkIdMaps, checkKeys, checkMapping, checkSignal, checkString, type IdMap } from './validate'

export type { IdMap } from './validate'

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

/** Options of `BtrfsDriver.diff`. */
export interface DiffOptions {
  compression?: Compression
  signal?: AbortSignal
}

/** Options of `BtrfsDriver.applyDiff`. */
export interface ApplyDiffOptions {
  signal?: AbortSignal
  /** Called with the uncompressed tar bytes consumed so far (about every 100 ms, and at the end). */
  onProgress?: (bytes: number) => void
}

/** What the driver records about a layer. */
export interface LayerMetadata extends Record<string, string> {
  id: string
  /** Parent layer id, `''` for a base layer. */
  parent: string
  /** ISO 8601 creation time. */
  created: string
  readOnly: 'true' | 'false'
  /** Size limit in bytes, `''` when none. */
  size: string
  subvolumeId: string
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
    throw new BtrfsError('EINVAL', `EINVAL: ${name} must be a number of bytes or a size string`)
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

function checkId(name: string, value: unknown): string {
  return checkString(name, value)
}

/**
 * A layer store in the shape of a container engine's btrfs graph driver: every layer is a
 * btrfs subvolume under `home/subvolumes`, and a child layer is a snapshot of its parent.
 *
 * @example
 * const driver = await BtrfsDriver.init('/var/lib/mystore')
 * await driver.create('base')
 * await driver.create('child', 'base')
 * const dir = await driver.get('child') // write files here
 * await driver.put('child')
 * await driver.remove('child')
 * await driver.cleanup()
 */
export class BtrfsDriver {
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
    if (o.readOnly !== undefined) checkBool('readOnly', o.readOnly)
    const opts = {
      uidMaps: checkIdMaps('uidMaps', o.uidMaps),
      gidMaps: checkIdMaps('gidMaps', o.gidMaps),
      minSpace: o.minSpace === undefined ? undefined : parseBytes('minSpace', o.minSpace),
      readOnly: o.readOnly === true,
    }
    const n = (await call(() => native.driverInit(home, opts))) as NativeDriver
    return new BtrfsDriver(n, opts.readOnly)
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
   * Create layer `id`: an empty subvolume, or a snapshot of layer `parent`. The layer becomes
   * visible only when complete.
   * @example await driver.create('app', 'base', { size: '1G' })
   * @throws {BtrfsError} `EINVAL` for a bad id or option (or `size` below `minSpace`),
   *   `EEXIST` when `id` exists, `ENOENT` when `parent` does not.
   */
  async create(id: string, parent?: string | null, options?: CreateOptions): Promise<void> {
    this.#writable('create')
    checkId('id', id)
    if (parent !== undefined && parent !== null && parent !== '') checkId('parent', parent)
    const o = checkKeys('options', options, ['mountLabel', 'size', 'readOnly'])
    if (o.mountLabel !== undefined) checkString('mountLabel', o.mountLabel)
    if (o.readOnly !== undefined) checkBool('readOnly', o.readOnly)
    const opts = {
      mountLabel: o.mountLabel as string | undefined,
      size: o.size === undefined ? undefined : parseBytes('size', o.size),
      readOnly: o.readOnly as boolean | undefined,
    }
    const p = parent ? parent : undefined
    await this.#serial(id, () => call(() => this.#native.create(id, p, opts)))
  }

  /** `create` for a writable container layer (same as `create` without `readOnly`). * @example await driver.createReadWrite('container-1', 'image', { size: '2G' })
  /** `create` for a writable container layer (same as `create` without `readOnly`). */
  async createReadWrite(id: string, parent?: string | null, options?: Omit<CreateOptions, 'readOnly'>): Promise<void> {
    const o = checkKeys('options', options, ['mountLabel', 'size'])
    await this.create(id, parent, { ...o, readOnly: false } as CreateOptions)
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
    await this.#serial(id, () => call(() => this.#native.remove(id)))
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
    if (o.mountLabel !== undefined) checkString('mountLabel', o.mountLabel)
    const label = o.mountLabel as string | undefined
    return this.#serial(id, () => call(() => this.#native.get(id, label))) as Promise<string>
  }

  /**
   * Release one `get` of layer `id`.
   * @throws {BtrfsError} `EINVAL` when the layer is not held.
   * @example await driver.put('container-1')
   */
  async put(id: string): Promise<void> {
    this.#writable('put')
    checkId('id', id)
    await this.#serial(id, () => call(() => this.#native.put(id)))
  }

  /**
   * How many `get`s of layer `id` have not been `put` yet (synchronous: a counter, no I/O).
   * @throws {BtrfsError} `EINVAL` for a bad id (thrown, not a rejection).
   * @example driver.refCount('container-1') // 0 after as many puts as gets
   */
  refCount(id: string): number {
    checkId('id', id)
    try {
      return this.#native.refCount(id)
    } catch (err) {
      throw fromNative(err)
    }
  }

  /**
   * Whether layer `id` exists (complete), a filesystem mounted on it or not.
   * @throws {BtrfsError} `EINVAL` for a bad id.
   * @example if (!(await driver.exists('base'))) await driver.create('base')
   */
  async exists(id: string): Promise<boolean> {
    checkId('id', id)
    return (await call(() => this.#native.exists(id))) as boolean
  }

  /** Ids of all layers, sorted. * @example for (const id of await driver.layers()) console.log(id)
  /** Ids of all layers, sorted. */
  async layers(): Promise<string[]> {
    return (await call(() => this.#native.layers())) as string[]
  }

  /**
   * `[key, value]` pairs about the store: filesystem UUID and label, devices, data and
   * metadata space, layer count, quota state, kernel version.
   * @example const status = Object.fromEntries(await driver.status()) // status['Quotas'] === 'enabled'
   */
  async status(): Promise<[string, string][]> {
    return (await call(() => this.#native.status())) as [string, string][]
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
    const m = (await call(() => this.#native.metadata(id))) as import('../native/index').LayerMetadata
    return {
      id: m.id,
      parent: m.parent ?? '',
      created: new Date(m.createdMs).toISOString(),
      readOnly: m.readOnly ? 'true' : 'false',
      size: m.size === undefined || m.size === null ? '' : String(m.size),
      subvolumeId: String(m.subvolumeId),
      ...(m.mountLabel ? { mountLabel: m.mountLabel } : {}),
    }
  }

  /**
   * Changes of layer `id` against `parent`: `{ path, kind }` sorted by path, parents first.
   * With `parent` omitted, the layer's own parent (as given to `create`) is used; with
   * `null` or `''`, every entry of the layer is an addition. An entry is modified when its
   * type, mode, owner, rdev or file capability differ, or (not for directories) its size or
   * mtime; the directory holding an added or deleted entry is modified. As root the cost
   * follows the size of the change: a layer descending from `parent` by snapshots is compared
   * by a search of the inode items written since (no snapshot taken), other pairs by btrfs
   * send between read-only snapshots; without privilege, a parallel tree walk. `signal`
   * stops the comparison (the walk of a large layer can take seconds): `ABORT_ERR`.
   * @example await driver.changes('app') // [{ path: '/etc', kind: 'modify' }, { path: '/etc/app.conf', kind: 'add' }]
   * @throws {BtrfsError} `ENOENT` when a layer is missing, `EINVAL` for a bad id, `ABORT_ERR`.
   */
  async changes(id: string, parent?: string | null, options?: { signal?: AbortSignal }): Promise<Change[]> {
    checkId('id', id)
    const [p, whole] = parentArg(parent)
    const signal = checkSignal(checkKeys('options', options, ['signal']).signal)
    return (await this.#serial(id, () => abortable(signal, (flag) => this.#native.changes(id, p, whole, flag)))) as Change[]
  }

  /**
   * Bytes of the added and modified regular files of layer `id` against `parent` (as in
   * `changes`), each inode counted once. `signal` stops it: `ABORT_ERR`.
   * @throws {BtrfsError} `ENOENT` when a layer is missing, `ABORT_ERR`.
   * @example const bytes = await driver.diffSize('container-1') // what a diff of it would carry in file content
   */
  async diffSize(id: string, parent?: string | null, options?: { signal?: AbortSignal }): Promise<number> {
    checkId('id', id)
    const [p, whole] = parentArg(parent)
    const signal = checkSignal(checkKeys('options', options, ['signal']).signal)
    return (await this.#serial(id, () => abortable(signal, (flag) => this.#native.diffSize(id, p, whole, flag)))) as number
  }

  /**
   * The OCI image layer (a PAX tar, optionally gzip or zstd compressed) of layer `id` against
   * `parent` (as in `changes`): entries sorted, parents first, deletions as `.wh.` whiteouts,
   * hardlinks as links, xattrs, devices; ids mapped back to container ids. Streams with flat
   * memory; errors (`ERR_ID_MAPPING`, `ENOENT`, ...) arrive as the stream's `error` event.
   * @example await pipeline(await driver.diff('app', undefined, { compression: 'gzip' }), fs.createWriteStream('app.tar.gz'))
   */
  async diff(id: string, parent?: string | null, options?: DiffOptions): Promise<Readable> {
    checkId('id', id)
    const [p, whole] = parentArg(parent)
    const o = checkKeys('options', options, ['compression', 'signal'])
    const compression = (o.compression ?? 'none') as string
    if (!['none', 'gzip', 'zstd'].includes(compression)) throw new BtrfsError('EINVAL', `EINVAL: compression must be 'none', 'gzip' or 'zstd'`)
    const signal = checkSignal(o.signal)
    if (signal?.aborted) throw abortError()
    if (!(await this.exists(id))) throw new BtrfsError('ENOENT', `ENOENT: layer does not exist, diff '${id}'`, { path: id })
    let stream: import('../native/index').DiffStream
    try {
      stream = this.#native.diffStart(id, p, whole, compression)
    } catch (err) {
      throw fromNative(err)
    }
    let reading = false
    const out = new Readable({
      // Up to 4 chunks ahead of the consumer: the hand-over from the producer overlaps its writes.
      highWaterMark: 16 << 20,
      read() {
        if (reading) return
        reading = true
        stream.next().then(
          (chunk) => {
            reading = false
            out.push(chunk ?? null)
          },
          (err) => {
            reading = false
            out.destroy(fromNative(err))
          },
        )
      },
      destroy(err, cb) {
        stream.abort()
        // Drain so the producer thread can notice the abort and finish.
        const drain = (): void => {
          stream.next().then((c) => (c ? drain() : undefined), () => undefined)
        }
        drain()
        cb(err)
      },
    })
    if (signal) {
      const onAbort = (): void => {
        out.destroy(abortError())
      }
      signal.addEventListener('abort', onAbort, { once: true })
      out.once('close', () => signal.removeEventListener('abort', onAbort))
    }
    return out
  }

  /**
   * Apply an OCI layer tar (plain, gzip or zstd, detected from its first bytes) to layer `id`,
   * created from `parent`. `input` is a Readable, a Buffer, or the path of a tar file.
   * Whiteouts and opaque whiteouts, hardlinks, symlinks, devices, fifos, xattrs, setuid bits,
   * file capabilities and mtimes are applied; ids are mapped through the driver's maps.
   * Every path stays inside the layer whatever the stream holds. The layer changes only when
   * the whole stream applied: a bad stream (`ERR_BAD_LAYER`), an abort (`ABORT_ERR`) or any
   * other failure leaves it as it was.
   * @returns the bytes of file content applied.
   * @throws {BtrfsError} `ERR_BAD_LAYER`, `ERR_ID_MAPPING`, `ABORT_ERR`, `ENOENT`, `EBUSY` while the
   *   layer is held or a filesystem is mounted on it, `EINVAL` for a file path with a NUL byte or
   *   that is not a regular file or a FIFO (before the layer is touched).
   * @example await driver.applyDiff('app', 'base', fs.createReadStream('app.tar.gz'), { onProgress: (n) => bar.update(n) })
   */
  async applyDiff(id: string, parent: string | null | undefined, input: Readable | Buffer | Uint8Array | string, options?: ApplyDiffOptions): Promise<number> {
    this.#writable('applyDiff')
    checkId('id', id)
    if (parent !== undefined && parent !== null && parent !== '') checkId('parent', parent)
    const o = checkKeys('options', options, ['signal', 'onProgress'])
    const signal = checkSignal(o.signal)
    const onProgress = checkCallback<(n: number) => void>('onProgress', o.onProgress)
    const isStream = input instanceof Readable || (typeof input === 'object' && input !== null && typeof (input as unknown as Readable).pipe === 'function' && Symbol.asyncIterator in input)
    if (typeof input !== 'string' && !(input instanceof Uint8Array) && !isStream) {
      throw new BtrfsError('EINVAL', 'EINVAL: input must be a Readable, a Buffer or a file path')
    }
    if (signal?.aborted) throw abortError()
    const p = parent ? parent : undefined
    return this.#serial(id, async () => {
      let sink: ApplySink
      try {
        sink = typeof input === 'string' ? this.#native.applyFile(id, p, input) : this.#native.applyStart(id, p)
      } catch (err) {
        throw fromNative(err)
      }
      let last = -1
      const report = (): void => {
        const n = sink.bytes
        if (onProgress && n !== last) {
          last = n
          onProgress(n)
        }
      }
      const timer = onProgress ? setInterval(report, 100) : undefined
      const onAbort = (): void => {
        sink.abort()
        // A stalled input would keep the loop below waiting for its next chunk.
        if (isStream) (input as Readable).destroy()
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      if (signal?.aborted) onAbort()
      try {
        if (typeof input !== 'string') {
          if (input instanceof Uint8Array) {
            await sink.write(Buffer.from(input.buffer, input.byteOffset, input.byteLength))
          } else {
            let pending: Buffer[] = []
            let size = 0
            for await (const chunk of input as Readable) {
              if (signal?.aborted) break
              const b = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer)
              pending.push(b)
              size += b.length
              if (size >= 1 << 20) {
                const chunk = pending.length === 1 ? pending[0] : Buffer.concat(pending, size)
                pending = []
                size = 0
                // Queued at once while the applier keeps up; else wait for room off the loop.
                if (!sink.tryWrite(chunk) && !(await sink.write(chunk))) break
              }
            }
            if (size > 0 && !signal?.aborted) await sink.write(Buffer.concat(pending, size))
          }
        }
        if (signal?.aborted) sink.abort()
        const applied = (await call(() => sink.finish())) as number
        if (signal?.aborted) throw abortError()
        return applied
      } catch (err) {
        sink.abort()
        throw signal?.aborted ? abortError() : fromNative(err)
      } finally {
        if (timer) clearInterval(timer)
        signal?.removeEventListener('abort', onAbort)
        report()
      }
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
    const onProgress = checkCallback<(n: number) => void>('onProgress', o.onProgress)
    if (signal?.aborted) throw abortError()
    return this.#serial(target, async () => {
      let task: import('../native/index').RemapTask
      try {
        task = this.#native.remapStart(id, target, to)
      } catch (err) {
        throw fromNative(err)
      }
      return runRemap(task, signal, onProgress)
    })
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
    await call(() => this.#native.mountIdmapped(id, target, m))
  }

  /**
   * Make every call that returned before this one durable: writes back the filesystem's data
   * and commits. Without it, a power cut may lose the newest calls (those since btrfs's last
   * commit, 30 s at most by default), never part of one: every layer is complete or absent.
   * @example await driver.applyDiff('app', null, 'app.tar'); await driver.sync()
   */
  async sync(): Promise<void> {
    await call(() => this.#native.sync())
  }

  /**
   * Wait until the kernel has dropped removed layers (a minute at most each) and destroy their
   * qgroups: btrfs frees a deleted subvolume in the background, and this wakes its cleaner.
   * @example await driver.remove('limited'); await driver.releaseQgroups()
   */
  async releaseQgroups(): Promise<void> {
    await call(() => this.#native.releaseQgroups())
  }

  /** Release the store: undo the private mount, drop the lock. The driver is unusable after. * @example process.on('SIGTERM', () => void driver.cleanup())
  /** Release the store: undo the private mount, drop the lock. The driver is unusable after. */
  async cleanup(): Promise<void> {
    await call(() => this.#native.cleanup())
  }
}

/**
 * Run a native call that takes an abort flag: without a signal, none (nothing to pay); with
 * one, a flag the signal sets. Aborted before or during the call: `ABORT_ERR`.
 */
async function abortable<T>(signal: AbortSignal | undefined, run: (flag: AbortFlag | undefined) => Promise<T>): Promise<T> {
  if (!signal) return call(() => run(undefined))
  if (signal.aborted) throw abortError()
  const flag = new native.AbortFlag()
  const onAbort = (): void => flag.abort()
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    return await call(() => run(flag))
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}
