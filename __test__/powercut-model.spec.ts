/**
 * The power-cut test's model of what a crash may leave (helpers/powercut-model.ts), on its own:
 * which states of each layer a crash before a given log record may show. Needs no root.
 */
import test from 'ava'
import { LayerHistory, explain, isAllowed, type LayerState } from './helpers/powercut-model'

const tree = (files: Record<string, string>): LayerState => ({ tree: { '.': 'dir 755 0:0', ...files }, readOnly: false, parent: '' })
const EMPTY = tree({})
const APPLIED = tree({ a: 'file 644 0:0 5 aaaa', b: 'file 644 0:0 7 bbbb' })

/**
 * Marks at these records: create x (10-20), applyDiff x (30-40), create y (50-60),
 * sync (70-80), remove y (90-100).
 */
function history(): LayerHistory {
  const h = new LayerHistory()
  h.push('create x', false, new Map([['x', EMPTY]]))
  h.push('applyDiff x', false, new Map([['x', APPLIED]]))
  h.push('create y', false, new Map([['y', EMPTY]]))
  h.push('sync', true, new Map())
  h.push('remove y', false, new Map([['y', null]]))
  h.place(
    ['create x', 'applyDiff x', 'create y', 'sync', 'remove y'].flatMap((name, i) => [
      { record: 10 + 20 * i, text: `begin ${i} ${name}` },
      { record: 20 + 20 * i, text: `end ${i} ${name}` },
    ]),
  )
  return h
}

const states = (h: LayerHistory, cut: number, id: string) => (h.allowed(cut).get(id) ?? []).map((a) => a.state)

test('before a step begins, only the state before it', (t) => {
  const h = history()
  t.deepEqual(states(h, 5, 'x'), [null])
  t.deepEqual(states(h, 5, 'y'), [null])
})

test('a step that began may have happened or not, returned or not', (t) => {
  const h = history()
  t.deepEqual(states(h, 15, 'x'), [null, EMPTY])
  t.deepEqual(states(h, 25, 'x'), [null, EMPTY], 'returned, but no sync yet: may be lost')
  t.deepEqual(states(h, 35, 'x'), [null, EMPTY, APPLIED])
})

test('after a returned sync, everything before it is durable', (t) => {
  const h = history()
  t.deepEqual(states(h, 75, 'x'), [null, EMPTY, APPLIED], 'the sync had not returned')
  t.deepEqual(states(h, 81, 'x'), [APPLIED])
  t.deepEqual(states(h, 81, 'y'), [EMPTY])
  t.deepEqual(states(h, 95, 'y'), [EMPTY, null], 'a removal after the sync may be lost')
  t.deepEqual(h.returned(81).map((s) => s.name), ['create x', 'applyDiff x', 'create y', 'sync'])
})

test('a layer with all names but empty files is none of its states, and the explanation says so', (t) => {
  const h = history()
  const may = h.allowed(45).get('x')!
  const emptied = tree({ a: 'file 644 0:0 0 e3b0', b: 'file 644 0:0 0 e3b0' })
  t.false(isAllowed(emptied, may))
  t.true(isAllowed(APPLIED, may))
  t.true(isAllowed(null, may))
  const why = explain('x', emptied, may)
  t.regex(why, /layer 'x' is in none of its states/)
  t.regex(why, /nearest: as after 'applyDiff x': 3 of its 3 names present, 0 missing, 0 extra, 2 entries differ/)
  t.regex(why, /2 of its 2 files are EMPTY \(size 0\)/)
  t.regex(explain('x', null, h.allowed(81).get('x')!), /layer 'x' is absent; it may be as after 'applyDiff x'/)
})

test('marks missing from the log are an error of the rig', (t) => {
  const h = new LayerHistory()
  h.push('create x', false, new Map([['x', EMPTY]]))
  t.throws(() => h.place([{ record: 3, text: 'begin 0 create x' }]), { message: /without their marks.*create x/ })
})
