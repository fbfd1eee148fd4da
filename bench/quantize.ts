// The quantize benchmark: every format's throughput at 1 thread and at all
// threads, against the machine's copy bandwidth (quantizing is memory-bound:
// read the f32 once, write a fraction of it) and against a plain-JS
// quantizer, with each format's RMSE alongside so speed and quality are read
// together.
//
// The GGUF K-quants and Q5_0/Q5_1 run ggml's searches, which are
// compute-bound: their table compares them with ggml's own reference
// quantizer of the same type, timed in the same run by the benchmark-only
// peer ggml-quant-bench (../shared/peers/llama.cpp, or --ggml PATH), and
// with the arithmetic ceiling of each search (its f32 operations per value
// against the measured FMA peak). A second peer, bench/peers/ggml-chunk.c
// (compiled here against the same ggml library), runs ggml_quantize_chunk on
// this benchmark's own input, without and with its importance, so every row
// is compared with ggml's same path, time and bytes.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { backends, quantizationError, quantize, Tensor, type QuantFormat, type QuantizedTensor, type QuantizeOptions } from '../lib/index';
import { measurePeak, type Peak } from './lowrank';
import { quantizeIntSymmetric, quantizeQ4_0, quantizeQ4_1, quantizeQ8_0 } from './baseline-js';
import {
  fmtBytes,
  fmtGBs,
  fmtRatio,
  gbps,
  markdownTable,
  median,
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
  findPeer,
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
  ggml: GgmlBenchResult;
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

// ---------------------------------------------------------------------------
// GGUF K-quants and Q5_0/Q5_1 against ggml.

const GGML_CASES: QuantFormat[] = ['q4_k', 'q5_k', 'q6_k', 'q3_k', 'q2_k', 'q5_0', 'q5_1'];

/**
 * f32 operations per input value of each quantizer as slimtensor runs it
 * (ggml's own operation count): vector operations per element of a group,
 * counted from quant_ksimd.h, times the candidates each group tries, plus
 * the per-value work before and after the search. Min search (Q2_K, Q4_K,
 * Q5_K, weighted Q4_1/Q5_1): 7 (range, sums) + 12 (first error) + 18 per
 * candidate (12 for the codes and three sums, 6 for the error) + weights
 * (4 or 5) + 8 to requantize; nstep+1 candidates: 21 (Q4_K), 16 (Q5_K, Q2_K)
 * or 37 (every weighted search). Symmetric search (Q6_K, weighted Q3_K and
 * Q4_0/Q5_0): 6 + 10 + 18 candidates × 10 + 8. Q3_K's coordinate descent:
 * 18 + 27 per sweep and element; the number of sweeps depends on the data
 * (up to 5; 4 is assumed here). Plain Q5_0/Q5_1 have no search: they are
 * memory-bound (the × copy column), null here.
 */
const OPS_PER_VALUE: Record<string, { plain: number | null; weighted: number }> = {
  q4_k: { plain: 7 + 12 + 21 * 18 + 4 + 8, weighted: 7 + 12 + 37 * 18 + 5 + 8 },
  q5_k: { plain: 7 + 12 + 16 * 18 + 4 + 8, weighted: 7 + 12 + 37 * 18 + 5 + 8 },
  q2_k: { plain: 7 + 12 + 16 * 18 + 1 + 8, weighted: 7 + 12 + 37 * 18 + 5 + 8 },
  q6_k: { plain: 6 + 10 + 18 * 10 + 8, weighted: 6 + 10 + 18 * 10 + 8 },
  q3_k: { plain: 18 + 4 * 27 + 8, weighted: 6 + 10 + 18 * 10 + 5 + 8 },
  q5_0: { plain: null, weighted: 6 + 10 + 18 * 10 + 5 + 8 },
  q5_1: { plain: null, weighted: 7 + 12 + 37 * 18 + 5 + 8 },
};

/** Per-column importance of the benchmark: mostly 0.05–2, every 37th column ×20 (an imatrix's few hot channels). */
function benchImportance(cols: number): Float32Array {
  const rng = new Rng(SEED + 1);
  return Float32Array.from({ length: cols }, (_, c) => (0.05 + 2 * rng.uniform()) * (c % 37 === 0 ? 20 : 1));
}

export interface GgmlPeerType {
  /** ggml's best single-thread time over the peer's runs, its GB/s of f32 input and RMSE. */
  seconds: number;
  gbps: number;
  /** gbps × the run's wall/CPU time ratio: its rate per second of CPU time (the peer times itself by the wall clock). */
  cpuGbps: number;
  rmse: number;
}

export interface GgmlPeer {
  path: string;
  rows: number;
  cols: number;
  /** By slimtensor's format name (q4_k, ...). */
  types: Record<string, GgmlPeerType>;
}

export interface GgmlCaseResult {
  id: string;
  format: QuantFormat;
  importance: boolean;
  bitsPerWeight: number;
  rmse: number;
  /** auto kernel at 1 thread and all threads. */
  perThreads: ThreadResult[];
  /** The AVX2 kernel at 1 thread (null without AVX2 kernels). */
  avx2: ThreadResult | null;
  /** 1 thread, per second of CPU time (on a shared machine the wall clock also counts other processes' turns), into a reused output as the ggml peers. */
  cpuGbps: number;
  /** cpuGbps / ggml's reference quantizer of the type per second of CPU time (ggml-quant-bench times from_float_ref); null without the peer. */
  ggmlRatio: number | null;
  /**
   * ggml_quantize_chunk on the same input with the same importance (or none),
   * one thread, per second of thread CPU time; the ratio cpuGbps / that rate;
   * whether ggml's blocks equal slimtensor's. Null without the chunk peer.
   */
  ggmlSamePath: { cpuGbps: number; ratio: number; identical: boolean } | null;
  opsPerValue: number | null;
  /** 4 bytes × per-core FMA peak (flop/s) / opsPerValue, GB/s, and the fraction cpuGbps reaches; null without a search. */
  ceilingGbps: number | null;
  ofCeiling: number | null;
}

export interface GgmlBenchResult {
  kernel: string;
  peak: Peak;
  /** The per-core peak of the auto kernel's vector width, GFLOP/s. */
  peakGflops: number;
  peer: GgmlPeer | null;
  /** Why there is no peer, when there is none. */
  peerMissing: string | null;
  /** The ggml library the chunk peer ran on, or why it did not run. */
  chunkPeer: { library: string; runs: number } | { missing: string };
  cases: GgmlCaseResult[];
}

const PEER_NAMES: Record<string, string> = { q4_K: 'q4_k', q5_K: 'q5_k', q6_K: 'q6_k', q3_K: 'q3_k', q2_K: 'q2_k', q5_0: 'q5_0', q5_1: 'q5_1', q4_0: 'q4_0', q4_1: 'q4_1', q8_0: 'q8_0' };

function ggmlPeer(o: BenchOptions): { path: string } | { missing: string } {
  return findPeer('ggml-quant-bench', o.ggml, '--ggml');
}

/**
 * Runs the peer twice (its K-quants are timed once per run) and keeps each
 * type's best time. Its lines: "TYPE SECONDS s GBPS GB/s-in rmse RMSE". It
 * times itself by the wall clock; run under bash, `times` also gives its
 * CPU time, and wall/CPU of the whole run rescales its rates to per second
 * of CPU time, comparable with cpuGbps on a machine others share.
 */
function runPeer(peerPath: string, o: BenchOptions): GgmlPeer {
  const types: Record<string, GgmlPeerType> = {};
  for (let run = 0; run < 2; run++) {
    o.log(`quantize: ggml reference quantizers (${peerPath}), run ${run + 1} of 2`);
    const t0 = process.hrtime.bigint();
    const out = execFileSync('bash', ['-c', '"$0" 3; times', peerPath], { encoding: 'utf8', maxBuffer: 1 << 20 });
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    // `times`: the shell's user and system time, then its children's
    const child = out.trim().split('\n').pop()?.match(/(\d+)m([\d.]+)s\s+(\d+)m([\d.]+)s/);
    const cpu = child ? 60 * Number(child[1]) + Number(child[2]) + 60 * Number(child[3]) + Number(child[4]) : wall;
    const share = Math.min(1, cpu / wall);
    for (const line of out.split('\n')) {
      const m = /^(\S+) ([\d.]+) s ([\d.]+) GB\/s-in rmse ([\d.]+)/.exec(line.trim());
      const name = m ? PEER_NAMES[m[1] as string] : undefined;
      if (!m || !name) continue;
      const t: GgmlPeerType = { seconds: Number(m[2]), gbps: Number(m[3]), cpuGbps: Number(m[3]) / share, rmse: Number(m[4]) };
      const prev = types[name];
      if (!prev || t.cpuGbps > prev.cpuGbps) types[name] = t;
    }
  }
  return { path: peerPath, rows: 4096, cols: 4096, types };
}

interface ChunkPeer {
  library: string;
  runs: number;
  dir: string;
  /** Thread CPU seconds by `${format}.${'plain' | 'imatrix'}`. */
  cpuSeconds: Record<string, number>;
}

/**
 * Builds bench/peers/ggml-chunk.c against the ggml library beside the
 * ggml-quant-bench peer (the d99724f build the test vectors come from) and
 * runs it on the benchmark's input and importance; its blocks stay in a
 * temporary folder for the byte comparison (removed by the caller).
 */
function runChunkPeer(peerPath: string, full: Input, importance: Float32Array, o: BenchOptions): ChunkPeer | { missing: string } {
  const libDir = path.dirname(peerPath);
  const lib = ['libggml-base-d99724f.so', 'libggml-base.so'].find((l) => fs.existsSync(path.join(libDir, l)));
  if (!lib) return { missing: `no libggml-base beside ${peerPath}` };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slimtensor-ggml-chunk-'));
  const exe = path.join(dir, 'ggml-chunk');
  try {
    execFileSync('cc', ['-O2', '-std=c11', '-D_POSIX_C_SOURCE=200809L', '-o', exe, path.join(__dirname, 'peers', 'ggml-chunk.c'),
      `-L${libDir}`, `-l:${lib}`, `-Wl,-rpath,${libDir}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    return { missing: `cannot build bench/peers/ggml-chunk.c with cc: ${(e as Error).message.split('\n')[0]}` };
  }
  const write = (name: string, a: Float32Array): string => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    return file;
  };
  const runs = 2;
  o.log(`quantize: ggml_quantize_chunk without and with importance (${path.join(libDir, lib)}), best of ${runs} runs`);
  let out: string;
  try {
    out = execFileSync(exe, [write('x.f32', full.values), write('importance.f32', importance), String(full.rows), String(full.cols),
      String(runs), dir, ...GGML_CASES], { encoding: 'utf8', maxBuffer: 1 << 20, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    return { missing: `bench/peers/ggml-chunk.c failed: ${(e as Error).message.split('\n')[0]}` };
  }
  const cpuSeconds: Record<string, number> = {};
  for (const line of out.split('\n')) {
    const m = /^(\S+) (plain|imatrix) ([\d.]+) ([\d.]+)$/.exec(line.trim());
    if (m) cpuSeconds[`${m[1]}.${m[2]}`] = Number(m[3]);
  }
  return { library: path.join(libDir, lib), runs, dir, cpuSeconds };
}

/** Median GB/s of `fn` per second of the process's CPU time (one worker thread busy, the main thread waiting). */
async function cpuTimeGbps(fn: () => Promise<unknown>, bytes: number, runs: number): Promise<number> {
  await fn();
  const rates: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.cpuUsage();
    await fn();
    const d = process.cpuUsage(t0);
    rates.push(gbps(bytes, (d.user + d.system) / 1e6));
  }
  return median(rates);
}

async function measureGgml(full: Input, copy: readonly CopyBandwidth[], copyFn: (threads: number) => void, o: BenchOptions): Promise<GgmlBenchResult> {
  const kernel = backends().cpu.kernel;
  o.log('quantize: clock and FMA probes (the searches\' arithmetic ceiling)');
  const peak = measurePeak(o.runs);
  const peakGflops = kernel === 'avx512' && peak.avx512Gflops !== null ? peak.avx512Gflops : peak.avx2Gflops;
  // The peer takes seconds per type at its fixed 4096×4096: skipped by --quick unless asked for.
  const found = o.quick && o.ggml === undefined ? { missing: 'not run with --quick (pass --ggml PATH to run it)' } : ggmlPeer(o);
  const peer = 'path' in found ? runPeer(found.path, o) : null;
  const importance = benchImportance(full.cols);
  const chunk = 'path' in found ? runChunkPeer(found.path, full, importance, o) : found;
  const t = full.tensor;
  const cases: GgmlCaseResult[] = [];
  try {
    for (const format of GGML_CASES) {
      for (const weighted of [false, true]) {
        const base: QuantizeOptions = weighted ? { format, importance } : { format };
        const perThreads: ThreadResult[] = [];
        let last: QuantizedTensor | undefined;
        for (const { threads } of copy) {
          const timing = await timePairedWithCopy(
            async () => {
              last = await quantize(t, { ...base, threads });
            },
            () => copyFn(threads),
            o.runs,
          );
          perThreads.push({ threads, seconds: timing.seconds, gbps: gbps(t.byteLength, timing.seconds), copyRatio: timing.copyRatio, jsRatio: null });
        }
        let avx2: ThreadResult | null = null;
        if (kernel !== 'scalar') {
          const timing = await timePairedWithCopy(() => quantize(t, { ...base, threads: 1, kernel: 'avx2' }), () => copyFn(1), o.runs);
          avx2 = { threads: 1, seconds: timing.seconds, gbps: gbps(t.byteLength, timing.seconds), copyRatio: timing.copyRatio, jsRatio: null };
        }
        if (!last) throw new Error(`quantize benchmark: ${format} never ran`);
        // Into a reused output, as both ggml peers quantize into one buffer
        // across their runs: first-touch page faults of a fresh output cost
        // up to 40 % of a K-quant call on this VM and are not the kernel's.
        const out = last;
        const cpuGbps = await cpuTimeGbps(() => quantize(t, { ...base, threads: 1, out }), t.byteLength, o.runs);
        const ops = (OPS_PER_VALUE[format] as { plain: number | null; weighted: number })[weighted ? 'weighted' : 'plain'];
        const ceilingGbps = ops === null ? null : (4 * peakGflops) / ops;
        const peerType = peer?.types[format];
        const one = perThreads[0] as ThreadResult;
        const err = await quantizationError(t, last);
        let ggmlSamePath: GgmlCaseResult['ggmlSamePath'] = null;
        const key = `${format}.${weighted ? 'imatrix' : 'plain'}`;
        const chunkSeconds = 'dir' in chunk ? chunk.cpuSeconds[key] : undefined;
        if ('dir' in chunk && chunkSeconds !== undefined) {
          const theirs = fs.readFileSync(path.join(chunk.dir, key));
          const chunkGbps = gbps(t.byteLength, chunkSeconds);
          ggmlSamePath = { cpuGbps: chunkGbps, ratio: cpuGbps / chunkGbps, identical: Buffer.compare(theirs, Buffer.from(bytesOf(last.data))) === 0 };
        }
        cases.push({
          id: `${format}${weighted ? '-imatrix' : ''}`,
          format,
          importance: weighted,
          bitsPerWeight: last.bitsPerWeight,
          rmse: err.rmse,
          perThreads,
          avx2,
          cpuGbps,
          ggmlRatio: peerType ? cpuGbps / peerType.cpuGbps : null,
          ggmlSamePath,
          opsPerValue: ops,
          ceilingGbps,
          ofCeiling: ceilingGbps === null ? null : cpuGbps / ceilingGbps,
        });
        o.log(`  ${format}${weighted ? ' imatrix' : ''}: ${perThreads.map((p) => `${fmtGBs(p.gbps)} GB/s @${p.threads}T`).join(', ')}, ${fmtGBs(cpuGbps)} per CPU second @1T${peerType ? ` (ggml ${fmtGBs(peerType.cpuGbps)})` : ''}${ggmlSamePath ? ` (ggml same path ${ggmlSamePath.cpuGbps.toFixed(3)}, ${ggmlSamePath.identical ? 'identical bytes' : 'BYTES DIFFER'})` : ''} (wall ${fmtGBs(one.gbps)})`);
      }
    }
  } finally {
    if ('dir' in chunk) fs.rmSync(chunk.dir, { recursive: true, force: true });
  }
  const chunkPeer = 'dir' in chunk ? { library: chunk.library, runs: chunk.runs } : chunk;
  return { kernel, peak, peakGflops, peer, peerMissing: 'missing' in found ? found.missing : null, chunkPeer, cases };
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
  const ggml = await measureGgml(full, copy, copyFn, o);
  return {
    input: { rows: size.rows, cols: COLS, dtype: 'f32', bytes: x.byteLength, distribution: 'N(0,1)', seed: SEED },
    runs: o.runs,
    baselineRows: size.baselineRows,
    copy,
    cases,
    ggml,
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
  out.push(...formatGgml(r.ggml, r));
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

function formatGgml(g: GgmlBenchResult, r: QuantizeBenchResult): string[] {
  const out: string[] = [];
  out.push(`#### GGUF K-quants and Q5_0/Q5_1 against ggml (${g.kernel} kernel; ${r.input.rows}×${r.input.cols} N(0,1))`);
  out.push('');
  const peer = g.peer;
  out.push(
    peer
      ? `ggml: ${peer.path}, its reference quantizers (from_float_ref, one thread, best of 2 runs) on its own ${peer.rows}×${peer.cols} N(0,1).`
      : `ggml: not measured — ${g.peerMissing}.`,
  );
  out.push(
    'library' in g.chunkPeer
      ? `ggml same path: bench/peers/ggml-chunk.c on ${g.chunkPeer.library}, ggml_quantize_chunk on this input with this importance (or none), one thread, best of ${g.chunkPeer.runs} runs by thread CPU time, its blocks compared with slimtensor's.`
      : `ggml same path: not measured — ${g.chunkPeer.missing}.`,
  );
  out.push(
    `Ceiling: per-core FMA peak ${g.peakGflops.toFixed(1)} GFLOP/s (clock ${g.peak.clockGHz.toFixed(2)} GHz × FMA ports × lanes × 2) × 4 bytes ÷ f32 operations per value.`,
  );
  out.push('');
  const headers = ['format', 'importance', 'bits/weight'];
  for (const c of r.copy) headers.push(`${threadsLabel(c.threads)} GB/s`, '× copy');
  headers.push('1T GB/s per CPU s', 'AVX2 1T GB/s', 'ggml ref 1T GB/s per CPU s', '× ggml ref (1T)', 'ggml same path 1T GB/s per CPU s', '× ggml same path (1T)', 'bytes vs ggml');
  headers.push('ops/value', 'ceiling 1T GB/s', 'of ceiling', 'RMSE', 'ggml RMSE');
  const rows = g.cases.map((c) => {
    const cells = [c.format, c.importance ? 'yes' : '—', c.bitsPerWeight.toFixed(4).replace(/0+$/, '').replace(/\.$/, '')];
    for (const p of c.perThreads) cells.push(fmtGBs(p.gbps), fmtRatio(p.copyRatio));
    const pt = peer?.types[c.format];
    cells.push(fmtGBs(c.cpuGbps), c.avx2 ? fmtGBs(c.avx2.gbps) : '—', pt ? pt.cpuGbps.toFixed(3) : '—', c.ggmlRatio === null ? '—' : `${c.ggmlRatio.toFixed(1)}×`);
    const sp = c.ggmlSamePath;
    cells.push(sp ? sp.cpuGbps.toFixed(3) : '—', sp ? `${sp.ratio.toFixed(1)}×` : '—', sp ? (sp.identical ? 'identical' : 'DIFFER') : '—');
    cells.push(c.opsPerValue === null ? '—' : String(c.opsPerValue), c.ceilingGbps === null ? '—' : fmtGBs(c.ceilingGbps));
    cells.push(c.ofCeiling === null ? '—' : `${(100 * c.ofCeiling).toFixed(0)}%`, c.rmse.toPrecision(4), pt ? pt.rmse.toPrecision(4) : '—');
    return cells;
  });
  out.push(markdownTable(headers, rows));
  out.push('');
  out.push(
    'GB/s: wall clock (median), into a fresh output; per CPU s: the same call\'s bytes per second of CPU time, which a busy shared machine does not inflate (ggml\'s: its wall-clock rates × its run\'s CPU/wall share, or its thread CPU time), ' +
      'into a reused output (`options.out`) as both ggml peers reuse theirs. ' +
      '× ggml ref: slimtensor at one thread (auto kernel) ÷ ggml\'s reference quantizer of the same type at one thread, both per CPU second (rows with importance too). ' +
      '× ggml same path: ÷ ggml_quantize_chunk with the same importance (none: the reference quantizer again, timed on this input), per CPU second; bytes vs ggml: that call\'s blocks against slimtensor\'s. ' +
      'ops/value: the f32 operations each search performs per input value (bench/quantize.ts OPS_PER_VALUE); the ceiling counts each as one flop against the FMA peak, which on this core is also the rate of separate multiply and add ports together.',
  );
  out.push('');
  return out;
}

export const quantizeBench: Benchmark = {
  name: 'quantize',
  description: 'q4_0/q4_1/q8_0/int4/int8 (+ MSE search) vs copy bandwidth and plain JS; K-quants and Q5 vs ggml and their arithmetic ceiling; RMSE',
  async run(o: BenchOptions): Promise<BenchOutcome> {
    const result = await runQuantizeBench(o);
    return { result, markdown: formatQuantizeBench(result) };
  },
};
