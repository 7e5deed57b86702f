//! Subvolume operations, each named after the kernel operation it performs, in a path form
//! (checks the caller's path first) and an fd form (for the driver, which walks by fd).

use crate::error::{Context, Error, Result};
use crate::ioctl::{self, c_bytes, put_name};
use crate::nested::{self, Method};
use crate::open::{self, open_dir, require_btrfs, require_subvolume};
use crate::path::{check, split_parent};
use nix::errno::Errno;
use nix::sys::stat::stat;
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What GET_SUBVOL_INFO tells about a subvolume.
#[derive(Debug, Clone)]
pub struct SubvolumeInfo {
    pub id: u64,
    pub name: String,
    pub parent_id: u64,
    pub dir_id: u64,
    pub generation: u64,
    pub flags: u64,
    pub uuid: [u8; 16],
    pub parent_uuid: [u8; 16],
    pub received_uuid: [u8; 16],
    pub ctransid: u64,
    pub otransid: u64,
    pub stransid: u64,
    pub rtransid: u64,
    pub ctime: ioctl::Timespec,
    pub otime: ioctl::Timespec,
}

impl SubvolumeInfo {
    pub fn read_only(&self) -> bool {
        self.flags & ioctl::ROOT_SUBVOL_RDONLY != 0
    }
}

/// A nested subvolume, with its path relative to the subvolume it was listed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NestedSubvolume {
    pub path: PathBuf,
    pub id: u64,
}

/// Whether `path` is the root of a subvolume. ENOENT when missing, ERR_NOT_BTRFS when not on btrfs.
pub fn is_subvolume(path: &Path) -> Result<bool> {
    check(path, "isSubvolume")?;
    let st = stat(path).at("stat", path)?;
    let fs = nix::sys::statfs::statfs(path).at("statfs", path)?;
    if fs.filesystem_type().0 as i64 != ioctl::BTRFS_SUPER_MAGIC {
        return Err(Error::not_btrfs("statfs", path));
    }
    Ok(open::is_subvolume_root(&st))
}

/// Create an empty subvolume at `path` (SUBVOL_CREATE_V2).
pub fn create(path: &Path) -> Result<()> {
    let (parent, name) = split_parent(path, "createSubvolume")?;
    let dir = open_dir(parent)?;
    require_btrfs(dir.as_fd(), parent)?;
    create_at(dir.as_fd(), name, path)
}

/// Create an empty subvolume `name` in directory `dir`. EEXIST (from the kernel, before it
/// changes anything) when the name is taken.
pub fn create_at(dir: BorrowedFd<'_>, name: &OsStr, shown: &Path) -> Result<()> {
    let mut args = ioctl::VolArgsV2::default();
    put_name(&mut args.name, name.as_bytes());
    // SAFETY: args is a zeroed btrfs_ioctl_vol_args_v2 with a NUL-terminated name.
    unsafe { ioctl::subvol_create_v2(dir.as_raw_fd(), &args) }
        .map_err(|e| exists_or(e, "BTRFS_IOC_SUBVOL_CREATE_V2", shown))?;
    Ok(())
}

/// The kernel's EEXIST for a taken name, said as such; any other errno as it is.
fn exists_or(e: Errno, syscall: &'static str, shown: &Path) -> Error {
    if e == Errno::EEXIST {
        Error::refused(Errno::EEXIST, syscall, shown, "file already exists")
    } else {
        Error::sys(e, syscall, shown)
    }
}

/// Snapshot the subvolume at `source` to `dest` (SNAP_CREATE_V2), read-only if asked.
pub fn snapshot(source: &Path, dest: &Path, read_only: bool) -> Result<()> {
    check(source, "snapshot")?;
    let (parent, name) = split_parent(dest, "snapshot")?;
    let src = open_dir(source)?;
    require_btrfs(src.as_fd(), source)?;
    require_subvolume(src.as_fd(), source)?;
    let dir = open_dir(parent)?;
    require_btrfs(dir.as_fd(), parent)?;
    if open::fsid(src.as_fd(), source)? != open::fsid(dir.as_fd(), parent)? {
        return Err(Error::refused(
            Errno::EXDEV,
            "BTRFS_IOC_SNAP_CREATE_V2",
            dest,
            "source and destination are on different btrfs filesystems",
        ));
    }
    snapshot_at(src.as_fd(), dir.as_fd(), name, read_only, dest)
}

/// Snapshot the subvolume whose root is `source` to `name` in directory `dir`. EEXIST (from
/// the kernel, before it changes anything) when the name is taken.
pub fn snapshot_at(
    source: BorrowedFd<'_>,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    read_only: bool,
    shown: &Path,
) -> Result<()> {
    let mut args = ioctl::VolArgsV2 {
        fd: source.as_raw_fd() as i64,
        flags: if read_only { ioctl::SUBVOL_RDONLY } else { 0 },
        ..Default::default()
    };
    put_name(&mut args.name, name.as_bytes());
    // SAFETY: args is a zeroed btrfs_ioctl_vol_args_v2 with a NUL-terminated name and a live fd.
    unsafe { ioctl::snap_create_v2(dir.as_raw_fd(), &args) }
        .map_err(|e| exists_or(e, "BTRFS_IOC_SNAP_CREATE_V2", shown))?;
    Ok(())
}

/// GET_SUBVOL_INFO of the subvolume whose root is at `path`.
pub fn info(path: &Path) -> Result<SubvolumeInfo> {
    check(path, "subvolumeInfo")?;
    let fd = open_dir(path)?;
    require_btrfs(fd.as_fd(), path)?;
    require_subvolume(fd.as_fd(), path)?;
    info_fd(fd.as_fd(), path)
}

/// GET_SUBVOL_INFO of the subvolume holding `fd`.
pub fn info_fd(fd: BorrowedFd<'_>, shown: &Path) -> Result<SubvolumeInfo> {
    let mut a = ioctl::GetSubvolInfoArgs::default();
    // SAFETY: a is a zeroed, correctly sized btrfs_ioctl_get_subvol_info_args.
    unsafe { ioctl::get_subvol_info(fd.as_raw_fd(), &mut a) }
        .at("BTRFS_IOC_GET_SUBVOL_INFO", shown)?;
    Ok(SubvolumeInfo {
        id: a.treeid,
        name: String::from_utf8_lossy(c_bytes(&a.name)).into_owned(),
        parent_id: a.parent_id,
        dir_id: a.dirid,
        generation: a.generation,
        flags: a.flags,
        uuid: a.uuid,
        parent_uuid: a.parent_uuid,
        received_uuid: a.received_uuid,
        ctransid: a.ctransid,
        otransid: a.otransid,
        stransid: a.stransid,
        rtransid: a.rtransid,
        ctime: a.ctime,
        otime: a.otime,
    })
}

/// Nested subvolumes below the subvolume at `path`, pre-order, paths relative to `path`.
pub fn list(path: &Path) -> Result<Vec<NestedSubvolume>> {
    list_with(path, Method::Auto)
}

/// [`list`] with a chosen enumeration method (tests compare the two).
pub fn list_with(path: &Path, method: Method) -> Result<Vec<NestedSubvolume>> {
    check(path, "listSubvolumes")?;
    let fd = open_dir(path)?;
    require_btrfs(fd.as_fd(), path)?;
    require_subvolume(fd.as_fd(), path)?;
    let id = open::subvolume_id(fd.as_fd(), path)?;
    let fsid = open::fsid(fd.as_fd(), path)?;
    let mut out = Vec::new();
    list_into(fd.as_fd(), id, fsid, Path::new(""), path, method, &mut out)?;
    Ok(out)
}

fn list_into(
    fd: BorrowedFd<'_>,
    id: u64,
    fsid: [u8; 16],
    prefix: &Path,
    root: &Path,
    method: Method,
    out: &mut Vec<NestedSubvolume>,
) -> Result<()> {
    for kid in nested::children(fd, id, &root.join(prefix), method)? {
        let rel = prefix.join(kid.rel_path());
        out.push(NestedSubvolume {
            path: rel.clone(),
            id: kid.id,
        });
        let shown = root.join(&rel);
        let child = open_child(fd, &kid, fsid, &shown)?;
        list_into(child.as_fd(), kid.id, fsid, &rel, root, method, out)?;
    }
    Ok(())
}

/// Open nested subvolume `kid` beneath `parent` and check it is the one the tree named:
/// same filesystem, a subvolume root, the same subvolume id.
pub fn open_child(
    parent: BorrowedFd<'_>,
    kid: &nested::Child,
    fsid: [u8; 16],
    shown: &Path,
) -> Result<std::os::fd::OwnedFd> {
    let fd = open::open_beneath(parent, &kid.rel_path(), shown)?;
    require_btrfs(fd.as_fd(), shown)?;
    require_subvolume(fd.as_fd(), shown)?;
    if open::fsid(fd.as_fd(), shown)? != fsid || open::subvolume_id(fd.as_fd(), shown)? != kid.id {
        return Err(Error::refused(
            Errno::EXDEV,
            "openat2",
            shown,
            "nested subvolume path leads elsewhere (swapped or covered by a mount)",
        ));
    }
    Ok(fd)
}

/// Whether the subvolume at `path` is read-only (SUBVOL_GETFLAGS).
pub fn is_read_only(path: &Path) -> Result<bool> {
    check(path, "isReadOnly")?;
    let fd = open_dir(path)?;
    require_btrfs(fd.as_fd(), path)?;
    require_subvolume(fd.as_fd(), path)?;
    is_read_only_fd(fd.as_fd(), path)
}

pub fn is_read_only_fd(fd: BorrowedFd<'_>, shown: &Path) -> Result<bool> {
    Ok(get_flags(fd, shown)? & ioctl::SUBVOL_RDONLY != 0)
}

fn get_flags(fd: BorrowedFd<'_>, shown: &Path) -> Result<u64> {
    let mut flags = 0u64;
    // SAFETY: flags is a valid u64 out-parameter.
    unsafe { ioctl::subvol_getflags(fd.as_raw_fd(), &mut flags) }
        .at("BTRFS_IOC_SUBVOL_GETFLAGS", shown)?;
    Ok(flags)
}

/// Set or clear the read-only flag of the subvolume at `path` (SUBVOL_SETFLAGS).
pub fn set_read_only(path: &Path, read_only: bool) -> Result<()> {
    check(path, "setReadOnly")?;
    let fd = open_dir(path)?;
    require_btrfs(fd.as_fd(), path)?;
    require_subvolume(fd.as_fd(), path)?;
    set_read_only_fd(fd.as_fd(), read_only, path)
}

pub fn set_read_only_fd(fd: BorrowedFd<'_>, read_only: bool, shown: &Path) -> Result<()> {
    let old = get_flags(fd, shown)?;
    let new = if read_only {
        old | ioctl::SUBVOL_RDONLY
    } else {
        old & !ioctl::SUBVOL_RDONLY
    };
    if new == old {
        return Ok(());
    }
    // SAFETY: new is a valid u64 in-parameter.
    unsafe { ioctl::subvol_setflags(fd.as_raw_fd(), &new) }
        .at("BTRFS_IOC_SUBVOL_SETFLAGS", shown)?;
    Ok(())
}

/// Record on the subvolume whose root is `fd` that it was received from the sender's
/// subvolume `uuid` at its transaction `stransid` (SET_RECEIVED_SUBVOL, CAP_SYS_ADMIN), as
/// `btrfs receive` does before making it read-only. Returns the receiving transaction.
pub fn set_received_fd(
    fd: BorrowedFd<'_>,
    uuid: &[u8; 16],
    stransid: u64,
    shown: &Path,
) -> Result<u64> {
    let mut args = ioctl::ReceivedSubvolArgs {
        uuid: *uuid,
        stransid,
        ..Default::default()
    };
    // SAFETY: args is a zeroed btrfs_ioctl_received_subvol_args with its in-fields set.
    unsafe { ioctl::set_received_subvol(fd.as_raw_fd(), &mut args) }
        .at("BTRFS_IOC_SET_RECEIVED_SUBVOL", shown)?;
    Ok(args.rtransid)
}

/// Format a btrfs UUID the usual 8-4-4-4-12 way.
pub fn uuid_string(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
