//! nested::children by TREE_SEARCH and by GET_SUBVOL_ROOTREF must agree, with each other and
//! with `btrfs subvolume list -o`, on trees with nested subvolumes at several depths, inside
//! plain directories, and with more than 255 children (GET_SUBVOL_ROOTREF's EOVERFLOW
//! continuation).

mod common;

use btrfs_layers_core::nested::{self, Child, Method};
use btrfs_layers_core::open::{open_dir, subvolume_id};
use btrfs_layers_core::subvolume;
use common::*;
use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

fn children(p: &Path, method: Method) -> Vec<Child> {
    let fd = open_dir(p).unwrap();
    let id = subvolume_id(fd.as_fd(), p).unwrap();
    nested::children(fd.as_fd(), id, p, method)
        .unwrap_or_else(|e| panic!("children({}, {method:?}): {e}", p.display()))
}

/// Children paths and ids as btrfs-progs sees them (`list -o`), relative to `p`.
fn oracle_children(mnt: &Path, p: &Path) -> Vec<(PathBuf, u64)> {
    let rel = p.strip_prefix(mnt).unwrap();
    let mut v: Vec<(PathBuf, u64)> = oracle_list_below(p)
        .into_iter()
        .map(|s| {
            (
                PathBuf::from(&s.path)
                    .strip_prefix(rel)
                    .unwrap()
                    .to_path_buf(),
                s.id,
            )
        })
        .collect();
    v.sort();
    v
}

fn as_pairs(kids: &[Child]) -> Vec<(PathBuf, u64)> {
    let mut v: Vec<(PathBuf, u64)> = kids.iter().map(|c| (c.rel_path(), c.id)).collect();
    v.sort();
    v
}

/// Check every subvolume of the tree below `p` (and `p` itself): both methods and Auto agree
/// exactly (same order), and agree with btrfs-progs.
fn check_tree(mnt: &Path, p: &Path) -> usize {
    let by_search = children(p, Method::TreeSearch);
    let by_rootref = children(p, Method::RootRef);
    let auto = children(p, Method::Auto);
    assert_eq!(
        by_search,
        by_rootref,
        "TreeSearch vs RootRef below {}",
        p.display()
    );
    assert_eq!(by_search, auto, "TreeSearch vs Auto below {}", p.display());
    assert_eq!(
        as_pairs(&by_search),
        oracle_children(mnt, p),
        "vs btrfs subvolume list -o below {}",
        p.display()
    );
    // Sorted by path, as documented.
    let paths: Vec<PathBuf> = by_search.iter().map(|c| c.rel_path()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    let mut n = 1;
    for kid in &by_search {
        assert!(!kid.name.is_empty());
        assert!(kid.dir.is_relative());
        n += check_tree(mnt, &p.join(kid.rel_path()));
    }
    n
}

#[test]
fn tree_search_and_rootref_agree_on_a_deep_tree() {
    let fs = require_btrfs!();
    let root = fs.path("root");
    mk_subvol(&root);
    for rel in [
        "a",
        "a/b",
        "a/b/c",
        "a/b/c/d",
        "a/b/c/d/e",
        "plain/x",
        "plain/deeper/still/y",
        "plain/deeper/still/y/in-y/z",
        "a/b/dir/w",
        "q",
        "naïve ✓ name",
        &"n".repeat(255),
    ] {
        mk_subvol(&root.join(rel));
        fs::write(root.join(rel).join("file"), rel).unwrap();
    }
    // A nested directory path near the INO_LOOKUP_USER limit would be its own test; here a
    // moderately deep one.
    let deep: PathBuf = (0..20).map(|i| format!("level-{i:02}")).collect();
    mk_subvol(&root.join(&deep).join("deep-kid"));
    assert_eq!(check_tree(&fs.mnt, &root), 14);
    // The top-level subvolume, too.
    check_tree(&fs.mnt, &fs.mnt);
}

#[test]
fn rootref_continuation_past_255_children() {
    let fs = require_btrfs!();
    // 255 fit in one GET_SUBVOL_ROOTREF answer; 256 and 511 need continuations.
    for count in [255usize, 256, 511] {
        let root = fs.path(&format!("wide-{count}"));
        mk_subvol(&root);
        fs::create_dir(root.join("d")).unwrap();
        for i in 0..count {
            // Made with the core (btrfs-progs per subvolume would be slow); checked by btrfs-progs.
            let p = if i % 2 == 0 {
                root.join(format!("k{i:04}"))
            } else {
                root.join("d").join(format!("k{i:04}"))
            };
            subvolume::create(&p).unwrap();
        }
        let by_rootref = children(&root, Method::RootRef);
        let by_search = children(&root, Method::TreeSearch);
        assert_eq!(
            by_rootref.len(),
            count,
            "RootRef found {} of {count}",
            by_rootref.len()
        );
        assert_eq!(by_search.len(), count);
        assert_eq!(by_rootref, by_search);
        assert_eq!(as_pairs(&by_rootref), oracle_children(&fs.mnt, &root));
        let mut ids: Vec<u64> = by_rootref.iter().map(|c| c.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), count, "no duplicates");
        // And through the list API.
        assert_eq!(
            subvolume::list_with(&root, Method::TreeSearch).unwrap(),
            subvolume::list_with(&root, Method::RootRef).unwrap()
        );
    }
}

#[test]
fn list_with_both_methods_is_the_same_preorder_list() {
    let fs = require_btrfs!();
    let root = fs.path("layer");
    mk_subvol(&root);
    fs::create_dir(root.join("many")).unwrap();
    for i in 0..300 {
        subvolume::create(&root.join("many").join(format!("m{i:03}"))).unwrap();
    }
    for rel in [
        "a",
        "a/b",
        "a/b/c",
        "a/x/y",
        "z/z/z",
        "many/m007/inner",
        "many/m007/inner/innermost",
    ] {
        mk_subvol(&root.join(rel));
    }
    let search = subvolume::list_with(&root, Method::TreeSearch).unwrap();
    let rootref = subvolume::list_with(&root, Method::RootRef).unwrap();
    let auto = subvolume::list(&root).unwrap();
    assert_eq!(search, rootref);
    assert_eq!(search, auto);
    assert_eq!(search.len(), 307);
    // The same set as btrfs-progs.
    let mut got: Vec<(PathBuf, u64)> = search.iter().map(|n| (n.path.clone(), n.id)).collect();
    got.sort();
    assert_eq!(got, oracle_below(&fs.mnt, &root));
    // Pre-order: each entry's subtree follows it contiguously, parents before children.
    for (i, n) in search.iter().enumerate() {
        let end = search[i + 1..]
            .iter()
            .position(|m| !m.path.starts_with(&n.path))
            .map_or(search.len(), |k| i + 1 + k);
        assert!(
            search[end..].iter().all(|m| !m.path.starts_with(&n.path)),
            "subtree of {} not contiguous",
            n.path.display()
        );
        assert!(
            search[..i].iter().all(|m| !m.path.starts_with(&n.path)),
            "child of {} before it",
            n.path.display()
        );
        assert!(n.path.is_relative());
    }
}

#[test]
fn children_by_search_works_from_any_fd_of_the_filesystem() {
    let fs = require_btrfs!();
    let root = fs.path("r");
    mk_subvol(&root);
    for rel in ["a", "b/c", "b/c/d"] {
        mk_subvol(&root.join(rel));
    }
    let id = subvolume::info(&root).unwrap().id;
    let top = open_dir(&fs.mnt).unwrap();
    let from_top = nested::children_by_search(top.as_fd(), id, &fs.mnt).unwrap();
    let rootfd = open_dir(&root).unwrap();
    let from_root = nested::children_by_search(rootfd.as_fd(), id, &root).unwrap();
    let mut a = as_pairs(&from_top);
    let b = as_pairs(&from_root);
    a.sort();
    assert_eq!(a, b);
    assert_eq!(
        a.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        vec![PathBuf::from("a"), PathBuf::from("b/c")]
    );
    let by_rootref = nested::children_by_rootref(rootfd.as_fd(), &root).unwrap();
    assert_eq!(as_pairs(&by_rootref), b);
}

#[test]
fn children_follow_renames_and_ignore_snapshots_elsewhere() {
    let fs = require_btrfs!();
    let root = fs.path("r");
    mk_subvol(&root);
    mk_subvol(&root.join("old/kid"));
    fs::rename(root.join("old"), root.join("new")).unwrap();
    // A snapshot of root elsewhere is not a child; a symlink to a subvolume is not a child.
    btrfs(&[
        OsStr::new("subvolume"),
        OsStr::new("snapshot"),
        root.as_os_str(),
        fs.path("snap").as_os_str(),
    ]);
    mk_subvol(&fs.path("elsewhere"));
    std::os::unix::fs::symlink(fs.path("elsewhere"), root.join("link")).unwrap();
    for m in [Method::TreeSearch, Method::RootRef, Method::Auto] {
        let kids = children(&root, m);
        assert_eq!(
            as_pairs(&kids)
                .into_iter()
                .map(|(p, _)| p)
                .collect::<Vec<_>>(),
            vec![PathBuf::from("new/kid")],
            "{m:?}"
        );
        assert_eq!(kids[0].dir, PathBuf::from("new"));
        assert_eq!(kids[0].name, OsStr::new("kid"));
    }
    assert!(children(&fs.path("snap"), Method::RootRef).is_empty());
    assert!(children(&fs.path("snap"), Method::TreeSearch).is_empty());
}
