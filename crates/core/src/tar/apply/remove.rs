//! Removing what an entry replaces or a whiteout hides: fd-relative, never following a
//! symlink, never descending into another mount.

use crate::control::Control;
use crate::error::{Context, Error, Result};
use crate::open::open_beneath;
use nix::dir::{Dir, OwningIter, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The kind of what sits at `name` in `dir` (not following a symlink), if anything does.
pub(super) fn existing(dir: BorrowedFd<'_>, name: &[u8], shown: &Path) -> Result<Option<SFlag>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(SFlag::from_bits_truncate(
            st.st_mode & SFlag::S_IFMT.bits(),
        ))),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(Error::sys(e, "fstatat", shown)),
    }
}

/// Remove `name` from `dir`, known to be of `kind`: a directory with everything in it.
pub(super) fn remove(
    dir: BorrowedFd<'_>,
    name: &[u8],
    kind: SFlag,
    shown: &Path,
    control: Control<'_>,
) -> Result<()> {
    if kind == SFlag::S_IFDIR {
        remove_tree(dir, OsStr::from_bytes(name), shown, control)
    } else {
        unlink(
            dir,
            OsStr::from_bytes(name),
            UnlinkatFlags::NoRemoveDir,
            shown,
        )
    }
}

/// Remove directory `name` of `parent` and everything below it, depth first with one open
/// directory per level. A mount point inside fails with EXDEV instead of being entered.
fn remove_tree(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    shown: &Path,
    control: Control<'_>,
) -> Result<()> {
    let mut stack: Vec<(OwningIter, OsString)> =
        vec![(open_listing(parent, name, shown)?, name.to_owned())];
    while let Some((listing, _)) = stack.last_mut() {
        control.check("", Path::new(""))?;
        let next = listing.next();
        // SAFETY: the fd belongs to the listing on top of the stack, which outlives this use.
        let dir = unsafe { BorrowedFd::borrow_raw(listing.as_raw_fd()) };
        match next {
            Some(entry) => {
                let entry = entry.at("readdir", shown)?;
                let child = OsStr::from_bytes(entry.file_name().to_bytes());
                if child == "." || child == ".." {
                    continue;
                }
                if is_dir(dir, child, entry.file_type(), shown)? {
                    let listing = open_listing(dir, child, shown)?;
                    stack.push((listing, child.to_owned()));
                } else {
                    unlink(dir, child, UnlinkatFlags::NoRemoveDir, shown)?;
                }
            }
            None => {
                let (listing, done) = stack.pop().expect("stack is not empty");
                drop(listing);
                let up = match stack.last() {
                    // SAFETY: the fd belongs to the listing now on top of the stack.
                    Some((above, _)) => unsafe { BorrowedFd::borrow_raw(above.as_raw_fd()) },
                    None => parent,
                };
                unlink(up, &done, UnlinkatFlags::RemoveDir, shown)?;
            }
        }
    }
    Ok(())
}

/// Open directory `name` of `dir` for listing: no symlink, no mount crossing.
pub(super) fn open_listing(dir: BorrowedFd<'_>, name: &OsStr, shown: &Path) -> Result<OwningIter> {
    let fd = open_beneath(dir, Path::new(name), shown)?;
    listing(fd, shown)
}

/// List the directory `fd` (whose position must be at its start).
pub(super) fn listing(fd: OwnedFd, shown: &Path) -> Result<OwningIter> {
    Ok(Dir::from_fd(fd).at("fdopendir", shown)?.into_iter())
}

/// Whether `name` in `dir` is a directory, from the listing's type when it has one.
pub(super) fn is_dir(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    listed: Option<Type>,
    shown: &Path,
) -> Result<bool> {
    Ok(match listed {
        Some(t) => t == Type::Directory,
        None => existing(dir, name.as_bytes(), shown)? == Some(SFlag::S_IFDIR),
    })
}

/// unlinkat; already gone is fine.
fn unlink(dir: BorrowedFd<'_>, name: &OsStr, flags: UnlinkatFlags, shown: &Path) -> Result<()> {
    match unlinkat(dir, name, flags) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::sys(e, "unlinkat", shown)),
    }
}

/// Reopen directory `dir` for listing from its start.
pub(super) fn reopen_listing(dir: BorrowedFd<'_>, shown: &Path) -> Result<OwningIter> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::openat(dir, ".", flags, Mode::empty()).at("openat", shown)?;
    listing(fd, shown)
}
