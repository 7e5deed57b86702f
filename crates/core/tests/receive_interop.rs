//! `Driver::receive` of streams from `btrfs send` gives the tree `btrfs receive` gives of the
//! same stream (contents, modes, owners, xattrs, hardlinks, holes, mtimes), for a full stream,
//! an incremental chain of three and a protocol 2 stream of compressed extents; reflinks stay
//! shared (`filefrag`), and the layer is marked received and read-only (`btrfs subvolume
//! show`).

mod common;
mod receive_support;

use btrfs_layers_core::driver::diff::Against;
use btrfs_layers_core::driver::replicate::{ReceiveOptions, Received};
use btrfs_layers_core::driver::{Driver, DriverOptions};
use btrfs_layers_core::Control;
use common::*;
use receive_support::*;
use std::fs::File;
use std::path::{Path, PathBuf};

fn receive(driver: &Driver, id: &str, stream: &Path, parent: Option<&str>) -> Received {
    let opts = ReceiveOptions { parent };
    driver
        .receive(id, &mut File::open(stream).unwrap(), &opts, Control::NONE)
        .unwrap_or_else(|e| panic!("receive {id}: {e}"))
}

/// Whether extents of `a` and `b` share physical blocks.
/// A fresh store at `mnt/home` with the built stream `bytes` received as layer `id`.
fn receive_built(mnt: &Path, id: &str, bytes: &[u8]) -> PathBuf {
    let home = mnt.join("home");
    let driver = Driver::init(&home, DriverOptions::default()).unwrap();
    driver
        .receive(
            id,
            &mut &bytes[..],
            &ReceiveOptions::default(),
            Control::NONE,
        )
        .unwrap();
    home
}

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
    // The record makes a received layer a child of its parent for `changes` (and so `diff`).
    let changes: Vec<String> = driver
        .changes("l2", Against::RecordedParent, Control::NONE)
        .unwrap()
        .iter()
        .map(|c| format!("{} {}", c.kind.as_str(), c.path.display()))
        .collect();
    for want in [
        "modify etc/hello",
        "add etc/hello.hard",
        "delete abs-link",
        "delete big",
        "add big.moved",
        "delete dir/sub",
        "add dir/sub-renamed/new",
    ] {
        assert!(changes.iter().any(|c| c == want), "{want} in {changes:?}");
    }
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

/// Owners in the stream are container ids to a store with id maps, as in applyDiff: the
/// owner, the ACL entries and a capability's root id land shifted (`stat`, `getfacl -n`).
#[test]
fn owners_are_mapped_to_the_stores_host_ids() {
    let fs = require_btrfs!();
    require_tools!("getfacl", "setfacl", "setcap", "getcap");
    let src = fs.path("src");
    mk_subvol(&src);
    sh(
        &src,
        "printf x > f && chown 1000:2000 f && setfacl -m u:1000:r,g:2000:r f
         printf y > cap && setcap cap_net_raw+ep cap
         mkdir d && chown 5:6 d",
    );
    snapshot_ro(&src, &fs.path("snap"));
    let stream = fs.dir.join("s");
    send(&fs.path("snap"), &[], &stream);
    let map = |size| btrfs_layers_core::idmap::IdMap {
        container_id: 0,
        host_id: 100_000,
        size,
    };
    let home = fs.mnt.join("home");
    let driver = Driver::init(
        &home,
        DriverOptions {
            uid_maps: vec![map(65536)],
            gid_maps: vec![map(65536)],
            ..DriverOptions::default()
        },
    )
    .unwrap();
    receive(&driver, "m", &stream, None);
    let layer = home.join("subvolumes/m");
    let owner = |p: &str| run("stat", &["-c", "%u:%g", layer.join(p).to_str().unwrap()]);
    assert_eq!(owner("").trim(), "100000:100000");
    assert_eq!(owner("f").trim(), "101000:102000");
    assert_eq!(owner("d").trim(), "100005:100006");
    let acl = run("getfacl", &["-n", "-p", layer.join("f").to_str().unwrap()]);
    assert!(acl.contains("user:101000:r--"), "{acl}");
    assert!(acl.contains("group:102000:r--"), "{acl}");
    let cap = run("getcap", &[layer.join("cap").to_str().unwrap()]);
    assert!(cap.contains("cap_net_raw=ep"), "{cap}");
    // A store whose maps do not hold the stream's ids refuses it, and keeps nothing.
    let home = fs.mnt.join("narrow");
    let narrow = Driver::init(
        &home,
        DriverOptions {
            uid_maps: vec![map(100)],
            gid_maps: vec![map(100)],
            ..DriverOptions::default()
        },
    )
    .unwrap();
    let e = narrow
        .receive(
            "m",
            &mut File::open(&stream).unwrap(),
            &ReceiveOptions::default(),
            Control::NONE,
        )
        .unwrap_err();
    assert_eq!(e.code_str(), "ERR_ID_MAPPING", "{e}");
    assert!(names_in(&home.join("subvolumes")).is_empty());
}

/// Where the kernel refuses an encoded write (here: an offset not on a sector boundary), the
/// extent is decompressed and written, as btrfs receive does.
#[test]
fn a_refused_encoded_write_is_decompressed_and_written() {
    use btrfs_layers_core::sendstream::write::StreamWriter;
    use btrfs_layers_core::sendstream::{attr, cmd};
    let fs = require_btrfs!();
    let plain: Vec<u8> = (0..4096u32).map(|i| (i % 13) as u8 + b'a').collect();
    let compressed = zstd::bulk::compress(&plain, 3).unwrap();
    let mut w = StreamWriter::new(Vec::new(), 2).unwrap();
    let (uuid, n0, n100, n4096) = (*b"0123456789abcdef", 0u64, 100u64, 4096u64);
    w.command(
        cmd::SUBVOL,
        &[
            (attr::PATH, b"s"),
            (attr::UUID, &uuid),
            (attr::CTRANSID, &n0.to_le_bytes()),
        ],
    )
    .unwrap();
    w.command(cmd::MKFILE, &[(attr::PATH, b"f")]).unwrap();
    w.command(
        cmd::ENCODED_WRITE,
        &[
            (attr::PATH, b"f"),
            (attr::FILE_OFFSET, &n100.to_le_bytes()),
            (attr::UNENCODED_FILE_LEN, &n4096.to_le_bytes()),
            (attr::UNENCODED_LEN, &n4096.to_le_bytes()),
            (attr::UNENCODED_OFFSET, &n0.to_le_bytes()),
            (attr::COMPRESSION, &2u32.to_le_bytes()),
            (attr::DATA, &compressed),
        ],
    )
    .unwrap();
    w.command(cmd::END, &[]).unwrap();
    let bytes = w.into_inner();
    let home = receive_built(&fs.mnt, "e", &bytes);
    let got = std::fs::read(home.join("subvolumes/e/f")).unwrap();
    assert_eq!(got.len(), 4196);
    assert!(got[..100].iter().all(|&b| b == 0));
    assert_eq!(&got[100..], &plain[..]);
}

/// FALLOCATE (v2) preallocates past the end without growing the file (KEEP_SIZE) and punches
/// holes; FILEATTR is read and ignored, as btrfs receive does. The kernel here sends neither
/// (it writes preallocated ranges as zeros and holes by truncate), so the stream is built.
#[test]
fn fallocate_and_fileattr_of_protocol_2() {
    use btrfs_layers_core::sendstream::write::StreamWriter;
    use btrfs_layers_core::sendstream::{attr, cmd};
    let fs = require_btrfs!();
    let le = |n: u64| n.to_le_bytes();
    let data = vec![7u8; 256 * 1024];
    let mut w = StreamWriter::new(Vec::new(), 2).unwrap();
    let uuid = *b"0123456789abcdef";
    w.command(
        cmd::SUBVOL,
        &[
            (attr::PATH, b"s"),
            (attr::UUID, &uuid),
            (attr::CTRANSID, &le(1)),
        ],
    )
    .unwrap();
    w.command(cmd::MKFILE, &[(attr::PATH, b"f")]).unwrap();
    w.command(
        cmd::WRITE,
        &[
            (attr::PATH, b"f"),
            (attr::FILE_OFFSET, &le(0)),
            (attr::DATA, &data),
        ],
    )
    .unwrap();
    let keep_size = libc::FALLOC_FL_KEEP_SIZE as u32;
    let punch = (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE) as u32;
    for (mode, offset, len) in [
        (keep_size, 256 * 1024, 1 << 20),
        (punch, 64 * 1024, 64 * 1024),
    ] {
        w.command(
            cmd::FALLOCATE,
            &[
                (attr::PATH, b"f"),
                (attr::FALLOCATE_MODE, &mode.to_le_bytes()),
                (attr::FILE_OFFSET, &le(offset)),
                (attr::SIZE, &le(len)),
            ],
        )
        .unwrap();
    }
    w.command(
        cmd::FILEATTR,
        &[(attr::PATH, b"f"), (attr::FILEATTR, &le(1 << 7))],
    )
    .unwrap();
    w.command(cmd::END, &[]).unwrap();
    let bytes = w.into_inner();
    let home = receive_built(&fs.mnt, "v2", &bytes);
    let f = home.join("subvolumes/v2/f");
    let meta = std::fs::metadata(&f).unwrap();
    assert_eq!(meta.len(), 256 * 1024, "KEEP_SIZE leaves the size");
    let blocks: u64 = run("stat", &["-c", "%b", f.to_str().unwrap()])
        .trim()
        .parse()
        .unwrap();
    assert!(
        blocks * 512 >= (256 + 1024 - 64) * 1024,
        "preallocated: {blocks} blocks"
    );
    assert_eq!(
        data_ranges(&f, meta.len()),
        [(0, 64 * 1024), (128 * 1024, 256 * 1024)],
        "the punched hole"
    );
    let attrs = run("lsattr", &["-d", f.to_str().unwrap()]);
    assert!(
        !attrs.split_whitespace().next().unwrap().contains('a'),
        "{attrs}"
    );
}
