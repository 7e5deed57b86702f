//! Reader of the btrfs send stream (`fs/btrfs/send.h`): a header, then commands, each a list
//! of typed attributes (TLVs), each command's crc32c checked. Every length is checked before
//! it is used, and a command longer than any the kernel writes is refused before any
//! allocation.

use super::{attr, crc32c, StreamError};
use std::io::{self, Read};

pub const MAGIC: &[u8; 13] = b"btrfs-stream\0";
/// The newest protocol version read (3 adds ENABLE_VERITY, which the applier refuses).
pub const MAX_VERSION: u32 = 3;

/// `struct btrfs_cmd_header`: le32 len, le16 cmd, le32 crc.
pub(super) const CMD_HEADER: usize = 10;
/// `struct btrfs_tlv_header`: le16 type, le16 len.
pub(super) const TLV_HEADER: usize = 4;
/// The kernel's v2 send buffer is 16 KiB plus 128 KiB of compressed data (v1: 64 KiB);
/// anything far larger is not a stream.
pub const MAX_COMMAND: usize = 1 << 20;

/// One command: its number and its attribute bytes.
pub struct RawCommand<'a> {
    pub cmd: u16,
    version: u32,
    body: &'a [u8],
}

impl<'a> RawCommand<'a> {
    /// The attributes, in stream order.
    pub fn attrs(&self) -> Attrs<'a> {
        Attrs {
            cmd: self.cmd,
            version: self.version,
            rest: self.body,
        }
    }
}

pub struct Attrs<'a> {
    cmd: u16,
    version: u32,
    rest: &'a [u8],
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), StreamError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let bad = StreamError::BadAttribute { cmd: self.cmd };
        let Some((kind, rest)) = self.rest.split_at_checked(2) else {
            self.rest = &[];
            return Some(Err(bad));
        };
        let kind = u16::from_le_bytes([kind[0], kind[1]]);
        // From v2 on, DATA has no length: it is the rest of the command.
        if kind == attr::DATA && self.version >= 2 {
            self.rest = &[];
            return Some(Ok((kind, rest)));
        }
        let Some((len, rest)) = rest.split_at_checked(TLV_HEADER - 2) else {
            self.rest = &[];
            return Some(Err(bad));
        };
        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        let Some((value, rest)) = rest.split_at_checked(len) else {
            self.rest = &[];
            return Some(Err(bad));
        };
        self.rest = rest;
        Some(Ok((kind, value)))
    }
}

/// Commands out of a reader, one at a time, in a reused buffer.
pub struct StreamReader<R> {
    input: R,
    version: u32,
    body: Vec<u8>,
}

impl<R: Read> StreamReader<R> {
    /// Read and check the stream header.
    pub fn new(mut input: R) -> Result<Self, StreamError> {
        let mut head = [0u8; MAGIC.len() + 4];
        read_full(&mut input, &mut head)?
            .then_some(())
            .ok_or(StreamError::Truncated)?;
        if &head[..MAGIC.len()] != MAGIC {
            return Err(StreamError::BadMagic);
        }
        let version = u32::from_le_bytes(head[MAGIC.len()..].try_into().expect("4 bytes"));
        if !(1..=MAX_VERSION).contains(&version) {
            return Err(StreamError::Version(version));
        }
        Ok(StreamReader {
            input,
            version,
            body: Vec::new(),
        })
    }

    /// The protocol version of the stream.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The next command, its crc32c checked, or None at the end of the input.
    pub fn next_command(&mut self) -> Result<Option<RawCommand<'_>>, StreamError> {
        let mut head = [0u8; CMD_HEADER];
        if !read_full(&mut self.input, &mut head)? {
            return Ok(None);
        }
        let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes"));
        let cmd = u16::from_le_bytes([head[4], head[5]]);
        let crc = u32::from_le_bytes(head[6..10].try_into().expect("4 bytes"));
        let n = usize::try_from(len)
            .ok()
            .filter(|&n| n <= MAX_COMMAND)
            .ok_or(StreamError::CommandTooLong(len))?;
        self.body.resize(n, 0);
        if n > 0 && !read_full(&mut self.input, &mut self.body)? {
            return Err(StreamError::Truncated);
        }
        // The sender computed it with the crc field zeroed.
        head[6..10].fill(0);
        if crc32c::update(crc32c::update(0, &head), &self.body) != crc {
            return Err(StreamError::BadCrc { cmd });
        }
        Ok(Some(RawCommand {
            cmd,
            version: self.version,
            body: &self.body,
        }))
    }

    /// Whether the input has ended (reads at most one more byte).
    pub fn at_end(&mut self) -> Result<bool, StreamError> {
        let mut one = [0u8; 1];
        Ok(!read_full(&mut self.input, &mut one)?)
    }

    /// The rest of the input, discarded (so a writer blocked on a pipe can finish).
    pub fn drain(&mut self) {
        let _ = io::copy(&mut self.input, &mut io::sink());
    }
}

/// Fill `buf`: Ok(true) when filled, Ok(false) at end of input before the first byte,
/// Truncated at end of input after it.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> Result<bool, StreamError> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(StreamError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StreamError::Io(e)),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::super::write::StreamWriter;
    use super::super::{attr, cmd};
    use super::*;

    type Commands = Vec<(u16, Vec<(u16, Vec<u8>)>)>;

    fn all(bytes: &[u8]) -> Result<Commands, StreamError> {
        let mut r = StreamReader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(c) = r.next_command()? {
            let attrs = c
                .attrs()
                .map(|a| a.map(|(t, v)| (t, v.to_vec())))
                .collect::<Result<_, _>>()?;
            out.push((c.cmd, attrs));
        }
        Ok(out)
    }

    type Attrs<'a> = &'a [(u16, &'a [u8])];

    fn stream(version: u32, commands: &[(u16, Attrs<'_>)]) -> Vec<u8> {
        let mut w = StreamWriter::new(Vec::new(), version).unwrap();
        for (c, attrs) in commands {
            w.command(*c, attrs).unwrap();
        }
        w.into_inner()
    }

    #[test]
    fn reads_commands_and_attributes() {
        let s = stream(
            1,
            &[
                (cmd::SNAPSHOT, &[(attr::PATH, b"snap")]),
                (
                    cmd::RENAME,
                    &[(attr::PATH, b"o257-7-0"), (attr::PATH_TO, b"d/\xffname")],
                ),
                (
                    cmd::SYMLINK,
                    &[
                        (attr::PATH, b"l"),
                        (attr::INO, &7u64.to_le_bytes()),
                        (attr::PATH_LINK, b"../t"),
                    ],
                ),
                (cmd::END, &[]),
            ],
        );
        let got = all(&s).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[1],
            (
                cmd::RENAME,
                vec![
                    (attr::PATH, b"o257-7-0".to_vec()),
                    (attr::PATH_TO, b"d/\xffname".to_vec())
                ]
            )
        );
        assert_eq!(got[2].1[2], (attr::PATH_LINK, b"../t".to_vec()));
        assert_eq!(got[3], (cmd::END, vec![]));
    }

    #[test]
    fn v2_data_runs_to_the_end_of_its_command() {
        let data = vec![9u8; 70_000]; // longer than a TLV length can say
        let s = stream(
            2,
            &[(
                cmd::WRITE,
                &[
                    (attr::PATH, b"f"),
                    (attr::FILE_OFFSET, &0u64.to_le_bytes()),
                    (attr::DATA, &data),
                ],
            )],
        );
        let got = all(&s).unwrap();
        assert_eq!(got[0].1[2], (attr::DATA, data));
    }

    #[test]
    fn empty_stream_after_header_has_no_commands() {
        assert!(all(&stream(1, &[])).unwrap().is_empty());
    }

    #[test]
    fn refuses_bad_headers() {
        assert!(matches!(all(b""), Err(StreamError::Truncated)));
        assert!(matches!(
            all(b"btrfs-stream\0\x01"),
            Err(StreamError::Truncated)
        ));
        assert!(matches!(
            all(b"btrfs-strean\0\x01\0\0\0"),
            Err(StreamError::BadMagic)
        ));
        assert!(matches!(
            all(b"btrfs-stream\0\x04\0\0\0"),
            Err(StreamError::Version(4))
        ));
        assert!(matches!(
            all(b"btrfs-stream\0\0\0\0\0"),
            Err(StreamError::Version(0))
        ));
    }

    #[test]
    fn refuses_truncation_anywhere() {
        let s = stream(1, &[(cmd::UNLINK, &[(attr::PATH, b"some/file")])]);
        for cut in MAGIC.len() + 5..s.len() {
            assert!(
                matches!(all(&s[..cut]), Err(StreamError::Truncated)),
                "cut at {cut}"
            );
        }
        assert!(all(&s).is_ok());
    }

    #[test]
    fn refuses_a_flipped_bit_anywhere_in_a_command() {
        let s = stream(1, &[(cmd::UNLINK, &[(attr::PATH, b"some/file")])]);
        for at in MAGIC.len() + 4 + 4..s.len() {
            let mut bad = s.clone();
            bad[at] ^= 0x10;
            assert!(
                matches!(all(&bad), Err(StreamError::BadCrc { .. })),
                "flip at {at}"
            );
        }
    }

    #[test]
    fn refuses_attributes_past_their_command() {
        // A TLV claiming 200 bytes inside a 9-byte command body.
        let mut body = attr::PATH.to_le_bytes().to_vec();
        body.extend_from_slice(&200u16.to_le_bytes());
        body.extend_from_slice(b"abcde");
        let mut w = StreamWriter::new(Vec::new(), 1).unwrap();
        w.raw_command(cmd::UNLINK, &body).unwrap();
        assert!(matches!(
            all(&w.into_inner()),
            Err(StreamError::BadAttribute { cmd: cmd::UNLINK })
        ));
        // A dangling partial TLV header.
        let mut w = StreamWriter::new(Vec::new(), 1).unwrap();
        w.raw_command(cmd::UNLINK, &[15, 0, 1]).unwrap();
        assert!(matches!(
            all(&w.into_inner()),
            Err(StreamError::BadAttribute { .. })
        ));
    }

    #[test]
    fn refuses_huge_commands_without_allocating() {
        let mut s = stream(1, &[]);
        s.extend_from_slice(&u32::MAX.to_le_bytes());
        s.extend_from_slice(&cmd::WRITE.to_le_bytes());
        s.extend_from_slice(&[0; 4]);
        assert!(matches!(
            all(&s),
            Err(StreamError::CommandTooLong(u32::MAX))
        ));
    }
}
