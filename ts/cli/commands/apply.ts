import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import { Transform, pipeline, type Readable } from 'node:stream'
import { BtrfsError } from '../../errors'
import { layerId } from '../args'
import { formatBytes, formatDuration } from '../format'
import { inputSize } from '../input'
import { Progress } from '../progress'
import { withStore } from '../store'
import { output, say, type Command } from '../command'

/** gzip or zstd magic at the start of a file: its tar bytes will not match its size. */
async function compressed(file: string): Promise<boolean> {
  const fh = await fsp.open(file, 'r')
  try {
    const { buffer, bytesRead } = await fh.read(Buffer.alloc(4), 0, 4, 0)
    const b = buffer.subarray(0, bytesRead)
    return (b[0] === 0x1f && b[1] === 0x8b) || (b[0] === 0x28 && b[1] === 0xb5 && b[2] === 0x2f && b[3] === 0xfd)
  } finally {
    await fh.close()
  }
}

/** `source` through a counter that reports the bytes read so far. */
function counted(source: Readable, onBytes: (n: number) => void): Readable {
  let n = 0
  const t = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      n += chunk.length
      onBytes(n)
      cb(null, chunk)
    },
  })
  pipeline(source, t, () => undefined)
  return t
}

export const apply: Command = {
  name: 'apply',
  summary: 'apply a layer tar (plain, gzip or zstd) to a layer, creating it when missing',
  usage: 'ID FILE|- [--parent P]',
  help: '--parent P   the layer ID is (or is created as) a snapshot of\nFILE         a tar file, or - for stdin\nThe layer changes only when the whole tar applied.',
  options: { parent: { type: 'string', short: 'p' } },
  args: { min: 2, max: 2 },
  async run(ctx) {
    const id = layerId('ID', ctx.args[0], ctx.command)
    const parent = ctx.values.parent === undefined ? undefined : layerId('--parent', ctx.values.parent as string, ctx.command)
    const file = ctx.args[1]
    const total = await inputSize(ctx, file, 'a layer tar')
    await withStore(ctx.global, ctx.hints, async (s) => {
      if (ctx.signal.aborted) throw new BtrfsError('ABORT_ERR', 'ABORT_ERR: interrupted before anything was changed')
      // A new layer is made by the apply itself: visible only once complete, so a kill at any
      // point leaves none.
      const created = !(await s.driver.exists(id))
      const progress = new Progress({ label: `apply ${id}`, unit: 'bytes', total, stream: ctx.stderr })
      const t0 = performance.now()
      let read = 0
      let applied: number
      try {
        if (file !== '-' && !(await compressed(file))) {
          // A plain tar file: the native side reads it itself; its tar bytes are the file's.
          applied = await s.driver.applyDiff(id, file, { parent, create: created, signal: ctx.signal, onProgress: (n) => progress.update((read = n)) })
        } else {
          const source = file === '-' ? process.stdin : fs.createReadStream(file, { highWaterMark: 1 << 20 })
          const input = counted(source, (n) => progress.update((read = n)))
          // applyDiff checks the signal between chunks; a pipe that goes quiet must not delay Ctrl-C.
          const stop = () => input.destroy(new BtrfsError('ABORT_ERR', 'ABORT_ERR: the operation was aborted'))
          ctx.signal.addEventListener('abort', stop, { once: true })
          try {
            applied = await s.driver.applyDiff(id, input, { parent, create: created, signal: ctx.signal })
          } finally {
            ctx.signal.removeEventListener('abort', stop)
          }
        }
      } catch (e) {
        progress.clear()
        throw e
      }
      // The summary is the result line below, once: the bar only goes away.
      progress.clear()
      const ms = performance.now() - t0
      const rate = `${formatBytes((read * 1000) / Math.max(ms, 1))}/s`
      output(ctx, { id, parent: parent ?? null, created, bytes: applied, read }, () =>
        say(
          ctx,
          `applied ${file === '-' ? 'stdin' : file} to ${created ? 'new ' : ''}layer ${id}${parent ? ` (on ${parent})` : ''}: ${formatBytes(applied)} of file content` +
            ` (${formatBytes(read)} of tar in ${formatDuration(ms)}, ${rate})`,
        ),
      )
    })
  },
}
