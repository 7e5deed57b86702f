//! Small regular files finished off the parsing thread: the parser creates each inode at its
//! name in stream order (so hardlinks, replaced names and whiteouts see what they would in a
//! serial apply) and reads its body; two threads write the body, start its write-back, and
//! set owner, mode, xattrs and times on the open fd. Nothing of the tree's shape moves off
//! the parser: a worker only ever touches the one inode it was handed.

use crate::error::{Error, Result};
use crate::filesystem::start_writeback;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::attrs::Meta;
use super::body::write_error;

/// Threads that finish files.
const THREADS: usize = 2;
/// Files waiting for a thread: with bodies of at most `MAX_BODY`, what waits stays under
/// QUEUE x MAX_BODY bytes.
const QUEUE: usize = 16;
/// Larger bodies are written by the parser itself, streamed through its buffer.
pub(super) const MAX_BODY: u64 = 512 << 10;

/// One created file to finish.
pub(super) struct Job {
    pub file: File,
    pub body: Vec<u8>,
    pub meta: Meta,
    pub shown: PathBuf,
}

struct Shared {
    /// The first failure; later jobs are dropped unfinished (the apply fails anyway).
    failed: Mutex<Option<Error>>,
    stop: AtomicBool,
}

pub(super) struct Writers {
    tx: Option<SyncSender<Job>>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Writers {
    pub fn spawn() -> Result<Writers> {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Shared {
            failed: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let mut writers = Writers {
            tx: Some(tx),
            shared,
            threads: Vec::with_capacity(THREADS),
        };
        for _ in 0..THREADS {
            let (rx, shared) = (Arc::clone(&rx), Arc::clone(&writers.shared));
            let thread = std::thread::Builder::new()
                .name("btrfs-layers-apply".into())
                .spawn(move || work(&rx, &shared))
                .map_err(|e| Error::internal(format!("spawning an apply thread: {e}")))?;
            writers.threads.push(thread);
        }
        Ok(writers)
    }

    /// Queue `job`; waits while the queue is full. Fails with the first failure of a job.
    pub fn send(&self, job: Job) -> Result<()> {
        self.check()?;
        let tx = self.tx.as_ref().expect("open until finished");
        tx.send(job)
            .map_err(|_| Error::internal("the apply threads ended early"))
    }

    /// The first failure of a job so far.
    fn check(&self) -> Result<()> {
        match &*lock(&self.shared.failed) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Wait until every queued file is finished; the first failure of a job, if any.
    pub fn finish(mut self) -> Result<()> {
        self.join();
        self.check()
    }

    fn join(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            // A panic in a job is the apply's failure, not the process's.
            if t.join().is_err() {
                lock(&self.shared.failed)
                    .get_or_insert_with(|| Error::internal("an apply thread panicked"));
            }
        }
    }
}

impl Drop for Writers {
    /// On the way out of a failed apply: what is queued is dropped, the threads joined.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.join();
    }
}

fn work(rx: &Mutex<Receiver<Job>>, shared: &Shared) {
    loop {
        let Ok(job) = lock(rx).recv() else { return };
        if shared.stop.load(Ordering::Relaxed) || lock(&shared.failed).is_some() {
            continue;
        }
        if let Err(e) = finish_file(job) {
            lock(&shared.failed).get_or_insert(e);
        }
    }
}

/// The body, its write-back started, then owner, mode, xattrs and times, in that order.
fn finish_file(job: Job) -> Result<()> {
    let Job {
        mut file,
        body,
        meta,
        shown,
    } = job;
    if !body.is_empty() {
        file.write_all(&body).map_err(|e| write_error(e, &shown))?;
        start_writeback(file.as_fd(), &shown)?;
    }
    meta.apply_to_fd(file.as_fd(), &shown)?;
    meta.times.set_on_fd(file.as_fd(), &shown)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
