//! Writing an OCI layer tar (PAX) of a layer or of its changes against a parent.
//!
//! Entries come in the order of the change list (sorted, parents before children);
//! deletions become `.wh.<name>` whiteouts; a second name of an inode already written becomes
//! a hardlink to the first (so a new link to an unchanged file carries the body); xattrs go in
//! PAX `SCHILY.xattr.*` records; sockets are skipped; ids are mapped back to container ids.
//! Every file is opened beneath the layer root without following symlinks.

use crate::changes::{Change, ChangeKind};
use crate::control::Control;
use crate::error::{Context, Error, Result};
use crate::idmap::IdMapping;
use crate::open::open_beneath;
use crate::xattr;
use ::tar::{EntryType, Header};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::fstatat;
use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub struct WriteOptions<'a> {
    /// Host ids in the layer are written as container ids (`to_container`).
    pub uids: &'a IdMapping,
    pub gids: &'a IdMapping,
    /// Abort: checked before every entry. Progress: the cumulative bytes written, about every
    /// MiB and at the end.
    pub control: Control<'a>,
}

/// Write the layer tar of `changes` (paths relative to `root`) to `out`; returns bytes written.
pub fn write_layer(
    root: BorrowedFd<'_>,
    changes: &[Change],
    out: impl Write,
    opts: &WriteOptions<'_>,
) -> Result<u64> {
    let mut w = TarWriter {
        out: Counting {
            inner: out,
            count: 0,
            reported: 0,
            control: opts.control,
        },
        links: HashMap::new(),
    };
    let mut parents = ParentCache::default();
    for change in changes {
        opts.control.check("diff", &change.path)?;
        match change.kind {
            ChangeKind::Delete => w.whiteout(&change.path)?,
            ChangeKind::Add | ChangeKind::Modify => {
                let dir = parents.open(root, change.path.parent().unwrap_or(Path::new("")))?;
                let name = change
                    .path
                    .file_name()
                    .ok_or_else(|| Error::internal("change without a name"))?;
                w.entry(dir, name, &change.path, opts)?;
            }
        }
    }
    // Two zero blocks end a tar archive.
    w.out
        .write_all(&[0u8; 1024])
        .map_err(|e| io_error(e, "write", Path::new("")))?;
    w.out
        .flush()
        .map_err(|e| io_error(e, "write", Path::new("")))?;
    opts.control.progress(w.out.count);
    Ok(w.out.count)
}

fn io_error(e: std::io::Error, syscall: &'static str, path: &Path) -> Error {
    Error::sys(
        Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        syscall,
        path,
    )
}

/// The last directory opened, reused while entries stay in it (they come sorted).
#[derive(Default)]
struct ParentCache {
    path: Option<PathBuf>,
    fd: Option<OwnedFd>,
}

impl ParentCache {
    fn open(&mut self, root: BorrowedFd<'_>, dir: &Path) -> Result<BorrowedFd<'_>> {
        if self.path.as_deref() != Some(dir) {
            self.fd = Some(open_beneath(root, dir, dir)?);
            self.path = Some(dir.to_path_buf());
        }
        Ok(self.fd.as_ref().expect("set above").as_fd())
    }
}

struct Counting<'a, W: Write> {
    inner: W,
    count: u64,
    reported: u64,
    control: Control<'a>,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        if self.count - self.reported >= 1 << 20 {
            self.reported = self.count;
            self.control.progress(self.count);
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct TarWriter<'a, W: Write> {
    out: Counting<'a, W>,
    /// (dev, ino) of multiply-linked inodes already written -> their tar path.
    links: HashMap<(u64, u64), Vec<u8>>,
}

impl<W: Write> TarWriter<'_, W> {
    fn whiteout(&mut self, path: &Path) -> Result<()> {
        let name = path
            .file_name()
            .ok_or_else(|| Error::internal("whiteout without a name"))?;
        let mut wh = b".wh.".to_vec();
        wh.extend_from_slice(name.as_bytes());
        let full = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(p) => [p.as_os_str().as_bytes(), b"/", &wh].concat(),
            None => wh,
        };
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(0);
        h.set_mtime(0);
        self.header(h, &full, None, &[], None, path)
    }

    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: &Path,
        opts: &WriteOptions<'_>,
    ) -> Result<()> {
        let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Gone since the change list was made: nothing to write.
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(Error::sys(e, "fstatat", path)),
        };
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFSOCK {
            return Ok(());
        }
        let mut tar_path = path.as_os_str().as_bytes().to_vec();
        if kind == libc::S_IFDIR {
            tar_path.push(b'/');
        }
        let mut h = Header::new_ustar();
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(
            opts.uids
                .to_container(st.st_uid)
                .map_err(|e| with_path(e, path))? as u64,
        );
        h.set_gid(
            opts.gids
                .to_container(st.st_gid)
                .map_err(|e| with_path(e, path))? as u64,
        );
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(0);
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if st.st_mtime_nsec != 0 || st.st_mtime < 0 || st.st_mtime > 0o77777777777 {
            pax.push((
                "mtime".into(),
                pax_time(st.st_mtime, st.st_mtime_nsec).into_bytes(),
            ));
        }
        for (k, mut v) in xattrs(dir, name, path)? {
            if xattr::is_acl(k.as_bytes()) {
                // ACL entries name host ids, like the owner: written as container ids.
                xattr::shift_acl_ids(
                    &mut v,
                    |id| opts.uids.to_container(id).map_err(|e| with_path(e, path)),
                    |id| opts.gids.to_container(id).map_err(|e| with_path(e, path)),
                )?;
            }
            pax.push((format!("SCHILY.xattr.{k}"), v));
        }
        let mut link: Option<Vec<u8>> = None;
        let mut body: Option<(OwnedFd, u64)> = None;
        if kind != libc::S_IFDIR && st.st_nlink > 1 {
            if let Some(first) = self.links.get(&(st.st_dev, st.st_ino)) {
                h.set_entry_type(EntryType::Link);
                return self.header(h, &tar_path, Some(first.clone()), &pax, None, path);
            }
            self.links.insert((st.st_dev, st.st_ino), tar_path.clone());
        }
        match kind {
            libc::S_IFREG => {
                h.set_entry_type(EntryType::Regular);
                h.set_size(st.st_size as u64);
                let fd = crate::open::openat_noatime(
                    dir,
                    name,
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                )
                .at("openat", path)?;
                body = Some((fd, st.st_size as u64));
            }
            libc::S_IFDIR => h.set_entry_type(EntryType::Directory),
            libc::S_IFLNK => {
                h.set_entry_type(EntryType::Symlink);
                link = Some(
                    nix::fcntl::readlinkat(dir, name)
                        .at("readlinkat", path)?
                        .as_bytes()
                        .to_vec(),
                );
            }
            libc::S_IFCHR | libc::S_IFBLK => {
                h.set_entry_type(if kind == libc::S_IFCHR {
                    EntryType::Char
                } else {
                    EntryType::Block
                });
                let (major, minor) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
                h.set_device_major(major)
                    .map_err(|e| io_error(e, "tar", path))?;
                h.set_device_minor(minor)
                    .map_err(|e| io_error(e, "tar", path))?;
            }
            libc::S_IFIFO => h.set_entry_type(EntryType::Fifo),
            _ => return Ok(()),
        }
        self.header(h, &tar_path, link, &pax, body, path)
    }

    /// Write (PAX records if needed), the ustar header, and the body padded to 512 bytes.
    fn header(
        &mut self,
        mut h: Header,
        tar_path: &[u8],
        link: Option<Vec<u8>>,
        pax_in: &[(String, Vec<u8>)],
        body: Option<(OwnedFd, u64)>,
        shown: &Path,
    ) -> Result<()> {
        let mut pax: Vec<(String, Vec<u8>)> = pax_in.to_vec();
        if set_name(&mut h, tar_path).is_err() {
            pax.push(("path".into(), tar_path.to_vec()));
            set_name(&mut h, &tar_path[tar_path.len().saturating_sub(99)..]).ok();
        }
        if let Some(l) = &link {
            if l.len() > 100 || h.set_link_name_literal(l).is_err() {
                pax.push(("linkpath".into(), l.clone()));
            }
        }
        let size = body.as_ref().map_or(0, |b| b.1);
        if size > 0o77777777777 {
            pax.push(("size".into(), size.to_string().into_bytes()));
        }
        for (key, id) in [("uid", h.uid().unwrap_or(0)), ("gid", h.gid().unwrap_or(0))] {
            if id > 0o7777777 {
                pax.push((key.into(), id.to_string().into_bytes()));
            }
        }
        let w = |e| io_error(e, "write", shown);
        if !pax.is_empty() {
            let records = pax_records(&pax);
            let mut ph = Header::new_ustar();
            ph.set_entry_type(EntryType::XHeader);
            let short = &tar_path[tar_path.len().saturating_sub(80)..];
            set_name(&mut ph, &[b"PaxHeaders.0/".as_slice(), short].concat()).ok();
            ph.set_size(records.len() as u64);
            ph.set_mode(0o644);
            ph.set_cksum();
            self.out.write_all(ph.as_bytes()).map_err(w)?;
            self.out.write_all(&records).map_err(w)?;
            self.out
                .write_all(&[0u8; 512][..pad(records.len() as u64)])
                .map_err(w)?;
        }
        h.set_cksum();
        self.out.write_all(h.as_bytes()).map_err(w)?;
        if let Some((fd, size)) = body {
            let mut f = std::fs::File::from(fd);
            let copied = std::io::copy(&mut (&mut f).take(size), &mut self.out)
                .map_err(|e| io_error(e, "read", shown))?;
            if copied != size {
                return Err(Error::refused(
                    Errno::EIO,
                    "read",
                    shown,
                    "file shrank while it was being written to the diff",
                ));
            }
            self.out.write_all(&[0u8; 512][..pad(size)]).map_err(w)?;
        }
        Ok(())
    }
}

/// A PAX time: seconds and a fraction, the sign in front (`-1.25`, not the floored `-2.75`).
fn pax_time(sec: i64, nsec: i64) -> String {
    let total = i128::from(sec) * 1_000_000_000 + i128::from(nsec);
    let (sign, abs) = if total < 0 {
        ("-", -total)
    } else {
        ("", total)
    };
    let (whole, frac) = (abs / 1_000_000_000, abs % 1_000_000_000);
    if frac == 0 {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{frac:09}")
    }
}

fn with_path(mut e: Error, path: &Path) -> Error {
    e.path = Some(path.to_path_buf());
    e
}

fn pad(size: u64) -> usize {
    ((512 - size % 512) % 512) as usize
}

/// Put `name` in the ustar name/prefix fields; Err when it does not fit.
fn set_name(h: &mut Header, name: &[u8]) -> std::result::Result<(), ()> {
    let ustar = h.as_ustar_mut().ok_or(())?;
    if name.len() <= 100 {
        ustar.name = [0; 100];
        ustar.name[..name.len()].copy_from_slice(name);
        ustar.prefix = [0; 155];
        return Ok(());
    }
    // Split at a '/' so that prefix <= 155 and name <= 100.
    let split = name
        .iter()
        .enumerate()
        .rev()
        .find(|&(i, &c)| c == b'/' && i <= 155 && name.len() - i - 1 <= 100)
        .map(|(i, _)| i)
        .ok_or(())?;
    ustar.prefix = [0; 155];
    ustar.prefix[..split].copy_from_slice(&name[..split]);
    ustar.name = [0; 100];
    ustar.name[..name.len() - split - 1].copy_from_slice(&name[split + 1..]);
    Ok(())
}

/// PAX records: "<len> <key>=<value>\n", where len counts the whole record.
fn pax_records(pax: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pax {
        let rest = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// The xattrs of `name` in `dir`, sorted by name, without following a symlink.
fn xattrs(dir: BorrowedFd<'_>, name: &OsStr, shown: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let name = CString::new(name.as_bytes()).map_err(|_| Error::internal("NUL in a file name"))?;
    let proc = xattr::proc_path(dir, Some(&name));
    let mut out = Vec::new();
    for key in xattr::list(xattr::At::Entry(&proc), shown)? {
        // The driver's record describes the layer, it is not part of its tree.
        if crate::driver::is_record_xattr(&key) {
            continue;
        }
        let ck = CString::new(key.as_slice()).expect("split on NUL");
        // None: removed between list and get.
        if let Some(val) = xattr::get(xattr::At::Entry(&proc), &ck, shown)? {
            out.push((String::from_utf8_lossy(&key).into_owned(), val));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        let r = pax_records(&[("path".into(), b"a".to_vec())]);
        assert_eq!(r, b"9 path=a\n");
        let long = vec![b'x'; 95];
        let r = pax_records(&[("path".into(), long)]);
        let len: usize = std::str::from_utf8(&r[..r.iter().position(|&c| c == b' ').unwrap()])
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, r.len());
    }

    #[test]
    fn pax_times_keep_the_sign_in_front() {
        assert_eq!(pax_time(5, 0), "5");
        assert_eq!(pax_time(5, 250_000_000), "5.250000000");
        assert_eq!(pax_time(-1000, 0), "-1000");
        // -1.25 s is stored as sec -2, nsec 750000000.
        assert_eq!(pax_time(-2, 750_000_000), "-1.250000000");
    }

    #[test]
    fn long_names_split_into_prefix() {
        let mut h = Header::new_ustar();
        let name = [vec![b'd'; 120], b"/".to_vec(), vec![b'f'; 50]].concat();
        assert!(set_name(&mut h, &name).is_ok());
        assert_eq!(h.path_bytes().as_ref(), name.as_slice());
        assert!(set_name(&mut h, &[b'f'; 101]).is_err());
    }
}
