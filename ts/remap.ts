import { native } from './native'
import { runTask } from './task'
import { checkBool, checkCallback, checkKeys, checkMapping, checkSignal, checkString, type IdMap } from './validate'

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

/**
 * Shift the owner of every inode under `path` from mapping `from` to mapping `to`: a
 * container id `c` owned as `from`'s host id becomes `to`'s host id for `c`. Walks in
 * parallel by directory fds, lchown only (never follows a symlink), each hardlinked inode
 * once, never into another filesystem (nor a nested subvolume unless `crossSubvolumes`);
 * setuid/setgid bits and file capabilities (a v3 capability's root id shifted too) survive,
 * and POSIX ACL entries are shifted as well.
 * With CAP_SYS_ADMIN, for a whole subvolume with nothing mounted inside it, the filesystem's
 * running transaction is committed and the old owners are read from the subvolume's btree,
 * so each file costs a single lchown; otherwise each entry is stat'ed first.
 * @example await remapLayer('/store/subvolumes/app', { from: {}, to: { uidMaps: [{ containerId: 0, hostId: 100000, size: 65536 }], gidMaps: [...] } })
 * @throws {BtrfsError} `ERR_ID_MAPPING` for an id outside the maps (every failure is in
 *   `errors`, with its path; the walk goes on past failures), `EINVAL` for bad maps; `AbortError`.
 */
export async function remapLayer(path: string, options: RemapOptions): Promise<RemapResult> {
  checkString('path', path)
  const o = checkKeys('options', options ?? null, ['from', 'to', 'crossSubvolumes', 'signal', 'onProgress'])
  const from = checkMapping('options.from', o.from)
  const to = checkMapping('options.to', o.to)
  const cross = checkBool('options.crossSubvolumes', o.crossSubvolumes)
  const signal = checkSignal(o.signal)
  const onProgress = checkCallback<(inodes: number) => void>('options.onProgress', o.onProgress)
  return runTask(() => native.remapStart(path, from, to, cross), { api: 'remapLayer', signal, onProgress })
}
