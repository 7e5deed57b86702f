//! Qgroups of removed layers. The kernel destroys a subvolume's tree in the background, and its
//! qgroup (0/id) can only be destroyed after that; until then its id waits on a list kept in
//! `metadata/.pending-qgroups` (best effort: a lost list only leaves stale qgroups behind).

use super::Driver;
use crate::delete;
use crate::error::Result;
use crate::quota;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

const PENDING: &str = ".pending-qgroups";

impl Driver {
    /// Whether quotas are on: read at init, set when a size limit turns them on.
    pub(super) fn quotas_on(&self) -> bool {
        self.quotas.load(Ordering::Relaxed)
    }

    /// Turn quotas on for a size limit.
    pub(super) fn enable_quotas(&self, fd: BorrowedFd<'_>) -> Result<()> {
        if !self.quotas_on() {
            quota::enable(fd, &self.home)?;
            self.quotas.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Put the qgroup of deleted subvolume `id` on the pending list and try the list now.
    pub(super) fn release_qgroup_later(&self, id: u64) {
        self.state().pending_qgroups.insert(id);
        self.retry_pending_qgroups();
    }

    /// Destroy qgroups of removed layers that the kernel has finished dropping.
    pub(super) fn retry_pending_qgroups(&self) {
        let Ok(dirs) = self.dirs() else { return };
        let mut st = self.state();
        if st.pending_qgroups.is_empty() {
            return;
        }
        let sub = dirs.subvolumes.as_fd();
        st.pending_qgroups
            .retain(|&q| !matches!(quota::destroy(sub, q, &self.home), Ok(true)));
        write_pending(dirs.metadata.as_fd(), &st.pending_qgroups);
    }

    /// Wait for the kernel to drop removed layers (a minute at most each), and destroy their
    /// qgroups.
    pub fn release_qgroups(&self) -> Result<()> {
        let dirs = self.dirs()?;
        let pending: Vec<u64> = self.state().pending_qgroups.iter().copied().collect();
        if pending.is_empty() {
            return Ok(());
        }
        for q in pending {
            delete::wait_dropped(
                dirs.subvolumes.as_fd(),
                q,
                Duration::from_secs(60),
                &self.home,
            )?;
        }
        drop(dirs);
        self.retry_pending_qgroups();
        Ok(())
    }
}

/// The pending list in the metadata directory `dir`; empty when there is none.
pub(super) fn read_pending(dir: BorrowedFd<'_>) -> BTreeSet<u64> {
    let Ok(fd) = openat(
        dir,
        PENDING,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    ) else {
        return BTreeSet::new();
    };
    std::io::read_to_string(File::from(fd))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn write_pending(dir: BorrowedFd<'_>, ids: &BTreeSet<u64>) {
    if ids.is_empty() {
        let _ = nix::unistd::unlinkat(dir, PENDING, nix::unistd::UnlinkatFlags::NoRemoveDir);
        return;
    }
    let tmp = ".tmp-pending-qgroups";
    let Ok(fd) = openat(
        dir,
        tmp,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o600),
    ) else {
        return;
    };
    let body: String = ids.iter().map(|q| format!("{q}\n")).collect();
    if File::from(fd).write_all(body.as_bytes()).is_ok() {
        let _ = nix::fcntl::renameat(dir, tmp, dir, PENDING);
    }
}
