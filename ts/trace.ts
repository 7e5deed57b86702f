/**
 * Internal stage timing for diagnosis, off unless `BTRFS_LAYERS_TRACE` is set (read once): one
 * line per event on stderr, `btrfs-layers trace <CLOCK_MONOTONIC ns> <event> <detail>`, the
 * native side's format and clock (crates/core/src/trace.rs), so both sort into one timeline.
 * Not an API: the format may change.
 */
const ON = Boolean(process.env.BTRFS_LAYERS_TRACE)

/** Write one event line when tracing is on. */
export function trace(event: string, detail = ''): void {
  if (ON) process.stderr.write(`btrfs-layers trace ${process.hrtime.bigint()} ${event} ${detail}\n`)
}
