import { idMaps, layerId, UsageError } from '../args'
import { formatCount } from '../format'
import { Progress } from '../progress'
import { withStore } from '../store'
import { output, say, type Command } from '../command'

export const remap: Command = {
  name: 'remap',
  summary: 'create TARGET: layer ID with every owner shifted into new uid/gid maps',
  usage: 'ID TARGET --uid-map C:H:N --gid-map C:H:N',
  help:
    '--uid-map C:H:N   container ids C..C+N-1 are host ids H..H+N-1 (repeatable)\n--gid-map C:H:N   the same for groups (repeatable)\n' +
    'ID is never touched: TARGET is a snapshot of it, remapped.',
  options: { 'uid-map': { type: 'string', multiple: true }, 'gid-map': { type: 'string', multiple: true } },
  args: { min: 2, max: 2 },
  async run(ctx) {
    const id = layerId('ID', ctx.args[0], ctx.command)
    const target = layerId('TARGET', ctx.args[1], ctx.command)
    const uidMaps = idMaps('uid-map', ctx.values['uid-map'], ctx.command)
    const gidMaps = idMaps('gid-map', ctx.values['gid-map'], ctx.command)
    if (!uidMaps && !gidMaps) throw new UsageError('give at least one --uid-map or --gid-map', ctx.command)
    await withStore(ctx.global, ctx.hints, async (s) => {
      const progress = new Progress({ label: `remap ${id} -> ${target}`, unit: 'inodes', stream: ctx.stderr })
      let result
      try {
        result = await s.driver.remap(id, target, { uidMaps, gidMaps, signal: ctx.signal, onProgress: (n) => progress.update(n) })
      } catch (e) {
        progress.clear()
        throw e
      }
      // Without --json the summary below is the one closing line.
      if (ctx.global.json) progress.finish(result.visited, `${formatCount(result.changed)} changed`)
      else progress.clear()
      output(ctx, { id, target, ...result }, () => say(ctx, `created ${target} from ${id}: ${formatCount(result.visited)} inodes, ${formatCount(result.changed)} owners shifted`))
    })
  },
}
