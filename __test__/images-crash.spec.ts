// A process SIGKILLed in the middle of pulls (at many points: mid-blob, between layers, around
// record writes) leaves a store whose every image record names only
// complete layers, no temporary record after `open` and no temporary subvolume after `init`;
// and pulling again completes.
import test, { type ExecutionContext } from 'ava'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { BtrfsDriver, ImageStore } from '../ts/index'
import { useBtrfs } from './helpers/btrfs'
import { dir, file } from './helpers/diff-tar'
import { FIXTURES, isTemporary, REPO, storeEntries } from './helpers/driver-util'
import { image, layer, writeLayout } from './helpers/oci-layout'
import { startRegistry, useRegistryTools } from './helpers/registry'

const { btrfsTest } = useBtrfs(test, { size: 1024 * 1024 * 1024 })
const registry = useRegistryTools(test)
const imageTest = (title: string, impl: (t: ExecutionContext, dir: string) => Promise<void>) =>
  registry.available ? btrfsTest(title, impl) : registry.registryTest(title, async () => undefined)

/** Run the child and SIGKILL it once it printed `killAt` lines; resolves with the lines it printed. */
function pullUntilKilled(home: string, refs: string[], killAt: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(FIXTURES, 'image-pull-child.ts'), home, ...refs], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      out += s
      if (out.split('\n').length - 1 >= killAt) child.kill('SIGKILL')
    })
    child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s))
    child.on('error', reject)
    child.on('close', () => {
      const lines = out.split('\n').filter(Boolean)
      const bad = lines.find((l) => l.startsWith('error '))
      if (bad) reject(new Error(`${bad}\n${err}`))
      else resolve(lines)
    })
  })
}

imageTest('SIGKILL at many points of pulls: records name complete layers only, no temporaries, and the next pull completes', async (t, d) => {
  const reg = await startRegistry()
  t.teardown(() => reg.stop())
  const big = (n: string) => layer([dir(`${n}/`), file(`${n}/data`, randomBytes(1_500_000))], 'gzip')
  const base = await big('base')
  const one = image([base, await big('one'), await big('one-top')])
  const two = image([base, await big('two')])
  const refs: string[] = []
  for (const [i, img] of [one, two].entries()) {
    const l = path.join(d, `layout-${i}`)
    await writeLayout(l, [img])
    await reg.crane(['push', l, `${reg.host}/crash/img:${i === 0 ? 'one' : 'two'}`])
    refs.push(`${reg.host}/crash/img:${i === 0 ? 'one' : 'two'}`)
  }
  // A second reference to the first image: its pull only adds a reference to a record.
  await reg.crane(['copy', refs[0], `${reg.host}/crash/img:again`])
  const full = await pullUntilKilled(path.join(d, 'probe'), [...refs], Infinity)
  t.regex(full.at(-1) ?? '', /^pulled /)
  const plan = [refs[0], refs[1], `${reg.host}/crash/img:again`]
  for (let killAt = 2; killAt < full.length + 4; killAt += 2) {
    const home = path.join(d, `store-${killAt}`)
    const lines = await pullUntilKilled(home, plan, killAt)
    const driver = await BtrfsDriver.init(home)
    try {
      const images = await ImageStore.open(driver)
      const { subvolumes } = await storeEntries(home)
      t.deepEqual(subvolumes.filter(isTemporary), [], `kill at line ${killAt}: no temporary subvolume`)
      t.deepEqual((await fsp.readdir(path.join(home, 'images'))).filter((n) => n.startsWith('.')), [], `kill at line ${killAt}: no temporary record`)
      const pulled = lines.filter((l) => l.startsWith('pulled ')).map((l) => l.split(' ')[2])
      const recs = await images.list()
      for (const digest of pulled) t.true(recs.some((r) => r.digest === digest), `kill at ${killAt}: ${digest} was pulled before the kill`)
      for (const r of recs) {
        for (const [i, id] of r.layers.entries()) {
          t.true(await driver.exists(id), `kill at ${killAt}: ${r.digest} layer ${i}`)
          t.is((await driver.getMetadata(id)).parent, i === 0 ? null : r.layers[i - 1])
        }
      }
      const refOwners = recs.flatMap((r) => r.references)
      t.is(new Set(refOwners).size, refOwners.length, 'each reference names one image')
      // And the next pull completes, reusing what is there.
      for (const ref of plan) await images.pull(ref)
      t.deepEqual((await images.list()).map((r) => r.references.length).sort(), [1, 2])
    } finally {
      await driver.cleanup()
    }
  }
})
