//! Idmapped mounts (Linux 5.15+ on btrfs): expose a tree under shifted ids without changing
//! a single inode. A user namespace carries the mapping; `open_tree` clones the tree as a
//! detached mount, `mount_setattr(MOUNT_ATTR_IDMAP)` attaches the namespace, `move_mount`
//! places it on the target.

use crate::error::{Error, Result};
use crate::idmap::{IdMap, IdMapping};
use nix::errno::Errno;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Ranges of a user namespace that show on-disk ids stored under `stored` as the host ids
/// `shown` gives the same container ids: on-disk `stored.to_host(c)` appears as `shown.to_host(c)`.
pub fn compose(stored: &IdMapping, shown: &IdMapping) -> Vec<IdMap> {
    let full = [IdMap {
        container_id: 0,
        host_id: 0,
        size: u32::MAX,
    }];
    let a: &[IdMap] = if stored.is_identity() {
        &full
    } else {
        stored.ranges()
    };
    let b: &[IdMap] = if shown.is_identity() {
        &full
    } else {
        shown.ranges()
    };
    let mut out = Vec::new();
    for x in a {
        for y in b {
            let lo = x.container_id.max(y.container_id) as u64;
            let hi =
                (x.container_id as u64 + x.size as u64).min(y.container_id as u64 + y.size as u64);
            if lo < hi {
                out.push(IdMap {
                    // The namespace side is the id on disk, the host side the id to show.
                    container_id: (x.host_id as u64 + (lo - x.container_id as u64)) as u32,
                    host_id: (y.host_id as u64 + (lo - y.container_id as u64)) as u32,
                    size: (hi - lo) as u32,
                });
            }
        }
    }
    out
}

/// A user namespace whose uid and gid maps are `uids` and `gids` (namespace id -> host id).
pub fn user_namespace(uids: &[IdMap], gids: &[IdMap]) -> Result<OwnedFd> {
    let shown = Path::new("/proc/self/ns/user");
    // Close-on-exec: a process another thread spawns meanwhile must not keep a write end open.
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (ready_r, ready_w) =
        nix::unistd::pipe2(cloexec).map_err(|e| Error::sys(e, "pipe2", shown))?;
    let (done_r, done_w) =
        nix::unistd::pipe2(cloexec).map_err(|e| Error::sys(e, "pipe2", shown))?;
    let (rr, rw, dr, dw) = (
        ready_r.as_raw_fd(),
        ready_w.as_raw_fd(),
        done_r.as_raw_fd(),
        done_w.as_raw_fd(),
    );
    // SAFETY: the child only makes raw syscalls (unshare, write, read, _exit), all
    // async-signal-safe, as required after fork in a multi-threaded process.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: raw syscalls on fds inherited from the parent; _exit never returns.
        unsafe {
            // Keep only our two pipe ends. Our copy of the write end would keep the read below
            // from ever seeing EOF, and so would a copy of another call's: two calls on two
            // threads fork at once, and each child inherits the other's pipes (each then waits
            // for the other to exit: a deadlock, seen in the idmapped-mount tests).
            libc::close(dw);
            let (lo, hi) = (rw.min(dr) as libc::c_uint, rw.max(dr) as libc::c_uint);
            if lo > 3 {
                libc::syscall(
                    libc::SYS_close_range,
                    3 as libc::c_uint,
                    lo - 1,
                    0 as libc::c_uint,
                );
            }
            if hi > lo + 1 {
                libc::syscall(libc::SYS_close_range, lo + 1, hi - 1, 0 as libc::c_uint);
            }
            libc::syscall(
                libc::SYS_close_range,
                hi + 1,
                libc::c_uint::MAX,
                0 as libc::c_uint,
            );
            let ok: u8 = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                1
            } else {
                0
            };
            libc::write(rw, &ok as *const u8 as *const libc::c_void, 1);
            let mut b = 0u8;
            libc::read(dr, &mut b as *mut u8 as *mut libc::c_void, 1);
            libc::_exit(0);
        }
    }
    if pid < 0 {
        return Err(Error::sys(Errno::last(), "fork", shown));
    }
    drop(ready_w);
    drop(done_r);
    let result = (|| {
        let mut ok = [0u8; 1];
        // SAFETY: rr is the open read end of the pipe; ok is a 1-byte buffer.
        let n = unsafe { libc::read(rr, ok.as_mut_ptr() as *mut libc::c_void, 1) };
        if n != 1 || ok[0] != 1 {
            return Err(Error::refused(
                Errno::EPERM,
                "unshare",
                shown,
                "cannot create a user namespace",
            ));
        }
        let write_map = |file: &str, maps: &[IdMap]| -> Result<()> {
            let p = format!("/proc/{pid}/{file}");
            let body: String = maps
                .iter()
                .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
                .collect();
            std::fs::write(&p, body).map_err(|e| Error::io(e, "write", Path::new(&p)))
        };
        write_map("uid_map", uids)?;
        write_map("gid_map", gids)?;
        let p = CString::new(format!("/proc/{pid}/ns/user")).expect("no NUL");
        // SAFETY: p is NUL-terminated.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(Error::sys(
                Errno::last(),
                "open",
                Path::new("/proc/PID/ns/user"),
            ));
        }
        // SAFETY: fd was just opened and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })();
    drop(done_w);
    drop(ready_r);
    let mut status = 0;
    // SAFETY: pid is our child; status is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    result
}

/// A detached clone of the mount tree at `source` whose ids show through `userns`.
fn idmapped_tree(source: BorrowedFd<'_>, userns: BorrowedFd<'_>, shown: &Path) -> Result<OwnedFd> {
    let empty = c"";
    // SAFETY: open_tree on a live fd with an empty path and AT_EMPTY_PATH; returns a new fd.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            source.as_raw_fd(),
            empty.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(Error::sys(Errno::last(), "open_tree", shown));
    }
    // SAFETY: open_tree returned a new fd that nobody else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: attr is a valid struct mount_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(Error::sys(Errno::last(), "mount_setattr", shown));
    }
    Ok(tree)
}

/// Mount the tree at `source` on `target` (an existing directory), showing ids through `userns`.
pub fn mount_idmapped(source: BorrowedFd<'_>, target: &Path, userns: BorrowedFd<'_>) -> Result<()> {
    let tree = idmapped_tree(source, userns, target)?;
    let t = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(Errno::EINVAL, "mountIdmapped", target, "NUL in path"))?;
    // SAFETY: both paths are NUL-terminated; tree is a detached mount fd.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(Error::sys(Errno::last(), "move_mount", target));
    }
    Ok(())
}

/// Whether this kernel and filesystem take idmapped mounts for the tree at `source`:
/// clones it detached and attaches an identity-mapped namespace, never mounting anything.
pub fn supported(source: BorrowedFd<'_>) -> bool {
    let one = [IdMap {
        container_id: 0,
        host_id: 0,
        size: 65536,
    }];
    user_namespace(&one, &one)
        .is_ok_and(|ns| idmapped_tree(source, ns.as_fd(), Path::new("")).is_ok())
}

/// Detach the mount on `target` (MNT_DETACH); EINVAL when nothing is mounted there.
pub fn unmount(target: &Path) -> Result<()> {
    crate::path::check(target, "unmount")?;
    nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| Error::sys(e, "umount2", target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(c: u32, h: u32, s: u32) -> IdMap {
        IdMap {
            container_id: c,
            host_id: h,
            size: s,
        }
    }

    #[test]
    fn composes_stored_and_shown_maps() {
        let identity = IdMapping::default();
        let shifted = IdMapping::new(&[m(0, 100000, 65536)], "t").unwrap();
        // Stored with container ids, shown shifted: on-disk 0 appears as 100000.
        assert_eq!(compose(&identity, &shifted), vec![m(0, 100000, 65536)]);
        // Stored shifted, shown as container ids: on-disk 100000 appears as 0.
        assert_eq!(compose(&shifted, &identity), vec![m(100000, 0, 65536)]);
        // Stored under one shift, shown under another, over the common container range.
        let other = IdMapping::new(&[m(0, 200000, 1000)], "t").unwrap();
        assert_eq!(compose(&shifted, &other), vec![m(100000, 200000, 1000)]);
    }
}
