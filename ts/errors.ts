import type { NativeError } from '../native/index'

/** The fields of a `BtrfsError` besides its code and message. */
export interface BtrfsErrorFields {
  errno?: number
  syscall?: string
  path?: string
  dest?: string
  rawPath?: Buffer
  errors?: BtrfsError[]
  cause?: unknown
}

/**
 * The one error class of btrfs-layers, shaped like Node's fs errors. Every rejection for a bad
 * value or a failed operation is a `BtrfsError`; its `code` follows Node's fs codes
 * (`ENOENT`, `EEXIST`, ...) or is one of this package's own (`ERR_NOT_BTRFS`,
 * `ERR_PREREQUISITES`, `ERR_BAD_LAYER`, `ERR_ID_MAPPING`, `ERR_DIGEST`, `ABORT_ERR`, `ERR_INTERNAL`, and the
 * image store's `ERR_REGISTRY_AUTH`, `ERR_REGISTRY`, `ERR_BAD_MANIFEST`, `ERR_UNSUPPORTED_LAYER`, `ERR_BAD_RECORD`). The
 * message reads like Node's: `ENOENT: layer does not exist, getMetadata '/store/subvolumes/x'`,
 * naming the call you made; two-path calls show both, `EEXIST: file already exists, snapshot 'a' -> 'b'`.
 * A wrong JS type is no `BtrfsError` but a `TypeError` with code `ERR_INVALID_ARG_TYPE`, as
 * in Node; an abort is an {@link AbortError} (a `BtrfsError` too).
 * @example try { await createSubvolume('/mnt/pool/base') } catch (e) { if (e instanceof BtrfsError && e.code === 'EEXIST') console.log(e.path, e.syscall) }
 */
export class BtrfsError extends Error {
  /** Node-style error code, e.g. `'ENOENT'` or `'ERR_NOT_BTRFS'`. */
  readonly code: BtrfsErrorCode
  /** The kernel's errno when it gave one, negative as in Node's fs errors (`-os.constants.errno.ENOENT`). */
  readonly errno?: number
  /**
   * The system call or ioctl that failed (or whose result was refused), e.g. `'openat'` or
   * `'BTRFS_IOC_SNAP_CREATE_V2'`; absent when an argument was refused before any call.
   */
  readonly syscall?: string
  /** The path the failed operation concerned (the first one of a two-path call); bytes that are not UTF-8 show as U+FFFD. */
  readonly path?: string
  /** The second path of a two-path call (`snapshot`'s `dest`, `remap`'s and `mountIdmapped`'s `target`). */
  readonly dest?: string
  /** Only when `path` is not valid UTF-8: its exact bytes (for `fs` calls, which take Buffers). */
  readonly rawPath?: Buffer
  /** Every error of an operation that goes on past failures (`remapLayer`), first one included. */
  readonly errors?: BtrfsError[]

  constructor(code: BtrfsErrorCode, message: string, fields: BtrfsErrorFields = {}) {
    super(message, fields.cause !== undefined ? { cause: fields.cause } : undefined)
    this.name = 'BtrfsError'
    this.code = code
    if (fields.errno !== undefined) this.errno = fields.errno
    if (fields.syscall) this.syscall = fields.syscall
    if (fields.path !== undefined) this.path = fields.path
    if (fields.dest !== undefined) this.dest = fields.dest
    if (fields.rawPath !== undefined) this.rawPath = fields.rawPath
    if (fields.errors) this.errors = fields.errors
  }
}

/**
 * A call stopped by its `AbortSignal`, as `fs.promises` reports one: `name` `'AbortError'`,
 * `code` `'ABORT_ERR'`, and `cause` the signal's `reason`. Still an `instanceof BtrfsError`.
 * @example try { await driver.applyDiff('app', input, { signal }) } catch (e) { if (e instanceof AbortError) console.log('stopped:', e.cause) }
 */
export class AbortError extends BtrfsError {
  constructor(reason: unknown, message = 'ABORT_ERR: the operation was aborted') {
    super('ABORT_ERR', message, { cause: reason })
    this.name = 'AbortError'
  }
}

/** Every code a `BtrfsError` can carry. */
export type BtrfsErrorCode =
  | 'ENOENT'
  | 'EEXIST'
  | 'EINVAL'
  | 'ENAMETOOLONG'
  | 'EPERM'
  | 'EACCES'
  | 'EBUSY'
  | 'ENOTEMPTY'
  | 'ENOSPC'
  | 'EXDEV'
  | 'ENOTDIR'
  | 'EROFS'
  | 'ELOOP'
  | 'EDQUOT'
  | 'ERR_NOT_BTRFS'
  | 'ERR_PREREQUISITES'
  | 'ERR_BAD_LAYER'
  | 'ERR_ID_MAPPING'
  | 'ERR_DIGEST'
  | 'ERR_REGISTRY_AUTH'
  | 'ERR_REGISTRY'
  | 'ERR_BAD_MANIFEST'
  | 'ERR_UNSUPPORTED_LAYER'
  | 'ERR_BAD_RECORD'
  | 'ABORT_ERR'
  | 'ERR_INTERNAL'
  | (string & {})

/** The paths a call was given, for the message: `path`, and `dest` on two-path calls (which then set both). */
export interface CallPaths {
  path?: string
  dest?: string
}

/** Whether `err` is what the native side rejects or throws with. */
function isNativeError(err: unknown): err is NativeError {
  return typeof err === 'object' && err !== null && (err as NativeError).name === 'BtrfsNativeError' && typeof (err as NativeError).code === 'string'
}

/**
 * Turn what the native side threw into a `BtrfsError` (the one place this happens): `api` is
 * the method the user called, `paths` what a two-path call was given.
 */
export function fromNative(err: unknown, api: string, paths: CallPaths = {}): Error {
  if (isNativeError(err)) return fromObject(err, api, paths)
  // Not from our native code: a BtrfsError or TypeError of the facade, the error of an input
  // stream the caller gave, passed on as they are.
  if (err instanceof Error) return err
  return new BtrfsError('ERR_INTERNAL', `ERR_INTERNAL: ${String(err)}, ${api}`)
}

function fromObject(rec: NativeError, api: string, paths: CallPaths): BtrfsError {
  const twoPaths = paths.dest !== undefined
  const path = twoPaths ? paths.path : rec.path
  const where = twoPaths ? ` '${path}' -> '${paths.dest}'` : path !== undefined ? ` '${path}'` : ''
  const more = rec.errors && rec.errors.length > 1 ? ` (and ${rec.errors.length - 1} more errors)` : ''
  return new BtrfsError(rec.code, `${rec.code}: ${rec.message}, ${api}${where}${more}`, {
    errno: rec.errno,
    syscall: rec.syscall,
    path,
    dest: paths.dest,
    rawPath: twoPaths ? undefined : rec.rawPath,
    errors: rec.errors?.map((e) => fromObject(e, api, {})),
  })
}

/** Await a native promise, translating its rejection for API call `api`. */
export async function call<T>(api: string, p: () => Promise<T>, paths?: CallPaths): Promise<T> {
  try {
    return await p()
  } catch (err) {
    throw fromNative(err, api, paths)
  }
}

/** Run a synchronous native call, translating what it throws for API call `api`. */
export function callSync<T>(api: string, f: () => T, paths?: CallPaths): T {
  try {
    return f()
  } catch (err) {
    throw fromNative(err, api, paths)
  }
}
