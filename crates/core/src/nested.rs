//! Nested subvolumes found through the subvolume tree (root refs), never by walking files.
//!
//! Privileged: TREE_SEARCH_V2 over ROOT_REF items plus INO_LOOKUP. Unprivileged (or when
//! the search is refused with EPERM): GET_SUBVOL_ROOTREF plus INO_LOOKUP_USER.

use crate::error::{Context, Result};
use crate::ioctl::{self, c_bytes};
use crate::search;
use nix::errno::Errno;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A subvolume directly nested in another one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    /// Subvolume (tree) id of the child.
    pub id: u64,
    /// Directory holding the child, relative to the parent subvolume's root ("" for the root).
    pub dir: PathBuf,
    /// The child's entry name in that directory.
    pub name: OsString,
}

impl Child {
    /// Path of the child relative to the parent subvolume's root.
    pub fn rel_path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }
}

/// Which ioctls to enumerate with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Try the privileged search, fall back to the unprivileged one on EPERM.
    Auto,
    TreeSearch,
    RootRef,
}

/// The subvolumes directly nested in subvolume `id`, whose root directory is `fd`,
/// sorted by path.
pub fn children(fd: BorrowedFd<'_>, id: u64, shown: &Path, method: Method) -> Result<Vec<Child>> {
    let mut kids = match method {
        Method::TreeSearch => children_by_search(fd, id, shown)?,
        Method::RootRef => children_by_rootref(fd, shown)?,
        Method::Auto => match children_by_search(fd, id, shown) {
            Err(e) if e.is(Errno::EPERM) || e.is(Errno::EACCES) => children_by_rootref(fd, shown)?,
            r => r?,
        },
    };
    kids.sort_by_key(Child::rel_path);
    Ok(kids)
}

/// Children of subvolume `id` by searching the root tree for its ROOT_REF items.
/// `fd` may be any fd on the filesystem.
pub fn children_by_search(fd: BorrowedFd<'_>, id: u64, shown: &Path) -> Result<Vec<Child>> {
    let key = ioctl::SearchKey {
        tree_id: ioctl::ROOT_TREE_OBJECTID,
        min_objectid: id,
        max_objectid: id,
        min_type: ioctl::ROOT_REF_KEY,
        max_type: ioctl::ROOT_REF_KEY,
        max_offset: u64::MAX,
        max_transid: u64::MAX,
        ..Default::default()
    };
    let mut refs: Vec<(u64, u64, OsString)> = Vec::new();
    search::search(fd, key, usize::MAX, shown, |sh, body| {
        // btrfs_root_ref: dirid, sequence (__le64), name_len (__le16), then the name.
        if sh.type_ == ioctl::ROOT_REF_KEY
            && sh.objectid == id
            && body.len() >= ioctl::ROOT_REF_ITEM_SIZE
        {
            let dirid = u64::from_le_bytes(body[0..8].try_into().expect("8 bytes"));
            let name_len = u16::from_le_bytes(body[16..18].try_into().expect("2 bytes")) as usize;
            let name = &body[18..(18 + name_len).min(body.len())];
            refs.push((sh.offset, dirid, OsStr::from_bytes(name).to_os_string()));
        }
    })?;
    refs.into_iter()
        .map(|(child, dirid, name)| {
            Ok(Child {
                id: child,
                dir: dir_path(fd, id, dirid, shown)?,
                name,
            })
        })
        .collect()
}

/// Path of directory `dirid` inside subvolume `tree`, relative to its root (privileged).
pub(crate) fn dir_path(fd: BorrowedFd<'_>, tree: u64, dirid: u64, shown: &Path) -> Result<PathBuf> {
    if dirid == ioctl::FIRST_FREE_OBJECTID {
        return Ok(PathBuf::new());
    }
    let mut args = ioctl::InoLookupArgs {
        treeid: tree,
        objectid: dirid,
        ..Default::default()
    };
    // SAFETY: args is a zeroed, correctly sized btrfs_ioctl_ino_lookup_args.
    unsafe { ioctl::ino_lookup(fd.as_raw_fd(), &mut args) }.at("BTRFS_IOC_INO_LOOKUP", shown)?;
    Ok(trim_slash(c_bytes(&args.name)))
}

/// Children of the subvolume whose root directory is `fd`, without privilege.
pub fn children_by_rootref(fd: BorrowedFd<'_>, shown: &Path) -> Result<Vec<Child>> {
    let mut args = ioctl::GetSubvolRootrefArgs::default();
    let mut refs = Vec::new();
    loop {
        // SAFETY: args is a zeroed, correctly sized btrfs_ioctl_get_subvol_rootref_args.
        let r = unsafe { ioctl::get_subvol_rootref(fd.as_raw_fd(), &mut args) };
        let more = match r {
            Ok(_) => false,
            Err(Errno::EOVERFLOW) => true,
            Err(e) => return Err(e).at("BTRFS_IOC_GET_SUBVOL_ROOTREF", shown),
        };
        refs.extend_from_slice(&args.rootref[..args.num_items as usize]);
        if !more {
            break;
        }
    }
    refs.into_iter()
        .map(|r| {
            let mut a = ioctl::InoLookupUserArgs {
                dirid: r.dirid,
                treeid: r.treeid,
                ..Default::default()
            };
            // SAFETY: a is a zeroed, correctly sized btrfs_ioctl_ino_lookup_user_args.
            unsafe { ioctl::ino_lookup_user(fd.as_raw_fd(), &mut a) }
                .at("BTRFS_IOC_INO_LOOKUP_USER", shown)?;
            Ok(Child {
                id: r.treeid,
                dir: trim_slash(c_bytes(&a.path)),
                name: OsStr::from_bytes(c_bytes(&a.name)).to_os_string(),
            })
        })
        .collect()
}

fn trim_slash(b: &[u8]) -> PathBuf {
    let end = b.iter().rposition(|&c| c != b'/').map_or(0, |i| i + 1);
    PathBuf::from(OsStr::from_bytes(&b[..end]))
}
