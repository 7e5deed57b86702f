/**
 * Section `rdelete`: recursive deletion of a subvolume with 2,000 directories, 20,000 files and
 * 3 nested subvolumes (one nested in another): deleteSubvolume(path, { recursive: true })
 * against a walk-every-directory deletion written in Rust (moby's btrfs graph driver
 * `subvolDelete`), the same with 10x the files, and the 20,000-file case with one nested
 * subvolume read-only.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import { createSubvolume, deleteSubvolume, snapshot } from '../ts/index'
import {
  envInt,
  fmtCount,
  fmtRatio,
  fmtTime,
  log,
  median,
  nativeBench,
  now,
  pass,
  populatedDir,
  rotate,
  scaled,
  settle,
  since,
  type Chart,
  type Fs,
  type SectionResult,
} from './lib'

const REPS = envInt('BTRFS_LAYERS_BENCH_REPS', 5)
const DIRS = envInt('BTRFS_LAYERS_BENCH_DIRS', scaled(2000, 10))
const FILES = envInt('BTRFS_LAYERS_BENCH_FILES', scaled(20000, 100))
const FILES_SCALE = 10
/** Directories and files of each nested subvolume. */
const NEST_DIRS = 10
const NEST_FILES = 100

const TARGET_WALK_SPEEDUP = 50
/** "Unchanged when files grow 10x": ours(10x files) / ours(1x files) at most this. */
const TARGET_FILE_GROWTH = 1.25

/** One case: the file count, and whether one nested subvolume is read-only. */
interface Case {
  key: string
  files: number
  readOnlyNested: boolean
}

/**
 * A copy of `tpl`: a snapshot of it plus 3 fresh nested subvolumes (snapshots of `nestTpl`):
 * `a` near the top, `c` inside `a`, and `b` deep in the tree (read-only if asked).
 */
async function makeCopy(tpl: string, nestTpl: string, dest: string, readOnlyNested: boolean): Promise<void> {
  await snapshot(tpl, dest)
  const a = path.join(dest, populatedDir(1, DIRS), 'nested-a')
  await snapshot(nestTpl, a)
  await snapshot(nestTpl, path.join(a, populatedDir(2, NEST_DIRS), 'nested-c'))
  await snapshot(nestTpl, path.join(dest, populatedDir(DIRS - 1, DIRS), 'nested-b'), { readOnly: readOnlyNested })
}

type DelImpl = 'ours' | 'walk'
interface WalkReport {
  ns: number
  dirs: number
  entries: number
  lstats: number
  nested: number
  cleared_read_only: number
}
interface CaseResult extends Case {
  ours: number[]
  walk: number[]
  walkReport?: WalkReport
}

async function measureRecursive(f: Fs): Promise<CaseResult[]> {
  const base = path.join(f.work, 'rdel')
  fs.mkdirSync(base)
  const nestTpl = path.join(base, 'nest-template')
  await createSubvolume(nestTpl)
  nativeBench(['populate', nestTpl, String(NEST_DIRS), String(NEST_FILES)])
  const cases: Case[] = [
    { key: 'files', files: FILES, readOnlyNested: false },
    { key: 'files10x', files: FILES * FILES_SCALE, readOnlyNested: false },
    { key: 'filesReadOnlyNested', files: FILES, readOnlyNested: true },
  ]
  const templates = new Map<number, string>()
  for (const files of new Set(cases.map((c) => c.files))) {
    const tpl = path.join(base, `template-${files}`)
    await createSubvolume(tpl)
    const t = now()
    nativeBench(['populate', tpl, String(DIRS), String(files)])
    log(`  populated ${DIRS} dirs, ${files} files in ${fmtTime(since(t))}`)
    templates.set(files, tpl)
  }
  await settle(f)
  const out: CaseResult[] = cases.map((c) => ({ ...c, ours: [], walk: [] }))
  // Every repetition runs every case and both implementations, in a rotating order.
  for (let rep = -1; rep < REPS; rep++) {
    for (const res of rotate(out, rep + 1)) {
      const order: DelImpl[] = rep % 2 === 0 ? ['ours', 'walk'] : ['walk', 'ours']
      for (const impl of order) {
        const dest = path.join(base, `copy-${res.key}-${impl}-${rep < 0 ? 'w' : rep}`)
        await makeCopy(templates.get(res.files)!, nestTpl, dest, res.readOnlyNested)
        await settle(f)
        let ns: number
        if (impl === 'ours') {
          const t0 = now()
          await deleteSubvolume(dest, { recursive: true })
          ns = since(t0)
        } else {
          const r = nativeBench<WalkReport>(['walk-delete', dest])
          if (r.nested !== 3) throw new Error(`walk-delete found ${r.nested} nested subvolumes, expected 3`)
          ns = r.ns
          res.walkReport = r
        }
        if (fs.existsSync(dest)) throw new Error(`${dest} still exists after ${impl} delete`)
        if (rep >= 0) res[impl].push(ns)
        await settle(f)
      }
    }
    if (rep >= 0) log(`  repetition ${rep + 1}/${REPS}`)
  }
  for (const res of out) log(`  ${caseLabel(res)}: ours ${fmtTime(median(res.ours))}, walk ${fmtTime(median(res.walk))}`)
  for (const tpl of templates.values()) await deleteSubvolume(tpl)
  await deleteSubvolume(nestTpl)
  await settle(f)
  fs.rmdirSync(base)
  return out
}

function caseLabel(c: Case): string {
  return `${fmtCount(DIRS)} dirs, ${fmtCount(c.files)} files, 3 nested` + (c.readOnlyNested ? ' (1 read-only; extra case)' : '')
}

interface RdeleteSummary {
  cases: { files: number; readOnlyNested: boolean; oursMedianNs: number; walkMedianNs: number }[]
}

/** The section's chart, from its JSON summary (also used by bench/render-charts.ts). */
export function rdeleteCharts(s: RdeleteSummary): Chart[] {
  return [
    {
      file: 'rdelete.svg',
      title: 'Recursive delete: median time',
      unit: 'ns',
      axis: 'median time per delete',
      groups: s.cases.map((r) => ({
        label: `${fmtCount(r.files)} files${r.readOnlyNested ? ', 1 nested read-only' : ''}`,
        bars: [
          { impl: 'ours (TS, recursive)', value: r.oursMedianNs },
          { impl: 'walk (Rust, moby)', value: r.walkMedianNs },
        ],
      })),
    },
  ]
}

export async function sectionRdelete(f: Fs): Promise<SectionResult> {
  log(`rdelete: ${DIRS} dirs, ${FILES} and ${FILES * FILES_SCALE} files, 3 nested, ${REPS} reps`)
  const rdel = await measureRecursive(f)
  const byKey = (k: string): CaseResult => {
    const r = rdel.find((c) => c.key === k)
    if (!r) throw new Error(`recursive-delete case ${k} missing`)
    return r
  }
  const [small, big] = [byKey('files'), byKey('files10x')]
  const targets: SectionResult['targets'] = []
  const rows: string[][] = []
  for (const r of rdel) {
    const ours = median(r.ours)
    const walk = median(r.walk)
    const ok = walk / ours >= TARGET_WALK_SPEEDUP
    rows.push([caseLabel(r), fmtTime(ours), fmtTime(walk), fmtRatio(walk / ours), `≥ ${TARGET_WALK_SPEEDUP}x ${pass(ok)}`])
    if (!r.readOnlyNested) {
      targets.push({
        section: 'rdelete',
        what: `recursive delete, ${fmtCount(r.files)} files: walk / ours`,
        measured: `${fmtRatio(walk / ours)} (${fmtTime(ours)} vs ${fmtTime(walk)})`,
        target: `≥ ${TARGET_WALK_SPEEDUP}x`,
        pass: ok,
      })
    }
  }
  const growth = median(big.ours) / median(small.ours)
  const walkGrowth = median(big.walk) / median(small.walk)
  targets.push({
    section: 'rdelete',
    what: 'recursive delete: ours(10x files) / ours(1x files)',
    measured: fmtRatio(growth),
    target: `≤ ${TARGET_FILE_GROWTH}x ("constant")`,
    pass: growth <= TARGET_FILE_GROWTH,
  })
  const head = ['recursive delete', 'ours (TS, recursive)', 'walk (Rust, moby subvolDelete)', 'walk/ours', 'target']
  const growthLine =
    `ours(${fmtCount(big.files)} files) / ours(${fmtCount(small.files)} files) = ${fmtRatio(growth)} ` +
    `(walk: ${fmtRatio(walkGrowth)}); target "unchanged" (≤ ${TARGET_FILE_GROWTH}x) ${pass(growth <= TARGET_FILE_GROWTH)}`
  const summary = {
    dirs: DIRS,
    nested: 3,
    cases: rdel.map((r) => ({
      case: r.key,
      files: r.files,
      readOnlyNested: r.readOnlyNested,
      oursMedianNs: median(r.ours),
      walkMedianNs: median(r.walk),
      walkOverOurs: median(r.walk) / median(r.ours),
      pass: median(r.walk) / median(r.ours) >= TARGET_WALK_SPEEDUP,
      walkVisited: r.walkReport,
    })),
    oursGrowth10xFiles: growth,
    walkGrowth10xFiles: walkGrowth,
    growthTarget: `<= ${TARGET_FILE_GROWTH}`,
    growthPass: growth <= TARGET_FILE_GROWTH,
  }
  const [chart] = rdeleteCharts(summary)
  return {
    key: 'rdelete',
    title: 'Recursive delete: deleteSubvolume(recursive) vs a walk-the-tree delete',
    blocks: [
      {
        kind: 'p',
        text:
          `A subvolume with ${fmtCount(DIRS)} directories, the given number of small files and 3 nested subvolumes ` +
          '(one nested in another; in the last row one of them is read-only). "ours" is `deleteSubvolume(path, ' +
          '{ recursive: true })` through the TS API; "walk" is moby\'s btrfs graph driver `subvolDelete` in Rust: ' +
          'walk every directory, lstat each to find nested subvolumes, delete them deepest first, then the top ' +
          '(clearing a read-only flag only where a nested subvolume has to be removed from inside it). The ' +
          "targets (time constant in the number of files, at least 50x faster than the walk) are about the first two rows; the read-only row is an extra case. Each copy is a " +
          'snapshot of one populated template (plus fresh nested subvolumes); the cleaner thread is allowed to ' +
          `finish (\`btrfs subvolume sync\`) between runs. Medians of ${REPS} repetitions each (1 warm-up).`,
      },
      { kind: 'table', head, rows },
      { kind: 'list', items: [growthLine] },
      { kind: 'chart', file: chart.file, title: chart.title },
    ],
    targets,
    charts: [chart],
    summary,
    samples: rdel,
    config: { REPS, DIRS, FILES, FILES_SCALE, NEST_DIRS, NEST_FILES },
  }
}
