// `import('btrfs-layers')` in a project that installed the packed tarballs: the ESM entry
// re-exports the CommonJS build, so both share one module instance.
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import steps from './steps.cjs'

const lib = await import('btrfs-layers')
const cjs = createRequire(import.meta.url)('btrfs-layers')
const named = Object.keys(lib).filter((k) => k !== 'default' && k !== '__esModule').sort()
assert.deepEqual(named, Object.keys(cjs).sort(), 'the ESM entry names every CommonJS export')
assert.equal(lib.default, cjs, 'the default export is the CommonJS module')
assert.equal(lib.BtrfsError, cjs.BtrfsError, 'one BtrfsError class for import and require')

const result = await steps.smoke(lib, process.argv[2])
console.log(JSON.stringify({ via: 'import', exports: named, ...result }))
