//! `Driver::receive` of streams from `btrfs send` gives the tree `btrfs receive` gives of the
//! same stream (contents, modes, owners, xattrs, hardlinks, holes, mtimes), for a full stream,
//! an incremental chain of three and a protocol 2 stream of compressed extents; reflinks stay
//! shared (`filefrag`), and the layer is marked received and read-only (`btrfs subvolume
//! show`).

mod common;
mod receive_support;

use btrfs_layers_core::driver::replicate::{ReceiveOptions, Received};
use btrfs_layers_core::driver::{Driver, DriverOptions};
use btrfs_layers_core::Control;
use common::*;
use receive_support::*;
use std::fs::File;
use std::path::Path;

fn receive(driver: &Driver, id: &str, stream: &Path, parent: Option<&str>) -> Received {
    let opts = ReceiveOptions { parent };
    driver
        .receive(id, &mut File::open(stream).unwrap(), &opts, Control::NONE)
        .unwrap_or_else(|e| panic!("receive {id}: {e}"))
}

/// Whether extents of `a` and `b` share physical blocks.
fn shares_extents(a: &Path, b: &Path) -> bool {
    let pa: Vec<u64> = extents(a).iter().map(|e| e.1).collect();
    extents(b).iter().any(|e| pa.contains(&e.1))
}

#[test]
fn a_full_stream_and_an_incremental_chain_of_three_match_btrfs_receive() {
    let fs = require_btrfs!();
    require_tools!("getfattr", "setfattr");
    let src = fs.path("src");
    mk_subvol(&src);
    let mut streams = Vec::new();
    for (n, script) in [BASE, STEP2, STEP3].iter().enumerate() {
        sh(&src, script);
        let snap = fs.path(&format!("snap{}", n + 1));
        snapshot_ro(&src, &snap);
        let stream = fs.dir.join(format!("s{}", n + 1));
        match n {
            0 => send(&snap, &[], &stream),
            _ => {
                let parent = fs.path(&format!("snap{n}"));
                send(&snap, &["-p", parent.to_str().unwrap()], &stream)
            }
        }
        oracle_receive(&stream, &fs.path("oracle"));
        streams.push((snap, stream));
    }
    assert!(
        dump_commands(&streams[0].1).iter().any(|c| c == "clone"),
        "the full stream shares the reflinked file by CLONE"
    );
    let home = fs.mnt.join("home");
    let driver = Driver::init(&home, DriverOptions::default()).unwrap();
    let layers = home.join("subvolumes");
    // l1 full; l2 finds its parent by received UUID; l3 is told its parent.
    let got = [
        receive(&driver, "l1", &streams[0].1, None),
        receive(&driver, "l2", &streams[1].1, None),
        receive(&driver, "l3", &streams[2].1, Some("l2")),
    ];
    for (n, (snap, stream)) in streams.iter().enumerate() {
        let id = format!("l{}", n + 1);
        let name = snap.file_name().unwrap().to_str().unwrap();
        assert_same_tree(&layers.join(&id), &fs.path("oracle").join(name));
        let sent = oracle_show(snap);
        let ours = oracle_show(&layers.join(&id));
        assert_eq!(ours["Received UUID"], sent["UUID"], "{id}");
        assert_eq!(got[n].received_uuid, sent["UUID"], "{id}");
        assert!(oracle_ro(&layers.join(&id)), "{id} is read-only");
        assert_eq!(
            got[n].bytes,
            std::fs::metadata(stream).unwrap().len(),
            "{id}"
        );
        let parent = (n > 0).then(|| format!("l{n}"));
        assert_eq!(got[n].parent, parent, "{id}");
        assert_eq!(driver.metadata(&id).unwrap().parent, parent, "{id}");
    }
    assert!(
        shares_extents(&layers.join("l1/big"), &layers.join("l1/big.reflink")),
        "a reflinked pair stays shared"
    );
    assert!(
        shares_extents(&layers.join("l3/big.moved"), &layers.join("l3/big.again")),
        "a reflink of the parent's file stays shared"
    );
    assert!(
        shares_extents(&layers.join("l2/big.moved"), &layers.join("l1/big")),
        "an incremental layer shares its parent's extents"
    );
    assert_eq!(driver.layers().unwrap(), ["l1", "l2", "l3"]);
    assert_eq!(names_in(&layers), ["l1", "l2", "l3"], "no temporary left");
}

#[test]
fn a_protocol_2_stream_of_compressed_extents_matches_btrfs_receive_and_stays_compressed() {
    let fs = require_btrfs!();
    require_tools!("getfattr", "setfattr");
    run(
        "mount",
        &["-o", "remount,compress=zstd", fs.mnt.to_str().unwrap()],
    );
    let src = fs.path("src");
    mk_subvol(&src);
    sh(
        &src,
        "yes 'compressible text' | head -c 4000000 > text
         head -c 300000 /dev/urandom > noise
         truncate -s 2M holey && printf 'z%.0s' $(seq 1 5000) | dd of=holey bs=1 seek=1000000 conv=notrunc status=none
         cp --reflink=always text text.reflink
         mkdir d && printf 'small' > d/small && sync",
    );
    snapshot_ro(&src, &fs.path("snap1"));
    sh(
        &src,
        "yes 'more text' | head -c 1000000 >> text; rm noise; sync",
    );
    snapshot_ro(&src, &fs.path("snap2"));
    let (s1, s2) = (fs.dir.join("s1"), fs.dir.join("s2"));
    send(
        &fs.path("snap1"),
        &["--proto", "2", "--compressed-data"],
        &s1,
    );
    let parent = fs.path("snap1");
    send(
        &fs.path("snap2"),
        &[
            "--proto",
            "2",
            "--compressed-data",
            "-p",
            parent.to_str().unwrap(),
        ],
        &s2,
    );
    for s in [&s1, &s2] {
        assert!(
            dump_commands(s).iter().any(|c| c == "encoded_write"),
            "the stream carries compressed extents"
        );
        oracle_receive(s, &fs.path("oracle"));
    }
    let home = fs.mnt.join("home");
    let driver = Driver::init(&home, DriverOptions::default()).unwrap();
    receive(&driver, "v1", &s1, None);
    receive(&driver, "v2", &s2, None);
    let layers = home.join("subvolumes");
    assert_same_tree(&layers.join("v1"), &fs.path("oracle/snap1"));
    assert_same_tree(&layers.join("v2"), &fs.path("oracle/snap2"));
    assert!(
        has_encoded_extents(&layers.join("v1/text")),
        "the extents were written as they came, compressed"
    );
    assert!(shares_extents(
        &layers.join("v1/text"),
        &layers.join("v1/text.reflink")
    ));
}
