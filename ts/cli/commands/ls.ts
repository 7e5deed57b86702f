import { formatBytes, table } from '../format'
import { withStore } from '../store'
import { output, say, type Command } from '../command'

export const ls: Command = {
  name: 'ls',
  summary: 'list the layers with parent, creation time, read-only flag and size limit',
  usage: '',
  options: {},
  args: { min: 0, max: 0 },
  async run(ctx) {
    await withStore(ctx.global, ctx.hints, async (s) => {
      const layers = await Promise.all((await s.driver.layers()).map((id) => s.driver.getMetadata(id)))
      output(ctx, layers, () => {
        if (layers.length === 0) return say(ctx, `no layers in ${s.home}`)
        const rows = layers.map((m) => [m.id, m.parent ?? '-', m.created.toISOString().replace(/\.\d+Z$/, 'Z'), m.readOnly ? 'ro' : 'rw', m.size !== null ? formatBytes(m.size) : '-'])
        say(ctx, table([['ID', 'PARENT', 'CREATED', 'MODE', 'SIZE LIMIT'], ...rows]))
      })
    }, { readOnly: true })
  },
}
