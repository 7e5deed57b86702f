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
  unmount,
  type Device,
  type FilesystemInfo,
  type NestedSubvolume,
  type Space,
  type SubvolumeInfo,
} from './subvolume'
export {
  BtrfsDriver,
  parseBytes,
  LayerHandle,
  type ApplyDiffOptions,
  type Change,
  type ChangesOptions,
  type Compression,
  type CreateOptions,
  type DiffOptions,
  type DriverOptions,
  type IdMap,
  type LayerMetadata,
} from './driver'
export { remapLayer, type Mapping, type RemapOptions, type RemapResult } from './remap'
