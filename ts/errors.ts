/**
 * The one error class of btrfs-layers. Every rejected promise of this package carries a
 * `BtrfsError`; its `code` follows Node's fs codes (`ENOENT`, `EEXIST`, ...) or is one of
 * this package's own (`ERR_NOT_BTRFS`, `ERR_PREREQUISITES`, `ERR_BAD_LAYER`,
 * `ERR_ID_MAPPING`, `ABORT_ERR`, `ERR_INTERNAL`).
 * @example try { await createSubvolume('/mnt/pool/base') } catch (e) { if (e instanceof BtrfsError && e.code === 'EEXIST') console.log(e.path) }
 */
export class BtrfsError extends Error {
  /** Node-style error code, e.g. `'ENOENT'` or `'ERR_NOT_BTRFS'`. */
  readonly code: BtrfsErrorCode
  /** The kernel's errno when the kernel gave one. */
  readonly errno?: number
  /** The syscall or ioctl that failed, e.g. `'BTRFS_IOC_SNAP_CREATE_V2'`. */
  readonly syscall?: string
  /** The path the failed operation concerned; bytes that are not UTF-8 show as U+FFFD. */
  readonly path?: string
  /** Only when `path` is not valid UTF-8: its exact bytes (for `fs` calls, which take Buffers). */
  readonly rawPath?: Buffer
  /** Every error of an operation that goes on past failures (`remapLayer`), first one included. */
  readonly errors?: BtrfsError[]

  constructor(
    code: BtrfsErrorCode,
    message: string,
    fields: { errno?: number; syscall?: string; path?: string; rawPath?: Buffer; errors?: BtrfsError[] } = {},
  ) {
    super(message)
    this.name = 'BtrfsError'
    this.code = code
    if (fields.errno !== undefined) this.errno = fields.errno
    if (fields.syscall) this.syscall = fields.syscall
    if (fields.path !== undefined) this.path = fields.path
    if (fields.rawPath !== undefined) this.rawPath = fields.rawPath
    if (fields.errors) this.errors = fields.errors
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
  | 'ABORT_ERR'
  | 'ERR_INTERNAL'
  | (string & {})

interface NativeRecord {
  btrfsLayers: 1
  code: string
  errno: number | null
  syscall: string
  path: string | null
  /** The path's bytes in hex, only when they are not UTF-8. */
  rawPath?: string
  message: string
  errors?: NativeRecord[]
}

/** Turn whatever the native layer threw into a `BtrfsError` (the one place this happens). */
export function fromNative(err: unknown): BtrfsError {
  if (err instanceof BtrfsError) return err
  const message = err instanceof Error ? err.message : String(err)
  let rec: NativeRecord | undefined
  try {
    const parsed = JSON.parse(message)
    if (parsed && parsed.btrfsLayers === 1) rec = parsed
  } catch {
    // not a record from our native code: an argument conversion error from napi, for instance
  }
  if (!rec) {
    const e = new BtrfsError('EINVAL', message)
    return e
  }
  return fromRecord(rec)
}

function fromRecord(rec: NativeRecord): BtrfsError {
  const where = [rec.syscall, rec.path !== null ? `'${rec.path}'` : ''].filter(Boolean).join(' ')
  const more = rec.errors && rec.errors.length > 1 ? ` (and ${rec.errors.length - 1} more errors)` : ''
  return new BtrfsError(rec.code, `${rec.code}: ${rec.message}${where ? `, ${where}` : ''}${more}`, {
    errno: rec.errno ?? undefined,
    syscall: rec.syscall || undefined,
    path: rec.path ?? undefined,
    rawPath: rec.rawPath !== undefined ? Buffer.from(rec.rawPath, 'hex') : undefined,
    errors: rec.errors?.map(fromRecord),
  })
}

/** Await a native promise, translating its rejection. */
export async function call<T>(p: () => Promise<T>): Promise<T> {
  try {
    return await p()
  } catch (err) {
    throw fromNative(err)
  }
}
