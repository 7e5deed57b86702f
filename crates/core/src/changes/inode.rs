//! What btrfs tells about one inode: its generation (FS_IOC_GETVERSION), which tells a reused
//! inode number from the same inode, and every path that links to it (BTRFS_IOC_INO_PATHS).
//!
//! These two ioctls serve only the send fast path, so they live beside it, not in `ioctl.rs`.

use crate::error::{Context, Result};
use crate::ioctl::BTRFS_IOCTL_MAGIC;
use nix::{ioctl_read, ioctl_readwrite};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

/// `struct btrfs_ioctl_ino_path_args`.
#[repr(C)]
#[derive(Default)]
pub(super) struct InoPathArgs {
    pub inum: u64,
    pub size: u64,
    pub reserved: [u64; 4],
    /// Out: a `struct btrfs_data_container` of `size` bytes.
    pub fspath: u64,
}

ioctl_read!(fs_getversion, b'v', 1, libc::c_long);
ioctl_readwrite!(ino_paths, BTRFS_IOCTL_MAGIC, 35, InoPathArgs);

/// The kernel answers INO_PATHS with at most 4 KiB.
const INO_PATHS_SIZE: usize = 4096;
/// `struct btrfs_data_container` header: bytes_left, bytes_missing, elem_cnt, elem_missed.
const CONTAINER_HEADER: usize = 16;

/// The generation of the inode open at `fd`.
pub(super) fn generation(fd: BorrowedFd<'_>, shown: &Path) -> Result<u64> {
    let mut gen: libc::c_long = 0;
    // SAFETY: gen is a valid long out-parameter.
    unsafe { fs_getversion(fd.as_raw_fd(), &mut gen) }.at("FS_IOC_GETVERSION", shown)?;
    Ok(gen as u64)
}

/// Every path (relative to the subvolume root) of inode `ino` in the subvolume holding
/// `root`; None when there are more than one reply holds. Needs CAP_SYS_ADMIN.
pub(super) fn paths(root: BorrowedFd<'_>, ino: u64, shown: &Path) -> Result<Option<Vec<Vec<u8>>>> {
    let mut buf = vec![0u64; INO_PATHS_SIZE / 8];
    let mut args = InoPathArgs {
        inum: ino,
        size: INO_PATHS_SIZE as u64,
        fspath: buf.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: args is a zeroed btrfs_ioctl_ino_path_args whose fspath points at INO_PATHS_SIZE writable bytes.
    unsafe { ino_paths(root.as_raw_fd(), &mut args) }.at("BTRFS_IOC_INO_PATHS", shown)?;
    // SAFETY: the u64 buffer is INO_PATHS_SIZE initialized bytes, and any byte pattern is a valid u8.
    let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), INO_PATHS_SIZE) };
    Ok(parse_container(bytes))
}

/// The paths of a `btrfs_data_container` as INO_PATHS fills it: `val[i]` is the offset of
/// the i-th NUL-terminated path from `val[0]`. None when paths were left out or it is malformed.
fn parse_container(bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_ne_bytes(b.try_into().unwrap()))
    };
    let (count, missed) = (u32_at(8)? as usize, u32_at(12)?);
    if missed != 0 {
        return None;
    }
    let vals = bytes.get(CONTAINER_HEADER..)?;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let off = vals.get(i * 8..i * 8 + 8)?;
        let off = usize::try_from(u64::from_ne_bytes(off.try_into().unwrap())).ok()?;
        let s = vals.get(off..)?;
        let end = s.iter().position(|&b| b == 0)?;
        out.push(s[..end].to_vec());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unnecessary_cast)] // the request type is u32 on some targets
    fn ino_paths_request_matches_linux_btrfs_h() {
        // _IOWR(BTRFS_IOCTL_MAGIC, 35, struct btrfs_ioctl_ino_path_args), 56 bytes.
        assert_eq!(std::mem::size_of::<InoPathArgs>(), 56);
        assert_eq!(
            nix::request_code_readwrite!(BTRFS_IOCTL_MAGIC, 35, 56) as u64,
            0xC038_9423
        );
        assert_eq!(nix::request_code_read!(b'v', 1, 8) as u64, 0x8008_7601);
    }

    fn container(count: u32, missed: u32, offsets: &[u64], strings: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [0, 0, count, missed] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        for o in offsets {
            b.extend_from_slice(&o.to_ne_bytes());
        }
        b.extend_from_slice(strings);
        b
    }

    #[test]
    fn container_paths_are_offsets_from_val() {
        let b = container(2, 0, &[16, 20], b"a/b\0cd\0");
        assert_eq!(
            parse_container(&b),
            Some(vec![b"a/b".to_vec(), b"cd".to_vec()])
        );
        assert_eq!(parse_container(&container(1, 1, &[8], b"x\0")), None);
        // Out of bounds, unterminated, truncated header: refused, never indexed past the end.
        assert_eq!(parse_container(&container(1, 0, &[999], b"x\0")), None);
        assert_eq!(parse_container(&container(1, 0, &[8], b"xy")), None);
        assert_eq!(parse_container(&container(3, 0, &[24], b"x\0")), None);
        assert_eq!(parse_container(&[0u8; 10]), None);
    }
}
