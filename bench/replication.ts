/**
 * Section `replication`: send and receive of a layer of 100,000 files and of its child with 10
 * changes, between two stores on one filesystem: our incremental and full send+receive (the
 * stream piped in-process), `btrfs send | btrfs receive` of the same pair, our receive and
 * `btrfs receive -f` of the same stream files, the sends alone (to /dev/null), and the tar
 * path for the same change (diff piped into applyDiff creating the layer). While `receive`
 * is not built (ENOSYS), the rows that need it are left out and its targets say so.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { BtrfsDriver, BtrfsError, createSubvolume, deleteSubvolume } from '../ts/index'
import { change10 } from './changes'
import {
  envInt,
  fmtBytes,
  fmtCount,
  fmtRatio,
  fmtTime,
  log,
  median,
  nativeBench,
  now,
  rotate,
  run,
  scaled,
  settle,
  since,
  timed,
  type Chart,
  type Fs,
  type SectionResult,
} from './lib'

const FILES = envInt('BTRFS_LAYERS_BENCH_REPLICATION_FILES', scaled(100000, 100))
const DIRS = Math.max(1, Math.round(FILES / 100))
const REPS = envInt('BTRFS_LAYERS_BENCH_REPLICATION_REPS', 5)
const TARGET_INCREMENTAL_SPEEDUP = 100
const TARGET_RECEIVE_RATIO = 1.0

type Impl =
  | 'inc'
  | 'full'
  | 'btrfsInc'
  | 'btrfsFull'
  | 'recvInc'
  | 'btrfsRecvInc'
  | 'recvFull'
  | 'btrfsRecvFull'
  | 'sendInc'
  | 'btrfsSendInc'
  | 'sendFull'
  | 'btrfsSendFull'
  | 'diffApply'
const NEEDS_RECEIVE: Impl[] = ['inc', 'full', 'recvInc', 'recvFull']
const LABEL: Record<Impl, string> = {
  inc: 'send + receive, incremental (ours, piped in-process)',
  full: 'send + receive, full (ours, piped in-process)',
  btrfsInc: 'btrfs send -p | btrfs receive, incremental',
  btrfsFull: 'btrfs send | btrfs receive, full',
  recvInc: 'receive of the incremental stream file (ours)',
  btrfsRecvInc: 'btrfs receive -f, incremental stream file',
  recvFull: 'receive of the full stream file (ours)',
  btrfsRecvFull: 'btrfs receive -f, full stream file',
  sendInc: 'send, incremental, to /dev/null (ours)',
  btrfsSendInc: 'btrfs send -p -f /dev/null, incremental',
  sendFull: 'send, full, to /dev/null (ours)',
  btrfsSendFull: 'btrfs send -f /dev/null, full',
  diffApply: 'diff | applyDiff (create), the same change as a tar',
}

const devNull = (): Writable => new Writable({ write: (_c, _e, cb) => cb() })

interface ReplicationSummary {
  files: number
  receive: boolean
  medianNs: Partial<Record<Impl, number>>
}

/** The section's chart, from its JSON summary (also used by bench/render-charts.ts). */
export function replicationCharts(s: ReplicationSummary): Chart[] {
  const bars = (impls: Impl[]) => impls.filter((i) => Number.isFinite(s.medianNs[i])).map((i) => ({ impl: LABEL[i], value: s.medianNs[i]! }))
  return [
    {
      file: 'replication.svg',
      title: `replication: ${fmtCount(s.files)} files, 10 changed (median)${s.receive ? '' : ' — receive not built yet'}`,
      unit: 'ns',
      axis: 'median time',
      groups: [
        { label: 'incremental (10 changes)', bars: bars(['inc', 'btrfsInc', 'recvInc', 'btrfsRecvInc', 'sendInc', 'btrfsSendInc', 'diffApply']) },
        { label: `full (${fmtCount(s.files)} files)`, bars: bars(['full', 'btrfsFull', 'recvFull', 'btrfsRecvFull', 'sendFull', 'btrfsSendFull']) },
      ],
    },
  ]
}

/** Whether `receive` is built: a receive of garbage is ERR_BAD_LAYER then, ENOSYS before. */
async function receiveBuilt(dst: BtrfsDriver): Promise<boolean> {
  try {
    await dst.receive('probe', Buffer.from('not a send stream'))
    await dst.remove('probe')
    return true
  } catch (e) {
    return !(e instanceof BtrfsError && e.code === 'ENOSYS')
  }
}

export async function sectionReplication(f: Fs, src: BtrfsDriver): Promise<SectionResult> {
  log(`replication: a layer of ${FILES} files in ${DIRS} dirs and its child with 10 changes, ${REPS} reps`)
  const dstHome = path.join(f.work, 'replication-dst')
  const scratch = path.join(f.work, 'replication-scratch')
  // A subvolume, so that one recursive delete takes the read-only subvolumes btrfs receive made.
  await createSubvolume(scratch)
  const dst = await BtrfsDriver.init(dstHome)
  try {
    // Two read-only layers: the base and its child with the 10 changes.
    await src.create('repl-build')
    let t = now()
    nativeBench(['populate', await src.get('repl-build'), String(DIRS), String(FILES)])
    await src.put('repl-build')
    log(`  populated in ${fmtTime(since(t))}`)
    await src.create('repl-base', { parent: 'repl-build', readOnly: true })
    await src.remove('repl-build')
    await src.create('repl-work', { parent: 'repl-base' })
    const what = change10(await src.get('repl-work'), FILES, DIRS)
    await src.put('repl-work')
    await src.create('repl-child', { parent: 'repl-work', readOnly: true })
    await src.remove('repl-work')
    const srcPath = (id: string) => path.join(src.home, 'subvolumes', id)
    // The stream files both receivers read, written by our send.
    const fullFile = path.join(scratch, 'full.stream')
    const incFile = path.join(scratch, 'inc.stream')
    await pipeline(await src.send('repl-base'), fs.createWriteStream(fullFile))
    await pipeline(await src.send('repl-child', { parent: 'repl-base' }), fs.createWriteStream(incFile))
    const sizes = { full: fs.statSync(fullFile).size, inc: fs.statSync(incFile).size }
    // The receivers' copies of the base, for the incrementals: ours, and btrfs receive's.
    const receive = await receiveBuilt(dst)
    if (receive) await dst.receive('base', fullFile)
    else await dst.applyDiff('base', await src.diff('repl-base', { parent: null }), { create: true })
    const oracleInc = path.join(scratch, 'oracle-inc')
    const oracleFull = path.join(scratch, 'oracle-full')
    fs.mkdirSync(oracleInc)
    fs.mkdirSync(oracleFull)
    run('btrfs', ['receive', '-q', '-f', fullFile, oracleInc])
    /** Time `make` (which makes layer `id` of the receiver), then remove the layer, untimed. */
    const ours = async (id: string, make: () => Promise<unknown>): Promise<number> => {
      t = now()
      await make()
      const ns = since(t)
      await dst.remove(id)
      return ns
    }
    /** Time `cmd` (btrfs-progs, making the subvolume `made`), then delete it, untimed. */
    const theirs = async (made: string, cmd: string, args: string[]): Promise<number> => {
      const ns = timed(cmd, args)
      await deleteSubvolume(made)
      return ns
    }
    const pipe = (cmd: string) => ['-c', `set -o pipefail; ${cmd}`]
    const impls = (Object.keys(LABEL) as Impl[]).filter((i) => receive || !NEEDS_RECEIVE.includes(i))
    const step: Record<Impl, () => Promise<number>> = {
      inc: () => ours('inc', async () => dst.receive('inc', await src.send('repl-child', { parent: 'repl-base' }))),
      full: () => ours('full', async () => dst.receive('full', await src.send('repl-base'))),
      btrfsInc: () =>
        theirs(path.join(oracleInc, 'repl-child'), 'bash', pipe(`btrfs send -q -p '${srcPath('repl-base')}' '${srcPath('repl-child')}' | btrfs receive -q '${oracleInc}'`)),
      btrfsFull: () => theirs(path.join(oracleFull, 'repl-base'), 'bash', pipe(`btrfs send -q '${srcPath('repl-base')}' | btrfs receive -q '${oracleFull}'`)),
      recvInc: () => ours('inc', () => dst.receive('inc', incFile, { parent: 'base' })),
      btrfsRecvInc: () => theirs(path.join(oracleInc, 'repl-child'), 'btrfs', ['receive', '-q', '-f', incFile, oracleInc]),
      recvFull: () => ours('full', () => dst.receive('full', fullFile)),
      btrfsRecvFull: () => theirs(path.join(oracleFull, 'repl-base'), 'btrfs', ['receive', '-q', '-f', fullFile, oracleFull]),
      sendInc: async () => {
        t = now()
        await pipeline(await src.send('repl-child', { parent: 'repl-base' }), devNull())
        return since(t)
      },
      btrfsSendInc: async () => timed('btrfs', ['send', '-q', '-p', srcPath('repl-base'), '-f', '/dev/null', srcPath('repl-child')]),
      sendFull: async () => {
        t = now()
        await pipeline(await src.send('repl-base'), devNull())
        return since(t)
      },
      btrfsSendFull: async () => timed('btrfs', ['send', '-q', '-f', '/dev/null', srcPath('repl-base')]),
      diffApply: () => ours('apply', async () => dst.applyDiff('apply', await src.diff('repl-child', { parent: 'repl-base' }), { parent: 'base', create: true })),
    }
    const samples = Object.fromEntries(impls.map((i) => [i, [] as number[]])) as Record<Impl, number[]>
    for (let rep = -1; rep < REPS; rep++) {
      for (const impl of rotate(impls, rep + 1)) {
        await settle(f)
        const ns = await step[impl]()
        if (rep >= 0) samples[impl].push(ns)
      }
      if (rep >= 0) log(`  repetition ${rep + 1}/${REPS}`)
    }
    const m = (i: Impl): number => (samples[i]?.length ? median(samples[i]) : NaN)
    const medianNs = Object.fromEntries(impls.map((i) => [i, m(i)])) as Partial<Record<Impl, number>>
    const awaits = 'awaits the receive core (ENOSYS)'
    const targets: SectionResult['targets'] = [
      receive
        ? {
            section: 'replication',
            what: `send+receive, ${fmtCount(FILES)} files / 10 changed: full / incremental`,
            measured: `${fmtRatio(m('full') / m('inc'))} (${fmtTime(m('full'))} vs ${fmtTime(m('inc'))})`,
            target: `≥ ${TARGET_INCREMENTAL_SPEEDUP}x`,
            pass: m('full') / m('inc') >= TARGET_INCREMENTAL_SPEEDUP,
          }
        : {
            section: 'replication',
            what: `send+receive full / incremental (${awaits}); send alone: full / incremental`,
            measured: `${fmtRatio(m('sendFull') / m('sendInc'))} (${fmtTime(m('sendFull'))} vs ${fmtTime(m('sendInc'))})`,
            target: `≥ ${TARGET_INCREMENTAL_SPEEDUP}x`,
            pass: false,
          },
      ...(['Inc', 'Full'] as const).map((k) => {
        const ours = m(`recv${k}` as Impl)
        const theirs = m(`btrfsRecv${k}` as Impl)
        return {
          section: 'replication',
          what: `our receive / btrfs receive, ${k === 'Inc' ? 'incremental' : 'full'} stream file`,
          measured: receive ? `${fmtRatio(ours / theirs)} (${fmtTime(ours)} vs ${fmtTime(theirs)})` : `${awaits}; btrfs receive ${fmtTime(theirs)}`,
          target: `≤ ${TARGET_RECEIVE_RATIO.toFixed(1)}x`,
          pass: receive && ours / theirs <= TARGET_RECEIVE_RATIO,
        }
      }),
    ]
    const ref = receive ? m('inc') : m('sendInc')
    const rows = impls.map((i) => [LABEL[i], fmtTime(m(i)), fmtRatio(m(i) / ref)])
    const summary: ReplicationSummary & Record<string, unknown> = { files: FILES, dirs: DIRS, receive, medianNs, streamBytes: sizes }
    const [chart] = replicationCharts(summary)
    return {
      key: 'replication',
      title: 'replication: send/receive (incremental and full) vs btrfs send | btrfs receive vs diff | applyDiff',
      blocks: [
        {
          kind: 'p',
          text:
            `A read-only layer of ${fmtCount(FILES)} small files in ${fmtCount(DIRS)} directories and a read-only child with 10 changes ` +
            `(${what}), sent from one store to another on the same filesystem. Streams: full ${fmtBytes(sizes.full)}, incremental ${fmtBytes(sizes.inc)}. ` +
            'Ours through the TS API (the send Readable handed to receive, or a stream file); btrfs-progs timed from Node, spawn to exit, ' +
            `through bash for the pipes. Medians of ${REPS} rounds (1 warm-up), rotating order, the cleaner settled before each call; ` +
            'received layers deleted between calls (not timed). The diff | applyDiff row makes the same child on the receiver from an OCI tar ' +
            'of the 10 changes.' +
            (receive ? '' : ' Receive is not built yet (ENOSYS): the rows that need it are left out, and the receiver\'s base came from applyDiff.'),
        },
        { kind: 'table', head: ['implementation', 'median', `vs ${receive ? 'incremental send+receive' : 'incremental send'}`], rows },
        { kind: 'chart', file: chart.file, title: chart.title },
      ],
      targets,
      charts: [chart],
      summary,
      samples,
      config: { FILES, DIRS, REPS },
    }
  } finally {
    await dst.cleanup()
    await deleteSubvolume(dstHome, { recursive: true }).catch(() => undefined)
    for (const id of ['repl-build', 'repl-work', 'repl-child', 'repl-base']) if (await src.exists(id)) await src.remove(id)
    await deleteSubvolume(scratch, { recursive: true })
  }
}
