//! Subvolume deletion, recursive through the subvolume tree.
//!
//! Nested subvolumes come from root refs (cost follows their number, not the number of
//! files), children go first, read-only flags are cleared where they would block, and every
//! nested subvolume is reached from its parent's fd with openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV) and re-checked (fsid, subvolume id) before use, so a
//! symlink, a bind mount or another filesystem planted inside never redirects the deletion.
//! Nested subvolumes are destroyed by id, so a name swapped after the check cannot redirect it.

use crate::error::{Context, Error, Result};
use crate::ioctl::{self, put_name};
use crate::nested::{self, Child, Method};
use crate::open::{self, open_dir, open_dir_at, require_btrfs, require_subvolume};
use crate::path::split_parent;
use crate::subvolume::{is_read_only_fd, open_child, set_read_only_fd};
use nix::errno::Errno;
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Delete the subvolume at `path`. With nested subvolumes inside, ENOTEMPTY unless `recursive`.
pub fn delete(path: &Path, recursive: bool) -> Result<()> {
    let (parent, name) = split_parent(path, "deleteSubvolume")?;
    let dir = open_dir(parent)?;
    // The mount check in delete_at comes before the parent's filesystem matters: deleting a
    // mount point is EBUSY whatever the parent is on.
    delete_at(dir.as_fd(), name, recursive, path)
}

/// Delete subvolume `name` of directory `dir` (fd form of [`delete`]).
pub fn delete_at(dir: BorrowedFd<'_>, name: &OsStr, recursive: bool, shown: &Path) -> Result<()> {
    let fd = match open_dir_at(dir, name, shown) {
        Ok(fd) => fd,
        // A symlink or a file: not a subvolume, if this is btrfs at all.
        Err(e) if e.is(Errno::ELOOP) || e.is(Errno::ENOTDIR) => {
            require_btrfs(dir, shown)?;
            return Err(Error::refused(
                Errno::EINVAL,
                "openat",
                shown,
                "not a btrfs subvolume",
            ));
        }
        Err(e) => return Err(e),
    };
    // A filesystem or bind mount sitting on the name is not the entry the caller named.
    let (mount, dir_mount) = (
        open::mount_id(fd.as_fd(), shown)?,
        open::mount_id(dir, shown)?,
    );
    if mount != dir_mount {
        return Err(Error::refused(
            Errno::EBUSY,
            "BTRFS_IOC_SNAP_DESTROY",
            shown,
            "a filesystem is mounted here",
        ));
    }
    require_btrfs(fd.as_fd(), shown)?;
    require_subvolume(fd.as_fd(), shown)?;
    // Same mount means same filesystem; without mount ids (before Linux 5.8) compare fsids.
    if mount == 0 {
        require_btrfs(dir, shown)?;
        if open::fsid(fd.as_fd(), shown)? != open::fsid(dir, shown)? {
            return Err(Error::refused(
                Errno::EBUSY,
                "BTRFS_IOC_SNAP_DESTROY",
                shown,
                "a filesystem is mounted here",
            ));
        }
    }
    if recursive {
        let id = open::subvolume_id(fd.as_fd(), shown)?;
        if id == ioctl::FS_TREE_OBJECTID {
            return Err(Error::refused(
                Errno::EINVAL,
                "BTRFS_IOC_SNAP_DESTROY",
                shown,
                "the top-level subvolume cannot be deleted",
            ));
        }
        let kids = nested::children(fd.as_fd(), id, shown, Method::Auto)?;
        if !kids.is_empty() {
            let fsid = open::fsid(fd.as_fd(), shown)?;
            delete_children(fd.as_fd(), kids, fsid, shown)?;
        }
    }
    drop(fd);
    // Without `recursive`, nested subvolumes make the kernel refuse with ENOTEMPTY before it
    // changes anything.
    destroy_by_name(dir, name, shown).map_err(|e| {
        if e.is(Errno::ENOTEMPTY) {
            Error::refused(
                Errno::ENOTEMPTY,
                "BTRFS_IOC_SNAP_DESTROY",
                shown,
                "subvolume holds nested subvolumes; pass recursive",
            )
        } else {
            e
        }
    })
}

/// Delete every subvolume nested in the one whose root is `fd`, deepest first.
fn delete_children(
    fd: BorrowedFd<'_>,
    kids: Vec<Child>,
    fsid: [u8; 16],
    shown: &Path,
) -> Result<()> {
    // Entries of a read-only subvolume cannot be unlinked, so its children could not go.
    set_read_only_fd(fd, false, shown)?;
    for kid in kids {
        let kid_shown = shown.join(kid.rel_path());
        match open_child(fd, &kid, fsid, &kid_shown) {
            Ok(child) => {
                let grandkids = nested::children(child.as_fd(), kid.id, &kid_shown, Method::Auto)?;
                if !grandkids.is_empty() {
                    delete_children(child.as_fd(), grandkids, fsid, &kid_shown)?;
                }
                destroy_read_only_too(fd, &kid, child.as_fd(), &kid_shown)?;
                continue;
            }
            // Covered by a mount or swapped: we cannot reach it by path, but a leaf can still
            // be destroyed by id, which needs no path; anything else is reported.
            Err(e) if e.is(Errno::EXDEV) => {
                let leaf = nested::children_by_search(fd, kid.id, &kid_shown).map(|g| g.is_empty());
                if !matches!(leaf, Ok(true)) {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
        destroy_by_id(fd, &kid, &kid_shown)?;
    }
    Ok(())
}

/// Destroy `kid`; when its read-only flag is what refuses it, clear the flag and retry.
fn destroy_read_only_too(
    parent: BorrowedFd<'_>,
    kid: &Child,
    child: BorrowedFd<'_>,
    shown: &Path,
) -> Result<()> {
    match destroy_by_id(parent, kid, shown) {
        Err(e) if (e.is(Errno::EPERM) || e.is(Errno::EROFS)) && is_read_only_fd(child, shown)? => {
            set_read_only_fd(child, false, shown)?;
            destroy_by_id(parent, kid, shown)
        }
        r => r,
    }
}

/// SNAP_DESTROY_V2 with SUBVOL_SPEC_BY_ID; on kernels before 5.7, SNAP_DESTROY by name.
fn destroy_by_id(parent: BorrowedFd<'_>, kid: &Child, shown: &Path) -> Result<()> {
    let mut args = ioctl::VolArgsV2 {
        flags: ioctl::SUBVOL_SPEC_BY_ID,
        ..Default::default()
    };
    args.name[..8].copy_from_slice(&kid.id.to_ne_bytes());
    // SAFETY: args is a zeroed btrfs_ioctl_vol_args_v2 whose name union holds the subvolid.
    match unsafe { ioctl::snap_destroy_v2(parent.as_raw_fd(), &args) } {
        Ok(_) => Ok(()),
        Err(Errno::ENOTTY) | Err(Errno::EOPNOTSUPP) => {
            let dir = open::open_beneath(parent, &kid.dir, shown)?;
            destroy_by_name(dir.as_fd(), &kid.name, shown)
        }
        Err(e) => Err(Error::sys(e, "BTRFS_IOC_SNAP_DESTROY_V2", shown)),
    }
}

/// SNAP_DESTROY of entry `name` in directory `dir`.
pub fn destroy_by_name(dir: BorrowedFd<'_>, name: &OsStr, shown: &Path) -> Result<()> {
    let mut args = ioctl::VolArgs::default();
    put_name(&mut args.name, name.as_bytes());
    // SAFETY: args is a zeroed btrfs_ioctl_vol_args with a NUL-terminated name.
    unsafe { ioctl::snap_destroy(dir.as_raw_fd(), &args) }.at("BTRFS_IOC_SNAP_DESTROY", shown)?;
    Ok(())
}

/// Whether the kernel's cleaner has dropped deleted subvolume `subvol_id`: its root item is
/// gone from the root tree (what `btrfs subvolume sync` looks for). Needs CAP_SYS_ADMIN.
pub fn is_dropped(fd: BorrowedFd<'_>, subvol_id: u64, shown: &Path) -> Result<bool> {
    let key = ioctl::SearchKey {
        tree_id: ioctl::ROOT_TREE_OBJECTID,
        min_objectid: subvol_id,
        max_objectid: subvol_id,
        min_type: ioctl::ROOT_ITEM_KEY,
        max_type: ioctl::ROOT_ITEM_KEY,
        max_offset: u64::MAX,
        max_transid: u64::MAX,
        ..Default::default()
    };
    let mut found = false;
    crate::search::search(fd, key, 1, shown, |_, _| found = true)?;
    Ok(!found)
}

/// Wake the cleaner and wait until it has dropped deleted subvolume `subvol_id`, at most
/// `limit`. Ok(false) when it has not by then. (SUBVOL_SYNC_WAIT of Linux 6.13 is no help:
/// it returns only after the next periodic commit, ~30 s, even when the tree went at once.)
pub fn wait_dropped(
    fd: BorrowedFd<'_>,
    subvol_id: u64,
    limit: std::time::Duration,
    shown: &Path,
) -> Result<bool> {
    let start = std::time::Instant::now();
    let mut pause = std::time::Duration::from_micros(200);
    loop {
        // BTRFS_IOC_SYNC commits and wakes the cleaner, which otherwise waits for the next
        // periodic commit.
        // SAFETY: BTRFS_IOC_SYNC takes no argument.
        unsafe { ioctl::sync_fs(fd.as_raw_fd()) }.at("BTRFS_IOC_SYNC", shown)?;
        if is_dropped(fd, subvol_id, shown)? {
            return Ok(true);
        }
        if start.elapsed() >= limit {
            return Ok(false);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(50));
    }
}
