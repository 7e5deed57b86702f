//! Per-subvolume size limits through btrfs qgroups (QUOTA_CTL, QGROUP_LIMIT, QGROUP_CREATE).

use crate::error::{Context, Error, Result};
use crate::ioctl;
use crate::search;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

/// The body of the first item of the quota tree with `item_type` and `offset` in range;
/// None when there is none, or no quota tree at all.
fn quota_item(
    fd: BorrowedFd<'_>,
    item_type: u32,
    offsets: (u64, u64),
    shown: &Path,
) -> Result<Option<Vec<u8>>> {
    let key = ioctl::SearchKey {
        tree_id: ioctl::QUOTA_TREE_OBJECTID,
        min_type: item_type,
        max_type: item_type,
        min_offset: offsets.0,
        max_offset: offsets.1,
        max_transid: u64::MAX,
        ..Default::default()
    };
    let mut found = None;
    match search::search(fd, key, 1, shown, |_, body| found = Some(body.to_vec())) {
        // No quota tree: quotas were never enabled, or were disabled.
        Err(e) if e.is(Errno::ENOENT) => Ok(None),
        r => r.map(|_| found),
    }
}

fn le64(body: &[u8], at: usize) -> u64 {
    body.get(at..at + 8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// Whether quotas are enabled on the filesystem holding `fd` (the quota tree's status item).
pub fn enabled(fd: BorrowedFd<'_>, shown: &Path) -> Result<bool> {
    // btrfs_qgroup_status_item: version, generation, flags, rescan (all __le64).
    let item = quota_item(fd, ioctl::QGROUP_STATUS_KEY, (0, u64::MAX), shown)?;
    Ok(item.is_some_and(|b| le64(&b, 16) & ioctl::QGROUP_STATUS_FLAG_ON != 0))
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
    // btrfs_qgroup_limit_item: flags, max_rfer, max_excl, rsv_rfer, rsv_excl (all __le64).
    let item = quota_item(fd, ioctl::QGROUP_LIMIT_KEY, (subvol_id, subvol_id), shown)?;
    Ok(item
        .filter(|b| le64(b, 0) & ioctl::QGROUP_LIMIT_MAX_RFER != 0)
        .map(|b| le64(&b, 8)))
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
