/**
 * Section `images`: `ImageStore.pull` of a multi-layer image from a registry on this machine,
 * against the two ways to get the same tree with the registry's own client, crane:
 *
 * - the image: ~100 MB of uncompressed tar (BTRFS_LAYERS_BENCH_IMAGES_BYTES) in 5 gzip layers
 *   (level 6) of mixed files (log-uniform sizes, word text that compresses about 3x, and random
 *   bytes), all from a fixed seed, so every run pulls the same bytes; an image twice that size
 *   for the memory and re-pull figures. Both are written as an OCI layout and pushed with
 *   `crane push` to distribution's `registry` (scripts/test-tools.sh) on 127.0.0.1, no auth.
 * - interleaved rounds (rotating order, one unrecorded warm-up round), each into a fresh place:
 *   - pull: `images.pull(ref)` into the bench's store, with no layer of the image present
 *     (the image and its layers are removed, and the filesystem synced, after each round);
 *   - re-pull: right after that pull, `images.pull(ref)` again, every layer present;
 *   - `crane export REF - | tar -x -C dir` into a fresh empty subvolume (the flattened tree,
 *     in page cache only), and the same followed by `sync -f dir` (its data written back, the
 *     durability a layer of ours has before it is published);
 *   - `crane pull REF dir --format oci` then `driver.applyLayer` of each layer blob from its file
 *     (verified as the pull does), the chain made from local files;
 *   - the floor: the same 5 layers as plain tar files already in page cache (no network, no
 *     inflate), GNU `tar -x` of each in turn into one fresh subvolume, alone and followed by
 *     `sync -f`, and `driver.applyLayer` of each plain tar file, each layer on its parent: what
 *     writing these files into btrfs costs here, which no pull can go under.
 * - memory: a child Node process that does only the pull (bench/pull-rss.cjs) reports its
 *   VmHWM, for the image and for the twice larger one: flat means about the same.
 */
import { spawnSync } from 'node:child_process'
import { createCipheriv, createHash } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { gzipSync } from 'node:zlib'
import { ImageStore, createSubvolume, deleteSubvolume, type BtrfsDriver } from '../ts/index'
import { chainIds, layerIdOf } from '../ts/image/chain'
import { buildTar, type RawEntry } from '../__test__/helpers/diff-tar'
import { image as buildImage, writeLayout, type BuiltLayer } from '../__test__/helpers/oci-layout'
import { startRegistry, toolPath, type TestRegistry } from '../__test__/helpers/registry'
import {
  ROOT,
  envInt,
  fmtBytes,
  fmtRatio,
  fmtTime,
  log,
  median,
  now,
  quantile,
  rotate,
  scaled,
  settle,
  since,
  type Chart,
  type Fs,
  type SectionResult,
} from './lib'

const BYTES = envInt('BTRFS_LAYERS_BENCH_IMAGES_BYTES', scaled(100_000_000, 2_000_000))
const REPS = envInt('BTRFS_LAYERS_BENCH_IMAGES_REPS', 7)
const TARGET = 0.8
/** Blob requests of a pull open at once; unset: the pull's default. */
const CONCURRENCY = process.env.BTRFS_LAYERS_BENCH_IMAGES_CONCURRENCY ? envInt('BTRFS_LAYERS_BENCH_IMAGES_CONCURRENCY', 3) : undefined
const PULL_OPTIONS = CONCURRENCY === undefined ? {} : { concurrency: CONCURRENCY }

type Impl = 'pull' | 'repull' | 'export' | 'exportSync' | 'craneApply' | 'floorTar' | 'floorTarSync' | 'floorApply'
const IMPLS: Impl[] = ['pull', 'repull', 'export', 'exportSync', 'craneApply', 'floorTar', 'floorTarSync', 'floorApply']
const LABEL: Record<Impl, string> = {
  pull: 'images.pull (no layer present)',
  repull: 'images.pull again (all layers present)',
  export: 'crane export | tar -x',
  exportSync: 'crane export | tar -x + sync -f',
  craneApply: 'crane pull + applyLayer of each blob',
  floorTar: 'floor: tar -x of the 5 plain tars (page cache)',
  floorTarSync: 'floor: tar -x of the 5 plain tars + sync -f',
  floorApply: 'floor: applyLayer of the 5 plain tars (page cache)',
}
/** What one round runs, in rotating order; `repull` runs right after `pull`. */
const ROUND: Exclude<Impl, 'repull'>[] = ['pull', 'export', 'exportSync', 'craneApply', 'floorTar', 'floorTarSync', 'floorApply']

// ---------------------------------------------------------------------------------------------
// the image, from a fixed seed

function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Deterministic incompressible bytes: AES-256-CTR of zeros under a key made of `seed`. */
function randomBytesOf(seed: number, n: number): Buffer {
  const key = Buffer.alloc(32)
  key.writeUInt32LE(seed >>> 0, 0)
  const c = createCipheriv('aes-256-ctr', key, Buffer.alloc(16))
  return Buffer.concat([c.update(Buffer.alloc(n)), c.final()])
}

/** Words from a 4,096-word vocabulary, lines of about 80 characters: compresses about 3x. */
function textOf(rand: () => number, words: Buffer[], n: number): Buffer {
  const out = Buffer.allocUnsafe(n + 32)
  let o = 0
  let line = 0
  while (o < n) {
    const w = words[Math.floor(rand() * words.length)]
    w.copy(out, o)
    o += w.length
    line += w.length
    out[o++] = line > 72 ? 10 : 32
    if (line > 72) line = 0
  }
  return out.subarray(0, n)
}

interface LayerPlan {
  /** Share of the image's bytes. */
  share: number
  /** File sizes from `min` to `max`, log-uniform. */
  min: number
  max: number
  /** Share of the files that are text (the rest random). */
  text: number
}

const PLAN: LayerPlan[] = [
  { share: 0.3, min: 4 << 10, max: 512 << 10, text: 0.8 }, // a base: libraries and text
  { share: 0.25, min: 2 << 20, max: 8 << 20, text: 0 }, // a few large binaries
  { share: 0.15, min: 512, max: 16 << 10, text: 0.5 }, // many small files
  { share: 0.25, min: 100 << 10, max: 1 << 20, text: 0.4 }, // an application
  { share: 0.05, min: 1 << 10, max: 64 << 10, text: 1 }, // configuration
]

/** The image's layers (tar, gzip blob, digests) of about `total` bytes of tar, from `seed`. */
export function makeLayers(total: number, seed: number): { layers: BuiltLayer[]; tarBytes: number; files: number } {
  const rand = prng(seed)
  const words: Buffer[] = []
  for (let i = 0; i < 4096; i++) {
    const len = 2 + Math.floor(rand() * 9)
    words.push(Buffer.from(Array.from({ length: len }, () => String.fromCharCode(97 + Math.floor(rand() * 26))).join('')))
  }
  const layers: BuiltLayer[] = []
  let tarBytes = 0
  let files = 0
  PLAN.forEach((p, li) => {
    const entries: RawEntry[] = [{ name: `l${li}/`, type: '5', mode: 0o755, mtime: 1_700_000_000 }]
    let left = Math.round(total * p.share)
    let f = 0
    const dirs = Math.max(1, Math.ceil(left / (4 << 20)))
    for (let d = 0; d < dirs; d++) entries.push({ name: `l${li}/d${d}/`, type: '5', mode: 0o755, mtime: 1_700_000_000 })
    while (left > 0) {
      const size = Math.min(left, Math.round(Math.exp(Math.log(p.min) + rand() * (Math.log(p.max) - Math.log(p.min)))))
      const body = rand() < p.text ? textOf(rand, words, size) : randomBytesOf(seed * 1000 + li * 100_000 + f, size)
      entries.push({ name: `l${li}/d${f % dirs}/f${f}`, type: '0', mode: 0o644, mtime: 1_700_000_000, body })
      left -= size + 512
      f++
    }
    files += f
    const tar = buildTar(entries)
    tarBytes += tar.length
    const blob = gzipSync(tar, { level: 6 })
    layers.push({ tar, blob, digest: sha(blob), diffId: sha(tar), mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' })
  })
  return { layers, tarBytes, files }
}

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`

export interface Pushed {
  ref: string
  repository: string
  tarBytes: number
  blobBytes: number
  files: number
  layers: number
  diffIds: string[]
  blobs: string[]
  /** With `tarsDir`: each layer's uncompressed tar, written there, base first. */
  tarFiles: string[]
}

/** Make the image of `total` bytes from `seed` and push it; with `tarsDir`, also keep each layer's plain tar there. */
export async function pushImage(reg: TestRegistry, base: string, name: string, total: number, seed: number, tarsDir?: string): Promise<Pushed> {
  const t = now()
  const { layers, tarBytes, files } = makeLayers(total, seed)
  const img = buildImage(layers)
  const dir = path.join(base, `layout-${name}`)
  await writeLayout(dir, [img])
  const ref = `${reg.host}/bench/${name}:v1`
  await reg.crane(['push', dir, ref])
  fs.rmSync(dir, { recursive: true, force: true })
  const blobBytes = layers.reduce((n, l) => n + l.blob.length, 0)
  const tarFiles = tarsDir ? layers.map((l, i) => path.join(tarsDir, `${name}-layer${i}.tar`)) : []
  tarFiles.forEach((file, i) => fs.writeFileSync(file, layers[i].tar))
  log(`images: ${name}: ${layers.length} layers, ${files} files, ${fmtBytes(tarBytes)} of tar, ${fmtBytes(blobBytes)} gzip, made and pushed in ${fmtTime(since(t))}`)
  return { ref, repository: `bench/${name}`, tarBytes, blobBytes, files, layers: layers.length, diffIds: layers.map((l) => l.diffId), blobs: layers.map((l) => l.digest), tarFiles }
}

// ---------------------------------------------------------------------------------------------

function sh(script: string, args: string[], env: NodeJS.ProcessEnv): number {
  const t = now()
  const r = spawnSync('bash', ['-o', 'pipefail', '-c', script, 'bench', ...args], { stdio: ['ignore', 'ignore', 'pipe'], env })
  const ns = since(t)
  if (r.status !== 0) throw new Error(`${script} ${args.join(' ')}: ${r.stderr?.toString().trim() || r.error?.message}`)
  return ns
}

interface ChildReport {
  before: { hwmKiB: number; rssKiB: number }
  after: { hwmKiB: number; rssKiB: number }
  sampledPeakRss: number
  ns: number
}

interface ImagesSummary {
  tarBytes: number
  blobBytes: number
  medianNs: Record<Impl, number>
  rss: { image: ChildReport; double: ChildReport }
}

export function imagesCharts(s: ImagesSummary): Chart[] {
  return [
    {
      file: 'images.svg',
      title: `Pull of a ${fmtBytes(s.tarBytes)} image (${fmtBytes(s.blobBytes)} gzip) from a local registry (median)`,
      unit: 'ns',
      axis: 'median time',
      groups: [{ label: 'pull', bars: IMPLS.map((impl) => ({ impl: LABEL[impl], value: s.medianNs[impl] })) }],
    },
  ]
}

export async function sectionImages(f: Fs, driver: BtrfsDriver): Promise<SectionResult> {
  const crane = toolPath('crane')
  if (!crane || !toolPath('registry')) throw new Error('section images needs registry and crane: bash scripts/test-tools.sh')
  const base = path.join(f.work, 'images')
  fs.mkdirSync(base)
  const reg = await startRegistry()
  try {
    const img = await pushImage(reg, base, 'img', BYTES, 1, base)
    const dbl = await pushImage(reg, base, 'img2x', 2 * BYTES, 2)
    const env: NodeJS.ProcessEnv = { PATH: `${path.dirname(crane)}:${process.env.PATH ?? ''}`, HOME: base }
    const images = await ImageStore.open(driver)
    const ids = chainIds(img.diffIds).map(layerIdOf)
    await settle(f)
    /** The image's layers applied from local files (each verified as the pull does), each on its parent. */
    const applyChain = async (files: string[], digests: string[]): Promise<void> => {
      let parent: string | null = null
      for (const [i, id] of ids.entries()) {
        await driver.applyLayer(id, files[i], { parent, verify: { digest: digests[i], size: fs.statSync(files[i]).size, diffId: img.diffIds[i] } })
        parent = id
      }
    }
    const removeChain = async (): Promise<void> => {
      for (const id of [...ids].reverse()) await driver.remove(id)
    }

    const samples = Object.fromEntries(IMPLS.map((i) => [i, []])) as unknown as Record<Impl, number[]>
    /** exportSync: the `sync -f` alone; floorTarSync: its `sync -f` alone; craneApply: the `crane pull` alone. */
    const syncfs: number[] = []
    const floorSyncfs: number[] = []
    const cranePull: number[] = []
    let repullRequests: { method: string; uri: string }[] = []
    for (let rep = -1; rep < REPS; rep++) {
      for (const impl of rotate(ROUND, rep + 1)) {
        let ns: number
        if (impl === 'pull') {
          let t = now()
          await images.pull(img.ref, PULL_OPTIONS)
          ns = since(t)
          const before = rep === 0 ? (await reg.requests()).length : 0
          t = now()
          await images.pull(img.ref)
          const re = since(t)
          if (rep === 0) repullRequests = (await reg.requests()).slice(before)
          if (rep >= 0) samples.repull.push(re)
          const removed = await images.remove(img.ref)
          if (removed.layers.length !== img.layers) throw new Error(`remove left layers: ${JSON.stringify(removed)}`)
        } else if (impl === 'export' || impl === 'exportSync' || impl === 'floorTar' || impl === 'floorTarSync') {
          const floor = impl === 'floorTar' || impl === 'floorTarSync'
          const dst = path.join(base, `${floor ? 'floor' : 'export'}-${rep}`)
          await createSubvolume(dst)
          await settle(f)
          ns = floor
            ? sh('d="$1"; shift; for t in "$@"; do tar -x -C "$d" -f "$t"; done', [dst, ...img.tarFiles], env)
            : sh('crane export "$1" - | tar -x -C "$2"', [img.ref, dst], env)
          if (impl === 'exportSync' || impl === 'floorTarSync') {
            const t = now()
            const r = spawnSync('sync', ['-f', dst])
            const s = since(t)
            if (r.status !== 0) throw new Error(`sync -f ${dst}: ${r.status}`)
            ns += s
            if (rep >= 0) (floor ? floorSyncfs : syncfs).push(s)
          }
          await deleteSubvolume(dst, { recursive: true })
        } else if (impl === 'floorApply') {
          await settle(f)
          const t = now()
          await applyChain(img.tarFiles, img.diffIds)
          ns = since(t)
          await removeChain()
        } else {
          const dst = path.join(base, `crane-${rep}`)
          await settle(f)
          const t = now()
          const c = sh('crane pull "$1" "$2" --format oci', [img.ref, dst], env)
          await applyChain(
            img.blobs.map((b) => path.join(dst, 'blobs', 'sha256', b.slice(7))),
            img.blobs,
          )
          ns = since(t)
          if (rep >= 0) cranePull.push(c)
          await removeChain()
          fs.rmSync(dst, { recursive: true, force: true })
        }
        if (rep >= 0) samples[impl].push(ns)
        await settle(f)
      }
      log(`  images round ${rep + 1}/${REPS}${rep < 0 ? ' (warm-up)' : ''}: pull ${fmtTime(samples.pull.at(-1) ?? NaN)}`)
    }

    // ---- re-pull of the twice larger image: O(1) in the image size
    await images.pull(dbl.ref)
    const before2 = (await reg.requests()).length
    const repull2: number[] = []
    for (let i = 0; i < REPS; i++) {
      const t = now()
      await images.pull(dbl.ref)
      repull2.push(since(t))
    }
    const repull2Requests = (await reg.requests()).slice(before2).length / REPS
    await images.remove(dbl.ref)
    await settle(f)

    // ---- peak RSS of a process doing only the pull
    const rssHome = path.join(base, 'store-rss')
    const child = (ref: string): ChildReport => {
      const r = spawnSync(process.execPath, [path.join(__dirname, 'pull-rss.cjs'), rssHome, ref], { encoding: 'utf8', cwd: ROOT })
      if (r.status !== 0) throw new Error(`pull-rss.cjs ${ref}: ${r.stderr || r.error?.message}`)
      return JSON.parse(r.stdout) as ChildReport
    }
    const rssImage = child(img.ref)
    await settle(f)
    const rssDouble = child(dbl.ref)
    if (fs.existsSync(rssHome)) await deleteSubvolume(rssHome, { recursive: true })
    fs.rmSync(base, { recursive: true, force: true })
    await settle(f)

    // ---- report
    const m = (impl: Impl): number => median(samples[impl])
    const best = Math.min(m('export'), m('craneApply'))
    const bestLabel = m('export') <= m('craneApply') ? LABEL.export : LABEL.craneApply
    const ratio = m('pull') / best
    /** The floor a pull cannot go under (its layers' data is written back before each publish), against the same best. */
    const floorRatio = m('floorTarSync') / best
    const floorReach = floorRatio > TARGET ? 'so 0.8x is out of reach for any pull that writes these files and syncs them' : `so 0.8x is within the floor's reach`
    // The crane pull + applyLayer row runs our own apply of the same blobs after crane's
    // download: a pull can hide its download, not that apply, so against that row it cannot go
    // under (that row's apply) / (that row).
    const applyOfBlobs = m('craneApply') - median(cranePull)
    const applyBound = applyOfBlobs / m('craneApply')
    const boundNote = `; a pull applies the same blobs with the same code as the crane pull + applyLayer row, whose apply alone is ${fmtTime(applyOfBlobs)}: against that row no pull can go under ${fmtRatio(applyBound)}, and a faster apply lowers both`
    const hwm = (c: ChildReport): number => c.after.hwmKiB * 1024
    const growth = (c: ChildReport): number => (c.after.hwmKiB - c.before.hwmKiB) * 1024
    const flat = hwm(rssDouble) <= hwm(rssImage) * 1.2
    const repullRatio = median(repull2) / m('repull')
    const targets: SectionResult['targets'] = [
      {
        section: 'images',
        what: `pull of a ${fmtBytes(img.tarBytes)} image in ${img.layers} layers: pull / the faster of (crane export | tar -x) and (crane pull + applyLayer)`,
        measured: `${fmtRatio(ratio)} (${fmtTime(m('pull'))} vs ${bestLabel} ${fmtTime(best)})`,
        target: `≤ ${TARGET}x (floor: tar -x of the plain tars + sync -f is ${fmtRatio(floorRatio)} of the best, ${floorReach}${boundNote})`,
        pass: ratio <= TARGET,
      },
      {
        section: 'images',
        what: 'pull: peak RSS (VmHWM) of a process doing only the pull, image twice as large / image',
        measured: `${fmtBytes(hwm(rssDouble))} vs ${fmtBytes(hwm(rssImage))}`,
        target: '≤ 1.2x (flat in the image size)',
        pass: flat,
      },
      {
        section: 'images',
        what: 're-pull with every layer present: image twice as large / image',
        measured: `${fmtRatio(repullRatio)} (${fmtTime(median(repull2))} vs ${fmtTime(m('repull'))}; ${repullRequests.length} and ${repull2Requests} requests)`,
        target: '≤ 1.5x (independent of the image size)',
        pass: repullRatio <= 1.5 && repull2Requests === repullRequests.length,
      },
    ]
    const rows = IMPLS.map((impl) => [
      LABEL[impl],
      fmtTime(m(impl)),
      fmtTime(quantile(samples[impl], 0.1)),
      fmtTime(quantile(samples[impl], 0.9)),
      fmtRatio(m(impl) / m('export')),
      fmtRatio(m(impl) / m('exportSync')),
      fmtRatio(m(impl) / m('craneApply')),
      fmtRatio(m(impl) / m('floorTarSync')),
    ])
    const verdict =
      `${ratio <= TARGET ? 'PASS' : 'MISS'}: the target is a pull in at most ${TARGET}x the time of the faster of ` +
      `\`crane export | tar -x\` (no write-back) and \`crane pull\` + applyLayer; measured ${fmtRatio(ratio)} ` +
      `(${fmtTime(m('pull'))} vs ${bestLabel} ${fmtTime(best)}). Against \`crane export | tar -x\` followed by ` +
      `\`sync -f\` (its data on disk, as a pulled layer's is): ${fmtRatio(m('pull') / m('exportSync'))}. ` +
      `The floor, writing the same files from plain tars in page cache (no network, no inflate): \`tar -x\` of each ${fmtTime(m('floorTar'))}, ` +
      `+ \`sync -f\` ${fmtTime(m('floorTarSync'))}, our applyLayer of each ${fmtTime(m('floorApply'))}; pull / floor + sync ${fmtRatio(m('pull') / m('floorTarSync'))}, ` +
      `pull / our applyLayer floor ${fmtRatio(m('pull') / m('floorApply'))}. The floor + sync is ${fmtRatio(floorRatio)} of the best, ${floorReach}.`
    const summary: ImagesSummary & Record<string, unknown> = {
      tarBytes: img.tarBytes,
      blobBytes: img.blobBytes,
      files: img.files,
      layers: img.layers,
      double: { tarBytes: dbl.tarBytes, blobBytes: dbl.blobBytes },
      medianNs: Object.fromEntries(IMPLS.map((i) => [i, m(i)])) as Record<Impl, number>,
      pullOverBest: ratio,
      pullOverExport: m('pull') / m('export'),
      pullOverExportSync: m('pull') / m('exportSync'),
      pullOverCraneApply: m('pull') / m('craneApply'),
      pullOverFloorTarSync: m('pull') / m('floorTarSync'),
      pullOverFloorApply: m('pull') / m('floorApply'),
      floorTarSyncOverBest: floorRatio,
      floorSyncfsMedianNs: median(floorSyncfs),
      syncfsAfterExportMedianNs: median(syncfs),
      cranePullMedianNs: median(cranePull),
      repullRequests,
      repullDoubleMedianNs: median(repull2),
      repullDoubleRequests: repull2Requests,
      rss: { image: rssImage, double: rssDouble },
    }
    const charts = imagesCharts(summary)
    return {
      key: 'images',
      title: 'ImageStore.pull vs crane',
      blocks: [
        {
          kind: 'p',
          text:
            `The image: ${img.layers} gzip layers (level 6), ${img.files} files of log-uniform sizes (512 B to 8 MiB; ` +
            `word text and random bytes, fixed seed), ${fmtBytes(img.tarBytes)} of tar, ${fmtBytes(img.blobBytes)} of blobs, ` +
            'pushed with `crane push` to distribution\'s `registry` on 127.0.0.1 (no auth, filesystem storage). ' +
            `${REPS} interleaved rounds in rotating order after one unrecorded warm-up round; each run into a fresh place: ` +
            'the pull into a store holding no layer of the image (image and layers removed and the filesystem synced ' +
            'after each round); the re-pull right after it, all layers present; `crane export REF - | tar -x -C dir` ' +
            'into a fresh empty subvolume, alone and followed by `sync -f dir` (the data written back, as the driver ' +
            'does before it publishes a layer); `crane pull REF dir --format oci` followed by `driver.applyLayer` of ' +
            'each blob file, verified, each layer on its parent; the floor: the 5 layers as plain tar files in page cache, ' +
            '`tar -x -f` of each in turn into one fresh empty subvolume (alone and followed by `sync -f`), and `driver.applyLayer` ' +
            'of each plain tar file, verified, each layer on its parent (no network, no inflate; the image has no whiteouts). ' +
            'Registry blobs are warm in the page cache.',
        },
        { kind: 'table', head: ['implementation', 'median', 'p10', 'p90', '/ export | tar -x', '/ export | tar -x + sync', '/ crane pull + apply', '/ floor tar -x + sync'], rows },
        {
          kind: 'list',
          items: [
            verdict,
            `crane export | tar -x + sync -f: the sync -f alone ${fmtTime(median(syncfs))}; floor tar -x + sync -f: the sync -f alone ${fmtTime(median(floorSyncfs))}; crane pull + applyLayer: the crane pull alone ${fmtTime(median(cranePull))}.`,
            `Re-pull, all layers present: ${fmtTime(m('repull'))} for this image, ${fmtTime(median(repull2))} for one of ${fmtBytes(dbl.tarBytes)}; ` +
              `requests: ${repullRequests.map((r) => `${r.method} ${r.uri.replace(/sha256:[0-9a-f]{64}/, 'sha256:…')}`).join(', ')}.`,
            `Peak RSS (VmHWM) of a Node process doing only the pull (bench/pull-rss.cjs): ${fmtBytes(hwm(rssImage))} ` +
              `(+${fmtBytes(growth(rssImage))} over its start) for this image, ${fmtBytes(hwm(rssDouble))} (+${fmtBytes(growth(rssDouble))}) ` +
              `for the ${fmtBytes(dbl.tarBytes)} one: ${flat ? 'flat' : 'NOT flat'}.`,
          ],
        },
        { kind: 'chart', file: charts[0].file, title: charts[0].title },
      ],
      targets,
      charts,
      summary,
      samples: { ...samples, syncfs, floorSyncfs, cranePull, repull2 },
      config: { BYTES, REPS, TARGET, CONCURRENCY, PLAN },
    }
  } finally {
    await reg.stop()
    fs.rmSync(base, { recursive: true, force: true })
  }
}
