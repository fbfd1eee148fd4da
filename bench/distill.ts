// The distill benchmark: forward + backward of distillLoss on LLM-sized
// logits (2048×32000 and 512×128000 f32), at 1 thread and at all threads,
// in ms and GB/s of memory traffic (bytes read + bytes written), against
// a memcpy moving the same number of bytes in the same run (the kernel is
// meant to be memory-bound: read both logit rows once, write the gradient
// once) and against a plain-JS implementation (bench/baseline-distill.ts).
// Every case runs on each SIMD kernel the machine has (AVX2, AVX-512), so
// the two builds of the same kernel are compared in the same run.
import * as os from 'node:os';
import { backends, distillLoss, Tensor, type DistillLossOptions, type TopKTeacher } from '../lib/index';
import { distillForwardKl } from './baseline-distill';
import {
  copier,
  fmtBytes,
  fmtGBs,
  fmtRatio,
  gbps,
  markdownTable,
  threadCounts,
  timePairedWithCopy,
  timeRuns,
  type Benchmark,
  type BenchOptions,
  type BenchOutcome,
  threadsLabel,
} from './harness';
import { Rng } from '../test/support/random';

const SEED = 20240605;
/** Eager PyTorch on this machine, 2048×32000 f32 forward+backward (issue 5). */
const PYTORCH_MS = { low: 2300, high: 3000 };
const TARGET_MS = 250;
const TARGET_COPY = 0.7;

interface Shape {
  rows: number;
  cols: number;
  /** Rows the plain-JS baseline runs on (single-threaded; throughput per byte barely depends on it). */
  baselineRows: number;
}

const FULL: Shape[] = [
  { rows: 2048, cols: 32000, baselineRows: 64 },
  { rows: 512, cols: 128000, baselineRows: 16 },
];
const QUICK: Shape[] = [
  { rows: 64, cols: 32000, baselineRows: 8 },
  { rows: 16, cols: 128000, baselineRows: 4 },
];

interface Case {
  id: string;
  label: string;
  shape: 0 | 1; // index into the sizes
  dtype: 'f32' | 'bf16';
  options: DistillLossOptions;
  topk?: number;
  /** Also time with a freshly allocated gradient (grad: true) at all threads. */
  fresh?: boolean;
  baseline?: boolean;
}

const CASES: Case[] = [
  { id: 'fwd-t1', label: 'forward-kl, T=1 (defaults)', shape: 0, dtype: 'f32', options: {}, fresh: true, baseline: true },
  { id: 'fwd-t2', label: 'forward-kl, T=2', shape: 0, dtype: 'f32', options: { temperature: 2 }, baseline: true },
  { id: 'rev-t2', label: 'reverse-kl, T=2', shape: 0, dtype: 'f32', options: { temperature: 2, divergence: 'reverse-kl' } },
  { id: 'jsd-t2', label: 'jsd, T=2', shape: 0, dtype: 'f32', options: { temperature: 2, divergence: 'jsd' } },
  { id: 'topk64-t2', label: 'top-64 teacher, T=2', shape: 0, dtype: 'f32', options: { temperature: 2 }, topk: 64 },
  { id: 'fwd-t1-bf16', label: 'forward-kl, T=1, bf16', shape: 0, dtype: 'bf16', options: {} },
  { id: 'fwd-t1-128k', label: 'forward-kl, T=1', shape: 1, dtype: 'f32', options: {}, fresh: true, baseline: true },
];

export interface ThreadResult {
  threads: number;
  ms: number;
  /** Bytes read + written per second, GB/s. */
  gbps: number;
  /** Against a memcpy moving the same bytes (read + written), timed back to back: median of the ratios. */
  copyRatio: number;
  /** gbps / the plain-JS baseline's; null without one. */
  jsRatio: number | null;
}

/** The CPU kernels compared: each SIMD build the machine runs, 'auto' (the reference) on one without. */
type BenchKernel = 'auto' | 'avx2' | 'avx512';
function benchKernels(): BenchKernel[] {
  const k = backends().cpu.kernel;
  return k === 'avx512' ? ['avx2', 'avx512'] : k === 'avx2' ? ['avx2'] : ['auto'];
}

export interface CaseResult {
  id: string;
  label: string;
  kernel: BenchKernel;
  rows: number;
  cols: number;
  dtype: string;
  /** Bytes read + written by one call. */
  bytes: number;
  /** Into a gradient buffer reused across calls (options.grad: a Tensor). */
  perThreads: ThreadResult[];
  /** With grad: true (a fresh buffer per call), at all threads; null when not measured. */
  fresh: ThreadResult | null;
  jsGbps: number | null;
  /** Native vs plain-JS loss on the baseline's rows (relative difference); null without a baseline. */
  jsLossRelDiff: number | null;
  loss: number;
}

export interface DistillBenchResult {
  runs: number;
  quick: boolean;
  copy: { threads: number; gbps: number }[];
  cases: CaseResult[];
  /** Per case with both kernels: AVX-512's × copy / AVX2's × copy, per thread count (> 1: AVX-512 faster). */
  avx512VsAvx2: { id: string; label: string; shape: string; perThreads: { threads: number; ratio: number }[] }[];
  headline: { kernel: string; ms: number; target: number; copyRatio: number; copyTarget: number; vsPytorch: { low: number; high: number } } | null;
  /** 1-minute load average before and after the run, and the core count: other work on the machine skews the all-threads column. */
  load: { before: number; after: number; cores: number };
}

interface Inputs {
  student: Float32Array;
  teacher: Float32Array;
  studentBf16: Uint16Array;
  teacherBf16: Uint16Array;
  labels: Int32Array;
}

function bf16(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const b = u[i] as number;
    out[i] = ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
  }
  return out;
}

function makeInputs(rng: Rng, s: Shape): Inputs {
  const n = s.rows * s.cols;
  // Logits like a language model's: N(0, 2²), the teacher correlated with the student.
  const student = rng.normals(n, 2);
  const teacher = rng.normals(n, 1.5);
  for (let i = 0; i < n; i++) teacher[i] = Math.fround((teacher[i] as number) + (student[i] as number) * 0.7);
  const labels = Int32Array.from({ length: s.rows }, () => rng.int(s.cols));
  return { student, teacher, studentBf16: bf16(student), teacherBf16: bf16(teacher), labels };
}

function topkTeacher(rng: Rng, rows: number, cols: number, k: number): TopKTeacher {
  const indices = new Int32Array(rows * k);
  const logprobs = new Float32Array(rows * k);
  const used = new Int32Array(cols).fill(-1);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < k; i++) {
      let j = rng.int(cols);
      while (used[j] === r) j = rng.int(cols);
      used[j] = r;
      indices[r * k + i] = j;
      logprobs[r * k + i] = -0.5 - 0.1 * i;
    }
  }
  return { indices, logprobs };
}

function bytesOf(rows: number, cols: number, elem: number, topk: number | undefined): number {
  const teacher = topk ? rows * topk * 8 : rows * cols * elem;
  return rows * cols * elem /* student */ + teacher + rows * 4 /* labels */ + rows * cols * elem /* gradient */ + rows * 4 /* row losses */;
}

// memcpy functions by size: each holds two buffers of that size.
const copiers = new Map<number, (threads: number) => void>();
function copierOf(bytes: number): (threads: number) => void {
  let c = copiers.get(bytes);
  if (!c) {
    c = copier(bytes);
    copiers.set(bytes, c);
  }
  return c;
}

interface Baseline {
  jsGbps: number;
  /** Native vs plain-JS loss on the baseline's rows (relative difference). */
  jsLossRelDiff: number;
}

async function measureBaseline(c: Case, shape: Shape, inputs: Inputs, o: BenchOptions): Promise<Baseline> {
  const { cols } = shape;
  const br = shape.baselineRows;
  const z = inputs.student.subarray(0, br * cols);
  const t = inputs.teacher.subarray(0, br * cols);
  const y = inputs.labels.subarray(0, br);
  const g = new Float32Array(br * cols);
  const T = c.options.temperature ?? 1;
  const js = await timeRuns(() => distillForwardKl(z, t, y, br, cols, T, 0.5, g), Math.max(1, Math.min(o.runs, 3)), 1);
  const native = await distillLoss(Tensor.from(z, [br, cols]), Tensor.from(t, [br, cols]), { labels: y, temperature: T });
  const base = distillForwardKl(z, t, y, br, cols, T, 0.5, g);
  return { jsGbps: gbps(bytesOf(br, cols, 4, undefined), js.seconds), jsLossRelDiff: Math.abs(native.loss - base.loss) / Math.abs(base.loss) };
}

async function measureCase(
  c: Case,
  shape: Shape,
  inputs: Inputs,
  topk: TopKTeacher | undefined,
  kernel: BenchKernel,
  withFresh: boolean,
  baseline: Baseline | null,
  o: BenchOptions,
): Promise<CaseResult> {
  const { rows, cols } = shape;
  const elem = c.dtype === 'f32' ? 4 : 2;
  const student = c.dtype === 'f32' ? Tensor.from(inputs.student, [rows, cols]) : Tensor.from(inputs.studentBf16, [rows, cols], 'bf16');
  const teacher: Tensor | TopKTeacher = topk
    ? topk
    : c.dtype === 'f32'
      ? Tensor.from(inputs.teacher, [rows, cols])
      : Tensor.from(inputs.teacherBf16, [rows, cols], 'bf16');
  const bytes = bytesOf(rows, cols, elem, c.topk);
  const options: DistillLossOptions = { labels: inputs.labels, ...c.options, kernel };
  const grad = Tensor.uninitialized([rows, cols], c.dtype);
  // A copy of half the bytes reads and writes as many bytes as the kernel.
  const copy = copierOf(Math.round(bytes / 2));
  const jsGbps = baseline ? baseline.jsGbps : null;

  const perThreads: ThreadResult[] = [];
  let loss = NaN;
  for (const threads of threadCounts()) {
    const timing = await timePairedWithCopy(
      async () => {
        loss = (await distillLoss(student, teacher, { ...options, threads, grad })).loss;
      },
      () => copy(threads),
      o.runs,
    );
    const rate = gbps(bytes, timing.seconds);
    perThreads.push({ threads, ms: timing.seconds * 1e3, gbps: rate, copyRatio: timing.copyRatio, jsRatio: jsGbps === null ? null : rate / jsGbps });
  }
  let fresh: ThreadResult | null = null;
  if (c.fresh && withFresh) {
    const threads = threadCounts()[threadCounts().length - 1] as number;
    const timing = await timePairedWithCopy(() => distillLoss(student, teacher, { ...options, threads }), () => copy(threads), o.runs);
    const rate = gbps(bytes, timing.seconds);
    fresh = { threads, ms: timing.seconds * 1e3, gbps: rate, copyRatio: timing.copyRatio, jsRatio: jsGbps === null ? null : rate / jsGbps };
  }
  o.log(`  ${c.label} ${rows}×${cols} (${kernel}): ${perThreads.map((p) => `${p.ms.toFixed(0)} ms @${p.threads}T`).join(', ')}`);
  return {
    id: c.id,
    label: c.label,
    kernel,
    rows,
    cols,
    dtype: c.dtype,
    bytes,
    perThreads,
    fresh,
    jsGbps,
    jsLossRelDiff: baseline ? baseline.jsLossRelDiff : null,
    loss,
  };
}

export async function runDistillBench(o: BenchOptions): Promise<DistillBenchResult> {
  const shapes = o.quick ? QUICK : FULL;
  const loadBefore = os.loadavg()[0] as number;
  const rng = new Rng(SEED);
  const cases: CaseResult[] = [];
  const copyRates: { threads: number; gbps: number }[] = [];
  for (let si = 0; si < shapes.length; si++) {
    const shape = shapes[si] as Shape;
    const selected = CASES.filter((c) => c.shape === si);
    if (selected.length === 0) continue;
    o.log(`distill: generating ${shape.rows}×${shape.cols} student and teacher logits`);
    const inputs = makeInputs(rng, shape);
    if (si === 0) {
      // The copy bandwidth itself, for the report (bytes read + written / s).
      const bytes = bytesOf(shape.rows, shape.cols, 4, undefined);
      const copy = copierOf(Math.round(bytes / 2));
      for (const threads of threadCounts()) {
        const t = await timeRuns(() => copy(threads), o.runs, 2);
        copyRates.push({ threads, gbps: gbps(bytes, t.seconds) });
      }
    }
    const kernels = benchKernels();
    for (const c of selected) {
      const baseline = c.baseline ? await measureBaseline(c, shape, inputs, o) : null;
      const topk = c.topk ? topkTeacher(rng, shape.rows, shape.cols, c.topk) : undefined;
      // The fresh-buffer timing only for the kernel 'auto' picks (the last).
      for (const [i, kernel] of kernels.entries()) cases.push(await measureCase(c, shape, inputs, topk, kernel, i === kernels.length - 1, baseline, o));
    }
    copiers.clear();
  }
  const avx512VsAvx2: DistillBenchResult['avx512VsAvx2'] = [];
  for (const a of cases.filter((c) => c.kernel === 'avx512')) {
    const b = cases.find((c) => c.kernel === 'avx2' && c.id === a.id);
    if (!b) continue;
    avx512VsAvx2.push({
      id: a.id,
      label: a.label,
      shape: `${a.rows}×${a.cols} ${a.dtype}`,
      perThreads: a.perThreads.map((p, i) => ({ threads: p.threads, ratio: p.copyRatio / (b.perThreads[i] as ThreadResult).copyRatio })),
    });
  }
  // The headline is the kernel 'auto' runs: the last one measured.
  const head = [...cases].reverse().find((c) => c.id === 'fwd-t1');
  const all = head?.perThreads[head.perThreads.length - 1];
  const headline =
    head && all && !o.quick
      ? { kernel: head.kernel, ms: all.ms, target: TARGET_MS, copyRatio: all.copyRatio, copyTarget: TARGET_COPY, vsPytorch: { low: PYTORCH_MS.low / all.ms, high: PYTORCH_MS.high / all.ms } }
      : null;
  const load = { before: loadBefore, after: os.loadavg()[0] as number, cores: os.cpus().length };
  return { runs: o.runs, quick: o.quick, copy: copyRates, cases, avx512VsAvx2, headline, load };
}


export function formatDistillBench(r: DistillBenchResult): string {
  const out: string[] = [];
  out.push(`### distill: forward + backward, median of ${r.runs} runs${r.quick ? ' (--quick: small sizes, numbers mean little)' : ''}`);
  out.push('');
  out.push(
    `Load average (1 min) ${r.load.before.toFixed(2)} before, ${r.load.after.toFixed(2)} after, on ${r.load.cores} cores: ` +
      'other work on the machine takes cores from the all-threads column (and from the copy it is compared with).',
  );
  out.push('');
  out.push('Copy bandwidth (memcpy via parallelCopy, bytes read + written per second, on the 2048-row input size):');
  for (const c of r.copy) out.push(`- ${threadsLabel(c.threads)}: ${fmtGBs(c.gbps)} GB/s`);
  out.push('');
  const threads = r.cases[0]?.perThreads.map((p) => p.threads) ?? [];
  const headers = ['case', 'kernel', 'shape', 'moved'];
  for (const t of threads) headers.push(`${threadsLabel(t)} ms`, 'GB/s', '× copy', '× JS');
  const rows = r.cases.map((c) => {
    const cells = [c.label, c.kernel, `${c.rows}×${c.cols} ${c.dtype}`, fmtBytes(c.bytes)];
    for (const p of c.perThreads) cells.push(p.ms.toFixed(0), fmtGBs(p.gbps), `${(p.copyRatio * 100).toFixed(0)} %`, fmtRatio(p.jsRatio));
    return cells;
  });
  out.push(markdownTable(headers, rows));
  out.push('');
  if (r.avx512VsAvx2.length > 0) {
    out.push('AVX-512 against AVX2 (the same kernel, 16 logits per zmm register instead of two ymm): × copy of the AVX-512 row / × copy of the AVX2 row, above 1 when AVX-512 is faster:');
    out.push('');
    out.push(
      markdownTable(
        ['case', 'shape', ...threads.map((t) => threadsLabel(t))],
        r.avx512VsAvx2.map((x) => [x.label, x.shape, ...x.perThreads.map((p) => `${p.ratio.toFixed(2)}×`)]),
      ),
    );
    out.push('');
  }
  const fresh = r.cases.filter((c) => c.fresh !== null);
  if (fresh.length > 0) {
    out.push('With `grad: true` (a new gradient buffer each call, so its pages are faulted in fresh), all threads:');
    out.push('');
    out.push(
      markdownTable(
        ['case', 'shape', 'ms', 'GB/s', '× copy'],
        fresh.map((c) => {
          const f = c.fresh as ThreadResult;
          return [`${c.label} (${c.kernel})`, `${c.rows}×${c.cols} ${c.dtype}`, f.ms.toFixed(0), fmtGBs(f.gbps), `${(f.copyRatio * 100).toFixed(0)} %`];
        }),
      ),
    );
    out.push('');
  }
  const checks = r.cases.filter((c, i) => c.jsLossRelDiff !== null && r.cases.findIndex((d) => d.id === c.id) === i);
  if (checks.length > 0) {
    out.push(
      `Plain JS (bench/baseline-distill.ts, one thread): ${checks
        .map((c) => `${c.label} ${c.rows}×${c.cols}: ${fmtGBs(c.jsGbps as number)} GB/s, loss agrees with native to ${(c.jsLossRelDiff as number).toExponential(1)}`)
        .join('; ')}.`,
    );
    out.push('');
  }
  if (r.headline) {
    const h = r.headline;
    out.push(
      `2048×32000 f32, all threads, reused gradient, ${h.kernel}: ${h.ms.toFixed(0)} ms (target <= ${h.target} ms: ${h.ms <= h.target ? 'met' : 'missed'}), ` +
        `${(h.copyRatio * 100).toFixed(0)} % of copy bandwidth (target >= ${h.copyTarget * 100} %: ${h.copyRatio >= h.copyTarget ? 'met' : 'missed'}), ` +
        `${h.vsPytorch.low.toFixed(0)}–${h.vsPytorch.high.toFixed(0)}× faster than eager PyTorch's 2.3–3.0 s on this machine (issue 5).`,
    );
    out.push('');
  }
  out.push(
    'ms: median wall time of `await distillLoss()` (loss, per-row losses and the full gradient). ' +
      'moved / GB/s: bytes read (student, teacher, labels) + bytes written (gradient, row losses), 1 GB = 10⁹ B; a top-k teacher reads k indices and logprobs per row instead of a logit row. ' +
      '× copy: time of a memcpy moving as many bytes (half as many copied: each is read once and written once) / time of the call, each call timed back to back with one copy, median of the ratios. ' +
      '× JS: against the plain-JS forward-kl (bench/baseline-distill.ts) on the first rows, per byte. ' +
      'kernel: options.kernel (auto picks the last one listed). ' +
      'Default options otherwise: labels on every row, alpha 0.5, reduction mean.',
  );
  return out.join('\n');
}

export const distillBench: Benchmark = {
  name: 'distill',
  description: 'distillLoss forward+backward on 2048×32000 and 512×128000 logits vs copy bandwidth and plain JS',
  async run(o: BenchOptions): Promise<BenchOutcome> {
    const result = await runDistillBench(o);
    return { result, markdown: formatDistillBench(result) };
  },
};
