//! Judging candidate paths by the walk's own rules: the common half of the fast paths. A fast
//! path (send, or the generation search) names the paths where something may have changed;
//! [`judge`] compares those entries in both trees, explores what a candidate cannot vouch for
//! (names one side lacks in a directory whose ctime moved, subtrees below a directory that is
//! not the same inode on both sides), and so returns the walk's list at the cost of the change.
//!
//! Why nothing is missed, given candidates that cover every inode whose item, links or xattrs
//! differ (by at least one of its paths, in either tree):
//! - Below a directory that is the same inode (number and generation) on both sides, only
//!   candidates are judged: an entry that differs there is itself a candidate. Both
//!   directories are also read when the directory's ctime moved, or when the fast path knows
//!   the directory changed, and the names one side lacks or binds to another inode judged too:
//!   neither source sees nested subvolumes (a subvolume made where a file was changes no inode
//!   of the tree but the directory).
//! - The generation path skips that reading when the directory's size accounts for every name
//!   (see [`Judge::sizes_explain`]): btrfs keeps a directory's `i_size` at twice the bytes of
//!   its names, every name the new tree gained is a candidate when the old tree did not change
//!   and the new one holds no nested subvolume, so a size that moved by exactly the candidates'
//!   names leaves no lost name to find.
//! - Below anything else (an added directory, a type change, another inode at the same path)
//!   the walk compares the whole subtree.
//! - A changed inode with several names may be named by one of them: INO_PATHS gives the others.
//!
//! Candidates that exist in neither tree (orphan names like `o257-9-0`, states in the middle of
//! a rename) judge to nothing.

use super::entry::{c_name, join, Entry, TreeRoot};
use super::inode;
use super::walk::{self, open_child, read_names, reopen, Descend, Found, Walk};
use super::{Change, Options};
use crate::dirent::Dir;
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

/// Whether the trees at `new` and `old` are snapshots of one tree (their roots are the same
/// inode), which is what the fast paths compare; EXDEV when they are on two filesystems.
pub(super) fn one_tree(
    new: BorrowedFd<'_>,
    old: BorrowedFd<'_>,
    shown: &Path,
    syscall: &'static str,
) -> Result<bool> {
    if crate::open::fsid(new, shown)? != crate::open::fsid(old, shown)? {
        return Err(Error::refused(
            nix::errno::Errno::EXDEV,
            syscall,
            shown,
            "the two trees are on different filesystems",
        ));
    }
    Ok(inode::generation(new, shown)? == inode::generation(old, shown)?)
}

/// Judge `candidates` between the trees at `old` and `new` (whose roots are the same inode),
/// with the walk's rules; unsorted. `changed_both`: inodes both trees changed, if known;
/// `shared_before`: [`walk::shared_before`] of the two trees. The names of a directory are
/// judged in parallel when there are at least `options.parallel.names`. `sizes_explain`: see
/// [`Judge::sizes_explain`]; only a caller that knows what it says may set it.
#[allow(clippy::too_many_arguments)]
pub(super) fn judge(
    new: BorrowedFd<'_>,
    old: BorrowedFd<'_>,
    shown: &Path,
    options: &Options<'_>,
    candidates: &Candidates,
    changed_both: HashSet<u64>,
    shared_before: Option<(i64, u32)>,
    sizes_explain: bool,
) -> Result<Vec<Change>> {
    let (new_ids, old_ids) = options
        .ids
        .map_or((None, None), |i| (Some(i.new.clone()), Some(i.old.clone())));
    let (new_root, new_entry) = TreeRoot::of(new, shown, new_ids)?;
    let (old_root, old_entry) = TreeRoot::of(old, shown, old_ids)?;
    let walk = Walk {
        old_root,
        new_root,
        shown: shown.to_path_buf(),
        track_links: true,
        shared_before,
        changed_both,
        control: options.control,
    };
    let judge = Judge {
        walk: &walk,
        parallel_names: options.parallel.names,
        sizes_explain,
    };
    let (mut old_dir, mut new_dir) = (reopen(old, shown)?, reopen(new, shown)?);
    let roots = (&mut old_dir, &mut new_dir, &old_entry, &new_entry);
    let mut found = judge.same_dir(candidates, roots, Path::new(""), true)?;

    // Other names of changed inodes with several: judged, but nothing new is explored.
    let mut asked = HashSet::new();
    loop {
        let inos: Vec<u64> = std::mem::take(&mut found.linked)
            .into_iter()
            .filter(|i| asked.insert(*i))
            .collect();
        if inos.is_empty() {
            break;
        }
        let mut more = Candidates::default();
        for ino in inos {
            match inode::paths(new, ino, shown)? {
                Some(paths) => paths.iter().for_each(|p| more.insert(p)),
                None => return walk::changes(new, Some(old), shown, options),
            }
        }
        let roots = (&mut old_dir, &mut new_dir, &old_entry, &new_entry);
        let more = judge.same_dir(&more, roots, Path::new(""), false)?;
        found.absorb(more);
    }
    Ok(found.changes)
}

/// Candidate paths as a tree of names, so every ancestor is a candidate too.
#[derive(Default)]
pub(super) struct Candidates {
    below: BTreeMap<Vec<u8>, Candidates>,
    /// A directory known to have gained or lost names: read both sides, whatever the ctimes.
    read_names: bool,
}

static NO_CANDIDATES: Candidates = Candidates {
    below: BTreeMap::new(),
    read_names: false,
};

impl Candidates {
    pub(super) fn insert(&mut self, path: &[u8]) {
        self.node(path);
    }

    /// [`Candidates::insert`] a directory whose names may differ between the trees: both
    /// sides are read when it is the same inode on both (`""` is the root).
    pub(super) fn insert_dir(&mut self, path: &[u8]) {
        if let Some(node) = self.node(path) {
            node.read_names = true;
        }
    }

    /// Whether `path` is a candidate whose names are read on both sides.
    #[cfg(test)]
    pub(super) fn reads_names(&self, path: &[u8]) -> bool {
        let mut node = self;
        for name in path.split(|&b| b == b'/').filter(|n| !n.is_empty()) {
            match node.below.get(name) {
                Some(n) => node = n,
                None => return false,
            }
        }
        node.read_names
    }

    fn node(&mut self, path: &[u8]) -> Option<&mut Candidates> {
        let names = || {
            path.split(|&b| b == b'/')
                .filter(|n| !n.is_empty() && *n != b".")
        };
        if names().any(|n| n == b"..") {
            return None; // never from the kernel; and never a way out of the tree
        }
        let mut node = self;
        for name in names() {
            node = node.below.entry(name.to_vec()).or_default();
        }
        Some(node)
    }
}

struct Judge<'w> {
    walk: &'w Walk<'w>,
    /// Fewest names of one directory judged in parallel: a few are judged on the calling
    /// thread, as waking the pool's threads costs more than they would save.
    parallel_names: usize,
    /// The old tree did not change since the two were one, and the new tree holds no nested
    /// subvolume. Then every name the new tree gained belongs to an inode that changed (a
    /// candidate), and btrfs keeps a directory's size at twice the length of its names: a
    /// directory whose size moved by exactly the names its candidates add and remove lost no
    /// other name, and need not be read.
    sizes_explain: bool,
}

impl Judge<'_> {
    /// Judge the candidates below a directory that is the same inode in both trees; with
    /// `explore`, also the names one side lacks and every subtree that needs a full walk.
    /// The names are judged in parallel (rayon) when there are at least `parallel_names`,
    /// each with what lies below it.
    fn same_dir(
        &self,
        candidates: &Candidates,
        (old, new, old_entry, new_entry): (&mut Dir, &mut Dir, &Entry, &Entry),
        prefix: &Path,
        explore: bool,
    ) -> Result<Found> {
        self.walk.go_on(prefix)?;
        let names: Vec<Vec<u8>> = candidates.below.keys().cloned().collect();
        let judge_all =
            |names: &[Vec<u8>], od: &Dir, nd: &Dir| -> Result<Vec<(Found, bool, bool)>> {
                let dirs = (od.as_fd(), nd.as_fd());
                let one = |name: &Vec<u8>| self.name(candidates, dirs, name, prefix, explore);
                if names.len() >= self.parallel_names {
                    names.par_iter().map(one).collect()
                } else {
                    names.iter().map(one).collect()
                }
            };
        let mut judged = judge_all(&names, old, new)?;
        if explore && (candidates.read_names || old_entry.ctime != new_entry.ctime) {
            // Bytes of the names the candidates add and remove.
            let (mut added, mut removed) = (0u64, 0u64);
            for (name, (_, in_old, in_new)) in names.iter().zip(&judged) {
                match (in_old, in_new) {
                    (false, true) => added += name.len() as u64,
                    (true, false) => removed += name.len() as u64,
                    _ => {}
                }
            }
            let explained = self.sizes_explain
                && new_entry.size.checked_add(2 * removed) == old_entry.size.checked_add(2 * added);
            if !explained {
                let readdir = |d: &mut Dir| {
                    read_names(d).map_err(|e| Error::sys(e, "readdir", &self.walk.shown(prefix)))
                };
                let (a, b) = (readdir(old)?, readdir(new)?);
                let more: Vec<Vec<u8>> = unlike(&a, &b)
                    .into_iter()
                    .filter(|n| !candidates.below.contains_key(n))
                    .collect();
                judged.extend(judge_all(&more, old, new)?);
            }
        }
        let mut found = Found::default();
        judged.into_iter().for_each(|(f, _, _)| found.absorb(f));
        Ok(found)
    }

    /// Judge entry `name` of the directory pair and what lies below it; with whether the name
    /// is in the old and in the new directory.
    fn name(
        &self,
        candidates: &Candidates,
        (od, nd): (BorrowedFd<'_>, BorrowedFd<'_>),
        name: &[u8],
        prefix: &Path,
        explore: bool,
    ) -> Result<(Found, bool, bool)> {
        let mut found = Found::default();
        let Some(name_c) = c_name(name) else {
            return Ok((found, false, false));
        };
        let below = candidates.below.get(name).unwrap_or(&NO_CANDIDATES);
        let o = self.walk.lookup(od, &name_c, &self.walk.old_root, prefix)?;
        let n = self.walk.lookup(nd, &name_c, &self.walk.new_root, prefix)?;
        let present = (o.is_some(), n.is_some());
        let (kind, descend) = self.walk.judge(
            (Some(od), Some(nd)),
            &name_c,
            o.as_ref(),
            n.as_ref(),
            prefix,
        )?;
        let rel = join(prefix, &name_c);
        if let Some(kind) = kind {
            found.changes.push(Change {
                path: rel.clone(),
                kind,
            });
        }
        if let Some(n) = n.filter(|n| n.is_linked()) {
            found.linked.push(n.ino);
        }
        let shown = || self.walk.shown(&rel);
        match descend {
            Descend::Both => {
                let (o, n) = (o.unwrap(), n.unwrap());
                let mut old_child = open_child(od, &name_c, &shown())?;
                let mut new_child = open_child(nd, &name_c, &shown())?;
                let same = o.ino == n.ino
                    && inode::generation(old_child.as_fd(), &shown())?
                        == inode::generation(new_child.as_fd(), &shown())?;
                if same {
                    let roots = (&mut old_child, &mut new_child, &o, &n);
                    found.absorb(self.same_dir(below, roots, &rel, explore)?);
                } else if explore {
                    found.absorb(self.walk.dir(Some(old_child), Some(new_child), &rel)?);
                }
            }
            Descend::NewOnly if explore => {
                let new_child = open_child(nd, &name_c, &shown())?;
                found.absorb(self.walk.dir(None, Some(new_child), &rel)?);
            }
            Descend::OldOnly if explore => {
                let old_child = open_child(od, &name_c, &shown())?;
                found.absorb(self.walk.dir(Some(old_child), None, &rel)?);
            }
            _ => {}
        }
        Ok((found, present.0, present.1))
    }
}

/// Names of two sorted name lists (name, type, inode) that are in one only, or in both for
/// different inodes: a name bound elsewhere without any inode of the tree changing (a nested
/// subvolume made where a file was) is found here, not among the candidates.
fn unlike<T: PartialEq>(
    a: &[(std::ffi::CString, T, u64)],
    b: &[(std::ffi::CString, T, u64)],
) -> Vec<Vec<u8>> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                if x.1 != y.1 || x.2 != y.2 {
                    out.push(x.0.as_bytes().to_vec());
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.0.as_bytes() < y.0.as_bytes() => {
                out.push(x.0.as_bytes().to_vec());
                i += 1;
            }
            (Some(x), None) => {
                out.push(x.0.as_bytes().to_vec());
                i += 1;
            }
            (_, Some(y)) => {
                out.push(y.0.as_bytes().to_vec());
                j += 1;
            }
            (None, None) => unreachable!(),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(c: &Candidates, prefix: &str, out: &mut Vec<String>) {
        for (k, v) in &c.below {
            let p = format!("{prefix}{}", String::from_utf8_lossy(k));
            out.push(p.clone());
            names(v, &format!("{p}/"), out);
        }
    }

    #[test]
    fn candidates_hold_every_ancestor_once() {
        let mut c = Candidates::default();
        for p in [
            &b"a/b/c"[..],
            b"a/b",
            b"./x//y/",
            b"",
            b"a/../../etc",
            b"o257-9-0/f",
        ] {
            c.insert(p);
        }
        let mut got = Vec::new();
        names(&c, "", &mut got);
        assert_eq!(
            got,
            ["a", "a/b", "a/b/c", "o257-9-0", "o257-9-0/f", "x", "x/y"]
        );
    }

    #[test]
    fn unlike_names() {
        let l = |v: &[(&str, u64)]| {
            v.iter()
                .map(|(s, ino)| (std::ffi::CString::new(*s).unwrap(), (), *ino))
                .collect::<Vec<_>>()
        };
        let got = unlike(
            &l(&[("a", 1), ("c", 3), ("d", 4), ("s", 9), ("z", 26)]),
            &l(&[("b", 2), ("c", 3), ("e", 5), ("s", 256)]),
        );
        assert_eq!(
            got,
            [
                b"a".to_vec(),
                b"b".to_vec(),
                b"d".to_vec(),
                b"e".to_vec(),
                b"s".to_vec(),
                b"z".to_vec()
            ]
        );
    }
}
