// ESM entry of btrfs-layers: the CommonJS build re-exported, so `import` and `require` share
// one module instance (one native binding, one BtrfsError class for instanceof checks).
import cjs from '../dist/index.js'

export * from '../dist/index.js'
export default cjs
