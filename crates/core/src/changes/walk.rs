//! The tree walk: two trees compared directory pair by directory pair, entries merged by
//! name, directories the unit of parallelism (rayon). Directories are opened fd-relatively
//! with O_NOFOLLOW, never by path.

use super::entry::{
    attributes_differ, capability, capability_may_differ, join, lookup, Entry, TreeRoot,
};
use super::{Change, ChangeKind, Options};
use crate::control::Control;
use crate::dirent::{Dir, Kind};
use crate::error::{Context, Error, Result};
use crate::subvolume::SubvolumeInfo;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use rayon::prelude::*;
use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// How far below an entry the comparison goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Descend {
    No,
    /// A directory on both sides: compare their entries.
    Both,
    /// Only the new side has a directory to look into: everything in it is added.
    NewOnly,
    /// Only the old side does (the new one is a boundary): everything in it is deleted.
    OldOnly,
}

/// What a walk found: the changes in walk order, and (send mode) the inode numbers of new
/// non-directories that have other names.
#[derive(Default)]
pub(super) struct Found {
    pub changes: Vec<Change>,
    pub linked: Vec<u64>,
}

impl Found {
    pub fn absorb(&mut self, other: Found) {
        self.changes.extend(other.changes);
        self.linked.extend(other.linked);
    }
}

/// The two trees and how to report on them.
pub(super) struct Walk<'a> {
    pub old_root: TreeRoot,
    pub new_root: TreeRoot,
    pub shown: PathBuf,
    /// Send mode: note the non-directories with other names, whose other names change too.
    pub track_links: bool,
    /// Entries with the same inode, ctime and birth time on both sides, the ctime before this,
    /// are one unchanged inode item (see [`shared_before`]); None: never assume so.
    pub shared_before: Option<(i64, u32)>,
    /// Inodes both trees changed (when a fast path knows): their capabilities are always read.
    pub changed_both: HashSet<u64>,
    /// Abort: stop with ABORT_ERR (looked at before every directory).
    pub control: Control<'a>,
}

/// When the later of the trees at `new` and `old` was made (GET_SUBVOL_INFO's otime): before
/// it, a ctime on both sides is history they share; None when either cannot tell.
pub(super) fn shared_before(new: BorrowedFd<'_>, old: BorrowedFd<'_>) -> Option<(i64, u32)> {
    let info = |fd| crate::subvolume::info_fd(fd, Path::new("")).ok();
    Some(made_later(&info(new)?, &info(old)?))
}

/// [`shared_before`] of two trees' GET_SUBVOL_INFO.
pub(super) fn made_later(a: &SubvolumeInfo, b: &SubvolumeInfo) -> (i64, u32) {
    let made = |i: &SubvolumeInfo| (i.otime.sec as i64, i.otime.nsec);
    made(a).max(made(b))
}

/// Every change between the tree at `old` (None: empty) and the tree at `new`, unsorted.
pub(super) fn changes(
    new: BorrowedFd<'_>,
    old: Option<BorrowedFd<'_>>,
    shown: &Path,
    options: &Options<'_>,
) -> Result<Vec<Change>> {
    let (new_ids, old_ids) = options
        .ids
        .map_or((None, None), |i| (Some(i.new.clone()), Some(i.old.clone())));
    let (new_root, _) = TreeRoot::of(new, shown, new_ids)?;
    let old_root = match old {
        Some(fd) => TreeRoot::of(fd, shown, old_ids)?.0,
        None => new_root.clone(),
    };
    let walk = Walk {
        old_root,
        new_root,
        shown: shown.to_path_buf(),
        track_links: false,
        shared_before: old.and_then(|o| shared_before(new, o)),
        changed_both: HashSet::new(),
        control: options.control,
    };
    let old = old.map(|fd| reopen(fd, shown)).transpose()?;
    let new = reopen(new, shown)?;
    Ok(walk.dir(old, Some(new), Path::new(""))?.changes)
}

/// A directory stream of its own on the directory open at `fd`.
pub(super) fn reopen(fd: BorrowedFd<'_>, shown: &Path) -> Result<Dir> {
    open_child(fd, c".", shown)
}

/// Open directory `name` of `dir` without following a symlink in its place.
pub(super) fn open_child(dir: BorrowedFd<'_>, name: &CStr, shown: &Path) -> Result<Dir> {
    let fd = crate::open::openat_noatime(dir, name, DIR_FLAGS).at("openat", shown)?;
    Ok(Dir::from_fd(fd))
}

/// The names in `dir` but `.` and `..`, sorted by bytes, with their types when readdir tells,
/// and their inode numbers.
pub(super) fn read_names(
    dir: &mut Dir,
) -> std::result::Result<Vec<(CString, Option<Kind>, u64)>, Errno> {
    let mut names: Vec<_> = dir
        .entries()?
        .into_iter()
        .map(|e| (e.name, e.kind, e.ino))
        .collect();
    names.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(names)
}

/// ABORT_ERR for a comparison stopped at `shown`, once the caller aborts.
pub(super) fn go_on(control: Control<'_>, shown: &Path) -> Result<()> {
    control.check("changes", shown)
}

impl Walk<'_> {
    pub fn shown(&self, rel: &Path) -> PathBuf {
        self.shown.join(rel)
    }

    /// ABORT_ERR when the caller asked to stop.
    pub fn go_on(&self, prefix: &Path) -> Result<()> {
        go_on(self.control, &self.shown(prefix))
    }

    /// Entry `name` of `dir` in the tree whose root is `root`.
    pub fn lookup(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        root: &TreeRoot,
        prefix: &Path,
    ) -> Result<Option<Entry>> {
        lookup(dir, name, root)
            .map_err(|e| Error::sys(e, "statx", &self.shown(&join(prefix, name))))
    }

    /// What the walk reports for `name`, present as `old` and `new` in the directory pair,
    /// and how far it goes below.
    pub fn judge(
        &self,
        dirs: (Option<BorrowedFd<'_>>, Option<BorrowedFd<'_>>),
        name: &CStr,
        old: Option<&Entry>,
        new: Option<&Entry>,
        prefix: &Path,
    ) -> Result<(Option<ChangeKind>, Descend)> {
        Ok(match (old, new) {
            (None, None) => (None, Descend::No),
            (None, Some(n)) => (
                Some(ChangeKind::Add),
                if n.descends() {
                    Descend::NewOnly
                } else {
                    Descend::No
                },
            ),
            (Some(_), None) => (Some(ChangeKind::Delete), Descend::No),
            (Some(o), Some(n)) => {
                let may_differ = capability_may_differ(o, n, self.shared_before)
                    || self.changed_both.contains(&n.ino);
                let modified = attributes_differ(o, n)
                    || (may_differ
                        && self.capability(dirs.0, name, prefix)?
                            != self.capability(dirs.1, name, prefix)?);
                let descend = match (o.is_dir(), n.is_dir(), o.descends(), n.descends()) {
                    (_, false, _, _) => Descend::No,
                    (_, true, true, true) => Descend::Both,
                    (_, true, false, true) => Descend::NewOnly,
                    (true, true, true, false) => Descend::OldOnly,
                    _ => Descend::No,
                };
                (modified.then_some(ChangeKind::Modify), descend)
            }
        })
    }

    fn capability(
        &self,
        dir: Option<BorrowedFd<'_>>,
        name: &CStr,
        prefix: &Path,
    ) -> Result<Option<Vec<u8>>> {
        let Some(dir) = dir else { return Ok(None) };
        capability(dir, name)
            .map_err(|e| Error::sys(e, "getxattr", &self.shown(&join(prefix, name))))
    }

    /// Compare the directory pair at `prefix` (None: that side has no entries here) and
    /// everything below it; the result is in walk order (sorted, parents first).
    pub fn dir(&self, mut old: Option<Dir>, mut new: Option<Dir>, prefix: &Path) -> Result<Found> {
        self.go_on(prefix)?;
        let readdir = |d: &mut Option<Dir>| match d {
            Some(d) => read_names(d).map_err(|e| Error::sys(e, "readdir", &self.shown(prefix))),
            None => Ok(Vec::new()),
        };
        let (old_names, new_names) = (readdir(&mut old)?, readdir(&mut new)?);
        let od = old.as_ref().map(|d| d.as_fd());
        let nd = new.as_ref().map(|d| d.as_fd());

        let mut found = Found::default();
        // Changes of this directory's entries, each followed by its subtree (children[k]).
        let mut slots: Vec<(Option<Change>, Option<usize>)> = Vec::new();
        let mut children: Vec<(&CStr, Descend)> = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < old_names.len() || j < new_names.len() {
            let order = match (old_names.get(i), new_names.get(j)) {
                (Some(a), Some(b)) => a.0.as_bytes().cmp(b.0.as_bytes()),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            let (name, o, n) = match order {
                std::cmp::Ordering::Less => {
                    i += 1;
                    let path = join(prefix, &old_names[i - 1].0);
                    slots.push((
                        Some(Change {
                            path,
                            kind: ChangeKind::Delete,
                        }),
                        None,
                    ));
                    continue;
                }
                std::cmp::Ordering::Greater => {
                    let (name, kind, _) = &new_names[j];
                    j += 1;
                    let plain = matches!(kind, Some(t) if *t != Kind::Dir);
                    if plain && !self.track_links {
                        // An added non-directory: nothing below it, no need to stat it.
                        let path = join(prefix, name);
                        slots.push((
                            Some(Change {
                                path,
                                kind: ChangeKind::Add,
                            }),
                            None,
                        ));
                        continue;
                    }
                    (
                        name.as_c_str(),
                        None,
                        self.lookup(nd.unwrap(), name, &self.new_root, prefix)?,
                    )
                }
                std::cmp::Ordering::Equal => {
                    let name = old_names[i].0.as_c_str();
                    i += 1;
                    j += 1;
                    let o = self.lookup(od.unwrap(), name, &self.old_root, prefix)?;
                    (
                        name,
                        o,
                        self.lookup(nd.unwrap(), name, &self.new_root, prefix)?,
                    )
                }
            };
            if self.track_links && n.is_some_and(|n| n.is_linked()) {
                found.linked.push(n.unwrap().ino);
            }
            let (kind, descend) = self.judge((od, nd), name, o.as_ref(), n.as_ref(), prefix)?;
            let change = kind.map(|kind| Change {
                path: join(prefix, name),
                kind,
            });
            let below = (descend != Descend::No).then(|| {
                children.push((name, descend));
                children.len() - 1
            });
            slots.push((change, below));
        }

        let mut below: Vec<Found> = children
            .par_iter()
            .map(|&(name, descend)| {
                let rel = join(prefix, name);
                let open = |side: Option<BorrowedFd<'_>>, wanted: bool| match (side, wanted) {
                    (Some(dir), true) => open_child(dir, name, &self.shown(&rel)).map(Some),
                    _ => Ok(None),
                };
                let o = open(od, matches!(descend, Descend::Both | Descend::OldOnly))?;
                let n = open(nd, matches!(descend, Descend::Both | Descend::NewOnly))?;
                self.dir(o, n, &rel)
            })
            .collect::<Result<_>>()?;
        for (change, k) in slots {
            found.changes.extend(change);
            if let Some(k) = k {
                found.absorb(std::mem::take(&mut below[k]));
            }
        }
        Ok(found)
    }
}
