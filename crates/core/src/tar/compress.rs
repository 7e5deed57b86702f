//! Compression detection and in-process (de)compression: plain tar, gzip, zstd.

use crate::error::{Code, Error, Result};
use nix::errno::Errno;
use std::io::{self, BufRead, Cursor, Read, Write};
use std::path::Path;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
/// Largest zstd window accepted (2^27 = 128 MiB, zstd's default limit): bounds decoder memory.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// How a layer stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression whose magic number starts `head`; anything else is plain tar.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// A writer whose stream needs a trailer written once all data is in.
pub trait FinishWrite: Write {
    /// Write the trailer (if any) and flush everything to the underlying writer.
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// Sniff the first bytes (gzip 1f 8b, zstd 28 b5 2f fd, else plain tar) and return a decompressing reader.
pub fn decompressing_reader<'a, R: BufRead + 'a>(
    mut input: R,
) -> Result<(Compression, Box<dyn Read + 'a>)> {
    let mut head = [0u8; 4];
    let len = read_head(&mut input, &mut head)?;
    let compression = Compression::sniff(&head[..len]);
    let rejoined = Cursor::new(head).take(len as u64).chain(input);
    let reader: Box<dyn Read + 'a> = match compression {
        Compression::None => Box::new(rejoined),
        Compression::Gzip => Box::new(GzipMembers::new(rejoined)),
        Compression::Zstd => Box::new(zstd_reader(rejoined)?),
    };
    Ok((compression, reader))
}

/// Wrap a writer in a compressor (gzip via flate2, zstd via the zstd crate); `finish` flushes the trailer.
pub fn compressing_writer<'a, W: Write + 'a>(
    out: W,
    c: Compression,
) -> Result<Box<dyn FinishWrite + 'a>> {
    Ok(match c {
        Compression::None => Box::new(Plain(out)),
        Compression::Gzip => Box::new(flate2::write::GzEncoder::new(
            out,
            flate2::Compression::default(),
        )),
        Compression::Zstd => Box::new(
            zstd::stream::write::Encoder::new(out, zstd::DEFAULT_COMPRESSION_LEVEL)
                .map_err(|e| stream_error(e, "ZSTD_createCCtx"))?,
        ),
    })
}

/// Fill `head` as far as the input allows (a pipe may hand out one byte at a time).
fn read_head(input: &mut impl Read, head: &mut [u8]) -> Result<usize> {
    let mut len = 0;
    while len < head.len() {
        match input.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(stream_error(e, "read")),
        }
    }
    Ok(len)
}

fn zstd_reader<'a, R: BufRead + 'a>(input: R) -> Result<zstd::stream::read::Decoder<'static, R>> {
    let mut decoder = zstd::stream::read::Decoder::with_buffer(input)
        .map_err(|e| stream_error(e, "ZSTD_createDCtx"))?;
    decoder
        .window_log_max(ZSTD_WINDOW_LOG_MAX)
        .map_err(|e| stream_error(e, "ZSTD_DCtx_setParameter"))?;
    Ok(decoder)
}

/// An I/O error of the input: the kernel's errno when it gave one, else a malformed stream.
fn stream_error(e: io::Error, syscall: &'static str) -> Error {
    match e.raw_os_error() {
        Some(errno) => Error::sys(Errno::from_raw(errno), syscall, Path::new("")),
        None => Error {
            code: Code::BadLayer,
            syscall: "",
            op: "",
            path: None,
            message: crate::tar::input_error(&e),
        },
    }
}

/// A gzip stream of one or more members (RFC 1952), each checked against its CRC and
/// length; bytes after the last member that do not start another are ignored, as gzip(1)
/// does, since some writers pad their output.
struct GzipMembers<R: BufRead> {
    member: Option<flate2::bufread::GzDecoder<R>>,
}

impl<R: BufRead> GzipMembers<R> {
    fn new(input: R) -> Self {
        GzipMembers {
            member: Some(flate2::bufread::GzDecoder::new(input)),
        }
    }
}

impl<R: BufRead> Read for GzipMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(member) = self.member.as_mut() {
            let n = member.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            let mut rest = self.member.take().expect("member is some").into_inner();
            if rest.fill_buf()?.starts_with(&GZIP_MAGIC[..1]) {
                self.member = Some(flate2::bufread::GzDecoder::new(rest));
            }
        }
        Ok(0)
    }
}

/// An uncompressed stream: finishing is flushing.
struct Plain<W>(W);

impl<W: Write> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> FinishWrite for Plain<W> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> FinishWrite for flate2::write::GzEncoder<W> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        (*self).finish()?.flush()
    }
}

impl<W: Write> FinishWrite for zstd::stream::write::Encoder<'static, W> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        (*self).finish()?.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(c: Compression) {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut out = Vec::new();
        let mut w = compressing_writer(&mut out, c).unwrap();
        w.write_all(&data).unwrap();
        w.finish().unwrap();
        let (found, mut r) = decompressing_reader(&out[..]).unwrap();
        assert_eq!(found, c);
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn round_trips_each_compression() {
        round_trip(Compression::None);
        round_trip(Compression::Gzip);
        round_trip(Compression::Zstd);
    }

    #[test]
    fn sniffs_from_a_reader_that_trickles() {
        let mut gz = Vec::new();
        let mut w = compressing_writer(&mut gz, Compression::Gzip).unwrap();
        w.write_all(b"hello").unwrap();
        w.finish().unwrap();
        let trickle = io::BufReader::with_capacity(1, &gz[..]);
        let (found, mut r) = decompressing_reader(trickle).unwrap();
        assert_eq!(found, Compression::Gzip);
        let mut back = String::new();
        r.read_to_string(&mut back).unwrap();
        assert_eq!(back, "hello");
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = compressing_writer(&mut out, Compression::Gzip).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap();
        out
    }

    fn gunzip(data: &[u8]) -> io::Result<Vec<u8>> {
        let (_, mut r) = decompressing_reader(data).unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).map(|_| back)
    }

    #[test]
    fn reads_every_gzip_member_and_ignores_padding() {
        let mut two = gzip(b"first ");
        two.extend(gzip(b"second"));
        assert_eq!(gunzip(&two).unwrap(), b"first second");
        two.extend([0u8; 512]);
        assert_eq!(gunzip(&two).unwrap(), b"first second");
    }

    #[test]
    fn gzip_checksum_and_truncation_are_errors() {
        let mut bad = gzip(b"some data to check");
        let n = bad.len();
        bad[n - 8] ^= 1;
        assert!(gunzip(&bad).is_err());
        let good = gzip(b"some data to check");
        assert!(gunzip(&good[..good.len() - 3]).is_err());
        let mut bad_second = gzip(b"a");
        bad_second.extend([0x1f, 0x8b, 0, 0]);
        assert!(
            gunzip(&bad_second).is_err(),
            "a second member that starts but is not gzip"
        );
    }

    #[test]
    fn short_and_empty_inputs_are_plain() {
        for input in [&b""[..], &b"\x1f"[..], &b"ab"[..]] {
            let (found, mut r) = decompressing_reader(input).unwrap();
            assert_eq!(found, Compression::None);
            let mut back = Vec::new();
            r.read_to_end(&mut back).unwrap();
            assert_eq!(back, input);
        }
    }
}
