/**
 * `npm run bench`: btrfs-layers against the raw ioctl, the btrfs command line, GNU tar, GNU
 * chown and walk-the-tree implementations, side by side, in one run on one filesystem.
 *
 * Sections (all by default; pick some with BTRFS_LAYERS_BENCH_ONLY=a,b,...):
 *   subvolume  create/snapshot/delete: TS API vs raw ioctl vs btrfs CLI (bench/subvolume.ts)
 *   rdelete    recursive delete vs a moby-style walk-delete (bench/rdelete.ts)
 *   driver     driver create (snapshot of a parent layer)/remove vs btrfs CLI vs raw ioctl (bench/driver.ts)
 *   hotpath    driver create (empty), create (child), remove vs raw ioctl + Node's async floor,
 *              against DESIGN's target 1.15x raw + 1.25x floor (bench/hotpath.ts)
 *   changes    changes of 100,000 files / 10 changed: send fast path vs tree walks (bench/changes.ts)
 *   tar        applyDiff and diff of ~500 MB vs GNU tar, peak RSS (bench/tar.ts)
 *   remap      remap of 100,000 files vs GNU chown -R vs a single-threaded remap (bench/remap.ts)
 *   replication  send+receive of 100,000 files / 10 changed, incremental and full, vs btrfs send |
 *              btrfs receive and diff | applyDiff; our receive vs btrfs receive (bench/replication.ts)
 *   images     ImageStore.pull of a ~100 MB 5-layer image from a local registry vs crane export | tar -x
 *              (with and without sync -f) and crane pull + applyLayer; re-pull; peak RSS (bench/images.ts)
 *
 * Writes bench/results/latest.md (the tables), latest.json (raw numbers) and one SVG bar chart
 * per section, and prints the tables (`node --import tsx bench/render-charts.ts` redraws the charts
 * from latest.json alone). Needs root (ioctls, mount). Without BTRFS_LAYERS_BENCH_DIR
 * it makes its own sparse image, loop-mounts it and always tears it down. Not a test: without
 * root it says so and exits 0.
 *
 * Environment:
 *   BTRFS_LAYERS_BENCH_ONLY        comma-separated sections to run (default: all)
 *   BTRFS_LAYERS_BENCH_SCALE       multiplies file counts and data sizes (e.g. 0.02 for a quick check)
 *   BTRFS_LAYERS_BENCH_OUT         results directory (default bench/results)
 *   BTRFS_LAYERS_BENCH_DIR         an existing btrfs directory to work in (else a loop image)
 *   BTRFS_LAYERS_BENCH_IMAGE_SIZE  loop image size in bytes (default 12 GiB, sparse)
 *   BTRFS_LAYERS_BENCH_N           subvolume: create/delete samples per implementation (200)
 *   BTRFS_LAYERS_BENCH_SNAP_N      subvolume: snapshot samples per implementation and kind (100)
 *   BTRFS_LAYERS_BENCH_WARMUP      subvolume, driver, hotpath: unrecorded warm-up rounds (5)
 *   BTRFS_LAYERS_BENCH_REPS        rdelete: repetitions per implementation (5)
 *   BTRFS_LAYERS_BENCH_DIRS        rdelete: directories in the tree (2000)
 *   BTRFS_LAYERS_BENCH_FILES       rdelete: files in the tree (20000; 10x too)
 *   BTRFS_LAYERS_BENCH_DRIVER_N    driver: samples per implementation (100)
 *   BTRFS_LAYERS_BENCH_HOTPATH_N   hotpath: rounds, one sample of each operation and implementation (300)
 *   BTRFS_LAYERS_BENCH_CHANGES_FILES, _CHANGES_REPS   changes: files (100000), repetitions (7)
 *   BTRFS_LAYERS_BENCH_TAR_FILES, _TAR_LARGE_BYTES, _TAR_REPS   tar: files (2000), size of each
 *                                  of the 4 large files (50 MiB), repetitions (7)
 *   BTRFS_LAYERS_BENCH_REMAP_FILES, _REMAP_REPS       remap: files (100000), repetitions (5)
 *   BTRFS_LAYERS_BENCH_REPLICATION_FILES, _REPLICATION_REPS   replication: files (100000), rounds (5)
 *   BTRFS_LAYERS_BENCH_IMAGES_BYTES, _IMAGES_REPS     images: uncompressed bytes of the image (100 MB;
 *                                  a second image twice that size too), rounds (7). Needs registry and
 *                                  crane (bash scripts/test-tools.sh; BTRFS_LAYERS_TOOLS_BIN)
 *   BTRFS_LAYERS_BENCH_IMAGES_CONCURRENCY  images: the pull's concurrency option (unset: its default)
 */
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { BtrfsDriver, createSubvolume, deleteSubvolume } from '../ts/index'
import { sectionChanges } from './changes'
import { sectionDriver } from './driver'
import { sectionHotpath } from './hotpath'
import { sectionImages } from './images'
import {
  BIN,
  SCALE,
  envInt,
  fmtTime,
  loadAverage,
  log,
  now,
  run,
  setupFs,
  since,
  which,
  type Block,
  type Fs,
  type SectionResult,
  type Target,
} from './lib'
import { sectionRdelete } from './rdelete'
import { sectionRemap } from './remap'
import { sectionReplication } from './replication'
import { sectionSubvolume } from './subvolume'
import { renderChart } from './svg'
import { sectionTar } from './tar'

const SECTIONS = ['subvolume', 'rdelete', 'driver', 'hotpath', 'changes', 'tar', 'remap', 'replication', 'images'] as const
type Section = (typeof SECTIONS)[number]
const IMAGE_SIZE = envInt('BTRFS_LAYERS_BENCH_IMAGE_SIZE', 12 * 1024 ** 3)
const OUT = path.resolve(process.env.BTRFS_LAYERS_BENCH_OUT || path.join(__dirname, 'results'))

function selected(): Section[] {
  const v = process.env.BTRFS_LAYERS_BENCH_ONLY
  if (!v) return [...SECTIONS]
  const want = v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
  for (const w of want) {
    if (!(SECTIONS as readonly string[]).includes(w)) throw new Error(`BTRFS_LAYERS_BENCH_ONLY: unknown section '${w}' (sections: ${SECTIONS.join(', ')})`)
  }
  return SECTIONS.filter((s) => want.includes(s))
}

// ---------------------------------------------------------------------------------------------
// report

/** A text table; the first `left` columns left-aligned, the rest right-aligned. */
function plainTable(h: string[], rs: string[][], left = 1): string {
  const w = h.map((c, i) => Math.max(c.length, ...rs.map((r) => r[i].length)))
  const line = (r: string[]): string => r.map((c, i) => (i < left ? c.padEnd(w[i]) : c.padStart(w[i]))).join(' | ')
  return [line(h), w.map((x) => '-'.repeat(x)).join('-+-'), ...rs.map(line)].join('\n')
}

const mdCell = (s: string): string => s.replace(/\|/g, '\\|')

function mdTable(h: string[], rs: string[][], left = 1): string {
  return [
    `| ${h.map(mdCell).join(' | ')} |`,
    `|${h.map((_, i) => (i < left ? ' --- ' : ' ---: ')).join('|')}|`,
    ...rs.map((r) => `| ${r.map(mdCell).join(' | ')} |`),
  ].join('\n')
}

function targetRows(ts: Target[]): string[][] {
  return ts.map((t) => [t.section, t.what, t.measured, t.target, t.pass ? 'PASS' : 'MISS'])
}
const TARGET_HEAD = ['section', 'what', 'measured', 'target', 'result']

function renderBlocks(blocks: Block[], md: boolean): string[] {
  const out: string[] = []
  for (const b of blocks) {
    switch (b.kind) {
      case 'p':
        if (md) out.push(b.text, '')
        break
      case 'table':
        out.push(md ? mdTable(b.head, b.rows) : plainTable(b.head, b.rows), '')
        break
      case 'list':
        out.push(...b.items.map((i) => (md ? `- ${i}` : i)), '')
        break
      case 'chart':
        if (md) out.push(`![${b.title}](${b.file})`, '')
        break
    }
  }
  return out
}

interface RunInfo {
  env: Record<string, string>
  sections: Section[]
  wallNs: number
  loadStart: string
  loadEnd: string
}

function report(results: SectionResult[], info: RunInfo): { text: string; markdown: string } {
  const targets = results.flatMap((r) => r.targets)
  const passed = targets.filter((t) => t.pass).length
  const scaleNote = SCALE === 1 ? '' : ` File counts and data sizes scaled by ${SCALE} (BTRFS_LAYERS_BENCH_SCALE): not the full sizes the targets are stated for.`
  const header =
    `Sections: ${info.sections.join(', ')}. Wall time ${fmtTime(info.wallNs)}; load average (1, 5, 15 min) ` +
    `${info.loadStart} at the start, ${info.loadEnd} at the end.${scaleNote} All measurements warm: every ` +
    'implementation runs unrecorded first, caches are not dropped.'
  const text = [
    `btrfs-layers benchmark (${info.env.date})`,
    header,
    '',
    `targets: ${passed} of ${targets.length} PASS`,
    plainTable(TARGET_HEAD, targetRows(targets), 5),
    '',
    ...results.flatMap((r) => [`== ${r.title} (${fmtTime(r.ns ?? NaN)})`, '', ...renderBlocks(r.blocks, false)]),
  ].join('\n')
  const markdown = [
    '# btrfs-layers benchmark results',
    '',
    `Generated by \`npm run bench\` (bench/index.ts) on ${info.env.date}. ${header}`,
    '',
    `## Targets: ${passed} of ${targets.length} PASS`,
    '',
    mdTable(TARGET_HEAD, targetRows(targets), 5),
    '',
    ...results.flatMap((r) => [`## ${r.title}`, '', `Section \`${r.key}\`, ${fmtTime(r.ns ?? NaN)}.`, '', ...renderBlocks(r.blocks, true)]),
    '## Environment',
    '',
    ...Object.entries(info.env).map(([k, v]) => `- ${k}: ${v}`),
    '',
  ].join('\n')
  return { text, markdown }
}

function environment(f: Fs): Record<string, string> {
  const tryRun = (cmd: string, args: string[]): string => {
    try {
      return run(cmd, args).trim().split('\n')[0]
    } catch {
      return 'unknown'
    }
  }
  return {
    date: new Date().toISOString(),
    kernel: `${os.type()} ${os.release()}`,
    cpus: `${os.cpus().length} x ${os.cpus()[0]?.model ?? 'unknown'}`,
    memory: `${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB`,
    node: process.version,
    'btrfs-progs': tryRun('btrfs', ['--version']),
    tar: tryRun('tar', ['--version']),
    chown: tryRun('chown', ['--version']),
    filesystem: f.description,
  }
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  if (process.platform !== 'linux') {
    console.log('btrfs-layers bench: btrfs is Linux-only; nothing to measure here.')
    return
  }
  if (process.getuid?.() !== 0) {
    console.log('btrfs-layers bench: needs root (btrfs ioctls, loop mount); skipped. Run it as root: sudo npm run bench')
    return
  }
  const sections = selected()
  if (!fs.existsSync(BIN)) throw new Error(`${BIN} is missing: cargo build --release -p btrfs-layers-bench`)
  for (const tool of ['btrfs', 'tar', 'chown']) if (!which(tool)) throw new Error(`${tool} is needed for the comparisons`)
  if ((sections.includes('tar') || sections.includes('images')) && !fs.existsSync(path.join(__dirname, '..', 'dist', 'index.js'))) {
    throw new Error('dist/index.js is missing (the tar and images sections run it in a child process): npm run build')
  }

  const started = now()
  const loadStart = loadAverage()
  const f = setupFs(IMAGE_SIZE)
  let driver: BtrfsDriver | undefined
  const home = path.join(f.work, 'store')
  let cleaned = false
  const cleanup = (): void => {
    if (cleaned) return
    cleaned = true
    // The driver's private bind mount of its home would keep the filesystem busy.
    if (driver) spawnSync('umount', [home], { stdio: 'ignore' })
    f.teardown()
  }
  const onSignal = (sig: NodeJS.Signals): void => {
    log(`\n${sig}: tearing down`)
    cleanup()
    process.exit(130)
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    await createSubvolume(f.work)
    try {
      log(`btrfs-layers bench on ${f.description}; sections ${sections.join(', ')}; load average ${loadStart}`)
      const env = environment(f)
      const getDriver = async (): Promise<BtrfsDriver> => (driver ??= await BtrfsDriver.init(home))
      const results: SectionResult[] = []
      for (const s of sections) {
        const t = now()
        let r: SectionResult
        switch (s) {
          case 'subvolume':
            r = await sectionSubvolume(f)
            break
          case 'rdelete':
            r = await sectionRdelete(f)
            break
          case 'driver':
            r = await sectionDriver(f, await getDriver())
            break
          case 'hotpath':
            r = await sectionHotpath(f, await getDriver())
            break
          case 'changes':
            r = await sectionChanges(f, await getDriver())
            break
          case 'tar':
            r = await sectionTar(f, await getDriver())
            break
          case 'remap':
            r = await sectionRemap(f)
            break
          case 'replication':
            r = await sectionReplication(f, await getDriver())
            break
          case 'images':
            r = await sectionImages(f, await getDriver())
            break
        }
        r.ns = since(t)
        log(`  ${s}: ${fmtTime(r.ns)} (load average ${loadAverage()})`)
        results.push(r)
      }
      if (driver) {
        await driver.cleanup()
        driver = undefined
        await deleteSubvolume(home, { recursive: true })
      }
      const info: RunInfo = { env, sections, wallNs: since(started), loadStart, loadEnd: loadAverage() }
      const { text, markdown } = report(results, info)
      console.log(`\n${text}`)
      fs.mkdirSync(OUT, { recursive: true })
      for (const r of results) for (const c of r.charts) fs.writeFileSync(path.join(OUT, c.file), renderChart(c))
      const json = {
        run: { ...info, scale: SCALE },
        targets: results.flatMap((r) => r.targets),
        sections: Object.fromEntries(results.map((r) => [r.key, { title: r.title, ns: r.ns, config: r.config, summary: r.summary, samples: r.samples }])),
      }
      fs.writeFileSync(path.join(OUT, 'latest.json'), `${JSON.stringify(json, null, 1)}\n`)
      fs.writeFileSync(path.join(OUT, 'latest.md'), markdown)
      log(`wrote ${path.relative(process.cwd(), OUT) || '.'}/latest.md, latest.json and ${results.flatMap((r) => r.charts).length} SVG charts (${fmtTime(since(started))} in all)`)
    } finally {
      if (driver) await driver.cleanup().catch((e: unknown) => log(`cleanup: ${String(e)}`))
      driver = undefined
      await deleteSubvolume(f.work, { recursive: true }).catch((e: unknown) => log(`cleanup: ${String(e)}`))
    }
  } finally {
    cleanup()
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : e)
  process.exitCode = 1
})
