/**
 * Trees for the diff specs: a full description of every entry below a directory (type, mode,
 * owner, size, content hash, link target, device number, hardlink groups, xattrs, mtime with
 * nanoseconds), taken with lstat and with getfattr (attr) as the independent xattr oracle,
 * and an entry-by-entry comparison that returns readable differences.
 */
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { promisify } from 'node:util'

const execFileP = promisify(execFile)

export type EntryType = 'file' | 'dir' | 'symlink' | 'fifo' | 'char' | 'block' | 'socket'

export interface TreeEntry {
  type: EntryType
  /** Permission bits incl. setuid/setgid/sticky (octal string). */
  mode: string
  uid: number
  gid: number
  /** Regular files and symlinks only. */
  size?: number
  /** sha256 of a regular file's content. */
  hash?: string
  /** Bytes a regular file has allocated (st_blocks * 512): less than its size where it has holes. */
  allocated?: number
  /** Symlink target. */
  target?: string
  /** `major:minor` of a device. */
  rdev?: string
  /** Nanoseconds since the epoch, as a decimal string. */
  mtime: string
  /** xattr name -> hex value (getfattr -e hex), sorted by name. */
  xattrs: Record<string, string>
  /** Inode number, for the link groups only (never compared). */
  ino: string
  nlink: number
}

export interface Tree {
  root: string
  /** Relative path ('.' for the root) -> entry. */
  entries: Map<string, TreeEntry>
}

function major(dev: bigint): number {
  return Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn))
}
function minor(dev: bigint): number {
  return Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn))
}

async function hashFile(p: string): Promise<string> {
  const h = createHash('sha256')
  for await (const chunk of createReadStream(p)) h.update(chunk as Buffer)
  return h.digest('hex')
}

/** Decode getfattr's quoting of a file name (`\ooo` octal escapes of bytes). */
function unquote(s: string): string {
  const bytes: number[] = []
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\\' && /^[0-7]{3}$/.test(s.slice(i + 1, i + 4))) {
      bytes.push(parseInt(s.slice(i + 1, i + 4), 8))
      i += 3
    } else {
      bytes.push(s.charCodeAt(i) & 0xff)
    }
  }
  return Buffer.from(bytes).toString('utf8')
}

/** The xattrs the driver keeps its layer record in (trusted.*, or user.* without privilege). */
export const LAYER_RECORD_XATTRS = ['trusted.btrfs-layers.record', 'user.btrfs-layers.record']

/**
 * Every xattr below `root` (symlinks not followed): absolute path -> { name: hex }.
 * One `getfattr -R -P -h -d -m - -e hex` run; entries without xattrs are absent.
 */
export async function oracleXattrs(root: string): Promise<Map<string, Record<string, string>>> {
  const out = new Map<string, Record<string, string>>()
  let stdout: Buffer
  try {
    const r = await execFileP('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', root], {
      encoding: 'buffer',
      maxBuffer: 256 * 1024 * 1024,
    })
    stdout = r.stdout
  } catch (e) {
    // getfattr exits 1 when some entry had no xattr support; its stdout is still complete.
    const x = e as { stdout?: Buffer; stderr?: Buffer; code?: unknown }
    if (!x.stdout) throw e
    const err = x.stderr?.toString() ?? ''
    if (err && !/Operation not supported/.test(err)) throw new Error(`getfattr ${root}: ${err}`, { cause: e })
    stdout = x.stdout
  }
  let current: Record<string, string> | undefined
  for (const line of stdout.toString('latin1').split('\n')) {
    if (line.startsWith('# file: ')) {
      current = {}
      out.set(path.resolve(unquote(line.slice(8))), current)
    } else if (current && line.includes('=')) {
      const i = line.indexOf('=')
      current[unquote(line.slice(0, i))] = line.slice(i + 1)
    }
  }
  for (const [k, v] of out) out.set(k, Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1))))
  return out
}

/** Describe everything below `root` (not following symlinks). */
export async function snapshotTree(root: string, opts: { xattrs?: boolean } = {}): Promise<Tree> {
  const abs = path.resolve(root)
  const xattrs = opts.xattrs === false ? new Map() : await oracleXattrs(abs)
  // The driver's record on a layer's root describes the layer; it is not part of the tree.
  // Only there: anywhere else it would be a leak the comparison must show.
  const top = xattrs.get(abs)
  if (top) for (const name of LAYER_RECORD_XATTRS) delete top[name]
  const entries = new Map<string, TreeEntry>()
  const walk = async (p: string, rel: string): Promise<void> => {
    const st = await fsp.lstat(p, { bigint: true })
    const fmt = Number(st.mode) & 0o170000
    const type: EntryType =
      fmt === 0o100000
        ? 'file'
        : fmt === 0o040000
          ? 'dir'
          : fmt === 0o120000
            ? 'symlink'
            : fmt === 0o010000
              ? 'fifo'
              : fmt === 0o020000
                ? 'char'
                : fmt === 0o060000
                  ? 'block'
                  : 'socket'
    const e: TreeEntry = {
      type,
      mode: (Number(st.mode) & 0o7777).toString(8).padStart(4, '0'),
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtime: st.mtimeNs.toString(),
      xattrs: xattrs.get(p) ?? {},
      ino: st.ino.toString(),
      nlink: Number(st.nlink),
    }
    if (type === 'file') {
      e.size = Number(st.size)
      e.hash = await hashFile(p)
      e.allocated = Number(st.blocks) * 512
    } else if (type === 'symlink') {
      e.size = Number(st.size)
      e.target = await fsp.readlink(p)
    } else if (type === 'char' || type === 'block') {
      e.rdev = `${major(st.rdev)}:${minor(st.rdev)}`
    }
    entries.set(rel, e)
    if (type === 'dir') {
      const names = (await fsp.readdir(p)).sort()
      for (const name of names) await walk(path.join(p, name), rel === '.' ? name : `${rel}/${name}`)
    }
  }
  await walk(abs, '.')
  return { root: abs, entries }
}

/** Paths sharing an inode with `rel` (itself included), sorted; [] for directories. */
export function linkGroup(tree: Tree, rel: string): string[] {
  const e = tree.entries.get(rel)
  if (!e || e.type === 'dir') return []
  const out: string[] = []
  for (const [p, x] of tree.entries) if (x.type !== 'dir' && x.ino === e.ino) out.push(p)
  return out.sort()
}

export interface CompareOptions {
  /** 'ns' (default): full mtime; 's': whole seconds; false: not compared. */
  mtime?: 'ns' | 's' | false
  /** Whether to compare the root directory's mtime (default false: diffs do not carry it). */
  rootMtime?: boolean
  /** Whether to compare the root directory's mode and owner (default true). */
  rootMeta?: boolean
  /** Compare xattrs (default true). */
  xattrs?: boolean
  /** Compare hardlink groups (default true). */
  links?: boolean
  /**
   * Compare the bytes regular files have allocated (default false), so a hole filled with
   * zeros shows: for copies made by the same kind of writes (a btrfs send stream received).
   */
  holes?: boolean
  /** Paths whose hardlink group is not compared (e.g. a new link to an unchanged parent file). */
  ignoreLinkGroupOf?: string[]
  /** Paths whose mtime is not compared. */
  ignoreMtimeOf?: (rel: string) => boolean
  /** Paths left out entirely. */
  ignorePaths?: (rel: string) => boolean
}

function describe(e: TreeEntry | undefined): string {
  if (!e) return 'missing'
  return `${e.type} ${e.mode}`
}

/**
 * Differences between two trees, entry by entry, as readable lines ([] when equal):
 * presence, type, mode, uid/gid, size, content hash, link target, rdev, xattrs, mtime and
 * hardlink groups, and with `holes` the allocated bytes of files (sparse holes).
 */
export function compareTrees(a: Tree, b: Tree, opts: CompareOptions = {}): string[] {
  const mtime = opts.mtime ?? 'ns'
  const skip = opts.ignorePaths ?? (() => false)
  const diffs: string[] = []
  const paths = [...new Set([...a.entries.keys(), ...b.entries.keys()])].sort()
  for (const p of paths) {
    if (skip(p)) continue
    const x = a.entries.get(p)
    const y = b.entries.get(p)
    if (!x || !y || x.type !== y.type) {
      diffs.push(`${p}: ${describe(x)} vs ${describe(y)}`)
      continue
    }
    const isRoot = p === '.'
    const field = (name: string, u: unknown, v: unknown) => {
      if (JSON.stringify(u) !== JSON.stringify(v)) diffs.push(`${p}: ${name} ${JSON.stringify(u)} vs ${JSON.stringify(v)}`)
    }
    if (!isRoot || opts.rootMeta !== false) {
      field('mode', x.mode, y.mode)
      field('uid', x.uid, y.uid)
      field('gid', x.gid, y.gid)
    }
    if (x.type === 'file') {
      field('size', x.size, y.size)
      field('content', x.hash, y.hash)
      if (opts.holes) field('allocated', x.allocated, y.allocated)
    }
    if (x.type === 'symlink') field('target', x.target, y.target)
    if (x.type === 'char' || x.type === 'block') field('rdev', x.rdev, y.rdev)
    if (opts.xattrs !== false && (!isRoot || opts.rootMeta !== false)) field('xattrs', x.xattrs, y.xattrs)
    if (mtime && (!isRoot || opts.rootMtime) && !opts.ignoreMtimeOf?.(p)) {
      if (mtime === 'ns') field('mtime', x.mtime, y.mtime)
      else field('mtime(s)', String(floorSec(x.mtime)), String(floorSec(y.mtime)))
    }
    if (opts.links !== false && x.type !== 'dir' && !(opts.ignoreLinkGroupOf ?? []).includes(p)) {
      const ga = linkGroup(a, p).filter((q) => !skip(q))
      const gb = linkGroup(b, p).filter((q) => !skip(q))
      if (ga.length > 1 || gb.length > 1) field('hardlinks', ga, gb)
    }
  }
  return diffs
}

/** Whole seconds of a nanosecond time, rounded down (also before 1970). */
function floorSec(ns: string): bigint {
  const v = BigInt(ns)
  const q = v / 1_000_000_000n
  return v < 0n && q * 1_000_000_000n !== v ? q - 1n : q
}

/** Set the mtime of `p` (not following a symlink) with nanoseconds, via touch(1). */
export async function setMtimeNs(p: string, ns: bigint | string): Promise<void> {
  const v = BigInt(ns)
  const abs = v < 0n ? -v : v
  const frac = (abs % 1_000_000_000n).toString().padStart(9, '0')
  // touch reads "@-1.25" as -1.25 s.
  await execFileP('touch', ['-h', '-m', '-d', `@${v < 0n ? '-' : ''}${abs / 1_000_000_000n}.${frac}`, p])
}
