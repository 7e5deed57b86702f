//! An entry's metadata (owner mapped to host ids, mode, xattrs, times) read from its headers
//! and applied in the order the kernel needs: chown, then chmod (chown clears setuid and
//! setgid), then xattrs (chown clears security.capability), then times.

use crate::error::{Context, Error, Result};
use crate::idmap::IdMapping;
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag, AT_FDCWD};
use nix::sys::stat::{
    fchmod, fchmodat, fstat, futimens, utimensat, FchmodatFlags, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, Gid, Uid};
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use super::bad_layer;
use crate::tar::input_error;

const XATTR_KEY: &[u8] = b"SCHILY.xattr.";
/// Permission bits including setuid, setgid and sticky.
const MODE_BITS: u32 = 0o7777;

#[derive(Clone, Copy, Debug)]
pub(super) struct Times {
    pub atime: TimeSpec,
    pub mtime: TimeSpec,
}

pub(super) struct Xattr {
    name: CString,
    value: Vec<u8>,
}

/// What an entry says about its inode, checked and mapped before anything is changed.
pub(super) struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    pub times: Times,
    xattrs: Vec<Xattr>,
}

impl Meta {
    /// Read the header and PAX records; ids are mapped to the host (ERR_ID_MAPPING outside
    /// the maps), and a refused xattr or a malformed field is ERR_BAD_LAYER.
    pub fn read<R: Read>(
        entry: &mut ::tar::Entry<'_, R>,
        uids: &IdMapping,
        gids: &IdMapping,
        shown: &Path,
    ) -> Result<Meta> {
        let h = entry.header();
        let field = |r: std::io::Result<u64>, what: &str| {
            r.map_err(|e| bad_layer(shown, format!("bad {what} field: {}", input_error(&e))))
        };
        let mut raw_uid = field(h.uid(), "uid")?;
        let mut raw_gid = field(h.gid(), "gid")?;
        let mode = field(h.mode().map(u64::from), "mode")? as u32 & MODE_BITS;
        let secs = field(h.mtime(), "mtime")?;
        let secs = i64::try_from(secs).map_err(|_| bad_layer(shown, "mtime out of range"))?;
        let mut mtime = TimeSpec::new(secs, 0);
        let mut atime = None;
        let mut xattrs = Vec::new();
        let records = entry
            .pax_extensions()
            .map_err(|e| bad_layer(shown, format!("bad PAX header: {}", input_error(&e))))?;
        for record in records.into_iter().flatten() {
            let record = record
                .map_err(|e| bad_layer(shown, format!("bad PAX record: {}", input_error(&e))))?;
            match record.key_bytes() {
                b"mtime" => mtime = pax_time(record.value_bytes(), shown)?,
                b"atime" => atime = Some(pax_time(record.value_bytes(), shown)?),
                // Ids too large for the ustar field come as PAX records.
                b"uid" => raw_uid = pax_number(record.value_bytes(), "uid", shown)?,
                b"gid" => raw_gid = pax_number(record.value_bytes(), "gid", shown)?,
                // PAX sparse files (GNU tar --format=posix --sparse) would land as their raw
                // map and data under a GNUSparseFile.<pid>/ name: refuse rather than mislay.
                key if key.starts_with(b"GNU.sparse.") => {
                    return Err(bad_layer(shown, "PAX sparse files (GNU.sparse.* records) are not supported; use --format=gnu for sparse files"));
                }
                key => {
                    if let Some(name) = key.strip_prefix(XATTR_KEY) {
                        let mut value = record.value_bytes().to_vec();
                        if crate::xattr::is_acl(name) {
                            // ACL entries name container ids, like the owner.
                            crate::xattr::shift_acl_ids(
                                &mut value,
                                |id| host_id(u64::from(id), uids, shown),
                                |id| host_id(u64::from(id), gids, shown),
                            )?;
                        }
                        xattrs.push(Xattr::new(name, &value, shown)?);
                    }
                }
            }
        }
        let uid = host_id(raw_uid, uids, shown)?;
        let gid = host_id(raw_gid, gids, shown)?;
        let times = Times {
            atime: atime.unwrap_or(mtime),
            mtime,
        };
        Ok(Meta {
            uid,
            gid,
            mode,
            times,
            xattrs,
        })
    }

    /// Owner, mode and xattrs of an open regular file or directory.
    pub fn apply_to_fd(&self, fd: BorrowedFd<'_>, shown: &Path) -> Result<()> {
        fchown(
            fd,
            Some(Uid::from_raw(self.uid)),
            Some(Gid::from_raw(self.gid)),
        )
        .at("fchown", shown)?;
        fchmod(fd, Mode::from_bits_truncate(self.mode)).at("fchmod", shown)?;
        for x in &self.xattrs {
            x.set_on_fd(fd, shown)?;
        }
        Ok(())
    }

    /// Owner, mode and xattrs of the symlink, device or fifo `name` in `dir`, never following
    /// it. The kernel allows user.* xattrs on regular files and directories only, so they are
    /// left out here.
    pub fn apply_to_node(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        symlink: bool,
        shown: &Path,
    ) -> Result<()> {
        let (uid, gid) = (Some(Uid::from_raw(self.uid)), Some(Gid::from_raw(self.gid)));
        fchownat(dir, name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW).at("fchownat", shown)?;
        if !symlink {
            chmod_node(dir, name, self.mode, shown)?;
        }
        for x in self
            .xattrs
            .iter()
            .filter(|x| !x.name.as_bytes().starts_with(b"user."))
        {
            x.set_on_node(dir, name, shown)?;
        }
        Ok(())
    }
}

impl Times {
    pub fn set_on_fd(&self, fd: BorrowedFd<'_>, shown: &Path) -> Result<()> {
        futimens(fd, &self.atime, &self.mtime).at("futimens", shown)
    }

    /// Times of `name` in `dir` itself, not of what it may point to.
    pub fn set_on_node(&self, dir: BorrowedFd<'_>, name: &[u8], shown: &Path) -> Result<()> {
        utimensat(
            dir,
            name,
            &self.atime,
            &self.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .at("utimensat", shown)
    }
}

impl Xattr {
    /// `trusted.*` is refused, as is every namespace but user.*, security.* and POSIX ACLs,
    /// and the driver's own layer record.
    fn new(name: &[u8], value: &[u8], shown: &Path) -> Result<Xattr> {
        let allowed = (name.starts_with(b"user.") && !crate::driver::is_record_xattr(name))
            || name.starts_with(b"security.")
            || name == b"system.posix_acl_access"
            || name == b"system.posix_acl_default";
        if !allowed {
            let name = String::from_utf8_lossy(name);
            return Err(bad_layer(
                shown,
                format!("xattr {name} is not allowed in a layer"),
            ));
        }
        let name =
            CString::new(name).map_err(|_| bad_layer(shown, "xattr name holds a NUL byte"))?;
        Ok(Xattr {
            name,
            value: value.to_vec(),
        })
    }

    fn set_on_fd(&self, fd: BorrowedFd<'_>, shown: &Path) -> Result<()> {
        // SAFETY: name is NUL-terminated; value points to value.len() readable bytes.
        let r = unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                self.name.as_ptr(),
                self.value.as_ptr().cast(),
                self.value.len(),
                0,
            )
        };
        Errno::result(r).map(drop).at("fsetxattr", shown)
    }

    /// lsetxattr through the directory's fd link: the final name is not followed.
    fn set_on_node(&self, dir: BorrowedFd<'_>, name: &[u8], shown: &Path) -> Result<()> {
        let path = proc_fd_path(dir, Some(name), shown)?;
        // SAFETY: path and name are NUL-terminated; value points to value.len() readable bytes.
        let r = unsafe {
            libc::lsetxattr(
                path.as_ptr(),
                self.name.as_ptr(),
                self.value.as_ptr().cast(),
                self.value.len(),
                0,
            )
        };
        Errno::result(r).map(drop).at("lsetxattr", shown)
    }
}

/// `fchmodat2` (Linux 6.6), which takes AT_SYMLINK_NOFOLLOW; the same number on x86_64 and
/// aarch64 (libc lacks it for the latter).
const SYS_FCHMODAT2: libc::c_long = 452;

/// chmod the entry `name` of `dir` that is no symlink, in one system call where the kernel
/// has fchmodat2 (a symlink is then EOPNOTSUPP), else as [`chmod_node`] does.
pub(crate) fn chmod_at(dir: BorrowedFd<'_>, name: &[u8], mode: u32, shown: &Path) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static NO_FCHMODAT2: AtomicBool = AtomicBool::new(false);
    if !NO_FCHMODAT2.load(Ordering::Relaxed) {
        let c = CString::new(name).map_err(|_| bad_layer(shown, "name holds a NUL byte"))?;
        // SAFETY: dir is a live fd and c is NUL-terminated.
        let r = unsafe {
            libc::syscall(
                SYS_FCHMODAT2,
                dir.as_raw_fd(),
                c.as_ptr(),
                mode as libc::mode_t,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        match Errno::result(r) {
            Ok(_) => return Ok(()),
            Err(Errno::ENOSYS) => NO_FCHMODAT2.store(true, Ordering::Relaxed),
            Err(e) => return Err(Error::sys(e, "fchmodat2", shown)),
        }
    }
    chmod_node(dir, name, mode, shown)
}

/// chmod a device or fifo through an O_PATH fd, so neither its open (a device's side effects)
/// nor a symlink swapped in its place is ever involved.
pub(crate) fn chmod_node(dir: BorrowedFd<'_>, name: &[u8], mode: u32, shown: &Path) -> Result<()> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(dir, name, flags, Mode::empty()).at("openat", shown)?;
    let st = fstat(&fd).at("fstat", shown)?;
    if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFLNK.bits() {
        return Err(Error::refused(
            Errno::ELOOP,
            "fchmodat",
            shown,
            "a symlink replaced the entry",
        ));
    }
    let path = proc_fd_path(fd.as_fd(), None, shown)?;
    fchmodat(
        AT_FDCWD,
        path.as_c_str(),
        Mode::from_bits_truncate(mode),
        FchmodatFlags::FollowSymlink,
    )
    .at("fchmodat", shown)
}

/// `/proc/self/fd/<fd>[/<name>]`: the magic link reaches exactly the inode the fd holds.
fn proc_fd_path(fd: BorrowedFd<'_>, name: Option<&[u8]>, shown: &Path) -> Result<CString> {
    let mut path = format!("/proc/self/fd/{}", fd.as_raw_fd()).into_bytes();
    if let Some(name) = name {
        path.push(b'/');
        path.extend_from_slice(name);
    }
    CString::new(path).map_err(|_| bad_layer(shown, "name holds a NUL byte"))
}

/// A container id from a header, as a host id.
fn host_id(id: u64, map: &IdMapping, shown: &Path) -> Result<u32> {
    map.layer_to_host(id, "applyDiff", shown)
}

/// A PAX time: `[-]seconds[.fraction]`, nanoseconds kept.
fn pax_number(value: &[u8], what: &str, shown: &Path) -> Result<u64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad_layer(shown, format!("bad PAX {what} record")))
}

fn pax_time(value: &[u8], shown: &Path) -> Result<TimeSpec> {
    let bad = || {
        bad_layer(
            shown,
            format!("bad PAX time {:?}", String::from_utf8_lossy(value)),
        )
    };
    let (negative, digits) = match value.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (whole, frac) = match digits.iter().position(|&b| b == b'.') {
        Some(i) => (&digits[..i], &digits[i + 1..]),
        None => (digits, &b""[..]),
    };
    if whole.is_empty() || !whole.iter().chain(frac).all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let secs: i64 = std::str::from_utf8(whole)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let nanos = frac
        .iter()
        .chain(std::iter::repeat(&b'0'))
        .take(9)
        .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    Ok(match (negative, nanos) {
        (false, _) => TimeSpec::new(secs, nanos),
        (true, 0) => TimeSpec::new(-secs, 0),
        (true, _) => TimeSpec::new(-secs - 1, 1_000_000_000 - nanos),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> (i64, i64) {
        let ts = pax_time(s.as_bytes(), Path::new("")).unwrap();
        (ts.tv_sec(), ts.tv_nsec())
    }

    #[test]
    fn parses_pax_times() {
        assert_eq!(t("1700000000"), (1700000000, 0));
        assert_eq!(t("1700000000.5"), (1700000000, 500_000_000));
        assert_eq!(t("1.123456789123"), (1, 123_456_789));
        assert_eq!(t("-1.25"), (-2, 750_000_000));
        assert_eq!(t("-3"), (-3, 0));
        for bad in ["", ".5", "1.2x", "x", "--1", "99999999999999999999"] {
            assert!(pax_time(bad.as_bytes(), Path::new("")).is_err(), "{bad}");
        }
    }
}
