//! One directory entry as the comparison sees it: its statx (never following a symlink),
//! whether it is a boundary the comparison does not cross, and its file capability.

use crate::error::{Context, Result};
use crate::idmap::IdMapping;
use crate::ioctl::{BTRFS_SUPER_MAGIC, FIRST_FREE_OBJECTID};
use nix::errno::Errno;
use nix::sys::statfs::fstatfs;
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

/// Inode number of the placeholder directory a snapshot holds where the source had a nested
/// subvolume (`BTRFS_EMPTY_SUBVOL_DIR_OBJECTID`).
const EMPTY_SUBVOL_DIR_OBJECTID: u64 = 2;
const STATX_MASK: u32 = libc::STATX_BASIC_STATS | libc::STATX_BTIME | libc::STATX_MNT_ID;

/// What an entry must share with its tree's root to be inside the tree, not across a
/// boundary (a nested subvolume, its placeholder, another filesystem or a bind mount).
#[derive(Clone, Debug)]
pub(super) struct TreeRoot {
    dev: (u32, u32),
    mnt_id: u64,
    btrfs: bool,
    /// Owners are compared as container ids through these (uid, gid) maps, when given.
    ids: Option<Arc<(IdMapping, IdMapping)>>,
}

impl TreeRoot {
    pub fn of(
        fd: BorrowedFd<'_>,
        shown: &Path,
        ids: Option<Arc<(IdMapping, IdMapping)>>,
    ) -> Result<(TreeRoot, Entry)> {
        let stx = statx(fd, c"", libc::AT_EMPTY_PATH).at("statx", shown)?;
        let btrfs =
            fstatfs(fd).at("fstatfs", shown)?.filesystem_type().0 as i64 == BTRFS_SUPER_MAGIC;
        let root = TreeRoot {
            dev: (stx.stx_dev_major, stx.stx_dev_minor),
            mnt_id: mnt_id(&stx),
            btrfs,
            ids,
        };
        let mut entry = Entry::from(&stx);
        entry.boundary = false;
        root.view_owner(&mut entry);
        Ok((root, entry))
    }

    /// Express the entry's owner in container ids; an id outside the maps stays apart from
    /// every container id (bit 32 set), so it never compares equal to a mapped one.
    fn view_owner(&self, e: &mut Entry) {
        if let Some(ids) = &self.ids {
            let view = |map: &IdMapping, raw: u64| {
                map.to_container(raw as u32)
                    .map_or(raw | 1 << 32, u64::from)
            };
            e.uid = view(&ids.0, e.uid);
            e.gid = view(&ids.1, e.gid);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub mode: u32,
    /// Host id, or container id when the tree is compared through id maps.
    pub uid: u64,
    pub gid: u64,
    pub rdev: (u32, u32),
    pub size: u64,
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    /// Birth time, where the filesystem keeps one (btrfs does).
    pub btime: Option<(i64, u32)>,
    pub ino: u64,
    pub nlink: u32,
    /// A nested subvolume, its placeholder or a mount point: compared, never descended into.
    pub boundary: bool,
}

impl Entry {
    fn from(stx: &libc::statx) -> Entry {
        Entry {
            mode: u32::from(stx.stx_mode),
            uid: u64::from(stx.stx_uid),
            gid: u64::from(stx.stx_gid),
            rdev: (stx.stx_rdev_major, stx.stx_rdev_minor),
            size: stx.stx_size,
            mtime: (stx.stx_mtime.tv_sec, stx.stx_mtime.tv_nsec),
            ctime: (stx.stx_ctime.tv_sec, stx.stx_ctime.tv_nsec),
            btime: (stx.stx_mask & libc::STATX_BTIME != 0)
                .then_some((stx.stx_btime.tv_sec, stx.stx_btime.tv_nsec)),
            ino: stx.stx_ino,
            nlink: stx.stx_nlink,
            boundary: false,
        }
    }

    pub fn file_type(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    pub fn is_dir(&self) -> bool {
        self.file_type() == libc::S_IFDIR
    }

    /// Whether the comparison goes below this entry.
    pub fn descends(&self) -> bool {
        self.is_dir() && !self.boundary
    }

    /// A non-directory with other names elsewhere in the tree.
    pub fn is_linked(&self) -> bool {
        !self.is_dir() && !self.boundary && self.nlink > 1
    }
}

/// The entry `name` of directory `dir`, or None when there is none.
pub(super) fn lookup(
    dir: BorrowedFd<'_>,
    name: &CStr,
    root: &TreeRoot,
) -> std::result::Result<Option<Entry>, Errno> {
    let stx = match statx(dir, name, libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT) {
        Ok(stx) => stx,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut e = Entry::from(&stx);
    root.view_owner(&mut e);
    let id = mnt_id(&stx);
    e.boundary = (stx.stx_dev_major, stx.stx_dev_minor) != root.dev
        || (id != 0 && root.mnt_id != 0 && id != root.mnt_id)
        || (root.btrfs
            && e.is_dir()
            && (e.ino == FIRST_FREE_OBJECTID || e.ino == EMPTY_SUBVOL_DIR_OBJECTID));
    Ok(Some(e))
}

/// Whether two entries are the same inode item, unchanged: a snapshot keeps inode items as
/// they are, and every change of one (xattrs included) moves its ctime. Spares reading the
/// capability of the many entries a layer shares with its parent. Only ctimes before
/// `shared_before` (when the later of the two trees was made) count: after it, both trees may
/// have changed the inode within one tick of the clock, leaving the same ctime on both.
fn same_inode_item(old: &Entry, new: &Entry, shared_before: Option<(i64, u32)>) -> bool {
    old.ino == new.ino
        && old.ctime == new.ctime
        && old.btime.is_some()
        && old.btime == new.btime
        && shared_before.is_some_and(|t| old.ctime < t)
}

/// Whether the capabilities of two entries need reading to tell whether they differ.
pub(super) fn capability_may_differ(
    old: &Entry,
    new: &Entry,
    shared_before: Option<(i64, u32)>,
) -> bool {
    let both_boundaries = old.boundary && new.boundary;
    !both_boundaries && !same_inode_item(old, new, shared_before)
}

/// Whether two entries at the same path differ by the attributes the comparison looks at
/// (the capability aside, which needs its own read).
pub(super) fn attributes_differ(old: &Entry, new: &Entry) -> bool {
    if old.file_type() != new.file_type() {
        return true;
    }
    if old.boundary && new.boundary {
        return false;
    }
    old.mode & 0o7777 != new.mode & 0o7777
        || old.uid != new.uid
        || old.gid != new.gid
        || old.rdev != new.rdev
        || (!new.is_dir() && (old.size != new.size || old.mtime != new.mtime))
}

fn mnt_id(stx: &libc::statx) -> u64 {
    if stx.stx_mask & libc::STATX_MNT_ID != 0 {
        stx.stx_mnt_id
    } else {
        0
    }
}

fn statx(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> std::result::Result<libc::statx, Errno> {
    crate::open::statx(dir, name, flags, STATX_MASK)
}

const CAPABILITY: &CStr = c"security.capability";

/// The `security.capability` xattr of entry `name` of `dir`, without following a symlink.
pub(super) fn capability(
    dir: BorrowedFd<'_>,
    name: &CStr,
) -> std::result::Result<Option<Vec<u8>>, Errno> {
    // A vfs_ns_cap_data is 24 bytes; room to spare before asking for the size.
    let mut buf = [0u8; 64];
    match get_xattr(dir, name, CAPABILITY, &mut buf) {
        Ok(n) => Ok(Some(buf[..n].to_vec())),
        Err(Errno::ENODATA) | Err(Errno::EOPNOTSUPP) => Ok(None),
        Err(Errno::ERANGE) => {
            let n = get_xattr(dir, name, CAPABILITY, &mut [])?;
            let mut big = vec![0u8; n];
            let n = get_xattr(dir, name, CAPABILITY, &mut big)?;
            big.truncate(n);
            Ok(Some(big))
        }
        Err(e) => Err(e),
    }
}

fn get_xattr(
    dir: BorrowedFd<'_>,
    name: &CStr,
    attr: &CStr,
    buf: &mut [u8],
) -> std::result::Result<usize, Errno> {
    use std::sync::atomic::{AtomicBool, Ordering};
    // getxattrat (Linux 6.13) reads fd-relatively; older kernels and seccomp filters refuse it.
    static NO_GETXATTRAT: AtomicBool = AtomicBool::new(false);
    if !NO_GETXATTRAT.load(Ordering::Relaxed) {
        match getxattrat(dir, name, attr, buf) {
            Err(Errno::ENOSYS) | Err(Errno::EPERM) => NO_GETXATTRAT.store(true, Ordering::Relaxed),
            r => return r,
        }
    }
    proc_lgetxattr(dir, name, attr, buf)
}

fn getxattrat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    attr: &CStr,
    buf: &mut [u8],
) -> std::result::Result<usize, Errno> {
    /// `__NR_getxattrat`, the same number on every architecture with the unified syscall table.
    const SYS_GETXATTRAT: libc::c_long = 464;
    let unified_table = cfg!(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64",
        target_arch = "x86",
        target_arch = "arm",
        target_arch = "powerpc64",
        target_arch = "s390x",
        target_arch = "loongarch64"
    ));
    if !unified_table {
        return Err(Errno::ENOSYS);
    }
    /// `struct xattr_args`.
    #[repr(C)]
    struct XattrArgs {
        value: u64,
        size: u32,
        flags: u32,
    }
    let args = XattrArgs {
        value: buf.as_mut_ptr() as u64,
        size: buf.len() as u32,
        flags: 0,
    };
    // SAFETY: dir is a live fd, both strings are NUL-terminated, args points at buf and its length.
    let r = unsafe {
        libc::syscall(
            SYS_GETXATTRAT,
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
            attr.as_ptr(),
            &args as *const XattrArgs,
            std::mem::size_of::<XattrArgs>(),
        )
    };
    Errno::result(r).map(|n| n as usize)
}

/// lgetxattr through the fd's /proc link: fd-relative on kernels without getxattrat.
pub(super) fn proc_lgetxattr(
    dir: BorrowedFd<'_>,
    name: &CStr,
    attr: &CStr,
    buf: &mut [u8],
) -> std::result::Result<usize, Errno> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name.to_bytes());
    let path = CString::new(path).map_err(|_| Errno::EINVAL)?;
    // SAFETY: both strings are NUL-terminated; buf is valid for buf.len() bytes (null when empty is fine).
    let r = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            attr.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    Errno::result(r).map(|n| n as usize)
}

/// `name` as a C string (names from readdir or the kernel never hold a NUL).
pub(super) fn c_name(name: &[u8]) -> Option<CString> {
    CString::new(name).ok()
}

/// `prefix/name` for a report.
pub(super) fn join(prefix: &Path, name: &CStr) -> std::path::PathBuf {
    prefix.join(std::ffi::OsStr::from_bytes(name.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn capability_reads_agree_through_both_routes() {
        let dir = std::env::temp_dir().join(format!("changes-entry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), b"x").unwrap();
        let fd = std::fs::File::open(&dir).unwrap();
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        let via_at = get_xattr(fd.as_fd(), c"f", CAPABILITY, &mut a);
        let via_proc = proc_lgetxattr(fd.as_fd(), c"f", CAPABILITY, &mut b);
        assert_eq!(via_at, via_proc);
        assert_eq!(capability(fd.as_fd(), c"f"), Ok(None));
        assert_eq!(capability(fd.as_fd(), c"missing"), Err(Errno::ENOENT));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
