import type * as Native from '../native/index'

const PACKAGES: Record<string, string> = {
  'linux-x64-gnu': 'btrfs-layers-linux-x64-gnu',
  'linux-arm64-gnu': 'btrfs-layers-linux-arm64-gnu',
  'linux-x64-musl': 'btrfs-layers-linux-x64-musl',
  'linux-arm64-musl': 'btrfs-layers-linux-arm64-musl',
}

function libc(): 'gnu' | 'musl' {
  const report = process.report?.getReport?.() as { header?: { glibcVersionRuntime?: string } } | undefined
  return report?.header?.glibcVersionRuntime ? 'gnu' : 'musl'
}

function load(): typeof Native {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('../native/index.js')
  } catch (cause) {
    const key = `${process.platform}-${process.arch}${process.platform === 'linux' ? `-${libc()}` : ''}`
    const pkg = PACKAGES[key]
    const hint = pkg
      ? `Install the prebuilt binary for this machine: npm install ${pkg} ` +
        `(it is an optional dependency of btrfs-layers; installing with --omit=optional or ` +
        `--no-optional, or copying node_modules from another os/cpu/libc, leaves it out).`
      : `btrfs-layers has no prebuilt binary for ${key}: it runs on Linux (btrfs is a Linux ` +
        `filesystem) on x64 or arm64 with glibc or musl. Building from source needs a Rust ` +
        `toolchain: npm run build in a clone of the repository.`
    const err = new Error(`btrfs-layers: cannot load the native binding for ${key}. ${hint}`, { cause })
    throw err
  }
}

/** The napi-rs binding; loaded once, on first use. */
export const native: typeof Native = load()
