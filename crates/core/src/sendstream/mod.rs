//! The btrfs send stream (`fs/btrfs/send.h`, protocol versions 1 to 3): a reader of its
//! commands with every length and crc32c checked ([`reader`]), the typed commands
//! ([`command`]), and a writer ([`write`]) for tests and tools that build streams.

pub mod command;
mod crc32c;
pub mod reader;
pub mod write;

pub use command::Command;
pub use reader::{RawCommand, StreamReader};

use std::fmt;
use std::io;

/// Command numbers (`enum btrfs_send_cmd`).
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
    // Version 2.
    pub const FALLOCATE: u16 = 23;
    pub const FILEATTR: u16 = 24;
    pub const ENCODED_WRITE: u16 = 25;
    // Version 3.
    pub const ENABLE_VERITY: u16 = 26;
}

/// Attribute types (`enum btrfs_send_attr`).
pub mod attr {
    pub const UUID: u16 = 1;
    pub const CTRANSID: u16 = 2;
    pub const INO: u16 = 3;
    pub const SIZE: u16 = 4;
    pub const MODE: u16 = 5;
    pub const UID: u16 = 6;
    pub const GID: u16 = 7;
    pub const RDEV: u16 = 8;
    pub const CTIME: u16 = 9;
    pub const MTIME: u16 = 10;
    pub const ATIME: u16 = 11;
    pub const OTIME: u16 = 12;
    pub const XATTR_NAME: u16 = 13;
    pub const XATTR_DATA: u16 = 14;
    pub const PATH: u16 = 15;
    pub const PATH_TO: u16 = 16;
    /// A symlink's target text for SYMLINK; the existing name for LINK.
    pub const PATH_LINK: u16 = 17;
    pub const FILE_OFFSET: u16 = 18;
    /// From v2 on, the last attribute of its command, with no length: it runs to the end.
    pub const DATA: u16 = 19;
    pub const CLONE_UUID: u16 = 20;
    pub const CLONE_CTRANSID: u16 = 21;
    pub const CLONE_PATH: u16 = 22;
    pub const CLONE_OFFSET: u16 = 23;
    pub const CLONE_LEN: u16 = 24;
    // Version 2.
    pub const FALLOCATE_MODE: u16 = 25;
    pub const FILEATTR: u16 = 26;
    pub const UNENCODED_FILE_LEN: u16 = 27;
    pub const UNENCODED_LEN: u16 = 28;
    pub const UNENCODED_OFFSET: u16 = 29;
    pub const COMPRESSION: u16 = 30;
    pub const ENCRYPTION: u16 = 31;
    // Version 3.
    pub const VERITY_ALGORITHM: u16 = 32;
    pub const VERITY_BLOCK_SIZE: u16 = 33;
    pub const VERITY_SALT_DATA: u16 = 34;
    pub const VERITY_SIG_DATA: u16 = 35;
    /// The highest attribute type known.
    pub const MAX: u16 = 35;
}

#[derive(Debug)]
pub enum StreamError {
    Io(io::Error),
    BadMagic,
    Version(u32),
    /// The stream ended inside a header or a command.
    Truncated,
    CommandTooLong(u32),
    /// The command's crc32c does not match its bytes.
    BadCrc {
        cmd: u16,
    },
    /// An attribute runs past the end of its command.
    BadAttribute {
        cmd: u16,
    },
    /// A command number no protocol version has.
    UnknownCommand(u16),
    /// A command without an attribute it needs.
    MissingAttribute {
        cmd: u16,
        attr: u16,
    },
    /// An attribute of the wrong size for its type, or of a type unknown.
    AttributeSize {
        cmd: u16,
        attr: u16,
        len: usize,
    },
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Io(e) => write!(f, "read: {e}"),
            StreamError::BadMagic => write!(f, "not a btrfs send stream"),
            StreamError::Version(v) => write!(
                f,
                "send stream version {v}, expected 1 to {}",
                reader::MAX_VERSION
            ),
            StreamError::Truncated => write!(f, "send stream truncated"),
            StreamError::CommandTooLong(n) => write!(f, "send stream command of {n} bytes"),
            StreamError::BadCrc { cmd } => write!(f, "crc32c mismatch in send command {cmd}"),
            StreamError::BadAttribute { cmd } => {
                write!(f, "malformed attribute in send command {cmd}")
            }
            StreamError::UnknownCommand(c) => write!(f, "unknown send command {c}"),
            StreamError::MissingAttribute { cmd, attr } => {
                write!(f, "send command {cmd} lacks attribute {attr}")
            }
            StreamError::AttributeSize { cmd, attr, len } => {
                write!(f, "attribute {attr} of {len} bytes in send command {cmd}")
            }
        }
    }
}
