/** What went wrong and what to do: errors turned into a message, a hint and an exit code. */
import * as fs from 'node:fs'
import * as path from 'node:path'
import { BtrfsError } from '../errors'
import { UsageError } from './args'

export const EXIT_OK = 0
export const EXIT_FAILURE = 1
export const EXIT_USAGE = 2
export const EXIT_INTERRUPTED = 130

/** An operational error whose message already says what to do. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly code = 'ERR_CLI',
    readonly hint?: string,
  ) {
    super(message)
    this.name = 'CliError'
  }
}

/** What the command was working on, to name it in hints. */
export interface HintContext {
  command: string
  home?: string
  /** Whether home is the loopback store's. */
  loopback?: boolean
}

export interface Explained {
  message: string
  hint?: string
  code: string
  exit: number
  /** The process that holds the store, for an EBUSY of its lock. */
  pid?: number
}

const details = new WeakMap<object, Record<string, unknown>>()

/** Attach what a command got done before `err` (e.g. rm's removed and failed ids), for --json's error object. */
export function withDetails<E extends object>(err: E, more: Record<string, unknown>): E {
  details.set(err, more)
  return err
}

/** What `withDetails` attached to `err`, if anything. */
export function detailsOf(err: unknown): Record<string, unknown> | undefined {
  return typeof err === 'object' && err !== null ? details.get(err) : undefined
}

/** The process holding the store: from the EBUSY message, else the id the holder wrote into `home/.lock`. */
function lockHolder(err: BtrfsError, ctx: HintContext): { pid: number; command?: string } | undefined {
  let pid = Number(/process (\d+)/.exec(err.message)?.[1])
  if (!pid) {
    const lock = err.path ?? (ctx.home && path.join(ctx.home, '.lock'))
    try {
      pid = Number(fs.readFileSync(lock ?? '', 'utf8').trim())
    } catch {
      return undefined
    }
  }
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined
  let command: string | undefined
  try {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean)
    // `node main.js --home ... apply x -`: the program and script by name, the arguments whole.
    const line = argv.map((a, i) => (i === 0 || (i === 1 && /\.[cm]?js$/.test(a)) ? path.basename(a) : a)).join(' ')
    command = line.length > 200 ? `${line.slice(0, 197)}...` : line
  } catch {
    // gone meanwhile, or another pid namespace
  }
  return { pid, command }
}

/** The layer id an error's path names, when it is `<home>/subvolumes/<id>`. */
function layerOf(err: BtrfsError): string | undefined {
  if (!err.path) return undefined
  const m = /\/subvolumes\/([^/]+)$/.exec(err.path)
  if (m && !m[1].startsWith('.')) return m[1]
  return undefined
}

function hintFor(err: BtrfsError, ctx: HintContext): string | undefined {
  const id = layerOf(err)
  switch (err.code) {
    case 'ERR_NOT_BTRFS':
    case 'ERR_PREREQUISITES':
      if (ctx.loopback) return undefined
      return `${err.path ?? ctx.home ?? 'the store'} is not on btrfs; pass --home on a btrfs filesystem or omit it to use the loopback store`
    case 'EPERM':
    case 'EACCES':
      return `permission denied: run as root (sudo btrfs-layers ${ctx.command} ...)`
    case 'EEXIST':
      return `layer id taken${id ? `: '${id}' exists` : ''}; pick another id or remove it first (btrfs-layers rm ${id ?? 'ID'})`
    case 'ENOENT':
      if (id) return `no layer '${id}' in ${ctx.home ?? 'the store'}; 'btrfs-layers ls' lists the layers`
      if (err.path && ctx.home && path.resolve(err.path) === path.dirname(path.resolve(ctx.home))) {
        return `the parent directory of --home ${ctx.home} does not exist; create it first`
      }
      return undefined
    case 'EBUSY':
      if (err.syscall === 'flock') {
        const h = lockHolder(err, ctx)
        const who = h ? `process ${h.pid}${h.command ? ` (${h.command})` : ''}` : 'another btrfs-layers or program'
        return `store in use by another process: ${who} holds its lock; wait for it to finish (ls, status, changes and diff work meanwhile)`
      }
      if (/in use \(get without put\)/.test(err.message)) return `layer held: '${id ?? '?'}' is in use; release it first`
      return `layer held: something is mounted inside ${err.path ?? 'the layer'} or a process uses it; unmount it or stop the process`
    case 'ERR_BAD_LAYER':
      return 'the input is not a valid layer tar (plain, gzip or zstd OCI layer); nothing was changed'
    case 'ERR_ID_MAPPING': {
      const more = err.errors && err.errors.length > 0 ? ` (${err.errors.length} files, e.g. ${err.errors[0].path})` : ''
      return `an owner is outside the id maps${more}; widen --uid-map/--gid-map; nothing was created`
    }
    case 'ENOSPC':
      return ctx.loopback
        ? 'the loopback store is full: remove layers, or unmount it, delete the image and init again with a larger --image-size'
        : 'the filesystem is full: remove layers or free space'
    case 'ERR_REGISTRY_AUTH':
      return 'the registry refused the credentials: pass --user U --password-stdin, or log in (docker login) so that ~/.docker/config.json has them'
    case 'ERR_DIGEST':
      return 'bytes did not match their digest (a corrupt blob or a tampered registry); nothing of that layer was kept'
    case 'ERR_UNSUPPORTED_LAYER':
      return 'the image has a layer this store cannot fetch (foreign or unknown media type)'
    case 'EDQUOT':
      return 'the layer reached its size limit (--size of create)'
    case 'EROFS':
      return `the layer${id ? ` '${id}'` : ''} is read-only (created with --read-only)`
    default:
      return undefined
  }
}

/** The message, hint and exit code for anything a command threw. */
export function explain(err: unknown, ctx: HintContext): Explained {
  if (err instanceof UsageError) return { message: err.message, hint: err.hint, code: 'ERR_USAGE', exit: EXIT_USAGE }
  if (err instanceof CliError) return { message: err.message, hint: err.hint, code: err.code, exit: EXIT_FAILURE }
  if (err instanceof BtrfsError) {
    if (err.code === 'ABORT_ERR') return { message: 'interrupted; the interrupted operation was undone', code: 'ABORT_ERR', exit: EXIT_INTERRUPTED }
    const pid = err.code === 'EBUSY' && err.syscall === 'flock' ? lockHolder(err, ctx)?.pid : undefined
    return { message: err.message, hint: hintFor(err, ctx), code: String(err.code), exit: EXIT_FAILURE, ...(pid ? { pid } : {}) }
  }
  const e = err as NodeJS.ErrnoException
  if (e && typeof e === 'object' && e.name === 'AbortError') return { message: 'interrupted', code: 'ABORT_ERR', exit: EXIT_INTERRUPTED }
  if (e && typeof e === 'object' && typeof e.code === 'string') {
    const hint = e.code === 'EPIPE' ? 'the reader of the output went away' : e.code === 'EACCES' || e.code === 'EPERM' ? 'permission denied: run as root' : undefined
    return { message: e.message, hint, code: e.code, exit: EXIT_FAILURE }
  }
  return { message: err instanceof Error ? err.message : String(err), code: 'ERR_INTERNAL', exit: EXIT_FAILURE }
}
