//! Paths of a send stream, confined to the subvolume being received: a path is relative to
//! its root, has no empty, `.` or `..` component and no NUL; its parent directory is opened
//! beneath the root with no symlink followed and no mount crossed, and its final name is only
//! ever handled by `*at` calls on that directory that do not follow it.

use crate::error::{Error, Result};
use crate::open::open_beneath;
use crate::tar::apply::name::split;
use crate::xattr;
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag, AT_FDCWD};
use nix::sys::stat::{fstat, Mode, SFlag};
use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Longest path one system call resolves (PATH_MAX less the NUL).
const PATH_MAX: usize = 4095;

/// A malformed or hostile send stream, about `shown`.
pub fn bad_stream(shown: &Path, why: impl Into<String>) -> Error {
    Error::bad_layer("receive", shown, why)
}

/// Directories opened beneath the root lately, by path: a stream names the entries of one
/// directory in a run.
const CACHED_DIRS: usize = 4;

/// The subvolume's root and where it is, for errors.
pub struct Root<'a> {
    pub fd: BorrowedFd<'a>,
    pub shown: &'a Path,
    /// Most recently used last.
    dirs: RefCell<Vec<(Vec<u8>, Rc<OwnedFd>)>>,
}

/// The directory a path's final name is in: the root, or one opened beneath it.
pub enum Parent<'a> {
    Root(BorrowedFd<'a>),
    Dir(Rc<OwnedFd>),
}

impl Parent<'_> {
    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Parent::Root(fd) => *fd,
            Parent::Dir(fd) => fd.as_ref().as_fd(),
        }
    }
}

impl<'a> Root<'a> {
    pub fn new(fd: BorrowedFd<'a>, shown: &'a Path) -> Self {
        Root {
            fd,
            shown,
            dirs: RefCell::new(Vec::with_capacity(CACHED_DIRS)),
        }
    }

    /// Forget the directories opened through `rel`: call before it is renamed, replaced by a
    /// rename or removed, since their paths may then name other directories or none.
    pub fn forget(&self, rel: &[u8]) {
        self.dirs.borrow_mut().retain(|(p, _)| {
            !(p.starts_with(rel) && (p.len() == rel.len() || p[rel.len()] == b'/'))
        });
    }

    /// The directory `dir` (not empty) beneath the root, from the cache or opened.
    fn dir(&self, dir: &[u8]) -> Result<Rc<OwnedFd>> {
        let mut dirs = self.dirs.borrow_mut();
        if let Some(i) = dirs.iter().position(|(p, _)| p == dir) {
            let hit = dirs.remove(i);
            let fd = hit.1.clone();
            dirs.push(hit);
            return Ok(fd);
        }
        let shown = self.shown(dir);
        let fd = open_beneath(self.fd, Path::new(OsStr::from_bytes(dir)), &shown)
            .map_err(|e| confinement(e, &shown))?;
        let fd = Rc::new(fd);
        if dirs.len() == CACHED_DIRS {
            dirs.remove(0);
        }
        dirs.push((dir.to_vec(), fd.clone()));
        Ok(fd)
    }

    /// `rel` below the root, for errors.
    pub fn shown(&self, rel: &[u8]) -> PathBuf {
        // Joined as bytes: an absolute path in the stream is shown where it was aimed, inside.
        let mut p = self.shown.as_os_str().as_bytes().to_vec();
        if !rel.is_empty() {
            p.push(b'/');
            p.extend_from_slice(rel);
        }
        PathBuf::from(OsStr::from_bytes(&p))
    }

    /// Check a path of the stream; the empty path is the root itself.
    pub fn check(&self, rel: &[u8]) -> Result<()> {
        let bad = |why: &str| Err(bad_stream(&self.shown(rel), why));
        if rel.is_empty() {
            return Ok(());
        }
        if rel.len() > PATH_MAX {
            return Err(Error::refused(
                Errno::ENAMETOOLONG,
                "openat2",
                &self.shown(rel),
                "path is longer than 4095 bytes",
            ));
        }
        if rel.contains(&0) {
            return bad("path holds a NUL byte");
        }
        if rel[0] == b'/' {
            return bad("absolute path in a send stream");
        }
        for comp in rel.split(|&b| b == b'/') {
            match comp {
                b"" => return bad("empty path component"),
                b"." => return bad("`.` path component"),
                b".." => return bad("`..` path component"),
                _ => {}
            }
        }
        Ok(())
    }

    /// Check `rel`, which names an entry (not the root), and open its parent directory.
    pub fn parent<'p>(&self, rel: &'p [u8]) -> Result<(Parent<'a>, &'p [u8])> {
        self.check(rel)?;
        if rel.is_empty() {
            return Err(bad_stream(
                self.shown,
                "the subvolume root named as an entry",
            ));
        }
        let (dir, name) = split(rel);
        if dir.is_empty() {
            return Ok((Parent::Root(self.fd), name));
        }
        Ok((Parent::Dir(self.dir(dir)?), name))
    }

    /// Open the regular file `rel` for writing (or reading): never a symlink, a device or a
    /// fifo, whose open alone can have effects outside the subvolume.
    pub fn open_file(&self, rel: &[u8], write: bool) -> Result<OwnedFd> {
        let (dir, name) = self.parent(rel)?;
        let shown = self.shown(rel);
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let pinned = openat(dir.fd(), name, flags, Mode::empty())
            .map_err(|e| Error::sys(e, "openat", &shown))?;
        let st = fstat(&pinned).map_err(|e| Error::sys(e, "fstat", &shown))?;
        if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() {
            return Err(bad_stream(
                &shown,
                "file data for what is not a regular file",
            ));
        }
        let how = if write {
            OFlag::O_WRONLY
        } else {
            OFlag::O_RDONLY
        };
        // The magic link reaches exactly the inode pinned above.
        let link = xattr::proc_path(pinned.as_fd(), None);
        openat(
            AT_FDCWD,
            link.as_c_str(),
            how | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys(e, "open", &shown))
    }
}

/// An open beneath the root that failed: a symlink on the way, a way out or a file where a
/// directory must be are the stream's fault.
fn confinement(e: Error, shown: &Path) -> Error {
    match e.errno().map(Errno::from_raw) {
        // A symlink as the last directory of the path is ENOTDIR (O_DIRECTORY | O_NOFOLLOW).
        Some(Errno::ELOOP | Errno::ENOTDIR) => bad_stream(
            shown,
            "a path through a symlink or through what is not a directory",
        ),
        Some(Errno::EXDEV) => bad_stream(shown, "a path that leaves the subvolume"),
        _ => e,
    }
}
