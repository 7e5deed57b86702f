//! The file a layer tar is applied from, given by path: a regular file or a FIFO, checked
//! before anything is changed (a directory, a device or a socket would otherwise fail only
//! mid-apply, after the layer's temporary snapshot was made).

use crate::error::{Context, Error, Result};
use crate::path::check;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, stat, Mode};
use std::fs::File;
use std::path::Path;

/// Open the layer file at `path` for reading (symlinks followed: the path is the caller's).
/// EINVAL for a path with a NUL byte and for anything but a regular file or a FIFO. Its type
/// is looked at before the open, so no device is ever opened, and again after it, on the fd.
/// A FIFO's open waits for its writer, as reading one does.
pub fn open(path: &Path) -> Result<File> {
    check(path, "applyDiff")?;
    require_stream(stat(path).at("stat", path)?.st_mode, "stat", path)?;
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        Mode::empty(),
    )
    .at("open", path)?;
    require_stream(fstat(&fd).at("fstat", path)?.st_mode, "fstat", path)?;
    Ok(File::from(fd))
}

fn require_stream(mode: u32, syscall: &'static str, path: &Path) -> Result<()> {
    match mode & libc::S_IFMT {
        libc::S_IFREG | libc::S_IFIFO => Ok(()),
        kind => Err(Error::refused(
            Errno::EINVAL,
            syscall,
            path,
            format!(
                "a layer file must be a regular file or a FIFO, not {}",
                type_name(kind)
            ),
        )),
    }
}

fn type_name(kind: u32) -> &'static str {
    match kind {
        libc::S_IFDIR => "a directory",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFSOCK => "a socket",
        libc::S_IFLNK => "a symlink",
        _ => "this file type",
    }
}
