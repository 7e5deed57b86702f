//! Layout checks against the kernel's own header: a C program built from `<linux/btrfs.h>`
//! prints sizeof/offsetof and the ioctl request numbers, and the Rust side must agree.

use super::*;
use std::collections::HashMap;
use std::mem::{offset_of, size_of};
use std::process::Command;

macro_rules! layout {
    ($out:ident, $rust:ty, $c:literal, [$($field:ident $(=> $cfield:literal)?),*]) => {{
        $out.push(($c.to_string(), size_of::<$rust>()));
        $( $out.push((format!("{}.{}", $c, layout!(@name $field $(=> $cfield)?)), offset_of!($rust, $field))); )*
    }};
    (@name $field:ident => $cfield:literal) => { $cfield };
    (@name $field:ident) => { stringify!($field) };
}

fn rust_layouts() -> Vec<(String, usize)> {
    let mut v = Vec::new();
    // The inode item as TREE_SEARCH hands it over: read by offsets, not through a struct.
    for (name, at) in [
        ("btrfs_inode_item", InodeItem::SIZE),
        ("btrfs_inode_item.generation", InodeItem::GENERATION),
        ("btrfs_inode_item.transid", InodeItem::TRANSID),
        ("btrfs_inode_item.nlink", InodeItem::NLINK),
        ("btrfs_inode_item.uid", InodeItem::UID),
        ("btrfs_inode_item.gid", InodeItem::GID),
        ("btrfs_inode_item.mode", InodeItem::MODE),
        ("btrfs_inode_item.atime", InodeItem::ATIME),
        ("btrfs_inode_item.ctime", InodeItem::CTIME),
        ("btrfs_timespec", 12),
    ] {
        v.push((name.to_string(), at));
    }
    layout!(v, VolArgs, "btrfs_ioctl_vol_args", [fd, name]);
    layout!(
        v,
        VolArgsV2,
        "btrfs_ioctl_vol_args_v2",
        [fd, transid, flags, unused, name]
    );
    layout!(v, Timespec, "btrfs_ioctl_timespec", [sec, nsec]);
    layout!(
        v,
        GetSubvolInfoArgs,
        "btrfs_ioctl_get_subvol_info_args",
        [
            treeid,
            name,
            parent_id,
            dirid,
            generation,
            flags,
            uuid,
            parent_uuid,
            received_uuid,
            ctransid,
            otransid,
            stransid,
            rtransid,
            ctime,
            otime,
            stime,
            rtime,
            reserved
        ]
    );
    layout!(
        v,
        GetSubvolRootrefArgs,
        "btrfs_ioctl_get_subvol_rootref_args",
        [min_treeid, rootref, num_items]
    );
    layout!(
        v,
        InoLookupUserArgs,
        "btrfs_ioctl_ino_lookup_user_args",
        [dirid, treeid, name, path]
    );
    layout!(
        v,
        InoLookupArgs,
        "btrfs_ioctl_ino_lookup_args",
        [treeid, objectid, name]
    );
    layout!(
        v,
        FsInfoArgs,
        "btrfs_ioctl_fs_info_args",
        [
            max_id,
            num_devices,
            fsid,
            nodesize,
            sectorsize,
            clone_alignment,
            csum_type,
            csum_size,
            flags,
            generation,
            metadata_uuid,
            reserved
        ]
    );
    layout!(
        v,
        DevInfoArgs,
        "btrfs_ioctl_dev_info_args",
        [devid, uuid, bytes_used, total_bytes, path]
    );
    layout!(
        v,
        SpaceArgs,
        "btrfs_ioctl_space_args",
        [space_slots, total_spaces]
    );
    layout!(
        v,
        SpaceInfo,
        "btrfs_ioctl_space_info",
        [flags, total_bytes, used_bytes]
    );
    layout!(
        v,
        SearchKey,
        "btrfs_ioctl_search_key",
        [
            tree_id,
            min_objectid,
            max_objectid,
            min_offset,
            max_offset,
            min_transid,
            max_transid,
            min_type,
            max_type,
            nr_items
        ]
    );
    layout!(v, SearchHeader, "btrfs_ioctl_search_header", [transid, objectid, offset, type_ => "type", len]);
    layout!(
        v,
        SendArgs,
        "btrfs_ioctl_send_args",
        [
            send_fd,
            clone_sources_count,
            clone_sources,
            parent_root,
            flags,
            version,
            reserved
        ]
    );
    layout!(
        v,
        ReceivedSubvolArgs,
        "btrfs_ioctl_received_subvol_args",
        [uuid, stransid, rtransid, stime, rtime, flags, reserved]
    );
    layout!(
        v,
        CloneRangeArgs,
        "btrfs_ioctl_clone_range_args",
        [src_fd, src_offset, src_length, dest_offset]
    );
    layout!(
        v,
        EncodedIoArgs,
        "btrfs_ioctl_encoded_io_args",
        [
            iov,
            iovcnt,
            offset,
            flags,
            len,
            unencoded_len,
            unencoded_offset,
            compression,
            encryption,
            reserved
        ]
    );
    layout!(v, QuotaCtlArgs, "btrfs_ioctl_quota_ctl_args", [cmd, status]);
    layout!(
        v,
        QgroupLimit,
        "btrfs_qgroup_limit",
        [flags, max_rfer, max_excl, rsv_rfer, rsv_excl]
    );
    layout!(
        v,
        QgroupLimitArgs,
        "btrfs_ioctl_qgroup_limit_args",
        [qgroupid, lim]
    );
    layout!(
        v,
        QgroupCreateArgs,
        "btrfs_ioctl_qgroup_create_args",
        [create, qgroupid]
    );
    layout!(
        v,
        SearchArgsV2,
        "btrfs_ioctl_search_args_v2",
        [key, buf_size]
    );
    v
}

fn rust_requests() -> Vec<(&'static str, u64)> {
    use nix::{request_code_none, request_code_read, request_code_readwrite, request_code_write};
    let m = BTRFS_IOCTL_MAGIC;
    vec![
        (
            "BTRFS_IOC_SNAP_DESTROY",
            request_code_write!(m, 15, size_of::<VolArgs>()) as u64,
        ),
        (
            "BTRFS_IOC_TREE_SEARCH_V2",
            request_code_readwrite!(m, 17, size_of::<SearchArgsV2>()) as u64,
        ),
        (
            "BTRFS_IOC_INO_LOOKUP",
            request_code_readwrite!(m, 18, size_of::<InoLookupArgs>()) as u64,
        ),
        (
            "BTRFS_IOC_SPACE_INFO",
            request_code_readwrite!(m, 20, size_of::<SpaceArgs>()) as u64,
        ),
        (
            "BTRFS_IOC_WAIT_SYNC",
            request_code_write!(m, 22, size_of::<u64>()) as u64,
        ),
        (
            "BTRFS_IOC_SNAP_CREATE_V2",
            request_code_write!(m, 23, size_of::<VolArgsV2>()) as u64,
        ),
        (
            "BTRFS_IOC_SUBVOL_CREATE_V2",
            request_code_write!(m, 24, size_of::<VolArgsV2>()) as u64,
        ),
        (
            "BTRFS_IOC_START_SYNC",
            request_code_read!(m, 24, size_of::<u64>()) as u64,
        ),
        (
            "BTRFS_IOC_SUBVOL_GETFLAGS",
            request_code_read!(m, 25, size_of::<u64>()) as u64,
        ),
        (
            "BTRFS_IOC_SUBVOL_SETFLAGS",
            request_code_write!(m, 26, size_of::<u64>()) as u64,
        ),
        (
            "BTRFS_IOC_DEV_INFO",
            request_code_readwrite!(m, 30, size_of::<DevInfoArgs>()) as u64,
        ),
        (
            "BTRFS_IOC_FS_INFO",
            request_code_read!(m, 31, size_of::<FsInfoArgs>()) as u64,
        ),
        (
            "BTRFS_IOC_GET_FSLABEL",
            request_code_read!(m, 49, LABEL_SIZE),
        ),
        (
            "BTRFS_IOC_GET_SUBVOL_INFO",
            request_code_read!(m, 60, size_of::<GetSubvolInfoArgs>()) as u64,
        ),
        (
            "BTRFS_IOC_GET_SUBVOL_ROOTREF",
            request_code_readwrite!(m, 61, size_of::<GetSubvolRootrefArgs>()) as u64,
        ),
        (
            "BTRFS_IOC_INO_LOOKUP_USER",
            request_code_readwrite!(m, 62, size_of::<InoLookupUserArgs>()) as u64,
        ),
        (
            "BTRFS_IOC_SNAP_DESTROY_V2",
            request_code_write!(m, 63, size_of::<VolArgsV2>()) as u64,
        ),
        ("BTRFS_IOC_SYNC", request_code_none!(m, 8)),
        (
            "BTRFS_IOC_SEND",
            request_code_write!(m, 38, size_of::<SendArgs>()) as u64,
        ),
        (
            "BTRFS_IOC_CLONE_RANGE",
            request_code_write!(m, 13, size_of::<CloneRangeArgs>()) as u64,
        ),
        (
            "BTRFS_IOC_SET_RECEIVED_SUBVOL",
            request_code_readwrite!(m, 37, size_of::<ReceivedSubvolArgs>()) as u64,
        ),
        (
            "BTRFS_IOC_ENCODED_WRITE",
            request_code_write!(m, 64, size_of::<EncodedIoArgs>()) as u64,
        ),
        (
            "BTRFS_IOC_QUOTA_CTL",
            request_code_readwrite!(m, 40, size_of::<QuotaCtlArgs>()) as u64,
        ),
        (
            "BTRFS_IOC_QGROUP_CREATE",
            request_code_write!(m, 42, size_of::<QgroupCreateArgs>()) as u64,
        ),
        (
            "BTRFS_IOC_QGROUP_LIMIT",
            request_code_read!(m, 43, size_of::<QgroupLimitArgs>()) as u64,
        ),
    ]
}

/// Compile and run a C program that prints the header's view of the same names.
fn header_layouts() -> HashMap<String, u64> {
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/fs.h>\n#include <linux/btrfs.h>\n#include <linux/btrfs_tree.h>\nint main(void){\n",
    );
    for (name, _) in rust_layouts() {
        match name.split_once('.') {
            None => c += &format!("printf(\"{name} %zu\\n\", sizeof(struct {name}));\n"),
            Some((s, f)) => {
                c += &format!("printf(\"{name} %zu\\n\", offsetof(struct {s}, {f}));\n")
            }
        }
    }
    for (name, _) in rust_requests() {
        c += &format!("printf(\"{name} %llu\\n\", (unsigned long long){name});\n");
    }
    for name in [
        "BTRFS_SUBVOL_RDONLY",
        "BTRFS_SUBVOL_SPEC_BY_ID",
        "BTRFS_MAX_ROOTREF_BUFFER_NUM",
        "BTRFS_INO_LOOKUP_USER_PATH_MAX",
        "BTRFS_FIRST_FREE_OBJECTID",
        "BTRFS_ROOT_REF_KEY",
        "BTRFS_SPACE_INFO_GLOBAL_RSV",
        "BTRFS_BLOCK_GROUP_METADATA",
        "BTRFS_ROOT_SUBVOL_RDONLY",
        "BTRFS_QUOTA_CTL_ENABLE",
        "BTRFS_QGROUP_LIMIT_MAX_RFER",
        "BTRFS_QUOTA_TREE_OBJECTID",
        "BTRFS_QGROUP_STATUS_KEY",
        "BTRFS_QGROUP_LIMIT_KEY",
        "BTRFS_QGROUP_STATUS_FLAG_ON",
        "BTRFS_SEND_FLAG_NO_FILE_DATA",
        "BTRFS_SEND_FLAG_VERSION",
        "BTRFS_SEND_FLAG_COMPRESSED",
        "BTRFS_INODE_ITEM_KEY",
        "BTRFS_INODE_REF_KEY",
        "BTRFS_INODE_EXTREF_KEY",
        "BTRFS_XATTR_ITEM_KEY",
        "BTRFS_LAST_FREE_OBJECTID",
        "BTRFS_ENCODED_IO_COMPRESSION_ZLIB",
        "BTRFS_ENCODED_IO_COMPRESSION_ZSTD",
        "BTRFS_ENCODED_IO_ENCRYPTION_NONE",
    ] {
        c += &format!("printf(\"{name} %llu\\n\", (unsigned long long)({name}));\n");
    }
    c += "return 0;}\n";
    let dir = std::env::temp_dir().join(format!("btrfs-layers-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("layout.c");
    let bin = dir.join("layout");
    std::fs::write(&src, c).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-include", "linux/btrfs_tree.h", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| {
            panic!("the layout test needs a C compiler ({cc}) and linux/btrfs.h: {e}")
        });
    assert!(
        status.success(),
        "compiling the layout probe against linux/btrfs.h failed"
    );
    let out = Command::new(&bin).output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn layouts_match_linux_btrfs_h() {
    let header = header_layouts();
    let mut mismatches = Vec::new();
    for (name, rust) in rust_layouts() {
        if header[&name] != rust as u64 {
            mismatches.push(format!("{name}: header {} rust {rust}", header[&name]));
        }
    }
    for (name, rust) in rust_requests() {
        if header[name] != rust {
            mismatches.push(format!("{name}: header {:#x} rust {rust:#x}", header[name]));
        }
    }
    let consts: [(&str, u64); 26] = [
        (
            "BTRFS_ENCODED_IO_COMPRESSION_ZLIB",
            ENCODED_IO_COMPRESSION_ZLIB as u64,
        ),
        (
            "BTRFS_ENCODED_IO_COMPRESSION_ZSTD",
            ENCODED_IO_COMPRESSION_ZSTD as u64,
        ),
        (
            "BTRFS_ENCODED_IO_ENCRYPTION_NONE",
            ENCODED_IO_ENCRYPTION_NONE as u64,
        ),
        ("BTRFS_INODE_ITEM_KEY", INODE_ITEM_KEY as u64),
        ("BTRFS_INODE_REF_KEY", INODE_REF_KEY as u64),
        ("BTRFS_INODE_EXTREF_KEY", INODE_EXTREF_KEY as u64),
        ("BTRFS_XATTR_ITEM_KEY", XATTR_ITEM_KEY as u64),
        ("BTRFS_LAST_FREE_OBJECTID", LAST_FREE_OBJECTID),
        ("BTRFS_SEND_FLAG_NO_FILE_DATA", SEND_FLAG_NO_FILE_DATA),
        ("BTRFS_SEND_FLAG_VERSION", SEND_FLAG_VERSION),
        ("BTRFS_SEND_FLAG_COMPRESSED", SEND_FLAG_COMPRESSED),
        ("BTRFS_QUOTA_CTL_ENABLE", QUOTA_CTL_ENABLE),
        ("BTRFS_QGROUP_LIMIT_MAX_RFER", QGROUP_LIMIT_MAX_RFER),
        ("BTRFS_QUOTA_TREE_OBJECTID", QUOTA_TREE_OBJECTID),
        ("BTRFS_QGROUP_STATUS_KEY", QGROUP_STATUS_KEY as u64),
        ("BTRFS_QGROUP_LIMIT_KEY", QGROUP_LIMIT_KEY as u64),
        ("BTRFS_QGROUP_STATUS_FLAG_ON", QGROUP_STATUS_FLAG_ON),
        ("BTRFS_ROOT_SUBVOL_RDONLY", ROOT_SUBVOL_RDONLY),
        ("BTRFS_SUBVOL_RDONLY", SUBVOL_RDONLY),
        ("BTRFS_SUBVOL_SPEC_BY_ID", SUBVOL_SPEC_BY_ID),
        (
            "BTRFS_MAX_ROOTREF_BUFFER_NUM",
            MAX_ROOTREF_BUFFER_NUM as u64,
        ),
        (
            "BTRFS_INO_LOOKUP_USER_PATH_MAX",
            INO_LOOKUP_USER_PATH_MAX as u64,
        ),
        ("BTRFS_FIRST_FREE_OBJECTID", FIRST_FREE_OBJECTID),
        ("BTRFS_ROOT_REF_KEY", ROOT_REF_KEY as u64),
        ("BTRFS_SPACE_INFO_GLOBAL_RSV", SPACE_INFO_GLOBAL_RSV),
        ("BTRFS_BLOCK_GROUP_METADATA", BLOCK_GROUP_METADATA),
    ];
    for (name, rust) in consts {
        if header[name] != rust {
            mismatches.push(format!("{name}: header {} rust {rust}", header[name]));
        }
    }
    assert!(
        mismatches.is_empty(),
        "layout mismatches:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn c_bytes_stops_at_nul() {
    assert_eq!(c_bytes(b"abc\0def"), b"abc");
    assert_eq!(c_bytes(b"abc"), b"abc");
    let mut buf = [0xffu8; 8];
    put_name(&mut buf, b"xy");
    assert_eq!(c_bytes(&buf), b"xy");
}
