/** Every subcommand, in the order `--help` lists them. */
import type { Command } from '../command'
import { apply } from './apply'
import { bench } from './bench'
import { changes } from './changes'
import { create } from './create'
import { demo } from './demo'
import { diff } from './diff'
import { init } from './init'
import { ls } from './ls'
import { remap } from './remap'
import { rm } from './rm'
import { status } from './status'
import { unmount } from './unmount'

export const COMMANDS: Command[] = [init, status, create, rm, ls, changes, diff, apply, remap, bench, demo, unmount]
