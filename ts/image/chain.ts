/**
 * OCI chain IDs (image spec, config.md "Layer ChainID"): chainID(1) = diffID(1),
 * chainID(n) = sha256(chainID(n-1) + " " + diffID(n)). A layer's id in the driver is its chain
 * ID's hex, so two images with the same base share its layers.
 */
import { createHash } from 'node:crypto'
import { BtrfsError } from '../errors'
import { isSha256Digest } from './reference'

/** The chain IDs of `diffIds` (base first), as `sha256:<hex>`. */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = []
  for (const [i, diffId] of diffIds.entries()) {
    if (!isSha256Digest(diffId)) throw new BtrfsError('ERR_BAD_MANIFEST', `ERR_BAD_MANIFEST: rootfs.diff_ids[${i}] ${JSON.stringify(diffId)} is not a sha256 digest`)
    out.push(i === 0 ? diffId : `sha256:${createHash('sha256').update(`${out[i - 1]} ${diffId}`).digest('hex')}`)
  }
  return out
}

/** The driver's layer id for a chain ID: its 64 hex digits. */
export function layerIdOf(chainId: string): string {
  return chainId.slice('sha256:'.length)
}
