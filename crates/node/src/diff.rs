//! The diff driver methods, each a `Worker` with abort and progress behind a typed handle:
//! changes and diffSize resolve once, diff is a pull stream of chunks, applyDiff a push sink
//! (or straight from a file).

use crate::driver::NativeDriver;
use crate::error::{js_path, Failure};
use crate::job::{failed, rejected, Job};
use crate::stream::{channel, ChannelReader, ChannelWriter};
use crate::worker::{Finish, Worker};
use btrfs_layers_core::changes::Change;
use btrfs_layers_core::driver::diff::Against;
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
    worker: Worker<u64>,
}

#[napi]
impl DiffStream {
    /// The next chunk, or `null` at the end; rejects with the producer's error.
    #[napi(ts_return_type = "Promise<Buffer | null>")]
    pub fn next(&self) -> AsyncTask<NextChunk> {
        AsyncTask::new(NextChunk {
            rx: self.rx.clone(),
            worker: self.worker.clone(),
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
}

pub struct NextChunk {
    rx: Arc<Mutex<Receiver<Vec<u8>>>>,
    worker: Worker<u64>,
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
                _ => Ok(None),
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

/// `applyDiff` under way: chunks of the layer tar, pushed (none when it reads a file).
#[napi]
pub struct ApplySink {
    tx: Arc<Mutex<Option<SyncSender<Vec<u8>>>>>,
    worker: Worker<u64>,
}

#[napi]
impl ApplySink {
    /// Hand a chunk to the applier; resolves when it is queued (backpressure) with `true`,
    /// or `false` when the applier has stopped (`finish` tells why).
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn write(&self, chunk: Buffer) -> AsyncTask<Job<bool>> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let data = chunk.to_vec();
        Job::new("applyDiff", move || {
            Ok(tx.is_some_and(|tx| tx.send(data).is_ok()))
        })
    }

    /// Queue a chunk without waiting: `true` when queued, `false` when the queue is full (use
    /// `write`, which waits) or the applier has stopped. Saves a thread-pool round trip per chunk.
    #[napi(js_name = "tryWrite")]
    pub fn try_write(&self, chunk: Buffer) -> bool {
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .is_some_and(|tx| tx.try_send(chunk.to_vec()).is_ok())
    }

    /// End of input: wait for the applier and resolve with the bytes applied.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn finish(&self) -> AsyncTask<Finish<u64, f64>> {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.worker.finish(bytes)
    }

    #[napi]
    pub fn abort(&self) {
        self.worker.abort();
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
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

    /// `compression`: `none`, `gzip` or `zstd`.
    #[napi(js_name = "diffStart")]
    pub fn diff_start(
        &self,
        env: &Env,
        id: String,
        parent: Option<String>,
        whole: bool,
        #[napi(ts_arg_type = "'none' | 'gzip' | 'zstd'")] compression_name: String,
    ) -> Result<DiffStream> {
        let c =
            compression(&compression_name).map_err(|e| Failure::from(e).into_js(env, "diff"))?;
        let d = self.inner.clone();
        let (tx, rx) = channel();
        let worker = Worker::spawn(env, "btrfs-layers-diff", "diff", move |ctl| {
            let plan = d.diff_plan(&id, against(&parent, whole), ctl)?;
            // The layer is open: an empty chunk says so (data chunks are never empty).
            if tx.send(Vec::new()).is_err() {
                return Ok(0);
            }
            Ok(plan.write(c, ChannelWriter::new(tx), ctl)?)
        })?;
        Ok(DiffStream {
            rx: Arc::new(Mutex::new(rx)),
            worker,
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
            tx: Arc::new(Mutex::new(Some(tx))),
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
            tx: Arc::new(Mutex::new(None)),
            worker,
        })
    }
}
