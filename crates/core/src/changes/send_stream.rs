//! Reader of the btrfs send stream, version 1 (`fs/btrfs/send.h`): a header, then commands,
//! each a list of typed attributes (TLVs). Every length is checked before it is used; the
//! crc32c is not (the kernel wrote the stream a moment ago through a pipe).

use std::fmt;
use std::io::{self, Read};

pub const MAGIC: &[u8; 13] = b"btrfs-stream\0";
pub const VERSION: u32 = 1;

/// Command numbers (`enum btrfs_send_cmd`), the whole v1 table so a dump reads by name.
#[allow(dead_code)]
pub mod cmd {
    pub const SUBVOL: u16 = 1;
    pub const SNAPSHOT: u16 = 2;
    pub const MKFILE: u16 = 3;
    pub const MKDIR: u16 = 4;
    pub const MKNOD: u16 = 5;
    pub const MKFIFO: u16 = 6;
    pub const MKSOCK: u16 = 7;
    pub const SYMLINK: u16 = 8;
    pub const RENAME: u16 = 9;
    pub const LINK: u16 = 10;
    pub const UNLINK: u16 = 11;
    pub const RMDIR: u16 = 12;
    pub const SET_XATTR: u16 = 13;
    pub const REMOVE_XATTR: u16 = 14;
    pub const WRITE: u16 = 15;
    pub const CLONE: u16 = 16;
    pub const TRUNCATE: u16 = 17;
    pub const CHMOD: u16 = 18;
    pub const CHOWN: u16 = 19;
    pub const UTIMES: u16 = 20;
    pub const END: u16 = 21;
    pub const UPDATE_EXTENT: u16 = 22;
}

/// Attribute types (`enum btrfs_send_attr`) that hold paths.
#[allow(dead_code)]
pub mod attr {
    pub const PATH: u16 = 15;
    pub const PATH_TO: u16 = 16;
    /// A symlink's target text for SYMLINK; the existing name for LINK.
    pub const PATH_LINK: u16 = 17;
    pub const CLONE_PATH: u16 = 22;
}

/// `struct btrfs_cmd_header`: le32 len, le16 cmd, le32 crc.
const CMD_HEADER: usize = 10;
/// `struct btrfs_tlv_header`: le16 type, le16 len.
const TLV_HEADER: usize = 4;
/// A v1 command fits the kernel's 64 KiB send buffer; anything far larger is not a stream.
const MAX_COMMAND: usize = 1 << 20;

#[derive(Debug)]
pub enum StreamError {
    Io(io::Error),
    BadMagic,
    Version(u32),
    /// The stream ended inside a header or a command.
    Truncated,
    CommandTooLong(u32),
    /// An attribute runs past the end of its command.
    BadAttribute {
        cmd: u16,
    },
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Io(e) => write!(f, "read: {e}"),
            StreamError::BadMagic => write!(f, "not a btrfs send stream"),
            StreamError::Version(v) => write!(f, "send stream version {v}, expected {VERSION}"),
            StreamError::Truncated => write!(f, "send stream truncated"),
            StreamError::CommandTooLong(n) => write!(f, "send stream command of {n} bytes"),
            StreamError::BadAttribute { cmd } => {
                write!(f, "malformed attribute in send command {cmd}")
            }
        }
    }
}

/// One command: its number and its attribute bytes.
pub struct Command<'a> {
    pub cmd: u16,
    body: &'a [u8],
}

impl<'a> Command<'a> {
    /// The attributes, in stream order.
    pub fn attrs(&self) -> Attrs<'a> {
        Attrs {
            cmd: self.cmd,
            rest: self.body,
        }
    }
}

pub struct Attrs<'a> {
    cmd: u16,
    rest: &'a [u8],
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), StreamError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some((head, rest)) = self.rest.split_at_checked(TLV_HEADER) else {
            self.rest = &[];
            return Some(Err(StreamError::BadAttribute { cmd: self.cmd }));
        };
        let kind = u16::from_le_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_le_bytes([head[2], head[3]]));
        let Some((value, rest)) = rest.split_at_checked(len) else {
            self.rest = &[];
            return Some(Err(StreamError::BadAttribute { cmd: self.cmd }));
        };
        self.rest = rest;
        Some(Ok((kind, value)))
    }
}

/// Commands out of a reader, one at a time, in a reused buffer.
pub struct StreamReader<R> {
    input: R,
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
        let version = u32::from_le_bytes(head[MAGIC.len()..].try_into().unwrap());
        if version != VERSION {
            return Err(StreamError::Version(version));
        }
        Ok(StreamReader {
            input,
            body: Vec::new(),
        })
    }

    /// The next command, or None at the end of the input.
    pub fn next_command(&mut self) -> Result<Option<Command<'_>>, StreamError> {
        let mut head = [0u8; CMD_HEADER];
        if !read_full(&mut self.input, &mut head)? {
            return Ok(None);
        }
        let len = u32::from_le_bytes(head[0..4].try_into().unwrap());
        let cmd = u16::from_le_bytes([head[4], head[5]]);
        let n = usize::try_from(len)
            .ok()
            .filter(|&n| n <= MAX_COMMAND)
            .ok_or(StreamError::CommandTooLong(len))?;
        self.body.resize(n, 0);
        if n > 0 && !read_full(&mut self.input, &mut self.body)? {
            return Err(StreamError::Truncated);
        }
        Ok(Some(Command {
            cmd,
            body: &self.body,
        }))
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
pub(super) mod tests {
    use super::*;

    /// A stream header of `version` (the send tests build streams too).
    pub(in crate::changes) fn header(version: u32) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&version.to_le_bytes());
        b
    }

    /// One command with its attributes, as the kernel writes it (the crc left 0).
    pub(in crate::changes) fn command(cmd: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, v) in attrs {
            body.extend_from_slice(&t.to_le_bytes());
            body.extend_from_slice(&(v.len() as u16).to_le_bytes());
            body.extend_from_slice(v);
        }
        let mut b = (body.len() as u32).to_le_bytes().to_vec();
        b.extend_from_slice(&cmd.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&body);
        b
    }

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

    #[test]
    fn reads_commands_and_attributes() {
        let mut s = header(1);
        s.extend(command(cmd::SNAPSHOT, &[(attr::PATH, b"snap")]));
        s.extend(command(
            cmd::RENAME,
            &[(attr::PATH, b"o257-7-0"), (attr::PATH_TO, b"d/\xffname")],
        ));
        s.extend(command(
            cmd::SYMLINK,
            &[
                (attr::PATH, b"l"),
                (3, &7u64.to_le_bytes()),
                (attr::PATH_LINK, b"../t"),
            ],
        ));
        s.extend(command(cmd::END, &[]));
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
    fn empty_stream_after_header_has_no_commands() {
        assert!(all(&header(1)).unwrap().is_empty());
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
        assert!(matches!(all(&header(2)), Err(StreamError::Version(2))));
    }

    #[test]
    fn refuses_truncation_anywhere() {
        let mut s = header(1);
        s.extend(command(cmd::UNLINK, &[(attr::PATH, b"some/file")]));
        for cut in header(1).len() + 1..s.len() {
            assert!(
                matches!(all(&s[..cut]), Err(StreamError::Truncated)),
                "cut at {cut}"
            );
        }
        assert!(all(&s).is_ok());
    }

    #[test]
    fn refuses_attributes_past_their_command() {
        // A TLV claiming 200 bytes inside a 9-byte command body.
        let mut body = attr::PATH.to_le_bytes().to_vec();
        body.extend_from_slice(&200u16.to_le_bytes());
        body.extend_from_slice(b"abcde");
        let mut s = header(1);
        s.extend_from_slice(&(body.len() as u32).to_le_bytes());
        s.extend_from_slice(&cmd::UNLINK.to_le_bytes());
        s.extend_from_slice(&[0; 4]);
        s.extend_from_slice(&body);
        assert!(matches!(
            all(&s),
            Err(StreamError::BadAttribute { cmd: cmd::UNLINK })
        ));
        // A dangling partial TLV header.
        let mut s = header(1);
        s.extend_from_slice(&3u32.to_le_bytes());
        s.extend_from_slice(&cmd::UNLINK.to_le_bytes());
        s.extend_from_slice(&[0; 4]);
        s.extend_from_slice(&[15, 0, 1]);
        assert!(matches!(all(&s), Err(StreamError::BadAttribute { .. })));
    }

    #[test]
    fn refuses_huge_commands_without_allocating() {
        let mut s = header(1);
        s.extend_from_slice(&u32::MAX.to_le_bytes());
        s.extend_from_slice(&cmd::WRITE.to_le_bytes());
        s.extend_from_slice(&[0; 4]);
        assert!(matches!(
            all(&s),
            Err(StreamError::CommandTooLong(u32::MAX))
        ));
    }
}
