//! The graph driver class: a handle on a core `Driver`, every method an AsyncTask.

use crate::error::Failure;
use crate::job::Job;
use crate::subvolume::Space;
use btrfs_layers_core::driver::{CreateOptions, Driver, DriverOptions};
use btrfs_layers_core::idmap::IdMap;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::path::PathBuf;
use std::sync::Arc;

#[napi(object)]
pub struct IdMapEntry {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

#[napi(object)]
pub struct DriverInitOptions {
    pub uid_maps: Option<Vec<IdMapEntry>>,
    pub gid_maps: Option<Vec<IdMapEntry>>,
    pub min_space: Option<f64>,
    /// Open an existing store for reading only (no lock, no private mount, no write).
    pub read_only: Option<bool>,
}

#[napi(object)]
pub struct LayerCreateOptions {
    pub mount_label: Option<String>,
    pub size: Option<f64>,
    pub read_only: Option<bool>,
}

#[napi(object)]
pub struct LayerMetadata {
    pub id: String,
    pub parent: Option<String>,
    /// Milliseconds since the epoch.
    pub created_ms: f64,
    pub read_only: bool,
    /// The size limit in bytes.
    pub size: Option<f64>,
    pub subvolume_id: f64,
    pub uuid: String,
    pub mount_label: Option<String>,
    /// Only for a layer stored under other id maps than the driver's (remap).
    pub uid_maps: Option<Vec<IdMapEntry>>,
    pub gid_maps: Option<Vec<IdMapEntry>>,
}

#[napi(object)]
pub struct StoreFilesystem {
    pub uuid: String,
    pub label: String,
    pub devices: Vec<String>,
    pub node_size: u32,
    pub sector_size: u32,
}

#[napi(object)]
pub struct StoreSpace {
    pub data: Space,
    pub metadata: Space,
}

#[napi(object)]
pub struct RemappedRoot {
    pub uid: u32,
    pub gid: u32,
}

#[napi(object)]
pub struct StoreStatus {
    pub home: String,
    pub filesystem: StoreFilesystem,
    pub space: StoreSpace,
    pub layers: u32,
    pub quotas: bool,
    pub kernel: String,
    pub min_space: Option<f64>,
    pub idmapped_mounts: bool,
    pub remapped_root: Option<RemappedRoot>,
}

fn entries(v: Option<Vec<IdMap>>) -> Option<Vec<IdMapEntry>> {
    v.map(|v| {
        v.into_iter()
            .map(|m| IdMapEntry {
                container_id: m.container_id,
                host_id: m.host_id,
                size: m.size,
            })
            .collect()
    })
}

pub(crate) fn maps(v: Option<Vec<IdMapEntry>>) -> Vec<IdMap> {
    v.unwrap_or_default()
        .into_iter()
        .map(|m| IdMap {
            container_id: m.container_id,
            host_id: m.host_id,
            size: m.size,
        })
        .collect()
}

#[napi]
pub struct NativeDriver {
    pub(crate) inner: Arc<Driver>,
}

#[napi(js_name = "driverInit", ts_return_type = "Promise<NativeDriver>")]
pub fn driver_init(home: String, options: DriverInitOptions) -> AsyncTask<Job<NativeDriver>> {
    Job::new("init", move || {
        let opts = DriverOptions {
            uid_maps: maps(options.uid_maps),
            gid_maps: maps(options.gid_maps),
            min_space: options.min_space.map(|n| n as u64),
            read_only: options.read_only.unwrap_or(false),
        };
        Ok(NativeDriver {
            inner: Arc::new(Driver::init(&PathBuf::from(home), opts)?),
        })
    })
}

#[napi]
impl NativeDriver {
    #[napi(getter)]
    pub fn home(&self) -> String {
        self.inner.home().to_string_lossy().into_owned()
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn create(
        &self,
        id: String,
        parent: Option<String>,
        options: LayerCreateOptions,
    ) -> AsyncTask<Job<()>> {
        let d = self.inner.clone();
        Job::new("create", move || {
            let opts = CreateOptions {
                mount_label: options.mount_label,
                size: options.size.map(|n| n as u64),
                read_only: options.read_only.unwrap_or(false),
            };
            d.create(&id, parent.as_deref(), &opts)
        })
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn remove(&self, id: String) -> AsyncTask<Job<()>> {
        let d = self.inner.clone();
        Job::new("remove", move || d.remove(&id))
    }

    #[napi(ts_return_type = "Promise<string>")]
    pub fn get(&self, id: String, mount_label: Option<String>) -> AsyncTask<Job<String>> {
        let d = self.inner.clone();
        Job::new("get", move || {
            Ok(d.get(&id, mount_label.as_deref())?
                .to_string_lossy()
                .into_owned())
        })
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn put(&self, id: String) -> AsyncTask<Job<()>> {
        let d = self.inner.clone();
        Job::new("put", move || d.put(&id))
    }

    /// Synchronous: a count read under a lock, no system call.
    #[napi(js_name = "refCount")]
    pub fn ref_count(&self, env: &Env, id: String) -> Result<u32> {
        self.inner
            .ref_count(&id)
            .map_err(|e| Failure::from(e).into_js(env, "refCount"))
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn sync(&self) -> AsyncTask<Job<()>> {
        let d = self.inner.clone();
        Job::new("sync", move || d.sync())
    }

    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn exists(&self, id: String) -> AsyncTask<Job<bool>> {
        let d = self.inner.clone();
        Job::new("exists", move || d.exists(&id))
    }

    #[napi(ts_return_type = "Promise<Array<string>>")]
    pub fn layers(&self) -> AsyncTask<Job<Vec<String>>> {
        let d = self.inner.clone();
        Job::new("layers", move || d.layers())
    }

    #[napi(ts_return_type = "Promise<LayerMetadata>")]
    pub fn metadata(&self, id: String) -> AsyncTask<Job<LayerMetadata>> {
        let d = self.inner.clone();
        Job::new("getMetadata", move || {
            let m = d.metadata(&id)?;
            Ok(LayerMetadata {
                id: m.id,
                parent: m.parent,
                created_ms: m.created as f64,
                read_only: m.read_only,
                size: m.size.map(|s| s as f64),
                subvolume_id: m.subvolume_id as f64,
                uuid: m.uuid.unwrap_or_default(),
                mount_label: m.mount_label,
                uid_maps: entries(m.uid_maps),
                gid_maps: entries(m.gid_maps),
            })
        })
    }

    #[napi(ts_return_type = "Promise<StoreStatus>")]
    pub fn status(&self) -> AsyncTask<Job<StoreStatus>> {
        let d = self.inner.clone();
        Job::new("status", move || {
            let s = d.status()?;
            Ok(StoreStatus {
                home: s.home.to_string_lossy().into_owned(),
                filesystem: StoreFilesystem {
                    uuid: s.filesystem.uuid,
                    label: s.filesystem.label,
                    devices: s.filesystem.devices,
                    node_size: s.filesystem.node_size,
                    sector_size: s.filesystem.sector_size,
                },
                space: StoreSpace {
                    data: Space::from(s.data),
                    metadata: Space::from(s.metadata),
                },
                layers: s.layers as u32,
                quotas: s.quotas,
                kernel: s.kernel,
                min_space: s.min_space.map(|n| n as f64),
                idmapped_mounts: s.idmapped_mounts,
                remapped_root: s.remapped_root.map(|(uid, gid)| RemappedRoot { uid, gid }),
            })
        })
    }

    #[napi(js_name = "releaseQgroups", ts_return_type = "Promise<void>")]
    pub fn release_qgroups(&self) -> AsyncTask<Job<()>> {
        let d = self.inner.clone();
        Job::new("releaseQgroups", move || d.release_qgroups())
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn cleanup(&self) -> AsyncTask<Job<()>> {
        let d = self.inner.clone();
        Job::new("cleanup", move || d.cleanup())
    }
}

#[napi]
impl NativeDriver {
    #[napi(js_name = "mountIdmapped", ts_return_type = "Promise<void>")]
    pub fn mount_idmapped(
        &self,
        id: String,
        target: String,
        mapping: DriverInitOptions,
    ) -> AsyncTask<Job<()>> {
        let d = self.inner.clone();
        Job::new("mountIdmapped", move || {
            d.mount_idmapped(
                &id,
                &PathBuf::from(target),
                &maps(mapping.uid_maps),
                &maps(mapping.gid_maps),
            )
        })
    }
}
