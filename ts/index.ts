/**
 * btrfs-layers: layered filesystem trees on btrfs subvolumes.
 * @packageDocumentation
 */
export { BtrfsError, type BtrfsErrorCode } from './errors'
export {
  createSubvolume,
  deleteSubvolume,
  filesystemInfo,
  isReadOnly,
  isSubvolume,
  listSubvolumes,
  setReadOnly,
  snapshot,
  subvolumeInfo,
  sync,
  type Device,
  type FilesystemInfo,
  type NestedSubvolume,
  type Space,
  type SubvolumeInfo,
} from './subvolume'
export {
  BtrfsDriver,
  parseBytes,
  type CreateOptions,
  type DriverOptions,
  type IdMap,
  type LayerMetadata,
} from './driver'
