/**
 * The command line never leaves a mess: a closed pipe (`| head`), a second Ctrl-C and SIGTERM
 * end a command only after it undid its own work and released the store (no layer it made,
 * no private mount, no lock left; `btrfs subvolume list` and /proc/self/mountinfo are the
 * oracles); errors never echo input files and are JSON under --json; readers work while a
 * writer holds the store, and a refused writer is told who holds it. Real pipes, real
 * signals, real processes (`node dist/cli/main.js`), a real loop-mounted btrfs.
 */
import test from 'ava'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { exists, mountsAtOrBelow, oracleBelow, useBtrfs } from './helpers/btrfs'
import { CLI, parseJson, runCli, type CliResult } from './helpers/cli-run'

const { btrfsTest, fs: btrfs } = useBtrfs(test)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function store(dir: string) {
  const home = path.join(dir, 'home')
  return { home, cli: (...args: string[]) => runCli(['--home', home, ...args]), layer: (id: string) => path.join(home, 'subvolumes', id) }
}

/** `node main.js ARGS | head -N` in bash: the CLI's exit status, its stderr, what head printed. */
function throughHead(args: string[], lines: number): { status: number; stderr: string; stdout: string } {
  const errFile = path.join(btrfs().dir, `stderr-${process.pid}-${Math.random().toString(36).slice(2)}`)
  const quoted = [process.execPath, CLI, ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ')
  const out = execFileSync('bash', ['-c', `${quoted} 2>'${errFile}' | head -${lines}; echo "status=\${PIPESTATUS[0]}"`], {
    encoding: 'utf8',
    env: { ...process.env, BTRFS_LAYERS_HOME: '' },
    timeout: 120_000,
  })
  const stderr = fs.readFileSync(errFile, 'utf8')
  fs.rmSync(errFile)
  const m = /status=(\d+)\n$/.exec(out)
  return { status: Number(m?.[1]), stderr, stdout: out.slice(0, m?.index) }
}

/** Nothing of the store left busy or half-made: no mount at or below home, only `layers` in `btrfs subvolume list`, the lock free. */
async function assertReleased(t: import('ava').ExecutionContext, home: string, layers: string[]): Promise<void> {
  t.deepEqual(mountsAtOrBelow(home), [], 'no mount of the store left (mountinfo)')
  const below = (await oracleBelow(btrfs().mnt, home)).map((s) => s.path)
  t.deepEqual(below, layers.map((id) => `subvolumes/${id}`), 'btrfs subvolume list: nothing half-made')
  const ls = await runCli(['--home', home, 'create', 'lock-probe'])
  t.is(ls.code, 0, `the lock is free: ${ls.stderr}`)
  await runCli(['--home', home, 'rm', 'lock-probe'])
}

// ---------------------------------------------------------------------------------------------
// A closed pipe
// ---------------------------------------------------------------------------------------------

btrfsTest('changes | head -1: the closed pipe ends the command quietly with 141', async (t, dir) => {
  const { home, cli, layer } = store(dir)
  t.is((await cli('create', 'big')).code, 0)
  // Far more than a pipe's 64 KiB: the CLI is still writing when head goes away.
  await fsp.mkdir(path.join(layer('big'), 'etc'))
  for (let i = 0; i < 4000; i++) await fsp.writeFile(path.join(layer('big'), 'etc', `a-file-with-a-rather-long-name-${i}`), 'x')
  const r = throughHead(['--home', home, 'changes', 'big', '--parent', ''], 1)
  t.is(r.stdout, 'A /etc\n')
  t.is(r.stderr, '', 'no stack trace, no message')
  t.is(r.status, 141)
  await assertReleased(t, home, ['big'])
})

btrfsTest.needing(['tar'])('demo | head -2: the demo stops, removes its layers and releases the store', async (t, dir) => {
  const { home, cli } = store(dir)
  t.is((await cli('create', 'mine')).code, 0)
  const r = throughHead(['--home', home, 'demo'], 2)
  t.is(r.stdout.split('\n').length, 3, r.stdout)
  t.is(r.stderr, '', 'no stack trace, no message')
  t.is(r.status, 141)
  t.deepEqual(
    parseJson(t, await cli('ls', '--json')).map((m: { id: string }) => m.id),
    ['mine'],
    'no demo-* layer left',
  )
  await assertReleased(t, home, ['mine'])
})

// ---------------------------------------------------------------------------------------------
// Signals during apply
// ---------------------------------------------------------------------------------------------

/**
 * `apply ID -` of a tar fed slowly (a 256 MiB file's header, then its data 256 KiB every
 * 20 ms): the first signal once the layer exists and applies, the others as soon as the CLI
 * says it is undoing (so they land during the undo); resolves to the CLI's result.
 */
async function applyInterrupted(home: string, id: string, signals: NodeJS.Signals[], json = false): Promise<CliResult> {
  const header = execFileSync('sh', ['-c', `cd "$(mktemp -d)" && truncate -s 256M big && tar -cf - big | head -c 1048576; rm -rf "$PWD"`])
  const chunk = Buffer.alloc(256 << 10)
  let feeder: NodeJS.Timeout | undefined
  return runCli(['--home', home, 'apply', id, '-', ...(json ? ['--json'] : [])], {
    keepStdin: true,
    timeoutMs: 60_000,
    onSpawn: (child: ChildProcess) => {
      child.stdin!.write(header)
      feeder = setInterval(() => child.stdin!.writable && child.stdin!.write(chunk), 20)
      child.on('close', () => clearInterval(feeder))
      let said = ''
      child.stderr!.on('data', (d: Buffer) => {
        const before = said
        said += d.toString()
        if (!/undoing/.test(before) && /undoing/.test(said)) for (const sig of signals.slice(1)) child.kill(sig)
      })
      void (async () => {
        for (let i = 0; i < 400 && !(await exists(path.join(home, 'subvolumes', id))); i++) await sleep(25)
        await sleep(300) // applying
        child.kill(signals[0])
      })()
    },
  })
}

btrfsTest('a second Ctrl-C during apply waits for the undo: no layer, no mount, no lock left', async (t, dir) => {
  const { home, cli } = store(dir)
  t.is((await cli('create', 'kept')).code, 0)
  const r = await applyInterrupted(home, 'endless', ['SIGINT', 'SIGINT'])
  t.is(r.code, 130, r.stderr)
  t.regex(r.stderr, /interrupted/)
  t.notRegex(r.stderr, /\n\s+at /, 'no stack trace')
  await assertReleased(t, home, ['kept'])
})

btrfsTest('SIGTERM, then Ctrl-C, during apply: exit 143, the store as it was', async (t, dir) => {
  const { home, cli } = store(dir)
  t.is((await cli('create', 'kept')).code, 0)
  const r = await applyInterrupted(home, 'endless', ['SIGTERM', 'SIGINT'])
  t.is(r.code, 143, r.stderr)
  await assertReleased(t, home, ['kept'])
})

btrfsTest('--json: an interrupted apply is one JSON error object, exit 130', async (t, dir) => {
  const { home } = store(dir)
  const r = await applyInterrupted(home, 'endless', ['SIGINT'], true)
  t.is(r.code, 130, r.stderr)
  const out = parseJson(t, r)
  t.is(out.error.code, 'ABORT_ERR')
  t.is(typeof out.error.message, 'string')
  await assertReleased(t, home, [])
})

// ---------------------------------------------------------------------------------------------
// Errors: never the input's bytes; JSON with --json
// ---------------------------------------------------------------------------------------------

btrfsTest('apply of a file that is no tar: the error quotes at most 16 bytes of it, escaped', async (t, dir) => {
  const { cli } = store(dir)
  t.is((await cli('create', 'base')).code, 0)
  const secret = path.join(dir, 'secrets.env')
  const lines = ['AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', 'DB_PASSWORD=hunter2-correct-horse-battery', 'root:x:0:0:root:/root:/bin/bash']
  await fsp.writeFile(secret, `${lines.join('\n')}\n`.repeat(30))
  for (const json of [false, true]) {
    const r = await cli('apply', 'base', secret, ...(json ? ['--json'] : []))
    t.is(r.code, 1, r.stderr)
    const all = r.stdout + r.stderr
    t.regex(all, /ERR_BAD_LAYER/)
    // No run of 17 bytes of the file, in the clear, anywhere in the output.
    const text = `${lines.join('\n')}\n`
    for (let i = 0; i + 17 <= text.length; i++) t.false(all.includes(text.slice(i, i + 17)), `echoes ${JSON.stringify(text.slice(i, i + 17))}`)
  }
})

btrfsTest('--json: usage and operational errors are one JSON object on stdout, same exit codes', async (t, dir) => {
  const { cli } = store(dir)
  const usage = await cli('create', '--bogus', '--json')
  t.is(usage.code, 2)
  t.deepEqual(Object.keys(parseJson(t, usage)), ['error'])
  t.like(parseJson(t, usage).error, { code: 'ERR_USAGE' })
  t.regex(parseJson(t, usage).error.message, /--bogus/)
  const unknown = await runCli(['frobnicate', '--json'])
  t.is(unknown.code, 2)
  t.like(parseJson(t, unknown).error, { code: 'ERR_USAGE', hint: null })

  t.is((await cli('create', 'base')).code, 0)
  const taken = await cli('create', 'base', '--json')
  t.is(taken.code, 1)
  const e = parseJson(t, taken).error
  t.is(e.code, 'EEXIST')
  t.regex(e.message, /EEXIST/)
  t.regex(e.hint, /layer id taken/)
  t.is(taken.stderr, '', 'nothing but the object')

  const rm = await cli('rm', 'nope', 'base', '--json')
  t.is(rm.code, 1)
  const out = parseJson(t, rm)
  t.is(out.error.code, 'ENOENT')
  t.deepEqual(out.removed, ['base'])
  t.like(out.failed[0], { id: 'nope', code: 'ENOENT' })
})

btrfsTest('apply prints its summary once', async (t, dir) => {
  const { cli, layer } = store(dir)
  t.is((await cli('create', 'src')).code, 0)
  await fsp.writeFile(path.join(layer('src'), 'hello'), 'hello world\n')
  const tar = path.join(dir, 'src.tar')
  t.is((await cli('diff', 'src', '-o', tar)).code, 0)
  const r = await cli('apply', 'copy', tar)
  t.is(r.code, 0, r.stderr)
  t.is((r.stdout + r.stderr).match(/of file content/g)?.length, 1, `stdout: ${r.stdout}\nstderr: ${r.stderr}`)
  t.regex(r.stdout, /^applied .*src\.tar to new layer copy: 12 B of file content \(.* of tar in .*\/s\)$/m)
})

btrfsTest.needing(['tar'])('the demo prints no path that is gone when it ends', async (t, dir) => {
  const { cli } = store(dir)
  const r = await cli('demo')
  t.is(r.code, 0, r.stderr)
  // Host paths (not the paths inside layers that changes prints, like /typescript/lib).
  const paths = [...r.stdout.matchAll(/(?:^|[\s(])(\/[^\s,()]+)/gm)].map((m) => m[1]).filter((p) => fs.existsSync(`/${p.split('/')[1]}`))
  t.true(paths.length > 0, r.stdout)
  for (const p of paths) t.true(await exists(p), `printed ${p}, which does not exist`)
})

// ---------------------------------------------------------------------------------------------
// Readers while a writer holds the store
// ---------------------------------------------------------------------------------------------

btrfsTest.needing(['tar'])('ls, status, changes and diff work while another process applies; create is told its pid', async (t, dir) => {
  const { home, cli, layer } = store(dir)
  t.is((await cli('create', 'base')).code, 0)
  await fsp.writeFile(path.join(layer('base'), 'file'), 'content\n')
  t.is((await cli('create', 'child', '--parent', 'base')).code, 0)
  await fsp.writeFile(path.join(layer('child'), 'added'), 'more\n')
  // Applied to as an existing layer: a new one would be visible only once its apply ends.
  t.is((await cli('create', 'slow')).code, 0)

  // The writer: an apply whose tar never comes, holding the store until it is interrupted.
  const writer = spawn(process.execPath, [CLI, '--home', home, 'apply', 'slow', '-'], { stdio: ['pipe', 'ignore', 'ignore'], env: { ...process.env, BTRFS_LAYERS_HOME: '' } })
  t.teardown(() => {
    if (writer.exitCode === null) writer.kill('SIGKILL')
  })
  writer.stdin!.write(Buffer.alloc(100))
  const lockFile = path.join(home, '.lock')
  for (let i = 0; i < 400; i++) {
    if ((await fsp.readFile(lockFile, 'utf8').catch(() => '')).trim() === String(writer.pid) && (await exists(layer('slow')))) break
    await sleep(25)
  }
  t.is((await fsp.readFile(lockFile, 'utf8')).trim(), String(writer.pid), 'the writer wrote its pid into the lock file')
  // The writer's own staging (.tmp-slow-PID-*) comes and goes; the readers must add nothing.
  const listed = async () => (await oracleBelow(btrfs().mnt, home)).map((s) => s.path).filter((p) => !p.startsWith(`subvolumes/.tmp-slow-${writer.pid}-`))
  const before = await listed()
  t.true(before.includes('subvolumes/slow'))

  const ls = await cli('ls', '--json')
  t.is(ls.code, 0, ls.stderr)
  t.deepEqual(parseJson(t, ls).map((m: { id: string }) => m.id), ['base', 'child', 'slow'])
  const st = await cli('status', '--json')
  t.is(st.code, 0, st.stderr)
  const ch = await cli('changes', 'child', '--json')
  t.is(ch.code, 0, ch.stderr)
  t.deepEqual(parseJson(t, ch), [{ path: '/added', kind: 'add' }])
  const across = await cli('changes', 'child', '--parent', 'slow', '--json')
  t.is(across.code, 0, across.stderr)
  const tar = path.join(dir, 'child.tar')
  const d = await cli('diff', 'child', '-o', tar)
  t.is(d.code, 0, d.stderr)
  t.deepEqual(execFileSync('tar', ['-tf', tar], { encoding: 'utf8' }).split('\n').filter(Boolean), ['added'])
  t.deepEqual(await listed(), before, 'the readers made no snapshot (btrfs subvolume list)')

  const refused = await cli('create', 'x')
  t.is(refused.code, 1)
  t.regex(refused.stderr, /EBUSY/)
  t.regex(refused.stderr, new RegExp(`^hint: store in use by another process: process ${writer.pid} \\(.*main\\.js .*apply slow -\\)`, 'm'))
  const refusedJson = await cli('create', 'x', '--json')
  t.like(parseJson(t, refusedJson).error, { code: 'EBUSY', pid: writer.pid })

  const done = new Promise((r) => writer.on('close', r))
  writer.kill('SIGINT')
  await done
  await assertReleased(t, home, ['base', 'child', 'slow'])
})

// ---------------------------------------------------------------------------------------------
// Options, image paths, bench
// ---------------------------------------------------------------------------------------------

test('--size is create\'s only: elsewhere a usage error pointing at --image-size', async (t) => {
  for (const args of [['ls', '--size', '8G'], ['init', '--size', '8G'], ['status', '--size', '1G', '--image', '/tmp/none.img']]) {
    const r = await runCli(args)
    t.is(r.code, 2, r.stderr)
    t.regex(r.stderr, /has no --size/)
    t.regex(r.stderr, /^hint: .*--image-size/m)
  }
  const help = await runCli(['--help'])
  t.regex(help.stdout, /^ {2}--image-size N\s+size of a new loopback image/m)
  t.notRegex(help.stdout, /^ {2}--size/m)
  t.regex((await runCli(['help', 'init'])).stdout, /--image-size N/)
  t.regex((await runCli(['help', 'create'])).stdout, /--size N\s+limit the layer/)
})

test('an image under /proc or /sys fails at once with a clear error', async (t) => {
  for (const image of ['/proc/x/y.img', '/sys/x/y.img', '/proc/y.img']) {
    const started = Date.now()
    const r = await runCli(['--image', image, 'status'], { timeoutMs: 10_000 })
    t.is(r.code, 1, `${image}: ${r.stderr}`)
    t.regex(r.stderr, /pseudo filesystem that cannot hold files|cannot make|EACCES|ENOENT/, image)
    t.true(Date.now() - started < 8000, `${image}: took ${Date.now() - started} ms`)
  }
  const r = await runCli(['--image', '/proc/x/y.img', 'status', '--json'], { timeoutMs: 10_000 })
  t.regex(parseJson(t, r).error.message, /\/proc is on proc, a pseudo filesystem/)
})

test('bench --help describes every BTRFS_LAYERS_BENCH_* variable; its output names its targets itself', async (t) => {
  const benchDir = path.resolve(__dirname, '..', 'bench')
  const sources = fs.readdirSync(benchDir).filter((f) => /\.(ts|cjs|mjs|js)$/.test(f))
  const vars = new Set<string>()
  for (const f of sources) for (const m of fs.readFileSync(path.join(benchDir, f), 'utf8').matchAll(/BTRFS_LAYERS_BENCH_[A-Z_]+/g)) vars.add(m[0])
  t.true(vars.size >= 10, [...vars].join(' '))
  const help = (await runCli(['bench', '--help'])).stdout
  for (const v of vars) t.regex(help, new RegExp(`^\\s+${v}\\s+\\S`, 'm'), `${v} described`)
  // What the bench prints or writes: its string literals (comments are for the source's readers).
  for (const f of sources) {
    const code = fs
      .readFileSync(path.join(benchDir, f), 'utf8')
      .replace(/\/\*[\s\S]*?\*\//g, '')
      .replace(/^\s*\/\/.*$/gm, '')
    const strings = code.match(/'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|`(?:[^`\\]|\\.)*`/g) ?? []
    for (const s of strings) t.notRegex(s, /\bissue\b|DESIGN/, `${f}: ${s.slice(0, 80)}`)
  }
})
