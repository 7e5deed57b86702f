/**
 * A layer's blob from the repositories it was pulled from (`StoredBlob.sources`): what `push`
 * copies to a registry that neither has it nor can mount it, and what `exportLayout` writes into
 * a layout, so that the image keeps its digests. The bytes stream from the source's response
 * with their sha256 and size checked on the way (`RegistryClient.getBlob`): a mismatch is
 * `ERR_DIGEST`, which no other source is asked to make up for. A source that cannot be reached
 * or refuses the credentials is not asked again within the call; one that lacks the blob (404)
 * still is for the others.
 */
import { BtrfsError } from '../errors'
import type { Credentials } from './auth'
import type { BlobSource, StoredBlob } from './records'
import { parseReference } from './reference'
import { RegistryClient, type BlobStream } from './registry'
import type { RetryOptions } from './transport'

export interface SourceOptions extends RetryOptions {
  /**
   * Credentials per source registry, keyed as references name it (`docker.io`,
   * `127.0.0.1:5000`); a registry without an entry gets its `~/.docker/config.json`
   * (`DOCKER_CONFIG`) `auths` entry, else none.
   */
  sourceAuth?: Record<string, Credentials>
  signal?: AbortSignal
}

/** A source that answered with the blob: its bytes, and a way to ask for them again from the start. */
export interface OpenedBlob {
  stream: BlobStream
  source: BlobSource
  reopen: () => Promise<BlobStream>
}

/** `registry/repository`, as the progress and results name a source. */
export function sourceName(s: BlobSource): string {
  return `${s.registry}/${s.repository}`
}

/** The sources of the blobs of one push or export, with the clients and the failures met so far. */
export class SourceBlobs {
  readonly #o: SourceOptions
  readonly #clients = new Map<string, RegistryClient>()
  /** Registries (unreachable) and repositories (credentials refused) not asked again, and why. */
  readonly #dead = new Map<string, string>()
  /** Why each source asked failed, in order: `registry/repository: message`. */
  readonly failures: string[] = []

  /** `own`: the client of a registry the call talks to anyway (the push's target), used for its repositories. */
  constructor(o: SourceOptions, own?: RegistryClient) {
    this.#o = o
    if (own) this.#clients.set(own.registry, own)
  }

  #client(s: BlobSource): RegistryClient {
    let c = this.#clients.get(s.registry)
    if (!c) {
      const auth = this.#o.sourceAuth?.[s.registry]
      c = new RegistryClient(parseReference(sourceName(s)), {
        ...(auth ? { auth } : {}),
        ...(this.#o.retries !== undefined ? { retries: this.#o.retries } : {}),
        ...(this.#o.retryDelay !== undefined ? { retryDelay: this.#o.retryDelay } : {}),
      })
      this.#clients.set(s.registry, c)
    }
    return c
  }

  /**
   * Each source of `blob` that answers with it, in order: the caller reads one, and on a
   * failure of its stream calls `failed` and takes the next.
   * @throws {BtrfsError} `ERR_DIGEST` (a source's size differs), `AbortError`.
   */
  async *each(blob: StoredBlob): AsyncGenerator<OpenedBlob> {
    for (const source of blob.sources) {
      const dead = this.#dead.get(source.registry) ?? this.#dead.get(sourceName(source))
      if (dead !== undefined) {
        this.failures.push(`${sourceName(source)}: not asked again (${dead})`)
        continue
      }
      const client = this.#client(source)
      const reopen = () => client.getBlob(source.repository, blob.digest, { size: blob.size, ...(this.#o.signal ? { signal: this.#o.signal } : {}) })
      let stream: BlobStream
      try {
        stream = await reopen()
      } catch (e) {
        this.failed(source, e)
        continue
      }
      yield { stream, source, reopen }
    }
  }

  /**
   * Note why `source` failed. What is not the source's absence or unreachability is thrown:
   * `ERR_DIGEST` (it served other bytes), an abort, a bug.
   */
  failed(source: BlobSource, e: unknown): void {
    const code = e instanceof BtrfsError ? e.code : undefined
    if (code === 'ERR_REGISTRY') this.#dead.set(source.registry, code)
    else if (code === 'ERR_REGISTRY_AUTH') this.#dead.set(sourceName(source), code)
    else if (code !== 'ENOENT' && code !== 'EINVAL') throw e
    this.failures.push(`${sourceName(source)}: ${(e as Error).message}`)
  }
}
