//! The generation fast path: no snapshot, no send. When the new tree is a snapshot (or a
//! snapshot of a snapshot ...) of the old one taken in transaction T, both trees were the same
//! at T, and every inode either side changed since carries a newer transid in its inode item:
//! btrfs stamps `btrfs_inode_item.transid` with the running transaction on every update (data
//! written, size, mode, owner, times, links, xattrs: they all update ctime or mtime, and so the
//! item). TREE_SEARCH_V2 with `min_transid = T + 1` visits only the tree blocks written since T
//! (btrfs prunes older subtrees by their pointer generation, as `btrfs subvolume find-new`
//! does), so finding those inodes costs what the change costs, not what the tree holds. Their
//! paths in the tree where they changed (from the INODE_REF items the search read beside them,
//! else INO_PATHS) are the candidates the judge compares by the walk's rules
//! ([`super::judge`]).
//!
//! Inode items reach the tree at commit (the delayed-inode cache holds them before), and a
//! file's size reaches it when its data is written back: so the filesystem is synced first
//! (syncfs, then a transaction commit; both cheap when nothing is dirty).
//!
//! Needs CAP_SYS_ADMIN (TREE_SEARCH, INO_PATHS): EPERM otherwise, and the caller walks.

use super::inode;
use super::judge::{judge, one_tree, Candidates};
use super::walk;
use super::{Change, Options, Parallelism};
use crate::error::Result;
use crate::ioctl::{
    self, InodeItem, SearchKey, INODE_EXTREF_KEY, INODE_ITEM_KEY, INODE_REF_KEY, LAST_FREE_OBJECTID,
};
use crate::nested;
use crate::open::{require_btrfs, require_subvolume};
use crate::search;
use crate::subvolume;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

/// The result buffer of one search, one per thread.
const SEARCH_BUF: usize = 64 * 1024;
/// Items asked of the kernel per search call: SEARCH_BATCH_MIN after a jump over a run of
/// directory entries (the next inode is most likely another directory), doubling up to
/// SEARCH_BATCH_MAX while the items keep being of use.
const SEARCH_BATCH_MIN: usize = 8;
const SEARCH_BATCH_MAX: usize = 128;
/// Items of one inode past its references after which the search jumps to the next inode.
const SKIP_AFTER: usize = 4;
/// Fewest inode numbers worth a search range of their own.
const SEARCH_CHUNK_MIN: u64 = 4096;
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
    options: &Options<'_>,
) -> Result<Vec<Change>> {
    let parallel = options.parallel;
    for fd in [new, old] {
        require_btrfs(fd, shown)?;
        require_subvolume(fd, shown)?;
    }
    if !one_tree(new, old, shown, "BTRFS_IOC_TREE_SEARCH_V2")? {
        // Not snapshots of one tree: every inode differs, there is nothing to gain.
        return walk::changes(new, Some(old), shown, options);
    }
    walk::go_on(options.control, shown)?;
    let new_info = subvolume::info_fd(new, shown)?;
    // Before this, a ctime is history both trees share.
    let made = Some(walk::made_later(
        &new_info,
        &subvolume::info_fd(old, shown)?,
    ));
    // Sizes reach inode items at writeback, delayed items reach the tree at commit.
    crate::filesystem::sync_fd(new, shown)?;
    // Every search and lookup below goes through an fd of the tree it reads.
    let mut changed = Vec::with_capacity(2);
    for fd in [new, old] {
        match changed_inodes(fd, since, parallel, shown)? {
            Some(c) => changed.push(c),
            None => return walk::changes(new, Some(old), shown, options),
        }
        walk::go_on(options.control, shown)?;
    }
    if changed[0].len() + changed[1].len() > MAX_CANDIDATE_INODES {
        return walk::changes(new, Some(old), shown, options);
    }
    let (in_new, in_old) = (changed.remove(0), changed.remove(0));
    let inos = |v: &[Changed]| v.iter().map(|c| c.ino).collect::<HashSet<u64>>();
    let (new_inos, old_inos) = (inos(&in_new), inos(&in_old));
    let changed_both = new_inos.intersection(&old_inos).copied().collect();
    // See the judge's `sizes_explain`: names lost without an inode changing are then found by
    // directory sizes instead of reading both sides of every changed directory.
    let sizes_explain = in_old.is_empty() && !has_nested_subvolumes(new, new_info.id, shown)?;
    let in_new = only_real_changes(in_new, &old_inos, old, (since, made), parallel, shown)?;
    let in_old = only_real_changes(in_old, &new_inos, new, (since, made), parallel, shown)?;
    let mut candidates = Candidates::default();
    for (fd, changed) in [(new, in_new), (old, in_old)] {
        let mut dirs = DirPaths::new(fd, shown);
        for c in changed {
            if c.ino == ioctl::FIRST_FREE_OBJECTID {
                candidates.insert_dir(b""); // the root directory
                continue;
            }
            let paths = if c.refs.len() == c.nlink as usize {
                // Every name was in the blocks the search read.
                let mut paths = Vec::with_capacity(c.refs.len());
                for (parent, name) in &c.refs {
                    let mut p = dirs.path(*parent)?;
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(name);
                    paths.push(p);
                }
                paths
            } else {
                match inode::paths(fd, c.ino, shown)? {
                    Some(paths) => paths,
                    // More names than one INO_PATHS reply holds: the walk is simpler.
                    None => return walk::changes(new, Some(old), shown, options),
                }
            };
            for p in &paths {
                if c.dir {
                    candidates.insert_dir(p);
                } else {
                    candidates.insert(p);
                }
            }
        }
    }
    judge(
        new,
        old,
        shown,
        options,
        &candidates,
        changed_both,
        made,
        sizes_explain,
    )
}

/// Whether subvolume `tree` holds a nested subvolume (a ROOT_REF item in the tree of roots
/// names it as the parent).
fn has_nested_subvolumes(fd: BorrowedFd<'_>, tree: u64, shown: &Path) -> Result<bool> {
    let key = SearchKey {
        tree_id: ioctl::ROOT_TREE_OBJECTID,
        min_objectid: tree,
        max_objectid: tree,
        min_type: ioctl::ROOT_REF_KEY,
        max_type: ioctl::ROOT_REF_KEY,
        max_offset: u64::MAX,
        max_transid: u64::MAX,
        ..Default::default()
    };
    let mut any = false;
    search::search_with(fd, key, 1, &mut search::Buffer::new(4096), shown, |h, _| {
        any = h.objectid == tree && h.type_ == ioctl::ROOT_REF_KEY;
        ControlFlow::Break(())
    })?;
    Ok(any)
}

/// `changed` (of one tree) without the inodes whose only change since the snapshot is their
/// access time: an inode that the other tree did not change (`other_changed`) and whose item
/// there is the same but for `atime` and `transid`. Reading a writable layer updates access
/// times (relatime) and so writes inode items; nothing else can leave the rest of the item as
/// it was: btrfs bumps the item's `sequence` (i_version, unconditionally) for every name added
/// to or removed from a directory, every rename, setattr and xattr change, and data written
/// moves the size or the mtime (a write that moves neither is invisible to the walk as well).
/// An inode that both trees changed is always kept (each may have had the same bumps).
/// So is, without looking at the other tree, an inode made after `since` or whose ctime is
/// later than `made` (when the later of the two trees was made): keeping an inode is always
/// safe, as the judge compares what it names; dropping one is what needs the proof.
fn only_real_changes(
    changed: Vec<Changed>,
    other_changed: &HashSet<u64>,
    other: BorrowedFd<'_>,
    (since, made): (u64, Option<(i64, u32)>),
    parallel: Parallelism,
    shown: &Path,
) -> Result<Vec<Changed>> {
    let check = |buf: &mut search::Buffer, c: &Changed| -> Result<bool> {
        let item = InodeItem(&c.item);
        if other_changed.contains(&c.ino)
            || item.generation().is_some_and(|g| g > since)
            || made
                .zip(item.ctime())
                .is_some_and(|(made, ctime)| ctime > made)
        {
            return Ok(true);
        }
        let theirs = inode_item(other, c.ino, buf, shown)?;
        Ok(!theirs.is_some_and(|t| item.same_but_atime(&InodeItem(&t))))
    };
    let keep: Vec<bool> = if changed.len() >= parallel.inodes {
        changed
            .par_iter()
            .map_init(|| search::Buffer::new(4096), check)
            .collect::<Result<_>>()?
    } else {
        let mut buf = search::Buffer::new(4096);
        changed
            .iter()
            .map(|c| check(&mut buf, c))
            .collect::<Result<_>>()?
    };
    Ok(changed
        .into_iter()
        .zip(keep)
        .filter_map(|(c, k)| k.then_some(c))
        .collect())
}

/// The inode item of inode `ino` of the tree at `fd`, if it has one.
fn inode_item(
    fd: BorrowedFd<'_>,
    ino: u64,
    buf: &mut search::Buffer,
    shown: &Path,
) -> Result<Option<Vec<u8>>> {
    let key = SearchKey {
        tree_id: search::OWN_TREE,
        min_objectid: ino,
        max_objectid: ino,
        min_type: INODE_ITEM_KEY,
        max_type: INODE_ITEM_KEY,
        max_offset: u64::MAX,
        max_transid: u64::MAX,
        ..Default::default()
    };
    let mut item = None;
    search::search_with(fd, key, 1, buf, shown, |_, data| {
        item = Some(data.to_vec());
        ControlFlow::Break(())
    })?;
    Ok(item)
}

/// Paths of directories of one tree by inode number (INO_LOOKUP), each looked up once.
struct DirPaths<'a> {
    fd: BorrowedFd<'a>,
    shown: &'a Path,
    known: HashMap<u64, Vec<u8>>,
}

impl<'a> DirPaths<'a> {
    fn new(fd: BorrowedFd<'a>, shown: &'a Path) -> DirPaths<'a> {
        DirPaths {
            fd,
            shown,
            known: HashMap::new(),
        }
    }

    /// The path of directory `dir` relative to the root (empty for the root).
    fn path(&mut self, dir: u64) -> Result<Vec<u8>> {
        if let Some(p) = self.known.get(&dir) {
            return Ok(p.clone());
        }
        let p = nested::dir_path(self.fd, search::OWN_TREE, dir, self.shown)?
            .into_os_string()
            .into_vec();
        self.known.insert(dir, p.clone());
        Ok(p)
    }
}

/// An inode whose item changed, with the names the search found for it.
pub(super) struct Changed {
    pub ino: u64,
    pub dir: bool,
    pub nlink: u32,
    /// (parent directory, name) from the INODE_REF and INODE_EXTREF items that were in the
    /// blocks read; all of them when there are `nlink`.
    pub refs: Vec<(u64, Vec<u8>)>,
    /// The inode item as the search read it.
    pub item: Vec<u8>,
}

/// The inodes of the tree at `fd` whose inode item changed after transaction `since` (the
/// root directory, 256, included); None past [`MAX_CANDIDATE_INODES`].
pub(super) fn changed_inodes(
    fd: BorrowedFd<'_>,
    since: u64,
    parallel: Parallelism,
    shown: &Path,
) -> Result<Option<Vec<Changed>>> {
    // The kernel copies every item of every block written since, one by one: the cost of the
    // search. A small change (the common case) is searched on this thread, in one pass: waking
    // the pool's threads costs more than they would save. Past `parallel.search_items`, the
    // rest is cut into ranges of inode numbers searched in parallel, many per thread: the
    // changed blocks crowd where the directories are (their entries), so few ranges would
    // leave one thread with most of the work.
    let first = ioctl::FIRST_FREE_OBJECTID;
    let mut buf = search::Buffer::new(SEARCH_BUF);
    let mut out = Vec::new();
    let rest = match changed_in(
        fd,
        (first, LAST_FREE_OBJECTID),
        since,
        &mut buf,
        &mut out,
        parallel.search_items,
        shown,
    )? {
        Scan::Done => return Ok(Some(out)),
        Scan::TooMany => return Ok(None),
        Scan::Stopped(at) => at,
    };
    let top = search::last_inode(fd, &mut search::Buffer::new(4096), true, shown)?.unwrap_or(rest);
    let top = top.max(rest);
    let chunks = (rayon::current_num_threads() as u64 * 16)
        .min((top - rest) / SEARCH_CHUNK_MIN + 1)
        .max(1);
    let width = (top - rest) / chunks + 1;
    let ranges: Vec<(u64, u64)> = (0..chunks)
        .map(|i| {
            let lo = rest + i * width;
            let hi = if i + 1 == chunks {
                LAST_FREE_OBJECTID
            } else {
                lo + width - 1
            };
            (lo, hi)
        })
        .collect();
    let parts: Vec<Option<Vec<Changed>>> = ranges
        .par_iter()
        .map_init(
            || search::Buffer::new(SEARCH_BUF),
            |buf, &range| {
                let mut part = Vec::new();
                Ok(
                    match changed_in(fd, range, since, buf, &mut part, usize::MAX, shown)? {
                        Scan::TooMany => None,
                        _ => Some(part),
                    },
                )
            },
        )
        .collect::<Result<_>>()?;
    for part in parts {
        let Some(part) = part else { return Ok(None) };
        out.extend(part);
        if out.len() > MAX_CANDIDATE_INODES {
            return Ok(None);
        }
    }
    Ok(Some(out))
}

/// How [`changed_in`] ended.
enum Scan {
    /// The whole range was searched.
    Done,
    /// Past [`MAX_CANDIDATE_INODES`].
    TooMany,
    /// The budget of items ran out: the inodes from this number on are still to search.
    Stopped(u64),
}

/// [`changed_inodes`] of the inode numbers `lo..=hi`, into `out`; stops at an inode boundary
/// once about `budget` items were read.
fn changed_in(
    fd: BorrowedFd<'_>,
    (lo, hi): (u64, u64),
    since: u64,
    buf: &mut search::Buffer,
    out: &mut Vec<Changed>,
    budget: usize,
    shown: &Path,
) -> Result<Scan> {
    let mut key = SearchKey {
        max_type: u32::from(u8::MAX),
        min_transid: since.saturating_add(1),
        ..search::inodes(lo, hi)
    };
    let mut over = false;
    let mut read = 0usize;
    let u64_at = |data: &[u8], at: usize| {
        data.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    // Most items of the blocks written since are directory entries (a directory that gained
    // a name has its block of entries rewritten) and file extents, of no use here: after a run
    // of them the search jumps to the next inode number, so a small batch of items is all the
    // kernel copies of a long run.
    let mut batch = SEARCH_BATCH_MIN;
    loop {
        let (mut seen, mut last, mut skip_to) = (0usize, None, None);
        let mut run = (0u64, 0usize); // (inode number, items past its references so far)
        search::search_with(fd, key, batch, buf, shown, |h, data| {
            seen += 1;
            last = Some(*h);
            if over {
                return ControlFlow::Break(());
            }
            if h.type_ > INODE_EXTREF_KEY {
                run = if run.0 == h.objectid {
                    (run.0, run.1 + 1)
                } else {
                    (h.objectid, 1)
                };
                if run.1 >= SKIP_AFTER {
                    skip_to = Some(h.objectid.saturating_add(1));
                    return ControlFlow::Break(());
                }
                return ControlFlow::Continue(());
            }
            // Items come in key order: an inode's references follow its inode item.
            let current = out.last_mut().filter(|c| c.ino == h.objectid);
            match (h.type_, current) {
                (INODE_ITEM_KEY, _) => {
                    let item = InodeItem(data);
                    let Some(transid) = item.transid() else {
                        return ControlFlow::Continue(());
                    };
                    if transid <= since {
                        return ControlFlow::Continue(());
                    }
                    out.push(Changed {
                        ino: h.objectid,
                        // Unreadable: say directory, the cautious answer (its names are read).
                        dir: item
                            .mode()
                            .map_or(true, |m| m & libc::S_IFMT == libc::S_IFDIR),
                        nlink: item.nlink().unwrap_or(u32::MAX),
                        refs: Vec::new(),
                        item: data.to_vec(),
                    });
                    over = out.len() > MAX_CANDIDATE_INODES;
                }
                (INODE_REF_KEY, Some(c)) => {
                    // btrfs_inode_ref: index u64, name_len u16, name; parent = the key's offset.
                    let mut rest = data;
                    while let (Some(len), true) = (rest.get(8..10), rest.len() >= 10) {
                        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
                        let Some(name) = rest.get(10..10 + len) else {
                            break;
                        };
                        c.refs.push((h.offset, name.to_vec()));
                        rest = &rest[10 + len..];
                    }
                }
                (INODE_EXTREF_KEY, Some(c)) => {
                    // btrfs_inode_extref: parent u64, index u64, name_len u16, name.
                    let mut rest = data;
                    while let (Some(parent), Some(len)) = (u64_at(rest, 0), rest.get(16..18)) {
                        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
                        let Some(name) = rest.get(18..18 + len) else {
                            break;
                        };
                        c.refs.push((parent, name.to_vec()));
                        rest = &rest[18 + len..];
                    }
                }
                _ => {}
            }
            ControlFlow::Continue(())
        })?;
        let Some(last) = last else { break };
        if over {
            break;
        }
        read += seen;
        if read >= budget && last.objectid > lo {
            // Whatever was found of inode `last.objectid` is found again by the next search.
            while out.last().is_some_and(|c| c.ino >= last.objectid) {
                out.pop();
            }
            return Ok(Scan::Stopped(last.objectid));
        }
        match skip_to {
            Some(next) if next <= hi => {
                key.min_objectid = next;
                key.min_type = 0;
                key.min_offset = 0;
                batch = SEARCH_BATCH_MIN;
            }
            Some(_) => break,
            // Fewer items than asked for: the range is done.
            None if seen < batch => break,
            None => {
                if !search::advance(&mut key, &last) {
                    break;
                }
                batch = (batch * 2).min(SEARCH_BATCH_MAX);
            }
        }
    }
    Ok(if over { Scan::TooMany } else { Scan::Done })
}
