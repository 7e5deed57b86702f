//! Extended attributes, reached without ever following a name to somewhere else: either an
//! entry through its directory fd (`/proc/self/fd/<dir>/<name>` with the l*xattr calls, which
//! do not follow a final symlink), or an inode pinned by an fd (`/proc/self/fd/<fd>` with the
//! following calls, which resolve the magic link to exactly that inode).

use crate::error::{Error, Result};
use nix::errno::Errno;
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

/// Where the xattrs are.
#[derive(Clone, Copy)]
pub enum At<'a> {
    /// `/proc/self/fd/<dir>/<name>`: the entry itself, a symlink included.
    Entry(&'a CStr),
    /// `/proc/self/fd/<fd>`: the inode the fd holds (an O_PATH fd works).
    Inode(&'a CStr),
}

/// `/proc/self/fd/<dir>/<name>` (for [`At::Entry`]), or `/proc/self/fd/<dir>` without a name
/// (for [`At::Inode`]).
pub fn proc_path(dir: BorrowedFd<'_>, name: Option<&CStr>) -> CString {
    let mut p = format!("/proc/self/fd/{}", dir.as_raw_fd()).into_bytes();
    if let Some(n) = name {
        p.push(b'/');
        p.extend_from_slice(n.to_bytes());
    }
    CString::new(p).expect("no NUL in a directory entry name")
}

/// The xattr names at `at`; none where the filesystem has no xattrs.
pub fn list(at: At<'_>, path: &Path) -> Result<Vec<Vec<u8>>> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: the path is NUL-terminated; buf is writable for buf.len() bytes.
        let r = unsafe {
            let out = buf.as_mut_ptr() as *mut libc::c_char;
            match at {
                At::Entry(p) => libc::llistxattr(p.as_ptr(), out, buf.len()),
                At::Inode(p) => libc::listxattr(p.as_ptr(), out, buf.len()),
            }
        };
        match Errno::result(r) {
            Ok(n) => {
                return Ok(buf[..n as usize]
                    .split(|&c| c == 0)
                    .filter(|k| !k.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect())
            }
            Err(Errno::ERANGE) => buf.resize(buf.len() * 4, 0),
            Err(Errno::ENOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(Error::sys(e, "listxattr", path)),
        }
    }
}

/// The value of xattr `key` at `at`; None when it is not set.
pub fn get(at: At<'_>, key: &CStr, path: &Path) -> Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: the path and key are NUL-terminated; buf is writable for buf.len() bytes.
        let r = unsafe {
            let out = buf.as_mut_ptr() as *mut libc::c_void;
            match at {
                At::Entry(p) => libc::lgetxattr(p.as_ptr(), key.as_ptr(), out, buf.len()),
                At::Inode(p) => libc::getxattr(p.as_ptr(), key.as_ptr(), out, buf.len()),
            }
        };
        match Errno::result(r) {
            Ok(n) => {
                buf.truncate(n as usize);
                return Ok(Some(buf));
            }
            Err(Errno::ERANGE) => buf.resize(buf.len() * 4, 0),
            Err(Errno::ENODATA) => return Ok(None),
            Err(e) => return Err(Error::sys(e, "getxattr", path)),
        }
    }
}

/// Set xattr `key` at `at` to `value`.
pub fn set(at: At<'_>, key: &CStr, value: &[u8], path: &Path) -> Result<()> {
    // SAFETY: the path and key are NUL-terminated; value is readable for value.len() bytes.
    let r = unsafe {
        let v = value.as_ptr() as *const libc::c_void;
        match at {
            At::Entry(p) => libc::lsetxattr(p.as_ptr(), key.as_ptr(), v, value.len(), 0),
            At::Inode(p) => libc::setxattr(p.as_ptr(), key.as_ptr(), v, value.len(), 0),
        }
    };
    Errno::result(r)
        .map(drop)
        .map_err(|e| Error::sys(e, "setxattr", path))
}

/// Remove xattr `key` at `at`.
pub fn remove(at: At<'_>, key: &CStr, path: &Path) -> Result<()> {
    // SAFETY: the path and key are NUL-terminated.
    let r = unsafe {
        match at {
            At::Entry(p) => libc::lremovexattr(p.as_ptr(), key.as_ptr()),
            At::Inode(p) => libc::removexattr(p.as_ptr(), key.as_ptr()),
        }
    };
    Errno::result(r)
        .map(drop)
        .map_err(|e| Error::sys(e, "removexattr", path))
}

const VFS_CAP_REVISION_3: u32 = 0x0300_0000;
const VFS_CAP_REVISION_MASK: u32 = 0xFF00_0000;
const ACL_USER: u16 = 0x02;
const ACL_GROUP: u16 = 0x08;

/// Shift the root id of a v3 file capability (`vfs_ns_cap_data`) with `map`; other revisions
/// carry no id and stay as they are.
pub fn shift_capability_rootid(v: &mut [u8], map: impl Fn(u32) -> Result<u32>) -> Result<()> {
    if v.len() >= 24
        && u32::from_le_bytes(v[0..4].try_into().expect("4 bytes")) & VFS_CAP_REVISION_MASK
            == VFS_CAP_REVISION_3
    {
        let rootid = u32::from_le_bytes(v[20..24].try_into().expect("4 bytes"));
        v[20..24].copy_from_slice(&map(rootid)?.to_le_bytes());
    }
    Ok(())
}

/// Shift the ids of the named-user and named-group entries of a POSIX ACL xattr value
/// (a 4-byte version header, then 8-byte entries: tag, perm, id).
pub fn shift_acl_ids(
    v: &mut [u8],
    uid: impl Fn(u32) -> Result<u32>,
    gid: impl Fn(u32) -> Result<u32>,
) -> Result<()> {
    for e in v.get_mut(4..).unwrap_or_default().chunks_exact_mut(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let id = u32::from_le_bytes(e[4..8].try_into().expect("4 bytes"));
        let new = match tag {
            ACL_USER => uid(id)?,
            ACL_GROUP => gid(id)?,
            _ => continue,
        };
        e[4..8].copy_from_slice(&new.to_le_bytes());
    }
    Ok(())
}

/// Whether an xattr name is a POSIX ACL, whose value holds uids and gids.
pub fn is_acl(name: &[u8]) -> bool {
    name == b"system.posix_acl_access" || name == b"system.posix_acl_default"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_and_capability_ids_shift() {
        // version 2; USER_OBJ; USER 1000; GROUP 1000; OTHER
        let mut acl = vec![2, 0, 0, 0];
        for (tag, id) in [(1u16, u32::MAX), (2, 1000), (8, 1000), (0x20, u32::MAX)] {
            acl.extend_from_slice(&tag.to_le_bytes());
            acl.extend_from_slice(&7u16.to_le_bytes());
            acl.extend_from_slice(&id.to_le_bytes());
        }
        shift_acl_ids(&mut acl, |i| Ok(i + 100000), |i| Ok(i + 200000)).unwrap();
        let ids: Vec<u32> = acl[4..]
            .chunks(8)
            .map(|e| u32::from_le_bytes(e[4..8].try_into().unwrap()))
            .collect();
        assert_eq!(ids, vec![u32::MAX, 101000, 201000, u32::MAX]);
        let mut cap = vec![0u8; 24];
        cap[0..4].copy_from_slice(&0x0300_0000u32.to_le_bytes());
        shift_capability_rootid(&mut cap, |i| Ok(i + 5)).unwrap();
        assert_eq!(u32::from_le_bytes(cap[20..24].try_into().unwrap()), 5);
        let mut v2 = vec![0u8; 20];
        v2[0..4].copy_from_slice(&0x0200_0000u32.to_le_bytes());
        shift_capability_rootid(&mut v2, |_| panic!("v2 has no root id")).unwrap();
    }
}
