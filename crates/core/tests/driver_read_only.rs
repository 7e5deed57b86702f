//! A read-only open of an existing store (`DriverOptions::read_only`): it works while a writer
//! holds the store (no lock, no private mount, no recovery), it never writes (`btrfs
//! subvolume list` and the store's entries unchanged, even for `changes` of a writable layer,
//! which a writer compares through temporary read-only snapshots), and every write method
//! fails with EROFS. A refused writer is told which process holds the store. Against a real
//! loop-mounted btrfs with btrfs-progs as the oracle; needs root, skipped loudly otherwise.

mod common;

use btrfs_layers_core::driver::diff::Against;
use btrfs_layers_core::driver::{CreateOptions, Driver, DriverOptions};
use btrfs_layers_core::Control;
use common::oracle_list;
use std::fs;
use std::path::Path;

fn reader(home: &Path) -> btrfs_layers_core::Result<Driver> {
    Driver::init(
        home,
        DriverOptions {
            read_only: true,
            ..DriverOptions::default()
        },
    )
}

/// Everything a write would change: the subvolume list and the store's directory entries.
fn snapshot_of(fs: &common::Btrfs, home: &Path) -> (Vec<String>, Vec<String>) {
    let mut subvols: Vec<String> = oracle_list(&fs.mnt).into_iter().map(|s| s.path).collect();
    subvols.sort();
    let mut entries: Vec<String> = ["", "subvolumes", "metadata"]
        .iter()
        .flat_map(|d| {
            fs::read_dir(home.join(d))
                .unwrap()
                .map(move |e| format!("{d}/{}", e.unwrap().file_name().to_string_lossy()))
        })
        .collect();
    entries.sort();
    (subvols, entries)
}

#[test]
fn a_reader_works_while_a_writer_holds_the_store_and_never_writes() {
    let fs = require_btrfs!();
    let home = fs.path("home");
    let writer = Driver::init(&home, DriverOptions::default()).unwrap();
    writer.create("a", None, &CreateOptions::default()).unwrap();
    let p = writer.get("a", None).unwrap();
    fs::write(p.join("file"), b"in a").unwrap();
    writer.put("a").unwrap();
    writer
        .create("b", Some("a"), &CreateOptions::default())
        .unwrap();
    let p = writer.get("b", None).unwrap();
    fs::write(p.join("added"), b"in b").unwrap();
    writer.put("b").unwrap();
    // A writable layer and a parent it does not descend from by its record: a writer would
    // compare them through temporary read-only snapshots.
    writer.create("c", None, &CreateOptions::default()).unwrap();

    let before = snapshot_of(&fs, &home);
    let r = reader(&home).expect("a reader opens a held store");
    assert!(r.is_read_only());
    assert_eq!(r.layers().unwrap(), ["a", "b", "c"]);
    assert_eq!(r.metadata("b").unwrap().parent.as_deref(), Some("a"));
    assert_eq!(r.status().unwrap().layers, 3);
    let own: Vec<String> = r
        .changes("b", Against::RecordedParent, Control::NONE)
        .unwrap()
        .into_iter()
        .map(|c| c.path.to_string_lossy().into_owned())
        .collect();
    assert_eq!(own, ["added"]);
    let across = r.changes("b", Against::Layer("c"), Control::NONE).unwrap();
    assert_eq!(across.len(), 2, "{across:?}");
    let mut tar = Vec::new();
    r.diff(
        "b",
        Against::RecordedParent,
        btrfs_layers_core::tar::compress::Compression::None,
        &mut tar,
        Control::NONE,
    )
    .unwrap();
    assert!(tar.len() >= 1024);

    for (what, code) in [
        (
            "create",
            r.create("x", None, &CreateOptions::default()).err(),
        ),
        ("remove", r.remove("a").err()),
        ("get", r.get("a", None).err()),
        (
            "applyDiff",
            r.apply_diff("a", None, std::io::empty(), Control::NONE)
                .err(),
        ),
        ("remap", r.remap("a", "y", &[], &[], Control::NONE).err()),
    ] {
        assert_eq!(
            code.map(|e| e.code_str().to_string()).as_deref(),
            Some("EROFS"),
            "{what}"
        );
    }
    r.cleanup().unwrap();
    drop(r);
    assert_eq!(
        snapshot_of(&fs, &home),
        before,
        "the reader changed nothing"
    );

    // A second writer is refused, told the holder's process id.
    let e = Driver::init(&home, DriverOptions::default())
        .err()
        .expect("EBUSY");
    assert_eq!(e.code_str(), "EBUSY");
    assert!(
        e.message
            .contains(&format!("process {}", std::process::id())),
        "{e}"
    );
    assert_eq!(
        fs::read_to_string(home.join(".lock")).unwrap().trim(),
        std::process::id().to_string()
    );
    writer.cleanup().unwrap();
}

#[test]
fn a_reader_needs_an_existing_store() {
    let fs = require_btrfs!();
    let home = fs.path("never-made");
    let e = reader(&home).err().expect("ENOENT");
    assert_eq!(e.code_str(), "ENOENT");
    assert!(!home.exists(), "a reader makes nothing");
}
