//! Content digests of layer blobs, as the OCI image spec defines them: the sha256 of a blob as
//! stored (its `digest`, with its `size`) and of its uncompressed tar (the `diffID`), computed
//! while the bytes flow, and checked against what a manifest or config expects.

use crate::error::{Code, Error, Result};
use nix::errno::Errno;
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;

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
