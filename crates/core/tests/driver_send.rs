//! `Driver::send` (issue 15) against a real loop-mounted btrfs, `btrfs receive` as the oracle:
//! a read-write layer goes through a temporary read-only snapshot that is gone after the
//! send, after an abort (the copy stops and the ioctl with it) and after a failed write; an
//! unsupported protocol is EINVAL before any snapshot is taken. Needs root, skipped loudly
//! otherwise.

mod common;

use btrfs_layers_core::driver::replicate::SendOptions;
use btrfs_layers_core::driver::{CreateOptions, Driver, DriverOptions};
use btrfs_layers_core::send::kernel_protocol;
use btrfs_layers_core::Control;
use common::{btrfs, oracle_list};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Names in the store's `subvolumes/` that are temporaries.
fn temporaries(home: &Path) -> Vec<String> {
    fs::read_dir(home.join("subvolumes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

/// A writable layer `id` with `mib` MiB of data in one file.
fn layer_with(d: &Driver, id: &str, mib: usize) {
    d.create(id, None, &CreateOptions::default()).unwrap();
    let p = d.get(id, None).unwrap();
    let mut f = fs::File::create(p.join("data")).unwrap();
    for i in 0..mib {
        f.write_all(&vec![i as u8 + 1; 1 << 20]).unwrap();
    }
    d.put(id).unwrap();
}

#[test]
fn a_read_write_layer_is_sent_through_a_temporary_snapshot_that_goes_afterwards() {
    let fs = require_btrfs!();
    let home = fs.path("home");
    let d = Driver::init(&home, DriverOptions::default()).unwrap();
    layer_with(&d, "rw", 2);
    let mut out = Vec::new();
    let sent = d
        .send("rw", &SendOptions::default(), &mut out, Control::NONE)
        .unwrap();
    assert_eq!(sent.bytes, out.len() as u64);
    assert_eq!(sent.protocol, kernel_protocol());
    assert_eq!(&out[..13], b"btrfs-stream\0");
    assert_eq!(
        u32::from_le_bytes(out[13..17].try_into().unwrap()),
        sent.protocol
    );
    assert!(temporaries(&home).is_empty(), "{:?}", temporaries(&home));
    // The oracle takes it, with the data.
    let stream = fs.path("rw.stream");
    fs::write(&stream, &out).unwrap();
    let into = fs.path("received");
    fs::create_dir(&into).unwrap();
    btrfs(&[
        "receive".as_ref(),
        "-f".as_ref(),
        stream.as_os_str(),
        into.as_os_str(),
    ]);
    let got: Vec<_> = fs::read_dir(&into)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(got.len(), 1);
    assert_eq!(fs::read(got[0].join("data")).unwrap().len(), 2 << 20);
}

/// A writer that sets `abort` at its first write, or fails (EPIPE) when `fail`.
struct Stopping<'a> {
    abort: &'a AtomicBool,
    fail: bool,
    written: usize,
}

impl Write for Stopping<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.fail {
            return Err(std::io::Error::from_raw_os_error(libc::EPIPE));
        }
        self.abort.store(true, Ordering::Relaxed);
        self.written += data.len();
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn an_abort_or_a_failed_write_stops_the_send_and_the_temporary_goes() {
    let fs = require_btrfs!();
    let home = fs.path("home");
    let d = Driver::init(&home, DriverOptions::default()).unwrap();
    layer_with(&d, "big", 64);
    let abort = AtomicBool::new(false);
    let mut out = Stopping {
        abort: &abort,
        fail: false,
        written: 0,
    };
    let e = d
        .send(
            "big",
            &SendOptions::default(),
            &mut out,
            Control::abort_on(&abort),
        )
        .unwrap_err();
    assert_eq!(e.code_str(), "ABORT_ERR", "{e}");
    assert!(out.written < 64 << 20, "stopped early: {}", out.written);
    assert!(temporaries(&home).is_empty(), "{:?}", temporaries(&home));
    let never = AtomicBool::new(false);
    let mut failing = Stopping {
        abort: &never,
        fail: true,
        written: 0,
    };
    let e = d
        .send("big", &SendOptions::default(), &mut failing, Control::NONE)
        .unwrap_err();
    assert_eq!(e.code_str(), "EPIPE", "{e}");
    assert!(temporaries(&home).is_empty(), "{:?}", temporaries(&home));
}

#[test]
fn an_unsupported_protocol_is_einval_before_any_snapshot() {
    let fs = require_btrfs!();
    let home = fs.path("home");
    let d = Driver::init(&home, DriverOptions::default()).unwrap();
    layer_with(&d, "rw", 1);
    let before = oracle_list(&fs.mnt).len();
    for (protocol, compressed) in [(Some(3), false), (Some(0), false), (Some(1), true)] {
        let opts = SendOptions {
            parent: None,
            protocol,
            compressed,
        };
        let e = d
            .send("rw", &opts, &mut Vec::new(), Control::NONE)
            .unwrap_err();
        assert_eq!(e.code_str(), "EINVAL", "{protocol:?} {compressed}: {e}");
    }
    assert_eq!(oracle_list(&fs.mnt).len(), before, "no subvolume was made");
    let e = d
        .send(
            "missing",
            &SendOptions::default(),
            &mut Vec::new(),
            Control::NONE,
        )
        .unwrap_err();
    assert_eq!(e.code_str(), "ENOENT");
}
