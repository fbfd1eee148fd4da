// Smoke test of `npm run bench -- quantize --quick --json`: the harness
// runs end to end and reports every format with sane numbers. It asserts
// the shape of the results only; speeds depend on the machine and its load,
// and a test that claims one would be flaky, not informative.
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { runSearchFloor } from '../bench/search-floor';

const root = path.join(__dirname, '..');

// The cases the table promises (bench/quantize.ts); listed here, not
// imported, so dropping one from the benchmark fails this test.
const CASE_IDS = ['q4_0', 'q4_1', 'q8_0', 'int4-g128-sym', 'int4-g128-asym', 'int8-g128-sym', 'q4_0-mse', 'int4-g32-sym-mse', 'int4-g32-asym-mse', 'q4_1-mse'];
const WITH_JS_BASELINE = ['q4_0', 'q4_1', 'q8_0', 'int4-g128-sym', 'int8-g128-sym'];

interface ThreadResult {
  threads: number;
  gbps: number;
  copyRatio: number;
  jsRatio: number | null;
}
interface CaseResult {
  id: string;
  reuse: ThreadResult[];
  rmse: number;
  bitsPerWeight: number;
  jsGbps: number | null;
  identical: { bytes: number; mismatches: number } | null;
  perThreads: ThreadResult[];
}
interface GgmlCase {
  id: string;
  perThreads: ThreadResult[];
  avx2: ThreadResult | null;
  ggmlRatio: number | null;
  ggmlSamePath: unknown;
  opsPerValue: number | null;
  ofCeiling: number | null;
  rmse: number;
}
interface Report {
  machine: { kernel: string; threads: number };
  benchmarks: { quantize: { copy: { threads: number; gbps: number }[]; cases: CaseResult[]; ggml: { peakGflops: number; peer: unknown; chunkPeer: { missing?: string }; cases: GgmlCase[] } } };
}
// The GGUF formats compared with ggml (each without and with importance).
const GGML_IDS = ['q4_k', 'q5_k', 'q6_k', 'q3_k', 'q2_k', 'q5_0', 'q5_1'].flatMap((f) => [f, `${f}-imatrix`]);

const positiveFinite = (v: unknown): boolean => typeof v === 'number' && Number.isFinite(v) && v > 0;

describe('bench: quantize --quick --json', function () {
  let report: Report;

  before(async function () {
    // A child process, as `npm run bench` runs it (without npm's banner on
    // stdout): this covers argument parsing and the JSON document too.
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', path.join('bench', 'main.ts'), 'quantize', '--quick', '--json', '--runs', '1'],
      { cwd: root, maxBuffer: 16 * 1024 * 1024 },
    );
    report = JSON.parse(stdout) as Report;
  });

  it('describes the machine', function () {
    expect(report.machine.kernel).to.be.a('string');
    expect(report.machine.threads).to.be.at.least(1);
  });

  it('measures copy bandwidth at 1 thread first', function () {
    const copy = report.benchmarks.quantize.copy;
    expect(copy.length).to.be.at.least(1);
    expect(copy[0]?.threads).to.equal(1);
    for (const c of copy) expect(positiveFinite(c.gbps), `copy at ${c.threads} threads: ${c.gbps}`).to.equal(true);
  });

  it('reports every format with positive GB/s and finite ratios', function () {
    const cases = report.benchmarks.quantize.cases;
    expect(cases.map((c) => c.id)).to.have.members(CASE_IDS);
    const threads = report.benchmarks.quantize.copy.map((c) => c.threads);
    for (const c of cases) {
      expect(c.perThreads.map((p) => p.threads), c.id).to.deep.equal(threads);
      for (const p of c.perThreads) {
        const where = `${c.id} at ${p.threads} threads`;
        expect(positiveFinite(p.gbps), `${where}: gbps ${p.gbps}`).to.equal(true);
        expect(positiveFinite(p.copyRatio), `${where}: copyRatio ${p.copyRatio}`).to.equal(true);
        if (WITH_JS_BASELINE.includes(c.id)) expect(positiveFinite(p.jsRatio), `${where}: jsRatio ${p.jsRatio}`).to.equal(true);
        else expect(p.jsRatio, where).to.equal(null);
      }
      // the reused-output measurement, for the formats without the search
      expect(c.reuse.map((p) => p.threads), `${c.id} reuse`).to.deep.equal(c.id.endsWith('-mse') ? [] : threads);
      for (const p of c.reuse) expect(positiveFinite(p.gbps) && positiveFinite(p.copyRatio), `${c.id} reuse at ${p.threads}`).to.equal(true);
      expect(Number.isFinite(c.rmse) && c.rmse >= 0, `${c.id}: rmse ${c.rmse}`).to.equal(true);
      expect(positiveFinite(c.bitsPerWeight), `${c.id}: bits/weight ${c.bitsPerWeight}`).to.equal(true);
    }
  });

  it('reports the K-quants and Q5 formats, with and without importance, against their arithmetic ceiling', function () {
    const g = report.benchmarks.quantize.ggml;
    expect(positiveFinite(g.peakGflops)).to.equal(true);
    // --quick skips the ggml peer (it times 4096×4096 and takes seconds per type)
    expect(g.peer).to.equal(null);
    expect(g.chunkPeer.missing).to.be.a('string');
    expect(g.cases.map((c) => c.id)).to.deep.equal(GGML_IDS);
    const threads = report.benchmarks.quantize.copy.map((c) => c.threads);
    for (const c of g.cases) {
      expect(c.perThreads.map((p) => p.threads), c.id).to.deep.equal(threads);
      for (const p of c.perThreads) expect(positiveFinite(p.gbps) && positiveFinite(p.copyRatio), `${c.id} at ${p.threads}`).to.equal(true);
      if (report.machine.kernel !== 'scalar') expect(positiveFinite(c.avx2?.gbps), `${c.id} avx2`).to.equal(true);
      expect(c.ggmlRatio, c.id).to.equal(null);
      expect(c.ggmlSamePath, c.id).to.equal(null);
      // every search has an operation count; only plain q5_0/q5_1 (no search) do not
      expect(c.opsPerValue === null, c.id).to.equal(c.id === 'q5_0' || c.id === 'q5_1');
      if (c.opsPerValue !== null) expect(positiveFinite(c.ofCeiling), c.id).to.equal(true);
      expect(positiveFinite(c.rmse), c.id).to.equal(true);
    }
  });

  it('has a JS baseline that matches the native bytes', function () {
    // Keeps the ×JS column honest: a baseline that skipped work would be
    // faster and wrong.
    for (const c of report.benchmarks.quantize.cases.filter((x) => WITH_JS_BASELINE.includes(x.id))) {
      expect(positiveFinite(c.jsGbps), `${c.id}: jsGbps ${c.jsGbps}`).to.equal(true);
      expect(c.identical?.bytes, c.id).to.be.greaterThan(0);
      expect(c.identical?.mismatches, `${c.id}: bytes differing from native`).to.equal(0);
    }
  });
});

describe('bench: search-floor --quick', function () {
  it("orders floor <= search: 'mse' <= plain for both layouts", async function () {
    const r = await runSearchFloor({ runs: 1, quick: true, log: () => undefined });
    expect(r.rows).to.have.length(2);
    for (const row of r.rows) {
      const [plain, mse] = row.rmse.map((m) => m.value) as [number, number];
      // The floor is the minimum over every f16 scale, which includes the one the search stores.
      expect(row.floor, row.layout).to.be.at.most(mse * (1 + 1e-9));
      expect(mse, row.layout).to.be.below(plain);
      expect(mse / row.floor, row.layout).to.be.below(1.01);
    }
  });
});

describe('bench: sparsity --quick --json', function () {
  interface Rate {
    threads: number;
    gbps: number;
    copyRatio: number;
    jsRatio: number;
  }
  interface SparsityReport {
    benchmarks: {
      sparsity: {
        copy: { threads: number; gbps: number }[];
        prune: { id: string; jsGbps: number; identical: { bytes: number; mismatches: number }; perThreads: Rate[]; reuse: Rate[]; intoOut: Rate[] }[];
        spmm: { identical: { n: number; mismatches: number }[]; rows: { n: number; threads: number; kernel: string; speedup: number; sparseGbps: number; denseGbps: number }[] };
      };
    };
  }
  let report: SparsityReport['benchmarks']['sparsity'];

  before(async function () {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', path.join('bench', 'main.ts'), 'sparsity', '--quick', '--json', '--runs', '1'],
      { cwd: root, maxBuffer: 16 * 1024 * 1024 },
    );
    report = (JSON.parse(stdout) as SparsityReport).benchmarks.sparsity;
  });

  it('reports prune and prune + compress at every thread count, with a JS baseline that matches the native bytes', function () {
    const threads = report.copy.map((c) => c.threads);
    expect(threads[0]).to.equal(1);
    expect(report.prune.map((c) => c.id)).to.deep.equal(['prune-compress24', 'prune24']);
    for (const c of report.prune) {
      expect(positiveFinite(c.jsGbps), c.id).to.equal(true);
      expect(c.identical.bytes, c.id).to.be.greaterThan(0);
      expect(c.identical.mismatches, `${c.id}: bytes differing from native`).to.equal(0);
      for (const list of [c.perThreads, c.reuse, c.intoOut]) {
        expect(list.map((p) => p.threads), c.id).to.deep.equal(threads);
        for (const p of list) expect(positiveFinite(p.gbps) && positiveFinite(p.copyRatio) && positiveFinite(p.jsRatio), `${c.id} at ${p.threads}`).to.equal(true);
      }
    }
  });

  it('compares spmm24 with the dense GEMM at batch 1, 8 and 16, with the same bits', function () {
    expect(report.spmm.identical.map((i) => i.n)).to.deep.equal([1, 8, 16]);
    for (const i of report.spmm.identical) expect(i.mismatches, `batch ${i.n}`).to.equal(0);
    expect([...new Set(report.spmm.rows.map((r) => r.n))]).to.deep.equal([1, 8, 16]);
    for (const r of report.spmm.rows) {
      expect(['reference', 'avx2', 'avx512'], `batch ${r.n}`).to.include(r.kernel);
      expect(positiveFinite(r.speedup) && positiveFinite(r.sparseGbps) && positiveFinite(r.denseGbps), `batch ${r.n} ${r.kernel} ${r.threads}T`).to.equal(true);
    }
  });
});
