/** Shared helpers of `npm run bench`: environment, statistics, formatting, processes, the filesystem. */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

export const ROOT = path.resolve(__dirname, '..')
export const BIN = path.join(ROOT, 'target', 'release', 'btrfs-layers-bench')

// ---------------------------------------------------------------------------------------------
// environment

export function envInt(name: string, def: number): number {
  const v = process.env[name]
  if (v === undefined || v === '') return def
  const n = Number(v)
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got ${JSON.stringify(v)}`)
  return n
}

export function envNum(name: string, def: number): number {
  const v = process.env[name]
  if (v === undefined || v === '') return def
  const n = Number(v)
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got ${JSON.stringify(v)}`)
  return n
}

/** BTRFS_LAYERS_BENCH_SCALE: multiplies file counts and data sizes (0.01 for a quick check). */
export const SCALE = envNum('BTRFS_LAYERS_BENCH_SCALE', 1)

/** A count scaled by SCALE, at least `min`. */
export const scaled = (n: number, min = 1): number => Math.max(min, Math.round(n * SCALE))

// ---------------------------------------------------------------------------------------------
// statistics and formatting

export const now = (): bigint => process.hrtime.bigint()
export const since = (t: bigint): number => Number(process.hrtime.bigint() - t)

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

export function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.round(q * (s.length - 1))))]
}

export function fmtTime(ns: number): string {
  if (!Number.isFinite(ns)) return 'n/a'
  if (ns < 1e6) return `${(ns / 1e3).toFixed(1)} µs`
  if (ns < 1e9) return `${(ns / 1e6).toFixed(2)} ms`
  return `${(ns / 1e9).toFixed(2)} s`
}

export function fmtBytes(b: number): string {
  if (!Number.isFinite(b)) return 'n/a'
  if (b < 1024 * 1024) return `${(b / 1024).toFixed(1)} KiB`
  if (b < 1024 ** 3) return `${(b / 1024 ** 2).toFixed(1)} MiB`
  return `${(b / 1024 ** 3).toFixed(2)} GiB`
}

/** Throughput of `bytes` in `ns`, MB/s (10^6). */
export const fmtRate = (bytes: number, ns: number): string =>
  Number.isFinite(bytes / ns) ? `${((bytes / ns) * 1e3).toFixed(0)} MB/s` : 'n/a'

export const fmtRatio = (r: number): string => (Number.isFinite(r) ? `${r >= 100 ? r.toFixed(0) : r.toFixed(2)}x` : 'n/a')

export const fmtCount = (n: number): string => n.toLocaleString('en-US')

export const pass = (ok: boolean): string => (ok ? 'PASS' : 'MISS')

export function rotate<T>(xs: T[], k: number): T[] {
  const s = ((k % xs.length) + xs.length) % xs.length
  return [...xs.slice(s), ...xs.slice(0, s)]
}

// ---------------------------------------------------------------------------------------------
// processes

export function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): string {
  const r: SpawnSyncReturns<string> = spawnSync(cmd, args, {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    maxBuffer: 64 * 1024 * 1024,
    env: env ?? process.env,
  })
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`)
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status ?? r.signal}: ${(r.stderr || r.stdout).trim()}`)
  }
  return r.stdout
}

/** Run a command and time it from Node (spawn to exit), ns. */
export function timed(cmd: string, args: string[]): number {
  const t = now()
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] })
  const dt = since(t)
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`)
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status ?? r.signal}: ${r.stderr?.toString().trim()}`)
  return dt
}

export function which(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0
}

/** One subcommand of bench/native; it prints one JSON object. */
export function nativeBench<T>(args: string[], env?: NodeJS.ProcessEnv): T {
  return JSON.parse(run(BIN, args, env)) as T
}

export const log = (s: string): void => {
  process.stderr.write(`${s}\n`)
}

/** The 1-minute load average, as a string. */
export const loadAverage = (): string => os.loadavg().map((x) => x.toFixed(2)).join(', ')

/** Where `populate` put directory number i (two levels: dNNNN and dNNNN/sNNNNN). */
export function populatedDir(i: number, dirs: number): string {
  const top = Math.min(dirs, Math.max(1, Math.ceil(Math.sqrt(dirs))))
  const d = (x: number): string => `d${String(x).padStart(4, '0')}`
  return i < top ? d(i) : path.join(d(i % top), `s${String(i).padStart(5, '0')}`)
}

/** Where `populate` put file number j of `dirs` directories. */
export const populatedFile = (j: number, dirs: number): string =>
  path.join(populatedDir(j % dirs, dirs), `f${String(j).padStart(7, '0')}`)

// ---------------------------------------------------------------------------------------------
// the filesystem: our own loop-mounted image, or BTRFS_LAYERS_BENCH_DIR

export interface Fs {
  /** Where the benchmark works: a subvolume of its own, deleted at the end. */
  work: string
  /** Mount point or the given directory (for `btrfs subvolume sync`). */
  root: string
  description: string
  /** Synchronous: also called from a signal handler. */
  teardown: () => void
}

export function setupFs(imageSize: number): Fs {
  const given = process.env.BTRFS_LAYERS_BENCH_DIR
  if (given) {
    const root = path.resolve(given)
    if (!fs.statSync(root).isDirectory()) throw new Error(`BTRFS_LAYERS_BENCH_DIR=${given} is not a directory`)
    const type = run('stat', ['-f', '-c', '%T', root]).trim()
    if (type !== 'btrfs') throw new Error(`BTRFS_LAYERS_BENCH_DIR=${given} is on ${type}, not btrfs`)
    const work = path.join(root, `btrfs-layers-bench-${process.pid}`)
    return {
      work,
      root,
      description: `${root} (BTRFS_LAYERS_BENCH_DIR)`,
      // Normally gone already (main deletes it); after a signal, remove it synchronously.
      teardown: () => {
        if (fs.existsSync(work)) spawnSync(BIN, ['walk-delete', work], { stdio: 'ignore' })
      },
    }
  }
  for (const tool of ['mkfs.btrfs', 'losetup', 'mount', 'umount']) {
    if (!which(tool)) throw new Error(`${tool} is needed to make a loop-mounted btrfs (or set BTRFS_LAYERS_BENCH_DIR)`)
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'btrfs-layers-bench-'))
  const backing = spawnSync('stat', ['-f', '-c', '%T', tmp], { encoding: 'utf8' }).stdout?.trim() || 'unknown fs'
  const img = path.join(tmp, 'btrfs.img')
  const mnt = path.join(tmp, 'mnt')
  let dev = ''
  let mounted = false
  const teardown = (): void => {
    if (mounted) {
      // A lazy unmount is the last resort; the loop device then goes when the fs lets go.
      for (let i = 0; i < 10 && mounted; i++) {
        if (spawnSync('umount', [mnt], { stdio: 'ignore' }).status === 0) mounted = false
        else spawnSync('sleep', ['0.3'])
      }
      if (mounted && spawnSync('umount', ['-l', mnt], { stdio: 'ignore' }).status === 0) mounted = false
    }
    if (dev) {
      spawnSync('losetup', ['-d', dev], { stdio: 'ignore' })
      dev = ''
    }
    fs.rmSync(tmp, { recursive: true, force: true })
  }
  try {
    const fd = fs.openSync(img, 'w')
    fs.ftruncateSync(fd, imageSize)
    fs.closeSync(fd)
    fs.mkdirSync(mnt)
    run('mkfs.btrfs', ['-q', '-f', img])
    dev = run('losetup', ['--find', '--show', img]).trim()
    run('mount', [dev, mnt])
    mounted = true
  } catch (e) {
    teardown()
    throw e
  }
  return {
    work: path.join(mnt, 'bench'),
    root: mnt,
    description: `${(imageSize / 1024 ** 3).toFixed(1)} GiB sparse image in ${os.tmpdir()} (${backing}) on ${dev}`,
    teardown,
  }
}

/**
 * Commit, wait for the cleaner to finish dropping deleted subvolumes, and commit what the
 * cleaner wrote, so the next measured call starts on a clean filesystem (nothing dirty, no
 * running transaction). The commit is BTRFS_IOC_SYNC (`btrfs filesystem sync`), which also wakes
 * the cleaner thread; a commit through START_SYNC/WAIT_SYNC (the TS API's `sync()`) leaves it
 * asleep until the next periodic commit (30 s by default), and `btrfs subvolume sync` would wait
 * for that.
 */
export async function settle(f: Fs): Promise<void> {
  run('btrfs', ['filesystem', 'sync', f.root])
  run('btrfs', ['subvolume', 'sync', f.root])
  run('btrfs', ['filesystem', 'sync', f.root])
}

// ---------------------------------------------------------------------------------------------
// what a section hands to the report

export type Block =
  | { kind: 'p'; text: string }
  | { kind: 'table'; head: string[]; rows: string[][] }
  | { kind: 'list'; items: string[] }
  | { kind: 'chart'; file: string; title: string }

/** One measured target: what, the figure, the goal, PASS/MISS. */
export interface Target {
  section: string
  what: string
  measured: string
  target: string
  pass: boolean
}

export interface Bar {
  impl: string
  value: number
}

export interface Chart {
  /** File name under the results directory. */
  file: string
  title: string
  /** 'ns' values print as times, 'bytes' as MiB. */
  unit: 'ns' | 'bytes'
  /** What the values are (the x axis label, without the scale). */
  axis: string
  groups: { label: string; bars: Bar[] }[]
  /** A vertical line, e.g. a memory limit. */
  limit?: { value: number; label: string }
}

export interface SectionResult {
  key: string
  title: string
  blocks: Block[]
  targets: Target[]
  charts: Chart[]
  summary: unknown
  samples: unknown
  config: Record<string, unknown>
  /** Wall time of the section, ns. */
  ns?: number
}
