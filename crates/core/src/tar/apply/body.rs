//! Entry bodies, streamed through one fixed buffer: memory stays flat whatever the file size.
//! Holes of GNU sparse entries stay holes.

use crate::error::{Context, Error, Result};
use nix::errno::Errno;
use nix::unistd::{ftruncate, lseek, Whence};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use super::bad_layer;
use super::meter::{stream_error, Meter};

/// Copy the body of `entry` into `file`; returns its size. A body shorter than its header
/// says is ERR_BAD_LAYER.
pub(super) fn write_body<R: Read>(
    entry: &mut ::tar::Entry<'_, R>,
    file: &mut File,
    sparse: bool,
    meter: &Meter<'_>,
    buf: &mut [u8],
    shown: &Path,
) -> Result<u64> {
    let size = entry.size();
    let mut done = 0u64;
    loop {
        let (n, from_stream) = read_counted(entry, meter, buf, shown)?;
        if n == 0 {
            break;
        }
        if sparse && from_stream == 0 {
            let skip = i64::try_from(n).map_err(|_| Error::internal("chunk larger than i64"))?;
            lseek(&*file, skip, Whence::SeekCur).at("lseek", shown)?;
        } else {
            file.write_all(&buf[..n])
                .map_err(|e| write_error(e, shown))?;
        }
        done += n as u64;
    }
    if done != size {
        return Err(truncated(shown, done, size));
    }
    if sparse {
        // A trailing hole was only skipped over: give the file its length.
        let len = i64::try_from(size).map_err(|_| bad_layer(shown, "sparse size out of range"))?;
        ftruncate(&*file, len).at("ftruncate", shown)?;
    }
    Ok(done)
}

/// Read the whole body of `entry` (of at most `writers::MAX_BODY` bytes) into memory. A body
/// shorter than its header says is ERR_BAD_LAYER.
pub(super) fn read_body<R: Read>(
    entry: &mut ::tar::Entry<'_, R>,
    meter: &Meter<'_>,
    shown: &Path,
) -> Result<Vec<u8>> {
    let size = usize::try_from(entry.size()).map_err(|_| bad_layer(shown, "size out of range"))?;
    let mut body = vec![0; size];
    let mut done = 0;
    while done < size {
        let n = read_counted(entry, meter, &mut body[done..], shown)?.0;
        if n == 0 {
            return Err(truncated(shown, done as u64, size as u64));
        }
        done += n;
    }
    Ok(body)
}

/// Read and discard what is left of a body (of an entry that makes no file, or of a
/// whiteout), still counted and guarded.
pub(super) fn skip_body<R: Read>(
    entry: &mut ::tar::Entry<'_, R>,
    meter: &Meter<'_>,
    buf: &mut [u8],
    shown: &Path,
) -> Result<()> {
    while read_counted(entry, meter, buf, shown)?.0 > 0 {}
    Ok(())
}

/// One read of the body: bytes produced, and how many of them came from the stream (the
/// rest are zeros the tar crate makes up for sparse holes, which the bomb guard counts too).
fn read_counted<R: Read>(
    entry: &mut ::tar::Entry<'_, R>,
    meter: &Meter<'_>,
    buf: &mut [u8],
    shown: &Path,
) -> Result<(usize, u64)> {
    let before = meter.tar_bytes();
    let n = loop {
        match entry.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => break r.map_err(|e| stream_error(e, shown))?,
        }
    };
    let from_stream = meter.tar_bytes() - before;
    meter
        .on_holes((n as u64).saturating_sub(from_stream))
        .map_err(|e| stream_error(e, shown))?;
    Ok((n, from_stream))
}

fn truncated(shown: &Path, done: u64, size: u64) -> Error {
    bad_layer(
        shown,
        format!("truncated: body ends after {done} of {size} bytes"),
    )
}

pub(super) fn write_error(e: io::Error, shown: &Path) -> Error {
    let errno = e.raw_os_error().map_or(Errno::EIO, Errno::from_raw);
    Error::sys(errno, "write", shown)
}
