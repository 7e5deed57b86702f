//! Checks on caller-given paths, done before any syscall.

use crate::error::{Error, Result};
use nix::errno::Errno;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Longest name of one directory entry on btrfs.
pub const NAME_MAX: usize = 255;

/// Reject an empty path, a NUL byte, or a final component longer than NAME_MAX.
pub fn check(path: &Path, op: &'static str) -> Result<()> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(Error::invalid(Errno::EINVAL, op, path, "path is empty"));
    }
    if bytes.contains(&0) {
        return Err(Error::invalid(
            Errno::EINVAL,
            op,
            path,
            "path contains a NUL byte",
        ));
    }
    if let Some(name) = path.file_name() {
        if name.len() > NAME_MAX {
            return Err(Error::invalid(
                Errno::ENAMETOOLONG,
                op,
                path,
                format!(
                    "final component is {} bytes, longer than {NAME_MAX}",
                    name.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Split a path to be created or deleted into its parent directory and final name.
/// A path whose last component is `.` or `..`, or that is `/`, names no entry: EINVAL.
pub fn split_parent<'a>(path: &'a Path, op: &'static str) -> Result<(&'a Path, &'a OsStr)> {
    check(path, op)?;
    let bytes = path.as_os_str().as_bytes();
    let trimmed = &bytes[..bytes.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1)];
    let (parent, name) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(0) => (&b"/"[..], &trimmed[1..]),
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (&b"."[..], trimmed),
    };
    if name.is_empty() || name == b"." || name == b".." {
        return Err(Error::invalid(
            Errno::EINVAL,
            op,
            path,
            "path does not end in a name",
        ));
    }
    Ok((
        Path::new(OsStr::from_bytes(parent)),
        OsStr::from_bytes(name),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<()>) -> &'static str {
        r.err().map(|e| e.code_str()).unwrap_or("ok")
    }

    #[test]
    fn rejects_bad_paths() {
        assert_eq!(code(check(Path::new(""), "t")), "EINVAL");
        assert_eq!(code(check(Path::new("/a\0b"), "t")), "EINVAL");
        let long = format!("/mnt/{}", "x".repeat(256));
        assert_eq!(code(check(Path::new(&long), "t")), "ENAMETOOLONG");
        let ok = format!("/mnt/{}", "x".repeat(255));
        assert_eq!(code(check(Path::new(&ok), "t")), "ok");
        // A long directory in the middle is the kernel's business, not a final component.
        let mid = format!("/{}/x", "y".repeat(300));
        assert_eq!(code(check(Path::new(&mid), "t")), "ok");
    }

    #[test]
    fn splits_parent_and_name() {
        let (p, n) = split_parent(Path::new("/mnt/a/b"), "t").unwrap();
        assert_eq!((p, n), (Path::new("/mnt/a"), OsStr::new("b")));
        let (p, n) = split_parent(Path::new("b"), "t").unwrap();
        assert_eq!((p, n), (Path::new("."), OsStr::new("b")));
        let (p, n) = split_parent(Path::new("/mnt/a/"), "t").unwrap();
        assert_eq!((p, n), (Path::new("/mnt"), OsStr::new("a")));
        for bad in ["/", "/mnt/..", "/mnt/.", ".."] {
            assert!(split_parent(Path::new(bad), "t").is_err(), "{bad}");
        }
    }
}
