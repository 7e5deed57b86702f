//! A subvolume's inodes as its btree holds them: owner, mode, link count, and which of the
//! xattrs that carry ids (a file capability, the POSIX ACLs) each inode has, read with
//! TREE_SEARCH_V2 (CAP_SYS_ADMIN) instead of a stat and an xattr listing per inode.
//!
//! The btree is only as current as the last transaction commit: btrfs keeps inode updates
//! (a chown, a new link, a new xattr...) in memory as delayed items until the commit writes them
//! into the tree. [`InodeTable::read`] therefore commits the filesystem's running transaction
//! first, and the table is a snapshot of the subvolume at that commit.
//!
//! The key range of TREE_SEARCH is lexicographic on (objectid, type, offset): asking for
//! inodes 256..=LAST_FREE returns every item of every inode (refs, directory entries, inline
//! extents...), not only the INODE_ITEMs and XATTR_ITEMs kept here: a whole subvolume's tree
//! crosses into user space, about 5 items and 500 bytes per small file, some 1.7 µs of
//! kernel time per inode on one core. The read is spread over rayon's pool.

use crate::control::Control;
use crate::error::Result;
use crate::ioctl;
use crate::search;
use rayon::prelude::*;
use std::ops::ControlFlow;
use std::os::fd::BorrowedFd;
use std::path::Path;

/// The inode has `security.capability`.
pub const CAPABILITY: u8 = 1;
/// The inode has `system.posix_acl_access`.
pub const ACL_ACCESS: u8 = 2;
/// The inode has `system.posix_acl_default`.
pub const ACL_DEFAULT: u8 = 4;

/// The result buffer of one TREE_SEARCH_V2 call, one per thread of the read.
const BUF: usize = 256 * 1024;

/// Ranges of inode numbers per thread of the read, at most...
const PARTS_PER_THREAD: u64 = 256;
/// ...and inode numbers per range, at least (an ioctl per range).
const MIN_PART: u64 = 256;

/// Inodes of a range of inode numbers, in order.
type Part = Vec<(u64, Inode)>;

/// What the table keeps of an inode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inode {
    pub uid: u32,
    pub gid: u32,
    /// Type and permission bits, as `st_mode`; 0 in a dense table's hole.
    pub mode: u32,
    pub nlink: u32,
    /// [`CAPABILITY`] | [`ACL_ACCESS`] | [`ACL_DEFAULT`].
    pub xattrs: u8,
}

/// Inode number to [`Inode`] for one subvolume.
#[derive(Debug, Default)]
pub struct InodeTable {
    /// Indexed by inode number minus `first` when the numbers are dense (the usual case:
    /// btrfs hands them out in sequence); holes have mode 0.
    dense: Vec<Inode>,
    first: u64,
    /// Sorted by inode number, when they are too sparse for `dense`.
    sparse: Vec<(u64, Inode)>,
    len: usize,
}

/// `btrfs_inode_item` offsets (little-endian): nlink u32 @40, uid @44, gid @48, mode @52.
const INODE_ITEM_MIN: usize = 56;

/// The xattr names that carry ids, with their flags.
const WATCHED: [(&[u8], u8); 3] = [
    (b"security.capability", CAPABILITY),
    (b"system.posix_acl_access", ACL_ACCESS),
    (b"system.posix_acl_default", ACL_DEFAULT),
];

impl InodeTable {
    /// Commit the filesystem's running transaction, then read every inode of the subvolume
    /// that holds the directory `fd`. None when the caller aborted during the read.
    /// EPERM without CAP_SYS_ADMIN.
    pub fn read(fd: BorrowedFd<'_>, control: Control<'_>, shown: &Path) -> Result<Option<Self>> {
        // The privilege first, so that a caller without it does not commit for nothing.
        search::last_inode(fd, &mut search::Buffer::new(4096), false, shown)?;
        crate::filesystem::commit(fd, shown)?;
        Self::read_committed(fd, control, shown)
    }

    /// [`InodeTable::read`] without the commit: for a subvolume of a filesystem committed
    /// moments ago. The inode numbers are cut into many small ranges read in parallel on
    /// rayon's pool (items crowd where the directories are, so few large ranges would
    /// leave one thread with most of the work).
    pub fn read_committed(
        fd: BorrowedFd<'_>,
        control: Control<'_>,
        shown: &Path,
    ) -> Result<Option<Self>> {
        let Some(last) = search::last_inode(fd, &mut search::Buffer::new(4096), false, shown)?
        else {
            return Ok(Some(Self::default()));
        };
        let first = ioctl::FIRST_FREE_OBJECTID;
        let span = last - first + 1;
        let parts = rayon::current_num_threads() as u64 * PARTS_PER_THREAD;
        let width = span.div_ceil(parts).max(MIN_PART);
        let ranges: Vec<(u64, u64)> = (0..parts)
            .map(|k| first + k * width)
            .take_while(|&lo| lo <= last)
            .map(|lo| (lo, lo.saturating_add(width - 1).min(last)))
            .collect();
        let read: Vec<Result<Option<Part>>> = ranges
            .into_par_iter()
            .map_init(
                || search::Buffer::new(BUF),
                |buf, (lo, hi)| read_range(fd, lo, hi, buf, control, shown),
            )
            .collect();
        let mut items = Vec::new();
        for r in read {
            match r? {
                Some(part) => items.extend(part),
                None => return Ok(None),
            }
        }
        Ok(Some(Self::from_sorted(items)))
    }

    /// A table of `items`, sorted by inode number (TREE_SEARCH returns them in key order).
    fn from_sorted(items: Vec<(u64, Inode)>) -> Self {
        let len = items.len();
        let (Some(&(first, _)), Some(&(last, _))) = (items.first(), items.last()) else {
            return Self::default();
        };
        let span = last - first + 1;
        if span > 2 * len as u64 + 4096 {
            return InodeTable {
                sparse: items,
                len,
                ..Default::default()
            };
        }
        let mut dense = vec![Inode::default(); span as usize];
        for (ino, i) in items {
            dense[(ino - first) as usize] = i;
        }
        InodeTable {
            dense,
            first,
            sparse: Vec::new(),
            len,
        }
    }

    /// The inode numbered `ino`, if the subvolume held it at the read.
    pub fn get(&self, ino: u64) -> Option<&Inode> {
        if !self.dense.is_empty() {
            let i = self
                .dense
                .get(usize::try_from(ino.checked_sub(self.first)?).ok()?)?;
            return (i.mode != 0).then_some(i);
        }
        let k = self.sparse.binary_search_by_key(&ino, |e| e.0).ok()?;
        Some(&self.sparse[k].1)
    }

    /// How many inodes the table holds.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The inodes numbered `lo..=hi`, in order; None when the caller aborted.
fn read_range(
    fd: BorrowedFd<'_>,
    lo: u64,
    hi: u64,
    buf: &mut search::Buffer,
    control: Control<'_>,
    shown: &Path,
) -> Result<Option<Part>> {
    let mut items: Vec<(u64, Inode)> = Vec::new();
    let mut stopped = false;
    search::search_with(
        fd,
        search::inodes(lo, hi),
        usize::MAX,
        buf,
        shown,
        |sh, body| {
            if control.aborted() {
                stopped = true;
                return ControlFlow::Break(());
            }
            match sh.type_ {
                ioctl::INODE_ITEM_KEY if sh.offset == 0 && body.len() >= INODE_ITEM_MIN => {
                    let item = ioctl::InodeItem(body);
                    items.push((
                        sh.objectid,
                        Inode {
                            nlink: item.nlink().unwrap_or(0),
                            uid: item.uid().unwrap_or(0),
                            gid: item.gid().unwrap_or(0),
                            mode: item.mode().unwrap_or(0),
                            xattrs: 0,
                        },
                    ));
                }
                ioctl::XATTR_ITEM_KEY => {
                    let flags = watched_xattrs(body);
                    if flags != 0 {
                        if let Some((ino, i)) = items.last_mut() {
                            if *ino == sh.objectid {
                                i.xattrs |= flags;
                            }
                        }
                    }
                }
                _ => {}
            }
            ControlFlow::Continue(())
        },
    )?;
    Ok((!stopped).then_some(items))
}

/// The [`WATCHED`] flags of the names in one XATTR_ITEM, a run of `btrfs_dir_item`s (xattrs
/// whose names hash alike share an item): location (17 bytes), transid u64, data_len u16 @25,
/// name_len u16 @27, type u8 @29, then the name and the value.
fn watched_xattrs(mut body: &[u8]) -> u8 {
    const HEAD: usize = 30;
    let mut flags = 0;
    while body.len() >= HEAD {
        let data_len = u16::from_le_bytes([body[25], body[26]]) as usize;
        let name_len = u16::from_le_bytes([body[27], body[28]]) as usize;
        let Some(name) = body.get(HEAD..HEAD + name_len) else {
            break;
        };
        for (watched, flag) in WATCHED {
            if name == watched {
                flags |= flag;
            }
        }
        body = body.get(HEAD + name_len + data_len..).unwrap_or(&[]);
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_item(name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 25];
        v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        v.extend_from_slice(&(name.len() as u16).to_le_bytes());
        v.push(8); // BTRFS_FT_XATTR
        v.extend_from_slice(name);
        v.extend_from_slice(value);
        v
    }

    #[test]
    fn xattr_items_are_parsed_entry_by_entry() {
        assert_eq!(watched_xattrs(&dir_item(b"user.x", b"1")), 0);
        assert_eq!(
            watched_xattrs(&dir_item(b"security.capability", &[1; 20])),
            CAPABILITY
        );
        let mut two = dir_item(b"system.posix_acl_default", &[2; 28]);
        two.extend(dir_item(b"system.posix_acl_access", &[3; 44]));
        assert_eq!(watched_xattrs(&two), ACL_ACCESS | ACL_DEFAULT);
        // A name that only starts like a watched one, and a truncated item.
        assert_eq!(watched_xattrs(&dir_item(b"security.capabilityX", b"")), 0);
        let cut = dir_item(b"security.capability", b"");
        assert_eq!(watched_xattrs(&cut[..cut.len() - 1]), 0);
    }

    #[test]
    fn dense_and_sparse_tables_find_the_same_inodes() {
        let i = |m| Inode {
            mode: m,
            ..Default::default()
        };
        let dense = InodeTable::from_sorted(vec![(256, i(1)), (258, i(2)), (300, i(3))]);
        assert!(!dense.dense.is_empty());
        let sparse = InodeTable::from_sorted(vec![(256, i(1)), (258, i(2)), (1 << 40, i(3))]);
        assert!(dense.dense.len() == 45 && sparse.dense.is_empty());
        for t in [&dense, &sparse] {
            assert_eq!(t.len(), 3);
            assert_eq!(t.get(256).map(|x| x.mode), Some(1));
            assert_eq!(t.get(258).map(|x| x.mode), Some(2));
            for absent in [0, 255, 257, 259, 299, u64::MAX] {
                assert_eq!(t.get(absent), None, "{absent}");
            }
        }
        assert_eq!(dense.get(300).map(|x| x.mode), Some(3));
        assert_eq!(sparse.get(1 << 40).map(|x| x.mode), Some(3));
        assert!(InodeTable::from_sorted(Vec::new()).get(256).is_none());
    }
}
