// The smoke test of an installed btrfs-layers: the low-level calls and the driver, against the
// btrfs directory given, with the library handed in (by require or by import). Checks effects
// through node:fs only, so it needs nothing but the package. Throws on the first failure.
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')

/** The .node file this process loaded: it must come from the platform package. */
function loadedBinary() {
  return Object.keys(require.cache).find((f) => f.endsWith('.node'))
}

async function smoke(lib, dir) {
  const done = []
  const base = path.join(dir, 'base')
  const snap = path.join(dir, 'snap')

  await lib.createSubvolume(base)
  fs.writeFileSync(path.join(base, 'hello.txt'), 'hello\n')
  assert.equal(await lib.isSubvolume(base), true)
  await lib.snapshot(base, snap, { readOnly: true })
  assert.equal(await lib.isSubvolume(snap), true)
  assert.equal(fs.readFileSync(path.join(snap, 'hello.txt'), 'utf8'), 'hello\n')
  const [b, s] = [await lib.subvolumeInfo(base), await lib.subvolumeInfo(snap)]
  assert.equal(s.readOnly, true)
  assert.equal(s.parentUuid, b.uuid)
  await lib.deleteSubvolume(snap)
  await lib.deleteSubvolume(base)
  assert.equal(fs.existsSync(snap) || fs.existsSync(base), false)
  done.push('createSubvolume', 'snapshot', 'subvolumeInfo', 'deleteSubvolume')

  const err = await lib.createSubvolume(path.join(dir, 'missing', 'x')).then(
    () => assert.fail('createSubvolume below a missing directory resolved'),
    (e) => e,
  )
  assert.ok(err instanceof lib.BtrfsError, `not a BtrfsError: ${err}`)
  assert.equal(err.code, 'ENOENT')
  done.push('BtrfsError')

  const driver = await lib.BtrfsDriver.init(path.join(dir, 'store'))
  assert.equal(driver.name, 'btrfs')
  await driver.create('base')
  const layer = await driver.get('base')
  fs.writeFileSync(path.join(layer, 'etc.conf'), 'x=1\n')
  await driver.put('base')
  await driver.create('child', 'base')
  const child = await driver.get('child')
  assert.equal(fs.readFileSync(path.join(child, 'etc.conf'), 'utf8'), 'x=1\n')
  await driver.put('child')
  assert.equal(await driver.exists('child'), true)
  await driver.remove('child')
  await driver.remove('base')
  assert.equal(await driver.exists('base'), false)
  await driver.cleanup()
  done.push('BtrfsDriver.init', 'create', 'get', 'put', 'remove', 'cleanup')

  return { done, binary: loadedBinary() }
}

module.exports = { smoke }
