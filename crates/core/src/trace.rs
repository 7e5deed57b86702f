//! Internal stage timing for diagnosis, off unless `BTRFS_LAYERS_TRACE` is set (read once):
//! one line per event on stderr, `btrfs-layers trace <CLOCK_MONOTONIC ns> <event> <detail>`,
//! the same clock and format as the TypeScript side's (`process.hrtime.bigint()`), so a
//! pull's stages from both sides sort into one timeline. Not an API: the format may change.

use std::sync::OnceLock;

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("BTRFS_LAYERS_TRACE").is_some_and(|v| !v.is_empty()))
}

fn monotonic_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// Write one event line when tracing is on.
pub fn event(what: &str, detail: &str) {
    if enabled() {
        eprintln!("btrfs-layers trace {} {what} {detail}", monotonic_ns());
    }
}
