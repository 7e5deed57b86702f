/** Ctrl-C (SIGINT) and SIGTERM abort the running operation through an AbortSignal; a second Ctrl-C quits at once. */

export interface Interrupt {
  signal: AbortSignal
  /** 130 after SIGINT, 143 after SIGTERM. */
  exitCode(): number
  dispose(): void
}

export function onInterrupt(stderr: { write(s: string): unknown }): Interrupt {
  const controller = new AbortController()
  let code = 130
  const handler = (sig: NodeJS.Signals) => {
    if (controller.signal.aborted) {
      stderr.write('\ninterrupted again: quitting now\n')
      process.exit(sig === 'SIGTERM' ? 143 : 130)
    }
    code = sig === 'SIGTERM' ? 143 : 130
    stderr.write(`\n${sig === 'SIGTERM' ? 'terminated' : 'interrupted'}: stopping and undoing the current operation (Ctrl-C again to quit now)\n`)
    controller.abort()
  }
  process.on('SIGINT', handler)
  process.on('SIGTERM', handler)
  return {
    signal: controller.signal,
    exitCode: () => code,
    dispose() {
      process.off('SIGINT', handler)
      process.off('SIGTERM', handler)
    },
  }
}
