//! Per-subvolume size limits through btrfs qgroups (QUOTA_CTL, QGROUP_LIMIT, QGROUP_CREATE).

use crate::error::{Context, Error, Result};
use crate::ioctl;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

/// Whether quotas are enabled on the filesystem holding `fd` (the quota tree's status item).
pub fn enabled(fd: BorrowedFd<'_>, shown: &Path) -> Result<bool> {
    let hdr = std::mem::size_of::<ioctl::SearchArgsV2>();
    let mut storage = vec![0u64; (hdr + 4096) / 8];
    let args = storage.as_mut_ptr() as *mut ioctl::SearchArgsV2;
    // SAFETY: storage is 8-byte aligned and holds the args header plus 4096 bytes.
    let r = unsafe {
        (*args).key = ioctl::SearchKey {
            tree_id: ioctl::QUOTA_TREE_OBJECTID,
            min_type: ioctl::QGROUP_STATUS_KEY,
            max_type: ioctl::QGROUP_STATUS_KEY,
            max_offset: u64::MAX,
            max_transid: u64::MAX,
            nr_items: 1,
            ..Default::default()
        };
        (*args).buf_size = 4096;
        ioctl::tree_search_v2(fd.as_raw_fd(), args)
    };
    match r {
        // No quota tree: quotas were never enabled, or were disabled.
        Err(Errno::ENOENT) => return Ok(false),
        r => r.at("BTRFS_IOC_TREE_SEARCH_V2", shown)?,
    };
    // SAFETY: the kernel filled nr_items and, when 1, a header and the status item after it.
    let (nr, bytes) = unsafe {
        (
            (*args).key.nr_items,
            std::slice::from_raw_parts(storage.as_ptr() as *const u8, storage.len() * 8),
        )
    };
    if nr == 0 {
        return Ok(false);
    }
    let body = &bytes[hdr + std::mem::size_of::<ioctl::SearchHeader>()..];
    // btrfs_qgroup_status_item: version, generation, flags, rescan (all __le64).
    let flags = u64::from_le_bytes(body[16..24].try_into().unwrap());
    Ok(flags & ioctl::QGROUP_STATUS_FLAG_ON != 0)
}

/// Enable quotas on the filesystem holding `fd`; a no-op when already on.
pub fn enable(fd: BorrowedFd<'_>, shown: &Path) -> Result<()> {
    if enabled(fd, shown)? {
        return Ok(());
    }
    let mut args = ioctl::QuotaCtlArgs {
        cmd: ioctl::QUOTA_CTL_ENABLE,
        status: 0,
    };
    // SAFETY: args is a valid btrfs_ioctl_quota_ctl_args.
    unsafe { ioctl::quota_ctl(fd.as_raw_fd(), &mut args) }.at("BTRFS_IOC_QUOTA_CTL", shown)?;
    Ok(())
}

/// Limit the referenced bytes of the subvolume whose root is `fd` (0/its id) to `bytes`.
pub fn limit(fd: BorrowedFd<'_>, bytes: u64, shown: &Path) -> Result<()> {
    let mut args = ioctl::QgroupLimitArgs {
        // 0 means the qgroup of the subvolume holding fd.
        qgroupid: 0,
        lim: ioctl::QgroupLimit {
            flags: ioctl::QGROUP_LIMIT_MAX_RFER,
            max_rfer: bytes,
            ..Default::default()
        },
    };
    // SAFETY: args is a valid btrfs_ioctl_qgroup_limit_args.
    unsafe { ioctl::qgroup_limit(fd.as_raw_fd(), &mut args) }
        .at("BTRFS_IOC_QGROUP_LIMIT", shown)?;
    Ok(())
}

/// The referenced-bytes limit of qgroup 0/`subvol_id`, if one is set.
pub fn limit_of(fd: BorrowedFd<'_>, subvol_id: u64, shown: &Path) -> Result<Option<u64>> {
    let hdr = std::mem::size_of::<ioctl::SearchArgsV2>();
    let mut storage = vec![0u64; (hdr + 4096) / 8];
    let args = storage.as_mut_ptr() as *mut ioctl::SearchArgsV2;
    // SAFETY: storage is 8-byte aligned and holds the args header plus 4096 bytes.
    let r = unsafe {
        (*args).key = ioctl::SearchKey {
            tree_id: ioctl::QUOTA_TREE_OBJECTID,
            min_type: ioctl::QGROUP_LIMIT_KEY,
            max_type: ioctl::QGROUP_LIMIT_KEY,
            min_offset: subvol_id,
            max_offset: subvol_id,
            max_transid: u64::MAX,
            nr_items: 1,
            ..Default::default()
        };
        (*args).buf_size = 4096;
        ioctl::tree_search_v2(fd.as_raw_fd(), args)
    };
    match r {
        Err(Errno::ENOENT) => return Ok(None),
        r => r.at("BTRFS_IOC_TREE_SEARCH_V2", shown)?,
    };
    // SAFETY: as in `enabled`.
    let (nr, bytes) = unsafe {
        (
            (*args).key.nr_items,
            std::slice::from_raw_parts(storage.as_ptr() as *const u8, storage.len() * 8),
        )
    };
    if nr == 0 {
        return Ok(None);
    }
    let body = &bytes[hdr + std::mem::size_of::<ioctl::SearchHeader>()..];
    // btrfs_qgroup_limit_item: flags, max_rfer, max_excl, rsv_rfer, rsv_excl (all __le64).
    let flags = u64::from_le_bytes(body[0..8].try_into().unwrap());
    let max_rfer = u64::from_le_bytes(body[8..16].try_into().unwrap());
    Ok((flags & ioctl::QGROUP_LIMIT_MAX_RFER != 0).then_some(max_rfer))
}

/// Destroy qgroup 0/`subvol_id` of a deleted subvolume. Ok(false) while the kernel still
/// holds it (the cleaner has not dropped the subvolume yet); ENOENT counts as done.
pub fn destroy(fd: BorrowedFd<'_>, subvol_id: u64, shown: &Path) -> Result<bool> {
    let args = ioctl::QgroupCreateArgs {
        create: 0,
        qgroupid: subvol_id,
    };
    // SAFETY: args is a valid btrfs_ioctl_qgroup_create_args.
    match unsafe { ioctl::qgroup_create(fd.as_raw_fd(), &args) } {
        Ok(_) | Err(Errno::ENOENT) => Ok(true),
        // EBUSY: the cleaner still holds it; ENOTCONN: quotas are off, nothing to destroy.
        Err(Errno::EBUSY) => Ok(false),
        Err(Errno::ENOTCONN) => Ok(true),
        Err(e) => Err(Error::sys(e, "BTRFS_IOC_QGROUP_CREATE", shown)),
    }
}

/// Wait until the cleaner has fully dropped deleted subvolume `subvol_id` (Linux 6.13+).
/// Ok(false) when the kernel does not have SUBVOL_SYNC_WAIT.
pub fn wait_dropped(fd: BorrowedFd<'_>, subvol_id: u64, shown: &Path) -> Result<bool> {
    let args = ioctl::SubvolWait {
        subvolid: subvol_id,
        mode: ioctl::SUBVOL_SYNC_WAIT_FOR_ONE,
        count: 0,
    };
    // SAFETY: args is a valid btrfs_ioctl_subvol_wait.
    match unsafe { ioctl::subvol_sync_wait(fd.as_raw_fd(), &args) } {
        Ok(_) | Err(Errno::ENOENT) => Ok(true),
        Err(Errno::ENOTTY) | Err(Errno::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(Error::sys(e, "BTRFS_IOC_SUBVOL_SYNC_WAIT", shown)),
    }
}
