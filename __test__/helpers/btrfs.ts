/**
 * Test harness: a real btrfs filesystem on a sparse, loop-mounted image, and btrfs-progs as
 * the independent oracle. Never mocks the kernel.
 *
 *   import test from 'ava'
 *   import { useBtrfs } from './helpers/btrfs'
 *   const { btrfsTest, fs } = useBtrfs(test)
 *   btrfsTest('creates a subvolume', async (t, dir) => { ... })   // dir: a fresh directory on btrfs
 *
 * Gating: the tests need root, mkfs.btrfs, btrfs, losetup and working loop mounts. When any is
 * missing they are SKIPPED with a loud message on stderr, unless BTRFS_LAYERS_REQUIRE_BTRFS=1,
 * in which case every btrfs test FAILS with the reason. Tests that check effects with other
 * tools (setfacl, setcap, getfattr, zstd, GNU tar) name them, for the whole file
 * (`useBtrfs(test, { tools })`) or for one test (`btrfsTest.needing(tools)`), and are skipped
 * or fail the same way when one is missing, with the Debian package to install.
 *
 * Every filesystem made here is torn down in `test.after.always` (even when tests fail):
 * everything mounted at or below the mount point is unmounted (lazily if busy), the loop
 * device is detached, the image and the temporary directory are removed. The mount directory
 * is only ever removed with rmdir, never recursively, so a bind mount a test left behind can
 * never make the teardown delete files outside the filesystem.
 */
import type { ExecutionContext, TestFn } from 'ava'
import { execFile, spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { promisify } from 'node:util'

const execFileP = promisify(execFile)

export const BTRFS_SUPER_MAGIC = 0x9123683e
export const GIB = 1024 * 1024 * 1024
const REQUIRE_ENV = 'BTRFS_LAYERS_REQUIRE_BTRFS'

// ---------------------------------------------------------------------------------------------
// Gating
// ---------------------------------------------------------------------------------------------

export interface Availability {
  /** Whether a btrfs can be made and loop-mounted here. */
  available: boolean
  /** Why not, when not. */
  reason?: string
  /** BTRFS_LAYERS_REQUIRE_BTRFS=1: unavailability is a failure, not a skip. */
  required: boolean
}

let cachedAvailability: Availability | undefined
let warned = false

function run(cmd: string, args: string[]): { ok: boolean; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  if (r.error) return { ok: false, out: `${cmd}: ${(r.error as NodeJS.ErrnoException).code ?? r.error.message}` }
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim() }
}

function probe(): string | undefined {
  if (process.platform !== 'linux') return `this is ${process.platform}, not Linux`
  const uid = process.getuid?.()
  if (uid !== 0) return `not running as root (uid ${uid}); creating loop devices and mounting need root`
  for (const tool of ['mkfs.btrfs', 'btrfs', 'losetup', 'mount', 'umount']) {
    const r = run(tool, ['--version'])
    if (!r.ok && /ENOENT/.test(r.out)) return `${tool} is not installed (install btrfs-progs / util-linux)`
  }
  if (!fs.existsSync('/dev/loop-control') && !fs.existsSync('/dev/loop0')) {
    return 'no loop device support (/dev/loop-control is missing; try modprobe loop)'
  }
  // The real thing, once per process: make, mount and unmount a small btrfs.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'btrfs-layers-probe-'))
  const image = path.join(dir, 'image')
  const mnt = path.join(dir, 'mnt')
  try {
    fs.mkdirSync(mnt)
    fs.closeSync(fs.openSync(image, 'w'))
    fs.truncateSync(image, GIB)
    let r = run('mkfs.btrfs', ['-q', '-f', image])
    if (!r.ok) return `mkfs.btrfs failed: ${r.out}`
    r = run('mount', ['-o', 'loop', image, mnt])
    if (!r.ok) return `mount -o loop of a btrfs image failed (btrfs or loop module missing?): ${r.out}`
    const type = fs.statfsSync(mnt).type
    run('umount', [mnt])
    if (type !== BTRFS_SUPER_MAGIC) return `the loop mount is not btrfs (statfs type 0x${type.toString(16)})`
    return undefined
  } catch (e) {
    return `probe failed: ${(e as Error).message}`
  } finally {
    if (mountsAtOrBelow(mnt).length === 0) fs.rmSync(dir, { recursive: true, force: true })
    detachLoopsSync(image)
  }
}

/** Whether real-btrfs tests can run here; prints the loud SKIPPED/FAILING banner once. */
export function requireBtrfs(file?: string): Availability {
  if (!cachedAvailability) {
    const reason = probe()
    cachedAvailability = { available: !reason, reason, required: process.env[REQUIRE_ENV] === '1' }
  }
  const a = cachedAvailability
  if (!a.available && !warned) {
    warned = true
    const bar = '!'.repeat(100)
    const verdict = a.required
      ? `${REQUIRE_ENV}=1 is set, so every btrfs test FAILS.`
      : `The btrfs tests of this file are SKIPPED. Set ${REQUIRE_ENV}=1 to make this a failure.`
    console.error(
      [
        '',
        bar,
        `!!! btrfs-layers: CANNOT TEST AGAINST A REAL BTRFS FILESYSTEM${file ? ` (${path.basename(file)})` : ''}`,
        `!!! Reason: ${a.reason}`,
        `!!! ${verdict}`,
        '!!! Run the suite as root on Linux with btrfs-progs and loop devices (e.g. sudo npm test).',
        bar,
        '',
      ].join('\n'),
    )
  }
  return a
}

// ---------------------------------------------------------------------------------------------
// Tools the tests check effects with
// ---------------------------------------------------------------------------------------------

/** The Debian package of each tool the tests check effects with (beyond btrfs-progs). */
export const TOOL_PACKAGES = {
  setfacl: 'acl',
  getfacl: 'acl',
  setfattr: 'attr',
  getfattr: 'attr',
  setcap: 'libcap2-bin',
  getcap: 'libcap2-bin',
  zstd: 'zstd',
  gzip: 'gzip',
  tar: 'tar',
} as const
export type Tool = keyof typeof TOOL_PACKAGES

const toolRuns = new Map<string, boolean>()

/** Those of `tools` that cannot be run from PATH (spawning is the test: it may exist and not run). */
export function missingTools(tools: readonly Tool[]): Tool[] {
  return [...new Set(tools)].filter((tool) => {
    if (!toolRuns.has(tool)) toolRuns.set(tool, !spawnSync(tool, ['--version'], { stdio: 'ignore' }).error)
    return !toolRuns.get(tool)
  })
}

/** `setfacl (acl), zstd (zstd)` and `apt-get install -y acl zstd` for the messages. */
function describeMissing(missing: readonly Tool[]): { named: string; install: string } {
  const packages = [...new Set(missing.map((t) => TOOL_PACKAGES[t]))]
  return { named: missing.map((t) => `${t} (${TOOL_PACKAGES[t]})`).join(', '), install: `apt-get install -y ${packages.join(' ')}` }
}

const toolsWarned = new Set<string>()

/** The loud SKIPPED/FAILING banner for tests of `file` that need `missing`, once per set. */
function warnMissingTools(file: string | undefined, missing: readonly Tool[], what: string): void {
  const { named, install } = describeMissing(missing)
  if (toolsWarned.has(named)) return
  toolsWarned.add(named)
  const bar = '!'.repeat(100)
  const verdict =
    process.env[REQUIRE_ENV] === '1'
      ? `${REQUIRE_ENV}=1 is set, so ${what} FAIL.`
      : `${what[0].toUpperCase()}${what.slice(1)} are SKIPPED. Set ${REQUIRE_ENV}=1 to make this a failure.`
  console.error(
    [
      '',
      bar,
      `!!! btrfs-layers: TESTS NEED TOOLS THAT ARE NOT INSTALLED${file ? ` (${path.basename(file)})` : ''}: ${named}`,
      `!!! Install them: ${install}`,
      `!!! ${verdict}`,
      bar,
      '',
    ].join('\n'),
  )
}

// ---------------------------------------------------------------------------------------------
// Making and tearing down filesystems
// ---------------------------------------------------------------------------------------------

export interface BtrfsOptions {
  /** Size of the sparse image; 1 GiB by default. */
  size?: number
  /** `mkfs.btrfs -L label`. */
  label?: string
  /** More mkfs.btrfs arguments, e.g. `['--nodesize', '32768']`. */
  mkfsArgs?: string[]
}

export interface Btrfs {
  /** Mount point of the filesystem. */
  mnt: string
  /** The sparse image file. */
  image: string
  /** The temporary directory holding both. */
  dir: string
  /** Unmount, detach the loop device, remove the temporary directory. Idempotent. */
  teardown(): Promise<void>
}

/** Decode the octal escapes of /proc/self/mountinfo. */
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)))
}

/** Mount points equal to `p` or below it, deepest first. */
export function mountsAtOrBelow(p: string): string[] {
  const root = path.resolve(p)
  const text = fs.readFileSync('/proc/self/mountinfo', 'utf8')
  const out: string[] = []
  for (const line of text.split('\n')) {
    const f = line.split(' ')
    if (f.length < 5) continue
    const mp = unescapeMount(f[4])
    if (mp === root || mp.startsWith(root + '/')) out.push(mp)
  }
  return out.sort((a, b) => b.length - a.length)
}

/** Mount points (anywhere in this namespace) whose source is one of `devices`, deepest first. */
export function mountsOfDevices(devices: string[]): string[] {
  if (devices.length === 0) return []
  const text = fs.readFileSync('/proc/self/mountinfo', 'utf8')
  const out: string[] = []
  for (const line of text.split('\n')) {
    const [pre, post] = line.split(' - ')
    if (!post) continue
    const source = unescapeMount(post.split(' ')[1] ?? '')
    if (devices.includes(source)) out.push(unescapeMount(pre.split(' ')[4]))
  }
  return out.sort((a, b) => b.length - a.length)
}

export function isMountPoint(p: string): boolean {
  return mountsAtOrBelow(p).includes(path.resolve(p))
}

function loopsOf(image: string): string[] {
  const r = run('losetup', ['-j', image])
  if (!r.ok) return []
  return r.out
    .split('\n')
    .map((l) => l.split(':')[0].trim())
    .filter((d) => d.startsWith('/dev/'))
}

function detachLoopsSync(image: string): string[] {
  for (const dev of loopsOf(image)) run('losetup', ['-d', dev])
  return loopsOf(image)
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Create a sparse image in a fresh temp dir, mkfs.btrfs it and loop-mount it. */
export async function createBtrfs(opts: BtrfsOptions = {}): Promise<Btrfs> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'btrfs-layers-test-'))
  const image = path.join(dir, 'image')
  const mnt = path.join(dir, 'mnt')
  let torn = false
  const teardown = async () => {
    if (torn) return
    torn = true
    const problems: string[] = []
    // 1. Unmount everything at or below mnt (including bind mounts a test left behind) and
    //    any other mount of our loop device (e.g. a bind of a directory of it elsewhere).
    const devices = loopsOf(image)
    const ours = () => [...new Set([...mountsAtOrBelow(mnt), ...mountsOfDevices(devices)])]
    for (let attempt = 0; attempt < 10 && ours().length > 0; attempt++) {
      for (const mp of ours()) run('umount', [mp])
      if (ours().length > 0) await sleep(100 * (attempt + 1))
    }
    const stuck = ours()
    if (stuck.length > 0) {
      for (const mp of stuck) run('umount', ['-l', mp])
      const still = ours()
      if (still.length > 0) problems.push(`still mounted after umount -l: ${still.join(', ')}`)
    }
    // 2. The loop device: mount -o loop sets autoclear, but make sure.
    let loops = loopsOf(image)
    for (let attempt = 0; attempt < 30 && loops.length > 0; attempt++) {
      for (const dev of loops) run('losetup', ['-d', dev])
      loops = loopsOf(image)
      if (loops.length > 0) await sleep(100 + 20 * attempt)
    }
    if (loops.length > 0) {
      problems.push(
        `loop device(s) still attached to ${image}: ${loops.join(', ')}; the filesystem is unmounted, so ` +
          `something still holds it (open file descriptors of this process?). Autoclear is set: ` +
          `the kernel detaches it once they are closed.` +
          (stuck.length > 0 ? ` Busy, unmounted lazily: ${stuck.join(', ')}` : ''),
      )
    }
    // 3. Files: never a recursive delete of anything that might still be a mount.
    await fsp.rm(image, { force: true })
    if (!isMountPoint(mnt)) {
      try {
        await fsp.rmdir(mnt)
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') problems.push(`rmdir ${mnt}: ${(e as Error).message}`)
      }
      try {
        await fsp.rmdir(dir)
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') problems.push(`rmdir ${dir}: ${(e as Error).message}`)
      }
    }
    if (problems.length > 0) throw new Error(`btrfs teardown left things behind:\n  ${problems.join('\n  ')}`)
  }
  try {
    await fsp.mkdir(mnt)
    const fh = await fsp.open(image, 'w')
    await fh.truncate(opts.size ?? GIB)
    await fh.close()
    const mkfs = ['-q', '-f', ...(opts.label !== undefined ? ['-L', opts.label] : []), ...(opts.mkfsArgs ?? []), image]
    await execFileP('mkfs.btrfs', mkfs)
    await execFileP('mount', ['-o', 'loop', image, mnt])
    if ((await fsp.statfs(mnt)).type !== BTRFS_SUPER_MAGIC) throw new Error(`${mnt} is not btrfs after mounting`)
  } catch (e) {
    await teardown().catch(() => {})
    throw e
  }
  return { mnt, image, dir, teardown }
}

// ---------------------------------------------------------------------------------------------
// ava integration
// ---------------------------------------------------------------------------------------------

export type BtrfsImpl = (t: ExecutionContext, dir: string) => Promise<void> | void

export interface BtrfsTestFn {
  /** A concurrent test that gets a fresh plain directory on the filesystem. */
  (title: string, impl: BtrfsImpl): void
  /** The same, run serially (before the concurrent ones of the file). */
  serial(title: string, impl: BtrfsImpl): void
}

export interface BtrfsTest extends BtrfsTestFn {
  /** Tests that also run `tools`: skipped (failing with BTRFS_LAYERS_REQUIRE_BTRFS=1) without one. */
  needing(tools: readonly Tool[]): BtrfsTestFn
}

export interface SuiteOptions extends BtrfsOptions {
  /** Tools every btrfs test of the file runs (the oracles of its helpers). */
  tools?: readonly Tool[]
}

export interface BtrfsSuite {
  /** Register a test that needs the filesystem; skipped or failing per the gating. */
  btrfsTest: BtrfsTest
  /** The mounted filesystem (valid inside btrfs tests). */
  fs(): Btrfs
  /** Whether the btrfs tests of this file will run. */
  available: boolean
  /** Make another filesystem, torn down with this file's (for cross-filesystem tests). */
  extra(opts?: BtrfsOptions): Promise<Btrfs>
}

/**
 * One loop-mounted btrfs per spec file, made in `test.before` and torn down in
 * `test.after.always`. Each `btrfsTest` gets its own fresh directory in it, so concurrent
 * tests do not see each other's subvolumes (oracle listings are filtered to that directory).
 */
export function useBtrfs(test: TestFn, { tools: fileTools = [], ...opts }: SuiteOptions = {}): BtrfsSuite {
  const gate = requireBtrfs(test.meta?.file)
  let mounted: Btrfs | undefined
  const extras: Btrfs[] = []
  let counter = 0

  if (gate.available) {
    test.before(async () => {
      mounted = await createBtrfs(opts)
    })
    test.after.always(async () => {
      const errors: string[] = []
      for (const f of [...extras, ...(mounted ? [mounted] : [])]) {
        await f.teardown().catch((e: Error) => errors.push(e.message))
      }
      if (errors.length > 0) throw new Error(errors.join('\n'))
    })
  }

  const wrap = (title: string, impl: BtrfsImpl) => async (t: ExecutionContext) => {
    if (!mounted) throw new Error('the btrfs filesystem of this file is not mounted')
    const slug = title.replace(/[^A-Za-z0-9]+/g, '-').slice(0, 60)
    const dir = path.join(mounted.mnt, `${String(++counter).padStart(3, '0')}-${slug}`)
    await fsp.mkdir(dir)
    await impl(t, dir)
  }
  const failing = (title: string) => (t: ExecutionContext) => {
    t.fail(`btrfs unavailable and ${REQUIRE_ENV}=1: ${gate.reason} (${title})`)
  }

  const register = (fn: TestFn | TestFn['serial'], title: string, impl: BtrfsImpl, tools: readonly Tool[] = []) => {
    const missing = gate.available ? missingTools([...fileTools, ...tools]) : []
    if (missing.length > 0) {
      warnMissingTools(test.meta?.file, missing, tools.length > 0 ? 'the tests that run them' : 'the btrfs tests of this file')
      const { named, install } = describeMissing(missing)
      if (gate.required) fn(title, (t) => t.fail(`${named} not installed and ${REQUIRE_ENV}=1 (${install}): ${title}`))
      else fn.skip(title, () => {})
    } else if (gate.available) fn(title, wrap(title, impl))
    else if (gate.required) fn(title, failing(title))
    else fn.skip(title, () => {})
  }
  const needing = (tools: readonly Tool[]): BtrfsTestFn => {
    const t = (title: string, impl: BtrfsImpl) => register(test, title, impl, tools)
    t.serial = (title: string, impl: BtrfsImpl) => register(test.serial, title, impl, tools)
    return t
  }
  const btrfsTest = needing([]) as BtrfsTest
  btrfsTest.needing = needing

  return {
    btrfsTest,
    available: gate.available,
    fs() {
      if (!mounted) throw new Error('the btrfs filesystem of this file is not mounted')
      return mounted
    },
    async extra(o?: BtrfsOptions) {
      const f = await createBtrfs(o)
      extras.push(f)
      return f
    },
  }
}

// ---------------------------------------------------------------------------------------------
// The oracle: btrfs-progs
// ---------------------------------------------------------------------------------------------

export async function sh(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { maxBuffer: 64 * 1024 * 1024 })
    return stdout
  } catch (e) {
    const x = e as Error & { stderr?: string; code?: unknown }
    if (x.code === 'ENOENT' && cmd in TOOL_PACKAGES) {
      // A test that did not declare the tool it runs (useBtrfs's tools, btrfsTest.needing).
      throw new Error(`${cmd} is not installed (apt-get install -y ${TOOL_PACKAGES[cmd as Tool]})`, { cause: e })
    }
    const shown = [cmd, ...args].join(' ')
    throw new Error(`${shown.length > 300 ? shown.slice(0, 300) + '...' : shown} failed (${x.code}): ${x.stderr?.trim() || x.message}`, { cause: e })
  }
}

export const btrfsCli = (...args: string[]) => sh('btrfs', args)

export interface OracleSubvolume {
  id: number
  /** Id of the subvolume holding it ("top level"). */
  topLevel: number
  /** Path relative to the filesystem's top-level subvolume. */
  path: string
  uuid: string | null
  parentUuid: string | null
}

const dash = (s: string) => (s === '-' ? null : s)

function parseList(out: string): OracleSubvolume[] {
  const res: OracleSubvolume[] = []
  for (const line of out.split('\n')) {
    if (!line.trim()) continue
    const m = /^ID (\d+) gen \d+ top level (\d+) parent_uuid (\S+)\s+uuid (\S+) path (.*)$/.exec(line)
    if (!m) throw new Error(`cannot parse btrfs subvolume list line: ${line}`)
    res.push({
      id: Number(m[1]),
      topLevel: Number(m[2]),
      parentUuid: dash(m[3]),
      uuid: dash(m[4]),
      path: m[5].replace(/^<FS_TREE>\//, ''),
    })
  }
  return res
}

/** `btrfs subvolume list -q -u <mnt>`: every subvolume of the filesystem. */
export async function oracleListAll(mnt: string): Promise<OracleSubvolume[]> {
  return parseList(await btrfsCli('subvolume', 'list', '-q', '-u', mnt))
}

/** `btrfs subvolume list -o -q -u <path>`: the subvolumes directly below the one at `path`. */
export async function oracleListBelow(p: string): Promise<OracleSubvolume[]> {
  return parseList(await btrfsCli('subvolume', 'list', '-o', '-q', '-u', p))
}

/**
 * Subvolumes (from `btrfs subvolume list`) strictly below absolute path `p`, with paths
 * relative to `p`, sorted by path.
 */
export async function oracleBelow(mnt: string, p: string): Promise<{ path: string; id: number }[]> {
  const rel = path.relative(mnt, p)
  const prefix = rel === '' ? '' : rel + '/'
  return (await oracleListAll(mnt))
    .filter((s) => s.path.startsWith(prefix))
    .map((s) => ({ path: s.path.slice(prefix.length), id: s.id }))
    .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
}

export interface OracleShow {
  name: string
  uuid: string | null
  parentUuid: string | null
  receivedUuid: string | null
  id: number
  generation: number
  genAtCreation: number
  parentId: number
  topLevelId: number
  flags: string
  creationTime: string
}

/** `btrfs subvolume show <path>`, parsed. */
export async function oracleShow(p: string): Promise<OracleShow> {
  const out = await btrfsCli('subvolume', 'show', p)
  const field = (name: string) => {
    const m = new RegExp(`^\\s*${name}:\\s*(.*)$`, 'm').exec(out)
    if (!m) throw new Error(`btrfs subvolume show ${p}: no '${name}' in:\n${out}`)
    return m[1].trim()
  }
  return {
    name: field('Name'),
    uuid: dash(field('UUID')),
    parentUuid: dash(field('Parent UUID')),
    receivedUuid: dash(field('Received UUID')),
    id: Number(field('Subvolume ID')),
    generation: Number(field('Generation')),
    genAtCreation: Number(field('Gen at creation')),
    parentId: Number(field('Parent ID')),
    topLevelId: Number(field('Top level ID')),
    flags: field('Flags'),
    creationTime: field('Creation time'),
  }
}

/** `btrfs property get <path> ro`. */
export async function oracleReadOnly(p: string): Promise<boolean> {
  const out = (await btrfsCli('property', 'get', '-t', 'subvol', p, 'ro')).trim()
  if (out === 'ro=true') return true
  if (out === 'ro=false') return false
  throw new Error(`unexpected btrfs property output: ${out}`)
}

/** Whether btrfs-progs considers `p` a subvolume (`btrfs subvolume show` succeeds). */
export async function oracleIsSubvolume(p: string): Promise<boolean> {
  try {
    await btrfsCli('subvolume', 'show', p)
    return true
  } catch {
    return false
  }
}

/** Loop device(s) backing an image (`losetup -j`). */
export function loopDevices(image: string): string[] {
  return loopsOf(image)
}

// ---------------------------------------------------------------------------------------------
// Fixtures: trees, sentinels, mounts
// ---------------------------------------------------------------------------------------------

/** Make a subvolume with btrfs-progs (independent of the library under test). */
export async function mkSubvol(p: string): Promise<void> {
  await btrfsCli('subvolume', 'create', p)
}

/** Make many subvolumes with btrfs-progs, a few at a time. */
export async function mkSubvols(paths: string[], parallel = 8): Promise<void> {
  const queue = [...paths]
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      for (let p = queue.shift(); p !== undefined; p = queue.shift()) await mkSubvol(p)
    }),
  )
}

/** Write a few files (and a subdirectory) into `dir`. */
export async function fill(dir: string, n = 3): Promise<void> {
  await fsp.mkdir(path.join(dir, 'sub'), { recursive: true })
  for (let i = 0; i < n; i++) {
    await fsp.writeFile(path.join(dir, `file${i}.txt`), `${path.basename(dir)} ${i} ${randomBytes(8).toString('hex')}\n`)
    await fsp.writeFile(path.join(dir, 'sub', `deep${i}.bin`), randomBytes(64 + i))
  }
}

/**
 * A description of everything below `root` (not following symlinks, not crossing into
 * mount points): type, mode, size, content hash, link target, subvolume-ness.
 */
export async function treeState(root: string): Promise<Record<string, string>> {
  const mounts = new Set(mountsAtOrBelow(root).filter((m) => m !== path.resolve(root)))
  const out: Record<string, string> = {}
  const walk = async (abs: string, rel: string) => {
    const st = await fsp.lstat(abs)
    const mode = (st.mode & 0o7777).toString(8)
    if (st.isSymbolicLink()) {
      out[rel] = `link ${await fsp.readlink(abs)}`
    } else if (st.isFile()) {
      const h = createHash('sha256').update(await fsp.readFile(abs)).digest('hex')
      out[rel] = `file ${mode} ${st.size} ${h}`
    } else if (st.isDirectory()) {
      out[rel] = `dir ${mode}${st.ino === 256 ? ' subvolume' : ''}`
      if (mounts.has(abs)) {
        out[rel] += ' mountpoint'
        return
      }
      for (const name of (await fsp.readdir(abs)).sort()) {
        await walk(path.join(abs, name), rel === '.' ? name : `${rel}/${name}`)
      }
    } else {
      out[rel] = `other ${mode}`
    }
  }
  await walk(root, '.')
  return out
}

export interface Sentinel {
  dir: string
  /** Relative path -> sha256 of every file made. */
  files: Map<string, string>
  /** Differences from what was made (missing, changed or extra entries); [] when intact. */
  verify(): Promise<string[]>
  remove(): Promise<void>
}

/** A directory OUTSIDE the btrfs under test (under os.tmpdir()) full of files. */
export async function makeSentinel(tag: string, count = 25): Promise<Sentinel> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), `btrfs-layers-sentinel-${tag}-`))
  const files = new Map<string, string>()
  for (let i = 0; i < count; i++) {
    const rel = i % 3 === 0 ? `nested/level${i % 2}/f${i}` : `f${i}`
    const data = randomBytes(32 + i)
    await fsp.mkdir(path.dirname(path.join(dir, rel)), { recursive: true })
    await fsp.writeFile(path.join(dir, rel), data)
    files.set(rel, createHash('sha256').update(data).digest('hex'))
  }
  const verify = async () => {
    const problems: string[] = []
    for (const [rel, h] of files) {
      try {
        const got = createHash('sha256').update(await fsp.readFile(path.join(dir, rel))).digest('hex')
        if (got !== h) problems.push(`changed: ${rel}`)
      } catch (e) {
        problems.push(`${(e as NodeJS.ErrnoException).code}: ${rel}`)
      }
    }
    const seen = new Set<string>()
    const walk = async (abs: string, rel: string) => {
      for (const ent of await fsp.readdir(abs, { withFileTypes: true })) {
        const r = rel ? `${rel}/${ent.name}` : ent.name
        if (ent.isDirectory()) await walk(path.join(abs, ent.name), r)
        else seen.add(r)
      }
    }
    try {
      await walk(dir, '')
    } catch (e) {
      problems.push(`cannot walk ${dir}: ${(e as Error).message}`)
    }
    for (const r of seen) if (!files.has(r)) problems.push(`extra: ${r}`)
    return problems
  }
  const remove = async () => {
    if (mountsAtOrBelow(dir).length === 0) await fsp.rm(dir, { recursive: true, force: true })
  }
  return { dir, files, verify, remove }
}

export async function bindMount(src: string, dst: string): Promise<void> {
  await sh('mount', ['--bind', src, dst])
}

/** Unmount `p` if it is (still) a mount point; lazily if busy. */
export async function unmountIfMounted(p: string): Promise<void> {
  for (let i = 0; i < 5 && isMountPoint(p); i++) {
    run('umount', [p])
    if (isMountPoint(p)) await sleep(50)
  }
  if (isMountPoint(p)) run('umount', ['-l', p])
}

/**
 * A fresh directory that is certainly not on btrfs: under os.tmpdir() when that is not
 * btrfs, else /dev/shm. Remove it with the returned function.
 */
export async function nonBtrfsDir(): Promise<{ dir: string; remove(): Promise<void> }> {
  for (const base of [os.tmpdir(), '/dev/shm', '/run']) {
    try {
      if ((await fsp.statfs(base)).type === BTRFS_SUPER_MAGIC) continue
      const dir = await fsp.mkdtemp(path.join(base, 'btrfs-layers-notbtrfs-'))
      return { dir, remove: () => fsp.rm(dir, { recursive: true, force: true }) }
    } catch {
      continue
    }
  }
  throw new Error('found no writable directory outside btrfs')
}

/** Whether `p` exists (lstat, so a dangling symlink counts). */
export async function exists(p: string): Promise<boolean> {
  try {
    await fsp.lstat(p)
    return true
  } catch {
    return false
  }
}

// ---------------------------------------------------------------------------------------------
// Error assertions
// ---------------------------------------------------------------------------------------------

export interface ExpectedError {
  code: string
  /** The path the error must name; `null` for errors raised before any path is involved. */
  path?: string | null
  /**
   * The syscall/ioctl name, true for "some system call", `null` for none (an argument refused
   * before any call). Omitted: when there is one, it names a real call, never an API.
   */
  syscall?: string | RegExp | true | null
  /** The second path of a two-path call (`snapshot`'s dest), which the error must name. */
  dest?: string
  /** Prefix of the assertion messages. */
  label?: string
}

/**
 * Assert that `promise` rejects with a BtrfsError carrying `code`; for errno codes also the
 * matching `errno`; `syscall` and `path` as expected. Returns the error.
 */
export async function expectBtrfsError(
  t: ExecutionContext,
  promise: Promise<unknown>,
  want: ExpectedError,
): Promise<Error & { code?: string; errno?: number; syscall?: string; path?: string; dest?: string }> {
  // Imported lazily so that the harness itself loads without the native module.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { BtrfsError } = require('../../ts/index') as typeof import('../../ts/index')
  const L = want.label ? `${want.label}: ` : ''
  let err: unknown
  let resolved = false
  try {
    const value = await promise
    resolved = true
    t.fail(`${L}expected a rejection with ${want.code}, got a resolution with ${JSON.stringify(value)}`)
  } catch (e) {
    err = e
  }
  if (resolved) return new Error('resolved')
  const e = err as InstanceType<typeof BtrfsError>
  t.true(e instanceof BtrfsError, `${L}not a BtrfsError: ${String(err)}`)
  t.true(e instanceof Error, L)
  t.is(e.name, 'BtrfsError', L)
  t.is(e.code, want.code, `${L}code (message: ${e.message})`)
  t.true(typeof e.message === 'string' && e.message.includes(want.code), `${L}message names the code: ${e.message}`)
  const errno = (os.constants.errno as Record<string, number>)[want.code]
  if (want.path === null) {
    // Rejected in the facade before the native layer saw anything.
    t.is(e.path, undefined, `${L}no path`)
  } else {
    // Negative, as Node's fs errors carry it.
    if (errno !== undefined) t.is(e.errno, -errno, `${L}errno of ${want.code}`)
    else t.is(e.errno, undefined, `${L}no errno for ${want.code}`)
    if (want.path !== undefined) t.is(e.path, want.path, `${L}path`)
    if (want.dest !== undefined) {
      t.is(e.dest, want.dest, `${L}dest`)
      t.true(e.message.endsWith(` '${want.path ?? e.path}' -> '${want.dest}'`), `${L}message names both paths: ${e.message}`)
    }
    if (want.syscall === undefined) {
      if (e.syscall !== undefined) t.true(isSystemCall(e.syscall), `${L}syscall is a system call or ioctl: ${e.syscall}`)
    } else if (want.syscall === null) {
      t.is(e.syscall, undefined, `${L}no syscall for an argument refused before any call`)
    } else if (want.syscall === true) {
      t.true(isSystemCall(e.syscall), `${L}syscall is a system call or ioctl: ${e.syscall}`)
    } else if (want.syscall instanceof RegExp) {
      t.regex(e.syscall ?? '', want.syscall, L)
    } else {
      t.is(e.syscall, want.syscall, L)
    }
  }
  return e
}

/** API and operation names that an error's `syscall` must never hold (`sync` is both). */
const NOT_SYSCALLS = new Set(['create', 'remove', 'get', 'put', 'init', 'snapshot', 'remap', 'changes', 'diff', 'idmap', 'driver', 'exists', 'layers', 'status'])

/** Whether `name` looks like a system call (`openat`, `renameat2`) or an ioctl (`BTRFS_IOC_SEND`). */
export function isSystemCall(name: string | undefined): boolean {
  return typeof name === 'string' && /^([a-z][a-z0-9_]*|(BTRFS|FS)_IOC_[A-Z0-9_]+)$/.test(name) && !NOT_SYSCALLS.has(name)
}

/** Everything observable about `dirs` on filesystem `mnt`: btrfs-progs' list and the trees. */
export async function observe(mnt: string | undefined, dirs: string[]): Promise<unknown> {
  const under = (abs: string) => dirs.some((d) => abs === path.resolve(d) || abs.startsWith(path.resolve(d) + '/'))
  const list = mnt ? (await oracleListAll(mnt)).filter((s) => under(path.join(mnt, s.path))) : []
  const trees: Record<string, Record<string, string> | string> = {}
  for (const d of dirs) trees[d] = (await exists(d)) ? await treeState(d) : 'missing'
  return { list, trees }
}

/**
 * Run `fn` (which must reject as `want`) and assert that neither the subvolume list of `mnt`
 * (btrfs subvolume list) nor any file below `dirs` changed.
 */
export async function expectErrorNoChange(
  t: ExecutionContext,
  mnt: string | undefined,
  dirs: string[],
  fn: () => Promise<unknown>,
  want: ExpectedError,
): Promise<void> {
  const before = await observe(mnt, dirs)
  await expectBtrfsError(t, fn(), want)
  const after = await observe(mnt, dirs)
  t.deepEqual(after, before, `${want.label ? want.label + ': ' : ''}nothing changed`)
}

/**
 * Assert that `fn` rejects (or throws) with Node's `TypeError` `ERR_INVALID_ARG_TYPE` for a wrong
 * JS type, and that neither the subvolume list of `mnt` nor any file below `dirs` changed.
 */
export async function expectArgTypeNoChange(t: ExecutionContext, mnt: string | undefined, dirs: string[], fn: () => unknown, label: string): Promise<void> {
  const before = await observe(mnt, dirs)
  let err: unknown
  try {
    await fn()
    t.fail(`${label}: expected a TypeError, got a resolution`)
  } catch (e) {
    err = e
  }
  t.true(err instanceof TypeError, `${label}: a TypeError: ${String(err)}`)
  t.is((err as { code?: string }).code, 'ERR_INVALID_ARG_TYPE', `${label}: code`)
  t.regex((err as Error).message, /^The "[\w.[\]]+" (argument|property) must be .+\. Received /, `${label}: Node's message`)
  t.deepEqual(await observe(mnt, dirs), before, `${label}: nothing changed`)
}
