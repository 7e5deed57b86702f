//! A layer under construction: a `.tmp-*` subvolume of the store that becomes a layer only
//! at its commit point (`publish`, a RENAME_NOREPLACE, or `replace`, a RENAME_EXCHANGE), and
//! that is deleted, its space given back at once, when dropped before. The one undo of
//! create, applyDiff and remap.

use super::record::{self, Record};
use super::{Dirs, Driver};
use crate::delete::{self, delete_at};
use crate::error::{Error, Result};
use crate::filesystem;
use crate::open::{self, open_dir_at, renameat2, Rename};
use crate::subvolume::{self, create_at, set_read_only_fd, snapshot_at, SubvolumeInfo};
use nix::errno::Errno;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How long a failed call waits for the cleaner to free its temporary's space.
const SPACE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

pub(super) struct Staged<'d> {
    driver: &'d Driver,
    dirs: Arc<Dirs>,
    /// Its name in `subvolumes/`; after `replace`, the name of the tree it replaced.
    name: String,
    path: PathBuf,
    fd: Option<OwnedFd>,
    state: State,
}

#[derive(PartialEq)]
enum State {
    /// Not yet published: dropping it deletes it and gives its space back.
    Building,
    /// Published under the layer's name: nothing left to do.
    Published,
    /// Exchanged with the layer it replaces: dropping it deletes the replaced tree.
    Replaced,
}

impl<'d> Staged<'d> {
    /// A new empty subvolume that is to become layer `id`.
    pub fn empty(driver: &'d Driver, id: &str) -> Result<Staged<'d>> {
        Self::make(driver, id, create_at)
    }

    /// A writable snapshot of the layer root `source` that is to become layer `id`.
    pub fn snapshot(driver: &'d Driver, source: BorrowedFd<'_>, id: &str) -> Result<Staged<'d>> {
        Self::make(driver, id, |sub, name, shown| {
            snapshot_at(source, sub, name, false, shown)
        })
    }

    fn make(
        driver: &'d Driver,
        id: &str,
        make: impl FnOnce(BorrowedFd<'_>, &OsStr, &Path) -> Result<()>,
    ) -> Result<Staged<'d>> {
        let dirs = driver.dirs()?;
        let name = driver.temp_name("tmp", id);
        let path = driver.subvolumes_path().join(&name);
        make(dirs.subvolumes.as_fd(), OsStr::new(&name), &path)?;
        // From here on, the guard owns it: a failed open still deletes it.
        let mut staged = Staged {
            driver,
            dirs,
            name,
            path,
            fd: None,
            state: State::Building,
        };
        staged.fd = Some(open_dir_at(
            staged.dirs.subvolumes.as_fd(),
            OsStr::new(&staged.name),
            &staged.path,
        )?);
        Ok(staged)
    }

    /// Its root directory.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_ref().expect("open until dropped").as_fd()
    }

    /// Where it is, for errors.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn info(&self) -> Result<SubvolumeInfo> {
        subvolume::info_fd(self.fd(), &self.path)
    }

    /// Set the record (and the read-only flag, after it), then rename to `id`: the commit
    /// point of create and remap. EEXIST when `id` appeared meanwhile.
    pub fn publish(mut self, id: &str, rec: &Record, read_only: bool) -> Result<()> {
        self.commit(id, rec, read_only, Rename::NoReplace)?;
        self.state = State::Published;
        Ok(())
    }

    /// Set the record (and the read-only flag), then exchange with layer `id`: the commit point
    /// of applyDiff. The replaced tree is deleted when this is dropped.
    pub fn replace(&mut self, id: &str, rec: &Record, read_only: bool) -> Result<()> {
        self.commit(id, rec, read_only, Rename::Exchange)?;
        self.state = State::Replaced;
        self.fd = None;
        Ok(())
    }

    fn commit(&self, id: &str, rec: &Record, read_only: bool, how: Rename) -> Result<()> {
        record::write(self.fd(), self.driver.record_ns, rec, &self.path)?;
        if read_only {
            set_read_only_fd(self.fd(), true, &self.path)?;
        }
        let sub = self.dirs.subvolumes.as_fd();
        let path = self.driver.layer_path(id);
        renameat2(sub, OsStr::new(&self.name), sub, OsStr::new(id), how).map_err(|e| match e {
            Errno::EEXIST => {
                Error::refused(Errno::EEXIST, "renameat2", &path, "layer already exists")
            }
            e => Error::sys(e, "renameat2", &path),
        })
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if self.state == State::Published {
            return;
        }
        let sub = self.dirs.subvolumes.as_fd();
        let id = match &self.fd {
            Some(fd) => open::subvolume_id(fd.as_fd(), &self.path).ok(),
            None => open_dir_at(sub, OsStr::new(&self.name), &self.path)
                .and_then(|fd| open::subvolume_id(fd.as_fd(), &self.path))
                .ok(),
        };
        self.fd = None;
        if delete_at(sub, OsStr::new(&self.name), true, &self.path).is_err() {
            // Left for `init` to sweep.
            return;
        }
        let Some(id) = id else { return };
        if self.state == State::Building {
            give_space_back(sub, id, &self.path);
        }
        if self.driver.quotas_on() {
            self.driver.release_qgroup_later(id);
        }
    }
}

/// Make the space of deleted subvolume `id` usable now rather than after the next periodic
/// commit: wake the cleaner, wait until it has dropped the tree, and commit, which unpins the
/// extents it freed. Best effort (it needs CAP_SYS_ADMIN): else the space comes back by itself.
fn give_space_back(sub: BorrowedFd<'_>, id: u64, shown: &Path) {
    if matches!(delete::wait_dropped(sub, id, SPACE_WAIT, shown), Ok(true)) {
        let _ = filesystem::commit(sub, shown);
    }
}
