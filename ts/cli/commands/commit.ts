import { ImageStore } from '../../image/store'
import { layerId, UsageError } from '../args'
import { formatBytes } from '../format'
import { withStore } from '../store'
import { output, say, type Command } from '../command'
import { imageSummary } from './images'

export const commit: Command = {
  name: 'commit',
  summary: 'make an image of a layer and its parents',
  usage: 'LAYER --ref REF',
  help: '--ref REF   the reference to give the image (localhost:5000/app:v1)\nThe image\'s layers are LAYER and its parents; its diffIDs are their diffs\' sha256.',
  options: { ref: { type: 'string' } },
  args: { min: 1, max: 1 },
  async run(ctx) {
    const id = layerId('LAYER', ctx.args[0], ctx.command)
    if (typeof ctx.values.ref !== 'string') throw new UsageError('missing --ref REF', ctx.command)
    const reference = ctx.values.ref
    await withStore(ctx.global, ctx.hints, async (s) => {
      const rec = await (await ImageStore.open(s.driver)).commit(id, { reference, signal: ctx.signal })
      output(ctx, imageSummary(rec), () => say(ctx, `committed ${id} as ${rec.references[0]}: ${rec.digest}, ${rec.layers.length} layers, ${formatBytes(rec.size)}`))
    })
  },
}
