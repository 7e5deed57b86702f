/**
 * Aborting diffs, busy layers and progress, on a real btrfs: applyDiff aborted through an
 * AbortSignal in the middle of a slow stream (and of a fifo given as a path) rejects with
 * ABORT_ERR and leaves the layer exactly as it was, with no temporary subvolume left; a diff
 * stream aborted (or destroyed) half-way errors or closes without taking the process down, and
 * the driver keeps working; applyDiff into a layer held by get() is EBUSY; onProgress counts
 * up to the size of an uncompressed stream.
 */
import test, { type ExecutionContext } from 'ava'
import { randomBytes } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import { gzipSync } from 'node:zlib'
import { BtrfsDriver, BtrfsError } from '../ts/index'
import { useBtrfs } from './helpers/btrfs'
import { collectDriversBeforeTeardown, rejectsCode } from './helpers/driver-util'
import { inLayer, layerSnapshot, run } from './helpers/diff-fixtures'
import { BLOCK, END, buildTar, collect, entryBytes, file, header } from './helpers/diff-tar'
import { compareTrees } from './helpers/diff-tree'

collectDriversBeforeTeardown(test)

const drivers: BtrfsDriver[] = []
test.after.always(async () => {
  for (const d of drivers) await d.cleanup().catch(() => undefined)
})

const { btrfsTest } = useBtrfs(test, { size: 4 * 1024 * 1024 * 1024, tools: ['getfattr', 'tar'] })

/** A store in `dir` with a layer `base` holding a few files, and `id` on top of it. */
async function store(dir: string, id: string): Promise<BtrfsDriver> {
  const d = await BtrfsDriver.init(path.join(dir, 'home'))
  drivers.push(d)
  await d.create('base')
  await inLayer(d, 'base', async (p) => {
    await fsp.writeFile(path.join(p, 'kept'), 'lower\n')
    await fsp.mkdir(path.join(p, 'dir'))
    await fsp.writeFile(path.join(p, 'dir/file'), 'lower file\n')
  })
  await d.create(id, 'base')
  return d
}

const MIB = 1 << 20
const PATTERN = randomBytes(MIB)

/** A tar of `files` files of `each` bytes (chunks of one random MiB), plus a whiteout of a lower file. */
function* bigTar(files: number, each: number): Generator<Buffer> {
  yield entryBytes(file('.wh.kept'))
  for (let i = 0; i < files; i++) {
    yield header({ name: `big/f${i}`, type: '0', size: each })
    for (let o = 0; o < each; o += MIB) yield PATTERN.subarray(0, Math.min(MIB, each - o))
    if (each % BLOCK) yield Buffer.alloc(BLOCK - (each % BLOCK))
  }
  yield END
}

/** The same, as a slow Readable of 256 KiB chunks; calls `at(bytes)` after each chunk. */
function slowTar(files: number, each: number, at: (bytes: number) => void): Readable {
  async function* gen() {
    let n = 0
    for (const b of bigTar(files, each)) {
      for (let o = 0; o < b.length; o += 256 << 10) {
        const c = b.subarray(o, o + (256 << 10))
        n += c.length
        yield c
        at(n)
        await new Promise((r) => setTimeout(r, 2))
      }
    }
  }
  return Readable.from(gen())
}

const leftovers = async (d: BtrfsDriver) => (await fsp.readdir(path.join(d.home, 'subvolumes'))).filter((n) => n.startsWith('.'))

async function unchanged(t: ExecutionContext, d: BtrfsDriver, id: string, before: Awaited<ReturnType<typeof layerSnapshot>>, what: string) {
  t.deepEqual(compareTrees(before, await layerSnapshot(d, id), { rootMtime: true }), [], `${what}: the layer is exactly as before`)
  t.deepEqual(await leftovers(d), [], `${what}: no temporary subvolume left`)
}

btrfsTest('abort: applyDiff aborted in the middle of a slow stream rejects with ABORT_ERR and leaves the layer unchanged', async (t, dir) => {
  const d = await store(dir, 'layer')
  const before = await layerSnapshot(d, 'layer')
  const ac = new AbortController()
  let fed = 0
  const progress: number[] = []
  const started = Date.now()
  const input = slowTar(16, 4 * MIB, (n) => {
    fed = n
    if (n >= 6 * MIB && !ac.signal.aborted) ac.abort()
  })
  const e = await rejectsCode(t, d.applyDiff('layer', 'base', input, { signal: ac.signal, onProgress: (n) => progress.push(n) }), 'ABORT_ERR', 'aborted apply')
  t.true(e instanceof BtrfsError)
  t.log(`fed ${fed} bytes, progress ${progress.join(', ')}`)
  t.true(fed < 20 * MIB, `stopped reading soon after the abort (fed ${fed} bytes of 64 MiB)`)
  t.true(Date.now() - started < 30_000)
  for (let i = 1; i < progress.length; i++) t.true(progress[i] >= progress[i - 1], 'progress never goes back')
  await unchanged(t, d, 'layer', before, 'after the abort')
  // The driver still works: the whole stream applies.
  const applied = await d.applyDiff('layer', 'base', Readable.from(bigTar(3, 2 * MIB)))
  t.is(applied, 6 * MIB)
  const got = await layerSnapshot(d, 'layer')
  t.false(got.entries.has('kept'), 'the whiteout applied')
  t.is(got.entries.get('big/f2')?.size, 2 * MIB)
})

btrfsTest('abort: an already aborted signal rejects at once and changes nothing', async (t, dir) => {
  const d = await store(dir, 'layer')
  const before = await layerSnapshot(d, 'layer')
  const signal = AbortSignal.abort()
  await rejectsCode(t, d.applyDiff('layer', 'base', buildTar([file('x', 'y')]), { signal }), 'ABORT_ERR', 'applyDiff')
  await rejectsCode(t, d.diff('layer', undefined, { signal }), 'ABORT_ERR', 'diff')
  await unchanged(t, d, 'layer', before, 'pre-aborted')
})

btrfsTest('abort: applyDiff of a path that is a fifo, aborted while the native side waits for data', async (t, dir) => {
  const d = await store(dir, 'layer')
  const before = await layerSnapshot(d, 'layer')
  const fifo = path.join(dir, 'layer.fifo')
  await run('mkfifo', fifo)
  const ac = new AbortController()
  const applying = d.applyDiff('layer', 'base', fifo, { signal: ac.signal })
  applying.catch(() => undefined)
  const out = createWriteStream(fifo)
  let written = 0
  for (const b of bigTar(8, 4 * MIB)) {
    if (!out.write(b)) await new Promise<void>((r) => out.once('drain', () => r()))
    written += b.length
    if (written >= 6 * MIB) break
  }
  ac.abort()
  // The reader may sit in read(2): end the stream so that it wakes up.
  await new Promise((r) => setTimeout(r, 200))
  out.end()
  await rejectsCode(t, applying, 'ABORT_ERR', 'aborted apply of a fifo')
  await unchanged(t, d, 'layer', before, 'after the fifo abort')
})

btrfsTest('abort: a diff stream aborted half-way errors (or closes) without a crash; the driver keeps working', async (t, dir) => {
  const d = await store(dir, 'big')
  await inLayer(d, 'big', async (p) => {
    for (let i = 0; i < 4; i++) await fsp.writeFile(path.join(p, `blob${i}`), randomBytes(16 * MIB))
  })
  const ac = new AbortController()
  const stream = await d.diff('big', undefined, { signal: ac.signal })
  let got = 0
  let err: unknown
  try {
    for await (const c of stream) {
      got += (c as Buffer).length
      if (got >= 4 * MIB && !ac.signal.aborted) ac.abort()
    }
  } catch (e) {
    err = e
  }
  t.log(`read ${got} bytes; ${err === undefined ? 'closed' : `error ${String(err)}`}`)
  t.true(got < 64 * MIB, `the stream stopped before its end (${got} bytes read)`)
  if (err !== undefined) t.is((err as BtrfsError).code, 'ABORT_ERR', `stream error: ${String(err)}`)
  t.true(stream.destroyed)

  // A stream its reader walks away from (destroyed without a signal).
  const second = await d.diff('big', undefined, { compression: 'gzip' })
  await new Promise<void>((resolve) => {
    second.once('data', () => {
      second.destroy()
      resolve()
    })
  })
  await new Promise((r) => setTimeout(r, 200))

  // Still works: a complete diff, and it applies.
  const full = await collect(await d.diff('big'))
  t.true(full.length > 64 * MIB)
  await d.create('copy', 'base')
  t.is(await d.applyDiff('copy', 'base', full), 64 * MIB)
  t.deepEqual(compareTrees(await layerSnapshot(d, 'big'), await layerSnapshot(d, 'copy')), [])
  // The read-only snapshots the diffs took of the writable layer are gone.
  for (let i = 0; i < 50 && (await leftovers(d)).length > 0; i++) await new Promise((r) => setTimeout(r, 100))
  t.deepEqual(await leftovers(d), [], 'no temporary snapshot left behind')
})

btrfsTest('busy: applyDiff into a layer held by get() is EBUSY and changes nothing; after put it applies', async (t, dir) => {
  const d = await store(dir, 'held')
  const before = await layerSnapshot(d, 'held')
  const p = await d.get('held')
  try {
    const tar = buildTar([file('new', 'data')])
    await rejectsCode(t, d.applyDiff('held', 'base', tar), 'EBUSY', 'held layer')
    await rejectsCode(t, d.applyDiff('held', 'base', Readable.from([tar])), 'EBUSY', 'held layer, stream input')
    t.false(await fsp.access(path.join(p, 'new')).then(() => true, () => false))
  } finally {
    await d.put('held')
  }
  await unchanged(t, d, 'held', before, 'EBUSY')
  t.is(await d.applyDiff('held', 'base', buildTar([file('new', 'data')])), 4)
})

btrfsTest('progress: onProgress increases and ends at the size of an uncompressed stream (Buffer, Readable, path, GNU tar padding)', async (t, dir) => {
  const d = await store(dir, 'layer')
  const tar = Buffer.concat([...bigTar(6, 3 * MIB + 123)])
  const gnuDir = path.join(dir, 'gnu-src')
  await fsp.mkdir(gnuDir)
  await fsp.writeFile(path.join(gnuDir, 'a'), randomBytes(5 * MIB + 7))
  const gnuTar = path.join(dir, 'gnu.tar')
  await run('tar', '-C', gnuDir, '-cf', gnuTar, '.')
  const gnuSize = (await fsp.stat(gnuTar)).size
  t.is(gnuSize % 10240, 0, 'GNU tar pads to its record size')
  const inputs: [string, () => Buffer | string | Readable, number, number][] = [
    ['Buffer', () => tar, tar.length, 6 * (3 * MIB + 123)],
    ['Readable', () => Readable.from(bigTar(6, 3 * MIB + 123)), tar.length, 6 * (3 * MIB + 123)],
    ['path of a GNU tar', () => gnuTar, gnuSize, 5 * MIB + 7],
    ['gzip Buffer (counts the uncompressed tar)', () => gzipSync(tar, { level: 1 }), tar.length, 6 * (3 * MIB + 123)],
  ]
  for (const [i, [what, input, size, bodies]] of inputs.entries()) {
    const id = `progress${i}`
    await d.create(id, 'base')
    const seen: number[] = []
    const applied = await d.applyDiff(id, 'base', input(), { onProgress: (n) => seen.push(n) })
    t.is(applied, bodies, `${what}: bytes of file content applied`)
    t.true(seen.length >= 1, `${what}: called`)
    for (let k = 1; k < seen.length; k++) t.true(seen[k] > seen[k - 1], `${what}: strictly increasing (${seen[k - 1]} then ${seen[k]})`)
    t.is(seen[seen.length - 1], size, `${what}: ends at the stream size`)
    t.true(seen.every((n) => n <= size), `${what}: never beyond the stream`)
  }
})
