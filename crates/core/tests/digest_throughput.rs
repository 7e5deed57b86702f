//! The cost of hashing a layer stream: sha256 through `Hashing` over 1 GiB in memory, in MB/s.
//! A measurement, not a check: `cargo test --release -p btrfs-layers-core --test
//! digest_throughput -- --ignored --nocapture`.

use btrfs_layers_core::digest::Hashing;
use std::io::Write;
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
}
