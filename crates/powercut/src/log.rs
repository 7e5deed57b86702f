//! The write log: every write and every flush the served disk received, and the workload's
//! marks, in the one order the single FUSE thread handled them.
//!
//! Append-only binary records, each a tag byte and then:
//! - `W` a write: disk offset (u64 LE), length (u32 LE), the data;
//! - `F` a flush (an fsync of the disk: the loop driver's REQ_PREFLUSH, or a FUA write's
//!   post-flush): nothing;
//! - `M` a mark written by the workload through the marks file: length (u32 LE), UTF-8 text.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

const WRITE: u8 = b'W';
const FLUSH: u8 = b'F';
const MARK: u8 = b'M';

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `len` bytes written at disk offset `offset`; the data sits at byte `at` of the log file.
    Write { offset: u64, len: u32, at: u64 },
    /// Everything received before this reached stable storage.
    Flush,
    /// A mark of the workload (e.g. that a driver call returned).
    Mark(String),
}

impl Record {
    pub fn is_write(&self) -> bool {
        matches!(self, Record::Write { .. })
    }
}

/// Appends records; buffered, since the log is read only after the disk is released.
pub struct LogWriter {
    out: BufWriter<File>,
}

impl LogWriter {
    pub fn create(path: &Path) -> io::Result<LogWriter> {
        Ok(LogWriter {
            out: BufWriter::with_capacity(1 << 20, File::create(path)?),
        })
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let len = u32::try_from(data.len()).map_err(|_| io::Error::other("write over 4 GiB"))?;
        self.out.write_all(&[WRITE])?;
        self.out.write_all(&offset.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(data)
    }

    pub fn flush_barrier(&mut self) -> io::Result<()> {
        self.out.write_all(&[FLUSH])
    }

    pub fn mark(&mut self, text: &str) -> io::Result<()> {
        let len = u32::try_from(text.len()).map_err(|_| io::Error::other("mark too long"))?;
        self.out.write_all(&[MARK])?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(text.as_bytes())
    }

    /// Write out the buffer and make the log itself durable.
    pub fn finish(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_all()
    }
}

/// Every record of the log at `path`, without the write data (read it by `at`).
pub fn read(path: &Path) -> io::Result<Vec<Record>> {
    let mut r = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut out = Vec::new();
    let mut tag = [0u8; 1];
    let mut pos = 0u64;
    loop {
        match r.read(&mut tag)? {
            0 => return Ok(out),
            _ => pos += 1,
        }
        match tag[0] {
            WRITE => {
                let offset = u64::from_le_bytes(read_array(&mut r)?);
                let len = u32::from_le_bytes(read_array(&mut r)?);
                pos += 12;
                out.push(Record::Write {
                    offset,
                    len,
                    at: pos,
                });
                // Skip the data: the crash images read it back by position.
                r.seek_relative(i64::from(len))?;
                pos += u64::from(len);
            }
            FLUSH => out.push(Record::Flush),
            MARK => {
                let len = u32::from_le_bytes(read_array(&mut r)?);
                let mut text = vec![0u8; len as usize];
                r.read_exact(&mut text)?;
                pos += 4 + u64::from(len);
                out.push(Record::Mark(String::from_utf8_lossy(&text).into_owned()));
            }
            t => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad record tag {t:#04x} at byte {}", pos - 1),
                ))
            }
        }
    }
}

fn read_array<const N: usize>(r: &mut impl Read) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn records_read_back_in_order_with_their_data() {
        let dir = crate::testdir::TestDir::new("log");
        let path = dir.path().join("log");
        let mut w = LogWriter::create(&path).unwrap();
        w.mark("begin create").unwrap();
        w.write(4096, b"hello").unwrap();
        w.flush_barrier().unwrap();
        w.write(0, &[7u8; 3]).unwrap();
        w.mark("end create").unwrap();
        w.finish().unwrap();
        let records = read(&path).unwrap();
        assert_eq!(records.len(), 5);
        assert_eq!(records[0], Record::Mark("begin create".into()));
        assert_eq!(records[2], Record::Flush);
        assert_eq!(records[4], Record::Mark("end create".into()));
        let f = File::open(&path).unwrap();
        let Record::Write { offset, len, at } = records[1] else {
            panic!("not a write: {:?}", records[1])
        };
        assert_eq!((offset, len), (4096, 5));
        let mut data = vec![0u8; len as usize];
        f.read_exact_at(&mut data, at).unwrap();
        assert_eq!(data, b"hello");
        let Record::Write { offset, len, at } = records[3] else {
            panic!("not a write: {:?}", records[3])
        };
        let mut data = vec![0u8; len as usize];
        f.read_exact_at(&mut data, at).unwrap();
        assert_eq!((offset, data), (0, vec![7u8; 3]));
    }

    #[test]
    fn a_bad_tag_is_an_error() {
        let dir = crate::testdir::TestDir::new("log-bad");
        let path = dir.path().join("log");
        std::fs::write(&path, b"Fx").unwrap();
        assert_eq!(read(&path).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
