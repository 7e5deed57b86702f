/**
 * Layer diffs against GNU tar, on a real btrfs:
 *  (a) tarballs GNU tar makes of a real tree (posix with xattrs, gnu, gzip; sparse files)
 *      applied with applyDiff onto an empty layer equal the source tree;
 *  (b) our diff streams extracted by GNU tar equal the layer (whole-layer diff into an empty
 *      directory; the child diff onto a `cp -a` copy of the parent with the whiteouts done by
 *      hand), and the stream holds exactly the changes: `.wh.` entries for the deletions,
 *      entries sorted, parents first;
 *  (c) a hand-built OCI layer with whiteouts and opaque directories (entries of the same layer
 *      before and after them) applied onto a parent equals what GNU tar plus manual whiteout
 *      handling makes of a `cp -a` copy of the parent.
 */
import test, { type ExecutionContext } from 'ava'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { BtrfsDriver, BtrfsError, type Change } from '../ts/index'
import { useBtrfs } from './helpers/btrfs'
import { REPO, collectDriversBeforeTeardown } from './helpers/driver-util'
import { inLayer, layerSnapshot, mutateChild, populateEverything, run } from './helpers/diff-fixtures'
import { buildTar, collect, dir as tdir, file as tfile, gnuList, hardlink, symlink, type RawEntry, type TarListing } from './helpers/diff-tar'
import { compareTrees, setMtimeNs, snapshotTree, type Tree } from './helpers/diff-tree'

collectDriversBeforeTeardown(test)

const drivers: BtrfsDriver[] = []
test.after.always(async () => {
  for (const d of drivers) await d.cleanup().catch(() => undefined)
})

const { btrfsTest } = useBtrfs(test, { size: 4 * 1024 * 1024 * 1024, tools: ['getfattr', 'setfattr', 'setcap', 'setfacl', 'tar'] })

async function driverIn(dir: string): Promise<BtrfsDriver> {
  const d = await BtrfsDriver.init(path.join(dir, 'home'))
  drivers.push(d)
  return d
}

const XATTR_FLAGS = ['--xattrs', '--xattrs-include=*']
/** Strip `./` and a trailing `/` from a tar name. */
const norm = (name: string) => name.replace(/^(\.\/)+/, '').replace(/\/+$/, '') || '.'

/** A source tree: a copy of the typescript package, of 60 /usr/share/doc entries, and every special entry. */
async function makeSource(dir: string): Promise<string> {
  const src = path.join(dir, 'src')
  await fsp.mkdir(path.join(src, 'doc'), { recursive: true })
  await run('cp', '-a', path.join(REPO, 'node_modules', 'typescript'), path.join(src, 'typescript'))
  const docs = (await fsp.readdir('/usr/share/doc')).sort().slice(0, 60)
  await run('cp', '-a', ...docs.map((n) => path.join('/usr/share/doc', n)), path.join(src, 'doc'))
  await fsp.mkdir(path.join(src, 'special'))
  await populateEverything(path.join(src, 'special'), { large: false })
  await fsp.chmod(src, 0o751)
  await setMtimeNs(src, 1_400_000_000_987_654_321n)
  return src
}

const variants: { name: string; args: string[]; ext: string; cmp: Parameters<typeof compareTrees>[2] }[] = [
  { name: 'posix with xattrs', args: [...XATTR_FLAGS, '--format=posix'], ext: 'tar', cmp: {} },
  // The gnu format has no xattrs and whole-second mtimes.
  { name: 'gnu', args: ['--format=gnu'], ext: 'tar', cmp: { xattrs: false, mtime: 's' } },
  { name: 'gzip (posix with xattrs)', args: [...XATTR_FLAGS, '--format=posix', '-z'], ext: 'tar.gz', cmp: {} },
]

btrfsTest('interop: tarballs made by GNU tar applied onto an empty layer equal the source tree', async (t, dir) => {
  const src = await makeSource(dir)
  const want = await snapshotTree(src)
  t.true(want.entries.size > 500, `source has ${want.entries.size} entries`)
  const d = await driverIn(dir)
  for (const [i, v] of variants.entries()) {
    const tarFile = path.join(dir, `src-${i}.${v.ext}`)
    await run('tar', ...v.args, '--numeric-owner', '-C', src, '-cpf', tarFile, '.')
    const id = `gnu-${i}`
    await d.create(id)
    const applied = await d.applyDiff(id, null, tarFile)
    const got = await layerSnapshot(d, id)
    // The archive's `./` entry carries the root's mode, owner and time too.
    t.deepEqual(compareTrees(want, got, { rootMtime: true, ...v.cmp }), [], v.name)
    let bodies = 0
    const seen = new Set<string>()
    for (const e of want.entries.values()) {
      if (e.type === 'file' && !seen.has(e.ino)) {
        seen.add(e.ino)
        bodies += e.size ?? 0
      }
    }
    t.is(applied, bodies, `${v.name}: bytes applied are the file bodies (each inode once)`)
  }
  // Binary fidelity of a few files against the originals, outside any helper.
  await inLayer(d, 'gnu-0', async (p) => {
    for (const rel of ['typescript/lib/typescript.js', 'typescript/package.json']) {
      t.true((await fsp.readFile(path.join(p, rel))).equals(await fsp.readFile(path.join(src, rel))), rel)
    }
  })
})

for (const format of ['gnu', 'posix'] as const) {
  btrfsTest(`interop: a sparse file archived by GNU tar --sparse (--format=${format}) applies with its content (gnu) or is refused (posix)`, async (t, dir) => {
    const src = path.join(dir, 'src')
    await fsp.mkdir(src)
    const sparse = path.join(src, 'sparse.img')
    await run('truncate', '-s', '64M', sparse)
    const fh = await fsp.open(sparse, 'r+')
    await fh.write(Buffer.from('start of data'), 0, 13, 4096)
    await fh.write(Buffer.from('middle'), 0, 6, 32 << 20)
    await fh.write(Buffer.from('end'), 0, 3, (64 << 20) - 3)
    await fh.close()
    await fsp.writeFile(path.join(src, 'plain'), 'plain\n')
    await setMtimeNs(sparse, 1_600_000_000_000_000_000n)
    const tarFile = path.join(dir, 'sparse.tar')
    await run('tar', `--format=${format}`, '--sparse', '-C', src, '-cpf', tarFile, '.')
    const d = await driverIn(dir)
    await d.create('sparse')
    if (format === 'posix') {
      // PAX sparse files (GNU.sparse.* records) are not supported: refused, never mislaid
      // as their raw map and data under a GNUSparseFile.<pid>/ name.
      const before = await layerSnapshot(d, 'sparse')
      const err = await t.throwsAsync(d.applyDiff('sparse', null, tarFile))
      t.is((err as BtrfsError).code, 'ERR_BAD_LAYER')
      t.deepEqual(await layerSnapshot(d, 'sparse'), before)
      return
    }
    await d.applyDiff('sparse', null, tarFile)
    const got = await layerSnapshot(d, 'sparse')
    t.deepEqual(compareTrees(await snapshotTree(src), got, { rootMtime: true, mtime: 's' }), [])
    // Holes stay holes (allocated blocks far below the size).
    await inLayer(d, 'sparse', async (p) => {
      const st = await fsp.stat(path.join(p, 'sparse.img'))
      t.is(st.size, 64 << 20)
      t.true(st.blocks * 512 < 8 << 20, `allocated ${st.blocks * 512} bytes`)
    })
  })
}

/** Directories that are not entries of `listing` but hold one of its non-directory entries (replaced there by unlink and create). */
function parentsOfReplaced(listing: TarListing[]): Set<string> {
  const dirs = new Set(listing.filter((e) => e.kind === 'd').map((e) => norm(e.name)))
  const out = new Set<string>()
  for (const e of listing) {
    if (e.kind === 'd') continue
    const parent = path.posix.dirname(norm(e.name))
    if (!dirs.has(parent)) out.add(parent)
  }
  return out
}

/**
 * Extract an OCI layer over `lower` (a copy of the parent tree) the way the spec describes it,
 * with GNU tar and by hand: whiteouts delete the lower entry, opaque whiteouts the lower
 * entries of their directory (both before extraction, so that they only ever hide lower
 * entries); a non-directory entry replaces a lower directory; then `tar -x`; then the `.wh.`
 * files go (their directories' mtimes kept).
 */
async function gnuApply(lower: string, tarFile: string): Promise<void> {
  const listing = await gnuList(tarFile)
  for (const e of listing) {
    const rel = norm(e.name)
    const base = path.posix.basename(rel)
    const parent = path.join(lower, path.posix.dirname(rel))
    if (base === '.wh..wh..opq') {
      for (const n of await fsp.readdir(parent).catch(() => [] as string[])) await fsp.rm(path.join(parent, n), { recursive: true, force: true })
    } else if (base.startsWith('.wh.')) {
      await fsp.rm(path.join(parent, base.slice(4)), { recursive: true, force: true })
    } else if (e.kind !== 'd') {
      const st = await fsp.lstat(path.join(lower, rel)).catch(() => undefined)
      if (st?.isDirectory()) await fsp.rm(path.join(lower, rel), { recursive: true })
    }
  }
  await run('tar', ...XATTR_FLAGS, '--numeric-owner', '-xpf', tarFile, '-C', lower)
  for (const e of listing) {
    const rel = norm(e.name)
    if (!path.posix.basename(rel).startsWith('.wh.')) continue
    const parent = path.join(lower, path.posix.dirname(rel))
    const st = await fsp.lstat(parent, { bigint: true })
    await fsp.rm(path.join(lower, rel), { force: true })
    await setMtimeNs(parent, st.mtimeNs)
  }
}

/** Component-wise path order, the order of a diff stream. */
const byComponents = (a: string, b: string) => {
  const x = a.split('/')
  const y = b.split('/')
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return Buffer.compare(Buffer.from(x[i]), Buffer.from(y[i]))
  return x.length - y.length
}

btrfsTest('interop: our diffs extracted by GNU tar equal the layer; whiteouts exactly for deletions; sorted, parents first', async (t, dir) => {
  const d = await driverIn(dir)
  await d.create('base')
  await inLayer(d, 'base', (p) => populateEverything(p))
  await d.create('child', 'base')
  await inLayer(d, 'child', (p) => mutateChild(p))
  const child = await layerSnapshot(d, 'child')

  // Whole layer into an empty directory.
  const wholeTar = path.join(dir, 'whole.tar')
  await fsp.writeFile(wholeTar, await collect(await d.diff('child', null)))
  const out = path.join(dir, 'whole-out')
  await fsp.mkdir(out)
  await run('tar', ...XATTR_FLAGS, '--numeric-owner', '-xpf', wholeTar, '-C', out)
  t.deepEqual(compareTrees(child, await snapshotTree(out)), [], 'GNU tar extraction of the whole-layer diff equals the layer')
  const wholeList = await gnuList(wholeTar)
  t.false(
    wholeList.some((e) => path.posix.basename(norm(e.name)).startsWith('.wh.')),
    'no whiteouts in a whole-layer diff',
  )

  // The child diff onto a copy of the parent.
  const childTar = path.join(dir, 'child.tar')
  await fsp.writeFile(childTar, await collect(await d.diff('child')))
  const lower = path.join(dir, 'lower')
  await inLayer(d, 'base', (p) => run('cp', '-a', `${p}/.`, lower))
  t.deepEqual(compareTrees(await layerSnapshot(d, 'base'), await snapshotTree(lower)), [], 'cp -a copies the parent faithfully')
  const listing = await gnuList(childTar)
  await gnuApply(lower, childTar)
  t.deepEqual(
    compareTrees(child, await snapshotTree(lower), {
      ignoreLinkGroupOf: ['change/new-link', 'change/unchanged-for-link'],
      // GNU tar replaces a file by unlink and create, which touches a directory the diff does not carry.
      ignoreMtimeOf: (rel) => parentsOfReplaced(listing).has(rel),
    }),
    [],
    'GNU tar extraction of the child diff (whiteouts by hand) equals the child',
  )

  // The stream holds exactly the changes.
  const changes: Change[] = await d.changes('child')
  const names = listing.map((e) => norm(e.name))
  const whiteouts = names.filter((n) => path.posix.basename(n).startsWith('.wh.')).map((n) => `/${path.posix.join(path.posix.dirname(n), path.posix.basename(n).slice(4))}`.replace(/^\/\.\//, '/'))
  t.deepEqual(whiteouts.sort(), changes.filter((c) => c.kind === 'delete').map((c) => c.path).sort(), '.wh. entries exactly for the deletions')
  t.deepEqual(
    names.filter((n) => !path.posix.basename(n).startsWith('.wh.')).map((n) => `/${n}`),
    changes.filter((c) => c.kind !== 'delete').map((c) => c.path),
    'entries exactly for the additions and modifications, in the order of changes()',
  )
  // Sorted by the path each entry is about (a whiteout sorts as the path it deletes).
  const about = names.map((n) => path.posix.join(path.posix.dirname(n), path.posix.basename(n).replace(/^\.wh\./, '')))
  t.deepEqual(about, [...about].sort(byComponents), 'entries sorted component-wise')
  for (const [i, n] of names.entries()) {
    const parent = path.posix.dirname(n)
    const at = names.indexOf(parent)
    if (at >= 0) t.true(at < i, `${parent} before ${n}`)
  }
  // A hardlink in the stream names an earlier entry.
  for (const [i, e] of listing.entries()) {
    if (e.kind === 'h') t.true(names.slice(0, i).includes(norm(e.link ?? '')), `link ${e.name} -> ${e.link} names an earlier entry`)
  }
})

// ---------------------------------------------------------------------------------------------
// (c) A hand-built OCI layer with whiteouts and opaque directories
// ---------------------------------------------------------------------------------------------

/** The parent layer of the whiteout tests. */
async function whiteoutParent(p: string): Promise<void> {
  const w = async (rel: string, body = `${rel}\n`) => {
    await fsp.mkdir(path.dirname(path.join(p, rel)), { recursive: true })
    await fsp.writeFile(path.join(p, rel), body)
  }
  await w('keep/a')
  await w('keep/b')
  await w('wh/file1')
  await w('wh/dir1/x')
  await w('wh/dir1/deeper/y')
  await fsp.symlink('../keep/a', path.join(p, 'wh/link1'))
  await w('wh/stay')
  await w('wh/.hidden')
  await w('opq/lower1')
  await w('opq/lowerdir/z')
  await w('opq/lowerdir/zz')
  await fsp.symlink('lower1', path.join(p, 'opq/lowerlink'))
  await w('opq2/lower')
  await w('opq2/sub/deep')
  await w('same/x', 'lower x\n')
  await w('same/y', 'lower y\n')
  await w('nested/a/b/c/file')
  await w('merge/lower-only')
  await w('merge/sub/lower-file')
  const { stampTimes } = await import('./helpers/diff-fixtures')
  await stampTimes(p)
}

const T = 1_650_000_000
/** The layer, in an order where same-layer entries come both before and after the whiteouts that must not hide them. */
const OCI_LAYER: RawEntry[] = [
  tdir('./', { mode: 0o755, mtime: T }),
  tdir('wh/', { mode: 0o750, mtime: T + 1 }),
  tfile('wh/.wh.file1', '', { mtime: T }),
  tfile('wh/.wh.dir1', '', { mtime: T }),
  tfile('wh/.wh.link1', '', { mtime: T }),
  tfile('wh/.wh.never-existed', '', { mtime: T }),
  tfile('wh/.wh..hidden', '', { mtime: T }),
  tdir('opq/', { mode: 0o711, mtime: T + 2 }),
  tfile('opq/new-before', 'made before the opaque marker\n', { mtime: T + 3 }),
  tdir('opq/lowerdir/', { mode: 0o755, mtime: T + 4 }),
  tfile('opq/lowerdir/fresh', 'fresh\n', { mtime: T + 5 }),
  tfile('opq/.wh..wh..opq', '', { mtime: T }),
  tfile('opq/new-after', 'made after the opaque marker\n', { mtime: T + 6 }),
  symlink('opq/lowerlink', 'new-after', { mtime: T + 7 }),
  tdir('opq2/', { mtime: T + 8 }),
  tfile('opq2/.wh..wh..opq', '', { mtime: T }),
  tdir('same/', { mtime: T + 9 }),
  tfile('same/x', 'x of this layer, before its whiteout\n', { mtime: T + 10 }),
  tfile('same/.wh.x', '', { mtime: T }),
  tfile('same/.wh.y', '', { mtime: T }),
  tfile('same/y', 'y of this layer, after its whiteout\n', { mtime: T + 11 }),
  hardlink('same/y-link', 'same/y', { mtime: T + 11 }),
  tdir('nested/', { mtime: T + 12 }),
  tdir('nested/a/', { mtime: T + 13 }),
  tfile('nested/a/.wh.b', '', { mtime: T }),
  tdir('merge/', { mtime: T + 14 }),
  tdir('merge/sub/', { mtime: T + 15 }),
  tfile('merge/sub/new', 'merged\n', { mtime: T + 16 }),
  tfile('merge/.wh.sub', '', { mtime: T }),
  tdir('newdir/', { mtime: T + 17 }),
  tfile('newdir/.wh..wh..opq', '', { mtime: T }),
  tfile('newdir/inside', 'in a new opaque directory\n', { mtime: T + 18 }),
]

async function whiteoutCase(t: ExecutionContext, dir: string, d: BtrfsDriver, tarFile: string, tag: string): Promise<Tree> {
  const id = `oci-${tag}`
  await d.create(id, 'wh-parent')
  await d.applyDiff(id, 'wh-parent', tarFile)
  const got = await layerSnapshot(d, id)
  const lower = path.join(dir, `lower-${tag}`)
  await inLayer(d, 'wh-parent', (p) => run('cp', '-a', `${p}/.`, lower))
  await gnuApply(lower, tarFile)
  t.deepEqual(compareTrees(await snapshotTree(lower), got, { rootMtime: true }), [], `${tag}: applyDiff equals GNU tar + manual whiteouts`)
  return got
}

btrfsTest('interop: a hand-built OCI layer with whiteouts and opaque directories equals GNU tar plus manual whiteout handling', async (t, dir) => {
  const d = await driverIn(dir)
  await d.create('wh-parent')
  await inLayer(d, 'wh-parent', whiteoutParent)
  const tarFile = path.join(dir, 'oci.tar')
  await fsp.writeFile(tarFile, buildTar(OCI_LAYER))
  const got = await whiteoutCase(t, dir, d, tarFile, 'raw')

  // The expectations spelled out, so that the oracle itself is checked too.
  const has = (rel: string) => got.entries.has(rel)
  for (const gone of ['wh/file1', 'wh/dir1', 'wh/link1', 'wh/.hidden', 'opq/lower1', 'opq/lowerdir/z', 'opq/lowerdir/zz', 'opq2/lower', 'opq2/sub', 'nested/a/b', 'merge/sub/lower-file']) {
    t.false(has(gone), `${gone} is hidden`)
  }
  for (const kept of ['wh/stay', 'keep/a', 'keep/b', 'opq/new-before', 'opq/new-after', 'opq/lowerdir/fresh', 'same/x', 'same/y', 'same/y-link', 'merge/lower-only', 'merge/sub/new', 'newdir/inside']) {
    t.true(has(kept), `${kept} is there`)
  }
  t.is(got.entries.get('opq/lowerlink')?.target, 'new-after', 'a lower symlink replaced by the layer stays')
  t.is(got.entries.get('opq2')?.type, 'dir')
  t.false([...got.entries.keys()].some((k) => path.posix.basename(k).startsWith('.wh.')), 'no .wh. file is left in the layer')
  await inLayer(d, 'oci-raw', async (p) => {
    t.is(await fsp.readFile(path.join(p, 'same/x'), 'utf8'), 'x of this layer, before its whiteout\n')
    t.is(await fsp.readFile(path.join(p, 'same/y'), 'utf8'), 'y of this layer, after its whiteout\n')
  })
})

btrfsTest('interop: an OCI layer made by GNU tar from a staging directory holding literal .wh. files', async (t, dir) => {
  const d = await driverIn(dir)
  await d.create('wh-parent')
  await inLayer(d, 'wh-parent', whiteoutParent)
  // Stage the same layer as files, and let GNU tar pick the order (directory order).
  const stage = path.join(dir, 'stage')
  await fsp.mkdir(stage)
  const raw = path.join(dir, 'raw.tar')
  await fsp.writeFile(raw, buildTar(OCI_LAYER))
  await run('tar', '-xpf', raw, '-C', stage)
  for (const f of ['same/.wh.x', 'same/.wh.y']) t.true((await fsp.lstat(path.join(stage, f))).isFile(), `staged ${f}`)
  for (const format of ['posix', 'gnu']) {
    const tarFile = path.join(dir, `staged-${format}.tar`)
    await run('tar', `--format=${format}`, '--numeric-owner', '-C', stage, '-cpf', tarFile, '.')
    const got = await whiteoutCase(t, dir, d, tarFile, `staged-${format}`)
    t.true(got.entries.has('opq/new-before') && got.entries.has('opq/new-after') && got.entries.has('same/x') && got.entries.has('same/y'))
    t.false(got.entries.has('opq/lower1'))
  }
})
