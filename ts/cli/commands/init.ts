import { formatBytes } from '../format'
import { withStore } from '../store'
import { output, say, note, type Command } from '../command'
import { parseBytes } from '../../driver'

export const init: Command = {
  name: 'init',
  summary: 'create the store (or reuse it) and mount the loopback image',
  usage: '[--home DIR | --image PATH --image-size N]',
  help:
    'Without --home, makes a sparse image (default 4 GiB, --image-size) under ~/.local/share/btrfs-layers\n' +
    '(or --image PATH), formats it with mkfs.btrfs, loop-mounts it and keeps it mounted for the\n' +
    'next commands; run again, it reuses the image and the mount. With --home, opens (creating)\n' +
    'a store in DIR on an existing btrfs.',
  options: {},
  args: { min: 0, max: 0 },
  async run(ctx) {
    await withStore(ctx.global, ctx.hints, async (s) => {
      const layers = (await s.driver.layers()).length
      const lb = s.loopback
      output(ctx, { home: s.home, layers, loopback: lb ?? null }, () => {
        if (lb) {
          if (lb.created) say(ctx, `created a ${formatBytes(lb.size)} sparse image ${lb.image} and formatted it as btrfs`)
          else say(ctx, `reusing the image ${lb.image} (${formatBytes(lb.size)}, ${formatBytes(lb.allocated)} on disk)`)
          say(ctx, `${lb.mounted ? 'mounted on' : 'already mounted on'} ${lb.mountPoint} (${lb.device})`)
        }
        say(ctx, `store ${s.home}: ${layers} layer${layers === 1 ? '' : 's'}`)
      })
      if (lb && !lb.created && ctx.global.imageSize !== undefined && parseBytes('size', ctx.global.imageSize) !== lb.size) {
        note(ctx, `note: the image exists with ${formatBytes(lb.size)}; --image-size applies only to a new image`)
      }
    })
  },
}
