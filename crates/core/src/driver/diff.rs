//! The diff driver half of the graph driver: changes, diff, applyDiff and diffSize.
//!
//! `changes` takes the generation fast path when one layer's tree descends by snapshots from
//! the other's (each layer's record keeps its origin), else the send fast path (both cost
//! what the change costs), and falls back to the parallel tree walk without privilege. `apply_diff` applies into a temporary writable
//! snapshot of the layer and swaps it in with RENAME_EXCHANGE only on success, so a bad or
//! aborted stream leaves the layer exactly as it was.

use super::record::{self, Record};
use super::staging::Staged;
use super::{Dirs, Driver};
use crate::changes::{self, Change, ChangeKind, ContainerIds, Options};
use crate::control::Control;
use crate::delete::delete_at;
use crate::digest::{Digests, Expect, Mode, ModeWriter};
use crate::error::{Context, Error, Result};
use crate::layer::Origin;
use crate::open::open_dir_at;
use crate::quota;
use crate::subvolume::{self, is_read_only_fd, snapshot_at, uuid_string, SubvolumeInfo};
use crate::tar::apply::{apply, apply_digested, ApplyOptions};
use crate::tar::compress::{compressing_writer, Compression};
use crate::tar::write::{write_layer, WriteOptions};
use crate::trace;
use nix::errno::Errno;
use nix::sys::stat::fstatat;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Longest chain of layers `changes` follows up to the parent it compares against.
const MAX_CHAIN: usize = 10_000;

/// Which layer to compare against.
#[derive(Debug, Clone, Copy)]
pub enum Against<'a> {
    /// The parent recorded when the layer was created (none for a base layer).
    RecordedParent,
    /// No parent: the whole layer.
    Nothing,
    Layer(&'a str),
}

/// A read-only view of a layer: the layer itself when read-only, else a temporary snapshot
/// (`.tmp-*`, swept by `init` after a crash), deleted when the view is dropped.
pub(super) struct ReadOnlyView<'a> {
    driver: &'a Driver,
    /// Held, so `cleanup` waits for the temporary snapshot to go (it closes the directories).
    dirs: Arc<Dirs>,
    pub(super) fd: OwnedFd,
    temp: Option<String>,
}

impl Drop for ReadOnlyView<'_> {
    fn drop(&mut self) {
        if let Some(name) = self.temp.take() {
            let shown = self.driver.subvolumes_path().join(&name);
            let _ = delete_at(
                self.dirs.subvolumes.as_fd(),
                OsStr::new(&name),
                true,
                &shown,
            );
        }
    }
}

impl Driver {
    /// A read-only view of layer `id`, open at `fd`.
    pub(super) fn read_only_view(&self, id: &str, fd: OwnedFd) -> Result<ReadOnlyView<'_>> {
        let dirs = self.dirs()?;
        let path = self.layer_path(id);
        if is_read_only_fd(fd.as_fd(), &path)? {
            return Ok(ReadOnlyView {
                driver: self,
                dirs,
                fd,
                temp: None,
            });
        }
        let name = self.temp_name("tmp", id);
        let shown = self.subvolumes_path().join(&name);
        snapshot_at(
            fd.as_fd(),
            dirs.subvolumes.as_fd(),
            OsStr::new(&name),
            true,
            &shown,
        )?;
        // Built before the open, so a failed open still deletes the snapshot.
        let mut view = ReadOnlyView {
            driver: self,
            dirs: dirs.clone(),
            fd,
            temp: Some(name.clone()),
        };
        view.fd = open_dir_at(dirs.subvolumes.as_fd(), OsStr::new(&name), &shown)?;
        Ok(view)
    }

    /// Changes of layer `id` against `against`, sorted, parents before children. Owners are
    /// compared as container ids when the two layers are stored under different id maps.
    /// Stopped with ABORT_ERR once `control` aborts; no progress is reported.
    pub fn changes(
        &self,
        id: &str,
        against: Against<'_>,
        control: Control<'_>,
    ) -> Result<Vec<Change>> {
        let new = self.require_layer(id, "changes")?;
        let whole = || {
            let options = Options {
                control,
                ..Options::default()
            };
            changes::changes_walk(new.as_fd(), None, &self.layer_path(id), &options)
        };
        let named = match against {
            Against::Nothing => return whole(),
            Against::Layer(p) => {
                crate::layer::check_id(p, "changes")?;
                Some(p.to_string())
            }
            Against::RecordedParent => None,
        };
        // The layer's record, read once: its parent, its id maps, its origin.
        let meta = self.record(new.as_fd(), id)?;
        let Some(parent) = named.or_else(|| meta.parent.clone()) else {
            return whole();
        };
        let old = self.require_layer(&parent, "changes")?;
        let new_maps = self.mappings(&meta.uid_maps, &meta.gid_maps)?;
        let old_maps = self.mappings_of(old.as_fd(), &parent)?;
        let ids = (new_maps != old_maps).then(|| ContainerIds {
            new: Arc::new(new_maps),
            old: Arc::new(old_maps),
        });
        let options = Options {
            ids: ids.as_ref(),
            control,
            ..Options::default()
        };
        let shown = self.layer_path(id);
        if !self.send_denied.load(Ordering::Relaxed) {
            let fast = match self.common_since(id, &meta, new.as_fd(), &parent, old.as_fd())? {
                Some(since) => {
                    changes::changes_since(new.as_fd(), old.as_fd(), since, &shown, &options)
                }
                // A reader takes no snapshot (send needs read-only ones): it walks.
                None if self.read_only => {
                    changes::changes_walk(new.as_fd(), Some(old.as_fd()), &shown, &options)
                }
                None => self.changes_by_send(id, new.as_fd(), &parent, old.as_fd(), &options),
            };
            match fast {
                Ok(list) => return Ok(list),
                // Without CAP_SYS_ADMIN there is neither tree search nor send: remember, and
                // walk from now on.
                Err(e) if e.is(Errno::EPERM) => self.send_denied.store(true, Ordering::Relaxed),
                Err(e) => return Err(e),
            }
        }
        changes::changes_walk(new.as_fd(), Some(old.as_fd()), &shown, &options)
    }

    /// The transaction since which the layer `layer` records (open at `new`) and layer
    /// `parent` (at `old`) hold what was one tree, when the first descends from `parent` by
    /// snapshots: through the recorded origins (kept across applyDiff), each trusted only while
    /// the record describes the subvolume it names; the oldest transaction of the chain.
    /// None: no such chain.
    fn common_since(
        &self,
        id: &str,
        layer: &Record,
        new: BorrowedFd<'_>,
        parent: &str,
        old: BorrowedFd<'_>,
    ) -> Result<Option<u64>> {
        let target = uuid_string(&subvolume::info_fd(old, &self.layer_path(parent))?.uuid);
        let live = subvolume::info_fd(new, &self.layer_path(id))?;
        let mut origin = live_origin(layer, &live);
        let mut rec = layer.clone();
        let mut since = u64::MAX;
        // Each step goes one layer up; records that loop end at the bound.
        for _ in 0..MAX_CHAIN {
            let Some(o) = origin else { return Ok(None) };
            since = since.min(o.transid);
            if o.uuid == target {
                return Ok(Some(since));
            }
            let Some(up) = rec.parent.take() else {
                return Ok(None);
            };
            let Ok(fd) = self.require_layer(&up, "changes") else {
                return Ok(None);
            };
            rec = match self.record(fd.as_fd(), &up) {
                Ok(r) => r,
                Err(_) => return Ok(None),
            };
            if rec.uuid.as_deref() != Some(o.uuid.as_str()) {
                return Ok(None);
            }
            origin = rec.origin.clone();
        }
        Ok(None)
    }

    fn changes_by_send(
        &self,
        id: &str,
        new: BorrowedFd<'_>,
        parent: &str,
        old: BorrowedFd<'_>,
        options: &Options<'_>,
    ) -> Result<Vec<Change>> {
        let dup = |fd: BorrowedFd<'_>| {
            fd.try_clone_to_owned()
                .map_err(|_| Error::internal("dup failed"))
        };
        let new_view = self.read_only_view(id, dup(new)?)?;
        let old_view = self.read_only_view(parent, dup(old)?)?;
        let shown = self.layer_path(id);
        changes::changes_send(new_view.fd.as_fd(), old_view.fd.as_fd(), &shown, options)
    }

    /// Write the OCI layer tar of `id` against `against` to `out`; returns the bytes written
    /// (after compression).
    pub fn diff(
        &self,
        id: &str,
        against: Against<'_>,
        compression: Compression,
        out: impl Write,
        control: Control<'_>,
    ) -> Result<u64> {
        self.diff_plan(id, against, control)?
            .write(compression, out, control)
    }

    /// The first step of `diff`: open layer `id` and list its changes against `against`, so a
    /// missing layer or parent is known before any byte of the tar.
    pub fn diff_plan(
        &self,
        id: &str,
        against: Against<'_>,
        control: Control<'_>,
    ) -> Result<DiffPlan<'_>> {
        let list = self.changes(id, against, control)?;
        let layer = self.require_layer(id, "diff")?;
        Ok(DiffPlan {
            driver: self,
            id: id.to_string(),
            list,
            layer,
        })
    }

    /// Bytes of added and modified regular files of `id` against `against`, each inode once.
    /// Stopped with ABORT_ERR once `control` aborts; no progress is reported.
    pub fn diff_size(&self, id: &str, against: Against<'_>, control: Control<'_>) -> Result<u64> {
        let list = self.changes(id, against, control)?;
        let root = self.require_layer(id, "diffSize")?;
        let mut seen = HashSet::new();
        let mut total = 0u64;
        for c in list.iter().filter(|c| c.kind != ChangeKind::Delete) {
            let st = match fstatat(
                &root,
                c.path.as_path(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(Error::sys(e, "fstatat", &self.layer_path(id).join(&c.path))),
            };
            if st.st_mode & libc::S_IFMT == libc::S_IFREG && seen.insert((st.st_dev, st.st_ino)) {
                total += st.st_size as u64;
            }
        }
        Ok(total)
    }

    /// Apply the layer tar `input` (plain, gzip or zstd) to layer `id`. The layer changes only
    /// when the whole stream applied; returns the bytes of file content applied.
    pub fn apply_diff(
        &self,
        id: &str,
        parent: Option<&str>,
        input: impl Read,
        control: Control<'_>,
    ) -> Result<u64> {
        self.require_writable("applyDiff")?;
        let layer_fd = self.require_layer(id, "applyDiff")?;
        if let Some(p) = parent {
            self.require_layer(p, "applyDiff")?;
        }
        self.require_unheld(id, "applyDiff")?;
        let mut rec = self.record(layer_fd.as_fd(), id)?;
        let (uids, gids) = self.mappings(&rec.uid_maps, &rec.gid_maps)?;
        let old_info = subvolume::info_fd(layer_fd.as_fd(), &self.layer_path(id))?;
        let mut staged = Staged::snapshot(self, layer_fd.as_fd(), id)?;
        drop(layer_fd);
        let opts = ApplyOptions {
            uids: &uids,
            gids: &gids,
            control,
        };
        let applied = apply(staged.fd(), input, &opts)?;
        control.check("applyDiff", &self.layer_path(id))?;
        if let Some(size) = rec.size {
            quota::limit(staged.fd(), size, staged.path())?;
        }
        // btrfs commits no file data by itself: written back now, the data is on disk in or
        // before the transaction that holds the exchange below.
        nix::unistd::syncfs(staged.fd()).at("syncfs", staged.path())?;
        // The record follows the subvolume swapped in: its tree still descends from the
        // layer's origin, and the layer keeps its creation time.
        rec.origin = live_origin(&rec, &old_info);
        rec.uuid = Some(uuid_string(&staged.info()?.uuid));
        rec.created
            .get_or_insert_with(|| record::otime_ms(&old_info));
        // The commit point: one atomic exchange; the old tree goes when `staged` is dropped.
        staged.replace(id, &rec, old_info.read_only())?;
        Ok(applied)
    }

    /// Make the new layer `id` from `parent` (a snapshot of it; none: empty) with the layer
    /// tar `input` (plain, gzip or zstd) applied, computing in the same pass the digests of
    /// `input` as given and of its uncompressed tar, which must match `expect`. The layer is
    /// visible only when complete and verified: built under a temporary name, its data written
    /// back, then published with RENAME_NOREPLACE. On any failure (ERR_DIGEST for a mismatch,
    /// ERR_BAD_LAYER, ABORT_ERR, EEXIST when `id` appeared meanwhile) nothing is kept.
    pub fn apply_new(
        &self,
        id: &str,
        parent: Option<&str>,
        input: impl Read,
        expect: &Expect,
        control: Control<'_>,
    ) -> Result<Applied> {
        self.require_writable("applyDiff")?;
        // EEXIST before any work; the publish below refuses a name taken meanwhile.
        self.require_new(id, "applyDiff")?;
        let source = match parent {
            Some(p) => Some(self.require_layer(p, "applyDiff")?),
            None => None,
        };
        let ((uid_maps, gid_maps), root) = self.inherited(source.as_ref().zip(parent))?;
        let (uids, gids) = self.mappings(&uid_maps, &gid_maps)?;
        trace::event("applyLayer.stage", id);
        let staged = self.stage_new(id, source.as_ref().map(|fd| fd.as_fd()), root)?;
        drop(source);
        // Taken before the apply: the snapshot's origin is what it was made from, and when.
        let info = staged.info()?;
        let opts = ApplyOptions {
            uids: &uids,
            gids: &gids,
            control,
        };
        trace::event("applyLayer.apply", id);
        let (applied, digests) = apply_digested(staged.fd(), input, &opts)?;
        let shown = self.layer_path(id);
        control.check("applyDiff", &shown)?;
        expect.check(&digests, "applyDiff", &shown)?;
        // Written back before the rename, so no committed tree holds the name without the data.
        trace::event("applyLayer.syncfs", id);
        nix::unistd::syncfs(staged.fd()).at("syncfs", staged.path())?;
        trace::event("applyLayer.publish", id);
        let rec = Record {
            parent: parent.map(str::to_string),
            created: Some(super::now_ms()),
            uid_maps,
            gid_maps,
            uuid: Some(uuid_string(&info.uuid)),
            origin: parent.and_then(|_| Origin::of(&info)),
            ..Record::default()
        };
        // The commit point.
        staged.publish(id, &rec, false)?;
        trace::event("applyLayer.published", id);
        Ok(Applied { applied, digests })
    }
}

/// What `apply_new` made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Bytes of file content applied.
    pub applied: u64,
    pub digests: Digests,
}

/// The origin of a layer whose live subvolume `info` describes: the record's while it
/// describes that subvolume, else what the kernel records (a snapshot's source and when).
fn live_origin(rec: &Record, info: &SubvolumeInfo) -> Option<Origin> {
    if rec.written_for(info) {
        rec.origin.clone()
    } else {
        Origin::of(info)
    }
}

/// A diff whose layer is open and whose changes are listed: what is left is writing the tar.
pub struct DiffPlan<'d> {
    driver: &'d Driver,
    id: String,
    list: Vec<Change>,
    layer: OwnedFd,
}

impl DiffPlan<'_> {
    /// Write the tar to `out`; returns the bytes written (after compression).
    pub fn write(
        self,
        compression: Compression,
        out: impl Write,
        control: Control<'_>,
    ) -> Result<u64> {
        self.write_tar(compression, out, control, false)
            .map(|(n, _)| n)
    }

    /// `write`, also computing the digests of the bytes written and of the tar before its
    /// compression (the diffID), in the same pass.
    pub fn write_digested(
        self,
        compression: Compression,
        out: impl Write,
        control: Control<'_>,
    ) -> Result<Digests> {
        let (_, digests) = self.write_tar(compression, out, control, true)?;
        Ok(digests.expect("hashing"))
    }

    fn write_tar(
        self,
        compression: Compression,
        out: impl Write,
        control: Control<'_>,
        hash: bool,
    ) -> Result<(u64, Option<Digests>)> {
        let (d, id) = (self.driver, self.id.as_str());
        let write_error = |e: std::io::Error| {
            Error::sys(
                Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                "write",
                &d.layer_path(id),
            )
        };
        let mode = Mode::hashing(hash);
        let mut blob = ModeWriter::new(out, mode)?;
        let tar = {
            let w = compressing_writer(&mut blob, compression)?;
            // A plain tar is its own blob: hashed once.
            let tar_mode = match compression {
                Compression::None => Mode::No,
                _ => mode,
            };
            let mut w = ModeWriter::new(w, tar_mode)?;
            let (uids, gids) = d.mappings_of(self.layer.as_fd(), id)?;
            let opts = WriteOptions {
                uids: &uids,
                gids: &gids,
                control,
            };
            write_layer(self.layer.as_fd(), &self.list, &mut w, &opts)?;
            let (w, tar) = w.finish(write_error)?;
            w.finish().map_err(write_error)?;
            tar
        };
        let written = blob.count();
        let digests = blob.finish(write_error)?.1.map(|(digest, size)| {
            let (diff_id, uncompressed_size) = tar.unwrap_or((digest, size));
            Digests {
                digest,
                size,
                diff_id,
                uncompressed_size,
            }
        });
        Ok((written, digests))
    }
}
