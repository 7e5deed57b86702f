//! TREE_SEARCH_V2: the items of a btrfs tree in a key range (CAP_SYS_ADMIN).

use crate::error::{Context, Result};
use crate::ioctl::{self, SearchHeader, SearchKey};
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

/// The result buffer of [`search`]: enough for the few items its callers want.
const BUF: usize = 64 * 1024;

/// The largest result buffer the kernel takes (it clamps `buf_size` to 16 MiB).
pub const MAX_BUF: usize = 16 * 1024 * 1024;

/// Hand each item of `key`'s tree and range to `each`, in key order, at most `limit` of them.
/// ENOENT (the tree does not exist, e.g. no quota tree) comes back as the error it is.
pub fn search(
    fd: BorrowedFd<'_>,
    key: SearchKey,
    limit: usize,
    shown: &Path,
    mut each: impl FnMut(&SearchHeader, &[u8]),
) -> Result<()> {
    search_with(fd, key, limit, &mut Buffer::new(BUF), shown, |sh, body| {
        each(sh, body);
        ControlFlow::Continue(())
    })
}

/// The memory of TREE_SEARCH_V2's arguments and results, reusable from one search to the next.
pub struct Buffer {
    /// u64s keep the arguments' header aligned.
    storage: Vec<u64>,
    size: usize,
}

impl Buffer {
    /// Room for `size` bytes of results (4 KiB to [`MAX_BUF`]). A large buffer lets one ioctl
    /// return many items: a whole subvolume tree takes a few calls instead of thousands.
    pub fn new(size: usize) -> Buffer {
        let size = size.clamp(4096, MAX_BUF);
        let words = (std::mem::size_of::<ioctl::SearchArgsV2>() + size).div_ceil(8);
        Buffer {
            storage: vec![0u64; words],
            size,
        }
    }
}

/// [`search`] with the result buffer `buf`, stopping early when `each` says so.
pub fn search_with(
    fd: BorrowedFd<'_>,
    mut key: SearchKey,
    limit: usize,
    buf: &mut Buffer,
    shown: &Path,
    mut each: impl FnMut(&SearchHeader, &[u8]) -> ControlFlow<()>,
) -> Result<()> {
    let buf_size = buf.size;
    let storage = &mut buf.storage;
    let hdr = std::mem::size_of::<ioctl::SearchArgsV2>();
    let hsize = std::mem::size_of::<SearchHeader>();
    let mut seen = 0usize;
    while seen < limit {
        let args = storage.as_mut_ptr() as *mut ioctl::SearchArgsV2;
        // No more items than the buffer could hold (each has at least a header).
        key.nr_items = (limit - seen).min(buf_size / hsize) as u32;
        // SAFETY: storage is 8-byte aligned and holds the args header plus buf_size bytes.
        unsafe {
            (*args).key = key;
            (*args).buf_size = buf_size as u64;
        }
        // SAFETY: args points to a SearchArgsV2 followed by buf_size writable bytes.
        unsafe { ioctl::tree_search_v2(fd.as_raw_fd(), args) }
            .at("BTRFS_IOC_TREE_SEARCH_V2", shown)?;
        // SAFETY: the kernel filled in nr_items.
        let nr = unsafe { (*args).key.nr_items } as usize;
        if nr == 0 {
            break;
        }
        // SAFETY: the storage is initialized u64s; viewing it as bytes is valid.
        let bytes =
            unsafe { std::slice::from_raw_parts(storage.as_ptr() as *const u8, storage.len() * 8) };
        let buf = &bytes[hdr..hdr + buf_size];
        let (mut off, mut last) = (0usize, SearchHeader::default());
        for _ in 0..nr {
            if off + hsize > buf.len() {
                break;
            }
            // SAFETY: a header lies within buf (checked above); read_unaligned copes with any offset.
            let sh: SearchHeader =
                unsafe { std::ptr::read_unaligned(buf[off..].as_ptr() as *const SearchHeader) };
            let end = (off + hsize + sh.len as usize).min(buf.len());
            if each(&sh, &buf[off + hsize..end]).is_break() {
                return Ok(());
            }
            off = end;
            last = sh;
        }
        seen += nr;
        if !advance(&mut key, &last) {
            break;
        }
    }
    Ok(())
}

/// `tree_id` 0: the tree of the subvolume that holds the fd searched (TREE_SEARCH, INO_LOOKUP).
pub const OWN_TREE: u64 = 0;

/// Every item of inodes `lo..=hi` of the subvolume that holds the fd searched.
pub fn inodes(lo: u64, hi: u64) -> SearchKey {
    SearchKey {
        tree_id: OWN_TREE,
        min_objectid: lo,
        max_objectid: hi,
        min_type: 0,
        max_type: u32::MAX,
        min_offset: 0,
        max_offset: u64::MAX,
        min_transid: 0,
        max_transid: u64::MAX,
        ..Default::default()
    }
}

/// The highest inode number of the subvolume that holds `fd` (None: no inode at all), by
/// galloping then bisection: each probe asks for the first item at or above an inode number.
/// With `coarse`, a number at most 1/16 below it, for fewer probes (enough to cut a search
/// into ranges whose last one runs to the end).
pub fn last_inode(
    fd: BorrowedFd<'_>,
    buf: &mut Buffer,
    coarse: bool,
    shown: &Path,
) -> Result<Option<u64>> {
    let mut probe = |from: u64| -> Result<Option<u64>> {
        let mut found = None;
        search_with(
            fd,
            inodes(from, ioctl::LAST_FREE_OBJECTID),
            1,
            buf,
            shown,
            |sh, _| {
                found = Some(sh.objectid);
                ControlFlow::Break(())
            },
        )?;
        Ok(found)
    };
    // An item at `lo`, none at or above `hi`.
    let Some(mut lo) = probe(ioctl::FIRST_FREE_OBJECTID)? else {
        return Ok(None);
    };
    let end = ioctl::LAST_FREE_OBJECTID + 1;
    let mut step = if coarse { 256 } else { 1u64 };
    let mut hi = loop {
        let next = lo.saturating_add(step);
        if next >= end {
            break end;
        }
        match probe(next)? {
            Some(at) => lo = at,
            None => break next,
        }
        step = step.saturating_mul(2);
    };
    let close = |lo: u64, hi: u64| hi - lo <= if coarse { (lo / 16).max(1) } else { 1 };
    while !close(lo, hi) {
        let mid = lo + (hi - lo) / 2;
        match probe(mid)? {
            Some(at) => lo = at,
            None => hi = mid,
        }
    }
    Ok(Some(lo))
}

/// Move the start of `key`'s range just past item `last`; false when the range is exhausted.
pub fn advance(key: &mut SearchKey, last: &SearchHeader) -> bool {
    key.min_objectid = last.objectid;
    key.min_type = last.type_;
    if last.offset < u64::MAX {
        key.min_offset = last.offset + 1;
    } else if last.type_ < u32::MAX {
        key.min_offset = 0;
        key.min_type = last.type_ + 1;
    } else if last.objectid < u64::MAX {
        key.min_offset = 0;
        key.min_type = 0;
        key.min_objectid = last.objectid + 1;
    } else {
        return false;
    }
    (key.min_objectid, key.min_type, key.min_offset)
        <= (key.max_objectid, key.max_type, key.max_offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_carries_through_the_key() {
        let mut k = SearchKey {
            max_objectid: u64::MAX,
            max_type: u32::MAX,
            max_offset: u64::MAX,
            ..Default::default()
        };
        assert!(advance(
            &mut k,
            &SearchHeader {
                objectid: 5,
                type_: 156,
                offset: 7,
                ..Default::default()
            }
        ));
        assert_eq!((k.min_objectid, k.min_type, k.min_offset), (5, 156, 8));
        assert!(advance(
            &mut k,
            &SearchHeader {
                objectid: 5,
                type_: 156,
                offset: u64::MAX,
                ..Default::default()
            }
        ));
        assert_eq!((k.min_objectid, k.min_type, k.min_offset), (5, 157, 0));
        let mut tight = SearchKey {
            min_objectid: 5,
            max_objectid: 5,
            min_type: 156,
            max_type: 156,
            max_offset: 9,
            ..Default::default()
        };
        assert!(!advance(
            &mut tight,
            &SearchHeader {
                objectid: 5,
                type_: 156,
                offset: 9,
                ..Default::default()
            }
        ));
    }
}
