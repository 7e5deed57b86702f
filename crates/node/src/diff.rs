//! The diff driver methods, each a `Worker` with abort and progress behind a typed handle:
//! changes and diffSize resolve once, diff is a pull stream of chunks, applyDiff a push sink
//! (or straight from a file).

use crate::driver::NativeDriver;
use crate::error::{js_path, Failure};
use crate::job::{failed, rejected, Job};
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
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

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

fn bytes(n: u64) -> f64 {
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

/// `diff` under way: chunks of the layer tar, pulled. The first `next()` resolves with an
/// empty Buffer once the layer is open and its changes listed (or rejects when it is missing).
#[napi]
pub struct DiffStream {
    rx: Arc<Mutex<Receiver<Vec<u8>>>>,
    worker: Worker<Option<Digests>>,
    digests: Arc<Mutex<Option<Digests>>>,
}

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
    /// The next chunk, or `null` at the end; rejects with the producer's error.
    #[napi(ts_return_type = "Promise<Buffer | null>")]
    pub fn next(&self) -> AsyncTask<NextChunk> {
        AsyncTask::new(NextChunk {
            rx: self.rx.clone(),
            worker: self.worker.clone(),
            digests: self.digests.clone(),
            failure: None,
        })
    }

    /// Stop producing; the next `next()` rejects with ABORT_ERR.
    #[napi]
    pub fn abort(&self) {
        self.worker.abort();
    }

    /// Bytes of the stream produced so far.
    #[napi(getter)]
    pub fn progress(&self) -> f64 {
        self.worker.progress()
    }

    /// Once `next()` resolved with `null` (the end) of a stream started with `digests`: its
    /// digests; else `null`.
    #[napi]
    pub fn digests(&self) -> Option<LayerDigests> {
        self.digests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(layer_digests)
    }
}

pub struct NextChunk {
    rx: Arc<Mutex<Receiver<Vec<u8>>>>,
    worker: Worker<Option<Digests>>,
    digests: Arc<Mutex<Option<Digests>>>,
    failure: Option<Failure>,
}

impl Task for NextChunk {
    type Output = Option<Vec<u8>>;
    type JsValue = Option<Buffer>;

    fn compute(&mut self) -> Result<Self::Output> {
        let got = self.rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        match got {
            Ok(chunk) => Ok(Some(chunk)),
            // The producer is done: its outcome says whether this is the end or an error.
            Err(_) => match self.worker.join() {
                Some(Err(f)) => failed(&mut self.failure, f),
                Some(Ok(digests)) => {
                    *self.digests.lock().unwrap_or_else(|p| p.into_inner()) = digests;
                    Ok(None)
                }
                None => Ok(None),
            },
        }
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(output.map(Buffer::from))
    }

    fn reject(&mut self, env: Env, err: Error) -> Result<Self::JsValue> {
        rejected(&mut self.failure, &env, self.worker.op(), err)
    }
}

/// The pushing end of an apply's input: chunks queued for the applier thread.
#[derive(Clone)]
struct Input {
    tx: Arc<Mutex<Option<SyncSender<Vec<u8>>>>>,
}

impl Input {
    fn new(tx: Option<SyncSender<Vec<u8>>>) -> Self {
        Input {
            tx: Arc::new(Mutex::new(tx)),
        }
    }

    fn sender(&self) -> std::sync::MutexGuard<'_, Option<SyncSender<Vec<u8>>>> {
        self.tx.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, chunk: Buffer) -> AsyncTask<Job<bool>> {
        let tx = self.sender().clone();
        let data = chunk.to_vec();
        Job::new("applyDiff", move || {
            Ok(tx.is_some_and(|tx| tx.send(data).is_ok()))
        })
    }

    fn try_write(&self, chunk: Buffer) -> bool {
        self.sender()
            .as_ref()
            .is_some_and(|tx| tx.try_send(chunk.to_vec()).is_ok())
    }

    /// End of input.
    fn close(&self) {
        self.sender().take();
    }
}

/// `applyDiff` under way: chunks of the layer tar, pushed (none when it reads a file).
#[napi]
pub struct ApplySink {
    input: Input,
    worker: Worker<u64>,
}

#[napi]
impl ApplySink {
    /// Hand a chunk to the applier; resolves when it is queued (backpressure) with `true`,
    /// or `false` when the applier has stopped (`finish` tells why). The bytes are copied
    /// before this returns: the caller may reuse `chunk` at once (`feed` in ts/driver.ts does).
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn write(&self, chunk: Buffer) -> AsyncTask<Job<bool>> {
        self.input.write(chunk)
    }

    /// Queue a chunk without waiting: `true` when queued, `false` when the queue is full (use
    /// `write`, which waits) or the applier has stopped. Saves a thread-pool round trip per chunk.
    /// As with `write`, the bytes are copied before this returns.
    #[napi(js_name = "tryWrite")]
    pub fn try_write(&self, chunk: Buffer) -> bool {
        self.input.try_write(chunk)
    }

    /// End of input: wait for the applier and resolve with the bytes applied.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn finish(&self) -> AsyncTask<Finish<u64, f64>> {
        self.input.close();
        self.worker.finish(bytes)
    }

    #[napi]
    pub fn abort(&self) {
        self.worker.abort();
        self.input.close();
    }

    /// Uncompressed tar bytes read so far.
    #[napi(getter)]
    pub fn progress(&self) -> f64 {
        self.worker.progress()
    }
}

/// `applyLayer` under way: a new layer made from a pushed stream (none when it reads a file),
/// its digests computed on the way.
#[napi]
pub struct LayerSink {
    input: Input,
    worker: Worker<Applied>,
}

#[napi]
impl LayerSink {
    /// As `ApplySink.write`.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn write(&self, chunk: Buffer) -> AsyncTask<Job<bool>> {
        self.input.write(chunk)
    }

    /// As `ApplySink.tryWrite`.
    #[napi(js_name = "tryWrite")]
    pub fn try_write(&self, chunk: Buffer) -> bool {
        self.input.try_write(chunk)
    }

    /// End of input: wait for the layer to be made and verified.
    #[napi(ts_return_type = "Promise<AppliedLayer>")]
    pub fn finish(&self) -> AsyncTask<Finish<Applied, AppliedLayer>> {
        self.input.close();
        self.worker.finish(applied_layer)
    }

    /// Stop: nothing of the layer is kept.
    #[napi]
    pub fn abort(&self) {
        self.worker.abort();
        self.input.close();
    }

    /// Uncompressed tar bytes read so far.
    #[napi(getter)]
    pub fn progress(&self) -> f64 {
        self.worker.progress()
    }
}

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
            rx: Arc::new(Mutex::new(rx)),
            worker,
            digests: Arc::new(Mutex::new(None)),
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
