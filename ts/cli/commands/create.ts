import { layerId, sizeArg } from '../args'
import { formatBytes } from '../format'
import { withStore } from '../store'
import { output, say, type Command } from '../command'

export const create: Command = {
  name: 'create',
  summary: 'create a layer: empty, or a snapshot of its parent',
  usage: 'ID [--parent P] [--size N] [--read-only]',
  help: '--parent P    snapshot layer P (default: an empty layer)\n--size N      limit the layer to N bytes (8G, 512M) through a btrfs qgroup\n--read-only   make the layer immutable',
  options: { parent: { type: 'string', short: 'p' }, size: { type: 'string' }, 'read-only': { type: 'boolean' } },
  args: { min: 1, max: 1 },
  async run(ctx) {
    const id = layerId('ID', ctx.args[0], ctx.command)
    const parent = ctx.values.parent === undefined ? undefined : layerId('--parent', ctx.values.parent as string, ctx.command)
    const size = sizeArg('size', ctx.values.size, ctx.command)
    const readOnly = ctx.values['read-only'] === true
    await withStore(ctx.global, ctx.hints, async (s) => {
      await s.driver.create(id, { parent, size, readOnly })
      const meta = await s.driver.getMetadata(id)
      const where = await s.driver.get(id)
      await s.driver.put(id)
      output(ctx, { ...meta, path: where }, () => {
        const how = [parent ? `snapshot of ${parent}` : 'empty', readOnly ? 'read-only' : '', meta.size !== null ? `size limit ${formatBytes(meta.size)}` : '']
        say(ctx, `created layer ${id} (${how.filter(Boolean).join(', ')}): ${where}`)
      })
    })
  },
}
