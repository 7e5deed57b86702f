/**
 * Argument checks shared by the whole facade: each throws a `BtrfsError` with code `EINVAL`
 * (before anything reaches the native side, so bad input changes nothing).
 */
import { BtrfsError } from './errors'

/** One id range of a user namespace: container ids `[containerId, containerId + size)` are host ids `[hostId, hostId + size)`. */
export interface IdMap {
  containerId: number
  hostId: number
  size: number
}

function invalid(message: string): BtrfsError {
  return new BtrfsError('EINVAL', `EINVAL: ${message}`)
}

export function checkString(name: string, value: unknown): string {
  if (typeof value !== 'string') throw invalid(`${name} must be a string, got ${value === null ? 'null' : typeof value}`)
  return value
}

/** `undefined` as `fallback`, else a boolean. */
export function checkBool(name: string, value: unknown, fallback = false): boolean {
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') throw invalid(`${name} must be a boolean`)
  return value
}

/** An options object (or `undefined`: none) whose keys are all among `keys`. */
export function checkKeys(what: string, value: unknown, keys: readonly string[]): Record<string, unknown> {
  if (value === undefined) return {}
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw invalid(`${what} must be an object`)
  for (const k of Object.keys(value)) {
    if (!keys.includes(k)) throw invalid(`unknown ${what} key '${k}'`)
  }
  return value as Record<string, unknown>
}

export function checkSignal(value: unknown): AbortSignal | undefined {
  if (value === undefined) return undefined
  if (!(value instanceof AbortSignal)) throw invalid('signal must be an AbortSignal')
  return value
}

export function checkCallback<F extends (...args: never[]) => unknown>(name: string, value: unknown): F | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'function') throw invalid(`${name} must be a function`)
  return value as F
}

/** Id ranges: an array of `{ containerId, hostId, size }` with integers from 0 to 2^32-1 (overlaps are the native side's to refuse). */
export function checkIdMaps(name: string, value: unknown): IdMap[] | undefined {
  if (value === undefined) return undefined
  if (!Array.isArray(value)) throw invalid(`${name} must be an array of { containerId, hostId, size }`)
  return value.map((m, i) => {
    const o = checkKeys(`${name}[${i}]`, m ?? null, ['containerId', 'hostId', 'size'])
    for (const k of ['containerId', 'hostId', 'size']) {
      const v = o[k]
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
        throw invalid(`${name}[${i}].${k} must be an integer from 0 to 4294967295`)
      }
    }
    return { containerId: o.containerId as number, hostId: o.hostId as number, size: o.size as number }
  })
}

/** `{ uidMaps?, gidMaps? }`. */
export function checkMapping(name: string, value: unknown): { uidMaps?: IdMap[]; gidMaps?: IdMap[] } {
  const o = checkKeys(name, value ?? null, ['uidMaps', 'gidMaps'])
  return { uidMaps: checkIdMaps(`${name}.uidMaps`, o.uidMaps), gidMaps: checkIdMaps(`${name}.gidMaps`, o.gidMaps) }
}

export function abortError(): BtrfsError {
  return new BtrfsError('ABORT_ERR', 'ABORT_ERR: the operation was aborted')
}
