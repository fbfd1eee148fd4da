// Skipping with a reason: tests that cannot run here are reported as
// skipped (mocha's pending), the reason in their title, which the spec
// output and test/support/reporter.cjs's list of skipped tests show. Never
// a silent return, and never a kernel that vanishes from a list.
import { backends } from '../../lib/index';

/** Marks the running test skipped, naming why in its title. */
export function skip(ctx: Mocha.Context, why: string): never {
  if (ctx.test) ctx.test.title += ` — skipped: ${why}`;
  return ctx.skip();
}

const CPU = backends().cpu;

/** Why kernels of `isa` cannot run in this process, or null when they can. */
export function simdUnavailable(isa: 'avx2' | 'avx512'): string | null {
  const name = isa === 'avx2' ? 'AVX2' : 'AVX-512';
  const enabled = isa === 'avx2' ? CPU.kernel !== 'scalar' : CPU.kernel === 'avx512';
  if (enabled) return null;
  const onCpu = CPU.features.some((f) => (isa === 'avx2' ? f === 'avx2' : f.startsWith('avx512')));
  return onCpu ? `${name} turned off by SLIMTENSOR_ISA=${process.env.SLIMTENSOR_ISA ?? ''}` : `this CPU has no ${name}`;
}

/**
 * The kernels of `all` that can run here, in order. Each SIMD kernel that
 * cannot is reported as a skipped test under "<what>: kernels this process
 * cannot run", with the reason. Call where tests are declared (it registers
 * them).
 */
export function kernelsHere<K extends string>(what: string, all: readonly K[]): K[] {
  const here: K[] = [];
  const missing: [K, string][] = [];
  for (const k of all) {
    const isa: string = k;
    const why = isa === 'avx2' || isa === 'avx512' ? simdUnavailable(isa) : null;
    if (why === null) here.push(k);
    else missing.push([k, why]);
  }
  if (missing.length) {
    describe(`${what}: kernels this process cannot run`, () => {
      for (const [k, why] of missing) {
        it(`kernel '${k}'`, function () {
          skip(this, why);
        });
      }
    });
  }
  return here;
}
