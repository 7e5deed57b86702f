/**
 * Progress of a pull on stderr: one line per layer as it is reused or done (bytes, time,
 * rate), a running total in between (a bar on a terminal, a line every few seconds in a log),
 * and a total line at the end.
 */
import type { PullProgress } from '../image/pull'
import { formatBytes, formatDuration } from './format'
import { Progress, type ProgressStream } from './progress'

export class PullProgressLines {
  readonly #stream: ProgressStream
  readonly #total: Progress
  readonly #bytes = new Map<number, number>()
  readonly #started = new Map<number, number>()
  readonly #t0 = performance.now()
  #reused = 0
  #done = 0

  constructor(label: string, stream: ProgressStream) {
    this.#stream = stream
    this.#total = new Progress({ label, unit: 'bytes', stream })
  }

  /** Bytes fetched so far, all layers. */
  get bytes(): number {
    let n = 0
    for (const b of this.#bytes.values()) n += b
    return n
  }

  #line(s: string): void {
    // Off the bar's line on a terminal, then the layer's own line.
    if (this.#stream.isTTY) this.#stream.write('\r\x1b[2K')
    this.#stream.write(`${s}\n`)
  }

  event(e: PullProgress): void {
    const name = `layer ${e.layer + 1}/${e.layers} ${e.id.slice(0, 12)}`
    if (e.state === 'reused') {
      this.#reused++
      this.#line(`${name}: reused`)
      return
    }
    if (!this.#started.has(e.layer)) this.#started.set(e.layer, performance.now())
    this.#bytes.set(e.layer, e.bytes)
    if (e.state === 'done') {
      this.#done++
      const ms = performance.now() - (this.#started.get(e.layer) ?? this.#t0)
      this.#line(`${name}: ${formatBytes(e.bytes)} in ${formatDuration(ms)}, ${formatBytes((e.bytes * 1000) / Math.max(ms, 1))}/s, done`)
    }
    this.#total.update(this.bytes)
  }

  /** The total line. */
  finish(): void {
    this.#total.finish(this.bytes, `${this.#done} layers fetched, ${this.#reused} reused`)
  }

  /** Off the terminal before an error message. */
  clear(): void {
    this.#total.clear()
  }
}
