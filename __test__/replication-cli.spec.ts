/**
 * The command line's `send` and `receive` (issue 15): real processes (`node dist/cli/main.js`),
 * real pipes and signals, a real loop-mounted btrfs, btrfs-progs as the oracle. `send` writes a
 * stream `btrfs receive` takes (-o FILE with a --json summary, or stdout), stops quietly with
 * 141 when its reader goes away; `send a | receive a` moves a layer between two stores; an
 * interrupted (SIGINT) or killed (SIGKILL) receive leaves no layer and, after the next init,
 * no temporary. The `receive` cases need the receive core (branch recvcore).
 */
import test from 'ava'
import { execFileSync, spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { BtrfsDriver } from '../ts/index'
import { oracleBelow, useBtrfs } from './helpers/btrfs'
import { CLI, parseJson, runCli } from './helpers/cli-run'
import { isTemporary, storeEntries } from './helpers/driver-util'
import { oracleReceive, treeDiffs } from './helpers/replication'

const { btrfsTest, fs: btrfs } = useBtrfs(test, { size: 4 * 1024 * 1024 * 1024 })
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const quote = (a: string) => `'${a.replace(/'/g, "'\\''")}'`
const cliLine = (...args: string[]) => [process.execPath, CLI, ...args].map(quote).join(' ')

function store(dir: string, name = 'home') {
  const home = path.join(dir, name)
  return { home, cli: (...args: string[]) => runCli(['--home', home, ...args]), layer: (id: string) => path.join(home, 'subvolumes', id) }
}

/** A read-only layer `id` of the store at `home` holding `files` of random-ish bytes. */
async function seed(home: string, id: string, megabytes = 4): Promise<void> {
  const d = await BtrfsDriver.init(home)
  try {
    await d.create(`${id}-w`)
    const p = await d.get(`${id}-w`)
    await fsp.mkdir(path.join(p, 'etc'))
    await fsp.writeFile(path.join(p, 'etc', 'conf'), 'key=value\n')
    const block = Buffer.alloc(1 << 20)
    for (let i = 0; i < megabytes; i++) await fsp.writeFile(path.join(p, `blob-${i}`), block.fill(i + 1))
    await d.put(`${id}-w`)
    await d.create(id, { parent: `${id}-w`, readOnly: true })
    await d.remove(`${id}-w`)
  } finally {
    await d.cleanup()
  }
}

btrfsTest('send -o FILE --json: a stream btrfs receive takes, and a summary', async (t, dir) => {
  const { home, cli, layer } = store(dir)
  await seed(home, 'app')
  const file = path.join(dir, 'app.stream')
  const r = await cli('--json', 'send', 'app', '-o', file)
  t.is(r.code, 0, r.stderr)
  const j = parseJson(t, r)
  t.is(j.id, 'app')
  t.is(j.bytes, (await fsp.stat(file)).size)
  t.is(j.file, file)
  const got = await oracleReceive(file, path.join(dir, 'received'))
  t.deepEqual(await treeDiffs(layer('app'), got), [])
})

btrfsTest('send with a bad --protocol is a usage error; send of a missing layer fails with ENOENT', async (t, dir) => {
  const { home, cli } = store(dir)
  await seed(home, 'app', 1)
  const u = await cli('send', 'app', '--protocol', '3', '-o', path.join(dir, 'x'))
  t.is(u.code, 2, u.stderr)
  t.regex(u.stderr, /--protocol must be 1 or 2/)
  const m = await cli('send', 'missing', '-o', path.join(dir, 'y'))
  t.is(m.code, 1, m.stderr)
  t.regex(m.stderr, /ENOENT/)
  t.false(fs.existsSync(path.join(dir, 'y')), 'no file left')
})

btrfsTest('send | head -c 1000: the closed pipe ends send quietly with 141 and leaves no temporary', async (t, dir) => {
  const { home, cli } = store(dir)
  t.is((await cli('create', 'rw')).code, 0)
  const p = path.join(home, 'subvolumes', 'rw')
  for (let i = 0; i < 32; i++) await fsp.writeFile(path.join(p, `f${i}`), Buffer.alloc(1 << 20, i))
  const out = execFileSync('bash', ['-c', `${cliLine('--home', home, 'send', 'rw')} 2>${quote(path.join(dir, 'err'))} | head -c 1000 | wc -c; echo "status=\${PIPESTATUS[0]}"`], {
    encoding: 'utf8',
    env: { ...process.env, BTRFS_LAYERS_HOME: '' },
  })
  t.regex(out, /^1000\nstatus=141\n$/)
  t.is(fs.readFileSync(path.join(dir, 'err'), 'utf8'), '', 'no message')
  t.deepEqual((await storeEntries(home)).subvolumes, ['rw'], 'the temporary snapshot went')
})

btrfsTest('send a | receive a between two stores', async (t, dir) => {
  const a = store(dir, 'a')
  const b = store(dir, 'b')
  await seed(a.home, 'app')
  const out = execFileSync('bash', ['-c', `set -o pipefail; ${cliLine('--home', a.home, 'send', 'app')} | ${cliLine('--home', b.home, '--json', 'receive', 'app')}`], {
    encoding: 'utf8',
    env: { ...process.env, BTRFS_LAYERS_HOME: '' },
  })
  const j = JSON.parse(out) as { id: string; bytes: number; receivedUuid: string }
  t.is(j.id, 'app')
  t.true(j.bytes > 4 << 20)
  t.deepEqual(await treeDiffs(a.layer('app'), b.layer('app')), [])
  // Incremental, through the pipe too.
  const d = await BtrfsDriver.init(a.home)
  try {
    await d.create('app2-w', { parent: 'app' })
    await fsp.writeFile(path.join(a.layer('app2-w'), 'etc', 'conf'), 'key=changed\n')
    await d.create('app2', { parent: 'app2-w', readOnly: true })
  } finally {
    await d.cleanup()
  }
  execFileSync('bash', ['-c', `set -o pipefail; ${cliLine('--home', a.home, 'send', 'app2', '--parent', 'app')} | ${cliLine('--home', b.home, 'receive', 'app2', '-')}`], {
    env: { ...process.env, BTRFS_LAYERS_HOME: '' },
  })
  t.deepEqual(await treeDiffs(a.layer('app2'), b.layer('app2')), [])
})

for (const sig of ['SIGINT', 'SIGKILL'] as const) {
  btrfsTest.serial(`a receive ended by ${sig} mid-stream leaves no layer (and no temporary after init)`, async (t, dir) => {
    const a = store(dir, 'a')
    const b = store(dir, 'b')
    await seed(a.home, 'app', 16)
    const file = path.join(dir, 'app.stream')
    t.is((await a.cli('send', 'app', '-o', file)).code, 0)
    const stream = await fsp.readFile(file)
    const child = spawn(process.execPath, [CLI, '--home', b.home, 'receive', 'app', '-'], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, BTRFS_LAYERS_HOME: '' } })
    t.teardown(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    })
    let stderr = ''
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()))
    const closed = new Promise<[number | null, string | null]>((r) => child.on('close', (code, s) => r([code, s])))
    child.stdin!.on('error', () => undefined)
    // Most of the stream; the rest never comes.
    child.stdin!.write(stream.subarray(0, stream.length - (1 << 20)))
    // Wait until the receive is under way: its staging subvolume exists.
    let staging = false
    for (let i = 0; i < 400 && !staging && child.exitCode === null; i++) {
      staging = (await storeEntries(b.home)).subvolumes.some(isTemporary)
      if (!staging) await sleep(25)
    }
    t.true(staging, `the receive staged its layer (stderr: ${stderr})`)
    child.kill(sig)
    const [code, signal] = await closed
    if (sig === 'SIGKILL') t.is(signal, 'SIGKILL')
    else t.is(code, 130, stderr)
    const d = await BtrfsDriver.init(b.home)
    try {
      t.deepEqual(await d.layers(), [], 'no layer')
      t.deepEqual((await storeEntries(b.home)).subvolumes, [], 'init swept the temporaries')
      t.deepEqual((await oracleBelow(btrfs().mnt, b.home)).map((s) => s.path), [], 'btrfs subvolume list: nothing left')
    } finally {
      await d.cleanup()
    }
  })
}
