//! The diff driver methods, each a `Worker` with abort and progress behind a typed handle:
//! changes and diffSize resolve once, diff is a pull stream of chunks, applyDiff a push sink
//! (or straight from a file).

use crate::driver::NativeDriver;
use crate::error::{js_path, Failure};
use crate::pull::{pull, Chunks};
use crate::sink::{sink, Input};
use crate::stream::{channel, ChannelReader, ChannelWriter};
use crate::worker::{Finish, Worker};
use btrfs_layers_core::changes::Change;
use btrfs_layers_core::digest::{Digest, Digests, Expect};
use btrfs_layers_core::driver::diff::{Against, Applied};
use btrfs_layers_core::error::Errno;
use btrfs_layers_core::tar::compress::Compression;
use btrfs_layers_core::Error as CoreError;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::os::unix::ffi::OsStrExt;

#[napi(object)]
pub struct ChangeEntry {
    /// Absolute within the layer: `/etc/passwd`.
    pub path: String,
    #[napi(ts_type = "'add' | 'modify' | 'delete'")]
    pub kind: String,
    /// The path's bytes, only when they are not UTF-8 (`path` then holds U+FFFD for them).
    pub raw_path: Option<Buffer>,
}

fn against(parent: &Option<String>, whole: bool) -> Against<'_> {
    match (whole, parent) {
        (true, _) => Against::Nothing,
        (false, Some(p)) => Against::Layer(p),
        (false, None) => Against::RecordedParent,
    }
}

fn change_entry(c: Change) -> ChangeEntry {
    let bytes = c.path.as_os_str().as_bytes();
    let mut full = Vec::with_capacity(bytes.len() + 1);
    full.push(b'/');
    full.extend_from_slice(bytes);
    let (path, raw_path) = js_path(full);
    ChangeEntry {
        path,
        kind: c.kind.as_str().to_string(),
        raw_path,
    }
}

fn change_entries(list: Vec<Change>) -> Vec<ChangeEntry> {
    list.into_iter().map(change_entry).collect()
}

fn compression(name: &str) -> btrfs_layers_core::Result<Compression> {
    match name {
        "none" => Ok(Compression::None),
        "gzip" => Ok(Compression::Gzip),
        "zstd" => Ok(Compression::Zstd),
        _ => Err(CoreError::invalid(
            Errno::EINVAL,
            "diff",
            std::path::Path::new(""),
            format!("unknown compression {name}"),
        )),
    }
}

pub(crate) fn bytes(n: u64) -> f64 {
    n as f64
}

/// `changes` under way.
#[napi]
pub struct ChangesTask {
    worker: Worker<Vec<Change>>,
}

#[napi]
impl ChangesTask {
    #[napi]
    pub fn abort(&self) {
        self.worker.abort();
    }

    /// Nothing is counted: always 0.
    #[napi(getter)]
    pub fn progress(&self) -> f64 {
        self.worker.progress()
    }

    #[napi(ts_return_type = "Promise<Array<ChangeEntry>>")]
    pub fn finish(&self) -> AsyncTask<Finish<Vec<Change>, Vec<ChangeEntry>>> {
        self.worker.finish(change_entries)
    }
}

/// `diffSize` under way.
#[napi]
pub struct SizeTask {
    worker: Worker<u64>,
}

#[napi]
impl SizeTask {
    #[napi]
    pub fn abort(&self) {
        self.worker.abort();
    }

    /// Nothing is counted: always 0.
    #[napi(getter)]
    pub fn progress(&self) -> f64 {
        self.worker.progress()
    }

    /// The bytes of file content.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn finish(&self) -> AsyncTask<Finish<u64, f64>> {
        self.worker.finish(bytes)
    }
}

pull!(
    [
        " `diff` under way: chunks of the layer tar, pulled. The first `next()` resolves with an",
        " empty Buffer once the layer is open and its changes listed (or rejects when it is missing)."
    ]
    DiffStream,
    Option<Digests>
);

/// The digests of a layer blob and of its uncompressed tar.
#[napi(object)]
pub struct LayerDigests {
    /// `sha256:<hex>` of the blob (the bytes as stored or sent: compressed, or the tar).
    pub digest: String,
    /// Bytes of the blob.
    pub size: f64,
    /// `sha256:<hex>` of the uncompressed tar, all of it (the OCI diffID).
    pub diff_id: String,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: f64,
}

fn layer_digests(d: &Digests) -> LayerDigests {
    LayerDigests {
        digest: d.digest.to_string(),
        size: bytes(d.size),
        diff_id: d.diff_id.to_string(),
        uncompressed_size: bytes(d.uncompressed_size),
    }
}

/// A new layer made by `applyLayerStart` or `applyLayerFile`.
#[napi(object)]
pub struct AppliedLayer {
    /// Bytes of file content applied.
    pub applied: f64,
    /// `sha256:<hex>` of the input as given.
    pub digest: String,
    /// Bytes of the input as given.
    pub size: f64,
    /// `sha256:<hex>` of the uncompressed tar (the OCI diffID).
    pub diff_id: String,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: f64,
}

fn applied_layer(a: Applied) -> AppliedLayer {
    let d = layer_digests(&a.digests);
    AppliedLayer {
        applied: bytes(a.applied),
        digest: d.digest,
        size: d.size,
        diff_id: d.diff_id,
        uncompressed_size: d.uncompressed_size,
    }
}

/// What the input of `applyLayerStart`/`applyLayerFile` must be; each part checked only when given.
#[napi(object)]
pub struct LayerVerify {
    /// `sha256:<64 lowercase hex>` of the input as given.
    pub digest: Option<String>,
    /// Bytes of the input as given.
    pub size: Option<f64>,
    /// `sha256:<64 lowercase hex>` of the uncompressed tar.
    pub diff_id: Option<String>,
}

fn expect(verify: Option<LayerVerify>) -> btrfs_layers_core::Result<Expect> {
    let Some(v) = verify else {
        return Ok(Expect::default());
    };
    let digest =
        |s: Option<String>, what: &str| s.map(|s| Digest::parse(&s, what, "applyDiff")).transpose();
    let size = match v.size {
        None => None,
        Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= 9_007_199_254_740_991.0 => Some(n as u64),
        Some(n) => {
            return Err(CoreError::invalid(
                Errno::EINVAL,
                "applyDiff",
                std::path::Path::new(""),
                format!("verify.size must be a non-negative safe integer, got {n}"),
            ))
        }
    };
    Ok(Expect {
        digest: digest(v.digest, "verify.digest")?,
        size,
        diff_id: digest(v.diff_id, "verify.diffId")?,
    })
}

#[napi]
impl DiffStream {
    /// Once `next()` resolved with `null` (the end) of a stream started with `digests`: its
    /// digests; else `null`.
    #[napi]
    pub fn digests(&self) -> Option<LayerDigests> {
        self.chunks
            .done(|d| d.as_ref().map(layer_digests))
            .flatten()
    }
}

sink!(
    [" `applyDiff` under way: chunks of the layer tar, pushed (none when it reads a file)."]
    ApplySink,
    "applyDiff",
    u64,
    f64,
    bytes,
    "Promise<number>",
    "Uncompressed tar bytes read so far."
);

sink!(
    [
        " `applyLayer` under way: a new layer made from a pushed stream (none when it reads a",
        " file), its digests computed on the way; an abort keeps nothing of the layer."
    ]
    LayerSink,
    "applyDiff",
    Applied,
    AppliedLayer,
    applied_layer,
    "Promise<AppliedLayer>",
    "Uncompressed tar bytes read so far."
);

#[napi]
impl NativeDriver {
    /// `parent`: a layer id; `null` with `whole` false means the recorded parent.
    #[napi(js_name = "changesStart")]
    pub fn changes_start(
        &self,
        env: &Env,
        id: String,
        parent: Option<String>,
        whole: bool,
    ) -> Result<ChangesTask> {
        let d = self.inner.clone();
        let worker = Worker::spawn(env, "btrfs-layers-changes", "changes", move |ctl| {
            Ok(d.changes(&id, against(&parent, whole), ctl)?)
        })?;
        Ok(ChangesTask { worker })
    }

    #[napi(js_name = "diffSizeStart")]
    pub fn diff_size_start(
        &self,
        env: &Env,
        id: String,
        parent: Option<String>,
        whole: bool,
    ) -> Result<SizeTask> {
        let d = self.inner.clone();
        let worker = Worker::spawn(env, "btrfs-layers-diffsize", "diffSize", move |ctl| {
            Ok(d.diff_size(&id, against(&parent, whole), ctl)?)
        })?;
        Ok(SizeTask { worker })
    }

    /// `compression`: `none`, `gzip` or `zstd`. With `digests`, the stream's digests are
    /// computed as it is written (`DiffStream.digests()` once it ended).
    #[napi(js_name = "diffStart")]
    pub fn diff_start(
        &self,
        env: &Env,
        id: String,
        parent: Option<String>,
        whole: bool,
        #[napi(ts_arg_type = "'none' | 'gzip' | 'zstd'")] compression_name: String,
        digests: bool,
    ) -> Result<DiffStream> {
        let c =
            compression(&compression_name).map_err(|e| Failure::from(e).into_js(env, "diff"))?;
        let d = self.inner.clone();
        let (tx, rx) = channel();
        let worker = Worker::spawn(env, "btrfs-layers-diff", "diff", move |ctl| {
            let plan = d.diff_plan(&id, against(&parent, whole), ctl)?;
            // The layer is open: an empty chunk says so (data chunks are never empty).
            if tx.send(Vec::new()).is_err() {
                return Ok(None);
            }
            let out = ChannelWriter::new(tx);
            if digests {
                Ok(Some(plan.write_digested(c, out, ctl)?))
            } else {
                plan.write(c, out, ctl)?;
                Ok(None)
            }
        })?;
        Ok(DiffStream {
            chunks: Chunks::new(rx, worker),
        })
    }

    /// Start applying a stream pushed through the returned sink.
    #[napi(js_name = "applyStart")]
    pub fn apply_start(&self, env: &Env, id: String, parent: Option<String>) -> Result<ApplySink> {
        let d = self.inner.clone();
        let (tx, rx) = channel();
        let worker = Worker::spawn(env, "btrfs-layers-apply", "applyDiff", move |ctl| {
            Ok(d.apply_diff(&id, parent.as_deref(), ChannelReader::new(rx), ctl)?)
        })?;
        Ok(ApplySink {
            input: Input::new(Some(tx)),
            worker,
        })
    }

    /// Apply a tar file read directly by the native side; the sink is only for abort/progress.
    #[napi(js_name = "applyFile")]
    pub fn apply_file(
        &self,
        env: &Env,
        id: String,
        parent: Option<String>,
        file: String,
    ) -> Result<ApplySink> {
        let d = self.inner.clone();
        let worker = Worker::spawn(env, "btrfs-layers-apply", "applyDiff", move |ctl| {
            let f = btrfs_layers_core::tar::source::open(std::path::Path::new(&file))?;
            Ok(d.apply_diff(&id, parent.as_deref(), f, ctl)?)
        })?;
        Ok(ApplySink {
            input: Input::new(None),
            worker,
        })
    }

    /// Make the new layer `id` (from `parent`, else empty) from a stream pushed through the
    /// returned sink, verified against `verify`; nothing is kept unless all of it applied
    /// and matched.
    #[napi(js_name = "applyLayerStart")]
    pub fn apply_layer_start(
        &self,
        env: &Env,
        id: String,
        parent: Option<String>,
        verify: Option<LayerVerify>,
    ) -> Result<LayerSink> {
        let expect = expect(verify).map_err(|e| Failure::from(e).into_js(env, "applyDiff"))?;
        let d = self.inner.clone();
        let (tx, rx) = channel();
        let worker = Worker::spawn(env, "btrfs-layers-apply", "applyDiff", move |ctl| {
            let input = ChannelReader::new(rx);
            Ok(d.apply_new(&id, parent.as_deref(), input, &expect, ctl)?)
        })?;
        Ok(LayerSink {
            input: Input::new(Some(tx)),
            worker,
        })
    }

    /// `applyLayerStart` from a tar file read directly by the native side; the sink is only
    /// for abort/progress.
    #[napi(js_name = "applyLayerFile")]
    pub fn apply_layer_file(
        &self,
        env: &Env,
        id: String,
        parent: Option<String>,
        verify: Option<LayerVerify>,
        file: String,
    ) -> Result<LayerSink> {
        let expect = expect(verify).map_err(|e| Failure::from(e).into_js(env, "applyDiff"))?;
        let d = self.inner.clone();
        let worker = Worker::spawn(env, "btrfs-layers-apply", "applyDiff", move |ctl| {
            let f = btrfs_layers_core::tar::source::open(std::path::Path::new(&file))?;
            Ok(d.apply_new(&id, parent.as_deref(), f, &expect, ctl)?)
        })?;
        Ok(LayerSink {
            input: Input::new(None),
            worker,
        })
    }
}
