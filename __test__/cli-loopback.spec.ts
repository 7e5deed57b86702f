/**
 * The embedded loopback store through the command line: `init --image PATH --image-size N` makes a
 * sparse image, formats and mounts it; a second init reuses it; `unmount` detaches it (no
 * loop device left, `losetup -j` as the oracle); the default location under XDG_DATA_HOME;
 * and its errors (an image that is not btrfs, too small, not root) leave nothing behind.
 * Everything lives in one temporary directory, torn down in test.after.always.
 */
import test from 'ava'
import { spawnSync, type ChildProcess } from 'node:child_process'
import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { BTRFS_SUPER_MAGIC, exists, loopDevices, mountsAtOrBelow, requireBtrfs } from './helpers/btrfs'
import { assertFailure, parseJson, runCli } from './helpers/cli-run'

const gate = requireBtrfs(test.meta.file)
const GIB = 2 ** 30
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
let tmp = ''
const images: string[] = []

const loopTest = (title: string, fn: (t: import('ava').ExecutionContext) => Promise<void>) => {
  if (gate.available) test.serial(title, fn)
  else if (gate.required) test(title, (t) => t.fail(`btrfs unavailable: ${gate.reason}`))
  else test.skip(title, () => undefined)
}

if (gate.available) {
  test.before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'btrfs-layers-cli-loop-'))
    await fsp.chmod(tmp, 0o755)
  })
  test.after.always(async () => {
    if (!tmp) return
    for (const mp of mountsAtOrBelow(tmp)) {
      if (spawnSync('umount', [mp]).status !== 0) spawnSync('umount', ['-l', mp])
    }
    for (const image of images) for (const dev of loopDevices(image)) spawnSync('losetup', ['-d', dev])
    if (mountsAtOrBelow(tmp).length === 0) await fsp.rm(tmp, { recursive: true, force: true })
  })
}

loopTest('init --image --image-size makes a sparse image and mounts it; init again reuses it; unmount detaches it', async (t) => {
  const image = path.join(tmp, 'x.img')
  const mnt = path.join(tmp, 'x.mnt')
  images.push(image)
  let r = await runCli(['init', '--image', image, '--image-size', '1G', '--json'])
  t.is(r.code, 0, r.stderr)
  const first = parseJson(t, r)
  t.like(first, { home: path.join(mnt, 'store'), layers: 0 })
  t.like(first.loopback, { image, mountPoint: mnt, size: GIB, created: true, mounted: true })
  const st = await fsp.stat(image)
  t.is(st.size, GIB)
  t.true(st.blocks * 512 < 64 * 2 ** 20, `sparse: ${st.blocks * 512} bytes allocated`)
  t.deepEqual(mountsAtOrBelow(mnt), [mnt])
  t.is((await fsp.statfs(mnt)).type, BTRFS_SUPER_MAGIC)
  const devices = loopDevices(image)
  t.deepEqual(devices, [first.loopback.device], 'losetup -j shows the one loop device')

  r = await runCli(['init', '--image', image, '--image-size', '1G', '--json'])
  t.is(r.code, 0, r.stderr)
  t.like(parseJson(t, r).loopback, { image, mountPoint: mnt, device: devices[0], created: false, mounted: false })
  t.deepEqual(loopDevices(image), devices, 'no second loop device')
  r = await runCli(['init', '--image', image])
  t.regex(r.stdout, /reusing the image .*x\.img/)
  t.regex(r.stdout, /already mounted on .*x\.mnt/)

  r = await runCli(['create', 'kept', '--image', image])
  t.is(r.code, 0, r.stderr)
  r = await runCli(['status', '--image', image, '--json'])
  t.like(parseJson(t, r).loopback, { image, device: devices[0] })

  r = await runCli(['unmount', '--image', image, '--json'])
  t.is(r.code, 0, r.stderr)
  t.deepEqual(parseJson(t, r), { image, unmounted: [mnt], detached: devices })
  t.deepEqual(loopDevices(image), [], 'losetup -j: no loop device left')
  t.deepEqual(mountsAtOrBelow(tmp), [])
  t.true(await exists(image), 'the image stays for next time')

  r = await runCli(['unmount', '--image', image])
  t.is(r.code, 0, r.stderr)
  t.regex(r.stdout, /is not mounted/)

  // Next time: the same image, the layer still there.
  r = await runCli(['ls', '--image', image, '--json'])
  t.is(r.code, 0, r.stderr)
  t.deepEqual(parseJson(t, r).map((m: { id: string }) => m.id), ['kept'])
  t.is((await runCli(['unmount', '--image', image])).code, 0)
  t.deepEqual(loopDevices(image), [])
})

loopTest('unmount refuses while another command uses the store, and works after', async (t) => {
  const image = path.join(tmp, 'busy.img')
  const mnt = path.join(tmp, 'busy.mnt')
  images.push(image)
  t.is((await runCli(['init', '--image', image, '--image-size', '1G'])).code, 0)
  // An apply that waits for more of its tar on stdin holds the store until interrupted.
  let apply: ChildProcess | undefined
  const running = runCli(['apply', 'slow', '-', '--image', image], {
    keepStdin: true,
    onSpawn: (child) => {
      apply = child
      child.stdin!.write(Buffer.alloc(512, 0x30).fill(0, 100)) // a partial header block
    },
  })
  for (let i = 0; i < 100 && !(await exists(path.join(mnt, 'store', 'subvolumes', 'slow'))); i++) await sleep(50)
  const r = await runCli(['unmount', '--image', image])
  assertFailure(t, r, /EBUSY/, /store in use by another process/)
  t.deepEqual(mountsAtOrBelow(mnt).slice(-1), [mnt], 'still mounted')
  apply!.kill('SIGINT')
  t.is((await running).code, 130)
  const after = await runCli(['unmount', '--image', image])
  t.is(after.code, 0, after.stderr)
  t.deepEqual(loopDevices(image), [])
})

loopTest('the default store lives under $XDG_DATA_HOME/btrfs-layers', async (t) => {
  const xdg = path.join(tmp, 'xdg')
  const data = path.join(xdg, 'btrfs-layers')
  const image = path.join(data, 'store.img')
  images.push(image)
  const env = { XDG_DATA_HOME: xdg }
  let r = await runCli(['init', '--image-size', '512M', '--json'], { env })
  t.is(r.code, 0, r.stderr)
  const out = parseJson(t, r)
  t.like(out.loopback, { image, mountPoint: path.join(data, 'mnt'), size: 512 * 2 ** 20, created: true })
  t.is(out.home, path.join(data, 'mnt', 'store'))
  t.is((await fsp.stat(data)).mode & 0o777, 0o700)
  r = await runCli(['create', 'x', '--size', '10M'], { env })
  t.is(r.code, 0, r.stderr)
  r = await runCli(['unmount'], { env })
  t.is(r.code, 0, r.stderr)
  t.deepEqual(loopDevices(image), [])
  t.deepEqual(mountsAtOrBelow(data), [])
})

loopTest('loopback errors leave nothing behind: not btrfs, too small, not root', async (t) => {
  const junk = path.join(tmp, 'junk.img')
  images.push(junk)
  await fsp.writeFile(junk, Buffer.alloc(1 << 20))
  let r = await runCli(['init', '--image', junk])
  assertFailure(t, r, /ERR_NOT_BTRFS: .*junk\.img does not hold a btrfs filesystem.*remove it or pass another --image/)
  t.is((await fsp.stat(junk)).size, 1 << 20, 'an existing file is never formatted')
  t.deepEqual(loopDevices(junk), [])

  const small = path.join(tmp, 'small.img')
  r = await runCli(['init', '--image', small, '--image-size', '16M'])
  assertFailure(t, r, /too small.*larger --image-size/s)
  t.false(await exists(small))

  const open = path.join(tmp, 'open')
  await fsp.mkdir(open, { mode: 0o777 })
  await fsp.chmod(open, 0o777)
  const mine = path.join(open, 'user.img')
  r = await runCli(['init', '--image', mine], { uid: 65534, gid: 65534 })
  assertFailure(t, r, /needs root.*run with sudo/s)
  t.false(await exists(mine), 'a first run that cannot mount removes its image')
  t.deepEqual(mountsAtOrBelow(tmp), [])
})
