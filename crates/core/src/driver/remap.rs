//! `remap`: a new layer holding another layer's tree under other id maps, made by a snapshot
//! and an owner shift of the snapshot, so the source layer is never touched.

use super::record::Record;
use super::staging::Staged;
use super::Driver;
use crate::control::Control;
use crate::error::Result;
use crate::idmap::{IdMap, IdMapping};
use crate::layer::{check_id, Origin};
use crate::remap::{remap_tree, Method, RemapOptions, RemapOutcome};
use crate::subvolume;
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
        control: Control<'_>,
    ) -> Result<RemapOutcome> {
        self.require_writable("remap")?;
        check_id(id, "remap")?;
        check_id(target, "remap")?;
        let to_uids = IdMapping::new(uid_maps, "uidMaps")?;
        let to_gids = IdMapping::new(gid_maps, "gidMaps")?;
        let source = self.require_layer(id, "remap")?;
        self.require_new(target, "remap")?;
        let (from_uids, from_gids) = self.mappings_of(source.as_fd(), id)?;
        let staged = Staged::snapshot(self, source.as_fd(), target)?;
        drop(source);
        let opts = RemapOptions {
            from_uids: &from_uids,
            from_gids: &from_gids,
            to_uids: &to_uids,
            to_gids: &to_gids,
            cross_subvolumes: false,
            method: Method::Auto,
            control,
        };
        let mut outcome = remap_tree(staged.fd(), staged.path(), &opts)?;
        if !outcome.errors.is_empty() {
            // Name the files where the caller can find them: in the source layer.
            let source_path = self.layer_path(id);
            for e in &mut outcome.errors {
                if let Some(rel) = e
                    .path
                    .as_ref()
                    .and_then(|p| p.strip_prefix(staged.path()).ok())
                {
                    e.path = Some(source_path.join(rel));
                }
            }
            return Ok(outcome);
        }
        let same = |a: &IdMapping, b: &[IdMap]| IdMapping::new(b, "").is_ok_and(|b| &b == a);
        let info = staged.info()?;
        let rec = Record {
            parent: Some(id.to_string()),
            created: Some(super::now_ms()),
            uid_maps: (!same(&self.uids, uid_maps)).then(|| uid_maps.to_vec()),
            gid_maps: (!same(&self.gids, gid_maps)).then(|| gid_maps.to_vec()),
            uuid: Some(subvolume::uuid_string(&info.uuid)),
            origin: Origin::of(&info),
            ..Record::default()
        };
        staged.publish(target, &rec, false)?;
        Ok(outcome)
    }
}
