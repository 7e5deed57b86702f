/**
 * Interruptions: Ctrl-C (SIGINT), SIGTERM and a closed output pipe (EPIPE) abort the running
 * operation through an AbortSignal. The command then undoes what it did and releases the
 * store; a second signal never cuts that short (a process that quit mid-way would leave a
 * half-made layer and the store's private mount behind), it only says that it is waiting.
 */

/** Exit code after the reader of the output went away: what a shell shows for a process SIGPIPE ended (128 + 13). */
export const EXIT_PIPE = 141

export interface Interrupt {
  signal: AbortSignal
  /** 130 after SIGINT, 143 after SIGTERM, 141 after a closed output pipe. */
  exitCode(): number
  /** Whether the output's reader went away: the command ends without another word. */
  readonly quiet: boolean
  /** The output's reader went away (EPIPE): stop as after Ctrl-C, quietly. */
  pipeClosed(): void
  dispose(): void
}

export function onInterrupt(stderr: { write(s: string): unknown }): Interrupt {
  const controller = new AbortController()
  let code = 130
  let quiet = false
  let warned = false
  const tell = (s: string) => {
    if (quiet) return
    try {
      stderr.write(s)
    } catch {
      // stderr is gone too: nothing to tell
    }
  }
  const handler = (sig: NodeJS.Signals) => {
    if (controller.signal.aborted) {
      if (!warned) tell('\nstill undoing the interrupted operation and releasing the store; quitting as soon as that is done\n')
      warned = true
      return
    }
    code = sig === 'SIGTERM' ? 143 : 130
    tell(`\n${sig === 'SIGTERM' ? 'terminated' : 'interrupted'}: stopping and undoing the current operation\n`)
    controller.abort()
  }
  process.on('SIGINT', handler)
  process.on('SIGTERM', handler)
  return {
    signal: controller.signal,
    exitCode: () => code,
    get quiet() {
      return quiet
    },
    pipeClosed() {
      if (controller.signal.aborted) return
      quiet = true
      code = EXIT_PIPE
      controller.abort()
    },
    dispose() {
      process.off('SIGINT', handler)
      process.off('SIGTERM', handler)
    },
  }
}
