/**
 * Layer blobs with their digests, on a real btrfs: `applyLayer` and `applyDiff(..., { create:
 * true })` make a new layer atomically (no layer visible while the stream applies: checked
 * with `exists` and `btrfs subvolume list` from the onProgress callback), with the sha256 of
 * the blob and of its uncompressed tar equal to what `sha256sum`, `gzip -dc` and `zstd -dc`
 * say; a wrong digest, an abort or a SIGKILL of the applying process leaves no layer; `diff(...,
 * { digests: true })` gives the digests of the bytes it wrote and of the tar before compression.
 */
import test, { type ExecutionContext } from 'ava'
import { spawn } from 'node:child_process'
import { createReadStream, createWriteStream } from 'node:fs'
import { createHash } from 'node:crypto'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { gzipSync } from 'node:zlib'
import { BtrfsDriver, BtrfsError, type Compression } from '../ts/index'
import { oracleListAll, sh, useBtrfs } from './helpers/btrfs'
import { FIXTURES, REPO, collectDriversBeforeTeardown, rejectsCode } from './helpers/driver-util'
import { BLOCK, END, entryBytes, file, header } from './helpers/diff-tar'

collectDriversBeforeTeardown(test)

const drivers: BtrfsDriver[] = []
test.after.always(async () => {
  for (const d of drivers) await d.cleanup().catch(() => undefined)
})

const { btrfsTest } = useBtrfs(test, { size: 4 * 1024 * 1024 * 1024, tools: ['tar', 'gzip', 'zstd'] })

const MIB = 1 << 20

async function store(dir: string): Promise<BtrfsDriver> {
  const d = await BtrfsDriver.init(path.join(dir, 'home'))
  drivers.push(d)
  await d.create('base')
  await fsp.writeFile(path.join(d.home, 'subvolumes/base/from-base'), 'b\n')
  return d
}

/** `sha256:<hex>` and size of `cmd`'s output, in one shell. */
async function sha(cmd: string): Promise<{ digest: string; size: number }> {
  const out = await sh('bash', ['-c', `set -o pipefail; ${cmd} | sha256sum && ${cmd} | wc -c`])
  const [sum, , size] = out.trim().split(/\s+/)
  return { digest: `sha256:${sum}`, size: Number(size) }
}

/** A layer tar made by GNU tar (with 3 KiB of zeros after its end), and its gzip and zstd blobs. */
async function blobs(dir: string): Promise<Record<Compression, string>> {
  const src = path.join(dir, 'src')
  await fsp.mkdir(path.join(src, 'etc'), { recursive: true })
  await fsp.writeFile(path.join(src, 'etc/hello'), 'hello\n')
  await fsp.writeFile(path.join(src, 'big'), Buffer.alloc(3 * MIB, 'abcdefg'))
  const tar = path.join(dir, 'layer.tar')
  await sh('tar', ['-C', src, '-cf', tar, '.'])
  await fsp.appendFile(tar, Buffer.alloc(3 * 1024))
  await sh('gzip', ['-k', '-f', tar])
  await sh('zstd', ['-q', '-f', tar])
  return { none: tar, gzip: `${tar}.gz`, zstd: `${tar}.zst` }
}

const DECOMPRESS: Record<Compression, string> = { none: 'cat', gzip: 'gzip -dc', zstd: 'zstd -dc' }

const leftovers = async (d: BtrfsDriver) => (await fsp.readdir(path.join(d.home, 'subvolumes'))).filter((n) => n.startsWith('.'))

async function nothingOf(t: ExecutionContext, d: BtrfsDriver, dir: string, id: string, what: string) {
  t.false(await d.exists(id), `${what}: no layer ${id}`)
  t.deepEqual(await leftovers(d), [], `${what}: no temporary subvolume left`)
  const listed = (await oracleListAll(dir)).map((s) => s.path)
  t.false(
    listed.some((p) => p.endsWith(`/subvolumes/${id}`) || p.includes(`/.tmp-${id}-`)),
    `${what}: btrfs subvolume list shows nothing of it: ${listed.join(', ')}`,
  )
}

btrfsTest('applyLayer: digests equal sha256sum of the blob and of gzip -dc / zstd -dc of it, from a path, a stream and a Buffer', async (t, dir) => {
  const d = await store(dir)
  const files = await blobs(dir)
  const tar = await sha(`cat ${files.none}`)
  for (const c of ['none', 'gzip', 'zstd'] as const) {
    const blob = await sha(`cat ${files[c]}`)
    t.deepEqual(await sha(`${DECOMPRESS[c]} ${files[c]}`), tar, `${c}: the tools agree on the tar`)
    const want = { applied: 3 * MIB + 6, digest: blob.digest, size: blob.size, diffId: tar.digest, uncompressedSize: tar.size }
    const inputs: [string, () => Promise<string | Readable | Buffer>][] = [
      ['path', async () => files[c]],
      ['stream', async () => createReadStream(files[c], { highWaterMark: 64 * 1024 })],
      ['buffer', () => fsp.readFile(files[c])],
    ]
    for (const [how, input] of inputs) {
      const id = `${c}-${how}`
      const got = await d.applyLayer(id, await input(), { parent: 'base', verify: { digest: blob.digest, size: blob.size, diffId: tar.digest } })
      t.deepEqual(got, want, `${id}`)
      t.is(await fsp.readFile(path.join(d.home, 'subvolumes', id, 'etc/hello'), 'utf8'), 'hello\n')
      t.true(await fsp.stat(path.join(d.home, 'subvolumes', id, 'from-base')).then(() => true), `${id}: a snapshot of its parent`)
      t.is((await d.getMetadata(id)).parent, 'base', `${id}: the record carries its parent`)
    }
  }
  const alone = await d.applyLayer('alone', files.gzip)
  t.is(alone.diffId, tar.digest)
  t.is((await d.getMetadata('alone')).parent, null)
})

/** A tar of `files` files of 1 MiB each, as a Readable that waits for `gate` once `after` bytes are out. */
function gatedTar(files: number, after: number, gate: Promise<void>): Readable {
  const body = Buffer.alloc(MIB, 'z')
  async function* gen() {
    let n = 0
    for (let i = 0; i < files; i++) {
      yield header({ name: `f${i}`, type: '0', size: MIB })
      yield body
      n += MIB + BLOCK
      if (n >= after) await gate
    }
    yield END
  }
  return Readable.from(gen())
}

btrfsTest('applyDiff create: no layer is visible while the stream applies (exists and btrfs subvolume list, from onProgress)', async (t, dir) => {
  const d = await store(dir)
  let open: () => void = () => undefined
  const gate = new Promise<void>((r) => (open = r))
  let checks: Promise<[boolean, string[]]> | undefined
  const onProgress = (n: number) => {
    if (n === 0 || checks) return
    checks = Promise.all([d.exists('new'), oracleListAll(dir).then((l) => l.map((s) => s.path))])
    // The rest of the stream comes only once both looked: the apply cannot have ended before.
    void checks.finally(open)
  }
  const applied = await d.applyDiff('new', gatedTar(40, 8 * MIB, gate), { parent: 'base', create: true, onProgress })
  t.is(applied, 40 * MIB)
  t.truthy(checks, 'onProgress was called during the apply')
  const [existed, listed] = await checks!
  t.false(existed, 'exists() is false during the apply')
  t.false(
    listed.some((p) => p.endsWith('/subvolumes/new')),
    `btrfs subvolume list shows no layer during the apply: ${listed.join(', ')}`,
  )
  t.true(
    listed.some((p) => p.includes('/subvolumes/.tmp-new-')),
    'the apply was under way in its temporary subvolume',
  )
  t.true(await d.exists('new'))
  t.is((await d.getMetadata('new')).parent, 'base')
  // The same through applyLayer.
  const r = await d.applyLayer('new2', gatedTar(3, 0, Promise.resolve()), { parent: 'new' })
  t.is(r.applied, 3 * MIB)
})

btrfsTest('applyLayer from a stream in chunks of every size (1 byte, odd, the 1 MiB batch, larger): each byte once, in order (the batch buffer is reused)', async (t, dir) => {
  const d = await store(dir)
  // Distinct content per MiB, so a batch sent twice, lost or reordered changes the digests.
  const big = Buffer.alloc(5 * MIB + 333)
  for (let i = 0; i + 4 <= big.length; i += 4) big.writeUInt32LE(i, i)
  const tar = Buffer.concat([header({ name: 'big', type: '0', size: big.length }), big, Buffer.alloc((BLOCK - (big.length % BLOCK)) % BLOCK), entryBytes(file('small', 's\n')), END])
  const blob = gzipSync(tar)
  const digest = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`
  const sizes = [1, 7, MIB - 1, MIB, 1, 3 * MIB + 5, 700 << 10, 2 * MIB]
  for (const [name, src] of [['plain', tar], ['gzip', blob]] as const) {
    const chunks: Buffer[] = []
    for (let at = 0, k = 0; at < src.length; k++) {
      const n = Math.min(sizes[k % sizes.length], src.length - at)
      chunks.push(Buffer.from(src.subarray(at, at + n))) // copies: the source must not be shared
      at += n
    }
    const r = await d.applyLayer(`chunked-${name}`, Readable.from(chunks), { parent: 'base', verify: { digest: digest(src), size: src.length, diffId: digest(tar) } })
    t.is(r.diffId, digest(tar), name)
    t.deepEqual(await fsp.readFile(path.join(d.home, 'subvolumes', `chunked-${name}`, 'big')), big, name)
  }
})

btrfsTest('applyDiff create and applyLayer: a wrong digest, size or diffId is ERR_DIGEST and keeps nothing', async (t, dir) => {
  const d = await store(dir)
  const files = await blobs(dir)
  const blob = await sha(`cat ${files.gzip}`)
  const tar = await sha(`gzip -dc ${files.gzip}`)
  const other = `sha256:${'0'.repeat(64)}`
  const cases: [object, RegExp][] = [
    [{ digest: other }, new RegExp(`digest mismatch: expected ${other}, got ${blob.digest}`)],
    [{ size: blob.size - 1 }, new RegExp(`size mismatch: expected ${blob.size - 1} bytes, got ${blob.size}`)],
    [{ diffId: other }, new RegExp(`diffID mismatch: expected ${other}, got ${tar.digest}`)],
  ]
  for (const [verify, message] of cases) {
    const e1 = await rejectsCode(t, d.applyLayer('bad', createReadStream(files.gzip), { parent: 'base', verify }), 'ERR_DIGEST', JSON.stringify(verify))
    t.regex(e1?.message ?? '', message)
    t.true(e1 instanceof BtrfsError)
    await nothingOf(t, d, dir, 'bad', `applyLayer ${JSON.stringify(verify)}`)
    await rejectsCode(t, d.applyDiff('bad', files.gzip, { create: true, verify }), 'ERR_DIGEST')
    await nothingOf(t, d, dir, 'bad', `applyDiff ${JSON.stringify(verify)}`)
  }
  t.deepEqual(await d.layers(), ['base'])
})

btrfsTest('applyDiff create and applyLayer: EEXIST, abort, bad stream and bad options leave nothing', async (t, dir) => {
  const d = await store(dir)
  const files = await blobs(dir)
  // EEXIST, before the input is read.
  let read = false
  const watched = new Readable({
    read() {
      read = true
      this.push(null)
    },
  })
  await rejectsCode(t, d.applyDiff('base', watched, { create: true }), 'EEXIST')
  t.false(read, 'EEXIST before any byte is read')
  await rejectsCode(t, d.applyLayer('x', files.none, { parent: 'missing' }), 'ENOENT')
  await nothingOf(t, d, dir, 'x', 'missing parent')
  // An abort in the middle of a stream.
  const ac = new AbortController()
  const input = gatedTar(64, 16 * MIB, new Promise(() => undefined))
  const aborting = d.applyDiff('cut', input, {
    create: true,
    signal: ac.signal,
    onProgress: (n) => {
      if (n > 0) ac.abort()
    },
  })
  const e = await rejectsCode(t, aborting, 'ABORT_ERR')
  t.is(e?.name, 'AbortError')
  await nothingOf(t, d, dir, 'cut', 'after an abort')
  // A bad stream.
  await rejectsCode(t, d.applyLayer('junk', Buffer.concat([entryBytes(file('ok', 'x')), Buffer.from('garbage')])), 'ERR_BAD_LAYER')
  await nothingOf(t, d, dir, 'junk', 'after a bad stream')
  // Bad options: refused before anything happens.
  for (const verify of [{ digest: 'sha256:ABC' }, { diffId: `sha256:${'A'.repeat(64)}` }, { size: -1 }, { size: 1.5 }, { size: 2 ** 53 }, { other: 1 }]) {
    await rejectsCode(t, d.applyLayer('v', files.none, { verify } as never), 'EINVAL', JSON.stringify(verify))
  }
  await rejectsCode(t, d.applyDiff('v', files.none, { verify: { size: 1 } }), 'EINVAL', 'verify without create')
  for (const [opts, name] of [
    [{ verify: { digest: 5 } }, 'options.verify.digest'],
    [{ verify: { size: '5' } }, 'options.verify.size'],
    [{ verify: 'sha256:x' }, 'options.verify'],
  ] as const) {
    const err = await t.throwsAsync(d.applyLayer('v', files.none, opts as never))
    t.is((err as { code?: string }).code, 'ERR_INVALID_ARG_TYPE', name)
    t.true(err instanceof TypeError)
    t.regex(err?.message ?? '', new RegExp(name.replace('.', '\\.')))
  }
  const err = await t.throwsAsync(d.applyDiff('v', files.none, { create: 'yes' } as never))
  t.is((err as { code?: string }).code, 'ERR_INVALID_ARG_TYPE')
  await nothingOf(t, d, dir, 'v', 'after bad options')
})

btrfsTest('diff with digests: sha256sum of the bytes written and of the decompressed tar (none, gzip, zstd)', async (t, dir) => {
  const d = await store(dir)
  const files = await blobs(dir)
  await d.applyLayer('layer', files.zstd, { parent: 'base' })
  for (const c of ['none', 'gzip', 'zstd'] as const) {
    const out = path.join(dir, `diff-${c}`)
    const stream = await d.diff('layer', { compression: c, digests: true })
    await pipeline(stream, createWriteStream(out))
    const got = await stream.digests
    const blob = await sha(`cat ${out}`)
    const tar = await sha(`${DECOMPRESS[c]} ${out}`)
    t.deepEqual(got, { digest: blob.digest, size: blob.size, diffId: tar.digest, uncompressedSize: tar.size }, c)
    // The diff applies, verified with its own digests.
    const back = await d.applyLayer(`back-${c}`, out, { parent: 'base', verify: { digest: got.digest, size: got.size, diffId: got.diffId } })
    t.is(back.diffId, got.diffId)
  }
  const plain = await d.diff('layer', { compression: 'gzip' })
  t.is(plain.digests, undefined, 'no digests unless asked')
  plain.destroy()
  // Destroyed before its end: the digests reject.
  const cut = await d.diff('layer', { digests: true })
  cut.destroy()
  await t.throwsAsync(cut.digests)
})

/** Run the child applying an endless stream with `create: true`; SIGKILL it once `bytes` are applied. */
function killMidApply(home: string, id: string, bytes: number): Promise<{ progress: number; signal: NodeJS.Signals | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(FIXTURES, 'apply-create-child.ts'), home, id], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] })
    let progress = 0
    let partial = ''
    let stderr = ''
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()))
    child.stdout.on('data', (b: Buffer) => {
      partial += b.toString()
      const lines = partial.split('\n')
      partial = lines.pop() ?? ''
      for (const l of lines) {
        const m = /^progress (\d+)$/.exec(l)
        if (m) progress = Number(m[1])
        if (l.startsWith('error')) stderr += l
        if (progress >= bytes) child.kill('SIGKILL')
      }
    })
    child.on('error', reject)
    child.on('exit', (code, signal) => resolve({ progress, signal, stderr: `exit ${code} ${signal}; stderr: ${stderr}; last output: ${partial}` }))
  })
}

btrfsTest('SIGKILL in the middle of applyDiff create: no layer after the next init', async (t, dir) => {
  const home = path.join(dir, 'home')
  const d = await BtrfsDriver.init(home)
  await d.cleanup()
  const killed = await killMidApply(home, 'doomed', 32 * MIB)
  t.is(killed.signal, 'SIGKILL', killed.stderr)
  t.true(killed.progress >= 32 * MIB)
  const before = (await oracleListAll(dir)).map((s) => s.path)
  t.true(
    before.some((p) => p.includes('/subvolumes/.tmp-doomed-')),
    `the killed apply left its temporary subvolume for init to sweep: ${before.join(', ')}`,
  )
  t.false(before.some((p) => p.endsWith('/subvolumes/doomed')), 'no layer visible after the kill')
  const again = await BtrfsDriver.init(home)
  drivers.push(again)
  t.deepEqual(await again.layers(), [])
  await nothingOf(t, again, dir, 'doomed', 'after the kill and init')
})
