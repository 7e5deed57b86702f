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
  help: [
    'Runs node --import tsx bench/index.ts in the package directory; with --home, on that btrfs',
    '(BTRFS_LAYERS_BENCH_DIR), else on a loop image it makes and removes. Needs root.',
    '',
    'Environment (numbers are counts unless said; defaults in parentheses):',
    '  BTRFS_LAYERS_BENCH_ONLY              sections to run, comma-separated: subvolume, rdelete, driver,',
    '                                       hotpath, changes, tar, remap, images, replication (all)',
    '  BTRFS_LAYERS_BENCH_SCALE             multiplies file counts and data sizes, e.g. 0.02 for a quick run (1)',
    '  BTRFS_LAYERS_BENCH_OUT               directory for latest.md, latest.json and the charts (bench/results)',
    '  BTRFS_LAYERS_BENCH_DIR               an existing directory on btrfs to work in (set by --home; else a loop image)',
    '  BTRFS_LAYERS_BENCH_IMAGE_SIZE        size of that loop image in bytes (12 GiB, sparse)',
    '  BTRFS_LAYERS_BENCH_WARMUP            unrecorded warm-up rounds of subvolume, driver and hotpath (5)',
    '  BTRFS_LAYERS_BENCH_N                 subvolume: create/delete samples per implementation (200)',
    '  BTRFS_LAYERS_BENCH_SNAP_N            subvolume: snapshot samples per implementation and kind (100)',
    '  BTRFS_LAYERS_BENCH_REPS              rdelete: repetitions per implementation (5)',
    '  BTRFS_LAYERS_BENCH_DIRS              rdelete: directories in the tree (2000)',
    '  BTRFS_LAYERS_BENCH_FILES             rdelete: files in the tree (20000; also 10x that)',
    '  BTRFS_LAYERS_BENCH_DRIVER_N          driver: samples per implementation (100)',
    '  BTRFS_LAYERS_BENCH_HOTPATH_N         hotpath: rounds, one sample of each operation and implementation (300)',
    '  BTRFS_LAYERS_BENCH_CHANGES_FILES     changes: files in the layer (100000)',
    '  BTRFS_LAYERS_BENCH_CHANGES_REPS      changes: repetitions (7)',
    '  BTRFS_LAYERS_BENCH_TAR_FILES         tar: small files in the tree (2000)',
    '  BTRFS_LAYERS_BENCH_TAR_LARGE_BYTES   tar: bytes of each of the 4 large files (50 MiB)',
    '  BTRFS_LAYERS_BENCH_TAR_REPS          tar: repetitions (7)',
    '  BTRFS_LAYERS_BENCH_REMAP_FILES       remap: files in the tree (100000)',
    '  BTRFS_LAYERS_BENCH_REMAP_REPS        remap: repetitions (5)',
    '  BTRFS_LAYERS_BENCH_IMAGES_BYTES      images: uncompressed bytes of the pulled image (100000000; one twice',
    '                                       that size too); needs registry and crane (scripts/test-tools.sh)',
    '  BTRFS_LAYERS_BENCH_IMAGES_REPS       images: interleaved rounds (7)',
    '  BTRFS_LAYERS_BENCH_IMAGES_CONCURRENCY  images: the pull\'s concurrency option (unset: the pull\'s default, 3)',
    '  BTRFS_LAYERS_BENCH_REPLICATION_FILES  replication: files in the layer sent (100000)',
    '  BTRFS_LAYERS_BENCH_REPLICATION_REPS  replication: interleaved rounds (5)',
    'Arguments after -- go to bench/index.ts. With --json, stdout gets the results (latest.json).',
  ].join('\n'),
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
