//! The store's home: checked to be on btrfs or made (a subvolume of its own), locked against a
//! second driver, and its directories opened.

use super::{Dirs, LOCK, METADATA, SUBVOLUMES};
use crate::error::{Code, Context, Error, Result};
use crate::idmap::IdMapping;
use crate::open::{self, open_dir_at, require_btrfs};
use crate::subvolume::create_at;
use nix::errno::Errno;
use nix::fcntl::{openat, Flock, FlockArg, OFlag};
use nix::sys::stat::{fchmod, mkdirat, Mode};
use nix::unistd::{fchown, Gid, Uid};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The host ids container root (0) maps to; EINVAL when the maps leave it out.
pub(super) fn container_root(
    uids: &IdMapping,
    gids: &IdMapping,
    home: &Path,
) -> Result<(u32, u32)> {
    let unmapped = |what: &str| {
        Error::invalid(
            Errno::EINVAL,
            "init",
            home,
            format!("{what} do not map container root (0)"),
        )
    };
    Ok((
        uids.to_host(0).map_err(|_| unmapped("uidMaps"))?,
        gids.to_host(0).map_err(|_| unmapped("gidMaps"))?,
    ))
}

/// Check that `home` is on btrfs, or make it: a fresh store is a subvolume of its own (so
/// snapshots of the enclosing subvolume do not swallow it), mode 0700, owned by container root.
pub(super) fn open_or_make(home: &Path, root_uid: u32, root_gid: u32) -> Result<()> {
    match open::open_dir(home) {
        Ok(fd) => require_btrfs(fd.as_fd(), home).map_err(|e| prerequisites(e, home)),
        Err(e) if e.is(Errno::ENOENT) => {
            let (parent, name) = crate::path::split_parent(home, "init")?;
            let pfd = open::open_dir(parent)?;
            require_btrfs(pfd.as_fd(), parent).map_err(|e| prerequisites(e, parent))?;
            match create_at(pfd.as_fd(), name, home) {
                Err(e) if !e.is(Errno::EEXIST) => return Err(e),
                _ => {}
            }
            let fd = open_dir_at(pfd.as_fd(), name, home)?;
            fchmod(&fd, Mode::from_bits_truncate(0o700)).at("fchmod", home)?;
            fchown(
                &fd,
                Some(Uid::from_raw(root_uid)),
                Some(Gid::from_raw(root_gid)),
            )
            .at("fchown", home)
        }
        Err(e) => Err(e),
    }
}

/// Check that the store at `home` exists and is on btrfs, changing nothing (a reader's init).
pub(super) fn open_existing(home: &Path) -> Result<()> {
    let fd = open::open_dir(home)?;
    require_btrfs(fd.as_fd(), home).map_err(|e| prerequisites(e, home))
}

/// `init`'s error for a home (or its parent) that is not on btrfs.
fn prerequisites(e: Error, path: &Path) -> Error {
    if e.code == Code::NotBtrfs {
        Error {
            code: Code::Prerequisites,
            syscall: "statfs",
            op: "init",
            path: Some(path.to_path_buf()),
            message: "the layer store must be on a btrfs filesystem".into(),
        }
    } else {
        e
    }
}

/// Take the store's exclusive lock and write this process's id into the lock file: EBUSY
/// naming the holder's id while another driver (process) holds it.
pub(super) fn lock(home: &Path) -> Result<Flock<File>> {
    let lock_path = home.join(LOCK);
    let fd = openat(
        nix::fcntl::AT_FDCWD,
        &lock_path,
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o600),
    )
    .at("openat", &lock_path)?;
    let lock =
        Flock::lock(File::from(fd), FlockArg::LockExclusiveNonblock).map_err(|(file, e)| {
            if e == Errno::EWOULDBLOCK {
                let why = match holder(&file) {
                    Some(pid) => {
                        format!("the layer store is in use by another driver: process {pid}")
                    }
                    None => "the layer store is in use by another driver (process)".into(),
                };
                Error::refused(Errno::EBUSY, "flock", &lock_path, why)
            } else {
                Error::sys(e, "flock", &lock_path)
            }
        })?;
    // Who holds the store, for the EBUSY of the next one; the lock is what counts, not this.
    let pid = format!("{}\n", std::process::id());
    let io = |e: std::io::Error, syscall| {
        Error::sys(
            Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            syscall,
            &lock_path,
        )
    };
    lock.set_len(0).map_err(|e| io(e, "ftruncate"))?;
    lock.write_all_at(pid.as_bytes(), 0)
        .map_err(|e| io(e, "pwrite"))?;
    Ok(lock)
}

/// The process id the holder of the lock wrote into `file`, when there is one.
fn holder(file: &File) -> Option<u32> {
    let mut buf = [0u8; 24];
    let n = file.read_at(&mut buf, 0).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

/// Open `subvolumes/` and `metadata/` under home, making them when missing (unless `read_only`).
pub(super) fn open_dirs(home: &Path, read_only: bool) -> Result<Dirs> {
    let home_fd = open::open_dir(home)?;
    let open = |dir: &str| -> Result<OwnedFd> {
        if !read_only {
            match mkdirat(&home_fd, dir, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(Error::sys(e, "mkdirat", &home.join(dir))),
            }
        }
        open_dir_at(home_fd.as_fd(), OsStr::new(dir), &home.join(dir))
    };
    Ok(Dirs {
        subvolumes: open(SUBVOLUMES)?,
        metadata: open(METADATA)?,
    })
}
