//! Timing of `Driver::receive` against `btrfs receive` of the same streams, in interleaved
//! rounds on one filesystem (not a timed test: run it by hand and read the medians).
//!
//!   [RECEIVE_BENCH_DIRS=1000] cargo test --release -p btrfs-layers-core --test receive_bench -- --ignored --nocapture
//!
//! Measured with RECEIVE_BENCH_DIRS=1000 (100,000 files + 64 MiB, a 94 MB stream; 2 cores
//! shared with other builds, load average 4.5; medians of 5): ours 4.62 s, btrfs receive
//! 5.51 s (0.84x), btrfs receive + sync -f 5.18 s (0.89x); incremental of 10 changed files
//! 11.4 ms vs 12.2 ms (0.94x). Before the directory cache and fchmodat2 (load 5.4): 9.22 s vs
//! 8.79 s (1.05x).

mod common;
mod receive_support;

use btrfs_layers_core::driver::replicate::ReceiveOptions;
use btrfs_layers_core::driver::{Driver, DriverOptions};
use btrfs_layers_core::Control;
use common::*;
use receive_support::*;
use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn delete(p: &Path) {
    btrfs(&[OsStr::new("subvolume"), OsStr::new("delete"), p.as_os_str()]);
}

#[test]
#[ignore = "a benchmark: run by hand with --ignored --nocapture"]
fn receive_against_btrfs_receive() {
    let Some(fs) = btrfs_fs_with(Options {
        size: Some(8 * GIB),
        ..Options::default()
    }) else {
        return;
    };
    let src = fs.path("src");
    mk_subvol(&src);
    // 100 small files in each of RECEIVE_BENCH_DIRS directories (200), and 64 MiB in 8 large ones.
    let dirs: usize = std::env::var("RECEIVE_BENCH_DIRS").map_or(200, |v| v.parse().unwrap());
    sh(
        &src,
        &format!("for d in $(seq 1 {dirs}); do mkdir d$d; for f in $(seq 1 100); do echo \"file $d $f\" > d$d/f$f; done; done
         for b in $(seq 1 8); do head -c 8M /dev/urandom > big$b; done; sync"),
    );
    snapshot_ro(&src, &fs.path("snap1"));
    sh(
        &src,
        "for i in $(seq 1 10); do echo changed >> d$i/f$i; done; sync",
    );
    snapshot_ro(&src, &fs.path("snap2"));
    let (full, incr) = (fs.dir.join("full"), fs.dir.join("incr"));
    send(&fs.path("snap1"), &[], &full);
    let parent = fs.path("snap1");
    send(&fs.path("snap2"), &["-p", parent.to_str().unwrap()], &incr);
    let home = fs.mnt.join("home");
    let driver = Driver::init(&home, DriverOptions::default()).unwrap();
    let oracle = fs.path("oracle");
    std::fs::create_dir_all(&oracle).unwrap();
    // The parents the incremental streams apply to, on both sides.
    oracle_receive(&full, &oracle);
    let opts = ReceiveOptions::default();
    let open = |p: &Path| std::fs::File::open(p).unwrap();
    driver
        .receive("base", &mut open(&full), &opts, Control::NONE)
        .unwrap();
    let mut times: [Vec<Duration>; 6] = Default::default();
    for round in 0..ROUNDS {
        let ours = |id: &str, stream: &Path| {
            let t = Instant::now();
            driver
                .receive(id, &mut open(stream), &opts, Control::NONE)
                .unwrap();
            t.elapsed()
        };
        let theirs = |stream: &Path, sync: bool| {
            let dir = fs.path("theirs");
            let t = Instant::now();
            oracle_receive(stream, &dir);
            if sync {
                run("sync", &[OsStr::new("-f"), dir.as_os_str()]);
            }
            t.elapsed()
        };
        let mut one = |slot: usize, f: &dyn Fn() -> Duration| times[slot].push(f());
        // Alternate which goes first.
        let order: [usize; 6] = if round % 2 == 0 {
            [0, 1, 2, 3, 4, 5]
        } else {
            [1, 2, 0, 4, 5, 3]
        };
        for slot in order {
            match slot {
                0 => one(0, &|| ours("full", &full)),
                1 => one(1, &|| theirs(&full, false)),
                2 => one(2, &|| theirs(&full, true)),
                3 => one(3, &|| ours("incr", &incr)),
                4 => one(4, &|| theirs(&incr, false)),
                _ => one(5, &|| theirs(&incr, true)),
            }
            match slot {
                0 => driver.remove("full").unwrap(),
                3 => driver.remove("incr").unwrap(),
                1 | 2 => delete(&fs.path("theirs/snap1")),
                _ => delete(&fs.path("theirs/snap2")),
            }
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap();
    let [a, b, c, d, e, f] = times.map(median);
    let ratio = |x: Duration, y: Duration| x.as_secs_f64() / y.as_secs_f64();
    println!("medians of {ROUNDS} interleaved rounds; load average {load}");
    println!(
        "full ({} files + 64 MiB, {} bytes):",
        dirs * 100,
        std::fs::metadata(&full).unwrap().len()
    );
    println!("  Driver::receive (syncfs included)  {a:?}");
    println!(
        "  btrfs receive                      {b:?}  ours/theirs {:.2}",
        ratio(a, b)
    );
    println!(
        "  btrfs receive + sync -f            {c:?}  ours/theirs {:.2}",
        ratio(a, c)
    );
    println!(
        "incremental (10 files changed, {} bytes):",
        std::fs::metadata(&incr).unwrap().len()
    );
    println!("  Driver::receive (syncfs included)  {d:?}");
    println!(
        "  btrfs receive                      {e:?}  ours/theirs {:.2}",
        ratio(d, e)
    );
    println!(
        "  btrfs receive + sync -f            {f:?}  ours/theirs {:.2}",
        ratio(d, f)
    );
}
