/**
 * Which way `changes` goes, through the driver, on a real btrfs. A layer made by `create` from a
 * parent is a snapshot of it: `changes` takes the generation fast path, which reads only the
 * tree blocks written since the snapshot and takes no snapshot itself, so it commits no
 * transaction on a clean filesystem. Seen from outside: the superblock generation
 * (`btrfs inspect-internal dump-super`, btrfs-progs as the oracle) stays where it is, while the
 * send path (a layer against a layer it does not descend from) needs a temporary read-only
 * snapshot, which commits. The layer records where its tree came from (kept across applyDiff,
 * whose new subvolume is a snapshot of the layer); the records are checked against
 * `btrfs subvolume show`, and lists against hand-written expectations, including changes the
 * parent made after the child was created, a grandparent, and a record that no longer
 * describes the layer (which must not be trusted).
 */
import test, { type ExecutionContext } from 'ava'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { BtrfsDriver, type Change } from '../ts/index'
import { sh, useBtrfs } from './helpers/btrfs'
import { collectDriversBeforeTeardown, oracleRecord } from './helpers/driver-util'
import { inLayer, run } from './helpers/diff-fixtures'

collectDriversBeforeTeardown(test)

const drivers: BtrfsDriver[] = []
test.after.always(async () => {
  for (const d of drivers) await d.cleanup().catch(() => undefined)
})

const { btrfsTest, fs } = useBtrfs(test, { tools: ['getfattr', 'setfattr', 'tar'] })

async function driverIn(dir: string): Promise<BtrfsDriver> {
  const d = await BtrfsDriver.init(path.join(dir, 'home'))
  drivers.push(d)
  return d
}

const A = (p: string): Change => ({ path: p, kind: 'add' })
const M = (p: string): Change => ({ path: p, kind: 'modify' })
const D = (p: string): Change => ({ path: p, kind: 'delete' })

/** The generation of the last committed transaction, from the superblock on the image. */
async function superGeneration(): Promise<bigint> {
  const out = await sh('btrfs', ['inspect-internal', 'dump-super', fs().image])
  const m = /^generation\s+(\d+)$/m.exec(out)
  if (!m) throw new Error(`no generation in dump-super output:\n${out}`)
  return BigInt(m[1])
}

/** `btrfs subvolume show` fields of the subvolume at `p`. */
async function show(p: string): Promise<{ uuid: string; parentUuid: string; genAtCreation: bigint }> {
  const out = await sh('btrfs', ['subvolume', 'show', p])
  const field = (name: string): string => {
    const m = new RegExp(`^\\s*${name}:\\s*(\\S+)\\s*$`, 'm').exec(out)
    if (!m) throw new Error(`no ${name} in:\n${out}`)
    return m[1]
  }
  return { uuid: field('UUID'), parentUuid: field('Parent UUID'), genAtCreation: BigInt(field('Gen at creation')) }
}

interface LayerRecord {
  uuid?: string
  origin?: { uuid: string; transid: number }
}
const recordOf = async (home: string, id: string): Promise<LayerRecord> =>
  ((await oracleRecord(path.join(home, 'subvolumes', id))) ?? {}) as LayerRecord

/** A tar of the tree `files` describes (path -> content; a trailing `/` makes a directory). */
async function tarOf(dir: string, name: string, files: Record<string, string>): Promise<string> {
  const src = path.join(dir, `${name}-src`)
  await fsp.mkdir(src)
  for (const [p, body] of Object.entries(files)) {
    if (p.endsWith('/')) await fsp.mkdir(path.join(src, p), { recursive: true })
    else {
      await fsp.mkdir(path.dirname(path.join(src, p)), { recursive: true })
      await fsp.writeFile(path.join(src, p), body)
    }
  }
  const tar = path.join(dir, `${name}.tar`)
  await run('tar', '--format=posix', '--numeric-owner', '-C', src, '-cf', tar, '.')
  return tar
}

/** `driver.changes` twice on a settled filesystem: the list, and whether anything was committed. */
async function changesCommitting(t: ExecutionContext, d: BtrfsDriver, id: string, parent?: string): Promise<[Change[], boolean]> {
  await d.changes(id, parent) // commits what was written before
  // Settle: commit, let the cleaner drop deleted subvolumes, commit what it wrote.
  await run('btrfs', 'filesystem', 'sync', fs().mnt)
  await run('btrfs', 'subvolume', 'sync', fs().mnt)
  await run('btrfs', 'filesystem', 'sync', fs().mnt)
  const before = await superGeneration()
  const list = await d.changes(id, parent)
  const after = await superGeneration()
  t.log(`${id} against ${parent ?? 'its parent'}: superblock generation ${before} -> ${after}`)
  return [list, after !== before]
}

btrfsTest.serial('a child layer is compared without a snapshot: no transaction is committed', async (t, dir) => {
  const d = await driverIn(dir)
  await d.create('base')
  await inLayer(d, 'base', async (p) => {
    for (let i = 0; i < 50; i++) await fsp.writeFile(path.join(p, `f${i}`), `file ${i}\n`)
    await fsp.mkdir(path.join(p, 'etc'))
    await fsp.writeFile(path.join(p, 'etc/conf'), 'a=1\n')
  })
  await d.create('child', 'base')
  await d.create('sibling', 'base')
  await inLayer(d, 'child', async (p) => {
    await fsp.appendFile(path.join(p, 'f7'), 'more\n')
    await fsp.writeFile(path.join(p, 'etc/new'), 'new\n')
    await fsp.rm(path.join(p, 'f9'))
  })
  const [list, committed] = await changesCommitting(t, d, 'child')
  t.deepEqual(list, [M('/etc'), A('/etc/new'), M('/f7'), D('/f9')])
  t.false(committed, 'the generation path took a snapshot or wrote something')
  // The control: against a sibling, which it does not descend from, it takes the send path,
  // whose temporary read-only snapshot commits a transaction.
  const [againstSibling, committedBySend] = await changesCommitting(t, d, 'child', 'sibling')
  t.deepEqual(againstSibling, [M('/etc'), A('/etc/new'), M('/f7'), D('/f9')])
  t.true(committedBySend, 'the send path commits its temporary snapshot')
})

btrfsTest.serial('the origin survives applyDiff: records match btrfs subvolume show, lists stay right', async (t, dir) => {
  const d = await driverIn(dir)
  const home = path.join(dir, 'home')
  const sub = (id: string): string => path.join(home, 'subvolumes', id)
  await d.create('base')
  await d.applyDiff('base', null, await tarOf(dir, 'base', { 'bin/': '', 'bin/sh': 'shell\n', 'etc/': '', 'etc/passwd': 'root\n', 'keep': 'k\n' }))
  await d.create('child', 'base')
  const created = await show(sub('child'))
  let rec = await recordOf(home, 'child')
  t.is(rec.uuid, created.uuid)
  t.is(rec.origin?.uuid, (await show(sub('base'))).uuid)
  t.is(BigInt(rec.origin?.transid ?? -1), created.genAtCreation)

  await d.applyDiff('child', 'base', await tarOf(dir, 'child', { 'etc/': '', 'etc/hosts': 'localhost\n', 'srv/': '', 'srv/app': 'app\n' }))
  const swapped = await show(sub('child'))
  rec = await recordOf(home, 'child')
  t.not(swapped.uuid, created.uuid, 'applyDiff swapped in a new subvolume')
  t.is(swapped.parentUuid, created.uuid, 'a snapshot of the layer as it was')
  t.is(rec.uuid, swapped.uuid, 'the record follows the new subvolume')
  t.is(BigInt(rec.origin?.transid ?? -1), created.genAtCreation, 'and keeps the origin of the tree')
  t.is(rec.origin?.uuid, (await show(sub('base'))).uuid)

  // The parent changes after its child was made: its new file is missing from the child.
  await inLayer(d, 'base', (p) => fsp.writeFile(path.join(p, 'late'), 'added to the parent later\n'))
  await inLayer(d, 'child', (p) => fsp.rm(path.join(p, 'keep')))
  const expected = [M('/etc'), A('/etc/hosts'), D('/keep'), D('/late'), A('/srv'), A('/srv/app')]
  const [list, committed] = await changesCommitting(t, d, 'child')
  t.deepEqual(list, expected)
  t.false(committed, 'the generation path, through the record kept across applyDiff')

  // A grandchild against the grandparent: the chain of records, the oldest snapshot.
  await d.create('grandchild', 'child')
  await inLayer(d, 'grandchild', (p) => fsp.writeFile(path.join(p, 'bin/sh'), 'another shell\n'))
  const [fromBase, committedChain] = await changesCommitting(t, d, 'grandchild', 'base')
  t.deepEqual(fromBase, [M('/bin/sh'), ...expected])
  t.false(committedChain)

  // A record that no longer describes the layer is not trusted: same list, by another way.
  const bad = await recordOf(home, 'child')
  bad.uuid = '00000000-0000-0000-0000-000000000001'
  bad.origin = { uuid: (await show(sub('base'))).uuid, transid: 1 }
  await run('setfattr', '-n', 'trusted.btrfs-layers.record', '-v', JSON.stringify(bad), sub('child'))
  const [distrusted] = await changesCommitting(t, d, 'child')
  t.deepEqual(distrusted, expected)
})

btrfsTest.serial('a name that is not UTF-8 comes with its bytes, which reach the file', async (t, dir) => {
  const d = await driverIn(dir)
  await d.create('base')
  await d.create('child', 'base')
  const name = Buffer.from([0x63, 0x61, 0x66, 0xe9]) // "café" in Latin-1
  await inLayer(d, 'child', async (p) => {
    await fsp.writeFile(Buffer.concat([Buffer.from(`${p}/`), name]), 'latin-1 name\n')
    await fsp.writeFile(path.join(p, 'café'), 'utf-8 name\n')
  })
  const list = await d.changes('child')
  // Sorted by bytes: UTF-8 "é" is c3 a9, Latin-1 "é" is e9.
  t.deepEqual(
    list.map((c) => [c.path, c.kind]),
    [
      ['/café', 'add'],
      ['/caf\ufffd', 'add'],
    ],
  )
  const raw = list[1].rawPath
  t.true(Buffer.isBuffer(raw))
  t.deepEqual(raw, Buffer.concat([Buffer.from('/'), name]))
  t.false('rawPath' in list[0], 'a UTF-8 path has no rawPath')
  // The bytes name the file: ls (the oracle) escapes the byte the same way.
  await inLayer(d, 'child', async (p) => {
    t.is(await fsp.readFile(Buffer.concat([Buffer.from(p), raw as Buffer]), 'utf8'), 'latin-1 name\n')
    t.regex(await run('ls', '-b', p), /^caf\\351$/m)
  })
})
