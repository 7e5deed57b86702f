/**
 * Layer contents for the diff specs: a parent tree with every kind of entry (files empty and
 * large, directories, symlinks dangling and absolute, hardlinks, fifos, devices, setuid/
 * setgid/sticky modes, odd owners, user xattrs, file capabilities, POSIX ACLs, nanosecond
 * mtimes, non-ASCII and long names, deep paths), and a child that modifies, deletes and
 * replaces entries. Made with the kernel and the usual tools (mknod, mkfifo, setcap,
 * setfacl, setfattr, touch), never with the library under test.
 */
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { promisify } from 'node:util'
import type { BtrfsDriver } from '../../ts/index'
import { setMtimeNs, snapshotTree, type Tree } from './diff-tree'

const execFileP = promisify(execFile)
export const run = async (cmd: string, ...args: string[]): Promise<string> => (await execFileP(cmd, args, { maxBuffer: 64 << 20 })).stdout

export const LARGE_SIZE = 20 * 1024 * 1024
/** A 250-byte name (NAME_MAX is 255). */
export const LONG_NAME = `long-${'n'.repeat(240)}-end`
export const UNICODE_NAME = 'ünïcødé-名前-🙂 with space'
/** Eight 40-byte directories: a path of more than 330 bytes. */
export const DEEP_DIRS = Array.from({ length: 8 }, (_, i) => `deep${i}-${'d'.repeat(34)}`)
export const DEEP_FILE = [...DEEP_DIRS, 'leaf-file.txt'].join('/')
export const DEEP_LINK = [...DEEP_DIRS, 'hardlink-to-hard-a'].join('/')

/** Deterministic mtime with nanoseconds for entry number i. */
const stamp = (i: number) => BigInt(1_500_000_000 + i * 1000) * 1_000_000_000n + BigInt(123_456_789 - i)

async function write(root: string, rel: string, data: string | Buffer, mode?: number): Promise<void> {
  const p = path.join(root, rel)
  await fsp.mkdir(path.dirname(p), { recursive: true })
  await fsp.writeFile(p, data)
  if (mode !== undefined) await fsp.chmod(p, mode)
}

/** Give every entry below `root` (the root itself excluded) a distinct nanosecond mtime, directories last. */
export async function stampTimes(root: string, only?: Set<string>): Promise<void> {
  const all: { rel: string; dir: boolean }[] = []
  const walk = async (abs: string, rel: string) => {
    for (const e of (await fsp.readdir(abs, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const r = rel ? `${rel}/${e.name}` : e.name
      all.push({ rel: r, dir: e.isDirectory() })
      if (e.isDirectory()) await walk(path.join(abs, e.name), r)
    }
  }
  await walk(root, '')
  let i = 0
  for (const e of all.filter((x) => !x.dir)) if (!only || only.has(e.rel)) await setMtimeNs(path.join(root, e.rel), stamp(i++))
  // Deepest directories first, so that setting a child's time never touches its parent's.
  for (const e of all.filter((x) => x.dir).reverse()) if (!only || only.has(e.rel)) await setMtimeNs(path.join(root, e.rel), stamp(5000 + i++))
}

/** Fill `root` with every kind of entry the layer format carries. */
export async function populateEverything(root: string, opts: { large?: boolean } = {}): Promise<void> {
  // Regular files.
  await write(root, 'empty', '')
  if (opts.large !== false) await write(root, 'large.bin', randomBytes(LARGE_SIZE))
  await write(root, 'text.txt', 'hello layer\n')
  await write(root, 'binary.bin', randomBytes(70_000))
  // Modes.
  await write(root, 'modes/setuid', '#!/bin/sh\n', 0o4755)
  await write(root, 'modes/setgid', 'g\n', 0o2711)
  await write(root, 'modes/setuid-setgid-sticky', 'all\n', 0o7755)
  await write(root, 'modes/no-perms', 'none\n', 0o000)
  await write(root, 'modes/odd', 'odd\n', 0o0604)
  await fsp.mkdir(path.join(root, 'modes/sticky-dir'))
  await fsp.chmod(path.join(root, 'modes/sticky-dir'), 0o1777)
  await fsp.mkdir(path.join(root, 'modes/setgid-dir'))
  await fsp.chmod(path.join(root, 'modes/setgid-dir'), 0o2770)
  await fsp.mkdir(path.join(root, 'modes/private-dir'))
  await fsp.chmod(path.join(root, 'modes/private-dir'), 0o700)
  await write(root, 'modes/private-dir/inside', 'x')
  // Owners (chown clears setuid, so set modes again after).
  await write(root, 'owners/odd', 'odd owner\n')
  await fsp.chown(path.join(root, 'owners/odd'), 1234, 5678)
  await write(root, 'owners/setuid-odd', 'suid\n')
  await fsp.chown(path.join(root, 'owners/setuid-odd'), 1234, 5678)
  await fsp.chmod(path.join(root, 'owners/setuid-odd'), 0o6755)
  await fsp.mkdir(path.join(root, 'owners/dir'))
  await fsp.chown(path.join(root, 'owners/dir'), 4321, 8765)
  await fsp.symlink('../text.txt', path.join(root, 'owners/link'))
  await fsp.lchown(path.join(root, 'owners/link'), 42, 43)
  await write(root, 'owners/big-ids', 'big\n')
  await fsp.chown(path.join(root, 'owners/big-ids'), 3_000_000, 4_000_000)
  // Extended attributes.
  await write(root, 'xattrs/file', 'with xattrs\n')
  await run('setfattr', '-n', 'user.plain', '-v', 'hello', path.join(root, 'xattrs/file'))
  await run('setfattr', '-n', 'user.binary', '-v', '0x00ff10ee7f80', path.join(root, 'xattrs/file'))
  await run('setfattr', '-n', 'user.empty', path.join(root, 'xattrs/file'))
  await fsp.mkdir(path.join(root, 'xattrs/dir'))
  await run('setfattr', '-n', 'user.on-dir', '-v', 'dir value', path.join(root, 'xattrs/dir'))
  // File capabilities (after chown: chown clears them).
  await write(root, 'caps/ping', 'ping\n', 0o755)
  await run('setcap', 'cap_net_raw+ep', path.join(root, 'caps/ping'))
  await write(root, 'caps/odd-owner', 'cap\n', 0o750)
  await fsp.chown(path.join(root, 'caps/odd-owner'), 1234, 5678)
  await run('setcap', 'cap_sys_time,cap_chown+eip', path.join(root, 'caps/odd-owner'))
  // POSIX ACLs (access and default).
  await write(root, 'acl/file', 'acl\n')
  await run('setfacl', '-m', 'u:1234:rwx,g:5678:r', path.join(root, 'acl/file'))
  await fsp.mkdir(path.join(root, 'acl/dir'))
  await run('setfacl', '-m', 'u:1234:rx', '-d', '-m', 'u:1234:rwx,g:99:rx', path.join(root, 'acl/dir'))
  // Symlinks.
  await fsp.mkdir(path.join(root, 'links'))
  await fsp.symlink('../text.txt', path.join(root, 'links/relative'))
  await fsp.symlink('nowhere/at/all', path.join(root, 'links/dangling'))
  await fsp.symlink('/etc/passwd', path.join(root, 'links/absolute'))
  await fsp.symlink('../modes', path.join(root, 'links/to-dir'))
  await fsp.symlink(`${'../'.repeat(40)}${'t'.repeat(150)}`, path.join(root, 'links/long-target'))
  // Hardlinks: three names of one inode, across directories.
  await write(root, 'hard/a', 'linked content\n')
  await fsp.link(path.join(root, 'hard/a'), path.join(root, 'hard/b'))
  await fsp.mkdir(path.join(root, 'hard/other'))
  await fsp.link(path.join(root, 'hard/a'), path.join(root, 'hard/other/c'))
  await write(root, 'hard/mod-a', 'linked pair, modified in the child\n')
  await fsp.link(path.join(root, 'hard/mod-a'), path.join(root, 'hard/mod-b'))
  // Special files.
  await fsp.mkdir(path.join(root, 'special'))
  await run('mkfifo', '-m', '0620', path.join(root, 'special/fifo'))
  await run('mknod', '-m', '0666', path.join(root, 'special/null'), 'c', '1', '3')
  await run('mknod', '-m', '0660', path.join(root, 'special/loop'), 'b', '7', '0')
  await run('mknod', '-m', '0600', path.join(root, 'special/big-dev'), 'c', '4095', '1048575')
  // Names.
  await write(root, `names/${UNICODE_NAME}`, 'unicode\n')
  await write(root, `names/${LONG_NAME}`, 'long name\n')
  await write(root, 'names/tab\tand\nnewline', 'control characters\n')
  await write(root, 'names/.hidden', 'dot\n')
  await write(root, 'names/.wh-not-a-whiteout', 'almost\n')
  await write(root, DEEP_FILE, 'deep\n')
  // A fourth name of hard/a with a path (and so a link target, whichever comes second) over 100 bytes.
  await fsp.link(path.join(root, 'hard/a'), path.join(root, DEEP_LINK))
  // Entries the child changes.
  await write(root, 'change/modify.txt', 'old content\n')
  await write(root, 'change/chmod.txt', 'chmod me\n', 0o644)
  await write(root, 'change/chown.txt', 'chown me\n')
  await write(root, 'change/touch-only.txt', 'same bytes\n')
  await write(root, 'change/cap-later', 'gets a capability\n', 0o755)
  await write(root, 'change/unchanged-for-link', 'linked from the child\n')
  await write(root, 'change/replace-file', 'becomes a directory\n')
  await write(root, 'change/replace-dir/a', 'a\n')
  await write(root, 'change/replace-dir/sub/b', 'b\n')
  await write(root, 'change/to-symlink', 'becomes a symlink\n')
  await write(root, 'change/delete-file', 'deleted\n')
  await write(root, 'change/delete-dir/x', 'x\n')
  await write(root, 'change/delete-dir/sub/y', 'y\n')
  await fsp.symlink('x', path.join(root, 'change/delete-dir/sub/link'))
  await write(root, 'change/untouched/keep', 'kept\n')
  await stampTimes(root)
}

/** What the child layer does to the tree of populateEverything. */
export async function mutateChild(root: string): Promise<void> {
  const c = (rel: string) => path.join(root, 'change', rel)
  await fsp.writeFile(c('modify.txt'), 'new, longer content\n')
  await fsp.chmod(c('chmod.txt'), 0o600)
  await fsp.chown(c('chown.txt'), 777, 888)
  await setMtimeNs(c('touch-only.txt'), 1_234_567_890_987_654_321n)
  await run('setcap', 'cap_sys_admin+ep', c('cap-later'))
  await fsp.link(c('unchanged-for-link'), c('new-link'))
  await fsp.rm(c('replace-file'))
  await fsp.mkdir(c('replace-file'))
  await fsp.writeFile(c('replace-file/inner'), 'inside the new directory\n')
  await fsp.rm(c('replace-dir'), { recursive: true })
  await fsp.symlink('../modes', c('replace-dir'))
  await fsp.rm(c('to-symlink'))
  await fsp.symlink('/somewhere/absolute', c('to-symlink'))
  await fsp.rm(c('delete-file'))
  await fsp.rm(c('delete-dir'), { recursive: true })
  // A modified hardlinked inode: both names change.
  await fsp.writeFile(path.join(root, 'hard/mod-a'), 'both names see this\n')
  // Additions.
  await write(root, 'added/file', 'added\n')
  await write(root, 'added/h1', 'new pair\n')
  await fsp.link(path.join(root, 'added/h1'), path.join(root, 'added/h2'))
  await run('mkfifo', path.join(root, 'added/fifo'))
  await run('mknod', path.join(root, 'added/zero'), 'c', '1', '5')
  await fsp.symlink('file', path.join(root, 'added/link'))
  await write(root, 'added/empty-dir/.keep-not', '')
  await fsp.rm(path.join(root, 'added/empty-dir/.keep-not'))
  await fsp.chmod(path.join(root, 'added'), 0o750)
  await fsp.chown(path.join(root, 'added/file'), 2000, 3000)
  await run('setfattr', '-n', 'user.new', '-v', 'on an added file', path.join(root, 'added/file'))
  await write(root, [...DEEP_DIRS, 'new-leaf'].join('/'), 'deep addition\n')
  await write(root, `names/${UNICODE_NAME}-2`, 'second unicode\n')
  await fsp.mkdir(path.join(root, 'added/sticky'))
  await fsp.chmod(path.join(root, 'added/sticky'), 0o1777)
  // Times with nanoseconds on a few of the new entries.
  await setMtimeNs(path.join(root, 'added/file'), 1_111_111_111_222_333_444n)
  await setMtimeNs(path.join(root, 'added/link'), 1_111_111_112_000_000_001n)
}

/** Run `fn` with the path of layer `id`, held through get/put. */
export async function inLayer<T>(d: BtrfsDriver, id: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await d.get(id)
  try {
    return await fn(dir)
  } finally {
    await d.put(id)
  }
}

/** The tree of layer `id`. */
export const layerSnapshot = (d: BtrfsDriver, id: string): Promise<Tree> => inLayer(d, id, (dir) => snapshotTree(dir))
