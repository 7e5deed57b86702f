//! The btrfs graph driver: layers as subvolumes under `home/subvolumes`, a child layer a
//! snapshot of its parent, what the kernel does not keep in a record on the layer's root
//! (record.rs).
//!
//! Crash safety: a layer exists exactly when `subvolumes/<id>` is a subvolume, and is then
//! complete. An empty layer without options is made under its name by one SUBVOL_CREATE, which
//! is atomic. Every other layer is built under `.tmp-*` and published, record included, by one
//! rename (staging.rs); applyDiff writes the new tree's data back first. `remove` is one
//! SNAP_DESTROY, or for a layer holding nested subvolumes a rename to `.del-*` first. `init`
//! sweeps the temporaries a crash left.
//!
//! Durability: btrfs commits in order, so after a crash or a power cut the store is as it was
//! after some call, with every layer complete or absent. The newest calls may be lost, as a
//! `mkdir` without `fsync` may: those that returned before the filesystem's next commit (the
//! periodic one, 30 s by default; any snapshot; `sync`). Everything that returned before a
//! `sync` that returned is durable.

mod covered;
pub mod diff;
mod home;
mod qgroups;
mod receive;
mod record;
mod recovery;
pub mod remap;
pub mod replicate;
mod send;
mod staging;
pub mod status;

pub use record::is_reserved as is_record_xattr;

use crate::delete::{delete_at, destroy_by_name};
use crate::error::{Context, Error, Result};
use crate::filesystem;
use crate::idmap::{IdMap, IdMapping};
use crate::layer::{check_id, LayerMeta, Origin};
use crate::mounts;
use crate::open::{self, open_dir_at, Rename};
use crate::path::check;
use crate::quota;
use crate::subvolume::{self, create_at};
use covered::LayerEntry;
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{Flock, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{fchown, Gid, Uid};
use record::{Namespace, Record};
use staging::Staged;
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

const SUBVOLUMES: &str = "subvolumes";

/// A layer's own uid and gid maps, as its record keeps them (none: the driver's).
type RecordedMaps = (Option<Vec<IdMap>>, Option<Vec<IdMap>>);
const METADATA: &str = "metadata";
const LOCK: &str = ".lock";

#[derive(Debug, Clone, Default)]
pub struct DriverOptions {
    pub uid_maps: Vec<IdMap>,
    pub gid_maps: Vec<IdMap>,
    /// Smallest `size` a layer may ask for, in bytes.
    pub min_space: Option<u64>,
    /// Open an existing store for reading only: no lock, no private mount, no crash recovery,
    /// no qgroup work, never a write (so it works while a writer holds the store); every
    /// method that would write fails with EROFS.
    pub read_only: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    pub mount_label: Option<String>,
    /// Limit on the layer's referenced bytes (a qgroup limit).
    pub size: Option<u64>,
    pub read_only: bool,
}

pub struct Driver {
    home: PathBuf,
    /// The store's directories, open while the driver is; `cleanup` closes them.
    dirs: RwLock<Option<Arc<Dirs>>>,
    uids: IdMapping,
    gids: IdMapping,
    min_space: Option<u64>,
    root_uid: u32,
    root_gid: u32,
    /// Where the layer records go: `trusted.` with CAP_SYS_ADMIN, else `user.`.
    record_ns: Namespace,
    /// Whether quotas are on (read at init, set when a size limit turns them on).
    quotas: AtomicBool,
    state: Mutex<State>,
    seq: AtomicU64,
    /// Whether idmapped mounts work here, found out on first use.
    idmapped: OnceLock<bool>,
    /// Set once BTRFS_IOC_SEND was refused (EPERM): `changes` walks from then on.
    send_denied: AtomicBool,
    /// Opened with `read_only`: write methods fail with EROFS.
    read_only: bool,
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

pub(crate) fn now_ms() -> u64 {
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
        let (uids, gids) = (
            IdMapping::new(&opts.uid_maps, "uidMaps")?,
            IdMapping::new(&opts.gid_maps, "gidMaps")?,
        );
        let (root_uid, root_gid) = home::container_root(&uids, &gids, home)?;
        let home = std::path::absolute(home).map_err(|_| {
            Error::invalid(Errno::EINVAL, "init", home, "cannot make path absolute")
        })?;
        let read_only = opts.read_only;
        let (lock, mounted) = if read_only {
            home::open_existing(&home)?;
            (None, false)
        } else {
            home::open_or_make(&home, root_uid, root_gid)?;
            let lock = home::lock(&home)?;
            (Some(lock), mounts::make_private(&home)?)
        };
        let open = || -> Result<Driver> {
            let dirs = home::open_dirs(&home, read_only)?;
            let sub = dirs.subvolumes.as_fd();
            let shown = home.join(SUBVOLUMES);
            let (record_ns, quotas, pending) = if read_only {
                (
                    Namespace::probe_read_only(sub, &shown)?,
                    false,
                    BTreeSet::new(),
                )
            } else {
                (
                    Namespace::probe(sub, &shown)?,
                    quota::enabled(sub, &home)?,
                    qgroups::read_pending(dirs.metadata.as_fd()),
                )
            };
            let driver = Driver {
                home: home.clone(),
                dirs: RwLock::new(Some(Arc::new(dirs))),
                uids,
                gids,
                min_space: opts.min_space,
                root_uid,
                root_gid,
                record_ns,
                quotas: AtomicBool::new(quotas),
                state: Mutex::new(State {
                    refs: HashMap::new(),
                    pending_qgroups: pending,
                    lock,
                    mounted,
                }),
                seq: AtomicU64::new(0),
                idmapped: OnceLock::new(),
                send_denied: AtomicBool::new(false),
                read_only,
            };
            if !read_only {
                driver.recover()?;
            }
            Ok(driver)
        };
        open().inspect_err(|_| {
            if mounted {
                let _ = mounts::unmount(&home);
            }
        })
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Whether the driver was opened with `read_only`.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// EROFS on a driver opened read-only, before anything is touched.
    fn require_writable(&self, op: &'static str) -> Result<()> {
        if self.read_only {
            return Err(Error::invalid(
                Errno::EROFS,
                op,
                &self.home,
                "the driver was opened read-only",
            ));
        }
        Ok(())
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

    /// The id maps the layer whose root is `fd` is stored under.
    fn mappings_of(&self, fd: BorrowedFd<'_>, id: &str) -> Result<(IdMapping, IdMapping)> {
        let rec = self.record(fd, id)?;
        self.mappings(&rec.uid_maps, &rec.gid_maps)
    }

    /// The record of the layer whose root is `fd`.
    fn record(&self, fd: BorrowedFd<'_>, id: &str) -> Result<Record> {
        Ok(record::read(fd, self.record_ns, &self.layer_path(id))?.unwrap_or_default())
    }

    /// Check `id` and open its layer: ENOENT when there is none, EBUSY when a filesystem is
    /// mounted on it.
    fn require_layer(&self, id: &str, op: &'static str) -> Result<OwnedFd> {
        check_id(id, op)?;
        let path = self.layer_path(id);
        match self.layer_entry(id)? {
            LayerEntry::Layer => {
                open_dir_at(self.dirs()?.subvolumes.as_fd(), OsStr::new(id), &path)
            }
            LayerEntry::Covered => Err(self.covered(id)),
            LayerEntry::Absent => Err(Error::invalid(
                Errno::ENOENT,
                op,
                &path,
                "layer does not exist",
            )),
        }
    }

    /// Check `id` for a new layer: EEXIST when the name is taken.
    fn require_new(&self, id: &str, op: &'static str) -> Result<()> {
        check_id(id, op)?;
        let taken = crate::open::entry_kind(
            self.dirs()?.subvolumes.as_fd(),
            OsStr::new(id),
            &self.layer_path(id),
        )? != crate::open::EntryKind::Absent;
        if taken {
            return Err(Error::invalid(
                Errno::EEXIST,
                op,
                &self.layer_path(id),
                "layer already exists",
            ));
        }
        Ok(())
    }

    /// EBUSY while layer `id` is held by a `get` without its `put`.
    fn require_unheld(&self, id: &str, op: &'static str) -> Result<()> {
        if self.state().refs.contains_key(id) {
            return Err(Error::invalid(
                Errno::EBUSY,
                op,
                &self.layer_path(id),
                "layer is in use (get without put)",
            ));
        }
        Ok(())
    }

    fn check_size(&self, id: &str, size: Option<u64>) -> Result<()> {
        let bad = |why: String| Error::invalid(Errno::EINVAL, "create", &self.layer_path(id), why);
        match (size, self.min_space) {
            (Some(0), _) => Err(bad("size must be positive".into())),
            (Some(size), Some(min)) if size < min => {
                Err(bad(format!("size {size} is below minSpace {min}")))
            }
            _ => Ok(()),
        }
    }

    /// Create layer `id`: empty, or a snapshot of layer `parent`.
    pub fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOptions) -> Result<()> {
        self.require_writable("create")?;
        let dirs = self.dirs()?;
        check_id(id, "create")?;
        self.check_size(id, opts.size)?;
        let source = match parent {
            Some(p) => Some(self.require_layer(p, "create")?),
            None => None,
        };
        let (inherited, root) = self.inherited(source.as_ref().zip(parent))?;
        let plain = opts.mount_label.is_none() && opts.size.is_none() && !opts.read_only;
        if source.is_none() && root == (0, 0) && plain {
            // The common case at the cost of its one ioctl: an empty layer needs no record,
            // and SUBVOL_CREATE is atomic.
            return create_at(
                dirs.subvolumes.as_fd(),
                OsStr::new(id),
                &self.layer_path(id),
            )
            .map_err(|e| self.exists_error(e, id, "create"));
        }
        self.require_new(id, "create")?;
        let staged = self.stage_new(id, source.as_ref().map(|fd| fd.as_fd()), root)?;
        drop(source);
        if let Some(label) = &opts.mount_label {
            set_label(staged.fd(), label, staged.path())?;
        }
        if let Some(size) = opts.size {
            self.enable_quotas(dirs.subvolumes.as_fd())?;
            quota::limit(staged.fd(), size, staged.path())?;
        }
        let info = staged.info()?;
        let rec = Record {
            parent: parent.map(str::to_string),
            created: Some(now_ms()),
            size: opts.size,
            mount_label: opts.mount_label.clone(),
            uid_maps: inherited.0,
            gid_maps: inherited.1,
            uuid: Some(subvolume::uuid_string(&info.uuid)),
            origin: parent.and_then(|_| Origin::of(&info)),
        };
        staged.publish(id, &rec, opts.read_only)
    }

    /// What a new layer takes from its parent (`source`, open, and its id): a remapped
    /// parent's id maps, and the host ids its root directory gets.
    fn inherited(&self, source: Option<(&OwnedFd, &str)>) -> Result<(RecordedMaps, (u32, u32))> {
        // A child of a remapped layer keeps that layer's maps.
        let inherited = match source {
            Some((fd, p)) => {
                let rec = self.record(fd.as_fd(), p)?;
                (rec.uid_maps, rec.gid_maps)
            }
            None => (None, None),
        };
        let root = match &inherited {
            (None, None) => (self.root_uid, self.root_gid),
            (u, g) => {
                let (uids, gids) = self.mappings(u, g)?;
                (
                    uids.to_host(0).unwrap_or(self.root_uid),
                    gids.to_host(0).unwrap_or(self.root_gid),
                )
            }
        };
        Ok((inherited, root))
    }

    /// The temporary subvolume of new layer `id`: a snapshot of `source`, or empty; its root
    /// owned by `root`.
    fn stage_new(
        &self,
        id: &str,
        source: Option<BorrowedFd<'_>>,
        root: (u32, u32),
    ) -> Result<Staged<'_>> {
        let staged = match source {
            Some(fd) => Staged::snapshot(self, fd, id)?,
            None => Staged::empty(self, id)?,
        };
        if root != (0, 0) {
            fchown(
                staged.fd(),
                Some(Uid::from_raw(root.0)),
                Some(Gid::from_raw(root.1)),
            )
            .at("fchown", staged.path())?;
        }
        Ok(staged)
    }

    /// An EEXIST from the kernel as "layer already exists".
    fn exists_error(&self, e: Error, id: &str, op: &'static str) -> Error {
        if e.is(Errno::EEXIST) {
            // Said in layer terms; the ioctl the kernel refused stays named.
            Error {
                op,
                path: Some(self.layer_path(id)),
                message: "layer already exists".into(),
                ..e
            }
        } else {
            e
        }
    }

    /// Remove layer `id` with every subvolume nested in it, and its qgroup.
    pub fn remove(&self, id: &str) -> Result<()> {
        self.require_writable("remove")?;
        let dirs = self.dirs()?;
        check_id(id, "remove")?;
        self.require_unheld(id, "remove")?;
        let path = self.layer_path(id);
        let sub = dirs.subvolumes.as_fd();
        let qgroup = if self.quotas_on() {
            let fd = self.require_layer(id, "remove")?;
            Some(open::subvolume_id(fd.as_fd(), &path)?)
        } else {
            match self.layer_entry(id)? {
                LayerEntry::Layer => None,
                _ => return self.require_layer(id, "remove").map(drop),
            }
        };
        // One SNAP_DESTROY is atomic. The kernel refuses a layer holding nested subvolumes
        // (ENOTEMPTY), and one it may not delete as it is (a read-only one without
        // CAP_SYS_ADMIN): those take the long way.
        match destroy_by_name(sub, OsStr::new(id), &path) {
            Ok(()) => {}
            Err(e)
                if [Errno::ENOTEMPTY, Errno::EPERM, Errno::EACCES, Errno::EROFS]
                    .iter()
                    .any(|&n| e.is(n)) =>
            {
                self.remove_nested(id)?
            }
            Err(e) if e.is(Errno::ENOENT) => return self.require_layer(id, "remove").map(drop),
            Err(e) => return Err(e),
        }
        // With quotas on, every subvolume has a qgroup (0/id) that outlives it unless destroyed.
        if let Some(q) = qgroup {
            self.release_qgroup_later(q);
        }
        Ok(())
    }

    /// Remove a layer whose subvolume cannot go in one SNAP_DESTROY.
    fn remove_nested(&self, id: &str) -> Result<()> {
        let dirs = self.dirs()?;
        let sub = dirs.subvolumes.as_fd();
        let del = self.temp_name("del", id);
        // The commit point: from here on the layer is gone, whatever happens next.
        open::renameat2(
            sub,
            OsStr::new(id),
            sub,
            OsStr::new(&del),
            Rename::NoReplace,
        )
        .at("renameat2", &self.layer_path(id))?;
        let del_path = self.subvolumes_path().join(&del);
        delete_at(sub, OsStr::new(&del), true, &del_path)
    }

    /// The absolute path of layer `id`, held until `put`.
    pub fn get(&self, id: &str, mount_label: Option<&str>) -> Result<PathBuf> {
        self.require_writable("get")?;
        let fd = self.require_layer(id, "get")?;
        let path = self.layer_path(id);
        if let Some(label) = mount_label {
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
        let fd = self.require_layer(id, "getMetadata")?;
        let info = subvolume::info_fd(fd.as_fd(), &self.layer_path(id))?;
        Ok(self.record(fd.as_fd(), id)?.view(id, &info))
    }

    /// Make every call that returned before this one durable: write back the filesystem's
    /// data and commit (syncfs, then START_SYNC + WAIT_SYNC).
    pub fn sync(&self) -> Result<()> {
        let dirs = self.dirs()?;
        filesystem::sync_fd(dirs.subvolumes.as_fd(), &self.home)
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
            mounts::unmount(&self.home)?;
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
        self.require_writable("mountIdmapped")?;
        check_id(id, "mountIdmapped")?;
        check(target, "mountIdmapped")?;
        let shown_uids = IdMapping::new(uid_maps, "uidMaps")?;
        let shown_gids = IdMapping::new(gid_maps, "gidMaps")?;
        let layer = self.require_layer(id, "mountIdmapped")?;
        open::open_dir(target)?;
        let (stored_uids, stored_gids) = self.mappings_of(layer.as_fd(), id)?;
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

/// Set the SELinux label of a layer root; without SELinux the label is accepted and ignored.
fn set_label(fd: BorrowedFd<'_>, label: &str, shown: &Path) -> Result<()> {
    if label.is_empty() || !selinux_enabled() {
        return Ok(());
    }
    // SAFETY: the name is NUL-terminated; the value is readable for label.len() bytes.
    let r = unsafe {
        libc::fsetxattr(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            c"security.selinux".as_ptr(),
            label.as_ptr().cast(),
            label.len(),
            0,
        )
    };
    Errno::result(r).map(drop).at("fsetxattr", shown)
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
