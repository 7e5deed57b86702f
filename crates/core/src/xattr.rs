//! Extended attributes of an entry reached through its directory fd, never following a final
//! symlink: l*xattr calls on `/proc/self/fd/<dir>/<name>`.

use crate::error::{Error, Result};
use nix::errno::Errno;
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

/// `/proc/self/fd/<dir>/<name>`: reaches the entry through the directory fd; l*xattr calls on it
/// do not follow a final symlink. Without a name, the directory itself.
pub fn proc_path(dir: BorrowedFd<'_>, name: Option<&CStr>) -> CString {
    let mut p = format!("/proc/self/fd/{}", dir.as_raw_fd()).into_bytes();
    if let Some(n) = name {
        p.push(b'/');
        p.extend_from_slice(n.to_bytes());
    }
    CString::new(p).expect("no NUL in a directory entry name")
}

pub fn list(proc: &CStr, path: &Path) -> Result<Vec<Vec<u8>>> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: proc is NUL-terminated; buf is writable for buf.len() bytes.
        let r = unsafe {
            libc::llistxattr(
                proc.as_ptr(),
                buf.as_mut_ptr() as *mut libc::c_char,
                buf.len(),
            )
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
            Err(e) => return Err(Error::sys(e, "llistxattr", path)),
        }
    }
}

pub fn get(proc: &CStr, key: &CStr, path: &Path) -> Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: proc and key are NUL-terminated; buf is writable for buf.len() bytes.
        let r = unsafe {
            libc::lgetxattr(
                proc.as_ptr(),
                key.as_ptr(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
            )
        };
        match Errno::result(r) {
            Ok(n) => {
                buf.truncate(n as usize);
                return Ok(Some(buf));
            }
            Err(Errno::ERANGE) => buf.resize(buf.len() * 4, 0),
            Err(Errno::ENODATA) => return Ok(None),
            Err(e) => return Err(Error::sys(e, "lgetxattr", path)),
        }
    }
}
