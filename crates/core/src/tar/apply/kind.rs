//! What an entry makes, read from its header and checked before anything is changed.

use crate::error::Result;
use ::tar::EntryType;
use nix::sys::stat::{makedev, SFlag};
use std::ffi::CString;
use std::io::Read;
use std::path::Path;

use super::bad_layer;
use super::name::normalize;

/// Largest device numbers the kernel keeps (dev_t is 12 bits major, 20 bits minor inside).
const MAJOR_MAX: u32 = 4095;
const MINOR_MAX: u32 = 1_048_575;
/// Offset of the type flag in a tar header: `\0` there is a pre-POSIX regular file.
const TYPEFLAG_OFFSET: usize = 156;

pub(super) enum Kind {
    File {
        sparse: bool,
    },
    Dir,
    Symlink(CString),
    /// Target as a normalized layer path.
    Hardlink(Vec<u8>),
    /// A character or block device, or a fifo.
    Node(SFlag, libc::dev_t),
    /// PAX global headers carry nothing an apply uses.
    Skip,
}

impl Kind {
    pub fn of<R: Read>(entry: &::tar::Entry<'_, R>, shown: &Path) -> Result<Kind> {
        let h = entry.header();
        Ok(match h.entry_type() {
            EntryType::Regular if is_old_style_dir(entry) => Kind::Dir,
            EntryType::Regular | EntryType::Continuous => Kind::File { sparse: false },
            EntryType::GNUSparse => Kind::File { sparse: true },
            EntryType::Directory => Kind::Dir,
            EntryType::Symlink => Kind::Symlink(symlink_target(entry, shown)?),
            EntryType::Link => Kind::Hardlink(hardlink_target(entry, shown)?),
            EntryType::Char => Kind::Node(SFlag::S_IFCHR, device(h, shown)?),
            EntryType::Block => Kind::Node(SFlag::S_IFBLK, device(h, shown)?),
            EntryType::Fifo => Kind::Node(SFlag::S_IFIFO, 0),
            EntryType::XGlobalHeader => Kind::Skip,
            other => {
                return Err(bad_layer(
                    shown,
                    format!("unsupported entry type {:?}", other.as_byte() as char),
                ))
            }
        })
    }
}

/// Before POSIX, a directory was a regular file whose name ends in `/`.
fn is_old_style_dir<R: Read>(entry: &::tar::Entry<'_, R>) -> bool {
    entry.header().as_bytes()[TYPEFLAG_OFFSET] == 0 && entry.path_bytes().ends_with(b"/")
}

fn symlink_target<R: Read>(entry: &::tar::Entry<'_, R>, shown: &Path) -> Result<CString> {
    let target = entry.link_name_bytes().unwrap_or_default();
    if target.is_empty() {
        return Err(bad_layer(shown, "symlink without a target"));
    }
    CString::new(target.into_owned())
        .map_err(|_| bad_layer(shown, "symlink target holds a NUL byte"))
}

/// Hardlink targets name an entry of the layer; `..` in them is ERR_BAD_LAYER.
fn hardlink_target<R: Read>(entry: &::tar::Entry<'_, R>, shown: &Path) -> Result<Vec<u8>> {
    let target = entry.link_name_bytes().unwrap_or_default();
    let target = normalize(&target)
        .map_err(|e| bad_layer(shown, format!("hardlink target: {}", e.message)))?;
    if target.is_empty() {
        return Err(bad_layer(shown, "hardlink to the layer root, a directory"));
    }
    Ok(target)
}

fn device(h: &::tar::Header, shown: &Path) -> Result<libc::dev_t> {
    let field = |r: std::io::Result<Option<u32>>| {
        r.map(Option::unwrap_or_default).map_err(|e| {
            bad_layer(
                shown,
                format!("bad device number: {}", crate::tar::input_error(&e)),
            )
        })
    };
    let (major, minor) = (field(h.device_major())?, field(h.device_minor())?);
    if major > MAJOR_MAX || minor > MINOR_MAX {
        return Err(bad_layer(
            shown,
            format!("device number {major}:{minor} out of range"),
        ));
    }
    Ok(makedev(major.into(), minor.into()))
}
