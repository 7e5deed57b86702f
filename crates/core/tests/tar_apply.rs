//! Applying layer tars: every entry type and its metadata, id maps, whiteouts, compression,
//! progress and abort. Needs root (chown, mknod, security.* xattrs), not btrfs.

mod common;
mod tar_apply_support;

use btrfs_layers_core::idmap::{IdMap, IdMapping};
use btrfs_layers_core::{Code, Control};
use nix::errno::Errno;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tar_apply_support::*;

/// A version 2 file capability (cap_net_bind_service, permitted + effective).
const CAPABILITY: &[u8] = &[0, 0, 0, 2, 0, 4, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn every_entry_type() -> Vec<u8> {
    Layer::new()
        .add(Entry::dir("./").mode(0o755).mtime(1_500_000_000))
        .add(
            Entry::dir("etc/")
                .mode(0o750)
                .mtime(1_500_000_100)
                .with_pax("SCHILY.xattr.user.dir", "d"),
        )
        .add(
            Entry::file("etc/passwd", "root:x:0:0::/root:/bin/sh\n")
                .mtime(1_500_000_200)
                .with_pax("mtime", "1500000200.123456789")
                .with_pax("SCHILY.xattr.user.origin", "layer"),
        )
        .add(Entry::hardlink("etc/passwd.lnk", "./etc/passwd"))
        .add(Entry::symlink("etc/alias", "passwd").mtime(1_500_000_300))
        .add(Entry::hardlink("etc/alias.lnk", "etc/alias"))
        .add(
            Entry::file("bin/su", "#!/bin/true\n")
                .mode(0o4755)
                .owned(1000, 1001),
        )
        .add(
            Entry::file("bin/sg", "#!/bin/true\n")
                .mode(0o2711)
                .owned(1000, 1001),
        )
        .add(Entry::dir("tmp").mode(0o1777))
        .add(
            Entry::file("bin/ping", "ping\n")
                .mode(0o755)
                .owned(1000, 1000)
                .with_pax("SCHILY.xattr.security.capability", CAPABILITY),
        )
        .add(Entry::device(EntryType::Char, "dev/null", 1, 3).mode(0o666))
        .add(
            Entry::device(EntryType::Block, "dev/loop9", 7, 9)
                .mode(0o660)
                .owned(0, 6),
        )
        .add(
            Entry::device(EntryType::Fifo, "run/fifo", 0, 0)
                .mode(0o620)
                .mtime(1_500_000_400),
        )
        .add(Entry::file("empty", ""))
        .add(
            Entry::file("acl", "acl\n")
                .mode(0o774)
                .with_pax("SCHILY.xattr.system.posix_acl_access", acl()),
        )
        .finish()
}

/// An access ACL: user::rwx, user:1000:rw-, group::r-x, mask::rwx, other::r--.
fn acl() -> Vec<u8> {
    let mut out = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 7u16, u32::MAX),
        (0x02, 6, 1000),
        (0x04, 5, u32::MAX),
        (0x10, 7, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        out.extend(tag.to_le_bytes());
        out.extend(perm.to_le_bytes());
        out.extend(id.to_le_bytes());
    }
    out
}

#[test]
fn applies_every_entry_type_with_its_metadata() {
    let s = Scratch::new();
    let applied = s.apply(&every_entry_type()).unwrap();
    assert_eq!(applied, 26 + 12 + 12 + 5 + 4);

    let root = node(&s.root);
    assert_eq!((root.mode, root.mtime.0), (0o755, 1_500_000_000));
    let etc = node(&s.path("etc"));
    assert_eq!(
        (etc.kind, etc.mode, etc.mtime),
        (libc::S_IFDIR, 0o750, (1_500_000_100, 0)),
        "dir times last"
    );
    assert_eq!(etc.xattrs, vec![(b"user.dir".to_vec(), b"d".to_vec())]);

    let passwd = node(&s.path("etc/passwd"));
    assert_eq!(passwd.content, b"root:x:0:0::/root:/bin/sh\n");
    assert_eq!((passwd.mode, passwd.uid, passwd.gid), (0o644, 0, 0));
    assert_eq!(passwd.mtime, (1_500_000_200, 123_456_789));
    assert_eq!(
        passwd.xattrs,
        vec![(b"user.origin".to_vec(), b"layer".to_vec())]
    );
    assert_eq!(
        node(&s.path("etc/passwd.lnk")).ino,
        passwd.ino,
        "hardlink shares the inode"
    );

    let alias = node(&s.path("etc/alias"));
    assert_eq!(
        (alias.kind, alias.link.as_slice(), alias.mtime.0),
        (libc::S_IFLNK, &b"passwd"[..], 1_500_000_300)
    );
    let alias_lnk = node(&s.path("etc/alias.lnk"));
    assert_eq!(
        (alias_lnk.kind, alias_lnk.ino),
        (libc::S_IFLNK, alias.ino),
        "a link to a symlink links the symlink"
    );

    let su = node(&s.path("bin/su"));
    assert_eq!(
        (su.mode, su.uid, su.gid),
        (0o4755, 1000, 1001),
        "setuid survives the chown"
    );
    assert_eq!(node(&s.path("bin/sg")).mode, 0o2711);
    assert_eq!(node(&s.path("tmp")).mode, 0o1777);
    let ping = node(&s.path("bin/ping"));
    assert_eq!(ping.uid, 1000);
    assert_eq!(
        xattr(&s.path("bin/ping"), b"security.capability").as_deref(),
        Some(CAPABILITY),
        "set after chown"
    );

    let null = node(&s.path("dev/null"));
    assert_eq!(
        (null.kind, null.rdev, null.mode),
        (libc::S_IFCHR, libc::makedev(1, 3), 0o666)
    );
    let lp = node(&s.path("dev/loop9"));
    assert_eq!(
        (lp.kind, lp.rdev, lp.mode, lp.gid),
        (libc::S_IFBLK, libc::makedev(7, 9), 0o660, 6)
    );
    let fifo = node(&s.path("run/fifo"));
    assert_eq!(
        (fifo.kind, fifo.mode, fifo.mtime.0),
        (libc::S_IFIFO, 0o620, 1_500_000_400)
    );

    let bin = node(&s.path("bin"));
    assert_eq!(
        (bin.mode, bin.uid, bin.gid),
        (0o755, 0, 0),
        "missing parents: 0755, container root"
    );
    assert_eq!(node(&s.path("empty")).content, b"");
    let acl_file = s.path("acl");
    assert_eq!(node(&acl_file).mode, 0o774);
    assert_eq!(xattr(&acl_file, b"system.posix_acl_access"), Some(acl()));
}

#[test]
fn applying_twice_gives_the_same_tree() {
    let s = Scratch::new();
    s.apply(&every_entry_type()).unwrap();
    let first = snapshot(&s.root);
    s.apply(&every_entry_type()).unwrap();
    let second = snapshot(&s.root);
    // Inode numbers differ, and so do the times of the parents made for missing ones.
    let implicit = [Path::new("bin"), Path::new("dev"), Path::new("run")];
    let strip = |t: &Tree| {
        t.iter()
            .map(|(p, n)| {
                let mtime = if implicit.contains(&p.as_path()) {
                    (0, 0)
                } else {
                    n.mtime
                };
                (
                    p.clone(),
                    Node {
                        ino: 0,
                        mtime,
                        ..n.clone()
                    },
                )
            })
            .collect::<Tree>()
    };
    assert_eq!(strip(&first), strip(&second));
}

#[test]
fn maps_ids_to_the_host() {
    let s = Scratch::new();
    let map = IdMapping::new(
        &[IdMap {
            container_id: 0,
            host_id: 100_000,
            size: 65_536,
        }],
        "uid",
    )
    .unwrap();
    let layer = Layer::new()
        .add(
            Entry::file("home/user/file", "x")
                .owned(1000, 1001)
                .mode(0o4750),
        )
        .add(Entry::symlink("home/user/link", "file").owned(1000, 1000))
        .add(Entry::device(EntryType::Fifo, "fifo", 0, 0).owned(5, 6))
        .finish();
    s.apply_with(&layer[..], &map, &map, Control::NONE).unwrap();
    let file = node(&s.path("home/user/file"));
    assert_eq!((file.uid, file.gid, file.mode), (101_000, 101_001, 0o4750));
    let link = node(&s.path("home/user/link"));
    assert_eq!(
        (link.uid, link.gid),
        (101_000, 101_000),
        "the symlink itself is chowned"
    );
    let fifo = node(&s.path("fifo"));
    assert_eq!((fifo.uid, fifo.gid), (100_005, 100_006));
    let home = node(&s.path("home"));
    assert_eq!(
        (home.uid, home.gid),
        (100_000, 100_000),
        "missing parents belong to container root"
    );

    let outside = Layer::new()
        .add(Entry::file("far", "x").owned(70_000, 0))
        .finish();
    let err = s
        .apply_with(&outside[..], &map, &map, Control::NONE)
        .unwrap_err();
    assert_eq!(err.code, Code::IdMapping);
    assert!(!s.path("far").exists(), "checked before anything is made");
}

/// A lower layer: what whiteouts hide.
fn lower(s: &Scratch) {
    for d in ["a/sub", "b/deep/er", "d/sub"] {
        fs::create_dir_all(s.path(d)).unwrap();
    }
    for f in [
        "a/keep",
        "a/gone",
        "a/sub/x",
        "b/deep/er/f",
        "c",
        "d/old",
        "d/sub/old",
    ] {
        fs::write(s.path(f), f).unwrap();
    }
}

#[test]
fn whiteouts_remove_lower_entries() {
    let s = Scratch::new();
    lower(&s);
    let layer = Layer::new()
        .file("a/.wh.gone", "")
        .file(".wh.b", "")
        .file(".wh.c", "")
        .file("a/.wh.never-existed", "")
        .file(".wh..wh.plnk", "")
        .finish();
    s.apply(&layer).unwrap();
    assert!(s.path("a/keep").exists() && s.path("a/sub/x").exists());
    for gone in ["a/gone", "b", "c"] {
        assert!(fs::symlink_metadata(s.path(gone)).is_err(), "{gone}");
    }
    for never in ["a/.wh.gone", ".wh.b", ".wh..wh.plnk", "a/.wh.never-existed"] {
        assert!(
            fs::symlink_metadata(s.path(never)).is_err(),
            "whiteout file {never} was created"
        );
    }
}

#[test]
fn opaque_whiteouts_keep_this_layers_entries_in_either_order() {
    let orders = [
        Layer::new()
            .dir("d/")
            .file("d/new", "n")
            .dir("d/sub/")
            .file("d/sub/new", "n")
            .file("d/.wh..wh..opq", ""),
        Layer::new()
            .file("d/.wh..wh..opq", "")
            .dir("d/")
            .file("d/new", "n")
            .dir("d/sub/")
            .file("d/sub/new", "n"),
        Layer::new()
            .file("d/new", "n")
            .file("d/sub/new", "n")
            .file("d/.wh..wh..opq", ""),
    ];
    for (i, layer) in orders.into_iter().enumerate() {
        let s = Scratch::new();
        lower(&s);
        s.apply(&layer.finish()).unwrap();
        let tree: Vec<_> = snapshot(&s.path("d")).into_keys().collect();
        let want: Vec<&Path> = ["", "new", "sub", "sub/new"]
            .iter()
            .map(Path::new)
            .collect();
        assert_eq!(tree, want, "order {i}");
        assert!(
            s.path("a/gone").exists(),
            "order {i}: other directories untouched"
        );
    }
}

#[test]
fn whiteouts_never_hide_this_layers_entries_in_either_order() {
    for first in [true, false] {
        let s = Scratch::new();
        lower(&s);
        let (entry, whiteout) = (Entry::file("c", "new c"), Entry::file(".wh.c", ""));
        let dir_entry = Entry::file("b/deep/new", "new");
        let dir_whiteout = Entry::file(".wh.b", "");
        let layer = if first {
            Layer::new()
                .add(entry)
                .add(whiteout)
                .add(dir_entry)
                .add(dir_whiteout)
        } else {
            Layer::new()
                .add(whiteout)
                .add(entry)
                .add(dir_whiteout)
                .add(dir_entry)
        };
        s.apply(&layer.finish()).unwrap();
        assert_eq!(fs::read(s.path("c")).unwrap(), b"new c", "first={first}");
        assert_eq!(
            fs::read(s.path("b/deep/new")).unwrap(),
            b"new",
            "first={first}"
        );
        assert!(
            !s.path("b/deep/er").exists(),
            "first={first}: lower entries under a kept dir go"
        );
    }
}

#[test]
fn entries_replace_what_is_there() {
    let s = Scratch::new();
    lower(&s);
    fs::create_dir_all(s.path("x/y")).unwrap();
    std::os::unix::fs::symlink("a", s.path("lnk")).unwrap();
    let layer = Layer::new()
        .file("a", "a is a file now")
        .dir("c/")
        .file("lnk", "not a link")
        .symlink("x", "/a")
        .finish();
    s.apply(&layer).unwrap();
    assert_eq!(fs::read(s.path("a")).unwrap(), b"a is a file now");
    assert!(fs::symlink_metadata(s.path("c")).unwrap().is_dir());
    assert_eq!(fs::read(s.path("lnk")).unwrap(), b"not a link");
    assert_eq!(fs::read_link(s.path("x")).unwrap(), Path::new("/a"));
}

/// Small files are finished (body, owner, mode, times) off the parsing thread: what a later
/// entry does to a name (a hardlink to it, a new file in its place) still sees stream order,
/// and every file is complete when the apply returns.
#[test]
fn small_files_finished_off_the_parser_keep_stream_order() {
    let s = Scratch::new();
    let big: Vec<u8> = (0..(600u32 << 10)).map(|i| (i % 251) as u8).collect();
    let mut layer = Layer::new()
        .add(Entry::dir("d/").mode(0o755))
        .add(
            Entry::file("d/a", "first")
                .mode(0o640)
                .owned(7, 8)
                .mtime(1_500_000_001),
        )
        .hardlink("d/link", "d/a")
        .add(
            Entry::file("d/a", "second")
                .mode(0o600)
                .mtime(1_500_000_002),
        )
        .add(Entry::file("d/big", &big).mode(0o644).mtime(1_500_000_003));
    for i in 0..300u64 {
        let body = format!("file {i} ").repeat(i as usize % 40);
        let e = Entry::file(format!("d/f{i}"), body).mode(0o600 | (i as u32 % 8) << 3);
        layer = layer.add(e.owned(i, 1000 + i).mtime(1_600_000_000 + i));
    }
    s.apply(&layer.finish()).unwrap();
    let link = fs::symlink_metadata(s.path("d/link")).unwrap();
    assert_eq!(fs::read(s.path("d/link")).unwrap(), b"first");
    assert_eq!(
        (link.mode() & 0o7777, link.uid(), link.gid()),
        (0o640, 7, 8)
    );
    assert_eq!((link.mtime(), link.nlink()), (1_500_000_001, 1));
    let a = fs::symlink_metadata(s.path("d/a")).unwrap();
    assert_eq!(fs::read(s.path("d/a")).unwrap(), b"second");
    assert_eq!((a.mode() & 0o7777, a.mtime()), (0o600, 1_500_000_002));
    assert_eq!(fs::read(s.path("d/big")).unwrap(), big);
    for i in 0..300u64 {
        let p = s.path(&format!("d/f{i}"));
        let m = fs::symlink_metadata(&p).unwrap();
        let body = format!("file {i} ").repeat(i as usize % 40);
        assert_eq!(fs::read(&p).unwrap(), body.as_bytes(), "f{i}");
        let want = (
            0o600 | (i as u32 % 8) << 3,
            i as u32,
            1000 + i as u32,
            1_600_000_000 + i as i64,
        );
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime()),
            want,
            "f{i}"
        );
    }
}

#[test]
fn symlinks_in_the_layer_resolve_inside_it() {
    let s = Scratch::new();
    let layer = Layer::new()
        .dir("usr/lib/")
        .symlink("lib", "/usr/lib")
        .symlink("up", "../../../..")
        .file("lib/libc.so", "libc")
        .file("up/usr/lib/libm.so", "libm")
        .finish();
    s.apply(&layer).unwrap();
    assert_eq!(fs::read(s.path("usr/lib/libc.so")).unwrap(), b"libc");
    assert_eq!(fs::read(s.path("usr/lib/libm.so")).unwrap(), b"libm");
}

#[test]
fn detects_gzip_and_zstd() {
    let layer = every_entry_type();
    let want = {
        let s = Scratch::new();
        s.apply(&layer).unwrap();
        snapshot(&s.root)
            .into_iter()
            .map(|(p, n)| (p, (n.kind, n.mode, n.content, n.link)))
            .collect::<Vec<_>>()
    };
    for compressed in [gzip(&layer), zstd(&layer)] {
        let s = Scratch::new();
        assert_eq!(s.apply(&compressed).unwrap(), 59);
        let got: Vec<_> = snapshot(&s.root)
            .into_iter()
            .map(|(p, n)| (p, (n.kind, n.mode, n.content, n.link)))
            .collect();
        assert_eq!(got, want);
    }
}

#[test]
fn long_names_through_pax_and_gnu() {
    let s = Scratch::new();
    let deep = format!("{}/file", ["component"; 30].join("/"));
    let gnu = format!("{}/gnu", ["gnu-long"; 20].join("/"));
    let layer = Layer::new()
        .file(&deep, "deep")
        .hardlink("short", &deep)
        .gnu_long_name(gnu.as_bytes())
        .add(Entry::file("truncated-name-ignored", "gnu"))
        .finish();
    s.apply(&layer).unwrap();
    assert_eq!(fs::read(s.path(&deep)).unwrap(), b"deep");
    assert_eq!(fs::read(s.path("short")).unwrap(), b"deep");
    assert_eq!(fs::read(s.path(&gnu)).unwrap(), b"gnu");
}

/// Holes count as output for the bomb guard, so this one stays under its 64 MiB floor.
#[test]
fn sparse_files_keep_their_holes() {
    let s = Scratch::new();
    let src = s.dir.join("sparse-src");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::File::create(&src).unwrap();
        f.write_all(b"head").unwrap();
        f.seek(SeekFrom::Start(32 << 20)).unwrap();
        f.write_all(b"middle").unwrap();
        f.set_len(48 << 20).unwrap();
    }
    let mut b = ::tar::Builder::new(Vec::new());
    b.sparse(true);
    b.append_path_with_name(&src, "sparse").unwrap();
    let layer = b.into_inner().unwrap();
    fs::remove_file(&src).unwrap();
    assert!(layer.len() < 1 << 20, "the builder wrote a sparse entry");
    assert_eq!(s.apply(&layer).unwrap(), 48 << 20);
    let m = fs::metadata(s.path("sparse")).unwrap();
    assert_eq!(m.len(), 48 << 20);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "holes stayed holes: {} blocks",
        m.blocks()
    );
    let data = fs::read(s.path("sparse")).unwrap();
    assert_eq!(&data[..4], b"head");
    assert_eq!(&data[32 << 20..(32 << 20) + 6], b"middle");
    assert!(data[4..32 << 20].iter().all(|&b| b == 0));
}

#[test]
fn reports_progress_about_every_mebibyte_and_at_the_end() {
    let s = Scratch::new();
    let layer = Layer::new()
        .add(Entry::file("big", vec![7u8; 10 << 20]))
        .finish();
    let calls = Mutex::new(Vec::new());
    let ids = IdMapping::default();
    let progress = |n: u64| calls.lock().unwrap().push(n);
    let no = AtomicBool::new(false);
    s.apply_with(&layer[..], &ids, &ids, Control::new(&no, &progress))
        .unwrap();
    let calls = calls.into_inner().unwrap();
    assert!(
        calls.len() >= 10 && calls.len() <= 12,
        "{} calls",
        calls.len()
    );
    assert!(calls.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(*calls.last().unwrap(), layer.len() as u64);
}

/// A layer of one huge file whose body trickles in: 64 KiB a millisecond.
struct Trickle {
    header: Vec<u8>,
    sent: u64,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.header.is_empty() {
            let n = self.header.len().min(buf.len());
            buf[..n].copy_from_slice(&self.header[..n]);
            self.header.drain(..n);
            return Ok(n);
        }
        std::thread::sleep(Duration::from_millis(1));
        let n = buf.len().min(64 << 10);
        buf[..n].fill(0x5a);
        self.sent += n as u64;
        Ok(n)
    }
}

/// Apply `input` into `s`, aborting from another thread once 2 MiB of tar went through.
fn apply_aborted_after_two_mebibytes(
    s: &Scratch,
    input: impl Read,
) -> btrfs_layers_core::Result<u64> {
    let abort = AtomicBool::new(false);
    let seen = AtomicU64::new(0);
    let ids = IdMapping::default();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while seen.load(Ordering::Relaxed) < 2 << 20 {
                std::thread::sleep(Duration::from_millis(5));
            }
            abort.store(true, Ordering::Relaxed);
        });
        let progress = |n: u64| seen.store(n, Ordering::Relaxed);
        s.apply_with(input, &ids, &ids, Control::new(&abort, &progress))
    })
}

#[test]
fn abort_from_another_thread_stops_mid_stream() {
    let s = Scratch::new();
    let header = Entry::file("endless", "").header(1 << 40).to_vec();
    let err = apply_aborted_after_two_mebibytes(&s, Trickle { header, sent: 0 }).unwrap_err();
    assert_eq!(err.code, Code::Aborted, "{err}");
    assert_eq!(err.code_str(), "ABORT_ERR");
    assert!(fs::metadata(s.path("endless")).unwrap().len() < 1 << 30);
}

#[test]
fn abort_set_before_the_start_changes_nothing() {
    let s = Scratch::new();
    let ids = IdMapping::default();
    let err = s
        .apply_with(
            &every_entry_type()[..],
            &ids,
            &ids,
            Control::abort_on(&AtomicBool::new(true)),
        )
        .unwrap_err();
    assert_eq!(err.code, Code::Aborted);
    assert_eq!(fs::read_dir(&s.root).unwrap().count(), 0);
}

/// Counts the bytes read through it.
struct Counted<'a, R> {
    inner: R,
    read: &'a AtomicU64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[test]
fn abort_stops_a_compressed_stream_mid_stream() {
    // Under a decompressor (which may inflate on a thread apart from the parser's), an
    // abort still stops the apply while a gzip stream keeps coming.
    let s = Scratch::new();
    let header = Entry::file("endless", "").header(1 << 40).to_vec();
    let gz = flate2::read::GzEncoder::new(Trickle { header, sent: 0 }, flate2::Compression::fast());
    let err = apply_aborted_after_two_mebibytes(&s, gz).unwrap_err();
    assert_eq!(err.code, Code::Aborted, "{err}");
    assert!(fs::metadata(s.path("endless")).unwrap().len() < 1 << 30);
}

#[test]
fn a_parse_error_stops_reading_a_compressed_input() {
    // A bad first header, then 1 GiB more: the input stops being read and inflated once
    // the parser has failed, not at its end.
    let s = Scratch::new();
    let mut bad = Entry::file("x", "").header(0);
    bad[148..156].copy_from_slice(b"0000000\0");
    let rest = io::repeat(0x5a).take(1 << 30);
    let uncompressed = AtomicU64::new(0);
    let tar = Counted {
        inner: (&bad[..]).chain(rest),
        read: &uncompressed,
    };
    let gz = flate2::read::GzEncoder::new(tar, flate2::Compression::fast());
    let err = s.apply_from(gz).unwrap_err();
    assert_eq!(err.code, Code::BadLayer, "{err}");
    let read = uncompressed.load(Ordering::Relaxed);
    assert!(read < 64 << 20, "read {read} bytes after the parser failed");
}

/// Serves `data`, then fails with EIO.
struct FailsAfter<'a> {
    data: &'a [u8],
}

impl Read for FailsAfter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.data.is_empty() {
            return Err(io::Error::from_raw_os_error(Errno::EIO as i32));
        }
        self.data.read(buf)
    }
}

#[test]
fn an_input_error_mid_compressed_stream_fails_the_entry_being_read() {
    // An input error under the decompressor is the error of the entry being read: its
    // errno and that entry's path (whichever thread inflates).
    let s = Scratch::new();
    let layer = Layer::new()
        .add(Entry::file("big", vec![7u8; 8 << 20]))
        .finish();
    let gz = gzip(&layer);
    let err = s
        .apply_from(FailsAfter {
            data: &gz[..gz.len() / 2],
        })
        .unwrap_err();
    assert_eq!(err.code, Code::Errno(Errno::EIO), "{err}");
    assert_eq!(err.path.as_deref(), Some(Path::new("big")), "{err}");
}

/// A tmpfs mounted inside the layer, unmounted on drop.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn never_crosses_into_a_mount_inside_the_layer() {
    let s = Scratch::new();
    let mnt = s.path("mnt");
    fs::create_dir(&mnt).unwrap();
    let flags = nix::mount::MsFlags::empty();
    if let Err(e) = nix::mount::mount(Some("tmpfs"), &mnt, Some("tmpfs"), flags, None::<&str>) {
        eprintln!("skipped: cannot mount tmpfs ({e})");
        return;
    }
    let _guard = Mounted(mnt.clone());
    fs::write(mnt.join("kept"), b"on another filesystem").unwrap();
    for layer in [
        Layer::new().file("mnt/x", "x"),
        Layer::new().file(".wh.mnt", ""),
        Layer::new().file("mnt", "replace the mount point"),
        Layer::new().file("mnt/.wh.kept", ""),
        Layer::new().symlink("m", "/mnt").file("m/x", "x"),
    ] {
        let err = s.apply(&layer.finish()).unwrap_err();
        assert!(err.is(Errno::EXDEV) || err.is(Errno::EBUSY), "{err}");
        assert_eq!(
            fs::read(mnt.join("kept")).unwrap(),
            b"on another filesystem"
        );
        assert!(!mnt.join("x").exists());
    }
}

/// A tree with something of every kind, times fixed, for GNU tar to archive.
fn gnu_tar_source(dir: &Path) {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let long = dir.join(["long-directory-name"; 8].join("/"));
    fs::create_dir_all(&long).unwrap();
    fs::write(long.join("file-with-a-long-path"), b"long").unwrap();
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(dir.join("etc/passwd"), b"root:x:0:0\n").unwrap();
    fs::hard_link(dir.join("etc/passwd"), dir.join("etc/passwd-")).unwrap();
    symlink("../etc/passwd", dir.join("etc/link")).unwrap();
    fs::write(dir.join("su"), b"su").unwrap();
    nix::unistd::chown(&dir.join("su"), Some(1234.into()), Some(4321.into())).unwrap();
    fs::set_permissions(dir.join("su"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(dir.join("etc"), fs::Permissions::from_mode(0o750)).unwrap();
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o640)).unwrap();
    fs::write(dir.join("tagged"), b"tagged").unwrap();
    set_xattr(&dir.join("tagged"), "user.tag", b"value");
    let paths: Vec<_> = snapshot(dir).into_keys().collect();
    for p in paths.iter().rev() {
        set_mtime(&dir.join(p), 1_400_000_000 + p.as_os_str().len() as i64);
    }
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: c and n are NUL-terminated; value has value.len() readable bytes.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0);
}

#[test]
fn gnu_tar_archives_apply_like_the_tree_they_came_from() {
    require_tools!("tar");
    // GNU tar writes xattrs in POSIX archives only.
    for (format, xattrs) in [("gnu", false), ("posix", true)] {
        let s = Scratch::new();
        let src = s.dir.join("src");
        fs::create_dir(&src).unwrap();
        gnu_tar_source(&src);
        let archive = s.dir.join("layer.tar");
        let mut tar = std::process::Command::new("tar");
        if xattrs {
            tar.args(["--xattrs", "--xattrs-include=*"]);
        }
        let status = tar
            .args(["--numeric-owner", &format!("--format={format}"), "-cf"])
            .arg(&archive)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        s.apply(&fs::read(&archive).unwrap()).unwrap();
        let strip = |t: Tree| {
            let strip_xattrs = |n: Node| if xattrs { n.xattrs } else { Vec::new() };
            t.into_iter()
                .map(|(p, n)| {
                    (
                        p,
                        Node {
                            ino: 0,
                            xattrs: strip_xattrs(n.clone()),
                            ..n
                        },
                    )
                })
                .collect::<Tree>()
        };
        let (want, got) = (strip(snapshot(&src)), strip(snapshot(&s.root)));
        for (path, node) in &want {
            assert_eq!(got.get(path), Some(node), "{format}: {}", path.display());
        }
        assert_eq!(got.len(), want.len(), "{format}");
        let ino = |p: &str| node(&s.path(p)).ino;
        assert_eq!(ino("etc/passwd"), ino("etc/passwd-"), "{format}: hardlink");
    }
}
