/**
 * Section `hotpath`: the graph driver's common path against its physical limits (DESIGN.md,
 * Performance; issue 11 item 1), side by side in one run on one filesystem:
 * - the driver through the TS API: `create(id)` of an empty layer, `create(id, parent)` of a
 *   child of a parent layer holding files, `remove(id)` of an empty layer;
 * - the raw ioctl each needs, from Rust (bench/native `serve`, timed there: open, ioctl,
 *   close): SUBVOL_CREATE_V2, SNAP_CREATE_V2 of the same parent layer, SNAP_DESTROY;
 * - Node's own async floor: the median of `fs.promises.mkdir` minus the median of
 *   `fs.mkdirSync`, on the same filesystem.
 * Target per operation: driver median ≤ 1.15 x raw median + 1.25 x floor.
 *
 * Every round takes one sample of each, in an order that rotates every round (the floor's
 * mkdirs take their turns among the empty creates), so drift hits all alike; warm-up rounds
 * are not recorded. Each measured create and mkdir starts right after a commit (nothing dirty);
 * each measured remove and rmdir starts on a settled filesystem (committed, and the cleaner has
 * finished dropping every deleted subvolume), so no remove pays for another's cleanup.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import { sync, type BtrfsDriver } from '../ts/index'
import {
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
import { NativeServer, SRC_DIRS, SRC_FILES } from './subvolume'

const N = envInt('BTRFS_LAYERS_BENCH_HOTPATH_N', 300)
const WARMUP = envInt('BTRFS_LAYERS_BENCH_WARMUP', 5)
/** The target: driver ≤ RAW_FACTOR x raw + FLOOR_FACTOR x floor. */
export const RAW_FACTOR = 1.15
export const FLOOR_FACTOR = 1.25

type Op = 'create' | 'child' | 'remove'
const OPS: Op[] = ['create', 'child', 'remove']
const OP_LABEL: Record<Op, string> = {
  create: 'create(id): empty layer',
  child: 'create(id, parent): child layer',
  remove: 'remove(id): empty layer',
}
const RAW_LABEL: Record<Op, string> = {
  create: 'SUBVOL_CREATE_V2',
  child: 'SNAP_CREATE_V2',
  remove: 'SNAP_DESTROY',
}
type Floor = 'mkdirAsync' | 'mkdirSync' | 'rmdirAsync' | 'rmdirSync'

interface Samples {
  driver: Record<Op, number[]>
  raw: Record<Op, number[]>
  /** raw: the ioctl alone, without opening and closing the directories. */
  rawIoctl: Record<Op, number[]>
  floor: Record<Floor, number[]>
}

export interface HotpathSummary {
  floorNs: number
  floorMediansNs: Record<Floor, number>
  ops: Record<Op, { rawMedianNs: number; driverMedianNs: number; budgetNs: number; pass: boolean }>
}

/** The section's chart, from its JSON summary (also used by bench/render-charts.ts). */
export function hotpathCharts(s: HotpathSummary): Chart[] {
  return [
    {
      file: 'hotpath.svg',
      title: `Driver hot path vs raw ioctl (Node async floor ${fmtTime(s.floorNs)})`,
      unit: 'ns',
      axis: 'median time per operation',
      groups: OPS.map((op) => ({
        label: OP_LABEL[op],
        bars: [
          { impl: 'raw ioctl (Rust)', value: s.ops[op].rawMedianNs },
          { impl: `budget (${RAW_FACTOR}x raw + ${FLOOR_FACTOR}x floor)`, value: s.ops[op].budgetNs },
          { impl: 'driver (TS API)', value: s.ops[op].driverMedianNs },
        ],
      })),
    },
  ]
}

export async function sectionHotpath(f: Fs, driver: BtrfsDriver): Promise<SectionResult> {
  log(`hotpath: driver create / create child / remove vs raw ioctl vs Node's async floor, ${N} rounds (+${WARMUP} warm-up)`)
  const parent = 'hotpath-parent'
  await driver.create(parent)
  const parentPath = await driver.get(parent)
  await driver.put(parent)
  nativeBench(['populate', parentPath, String(SRC_DIRS), String(SRC_FILES)])
  const rawDir = path.join(f.work, 'hotpath-raw')
  const floorDir = path.join(f.work, 'hotpath-floor')
  fs.mkdirSync(rawDir)
  fs.mkdirSync(floorDir)
  await settle(f)

  const s: Samples = {
    driver: { create: [], child: [], remove: [] },
    raw: { create: [], child: [], remove: [] },
    rawIoctl: { create: [], child: [], remove: [] },
    floor: { mkdirAsync: [], mkdirSync: [], rmdirAsync: [], rmdirSync: [] },
  }
  const commit = (): Promise<void> => sync(f.root)
  const srv = new NativeServer()
  const started = now()
  try {
    for (let r = -WARMUP; r < N; r++) {
      const warm = r < 0
      const empty = { driver: `e-driver-${r}`, raw: `e-raw-${r}` }
      const child = { driver: `c-driver-${r}`, raw: `c-raw-${r}` }
      const dirs = { async: path.join(floorDir, `a-${r}`), sync: path.join(floorDir, `s-${r}`) }
      const keepRaw = (op: Op, x: { ns: number[]; ioctlNs?: number[] }): void => {
        if (warm) return
        s.raw[op].push(x.ns[0])
        s.rawIoctl[op].push(x.ioctlNs![0])
      }
      const timeDriver = async (op: Op, fn: () => Promise<void>): Promise<void> => {
        const t = now()
        await fn()
        const ns = since(t)
        if (!warm) s.driver[op].push(ns)
      }
      const timeFloor = async (k: Floor, fn: () => unknown): Promise<void> => {
        const t = now()
        const p = fn()
        // The sync calls are timed without an await.
        if (p instanceof Promise) await p
        const ns = since(t)
        if (!warm) s.floor[k].push(ns)
      }

      // empty creates, with the floor's mkdirs among them
      const creates: Record<string, () => Promise<void>> = {
        driver: () => timeDriver('create', () => driver.create(empty.driver)),
        raw: async () => keepRaw('create', await srv.op('raw', 'create', rawDir, empty.raw)),
        mkdirAsync: () => timeFloor('mkdirAsync', () => fs.promises.mkdir(dirs.async)),
        mkdirSync: () => timeFloor('mkdirSync', () => fs.mkdirSync(dirs.sync)),
      }
      for (const k of rotate(Object.keys(creates), r)) {
        await commit()
        await creates[k]()
      }
      // children of the parent layer
      const children: Record<string, () => Promise<void>> = {
        driver: () => timeDriver('child', () => driver.create(child.driver, parent)),
        raw: async () => keepRaw('child', await srv.op('raw', 'snapshot', rawDir, child.raw, parentPath)),
      }
      for (const k of rotate(Object.keys(children), r)) {
        await commit()
        await children[k]()
      }
      // removes of the empty layers, with the floor's rmdirs among them
      const removes: Record<string, () => Promise<void>> = {
        driver: () => timeDriver('remove', () => driver.remove(empty.driver)),
        raw: async () => keepRaw('remove', await srv.op('raw', 'delete', rawDir, empty.raw)),
        rmdirAsync: () => timeFloor('rmdirAsync', () => fs.promises.rmdir(dirs.async)),
        rmdirSync: () => timeFloor('rmdirSync', () => fs.rmdirSync(dirs.sync)),
      }
      for (const k of rotate(Object.keys(removes), r + 1)) {
        await settle(f)
        await removes[k]()
      }
      // the children go unmeasured
      await driver.remove(child.driver)
      await srv.op('raw', 'delete', rawDir, child.raw)
      await settle(f)
      if (!warm && (r + 1) % Math.max(1, Math.round(N / 10)) === 0) log(`  ${r + 1}/${N} rounds (${fmtTime(since(started))})`)
    }
  } finally {
    srv.close()
  }
  for (const d of [rawDir, floorDir]) {
    const left = fs.readdirSync(d)
    if (left.length) throw new Error(`${d} not empty after the hotpath section: ${left.slice(0, 5).join(', ')}`)
    fs.rmdirSync(d)
  }
  await driver.remove(parent)
  await settle(f)
  return report(s)
}

function report(s: Samples): SectionResult {
  const floorMedians = Object.fromEntries(Object.entries(s.floor).map(([k, v]) => [k, median(v)])) as Record<Floor, number>
  const floor = floorMedians.mkdirAsync - floorMedians.mkdirSync
  const rows: string[][] = []
  const diagRows: string[][] = []
  const targets: SectionResult['targets'] = []
  const ops = {} as HotpathSummary['ops']
  const detail: Record<string, unknown> = {}
  for (const op of OPS) {
    const raw = median(s.raw[op])
    const d = median(s.driver[op])
    const budget = RAW_FACTOR * raw + FLOOR_FACTOR * floor
    const ok = d <= budget
    ops[op] = { rawMedianNs: raw, driverMedianNs: d, budgetNs: budget, pass: ok }
    const paired = median(s.driver[op].map((x, i) => x / s.raw[op][i]))
    detail[op] = {
      rawIoctlOnlyMedianNs: median(s.rawIoctl[op]),
      driverOverRaw: d / raw,
      driverOverRawPairedMedian: paired,
      driverOverBudget: d / budget,
      driverP10P90Ns: [quantile(s.driver[op], 0.1), quantile(s.driver[op], 0.9)],
      rawP10P90Ns: [quantile(s.raw[op], 0.1), quantile(s.raw[op], 0.9)],
    }
    rows.push([
      OP_LABEL[op],
      `${fmtTime(raw)} (${RAW_LABEL[op]})`,
      fmtTime(floor),
      fmtTime(d),
      fmtTime(budget),
      fmtRatio(d / budget),
      pass(ok),
    ])
    diagRows.push([
      OP_LABEL[op],
      fmtTime(median(s.rawIoctl[op])),
      `${fmtTime(quantile(s.raw[op], 0.1))} / ${fmtTime(quantile(s.raw[op], 0.9))}`,
      `${fmtTime(quantile(s.driver[op], 0.1))} / ${fmtTime(quantile(s.driver[op], 0.9))}`,
      fmtRatio(d / raw),
      fmtRatio(paired),
      fmtTime(d - raw),
    ])
    targets.push({
      section: 'hotpath',
      what: `driver ${OP_LABEL[op]}: driver vs ${RAW_FACTOR}x raw ${RAW_LABEL[op]} + ${FLOOR_FACTOR}x Node async floor`,
      measured: `${fmtTime(d)} (raw ${fmtTime(raw)}, floor ${fmtTime(floor)})`,
      target: `≤ ${fmtTime(budget)}`,
      pass: ok,
    })
  }
  const summary: HotpathSummary & { detail: unknown } = { floorNs: floor, floorMediansNs: floorMedians, ops, detail }
  const [chart] = hotpathCharts(summary)
  const fm = (k: Floor): string => fmtTime(floorMedians[k])
  return {
    key: 'hotpath',
    title: 'Driver hot path: create, create child, remove vs raw ioctl + Node async floor',
    blocks: [
      {
        kind: 'p',
        text:
          `Medians of ${N} rounds (${WARMUP} warm-up rounds), alternating implementations operation by operation ` +
          'in an order that rotates every round. "driver" is `BtrfsDriver` through the TS API: `create(id)` of an ' +
          `empty layer, \`create(id, parent)\` of a child of a layer holding ${SRC_DIRS} directories and ${SRC_FILES} ` +
          'files, `remove(id)` of an empty layer (one made by the empty create of the same round). "raw" is the ' +
          'ioctl the operation needs, from Rust on the same filesystem (bench/native, timed there: open the ' +
          'directories, the ioctl, close): SUBVOL_CREATE_V2, SNAP_CREATE_V2 of the same parent layer, SNAP_DESTROY ' +
          'of an empty subvolume. "floor" is Node\'s own thread-pool round trip: the median of `fs.promises.mkdir` ' +
          'minus the median of `fs.mkdirSync` on the same filesystem, measured among the empty creates. Every ' +
          'create and mkdir starts right after a commit; every remove and rmdir starts on a settled filesystem ' +
          '(committed, the cleaner done with every deleted subvolume). Target per operation: ' +
          `driver ≤ ${RAW_FACTOR} x raw + ${FLOOR_FACTOR} x floor (the "budget").`,
      },
      { kind: 'table', head: ['operation', 'raw ioctl', 'Node async floor', 'driver', 'budget', 'driver/budget', 'result'], rows },
      { kind: 'chart', file: chart.file, title: chart.title },
      {
        kind: 'table',
        head: ['operation', 'raw: ioctl alone', 'raw p10 / p90', 'driver p10 / p90', 'driver/raw', 'driver/raw paired', 'driver − raw'],
        rows: diagRows,
      },
      {
        kind: 'list',
        items: [
          `Node's async floor: fs.promises.mkdir ${fm('mkdirAsync')} − fs.mkdirSync ${fm('mkdirSync')} = ${fmtTime(floor)}; ` +
            `for comparison fs.promises.rmdir ${fm('rmdirAsync')} − fs.rmdirSync ${fm('rmdirSync')} = ` +
            `${fmtTime(floorMedians.rmdirAsync - floorMedians.rmdirSync)}`,
        ],
      },
    ],
    targets,
    charts: [chart],
    summary,
    samples: s,
    config: { N, WARMUP, SRC_DIRS, SRC_FILES, RAW_FACTOR, FLOOR_FACTOR },
  }
}
