//! File data commands: WRITE, CLONE, TRUNCATE, FALLOCATE and ENCODED_WRITE, on a file opened
//! by [`Root::open_file`](super::paths::Root::open_file).

use super::paths::bad_stream;
use crate::error::{Context, Error, Result};
use crate::ioctl::{self, CloneRangeArgs, EncodedIoArgs};
use crate::sendstream::command::EncodedExtent;
use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};
use nix::sys::uio::pwrite;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

/// The fallocate modes the kernel sends: preallocation (beyond the end: KEEP_SIZE) and holes.
const FALLOCATE_MODES: u32 = (libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE) as u32;

/// `data` at `offset`, all of it.
pub(super) fn write_at(
    fd: BorrowedFd<'_>,
    mut offset: u64,
    mut data: &[u8],
    shown: &Path,
) -> Result<()> {
    while !data.is_empty() {
        let at = file_offset(offset, shown)?;
        let n = pwrite(fd, data, at).at("pwrite", shown)?;
        if n == 0 {
            return Err(Error::sys(Errno::EIO, "pwrite", shown));
        }
        data = &data[n..];
        offset += n as u64;
    }
    Ok(())
}

/// Share `len` bytes of `source` at `source_offset` into `fd` at `offset` (CLONE_RANGE).
pub(super) fn clone_range(
    fd: BorrowedFd<'_>,
    offset: u64,
    len: u64,
    source: BorrowedFd<'_>,
    source_offset: u64,
    shown: &Path,
) -> Result<()> {
    let args = CloneRangeArgs {
        src_fd: i64::from(source.as_raw_fd()),
        src_offset: source_offset,
        src_length: len,
        dest_offset: offset,
    };
    // SAFETY: args is a complete btrfs_ioctl_clone_range_args naming a live fd.
    unsafe { ioctl::clone_range(fd.as_raw_fd(), &args) }
        .map(drop)
        .at("BTRFS_IOC_CLONE_RANGE", shown)
}

pub(super) fn truncate(fd: BorrowedFd<'_>, size: u64, shown: &Path) -> Result<()> {
    nix::unistd::ftruncate(fd, file_offset(size, shown)?).at("ftruncate", shown)
}

pub(super) fn allocate(
    fd: BorrowedFd<'_>,
    mode: u32,
    offset: u64,
    len: u64,
    shown: &Path,
) -> Result<()> {
    if mode & !FALLOCATE_MODES != 0 {
        return Err(bad_stream(shown, format!("fallocate mode {mode:#x}")));
    }
    let flags = FallocateFlags::from_bits_truncate(mode as libc::c_int);
    let len = file_offset(len, shown)?;
    fallocate(fd, flags, file_offset(offset, shown)?, len).at("fallocate", shown)
}

/// Write an extent as it is on disk (BTRFS_IOC_ENCODED_WRITE); where the kernel refuses it
/// (no privilege, an older kernel, a range it will not take), decompress and write, as
/// `btrfs receive` does.
pub(super) fn encoded_write(fd: BorrowedFd<'_>, e: &EncodedExtent<'_>, shown: &Path) -> Result<()> {
    if e.encryption != ioctl::ENCODED_IO_ENCRYPTION_NONE {
        return Err(bad_stream(shown, "encrypted extents are not supported"));
    }
    let end = e.unencoded_offset.checked_add(e.unencoded_file_len);
    if e.unencoded_len > ioctl::MAX_UNCOMPRESSED
        || !matches!(end, Some(end) if end <= e.unencoded_len)
    {
        return Err(bad_stream(shown, "encoded write range out of its extent"));
    }
    let iov = libc::iovec {
        iov_base: e.data.as_ptr() as *mut libc::c_void,
        iov_len: e.data.len(),
    };
    let args = EncodedIoArgs {
        iov: &iov,
        iovcnt: 1,
        offset: file_offset(e.offset, shown)?,
        flags: 0,
        len: e.unencoded_file_len,
        unencoded_len: e.unencoded_len,
        unencoded_offset: e.unencoded_offset,
        compression: e.compression,
        encryption: e.encryption,
        reserved: [0; 64],
    };
    // SAFETY: args is a complete btrfs_ioctl_encoded_io_args; iov points to e.data, which
    // outlives the call, and the kernel only reads it.
    match unsafe { ioctl::encoded_write(fd.as_raw_fd(), &args) } {
        Ok(_) => Ok(()),
        Err(Errno::ENOSPC | Errno::ENOTTY | Errno::EINVAL | Errno::EPERM | Errno::EOPNOTSUPP) => {
            let plain = decompress(e, shown)?;
            let from = e.unencoded_offset as usize;
            let to = from + e.unencoded_file_len as usize;
            write_at(fd, e.offset, &plain[from..to], shown)
        }
        Err(errno) => Err(Error::sys(errno, "BTRFS_IOC_ENCODED_WRITE", shown)),
    }
}

/// The whole extent, decompressed: exactly `unencoded_len` bytes (at most 128 KiB, checked).
fn decompress(e: &EncodedExtent<'_>, shown: &Path) -> Result<Vec<u8>> {
    let want = e.unencoded_len as usize;
    let mut out = Vec::with_capacity(want);
    let limit = e.unencoded_len + 1;
    let read = match e.compression {
        ioctl::ENCODED_IO_COMPRESSION_NONE => {
            out.extend_from_slice(&e.data[..want.min(e.data.len())]);
            Ok(out.len())
        }
        ioctl::ENCODED_IO_COMPRESSION_ZLIB => {
            flate2::read::ZlibDecoder::new(e.data).take(limit).read_to_end(&mut out)
        }
        // One frame; the sector padding after it is not another.
        ioctl::ENCODED_IO_COMPRESSION_ZSTD => zstd::stream::read::Decoder::with_buffer(e.data)
            .map(|d| d.single_frame())
            .and_then(|d| d.take(limit).read_to_end(&mut out)),
        c => {
            return Err(Error::refused(
                Errno::EOPNOTSUPP,
                "BTRFS_IOC_ENCODED_WRITE",
                shown,
                format!("the kernel refused an encoded extent of compression {c}, and this build cannot decompress it"),
            ))
        }
    };
    read.map_err(|err| bad_stream(shown, format!("encoded extent does not decompress: {err}")))?;
    // Shorter is zeros (a compressed extent's tail), as the kernel reads it; longer is wrong.
    if out.len() > want {
        return Err(bad_stream(
            shown,
            "encoded extent decompresses past its length",
        ));
    }
    out.resize(want, 0);
    Ok(out)
}

/// A file offset or size the kernel takes (`off_t`).
fn file_offset(n: u64, shown: &Path) -> Result<i64> {
    i64::try_from(n).map_err(|_| bad_stream(shown, format!("file offset {n} out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn extent(compression: u32, data: &[u8], unencoded_len: u64) -> EncodedExtent<'_> {
        EncodedExtent {
            offset: 0,
            unencoded_file_len: unencoded_len,
            unencoded_len,
            unencoded_offset: 0,
            compression,
            encryption: 0,
            data,
        }
    }

    /// The fallback decompresses what btrfs stores: one zstd frame or zlib stream, padded to
    /// the sector with zeros, that may decompress to less than the extent (a zero tail).
    #[test]
    fn the_fallback_decompresses_zstd_and_zlib_extents_with_their_padding() {
        let plain: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8).collect();
        let mut zstd = zstd::bulk::compress(&plain, 3).unwrap();
        zstd.resize(zstd.len().next_multiple_of(4096), 0);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), Default::default());
        zlib.write_all(&plain).unwrap();
        let mut zlib = zlib.finish().unwrap();
        zlib.resize(zlib.len().next_multiple_of(4096), 0);
        let shown = Path::new("f");
        for (c, data) in [
            (ioctl::ENCODED_IO_COMPRESSION_ZSTD, &zstd),
            (ioctl::ENCODED_IO_COMPRESSION_ZLIB, &zlib),
        ] {
            let got = decompress(&extent(c, data, 128 * 1024), shown).unwrap();
            assert_eq!(&got[..plain.len()], &plain[..], "{c}");
            assert!(got[plain.len()..].iter().all(|&b| b == 0), "{c}");
            assert_eq!(got.len(), 128 * 1024);
            // An extent that decompresses past its stated length is refused.
            let e = decompress(&extent(c, data, 4096), shown).unwrap_err();
            assert_eq!(e.code, crate::Code::BadLayer, "{c}");
        }
        let e = decompress(
            &extent(ioctl::ENCODED_IO_COMPRESSION_ZSTD, b"junk", 4096),
            shown,
        );
        assert_eq!(e.unwrap_err().code, crate::Code::BadLayer);
        let e = decompress(&extent(3, b"lzo", 4096), shown).unwrap_err();
        assert!(e.is(Errno::EOPNOTSUPP), "{e}");
    }
}
