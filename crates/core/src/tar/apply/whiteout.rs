//! Whiteouts. `.wh.<name>` hides the lower entry `name`; `.wh..wh..opq` hides every lower
//! entry of its directory. Whiteouts apply to lower layers only (OCI image-spec layer.md), and
//! entries of one layer come in any order, so neither ever hides what this stream made: its
//! entries are kept, and so is every directory holding one, minus what lower layers put there.
//!
//! Entries are known by their directory's inode and their name, not by their tar path, so a
//! symlinked parent (two paths, one directory) cannot make an entry look foreign.

use crate::control::Control;
use crate::error::{Context, Result};
use nix::dir::OwningIter;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{Mode, SFlag};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::name::{join, shown};
use super::parents::{inode_id, InodeId, LayerDir};
use super::remove::{existing, listing, remove};
use crate::open::open_beneath;

/// Deeper than any path the kernel resolves: a bound on walking up through `..`.
const MAX_DEPTH: usize = 4096;

/// What this stream has made so far.
pub(super) struct Made {
    /// (directory, name) of every entry made.
    entries: HashSet<(InodeId, Box<[u8]>)>,
    /// Directories holding something made, and every directory above them.
    kept: HashSet<InodeId>,
    root: InodeId,
}

impl Made {
    pub fn new(root: InodeId) -> Self {
        Made {
            entries: HashSet::new(),
            kept: HashSet::from([root]),
            root,
        }
    }

    /// Record the entry `name` just made in `dir`.
    pub fn record(&mut self, dir: &LayerDir, name: &[u8], shown: &Path) -> Result<()> {
        self.entries.insert((dir.id, name.into()));
        self.keep(dir, shown)
    }

    /// Keep `dir` and the directories above it, up to the layer root.
    pub fn keep(&mut self, dir: &LayerDir, shown: &Path) -> Result<()> {
        if !self.kept.insert(dir.id) {
            return Ok(());
        }
        let mut fd: Option<OwnedFd> = None;
        for _ in 0..MAX_DEPTH {
            let here = fd.as_ref().map_or(dir.fd.as_fd(), |fd| fd.as_fd());
            let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
            let up = openat(here, "..", flags, Mode::empty()).at("openat", shown)?;
            let id = inode_id(up.as_fd()).at("fstat", shown)?;
            if id == self.root || !self.kept.insert(id) {
                return Ok(());
            }
            fd = Some(up);
        }
        Ok(())
    }

    fn holds(&self, dir: InodeId, name: &[u8]) -> bool {
        self.entries.contains(&(dir, name.into()))
    }
}

/// What a whiteout pass needs besides the directory it works on.
pub(super) struct Hider<'a> {
    pub made: &'a Made,
    pub control: Control<'a>,
}

impl Hider<'_> {
    /// Hide the lower entry `name` of `dir` (at layer path `dir_path`, for errors): remove
    /// it, unless this stream made it or made something below it; a directory kept that way
    /// loses what lower layers put in it.
    pub fn hide(
        &self,
        dir: BorrowedFd<'_>,
        dir_id: InodeId,
        dir_path: &[u8],
        name: &[u8],
    ) -> Result<()> {
        self.control.check("", Path::new(""))?;
        let path = join(dir_path, name);
        let Some(kind) = existing(dir, name, shown(&path))? else {
            return Ok(());
        };
        let made = self.made.holds(dir_id, name);
        if kind != SFlag::S_IFDIR {
            return if made {
                Ok(())
            } else {
                remove(dir, name, kind, shown(&path), self.control)
            };
        }
        let child = open_beneath(dir, Path::new(OsStr::from_bytes(name)), shown(&path))?;
        let child_id = inode_id(child.as_fd()).at("fstat", shown(&path))?;
        if made || self.made.kept.contains(&child_id) {
            let child_listing = listing(child, shown(&path))?;
            return self.hide_children(child_listing, child_id, &path);
        }
        drop(child);
        remove(dir, name, kind, shown(&path), self.control)
    }

    /// Hide every lower entry of the directory listed by `listing`.
    pub fn hide_children(
        &self,
        mut listing: OwningIter,
        dir_id: InodeId,
        dir_path: &[u8],
    ) -> Result<()> {
        // SAFETY: the fd belongs to `listing`, which lives until the end of this function.
        let dir = unsafe { BorrowedFd::borrow_raw(listing.as_raw_fd()) };
        for entry in listing.by_ref() {
            let entry = entry.at("readdir", shown(dir_path))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                self.hide(dir, dir_id, dir_path, name)?;
            }
        }
        Ok(())
    }
}
