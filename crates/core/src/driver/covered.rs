//! A layer a filesystem is mounted on (a tmpfs, a bind mount): its name, `subvolumes/<id>`,
//! then leads to the mount instead of the layer. Such a layer exists (`exists`, `layers` and
//! `init` keep it and its record) but is busy: a call that would open or remove it gets EBUSY
//! rather than work on the mounted filesystem. Only the driver makes entries under layer ids,
//! and mounting needs privilege, so a covered name is taken for a layer without a look below.

use super::Driver;
use crate::error::{Error, Result};
use crate::open::{entry_kind, EntryKind};
use nix::errno::Errno;
use std::ffi::OsStr;
use std::os::fd::AsFd;

/// What `subvolumes/<id>` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LayerEntry {
    /// Nothing, or something that is not a subvolume.
    Absent,
    Layer,
    /// A mount point: the layer is below the mount.
    Covered,
}

impl Driver {
    /// One statx of the name: the common case (a layer, or nothing) costs no more than a stat.
    pub(super) fn layer_entry(&self, id: &str) -> Result<LayerEntry> {
        let dirs = self.dirs()?;
        let sub = dirs.subvolumes.as_fd();
        Ok(
            match entry_kind(sub, OsStr::new(id), &self.layer_path(id))? {
                EntryKind::SubvolumeRoot => LayerEntry::Layer,
                EntryKind::MountPoint => LayerEntry::Covered,
                EntryKind::Absent | EntryKind::Other => LayerEntry::Absent,
            },
        )
    }

    /// Whether layer `id` exists, a filesystem mounted on it or not.
    pub(super) fn layer_exists(&self, id: &str) -> Result<bool> {
        Ok(self.layer_entry(id)? != LayerEntry::Absent)
    }

    /// EBUSY: a filesystem is mounted on layer `id`.
    pub(super) fn covered(&self, id: &str) -> Error {
        Error::refused(
            Errno::EBUSY,
            "statx",
            &self.layer_path(id),
            "a filesystem is mounted on the layer; unmount it first",
        )
    }
}
