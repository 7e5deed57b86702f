//! Counting a layer stream as it flows: compressed bytes in, tar bytes out, holes of sparse
//! files; reporting progress; and tripping on abort, decompression bombs and oversized headers.

use crate::control::Control;
use crate::error::{Code, Error};
use nix::errno::Errno;
use std::fmt;
use std::io::{self, BufRead, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Progress is reported at most once per this many tar bytes (and once at the end).
const PROGRESS_STEP: u64 = 1 << 20;
/// The bomb guard stays quiet until this much has come out of the decompressor.
const BOMB_FLOOR: u64 = 64 << 20;
/// Past the floor, more than this many bytes out per byte in is a bomb. Deflate cannot exceed
/// ~1032:1, so a 1100:1 guard would never fire on gzip; only streams of almost nothing but
/// zeros get here.
const BOMB_RATIO: u64 = 1000;
/// Holes of sparse files take no disk, but the tar crate hands them over as zeros to skip:
/// past this many, a stream is a bomb of time, not of space.
const MAX_HOLE_BYTES: u64 = 256 << 30;
/// Headers between two entry bodies (PAX records, GNU long names, sparse maps) may not exceed
/// this: the tar crate holds them in memory.
const MAX_HEADER_BYTES: u64 = 8 << 20;

/// Why the stream was cut short; carried through `io::Error` so the tar crate passes it on.
#[derive(Debug)]
pub(super) enum Tripped {
    Aborted,
    Bomb { out: u64, compressed: u64 },
    HeaderTooLarge,
}

impl fmt::Display for Tripped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tripped::Aborted => write!(f, "the operation was aborted"),
            Tripped::Bomb { out, compressed } => write!(
                f,
                "decompression bomb: {out} bytes out of {compressed} compressed bytes (more than {BOMB_RATIO}:1)"
            ),
            Tripped::HeaderTooLarge => write!(f, "entry headers exceed {MAX_HEADER_BYTES} bytes"),
        }
    }
}

impl std::error::Error for Tripped {}

/// `header_left` while headers are not limited.
const NO_HEADER_LIMIT: u64 = u64::MAX;

/// The counters of one apply, shared by the readers at both ends of the decompressor, which
/// may run on two threads (the inflate on one, the parser on the other).
pub(super) struct Meter<'o> {
    compressed: AtomicU64,
    expanded: AtomicU64,
    holes: AtomicU64,
    next_progress: AtomicU64,
    header_left: AtomicU64,
    control: Control<'o>,
}

impl<'o> Meter<'o> {
    pub fn new(control: Control<'o>) -> Self {
        Meter {
            compressed: AtomicU64::new(0),
            expanded: AtomicU64::new(0),
            holes: AtomicU64::new(0),
            next_progress: AtomicU64::new(PROGRESS_STEP),
            header_left: AtomicU64::new(NO_HEADER_LIMIT),
            control,
        }
    }

    /// Count the bytes consumed from the (possibly compressed) input.
    pub fn compressed<R: BufRead>(&self, inner: R) -> Compressed<'_, 'o, R> {
        Compressed { inner, meter: self }
    }

    /// Count, guard and report the decompressed tar bytes.
    pub fn expanded<R: Read>(&self, inner: R) -> Expanded<'_, 'o, R> {
        Expanded { inner, meter: self }
    }

    /// Tar bytes read so far.
    pub fn tar_bytes(&self) -> u64 {
        self.expanded.load(Relaxed)
    }

    /// While on, reads beyond MAX_HEADER_BYTES trip: on between entries, off in bodies.
    pub fn limit_headers(&self, on: bool) {
        let left = if on {
            MAX_HEADER_BYTES
        } else {
            NO_HEADER_LIMIT
        };
        self.header_left.store(left, Relaxed);
    }

    /// Zeros the tar crate made up for the holes of a sparse file: output, but not input.
    pub fn on_holes(&self, n: u64) -> io::Result<()> {
        self.holes.fetch_add(n, Relaxed);
        self.check_abort()?;
        self.check_bomb()
    }

    pub fn check_abort(&self) -> io::Result<()> {
        if self.control.aborted() {
            return Err(io::Error::other(Tripped::Aborted));
        }
        Ok(())
    }

    /// Report the final count.
    pub fn report_end(&self) {
        self.control.progress(self.expanded.load(Relaxed));
    }

    fn on_expanded(&self, n: u64) -> io::Result<()> {
        // Only the parsing thread counts tar bytes and sets the header limit: plain loads
        // and stores, no read-modify-write race.
        let total = self.expanded.load(Relaxed) + n;
        self.expanded.store(total, Relaxed);
        let left = self.header_left.load(Relaxed);
        if left != NO_HEADER_LIMIT {
            let left = left
                .checked_sub(n)
                .ok_or_else(|| io::Error::other(Tripped::HeaderTooLarge))?;
            self.header_left.store(left, Relaxed);
        }
        if total >= self.next_progress.load(Relaxed) {
            self.next_progress.store(total + PROGRESS_STEP, Relaxed);
            self.control.progress(total);
        }
        self.check_abort()?;
        self.check_bomb()
    }

    fn check_bomb(&self) -> io::Result<()> {
        let out = self.expanded.load(Relaxed);
        let compressed = self.compressed.load(Relaxed);
        if (out > BOMB_FLOOR && out > compressed.saturating_mul(BOMB_RATIO))
            || self.holes.load(Relaxed) > MAX_HOLE_BYTES
        {
            let out = out + self.holes.load(Relaxed);
            return Err(io::Error::other(Tripped::Bomb { out, compressed }));
        }
        Ok(())
    }
}

/// The buffered input, counted as the decompressor consumes it (not as it is buffered, so
/// read-ahead cannot hide a bomb).
pub(super) struct Compressed<'m, 'o, R> {
    inner: R,
    meter: &'m Meter<'o>,
}

impl<R> Compressed<'_, '_, R> {
    fn count(&self, n: usize) {
        self.meter.compressed.fetch_add(n as u64, Relaxed);
    }
}

impl<R: BufRead> Read for Compressed<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Compressed<'_, '_, R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.count(amt);
        self.inner.consume(amt);
    }
}

/// The tar stream out of the decompressor, counted and guarded.
pub(super) struct Expanded<'m, 'o, R> {
    inner: R,
    meter: &'m Meter<'o>,
}

impl<R: Read> Read for Expanded<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.meter.check_abort()?;
        let n = self.inner.read(buf)?;
        self.meter.on_expanded(n as u64)?;
        Ok(n)
    }
}

/// Turn an I/O error met while reading the stream into the crate's error: abort stays an
/// abort, the kernel's errno stays itself, anything else means the stream is malformed.
pub(super) fn stream_error(e: io::Error, shown: &Path) -> Error {
    let path = (!shown.as_os_str().is_empty()).then(|| shown.to_path_buf());
    if let Some(t) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Tripped>())
    {
        let code = match t {
            Tripped::Aborted => Code::Aborted,
            _ => Code::BadLayer,
        };
        return Error {
            code,
            syscall: "",
            op: "applyDiff",
            path,
            message: t.to_string(),
        };
    }
    match e.raw_os_error() {
        Some(errno) => Error {
            path,
            ..Error::sys(Errno::from_raw(errno), "read", shown)
        },
        None => Error {
            code: Code::BadLayer,
            syscall: "",
            op: "applyDiff",
            path,
            message: format!("malformed layer: {}", crate::tar::input_error(&e)),
        },
    }
}
