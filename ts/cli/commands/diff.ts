import * as path from 'node:path'
import { Transform } from 'node:stream'
import type { Compression } from '../../driver'
import { layerId, parentOption, UsageError } from '../args'
import { formatBytes } from '../format'
import { Progress } from '../progress'
import { withStore } from '../store'
import { output, say, writeOut, type Command } from '../command'

const COMPRESSIONS = ['none', 'gzip', 'zstd']

export const diff: Command = {
  name: 'diff',
  summary: 'export a layer as an OCI layer tar (its changes against its parent)',
  usage: 'ID [--parent P] [--compression none|gzip|zstd] [-o FILE]',
  help: "--parent P        diff against layer P (default: ID's parent; '' for the whole layer)\n--compression C   none (default), gzip or zstd\n-o, --output FILE write to FILE (default: stdout, never a terminal)",
  options: { parent: { type: 'string', short: 'p' }, compression: { type: 'string', short: 'c' }, output: { type: 'string', short: 'o' } },
  args: { min: 1, max: 1 },
  async run(ctx) {
    const id = layerId('ID', ctx.args[0], ctx.command)
    const parent = parentOption(ctx.values.parent, ctx.command)
    const compression = (ctx.values.compression ?? 'none') as Compression
    if (!COMPRESSIONS.includes(compression)) throw new UsageError(`--compression must be none, gzip or zstd, not '${compression}'`, ctx.command)
    const file = ctx.values.output as string | undefined
    if (file === undefined && ctx.stdout.isTTY) {
      throw new UsageError('refusing to write a tar to a terminal: redirect stdout (> layer.tar) or pass -o FILE', ctx.command)
    }
    if (file === undefined && ctx.global.json) throw new UsageError('--json needs -o FILE (without it the tar goes to stdout)', ctx.command)
    await withStore(ctx.global, ctx.hints, async (s) => {
      const tar = await s.driver.diff(id, { parent, compression, signal: ctx.signal })
      const progress = new Progress({ label: `diff ${id}`, unit: 'bytes', stream: ctx.stderr })
      let bytes = 0
      const count = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          bytes += chunk.length
          progress.update(bytes)
          cb(null, chunk)
        },
      })
      await writeOut(ctx, [tar, count], file, () => progress.clear())
      // With -o and no --json, the summary below is the one closing line.
      if (file !== undefined && !ctx.global.json) progress.clear()
      else progress.finish(bytes)
      if (file !== undefined) {
        output(ctx, { id, parent: parent ?? (await s.driver.getMetadata(id)).parent, compression, bytes, file: path.resolve(file) }, () =>
          say(ctx, `wrote ${file} (${formatBytes(bytes)}, ${compression === 'none' ? 'tar' : `tar+${compression}`})`),
        )
      }
    }, { readOnly: true })
  },
}
