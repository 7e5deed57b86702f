//! The graph driver class: a handle on a core `Driver`, every method an AsyncTask.

use crate::job::{to_js_error, Job};
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
    pub created_ms: f64,
    pub read_only: bool,
    pub size: Option<f64>,
    pub subvolume_id: f64,
    pub mount_label: Option<String>,
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

#[napi(js_name = "driverInit")]
pub fn driver_init(home: String, options: DriverInitOptions) -> AsyncTask<Job<NativeDriver>> {
    Job::new(move || {
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

    #[napi]
    pub fn create(
        &self,
        id: String,
        parent: Option<String>,
        options: LayerCreateOptions,
    ) -> AsyncTask<Job<()>> {
        let d = self.inner.clone();
        Job::new(move || {
            let opts = CreateOptions {
                mount_label: options.mount_label,
                size: options.size.map(|n| n as u64),
                read_only: options.read_only.unwrap_or(false),
            };
            d.create(&id, parent.as_deref(), &opts)
        })
    }

    #[napi]
    pub fn remove(&self, id: String) -> AsyncTask<Job<()>> {
        let d = self.inner.clone();
        Job::new(move || d.remove(&id))
    }

    #[napi]
    pub fn get(&self, id: String, mount_label: Option<String>) -> AsyncTask<Job<String>> {
        let d = self.inner.clone();
        Job::new(move || {
            Ok(d.get(&id, mount_label.as_deref())?
                .to_string_lossy()
                .into_owned())
        })
    }

    #[napi]
    pub fn put(&self, id: String) -> AsyncTask<Job<()>> {
        let d = self.inner.clone();
        Job::new(move || d.put(&id))
    }

    /// Synchronous: a count read under a lock, no system call.
    #[napi(js_name = "refCount")]
    pub fn ref_count(&self, id: String) -> Result<u32> {
        self.inner.ref_count(&id).map_err(|e| to_js_error(&e))
    }

    #[napi]
    pub fn sync(&self) -> AsyncTask<Job<()>> {
        let d = self.inner.clone();
        Job::new(move || d.sync())
    }

    #[napi]
    pub fn exists(&self, id: String) -> AsyncTask<Job<bool>> {
        let d = self.inner.clone();
        Job::new(move || d.exists(&id))
    }

    #[napi]
    pub fn layers(&self) -> AsyncTask<Job<Vec<String>>> {
        let d = self.inner.clone();
        Job::new(move || d.layers())
    }

    #[napi]
    pub fn metadata(&self, id: String) -> AsyncTask<Job<LayerMetadata>> {
        let d = self.inner.clone();
        Job::new(move || {
            let m = d.metadata(&id)?;
            Ok(LayerMetadata {
                id: m.id,
                parent: m.parent,
                created_ms: m.created as f64,
                read_only: m.read_only,
                size: m.size.map(|s| s as f64),
                subvolume_id: m.subvolume_id as f64,
                mount_label: m.mount_label,
            })
        })
    }

    #[napi]
    pub fn status(&self) -> AsyncTask<Job<Vec<Vec<String>>>> {
        let d = self.inner.clone();
        Job::new(move || Ok(d.status()?.into_iter().map(|(k, v)| vec![k, v]).collect()))
    }

    #[napi(js_name = "releaseQgroups")]
    pub fn release_qgroups(&self) -> AsyncTask<Job<()>> {
        let d = self.inner.clone();
        Job::new(move || d.release_qgroups())
    }

    #[napi]
    pub fn cleanup(&self) -> AsyncTask<Job<()>> {
        let d = self.inner.clone();
        Job::new(move || d.cleanup())
    }
}

#[napi]
impl NativeDriver {
    #[napi(js_name = "mountIdmapped")]
    pub fn mount_idmapped(
        &self,
        id: String,
        target: String,
        mapping: DriverInitOptions,
    ) -> AsyncTask<Job<()>> {
        let d = self.inner.clone();
        Job::new(move || {
            d.mount_idmapped(
                &id,
                &PathBuf::from(target),
                &maps(mapping.uid_maps),
                &maps(mapping.gid_maps),
            )
        })
    }
}
