#!/usr/bin/env node
// Checks the binaries `npm run build:targets` wrote, one per target of package.json's napi.targets:
//
//   node scripts/check-binaries.mjs [--target TRIPLE]... [--dir artifacts] [--verbose]
//
// For artifacts/<target>/btrfs-layers.<platform>.node it checks, with readelf (binutils):
// - the ELF machine is the target's (x86-64, AArch64), and the file is a 64-bit shared object;
// - gnu: every GLIBC_x.y version it needs is 2.17 or lower, so it loads on glibc 2.17;
// - musl: it needs no glibc (no libc.so.6, no GLIBC_ version), only musl's libc.so;
// - every undefined symbol is Node-API (napi_*, node_api_*, uv_*), the C library's (gnu: a GLIBC_
//   or libgcc_s GCC_ version; musl: a name musl's libc.so exports, from zig's list), or weak
//   (optional by definition: the loader binds it to null when nothing defines it);
// - stripped: no .symtab and no .debug_* sections.
// Prints a table (target, size, highest glibc version, verdict) and exits 1 on any failure.
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { zigPackageDir } from './build-targets.mjs'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const GLIBC_FLOOR = [2, 17]
// libgcc_s of gcc 4.8, the oldest one a glibc 2.17 system (CentOS 7) has.
const GCC_FLOOR = [4, 8, 0]
const NODE_API = /^(napi_|node_api_|uv_)/
const MACHINES = { x86_64: 'Advanced Micro Devices X86-64', aarch64: 'AArch64' }
// The libraries glibc is made of, plus gcc's unwinder, which Rust's panics need on glibc.
const GLIBC_LIBRARIES = new Set(['libc.so.6', 'libm.so.6', 'libdl.so.2', 'libpthread.so.0', 'librt.so.1',
  'ld-linux-x86-64.so.2', 'ld-linux-aarch64.so.1', 'libgcc_s.so.1'])
const MUSL_LIBRARIES = new Set(['libc.so'])

const { napi } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
let dir = join(root, 'artifacts')
let verbose = false
const only = []
for (let i = 2; i < process.argv.length; i++) {
  const arg = process.argv[i]
  if (arg === '--verbose') verbose = true
  else if (arg === '--dir' && process.argv[i + 1]) dir = resolve(process.argv[++i])
  else if ((arg === '--target' || arg === '-t') && napi.targets.includes(process.argv[i + 1])) only.push(process.argv[++i])
  else {
    console.error(`check-binaries: bad argument ${arg} (usage: [--target ${napi.targets.join('|')}]... [--dir DIR] [--verbose])`)
    process.exit(2)
  }
}
const targets = only.length ? only : napi.targets

function readelf(flags, file) {
  return execFileSync('readelf', ['-W', ...flags, file], { encoding: 'utf8', maxBuffer: 64 << 20 })
}

/** A list for a message: the first few, then how many more. */
function some(items, max = 12) {
  return items.length <= max ? items.join(', ') : `${items.slice(0, max).join(', ')} and ${items.length - max} more`
}

function versionParts(v) {
  return v.split('.').map(Number)
}

function compareVersions(a, b) {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0)
    if (d !== 0) return d
  }
  return 0
}

/** The ELF facts the checks read: header, sections, NEEDED, version needs, undefined symbols. */
function inspect(file) {
  const header = readelf(['-h'], file)
  const field = (name) => header.match(new RegExp(`^\\s*${name}:\\s*(.+)$`, 'm'))?.[1].trim()
  const sections = [...readelf(['-S'], file).matchAll(/^\s*\[\s*\d+\]\s+(\S+)/gm)].map((m) => m[1])
  const needed = [...readelf(['-d'], file).matchAll(/\(NEEDED\)\s+Shared library: \[(.+)\]/g)].map((m) => m[1])
  // Version needs, per library: `File: libc.so.6` then its `Name: GLIBC_2.14` lines.
  const versionNeeds = []
  let library = null
  for (const line of readelf(['-V'], file).split('\n')) {
    const f = line.match(/File: (\S+)/)
    if (f) library = f[1]
    const n = line.match(/Name: (\S+)/)
    if (n && library && !f) versionNeeds.push({ library, version: n[1] })
  }
  const undefinedSymbols = []
  for (const line of readelf(['--dyn-syms'], file).split('\n')) {
    // Num: Value Size Type Bind Vis Ndx Name[@VERSION (n)]
    const m = line.match(/^\s*\d+:\s+\S+\s+\S+\s+\S+\s+(\S+)\s+\S+\s+UND\s+([^@\s]+)(?:@(\S+))?/)
    if (m) undefinedSymbols.push({ bind: m[1], name: m[2], version: m[3] ?? null })
  }
  return { elfClass: field('Class'), type: field('Type'), machine: field('Machine'), sections, needed, versionNeeds, undefinedSymbols }
}

/** zig's lib/: the pinned one build:targets installs, else that of a `zig` on PATH. */
function zigLibDir() {
  const pinned = zigPackageDir()
  if (pinned) return join(pinned, 'lib')
  try {
    // `zig env` prints JSON up to 0.14 and ZON since 0.15; both have lib_dir as a string.
    const env = execFileSync('zig', ['env'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
    return env.match(/lib_dir"?\s*[:=]\s*"([^"]+)"/)?.[1] ?? null
  } catch {
    return null
  }
}

/**
 * The names musl's libc.so exports on `arch`, from zig's musl/libc.S (the stub that cargo-zigbuild
 * linked against): `.globl`/`.weak` lines, under the #if blocks that hold for that architecture.
 */
function muslExports(arch) {
  const listing = join(zigLibDir() ?? '/nonexistent', 'libc', 'musl', 'libc.S')
  if (!existsSync(listing)) return null
  const defined = new Set(['PTR64', `ARCH_${arch}`, arch === 'x86_64' ? 'FAMILY_x86' : `FAMILY_${arch}`])
  const holds = (condition) => {
    const expr = condition.replace(/defined\((\w+)\)/g, (_, name) => String(defined.has(name)))
    if (!/^[\s!&|()truefals]*$/.test(expr)) throw new Error(`${listing}: cannot evaluate #if ${condition}`)
    return Function(`return (${expr})`)()
  }
  const names = new Set()
  const stack = []
  for (const line of readFileSync(listing, 'utf8').split('\n')) {
    let m
    if ((m = line.match(/^#ifdef (\w+)/))) stack.push(defined.has(m[1]))
    else if ((m = line.match(/^#if (.+)/))) stack.push(holds(m[1]))
    else if (line.startsWith('#else')) stack.push(!stack.pop())
    else if (line.startsWith('#endif')) stack.pop()
    else if (stack.every(Boolean) && (m = line.match(/^(?:\.globl|\.weak|WEAK64|WEAKTIME64)\s+(\S+)/))) names.add(m[1])
  }
  return names
}

function check(target, file) {
  const [arch, , , abi] = target.split('-')
  const elf = inspect(file)
  const problems = []
  if (elf.machine !== MACHINES[arch]) problems.push(`machine is ${elf.machine}, not ${MACHINES[arch]}`)
  if (elf.elfClass !== 'ELF64' || !elf.type?.startsWith('DYN')) problems.push(`not a 64-bit shared object (${elf.elfClass}, ${elf.type})`)

  const glibcVersions = elf.versionNeeds.filter((v) => v.version.startsWith('GLIBC_')).map((v) => v.version.slice(6))
  glibcVersions.sort((a, b) => compareVersions(versionParts(a), versionParts(b)))
  const highestGlibc = glibcVersions.at(-1) ?? null

  if (abi === 'gnu') {
    for (const lib of elf.needed) if (!GLIBC_LIBRARIES.has(lib)) problems.push(`needs ${lib}, which is not part of glibc`)
    if (highestGlibc && compareVersions(versionParts(highestGlibc), GLIBC_FLOOR) > 0) {
      const over = elf.versionNeeds.filter((v) => v.version.startsWith('GLIBC_') && compareVersions(versionParts(v.version.slice(6)), GLIBC_FLOOR) > 0)
      const symbols = elf.undefinedSymbols.filter((s) => over.some((v) => v.version === s.version)).map((s) => `${s.name}@${s.version}`)
      problems.push(`needs GLIBC_${highestGlibc} > ${GLIBC_FLOOR.join('.')}: ${some(symbols.length ? symbols : over.map((v) => v.version))}`)
    }
    for (const { library, version } of elf.versionNeeds) {
      if (version.startsWith('GCC_') && compareVersions(versionParts(version.slice(4)), GCC_FLOOR) > 0) {
        problems.push(`needs ${version} from ${library}, newer than gcc ${GCC_FLOOR.join('.')}'s libgcc_s`)
      } else if (!/^(GLIBC|GCC)_/.test(version)) problems.push(`needs version ${version} from ${library}`)
    }
  } else {
    const glibc = elf.needed.filter((lib) => !MUSL_LIBRARIES.has(lib))
    if (glibc.length) problems.push(`needs ${glibc.join(', ')} (musl's C library is libc.so alone)`)
    if (elf.versionNeeds.length) problems.push(`needs symbol versions ${some(elf.versionNeeds.map((v) => `${v.version} (${v.library})`))}`)
  }

  const musl = abi === 'musl' ? muslExports(arch) : null
  if (abi === 'musl' && !musl) problems.push(`cannot check its C library symbols: zig's musl/libc.S is missing (run npm run build:targets)`)
  const foreign = []
  const weak = []
  for (const s of abi === 'musl' && !musl ? [] : elf.undefinedSymbols) {
    if (!s.name) continue // the null symbol
    if (NODE_API.test(s.name) && !s.version) continue
    if (abi === 'gnu' && s.version && /^(GLIBC|GCC)_/.test(s.version)) continue
    if (abi === 'musl' && !s.version && musl?.has(s.name)) continue
    if (s.bind === 'WEAK') weak.push(s.version ? `${s.name}@${s.version}` : s.name)
    else foreign.push(s.version ? `${s.name}@${s.version}` : s.name)
  }
  if (foreign.length) problems.push(`undefined symbols from neither Node-API nor the C library: ${some(foreign)}`)

  const unstripped = elf.sections.filter((s) => s === '.symtab' || s.startsWith('.debug'))
  if (unstripped.length) problems.push(`not stripped: has ${unstripped.join(', ')}`)

  if (verbose) {
    console.log(`${target}: NEEDED ${elf.needed.join(' ')}`)
    console.log(`  versions: ${[...new Set(elf.versionNeeds.map((v) => v.version))].join(' ') || 'none'}`)
    console.log(`  undefined: ${elf.undefinedSymbols.filter((s) => s.name).length}, weak and optional: ${weak.join(' ') || 'none'}`)
  }
  return { highestGlibc, problems }
}

function table(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)))
  for (const [n, row] of rows.entries()) {
    console.log(row.map((cell, i) => (i === 1 ? cell.padStart(widths[i]) : cell.padEnd(widths[i]))).join('  ').trimEnd())
    if (n === 0) console.log(widths.map((w) => '-'.repeat(w)).join('  '))
  }
}

function main() {
  try {
    execFileSync('readelf', ['--version'], { stdio: 'ignore' })
  } catch {
    console.error('check-binaries: readelf is missing (Debian: apt-get install binutils)')
    process.exit(1)
  }
  const rows = [['target', 'size', 'highest glibc', 'verdict']]
  const failures = []
  for (const target of targets) {
    const targetDir = join(dir, target)
    const name = existsSync(targetDir) ? readdirSync(targetDir).find((f) => f.endsWith('.node')) : undefined
    if (!name) {
      rows.push([target, '-', '-', 'FAIL'])
      failures.push(`${target}: no .node file in ${relative(root, targetDir) || targetDir} (run npm run build:targets)`)
      continue
    }
    const file = join(targetDir, name)
    const { highestGlibc, problems } = check(target, file)
    const size = `${(statSync(file).size / 1024 / 1024).toFixed(2)} MiB`
    const glibc = highestGlibc ? `GLIBC_${highestGlibc}` : target.endsWith('-musl') ? 'none (musl)' : 'none'
    rows.push([target, size, glibc, problems.length ? 'FAIL' : 'ok'])
    for (const p of problems) failures.push(`${target} (${relative(root, file)}): ${p}`)
  }
  table(rows)
  if (failures.length) {
    console.error(`\ncheck-binaries: ${failures.length} problem(s):`)
    for (const f of failures) console.error(`  - ${f}`)
    process.exit(1)
  }
  console.log(`\ncheck-binaries: ${targets.length === 1 ? 'the binary passes' : `all ${targets.length} binaries pass`} (glibc <= ${GLIBC_FLOOR.join('.')}, musl without glibc, Node-API and libc symbols only, stripped)`)
}

main()
