#!/usr/bin/env node
// Lists every public function and method of the API docs (typedoc's docs/api/api.json, made
// by `npm run docs`) whose JSDoc has no @example. Exit status 1 when any lacks one, unless
// --report-only. Usage: node scripts/check-docs.mjs [--report-only] [path/to/api.json]
import { readFileSync } from 'node:fs'

const args = process.argv.slice(2)
const reportOnly = args.includes('--report-only')
const file = args.find((a) => !a.startsWith('--')) ?? 'docs/api/api.json'

// typedoc's ReflectionKind values.
const FUNCTION = 64
const CLASS = 128
const CONSTRUCTOR = 512
const METHOD = 2048

const project = JSON.parse(readFileSync(file, 'utf8'))
const hasExample = (comment) => Boolean(comment?.blockTags?.some((t) => t.tag === '@example'))
const where = (n) => (n.sources?.[0] ? `${n.sources[0].fileName}:${n.sources[0].line}` : '?')

const checked = []
const missing = []
function visit(node, owner) {
  if (node.flags?.isPrivate || node.flags?.isProtected || node.flags?.isExternal || node.inheritedFrom) return
  const name = owner ? `${owner}.${node.name}` : node.name
  if (node.kind === FUNCTION || node.kind === METHOD) {
    checked.push(name)
    const documented = hasExample(node.comment) || (node.signatures ?? []).some((s) => hasExample(s.comment))
    if (!documented) missing.push(`${name} (${where(node)})`)
  }
  if (node.kind === CLASS) {
    checked.push(name)
    if (!hasExample(node.comment)) missing.push(`class ${name} (${where(node)})`)
  }
  if (node.kind === CONSTRUCTOR) return // classes are constructed through a documented factory or `new X(...)` in the class example
  for (const child of node.children ?? []) visit(child, node.kind === CLASS ? name : owner)
}
for (const child of project.children ?? []) visit(child)

console.log(`API docs: ${checked.length} public functions, methods and classes checked, ${missing.length} without an @example`)
for (const m of missing) console.log(`  no @example: ${m}`)
if (missing.length > 0 && !reportOnly) process.exit(1)
