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
interface Report {
  machine: { kernel: string; threads: number };
  benchmarks: { quantize: { copy: { threads: number; gbps: number }[]; cases: CaseResult[] } };
}

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
