'use strict'
/**
 * Child process of `npm run bench` (section `tar`): a Node process that does nothing but one
 * `applyDiff`, so its peak resident set (VmHWM) is the applyDiff's own, plus Node's baseline.
 * Plain CommonJS against the built package (dist/), so no TypeScript loader sits in memory.
 *
 *   node bench/apply-rss.cjs <store home> <tar file> <path|stream>
 *
 * Prints one JSON object: VmHWM and VmRSS before and after (KiB), the rss sampled every 20 ms
 * during the call (bytes), the bytes applied and the time.
 */
const fs = require('node:fs')
const path = require('node:path')

function status() {
  const s = fs.readFileSync('/proc/self/status', 'utf8')
  const kb = (k) => Number((new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s) || [])[1])
  return { hwmKiB: kb('VmHWM'), rssKiB: kb('VmRSS') }
}

async function main() {
  const [home, tar, mode] = process.argv.slice(2)
  if (!home || !tar || (mode !== 'path' && mode !== 'stream')) {
    throw new Error('usage: apply-rss.cjs <store home> <tar file> <path|stream>')
  }
  const { BtrfsDriver } = require(path.join(__dirname, '..', 'dist', 'index.js'))
  const driver = await BtrfsDriver.init(home)
  try {
    await driver.create('rss')
    const before = status()
    let peak = process.memoryUsage.rss()
    const timer = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage.rss())
    }, 20)
    const t = process.hrtime.bigint()
    const input = mode === 'path' ? tar : fs.createReadStream(tar)
    const bytes = await driver.applyDiff('rss', null, input)
    const ns = Number(process.hrtime.bigint() - t)
    clearInterval(timer)
    peak = Math.max(peak, process.memoryUsage.rss())
    const after = status()
    await driver.remove('rss')
    process.stdout.write(`${JSON.stringify({ mode, before, after, sampledPeakRss: peak, bytes, ns })}\n`)
  } finally {
    await driver.cleanup()
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : e)
  process.exitCode = 1
})
