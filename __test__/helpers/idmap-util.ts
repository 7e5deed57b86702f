/**
 * Helpers for the id-mapping specs (idmap*.spec.ts): id maps, a tree holding every kind of
 * inode under known owners, and oracles that read ownership back with tools independent of
 * the library: stat(1), getfattr, getfacl, getcap, GNU tar.
 *
 * Owners are given as container ids; `side.uid(c)` is the id stored on disk for container id
 * `c` under a mapping (identity when the mapping has no ranges).
 */
import { execFile } from 'node:child_process'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { promisify } from 'node:util'
import type { IdMap, Mapping } from '../../ts/index'
import { sh } from './btrfs'

const execFileP = promisify(execFile)

export const S1 = 100000
export const S2 = 200000

/** Container ids [0, size) at host `host`, for uids and gids. */
export function shifted(host: number, size = 65536): Required<Mapping> {
  const m: IdMap[] = [{ containerId: 0, hostId: host, size }]
  return { uidMaps: m, gidMaps: m.map((x) => ({ ...x })) }
}

export const IDENTITY: Mapping = {}

/** Container id -> on-disk id under `maps` (no ranges: identity); throws when unmapped. */
export function toHost(maps: IdMap[] | undefined, c: number): number {
  if (!maps || maps.length === 0) return c
  for (const m of maps) if (c >= m.containerId && c < m.containerId + m.size) return m.hostId + (c - m.containerId)
  throw new Error(`container id ${c} is outside the maps`)
}

export const hostUid = (m: Mapping, c: number) => toHost(m.uidMaps, c)
export const hostGid = (m: Mapping, c: number) => toHost(m.gidMaps, c)

export interface StatLine {
  uid: number
  gid: number
  /** Permission bits with setuid/setgid/sticky, octal text as stat %a prints it. */
  mode: string
  /** stat %F: 'regular file', 'directory', 'symbolic link', 'fifo', 'character special file', ... */
  type: string
  /** Device numbers (hex major,minor) for device nodes. */
  rdev: string
  ino: number
  nlink: number
}

/** `stat -c` of each path (never following a final symlink), one call for all. */
export async function statOf(paths: string[]): Promise<Map<string, StatLine>> {
  const out = new Map<string, StatLine>()
  for (let i = 0; i < paths.length; i += 500) {
    const chunk = paths.slice(i, i + 500)
    const text = await sh('stat', ['-c', '%u|%g|%a|%F|%t,%T|%i|%h|%n', '--', ...chunk])
    const lines = text.split('\n').filter(Boolean)
    for (const line of lines) {
      const f = line.split('|')
      const name = f.slice(7).join('|')
      out.set(name, { uid: Number(f[0]), gid: Number(f[1]), mode: f[2], type: f[3], rdev: f[4], ino: Number(f[5]), nlink: Number(f[6]) })
    }
  }
  return out
}

/** [uid, gid] of `p` itself by stat(1). */
export async function ownerOf(p: string): Promise<[number, number]> {
  const s = (await statOf([p])).get(p)
  if (!s) throw new Error(`stat ${p}: no output`)
  return [s.uid, s.gid]
}

/** `getfattr -n name -e hex` of `p` itself: the value as lowercase hex without 0x, or null. */
export async function xattrHex(p: string, name: string): Promise<string | null> {
  try {
    const { stdout } = await execFileP('getfattr', ['-h', '--absolute-names', '-n', name, '-e', 'hex', p])
    const m = new RegExp(`^${name.replace(/\./g, '\\.')}=0x([0-9a-f]*)$`, 'm').exec(stdout)
    return m ? m[1] : null
  } catch (e) {
    if (/No such attribute/.test((e as { stderr?: string }).stderr ?? '')) return null
    throw e
  }
}

/** `setfattr -n name -v 0x<hex>` of `p`. */
export async function setXattrHex(p: string, name: string, hex: string): Promise<void> {
  await sh('setfattr', ['-h', '-n', name, '-v', `0x${hex}`, p])
}

/** Every xattr of every path (`getfattr -h -d -m - -e hex`), path -> sorted 'name=0x..' lines. */
export async function xattrsOf(paths: string[]): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>(paths.map((p) => [p, []]))
  for (let i = 0; i < paths.length; i += 500) {
    const chunk = paths.slice(i, i + 500)
    let text: string
    try {
      text = (await execFileP('getfattr', ['-h', '--absolute-names', '-d', '-m', '-', '-e', 'hex', ...chunk], { maxBuffer: 64 << 20 })).stdout
    } catch (e) {
      // getfattr exits 1 when some path has no xattr support (a socket, say); its stdout is still good.
      text = (e as { stdout?: string }).stdout ?? ''
    }
    let current: string | undefined
    for (const line of text.split('\n')) {
      if (line.startsWith('# file: ')) current = line.slice(8)
      else if (current && line.includes('=')) out.get(current)?.push(line)
    }
  }
  for (const v of out.values()) v.sort()
  return out
}

/** `vfs_ns_cap_data` revision 3, as hex: permitted = bit `cap`, effective, `rootid`. */
export function capV3Hex(cap: number, rootid: number): string {
  const b = Buffer.alloc(24)
  b.writeUInt32LE(0x03000000 | 1, 0)
  b.writeUInt32LE(2 ** cap, 4)
  b.writeUInt32LE(rootid, 20)
  return b.toString('hex')
}

export const CAP_NET_RAW = 13

/** Revision and rootid of a `security.capability` value given as hex (rootid 0 for v2). */
export function capRevisionRootid(hex: string): { revision: number; rootid: number } {
  const b = Buffer.from(hex, 'hex')
  const revision = b.readUInt32LE(0) >>> 24
  return { revision, rootid: revision === 3 ? b.readUInt32LE(20) : 0 }
}

/** `getfacl -n -p` entry lines (numeric ids), comments dropped. */
export async function getfacl(p: string): Promise<string[]> {
  return (await sh('getfacl', ['-n', '-p', p])).split('\n').filter((l) => l && !l.startsWith('#'))
}

/** `getcap` of a file: its capability text ('' when none). */
export async function getcap(p: string): Promise<string> {
  const out = (await sh('getcap', [p])).trim()
  return out.startsWith(p) ? out.slice(p.length).trim() : out
}

/** The owners given to the entries of the rich tree, in container ids. */
export const RICH_OWNERS: Record<string, [number, number]> = {
  '.': [0, 0],
  dir: [1000, 1000],
  'dir/file': [1000, 1001],
  'dir/sub': [1, 2],
  'dir/sub/deep': [1, 2],
  'link-in': [3, 4],
  'link-out': [5, 6],
  'link-dir-out': [5, 6],
  'hl-a': [1000, 1000],
  'hl-b': [1000, 1000],
  'dir/hl-c': [1000, 1000],
  chr: [7, 8],
  blk: [9, 10],
  fifo: [11, 12],
  suid: [0, 0],
  sgid: [1000, 1000],
  'suid-sgid': [0, 1000],
  'sgid-dir': [1000, 1000],
  cap: [0, 0],
  'acl-file': [0, 0],
  'acl-dir': [1000, 1000],
  'empty-dir': [65535, 65535],
}

/** Special mode bits of the rich tree (stat %a). */
export const RICH_MODES: Record<string, string> = {
  suid: '4755',
  sgid: '2755',
  'suid-sgid': '6750',
  'sgid-dir': '2775',
}

/** What stat %F says for each entry of the rich tree. */
export const RICH_TYPES: Record<string, string> = {
  '.': 'directory',
  dir: 'directory',
  'dir/file': 'regular file',
  'link-in': 'symbolic link',
  'link-out': 'symbolic link',
  'link-dir-out': 'symbolic link',
  chr: 'character special file',
  blk: 'block special file',
  fifo: 'fifo',
}

/** Inodes of the rich tree: entries minus the two extra names of the hardlinked file. */
export const RICH_INODES = Object.keys(RICH_OWNERS).length - 2

/**
 * Make under `root` (an existing directory) one entry of every kind, owned per RICH_OWNERS
 * through mapping `side`: directories, files, symlinks (to a file and to a directory in
 * `outside`, which is on another filesystem), a file with 3 names, character and block devices,
 * a fifo, setuid/setgid files and a setgid directory, a file with a capability (setcap, v2),
 * POSIX access and default ACLs naming container ids 1000/1001.
 */
export async function buildRich(root: string, side: Mapping, outside: string): Promise<void> {
  const p = (r: string) => path.join(root, r)
  await fsp.mkdir(p('dir/sub'), { recursive: true })
  await fsp.writeFile(p('dir/file'), 'file')
  await fsp.writeFile(p('dir/sub/deep'), 'deep')
  await fsp.symlink('dir/file', p('link-in'))
  await fsp.writeFile(path.join(outside, 'outside-file'), 'outside')
  await fsp.mkdir(path.join(outside, 'outside-dir'), { recursive: true })
  await fsp.symlink(path.join(outside, 'outside-file'), p('link-out'))
  await fsp.symlink(path.join(outside, 'outside-dir'), p('link-dir-out'))
  await fsp.writeFile(p('hl-a'), 'linked')
  await fsp.link(p('hl-a'), p('hl-b'))
  await fsp.link(p('hl-a'), p('dir/hl-c'))
  await sh('mknod', ['-m', '640', p('chr'), 'c', '1', '3'])
  await sh('mknod', ['-m', '640', p('blk'), 'b', '7', '200'])
  await sh('mkfifo', ['-m', '640', p('fifo')])
  for (const f of ['suid', 'sgid', 'suid-sgid', 'cap', 'acl-file']) await fsp.writeFile(p(f), '#!/bin/sh\n')
  for (const d of ['sgid-dir', 'acl-dir', 'empty-dir']) await fsp.mkdir(p(d))
  for (const [rel, [u, g]] of Object.entries(RICH_OWNERS)) await fsp.lchown(p(rel), hostUid(side, u), hostGid(side, g))
  // After chown, which would clear them.
  for (const [rel, m] of Object.entries(RICH_MODES)) await fsp.chmod(p(rel), parseInt(m, 8))
  await sh('setcap', ['cap_net_raw+ep', p('cap')])
  const spec = `u:${hostUid(side, 1000)}:rx,g:${hostGid(side, 1000)}:r`
  await sh('setfacl', ['-m', spec, p('acl-file')])
  await sh('setfacl', ['-m', spec, p('acl-dir')])
  await sh('setfacl', ['-d', '-m', `u:${hostUid(side, 1000)}:rwx,g:${hostGid(side, 1001)}:rx`, p('acl-dir')])
}

/** Owners (stat) of the rich tree that differ from RICH_OWNERS under `side`; [] when right. */
export async function richOwnerProblems(root: string, side: Mapping): Promise<string[]> {
  const names = Object.keys(RICH_OWNERS)
  const st = await statOf(names.map((r) => path.join(root, r)))
  const problems: string[] = []
  for (const [rel, [u, g]] of Object.entries(RICH_OWNERS)) {
    const s = st.get(path.join(root, rel))
    const want = `${hostUid(side, u)}:${hostGid(side, g)}`
    if (!s) problems.push(`${rel}: no stat`)
    else if (`${s.uid}:${s.gid}` !== want) problems.push(`${rel} (${s.type}): ${s.uid}:${s.gid}, want ${want}`)
  }
  for (const [rel, m] of Object.entries(RICH_MODES)) {
    const s = st.get(path.join(root, rel))
    if (s?.mode !== m) problems.push(`${rel}: mode ${s?.mode}, want ${m}`)
  }
  for (const [rel, type] of Object.entries(RICH_TYPES)) {
    const s = st.get(path.join(root, rel))
    if (s?.type !== type) problems.push(`${rel}: type ${s?.type}, want ${type}`)
  }
  return problems
}

/** Relative paths of everything below `root` (not following symlinks, not leaving its device). */
export async function listTree(root: string): Promise<string[]> {
  const dev = (await fsp.lstat(root)).dev
  const out: string[] = ['.']
  const walk = async (abs: string, rel: string) => {
    for (const name of (await fsp.readdir(abs)).sort()) {
      const r = rel === '.' ? name : `${rel}/${name}`
      const st = await fsp.lstat(path.join(abs, name))
      out.push(r)
      if (st.isDirectory() && st.dev === dev) await walk(path.join(abs, name), r)
    }
  }
  await walk(root, '.')
  return out
}

/**
 * Everything stat(1) and getfattr say about each entry below `root` except ctime: type, mode,
 * owner, size, links, device numbers, inode, mtime (ns), link target, every xattr.
 */
export async function fullState(root: string): Promise<Record<string, string>> {
  const rels = await listTree(root)
  const abs = rels.map((r) => path.join(root, r))
  const out: Record<string, string> = {}
  for (let i = 0; i < abs.length; i += 500) {
    const chunk = abs.slice(i, i + 500)
    const text = await sh('stat', ['-c', '%F|%a|%u|%g|%s|%h|%t,%T|%i|%.9Y|%N|%n', '--', ...chunk])
    for (const line of text.split('\n').filter(Boolean)) {
      const f = line.split('|')
      const name = f.slice(10).join('|')
      out[path.relative(root, name) || '.'] = f.slice(0, 10).join(' ')
    }
  }
  const xa = await xattrsOf(abs)
  for (const [a, lines] of xa) out[path.relative(root, a) || '.'] += ` xattrs=[${lines.join(',')}]`
  return out
}

/** Lines of `before` and `after` that differ, for assertion messages. */
export function stateDiff(before: Record<string, string>, after: Record<string, string>): string[] {
  const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort()
  return keys.filter((k) => before[k] !== after[k]).map((k) => `${k}:\n    before ${before[k] ?? 'missing'}\n    after  ${after[k] ?? 'missing'}`)
}

/** `n` empty files in directories of `perDir`, owners spread over container ids 0..999. */
export function manyFiles(root: string, n: number, perDir: number, side: Mapping = IDENTITY): void {
  for (let i = 0; i < n; i++) {
    const d = path.join(root, `d${String(Math.floor(i / perDir)).padStart(4, '0')}`)
    if (i % perDir === 0) {
      fs.mkdirSync(d)
      fs.lchownSync(d, hostUid(side, 0), hostGid(side, 0))
    }
    const f = path.join(d, `f${i}`)
    fs.closeSync(fs.openSync(f, 'w'))
    fs.lchownSync(f, hostUid(side, i % 1000), hostGid(side, (i * 7) % 1000))
  }
}

export interface TarEntry {
  name: string
  uid: number
  gid: number
  type: string
}

/** `tar -tvf <file> --numeric-owner`: name, numeric owner and type letter of each entry. */
export async function tarList(file: string): Promise<TarEntry[]> {
  const text = await sh('tar', ['--numeric-owner', '-tvf', file])
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      // -rw-r--r-- 1000/1000       5 2024-01-01 00:00 ./etc/x
      const m = /^(\S)\S*\s+(\d+)\/(\d+)\s+\S+\s+\S+\s+\S+\s+(.*?)(?: -> .*| link to .*)?$/.exec(line)
      if (!m) throw new Error(`cannot parse tar -tv line: ${line}`)
      return { type: m[1], uid: Number(m[2]), gid: Number(m[3]), name: m[4].replace(/^\.\//, '').replace(/\/$/, '') }
    })
    .filter((e) => e.name !== '' && e.name !== '.')
}

/** A temporary directory outside the filesystem under test, removed by `remove()`. */
export async function tempDir(tag: string): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), `btrfs-layers-idmap-${tag}-`))
  return { dir, remove: () => fsp.rm(dir, { recursive: true, force: true }) }
}

/**
 * A tar made by GNU tar from `files` (relative path -> [container uid, gid, content | 'dir']),
 * with numeric owners exactly as given. Returns the tar's path inside `dir`.
 */
export async function makeTar(dir: string, name: string, files: Record<string, [number, number, string]>): Promise<string> {
  const stage = path.join(dir, `${name}.stage`)
  await fsp.mkdir(stage)
  const names = Object.keys(files).sort()
  for (const rel of names) {
    const [, , body] = files[rel]
    if (body === 'dir') await fsp.mkdir(path.join(stage, rel), { recursive: true })
    else {
      await fsp.mkdir(path.dirname(path.join(stage, rel)), { recursive: true })
      await fsp.writeFile(path.join(stage, rel), body)
    }
  }
  for (const rel of names) await fsp.lchown(path.join(stage, rel), files[rel][0], files[rel][1])
  const tar = path.join(dir, `${name}.tar`)
  await sh('tar', ['--numeric-owner', '--no-recursion', '-C', stage, '-cf', tar, ...names])
  return tar
}
