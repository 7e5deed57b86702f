//! The generation fast path: no snapshot, no send. When the new tree is a snapshot (or a
//! snapshot of a snapshot ...) of the old one taken in transaction T, both trees were the same
//! at T, and every inode either side changed since carries a newer transid in its inode item:
//! btrfs stamps `btrfs_inode_item.transid` with the running transaction on every update (data
//! written, size, mode, owner, times, links, xattrs: they all update ctime or mtime, and so the
//! item). TREE_SEARCH_V2 with `min_transid = T + 1` visits only the tree blocks written since T
//! (btrfs prunes older subtrees by their pointer generation, as `btrfs subvolume find-new`
//! does), so finding those inodes costs what the change costs, not what the tree holds. Their
//! paths (INO_PATHS, in the tree where they changed) are the candidates the judge compares by
//! the walk's rules ([`super::judge`]).
//!
//! Inode items reach the tree at commit (the delayed-inode cache holds them before), and a
//! file's size reaches it when its data is written back: so the filesystem is synced first
//! (syncfs, then a transaction commit; both cheap when nothing is dirty).
//!
//! Needs CAP_SYS_ADMIN (TREE_SEARCH, INO_PATHS): EPERM otherwise, and the caller walks.

use super::inode;
use super::judge::{judge, Candidates};
use super::walk;
use super::{Change, ContainerIds};
use crate::error::{Context, Error, Result};
use crate::ioctl::{self, SearchKey};
use crate::open::{self, require_btrfs, require_subvolume};
use crate::search::search;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

const INODE_ITEM_KEY: u8 = 1;
/// `BTRFS_LAST_FREE_OBJECTID`: inode numbers end here; above are orphan and other items.
const LAST_FREE_OBJECTID: u64 = -256i64 as u64;
/// Offset of `transid` in `struct btrfs_inode_item` (after `generation`).
const INODE_TRANSID_OFFSET: usize = 8;
/// Offset of `mode` in `struct btrfs_inode_item`.
const INODE_MODE_OFFSET: usize = 52;
/// Past this many changed inodes, judging each costs more than the walk: walk instead.
const MAX_CANDIDATE_INODES: usize = 20_000;

/// Every change between `old` and `new` (subvolume roots on one filesystem) when both were
/// the same tree at transaction `since` (e.g. `new` is a snapshot of `old` taken then);
/// unsorted.
pub(super) fn changes(
    new: BorrowedFd<'_>,
    old: BorrowedFd<'_>,
    since: u64,
    shown: &Path,
    ids: Option<&ContainerIds>,
) -> Result<Vec<Change>> {
    for fd in [new, old] {
        require_btrfs(fd, shown)?;
        require_subvolume(fd, shown)?;
    }
    if open::fsid(new, shown)? != open::fsid(old, shown)? {
        return Err(Error::invalid(
            Errno::EXDEV,
            "BTRFS_IOC_TREE_SEARCH_V2",
            shown,
            "the two trees are on different filesystems",
        ));
    }
    if inode::generation(new, shown)? != inode::generation(old, shown)? {
        // Not snapshots of one tree: every inode differs, there is nothing to gain.
        return walk::changes(new, Some(old), shown, ids);
    }
    commit(new, shown)?;
    let mut candidates = Candidates::default();
    let mut count = 0usize;
    for fd in [new, old] {
        let tree = open::subvolume_id(fd, shown)?;
        let Some(inos) = changed_inodes(fd, tree, since, shown)? else {
            return walk::changes(new, Some(old), shown, ids);
        };
        count += inos.len();
        if count > MAX_CANDIDATE_INODES {
            return walk::changes(new, Some(old), shown, ids);
        }
        for (ino, dir) in inos {
            if ino == ioctl::FIRST_FREE_OBJECTID {
                candidates.insert_dir(b""); // the root directory
                continue;
            }
            match inode::paths(fd, ino, shown)? {
                Some(paths) if dir => paths.iter().for_each(|p| candidates.insert_dir(p)),
                Some(paths) => paths.iter().for_each(|p| candidates.insert(p)),
                // More names than one INO_PATHS reply holds: the walk is simpler.
                None => return walk::changes(new, Some(old), shown, ids),
            }
        }
    }
    judge(new, old, shown, ids, &candidates)
}

/// Write back dirty data (so sizes reach the inode items) and commit the running transaction
/// (so delayed inode items reach the tree).
pub(super) fn commit(fd: BorrowedFd<'_>, shown: &Path) -> Result<()> {
    nix::unistd::syncfs(fd).at("syncfs", shown)?;
    let mut transid = 0u64;
    // SAFETY: transid is a valid u64 out-parameter.
    unsafe { ioctl::start_sync(fd.as_raw_fd(), &mut transid) }.at("BTRFS_IOC_START_SYNC", shown)?;
    // SAFETY: transid is a valid u64 in-parameter.
    unsafe { ioctl::wait_sync(fd.as_raw_fd(), &transid) }.at("BTRFS_IOC_WAIT_SYNC", shown)?;
    Ok(())
}

/// Inode numbers of tree `tree` whose inode item changed after transaction `since` (the root
/// directory, 256, included), each with whether it is a directory; None past
/// [`MAX_CANDIDATE_INODES`].
pub(super) fn changed_inodes(
    fd: BorrowedFd<'_>,
    tree: u64,
    since: u64,
    shown: &Path,
) -> Result<Option<Vec<(u64, bool)>>> {
    let key = SearchKey {
        tree_id: tree,
        min_objectid: ioctl::FIRST_FREE_OBJECTID,
        max_objectid: LAST_FREE_OBJECTID,
        min_type: 0,
        max_type: u32::from(u8::MAX),
        min_offset: 0,
        max_offset: u64::MAX,
        min_transid: since.saturating_add(1),
        max_transid: u64::MAX,
        ..Default::default()
    };
    let mut inos = Vec::new();
    let mut over = false;
    search(fd, key, usize::MAX, shown, |h, data| {
        if over || h.type_ != u32::from(INODE_ITEM_KEY) {
            return;
        }
        let Some(t) = data.get(INODE_TRANSID_OFFSET..INODE_TRANSID_OFFSET + 8) else {
            return;
        };
        let transid = u64::from_le_bytes(t.try_into().expect("8 bytes"));
        let dir = data
            .get(INODE_MODE_OFFSET..INODE_MODE_OFFSET + 4)
            .map(|m| u32::from_le_bytes(m.try_into().expect("4 bytes")) & libc::S_IFMT)
            .map_or(true, |fmt| fmt == libc::S_IFDIR);
        if transid > since {
            inos.push((h.objectid, dir));
            over = inos.len() > MAX_CANDIDATE_INODES;
        }
    })?;
    Ok((!over).then_some(inos))
}
