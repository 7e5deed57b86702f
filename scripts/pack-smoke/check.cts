// Type check of the CommonJS entry as a consumer sees it (tsc --module node16).
import btrfs = require('btrfs-layers')

export async function check(dir: string): Promise<boolean> {
  const driver: btrfs.BtrfsDriver = await btrfs.BtrfsDriver.init(`${dir}/store`)
  await driver.create('base')
  const info: btrfs.SubvolumeInfo = await btrfs.subvolumeInfo(`${dir}/store`)
  void info.uuid
  return btrfs.isSubvolume(dir)
}
