/**
 * The progress renderer of the command line, with a fake stream and a fake clock: plain lines
 * every few seconds when stderr is not a terminal, a bar redrawn in place when it is, and the
 * final line with the count, time and rate. Also the formatting of sizes and durations.
 */
import test from 'ava'
import { formatBytes, formatDuration } from '../ts/cli/format'
import { Progress } from '../ts/cli/progress'

function fake(isTTY: boolean, columns = 100) {
  let now = 0
  const writes: string[] = []
  return {
    stream: { isTTY, columns, write: (s: string) => writes.push(s) },
    now: () => now,
    advance: (ms: number) => (now += ms),
    writes,
    text: () => writes.join(''),
  }
}

test('not a TTY: a plain line every 2 s with count, total, percentage and rate; then the final line', (t) => {
  const f = fake(false)
  const p = new Progress({ label: 'apply app', unit: 'bytes', total: 100 * 2 ** 20, stream: f.stream, now: f.now })
  for (let i = 1; i <= 50; i++) {
    f.advance(100)
    p.update(i * 2 * 2 ** 20) // 20 MiB/s
  }
  const lines = f.text().split('\n').filter(Boolean)
  t.is(lines.length, 2, `one line per 2 s of 5 s: ${JSON.stringify(lines)}`)
  t.is(lines[0], 'apply app: 40.0 MiB of 100.0 MiB (40%), 20.0 MiB/s, 2.00 s')
  t.false(f.text().includes('\r'), 'no carriage returns in a log')
  p.finish(100 * 2 ** 20, '95 MiB of file content')
  t.is(f.text().split('\n').filter(Boolean).pop(), 'apply app: 100.0 MiB in 5.00 s, 20.0 MiB/s, 95 MiB of file content')
  p.update(1)
  p.finish()
  t.is(f.text().split('\n').filter(Boolean).length, 3, 'nothing after finish')
})

test('TTY: a bar redrawn in place, at most every 100 ms, within the terminal width; ETA', (t) => {
  const f = fake(true, 100)
  const p = new Progress({ label: 'apply app', unit: 'bytes', total: 1000, stream: f.stream, now: f.now })
  p.update(0)
  for (let i = 1; i <= 10; i++) {
    f.advance(50)
    p.update(i * 50)
  }
  const draws = f.writes.filter((w) => w.startsWith('\r\x1b[2K'))
  t.is(draws.length, 6, 'the first draw at once, then every 100 ms of 500 ms')
  const last = draws[draws.length - 1].slice(5)
  t.is(last.replace(/#+-+/, 'BAR'), 'apply app [BAR]  50%  500 B / 1000 B  1000 B/s  ETA 500 ms')
  for (const d of draws) t.true(d.length - 5 <= 99, 'fits the terminal')
  t.false(f.text().includes('\n'), 'no newline while running')
  p.finish(1000)
  t.true(f.text().endsWith('apply app: 1000 B in 500 ms, 1.95 KiB/s\n'))
})

test('TTY without a total: a spinner with count and rate; clear() takes the bar away', (t) => {
  const f = fake(true, 80)
  const p = new Progress({ label: 'remap a -> b', unit: 'inodes', stream: f.stream, now: f.now })
  f.advance(1000)
  p.update(5000)
  t.true(f.writes[0].startsWith('\r\x1b[2K'))
  t.regex(f.writes[0].slice(5), /^[|/\\-] remap a -> b {2}5,000 inodes {2}5,000 inodes\/s {2}1.00 s$/)
  p.clear()
  t.is(f.writes[f.writes.length - 1], '\r\x1b[2K')
  p.finish()
  t.is(f.writes.length, 2, 'finish after clear prints nothing')
})

test('formatting of sizes and durations', (t) => {
  t.is(formatBytes(0), '0 B')
  t.is(formatBytes(1023), '1023 B')
  t.is(formatBytes(1536), '1.50 KiB')
  t.is(formatBytes(4 * 2 ** 30), '4.00 GiB')
  t.is(formatBytes(123.4 * 2 ** 20), '123.4 MiB')
  t.is(formatDuration(1.234), '1.23 ms')
  t.is(formatDuration(850), '850 ms')
  t.is(formatDuration(12_345), '12.3 s')
  t.is(formatDuration(125_000), '2m05s')
})
