//! btrfs_layers_core::subvolume against a real loop-mounted btrfs, checked with btrfs-progs.

mod common;

use btrfs_layers_core::nested::Method;
use btrfs_layers_core::open::{open_dir, subvolume_id};
use btrfs_layers_core::subvolume::{self, uuid_string};
use common::*;
use nix::errno::Errno;
use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

fn code<T: std::fmt::Debug>(r: btrfs_layers_core::Result<T>) -> &'static str {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.code_str(),
    }
}

#[test]
fn is_subvolume_agrees_with_btrfs_progs() {
    let fs = require_btrfs!();
    let sv = fs.path("sv");
    mk_subvol(&sv);
    fs::create_dir(sv.join("dir")).unwrap();
    fs::write(sv.join("file"), "x").unwrap();
    assert!(subvolume::is_subvolume(&fs.mnt).unwrap());
    assert!(subvolume::is_subvolume(&sv).unwrap());
    assert!(!subvolume::is_subvolume(&sv.join("dir")).unwrap());
    assert!(!subvolume::is_subvolume(&sv.join("file")).unwrap());
    assert_eq!(code(subvolume::is_subvolume(&sv.join("missing"))), "ENOENT");
    assert_eq!(
        code(subvolume::is_subvolume(Path::new("/proc"))),
        "ERR_NOT_BTRFS"
    );
    assert_eq!(code(subvolume::is_subvolume(Path::new(""))), "EINVAL");
}

#[test]
fn create_and_info_match_subvolume_show() {
    let fs = require_btrfs!();
    let p = fs.path("base");
    subvolume::create(&p).unwrap();
    fs::create_dir(p.join("in")).unwrap();
    let nested = p.join("in").join("nested");
    subvolume::create(&nested).unwrap();
    for (path, parent) in [(&p, 5u64), (&nested, 0)] {
        let info = subvolume::info(path).unwrap();
        let show = oracle_show(path);
        assert_eq!(info.id.to_string(), show["Subvolume ID"]);
        assert_eq!(uuid_string(&info.uuid), show["UUID"]);
        assert_eq!(show["Parent UUID"], "-");
        assert_eq!(info.parent_uuid, [0u8; 16]);
        assert_eq!(info.generation.to_string(), show["Generation"]);
        assert_eq!(info.otransid.to_string(), show["Gen at creation"]);
        assert_eq!(info.parent_id.to_string(), show["Parent ID"]);
        assert_eq!(info.name, show["Name"]);
        assert!(!info.read_only());
        if parent != 0 {
            assert_eq!(info.parent_id, parent);
            assert_eq!(info.dir_id, 256);
        }
    }
    let outer = subvolume::info(&p).unwrap();
    let inner = subvolume::info(&nested).unwrap();
    assert_eq!(inner.parent_id, outer.id);
    assert_eq!(
        inner.dir_id,
        std::os::unix::fs::MetadataExt::ino(&fs::metadata(p.join("in")).unwrap())
    );
    // fd form.
    let fd = open_dir(&nested).unwrap();
    assert_eq!(
        subvolume::info_fd(fd.as_fd(), &nested).unwrap().id,
        inner.id
    );
    assert_eq!(subvolume_id(fd.as_fd(), &nested).unwrap(), inner.id);
    // The listing of btrfs-progs has them, at these paths.
    let listed = oracle_list(&fs.mnt);
    assert!(listed
        .iter()
        .any(|l| l.id == outer.id && l.path == "base" && l.top_level == 5));
    assert!(listed
        .iter()
        .any(|l| l.id == inner.id && l.path == "base/in/nested" && l.top_level == outer.id));
}

#[test]
fn create_errors() {
    let fs = require_btrfs!();
    let sv = fs.path("sv");
    mk_subvol(&sv);
    fs::write(fs.path("file"), "x").unwrap();
    let before = oracle_list(&fs.mnt);
    assert_eq!(code(subvolume::create(&sv)), "EEXIST");
    assert_eq!(code(subvolume::create(&fs.path("file"))), "EEXIST");
    assert_eq!(code(subvolume::create(&fs.path("missing/x"))), "ENOENT");
    assert_eq!(code(subvolume::create(Path::new(""))), "EINVAL");
    assert_eq!(code(subvolume::create(&fs.path("a\0b"))), "EINVAL");
    assert_eq!(
        code(subvolume::create(&fs.path(&"x".repeat(256)))),
        "ENAMETOOLONG"
    );
    assert_eq!(code(subvolume::create(&fs.path("sv/.."))), "EINVAL");
    let e = subvolume::create(&sv).unwrap_err();
    assert!(e.is(Errno::EEXIST));
    assert_eq!(e.errno(), Some(libc::EEXIST));
    assert_eq!(e.path.as_deref(), Some(sv.as_path()));
    assert_eq!(oracle_list(&fs.mnt), before, "nothing created");
    let nb = std::env::temp_dir();
    if nix::sys::statfs::statfs(&nb).unwrap().filesystem_type().0 as i64 != BTRFS_SUPER_MAGIC {
        let target = nb.join(format!("btrfs-layers-core-never-{}", std::process::id()));
        assert_eq!(code(subvolume::create(&target)), "ERR_NOT_BTRFS");
        assert!(!target.exists());
    }
    // 255 bytes is fine.
    subvolume::create(&fs.path(&"y".repeat(255))).unwrap();
}

#[test]
fn create_at_and_snapshot_at() {
    let fs = require_btrfs!();
    let dir = open_dir(&fs.mnt).unwrap();
    subvolume::create_at(dir.as_fd(), OsStr::new("via-fd"), &fs.path("via-fd")).unwrap();
    fs::write(fs.path("via-fd/f"), "content").unwrap();
    let src = open_dir(&fs.path("via-fd")).unwrap();
    subvolume::snapshot_at(
        src.as_fd(),
        dir.as_fd(),
        OsStr::new("snap-fd"),
        true,
        &fs.path("snap-fd"),
    )
    .unwrap();
    assert_eq!(fs::read_to_string(fs.path("snap-fd/f")).unwrap(), "content");
    assert!(oracle_ro(&fs.path("snap-fd")));
    assert_eq!(
        oracle_show(&fs.path("snap-fd"))["Parent UUID"],
        oracle_show(&fs.path("via-fd"))["UUID"]
    );
    assert_eq!(
        code(subvolume::create_at(
            dir.as_fd(),
            OsStr::new("via-fd"),
            &fs.path("via-fd")
        )),
        "EEXIST"
    );
}

#[test]
fn snapshot_read_write_and_read_only() {
    let fs = require_btrfs!();
    let src = fs.path("src");
    mk_subvol(&src);
    fs::write(src.join("f"), "hello").unwrap();
    mk_subvol(&src.join("nested"));
    subvolume::snapshot(&src, &fs.path("rw"), false).unwrap();
    subvolume::snapshot(&src, &fs.path("ro"), true).unwrap();
    let s = subvolume::info(&src).unwrap();
    for (name, ro) in [("rw", false), ("ro", true)] {
        let p = fs.path(name);
        let i = subvolume::info(&p).unwrap();
        assert_eq!(i.parent_uuid, s.uuid);
        assert_eq!(uuid_string(&i.parent_uuid), oracle_show(&p)["Parent UUID"]);
        assert_eq!(i.read_only(), ro);
        assert_eq!(subvolume::is_read_only(&p).unwrap(), ro);
        assert_eq!(oracle_ro(&p), ro);
        assert_eq!(fs::read_to_string(p.join("f")).unwrap(), "hello");
        // Not recursive: the nested subvolume is an empty directory in the snapshot.
        assert!(subvolume::list(&p).unwrap().is_empty());
        assert_eq!(fs::read_dir(p.join("nested")).unwrap().count(), 0);
    }
    let e = fs::write(fs.path("ro/g"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    fs::write(fs.path("rw/g"), "x").unwrap();
    assert!(!src.join("g").exists());
}

#[test]
fn snapshot_errors_change_nothing() {
    let fs = require_btrfs!();
    let src = fs.path("src");
    mk_subvol(&src);
    fs::create_dir(fs.path("plain")).unwrap();
    let before = oracle_list(&fs.mnt);
    assert_eq!(
        code(subvolume::snapshot(
            &fs.path("plain"),
            &fs.path("d1"),
            false
        )),
        "EINVAL"
    );
    assert_eq!(
        code(subvolume::snapshot(
            &fs.path("missing"),
            &fs.path("d2"),
            false
        )),
        "ENOENT"
    );
    assert_eq!(
        code(subvolume::snapshot(&src, &fs.path("plain"), true)),
        "EEXIST"
    );
    assert_eq!(code(subvolume::snapshot(&src, &src, false)), "EEXIST");
    assert_eq!(
        code(subvolume::snapshot(&src, &fs.path("missing/d3"), false)),
        "ENOENT"
    );
    assert_eq!(
        code(subvolume::snapshot(Path::new(""), &fs.path("d4"), false)),
        "EINVAL"
    );
    assert_eq!(
        code(subvolume::snapshot(&src, Path::new(""), false)),
        "EINVAL"
    );
    assert_eq!(
        code(subvolume::snapshot(&src, &fs.path(&"z".repeat(256)), false)),
        "ENAMETOOLONG"
    );
    assert_eq!(
        code(subvolume::snapshot(
            Path::new("/proc"),
            &fs.path("d5"),
            false
        )),
        "ERR_NOT_BTRFS"
    );
    let other = require_btrfs!();
    assert_eq!(
        code(subvolume::snapshot(&src, &other.path("x"), false)),
        "EXDEV"
    );
    assert!(oracle_list(&other.mnt).is_empty());
    assert_eq!(oracle_list(&fs.mnt), before);
}

#[test]
fn read_only_flag_round_trip() {
    let fs = require_btrfs!();
    let p = fs.path("sv");
    mk_subvol(&p);
    assert!(!subvolume::is_read_only(&p).unwrap());
    subvolume::set_read_only(&p, true).unwrap();
    assert!(oracle_ro(&p));
    assert!(subvolume::is_read_only(&p).unwrap());
    assert!(subvolume::info(&p).unwrap().read_only());
    subvolume::set_read_only(&p, true).unwrap();
    assert!(oracle_ro(&p));
    subvolume::set_read_only(&p, false).unwrap();
    assert!(!oracle_ro(&p));
    set_ro(&p, true);
    assert!(subvolume::is_read_only(&p).unwrap());
    // fd form.
    let fd = open_dir(&p).unwrap();
    subvolume::set_read_only_fd(fd.as_fd(), false, &p).unwrap();
    assert!(!subvolume::is_read_only_fd(fd.as_fd(), &p).unwrap());
    assert!(!oracle_ro(&p));
    // Not a subvolume.
    fs::create_dir(fs.path("plain")).unwrap();
    assert_eq!(
        code(subvolume::set_read_only(&fs.path("plain"), true)),
        "EINVAL"
    );
    assert_eq!(code(subvolume::is_read_only(&fs.path("plain"))), "EINVAL");
    assert_eq!(code(subvolume::is_read_only(&fs.path("missing"))), "ENOENT");
}

#[test]
fn list_matches_btrfs_subvolume_list() {
    let fs = require_btrfs!();
    let root = fs.path("root");
    mk_subvol(&root);
    for rel in ["a", "a/b", "a/b/c", "d/e/f", "d/e/f/g/h", "z"] {
        mk_subvol(&root.join(rel));
    }
    set_ro(&root.join("a/b"), true);
    let list = subvolume::list(&root).unwrap();
    let mut got: Vec<(PathBuf, u64)> = list.iter().map(|n| (n.path.clone(), n.id)).collect();
    got.sort();
    assert_eq!(got, oracle_below(&fs.mnt, &root));
    assert_eq!(
        list.iter()
            .map(|n| n.path.to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        ["a", "a/b", "a/b/c", "d/e/f", "d/e/f/g/h", "z"]
    );
    assert_eq!(
        subvolume::list_with(&root, Method::TreeSearch).unwrap(),
        list
    );
    assert_eq!(subvolume::list_with(&root, Method::RootRef).unwrap(), list);
    assert_eq!(code(subvolume::list(&root.join("d"))), "EINVAL");
}

#[test]
fn open_child_rejects_a_child_covered_by_a_bind_mount() {
    let fs = require_btrfs!();
    let root = fs.path("root");
    mk_subvol(&root);
    mk_subvol(&root.join("kid"));
    mk_subvol(&fs.path("victim"));
    let fd = open_dir(&root).unwrap();
    let id = subvolume_id(fd.as_fd(), &root).unwrap();
    let fsid = btrfs_layers_core::open::fsid(fd.as_fd(), &root).unwrap();
    let kids = btrfs_layers_core::nested::children(fd.as_fd(), id, &root, Method::Auto).unwrap();
    assert_eq!(kids.len(), 1);
    let child = subvolume::open_child(fd.as_fd(), &kids[0], fsid, &root.join("kid")).unwrap();
    assert_eq!(subvolume_id(child.as_fd(), &root).unwrap(), kids[0].id);
    drop(child);
    let _bind = BindMount::new(&fs.path("victim"), &root.join("kid"));
    let e = subvolume::open_child(fd.as_fd(), &kids[0], fsid, &root.join("kid")).unwrap_err();
    assert_eq!(e.code_str(), "EXDEV", "{e}");
}

#[test]
fn uuid_string_formats_like_btrfs_progs() {
    let fs = require_btrfs!();
    mk_subvol(&fs.path("u"));
    let i = subvolume::info(&fs.path("u")).unwrap();
    let s = uuid_string(&i.uuid);
    assert_eq!(s, oracle_show(&fs.path("u"))["UUID"]);
    assert_eq!(s.len(), 36);
    assert_eq!(
        uuid_string(&[0xab; 16]),
        "abababab-abab-abab-abab-abababababab"
    );
}
