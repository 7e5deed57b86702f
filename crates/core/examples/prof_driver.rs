use btrfs_layers_core::driver::{diff::Against, Driver, DriverOptions};
use std::time::{Duration, Instant};
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let d = Driver::init(std::path::Path::new(&a[1]), DriverOptions::default()).unwrap();
    let n: usize = a[3].parse().unwrap();
    let sleep: u64 = std::env::var("SLEEP")
        .unwrap_or("0".into())
        .parse()
        .unwrap();
    let mut v = Vec::new();
    for _ in 0..n {
        std::thread::sleep(Duration::from_millis(sleep));
        let t = Instant::now();
        let l = d.changes(&a[2], Against::RecordedParent).unwrap();
        v.push(t.elapsed().as_micros() as u64);
        assert_eq!(l.len(), 15);
    }
    v.sort();
    println!("median {} us min {}", v[n / 2], v[0]);
}
