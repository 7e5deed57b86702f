//! The btrfs ioctl interface: `linux/btrfs.h` layouts and `nix` ioctl wrappers.
//!
//! Every struct here is `#[repr(C)]` with the exact size and field offsets of the kernel
//! header; `tests::layouts_match_linux_btrfs_h` compiles the header with the system C compiler
//! and compares them.

use nix::{ioctl_none, ioctl_read, ioctl_readwrite, ioctl_write_ptr};

pub const BTRFS_IOCTL_MAGIC: u8 = 0x94;
pub const VOL_NAME_MAX: usize = 255;
pub const PATH_NAME_MAX: usize = 4087;
pub const SUBVOL_NAME_MAX: usize = 4039;
pub const UUID_SIZE: usize = 16;
pub const FSID_SIZE: usize = 16;
pub const LABEL_SIZE: usize = 256;
pub const DEVICE_PATH_NAME_MAX: usize = 1024;
pub const INO_LOOKUP_PATH_MAX: usize = 4080;
pub const INO_LOOKUP_USER_PATH_MAX: usize = 4080 - VOL_NAME_MAX - 1;
pub const MAX_ROOTREF_BUFFER_NUM: usize = 255;

/// `BTRFS_SUBVOL_RDONLY`: the read-only flag of SNAP_CREATE_V2 and SUBVOL_GET/SETFLAGS.
pub const SUBVOL_RDONLY: u64 = 1 << 1;
/// `BTRFS_ROOT_SUBVOL_RDONLY`: the read-only bit of a root item's flags (GET_SUBVOL_INFO).
pub const ROOT_SUBVOL_RDONLY: u64 = 1 << 0;
/// `BTRFS_SUBVOL_SPEC_BY_ID`: SNAP_DESTROY_V2 names the subvolume by id, not by name.
pub const SUBVOL_SPEC_BY_ID: u64 = 1 << 4;

/// Inode number of every subvolume's root directory (`BTRFS_FIRST_FREE_OBJECTID`).
pub const FIRST_FREE_OBJECTID: u64 = 256;
/// The last inode number a subvolume can hold (`BTRFS_LAST_FREE_OBJECTID`, -256).
pub const LAST_FREE_OBJECTID: u64 = u64::MAX - 255;
/// `BTRFS_INODE_ITEM_KEY`: an inode's `btrfs_inode_item`, keyed (inode, 1, 0).
pub const INODE_ITEM_KEY: u32 = 1;
/// `BTRFS_INODE_REF_KEY`: an inode's names in one directory, keyed (inode, 12, directory).
pub const INODE_REF_KEY: u32 = 12;
/// `BTRFS_INODE_EXTREF_KEY`: names that did not fit the INODE_REF item, keyed (inode, 13, hash).
pub const INODE_EXTREF_KEY: u32 = 13;
/// `BTRFS_XATTR_ITEM_KEY`: an inode's xattrs, keyed (inode, 24, name hash).
pub const XATTR_ITEM_KEY: u32 = 24;

/// A `struct btrfs_inode_item` as TREE_SEARCH hands it over (little-endian bytes); each field
/// is None when the item is too short to hold it.
#[derive(Clone, Copy)]
pub struct InodeItem<'a>(pub &'a [u8]);

impl InodeItem<'_> {
    /// `sizeof(struct btrfs_inode_item)`.
    pub const SIZE: usize = 160;
    /// Offsets of its fields (checked against linux/btrfs_tree.h by the layout test).
    pub const GENERATION: usize = 0;
    pub const TRANSID: usize = 8;
    pub const NLINK: usize = 40;
    pub const UID: usize = 44;
    pub const GID: usize = 48;
    pub const MODE: usize = 52;
    /// `atime`, a btrfs_timespec: u64 seconds, u32 nanoseconds.
    pub const ATIME: usize = 112;
    pub const CTIME: usize = 124;

    fn u32_at(&self, at: usize) -> Option<u32> {
        let b = self.0.get(at..at + 4)?;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }

    fn u64_at(&self, at: usize) -> Option<u64> {
        let b = self.0.get(at..at + 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    /// The transaction that made the inode.
    pub fn generation(&self) -> Option<u64> {
        self.u64_at(Self::GENERATION)
    }

    /// The transaction that last changed the item.
    pub fn transid(&self) -> Option<u64> {
        self.u64_at(Self::TRANSID)
    }

    /// `ctime` as (seconds, nanoseconds).
    pub fn ctime(&self) -> Option<(i64, u32)> {
        Some((
            self.u64_at(Self::CTIME)? as i64,
            self.u32_at(Self::CTIME + 8)?,
        ))
    }

    pub fn nlink(&self) -> Option<u32> {
        self.u32_at(Self::NLINK)
    }

    pub fn uid(&self) -> Option<u32> {
        self.u32_at(Self::UID)
    }

    pub fn gid(&self) -> Option<u32> {
        self.u32_at(Self::GID)
    }

    /// As `st_mode`: type and permission bits.
    pub fn mode(&self) -> Option<u32> {
        self.u32_at(Self::MODE)
    }

    /// Whether two whole items are equal in everything but `transid` and `atime`.
    pub fn same_but_atime(&self, other: &InodeItem<'_>) -> bool {
        let skip = |i: usize| {
            (Self::TRANSID..Self::TRANSID + 8).contains(&i)
                || (Self::ATIME..Self::ATIME + 12).contains(&i)
        };
        self.0.len() == Self::SIZE
            && other.0.len() == Self::SIZE
            && (0..Self::SIZE).all(|i| skip(i) || self.0[i] == other.0[i])
    }
}
/// The top-level subvolume (`BTRFS_FS_TREE_OBJECTID`).
pub const FS_TREE_OBJECTID: u64 = 5;
/// The tree of tree roots (`BTRFS_ROOT_TREE_OBJECTID`).
pub const ROOT_TREE_OBJECTID: u64 = 1;
/// `BTRFS_ROOT_REF_KEY`: an item in the root tree linking a parent subvolume to a child.
pub const ROOT_REF_KEY: u32 = 156;
/// A subvolume's root item in the root tree (`BTRFS_ROOT_ITEM_KEY`).
pub const ROOT_ITEM_KEY: u32 = 132;
/// `BTRFS_SUPER_MAGIC` as reported in `statfs.f_type`.
pub const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;

pub const BLOCK_GROUP_DATA: u64 = 1 << 0;
pub const BLOCK_GROUP_SYSTEM: u64 = 1 << 1;
pub const BLOCK_GROUP_METADATA: u64 = 1 << 2;
/// `BTRFS_SPACE_INFO_GLOBAL_RSV`: the global block reserve, not a block group type.
pub const SPACE_INFO_GLOBAL_RSV: u64 = 1 << 49;
/// `BTRFS_FS_INFO_FLAG_GENERATION`: ask FS_INFO to fill in `generation`.
pub const FS_INFO_FLAG_GENERATION: u64 = 1 << 1;

#[repr(C)]
pub struct VolArgs {
    pub fd: i64,
    pub name: [u8; PATH_NAME_MAX + 1],
}

#[repr(C)]
pub struct VolArgsV2 {
    pub fd: i64,
    pub transid: u64,
    pub flags: u64,
    /// `union { struct { size; qgroup_inherit }; unused[4] }`
    pub unused: [u64; 4],
    /// `union { name[SUBVOL_NAME_MAX + 1]; devid; subvolid }`
    pub name: [u8; SUBVOL_NAME_MAX + 1],
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Timespec {
    pub sec: u64,
    pub nsec: u32,
}

#[repr(C)]
pub struct GetSubvolInfoArgs {
    pub treeid: u64,
    pub name: [u8; VOL_NAME_MAX + 1],
    pub parent_id: u64,
    pub dirid: u64,
    pub generation: u64,
    pub flags: u64,
    pub uuid: [u8; UUID_SIZE],
    pub parent_uuid: [u8; UUID_SIZE],
    pub received_uuid: [u8; UUID_SIZE],
    pub ctransid: u64,
    pub otransid: u64,
    pub stransid: u64,
    pub rtransid: u64,
    pub ctime: Timespec,
    pub otime: Timespec,
    pub stime: Timespec,
    pub rtime: Timespec,
    pub reserved: [u64; 8],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct RootRef {
    pub treeid: u64,
    pub dirid: u64,
}

#[repr(C)]
pub struct GetSubvolRootrefArgs {
    pub min_treeid: u64,
    pub rootref: [RootRef; MAX_ROOTREF_BUFFER_NUM],
    pub num_items: u8,
    pub align: [u8; 7],
}

#[repr(C)]
pub struct InoLookupUserArgs {
    pub dirid: u64,
    pub treeid: u64,
    pub name: [u8; VOL_NAME_MAX + 1],
    pub path: [u8; INO_LOOKUP_USER_PATH_MAX],
}

#[repr(C)]
pub struct InoLookupArgs {
    pub treeid: u64,
    pub objectid: u64,
    pub name: [u8; INO_LOOKUP_PATH_MAX],
}

#[repr(C)]
pub struct FsInfoArgs {
    pub max_id: u64,
    pub num_devices: u64,
    pub fsid: [u8; FSID_SIZE],
    pub nodesize: u32,
    pub sectorsize: u32,
    pub clone_alignment: u32,
    pub csum_type: u16,
    pub csum_size: u16,
    pub flags: u64,
    pub generation: u64,
    pub metadata_uuid: [u8; FSID_SIZE],
    pub reserved: [u8; 944],
}

#[repr(C)]
pub struct DevInfoArgs {
    pub devid: u64,
    pub uuid: [u8; UUID_SIZE],
    pub bytes_used: u64,
    pub total_bytes: u64,
    pub unused: [u64; 379],
    pub path: [u8; DEVICE_PATH_NAME_MAX],
}

/// Header of `btrfs_ioctl_space_args`; `space_slots` entries of [`SpaceInfo`] follow it.
#[repr(C)]
pub struct SpaceArgs {
    pub space_slots: u64,
    pub total_spaces: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct SpaceInfo {
    pub flags: u64,
    pub total_bytes: u64,
    pub used_bytes: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct SearchKey {
    pub tree_id: u64,
    pub min_objectid: u64,
    pub max_objectid: u64,
    pub min_offset: u64,
    pub max_offset: u64,
    pub min_transid: u64,
    pub max_transid: u64,
    pub min_type: u32,
    pub max_type: u32,
    pub nr_items: u32,
    pub unused: u32,
    pub unused1: u64,
    pub unused2: u64,
    pub unused3: u64,
    pub unused4: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct SearchHeader {
    pub transid: u64,
    pub objectid: u64,
    pub offset: u64,
    pub type_: u32,
    pub len: u32,
}

/// Header of `btrfs_ioctl_search_args_v2`; `buf_size` bytes of results follow it.
#[repr(C)]
pub struct SearchArgsV2 {
    pub key: SearchKey,
    pub buf_size: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct QuotaCtlArgs {
    pub cmd: u64,
    pub status: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct QgroupLimit {
    pub flags: u64,
    pub max_rfer: u64,
    pub max_excl: u64,
    pub rsv_rfer: u64,
    pub rsv_excl: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct QgroupLimitArgs {
    pub qgroupid: u64,
    pub lim: QgroupLimit,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct QgroupCreateArgs {
    pub create: u64,
    pub qgroupid: u64,
}

pub const QUOTA_CTL_ENABLE: u64 = 1;
pub const QGROUP_LIMIT_MAX_RFER: u64 = 1 << 0;
/// The quota tree (`BTRFS_QUOTA_TREE_OBJECTID`).
pub const QUOTA_TREE_OBJECTID: u64 = 8;
pub const QGROUP_STATUS_KEY: u32 = 240;
pub const QGROUP_INFO_KEY: u32 = 242;
pub const QGROUP_LIMIT_KEY: u32 = 244;
pub const QGROUP_STATUS_FLAG_ON: u64 = 1 << 0;

#[repr(C)]
pub struct SendArgs {
    pub send_fd: i64,
    pub clone_sources_count: u64,
    pub clone_sources: *mut u64,
    pub parent_root: u64,
    pub flags: u64,
    pub version: u32,
    pub reserved: [u8; 28],
}

/// `struct btrfs_ioctl_received_subvol_args`: what SET_RECEIVED_SUBVOL records on a subvolume
/// made by a receive (the sender's UUID and ctransid).
#[repr(C)]
pub struct ReceivedSubvolArgs {
    pub uuid: [u8; UUID_SIZE],
    pub stransid: u64,
    pub rtransid: u64,
    pub stime: Timespec,
    pub rtime: Timespec,
    pub flags: u64,
    pub reserved: [u64; 16],
}

/// `struct btrfs_ioctl_clone_range_args`: share `src_length` bytes of `src_fd` (0: to its end).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct CloneRangeArgs {
    pub src_fd: i64,
    pub src_offset: u64,
    pub src_length: u64,
    pub dest_offset: u64,
}

/// `struct btrfs_ioctl_encoded_io_args`: an extent's data as it is on disk (compressed).
#[repr(C)]
pub struct EncodedIoArgs {
    pub iov: *const libc::iovec,
    pub iovcnt: libc::c_ulong,
    pub offset: i64,
    pub flags: u64,
    pub len: u64,
    pub unencoded_len: u64,
    pub unencoded_offset: u64,
    pub compression: u32,
    pub encryption: u32,
    pub reserved: [u8; 64],
}

/// `BTRFS_ENCODED_IO_COMPRESSION_*` and `_ENCRYPTION_NONE`.
pub const ENCODED_IO_COMPRESSION_NONE: u32 = 0;
pub const ENCODED_IO_COMPRESSION_ZLIB: u32 = 1;
pub const ENCODED_IO_COMPRESSION_ZSTD: u32 = 2;
pub const ENCODED_IO_ENCRYPTION_NONE: u32 = 0;
/// `BTRFS_MAX_UNCOMPRESSED`: the most an encoded extent decompresses to.
pub const MAX_UNCOMPRESSED: u64 = 128 * 1024;

/// `BTRFS_SEND_FLAG_NO_FILE_DATA`: send metadata only; writes become UPDATE_EXTENT commands.
pub const SEND_FLAG_NO_FILE_DATA: u64 = 0x1;
/// `BTRFS_SEND_FLAG_VERSION`: `version` names the stream protocol (else 1). Linux 5.19+.
pub const SEND_FLAG_VERSION: u64 = 0x8;
/// `BTRFS_SEND_FLAG_COMPRESSED`: compressed extents go as they are (ENCODED_WRITE, protocol 2).
pub const SEND_FLAG_COMPRESSED: u64 = 0x10;

/// `struct btrfs_root_ref` (packed, little-endian on disk): the item body of a ROOT_REF key.
pub const ROOT_REF_ITEM_SIZE: usize = 8 + 8 + 2;

macro_rules! zeroed_default {
    ($($t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                // SAFETY: a plain-old-data ioctl struct of integers and byte arrays; all-zero is valid.
                unsafe { std::mem::zeroed() }
            }
        }
    )*};
}
zeroed_default!(
    VolArgs,
    VolArgsV2,
    GetSubvolInfoArgs,
    GetSubvolRootrefArgs,
    InoLookupUserArgs,
    InoLookupArgs,
    FsInfoArgs,
    DevInfoArgs,
    SendArgs,
    ReceivedSubvolArgs,
    EncodedIoArgs
);

ioctl_write_ptr!(snap_destroy, BTRFS_IOCTL_MAGIC, 15, VolArgs);
ioctl_readwrite!(tree_search_v2, BTRFS_IOCTL_MAGIC, 17, SearchArgsV2);
ioctl_readwrite!(ino_lookup, BTRFS_IOCTL_MAGIC, 18, InoLookupArgs);
ioctl_readwrite!(space_info, BTRFS_IOCTL_MAGIC, 20, SpaceArgs);
ioctl_write_ptr!(wait_sync, BTRFS_IOCTL_MAGIC, 22, u64);
ioctl_write_ptr!(snap_create_v2, BTRFS_IOCTL_MAGIC, 23, VolArgsV2);
ioctl_write_ptr!(subvol_create_v2, BTRFS_IOCTL_MAGIC, 24, VolArgsV2);
ioctl_read!(start_sync, BTRFS_IOCTL_MAGIC, 24, u64);
ioctl_read!(subvol_getflags, BTRFS_IOCTL_MAGIC, 25, u64);
ioctl_write_ptr!(subvol_setflags, BTRFS_IOCTL_MAGIC, 26, u64);
ioctl_readwrite!(dev_info, BTRFS_IOCTL_MAGIC, 30, DevInfoArgs);
ioctl_read!(fs_info, BTRFS_IOCTL_MAGIC, 31, FsInfoArgs);
ioctl_read!(get_fslabel, BTRFS_IOCTL_MAGIC, 49, [u8; LABEL_SIZE]);
ioctl_read!(get_subvol_info, BTRFS_IOCTL_MAGIC, 60, GetSubvolInfoArgs);
ioctl_readwrite!(
    get_subvol_rootref,
    BTRFS_IOCTL_MAGIC,
    61,
    GetSubvolRootrefArgs
);
ioctl_readwrite!(ino_lookup_user, BTRFS_IOCTL_MAGIC, 62, InoLookupUserArgs);
ioctl_write_ptr!(snap_destroy_v2, BTRFS_IOCTL_MAGIC, 63, VolArgsV2);
ioctl_write_ptr!(send, BTRFS_IOCTL_MAGIC, 38, SendArgs);
ioctl_write_ptr!(clone_range, BTRFS_IOCTL_MAGIC, 13, CloneRangeArgs);
ioctl_readwrite!(
    set_received_subvol,
    BTRFS_IOCTL_MAGIC,
    37,
    ReceivedSubvolArgs
);
ioctl_write_ptr!(encoded_write, BTRFS_IOCTL_MAGIC, 64, EncodedIoArgs);
ioctl_readwrite!(quota_ctl, BTRFS_IOCTL_MAGIC, 40, QuotaCtlArgs);
ioctl_write_ptr!(qgroup_create, BTRFS_IOCTL_MAGIC, 42, QgroupCreateArgs);
// The kernel header declares QGROUP_LIMIT as _IOR although userspace passes the limit in.
ioctl_read!(qgroup_limit, BTRFS_IOCTL_MAGIC, 43, QgroupLimitArgs);
ioctl_none!(sync_fs, BTRFS_IOCTL_MAGIC, 8);

/// The bytes of a NUL-terminated C string held in a fixed array.
pub fn c_bytes(buf: &[u8]) -> &[u8] {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    &buf[..end]
}

/// Copy `name` into a fixed NUL-terminated array; the caller has checked its length.
pub fn put_name(dst: &mut [u8], name: &[u8]) {
    debug_assert!(name.len() < dst.len());
    dst[..name.len()].copy_from_slice(name);
    dst[name.len()] = 0;
}

#[cfg(test)]
mod tests;
