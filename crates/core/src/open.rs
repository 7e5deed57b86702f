//! Opening directories as fds, confined where it matters, and telling what they are on btrfs.

use crate::error::{Context, Error, Result};
use crate::ioctl;
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};
use nix::sys::statfs::fstatfs;
use nix::NixPath;
use std::ffi::{CStr, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC);

/// Open a caller-given directory path (symlinks in it are the caller's to choose).
pub fn open_dir(path: &Path) -> Result<OwnedFd> {
    openat(nix::fcntl::AT_FDCWD, path, DIR_FLAGS, Mode::empty()).at("open", path)
}

/// Open `name` in `dir` as a directory without following a symlink in its place.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr, shown: &Path) -> Result<OwnedFd> {
    openat(dir, name, DIR_FLAGS | OFlag::O_NOFOLLOW, Mode::empty()).at("openat", shown)
}

/// Open `rel` strictly beneath `dir`: no `..` escape, no symlink, no mount crossing.
/// Falls back to a component-by-component O_NOFOLLOW walk on kernels without openat2.
pub fn open_beneath(dir: BorrowedFd<'_>, rel: &Path, shown: &Path) -> Result<OwnedFd> {
    let how = OpenHow::new().flags(DIR_FLAGS | OFlag::O_NOFOLLOW).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS
            | ResolveFlag::RESOLVE_NO_XDEV,
    );
    let target = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let noatime = how.flags(DIR_FLAGS | OFlag::O_NOFOLLOW | OFlag::O_NOATIME);
    match openat2(dir, target, noatime) {
        // Not the owner: open it without O_NOATIME (see openat_noatime).
        Err(Errno::EPERM) => match openat2(dir, target, how) {
            Err(Errno::ENOSYS) => open_walk(dir, rel, shown),
            r => r.at("openat2", shown),
        },
        Err(Errno::ENOSYS) => open_walk(dir, rel, shown),
        r => r.at("openat2", shown),
    }
}

fn open_walk(dir: BorrowedFd<'_>, rel: &Path, shown: &Path) -> Result<OwnedFd> {
    let mut cur = nix::unistd::dup(dir).at("dup", shown)?;
    for comp in rel.components() {
        let name = match comp {
            std::path::Component::Normal(n) => n,
            std::path::Component::CurDir => continue,
            _ => {
                return Err(Error::refused(
                    Errno::EXDEV,
                    "openat",
                    shown,
                    "path leaves its root",
                ))
            }
        };
        // Callers re-check fsid and subvolume id of the result, which catches a mount on the way.
        cur = open_dir_at(cur.as_fd(), name, shown)?;
    }
    Ok(cur)
}

/// Fail with ERR_NOT_BTRFS unless `fd` is on btrfs.
pub fn require_btrfs(fd: BorrowedFd<'_>, shown: &Path) -> Result<()> {
    let st = fstatfs(fd).at("fstatfs", shown)?;
    if st.filesystem_type().0 as i64 != ioctl::BTRFS_SUPER_MAGIC {
        return Err(Error::not_btrfs("fstatfs", shown));
    }
    Ok(())
}

/// Whether `st` is the root directory of a subvolume.
pub fn is_subvolume_root(st: &FileStat) -> bool {
    (st.st_mode & libc::S_IFMT) == libc::S_IFDIR && st.st_ino == ioctl::FIRST_FREE_OBJECTID
}

/// Require that `fd` is the root directory of a subvolume, else EINVAL.
pub fn require_subvolume(fd: BorrowedFd<'_>, shown: &Path) -> Result<()> {
    let st = fstat(fd).at("fstat", shown)?;
    if !is_subvolume_root(&st) {
        return Err(Error::refused(
            Errno::EINVAL,
            "fstat",
            shown,
            "not a btrfs subvolume",
        ));
    }
    Ok(())
}

/// The id of the subvolume that holds `fd` (INO_LOOKUP of the root inode, unprivileged).
pub fn subvolume_id(fd: BorrowedFd<'_>, shown: &Path) -> Result<u64> {
    let mut args = ioctl::InoLookupArgs {
        objectid: ioctl::FIRST_FREE_OBJECTID,
        ..Default::default()
    };
    // SAFETY: args is a zeroed, correctly sized btrfs_ioctl_ino_lookup_args.
    unsafe { ioctl::ino_lookup(fd.as_raw_fd(), &mut args) }.at("BTRFS_IOC_INO_LOOKUP", shown)?;
    Ok(args.treeid)
}

/// The filesystem UUID of the btrfs that holds `fd`.
pub fn fsid(fd: BorrowedFd<'_>, shown: &Path) -> Result<[u8; 16]> {
    let mut args = ioctl::FsInfoArgs::default();
    // SAFETY: args is a zeroed, correctly sized btrfs_ioctl_fs_info_args.
    unsafe { ioctl::fs_info(fd.as_raw_fd(), &mut args) }.at("BTRFS_IOC_FS_INFO", shown)?;
    Ok(args.fsid)
}

/// How [`renameat2`] renames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rename {
    /// Fail with EEXIST when the new name is taken.
    NoReplace,
    /// Swap the two names atomically; both must exist.
    Exchange,
}

/// renameat2(2) as a raw system call: glibc has a wrapper only since 2.28 and nix offers it
/// only on glibc, and the binaries must load on glibc 2.17 and on musl.
pub fn renameat2(
    old_dir: BorrowedFd<'_>,
    old: &OsStr,
    new_dir: BorrowedFd<'_>,
    new: &OsStr,
    how: Rename,
) -> nix::Result<()> {
    let flags = match how {
        Rename::NoReplace => libc::RENAME_NOREPLACE,
        Rename::Exchange => libc::RENAME_EXCHANGE,
    };
    old.with_nix_path(|old| {
        new.with_nix_path(|new| {
            // SAFETY: both fds are live, both names NUL-terminated for the call.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_renameat2,
                    old_dir.as_raw_fd(),
                    old.as_ptr(),
                    new_dir.as_raw_fd(),
                    new.as_ptr(),
                    flags,
                )
            };
            Errno::result(r).map(drop)
        })
    })??
}

/// The mount id of `fd` (statx STATX_MNT_ID, Linux 5.8); 0 where the kernel cannot tell.
pub fn mount_id(fd: BorrowedFd<'_>, shown: &Path) -> Result<u64> {
    match statx(fd, c"", libc::AT_EMPTY_PATH, libc::STATX_MNT_ID) {
        Ok(stx) if stx.stx_mask & libc::STATX_MNT_ID != 0 => Ok(stx.stx_mnt_id),
        Ok(_) | Err(Errno::ENOSYS) => Ok(0),
        Err(e) => Err(Error::sys(e, "statx", shown)),
    }
}

/// statx of `name` in `dir` (of `dir` itself: `c""` with AT_EMPTY_PATH), made as a raw system
/// call: glibc 2.17 has no statx symbol, and a binary that needs one does not load there.
pub fn statx(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mask: libc::c_uint,
) -> nix::Result<libc::statx> {
    // The kernel writes its whole struct statx, 256 bytes since Linux 4.11.
    const _: () = assert!(std::mem::size_of::<libc::statx>() >= 256);
    // SAFETY: statx is plain data; all-zero is a valid initial value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: dir is a live fd, name is NUL-terminated, stx is a valid out-pointer of the size
    // the kernel writes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_statx,
            dir.as_raw_fd(),
            name.as_ptr(),
            flags,
            mask,
            &mut stx as *mut libc::statx,
        )
    };
    Errno::result(r).map(|_| stx)
}

/// What a directory entry is, to the store: see [`entry_kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Absent,
    /// The root directory of a subvolume, with nothing mounted on it.
    SubvolumeRoot,
    /// A mount point: what the name held is hidden under another filesystem or a bind mount.
    MountPoint,
    /// Anything else: a plain directory, a file, a symlink.
    Other,
}

/// What entry `name` of `dir` is, without following a symlink: one statx, which tells a mount
/// on the name (STATX_ATTR_MOUNT_ROOT, Linux 5.8) along with the type and inode. Where statx
/// is refused (a seccomp filter) or too old to tell, an fstatat, which sees no mount.
pub fn entry_kind(dir: BorrowedFd<'_>, name: &OsStr, shown: &Path) -> Result<EntryKind> {
    let kind = |mode: u32, ino: u64| {
        if mode & libc::S_IFMT == libc::S_IFDIR && ino == ioctl::FIRST_FREE_OBJECTID {
            EntryKind::SubvolumeRoot
        } else {
            EntryKind::Other
        }
    };
    use std::sync::atomic::{AtomicBool, Ordering};
    static NO_STATX: AtomicBool = AtomicBool::new(false);
    let flags = libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT;
    let got = if NO_STATX.load(Ordering::Relaxed) {
        Err(Errno::ENOSYS)
    } else {
        nix::NixPath::with_nix_path(name, |c| {
            statx(dir, c, flags, libc::STATX_TYPE | libc::STATX_INO)
        })
        .at("statx", shown)?
    };
    match got {
        Ok(stx) if stx.stx_attributes & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0 => {
            Ok(EntryKind::MountPoint)
        }
        Ok(stx) => Ok(kind(u32::from(stx.stx_mode), stx.stx_ino)),
        Err(Errno::ENOENT) => Ok(EntryKind::Absent),
        Err(Errno::ENOSYS) | Err(Errno::EPERM) => {
            NO_STATX.store(true, Ordering::Relaxed);
            match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => Ok(kind(st.st_mode, st.st_ino)),
                Err(Errno::ENOENT) => Ok(EntryKind::Absent),
                Err(e) => Err(Error::sys(e, "fstatat", shown)),
            }
        }
        Err(e) => Err(Error::sys(e, "statx", shown)),
    }
}

/// openat with O_NOATIME added, and without it where the kernel refuses it (EPERM: neither the
/// owner nor CAP_FOWNER). Reading a layer must not dirty it: an atime update is a change that
/// btrfs send would then have to walk.
pub fn openat_noatime<P: ?Sized + nix::NixPath>(
    dir: BorrowedFd<'_>,
    name: &P,
    flags: OFlag,
) -> nix::Result<OwnedFd> {
    match openat(dir, name, flags | OFlag::O_NOATIME, Mode::empty()) {
        Err(Errno::EPERM) => openat(dir, name, flags, Mode::empty()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renameat2_refuses_a_taken_name_and_exchanges_two() {
        let dir = std::env::temp_dir().join(format!("btrfs-layers-rename-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a"), "a").unwrap();
        std::fs::write(dir.join("b"), "b").unwrap();
        let fd = open_dir(&dir).unwrap();
        let (a, b, c) = (OsStr::new("a"), OsStr::new("b"), OsStr::new("c"));
        let d = fd.as_fd();
        assert_eq!(renameat2(d, a, d, b, Rename::NoReplace), Err(Errno::EEXIST));
        renameat2(d, a, d, b, Rename::Exchange).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "b");
        assert_eq!(std::fs::read_to_string(dir.join("b")).unwrap(), "a");
        renameat2(d, a, d, c, Rename::NoReplace).unwrap();
        assert!(!dir.join("a").exists());
        assert_eq!(renameat2(d, a, d, c, Rename::Exchange), Err(Errno::ENOENT));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
