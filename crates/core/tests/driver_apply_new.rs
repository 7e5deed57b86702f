//! `Driver::apply_new`, the create-and-apply of a layer blob, against a real loop-mounted btrfs:
//! its digests equal `sha256sum` of the blob and of what `gzip -dc` / `zstd -dc` make of it; a
//! wrong digest, size or diffID is ERR_DIGEST and leaves the store as it was (`btrfs
//! subvolume list` is the oracle); an existing id is EEXIST before the input is read; an abort
//! leaves nothing.

mod common;

use btrfs_layers_core::digest::{Digest, Expect};
use btrfs_layers_core::driver::{CreateOptions, Driver, DriverOptions};
use btrfs_layers_core::Control;
use common::*;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

/// `sha256sum` of what `sh -c cmd` prints, as `sha256:<hex>`, and its length.
fn oracle_sha256(cmd: &str) -> (String, u64) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(out.status.success(), "{cmd}");
    let summed = Command::new("sh")
        .arg("-c")
        .arg(format!("{cmd} | sha256sum"))
        .output()
        .unwrap();
    let hex = String::from_utf8(summed.stdout).unwrap();
    (
        format!("sha256:{}", hex.split_whitespace().next().unwrap()),
        out.stdout.len() as u64,
    )
}

/// A layer tar with a few files, followed by bytes after its end-of-archive marker (which the
/// diffID covers too), and its gzip and zstd blobs: [plain, gzip, zstd] paths.
fn blobs(dir: &Path) -> [PathBuf; 3] {
    let src = dir.join("src");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("etc/hello"), "hello\n").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(src.join("big"), big).unwrap();
    let tar = dir.join("layer.tar");
    run(
        "tar",
        &[
            "-C",
            src.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ],
    );
    let mut bytes = fs::read(&tar).unwrap();
    bytes.extend(vec![0u8; 4096]);
    fs::write(&tar, bytes).unwrap();
    run("gzip", &["-k", "-f", tar.to_str().unwrap()]);
    run("zstd", &["-q", "-f", tar.to_str().unwrap()]);
    [
        tar.clone(),
        dir.join("layer.tar.gz"),
        dir.join("layer.tar.zst"),
    ]
}

fn subvolume_paths(fs: &Btrfs) -> Vec<String> {
    let mut paths: Vec<String> = oracle_list(&fs.mnt).into_iter().map(|l| l.path).collect();
    paths.sort();
    paths
}

fn open(p: &Path) -> fs::File {
    fs::File::open(p).unwrap()
}

#[test]
fn digests_are_those_of_the_blob_and_of_the_whole_uncompressed_tar() {
    let fs = require_btrfs!();
    require_tools!("tar", "gzip", "zstd", "sha256sum");
    let home = fs.mnt.join("home");
    let driver = Driver::init(&home, DriverOptions::default()).unwrap();
    driver
        .create("base", None, &CreateOptions::default())
        .unwrap();
    fs::write(home.join("subvolumes/base/from-base"), "b").unwrap();
    let [tar, gz, zst] = blobs(&fs.mnt);
    let t = tar.display();
    let (diff_id, tar_size) = oracle_sha256(&format!("cat {t}"));
    for (id, blob, decompress) in [
        ("plain", &tar, "cat"),
        ("gzip", &gz, "gzip -dc"),
        ("zstd", &zst, "zstd -dc"),
    ] {
        let (digest, size) = oracle_sha256(&format!("cat {}", blob.display()));
        let (unpacked, unpacked_size) = oracle_sha256(&format!("{decompress} {}", blob.display()));
        assert_eq!((&unpacked, unpacked_size), (&diff_id, tar_size), "{id}");
        let expect = Expect {
            digest: Some(Digest::parse(&digest, "digest", "t").unwrap()),
            size: Some(size),
            diff_id: Some(Digest::parse(&diff_id, "diffId", "t").unwrap()),
        };
        let got = driver
            .apply_new(id, Some("base"), open(blob), &expect, Control::NONE)
            .unwrap();
        assert_eq!(got.digests.digest.to_string(), digest, "{id}");
        assert_eq!(got.digests.size, size, "{id}");
        assert_eq!(got.digests.diff_id.to_string(), diff_id, "{id}");
        assert_eq!(got.digests.uncompressed_size, tar_size, "{id}");
        assert_eq!(got.applied, 3_000_000 + 6, "{id}");
        let layer = home.join("subvolumes").join(id);
        assert_eq!(
            fs::read_to_string(layer.join("etc/hello")).unwrap(),
            "hello\n"
        );
        assert!(layer.join("from-base").exists(), "a snapshot of its parent");
        let meta = driver.metadata(id).unwrap();
        assert_eq!(
            meta.parent.as_deref(),
            Some("base"),
            "the record carries its parent"
        );
        assert!(!meta.read_only);
    }
    // Without a parent: an empty layer with the tar applied, and no parent recorded.
    let got = driver
        .apply_new("alone", None, open(&gz), &Expect::default(), Control::NONE)
        .unwrap();
    assert_eq!(got.digests.diff_id.to_string(), diff_id);
    assert!(!home.join("subvolumes/alone/from-base").exists());
    assert_eq!(driver.metadata("alone").unwrap().parent, None);
}

#[test]
fn a_wrong_digest_size_or_diff_id_is_err_digest_and_keeps_nothing() {
    let fs = require_btrfs!();
    require_tools!("tar", "gzip", "zstd", "sha256sum");
    let home = fs.mnt.join("home");
    let driver = Driver::init(&home, DriverOptions::default()).unwrap();
    driver
        .create("base", None, &CreateOptions::default())
        .unwrap();
    let [_, gz, _] = blobs(&fs.mnt);
    let (digest, size) = oracle_sha256(&format!("cat {}", gz.display()));
    let (diff_id, _) = oracle_sha256(&format!("gzip -dc {}", gz.display()));
    let right = Expect {
        digest: Some(Digest::parse(&digest, "digest", "t").unwrap()),
        size: Some(size),
        diff_id: Some(Digest::parse(&diff_id, "diffId", "t").unwrap()),
    };
    let other = Digest::parse(&format!("sha256:{}", "ab".repeat(32)), "d", "t").unwrap();
    let before = subvolume_paths(&fs);
    for (expect, says) in [
        (
            Expect {
                digest: Some(other),
                ..right
            },
            format!("digest mismatch: expected {other}, got {digest}"),
        ),
        (
            Expect {
                size: Some(size + 1),
                ..right
            },
            format!("size mismatch: expected {} bytes, got {size}", size + 1),
        ),
        (
            Expect {
                diff_id: Some(other),
                ..right
            },
            format!("diffID mismatch: expected {other}, got {diff_id}"),
        ),
    ] {
        let e = driver
            .apply_new("bad", Some("base"), open(&gz), &expect, Control::NONE)
            .unwrap_err();
        assert_eq!(e.code_str(), "ERR_DIGEST", "{e}");
        assert_eq!(e.message, says);
        assert!(!driver.exists("bad").unwrap());
        assert_eq!(driver.layers().unwrap(), ["base"]);
        assert_eq!(subvolume_paths(&fs), before, "the store is as before");
    }
    driver
        .apply_new("good", Some("base"), open(&gz), &right, Control::NONE)
        .unwrap();
}

/// A reader that must never be read.
struct Untouched(AtomicBool);

impl Read for &Untouched {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        self.0.store(true, Ordering::Relaxed);
        Ok(0)
    }
}

#[test]
fn an_existing_id_is_eexist_before_the_input_is_read() {
    let fs = require_btrfs!();
    let home = fs.mnt.join("home");
    let driver = Driver::init(&home, DriverOptions::default()).unwrap();
    driver
        .create("taken", None, &CreateOptions::default())
        .unwrap();
    fs::write(home.join("subvolumes/taken/mine"), "x").unwrap();
    let before = subvolume_paths(&fs);
    let input = Untouched(AtomicBool::new(false));
    let e = driver
        .apply_new("taken", None, &input, &Expect::default(), Control::NONE)
        .unwrap_err();
    assert_eq!(e.code_str(), "EEXIST", "{e}");
    assert!(!input.0.load(Ordering::Relaxed), "no byte read");
    assert_eq!(subvolume_paths(&fs), before);
    assert!(home.join("subvolumes/taken/mine").exists());
    let e = driver
        .apply_new(
            "new",
            Some("missing"),
            &input,
            &Expect::default(),
            Control::NONE,
        )
        .unwrap_err();
    assert_eq!(e.code_str(), "ENOENT", "{e}");
    assert_eq!(subvolume_paths(&fs), before);
}

#[test]
fn an_abort_mid_stream_leaves_nothing() {
    let fs = require_btrfs!();
    require_tools!("tar", "gzip", "zstd");
    let home = fs.mnt.join("home");
    let driver = Driver::init(&home, DriverOptions::default()).unwrap();
    driver
        .create("base", None, &CreateOptions::default())
        .unwrap();
    let [tar, _, _] = blobs(&fs.mnt);
    let before = subvolume_paths(&fs);
    let abort = AtomicBool::new(false);
    let seen = AtomicBool::new(false);
    // Abort from the first progress report: part of the tar is applied by then.
    let report = |_: u64| {
        seen.store(true, Ordering::Relaxed);
        abort.store(true, Ordering::Relaxed);
    };
    let e = driver
        .apply_new(
            "cut",
            Some("base"),
            open(&tar),
            &Expect::default(),
            Control::new(&abort, &report),
        )
        .unwrap_err();
    assert!(seen.load(Ordering::Relaxed));
    assert_eq!(e.code_str(), "ABORT_ERR", "{e}");
    assert!(!driver.exists("cut").unwrap());
    assert_eq!(subvolume_paths(&fs), before);
    assert!(fs::read_dir(home.join("subvolumes")).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with('.')));
}
