// The sparsity benchmark, two halves.
//
// Pruning: 2:4 prune + compress (compress24 with prune: true, the fused
// pass) and prune alone of a 4096×11008 f32 matrix, at 1 thread and all
// threads. Both are memory-bound (read the f32 once, write half of it plus
// meta and bitmask, or all of it plus the bitmask), so they are reported
// against a memcpy of the input's size timed back to back with each call,
// and against the plain-JS loops of bench/baseline-sparsity.ts, whose
// output is checked byte for byte against the native one.
//
// spmm24: a 2:4-compressed 4096×4096 weight times batches of 1, 8 and 16
// f32 columns against the dense GEMM (matmul, the same ISA) of the same
// weight after decompression, each pair timed back to back. The weights
// are evicted from the caches before every call (a copy twice the size of
// the last-level cache): a model's weights are read from memory, not from a
// warm L3 that happens to hold this one matrix, and a half-size sparse copy
// would fit there far more often than the dense one. The products are
// compared bit for bit too: sparse.h promises the dense GEMM's chains with
// the zero terms left out.
import * as fs from 'node:fs';
import { planCompress24, planPrune } from '../lib/sparsity';
import { binding } from '../lib/native';
import { compress24, compress24Sync, decompress24Sync, matmulSync, prune, pruneSync, spmm24Kernel, spmm24Sync, Tensor, type Kernel } from '../lib/index';
import { pruneCompress24, prune24 } from './baseline-sparsity';
import {
  copier,
  describeMachine,
  fmtBytes,
  fmtGBs,
  fmtRatio,
  gbps,
  markdownTable,
  measureCopyBandwidth,
  median,
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

const SEED = 20260322;
const FULL = { rows: 4096, cols: 11008, baselineRows: 256, spmm: 4096, batches: [1, 8, 16] };
const QUICK = { rows: 64, cols: 1024, baselineRows: 16, spmm: 256, batches: [1, 8, 16] };

export interface PruneThreadResult {
  threads: number;
  seconds: number;
  /** Bytes of f32 input per second, GB/s. */
  gbps: number;
  /** Against a memcpy of the input's size, paired call by call. */
  copyRatio: number;
  jsRatio: number;
}

export interface PruneCaseResult {
  id: 'prune-compress24' | 'prune24';
  label: string;
  /** Plain JS (bench/baseline-sparsity.ts) on the first baselineRows rows. */
  jsGbps: number;
  identical: { bytes: number; mismatches: number };
  perThreads: PruneThreadResult[];
  /**
   * The native kernel alone, writing into output buffers it has written
   * before (no fresh pages for the OS to fault in and zero).
   */
  reuse: PruneThreadResult[];
  /** The async API call with options.out (buffers a first call made): validation, the boundary and the kernel. */
  intoOut: PruneThreadResult[];
}

export interface SpmmResult {
  n: number;
  threads: number;
  kernel: string;
  /** Median seconds per call, both cold (weights evicted from the caches). */
  sparseSeconds: number;
  denseSeconds: number;
  /** Median over pairs of dense / sparse time. */
  speedup: number;
  /** Bytes of the weight read per second: values + meta for spmm24, the f32 matrix for the GEMM. */
  sparseGbps: number;
  denseGbps: number;
}

export interface SparsityBenchResult {
  runs: number;
  quick: boolean;
  input: { rows: number; cols: number; dtype: 'f32'; bytes: number; distribution: 'N(0,1)'; seed: number };
  baselineRows: number;
  copy: CopyBandwidth[];
  prune: PruneCaseResult[];
  spmm: {
    size: number;
    /** Bytes of values + meta, and of the dense f32 weight. */
    sparseBytes: number;
    denseBytes: number;
    /** Bytes copied between calls to push the weights out of the caches. */
    evictBytes: number;
    /** Per batch: spmm24 and matmul of the decompressed weight gave the same bits. */
    identical: { n: number; elements: number; mismatches: number }[];
    rows: SpmmResult[];
  };
}

const bytesOf = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function countMismatches(a: readonly ArrayBufferView[], b: readonly ArrayBufferView[]): { bytes: number; mismatches: number } {
  let bytes = 0;
  let mismatches = 0;
  for (let p = 0; p < Math.max(a.length, b.length); p++) {
    const x = a[p] ? bytesOf(a[p] as ArrayBufferView) : new Uint8Array(0);
    const y = b[p] ? bytesOf(b[p] as ArrayBufferView) : new Uint8Array(0);
    const n = Math.max(x.length, y.length);
    bytes += n;
    for (let i = 0; i < n; i++) if (x[i] !== y[i]) mismatches++;
  }
  return { bytes, mismatches };
}

/** The last-level cache's size from sysfs (Linux), else a generous guess. */
function lastLevelCacheBytes(): number {
  const fallback = 64 << 20;
  try {
    for (let i = 9; i >= 0; i--) {
      const dir = `/sys/devices/system/cpu/cpu0/cache/index${i}`;
      if (!fs.existsSync(`${dir}/size`)) continue;
      const text = fs.readFileSync(`${dir}/size`, 'utf8').trim();
      const m = /^(\d+)([KMG]?)$/.exec(text);
      if (!m) continue;
      const scale = m[2] === 'K' ? 1024 : m[2] === 'M' ? 1 << 20 : m[2] === 'G' ? 1 << 30 : 1;
      return Number(m[1]) * scale;
    }
  } catch {
    // no sysfs: the fallback
  }
  return fallback;
}

async function measurePrune(
  t: Tensor,
  values: Float32Array,
  rows: number,
  cols: number,
  baselineRows: number,
  copy: readonly CopyBandwidth[],
  copyFn: (threads: number) => void,
  o: BenchOptions,
): Promise<PruneCaseResult[]> {
  const sliceValues = values.subarray(0, baselineRows * cols);
  const slice = Tensor.from(sliceValues, [baselineRows, cols]);
  const cases = [
    {
      id: 'prune-compress24' as const,
      label: '2:4 prune + compress (`compress24`, `prune: true`)',
      js: () => {
        const r = pruneCompress24(sliceValues, baselineRows, cols);
        return [r.values, r.meta, r.mask];
      },
      native: () => {
        const r = compress24Sync(slice, { prune: true });
        return [(r.values as Tensor).data, r.meta as Int16Array, (r.bitmask as Tensor).data];
      },
      run: (threads: number) => compress24(t, { prune: true, threads }),
      withOut: (threads: number) => {
        const out = compress24Sync(t, { prune: true, threads });
        return () => compress24(t, { prune: true, threads, out });
      },
      // The call compress24 makes, with its outputs allocated once.
      reused: (threads: number) => {
        const { args } = planCompress24(t, { prune: true, threads }, 'bench');
        return () => binding.sparseSelect(args, false);
      },
    },
    {
      id: 'prune24' as const,
      label: '2:4 prune (`prune`, dense + bitmask)',
      js: () => {
        const r = prune24(sliceValues, baselineRows, cols);
        return [r.dense, r.mask];
      },
      native: () => {
        const r = pruneSync(slice, { pattern: '2:4' });
        return [r.tensor.data, r.mask.data];
      },
      run: (threads: number) => prune(t, { pattern: '2:4', threads }),
      withOut: (threads: number) => {
        const out = pruneSync(t, { pattern: '2:4', threads });
        return () => prune(t, { pattern: '2:4', threads, out });
      },
      reused: (threads: number) => {
        const { args } = planPrune(t, { pattern: '2:4', threads }, 'bench');
        return () => binding.sparseSelect(args, false);
      },
    },
  ];
  const out: PruneCaseResult[] = [];
  for (const c of cases) {
    o.log(`sparsity: plain-JS ${c.id} on ${baselineRows} rows`);
    // Two warm-ups: V8 optimizes the loop during the first call (OSR).
    const js = await timeRuns(c.js, o.runs, 2);
    const jsGbps = gbps(sliceValues.byteLength, js.seconds);
    const identical = countMismatches(c.js(), c.native());
    const perThreads: PruneThreadResult[] = [];
    for (const { threads } of copy) {
      o.log(`sparsity: ${c.id}, ${threads} thread(s)`);
      const timing = await timePairedWithCopy(() => c.run(threads), () => copyFn(threads), o.runs);
      const rate = gbps(rows * cols * 4, timing.seconds);
      perThreads.push({ threads, seconds: timing.seconds, gbps: rate, copyRatio: timing.copyRatio, jsRatio: rate / jsGbps });
    }
    const reuse: PruneThreadResult[] = [];
    for (const { threads } of copy) {
      o.log(`sparsity: ${c.id} into reused outputs, ${threads} thread(s)`);
      const timing = await timePairedWithCopy(c.reused(threads), () => copyFn(threads), o.runs);
      const rate = gbps(rows * cols * 4, timing.seconds);
      reuse.push({ threads, seconds: timing.seconds, gbps: rate, copyRatio: timing.copyRatio, jsRatio: rate / jsGbps });
    }
    const intoOut: PruneThreadResult[] = [];
    for (const { threads } of copy) {
      o.log(`sparsity: ${c.id} through the API with options.out, ${threads} thread(s)`);
      const timing = await timePairedWithCopy(c.withOut(threads), () => copyFn(threads), o.runs);
      const rate = gbps(rows * cols * 4, timing.seconds);
      intoOut.push({ threads, seconds: timing.seconds, gbps: rate, copyRatio: timing.copyRatio, jsRatio: rate / jsGbps });
    }
    o.log(`  ${c.id}: ${perThreads.map((p) => `${fmtGBs(p.gbps)} GB/s (${fmtRatio(p.copyRatio)} copy) @${p.threads}T`).join(', ')}`);
    o.log(`  ${c.id} with out: ${intoOut.map((p) => `${fmtGBs(p.gbps)} GB/s (${fmtRatio(p.copyRatio)} copy) @${p.threads}T`).join(', ')}`);
    out.push({ id: c.id, label: c.label, jsGbps, identical, perThreads, reuse, intoOut });
  }
  return out;
}

function sameBits(a: Float32Array, b: Float32Array): number {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  let bad = 0;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) bad++;
  return bad + Math.abs(a.length - b.length);
}

async function measureSpmm(size: number, batches: readonly number[], rng: Rng, o: BenchOptions): Promise<SparsityBenchResult['spmm']> {
  o.log(`sparsity: spmm24 on a ${size}×${size} weight`);
  const w = Tensor.from(rng.normals(size * size), [size, size]);
  const a = compress24Sync(w, { prune: true });
  const dense = decompress24Sync(a) as Tensor;
  const sparseBytes = (a.values as Tensor).byteLength + (a.meta as Int16Array).byteLength;
  const denseBytes = dense.byteLength;
  const evictBytes = Math.max(2 * lastLevelCacheBytes(), 4 * denseBytes);
  const evict = copier(o.quick ? 1 << 20 : evictBytes);
  const all = threadCounts();
  const evictThreads = all[all.length - 1] as number;
  const features = describeMachine().features;
  const has = (prefix: string): boolean => features.some((f) => f.startsWith(prefix));
  // Each SIMD width against the GEMM of the same width; 'auto' (the scalar loops) without SIMD.
  const kernels: Kernel[] = has('avx512') ? ['avx2', 'avx512'] : has('avx2') ? ['avx2'] : ['auto'];
  const identical: SparsityBenchResult['spmm']['identical'] = [];
  const rows: SpmmResult[] = [];
  for (const n of batches) {
    const x = Tensor.from(rng.normals(size * n), [size, n]);
    const ys = Tensor.zeros([size, n], 'f32');
    const yd = Tensor.zeros([size, n], 'f32');
    spmm24Sync(a, x, { out: ys });
    matmulSync(dense, x, { out: yd });
    identical.push({ n, elements: size * n, mismatches: sameBits(ys.data, yd.data) });
    for (const kernel of kernels) {
      for (const threads of all) {
        o.log(`sparsity: spmm24 vs matmul, batch ${n}, ${kernel}, ${threads} thread(s)`);
        const time = (fn: () => void): number => {
          evict(evictThreads);
          const t0 = process.hrtime.bigint();
          fn();
          return Number(process.hrtime.bigint() - t0) / 1e9;
        };
        const sparse = (): void => void spmm24Sync(a, x, { out: ys, kernel, threads });
        const gemm = (): void => void matmulSync(dense, x, { out: yd, kernel, threads });
        time(sparse);
        time(gemm);
        const ts: number[] = [];
        const td: number[] = [];
        const ratio: number[] = [];
        for (let r = 0; r < o.runs; r++) {
          // Alternate which goes first, so neither always follows the other's traffic.
          let sp: number;
          let de: number;
          if (r % 2 === 0) {
            sp = time(sparse);
            de = time(gemm);
          } else {
            de = time(gemm);
            sp = time(sparse);
          }
          ts.push(sp);
          td.push(de);
          ratio.push(de / sp);
        }
        const sparseSeconds = median(ts);
        const denseSeconds = median(td);
        rows.push({
          n,
          threads,
          kernel: spmm24Kernel(kernel),
          sparseSeconds,
          denseSeconds,
          speedup: median(ratio),
          sparseGbps: gbps(sparseBytes, sparseSeconds),
          denseGbps: gbps(denseBytes, denseSeconds),
        });
      }
    }
  }
  return { size, sparseBytes, denseBytes, evictBytes: o.quick ? 1 << 20 : evictBytes, identical, rows };
}

export async function runSparsityBench(o: BenchOptions): Promise<SparsityBenchResult> {
  const size = o.quick ? QUICK : FULL;
  const rng = new Rng(SEED);
  o.log(`sparsity: generating ${size.rows}×${size.cols} N(0,1) f32`);
  const x = rng.normals(size.rows * size.cols);
  const t = Tensor.from(x, [size.rows, size.cols]);
  o.log(`sparsity: copy bandwidth on ${fmtBytes(x.byteLength)}`);
  const copy = await measureCopyBandwidth(x.byteLength, threadCounts(), o.runs);
  const copyFn = copier(x.byteLength);
  const pruneResults = await measurePrune(t, x, size.rows, size.cols, size.baselineRows, copy, copyFn, o);
  const spmm = await measureSpmm(size.spmm, size.batches, rng, o);
  return {
    runs: o.runs,
    quick: o.quick,
    input: { rows: size.rows, cols: size.cols, dtype: 'f32', bytes: x.byteLength, distribution: 'N(0,1)', seed: SEED },
    baselineRows: size.baselineRows,
    copy,
    prune: pruneResults,
    spmm,
  };
}

const pct = (v: number): string => `${(100 * v).toFixed(0)} %`;

export function formatSparsityBench(r: SparsityBenchResult): string {
  const { rows, cols, bytes } = r.input;
  const out: string[] = [];
  out.push(`### sparsity: 2:4 pruning of ${rows}×${cols} f32 (${fmtBytes(bytes)}), N(0,1), median of ${r.runs} runs`);
  out.push('');
  out.push(`Copy bandwidth (memcpy of ${fmtBytes(bytes)} via parallelCopy, median of ${r.runs}): ` + r.copy.map((c) => `${threadsLabel(c.threads)} ${fmtGBs(c.gbps)} GB/s`).join(', '));
  out.push('');
  const headers = ['operation', 'JS GB/s'];
  for (const c of r.copy) headers.push(`${threadsLabel(c.threads)} GB/s`, '× copy', '× JS');
  out.push(markdownTable(headers, r.prune.map((c) => [c.label, fmtGBs(c.jsGbps), ...c.perThreads.flatMap((p) => [fmtGBs(p.gbps), pct(p.copyRatio), fmtRatio(p.jsRatio)])])));
  out.push('');
  out.push('Into reused outputs: the async call with `options.out` (validation, the boundary, the kernel), and the native kernel alone (the raw binding, sync):');
  out.push('');
  const h2 = ['operation'];
  for (const c of r.copy) h2.push(`${threadsLabel(c.threads)} GB/s`, '× copy');
  out.push(
    markdownTable(h2, [
      ...r.prune.map((c) => [`${c.label.replace(/\)$/, ', `out`)')}`, ...c.intoOut.flatMap((p) => [fmtGBs(p.gbps), pct(p.copyRatio)])]),
      ...r.prune.map((c) => [`${c.label}, kernel alone`, ...c.reuse.flatMap((p) => [fmtGBs(p.gbps), pct(p.copyRatio)])]),
    ]),
  );
  out.push('');
  const verdicts = r.prune.map((c) => `${c.id} ${c.identical.mismatches === 0 ? 'OK' : `MISMATCH (${c.identical.mismatches} of ${c.identical.bytes} bytes)`}`);
  out.push(`JS baseline vs native, byte for byte on the first ${r.baselineRows} rows: ${verdicts.join(' · ')}`);
  out.push('');
  out.push(
    'GB/s: bytes of f32 input / median wall time of the async call (output allocation included), 1 GB = 10⁹ B. ' +
      '× copy: against a memcpy of the input\'s size at the same thread count, each call timed back to back with one copy, median of the ratios (target ≥ 70 %); ' +
      `× JS: against bench/baseline-sparsity.ts (plain JS, one thread, same bytes out), timed on the first ${r.baselineRows} rows.`,
  );
  out.push('');
  const s = r.spmm;
  out.push(`### sparsity: spmm24 vs dense matmul, ${s.size}×${s.size} f32 weight (2:4: ${fmtBytes(s.sparseBytes)} of values + meta; dense ${fmtBytes(s.denseBytes)}), median of ${r.runs} pairs`);
  out.push('');
  out.push(markdownTable(
    ['batch', 'kernel', 'threads', 'dense ms', 'spmm24 ms', 'speed-up', 'dense GB/s', 'spmm24 GB/s'],
    s.rows.map((x) => [String(x.n), x.kernel, String(x.threads), (1e3 * x.denseSeconds).toFixed(2), (1e3 * x.sparseSeconds).toFixed(2), fmtRatio(x.speedup), fmtGBs(x.denseGbps), fmtGBs(x.sparseGbps)]),
  ));
  out.push('');
  const same = s.identical.map((i) => `batch ${i.n} ${i.mismatches === 0 ? 'OK' : `MISMATCH (${i.mismatches} of ${i.elements})`}`);
  out.push(`spmm24 vs matmul(decompress24(a), x), bit for bit: ${same.join(' · ')}`);
  out.push('');
  out.push(
    '`spmm24Sync(a, x, { out })` against `matmulSync(decompress24(a), x, { out })` with the same kernel (avx2 or avx512) and thread count, ' +
      `weights evicted from the caches before every call (a ${fmtBytes(s.evictBytes)} copy), the two calls timed back to back; ` +
      'speed-up: median over pairs of dense ÷ sparse time (target ≥ 1.6× at batch 1 and 8). GB/s: bytes of the weight as stored (values + meta, or f32) per second.',
  );
  return out.join('\n');
}

export const sparsityBench: Benchmark = {
  name: 'sparsity',
  description: '2:4 prune (+ compress) GB/s vs copy bandwidth and plain JS; spmm24 vs dense matmul at batch 1, 8, 16',
  async run(o: BenchOptions): Promise<BenchOutcome> {
    const result = await runSparsityBench(o);
    return { result, markdown: formatSparsityBench(result) };
  },
};
