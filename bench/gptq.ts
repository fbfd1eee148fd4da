// The GPTQ benchmark: one 4096×11008 layer (weight [11008, 4096], Hessian
// 4096²; --quick: [2048, 1024]) quantized to int4 g128, timed against the
// two limits that bound it, measured in the same run and interleaved with it
// (pairs of runs back to back; the median of the per-pair ratios):
//
// - the GEMM it is built on: op(A)·B with A the weight and B the Hessian
//   (2·rows·n² flops). GPTQ's own arithmetic is rows·n² (the lazy batch
//   updates, a triangle) + n³/3 (the f64 Cholesky): its "GEMM-bound" rate is
//   that count over its time, compared with the GEMM's rate;
// - a copy of the weights (f32), the memory-bound floor of any per-layer pass.
//
// The Hessian is an AR(1) covariance (ρ = 0.9) with uneven channel scales:
// positive definite, correlated, built in O(n²). The error statistics come
// from extra runs with measure: true on the quick shape: int4 g128 (with and
// without act-order) and the GGUF formats q4_0 and q2_k..q6_k.
import { gptq, gptqSync, matmul, Tensor } from '../lib/index';
import { Rng } from '../test/support/random';
import { copier, markdownTable, median, type Benchmark, type BenchOptions, type BenchOutcome } from './harness';

interface Shape {
  rows: number;
  cols: number;
}
const FULL: Shape = { rows: 11008, cols: 4096 };
const QUICK: Shape = { rows: 2048, cols: 1024 };

function problem(s: Shape, seed: number): { w: Tensor; h: Tensor } {
  const rng = new Rng(seed);
  const n = s.cols;
  const scale = Float64Array.from({ length: n }, () => Math.exp(0.5 * rng.normal()));
  const h = new Float32Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) h[i * n + j] = Math.pow(0.9, Math.abs(i - j)) * (scale[i] as number) * (scale[j] as number);
  }
  return { w: Tensor.from(rng.normals(s.rows * n, 0.02), [s.rows, n]), h: Tensor.from(h, [n, n]) };
}

export interface GptqBenchResult {
  rows: number;
  cols: number;
  runs: number;
  gptqSeconds: number;
  gemmSeconds: number;
  copySeconds: number;
  /** GFLOP/s: (rows·n² + n³/3) / GPTQ time. */
  gptqGflops: number;
  /** GFLOP/s of the GEMM (2·rows·n²). */
  gemmGflops: number;
  /** Median over pairs of GPTQ rate / GEMM rate. */
  ofGemm: number;
  /** Median over pairs of GPTQ time / copy time. */
  copyMultiple: number;
  errors: { rows: number; cols: number; gptq: number; rtn: number; ratio: number; actOrder: number; kquants: KQuantErrors[] };
}

/**
 * One GGUF format on the quick shape: GPTQ's error over round-to-nearest's
 * with the same block parameters (K-quants: imatrix-weighted with diag(H)),
 * and both over plain round-to-nearest (K-quants: ggml's reference search,
 * quantize() without an imatrix).
 */
export interface KQuantErrors {
  format: 'q4_0' | 'q2_k' | 'q3_k' | 'q4_k' | 'q5_k' | 'q6_k';
  gptqOverRtn: number;
  rtnOverPlain: number;
  gptqOverPlain: number;
}

async function runGptqBench(o: BenchOptions): Promise<GptqBenchResult> {
  const s = o.quick ? QUICK : FULL;
  const runs = Math.max(1, Math.min(o.runs, o.quick ? o.runs : 3));
  o.log(`gptq: building a [${s.rows}, ${s.cols}] weight and a ${s.cols}² Hessian`);
  const { w, h } = problem(s, 16);
  const n = s.cols;
  const gptqFlops = s.rows * n * n + (n * n * n) / 3;
  const gemmFlops = 2 * s.rows * n * n;
  const copy = copier(w.byteLength);
  const run = (): Promise<unknown> => gptq(w, h, { format: 'int4', groupSize: 128, measure: false });
  const mm = (): Promise<unknown> => matmul(w, h);
  o.log('gptq: warm-up');
  await run();
  await mm();
  const tg: number[] = [];
  const tm: number[] = [];
  const tc: number[] = [];
  const ofGemm: number[] = [];
  const copyMultiple: number[] = [];
  for (let i = 0; i < runs; i++) {
    o.log(`gptq: run ${i + 1}/${runs}`);
    let t0 = process.hrtime.bigint();
    await run();
    const g = Number(process.hrtime.bigint() - t0) / 1e9;
    t0 = process.hrtime.bigint();
    await mm();
    const m = Number(process.hrtime.bigint() - t0) / 1e9;
    t0 = process.hrtime.bigint();
    copy(0);
    const c = Number(process.hrtime.bigint() - t0) / 1e9;
    tg.push(g);
    tm.push(m);
    tc.push(c);
    ofGemm.push(gptqFlops / g / (gemmFlops / m));
    copyMultiple.push(g / c);
  }
  // Quality on the quick shape: GPTQ against round-to-nearest with the same scales.
  const q = problem(QUICK, 17);
  const plain = gptqSync(q.w, q.h, { format: 'int4', groupSize: 128 }).stats;
  const ordered = gptqSync(q.w, q.h, { format: 'int4', groupSize: 128, actOrder: true }).stats;
  const kquants: KQuantErrors[] = [];
  for (const format of ['q4_0', 'q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k'] as const) {
    o.log(`gptq: ${format} error`);
    const k = gptqSync(q.w, q.h, { format }).stats;
    const plainRtn = gptqSync(q.w, q.h, { format, sweep: false, ...(format === 'q4_0' ? {} : { imatrix: false }) }).stats.rtnError;
    kquants.push({ format, gptqOverRtn: k.gptqError / k.rtnError, rtnOverPlain: k.rtnError / plainRtn, gptqOverPlain: k.gptqError / plainRtn });
  }
  const gptqSeconds = median(tg);
  const gemmSeconds = median(tm);
  return {
    rows: s.rows,
    cols: n,
    runs,
    gptqSeconds,
    gemmSeconds,
    copySeconds: median(tc),
    gptqGflops: gptqFlops / gptqSeconds / 1e9,
    gemmGflops: gemmFlops / gemmSeconds / 1e9,
    ofGemm: median(ofGemm),
    copyMultiple: median(copyMultiple),
    errors: { rows: QUICK.rows, cols: QUICK.cols, gptq: plain.gptqError, rtn: plain.rtnError, ratio: plain.gptqError / plain.rtnError, actOrder: ordered.gptqError / ordered.rtnError, kquants },
  };
}

function formatGptqBench(r: GptqBenchResult): string {
  const f = (v: number, d = 2): string => v.toFixed(d);
  return [
    `GPTQ int4 g128 of a [${r.rows}, ${r.cols}] weight with a ${r.cols}² Hessian (median of ${r.runs}; ratios: median over back-to-back pairs)`,
    '',
    markdownTable(
      ['', 'seconds', 'GFLOP/s', 'GPTQ rate / GEMM rate', 'GPTQ time / copy time'],
      [
        ['GPTQ (rows·n² + n³/3 flops)', f(r.gptqSeconds), f(r.gptqGflops, 1), f(r.ofGemm), f(r.copyMultiple, 0)],
        ['GEMM weight·H (2·rows·n² flops)', f(r.gemmSeconds), f(r.gemmGflops, 1), '', ''],
        ['copy of the f32 weights', f(r.copySeconds, 3), '', '', ''],
      ],
      ['left', 'right', 'right', 'right', 'right'],
    ),
    '',
    `Layer-output error tr(E·H·Eᵀ) on [${r.errors.rows}, ${r.errors.cols}]: GPTQ / RTN = ${f(r.errors.ratio, 3)} (act-order ${f(r.errors.actOrder, 3)}).`,
    '',
    'GGUF formats on the same layer: RTN is round-to-nearest with the block parameters GPTQ uses (K-quants: imatrix-weighted with diag(H)); plain RTN is quantize() without an imatrix.',
    '',
    markdownTable(
      ['format', 'GPTQ / RTN', 'RTN / plain RTN', 'GPTQ / plain RTN'],
      r.errors.kquants.map((k) => [k.format, f(k.gptqOverRtn, 3), f(k.rtnOverPlain, 3), f(k.gptqOverPlain, 3)]),
      ['left', 'right', 'right', 'right'],
    ),
  ].join('\n');
}

export const gptqBench: Benchmark = {
  name: 'gptq',
  description: 'GPTQ int4 of a 4096×11008 layer (4096² Hessian) vs the GEMM rate and a weight copy',
  async run(o: BenchOptions): Promise<BenchOutcome> {
    const result = await runGptqBench(o);
    return { result, markdown: formatGptqBench(result) };
  },
};
