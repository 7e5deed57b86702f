/**
 * `changes` and `diffSize` on targeted cases, on a real btrfs. The rules (issue 4, as container
 * engines have them): an entry is modified when its type, mode, uid, gid, rdev or
 * security.capability differ, or (not for directories) its size or mtime; the directory
 * holding an added or deleted entry is modified (the root is never reported); below an added
 * directory every entry is added; below a deleted directory only the directory itself is
 * reported. `diffSize` counts the bytes of added and modified regular files, each inode once,
 * deletions not at all. Layers are changed with the kernel and the usual tools.
 */
import test from 'ava'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { BtrfsDriver, type Change } from '../ts/index'
import { useBtrfs } from './helpers/btrfs'
import { collectDriversBeforeTeardown, rejectsCode } from './helpers/driver-util'
import { inLayer, layerSnapshot, run, stampTimes } from './helpers/diff-fixtures'
import { setMtimeNs } from './helpers/diff-tree'

collectDriversBeforeTeardown(test)

let shared: Promise<BtrfsDriver> | undefined
test.after.always(async () => {
  const d = await shared?.catch(() => undefined)
  await d?.cleanup()
})

const { btrfsTest, fs } = useBtrfs(test, { tools: ['getfattr', 'setfattr', 'setcap'] })

const driver = (): Promise<BtrfsDriver> => {
  shared ??= (async () => {
    const home = path.join(fs().mnt, 'changes-home')
    return BtrfsDriver.init(home)
  })()
  return shared
}

/** The lower tree of every case. */
async function lowerTree(p: string): Promise<void> {
  await fsp.writeFile(path.join(p, 'f'), 'data\n')
  await fsp.mkdir(path.join(p, 'd/sub'), { recursive: true })
  await fsp.writeFile(path.join(p, 'd/g'), 'g\n')
  await fsp.writeFile(path.join(p, 'd/sub/h'), 'h\n')
  await fsp.mkdir(path.join(p, 'e'))
  await fsp.symlink('f', path.join(p, 'l'))
  await run('mkfifo', path.join(p, 'fifo'))
  await run('mknod', path.join(p, 'dev'), 'c', '1', '3')
  await fsp.writeFile(path.join(p, 'capf'), 'cap\n')
  await run('setcap', 'cap_net_raw+ep', path.join(p, 'capf'))
  await stampTimes(p)
}

/** Keep the mtime of `p` across `fn`. */
async function keepingMtime(p: string, fn: () => Promise<unknown>): Promise<void> {
  const st = await fsp.lstat(p, { bigint: true })
  await fn()
  await setMtimeNs(p, st.mtimeNs)
}

const A = (p: string): Change => ({ path: p, kind: 'add' })
const M = (p: string): Change => ({ path: p, kind: 'modify' })
const D = (p: string): Change => ({ path: p, kind: 'delete' })

interface Case {
  name: string
  upper: (p: string) => Promise<unknown>
  want: Change[]
  /** diffSize; computed from the changes and the tree when omitted. */
  size?: number
}

const w = (p: string, rel: string, data: string) => fsp.writeFile(path.join(p, rel), data)

const CASES: Case[] = [
  { name: 'nothing changed', upper: async () => {}, want: [], size: 0 },
  { name: 'a file added at the root (the root is never reported)', upper: (p) => w(p, 'new', '12345'), want: [A('/new')], size: 5 },
  { name: 'a file added in a directory modifies the directory', upper: (p) => w(p, 'd/new', 'abc'), want: [M('/d'), A('/d/new')], size: 3 },
  { name: 'a deep addition modifies only its own directory', upper: (p) => w(p, 'd/sub/new', 'x'), want: [M('/d/sub'), A('/d/sub/new')], size: 1 },
  { name: 'a deleted file modifies its directory and counts no bytes', upper: (p) => fsp.rm(path.join(p, 'd/g')), want: [M('/d'), D('/d/g')], size: 0 },
  { name: 'a deleted directory is reported alone', upper: (p) => fsp.rm(path.join(p, 'd'), { recursive: true }), want: [D('/d')], size: 0 },
  {
    name: 'an added directory tree: every entry added',
    upper: async (p) => {
      await fsp.mkdir(path.join(p, 'n/a/b'), { recursive: true })
      await w(p, 'n/a/b/f', '1234')
      await w(p, 'n/top', '12')
    },
    want: [A('/n'), A('/n/a'), A('/n/a/b'), A('/n/a/b/f'), A('/n/top')],
    size: 6,
  },
  { name: 'chmod of a file', upper: (p) => fsp.chmod(path.join(p, 'f'), 0o600), want: [M('/f')], size: 5 },
  { name: 'setuid bit alone', upper: (p) => fsp.chmod(path.join(p, 'f'), 0o4644), want: [M('/f')] },
  { name: 'chmod of a directory', upper: (p) => fsp.chmod(path.join(p, 'd'), 0o700), want: [M('/d')], size: 0 },
  { name: 'uid of a file', upper: (p) => fsp.chown(path.join(p, 'f'), 1234, 0), want: [M('/f')] },
  { name: 'gid of a file', upper: (p) => fsp.chown(path.join(p, 'f'), 0, 5678), want: [M('/f')] },
  { name: 'owner of a directory', upper: (p) => fsp.chown(path.join(p, 'e'), 1, 1), want: [M('/e')] },
  { name: 'owner of a symlink', upper: (p) => fsp.lchown(path.join(p, 'l'), 7, 7), want: [M('/l')], size: 0 },
  { name: 'mtime of a file', upper: (p) => setMtimeNs(path.join(p, 'f'), 1_000_000_000_000_000_001n), want: [M('/f')] },
  { name: 'mtime nanoseconds of a file', upper: async (p) => setMtimeNs(path.join(p, 'f'), (await fsp.lstat(path.join(p, 'f'), { bigint: true })).mtimeNs + 1n), want: [M('/f')] },
  { name: 'mtime of a directory alone is not a change', upper: (p) => setMtimeNs(path.join(p, 'd'), 1_000_000_000_000_000_000n), want: [], size: 0 },
  {
    name: 'size of a file with the mtime kept',
    upper: (p) => keepingMtime(path.join(p, 'f'), () => w(p, 'f', 'longer data\n')),
    want: [M('/f')],
    size: 12,
  },
  {
    name: 'content of the same size with the mtime kept is not a change (by the rules)',
    upper: (p) => keepingMtime(path.join(p, 'f'), () => w(p, 'f', 'DATA\n')),
    want: [],
  },
  { name: 'a user xattr alone is not a change', upper: (p) => run('setfattr', '-n', 'user.x', '-v', '1', path.join(p, 'f')), want: [] },
  { name: 'security.capability added', upper: (p) => run('setcap', 'cap_sys_time+ep', path.join(p, 'f')), want: [M('/f')] },
  { name: 'security.capability changed', upper: (p) => run('setcap', 'cap_sys_admin+ep', path.join(p, 'capf')), want: [M('/capf')] },
  { name: 'security.capability removed', upper: (p) => run('setcap', '-r', path.join(p, 'capf')), want: [M('/capf')] },
  {
    name: 'rdev of a device with the mtime kept',
    upper: async (p) => {
      const st = await fsp.lstat(path.join(p, 'dev'), { bigint: true })
      await fsp.rm(path.join(p, 'dev'))
      await run('mknod', path.join(p, 'dev'), 'c', '1', '5')
      await setMtimeNs(path.join(p, 'dev'), st.mtimeNs)
    },
    want: [M('/dev')],
    size: 0,
  },
  {
    name: 'type: file to symlink',
    upper: async (p) => {
      await fsp.rm(path.join(p, 'f'))
      await fsp.symlink('d', path.join(p, 'f'))
    },
    want: [M('/f')],
    size: 0,
  },
  {
    name: 'type: directory to file',
    upper: async (p) => {
      await fsp.rm(path.join(p, 'd'), { recursive: true })
      await w(p, 'd', 'now a file')
    },
    want: [M('/d')],
    size: 10,
  },
  {
    name: 'type: file to directory with children',
    upper: async (p) => {
      await fsp.rm(path.join(p, 'f'))
      await fsp.mkdir(path.join(p, 'f'))
      await w(p, 'f/x', 'xx')
    },
    want: [M('/f'), A('/f/x')],
    size: 2,
  },
  {
    name: 'type: fifo to file',
    upper: async (p) => {
      await fsp.rm(path.join(p, 'fifo'))
      await w(p, 'fifo', 'file')
    },
    want: [M('/fifo')],
  },
  {
    name: 'symlink target changed',
    upper: async (p) => {
      await fsp.rm(path.join(p, 'l'))
      await fsp.symlink('d/sub/h', path.join(p, 'l'))
    },
    want: [M('/l')],
    size: 0,
  },
  { name: 'a new hardlink to an unchanged file: only the new name', upper: (p) => fsp.link(path.join(p, 'd/g'), path.join(p, 'e/g-link')), want: [M('/e'), A('/e/g-link')], size: 2 },
  {
    name: 'two new names of one new inode count once',
    upper: async (p) => {
      await w(p, 'e/one', '0123456789')
      await fsp.link(path.join(p, 'e/one'), path.join(p, 'e/two'))
      await fsp.link(path.join(p, 'e/one'), path.join(p, 'three'))
    },
    want: [M('/e'), A('/e/one'), A('/e/two'), A('/three')],
    size: 10,
  },
  {
    name: 'a rename is a delete and an add',
    upper: (p) => fsp.rename(path.join(p, 'd/g'), path.join(p, 'd/g2')),
    want: [M('/d'), D('/d/g'), A('/d/g2')],
    size: 2,
  },
  {
    name: 'special files added and deleted',
    upper: async (p) => {
      await fsp.rm(path.join(p, 'fifo'))
      await run('mkfifo', path.join(p, 'e/fifo2'))
      await run('mknod', path.join(p, 'e/blk'), 'b', '7', '1')
    },
    want: [M('/e'), A('/e/blk'), A('/e/fifo2'), D('/fifo')],
    size: 0,
  },
  {
    name: 'sorted component-wise, parents before children',
    upper: async (p) => {
      await fsp.mkdir(path.join(p, 'a/y'), { recursive: true })
      await w(p, 'a/x', '')
      await w(p, 'a/y/z', '')
      await w(p, 'a.b', '')
      await w(p, 'a-c', '')
      await w(p, 'A', '')
    },
    want: [A('/A'), A('/a'), A('/a/x'), A('/a/y'), A('/a/y/z'), A('/a-c'), A('/a.b')],
    size: 0,
  },
]

for (const [i, c] of CASES.entries()) {
  btrfsTest(`changes #${i + 1}: ${c.name}`, async (t) => {
    const d = await driver()
    const lower = `lower${i}`
    const upper = `upper${i}`
    await d.create(lower)
    await inLayer(d, lower, lowerTree)
    await d.create(upper, lower)
    await inLayer(d, upper, c.upper)
    const got = await d.changes(upper)
    t.deepEqual(got, c.want, 'changes against the recorded parent')
    t.deepEqual(await d.changes(upper, lower), got, 'the same against the explicit parent')
    // diffSize: the stated figure, and the oracle from the tree (each inode of an added or
    // modified regular file once).
    const tree = await layerSnapshot(d, upper)
    const seen = new Set<string>()
    let oracle = 0
    for (const ch of got) {
      const e = tree.entries.get(ch.path.slice(1))
      if (ch.kind !== 'delete' && e?.type === 'file' && !seen.has(e.ino)) {
        seen.add(e.ino)
        oracle += e.size ?? 0
      }
    }
    const size = await d.diffSize(upper)
    t.is(size, oracle, 'diffSize equals the bytes of added/modified regular files, inodes once')
    if (c.size !== undefined) t.is(size, c.size, 'diffSize')
    await d.remove(upper)
    await d.remove(lower)
  })
}

btrfsTest('changes: no parent (null or empty) lists every entry as added; the recorded parent is the default', async (t) => {
  const d = await driver()
  await d.create('whole-lower')
  await inLayer(d, 'whole-lower', lowerTree)
  await d.create('whole', 'whole-lower')
  await inLayer(d, 'whole', (p) => w(p, 'added', 'x'))
  const tree = await layerSnapshot(d, 'whole')
  const all = [...tree.entries.keys()].filter((k) => k !== '.').map((k) => `/${k}`)
  const want = all.sort((a, b) => {
    const x = a.split('/')
    const y = b.split('/')
    for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] < y[i] ? -1 : 1
    return x.length - y.length
  })
  for (const parent of [null, ''] as const) {
    const got = await d.changes('whole', parent)
    t.deepEqual(got, want.map(A), `parent ${JSON.stringify(parent)}`)
  }
  // A base layer's recorded parent is none: the whole layer.
  t.deepEqual(await d.changes('whole-lower'), (await d.changes('whole-lower', null)))
  t.deepEqual(await d.changes('whole'), [A('/added')])
  // diffSize of the whole layer: every regular inode once.
  const seen = new Set<string>()
  let total = 0
  for (const e of tree.entries.values()) {
    if (e.type === 'file' && !seen.has(e.ino)) {
      seen.add(e.ino)
      total += e.size ?? 0
    }
  }
  t.is(await d.diffSize('whole', null), total)
  t.is(await d.diffSize('whole'), 1)
  // Against an unrelated layer: the difference of the two trees all the same.
  await d.create('other')
  await inLayer(d, 'other', (p) => w(p, 'f', 'data\n'))
  const vsOther = await d.changes('whole', 'other')
  t.deepEqual(
    vsOther.filter((c) => ['/added', '/d', '/f'].includes(c.path)),
    [A('/added'), A('/d'), M('/f')],
    'an unrelated parent: compared by the rules (same bytes, other mtime: modified)',
  )
})

btrfsTest('changes and diffSize stop with ABORT_ERR when their signal aborts, before or during the call', async (t) => {
  const d = await driver()
  await d.create('abort-big')
  await inLayer(d, 'abort-big', async (p) => {
    for (let i = 0; i < 200; i++) {
      const dir = path.join(p, `d${i}`)
      await fsp.mkdir(dir)
      await Promise.all(Array.from({ length: 25 }, (_, k) => fsp.writeFile(path.join(dir, `f${k}`), 'x')))
    }
  })
  // The whole layer is compared by the walk, directory by directory: 5,200 entries.
  t.is((await d.changes('abort-big', null)).length, 5200)
  t.is(await d.diffSize('abort-big', null), 5000)
  const gone = new AbortController()
  gone.abort()
  await rejectsCode(t, d.changes('abort-big', null, { signal: gone.signal }), 'ABORT_ERR', 'an aborted signal')
  await rejectsCode(t, d.diffSize('abort-big', null, { signal: gone.signal }), 'ABORT_ERR', 'an aborted signal')
  for (const call of [
    (signal: AbortSignal) => d.changes('abort-big', null, { signal }),
    (signal: AbortSignal) => d.diffSize('abort-big', null, { signal }),
  ]) {
    const ac = new AbortController()
    // The call has started its native walk (on a thread of its own) when it returns; aborting
    // at once stops it mid-walk. (A setImmediate could come after a 5,200-entry walk ended.)
    const pending = call(ac.signal)
    ac.abort()
    await rejectsCode(t, pending, 'ABORT_ERR', 'aborted while walking')
  }
  await rejectsCode(t, d.changes('abort-big', null, { signal: 'no' as never }), 'ERR_INVALID_ARG_TYPE', 'a signal that is not an AbortSignal')
  await rejectsCode(t, d.changes('abort-big', null, { sginal: gone.signal } as never), 'EINVAL', 'an unknown option')
  t.is((await d.changes('abort-big', null, { signal: new AbortController().signal })).length, 5200, 'a signal never aborted')
})

btrfsTest('changes, diffSize and diff of a missing layer or parent: ENOENT; bad ids: EINVAL', async (t) => {
  const d = await driver()
  await d.create('exists')
  await rejectsCode(t, d.changes('missing'), 'ENOENT', 'changes of a missing layer')
  await rejectsCode(t, d.changes('exists', 'missing'), 'ENOENT', 'changes against a missing parent')
  await rejectsCode(t, d.diffSize('missing'), 'ENOENT', 'diffSize of a missing layer')
  await rejectsCode(t, d.diffSize('exists', 'missing'), 'ENOENT', 'diffSize against a missing parent')
  await rejectsCode(t, d.diff('missing'), 'ENOENT', 'diff of a missing layer')
  await rejectsCode(t, d.applyDiff('missing', null, Buffer.alloc(1024)), 'ENOENT', 'applyDiff to a missing layer')
  await rejectsCode(t, d.applyDiff('exists', 'missing', Buffer.alloc(1024)), 'ENOENT', 'applyDiff with a missing parent')
  await rejectsCode(t, d.applyDiff('exists', null, path.join(fs().mnt, 'no-such-layer.tar')), 'ENOENT', 'applyDiff of a missing file')
  t.deepEqual(await d.changes('exists', null), [], 'nothing was applied')
  await rejectsCode(t, d.changes('../x'), 'EINVAL', 'changes with a bad id')
  await rejectsCode(t, d.diff('exists', undefined, { compression: 'lz4' as never }), 'EINVAL', 'unknown compression')
  await rejectsCode(t, d.applyDiff('exists', null, 42 as never), 'ERR_INVALID_ARG_TYPE', 'input of the wrong type')
})
