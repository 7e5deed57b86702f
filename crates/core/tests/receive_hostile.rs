//! Hostile and malformed send streams, built with `sendstream::write`: each is ERR_BAD_LAYER,
//! leaves no layer and no temporary (`btrfs subvolume list` is the oracle), and a sentinel
//! directory outside the filesystem, which the streams aim at, is untouched. An abort
//! mid-stream leaves nothing either; a missing or wrong parent is refused before any change.

mod common;
mod receive_support;

use btrfs_layers_core::driver::replicate::ReceiveOptions;
use btrfs_layers_core::driver::{Driver, DriverOptions};
use btrfs_layers_core::sendstream::write::StreamWriter;
use btrfs_layers_core::sendstream::{attr, cmd};
use btrfs_layers_core::{Code, Control};
use common::*;
use receive_support::*;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

const UUID: [u8; 16] = *b"0123456789abcdef";

type Attrs<'a> = Vec<(u16, &'a [u8])>;

fn u64le(n: u64) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

/// A stream of protocol 1: SUBVOL, then `body`'s commands (given their raw form), then END.
fn stream(body: impl FnOnce(&mut StreamWriter<Vec<u8>>), end: bool) -> Vec<u8> {
    let mut w = StreamWriter::new(Vec::new(), 1).unwrap();
    let ctransid = u64le(7);
    w.command(
        cmd::SUBVOL,
        &[
            (attr::PATH, b"sub"),
            (attr::UUID, &UUID),
            (attr::CTRANSID, &ctransid),
        ],
    )
    .unwrap();
    body(&mut w);
    if end {
        w.command(cmd::END, &[]).unwrap();
    }
    w.into_inner()
}

fn with(commands: Vec<(u16, Attrs<'_>)>) -> Vec<u8> {
    stream(
        |w| {
            for (c, a) in &commands {
                w.command(*c, a).unwrap();
            }
        },
        true,
    )
}

/// Nothing left in the store: no layer, no temporary, no subvolume below home.
fn assert_nothing_kept(driver: &Driver, fs: &Btrfs, case: &str) {
    assert!(
        driver.layers().unwrap().is_empty(),
        "{case}: a layer was kept"
    );
    assert!(
        names_in(&fs.mnt.join("home/subvolumes")).is_empty(),
        "{case}: an entry was left"
    );
    let left = oracle_below(&fs.mnt, &fs.mnt.join("home"));
    assert!(left.is_empty(), "{case}: subvolumes left: {left:?}");
}

#[test]
fn hostile_streams_are_err_bad_layer_and_touch_nothing() {
    let fs = require_btrfs!();
    let sentinel = Sentinel::new("receive-sentinel");
    let outside = sentinel.dir.to_str().unwrap().as_bytes().to_vec();
    let outside_file = [&outside[..], b"/f1"].concat();
    let absolute_inside = [&outside[..], b"/new"].concat();
    let data = b"EVIL".to_vec();
    let zero = u64le(0);
    let four = u64le(4);
    let other_uuid = *b"fedcba9876543210";
    let ctransid = u64le(7);
    let chr = u64le(0o20644);
    let rdev = u64le((1 << 8) | 3);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "`..` in a path",
            with(vec![(cmd::MKFILE, vec![(attr::PATH, b"../escape")])]),
        ),
        (
            "`..` in the middle of a path",
            with(vec![
                (cmd::MKDIR, vec![(attr::PATH, b"d")]),
                (cmd::MKFILE, vec![(attr::PATH, b"d/../../escape")]),
            ]),
        ),
        (
            "an absolute path",
            with(vec![(cmd::MKFILE, vec![(attr::PATH, &absolute_inside)])]),
        ),
        (
            "a symlink in the middle of a path",
            with(vec![
                (
                    cmd::SYMLINK,
                    vec![(attr::PATH, b"l"), (attr::PATH_LINK, &outside)],
                ),
                (cmd::MKFILE, vec![(attr::PATH, b"l/new")]),
            ]),
        ),
        (
            "a write through a symlink in the middle of a path",
            with(vec![
                (
                    cmd::SYMLINK,
                    vec![(attr::PATH, b"l"), (attr::PATH_LINK, &outside)],
                ),
                (
                    cmd::WRITE,
                    vec![
                        (attr::PATH, b"l/f1"),
                        (attr::FILE_OFFSET, &zero),
                        (attr::DATA, &data),
                    ],
                ),
            ]),
        ),
        (
            "a symlink where a directory was renamed away",
            with(vec![
                (cmd::MKDIR, vec![(attr::PATH, b"d")]),
                (cmd::MKFILE, vec![(attr::PATH, b"d/x")]),
                (cmd::RENAME, vec![(attr::PATH, b"d"), (attr::PATH_TO, b"e")]),
                (
                    cmd::SYMLINK,
                    vec![(attr::PATH, b"d"), (attr::PATH_LINK, &outside)],
                ),
                (cmd::MKFILE, vec![(attr::PATH, b"d/new")]),
            ]),
        ),
        (
            "a symlink where a directory was removed",
            with(vec![
                (cmd::MKDIR, vec![(attr::PATH, b"d")]),
                (cmd::MKDIR, vec![(attr::PATH, b"d/s")]),
                (cmd::MKFILE, vec![(attr::PATH, b"d/s/x")]),
                (cmd::UNLINK, vec![(attr::PATH, b"d/s/x")]),
                (cmd::RMDIR, vec![(attr::PATH, b"d/s")]),
                (
                    cmd::SYMLINK,
                    vec![(attr::PATH, b"d/s"), (attr::PATH_LINK, &outside)],
                ),
                (cmd::MKFILE, vec![(attr::PATH, b"d/s/new")]),
            ]),
        ),
        (
            "a write to a symlink",
            with(vec![
                (
                    cmd::SYMLINK,
                    vec![(attr::PATH, b"l"), (attr::PATH_LINK, &outside_file)],
                ),
                (
                    cmd::WRITE,
                    vec![
                        (attr::PATH, b"l"),
                        (attr::FILE_OFFSET, &zero),
                        (attr::DATA, &data),
                    ],
                ),
            ]),
        ),
        (
            "a truncate of a symlink",
            with(vec![
                (
                    cmd::SYMLINK,
                    vec![(attr::PATH, b"l"), (attr::PATH_LINK, &outside_file)],
                ),
                (cmd::TRUNCATE, vec![(attr::PATH, b"l"), (attr::SIZE, &zero)]),
            ]),
        ),
        (
            "a write to a device node",
            with(vec![
                (
                    cmd::MKNOD,
                    vec![
                        (attr::PATH, b"dev"),
                        (attr::MODE, &chr),
                        (attr::RDEV, &rdev),
                    ],
                ),
                (
                    cmd::WRITE,
                    vec![
                        (attr::PATH, b"dev"),
                        (attr::FILE_OFFSET, &zero),
                        (attr::DATA, &data),
                    ],
                ),
            ]),
        ),
        (
            "a clone out of the subvolume",
            with(vec![
                (cmd::MKFILE, vec![(attr::PATH, b"f")]),
                (
                    cmd::CLONE,
                    vec![
                        (attr::PATH, b"f"),
                        (attr::FILE_OFFSET, &zero),
                        (attr::CLONE_LEN, &four),
                        (attr::CLONE_UUID, &UUID),
                        (attr::CLONE_CTRANSID, &ctransid),
                        (attr::CLONE_PATH, b"../../../etc/passwd"),
                        (attr::CLONE_OFFSET, &zero),
                    ],
                ),
            ]),
        ),
        (
            "a clone source not in the store",
            with(vec![
                (cmd::MKFILE, vec![(attr::PATH, b"f")]),
                (
                    cmd::CLONE,
                    vec![
                        (attr::PATH, b"f"),
                        (attr::FILE_OFFSET, &zero),
                        (attr::CLONE_LEN, &four),
                        (attr::CLONE_UUID, &other_uuid),
                        (attr::CLONE_CTRANSID, &ctransid),
                        (attr::CLONE_PATH, b"f"),
                        (attr::CLONE_OFFSET, &zero),
                    ],
                ),
            ]),
        ),
        (
            "a link out of the subvolume",
            with(vec![(
                cmd::LINK,
                vec![(attr::PATH, b"x"), (attr::PATH_LINK, b"../../secret")],
            )]),
        ),
        (
            "a link to an absolute path",
            with(vec![(
                cmd::LINK,
                vec![(attr::PATH, b"x"), (attr::PATH_LINK, &outside_file)],
            )]),
        ),
        (
            "a rename out of the subvolume",
            with(vec![
                (cmd::MKFILE, vec![(attr::PATH, b"f")]),
                (
                    cmd::RENAME,
                    vec![(attr::PATH, b"f"), (attr::PATH_TO, b"../f")],
                ),
            ]),
        ),
        (
            "a huge length field",
            stream(
                |w| {
                    w.raw_command_with_crc(cmd::WRITE, u32::MAX, 0, b"")
                        .unwrap()
                },
                true,
            ),
        ),
        (
            "a bad crc",
            stream(
                |w| {
                    let body = w.body(&[(attr::PATH, b"f")]).unwrap();
                    w.raw_command_with_crc(cmd::MKFILE, body.len() as u32, 0xdead_beef, &body)
                        .unwrap()
                },
                true,
            ),
        ),
        ("a truncated stream", {
            let mut s = with(vec![(cmd::MKFILE, vec![(attr::PATH, b"f")])]);
            s.truncate(s.len() - 13);
            s
        }),
        (
            "a stream without END",
            stream(
                |w| w.command(cmd::MKFILE, &[(attr::PATH, b"f")]).unwrap(),
                false,
            ),
        ),
        (
            "an unknown command",
            with(vec![(99, vec![(attr::PATH, b"f")])]),
        ),
        ("a command before SUBVOL", {
            let mut w = StreamWriter::new(Vec::new(), 1).unwrap();
            w.command(cmd::MKFILE, &[(attr::PATH, b"f")]).unwrap();
            w.command(cmd::END, &[]).unwrap();
            w.into_inner()
        }),
        (
            "a second subvolume",
            with(vec![(
                cmd::SUBVOL,
                vec![
                    (attr::PATH, b"again"),
                    (attr::UUID, &other_uuid),
                    (attr::CTRANSID, &ctransid),
                ],
            )]),
        ),
        ("a second stream after END", {
            let mut s = with(vec![]);
            let again = s.clone();
            s.extend_from_slice(&again[17..]);
            s
        }),
        (
            "a v3 ENABLE_VERITY",
            with(vec![(cmd::ENABLE_VERITY, vec![(attr::PATH, b"f")])]),
        ),
    ];
    let home = fs.mnt.join("home");
    let driver = Driver::init(&home, DriverOptions::default()).unwrap();
    for (case, bytes) in &cases {
        let e = driver
            .receive(
                "hostile",
                &mut &bytes[..],
                &ReceiveOptions::default(),
                Control::NONE,
            )
            .expect_err(case);
        assert_eq!(e.code, Code::BadLayer, "{case}: {e}");
        assert_eq!(e.code_str(), "ERR_BAD_LAYER", "{case}");
        assert_nothing_kept(&driver, &fs, case);
        sentinel.assert_intact();
        assert!(!sentinel.dir.join("new").exists(), "{case}");
        assert!(!fs.mnt.join("escape").exists(), "{case}");
        assert!(!fs.mnt.join("home/escape").exists(), "{case}");
    }
    // The same writer makes a stream that is received: the cases fail for what they hold.
    let fine = with(vec![
        (cmd::MKFILE, vec![(attr::PATH, b"f")]),
        (
            cmd::WRITE,
            vec![
                (attr::PATH, b"f"),
                (attr::FILE_OFFSET, &zero),
                (attr::DATA, &data),
            ],
        ),
        (
            cmd::SYMLINK,
            vec![(attr::PATH, b"l"), (attr::PATH_LINK, &outside)],
        ),
    ]);
    driver
        .receive(
            "fine",
            &mut &fine[..],
            &ReceiveOptions::default(),
            Control::NONE,
        )
        .unwrap();
    assert_eq!(std::fs::read(home.join("subvolumes/fine/f")).unwrap(), data);
}

/// Reads `inner`, and sets `flag` once `after` bytes have been read.
struct AbortAfter<'a, R> {
    inner: R,
    read: usize,
    after: usize,
    flag: &'a AtomicBool,
}

impl<R: Read> Read for AbortAfter<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let end = buf.len().min(4096);
        let n = self.inner.read(&mut buf[..end])?;
        self.read += n;
        if self.read >= self.after {
            self.flag.store(true, Ordering::Relaxed);
        }
        Ok(n)
    }
}

#[test]
fn an_aborted_receive_leaves_nothing() {
    let fs = require_btrfs!();
    let src = fs.path("src");
    mk_subvol(&src);
    sh(
        &src,
        "for i in $(seq 1 300); do head -c 20000 /dev/urandom > f$i; done",
    );
    snapshot_ro(&src, &fs.path("snap"));
    let stream = fs.dir.join("s");
    send(&fs.path("snap"), &[], &stream);
    let bytes = std::fs::read(&stream).unwrap();
    let home = fs.mnt.join("home");
    let driver = Driver::init(&home, DriverOptions::default()).unwrap();
    let flag = AtomicBool::new(false);
    let mut input = AbortAfter {
        inner: &bytes[..],
        read: 0,
        after: bytes.len() / 2,
        flag: &flag,
    };
    let e = driver
        .receive(
            "a",
            &mut input,
            &ReceiveOptions::default(),
            Control::abort_on(&flag),
        )
        .unwrap_err();
    assert_eq!(e.code, Code::Aborted, "{e}");
    assert!(input.read < bytes.len(), "stopped before the end");
    assert_nothing_kept(&driver, &fs, "abort");
    // Not aborted, the same stream is received.
    driver
        .receive(
            "a",
            &mut &bytes[..],
            &ReceiveOptions::default(),
            Control::NONE,
        )
        .unwrap();
    assert_eq!(names_in(&home.join("subvolumes/a")).len(), 300);
}

#[test]
fn an_incremental_stream_needs_its_parent() {
    let fs = require_btrfs!();
    require_tools!("getfattr");
    let src = fs.path("src");
    mk_subvol(&src);
    sh(&src, "head -c 1000000 /dev/urandom > f");
    snapshot_ro(&src, &fs.path("snap1"));
    // The same tree under another UUID, as a sender's temporary snapshot of a read-write layer.
    snapshot_ro(&fs.path("snap1"), &fs.path("snap1-again"));
    // f.copy shares extents only with the parent once f is gone: a clone from the parent.
    sh(
        &src,
        "printf two > g && cp --reflink=always f f.copy && rm f",
    );
    snapshot_ro(&src, &fs.path("snap2"));
    let (full, incr, other) = (
        fs.dir.join("full"),
        fs.dir.join("incr"),
        fs.dir.join("other"),
    );
    send(&fs.path("snap1"), &[], &full);
    for (stream, parent) in [(&incr, "snap1"), (&other, "snap1-again")] {
        let parent = fs.path(parent);
        send(&fs.path("snap2"), &["-p", parent.to_str().unwrap()], stream);
    }
    assert!(
        dump_commands(&other).iter().any(|c| c == "clone"),
        "a clone from the parent"
    );
    let home = fs.mnt.join("home");
    let driver = Driver::init(&home, DriverOptions::default()).unwrap();
    let open = |p: &Path| std::fs::File::open(p).unwrap();
    let opts = ReceiveOptions::default();
    // No layer holds the parent.
    let e = driver
        .receive("b", &mut open(&incr), &opts, Control::NONE)
        .unwrap_err();
    assert_eq!(e.code_str(), "ENOENT", "{e}");
    assert_nothing_kept(&driver, &fs, "no parent");
    driver
        .receive("a", &mut open(&full), &opts, Control::NONE)
        .unwrap();
    let named = ReceiveOptions { parent: Some("a") };
    // A parent named for a full stream.
    let e = driver
        .receive("c", &mut open(&full), &named, Control::NONE)
        .unwrap_err();
    assert_eq!(e.code_str(), "EINVAL", "{e}");
    // A parent the store has under no UUID the stream names: not found, unless named; then
    // the snapshot and the clones from it come from the named layer.
    let e = driver
        .receive("c", &mut open(&other), &opts, Control::NONE)
        .unwrap_err();
    assert_eq!(e.code_str(), "ENOENT", "{e}");
    let got = driver
        .receive("c", &mut open(&other), &named, Control::NONE)
        .unwrap();
    assert_eq!(got.parent.as_deref(), Some("a"));
    assert_same_tree(&home.join("subvolumes/c"), &fs.path("snap2"));
    let got = driver
        .receive("b", &mut open(&incr), &opts, Control::NONE)
        .unwrap();
    assert_eq!(got.parent.as_deref(), Some("a"));
    assert_same_tree(&home.join("subvolumes/b"), &fs.path("snap2"));
    assert_eq!(driver.layers().unwrap(), ["a", "b", "c"]);
}
