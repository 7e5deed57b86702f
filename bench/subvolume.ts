/**
 * Section `subvolume`: per-operation latency of create, snapshot, read-only snapshot and delete
 * through (a) the async TypeScript API, (b) the raw ioctl issued directly from Rust
 * (bench/native `serve`: open, ioctl, close, timed inside the Rust process), (c) the `btrfs`
 * command line; plus two diagnostic paths that split the TS overhead: the napi binding called
 * without the TS facade, and the btrfs-layers-core call in a plain Rust process.
 * Implementations alternate operation by operation: every round takes one sample of each
 * operation from each implementation, in an order that rotates every round, so drift of the
 * filesystem or the machine hits all of them alike; warm-up rounds are not recorded.
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { createSubvolume, deleteSubvolume, snapshot, sync } from '../ts/index'
import { native } from '../ts/native'
import {
  BIN,
  envInt,
  fmtRatio,
  fmtTime,
  log,
  median,
  nativeBench,
  now,
  pass,
  quantile,
  rotate,
  settle,
  since,
  type Chart,
  type Fs,
  type SectionResult,
} from './lib'

const N = envInt('BTRFS_LAYERS_BENCH_N', 200)
const SNAP_N = Math.min(envInt('BTRFS_LAYERS_BENCH_SNAP_N', 100), N)
const WARMUP = envInt('BTRFS_LAYERS_BENCH_WARMUP', 5)
/** Files in the source subvolume the snapshot benchmarks snapshot. */
export const SRC_DIRS = 20
export const SRC_FILES = 1000

export const TARGET_TS_RAW = 1.15

export type Op = 'create' | 'snapshot' | 'snapshot-ro' | 'delete'
const OPS: Op[] = ['create', 'snapshot', 'snapshot-ro', 'delete']
type Impl = 'ts' | 'raw' | 'cli' | 'napi' | 'core'
const IMPLS: Impl[] = ['ts', 'raw', 'cli', 'napi', 'core']

export interface Samples {
  /** Whole operation, ns. */
  ns: number[]
  /** raw only: the ioctl alone, ns. */
  ioctlNs?: number[]
  /** raw only: the same operation timed from Node, around the request to the Rust process. */
  fromNodeNs?: number[]
}

type Table = Record<Op, Record<Impl, Samples>>

function emptyTable(): Table {
  const t = {} as Table
  for (const op of OPS) {
    t[op] = {} as Record<Impl, Samples>
    for (const impl of IMPLS) t[op][impl] = { ns: [], ...(impl === 'raw' ? { ioctlNs: [], fromNodeNs: [] } : {}) }
  }
  return t
}

/**
 * The native side's `serve` mode: one long-lived process doing single raw or core operations
 * on request, so implementations can alternate operation by operation without paying a process
 * spawn in between (the time is measured inside the Rust process, around the operation).
 */
export class NativeServer {
  private child: ChildProcessWithoutNullStreams
  private waiting: ((line: string) => void)[] = []
  private buf = ''
  private exited: string | null = null

  constructor() {
    this.child = spawn(BIN, ['serve'], { stdio: ['pipe', 'pipe', 'pipe'] })
    this.child.stdout.setEncoding('utf8')
    this.child.stdout.on('data', (chunk: string) => {
      this.buf += chunk
      let i: number
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i)
        this.buf = this.buf.slice(i + 1)
        this.waiting.shift()?.(line)
      }
    })
    let stderr = ''
    this.child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
    this.child.on('exit', (code, sig) => {
      this.exited = `btrfs-layers-bench serve exited (${code ?? sig}): ${stderr.trim()}`
      for (const w of this.waiting.splice(0)) w(JSON.stringify({ error: this.exited }))
    })
  }

  async op(via: 'raw' | 'core', op: Op, dir: string, name: string, source?: string): Promise<Samples> {
    if (this.exited) throw new Error(this.exited)
    const fields = [via, op, dir, name, ...(source === undefined ? [] : [source])]
    if (fields.some((x) => x.includes('\t') || x.includes('\n'))) {
      throw new Error(`a path with a tab or newline: ${fields.join(' ')}`)
    }
    const t = now()
    const line = await new Promise<string>((resolve) => {
      this.waiting.push(resolve)
      this.child.stdin.write(`${fields.join('\t')}\n`)
    })
    const hop = since(t)
    const r = JSON.parse(line) as { ns: number; ioctl_ns: number; error?: string }
    if (r.error) throw new Error(`${via} ${op} ${path.join(dir, name)}: ${r.error}`)
    return via === 'raw' ? { ns: [r.ns], ioctlNs: [r.ioctl_ns], fromNodeNs: [hop] } : { ns: [r.ns] }
  }

  close(): void {
    this.child.stdin.end()
  }
}

export const CLI_ARGS: Record<Op, (source: string, p: string) => string[]> = {
  create: (_s, p) => ['subvolume', 'create', p],
  snapshot: (s, p) => ['subvolume', 'snapshot', s, p],
  'snapshot-ro': (s, p) => ['subvolume', 'snapshot', '-r', s, p],
  delete: (_s, p) => ['subvolume', 'delete', p],
}

/** `btrfs <args>` spawned from Node, timed around the spawn. */
export function cliOp(args: string[]): number {
  const t = now()
  const r = spawnSync('btrfs', args, { stdio: ['ignore', 'ignore', 'pipe'] })
  const dt = since(t)
  if (r.status !== 0) throw new Error(`btrfs ${args.join(' ')}: ${r.stderr?.toString().trim()}`)
  return dt
}

/** One operation `op` on `dir/name` through implementation `impl`, timed. */
async function one(srv: NativeServer, impl: Impl, op: Op, dir: string, name: string, source: string): Promise<Samples> {
  const p = path.join(dir, name)
  const snap = op === 'snapshot' || op === 'snapshot-ro'
  if (impl === 'raw' || impl === 'core') return srv.op(impl, op, dir, name, snap ? source : undefined)
  if (impl === 'cli') return { ns: [cliOp(CLI_ARGS[op](source, p))] }
  let t: bigint
  if (impl === 'ts') {
    switch (op) {
      case 'create':
        t = now()
        await createSubvolume(p)
        break
      case 'snapshot':
        t = now()
        await snapshot(source, p)
        break
      case 'snapshot-ro':
        t = now()
        await snapshot(source, p, { readOnly: true })
        break
      case 'delete':
        t = now()
        await deleteSubvolume(p)
        break
    }
  } else {
    switch (op) {
      case 'create':
        t = now()
        await native.createSubvolume(p)
        break
      case 'snapshot':
        t = now()
        await native.snapshot(source, p, false)
        break
      case 'snapshot-ro':
        t = now()
        await native.snapshot(source, p, true)
        break
      case 'delete':
        t = now()
        await native.deleteSubvolume(p, false)
        break
    }
  }
  return { ns: [since(t)] }
}

/** Round trips of trivial or light async calls: what any async call costs on this machine. */
interface Floor {
  napiIsSubvolume: number[]
  fsStatAsync: number[]
  fsMkdirAsync: number[]
  fsRmdirAsync: number[]
  fsMkdirSync: number[]
  fsRmdirSync: number[]
}

async function measureOps(f: Fs, source: string): Promise<{ table: Table; floor: Floor }> {
  const dir = path.join(f.work, 'ops')
  fs.mkdirSync(dir)
  const table = emptyTable()
  const floor: Floor = { napiIsSubvolume: [], fsStatAsync: [], fsMkdirAsync: [], fsRmdirAsync: [], fsMkdirSync: [], fsRmdirSync: [] }
  const srv = new NativeServer()
  try {
    // Round r takes one sample of every operation from every implementation, in an order that
    // rotates every round, so each implementation takes each position equally often.
    for (let r = -WARMUP; r < N; r++) {
      const warm = r < 0
      const order = rotate(IMPLS, r)
      const keep = (op: Op, impl: Impl, s: Samples): void => {
        if (warm) return
        table[op][impl].ns.push(...s.ns)
        if (s.ioctlNs) table[op][impl].ioctlNs!.push(...s.ioctlNs)
        if (s.fromNodeNs) table[op][impl].fromNodeNs!.push(...s.fromNodeNs)
      }
      // create; commit; delete what was created (every delete finds the same, committed state)
      for (const impl of order) keep('create', impl, await one(srv, impl, 'create', dir, `c-${impl}-${r}`, source))
      await sync(f.root)
      for (const impl of rotate(order, 2)) keep('delete', impl, await one(srv, impl, 'delete', dir, `c-${impl}-${r}`, source))
      if (r < SNAP_N) {
        for (const impl of rotate(order, 1)) keep('snapshot', impl, await one(srv, impl, 'snapshot', dir, `s-${impl}-${r}`, source))
        for (const impl of rotate(order, 3)) {
          keep('snapshot-ro', impl, await one(srv, impl, 'snapshot-ro', dir, `r-${impl}-${r}`, source))
        }
        // The snapshots go unmeasured.
        for (const impl of IMPLS) for (const k of ['s', 'r']) await srv.op('raw', 'delete', dir, `${k}-${impl}-${r}`)
      }
      // The floor of any async call: a napi call doing ~2 µs of work (stat + statfs); and Node's
      // own thread-pool round trip for comparison: fs.promises.stat, and fs.promises.mkdir/rmdir
      // (a syscall of about the weight of a subvolume create/delete) against fs.mkdirSync/rmdirSync.
      const d = path.join(dir, `m-${r}`)
      const steps: [keyof Floor, () => unknown][] = [
        ['napiIsSubvolume', () => native.isSubvolume(source)],
        ['fsStatAsync', () => fs.promises.stat(source)],
        ['fsMkdirAsync', () => fs.promises.mkdir(d)],
        ['fsRmdirAsync', () => fs.promises.rmdir(d)],
        ['fsMkdirSync', () => fs.mkdirSync(d)],
        ['fsRmdirSync', () => fs.rmdirSync(d)],
      ]
      for (const [k, fn] of steps) {
        const t = now()
        await fn()
        if (!warm) floor[k].push(since(t))
      }
      // Let the cleaner drop this round's deleted subvolumes before the next round.
      await settle(f)
      if (!warm && (r + 1) % Math.max(1, Math.round(N / 10)) === 0) log(`  ${r + 1}/${N} rounds`)
    }
  } finally {
    srv.close()
  }
  const left = fs.readdirSync(dir)
  if (left.length) throw new Error(`ops directory not empty after the run: ${left.slice(0, 5).join(', ')}`)
  fs.rmdirSync(dir)
  return { table, floor }
}

export async function sectionSubvolume(f: Fs): Promise<SectionResult> {
  const source = path.join(f.work, 'source')
  await createSubvolume(source)
  nativeBench(['populate', source, String(SRC_DIRS), String(SRC_FILES)])
  await settle(f)
  log(`subvolume: per-operation latency, ${N} create/delete, ${SNAP_N} snapshot samples x ${IMPLS.length} implementations`)
  const { table, floor } = await measureOps(f, source)
  await deleteSubvolume(source)
  await settle(f)
  return report(table, floor)
}

const OP_LABEL: Record<Op, string> = {
  create: 'create',
  snapshot: 'snapshot',
  'snapshot-ro': 'snapshot (read-only)',
  delete: 'delete',
}

type SubvolumeSummary = Record<Op, { tsMedianNs: number; rawMedianNs: number; cliMedianNs: number }>

/** The section's chart, from its JSON summary (also used by bench/render-charts.ts). */
export function subvolumeCharts(s: SubvolumeSummary): Chart[] {
  return [
    {
      file: 'subvolume.svg',
      title: 'Subvolume operations: median latency',
      unit: 'ns',
      axis: 'median time per operation',
      groups: OPS.map((op) => ({
        label: OP_LABEL[op],
        bars: [
          { impl: 'TS API', value: s[op].tsMedianNs },
          { impl: 'raw ioctl (Rust)', value: s[op].rawMedianNs },
          { impl: 'btrfs CLI', value: s[op].cliMedianNs },
        ],
      })),
    },
  ]
}

function report(table: Table, floor: Floor): SectionResult {
  const rows: string[][] = []
  const summary: Record<string, unknown> = {}
  const targets: SectionResult['targets'] = []
  const label = OP_LABEL
  for (const op of OPS) {
    const m = (impl: Impl): number => median(table[op][impl].ns)
    const ts = m('ts')
    const raw = m('raw')
    const cli = m('cli')
    const tsRaw = ts / raw
    // Samples of one round were taken moments apart: the median of the per-round ratios is
    // robust against drift that a ratio of medians can still pick up on a busy machine.
    const tsRawPaired = median(table[op].ts.ns.map((x, i) => x / table[op].raw.ns[i]))
    rows.push([
      label[op],
      fmtTime(ts),
      fmtTime(raw),
      fmtTime(cli),
      fmtRatio(tsRaw),
      fmtRatio(tsRawPaired),
      fmtRatio(cli / ts),
      `≤ ${TARGET_TS_RAW}x ${pass(tsRaw <= TARGET_TS_RAW)}`,
    ])
    targets.push({
      section: 'subvolume',
      what: `${label[op]}: TS API / raw ioctl`,
      measured: `${fmtRatio(tsRaw)} (${fmtTime(ts)} vs ${fmtTime(raw)})`,
      target: `≤ ${TARGET_TS_RAW}x`,
      pass: tsRaw <= TARGET_TS_RAW,
    })
    summary[op] = {
      tsMedianNs: ts,
      rawMedianNs: raw,
      cliMedianNs: cli,
      rawIoctlOnlyMedianNs: median(table[op].raw.ioctlNs ?? []),
      rawTimedFromNodeMedianNs: median(table[op].raw.fromNodeNs ?? []),
      napiMedianNs: m('napi'),
      coreMedianNs: m('core'),
      tsOverRaw: tsRaw,
      tsOverRawPairedMedian: tsRawPaired,
      cliOverTs: cli / ts,
      target: `ts/raw <= ${TARGET_TS_RAW}`,
      pass: tsRaw <= TARGET_TS_RAW,
    }
  }
  const head = ['operation', 'TS API median', 'raw ioctl median', 'btrfs CLI median', 'TS/raw', 'TS/raw paired', 'CLI/TS', 'target (TS/raw)']

  const diagRows: string[][] = []
  for (const op of OPS) {
    const m = (impl: Impl): number => median(table[op][impl].ns)
    diagRows.push([
      label[op],
      fmtTime(median(table[op].raw.ioctlNs ?? [])),
      fmtTime(m('raw')),
      fmtTime(m('core')),
      fmtTime(m('napi')),
      fmtTime(m('ts')),
      fmtTime(median(table[op].raw.fromNodeNs ?? [])),
      `${fmtTime(quantile(table[op].ts.ns, 0.1))} / ${fmtTime(quantile(table[op].raw.ns, 0.1))}`,
    ])
  }
  const diagHead = [
    'operation',
    'ioctl alone',
    'raw (open+ioctl+close)',
    'core lib (Rust, no Node)',
    'napi binding (no facade)',
    'TS API',
    'raw timed from Node',
    'p10 TS / raw',
  ]
  const fm = (k: keyof Floor): string => fmtTime(median(floor[k]))
  const floorLines = [
    `async round trip of a napi call doing ~2 µs of native work (isSubvolume): ${fm('napiIsSubvolume')}; ` +
      `Node's own fs.promises.stat: ${fm('fsStatAsync')}`,
    `Node's own thread-pool overhead on a comparable syscall: fs.promises.mkdir ${fm('fsMkdirAsync')} vs ` +
      `fs.mkdirSync ${fm('fsMkdirSync')} (${fmtRatio(median(floor.fsMkdirAsync) / median(floor.fsMkdirSync))}); ` +
      `fs.promises.rmdir ${fm('fsRmdirAsync')} vs fs.rmdirSync ${fm('fsRmdirSync')} ` +
      `(${fmtRatio(median(floor.fsRmdirAsync) / median(floor.fsRmdirSync))})`,
  ]
  summary.floorMediansNs = Object.fromEntries(Object.entries(floor).map(([k, v]) => [k, median(v as number[])]))
  const [chart] = subvolumeCharts(summary as unknown as SubvolumeSummary)
  return {
    key: 'subvolume',
    title: 'Subvolume operations: TS API vs raw ioctl vs btrfs CLI',
    blocks: [
      {
        kind: 'p',
        text:
          `Medians of ${N} create/delete and ${SNAP_N} snapshot samples per implementation, alternating ` +
          `implementations operation by operation (${WARMUP} warm-up rounds). The snapshot source holds ` +
          `${SRC_DIRS} directories and ${SRC_FILES} files. "raw ioctl" is the same operation done directly ` +
          'from Rust (bench/native, timed there): open the directories it needs, the ioctl, close. "btrfs CLI" ' +
          'is `btrfs subvolume create/snapshot [-r]/delete` spawned from Node, timed around the spawn. ' +
          '"TS/raw" is the ratio of the medians (the target applies to it); "TS/raw paired" is the median of ' +
          'the per-round ratios, a cross-check less sensitive to drift on a busy machine.',
      },
      { kind: 'table', head, rows },
      { kind: 'chart', file: chart.file, title: chart.title },
      {
        kind: 'p',
        text:
          'Where the TS time goes (diagnostics from the same rounds): the ioctl alone, the btrfs-layers-core ' +
          'call in a plain Rust process, the napi binding without the TS facade, and the raw operation timed ' +
          'from Node around its request to the Rust process (two cross-process wake-ups, like the two ' +
          'cross-thread wake-ups of an async call).',
      },
      { kind: 'table', head: diagHead, rows: diagRows },
      { kind: 'list', items: floorLines },
    ],
    targets,
    charts: [chart],
    summary,
    samples: { ops: table, floor },
    config: { N, SNAP_N, WARMUP, SRC_DIRS, SRC_FILES },
  }
}
