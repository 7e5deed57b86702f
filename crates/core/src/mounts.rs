//! Whether anything is mounted inside a directory, from the mount table
//! (`/proc/thread-self/mountinfo`).

use std::ffi::OsStr;
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
    let table = std::fs::read("/proc/thread-self/mountinfo")
        .or_else(|_| std::fs::read("/proc/self/mountinfo"));
    let Ok(table) = table else {
        return true;
    };
    mounted_inside_of(&table, &dir, mnt_id)
}

/// [`mounted_inside`] of the directory at `dir` on mount `mnt_id`, given the mount table.
fn mounted_inside_of(table: &[u8], dir: &Path, mnt_id: u64) -> bool {
    let d = dir.as_os_str().as_bytes();
    // d_path of an unreachable or deleted directory: not a path to compare.
    if !d.starts_with(b"/") || d.ends_with(b" (deleted)") {
        return true;
    }
    for line in table.split(|&c| c == b'\n') {
        // Fields: id parent major:minor root mount-point options ...
        let mut f = line.split(|&c| c == b' ');
        let (Some(id), Some(parent), Some(_), Some(_), Some(point)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let num = |s: &[u8]| std::str::from_utf8(s).ok()?.parse::<u64>().ok();
        if num(parent) != Some(mnt_id) || num(id) == Some(mnt_id) {
            continue;
        }
        let point = unescape(point);
        let p = point.as_os_str().as_bytes();
        let below =
            d == b"/" || p == d || (p.len() > d.len() && p.starts_with(d) && p[d.len()] == b'/');
        if below {
            return true;
        }
    }
    false
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
    fn unescape_decodes_octal_only() {
        assert_eq!(unescape(b"a\\040b\\011c\\134d"), Path::new("a b\tc\\d"));
        assert_eq!(unescape(b"a\\0"), Path::new("a\\0"));
        assert_eq!(unescape(b"a\\9999"), Path::new("a\\9999"));
    }
}
