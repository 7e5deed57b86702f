import * as fs from 'node:fs'
import { BtrfsDriver } from './ts/index'
const N = 300
const med = (a: number[]) => { const s = [...a].sort((x, y) => x - y); return s[s.length >> 1] }
async function main() {
  const home = process.argv[2]
  const d = await BtrfsDriver.init(home)
  const t = { create: [] as number[], child: [] as number[], remove: [] as number[], pm: [] as number[], sm: [] as number[] }
  await d.create('parent')
  for (let i = 0; i < N; i++) {
    let s = process.hrtime.bigint(); await d.create('e' + i); t.create.push(Number(process.hrtime.bigint() - s))
    s = process.hrtime.bigint(); await fs.promises.mkdir(home + '/../pm' + i); t.pm.push(Number(process.hrtime.bigint() - s))
    s = process.hrtime.bigint(); fs.mkdirSync(home + '/../sm' + i); t.sm.push(Number(process.hrtime.bigint() - s))
    if (i % 10 == 0) { s = process.hrtime.bigint(); await d.create('c' + i, 'parent'); t.child.push(Number(process.hrtime.bigint() - s)) }
  }
  for (let i = 0; i < N; i++) { const s = process.hrtime.bigint(); await d.remove('e' + i); t.remove.push(Number(process.hrtime.bigint() - s)) }
  for (let i = 0; i < N; i += 10) await d.remove('c' + i)
  await d.remove('parent')
  for (const [k, v] of Object.entries(t)) console.log(k, (med(v) / 1000).toFixed(1), 'us')
  for (let i = 0; i < N; i++) { fs.rmdirSync(home + '/../pm' + i); fs.rmdirSync(home + '/../sm' + i) }
  await d.cleanup()
}
main()
