use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
fn main() {
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let start = Arc::new(AtomicU64::new(0));
    let base = Instant::now();
    let (p2, s2) = (pair.clone(), start.clone());
    std::thread::spawn(move || loop {
        let (m, c) = &*p2;
        let mut g = m.lock().unwrap();
        while !*g {
            g = c.wait(g).unwrap();
        }
        *g = false;
        s2.store(base.elapsed().as_nanos() as u64, Ordering::SeqCst);
    });
    let spin: u64 = std::env::var("SPIN").unwrap().parse().unwrap();
    let mut v = Vec::new();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(20));
        start.store(0, Ordering::SeqCst);
        let t = base.elapsed().as_nanos() as u64;
        {
            let (m, c) = &*pair;
            *m.lock().unwrap() = true;
            c.notify_one();
        }
        let e = Instant::now();
        while e.elapsed() < Duration::from_micros(spin) {}
        let s = start.load(Ordering::SeqCst);
        v.push(if s == 0 { u64::MAX } else { (s - t) / 1000 });
    }
    v.sort();
    println!(
        "wake latency median {} us p10 {} p90 {}",
        v[50], v[10], v[90]
    );
}
