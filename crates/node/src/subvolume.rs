//! The low-level subvolume API: one async export per core call.

use crate::error::js_path;
use crate::job::Job;
use btrfs_layers_core::{delete, filesystem, subvolume};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

#[napi(object)]
pub struct SubvolumeInfo {
    pub id: i64,
    pub name: String,
    pub parent_id: i64,
    pub dir_id: i64,
    pub uuid: String,
    /// `null` when the subvolume is not a snapshot.
    pub parent_uuid: Option<String>,
    /// `null` when the subvolume was not received.
    pub received_uuid: Option<String>,
    pub generation: i64,
    pub ctransid: i64,
    pub otransid: i64,
    pub read_only: bool,
    /// Milliseconds since the epoch.
    pub ctime_ms: f64,
    /// Milliseconds since the epoch.
    pub otime_ms: f64,
}

#[napi(object)]
pub struct NestedSubvolume {
    pub path: String,
    pub id: i64,
    /// The path's bytes, only when they are not UTF-8 (`path` then holds U+FFFD for them).
    pub raw_path: Option<Buffer>,
}

#[napi(object)]
pub struct Space {
    pub total: f64,
    pub used: f64,
}

#[napi(object)]
pub struct Device {
    pub id: i64,
    pub path: String,
    pub uuid: String,
    pub total_bytes: f64,
    pub bytes_used: f64,
}

#[napi(object)]
pub struct FilesystemInfo {
    pub fsid: String,
    pub label: String,
    pub devices: Vec<Device>,
    pub node_size: u32,
    pub sector_size: u32,
    pub generation: i64,
    pub data: Space,
    pub metadata: Space,
    pub system: Space,
}

fn uuid_or_null(u: &[u8; 16]) -> Option<String> {
    u.iter().any(|&b| b != 0).then(|| subvolume::uuid_string(u))
}

fn ms(t: &btrfs_layers_core::ioctl::Timespec) -> f64 {
    t.sec as f64 * 1000.0 + (t.nsec / 1_000_000) as f64
}

impl From<filesystem::Space> for Space {
    fn from(s: filesystem::Space) -> Space {
        Space {
            total: s.total as f64,
            used: s.used as f64,
        }
    }
}

#[napi(js_name = "isSubvolume", ts_return_type = "Promise<boolean>")]
pub fn is_subvolume(path: String) -> AsyncTask<Job<bool>> {
    Job::new("isSubvolume", move || {
        subvolume::is_subvolume(&PathBuf::from(path))
    })
}

#[napi(js_name = "createSubvolume", ts_return_type = "Promise<void>")]
pub fn create_subvolume(path: String) -> AsyncTask<Job<()>> {
    Job::new("createSubvolume", move || {
        subvolume::create(&PathBuf::from(path))
    })
}

#[napi(js_name = "snapshot", ts_return_type = "Promise<void>")]
pub fn snapshot(source: String, dest: String, read_only: bool) -> AsyncTask<Job<()>> {
    Job::new("snapshot", move || {
        subvolume::snapshot(&PathBuf::from(source), &PathBuf::from(dest), read_only)
    })
}

#[napi(js_name = "deleteSubvolume", ts_return_type = "Promise<void>")]
pub fn delete_subvolume(path: String, recursive: bool) -> AsyncTask<Job<()>> {
    Job::new("deleteSubvolume", move || {
        delete::delete(&PathBuf::from(path), recursive)
    })
}

#[napi(js_name = "subvolumeInfo", ts_return_type = "Promise<SubvolumeInfo>")]
pub fn subvolume_info(path: String) -> AsyncTask<Job<SubvolumeInfo>> {
    Job::new("subvolumeInfo", move || {
        let i = subvolume::info(&PathBuf::from(path))?;
        Ok(SubvolumeInfo {
            id: i.id as i64,
            name: i.name.clone(),
            parent_id: i.parent_id as i64,
            dir_id: i.dir_id as i64,
            uuid: subvolume::uuid_string(&i.uuid),
            parent_uuid: uuid_or_null(&i.parent_uuid),
            received_uuid: uuid_or_null(&i.received_uuid),
            generation: i.generation as i64,
            ctransid: i.ctransid as i64,
            otransid: i.otransid as i64,
            read_only: i.read_only(),
            ctime_ms: ms(&i.ctime),
            otime_ms: ms(&i.otime),
        })
    })
}

#[napi(
    js_name = "listSubvolumes",
    ts_return_type = "Promise<Array<NestedSubvolume>>"
)]
pub fn list_subvolumes(path: String) -> AsyncTask<Job<Vec<NestedSubvolume>>> {
    Job::new("listSubvolumes", move || {
        Ok(subvolume::list(&PathBuf::from(path))?
            .into_iter()
            .map(|n| {
                let (path, raw_path) = js_path(OsStringExt::into_vec(n.path.into_os_string()));
                NestedSubvolume {
                    path,
                    id: n.id as i64,
                    raw_path,
                }
            })
            .collect())
    })
}

#[napi(js_name = "isReadOnly", ts_return_type = "Promise<boolean>")]
pub fn is_read_only(path: String) -> AsyncTask<Job<bool>> {
    Job::new("isReadOnly", move || {
        subvolume::is_read_only(&PathBuf::from(path))
    })
}

#[napi(js_name = "setReadOnly", ts_return_type = "Promise<void>")]
pub fn set_read_only(path: String, read_only: bool) -> AsyncTask<Job<()>> {
    Job::new("setReadOnly", move || {
        subvolume::set_read_only(&PathBuf::from(path), read_only)
    })
}

#[napi(js_name = "sync", ts_return_type = "Promise<void>")]
pub fn sync(path: String) -> AsyncTask<Job<()>> {
    Job::new("sync", move || filesystem::sync(&PathBuf::from(path)))
}

#[napi(js_name = "filesystemInfo", ts_return_type = "Promise<FilesystemInfo>")]
pub fn filesystem_info(path: String) -> AsyncTask<Job<FilesystemInfo>> {
    Job::new("filesystemInfo", move || {
        let f = filesystem::info(&PathBuf::from(path))?;
        Ok(FilesystemInfo {
            fsid: subvolume::uuid_string(&f.fsid),
            label: f.label,
            devices: f
                .devices
                .into_iter()
                .map(|d| Device {
                    id: d.id as i64,
                    path: d.path,
                    uuid: subvolume::uuid_string(&d.uuid),
                    total_bytes: d.total_bytes as f64,
                    bytes_used: d.bytes_used as f64,
                })
                .collect(),
            node_size: f.node_size,
            sector_size: f.sector_size,
            generation: f.generation as i64,
            data: Space::from(f.data),
            metadata: Space::from(f.metadata),
            system: Space::from(f.system),
        })
    })
}

/// Test hook: panics on the thread pool, so tests can prove a panic becomes an error.
#[napi(js_name = "__panicForTest", ts_return_type = "Promise<void>")]
pub fn panic_for_test() -> AsyncTask<Job<()>> {
    Job::new("__panicForTest", || {
        panic!("deliberate panic for the test suite")
    })
}

/// Unmount `target` (lazily: MNT_DETACH), e.g. an idmapped mount made by `mountIdmapped`.
#[napi(js_name = "unmount", ts_return_type = "Promise<void>")]
pub fn unmount(target: String) -> AsyncTask<Job<()>> {
    Job::new("unmount", move || {
        btrfs_layers_core::idmount::unmount(&PathBuf::from(target))
    })
}
