// Type check of the CommonJS entry as a consumer sees it (tsc --strict --module node16).
import btrfs = require('btrfs-layers')

export async function check(dir: string): Promise<boolean> {
  const driver: btrfs.BtrfsDriver = await btrfs.BtrfsDriver.init(`${dir}/store`)
  try {
    await driver.create('base')
    await driver.create('child', { parent: 'base', readOnly: true })
    const changes: btrfs.Change[] = await driver.changes('child')
    void changes
    const handle: btrfs.LayerHandle = await driver.acquire('base')
    await handle.release()
    // @ts-expect-error the options are an object
    await driver.diffSize('child', 5)
  } finally {
    await driver.close()
  }
  const info: btrfs.SubvolumeInfo = await btrfs.subvolumeInfo(`${dir}/store`)
  void info.uuid
  return btrfs.isSubvolume(dir)
}
