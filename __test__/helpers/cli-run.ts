/**
 * Run the built command line (`node dist/cli/main.js`) in a child process, as a user would,
 * and collect its exit code, stdout and stderr.
 *
 *   const r = await runCli(['--home', home, 'ls', '--json'])
 *   t.is(r.code, 0, r.stderr)
 *   const layers = parseJson(t, r)
 */
import type { ExecutionContext } from 'ava'
import { spawn, type ChildProcess } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

export const CLI = path.resolve(__dirname, '..', '..', 'dist', 'cli', 'main.js')

export interface CliResult {
  /** Exit code; null when killed by a signal. */
  code: number | null
  stdout: string
  stderr: string
  /** stdout as bytes (for tar output). */
  raw: Buffer
}

export interface CliOptions {
  /** Written to stdin, then stdin is closed; default: stdin is closed at once. */
  input?: Buffer | string
  env?: NodeJS.ProcessEnv
  /** Run as this uid/gid (to check the not-root messages). */
  uid?: number
  gid?: number
  /** Called once the child runs (to signal it, or feed stdin yourself with `input: undefined`, `keepStdin`). */
  onSpawn?: (child: ChildProcess) => void
  /** Leave stdin open for onSpawn to use. */
  keepStdin?: boolean
  /** Kill the child after this long (default 60 s). */
  timeoutMs?: number
}

/**
 * The CLI as another user can run it. A clone in a private directory (a 0700 home, a
 * `mktemp -d`) is out of that user's reach, so the built package (dist/, the native binding,
 * package.json: it has no run-time dependencies) is copied once into a world-readable
 * directory, as an installed package would be.
 */
let reachableCli: string | undefined
function cliFor(uid: number | undefined, gid: number | undefined): string {
  if (uid === undefined) return CLI
  if (canReach(CLI, uid, gid ?? uid)) return CLI
  if (reachableCli) return reachableCli
  const repo = path.resolve(__dirname, '..', '..')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'btrfs-layers-cli-'))
  fs.chmodSync(dir, 0o755)
  for (const p of ['package.json', 'dist', 'native']) fs.cpSync(path.join(repo, p), path.join(dir, p), { recursive: true })
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }))
  reachableCli = path.join(dir, 'dist', 'cli', 'main.js')
  return reachableCli
}

/** Whether `uid`/`gid` can search every directory above `file` and read it (mode bits only). */
function canReach(file: string, uid: number, gid: number): boolean {
  let p = file
  for (;;) {
    const st = fs.statSync(p)
    const bits = st.uid === uid ? (st.mode >> 6) & 7 : st.gid === gid ? (st.mode >> 3) & 7 : st.mode & 7
    if ((p === file ? bits & 4 : bits & 1) === 0) return false
    const up = path.dirname(p)
    if (up === p) return true
    p = up
  }
}

/** Run `btrfs-layers ...args`. Fails loudly when the CLI has not been built. */
export function runCli(args: string[], o: CliOptions = {}): Promise<CliResult> {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`)
  const cli = cliFor(o.uid, o.gid)
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, ...args], {
      env: { ...process.env, BTRFS_LAYERS_HOME: '', ...o.env },
      stdio: ['pipe', 'pipe', 'pipe'],
      uid: o.uid,
      gid: o.gid,
    })
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout!.on('data', (d: Buffer) => out.push(d))
    child.stderr!.on('data', (d: Buffer) => err.push(d))
    child.stdin!.on('error', () => undefined) // the CLI may exit before reading it all
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 60_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      const raw = Buffer.concat(out)
      resolve({ code, stdout: raw.toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), raw })
    })
    if (o.input !== undefined) child.stdin!.end(o.input)
    else if (!o.keepStdin) child.stdin!.end()
    o.onSpawn?.(child)
  })
}

/** stdout parsed as JSON; fails the test with both streams when it is not. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- specs index into the parsed output freely
export function parseJson<T = any>(t: ExecutionContext, r: CliResult): T {
  try {
    return JSON.parse(r.stdout) as T
  } catch {
    t.fail(`stdout is not JSON (exit ${r.code}):\n${r.stdout}\nstderr:\n${r.stderr}`)
    throw new Error('not JSON')
  }
}

/** Assert a usage error: exit code 2, the message, and the usage line. */
export function assertUsage(t: ExecutionContext, r: CliResult, message: RegExp): void {
  t.is(r.code, 2, `exit code (stderr: ${r.stderr})`)
  t.regex(r.stderr, message)
  t.regex(r.stderr, /usage: btrfs-layers|btrfs-layers --help/)
  t.is(r.stdout, '', 'nothing on stdout')
}

/** Assert an operational error: exit code 1, the message and a `hint:` line matching `hint`. */
export function assertFailure(t: ExecutionContext, r: CliResult, message: RegExp, hint?: RegExp): void {
  t.is(r.code, 1, `exit code (stderr: ${r.stderr})`)
  t.regex(r.stderr, message)
  if (hint) t.regex(r.stderr, new RegExp(`^hint: .*${hint.source}`, 'm'))
}
