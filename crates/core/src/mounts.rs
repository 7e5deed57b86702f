//! The store's mounts: whether anything is mounted inside a directory, from the mount table
//! (`/proc/thread-self/mountinfo`), and the private bind mount of the store's home.

use crate::error::{Context, Error, Result};
use crate::open;
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Whether a mount point lies inside the directory `fd` (itself included), which is on the
/// mount numbered `mnt_id` (statx STATX_MNT_ID): a mount whose parent is that mount and whose
/// mount point is the directory's path or below it. A mount inside a mount inside the
/// directory is below such a mount, so the direct children are enough. `true` whenever it
/// cannot be told: no mount id, a directory whose path the kernel cannot name from this
/// process's root, an unreadable mount table.
pub fn mounted_inside(fd: BorrowedFd<'_>, mnt_id: u64) -> bool {
    if mnt_id == 0 {
        return true;
    }
    let Ok(dir) = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) else {
        return true;
    };
    let Some(table) = read_table() else {
        return true;
    };
    mounted_inside_of(&table, &dir, mnt_id)
}

/// One line of the mount table.
struct Mount<'t> {
    id: Option<u64>,
    parent: Option<u64>,
    /// The device (`major:minor`).
    dev: &'t [u8],
    /// The directory of its filesystem that is mounted (`/` unless a bind of a subdirectory).
    root: &'t [u8],
    point: PathBuf,
}

/// The mount table's lines, in order (a later mount on the same point covers an earlier one).
fn mounts(table: &[u8]) -> impl Iterator<Item = Mount<'_>> {
    table.split(|&c| c == b'\n').filter_map(|line| {
        // Fields: id parent major:minor root mount-point options ...
        let mut f = line.split(|&c| c == b' ');
        let num = |s: &[u8]| std::str::from_utf8(s).ok()?.parse::<u64>().ok();
        let (id, parent, dev, root, point) =
            (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
        Some(Mount {
            id: num(id),
            parent: num(parent),
            dev,
            root,
            point: unescape(point),
        })
    })
}

fn read_table() -> Option<Vec<u8>> {
    std::fs::read("/proc/thread-self/mountinfo")
        .or_else(|_| std::fs::read("/proc/self/mountinfo"))
        .ok()
}

/// [`mounted_inside`] of the directory at `dir` on mount `mnt_id`, given the mount table.
fn mounted_inside_of(table: &[u8], dir: &Path, mnt_id: u64) -> bool {
    let d = dir.as_os_str().as_bytes();
    // d_path of an unreachable or deleted directory: not a path to compare.
    if !d.starts_with(b"/") || d.ends_with(b" (deleted)") {
        return true;
    }
    mounts(table).any(|m| {
        if m.parent != Some(mnt_id) || m.id == Some(mnt_id) {
            return false;
        }
        let p = m.point.as_os_str().as_bytes();
        d == b"/" || p == d || (p.len() > d.len() && p.starts_with(d) && p[d.len()] == b'/')
    })
}

/// Whether the top mount on `point` is a bind of a directory of the same filesystem as the
/// mount below it (what [`make_private`] creates), not a filesystem of its own.
fn is_self_bind_of(table: &[u8], point: &Path) -> bool {
    let all: Vec<Mount<'_>> = mounts(table).collect();
    let Some(top) = all.iter().rev().find(|m| m.point == point) else {
        return false;
    };
    let Some(below) = all.iter().find(|m| m.id.is_some() && m.id == top.parent) else {
        return false;
    };
    top.dev == below.dev && top.root != b"/"
}

/// Make `home` a private mount (bound onto itself unless it already is a mount point), as
/// container engines do, so layer mounts do not propagate. Ok(true) when we bind-mounted.
/// Without the privilege (EPERM) the store works without it.
pub fn make_private(home: &Path) -> Result<bool> {
    let fd = open::open_dir(home)?;
    let parent = open::open_dir(&home.join(".."))?;
    let is_mount = open::mount_id(fd.as_fd(), home)? != open::mount_id(parent.as_fd(), home)?;
    let mut bound = false;
    if is_mount && read_table().is_some_and(|t| is_self_bind_of(&t, home)) {
        // Our own bind mount, left by a driver that crashed: adopt it so cleanup undoes it.
        bound = true;
    } else if !is_mount {
        match mount(
            Some(home),
            home,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ) {
            Ok(()) => bound = true,
            Err(Errno::EPERM) | Err(Errno::EACCES) => return Ok(false),
            Err(e) => return Err(Error::sys(e, "mount", home)),
        }
    }
    match mount(
        None::<&str>,
        home,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    ) {
        Ok(()) => Ok(bound),
        Err(Errno::EPERM) | Err(Errno::EACCES) if !bound => Ok(false),
        Err(e) => {
            if bound {
                let _ = umount2(home, MntFlags::MNT_DETACH);
            }
            Err(Error::sys(e, "mount", home))
        }
    }
}

/// Undo [`make_private`]'s bind mount.
pub fn unmount(home: &Path) -> Result<()> {
    umount2(home, MntFlags::MNT_DETACH).at("umount2", home)
}

/// Undo mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(s: &[u8]) -> PathBuf {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let oct = |c: u8| (b'0'..=b'7').contains(&c);
        if s[i] == b'\\' && i + 3 < s.len() && s[i + 1..i + 4].iter().all(|&c| oct(c)) {
            out.push(((s[i + 1] - b'0') << 6) | ((s[i + 2] - b'0') << 3) | (s[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[u8] = b"\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:40 / /srv rw shared:2 - btrfs /dev/loop0 rw,subvol=/
31 30 0:41 / /srv/store/layers/a\\040b/mnt rw - tmpfs tmpfs rw
32 30 0:42 / /srv/store/layers/ab rw - tmpfs tmpfs rw
33 22 0:43 / /srv/store/layers/c/x rw - tmpfs tmpfs rw
34 31 0:44 / /srv/store/layers/a\\040b/mnt/deeper rw - tmpfs tmpfs rw
";

    #[test]
    fn only_mounts_on_the_same_mount_below_the_directory_count() {
        let at = |d: &str, m| mounted_inside_of(TABLE, Path::new(d), m);
        assert!(
            at("/srv/store/layers/a b", 30),
            "escaped space, child mount"
        );
        assert!(at("/srv/store/layers/a b/mnt", 30), "the directory itself");
        assert!(!at("/srv/store/layers/a", 30), "a name prefix is no parent");
        assert!(at("/srv/store/layers", 30));
        assert!(at("/srv", 30));
        assert!(
            !at("/srv/store/layers/c", 30),
            "mount 33 hangs off another mount"
        );
        assert!(at("/srv/store/layers/a b/mnt", 31), "mount 34 on mount 31");
        assert!(!at("/srv/store/layers/a b/mnt/other", 31));
        assert!(at("/", 22));
        assert!(at("relative", 30), "not a path: cannot tell");
        assert!(at("/srv/gone (deleted)", 30), "deleted: cannot tell");
        assert!(!at("/elsewhere", 30));
    }

    #[test]
    fn a_self_bind_is_a_bind_of_a_subdirectory_of_the_same_device() {
        let table = b"\
22 1 0:21 / / rw - ext4 /dev/vda rw
30 22 0:40 / /srv rw - btrfs /dev/loop0 rw
40 30 0:40 /store /srv/store rw - btrfs /dev/loop0 rw
41 30 0:45 / /srv/other rw - btrfs /dev/loop1 rw
42 30 0:40 / /srv/whole rw - btrfs /dev/loop0 rw
";
        assert!(is_self_bind_of(table, Path::new("/srv/store")));
        assert!(
            !is_self_bind_of(table, Path::new("/srv/other")),
            "another filesystem"
        );
        assert!(
            !is_self_bind_of(table, Path::new("/srv/whole")),
            "its root, not a bind"
        );
        assert!(!is_self_bind_of(table, Path::new("/srv/none")));
    }

    #[test]
    fn unescape_decodes_octal_only() {
        assert_eq!(unescape(b"a\\040b\\011c\\134d"), Path::new("a b\tc\\d"));
        assert_eq!(unescape(b"a\\0"), Path::new("a\\0"));
        assert_eq!(unescape(b"a\\9999"), Path::new("a\\9999"));
    }
}
