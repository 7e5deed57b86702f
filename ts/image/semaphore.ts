/** A counting semaphore whose waiters are served first come, first served, and can be aborted. */
import { abortError } from '../validate'

export class Semaphore {
  #free: number
  readonly #waiters: { resolve: () => void; reject: (e: unknown) => void }[] = []

  constructor(count: number) {
    this.#free = count
  }

  /** Take a slot; rejects with an `AbortError` when `signal` fires first. */
  acquire(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(abortError(signal))
    if (this.#free > 0 && this.#waiters.length === 0) {
      this.#free--
      return Promise.resolve()
    }
    return new Promise((resolve, reject) => {
      const w = {
        resolve: () => {
          signal?.removeEventListener('abort', onAbort)
          resolve()
        },
        reject,
      }
      const onAbort = () => {
        const i = this.#waiters.indexOf(w)
        if (i >= 0) this.#waiters.splice(i, 1)
        reject(abortError(signal))
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#waiters.push(w)
    })
  }

  release(): void {
    const next = this.#waiters.shift()
    if (next) next.resolve()
    else this.#free++
  }
}
