//! Making each kind of entry at its name in an already resolved parent directory. Whatever
//! sits at the name is replaced (a directory merged with a directory), never followed.

use crate::error::{Context, Error, Result};
use crate::filesystem::start_writeback;
use crate::open::open_beneath;
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{mkdirat, mknodat, Mode, SFlag};
use nix::unistd::{linkat, symlinkat};
use std::ffi::CStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};

use super::attrs::Meta;
use super::name::{shown, split};
use super::remove::{existing, remove};
use super::writers::{Job, MAX_BODY};
use super::{bad_layer, body, Applier};

/// Mode of new inodes until their own mode is set (after chown).
const PRIVATE: u32 = 0o600;
const PRIVATE_DIR: u32 = 0o700;

impl Applier<'_, '_> {
    /// A regular file with its body; returns the body's size. A small one is created here
    /// and finished (body, owner, mode, times) by the writers; a large or sparse one here.
    pub(super) fn make_file<R: Read>(
        &mut self,
        dir: BorrowedFd<'_>,
        path: &[u8],
        entry: &mut ::tar::Entry<'_, R>,
        sparse: bool,
        meta: Meta,
    ) -> Result<u64> {
        let (shown, name) = (shown(path), split(path).1);
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let create = || openat(dir, name, flags, Mode::from_bits_truncate(PRIVATE));
        let mut file = File::from(self.replacing(dir, path, "openat", create)?);
        if !sparse && entry.size() <= MAX_BODY {
            let body = body::read_body(entry, self.meter, shown)?;
            let size = body.len() as u64;
            let shown = shown.to_path_buf();
            self.writers.send(Job {
                file,
                body,
                meta,
                shown,
            })?;
            return Ok(size);
        }
        let size = body::write_body(entry, &mut file, sparse, self.meter, &mut self.buf, shown)?;
        if size > 0 {
            // The write-back runs while later entries apply: the syncfs before the layer's
            // publish then waits for little.
            start_writeback(file.as_fd(), shown)?;
        }
        meta.apply_to_fd(file.as_fd(), shown)?;
        meta.times.set_on_fd(file.as_fd(), shown)?;
        Ok(size)
    }

    /// A directory, merged into one already there; its times wait for the end.
    pub(super) fn make_dir(&mut self, dir: BorrowedFd<'_>, path: &[u8], meta: &Meta) -> Result<()> {
        let (shown, name) = (shown(path), split(path).1);
        let create = || mkdirat(dir, name, Mode::from_bits_truncate(PRIVATE_DIR));
        match create() {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                let merged = self.make_room(dir, path, true)?;
                if !merged {
                    create().at("mkdirat", shown)?;
                }
            }
            Err(e) => return Err(Error::sys(e, "mkdirat", shown)),
        }
        // No symlink, no mount crossing: a mount point at the name is EXDEV, not entered.
        let fd = open_beneath(dir, super::name::shown(name), shown)?;
        meta.apply_to_fd(fd.as_fd(), shown)?;
        self.dir_times.record(path, meta.times);
        Ok(())
    }

    pub(super) fn make_symlink(
        &mut self,
        dir: BorrowedFd<'_>,
        path: &[u8],
        target: &CStr,
        meta: &Meta,
    ) -> Result<()> {
        let (shown, name) = (shown(path), split(path).1);
        self.replacing(dir, path, "symlinkat", || symlinkat(target, dir, name))?;
        meta.apply_to_node(dir, name, true, shown)?;
        meta.times.set_on_node(dir, name, shown)
    }

    /// A character or block device, or a fifo.
    pub(super) fn make_node(
        &mut self,
        dir: BorrowedFd<'_>,
        path: &[u8],
        kind: SFlag,
        dev: libc::dev_t,
        meta: &Meta,
    ) -> Result<()> {
        let (shown, name) = (shown(path), split(path).1);
        let create = || mknodat(dir, name, kind, Mode::from_bits_truncate(PRIVATE), dev);
        self.replacing(dir, path, "mknodat", create)?;
        meta.apply_to_node(dir, name, false, shown)?;
        meta.times.set_on_node(dir, name, shown)
    }

    /// A hardlink to the layer entry `target`, resolved inside the layer like any path. A
    /// link to a symlink links the symlink itself; a link to a directory is ERR_BAD_LAYER.
    /// The inode's metadata is its own entry's: the link's header adds nothing.
    pub(super) fn make_hardlink(&mut self, path: &[u8], target: &[u8]) -> Result<()> {
        let shown = shown(path);
        if target == path {
            return Ok(());
        }
        let (target_dir, target_name) = split(target);
        let missing = || {
            bad_layer(
                shown,
                format!(
                    "hardlink target {} does not exist",
                    super::name::shown(target).display()
                ),
            )
        };
        let from = match self.parents.open(target_dir, false) {
            Err(e) if e.is(Errno::ENOENT) || e.is(Errno::ENOTDIR) => return Err(missing()),
            r => r?,
        };
        match existing(from.fd.as_fd(), target_name, shown)? {
            None => return Err(missing()),
            Some(SFlag::S_IFDIR) => return Err(bad_layer(shown, "hardlink to a directory")),
            Some(_) => {}
        }
        let (dir_path, name) = split(path);
        let dir = self.parents.open(dir_path, true)?;
        self.dir_times.touch(dir_path, &dir)?;
        let create = || {
            linkat(
                from.fd.as_fd(),
                target_name,
                dir.fd.as_fd(),
                name,
                AtFlags::empty(),
            )
        };
        self.replacing(dir.fd.as_fd(), path, "linkat", create)?;
        self.made.record(&dir, name, shown)
    }

    /// Run `create`; when something is in the way (EEXIST), clear the name and run it once
    /// more. Trying first saves a stat per entry in the common case of a free name.
    fn replacing<T>(
        &mut self,
        dir: BorrowedFd<'_>,
        path: &[u8],
        syscall: &'static str,
        create: impl Fn() -> nix::Result<T>,
    ) -> Result<T> {
        match create() {
            Err(Errno::EEXIST) => {
                self.make_room(dir, path, false)?;
                create().at(syscall, shown(path))
            }
            r => r.at(syscall, shown(path)),
        }
    }

    /// Clear the name of `path` in `dir` for a new entry: an existing directory stays when
    /// `keep_dir` (returns true), anything else is removed. Removing a directory or a symlink
    /// drops the cached parent resolutions, which may have gone through it.
    fn make_room(&mut self, dir: BorrowedFd<'_>, path: &[u8], keep_dir: bool) -> Result<bool> {
        let (shown, name) = (shown(path), split(path).1);
        let Some(kind) = existing(dir, name, shown)? else {
            return Ok(false);
        };
        if kind == SFlag::S_IFDIR && keep_dir {
            return Ok(true);
        }
        remove(dir, name, kind, shown, self.opts.control)?;
        if kind == SFlag::S_IFDIR || kind == SFlag::S_IFLNK {
            self.parents.forget();
        }
        Ok(false)
    }
}
