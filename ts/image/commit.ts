/**
 * `ImageStore.commit`: an image from a layer and its parents, like `docker commit`. The diffIDs
 * are the sha256 of each layer's uncompressed diff against its parent; the manifest recorded
 * is an OCI manifest with uncompressed layer descriptors (digest = diffID), so its digest is
 * known without compressing anything. A push that compresses writes its own manifest.
 */
import type { BtrfsDriver } from '../driver'
import { BtrfsError } from '../errors'
import { abortError } from '../validate'
import type { HistoryEntry, ImageConfig } from './config'
import { hostPlatform, MediaType } from './manifest'
import type { StoredImage } from './records'
import { sha256 } from './registry'

/**
 * Options of `ImageStore.commit`.
 * @example await images.commit('ct1', { reference: 'localhost:5000/app:v2', config: { config: { Env: ['A=1'] } } })
 */
export interface CommitOptions {
  /** The reference to give the image (`'localhost:5000/app:v1'`, `'app'`); none: untagged. */
  reference?: string
  /**
   * The config to start from (`config.Env`, `Cmd`, `Labels`, `architecture`, ...). Its `rootfs`
   * is replaced; its `history` is kept when it names as many layers as the chain has, else
   * one entry per layer is made.
   */
  config?: Partial<ImageConfig>
  signal?: AbortSignal
}

/** The layer ids from the base to `top`, following each layer's recorded parent. */
export async function layerChain(driver: BtrfsDriver, top: string): Promise<string[]> {
  const chain: string[] = []
  for (let id: string | null = top; id !== null; ) {
    if (chain.includes(id)) throw new BtrfsError('ERR_INTERNAL', `ERR_INTERNAL: the parents of layer ${top} form a cycle at ${id}`)
    chain.push(id)
    id = (await driver.getMetadata(id)).parent
  }
  return chain.reverse()
}

/** The diffID and length of layer `id`'s uncompressed diff against `parent` (hashed by the driver as it writes the diff). */
async function diffId(driver: BtrfsDriver, id: string, parent: string | null, signal?: AbortSignal): Promise<{ diffId: string; size: number }> {
  const stream = await driver.diff(id, { parent, compression: 'none', digests: true, ...(signal ? { signal } : {}) })
  stream.resume()
  const d = await stream.digests
  return { diffId: d.diffId, size: d.uncompressedSize }
}

function layerHistory(given: HistoryEntry[] | undefined, layers: string[], created: string): HistoryEntry[] {
  const nonEmpty = (given ?? []).filter((h) => !h.empty_layer).length
  if (given && nonEmpty === layers.length) return given
  return layers.map((id) => ({ created, created_by: `btrfs-layers commit ${id}` }))
}

/** The record of the image made of the chain `layers` (base first; references: `reference`'s, when given). */
export async function commitImage(driver: BtrfsDriver, layers: string[], reference: string | undefined, o: CommitOptions): Promise<StoredImage> {
  const diffs: { diffId: string; size: number }[] = []
  for (const [i, id] of layers.entries()) {
    if (o.signal?.aborted) throw abortError(o.signal)
    diffs.push(await diffId(driver, id, i === 0 ? null : layers[i - 1], o.signal))
  }
  const created = new Date().toISOString()
  const host = hostPlatform()
  const given = o.config ?? {}
  const config: ImageConfig = {
    created,
    architecture: host.architecture,
    os: host.os,
    ...(host.variant ? { variant: host.variant } : {}),
    ...given,
    rootfs: { type: 'layers', diff_ids: diffs.map((d) => d.diffId) },
    history: layerHistory(given.history, layers, created),
  }
  const configBytes = Buffer.from(JSON.stringify(config))
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: sha256(configBytes), size: configBytes.length },
      layers: diffs.map((d) => ({ mediaType: MediaType.ociLayer, digest: d.diffId, size: d.size })),
    }),
  )
  const now = Date.now()
  return {
    schemaVersion: 1,
    digest: sha256(manifest),
    references: reference ? [reference] : [],
    mediaType: MediaType.ociManifest,
    manifest: manifest.toString('utf8'),
    configDigest: sha256(configBytes),
    config: configBytes.toString('utf8'),
    diffIds: diffs.map((d) => d.diffId),
    layers,
    platform: { os: config.os, architecture: config.architecture, ...(config.variant ? { variant: config.variant } : {}) },
    size: diffs.reduce((n, d) => n + d.size, 0),
    created: now,
    updated: now,
  }
}
