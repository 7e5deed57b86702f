import { spawn, spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { CliError } from '../hints'
import { note, type Command } from '../command'
import { PACKAGE_DIR } from '../package'


export const bench: Command = {
  name: 'bench',
  summary: 'run the bundled benchmark (bench/index.ts of a source checkout)',
  usage: '[-- BENCH ARGS]',
  help: 'Runs node --import tsx bench/index.ts in the package directory; with --home, on that btrfs\n(BTRFS_LAYERS_BENCH_DIR), else on a loop image it makes and removes.',
  options: {},
  args: { min: 0, max: Infinity },
  async run(ctx) {
    const script = path.join(PACKAGE_DIR, 'bench', 'index.ts')
    if (!fs.existsSync(script)) {
      throw new CliError(
        `the benchmark is not in this installation (${script} is missing)`,
        'ENOENT',
        'it ships with the source repository: clone it, then run npm install && npm run bench',
      )
    }
    try {
      require.resolve('tsx', { paths: [PACKAGE_DIR] })
    } catch {
      throw new CliError('the benchmark needs tsx, which is not installed', 'ENOENT', `run npm install in ${PACKAGE_DIR} (tsx is a dev dependency)`)
    }
    const helper = path.join(PACKAGE_DIR, 'target', 'release', 'btrfs-layers-bench')
    if (!fs.existsSync(helper)) {
      note(ctx, `building the benchmark's Rust side (cargo build --release -p btrfs-layers-bench)...`)
      const r = spawnSync('cargo', ['build', '--release', '-p', 'btrfs-layers-bench'], { cwd: PACKAGE_DIR, stdio: ['ignore', 'inherit', 'inherit'] })
      if (r.error || r.status !== 0) {
        throw new CliError(`cannot build ${helper}${r.error ? `: ${r.error.message}` : ''}`, 'ERR_PREREQUISITES', 'install a Rust toolchain (rustup.rs), or run npm run bench')
      }
    }
    const env = { ...process.env }
    if (ctx.global.home !== undefined) env.BTRFS_LAYERS_BENCH_DIR = path.resolve(ctx.global.home)
    // With --json the report's table goes to stderr and stdout gets the results file.
    const stdio: ('inherit' | number)[] = ['inherit', ctx.global.json ? 2 : 'inherit', 'inherit']
    const child = spawn(process.execPath, ['--import', 'tsx', script, ...ctx.args], { cwd: PACKAGE_DIR, env, stdio })
    const onAbort = () => child.kill('SIGINT')
    ctx.signal.addEventListener('abort', onAbort, { once: true })
    const code = await new Promise<number>((resolve) => {
      child.on('error', () => resolve(1))
      child.on('exit', (c, sig) => resolve(c ?? (sig === 'SIGINT' ? 130 : 1)))
    })
    ctx.signal.removeEventListener('abort', onAbort)
    const results = path.join(PACKAGE_DIR, 'bench', 'results', 'latest.json')
    if (code === 0 && ctx.global.json && fs.existsSync(results)) ctx.stdout.write(fs.readFileSync(results, 'utf8').trimEnd() + '\n')
    return code
  },
}
