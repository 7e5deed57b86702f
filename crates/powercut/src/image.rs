//! Disk images: sparse copies of the base image, and crash images rebuilt from it and the log.

use crate::crash::CrashState;
use crate::log::Record;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Copy `from` to `to` (created or truncated) with the same size, copying only its data
/// extents: a 1 GiB image holds a few MiB.
pub fn copy_sparse(from: &Path, to: &Path) -> io::Result<()> {
    let src = File::open(from)?;
    let size = src.metadata()?.len();
    let dst = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(to)?;
    dst.set_len(size)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < size {
        let Some(data) = seek(&src, pos, libc::SEEK_DATA)? else {
            break;
        };
        let hole = seek(&src, data, libc::SEEK_HOLE)?.unwrap_or(size);
        let mut at = data;
        while at < hole {
            let n = buf.len().min((hole - at) as usize);
            src.read_exact_at(&mut buf[..n], at)?;
            dst.write_all_at(&buf[..n], at)?;
            at += n as u64;
        }
        pos = hole;
    }
    Ok(())
}

/// lseek(SEEK_DATA / SEEK_HOLE); None past the last data (ENXIO).
fn seek(f: &File, pos: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: a plain lseek on an fd we own.
    let r = unsafe { libc::lseek(f.as_raw_fd(), pos as libc::off_t, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    Ok(Some(r as u64))
}

/// Write the disk of crash state `state` to `out`: the base image, every write of the durable
/// prefix, then the state's pieces, each in log order.
pub fn build(
    base: &Path,
    log: &Path,
    records: &[Record],
    state: &CrashState,
    out: &Path,
) -> io::Result<()> {
    copy_sparse(base, out)?;
    let log = File::open(log)?;
    let disk = OpenOptions::new().write(true).open(out)?;
    let size = disk.metadata()?.len();
    let mut buf = Vec::new();
    let mut put = |record: usize, start: u32, end: u32| -> io::Result<()> {
        let Record::Write { offset, len, at } = records[record] else {
            return Err(io::Error::other(format!("record {record} is not a write")));
        };
        if start > end || end > len || offset + u64::from(len) > size {
            return Err(io::Error::other(format!(
                "bytes {start}..{end} of record {record} do not fit the write or the disk"
            )));
        }
        buf.resize((end - start) as usize, 0);
        log.read_exact_at(&mut buf, at + u64::from(start))?;
        disk.write_all_at(&buf, offset + u64::from(start))
    };
    for (i, r) in records[..state.durable].iter().enumerate() {
        if let Record::Write { len, .. } = r {
            put(i, 0, *len)?;
        }
    }
    for p in &state.pieces {
        put(p.record, p.start, p.end)?;
    }
    // No fsync: the image is read back through the page cache it was written to.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crash::{Kind, Piece};
    use crate::log::{read, LogWriter};
    use crate::testdir::TestDir;

    fn state(durable: usize, pieces: Vec<Piece>) -> CrashState {
        CrashState {
            id: 0,
            kind: Kind::Reordered,
            durable,
            flushes: 0,
            cut: 0,
            pieces,
            commit: false,
            label: String::new(),
        }
    }

    #[test]
    fn a_sparse_copy_is_equal_and_keeps_its_holes() {
        let dir = TestDir::new("sparse");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let f = File::create(&a).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(b"middle", 32 << 20).unwrap();
        f.write_all_at(b"end", (64 << 20) - 3).unwrap();
        drop(f);
        std::fs::write(&b, b"old content, longer than nothing").unwrap();
        copy_sparse(&a, &b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        use std::os::unix::fs::MetadataExt;
        assert!(
            std::fs::metadata(&b).unwrap().blocks() < 1024,
            "holes were filled"
        );
    }

    #[test]
    fn a_crash_image_is_the_base_the_durable_writes_then_the_pieces_in_log_order() {
        let dir = TestDir::new("build");
        let base = dir.path().join("base");
        std::fs::write(&base, vec![b'.'; 16]).unwrap();
        let log = dir.path().join("log");
        let mut w = LogWriter::create(&log).unwrap();
        w.write(0, b"AAAA").unwrap(); // 0
        w.write(2, b"BB").unwrap(); // 1: over the first
        w.flush_barrier().unwrap(); // 2
        w.write(8, b"CCCC").unwrap(); // 3
        w.write(9, b"DD").unwrap(); // 4: over the one before
        w.mark("m").unwrap(); // 5
        w.write(12, b"EEEE").unwrap(); // 6
        w.finish().unwrap();
        let records = read(&log).unwrap();
        let out = dir.path().join("out");
        let image = |s: &CrashState| {
            build(&base, &log, &records, s, &out).unwrap();
            String::from_utf8(std::fs::read(&out).unwrap()).unwrap()
        };
        assert_eq!(image(&state(0, vec![])), "................");
        assert_eq!(image(&state(3, vec![])), "AABB............");
        // The later overwrite alone: the earlier write was lost.
        let only_d = Piece {
            record: 4,
            start: 0,
            end: 2,
        };
        assert_eq!(image(&state(3, vec![only_d])), "AABB.....DD.....");
        // Both: log order, the later one wins.
        let all_c = Piece {
            record: 3,
            start: 0,
            end: 4,
        };
        assert_eq!(image(&state(3, vec![all_c, only_d])), "AABB....CDDC....");
        // A torn piece: bytes 1..3 of the last write.
        let torn = Piece {
            record: 6,
            start: 1,
            end: 3,
        };
        assert_eq!(image(&state(3, vec![torn])), "AABB.........EE.");
        assert_eq!(image(&state(records.len(), vec![])), "AABB....CDDCEEEE");
        // A piece past its write is refused.
        let bad = Piece {
            record: 6,
            start: 0,
            end: 5,
        };
        assert!(build(&base, &log, &records, &state(3, vec![bad]), &out).is_err());
    }
}
