//! What `init` mends: temporaries a crash left behind (`.tmp-*` under construction, `.del-*`
//! half removed), records of earlier versions (JSON files in `metadata/`) moved onto their
//! layers, and size limits the kernel no longer holds.

use super::covered::LayerEntry;
use super::record::{self, Record};
use super::{dir_names, Driver};
use crate::delete::delete_at;
use crate::error::{Context, Error, Result};
use crate::layer::{check_id, LayerMeta};
use crate::open::{self, open_dir_at};
use crate::quota;
use crate::subvolume::{is_read_only_fd, set_read_only_fd};
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

impl Driver {
    pub(super) fn recover(&self) -> Result<()> {
        self.sweep_temporaries()?;
        self.migrate_records()?;
        self.reapply_limits()?;
        self.retry_pending_qgroups();
        Ok(())
    }

    /// Delete what a crash left under construction or half removed.
    fn sweep_temporaries(&self) -> Result<()> {
        let dirs = self.dirs()?;
        let sub = dirs.subvolumes.as_fd();
        for name in dir_names(sub, &self.subvolumes_path())? {
            if name.starts_with(".tmp-") || name.starts_with(".del-") {
                let shown = self.subvolumes_path().join(&name);
                match delete_at(sub, OsStr::new(&name), true, &shown) {
                    Ok(()) => {}
                    // Not a subvolume: nothing of ours is inside.
                    Err(e) if e.is(Errno::EINVAL) => remove_plain(sub, &name, &shown)?,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Move each record an earlier version kept in `metadata/<id>.json` onto its layer, unless
    /// the layer has one already (then the file is a stale copy), and remove the file. A
    /// crash in between leaves the file, and the next init does it again.
    fn migrate_records(&self) -> Result<()> {
        let dirs = self.dirs()?;
        let md = dirs.metadata.as_fd();
        let md_path = self.home.join(super::METADATA);
        for name in dir_names(md, &md_path)? {
            let shown = md_path.join(&name);
            if name.starts_with(".tmp-") && name != ".tmp-pending-qgroups" {
                unlink(md, &name, &shown)?;
                continue;
            }
            let Some(id) = name
                .strip_suffix(".json")
                .filter(|id| check_id(id, "").is_ok())
            else {
                continue;
            };
            match self.layer_entry(id)? {
                // A mount hides the layer: its file waits for a later init.
                LayerEntry::Covered => continue,
                LayerEntry::Absent => {}
                LayerEntry::Layer => {
                    let path = self.layer_path(id);
                    let layer = open_dir_at(dirs.subvolumes.as_fd(), OsStr::new(id), &path)?;
                    // An unreadable file (empty, truncated) leaves what the kernel knows.
                    if record::read(layer.as_fd(), self.record_ns, &path)?.is_none() {
                        if let Some((rec, read_only)) = read_legacy(md, &name, &shown)? {
                            self.adopt(layer.as_fd(), &rec, read_only, &path)?;
                        }
                    }
                }
            }
            unlink(md, &name, &shown)?;
        }
        Ok(())
    }

    /// Set `rec` on the layer root `fd`, lifting the read-only flag for the time it takes.
    fn adopt(&self, fd: BorrowedFd<'_>, rec: &Record, read_only: bool, shown: &Path) -> Result<()> {
        let was_read_only = is_read_only_fd(fd, shown)?;
        if was_read_only {
            set_read_only_fd(fd, false, shown)?;
        }
        record::write(fd, self.record_ns, rec, shown)?;
        if was_read_only || read_only {
            set_read_only_fd(fd, true, shown)?;
        }
        Ok(())
    }

    /// Give each layer the size limit its record asks for, where quotas lost it.
    fn reapply_limits(&self) -> Result<()> {
        let dirs = self.dirs()?;
        let sub = dirs.subvolumes.as_fd();
        let mut limits = Vec::new();
        for id in self.layers()? {
            // A mount hides the layer; the kernel keeps its limit meanwhile.
            if self.layer_entry(&id)? != LayerEntry::Layer {
                continue;
            }
            let path = self.layer_path(&id);
            let fd = open_dir_at(sub, OsStr::new(&id), &path)?;
            if let Some(size) =
                record::read(fd.as_fd(), self.record_ns, &path)?.and_then(|r| r.size)
            {
                limits.push((fd, size, path));
            }
        }
        if limits.is_empty() {
            return Ok(());
        }
        self.enable_quotas(sub)?;
        for (fd, size, path) in limits {
            let id = open::subvolume_id(fd.as_fd(), &path)?;
            if quota::limit_of(sub, id, &path)? != Some(size) {
                quota::limit(fd.as_fd(), size, &path)?;
            }
        }
        Ok(())
    }
}

/// An earlier version's record file, with the read-only flag it recorded; None when it cannot
/// be read as one.
fn read_legacy(md: BorrowedFd<'_>, name: &str, shown: &Path) -> Result<Option<(Record, bool)>> {
    let fd = openat(
        md,
        name,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .at("openat", shown)?;
    let mut body = Vec::new();
    if std::fs::File::from(fd).read_to_end(&mut body).is_err() {
        return Ok(None);
    }
    let Ok(rec) = Record::parse(&body, shown) else {
        return Ok(None);
    };
    let read_only = serde_json::from_slice::<LayerMeta>(&body).is_ok_and(|m| m.read_only);
    Ok(Some((rec, read_only)))
}

fn unlink(dir: BorrowedFd<'_>, name: &str, shown: &Path) -> Result<()> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::sys(e, "unlinkat", shown)),
    }
}

/// Remove a plain (non-subvolume) temporary directory left by a crash.
fn remove_plain(dir: BorrowedFd<'_>, name: &str, shown: &Path) -> Result<()> {
    let fd = open_dir_at(dir, OsStr::new(name), shown)?;
    let st = fstat(&fd).at("fstat", shown)?;
    if st.st_nlink <= 2 {
        return unlinkat(dir, name, UnlinkatFlags::RemoveDir).at("unlinkat", shown);
    }
    Err(Error::refused(
        Errno::ENOTEMPTY,
        "unlinkat",
        shown,
        "leftover temporary directory is not empty",
    ))
}
