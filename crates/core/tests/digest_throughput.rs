//! The cost of hashing a layer stream: sha256 through `Hashing` over 1 GiB in memory, in MB/s.
//! A measurement, not a check: `cargo test --release -p btrfs-layers-core --test
//! digest_throughput -- --ignored --nocapture`.

use btrfs_layers_core::digest::{Hashing, HashingReader};
use std::io::{Read, Write};
use std::time::Instant;

#[test]
#[ignore]
fn sha256_throughput() {
    let chunk: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    for _ in 0..3 {
        let mut w = Hashing::new(std::io::sink());
        let t = Instant::now();
        for _ in 0..1024 {
            w.write_all(&chunk).unwrap();
        }
        let (_, sum) = w.finish();
        let s = t.elapsed().as_secs_f64();
        println!(
            "sha256: {:.0} MB/s ({:?})",
            1024.0 * 1.048_576 / s,
            sum.unwrap().0
        );
    }
    // Read 1 GiB from memory in 256 KiB reads (as the apply does), hashing on this thread
    // and on a thread of its own; and only reading, for the floor.
    let data: Vec<u8> = (0..(1usize << 30)).map(|i| (i * 7 % 251) as u8).collect();
    let mut out = vec![0u8; 256 << 10];
    for _ in 0..3 {
        let t = Instant::now();
        let mut r = std::io::BufReader::with_capacity(256 << 10, &data[..]);
        while r.read(&mut out).unwrap() > 0 {}
        let floor = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut r = std::io::BufReader::with_capacity(256 << 10, Hashing::new(&data[..]));
        while r.read(&mut out).unwrap() > 0 {}
        let serial = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut r = HashingReader::new(&data[..]).unwrap();
        while r.read(&mut out).unwrap() > 0 {}
        let read = t.elapsed().as_secs_f64();
        let (_, d, _) = r.finish().unwrap();
        let off = t.elapsed().as_secs_f64();
        println!(
            "reading 1 GiB: {:.0} ms plain, {:.0} ms hashing serially, {:.0} ms off-thread ({:.0} ms to the digest) {d:?}",
            floor * 1e3,
            serial * 1e3,
            read * 1e3,
            off * 1e3
        );
    }
}

mod common;

use btrfs_layers_core::digest::{Expect, SERIAL_FOR_MEASUREMENT};
use btrfs_layers_core::driver::{CreateOptions, Driver, DriverOptions};
use btrfs_layers_core::Control;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;

/// Bytes of file content in the generated layer (env BTRFS_LAYERS_HASH_BYTES).
const LAYER_BYTES: u64 = 640 << 20;
/// Timed runs of each way (env BTRFS_LAYERS_HASH_RUNS).
const RUNS: usize = 5;

/// xorshift64*: incompressible bytes, fast.
fn random_fill(state: &mut u64, buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let v = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// Text that compresses like source and config files do (about 4:1 with gzip).
fn text_fill(state: &mut u64, buf: &mut [u8]) {
    const WORDS: &[&str] = &[
        "layer",
        "the",
        "btrfs",
        "subvolume",
        "import",
        "return",
        "const",
        "function",
        "of",
        "if",
        "else",
        "struct",
        "config",
        "value",
        "=",
        "{",
        "}",
        "\n",
        "  ",
        "path",
        "usr",
        "lib",
        "share",
        "0x1f",
        "error",
        "size",
        "self",
        "digest",
        "tar",
        "sha256",
    ];
    let mut i = 0;
    while i < buf.len() {
        *state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let w = if (*state >> 60) == 0 {
            format!("{} ", *state >> 40)
        } else {
            format!("{} ", WORDS[(*state >> 33) as usize % WORDS.len()])
        };
        let n = w.len().min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&w.as_bytes()[..n]);
        i += n;
    }
}

/// A layer tar of files of log-spread sizes (1 KiB .. 8 MiB), half random, half text, about
/// `bytes` of content in all; and its gzip blob (level 6, as registries serve).
fn make_layer(dir: &Path, bytes: u64) -> (std::path::PathBuf, std::path::PathBuf) {
    let tar_path = dir.join("layer.tar");
    let mut b = tar::Builder::new(std::io::BufWriter::new(File::create(&tar_path).unwrap()));
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let (mut total, mut n) = (0u64, 0u64);
    let mut buf = Vec::new();
    while total < bytes {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1442695040888963407);
        // 2^10 .. 2^23 bytes, log-uniform.
        let size = 1usize << (10 + (state >> 59) % 14);
        let size = size + (state >> 20) as usize % size;
        buf.resize(size, 0);
        if n % 2 == 0 {
            random_fill(&mut state, &mut buf);
        } else {
            text_fill(&mut state, &mut buf);
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(size as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, format!("d{}/f{n}", n % 50), &buf[..])
            .unwrap();
        total += size as u64;
        n += 1;
    }
    b.into_inner().unwrap().flush().unwrap();
    let gz_path = dir.join("layer.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(
        File::create(&gz_path).unwrap(),
        flate2::Compression::default(),
    );
    std::io::copy(&mut File::open(&tar_path).unwrap(), &mut gz).unwrap();
    gz.finish().unwrap();
    (tar_path, gz_path)
}

/// CPU time (user and system) of this process or thread, in ms.
fn cpu(who: i32) -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes the struct it is given.
    unsafe { libc::getrusage(who, &mut u) };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(u.ru_utime) + ms(u.ru_stime)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// applyDiff (no hashing) against applyLayer hashing on the apply thread (the way before)
/// and on threads of its own (now), the same plain and gzip tar, interleaved: each round
/// runs every way once, in a rotated order. Wall time of the whole call, syncfs included.
/// `cargo test --release -p btrfs-layers-core --test digest_throughput -- --ignored
/// --nocapture apply_` (BTRFS_LAYERS_HASH_VERBOSE=1 for each run's CPU time).
///
/// Measured on the 2-core dev machine, shared with other builds (load 2.8-4.0), 672 MB tar /
/// 445 MB gzip, medians of 5: plain 1293 / 1747 / 1802 ms, gzip 2033 / 2848 / 3116 ms
/// (applyDiff / serial / off-thread). An earlier run at load ~3.3 had gzip 1984 / 2682 /
/// 2258 ms. The off-thread apply thread spends ~600 ms less CPU than the serial one; the
/// wall time gains nothing while no core is idle: the hasher competes with the other load.
#[test]
#[ignore]
fn apply_with_and_without_hashing() {
    let fs = require_btrfs!(common::Options {
        size: Some(8 * common::GIB),
        ..Default::default()
    });
    let bytes: u64 = env_or("BTRFS_LAYERS_HASH_BYTES", LAYER_BYTES);
    let runs: usize = env_or("BTRFS_LAYERS_HASH_RUNS", RUNS);
    // The blobs outside the filesystem under test, as a pull's downloads would be.
    let blobs = fs.dir.join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let t = Instant::now();
    let (tar_path, gz_path) = make_layer(&blobs, bytes);
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    println!(
        "layer: tar {} MB, gzip {} MB, made in {:.1} s",
        size(&tar_path) / 1_000_000,
        size(&gz_path) / 1_000_000,
        t.elapsed().as_secs_f64()
    );
    let home = fs.mnt.join("home");
    let driver = Driver::init(&home, DriverOptions::default()).unwrap();
    const WAYS: [&str; 3] = ["applyDiff", "applyLayer serial", "applyLayer off-thread"];
    let mut n = 0;
    for (format, blob) in [("plain", &tar_path), ("gzip", &gz_path)] {
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); WAYS.len()];
        // Round 0 warms the page cache and the filesystem: not recorded.
        for round in 0..=runs {
            for k in 0..WAYS.len() {
                let way = (k + round) % WAYS.len();
                n += 1;
                let id = format!("l{n}");
                if way == 0 {
                    driver.create(&id, None, &CreateOptions::default()).unwrap();
                }
                SERIAL_FOR_MEASUREMENT.store(way == 1, Ordering::Relaxed);
                let input = File::open(blob).unwrap();
                let (cpu0, own0) = (cpu(libc::RUSAGE_SELF), cpu(libc::RUSAGE_THREAD));
                let t = Instant::now();
                if way == 0 {
                    driver.apply_diff(&id, None, input, Control::NONE).unwrap();
                } else {
                    driver
                        .apply_new(&id, None, input, &Expect::default(), Control::NONE)
                        .unwrap();
                }
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                let (cpu_ms, own_ms) = (
                    cpu(libc::RUSAGE_SELF) - cpu0,
                    cpu(libc::RUSAGE_THREAD) - own0,
                );
                SERIAL_FOR_MEASUREMENT.store(false, Ordering::Relaxed);
                if round > 0 {
                    times[way].push(ms);
                }
                driver.remove(&id).unwrap();
                // The deleted tree's cleanup off the clock: commit (which wakes the cleaner),
                // then wait for it.
                let mnt = fs.mnt.to_str().unwrap();
                let t = Instant::now();
                common::btrfs(&["filesystem", "sync", mnt]);
                common::btrfs(&["subvolume", "sync", mnt]);
                if std::env::var_os("BTRFS_LAYERS_HASH_VERBOSE").is_some() {
                    println!(
                        "{format} {}: {ms:.0} ms, cpu {cpu_ms:.0} ms (apply thread {own_ms:.0}); cleanup {:.0} ms",
                        WAYS[way],
                        t.elapsed().as_secs_f64() * 1000.0
                    );
                }
            }
        }
        let meds: Vec<f64> = times.iter().map(|t| median(t.clone())).collect();
        for (way, t) in WAYS.iter().zip(&times) {
            let shown: Vec<String> = t.iter().map(|ms| format!("{ms:.0}")).collect();
            println!("{format} {way}: runs {} ms", shown.join(", "));
        }
        println!(
            "{format}: median applyDiff {:.0} ms | applyLayer serial {:.0} ms ({:.2}x applyDiff) | applyLayer off-thread {:.0} ms ({:.2}x applyDiff, {:.2}x serial)",
            meds[0],
            meds[1],
            meds[1] / meds[0],
            meds[2],
            meds[2] / meds[0],
            meds[2] / meds[1],
        );
    }
}
