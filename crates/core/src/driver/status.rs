//! `status`: what a graph driver's Status reports about the store.

use super::Driver;
use crate::error::Result;
use crate::filesystem;
use crate::quota;
use crate::subvolume;
use std::os::fd::AsFd;

impl Driver {
    /// `[key, value]` pairs describing the store, as a graph driver's Status reports them.
    pub fn status(&self) -> Result<Vec<(String, String)>> {
        let dirs = self.dirs()?;
        let fs = filesystem::info(&self.subvolumes_path())?;
        let quotas = quota::enabled(dirs.subvolumes.as_fd(), &self.home)?;
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let devices: Vec<String> = fs.devices.iter().map(|d| d.path.clone()).collect();
        let mut out = vec![
            ("Home".to_string(), self.home.display().to_string()),
            ("Filesystem UUID".into(), subvolume::uuid_string(&fs.fsid)),
            ("Label".into(), fs.label.clone()),
            ("Devices".into(), devices.join(",")),
            ("Data Space Used".into(), fs.data.used.to_string()),
            ("Data Space Total".into(), fs.data.total.to_string()),
            ("Metadata Space Used".into(), fs.metadata.used.to_string()),
            ("Metadata Space Total".into(), fs.metadata.total.to_string()),
            ("Layers".into(), self.layers()?.len().to_string()),
            (
                "Quotas".into(),
                if quotas { "enabled" } else { "disabled" }.into(),
            ),
            ("Kernel Version".into(), kernel),
            ("Node Size".into(), fs.node_size.to_string()),
            ("Sector Size".into(), fs.sector_size.to_string()),
        ];
        if let Some(min) = self.min_space {
            out.push(("Min Space".into(), min.to_string()));
        }
        let idmapped = *self
            .idmapped
            .get_or_init(|| crate::idmount::supported(dirs.subvolumes.as_fd()));
        out.push((
            "Idmapped Mounts".into(),
            if idmapped { "supported" } else { "unsupported" }.into(),
        ));
        if !self.uids.is_identity() {
            out.push((
                "Remapped Root".into(),
                format!("{}:{}", self.root_uid, self.root_gid),
            ));
        }
        Ok(out)
    }
}
