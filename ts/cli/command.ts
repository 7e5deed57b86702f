/** The shape of one subcommand and what it gets to run with. */
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import { pipeline } from 'node:stream/promises'
import type { GlobalOptions, OptionSpecs, Values } from './args'
import type { HintContext } from './hints'

export interface Context {
  /** The command's name as typed. */
  command: string
  global: GlobalOptions
  /** The command's own option values. */
  values: Values
  /** Positional arguments after the command name. */
  args: string[]
  /** Aborted on Ctrl-C (SIGINT) or SIGTERM. */
  signal: AbortSignal
  /** Filled in as the store opens, so errors can name it. */
  hints: HintContext
  stdout: NodeJS.WriteStream
  stderr: NodeJS.WriteStream
}

export interface Command {
  name: string
  /** One line for the command list. */
  summary: string
  /** Arguments and options, after `btrfs-layers <name> `. */
  usage: string
  /** Longer help: what each option does. */
  help?: string
  options: OptionSpecs
  /** Positional arguments accepted. */
  args: { min: number; max: number }
  /** Runs the command; resolves to the exit code (0 when nothing is returned). */
  run(ctx: Context): Promise<number | void>
}

/** Print `data` as JSON with --json, else run `human`. */
export function output(ctx: Context, data: unknown, human: () => void): void {
  if (ctx.global.json) ctx.stdout.write(`${JSON.stringify(data, null, 2)}\n`)
  else human()
}

/**
 * Resolves once what was written to stdout is out, or its reader went away (the 'error'
 * listener of main then aborts `ctx.signal`): a note after data waits for it, so a closed
 * pipe (`| head`) leaves no summary of output nobody read.
 */
export function stdoutDone(ctx: Context): Promise<void> {
  return new Promise((resolve) => {
    const done = () => setImmediate(resolve)
    if (ctx.stdout.destroyed || ctx.stdout.writableEnded) return done()
    ctx.stdout.write('', done)
  })
}

/**
 * Pipe `streams` (a source, then transforms) to `file` (`-o FILE`), or to stdout when none,
 * left open for what follows. On
 * a failure a file this call made is removed (a partial tar or send stream is worse than
 * none; what existed before, maybe not a regular file, is never removed) and `failed` runs.
 */
export async function writeOut(ctx: Context, streams: (NodeJS.ReadableStream | NodeJS.ReadWriteStream)[], file: string | undefined, failed: () => void): Promise<void> {
  const existed = file !== undefined && fs.existsSync(file)
  try {
    if (file !== undefined) await pipeline([...streams, fs.createWriteStream(file)])
    else await pipeline([...streams, ctx.stdout], { end: false })
  } catch (e) {
    failed()
    if (file !== undefined && !existed) await fsp.rm(file, { force: true })
    throw e
  }
}

/** A line to stdout. */
export function say(ctx: Context, line = ''): void {
  ctx.stdout.write(`${line}\n`)
}

/** A line to stderr (notes and progress, never data). */
export function note(ctx: Context, line: string): void {
  ctx.stderr.write(`${line}\n`)
}
