//! `status`: what a graph driver's Status reports about the store, as a typed record (the
//! Docker-style display pairs are the caller's to render).

use super::Driver;
use crate::error::Result;
use crate::filesystem::{self, Space};
use crate::quota;
use crate::subvolume;
use std::os::fd::AsFd;
use std::path::PathBuf;

/// The store's filesystem, as FS_INFO and DEV_INFO report it.
#[derive(Debug, Clone)]
pub struct StoreFilesystem {
    pub uuid: String,
    pub label: String,
    /// Device paths, in device id order.
    pub devices: Vec<String>,
    pub node_size: u32,
    pub sector_size: u32,
}

/// What `status` reports.
#[derive(Debug, Clone)]
pub struct Status {
    pub home: PathBuf,
    pub filesystem: StoreFilesystem,
    /// Data block groups: allocated (`total`) and used bytes.
    pub data: Space,
    /// Metadata block groups: allocated (`total`) and used bytes.
    pub metadata: Space,
    /// Complete layers.
    pub layers: usize,
    pub quotas: bool,
    /// The kernel release (`uname -r`).
    pub kernel: String,
    pub min_space: Option<u64>,
    pub idmapped_mounts: bool,
    /// The host uid and gid of container root, when the driver's maps shift ids.
    pub remapped_root: Option<(u32, u32)>,
}

impl Driver {
    /// What a graph driver's Status reports about the store.
    pub fn status(&self) -> Result<Status> {
        let dirs = self.dirs()?;
        let fs = filesystem::info(&self.subvolumes_path())?;
        let quotas = quota::enabled(dirs.subvolumes.as_fd(), &self.home)?;
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let idmapped_mounts = *self
            .idmapped
            .get_or_init(|| crate::idmount::supported(dirs.subvolumes.as_fd()));
        Ok(Status {
            home: self.home.clone(),
            filesystem: StoreFilesystem {
                uuid: subvolume::uuid_string(&fs.fsid),
                label: fs.label,
                devices: fs.devices.into_iter().map(|d| d.path).collect(),
                node_size: fs.node_size,
                sector_size: fs.sector_size,
            },
            data: fs.data,
            metadata: fs.metadata,
            layers: self.layers()?.len(),
            quotas,
            kernel,
            min_space: self.min_space,
            idmapped_mounts,
            remapped_root: (!self.uids.is_identity()).then_some((self.root_uid, self.root_gid)),
        })
    }
}
