// The quantize benchmark: every format's throughput at 1 thread and at all
// threads, against the machine's copy bandwidth (quantizing is memory-bound:
// read the f32 once, write a fraction of it) and against a plain-JS
// quantizer, with each format's RMSE alongside so speed and quality are read
// together.
import { quantizationError, quantize, Tensor, type QuantizedTensor, type QuantizeOptions } from '../lib/index';
import { quantizeIntSymmetric, quantizeQ4_0, quantizeQ4_1, quantizeQ8_0 } from './baseline-js';
import {
  fmtBytes,
  fmtGBs,
  fmtRatio,
  gbps,
  markdownTable,
  copier,
  measureCopyBandwidth,
  threadCounts,
  timePairedWithCopy,
  timeRuns,
  type Benchmark,
  type BenchOptions,
  type BenchOutcome,
  type CopyBandwidth,
  threadsLabel,
} from './harness';
import { Rng } from '../test/support/random';

const SEED = 20240601;
const COLS = 4096; // a multiple of every group size below
const FULL = { rows: 4096, baselineRows: 512 };
const QUICK = { rows: 256, baselineRows: 64 };

/** A JS baseline's output as byte arrays, in the order nativeParts() lists them. */
type Baseline = (x: Float32Array, rows: number, cols: number) => Uint8Array[];

interface Case {
  /** Stable key in the JSON output. */
  id: string;
  /** Row name in the table. */
  label: string;
  options: QuantizeOptions;
  baseline?: Baseline;
}

const bytesOf = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

const intBaseline =
  (bits: 4 | 8, group: number): Baseline =>
  (x, rows, cols) => {
    const q = quantizeIntSymmetric(x, rows, cols, bits, group);
    return [bytesOf(q.data), bytesOf(q.scales)];
  };

// The formats a user picks between, at the settings they'd pick: the GGUF
// blocks, the compressed-tensors presets (W4A16, W4A16_ASYM, W8A16), and
// the MSE search, which trades speed for error and so belongs in the same
// table.
const CASES: Case[] = [
  { id: 'q4_0', label: 'q4_0', options: { format: 'q4_0' }, baseline: (x) => [quantizeQ4_0(x)] },
  { id: 'q4_1', label: 'q4_1', options: { format: 'q4_1' }, baseline: (x) => [quantizeQ4_1(x)] },
  { id: 'q8_0', label: 'q8_0', options: { format: 'q8_0' }, baseline: (x) => [quantizeQ8_0(x)] },
  { id: 'int4-g128-sym', label: 'int4 g128 sym', options: { format: 'int4', groupSize: 128, symmetric: true }, baseline: intBaseline(4, 128) },
  { id: 'int4-g128-asym', label: 'int4 g128 asym', options: { format: 'int4', groupSize: 128, symmetric: false } },
  { id: 'int8-g128-sym', label: 'int8 g128 sym', options: { format: 'int8', groupSize: 128, symmetric: true }, baseline: intBaseline(8, 128) },
  { id: 'q4_0-mse', label: 'q4_0 mse', options: { format: 'q4_0', search: 'mse' } },
  { id: 'int4-g32-sym-mse', label: 'int4 g32 sym mse', options: { format: 'int4', groupSize: 32, symmetric: true, search: 'mse' } },
  { id: 'int4-g32-asym-mse', label: 'int4 g32 asym mse', options: { format: 'int4', groupSize: 32, symmetric: false, search: 'mse' } },
  { id: 'q4_1-mse', label: 'q4_1 mse', options: { format: 'q4_1', search: 'mse' } },
];

/** The native result's bytes, in the same order as a Baseline's. */
function nativeParts(q: QuantizedTensor): Uint8Array[] {
  const parts = [bytesOf(q.data)];
  if (q.scales) parts.push(bytesOf(q.scales.data));
  if (q.zeros) parts.push(bytesOf(q.zeros.data));
  return parts;
}

/** Bytes that differ between two lists of byte arrays (a length difference counts in full). */
function countMismatches(a: readonly Uint8Array[], b: readonly Uint8Array[]): { bytes: number; mismatches: number } {
  let bytes = 0;
  let mismatches = 0;
  for (let p = 0; p < Math.max(a.length, b.length); p++) {
    const x = a[p] ?? new Uint8Array(0);
    const y = b[p] ?? new Uint8Array(0);
    const n = Math.max(x.length, y.length);
    bytes += n;
    for (let i = 0; i < n; i++) if (x[i] !== y[i]) mismatches++;
  }
  return { bytes, mismatches };
}

export interface ThreadResult {
  threads: number;
  /** Median seconds per call on the full input. */
  seconds: number;
  /** Bytes of f32 input per second, GB/s. */
  gbps: number;
  /** gbps / the copy bandwidth at the same thread count. */
  copyRatio: number;
  /** gbps / the JS baseline's gbps; null for formats without a baseline. */
  jsRatio: number | null;
}

export interface CaseResult {
  id: string;
  /** The same calls writing into a reused output (options.out): no allocation, no page faults. */
  reuse: ThreadResult[];
  label: string;
  options: QuantizeOptions;
  bitsPerWeight: number;
  rmse: number;
  /** The JS baseline's GB/s on the slice; null without a baseline. */
  jsGbps: number | null;
  /** JS baseline vs native bytes on the slice; null without a baseline. */
  identical: { bytes: number; mismatches: number } | null;
  perThreads: ThreadResult[];
}

export interface QuantizeBenchResult {
  input: { rows: number; cols: number; dtype: 'f32'; bytes: number; distribution: 'N(0,1)'; seed: number };
  runs: number;
  baselineRows: number;
  copy: CopyBandwidth[];
  cases: CaseResult[];
}

/** An f32 matrix both as a Tensor (for the library) and as its values (for the JS baseline). */
interface Input {
  tensor: Tensor;
  values: Float32Array;
  rows: number;
  cols: number;
}

function input(values: Float32Array, rows: number, cols: number): Input {
  return { tensor: Tensor.from(values, [rows, cols]), values, rows, cols };
}

async function measureCase(
  c: Case,
  full: Input,
  slice: Input,
  copy: readonly CopyBandwidth[],
  copyFn: (threads: number) => void,
  o: BenchOptions,
): Promise<CaseResult> {
  const t = full.tensor;

  let jsGbps: number | null = null;
  let identical: CaseResult['identical'] = null;
  if (c.baseline) {
    const baseline = c.baseline;
    // Two warm-ups: V8 optimizes the loops during the first call (OSR), the
    // second runs the optimized code from the start.
    const js = await timeRuns(() => baseline(slice.values, slice.rows, slice.cols), o.runs, 2);
    jsGbps = gbps(slice.values.byteLength, js.seconds);
    const native = await quantize(slice.tensor, c.options);
    identical = countMismatches(baseline(slice.values, slice.rows, slice.cols), nativeParts(native));
  }

  const perThreads: ThreadResult[] = [];
  let last: QuantizedTensor | undefined;
  for (const { threads } of copy) {
    const options: QuantizeOptions = { ...c.options, threads };
    const timing = await timePairedWithCopy(
      async () => {
        last = await quantize(t, options);
      },
      () => copyFn(threads),
      o.runs,
    );
    const rate = gbps(t.byteLength, timing.seconds);
    perThreads.push({
      threads,
      seconds: timing.seconds,
      gbps: rate,
      copyRatio: timing.copyRatio,
      jsRatio: jsGbps === null ? null : rate / jsGbps,
    });
  }
  if (!last) throw new Error(`quantize benchmark: ${c.label} never ran`);
  const reuse: ThreadResult[] = [];
  if (c.options.search !== 'mse') {
    const out = last;
    for (const { threads } of copy) {
      const options: QuantizeOptions = { ...c.options, threads, out };
      const timing = await timePairedWithCopy(() => quantize(t, options), () => copyFn(threads), o.runs);
      const rate = gbps(t.byteLength, timing.seconds);
      reuse.push({ threads, seconds: timing.seconds, gbps: rate, copyRatio: timing.copyRatio, jsRatio: jsGbps === null ? null : rate / jsGbps });
    }
  }
  const err = await quantizationError(t, last);
  o.log(`  ${c.label}: ${perThreads.map((p) => `${fmtGBs(p.gbps)} GB/s @${p.threads}T`).join(', ')}`);
  return { id: c.id, label: c.label, options: c.options, bitsPerWeight: last.bitsPerWeight, rmse: err.rmse, jsGbps, identical, perThreads, reuse };
}

export async function runQuantizeBench(o: BenchOptions): Promise<QuantizeBenchResult> {
  const size = o.quick ? QUICK : FULL;
  o.log(`quantize: generating ${size.rows}×${COLS} N(0,1) f32`);
  const x = new Rng(SEED).normals(size.rows * COLS);
  const full = input(x, size.rows, COLS);
  // The JS baseline runs on the first rows only: it is single-threaded and
  // much slower, and throughput per byte hardly depends on size once the
  // slice is larger than the caches.
  const slice = input(x.subarray(0, size.baselineRows * COLS), size.baselineRows, COLS);

  o.log(`quantize: copy bandwidth on ${fmtBytes(x.byteLength)}`);
  const copy = await measureCopyBandwidth(x.byteLength, threadCounts(), o.runs);
  const copyFn = copier(x.byteLength);

  const cases: CaseResult[] = [];
  for (const c of CASES) cases.push(await measureCase(c, full, slice, copy, copyFn, o));
  return {
    input: { rows: size.rows, cols: COLS, dtype: 'f32', bytes: x.byteLength, distribution: 'N(0,1)', seed: SEED },
    runs: o.runs,
    baselineRows: size.baselineRows,
    copy,
    cases,
  };
}


export function formatQuantizeBench(r: QuantizeBenchResult): string {
  const { rows, cols, bytes } = r.input;
  const out: string[] = [];
  out.push(`### quantize: ${rows}×${cols} f32 (${fmtBytes(bytes)}), N(0,1), median of ${r.runs} runs`);
  out.push('');
  out.push(`Copy bandwidth (memcpy of ${fmtBytes(bytes)} via parallelCopy, median of ${r.runs}):`);
  for (const c of r.copy) out.push(`- ${threadsLabel(c.threads)}: ${fmtGBs(c.gbps)} GB/s`);
  out.push('');

  const headers = ['format', 'bits/weight', 'JS GB/s'];
  for (const c of r.copy) headers.push(`${threadsLabel(c.threads)} GB/s`, '× copy', '× JS');
  headers.push('RMSE');
  const rowsOut = r.cases.map((c) => {
    const cells = [c.label, c.bitsPerWeight.toFixed(2), c.jsGbps === null ? '—' : fmtGBs(c.jsGbps)];
    for (const p of c.perThreads) cells.push(fmtGBs(p.gbps), fmtRatio(p.copyRatio), fmtRatio(p.jsRatio));
    cells.push(c.rmse.toPrecision(4));
    return cells;
  });
  out.push(markdownTable(headers, rowsOut));
  out.push('');

  const reused = r.cases.filter((c) => c.reuse.length > 0);
  if (reused.length > 0) {
    out.push('Into a reused output (`options.out`: no allocation, so no page faults on fresh memory):');
    out.push('');
    const h = ['format'];
    for (const c of r.copy) h.push(`${threadsLabel(c.threads)} GB/s`, '× copy');
    out.push(markdownTable(h, reused.map((c) => [c.label, ...c.reuse.flatMap((p) => [fmtGBs(p.gbps), fmtRatio(p.copyRatio)])])));
    out.push('');
  }

  const checks = r.cases.filter((c) => c.identical !== null);
  const verdicts = checks.map((c) => {
    const m = c.identical as { bytes: number; mismatches: number };
    return `${c.label} ${m.mismatches === 0 ? 'OK' : `MISMATCH (${m.mismatches} of ${m.bytes} bytes)`}`;
  });
  out.push(`JS baseline vs native, byte for byte on the first ${r.baselineRows} rows: ${verdicts.join(' · ')}`);
  out.push('');
  out.push(
    'GB/s: bytes of f32 input / median wall time of `await quantize()` (allocation of the output included), 1 GB = 10⁹ B. ' +
      '× copy: against a memcpy of the same size at the same thread count, each call timed back to back with one copy and the median of those ratios taken (the bandwidth drifts on a shared machine); counted the same way (bytes of source per second); ' +
      'a quantizer reads as much as a copy but writes 4–9× less, so a memory-bound kernel can pass 1×. ' +
      `× JS: against bench/baseline-js.ts (plain JS, one thread) of the same format, timed on the first ${r.baselineRows} rows; ` +
      'both are per-byte throughput, so the different sizes hardly matter; — means no JS baseline. ' +
      'RMSE: quantizationError() of the full tensor.',
  );
  return out.join('\n');
}

export const quantizeBench: Benchmark = {
  name: 'quantize',
  description: 'q4_0/q4_1/q8_0/int4/int8 (+ MSE search) throughput vs copy bandwidth and plain JS, with RMSE',
  async run(o: BenchOptions): Promise<BenchOutcome> {
    const result = await runQuantizeBench(o);
    return { result, markdown: formatQuantizeBench(result) };
  },
};
