//! A producer's chunks pulled by JS (`diff`, `send`): the worker writes into a channel, each
//! `next()` takes one chunk off the thread pool, and the end of the channel hands over the
//! worker's outcome: its result kept for the handle, or its error as the rejection.

use crate::error::Failure;
use crate::job::{failed, rejected};
use crate::worker::Worker;
use napi::bindgen_prelude::*;
use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

/// The consuming end of a producer's channel, and what the producer returned once it ended.
pub struct Chunks<T> {
    rx: Arc<Mutex<Receiver<Vec<u8>>>>,
    worker: Worker<T>,
    done: Arc<Mutex<Option<T>>>,
}

impl<T: Send + 'static> Chunks<T> {
    pub fn new(rx: Receiver<Vec<u8>>, worker: Worker<T>) -> Self {
        Chunks {
            rx: Arc::new(Mutex::new(rx)),
            worker,
            done: Arc::new(Mutex::new(None)),
        }
    }

    /// The next chunk, or `null` at the end; rejects with the producer's error.
    pub fn next(&self) -> AsyncTask<NextChunk<T>> {
        AsyncTask::new(NextChunk {
            rx: self.rx.clone(),
            worker: self.worker.clone(),
            done: self.done.clone(),
            failure: None,
        })
    }

    pub fn worker(&self) -> &Worker<T> {
        &self.worker
    }

    /// What the producer returned, once `next()` resolved with `null`.
    pub fn done<R>(&self, view: impl FnOnce(&T) -> R) -> Option<R> {
        self.done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(view)
    }
}

pub struct NextChunk<T> {
    rx: Arc<Mutex<Receiver<Vec<u8>>>>,
    worker: Worker<T>,
    done: Arc<Mutex<Option<T>>>,
    failure: Option<Failure>,
}

impl<T: Send + 'static> Task for NextChunk<T> {
    type Output = Option<Vec<u8>>;
    type JsValue = Option<Buffer>;

    fn compute(&mut self) -> Result<Self::Output> {
        let got = self.rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        match got {
            Ok(chunk) => Ok(Some(chunk)),
            // The producer is done: its outcome says whether this is the end or an error.
            Err(_) => match self.worker.join() {
                Some(Err(f)) => failed(&mut self.failure, f),
                Some(Ok(v)) => {
                    *self.done.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
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

/// A napi pull stream class `$name` (documented by the lines `$doc`, as `sink!` is) over
/// `Chunks<$t>`: `next`, `abort` and `progress`; its own methods go in an impl of their own.
macro_rules! pull {
    ([$($doc:literal),+] $name:ident, $t:ty) => {
        $(#[doc = $doc])+
        #[napi]
        pub struct $name {
            chunks: $crate::pull::Chunks<$t>,
        }

        #[napi]
        impl $name {
            /// The next chunk, or `null` at the end; rejects with the producer's error.
            #[napi(ts_return_type = "Promise<Buffer | null>")]
            pub fn next(&self) -> AsyncTask<$crate::pull::NextChunk<$t>> {
                self.chunks.next()
            }

            /// Stop producing; the next `next()` rejects with ABORT_ERR.
            #[napi]
            pub fn abort(&self) {
                self.chunks.worker().abort();
            }

            /// Bytes of the stream produced so far.
            #[napi(getter)]
            pub fn progress(&self) -> f64 {
                self.chunks.worker().progress()
            }
        }
    };
}
pub(crate) use pull;

/// Say "started" with an empty chunk (data chunks are never empty) at the first write, so
/// the first `next()` resolves once the producer got past its checks, or rejects with them.
pub struct Started<W: Write> {
    tx: Option<SyncSender<Vec<u8>>>,
    out: W,
}

impl<W: Write> Started<W> {
    pub fn new(tx: SyncSender<Vec<u8>>, out: W) -> Self {
        Started { tx: Some(tx), out }
    }

    fn start(&mut self) -> std::io::Result<()> {
        match self.tx.take() {
            Some(tx) if tx.send(Vec::new()).is_err() => {
                Err(std::io::Error::from_raw_os_error(libc_epipe()))
            }
            _ => Ok(()),
        }
    }
}

fn libc_epipe() -> i32 {
    32
}

impl<W: Write> Write for Started<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.start()?;
        self.out.write(data)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.start()?;
        self.out.flush()
    }
}
