/**
 * The OCI image config (image spec config.md): the fields this package reads and writes, and
 * the checks a pulled config must pass.
 */
import { BtrfsError } from '../errors'
import { isSha256Digest } from './reference'

/**
 * One `history` entry of an image config.
 * @example await images.commit('ct1', { config: { history: [{ created_by: 'base' }, { created_by: 'npm install' }] } })
 */
export interface HistoryEntry {
  created?: string
  created_by?: string
  author?: string
  comment?: string
  /** Whether the step made no layer. */
  empty_layer?: boolean
}

/**
 * An OCI image config; unknown fields are kept as they are.
 * @example const { config, rootfs } = (await images.get('alpine')).config
 */
export interface ImageConfig {
  architecture: string
  os: string
  variant?: string
  created?: string
  author?: string
  /** The container's defaults: `Env`, `Entrypoint`, `Cmd`, `WorkingDir`, `User`, `Labels`, ... */
  config?: Record<string, unknown>
  rootfs: { type: 'layers'; diff_ids: string[] }
  history?: HistoryEntry[]
  [field: string]: unknown
}

function bad(why: string): BtrfsError {
  return new BtrfsError('ERR_BAD_MANIFEST', `ERR_BAD_MANIFEST: image config: ${why}`)
}

/**
 * Parse a config blob and check it names `layers` diffIDs.
 * @throws {BtrfsError} `ERR_BAD_MANIFEST`.
 */
export function parseConfig(bytes: Buffer, layers: number): ImageConfig {
  let c: Partial<ImageConfig> | null
  try {
    c = JSON.parse(bytes.toString('utf8'))
  } catch {
    throw bad('not JSON')
  }
  if (!c || typeof c !== 'object' || Array.isArray(c)) throw bad('not a JSON object')
  const rootfs = c.rootfs as { type?: unknown; diff_ids?: unknown } | undefined
  if (!rootfs || rootfs.type !== 'layers' || !Array.isArray(rootfs.diff_ids)) throw bad('no rootfs of type "layers" with diff_ids')
  if (!rootfs.diff_ids.every((d) => typeof d === 'string' && isSha256Digest(d))) throw bad('a diff_id is not a sha256 digest')
  if (rootfs.diff_ids.length !== layers) throw bad(`${rootfs.diff_ids.length} diff_ids for ${layers} layers in the manifest`)
  return c as ImageConfig
}
