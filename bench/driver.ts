/**
 * Section `driver`: the graph driver's `create` (a snapshot of a parent layer holding files)
 * and `remove` through the TS API, against the same operations with the `btrfs` command line
 * (`btrfs subvolume snapshot` / `btrfs subvolume delete`), the raw ioctl from Rust, and the
 * TS API's plain `snapshot()` / `deleteSubvolume()` (what the driver adds on top of them).
 * Implementations alternate operation by operation with a rotating order, as in `subvolume`.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import { deleteSubvolume, snapshot, sync, type BtrfsDriver } from '../ts/index'
import {
  envInt,
  fmtRatio,
  fmtTime,
  log,
  median,
  nativeBench,
  now,
  quantile,
  rotate,
  settle,
  since,
  type Chart,
  type Fs,
  type SectionResult,
} from './lib'
import { cliOp, NativeServer, SRC_DIRS, SRC_FILES, TARGET_TS_RAW } from './subvolume'

const N = envInt('BTRFS_LAYERS_BENCH_DRIVER_N', 100)
const WARMUP = envInt('BTRFS_LAYERS_BENCH_WARMUP', 5)

type Impl = 'driver' | 'ts' | 'cli' | 'raw'
const IMPLS: Impl[] = ['driver', 'ts', 'cli', 'raw']
const IMPL_LABEL: Record<Impl, string> = {
  driver: 'driver (TS API)',
  ts: 'snapshot()/deleteSubvolume() (TS API)',
  cli: 'btrfs CLI',
  raw: 'raw ioctl (Rust)',
}
type Op = 'create' | 'remove'

type DriverSummary = Record<Op, { driverMedianNs: number; tsPrimitiveMedianNs: number; cliMedianNs: number; rawMedianNs: number }>

/** The section's chart, from its JSON summary (also used by bench/render-charts.ts). */
export function driverCharts(s: DriverSummary): Chart[] {
  const key: Record<Impl, keyof DriverSummary[Op]> = {
    driver: 'driverMedianNs',
    ts: 'tsPrimitiveMedianNs',
    cli: 'cliMedianNs',
    raw: 'rawMedianNs',
  }
  return [
    {
      file: 'driver.svg',
      title: 'Driver create/remove: median latency',
      unit: 'ns',
      axis: 'median time per operation',
      groups: (['create', 'remove'] as Op[]).map((op) => ({
        label: op === 'create' ? 'create (snapshot of parent)' : 'remove',
        bars: IMPLS.map((impl) => ({ impl: IMPL_LABEL[impl], value: s[op][key[impl]] })),
      })),
    },
  ]
}

export async function sectionDriver(f: Fs, driver: BtrfsDriver): Promise<SectionResult> {
  log(`driver: create (snapshot of a parent layer) and remove, ${N} samples x ${IMPLS.length} implementations`)
  await driver.create('parent')
  const parentPath = await driver.get('parent')
  await driver.put('parent')
  nativeBench(['populate', parentPath, String(SRC_DIRS), String(SRC_FILES)])
  const dir = path.join(f.work, 'driver-ops')
  fs.mkdirSync(dir)
  await settle(f)
  const samples: Record<Op, Record<Impl, number[]>> = {
    create: { driver: [], ts: [], cli: [], raw: [] },
    remove: { driver: [], ts: [], cli: [], raw: [] },
  }
  const srv = new NativeServer()
  try {
    for (let r = -WARMUP; r < N; r++) {
      const order = rotate(IMPLS, r)
      const name = (impl: Impl): string => `${impl}-${r}`
      const doOp = async (op: Op, impl: Impl): Promise<number> => {
        const p = path.join(dir, name(impl))
        let t: bigint
        switch (impl) {
          case 'driver':
            t = now()
            if (op === 'create') await driver.create(name(impl), 'parent')
            else await driver.remove(name(impl))
            return since(t)
          case 'ts':
            t = now()
            if (op === 'create') await snapshot(parentPath, p)
            else await deleteSubvolume(p)
            return since(t)
          case 'cli':
            return cliOp(op === 'create' ? ['subvolume', 'snapshot', parentPath, p] : ['subvolume', 'delete', p])
          case 'raw':
            return (await srv.op('raw', op === 'create' ? 'snapshot' : 'delete', dir, name(impl), op === 'create' ? parentPath : undefined))
              .ns[0]
        }
      }
      for (const impl of order) {
        const ns = await doOp('create', impl)
        if (r >= 0) samples.create[impl].push(ns)
      }
      // Every remove finds the same, committed state.
      await sync(f.root)
      for (const impl of rotate(order, 1)) {
        const ns = await doOp('remove', impl)
        if (r >= 0) samples.remove[impl].push(ns)
      }
      await settle(f)
      if (r >= 0 && (r + 1) % Math.max(1, Math.round(N / 5)) === 0) log(`  ${r + 1}/${N} rounds`)
    }
  } finally {
    srv.close()
  }
  if (fs.readdirSync(dir).length) throw new Error(`${dir} not empty after the driver section`)
  fs.rmdirSync(dir)
  await driver.remove('parent')
  await settle(f)

  const rows: string[][] = []
  const targets: SectionResult['targets'] = []
  const summary: Record<string, unknown> = {}
  for (const op of ['create', 'remove'] as Op[]) {
    const m = (impl: Impl): number => median(samples[op][impl])
    const [d, ts, cli, raw] = [m('driver'), m('ts'), m('cli'), m('raw')]
    rows.push([
      op === 'create' ? 'create (snapshot of parent)' : 'remove',
      fmtTime(d),
      fmtTime(ts),
      fmtTime(cli),
      fmtTime(raw),
      fmtRatio(cli / d),
      fmtRatio(d / raw),
      `${fmtTime(quantile(samples[op].driver, 0.1))} / ${fmtTime(quantile(samples[op].driver, 0.9))}`,
    ])
    targets.push({
      section: 'driver',
      what: `driver ${op}: btrfs CLI / driver`,
      measured: `${fmtRatio(cli / d)} (${fmtTime(cli)} vs ${fmtTime(d)})`,
      target: '≥ 1x (faster than the CLI)',
      pass: cli / d >= 1,
    })
    targets.push({
      section: 'driver',
      what: `driver ${op}: driver / raw ioctl`,
      measured: `${fmtRatio(d / raw)} (${fmtTime(d)} vs ${fmtTime(raw)})`,
      target: `≤ ${TARGET_TS_RAW}x (target: the TS API within ${TARGET_TS_RAW}x of the raw ioctl)`,
      pass: d / raw <= TARGET_TS_RAW,
    })
    summary[op] = {
      driverMedianNs: d,
      tsPrimitiveMedianNs: ts,
      cliMedianNs: cli,
      rawMedianNs: raw,
      cliOverDriver: cli / d,
      driverOverRaw: d / raw,
      driverOverTsPrimitive: d / ts,
    }
  }
  const [chart] = driverCharts(summary as unknown as DriverSummary)
  return {
    key: 'driver',
    title: 'Graph driver create/remove vs btrfs CLI vs raw ioctl',
    blocks: [
      {
        kind: 'p',
        text:
          `Medians of ${N} samples per implementation (${WARMUP} warm-up rounds), alternating implementations ` +
          `operation by operation. The parent layer holds ${SRC_DIRS} directories and ${SRC_FILES} files. ` +
          '"driver" is `driver.create(id, parent)` / `driver.remove(id)` (snapshot under a temporary name, ' +
          'metadata written and fsynced, rename into place; remove: rename away, metadata, delete). ' +
          '"snapshot()/deleteSubvolume()" is the TS API\'s plain subvolume calls on the same paths, "btrfs CLI" ' +
          'is `btrfs subvolume snapshot` / `btrfs subvolume delete` spawned from Node, "raw ioctl" is ' +
          'SNAP_CREATE_V2 / SNAP_DESTROY from Rust (bench/native, timed there). The removes run after a commit; ' +
          'the cleaner finishes between rounds.',
      },
      {
        kind: 'table',
        head: ['operation', 'driver', 'snapshot()/deleteSubvolume()', 'btrfs CLI', 'raw ioctl', 'CLI/driver', 'driver/raw', 'driver p10 / p90'],
        rows,
      },
      { kind: 'chart', file: chart.file, title: chart.title },
    ],
    targets,
    charts: [chart],
    summary,
    samples,
    config: { N, WARMUP, SRC_DIRS, SRC_FILES },
  }
}
