#!/usr/bin/env node
/**
 * `btrfs-layers`: the command line of the layer store. Each command opens the store (the
 * loopback image's, or `--home DIR` on an existing btrfs), does one thing and releases it.
 * Exit codes: 0 ok, 1 operational error, 2 usage error, 130 interrupted (143 after SIGTERM,
 * 141 when the reader of the output went away). With --json an error is one JSON object on
 * stdout: `{"error":{"code","message","hint"}}`.
 */
import { findCommand, GLOBAL_OPTIONS, globals, parseCommandLine, UsageError, wantsJson, type OptionSpecs } from './args'
import type { Command, Context } from './command'
import { COMMANDS } from './commands'
import { detailsOf, EXIT_INTERRUPTED, EXIT_USAGE, explain, type HintContext } from './hints'
import { onInterrupt, type Interrupt } from './interrupt'
import { packageVersion } from './package'

const NAME = 'btrfs-layers'

function usageLine(c: Command): string {
  return `${NAME} ${c.name}${c.usage ? ` ${c.usage}` : ''}`
}

function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length))
  return [
    `${NAME} ${packageVersion()}: layered filesystem trees on btrfs`,
    '',
    `Usage: ${NAME} <command> [options]`,
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Global options:',
    '  --home DIR        a store on an existing btrfs, or $BTRFS_LAYERS_HOME (default: the loopback store, <mnt>/store)',
    '  --image PATH      the loopback image (default ~/.local/share/btrfs-layers/store.img)',
    '  --image-size N    size of a new loopback image, e.g. 8G (default 4G)',
    '  --json            print data as JSON; an error as {"error":{"code","message","hint"}} on stdout',
    '  -h, --help        help; `btrfs-layers help <command>` for one command',
    '',
    'Exit codes: 0 ok, 1 operational error, 2 usage error, 130 interrupted (143 by SIGTERM),',
    '141 when the reader of the output went away (as a process SIGPIPE ends).',
  ].join('\n')
}

function commandHelp(c: Command): string {
  return [`Usage: ${usageLine(c)}`, '', c.summary, ...(c.help ? ['', c.help] : [])].join('\n')
}

/** Resolves once what was written to `s` is out (or the stream failed). */
function flushed(s: NodeJS.WriteStream, interrupt: Interrupt): Promise<void> {
  return new Promise((resolve) => {
    // Let an 'error' event queued by an earlier write arrive first.
    const done = () => setImmediate(resolve)
    if ((s.errored as NodeJS.ErrnoException | null)?.code === 'EPIPE') interrupt.pipeClosed()
    if (s.destroyed || s.writableEnded) return done()
    s.write('', (err) => {
      if (err) interrupt.pipeClosed()
      done()
    })
  })
}

/** Run the command line `argv` (without node and the script); resolves to the exit code. */
export async function main(argv: string[], io: { stdout: NodeJS.WriteStream; stderr: NodeJS.WriteStream } = process): Promise<number> {
  const interrupt = onInterrupt(io.stderr)
  // A reader that went away (`| head`) interrupts the command like Ctrl-C, quietly.
  const onOutputError = (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED') interrupt.pipeClosed()
  }
  io.stdout.on('error', onOutputError)
  io.stderr.on('error', onOutputError)
  try {
    const code = await run(argv, io, interrupt)
    await flushed(io.stdout, interrupt)
    return interrupt.signal.aborted ? interrupt.exitCode() : code
  } finally {
    interrupt.dispose()
  }
}

async function run(argv: string[], io: { stdout: NodeJS.WriteStream; stderr: NodeJS.WriteStream }, interrupt: Interrupt): Promise<number> {
  const all: OptionSpecs = { ...GLOBAL_OPTIONS }
  for (const c of COMMANDS) Object.assign(all, c.options)
  const name = findCommand(argv, all)
  const json = wantsJson(argv, all)
  const hints: HintContext = { command: name ?? '' }
  const fail = (err: unknown): number => {
    const e = explain(err, hints)
    // The reader went away: nobody to tell.
    if (interrupt.quiet) return e.exit
    if (json) {
      const error = { code: e.code, message: e.message, hint: e.hint ?? null, ...(e.pid ? { pid: e.pid } : {}) }
      io.stdout.write(`${JSON.stringify({ error, ...detailsOf(err) }, null, 2)}\n`)
      if (process.env.BTRFS_LAYERS_DEBUG && err instanceof Error) io.stderr.write(`${err.stack}\n`)
      return e.exit
    }
    io.stderr.write(`${NAME}${hints.command ? ` ${hints.command}` : ''}: ${e.message}\n`)
    if (e.hint) io.stderr.write(`hint: ${e.hint}\n`)
    if (e.exit === EXIT_USAGE) {
      const c = COMMANDS.find((x) => x.name === hints.command)
      io.stderr.write(c ? `usage: ${usageLine(c)}\n` : `run '${NAME} --help' for the commands\n`)
    }
    if (process.env.BTRFS_LAYERS_DEBUG && err instanceof Error) io.stderr.write(`${err.stack}\n`)
    return e.exit
  }

  if (argv.includes('--version') && name === undefined) {
    io.stdout.write(`${packageVersion()}\n`)
    return 0
  }
  if (name === undefined || name === 'help') {
    const topic = name === 'help' ? argv[argv.indexOf('help') + 1] : undefined
    const c = COMMANDS.find((x) => x.name === topic)
    if (name === undefined && !argv.includes('--help') && !argv.includes('-h')) {
      io.stderr.write(`${mainHelp()}\n`)
      return EXIT_USAGE
    }
    if (topic !== undefined && !c) return fail(new UsageError(`unknown command '${topic}'`))
    io.stdout.write(`${c ? commandHelp(c) : mainHelp()}\n`)
    return 0
  }
  const command = COMMANDS.find((c) => c.name === name)
  if (!command) {
    hints.command = ''
    return fail(new UsageError(`unknown command '${name}'`))
  }

  try {
    const { values, positionals } = parseCommandLine(argv, command.options, name)
    if (values.help) {
      io.stdout.write(`${commandHelp(command)}\n`)
      return 0
    }
    const g = globals(values, name, 'size' in command.options)
    if (g.home !== undefined && (g.image !== undefined || g.imageSize !== undefined)) {
      throw new UsageError('--image and --image-size are for the loopback store; drop them, or --home', name)
    }
    if (positionals.length < command.args.min) {
      const wanted = command.usage.split(' ').filter((w) => /^[A-Z][A-Z|.-]*$/.test(w))
      throw new UsageError(`missing ${wanted.slice(positionals.length).join(' ') || 'arguments'}`, name)
    }
    if (positionals.length > command.args.max) throw new UsageError(`unexpected argument '${positionals[command.args.max]}'`, name)
    const own: Record<string, unknown> = {}
    for (const k of Object.keys(command.options)) own[k] = values[k]
    const ctx: Context = {
      command: name,
      global: g,
      values: own as Context['values'],
      args: positionals,
      signal: interrupt.signal,
      hints,
      stdout: io.stdout,
      stderr: io.stderr,
    }
    const code = (await command.run(ctx)) ?? 0
    return interrupt.signal.aborted ? interrupt.exitCode() : code
  } catch (err) {
    const code = fail(err)
    return code === EXIT_INTERRUPTED || interrupt.signal.aborted ? interrupt.exitCode() : code
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code
      // The command is done and the store released: a signal now must not kill the exit short.
      const ignore = () => undefined
      process.on('SIGINT', ignore)
      process.on('SIGTERM', ignore)
    },
    (err) => {
      process.stderr.write(`${NAME}: internal error: ${err instanceof Error ? err.stack : String(err)}\n`)
      process.exitCode = 1
    },
  )
}
