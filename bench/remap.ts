/**
 * Section `remap`: shifting the owner of every inode of a tree with 100,000 files.
 * `remapLayer` through the TS API (parallel, rayon on 2 cores) against GNU `chown -R UID:GID`
 * to a single owner on the same tree, against the same remap on one thread (`remap_path` from
 * Rust, bench/native, with RAYON_NUM_THREADS=1), the parallel remap from Rust (what the
 * TS API adds), and the parallel remap forced onto the statx way (`--method statx`: statx and
 * llistxattr of every entry instead of the subvolume's inode table). Every run gets a fresh
 * writable snapshot of one populated template.
 */
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { createSubvolume, deleteSubvolume, remapLayer, snapshot } from '../ts/index'
import {
  BIN,
  envInt,
  fmtCount,
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
  which,
  type Chart,
  type Fs,
  type SectionResult,
} from './lib'

const FILES = envInt('BTRFS_LAYERS_BENCH_REMAP_FILES', scaled(100000, 100))
const DIRS = Math.max(1, Math.round(FILES / 100))
const REPS = envInt('BTRFS_LAYERS_BENCH_REMAP_REPS', 5)
const HOST = 100000
const TARGET_CHOWN_RATIO = 0.6

type Impl = 'ts' | 'chown' | 'native' | 'native1' | 'statx'
const IMPLS: Impl[] = ['ts', 'chown', 'native', 'native1', 'statx']
const IMPL_LABEL: Record<Impl, string> = {
  ts: 'remapLayer (TS, parallel)',
  chown: 'chown -R (GNU coreutils)',
  native: 'remap_path (Rust, parallel)',
  native1: 'remap_path (Rust, 1 thread)',
  statx: 'remap_path (Rust, parallel, statx way)',
}

interface NativeRemap {
  ns: number
  cpu_ns: number
  visited: number
  changed: number
  from_table: number
}

/** The section's chart, from its JSON summary (also used by bench/render-charts.ts). */
export function remapCharts(s: { files: number; dirs: number; medianNs: Partial<Record<Impl, number>> }): Chart[] {
  return [
    {
      file: 'remap.svg',
      title: `Remap of ${fmtCount(s.files)} files (median)`,
      unit: 'ns',
      axis: 'median time per remap',
      groups: [
        {
          label: `${fmtCount(s.files)} files, ${fmtCount(s.dirs)} dirs`,
          // Results from before the statx column have no value for it.
          bars: IMPLS.filter((impl) => s.medianNs[impl] !== undefined).map((impl) => ({ impl: IMPL_LABEL[impl], value: s.medianNs[impl]! })),
        },
      ],
    },
  ]
}

export async function sectionRemap(f: Fs): Promise<SectionResult> {
  log(`remap: ${FILES} files in ${DIRS} dirs, ${REPS} reps x ${IMPLS.length} implementations`)
  const base = path.join(f.work, 'remap')
  fs.mkdirSync(base)
  const tpl = path.join(base, 'template')
  await createSubvolume(tpl)
  let t = now()
  nativeBench(['populate', tpl, String(DIRS), String(FILES)])
  log(`  populated in ${fmtTime(since(t))}`)
  await settle(f)
  const samples: Record<Impl, number[]> = { ts: [], chown: [], native: [], native1: [], statx: [] }
  const cpu: Partial<Record<Impl, number[]>> = { native: [], native1: [], statx: [] }
  const fromTable: Partial<Record<Impl, number>> = {}
  let visited = 0
  const to = { uidMaps: [{ containerId: 0, hostId: HOST, size: 65536 }], gidMaps: [{ containerId: 0, hostId: HOST, size: 65536 }] }
  const probe = path.join('d0000', 'f0000000')
  for (let rep = -1; rep < REPS; rep++) {
    for (const impl of rotate(IMPLS, rep + 1)) {
      const copy = path.join(base, `copy-${impl}-${rep < 0 ? 'w' : rep}`)
      await snapshot(tpl, copy)
      await settle(f)
      let ns: number
      switch (impl) {
        case 'ts': {
          t = now()
          const r = await remapLayer(copy, { from: {}, to })
          ns = since(t)
          visited = r.visited
          break
        }
        case 'chown':
          ns = timed('chown', ['-R', `${HOST}:${HOST}`, copy])
          break
        case 'native':
        case 'native1':
        case 'statx': {
          const env = { ...process.env }
          if (impl === 'native1') env.RAYON_NUM_THREADS = '1'
          else delete env.RAYON_NUM_THREADS
          const method = impl === 'statx' ? 'statx' : 'auto'
          const r = nativeBench<NativeRemap>(['remap', copy, '--host-id', String(HOST), '--method', method], env)
          ns = r.ns
          fromTable[impl] = r.from_table
          if (rep >= 0) cpu[impl]!.push(r.cpu_ns)
          break
        }
      }
      const st = fs.lstatSync(path.join(copy, probe))
      if (st.uid !== HOST || st.gid !== HOST) throw new Error(`${impl}: ${probe} owned by ${st.uid}:${st.gid}, expected ${HOST}:${HOST}`)
      if (rep >= 0) samples[impl].push(ns)
      await deleteSubvolume(copy)
      await settle(f)
    }
    log(`  repetition ${rep + 1}/${REPS}${rep < 0 ? ' (warm-up)' : ''}`)
  }
  await deleteSubvolume(tpl)
  const perInode = which('strace') ? await syscallsPerInode(f, base, to) : undefined
  fs.rmdirSync(base)
  await settle(f)

  const m = (impl: Impl): number => median(samples[impl])
  const [ts, chown, native, native1, statx] = [m('ts'), m('chown'), m('native'), m('native1'), m('statx')]
  const targets: SectionResult['targets'] = [
    {
      section: 'remap',
      what: `remap of ${fmtCount(FILES)} files: remapLayer / chown -R`,
      measured: `${fmtRatio(ts / chown)} (${fmtTime(ts)} vs ${fmtTime(chown)})`,
      target: `≤ ${TARGET_CHOWN_RATIO}x`,
      pass: ts / chown <= TARGET_CHOWN_RATIO,
    },
    {
      section: 'remap',
      what: 'remap: single-threaded remap / remapLayer (parallel)',
      measured: `${fmtRatio(native1 / ts)} (${fmtTime(native1)} vs ${fmtTime(ts)})`,
      target: '> 1x (the parallel remap is faster)',
      pass: native1 / ts > 1,
    },
    {
      section: 'remap',
      what: 'remap: statx way / inode-table way (both parallel, from Rust)',
      measured: `${fmtRatio(statx / native)} (${fmtTime(statx)} vs ${fmtTime(native)})`,
      target: '> 1x (the table way is faster)',
      pass: statx / native > 1,
    },
  ]
  const cpuCell = (impl: Impl): string => (cpu[impl]?.length ? fmtTime(median(cpu[impl]!)) : 'n/a')
  const tableCell = (impl: Impl): string => (fromTable[impl] === undefined ? 'n/a' : fmtCount(fromTable[impl]!))
  const rows = IMPLS.map((impl) => [IMPL_LABEL[impl], fmtTime(m(impl)), cpuCell(impl), tableCell(impl), fmtRatio(m(impl) / chown), fmtRatio(m(impl) / ts)])
  const medianNs = Object.fromEntries(IMPLS.map((i) => [i, m(i)])) as Record<Impl, number>
  const [chart] = remapCharts({ files: FILES, dirs: DIRS, medianNs })
  return {
    key: 'remap',
    title: 'Remap (ID-mapped chown) vs GNU chown -R vs a single-threaded remap',
    blocks: [
      {
        kind: 'p',
        text:
          `A tree of ${fmtCount(FILES)} small files in ${fmtCount(DIRS)} directories (${fmtCount(visited)} inodes with the root), ` +
          `owned by 0:0. Every run works on a fresh writable snapshot of the populated template (the cleaner settled ` +
          `before it) and moves every inode to ${HOST}:${HOST}: \`remapLayer(copy, { from: {}, to: 0→${HOST}/65536 })\` ` +
          `through the TS API (a parallel walk by directory fds; its syscalls per inode are counted below), ` +
          `\`chown -R ${HOST}:${HOST} copy\` (GNU coreutils, timed around the spawn), and \`remap_path\` from Rust ` +
          `(bench/native, timed there) on rayon's global pool: parallel (${os.cpus().length} threads here) and with RAYON_NUM_THREADS=1. ` +
          'Run as root, the remap commits the filesystem and reads the subvolume\'s inode table (TREE_SEARCH_V2) and then ' +
          'costs one fchownat per file; "statx way" forces the fallback (statx + llistxattr + fchownat per entry). ' +
          '"from table" counts the inodes whose owner came from the table. ' +
          `CPU is user + system time of the Rust process during the call. Medians of ${REPS} repetitions (1 warm-up), ` +
          'rotating order, caches warm.',
      },
      { kind: 'table', head: ['implementation', 'median', 'CPU (Rust only)', 'from table', 'this / chown -R', 'this / remapLayer'], rows },
      ...(perInode ? [{ kind: 'list' as const, items: perInode.lines }] : []),
      { kind: 'chart', file: chart.file, title: chart.title },
    ],
    targets,
    charts: [chart],
    summary: {
      files: FILES,
      dirs: DIRS,
      inodes: visited,
      medianNs,
      cpuMedianNs: { native: median(cpu.native ?? []), native1: median(cpu.native1 ?? []), statx: median(cpu.statx ?? []) },
      fromTable,
      tsOverChown: ts / chown,
      native1OverTs: native1 / ts,
      statxOverNative: statx / native,
      syscallsPerInode: perInode?.counts,
      target: `ts/chown <= ${TARGET_CHOWN_RATIO}`,
      pass: ts / chown <= TARGET_CHOWN_RATIO,
    },
    samples: { ns: samples, cpuNs: cpu },
    config: { FILES, DIRS, REPS, HOST },
  }
}

/** Syscalls of `strace -f -c -o out cmd args`, by name. */
function straceCounts(cmd: string, args: string[], env: NodeJS.ProcessEnv): Record<string, number> {
  const out = path.join(os.tmpdir(), `btrfs-layers-bench-strace-${process.pid}.txt`)
  const r = spawnSync('strace', ['-f', '-c', '-o', out, cmd, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env })
  if (r.status !== 0) throw new Error(`strace ${cmd}: ${r.stderr?.toString().trim()}`)
  const counts: Record<string, number> = {}
  for (const line of fs.readFileSync(out, 'utf8').split('\n')) {
    const t = line.trim().split(/\s+/)
    // % time, seconds, usecs/call, calls, [errors,] syscall
    if (t.length >= 5 && /^\d/.test(t[0]) && t[t.length - 1] !== 'total') counts[t[t.length - 1]] = Number(t[3])
  }
  fs.unlinkSync(out)
  return counts
}

/**
 * Syscalls per inode of one remap on one thread and of chown -R, counted with strace on a small
 * tree (1,000 files): why the two differ in time per inode.
 */
async function syscallsPerInode(
  f: Fs,
  base: string,
  to: { uidMaps: { containerId: number; hostId: number; size: number }[] },
): Promise<{ lines: string[]; counts: Record<string, Record<string, number>> }> {
  const files = 1000
  const dirs = 10
  const tpl = path.join(base, 'strace-template')
  await createSubvolume(tpl)
  nativeBench(['populate', tpl, String(dirs), String(files)])
  const inodes = files + dirs + 1
  const counts: Record<string, Record<string, number>> = {}
  const env1 = { ...process.env, RAYON_NUM_THREADS: '1' }
  const runs: [string, string, string[]][] = [
    ['remap_path (1 thread)', BIN, ['remap', '', '--host-id', String(to.uidMaps[0].hostId)]],
    ['remap_path (1 thread, statx way)', BIN, ['remap', '', '--host-id', String(to.uidMaps[0].hostId), '--method', 'statx']],
    ['chown -R', 'chown', ['-R', `${HOST}:${HOST}`, '']],
  ]
  for (const [label, cmd, args] of runs) {
    const copy = path.join(base, 'strace-copy')
    await snapshot(tpl, copy)
    await settle(f)
    counts[label] = straceCounts(cmd, args.map((a) => (a === '' ? copy : a)), env1)
    await deleteSubvolume(copy)
  }
  await deleteSubvolume(tpl)
  await settle(f)
  const lines = Object.entries(counts).map(([label, c]) => {
    const main = Object.entries(c)
      .filter(([, n]) => n >= inodes / 2)
      .sort((a, b) => b[1] - a[1])
    const total = main.reduce((s, [, n]) => s + n, 0)
    return (
      `syscalls per inode, ${label} (strace -c on a ${fmtCount(files)}-file tree, calls made at least once per two inodes): ` +
      `${main.map(([k, n]) => `${k} ${(n / inodes).toFixed(2)}`).join(', ')}; ${(total / inodes).toFixed(2)} in all`
    )
  })
  return { lines, counts }
}
