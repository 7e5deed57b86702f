//! Bad input to the driver is refused with a typed error before anything changes: a layer
//! file that is not a regular file or a FIFO (or whose path holds a NUL byte), a bad id given
//! to `ref_count`, and a layer a filesystem is mounted on (busy, never mistaken for absent).
//! Against a real loop-mounted btrfs with btrfs-progs as the oracle; needs root, skipped
//! loudly otherwise.

mod common;

use btrfs_layers_core::driver::diff::Against;
use btrfs_layers_core::driver::{CreateOptions, Driver, DriverOptions};
use btrfs_layers_core::tar::source;
use btrfs_layers_core::Control;
use common::{oracle_list, BindMount, Tmpfs};
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

fn code<T: std::fmt::Debug>(r: btrfs_layers_core::Result<T>) -> String {
    match r {
        Ok(v) => format!("ok: {v:?}"),
        Err(e) => e.code_str().to_string(),
    }
}

/// Subvolume paths below `home` (relative to it), from `btrfs subvolume list`.
fn store_subvolumes(fs: &common::Btrfs, home: &Path) -> Vec<String> {
    let rel = home
        .strip_prefix(&fs.mnt)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut v: Vec<String> = oracle_list(&fs.mnt)
        .into_iter()
        .filter_map(|s| s.path.strip_prefix(&format!("{rel}/")).map(str::to_string))
        .collect();
    v.sort();
    v
}

/// Entries of `home/subvolumes` and `home/metadata`, sorted.
fn store_entries(home: &Path) -> (Vec<String>, Vec<String>) {
    let ls = |d: &str| {
        let mut v: Vec<String> = fs::read_dir(home.join(d))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    (ls("subvolumes"), ls("metadata"))
}

/// A store with layer `a` (holding `a/file`) and its child `b`.
fn store_with_layers(fs: &common::Btrfs) -> (PathBuf, Driver) {
    let home = fs.path("home");
    let d = Driver::init(&home, DriverOptions::default()).unwrap();
    d.create("a", None, &CreateOptions::default()).unwrap();
    let p = d.get("a", None).unwrap();
    fs::write(p.join("file"), b"layer a").unwrap();
    d.put("a").unwrap();
    d.create("b", Some("a"), &CreateOptions::default()).unwrap();
    (home, d)
}

/// Layer `a` is whole: its file, its record, its subvolume (per btrfs-progs), nothing temporary.
fn assert_layer_a_intact(fs: &common::Btrfs, home: &Path, d: &Driver) {
    assert_eq!(
        fs::read(home.join("subvolumes/a/file")).unwrap(),
        b"layer a"
    );
    assert_eq!(d.metadata("a").unwrap().id, "a");
    assert_eq!(
        store_subvolumes(fs, home),
        ["subvolumes/a", "subvolumes/b"],
        "btrfs subvolume list: the layers, no temporary"
    );
    assert_eq!(
        store_entries(home),
        (vec!["a".to_string(), "b".to_string()], vec![]),
        "the records are on the layers, nothing in metadata/"
    );
    assert_eq!(d.metadata("b").unwrap().parent.as_deref(), Some("a"));
}

#[test]
fn ref_count_checks_the_id() {
    let fs = require_btrfs!();
    let (_home, d) = store_with_layers(&fs);
    for bad in ["../x", "", ".hidden", "a/b", "a\0b", &"x".repeat(129)] {
        assert_eq!(code(d.ref_count(bad)), "EINVAL", "{bad:?}");
    }
    assert_eq!(code(d.ref_count("a")), "ok: 0");
    assert_eq!(code(d.ref_count("never-made")), "ok: 0");
    d.get("a", None).unwrap();
    assert_eq!(code(d.ref_count("a")), "ok: 1");
    d.put("a").unwrap();
}

#[test]
fn a_tmpfs_on_a_layer_makes_it_busy_not_absent() {
    let fs = require_btrfs!();
    let (home, d) = store_with_layers(&fs);
    let layer = home.join("subvolumes/a");
    {
        let _cover = Tmpfs::new(&layer);
        fs::write(layer.join("on-the-tmpfs"), b"x").unwrap();
        assert_eq!(code(d.remove("a")), "EBUSY", "remove of a covered layer");
        assert_eq!(
            code(d.exists("a")),
            "ok: true",
            "exists sees a covered layer"
        );
        assert_eq!(
            d.layers().unwrap(),
            ["a", "b"],
            "layers lists a covered layer"
        );
        // Every call that would open the layer would reach the tmpfs instead: busy.
        assert_eq!(code(d.get("a", None)), "EBUSY", "get");
        assert_eq!(code(d.metadata("a")), "EBUSY", "metadata");
        assert_eq!(
            code(d.changes("a", Against::Nothing, Control::NONE)),
            "EBUSY",
            "changes"
        );
        assert_eq!(
            code(d.apply_diff("a", None, std::io::empty(), Control::NONE)),
            "EBUSY",
            "applyDiff"
        );
        assert_eq!(
            code(d.create("c", Some("a"), &CreateOptions::default())),
            "EBUSY",
            "create from a covered parent"
        );
        assert_eq!(
            code(d.create("a", None, &CreateOptions::default())),
            "EEXIST",
            "create over a covered layer"
        );
        assert_eq!(
            code(d.ref_count("a")),
            "ok: 0",
            "a refused get is not counted"
        );
        assert_eq!(
            fs::read(layer.join("on-the-tmpfs")).unwrap(),
            b"x",
            "the tmpfs is untouched"
        );
    }
    assert_layer_a_intact(&fs, &home, &d);
    // Uncovered, it goes as any layer does.
    d.remove("a").unwrap();
    assert_eq!(code(d.exists("a")), "ok: false");
}

#[test]
fn a_bind_mount_on_a_layer_makes_it_busy_whatever_it_shows() {
    let fs = require_btrfs!();
    let (home, d) = store_with_layers(&fs);
    let layer = home.join("subvolumes/a");
    let plain = fs.path("plain");
    fs::create_dir(&plain).unwrap();
    fs::write(plain.join("keep"), b"outside").unwrap();
    // A plain directory of the same filesystem, then another layer's root (a subvolume root,
    // which a stat of the name alone takes for a layer).
    for src in [plain.clone(), home.join("subvolumes/b")] {
        let _cover = BindMount::new(&src, &layer);
        assert_eq!(code(d.remove("a")), "EBUSY", "remove, {}", src.display());
        assert_eq!(code(d.exists("a")), "ok: true", "exists, {}", src.display());
        assert_eq!(d.layers().unwrap(), ["a", "b"], "layers, {}", src.display());
        assert_eq!(code(d.get("a", None)), "EBUSY", "get, {}", src.display());
    }
    assert_eq!(fs::read(plain.join("keep")).unwrap(), b"outside");
    assert_eq!(
        d.metadata("b").unwrap().id,
        "b",
        "the bound layer is untouched"
    );
    assert_layer_a_intact(&fs, &home, &d);
}

#[test]
fn init_keeps_the_record_of_a_covered_layer() {
    let fs = require_btrfs!();
    let (home, d) = store_with_layers(&fs);
    drop(d);
    // Home as a bind mount of itself (init adopts it as its own), a tmpfs on layer `a` above it.
    let _home_bind = BindMount::new(&home, &home);
    let cover = Tmpfs::new(&home.join("subvolumes/a"));
    let d = Driver::init(&home, DriverOptions::default()).unwrap();
    assert_eq!(d.layers().unwrap(), ["a", "b"]);
    assert_eq!(code(d.remove("a")), "EBUSY");
    drop(cover);
    assert_layer_a_intact(&fs, &home, &d);
}

#[test]
fn a_layer_file_is_a_regular_file_or_a_fifo() {
    let fs = require_btrfs!();
    let dir = fs.path("inputs");
    fs::create_dir(&dir).unwrap();
    let file = dir.join("layer.tar");
    fs::write(&file, b"tar bytes").unwrap();

    let mut got = String::new();
    source::open(&file)
        .unwrap()
        .read_to_string(&mut got)
        .unwrap();
    assert_eq!(got, "tar bytes", "a regular file");
    let link = dir.join("link");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    assert!(
        source::open(&link).is_ok(),
        "a symlink to one: the caller's path"
    );

    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            fs::OpenOptions::new()
                .write(true)
                .open(&fifo)
                .unwrap()
                .write_all(b"through a fifo")
                .unwrap()
        })
    };
    let mut got = String::new();
    source::open(&fifo)
        .unwrap()
        .read_to_string(&mut got)
        .unwrap();
    writer.join().unwrap();
    assert_eq!(got, "through a fifo", "a FIFO");

    let socket = dir.join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let nul = PathBuf::from(OsStr::from_bytes(b"/tmp/a\0b"));
    let cases = [
        ("a directory", dir.clone(), "EINVAL"),
        ("a character device", PathBuf::from("/dev/null"), "EINVAL"),
        ("a socket", socket, "EINVAL"),
        ("a NUL byte", nul, "EINVAL"),
        ("empty", PathBuf::new(), "EINVAL"),
        ("missing", dir.join("missing"), "ENOENT"),
    ];
    let got: Vec<(&str, String)> = cases
        .iter()
        .map(|(what, path, _)| (*what, code(source::open(path))))
        .collect();
    let want: Vec<(&str, String)> = cases
        .iter()
        .map(|(what, _, want)| (*what, want.to_string()))
        .collect();
    assert_eq!(got, want);
}
