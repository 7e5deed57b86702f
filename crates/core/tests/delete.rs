//! btrfs_layers_core::delete against a real loop-mounted btrfs, checked with btrfs-progs.

mod common;

use btrfs_layers_core::delete;
use btrfs_layers_core::open::open_dir;
use common::*;
use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

fn code(r: btrfs_layers_core::Result<()>) -> &'static str {
    r.err().map(|e| e.code_str()).unwrap_or("ok")
}

fn paths_below(fs: &Btrfs, p: &Path) -> Vec<String> {
    oracle_below(&fs.mnt, p)
        .into_iter()
        .map(|(p, _)| p.to_string_lossy().into_owned())
        .collect()
}

fn build_tree(root: &Path) -> usize {
    mk_subvol(root);
    fs::write(root.join("f"), "root file").unwrap();
    let nested = [
        "a",
        "a/b",
        "a/b/c",
        "a/b/c/d",
        "plain/x",
        "plain/deeper/still/y",
        "plain/deeper/still/y/in/z",
        "q",
    ];
    for rel in nested {
        mk_subvol(&root.join(rel));
        fs::write(root.join(rel).join("f"), rel).unwrap();
    }
    nested.len()
}

#[test]
fn delete_a_leaf() {
    let fs = require_btrfs!();
    mk_subvol(&fs.path("leaf"));
    fs::write(fs.path("leaf/f"), "x").unwrap();
    mk_subvol(&fs.path("keep"));
    delete::delete(&fs.path("leaf"), false).unwrap();
    assert!(!fs.path("leaf").exists());
    assert_eq!(paths_below(&fs, &fs.mnt), ["keep"]);
}

#[test]
fn delete_recursive_at_every_depth_with_read_only_members() {
    let fs = require_btrfs!();
    let root = fs.path("root");
    build_tree(&root);
    set_ro(&root.join("a/b"), true);
    set_ro(&root.join("a/b/c/d"), true);
    set_ro(&root.join("plain/deeper/still/y/in/z"), true);
    set_ro(&root, true);
    mk_subvol(&fs.path("root2"));
    mk_subvol(&fs.path("root2/a"));
    delete::delete(&root, true).unwrap();
    assert!(!root.exists());
    assert_eq!(paths_below(&fs, &fs.mnt), ["root2", "root2/a"]);
}

#[test]
fn delete_non_recursive_with_children_is_enotempty() {
    let fs = require_btrfs!();
    let root = fs.path("root");
    let n = build_tree(&root);
    let before = oracle_list(&fs.mnt);
    let e = delete::delete(&root, false).unwrap_err();
    assert_eq!(e.code_str(), "ENOTEMPTY");
    assert_eq!(e.errno(), Some(libc::ENOTEMPTY));
    assert_eq!(e.path.as_deref(), Some(root.as_path()));
    assert_eq!(oracle_list(&fs.mnt), before);
    assert_eq!(before.len(), n + 1);
}

#[test]
fn delete_rejects_what_is_not_a_subvolume() {
    let fs = require_btrfs!();
    mk_subvol(&fs.path("sv"));
    fs::create_dir(fs.path("plain")).unwrap();
    fs::write(fs.path("file"), "x").unwrap();
    std::os::unix::fs::symlink(fs.path("sv"), fs.path("link")).unwrap();
    let before = oracle_list(&fs.mnt);
    assert_eq!(code(delete::delete(&fs.path("plain"), true)), "EINVAL");
    assert_eq!(code(delete::delete(&fs.path("file"), false)), "EINVAL");
    assert_eq!(code(delete::delete(&fs.path("link"), true)), "EINVAL");
    assert_eq!(code(delete::delete(&fs.path("missing"), true)), "ENOENT");
    assert_eq!(code(delete::delete(Path::new(""), true)), "EINVAL");
    assert_eq!(code(delete::delete(&fs.path("x\0y"), true)), "EINVAL");
    assert_eq!(
        code(delete::delete(&fs.path(&"n".repeat(256)), true)),
        "ENAMETOOLONG"
    );
    assert_eq!(code(delete::delete(&fs.path("sv/.."), true)), "EINVAL");
    assert_eq!(
        code(delete::delete(Path::new("/proc/self"), true)),
        "ERR_NOT_BTRFS"
    );
    assert_eq!(oracle_list(&fs.mnt), before);
    assert!(fs.path("plain").is_dir() && fs.path("file").is_file() && fs.path("link").exists());
}

#[test]
fn delete_at_fd_form() {
    let fs = require_btrfs!();
    build_tree(&fs.path("t"));
    let dir = open_dir(&fs.mnt).unwrap();
    assert_eq!(
        code(delete::delete_at(
            dir.as_fd(),
            OsStr::new("t"),
            false,
            &fs.path("t")
        )),
        "ENOTEMPTY"
    );
    delete::delete_at(dir.as_fd(), OsStr::new("t"), true, &fs.path("t")).unwrap();
    assert!(oracle_list(&fs.mnt).is_empty());
}

#[test]
fn delete_recursive_with_more_than_255_children() {
    let fs = require_btrfs!();
    let root = fs.path("wide");
    mk_subvol(&root);
    fs::create_dir(root.join("d")).unwrap();
    for i in 0..400 {
        let p: PathBuf = if i % 2 == 0 {
            root.join(format!("k{i}"))
        } else {
            root.join("d").join(format!("k{i}"))
        };
        btrfs_layers_core::subvolume::create(&p).unwrap();
    }
    mk_subvol(&root.join("k0/grandkid"));
    assert_eq!(oracle_list(&fs.mnt).len(), 402);
    delete::delete(&root, true).unwrap();
    assert!(oracle_list(&fs.mnt).is_empty());
}

#[test]
fn recursive_delete_never_reaches_outside() {
    let fs = require_btrfs!();
    let via_link = Sentinel::new("link");
    let via_bind = Sentinel::new("bind");
    let cover = Sentinel::new("cover");
    let root = fs.path("layer");
    build_tree(&root);
    // Same-filesystem victim, also bind-mounted inside and symlinked from inside.
    let victim = fs.path("victim");
    mk_subvol(&victim);
    mk_subvol(&victim.join("victim-kid"));
    fs::write(victim.join("precious"), "keep").unwrap();
    std::os::unix::fs::symlink(&via_link.dir, root.join("escape")).unwrap();
    std::os::unix::fs::symlink(&via_link.dir, root.join("a/b/escape")).unwrap();
    std::os::unix::fs::symlink(&victim, root.join("a/victim-link")).unwrap();
    fs::create_dir(root.join("bound")).unwrap();
    let _b1 = BindMount::new(&via_bind.dir, &root.join("bound"));
    fs::create_dir(root.join("a/b/samefs")).unwrap();
    let _b2 = BindMount::new(&victim, &root.join("a/b/samefs"));
    // A nested leaf hidden under a bind mount of an outside directory.
    mk_subvol(&root.join("hidden-dir/hidden"));
    let _b3 = BindMount::new(&cover.dir, &root.join("hidden-dir"));

    delete::delete(&root, true).unwrap();

    via_link.assert_intact();
    via_bind.assert_intact();
    cover.assert_intact();
    assert_eq!(fs::read_to_string(victim.join("precious")).unwrap(), "keep");
    assert_eq!(paths_below(&fs, &fs.mnt), ["victim", "victim/victim-kid"]);
}

#[test]
fn deleting_a_name_with_a_mount_on_it_is_refused() {
    let fs = require_btrfs!();
    mk_subvol(&fs.path("victim"));
    fs::write(fs.path("victim/precious"), "keep").unwrap();
    mk_subvol(&fs.path("layer"));
    let _b = BindMount::new(&fs.path("victim"), &fs.path("layer"));
    let e = delete::delete(&fs.path("layer"), true).unwrap_err();
    assert_eq!(e.code_str(), "EBUSY", "{e}");
    drop(_b);
    assert_eq!(paths_below(&fs, &fs.mnt), ["layer", "victim"]);
    assert_eq!(
        fs::read_to_string(fs.path("victim/precious")).unwrap(),
        "keep"
    );
}
