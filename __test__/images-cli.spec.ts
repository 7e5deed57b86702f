// The image commands of the CLI (pull, push, import, export, images, rmi, commit) against a real registry: --json
// data, progress on stderr (a line per layer, reused or done, and a total), exit codes, and a
// Ctrl-C in the middle of a pull that leaves no half layer and no record.
import test, { type ExecutionContext } from 'ava'
import { randomBytes } from 'node:crypto'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { chainIds, layerIdOf } from '../ts/image/chain'
import { useBtrfs } from './helpers/btrfs'
import { parseJson, runCli } from './helpers/cli-run'
import { dir, file } from './helpers/diff-tar'
import { image, layer, writeLayout, type BuiltImage } from './helpers/oci-layout'
import { startFaultProxy, startRegistry, useRegistryTools, type TestRegistry } from './helpers/registry'

const { btrfsTest } = useBtrfs(test, { size: 1024 * 1024 * 1024 })
const registry = useRegistryTools(test)
const imageTest = (title: string, impl: (t: ExecutionContext, dir: string) => Promise<void>) =>
  registry.available ? btrfsTest(title, impl) : registry.registryTest(title, async () => undefined)

async function pushed(t: ExecutionContext, d: string, reg: TestRegistry, ref: string, img: BuiltImage): Promise<string> {
  const l = path.join(d, `layout-${randomBytes(4).toString('hex')}`)
  await writeLayout(l, [img])
  await reg.crane(['push', l, `${reg.host}/${ref}`])
  return `${reg.host}/${ref}`
}

const threeLayers = async () =>
  image(await Promise.all(['a', 'b', 'c'].map((n) => layer([dir(`${n}/`), file(`${n}/data`, randomBytes(30_000))], n === 'b' ? 'zstd' : 'gzip'))))

imageTest('pull, push, export, import, images, rmi and commit with --json; progress lines on stderr', async (t, d) => {
  const reg = await startRegistry()
  t.teardown(() => reg.stop())
  const home = path.join(d, 'store')
  const img = await threeLayers()
  const ref = await pushed(t, d, reg, 'cli/app:v1', img)
  const ids = chainIds(img.layers.map((l) => l.diffId)).map(layerIdOf)

  const p = await runCli(['--home', home, 'pull', ref, '--json'])
  t.is(p.code, 0, p.stderr)
  const rec = parseJson(t, p)
  t.is(rec.digest, img.digest)
  t.deepEqual(rec.layers, ids)
  t.deepEqual(rec.references, [ref])
  t.is((p.stderr.match(/^layer \d\/3 [0-9a-f]{12}: .*done$/gm) ?? []).length, 3, p.stderr)
  t.regex(p.stderr, /^pull .*: .* in .*, 3 layers fetched, 0 reused$/m)

  const again = await runCli(['--home', home, 'pull', ref])
  t.is(again.code, 0, again.stderr)
  t.is((again.stderr.match(/: reused$/gm) ?? []).length, 3)
  t.regex(again.stdout, new RegExp(`^pulled ${ref}: ${img.digest}, 3 layers`, 'm'))

  const target = `${reg.host}/cli/pushed:v1`
  const ps = await runCli(['--home', home, 'push', ref, target, '--json'])
  t.is(ps.code, 0, ps.stderr)
  const pushedOut = parseJson(t, ps)
  t.is(pushedOut.digest, (await reg.crane(['digest', target])).trim())
  t.is(pushedOut.digest, img.digest, 'the pulled blobs mounted: the same image')
  t.deepEqual(pushedOut.layers.map((l: { blob: string }) => l.blob), ['mounted', 'mounted', 'mounted'])
  t.is((ps.stderr.match(/^layer \d\/3 [0-9a-f]{12}: .*, mounted$/gm) ?? []).length, 3, ps.stderr)
  const ps2 = await runCli(['--home', home, 'push', ref, target])
  t.is((ps2.stderr.match(/, present$/gm) ?? []).length, 3, ps2.stderr)
  // --compression gzip: the zstd layer is diffed again, as gzip, and uploaded.
  const gz = `${reg.host}/cli/gzip:v1`
  const ps3 = await runCli(['--home', home, 'push', ref, gz, '--compression', 'gzip', '--json'])
  t.is(ps3.code, 0, ps3.stderr)
  t.deepEqual(parseJson(t, ps3).layers.map((l: { blob: string }) => l.blob), ['mounted', 'uploaded', 'mounted'])
  await reg.crane(['validate', '--remote', gz])

  // export to a layout, import it back under another reference: the same image.
  const layoutDir = path.join(d, 'exported')
  const ex = await runCli(['--home', home, 'export', ref, layoutDir, '--json'])
  t.is(ex.code, 0, ex.stderr)
  const im = await runCli(['--home', home, 'import', layoutDir, '--ref', 'local/imported:v1', '--json'])
  t.is(im.code, 0, im.stderr)
  const imported = parseJson(t, im)
  t.is(imported.digest, parseJson(t, ex).digest)
  t.deepEqual(imported.references, ['docker.io/local/imported:v1'])
  t.is((await runCli(['--home', home, 'rmi', 'local/imported:v1'])).code, 0)

  const list = await runCli(['--home', home, 'images', '--json'])
  t.is(list.code, 0, list.stderr)
  t.deepEqual(parseJson(t, list).map((r: { digest: string }) => r.digest), [img.digest])
  const human = await runCli(['--home', home, 'images'])
  t.regex(human.stdout, /^REFERENCE\s+DIGEST\s+LAYERS\s+SIZE$/m)
  t.regex(human.stdout, new RegExp(`^${ref.replace(/[.]/g, '\\.')}\\s+${img.digest.slice(7, 19)}\\s+3\\s`, 'm'))

  // commit a container layer on top as a new image: its layers are the chain's ids.
  const c = await runCli(['--home', home, 'create', 'ct1', '--parent', ids[2]])
  t.is(c.code, 0, c.stderr)
  const cm = await runCli(['--home', home, 'commit', 'ct1', '--ref', 'local/app:v2', '--json'])
  t.is(cm.code, 0, cm.stderr)
  t.deepEqual(parseJson(t, cm).layers, [...ids, 'ct1'])

  const r = await runCli(['--home', home, 'rmi', ref, '--json'])
  t.is(r.code, 0, r.stderr)
  const out = parseJson(t, r)
  t.deepEqual(out.removed, [{ ref, untagged: [ref], deleted: img.digest, layers: [] }], 'the committed image uses every layer')
  const r2 = await runCli(['--home', home, 'rmi', 'local/app:v2'])
  t.is(r2.code, 0, r2.stderr)
  t.regex(r2.stdout, /^removed layer ct1$/m)
  const ls = await runCli(['--home', home, 'ls', '--json'])
  t.deepEqual(parseJson(t, ls), [])

  const missing = await runCli(['--home', home, 'rmi', ref, '--json'])
  t.is(missing.code, 1)
  t.is(parseJson(t, missing).error.code, 'ENOENT')
  const usage = await runCli(['--home', home, 'pull', ref, '--platform', 'linux'])
  t.is(usage.code, 2, usage.stderr)
})

imageTest('pull with wrong credentials: exit 1, ERR_REGISTRY_AUTH and a hint; --password-stdin with the right ones pulls', async (t, d) => {
  const reg = await startRegistry({ auth: 'htpasswd' })
  t.teardown(() => reg.stop())
  const home = path.join(d, 'store')
  const img = await threeLayers()
  const ref = await pushed(t, d, reg, 'priv/app:v1', img)
  const user = reg.user as { username: string; password: string }
  const bad = await runCli(['--home', home, 'pull', ref, '--user', user.username, '--password-stdin'], { input: 'wrong\n' })
  t.is(bad.code, 1, bad.stderr)
  t.regex(bad.stderr, /ERR_REGISTRY_AUTH/)
  t.regex(bad.stderr, /^hint: .*credentials/m)
  t.false(bad.stderr.includes('wrong'))
  const good = await runCli(['--home', home, 'pull', ref, '--user', user.username, '--password-stdin', '--json'], { input: `${user.password}\n` })
  t.is(good.code, 0, good.stderr)
  t.is(parseJson(t, good).digest, img.digest)
})

imageTest('Ctrl-C during a pull: exit 130, no half layer, no record; the complete layers stay', async (t, d) => {
  const reg = await startRegistry()
  t.teardown(() => reg.stop())
  const home = path.join(d, 'store')
  const img = await threeLayers()
  await pushed(t, d, reg, 'int/app:v1', img)
  // The top blob answers 503 every time: the pull waits in its retries until interrupted.
  const top = img.layers[2].digest
  const proxy = await startFaultProxy(reg.url, (req) => (req.method === 'GET' && req.url?.endsWith(top) ? { status: 503 } : 'pass'))
  t.teardown(() => proxy.stop())
  const ids = chainIds(img.layers.map((l) => l.diffId)).map(layerIdOf)
  const r = await runCli(['--home', home, 'pull', `${proxy.host}/int/app:v1`, '--concurrency', '1'], {
    onSpawn: (child) => {
      let err = ''
      child.stderr?.on('data', (b: Buffer) => {
        err += b.toString()
        if (/layer 2\/3 .*done/.test(err) && !child.killed) child.kill('SIGINT')
      })
    },
  })
  t.is(r.code, 130, r.stderr)
  t.regex(r.stderr, /interrupted/)
  const ls = parseJson(t, await runCli(['--home', home, 'ls', '--json'])).map((l: { id: string }) => l.id)
  t.deepEqual(ls.sort(), ids.slice(0, 2).sort())
  t.deepEqual(parseJson(t, await runCli(['--home', home, 'images', '--json'])), [])
  t.deepEqual((await fsp.readdir(path.join(home, 'subvolumes'))).filter((n) => n.startsWith('.')), [])
})
