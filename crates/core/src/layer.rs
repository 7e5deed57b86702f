//! Layer ids and the per-layer metadata record the driver keeps beside the subvolumes.

use crate::error::{Context, Error, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{fsync, unlinkat, UnlinkatFlags};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

pub const ID_MAX: usize = 128;

/// Check a layer id: `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`, else EINVAL.
pub fn check_id(id: &str, what: &'static str) -> Result<()> {
    let bad = |why: &str| {
        Error::invalid(
            Errno::EINVAL,
            what,
            Path::new(id),
            format!("invalid layer id {id:?}: {why}"),
        )
    };
    let b = id.as_bytes();
    if b.is_empty() {
        return Err(bad("empty"));
    }
    if b.len() > ID_MAX {
        return Err(bad("longer than 128 bytes"));
    }
    if !b[0].is_ascii_alphanumeric() {
        return Err(bad("must start with a letter or digit"));
    }
    if let Some(c) = b
        .iter()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-')))
    {
        return Err(bad(&format!(
            "byte {c:#04x} is not one of A-Z a-z 0-9 _ . -"
        )));
    }
    Ok(())
}

/// What the driver records about a layer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LayerMeta {
    pub id: String,
    pub parent: Option<String>,
    /// Creation time, milliseconds since the epoch.
    pub created: u64,
    pub read_only: bool,
    /// Referenced-bytes limit (qgroup), if one was asked for.
    pub size: Option<u64>,
    pub subvolume_id: u64,
    pub mount_label: Option<String>,
    /// Id maps of this layer when they differ from the driver's (a `remap`ped layer and its
    /// descendants); its owners are host ids under these maps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid_maps: Option<Vec<crate::idmap::IdMap>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid_maps: Option<Vec<crate::idmap::IdMap>>,
    /// UUID of the subvolume this record describes (applyDiff swaps in a new one); the
    /// `origin` below is only trusted while the layer's live subvolume has this UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Where the tree came from, for the generation fast path of `changes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// The subvolume a layer's tree was snapshotted from and the transaction of that snapshot:
/// the two trees were the same at `transid`. Kept across applyDiff (whose new subvolume is a
/// snapshot of the layer, so everything it adds is newer still).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Origin {
    pub uuid: String,
    pub transid: u64,
}

impl Origin {
    /// What the kernel records of the subvolume `info` describes: the subvolume it is a
    /// snapshot of (its parent UUID) and when; None for a subvolume made empty.
    pub fn of(info: &crate::subvolume::SubvolumeInfo) -> Option<Origin> {
        (info.parent_uuid != [0; 16]).then(|| Origin {
            uuid: crate::subvolume::uuid_string(&info.parent_uuid),
            transid: info.otransid,
        })
    }
}

fn file_name(id: &str) -> String {
    format!("{id}.json")
}

/// Write `meta` durably and atomically: a temporary file, fsync, rename over the final name.
pub fn write(dir: BorrowedFd<'_>, meta: &LayerMeta, tmp_name: &str, shown: &Path) -> Result<()> {
    let body = serde_json::to_vec_pretty(meta).map_err(|e| Error::internal(e.to_string()))?;
    let fd = openat(
        dir,
        tmp_name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o600),
    )
    .at("openat", shown)?;
    let mut f = std::fs::File::from(fd);
    let done = f
        .write_all(&body)
        .map_err(|e| {
            Error::sys(
                Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                "write",
                shown,
            )
        })
        .and_then(|_| fsync(f.as_fd()).at("fsync", shown))
        .and_then(|_| {
            renameat(dir, tmp_name, dir, file_name(&meta.id).as_str()).at("renameat", shown)
        });
    if done.is_err() {
        let _ = unlinkat(dir, tmp_name, UnlinkatFlags::NoRemoveDir);
    }
    done
}

/// Read the metadata of layer `id`; ENOENT when there is none.
pub fn read(dir: BorrowedFd<'_>, id: &str, shown: &Path) -> Result<LayerMeta> {
    let fd = openat(
        dir,
        file_name(id).as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .at("openat", shown)?;
    let mut body = Vec::new();
    std::fs::File::from(fd)
        .read_to_end(&mut body)
        .map_err(|e| {
            Error::sys(
                Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                "read",
                shown,
            )
        })?;
    serde_json::from_slice(&body).map_err(|e| {
        Error::invalid(
            Errno::EIO,
            "read",
            shown,
            format!("corrupt layer metadata: {e}"),
        )
    })
}

/// Remove the metadata of layer `id`; missing is fine.
pub fn remove(dir: BorrowedFd<'_>, id: &str, shown: &Path) -> Result<()> {
    match unlinkat(dir, file_name(id).as_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::sys(e, "unlinkat", shown)),
    }
}

/// The layer id a metadata file name belongs to, if it is one.
pub fn id_of_file(name: &str) -> Option<&str> {
    name.strip_suffix(".json")
        .filter(|id| check_id(id, "").is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "A9", "0", "abc_def.ghi-jkl", &"x".repeat(128)] {
            assert!(check_id(ok, "t").is_ok(), "{ok}");
        }
        let long = "x".repeat(129);
        for bad in [
            "", ".", "..", ".a", "_a", "-a", "a/b", "/", "a\0", "a b", "é", &long, "a:b", "a*",
        ] {
            let e = check_id(bad, "t").unwrap_err();
            assert_eq!(e.code_str(), "EINVAL", "{bad:?}");
        }
    }

    #[test]
    fn metadata_file_names() {
        assert_eq!(id_of_file("abc.json"), Some("abc"));
        assert_eq!(id_of_file(".tmp-abc.json"), None);
        assert_eq!(id_of_file("abc"), None);
    }
}
