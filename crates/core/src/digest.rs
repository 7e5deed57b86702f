//! Content digests of layer blobs, as the OCI image spec defines them: the sha256 of a blob as
//! stored (its `digest`, with its `size`) and of its uncompressed tar (the `diffID`), computed
//! while the bytes flow, and checked against what a manifest or config expects.

use crate::error::{Code, Error, Result};
use nix::errno::Errno;
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

const PREFIX: &str = "sha256:";

/// A sha256 digest; shown as OCI writes it, `sha256:<64 lowercase hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Parse `sha256:<64 lowercase hex>`; EINVAL (of operation `op`, naming `what`) otherwise.
    pub fn parse(s: &str, what: &str, op: &'static str) -> Result<Digest> {
        let bad = || {
            Error::invalid(
                Errno::EINVAL,
                op,
                Path::new(""),
                format!("{what} must be 'sha256:' and 64 lowercase hex digits, got '{s}'"),
            )
        };
        let hex = s.strip_prefix(PREFIX).ok_or_else(bad)?.as_bytes();
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.chunks(2).enumerate() {
            let (hi, lo) = (
                nibble(pair[0]).ok_or_else(bad)?,
                nibble(pair[1]).ok_or_else(bad)?,
            );
            out[i] = hi << 4 | lo;
        }
        Ok(Digest(out))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PREFIX)?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What a layer blob turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digests {
    /// sha256 of the blob as given (compressed, or the tar itself).
    pub digest: Digest,
    /// Bytes of the blob as given.
    pub size: u64,
    /// sha256 of the uncompressed tar, all of it (the OCI diffID).
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: u64,
}

/// What a layer blob must be; each part unchecked when `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expect {
    pub digest: Option<Digest>,
    pub size: Option<u64>,
    pub diff_id: Option<Digest>,
}

impl Expect {
    /// ERR_DIGEST naming the first part of `got` that differs from what is expected, with
    /// both values.
    pub fn check(&self, got: &Digests, op: &'static str, shown: &Path) -> Result<()> {
        let mismatch = |why: String| Error {
            code: Code::Digest,
            syscall: "",
            op,
            path: (!shown.as_os_str().is_empty()).then(|| shown.to_path_buf()),
            message: why,
        };
        if let Some(want) = self.size.filter(|&n| n != got.size) {
            return Err(mismatch(format!(
                "size mismatch: expected {want} bytes, got {}",
                got.size
            )));
        }
        if let Some(want) = self.digest.filter(|d| *d != got.digest) {
            return Err(mismatch(format!(
                "digest mismatch: expected {want}, got {}",
                got.digest
            )));
        }
        if let Some(want) = self.diff_id.filter(|d| *d != got.diff_id) {
            return Err(mismatch(format!(
                "diffID mismatch: expected {want}, got {}",
                got.diff_id
            )));
        }
        Ok(())
    }
}

/// A reader or writer that hashes (sha256) and counts the bytes passing through it; with no
/// hasher (`passing`), it only passes them on.
pub struct Hashing<T> {
    inner: T,
    hasher: Option<Sha256>,
    count: u64,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Self {
        Hashing {
            inner,
            hasher: Some(Sha256::new()),
            count: 0,
        }
    }

    /// `new` when `hash`, else a pass-through that costs nothing.
    pub fn maybe(inner: T, hash: bool) -> Self {
        Hashing {
            inner,
            hasher: hash.then(Sha256::new),
            count: 0,
        }
    }

    fn take(&mut self, data: &[u8]) {
        if let Some(h) = self.hasher.as_mut() {
            h.update(data);
        }
        self.count += data.len() as u64;
    }

    /// Bytes passed so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The inner value, and the digest and byte count of what passed (None: not hashing).
    pub fn finish(self) -> (T, Option<(Digest, u64)>) {
        let count = self.count;
        let sum = self.hasher.map(|h| (Digest(h.finalize().into()), count));
        (self.inner, sum)
    }
}

impl<R: Read> Hashing<R> {
    /// Read (and hash) the rest of the stream, to its end.
    pub fn drain(&mut self) -> io::Result<u64> {
        io::copy(self, &mut io::sink())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.take(&buf[..n]);
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.take(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Bytes handed to the hasher thread at a time.
const BLOCK: usize = 1 << 20;
/// Blocks per stream, in flight or in use: the memory of an off-thread hash is flat, this
/// many blocks whatever the stream's length.
const BLOCKS: usize = 4;

/// Measurement only: while set, `apply_digested` and `write_digested` hash on the caller's
/// thread (with `Hashing`), as they did before the hashing moved to a thread of its own.
#[doc(hidden)]
pub static SERIAL_FOR_MEASUREMENT: AtomicBool = AtomicBool::new(false);

#[doc(hidden)]
pub fn serial_for_measurement() -> bool {
    SERIAL_FOR_MEASUREMENT.load(Ordering::Relaxed)
}

/// A sha256 on a thread of its own, fed blocks over a bounded channel; each block comes back
/// once hashed, to be filled again, so a stream needs at most `BLOCKS` of them.
///
/// The thread ends once the sending side is dropped and what was sent is hashed: `finish`
/// joins it for the digest, and `Drop` (an error, an abort, a panic unwinding) joins it too,
/// so no thread outlives the stream; that wait is for at most `BLOCKS` blocks of hashing
/// (a few ms), since the thread never blocks on anything but its own queue.
struct Hasher {
    tx: Option<SyncSender<(Arc<[u8]>, usize)>>,
    back: Receiver<Arc<[u8]>>,
    thread: Option<JoinHandle<Sha256>>,
    free: Vec<Arc<[u8]>>,
    made: usize,
    /// Blocks sent and not yet back.
    out: usize,
}

impl Hasher {
    fn spawn() -> Result<Hasher> {
        let (tx, rx) = sync_channel::<(Arc<[u8]>, usize)>(BLOCKS);
        // Unbounded, but never holds more than the BLOCKS blocks there are: sending back
        // never blocks, so the thread always gets to its end.
        let (back_tx, back) = channel();
        let thread = std::thread::Builder::new()
            .name("btrfs-layers-sha256".into())
            .spawn(move || {
                let mut sha = Sha256::new();
                for (block, len) in rx {
                    sha.update(&block[..len]);
                    // The stream gone, the block is dropped here.
                    let _ = back_tx.send(block);
                }
                sha
            })
            .map_err(|e| Error::internal(format!("cannot start a thread: {e}")))?;
        Ok(Hasher {
            tx: Some(tx),
            back,
            thread: Some(thread),
            free: Vec::new(),
            made: 0,
            out: 0,
        })
    }

    /// A block no one else holds, to fill; waits for the hasher to give one back when all are
    /// out. The caller must have dropped its own handles on blocks it sent.
    fn block(&mut self) -> io::Result<Arc<[u8]>> {
        if let Some(b) = self.free.pop() {
            return Ok(b);
        }
        // None out to wait for (one was lost to an error): a new one, never a wait forever.
        if self.made < BLOCKS || self.out == 0 {
            self.made += 1;
            return Ok(vec![0u8; BLOCK].into());
        }
        let b = self.back.recv().map_err(|_| gone())?;
        self.out -= 1;
        Ok(b)
    }

    /// Hand back an unsent block.
    fn keep(&mut self, block: Arc<[u8]>) {
        self.free.push(block);
    }

    /// Hash the first `len` bytes of `block`.
    fn send(&mut self, block: Arc<[u8]>, len: usize) -> io::Result<()> {
        let tx = self.tx.as_ref().ok_or_else(gone)?;
        tx.send((block, len)).map_err(|_| gone())?;
        self.out += 1;
        Ok(())
    }

    /// Wait for the digest of all that was sent.
    fn finish(mut self) -> Result<Digest> {
        self.tx = None;
        let thread = self.thread.take().expect("joined only here or in drop");
        let sha = thread
            .join()
            .map_err(|_| Error::internal("the sha256 thread panicked"))?;
        Ok(Digest(sha.finalize().into()))
    }
}

impl Drop for Hasher {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn gone() -> io::Error {
    io::Error::other("the sha256 thread stopped")
}

/// Mutable access to a block that must be ours alone.
fn owned(block: &mut Arc<[u8]>) -> io::Result<&mut [u8]> {
    Arc::get_mut(block).ok_or_else(|| io::Error::other("internal: a hash block is shared"))
}

/// A buffered reader that hashes (sha256) and counts all it reads from `inner` on a thread of
/// its own: each block read is shared with that thread (no copy) while it is served from here.
/// It replaces a `BufReader`: everything read from `inner` is hashed, consumed or not, so
/// read to the end (`drain`) for the digest of the whole stream.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    cur: Option<Arc<[u8]>>,
    pos: usize,
    len: usize,
    count: u64,
    eof: bool,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Result<Self> {
        Ok(HashingReader {
            inner,
            hasher: Hasher::spawn()?,
            cur: None,
            pos: 0,
            len: 0,
            count: 0,
            eof: false,
        })
    }

    /// Bytes read from `inner` so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    fn fill(&mut self) -> io::Result<()> {
        // Ours dropped first, so the block comes back unshared once hashed.
        self.cur = None;
        (self.pos, self.len) = (0, 0);
        if self.eof {
            return Ok(());
        }
        let mut block = self.hasher.block()?;
        let buf = owned(&mut block)?;
        // One read, as a BufReader does: never wait for more input than is there, or a
        // stalled stream would hold back bytes the apply could act on (and its abort check).
        let n = loop {
            match self.inner.read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.hasher.keep(block);
                    return Err(e);
                }
            }
        };
        if n == 0 {
            self.eof = true;
            self.hasher.keep(block);
            return Ok(());
        }
        self.hasher.send(block.clone(), n)?;
        self.count += n as u64;
        self.cur = Some(block);
        self.len = n;
        Ok(())
    }

    /// Read (and hash) the rest of the stream, to its end; returns the bytes it skipped.
    pub fn drain(&mut self) -> io::Result<u64> {
        let mut skipped = 0;
        loop {
            let n = self.fill_buf()?.len();
            if n == 0 {
                return Ok(skipped);
            }
            self.consume(n);
            skipped += n as u64;
        }
    }

    /// The inner reader, and the digest and byte count of all read from it.
    pub fn finish(self) -> Result<(R, Digest, u64)> {
        let HashingReader {
            inner,
            hasher,
            count,
            cur,
            ..
        } = self;
        drop(cur);
        Ok((inner, hasher.finish()?, count))
    }
}

impl<R: Read> BufRead for HashingReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.len {
            self.fill()?;
        }
        Ok(match &self.cur {
            Some(b) => &b[self.pos..self.len],
            None => &[],
        })
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.len);
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// A buffered writer that hashes (sha256) and counts all written through it on a thread of
/// its own: bytes are gathered into blocks, each written to `inner` and then shared with that
/// thread (no copy). `flush` and `finish` pass on what is gathered.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Hasher,
    cur: Option<Arc<[u8]>>,
    len: usize,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Result<Self> {
        Ok(HashingWriter {
            inner,
            hasher: Hasher::spawn()?,
            cur: None,
            len: 0,
            count: 0,
        })
    }

    /// Bytes written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Write the gathered block to `inner`, then hash it.
    fn ship(&mut self) -> io::Result<()> {
        let Some(block) = self.cur.take() else {
            return Ok(());
        };
        let len = std::mem::take(&mut self.len);
        if len == 0 {
            self.hasher.keep(block);
            return Ok(());
        }
        if let Err(e) = self.inner.write_all(&block[..len]) {
            self.hasher.keep(block);
            return Err(e);
        }
        self.hasher.send(block, len)
    }

    /// Pass on what is gathered (a failed write is `on_write` of its error); the inner writer
    /// (not flushed), and the digest and byte count of all written.
    pub fn finish(mut self, on_write: impl FnOnce(io::Error) -> Error) -> Result<(W, Digest, u64)> {
        self.ship().map_err(on_write)?;
        let HashingWriter {
            inner,
            hasher,
            count,
            ..
        } = self;
        Ok((inner, hasher.finish()?, count))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let mut block = match self.cur.take() {
            Some(b) => b,
            None => self.hasher.block()?,
        };
        let n = data.len().min(BLOCK - self.len);
        owned(&mut block)?[self.len..self.len + n].copy_from_slice(&data[..n]);
        self.cur = Some(block);
        self.len += n;
        self.count += n as u64;
        if self.len == BLOCK {
            self.ship()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.ship()?;
        self.inner.flush()
    }
}

/// Whether and where a stream is hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only counted.
    No,
    /// On the thread that moves the bytes (`Hashing`).
    Serial,
    /// On a thread of its own (`HashingReader`, `HashingWriter`).
    OffThread,
}

impl Mode {
    /// Hashed off the caller's thread, unless measuring the serial way; or not at all.
    pub fn hashing(hash: bool) -> Mode {
        match (hash, serial_for_measurement()) {
            (false, _) => Mode::No,
            (true, false) => Mode::OffThread,
            (true, true) => Mode::Serial,
        }
    }
}

/// A writer that counts, and hashes as its `Mode` says.
pub enum ModeWriter<W: Write> {
    Serial(Hashing<W>),
    OffThread(HashingWriter<W>),
}

impl<W: Write> ModeWriter<W> {
    pub fn new(inner: W, mode: Mode) -> Result<Self> {
        Ok(match mode {
            Mode::No => ModeWriter::Serial(Hashing::maybe(inner, false)),
            Mode::Serial => ModeWriter::Serial(Hashing::new(inner)),
            Mode::OffThread => ModeWriter::OffThread(HashingWriter::new(inner)?),
        })
    }

    /// Bytes written so far.
    pub fn count(&self) -> u64 {
        match self {
            ModeWriter::Serial(w) => w.count(),
            ModeWriter::OffThread(w) => w.count(),
        }
    }

    /// Pass on what is gathered (a failed write is `on_write` of its error); the inner
    /// writer, and the digest and byte count of all written (None: not hashed).
    pub fn finish(
        self,
        on_write: impl FnOnce(io::Error) -> Error,
    ) -> Result<(W, Option<(Digest, u64)>)> {
        match self {
            ModeWriter::Serial(w) => Ok(w.finish()),
            ModeWriter::OffThread(w) => {
                let (inner, digest, n) = w.finish(on_write)?;
                Ok((inner, Some((digest, n))))
            }
        }
    }
}

impl<W: Write> Write for ModeWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            ModeWriter::Serial(w) => w.write(data),
            ModeWriter::OffThread(w) => w.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ModeWriter::Serial(w) => w.flush(),
            ModeWriter::OffThread(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_shows_oci_digests() {
        let d = Digest::parse(EMPTY, "digest", "applyLayer").unwrap();
        assert_eq!(d.to_string(), EMPTY);
        for bad in [
            "",
            "sha256:",
            &EMPTY[..EMPTY.len() - 1],
            &EMPTY.to_uppercase(),
            &EMPTY.replace("sha256", "sha512"),
            &format!("{EMPTY}0"),
        ] {
            let e = Digest::parse(bad, "verify.digest", "applyLayer").unwrap_err();
            assert_eq!(e.code_str(), "EINVAL", "{bad}");
            assert!(e.message.contains("verify.digest"));
        }
    }

    #[test]
    fn hashes_what_passes_either_way() {
        let mut r = Hashing::new(&b"abc"[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        let (_, sum) = r.finish();
        let (d, n) = sum.unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            d.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut w = Hashing::new(Vec::new());
        w.write_all(b"").unwrap();
        assert_eq!(w.finish().1.unwrap().0.to_string(), EMPTY);
        assert_eq!(Hashing::maybe(Vec::<u8>::new(), false).finish().1, None);
    }

    fn sha(data: &[u8]) -> Digest {
        Digest(Sha256::digest(data).into())
    }

    /// Hasher threads of this process (the kernel keeps 15 bytes of a thread's name).
    fn hashers() -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.trim_end() == "btrfs-layers-sh")
            .count()
    }

    /// Whether `hashers()` comes to `n` within a second (a thread names itself once it runs,
    /// and leaves /proc a moment after it is joined).
    fn hashers_come_to(n: usize) -> bool {
        (0..100).any(|_| {
            let now = hashers();
            if now != n {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            now == n
        })
    }

    /// Tests that start hashers run one at a time, so `hashers` counts only theirs.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn alone() -> std::sync::MutexGuard<'static, ()> {
        ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reader handing out at most `step` bytes a call, failing once past `fail_at`.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
        fail_at: Option<usize>,
        at: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.fail_at.is_some_and(|f| self.at >= f) {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            let n = buf.len().min(self.step).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 253) as u8).collect()
    }

    #[test]
    fn off_thread_hashes_equal_serial_ones_for_any_split() {
        let _alone = alone();
        for len in [0, 1, 511, BLOCK - 1, BLOCK, BLOCK + 1, 9 * BLOCK + 12345] {
            let d = data(len);
            for step in [1 << 9, 100_000, 3 * BLOCK] {
                if step == 1 << 9 && len > 2 * BLOCK {
                    continue;
                }
                // Read in odd sizes, then to the end.
                let src = Trickle {
                    data: &d,
                    step,
                    fail_at: None,
                    at: 0,
                };
                let mut r = HashingReader::new(src).unwrap();
                let mut got = vec![0u8; len.min(777)];
                r.read_exact(&mut got).unwrap();
                assert_eq!(got, d[..got.len()]);
                r.drain().unwrap();
                let (_, digest, n) = r.finish().unwrap();
                assert_eq!((digest, n), (sha(&d), len as u64), "{len} by {step}");

                let mut w = HashingWriter::new(Vec::new()).unwrap();
                for chunk in d.chunks(step) {
                    w.write_all(chunk).unwrap();
                }
                let (out, digest, n) = w.finish(|e| panic!("{e}")).unwrap();
                assert_eq!((digest, n), (sha(&d), len as u64));
                assert_eq!(out, d);
            }
        }
    }

    #[test]
    fn a_read_error_comes_after_the_bytes_before_it_and_no_thread_is_left() {
        let _alone = alone();
        assert!(hashers_come_to(0));
        let d = data(5 * BLOCK);
        let src = Trickle {
            data: &d,
            step: 100_000,
            fail_at: Some(3 * BLOCK + 5),
            at: 0,
        };
        let mut r = HashingReader::new(src).unwrap();
        assert!(hashers_come_to(1));
        let mut got = Vec::new();
        let e = r.read_to_end(&mut got).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
        assert_eq!(got, d[..got.len()]);
        assert!(got.len() >= 3 * BLOCK);
        drop(r);
        // Dropped mid-stream, unfinished: the hasher thread is joined, not left behind.
        let mut w = HashingWriter::new(io::sink()).unwrap();
        w.write_all(&d).unwrap();
        drop(w);
        assert!(hashers_come_to(0), "no hasher thread outlives its stream");
    }

    /// Chunks from a channel, as the node binding's input is; blocks while none is there.
    struct Chunks(std::sync::mpsc::Receiver<Vec<u8>>, Vec<u8>);

    impl Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.1.is_empty() {
                match self.0.recv() {
                    Ok(c) => self.1 = c,
                    Err(_) => return Ok(0),
                }
            }
            let n = buf.len().min(self.1.len());
            buf[..n].copy_from_slice(&self.1[..n]);
            self.1.drain(..n);
            Ok(n)
        }
    }

    #[test]
    fn what_has_come_is_served_without_waiting_for_more() {
        let _alone = alone();
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(b"head".to_vec()).unwrap();
        let mut r = HashingReader::new(Chunks(rx, Vec::new())).unwrap();
        // The stream stalls after 4 bytes: those 4 are served (an apply can check its abort).
        assert_eq!(r.fill_buf().unwrap(), b"head");
        r.consume(4);
        tx.send(b"tail".to_vec()).unwrap();
        drop(tx);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"tail");
        let (_, d, n) = r.finish().unwrap();
        assert_eq!((d, n), (sha(b"headtail"), 8));
    }

    #[test]
    fn memory_is_a_few_blocks_whatever_the_length() {
        let _alone = alone();
        let d = data(BLOCK);
        let mut w = HashingWriter::new(io::sink()).unwrap();
        for _ in 0..64 {
            w.write_all(&d).unwrap();
        }
        assert!(w.hasher.made <= BLOCKS);
        let (_, digest, n) = w.finish(|e| panic!("{e}")).unwrap();
        assert_eq!(n, 64 * BLOCK as u64);
        let mut serial = Hashing::new(io::sink());
        (0..64).for_each(|_| serial.write_all(&d).unwrap());
        assert_eq!(serial.finish().1.unwrap().0, digest);
        let src = io::repeat(7).take(64 * BLOCK as u64);
        let mut r = HashingReader::new(src).unwrap();
        r.drain().unwrap();
        assert!(r.hasher.made <= BLOCKS);
    }

    #[test]
    fn a_mismatch_names_the_part_and_both_values() {
        let d = Digest::parse(EMPTY, "d", "t").unwrap();
        let other = Digest([7; 32]);
        let got = Digests {
            digest: d,
            size: 10,
            diff_id: d,
            uncompressed_size: 10,
        };
        let ok = Expect {
            digest: Some(d),
            size: Some(10),
            diff_id: Some(d),
        };
        assert!(ok.check(&got, "applyLayer", Path::new("")).is_ok());
        for (expect, part) in [
            (
                Expect {
                    size: Some(11),
                    ..ok
                },
                "size mismatch: expected 11 bytes, got 10",
            ),
            (
                Expect {
                    digest: Some(other),
                    ..ok
                },
                "digest mismatch",
            ),
            (
                Expect {
                    diff_id: Some(other),
                    ..ok
                },
                "diffID mismatch",
            ),
        ] {
            let e = expect
                .check(&got, "applyLayer", Path::new("/x"))
                .unwrap_err();
            assert_eq!(e.code_str(), "ERR_DIGEST");
            assert!(e.message.starts_with(part), "{}", e.message);
            if part != "size mismatch: expected 11 bytes, got 10" {
                assert!(e.message.contains(&other.to_string()) && e.message.contains(EMPTY));
            }
        }
    }
}
