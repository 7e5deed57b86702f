//! remap_tree / remap_path against a real loop-mounted btrfs: every kind of inode, special
//! bits, capabilities (v2 kept, v3 rootid shifted), ACL ids, symlinks and hardlinks, nested
//! subvolumes, bind mounts, errors collected with their paths, abort, progress, a round trip,
//! and a 20,000-file tree checked inode by inode, each both by the inode table and by statx.
//! Needs root; skipped loudly otherwise.

mod common;
mod remap_support;

use btrfs_layers_core::idmap::{IdMap, IdMapping};
use btrfs_layers_core::remap::{remap_path, Method};
use btrfs_layers_core::Code;
use btrfs_layers_core::Control;
use common::{mk_subvol, BindMount, Sentinel};
use remap_support::*;
use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

const S1: u32 = 100_000;
const S2: u32 = 200_000;

/// A subvolume `name` on a fresh test filesystem (a whole subvolume, so that Method::Auto
/// takes the inode table); the filesystem guard comes first.
fn tree(fs: &common::Btrfs, name: &str) -> PathBuf {
    let p = fs.path(name);
    mk_subvol(&p);
    p
}

/// The tests inside run twice: `by_table::` with Method::Auto, which takes the inode table
/// for these trees (subvolumes) unless something inside rules it out (a mount point), and
/// `by_statx::` with Method::Statx.
macro_rules! both_ways {
    ($($(#[$meta:meta])* fn $name:ident() $body:block)*) => {
        mod by_table {
            use super::*;
            $($(#[$meta])* fn $name() {
                set_method(Method::Auto);
                $body
            })*
        }
        mod by_statx {
            use super::*;
            $($(#[$meta])* fn $name() {
                set_method(Method::Statx);
                $body
            })*
        }
    };
}

both_ways! {
    #[test]
    fn every_kind_of_inode_is_shifted_and_nothing_outside_is_touched() {
        let fs = require_btrfs!();
        require_tools!("setcap", "setfacl");
        let root = tree(&fs, "t");
        let outside = Sentinel::new("outside");
        lchown(&outside.dir, 1234, 1234);
        build_rich(&root, &Side::identity(), &outside.dir);
        lchown(&outside.dir.join("outside-file"), 1234, 1235);
        lchown(&outside.dir.join("outside-dir"), 1236, 1237);
        let rdev = |r: &str| fs::symlink_metadata(root.join(r)).unwrap().rdev();
        let (chr, blk) = (rdev("chr"), rdev("blk"));
        let ino_a = fs::symlink_metadata(root.join("hl-a")).unwrap().ino();

        let out = remap_ok(&root, &Side::identity(), &Side::shifted(S1), false);

        let to = Side::shifted(S1);
        assert_rich_owners(&root, &to, "after remap");
        // Devices stay devices of the same numbers; the hardlinks stay one inode.
        assert_eq!((rdev("chr"), rdev("blk")), (chr, blk));
        for l in ["hl-a", "hl-b", "dir/hl-c"] {
            let m = fs::symlink_metadata(root.join(l)).unwrap();
            assert_eq!((m.ino(), m.nlink()), (ino_a, 3), "{l}");
        }
        // Symlink targets are never followed: the outside keeps its owners.
        assert_eq!(owner(&outside.dir.join("outside-file")), (1234, 1235));
        assert_eq!(owner(&outside.dir.join("outside-dir")), (1236, 1237));
        assert_eq!(owner(&outside.dir), (1234, 1234));
        outside.assert_intact();
        // One visit per inode: entries minus the two extra names of the hardlinked file.
        assert_eq!(out.visited, RICH_OWNERS.len() as u64 - 2, "visited");
        assert_eq!(out.changed, out.visited, "every inode changed owner");
        // 21 inodes of which 6 directories.
        expect_table(&out, 15);
    }

    #[test]
    fn capability_v2_survives_the_chown() {
        let fs = require_btrfs!();
        require_tools!("setcap", "setfacl", "getcap");
        let root = tree(&fs, "t");
        let outside = Sentinel::new("o");
        build_rich(&root, &Side::identity(), &outside.dir);
        let before =
            xattr(&root.join("cap"), "security.capability").expect("setcap wrote a capability");
        remap_ok(&root, &Side::identity(), &Side::shifted(S1), false);
        let after =
            xattr(&root.join("cap"), "security.capability").expect("the capability survived the chown");
        assert_eq!(
            after, before,
            "a v2 capability (no rootid) is kept as it was"
        );
        let shown = cmd("getcap", &[root.join("cap").as_os_str()]);
        assert!(shown.contains("cap_net_raw=ep"), "getcap: {shown}");
    }

    #[test]
    fn capability_v3_rootid_is_shifted_to_the_new_root() {
        let fs = require_btrfs!();
        let root = tree(&fs, "t");
        let f = root.join("ping");
        fs::write(&f, b"x").unwrap();
        lchown(&root, S1, S1);
        lchown(&f, S1, S1);
        set_xattr(&f, "security.capability", &cap_v3(CAP_NET_RAW, S1));
        assert_eq!(
            cap_revision_rootid(&xattr(&f, "security.capability").unwrap()),
            (3, S1)
        );

        remap_ok(&root, &Side::shifted(S1), &Side::shifted(S2), false);

        assert_eq!(owner(&f), (S2, S2));
        let v = xattr(&f, "security.capability").expect("capability survived");
        assert_eq!(
            cap_revision_rootid(&v),
            (3, S2),
            "rootid shifted: {}",
            hex(&v)
        );
        assert_eq!(
            &v[..20],
            &cap_v3(CAP_NET_RAW, S2)[..20],
            "capability sets unchanged"
        );

        // Back to the first mapping.
        remap_ok(&root, &Side::shifted(S2), &Side::shifted(S1), false);
        assert_eq!(
            cap_revision_rootid(&xattr(&f, "security.capability").unwrap()),
            (3, S1)
        );
    }

    #[test]
    fn acl_entries_name_the_shifted_ids() {
        let fs = require_btrfs!();
        require_tools!("setcap", "setfacl", "getfacl");
        let root = tree(&fs, "t");
        let outside = Sentinel::new("o");
        build_rich(&root, &Side::identity(), &outside.dir);
        remap_ok(&root, &Side::identity(), &Side::shifted(S1), false);
        let file = getfacl(&root.join("acl-file"));
        assert!(
            file.contains(&format!("user:{}:r-x", S1 + 1000)),
            "{file:?}"
        );
        assert!(
            file.contains(&format!("group:{}:r--", S1 + 1000)),
            "{file:?}"
        );
        assert!(
            !file.iter().any(|l| l.contains(":1000:")),
            "no unshifted id left: {file:?}"
        );
        let dir = getfacl(&root.join("acl-dir"));
        assert!(
            dir.contains(&format!("default:user:{}:rwx", S1 + 1000)),
            "{dir:?}"
        );
        assert!(
            dir.contains(&format!("default:group:{}:r-x", S1 + 1001)),
            "{dir:?}"
        );
        assert!(dir.contains(&format!("user:{}:r-x", S1 + 1000)), "{dir:?}");
    }

    #[test]
    fn acl_of_the_tree_root_itself_is_shifted() {
        let fs = require_btrfs!();
        require_tools!("setfacl", "getfacl");
        let root = tree(&fs, "t");
        cmd(
            "setfacl",
            &[
                OsStr::new("-m"),
                OsStr::new("u:1000:rx,g:1000:r"),
                root.as_os_str(),
            ],
        );
        cmd(
            "setfacl",
            &[
                OsStr::new("-d"),
                OsStr::new("-m"),
                OsStr::new("u:1000:rwx"),
                root.as_os_str(),
            ],
        );
        remap_ok(&root, &Side::identity(), &Side::shifted(S1), false);
        assert_eq!(owner(&root), (S1, S1));
        let acl = getfacl(&root);
        assert!(
            acl.contains(&format!("user:{}:r-x", S1 + 1000)),
            "access ACL of the root: {acl:?}"
        );
        assert!(
            acl.contains(&format!("default:user:{}:rwx", S1 + 1000)),
            "default ACL of the root: {acl:?}"
        );
    }

    #[test]
    fn nested_subvolume_is_entered_only_when_asked() {
        let fs = require_btrfs!();
        let root = tree(&fs, "t");
        let nested = root.join("nested");
        mk_subvol(&nested);
        fs::create_dir(nested.join("sub")).unwrap();
        fs::write(nested.join("top"), b"t").unwrap();
        fs::write(nested.join("sub/deep"), b"d").unwrap();
        for r in ["", "sub", "top", "sub/deep"] {
            lchown(&nested.join(r), 1000, 1000);
        }
        fs::write(root.join("plain"), b"p").unwrap();

        remap_ok(&root, &Side::identity(), &Side::shifted(S1), false);
        assert_eq!(owner(&root.join("plain")), (S1, S1));
        for r in ["", "sub", "top", "sub/deep"] {
            assert_eq!(
                owner(&nested.join(r)),
                (1000, 1000),
                "not crossed into nested/{r}"
            );
        }

        // From the shifted mapping on to another one, this time into the nested subvolume, whose
        // owners are still in the identity mapping: shift it from there separately.
        let out = remap_ok(&nested, &Side::identity(), &Side::shifted(S1), false);
        assert_eq!(out.changed, 4);
        remap_ok(&root, &Side::shifted(S1), &Side::shifted(S2), true);
        assert_eq!(owner(&root.join("plain")), (S2, S2));
        for r in ["", "sub", "top", "sub/deep"] {
            assert_eq!(
                owner(&nested.join(r)),
                (S2 + 1000, S2 + 1000),
                "crossSubvolumes: nested/{r}"
            );
        }
    }

    #[test]
    fn bind_mount_of_another_filesystem_is_never_entered() {
        let fs = require_btrfs!();
        let root = tree(&fs, "t");
        let outside = Sentinel::new("bind");
        lchown(&outside.dir, 1234, 1234);
        let f = outside.dir.join("f1");
        lchown(&f, 1234, 1235);
        fs::create_dir(root.join("mnt")).unwrap();
        fs::write(root.join("plain"), b"p").unwrap();
        {
            let _m = BindMount::new(&outside.dir, &root.join("mnt"));
            let out = remap_ok(&root, &Side::identity(), &Side::shifted(S1), false);
            assert_eq!(owner(&root.join("plain")), (S1, S1));
            assert_eq!(
                owner(&outside.dir),
                (1234, 1234),
                "the mounted directory keeps its owner"
            );
            assert_eq!(
                owner(&f),
                (1234, 1235),
                "files under the mount keep their owners"
            );
            assert!(out.errors.is_empty());
            expect_table(&out, 0);
        }
        outside.assert_intact();
    }

    #[test]
    fn bind_mount_of_a_directory_of_the_same_filesystem_is_never_touched() {
        let fs = require_btrfs!();
        let root = tree(&fs, "t");
        let elsewhere = tree(&fs, "elsewhere");
        fs::write(elsewhere.join("f"), b"f").unwrap();
        lchown(&elsewhere, 1234, 1234);
        lchown(&elsewhere.join("f"), 1234, 1235);
        fs::create_dir(root.join("mnt")).unwrap();
        {
            let _m = BindMount::new(&elsewhere, &root.join("mnt"));
            let out = remap(&root, &Side::identity(), &Side::shifted(S1), false).unwrap();
            assert!(out.errors.is_empty(), "{:?}", out.errors);
            expect_table(&out, 0);
            assert_eq!(
                owner(&elsewhere.join("f")),
                (1234, 1235),
                "a file under the mount point"
            );
            assert_eq!(
                owner(&elsewhere),
                (1234, 1234),
                "the directory mounted inside the tree (outside it)"
            );
        }
    }

    #[test]
    fn bind_mounted_file_from_outside_is_never_touched() {
        let fs = require_btrfs!();
        let root = tree(&fs, "t");
        let outside = Sentinel::new("filebind");
        let f = outside.dir.join("f1");
        lchown(&f, 1234, 1235);
        fs::write(root.join("target"), b"covered").unwrap();
        {
            let _m = BindMount::new(&f, &root.join("target"));
            let out = remap(&root, &Side::identity(), &Side::shifted(S1), false).unwrap();
            assert!(out.errors.is_empty(), "{:?}", out.errors);
            expect_table(&out, 0);
            assert_eq!(
                owner(&f),
                (1234, 1235),
                "the file bind-mounted into the tree lives outside it"
            );
        }
        outside.assert_intact();
    }

    #[test]
    fn ids_outside_the_maps_are_reported_with_their_paths_and_the_rest_is_remapped() {
        let fs = require_btrfs!();
        let root = tree(&fs, "t");
        fs::create_dir(root.join("d")).unwrap();
        for f in ["ok1", "d/ok2", "bad-uid", "d/bad-gid", "d/bad-both"] {
            fs::write(root.join(f), b"x").unwrap();
        }
        lchown(&root.join("ok1"), 999, 0);
        lchown(&root.join("d/ok2"), 5, 999);
        lchown(&root.join("bad-uid"), 1000, 1);
        lchown(&root.join("d/bad-gid"), 1, 5000);
        lchown(&root.join("d/bad-both"), 70000, 70000);
        let small = Side {
            uids: IdMapping::new(
                &[IdMap {
                    container_id: 0,
                    host_id: S1,
                    size: 1000,
                }],
                "u",
            )
            .unwrap(),
            gids: IdMapping::new(
                &[IdMap {
                    container_id: 0,
                    host_id: S1,
                    size: 1000,
                }],
                "g",
            )
            .unwrap(),
        };
        let out =
            remap(&root, &Side::identity(), &small, false).expect("errors are collected, not returned");
        let mut paths: Vec<PathBuf> = out
            .errors
            .iter()
            .map(|e| e.path.clone().expect("error has a path"))
            .collect();
        paths.sort();
        let mut want: Vec<PathBuf> = ["bad-uid", "d/bad-both", "d/bad-gid"]
            .iter()
            .map(|p| root.join(p))
            .collect();
        want.sort();
        assert_eq!(paths, want, "{:?}", out.errors);
        assert!(
            out.errors.iter().all(|e| e.code == Code::IdMapping),
            "{:?}",
            out.errors
        );
        assert_eq!(owner(&root.join("ok1")), (S1 + 999, S1));
        assert_eq!(owner(&root.join("d/ok2")), (S1 + 5, S1 + 999));
        assert_eq!(owner(&root.join("d")), (S1, S1));
        assert_eq!(owner(&root), (S1, S1));
        assert_eq!(
            owner(&root.join("bad-uid")),
            (1000, 1),
            "a failed entry is left as it was"
        );
        assert_eq!(owner(&root.join("d/bad-gid")), (1, 5000));
    }

    #[test]
    fn capability_rootid_outside_the_maps_is_an_error_of_that_path() {
        let fs = require_btrfs!();
        let root = tree(&fs, "t");
        let f = root.join("ping");
        fs::write(&f, b"x").unwrap();
        lchown(&root, S1, S1);
        lchown(&f, S1, S1);
        // A v3 capability whose root is not S1's root but an id no mapping holds.
        set_xattr(&f, "security.capability", &cap_v3(CAP_NET_RAW, 5));
        let out = remap(&root, &Side::shifted(S1), &Side::shifted(S2), false).unwrap();
        assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
        assert_eq!(out.errors[0].code, Code::IdMapping);
        assert_eq!(out.errors[0].path.as_deref(), Some(f.as_path()));
    }

    #[test]
    fn round_trip_restores_every_id() {
        let fs = require_btrfs!();
        require_tools!("setcap", "setfacl");
        let root = tree(&fs, "t");
        let outside = Sentinel::new("rt");
        build_rich(&root, &Side::identity(), &outside.dir);
        many_files(&root.join("dir"), 300, 50, &Side::identity());
        let before = full_state(&root);

        let a = remap_ok(&root, &Side::identity(), &Side::shifted(S1), false);
        let mid = full_state(&root);
        assert_ne!(mid, before);
        let b = remap_ok(&root, &Side::shifted(S1), &Side::identity(), false);
        let after = full_state(&root);
        assert_eq!((a.visited, a.changed), (b.visited, b.changed));
        let diffs: Vec<String> = before
            .iter()
            .filter(|(k, v)| after.get(*k) != Some(*v))
            .map(|(k, v)| {
                format!(
                    "{}:\n  before {v}\n  after  {}",
                    k.display(),
                    after.get(k).map(String::as_str).unwrap_or("missing")
                )
            })
            .collect();
        assert!(
            diffs.is_empty() && before.len() == after.len(),
            "round trip changed:\n{}",
            diffs.join("\n")
        );
    }

    #[test]
    fn round_trip_between_two_shifted_mappings_keeps_v3_capabilities() {
        let fs = require_btrfs!();
        require_tools!("setcap", "setfacl");
        let root = tree(&fs, "t");
        let outside = Sentinel::new("rt2");
        let s1 = Side::shifted(S1);
        build_rich(&root, &s1, &outside.dir);
        // A v3 capability as a process of the S1 namespace writes it.
        set_xattr(
            &root.join("cap"),
            "security.capability",
            &cap_v3(CAP_NET_RAW, S1),
        );
        let before = full_state(&root);
        remap_ok(&root, &s1, &Side::shifted(S2), false);
        assert_rich_owners(&root, &Side::shifted(S2), "in S2");
        remap_ok(&root, &Side::shifted(S2), &s1, false);
        assert_eq!(full_state(&root), before);
    }

    #[test]
    fn identity_to_identity_changes_nothing() {
        let fs = require_btrfs!();
        require_tools!("setcap", "setfacl");
        let root = tree(&fs, "t");
        let outside = Sentinel::new("id");
        build_rich(&root, &Side::identity(), &outside.dir);
        let before = full_state(&root);
        let out = remap_ok(&root, &Side::identity(), &Side::identity(), false);
        assert_eq!(out.changed, 0);
        assert_eq!(out.visited, RICH_OWNERS.len() as u64 - 2);
        assert_eq!(full_state(&root), before, "ctime aside, not a byte changed");
    }

    #[test]
    fn reading_the_directories_leaves_their_atime() {
        let fs = require_btrfs!();
        let root = tree(&fs, "t");
        many_files(&root, 30, 10, &Side::identity());
        let dirs = ["d0000", "d0001", "d0002"];
        for d in dirs {
            cmd(
                "touch",
                &[
                    OsStr::new("-a"),
                    OsStr::new("-d"),
                    OsStr::new("@981173106"),
                    root.join(d).as_os_str(),
                ],
            );
        }
        remap_ok(&root, &Side::identity(), &Side::shifted(S1), false);
        for d in dirs {
            let atime = cmd("stat", &[OsStr::new("-c"), OsStr::new("%X"), root.join(d).as_os_str()]);
            // Under relatime an atime older than the mtime would be updated by a plain read.
            assert_eq!(atime.trim(), "981173106", "{d}");
        }
    }

    #[test]
    fn a_file_with_ten_links_is_changed_once() {
        let fs = require_btrfs!();
        let root = tree(&fs, "t");
        fs::create_dir(root.join("a")).unwrap();
        fs::create_dir(root.join("b")).unwrap();
        let first = root.join("a/l0");
        fs::write(&first, b"x").unwrap();
        lchown(&first, 1000, 1000);
        for i in 1..10 {
            let dir = if i % 2 == 0 { "a" } else { "b" };
            fs::hard_link(&first, root.join(format!("{dir}/l{i}"))).unwrap();
        }
        assert_eq!(fs::metadata(&first).unwrap().nlink(), 10);
        let out = remap_ok(&root, &Side::identity(), &Side::shifted(S1), false);
        // root, a, b, and the file once.
        assert_eq!(out.changed, 4, "the 10-link file counts once");
        assert_eq!(out.visited, 4);
        for i in 0..10 {
            let dir = if i % 2 == 0 { "a" } else { "b" };
            assert_eq!(
                owner(&root.join(format!("{dir}/l{i}"))),
                (S1 + 1000, S1 + 1000),
                "{dir}/l{i}"
            );
        }
    }

    #[test]
    fn twenty_thousand_files_every_inode_checked() {
        let fs = require_btrfs!();
        let root = tree(&fs, "t");
        let t0 = std::time::Instant::now();
        let files = many_files(&root, 20_000, 100, &Side::identity());
        // A few hardlinks across directories, to race the hardlink-once rule between threads.
        let mut linked = Vec::new();
        for k in 0..50 {
            let (src, u, g) = files[k * 397].clone();
            for j in 0..4 {
                let l = root
                    .join(format!("d{:04}", (k * 13 + j * 41) % 200))
                    .join(format!("link{k}-{j}"));
                fs::hard_link(&src, &l).unwrap();
                linked.push((l, u, g));
            }
        }
        let made = t0.elapsed();
        let progress_calls = AtomicU64::new(0);
        let last = AtomicU64::new(0);
        let monotonic = AtomicBool::new(true);
        let progress = |n: u64| {
            progress_calls.fetch_add(1, Ordering::Relaxed);
            if last.swap(n, Ordering::Relaxed) > n {
                monotonic.store(false, Ordering::Relaxed);
            }
        };
        let abort = AtomicBool::new(false);
        let (from, to) = (Side::identity(), Side::shifted(S1));
        let opts = options(&from, &to, Control::new(&abort, &progress));
        let t1 = std::time::Instant::now();
        let out = remap_path(&root, &opts).unwrap();
        let took = t1.elapsed();
        eprintln!("20,000 files: made in {made:?}, remapped in {took:?}");
        assert!(
            out.errors.is_empty(),
            "{:?}",
            &out.errors[..out.errors.len().min(5)]
        );
        // 20,000 files + 200 directories + the root; the 200 extra names are no new inodes.
        assert_eq!(out.visited, 20_201);
        assert_eq!(out.changed, 20_201);
        expect_table(&out, 20_000);
        for (f, u, g) in files.iter().chain(linked.iter()) {
            assert_eq!(owner(f), (S1 + u, S1 + g), "{}", f.display());
        }
        for d in 0..200 {
            assert_eq!(owner(&root.join(format!("d{d:04}"))), (S1, S1));
        }
        assert!(
            monotonic.load(Ordering::Relaxed),
            "progress counts never go down"
        );
        assert!(
            progress_calls.load(Ordering::Relaxed) >= 2,
            "progress reported during the walk and at the end"
        );
        assert_eq!(
            last.load(Ordering::Relaxed),
            20_201,
            "the last progress report is the total"
        );
    }

    #[test]
    fn abort_stops_the_walk_with_aborted() {
        let fs = require_btrfs!();
        let root = tree(&fs, "t");
        many_files(&root, 12_000, 20, &Side::identity());
        let abort = AtomicBool::new(false);
        let seen = Mutex::new(Vec::new());
        // Abort from the first progress report (after 4096 inodes).
        let progress = |n: u64| {
            seen.lock().unwrap().push(n);
            abort.store(true, Ordering::Relaxed);
        };
        let (from, to) = (Side::identity(), Side::shifted(S1));
        let opts = options(&from, &to, Control::new(&abort, &progress));
        let err = remap_path(&root, &opts).expect_err("aborted");
        assert_eq!(err.code, Code::Aborted, "{err:?}");
        assert_eq!(err.path.as_deref(), Some(root.as_path()));
        // The walk stopped early: not every file was shifted.
        let unshifted = fs::read_dir(&root)
            .unwrap()
            .flat_map(|d| fs::read_dir(d.unwrap().path()).unwrap())
            .filter(|e| owner(&e.as_ref().unwrap().path()).0 < S1)
            .count();
        eprintln!(
            "abort after progress {:?}: {unshifted} of 12,000 files left unshifted",
            seen.lock().unwrap()
        );
        assert!(
            unshifted > 0,
            "an abort at 4096 inodes leaves some of 12,601 inodes unshifted"
        );
    }

    #[test]
    fn abort_set_before_the_start_is_aborted() {
        let fs = require_btrfs!();
        let root = tree(&fs, "t");
        fs::write(root.join("f"), b"x").unwrap();
        let abort = AtomicBool::new(true);
        let progress = |_: u64| {};
        let (from, to) = (Side::identity(), Side::shifted(S1));
        let opts = options(&from, &to, Control::new(&abort, &progress));
        let err = remap_path(&root, &opts).expect_err("aborted");
        assert_eq!(err.code, Code::Aborted);
        assert_eq!(
            owner(&root.join("f")),
            (0, 0),
            "nothing below the root was touched"
        );
    }

    #[test]
    fn remap_tree_on_an_fd_remaps_the_directory_itself() {
        let fs = require_btrfs!();
        let root = tree(&fs, "t");
        fs::write(root.join("f"), b"x").unwrap();
        chmod(&root, 0o2775);
        let dir = fs::File::open(&root).unwrap();
        let out = remap_fd(
            dir.as_fd(),
            Path::new("/shown/name"),
            &Side::identity(),
            &Side::shifted(S1),
        )
        .unwrap();
        assert!(out.errors.is_empty());
        assert_eq!(out.changed, 2);
        assert_eq!(owner(&root), (S1, S1));
        assert_eq!(
            mode(&root) & 0o7777,
            0o2775,
            "setgid directory keeps its bit"
        );
        assert_eq!(owner(&root.join("f")), (S1, S1));
    }

    #[test]
    fn errors_name_the_shown_path_of_remap_tree() {
        let fs = require_btrfs!();
        let root = tree(&fs, "t");
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/bad"), b"x").unwrap();
        lchown(&root.join("d/bad"), 90000, 0);
        let dir = fs::File::open(&root).unwrap();
        let out = remap_fd(
            dir.as_fd(),
            Path::new("/shown"),
            &Side::identity(),
            &Side::shifted(S1),
        )
        .unwrap();
        assert_eq!(out.errors.len(), 1);
        assert_eq!(
            out.errors[0].path.as_deref(),
            Some(Path::new("/shown/d/bad"))
        );
    }

    #[test]
    fn remap_path_refuses_a_missing_or_non_directory_path() {
        let fs = require_btrfs!();
        let root = tree(&fs, "t");
        fs::write(root.join("file"), b"x").unwrap();
        let (from, to) = (Side::identity(), Side::shifted(S1));
        let e = remap(&root.join("missing"), &from, &to, false).expect_err("missing");
        assert_eq!(e.code, Code::Errno(nix::errno::Errno::ENOENT));
        let e = remap(&root.join("file"), &from, &to, false).expect_err("a file");
        assert_eq!(e.code, Code::Errno(nix::errno::Errno::ENOTDIR));
        assert_eq!(owner(&root.join("file")), (0, 0));
    }

    #[test]
    fn concurrent_remaps_of_disjoint_trees() {
        let fs = require_btrfs!();
        let roots: Vec<PathBuf> = (0..4).map(|i| tree(&fs, &format!("t{i}"))).collect();
        let sets: Vec<_> = roots
            .iter()
            .map(|r| many_files(r, 2_000, 40, &Side::identity()))
            .collect();
        std::thread::scope(|s| {
            for (i, r) in roots.iter().enumerate() {
                s.spawn(move || {
                    remap_ok(
                        r,
                        &Side::identity(),
                        &Side::shifted(S1 * (i as u32 + 1)),
                        false,
                    )
                });
            }
        });
        for (i, set) in sets.iter().enumerate() {
            let base = S1 * (i as u32 + 1);
            for (f, u, g) in set {
                assert_eq!(owner(f), (base + u, base + g), "{}", f.display());
            }
        }
    }

    #[test]
    fn acl_ids_are_shifted_even_when_the_owner_maps_to_itself() {
        let fs = require_btrfs!();
        require_tools!("setfacl", "getfacl");
        let root = tree(&fs, "t");
        let f = root.join("f");
        fs::write(&f, b"x").unwrap();
        cmd(
            "setfacl",
            &[
                OsStr::new("-m"),
                OsStr::new("u:1000:rx,g:1000:r"),
                f.as_os_str(),
            ],
        );
        // Container root stays host root; every other id is shifted.
        let keep_root = |what| {
            IdMapping::new(
                &[
                    IdMap {
                        container_id: 0,
                        host_id: 0,
                        size: 1,
                    },
                    IdMap {
                        container_id: 1,
                        host_id: S1 + 1,
                        size: 65535,
                    },
                ],
                what,
            )
            .unwrap()
        };
        let to = Side {
            uids: keep_root("u"),
            gids: keep_root("g"),
        };
        remap_ok(&root, &Side::identity(), &to, false);
        assert_eq!(owner(&f), (0, 0));
        let acl = getfacl(&f);
        assert!(
            acl.contains(&format!("user:{}:r-x", S1 + 1000)),
            "ACL of a file whose owner did not change: {acl:?}"
        );
        assert!(acl.contains(&format!("group:{}:r--", S1 + 1000)), "{acl:?}");
    }
}

#[test]
fn a_map_to_host_id_u32_max_is_refused() {
    // 2^32-1 is (uid_t)-1, which chown(2) reads as "leave this id as it is": never an id.
    let map = |c, h| {
        IdMapping::new(
            &[IdMap {
                container_id: c,
                host_id: h,
                size: 1,
            }],
            "uidMaps",
        )
    };
    assert_eq!(
        map(0, u32::MAX).unwrap_err().code,
        Code::Errno(nix::errno::Errno::EINVAL)
    );
    assert_eq!(
        map(u32::MAX, 0).unwrap_err().code,
        Code::Errno(nix::errno::Errno::EINVAL)
    );
    assert!(map(u32::MAX - 1, u32::MAX - 1).is_ok());
}
