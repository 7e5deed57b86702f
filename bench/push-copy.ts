/**
 * Diagnostic, not a bench section: what keeping a pulled image's identity costs when it leaves
 * for another registry or a layout. The image of section `images` (~100 MB of tar, 5 gzip
 * layers; BTRFS_LAYERS_BENCH_IMAGES_BYTES) is pushed by crane to a registry on 127.0.0.1 and
 * pulled twice, into store A from the registry and into store B through a proxy that is then
 * stopped (B's source is unreachable, as a source that went away). Interleaved rounds (rotating
 * order, one unrecorded warm-up), each to a fresh repository of a second registry or a fresh
 * layout directory:
 *   - push, copied:  A's `push` (each blob streamed from the first registry into the upload);
 *   - push, diffed:  B's `push` (the source refuses the connection: every layer diffed again);
 *   - export, copied: A's `exportLayout` (each blob fetched into the layout);
 *   - export, diffed: A's `exportLayout` with `rediff: true`.
 * Prints medians, the ratio diffed/copied, and the peak rss above the start of each (sampled
 * every 20 ms, in this process). Needs root and the registry tools; run after `npm run build`.
 *
 *   node --import tsx bench/push-copy.ts
 *
 * Measured (2 cpus shared, load average 4.7-6.7; medians):
 *   96 MiB tar / 72 MiB gzip, 5 rounds:  push 1.34 s copied vs 10.5 s diffed (7.8x);
 *                                        export 0.72 s vs 3.83 s (5.3x); peak rss +2.2 / +1.5 MiB
 *   193 MiB tar / 139 MiB gzip, 2 rounds: push 3.10 s vs 24.6 s (7.9x); export 2.82 s vs 16.0 s
 *                                        (5.7x); peak rss +7.7 / +0.6 MiB
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { BtrfsDriver, ImageStore, createSubvolume } from '../ts/index'
import { startFaultProxy, startRegistry } from '../__test__/helpers/registry'
import { pushImage } from './images'
import { envInt, median, rotate, scaled, settle, setupFs } from './lib'

const BYTES = envInt('BTRFS_LAYERS_BENCH_IMAGES_BYTES', scaled(100_000_000, 2_000_000))
const REPS = envInt('PUSH_COPY_REPS', 5)
const MiB = (n: number): string => (n / 1048576).toFixed(1)

type Op = 'pushCopied' | 'pushDiffed' | 'exportCopied' | 'exportDiffed'
const OPS: Op[] = ['pushCopied', 'pushDiffed', 'exportCopied', 'exportDiffed']

/** Run `fn`, sampling rss every 20 ms: its time (ms) and its peak rss above the start. */
async function measure(fn: () => Promise<unknown>): Promise<{ ms: number; rss: number }> {
  const start = process.memoryUsage.rss()
  let peak = start
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 20)
  const t = performance.now()
  await fn()
  const ms = performance.now() - t
  clearInterval(timer)
  return { ms, rss: Math.max(peak, process.memoryUsage.rss()) - start }
}

async function main(): Promise<void> {
  const f = setupFs(8 * 1024 ** 3)
  try {
    await createSubvolume(f.work)
    const base = path.join(f.work, 'images')
    fs.mkdirSync(base)
    const reg = await startRegistry()
    const reg2 = await startRegistry()
    const proxy = await startFaultProxy(reg.url, () => 'pass')
    try {
      const img = await pushImage(reg, base, 'img', BYTES, 1)
      const a = await BtrfsDriver.init(path.join(base, 'store-a'))
      const b = await BtrfsDriver.init(path.join(base, 'store-b'))
      const ia = await ImageStore.open(a)
      const ib = await ImageStore.open(b)
      await ia.pull(img.ref)
      const viaProxy = img.ref.replace(reg.host, proxy.host)
      await ib.pull(viaProxy)
      await proxy.stop()
      let n = 0
      const run: Record<Op, () => Promise<unknown>> = {
        pushCopied: async () => {
          const r = await ia.push(img.ref, `${reg2.host}/copied/r${n++}:v1`)
          if (r.digest !== (await ia.get(img.ref)).digest) throw new Error('push, copied: another digest')
        },
        pushDiffed: async () => {
          const r = await ib.push(viaProxy, `${reg2.host}/diffed/r${n++}:v1`, { retries: 0 })
          if (r.layers.some((l) => l.blob !== 'uploaded')) throw new Error('push, diffed: a layer not diffed')
        },
        exportCopied: async () => {
          const dir = path.join(base, `layout-${n++}`)
          const r = await ia.exportLayout(img.ref, dir)
          if (r.layers.some((l) => l.blob !== 'copied')) throw new Error('export, copied: a layer not copied')
          fs.rmSync(dir, { recursive: true })
        },
        exportDiffed: async () => {
          const dir = path.join(base, `layout-${n++}`)
          await ia.exportLayout(img.ref, dir, { rediff: true })
          fs.rmSync(dir, { recursive: true })
        },
      }
      const times: Record<Op, number[]> = { pushCopied: [], pushDiffed: [], exportCopied: [], exportDiffed: [] }
      const peaks: Record<Op, number[]> = { pushCopied: [], pushDiffed: [], exportCopied: [], exportDiffed: [] }
      for (let round = 0; round <= REPS; round++) {
        for (const op of rotate(OPS, round)) {
          await settle(f)
          const m = await measure(run[op])
          if (round === 0) continue
          times[op].push(m.ms)
          peaks[op].push(m.rss)
        }
        console.error(`round ${round} done, load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`)
      }
      console.log(`\n${img.layers} layers, ${MiB(img.tarBytes)} MiB tar, ${MiB(img.blobBytes)} MiB gzip; ${REPS} rounds; load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}, ${os.cpus().length} cpus`)
      console.log('| op | median ms | min..max ms | median peak rss above start |\n| --- | ---: | ---: | ---: |')
      for (const op of OPS) console.log(`| ${op} | ${median(times[op]).toFixed(0)} | ${Math.min(...times[op]).toFixed(0)}..${Math.max(...times[op]).toFixed(0)} | ${MiB(median(peaks[op]))} MiB |`)
      console.log(`push diffed/copied ${(median(times.pushDiffed) / median(times.pushCopied)).toFixed(2)}x; export diffed/copied ${(median(times.exportDiffed) / median(times.exportCopied)).toFixed(2)}x`)
      await a.cleanup()
      await b.cleanup()
    } finally {
      await reg.stop()
      await reg2.stop()
    }
  } finally {
    f.teardown()
  }
}

main().catch((e: unknown) => {
  console.error(e)
  process.exitCode = 1
})
