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

/**
 * Open the store, run `fn`, and always release the store's lock and private mount. With
 * `readOnly` (the commands that only read), the store is opened without its lock, so they
 * work while another process writes; a store not made yet is made (and locked) as before.
 */
export async function withStore<T>(g: GlobalOptions, hints: HintContext, fn: (s: Store) => Promise<T>, o: { readOnly?: boolean } = {}): Promise<T> {
  let loopback: LoopbackStore | undefined
  let home: string
  if (g.home !== undefined) {
    home = path.resolve(g.home)
    hints.home = home
  } else {
    loopback = await openLoopback(g, hints)
    home = path.join(loopback.mountPoint, LOOPBACK_HOME)
  }
  const driver = o.readOnly ? await openReader(home) : await BtrfsDriver.init(home)
  try {
    return await fn({ driver, home, loopback })
  } finally {
    await driver.cleanup()
  }
}

/** A read-only driver on `home`; the writer's init when there is no store there yet (it makes one). */
async function openReader(home: string): Promise<BtrfsDriver> {
  try {
    return await BtrfsDriver.init(home, { readOnly: true })
  } catch (e) {
    if (e instanceof BtrfsError && e.code === 'ENOENT' && e.path !== undefined && path.resolve(e.path).startsWith(path.resolve(home))) {
      return BtrfsDriver.init(home)
    }
    throw e
  }
}
