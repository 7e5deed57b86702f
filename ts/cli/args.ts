/** Argument parsing (node:util parseArgs): global options, one command, its options. */
import { parseArgs } from 'node:util'
import type { IdMap } from '../driver'

/** A usage mistake: exit code 2, with the command's usage line. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly command?: string,
    readonly hint?: string,
  ) {
    super(message)
    this.name = 'UsageError'
  }
}

export type OptionSpec = { type: 'string' | 'boolean'; short?: string; multiple?: boolean }
export type OptionSpecs = Record<string, OptionSpec>
export type Values = Record<string, string | boolean | string[] | undefined>

/** Options every command takes. `--size` is create's alone; elsewhere it is refused with a hint (it once was the image size). */
export const GLOBAL_OPTIONS: OptionSpecs = {
  home: { type: 'string' },
  image: { type: 'string' },
  size: { type: 'string' },
  'image-size': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
}

export interface GlobalOptions {
  /** A store on an existing btrfs; else the loopback store. */
  home?: string
  image?: string
  /** Size of a new loopback image. */
  imageSize?: string
  json: boolean
}

/** The first word that is not an option or an option's value: the command name. */
export function findCommand(argv: string[], all: OptionSpecs): string | undefined {
  const { tokens } = parseArgs({ args: argv, options: all, allowPositionals: true, strict: false, tokens: true })
  const first = tokens?.find((t) => t.kind === 'positional')
  return first?.kind === 'positional' ? first.value : undefined
}

/** Whether `--json` was asked for (read loosely, so that even a usage error can answer in JSON). */
export function wantsJson(argv: string[], all: OptionSpecs): boolean {
  const { values } = parseArgs({ args: argv, options: all, allowPositionals: true, strict: false })
  return values.json === true
}

/** Parse `argv` strictly against the global options and `options` (a command's win on a clash). */
export function parseCommandLine(argv: string[], options: OptionSpecs, command: string): { values: Values; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({ args: argv, options: { ...GLOBAL_OPTIONS, ...options }, allowPositionals: true, strict: true })
    const i = positionals.indexOf(command)
    if (i >= 0) positionals.splice(i, 1)
    return { values: values as Values, positionals }
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/\. To specify a positional argument.*$/s, ''), command)
  }
}

/** The global options out of parsed values. `--size` on a command without its own is a usage error: the image size is `--image-size`. */
export function globals(values: Values, command: string, commandHasSize: boolean): GlobalOptions {
  const str = (v: unknown) => (typeof v === 'string' ? v : undefined)
  if (!commandHasSize && values.size !== undefined) {
    throw new UsageError(`${command} has no --size (that is the size limit of create)`, command, 'the size of a new loopback image is --image-size N, e.g. --image-size 8G')
  }
  return {
    home: str(values.home) ?? (process.env.BTRFS_LAYERS_HOME || undefined),
    image: str(values.image),
    imageSize: str(values['image-size']),
    json: values.json === true,
  }
}

const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/

/** A layer id, checked here so a typo is a usage error (exit 2) before any store is opened. */
export function layerId(what: string, value: string | undefined, command: string): string {
  if (value === undefined) throw new UsageError(`missing ${what}`, command)
  if (!ID.test(value)) {
    throw new UsageError(`${what} '${value}' is not a layer id: 1 to 128 of A-Z a-z 0-9 _ . -, starting with a letter or digit`, command)
  }
  return value
}

/** `--parent` of changes and diff: omitted, the recorded parent; `''`, none (the whole layer); else a layer id. */
export function parentOption(value: unknown, command: string): string | null | undefined {
  if (value === undefined) return undefined
  if (value === '') return null
  return layerId('--parent', value as string, command)
}

/** `--uid-map 0:100000:65536` (container:host:size), repeatable. */
export function idMaps(flag: string, values: unknown, command: string): IdMap[] | undefined {
  if (values === undefined) return undefined
  const list = Array.isArray(values) ? values : [values]
  return list.map((v: string) => {
    const m = /^(\d+):(\d+):(\d+)$/.exec(v)
    const nums = m ? [Number(m[1]), Number(m[2]), Number(m[3])] : []
    if (!m || nums.some((n) => n > 0xffffffff) || nums[2] === 0) {
      throw new UsageError(`--${flag} '${v}' must be CONTAINER:HOST:SIZE, e.g. 0:100000:65536`, command)
    }
    return { containerId: nums[0], hostId: nums[1], size: nums[2] }
  })
}

/** A size option: bytes or a number with K/M/G/T. */
export function sizeArg(flag: string, value: unknown, command: string): string | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'string' || !/^\s*\d+(\.\d+)?\s*[kmgtp]?(i?b)?\s*$/i.test(value)) {
    throw new UsageError(`--${flag} '${String(value)}' is not a size: bytes, or a number with K, M, G or T (e.g. 8G)`, command)
  }
  return value
}
