//! Shifting the owner of every inode of a tree from one id mapping to another: a parallel
//! walk by directory fds, lchown only, each multiply-linked inode once, never leaving the
//! filesystem (nor, unless asked, the subvolume), and putting back what chown takes away:
//! setuid/setgid bits and `security.capability` (with a v3 capability's rootid shifted too);
//! POSIX ACL entries are shifted as well. Errors are collected with their paths.
//!
//! Two ways to learn an inode's owner:
//!
//! - **statx** (the reference, always correct): per entry statx (owner, mode, link count, device
//!   and mount id), llistxattr (is there a capability or an ACL to carry over?) and fchownat.
//!   The device tells a nested subvolume, the mount id a mount point: neither is chowned.
//! - **the inode table** ([`crate::inodes`]): when the tree is a whole subvolume on btrfs and
//!   the process may use TREE_SEARCH_V2 (CAP_SYS_ADMIN), the running transaction is committed
//!   (so the btree holds every change made before the call) and the subvolume's inode items
//!   and xattr names are read, on rayon's pool. The walk then costs one fchownat per
//!   non-directory entry, found by the entry's `d_ino` from getdents; only entries the table
//!   flags get the xattr calls and the setuid/setgid chmod. Anything the table cannot vouch for
//!   goes the statx way: an entry whose inode is not in the table (made after the commit), or
//!   whose type differs from the table's (replaced after it), or of unknown type.
//!   Directories are never taken from the table: each is opened (openat2, no symlinks, no
//!   mount crossing: EXDEV for a mount point, which is left alone), stat'ed and chowned
//!   through its own fd, so a nested subvolume (a directory whose `d_ino` is a subvolume id
//!   that may well collide with an inode number of the table) is told by the device of what
//!   was opened, never by the table, and a nested subvolume that is entered
//!   (`cross_subvolumes`) is walked with a table of its own. A non-directory is always an
//!   inode of its directory's subvolume, so its `d_ino` indexes the right table.
//!
//!   The one thing fchownat by name would do that the statx way never does is follow a mount
//!   point (a file bind-mounted over an entry; directories are opened with openat2 and
//!   RESOLVE_NO_XDEV, which refuses to cross one): chown acts on the mounted inode. So the
//!   table is used only when the mount table (of the calling thread's mount namespace) shows
//!   no mount point inside the tree: any mount whose parent is the tree's mount and whose mount
//!   point is at or below the tree's path; when that cannot be told, the statx way is taken.
//!   The mount table is read once, at the start: a mount made inside the tree while the remap
//!   runs (which takes CAP_SYS_ADMIN in this mount namespace) is not noticed on the table way;
//!   on the statx way it is.
//!
//!   The table is a snapshot at the commit: an owner changed between the commit and the chown
//!   of that inode is overwritten with the shift of the committed owner, as the statx way
//!   overwrites a change made between its statx and its fchownat. Shifting a tree that is being
//!   changed has no single right answer either way; a tree at rest is shifted the same by both.
//!   The table's owner makes the chown of an inode idempotent, so an inode linked again after
//!   the commit (met twice, with a link count of 1 in the table) gets the same owner twice;
//!   inodes with a capability or an ACL, whose xattrs are shifted in place, are met once
//!   whatever their link count.
//!
//! What it costs: the kernel's work in an fchownat of an inode not yet in the inode cache (the
//! lookup reads the directory item and the inode item; chown reads `security.capability` to
//! know whether to drop it, then queues the inode update) is most of the time, and GNU
//! `chown -R` pays it too, with one fchownat per inode. The statx way adds two calls per
//! entry (statx, and llistxattr through a /proc path); the table way adds about 1.5 µs of
//! kernel time per inode to read the table, and gains over `chown -R` by walking in parallel.
//! Measured on 2 cores, 100,000 small files: one thread takes about as long as `chown -R`
//! (same kernel work), two about 0.65-0.7x of it. Not 0.5x: btrfs's kworkers then write the
//! queued inode updates into the btree (some 7 µs of CPU per inode), which `chown -R` leaves
//! to the idle second core and a parallel walk has to share its cores with.
//!
//! Without CAP_SYS_ADMIN (EPERM), on another filesystem, for a directory that is not a
//! subvolume's root (the table would cover the whole subvolume for a part of it) or with
//! [`Method::Statx`], the statx way is taken throughout.

use crate::control::Control;
use crate::error::{Error, Result};
use crate::idmap::IdMapping;
use crate::inodes::{self, InodeTable};
use crate::xattr;
use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use nix::unistd::{fchownat, Gid, Uid};
use std::cell::OnceCell;
use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How a subdirectory is opened: a directory, beneath, no symlink followed, no mount crossed.
fn subdir_how() -> OpenHow {
    OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        )
}

/// From which mapping to which: an id `i` becomes `to.to_host(from.to_container(i))`.
pub struct RemapOptions<'a> {
    pub from_uids: &'a IdMapping,
    pub from_gids: &'a IdMapping,
    pub to_uids: &'a IdMapping,
    pub to_gids: &'a IdMapping,
    /// Descend into nested subvolumes of the same filesystem (never into other filesystems).
    pub cross_subvolumes: bool,
    /// How the walk learns each inode's owner (tests and benchmarks compare the two).
    pub method: Method,
    /// Abort: checked before every directory. Progress: the inodes visited so far, every
    /// 4096 and at the end.
    pub control: Control<'a>,
}

/// What a remap did: inodes visited, inodes changed, and every error with its path.
#[derive(Debug, Default)]
pub struct RemapOutcome {
    pub visited: u64,
    pub changed: u64,
    pub errors: Vec<Error>,
    /// Of the inodes visited, those whose owner came from the inode table rather than statx
    /// (0 when the table was not used; see the module doc).
    pub from_table: u64,
}

/// How the walk learns each inode's owner (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    /// The inode table where it may be used, statx elsewhere.
    #[default]
    Auto,
    /// statx and llistxattr of every entry, never the table.
    Statx,
}

struct Walk<'a> {
    opts: &'a RemapOptions<'a>,
    links: Mutex<HashSet<(u64, u64)>>,
    errors: Mutex<Vec<Error>>,
    visited: AtomicU64,
    changed: AtomicU64,
    from_table: AtomicU64,
}

/// Remap every inode under the directory `root` (itself included).
pub fn remap_tree(
    root: BorrowedFd<'_>,
    shown: &Path,
    opts: &RemapOptions<'_>,
) -> Result<RemapOutcome> {
    opts.control.check("remap", shown)?;
    let stx = statx_at(root, None).map_err(|e| Error::sys(e, "statx", shown))?;
    let table = match opts.method {
        Method::Auto => root_table(root, &Stat::from(&stx), opts.control, shown)?,
        Method::Statx => None,
    };
    opts.control.check("remap", shown)?;
    let walk = Walk {
        opts,
        links: Mutex::new(HashSet::new()),
        errors: Mutex::new(Vec::new()),
        visited: AtomicU64::new(0),
        changed: AtomicU64::new(0),
        from_table: AtomicU64::new(0),
    };
    // The root itself, through its own fd ("/proc/self/fd/N/." names the directory, not the link).
    walk.tick();
    if let Err(e) = walk.shift(
        root,
        None,
        &Stat::from(&stx),
        &Shown::new(shown, None),
        None,
    ) {
        walk.fail(e);
    }
    let top = Node {
        fd: root
            .try_clone_to_owned()
            .map_err(|e| Error::io(e, "dup", shown))?,
        stat: Stat::from(&stx),
        path: shown.to_path_buf(),
        table,
    };
    rayon::scope(|s| walk.dir(s, top));
    opts.control.check("remap", shown)?;
    opts.control.progress(walk.visited.load(Ordering::Relaxed));
    Ok(RemapOutcome {
        visited: walk.visited.into_inner(),
        changed: walk.changed.into_inner(),
        errors: walk.errors.into_inner().unwrap_or_else(|p| p.into_inner()),
        from_table: walk.from_table.into_inner(),
    })
}

/// The inode table of the subvolume whose root is `root`, when it may be used (see the
/// module doc); None for the statx way. Errors other than "not allowed, not supported"
/// are the remap's.
fn root_table(
    root: BorrowedFd<'_>,
    st: &Stat,
    control: Control<'_>,
    shown: &Path,
) -> Result<Option<Arc<InodeTable>>> {
    if st.kind() != libc::S_IFDIR || st.ino != crate::ioctl::FIRST_FREE_OBJECTID {
        return Ok(None);
    }
    if crate::open::require_btrfs(root, shown).is_err() {
        return Ok(None);
    }
    if crate::mounts::mounted_inside(root, st.mnt_id) {
        return Ok(None);
    }
    match InodeTable::read(root, control, shown) {
        Ok(t) => Ok(t.map(Arc::new)),
        Err(e) if table_refused(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Errors that mean "no table here" rather than a failing filesystem: no CAP_SYS_ADMIN (or a
/// security module saying no), no such ioctl, a read-only filesystem.
fn table_refused(e: &Error) -> bool {
    [
        Errno::EPERM,
        Errno::EACCES,
        Errno::ENOTTY,
        Errno::ENOSYS,
        Errno::EOPNOTSUPP,
        Errno::EINVAL,
        Errno::EROFS,
    ]
    .iter()
    .any(|&n| e.is(n))
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

/// A directory being walked: its fd, its own stat, its path for reports, and the inode table
/// of its subvolume when its entries are taken from one.
struct Node {
    fd: OwnedFd,
    stat: Stat,
    path: PathBuf,
    table: Option<Arc<InodeTable>>,
}

/// Host id `id` under `from` to the host id of the same container id under `to`; the error
/// names `path`.
fn shift_id(from: &IdMapping, to: &IdMapping, id: u32, path: &Path) -> Result<u32> {
    shift_id_or(from, to, id).map_err(|e| Error {
        path: Some(path.to_path_buf()),
        ..e
    })
}

/// [`shift_id`] whose error names no path yet.
fn shift_id_or(from: &IdMapping, to: &IdMapping, id: u32) -> Result<u32> {
    to.to_host(from.to_container(id)?)
}

/// An entry's path for reports, joined only when a report (or a subdirectory) needs it: most
/// entries never do.
struct Shown<'p> {
    dir: &'p Path,
    name: Option<&'p CStr>,
    joined: OnceCell<PathBuf>,
}

impl<'p> Shown<'p> {
    fn new(dir: &'p Path, name: Option<&'p CStr>) -> Self {
        Shown {
            dir,
            name,
            joined: OnceCell::new(),
        }
    }

    fn get(&self) -> &Path {
        match self.name {
            None => self.dir,
            Some(n) => self
                .joined
                .get_or_init(|| self.dir.join(OsStr::from_bytes(n.to_bytes()))),
        }
    }
}

/// statx of `name` in `dir` (or of `dir` itself), never following a symlink or automount.
fn statx_at(dir: BorrowedFd<'_>, name: Option<&CStr>) -> std::result::Result<libc::statx, Errno> {
    let (path, flags) = match name {
        Some(n) => (n, libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT),
        None => (c"", libc::AT_EMPTY_PATH),
    };
    crate::open::statx(
        dir,
        path,
        flags,
        libc::STATX_BASIC_STATS | libc::STATX_MNT_ID,
    )
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
            self.opts.control.progress(n);
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
        if self.opts.control.aborted() {
            return;
        }
        // O_NOATIME: reading the directory after its chown (a newer ctime) would otherwise
        // update its atime under relatime, one more inode update per directory.
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut d =
            match crate::open::openat_noatime(node.fd.as_fd(), ".", flags).and_then(Dir::from_fd) {
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
            let child = Shown::new(&node.path, Some(name));
            let r = match &node.table {
                Some(t) => {
                    self.entry_by_table(&node, t, name, entry.ino(), entry.file_type(), &child)
                }
                None => self.entry(&node, name, &child),
            };
            match r {
                Ok(Some(sub)) => scope.spawn(move |s| self.dir(s, sub)),
                Ok(None) => {}
                Err(e) => self.fail(e),
            }
        }
    }

    /// Remap one entry of `parent`; returns a subdirectory to descend into.
    fn entry(&self, parent: &Node, name: &CStr, path: &Shown<'_>) -> Result<Option<Node>> {
        let dir = parent.fd.as_fd();
        let st =
            Stat::from(&statx_at(dir, Some(name)).map_err(|e| Error::sys(e, "statx", path.get()))?);
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
        let first_time = st.kind() == libc::S_IFDIR || st.nlink < 2 || self.first_link(&st);
        if first_time {
            self.tick();
            self.shift(dir, Some(name), &st, path, None)?;
        }
        if st.kind() != libc::S_IFDIR {
            return Ok(None);
        }
        let how = subdir_how();
        match openat2(dir, name, how) {
            Ok(fd) => Ok(Some(Node {
                fd,
                stat: st,
                path: path.get().to_path_buf(),
                table: None,
            })),
            // A mount point after all: never cross into it.
            Err(Errno::EXDEV) => Ok(None),
            Err(e) => Err(Error::sys(e, "openat2", path.get())),
        }
    }

    /// Remap one entry of `parent`, whose subvolume's inode table is `table`; returns a
    /// subdirectory to descend into. `d_ino` and `d_type` are getdents'.
    fn entry_by_table(
        &self,
        parent: &Node,
        table: &InodeTable,
        name: &CStr,
        d_ino: u64,
        d_type: Option<Type>,
        path: &Shown<'_>,
    ) -> Result<Option<Node>> {
        let kind = match d_type {
            Some(Type::Directory) => return self.subdir(parent, name, path),
            Some(Type::File) => libc::S_IFREG,
            Some(Type::Symlink) => libc::S_IFLNK,
            Some(Type::CharacterDevice) => libc::S_IFCHR,
            Some(Type::BlockDevice) => libc::S_IFBLK,
            Some(Type::Fifo) => libc::S_IFIFO,
            Some(Type::Socket) => libc::S_IFSOCK,
            None => return self.entry(parent, name, path),
        };
        let Some(t) = table.get(d_ino).filter(|t| t.mode & libc::S_IFMT == kind) else {
            // Made or replaced after the table was read.
            return self.entry(parent, name, path);
        };
        // Not a directory, so an inode of the directory's own subvolume.
        let st = Stat {
            mode: t.mode,
            uid: t.uid,
            gid: t.gid,
            ino: d_ino,
            nlink: t.nlink,
            dev: parent.stat.dev,
            mnt_id: parent.stat.mnt_id,
        };
        // Xattrs are shifted in place, so never twice (see the module doc).
        if (st.nlink >= 2 || t.xattrs != 0) && !self.first_link(&st) {
            return Ok(None);
        }
        self.tick();
        self.from_table.fetch_add(1, Ordering::Relaxed);
        self.shift(parent.fd.as_fd(), Some(name), &st, path, Some(t.xattrs))?;
        Ok(None)
    }

    /// On the table way, the subdirectory `name` of `parent`: opened without crossing a mount
    /// or following a symlink, stat'ed and remapped through its own fd; a nested subvolume
    /// (another device) only with `cross_subvolumes`, and then with a table of its own.
    fn subdir(&self, parent: &Node, name: &CStr, path: &Shown<'_>) -> Result<Option<Node>> {
        let how = subdir_how();
        let fd = match openat2(parent.fd.as_fd(), name, how) {
            Ok(fd) => fd,
            // A mount point: never touched.
            Err(Errno::EXDEV) => return Ok(None),
            // No longer a directory: the statx way decides.
            Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => return self.entry(parent, name, path),
            Err(e) => return Err(Error::sys(e, "openat2", path.get())),
        };
        let st = Stat::from(
            &statx_at(fd.as_fd(), None).map_err(|e| Error::sys(e, "statx", path.get()))?,
        );
        let table = if st.dev == parent.stat.dev {
            parent.table.clone()
        } else {
            // Another subvolume (openat2 stayed on this mount, so on this filesystem).
            if !(self.opts.cross_subvolumes && st.ino == crate::ioctl::FIRST_FREE_OBJECTID) {
                return Ok(None);
            }
            // Committed at the start of the walk; without a table, the statx way.
            InodeTable::read_committed(fd.as_fd(), self.opts.control, path.get())
                .ok()
                .flatten()
                .map(Arc::new)
        };
        self.tick();
        let own = Shown::new(path.get(), None);
        // Its owner from statx of what was opened; which xattrs it has, from the table when it
        // holds this very inode (the same subvolume), else listed.
        let xattrs = table
            .as_deref()
            .filter(|_| st.dev == parent.stat.dev)
            .and_then(|t| t.get(st.ino))
            .filter(|t| t.mode & libc::S_IFMT == libc::S_IFDIR)
            .map(|t| t.xattrs);
        self.shift(fd.as_fd(), None, &st, &own, xattrs)?;
        Ok(Some(Node {
            fd,
            stat: st,
            path: path.get().to_path_buf(),
            table,
        }))
    }

    /// Whether this is the first sight of the multiply-linked inode `st`.
    fn first_link(&self, st: &Stat) -> bool {
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((u64::from(st.dev.0) << 32 | u64::from(st.dev.1), st.ino))
    }

    fn same_fs(&self, dir: BorrowedFd<'_>, name: &CStr) -> bool {
        let how = subdir_how();
        let Ok(child) = openat2(dir, name, how) else {
            return false;
        };
        let p = Path::new("");
        matches!((crate::open::fsid(dir, p), crate::open::fsid(child.as_fd(), p)), (Ok(a), Ok(b)) if a == b)
    }

    /// Shift the owner of `name` in `dir` (or of `dir` itself) and the ids in its ACLs and
    /// capability, putting back what chown clears. An entry costs statx (done by the caller),
    /// llistxattr and fchownat, or fchownat alone on the table way; only the rare
    /// setuid/setgid file pins its inode for the chmod.
    /// `xattrs`: which id-carrying xattrs the inode has, when the inode table says so (no
    /// llistxattr then); None to list them.
    fn shift(
        &self,
        dir: BorrowedFd<'_>,
        name: Option<&CStr>,
        st: &Stat,
        shown: &Shown<'_>,
        xattrs: Option<u8>,
    ) -> Result<()> {
        let o = self.opts;
        let ids = shift_id_or(o.from_uids, o.to_uids, st.uid)
            .and_then(|u| Ok((u, shift_id_or(o.from_gids, o.to_gids, st.gid)?)));
        let (uid, gid) = ids.map_err(|e| Error {
            path: Some(shown.get().to_path_buf()),
            ..e
        })?;
        let owner_changes = (uid, gid) != (st.uid, st.gid);
        let no_xattrs = st.kind() == libc::S_IFLNK || xattrs == Some(0);
        let special = st.kind() != libc::S_IFDIR
            && st.kind() != libc::S_IFLNK
            && st.mode & (libc::S_ISUID | libc::S_ISGID) != 0;
        if no_xattrs && !special {
            // The common case on the table way: one fchownat, no path, no allocation.
            if owner_changes {
                self.chown(dir, name, uid, gid, shown)?;
            }
            return Ok(());
        }
        let path = shown.get();
        // The xattrs: through the directory for an entry (l*xattr never follow the final
        // name, a symlink swapped in included); through its own fd for the walk's root.
        let proc = xattr::proc_path(dir, name);
        let at = if name.is_some() {
            xattr::At::Entry(&proc)
        } else {
            xattr::At::Inode(&proc)
        };
        let saved = if no_xattrs {
            Vec::new()
        } else {
            self.shifted_xattrs(at, path, xattrs)?
        };
        if !owner_changes && saved.iter().all(|x| !x.2) {
            return Ok(());
        }
        if owner_changes {
            self.chown(dir, name, uid, gid, shown)?;
            if special {
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

    /// lchown of `name` in `dir`, or fchown of `dir` itself.
    fn chown(
        &self,
        dir: BorrowedFd<'_>,
        name: Option<&CStr>,
        uid: u32,
        gid: u32,
        shown: &Shown<'_>,
    ) -> Result<()> {
        let (u, g) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        match name {
            Some(n) => fchownat(dir, n, u, g, AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| Error::sys(e, "fchownat", shown.get()))?,
            None => {
                nix::unistd::fchown(dir, u, g).map_err(|e| Error::sys(e, "fchown", shown.get()))?
            }
        }
        self.changed.fetch_add(1, Ordering::Relaxed);
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
            return Err(Error::refused(
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
    /// the shift changed them. `known`: which of them the inode has ([`inodes::CAPABILITY`]...),
    /// None to list its xattrs.
    fn shifted_xattrs(
        &self,
        at: xattr::At<'_>,
        path: &Path,
        known: Option<u8>,
    ) -> Result<Vec<(&'static CStr, Vec<u8>, bool)>> {
        let names = match known {
            Some(_) => Vec::new(),
            None => xattr::list(at, path)?,
        };
        let mut out = Vec::new();
        for (key, flag) in [
            (c"security.capability", inodes::CAPABILITY),
            (c"system.posix_acl_access", inodes::ACL_ACCESS),
            (c"system.posix_acl_default", inodes::ACL_DEFAULT),
        ] {
            let has = match known {
                Some(flags) => flags & flag != 0,
                None => names.iter().any(|n| n.as_slice() == key.to_bytes()),
            };
            if !has {
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
