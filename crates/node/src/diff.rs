//! The diff driver methods: changes and diffSize as tasks, diff as a pull stream of chunks,
//! applyDiff as a push sink (or straight from a file), each with abort and progress.

use crate::driver::NativeDriver;
use crate::job::{js_path, to_js_error, Job};
use crate::stream::{channel, ChannelReader, ChannelWriter};
use btrfs_layers_core::changes::Change;
use btrfs_layers_core::driver::diff::Against;
use btrfs_layers_core::tar::compress::Compression;
use btrfs_layers_core::{Control, Error as CoreError};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[napi(object)]
pub struct ChangeEntry {
    /// Absolute within the layer: `/etc/passwd`.
    pub path: String,
    /// `add`, `modify` or `delete`.
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

fn compression(name: &str) -> Result<Compression> {
    match name {
        "none" => Ok(Compression::None),
        "gzip" => Ok(Compression::Gzip),
        "zstd" => Ok(Compression::Zstd),
        _ => Err(Error::new(
            Status::InvalidArg,
            format!("unknown compression {name}"),
        )),
    }
}

/// Shared by a worker thread and its JS handle.
#[derive(Default)]
struct Progress {
    abort: AtomicBool,
    bytes: AtomicU64,
}

/// Catch a panic on a worker thread as an error, like `Job` does on the pool.
fn guarded<T>(f: impl FnOnce() -> btrfs_layers_core::Result<T>) -> btrfs_layers_core::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(CoreError::internal("panic in native code")))
}

#[napi]
pub struct DiffStream {
    rx: Arc<Mutex<Receiver<Vec<u8>>>>,
    worker: Arc<Mutex<Option<JoinHandle<btrfs_layers_core::Result<u64>>>>>,
    progress: Arc<Progress>,
}

#[napi]
impl DiffStream {
    /// The next chunk, or `null` at the end; rejects with the producer's error.
    #[napi(ts_return_type = "Promise<Buffer | null>")]
    pub fn next(&self) -> AsyncTask<NextChunk> {
        AsyncTask::new(NextChunk {
            rx: self.rx.clone(),
            worker: self.worker.clone(),
        })
    }

    /// Stop producing; the next `next()` rejects with ABORT_ERR.
    #[napi]
    pub fn abort(&self) {
        self.progress.abort.store(true, Ordering::Relaxed);
    }

    #[napi(getter)]
    pub fn bytes(&self) -> f64 {
        self.progress.bytes.load(Ordering::Relaxed) as f64
    }
}

pub struct NextChunk {
    rx: Arc<Mutex<Receiver<Vec<u8>>>>,
    worker: Arc<Mutex<Option<JoinHandle<btrfs_layers_core::Result<u64>>>>>,
}

impl Task for NextChunk {
    type Output = Option<Vec<u8>>;
    type JsValue = Option<Buffer>;

    fn compute(&mut self) -> Result<Self::Output> {
        let got = self.rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        match got {
            Ok(chunk) => Ok(Some(chunk)),
            Err(_) => {
                let handle = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
                match handle.map(|h| h.join()) {
                    Some(Ok(Err(e))) => Err(to_js_error(&e)),
                    Some(Err(_)) => Err(to_js_error(&CoreError::internal("diff worker panicked"))),
                    _ => Ok(None),
                }
            }
        }
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(output.map(Buffer::from))
    }
}

#[napi]
pub struct ApplySink {
    tx: Arc<Mutex<Option<SyncSender<Vec<u8>>>>>,
    worker: Arc<Mutex<Option<JoinHandle<btrfs_layers_core::Result<u64>>>>>,
    progress: Arc<Progress>,
}

#[napi]
impl ApplySink {
    /// Hand a chunk to the applier; resolves when it is queued (backpressure) with `true`,
    /// or `false` when the applier has stopped (`finish` tells why).
    #[napi]
    pub fn write(&self, chunk: Buffer) -> AsyncTask<Job<bool>> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let data = chunk.to_vec();
        Job::new(move || Ok(tx.is_some_and(|tx| tx.send(data).is_ok())))
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
    #[napi]
    pub fn finish(&self) -> AsyncTask<Job<f64>> {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let worker = self.worker.clone();
        Job::new(move || {
            let handle = worker.lock().unwrap_or_else(|p| p.into_inner()).take();
            match handle.map(|h| h.join()) {
                Some(Ok(r)) => r.map(|n| n as f64),
                Some(Err(_)) => Err(CoreError::internal("apply worker panicked")),
                None => Err(CoreError::internal("finish called twice")),
            }
        })
    }

    #[napi]
    pub fn abort(&self) {
        self.progress.abort.store(true, Ordering::Relaxed);
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Uncompressed tar bytes read so far.
    #[napi(getter)]
    pub fn bytes(&self) -> f64 {
        self.progress.bytes.load(Ordering::Relaxed) as f64
    }
}

/// A flag JS sets to stop a call that takes one (`changes`, `diffSize`): the call then
/// rejects with ABORT_ERR.
#[napi]
pub struct AbortFlag {
    flag: Arc<AtomicBool>,
}

#[napi]
impl AbortFlag {
    #[napi(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        AbortFlag {
            flag: Arc::new(AtomicBool::new(false)),
        }
    }

    #[napi]
    pub fn abort(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }
}

fn flag_of(abort: Option<ClassInstance<'_, AbortFlag>>) -> Option<Arc<AtomicBool>> {
    abort.map(|a| a.flag.clone())
}

/// Stopped by the flag, if the call was given one.
fn control_of(flag: &Option<Arc<AtomicBool>>) -> Control<'_> {
    flag.as_deref().map_or(Control::NONE, Control::abort_on)
}

#[napi]
impl NativeDriver {
    /// `parent`: a layer id; `null` with `whole` false means the recorded parent.
    #[napi]
    pub fn changes(
        &self,
        id: String,
        parent: Option<String>,
        whole: bool,
        abort: Option<ClassInstance<'_, AbortFlag>>,
    ) -> AsyncTask<Job<Vec<ChangeEntry>>> {
        let d = self.inner.clone();
        let abort = flag_of(abort);
        Job::new(move || {
            Ok(d.changes(&id, against(&parent, whole), control_of(&abort))?
                .into_iter()
                .map(change_entry)
                .collect())
        })
    }

    #[napi(js_name = "diffSize")]
    pub fn diff_size(
        &self,
        id: String,
        parent: Option<String>,
        whole: bool,
        abort: Option<ClassInstance<'_, AbortFlag>>,
    ) -> AsyncTask<Job<f64>> {
        let d = self.inner.clone();
        let abort = flag_of(abort);
        Job::new(move || Ok(d.diff_size(&id, against(&parent, whole), control_of(&abort))? as f64))
    }

    #[napi(js_name = "diffStart")]
    pub fn diff_start(
        &self,
        id: String,
        parent: Option<String>,
        whole: bool,
        compression_name: String,
    ) -> Result<DiffStream> {
        let c = compression(&compression_name)?;
        let d = self.inner.clone();
        let (tx, rx) = channel();
        let (worker, progress) = spawn_worker("btrfs-layers-diff", move |ctl| {
            d.diff(&id, against(&parent, whole), c, ChannelWriter::new(tx), ctl)
        })?;
        Ok(DiffStream {
            rx: Arc::new(Mutex::new(rx)),
            worker: Arc::new(Mutex::new(Some(worker))),
            progress,
        })
    }

    /// Start applying a stream pushed through the returned sink.
    #[napi(js_name = "applyStart")]
    pub fn apply_start(&self, id: String, parent: Option<String>) -> Result<ApplySink> {
        let d = self.inner.clone();
        let (tx, rx) = channel();
        let (worker, progress) = spawn_worker("btrfs-layers-apply", move |ctl| {
            d.apply_diff(&id, parent.as_deref(), ChannelReader::new(rx), ctl)
        })?;
        Ok(ApplySink {
            tx: Arc::new(Mutex::new(Some(tx))),
            worker: Arc::new(Mutex::new(Some(worker))),
            progress,
        })
    }

    /// Apply a tar file read directly by the native side; the sink is only for abort/progress.
    #[napi(js_name = "applyFile")]
    pub fn apply_file(
        &self,
        id: String,
        parent: Option<String>,
        file: String,
    ) -> Result<ApplySink> {
        let d = self.inner.clone();
        let (worker, progress) = spawn_worker("btrfs-layers-apply", move |ctl| {
            let f = btrfs_layers_core::tar::source::open(std::path::Path::new(&file))?;
            d.apply_diff(&id, parent.as_deref(), f, ctl)
        })?;
        Ok(ApplySink {
            tx: Arc::new(Mutex::new(None)),
            worker: Arc::new(Mutex::new(Some(worker))),
            progress,
        })
    }
}

type Worker = JoinHandle<btrfs_layers_core::Result<u64>>;

/// Run `work` on a named thread of its own with abort and progress shared with the JS handle.
fn spawn_worker(
    name: &str,
    work: impl FnOnce(Control<'_>) -> btrfs_layers_core::Result<u64> + Send + 'static,
) -> Result<(Worker, Arc<Progress>)> {
    let progress = Arc::new(Progress::default());
    let p = progress.clone();
    let worker = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            guarded(|| {
                let report = |n: u64| p.bytes.store(n, Ordering::Relaxed);
                work(Control::new(&p.abort, &report))
            })
        })
        .map_err(|e| to_js_error(&CoreError::internal(format!("cannot start a thread: {e}"))))?;
    Ok((worker, progress))
}
