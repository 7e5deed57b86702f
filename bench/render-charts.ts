/**
 * Re-render the SVG charts of a benchmark run from its latest.json, without measuring again
 * (after a change to the chart drawing):
 *
 *   node --import tsx bench/render-charts.ts [results dir, default bench/results]
 *
 * The charts are built from each section's JSON summary by the same functions the run uses.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import { changesCharts } from './changes'
import { driverCharts } from './driver'
import { hotpathCharts } from './hotpath'
import { imagesCharts } from './images'
import type { Chart } from './lib'
import { rdeleteCharts } from './rdelete'
import { remapCharts } from './remap'
import { replicationCharts } from './replication'
import { subvolumeCharts } from './subvolume'
import { renderChart } from './svg'
import { tarCharts } from './tar'

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const BUILDERS: Record<string, (summary: any) => Chart[]> = {
  subvolume: subvolumeCharts,
  rdelete: rdeleteCharts,
  driver: driverCharts,
  hotpath: hotpathCharts,
  changes: changesCharts,
  tar: tarCharts,
  remap: remapCharts,
  replication: replicationCharts,
  images: imagesCharts,
}

const dir = path.resolve(process.argv[2] ?? path.join(__dirname, 'results'))
const json = JSON.parse(fs.readFileSync(path.join(dir, 'latest.json'), 'utf8')) as {
  sections: Record<string, { summary: unknown }>
}
for (const [key, section] of Object.entries(json.sections)) {
  const build = BUILDERS[key]
  if (!build) throw new Error(`unknown section '${key}' in ${dir}/latest.json`)
  for (const c of build(section.summary)) {
    fs.writeFileSync(path.join(dir, c.file), renderChart(c))
    console.log(`wrote ${path.join(dir, c.file)}`)
  }
}
