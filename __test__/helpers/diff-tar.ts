/**
 * A small tar writer for the diff specs: raw 512-byte ustar headers with checksums, PAX
 * extended headers and GNU long names, so that tests can express exactly the archive they
 * mean, hostile ones included (`..`, absolute names, links out of the root, bad checksums,
 * out-of-range device numbers, truncations). Also decompression bombs built without
 * compressing a gigabyte (multi-member gzip, zstd RLE blocks), and GNU tar / zstd CLI wrappers.
 */
import { execFile, spawn } from 'node:child_process'
import { gzipSync } from 'node:zlib'
import { promisify } from 'node:util'
import { Readable } from 'node:stream'

const execFileP = promisify(execFile)

export const BLOCK = 512

export interface RawEntry {
  /** Name (ustar name field, up to 100 bytes; longer ones need `pax.path` or `gnuLongName`). */
  name: string | Buffer
  /** Type flag: '0' file, '1' hardlink, '2' symlink, '3' char, '4' block, '5' dir, '6' fifo, ... */
  type?: string
  mode?: number
  uid?: number
  gid?: number
  /** Seconds. */
  mtime?: number
  body?: Buffer | string
  /** Header size field; the body's length by default. */
  size?: number
  linkname?: string | Buffer
  /** A number, or the raw text of the 8-byte field. */
  devmajor?: number | string
  devminor?: number | string
  /** The ustar prefix field. */
  prefix?: string | Buffer
  /** PAX records, written as an 'x' header before this entry. */
  pax?: Record<string, string | Buffer>
  /** Put the name in a GNU 'L' long-name entry before this one. */
  gnuLongName?: string | Buffer
  /** Put the link name in a GNU 'K' entry before this one. */
  gnuLongLink?: string | Buffer
  /** Write a wrong checksum. */
  badChecksum?: boolean
}

const buf = (v: string | Buffer) => (typeof v === 'string' ? Buffer.from(v, 'utf8') : v)

function put(h: Buffer, off: number, len: number, v: string | Buffer): void {
  const b = buf(v)
  if (b.length > len) throw new Error(`tar field at ${off} too long: ${b.length} > ${len}`)
  b.copy(h, off)
}

function octal(h: Buffer, off: number, len: number, v: number): void {
  const s = v.toString(8)
  if (s.length > len - 1) {
    // Fill the field completely (no NUL): 8^len - 1 at most.
    if (s.length > len) throw new Error(`octal ${v} does not fit ${len} bytes`)
    put(h, off, len, s)
  } else {
    put(h, off, len, s.padStart(len - 1, '0') + '\0')
  }
}

/** One 512-byte ustar header. */
export function header(e: RawEntry): Buffer {
  const h = Buffer.alloc(BLOCK)
  const body = e.body === undefined ? Buffer.alloc(0) : buf(e.body)
  put(h, 0, 100, e.name)
  octal(h, 100, 8, e.mode ?? (e.type === '5' ? 0o755 : 0o644))
  octal(h, 108, 8, e.uid ?? 0)
  octal(h, 116, 8, e.gid ?? 0)
  octal(h, 124, 12, e.size ?? body.length)
  octal(h, 136, 12, e.mtime ?? 1_600_000_000)
  put(h, 156, 1, e.type ?? '0')
  if (e.linkname !== undefined) put(h, 157, 100, e.linkname)
  put(h, 257, 6, 'ustar\0')
  put(h, 263, 2, '00')
  put(h, 265, 32, 'root')
  put(h, 297, 32, 'root')
  for (const [off, v] of [
    [329, e.devmajor],
    [337, e.devminor],
  ] as const) {
    if (typeof v === 'number') octal(h, off, 8, v)
    else if (typeof v === 'string') put(h, off, 8, v)
    else octal(h, off, 8, 0)
  }
  if (e.prefix !== undefined) put(h, 345, 155, e.prefix)
  setChecksum(h)
  if (e.badChecksum) h[148] = h[148] === 0x31 ? 0x32 : 0x31
  return h
}

/** Recompute a header's checksum in place. */
export function setChecksum(h: Buffer): void {
  h.fill(0x20, 148, 156)
  let sum = 0
  for (let i = 0; i < BLOCK; i++) sum += h[i]
  put(h, 148, 8, sum.toString(8).padStart(6, '0') + '\0 ')
}

const pad = (n: number) => Buffer.alloc((BLOCK - (n % BLOCK)) % BLOCK)

/** PAX records: "<len> <key>=<value>\n" where len counts the whole record. */
export function paxRecords(rec: Record<string, string | Buffer>): Buffer {
  const parts: Buffer[] = []
  for (const [k, v0] of Object.entries(rec)) {
    const v = buf(v0)
    const rest = Buffer.byteLength(k) + v.length + 3
    let len = rest + 1
    while (len !== rest + String(len).length) len = rest + String(len).length
    parts.push(Buffer.from(`${len} ${k}=`), v, Buffer.from('\n'))
  }
  return Buffer.concat(parts)
}

/** The bytes of one entry: its extension headers, header, body and padding. */
export function entryBytes(e: RawEntry): Buffer {
  const parts: Buffer[] = []
  const special = (type: string, data: Buffer, name: string) => {
    parts.push(header({ name, type, body: data, mode: 0o644 }), data, pad(data.length))
  }
  if (e.gnuLongName !== undefined) {
    const d = Buffer.concat([buf(e.gnuLongName), Buffer.from([0])])
    special('L', d, '././@LongLink')
  }
  if (e.gnuLongLink !== undefined) {
    const d = Buffer.concat([buf(e.gnuLongLink), Buffer.from([0])])
    special('K', d, '././@LongLink')
  }
  // Names and link names too long for ustar go into PAX records (unless given otherwise).
  const pax = { ...(e.pax ?? {}) }
  const h = { ...e }
  if (buf(e.name).length > 100 && e.gnuLongName === undefined) {
    pax.path ??= e.name
    h.name = 'PaxHeaders-long-name'
  }
  if (e.linkname !== undefined && buf(e.linkname).length > 100 && e.gnuLongLink === undefined) {
    pax.linkpath ??= e.linkname
    h.linkname = 'PaxHeaders-long-link'
  }
  if (Object.keys(pax).length > 0) special('x', paxRecords(pax), 'PaxHeaders/entry')
  const body = e.body === undefined ? Buffer.alloc(0) : buf(e.body)
  parts.push(header(h), body, pad(body.length))
  return Buffer.concat(parts)
}

/** End-of-archive: two zero blocks. */
export const END = Buffer.alloc(2 * BLOCK)

/** A whole archive (with the end marker unless `end: false`). */
export function buildTar(entries: RawEntry[], opts: { end?: boolean } = {}): Buffer {
  return Buffer.concat([...entries.map(entryBytes), ...(opts.end === false ? [] : [END])])
}

// Shorthands.
export const file = (name: string, body: string | Buffer = '', extra: Partial<RawEntry> = {}): RawEntry => ({ name, type: '0', body, ...extra })
export const dir = (name: string, extra: Partial<RawEntry> = {}): RawEntry => ({ name, type: '5', ...extra })
export const symlink = (name: string, target: string, extra: Partial<RawEntry> = {}): RawEntry => ({ name, type: '2', linkname: target, mode: 0o777, ...extra })
export const hardlink = (name: string, target: string, extra: Partial<RawEntry> = {}): RawEntry => ({ name, type: '1', linkname: target, ...extra })

// ---------------------------------------------------------------------------------------------
// Bombs
// ---------------------------------------------------------------------------------------------

/**
 * A gzip stream (several members, which is legal gzip) of a tar holding one file of `total`
 * zeros: about 1 KiB compressed per MiB, so ~1 MiB for 1 GiB, made in well under a second by
 * compressing 64 MiB of zeros once and repeating that member.
 */
export function gzipBomb(total = 1 << 30): Buffer {
  const chunk = 64 << 20
  const head = header({ name: 'zeros', type: '0', size: total })
  const zeros = gzipSync(Buffer.alloc(chunk), { level: 9 })
  const members: Buffer[] = [gzipSync(head, { level: 9 })]
  let left = total + 2 * BLOCK // body (a multiple of 512) and the end marker
  while (left >= chunk) {
    members.push(zeros)
    left -= chunk
  }
  if (left > 0) members.push(gzipSync(Buffer.alloc(left), { level: 9 }))
  return Buffer.concat(members)
}

/**
 * A zstd frame of a tar holding one file of `total` zeros (a multiple of 128 KiB), written by
 * hand: a raw block with the header, then RLE blocks of 128 KiB zeros (4 bytes each).
 */
export function zstdBomb(total = 1 << 30): Buffer {
  const blockMax = 128 << 10
  if (total % blockMax !== 0) throw new Error('zstdBomb: total must be a multiple of 128 KiB')
  const blockHeader = (last: boolean, type: number, size: number) => {
    const v = (last ? 1 : 0) | (type << 1) | (size << 3)
    return Buffer.from([v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff])
  }
  // Magic, frame header descriptor 0 (no content size, no checksum), window 2^17.
  const parts: Buffer[] = [Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3])]
  parts.push(blockHeader(false, 0, BLOCK), header({ name: 'zeros', type: '0', size: total }))
  const rle = Buffer.concat([blockHeader(false, 1, blockMax), Buffer.from([0])])
  for (let i = 0; i < total / blockMax; i++) parts.push(rle)
  parts.push(blockHeader(true, 1, 2 * BLOCK), Buffer.from([0]))
  return Buffer.concat(parts)
}

// ---------------------------------------------------------------------------------------------
// CLI wrappers
// ---------------------------------------------------------------------------------------------

/** Run a program with `input` on stdin; resolve with stdout (rejects on a non-zero exit). */
export function pipeThrough(cmd: string, args: string[], input: Buffer | Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] })
    const out: Buffer[] = []
    let err = ''
    child.stdout.on('data', (c: Buffer) => out.push(c))
    child.stderr.on('data', (c: Buffer) => (err += c.toString()))
    child.on('error', reject)
    child.on('close', (code) => {
      if (code === 0) resolve(Buffer.concat(out))
      else reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err}`))
    })
    child.stdin.on('error', () => {})
    if (Buffer.isBuffer(input)) child.stdin.end(input)
    else input.pipe(child.stdin)
  })
}

export const zstdCompress = (b: Buffer) => pipeThrough('zstd', ['-q', '-c', '-3'], b)
export const zstdDecompress = (b: Buffer) => pipeThrough('zstd', ['-q', '-d', '-c'], b)

export interface TarListing {
  /** Type character of `tar -tv` (first column's first letter). */
  kind: string
  name: string
  /** For hardlinks and symlinks. */
  link?: string
}

/**
 * GNU tar's listing of an archive (`tar -tv --quoting-style=escape`, names unquoted), in
 * stream order.
 */
export async function gnuList(tarPath: string): Promise<TarListing[]> {
  const { stdout } = await execFileP('tar', ['--quoting-style=escape', '--numeric-owner', '--full-time', '-tvf', tarPath], {
    maxBuffer: 256 * 1024 * 1024,
  })
  const out: TarListing[] = []
  for (const line of stdout.split('\n')) {
    if (!line.trim()) continue
    // perms owner size date time name [-> target | link to target]
    const m = /^(\S)\S*\s+\S+\s+(?:\d+,\s*\d+|\d+)\s+\S+\s+\S+\s+(.*)$/.exec(line)
    if (!m) throw new Error(`cannot parse tar listing line: ${line}`)
    let name = m[2]
    let link: string | undefined
    if (m[1] === 'l') [name, link] = splitOnce(name, ' -> ')
    else if (m[1] === 'h') [name, link] = splitOnce(name, ' link to ')
    out.push({ kind: m[1], name: unescapeTar(name), link: link === undefined ? undefined : unescapeTar(link) })
  }
  return out
}

function splitOnce(s: string, sep: string): [string, string] {
  const i = s.indexOf(sep)
  return i < 0 ? [s, ''] : [s.slice(0, i), s.slice(i + sep.length)]
}

/** Undo GNU tar's `escape` quoting (C escapes and octal bytes). */
export function unescapeTar(s: string): string {
  const bytes: number[] = []
  const simple: Record<string, number> = { n: 10, t: 9, r: 13, f: 12, v: 11, b: 8, a: 7, '\\': 92, '?': 63, ' ': 32 }
  for (let i = 0; i < s.length; i++) {
    const c = s[i]
    if (c === '\\' && /^[0-7]{3}$/.test(s.slice(i + 1, i + 4))) {
      bytes.push(parseInt(s.slice(i + 1, i + 4), 8))
      i += 3
    } else if (c === '\\' && s[i + 1] in simple) {
      bytes.push(simple[s[i + 1]])
      i += 1
    } else {
      const cp = s.codePointAt(i) ?? 0
      if (cp > 0xffff) i += 1
      bytes.push(...Buffer.from(String.fromCodePoint(cp), 'utf8'))
    }
  }
  return Buffer.from(bytes).toString('utf8')
}

/** Collect a Readable into one Buffer. */
export async function collect(r: Readable): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of r) parts.push(typeof c === 'string' ? Buffer.from(c) : (c as Buffer))
  return Buffer.concat(parts)
}
