//! Applying an OCI layer tar to a layer root, confined to it whatever the stream holds.
//!
//! Every entry's parent directory is resolved with openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV), so symlinks of the layer resolve as if its root
//! were `/` and no mount inside is crossed; the final name is then only ever handled with
//! `*at` calls on that directory fd that do not follow it. What sits at a name is replaced,
//! never written through. The tar crate parses; it never touches the filesystem.

pub(crate) mod attrs;
mod body;
mod create;
mod dir_times;
mod inflate;
mod kind;
mod meter;
pub(crate) mod name;
mod parents;
mod remove;
mod whiteout;
mod writers;

use crate::control::Control;
use crate::digest::{serial_for_measurement, Digest, Digests, Hashing, HashingReader};
use crate::error::{Context, Error, Result};
use crate::idmap::IdMapping;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use self::attrs::Meta;
use self::dir_times::DirTimes;
use self::kind::Kind;
use self::meter::{stream_error, Meter};
use self::name::{normalize, shown, split, Whiteout};
use self::parents::Parents;
use self::remove::reopen_listing;
use self::whiteout::{Hider, Made};
use self::writers::Writers;
use super::compress::{decompressing_reader, Compression};

/// Bytes read from the input at a time.
const INPUT_BUFFER: usize = 256 << 10;
/// Bytes of an entry body copied at a time.
const BODY_BUFFER: usize = 256 << 10;
/// Size of a tar block: the end-of-archive marker is (at least) one block of zeros.
const BLOCK: u64 = 512;

pub struct ApplyOptions<'a> {
    /// Tar ids are container ids: mapped with `to_host`.
    pub uids: &'a IdMapping,
    pub gids: &'a IdMapping,
    /// Abort: checked between entries and during file bodies (`Code::Aborted`). Progress:
    /// the cumulative uncompressed tar bytes read, at most every ~1 MiB and at the end.
    pub control: Control<'a>,
}

/// Apply the (possibly compressed) tar stream `input` to the directory `root` (an O_DIRECTORY fd of the layer root).
/// Returns the bytes applied: the sum of the sizes of regular-file bodies written (as Docker's ApplyLayer counts).
///
/// Errors: ERR_BAD_LAYER for a malformed or hostile stream, ERR_ID_MAPPING for an id outside
/// the maps, ABORT_ERR once the caller aborts, the errno for what the kernel refused. On error
/// the layer is left part-applied: the caller applies into a snapshot it can throw away.
pub fn apply(root: BorrowedFd<'_>, input: impl Read, opts: &ApplyOptions<'_>) -> Result<u64> {
    let source = BufReader::with_capacity(INPUT_BUFFER, input);
    apply_stream(root, source, opts, TarHash::No).map(|(applied, _)| applied)
}

/// `apply`, also computing in the same pass the digests of the input as given (the blob) and
/// of the uncompressed tar (the diffID), each over the whole stream to its end: bytes after
/// the tar's end-of-archive marker, and after the last compressed frame, count too.
///
/// The hashing runs on threads of its own (one per stream, each joined before this returns,
/// on success or not), overlapping the apply: the input is read in blocks shared with the
/// blob's hasher, the decompressed tar in blocks shared with the diffID's.
pub fn apply_digested(
    root: BorrowedFd<'_>,
    input: impl Read,
    opts: &ApplyOptions<'_>,
) -> Result<(u64, Digests)> {
    if serial_for_measurement() {
        return apply_digested_serial(root, input, opts);
    }
    let mut blob = HashingReader::new(input)?;
    let (applied, tar) = apply_stream(root, &mut blob, opts, TarHash::OffThread)?;
    blob.drain().map_err(|e| stream_error(e, Path::new("")))?;
    let (_, digest, size) = blob.finish()?;
    Ok((applied, digests(digest, size, tar)))
}

/// `apply_digested` as it was: hashing on this thread, in series with the apply. Kept for
/// measuring against (`digest::SERIAL_FOR_MEASUREMENT`).
fn apply_digested_serial(
    root: BorrowedFd<'_>,
    input: impl Read,
    opts: &ApplyOptions<'_>,
) -> Result<(u64, Digests)> {
    let mut blob = Hashing::new(input);
    let source = BufReader::with_capacity(INPUT_BUFFER, &mut blob);
    let (applied, tar) = apply_stream(root, source, opts, TarHash::Serial)?;
    blob.drain().map_err(|e| stream_error(e, Path::new("")))?;
    let (_, sum) = blob.finish();
    let (digest, size) = sum.expect("hashing");
    Ok((applied, digests(digest, size, tar)))
}

fn digests(digest: Digest, size: u64, tar: Option<(Digest, u64)>) -> Digests {
    // A plain tar is its own blob: hashed once.
    let (diff_id, uncompressed_size) = tar.unwrap_or((digest, size));
    Digests {
        digest,
        size,
        diff_id,
        uncompressed_size,
    }
}

/// Whether and how the decompressed tar is hashed (a plain one never is: it is the blob).
#[derive(Clone, Copy, PartialEq, Eq)]
enum TarHash {
    No,
    Serial,
    OffThread,
}

/// The decompressed tar, hashed as `TarHash` says.
enum TarReader<R: Read> {
    Plain(R),
    Serial(Hashing<R>),
    OffThread(HashingReader<R>),
}

impl<R: Read> TarReader<R> {
    fn new(inner: R, how: TarHash) -> Result<Self> {
        Ok(match how {
            TarHash::No => TarReader::Plain(inner),
            TarHash::Serial => TarReader::Serial(Hashing::new(inner)),
            TarHash::OffThread => TarReader::OffThread(HashingReader::new(inner)?),
        })
    }

    /// The digest and size of all read (the whole stream once drained); None: not hashed.
    fn finish(self) -> Result<Option<(Digest, u64)>> {
        Ok(match self {
            TarReader::Plain(_) => None,
            TarReader::Serial(h) => h.finish().1,
            TarReader::OffThread(h) => {
                let (_, digest, size) = h.finish()?;
                Some((digest, size))
            }
        })
    }
}

impl<R: Read> Read for TarReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            TarReader::Plain(r) => r.read(buf),
            TarReader::Serial(r) => r.read(buf),
            TarReader::OffThread(r) => r.read(buf),
        }
    }
}

/// Measurement only: while set, a compressed stream is inflated on the parsing thread, in
/// series with the apply, as before `inflate::overlapped`.
#[doc(hidden)]
pub static INFLATE_IN_SERIES_FOR_MEASUREMENT: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The one apply pass over the buffered input `source`; the digest of a decompressed tar
/// when `hash_tar` says so (None for a plain one). A compressed stream is inflated on this
/// thread while another parses and applies it (`inflate::overlapped`).
fn apply_stream(
    root: BorrowedFd<'_>,
    source: impl BufRead,
    opts: &ApplyOptions<'_>,
    hash_tar: TarHash,
) -> Result<(u64, Option<(Digest, u64)>)> {
    let meter = Meter::new(opts.control);
    let (compression, plain) = decompressing_reader(meter.compressed(source))?;
    if compression == Compression::None {
        return Ok((apply_tar(root, plain, opts, &meter, true)?, None));
    }
    let mut tar = TarReader::new(plain, hash_tar)?;
    if INFLATE_IN_SERIES_FOR_MEASUREMENT.load(std::sync::atomic::Ordering::Relaxed) {
        let applied = apply_tar(root, &mut tar, opts, &meter, false)?;
        return Ok((applied, tar.finish()?));
    }
    let applied = inflate::overlapped(&mut tar, &meter, |inflated| {
        apply_tar(root, inflated, opts, &meter, false)
    })?;
    Ok((applied, tar.finish()?))
}

/// Parse the tar `plain` and apply it, reading it to its end; `needs_marker`: a stream that
/// just runs out is truncated (a compressed one has its own end to check instead).
fn apply_tar<'o>(
    root: BorrowedFd<'_>,
    plain: impl Read,
    opts: &'o ApplyOptions<'o>,
    meter: &Meter<'o>,
    needs_marker: bool,
) -> Result<u64> {
    let mut archive = ::tar::Archive::new(meter.expanded(plain));
    let mut applier = Applier::new(root, opts, meter)?;
    let ended = applier.apply_entries(&mut archive)?;
    if !ended && needs_marker {
        return Err(bad_layer(
            Path::new(""),
            "truncated: the stream ends without an end-of-archive marker",
        ));
    }
    drain(archive.into_inner())?;
    // Every file finished before the directories get their times and the caller syncs.
    let Applier {
        mut parents,
        dir_times,
        applied,
        writers,
        ..
    } = applier;
    writers.finish()?;
    dir_times.apply(&mut parents)?;
    meter.report_end();
    Ok(applied)
}

/// The state of one apply.
struct Applier<'o, 'm> {
    opts: &'o ApplyOptions<'o>,
    meter: &'m Meter<'o>,
    parents: Parents,
    made: Made,
    dir_times: DirTimes,
    applied: u64,
    buf: Vec<u8>,
    writers: Writers,
}

impl<'o, 'm> Applier<'o, 'm> {
    fn new(root: BorrowedFd<'_>, opts: &'o ApplyOptions<'o>, meter: &'m Meter<'o>) -> Result<Self> {
        // A fresh fd of our own: fchown and friends need one that is not O_PATH.
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let root = openat(root, ".", flags, Mode::empty()).at("openat", Path::new("."))?;
        let owner = opts
            .uids
            .to_host(0)
            .and_then(|u| Ok((u, opts.gids.to_host(0)?)));
        let parents = Parents::new(root, owner)?;
        Ok(Applier {
            opts,
            meter,
            made: Made::new(parents.root_id()),
            parents,
            dir_times: DirTimes::default(),
            applied: 0,
            buf: vec![0; BODY_BUFFER],
            writers: Writers::spawn()?,
        })
    }

    /// Apply entries in stream order; true when the stream ended with an end-of-archive
    /// marker rather than just running out.
    fn apply_entries<R: Read>(&mut self, archive: &mut ::tar::Archive<R>) -> Result<bool> {
        let mut entries = archive
            .entries()
            .map_err(|e| stream_error(e, Path::new("")))?;
        let mut last = Vec::new();
        loop {
            self.meter
                .check_abort()
                .map_err(|e| stream_error(e, shown(&last)))?;
            let before = self.meter.tar_bytes();
            self.meter.limit_headers(true);
            let next = entries.next();
            self.meter.limit_headers(false);
            let mut entry = match next {
                None => return Ok(self.meter.tar_bytes() - before >= BLOCK),
                Some(entry) => entry.map_err(|e| stream_error(e, shown(&last)))?,
            };
            last = normalize(&entry.path_bytes())?;
            self.apply_entry(&mut entry, &last)?;
            body::skip_body(&mut entry, self.meter, &mut self.buf, shown(&last))?;
        }
    }

    fn apply_entry<R: Read>(&mut self, entry: &mut ::tar::Entry<'_, R>, path: &[u8]) -> Result<()> {
        let kind = Kind::of(entry, shown(path))?;
        if matches!(kind, Kind::Skip) {
            return Ok(());
        }
        if path.is_empty() {
            return self.apply_root(entry, kind);
        }
        let (dir_path, name) = split(path);
        match name::whiteout(name, shown(path))? {
            Whiteout::No => {}
            Whiteout::AufsMeta => return Ok(()),
            Whiteout::Opaque => return self.opaque(dir_path),
            Whiteout::Of(hidden) => return self.whiteout(dir_path, hidden),
        }
        if let Kind::Hardlink(target) = &kind {
            return self.make_hardlink(path, target);
        }
        let meta = Meta::read(entry, self.opts.uids, self.opts.gids, shown(path))?;
        let dir = self.parents.open(dir_path, true)?;
        self.dir_times.touch(dir_path, &dir)?;
        let fd = dir.fd.as_fd();
        match kind {
            Kind::File { sparse } => {
                self.applied += self.make_file(fd, path, entry, sparse, meta)?
            }
            Kind::Dir => self.make_dir(fd, path, &meta)?,
            Kind::Symlink(target) => self.make_symlink(fd, path, &target, &meta)?,
            Kind::Node(kind, dev) => self.make_node(fd, path, kind, dev, &meta)?,
            Kind::Hardlink(_) | Kind::Skip => unreachable!("handled above"),
        }
        self.made.record(&dir, name, shown(path))
    }

    /// The root entry (`.`, `./`, `/`) must be a directory; only its metadata applies.
    fn apply_root<R: Read>(&mut self, entry: &mut ::tar::Entry<'_, R>, kind: Kind) -> Result<()> {
        if !matches!(kind, Kind::Dir) {
            return Err(bad_layer(
                Path::new("."),
                "the root entry is not a directory",
            ));
        }
        let meta = Meta::read(entry, self.opts.uids, self.opts.gids, Path::new("."))?;
        meta.apply_to_fd(self.parents.root(), Path::new("."))?;
        self.dir_times.record(b"", meta.times);
        Ok(())
    }

    /// `.wh.<hidden>` in `dir_path`: the lower `hidden` goes.
    fn whiteout(&mut self, dir_path: &[u8], hidden: &[u8]) -> Result<()> {
        let dir = self.parents.open(dir_path, true)?;
        self.dir_times.touch(dir_path, &dir)?;
        self.made.keep(&dir, shown(dir_path))?;
        let hider = Hider {
            made: &self.made,
            control: self.opts.control,
        };
        hider.hide(dir.fd.as_fd(), dir.id, dir_path, hidden)?;
        self.parents.forget();
        Ok(())
    }

    /// `.wh..wh..opq` in `dir_path`: every lower entry of the directory goes.
    fn opaque(&mut self, dir_path: &[u8]) -> Result<()> {
        let dir = self.parents.open(dir_path, true)?;
        self.dir_times.touch(dir_path, &dir)?;
        self.made.keep(&dir, shown(dir_path))?;
        let listing = reopen_listing(dir.fd.as_fd(), shown(dir_path))?;
        let hider = Hider {
            made: &self.made,
            control: self.opts.control,
        };
        hider.hide_children(listing, dir.id, dir_path)?;
        self.parents.forget();
        Ok(())
    }
}

/// Read what follows the end-of-archive marker, so that a compressed stream's trailer (gzip
/// CRC and length, the end of a zstd frame) is checked and the producer is not left blocked.
fn drain(mut rest: impl Read) -> Result<()> {
    std::io::copy(&mut rest, &mut std::io::sink())
        .map(drop)
        .map_err(|e| stream_error(e, Path::new("")))
}

/// A malformed or hostile stream, about the entry at `shown`.
fn bad_layer(shown: &Path, why: impl Into<String>) -> Error {
    Error::bad_layer("applyDiff", shown, why)
}
