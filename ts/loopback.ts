/**
 * The embedded default store: a btrfs filesystem in a sparse image file, loop-mounted at a
 * stable mount point and reused from one run to the next, for machines with no btrfs of
 * their own. Needs root (loop devices and mounts).
 *
 *   const store = await openLoopbackStore()          // ~/.local/share/btrfs-layers/store.img on .../mnt
 *   const driver = await BtrfsDriver.init(path.join(store.mountPoint, 'store'))
 *   ...
 *   await closeLoopbackStore()                       // unmount, detach the loop device
 *
 * External programs: `mkfs.btrfs` (btrfs-progs) formats a new image; it is the only
 * btrfs-progs program this package runs, and only here, because writing a filesystem is not
 * what the library is for. Mounting uses util-linux `mount -o loop` / `umount` (which set up
 * and tear down the loop device) and `losetup -d` for a loop device left attached.
 */
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { parseBytes } from './driver'
import { BtrfsError } from './errors'

/** 4 GiB: the default size of a new image (sparse: it takes only what the filesystem uses). */
export const DEFAULT_IMAGE_SIZE = 4 * 2 ** 30

const BTRFS_SUPER_MAGIC = 0x9123683e
const IMAGE_NAME = 'store.img'

export interface LoopbackOptions {
  /** The image file; default `<dataDir>/store.img`. */
  image?: string
  /** Size of a new image, bytes or a string like `'8G'`; default 4 GiB. An existing image keeps its size. */
  size?: number | string
  /** Default `$XDG_DATA_HOME/btrfs-layers`, else `~/.local/share/btrfs-layers`. */
  dataDir?: string
  /** Default `<dataDir>/mnt` for the default image, else `<image without .img>.mnt` next to the image. */
  mountPoint?: string
}

export interface LoopbackStore {
  image: string
  /** Where the filesystem is mounted (the mount of its top-level subvolume). */
  mountPoint: string
  /** The loop device, e.g. `/dev/loop3`. */
  device: string
  /** Apparent size of the image file. */
  size: number
  /** Bytes the image takes on its filesystem (it is sparse). */
  allocated: number
  /** Whether this call made and formatted the image. */
  created: boolean
  /** Whether this call mounted it (false: it was mounted already). */
  mounted: boolean
}

export interface LoopbackState {
  image: string
  mountPoint: string
  exists: boolean
  size: number
  allocated: number
  /** Loop devices backed by the image. */
  devices: string[]
  /** Every mount of those devices (bind mounts included), deepest first. */
  mounts: string[]
}

/** `$XDG_DATA_HOME/btrfs-layers` or `~/.local/share/btrfs-layers`. */
export function defaultDataDir(): string {
  const xdg = process.env.XDG_DATA_HOME
  return path.join(xdg && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), '.local', 'share'), 'btrfs-layers')
}

function locate(o: LoopbackOptions): { image: string; mountPoint: string; dataDir: string } {
  const dataDir = path.resolve(o.dataDir ?? defaultDataDir())
  const image = path.resolve(o.image ?? path.join(dataDir, IMAGE_NAME))
  const isDefault = image === path.join(dataDir, IMAGE_NAME)
  const mountPoint = path.resolve(o.mountPoint ?? (isDefault ? path.join(dataDir, 'mnt') : image.replace(/\.img$/, '') + '.mnt'))
  return { image, mountPoint, dataDir }
}

/** What is there now: the image, its loop devices and their mounts. Changes nothing. */
export async function loopbackState(options: LoopbackOptions = {}): Promise<LoopbackState> {
  const { image, mountPoint } = locate(options)
  let st: fs.Stats | undefined
  try {
    st = await fsp.stat(image)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw wrapFs(e, 'stat', image)
  }
  const devices = st ? await loopDevicesOf(image) : []
  const mounts = mountsOf(devices)
  return { image, mountPoint, exists: !!st, size: st?.size ?? 0, allocated: (st?.blocks ?? 0) * 512, devices, mounts }
}

/**
 * Open the loopback store: make and format the image the first time, mount it (or reuse the
 * mount it already has), and return where it is.
 * @throws {BtrfsError} `EPERM` when not root, `ERR_PREREQUISITES` when mkfs.btrfs, loop
 *   devices or the kernel's btrfs are missing or the image's filesystem cannot hold a sparse
 *   file, `ERR_NOT_BTRFS` when an existing image is not btrfs, `EINVAL` for a bad size,
 *   `ENOSPC`, `EACCES`.
 */
export async function openLoopbackStore(options: LoopbackOptions = {}): Promise<LoopbackStore> {
  const { image, mountPoint, dataDir } = locate(options)
  const size = parseBytes('size', options.size ?? DEFAULT_IMAGE_SIZE)
  let created = false
  if (!fs.existsSync(image)) {
    await mkdirOrThrow(path.dirname(image), image === path.join(dataDir, IMAGE_NAME) ? 0o700 : 0o755)
    created = await createImage(image, size)
  }
  try {
    const state = await loopbackState(options)
    const top = topMount(state)
    if (top) return await describe(image, top.mountPoint, top.device, created, false)
    await mkdirOrThrow(mountPoint, 0o755)
    const device = await mountImage(image, mountPoint, state.devices)
    return await describe(image, mountPoint, device, created, true)
  } catch (e) {
    // Undo a first run that cannot mount (not root, no loop devices): leave nothing behind.
    if (created) await fsp.rm(image, { force: true })
    if (!isMounted(mountPoint)) await fsp.rmdir(mountPoint).catch(() => undefined)
    throw e
  }
}

/**
 * Unmount the loopback store (every mount of its loop device, deepest first) and detach the
 * loop device. Nothing mounted is not an error. The image stays for next time.
 * @throws {BtrfsError} `EBUSY` when a process still uses the filesystem, `EPERM` when not root.
 */
export async function closeLoopbackStore(options: LoopbackOptions = {}): Promise<{ image: string; unmounted: string[]; detached: string[] }> {
  const state = await loopbackState(options)
  const unmounted: string[] = []
  for (const mp of state.mounts) {
    const r = await run('umount', [mp])
    if (!r.ok) {
      const code = /busy/i.test(r.out) ? 'EBUSY' : /permission|not permitted|only root|superuser/i.test(r.out) ? 'EPERM' : 'EINVAL'
      const what =
        code === 'EBUSY'
          ? 'the store is in use by another process (a shell or program with files open under it): close it and try again'
          : code === 'EPERM'
            ? 'unmounting needs root: run with sudo'
            : r.out
      throw new BtrfsError(code, `${code}: cannot unmount ${mp}: ${what}`, { syscall: 'umount', path: mp })
    }
    unmounted.push(mp)
  }
  // `mount -o loop` sets autoclear, so the device goes when its last user does; make sure.
  let left = await loopDevicesOf(state.image)
  for (let i = 0; i < 20 && left.length > 0; i++) {
    await sleep(50)
    left = await loopDevicesOf(state.image)
  }
  const detached = [...state.devices]
  for (const dev of left) {
    const r = await run('losetup', ['-d', dev])
    if (!r.ok) throw new BtrfsError('EBUSY', `EBUSY: cannot detach ${dev} from ${state.image}: ${r.out}`, { syscall: 'losetup', path: dev })
  }
  if (!isMounted(state.mountPoint)) await fsp.rmdir(state.mountPoint).catch(() => undefined)
  return { image: state.image, unmounted, detached }
}

async function describe(image: string, mountPoint: string, device: string, created: boolean, mounted: boolean): Promise<LoopbackStore> {
  const st = await fsp.stat(image)
  return { image, mountPoint, device, size: st.size, allocated: st.blocks * 512, created, mounted }
}

/** Make, size and format the image under a temporary name, then link it into place. */
async function createImage(image: string, size: number): Promise<boolean> {
  const tmp = `${image}.${process.pid}.tmp`
  const dir = path.dirname(image)
  let fh: fsp.FileHandle | undefined
  try {
    fh = await fsp.open(tmp, 'wx', 0o600)
    await fh.truncate(size)
    const st = await fh.stat()
    await fh.close()
    fh = undefined
    if (st.blocks * 512 > size / 2) {
      throw new BtrfsError(
        'ERR_PREREQUISITES',
        `ERR_PREREQUISITES: the filesystem of ${dir} does not support sparse files (a ${fmt(size)} image took ${fmt(st.blocks * 512)}); put the image on another filesystem with --image PATH`,
        { path: image },
      )
    }
    const r = await run('mkfs.btrfs', ['-q', '-L', 'btrfs-layers', tmp])
    if (r.missing) {
      throw new BtrfsError('ERR_PREREQUISITES', 'ERR_PREREQUISITES: mkfs.btrfs not found: install btrfs-progs (apt-get install btrfs-progs)', {
        syscall: 'mkfs.btrfs',
        path: image,
      })
    }
    if (!r.ok && process.getuid?.() !== 0 && /permission|not permitted/i.test(r.out)) {
      throw new BtrfsError('EPERM', `EPERM: making the loopback store needs root (mkfs.btrfs, loop devices, mount): run with sudo, or pass --home DIR on a btrfs you can write (${r.out})`, {
        syscall: 'mkfs.btrfs',
        path: image,
      })
    }
    if (!r.ok) {
      const small = /too small|minimum size/i.test(r.out)
      throw new BtrfsError(
        small ? 'EINVAL' : 'ERR_PREREQUISITES',
        `${small ? 'EINVAL' : 'ERR_PREREQUISITES'}: mkfs.btrfs ${image} failed: ${r.out}${small ? ' (use a larger --image-size, e.g. 1G)' : ''}`,
        { syscall: 'mkfs.btrfs', path: image },
      )
    }
    try {
      await fsp.link(tmp, image) // never replaces: another process may have made it meanwhile
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false
      throw e
    }
    return true
  } catch (e) {
    if (e instanceof BtrfsError) throw e
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'EFBIG' || code === 'EINVAL') {
      throw new BtrfsError(
        'ERR_PREREQUISITES',
        `ERR_PREREQUISITES: the filesystem of ${dir} cannot hold a ${fmt(size)} file (${code}; FAT?): pass --image PATH on another filesystem or a smaller --image-size`,
        { path: image },
      )
    }
    throw wrapFs(e, 'create image', image)
  } finally {
    await fh?.close().catch(() => undefined)
    await fsp.rm(tmp, { force: true })
  }
}

/** `mount -o loop image mountPoint` (or mount a loop device already attached to it). */
async function mountImage(image: string, mountPoint: string, attached: string[]): Promise<string> {
  const args = attached.length > 0 ? [attached[0], mountPoint] : ['-o', 'loop', image, mountPoint]
  const r = await run('mount', args)
  if (!r.ok) {
    // Another process may have mounted it meanwhile.
    const top = topMount(await loopbackState({ image, mountPoint }))
    if (top) return top.device
    throw mountError(image, r)
  }
  const type = (await fsp.statfs(mountPoint)).type
  const top = topMount(await loopbackState({ image, mountPoint }))
  if (type !== BTRFS_SUPER_MAGIC || !top) {
    await run('umount', [mountPoint])
    throw new BtrfsError('ERR_NOT_BTRFS', `ERR_NOT_BTRFS: ${image} is not a btrfs image: remove it or pass another --image`, { path: image })
  }
  return top.device
}

function mountError(image: string, r: RunResult): BtrfsError {
  const out = r.out.split('\n')[0] // mount's next line only points at dmesg
  const root = process.getuid?.() === 0
  if (r.missing) return new BtrfsError('ERR_PREREQUISITES', 'ERR_PREREQUISITES: mount not found: install util-linux', { syscall: 'mount', path: image })
  // Without root, loop devices cannot be set up at all: whatever mount says about them
  // ("failed to setup loop device" when it cannot open one), the answer is root.
  if (!root && /permission|not permitted|only root|superuser|must be|failed to setup loop device|loop-control/i.test(out)) {
    return new BtrfsError('EPERM', `EPERM: mounting the loopback store needs root (loop devices, mount): run with sudo, or pass --home DIR on a btrfs you can write (${out})`, {
      syscall: 'mount',
      path: image,
    })
  }
  if (/unknown filesystem type/i.test(out)) {
    return new BtrfsError('ERR_PREREQUISITES', `ERR_PREREQUISITES: this kernel has no btrfs (modprobe btrfs): ${out}`, { syscall: 'mount', path: image })
  }
  if (/wrong fs type|bad superblock|bad option/i.test(out)) {
    return new BtrfsError('ERR_NOT_BTRFS', `ERR_NOT_BTRFS: ${image} does not hold a btrfs filesystem (${out}): remove it or pass another --image`, {
      syscall: 'mount',
      path: image,
    })
  }
  if (/failed to setup loop device|free loop device|loop-control|no such device/i.test(out)) {
    return new BtrfsError(
      'ERR_PREREQUISITES',
      `ERR_PREREQUISITES: no loop device available (modprobe loop; in a container, give it /dev/loop-control and the loop devices): ${out}`,
      { syscall: 'mount', path: image },
    )
  }
  return new BtrfsError(root ? 'EINVAL' : 'EPERM', `${root ? 'EINVAL' : 'EPERM'}: mount -o loop ${image} failed: ${out}${root ? '' : ' (run with sudo)'}`, {
    syscall: 'mount',
    path: image,
  })
}

/** The mount of the filesystem's top (root `/` of the device), preferring the stable mount point. */
function topMount(state: LoopbackState): { mountPoint: string; device: string } | undefined {
  const rows = mountRows().filter((m) => state.devices.includes(m.source) && m.root === '/')
  const best = rows.find((m) => m.mountPoint === state.mountPoint) ?? rows.sort((a, b) => a.mountPoint.length - b.mountPoint.length)[0]
  return best && { mountPoint: best.mountPoint, device: best.source }
}

interface MountRow {
  root: string
  mountPoint: string
  source: string
}

const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)))

function mountRows(): MountRow[] {
  const rows: MountRow[] = []
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [pre, post] = line.split(' - ')
    if (!post) continue
    const f = pre.split(' ')
    rows.push({ root: unescape(f[3]), mountPoint: unescape(f[4]), source: unescape(post.split(' ')[1] ?? '') })
  }
  return rows
}

function mountsOf(devices: string[]): string[] {
  return [...new Set(mountRows().filter((m) => devices.includes(m.source)).map((m) => m.mountPoint))].sort((a, b) => b.length - a.length)
}

function isMounted(p: string): boolean {
  return mountRows().some((m) => m.mountPoint === p)
}

/** Loop devices whose backing file is `image` (from sysfs; no losetup needed). */
async function loopDevicesOf(image: string): Promise<string[]> {
  let real: string
  try {
    real = await fsp.realpath(image)
  } catch {
    return []
  }
  const out: string[] = []
  let names: string[]
  try {
    names = (await fsp.readdir('/sys/block')).filter((n) => n.startsWith('loop'))
  } catch {
    return []
  }
  for (const name of names) {
    try {
      const backing = (await fsp.readFile(`/sys/block/${name}/loop/backing_file`, 'utf8')).trim()
      if (backing === real) out.push(`/dev/${name}`)
    } catch {
      // not attached
    }
  }
  return out.sort()
}

/** statfs magic numbers of pseudo filesystems, where no image or mount point can be made. */
const PSEUDO_FILESYSTEMS: Record<number, string> = {
  0x9fa0: 'proc',
  0x62656572: 'sysfs',
  0x1cd1: 'devpts',
  0x27e0eb: 'cgroup',
  0x63677270: 'cgroup2',
  0x64626720: 'debugfs',
  0x74726163: 'tracefs',
  0x73636673: 'securityfs',
  0xcafe4a11: 'bpf',
  0x6165676c: 'pstore',
  0x62656570: 'configfs',
  0xde5e81e4: 'efivarfs',
  0x19800202: 'mqueue',
  0x42494e4d: 'binfmt_misc',
  0xf97cff8c: 'selinuxfs',
  0x6e736673: 'nsfs',
  0x65735543: 'fusectl',
  0x0187: 'autofs',
}

/**
 * Check, before any mkdir, that `dir` can be made and hold files: its nearest existing
 * ancestor is a writable directory on a filesystem that stores files. (Node's recursive mkdir
 * never settles below /proc, spinning a core.)
 */
async function requireMakeable(dir: string): Promise<void> {
  let existing = path.resolve(dir)
  let st: fs.Stats | undefined
  for (;;) {
    try {
      st = await fsp.stat(existing)
      break
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code
      if (code !== 'ENOENT') throw wrapFs(e, 'stat', existing)
      const up = path.dirname(existing)
      if (up === existing) throw wrapFs(e, 'stat', existing)
      existing = up
    }
  }
  const refuse = (why: string) =>
    new BtrfsError('EINVAL', `EINVAL: cannot make ${dir}: ${why}; pass --image PATH in a directory on a disk filesystem`, { syscall: 'mkdir', path: dir })
  if (!st.isDirectory()) throw refuse(`${existing} is not a directory`)
  const pseudo = PSEUDO_FILESYSTEMS[(await fsp.statfs(existing)).type]
  if (pseudo) throw refuse(`${existing} is on ${pseudo}, a pseudo filesystem that cannot hold files`)
  try {
    await fsp.access(existing, fs.constants.W_OK | fs.constants.X_OK)
  } catch (e) {
    throw wrapFs(e, 'mkdir', dir)
  }
}

async function mkdirOrThrow(dir: string, mode: number): Promise<void> {
  await requireMakeable(dir)
  try {
    await fsp.mkdir(dir, { recursive: true, mode })
  } catch (e) {
    throw wrapFs(e, 'mkdir', dir)
  }
}

function wrapFs(e: unknown, what: string, p: string): BtrfsError {
  const err = e as NodeJS.ErrnoException
  const code = err.code ?? 'EINVAL'
  const hint =
    code === 'ENOSPC'
      ? ': no space left for the image; free some or pass --image PATH elsewhere'
      : code === 'EACCES' || code === 'EPERM'
        ? ': permission denied; run with sudo or pass --image PATH in a directory you can write'
        : code === 'EROFS'
          ? ': read-only filesystem; pass --image PATH elsewhere'
          : ''
  return new BtrfsError(code, `${code}: ${what} ${p} failed${hint} (${err.message})`, { errno: err.errno, syscall: what, path: p })
}

interface RunResult {
  ok: boolean
  missing: boolean
  out: string
}

function run(cmd: string, args: string[]): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    child.on('error', (e) => resolve({ ok: false, missing: (e as NodeJS.ErrnoException).code === 'ENOENT', out: e.message }))
    child.on('close', (code) => resolve({ ok: code === 0, missing: false, out: out.trim() }))
  })
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function fmt(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024
    i++
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`
}
