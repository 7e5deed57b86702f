//! remapLayer and the driver's remap: a `Worker` shifting a tree's owners, behind a handle for
//! abort, progress and the result.

use crate::driver::NativeDriver;
use crate::driver::{maps, IdMapEntry};
use crate::error::Failure;
use crate::worker::{Finish, Worker};
use btrfs_layers_core::idmap::IdMapping;
use btrfs_layers_core::remap::{remap_path, Method, RemapOptions, RemapOutcome};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::path::PathBuf;

#[napi(object)]
pub struct Mapping {
    pub uid_maps: Option<Vec<IdMapEntry>>,
    pub gid_maps: Option<Vec<IdMapEntry>>,
}

#[napi(object)]
pub struct RemapResult {
    /// Inodes visited (each multiply-linked inode once).
    pub visited: f64,
    /// Inodes whose owner changed.
    pub changed: f64,
}

/// A remap under way.
#[napi]
pub struct RemapTask {
    worker: Worker<RemapResult>,
}

fn mapping(v: Option<Vec<IdMapEntry>>, what: &str) -> btrfs_layers_core::Result<IdMapping> {
    IdMapping::new(&maps(v), what)
}

/// A walk that went on past failures fails with all of them.
fn outcome(out: RemapOutcome) -> std::result::Result<RemapResult, Failure> {
    match Failure::many(out.errors) {
        Some(f) => Err(f),
        None => Ok(RemapResult {
            visited: out.visited as f64,
            changed: out.changed as f64,
        }),
    }
}

fn same(r: RemapResult) -> RemapResult {
    r
}

#[napi]
impl RemapTask {
    #[napi]
    pub fn abort(&self) {
        self.worker.abort();
    }

    /// Inodes visited so far.
    #[napi(getter)]
    pub fn progress(&self) -> f64 {
        self.worker.progress()
    }

    /// Wait for the walk; rejects with the first error and all of them in `errors`.
    #[napi(ts_return_type = "Promise<RemapResult>")]
    pub fn finish(&self) -> AsyncTask<Finish<RemapResult, RemapResult>> {
        self.worker.finish(same)
    }
}

#[napi(js_name = "remapStart")]
pub fn remap_start(
    env: &Env,
    path: String,
    from: Mapping,
    to: Mapping,
    cross_subvolumes: bool,
) -> Result<RemapTask> {
    let worker = Worker::spawn(env, "btrfs-layers-remap", "remap", move |control| {
        let fu = mapping(from.uid_maps, "from.uidMaps")?;
        let fg = mapping(from.gid_maps, "from.gidMaps")?;
        let tu = mapping(to.uid_maps, "to.uidMaps")?;
        let tg = mapping(to.gid_maps, "to.gidMaps")?;
        let opts = RemapOptions {
            from_uids: &fu,
            from_gids: &fg,
            to_uids: &tu,
            to_gids: &tg,
            cross_subvolumes,
            method: Method::Auto,
            control,
        };
        outcome(remap_path(&PathBuf::from(&path), &opts)?)
    })?;
    Ok(RemapTask { worker })
}

#[napi]
impl NativeDriver {
    /// Create layer `target` from layer `id` under other id maps (snapshot, then remap).
    #[napi(js_name = "remapStart")]
    pub fn remap_layer_start(
        &self,
        env: &Env,
        id: String,
        target: String,
        to: Mapping,
    ) -> Result<RemapTask> {
        let d = self.inner.clone();
        let worker = Worker::spawn(env, "btrfs-layers-remap", "remap", move |control| {
            outcome(d.remap(
                &id,
                &target,
                &maps(to.uid_maps),
                &maps(to.gid_maps),
                control,
            )?)
        })?;
        Ok(RemapTask { worker })
    }
}
