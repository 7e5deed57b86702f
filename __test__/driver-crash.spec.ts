/**
 * The crash test: a child process (fixtures/driver-crash-child.ts) creates and removes layers
 * in a loop and is killed with SIGKILL 50 times, aimed at the middle of `create`, `remove`,
 * the making of a nested subvolume and `init` itself. After every few kills, and at the end,
 * `BtrfsDriver.init` on the same home must find every layer complete (files, metadata, size
 * limit, read-only flag) or absent, no temporary entries, no metadata without a layer, no
 * orphaned subvolumes (btrfs subvolume list), and the private mount of home adopted rather
 * than stacked; `cleanup()` must leave no mount on home.
 */
import test, { type ExecutionContext } from 'ava'
import { spawn } from 'node:child_process'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { BtrfsDriver } from '../ts/index'
import { btrfsCli, fill, oracleListAll, treeState, useBtrfs } from './helpers/btrfs'
import {
  FIXTURES,
  REPO,
  collectDriversBeforeTeardown,
  isTemporary,
  mountCount,
  oracleQgroups,
  oracleRecord,
  oracleStoreSubvolumes,
  prng,
  storeEntries,
  withDriver,
} from './helpers/driver-util'

collectDriversBeforeTeardown(test)
const { btrfsTest, fs } = useBtrfs(test, { size: 2 * 1024 * 1024 * 1024, tools: ['getfattr'] })

const KILLS = 50
const VERIFY_EVERY = 5
const SEED = 0x5eed2024
const SIZE = 256 * 1024 * 1024

type Target = 'initializing' | 'creating' | 'removing' | 'nesting'

interface Killed {
  lines: string[]
  signal: NodeJS.Signals | null
  code: number | null
  stderr: string
  /** Whether the target line was seen (and the kill aimed at it). */
  aimed: boolean
}

/** Start the child and SIGKILL it `delayMs` after its `nth` line starting with `target`. */
function runUntilKilled(home: string, run: number, target: Target, nth: number, delayMs: number): Promise<Killed> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(FIXTURES, 'driver-crash-child.ts'), home, String(run), String(SEED + run)], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const lines: string[] = []
    let partial = ''
    let stderr = ''
    let seen = 0
    let aimed = false
    const kill = () => child.kill('SIGKILL')
    // Never hang: a child that does not reach its target in time is killed anyway.
    const safety = setTimeout(kill, 20_000)
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n')
      partial = parts.pop() ?? ''
      for (const line of parts) {
        lines.push(line)
        if (!aimed && line.split(' ')[0] === target && ++seen === nth) {
          aimed = true
          if (delayMs === 0) kill()
          else setTimeout(kill, delayMs)
        }
      }
    })
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s))
    child.on('error', (e) => {
      clearTimeout(safety)
      reject(e)
    })
    child.on('close', (code, signal) => {
      clearTimeout(safety)
      if (partial) lines.push(partial)
      resolve({ lines, signal, code, stderr, aimed })
    })
  })
}

interface Expected {
  parent: string | null
  readOnly: boolean
  size: boolean
}

/** Drop the nested subvolumes (and their empty placeholders in snapshots) from a tree. */
const withoutNested = (tree: Record<string, string>) =>
  Object.fromEntries(Object.entries(tree).filter(([k]) => !/^nested-/.test(k)))

async function verify(
  t: ExecutionContext,
  home: string,
  expected: Map<string, Expected>,
  baseTree: Record<string, string>,
  when: string,
): Promise<number> {
  const mnt = fs().mnt
  const d = await BtrfsDriver.init(home)
  let layers: string[]
  try {
    t.is(await mountCount(home), 1, `${when}: home mounted exactly once (a crashed driver's bind mount adopted, not stacked)`)
    layers = await d.layers()
    t.true(layers.includes('base'), `${when}: base is there`)
    const entries = await storeEntries(home)
    t.deepEqual(entries.subvolumes.filter(isTemporary), [], `${when}: no temporary subvolumes left`)
    t.deepEqual(entries.metadata.filter(isTemporary), [], `${when}: no temporary metadata left`)
    t.deepEqual(entries.subvolumes, [...layers].sort(), `${when}: every entry of home/subvolumes is a complete layer`)
    t.deepEqual(
      entries.metadata.filter((n) => n !== '.pending-qgroups'),
      [],
      `${when}: records live on the layers, nothing else in metadata/`,
    )
    const rel = path.relative(mnt, home)
    const ids = new Map((await oracleListAll(mnt)).map((s) => [s.path, s.id]))
    const readOnly = new Set((await btrfsCli('subvolume', 'list', '-r', mnt)).split('\n').map((l) => / path (.*)$/.exec(l)?.[1]).filter(Boolean))
    const qgroups = new Map((await oracleQgroups(mnt)).map((q) => [q.id, q]))
    for (const id of layers) {
      const what = `${when}: layer ${id}`
      const m = await d.getMetadata(id)
      const want = id === 'base' ? { parent: null, readOnly: false, size: false } : expected.get(id)
      t.truthy(want, `${what} was created by a child`)
      if (!want) continue
      t.is(m.id, id)
      t.is(m.parent, want.parent, `${what}: parent`)
      // The record itself, read with getfattr: a child's names its parent.
      t.is((await oracleRecord(path.join(home, 'subvolumes', id)))?.parent ?? null, want.parent, `${what}: parent in the record on the layer`)
      t.is(m.readOnly, want.readOnly, `${what}: readOnly in metadata`)
      const subPath = path.join(rel, 'subvolumes', id)
      t.is(readOnly.has(subPath), want.readOnly, `${what}: read-only flag per btrfs subvolume list -r`)
      t.is<number | undefined, number | undefined>(m.subvolumeId, ids.get(subPath), `${what}: subvolume id per btrfs subvolume list`)
      t.is(m.size, want.size ? SIZE : null, `${what}: size`)
      if (want.size) t.is(qgroups.get(`0/${m.subvolumeId}`)?.maxRfer, SIZE, `${what}: qgroup limit`)
      t.deepEqual(withoutNested(await treeState(path.join(home, 'subvolumes', id))), baseTree, `${what}: files equal the base's`)
    }
    const layerSet = new Set(layers)
    const orphans = (await oracleStoreSubvolumes(mnt, home)).filter((p) => {
      if (p === '') return false
      const m = /^subvolumes\/([^/]+)(?:\/(nested-[^/]+))?$/.exec(p)
      return !(m && layerSet.has(m[1]) && (!m[2] || m[2] === `nested-${m[1]}`))
    })
    t.deepEqual(orphans, [], `${when}: no orphaned subvolumes in btrfs subvolume list`)
  } finally {
    await d.cleanup()
  }
  t.is(await mountCount(home), 0, `${when}: cleanup() left no mount on home`)
  return layers.length
}

btrfsTest(`SIGKILL in the middle of create and remove, ${KILLS} times: init finds every layer complete or absent`, async (t, dir) => {
  const started = Date.now()
  const home = path.join(dir, 'home')
  // The base layer, made once by this process.
  let baseTree: Record<string, string> = {}
  await withDriver(home, undefined, async (d) => {
    await d.create('base')
    const p = await d.get('base')
    await fill(p, 6)
    await fsp.symlink('file0.txt', path.join(p, 'link'))
    await fsp.chmod(path.join(p, 'file1.txt'), 0o750)
    await fsp.mkdir(path.join(p, 'etc', 'app'), { recursive: true })
    await fsp.writeFile(path.join(p, 'etc', 'app', 'config'), 'key=value\n'.repeat(500))
    await d.put('base')
    baseTree = await treeState(p)
  })

  const rnd = prng(SEED)
  const expected = new Map<string, Expected>()
  const inFlight: Record<string, number> = { initializing: 0, creating: 0, removing: 0, nesting: 0 }
  let leftoversSeen = 0
  let verified = 0
  const layerCounts: number[] = []
  for (let run = 0; run < KILLS; run++) {
    const target: Target =
      run % 10 === 9 ? 'initializing' : run % 10 === 4 ? 'nesting' : run % 2 === 0 ? 'creating' : 'removing'
    const nth = target === 'initializing' ? 1 : 1 + Math.floor(rnd() * 4)
    const delay = target === 'initializing' ? [0, 0, 1, 2, 4][Math.floor(rnd() * 5)] : [0, 0, 0, 1, 2, 3][Math.floor(rnd() * 6)]
    const r = await runUntilKilled(home, run, target, nth, delay)
    const when = `run ${run} (kill ${delay} ms after ${target} #${nth})`
    const errors = r.lines.filter((l) => l.startsWith('error'))
    t.deepEqual(errors, [], `${when}: the child hit no error; stderr: ${r.stderr}`)
    t.true(r.aimed, `${when}: the child reached its target; lines: ${r.lines.slice(-5).join(' | ')}; stderr: ${r.stderr.slice(-2000)}`)
    t.is(r.signal, 'SIGKILL', `${when}: killed by SIGKILL (exit code ${r.code}); stderr: ${r.stderr.slice(-2000)}`)
    if (errors.length > 0 || r.signal !== 'SIGKILL') break
    for (const line of r.lines) {
      const m = /^creating (\S+) (\S+) (.*)$/.exec(line)
      if (m) {
        const opts = JSON.parse(m[3]) as { size?: string; readOnly?: boolean }
        expected.set(m[1], { parent: m[2], readOnly: opts.readOnly === true, size: opts.size !== undefined })
      }
    }
    // What was the child doing when it died? (A step whose start line is its last line.)
    const last = r.lines[r.lines.length - 1] ?? ''
    const step = last.split(' ')[0]
    if (step in inFlight) inFlight[step]++
    t.true((await mountCount(home)) <= 1, `${when}: the crashed child's bind mount is not stacked on an earlier one`)
    const entries = await storeEntries(home)
    if ([...entries.subvolumes, ...entries.metadata].some(isTemporary)) leftoversSeen++
    if (run % VERIFY_EVERY === VERIFY_EVERY - 1 || run === KILLS - 1) {
      layerCounts.push(await verify(t, home, expected, baseTree, `after ${when}`))
      verified++
    }
  }
  // The end state once more, and a clean store after a final init/cleanup.
  layerCounts.push(await verify(t, home, expected, baseTree, 'at the end'))
  t.log(
    `${KILLS} kills in ${((Date.now() - started) / 1000).toFixed(1)} s; killed mid-step: ${JSON.stringify(inFlight)}; ` +
      `crashes that left temporary entries: ${leftoversSeen}; verified ${verified + 1} times; layers seen: ${layerCounts.join(',')}; ` +
      `layers created in all: ${expected.size}`,
  )
  // The test is only worth something if the kills landed inside the steps.
  t.true(inFlight.creating + inFlight.removing >= 10, `kills inside create/remove: ${JSON.stringify(inFlight)}`)
  t.true(leftoversSeen >= 3, `crashes that left temporary entries for init to sweep: ${leftoversSeen}`)
})
