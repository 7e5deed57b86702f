// Type check of the ESM entry as a consumer sees it (tsc --strict --module node16): the 1.0
// call forms and result types compile, and each `@ts-expect-error` line is an error (tsc fails
// on an unused one), so the types are as strict as they claim.
import btrfs, { BtrfsDriver, BtrfsError, LayerHandle, createSubvolume, type Change, type SubvolumeInfo } from 'btrfs-layers'
import { Readable } from 'node:stream'

export async function check(dir: string): Promise<SubvolumeInfo> {
  const created: Promise<void> = createSubvolume(`${dir}/a`)
  await created
  await using driver = await BtrfsDriver.init(`${dir}/store`, { minSpace: '16M' })
  const layers: string[] = await driver.layers()
  void layers
  await driver.create('base')
  await driver.create('child', { parent: 'base', size: '1G' })
  const changes: Change[] = await driver.changes('child', { parent: 'base', signal: AbortSignal.timeout(1000) })
  const kind: 'add' | 'modify' | 'delete' | undefined = changes[0]?.kind
  void kind
  const tar: Readable = await driver.diff('child', { compression: 'zstd' })
  const applied: number = await driver.applyDiff('copy', tar, { parent: 'base', onProgress: (n: number) => void n })
  void applied
  const size: number = await driver.diffSize('child', { parent: null })
  void size
  {
    await using layer = await driver.acquire('child')
    const held: LayerHandle = layer
    const where: string = held.path
    void where
  }
  // @ts-expect-error a parent is a string or null
  await driver.changes('child', { parent: 1 })
  // @ts-expect-error no such compression
  await driver.diff('child', { compression: 'brotli' })
  // @ts-expect-error unknown option
  await driver.create('x', { parnet: 'base' })
  // @ts-expect-error applyDiff needs an input
  await driver.applyDiff('x', { parent: 'base' })
  const e: unknown = new BtrfsError('ENOENT', 'x')
  if (e instanceof btrfs.BtrfsError) void e.code
  return btrfs.subvolumeInfo(`${dir}/a`)
}
