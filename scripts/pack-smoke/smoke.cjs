// `require('btrfs-layers')` in a project that installed the packed tarballs.
const { smoke } = require('./steps.cjs')

const lib = require('btrfs-layers')
smoke(lib, process.argv[2]).then(
  (result) => console.log(JSON.stringify({ via: 'require', exports: Object.keys(lib).sort(), ...result })),
  (err) => {
    console.error(err)
    process.exit(1)
  },
)
