/**
 * One layer blob into the driver: the single place the pull calls the apply path,
 * `driver.applyLayer`, which makes the layer atomically from the bytes as they arrive (gzip,
 * zstd or plain, detected) and verifies the blob's digest and size and the diffID in the same
 * pass. A mismatch is `ERR_DIGEST`, and nothing of the layer is kept.
 */
import type { Readable } from 'node:stream'
import type { AppliedLayer, BtrfsDriver, LayerVerify } from '../driver'

/**
 * Make layer `id` (on `parent`) from the blob bytes in `input`, verified against `verify`.
 * @throws {BtrfsError} `ERR_DIGEST`, `EEXIST`, `ERR_BAD_LAYER`, `AbortError`, ...
 */
export async function applyBlob(
  driver: BtrfsDriver,
  id: string,
  parent: string | null,
  input: Readable,
  verify: Required<LayerVerify>,
  o: { signal?: AbortSignal } = {},
): Promise<AppliedLayer> {
  // An error that came while the blob waited for its parent (ERR_DIGEST at its end, a cut).
  if (input.errored) throw input.errored
  try {
    return await driver.applyLayer(id, input, { parent, verify, ...(o.signal ? { signal: o.signal } : {}) })
  } finally {
    input.destroy()
  }
}
