import { call } from './errors'
import { checkBool, checkKeys, checkString } from './validate'
import { native } from './native'

/** What the kernel reports about one subvolume (`BTRFS_IOC_GET_SUBVOL_INFO`). */
export interface SubvolumeInfo {
  /** Subvolume (tree) id; 5 is the top-level subvolume. */
  id: number
  /** Name of the subvolume in its parent directory. */
  name: string
  /** Id of the subvolume that contains this one; 0 for the top level. */
  parentId: number
  /** Inode number of the directory that holds this subvolume. */
  dirId: number
  uuid: string
  /** UUID of the subvolume this one is a snapshot of; `null` when it is not a snapshot. */
  parentUuid: string | null
  /** UUID of the subvolume this one was received from; `null` when not received. */
  receivedUuid: string | null
  /** Latest transaction id of the subvolume. */
  generation: number
  /** Transaction id of the last change. */
  ctransid: number
  /** Transaction id of creation. */
  otransid: number
  readOnly: boolean
  /** Time of the last change. */
  ctime: Date
  /** Time of creation. */
  otime: Date
}

/** A nested subvolume, with its path relative to the subvolume it was listed from. */
export interface NestedSubvolume {
  /** The path, relative; bytes that are not UTF-8 show as U+FFFD (then see `rawPath`). */
  path: string
  id: number
  /**
   * Only when the path is not valid UTF-8: its exact bytes. Join them to the listed path as
   * Buffers to reach the subvolume with `fs`.
   */
  rawPath?: Buffer
}

/** Allocated (`total`) and used bytes of one kind of block group. */
export interface Space {
  total: number
  used: number
}

/** One device of a btrfs filesystem. */
export interface Device {
  id: number
  path: string
  uuid: string
  totalBytes: number
  bytesUsed: number
}

/** Facts about a whole btrfs filesystem. */
export interface FilesystemInfo {
  fsid: string
  label: string
  devices: Device[]
  nodeSize: number
  sectorSize: number
  generation: number
  space: { data: Space; metadata: Space; system: Space }
}

/**
 * Whether `path` is the root directory of a btrfs subvolume.
 * @example await isSubvolume('/mnt/pool/layer') // true
 * @throws {BtrfsError} `ENOENT` when missing, `ERR_NOT_BTRFS` when not on btrfs.
 */
export async function isSubvolume(path: string): Promise<boolean> {
  return call('isSubvolume', () => native.isSubvolume(checkString('path', path)))
}

/**
 * Create an empty subvolume at `path`.
 * @example await createSubvolume('/mnt/pool/base')
 * @throws {BtrfsError} `EEXIST` when `path` exists, `ENOENT` when its parent does not,
 *   `ENAMETOOLONG` for a name over 255 bytes, `ERR_NOT_BTRFS` when not on btrfs.
 */
export async function createSubvolume(path: string): Promise<void> {
  await call('createSubvolume', () => native.createSubvolume(checkString('path', path)))
}

/**
 * Snapshot the subvolume at `source` to `dest`; instant and copy-on-write.
 * @example await snapshot('/mnt/pool/base', '/mnt/pool/child', { readOnly: true })
 * @throws {BtrfsError} `ENOENT` when `source` is missing, `EINVAL` when it is not a subvolume,
 *   `EEXIST` when `dest` exists, `EXDEV` across filesystems, `ERR_NOT_BTRFS`.
 */
export async function snapshot(source: string, dest: string, options?: { readOnly?: boolean }): Promise<void> {
  const o = checkKeys('options', options, ['readOnly'])
  const readOnly = checkBool('options.readOnly', o.readOnly)
  checkString('source', source)
  checkString('dest', dest)
  await call('snapshot', () => native.snapshot(source, dest, readOnly), { path: source, dest })
}

/**
 * Delete the subvolume at `path`. With `recursive`, nested subvolumes (found through the
 * subvolume tree, never by walking files) are deleted first, read-only ones included.
 * @example await deleteSubvolume('/mnt/pool/child', { recursive: true })
 * @throws {BtrfsError} `EINVAL` when `path` is not a subvolume, `ENOTEMPTY` when it holds
 *   nested subvolumes and `recursive` is not set, `ENOENT`, `EPERM`, `ERR_NOT_BTRFS`.
 */
export async function deleteSubvolume(path: string, options?: { recursive?: boolean }): Promise<void> {
  const o = checkKeys('options', options, ['recursive'])
  const recursive = checkBool('options.recursive', o.recursive)
  await call('deleteSubvolume', () => native.deleteSubvolume(checkString('path', path), recursive))
}

/**
 * Facts about the subvolume at `path`.
 * @example const { id, uuid, readOnly } = await subvolumeInfo('/mnt/pool/base')
 * @throws {BtrfsError} `EINVAL` when `path` is not a subvolume, `ENOENT`, `ERR_NOT_BTRFS`.
 */
export async function subvolumeInfo(path: string): Promise<SubvolumeInfo> {
  const i = await call('subvolumeInfo', () => native.subvolumeInfo(checkString('path', path)))
  return {
    id: i.id,
    name: i.name,
    parentId: i.parentId,
    dirId: i.dirId,
    uuid: i.uuid,
    parentUuid: i.parentUuid ?? null,
    receivedUuid: i.receivedUuid ?? null,
    generation: i.generation,
    ctransid: i.ctransid,
    otransid: i.otransid,
    readOnly: i.readOnly,
    ctime: new Date(i.ctimeMs),
    otime: new Date(i.otimeMs),
  }
}

/**
 * Subvolumes nested below the subvolume at `path`, parents before children, with paths
 * relative to `path`.
 * @example await listSubvolumes('/mnt/pool/base') // [{ path: 'a', id: 257 }, { path: 'a/b', id: 258 }]
 * @throws {BtrfsError} `EINVAL` when `path` is not a subvolume, `ENOENT`, `ERR_NOT_BTRFS`.
 */
export async function listSubvolumes(path: string): Promise<NestedSubvolume[]> {
  return call('listSubvolumes', () => native.listSubvolumes(checkString('path', path)))
}

/**
 * Whether the subvolume at `path` is read-only.
 * @example await isReadOnly('/mnt/pool/image') // true
 * @throws {BtrfsError} `EINVAL` when `path` is not a subvolume, `ENOENT`, `ERR_NOT_BTRFS`.
 */
export async function isReadOnly(path: string): Promise<boolean> {
  return call('isReadOnly', () => native.isReadOnly(checkString('path', path)))
}

/**
 * Make the subvolume at `path` read-only (`true`) or writable (`false`).
 * @example await setReadOnly('/mnt/pool/image', true)
 * @throws {BtrfsError} `EINVAL` when `path` is not a subvolume, `EPERM` without ownership.
 */
export async function setReadOnly(path: string, value: boolean): Promise<void> {
  checkBool('value', value ?? null)
  await call('setReadOnly', () => native.setReadOnly(checkString('path', path), value))
}

/**
 * Write back the filesystem's dirty file data and commit its current transaction, waiting for both.
 * @example await sync('/mnt/pool')
 * @throws {BtrfsError} `ENOENT`, `ERR_NOT_BTRFS`.
 */
export async function sync(path: string): Promise<void> {
  await call('sync', () => native.sync(checkString('path', path)))
}

/**
 * Facts about the btrfs filesystem holding `path`: UUID, label, devices, sizes, space use.
 * @example const { fsid, space } = await filesystemInfo('/mnt/pool')
 * @throws {BtrfsError} `ENOENT`, `ERR_NOT_BTRFS`.
 */
export async function filesystemInfo(path: string): Promise<FilesystemInfo> {
  const f = await call('filesystemInfo', () => native.filesystemInfo(checkString('path', path)))
  return {
    fsid: f.fsid,
    label: f.label,
    devices: f.devices,
    nodeSize: f.nodeSize,
    sectorSize: f.sectorSize,
    generation: f.generation,
    space: { data: f.data, metadata: f.metadata, system: f.system },
  }
}

/**
 * Detach the mount on `target` (lazily), e.g. one made by `BtrfsDriver.mountIdmapped`.
 * @throws {BtrfsError} `EINVAL` when nothing is mounted there, `EPERM` without privilege.
 * @example await unmount('/run/ct1/rootfs')
 */
export async function unmount(target: string): Promise<void> {
  await call('unmount', () => native.unmount(checkString('target', target)))
}
