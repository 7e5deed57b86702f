#!/usr/bin/env node
// Builds the native binary for every target the package ships, on this machine:
//
//   node scripts/build-targets.mjs [--target TRIPLE]...     (npm run build:targets)
//
// gnu targets link against napi-rs's cross toolchain (`napi build --use-napi-cross`), whose
// sysroot is glibc 2.17, so the binaries load on old distributions; musl targets build with
// cargo-zigbuild and zig. Each binary lands in artifacts/<target>/btrfs-layers.<platform>.node,
// where `napi artifacts` and scripts/pack.mjs --binaries look for them.
//
// What it needs it installs once and reuses (every step says whether it was cached):
// - rustup targets, through `rustup target add`;
// - the gcc + glibc 2.17 toolchain for each gnu target, from npm, unpacked where napi looks for
//   it (~/.napi-rs/cross-toolchain/<version>/<target>);
// - zig from PyPI (the `ziglang` package, pinned) in a venv, and cargo-zigbuild from crates.io
//   (pinned, --locked), both under ${XDG_CACHE_HOME:-~/.cache}/btrfs-layers-ci.
// Any failure to fetch one of them stops the build with the command that failed.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { homedir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(join(root, 'package.json'))

const ZIGLANG_VERSION = '0.15.2'
const CARGO_ZIGBUILD_VERSION = '0.24.1'
// The toolchain packages of @napi-rs/cross-toolchain, pinned: its own `download()` asks npm for
// them at its own version (1.0.5), which was never published for these two; these are the newest
// that were. Both are gcc with a glibc 2.17 sysroot.
const NAPI_CROSS_PACKAGES = {
  'x86_64-unknown-linux-gnu': '@napi-rs/cross-toolchain-x64-target-x86_64@1.0.0',
  'aarch64-unknown-linux-gnu': '@napi-rs/cross-toolchain-x64-target-aarch64@1.0.3',
}

const cache = join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'btrfs-layers-ci')
const napi = join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js')
const { napi: napiConfig } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))

function say(message) {
  console.log(`build-targets: ${message}`)
}

/** Runs a command with its output shown; throws, naming the command, when it fails. */
function run(cmd, args, options = {}) {
  console.log(`+ ${[cmd, ...args].join(' ')}`)
  const result = spawnSync(cmd, args, { stdio: 'inherit', ...options })
  if (result.error) throw new Error(`${cmd} could not run: ${result.error.message}`)
  if (result.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${result.signal ?? `exit ${result.status}`})`)
  }
}

/** A command's stdout, or null when it cannot run or fails. */
function output(cmd, args, options = {}) {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], ...options }).trim()
  } catch {
    return null
  }
}

function targetsToBuild() {
  const wanted = []
  for (let i = 2; i < process.argv.length; i++) {
    const arg = process.argv[i]
    if (arg === '--target' || arg === '-t') wanted.push(process.argv[++i])
    else if (arg.startsWith('--target=')) wanted.push(arg.slice('--target='.length))
    else throw new Error(`unknown argument ${arg} (usage: build-targets.mjs [--target TRIPLE]...)`)
  }
  for (const t of wanted) {
    if (!napiConfig.targets.includes(t)) throw new Error(`${t} is not one of package.json's napi.targets: ${napiConfig.targets.join(', ')}`)
  }
  return wanted.length ? wanted : napiConfig.targets
}

function rustupTargets(targets) {
  const installed = new Set((output('rustup', ['target', 'list', '--installed']) ?? '').split('\n'))
  const missing = targets.filter((t) => !installed.has(t))
  if (missing.length === 0) return say(`rust targets: installed (${targets.join(', ')})`)
  say(`rust targets: adding ${missing.join(', ')}`)
  run('rustup', ['target', 'add', ...missing])
}

/** Unpacks the napi-rs cross toolchain for `target` where `napi build --use-napi-cross` finds it. */
function napiCrossToolchain(target) {
  const { version } = require('@napi-rs/cross-toolchain/package.json')
  const dest = join(homedir(), '.napi-rs', 'cross-toolchain', version, target)
  const spec = NAPI_CROSS_PACKAGES[target]
  // napi skips its own download when package.json is there, so it goes in last (the rename).
  if (existsSync(join(dest, 'package.json'))) return say(`${target}: glibc 2.17 toolchain cached in ${dest}`)
  say(`${target}: fetching the glibc 2.17 toolchain ${spec} from npm into ${dest}`)
  mkdirSync(dirname(dest), { recursive: true })
  const work = mkdtempSync(join(dirname(dest), `.${target}-`))
  try {
    const tgz = output('npm', ['pack', spec, '--silent', '--pack-destination', work])
    if (!tgz || !existsSync(join(work, tgz))) {
      run('npm', ['pack', spec, '--pack-destination', work]) // shows npm's error, then throws
      throw new Error(`npm pack ${spec} produced no tarball`)
    }
    run('tar', ['-xzf', join(work, tgz), '-C', work])
    const xz = readdirSync(join(work, 'package')).find((f) => f.endsWith('.tar.xz'))
    if (!xz) throw new Error(`${spec} holds no .tar.xz toolchain`)
    const unpacked = join(work, 'toolchain')
    mkdirSync(unpacked)
    run('tar', ['-xJf', join(work, 'package', xz), '-C', unpacked])
    if (!existsSync(join(unpacked, 'package.json')) || !existsSync(join(unpacked, 'bin', `${target}-gcc`))) {
      throw new Error(`${spec} unpacked without bin/${target}-gcc and package.json`)
    }
    rmSync(dest, { recursive: true, force: true }) // an empty directory napi may have made
    renameSync(unpacked, dest)
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

const zigVenv = join(cache, `ziglang-${ZIGLANG_VERSION}`)

/** The directory of the pinned `ziglang` package (zig and its lib/), or null before it is installed. */
export function zigPackageDir() {
  return output(join(zigVenv, 'bin', 'python'), ['-c', 'import os, ziglang; print(os.path.dirname(ziglang.__file__))']) || null
}

/** zig from PyPI in a venv of its own; the venv's python, which cargo-zigbuild runs as `python -m ziglang`. */
function zig() {
  const venv = zigVenv
  const python = join(venv, 'bin', 'python')
  if (output(python, ['-m', 'ziglang', 'version']) === ZIGLANG_VERSION) {
    say(`zig ${ZIGLANG_VERSION}: cached in ${venv}`)
    return python
  }
  say(`zig ${ZIGLANG_VERSION}: installing ziglang==${ZIGLANG_VERSION} from PyPI into ${venv}`)
  rmSync(venv, { recursive: true, force: true })
  try {
    run('python3', ['-m', 'venv', venv])
  } catch (e) {
    throw new Error(`${e.message}: zig comes from PyPI and needs python3 with venv (Debian: apt-get install python3-venv)`, { cause: e })
  }
  run(join(venv, 'bin', 'pip'), ['install', '--disable-pip-version-check', '--no-input', `ziglang==${ZIGLANG_VERSION}`])
  const got = output(python, ['-m', 'ziglang', 'version'])
  if (got !== ZIGLANG_VERSION) throw new Error(`zig from ziglang==${ZIGLANG_VERSION} says its version is ${got}`)
  return python
}

/** cargo-zigbuild from crates.io; the directory holding it, for PATH. */
function cargoZigbuild() {
  const prefix = join(cache, `cargo-zigbuild-${CARGO_ZIGBUILD_VERSION}`)
  const bin = join(prefix, 'bin')
  if (output(join(bin, 'cargo-zigbuild'), ['--version']) === `cargo-zigbuild ${CARGO_ZIGBUILD_VERSION}`) {
    say(`cargo-zigbuild ${CARGO_ZIGBUILD_VERSION}: cached in ${prefix}`)
    return bin
  }
  say(`cargo-zigbuild ${CARGO_ZIGBUILD_VERSION}: cargo install --locked into ${prefix} (a few minutes, once)`)
  run('cargo', ['install', 'cargo-zigbuild', '--version', CARGO_ZIGBUILD_VERSION, '--locked', '--root', prefix])
  return bin
}

function build(target, env, crossFlag) {
  const outDir = join('artifacts', target)
  say(`${target}: napi build ${crossFlag} -> ${outDir}/`)
  const started = Date.now()
  // --no-js: the loader (native/index.js) is the same for every target and `npm run build` writes it.
  // A target directory each: build scripts run on this host, and the x86_64 glibc build links them
  // with the cross toolchain's gcc, the others with the host's; in one directory each build would
  // throw away the others' (and `npm run build`'s) compiled dependencies.
  run(process.execPath, [napi, 'build', '--platform', '--release', '--no-js', '--target', target, crossFlag,
    '--manifest-path', 'crates/node/Cargo.toml', '--package-json-path', 'package.json',
    '--target-dir', join('target', 'build-targets', target), '--output-dir', outDir], { cwd: root, env })
  // napi also writes the type definitions there; native/index.d.ts is the one the package ships.
  rmSync(join(root, outDir, 'index.d.ts'), { force: true })
  const binary = readdirSync(join(root, outDir)).find((f) => f.endsWith('.node'))
  if (!binary) throw new Error(`${target}: napi build wrote no .node file into ${outDir}`)
  say(`${target}: ${join(outDir, binary)} (${Math.round((Date.now() - started) / 1000)}s)`)
}

function main() {
  const started = Date.now()
  const targets = targetsToBuild()
  const gnu = targets.filter((t) => t.endsWith('-gnu'))
  const musl = targets.filter((t) => t.endsWith('-musl'))
  say(`building ${targets.join(', ')}; toolchains cached in ${cache} and ~/.napi-rs`)

  rustupTargets(targets)
  for (const t of gnu) napiCrossToolchain(t)
  let muslEnv
  if (musl.length) {
    const python = zig()
    const bin = cargoZigbuild()
    muslEnv = { ...process.env, PATH: `${bin}:${process.env.PATH}`, CARGO_ZIGBUILD_PYTHON_PATH: python }
  }

  for (const t of gnu) build(t, process.env, '--use-napi-cross')
  for (const t of musl) build(t, muslEnv, '--cross-compile')
  say(`done in ${Math.round((Date.now() - started) / 1000)}s: ${targets.map((t) => `artifacts/${t}/`).join(' ')}`)
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  try {
    main()
  } catch (e) {
    console.error(`\nbuild-targets: FAILED: ${e.message}`)
    process.exit(1)
  }
}
