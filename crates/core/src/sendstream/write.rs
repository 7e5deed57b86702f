//! A writer of send streams: what the kernel writes, crc32c included, or anything else a test
//! needs to say (a raw command body, a wrong crc), so hostile streams are easy to build.

use super::reader::{MAGIC, TLV_HEADER};
use super::{attr, crc32c};
use std::io::{self, Write};

pub struct StreamWriter<W> {
    out: W,
    version: u32,
}

impl<W: Write> StreamWriter<W> {
    /// Write the stream header of protocol `version`.
    pub fn new(mut out: W, version: u32) -> io::Result<Self> {
        out.write_all(MAGIC)?;
        out.write_all(&version.to_le_bytes())?;
        Ok(StreamWriter { out, version })
    }

    /// One command with its attributes, as the kernel writes it: from v2 on, a DATA attribute
    /// (which must come last) has no length.
    pub fn command(&mut self, cmd: u16, attrs: &[(u16, &[u8])]) -> io::Result<()> {
        self.raw_command(cmd, &self.body(attrs)?)
    }

    /// The command body of `attrs` (TLVs).
    pub fn body(&self, attrs: &[(u16, &[u8])]) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        for (t, v) in attrs {
            body.extend_from_slice(&t.to_le_bytes());
            if *t == attr::DATA && self.version >= 2 {
                body.extend_from_slice(v);
                continue;
            }
            let len = u16::try_from(v.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "attribute too long"))?;
            body.extend_from_slice(&len.to_le_bytes());
            body.extend_from_slice(v);
        }
        debug_assert!(body.len() >= attrs.len() * (TLV_HEADER - 2));
        Ok(body)
    }

    /// A command of any body, with its correct crc32c.
    pub fn raw_command(&mut self, cmd: u16, body: &[u8]) -> io::Result<()> {
        let len = u32::try_from(body.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "command too long"))?;
        let mut head = [0u8; 10];
        head[0..4].copy_from_slice(&len.to_le_bytes());
        head[4..6].copy_from_slice(&cmd.to_le_bytes());
        let crc = crc32c::update(crc32c::update(0, &head), body);
        self.raw_command_with_crc(cmd, len, crc, body)
    }

    /// A command exactly as given: its length field, its crc, its body.
    pub fn raw_command_with_crc(
        &mut self,
        cmd: u16,
        len: u32,
        crc: u32,
        body: &[u8],
    ) -> io::Result<()> {
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&cmd.to_le_bytes())?;
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(body)
    }

    /// Raw bytes, as they are.
    pub fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}
