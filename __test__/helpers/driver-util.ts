/**
 * Helpers for the BtrfsDriver specs (driver*.spec.ts): opening a driver that is always
 * cleaned up, error assertions, btrfs-progs oracles for qgroups and the store's layout, and
 * running fixture scripts in a child node process.
 *
 * The loop-mounted filesystem itself comes from ./btrfs (useBtrfs).
 */
import type { ExecutionContext } from 'ava'
import { spawn } from 'node:child_process'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { BtrfsDriver, BtrfsError, type DriverOptions } from '../../ts/index'
import { btrfsCli, oracleListAll, treeState } from './btrfs'

/** Container root (0) maps to host 100000, 65536 ids, as a user-namespaced engine does. */
export const HOST_ROOT = 100000
export const REMAP: DriverOptions = {
  uidMaps: [{ containerId: 0, hostId: HOST_ROOT, size: 65536 }],
  gidMaps: [{ containerId: 0, hostId: HOST_ROOT, size: 65536 }],
}

export const REPO = path.resolve(__dirname, '..', '..')
export const FIXTURES = path.join(REPO, '__test__', 'fixtures')

/**
 * Init a driver on `home`, run `fn`, and always clean the driver up (its private bind mount
 * must be gone before the harness unmounts the filesystem).
 */
export async function withDriver<T>(
  home: string,
  opts: DriverOptions | undefined,
  fn: (d: BtrfsDriver) => Promise<T>,
): Promise<T> {
  const d = await BtrfsDriver.init(home, opts)
  try {
    return await fn(d)
  } finally {
    await d.cleanup()
  }
}

/**
 * Assert that `p` rejects with a BtrfsError whose code is `code` (and, for errno codes the
 * native layer raised, the matching errno). Returns the error.
 */
export async function rejectsCode(
  t: ExecutionContext,
  p: Promise<unknown> | (() => Promise<unknown>),
  code: string,
  what = '',
): Promise<BtrfsError | undefined> {
  let err: unknown
  try {
    const v = await (typeof p === 'function' ? p() : p)
    t.fail(`${what}: expected a rejection with ${code}, resolved with ${safeJson(v)}`)
    return undefined
  } catch (e) {
    err = e
  }
  if (code === 'ERR_INVALID_ARG_TYPE') {
    // A wrong JS type: Node's TypeError, not a BtrfsError.
    t.true(err instanceof TypeError, `${what}: a TypeError: ${String(err)}`)
    t.is((err as { code?: string }).code, code, `${what}: code`)
    return undefined
  }
  const e = err as BtrfsError
  if (!(e instanceof BtrfsError)) {
    t.fail(`${what}: not a BtrfsError: ${String(err)}`)
    return undefined
  }
  t.is(e.code, code, `${what}: code (message: ${e.message})`)
  return e
}

function safeJson(v: unknown): string {
  try {
    return JSON.stringify(v)
  } catch {
    return String(v)
  }
}

export interface QgroupRow {
  id: string
  rfer: number
  excl: number
  /** null when unlimited ("none"). */
  maxRfer: number | null
  maxExcl: number | null
  path: string
}

/** `btrfs qgroup show -re --raw <p>`; [] when quotas are off. */
export async function oracleQgroups(p: string): Promise<QgroupRow[]> {
  let out: string
  try {
    out = await btrfsCli('qgroup', 'show', '-re', '--raw', p)
  } catch (e) {
    if (/quota|not enabled|ENOTCONN|Transport endpoint/i.test((e as Error).message)) return []
    throw e
  }
  const rows: QgroupRow[] = []
  for (const line of out.split('\n')) {
    const f = line.trim().split(/\s+/)
    if (!/^\d+\/\d+$/.test(f[0] ?? '')) continue
    const num = (s: string) => (s === 'none' ? null : Number(s))
    rows.push({
      id: f[0],
      rfer: Number(f[1]),
      excl: Number(f[2]),
      maxRfer: num(f[3]),
      maxExcl: num(f[4]),
      path: f.slice(5).join(' '),
    })
  }
  return rows
}

/** Entries of the store's two directories (sorted). */
export async function storeEntries(home: string): Promise<{ subvolumes: string[]; metadata: string[] }> {
  const ls = async (d: string) => {
    try {
      return (await fsp.readdir(d)).sort()
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw e
    }
  }
  return { subvolumes: await ls(path.join(home, 'subvolumes')), metadata: await ls(path.join(home, 'metadata')) }
}

/** Temporary names a crash can leave behind. */
export const isTemporary = (name: string) => name.startsWith('.tmp-') || name.startsWith('.del-')

/** `btrfs subvolume list` paths at or below `home` (relative to home; '' is home itself). */
export async function oracleStoreSubvolumes(mnt: string, home: string): Promise<string[]> {
  const rel = path.relative(mnt, home)
  return (await oracleListAll(mnt))
    .filter((s) => s.path === rel || s.path.startsWith(rel + '/'))
    .map((s) => (s.path === rel ? '' : s.path.slice(rel.length + 1)))
    .sort()
}

/** Whether `p` is a mount point per /proc/self/mountinfo, and how many times it is mounted. */
export async function mountCount(p: string): Promise<number> {
  const text = await fsp.readFile('/proc/self/mountinfo', 'utf8')
  const want = path.resolve(p)
  let n = 0
  for (const line of text.split('\n')) {
    const f = line.split(' ')
    if (f.length < 5) continue
    const mp = f[4].replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)))
    if (mp === want) n++
  }
  return n
}

/** A file's content by layer tree, for comparing a layer with its parent. */
export const layerTree = (dir: string) => treeState(dir)

export interface ChildResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

/** Run `node --import tsx <fixture> ...args` to completion. */
export function runFixture(fixture: string, args: string[], timeoutMs = 60_000): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(FIXTURES, fixture), ...args], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s))
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`${fixture} timed out after ${timeoutMs} ms; stdout: ${stdout} stderr: ${stderr}`))
    }, timeoutMs)
    child.on('error', (e) => {
      clearTimeout(timer)
      reject(e)
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
  })
}

/** A small deterministic PRNG (mulberry32), so random orders are reproducible from a seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

export function shuffle<T>(items: T[], rnd: () => number): T[] {
  const a = [...items]
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1))
    ;[a[i], a[j]] = [a[j], a[i]]
  }
  return a
}

/**
 * Workaround for a library bug (reported): `cleanup()` releases the lock and the private
 * mount but keeps the driver's open directory fds (home/subvolumes, home/metadata) until the
 * native object is garbage-collected, so the filesystem stays busy and the harness cannot
 * detach its loop device. Register this BEFORE `useBtrfs(test)` so that it runs before the
 * harness's teardown: it forces a GC so that finalizers of dead drivers close their fds.
 * The bug itself is asserted by 'cleanup() closes every fd the driver held' in
 * driver-init.spec.ts; once fixed, this is a harmless no-op.
 */
export function collectDriversBeforeTeardown(test: import('ava').TestFn): void {
  test.after.always(async () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const v8 = require('node:v8') as typeof import('node:v8')
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const vm = require('node:vm') as typeof import('node:vm')
    v8.setFlagsFromString('--expose-gc')
    const gc = vm.runInNewContext('gc') as () => void
    for (let i = 0; i < 3; i++) {
      gc()
      await new Promise((r) => setTimeout(r, 20))
    }
  })
}

/**
 * Open fds of this process that refer to the directory `dir` (same device and inode), as
 * found through /proc/self/fd.
 */
export async function fdsOpenOn(dir: string): Promise<number[]> {
  const want = await fsp.stat(dir)
  const out: number[] = []
  for (const name of await fsp.readdir('/proc/self/fd')) {
    try {
      const st = await fsp.stat(`/proc/self/fd/${name}`)
      if (st.dev === want.dev && st.ino === want.ino) out.push(Number(name))
    } catch {
      // closed meanwhile, or not stat-able
    }
  }
  return out
}

/**
 * The record the driver keeps on a layer's root (the xattr `trusted.btrfs-layers.record`), read
 * with getfattr (attr) as the independent oracle; null when the layer has none.
 */
export async function oracleRecord(layer: string): Promise<Record<string, unknown> | null> {
  const { execFile } = await import('node:child_process')
  return new Promise((resolve, reject) => {
    execFile('getfattr', ['--absolute-names', '--only-values', '-n', 'trusted.btrfs-layers.record', layer], (err, stdout, stderr) => {
      if (err) {
        if (/No such attribute/.test(stderr)) resolve(null)
        else reject(new Error(`getfattr ${layer}: ${stderr}`, { cause: err }))
        return
      }
      resolve(JSON.parse(stdout) as Record<string, unknown>)
    })
  })
}
