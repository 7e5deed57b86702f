#!/usr/bin/env node
// Packs btrfs-layers the way a release publishes it, without publishing: the root package and
// a platform package for every target whose binary has been built here.
//
//   node scripts/pack.mjs --out DIR [--binaries DIR]
//
// In a throwaway copy of the package (the files `npm pack` would ship, plus npm/), it runs
// napi-rs's own release steps, `napi artifacts` (binaries into npm/<target>/) and
// `napi pre-publish --skip-optional-publish` (version sync, release checks, optionalDependencies
// of the root), then `npm pack`s the root and each built platform package into DIR. Binaries
// are read from --binaries (default native/, where `npm run build` puts them). Targets not
// built here get a placeholder file in the copy, so that napi's steps see the whole target
// list; their packages are never packed. Prints a JSON summary on stdout.
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')

function option(name, fallback) {
  const i = process.argv.indexOf(name)
  if (i === -1) return fallback
  const value = process.argv[i + 1]
  if (!value) throw new Error(`${name} needs a value`)
  return resolve(value)
}

const out = option('--out')
if (!out) {
  console.error('usage: node scripts/pack.mjs --out DIR [--binaries DIR]')
  process.exit(2)
}
const binaries = option('--binaries', join(root, 'native'))
const napi = join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js')

/** Run a command with its output on stderr (stdout carries only our JSON summary). */
function run(cmd, args, cwd) {
  return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
}

/** The files `npm pack` ships from `dir`. */
function packList(dir) {
  const [report] = JSON.parse(run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], dir))
  return report.files.map((f) => f.path)
}

/** `npm pack` of `dir` into `out`; the tarball's path. */
function pack(dir) {
  const [report] = JSON.parse(run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', out], dir))
  return join(out, report.filename)
}

for (const need of ['dist/index.js', 'native/index.js', 'esm/index.mjs']) {
  if (!existsSync(join(root, need))) throw new Error(`${need} is missing: run npm run build first`)
}

const stage = mkdtempSync(join(tmpdir(), 'btrfs-layers-pack-'))
try {
  for (const file of packList(root)) cpSync(join(root, file), join(stage, file))
  cpSync(join(root, 'npm'), join(stage, 'npm'), { recursive: true, filter: (src) => !src.endsWith('.node') })

  // One artifact per target, named as napi names them (the `main` of each platform package).
  const built = []
  const placeholders = []
  for (const target of readdirSync(join(stage, 'npm')).sort()) {
    const manifest = JSON.parse(readFileSync(join(stage, 'npm', target, 'package.json'), 'utf8'))
    const artifact = join(stage, 'artifacts', target, manifest.main)
    mkdirSync(dirname(artifact), { recursive: true })
    const binary = join(binaries, manifest.main)
    if (existsSync(binary)) {
      cpSync(binary, artifact)
      built.push(target)
    } else {
      writeFileSync(artifact, 'placeholder: not built in this run, never packed\n')
      placeholders.push(target)
    }
  }
  if (built.length === 0) throw new Error(`no built binary in ${binaries}: run npm run build first`)

  run(process.execPath, [napi, 'artifacts', '--output-dir', 'artifacts', '--npm-dir', 'npm'], stage)
  run(process.execPath, [napi, 'pre-publish', '-t', 'npm', '--npm-dir', 'npm', '--skip-optional-publish', '--no-gh-release'], stage)

  mkdirSync(out, { recursive: true })
  const platforms = {}
  for (const target of built) platforms[target] = pack(join(stage, 'npm', target))
  const tarball = pack(stage)
  const manifest = JSON.parse(readFileSync(join(stage, 'package.json'), 'utf8'))
  console.log(
    JSON.stringify(
      { root: tarball, platforms, placeholders, version: manifest.version, optionalDependencies: manifest.optionalDependencies ?? {} },
      null,
      2,
    ),
  )
} finally {
  rmSync(stage, { recursive: true, force: true })
}
