import { BtrfsError } from '../../errors'
import { ImageStore } from '../../image/store'
import { UsageError } from '../args'
import { formatBytes, formatDuration } from '../format'
import { withStore } from '../store'
import { note, output, say, type Command } from '../command'
import { readStdin } from './pull'

export const push: Command = {
  name: 'push',
  summary: 'push an image of the store to an OCI registry',
  usage: 'REF [TARGET] [--compression gzip|zstd] [--insecure] [--user U --password-stdin]',
  help: [
    'REF                 the image: a reference, a digest or 12+ hex digits of one',
    'TARGET              where to push it (default: REF itself)',
    '--compression C     gzip or zstd: of diffs made again, and reused blobs must be it (default: blobs',
    '                    go as pulled, diffs as gzip)',
    '--insecure          plain http for a registry not on this machine (localhost is always http)',
    '--user U            with --password-stdin: credentials (else ~/.docker/config.json, else anonymous)',
    'A layer goes as the blob it was pulled or imported as when the registry has it or can mount it',
    '(then, with every layer so, the digest stays); otherwise as its diff. Blobs the registry has are skipped.',
  ].join('\n'),
  options: {
    compression: { type: 'string' },
    insecure: { type: 'boolean' },
    user: { type: 'string', short: 'u' },
    'password-stdin': { type: 'boolean' },
  },
  args: { min: 1, max: 2 },
  async run(ctx) {
    const [ref, target = ref] = ctx.args
    const v = ctx.values
    const compression = v.compression
    if (compression !== undefined && compression !== 'gzip' && compression !== 'zstd') throw new UsageError(`--compression '${String(compression)}' is not gzip or zstd`, ctx.command)
    if ((v.user === undefined) !== (v['password-stdin'] === undefined)) throw new UsageError('--user and --password-stdin go together', ctx.command)
    const password = v['password-stdin'] ? await readStdin() : undefined
    await withStore(
      ctx.global,
      ctx.hints,
      async (s) => {
        if (ctx.signal.aborted) throw new BtrfsError('ABORT_ERR', 'ABORT_ERR: interrupted before anything was sent')
        const images = await ImageStore.open(s.driver)
        const t0 = performance.now()
        const r = await images.push(ref, target, {
          ...(compression !== undefined ? { compression } : {}),
          signal: ctx.signal,
          onProgress: (e) => {
            if (e.state !== 'uploading') note(ctx, `layer ${e.layer + 1}/${e.layers} ${e.id.slice(0, 12)}: ${formatBytes(e.total)}, ${e.state}`)
          },
          ...(v.insecure ? { insecure: true } : {}),
          ...(password !== undefined ? { auth: { username: v.user as string, password } } : {}),
        })
        const sent = r.layers.filter((l) => l.blob === 'uploaded').reduce((n, l) => n + l.size, 0)
        note(ctx, `push ${r.reference}: ${formatBytes(sent)} uploaded in ${formatDuration(performance.now() - t0)}, ${r.layers.length} layers`)
        output(ctx, r, () => say(ctx, `pushed ${r.reference}: ${r.digest}`))
      },
      { readOnly: true },
    )
  },
}
