//! remapLayer: a worker thread shifting a tree's owners, with a handle for abort and progress.

use crate::driver::NativeDriver;
use crate::driver::{maps, IdMapEntry};
use crate::job::to_js_error_many;
use btrfs_layers_core::idmap::IdMapping;
use btrfs_layers_core::remap::{remap_path, Method, RemapOptions, RemapOutcome};
use btrfs_layers_core::{Control, Error as CoreError};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

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

type Outcome = std::result::Result<(u64, u64), (CoreError, Vec<CoreError>)>;

#[napi]
pub struct RemapTask {
    worker: Arc<Mutex<Option<JoinHandle<Outcome>>>>,
    abort: Arc<AtomicBool>,
    visited: Arc<AtomicU64>,
}

fn mapping(v: Option<Vec<IdMapEntry>>, what: &str) -> btrfs_layers_core::Result<IdMapping> {
    IdMapping::new(&maps(v), what)
}

#[napi]
impl RemapTask {
    #[napi]
    pub fn abort(&self) {
        self.abort.store(true, Ordering::Relaxed);
    }

    #[napi(getter)]
    pub fn visited(&self) -> f64 {
        self.visited.load(Ordering::Relaxed) as f64
    }

    /// Wait for the walk; rejects with the first error and all of them in `errors`.
    #[napi]
    pub fn finish(&self) -> AsyncTask<RemapFinish> {
        AsyncTask::new(RemapFinish {
            worker: self.worker.clone(),
        })
    }
}

pub struct RemapFinish {
    worker: Arc<Mutex<Option<JoinHandle<Outcome>>>>,
}

impl Task for RemapFinish {
    type Output = RemapResult;
    type JsValue = RemapResult;

    fn compute(&mut self) -> Result<RemapResult> {
        let handle = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        match handle.map(|h| h.join()) {
            Some(Ok(Ok((visited, changed)))) => Ok(RemapResult {
                visited: visited as f64,
                changed: changed as f64,
            }),
            Some(Ok(Err((first, all)))) => Err(to_js_error_many(&first, &all)),
            Some(Err(_)) => Err(to_js_error_many(
                &CoreError::internal("remap worker panicked"),
                &[],
            )),
            None => Err(to_js_error_many(
                &CoreError::internal("finish called twice"),
                &[],
            )),
        }
    }

    fn resolve(&mut self, _env: Env, output: RemapResult) -> Result<RemapResult> {
        Ok(output)
    }
}

/// Run `work` on a thread of its own; the handle aborts it, reads progress, and finishes.
fn spawn_remap(
    work: impl FnOnce(Control<'_>) -> btrfs_layers_core::Result<RemapOutcome> + Send + 'static,
) -> Result<RemapTask> {
    let abort = Arc::new(AtomicBool::new(false));
    let visited = Arc::new(AtomicU64::new(0));
    let (a, v) = (abort.clone(), visited.clone());
    let worker = std::thread::Builder::new()
        .name("btrfs-layers-remap".into())
        .spawn(move || -> Outcome {
            let run = || -> Outcome {
                let report = |n: u64| v.store(n, Ordering::Relaxed);
                let out = work(Control::new(&a, &report)).map_err(|e| (e, Vec::new()))?;
                match out.errors.first() {
                    Some(first) => Err((first.clone(), out.errors.clone())),
                    None => Ok((out.visited, out.changed)),
                }
            };
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
                .unwrap_or_else(|_| Err((CoreError::internal("panic in native code"), Vec::new())))
        })
        .map_err(|e| {
            to_js_error_many(
                &CoreError::internal(format!("cannot start a thread: {e}")),
                &[],
            )
        })?;
    Ok(RemapTask {
        worker: Arc::new(Mutex::new(Some(worker))),
        abort,
        visited,
    })
}

#[napi(js_name = "remapStart")]
pub fn remap_start(
    path: String,
    from: Mapping,
    to: Mapping,
    cross_subvolumes: bool,
) -> Result<RemapTask> {
    spawn_remap(move |control| {
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
        remap_path(&PathBuf::from(&path), &opts)
    })
}

#[napi]
impl NativeDriver {
    /// Create layer `target` from layer `id` under other id maps (snapshot, then remap).
    #[napi(js_name = "remapStart")]
    pub fn remap_layer_start(&self, id: String, target: String, to: Mapping) -> Result<RemapTask> {
        let d = self.inner.clone();
        spawn_remap(move |control| {
            d.remap(
                &id,
                &target,
                &maps(to.uid_maps),
                &maps(to.gid_maps),
                control,
            )
        })
    }
}
