/**
 * Diagnostic, not a bench section: where the memory of `ImageStore.pull` goes. Makes the
 * images of section `images` (the ~100 MB one and the twice larger one), pushes them to a local
 * registry, and runs bench/pull-rss.cjs on each, per variant, printing at each layer's `done`
 * rss, VmHWM, heapUsed, external and arrayBuffers, and the peaks. Needs root (loop-mounted
 * btrfs) and the registry tools (scripts/test-tools.sh); run after `npm run build`.
 *
 *   node --import tsx bench/pull-mem.ts
 *
 * PULL_MEM_VARIANTS: variants separated by `;`, each space-separated `NAME=value` environment
 * settings and `--node-flags` for the child (default: one variant, as is).
 * PULL_MEM_REPS: runs of each (image, variant) (default 1). BTRFS_LAYERS_BENCH_IMAGES_BYTES as
 * in the section.
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { deleteSubvolume, createSubvolume } from '../ts/index'
import { startRegistry } from '../__test__/helpers/registry'
import { pushImage } from './images'
import { envInt, scaled, settle, setupFs } from './lib'

const BYTES = envInt('BTRFS_LAYERS_BENCH_IMAGES_BYTES', scaled(100_000_000, 2_000_000))
const REPS = envInt('PULL_MEM_REPS', 1)
const VARIANTS = (process.env.PULL_MEM_VARIANTS ?? '').split(';').map((v) => v.trim())

const MiB = (n: number): string => (n / 1048576).toFixed(1)

interface Row {
  layer: number
  bytes: number
  rss: number
  hwm: number
  heapUsed: number
  external: number
  arrayBuffers: number
}
interface Report {
  before: { hwmKiB: number }
  after: { hwmKiB: number }
  ns: number
  start: Row
  perLayer: Row[]
  peaks: Row
}

async function main(): Promise<void> {
  const f = setupFs(12 * 1024 ** 3)
  const stop = (): void => {
    f.teardown()
    process.exit(130)
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  try {
    await createSubvolume(f.work)
    const base = path.join(f.work, 'images')
    fs.mkdirSync(base)
    const reg = await startRegistry()
    try {
      const imgs = [await pushImage(reg, base, 'img', BYTES, 1), await pushImage(reg, base, 'img2x', 2 * BYTES, 2)]
      const home = path.join(base, 'store-rss')
      for (const variant of VARIANTS) {
        const words = variant.split(/\s+/).filter(Boolean)
        const flags = words.filter((w) => w.startsWith('--'))
        const env = { ...process.env, ...Object.fromEntries(words.filter((w) => !w.startsWith('--')).map((w) => w.split('=', 2) as [string, string])) }
        for (let rep = 0; rep < REPS; rep++) {
          for (const img of imgs) {
            await settle(f)
            const r = spawnSync(process.execPath, [...flags, path.join(__dirname, 'pull-rss.cjs'), home, img.ref], { encoding: 'utf8', env })
            if (r.status !== 0) throw new Error(`pull-rss.cjs ${img.ref}: ${r.stderr || r.error?.message}`)
            const traced = r.stderr.split('\n').filter((l) => l.startsWith('btrfs-layers trace '))
            const rest = r.stderr.split('\n').filter((l) => l && !l.startsWith('btrfs-layers trace '))
            if (rest.length > 0) process.stderr.write(`${rest.join('\n')}\n`)
            const c = JSON.parse(r.stdout) as Report
            console.log(
              `\n## ${img.ref.split('/').pop()} (${MiB(img.tarBytes)} MiB tar, ${MiB(img.blobBytes)} MiB gzip) variant [${variant || 'as is'}] rep ${rep}: ` +
                `VmHWM ${MiB(c.after.hwmKiB * 1024)} MiB (start ${MiB(c.before.hwmKiB * 1024)}), ${(c.ns / 1e6).toFixed(0)} ms`,
            )
            console.log('| at | blob MiB | rss | VmHWM | heapUsed | external | arrayBuffers |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |')
            const line = (at: string, s: Row): void =>
              console.log(`| ${at} | ${s.bytes ? MiB(s.bytes) : ''} | ${MiB(s.rss)} | ${MiB(s.hwm)} | ${MiB(s.heapUsed)} | ${MiB(s.external)} | ${MiB(s.arrayBuffers)} |`)
            line('start', c.start)
            for (const s of c.perLayer) line(`layer ${s.layer} done`, s)
            line('peak (20 ms samples)', c.peaks)
            if (traced.length > 0) {
              // BTRFS_LAYERS_TRACE=1 in the variant: the pull's stages, ms from its start.
              const ev = traced.map((l) => l.split(' ')).map(([, , ns, what, ...detail]) => ({ ns: BigInt(ns), what, detail: detail.join(' ').slice(0, 24) }))
              ev.sort((a, b) => (a.ns < b.ns ? -1 : a.ns > b.ns ? 1 : 0))
              const t0 = ev[0].ns
              console.log(`\n| ms | event | detail |\n| ---: | --- | --- |`)
              for (const e of ev) console.log(`| ${(Number(e.ns - t0) / 1e6).toFixed(1)} | ${e.what} | ${e.detail} |`)
            }
          }
        }
      }
      if (fs.existsSync(home)) await deleteSubvolume(home, { recursive: true })
    } finally {
      await reg.stop()
    }
  } finally {
    f.teardown()
  }
}

main().catch((e: unknown) => {
  console.error(e)
  process.exitCode = 1
})
