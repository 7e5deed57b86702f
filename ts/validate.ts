/**
 * Argument checks shared by the whole facade, made before anything reaches the native side, so
 * bad input changes nothing. A wrong JS type is a `TypeError` with code `ERR_INVALID_ARG_TYPE`
 * (as in Node); a bad value of the right type (an unknown option key, a bad id) is a
 * `BtrfsError` with code `EINVAL`.
 */
import { AbortError, BtrfsError } from './errors'

/** One id range of a user namespace: container ids `[containerId, containerId + size)` are host ids `[hostId, hostId + size)`. */
export interface IdMap {
  containerId: number
  hostId: number
  size: number
}

/** A value of the right type that is refused. */
export function invalid(message: string): BtrfsError {
  return new BtrfsError('EINVAL', `EINVAL: ${message}`)
}

/** How Node's errors name a received value: `type number (5)`, `null`, `an instance of Buffer`. */
function received(value: unknown): string {
  if (value === null) return 'null'
  if (value === undefined) return 'undefined'
  switch (typeof value) {
    case 'function':
      return `function ${value.name}`
    case 'object': {
      const ctor = (value as { constructor?: { name?: string } }).constructor
      return ctor?.name ? `an instance of ${ctor.name}` : 'type object'
    }
    case 'string': {
      const s = value.length > 28 ? `${value.slice(0, 25)}...` : value
      return s.includes("'") ? `type string (${JSON.stringify(s)})` : `type string ('${s}')`
    }
    case 'bigint':
      return `type bigint (${value}n)`
    case 'symbol':
      return `type symbol (${String(value)})`
    default:
      return `type ${typeof value} (${Object.is(value, -0) ? '-0' : String(value)})`
  }
}

/**
 * Node's `ERR_INVALID_ARG_TYPE`: `The "id" argument must be of type string. Received type number (5)`.
 * `name` with a dot (`options.signal`) is a property; `expected` reads after "must be".
 */
export function argType(name: string, expected: string, value: unknown): TypeError & { code: 'ERR_INVALID_ARG_TYPE' } {
  const what = name.includes('.') || name.includes('[') ? 'property' : 'argument'
  const err = new TypeError(`The "${name}" ${what} must be ${expected}. Received ${received(value)}`) as TypeError & { code: 'ERR_INVALID_ARG_TYPE' }
  err.code = 'ERR_INVALID_ARG_TYPE'
  return err
}

export function checkString(name: string, value: unknown): string {
  if (typeof value !== 'string') throw argType(name, 'of type string', value)
  return value
}

/** `undefined` as `fallback`, else a boolean. */
export function checkBool(name: string, value: unknown, fallback = false): boolean {
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') throw argType(name, 'of type boolean', value)
  return value
}

/** An options object (or `undefined`: none) whose keys are all among `keys`. */
export function checkKeys(what: string, value: unknown, keys: readonly string[]): Record<string, unknown> {
  if (value === undefined) return {}
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw argType(what, 'of type object', value)
  for (const k of Object.keys(value)) {
    if (!keys.includes(k)) throw invalid(`unknown ${what} key '${k}'`)
  }
  return value as Record<string, unknown>
}

export function checkSignal(value: unknown, name = 'options.signal'): AbortSignal | undefined {
  if (value === undefined) return undefined
  if (!(value instanceof AbortSignal)) throw argType(name, 'an instance of AbortSignal', value)
  return value
}

export function checkCallback<F extends (...args: never[]) => unknown>(name: string, value: unknown): F | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'function') throw argType(name, 'of type function', value)
  return value as F
}

/** Id ranges: an array of `{ containerId, hostId, size }` with integers from 0 to 2^32-1 (overlaps are the native side's to refuse). */
export function checkIdMaps(name: string, value: unknown): IdMap[] | undefined {
  if (value === undefined) return undefined
  if (!Array.isArray(value)) throw argType(name, 'an instance of Array', value)
  return value.map((m, i) => {
    const o = checkKeys(`${name}[${i}]`, m ?? null, ['containerId', 'hostId', 'size'])
    for (const k of ['containerId', 'hostId', 'size']) {
      const v = o[k]
      if (typeof v !== 'number') throw argType(`${name}[${i}].${k}`, 'of type number', v)
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
        throw invalid(`${name}[${i}].${k} must be an integer from 0 to 4294967295, got ${v}`)
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

/**
 * The error of a call stopped by `signal`: an `AbortError` whose `cause` is the signal's
 * reason. For code that checks a signal by hand; long native calls go through `ts/task.ts`.
 */
export function abortError(signal?: AbortSignal): AbortError {
  return new AbortError(signal?.reason)
}

/** `sha256:` and 64 lowercase hex digits, as OCI writes a digest. */
const DIGEST = /^sha256:[0-9a-f]{64}$/

/** What a layer blob must be (`{ digest?, size?, diffId? }`), or `undefined`: anything. */
export function checkVerify(name: string, value: unknown): { digest?: string; size?: number; diffId?: string } | undefined {
  if (value === undefined) return undefined
  const o = checkKeys(name, value ?? null, ['digest', 'size', 'diffId'])
  const out: { digest?: string; size?: number; diffId?: string } = {}
  for (const k of ['digest', 'diffId'] as const) {
    const v = o[k]
    if (v === undefined) continue
    if (typeof v !== 'string') throw argType(`${name}.${k}`, 'of type string', v)
    if (!DIGEST.test(v)) throw invalid(`${name}.${k} must be 'sha256:' and 64 lowercase hex digits, got '${v}'`)
    out[k] = v
  }
  if (o.size !== undefined) {
    if (typeof o.size !== 'number') throw argType(`${name}.size`, 'of type number', o.size)
    if (!Number.isSafeInteger(o.size) || o.size < 0) throw invalid(`${name}.size must be a non-negative safe integer, got ${o.size}`)
    out.size = o.size
  }
  return out
}

/** A send protocol: 1 or 2 (`undefined`: the best the kernel writes). */
export function checkProtocol(name: string, value: unknown): 1 | 2 | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'number') throw argType(name, 'of type number', value)
  if (value !== 1 && value !== 2) throw invalid(`${name} must be 1 or 2, got ${value}`)
  return value
}
