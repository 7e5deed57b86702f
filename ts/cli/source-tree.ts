/** The demo's input: a real directory tree on this machine, packed by GNU tar, and edits to it. */
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { CliError } from './hints'

/** The installed `typescript` package (a dev dependency), else /usr/share/doc, else this package's dist. */
export function pickSourceTree(packageDir: string): string {
  try {
    return path.dirname(require.resolve('typescript/package.json', { paths: [packageDir] }))
  } catch {
    // not installed: fall through
  }
  for (const dir of ['/usr/share/doc', path.join(packageDir, 'dist')]) if (fs.existsSync(dir)) return dir
  throw new CliError('found no directory tree to import', 'ENOENT', 'pass one with --source DIR')
}

/** Regular files and directories below `dir` (not following symlinks), and their bytes. */
export async function measureTree(dir: string): Promise<{ files: number; dirs: number; bytes: number }> {
  const out = { files: 0, dirs: 0, bytes: 0 }
  const walk = async (d: string): Promise<void> => {
    for (const e of await fsp.readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name)
      if (e.isDirectory()) {
        out.dirs++
        await walk(p)
      } else if (e.isFile()) {
        out.files++
        out.bytes += (await fsp.lstat(p)).size
      }
    }
  }
  await walk(dir)
  return out
}

/** `tar -c -f out -C parent name` with GNU tar: the import goes through the real tar path. */
export function gnuTar(source: string, out: string, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('tar', ['-c', '-f', out, '-C', path.dirname(source), path.basename(source)], { stdio: ['ignore', 'ignore', 'pipe'], signal })
    let err = ''
    child.stderr.on('data', (d) => (err += d))
    child.on('error', (e) => {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') reject(new CliError('tar not found', 'ERR_PREREQUISITES', 'install GNU tar (apt-get install tar)'))
      else reject(e)
    })
    // GNU tar exits 1 when a file changed while it read it: the archive is still whole.
    child.on('close', (code) => (code === 0 || code === 1 ? resolve() : reject(new CliError(`tar -c ${source} failed: ${err.trim()}`, 'ERR_TAR'))))
  })
}

/** The first `n` regular files below `dir`, in a stable order, as paths relative to it. */
export async function someFiles(dir: string, n: number, skip = 0): Promise<string[]> {
  const out: string[] = []
  let seen = 0
  const walk = async (rel: string): Promise<void> => {
    const entries = (await fsp.readdir(path.join(dir, rel), { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))
    for (const e of entries) {
      if (out.length >= n) return
      const r = rel ? `${rel}/${e.name}` : e.name
      if (e.isDirectory()) await walk(r)
      else if (e.isFile() && seen++ >= skip) out.push(r)
    }
  }
  await walk('')
  return out
}

/** The first directory below `dir` (pre-order, sorted) holding at least `min` entries, relative to `dir`. */
export async function someDirectory(dir: string, min = 2): Promise<string | undefined> {
  const walk = async (rel: string): Promise<string | undefined> => {
    const entries = (await fsp.readdir(path.join(dir, rel), { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))
    for (const e of entries) {
      if (!e.isDirectory()) continue
      const r = rel ? `${rel}/${e.name}` : e.name
      if ((await fsp.readdir(path.join(dir, r))).length >= min) return r
      const deeper = await walk(r)
      if (deeper) return deeper
    }
    return undefined
  }
  return walk('')
}
