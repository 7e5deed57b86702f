/** The store a command works on: `--home DIR` as given, or the embedded loopback store's. */
import * as path from 'node:path'
import { BtrfsDriver } from '../driver'
import { openLoopbackStore, type LoopbackStore } from '../loopback'
import type { GlobalOptions } from './args'
import { BtrfsError } from '../errors'
import { CliError, type HintContext } from './hints'

export interface Store {
  driver: BtrfsDriver
  home: string
  /** The loopback store, when no --home was given. */
  loopback?: LoopbackStore
}

/** Where the loopback store keeps its layers, inside the mounted image. */
export const LOOPBACK_HOME = 'store'

/** Mount (making it the first time) the loopback image; records it in `hints` for messages. */
export async function openLoopback(g: GlobalOptions, hints: HintContext): Promise<LoopbackStore> {
  hints.loopback = true
  let lb: LoopbackStore
  try {
    lb = await openLoopbackStore({ image: g.image, size: g.imageSize })
  } catch (e) {
    // Its messages already say what to do.
    throw e instanceof BtrfsError ? new CliError(e.message, String(e.code)) : e
  }
  hints.home = path.join(lb.mountPoint, LOOPBACK_HOME)
  return lb
}

/** Open the store, run `fn`, and always release the store's lock and private mount. */
export async function withStore<T>(g: GlobalOptions, hints: HintContext, fn: (s: Store) => Promise<T>): Promise<T> {
  let loopback: LoopbackStore | undefined
  let home: string
  if (g.home !== undefined) {
    home = path.resolve(g.home)
    hints.home = home
  } else {
    loopback = await openLoopback(g, hints)
    home = path.join(loopback.mountPoint, LOOPBACK_HOME)
  }
  const driver = await BtrfsDriver.init(home)
  try {
    return await fn({ driver, home, loopback })
  } finally {
    await driver.cleanup()
  }
}
