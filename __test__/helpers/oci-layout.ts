/**
 * OCI image layouts built by hand for the image specs: layer tars (diff-tar's builder) as
 * gzip, zstd (the zstd program) or plain blobs, a config with their diffIDs, a manifest, and
 * an index.json; `crane push` (of a layout directory) puts them in a registry.
 */
import { createHash } from 'node:crypto'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { gzipSync } from 'node:zlib'
import { buildTar, type RawEntry, zstdCompress } from './diff-tar'

export type LayerCompression = 'gzip' | 'zstd' | 'none'

export const LAYER_TYPE: Record<LayerCompression, string> = {
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  none: 'application/vnd.oci.image.layer.v1.tar',
}

export const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`

export interface BuiltLayer {
  tar: Buffer
  blob: Buffer
  digest: string
  diffId: string
  mediaType: string
}

export async function layer(entries: RawEntry[], compression: LayerCompression): Promise<BuiltLayer> {
  const tar = buildTar(entries)
  const blob = compression === 'gzip' ? gzipSync(tar) : compression === 'zstd' ? await zstdCompress(tar) : tar
  return { tar, blob, digest: sha256(blob), diffId: sha256(tar), mediaType: LAYER_TYPE[compression] }
}

export interface BuiltImage {
  manifest: Buffer
  digest: string
  config: Buffer
  layers: BuiltLayer[]
  platform: { os: string; architecture: string; variant?: string }
}

export function image(layers: BuiltLayer[], platform: BuiltImage['platform'] = { os: 'linux', architecture: 'amd64' }): BuiltImage {
  const config = Buffer.from(
    JSON.stringify({
      ...platform,
      config: { Env: ['PATH=/usr/bin:/bin'] },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: layers.map((_, i) => ({ created_by: `layer ${i}` })),
    }),
  )
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
      layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.blob.length })),
    }),
  )
  return { manifest, digest: sha256(manifest), config, layers, platform }
}

/**
 * Write an OCI layout holding `images` into `dir`: with `index`, index.json names one
 * multi-platform index (push with `crane push --index`? no: crane pushes the layout's single
 * entry, the index); else it names the one image's manifest.
 */
export async function writeLayout(dir: string, images: BuiltImage[], o: { index?: boolean } = {}): Promise<{ digest: string }> {
  const blobs = path.join(dir, 'blobs', 'sha256')
  await fsp.mkdir(blobs, { recursive: true })
  const put = (b: Buffer) => fsp.writeFile(path.join(blobs, sha256(b).slice(7)), b)
  await fsp.writeFile(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }))
  for (const img of images) {
    await put(img.manifest)
    await put(img.config)
    for (const l of img.layers) await put(l.blob)
  }
  const entries = images.map((img) => ({
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    digest: img.digest,
    size: img.manifest.length,
    platform: img.platform,
  }))
  if (!o.index) {
    await fsp.writeFile(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: entries }))
    return { digest: images[0].digest }
  }
  const inner = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: entries }))
  await put(inner)
  await fsp.writeFile(
    path.join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [{ mediaType: 'application/vnd.oci.image.index.v1+json', digest: sha256(inner), size: inner.length }],
    }),
  )
  return { digest: sha256(inner) }
}
