/**
 * Layer diffs round trip on a real btrfs: a parent with every kind of entry and a child that
 * modifies, deletes and replaces entries; `diff` (none, gzip, zstd) applied with `applyDiff`
 * onto a fresh snapshot of the parent must reproduce the child entry by entry (type, mode,
 * owner, size, content, link target, device, hardlink groups, xattrs incl. capabilities and
 * ACLs, mtime with nanoseconds), and the whole-layer diff applied onto an empty layer must
 * reproduce the whole child. Trees are read with lstat and getfattr; capabilities and ACLs
 * are also checked with getcap and getfacl.
 */
import test from 'ava'
import { createWriteStream } from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { BtrfsDriver } from '../ts/index'
import { oracleReadOnly, useBtrfs } from './helpers/btrfs'
import { HOST_ROOT, REMAP, collectDriversBeforeTeardown, rejectsCode, withDriver } from './helpers/driver-util'
import { DEEP_FILE, DEEP_LINK, LARGE_SIZE, LONG_NAME, UNICODE_NAME, inLayer, layerSnapshot, mutateChild, populateEverything, run } from './helpers/diff-fixtures'
import { buildTar, collect, dir as tdir, file as tfile, gnuList, symlink as tsymlink, zstdDecompress } from './helpers/diff-tar'
import { compareTrees, linkGroup, type Tree } from './helpers/diff-tree'

collectDriversBeforeTeardown(test)

interface Shared {
  d: BtrfsDriver
  home: string
  work: string
  child: Tree
  base: Tree
}
let shared: Promise<Shared> | undefined
test.after.always(async () => {
  const s = await shared?.catch(() => undefined)
  await s?.d.cleanup()
})

const { btrfsTest, fs } = useBtrfs(test, { size: 4 * 1024 * 1024 * 1024, tools: ['getfattr', 'setfattr', 'setcap', 'getcap', 'setfacl', 'getfacl', 'zstd', 'tar'] })

/** One store with layers `base` (everything) and `child` (the changes), made once per file. */
function setup(): Promise<Shared> {
  shared ??= (async () => {
    const work = path.join(fs().mnt, 'roundtrip')
    await fsp.mkdir(work)
    const home = path.join(work, 'home')
    const d = await BtrfsDriver.init(home)
    await d.create('base')
    await inLayer(d, 'base', (dir) => populateEverything(dir))
    await d.create('child', 'base')
    await inLayer(d, 'child', (dir) => mutateChild(dir))
    return { d, home, work, child: await layerSnapshot(d, 'child'), base: await layerSnapshot(d, 'base') }
  })()
  return shared
}

/** The changes a child diff cannot carry: a new name of an unchanged parent inode arrives as its own copy. */
const NEW_LINK = ['change/new-link', 'change/unchanged-for-link']

const MAGIC: Record<string, (b: Buffer) => boolean> = {
  none: (b) => b.subarray(257, 262).toString('latin1') === 'ustar',
  gzip: (b) => b[0] === 0x1f && b[1] === 0x8b,
  zstd: (b) => b.readUInt32LE(0) === 0xfd2fb528,
}

for (const compression of ['none', 'gzip', 'zstd'] as const) {
  btrfsTest(`round trip: diff (${compression}) applied onto the parent reproduces the child`, async (t, dir) => {
    const { d, child, base } = await setup()
    const id = `rt-${compression}`
    await d.create(id, 'base')
    const stream = await d.diff('child', undefined, { compression })
    let applied: number
    let bytes: Buffer
    // Each input kind once: a Readable piped straight through, a Buffer, a file path.
    if (compression === 'none') {
      const chunks: Buffer[] = []
      const tap = new Transform({
        transform(c: Buffer, _e, cb) {
          chunks.push(c)
          cb(null, c)
        },
      })
      stream.pipe(tap)
      applied = await d.applyDiff(id, 'base', tap)
      bytes = Buffer.concat(chunks)
    } else if (compression === 'gzip') {
      bytes = await collect(stream)
      applied = await d.applyDiff(id, 'base', bytes)
    } else {
      const file = path.join(dir, 'child.tar.zst')
      await pipeline(stream, createWriteStream(file))
      bytes = await fsp.readFile(file)
      applied = await d.applyDiff(id, 'base', file)
    }
    t.true(MAGIC[compression](bytes), `${compression} magic`)
    const got = await layerSnapshot(d, id)
    t.deepEqual(compareTrees(child, got, { ignoreLinkGroupOf: NEW_LINK }), [], 'applied tree equals the child')

    // The new link to an unchanged parent file carries the body: same content, its own inode here.
    const link = got.entries.get('change/new-link')
    t.is(link?.type, 'file')
    t.is(link?.hash, base.entries.get('change/unchanged-for-link')?.hash)
    t.deepEqual(linkGroup(got, 'change/new-link'), ['change/new-link'])
    // Hardlinks within the diff stay hardlinks.
    t.deepEqual(linkGroup(got, 'added/h1'), ['added/h1', 'added/h2'])
    t.deepEqual(linkGroup(got, 'hard/mod-a'), ['hard/mod-a', 'hard/mod-b'])
    t.deepEqual(linkGroup(got, 'hard/a'), [DEEP_LINK, 'hard/a', 'hard/b', 'hard/other/c'].sort())

    // Bytes applied: the bodies of the regular files in the stream (an inode's body once).
    const tarBytes = compression === 'none' ? bytes : compression === 'gzip' ? (await import('node:zlib')).gunzipSync(bytes) : await zstdDecompress(bytes)
    const tarFile = path.join(dir, 'child.tar')
    await fsp.writeFile(tarFile, tarBytes)
    const listing = await gnuList(tarFile)
    let bodies = 0
    for (const e of listing) if (e.kind === '-' && !path.basename(e.name).startsWith('.wh.')) bodies += child.entries.get(e.name.replace(/^\.\//, ''))?.size ?? 0
    t.is(applied, bodies, 'applyDiff returns the bytes of file content applied')

    // Independent oracles for what the tree compare sees as xattrs.
    await inLayer(d, id, async (p) => {
      t.regex(await run('getcap', path.join(p, 'change/cap-later')), /cap_sys_admin[=+]ep/)
      t.regex(await run('getcap', path.join(p, 'caps/ping')), /cap_net_raw[=+]ep/)
      t.regex(await run('getfacl', '-cn', path.join(p, 'acl/file')), /user:1234:rwx/)
      t.regex(await run('getfacl', '-cn', path.join(p, 'acl/dir')), /default:user:1234:rwx/)
    })
    await d.remove(id)
  })
}

btrfsTest('round trip: the whole-layer diff (parent null) applied onto an empty layer reproduces the whole layer', async (t) => {
  const { d, child } = await setup()
  for (const parent of [null, ''] as const) {
    const id = `whole-${parent === null ? 'null' : 'empty'}`
    await d.create(id)
    const applied = await d.applyDiff(id, null, await d.diff('child', parent, { compression: 'gzip' }))
    const got = await layerSnapshot(d, id)
    // Only the root's mtime is not part of a diff.
    t.deepEqual(compareTrees(child, got), [], `whole layer (parent ${JSON.stringify(parent)})`)
    t.true(applied >= LARGE_SIZE, `bytes applied ${applied}`)
    t.deepEqual(linkGroup(got, 'change/new-link'), ['change/new-link', 'change/unchanged-for-link'], 'a whole-layer diff keeps every hardlink')
    await d.remove(id)
  }
})

btrfsTest('round trip: a diff of a diff-applied layer is the same diff; diffs against an explicit parent', async (t, dir) => {
  const { d, child } = await setup()
  await d.create('again', 'base')
  await d.applyDiff('again', 'base', await d.diff('child'))
  // The explicit parent gives the same stream as the recorded one.
  const recorded = await collect(await d.diff('child'))
  const explicit = await collect(await d.diff('child', 'base'))
  t.true(recorded.equals(explicit), 'diff(child) === diff(child, base)')
  // Changes of the re-applied layer against base are those of the child, apart from the
  // new link's inode (its old name is no longer linked, which is not a change).
  t.deepEqual(await d.changes('again', 'base'), await d.changes('child'))
  // And the re-applied layer's own diff recreates the child once more.
  await d.create('again2', 'base')
  await d.applyDiff('again2', 'base', await d.diff('again', 'base', { compression: 'zstd' }))
  t.deepEqual(compareTrees(child, await layerSnapshot(d, 'again2'), { ignoreLinkGroupOf: NEW_LINK }), [])
  // Sanity of the fixture itself: the names the spec is about exist.
  for (const rel of [DEEP_FILE, `names/${LONG_NAME}`, `names/${UNICODE_NAME}`, 'special/big-dev', 'large.bin']) {
    t.truthy(child.entries.get(rel), rel)
  }
  t.true(DEEP_FILE.length > 255)
  void dir
  for (const id of ['again', 'again2']) await d.remove(id)
})

btrfsTest('round trip: pre-epoch and far-future mtimes, with and without nanoseconds', async (t) => {
  const { d } = await setup()
  await d.create('times-base')
  await d.create('times', 'times-base')
  const cases: [string, bigint][] = [
    ['before-epoch', -1_000_000_000_000n],
    ['before-epoch-ns', -1_500_000_000_250_000_000n],
    ['epoch', 0n],
    ['after-2038', 4_102_444_800_000_000_001n],
    ['ns-only', 999_999_999n],
  ]
  await inLayer(d, 'times', async (p) => {
    for (const [name] of cases) await fsp.writeFile(path.join(p, name), name)
    await fsp.mkdir(path.join(p, 'dir-before-epoch'))
    const { setMtimeNs } = await import('./helpers/diff-tree')
    for (const [name, ns] of cases) await setMtimeNs(path.join(p, name), ns)
    await setMtimeNs(path.join(p, 'dir-before-epoch'), -86_400_000_000_000n)
  })
  const want = await layerSnapshot(d, 'times')
  for (const compression of ['none', 'gzip'] as const) {
    const id = `times-${compression}`
    await d.create(id, 'times-base')
    await d.applyDiff(id, 'times-base', await d.diff('times', undefined, { compression }))
    const got = await layerSnapshot(d, id)
    t.deepEqual(compareTrees(want, got), [], `mtimes survive (${compression})`)
    await d.remove(id)
  }
})

btrfsTest('id maps: applyDiff maps container ids to host ids, diff maps them back; an id outside the maps is ERR_ID_MAPPING', async (t, dir) => {
  await withDriver(path.join(dir, 'home'), REMAP, async (d) => {
    await d.create('mapped')
    const tar = buildTar([
      tdir('etc/', { uid: 0, gid: 0 }),
      tfile('etc/app.conf', 'conf\n', { uid: 1234, gid: 5678, mode: 0o4750 }),
      tsymlink('etc/link', 'app.conf', { uid: 33, gid: 33 }),
    ])
    await d.applyDiff('mapped', null, tar)
    const got = await layerSnapshot(d, 'mapped')
    t.like(got.entries.get('etc'), { uid: HOST_ROOT, gid: HOST_ROOT })
    t.like(got.entries.get('etc/app.conf'), { uid: HOST_ROOT + 1234, gid: HOST_ROOT + 5678, mode: '4750' })
    t.like(got.entries.get('etc/link'), { uid: HOST_ROOT + 33, gid: HOST_ROOT + 33 })
    // Back to container ids in the diff, as GNU tar reads them.
    const out = path.join(dir, 'mapped.tar')
    await fsp.writeFile(out, await collect(await d.diff('mapped', null)))
    const listing = await run('tar', '--numeric-owner', '-tvf', out)
    t.regex(listing, /1234\/5678 .*etc\/app\.conf/)
    t.regex(listing, /33\/33 .*etc\/link/)
    t.regex(listing, /0\/0 .*etc\//)
    // Outside the maps: refused, nothing changes.
    const before = await layerSnapshot(d, 'mapped')
    for (const [what, e] of [
      ['uid', tfile('etc/x', 'x', { uid: 70000 })],
      ['gid', tfile('etc/x', 'x', { gid: 65536 })],
    ] as const) {
      await rejectsCode(t, d.applyDiff('mapped', null, buildTar([tfile('first', 'made before'), e])), 'ERR_ID_MAPPING', `${what} outside the map`)
      t.deepEqual(compareTrees(before, await layerSnapshot(d, 'mapped'), { rootMtime: true }), [], `${what}: the layer is unchanged`)
    }
    // A host owner outside the maps cannot be written to a diff: the stream errors.
    await d.create('unmappable', 'mapped')
    await inLayer(d, 'unmappable', (p) => fsp.writeFile(path.join(p, 'host-owned'), 'x').then(() => fsp.chown(path.join(p, 'host-owned'), 5, 5)))
    const stream = await d.diff('unmappable')
    const err = await collect(stream).then(
      () => undefined,
      (e: unknown) => e,
    )
    t.is((err as { code?: string } | undefined)?.code, 'ERR_ID_MAPPING', `diff stream error: ${String(err)}`)
  })
})

btrfsTest('sockets are skipped by diff (and so never applied)', async (t, dir) => {
  const { d } = await setup()
  await d.create('sock-base')
  await d.create('sock', 'sock-base')
  await inLayer(d, 'sock', async (p) => {
    await fsp.writeFile(path.join(p, 'plain'), 'plain\n')
    // A process that exits while listening leaves its socket file behind (closing would unlink it).
    await run(process.execPath, '-e', "require('net').createServer().listen(process.argv[1], () => process.exit(0))", path.join(p, 'sock'))
  })
  const tarFile = path.join(dir, 'sock.tar')
  await fsp.writeFile(tarFile, await collect(await d.diff('sock')))
  const names = (await gnuList(tarFile)).map((e) => e.name)
  t.deepEqual(names, ['plain'], 'only the regular file is in the stream')
  await d.create('sock-applied', 'sock-base')
  await d.applyDiff('sock-applied', 'sock-base', tarFile)
  const got = await layerSnapshot(d, 'sock-applied')
  t.deepEqual([...got.entries.keys()].sort(), ['.', 'plain'])
})

btrfsTest('read-only layers: diff reads them in place; applyDiff swaps in a tree that stays read-only', async (t, dir) => {
  await withDriver(path.join(dir, 'home'), undefined, async (d) => {
    await d.create('ro-base')
    await d.applyDiff('ro-base', null, buildTar([tdir('etc/'), tfile('etc/a', 'a\n')]))
    await d.create('ro', 'ro-base', { readOnly: true })
    const applied = await d.applyDiff('ro', 'ro-base', buildTar([tdir('etc/'), tfile('etc/b', 'bb\n'), tfile('etc/.wh.a')]))
    t.is(applied, 3)
    const p = await d.get('ro')
    try {
      t.true(await oracleReadOnly(p), 'btrfs property get: still read-only')
    } finally {
      await d.put('ro')
    }
    t.deepEqual(await d.changes('ro'), [
      { path: '/etc', kind: 'modify' },
      { path: '/etc/a', kind: 'delete' },
      { path: '/etc/b', kind: 'add' },
    ])
    const listing = (await collect(await d.diff('ro'))).toString('latin1')
    t.true(listing.includes('etc/.wh.a') && listing.includes('etc/b'))
    t.deepEqual((await fsp.readdir(path.join(d.home, 'subvolumes'))).filter((n) => n.startsWith('.')), [], 'no temporary subvolume left')
  })
})
