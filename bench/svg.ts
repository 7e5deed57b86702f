/**
 * Horizontal bar charts as hand-written SVG (no dependency): one group of bars per operation,
 * one bar per implementation, the median printed at the end of each bar, a labelled x axis
 * with grid lines, on a log scale when the values span a large ratio.
 */
import { fmtBytes, fmtTime, type Chart } from './lib'

const W = 860
const LABEL_W = 300
const X0 = LABEL_W + 12
const PLOT_W = W - X0 - 100
const ROW = 22
const BAR = 14
const GROUP = 24
const TOP = 58
/** Values spanning more than this ratio are drawn on a log scale. */
const LOG_RATIO = 20

const PALETTE = ['#4269d0', '#efb118', '#ff725c', '#6cc5b0', '#3ca951', '#ff8ab7', '#a463f2', '#97bbf5', '#9c6b4e', '#9498a0']

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')

/** Round a positive number to 1, 2 or 5 times a power of ten, at least `x`. */
function niceStep(x: number): number {
  const p = 10 ** Math.floor(Math.log10(x))
  for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p
  return 10 * p
}

/** Short axis label for a time in ns: `100 µs`, `1.5 s`. */
function tickTime(ns: number): string {
  const trim = (x: number): string => String(Number(x.toPrecision(3)))
  if (ns === 0) return '0'
  if (ns < 1e3) return `${trim(ns)} ns`
  if (ns < 1e6) return `${trim(ns / 1e3)} µs`
  if (ns < 1e9) return `${trim(ns / 1e6)} ms`
  return `${trim(ns / 1e9)} s`
}

const MIB = 1024 * 1024
const tickBytes = (b: number): string => (b === 0 ? '0' : `${Number((b / MIB).toPrecision(3))} MiB`)

interface Scale {
  x: (v: number) => number
  ticks: number[]
  log: boolean
}

function makeScale(values: number[], unit: Chart['unit']): Scale {
  const vs = values.filter((v) => Number.isFinite(v) && v > 0)
  const max = vs.length ? Math.max(...vs) : 1
  const min = vs.length ? Math.min(...vs) : 1
  if (max / min >= LOG_RATIO) {
    // From a power of ten at least a third of a decade below the smallest value, so its bar
    // shows; to 1, 2 or 5 times a power of ten at or above the largest.
    const lo = 10 ** Math.floor(Math.log10(min) - 0.3)
    const hi = niceStep(max)
    const span = Math.log10(hi) - Math.log10(lo)
    const ticks: number[] = []
    for (let e = Math.round(Math.log10(lo)); 10 ** e <= hi * (1 + 1e-9); e++) ticks.push(10 ** e)
    // The end of the axis gets a tick of its own only when its label has room (5x the last power).
    if (hi / ticks[ticks.length - 1] >= 4.9) ticks.push(hi)
    return { x: (v) => X0 + (PLOT_W * (Math.log10(Math.max(v, lo)) - Math.log10(lo))) / span, ticks, log: true }
  }
  // Linear from 0, with 4 to 10 ticks; bytes step in MiB.
  const u = unit === 'bytes' ? MIB : 1
  const step = niceStep(max / u / 5) * u
  const hi = Math.ceil(max / step) * step
  const ticks: number[] = []
  for (let v = 0; v <= hi + step / 2; v += step) ticks.push(v)
  return { x: (v) => X0 + (PLOT_W * Math.max(0, v)) / hi, ticks, log: false }
}

export function renderChart(c: Chart): string {
  const all = c.groups.flatMap((g) => g.bars.map((b) => b.value))
  if (c.limit) all.push(c.limit.value)
  const scale = makeScale(all, c.unit)
  const fmtValue = c.unit === 'bytes' ? fmtBytes : fmtTime
  const fmtTick = c.unit === 'bytes' ? tickBytes : tickTime
  const impls: string[] = []
  for (const g of c.groups) for (const b of g.bars) if (!impls.includes(b.impl)) impls.push(b.impl)
  const color = (impl: string): string => PALETTE[impls.indexOf(impl) % PALETTE.length]

  const out: string[] = []
  let y = TOP
  const body: string[] = []
  for (const g of c.groups) {
    body.push(`<text x="12" y="${y + 15}" font-weight="bold">${esc(g.label)}</text>`)
    y += GROUP
    for (const b of g.bars) {
      const ok = Number.isFinite(b.value) && b.value > 0
      const w = ok ? Math.max(1, scale.x(b.value) - X0) : 0
      const cy = y + (ROW - BAR) / 2
      body.push(
        `<text x="${X0 - 8}" y="${y + 15}" text-anchor="end">${esc(b.impl)}</text>`,
        ok ? `<rect x="${X0}" y="${cy}" width="${w.toFixed(1)}" height="${BAR}" fill="${color(b.impl)}"><title>${esc(`${g.label} — ${b.impl}: ${fmtValue(b.value)}`)}</title></rect>` : '',
        `<text x="${(X0 + w + 6).toFixed(1)}" y="${y + 15}">${esc(ok ? fmtValue(b.value) : 'n/a')}</text>`,
      )
      y += ROW
    }
    y += 6
  }
  const axisY = y + 4
  const height = axisY + 58
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}" role="img" aria-label="${esc(c.title)}" font-family="-apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" font-size="12" fill="#222">`,
    `<title>${esc(c.title)}</title>`,
    `<rect width="${W}" height="${height}" fill="#fff"/>`,
    `<text x="12" y="26" font-size="16" font-weight="bold">${esc(c.title)}</text>`,
  )
  // grid and ticks
  for (const v of scale.ticks) {
    const x = scale.x(v).toFixed(1)
    out.push(
      `<line x1="${x}" y1="${TOP - 6}" x2="${x}" y2="${axisY}" stroke="#e3e3e3"/>`,
      `<line x1="${x}" y1="${axisY}" x2="${x}" y2="${axisY + 5}" stroke="#555"/>`,
      `<text x="${x}" y="${axisY + 18}" text-anchor="middle" fill="#444">${esc(fmtTick(v))}</text>`,
    )
  }
  out.push(...body.filter((s) => s !== ''))
  out.push(`<line x1="${X0}" y1="${axisY}" x2="${X0 + PLOT_W}" y2="${axisY}" stroke="#555"/>`)
  out.push(`<line x1="${X0}" y1="${TOP - 6}" x2="${X0}" y2="${axisY}" stroke="#555"/>`)
  if (c.limit) {
    const x = scale.x(c.limit.value).toFixed(1)
    out.push(
      `<line x1="${x}" y1="${TOP - 10}" x2="${x}" y2="${axisY}" stroke="#d62728" stroke-width="1.5" stroke-dasharray="5,3"/>`,
      `<text x="${x}" y="${TOP - 14}" text-anchor="middle" fill="#d62728">${esc(c.limit.label)}</text>`,
    )
  }
  out.push(
    `<text x="${X0 + PLOT_W / 2}" y="${axisY + 40}" text-anchor="middle" fill="#444">${esc(`${c.axis}${scale.log ? ' (log scale)' : ''}`)}</text>`,
    '</svg>',
  )
  return `${out.join('\n')}\n`
}
