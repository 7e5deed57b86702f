import { BtrfsError } from '../../errors'
import { layerId } from '../args'
import { withDetails } from '../hints'
import { withStore } from '../store'
import { output, say, type Command } from '../command'

export const rm: Command = {
  name: 'rm',
  summary: 'remove layers (with any subvolumes nested in them)',
  usage: 'ID...',
  options: {},
  args: { min: 1, max: Infinity },
  async run(ctx) {
    const ids = ctx.args.map((a) => layerId('ID', a, ctx.command))
    await withStore(ctx.global, ctx.hints, async (s) => {
      const removed: string[] = []
      const failed: { id: string; code: string; message: string }[] = []
      let first: unknown
      for (const id of ids) {
        if (ctx.signal.aborted) break
        try {
          await s.driver.remove(id)
          removed.push(id)
          if (!ctx.global.json) say(ctx, `removed ${id}`)
        } catch (e) {
          first ??= e
          failed.push({ id, code: String((e as BtrfsError).code ?? 'ERR_INTERNAL'), message: (e as Error).message })
        }
      }
      // With --json a failure is the one error object, carrying what was done.
      if (first) throw typeof first === 'object' && first !== null ? withDetails(first, { removed, failed }) : first
      output(ctx, { removed, failed }, () => undefined)
      if (ctx.signal.aborted) throw new BtrfsError('ABORT_ERR', 'ABORT_ERR: interrupted')
    })
  },
}
