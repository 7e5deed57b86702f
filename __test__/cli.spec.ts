/**
 * The command line, run as a user runs it (`node dist/cli/main.js`, built by npm run build)
 * against a store (`--home`) on a real loop-mounted btrfs: every command's happy path and
 * --json shape, exit code 2 for usage errors, exit code 1 with a hint for operational errors,
 * Ctrl-C. btrfs-progs and GNU tar are the oracles. The loopback store: cli-loopback.spec.ts.
 */
import test from 'ava'
import { execFileSync } from 'node:child_process'
import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { exists, nonBtrfsDir, oracleIsSubvolume, oracleReadOnly, useBtrfs } from './helpers/btrfs'
import { assertFailure, assertUsage, parseJson, runCli } from './helpers/cli-run'

const { btrfsTest } = useBtrfs(test)

/** A store in the test's directory, and the CLI bound to it. */
function store(dir: string) {
  const home = path.join(dir, 'home')
  return { home, cli: (...args: string[]) => runCli(['--home', home, ...args]), layer: (id: string) => path.join(home, 'subvolumes', id) }
}

/** A small tree with a file, a directory and a symlink in layer `id`. */
async function fillLayer(dir: string): Promise<void> {
  await fsp.mkdir(path.join(dir, 'etc'), { recursive: true })
  await fsp.writeFile(path.join(dir, 'etc', 'hosts'), '127.0.0.1 localhost\n')
  await fsp.writeFile(path.join(dir, 'etc', 'gone'), 'to be deleted\n')
  await fsp.symlink('hosts', path.join(dir, 'etc', 'link'))
}

// ---------------------------------------------------------------------------------------------
// Usage errors: exit code 2, before any store is opened
// ---------------------------------------------------------------------------------------------

test('usage errors exit 2 with the usage line', async (t) => {
  const cases: [string[], RegExp][] = [
    [[], /Usage: btrfs-layers <command>/],
    [['frobnicate'], /unknown command 'frobnicate'/],
    [['ls', '--bogus'], /Unknown option '--bogus'/],
    [['create'], /missing ID/],
    [['create', 'a', 'b'], /unexpected argument 'b'/],
    [['create', '../x'], /ID '\.\.\/x' is not a layer id/],
    [['create', 'x', '--parent', '.hidden'], /--parent '\.hidden' is not a layer id/],
    [['create', 'x', '--size', 'lots'], /--size 'lots' is not a size/],
    [['apply', 'x'], /missing FILE\|-/],
    [['diff', 'x', '--compression', 'rar'], /--compression must be none, gzip or zstd/],
    [['remap', 'a', 'b'], /at least one --uid-map or --gid-map/],
    [['remap', 'a', 'b', '--uid-map', '0:100000'], /--uid-map '0:100000' must be CONTAINER:HOST:SIZE/],
    [['ls', '--home', '/tmp', '--image', '/tmp/x.img'], /--image and --image-size are for the loopback store/],
    [['unmount', '--home', '/tmp'], /unmount is for the loopback store/],
    [['help', 'nope'], /unknown command 'nope'/],
  ]
  for (const [args, message] of cases) {
    const r = await runCli(args)
    if (args.length === 0) {
      t.is(r.code, 2, 'no command')
      t.regex(r.stderr, message)
      continue
    }
    assertUsage(t, r, message)
  }
  // With --json the usage error is JSON on stdout (cli-mess.spec.ts).
  const r = await runCli(['diff', 'x', '--json'])
  t.is(r.code, 2)
  t.like(parseJson(t, r).error, { code: 'ERR_USAGE', message: '--json needs -o FILE (without it the tar goes to stdout)' })
})

test('help: the command list, per-command help, --version', async (t) => {
  const r = await runCli(['--help'])
  t.is(r.code, 0)
  for (const c of ['init', 'status', 'create', 'rm', 'ls', 'changes', 'diff', 'apply', 'remap', 'bench', 'demo', 'unmount']) {
    t.regex(r.stdout, new RegExp(`^  ${c} `, 'm'), c)
  }
  const h = await runCli(['help', 'diff'])
  t.is(h.code, 0)
  t.regex(h.stdout, /Usage: btrfs-layers diff ID \[--parent P\] \[--compression none\|gzip\|zstd\] \[-o FILE\]/)
  const h2 = await runCli(['apply', '--help'])
  t.is(h2.code, 0)
  t.regex(h2.stdout, /Usage: btrfs-layers apply ID FILE\|-/)
  const v = await runCli(['--version'])
  t.is(v.code, 0)
  t.regex(v.stdout, /^\d+\.\d+\.\d+/)
})

// ---------------------------------------------------------------------------------------------
// Happy paths and --json shapes
// ---------------------------------------------------------------------------------------------

btrfsTest('init, create, ls and status, human and --json', async (t, dir) => {
  const { home, cli, layer } = store(dir)
  let r = await cli('init')
  t.is(r.code, 0, r.stderr)
  t.regex(r.stdout, /store .*home: 0 layers/)
  r = await cli('init', '--json')
  t.deepEqual(parseJson(t, r), { home, layers: 0, loopback: null })

  r = await cli('create', 'base', '--json')
  t.is(r.code, 0, r.stderr)
  const base = parseJson(t, r)
  // getMetadata's typed fields, as JSON (the Date as ISO 8601).
  t.like(base, { id: 'base', parent: null, readOnly: false, size: null, path: layer('base') })
  t.regex(base.created, /^\d{4}-\d\d-\d\dT/)
  t.true(Number.isSafeInteger(base.subvolumeId))
  t.true(await oracleIsSubvolume(layer('base')))

  r = await cli('create', 'image', '--parent', 'base', '--read-only')
  t.is(r.code, 0, r.stderr)
  t.regex(r.stdout, /created layer image \(snapshot of base, read-only\)/)
  t.true(await oracleReadOnly(layer('image')))

  r = await cli('create', 'capped', '-p', 'image', '--size', '64M', '--json')
  t.is(r.code, 0, r.stderr)
  t.like(parseJson(t, r), { id: 'capped', parent: 'image', size: 64 * 2 ** 20 })

  r = await cli('ls', '--json')
  t.is(r.code, 0, r.stderr)
  const list = parseJson<Record<string, unknown>[]>(t, r)
  t.deepEqual(
    list.map((m) => [m.id, m.parent, m.readOnly, m.size]),
    [
      ['base', null, false, null],
      ['capped', 'image', false, 64 * 2 ** 20],
      ['image', 'base', true, null],
    ],
  )
  r = await cli('ls')
  t.regex(r.stdout, /^ID\s+PARENT\s+CREATED\s+MODE\s+SIZE LIMIT$/m)
  t.regex(r.stdout, /^image\s+base\s+\S+Z\s+ro\s+-$/m)
  t.regex(r.stdout, /^capped\s+image\s+\S+\s+rw\s+64\.0 MiB$/m)

  r = await cli('status', '--json')
  t.is(r.code, 0, r.stderr)
  const st = parseJson(t, r)
  t.is(st.home, home)
  t.is(st.loopback, null)
  t.is(st.layers, 3, 'the typed status: layers is a number')
  t.regex(st.filesystem.uuid, /^[0-9a-f-]{36}$/)
  t.is(typeof st.quotas, 'boolean')
  t.is(typeof st.space.data.used, 'number')
  t.true(st.space.data.used > 0 && st.space.data.used <= st.space.data.total)
  r = await cli('status')
  t.regex(r.stdout, /^Layers:\s+3$/m)
  t.regex(r.stdout, /^Data Space Total:\s+[\d.]+ [KMG]?i?B$/m)
})

btrfsTest('rm removes several layers; a missing one is reported with a hint, the others still go', async (t, dir) => {
  const { cli, layer } = store(dir)
  for (const id of ['a', 'b', 'c']) t.is((await cli('create', id)).code, 0)
  let r = await cli('rm', 'a', 'b')
  t.is(r.code, 0, r.stderr)
  t.is(r.stdout, 'removed a\nremoved b\n')
  t.false(await exists(layer('a')))
  r = await cli('rm', 'nope', 'c', '--json')
  t.is(r.code, 1, r.stderr)
  const out = parseJson(t, r)
  t.regex(out.error.message, /ENOENT/)
  t.regex(out.error.hint, /no layer 'nope' in .*'btrfs-layers ls' lists the layers/)
  t.deepEqual(out.removed, ['c'])
  t.like(out.failed[0], { id: 'nope', code: 'ENOENT' })
  t.false(await exists(layer('c')))
})

btrfsTest.needing(['tar', 'gzip'])('changes, diff (file, stdout, gzip) and apply (file, stdin) round trip', async (t, dir) => {
  const { home, cli, layer } = store(dir)
  t.is((await cli('create', 'base')).code, 0)
  await fillLayer(layer('base'))
  t.is((await cli('create', 'app', '--parent', 'base')).code, 0)
  await fsp.writeFile(path.join(layer('app'), 'etc', 'hosts'), '127.0.0.1 localhost app\n')
  await fsp.rm(path.join(layer('app'), 'etc', 'gone'))
  await fsp.mkdir(path.join(layer('app'), 'srv'))
  await fsp.writeFile(path.join(layer('app'), 'srv', 'index.html'), '<h1>hi</h1>\n')

  let r = await cli('changes', 'app', '--json')
  t.is(r.code, 0, r.stderr)
  const expected = [
    { path: '/etc', kind: 'modify' },
    { path: '/etc/gone', kind: 'delete' },
    { path: '/etc/hosts', kind: 'modify' },
    { path: '/srv', kind: 'add' },
    { path: '/srv/index.html', kind: 'add' },
  ]
  t.deepEqual(parseJson(t, r), expected)
  r = await cli('changes', 'app')
  t.is(r.stdout, 'M /etc\nD /etc/gone\nM /etc/hosts\nA /srv\nA /srv/index.html\n')
  t.regex(r.stderr, /5 changes: 2 added, 2 modified, 1 deleted/)
  r = await cli('changes', 'base', '--parent', '', '--json')
  t.true(parseJson<unknown[]>(t, r).length >= 4, 'the whole layer')

  // diff to a file; GNU tar is the oracle.
  const tarFile = path.join(os.tmpdir(), `btrfs-layers-cli-${process.pid}-${Date.now()}.tar`)
  const gz = `${tarFile}.gz`
  t.teardown(() => Promise.all([fsp.rm(tarFile, { force: true }), fsp.rm(gz, { force: true })]))
  r = await cli('diff', 'app', '-o', tarFile, '--json')
  t.is(r.code, 0, r.stderr)
  const d = parseJson(t, r)
  t.like(d, { id: 'app', parent: 'base', compression: 'none', file: tarFile })
  t.is(d.bytes, (await fsp.stat(tarFile)).size)
  t.regex(r.stderr, /diff app: .* in .*\/s/, 'a final progress line')
  // Without --json the summary on stdout is the one closing line: no second one on stderr.
  r = await cli('diff', 'app', '-o', tarFile)
  t.is(r.code, 0, r.stderr)
  t.regex(r.stdout, /^wrote .* \(.*, tar\)\n$/)
  t.notRegex(r.stderr, /diff app: .* in /, 'no final progress line beside the summary')
  const listing = execFileSync('tar', ['-tf', tarFile], { encoding: 'utf8' }).split('\n').filter(Boolean)
  t.deepEqual(listing.sort(), ['etc/', 'etc/.wh.gone', 'etc/hosts', 'srv/', 'srv/index.html'])

  // diff to stdout (a pipe), gzip.
  r = await cli('diff', 'app', '--compression', 'gzip')
  t.is(r.code, 0, r.stderr)
  t.deepEqual([...r.raw.subarray(0, 2)], [0x1f, 0x8b], 'gzip magic')
  await fsp.writeFile(gz, r.raw)
  t.deepEqual(execFileSync('tar', ['-tzf', gz], { encoding: 'utf8' }).split('\n').filter(Boolean).sort(), listing.sort())

  // apply the plain tar to a new layer on base, from a file, then the gzip one from stdin.
  r = await cli('apply', 'copy', tarFile, '--parent', 'base', '--json')
  t.is(r.code, 0, r.stderr)
  t.deepEqual(parseJson(t, r), { id: 'copy', parent: 'base', created: true, bytes: 36, read: d.bytes })
  t.notRegex(r.stderr, /of file content/, 'the summary once, in the result (cli-mess.spec.ts)')
  r = await cli('changes', 'copy', '--parent', 'base', '--json')
  t.deepEqual(parseJson(t, r), expected)

  r = await runCli(['--home', home, 'apply', 'piped', '-', '--parent', 'base'], { input: await fsp.readFile(gz) })
  t.is(r.code, 0, r.stderr)
  t.regex(r.stdout, /applied stdin to new layer piped \(on base\): 36 B of file content \(.* of tar in .*\/s\)/)
  r = await cli('changes', 'piped', '--parent', 'base', '--json')
  t.deepEqual(parseJson(t, r), expected)
  t.is(await fsp.readFile(path.join(layer('piped'), 'srv', 'index.html'), 'utf8'), '<h1>hi</h1>\n')
})

btrfsTest('apply of a bad tar: exit 1 with the hint, and the layer it would have made is gone', async (t, dir) => {
  const { cli, layer } = store(dir)
  const junk = path.join(dir, 'junk.tar')
  await fsp.writeFile(junk, Buffer.alloc(4096, 0x41))
  const r = await cli('apply', 'bad', junk)
  assertFailure(t, r, /ERR_BAD_LAYER/, /not a valid layer tar/)
  t.false(await exists(layer('bad')))
  const missing = await cli('apply', 'bad', path.join(dir, 'nope.tar'))
  assertFailure(t, missing, /cannot read .*nope\.tar: ENOENT/, /pass the path of a layer tar/)
})

btrfsTest('remap: a shifted copy of a layer, --json result', async (t, dir) => {
  const { cli, layer } = store(dir)
  t.is((await cli('create', 'base')).code, 0)
  await fillLayer(layer('base'))
  const r = await cli('remap', 'base', 'userns', '--uid-map', '0:100000:65536', '--gid-map', '0:200000:65536', '--json')
  t.is(r.code, 0, r.stderr)
  const out = parseJson(t, r)
  t.like(out, { id: 'base', target: 'userns' })
  t.true(out.visited >= 4)
  t.is(out.changed, out.visited)
  const st = await fsp.lstat(path.join(layer('userns'), 'etc', 'hosts'))
  t.is(st.uid, 100000)
  t.is(st.gid, 200000)
  t.is((await fsp.lstat(path.join(layer('base'), 'etc', 'hosts'))).uid, 0, 'the source is untouched')
  t.regex(r.stderr, /remap base -> userns: \d+ inodes in .*inodes\/s/)
  const human = await cli('remap', 'base', 'userns2', '--uid-map', '0:100000:65536')
  t.is(human.code, 0, human.stderr)
  t.regex(human.stdout, /^created userns2 from base: .* owners shifted\n$/)
  t.notRegex(human.stderr, /inodes in /, 'no final progress line beside the summary')
})

// ---------------------------------------------------------------------------------------------
// Operational errors: exit code 1 and a hint
// ---------------------------------------------------------------------------------------------

btrfsTest('operational errors say what to do: not btrfs, id taken, missing layer, not root', async (t, dir) => {
  const { home, cli } = store(dir)
  const plain = await nonBtrfsDir()
  t.teardown(() => plain.remove())
  let r = await runCli(['--home', path.join(plain.dir, 'store'), 'init'])
  assertFailure(t, r, /ERR_PREREQUISITES/, /is not on btrfs; pass --home on a btrfs filesystem or omit it to use the loopback store/)

  t.is((await cli('create', 'base')).code, 0)
  r = await cli('create', 'base')
  assertFailure(t, r, /EEXIST/, /layer id taken: 'base' exists/)
  r = await cli('create', 'child', '--parent', 'ghost')
  assertFailure(t, r, /ENOENT/, /no layer 'ghost'/)
  r = await cli('changes', 'ghost')
  assertFailure(t, r, /ENOENT/, /no layer 'ghost'/)
  r = await cli('diff', 'ghost', '-o', path.join(dir, 'ghost.tar'))
  assertFailure(t, r, /ENOENT/)
  t.false(await exists(path.join(dir, 'ghost.tar')), 'no partial output file')

  // Not root: the store (0700, root's) cannot be opened.
  r = await runCli(['--home', home, 'ls'], { uid: 65534, gid: 65534 })
  assertFailure(t, r, /EACCES|EPERM/, /run as root/)
})

btrfsTest('Ctrl-C aborts a long apply: exit 130, nothing left behind', async (t, dir) => {
  const { home, cli, layer } = store(dir)
  t.is((await cli('init')).code, 0)
  // A tar that never ends: a header and part of a 64 MiB file, then a quiet pipe.
  const header = execFileSync('sh', ['-c', `cd ${JSON.stringify(dir)} && truncate -s 64M big && tar -cf - big | head -c 1048576`])
  let stderr = ''
  const r = await runCli(['--home', home, 'apply', 'endless', '-'], {
    keepStdin: true,
    onSpawn: (child) => {
      child.stdin!.write(header)
      child.stderr!.on('data', (d) => (stderr += d))
      // A new layer is built under a temporary name, visible only once complete: wait for that.
      const staging = async () => (await fsp.readdir(path.join(home, 'subvolumes')).catch(() => [])).some((n) => n.startsWith('.tmp-endless-'))
      const poll = setInterval(async () => {
        if (await staging()) {
          clearInterval(poll)
          setTimeout(() => child.kill('SIGINT'), 200)
        }
      }, 50)
      child.on('close', () => clearInterval(poll))
    },
    timeoutMs: 20_000,
  })
  t.is(r.code, 130, r.stderr)
  t.regex(r.stderr, /interrupted/)
  t.false(await exists(layer('endless')), 'the apply made no layer')
  t.deepEqual((await fsp.readdir(path.join(home, 'subvolumes'))).filter((n) => n.startsWith('.')), [], 'nor left its temporary subvolume')
  const ls = await cli('ls', '--json')
  t.deepEqual(parseJson(t, ls), [])
  t.true(stderr.length > 0)
})

btrfsTest.needing(['tar'])('demo on --home: every step timed, everything it made removed', async (t, dir) => {
  const { home, cli } = store(dir)
  t.is((await cli('create', 'mine')).code, 0)
  const r = await cli('demo', '--json')
  t.is(r.code, 0, r.stderr)
  const out = parseJson(t, r)
  t.is(out.home, home)
  t.true(out.tree.files > 10, 'a real tree')
  t.true(out.replayMatches, 'the exported diff replays to the same changes')
  t.true(out.replication.matches, 'the layers sent and received give the same changes')
  t.true(out.replication.incrementalBytes < out.replication.fullBytes, 'the incremental stream is the smaller')
  t.true(out.diffSize > 0)
  const names = out.steps.map((s: { step: string }) => s.step)
  for (const want of [/GNU tar -c/, /import/, /changes of demo-delete against its parent/, /diffSize/, /export .*gzip/, /send\|receive demo-delete -> demo-recv-delete \(incremental\)/, /remove everything/]) {
    t.true(names.some((n: string) => want.test(n)), `step ${want}`)
  }
  for (const s of out.steps) t.true(typeof s.ms === 'number' && s.ms >= 0)
  const ls = parseJson(t, await cli('ls', '--json'))
  t.deepEqual(
    ls.map((m: { id: string }) => m.id),
    ['mine'],
    'only what was there before',
  )
  const human = await cli('demo')
  t.is(human.code, 0, human.stderr)
  t.regex(human.stdout, /^ {2}total\s+[\d.]+ m?s$/m)
})

test('bench: explains itself in --help', async (t) => {
  const r = await runCli(['bench', '--help'])
  t.is(r.code, 0)
  t.regex(r.stdout, /bench\/index\.ts/)
})
