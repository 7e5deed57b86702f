//! The inode-table way of remap_tree (Method::Auto on a whole subvolume) next to the statx way
//! (Method::Statx), with `stat`, `getcap` and `getfacl` as the oracles: both ways leave every
//! kind of inode the same; when the table is taken and when it is not (a directory inside a
//! subvolume, a mount point inside the tree); the table is current (a chown made just before
//! the remap is seen); a nested subvolume whose id is also an inode number of the tree is told
//! apart. Needs root; skipped loudly otherwise. (Without CAP_SYS_ADMIN: remap_nocap.rs.)

mod common;
mod remap_support;

use btrfs_layers_core::inodes::InodeTable;
use btrfs_layers_core::remap::Method;
use btrfs_layers_core::{Code, Control};
use common::{mk_subvol, run, Sentinel, Tmpfs};
use remap_support::*;
use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::Path;

const S1: u32 = 100_000;
const S2: u32 = 200_000;

/// `stat --printf` of each of `rels` under `root`: owner, mode, type, links, device numbers.
fn stat_of(root: &Path, rels: &[&str]) -> Vec<String> {
    let mut args = vec![
        OsStr::new("--printf").to_os_string(),
        OsStr::new("%u %g %a %F %h %t:%T\\n").to_os_string(),
        OsStr::new("--").to_os_string(),
    ];
    args.extend(rels.iter().map(|r| root.join(r).into_os_string()));
    run("stat", &args).lines().map(str::to_string).collect()
}

#[test]
fn both_ways_leave_every_kind_of_inode_alike_by_stat_getcap_and_getfacl() {
    let fs = require_btrfs!();
    require_tools!("setcap", "setfacl", "getcap", "getfacl");
    let rels: Vec<&str> = RICH_OWNERS.iter().map(|(r, _)| *r).collect();
    let mut seen = Vec::new();
    for (tag, m) in [("table", Method::Auto), ("statx", Method::Statx)] {
        let root = fs.path(tag);
        mk_subvol(&root);
        let outside = Sentinel::new(tag);
        build_rich(&root, &Side::identity(), &outside.dir);
        let before = stat_of(&root, &rels);
        set_method(m);
        let out = remap_ok(&root, &Side::identity(), &Side::shifted(S1), false);
        // 21 inodes (the hardlinked file once), 6 of them directories.
        expect_table(&out, 15);
        assert_eq!((out.visited, out.changed), (21, 21), "{tag}");
        let after = stat_of(&root, &rels);
        for (((rel, (u, g)), b), a) in RICH_OWNERS.iter().zip(&before).zip(&after) {
            let (bf, af): (Vec<&str>, Vec<&str>) = (b.split(' ').collect(), a.split(' ').collect());
            assert_eq!(
                (af[0], af[1]),
                ((S1 + u).to_string().as_str(), (S1 + g).to_string().as_str()),
                "{tag}: stat of {rel}: {a}"
            );
            // Mode (setuid/setgid included), type, link count and device numbers as before.
            assert_eq!(&af[2..], &bf[2..], "{tag}: stat of {rel}: {b} -> {a}");
        }
        let cap = run("getcap", &[root.join("cap")]);
        assert!(cap.contains("cap_net_raw=ep"), "{tag}: getcap: {cap}");
        let acls = (
            getfacl(&root.join("acl-file")),
            getfacl(&root.join("acl-dir")),
        );
        assert!(
            acls.0.contains(&format!("user:{}:r-x", S1 + 1000)),
            "{tag}: {acls:?}"
        );
        assert!(
            acls.1.contains(&format!("default:group:{}:r-x", S1 + 1001)),
            "{tag}: {acls:?}"
        );
        // Relative to the tree: both ways must agree byte for byte.
        let acl_rel = |v: Vec<String>| -> Vec<String> {
            v.into_iter().filter(|l| !l.starts_with("# file")).collect()
        };
        seen.push((
            after,
            cap.replace(tag, ""),
            acl_rel(acls.0),
            acl_rel(acls.1),
        ));
        outside.assert_intact();
    }
    assert_eq!(seen[0], seen[1], "the table way and the statx way differ");
}

#[test]
fn the_table_is_taken_for_a_whole_subvolume_not_for_a_directory_inside_one() {
    let fs = require_btrfs!();
    let root = fs.path("t");
    mk_subvol(&root);
    let files = many_files(&root, 50, 10, &Side::identity());
    set_method(Method::Auto);
    let out = remap_ok(&root, &Side::identity(), &Side::shifted(S1), false);
    assert_eq!((out.visited, out.from_table), (56, 50));
    // A directory inside: the table would cover all of the subvolume for a part of it.
    let out = remap_ok(
        &root.join("d0000"),
        &Side::shifted(S1),
        &Side::shifted(S2),
        false,
    );
    assert_eq!((out.visited, out.from_table), (11, 0));
    for (f, u, g) in &files {
        let base = if f.starts_with(root.join("d0000")) {
            S2
        } else {
            S1
        };
        assert_eq!(owner(f), (base + u, base + g), "{}", f.display());
    }
    assert_eq!(owner(&root.join("d0000")), (S2, S2));
    assert_eq!(owner(&root.join("d0001")), (S1, S1));
    // Nothing to change: by the table still, by Method::Statx never.
    let out = remap_ok(&root, &Side::identity(), &Side::identity(), false);
    assert_eq!((out.visited, out.changed, out.from_table), (56, 0, 50));
    set_method(Method::Statx);
    let out = remap_ok(&root, &Side::identity(), &Side::identity(), false);
    assert_eq!((out.visited, out.changed, out.from_table), (56, 0, 0));
}

#[test]
fn a_chown_made_just_before_the_remap_is_seen() {
    let fs = require_btrfs!();
    let root = fs.path("t");
    mk_subvol(&root);
    fs::create_dir(root.join("d")).unwrap();
    for f in ["a", "d/b", "d/c"] {
        fs::write(root.join(f), b"x").unwrap();
    }
    for f in ["", "d", "a", "d/b", "d/c"] {
        lchown(&root.join(f), S1 + 1, S1 + 1);
    }
    // Committed: the btree holds S1+1 for every inode.
    run("btrfs", &["filesystem", "sync", root.to_str().unwrap()]);
    // Then, without a sync, d/b moves out of the from-mapping (S1 + [0, 65536)).
    lchown(&root.join("d/b"), 5, S1 + 2);
    let ino = fs::symlink_metadata(root.join("d/b")).unwrap().ino();
    // The premise: the btree alone still says S1+1 (the chown waits as a delayed item).
    let dir = fs::File::open(&root).unwrap();
    let stale = InodeTable::read_committed(dir.as_fd(), Control::NONE, &root)
        .unwrap()
        .unwrap();
    let uid = stale.get(ino).expect("d/b is in the btree").uid;
    assert_eq!(
        uid,
        S1 + 1,
        "the btree already had the new owner: the test proves nothing"
    );

    set_method(Method::Auto);
    let out = remap(&root, &Side::shifted(S1), &Side::shifted(S2), false).unwrap();
    assert_eq!(out.from_table, 3, "the table way was taken");
    assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
    assert_eq!(out.errors[0].code, Code::IdMapping);
    assert_eq!(
        out.errors[0].path.as_deref(),
        Some(root.join("d/b").as_path())
    );
    assert_eq!(owner(&root.join("d/b")), (5, S1 + 2), "left as it was");
    for f in ["", "d", "a", "d/c"] {
        assert_eq!(owner(&root.join(f)), (S2 + 1, S2 + 1), "{f}");
    }
}

#[test]
fn a_tmpfs_mounted_inside_keeps_its_owners_and_the_statx_way_is_taken() {
    let fs = require_btrfs!();
    let root = fs.path("t");
    mk_subvol(&root);
    fs::create_dir_all(root.join("d/mnt")).unwrap();
    fs::write(root.join("d/f"), b"x").unwrap();
    let _m = Tmpfs::new(&root.join("d/mnt"));
    fs::write(root.join("d/mnt/on-tmpfs"), b"t").unwrap();
    lchown(&root.join("d/mnt/on-tmpfs"), 1234, 1235);
    lchown(&root.join("d/mnt"), 1236, 1237);
    set_method(Method::Auto);
    let out = remap_ok(&root, &Side::identity(), &Side::shifted(S1), false);
    assert_eq!(out.from_table, 0, "a mount point inside: no table");
    // root, d, d/f; the mount point is not part of the tree.
    assert_eq!(out.visited, 3);
    let st = stat_of(&root, &["d/mnt", "d/mnt/on-tmpfs", "d/f", "d"]);
    assert!(st[0].starts_with("1236 1237 "), "{st:?}");
    assert!(st[1].starts_with("1234 1235 "), "{st:?}");
    assert!(st[2].starts_with(&format!("{S1} {S1} ")), "{st:?}");
    assert!(st[3].starts_with(&format!("{S1} {S1} ")), "{st:?}");
}

#[test]
fn a_mount_outside_the_tree_leaves_the_table_on() {
    let fs = require_btrfs!();
    let root = fs.path("t");
    mk_subvol(&root);
    fs::write(root.join("f"), b"x").unwrap();
    // A sibling whose name starts like the tree's, with a mount: not inside the tree.
    fs::create_dir_all(fs.path("t2/mnt")).unwrap();
    let _m = Tmpfs::new(&fs.path("t2/mnt"));
    set_method(Method::Auto);
    let out = remap_ok(&root, &Side::identity(), &Side::shifted(S1), false);
    assert_eq!((out.visited, out.from_table), (2, 1));
    assert_eq!(owner(&root.join("f")), (S1, S1));
}

#[test]
fn a_nested_subvolume_whose_id_is_an_inode_number_of_the_tree_is_told_apart() {
    let fs = require_btrfs!();
    let root = fs.path("t");
    mk_subvol(&root);
    for i in 0..8 {
        fs::write(root.join(format!("f{i}")), b"x").unwrap();
        lchown(&root.join(format!("f{i}")), 10 + i, 20 + i);
    }
    let nested = root.join("n");
    mk_subvol(&nested);
    fs::write(nested.join("inner"), b"i").unwrap();
    lchown(&nested, 1000, 1000);
    lchown(&nested.join("inner"), 1001, 1001);
    // getdents gives a nested subvolume's entry the subvolume id as d_ino; here it is also
    // the inode number of one of the files.
    let d_ino = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.file_name() == "n")
        .unwrap()
        .ino();
    let twin = (0..8)
        .map(|i| root.join(format!("f{i}")))
        .find(|f| fs::symlink_metadata(f).unwrap().ino() == d_ino)
        .unwrap_or_else(|| panic!("no file has inode number {d_ino}: the test proves nothing"));

    set_method(Method::Auto);
    let out = remap_ok(&root, &Side::identity(), &Side::shifted(S1), false);
    assert_eq!((out.visited, out.from_table), (9, 8));
    assert_eq!(owner(&nested), (1000, 1000), "not crossed into");
    assert_eq!(owner(&nested.join("inner")), (1001, 1001));
    for i in 0..8 {
        assert_eq!(
            owner(&root.join(format!("f{i}"))),
            (S1 + 10 + i, S1 + 20 + i),
            "f{i}"
        );
    }
    let t = owner(&twin);
    assert!(t.0 > S1, "{}: {t:?}", twin.display());

    // Crossing into it: its own table.
    let out = remap_ok(&nested, &Side::identity(), &Side::shifted(S1), false);
    assert_eq!((out.visited, out.from_table), (2, 1));
    let out = remap_ok(&root, &Side::shifted(S1), &Side::shifted(S2), true);
    assert_eq!((out.visited, out.from_table), (11, 9));
    assert_eq!(owner(&nested), (S2 + 1000, S2 + 1000));
    assert_eq!(owner(&nested.join("inner")), (S2 + 1001, S2 + 1001));
    assert_eq!(owner(&root.join("f0")), (S2 + 10, S2 + 20));
}
