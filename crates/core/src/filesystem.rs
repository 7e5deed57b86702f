//! Whole-filesystem facts (FS_INFO, DEV_INFO, SPACE_INFO, label) and sync.

use crate::error::{Context, Result};
use crate::ioctl::{self, c_bytes};
use crate::open::{open_dir, require_btrfs};
use crate::path::check;
use nix::errno::Errno;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

#[derive(Debug, Clone, Default)]
pub struct Space {
    pub total: u64,
    pub used: u64,
}

#[derive(Debug, Clone)]
pub struct Device {
    pub id: u64,
    pub path: String,
    pub uuid: [u8; 16],
    pub total_bytes: u64,
    pub bytes_used: u64,
}

#[derive(Debug, Clone)]
pub struct FilesystemInfo {
    pub fsid: [u8; 16],
    pub label: String,
    pub devices: Vec<Device>,
    pub node_size: u32,
    pub sector_size: u32,
    pub generation: u64,
    pub data: Space,
    pub metadata: Space,
    pub system: Space,
}

/// FS_INFO, the label, DEV_INFO of every device and SPACE_INFO of the filesystem at `path`.
pub fn info(path: &Path) -> Result<FilesystemInfo> {
    check(path, "filesystemInfo")?;
    let fd = open_dir(path)?;
    require_btrfs(fd.as_fd(), path)?;
    let fd = fd.as_fd();
    let mut fi = ioctl::FsInfoArgs {
        flags: ioctl::FS_INFO_FLAG_GENERATION,
        ..Default::default()
    };
    // SAFETY: fi is a zeroed, correctly sized btrfs_ioctl_fs_info_args.
    unsafe { ioctl::fs_info(fd.as_raw_fd(), &mut fi) }.at("BTRFS_IOC_FS_INFO", path)?;
    let mut label = [0u8; ioctl::LABEL_SIZE];
    // SAFETY: label is a LABEL_SIZE byte buffer as FS_IOC_GETFSLABEL expects.
    unsafe { ioctl::get_fslabel(fd.as_raw_fd(), &mut label) }.at("FS_IOC_GETFSLABEL", path)?;
    let mut devices = Vec::new();
    for devid in 1..=fi.max_id {
        let mut d = ioctl::DevInfoArgs {
            devid,
            ..Default::default()
        };
        // SAFETY: d is a zeroed, correctly sized btrfs_ioctl_dev_info_args.
        match unsafe { ioctl::dev_info(fd.as_raw_fd(), &mut d) } {
            Ok(_) => devices.push(Device {
                id: d.devid,
                path: String::from_utf8_lossy(c_bytes(&d.path)).into_owned(),
                uuid: d.uuid,
                total_bytes: d.total_bytes,
                bytes_used: d.bytes_used,
            }),
            // Device ids can have holes after a device was removed.
            Err(Errno::ENODEV) => {}
            Err(e) => return Err(e).at("BTRFS_IOC_DEV_INFO", path),
        }
    }
    let (data, metadata, system) = space(fd, path)?;
    Ok(FilesystemInfo {
        fsid: fi.fsid,
        label: String::from_utf8_lossy(c_bytes(&label)).into_owned(),
        devices,
        node_size: fi.nodesize,
        sector_size: fi.sectorsize,
        generation: fi.generation,
        data,
        metadata,
        system,
    })
}

/// Used and allocated bytes of data, metadata and system block groups (all profiles summed).
fn space(fd: BorrowedFd<'_>, path: &Path) -> Result<(Space, Space, Space)> {
    let mut head = ioctl::SpaceArgs {
        space_slots: 0,
        total_spaces: 0,
    };
    // SAFETY: with space_slots = 0 the kernel only writes total_spaces into the header.
    unsafe { ioctl::space_info(fd.as_raw_fd(), &mut head) }.at("BTRFS_IOC_SPACE_INFO", path)?;
    let n = head.total_spaces as usize;
    let words =
        (std::mem::size_of::<ioctl::SpaceArgs>() + n * std::mem::size_of::<ioctl::SpaceInfo>()) / 8;
    let mut buf = vec![0u64; words];
    let args = buf.as_mut_ptr() as *mut ioctl::SpaceArgs;
    // SAFETY: buf is 8-byte aligned and holds the header plus n SpaceInfo slots.
    unsafe {
        (*args).space_slots = n as u64;
        ioctl::space_info(fd.as_raw_fd(), args)
    }
    .at("BTRFS_IOC_SPACE_INFO", path)?;
    // SAFETY: the kernel filled total_spaces (<= space_slots) entries after the header.
    let infos = unsafe {
        let got = ((*args).total_spaces as usize).min(n);
        std::slice::from_raw_parts(args.add(1) as *const ioctl::SpaceInfo, got)
    };
    let (mut data, mut meta, mut sys) = (Space::default(), Space::default(), Space::default());
    for s in infos {
        if s.flags & ioctl::SPACE_INFO_GLOBAL_RSV != 0 {
            continue;
        }
        for (bit, acc) in [
            (ioctl::BLOCK_GROUP_DATA, &mut data),
            (ioctl::BLOCK_GROUP_METADATA, &mut meta),
            (ioctl::BLOCK_GROUP_SYSTEM, &mut sys),
        ] {
            if s.flags & bit != 0 {
                acc.total += s.total_bytes;
                acc.used += s.used_bytes;
            }
        }
    }
    Ok((data, meta, sys))
}

/// Write back the filesystem's dirty file data (syncfs), then commit the current transaction
/// and wait for it (START_SYNC + WAIT_SYNC), so everything written before the call is on disk.
pub fn sync(path: &Path) -> Result<()> {
    check(path, "sync")?;
    let fd = open_dir(path)?;
    require_btrfs(fd.as_fd(), path)?;
    sync_fd(fd.as_fd(), path)
}

/// [`sync`] of the btrfs that holds `fd`.
pub fn sync_fd(fd: BorrowedFd<'_>, shown: &Path) -> Result<()> {
    nix::unistd::syncfs(fd).at("syncfs", shown)?;
    commit(fd, shown)
}

/// Start writing back the dirty data of the file `fd` (sync_file_range with
/// SYNC_FILE_RANGE_WRITE: it waits for nothing), so a later `syncfs` finds little left to do.
pub fn start_writeback(fd: BorrowedFd<'_>, shown: &Path) -> Result<()> {
    // SAFETY: a plain system call on a borrowed, open fd; no memory is passed.
    let r = unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    Errno::result(r).map(drop).at("sync_file_range", shown)
}

/// Commit the running transaction of the btrfs that holds `fd` and wait for it (START_SYNC +
/// WAIT_SYNC; nothing to do when no transaction runs): afterwards the btrees hold every
/// metadata change made before the call, delayed inode and directory items included. File
/// data still in the page cache stays there (that is what `syncfs` in [`sync`] is for).
pub fn commit(fd: BorrowedFd<'_>, shown: &Path) -> Result<()> {
    let mut transid = 0u64;
    // SAFETY: transid is a valid u64 out-parameter.
    unsafe { ioctl::start_sync(fd.as_raw_fd(), &mut transid) }.at("BTRFS_IOC_START_SYNC", shown)?;
    // SAFETY: transid is a valid u64 in-parameter.
    unsafe { ioctl::wait_sync(fd.as_raw_fd(), &transid) }.at("BTRFS_IOC_WAIT_SYNC", shown)?;
    Ok(())
}
