import { BtrfsError } from '../../errors'
import { ImageStore, type RemoveResult } from '../../image/store'
import { withDetails } from '../hints'
import { withStore } from '../store'
import { output, say, type Command } from '../command'

export const rmi: Command = {
  name: 'rmi',
  summary: 'remove image references; an image goes with its last one, and its layers nothing else uses',
  usage: 'REF...',
  help: 'REF   a reference (alpine, localhost:5000/app:v1), or a digest or 12+ hex digits of one (all its references)',
  options: {},
  args: { min: 1, max: Infinity },
  async run(ctx) {
    await withStore(ctx.global, ctx.hints, async (s) => {
      const images = await ImageStore.open(s.driver)
      const removed: (RemoveResult & { ref: string })[] = []
      const failed: { ref: string; code: string; message: string }[] = []
      let first: unknown
      for (const ref of ctx.args) {
        if (ctx.signal.aborted) break
        try {
          const r = await images.remove(ref)
          removed.push({ ref, ...r })
          if (!ctx.global.json) {
            for (const u of r.untagged) say(ctx, `untagged ${u}`)
            if (r.deleted) say(ctx, `deleted ${r.deleted}`)
            for (const l of r.layers) say(ctx, `removed layer ${l}`)
          }
        } catch (e) {
          first ??= e
          failed.push({ ref, code: String((e as BtrfsError).code ?? 'ERR_INTERNAL'), message: (e as Error).message })
        }
      }
      if (first) throw typeof first === 'object' && first !== null ? withDetails(first, { removed, failed }) : first
      output(ctx, { removed, failed }, () => undefined)
      if (ctx.signal.aborted) throw new BtrfsError('ABORT_ERR', 'ABORT_ERR: interrupted')
    })
  },
}
