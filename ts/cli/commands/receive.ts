import { BtrfsError } from '../../errors'
import { layerId } from '../args'
import { formatBytes, formatDuration } from '../format'
import { inputSize } from '../input'
import { Progress } from '../progress'
import { withStore } from '../store'
import { output, say, type Command } from '../command'

export const receive: Command = {
  name: 'receive',
  summary: 'make a new layer from a btrfs send stream (ours or btrfs send)',
  usage: 'ID [FILE|-] [--parent P]',
  help:
    '--parent P   the layer an incremental stream applies to (default: found by the stream\'s parent UUID)\n' +
    'FILE         a send stream file, or - (the default) for stdin\n' +
    'The layer appears only when the whole stream applied; an interrupt or a bad stream leaves none.',
  options: { parent: { type: 'string', short: 'p' } },
  args: { min: 1, max: 2 },
  async run(ctx) {
    const id = layerId('ID', ctx.args[0], ctx.command)
    const parent = ctx.values.parent === undefined ? undefined : layerId('--parent', ctx.values.parent as string, ctx.command)
    const file = ctx.args[1] ?? '-'
    const total = await inputSize(ctx, file, 'a send stream', { fifo: true })
    await withStore(ctx.global, ctx.hints, async (s) => {
      if (ctx.signal.aborted) throw new BtrfsError('ABORT_ERR', 'ABORT_ERR: interrupted before anything was changed')
      const progress = new Progress({ label: `receive ${id}`, unit: 'bytes', total, stream: ctx.stderr })
      const t0 = performance.now()
      const input = file === '-' ? process.stdin : file
      // The native side reads a file itself; stdin is pushed, and a pipe that goes quiet must
      // not delay Ctrl-C (receive checks the signal between chunks).
      const stop = () => process.stdin.destroy(new BtrfsError('ABORT_ERR', 'ABORT_ERR: the operation was aborted'))
      if (file === '-') ctx.signal.addEventListener('abort', stop, { once: true })
      let r
      try {
        r = await s.driver.receive(id, input, { parent, signal: ctx.signal, onProgress: (n) => progress.update(n) })
      } catch (e) {
        progress.clear()
        throw e
      } finally {
        ctx.signal.removeEventListener('abort', stop)
      }
      progress.clear()
      const ms = performance.now() - t0
      output(ctx, { id, parent: r.parent, bytes: r.bytes, commands: r.commands, receivedUuid: r.receivedUuid }, () =>
        say(
          ctx,
          `received ${file === '-' ? 'stdin' : file} as layer ${id}${r.parent ? ` (on ${r.parent})` : ''}: ${formatBytes(r.bytes)}, ${r.commands} commands in ${formatDuration(ms)}`,
        ),
      )
    })
  },
}
