//! The send fast path: BTRFS_IOC_SEND (NO_FILE_DATA, parent = the old tree) writes a v1
//! stream into a pipe on one thread while this thread reads it; the paths it names are then
//! judged by the walk's own rules ([`Walk::judge`]), so the list is the walk's list.
//!
//! Why nothing is missed: send reports every inode whose item, links or xattrs differ, by a
//! path of the receiver's evolving state. Every such path and its ancestors is a candidate.
//! - Below a directory that is the same inode (number and generation) on both sides, only
//!   candidates are judged: an entry that differs there has its own command at its path. The
//!   names one side lacks are also read from both directories when the directory's ctime
//!   moved, since send never mentions nested subvolumes.
//! - Below anything else (an added directory, a type change, another inode at the same path)
//!   the walk compares the whole subtree.
//! - A changed inode with several names is named by one of them: INO_PATHS gives the others.
//!
//! Paths of the stream that exist in neither tree (orphan names like `o257-9-0`, states in
//! the middle of a rename) judge to nothing. Unrelated subvolumes fall back to the walk.

use super::entry::{c_name, join, Entry, TreeRoot};
use super::inode;
use super::send_stream::{attr, cmd, StreamError, StreamReader};
use super::walk::{self, open_child, read_names, reopen, Descend, Found, Walk};
use super::Change;
use super::ContainerIds;
use crate::error::{Code, Context, Error, Result};
use crate::ioctl::{self, SendArgs, SEND_FLAG_NO_FILE_DATA};
use crate::open::{self, require_btrfs, require_subvolume};
use crate::subvolume::is_read_only_fd;
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::BufReader;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// Every change between the read-only subvolumes at `old` and `new`, unsorted.
pub(super) fn changes(
    new: BorrowedFd<'_>,
    old: BorrowedFd<'_>,
    shown: &Path,
    ids: Option<&ContainerIds>,
) -> Result<Vec<Change>> {
    for fd in [new, old] {
        require_btrfs(fd, shown)?;
        require_subvolume(fd, shown)?;
        if !is_read_only_fd(fd, shown)? {
            return Err(Error::invalid(
                Errno::EINVAL,
                "BTRFS_IOC_SEND",
                shown,
                "not a read-only subvolume",
            ));
        }
    }
    if open::fsid(new, shown)? != open::fsid(old, shown)? {
        return Err(Error::invalid(
            Errno::EXDEV,
            "BTRFS_IOC_SEND",
            shown,
            "the two trees are on different filesystems",
        ));
    }
    let (new_ids, old_ids) =
        ids.map_or((None, None), |i| (Some(i.new.clone()), Some(i.old.clone())));
    let (new_root, new_entry) = TreeRoot::of(new, shown, new_ids)?;
    let (old_root, old_entry) = TreeRoot::of(old, shown, old_ids)?;
    if inode::generation(new, shown)? != inode::generation(old, shown)? {
        // Not a snapshot of one another: every inode differs, there is nothing to gain.
        return walk::changes(new, Some(old), shown, ids);
    }
    let candidates = run_send(new, open::subvolume_id(old, shown)?, shown)?;

    let walk = Walk {
        old_root,
        new_root,
        shown: shown.to_path_buf(),
        track_links: true,
    };
    let mut judge = Judge {
        walk: &walk,
        found: Found::default(),
    };
    let (mut old_dir, mut new_dir) = (reopen(old, shown)?, reopen(new, shown)?);
    let roots = (&mut old_dir, &mut new_dir, &old_entry, &new_entry);
    judge.same_dir(&candidates, roots, Path::new(""), true)?;

    // Other names of changed inodes with several: judged, but nothing new is explored.
    let mut asked = HashSet::new();
    loop {
        let inos: Vec<u64> = std::mem::take(&mut judge.found.linked)
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
                None => return walk::changes(new, Some(old), shown, ids),
            }
        }
        let roots = (&mut old_dir, &mut new_dir, &old_entry, &new_entry);
        judge.same_dir(&more, roots, Path::new(""), false)?;
    }
    Ok(judge.found.changes)
}

/// Candidate paths as a tree of names, so every ancestor is a candidate too.
#[derive(Default)]
struct Candidates {
    below: BTreeMap<Vec<u8>, Candidates>,
}

static NO_CANDIDATES: Candidates = Candidates {
    below: BTreeMap::new(),
};

impl Candidates {
    fn insert(&mut self, path: &[u8]) {
        let names = || {
            path.split(|&b| b == b'/')
                .filter(|n| !n.is_empty() && *n != b".")
        };
        if names().any(|n| n == b"..") {
            return; // never from the kernel; and never a way out of the tree
        }
        let mut node = self;
        for name in names() {
            node = node.below.entry(name.to_vec()).or_default();
        }
    }
}

struct Judge<'w> {
    walk: &'w Walk,
    found: Found,
}

impl Judge<'_> {
    /// Judge the candidates below a directory that is the same inode in both trees; with
    /// `explore`, also the names one side lacks and every subtree that needs a full walk.
    fn same_dir(
        &mut self,
        candidates: &Candidates,
        (old, new, old_entry, new_entry): (&mut Dir, &mut Dir, &Entry, &Entry),
        prefix: &Path,
        explore: bool,
    ) -> Result<()> {
        let mut names: Vec<Vec<u8>> = candidates.below.keys().cloned().collect();
        if explore && old_entry.ctime != new_entry.ctime {
            let readdir = |d: &mut Dir| {
                read_names(d).map_err(|e| Error::sys(e, "readdir", &self.walk.shown(prefix)))
            };
            let (a, b) = (readdir(old)?, readdir(new)?);
            names.extend(one_sided(&a, &b));
            names.sort_unstable();
            names.dedup();
        }
        let (od, nd) = (old.as_fd(), new.as_fd());
        for name in names {
            let Some(name_c) = c_name(&name) else {
                continue;
            };
            let below = candidates.below.get(&name).unwrap_or(&NO_CANDIDATES);
            let o = self.walk.lookup(od, &name_c, &self.walk.old_root, prefix)?;
            let n = self.walk.lookup(nd, &name_c, &self.walk.new_root, prefix)?;
            let (kind, descend) = self.walk.judge(
                (Some(od), Some(nd)),
                &name_c,
                o.as_ref(),
                n.as_ref(),
                prefix,
            )?;
            let rel = join(prefix, &name_c);
            if let Some(kind) = kind {
                self.found.changes.push(Change {
                    path: rel.clone(),
                    kind,
                });
            }
            if let Some(n) = n.filter(|n| n.is_linked()) {
                self.found.linked.push(n.ino);
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
                        self.same_dir(
                            below,
                            (&mut old_child, &mut new_child, &o, &n),
                            &rel,
                            explore,
                        )?;
                    } else if explore {
                        let found = self.walk.dir(Some(old_child), Some(new_child), &rel)?;
                        self.found.absorb(found);
                    }
                }
                Descend::NewOnly if explore => {
                    let found =
                        self.walk
                            .dir(None, Some(open_child(nd, &name_c, &shown())?), &rel)?;
                    self.found.absorb(found);
                }
                Descend::OldOnly if explore => {
                    let found =
                        self.walk
                            .dir(Some(open_child(od, &name_c, &shown())?), None, &rel)?;
                    self.found.absorb(found);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Names in exactly one of two sorted name lists.
fn one_sided<T>(a: &[(std::ffi::CString, T)], b: &[(std::ffi::CString, T)]) -> Vec<Vec<u8>> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.0 == y.0 => {
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

/// Run BTRFS_IOC_SEND of `new` against subvolume `parent_root` into a pipe read here, and
/// gather the paths the stream names.
fn run_send(new: BorrowedFd<'_>, parent_root: u64, shown: &Path) -> Result<Candidates> {
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC).at("pipe2", shown)?;
    // A larger pipe means fewer wakeups; the default size works too.
    let _ = fcntl(&write_end, FcntlArg::F_SETPIPE_SZ(1 << 20));
    std::thread::scope(|s| {
        let sender = s.spawn(move || send_into(new, parent_root, write_end, shown));
        let read = read_candidates(File::from(read_end), shown);
        let sent = sender
            .join()
            .unwrap_or_else(|_| Err(Error::internal("the send thread panicked")));
        // The ioctl's own error (EPERM, ...) explains a short stream better than the parser.
        sent?;
        read
    })
}

fn send_into(new: BorrowedFd<'_>, parent_root: u64, pipe: OwnedFd, shown: &Path) -> Result<()> {
    let args = SendArgs {
        send_fd: i64::from(pipe.as_raw_fd()),
        parent_root,
        flags: SEND_FLAG_NO_FILE_DATA,
        ..Default::default()
    };
    // SAFETY: args is a zeroed btrfs_ioctl_send_args with no clone sources and a live pipe fd.
    let r = unsafe { ioctl::send(new.as_raw_fd(), &args) };
    drop(pipe); // the reader's end of stream
    r.map(drop).at("BTRFS_IOC_SEND", shown)
}

fn read_candidates(pipe: File, shown: &Path) -> Result<Candidates> {
    let bad = |e: StreamError| match e {
        StreamError::Io(e) => Error::sys(
            Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            "read",
            shown,
        ),
        e => Error {
            code: Code::Internal,
            syscall: "BTRFS_IOC_SEND",
            path: Some(shown.to_path_buf()),
            message: e.to_string(),
        },
    };
    let mut stream = StreamReader::new(BufReader::with_capacity(1 << 16, pipe)).map_err(bad)?;
    let mut found = Candidates::default();
    let mut ended = false;
    let mut gather = || -> std::result::Result<(), StreamError> {
        while let Some(command) = stream.next_command()? {
            match command.cmd {
                cmd::SUBVOL | cmd::SNAPSHOT => continue, // their path is the subvolume's name
                cmd::END => ended = true,
                _ => {}
            }
            for a in command.attrs() {
                match a? {
                    (attr::PATH | attr::PATH_TO, path) => found.insert(path),
                    // For SYMLINK this is the link's target text, not a path of the tree.
                    (attr::PATH_LINK, path) if command.cmd == cmd::LINK => found.insert(path),
                    _ => {}
                }
            }
        }
        Ok(())
    };
    match gather() {
        Err(e) => {
            stream.drain(); // let the ioctl finish writing before its thread is joined
            Err(bad(e))
        }
        Ok(()) if !ended => Err(bad(StreamError::Truncated)),
        Ok(()) => Ok(found),
    }
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
    fn one_sided_names() {
        let l = |v: &[&str]| {
            v.iter()
                .map(|s| (std::ffi::CString::new(*s).unwrap(), ()))
                .collect::<Vec<_>>()
        };
        let got = one_sided(&l(&["a", "c", "d", "z"]), &l(&["b", "c", "e"]));
        assert_eq!(
            got,
            [
                b"a".to_vec(),
                b"b".to_vec(),
                b"d".to_vec(),
                b"e".to_vec(),
                b"z".to_vec()
            ]
        );
    }
}
