/**
 * A native producer's chunks as a Node Readable (`diff`, `send`): started, its first step
 * awaited (the native side opens what it reads and says so with an empty chunk, or rejects),
 * then pulled a chunk per `read()`, with the signal and `destroy` stopping the producer.
 */
import { Readable } from 'node:stream'
import { AbortError } from './errors'
import { onAbort, reportProgress, taskError, throwIfAborted } from './task'

/** A native pull stream (`DiffStream`, `SendStream` of `native/index.d.ts`). */
export interface NativePull {
  next(): Promise<Buffer | null>
  abort(): void
  readonly progress: number
}

export interface PullOptions {
  /** The API method the user called, for error messages. */
  api: string
  signal?: AbortSignal
  /** Hears the native counter every 100 ms and once when the stream closes. */
  onProgress?: (n: number) => void
  /** Once the native side produced its last chunk, before the stream's `'end'`. */
  onEnd?: () => void
  /** When the stream is destroyed before its end (by an error, an abort or the consumer). */
  onDestroy?: (err: Error) => void
}

/** Start the producer and resolve with its stream once its first step succeeded. */
export async function pullStream<S extends NativePull>(start: () => S, o: PullOptions): Promise<Readable> {
  const { api, signal } = o
  throwIfAborted(signal)
  let stream: S
  try {
    stream = start()
  } catch (err) {
    throw taskError(err, api)
  }
  const offEarly = onAbort(signal, () => stream.abort())
  try {
    await stream.next()
  } catch (err) {
    stream.abort()
    throw taskError(err, api, signal)
  } finally {
    offEarly()
  }
  let reading = false
  const out = new Readable({
    // Up to 4 chunks ahead of the consumer: the hand-over from the producer overlaps its writes.
    highWaterMark: 16 << 20,
    read() {
      if (reading) return
      reading = true
      stream.next().then(
        (chunk) => {
          reading = false
          if (chunk === null) o.onEnd?.()
          out.push(chunk)
        },
        (err) => {
          reading = false
          out.destroy(taskError(err, api, signal))
        },
      )
    },
    destroy(err, cb) {
      o.onDestroy?.(err ?? new AbortError(undefined, `ABORT_ERR: the stream was destroyed before its end, ${api}`))
      stream.abort()
      // Drain so the producer thread can notice the abort and finish.
      const drain = (): void => {
        stream.next().then((c) => (c ? drain() : undefined), () => undefined)
      }
      drain()
      cb(err)
    },
  })
  if (signal) {
    const off = onAbort(signal, () => out.destroy(taskError(undefined, api, signal)))
    out.once('close', off)
  }
  if (o.onProgress) out.once('close', reportProgress(stream, o.onProgress))
  return out
}
