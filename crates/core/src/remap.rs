//! Shifting the owner of every inode of a tree from one id mapping to another: a parallel
//! walk by directory fds, lchown only, each multiply-linked inode once, never leaving the
//! filesystem (nor, unless asked, the subvolume), and putting back what chown takes away:
//! setuid/setgid bits and `security.capability` (with a v3 capability's rootid shifted too);
//! POSIX ACL entries are shifted as well. Errors are collected with their paths.

use crate::error::{Code, Error, Result};
use crate::idmap::IdMapping;
use crate::xattr;
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use nix::unistd::{fchownat, Gid, Uid};
use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// From which mapping to which: an id `i` becomes `to.to_host(from.to_container(i))`.
pub struct RemapOptions<'a> {
    pub from_uids: &'a IdMapping,
    pub from_gids: &'a IdMapping,
    pub to_uids: &'a IdMapping,
    pub to_gids: &'a IdMapping,
    /// Descend into nested subvolumes of the same filesystem (never into other filesystems).
    pub cross_subvolumes: bool,
    pub abort: &'a AtomicBool,
    /// Called with the number of inodes visited so far.
    pub progress: &'a (dyn Fn(u64) + Sync),
}

/// What a remap did: inodes visited, inodes changed, and every error with its path.
#[derive(Debug, Default)]
pub struct RemapOutcome {
    pub visited: u64,
    pub changed: u64,
    pub errors: Vec<Error>,
}

struct Walk<'a> {
    opts: &'a RemapOptions<'a>,
    links: Mutex<HashSet<(u64, u64)>>,
    errors: Mutex<Vec<Error>>,
    visited: AtomicU64,
    changed: AtomicU64,
}

/// Remap every inode under the directory `root` (itself included).
pub fn remap_tree(
    root: BorrowedFd<'_>,
    shown: &Path,
    opts: &RemapOptions<'_>,
) -> Result<RemapOutcome> {
    let aborted = || Error {
        code: Code::Aborted,
        syscall: "remap",
        path: Some(shown.to_path_buf()),
        message: "the operation was aborted".into(),
    };
    if opts.abort.load(Ordering::Relaxed) {
        return Err(aborted());
    }
    let stx = statx_at(root, None).map_err(|e| Error::sys(e, "statx", shown))?;
    let walk = Walk {
        opts,
        links: Mutex::new(HashSet::new()),
        errors: Mutex::new(Vec::new()),
        visited: AtomicU64::new(0),
        changed: AtomicU64::new(0),
    };
    // The root itself, through its own fd ("/proc/self/fd/N/." names the directory, not the link).
    walk.tick();
    if let Err(e) = walk.shift(root, None, &Stat::from(&stx), shown) {
        walk.fail(e);
    }
    let top = Node {
        fd: root
            .try_clone_to_owned()
            .map_err(|e| Error::io(e, "dup", shown))?,
        stat: Stat::from(&stx),
        path: shown.to_path_buf(),
    };
    rayon::scope(|s| walk.dir(s, top));
    if opts.abort.load(Ordering::Relaxed) {
        return Err(aborted());
    }
    (opts.progress)(walk.visited.load(Ordering::Relaxed));
    Ok(RemapOutcome {
        visited: walk.visited.into_inner(),
        changed: walk.changed.into_inner(),
        errors: walk.errors.into_inner().unwrap_or_else(|p| p.into_inner()),
    })
}

/// What the walk needs of an inode.
#[derive(Clone, Copy)]
struct Stat {
    mode: u32,
    uid: u32,
    gid: u32,
    ino: u64,
    nlink: u32,
    dev: (u32, u32),
    mnt_id: u64,
}

impl Stat {
    fn from(stx: &libc::statx) -> Stat {
        Stat {
            mode: u32::from(stx.stx_mode),
            uid: stx.stx_uid,
            gid: stx.stx_gid,
            ino: stx.stx_ino,
            nlink: stx.stx_nlink,
            dev: (stx.stx_dev_major, stx.stx_dev_minor),
            mnt_id: if stx.stx_mask & libc::STATX_MNT_ID != 0 {
                stx.stx_mnt_id
            } else {
                0
            },
        }
    }

    fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
}

/// A directory being walked: its fd, its own stat, its path for reports.
struct Node {
    fd: OwnedFd,
    stat: Stat,
    path: PathBuf,
}

/// Host id `id` under `from` to the host id of the same container id under `to`; the error
/// names `path`.
fn shift_id(from: &IdMapping, to: &IdMapping, id: u32, path: &Path) -> Result<u32> {
    let at = |e: Error| Error {
        path: Some(path.to_path_buf()),
        ..e
    };
    to.to_host(from.to_container(id).map_err(at)?).map_err(at)
}

/// statx of `name` in `dir` (or of `dir` itself), never following a symlink or automount.
fn statx_at(dir: BorrowedFd<'_>, name: Option<&CStr>) -> std::result::Result<libc::statx, Errno> {
    // SAFETY: statx is plain data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let (path, flags) = match name {
        Some(n) => (n, libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT),
        None => (c"", libc::AT_EMPTY_PATH),
    };
    // SAFETY: path is NUL-terminated and stx a valid out-pointer.
    let r = unsafe {
        libc::statx(
            dir.as_raw_fd(),
            path.as_ptr(),
            flags,
            libc::STATX_BASIC_STATS | libc::STATX_MNT_ID,
            &mut stx,
        )
    };
    Errno::result(r).map(|_| stx)
}

impl<'a> Walk<'a> {
    fn fail(&self, e: Error) {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
    }

    fn tick(&self) {
        let n = self.visited.fetch_add(1, Ordering::Relaxed) + 1;
        if n % 4096 == 0 {
            (self.opts.progress)(n);
        }
    }

    fn map_uid(&self, id: u32, path: &Path) -> Result<u32> {
        shift_id(self.opts.from_uids, self.opts.to_uids, id, path)
    }

    fn map_gid(&self, id: u32, path: &Path) -> Result<u32> {
        shift_id(self.opts.from_gids, self.opts.to_gids, id, path)
    }

    /// Remap the entries of directory `node` (already remapped itself), subdirectories in parallel.
    fn dir<'s>(&'s self, scope: &rayon::Scope<'s>, node: Node) {
        if self.opts.abort.load(Ordering::Relaxed) {
            return;
        }
        let mut d = match Dir::openat(
            &node.fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(d) => d,
            Err(e) => return self.fail(Error::sys(e, "openat", &node.path)),
        };
        for entry in d.iter() {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => return self.fail(Error::sys(e, "getdents64", &node.path)),
            };
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let child = node.path.join(OsStr::from_bytes(name.to_bytes()));
            match self.entry(&node, name, &child) {
                Ok(Some(sub)) => scope.spawn(move |s| self.dir(s, sub)),
                Ok(None) => {}
                Err(e) => self.fail(e),
            }
        }
    }

    /// Remap one entry of `parent`; returns a subdirectory to descend into.
    fn entry(&self, parent: &Node, name: &CStr, path: &Path) -> Result<Option<Node>> {
        let dir = parent.fd.as_fd();
        let st = Stat::from(&statx_at(dir, Some(name)).map_err(|e| Error::sys(e, "statx", path))?);
        // A mount point (of a directory or a file, from any filesystem): not part of the tree.
        if st.mnt_id != 0 && parent.stat.mnt_id != 0 && st.mnt_id != parent.stat.mnt_id {
            return Ok(None);
        }
        if st.dev != parent.stat.dev {
            // Another subvolume of this filesystem (inode 256), entered only when asked.
            let nested = st.kind() == libc::S_IFDIR
                && st.ino == crate::ioctl::FIRST_FREE_OBJECTID
                && self.same_fs(dir, name);
            if !(self.opts.cross_subvolumes && nested) {
                return Ok(None);
            }
        }
        let first_time = st.kind() == libc::S_IFDIR
            || st.nlink < 2
            || self
                .links
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((u64::from(st.dev.0) << 32 | u64::from(st.dev.1), st.ino));
        if first_time {
            self.tick();
            self.shift(dir, Some(name), &st, path)?;
        }
        if st.kind() != libc::S_IFDIR {
            return Ok(None);
        }
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_XDEV,
            );
        match openat2(dir, name, how) {
            Ok(fd) => Ok(Some(Node {
                fd,
                stat: st,
                path: path.to_path_buf(),
            })),
            // A mount point after all: never cross into it.
            Err(Errno::EXDEV) => Ok(None),
            Err(e) => Err(Error::sys(e, "openat2", path)),
        }
    }

    fn same_fs(&self, dir: BorrowedFd<'_>, name: &CStr) -> bool {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_XDEV,
            );
        let Ok(child) = openat2(dir, name, how) else {
            return false;
        };
        let p = Path::new("");
        matches!((crate::open::fsid(dir, p), crate::open::fsid(child.as_fd(), p)), (Ok(a), Ok(b)) if a == b)
    }

    /// Shift the owner of `name` in `dir` (or of `dir` itself) and the ids in its ACLs and
    /// capability, putting back what chown clears. An entry costs statx (done by the caller),
    /// llistxattr and fchownat; only the rare setuid/setgid file pins its inode for the chmod.
    fn shift(
        &self,
        dir: BorrowedFd<'_>,
        name: Option<&CStr>,
        st: &Stat,
        path: &Path,
    ) -> Result<()> {
        let (uid, gid) = (self.map_uid(st.uid, path)?, self.map_gid(st.gid, path)?);
        let owner_changes = (uid, gid) != (st.uid, st.gid);
        // The xattrs: through the directory for an entry (l*xattr never follow the final
        // name, a symlink swapped in included); through its own fd for the walk's root.
        let proc = xattr::proc_path(dir, name);
        let at = if name.is_some() {
            xattr::At::Entry(&proc)
        } else {
            xattr::At::Inode(&proc)
        };
        let saved = if st.kind() == libc::S_IFLNK {
            Vec::new()
        } else {
            self.shifted_xattrs(at, path)?
        };
        if !owner_changes && saved.iter().all(|x| !x.2) {
            return Ok(());
        }
        if owner_changes {
            let (u, g) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
            match name {
                Some(n) => fchownat(dir, n, u, g, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|e| Error::sys(e, "fchownat", path))?,
                None => {
                    nix::unistd::fchown(dir, u, g).map_err(|e| Error::sys(e, "fchown", path))?
                }
            }
            self.changed.fetch_add(1, Ordering::Relaxed);
            if st.kind() != libc::S_IFDIR
                && st.kind() != libc::S_IFLNK
                && st.mode & (libc::S_ISUID | libc::S_ISGID) != 0
            {
                self.restore_mode(dir, name, st, path)?;
            }
        }
        for (key, v, changed) in saved {
            // chown cleared the capability; ACLs need writing only when their ids moved.
            if owner_changes && key == c"security.capability" || changed {
                let r = match at {
                    // SAFETY: the path and key are NUL-terminated; v is a live buffer of v.len() bytes.
                    xattr::At::Entry(p) => unsafe {
                        libc::lsetxattr(
                            p.as_ptr(),
                            key.as_ptr(),
                            v.as_ptr() as *const libc::c_void,
                            v.len(),
                            0,
                        )
                    },
                    // SAFETY: as above.
                    xattr::At::Inode(p) => unsafe {
                        libc::setxattr(
                            p.as_ptr(),
                            key.as_ptr(),
                            v.as_ptr() as *const libc::c_void,
                            v.len(),
                            0,
                        )
                    },
                };
                Errno::result(r).map_err(|e| Error::sys(e, "setxattr", path))?;
            }
        }
        Ok(())
    }

    /// Put back setuid/setgid bits that chown cleared. chmod follows symlinks, so the inode is
    /// pinned by an O_PATH fd and checked first: a name swapped for a symlink is never followed.
    fn restore_mode(
        &self,
        dir: BorrowedFd<'_>,
        name: Option<&CStr>,
        st: &Stat,
        path: &Path,
    ) -> Result<()> {
        let pinned = match name {
            Some(n) => nix::fcntl::openat(
                dir,
                n,
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::sys(e, "openat", path))?,
            None => dir
                .try_clone_to_owned()
                .map_err(|e| Error::io(e, "dup", path))?,
        };
        let now =
            Stat::from(&statx_at(pinned.as_fd(), None).map_err(|e| Error::sys(e, "statx", path))?);
        if now.ino != st.ino || now.kind() != st.kind() {
            return Err(Error::invalid(
                Errno::EAGAIN,
                "chmod",
                path,
                "the entry changed during the remap",
            ));
        }
        let proc = CString::new(format!("/proc/self/fd/{}", pinned.as_raw_fd())).expect("no NUL");
        // SAFETY: proc is NUL-terminated; the magic link resolves to the pinned inode.
        let r = unsafe { libc::chmod(proc.as_ptr(), st.mode & 0o7777) };
        Errno::result(r)
            .map(drop)
            .map_err(|e| Error::sys(e, "chmod", path))
    }

    /// `security.capability` and the POSIX ACLs at `at`, with their ids shifted, and whether
    /// the shift changed them.
    fn shifted_xattrs(
        &self,
        at: xattr::At<'_>,
        path: &Path,
    ) -> Result<Vec<(&'static CStr, Vec<u8>, bool)>> {
        let names = xattr::list(at, path)?;
        let mut out = Vec::new();
        for key in [
            c"security.capability",
            c"system.posix_acl_access",
            c"system.posix_acl_default",
        ] {
            if !names.iter().any(|n| n.as_slice() == key.to_bytes()) {
                continue;
            }
            let Some(mut v) = xattr::get(at, key, path)? else {
                continue;
            };
            let before = v.clone();
            if key == c"security.capability" {
                xattr::shift_capability_rootid(&mut v, |id| self.map_uid(id, path))?;
            } else {
                xattr::shift_acl_ids(
                    &mut v,
                    |id| self.map_uid(id, path),
                    |id| self.map_gid(id, path),
                )?;
            }
            let changed = v != before;
            out.push((key, v, changed));
        }
        Ok(out)
    }
}

/// [`remap_tree`] of the directory at `path` (the caller's path; symlinks in it are followed).
pub fn remap_path(path: &Path, opts: &RemapOptions<'_>) -> Result<RemapOutcome> {
    crate::path::check(path, "remap")?;
    let fd = crate::open::open_dir(path)?;
    remap_tree(fd.as_fd(), path, opts)
}
