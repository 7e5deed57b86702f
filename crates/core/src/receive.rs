//! Applying the commands of a btrfs send stream to the root of the subvolume being received,
//! as `btrfs receive` does, but confined to that subvolume whatever the stream says (see
//! [`paths`]), with owners mapped to host ids, and clone sources only among the subvolumes the
//! caller offers. The caller stages the subvolume and throws it away on any error.

mod data;
mod paths;

pub use paths::{bad_stream, Root};

use crate::error::{Context, Error, Result};
use crate::idmap::IdMapping;
use crate::sendstream::command::Timespec;
use crate::sendstream::Command;
use crate::tar::apply::attrs::chmod_at;
use crate::xattr::{self, At};
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, futimens, mkdirat, mknodat, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

/// Permission bits including setuid, setgid and sticky.
const MODE_BITS: u64 = 0o7777;

/// Finds the root of a clone source by the UUID and ctransid the stream gives (a received
/// UUID or a subvolume's own); None when no subvolume the caller offers matches.
pub type FindSource<'a> = dyn FnMut(&[u8; 16], u64) -> Result<Option<OwnedFd>> + 'a;

/// Applies commands to one subvolume root.
pub struct Receiver<'a> {
    root: Root<'a>,
    /// The sender's UUID of the subvolume received: clones from it come from `root`.
    uuid: [u8; 16],
    uids: &'a IdMapping,
    gids: &'a IdMapping,
    find_source: &'a mut FindSource<'a>,
    sources: HashMap<[u8; 16], OwnedFd>,
    /// The file last opened for writing: writes come in runs to one file.
    file: RefCell<Option<(Vec<u8>, Rc<OwnedFd>)>>,
}

impl<'a> Receiver<'a> {
    pub fn new(
        root: Root<'a>,
        uuid: [u8; 16],
        uids: &'a IdMapping,
        gids: &'a IdMapping,
        find_source: &'a mut FindSource<'a>,
    ) -> Self {
        Receiver {
            root,
            uuid,
            uids,
            gids,
            find_source,
            sources: HashMap::new(),
            file: RefCell::new(None),
        }
    }

    /// Apply one command after the stream's first (SUBVOL or SNAPSHOT, which the caller
    /// handles) and before its END.
    pub fn apply(&mut self, c: &Command<'_>) -> Result<()> {
        let root = &self.root;
        match *c {
            Command::Subvol { .. } | Command::Snapshot { .. } => {
                Err(bad_stream(root.shown, "a second subvolume in one stream"))
            }
            Command::End => Err(Error::internal("END is the caller's")),
            Command::Mkfile { path } => {
                let (dir, name) = root.parent(path)?;
                let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW;
                openat(
                    dir.fd(),
                    name,
                    flags | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map(drop)
                .at("openat", &root.shown(path))
            }
            Command::Mkdir { path } => {
                let (dir, name) = root.parent(path)?;
                mkdirat(dir.fd(), name, Mode::from_bits_truncate(0o700))
                    .at("mkdirat", &root.shown(path))
            }
            Command::Mknod { path, mode, rdev } => {
                let kind = SFlag::from_bits_truncate(mode as libc::mode_t & libc::S_IFMT);
                let allowed = [
                    SFlag::S_IFCHR,
                    SFlag::S_IFBLK,
                    SFlag::S_IFIFO,
                    SFlag::S_IFSOCK,
                ];
                if !allowed.contains(&kind) || mode > u64::from(u32::MAX) {
                    return Err(bad_stream(
                        &root.shown(path),
                        format!("mknod of mode {mode:#o}"),
                    ));
                }
                self.make_node(path, kind, rdev)
            }
            Command::Mkfifo { path } => self.make_node(path, SFlag::S_IFIFO, 0),
            Command::Mksock { path } => self.make_node(path, SFlag::S_IFSOCK, 0),
            Command::Symlink { path, target } => {
                let (dir, name) = root.parent(path)?;
                if target.contains(&0) {
                    return Err(bad_stream(
                        &root.shown(path),
                        "symlink target holds a NUL byte",
                    ));
                }
                symlinkat(target, dir.fd(), name).at("symlinkat", &root.shown(path))
            }
            Command::Rename { from, to } => {
                self.file.take();
                root.forget(from);
                root.forget(to);
                let (old_dir, old) = root.parent(from)?;
                let (new_dir, new) = root.parent(to)?;
                nix::fcntl::renameat(old_dir.fd(), old, new_dir.fd(), new)
                    .at("renameat", &root.shown(from))
            }
            Command::Link { path, target } => {
                let (old_dir, old) = root.parent(target)?;
                let (new_dir, new) = root.parent(path)?;
                linkat(old_dir.fd(), old, new_dir.fd(), new, AtFlags::empty())
                    .at("linkat", &root.shown(path))
            }
            Command::Unlink { path } => {
                self.file.take();
                let (dir, name) = root.parent(path)?;
                unlinkat(dir.fd(), name, UnlinkatFlags::NoRemoveDir)
                    .at("unlinkat", &root.shown(path))
            }
            Command::Rmdir { path } => {
                self.file.take();
                root.forget(path);
                let (dir, name) = root.parent(path)?;
                unlinkat(dir.fd(), name, UnlinkatFlags::RemoveDir).at("unlinkat", &root.shown(path))
            }
            Command::SetXattr { path, name, data } => self.set_xattr(path, name, data),
            Command::RemoveXattr { path, name } => self.remove_xattr(path, name),
            Command::Write { path, offset, data } => {
                data::write_at(self.file(path)?.as_fd(), offset, data, &root.shown(path))
            }
            Command::Clone {
                path,
                offset,
                len,
                clone_uuid,
                clone_ctransid,
                clone_path,
                clone_offset,
            } => {
                let source = self.clone_source(&clone_uuid, clone_ctransid, clone_path)?;
                let shown = self.root.shown(path);
                let fd = self.file(path)?;
                data::clone_range(
                    fd.as_fd(),
                    offset,
                    len,
                    source.as_fd(),
                    clone_offset,
                    &shown,
                )
            }
            Command::Truncate { path, size } => {
                data::truncate(self.file(path)?.as_fd(), size, &root.shown(path))
            }
            Command::Chmod { path, mode } => {
                let mode = (mode & MODE_BITS) as u32;
                if path.is_empty() {
                    return fchmod(root.fd, Mode::from_bits_truncate(mode))
                        .at("fchmod", root.shown);
                }
                let (dir, name) = root.parent(path)?;
                chmod_at(dir.fd(), name, mode, &root.shown(path))
            }
            Command::Chown { path, uid, gid } => {
                let shown = root.shown(path);
                let uid = Some(Uid::from_raw(host_id(uid, self.uids, &shown)?));
                let gid = Some(Gid::from_raw(host_id(gid, self.gids, &shown)?));
                if path.is_empty() {
                    return fchown(root.fd, uid, gid).at("fchown", root.shown);
                }
                let (dir, name) = root.parent(path)?;
                fchownat(dir.fd(), name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .at("fchownat", &shown)
            }
            Command::Utimes {
                path, atime, mtime, ..
            } => {
                let shown = root.shown(path);
                let (atime, mtime) = (time(atime, &shown)?, time(mtime, &shown)?);
                if path.is_empty() {
                    return futimens(root.fd, &atime, &mtime).at("futimens", root.shown);
                }
                let (dir, name) = root.parent(path)?;
                utimensat(
                    dir.fd(),
                    name,
                    &atime,
                    &mtime,
                    UtimensatFlags::NoFollowSymlink,
                )
                .at("utimensat", &shown)
            }
            // Sent with NO_FILE_DATA in place of data: nothing to write, as for btrfs receive.
            Command::UpdateExtent { path, .. } => root.check(path),
            Command::Fallocate {
                path,
                mode,
                offset,
                len,
            } => {
                let fd = self.file(path)?;
                data::allocate(fd.as_fd(), mode, offset, len, &root.shown(path))
            }
            // btrfs receive ignores file attributes (BTRFS_INODE_* flags are not FS_*_FL).
            Command::Fileattr { path, .. } => root.check(path),
            Command::EncodedWrite { path, ref extent } => {
                data::encoded_write(self.file(path)?.as_fd(), extent, &root.shown(path))
            }
            Command::EnableVerity { path } => Err(bad_stream(
                &root.shown(path),
                "fs-verity (send stream v3) is not supported",
            )),
        }
    }

    fn make_node(&self, path: &[u8], kind: SFlag, rdev: u64) -> Result<()> {
        let (dir, name) = self.root.parent(path)?;
        mknodat(
            dir.fd(),
            name,
            kind,
            Mode::from_bits_truncate(0o600),
            rdev as libc::dev_t,
        )
        .at("mknodat", &self.root.shown(path))
    }

    /// The regular file `path`, open for writing (the last one is kept open).
    fn file(&self, path: &[u8]) -> Result<Rc<OwnedFd>> {
        let mut file = self.file.borrow_mut();
        match &*file {
            Some((p, fd)) if p == path => Ok(fd.clone()),
            _ => {
                *file = None;
                let fd = Rc::new(self.root.open_file(path, true)?);
                *file = Some((path.to_vec(), fd.clone()));
                Ok(fd)
            }
        }
    }

    /// The file `path` of clone source `uuid`, open for reading, confined to that subvolume.
    fn clone_source(&mut self, uuid: &[u8; 16], ctransid: u64, path: &[u8]) -> Result<OwnedFd> {
        if *uuid == self.uuid {
            return self.root.open_file(path, false);
        }
        if !self.sources.contains_key(uuid) {
            let Some(fd) = (self.find_source)(uuid, ctransid)? else {
                return Err(bad_stream(
                    &self.root.shown(path),
                    format!(
                        "clone source {} is not a layer of this store",
                        crate::subvolume::uuid_string(uuid)
                    ),
                ));
            };
            self.sources.insert(*uuid, fd);
        }
        let source = self.sources[uuid].as_fd();
        let shown = std::path::PathBuf::from(crate::subvolume::uuid_string(uuid));
        Root::new(source, &shown).open_file(path, false)
    }

    fn set_xattr(&mut self, path: &[u8], name: &[u8], data: &[u8]) -> Result<()> {
        // The driver's own record is never taken from a stream: a layer sent by another store
        // carries that store's, and a forged one would be believed.
        if crate::driver::is_record_xattr(name) {
            return self.root.check(path);
        }
        let shown = self.root.shown(path);
        let key = xattr_name(name, &shown)?;
        let mut value = data.to_vec();
        if xattr::is_acl(name) {
            xattr::shift_acl_ids(
                &mut value,
                |id| host_id(u64::from(id), self.uids, &shown),
                |id| host_id(u64::from(id), self.gids, &shown),
            )?;
        } else if name == b"security.capability" {
            xattr::shift_capability_rootid(&mut value, |id| {
                host_id(u64::from(id), self.uids, &shown)
            })?;
        }
        self.with_xattrs(path, |at| xattr::set(at, &key, &value, &shown))
    }

    fn remove_xattr(&mut self, path: &[u8], name: &[u8]) -> Result<()> {
        if crate::driver::is_record_xattr(name) {
            return self.root.check(path);
        }
        let shown = self.root.shown(path);
        let key = xattr_name(name, &shown)?;
        self.with_xattrs(path, |at| xattr::remove(at, &key, &shown))
    }

    /// Run `f` on the xattrs of `path` (the root when empty), never following its final name.
    fn with_xattrs(&self, path: &[u8], f: impl FnOnce(At<'_>) -> Result<()>) -> Result<()> {
        if path.is_empty() {
            return f(At::Inode(&xattr::proc_path(self.root.fd, None)));
        }
        let (dir, name) = self.root.parent(path)?;
        let name =
            CString::new(name).map_err(|_| bad_stream(&self.root.shown(path), "NUL in name"))?;
        f(At::Entry(&xattr::proc_path(dir.fd(), Some(&name))))
    }
}

fn xattr_name(name: &[u8], shown: &std::path::Path) -> Result<CString> {
    if name.is_empty() {
        return Err(bad_stream(shown, "empty xattr name"));
    }
    CString::new(name).map_err(|_| bad_stream(shown, "xattr name holds a NUL byte"))
}

/// A stream id (the sender's host id) as a host id of this store.
fn host_id(id: u64, map: &IdMapping, shown: &std::path::Path) -> Result<u32> {
    map.layer_to_host(id, "receive", shown)
}

fn time(t: Timespec, shown: &std::path::Path) -> Result<TimeSpec> {
    let sec = i64::try_from(t.sec).map_err(|_| bad_stream(shown, "time out of range"))?;
    if t.nsec >= 1_000_000_000 {
        return Err(bad_stream(shown, "nanoseconds out of range"));
    }
    Ok(TimeSpec::new(sec, i64::from(t.nsec)))
}
