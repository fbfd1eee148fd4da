// Smoke test of `npm run bench -- distill --quick --json`: the benchmark
// runs end to end and reports every case with sane numbers. Shapes only:
// speeds depend on the machine and its load.
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { kernelsHere, simdUnavailable, skip } from './support/skip';

const root = path.join(__dirname, '..');

// The cases the table promises (bench/distill.ts), listed here so dropping one fails.
const CASE_IDS = ['fwd-t1', 'fwd-t2', 'rev-t2', 'jsd-t2', 'topk64-t2', 'fwd-t1-bf16', 'fwd-t1-128k'];
// Each case runs on every SIMD kernel the machine has, AVX2 first (the
// others are reported skipped); 'auto' where it has none.
const SIMD = kernelsHere('bench: distill cases', ['avx2', 'avx512'] as const);
const KERNELS: string[] = SIMD.length ? [...SIMD] : ['auto'];

interface ThreadResult {
  threads: number;
  ms: number;
  gbps: number;
  copyRatio: number;
  jsRatio: number | null;
}
interface Report {
  benchmarks: {
    distill: {
      copy: { threads: number; gbps: number }[];
      avx512VsAvx2: { id: string; perThreads: { threads: number; ratio: number }[] }[];
      cases: { id: string; kernel: string; bytes: number; loss: number; perThreads: ThreadResult[]; fresh: ThreadResult | null; jsGbps: number | null; jsLossRelDiff: number | null }[];
    };
  };
}

const positive = (v: unknown): boolean => typeof v === 'number' && Number.isFinite(v) && v > 0;

describe('bench: distill --quick --json', function () {
  let report: Report;
  before(async function () {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', path.join('bench', 'main.ts'), 'distill', '--quick', '--json', '--runs', '1'],
      { cwd: root, maxBuffer: 16 * 1024 * 1024 },
    );
    report = JSON.parse(stdout) as Report;
  });

  it('reports every case at 1 thread first, with positive times, rates and ratios', function () {
    const r = report.benchmarks.distill;
    expect(r.copy[0]?.threads).to.equal(1);
    expect(r.cases.map((c) => `${c.id} ${c.kernel}`)).to.deep.equal(CASE_IDS.flatMap((id) => KERNELS.map((k) => `${id} ${k}`)));
    for (const c of r.cases) {
      expect(positive(c.bytes), c.id).to.equal(true);
      expect(Number.isFinite(c.loss), c.id).to.equal(true);
      expect(c.perThreads[0]?.threads, c.id).to.equal(1);
      for (const p of c.perThreads) {
        expect(positive(p.ms) && positive(p.gbps) && positive(p.copyRatio), c.id).to.equal(true);
      }
    }
  });

  it('without AVX-512 there is no AVX-512 vs AVX2 comparison', function () {
    if (KERNELS.includes('avx512')) skip(this, 'AVX-512 runs here: the comparison is checked below');
    expect(report.benchmarks.distill.avx512VsAvx2).to.deep.equal([]);
  });

  it('AVX-512 and AVX2 compute the same loss on each case, and their ratio is reported', function () {
    const why = simdUnavailable('avx512');
    if (why !== null) skip(this, why);
    const r = report.benchmarks.distill;
    for (const id of CASE_IDS) {
      const [a, b] = KERNELS.map((k) => r.cases.find((c) => c.id === id && c.kernel === k));
      expect(a?.loss, id).to.equal(b?.loss);
    }
    expect(r.avx512VsAvx2.map((x) => x.id)).to.deep.equal(CASE_IDS);
    for (const x of r.avx512VsAvx2) for (const p of x.perThreads) expect(positive(p.ratio), x.id).to.equal(true);
  });

  it('the plain-JS baseline agrees with the native loss where it runs', function () {
    const withJs = report.benchmarks.distill.cases.filter((c) => c.jsGbps !== null);
    expect(withJs.map((c) => c.id)).to.deep.equal(['fwd-t1', 'fwd-t2', 'fwd-t1-128k'].flatMap((id) => KERNELS.map(() => id)));
    for (const c of withJs) {
      expect(c.jsLossRelDiff as number, c.id).to.be.below(1e-5);
      for (const p of c.perThreads) expect(positive(p.jsRatio), c.id).to.equal(true);
    }
  });
});
