//! The send fast path: BTRFS_IOC_SEND (NO_FILE_DATA, parent = the old tree) writes a v1
//! stream into a pipe on one thread while this thread reads it ([`crate::send`]); every path
//! the stream names (and its ancestors) is a candidate, judged by the walk's own rules ([`super::judge`]), so the
//! list is the walk's list. Send reports every inode whose item, links or xattrs differ, by a
//! path of the receiver's evolving state, which is what the judge needs of its candidates.
//! Unrelated subvolumes fall back to the walk.

use super::judge::{judge, one_tree, Candidates};
use super::walk;
use super::Change;
use super::Options;
use crate::error::{Code, Error, Result};
use crate::ioctl::SEND_FLAG_NO_FILE_DATA;
use crate::open::{self, require_btrfs, require_subvolume};
use crate::send::{send_piped, SendRequest};
use crate::sendstream::{attr, cmd, StreamError, StreamReader};
use crate::subvolume::is_read_only_fd;
use nix::errno::Errno;
use std::io::BufReader;
use std::os::fd::BorrowedFd;
use std::path::Path;

/// Every change between the read-only subvolumes at `old` and `new`, unsorted.
pub(super) fn changes(
    new: BorrowedFd<'_>,
    old: BorrowedFd<'_>,
    shown: &Path,
    options: &Options<'_>,
) -> Result<Vec<Change>> {
    for fd in [new, old] {
        require_btrfs(fd, shown)?;
        require_subvolume(fd, shown)?;
        if !is_read_only_fd(fd, shown)? {
            return Err(Error::refused(
                Errno::EINVAL,
                "BTRFS_IOC_SEND",
                shown,
                "not a read-only subvolume",
            ));
        }
    }
    if !one_tree(new, old, shown, "BTRFS_IOC_SEND")? {
        // Not snapshots of one tree: every inode differs, there is nothing to gain.
        return walk::changes(new, Some(old), shown, options);
    }
    walk::go_on(options.control, shown)?;
    let candidates = run_send(new, open::subvolume_id(old, shown)?, shown)?;
    walk::go_on(options.control, shown)?;
    let shared_before = walk::shared_before(new, old);
    judge(
        new,
        old,
        shown,
        options,
        &candidates,
        Default::default(),
        shared_before,
        false,
    )
}

/// Run BTRFS_IOC_SEND of `new` against subvolume `parent_root` (metadata only) and gather the
/// paths the stream names.
fn run_send(new: BorrowedFd<'_>, parent_root: u64, shown: &Path) -> Result<Candidates> {
    let request = SendRequest {
        parent_root,
        flags: SEND_FLAG_NO_FILE_DATA,
        version: 0,
    };
    send_piped(new, &request, shown, |pipe| read_candidates(pipe, shown))
}

fn read_candidates(pipe: impl std::io::Read, shown: &Path) -> Result<Candidates> {
    let bad = |e: StreamError| match e {
        StreamError::Io(e) => Error::sys(
            Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            "read",
            shown,
        ),
        e => Error {
            code: Code::Internal,
            syscall: "BTRFS_IOC_SEND",
            op: "changes",
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
                    // A directory the stream names (if only by its utimes) changed, maybe in
                    // names alone: a nested subvolume's entry added or removed is not in the
                    // stream, and its ctime may not have moved (the same clock tick): both
                    // sides are read.
                    (attr::PATH | attr::PATH_TO, path) => found.insert_dir(path),
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
    use crate::sendstream::write::StreamWriter;

    /// A directory the stream names only by its utimes (a nested subvolume's entry removed in
    /// the clock tick of its last ctime: nothing else in the stream) has both sides read.
    #[test]
    fn every_path_the_stream_names_has_its_names_read() {
        let mut w = StreamWriter::new(Vec::new(), 1).unwrap();
        w.command(cmd::SUBVOL, &[(attr::PATH, b"layer")]).unwrap();
        w.command(cmd::UTIMES, &[(attr::PATH, b"")]).unwrap();
        w.command(cmd::UTIMES, &[(attr::PATH, b"d/e")]).unwrap();
        w.command(cmd::RENAME, &[(attr::PATH, b"a"), (attr::PATH_TO, b"b")])
            .unwrap();
        w.command(cmd::END, &[]).unwrap();
        let stream = w.into_inner();
        let found = read_candidates(&stream[..], Path::new("layer")).unwrap();
        for p in [&b""[..], b"d/e", b"a", b"b"] {
            assert!(found.reads_names(p), "{:?}", String::from_utf8_lossy(p));
        }
        // An ancestor is a candidate, not a directory known to have changed.
        assert!(!found.reads_names(b"d"));
        assert!(!found.reads_names(b"layer"));
    }
}
