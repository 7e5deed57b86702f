/**
 * Validation of id maps at every entry point that takes them (remapLayer from/to,
 * BtrfsDriver.init, driver.remap): overlapping container or host ranges, ranges running past
 * 2^32-1, empty ranges, non-integer or negative values are EINVAL, wrong JS types (a string,
 * a missing key, not an array) Node's TypeError ERR_INVALID_ARG_TYPE, before anything changes.
 * Valid edge cases are accepted; an id outside valid maps is ERR_ID_MAPPING.
 */
import test from 'ava'
import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { BtrfsDriver, remapLayer, type Mapping } from '../ts/index'
import { exists, observe, useBtrfs } from './helpers/btrfs'
import { collectDriversBeforeTeardown, rejectsCode, withDriver } from './helpers/driver-util'
import { S1, ownerOf, shifted } from './helpers/idmap-util'

collectDriversBeforeTeardown(test)
const { btrfsTest, fs } = useBtrfs(test)

const MAX = 0xffffffff
const r = (containerId: unknown, hostId: unknown, size: unknown) => ({ containerId, hostId, size })

/** Maps that are not valid, with why. */
const BAD: [string, unknown][] = [
  ['overlapping container ranges', [r(0, 100000, 10), r(5, 200000, 10)]],
  ['overlapping container ranges given in reverse', [r(5, 200000, 10), r(0, 100000, 10)]],
  ['same container start', [r(0, 100000, 1), r(0, 200000, 1)]],
  ['overlapping host ranges', [r(0, 100000, 10), r(100, 100009, 10)]],
  ['host range inside another', [r(0, 100000, 100), r(1000, 100050, 1)]],
  ['host range past 2^32-1', [r(0, MAX, 2)]],
  ['container range past 2^32-1', [r(MAX, 0, 2)]],
  ['size past 2^32-1 from container 2', [r(2, 0, MAX)]],
  ['size 0', [r(0, 100000, 0)]],
  ['size 0 after a good range', [r(0, 100000, 10), r(10, 100010, 0)]],
  ['negative container id', [r(-1, 100000, 10)]],
  ['negative host id', [r(0, -100000, 10)]],
  ['negative size', [r(0, 100000, -10)]],
  ['fractional id', [r(0.5, 100000, 10)]],
  ['fractional size', [r(0, 100000, 10.25)]],
  ['NaN', [r(0, NaN, 10)]],
  ['Infinity', [r(0, 100000, Infinity)]],
  ['2^32', [r(0, 2 ** 32, 1)]],
  ['a numeric string', [r('0', 100000, 10)]],
  ['a bigint', [r(0n, 100000, 10)]],
  ['a missing key', [{ containerId: 0, hostId: 100000 }]],
  ['null entry', [null]],
  ['not an array', { containerId: 0, hostId: 100000, size: 10 }],
  ['a string', '0:100000:65536'],
]

/** Values of the wrong JS type are Node's TypeError; bad numbers are EINVAL. */
const WRONG_TYPE = new Set(['a numeric string', 'a bigint', 'a missing key', 'null entry', 'not an array', 'a string'])
const codeFor = (why: string) => (WRONG_TYPE.has(why) ? 'ERR_INVALID_ARG_TYPE' : 'EINVAL')

for (const [why, maps] of BAD) {
  btrfsTest(`remapLayer: ${why} -> ${codeFor(why)}, nothing changed`, async (t, dir) => {
    await fsp.writeFile(path.join(dir, 'f'), 'x')
    const good = shifted(S1)
    const variants: [string, Mapping, Mapping][] = [
      ['to.uidMaps', {}, { uidMaps: maps as never, gidMaps: good.gidMaps }],
      ['to.gidMaps', {}, { uidMaps: good.uidMaps, gidMaps: maps as never }],
      ['from.uidMaps', { uidMaps: maps as never }, good],
      ['from.gidMaps', { gidMaps: maps as never }, good],
    ]
    for (const [where, from, to] of variants) {
      const before = await observe(fs().mnt, [dir])
      const e = await rejectsCode(t, remapLayer(dir, { from, to }), codeFor(why), `${why} in ${where}`)
      // Where the native side judged the maps, errno is EINVAL's (negative); the facade's own checks carry none.
      if (e?.errno !== undefined) t.is(e.errno, -os.constants.errno.EINVAL)
      t.deepEqual(await observe(fs().mnt, [dir]), before, `${why} in ${where}: nothing changed`)
    }
    t.deepEqual(await ownerOf(path.join(dir, 'f')), [0, 0])
  })
}

btrfsTest('BtrfsDriver.init: bad maps -> EINVAL (or a TypeError), the store is not created', async (t, dir) => {
  for (const [i, [why, maps]] of BAD.entries()) {
    const home = path.join(dir, `home${i}`)
    for (const key of ['uidMaps', 'gidMaps']) {
      const good = shifted(S1)
      const e = await rejectsCode(t, BtrfsDriver.init(home, { ...good, [key]: maps as never }), codeFor(why), `${why} in ${key}`)
      if (e) t.regex(e.message, /EINVAL/)
      t.false(await exists(home), `${why}: home not created`)
    }
  }
})

btrfsTest('BtrfsDriver.init: maps that leave container root (0) unmapped -> EINVAL', async (t, dir) => {
  const home = path.join(dir, 'home')
  await rejectsCode(t, BtrfsDriver.init(home, { uidMaps: [{ containerId: 1, hostId: 100001, size: 10 }], gidMaps: shifted(S1).gidMaps }), 'EINVAL', 'uid 0 unmapped')
  await rejectsCode(t, BtrfsDriver.init(home, { uidMaps: shifted(S1).uidMaps, gidMaps: [{ containerId: 1, hostId: 100001, size: 10 }] }), 'EINVAL', 'gid 0 unmapped')
  t.false(await exists(home))
})

btrfsTest('driver.remap: bad maps -> EINVAL (or a TypeError), no layer created', async (t, dir) => {
  await withDriver(path.join(dir, 'home'), undefined, async (d) => {
    await d.create('src')
    for (const [why, maps] of BAD) {
      await rejectsCode(t, d.remap('src', 'dst', { uidMaps: maps as never }), codeFor(why), `uidMaps: ${why}`)
      await rejectsCode(t, d.remap('src', 'dst', { gidMaps: maps as never }), codeFor(why), `gidMaps: ${why}`)
    }
    t.deepEqual(await d.layers(), ['src'])
  })
})

btrfsTest('valid edge cases are accepted: adjacent ranges, the last id, ranges given unsorted', async (t, dir) => {
  await fsp.writeFile(path.join(dir, 'f'), 'x')
  await fsp.lchown(path.join(dir, 'f'), 10, 10)
  // Container 0..9 -> 1000.., container 10..19 -> 1010.. (adjacent on both sides), given reversed.
  const adjacent = [
    { containerId: 10, hostId: 1010, size: 10 },
    { containerId: 0, hostId: 1000, size: 10 },
  ]
  await remapLayer(dir, { from: {}, to: { uidMaps: adjacent, gidMaps: adjacent } })
  t.deepEqual(await ownerOf(path.join(dir, 'f')), [1010, 1010])
  t.deepEqual(await ownerOf(dir), [1000, 1000])
  // The largest id (2^32-2: 2^32-1 is chown's "no change") and a range ending exactly there are valid maps.
  const top = [
    { containerId: 0, hostId: 1000, size: 20 },
    { containerId: MAX - 1, hostId: 5, size: 1 },
    { containerId: MAX - 101, hostId: MAX - 101, size: 100 },
  ]
  const res = await remapLayer(dir, { from: { uidMaps: adjacent, gidMaps: adjacent }, to: { uidMaps: top, gidMaps: top } })
  t.deepEqual(res, { visited: 2, changed: 0 }, 'same host ids: nothing to change')
})

btrfsTest('a remap to host id 2^32-1 (the "no change" id of chown) never reports a change it did not make', async (t, dir) => {
  // A valid map by the range rules; uid 4294967295 is what chown(2) reads as "leave as is".
  await fsp.writeFile(path.join(dir, 'f'), 'x')
  const to = { uidMaps: [{ containerId: 0, hostId: MAX, size: 1 }], gidMaps: [{ containerId: 0, hostId: MAX, size: 1 }] }
  const outcome = await remapLayer(dir, { from: {}, to }).then(
    (v) => ({ ok: true as const, v }),
    (e: { code?: string; message: string }) => ({ ok: false as const, e }),
  )
  if (!outcome.ok) {
    t.log(`rejected: ${outcome.e.message}`)
    t.true(['EINVAL', 'ERR_ID_MAPPING'].includes(outcome.e.code ?? ''), outcome.e.message)
    return
  }
  const res = outcome.v
  const [u, g] = await ownerOf(path.join(dir, 'f'))
  t.log(`resolved ${JSON.stringify(res)}; owner on disk ${u}:${g}`)
  t.true(res.changed === 0 || (u === MAX && g === MAX), `reported ${res.changed} changed inodes but the owner is ${u}:${g}`)
})

btrfsTest('an id outside valid maps is ERR_ID_MAPPING, on either side of the remap', async (t, dir) => {
  await fsp.writeFile(path.join(dir, 'f'), 'x')
  // Host side: the tree's owner 0 is not in `from`.
  const e1 = await rejectsCode(t, remapLayer(dir, { from: shifted(S1), to: {} }), 'ERR_ID_MAPPING', 'host id outside from')
  t.true((e1?.errors ?? []).some((e) => e.path === path.join(dir, 'f')), JSON.stringify(e1?.errors?.map((e) => e.path)))
  t.regex(e1?.message ?? '', /\b0\b/, 'the message names the id')
  // Container side: container 0 is not in `to`.
  const to = { uidMaps: [{ containerId: 1, hostId: S1, size: 10 }], gidMaps: [{ containerId: 1, hostId: S1, size: 10 }] }
  const e2 = await rejectsCode(t, remapLayer(dir, { from: {}, to }), 'ERR_ID_MAPPING', 'container id outside to')
  t.deepEqual((e2?.errors ?? []).map((e) => e.path).sort(), [dir, path.join(dir, 'f')])
  t.deepEqual(await ownerOf(path.join(dir, 'f')), [0, 0])
})

btrfsTest('remapLayer: bad options and paths', async (t, dir) => {
  await rejectsCode(t, remapLayer(dir, { from: {}, to: {}, crossSubvolumes: 'yes' as never }), 'ERR_INVALID_ARG_TYPE', 'crossSubvolumes')
  await rejectsCode(t, remapLayer(dir, { from: {}, to: {}, extra: 1 } as never), 'EINVAL', 'unknown option')
  await rejectsCode(t, remapLayer(dir, { from: { uidMap: [] } as never, to: {} }), 'EINVAL', 'unknown mapping key')
  await fsp.writeFile(path.join(dir, 'kept'), 'x')
  const extraKey = [{ containerId: 0, hostId: S1, size: 65536, extra: 1 }] as never
  await rejectsCode(t, remapLayer(dir, { from: {}, to: { uidMaps: extraKey } }), 'EINVAL', 'unknown id-map entry key')
  t.deepEqual(await ownerOf(path.join(dir, 'kept')), [0, 0], 'nothing changed')
  await rejectsCode(t, remapLayer(dir, { from: {}, to: {}, signal: {} as never }), 'ERR_INVALID_ARG_TYPE', 'signal')
  await rejectsCode(t, remapLayer(dir, { from: {}, to: {}, onProgress: 5 as never }), 'ERR_INVALID_ARG_TYPE', 'onProgress')
  await rejectsCode(t, remapLayer(dir, null as never), 'ERR_INVALID_ARG_TYPE', 'options null')
  await rejectsCode(t, remapLayer(path.join(dir, 'missing'), { from: {}, to: shifted(S1) }), 'ENOENT', 'missing path')
  await fsp.writeFile(path.join(dir, 'file'), 'x')
  await rejectsCode(t, remapLayer(path.join(dir, 'file'), { from: {}, to: shifted(S1) }), 'ENOTDIR', 'a file')
  t.deepEqual(await ownerOf(path.join(dir, 'file')), [0, 0])
})
