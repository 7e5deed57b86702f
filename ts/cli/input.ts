/** The input file of `apply` and `receive`: a path, or `-` for stdin, checked before the store opens. */
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import { UsageError } from './args'
import type { Context } from './command'
import { CliError } from './hints'

/**
 * Check `file` (`-`: stdin, which must not be a terminal) and return its size when it is a
 * regular file (for a progress bar's total). `what` names the input (`a tar`); `fifo` accepts
 * a named pipe as `file`.
 */
export async function inputSize(ctx: Context, file: string, what: string, o: { fifo?: boolean } = {}): Promise<number | undefined> {
  if (file === '-') {
    if (process.stdin.isTTY) throw new UsageError(`stdin is a terminal: pipe ${what} into it (< FILE) or pass FILE`, ctx.command)
    const st = fs.fstatSync(0)
    return st.isFile() ? st.size : undefined
  }
  let st: fs.Stats
  try {
    st = await fsp.stat(file)
  } catch (e) {
    throw new CliError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code}`, (e as NodeJS.ErrnoException).code, `pass the path of ${what}, or - for stdin`)
  }
  if (!st.isFile() && !(o.fifo && st.isFIFO())) throw new CliError(`${file} is not a file`, 'EINVAL', `pass the path of ${what}, or - for stdin`)
  return st.isFile() ? st.size : undefined
}
