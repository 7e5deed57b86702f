/**
 * The napi-rs binding, loaded once when this module is first imported. When no binary fits
 * this machine, the error says which package to install for this os/cpu/libc and why (the
 * way sharp does), instead of napi-rs's generic "Cannot find native binding". On any other
 * system than Linux it says so before looking for a binary: npm installs the package anywhere
 * (to package an Electron app for Linux on macOS, say), but it runs only on Linux.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import type * as Native from '../native/index'

/** The prebuilt binary of each supported `platform-arch-libc`, as napi-rs names the packages. */
const PACKAGES: Readonly<Record<string, string>> = {
  'linux-x64-gnu': 'btrfs-layers-linux-x64-gnu',
  'linux-arm64-gnu': 'btrfs-layers-linux-arm64-gnu',
  'linux-x64-musl': 'btrfs-layers-linux-x64-musl',
  'linux-arm64-musl': 'btrfs-layers-linux-arm64-musl',
}

/** The C library of this process: glibc reports its version, musl does not. */
function libc(): 'gnu' | 'musl' {
  try {
    if (fs.readFileSync('/usr/bin/ldd', 'utf8').includes('musl')) return 'musl'
  } catch {
    // no ldd (distroless images): ask the process report below
  }
  const report = process.report?.getReport?.() as { header?: { glibcVersionRuntime?: string } } | undefined
  return report?.header?.glibcVersionRuntime ? 'gnu' : 'musl'
}

/** What our own package.json says: the version and the binary packages a release lists. */
interface OwnManifest {
  version?: string
  optionalDependencies?: Record<string, string>
}

/** The package.json of this btrfs-layers (the one next to dist/). */
function ownManifest(): OwnManifest {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('../package.json') as OwnManifest
  } catch {
    return {}
  }
}

/** Whether this btrfs-layers is a clone of the repository (it has the Rust sources). */
function isClone(): boolean {
  return fs.existsSync(path.join(__dirname, '..', 'crates', 'node', 'Cargo.toml'))
}

/** The error for every system but Linux, before any binary is looked for. */
export function notLinux(platform: string): Error & { code: string } {
  const err = new Error(
    `btrfs-layers needs Linux: btrfs is a Linux filesystem, and this is ${platform}. ` +
      `Installing it here is fine (e.g. to package an Electron app for Linux), but it loads only on Linux.`,
  ) as Error & { code: string }
  err.code = 'ERR_UNSUPPORTED_PLATFORM'
  return err
}

/** The installed version of `pkg`, or undefined when it is not installed where we can see it. */
function installedVersion(pkg: string): string | undefined {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return (require(`${pkg}/package.json`) as { version?: string }).version ?? '?'
  } catch {
    return undefined
  }
}

/** Every message in an error's cause chain (napi-rs chains one cause per candidate it tried). */
function causes(err: unknown): string[] {
  const out: string[] = []
  for (let e = err, depth = 0; e && depth < 10; e = (e as { cause?: unknown }).cause, depth++) {
    const message = (e instanceof Error ? e.message : String(e)).split('\n')[0]
    // Leave out napi-rs's generic summary and its WebAssembly fallbacks (we ship none).
    if (message && !/^Cannot find native binding|wasi/i.test(message)) out.push(message)
  }
  return out
}

/** The explanation for a failed load: what is missing or broken, and what to run. */
export function describeLoadFailure(
  cause: unknown,
  where = { platform: process.platform, arch: process.arch, libc: process.platform === 'linux' ? libc() : undefined },
  manifest: OwnManifest = ownManifest(),
  clone: boolean = isClone(),
): string {
  const key = `${where.platform}-${where.arch}${where.libc ? `-${where.libc}` : ''}`
  const pkg = PACKAGES[key]
  const lines = [`btrfs-layers: cannot load the native binding for ${key}.`]
  if (!pkg) {
    lines.push(
      `There is no prebuilt binary for ${key}: btrfs-layers runs on Linux (btrfs is a Linux ` +
        `filesystem) on x64 or arm64, with glibc or musl. Building from source needs a Rust ` +
        `toolchain: clone the repository and run npm run build.`,
    )
  } else {
    const want = manifest.version
    const have = installedVersion(pkg)
    const libcFlag = where.libc === 'musl' ? 'musl' : 'glibc'
    const cpuFlag = where.arch
    if (have === undefined && clone) {
      const binary = `native/btrfs-layers.${key}.node`
      lines.push(
        fs.existsSync(path.join(__dirname, '..', binary))
          ? `This is a clone of the repository; its binary (${binary}) is built but did not load. Rebuild it: npm run build`
          : `This is a clone of the repository, and its binary (${binary}) is not built. Build it (needs a Rust toolchain): npm run build`,
      )
    } else if (have === undefined && !manifest.optionalDependencies?.[pkg]) {
      // A release lists every binary package as an optional dependency; a plain `npm pack`
      // of a clone lists none, and ships no binary.
      lines.push(
        `This btrfs-layers was packed without its binaries (a plain npm pack of a clone: its ` +
          `package.json lists no ${pkg}), and that package is not installed. Until btrfs-layers ` +
          `is published on npm, pack both from a built clone and install the two tarballs together:`,
        `    npm run build && npm run pack:local      # in the clone: prints the two tarballs' paths`,
        `    npm install <clone>/artifacts/packed/btrfs-layers-${want ?? '<version>'}.tgz <clone>/artifacts/packed/${pkg}-${want ?? '<version>'}.tgz`,
      )
    } else if (have === undefined) {
      lines.push(
        `The package with the binary for this machine, ${pkg}, is not installed. Install it:`,
        `    npm install ${pkg}${want ? `@${want}` : ''}`,
        `It is an optional dependency of btrfs-layers, so npm leaves it out when installing with ` +
          `--omit=optional or --no-optional, when the lockfile was written on another os/cpu/libc ` +
          `(npm bug 4828: delete package-lock.json and node_modules, then npm install), or when ` +
          `node_modules was copied from another machine. To install for another target (e.g. when ` +
          `packaging an Electron app elsewhere): npm install --os=linux --cpu=${cpuFlag} --libc=${libcFlag} btrfs-layers`,
      )
    } else if (want && have !== want) {
      lines.push(
        `${pkg}@${have} is installed, but this btrfs-layers is ${want}; the two must match:`,
        `    npm install ${pkg}@${want}`,
      )
    } else {
      lines.push(`${pkg}${have ? `@${have}` : ''} is installed, but its binary failed to load.`)
    }
  }
  const reasons = causes(cause)
  if (reasons.some((m) => /app\.asar[/\\]/.test(m))) {
    lines.push(
      `The binary is inside an Electron asar archive, which cannot load native code: unpack it ` +
        `(electron-builder: "asarUnpack": ["**/*.node"]; electron-forge: packagerConfig.asar.unpack "**/*.node").`,
    )
  }
  if (reasons.some((m) => /GLIBC_[0-9.]+' not found/.test(m))) {
    lines.push('The C library of this system is older than the binary needs; use a newer distribution or build from source.')
  }
  if (reasons.length > 0) lines.push(`Loader errors:\n  - ${reasons.join('\n  - ')}`)
  return lines.join('\n')
}

function load(): typeof Native {
  if (process.platform !== 'linux') throw notLinux(process.platform)
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('../native/index.js')
  } catch (cause) {
    const err = new Error(describeLoadFailure(cause), { cause }) as Error & { code: string }
    err.code = 'ERR_NATIVE_BINDING'
    throw err
  }
}

/** The napi-rs binding (the generated `native/index.js`, which picks the binary for this machine). */
export const native: typeof Native = load()

