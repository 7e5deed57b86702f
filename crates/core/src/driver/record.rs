//! The layer record: what the driver knows of a layer beyond what the kernel keeps, stored as
//! an xattr on the root directory of the layer's subvolume.
//!
//! Why an xattr there, and no file beside the layer: btrfs commits metadata in atomic
//! transactions, in order, and an xattr is metadata. The record is set on the temporary
//! subvolume before the rename that publishes it, so every committed tree that holds the
//! layer's name holds its record too, with no fsync: after a crash or a power cut a layer is
//! complete with its record, or absent. A record in a file of its own is consistent with the
//! layer only when fsynced before that rename, and a btrfs fsync is a log-tree commit: it was
//! what made an empty layer cost 1.5 ms instead of the 50 µs of its ioctl.
//!
//! Nothing caches the records: one getxattr costs what reading a cache file would, and a cache
//! would have to be written on every create. A layer made empty under the driver's maps with
//! no options needs no record at all (its parent is none, its creation time the subvolume's
//! otime, its flags the kernel's), so the common create is the bare SUBVOL_CREATE.
//!
//! The name is in the `trusted.` namespace, which only CAP_SYS_ADMIN can read or write: a
//! container writing its own root directory cannot forge it. A driver without that privilege
//! keeps its records under `user.`; `init` finds out which by trying. Neither name ever goes
//! into a diff, and applyDiff refuses both.

use crate::error::{Context, Error, Result};
use crate::idmap::IdMap;
use crate::layer::{LayerMeta, Origin};
use crate::subvolume::{uuid_string, SubvolumeInfo};
use nix::errno::Errno;
use serde::{Deserialize, Serialize};
use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

/// The record's xattr in each namespace.
pub const TRUSTED: &CStr = c"trusted.btrfs-layers.record";
pub const USER: &CStr = c"user.btrfs-layers.record";

/// Whether `name` is an xattr of the driver's own, never part of a layer's contents.
pub fn is_reserved(name: &[u8]) -> bool {
    name == TRUSTED.to_bytes() || name == USER.to_bytes()
}

/// Which of the two names this driver's records go under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    Trusted,
    User,
}

impl Namespace {
    fn name(self) -> &'static CStr {
        match self {
            Namespace::Trusted => TRUSTED,
            Namespace::User => USER,
        }
    }

    /// The namespace this process may write in the directory `fd`: trusted, unless the
    /// kernel refuses it (EPERM without CAP_SYS_ADMIN).
    pub fn probe(fd: BorrowedFd<'_>, shown: &Path) -> Result<Namespace> {
        let probe = c"trusted.btrfs-layers.probe";
        // SAFETY: the name is NUL-terminated; the value is one readable byte.
        let r =
            unsafe { libc::fsetxattr(fd.as_raw_fd(), probe.as_ptr(), c"1".as_ptr().cast(), 1, 0) };
        match Errno::result(r) {
            Ok(_) => {
                // SAFETY: the name is NUL-terminated.
                unsafe { libc::fremovexattr(fd.as_raw_fd(), probe.as_ptr()) };
                Ok(Namespace::Trusted)
            }
            Err(Errno::EPERM) | Err(Errno::EACCES) => Ok(Namespace::User),
            Err(e) => Err(Error::sys(e, "fsetxattr", shown)),
        }
    }
    /// `probe` without a write, for a reader: replacing an xattr that does not exist changes
    /// nothing (ENODATA) once the kernel allows the namespace, and it refuses `trusted.`
    /// without CAP_SYS_ADMIN (EPERM) before it looks.
    pub fn probe_read_only(fd: BorrowedFd<'_>, shown: &Path) -> Result<Namespace> {
        let probe = c"trusted.btrfs-layers.probe";
        // SAFETY: the name is NUL-terminated; the value is one readable byte.
        let r = unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                probe.as_ptr(),
                c"1".as_ptr().cast(),
                1,
                libc::XATTR_REPLACE,
            )
        };
        match Errno::result(r) {
            Ok(_) | Err(Errno::ENODATA) => Ok(Namespace::Trusted),
            Err(Errno::EPERM) | Err(Errno::EACCES) => Ok(Namespace::User),
            // A read-only mount cannot tell; a record is read where a privileged driver writes it.
            Err(Errno::EROFS) => Ok(Namespace::Trusted),
            Err(e) => Err(Error::sys(e, "fsetxattr", shown)),
        }
    }
}

/// What is stored. Every field may be missing: a missing record is a layer made empty with no
/// options. Records of earlier versions (JSON files in `metadata/`) have the same fields, and
/// more that are now read from the kernel (`id`, `readOnly`, `subvolumeId`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Record {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Creation time, milliseconds since the epoch; the subvolume's otime when missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount_label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid_maps: Option<Vec<IdMap>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid_maps: Option<Vec<IdMap>>,
    /// UUID of the subvolume the record was written for: a snapshot copies the xattr, and
    /// `origin` is trusted only on the subvolume it was written for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

impl Record {
    /// Parse a stored record (this version's xattr or an earlier version's file).
    pub fn parse(body: &[u8], shown: &Path) -> Result<Record> {
        serde_json::from_slice(body).map_err(|e| {
            Error::refused(
                Errno::EIO,
                "getxattr",
                shown,
                format!("corrupt layer record: {e}"),
            )
        })
    }

    /// The full view of layer `id` whose live subvolume `info` describes.
    pub fn view(self, id: &str, info: &SubvolumeInfo) -> LayerMeta {
        LayerMeta {
            id: id.to_string(),
            parent: self.parent,
            created: self.created.unwrap_or_else(|| otime_ms(info)),
            read_only: info.read_only(),
            size: self.size,
            subvolume_id: info.id,
            mount_label: self.mount_label,
            uid_maps: self.uid_maps,
            gid_maps: self.gid_maps,
            uuid: Some(uuid_string(&info.uuid)),
            origin: self.origin,
        }
    }

    /// Whether the record's `origin` describes the subvolume `info` describes (it was written
    /// for that subvolume, not copied into it by a snapshot).
    pub fn written_for(&self, info: &SubvolumeInfo) -> bool {
        self.uuid.as_deref() == Some(uuid_string(&info.uuid).as_str())
    }
}

/// When the subvolume `info` describes was made, in milliseconds since the epoch.
pub fn otime_ms(info: &SubvolumeInfo) -> u64 {
    info.otime.sec * 1000 + u64::from(info.otime.nsec) / 1_000_000
}

/// The record on the layer root `fd`; None when it has none.
pub fn read(fd: BorrowedFd<'_>, ns: Namespace, shown: &Path) -> Result<Option<Record>> {
    let mut buf = vec![0u8; 512];
    loop {
        // SAFETY: the name is NUL-terminated; buf is writable for buf.len() bytes.
        let r = unsafe {
            libc::fgetxattr(
                fd.as_raw_fd(),
                ns.name().as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        match Errno::result(r) {
            Ok(n) => {
                buf.truncate(n as usize);
                return Record::parse(&buf, shown).map(Some);
            }
            Err(Errno::ERANGE) => buf.resize(buf.len() * 8, 0),
            Err(Errno::ENODATA) | Err(Errno::EOPNOTSUPP) => return Ok(None),
            Err(e) => return Err(Error::sys(e, "fgetxattr", shown)),
        }
    }
}

/// Set `record` on the layer root `fd` (before it is published or made read-only).
pub fn write(fd: BorrowedFd<'_>, ns: Namespace, record: &Record, shown: &Path) -> Result<()> {
    let body = serde_json::to_vec(record).map_err(|e| Error::internal(e.to_string()))?;
    // SAFETY: the name is NUL-terminated; body is readable for body.len() bytes.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            ns.name().as_ptr(),
            body.as_ptr().cast(),
            body.len(),
            0,
        )
    };
    Errno::result(r).map(drop).at("fsetxattr", shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_record_is_stored_as_an_empty_object() {
        assert_eq!(serde_json::to_string(&Record::default()).unwrap(), "{}");
        assert_eq!(
            Record::parse(b"{}", Path::new("x")).unwrap(),
            Record::default()
        );
    }

    #[test]
    fn records_of_earlier_versions_parse() {
        let old = br#"{"id":"c","parent":"b","created":1700000000000,"readOnly":true,"size":1048576,
            "subvolumeId":270,"mountLabel":null,"uuid":"0d2c","origin":{"uuid":"9f","transid":12}}"#;
        let r = Record::parse(old, Path::new("x")).unwrap();
        assert_eq!(r.parent.as_deref(), Some("b"));
        assert_eq!(r.created, Some(1_700_000_000_000));
        assert_eq!(r.size, Some(1_048_576));
        assert_eq!(r.mount_label, None);
        assert_eq!(
            r.origin,
            Some(Origin {
                uuid: "9f".into(),
                transid: 12
            })
        );
    }

    #[test]
    fn a_truncated_record_is_eio() {
        let e = Record::parse(br#"{"parent":"b","#, Path::new("x")).unwrap_err();
        assert_eq!(e.code_str(), "EIO");
    }

    #[test]
    fn only_the_two_record_names_are_reserved() {
        assert!(is_reserved(b"trusted.btrfs-layers.record"));
        assert!(is_reserved(b"user.btrfs-layers.record"));
        assert!(!is_reserved(b"user.btrfs-layers.other"));
        assert!(!is_reserved(b"user.mime_type"));
    }
}
