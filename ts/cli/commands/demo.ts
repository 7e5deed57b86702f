import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { pipeline } from 'node:stream/promises'
import { Transform } from 'node:stream'
import { BtrfsDriver } from '../../driver'
import { BtrfsError } from '../../errors'
import { closeLoopbackStore, type LoopbackStore } from '../../loopback'
import { CliError } from '../hints'
import { formatBytes, formatCount, formatDuration } from '../format'
import { Progress } from '../progress'
import { LOOPBACK_HOME, openLoopback } from '../store'
import { gnuTar, measureTree, pickSourceTree, someDirectory, someFiles } from '../source-tree'
import { note, say, type Command, type Context } from '../command'
import { PACKAGE_DIR } from '../package'

/** Every layer the demo makes starts with this, so it never touches anyone else's. */
const PREFIX = 'demo-'

interface Step {
  step: string
  ms: number
}

export const demo: Command = {
  name: 'demo',
  summary: 'a real scenario on the store (import a tar, a chain of layers, changes, diff), timed',
  usage: '[--home DIR] [--source DIR]',
  help:
    '--source DIR   the tree to import (default: the installed typescript package, else /usr/share/doc)\n' +
    'Uses the loopback store (unmounted again at the end unless it was mounted before) or --home.\n' +
    `Makes only layers named ${PREFIX}* and removes them all at the end, also when interrupted.`,
  options: { source: { type: 'string' } },
  args: { min: 0, max: 0 },
  async run(ctx) {
    const steps: Step[] = []
    const t0 = performance.now()
    /** Time `fn` and print a line for it; cleanup steps run even after Ctrl-C. */
    const timed = async <T>(what: string, fn: () => Promise<T>, detail?: (r: T) => string): Promise<T> => {
      const t = performance.now()
      const r = await fn()
      const ms = performance.now() - t
      steps.push({ step: what, ms })
      if (!ctx.global.json) say(ctx, `  ${what.padEnd(60)} ${formatDuration(ms).padStart(10)}${detail ? `  ${detail(r)}` : ''}`)
      return r
    }
    const step: StepFn = (what, fn, detail) => {
      if (ctx.signal.aborted) throw new BtrfsError('ABORT_ERR', 'ABORT_ERR: interrupted')
      return timed(what, fn, detail)
    }
    const show = (line: string) => {
      if (!ctx.global.json) say(ctx, `      ${line}`)
    }

    const source = path.resolve((ctx.values.source as string | undefined) ?? pickSourceTree(PACKAGE_DIR))
    if (!fs.statSync(source, { throwIfNoEntry: false })?.isDirectory()) {
      throw new CliError(`--source ${source} is not a directory`, 'ENOENT', 'pass a directory tree to import with --source DIR')
    }
    let loopback: LoopbackStore | undefined
    let home: string
    if (ctx.global.home !== undefined) {
      home = path.resolve(ctx.global.home)
      ctx.hints.home = home
    } else {
      loopback = await step('open the loopback store (made and mounted on first use)', () => openLoopback(ctx.global, ctx.hints))
      show(`${loopback.created ? 'created' : 'reused'} ${loopback.image} (${formatBytes(loopback.size)}, ${formatBytes(loopback.allocated)} on disk), ${loopback.mounted ? 'mounted' : 'already mounted'} on ${loopback.mountPoint}`)
      home = path.join(loopback.mountPoint, LOOPBACK_HOME)
    }
    const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'btrfs-layers-demo-'))
    let summary: Record<string, unknown>
    try {
      const driver = await step('open the layer store', () => BtrfsDriver.init(home))
      try {
        await removeDemoLayers(driver)
        summary = await scenario(ctx, driver, source, tmp, step, show)
      } finally {
        await timed('remove everything the demo made', () => removeDemoLayers(driver), (n) => `${n} layers`)
        await driver.cleanup()
      }
    } finally {
      await fsp.rm(tmp, { recursive: true, force: true })
      if (loopback?.mounted) await timed('unmount the loopback store (it was not mounted before)', () => closeLoopbackStore({ image: loopback.image }))
    }
    const totalMs = performance.now() - t0
    if (ctx.global.json) ctx.stdout.write(`${JSON.stringify({ home, loopback: loopback ?? null, source, ...summary, steps, totalMs }, null, 2)}\n`)
    else say(ctx, `  ${'total'.padEnd(60)} ${formatDuration(totalMs).padStart(10)}`)
  },
}

type StepFn = <T>(what: string, fn: () => Promise<T>, detail?: (r: T) => string) => Promise<T>

async function scenario(ctx: Context, driver: BtrfsDriver, source: string, tmp: string, step: StepFn, show: (l: string) => void): Promise<Record<string, unknown>> {
  const tree = await measureTree(source)
  const imported = path.basename(source)
  show(`source tree: ${source}`)
  const tar = path.join(tmp, 'base.tar')
  await step(`GNU tar -c of ${imported}`, () => gnuTar(source, tar, ctx.signal), () => `${formatCount(tree.files)} files, ${formatCount(tree.dirs)} dirs, ${formatBytes(fs.statSync(tar).size)} tar`)

  const base = `${PREFIX}base`
  const tarBytes = fs.statSync(tar).size
  await step(
    `import: create ${base}, apply the tar`,
    async () => {
      await driver.create(base)
      const progress = new Progress({ label: `apply ${base}`, unit: 'bytes', total: tarBytes, stream: ctx.stderr })
      const t = performance.now()
      try {
        const applied = await driver.applyDiff(base, tar, { signal: ctx.signal, onProgress: (b) => progress.update(b) })
        return { applied, ms: performance.now() - t }
      } finally {
        progress.clear()
      }
    },
    (r) => `${formatBytes(r.applied)} of file content, tar at ${formatBytes((tarBytes * 1000) / Math.max(1, r.ms))}/s`,
  )

  // A chain of child layers, each a snapshot of the one before, each with one kind of change.
  const edit = async (id: string, fn: (dir: string) => Promise<string>): Promise<string> => {
    const dir = await driver.get(id)
    try {
      return await fn(dir)
    } finally {
      await driver.put(id)
    }
  }
  const add = `${PREFIX}add`
  const modify = `${PREFIX}modify`
  const del = `${PREFIX}delete`
  await step(`${add}: snapshot of ${base}, add 200 files`, async () => {
    await driver.create(add, { parent: base })
    return edit(add, async (dir) => {
      const extra = path.join(dir, 'demo-added')
      await fsp.mkdir(extra)
      for (let i = 0; i < 200; i++) await fsp.writeFile(path.join(extra, `file-${i}.txt`), `added by the demo, file ${i}\n`.repeat(20))
      return 'demo-added/file-{0..199}.txt'
    })
  }, (r) => r)
  // Edits go into the imported tree (named like the source directory inside the layer).
  await step(`${modify}: snapshot of ${add}, modify 20 files`, async () => {
    await driver.create(modify, { parent: add })
    return edit(modify, async (dir) => {
      const files = await someFiles(path.join(dir, imported), 20, 5)
      for (const f of files) await fsp.appendFile(path.join(dir, imported, f), '\n// modified by the btrfs-layers demo\n')
      return files.length > 0 ? `${imported}/${files[0]} ...` : 'nothing to modify'
    })
  }, (r) => r)
  await step(`${del}: snapshot of ${modify}, delete a dir, 10 files`, async () => {
    await driver.create(del, { parent: modify })
    return edit(del, async (dir) => {
      const root = path.join(dir, imported)
      const gone = await someDirectory(root)
      if (gone) await fsp.rm(path.join(root, gone), { recursive: true })
      const files = await someFiles(root, 10, 40)
      for (const f of files) await fsp.rm(path.join(root, f))
      return `${gone ? `${imported}/${gone}/` : 'no directory'}, ${files.length} files`
    })
  }, (r) => r)

  const own = await step(`changes of ${del} against its parent`, () => driver.changes(del), (c) => counts(c))
  for (const c of own.slice(0, 4)) show(`${c.kind.padEnd(6)} ${c.path}`)
  if (own.length > 4) show(`... ${own.length - 4} more`)
  const all = await step(`changes of ${del} against ${base}`, () => driver.changes(del, { parent: base }), (c) => counts(c))
  const size = await step(`diffSize of ${del} against ${base}`, () => driver.diffSize(del, { parent: base }), (n) => formatBytes(n))

  const out = path.join(tmp, `${del}.tar.gz`)
  const exported = await step(`export ${del} against ${base} (diff, gzip)`, async () => {
    const stream = await driver.diff(del, { parent: base, compression: 'gzip', signal: ctx.signal })
    const progress = new Progress({ label: `diff ${del}`, unit: 'bytes', stream: ctx.stderr })
    let bytes = 0
    const count = new Transform({
      transform(chunk: Buffer, _e, cb) {
        progress.update((bytes += chunk.length))
        cb(null, chunk)
      },
    })
    try {
      await pipeline(stream, count, fs.createWriteStream(out))
    } finally {
      progress.clear()
    }
    return bytes
  }, (n) => `${formatBytes(n)} (to a temporary file, removed at the end)`)

  const replay = `${PREFIX}replay`
  const same = await step(`replay: ${replay} on ${base} + the diff, compare`, async () => {
    await driver.create(replay, { parent: base })
    await driver.applyDiff(replay, out, { parent: base, signal: ctx.signal })
    const again = await driver.changes(replay, { parent: base })
    return JSON.stringify(again) === JSON.stringify(all)
  }, (ok) => (ok ? 'same changes as the original' : 'DIFFERENT changes'))
  if (!same) note(ctx, `warning: the replayed layer's changes differ from ${del}'s`)

  // Replication: btrfs send streams, received in Rust (no btrfs-progs). The layers are
  // read-write, so each is sent from a snapshot of its own and the incremental receive names
  // its parent.
  const copyBase = `${PREFIX}recv-base`
  const copyDel = `${PREFIX}recv-delete`
  const full = await step(`send|receive ${base} -> ${copyBase} (full)`, async () =>
    driver.receive(copyBase, await driver.send(base, { signal: ctx.signal }), { signal: ctx.signal }),
  (r) => `${formatBytes(r.bytes)} of stream, ${formatCount(r.commands)} commands`)
  const inc = await step(`send|receive ${del} -> ${copyDel} (incremental)`, async () =>
    driver.receive(copyDel, await driver.send(del, { parent: base, signal: ctx.signal }), { parent: copyBase, signal: ctx.signal }),
  (r) => `${formatBytes(r.bytes)} of stream, ${formatCount(r.commands)} commands`)
  const received = await step(`compare ${copyDel} with ${del}`, async () => {
    const again = await driver.changes(copyDel, { parent: copyBase })
    return JSON.stringify(again) === JSON.stringify(all)
  }, (ok) => (ok ? 'same changes as the original' : 'DIFFERENT changes'))
  if (!received) note(ctx, `warning: the received layer's changes differ from ${del}'s`)

  return {
    tree,
    tarBytes,
    changes: { ownParent: own.length, base: all.length },
    diffSize: size,
    exportedBytes: exported,
    replayMatches: same,
    replication: { fullBytes: full.bytes, incrementalBytes: inc.bytes, matches: received },
  }
}

function counts(list: { kind: string }[]): string {
  const n = (k: string) => list.filter((c) => c.kind === k).length
  return `${list.length} (${n('add')} added, ${n('modify')} modified, ${n('delete')} deleted)`
}

/** Remove every `demo-*` layer, children first (any order works: snapshots are independent). */
async function removeDemoLayers(driver: BtrfsDriver): Promise<number> {
  const ids = (await driver.layers()).filter((id) => id.startsWith(PREFIX)).reverse()
  for (const id of ids) await driver.remove(id)
  return ids.length
}
