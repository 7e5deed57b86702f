/**
 * btrfs-layers: layered filesystem trees on btrfs subvolumes.
 * @packageDocumentation
 */
export { AbortError, BtrfsError, type BtrfsErrorCode, type BtrfsErrorFields } from './errors'
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
  statusPairs,
  LayerHandle,
  type ApplyDiffOptions,
  type ApplyLayerOptions,
  type AppliedLayer,
  type Change,
  type ChangesOptions,
  type Compression,
  type CreateOptions,
  type DiffOptions,
  type DiffReadable,
  type DriverOptions,
  type DriverStatus,
  type SpaceUse,
  type IdMap,
  type LayerMetadata,
  type LayerDigests,
  type LayerVerify,
} from './driver'
export { remapLayer, type Mapping, type RemapOptions, type RemapResult } from './remap'
export {
  ImageStore,
  type CommitOptions,
  type Credentials,
  type ExportLayoutOptions,
  type ImportLayoutOptions,
  type HistoryEntry,
  type ImageConfig,
  type ImageRecord,
  type Platform,
  type PullOptions,
  type PullProgress,
  type PushOptions,
  type PushProgress,
  type PushResult,
  type RemoveResult,
} from './image/store'
