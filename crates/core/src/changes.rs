//! Changes between a layer and its parent, with the semantics container engines use.
//!
//! An entry is modified when its type, mode, uid, gid, rdev or `security.capability` differ,
//! or (not for directories) its size or mtime; the parent directory of an added or deleted
//! entry is modified; below an added directory every entry is added; below a deleted
//! directory only the directory itself is reported.
//!
//! Three ways to the same list: a parallel tree walk ([`changes_walk`]), and two fast paths
//! whose cost follows the size of the change: the generation search ([`changes_since`]) for a
//! layer that is a snapshot of the other, which reads only the tree blocks written since the
//! snapshot, and BTRFS_IOC_SEND ([`changes_send`]) between any two read-only snapshots of one
//! tree. Both fast paths only find candidates; the walk's rules judge them. Nested subvolumes
//! and mounts are boundaries: an entry of their own, compared by type only when both sides are
//! boundaries (send sees nothing of them but the name), and never descended into.

mod entry;
mod generation;
mod inode;
mod judge;
mod send;
mod walk;

use crate::control::Control;
use crate::error::{Error, Result};
use crate::idmap::IdMapping;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    Add,
    Modify,
    Delete,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Add => "add",
            ChangeKind::Modify => "modify",
            ChangeKind::Delete => "delete",
        }
    }
}

/// One changed entry. `path` is relative to the layer root, without a leading slash
/// (`etc/passwd`); lists are sorted by path, parents before children.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Change {
    pub path: PathBuf,
    pub kind: ChangeKind,
}

/// The (uid, gid) maps each tree is stored under, to compare owners as container ids: a
/// layer and its remapped copy hold the same container ids under different host ids.
#[derive(Debug, Clone)]
pub struct ContainerIds {
    pub new: Arc<(IdMapping, IdMapping)>,
    pub old: Arc<(IdMapping, IdMapping)>,
}

/// How much of the generation fast path runs on the calling thread before it goes parallel.
/// A small change is cheaper there: waking rayon's threads after an idle spell costs more than
/// they save (and on a small machine the woken thread can wait milliseconds for a CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parallelism {
    /// Items of the tree search read on the calling thread; the rest is searched in parallel.
    pub search_items: usize,
    /// Fewest changed inodes whose items are looked up in parallel.
    pub inodes: usize,
    /// Fewest names of one directory judged in parallel.
    pub names: usize,
}

impl Parallelism {
    /// What `changes_since` uses.
    pub const DEFAULT: Parallelism = Parallelism {
        search_items: 4096,
        inodes: 64,
        names: 32,
    };
    /// Every part in parallel, however small (tests run the parallel code on small trees).
    pub const ALWAYS: Parallelism = Parallelism {
        search_items: 0,
        inodes: 0,
        names: 0,
    };
}

impl Default for Parallelism {
    fn default() -> Self {
        Parallelism::DEFAULT
    }
}

/// How a `changes_*` call compares, beyond the two trees.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options<'a> {
    /// Compare owners as container ids through these maps (else as host ids).
    pub ids: Option<&'a ContainerIds>,
    /// How much of the generation fast path runs in parallel.
    pub parallel: Parallelism,
    /// Abort: the call then fails with ABORT_ERR, soon (the walk looks before every
    /// directory). No progress is reported.
    pub control: Control<'a>,
}

/// Tree walk: compare the tree at `new` against `old` (None: everything under `new` is
/// added). Parallel (rayon) across directories.
pub fn changes_walk(
    new: BorrowedFd<'_>,
    old: Option<BorrowedFd<'_>>,
    shown: &Path,
    options: &Options<'_>,
) -> Result<Vec<Change>> {
    walk::changes(new, old, shown, options).map(normalize)
}

/// [`changes_walk`] on one thread (the benchmark compares the two).
pub fn changes_walk_single_threaded(
    new: BorrowedFd<'_>,
    old: Option<BorrowedFd<'_>>,
    shown: &Path,
    options: &Options<'_>,
) -> Result<Vec<Change>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| Error::internal(format!("cannot start a walk thread: {e}")))?;
    pool.install(|| changes_walk(new, old, shown, options))
}

/// Send fast path: `new` and `old` are fds of read-only subvolume roots on the same
/// filesystem. Runs BTRFS_IOC_SEND (NO_FILE_DATA, parent `old`), and classifies the paths the
/// stream names by the walk's own rules, so the list is the walk's and the cost follows the
/// size of the change. EPERM without CAP_SYS_ADMIN (fall back to [`changes_walk`]); EINVAL
/// when either is not a read-only subvolume root; EXDEV across filesystems.
pub fn changes_send(
    new: BorrowedFd<'_>,
    old: BorrowedFd<'_>,
    shown: &Path,
    options: &Options<'_>,
) -> Result<Vec<Change>> {
    send::changes(new, old, shown, options).map(normalize)
}

/// Generation fast path: `new` and `old` are subvolume roots on one filesystem that held the
/// same tree at transaction `since` ([`snapshot_origin`] gives it for a snapshot and its
/// source); either may be writable and either may have changed since. Syncs the filesystem
/// (cheap when nothing is dirty), finds the inodes either side changed after `since` with
/// TREE_SEARCH_V2 (only blocks written since are read) and judges their paths by the walk's
/// rules, so the list is the walk's. EPERM without CAP_SYS_ADMIN (fall back to
/// [`changes_walk`]); EXDEV across filesystems. A wrong `since` gives a wrong list: it must
/// come from the kernel (GET_SUBVOL_INFO's `otransid` of the snapshot).
pub fn changes_since(
    new: BorrowedFd<'_>,
    old: BorrowedFd<'_>,
    since: u64,
    shown: &Path,
    options: &Options<'_>,
) -> Result<Vec<Change>> {
    generation::changes(new, old, since, shown, options).map(normalize)
}

/// The inodes of the subvolume at `root` whose inode item changed after transaction `since`,
/// each with whether it is a directory, as the generation fast path finds them (only tree
/// blocks written after `since` are read); None when there are too many to be worth judging.
/// Syncs the filesystem first. Needs CAP_SYS_ADMIN.
pub fn changed_inodes(
    root: BorrowedFd<'_>,
    since: u64,
    shown: &Path,
) -> Result<Option<Vec<(u64, bool)>>> {
    crate::filesystem::sync_fd(root, shown)?;
    Ok(
        generation::changed_inodes(root, since, Parallelism::DEFAULT, shown)?
            .map(|v| v.into_iter().map(|c| (c.ino, c.dir)).collect()),
    )
}

/// The transaction in which the subvolume at `new` was snapshotted from the subvolume at
/// `old`, when it was (its parent UUID is `old`'s UUID); None otherwise.
pub fn snapshot_origin(
    new: BorrowedFd<'_>,
    old: BorrowedFd<'_>,
    shown: &Path,
) -> Result<Option<u64>> {
    let (n, o) = (
        crate::subvolume::info_fd(new, shown)?,
        crate::subvolume::info_fd(old, shown)?,
    );
    Ok((n.parent_uuid == o.uuid && o.uuid != [0; 16]).then_some(n.otransid))
}

/// Sort component-wise, drop duplicates, and report the parent directory of every added or
/// deleted entry as modified (unless it is added itself, or the root).
fn normalize(mut list: Vec<Change>) -> Vec<Change> {
    list.sort_by(|a, b| a.path.cmp(&b.path));
    list.dedup_by(|later, first| later.path == first.path);
    let mut parents: Vec<PathBuf> = Vec::new();
    for c in &list {
        if c.kind == ChangeKind::Modify {
            continue;
        }
        let Some(parent) = c.path.parent().filter(|p| !p.as_os_str().is_empty()) else {
            continue;
        };
        if parents.last().map(|p| p.as_path()) == Some(parent) {
            continue;
        }
        if list
            .binary_search_by(|x| x.path.as_path().cmp(parent))
            .is_err()
        {
            parents.push(parent.to_path_buf());
        }
    }
    if !parents.is_empty() {
        list.extend(parents.into_iter().map(|path| Change {
            path,
            kind: ChangeKind::Modify,
        }));
        list.sort_by(|a, b| a.path.cmp(&b.path));
        list.dedup_by(|later, first| later.path == first.path);
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(path: &str, kind: ChangeKind) -> Change {
        Change {
            path: path.into(),
            kind,
        }
    }

    #[test]
    fn normalize_sorts_component_wise_and_adds_parents() {
        use ChangeKind::*;
        let got = normalize(vec![
            c("a.b", Add),
            c("a/b/c", Delete),
            c("x/new", Add),
            c("x/new/deep", Add),
            c("top", Add),
            c("a/b/c", Delete),
            c("m", Modify),
            c("m/k", Add),
        ]);
        assert_eq!(
            got,
            vec![
                c("a/b", Modify),
                c("a/b/c", Delete),
                c("a.b", Add),
                c("m", Modify),
                c("m/k", Add),
                c("top", Add),
                c("x", Modify),
                c("x/new", Add),
                c("x/new/deep", Add),
            ]
        );
    }
}
