import { statusPairs } from '../../driver'
import { formatBytes, table } from '../format'
import { withStore } from '../store'
import { output, say, type Command } from '../command'

export const status: Command = {
  name: 'status',
  summary: 'facts about the store: filesystem, space, layers, quotas, kernel',
  usage: '',
  options: {},
  args: { min: 0, max: 0 },
  async run(ctx) {
    await withStore(ctx.global, ctx.hints, async (s) => {
      const st = await s.driver.status()
      const pairs = statusPairs(st)
      const lb = s.loopback
      output(ctx, { ...st, loopback: lb ?? null }, () => {
        const rows = pairs.map(([k, v]) => [`${k}:`, /Space/.test(k) && /^\d+$/.test(v) ? formatBytes(Number(v)) : v])
        if (lb) {
          rows.push(['Image:', lb.image], ['Image Size:', `${formatBytes(lb.size)} (${formatBytes(lb.allocated)} on disk)`])
          rows.push(['Loop Device:', lb.device], ['Mount Point:', lb.mountPoint])
        }
        say(ctx, table(rows))
      })
    }, { readOnly: true })
  },
}
