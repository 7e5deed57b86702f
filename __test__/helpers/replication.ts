/**
 * Helpers for the replication specs (replication*.spec.ts): layers worth sending, send streams
 * written to files, and btrfs-progs (`btrfs send`, `btrfs receive`) as the oracle.
 */
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { pipeline } from 'node:stream/promises'
import type { BtrfsDriver, SendOptions } from '../../ts/index'
import { btrfsCli } from './btrfs'
import { mutateChild, populateEverything } from './diff-fixtures'
import { compareTrees, snapshotTree, type CompareOptions } from './diff-tree'

/** A file with holes: data at 0, 1 MiB and 5 MiB, 8 MiB long. */
export async function writeSparse(file: string): Promise<void> {
  const fh = await fsp.open(file, 'w')
  try {
    for (const at of [0, 1 << 20, 5 << 20]) await fh.write(Buffer.alloc(64 * 1024, at & 0xff ? 1 : 2), 0, 64 * 1024, at)
    await fh.truncate(8 << 20)
  } finally {
    await fh.close()
  }
}

/** populateEverything (every kind of entry, xattrs, caps, ACLs, hardlinks) plus a sparse file. */
export async function populateSendable(root: string): Promise<void> {
  await writeSparse(path.join(root, 'sparse.bin'))
  // Stamps every time, the sparse file's included.
  await populateEverything(root, { large: false })
}

/** The child's changes of populateEverything, and a hole filled in and another punched. */
export async function mutateSendable(root: string): Promise<void> {
  await mutateChild(root)
  const fh = await fsp.open(path.join(root, 'sparse.bin'), 'r+')
  try {
    await fh.write(Buffer.alloc(4096, 9), 0, 4096, 3 << 20)
  } finally {
    await fh.close()
  }
}

/** Layer `id` of `d`, read-only, made from `parent` (or empty) with `fill` run in it. */
export async function makeLayer(d: BtrfsDriver, id: string, parent: string | undefined, fill: (dir: string) => Promise<void>): Promise<void> {
  const work = `${id}-work`
  await d.create(work, { parent })
  const dir = await d.get(work)
  try {
    await fill(dir)
  } finally {
    await d.put(work)
  }
  await d.create(id, { parent: work, readOnly: true })
  await d.remove(work)
}

/** `d.send(id, opts)` written to `file`; returns the file. */
export async function sendToFile(d: BtrfsDriver, id: string, file: string, opts: SendOptions = {}): Promise<string> {
  await pipeline(await d.send(id, opts), fs.createWriteStream(file))
  return file
}

/** The protocol version in a send stream's header (`btrfs-stream\0` then a le32). */
export async function streamVersion(file: string): Promise<number> {
  const fh = await fsp.open(file, 'r')
  try {
    const { buffer } = await fh.read(Buffer.alloc(17), 0, 17, 0)
    if (buffer.subarray(0, 13).toString('latin1') !== 'btrfs-stream\0') throw new Error(`${file} is not a send stream`)
    return buffer.readUInt32LE(13)
  } finally {
    await fh.close()
  }
}

/** `btrfs receive -f file dir` (the oracle); returns the received subvolume's path. */
export async function oracleReceive(file: string, dir: string): Promise<string> {
  await fsp.mkdir(dir, { recursive: true })
  const before = new Set(await fsp.readdir(dir))
  await btrfsCli('receive', '-f', file, dir)
  const made = (await fsp.readdir(dir)).filter((n) => !before.has(n))
  if (made.length !== 1) throw new Error(`btrfs receive made ${made.length} entries in ${dir}: ${made.join(', ')}`)
  return path.join(dir, made[0])
}

/** Differences between the trees at `a` and `b`: contents, modes, owners, xattrs, hardlinks, holes, mtimes. */
export async function treeDiffs(a: string, b: string, opts: CompareOptions = {}): Promise<string[]> {
  return compareTrees(await snapshotTree(a), await snapshotTree(b), { holes: true, ...opts })
}
