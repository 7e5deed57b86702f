//! `remap`: a new layer holding another layer's tree under other id maps, made by a snapshot
//! and an owner shift of the snapshot, so the source layer is never touched.

use super::diff::Control;
use super::Driver;
use crate::delete::delete_at;
use crate::error::{Error, Result};
use crate::idmap::{IdMap, IdMapping};
use crate::layer::{self, check_id, LayerMeta};
use crate::open::{entry_exists, open_dir_at};
use crate::remap::{remap_tree, RemapOptions, RemapOutcome};
use crate::subvolume::{self, snapshot_at};
use nix::errno::Errno;
use nix::fcntl::{renameat2, RenameFlags};
use std::ffi::OsStr;
use std::os::fd::AsFd;

impl Driver {
    /// Create layer `target` from layer `id` with every owner shifted from `id`'s maps to
    /// `uid_maps`/`gid_maps`. When the outcome holds errors, `target` was not created.
    pub fn remap(
        &self,
        id: &str,
        target: &str,
        uid_maps: &[IdMap],
        gid_maps: &[IdMap],
        ctl: &Control<'_>,
    ) -> Result<RemapOutcome> {
        let dirs = self.dirs()?;
        check_id(id, "remap")?;
        check_id(target, "remap")?;
        let to_uids = IdMapping::new(uid_maps, "uidMaps")?;
        let to_gids = IdMapping::new(gid_maps, "gidMaps")?;
        let sub = dirs.subvolumes.as_fd();
        if !self.is_layer(id)? {
            return Err(Error::invalid(
                Errno::ENOENT,
                "remap",
                &self.layer_path(id),
                "layer does not exist",
            ));
        }
        if entry_exists(sub, OsStr::new(target), &self.layer_path(target))? {
            return Err(Error::invalid(
                Errno::EEXIST,
                "remap",
                &self.layer_path(target),
                "layer already exists",
            ));
        }
        let (from_uids, from_gids) = self.mappings_of(id)?;
        let source = open_dir_at(sub, OsStr::new(id), &self.layer_path(id))?;
        let tmp = self.temp_name("tmp", target);
        let tmp_path = self.subvolumes_path().join(&tmp);
        snapshot_at(source.as_fd(), sub, OsStr::new(&tmp), false, &tmp_path)?;
        let undo = || {
            let _ = delete_at(sub, OsStr::new(&tmp), true, &tmp_path);
            let _ = layer::remove(dirs.metadata.as_fd(), target, &tmp_path);
        };
        let built = (|| {
            let work = open_dir_at(sub, OsStr::new(&tmp), &tmp_path)?;
            let opts = RemapOptions {
                from_uids: &from_uids,
                from_gids: &from_gids,
                to_uids: &to_uids,
                to_gids: &to_gids,
                cross_subvolumes: false,
                abort: ctl.abort,
                progress: ctl.progress,
            };
            let mut outcome = remap_tree(work.as_fd(), &tmp_path, &opts)?;
            if !outcome.errors.is_empty() {
                // Name the files where the caller can find them: in the source layer.
                let source_path = self.layer_path(id);
                for e in &mut outcome.errors {
                    if let Some(rel) = e.path.as_ref().and_then(|p| p.strip_prefix(&tmp_path).ok())
                    {
                        e.path = Some(source_path.join(rel));
                    }
                }
                return Ok(outcome);
            }
            let same = |a: &IdMapping, b: &[IdMap]| IdMapping::new(b, "").is_ok_and(|b| &b == a);
            let info = subvolume::info_fd(work.as_fd(), &tmp_path)?;
            let meta = LayerMeta {
                id: target.to_string(),
                parent: Some(id.to_string()),
                created: super::now_ms(),
                read_only: false,
                size: None,
                subvolume_id: info.id,
                mount_label: None,
                uid_maps: (!same(&self.uids, uid_maps)).then(|| uid_maps.to_vec()),
                gid_maps: (!same(&self.gids, gid_maps)).then(|| gid_maps.to_vec()),
                uuid: Some(subvolume::uuid_string(&info.uuid)),
                origin: layer::Origin::of(&info),
            };
            layer::write(
                dirs.metadata.as_fd(),
                &meta,
                &self.temp_name("tmp", target),
                &tmp_path,
            )?;
            renameat2(
                sub,
                tmp.as_str(),
                sub,
                target,
                RenameFlags::RENAME_NOREPLACE,
            )
            .map_err(|e| Error::sys(e, "renameat2", &self.layer_path(target)))?;
            Ok(outcome)
        })();
        match built {
            Ok(outcome) if outcome.errors.is_empty() => Ok(outcome),
            other => {
                undo();
                other
            }
        }
    }
}
