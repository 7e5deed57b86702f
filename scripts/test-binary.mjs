#!/usr/bin/env node
// Runs before the ava suite (package.json "pretest:ts"). With BTRFS_LAYERS_TEST_BINARY set to a
// binary (e.g. artifacts/x86_64-unknown-linux-gnu/btrfs-layers.linux-x64-gnu.node, built with the
// glibc 2.17 sysroot by `npm run build:targets`), it puts that file into native/ in place of the
// one `npm run build` compiled for this host, so the suite, the packed-install test included,
// loads the binary that ships. Without the variable it does nothing.
import { createHash } from 'node:crypto'
import { copyFileSync, existsSync, readFileSync } from 'node:fs'
import { basename, dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const wanted = process.env.BTRFS_LAYERS_TEST_BINARY
if (wanted) {
  const source = resolve(root, wanted)
  const dest = join(root, 'native', basename(source))
  if (!existsSync(source)) {
    console.error(`test-binary: BTRFS_LAYERS_TEST_BINARY=${wanted} does not exist (npm run build:targets builds it)`)
    process.exit(1)
  }
  if (!existsSync(dest)) {
    console.error(`test-binary: ${relative(root, dest)} does not exist: ${basename(source)} is not this host's binary, or npm run build has not run`)
    process.exit(1)
  }
  const sha256 = (file) => createHash('sha256').update(readFileSync(file)).digest('hex')
  copyFileSync(source, dest)
  const digest = sha256(dest)
  if (digest !== sha256(source)) throw new Error(`${dest} differs from ${source} after the copy`)
  console.log(`test-binary: the tests load ${relative(root, source)} (sha256 ${digest.slice(0, 16)}…) as ${relative(root, dest)}`)
}
