// The lowrank benchmark: GEMM throughput against the machine's FMA peak
// (computed from a measured clock and the vector width) and against a
// plain-JS GEMM; the exact SVD of 1024×1024; the randomized SVD of
// 4096×4096 and 4096×11008 matrices with the 1/i spectrum, timed, with the
// error against the analytic optimum.
//
// The peak. The VM does not expose the clock, so it is measured: a chain of
// dependent `add reg, reg` (one cycle each; `add reg, imm` chains are folded
// by recent cores and would read as a faster clock) gives cycles per second.
// The FMA peak per core is then clock × FMA ports × lanes × 2 flops, with 8
// f32 lanes for AVX2 (ymm) and 16 for AVX-512 (zmm). The ports are inferred
// from a second probe, 12 independent FMA chains (enough to cover the
// 4-cycle latency on two ports): its throughput divided by clock × lanes × 2,
// rounded. That probe's raw rate is shown too: heavy 512-bit code runs
// at a lower clock on these Xeons (the AVX-512 license), so for zmm the
// measured rate sits below the computed peak.
//
// Test matrices: A = U·[diag(σ) 0]·Qᵀ with σ_i = 1/i, U a randomly signed
// Walsh–Hadamard matrix (m a power of two) and Q two layers of randomly
// signed 256-point Hadamard blocks with random permutations between (n a
// multiple of 256): orthogonal, dense, and built in O(mn log 256) in JS. A
// Gaussian sketch is rotation-invariant, so the randomized SVD's accuracy
// depends on the spectrum only, and GEMM time on the sizes only.
import { lowRank, matmul, svd, Tensor, type LowRankKernel } from '../lib/index';
import { binding } from '../lib/native';
import { Rng } from '../test/support/random';
import { markdownTable, measureCopyBandwidth, threadCounts, timeRuns, type Benchmark, type BenchOptions, type BenchOutcome } from './harness';

const SEED = 4;

interface Sizes {
  square: number;
  tall: [number, number, number];
  skinny: number;
  js: number;
  exact: number;
  rsvd: [number, number][];
  ranks: number[];
}
const FULL: Sizes = { square: 2048, tall: [4096, 144, 4096], skinny: 4096, js: 384, exact: 1024, rsvd: [[4096, 4096], [4096, 11008]], ranks: [64, 128, 256] };
const QUICK: Sizes = { square: 384, tall: [1024, 144, 1024], skinny: 1024, js: 96, exact: 256, rsvd: [[1024, 1024], [1024, 2048]], ranks: [16, 32] };

export interface Peak {
  clockGHz: number;
  /** Per core, computed: clock × ports × lanes × 2. */
  avx2Gflops: number;
  avx512Gflops: number | null;
  /** FMA ports inferred from the probes. */
  ports: { ymm: number; zmm: number | null };
  /** The FMA probes' raw rates per core. */
  measured: { ymmGflops: number; zmmGflops: number | null };
}

export interface GemmRow {
  label: string;
  m: number;
  n: number;
  k: number;
  kernel: string;
  threads: number;
  gflops: number;
  /** gflops / (threads × the kernel's computed per-core peak). */
  ofPeak: number;
  /** native / plain JS (GFLOP/s). */
  jsRatio: number;
  /** Bytes of A read per second (GB/s) and against a memcpy of the same size at the same thread count: the limit of the matrix-vector shapes. */
  aGbps: number;
  copyRatio: number;
}

export interface RsvdRow {
  m: number;
  n: number;
  rank: number;
  threads: number;
  seconds: number;
  samples: number;
  relError: number;
  /** The library's optimalRelError (from the estimated spectrum). */
  libOptimal: number;
  /** The Eckart–Young error of the analytic spectrum. */
  trueOptimal: number;
  ratio: number;
}

export interface LowrankBenchResult {
  runs: number;
  quick: boolean;
  peak: Peak;
  jsGflops: number;
  /** memcpy of the matrix-vector shapes' matrix size, GB/s per thread count. */
  copy: { threads: number; gbps: number }[];
  gemm: GemmRow[];
  exact: { n: number; seconds: number; maxSigmaError: number; threads: number };
  rsvd: RsvdRow[];
}

/** Peak from the native probes: best of several short runs (least disturbed). Also the quantize benchmark's ceiling. */
export function measurePeak(runs: number): Peak {
  const iters = 20_000_000;
  let add = Infinity;
  let f256 = Infinity;
  let f512 = Infinity;
  for (let i = 0; i < Math.max(5, runs); i++) {
    // The probes time themselves by the wall clock; on a machine others
    // share that also counts their turns. The call runs on this thread, so
    // its CPU/wall share takes those out.
    const w0 = process.hrtime.bigint();
    const c0 = process.cpuUsage();
    const p = binding.lowrankProbe(iters);
    const c = process.cpuUsage(c0);
    const share = Math.min(1, (c.user + c.system) / 1e6 / (Number(process.hrtime.bigint() - w0) / 1e9));
    add = Math.min(add, p.addSeconds * share);
    if (p.fma256Seconds > 0) f256 = Math.min(f256, p.fma256Seconds * share);
    if (p.fma512Seconds > 0) f512 = Math.min(f512, p.fma512Seconds * share);
  }
  const clock = (iters * 10) / add / 1e9;
  const ymm = (iters * 12 * 16) / f256 / 1e9;
  const zmm = Number.isFinite(f512) ? (iters * 12 * 32) / f512 / 1e9 : null;
  // 1 or 2 FMA ports (no x86 core has more): on a loaded machine the clock
  // and FMA probes are disturbed differently and their ratio can round to 3.
  const portsOf = (gflops: number, flopsPerCycle: number): number => Math.min(2, Math.max(1, Math.round(gflops / (clock * flopsPerCycle))));
  const ports = { ymm: portsOf(ymm, 16), zmm: zmm === null ? null : portsOf(zmm, 32) };
  return {
    clockGHz: clock,
    avx2Gflops: clock * ports.ymm * 8 * 2,
    avx512Gflops: ports.zmm === null ? null : clock * ports.zmm * 16 * 2,
    ports,
    measured: { ymmGflops: ymm, zmmGflops: zmm },
  };
}

/** C = A·B with plain loops (i-k-j order, f32 arrays, one thread): the JS baseline. */
export function jsGemm(a: Float32Array, b: Float32Array, m: number, k: number, n: number): Float32Array {
  const c = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    const ci = i * n;
    for (let p = 0; p < k; p++) {
      const av = a[i * k + p] as number;
      const bp = p * n;
      for (let j = 0; j < n; j++) c[ci + j] = (c[ci + j] as number) + av * (b[bp + j] as number);
    }
  }
  return c;
}

function fwht(x: Float64Array, off: number, len: number): void {
  for (let h = 1; h < len; h *= 2) {
    for (let i = off; i < off + len; i += 2 * h) {
      for (let j = i; j < i + h; j++) {
        const u = x[j] as number;
        const v = x[j + h] as number;
        x[j] = u + v;
        x[j + h] = u - v;
      }
    }
  }
}

/** U·[diag(s) 0]·Qᵀ (m x n, m a power of two <= n, n a multiple of 256); see the header. */
export function spectrumMatrix(m: number, n: number, s: Float64Array, seed: number): Float32Array {
  if ((m & (m - 1)) !== 0 || m > n || n % 256 !== 0) throw new RangeError(`spectrumMatrix: needs m a power of two <= n and n a multiple of 256, got ${m}×${n}`);
  const rng = new Rng(seed);
  const sign = (len: number): Float64Array => Float64Array.from({ length: len }, () => (rng.u32() & 1 ? 1 : -1));
  const perm = (len: number): Int32Array => {
    const p = Int32Array.from({ length: len }, (_, i) => i);
    for (let i = len - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      const t = p[i] as number;
      p[i] = p[j] as number;
      p[j] = t;
    }
    return p;
  };
  const du = sign(m);
  const d1 = sign(n);
  const d2 = sign(n);
  const p1 = perm(n);
  const p2 = perm(n);
  const parity = new Uint8Array(m);
  for (let i = 1; i < m; i++) parity[i] = (parity[i >> 1] as number) ^ (i & 1);
  const um = 1 / Math.sqrt(m);
  const out = new Float32Array(m * n);
  const x = new Float64Array(n);
  const y = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    // row i of U·diag(s), padded: H[i][c]·du[c]·s[c]
    for (let c = 0; c < n; c++) x[c] = c < m ? (parity[i & c] ? -um : um) * (du[c] as number) * (s[c] as number) : 0;
    // Q = P2·B2·P1·B1 with B = signs then 256-point Hadamard blocks / 16
    for (let c = 0; c < n; c++) x[c] = (x[c] as number) * (d1[c] as number);
    for (let b = 0; b < n; b += 256) fwht(x, b, 256);
    for (let c = 0; c < n; c++) y[p1[c] as number] = ((x[c] as number) / 16) * (d2[c] as number);
    for (let b = 0; b < n; b += 256) fwht(y, b, 256);
    const row = i * n;
    for (let c = 0; c < n; c++) out[row + (p2[c] as number)] = (y[c] as number) / 16;
  }
  return out;
}

const inverseSpectrum = (r: number): Float64Array => Float64Array.from({ length: r }, (_, i) => 1 / (i + 1));

function optimal(s: Float64Array, rank: number): number {
  let tot = 0;
  let tail = 0;
  for (let i = 0; i < s.length; i++) {
    const v = (s[i] as number) ** 2;
    tot += v;
    if (i >= rank) tail += v;
  }
  return Math.sqrt(tail / tot);
}

export async function runLowrankBench(o: BenchOptions): Promise<LowrankBenchResult> {
  const size = o.quick ? QUICK : FULL;
  const rng = new Rng(SEED);
  o.log('lowrank: clock and FMA probes');
  const peak = measurePeak(o.runs);
  const threads = threadCounts();
  const kernels: LowRankKernel[] = peak.avx512Gflops === null ? ['avx2'] : ['avx2', 'avx512'];

  o.log(`lowrank: plain-JS GEMM ${size.js}³`);
  const ja = rng.normals(size.js * size.js);
  const jb = rng.normals(size.js * size.js);
  const jsT = await timeRuns(() => jsGemm(ja, jb, size.js, size.js, size.js), Math.min(o.runs, 3));
  const jsGflops = (2 * size.js ** 3) / jsT.seconds / 1e9;

  const gemm: GemmRow[] = [];
  const shapes: { label: string; m: number; n: number; k: number; transA?: boolean }[] = [
    { label: 'square', m: size.square, n: size.square, k: size.square },
    { label: 'sketch A·Ω', m: size.tall[0], n: size.tall[1], k: size.tall[2] },
    { label: 'sketch Aᵀ·Q', m: size.tall[2], n: size.tall[1], k: size.tall[0], transA: true },
    { label: 'matrix·vector', m: size.skinny, n: 1, k: size.skinny },
    { label: 'matrix·16 columns', m: size.skinny, n: 16, k: size.skinny },
  ];
  o.log('lowrank: copy bandwidth');
  const copy = await measureCopyBandwidth(size.skinny * size.skinny * 4, threads, o.runs);
  for (const sh of shapes) {
    const a = Tensor.from(rng.normals(sh.m * sh.k), sh.transA ? [sh.k, sh.m] : [sh.m, sh.k]);
    const b = Tensor.from(rng.normals(sh.k * sh.n), [sh.k, sh.n]);
    const out = Tensor.zeros([sh.m, sh.n], 'f32');
    for (const kernel of kernels) {
      for (const t of threads) {
        o.log(`lowrank: gemm ${sh.label} ${sh.m}×${sh.n}×${sh.k} ${kernel} ${t} thread(s)`);
        const time = await timeRuns(() => matmul(a, b, { transA: sh.transA ?? false, kernel, threads: t, out }), o.runs);
        const gflops = (2 * sh.m * sh.n * sh.k) / time.seconds / 1e9;
        const perCore = kernel === 'avx512' ? (peak.avx512Gflops as number) : peak.avx2Gflops;
        const aGbps = (sh.m * sh.k * 4) / time.seconds / 1e9;
        const cp = copy.find((c) => c.threads === t)?.gbps ?? NaN;
        gemm.push({ label: sh.label, m: sh.m, n: sh.n, k: sh.k, kernel, threads: t, gflops, ofPeak: gflops / (t * perCore), jsRatio: gflops / jsGflops, aGbps, copyRatio: aGbps / cp });
      }
    }
  }

  o.log(`lowrank: exact SVD ${size.exact}×${size.exact}`);
  const es = inverseSpectrum(size.exact);
  const ea = Tensor.from(spectrumMatrix(size.exact, size.exact, es, SEED + 1), [size.exact, size.exact]);
  let maxSigmaError = 0;
  const exactT = await timeRuns(async () => {
    const r = await svd(ea);
    maxSigmaError = 0;
    for (let i = 0; i < r.s.length; i++) maxSigmaError = Math.max(maxSigmaError, Math.abs((r.s[i] as number) - (es[i] as number)));
  }, Math.min(o.runs, 3), 1);

  const rsvd: RsvdRow[] = [];
  const all = threads[threads.length - 1] as number;
  for (const [m, n] of size.rsvd) {
    o.log(`lowrank: building the ${m}×${n} test matrix (1/i spectrum)`);
    const s = inverseSpectrum(Math.min(m, n));
    const a = Tensor.from(spectrumMatrix(m, n, s, SEED + m + n), [m, n]);
    const cases: [number, number][] = size.ranks.map((r) => [r, all]);
    if (m === n && all > 1) cases.push([size.ranks[1] ?? size.ranks[0] as number, 1]);
    for (const [rank, t] of cases) {
      o.log(`lowrank: randomized rank ${rank} of ${m}×${n}, ${t} thread(s)`);
      let last: Awaited<ReturnType<typeof lowRank>> | undefined;
      const time = await timeRuns(async () => {
        last = await lowRank(a, { rank, method: 'randomized', threads: t });
      }, Math.min(o.runs, 3), 1);
      const r = last as Awaited<ReturnType<typeof lowRank>>;
      const opt = optimal(s, rank);
      rsvd.push({ m, n, rank, threads: t, seconds: time.seconds, samples: r.samples, relError: r.relError, libOptimal: r.optimalRelError, trueOptimal: opt, ratio: r.relError / opt });
    }
  }
  return { runs: o.runs, quick: o.quick, peak, jsGflops, copy: copy.map((c) => ({ threads: c.threads, gbps: c.gbps })), gemm, exact: { n: size.exact, seconds: exactT.seconds, maxSigmaError, threads: all }, rsvd };
}

const f1 = (v: number): string => v.toFixed(1);
const pct = (v: number): string => `${(100 * v).toFixed(0)} %`;

export function formatLowrankBench(r: LowrankBenchResult): string {
  const p = r.peak;
  const out: string[] = [];
  out.push(`### lowrank: GEMM, exact and randomized SVD (median of ${r.runs} runs; SVDs: of ${Math.min(r.runs, 3)})`);
  out.push('');
  out.push(
    `Peak per core: clock ${p.clockGHz.toFixed(2)} GHz (dependent register adds) × ${p.ports.ymm} FMA ports × 8 lanes × 2 = ` +
      `**${f1(p.avx2Gflops)} GFLOP/s AVX2**` +
      (p.avx512Gflops === null ? '' : `; × ${p.ports.zmm} × 16 lanes × 2 = **${f1(p.avx512Gflops)} GFLOP/s AVX-512**`) +
      `. FMA probes (12 independent chains) measure ${f1(p.measured.ymmGflops)} (ymm)` +
      (p.measured.zmmGflops === null ? '' : ` and ${f1(p.measured.zmmGflops)} (zmm: the AVX-512 clock license)`) +
      ' GFLOP/s per core.',
  );
  out.push('');
  const skinny = (g: GemmRow): boolean => g.n <= 16;
  out.push(markdownTable(
    ['GEMM', 'm×n×k', 'kernel', 'threads', 'GFLOP/s', 'of FMA peak', '× JS', 'A GB/s', '× copy'],
    r.gemm.map((g) => [g.label, `${g.m}×${g.n}×${g.k}`, g.kernel, String(g.threads), f1(g.gflops), pct(g.ofPeak), g.jsRatio >= 10 ? g.jsRatio.toFixed(0) : g.jsRatio.toFixed(1),
      skinny(g) ? f1(g.aGbps) : '—', skinny(g) ? `${g.copyRatio.toFixed(2)}×` : '—']),
  ));
  out.push('');
  out.push(`Plain-JS GEMM (bench/lowrank.ts jsGemm, i-k-j loops, one thread): ${r.jsGflops.toFixed(2)} GFLOP/s. ` +
    'of FMA peak: GFLOP/s ÷ (threads × the per-core peak of the kernel\'s vector width). matrix·vector does 0.5 flop per byte of A and is bound by reading it ' +
    '(matrix·16 does 8, between the two limits): ' +
    `A GB/s is A's bytes per second, × copy against a memcpy of the same size at the same thread count (${r.copy.map((c) => `${c.threads}T ${c.gbps.toFixed(1)} GB/s`).join(', ')}); a read-only kernel can pass 1×.`);
  out.push('');
  out.push(`Exact SVD of ${r.exact.n}×${r.exact.n} (1/i spectrum, ${r.exact.threads} threads): **${r.exact.seconds.toFixed(2)} s**; max |σ_i − 1/i| = ${r.exact.maxSigmaError.toExponential(1)}.`);
  out.push('');
  out.push(markdownTable(
    ['randomized SVD', 'rank', 'threads', 'seconds', 'k + p', 'relError', 'optimal (1/i)', 'ratio', 'lib optimalRelError'],
    r.rsvd.map((x) => [`${x.m}×${x.n}`, String(x.rank), String(x.threads), x.seconds.toFixed(3), String(x.samples), x.relError.toFixed(5), x.trueOptimal.toFixed(5), `${x.ratio.toFixed(4)}×`, x.libOptimal.toFixed(5)]),
  ));
  out.push('');
  out.push('Randomized: `lowRank(a, { rank, method: \'randomized\' })` with the defaults (oversample 10, rounded up to a multiple of 16 columns; 2 power iterations; seed 0), ' +
    'time including the measured error (one more pass forming L·R). ratio = relError ÷ the Eckart–Young optimum of the analytic spectrum.');
  return out.join('\n');
}

export const lowrankBench: Benchmark = {
  name: 'lowrank',
  description: 'GEMM GFLOP/s vs FMA peak and plain JS; exact SVD 1024²; randomized SVD of 4096² and 4096×11008',
  async run(o: BenchOptions): Promise<BenchOutcome> {
    const result = await runLowrankBench(o);
    return { result, markdown: formatLowrankBench(result) };
  },
};
