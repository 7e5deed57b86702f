/**
 * applyDiff against hostile and malformed layers, on a real btrfs. Every archive is written
 * byte by byte (helpers/diff-tar.ts), applied to a layer whose parent has content, and checked
 * against a sentinel directory OUTSIDE the filesystem (under os.tmpdir()) that must keep every
 * byte, mode, mtime and xattr, and that must not gain an entry. A call that fails must leave
 * the layer exactly as it was (same tree, no temporary subvolume left behind); a malformed
 * stream must fail with ERR_BAD_LAYER. Archives that are hostile but well formed may either
 * be refused or be applied confined to the layer; when applied, what they made is checked.
 */
import test, { type ExecutionContext } from 'ava'
import { randomBytes } from 'node:crypto'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import { gzipSync } from 'node:zlib'
import { BtrfsDriver, BtrfsError } from '../ts/index'
import { exists, makeSentinel, useBtrfs } from './helpers/btrfs'
import { collectDriversBeforeTeardown } from './helpers/driver-util'
import { inLayer, layerSnapshot, stampTimes } from './helpers/diff-fixtures'
import {
  BLOCK,
  buildTar,
  dir,
  entryBytes,
  file,
  gzipBomb,
  hardlink,
  symlink,
  zstdBomb,
} from './helpers/diff-tar'
import { compareTrees, snapshotTree, type Tree } from './helpers/diff-tree'

collectDriversBeforeTeardown(test)

interface Shared {
  d: BtrfsDriver
  home: string
}
let shared: Promise<Shared> | undefined
test.after.always(async () => {
  const s = await shared?.catch(() => undefined)
  await s?.d.cleanup()
})

// Big enough that a bomb that got through would fail on space, not on the test's patience.
const { btrfsTest, fs } = useBtrfs(test, { size: 4 * 1024 * 1024 * 1024, tools: ['getfattr'] })

function setup(): Promise<Shared> {
  shared ??= (async () => {
    const work = path.join(fs().mnt, 'hostile')
    await fsp.mkdir(work)
    const home = path.join(work, 'home')
    const d = await BtrfsDriver.init(home)
    await d.create('base')
    await inLayer(d, 'base', async (p) => {
      await fsp.mkdir(path.join(p, 'etc'))
      await fsp.writeFile(path.join(p, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\n')
      await fsp.writeFile(path.join(p, 'somefile'), 'lower content\n')
      await fsp.mkdir(path.join(p, 'dir/sub'), { recursive: true })
      await fsp.writeFile(path.join(p, 'dir/sub/file'), 'deep lower\n')
      await fsp.symlink('dir/sub', path.join(p, 'inside-link'))
      await stampTimes(p)
    })
    return { d, home }
  })()
  return shared
}

/** Enough `../` to reach `/` from anywhere. */
const UP = '../'.repeat(40)
/** The sentinel reached through `..` from inside the layer. */
const upTo = (S: string) => UP + S.slice(1)
const HOST_ABS = `/etc/btrfs-layers-hostile-${process.pid}`

type Expect = 'bad' | 'ok' | 'either'
interface Case {
  name: string
  tar: (S: string) => Buffer | Promise<Buffer>
  /** Entries the parent layer gets before the archive is applied (on top of `base`). */
  lower?: (p: string, S: string) => Promise<void>
  /** 'bad': refused; 'ok': applied; 'either': refused or applied confined. Refusals carry `codes` (ERR_BAD_LAYER by default). */
  expect: Expect
  codes?: string[]
  /** What an applied archive must have made (the layer's tree, the sentinel). */
  check?: (t: ExecutionContext, got: Tree, S: string) => void | Promise<void>
}

const fileWith = (t: ExecutionContext, got: Tree, rel: string, content: string) => {
  const e = got.entries.get(rel)
  t.is(e?.type, 'file', `${rel} is a regular file in the layer`)
  t.is(e?.size, Buffer.byteLength(content), `${rel} has the archive's content`)
}

const CASES: Case[] = [
  // --- Names that leave the root ---------------------------------------------------------------
  { name: '`../x`', tar: () => buildTar([file('../x', 'escaped')]), expect: 'bad' },
  { name: '`a/../../x`', tar: () => buildTar([dir('a/'), file('a/../../x', 'escaped')]), expect: 'bad' },
  { name: '`..` up to the sentinel, overwriting a file', tar: (S) => buildTar([file(`${upTo(S)}/f1`, 'pwned')]), expect: 'bad' },
  { name: '`./..`', tar: () => buildTar([dir('./../')]), expect: 'bad' },
  { name: 'PAX path `../x` behind an innocent ustar name', tar: () => buildTar([file('innocent', 'escaped', { pax: { path: '../x' } })]), expect: 'bad' },
  { name: 'GNU long name `../../x`', tar: () => buildTar([file('innocent', 'escaped', { gnuLongName: '../../x' })]), expect: 'bad' },
  {
    name: 'absolute name `/etc/...` is confined to the layer',
    tar: () => buildTar([file(HOST_ABS, 'confined')]),
    expect: 'either',
    check: async (t, got) => {
      fileWith(t, got, HOST_ABS.slice(1), 'confined')
      t.false(await exists(HOST_ABS), `${HOST_ABS} on the host`)
    },
  },
  {
    name: 'absolute name inside the sentinel',
    tar: (S) => buildTar([file(`${S}/f1`, 'pwned'), file(`${S}/new-file`, 'pwned')]),
    expect: 'either',
    check: (t, got, S) => fileWith(t, got, `${S.slice(1)}/f1`, 'pwned'),
  },
  // --- Symlinks ----------------------------------------------------------------------------------
  {
    name: 'symlink to the sentinel, then a file through it',
    tar: (S) => buildTar([symlink('evil', S), file('evil/f1', 'pwned'), file('evil/new', 'pwned')]),
    expect: 'either',
  },
  {
    name: 'symlink chain escaping through `..`',
    tar: (S) =>
      buildTar([
        dir('x/'),
        symlink('x/l1', UP.slice(0, -1)),
        symlink('l2', `x/l1${S}`),
        symlink('l3', 'l2'),
        file('l3/f1', 'pwned'),
        file('x/l1/escaped-root-file', 'pwned'),
      ]),
    expect: 'either',
  },
  {
    name: 'symlink `..`-relative to the sentinel, then a directory, fifo and hardlink through it',
    tar: (S) => buildTar([symlink('rel', upTo(S)), dir('rel/newdir/'), { name: 'rel/fifo', type: '6' }, hardlink('rel/hl', 'somefile')]),
    expect: 'either',
  },
  {
    name: 'a file through a relative symlink that stays inside the layer lands at its target',
    tar: () => buildTar([file('inside-link/new', 'through a link')]),
    expect: 'ok',
    check: (t, got) => {
      fileWith(t, got, 'dir/sub/new', 'through a link')
      t.is(got.entries.get('inside-link')?.target, 'dir/sub')
    },
  },
  {
    name: 'an absolute symlink resolves in the layer root',
    tar: () => buildTar([symlink('abs', '/dir/sub'), file('abs/new', 'rooted')]),
    expect: 'ok',
    check: (t, got) => fileWith(t, got, 'dir/sub/new', 'rooted'),
  },
  {
    name: 'a symlink climbing out with `..` is clamped at the layer root',
    tar: () => buildTar([symlink('clamp', `${UP}dir/sub`), file('clamp/new', 'clamped')]),
    expect: 'ok',
    check: (t, got) => fileWith(t, got, 'dir/sub/new', 'clamped'),
  },
  {
    name: 'a directory entry at a symlink to the sentinel replaces the link (never chmods the target)',
    tar: (S) => buildTar([symlink('evil', S), dir('evil/', { mode: 0o777, uid: 1234 })]),
    expect: 'either',
    check: (t, got) => t.is(got.entries.get('evil')?.type, 'dir'),
  },
  {
    name: 'a file named like an existing symlink to the outside replaces the link',
    lower: async (p, S) => fsp.symlink(`${S}/f1`, path.join(p, 'out')),
    tar: () => buildTar([file('out', 'replaced', { mode: 0o600 })]),
    expect: 'ok',
    check: (t, got) => fileWith(t, got, 'out', 'replaced'),
  },
  {
    name: 'a directory named like an existing symlink to the sentinel, with a file in it',
    lower: async (p, S) => fsp.symlink(S, path.join(p, 'outdir')),
    tar: () => buildTar([dir('outdir/', { mode: 0o700 }), file('outdir/f1', 'inside')]),
    expect: 'ok',
    check: (t, got) => {
      t.is(got.entries.get('outdir')?.type, 'dir')
      fileWith(t, got, 'outdir/f1', 'inside')
    },
  },
  {
    name: 'a file through an existing lower symlink to the sentinel',
    lower: async (p, S) => fsp.symlink(S, path.join(p, 'outdir')),
    tar: () => buildTar([file('outdir/f1', 'pwned'), file('outdir/nested/level0/f0', 'pwned')]),
    expect: 'either',
  },
  {
    name: 'a file over a lower hardlinked name replaces that name only (never writes through the link)',
    lower: async (p) => {
      await fsp.writeFile(path.join(p, 'hl-a'), 'lower bytes\n')
      await fsp.link(path.join(p, 'hl-a'), path.join(p, 'hl-b'))
    },
    tar: () => buildTar([file('hl-a', 'upper')]),
    expect: 'ok',
    check: (t, got) => {
      fileWith(t, got, 'hl-a', 'upper')
      fileWith(t, got, 'hl-b', 'lower bytes\n')
      t.is(got.entries.get('hl-b')?.nlink, 1)
    },
  },
  {
    name: 'an opaque whiteout at the root hides every lower entry, not the layer\'s own',
    tar: () => buildTar([file('mine', 'kept'), file('.wh..wh..opq'), file('mine-too', 'kept')]),
    expect: 'ok',
    check: (t, got) => t.deepEqual([...got.entries.keys()].sort(), ['.', 'mine', 'mine-too']),
  },
  // --- Hardlinks ---------------------------------------------------------------------------------
  { name: 'hardlink to `../sentinel/file`', tar: (S) => buildTar([hardlink('h', `${upTo(S)}/f1`)]), expect: 'bad' },
  {
    name: 'hardlink to an absolute path outside',
    tar: (S) => buildTar([hardlink('h', `${S}/f1`)]),
    expect: 'either',
    codes: ['ERR_BAD_LAYER'],
  },
  {
    name: 'hardlink to a symlink pointing outside, then a file written at the link name',
    tar: (S) => buildTar([symlink('s', `${S}/f1`), hardlink('h', 's'), file('h', 'pwned')]),
    expect: 'ok',
    check: (t, got, S) => {
      fileWith(t, got, 'h', 'pwned')
      t.is(got.entries.get('s')?.target, `${S}/f1`)
    },
  },
  {
    name: 'hardlink to a symlink pointing outside, then a file below the link name',
    tar: (S) => buildTar([symlink('s', S), hardlink('h', 's'), file('h/f1', 'pwned')]),
    expect: 'either',
  },
  {
    name: 'hardlink through a symlinked directory pointing outside',
    tar: (S) => buildTar([symlink('sd', S), hardlink('h', 'sd/f1')]),
    expect: 'either',
    codes: ['ERR_BAD_LAYER'],
  },
  { name: 'hardlink to a directory', tar: () => buildTar([dir('d/'), hardlink('h', 'd')]), expect: 'bad' },
  { name: 'hardlink to a lower directory', tar: () => buildTar([hardlink('h', 'dir/sub')]), expect: 'bad' },
  { name: 'hardlink to the root', tar: () => buildTar([hardlink('h', './')]), expect: 'bad' },
  { name: 'hardlink to a missing entry', tar: () => buildTar([hardlink('h', 'no/such/file')]), expect: 'bad' },
  { name: 'PAX linkpath `../x` of a hardlink', tar: () => buildTar([hardlink('h', 'somefile', { pax: { linkpath: '../../x' } })]), expect: 'bad' },
  // --- The root entry ----------------------------------------------------------------------------
  { name: 'root entry `./` as a file', tar: () => buildTar([file('./', 'not a dir')]), expect: 'bad' },
  { name: 'root entry `./` as a symlink to the sentinel', tar: (S) => buildTar([symlink('./', S), file('f1', 'pwned')]), expect: 'bad' },
  { name: 'root entry `/` as a fifo', tar: () => buildTar([{ name: '/', type: '6' }]), expect: 'bad' },
  // --- Whiteouts ---------------------------------------------------------------------------------
  { name: '`.wh.`', tar: () => buildTar([file('.wh.')]), expect: 'bad' },
  { name: '`.wh..`', tar: () => buildTar([file('.wh..')]), expect: 'bad' },
  { name: '`.wh...`', tar: () => buildTar([file('.wh...')]), expect: 'bad' },
  { name: '`dir/.wh..` below a directory', tar: () => buildTar([file('dir/.wh..')]), expect: 'bad' },
  {
    name: 'whiteout through a lower symlinked parent pointing at the sentinel',
    lower: async (p, S) => fsp.symlink(S, path.join(p, 'wl')),
    tar: () => buildTar([file('wl/.wh.f1'), file('wl/.wh.nested')]),
    expect: 'either',
  },
  {
    name: 'whiteout through a symlinked parent of the same layer pointing at the sentinel',
    tar: (S) => buildTar([symlink('wl', upTo(S)), file('wl/.wh.f2'), file('wl/.wh.nested')]),
    expect: 'either',
  },
  {
    name: 'whiteout of a symlink to the sentinel removes the link only',
    lower: async (p, S) => fsp.symlink(S, path.join(p, 'wsl')),
    tar: () => buildTar([file('.wh.wsl')]),
    expect: 'ok',
    check: (t, got) => t.false(got.entries.has('wsl')),
  },
  {
    name: 'opaque whiteout under a lower symlinked directory pointing outside',
    lower: async (p, S) => fsp.symlink(`${S}/nested`, path.join(p, 'ol')),
    tar: () => buildTar([file('ol/.wh..wh..opq')]),
    expect: 'either',
  },
  {
    name: 'opaque whiteout under a `..`-relative symlink of the same layer',
    tar: (S) => buildTar([symlink('ol', upTo(S)), file('ol/.wh..wh..opq'), file('ol/nested/.wh..wh..opq')]),
    expect: 'either',
  },
  // --- Duplicates --------------------------------------------------------------------------------
  {
    name: 'duplicate paths: a directory, then a symlink to the sentinel, then a file under it',
    tar: (S) => buildTar([dir('dup/'), file('dup/inner', 'x'), symlink('dup', S), file('dup/f1', 'pwned')]),
    expect: 'either',
  },
  {
    name: 'duplicate paths: a file, a directory, a file again',
    tar: () => buildTar([file('x', 'first'), dir('x/'), file('x/in', 'in'), file('x', 'last')]),
    expect: 'either',
    check: (t, got) => fileWith(t, got, 'x', 'last'),
  },
  // --- Devices, xattrs, ids ----------------------------------------------------------------------
  { name: 'char device with major 5000', tar: () => buildTar([{ name: 'dev', type: '3', devmajor: 5000, devminor: 1 }]), expect: 'bad' },
  { name: 'char device with minor 2^21', tar: () => buildTar([{ name: 'dev', type: '3', devmajor: 1, devminor: 2 ** 21 }]), expect: 'bad' },
  { name: 'block device with major 4096', tar: () => buildTar([{ name: 'blk', type: '4', devmajor: 4096, devminor: 0 }]), expect: 'bad' },
  { name: 'device number field that is not octal', tar: () => buildTar([{ name: 'dev', type: '3', devmajor: '12x4567\0', devminor: 0 }]), expect: 'bad' },
  { name: '`trusted.overlay.opaque` xattr on a directory', tar: () => buildTar([dir('d/', { pax: { 'SCHILY.xattr.trusted.overlay.opaque': 'y' } })]), expect: 'bad' },
  { name: '`trusted.*` xattr on a file', tar: () => buildTar([file('f', 'x', { pax: { 'SCHILY.xattr.trusted.evil': 'y' } })]), expect: 'bad' },
  {
    name: 'xattrs on a symlink pointing outside',
    tar: (S) => buildTar([symlink('xl', `${S}/f2`, { pax: { 'SCHILY.xattr.user.evil': 'pwned', 'SCHILY.xattr.security.evil': 'pwned' } })]),
    expect: 'either',
  },
  { name: 'uid 2^32-1 (no id at all)', tar: () => buildTar([file('f', 'x', { pax: { uid: '4294967295' } })]), expect: 'bad' },
  { name: 'uid 2^40', tar: () => buildTar([file('f', 'x', { pax: { uid: String(2 ** 40) } })]), expect: 'bad' },
  { name: 'PAX mtime that is not a number', tar: () => buildTar([file('f', 'x', { pax: { mtime: '12abc' } })]), expect: 'bad' },
  { name: 'unknown entry type', tar: () => buildTar([{ name: 'weird', type: 'Q' }]), expect: 'bad' },
  // --- Broken streams ----------------------------------------------------------------------------
  {
    name: 'truncated in the middle of a body',
    tar: () => {
      const t = buildTar([file('ok', 'fine'), file('big', randomBytes(100_000))])
      return t.subarray(0, 3 * BLOCK + 40_000)
    },
    expect: 'bad',
  },
  {
    name: 'truncated in the middle of a header',
    tar: () => {
      const t = buildTar([file('ok', 'fine'), file('next', 'x')])
      return t.subarray(0, 2 * BLOCK + 200)
    },
    expect: 'bad',
  },
  { name: 'no end-of-archive marker', tar: () => buildTar([file('ok', 'fine')], { end: false }), expect: 'bad' },
  { name: 'size field claims more than the stream holds', tar: () => Buffer.concat([entryBytes({ ...file('f', 'short'), size: 1 << 30 })]), expect: 'bad' },
  { name: 'corrupt header checksum', tar: () => buildTar([file('ok', 'fine'), file('bad', 'x', { badChecksum: true })]), expect: 'bad' },
  { name: 'corrupt checksum of the first header', tar: () => buildTar([file('bad', 'x', { badChecksum: true })]), expect: 'bad' },
  { name: 'random garbage', tar: () => randomBytes(64 * 1024), expect: 'bad' },
  { name: 'gzip magic followed by garbage', tar: () => Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0x00]), randomBytes(64 * 1024)]), expect: 'bad' },
  { name: 'gzip stream cut in half', tar: () => { const g = gzipSync(buildTar([file('f', randomBytes(200_000))])); return g.subarray(0, g.length >> 1) }, expect: 'bad' },
  { name: 'gzip of garbage', tar: () => gzipSync(randomBytes(64 * 1024)), expect: 'bad' },
  { name: 'zstd magic followed by garbage', tar: () => Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), randomBytes(64 * 1024)]), expect: 'bad' },
  { name: 'gzip decompression bomb (1 GiB of zeros)', tar: () => gzipBomb(), expect: 'bad' },
  { name: 'zstd decompression bomb (1 GiB of zeros)', tar: () => zstdBomb(), expect: 'bad' },
  { name: 'PAX header of 9 MiB', tar: () => buildTar([file('f', 'x', { pax: { 'SCHILY.xattr.user.huge': Buffer.alloc(9 << 20, 0x61) } })]), expect: 'bad' },
  // --- Names the kernel cannot hold --------------------------------------------------------------
  {
    name: '5000-byte path',
    tar: () => buildTar([file('long', 'x', { pax: { path: Array.from({ length: 50 }, () => 'p'.repeat(99)).join('/') } })]),
    expect: 'bad',
    codes: ['ERR_BAD_LAYER', 'ENAMETOOLONG'],
  },
  {
    name: '300-byte name',
    tar: () => buildTar([file('long', 'x', { pax: { path: `dir/${'n'.repeat(300)}` } })]),
    expect: 'bad',
    codes: ['ERR_BAD_LAYER', 'ENAMETOOLONG'],
  },
  { name: 'NUL inside a PAX path', tar: () => buildTar([file('f', 'x', { pax: { path: Buffer.from('a\0/../../x') } })]), expect: 'bad' },
]

const slug = (s: string) => s.replace(/[^A-Za-z0-9]+/g, '-').slice(0, 24)

for (const [i, c] of CASES.entries()) {
  btrfsTest(`hostile #${i + 1}: ${c.name}`, async (t, dir) => {
    const { d, home } = await setup()
    const sentinel = await makeSentinel(slug(c.name))
    const S = sentinel.dir
    try {
      const sentinelBefore = await snapshotTree(S)
      let parent = 'base'
      if (c.lower) {
        parent = `p${i}`
        await d.create(parent, 'base')
        await inLayer(d, parent, (p) => c.lower!(p, S))
      }
      const id = `c${i}`
      await d.create(id, parent)
      const before = await layerSnapshot(d, id)
      const bytes = await c.tar(S)
      // Each input kind in turn: a Buffer, a file path, a Readable in 64 KiB chunks.
      let input: Buffer | string | Readable = bytes
      if (i % 3 === 1) {
        input = path.join(dir, 'layer.tar')
        await fsp.writeFile(input, bytes)
      } else if (i % 3 === 2) {
        const chunks: Buffer[] = []
        for (let o = 0; o < bytes.length; o += 65536) chunks.push(bytes.subarray(o, o + 65536))
        input = Readable.from(chunks)
      }
      const started = Date.now()
      let err: unknown
      try {
        await d.applyDiff(id, parent, input)
      } catch (e) {
        err = e
      }
      const elapsed = Date.now() - started
      const after = await layerSnapshot(d, id)

      // The sentinel keeps every byte, mode, mtime and xattr, and gains nothing.
      t.deepEqual(await sentinel.verify(), [], 'sentinel intact (harness oracle)')
      t.deepEqual(compareTrees(sentinelBefore, await snapshotTree(S), { rootMtime: true }), [], 'sentinel intact (modes, mtimes, xattrs)')
      t.false(await exists(HOST_ABS), `nothing at ${HOST_ABS}`)

      if (err !== undefined) {
        const e = err as BtrfsError
        t.true(e instanceof BtrfsError, `a BtrfsError: ${String(err)}`)
        t.log(`refused: ${e.code}: ${e.message} (${elapsed} ms)`)
        if (c.expect === 'ok') t.fail(`expected the archive to apply, got ${e.code}: ${e.message}`)
        // Malformed or hostile: ERR_BAD_LAYER (an errno like EEXIST from a syscall the
        // stream tricked the applier into is not a classification of the stream).
        const codes = c.codes ?? ['ERR_BAD_LAYER']
        t.true(codes.includes(e.code), `code ${e.code} (${e.message}) is one of ${codes.join(', ')}`)
        t.deepEqual(compareTrees(before, after, { rootMtime: true }), [], 'the layer is exactly as before')
      } else {
        t.log(`applied (${elapsed} ms)`)
        if (c.expect === 'bad') t.fail('expected a rejection, the archive applied')
        else await c.check?.(t, after, S)
      }
      // The temporary snapshot of the apply is gone.
      const leftovers = (await fsp.readdir(path.join(home, 'subvolumes'))).filter((n) => n.startsWith(`.tmp-${id}-`))
      t.deepEqual(leftovers, [], 'no temporary subvolume left')
      if (/bomb/.test(c.name)) t.true(elapsed < 20_000, `the bomb was stopped early (${elapsed} ms)`)
      await d.remove(id)
      if (parent !== 'base') await d.remove(parent)
    } finally {
      await sentinel.remove()
      await fsp.rm(HOST_ABS, { force: true })
    }
  })
}

btrfsTest('hostile: the table has at least 25 cases; a plain archive applies beside them', async (t) => {
  t.true(CASES.length >= 25, `${CASES.length} cases`)
  const { d } = await setup()
  await d.create('after-all', 'base')
  const n = await d.applyDiff('after-all', 'base', buildTar([file('fine', 'works')]))
  t.is(n, 5)
  const got = await layerSnapshot(d, 'after-all')
  fileWith(t, got, 'fine', 'works')
})
