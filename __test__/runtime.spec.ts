/**
 * The runtime contract: a Rust panic becomes a rejected promise (ERR_INTERNAL) and never takes
 * the process down; no call blocks the event loop (invariant 5).
 */
import test, { type ExecutionContext } from 'ava'
import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { performance } from 'node:perf_hooks'
import {
  BtrfsError,
  createSubvolume,
  deleteSubvolume,
  filesystemInfo,
  isSubvolume,
  listSubvolumes,
  snapshot,
  subvolumeInfo,
} from '../ts/index'
import type { NativeError } from '../native/index'
import { fromNative } from '../ts/errors'
import { exists, expectBtrfsError, fill, mkSubvol, oracleBelow, oracleShow, useBtrfs } from './helpers/btrfs'

const { btrfsTest, fs } = useBtrfs(test)

// The deliberate panics below need no backtraces in the test output.
process.env.RUST_BACKTRACE = '0'

// eslint-disable-next-line @typescript-eslint/no-require-imports
const native = require('../native/index.js') as typeof import('../native/index')

// ---------------------------------------------------------------------------------------------
// Panics (no btrfs needed)
// ---------------------------------------------------------------------------------------------

test('a panic in native code rejects the promise with ERR_INTERNAL; the process keeps working', async (t) => {
  const p = native.__panicForTest()
  t.true(p instanceof Promise, 'returns a promise, does not throw')
  const raw = await t.throwsAsync(p)
  const e = fromNative(raw, '__panicForTest') as BtrfsError
  t.true(e instanceof BtrfsError)
  t.is(e.code, 'ERR_INTERNAL')
  t.regex(e.message, /panic/)
  t.is(e.errno, undefined)

  // Many at once, more than the libuv pool has threads: none takes a pool thread down.
  const many = await Promise.allSettled(Array.from({ length: 16 }, () => native.__panicForTest()))
  for (const r of many) {
    t.is(r.status, 'rejected')
    if (r.status === 'rejected') t.is((fromNative(r.reason, '__panicForTest') as BtrfsError).code, 'ERR_INTERNAL')
  }

  // The process and the thread pool still work: real calls give typed answers.
  const after = await Promise.allSettled(Array.from({ length: 8 }, () => filesystemInfo('/proc')))
  for (const r of after) {
    t.is(r.status, 'rejected')
    if (r.status === 'rejected') {
      t.true(r.reason instanceof BtrfsError)
      t.is(r.reason.code, 'ERR_NOT_BTRFS')
    }
  }
  await expectBtrfsError(t, isSubvolume('/proc'), { code: 'ERR_NOT_BTRFS', path: '/proc' })
})

test('a native failure is an Error object built in Rust (no JSON); fromNative makes it a BtrfsError and passes foreign errors on', async (t) => {
  const raw = (await t.throwsAsync(native.isSubvolume('/nonexistent-btrfs-layers/x'))) as unknown as NativeError
  t.is(raw.name, 'BtrfsNativeError')
  t.is(raw.code, 'ENOENT')
  t.is(raw.errno, -os.constants.errno.ENOENT, 'negative, as in Node')
  t.is(raw.syscall, 'stat')
  t.is(raw.operation, 'isSubvolume')
  t.is(raw.path, '/nonexistent-btrfs-layers/x')
  t.is(raw.message, 'No such file or directory', 'the message is text, not a JSON record')
  const e = fromNative(raw, 'isSubvolume') as BtrfsError
  t.true(e instanceof BtrfsError)
  t.is(e.message, "ENOENT: No such file or directory, isSubvolume '/nonexistent-btrfs-layers/x'")
  // A synchronous call throws the same kind of object.
  const foreign = new Error('from an input stream')
  t.is(fromNative(foreign, 'applyDiff'), foreign, 'an error that is not ours goes on as it is')
  const same = new BtrfsError('ENOENT', 'ENOENT: x', { errno: -2, syscall: 'open', path: '/x' })
  t.is(fromNative(same, 'x'), same)
})

btrfsTest('after native panics, real btrfs calls still work', async (t, dir) => {
  await Promise.allSettled(Array.from({ length: 8 }, () => native.__panicForTest()))
  const p = path.join(dir, 'after-panic')
  await createSubvolume(p)
  t.true(await isSubvolume(p))
  t.is((await subvolumeInfo(p)).id, (await oracleShow(p)).id)
})

// ---------------------------------------------------------------------------------------------
// The event loop keeps turning
// ---------------------------------------------------------------------------------------------

/**
 * Run `op` while a 1 ms interval ticks. A call that did its work on the main thread would
 * return only when done, and no tick could happen before its promise settles.
 */
async function whileTicking(t: ExecutionContext, op: () => Promise<unknown>) {
  let ticks = 0
  let settled = false
  let ticksBeforeSettle = 0
  const iv = setInterval(() => {
    ticks++
    if (!settled) ticksBeforeSettle++
  }, 1)
  try {
    const t0 = performance.now()
    const p = op()
    const syncMs = performance.now() - t0
    await p
    settled = true
    const totalMs = performance.now() - t0
    t.log(`call returned after ${syncMs.toFixed(2)} ms, settled after ${totalMs.toFixed(1)} ms, ${ticksBeforeSettle} ticks meanwhile`)
    t.true(totalMs > 20, `workload too small to tell (${totalMs.toFixed(1)} ms)`)
    t.true(syncMs < totalMs / 4, `the call returned only after ${syncMs.toFixed(1)} of ${totalMs.toFixed(1)} ms`)
    t.true(ticksBeforeSettle >= 3, `only ${ticksBeforeSettle} timer ticks during ${totalMs.toFixed(1)} ms`)
  } finally {
    clearInterval(iv)
  }
  void ticks
}

btrfsTest('a recursive delete of many nested subvolumes does not block the event loop', async (t, dir) => {
  const root = path.join(dir, 'root')
  await createSubvolume(root)
  const paths: string[] = []
  for (let d = 0; d < 6; d++) {
    await fsp.mkdir(path.join(root, `dir${d}`))
    for (let i = 0; i < 250; i++) paths.push(path.join(root, `dir${d}`, `s${i}`))
  }
  for (let i = 0; i < paths.length; i += 100) await Promise.all(paths.slice(i, i + 100).map((p) => createSubvolume(p)))
  // and some depth
  let chain = path.join(root, 'chain')
  for (let i = 0; i < 10; i++) {
    await createSubvolume(chain)
    chain = path.join(chain, 'next')
  }
  t.is((await listSubvolumes(root)).length, paths.length + 10)
  await whileTicking(t, () => deleteSubvolume(root, { recursive: true }))
  t.false(await exists(root))
  t.deepEqual(await oracleBelow(fs().mnt, dir), [])
})

btrfsTest('many concurrent snapshots do not block the event loop', async (t, dir) => {
  const src = path.join(dir, 'src')
  await mkSubvol(src)
  await fill(src, 10)
  const n = 96
  await whileTicking(t, () =>
    Promise.all(Array.from({ length: n }, (_, i) => snapshot(src, path.join(dir, `snap${i}`), { readOnly: i % 2 === 0 }))),
  )
  const uuid = (await oracleShow(src)).uuid
  const below = await oracleBelow(fs().mnt, dir)
  t.is(below.length, n + 1)
  for (const i of [0, 1, n - 1]) {
    const s = await oracleShow(path.join(dir, `snap${i}`))
    t.is(s.parentUuid, uuid)
    t.is(s.flags, i % 2 === 0 ? 'readonly' : '-')
  }
})
