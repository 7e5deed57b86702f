/**
 * Section `changes`: changes between a layer of 100,000 files and its child with 10 changes.
 * `driver.changes(child)` through the TS API (as root: the generation fast path, since the child
 * is a snapshot of its parent) against the parallel tree walk (`changes_walk` from Rust,
 * bench/native) and the single-threaded walk (`changes_walk_single_threaded`); plus the two
 * fast paths from Rust: `changes_since` (generation) and `changes_send` (with the temporary
 * read-only snapshot of the writable child that send needs).
 */
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { deleteSubvolume, snapshot, type BtrfsDriver } from '../ts/index'
import {
  envInt,
  fmtCount,
  fmtRatio,
  fmtTime,
  log,
  median,
  nativeBench,
  now,
  populatedFile,
  rotate,
  run,
  scaled,
  settle,
  since,
  type Chart,
  type Fs,
  type SectionResult,
} from './lib'

const FILES = envInt('BTRFS_LAYERS_BENCH_CHANGES_FILES', scaled(100000, 100))
const DIRS = Math.max(1, Math.round(FILES / 100))
const REPS = envInt('BTRFS_LAYERS_BENCH_CHANGES_REPS', 7)
const TARGET_FAST_SPEEDUP = 100

type Impl = 'driver' | 'since' | 'send' | 'walk' | 'walk1'
const IMPLS: Impl[] = ['driver', 'since', 'send', 'walk', 'walk1']
const AFTER_READ_LABEL = 'extra: driver.changes after `find` read every directory of the writable child (their atimes updated)'
const AFTER_READ_LABEL_SHORT = 'driver.changes, child dirs read by find (atime)'
const AFTER_WRITE_LABEL = 'extra: driver.changes just after 64 KiB were written elsewhere on the filesystem (a sync and a commit to do first)'
const IMPL_LABEL: Record<Impl, string> = {
  driver: 'driver.changes (TS, generation fast path)',
  since: 'changes_since (Rust, generation fast path)',
  send: 'changes_send (Rust, send fast path + temp snapshot)',
  walk: 'tree walk, parallel (Rust)',
  walk1: 'tree walk, 1 thread (Rust)',
}

interface NativeChanges {
  ns: number
  cpu_ns: number
  count: number
  list?: [string, string][]
  /** send only: the temporary read-only snapshot, the send itself, deleting the snapshot. */
  snapshot_ns?: number
  send_ns?: number
  cleanup_ns?: number
}

/**
 * The 10 changes to a tree `populate` made of `files` files in `dirs` directories: 4 files
 * rewritten, 3 added, 2 deleted, 1 chmod, spread over the tree (also the replication section's).
 */
export function change10(root: string, files = FILES, dirs = DIRS): string {
  const picked = Array.from({ length: 7 }, (_, k) => path.join(root, populatedFile(Math.floor((k * files) / 7) + k, dirs)))
  for (const p of picked.slice(0, 4)) fs.appendFileSync(p, 'changed\n')
  for (let i = 0; i < 3; i++) fs.writeFileSync(path.join(path.dirname(picked[i]), `added-${i}`), `added ${i}\n`)
  for (const p of picked.slice(4, 6)) fs.unlinkSync(p)
  fs.chmodSync(picked[6], 0o600)
  return '4 files rewritten, 3 added, 2 deleted, 1 chmod'
}

interface ChangesSummary {
  files: number
  changesListed: number
  driverMedianNs: number
  sinceMedianNs?: number
  sendMedianNs: number
  walkMedianNs: number
  walk1MedianNs: number
  driverAfterReadMedianNs: number
}

/** The section's chart, from its JSON summary (also used by bench/render-charts.ts). */
export function changesCharts(s: ChangesSummary): Chart[] {
  const value: Record<Impl, number> = { driver: s.driverMedianNs, since: s.sinceMedianNs ?? NaN, send: s.sendMedianNs, walk: s.walkMedianNs, walk1: s.walk1MedianNs }
  return [
    {
      file: 'changes.svg',
      title: `changes: ${fmtCount(s.files)} files, 10 changed (median)`,
      unit: 'ns',
      axis: 'median time per changes() call',
      groups: [
        {
          label: `${fmtCount(s.files)} files, ${s.changesListed} changes listed`,
          bars: [
            ...IMPLS.filter((impl) => Number.isFinite(value[impl])).map((impl) => ({ impl: IMPL_LABEL[impl], value: value[impl] })),
            { impl: AFTER_READ_LABEL_SHORT, value: s.driverAfterReadMedianNs },
          ],
        },
      ],
    },
  ]
}

export async function sectionChanges(f: Fs, driver: BtrfsDriver): Promise<SectionResult> {
  log(`changes: a layer of ${FILES} files in ${DIRS} dirs with 10 changes, ${REPS} reps x ${IMPLS.length} implementations`)
  // A read-only image layer (the populated tree) and a writable child with 10 changes.
  await driver.create('changes-build')
  const buildPath = await driver.get('changes-build')
  await driver.put('changes-build')
  let t = now()
  nativeBench(['populate', buildPath, String(DIRS), String(FILES)])
  log(`  populated in ${fmtTime(since(t))}`)
  await driver.create('changes-base', 'changes-build', { readOnly: true })
  await driver.remove('changes-build')
  await driver.create('changes-child', 'changes-base')
  const childPath = await driver.get('changes-child')
  await driver.put('changes-child')
  const basePath = await driver.get('changes-base')
  await driver.put('changes-base')
  const what = change10(childPath)
  const scratch = path.join(f.work, 'changes-scratch')
  fs.mkdirSync(scratch)
  // The walks read every directory, and reading a directory of a writable subvolume updates its
  // atime (relatime: once, when atime <= mtime), unless opened with O_NOATIME as our walks do.
  // Other readers turn the 10 changes into 10 plus one inode update per directory, which the
  // fast paths then have to sort out. The walks read a read-only snapshot of the child (the same
  // tree), and the writable child is read by nothing but the fast paths; the effect of another
  // program reading every directory of the writable child is measured separately at the end.
  const childRo = path.join(scratch, 'child-ro')
  await snapshot(childPath, childRo, { readOnly: true })
  await settle(f)

  const samples: Record<Impl, number[]> = { driver: [], since: [], send: [], walk: [], walk1: [] }
  const cpu: Record<Impl, number[]> = { driver: [], since: [], send: [], walk: [], walk1: [] }
  const lists: Record<Impl, string> = { driver: '', since: '', send: '', walk: '', walk1: '' }
  const sendParts = { snapshot: [] as number[], send: [] as number[], cleanup: [] as number[] }
  let count = 0
  for (let rep = -1; rep < REPS; rep++) {
    for (const impl of rotate(IMPLS, rep + 1)) {
      await settle(f)
      let ns: number
      let list: [string, string][]
      if (impl === 'driver') {
        t = now()
        const l = await driver.changes('changes-child')
        ns = since(t)
        list = l.map((c) => [c.path, c.kind])
      } else {
        const mode = impl
        const live = impl === 'send' || impl === 'since'
        const r = nativeBench<NativeChanges>(['changes', live ? childPath : childRo, basePath, mode, '--scratch', scratch])
        ns = r.ns
        if (!r.list) throw new Error(`changes ${mode}: ${r.count} changes, expected about 10`)
        list = r.list
        if (rep >= 0) cpu[impl].push(r.cpu_ns)
        if (rep >= 0 && impl === 'send') {
          sendParts.snapshot.push(r.snapshot_ns ?? NaN)
          sendParts.send.push(r.send_ns ?? NaN)
          sendParts.cleanup.push(r.cleanup_ns ?? NaN)
        }
      }
      lists[impl] = JSON.stringify(list)
      count = list.length
      if (rep >= 0) samples[impl].push(ns)
    }
    if (rep >= 0) log(`  repetition ${rep + 1}/${REPS}`)
  }
  for (const impl of IMPLS) {
    if (lists[impl] !== lists.walk) throw new Error(`changes: ${impl} and the walk disagree:\n${lists[impl]}\n${lists.walk}`)
  }
  // Extra: with a running transaction and dirty data elsewhere on the filesystem (a file written
  // outside the layers just before), which the generation path must write back and commit first.
  const dirtyFile = path.join(scratch, 'dirty')
  const afterWrite: number[] = []
  for (let rep = 0; rep < REPS; rep++) {
    await settle(f)
    fs.writeFileSync(dirtyFile, Buffer.alloc(64 * 1024, rep))
    t = now()
    const l = await driver.changes('changes-child')
    afterWrite.push(since(t))
    if (JSON.stringify(l.map((c) => [c.path, c.kind])) !== lists.walk) throw new Error('changes after a write: the list changed')
  }
  fs.unlinkSync(dirtyFile)
  log(`  driver.changes with a running transaction and 64 KiB of dirty data: ${fmtTime(median(afterWrite))}`)
  // Extra: GNU find reads every directory of the writable child (relatime: each directory's atime
  // is updated, one inode item written per directory), then driver.changes.
  run('find', [childPath, '-maxdepth', '1000', '-false'])
  const afterRead: number[] = []
  for (let rep = 0; rep < REPS; rep++) {
    await settle(f)
    t = now()
    const l = await driver.changes('changes-child')
    afterRead.push(since(t))
    if (JSON.stringify(l.map((c) => [c.path, c.kind])) !== lists.walk) throw new Error('changes after find: the list changed')
  }
  log(`  driver.changes after find read the writable child: ${fmtTime(median(afterRead))}`)
  await driver.remove('changes-child')
  await driver.remove('changes-base')
  await deleteSubvolume(childRo)
  fs.rmdirSync(scratch)
  await settle(f)

  const m = (impl: Impl): number => median(samples[impl])
  const [d, sinceNs, send, walk, walk1] = [m('driver'), m('since'), m('send'), m('walk'), m('walk1')]
  const targets: SectionResult['targets'] = [
    {
      section: 'changes',
      what: `changes, ${fmtCount(FILES)} files / 10 changed: tree walk / driver.changes (generation fast path)`,
      measured: `${fmtRatio(walk / d)} (${fmtTime(walk)} vs ${fmtTime(d)})`,
      target: `≥ ${TARGET_FAST_SPEEDUP}x`,
      pass: walk / d >= TARGET_FAST_SPEEDUP,
    },
    {
      section: 'changes',
      what: `changes, ${fmtCount(FILES)} files / 10 changed: tree walk / changes_send (send fast path, Rust, + temp snapshot)`,
      measured: `${fmtRatio(walk / send)} (${fmtTime(walk)} vs ${fmtTime(send)})`,
      target: `≥ ${TARGET_FAST_SPEEDUP}x`,
      pass: walk / send >= TARGET_FAST_SPEEDUP,
    },
    {
      section: 'changes',
      what: 'changes: single-threaded walk / parallel walk',
      measured: `${fmtRatio(walk1 / walk)} (${fmtTime(walk1)} vs ${fmtTime(walk)})`,
      target: '> 1x (the parallel walk is faster)',
      pass: walk1 / walk > 1,
    },
  ]
  const cpuCell = (impl: Impl): string => (cpu[impl].length ? fmtTime(median(cpu[impl])) : 'n/a')
  const rows = IMPLS.map((impl) => [IMPL_LABEL[impl], fmtTime(m(impl)), cpuCell(impl), fmtRatio(m(impl) / d), fmtRatio(walk / m(impl))])
  const ar = median(afterRead)
  rows.push([AFTER_READ_LABEL, fmtTime(ar), 'n/a', fmtRatio(ar / d), fmtRatio(walk / ar)])
  const aw = median(afterWrite)
  rows.push([AFTER_WRITE_LABEL, fmtTime(aw), 'n/a', fmtRatio(aw / d), fmtRatio(walk / aw)])
  const summary = {
    files: FILES,
    dirs: DIRS,
    changesListed: count,
    driverMedianNs: d,
    sinceMedianNs: sinceNs,
    sendMedianNs: send,
    walkMedianNs: walk,
    walk1MedianNs: walk1,
    walkOverDriver: walk / d,
    walk1OverWalk: walk1 / walk,
    cpuMedianNs: Object.fromEntries(IMPLS.map((i) => [i, median(cpu[i])])),
    driverAfterReadMedianNs: ar,
    driverAfterWriteMedianNs: aw,
    sendPartsMedianNs: { snapshot: median(sendParts.snapshot), send: median(sendParts.send), cleanup: median(sendParts.cleanup) },
  }
  const [chart] = changesCharts(summary)
  return {
    key: 'changes',
    title: 'changes: generation and send fast paths vs parallel and single-threaded tree walk',
    blocks: [
      {
        kind: 'p',
        text:
          `A read-only layer of ${fmtCount(FILES)} small files in ${fmtCount(DIRS)} directories and a writable child layer ` +
          `with 10 changes (${what}; ${count} entries listed with the modified parent directories). ` +
          '"driver.changes" is the TS API (as root, the child a snapshot of its parent: the generation fast path, ' +
          'a filesystem sync, then TREE_SEARCH_V2 of both trees for inode items newer than the snapshot, reading ' +
          'only the tree blocks written since, then the walk\'s rules on those paths). "changes_since" is the same ' +
          'path called from Rust (bench/native). "changes_send" is the send fast path from Rust (BTRFS_IOC_SEND ' +
          'with NO_FILE_DATA, including the temporary read-only snapshot of the writable child that send needs, ' +
          'and its deletion); the driver uses it for layers that do not descend from the other. The walks are `changes_walk` ' +
          `(rayon's global pool, ${os.cpus().length} threads here) and \`changes_walk_single_threaded\` from Rust, timed there; CPU ` +
          'is user + system time of that process during the call. Every implementation returned the same list. ' +
          `Medians of ${REPS} repetitions (1 warm-up), rotating order, the cleaner settled before each call; ` +
          'caches warm. The walks read a read-only snapshot of the child: reading the directories of the writable ' +
          'child would update their atimes (relatime), 1 inode update per directory that the fast paths would then ' +
          'have to compare (the generation path drops an inode whose item differs from the parent\'s only in its atime, ' +
          'one lookup each); the next-to-last row shows driver.changes after exactly that (`find` over the writable child), ' +
          'for the same 10 changes. The generation path writes back dirty data and commits the running transaction ' +
          'before it searches (inode items reach the tree at commit); the measured calls start on a settled filesystem, ' +
          'and the last row shows the cost when there is something to commit.',
      },
      { kind: 'table', head: ['implementation', 'median', 'CPU (Rust only)', 'vs driver.changes', 'walk / this'], rows },
      {
        kind: 'list',
        items: [
          `changes_send (Rust) split, medians: temporary read-only snapshot of the child ${fmtTime(median(sendParts.snapshot))}, ` +
            `send + classification ${fmtTime(median(sendParts.send))}, deleting the snapshot ${fmtTime(median(sendParts.cleanup))}`,
        ],
      },
      { kind: 'chart', file: chart.file, title: chart.title },
    ],
    targets,
    charts: [chart],
    summary,
    samples: { ns: samples, cpuNs: cpu, sendParts, driverAfterRead: afterRead, driverAfterWrite: afterWrite },
    config: { FILES, DIRS, REPS },
  }
}
