/**
 * Progress on stderr: on a terminal, a bar redrawn in place (count, total, rate, ETA); on
 * anything else, a plain line every few seconds, so logs stay readable.
 */
import { formatBytes, formatCount, formatDuration } from './format'

/** The part of a stream the renderer uses (a fake one in tests). */
export interface ProgressStream {
  isTTY?: boolean
  columns?: number
  write(s: string): unknown
}

export interface ProgressOptions {
  /** What is progressing, e.g. `'apply app'`. */
  label: string
  /** `bytes` shows sizes in KiB/MiB; `inodes` (or any other noun) shows counts. */
  unit: 'bytes' | 'inodes'
  /** The expected final count, when known: draws a bar and a percentage. */
  total?: number
  /** Default `process.stderr`. */
  stream?: ProgressStream
  /** Milliseconds clock; default `performance.now`. */
  now?: () => number
  /** Least time between redraws (TTY, default 100 ms) or plain lines (otherwise, default 2000 ms). */
  interval?: number
}

const RATE_WINDOW_MS = 3000

export class Progress {
  readonly #o: Required<Omit<ProgressOptions, 'total' | 'interval'>> & { total?: number }
  readonly #tty: boolean
  readonly #interval: number
  readonly #start: number
  #samples: [number, number][] = []
  #last: number
  #count = 0
  #drawn = false
  #finished = false

  constructor(o: ProgressOptions) {
    this.#o = { stream: process.stderr, now: () => performance.now(), ...o }
    this.#tty = !!this.#o.stream.isTTY
    this.#interval = o.interval ?? (this.#tty ? 100 : 2000)
    this.#start = this.#o.now()
    this.#samples.push([this.#start, 0])
    // A terminal gets the bar at once; a log gets its first line after one interval.
    this.#last = this.#tty ? -Infinity : this.#start
  }

  /** The count so far; redraws when the interval has passed. */
  update(count: number): void {
    if (this.#finished) return
    const t = this.#o.now()
    this.#count = count
    this.#samples.push([t, count])
    while (this.#samples.length > 2 && t - this.#samples[0][0] > RATE_WINDOW_MS) this.#samples.shift()
    if (t - this.#last < this.#interval) return
    this.#last = t
    if (this.#tty) this.#draw(this.#barLine(t))
    else this.#o.stream.write(`${this.#plainLine(t)}\n`)
  }

  /** The final line: the count, the time taken and the average rate. */
  finish(count = this.#count, note = ''): void {
    if (this.#finished) return
    this.#finished = true
    const ms = this.#o.now() - this.#start
    const total = this.#o.total !== undefined && count !== this.#o.total ? ` of ${this.#fmt(this.#o.total)}` : ''
    const line = `${this.#o.label}: ${this.#fmt(count)}${total} in ${formatDuration(ms)}, ${this.#rate(count, ms)}${note ? `, ${note}` : ''}`
    if (this.#tty) this.#draw(line)
    else this.#o.stream.write(line)
    this.#o.stream.write('\n')
  }

  /** Take the bar off the terminal (before an error message). */
  clear(): void {
    if (this.#finished) return
    this.#finished = true
    if (this.#tty && this.#drawn) this.#o.stream.write('\r\x1b[2K')
  }

  #draw(line: string): void {
    const width = Math.max(20, (this.#o.stream.columns || 80) - 1)
    this.#o.stream.write(`\r\x1b[2K${line.length > width ? line.slice(0, width) : line}`)
    this.#drawn = true
  }

  #fmt(n: number): string {
    return this.#o.unit === 'bytes' ? formatBytes(n) : `${formatCount(n)} ${this.#o.unit}`
  }

  #rate(count: number, ms: number): string {
    const per = ms > 0 ? (count * 1000) / ms : 0
    return this.#o.unit === 'bytes' ? `${formatBytes(per)}/s` : `${formatCount(per)} ${this.#o.unit}/s`
  }

  /** Rate over the last few seconds, so it follows changes of speed. */
  #recent(): { perSec: number; text: string } {
    const [t0, n0] = this.#samples[0]
    const [t1, n1] = this.#samples[this.#samples.length - 1]
    const perSec = t1 > t0 ? ((n1 - n0) * 1000) / (t1 - t0) : 0
    return { perSec, text: this.#rate(n1 - n0, t1 - t0) }
  }

  #barLine(t: number): string {
    const { perSec, text } = this.#recent()
    const total = this.#o.total
    const elapsed = formatDuration(t - this.#start)
    if (!total) {
      const spin = '|/-\\'[Math.floor((t - this.#start) / 100) % 4]
      return `${spin} ${this.#o.label}  ${this.#fmt(this.#count)}  ${text}  ${elapsed}`
    }
    const frac = Math.min(1, this.#count / total)
    const eta = perSec > 0 && this.#count < total ? `  ETA ${formatDuration(((total - this.#count) / perSec) * 1000)}` : ''
    const tail = ` ${(frac * 100).toFixed(0).padStart(3)}%  ${this.#fmt(this.#count)} / ${this.#fmt(total)}  ${text}${eta}`
    // A fixed allowance for the numbers, so the bar does not change length as they do.
    const room = Math.max(10, Math.min(40, (this.#o.stream.columns || 80) - 1 - this.#o.label.length - 62))
    const full = Math.round(frac * room)
    return `${this.#o.label} [${'#'.repeat(full)}${'-'.repeat(room - full)}]${tail}`
  }

  #plainLine(t: number): string {
    const total = this.#o.total
    const of = total ? ` of ${this.#fmt(total)} (${Math.min(100, (this.#count / total) * 100).toFixed(0)}%)` : ''
    return `${this.#o.label}: ${this.#fmt(this.#count)}${of}, ${this.#recent().text}, ${formatDuration(t - this.#start)}`
  }
}
