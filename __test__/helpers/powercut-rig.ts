/**
 * The power-cut rig: a btrfs on a loop device whose backing file is served by `powercut serve`
 * (crates/powercut), which logs every write and flush the disk receives and every mark the
 * workload writes, in one order; then crash images rebuilt from that log, one at a time.
 *
 *   const bin = powercutBinary()
 *   const rig = await LoggedDisk.start(bin, workDir)      // mkfs'ed base image, mounted at rig.mnt
 *   rig.mark('end 3 create base')                         // ordered against the logged writes
 *   await rig.release()                                   // unmount, detach, stop the logger
 *   const plan = planCrashStates(bin, rig, { states: 40, seed })
 *   const problems = await checkCrashImage(bin, rig, plan, state, async (mnt) => [...])
 *
 * Everything it mounts or attaches is undone by `teardown()` (idempotent), also after a
 * failure half-way; the logger is a child process of this one and is killed last.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { isMountPoint, sh } from './btrfs'

const REPO = path.resolve(__dirname, '..', '..')
const GIB = 1024 * 1024 * 1024
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Build `powercut` (a no-op when it is up to date) and return its path. */
export function powercutBinary(): string {
  const out = execFileSync('cargo', ['build', '-q', '-p', 'btrfs-layers-powercut', '--message-format=json'], {
    cwd: REPO,
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  for (const line of out.split('\n').reverse()) {
    if (!line.includes('"executable"')) continue
    const m = JSON.parse(line) as { executable?: string | null; target?: { name?: string } }
    if (m.target?.name === 'powercut' && m.executable) return m.executable
  }
  throw new Error('cargo build -p btrfs-layers-powercut produced no powercut executable')
}

/** Why the rig cannot run here (beyond what the btrfs gate checks), or undefined. */
export function fuseUnavailable(): string | undefined {
  if (!fs.existsSync('/dev/fuse')) return 'no /dev/fuse (modprobe fuse)'
  if (spawnSync('cargo', ['--version']).status !== 0) return 'cargo is not on PATH (the rig builds crates/powercut)'
  return undefined
}

function run(cmd: string, args: string[]): { ok: boolean; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8' })
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim() }
}

/** Unmount `p` while it is mounted, lazily as a last resort. */
async function unmountAll(p: string): Promise<void> {
  for (let i = 0; i < 20 && isMountPoint(p); i++) {
    run('umount', [p])
    if (isMountPoint(p)) await sleep(50 * (i + 1))
  }
  if (isMountPoint(p)) run('umount', ['-l', p])
}

function loopsOf(file: string): string[] {
  const r = run('losetup', ['-j', file])
  return r.ok ? r.out.split('\n').map((l) => l.split(':')[0].trim()).filter((d) => d.startsWith('/dev/')) : []
}

async function detachAll(file: string): Promise<void> {
  for (let i = 0; i < 20 && loopsOf(file).length > 0; i++) {
    for (const dev of loopsOf(file)) run('losetup', ['-d', dev])
    if (loopsOf(file).length > 0) await sleep(50 * (i + 1))
  }
}

/** A sysfs attribute of loop device `dev`. */
function loopAttr(dev: string, attr: string): string {
  return fs.readFileSync(`/sys/block/${path.basename(dev)}/${attr}`, 'utf8').trim()
}

/** The disk under test: its base image, the log of what it received, and btrfs mounted on it. */
export class LoggedDisk {
  /** The image after mkfs.btrfs: the disk before the first logged write. */
  readonly base: string
  readonly log: string
  /** Where the btrfs on the logged disk is mounted. */
  readonly mnt: string
  readonly #fuse: string
  #logger: ChildProcess | undefined
  #loggerExit: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> | undefined
  #marks = -1
  #device = ''

  private constructor(readonly dir: string) {
    this.base = path.join(dir, 'base.img')
    this.log = path.join(dir, 'writes.log')
    this.mnt = path.join(dir, 'live')
    this.#fuse = path.join(dir, 'fuse')
  }

  /** mkfs.btrfs the base image, serve it through the logger, attach it with direct I/O, mount. */
  static async start(bin: string, dir: string, size = GIB): Promise<LoggedDisk> {
    const d = new LoggedDisk(dir)
    try {
      await d.#start(bin, size)
    } catch (e) {
      await d.teardown().catch(() => {})
      throw e
    }
    return d
  }

  async #start(bin: string, size: number): Promise<void> {
    await fsp.mkdir(this.mnt)
    await fsp.mkdir(this.#fuse)
    const fh = await fsp.open(this.base, 'w')
    await fh.truncate(size)
    await fh.close()
    await sh('mkfs.btrfs', ['-q', '-f', this.base])
    const logger = spawn(bin, ['serve', this.#fuse, '--base', this.base, '--backing', path.join(this.dir, 'backing.img'), '--log', this.log], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    this.#logger = logger
    let stderr = ''
    logger.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s))
    this.#loggerExit = new Promise((resolve) => logger.on('close', (code, signal) => resolve({ code, signal, stderr })))
    await new Promise<void>((resolve, reject) => {
      let out = ''
      logger.stdout.setEncoding('utf8').on('data', (s: string) => {
        out += s
        if (out.includes('ready\n')) resolve()
      })
      logger.on('error', reject)
      void this.#loggerExit?.then(({ code, signal }) => reject(new Error(`powercut serve exited (${code ?? signal}) before mounting: ${stderr}`)))
    })
    // Direct I/O: the loop driver writes to the logger as btrfs submits, never via a page cache.
    this.#device = (await sh('losetup', ['--direct-io=on', '--find', '--show', path.join(this.#fuse, 'disk')])).trim()
    if (loopAttr(this.#device, 'loop/dio') !== '1') throw new Error(`${this.#device} did not get direct I/O: the log would be in page-cache order`)
    // Without a volatile write cache the block layer drops flushes, and the log would have none.
    if (loopAttr(this.#device, 'queue/write_cache') !== 'write back') throw new Error(`${this.#device} has no write-back cache: flushes would not reach the logger`)
    this.#marks = fs.openSync(path.join(this.#fuse, 'marks'), fs.constants.O_WRONLY)
    // noatime: reading the trees for the model must not add writes of its own.
    await sh('mount', ['-o', 'noatime', this.#device, this.mnt])
  }

  /** Log `text` as a mark: after every write received so far, before any received later. */
  mark(text: string): void {
    if (this.#marks < 0) throw new Error('the logged disk is not running')
    fs.writeSync(this.#marks, `${text}\n`)
  }

  /** Unmount btrfs, detach the loop device and stop the logger; throws if it logged a fault. */
  async release(): Promise<void> {
    await unmountAll(this.mnt)
    if (isMountPoint(this.mnt)) throw new Error(`${this.mnt} stays mounted`)
    if (this.#marks >= 0) fs.closeSync(this.#marks)
    this.#marks = -1
    await detachAll(path.join(this.#fuse, 'disk'))
    await unmountAll(this.#fuse)
    const exit = await Promise.race([this.#loggerExit, sleep(30_000).then(() => undefined)])
    if (!exit) throw new Error('powercut serve did not stop after its unmount')
    this.#logger = undefined
    if (exit.code !== 0) throw new Error(`powercut serve failed (${exit.code ?? exit.signal}): ${exit.stderr}`)
  }

  /** Undo whatever is still mounted, attached or running. Idempotent. */
  async teardown(): Promise<void> {
    await unmountAll(this.mnt)
    if (this.#marks >= 0) fs.closeSync(this.#marks)
    this.#marks = -1
    await detachAll(path.join(this.#fuse, 'disk'))
    await unmountAll(this.#fuse)
    if (this.#logger) {
      const exited = await Promise.race([this.#loggerExit, sleep(5_000).then(() => undefined)])
      if (!exited) this.#logger.kill('SIGKILL')
      this.#logger = undefined
    }
  }
}

/** One crash state, as `powercut plan` describes it. */
export interface CrashState {
  id: number
  kind: 'prefix' | 'reordered' | 'torn'
  /** Records before this reached the disk whole. */
  durable: number
  flushes: number
  /** The power went before this record: the marks before it had been written. */
  cut: number
  pieces: { record: number; start: number; end: number }[]
  /** Whether the disk holds a superblock written after the last flush. */
  commit: boolean
  label: string
}

export interface Plan {
  seed: number
  records: number
  writes: number
  flushes: number
  written: number
  marks: { record: number; text: string }[]
  flushRecords: number[]
  superblockWrites: number[]
  states: CrashState[]
  /** Where the plan is stored, for `powercut build`. */
  file: string
}

/** Choose at most `states` crash states of the log (seeded). */
export function planCrashStates(bin: string, disk: LoggedDisk, o: { states: number; seed: number }): Plan {
  const out = execFileSync(bin, ['plan', '--log', disk.log, '--states', String(o.states), '--seed', String(o.seed)], {
    encoding: 'utf8',
    maxBuffer: 256 << 20,
  })
  const file = path.join(disk.dir, 'plan.json')
  fs.writeFileSync(file, out)
  return { ...(JSON.parse(out) as Omit<Plan, 'file'>), file }
}

/**
 * Rebuild the disk of `state`, check it with `btrfs check --readonly` (before a mount replays
 * its log tree), loop-mount it, run `inspect` on the mount point, and unmount and detach it
 * whatever happens. Returns what is wrong: the check's or the mount's failure, else what
 * `inspect` found.
 */
export async function checkCrashImage(
  bin: string,
  disk: LoggedDisk,
  plan: Plan,
  state: CrashState,
  inspect: (mnt: string) => Promise<string[]>,
): Promise<string[]> {
  const image = path.join(disk.dir, 'crash.img')
  const mnt = path.join(disk.dir, 'crash')
  await fsp.mkdir(mnt, { recursive: true })
  try {
    execFileSync(bin, ['build', '--base', disk.base, '--log', disk.log, '--plan', plan.file, '--state', String(state.id), '--out', image], {
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    const check = run('btrfs', ['check', '--readonly', image])
    if (!check.ok) return [`btrfs check --readonly fails:\n${indent(tail(check.out, 25))}`]
    // Every crash image has the same fsid: forget the ones seen before, or the kernel may
    // refuse this one as an older generation of a device it already knows.
    run('btrfs', ['device', 'scan', '--forget'])
    const mount = run('mount', ['-o', 'loop,noatime', image, mnt])
    if (!mount.ok) return [`it does not mount: ${mount.out}\n${indent(tail(run('dmesg', []).out, 10))}`]
    return await inspect(mnt)
  } finally {
    await unmountAll(mnt)
    await detachAll(image)
    await fsp.rm(image, { force: true })
  }
}

/** Unmount and detach whatever a crash image left (after a failure). */
export async function teardownCrashImage(dir: string): Promise<void> {
  await unmountAll(path.join(dir, 'crash'))
  await detachAll(path.join(dir, 'crash.img'))
}

function tail(s: string, lines: number): string {
  return s.split('\n').slice(-lines).join('\n')
}

function indent(s: string): string {
  return s
    .split('\n')
    .map((l) => `    ${l}`)
    .join('\n')
}
