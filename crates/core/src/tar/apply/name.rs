//! Names of layer entries: normalized relative to the layer root, and whiteouts told apart.

use super::bad_layer;
use crate::error::{Error, Result};
use crate::path::NAME_MAX;
use nix::errno::Errno;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Longest path one syscall resolves (PATH_MAX less the NUL).
const PATH_MAX: usize = 4095;
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
/// aufs keeps its own metadata under this prefix; layers made on aufs may carry it.
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";

/// What an entry's final name says about it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Whiteout<'a> {
    /// An ordinary entry.
    No,
    /// `.wh..wh..opq`: hide every lower entry of the directory.
    Opaque,
    /// `.wh.<name>`: hide the lower entry `name` of the directory.
    Of(&'a [u8]),
    /// Other `.wh..wh.*` names: aufs metadata, skipped.
    AufsMeta,
}

/// The path of an entry relative to the layer root: leading `/` and `./` stripped, empty and
/// `.` components dropped; empty for the root itself. A `..` component is ERR_BAD_LAYER.
pub(super) fn normalize(raw: &[u8]) -> Result<Vec<u8>> {
    let shown = shown(raw);
    if raw.contains(&0) {
        return Err(bad_layer(shown, "entry name holds a NUL byte"));
    }
    let mut path = Vec::with_capacity(raw.len());
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => return Err(bad_layer(shown, "entry name has a `..` component")),
            _ if comp.len() > NAME_MAX => {
                return Err(too_long(shown, "a component is longer than 255 bytes"))
            }
            _ => {}
        }
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(comp);
    }
    if path.len() > PATH_MAX {
        return Err(too_long(shown, "path is longer than 4095 bytes"));
    }
    Ok(path)
}

/// Split a normalized, non-empty path into its parent (empty for the root) and final name.
pub(crate) fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// `dir/name`, or `name` at the root.
pub(super) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(dir.len() + 1 + name.len());
    if !dir.is_empty() {
        path.extend_from_slice(dir);
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

/// Classify a final name. `.wh.`, `.wh..` and `.wh...` (whiteouts of nothing, `.`, `..`)
/// are ERR_BAD_LAYER.
pub(super) fn whiteout<'a>(name: &'a [u8], shown: &Path) -> Result<Whiteout<'a>> {
    let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) else {
        return Ok(Whiteout::No);
    };
    if name == OPAQUE {
        return Ok(Whiteout::Opaque);
    }
    if name.starts_with(AUFS_META_PREFIX) {
        return Ok(Whiteout::AufsMeta);
    }
    if matches!(hidden, b"" | b"." | b"..") {
        return Err(bad_layer(shown, "whiteout of an empty name, `.` or `..`"));
    }
    Ok(Whiteout::Of(hidden))
}

/// A layer path as a `Path`, for errors.
pub(super) fn shown(path: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(path))
}

fn too_long(shown: &Path, why: &str) -> Error {
    Error::refused(Errno::ENAMETOOLONG, "open", shown, why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Code;

    fn norm(raw: &str) -> std::result::Result<String, Code> {
        normalize(raw.as_bytes())
            .map(|p| String::from_utf8(p).unwrap())
            .map_err(|e| e.code)
    }

    #[test]
    fn normalizes_names() {
        assert_eq!(norm("./a//b/./c/").unwrap(), "a/b/c");
        assert_eq!(norm("/etc/passwd").unwrap(), "etc/passwd");
        assert_eq!(norm("///.//x").unwrap(), "x");
        for root in [".", "./", "/", "", "./."] {
            assert_eq!(norm(root).unwrap(), "", "{root:?}");
        }
        for bad in ["..", "../x", "a/../../x", "a/..", "/.."] {
            assert_eq!(norm(bad), Err(Code::BadLayer), "{bad:?}");
        }
        assert_eq!(
            norm(&"x".repeat(256)),
            Err(Code::Errno(Errno::ENAMETOOLONG))
        );
        assert_eq!(
            norm(&"abc/".repeat(1100)),
            Err(Code::Errno(Errno::ENAMETOOLONG))
        );
    }

    #[test]
    fn splits_and_joins() {
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
        assert_eq!(join(b"", b"c"), b"c");
        assert_eq!(join(b"a/b", b"c"), b"a/b/c");
    }

    #[test]
    fn tells_whiteouts_apart() {
        let p = Path::new("");
        assert_eq!(whiteout(b"file", p).unwrap(), Whiteout::No);
        assert_eq!(whiteout(b".whx", p).unwrap(), Whiteout::No);
        assert_eq!(whiteout(b".wh.file", p).unwrap(), Whiteout::Of(b"file"));
        assert_eq!(whiteout(b".wh..wh..opq", p).unwrap(), Whiteout::Opaque);
        assert_eq!(whiteout(b".wh..wh.plnk", p).unwrap(), Whiteout::AufsMeta);
        assert_eq!(
            whiteout(b".wh..hidden", p).unwrap(),
            Whiteout::Of(b".hidden")
        );
        for bad in [&b".wh."[..], b".wh..", b".wh..."] {
            assert_eq!(whiteout(bad, p).unwrap_err().code, Code::BadLayer);
        }
    }
}
