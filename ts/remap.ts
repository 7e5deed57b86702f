import { BtrfsError, call, fromNative } from './errors'
import { native } from './native'
import type { IdMap } from './driver'

/** Uid and gid maps of one side of a remap; omitted maps mean ids are not shifted. */
export interface Mapping {
  uidMaps?: IdMap[]
  gidMaps?: IdMap[]
}

/** Options of `remapLayer`: the two mappings, and progress and cancellation. */
export interface RemapOptions {
  /** The mapping the tree's owners are in now. */
  from: Mapping
  /** The mapping they should be in. */
  to: Mapping
  /** Also remap nested subvolumes of the same filesystem (never other filesystems). */
  crossSubvolumes?: boolean
  signal?: AbortSignal
  /** Called with the inodes visited so far (about every 100 ms, and at the end). */
  onProgress?: (inodes: number) => void
}

/** What `remapLayer` and `BtrfsDriver.remap` did. */
export interface RemapResult {
  /** Inodes visited, each multiply-linked inode once. */
  visited: number
  /** Inodes whose owner changed. */
  changed: number
}

function maps(name: string, value: unknown): IdMap[] | undefined {
  if (value === undefined) return undefined
  if (!Array.isArray(value)) throw new BtrfsError('EINVAL', `EINVAL: ${name} must be an array of { containerId, hostId, size }`)
  return value.map((m, i) => {
    if (m === null || typeof m !== 'object') throw new BtrfsError('EINVAL', `EINVAL: ${name}[${i}] must be an object`)
    for (const k of ['containerId', 'hostId', 'size'] as const) {
      const v = (m as Record<string, unknown>)[k]
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
        throw new BtrfsError('EINVAL', `EINVAL: ${name}[${i}].${k} must be an integer from 0 to 4294967295`)
      }
    }
    return { containerId: m.containerId, hostId: m.hostId, size: m.size }
  })
}

export function mapping(name: string, value: unknown): { uidMaps?: IdMap[]; gidMaps?: IdMap[] } {
  if (value === null || typeof value !== 'object') throw new BtrfsError('EINVAL', `EINVAL: ${name} must be { uidMaps?, gidMaps? }`)
  const v = value as Record<string, unknown>
  for (const k of Object.keys(v)) if (k !== 'uidMaps' && k !== 'gidMaps') throw new BtrfsError('EINVAL', `EINVAL: unknown ${name} key '${k}'`)
  return { uidMaps: maps(`${name}.uidMaps`, v.uidMaps), gidMaps: maps(`${name}.gidMaps`, v.gidMaps) }
}

/**
 * Shift the owner of every inode under `path` from mapping `from` to mapping `to`: a
 * container id `c` owned as `from`'s host id becomes `to`'s host id for `c`. Walks in
 * parallel by directory fds, lchown only (never follows a symlink), each hardlinked inode
 * once, never into another filesystem (nor a nested subvolume unless `crossSubvolumes`);
 * setuid/setgid bits and file capabilities (a v3 capability's root id shifted too) survive,
 * and POSIX ACL entries are shifted as well.
 * @example await remapLayer('/store/subvolumes/app', { from: {}, to: { uidMaps: [{ containerId: 0, hostId: 100000, size: 65536 }], gidMaps: [...] } })
 * @throws {BtrfsError} `ERR_ID_MAPPING` for an id outside the maps (every failure is in
 *   `errors`, with its path; the walk goes on past failures), `EINVAL` for bad maps, `ABORT_ERR`.
 */
export async function remapLayer(path: string, options: RemapOptions): Promise<RemapResult> {
  if (typeof path !== 'string') throw new BtrfsError('EINVAL', 'EINVAL: path must be a string')
  if (options === null || typeof options !== 'object') throw new BtrfsError('EINVAL', 'EINVAL: options must be an object')
  for (const k of Object.keys(options)) {
    if (!['from', 'to', 'crossSubvolumes', 'signal', 'onProgress'].includes(k)) throw new BtrfsError('EINVAL', `EINVAL: unknown option '${k}'`)
  }
  const from = mapping('from', options.from)
  const to = mapping('to', options.to)
  const cross = options.crossSubvolumes ?? false
  if (typeof cross !== 'boolean') throw new BtrfsError('EINVAL', 'EINVAL: crossSubvolumes must be a boolean')
  const { signal, onProgress } = options
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new BtrfsError('EINVAL', 'EINVAL: signal must be an AbortSignal')
  if (onProgress !== undefined && typeof onProgress !== 'function') throw new BtrfsError('EINVAL', 'EINVAL: onProgress must be a function')
  if (signal?.aborted) throw new BtrfsError('ABORT_ERR', 'ABORT_ERR: the operation was aborted')
  let task: import('../native/index').RemapTask
  try {
    task = native.remapStart(path, from, to, cross)
  } catch (err) {
    throw fromNative(err)
  }
  return runRemap(task, signal, onProgress)
}

/** Drive a native remap task: progress every 100 ms, abort on the signal, the result or error. */
export async function runRemap(
  task: import('../native/index').RemapTask,
  signal: AbortSignal | undefined,
  onProgress: ((inodes: number) => void) | undefined,
): Promise<RemapResult> {
  let last = -1
  const report = (): void => {
    const n = task.visited
    if (onProgress && n !== last) {
      last = n
      onProgress(n)
    }
  }
  const timer = onProgress ? setInterval(report, 100) : undefined
  const onAbort = (): void => task.abort()
  signal?.addEventListener('abort', onAbort, { once: true })
  // Aborted while the call waited its turn: the listener above came too late for it.
  if (signal?.aborted) task.abort()
  try {
    return (await call(() => task.finish())) as RemapResult
  } finally {
    if (timer) clearInterval(timer)
    signal?.removeEventListener('abort', onAbort)
    report()
  }
}
