/**
 * Every error code of the low-level API, for every function it applies to. Each case checks
 * the BtrfsError (code, errno, syscall, path) and that nothing changed: the subvolume list of
 * btrfs-progs and every file below the test's directories are the same before and after.
 */
import test, { type ExecutionContext } from 'ava'
import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import {
  BtrfsError,
  createSubvolume,
  deleteSubvolume,
  filesystemInfo,
  isReadOnly,
  isSubvolume,
  listSubvolumes,
  setReadOnly,
  snapshot,
  subvolumeInfo,
  sync,
} from '../ts/index'
import {
  expectArgTypeNoChange,
  expectBtrfsError,
  expectErrorNoChange,
  fill,
  loopDevices,
  mkSubvol,
  nonBtrfsDir,
  observe,
  oracleIsSubvolume,
  oracleReadOnly,
  sh,
  type ExpectedError,
  unmountIfMounted,
  useBtrfs,
} from './helpers/btrfs'

const { btrfsTest, fs, extra } = useBtrfs(test)

interface Fixture {
  dir: string
  /** A subvolume holding files. */
  sv: string
  /** A subvolume with a nested subvolume `kid` (in a plain directory). */
  parent: string
  kid: string
  plain: string
  file: string
  /** A symlink to `sv`. */
  link: string
  /** A symlink to nothing. */
  dangling: string
  missing: string
  /** A directory outside btrfs, holding a file and a directory. */
  nb: string
}

async function setup(t: ExecutionContext, dir: string): Promise<Fixture> {
  const f: Fixture = {
    dir,
    sv: path.join(dir, 'sv'),
    parent: path.join(dir, 'parent'),
    kid: path.join(dir, 'parent', 'in', 'kid'),
    plain: path.join(dir, 'plain'),
    file: path.join(dir, 'file'),
    link: path.join(dir, 'link'),
    dangling: path.join(dir, 'dangling'),
    missing: path.join(dir, 'missing'),
    nb: '',
  }
  await mkSubvol(f.sv)
  await fill(f.sv)
  await mkSubvol(f.parent)
  await fsp.mkdir(path.join(f.parent, 'in'))
  await mkSubvol(f.kid)
  await fill(f.kid)
  await fsp.mkdir(f.plain)
  await fill(f.plain)
  await fsp.writeFile(f.file, 'a file')
  await fsp.symlink(f.sv, f.link)
  await fsp.symlink(path.join(dir, 'nowhere'), f.dangling)
  const nb = await nonBtrfsDir()
  t.teardown(() => nb.remove())
  f.nb = nb.dir
  await fsp.mkdir(path.join(f.nb, 'd'))
  await fsp.writeFile(path.join(f.nb, 'f'), 'outside')
  return f
}

type Case = [label: string, call: () => Promise<unknown>, want: ExpectedError]

async function runCases(t: ExecutionContext, f: Fixture, cases: Case[]) {
  for (const [label, call, want] of cases) {
    await expectErrorNoChange(t, fs().mnt, [f.dir, f.nb], call, { ...want, label })
  }
}

/**
 * Every path-taking function, with the path in each argument position it can go, and what its
 * error names: `path`, and for snapshot (two paths, as Node's rename) `path` and `dest`.
 */
function everyPathCall(f: Fixture, p: string): [string, () => Promise<unknown>, { path: string; dest?: string }][] {
  const snapDest = path.join(f.dir, 'snap-dest')
  const at = (label: string, call: () => Promise<unknown>): [string, () => Promise<unknown>, { path: string }] => [label, call, { path: p }]
  return [
    at('isSubvolume', () => isSubvolume(p)),
    at('createSubvolume', () => createSubvolume(p)),
    ['snapshot source', () => snapshot(p, snapDest), { path: p, dest: snapDest }],
    ['snapshot dest', () => snapshot(f.sv, p), { path: f.sv, dest: p }],
    ['snapshot readOnly dest', () => snapshot(f.sv, p, { readOnly: true }), { path: f.sv, dest: p }],
    at('deleteSubvolume', () => deleteSubvolume(p)),
    at('deleteSubvolume recursive', () => deleteSubvolume(p, { recursive: true })),
    at('subvolumeInfo', () => subvolumeInfo(p)),
    at('listSubvolumes', () => listSubvolumes(p)),
    at('isReadOnly', () => isReadOnly(p)),
    at('setReadOnly true', () => setReadOnly(p, true)),
    at('setReadOnly false', () => setReadOnly(p, false)),
    at('sync', () => sync(p)),
    at('filesystemInfo', () => filesystemInfo(p)),
  ]
}

// ---------------------------------------------------------------------------------------------
// EINVAL: empty path, NUL byte, names that are no entry
// ---------------------------------------------------------------------------------------------

btrfsTest('EINVAL: an empty path, for every function and argument', async (t, dir) => {
  const f = await setup(t, dir)
  await runCases(
    t,
    f,
    everyPathCall(f, '').map(([l, c, where]) => [`${l}('')`, c, { code: 'EINVAL', ...where, syscall: null }] as Case),
  )
})

btrfsTest('EINVAL: a NUL byte in the path, for every function and argument', async (t, dir) => {
  const f = await setup(t, dir)
  for (const p of [`${f.sv}\0`, `${f.dir}/x\0y`, `${f.dir}\0/sv`]) {
    await runCases(
      t,
      f,
      everyPathCall(f, p).map(([l, c, where]) => [`${l}(${JSON.stringify(p)})`, c, { code: 'EINVAL', ...where, syscall: null }] as Case),
    )
  }
})

btrfsTest('EINVAL: creating or deleting a path that names no entry (/, ., ..)', async (t, dir) => {
  const f = await setup(t, dir)
  const cases: Case[] = []
  for (const p of [`${f.sv}/.`, `${f.sv}/..`, '/', `${f.parent}/in/..`]) {
    cases.push([`createSubvolume(${p})`, () => createSubvolume(p), { code: 'EINVAL', path: p, syscall: null }])
    cases.push([`snapshot dest ${p}`, () => snapshot(f.sv, p), { code: 'EINVAL', path: f.sv, dest: p, syscall: null }])
    cases.push([`deleteSubvolume(${p})`, () => deleteSubvolume(p), { code: 'EINVAL', path: p, syscall: null }])
    cases.push([`deleteSubvolume(${p}, recursive)`, () => deleteSubvolume(p, { recursive: true }), { code: 'EINVAL', path: p, syscall: null }])
  }
  await runCases(t, f, cases)
})

// ---------------------------------------------------------------------------------------------
// ENAMETOOLONG
// ---------------------------------------------------------------------------------------------

btrfsTest('ENAMETOOLONG: a final component over 255 bytes, for every function', async (t, dir) => {
  const f = await setup(t, dir)
  const ascii = path.join(f.dir, 'n'.repeat(256))
  const multibyte = path.join(f.dir, 'é'.repeat(128)) // 128 characters, 256 bytes
  t.is(Buffer.byteLength(path.basename(multibyte)), 256)
  const inSv = path.join(f.sv, 'x'.repeat(300))
  for (const p of [ascii, multibyte, inSv]) {
    await runCases(
      t,
      f,
      everyPathCall(f, p).map(([l, c, where]) => [`${l}(${p.length} chars)`, c, { code: 'ENAMETOOLONG', ...where, syscall: null }] as Case),
    )
  }
})

// ---------------------------------------------------------------------------------------------
// ERR_NOT_BTRFS
// ---------------------------------------------------------------------------------------------

btrfsTest('ERR_NOT_BTRFS: paths on another filesystem, for every function', async (t, dir) => {
  const f = await setup(t, dir)
  const d = path.join(f.nb, 'd')
  const fresh = path.join(f.nb, 'fresh')
  const nb: ExpectedError = { code: 'ERR_NOT_BTRFS' }
  const cases: Case[] = [
    ['isSubvolume', () => isSubvolume(d), { ...nb, path: d }],
    ['isSubvolume of the non-btrfs root', () => isSubvolume(f.nb), { ...nb, path: f.nb }],
    ['createSubvolume', () => createSubvolume(fresh), { ...nb }],
    ['snapshot source', () => snapshot(d, path.join(f.dir, 'snap')), { ...nb, path: d }],
    ['snapshot dest', () => snapshot(f.sv, fresh), { ...nb }],
    ['snapshot readOnly dest', () => snapshot(f.sv, fresh, { readOnly: true }), { ...nb }],
    ['deleteSubvolume', () => deleteSubvolume(d), { ...nb }],
    ['deleteSubvolume recursive', () => deleteSubvolume(d, { recursive: true }), { ...nb }],
    ['subvolumeInfo', () => subvolumeInfo(d), { ...nb, path: d }],
    ['listSubvolumes', () => listSubvolumes(d), { ...nb, path: d }],
    ['isReadOnly', () => isReadOnly(d), { ...nb, path: d }],
    ['setReadOnly', () => setReadOnly(d, true), { ...nb, path: d }],
    ['sync', () => sync(d), { ...nb, path: d }],
    ['filesystemInfo', () => filesystemInfo(d), { ...nb, path: d }],
    ['filesystemInfo /proc', () => filesystemInfo('/proc'), { ...nb, path: '/proc' }],
  ]
  await runCases(t, f, cases)
  t.false((await fsp.readdir(f.nb)).includes('fresh'))
})

// ---------------------------------------------------------------------------------------------
// EEXIST
// ---------------------------------------------------------------------------------------------

btrfsTest('EEXIST: creating or snapshotting onto any existing entry', async (t, dir) => {
  const f = await setup(t, dir)
  const cases: Case[] = []
  for (const p of [f.sv, f.plain, f.file, f.link, f.dangling, f.kid, f.parent]) {
    const n = path.basename(p)
    cases.push([`createSubvolume(${n})`, () => createSubvolume(p), { code: 'EEXIST', path: p }])
    cases.push([`snapshot(sv, ${n})`, () => snapshot(f.sv, p), { code: 'EEXIST', path: f.sv, dest: p }])
    cases.push([`snapshot(sv, ${n}, ro)`, () => snapshot(f.sv, p, { readOnly: true }), { code: 'EEXIST', path: f.sv, dest: p }])
  }
  await runCases(t, f, cases)
  // The dangling symlink was not followed to create its target.
  t.false(await oracleIsSubvolume(path.join(f.dir, 'nowhere')))
  await t.throwsAsync(fsp.lstat(path.join(f.dir, 'nowhere')))
})

// ---------------------------------------------------------------------------------------------
// ENOENT
// ---------------------------------------------------------------------------------------------

btrfsTest('ENOENT: a missing path or parent, for every function', async (t, dir) => {
  const f = await setup(t, dir)
  const m = f.missing
  const deep = path.join(f.missing, 'child')
  const cases: Case[] = [
    ['isSubvolume', () => isSubvolume(m), { code: 'ENOENT', path: m }],
    ['createSubvolume in a missing directory', () => createSubvolume(deep), { code: 'ENOENT' }],
    ['snapshot of a missing source', () => snapshot(m, path.join(f.dir, 'dest')), { code: 'ENOENT', path: m }],
    ['snapshot of a dangling symlink', () => snapshot(f.dangling, path.join(f.dir, 'dest')), { code: 'ENOENT', path: f.dangling }],
    ['snapshot into a missing directory', () => snapshot(f.sv, deep), { code: 'ENOENT' }],
    ['deleteSubvolume', () => deleteSubvolume(m), { code: 'ENOENT', path: m }],
    ['deleteSubvolume recursive', () => deleteSubvolume(m, { recursive: true }), { code: 'ENOENT', path: m }],
    ['deleteSubvolume in a missing directory', () => deleteSubvolume(deep), { code: 'ENOENT' }],
    ['subvolumeInfo', () => subvolumeInfo(m), { code: 'ENOENT', path: m }],
    ['listSubvolumes', () => listSubvolumes(m), { code: 'ENOENT', path: m }],
    ['isReadOnly', () => isReadOnly(m), { code: 'ENOENT', path: m }],
    ['setReadOnly', () => setReadOnly(m, true), { code: 'ENOENT', path: m }],
    ['sync', () => sync(m), { code: 'ENOENT', path: m }],
    ['filesystemInfo', () => filesystemInfo(m), { code: 'ENOENT', path: m }],
  ]
  await runCases(t, f, cases)
})

// ---------------------------------------------------------------------------------------------
// EINVAL: not a subvolume
// ---------------------------------------------------------------------------------------------

btrfsTest('EINVAL: deleting a directory that is not a subvolume', async (t, dir) => {
  const f = await setup(t, dir)
  const inner = path.join(f.sv, 'sub')
  await runCases(t, f, [
    ['plain directory', () => deleteSubvolume(f.plain), { code: 'EINVAL', path: f.plain }],
    ['plain directory, recursive', () => deleteSubvolume(f.plain, { recursive: true }), { code: 'EINVAL', path: f.plain }],
    ['directory inside a subvolume', () => deleteSubvolume(inner, { recursive: true }), { code: 'EINVAL', path: inner }],
    ['regular file', () => deleteSubvolume(f.file), { code: 'EINVAL', path: f.file }],
    ['dangling symlink', () => deleteSubvolume(f.dangling), { code: 'EINVAL', path: f.dangling }],
  ])
})

btrfsTest('EINVAL: deleting a symlink to a subvolume; the subvolume survives', async (t, dir) => {
  const f = await setup(t, dir)
  const toParent = path.join(f.dir, 'to-parent')
  await fsp.symlink('parent', toParent) // relative
  await runCases(t, f, [
    ['symlink', () => deleteSubvolume(f.link), { code: 'EINVAL', path: f.link }],
    ['symlink, recursive', () => deleteSubvolume(f.link, { recursive: true }), { code: 'EINVAL', path: f.link }],
    ['relative symlink to a tree, recursive', () => deleteSubvolume(toParent, { recursive: true }), { code: 'EINVAL', path: toParent }],
  ])
  t.true(await oracleIsSubvolume(f.sv))
  t.true(await oracleIsSubvolume(f.kid))
  t.is((await fsp.readlink(f.link)), f.sv)
})

btrfsTest('EINVAL: snapshot, info, list and the read-only flag of a non-subvolume', async (t, dir) => {
  const f = await setup(t, dir)
  const d = f.plain
  const dest = path.join(f.dir, 'dest')
  await runCases(t, f, [
    ['snapshot of a plain directory', () => snapshot(d, dest), { code: 'EINVAL', path: d }],
    ['read-only snapshot of a plain directory', () => snapshot(d, dest, { readOnly: true }), { code: 'EINVAL', path: d }],
    ['snapshot of a directory inside a subvolume', () => snapshot(path.join(f.sv, 'sub'), dest), { code: 'EINVAL', path: path.join(f.sv, 'sub') }],
    ['subvolumeInfo', () => subvolumeInfo(d), { code: 'EINVAL', path: d }],
    ['listSubvolumes', () => listSubvolumes(d), { code: 'EINVAL', path: d }],
    ['isReadOnly', () => isReadOnly(d), { code: 'EINVAL', path: d }],
    ['setReadOnly true', () => setReadOnly(d, true), { code: 'EINVAL', path: d }],
    ['setReadOnly false', () => setReadOnly(d, false), { code: 'EINVAL', path: d }],
  ])
})

btrfsTest('a regular file where a subvolume is expected is rejected (EINVAL or ENOTDIR)', async (t, dir) => {
  const f = await setup(t, dir)
  const calls: [string, () => Promise<unknown>][] = [
    ['snapshot', () => snapshot(f.file, path.join(f.dir, 'dest'))],
    ['subvolumeInfo', () => subvolumeInfo(f.file)],
    ['listSubvolumes', () => listSubvolumes(f.file)],
    ['isReadOnly', () => isReadOnly(f.file)],
    ['setReadOnly', () => setReadOnly(f.file, true)],
  ]
  for (const [label, call] of calls) {
    const before = await fsp.readFile(f.file, 'utf8')
    const e = await t.throwsAsync(call(), undefined, label)
    t.true(e instanceof BtrfsError, label)
    t.true(['EINVAL', 'ENOTDIR'].includes((e as BtrfsError).code), `${label}: ${(e as BtrfsError).code}`)
    t.is((e as BtrfsError).path, f.file, label)
    t.is(await fsp.readFile(f.file, 'utf8'), before)
  }
  t.false(await oracleIsSubvolume(path.join(f.dir, 'dest')))
})

// ---------------------------------------------------------------------------------------------
// ENOTEMPTY, EXDEV, EBUSY
// ---------------------------------------------------------------------------------------------

btrfsTest('ENOTEMPTY: deleting a subvolume with nested ones without recursive', async (t, dir) => {
  const f = await setup(t, dir)
  await runCases(t, f, [
    ['no options', () => deleteSubvolume(f.parent), { code: 'ENOTEMPTY', path: f.parent }],
    ['recursive: false', () => deleteSubvolume(f.parent, { recursive: false }), { code: 'ENOTEMPTY', path: f.parent }],
  ])
})

btrfsTest('EXDEV: a snapshot across two btrfs filesystems', async (t, dir) => {
  const f = await setup(t, dir)
  const other = await extra()
  const dest = path.join(other.mnt, 'snap')
  await runCases(t, f, [['snapshot to another btrfs', () => snapshot(f.sv, dest), { code: 'EXDEV', path: f.sv, dest, syscall: 'BTRFS_IOC_SNAP_CREATE_V2' }]])
  t.deepEqual(await fsp.readdir(other.mnt), [])
})

btrfsTest('deleting the mounted top-level subvolume is refused (EBUSY or EINVAL), naming the path given', async (t, dir) => {
  const f = await setup(t, dir)
  const mnt = fs().mnt
  // The top-level subvolume where it is mounted: EBUSY (mounted) or EINVAL (top level).
  for (const recursive of [false, true]) {
    const before = await observe(mnt, [f.dir])
    const e = await t.throwsAsync(deleteSubvolume(mnt, { recursive }))
    t.true(e instanceof BtrfsError)
    t.true(['EBUSY', 'EINVAL'].includes((e as BtrfsError).code), `deleteSubvolume(mnt): ${e?.message}`)
    t.is((e as BtrfsError).path, mnt, 'the error names the path given')
    t.deepEqual(await observe(mnt, [f.dir]), before)
  }
  t.true(await isSubvolume(mnt))
})

btrfsTest('deleting a subvolume mounted on its own elsewhere (mount -o subvol=) is EBUSY', async (t, dir) => {
  const f = await setup(t, dir)
  const mnt = fs().mnt
  const elsewhere = await nonBtrfsDir()
  t.teardown(() => elsewhere.remove())
  const mp = path.join(elsewhere.dir, 'mp')
  await fsp.mkdir(mp)
  const [dev] = loopDevices(fs().image)
  await sh('mount', ['-o', `subvol=${path.relative(mnt, f.sv)}`, dev, mp])
  t.teardown(() => unmountIfMounted(mp))
  t.true(await isSubvolume(mp))
  await expectErrorNoChange(t, mnt, [f.dir], () => deleteSubvolume(mp, { recursive: true }), { code: 'EBUSY', path: mp })
  await unmountIfMounted(mp)
  t.true(await oracleIsSubvolume(f.sv))
})

// ---------------------------------------------------------------------------------------------
// Bad arguments: types and options
// ---------------------------------------------------------------------------------------------

/* eslint-disable @typescript-eslint/no-explicit-any */
btrfsTest('TypeError ERR_INVALID_ARG_TYPE: non-string paths, for every function and argument; nothing changes', async (t, dir) => {
  const f = await setup(t, dir)
  const dest = path.join(f.dir, 'dest')
  for (const bad of [undefined, null, 42, {}, ['x'], Buffer.from(f.sv), true, Symbol('p')] as any[]) {
    const n = typeof bad === 'symbol' ? 'symbol' : JSON.stringify(bad) ?? String(bad)
    const calls: [string, () => unknown][] = [
      [`isSubvolume(${n})`, () => isSubvolume(bad)],
      [`createSubvolume(${n})`, () => createSubvolume(bad)],
      [`snapshot(${n}, dest)`, () => snapshot(bad, dest)],
      [`snapshot(sv, ${n})`, () => snapshot(f.sv, bad)],
      [`deleteSubvolume(${n})`, () => deleteSubvolume(bad)],
      [`deleteSubvolume(${n}, recursive)`, () => deleteSubvolume(bad, { recursive: true })],
      [`subvolumeInfo(${n})`, () => subvolumeInfo(bad)],
      [`listSubvolumes(${n})`, () => listSubvolumes(bad)],
      [`isReadOnly(${n})`, () => isReadOnly(bad)],
      [`setReadOnly(${n})`, () => setReadOnly(bad, true)],
      [`sync(${n})`, () => sync(bad)],
      [`filesystemInfo(${n})`, () => filesystemInfo(bad)],
    ]
    for (const [label, call] of calls) await expectArgTypeNoChange(t, fs().mnt, [f.dir, f.nb], call, label)
  }
  // Node's wording, received value included.
  const e = await t.throwsAsync(isSubvolume(5 as any))
  t.is(e?.message, 'The "path" argument must be of type string. Received type number (5)')
  const s = await t.throwsAsync(snapshot(f.sv, dest, { readOnly: 'yes' } as any))
  t.is(s?.message, `The "options.readOnly" property must be of type boolean. Received type string ('yes')`)
})

btrfsTest('unknown option keys are EINVAL, badly typed options a TypeError; nothing changes', async (t, dir) => {
  const f = await setup(t, dir)
  const dest = path.join(f.dir, 'dest')
  const w: ExpectedError = { code: 'EINVAL', path: null }
  await runCases(t, f, [
    ['snapshot {readonly} (typo)', () => snapshot(f.sv, dest, { readonly: true } as any), w],
    ['snapshot {readOnly, extra}', () => snapshot(f.sv, dest, { readOnly: true, extra: 1 } as any), w],
    ['deleteSubvolume {recurse} (typo)', () => deleteSubvolume(f.parent, { recurse: true } as any), w],
    ['deleteSubvolume {Recursive}', () => deleteSubvolume(f.sv, { Recursive: true } as any), w],
  ])
  const wrongType: [string, () => unknown][] = [
    ['snapshot {readOnly: "true"}', () => snapshot(f.sv, dest, { readOnly: 'true' } as any)],
    ['snapshot {readOnly: 1}', () => snapshot(f.sv, dest, { readOnly: 1 } as any)],
    ['snapshot options null', () => snapshot(f.sv, dest, null as any)],
    ['snapshot options true', () => snapshot(f.sv, dest, true as any)],
    ['snapshot options "ro"', () => snapshot(f.sv, dest, 'ro' as any)],
    ['deleteSubvolume {recursive: "yes"}', () => deleteSubvolume(f.parent, { recursive: 'yes' } as any)],
    ['deleteSubvolume {recursive: 1}', () => deleteSubvolume(f.parent, { recursive: 1 } as any)],
    ['deleteSubvolume options null', () => deleteSubvolume(f.sv, null as any)],
    ['deleteSubvolume options true', () => deleteSubvolume(f.parent, true as any)],
    ['setReadOnly without a value', () => (setReadOnly as any)(f.sv)],
    ['setReadOnly "true"', () => setReadOnly(f.sv, 'true' as any)],
    ['setReadOnly 1', () => setReadOnly(f.sv, 1 as any)],
    ['setReadOnly null', () => setReadOnly(f.sv, null as any)],
  ]
  for (const [label, call] of wrongType) await expectArgTypeNoChange(t, fs().mnt, [f.dir, f.nb], call, label)
  t.false(await oracleReadOnly(f.sv))
})
/* eslint-enable @typescript-eslint/no-explicit-any */

btrfsTest('errors carry the shape of a Node fs error', async (t, dir) => {
  const f = await setup(t, dir)
  const e = await expectBtrfsError(t, subvolumeInfo(f.missing), { code: 'ENOENT', path: f.missing })
  t.is(e.errno, -os.constants.errno.ENOENT, 'negative, as in Node')
  t.is(e.syscall, 'open', 'the system call that failed')
  t.is(e.message, `ENOENT: No such file or directory, subvolumeInfo '${f.missing}'`, 'names the API call')
  t.true(e.message.startsWith('ENOENT'), e.message)
  t.true(e.message.includes(f.missing), e.message)
  t.true(typeof e.stack === 'string')
  const n = await expectBtrfsError(t, sync(f.nb), { code: 'ERR_NOT_BTRFS', path: f.nb })
  t.is(n.errno, undefined)
  // The syscall is the ioctl that failed; a two-path call names both paths, as Node's rename.
  await expectBtrfsError(t, createSubvolume(f.sv), { code: 'EEXIST', path: f.sv, syscall: 'BTRFS_IOC_SUBVOL_CREATE_V2' })
  const snap = await expectBtrfsError(t, snapshot(f.sv, f.sv), { code: 'EEXIST', path: f.sv, dest: f.sv, syscall: 'BTRFS_IOC_SNAP_CREATE_V2' })
  t.is(snap.errno, -os.constants.errno.EEXIST)
  const other = path.join(f.dir, 'other-snap')
  await snapshot(f.sv, other)
  const twice = await expectBtrfsError(t, snapshot(f.sv, other), { code: 'EEXIST', path: f.sv, dest: other })
  t.is(twice.message, `EEXIST: file already exists, snapshot '${f.sv}' -> '${other}'`)
  await deleteSubvolume(other)
  await expectBtrfsError(t, deleteSubvolume(f.parent), { code: 'ENOTEMPTY', path: f.parent, syscall: /SNAP_DESTROY/ })
})
