/**
 * The package as users get it: the root tarball and the platform tarball of this machine
 * (packed by scripts/pack.mjs through napi-rs's release steps) installed into a fresh project
 * with no Rust toolchain on PATH, then used there against a real loop-mounted btrfs, through
 * `require` and `import`, type-checked as a consumer, and loaded without its binary. Also a
 * plain `npm pack` (no binary, no optional dependencies), whose load error names the route that
 * works, and a load on another system than Linux ("btrfs-layers needs Linux").
 *
 * Needs `npm run build` first (as `npm test` does) and the npm registry (npm looks up the
 * other targets' optional packages). Root-gated like every btrfs spec.
 */
import test, { type ExecutionContext } from 'ava'
import { spawnSync, type SpawnSyncReturns } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { useBtrfs } from './helpers/btrfs'

const { btrfsTest } = useBtrfs(test)

const repo = path.resolve(__dirname, '..')
const smokeDir = path.join(repo, 'scripts', 'pack-smoke')
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'btrfs-layers-packtest-'))
test.after.always(() => fs.rmSync(work, { recursive: true, force: true }))

/** napi-rs's name for this machine's target, e.g. linux-x64-gnu. */
function target(): string {
  const report = process.report?.getReport?.() as { header?: { glibcVersionRuntime?: string } } | undefined
  return `${process.platform}-${process.arch}-${report?.header?.glibcVersionRuntime ? 'gnu' : 'musl'}`
}
const platformPackage = `btrfs-layers-${target()}`

/** PATH without any directory holding cargo or rustc (node's own directory first). */
function pathWithoutRust(): string {
  const hasRust = (dir: string) =>
    /[/\\]\.(cargo|rustup)([/\\]|$)/.test(dir) || ['cargo', 'rustc', 'rustup'].some((b) => fs.existsSync(path.join(dir, b)))
  const dirs = [path.dirname(process.execPath), ...(process.env.PATH ?? '').split(path.delimiter)]
  return [...new Set(dirs)].filter((d) => d && !hasRust(d)).join(path.delimiter)
}

/** The environment of the consumer project: no Rust, no npm settings of the `npm test` around us. */
function consumerEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(npm_|CARGO|RUSTUP|RUSTC|NAPI_RS_NATIVE_LIBRARY_PATH$|NODE_OPTIONS$)/i.test(k)) continue
    env[k] = v
  }
  env.PATH = pathWithoutRust()
  env.npm_config_update_notifier = 'false'
  env.npm_config_fund = 'false'
  env.npm_config_audit = 'false'
  return env
}

function run(cmd: string, args: string[], cwd: string, env = consumerEnv()): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd, env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, timeout: 240_000 })
}

function ok(t: ExecutionContext, r: SpawnSyncReturns<string>, what: string): string {
  if (r.error || r.status !== 0) {
    t.fail(`${what} failed (${r.error?.message ?? `exit ${r.status}`}):\n${r.stdout}\n${r.stderr}`)
    throw new Error(`${what} failed`)
  }
  return r.stdout
}

interface Packed {
  root: string
  platforms: Record<string, string>
  version: string
  optionalDependencies: Record<string, string>
}

interface Installed {
  packed: Packed
  project: string
  installLog: string
}

let installing: Promise<Installed> | undefined

/** Pack once and install the two tarballs into a fresh project, for every test of this file. */
function installed(t: ExecutionContext): Promise<Installed> {
  installing ??= (async () => {
    for (const need of ['dist/index.js', 'native/index.js', `native/btrfs-layers.${target()}.node`]) {
      if (!fs.existsSync(path.join(repo, need))) throw new Error(`${need} is missing: run npm run build first`)
    }
    const tarballs = path.join(work, 'tarballs')
    const packed = JSON.parse(ok(t, run(process.execPath, ['scripts/pack.mjs', '--out', tarballs], repo, process.env), 'scripts/pack.mjs')) as Packed
    const platformTarball = packed.platforms[target()]
    if (!platformTarball) throw new Error(`scripts/pack.mjs packed no ${platformPackage}: ${JSON.stringify(packed)}`)

    // Both tarballs in one install. The override keeps npm from looking up this machine's
    // platform package in the registry for the root's optional dependency: the tarball is it.
    const project = path.join(work, 'project')
    fs.mkdirSync(project)
    const deps = { 'btrfs-layers': `file:${packed.root}`, [platformPackage]: `file:${platformTarball}` }
    const manifest = { name: 'packtest', private: true, dependencies: deps, overrides: { [platformPackage]: `$${platformPackage}` } }
    fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify(manifest, null, 2))
    for (const f of fs.readdirSync(smokeDir)) fs.copyFileSync(path.join(smokeDir, f), path.join(project, f))
    const r = run('npm', ['install', '--no-audit', '--no-fund', '--loglevel', 'http'], project)
    const installLog = ok(t, r, 'npm install of the tarballs') + r.stderr
    return { packed, project, installLog }
  })()
  return installing
}

btrfsTest.needing(['tar']).serial('the tarballs install into a fresh project with no Rust toolchain on PATH', async (t) => {
  const { packed, project, installLog } = await installed(t)
  for (const tool of ['cargo', 'rustc']) {
    const r = run(tool, ['--version'], project)
    t.is((r.error as NodeJS.ErrnoException | undefined)?.code, 'ENOENT', `${tool} is not on the consumer's PATH`)
  }
  // The root ships the loader, not a binary; the binary comes from the platform package only.
  const tarList = ok(t, run('tar', ['tzf', packed.root], work), 'tar tzf')
  t.false(/\.node$/m.test(tarList), `no .node file in the root tarball:\n${tarList}`)
  for (const f of ['package/dist/index.js', 'package/dist/index.d.ts', 'package/esm/index.mjs', 'package/esm/index.d.mts', 'package/native/index.js']) {
    t.true(tarList.split('\n').includes(f), `root tarball ships ${f}`)
  }
  // What the release adds to the root: every target as an optional dependency at our version.
  const napiTargets = fs.readdirSync(path.join(repo, 'npm')).map((d) => `btrfs-layers-${d}`)
  t.deepEqual(Object.keys(packed.optionalDependencies).sort(), napiTargets.sort())
  for (const v of Object.values(packed.optionalDependencies)) t.is(v, packed.version)
  const platformManifest = JSON.parse(fs.readFileSync(path.join(project, 'node_modules', platformPackage, 'package.json'), 'utf8'))
  t.is(platformManifest.version, packed.version, 'platform package version in sync')
  t.deepEqual(platformManifest.os, ['linux'])
  t.deepEqual(platformManifest.cpu, [process.arch])
  // npm took the platform package from its tarball, never from the registry.
  t.false(new RegExp(`GET \\d+ \\S+/${platformPackage}\\b`).test(installLog), `npm fetched ${platformPackage} from a registry:\n${installLog}`)
  const lock = JSON.parse(fs.readFileSync(path.join(project, 'package-lock.json'), 'utf8'))
  t.regex(lock.packages[`node_modules/${platformPackage}`]?.resolved ?? '', /^file:/, 'lockfile resolves the platform package to the tarball')
  const installedBinary = path.join(project, 'node_modules', platformPackage, `btrfs-layers.${target()}.node`)
  t.deepEqual(fs.readFileSync(installedBinary), fs.readFileSync(path.join(repo, 'native', `btrfs-layers.${target()}.node`)), 'the freshly built binary')
})

for (const via of ['require', 'import'] as const) {
  btrfsTest.serial(`${via}('btrfs-layers') works against btrfs: subvolumes and the driver`, async (t, dir) => {
    const { project } = await installed(t)
    const out = ok(t, run(process.execPath, [via === 'require' ? 'smoke.cjs' : 'smoke.mjs', dir], project), `smoke via ${via}`)
    const result = JSON.parse(out.trim().split('\n').pop() ?? '{}') as { done: string[]; binary: string; exports: string[] }
    t.true(result.done.includes('cleanup'), `every step ran: ${result.done.join(', ')}`)
    t.is(result.binary, fs.realpathSync(path.join(project, 'node_modules', platformPackage, `btrfs-layers.${target()}.node`)))
    for (const name of ['BtrfsDriver', 'BtrfsError', 'createSubvolume', 'snapshot', 'deleteSubvolume']) t.true(result.exports.includes(name), name)
  })
}

btrfsTest.serial('the types resolve for import and require (tsc --module node16, lib check on)', async (t) => {
  const { project } = await installed(t)
  const tsc = path.join(repo, 'node_modules', 'typescript', 'bin', 'tsc')
  ok(t, run(process.execPath, [tsc, '-p', 'tsconfig.json', '--typeRoots', path.join(repo, 'node_modules', '@types')], project), 'tsc')
  t.pass()
})

btrfsTest.serial('without the platform package, loading says which package to install', async (t) => {
  const { project } = await installed(t)
  // The same install minus the binary package: what --omit=optional or a foreign lockfile leaves.
  const bare = path.join(work, 'bare')
  fs.mkdirSync(path.join(bare, 'node_modules'), { recursive: true })
  fs.cpSync(path.join(project, 'node_modules', 'btrfs-layers'), path.join(bare, 'node_modules', 'btrfs-layers'), { recursive: true })
  for (const entry of ['require', 'import']) {
    const code = entry === 'require' ? "require('btrfs-layers')" : "import('btrfs-layers').catch((e) => { console.error(e.message); process.exit(1) })"
    const r = run(process.execPath, ['-e', code], bare)
    t.not(r.status, 0, `${entry} fails without the binary`)
    t.true(r.stderr.includes(`npm install ${platformPackage}@`), `${entry}: names the package:\n${r.stderr}`)
    t.true(r.stderr.includes('optional dependency'), `${entry}: says why it may be missing:\n${r.stderr}`)
  }
})

// ---------------------------------------------------------------------------------------------
// A plain `npm pack` (no release steps), and other systems than Linux
// ---------------------------------------------------------------------------------------------

let plainInstalling: Promise<{ project: string }> | undefined

/** A plain `npm pack` of this clone, as a user would run it, installed alone into a fresh project. */
function plainInstalled(t: ExecutionContext): Promise<{ project: string }> {
  plainInstalling ??= (async () => {
    const out = path.join(work, 'plain-tarball')
    fs.mkdirSync(out)
    const [report] = JSON.parse(ok(t, run('npm', ['pack', '--json', '--pack-destination', out], repo), 'npm pack')) as { filename: string }[]
    const tarball = path.join(out, report.filename)
    const project = path.join(work, 'plain-project')
    fs.mkdirSync(project)
    fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'plaintest', private: true }))
    ok(t, run('npm', ['install', '--no-audit', '--no-fund', tarball], project), 'npm install of the plain tarball')
    return { project }
  })()
  return plainInstalling
}

test.serial('a plain npm pack installs, and loading it names the route that works (npm run pack:local, both tarballs)', async (t) => {
  const { project } = await plainInstalled(t)
  const installed = path.join(project, 'node_modules', 'btrfs-layers')
  const manifest = JSON.parse(fs.readFileSync(path.join(installed, 'package.json'), 'utf8')) as Record<string, unknown>
  t.is(manifest.os, undefined, 'no os field: npm installs it on macOS too (to package an Electron app for Linux)')
  t.is(manifest.optionalDependencies, undefined, 'a plain pack lists no binary package')
  const files = fs.readdirSync(installed, { recursive: true, encoding: 'utf8' })
  t.false(files.some((f) => f.endsWith('.node')), 'and ships no binary')
  for (const entry of ['require', 'import']) {
    const code = entry === 'require' ? "require('btrfs-layers')" : "import('btrfs-layers').catch((e) => { console.error(e.message); process.exit(1) })"
    const r = run(process.execPath, ['-e', code], project)
    t.not(r.status, 0, `${entry} fails without a binary`)
    t.true(r.stderr.includes('npm run pack:local'), `${entry}: names the route that works:\n${r.stderr}`)
    t.true(r.stderr.includes(`${platformPackage}-${manifest.version}.tgz`), `${entry}: names the platform tarball:\n${r.stderr}`)
    t.false(r.stderr.includes(`npm install ${platformPackage}@`), `${entry}: does not send the user to the registry:\n${r.stderr}`)
  }
})

test('on a system other than Linux, require and import fail with "btrfs-layers needs Linux"', (t) => {
  const fake = "Object.defineProperty(process, 'platform', { value: 'darwin' });"
  const entries = {
    require: [`${fake} try { require(${JSON.stringify(path.join(repo, 'dist', 'index.js'))}) } catch (e) { console.error(e.code, e.message); process.exit(1) }`],
    import: ['--input-type=module', '-e', `${fake} await import(${JSON.stringify(path.join(repo, 'esm', 'index.mjs'))}).catch((e) => { console.error(e.code, e.message); process.exit(1) })`],
  }
  for (const [entry, args] of Object.entries(entries)) {
    const r = run(process.execPath, args.length === 1 ? ['-e', args[0]] : args, repo)
    t.is(r.status, 1, `${entry}: fails:\n${r.stdout}\n${r.stderr}`)
    t.regex(r.stderr, /^ERR_UNSUPPORTED_PLATFORM btrfs-layers needs Linux: btrfs is a Linux filesystem, and this is darwin\./, entry)
  }
})
