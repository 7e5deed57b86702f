// Throwaway profiling harness (not committed).
use btrfs_layers_core::changes::{changes_since, snapshot_origin};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Instant;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let new = PathBuf::from(&a[1]);
    let old = PathBuf::from(&a[2]);
    let n: usize = a[3].parse().unwrap();
    let settle = std::env::var("SETTLE").is_ok();
    let mut v = Vec::new();
    for _ in 0..n {
        let nf = std::fs::File::open(&new).unwrap();
        let of = std::fs::File::open(&old).unwrap();
        if let Ok(ms) = std::env::var("SLEEP") {
            std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap()));
        }
        if settle {
            unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&nf)) };
        }
        let t = Instant::now();
        let s = snapshot_origin(nf.as_fd(), of.as_fd(), &new)
            .unwrap()
            .unwrap();
        let l = changes_since(nf.as_fd(), of.as_fd(), s, &new).unwrap();
        v.push(t.elapsed().as_nanos() as u64);
        if std::env::var_os("NOREAD").is_none() {
            assert!(l.len() == 15);
        }
    }
    v.sort();
    println!("median {} us min {} us", v[n / 2] / 1000, v[0] / 1000);
}
