/**
 * Manifests and indexes (OCI image spec, Docker schema 2): media types, parsing, and the
 * choice of a platform's manifest from an index or manifest list.
 */
import { BtrfsError } from '../errors'
import { isSha256Digest } from './reference'

export const MediaType = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const

/** The compression of a layer blob, from its media type (OCI's or Docker's). */
export function layerCompression(mediaType: string): 'gzip' | 'zstd' | 'none' {
  if (/[+.]zstd$/.test(mediaType)) return 'zstd'
  if (/[+.]gzip$/.test(mediaType)) return 'gzip'
  return 'none'
}

/** The OCI media type of a layer blob of this type (Docker's named as OCI's), for an OCI manifest. */
export function ociLayerType(mediaType: string): string {
  return { gzip: MediaType.ociLayerGzip, zstd: MediaType.ociLayerZstd, none: MediaType.ociLayer }[layerCompression(mediaType)]
}

/** The manifest types this client reads, in the order of preference of its `Accept` header. */
export const MANIFEST_TYPES: readonly string[] = [MediaType.ociIndex, MediaType.ociManifest, MediaType.dockerManifestList, MediaType.dockerManifest]
const INDEX_TYPES: readonly string[] = [MediaType.ociIndex, MediaType.dockerManifestList]

/**
 * An OCI platform: what an index entry is for, and what `pull` picks.
 * @example await images.pull('alpine', { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } })
 */
export interface Platform {
  os: string
  architecture: string
  variant?: string
  'os.version'?: string
  'os.features'?: string[]
}

/** A content descriptor: what a manifest says about a blob or another manifest. */
export interface Descriptor {
  mediaType: string
  digest: string
  size: number
  platform?: Platform
  annotations?: Record<string, string>
  urls?: string[]
}

export type ParsedManifest =
  | { kind: 'index'; mediaType: string; manifests: Descriptor[]; annotations?: Record<string, string> }
  | { kind: 'manifest'; mediaType: string; config: Descriptor; layers: Descriptor[]; annotations?: Record<string, string> }

function bad(message: string): BtrfsError {
  return new BtrfsError('ERR_BAD_MANIFEST', `ERR_BAD_MANIFEST: ${message}`)
}

function checkDescriptor(d: unknown, where: string): Descriptor {
  const o = d as Partial<Descriptor> | null
  if (!o || typeof o !== 'object') throw bad(`${where} is not a descriptor`)
  if (typeof o.mediaType !== 'string') throw bad(`${where} has no mediaType`)
  if (typeof o.digest !== 'string' || !isSha256Digest(o.digest)) throw bad(`${where} has no sha256 digest`)
  if (typeof o.size !== 'number' || !Number.isSafeInteger(o.size) || o.size < 0) throw bad(`${where} has no valid size`)
  return o as Descriptor
}

/**
 * The media type of a manifest: the `Content-Type` the registry sent when it is one we read,
 * else the document's own `mediaType`, else (old OCI documents have neither) its shape.
 */
export function manifestMediaType(contentType: string | null, bytes: Buffer): string {
  const type = (contentType ?? '').split(';')[0].trim().toLowerCase()
  if (MANIFEST_TYPES.includes(type)) return type
  let doc: { mediaType?: unknown; manifests?: unknown }
  try {
    doc = JSON.parse(bytes.toString('utf8'))
  } catch {
    throw bad(`the manifest is not JSON (Content-Type ${JSON.stringify(type)})`)
  }
  if (typeof doc?.mediaType === 'string') return doc.mediaType
  return Array.isArray(doc?.manifests) ? MediaType.ociIndex : MediaType.ociManifest
}

/**
 * Parse a manifest or index of one of `MANIFEST_TYPES`.
 * @throws {BtrfsError} `ERR_BAD_MANIFEST` for another media type (schema 1, say), a document
 *   that is not JSON, or descriptors without a sha256 digest, media type or size.
 */
export function parseManifest(bytes: Buffer, mediaType: string): ParsedManifest {
  if (!MANIFEST_TYPES.includes(mediaType)) throw bad(`unsupported manifest media type ${JSON.stringify(mediaType)}`)
  let doc: Record<string, unknown>
  try {
    doc = JSON.parse(bytes.toString('utf8'))
  } catch {
    throw bad('the manifest is not JSON')
  }
  if (!doc || typeof doc !== 'object') throw bad('the manifest is not a JSON object')
  if (doc.schemaVersion !== 2) throw bad(`schemaVersion ${JSON.stringify(doc.schemaVersion)}, not 2`)
  if (typeof doc.mediaType === 'string' && doc.mediaType !== mediaType) {
    throw bad(`the manifest says it is ${doc.mediaType}, the registry said ${mediaType}`)
  }
  const annotations = doc.annotations as Record<string, string> | undefined
  if (INDEX_TYPES.includes(mediaType)) {
    if (!Array.isArray(doc.manifests)) throw bad('the index has no manifests array')
    const manifests = doc.manifests.map((d, i) => checkDescriptor(d, `manifests[${i}]`))
    return { kind: 'index', mediaType, manifests, ...(annotations ? { annotations } : {}) }
  }
  if (!Array.isArray(doc.layers)) throw bad('the manifest has no layers array')
  const config = checkDescriptor(doc.config, 'config')
  const layers = doc.layers.map((d, i) => checkDescriptor(d, `layers[${i}]`))
  return { kind: 'manifest', mediaType, config, layers, ...(annotations ? { annotations } : {}) }
}

/** Node's `process.arch` in OCI's (GOARCH) names. */
const ARCH: Record<string, string> = {
  x64: 'amd64',
  arm64: 'arm64',
  arm: 'arm',
  ia32: '386',
  ppc64: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
  loong64: 'loong64',
  mips: 'mips',
  mipsel: 'mipsle',
}
const OS: Record<string, string> = { win32: 'windows', sunos: 'solaris' }

/** This machine's platform in OCI's terms: `linux/amd64`, `linux/arm64/v8`, `linux/arm/v7`. */
export function hostPlatform(): Platform {
  const architecture = ARCH[process.arch] ?? process.arch
  const os = OS[process.platform] ?? process.platform
  if (architecture === 'arm64') return { os, architecture, variant: 'v8' }
  if (architecture === 'arm') {
    const v = (process.config.variables as { arm_version?: string | number }).arm_version
    return { os, architecture, ...(v !== undefined ? { variant: `v${v}` } : {}) }
  }
  return { os, architecture }
}

/** Parse `linux/arm64/v8` or `linux/amd64`. */
export function parsePlatform(s: string): Platform {
  const [os, architecture, variant, ...more] = s.split('/')
  if (!os || !architecture || more.length > 0 || variant === '') {
    throw new BtrfsError('EINVAL', `EINVAL: platform ${JSON.stringify(s)} is not os/architecture[/variant]`)
  }
  return { os, architecture, ...(variant !== undefined ? { variant } : {}) }
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`
}

/** arm64's only variant is v8, so an index entry without one matches `v8` and vice versa. */
function variantOf(p: Platform): string | undefined {
  return p.architecture === 'arm64' && p.variant === undefined ? 'v8' : p.variant
}

/**
 * The descriptor of `want`'s manifest in an index: same os and architecture, and the same
 * variant when `want` names one, else an entry without a variant (arm/v7 runs an arm image
 * that names none; amd64 prefers the entry without a v2/v3 micro-architecture).
 * @throws {BtrfsError} `ENOENT` when the index has none (the message lists what it has).
 */
export function selectPlatform(manifests: readonly Descriptor[], want: Platform = hostPlatform()): Descriptor {
  const candidates = manifests.filter(
    (d) => MANIFEST_TYPES.includes(d.mediaType) && d.platform && d.platform.os === want.os && d.platform.architecture === want.architecture,
  )
  const wantVariant = variantOf(want)
  const plain = candidates.find((d) => variantOf(d.platform as Platform) === undefined)
  const chosen =
    wantVariant === undefined
      ? (plain ?? candidates[0])
      : (candidates.find((d) => variantOf(d.platform as Platform) === wantVariant) ?? plain)
  if (!chosen) {
    const has = manifests.filter((d) => d.platform).map((d) => formatPlatform(d.platform as Platform))
    throw new BtrfsError('ENOENT', `ENOENT: no manifest for ${formatPlatform(want)} in the index; it has ${has.length ? has.join(', ') : 'no platforms'}`)
  }
  return chosen
}
