//! Shared by the tar apply tests: a scratch directory holding a layer root and a sentinel
//! beside it, a tar writer that writes whatever bytes it is told (hostile names included),
//! tree snapshots to compare, and apply with default options.
#![allow(dead_code)]

use btrfs_layers_core::idmap::IdMapping;
use btrfs_layers_core::tar::apply::{apply, ApplyOptions};
use btrfs_layers_core::{Control, Result};
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

pub use ::tar::EntryType;

/// A temporary directory `<tmp>/btrfs-layers-tar-<pid>-<n>` with `root/` (the layer) and
/// `sentinel/` (outside it), removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub sentinel: PathBuf,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// An mtime the sentinel's entries get, far from "now".
pub const SENTINEL_MTIME: i64 = 1_000_000_000;

impl Scratch {
    pub fn new() -> Scratch {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("btrfs-layers-tar-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let root = dir.join("root");
        let sentinel = dir.join("sentinel");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(sentinel.join("dir")).unwrap();
        fs::write(sentinel.join("file"), b"sentinel: must never change\n").unwrap();
        fs::write(sentinel.join("dir/inner"), b"inner sentinel\n").unwrap();
        symlink("file", sentinel.join("link")).unwrap();
        fs::set_permissions(sentinel.join("file"), fs::Permissions::from_mode(0o640)).unwrap();
        for p in ["file", "dir/inner", "dir", "link", ""] {
            set_mtime(&sentinel.join(p), SENTINEL_MTIME);
        }
        Scratch {
            dir,
            root,
            sentinel,
        }
    }

    /// Everything in the scratch directory except the layer root.
    pub fn outside(&self) -> Tree {
        let mut tree = snapshot(&self.dir);
        tree.retain(|p, _| !p.starts_with("root/") && p != Path::new("root"));
        tree
    }

    /// Apply `layer` to the root with identity maps and no abort.
    pub fn apply(&self, layer: &[u8]) -> Result<u64> {
        self.apply_from(layer)
    }

    pub fn apply_from(&self, input: impl Read) -> Result<u64> {
        let ids = IdMapping::default();
        self.apply_with(input, &ids, &ids, Control::NONE)
    }

    pub fn apply_with(
        &self,
        input: impl Read,
        uids: &IdMapping,
        gids: &IdMapping,
        control: Control<'_>,
    ) -> Result<u64> {
        let root = fs::File::open(&self.root).unwrap();
        apply(
            root.as_fd(),
            input,
            &ApplyOptions {
                uids,
                gids,
                control,
            },
        )
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub fn set_mtime(path: &Path, secs: i64) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    // SAFETY: c is NUL-terminated and the two timespecs live across the call.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [t, t].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}", path.display());
}

/// One entry of a tree as the tests compare it (atime and ctime left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub rdev: u64,
    pub ino: u64,
    pub content: Vec<u8>,
    pub link: Vec<u8>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

pub type Tree = BTreeMap<PathBuf, Node>;

/// Every entry under `dir` (relative paths; `dir` itself as ""), never following a symlink.
pub fn snapshot(dir: &Path) -> Tree {
    let mut tree = Tree::new();
    walk(dir, Path::new(""), &mut tree);
    tree
}

fn walk(base: &Path, rel: &Path, tree: &mut Tree) {
    let path = base.join(rel);
    let node = node(&path);
    let is_dir = node.kind == libc::S_IFDIR;
    tree.insert(rel.to_path_buf(), node);
    if is_dir {
        let mut names: Vec<_> = fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for name in names {
            walk(base, &rel.join(name), tree);
        }
    }
}

pub fn node(path: &Path) -> Node {
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let kind = m.mode() & libc::S_IFMT;
    Node {
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: (m.mtime(), m.mtime_nsec()),
        rdev: m.rdev(),
        ino: m.ino(),
        content: if kind == libc::S_IFREG {
            fs::read(path).unwrap()
        } else {
            Vec::new()
        },
        link: if kind == libc::S_IFLNK {
            fs::read_link(path).unwrap().into_os_string().into_vec()
        } else {
            Vec::new()
        },
        xattrs: xattrs(path),
    }
}

use std::os::unix::ffi::OsStringExt;

/// All xattrs of `path` itself (not of a symlink's target), sorted.
pub fn xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 64 << 10];
    // SAFETY: c is NUL-terminated; names has names.len() writable bytes.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "llistxattr {}", path.display());
    let mut out: Vec<_> = names[..n as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|name| (name.to_vec(), xattr(path, name).unwrap()))
        .collect();
    out.sort();
    out
}

pub fn xattr(path: &Path, name: &[u8]) -> Option<Vec<u8>> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    let mut value = vec![0u8; 64 << 10];
    // SAFETY: c and name are NUL-terminated; value has value.len() writable bytes.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    (n >= 0).then(|| value[..n as usize].to_vec())
}

/// One tar entry, every field settable, names written as given (`..` included).
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: Vec<u8>,
    pub kind: EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub link: Vec<u8>,
    pub major: u32,
    pub minor: u32,
    pub body: Vec<u8>,
    /// PAX records for this entry (path and linkpath are added when the name is too long).
    pub pax: Vec<(String, Vec<u8>)>,
}

impl Entry {
    pub fn new(kind: EntryType, path: impl AsRef<[u8]>) -> Entry {
        let mode = if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        };
        Entry {
            path: path.as_ref().to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            link: Vec::new(),
            major: 0,
            minor: 0,
            body: Vec::new(),
            pax: Vec::new(),
        }
    }

    pub fn file(path: impl AsRef<[u8]>, body: impl AsRef<[u8]>) -> Entry {
        Entry {
            body: body.as_ref().to_vec(),
            ..Entry::new(EntryType::Regular, path)
        }
    }

    pub fn dir(path: impl AsRef<[u8]>) -> Entry {
        Entry::new(EntryType::Directory, path)
    }

    pub fn symlink(path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Entry {
        Entry {
            link: target.as_ref().to_vec(),
            mode: 0o777,
            ..Entry::new(EntryType::Symlink, path)
        }
    }

    pub fn hardlink(path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Entry {
        Entry {
            link: target.as_ref().to_vec(),
            ..Entry::new(EntryType::Link, path)
        }
    }

    pub fn device(kind: EntryType, path: impl AsRef<[u8]>, major: u32, minor: u32) -> Entry {
        Entry {
            major,
            minor,
            mode: 0o600,
            ..Entry::new(kind, path)
        }
    }

    pub fn with_pax(mut self, key: &str, value: impl AsRef<[u8]>) -> Entry {
        self.pax.push((key.to_string(), value.as_ref().to_vec()));
        self
    }

    pub fn owned(self, uid: u64, gid: u64) -> Entry {
        Entry { uid, gid, ..self }
    }

    pub fn mode(self, mode: u32) -> Entry {
        Entry { mode, ..self }
    }

    pub fn mtime(self, mtime: u64) -> Entry {
        Entry { mtime, ..self }
    }

    /// The 512-byte ustar header of this entry with a body of `size` bytes.
    pub fn header(&self, size: u64) -> [u8; 512] {
        let mut h = ::tar::Header::new_ustar();
        h.set_entry_type(self.kind);
        h.set_mode(self.mode);
        h.set_uid(self.uid);
        h.set_gid(self.gid);
        h.set_mtime(self.mtime);
        h.set_size(size);
        h.set_device_major(self.major).unwrap();
        h.set_device_minor(self.minor).unwrap();
        let old = h.as_old_mut();
        copy_truncated(&mut old.name, &self.path);
        copy_truncated(&mut old.linkname, &self.link);
        h.set_cksum();
        *h.as_bytes()
    }
}

fn copy_truncated(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// A tar stream built entry by entry.
#[derive(Default, Clone)]
pub struct Layer {
    pub bytes: Vec<u8>,
}

impl Layer {
    pub fn new() -> Layer {
        Layer::default()
    }

    pub fn add(mut self, e: Entry) -> Layer {
        let mut pax = e.pax.clone();
        if e.path.len() > 100 {
            pax.push(("path".into(), e.path.clone()));
        }
        if e.link.len() > 100 {
            pax.push(("linkpath".into(), e.link.clone()));
        }
        if !pax.is_empty() {
            self = self.pax(&pax);
        }
        self.bytes.extend_from_slice(&e.header(e.body.len() as u64));
        self.body(&e.body)
    }

    pub fn file(self, path: &str, body: &str) -> Layer {
        self.add(Entry::file(path, body))
    }

    pub fn dir(self, path: &str) -> Layer {
        self.add(Entry::dir(path))
    }

    pub fn symlink(self, path: &str, target: &str) -> Layer {
        self.add(Entry::symlink(path, target))
    }

    pub fn hardlink(self, path: &str, target: &str) -> Layer {
        self.add(Entry::hardlink(path, target))
    }

    /// A PAX extended header ('x') holding `records`.
    pub fn pax(mut self, records: &[(String, Vec<u8>)]) -> Layer {
        let mut data = Vec::new();
        for (k, v) in records {
            data.extend_from_slice(&pax_record(k, v));
        }
        let e = Entry::new(EntryType::XHeader, "PaxHeaders/entry");
        self.bytes.extend_from_slice(&e.header(data.len() as u64));
        self.body(&data)
    }

    /// A GNU long name ('L') header for the next entry.
    pub fn gnu_long_name(mut self, name: &[u8]) -> Layer {
        let mut data = name.to_vec();
        data.push(0);
        let e = Entry::new(EntryType::GNULongName, "././@LongLink");
        let mut h = e.header(data.len() as u64);
        h[257..265].copy_from_slice(b"ustar  \0");
        fix_checksum(&mut h);
        self.bytes.extend_from_slice(&h);
        self.body(&data)
    }

    pub fn raw(mut self, bytes: &[u8]) -> Layer {
        self.bytes.extend_from_slice(bytes);
        self
    }

    fn body(mut self, data: &[u8]) -> Layer {
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.resize(self.bytes.len() + pad, 0);
        self
    }

    /// The stream with its end-of-archive marker.
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes.resize(self.bytes.len() + 1024, 0);
        self.bytes
    }
}

/// Recompute a raw header's checksum after editing its bytes.
pub fn fix_checksum(h: &mut [u8]) {
    h[148..156].fill(b' ');
    let sum: u32 = h[..512].iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// `<len> <key>=<value>\n`, where len counts the whole record, itself included.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}
