//! Parent directories of entries, resolved inside the layer root (symlinks followed as if the
//! root were `/`, never across a mount), created when missing, and the last few cached.

use crate::error::{Context, Error, Result};
use crate::open::open_beneath;
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, Mode};
use nix::unistd::{fchown, Gid, Uid};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

use super::name::shown;

const CACHED: usize = 8;
/// openat2 fails with EAGAIN when a rename raced a RESOLVE_IN_ROOT walk; retry this often.
const RETRIES: usize = 8;
/// Mode of the directories created for entries whose parents are missing.
const MISSING_PARENT_MODE: u32 = 0o755;

/// Device and inode number: which directory an fd holds, whatever path led there.
pub(super) type InodeId = (u64, u64);

/// An open directory of the layer.
pub(super) struct LayerDir {
    pub fd: OwnedFd,
    pub id: InodeId,
}

impl LayerDir {
    pub fn new(fd: OwnedFd, shown: &std::path::Path) -> Result<Self> {
        let id = inode_id(fd.as_fd()).at("fstat", shown)?;
        Ok(LayerDir { fd, id })
    }
}

/// The device and inode number of `fd`.
pub(super) fn inode_id(fd: BorrowedFd<'_>) -> nix::Result<InodeId> {
    let st = fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// Resolves and creates parent directories under one layer root.
pub(super) struct Parents {
    root: Rc<LayerDir>,
    /// Most recently used last.
    recent: Vec<(Box<[u8]>, Rc<LayerDir>)>,
    /// Host uid and gid of container root, owner of the directories created for missing parents.
    owner: Result<(u32, u32)>,
}

impl Parents {
    pub fn new(root: OwnedFd, owner: Result<(u32, u32)>) -> Result<Self> {
        let root = Rc::new(LayerDir::new(root, shown(b"."))?);
        Ok(Parents {
            root,
            recent: Vec::with_capacity(CACHED),
            owner,
        })
    }

    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.fd.as_fd()
    }

    pub fn root_id(&self) -> InodeId {
        self.root.id
    }

    /// The directory at layer path `path` (empty: the root). With `create`, missing
    /// directories on the way are made (0755, owned by container root).
    pub fn open(&mut self, path: &[u8], create: bool) -> Result<Rc<LayerDir>> {
        if path.is_empty() {
            return Ok(self.root.clone());
        }
        if let Some(i) = self.recent.iter().position(|(p, _)| &**p == path) {
            let hit = self.recent.remove(i);
            let fd = hit.1.clone();
            self.recent.push(hit);
            return Ok(fd);
        }
        let fd = match resolve_in_root(self.root(), path) {
            Err(Errno::ENOENT) if create => self.create_missing(path)?,
            r => r.at("openat2", shown(path))?,
        };
        let fd = Rc::new(LayerDir::new(fd, shown(path))?);
        if self.recent.len() == CACHED {
            self.recent.remove(0);
        }
        self.recent.push((path.into(), fd.clone()));
        Ok(fd)
    }

    /// Drop every cached resolution: call after removing a directory or a symlink, since a
    /// cached path may have gone through it.
    pub fn forget(&mut self) {
        self.recent.clear();
    }

    /// Make the missing directories of `path`, from the deepest one that exists.
    fn create_missing(&mut self, path: &[u8]) -> Result<OwnedFd> {
        let mut dir: Option<OwnedFd> = None;
        let mut made = false;
        for (end, name) in components(path) {
            let prefix = &path[..end];
            if !made {
                match resolve_in_root(self.root(), prefix) {
                    Ok(fd) => {
                        dir = Some(fd);
                        continue;
                    }
                    Err(Errno::ENOENT) => {}
                    Err(e) => return Err(Error::sys(e, "openat2", shown(prefix))),
                }
            }
            let parent = dir.as_ref().map_or(self.root(), |fd| fd.as_fd());
            dir = Some(self.make_dir(parent, name, prefix)?);
            made = true;
        }
        dir.ok_or_else(|| Error::internal("create_missing of an empty path"))
    }

    /// mkdirat `name` in `parent`, then open it without following anything.
    fn make_dir(&self, parent: BorrowedFd<'_>, name: &[u8], prefix: &[u8]) -> Result<OwnedFd> {
        let shown = shown(prefix);
        // EEXIST here means a symlink to nowhere (inside the layer) sits where a directory
        // must go: the stream asks to write through it.
        mkdirat(parent, name, Mode::from_bits_truncate(0o700)).map_err(|e| match e {
            Errno::EEXIST => super::bad_layer(
                shown,
                "a parent directory is a symlink to a missing directory",
            ),
            e => Error::sys(e, "mkdirat", shown),
        })?;
        let fd = open_beneath(parent, super::name::shown(name), shown)?;
        let (uid, gid) = self.owner.clone()?;
        fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).at("fchown", shown)?;
        fchmod(&fd, Mode::from_bits_truncate(MISSING_PARENT_MODE)).at("fchmod", shown)?;
        Ok(fd)
    }
}

/// Each component of `path` with the length of the prefix that ends with it.
fn components(path: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut start = 0;
    path.split(|&b| b == b'/').map(move |name| {
        let end = start + name.len();
        start = end + 1;
        (end, name)
    })
}

/// Open directory `path` of the layer: symlinks resolve as if `root` were `/`, `..` stops at
/// the root, magic links and mount crossings fail. Without openat2 (Linux < 5.6), fall back to
/// a walk that follows no symlink at all.
pub(super) fn resolve_in_root(root: BorrowedFd<'_>, path: &[u8]) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_IN_ROOT
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    let mut tries = 0;
    loop {
        match openat2(root, shown(path), how) {
            Err(Errno::EAGAIN) if tries < RETRIES => tries += 1,
            Err(Errno::ENOSYS) => {
                return open_beneath(root, shown(path), shown(path))
                    .map_err(|e| e.errno().map_or(Errno::EIO, Errno::from_raw));
            }
            r => return r,
        }
    }
}
