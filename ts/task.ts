/**
 * How every long call is driven: the signal aborts the native work and the call rejects with an
 * `AbortError` whose `cause` is the signal's reason; `onProgress` (only when given) hears the
 * native counter every 100 ms and once at the end.
 */
import { AbortError, fromNative, type CallPaths } from './errors'

/** A native call under way (the handles of `native/index.d.ts`: ChangesTask, ApplySink, RemapTask, ...). */
export interface NativeTask<T> {
  abort(): void
  finish(): Promise<T>
  readonly progress: number
}

export interface TaskOptions<H> {
  /** The API method the user called, for error messages. */
  api: string
  paths?: CallPaths
  signal?: AbortSignal
  onProgress?: (n: number) => void
  /** Also on abort (e.g. stop reading an input that may stall). */
  onAbort?: () => void
  /**
   * The call changes nothing (`changes`, `diffSize`): when the signal fired before its result
   * is taken, it rejects with an `AbortError` and the result is dropped, as `fs.promises.readFile`
   * does. A call that changes something reports what it did once it did it.
   */
  readsOnly?: boolean
  /** Work the call does while the native side runs (applyDiff pushes its input); `aborted` says when to stop. */
  /** `stopped` resolves on an abort: a feed waiting on its input must not wait past it. */
  feed?: (task: H, aborted: () => boolean, stopped: Promise<void>) => Promise<void>
}

/** Reject at once when the signal has fired already. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new AbortError(signal.reason)
}

/** Run `fn` when `signal` fires (at once when it has); returns the unsubscribe. */
export function onAbort(signal: AbortSignal | undefined, fn: () => void): () => void {
  if (!signal) return () => undefined
  if (signal.aborted) {
    fn()
    return () => undefined
  }
  signal.addEventListener('abort', fn, { once: true })
  return () => signal.removeEventListener('abort', fn)
}

/** The error a call that failed while `signal` fired rejects with: an AbortError, else `err` translated. */
export function taskError(err: unknown, api: string, signal?: AbortSignal, paths?: CallPaths): Error {
  if (signal?.aborted) return new AbortError(signal.reason)
  return fromNative(err, api, paths)
}

/** Start a native task, drive its abort and progress, and resolve with its result. */
export async function runTask<T, H extends NativeTask<T>>(start: () => H, o: TaskOptions<H>): Promise<T> {
  throwIfAborted(o.signal)
  let task: H
  try {
    task = start()
  } catch (err) {
    throw fromNative(err, o.api, o.paths)
  }
  const stopProgress = o.onProgress ? reportProgress(task, o.onProgress) : undefined
  // Settles when the signal fires: an input that stalls for good must not keep an aborted call
  // waiting for its next chunk (the feed sees the abort only then).
  let abortFed: () => void = () => undefined
  const fedAbort = new Promise<void>((resolve) => (abortFed = resolve))
  const off = onAbort(o.signal, () => {
    task.abort()
    o.onAbort?.()
    abortFed()
  })
  try {
    if (o.feed) {
      try {
        const fed = o.feed(task, () => o.signal?.aborted === true, fedAbort)
        // Left behind after an abort, its later failure is nobody's to hear.
        fed.catch(() => undefined)
        await Promise.race([fed, fedAbort])
      } catch (err) {
        // The input failed: stop the native side and wait for it to let go of the layer.
        task.abort()
        await task.finish().catch(() => undefined)
        throw err
      }
    }
    const result = await task.finish()
    if (o.readsOnly) throwIfAborted(o.signal)
    return result
  } catch (err) {
    throw taskError(err, o.api, o.signal, o.paths)
  } finally {
    off()
    stopProgress?.()
  }
}

/**
 * Tell `onProgress` the native counter of `task` every 100 ms when it moved; the returned
 * function stops that and reports the last count.
 */
export function reportProgress(task: { readonly progress: number }, onProgress: (n: number) => void): () => void {
  let last = -1
  const report = (): void => {
    const n = task.progress
    if (n !== last) {
      last = n
      onProgress(n)
    }
  }
  const timer = setInterval(report, 100)
  return () => {
    clearInterval(timer)
    report()
  }
}
