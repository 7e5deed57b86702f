/**
 * What a crash may leave of the layers: the states the workload gave each layer, and which of
 * them a crash at a given point of the write log may show.
 *
 * The workload runs its steps one at a time, each between a `begin` and an `end` mark. A crash
 * before record `cut` may show a layer in any state it had from the last returned durability
 * sync on (every step that returned before a sync began is durable) up to the state after the
 * last step that had begun (a step may have completed without returning). Each layer is judged
 * on its own, whole: complete or absent, never in between.
 */
import { createHash } from 'node:crypto'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'

/** A layer as a crash must show it, or null when absent. */
export interface LayerState {
  /** Relative path -> `dir MODE UID:GID`, `file MODE UID:GID SIZE SHA256`, `link TARGET UID:GID`. */
  tree: Record<string, string>
  readOnly: boolean
  parent: string
}

/** Every entry below `root` (not following symlinks): type, mode, owner, size and content. */
export async function describeTree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  const walk = async (abs: string, rel: string): Promise<void> => {
    const st = await fsp.lstat(abs)
    const mode = (st.mode & 0o7777).toString(8)
    const owner = `${st.uid}:${st.gid}`
    if (st.isSymbolicLink()) {
      out[rel] = `link ${await fsp.readlink(abs)} ${owner}`
    } else if (st.isFile()) {
      const sha = createHash('sha256').update(await fsp.readFile(abs)).digest('hex').slice(0, 16)
      out[rel] = `file ${mode} ${owner} ${st.size} ${sha}`
    } else if (st.isDirectory()) {
      out[rel] = `dir ${mode} ${owner}`
      for (const name of (await fsp.readdir(abs)).sort()) await walk(path.join(abs, name), rel === '.' ? name : `${rel}/${name}`)
    } else {
      out[rel] = `other ${mode} ${owner}`
    }
  }
  await walk(root, '.')
  return out
}

const key = (s: LayerState | null) => (s === null ? 'absent' : JSON.stringify([s.readOnly, s.parent, Object.entries(s.tree).sort()]))

export interface StepRecord {
  name: string
  /** Whether this step is the durability sync. */
  sync: boolean
  /** Record numbers of its begin and end marks in the write log. */
  begin: number
  end: number
}

/** States of each layer after each step, and the steps' places in the log. */
export class LayerHistory {
  /** after[t]: layer -> its state after the first t steps, and the step that made it. */
  readonly #after: Map<string, { state: LayerState | null; by: string }>[] = [new Map()]
  readonly steps: StepRecord[] = []

  /** Record that step `name` ran and left `changed` layers in these states. */
  push(name: string, sync: boolean, changed: Map<string, LayerState | null>): void {
    const next = new Map(this.#after[this.#after.length - 1])
    for (const [id, state] of changed) next.set(id, { state, by: name })
    this.#after.push(next)
    this.steps.push({ name, sync, begin: -1, end: -1 })
  }

  /** Fill in where each step's marks are in the log (marks `begin N ...` / `end N ...`). */
  place(marks: { record: number; text: string }[]): void {
    for (const m of marks) {
      const g = /^(begin|end) (\d+) /.exec(m.text)
      if (!g) continue
      const step = this.steps[Number(g[2])]
      if (!step) throw new Error(`a mark of an unknown step: ${m.text}`)
      step[g[1] as 'begin' | 'end'] = m.record
    }
    const missing = this.steps.filter((s) => s.begin < 0 || s.end < 0 || s.end < s.begin)
    if (missing.length > 0) throw new Error(`steps without their marks in the log: ${missing.map((s) => s.name).join(', ')}`)
  }

  layers(): string[] {
    return [...new Set(this.#after.flatMap((m) => [...m.keys()]))].sort()
  }

  /** The steps that had returned before record `cut`. */
  returned(cut: number): StepRecord[] {
    return this.steps.filter((s) => s.end < cut)
  }

  /**
   * For each layer, the states a crash before record `cut` may show, each with the step that
   * made it ('' for none: not made yet).
   */
  allowed(cut: number): Map<string, { state: LayerState | null; after: string }[]> {
    const started = this.steps.filter((s) => s.begin < cut).length
    let from = 0
    this.steps.forEach((s, i) => {
      if (s.sync && s.end < cut) from = i
    })
    const out = new Map<string, { state: LayerState | null; after: string }[]>()
    for (const id of this.layers()) {
      const seen = new Set<string>()
      const list: { state: LayerState | null; after: string }[] = []
      for (let t = from; t <= started; t++) {
        const { state, by } = this.#after[t].get(id) ?? { state: null, by: '' }
        if (seen.has(key(state))) continue
        seen.add(key(state))
        list.push({ state, after: by })
      }
      out.set(id, list)
    }
    return out
  }
}

/** Whether `seen` is one of `allowed`. */
export function isAllowed(seen: LayerState | null, allowed: { state: LayerState | null }[]): boolean {
  return allowed.some((a) => key(a.state) === key(seen))
}

/** Why `seen` is none of `allowed`, against the nearest of them, in a few lines. */
export function explain(id: string, seen: LayerState | null, allowed: { state: LayerState | null; after: string }[]): string {
  const shown = allowed.map((a) => (a.state === null ? 'absent' : `as after '${a.after || 'the start'}'`)).join(', or ')
  const head = `layer '${id}' is ${seen === null ? 'absent' : 'in none of its states'}; it may be ${shown}`
  if (seen === null) return head
  const candidates = allowed.filter((a) => a.state !== null) as { state: LayerState; after: string }[]
  if (candidates.length === 0) return `layer '${id}' is present (${Object.keys(seen.tree).length} entries), but may only be absent`
  const shared = (a: LayerState) => Object.keys(a.tree).filter((n) => n in seen.tree).length
  const nearest = candidates.reduce((best, a) => (shared(a.state) > shared(best.state) ? a : best))
  const want = nearest.state
  const names = Object.keys(want.tree)
  const files = names.filter((n) => want.tree[n].startsWith('file '))
  const missing = names.filter((n) => !(n in seen.tree))
  const extra = Object.keys(seen.tree).filter((n) => !(n in want.tree))
  const differ = names.filter((n) => n in seen.tree && seen.tree[n] !== want.tree[n])
  const emptied = files.filter((n) => seen.tree[n]?.startsWith('file ') && seen.tree[n].split(' ')[3] === '0' && want.tree[n].split(' ')[3] !== '0')
  const lines = [
    head,
    `  nearest: as after '${nearest.after}': ${names.length - missing.length} of its ${names.length} names present, ` +
      `${missing.length} missing, ${extra.length} extra, ${differ.length} entries differ`,
  ]
  if (emptied.length > 0) lines.push(`  ${emptied.length} of its ${files.length} files are EMPTY (size 0) where they had data`)
  if (seen.readOnly !== want.readOnly) lines.push(`  read-only is ${seen.readOnly}, want ${want.readOnly}`)
  if (seen.parent !== want.parent) lines.push(`  parent is '${seen.parent}', want '${want.parent}'`)
  for (const n of differ.slice(0, 3)) lines.push(`  ${n}: ${seen.tree[n]}  (want ${want.tree[n]})`)
  for (const n of missing.slice(0, 2)) lines.push(`  ${n}: missing (want ${want.tree[n]})`)
  for (const n of extra.slice(0, 2)) lines.push(`  ${n}: extra ${seen.tree[n]}`)
  return lines.join('\n')
}
