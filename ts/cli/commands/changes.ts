import { layerId, parentOption } from '../args'
import { withStore } from '../store'
import { note, output, say, stdoutDone, type Command } from '../command'

const MARK = { add: 'A', modify: 'M', delete: 'D' } as const

export const changes: Command = {
  name: 'changes',
  summary: "what a layer added, modified and deleted against its parent",
  usage: "ID [--parent P]",
  help: "--parent P   compare against layer P (default: ID's parent; '' for the whole layer)\nLines: A added, M modified, D deleted.",
  options: { parent: { type: 'string', short: 'p' } },
  args: { min: 1, max: 1 },
  async run(ctx) {
    const id = layerId('ID', ctx.args[0], ctx.command)
    const parent = parentOption(ctx.values.parent, ctx.command)
    await withStore(ctx.global, ctx.hints, async (s) => {
      const list = await s.driver.changes(id, { parent })
      output(ctx, list, () => {
        for (const c of list) say(ctx, `${MARK[c.kind]} ${c.path}`)
      })
      if (ctx.global.json) return
      await stdoutDone(ctx)
      if (ctx.signal.aborted) return
      const n = (k: string) => list.filter((c) => c.kind === k).length
      note(ctx, `${list.length} changes: ${n('add')} added, ${n('modify')} modified, ${n('delete')} deleted`)
    }, { readOnly: true })
  },
}
