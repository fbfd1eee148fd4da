// Runs the slimtensor CLI in a child process, as a user does: the package's
// bin, dist/cli/main.js, when it is current with lib/ (npm test builds dist/
// first), else lib/cli/main.ts under tsx, so a run after an edit never tests
// an old build. (Node starts dist/ in a third of tsx's time; the CLI tests
// start it about a hundred times.)
import { spawn } from 'node:child_process';
import * as path from 'node:path';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const builds = require('../../scripts/builds.cjs') as { staleness(output: string, inputs: string[]): string | null };

const ROOT = path.join(__dirname, '..', '..');
const DIST_MAIN = path.join(ROOT, 'dist', 'cli', 'main.js');
const ENTRY = builds.staleness(DIST_MAIN, ['lib', 'tsconfig.json']) === null ? [DIST_MAIN] : ['--import', 'tsx', path.join(ROOT, 'lib', 'cli', 'main.ts')];

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `slimtensor ...args` in the repository; `onStderr` sees stderr as it arrives (to time a Ctrl-C). */
export function runCli(args: readonly string[], onStderr?: (text: string, child: ReturnType<typeof spawn>) => void): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...ENTRY, ...args], { cwd: ROOT });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      onStderr?.(stderr, child);
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}
