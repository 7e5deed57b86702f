import * as fs from 'node:fs'
import * as path from 'node:path'
import { BtrfsDriver } from '../../driver'
import { closeLoopbackStore, loopbackState } from '../../loopback'
import { UsageError } from '../args'
import { LOOPBACK_HOME } from '../store'
import { output, say, type Command } from '../command'

export const unmount: Command = {
  name: 'unmount',
  summary: 'unmount the loopback store and detach its loop device (the image stays)',
  usage: '[--image PATH]',
  options: {},
  args: { min: 0, max: 0 },
  async run(ctx) {
    if (ctx.global.home !== undefined) {
      throw new UsageError('unmount is for the loopback store; a --home store is never mounted by btrfs-layers', ctx.command)
    }
    ctx.hints.loopback = true
    // Take the store's lock first (EBUSY when held), so a running command keeps its filesystem.
    const state = await loopbackState({ image: ctx.global.image })
    for (const mp of state.mounts) {
      const home = path.join(mp, LOOPBACK_HOME)
      if (!fs.existsSync(home)) continue
      ctx.hints.home = home
      await (await BtrfsDriver.init(home)).cleanup()
    }
    const r = await closeLoopbackStore({ image: ctx.global.image })
    output(ctx, r, () => {
      if (r.unmounted.length === 0 && r.detached.length === 0) say(ctx, `${r.image} is not mounted`)
      for (const mp of r.unmounted) say(ctx, `unmounted ${mp}`)
      if (r.detached.length > 0) say(ctx, `detached ${r.detached.join(', ')}`)
    })
  },
}
