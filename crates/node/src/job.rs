//! One AsyncTask for every call: runs a core closure on the libuv pool, turns a panic into an
//! error instead of an abort, and rejects with the core error as a JS object (error.rs).

use crate::error::Failure;
use napi::bindgen_prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};

type Work<R> = Box<dyn FnOnce() -> btrfs_layers_core::Result<R> + Send>;

pub struct Job<R: Send + 'static> {
    /// The core operation, named on errors that do not name a more precise one.
    op: &'static str,
    work: Option<Work<R>>,
    failure: Option<Failure>,
}

impl<R: ToNapiValue + TypeName + Send + 'static> Job<R> {
    pub fn new(
        op: &'static str,
        f: impl FnOnce() -> btrfs_layers_core::Result<R> + Send + 'static,
    ) -> AsyncTask<Self> {
        AsyncTask::new(Job {
            op,
            work: Some(Box::new(f)),
            failure: None,
        })
    }
}

/// Keep `failure` for `reject`, which has the `Env` to build the JS error.
pub fn failed<T>(slot: &mut Option<Failure>, failure: Failure) -> Result<T> {
    *slot = Some(failure);
    Err(Error::from_status(Status::GenericFailure))
}

/// The JS error for what `compute` kept, or napi's own error when it kept none.
pub fn rejected<T>(
    slot: &mut Option<Failure>,
    env: &Env,
    op: &'static str,
    err: Error,
) -> Result<T> {
    match slot.take() {
        Some(f) => Err(f.into_js(env, op)),
        None => Err(err),
    }
}

impl<R: ToNapiValue + TypeName + Send + 'static> Task for Job<R> {
    type Output = R;
    type JsValue = R;

    fn compute(&mut self) -> Result<R> {
        let Some(work) = self.work.take() else {
            return failed(
                &mut self.failure,
                btrfs_layers_core::Error::internal("job ran twice").into(),
            );
        };
        match catch_unwind(AssertUnwindSafe(work)) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => failed(&mut self.failure, e.into()),
            Err(_) => failed(&mut self.failure, Failure::panicked()),
        }
    }

    fn resolve(&mut self, _env: Env, output: R) -> Result<R> {
        Ok(output)
    }

    fn reject(&mut self, env: Env, err: Error) -> Result<R> {
        rejected(&mut self.failure, &env, self.op, err)
    }
}
