/**
 * Image references (`alpine`, `localhost:5000/a/b:tag`, `host/x@sha256:...`), parsed and
 * normalized as Docker does, validated with the grammar of distribution's reference package.
 */
import { BtrfsError } from '../errors'

/** A parsed, normalized reference. At least one of `tag` and `digest` is set. */
export interface Reference {
  /** The registry as named: `docker.io`, `localhost:5000`, `[::1]:5000`. */
  registry: string
  /** The host (and port) HTTP requests go to: `registry-1.docker.io` for `docker.io`. */
  host: string
  /** The repository path: `library/alpine`. */
  repository: string
  /** `latest` when neither a tag nor a digest was given. */
  tag?: string
  /** `sha256:<64 hex>`. */
  digest?: string
}

export const DOCKER_HUB = 'docker.io'
const DOCKER_HUB_HOST = 'registry-1.docker.io'
const NAME_MAX = 255

// The grammar of github.com/distribution/reference (regexp.go).
const alnum = '[a-z0-9]+'
const separator = '(?:[._]|__|[-]+)'
const pathComponent = `${alnum}(?:${separator}${alnum})*`
const domainComponent = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])'
const domainName = `${domainComponent}(?:\\.${domainComponent})*`
const ipv6 = '\\[(?:[a-fA-F0-9:]+)\\]'
const domain = `(?:${domainName}|${ipv6})(?::[0-9]+)?`
const DOMAIN = new RegExp(`^${domain}$`)
const PATH = new RegExp(`^${pathComponent}(?:/${pathComponent})*$`)
const TAG = /^[\w][\w.-]{0,127}$/
const DIGEST = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$/
const SHA256 = /^sha256:[0-9a-f]{64}$/

function invalid(input: string, why: string): BtrfsError {
  return new BtrfsError('EINVAL', `EINVAL: invalid image reference ${JSON.stringify(input)}: ${why}`)
}

/**
 * Parse and normalize `input` as Docker does: a first component without `.` or `:` that is not
 * `localhost` (and is lower case) is a path on Docker Hub, and a one-component Docker Hub name
 * gets `library/`; `index.docker.io` means `docker.io`. Without a tag or digest, the tag is
 * `latest`.
 * @throws {BtrfsError} `EINVAL` for anything outside the grammar, upper-case repository
 *   names, a digest that is not sha256 or a name longer than 255 characters.
 */
export function parseReference(input: string): Reference {
  if (typeof input !== 'string') {
    throw Object.assign(new TypeError('The "reference" argument must be of type string'), { code: 'ERR_INVALID_ARG_TYPE' })
  }
  if (input === '') throw invalid(input, 'empty')
  let rest = input
  let digest: string | undefined
  const at = rest.indexOf('@')
  if (at !== -1) {
    digest = rest.slice(at + 1)
    rest = rest.slice(0, at)
    if (!DIGEST.test(digest)) throw invalid(input, `bad digest ${JSON.stringify(digest)}`)
    if (!SHA256.test(digest)) throw invalid(input, 'only sha256 digests (64 lower-case hex digits) are supported')
  }
  // A tag is after the last ':' that comes after the last '/' (a ':' before it is a port).
  let tag: string | undefined
  const colon = rest.lastIndexOf(':')
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1)
    rest = rest.slice(0, colon)
    if (!TAG.test(tag)) throw invalid(input, `bad tag ${JSON.stringify(tag)}`)
  }
  let registry: string
  let repository: string
  const slash = rest.indexOf('/')
  const first = slash === -1 ? '' : rest.slice(0, slash)
  if (slash === -1 || (!/[.:]/.test(first) && first !== 'localhost' && first.toLowerCase() === first)) {
    registry = DOCKER_HUB
    repository = rest
  } else {
    registry = first
    repository = rest.slice(slash + 1)
    if (!DOMAIN.test(registry)) throw invalid(input, `bad registry ${JSON.stringify(registry)}`)
  }
  if (registry === 'index.docker.io') registry = DOCKER_HUB
  if (registry === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`
  if (repository === '') throw invalid(input, 'no repository')
  if (repository.toLowerCase() !== repository) throw invalid(input, 'repository names must be lower case')
  if (!PATH.test(repository)) throw invalid(input, `bad repository ${JSON.stringify(repository)}`)
  if (registry.length + 1 + repository.length > NAME_MAX) throw invalid(input, `name longer than ${NAME_MAX} characters`)
  if (tag === undefined && digest === undefined) tag = 'latest'
  return {
    registry,
    host: registry === DOCKER_HUB ? DOCKER_HUB_HOST : registry,
    repository,
    ...(tag !== undefined ? { tag } : {}),
    ...(digest !== undefined ? { digest } : {}),
  }
}

/** The canonical string: `docker.io/library/alpine:latest`, `host/repo:tag@sha256:...`. */
export function formatReference(ref: Reference): string {
  return `${ref.registry}/${ref.repository}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`
}

/** Whether a well-formed digest string is a sha256 one we can verify. */
export function isSha256Digest(s: string): boolean {
  return SHA256.test(s)
}

/** Whether `host` (with or without a port) is this machine, where plain http is the default. */
export function isLoopbackHost(host: string): boolean {
  const name = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.replace(/:[0-9]+$/, '')
  return name === 'localhost' || name === '127.0.0.1' || name === '[::1]'
}
