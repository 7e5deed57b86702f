import type { ImageRecord } from '../../image/store'
import { ImageStore } from '../../image/store'
import { formatBytes, table } from '../format'
import { withStore } from '../store'
import { output, say, type Command } from '../command'

/** What --json prints of an image: the record, with the config's platform fields and the time as text. */
export function imageSummary(r: ImageRecord): Record<string, unknown> {
  return {
    digest: r.digest,
    references: r.references,
    mediaType: r.mediaType,
    layers: r.layers,
    diffIds: r.diffIds,
    platform: r.platform ?? null,
    size: r.size,
    created: r.created.toISOString(),
    configDigest: r.configDigest,
  }
}

export const images: Command = {
  name: 'images',
  summary: 'list the images: reference, digest, layers, size',
  usage: '',
  options: {},
  args: { min: 0, max: 0 },
  async run(ctx) {
    await withStore(
      ctx.global,
      ctx.hints,
      async (s) => {
        const list = await (await ImageStore.open(s.driver)).list()
        output(ctx, list.map(imageSummary), () => {
          if (list.length === 0) return say(ctx, `no images in ${s.home}`)
          const rows = list.flatMap((r) =>
            (r.references.length > 0 ? r.references : ['<none>']).map((ref) => [ref, r.digest.slice(7, 19), String(r.layers.length), formatBytes(r.size)]),
          )
          say(ctx, table([['REFERENCE', 'DIGEST', 'LAYERS', 'SIZE'], ...rows]))
        })
      },
      { readOnly: true },
    )
  },
}
