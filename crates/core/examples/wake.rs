use std::time::{Duration, Instant};
fn main() {
    let spin: u64 = std::env::var("SPIN").unwrap().parse().unwrap();
    let sleep: u64 = std::env::var("SLEEP")
        .unwrap_or("20".into())
        .parse()
        .unwrap();
    let mut w = Vec::new();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(sleep));
        let b = rayon::scope(|_| {
            let t = Instant::now();
            let (_, b) = rayon::join(
                || {
                    let e = Instant::now();
                    while e.elapsed() < Duration::from_micros(spin) {}
                },
                || {
                    (
                        t.elapsed().as_micros() as u64,
                        rayon::current_thread_index(),
                    )
                },
            );
            b
        });
        w.push(b);
    }
    w.sort();
    println!(
        "b started at median {:?} p10 {:?} p90 {:?}",
        w[50], w[10], w[90]
    );
}
