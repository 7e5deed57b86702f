use btrfs_layers_core::changes::{changed_inodes, snapshot_origin};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Instant;
fn med(mut v: Vec<u64>) -> u64 {
    v.sort();
    v[v.len() / 2]
}
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let new = PathBuf::from(&a[1]);
    let old = PathBuf::from(&a[2]);
    let n: usize = a[3].parse().unwrap();
    let (mut tn, mut to) = (Vec::new(), Vec::new());
    let (mut cn, mut co) = (0, 0);
    for _ in 0..n {
        let nf = std::fs::File::open(&new).unwrap();
        let of = std::fs::File::open(&old).unwrap();
        let s = snapshot_origin(nf.as_fd(), of.as_fd(), &new)
            .unwrap()
            .unwrap();
        rayon::scope(|_| {
            let t = Instant::now();
            cn = changed_inodes(nf.as_fd(), s, &new).unwrap().unwrap().len();
            tn.push(t.elapsed().as_nanos() as u64);
            let t = Instant::now();
            co = changed_inodes(of.as_fd(), s, &old).unwrap().unwrap().len();
            to.push(t.elapsed().as_nanos() as u64);
        });
    }
    println!(
        "new {} us ({cn}) old {} us ({co})",
        med(tn) / 1000,
        med(to) / 1000
    );
}
