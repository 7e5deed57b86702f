/** `import` and `export`: OCI image layout directories. */
import { BtrfsError } from '../../errors'
import { parsePlatform } from '../../image/manifest'
import { ImageStore } from '../../image/store'
import { UsageError } from '../args'
import { formatBytes } from '../format'
import { withStore } from '../store'
import { note, output, say, type Command } from '../command'
import { imageSummary } from './images'

export const importLayout: Command = {
  name: 'import',
  summary: 'import the image of an OCI image layout directory',
  usage: 'DIR [--ref REF] [--platform OS/ARCH[/VARIANT]]',
  help: "--ref REF        the reference to give the image (its tag also picks the layout's entry of that name)\n--platform P     the entry of a multi-platform layout (default: this machine)",
  options: { ref: { type: 'string' }, platform: { type: 'string' } },
  args: { min: 1, max: 1 },
  async run(ctx) {
    const v = ctx.values
    let platform: ReturnType<typeof parsePlatform> | undefined
    try {
      platform = v.platform === undefined ? undefined : parsePlatform(v.platform as string)
    } catch (e) {
      throw new UsageError(`--platform: ${(e as Error).message.replace(/^EINVAL: /, '')}`, ctx.command)
    }
    await withStore(ctx.global, ctx.hints, async (s) => {
      if (ctx.signal.aborted) throw new BtrfsError('ABORT_ERR', 'ABORT_ERR: interrupted before anything was changed')
      const rec = await (await ImageStore.open(s.driver)).importLayout(ctx.args[0], {
        signal: ctx.signal,
        ...(typeof v.ref === 'string' ? { reference: v.ref } : {}),
        ...(platform ? { platform } : {}),
      })
      output(ctx, imageSummary(rec), () => say(ctx, `imported ${rec.references[0] ?? rec.digest}: ${rec.digest}, ${rec.layers.length} layers, ${formatBytes(rec.size)}`))
    })
  },
}

export const exportLayout: Command = {
  name: 'export',
  summary: 'write an image into an OCI image layout directory',
  usage: 'REF DIR [--compression gzip|zstd] [--rediff | --offline]',
  help: [
    'REF              a reference, a digest or 12+ hex digits of one',
    'DIR              made when missing; an existing layout gets another entry',
    '--compression C  gzip or zstd: of diffs made again, and kept blobs must be it (default: blobs',
    '                 as pulled, diffs as gzip)',
    '--rediff         every layer as its diff made again (another digest)',
    '--offline        no network: only blobs the layout has are kept, the other layers are diffed',
    'A layer goes as the blob it was pulled as when the layout has it or a repository it was pulled',
    'from serves it (credentials: ~/.docker/config.json); with every layer so, the image keeps its digest.',
  ].join('\n'),
  options: { compression: { type: 'string' }, rediff: { type: 'boolean' }, offline: { type: 'boolean' } },
  args: { min: 2, max: 2 },
  async run(ctx) {
    const v = ctx.values
    const compression = v.compression
    if (compression !== undefined && compression !== 'gzip' && compression !== 'zstd') throw new UsageError(`--compression '${String(compression)}' is not gzip or zstd`, ctx.command)
    if (v.rediff && v.offline) throw new UsageError('--rediff and --offline exclude each other', ctx.command)
    await withStore(
      ctx.global,
      ctx.hints,
      async (s) => {
        const [ref, dir] = ctx.args
        const d = await (await ImageStore.open(s.driver)).exportLayout(ref, dir, {
          ...(compression !== undefined ? { compression } : {}),
          ...(v.rediff ? { rediff: true } : {}),
          ...(v.offline ? { offline: true } : {}),
          signal: ctx.signal,
          onProgress: (e) => note(ctx, `layer ${e.layer + 1}/${e.layers} ${e.id.slice(0, 12)}: ${formatBytes(e.size)}, ${e.blob}${e.from ? ` from ${e.from}` : ''}`),
        })
        output(ctx, { ...d, dir }, () => say(ctx, `exported ${ref} to ${dir}: ${d.digest}`))
      },
      { readOnly: true },
    )
  },
}
