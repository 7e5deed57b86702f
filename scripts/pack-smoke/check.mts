// Type check of the ESM entry as a consumer sees it (tsc --module node16).
import btrfs, { BtrfsDriver, BtrfsError, createSubvolume, type SubvolumeInfo } from 'btrfs-layers'

export async function check(dir: string): Promise<SubvolumeInfo> {
  const created: Promise<void> = createSubvolume(`${dir}/a`)
  await created
  const driver: BtrfsDriver = await BtrfsDriver.init(`${dir}/store`)
  const layers: string[] = await driver.layers()
  void layers
  const e: unknown = new BtrfsError('ENOENT', 'x')
  if (e instanceof btrfs.BtrfsError) void e.code
  return btrfs.subvolumeInfo(`${dir}/a`)
}
