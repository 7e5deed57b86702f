//! Timing of the three ways to compute changes on a layer of 100,000 files with 10 changed
//! (not a timed test: run it by hand and read the figures).
//!
//!   cargo test --release -p btrfs-layers-core --test changes_bench -- --ignored --nocapture

mod changes_common;

use btrfs_layers_core::changes::{
    changes_send, changes_walk, changes_walk_single_threaded, Change, Options,
};
use btrfs_layers_core::{delete, subvolume};
use changes_common::*;
use rayon::prelude::*;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

const TOP: usize = 100;
const SUB: usize = 10;
const FILES: usize = 100;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(runs: usize, mut f: impl FnMut() -> Vec<Change>) -> (Duration, Vec<Change>) {
    let mut last = f(); // warm the caches
    let times = (0..runs)
        .map(|_| {
            let t = Instant::now();
            last = f();
            t.elapsed()
        })
        .collect();
    (median(times), last)
}

#[test]
#[ignore = "a benchmark: run by hand with --ignored --nocapture"]
fn changes_on_100k_files_with_10_changed() {
    let Some(fs) = Btrfs::new("bench") else {
        return;
    };
    let t = Instant::now();
    let layers = Layers::new(&fs, "b", |base| {
        (0..TOP).into_par_iter().for_each(|i| {
            for j in 0..SUB {
                let d = base.join(format!("d{i:03}/s{j}"));
                mkdirs(&d);
                for k in 0..FILES {
                    write(&d.join(format!("f{k:03}")), b"content");
                }
            }
        });
    });
    let l = &layers.layer;
    chmod(&l.join("d000/s0/f000"), 0o600);
    chmod(&l.join("d010/s1/f001"), 0o600);
    lchown(&l.join("d020/s2/f002"), 1, 1);
    write(&l.join("d030/s3/f003"), b"CONTENT");
    write(&l.join("d040/s4/f004"), b"longer content");
    write(&l.join("d050/s5/new"), b"new");
    std::fs::remove_file(l.join("d060/s6/f006")).unwrap();
    std::fs::rename(l.join("d070/s7/f007"), l.join("d070/s7/renamed")).unwrap();
    set_xattr(
        &l.join("d080/s8/f008"),
        "security.capability",
        &capability_value(1),
    )
    .unwrap();
    set_mtime(&l.join("d099/s9/f099"), 1, 1).unwrap();
    layers.freeze();
    let files = TOP * SUB * FILES;
    eprintln!("built {files} files in {:.1?}", t.elapsed());

    let (old, new) = (open(&layers.old), open(&layers.new));
    let runs = 5;
    let opts = Options::default();
    let (walk, a) = time(runs, || {
        changes_walk(new.as_fd(), Some(old.as_fd()), &layers.new, &opts).unwrap()
    });
    let (single, b) = time(runs, || {
        changes_walk_single_threaded(new.as_fd(), Some(old.as_fd()), &layers.new, &opts).unwrap()
    });
    let (send, c) = time(runs, || {
        changes_send(new.as_fd(), old.as_fd(), &layers.new, &opts).unwrap()
    });
    assert_eq!(a, b);
    assert_eq!(a, c);
    // What the driver adds for writable layers: two read-only snapshots taken and deleted.
    let (with_snapshots, d) = time(runs, || {
        let (s_old, s_new) = (fs.path("tmp-old"), fs.path("tmp-new"));
        subvolume::snapshot(&layers.base, &s_old, true).unwrap();
        subvolume::snapshot(&layers.layer, &s_new, true).unwrap();
        let got = changes_send(open(&s_new).as_fd(), open(&s_old).as_fd(), &s_new, &opts).unwrap();
        delete::delete(&s_new, false).unwrap();
        delete::delete(&s_old, false).unwrap();
        got
    });
    assert_eq!(a, d);
    let ratio = |x: Duration, y: Duration| x.as_secs_f64() / y.as_secs_f64();
    eprintln!("{} changes found:\n{}", a.len(), show(&a));
    eprintln!(
        "medians of {runs} warm runs on {files} files, {} threads:",
        rayon::current_num_threads()
    );
    eprintln!("  walk (parallel)        {walk:>10.2?}");
    eprintln!(
        "  walk (single thread)   {single:>10.2?}   parallel speedup {:.2}x",
        ratio(single, walk)
    );
    eprintln!(
        "  send fast path         {send:>10.2?}   {:.0}x faster than the walk",
        ratio(walk, send)
    );
    eprintln!(
        "  send + 2 ro snapshots  {with_snapshots:>10.2?}   {:.0}x faster than the walk",
        ratio(walk, with_snapshots)
    );
    drop((old, new));
    layers.delete();
}
