//! The btrfs graph driver: layers as subvolumes under `home/subvolumes`, a child layer a
//! snapshot of its parent, metadata in `home/metadata`.
//!
//! Crash safety: a layer exists exactly when `subvolumes/<id>` exists. `create` builds under
//! `subvolumes/.tmp-*`, writes the metadata, then renames into place; `remove` renames to
//! `subvolumes/.del-*` first, then drops metadata and subvolume. `init` and `cleanup` sweep
//! what a crash left behind. Every failure path undoes what it did.

mod covered;
pub mod diff;
pub mod remap;

use crate::delete::delete_at;
use crate::error::{Code, Context, Error, Result};
use crate::filesystem;
use crate::idmap::{IdMap, IdMapping};
use crate::layer::{self, check_id, LayerMeta};
use crate::open::{self, entry_exists, open_dir_at, require_btrfs};
use crate::path::check;
use crate::quota;
use crate::subvolume::{self, create_at, set_read_only_fd, snapshot_at};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, renameat2, Flock, FlockArg, OFlag, RenameFlags};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fchmod, fstat, mkdirat, Mode};
use nix::unistd::{fchown, Gid, Uid};
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

const SUBVOLUMES: &str = "subvolumes";
const METADATA: &str = "metadata";
const LOCK: &str = ".lock";
const PENDING_QGROUPS: &str = ".pending-qgroups";

#[derive(Debug, Clone, Default)]
pub struct DriverOptions {
    pub uid_maps: Vec<IdMap>,
    pub gid_maps: Vec<IdMap>,
    /// Smallest `size` a layer may ask for, in bytes.
    pub min_space: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub mount_label: Option<String>,
    /// Limit on the layer's referenced bytes (a qgroup limit).
    pub size: Option<u64>,
    pub read_only: bool,
}

pub struct Driver {
    home: PathBuf,
    /// The store's directories, open while the driver is; `cleanup` closes them.
    dirs: std::sync::RwLock<Option<Arc<Dirs>>>,
    uids: IdMapping,
    gids: IdMapping,
    min_space: Option<u64>,
    root_uid: u32,
    root_gid: u32,
    state: Mutex<State>,
    seq: AtomicU64,
    /// Whether idmapped mounts work here, found out on first use.
    idmapped: std::sync::OnceLock<bool>,
    /// Set once BTRFS_IOC_SEND was refused (EPERM): `changes` walks from then on.
    send_denied: std::sync::atomic::AtomicBool,
}

struct Dirs {
    subvolumes: OwnedFd,
    metadata: OwnedFd,
}

struct State {
    /// Held by `get`, released by `put`; `remove` of a held layer is EBUSY.
    refs: HashMap<String, u32>,
    /// Qgroups of removed layers the kernel still held; retried later.
    pending_qgroups: BTreeSet<u64>,
    /// The advisory lock on home; dropped by `cleanup`.
    lock: Option<Flock<File>>,
    /// Whether `init` bind-mounted home onto itself (undone by `cleanup`).
    mounted: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

impl Driver {
    /// Open (creating if needed) the layer store at `home`, which must be on btrfs.
    pub fn init(home: &Path, opts: DriverOptions) -> Result<Driver> {
        check(home, "init")?;
        let uids = IdMapping::new(&opts.uid_maps, "uidMaps")?;
        let gids = IdMapping::new(&opts.gid_maps, "gidMaps")?;
        let root_uid = uids.to_host(0).map_err(|_| {
            Error::invalid(
                Errno::EINVAL,
                "init",
                home,
                "uidMaps do not map container root (0)",
            )
        })?;
        let root_gid = gids.to_host(0).map_err(|_| {
            Error::invalid(
                Errno::EINVAL,
                "init",
                home,
                "gidMaps do not map container root (0)",
            )
        })?;
        let home = std::path::absolute(home).map_err(|_| {
            Error::invalid(Errno::EINVAL, "init", home, "cannot make path absolute")
        })?;
        let prerequisites = |path: &Path| Error {
            code: Code::Prerequisites,
            syscall: "statfs",
            path: Some(path.to_path_buf()),
            message: "the layer store must be on a btrfs filesystem".into(),
        };
        let not_btrfs = |e: Error, path: &Path| {
            if e.code == Code::NotBtrfs {
                prerequisites(path)
            } else {
                e
            }
        };

        let home_fd = match open::open_dir(&home) {
            Ok(fd) => {
                require_btrfs(fd.as_fd(), &home).map_err(|e| not_btrfs(e, &home))?;
                fd
            }
            Err(e) if e.is(Errno::ENOENT) => {
                // A fresh store is its own subvolume, so snapshots of the enclosing subvolume
                // do not swallow it.
                let (parent, name) = crate::path::split_parent(&home, "init")?;
                let pfd = open::open_dir(parent)?;
                require_btrfs(pfd.as_fd(), parent).map_err(|e| not_btrfs(e, parent))?;
                match create_at(pfd.as_fd(), name, &home) {
                    Ok(()) => {}
                    Err(e) if e.is(Errno::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                let fd = open_dir_at(pfd.as_fd(), name, &home)?;
                fchmod(&fd, Mode::from_bits_truncate(0o700)).at("fchmod", &home)?;
                fchown(
                    &fd,
                    Some(Uid::from_raw(root_uid)),
                    Some(Gid::from_raw(root_gid)),
                )
                .at("fchown", &home)?;
                fd
            }
            Err(e) => return Err(e),
        };

        let lock_path = home.join(LOCK);
        let lock_fd = openat(
            &home_fd,
            LOCK,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(0o600),
        )
        .at("openat", &lock_path)?;
        let lock = Flock::lock(File::from(lock_fd), FlockArg::LockExclusiveNonblock).map_err(
            |(_, e)| {
                if e == Errno::EWOULDBLOCK {
                    Error::invalid(
                        Errno::EBUSY,
                        "flock",
                        &lock_path,
                        "the layer store is in use by another driver (process)",
                    )
                } else {
                    Error::sys(e, "flock", &lock_path)
                }
            },
        )?;
        drop(home_fd);

        let mounted = make_private(&home)?;
        let finish = || -> Result<Driver> {
            let home_fd = open::open_dir(&home)?;
            for dir in [SUBVOLUMES, METADATA] {
                match mkdirat(&home_fd, dir, Mode::from_bits_truncate(0o700)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(Error::sys(e, "mkdirat", &home.join(dir))),
                }
            }
            let subvolumes = open_dir_at(
                home_fd.as_fd(),
                OsStr::new(SUBVOLUMES),
                &home.join(SUBVOLUMES),
            )?;
            let metadata =
                open_dir_at(home_fd.as_fd(), OsStr::new(METADATA), &home.join(METADATA))?;
            let pending = read_pending(metadata.as_fd(), &home);
            let driver = Driver {
                home: home.clone(),
                dirs: std::sync::RwLock::new(Some(Arc::new(Dirs {
                    subvolumes,
                    metadata,
                }))),
                uids,
                gids,
                min_space: opts.min_space,
                root_uid,
                root_gid,
                state: Mutex::new(State {
                    refs: HashMap::new(),
                    pending_qgroups: pending,
                    lock: Some(lock),
                    mounted,
                }),
                seq: AtomicU64::new(0),
                send_denied: std::sync::atomic::AtomicBool::new(false),
                idmapped: std::sync::OnceLock::new(),
            };
            driver.recover()?;
            Ok(driver)
        };
        finish().inspect_err(|_| {
            if mounted {
                let _ = umount2(&home, MntFlags::MNT_DETACH);
            }
        })
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    fn subvolumes_path(&self) -> PathBuf {
        self.home.join(SUBVOLUMES)
    }

    fn layer_path(&self, id: &str) -> PathBuf {
        self.home.join(SUBVOLUMES).join(id)
    }

    fn temp_name(&self, kind: &str, id: &str) -> String {
        format!(
            ".{kind}-{id}-{}-{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The id maps for recorded layer maps: the driver's when none are recorded.
    fn mappings(
        &self,
        uid_maps: &Option<Vec<IdMap>>,
        gid_maps: &Option<Vec<IdMap>>,
    ) -> Result<(IdMapping, IdMapping)> {
        Ok((
            match uid_maps {
                Some(m) => IdMapping::new(m, "uidMaps")?,
                None => self.uids.clone(),
            },
            match gid_maps {
                Some(m) => IdMapping::new(m, "gidMaps")?,
                None => self.gids.clone(),
            },
        ))
    }

    /// The id maps layer `id` is stored under.
    fn mappings_of(&self, id: &str) -> Result<(IdMapping, IdMapping)> {
        let dirs = self.dirs()?;
        let meta = layer::read(dirs.metadata.as_fd(), id, &self.layer_path(id))?;
        self.mappings(&meta.uid_maps, &meta.gid_maps)
    }

    /// The store's open directories; EINVAL once `cleanup` ran.
    fn dirs(&self) -> Result<Arc<Dirs>> {
        self.dirs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                Error::invalid(
                    Errno::EINVAL,
                    "driver",
                    &self.home,
                    "the driver was cleaned up; init it again",
                )
            })
    }

    /// Remove what a crash left: temporary and half-removed subvolumes, temporary metadata
    /// files, metadata of layers that do not exist; re-apply persisted size limits.
    fn recover(&self) -> Result<()> {
        let dirs = self.dirs()?;
        let sub = dirs.subvolumes.as_fd();
        for name in dir_names(sub, &self.subvolumes_path())? {
            if name.starts_with(".tmp-") || name.starts_with(".del-") {
                let shown = self.subvolumes_path().join(&name);
                match delete_at(sub, OsStr::new(&name), true, &shown) {
                    Ok(()) => {}
                    // Not a subvolume: a crash between mkdir-like steps; nothing of ours is inside.
                    Err(e) if e.is(Errno::EINVAL) => remove_plain(sub, &name, &shown)?,
                    Err(e) => return Err(e),
                }
            }
        }
        let mut limits = Vec::new();
        for name in dir_names(dirs.metadata.as_fd(), &self.home.join(METADATA))? {
            let shown = self.home.join(METADATA).join(&name);
            if name.starts_with(".tmp-") {
                nix::unistd::unlinkat(
                    &dirs.metadata,
                    name.as_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                )
                .at("unlinkat", &shown)?;
            } else if let Some(id) = layer::id_of_file(&name) {
                if !self.layer_exists(id)? {
                    layer::remove(dirs.metadata.as_fd(), id, &shown)?;
                } else if let Ok(meta) = layer::read(dirs.metadata.as_fd(), id, &shown) {
                    if let Some(size) = meta.size {
                        limits.push((meta.id, size));
                    }
                }
            }
        }
        if !limits.is_empty() {
            quota::enable(sub, &self.home)?;
            for (id, size) in limits {
                // A mount on the layer hides it; the kernel keeps its limit meanwhile.
                if !self.is_layer(&id).unwrap_or(false) {
                    continue;
                }
                let path = self.layer_path(&id);
                let fd = open_dir_at(sub, OsStr::new(&id), &path)?;
                if quota::limit_of(sub, open::subvolume_id(fd.as_fd(), &path)?, &path)?
                    != Some(size)
                {
                    quota::limit(fd.as_fd(), size, &path)?;
                }
            }
        }
        self.retry_pending_qgroups();
        Ok(())
    }

    /// Whether layer `id` exists; EBUSY when a filesystem is mounted on it (covered.rs).
    fn is_layer(&self, id: &str) -> Result<bool> {
        match self.layer_entry(id)? {
            covered::LayerEntry::Layer => Ok(true),
            covered::LayerEntry::Absent => Ok(false),
            covered::LayerEntry::Covered => Err(self.covered(id)),
        }
    }

    /// Create layer `id`: empty, or a snapshot of layer `parent`.
    pub fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOptions) -> Result<()> {
        let dirs = self.dirs()?;
        check_id(id, "create")?;
        if let Some(p) = parent {
            check_id(p, "create")?;
        }
        if let (Some(size), Some(min)) = (opts.size, self.min_space) {
            if size < min {
                return Err(Error::invalid(
                    Errno::EINVAL,
                    "create",
                    &self.layer_path(id),
                    format!("size {size} is below minSpace {min}"),
                ));
            }
        }
        if opts.size == Some(0) {
            return Err(Error::invalid(
                Errno::EINVAL,
                "create",
                &self.layer_path(id),
                "size must be positive",
            ));
        }
        let sub = dirs.subvolumes.as_fd();
        if entry_exists(sub, OsStr::new(id), &self.layer_path(id))? {
            return Err(Error::invalid(
                Errno::EEXIST,
                "create",
                &self.layer_path(id),
                "layer already exists",
            ));
        }
        let parent_fd = match parent {
            Some(p) => {
                if !self.is_layer(p)? {
                    return Err(Error::invalid(
                        Errno::ENOENT,
                        "create",
                        &self.layer_path(p),
                        "parent layer does not exist",
                    ));
                }
                Some(open_dir_at(sub, OsStr::new(p), &self.layer_path(p))?)
            }
            None => None,
        };

        let tmp = self.temp_name("tmp", id);
        let tmp_path = self.subvolumes_path().join(&tmp);
        match &parent_fd {
            Some(pfd) => snapshot_at(pfd.as_fd(), sub, OsStr::new(&tmp), false, &tmp_path)?,
            None => create_at(sub, OsStr::new(&tmp), &tmp_path)?,
        }
        let built = self.finish_create(id, parent, opts, &tmp, &tmp_path);
        if built.is_err() {
            let _ = delete_at(sub, OsStr::new(&tmp), true, &tmp_path);
            let _ = layer::remove(dirs.metadata.as_fd(), id, &tmp_path);
        }
        built
    }

    fn finish_create(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &CreateOptions,
        tmp: &str,
        tmp_path: &Path,
    ) -> Result<()> {
        let dirs = self.dirs()?;
        let sub = dirs.subvolumes.as_fd();
        let fd = open_dir_at(sub, OsStr::new(tmp), tmp_path)?;
        // A child of a remapped layer keeps that layer's maps.
        let inherited = match parent {
            Some(p) => layer::read(dirs.metadata.as_fd(), p, &self.layer_path(p))
                .map(|m| (m.uid_maps, m.gid_maps))
                .unwrap_or((None, None)),
            None => (None, None),
        };
        let (uids, gids) = self.mappings(&inherited.0, &inherited.1)?;
        let (root_uid, root_gid) = (
            uids.to_host(0).unwrap_or(self.root_uid),
            gids.to_host(0).unwrap_or(self.root_gid),
        );
        if root_uid != 0 || root_gid != 0 {
            fchown(
                &fd,
                Some(Uid::from_raw(root_uid)),
                Some(Gid::from_raw(root_gid)),
            )
            .at("fchown", tmp_path)?;
        }
        if let Some(label) = &opts.mount_label {
            set_label(fd.as_fd(), label, tmp_path)?;
        }
        if let Some(size) = opts.size {
            quota::enable(sub, &self.home)?;
            quota::limit(fd.as_fd(), size, tmp_path)?;
        }
        if opts.read_only {
            set_read_only_fd(fd.as_fd(), true, tmp_path)?;
        }
        let info = subvolume::info_fd(fd.as_fd(), tmp_path)?;
        let meta = LayerMeta {
            id: id.to_string(),
            parent: parent.map(str::to_string),
            created: now_ms(),
            read_only: opts.read_only,
            size: opts.size,
            subvolume_id: info.id,
            mount_label: opts.mount_label.clone(),
            uid_maps: inherited.0,
            gid_maps: inherited.1,
            uuid: Some(subvolume::uuid_string(&info.uuid)),
            origin: parent.and_then(|_| layer::Origin::of(&info)),
        };
        drop(fd);
        layer::write(
            dirs.metadata.as_fd(),
            &meta,
            &self.temp_name("tmp", id),
            tmp_path,
        )?;
        // The commit point: the layer appears complete, or not at all.
        renameat2(sub, tmp, sub, id, RenameFlags::RENAME_NOREPLACE).map_err(|e| {
            if e == Errno::EEXIST {
                Error::invalid(
                    Errno::EEXIST,
                    "create",
                    &self.layer_path(id),
                    "layer already exists",
                )
            } else {
                Error::sys(e, "renameat2", &self.layer_path(id))
            }
        })?;
        Ok(())
    }

    /// Remove layer `id` with every subvolume nested in it, its metadata and its qgroup.
    pub fn remove(&self, id: &str) -> Result<()> {
        let dirs = self.dirs()?;
        check_id(id, "remove")?;
        let path = self.layer_path(id);
        if self.state().refs.contains_key(id) {
            return Err(Error::invalid(
                Errno::EBUSY,
                "remove",
                &path,
                "layer is in use (get without put)",
            ));
        }
        if !self.is_layer(id)? {
            return Err(Error::invalid(
                Errno::ENOENT,
                "remove",
                &path,
                "layer does not exist",
            ));
        }
        let sub = dirs.subvolumes.as_fd();
        let subvolume_id =
            open::subvolume_id(open_dir_at(sub, OsStr::new(id), &path)?.as_fd(), &path)?;
        let del = self.temp_name("del", id);
        // The commit point: from here on the layer is gone, whatever happens next.
        renameat2(sub, id, sub, del.as_str(), RenameFlags::RENAME_NOREPLACE)
            .at("renameat2", &path)?;
        layer::remove(dirs.metadata.as_fd(), id, &path)?;
        let del_path = self.subvolumes_path().join(&del);
        delete_at(sub, OsStr::new(&del), true, &del_path)?;
        // With quotas on, every subvolume has a qgroup (0/id) that outlives it unless destroyed.
        if quota::enabled(sub, &self.home)? {
            self.state().pending_qgroups.insert(subvolume_id);
            self.retry_pending_qgroups();
        }
        Ok(())
    }

    /// Destroy qgroups of removed layers that the kernel has finished dropping.
    fn retry_pending_qgroups(&self) {
        let Ok(dirs) = self.dirs() else { return };
        let mut st = self.state();
        if st.pending_qgroups.is_empty() {
            return;
        }
        let sub = dirs.subvolumes.as_fd();
        st.pending_qgroups
            .retain(|&q| !matches!(quota::destroy(sub, q, &self.home), Ok(true)));
        write_pending(dirs.metadata.as_fd(), &st.pending_qgroups);
    }

    /// Commit, wait for the kernel to drop removed layers, and destroy their qgroups (the
    /// wait needs Linux 6.13+; elsewhere only what is already dropped goes).
    pub fn release_qgroups(&self) -> Result<()> {
        let dirs = self.dirs()?;
        let pending: Vec<u64> = self.state().pending_qgroups.iter().copied().collect();
        if pending.is_empty() {
            return Ok(());
        }
        // BTRFS_IOC_SYNC commits and wakes the cleaner, which drops deleted subvolumes; else
        // it would wait for the next periodic commit, up to 30 s away.
        // SAFETY: BTRFS_IOC_SYNC takes no argument.
        unsafe { crate::ioctl::sync_fs(std::os::fd::AsRawFd::as_raw_fd(&dirs.subvolumes)) }
            .at("BTRFS_IOC_SYNC", &self.home)?;
        for q in pending {
            quota::wait_dropped(dirs.subvolumes.as_fd(), q, &self.home)?;
        }
        drop(dirs);
        self.retry_pending_qgroups();
        Ok(())
    }

    /// The absolute path of layer `id`, held until `put`.
    pub fn get(&self, id: &str, mount_label: Option<&str>) -> Result<PathBuf> {
        let dirs = self.dirs()?;
        check_id(id, "get")?;
        let path = self.layer_path(id);
        if !self.is_layer(id)? {
            return Err(Error::invalid(
                Errno::ENOENT,
                "get",
                &path,
                "layer does not exist",
            ));
        }
        if let Some(label) = mount_label {
            let fd = open_dir_at(dirs.subvolumes.as_fd(), OsStr::new(id), &path)?;
            set_label(fd.as_fd(), label, &path)?;
        }
        *self.state().refs.entry(id.to_string()).or_insert(0) += 1;
        Ok(path)
    }

    /// Release one `get` of layer `id`.
    pub fn put(&self, id: &str) -> Result<()> {
        check_id(id, "put")?;
        let mut st = self.state();
        match st.refs.get_mut(id) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                st.refs.remove(id);
            }
            None => {
                return Err(Error::invalid(
                    Errno::EINVAL,
                    "put",
                    &self.layer_path(id),
                    "layer is not held (put without get)",
                ))
            }
        }
        Ok(())
    }

    /// How many `get`s of layer `id` are not yet `put`.
    pub fn ref_count(&self, id: &str) -> Result<u32> {
        check_id(id, "refCount")?;
        Ok(self.state().refs.get(id).copied().unwrap_or(0))
    }

    pub fn exists(&self, id: &str) -> Result<bool> {
        check_id(id, "exists")?;
        self.layer_exists(id)
    }

    /// Ids of all complete layers, sorted.
    pub fn layers(&self) -> Result<Vec<String>> {
        let dirs = self.dirs()?;
        let mut ids: Vec<String> = dir_names(dirs.subvolumes.as_fd(), &self.subvolumes_path())?
            .into_iter()
            .filter(|n| check_id(n, "").is_ok())
            .collect();
        ids.retain(|id| self.layer_exists(id).unwrap_or(false));
        ids.sort();
        Ok(ids)
    }

    pub fn metadata(&self, id: &str) -> Result<LayerMeta> {
        let dirs = self.dirs()?;
        check_id(id, "getMetadata")?;
        let path = self.layer_path(id);
        if !self.is_layer(id)? {
            return Err(Error::invalid(
                Errno::ENOENT,
                "getMetadata",
                &path,
                "layer does not exist",
            ));
        }
        let mut meta = layer::read(dirs.metadata.as_fd(), id, &path)?;
        // applyDiff swaps in a new subvolume; the live id is the truth.
        meta.subvolume_id = open::subvolume_id(
            open_dir_at(dirs.subvolumes.as_fd(), OsStr::new(id), &path)?.as_fd(),
            &path,
        )?;
        Ok(meta)
    }

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

    /// Release the store: retry pending qgroups, undo the private mount, close every fd, drop
    /// the lock. Calls still running finish first; later calls fail with EINVAL.
    pub fn cleanup(&self) -> Result<()> {
        self.retry_pending_qgroups();
        let taken = self.dirs.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut dirs) = taken {
            // Wait for calls in flight to let go of the directories, then close them.
            loop {
                match Arc::try_unwrap(dirs) {
                    Ok(d) => {
                        drop(d);
                        break;
                    }
                    Err(shared) => {
                        dirs = shared;
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
            }
        }
        let mut st = self.state();
        if st.mounted {
            umount2(&self.home, MntFlags::MNT_DETACH).at("umount2", &self.home)?;
            st.mounted = false;
        }
        st.lock = None;
        Ok(())
    }

    /// Mount layer `id` on the existing directory `target`, its owners shown under `uid_maps` /
    /// `gid_maps` instead of the driver's maps, without changing any inode (idmapped mount).
    pub fn mount_idmapped(
        &self,
        id: &str,
        target: &Path,
        uid_maps: &[IdMap],
        gid_maps: &[IdMap],
    ) -> Result<()> {
        let dirs = self.dirs()?;
        check_id(id, "mountIdmapped")?;
        check(target, "mountIdmapped")?;
        let shown_uids = IdMapping::new(uid_maps, "uidMaps")?;
        let shown_gids = IdMapping::new(gid_maps, "gidMaps")?;
        let path = self.layer_path(id);
        if !self.is_layer(id)? {
            return Err(Error::invalid(
                Errno::ENOENT,
                "mountIdmapped",
                &path,
                "layer does not exist",
            ));
        }
        let layer = open_dir_at(dirs.subvolumes.as_fd(), OsStr::new(id), &path)?;
        open::open_dir(target)?;
        let (stored_uids, stored_gids) = self.mappings_of(id)?;
        let ns = crate::idmount::user_namespace(
            &crate::idmount::compose(&stored_uids, &shown_uids),
            &crate::idmount::compose(&stored_gids, &shown_gids),
        )?;
        crate::idmount::mount_idmapped(layer.as_fd(), target, ns.as_fd())
    }

    pub fn uid_mapping(&self) -> &IdMapping {
        &self.uids
    }

    pub fn gid_mapping(&self) -> &IdMapping {
        &self.gids
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.cleanup();
    }
}

/// Make home a private mount (bound onto itself unless it already is a mount point), as
/// container engines do, so layer mounts do not propagate. Ok(true) when we bind-mounted.
/// Without the privilege (EPERM) the store works without it.
fn make_private(home: &Path) -> Result<bool> {
    let fd = open::open_dir(home)?;
    let parent = open::open_dir(&home.join(".."))?;
    let is_mount = open::mount_id(fd.as_fd(), home)? != open::mount_id(parent.as_fd(), home)?;
    let mut bound = false;
    if is_mount && is_self_bind(home) {
        // Our own bind mount, left by a driver that crashed: adopt it so cleanup undoes it.
        bound = true;
    } else if !is_mount {
        match mount(
            Some(home),
            home,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ) {
            Ok(()) => bound = true,
            Err(Errno::EPERM) | Err(Errno::EACCES) => return Ok(false),
            Err(e) => return Err(Error::sys(e, "mount", home)),
        }
    }
    match mount(
        None::<&str>,
        home,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    ) {
        Ok(()) => Ok(bound),
        Err(Errno::EPERM) | Err(Errno::EACCES) if !bound => Ok(false),
        Err(e) => {
            if bound {
                let _ = umount2(home, MntFlags::MNT_DETACH);
            }
            Err(Error::sys(e, "mount", home))
        }
    }
}

/// Whether the mount on `home` is a bind of a directory of the same filesystem as the mount
/// below it (what `make_private` creates), not a filesystem of its own.
fn is_self_bind(home: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    // Fields: id parent major:minor root mount-point ...
    let rows: Vec<Vec<&str>> = info
        .lines()
        .map(|l| l.split(' ').collect())
        .filter(|f: &Vec<&str>| f.len() > 4)
        .collect();
    let target = home.to_string_lossy();
    let Some(top) = rows.iter().rev().find(|f| unescape(f[4]) == target) else {
        return false;
    };
    let Some(below) = rows.iter().find(|f| f[0] == top[1]) else {
        return false;
    };
    top[2] == below[2] && top[3] != "/"
}

/// Undo mountinfo's octal escapes of space, tab, newline and backslash.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Set the SELinux label of a layer root; without SELinux the label is accepted and ignored.
fn set_label(fd: BorrowedFd<'_>, label: &str, shown: &Path) -> Result<()> {
    if label.is_empty() || !selinux_enabled() {
        return Ok(());
    }
    let proc_path = format!("/proc/self/fd/{}\0", std::os::fd::AsRawFd::as_raw_fd(&fd));
    // SAFETY: both strings are NUL-terminated and live for the call.
    let r = unsafe {
        libc::setxattr(
            proc_path.as_ptr() as *const libc::c_char,
            c"security.selinux".as_ptr(),
            label.as_ptr() as *const libc::c_void,
            label.len(),
            0,
        )
    };
    Errno::result(r).map(|_| ()).at("setxattr", shown)
}

/// Names in directory `dir` (not `.`/`..`).
fn dir_names(dir: BorrowedFd<'_>, shown: &Path) -> Result<Vec<String>> {
    let mut d = Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .at("openat", shown)?;
    let mut out = Vec::new();
    for entry in d.iter() {
        let entry = entry.at("getdents64", shown)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." {
            out.push(name);
        }
    }
    Ok(out)
}

/// Remove a plain (non-subvolume) temporary directory left by a crash.
fn remove_plain(dir: BorrowedFd<'_>, name: &str, shown: &Path) -> Result<()> {
    let fd = open_dir_at(dir, OsStr::new(name), shown)?;
    let st = fstat(&fd).at("fstat", shown)?;
    if st.st_nlink <= 2 {
        return nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::RemoveDir)
            .at("unlinkat", shown);
    }
    Err(Error::invalid(
        Errno::ENOTEMPTY,
        "unlinkat",
        shown,
        "leftover temporary directory is not empty",
    ))
}

fn read_pending(dir: BorrowedFd<'_>, home: &Path) -> BTreeSet<u64> {
    let shown = home.join(METADATA).join(PENDING_QGROUPS);
    let Ok(fd) = openat(
        dir,
        PENDING_QGROUPS,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    ) else {
        return BTreeSet::new();
    };
    let _ = shown;
    std::io::read_to_string(File::from(fd))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn write_pending(dir: BorrowedFd<'_>, ids: &BTreeSet<u64>) {
    use std::io::Write;
    if ids.is_empty() {
        let _ = nix::unistd::unlinkat(
            dir,
            PENDING_QGROUPS,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        return;
    }
    let tmp = ".tmp-pending-qgroups";
    let Ok(fd) = openat(
        dir,
        tmp,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o600),
    ) else {
        return;
    };
    let body: String = ids.iter().map(|q| format!("{q}\n")).collect();
    if File::from(fd).write_all(body.as_bytes()).is_ok() {
        let _ = nix::fcntl::renameat(dir, tmp, dir, PENDING_QGROUPS);
    }
}
