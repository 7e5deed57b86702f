//! Changes between a layer and its parent, with the semantics container engines use.
//!
//! An entry is modified when its type, mode, uid, gid, rdev or `security.capability` differ,
//! or (not for directories) its size or mtime; the parent directory of an added or deleted
//! entry is modified; below an added directory every entry is added; below a deleted
//! directory only the directory itself is reported.

use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    Add,
    Modify,
    Delete,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Add => "add",
            ChangeKind::Modify => "modify",
            ChangeKind::Delete => "delete",
        }
    }
}

/// One changed entry. `path` is relative to the layer root, without a leading slash
/// (`etc/passwd`); lists are sorted by path, parents before children.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Change {
    pub path: PathBuf,
    pub kind: ChangeKind,
}
