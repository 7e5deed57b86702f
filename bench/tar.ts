/**
 * Section `tar`: applyDiff and diff against GNU tar on the same ~500 MB of data.
 *
 * A tree of 2,000 files of log-uniform random sizes from 1 KiB to 1 MiB plus 4 files of
 * 50 MiB, incompressible content, is made once and archived once with GNU tar (`tar -cf`).
 * - apply: `driver.applyDiff(id, null, tarPath)` (the native side reads the file) and
 *   `applyDiff` from `fs.createReadStream(tarPath)` (the streaming path through Node), each
 *   into a fresh empty layer, against `tar -xf` of the same file into a fresh empty subvolume,
 *   and against `tar -xf` followed by `sync -f <dir>` (syncfs: the written data on disk, as the
 *   driver does before it publishes an applied layer), timed as a whole and the syncfs alone.
 *   The writeback of the written data (sync of the filesystem right after) is timed too.
 * - memory: the rss of this process sampled every 20 ms during every applyDiff; and a child
 *   Node process that does only one applyDiff (bench/apply-rss.cjs) reports its VmHWM.
 * - diff: `driver.diff(id, null, { compression: 'none' })` of the applied layer (whole layer)
 *   piped to a file on tmpfs, against `tar -cf` of the same tree to a file on the same tmpfs.
 * All runs warm: each implementation runs once unrecorded first; the page cache holds the tar.
 */
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { pipeline } from 'node:stream/promises'
import { createSubvolume, deleteSubvolume, sync, type BtrfsDriver } from '../ts/index'
import {
  ROOT,
  envInt,
  fmtBytes,
  fmtCount,
  fmtRate,
  fmtRatio,
  fmtTime,
  log,
  median,
  nativeBench,
  now,
  rotate,
  scaled,
  settle,
  since,
  timed,
  type Chart,
  type Fs,
  type SectionResult,
} from './lib'

const FILES = envInt('BTRFS_LAYERS_BENCH_TAR_FILES', scaled(2000, 20))
const LARGE = 4
const LARGE_BYTES = envInt('BTRFS_LAYERS_BENCH_TAR_LARGE_BYTES', scaled(50 * 1024 * 1024, 1024 * 1024))
const MIN_BYTES = 1024
const MAX_BYTES = 1024 * 1024
const REPS = envInt('BTRFS_LAYERS_BENCH_TAR_REPS', 7)
const RSS_LIMIT = 150 * 1024 * 1024

type ApplyImpl = 'path' | 'stream' | 'tar' | 'tarSyncfs'
const APPLY_IMPLS: ApplyImpl[] = ['path', 'stream', 'tar', 'tarSyncfs']
const APPLY_LABEL: Record<ApplyImpl, string> = {
  path: 'applyDiff(file path)',
  stream: 'applyDiff(fs.createReadStream)',
  tar: 'tar -x (GNU tar)',
  tarSyncfs: 'tar -x + sync -f (syncfs)',
}
type DiffImpl = 'diff' | 'tar'
const DIFF_IMPLS: DiffImpl[] = ['diff', 'tar']
const DIFF_LABEL: Record<DiffImpl, string> = {
  diff: "diff(compression: 'none')",
  tar: 'tar -c (GNU tar)',
}

/** The largest rss of this process seen every 20 ms until `stop()`. */
function rssSampler(): { stop: () => { base: number; peak: number } } {
  const base = process.memoryUsage.rss()
  let peak = base
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss())
  }, 20)
  return {
    stop: () => {
      clearInterval(timer)
      peak = Math.max(peak, process.memoryUsage.rss())
      return { base, peak }
    },
  }
}

/** Regular files, directories and bytes of a tree. */
function treeStats(root: string): { files: number; dirs: number; bytes: number } {
  const s = { files: 0, dirs: 0, bytes: 0 }
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name)
      if (e.isDirectory()) {
        s.dirs++
        walk(p)
      } else if (e.isFile()) {
        s.files++
        s.bytes += fs.lstatSync(p).size
      }
    }
  }
  walk(root)
  return s
}

interface ChildReport {
  mode: string
  before: { hwmKiB: number; rssKiB: number }
  after: { hwmKiB: number; rssKiB: number }
  sampledPeakRss: number
  bytes: number
  ns: number
}

interface TarSummary {
  tarBytes: number
  applyMedianNs: Record<ApplyImpl, number>
  writebackMedianNs: Record<ApplyImpl, number>
  diffMedianNs: Record<DiffImpl, number>
  childPeak: Record<'path' | 'stream', { before: { hwmKiB: number }; after: { hwmKiB: number } }>
}

/** The section's charts, from its JSON summary (also used by bench/render-charts.ts). */
export function tarCharts(s: TarSummary): Chart[] {
  return [
    {
      file: 'tar.svg',
      title: `applyDiff and diff vs GNU tar, ${fmtBytes(s.tarBytes)} tar (median)`,
      unit: 'ns',
      axis: 'median time',
      groups: [
        { label: 'apply', bars: APPLY_IMPLS.map((impl) => ({ impl: APPLY_LABEL[impl], value: s.applyMedianNs[impl] ?? NaN })) },
        {
          label: 'apply + writeback (sync)',
          bars: APPLY_IMPLS.map((impl) => ({ impl: APPLY_LABEL[impl], value: (s.applyMedianNs[impl] ?? NaN) + (s.writebackMedianNs[impl] ?? NaN) })),
        },
        { label: 'diff (tar -c) of the applied layer', bars: DIFF_IMPLS.map((impl) => ({ impl: DIFF_LABEL[impl], value: s.diffMedianNs[impl] })) },
      ],
    },
    {
      file: 'tar-memory.svg',
      title: 'Peak RSS of a Node process doing one applyDiff',
      unit: 'bytes',
      axis: 'VmHWM',
      groups: (['path', 'stream'] as const).map((impl) => ({
        label: APPLY_LABEL[impl],
        bars: [
          { impl: 'VmHWM before the call (Node baseline)', value: s.childPeak[impl].before.hwmKiB * 1024 },
          { impl: 'VmHWM after the call (peak)', value: s.childPeak[impl].after.hwmKiB * 1024 },
        ],
      })),
      limit: { value: RSS_LIMIT, label: 'limit 150 MiB' },
    },
  ]
}

export async function sectionTar(f: Fs, driver: BtrfsDriver): Promise<SectionResult> {
  const base = path.join(f.work, 'tar')
  fs.mkdirSync(base)
  const src = path.join(base, 'src')
  await createSubvolume(src)
  let t = now()
  const pop = nativeBench<{ bytes: number; files: number }>([
    'populate-mixed',
    src,
    String(FILES),
    String(MIN_BYTES),
    String(MAX_BYTES),
    String(LARGE),
    String(LARGE_BYTES),
  ])
  const tarPath = path.join(base, 'layer.tar')
  spawnSyncOk('tar', ['-C', src, '-cf', tarPath, '.'])
  const tarBytes = fs.statSync(tarPath).size
  log(`tar: ${pop.files} files, ${fmtBytes(pop.bytes)} of content, tar of ${fmtBytes(tarBytes)} made in ${fmtTime(since(t))}; ${REPS} reps`)
  const srcStats = treeStats(src)
  await deleteSubvolume(src)
  const shm = fs.existsSync('/dev/shm') && fs.statSync('/dev/shm').isDirectory() ? '/dev/shm' : base
  const outFile = path.join(shm, `btrfs-layers-bench-${process.pid}.tar`)
  await settle(f)

  // ---- apply
  const apply: Record<ApplyImpl, number[]> = { path: [], stream: [], tar: [], tarSyncfs: [] }
  const writeback: Record<ApplyImpl, number[]> = { path: [], stream: [], tar: [], tarSyncfs: [] }
  /** tarSyncfs: the `sync -f` after `tar -x` alone (included in its apply time). */
  const syncfs: number[] = []
  const mem: Record<'path' | 'stream', { base: number; peak: number }[]> = { path: [], stream: [] }
  let appliedBytes = 0
  for (let rep = -1; rep < REPS; rep++) {
    for (const impl of rotate(APPLY_IMPLS, rep + 1)) {
      const id = `apply-${impl}-${rep < 0 ? 'w' : rep}`
      let ns: number
      if (impl === 'tar' || impl === 'tarSyncfs') {
        const dst = path.join(base, id)
        await createSubvolume(dst)
        await settle(f)
        ns = timed('tar', ['-C', dst, '-xf', tarPath])
        if (impl === 'tarSyncfs') {
          const s = timed('sync', ['-f', dst])
          ns += s
          if (rep >= 0) syncfs.push(s)
        }
        t = now()
        await sync(f.root)
        if (rep >= 0) writeback[impl].push(since(t))
        await deleteSubvolume(dst)
      } else {
        await driver.create(id)
        await settle(f)
        const s = rssSampler()
        t = now()
        appliedBytes = await driver.applyDiff(id, null, impl === 'path' ? tarPath : fs.createReadStream(tarPath))
        ns = since(t)
        const m = s.stop()
        const wt = now()
        await sync(f.root)
        if (rep >= 0) {
          writeback[impl].push(since(wt))
          mem[impl].push(m)
        }
        await driver.remove(id)
      }
      if (rep >= 0) apply[impl].push(ns)
      await settle(f)
    }
    log(`  apply repetition ${rep + 1}/${REPS}${rep < 0 ? ' (warm-up)' : ''}`)
  }

  // ---- the layer to diff: one more apply, checked against the source tree
  await driver.create('tar-layer')
  await driver.applyDiff('tar-layer', null, tarPath)
  const layerPath = await driver.get('tar-layer')
  await driver.put('tar-layer')
  const layerStats = treeStats(layerPath)
  if (layerStats.files !== srcStats.files || layerStats.bytes !== srcStats.bytes || layerStats.dirs !== srcStats.dirs) {
    throw new Error(`applied layer ${JSON.stringify(layerStats)} differs from the source tree ${JSON.stringify(srcStats)}`)
  }
  await settle(f)

  // ---- diff
  const diff: Record<DiffImpl, number[]> = { diff: [], tar: [] }
  const diffMem: { base: number; peak: number }[] = []
  const outBytes: Record<DiffImpl, number> = { diff: 0, tar: 0 }
  for (let rep = -1; rep < REPS; rep++) {
    for (const impl of rotate(DIFF_IMPLS, rep + 1)) {
      let ns: number
      if (impl === 'tar') {
        ns = timed('tar', ['-C', layerPath, '-cf', outFile, '.'])
      } else {
        const s = rssSampler()
        t = now()
        await pipeline(await driver.diff('tar-layer', null, { compression: 'none' }), fs.createWriteStream(outFile))
        ns = since(t)
        if (rep >= 0) diffMem.push(s.stop())
        else s.stop()
      }
      outBytes[impl] = fs.statSync(outFile).size
      fs.unlinkSync(outFile)
      if (rep >= 0) diff[impl].push(ns)
    }
  }
  log(`  diff: ours ${fmtTime(median(diff.diff))}, tar -c ${fmtTime(median(diff.tar))}`)
  await driver.remove('tar-layer')
  await settle(f)

  // ---- a Node process doing one applyDiff only: its VmHWM
  const child: Partial<Record<'path' | 'stream', ChildReport>> = {}
  const rssHome = path.join(base, 'store-rss')
  for (const mode of ['path', 'stream'] as const) {
    const r = spawnSync(process.execPath, [path.join(__dirname, 'apply-rss.cjs'), rssHome, tarPath, mode], {
      encoding: 'utf8',
      cwd: ROOT,
    })
    if (r.status !== 0) throw new Error(`apply-rss.cjs ${mode}: ${r.stderr || r.error?.message}`)
    child[mode] = JSON.parse(r.stdout) as ChildReport
    await settle(f)
  }
  if (fs.existsSync(rssHome)) await deleteSubvolume(rssHome, { recursive: true })
  fs.unlinkSync(tarPath)
  fs.rmdirSync(base)
  await settle(f)

  // ---- report
  const ma = (impl: ApplyImpl): number => median(apply[impl])
  const mw = (impl: ApplyImpl): number => median(writeback[impl])
  const md = (impl: DiffImpl): number => median(diff[impl])
  const targets: SectionResult['targets'] = []
  // applyDiff writes the layer's data back before it publishes the layer (a power cut must not
  // leave it with its names but empty files); tar -x leaves the data in the page cache. The
  // like-for-like baseline is tar -x followed by the same write-back; the plain tar -x ratio
  // stays in the table.
  for (const impl of ['path', 'stream'] as const) {
    targets.push({
      section: 'tar',
      what: `${APPLY_LABEL[impl]} (its data written back): (tar -x + sync -f) / applyDiff`,
      measured: `${fmtRatio(ma('tarSyncfs') / ma(impl))} (${fmtTime(ma(impl))} vs ${fmtTime(ma('tarSyncfs'))}; plain tar -x ${fmtTime(ma('tar'))})`,
      target: '≥ 1x (at least as fast as tar -x with its data written back)',
      pass: ma('tarSyncfs') / ma(impl) >= 1,
    })
  }
  for (const impl of ['path', 'stream'] as const) {
    const c = child[impl]!
    targets.push({
      section: 'tar',
      what: `${APPLY_LABEL[impl]}: peak RSS (VmHWM) of a Node process doing only the apply`,
      measured: `${fmtBytes(c.after.hwmKiB * 1024)} (before the call: ${fmtBytes(c.before.hwmKiB * 1024)})`,
      target: `< ${fmtBytes(RSS_LIMIT)}`,
      pass: c.after.hwmKiB * 1024 < RSS_LIMIT,
    })
  }
  targets.push({
    section: 'tar',
    what: "diff(compression: 'none'): tar -c / diff",
    measured: `${fmtRatio(md('tar') / md('diff'))} (${fmtTime(md('diff'))} vs ${fmtTime(md('tar'))})`,
    target: '≥ 1x (at least as fast as tar -c)',
    pass: md('tar') / md('diff') >= 1,
  })
  const maxPeak = (xs: { peak: number }[]): number => Math.max(...xs.map((x) => x.peak))
  const maxGrowth = (xs: { base: number; peak: number }[]): number => Math.max(...xs.map((x) => x.peak - x.base))
  const applyRows = APPLY_IMPLS.map((impl) => [
    APPLY_LABEL[impl],
    fmtTime(ma(impl)),
    fmtRate(tarBytes, ma(impl)),
    fmtRatio(ma('tar') / ma(impl)),
    fmtRatio(ma('tarSyncfs') / ma(impl)),
    fmtTime(mw(impl)),
    fmtTime(ma(impl) + mw(impl)),
    impl === 'tar' || impl === 'tarSyncfs' ? 'n/a' : `${fmtBytes(maxPeak(mem[impl]))} (+${fmtBytes(maxGrowth(mem[impl]))})`,
  ])
  // The write-back's share of `tar -x` + `sync -f`, per repetition.
  const syncfsShare = median(syncfs.map((x, i) => x / apply.tarSyncfs[i]))
  const tarPartOfSyncfs = median(syncfs.map((x, i) => apply.tarSyncfs[i] - x))
  const syncfsLine =
    `tar -x + sync -f: tar -x ${fmtTime(tarPartOfSyncfs)}, then sync -f (syncfs: the write-back) ` +
    `${fmtTime(median(syncfs))}, ${(syncfsShare * 100).toFixed(0)}% of the whole (medians; the plain tar -x row above: ` +
    `${fmtTime(ma('tar'))}). The cost of writing a layer's data back before it is published.`
  const memRows = (['path', 'stream'] as const).map((impl) => {
    const c = child[impl]!
    return [
      APPLY_LABEL[impl],
      fmtBytes(c.before.hwmKiB * 1024),
      fmtBytes(c.after.hwmKiB * 1024),
      fmtBytes(c.sampledPeakRss),
      fmtTime(c.ns),
      `< ${fmtBytes(RSS_LIMIT)} ${c.after.hwmKiB * 1024 < RSS_LIMIT ? 'PASS' : 'MISS'}`,
    ]
  })
  const diffRows = DIFF_IMPLS.map((impl) => [
    DIFF_LABEL[impl],
    fmtTime(md(impl)),
    fmtRate(outBytes[impl], md(impl)),
    fmtBytes(outBytes[impl]),
    fmtRatio(md('tar') / md(impl)),
    impl === 'diff' ? `${fmtBytes(maxPeak(diffMem))} (+${fmtBytes(maxGrowth(diffMem))})` : 'n/a',
  ])
  const summary = {
    files: pop.files,
    contentBytes: pop.bytes,
    tarBytes,
    appliedBytes,
    applyMedianNs: { path: ma('path'), stream: ma('stream'), tar: ma('tar'), tarSyncfs: ma('tarSyncfs') },
    writebackMedianNs: { path: mw('path'), stream: mw('stream'), tar: mw('tar'), tarSyncfs: mw('tarSyncfs') },
    tarOverApply: { path: ma('tar') / ma('path'), stream: ma('tar') / ma('stream') },
    tarSyncfsOverApply: { path: ma('tarSyncfs') / ma('path'), stream: ma('tarSyncfs') / ma('stream') },
    /** tar -x + sync -f: the sync -f alone, and its share of the whole (median of per-repetition shares). */
    syncfsAfterTarMedianNs: median(syncfs),
    syncfsShareOfTarSyncfs: syncfsShare,
    diffMedianNs: { diff: md('diff'), tar: md('tar') },
    tarOverDiff: md('tar') / md('diff'),
    diffOutputBytes: outBytes,
    childPeak: child as Record<'path' | 'stream', ChildReport>,
    benchProcessRss: { apply: mem, diff: diffMem },
  }
  const [timeChart, memChart] = tarCharts(summary)
  return {
    key: 'tar',
    title: 'applyDiff and diff vs GNU tar',
    blocks: [
      {
        kind: 'p',
        text:
          `The data: ${fmtCount(FILES)} files of log-uniform random sizes from 1 KiB to 1 MiB in 50 directories plus ` +
          `${LARGE} files of ${fmtBytes(LARGE_BYTES)}, incompressible content: ${fmtBytes(pop.bytes)} in ${fmtCount(pop.files)} ` +
          `files, one GNU tar archive of ${fmtBytes(tarBytes)} (\`tar -cf\`, made once, on the same btrfs). Each apply goes ` +
          'into a fresh empty layer (applyDiff, which applies into a temporary snapshot and swaps it in) or a fresh ' +
          'empty subvolume (`tar -C dir -xf`, as root: owners, modes and times restored). "tar -x + sync -f" is the ' +
          'same `tar -xf` followed by `sync -f <dir>` (syncfs of the filesystem: the data written back, the ' +
          'durability applyDiff is to have before it publishes a layer), timed as one: the two spawns from Node. ' +
          '"writeback after" is a sync of the filesystem right after each (syncfs + transaction commit); ' +
          '"apply + writeback" the two together. diff is ' +
          "the whole layer (no parent) with compression 'none', piped to a file on tmpfs; tar -c writes the same tree " +
          `to a file on the same tmpfs. Medians of ${REPS} repetitions, rotating order, after one unrecorded warm-up ` +
          'run of each implementation: all runs warm (the tar file and the layer are in the page cache; caches are ' +
          'not dropped). RSS in the tables is of this benchmark process (tsx loaded), sampled every 20 ms during ' +
          'the calls, with its growth over the value at the start of the call.',
      },
      {
        kind: 'table',
        head: [
          'apply',
          'median',
          'throughput',
          'tar -x / this',
          'tar -x + syncfs / this',
          'writeback after',
          'apply + writeback',
          'bench process peak RSS (growth)',
        ],
        rows: applyRows,
      },
      { kind: 'list', items: [syncfsLine] },
      {
        kind: 'p',
        text:
          'Peak memory of a Node process that does nothing but one applyDiff of the same file (bench/apply-rss.cjs, ' +
          'against dist/): VmHWM from /proc/self/status before and after the call (the "before" value is Node\'s ' +
          'own baseline), and the rss sampled every 20 ms during it.',
      },
      { kind: 'table', head: ['apply input', 'VmHWM before', 'VmHWM after', 'sampled peak RSS', 'time', 'target'], rows: memRows },
      {
        kind: 'table',
        head: ['diff (whole layer)', 'median', 'throughput', 'output', 'tar -c / this', 'bench process peak RSS (growth)'],
        rows: diffRows,
      },
      { kind: 'chart', file: timeChart.file, title: timeChart.title },
      { kind: 'chart', file: memChart.file, title: memChart.title },
    ],
    targets,
    charts: [timeChart, memChart],
    summary,
    samples: { apply, writeback, syncfs, diff },
    config: { FILES, LARGE, LARGE_BYTES, MIN_BYTES, MAX_BYTES, REPS, RSS_LIMIT },
  }
}

function spawnSyncOk(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr?.toString().trim() || r.error?.message}`)
}
