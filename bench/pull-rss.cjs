'use strict'
/**
 * Child process of `npm run bench` (section `images`) and of bench/pull-mem.ts: a Node process
 * that does nothing but one `ImageStore.pull`, so its peak resident set (VmHWM) is the pull's
 * own, plus Node's baseline. Plain CommonJS against the built package (dist/), so no TypeScript
 * loader sits in memory.
 *
 *   node bench/pull-rss.cjs <store home> <reference>
 *
 * Prints one JSON object: VmHWM and VmRSS before and after (KiB), the rss sampled every 20 ms
 * during the call (bytes) and the time; `layers`: at each layer's `done` event, rss, VmHWM,
 * heapUsed, external and arrayBuffers (bytes), and the peaks of each over the 20 ms samples
 * (`peaks`). The image and its layers are removed afterwards.
 */
const fs = require('node:fs')
const path = require('node:path')

function status() {
  const s = fs.readFileSync('/proc/self/status', 'utf8')
  const kb = (k) => Number((new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s) || [])[1])
  return { hwmKiB: kb('VmHWM'), rssKiB: kb('VmRSS') }
}

function sample() {
  const m = process.memoryUsage()
  return { rss: m.rss, hwm: status().hwmKiB * 1024, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers }
}

async function main() {
  const [home, ref] = process.argv.slice(2)
  if (!home || !ref) throw new Error('usage: pull-rss.cjs <store home> <reference>')
  const { BtrfsDriver, ImageStore } = require(path.join(__dirname, '..', 'dist', 'index.js'))
  const driver = await BtrfsDriver.init(home)
  try {
    const images = await ImageStore.open(driver)
    const before = status()
    const start = sample()
    let peak = process.memoryUsage.rss()
    const peaks = { ...start }
    const timer = setInterval(() => {
      const s = sample()
      for (const k of Object.keys(peaks)) peaks[k] = Math.max(peaks[k], s[k])
      peak = Math.max(peak, s.rss)
    }, 20)
    const layers = []
    const onProgress = (e) => {
      if (e.state === 'done') layers.push({ layer: e.layer, bytes: e.total, ...sample() })
    }
    const t = process.hrtime.bigint()
    const image = await images.pull(ref, { onProgress })
    const ns = Number(process.hrtime.bigint() - t)
    clearInterval(timer)
    peak = Math.max(peak, process.memoryUsage.rss())
    const after = status()
    await images.remove(ref)
    process.stdout.write(`${JSON.stringify({ ref, before, after, sampledPeakRss: peak, layers: image.layers.length, ns, start, perLayer: layers, peaks })}\n`)
  } finally {
    await driver.cleanup()
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : e)
  process.exitCode = 1
})
