//! A long call on a named thread of its own: a core closure run with a `Control` (abort flag,
//! progress counter) shared with the JS handle, panics caught, and `finish` joining it as an
//! AsyncTask. The exported handle classes (diff.rs, remap.rs) are typed wrappers over it,
//! since napi classes cannot be generic.

use crate::error::Failure;
use crate::job::{failed, rejected};
use btrfs_layers_core::{Control, Error as CoreError};
use napi::bindgen_prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

type Outcome<T> = std::result::Result<T, Failure>;

#[derive(Default)]
struct Shared {
    abort: AtomicBool,
    progress: AtomicU64,
}

pub struct Worker<T> {
    op: &'static str,
    handle: Arc<Mutex<Option<JoinHandle<Outcome<T>>>>>,
    shared: Arc<Shared>,
}

impl<T> Clone for Worker<T> {
    fn clone(&self) -> Self {
        Worker {
            op: self.op,
            handle: self.handle.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<T: Send + 'static> Worker<T> {
    /// Run `work` on a thread named `name`; its errors name operation `op`.
    pub fn spawn(
        env: &Env,
        name: &str,
        op: &'static str,
        work: impl FnOnce(Control<'_>) -> Outcome<T> + Send + 'static,
    ) -> Result<Self> {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                catch_unwind(AssertUnwindSafe(|| {
                    let report = |n: u64| s.progress.store(n, Ordering::Relaxed);
                    work(Control::new(&s.abort, &report))
                }))
                .unwrap_or_else(|_| Err(Failure::panicked()))
            })
            .map_err(|e| {
                Failure::from(CoreError::internal(format!("cannot start a thread: {e}")))
                    .into_js(env, op)
            })?;
        Ok(Worker {
            op,
            handle: Arc::new(Mutex::new(Some(handle))),
            shared,
        })
    }

    /// Ask the work to stop: it ends with ABORT_ERR at its next check.
    pub fn abort(&self) {
        self.shared.abort.store(true, Ordering::Relaxed);
    }

    /// What the work counts (bytes, inodes) so far.
    pub fn progress(&self) -> f64 {
        self.shared.progress.load(Ordering::Relaxed) as f64
    }

    /// Wait for the work (blocking: on the thread pool only); None once joined before.
    pub fn join(&self) -> Option<Outcome<T>> {
        let handle = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take();
        handle.map(|h| h.join().unwrap_or_else(|_| Err(Failure::panicked())))
    }

    /// Wait for the work off the event loop; resolve with its result converted by `convert`.
    pub fn finish<J: ToNapiValue + TypeName>(
        &self,
        convert: fn(T) -> J,
    ) -> AsyncTask<Finish<T, J>> {
        AsyncTask::new(Finish {
            worker: self.clone(),
            convert,
            failure: None,
        })
    }

    pub fn op(&self) -> &'static str {
        self.op
    }
}

pub struct Finish<T, J> {
    worker: Worker<T>,
    convert: fn(T) -> J,
    failure: Option<Failure>,
}

impl<T: Send + 'static, J: ToNapiValue + TypeName> Task for Finish<T, J> {
    type Output = T;
    type JsValue = J;

    fn compute(&mut self) -> Result<T> {
        match self.worker.join() {
            Some(Ok(v)) => Ok(v),
            Some(Err(f)) => failed(&mut self.failure, f),
            None => failed(
                &mut self.failure,
                CoreError::internal("finish called twice").into(),
            ),
        }
    }

    fn resolve(&mut self, _env: Env, output: T) -> Result<J> {
        Ok((self.convert)(output))
    }

    fn reject(&mut self, env: Env, err: Error) -> Result<J> {
        rejected(&mut self.failure, &env, self.worker.op, err)
    }
}
