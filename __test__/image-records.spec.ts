// Image records on their own (no btrfs needed): the manifest's and config's exact bytes come
// back even when they are not UTF-8 text, a record without `blobs` (written before they were
// kept) reads, and malformed `blobs` or `raw` are ERR_BAD_RECORD.
import test from 'ava'
import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { imageRecord, readRecords, recordBytes, recordPath, writeRecord, type StoredImage } from '../ts/image/records'
import { sha256 } from './helpers/oci-layout'

const config = Buffer.from('{"rootfs":{"type":"layers","diff_ids":[]},"x":"\xff"}', 'latin1') // not UTF-8
const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, layers: [] }))

function record(): StoredImage {
  const desc = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${'1'.repeat(64)}`, size: 3 }
  return imageRecord(
    { digest: sha256(manifest), mediaType: 'application/vnd.oci.image.manifest.v1+json', bytes: manifest, layers: [desc], config: { ...desc, digest: sha256(config) } },
    config,
    { diffIds: [`sha256:${'2'.repeat(64)}`], layers: ['a'], references: [], platform: { os: 'linux', architecture: 'amd64' }, source: { registry: 'r.example', repository: 'x/y' } },
  )
}

test('exact bytes: a config that is not UTF-8 keeps its bytes (and digest) through a written record', async (t) => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'records-'))
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }))
  const rec = record()
  t.truthy(rec.raw?.config)
  t.is(rec.raw?.manifest, undefined, 'UTF-8 text needs no copy')
  await writeRecord(dir, rec)
  const [back] = await readRecords(dir, { clean: false })
  const bytes = recordBytes(back)
  t.is(sha256(bytes.config), sha256(config))
  t.not(sha256(Buffer.from(back.config, 'utf8')), sha256(config), 'the text alone would not give them')
  t.is(sha256(bytes.manifest), back.digest)
  t.deepEqual(back.blobs, [{ ...rec.blobs![0], sources: [{ registry: 'r.example', repository: 'x/y' }] }])
})

test('a record without blobs reads; malformed blobs or raw are ERR_BAD_RECORD', async (t) => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'records-'))
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }))
  const rec = record()
  const file = recordPath(dir, rec.digest)
  const put = (v: unknown) => fsp.writeFile(file, JSON.stringify(v))
  const { blobs: _, ...old } = rec
  await put(old)
  t.is((await readRecords(dir, { clean: false }))[0].blobs, undefined)
  for (const bad of [{ blobs: [] }, { blobs: [{ ...rec.blobs![0], sources: [{ registry: 1 }] }] }, { blobs: [{ digest: 'x' }] }, { raw: { config: 5 } }]) {
    await put({ ...rec, ...bad })
    await t.throwsAsync(readRecords(dir, { clean: false }), { code: 'ERR_BAD_RECORD' }, JSON.stringify(bad))
  }
})
