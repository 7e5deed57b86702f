/** Where this package is installed, and its version. */
import * as fs from 'node:fs'
import * as path from 'node:path'

/** The directory holding package.json (this file is dist/cli/package.js). */
export const PACKAGE_DIR = path.resolve(__dirname, '..', '..')

export function packageVersion(): string {
  try {
    return JSON.parse(fs.readFileSync(path.join(PACKAGE_DIR, 'package.json'), 'utf8')).version
  } catch {
    return 'unknown'
  }
}
