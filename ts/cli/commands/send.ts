import * as path from 'node:path'
import { BtrfsError } from '../../errors'
import { layerId, UsageError } from '../args'
import { formatBytes } from '../format'
import { Progress } from '../progress'
import { withStore, type Store } from '../store'
import { output, say, writeOut, type Command, type Context } from '../command'

export const send: Command = {
  name: 'send',
  summary: 'write a btrfs send stream of a layer (for receive, here or on another store, or btrfs receive)',
  usage: 'ID [--parent P] [--protocol 1|2] [-o FILE]',
  help:
    '--parent P        send only the difference against layer P (the receiver must hold P)\n' +
    '--protocol N      1, or 2 (Linux 6.0+, compressed extents as they are); default: the best the kernel writes\n' +
    '-o, --output FILE write to FILE (default: stdout, never a terminal)',
  options: { parent: { type: 'string', short: 'p' }, protocol: { type: 'string' }, output: { type: 'string', short: 'o' } },
  args: { min: 1, max: 1 },
  async run(ctx) {
    const id = layerId('ID', ctx.args[0], ctx.command)
    const parent = ctx.values.parent === undefined ? undefined : layerId('--parent', ctx.values.parent as string, ctx.command)
    const p = ctx.values.protocol as string | undefined
    if (p !== undefined && p !== '1' && p !== '2') throw new UsageError(`--protocol must be 1 or 2, not '${p}'`, ctx.command)
    const protocol = p === undefined ? undefined : (Number(p) as 1 | 2)
    const file = ctx.values.output as string | undefined
    if (file === undefined && ctx.stdout.isTTY) {
      throw new UsageError('refusing to write a send stream to a terminal: redirect stdout (> layer.btrfs) or pass -o FILE', ctx.command)
    }
    if (file === undefined && ctx.global.json) throw new UsageError('--json needs -o FILE (without it the stream goes to stdout)', ctx.command)
    const go = (s: Store) => sendTo(ctx, s, id, parent, protocol, file)
    try {
      // A reader's store: no lock, so a receive into the same store can run at once.
      await withStore(ctx.global, ctx.hints, go, { readOnly: true })
    } catch (e) {
      // A read-write layer is sent through a temporary snapshot, which a reader may not take.
      if (!(e instanceof BtrfsError && e.code === 'EROFS')) throw e
      await withStore(ctx.global, ctx.hints, go)
    }
  },
}

async function sendTo(ctx: Context, s: Store, id: string, parent: string | undefined, protocol: 1 | 2 | undefined, file: string | undefined): Promise<void> {
  const progress = new Progress({ label: `send ${id}`, unit: 'bytes', stream: ctx.stderr })
  let bytes = 0
  const stream = await s.driver.send(id, { parent, protocol, signal: ctx.signal, onProgress: (n) => progress.update((bytes = n)) })
  await writeOut(ctx, [stream], file, () => progress.clear())
  // With -o and no --json, the summary below is the one closing line (as diff's).
  if (file !== undefined && !ctx.global.json) progress.clear()
  else progress.finish(bytes)
  if (file !== undefined) {
    output(ctx, { id, parent: parent ?? null, bytes, file: path.resolve(file) }, () =>
      say(ctx, `wrote ${file} (${formatBytes(bytes)}, send stream of ${id}${parent ? ` against ${parent}` : ''})`),
    )
  }
}
