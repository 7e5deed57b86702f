//! Harness of the remap tests: id maps, a call of `remap_path`/`remap_tree` with defaults, a
//! tree holding every kind of inode under known owners, and oracles that read what is on disk
//! (lstat, raw xattr bytes, getfacl, getcap), independent of the code under test.
#![allow(dead_code)]

use btrfs_layers_core::idmap::{IdMap, IdMapping};
use btrfs_layers_core::remap::{remap_path, remap_tree, Method, RemapOptions, RemapOutcome};
use btrfs_layers_core::{Control, Result};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

thread_local! {
    /// How [`remap`] and [`remap_fd`] of this test (this thread) remap.
    static METHOD: Cell<Method> = const { Cell::new(Method::Auto) };
}

/// Make [`remap`] and [`remap_fd`] of the calling test remap by `m`.
pub fn set_method(m: Method) {
    METHOD.with(|c| c.set(m));
}

/// The method [`set_method`] chose (Auto by default).
pub fn method() -> Method {
    METHOD.with(Cell::get)
}

/// Container ids `[0, 65536)` at host `host`.
pub fn shifted(host: u32) -> IdMapping {
    IdMapping::new(
        &[IdMap {
            container_id: 0,
            host_id: host,
            size: 65536,
        }],
        "test",
    )
    .unwrap()
}

pub fn identity() -> IdMapping {
    IdMapping::default()
}

/// One side of a remap: uid and gid mappings.
#[derive(Clone)]
pub struct Side {
    pub uids: IdMapping,
    pub gids: IdMapping,
}

impl Side {
    pub fn identity() -> Side {
        Side {
            uids: identity(),
            gids: identity(),
        }
    }
    pub fn shifted(host: u32) -> Side {
        Side {
            uids: shifted(host),
            gids: shifted(host),
        }
    }
    /// On-disk uid of container uid `c` (identity: `c`).
    pub fn uid(&self, c: u32) -> u32 {
        self.uids.to_host(c).unwrap()
    }
    pub fn gid(&self, c: u32) -> u32 {
        self.gids.to_host(c).unwrap()
    }
}

/// Assert that `n` inodes came from the inode table by Method::Auto, none by Method::Statx.
pub fn expect_table(out: &RemapOutcome, n: u64) {
    let want = if method() == Method::Statx { 0 } else { n };
    assert_eq!(
        out.from_table,
        want,
        "inodes from the table ({:?})",
        method()
    );
}

/// `remap_path(path)` from `from` to `to` by [`method`], never aborted, progress ignored.
pub fn remap(path: &Path, from: &Side, to: &Side, cross_subvolumes: bool) -> Result<RemapOutcome> {
    let opts = RemapOptions {
        cross_subvolumes,
        ..options(from, to, Control::NONE)
    };
    remap_path(path, &opts)
}

/// Options shifting `from` to `to` by [`method`], not crossing into nested subvolumes.
pub fn options<'a>(from: &'a Side, to: &'a Side, control: Control<'a>) -> RemapOptions<'a> {
    RemapOptions {
        from_uids: &from.uids,
        from_gids: &from.gids,
        to_uids: &to.uids,
        to_gids: &to.gids,
        cross_subvolumes: false,
        method: method(),
        control,
    }
}

/// `remap_tree` on an open directory, as the driver calls it.
pub fn remap_fd(dir: BorrowedFd<'_>, shown: &Path, from: &Side, to: &Side) -> Result<RemapOutcome> {
    remap_tree(dir, shown, &options(from, to, Control::NONE))
}

/// `remap` that must succeed without a single error.
pub fn remap_ok(path: &Path, from: &Side, to: &Side, cross_subvolumes: bool) -> RemapOutcome {
    let out = remap(path, from, to, cross_subvolumes)
        .unwrap_or_else(|e| panic!("remap {}: {e:?}", path.display()));
    assert!(
        out.errors.is_empty(),
        "remap {} reported errors: {:?}",
        path.display(),
        out.errors
    );
    out
}

/// (uid, gid) of `p` itself (lstat: a symlink's own owner).
pub fn owner(p: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    (m.uid(), m.gid())
}

pub fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
        .mode()
}

pub fn lchown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("lchown {}: {e}", p.display()));
}

pub fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

/// Run a command that must succeed; its stdout.
pub fn cmd<S: AsRef<OsStr>>(prog: &str, args: &[S]) -> String {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    assert!(
        out.status.success(),
        "{prog} {} failed: {}",
        shown.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn have(prog: &str) -> bool {
    Command::new(prog).arg("--help").output().is_ok()
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// The raw bytes of xattr `name` of `p` itself (lgetxattr), None when absent.
pub fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let (cp, cn) = (cpath(p), CString::new(name).unwrap());
    let mut buf = vec![0u8; 4096];
    // SAFETY: NUL-terminated strings; buf is writable for its length.
    let n = unsafe {
        libc::lgetxattr(
            cp.as_ptr(),
            cn.as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::ENODATA),
            "lgetxattr {} {name}: {e}",
            p.display()
        );
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let (cp, cn) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: NUL-terminated strings; value is a live buffer of value.len() bytes.
    let r = unsafe {
        libc::lsetxattr(
            cp.as_ptr(),
            cn.as_ptr(),
            value.as_ptr() as *const libc::c_void,
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "lsetxattr {} {name}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

/// Every xattr of `p` itself, name -> bytes, sorted.
pub fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let cp = cpath(p);
    let mut buf = vec![0u8; 65536];
    // SAFETY: NUL-terminated path; buf is writable for its length.
    let n = unsafe {
        libc::llistxattr(
            cp.as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
        )
    };
    assert!(
        n >= 0,
        "llistxattr {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
    buf[..n as usize]
        .split(|&c| c == 0)
        .filter(|k| !k.is_empty())
        .map(|k| {
            let name = String::from_utf8_lossy(k).into_owned();
            let v = xattr(p, &name).unwrap_or_default();
            (name, v)
        })
        .collect()
}

/// A `vfs_ns_cap_data` (revision 3): permitted = `cap` bit, effective flag, `rootid`.
pub fn cap_v3(cap: u32, rootid: u32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(0x0300_0000u32 | 1).to_le_bytes()); // revision 3 | VFS_CAP_FLAGS_EFFECTIVE
    v.extend_from_slice(&(1u32 << cap).to_le_bytes()); // permitted[0]
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable[0]
    v.extend_from_slice(&0u32.to_le_bytes()); // permitted[1]
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable[1]
    v.extend_from_slice(&rootid.to_le_bytes());
    v
}

pub const CAP_NET_RAW: u32 = 13;

/// (revision, rootid) of a `security.capability` value: rootid 0 for revision 2.
pub fn cap_revision_rootid(v: &[u8]) -> (u32, u32) {
    let magic = u32::from_le_bytes(v[0..4].try_into().unwrap());
    let rev = magic >> 24;
    let root = if rev == 3 {
        u32::from_le_bytes(v[20..24].try_into().unwrap())
    } else {
        0
    };
    (rev, root)
}

/// `getfacl -n -p` (numeric ids, absolute names) of `p`: its entry lines, comments dropped.
pub fn getfacl(p: &Path) -> Vec<String> {
    cmd(
        "getfacl",
        &[OsStr::new("-n"), OsStr::new("-p"), p.as_os_str()],
    )
    .lines()
    .filter(|l| !l.is_empty() && !l.starts_with('#'))
    .map(str::to_string)
    .collect()
}

/// Entries of a tree described by what is observable about each (no ctime): type, mode, owner,
/// size, nlink, rdev, mtime, inode, link target, xattrs. Does not follow symlinks, does not
/// enter directories on other devices (nested subvolumes, mount points).
pub fn full_state(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let dev = fs::symlink_metadata(root).unwrap().dev();
    fn walk(abs: &Path, rel: PathBuf, dev: u64, out: &mut BTreeMap<PathBuf, String>) {
        let m = fs::symlink_metadata(abs).unwrap();
        let target = if m.file_type().is_symlink() {
            fs::read_link(abs).unwrap().display().to_string()
        } else {
            String::new()
        };
        let xa: Vec<String> = xattrs(abs)
            .into_iter()
            .map(|(k, v)| format!("{k}={}", hex(&v)))
            .collect();
        out.insert(
            rel.clone(),
            format!(
                "mode={:o} uid={} gid={} size={} nlink={} rdev={} mtime={}.{} ino={} link={target} xattrs=[{}]",
                m.mode(),
                m.uid(),
                m.gid(),
                m.size(),
                m.nlink(),
                m.rdev(),
                m.mtime(),
                m.mtime_nsec(),
                m.ino(),
                xa.join(",")
            ),
        );
        if m.is_dir() && m.dev() == dev {
            let mut names: Vec<_> = fs::read_dir(abs)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names {
                walk(&abs.join(&n), rel.join(&n), dev, out);
            }
        }
    }
    walk(root, PathBuf::from("."), dev, &mut out);
    out
}

pub fn hex(v: &[u8]) -> String {
    v.iter().map(|b| format!("{b:02x}")).collect()
}

/// mknod(2) of a character (`b'c'`), block (`b'b'`) device, or a fifo (`b'p'`).
pub fn mknod(p: &Path, kind: u8, major: u64, minor: u64) {
    let k = match kind {
        b'c' => libc::S_IFCHR,
        b'b' => libc::S_IFBLK,
        b'p' => libc::S_IFIFO,
        _ => panic!("kind"),
    };
    let cp = cpath(p);
    // SAFETY: NUL-terminated path; mknod has no other preconditions.
    let r = unsafe {
        libc::mknod(
            cp.as_ptr(),
            k | 0o640,
            libc::makedev(major as u32, minor as u32),
        )
    };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

/// Paths of the rich tree made by [`build_rich`], relative to its root, with the container
/// (uid, gid) each was given.
pub const RICH_OWNERS: &[(&str, (u32, u32))] = &[
    (".", (0, 0)),
    ("dir", (1000, 1000)),
    ("dir/file", (1000, 1001)),
    ("dir/sub", (1, 2)),
    ("dir/sub/deep", (1, 2)),
    ("link-in", (3, 4)),
    ("link-out", (5, 6)),
    ("link-dir-out", (5, 6)),
    ("hl-a", (1000, 1000)),
    ("hl-b", (1000, 1000)),
    ("dir/hl-c", (1000, 1000)),
    ("chr", (7, 8)),
    ("blk", (9, 10)),
    ("fifo", (11, 12)),
    ("sock", (13, 14)),
    ("suid", (0, 0)),
    ("sgid", (1000, 1000)),
    ("suid-sgid", (0, 1000)),
    ("sgid-dir", (1000, 1000)),
    ("cap", (0, 0)),
    ("acl-file", (0, 0)),
    ("acl-dir", (1000, 1000)),
    ("empty-dir", (65535, 65535)),
];

/// Modes of the rich tree's entries whose special bits matter.
pub const RICH_MODES: &[(&str, u32)] = &[
    ("suid", 0o4755),
    ("sgid", 0o2755),
    ("suid-sgid", 0o6750),
    ("sgid-dir", 0o2775),
];

/// Make under `root` (an existing directory) one entry of every kind, owned by the container
/// ids of [`RICH_OWNERS`] stored through `side`: directories, files, symlinks (one to a file and
/// one to a directory outside the filesystem, in `outside`), a file with three hardlinks,
/// character and block devices, a fifo, a socket, setuid/setgid files and a setgid directory,
/// a file with a (v2) capability, POSIX access and default ACLs naming container ids 1000/1001.
pub fn build_rich(root: &Path, side: &Side, outside: &Path) {
    let p = |r: &str| root.join(r);
    fs::create_dir_all(p("dir/sub")).unwrap();
    fs::write(p("dir/file"), b"file").unwrap();
    fs::write(p("dir/sub/deep"), b"deep").unwrap();
    symlink("dir/file", p("link-in")).unwrap();
    fs::write(outside.join("outside-file"), b"outside").unwrap();
    fs::create_dir_all(outside.join("outside-dir")).unwrap();
    symlink(outside.join("outside-file"), p("link-out")).unwrap();
    symlink(outside.join("outside-dir"), p("link-dir-out")).unwrap();
    fs::write(p("hl-a"), b"linked").unwrap();
    fs::hard_link(p("hl-a"), p("hl-b")).unwrap();
    fs::hard_link(p("hl-a"), p("dir/hl-c")).unwrap();
    mknod(&p("chr"), b'c', 1, 3);
    mknod(&p("blk"), b'b', 7, 200);
    mknod(&p("fifo"), b'p', 0, 0);
    drop(std::os::unix::net::UnixListener::bind(p("sock")).unwrap());
    for f in ["suid", "sgid", "suid-sgid", "cap", "acl-file"] {
        fs::write(p(f), b"#!/bin/sh\n").unwrap();
    }
    fs::create_dir(p("sgid-dir")).unwrap();
    fs::create_dir(p("acl-dir")).unwrap();
    fs::create_dir(p("empty-dir")).unwrap();
    for (rel, (u, g)) in RICH_OWNERS {
        lchown(&p(rel), side.uid(*u), side.gid(*g));
    }
    // After chown: chown would clear these.
    for (rel, m) in RICH_MODES {
        chmod(&p(rel), *m);
    }
    cmd(
        "setcap",
        &[OsStr::new("cap_net_raw+ep"), p("cap").as_os_str()],
    );
    let (u, g) = (side.uid(1000), side.gid(1000));
    let spec = format!("u:{u}:rx,g:{g}:r");
    cmd(
        "setfacl",
        &[
            OsStr::new("-m"),
            OsStr::new(&spec),
            p("acl-file").as_os_str(),
        ],
    );
    let dspec = format!("u:{u}:rwx,g:{}:rx", side.gid(1001));
    cmd(
        "setfacl",
        &[
            OsStr::new("-d"),
            OsStr::new("-m"),
            OsStr::new(&dspec),
            p("acl-dir").as_os_str(),
        ],
    );
    cmd(
        "setfacl",
        &[
            OsStr::new("-m"),
            OsStr::new(&spec),
            p("acl-dir").as_os_str(),
        ],
    );
}

/// Assert every entry of the rich tree is owned by its container ids stored through `side`,
/// and the special mode bits are intact.
pub fn assert_rich_owners(root: &Path, side: &Side, what: &str) {
    for (rel, (u, g)) in RICH_OWNERS {
        assert_eq!(
            owner(&root.join(rel)),
            (side.uid(*u), side.gid(*g)),
            "{what}: owner of {rel}"
        );
    }
    for (rel, m) in RICH_MODES {
        assert_eq!(mode(&root.join(rel)) & 0o7777, *m, "{what}: mode of {rel}");
    }
}

/// Files `0..n` spread over directories of `per_dir` files under `root`, each owned by
/// container uid `i % 1000` and gid `(i * 7) % 1000` stored through `side`. Returns their paths.
pub fn many_files(root: &Path, n: usize, per_dir: usize, side: &Side) -> Vec<(PathBuf, u32, u32)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let d = root.join(format!("d{:04}", i / per_dir));
        if i % per_dir == 0 {
            fs::create_dir(&d).unwrap();
            lchown(&d, side.uid(0), side.gid(0));
        }
        let f = d.join(format!("f{i}"));
        fs::File::create(&f).unwrap();
        let (u, g) = ((i % 1000) as u32, ((i * 7) % 1000) as u32);
        lchown(&f, side.uid(u), side.gid(g));
        out.push((f, u, g));
    }
    out
}
