/**
 * The demo: a real scenario on a layer store. Uses the btrfs directory in BTRFS_LAYERS_DIR, or
 * else creates a sparse loopback image (BTRFS_LAYERS_IMAGE, default
 * ~/.local/share/btrfs-layers/demo.img, size BTRFS_LAYERS_IMAGE_SIZE, default 4G), formats it
 * with mkfs.btrfs the first time, mounts it, and reuses it next time.
 */
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { BtrfsDriver, deleteSubvolume, filesystemInfo, listSubvolumes, parseBytes } from './index'

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
}

function ms(t0: bigint): string {
  return `${(Number(process.hrtime.bigint() - t0) / 1e6).toFixed(2)} ms`
}

async function step<T>(what: string, fn: () => Promise<T>): Promise<T> {
  const t0 = process.hrtime.bigint()
  const r = await fn()
  console.log(`  ${what.padEnd(58)} ${ms(t0).padStart(12)}`)
  return r
}

/** Mount (creating on first use) the loopback image; returns the mount point and an unmount. */
function loopbackStore(): { dir: string; close: () => void } {
  const image = process.env.BTRFS_LAYERS_IMAGE ?? path.join(os.homedir(), '.local/share/btrfs-layers/demo.img')
  const size = parseBytes('BTRFS_LAYERS_IMAGE_SIZE', process.env.BTRFS_LAYERS_IMAGE_SIZE ?? '4G')
  if (!fs.existsSync(image)) {
    fs.mkdirSync(path.dirname(image), { recursive: true })
    const fd = fs.openSync(image, 'wx', 0o600)
    fs.ftruncateSync(fd, size)
    fs.closeSync(fd)
    sh('mkfs.btrfs', ['-q', '-L', 'btrfs-layers-demo', image])
    console.log(`created sparse image ${image} (${size} bytes) and formatted it`)
  } else {
    console.log(`reusing image ${image}`)
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'btrfs-layers-demo-'))
  sh('mount', ['-o', 'loop', image, dir])
  return {
    dir,
    close: () => {
      sh('umount', [dir])
      fs.rmdirSync(dir)
    },
  }
}

function copyTree(src: string, dst: string, limit: { files: number }): void {
  for (const e of fs.readdirSync(src, { withFileTypes: true })) {
    if (limit.files <= 0) return
    const s = path.join(src, e.name)
    const d = path.join(dst, e.name)
    if (e.isDirectory()) {
      fs.mkdirSync(d)
      copyTree(s, d, limit)
    } else if (e.isFile()) {
      fs.copyFileSync(s, d)
      limit.files--
    } else if (e.isSymbolicLink()) {
      fs.symlinkSync(fs.readlinkSync(s), d)
    }
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    console.error('btrfs-layers demo: needs root (creating subvolumes, loop-mounting the image). Run it with sudo.')
    process.exit(1)
  }
  const given = process.env.BTRFS_LAYERS_DIR
  const store = given ? { dir: given, close: () => {} } : loopbackStore()
  const home = path.join(store.dir, 'demo-store')
  try {
    const fsi = await filesystemInfo(store.dir)
    console.log(`btrfs ${fsi.fsid} on ${fsi.devices.map((d) => d.path).join(',')}, data ${fsi.space.data.used}/${fsi.space.data.total} bytes`)
    const driver = await step('init the store', () => BtrfsDriver.init(home))
    try {
      for (const id of await driver.layers()) await driver.remove(id)
      const source = path.dirname(require.resolve('typescript/package.json'))
      await step('create base layer (empty subvolume)', () => driver.create('base'))
      const base = await driver.get('base')
      const limit = { files: 2000 }
      await step(`import a real tree (${source}, up to 2000 files)`, async () => copyTree(source, base, limit))
      await driver.put('base')
      await step('freeze it as a read-only image layer (snapshot -r)', () => driver.create('image', 'base', { readOnly: true }))
      let parent = 'image'
      for (let i = 1; i <= 5; i++) {
        const id = `app-${i}`
        await step(`create ${id} on ${parent} (snapshot) and change a file`, async () => {
          await driver.create(id, parent)
          const dir = await driver.get(id)
          fs.writeFileSync(path.join(dir, `layer-${i}.txt`), `written in ${id}\n`)
          await driver.put(id)
        })
        parent = id
      }
      const top = await driver.get(parent)
      console.log(`  top layer ${top} holds ${fs.readdirSync(top).filter((n) => n.startsWith('layer-')).join(', ')}`)
      await driver.put(parent)
      for (const [k, v] of await driver.status()) console.log(`  ${k}: ${v}`)
      await step('nest a subvolume inside the top layer', async () => {
        const { createSubvolume } = await import('./index')
        await createSubvolume(path.join(top, 'nested'))
      })
      console.log(`  nested: ${JSON.stringify(await listSubvolumes(top))}`)
      for (const id of (await driver.layers()).reverse()) await step(`remove ${id}`, () => driver.remove(id))
    } finally {
      await driver.cleanup()
    }
    await step('delete the store', () => deleteSubvolume(home, { recursive: true }))
  } finally {
    store.close()
  }
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
