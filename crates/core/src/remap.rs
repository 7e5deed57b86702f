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
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};
use nix::unistd::{fchownat, Gid, Uid};
use std::collections::HashSet;
use std::ffi::{CStr, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
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
    root_dev: u64,
    links: Mutex<HashSet<(u64, u64)>>,
    errors: Mutex<Vec<Error>>,
    visited: AtomicU64,
    changed: AtomicU64,
}

const VFS_CAP_REVISION_3: u32 = 0x0300_0000;
const VFS_CAP_REVISION_MASK: u32 = 0xFF00_0000;
const ACL_USER: u16 = 0x02;
const ACL_GROUP: u16 = 0x08;

/// Remap every inode under the directory `root` (itself included).
pub fn remap_tree(
    root: BorrowedFd<'_>,
    shown: &Path,
    opts: &RemapOptions<'_>,
) -> Result<RemapOutcome> {
    let st = fstat(root).map_err(|e| Error::sys(e, "fstat", shown))?;
    let walk = Walk {
        opts,
        root_dev: st.st_dev,
        links: Mutex::new(HashSet::new()),
        errors: Mutex::new(Vec::new()),
        visited: AtomicU64::new(0),
        changed: AtomicU64::new(0),
    };
    // The root itself, through its own fd.
    walk.remap_root(root, &st, shown);
    rayon::scope(|s| {
        walk.dir(
            s,
            root.try_clone_to_owned().expect("dup of a live fd"),
            shown.to_path_buf(),
        )
    });
    if opts.abort.load(Ordering::Relaxed) {
        return Err(Error {
            code: Code::Aborted,
            syscall: "remap",
            path: Some(shown.to_path_buf()),
            message: "the operation was aborted".into(),
        });
    }
    (opts.progress)(walk.visited.load(Ordering::Relaxed));
    Ok(RemapOutcome {
        visited: walk.visited.into_inner(),
        changed: walk.changed.into_inner(),
        errors: walk.errors.into_inner().unwrap_or_else(|p| p.into_inner()),
    })
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
        let at = |e: Error| Error {
            path: Some(path.to_path_buf()),
            ..e
        };
        self.opts
            .to_uids
            .to_host(self.opts.from_uids.to_container(id).map_err(at)?)
            .map_err(at)
    }

    fn map_gid(&self, id: u32, path: &Path) -> Result<u32> {
        let at = |e: Error| Error {
            path: Some(path.to_path_buf()),
            ..e
        };
        self.opts
            .to_gids
            .to_host(self.opts.from_gids.to_container(id).map_err(at)?)
            .map_err(at)
    }

    fn new_ids(&self, st: &FileStat, path: &Path) -> Result<(u32, u32)> {
        Ok((
            self.map_uid(st.st_uid, path)?,
            self.map_gid(st.st_gid, path)?,
        ))
    }

    fn remap_root(&self, root: BorrowedFd<'_>, st: &FileStat, shown: &Path) {
        self.tick();
        let r = self.new_ids(st, shown).and_then(|(uid, gid)| {
            if (uid, gid) == (st.st_uid, st.st_gid) {
                return Ok(());
            }
            let proc = xattr::proc_path(root, None);
            let saved = self.saved_xattrs(&proc, shown)?;
            nix::unistd::fchown(root, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .map_err(|e| Error::sys(e, "fchown", shown))?;
            self.changed.fetch_add(1, Ordering::Relaxed);
            self.restore(&proc, st, saved, shown)
        });
        if let Err(e) = r {
            self.fail(e);
        }
    }

    /// Remap the entries of directory `dir` (already remapped itself), subdirectories in parallel.
    fn dir<'s>(&'s self, scope: &rayon::Scope<'s>, dir: OwnedFd, path: PathBuf) {
        if self.opts.abort.load(Ordering::Relaxed) {
            return;
        }
        let mut d = match Dir::openat(
            &dir,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(d) => d,
            Err(e) => return self.fail(Error::sys(e, "openat", &path)),
        };
        for entry in d.iter() {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => return self.fail(Error::sys(e, "getdents64", &path)),
            };
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let child = path.join(OsStr::from_bytes(name.to_bytes()));
            match self.entry(dir.as_fd(), name, &child) {
                Ok(Some(sub)) => scope.spawn(move |s| self.dir(s, sub, child)),
                Ok(None) => {}
                Err(e) => self.fail(e),
            }
        }
    }

    /// Remap one entry; returns the fd of a subdirectory to descend into.
    fn entry(&self, dir: BorrowedFd<'_>, name: &CStr, path: &Path) -> Result<Option<OwnedFd>> {
        let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| Error::sys(e, "fstatat", path))?;
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFDIR && st.st_dev != self.root_dev {
            // Another subvolume (same fs, inode 256) or another filesystem.
            let nested_subvolume =
                st.st_ino == crate::ioctl::FIRST_FREE_OBJECTID && self.same_fs(dir, name);
            if !(self.opts.cross_subvolumes && nested_subvolume) {
                return Ok(None);
            }
        }
        let first_time = kind == libc::S_IFDIR
            || st.st_nlink < 2
            || self
                .links
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((st.st_dev, st.st_ino));
        if first_time {
            self.tick();
            let (uid, gid) = self.new_ids(&st, path)?;
            if (uid, gid) != (st.st_uid, st.st_gid) {
                let proc = xattr::proc_path(dir, Some(name));
                let saved = if kind == libc::S_IFLNK {
                    Vec::new()
                } else {
                    self.saved_xattrs(&proc, path)?
                };
                fchownat(
                    dir,
                    name,
                    Some(Uid::from_raw(uid)),
                    Some(Gid::from_raw(gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| Error::sys(e, "fchownat", path))?;
                self.changed.fetch_add(1, Ordering::Relaxed);
                if kind != libc::S_IFLNK {
                    self.restore(&proc, &st, saved, path)?;
                }
            }
        }
        if kind != libc::S_IFDIR {
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
            Ok(fd) => Ok(Some(fd)),
            // A mount point: never cross into it.
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

    /// The xattrs chown clears or that hold ids: `security.capability` and POSIX ACLs, shifted.
    fn saved_xattrs(&self, proc: &CStr, path: &Path) -> Result<Vec<(&'static CStr, Vec<u8>)>> {
        let names = xattr::list(proc, path)?;
        let mut out = Vec::new();
        for key in [
            c"security.capability",
            c"system.posix_acl_access",
            c"system.posix_acl_default",
        ] {
            if !names.iter().any(|n| n.as_slice() == key.to_bytes()) {
                continue;
            }
            let Some(mut v) = xattr::get(proc, key, path)? else {
                continue;
            };
            if key == c"security.capability" {
                self.shift_capability(&mut v, path)?;
            } else {
                self.shift_acl(&mut v, path)?;
            }
            out.push((key, v));
        }
        Ok(out)
    }

    fn shift_capability(&self, v: &mut [u8], path: &Path) -> Result<()> {
        if v.len() >= 24
            && u32::from_le_bytes(v[0..4].try_into().unwrap()) & VFS_CAP_REVISION_MASK
                == VFS_CAP_REVISION_3
        {
            let rootid = u32::from_le_bytes(v[20..24].try_into().unwrap());
            v[20..24].copy_from_slice(&self.map_uid(rootid, path)?.to_le_bytes());
        }
        Ok(())
    }

    fn shift_acl(&self, v: &mut [u8], path: &Path) -> Result<()> {
        for e in v.get_mut(4..).unwrap_or_default().chunks_exact_mut(8) {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let id = u32::from_le_bytes(e[4..8].try_into().unwrap());
            let new = match tag {
                ACL_USER => self.map_uid(id, path)?,
                ACL_GROUP => self.map_gid(id, path)?,
                _ => continue,
            };
            e[4..8].copy_from_slice(&new.to_le_bytes());
        }
        Ok(())
    }

    /// Put back the setuid/setgid bits and the saved xattrs after chown.
    fn restore(
        &self,
        proc: &CStr,
        st: &FileStat,
        saved: Vec<(&'static CStr, Vec<u8>)>,
        path: &Path,
    ) -> Result<()> {
        let kind = st.st_mode & libc::S_IFMT;
        if kind != libc::S_IFDIR && st.st_mode & (libc::S_ISUID | libc::S_ISGID) != 0 {
            // chmod through the fd's /proc link acts on the inode already open, never on a new name.
            // SAFETY: proc is NUL-terminated.
            let r = unsafe { libc::chmod(proc.as_ptr(), st.st_mode & 0o7777) };
            Errno::result(r).map_err(|e| Error::sys(e, "chmod", path))?;
        }
        for (key, v) in saved {
            // SAFETY: proc and key are NUL-terminated; v is a live buffer of v.len() bytes.
            let r = unsafe {
                libc::lsetxattr(
                    proc.as_ptr(),
                    key.as_ptr(),
                    v.as_ptr() as *const libc::c_void,
                    v.len(),
                    0,
                )
            };
            Errno::result(r).map_err(|e| Error::sys(e, "lsetxattr", path))?;
        }
        Ok(())
    }
}

/// [`remap_tree`] of the directory at `path` (the caller's path; symlinks in it are followed).
pub fn remap_path(path: &Path, opts: &RemapOptions<'_>) -> Result<RemapOutcome> {
    crate::path::check(path, "remap")?;
    let fd = crate::open::open_dir(path)?;
    remap_tree(fd.as_fd(), path, opts)
}
