// The CUDA build of the addon in build-cuda/ (scripts/check-cuda.cjs builds
// it wherever nvcc exists; npm test runs it next to mocha, whose tests that
// load it wait for it: waitForCudaCheck), which the rooms'
// CUDA tests load next to the default build. Where nvcc exists, a missing
// or stale build-cuda/ fails those tests (run node scripts/check-cuda.cjs);
// only where there is no nvcc to build it are they skipped.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SlimTensorError } from '../../lib/index';
import type { NativeBackends } from '../../lib/native';
import { skip } from './skip';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const build = require('../../scripts/builds.cjs') as {
  staleness(output: string, inputs: string[]): string | null;
  nativeInputs(buildFile: string): string[];
  findNvcc(): string | null;
};

export const CUDA_ADDON = path.join(__dirname, '..', '..', 'build-cuda', 'Release', 'slimtensor.node');

/** What every addon instance has; each test file adds the functions it calls. */
export interface RawAddon {
  backends(): NativeBackends;
  setErrorClass(ctor: typeof SlimTensorError): void;
}

/** The build-cuda/ addon, or why it cannot be used: skip (no nvcc) or fail (nvcc, but missing or stale). */
export type CudaBuild<T> = { binding: T } | { skip: string } | { fail: string };

let loaded: CudaBuild<RawAddon> | undefined;

function load(): CudaBuild<RawAddon> {
  const rel = path.relative(process.cwd(), CUDA_ADDON);
  const nvcc = build.findNvcc();
  const unusable = (why: string): CudaBuild<RawAddon> =>
    nvcc ? { fail: `${why}; nvcc is installed (${nvcc}): run node scripts/check-cuda.cjs (npm test does)` } : { skip: `${why} and there is no nvcc to build it` };
  if (!fs.existsSync(CUDA_ADDON)) return nvcc ? unusable(`${rel} not found`) : { skip: `${rel} not found (node scripts/check-cuda.cjs builds it where nvcc is installed)` };
  const stale = build.staleness(CUDA_ADDON, build.nativeInputs('CMakeLists.txt'));
  if (stale) return unusable(`${rel} is stale: ${stale}`);
  try {
    // A second, independent instance of the addon (its own thread pool and
    // error class registration).
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const b = require(CUDA_ADDON) as RawAddon;
    b.setErrorClass(SlimTensorError);
    return { binding: b };
  } catch (e) {
    return { fail: `${rel} does not load: ${(e as Error).message}` };
  }
}

/**
 * The build-cuda/ addon, loaded on first use (a broken build fails the CUDA
 * tests, not the files that hold them), or why not. `needs`: a function the
 * tests call; a build without it predates them and counts as stale.
 */
export function cudaBuild<T extends RawAddon>(needs: keyof T & string): CudaBuild<T> {
  loaded ??= load();
  if (!('binding' in loaded)) return loaded;
  if (typeof (loaded.binding as unknown as Record<string, unknown>)[needs] !== 'function') {
    const why = `${path.relative(process.cwd(), CUDA_ADDON)} has no ${needs}(): it predates these tests`;
    return build.findNvcc() ? { fail: `${why}; run node scripts/check-cuda.cjs (npm test does)` } : { skip: `${why} and there is no nvcc to rebuild it` };
  }
  return loaded as CudaBuild<T>;
}

/**
 * npm test (scripts/test.cjs) starts mocha while scripts/check-cuda.cjs is
 * still building build-cuda/, and names in $SLIMTENSOR_CUDA_CHECK_DONE the
 * file it writes when the check has ended (built, failed or skipped). Call
 * this at the top of each describe whose tests load build-cuda/: their
 * `before` hook waits for that file (no time limit; the check's own
 * failure fails the run), and scripts/test.cjs runs the files that call it
 * last, so the rest of mocha runs meanwhile. Without the variable (mocha run
 * by hand) nothing waits: build-cuda/ is used as it is on disk.
 */
export function waitForCudaCheck(): void {
  before(async function () {
    const done = process.env.SLIMTENSOR_CUDA_CHECK_DONE;
    if (!done) return;
    this.timeout(0);
    while (!fs.existsSync(done)) await new Promise((resolve) => setTimeout(resolve, 200));
  });
}

/** The build-cuda/ addon for the running test: skips it or fails it when there is none usable. */
export function requireCudaBuild<T extends RawAddon>(ctx: Mocha.Context, needs: keyof T & string): T {
  const c = cudaBuild<T>(needs);
  if ('skip' in c) skip(ctx, c.skip);
  if ('fail' in c) throw new Error(c.fail);
  return c.binding;
}
