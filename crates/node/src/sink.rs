//! The pushing end of a native consumer (applyDiff, applyLayer, receive): chunks queued for
//! its thread through a bounded channel, and the handle classes over it, made by `sink!`
//! since napi classes cannot be generic.

use crate::job::Job;
use napi::bindgen_prelude::*;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};

/// The pushing end of a consumer's input: chunks queued for its thread.
#[derive(Clone)]
pub struct Input {
    tx: Arc<Mutex<Option<SyncSender<Vec<u8>>>>>,
}

impl Input {
    /// `None`: the consumer reads a file itself; nothing is pushed.
    pub fn new(tx: Option<SyncSender<Vec<u8>>>) -> Self {
        Input {
            tx: Arc::new(Mutex::new(tx)),
        }
    }

    fn sender(&self) -> std::sync::MutexGuard<'_, Option<SyncSender<Vec<u8>>>> {
        self.tx.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn write(&self, op: &'static str, chunk: Buffer) -> AsyncTask<Job<bool>> {
        let tx = self.sender().clone();
        let data = chunk.to_vec();
        Job::new(op, move || Ok(tx.is_some_and(|tx| tx.send(data).is_ok())))
    }

    pub fn try_write(&self, chunk: Buffer) -> bool {
        self.sender()
            .as_ref()
            .is_some_and(|tx| tx.try_send(chunk.to_vec()).is_ok())
    }

    /// End of input.
    pub fn close(&self) {
        self.sender().take();
    }
}

/// A napi sink class `$name` (documented by the lines `$doc`: napi reads doc comments passed
/// through a macro as raw text) over `Input` and a `Worker<$t>` whose result JS gets as `$js`
/// (through `$convert`, typed `$ts` in the .d.ts); its errors name operation `$op`.
macro_rules! sink {
    ([$($doc:literal),+] $name:ident, $op:literal, $t:ty, $js:ty, $convert:path, $ts:literal, $progress:literal) => {
        $(#[doc = $doc])+
        #[napi]
        pub struct $name {
            input: $crate::sink::Input,
            worker: $crate::worker::Worker<$t>,
        }

        #[napi]
        impl $name {
            /// Hand a chunk to the consumer; resolves when it is queued (backpressure) with
            /// `true`, or `false` when the consumer has stopped (`finish` tells why). The bytes
            /// are copied before this returns: the caller may reuse `chunk` at once.
            #[napi(ts_return_type = "Promise<boolean>")]
            pub fn write(&self, chunk: Buffer) -> AsyncTask<$crate::job::Job<bool>> {
                self.input.write($op, chunk)
            }

            /// Queue a chunk without waiting: `true` when queued, `false` when the queue is full
            /// (use `write`, which waits) or the consumer has stopped. Saves a thread-pool round
            /// trip per chunk. As with `write`, the bytes are copied before this returns.
            #[napi(js_name = "tryWrite")]
            pub fn try_write(&self, chunk: Buffer) -> bool {
                self.input.try_write(chunk)
            }

            /// End of input: wait for the consumer and resolve with its result.
            #[napi(ts_return_type = $ts)]
            pub fn finish(&self) -> AsyncTask<$crate::worker::Finish<$t, $js>> {
                self.input.close();
                self.worker.finish($convert)
            }

            /// Stop: the consumer ends with ABORT_ERR and keeps nothing of its work.
            #[napi]
            pub fn abort(&self) {
                self.worker.abort();
                self.input.close();
            }

            #[doc = $progress]
            #[napi(getter)]
            pub fn progress(&self) -> f64 {
                self.worker.progress()
            }
        }
    };
}
pub(crate) use sink;
