/**
 * Layer records: each layer's record is an xattr on its root (trusted.btrfs-layers.record),
 * read here with getfattr as the independent oracle. `metadata/` holds none, so a store whose
 * `metadata/` is deleted or holds broken files opens unchanged, and a store written by the
 * previous version (records in `metadata/<id>.json`) opens with its records moved onto the
 * layers: same ids, parents, creation times, flags, limits and id maps.
 */
import test from 'ava'
import { execFile } from 'node:child_process'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { promisify } from 'node:util'
import type { BtrfsDriver, LayerMetadata } from '../ts/index'
import { btrfsCli, oracleReadOnly, useBtrfs } from './helpers/btrfs'
import { collectDriversBeforeTeardown, oracleQgroups, oracleRecord, storeEntries, withDriver } from './helpers/driver-util'

collectDriversBeforeTeardown(test)
const { btrfsTest, fs } = useBtrfs(test, { tools: ['getfattr', 'setfattr'] })
const run = promisify(execFile)
const MIB = 1024 * 1024
const MAPS = { uidMaps: [{ containerId: 0, hostId: 300000, size: 65536 }], gidMaps: [{ containerId: 0, hostId: 300000, size: 65536 }] }
const IDS = ['base', 'child', 'mapped', 'labelled'] as const

/** A store with a plain layer, a read-only child with a size limit, a remapped layer, a labelled one. */
async function populate(d: BtrfsDriver): Promise<void> {
  await d.create('base')
  await fsp.writeFile(path.join(await d.get('base'), 'f'), 'base file')
  await d.put('base')
  await d.create('child', 'base', { readOnly: true, size: 64 * MIB })
  await d.remap('base', 'mapped', MAPS)
  await d.create('labelled', 'mapped', { mountLabel: 'system_u:object_r:container_file_t:s0' })
}

/** Everything the driver and the kernel say about each layer. */
async function describe(d: BtrfsDriver, home: string) {
  const out: Record<string, unknown> = {}
  const qgroups = new Map((await oracleQgroups(fs().mnt)).map((q) => [q.id, q.maxRfer]))
  for (const id of IDS) {
    const p = path.join(home, 'subvolumes', id)
    const meta = await d.getMetadata(id)
    out[id] = {
      meta,
      record: await oracleRecord(p),
      readOnly: await oracleReadOnly(p),
      limit: qgroups.get(`0/${meta.subvolumeId}`) ?? null,
      owner: (await fsp.stat(p)).uid,
    }
  }
  return out
}

btrfsTest.serial('metadata/ deleted, empty or truncated: init finds every record on its layer', async (t, dir) => {
  const home = path.join(dir, 'home')
  const before = await withDriver(home, undefined, async (d) => {
    await populate(d)
    return describe(d, home)
  })
  t.truthy((before.mapped as { record: { uidMaps?: unknown } }).record.uidMaps, 'the remapped layer records its maps')
  t.is((before.child as { limit: number | null }).limit, 64 * MIB)

  await fsp.rm(path.join(home, 'metadata'), { recursive: true })
  const gone = await withDriver(home, undefined, (d) => describe(d, home))
  t.deepEqual(gone, before, 'metadata/ deleted: the same layers')

  await fsp.writeFile(path.join(home, 'metadata', 'child.json'), '')
  await fsp.writeFile(path.join(home, 'metadata', 'mapped.json'), '{"parent":"ba')
  const broken = await withDriver(home, undefined, (d) => describe(d, home))
  t.deepEqual(broken, before, 'empty and truncated files: the same layers')
  t.deepEqual((await storeEntries(home)).metadata, [], 'init removed the broken files')
})

/** What the previous version wrote for a layer: `metadata/<id>.json`, pretty-printed. */
function legacyFile(id: string, meta: LayerMetadata, rec: Record<string, unknown> | null) {
  return JSON.stringify(
    {
      id,
      parent: meta.parent,
      created: meta.created.getTime(),
      readOnly: meta.readOnly,
      size: meta.size,
      subvolumeId: meta.subvolumeId,
      mountLabel: meta.mountLabel ?? null,
      ...(rec?.uidMaps ? { uidMaps: rec.uidMaps, gidMaps: rec.gidMaps } : {}),
      ...(rec?.uuid ? { uuid: rec.uuid } : {}),
      ...(rec?.origin ? { origin: rec.origin } : {}),
    },
    null,
    2,
  )
}

btrfsTest.serial('a store of the previous version (records in metadata/<id>.json) opens with its records moved onto the layers', async (t, dir) => {
  const home = path.join(dir, 'home')
  const before = await withDriver(home, undefined, async (d) => {
    await populate(d)
    return describe(d, home)
  })
  // Turn it into what the previous version left: no xattr, a JSON file per layer.
  for (const id of IDS) {
    const p = path.join(home, 'subvolumes', id)
    const { meta, record } = before[id] as { meta: LayerMetadata; record: Record<string, unknown> | null }
    const ro = await oracleReadOnly(p)
    if (ro) await btrfsCli('property', 'set', p, 'ro', 'false')
    if (record) await run('setfattr', ['-x', 'trusted.btrfs-layers.record', p])
    if (ro) await btrfsCli('property', 'set', p, 'ro', 'true')
    await fsp.writeFile(path.join(home, 'metadata', `${id}.json`), legacyFile(id, meta, record))
    t.is(await oracleRecord(p), null)
  }
  const after = await withDriver(home, undefined, (d) => describe(d, home))
  for (const id of IDS) {
    const b = before[id] as { meta: unknown; readOnly: boolean; limit: unknown; owner: number; record: Record<string, unknown> | null }
    const a = after[id] as typeof b
    t.deepEqual(a.meta, b.meta, `${id}: getMetadata as before`)
    t.is(a.readOnly, b.readOnly, `${id}: read-only flag as before`)
    t.is(a.limit, b.limit, `${id}: size limit as before`)
    if (id === 'base') continue
    t.is(a.record?.parent, b.record?.parent, `${id}: the record on the layer names its parent`)
    t.deepEqual(a.record?.uidMaps, b.record?.uidMaps, `${id}: id maps`)
    t.deepEqual(a.record?.origin, b.record?.origin, `${id}: origin`)
  }
  t.deepEqual((await storeEntries(home)).metadata, [], 'the JSON files are gone once moved')
})
