import { ImageStore } from '../../image/store'
import { parsePlatform } from '../../image/manifest'
import { BtrfsError } from '../../errors'
import { UsageError } from '../args'
import { formatBytes } from '../format'
import { PullProgressLines } from '../pull-progress'
import { withStore } from '../store'
import { output, say, type Command } from '../command'
import { imageSummary } from './images'

/** All of stdin as text, without a final newline (a password piped in). */
export async function readStdin(): Promise<string> {
  const parts: Buffer[] = []
  for await (const c of process.stdin) parts.push(c as Buffer)
  return Buffer.concat(parts).toString('utf8').replace(/\r?\n$/, '')
}

export const pull: Command = {
  name: 'pull',
  summary: 'pull an image from an OCI registry into the store',
  usage: 'REF [--platform OS/ARCH[/VARIANT]] [--insecure] [--user U --password-stdin] [--concurrency N]',
  help: [
    'REF                 alpine, docker.io/library/alpine:3.20, localhost:5000/app@sha256:...',
    '--platform P        the entry of a multi-platform image to pull (default: this machine)',
    '--insecure          plain http for a registry not on this machine (localhost is always http)',
    '--user U            with --password-stdin: credentials (else ~/.docker/config.json, else anonymous)',
    '--concurrency N     blobs fetched at once (default 3)',
    'Layers already in the store are reused. Ctrl-C stops the pull and leaves no half layer.',
  ].join('\n'),
  options: {
    platform: { type: 'string' },
    insecure: { type: 'boolean' },
    user: { type: 'string', short: 'u' },
    'password-stdin': { type: 'boolean' },
    concurrency: { type: 'string' },
  },
  args: { min: 1, max: 1 },
  async run(ctx) {
    const ref = ctx.args[0]
    const v = ctx.values
    let platform: ReturnType<typeof parsePlatform> | undefined
    try {
      platform = v.platform === undefined ? undefined : parsePlatform(v.platform as string)
    } catch (e) {
      throw new UsageError(`--platform: ${(e as Error).message.replace(/^EINVAL: /, '')}`, ctx.command)
    }
    if ((v.user === undefined) !== (v['password-stdin'] === undefined)) throw new UsageError('--user and --password-stdin go together', ctx.command)
    const concurrency = v.concurrency === undefined ? undefined : Number(v.concurrency)
    if (concurrency !== undefined && (!Number.isSafeInteger(concurrency) || concurrency < 1)) throw new UsageError(`--concurrency '${String(v.concurrency)}' is not a whole number from 1`, ctx.command)
    const password = v['password-stdin'] ? await readStdin() : undefined
    await withStore(ctx.global, ctx.hints, async (s) => {
      if (ctx.signal.aborted) throw new BtrfsError('ABORT_ERR', 'ABORT_ERR: interrupted before anything was changed')
      const images = await ImageStore.open(s.driver)
      const progress = new PullProgressLines(`pull ${ref}`, ctx.stderr)
      let rec
      try {
        rec = await images.pull(ref, {
          signal: ctx.signal,
          onProgress: (e) => progress.event(e),
          ...(platform ? { platform } : {}),
          ...(v.insecure ? { insecure: true } : {}),
          ...(password !== undefined ? { auth: { username: v.user as string, password } } : {}),
          ...(concurrency !== undefined ? { concurrency } : {}),
        })
      } catch (e) {
        progress.clear()
        throw e
      }
      progress.finish()
      output(ctx, imageSummary(rec), () => say(ctx, `pulled ${rec.references[0] ?? rec.digest}: ${rec.digest}, ${rec.layers.length} layers, ${formatBytes(rec.size)}`))
    })
  },
}
