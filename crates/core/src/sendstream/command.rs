//! The commands of the send stream, typed: each command's attributes checked (present, of the
//! size their type has) and decoded. Paths stay raw bytes, relative to the subvolume; whether
//! they stay inside it is the applier's to check.

use super::{attr, cmd, RawCommand, StreamError};

/// `struct btrfs_timespec` as the stream carries it: le64 seconds, le32 nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timespec {
    pub sec: u64,
    pub nsec: u32,
}

/// What ENCODED_WRITE carries besides its path: `len` (unencoded_file_len) bytes at file
/// offset `offset`, taken from `unencoded_offset` of the extent `data` decompresses to
/// (`unencoded_len` bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedExtent<'a> {
    pub offset: u64,
    pub unencoded_file_len: u64,
    pub unencoded_len: u64,
    pub unencoded_offset: u64,
    pub compression: u32,
    pub encryption: u32,
    pub data: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// The stream makes a new subvolume, whose sender's UUID and ctransid these are.
    Subvol {
        path: &'a [u8],
        uuid: [u8; 16],
        ctransid: u64,
    },
    /// The stream makes a snapshot of the subvolume `clone_uuid` at `clone_ctransid`.
    Snapshot {
        path: &'a [u8],
        uuid: [u8; 16],
        ctransid: u64,
        clone_uuid: [u8; 16],
        clone_ctransid: u64,
    },
    Mkfile {
        path: &'a [u8],
    },
    Mkdir {
        path: &'a [u8],
    },
    Mknod {
        path: &'a [u8],
        mode: u64,
        rdev: u64,
    },
    Mkfifo {
        path: &'a [u8],
    },
    Mksock {
        path: &'a [u8],
    },
    Symlink {
        path: &'a [u8],
        target: &'a [u8],
    },
    Rename {
        from: &'a [u8],
        to: &'a [u8],
    },
    /// A new name `path` for the existing `target`.
    Link {
        path: &'a [u8],
        target: &'a [u8],
    },
    Unlink {
        path: &'a [u8],
    },
    Rmdir {
        path: &'a [u8],
    },
    SetXattr {
        path: &'a [u8],
        name: &'a [u8],
        data: &'a [u8],
    },
    RemoveXattr {
        path: &'a [u8],
        name: &'a [u8],
    },
    Write {
        path: &'a [u8],
        offset: u64,
        data: &'a [u8],
    },
    Clone {
        path: &'a [u8],
        offset: u64,
        len: u64,
        clone_uuid: [u8; 16],
        clone_ctransid: u64,
        clone_path: &'a [u8],
        clone_offset: u64,
    },
    Truncate {
        path: &'a [u8],
        size: u64,
    },
    Chmod {
        path: &'a [u8],
        mode: u64,
    },
    Chown {
        path: &'a [u8],
        uid: u64,
        gid: u64,
    },
    Utimes {
        path: &'a [u8],
        atime: Timespec,
        mtime: Timespec,
        ctime: Timespec,
    },
    End,
    /// Sent with NO_FILE_DATA in place of the data: this range of the file changed.
    UpdateExtent {
        path: &'a [u8],
        offset: u64,
        len: u64,
    },
    Fallocate {
        path: &'a [u8],
        mode: u32,
        offset: u64,
        len: u64,
    },
    /// The inode's flags, as `btrfs_inode_item::flags` holds them.
    Fileattr {
        path: &'a [u8],
        attr: u64,
    },
    /// Data as it is on disk (compressed), for BTRFS_IOC_ENCODED_WRITE.
    EncodedWrite {
        path: &'a [u8],
        extent: EncodedExtent<'a>,
    },
    EnableVerity {
        path: &'a [u8],
    },
}

/// The attributes of one command, by type (the last one wins, as in btrfs-progs).
struct Found<'a> {
    cmd: u16,
    values: [Option<&'a [u8]>; attr::MAX as usize + 1],
}

impl<'a> Found<'a> {
    fn of(raw: &RawCommand<'a>) -> Result<Self, StreamError> {
        let mut values = [None; attr::MAX as usize + 1];
        for a in raw.attrs() {
            let (kind, value) = a?;
            let slot = values
                .get_mut(usize::from(kind))
                .filter(|_| kind != 0)
                .ok_or(StreamError::AttributeSize {
                    cmd: raw.cmd,
                    attr: kind,
                    len: value.len(),
                })?;
            *slot = Some(value);
        }
        Ok(Found {
            cmd: raw.cmd,
            values,
        })
    }

    fn bytes(&self, attr: u16) -> Result<&'a [u8], StreamError> {
        self.values[usize::from(attr)].ok_or(StreamError::MissingAttribute {
            cmd: self.cmd,
            attr,
        })
    }

    fn fixed<const N: usize>(&self, attr: u16) -> Result<[u8; N], StreamError> {
        let v = self.bytes(attr)?;
        v.try_into().map_err(|_| StreamError::AttributeSize {
            cmd: self.cmd,
            attr,
            len: v.len(),
        })
    }

    fn u64(&self, attr: u16) -> Result<u64, StreamError> {
        self.fixed(attr).map(u64::from_le_bytes)
    }

    fn u32(&self, attr: u16) -> Result<u32, StreamError> {
        self.fixed(attr).map(u32::from_le_bytes)
    }

    /// A u32 attribute that defaults to 0 when absent.
    fn u32_or_zero(&self, attr: u16) -> Result<u32, StreamError> {
        match self.values[usize::from(attr)] {
            None => Ok(0),
            Some(_) => self.u32(attr),
        }
    }

    fn time(&self, attr: u16) -> Result<Timespec, StreamError> {
        let b: [u8; 12] = self.fixed(attr)?;
        Ok(Timespec {
            sec: u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            nsec: u32::from_le_bytes(b[8..].try_into().expect("4 bytes")),
        })
    }

    fn path(&self) -> Result<&'a [u8], StreamError> {
        self.bytes(attr::PATH)
    }
}

impl<'a> Command<'a> {
    /// The typed command of `raw`.
    pub fn parse(raw: &RawCommand<'a>) -> Result<Command<'a>, StreamError> {
        let a = Found::of(raw)?;
        Ok(match raw.cmd {
            cmd::SUBVOL => Command::Subvol {
                path: a.path()?,
                uuid: a.fixed(attr::UUID)?,
                ctransid: a.u64(attr::CTRANSID)?,
            },
            cmd::SNAPSHOT => Command::Snapshot {
                path: a.path()?,
                uuid: a.fixed(attr::UUID)?,
                ctransid: a.u64(attr::CTRANSID)?,
                clone_uuid: a.fixed(attr::CLONE_UUID)?,
                clone_ctransid: a.u64(attr::CLONE_CTRANSID)?,
            },
            cmd::MKFILE => Command::Mkfile { path: a.path()? },
            cmd::MKDIR => Command::Mkdir { path: a.path()? },
            cmd::MKNOD => Command::Mknod {
                path: a.path()?,
                mode: a.u64(attr::MODE)?,
                rdev: a.u64(attr::RDEV)?,
            },
            cmd::MKFIFO => Command::Mkfifo { path: a.path()? },
            cmd::MKSOCK => Command::Mksock { path: a.path()? },
            cmd::SYMLINK => Command::Symlink {
                path: a.path()?,
                target: a.bytes(attr::PATH_LINK)?,
            },
            cmd::RENAME => Command::Rename {
                from: a.path()?,
                to: a.bytes(attr::PATH_TO)?,
            },
            cmd::LINK => Command::Link {
                path: a.path()?,
                target: a.bytes(attr::PATH_LINK)?,
            },
            cmd::UNLINK => Command::Unlink { path: a.path()? },
            cmd::RMDIR => Command::Rmdir { path: a.path()? },
            cmd::SET_XATTR => Command::SetXattr {
                path: a.path()?,
                name: a.bytes(attr::XATTR_NAME)?,
                data: a.bytes(attr::XATTR_DATA)?,
            },
            cmd::REMOVE_XATTR => Command::RemoveXattr {
                path: a.path()?,
                name: a.bytes(attr::XATTR_NAME)?,
            },
            cmd::WRITE => Command::Write {
                path: a.path()?,
                offset: a.u64(attr::FILE_OFFSET)?,
                data: a.bytes(attr::DATA)?,
            },
            cmd::CLONE => Command::Clone {
                path: a.path()?,
                offset: a.u64(attr::FILE_OFFSET)?,
                len: a.u64(attr::CLONE_LEN)?,
                clone_uuid: a.fixed(attr::CLONE_UUID)?,
                clone_ctransid: a.u64(attr::CLONE_CTRANSID)?,
                clone_path: a.bytes(attr::CLONE_PATH)?,
                clone_offset: a.u64(attr::CLONE_OFFSET)?,
            },
            cmd::TRUNCATE => Command::Truncate {
                path: a.path()?,
                size: a.u64(attr::SIZE)?,
            },
            cmd::CHMOD => Command::Chmod {
                path: a.path()?,
                mode: a.u64(attr::MODE)?,
            },
            cmd::CHOWN => Command::Chown {
                path: a.path()?,
                uid: a.u64(attr::UID)?,
                gid: a.u64(attr::GID)?,
            },
            cmd::UTIMES => Command::Utimes {
                path: a.path()?,
                atime: a.time(attr::ATIME)?,
                mtime: a.time(attr::MTIME)?,
                ctime: a.time(attr::CTIME)?,
            },
            cmd::END => Command::End,
            cmd::UPDATE_EXTENT => Command::UpdateExtent {
                path: a.path()?,
                offset: a.u64(attr::FILE_OFFSET)?,
                len: a.u64(attr::SIZE)?,
            },
            cmd::FALLOCATE => Command::Fallocate {
                path: a.path()?,
                mode: a.u32(attr::FALLOCATE_MODE)?,
                offset: a.u64(attr::FILE_OFFSET)?,
                len: a.u64(attr::SIZE)?,
            },
            cmd::FILEATTR => Command::Fileattr {
                path: a.path()?,
                attr: a.u64(attr::FILEATTR)?,
            },
            cmd::ENCODED_WRITE => Command::EncodedWrite {
                path: a.path()?,
                extent: EncodedExtent {
                    offset: a.u64(attr::FILE_OFFSET)?,
                    unencoded_file_len: a.u64(attr::UNENCODED_FILE_LEN)?,
                    unencoded_len: a.u64(attr::UNENCODED_LEN)?,
                    unencoded_offset: a.u64(attr::UNENCODED_OFFSET)?,
                    compression: a.u32_or_zero(attr::COMPRESSION)?,
                    encryption: a.u32_or_zero(attr::ENCRYPTION)?,
                    data: a.bytes(attr::DATA)?,
                },
            },
            cmd::ENABLE_VERITY => Command::EnableVerity { path: a.path()? },
            other => return Err(StreamError::UnknownCommand(other)),
        })
    }

    /// Its name in `enum btrfs_send_cmd`, lower case, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Subvol { .. } => "subvol",
            Command::Snapshot { .. } => "snapshot",
            Command::Mkfile { .. } => "mkfile",
            Command::Mkdir { .. } => "mkdir",
            Command::Mknod { .. } => "mknod",
            Command::Mkfifo { .. } => "mkfifo",
            Command::Mksock { .. } => "mksock",
            Command::Symlink { .. } => "symlink",
            Command::Rename { .. } => "rename",
            Command::Link { .. } => "link",
            Command::Unlink { .. } => "unlink",
            Command::Rmdir { .. } => "rmdir",
            Command::SetXattr { .. } => "set_xattr",
            Command::RemoveXattr { .. } => "remove_xattr",
            Command::Write { .. } => "write",
            Command::Clone { .. } => "clone",
            Command::Truncate { .. } => "truncate",
            Command::Chmod { .. } => "chmod",
            Command::Chown { .. } => "chown",
            Command::Utimes { .. } => "utimes",
            Command::End => "end",
            Command::UpdateExtent { .. } => "update_extent",
            Command::Fallocate { .. } => "fallocate",
            Command::Fileattr { .. } => "fileattr",
            Command::EncodedWrite { .. } => "encoded_write",
            Command::EnableVerity { .. } => "enable_verity",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::write::StreamWriter;
    use super::super::StreamReader;
    use super::*;

    fn parse_one(version: u32, c: u16, attrs: &[(u16, &[u8])]) -> Result<String, String> {
        let mut w = StreamWriter::new(Vec::new(), version).unwrap();
        w.command(c, attrs).unwrap();
        let bytes = w.into_inner();
        let mut r = StreamReader::new(&bytes[..]).map_err(|e| e.to_string())?;
        let raw = r.next_command().map_err(|e| e.to_string())?.unwrap();
        Command::parse(&raw)
            .map(|c| format!("{c:?}"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn parses_typed_attributes() {
        let t = |s: u64, n: u32| {
            let mut b = s.to_le_bytes().to_vec();
            b.extend_from_slice(&n.to_le_bytes());
            b
        };
        let (a, m, c) = (t(1, 2), t(3, 4), t(5, 6));
        let got = parse_one(
            1,
            cmd::UTIMES,
            &[
                (attr::PATH, b"d/f"),
                (attr::ATIME, &a),
                (attr::MTIME, &m),
                (attr::CTIME, &c),
            ],
        )
        .unwrap();
        assert!(got.contains("mtime: Timespec { sec: 3, nsec: 4 }"), "{got}");
        let got = parse_one(
            2,
            cmd::ENCODED_WRITE,
            &[
                (attr::PATH, b"f"),
                (attr::FILE_OFFSET, &4096u64.to_le_bytes()),
                (attr::UNENCODED_FILE_LEN, &8192u64.to_le_bytes()),
                (attr::UNENCODED_LEN, &8192u64.to_le_bytes()),
                (attr::UNENCODED_OFFSET, &0u64.to_le_bytes()),
                (attr::COMPRESSION, &2u32.to_le_bytes()),
                (attr::DATA, b"zzz"),
            ],
        )
        .unwrap();
        assert!(got.contains("compression: 2, encryption: 0"), "{got}");
    }

    #[test]
    fn refuses_missing_and_missized_attributes_and_unknown_commands() {
        let e = parse_one(1, cmd::TRUNCATE, &[(attr::PATH, b"f")]).unwrap_err();
        assert!(e.contains("lacks attribute 4"), "{e}");
        let e = parse_one(
            1,
            cmd::TRUNCATE,
            &[(attr::PATH, b"f"), (attr::SIZE, b"123")],
        )
        .unwrap_err();
        assert!(e.contains("attribute 4 of 3 bytes"), "{e}");
        let e = parse_one(1, 99, &[(attr::PATH, b"f")]).unwrap_err();
        assert!(e.contains("unknown send command 99"), "{e}");
        let e = parse_one(1, cmd::UNLINK, &[(attr::PATH, b"f"), (200, b"")]).unwrap_err();
        assert!(e.contains("attribute 200"), "{e}");
    }
}
