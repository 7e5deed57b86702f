//! Layer ids, and what the driver knows of a layer (its record, driver/record.rs, with what the
//! kernel keeps).

use crate::error::{Error, Result};
use nix::errno::Errno;
use serde::{Deserialize, Serialize};
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

/// What the driver knows of a layer: its record (driver/record.rs) with what the kernel keeps
/// (its id, read-only flag, subvolume id and UUID, read live). Also the shape of a record file of
/// version 0.1 (`metadata/<id>.json`), which `init` reads to migrate it.
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
    /// UUID of the layer's subvolume (applyDiff swaps in a new one). In a 0.1 record file: of
    /// the subvolume the record was written for.
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
}
