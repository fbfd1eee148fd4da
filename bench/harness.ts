// What every benchmark shares: the registry's contract, timing (warm-up,
// median of N), the machine's copy bandwidth as the memory-bound limit,
// a description of the machine, and markdown output.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { backends } from '../lib/index';
import { binding } from '../lib/native';

export interface BenchOptions {
  /** Timed repetitions per measurement; the median is reported. */
  runs: number;
  /** A small problem size, for smoke tests: the numbers mean little. */
  quick: boolean;
  /** Progress for the human waiting; goes to stderr so stdout stays clean. */
  log: (message: string) => void;
  /** The llama-quantize binary to compare with (`--llama-quantize PATH`; the pipeline and llama-quantize benchmarks). */
  llamaQuantize?: string;
  /** `--ggml PATH`: ggml's quantizer benchmark (a benchmark-only peer) to compare against. */
  ggml?: string;
}

/**
 * A peer tool for a benchmark (never a dependency): `given` (a command-line
 * option, named `flag` in messages) when it exists, else `binary` in
 * shared/peers/llama.cpp/ beside or above the package (this project's
 * shared folder).
 */
export function findPeer(binary: string, given: string | undefined, flag: string): { path: string } | { missing: string } {
  if (given !== undefined) return existsSync(given) ? { path: given } : { missing: `${flag} ${given} does not exist` };
  const root = path.join(__dirname, '..');
  for (const up of ['..', path.join('..', '..')]) {
    const p = path.join(root, up, 'shared', 'peers', 'llama.cpp', binary);
    if (existsSync(p)) return { path: p };
  }
  return { missing: `${binary} not found (../shared/peers/llama.cpp/${binary}); pass ${flag} PATH` };
}

const GNU_TIME = '/usr/bin/time';

export interface ProcessRun {
  /** Wall time of the process, seconds. */
  seconds: number;
  /** Peak resident set, bytes (GNU time's %M); 0 without /usr/bin/time. */
  peakRss: number;
  /** User + system CPU seconds of the process (GNU time's %U + %S); 0 without /usr/bin/time. */
  cpuSeconds: number;
  stdout: string;
}

/** Runs a command in `cwd` under GNU time (when present): wall seconds, maximum RSS and CPU time. */
export async function timeProcess(cmd: string, args: readonly string[], cwd: string): Promise<ProcessRun> {
  const gnu = existsSync(GNU_TIME);
  const t0 = performance.now();
  const { stdout, stderr } = await promisify(execFile)(gnu ? GNU_TIME : cmd, gnu ? ['-f', 'maxrss-kb %M cpu %U %S', cmd, ...args] : [...args], { cwd, maxBuffer: 64 * 1024 * 1024 });
  const seconds = (performance.now() - t0) / 1000;
  const m = /maxrss-kb (\d+) cpu ([\d.]+) ([\d.]+)/.exec(stderr);
  return { seconds, peakRss: m === null ? 0 : Number(m[1]) * 1024, cpuSeconds: m === null ? 0 : Number(m[2]) + Number(m[3]), stdout };
}

export interface BenchOutcome {
  /** Plain JSON-able data for --json. */
  result: object;
  /** The human report, markdown so it can be pasted into the README. */
  markdown: string;
}

export interface Benchmark {
  name: string;
  description: string;
  run(options: BenchOptions): Promise<BenchOutcome>;
}

export const GB = 1e9; // decimal, as bandwidth is usually quoted

export function median(values: readonly number[]): number {
  if (values.length === 0) throw new RangeError('median of no values');
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

export interface Timing {
  /** Median wall time of the timed runs, seconds. */
  seconds: number;
  /** Every timed run, seconds, in order (shows drift and outliers). */
  runs: number[];
}

/**
 * Times `fn` `runs` times after `warmup` untimed calls and returns the
 * median. The warm-up pays one-time costs a steady state doesn't have:
 * first-touch page faults on fresh buffers, JIT tier-up of JS code, thread
 * pool start. The median, not the mean, because on a shared machine the
 * noise is one-sided (something else ran) and the median ignores it.
 */
export async function timeRuns(fn: () => unknown, runs: number, warmup = 1): Promise<Timing> {
  for (let i = 0; i < warmup; i++) await fn();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return { seconds: median(times), runs: times };
}

/** Throughput in GB/s of `bytes` processed in `seconds`. */
export function gbps(bytes: number, seconds: number): number {
  return bytes / seconds / GB;
}

export interface CopyBandwidth {
  threads: number;
  /** Bytes copied (source size) per second, in GB/s: the memcpy convention. */
  gbps: number;
  seconds: number;
}

/**
 * The machine's memory-bound limit, measured now rather than quoted from a
 * spec sheet: a memcpy of `bytes` split over each thread count, median of
 * `runs`. Measured on a buffer the size of the benchmark's input so caches
 * help (or don't) the same way; measured in the same process and minute as
 * the kernels, so a noisy neighbour affects both sides of the ratio.
 */
export async function measureCopyBandwidth(bytes: number, threadCounts: readonly number[], runs: number): Promise<CopyBandwidth[]> {
  const copy = copier(bytes);
  const out: CopyBandwidth[] = [];
  for (const threads of threadCounts) {
    const t = await timeRuns(() => copy(threads), runs, 2);
    out.push({ threads, seconds: t.seconds, gbps: gbps(bytes, t.seconds) });
  }
  return out;
}

/** A memcpy of `bytes` between two touched buffers, on `threads` threads. */
export function copier(bytes: number): (threads: number) => void {
  const src = new Uint8Array(bytes);
  const dst = new Uint8Array(bytes);
  // A fresh buffer may be backed by the shared zero page until written;
  // reading it would be faster than reading real memory.
  for (let i = 0; i < bytes; i += 4096) src[i] = i & 0xff;
  dst.fill(1);
  return (threads) => binding.parallelCopy(dst, src, threads);
}

export interface Paired {
  /** The measured function's median seconds. */
  seconds: number;
  /** Median over runs of (copy seconds / measured seconds), each pair timed back to back. */
  copyRatio: number;
}

/**
 * Times `fn` and a copy of the same size alternately, `runs` times each,
 * and reports the median of the per-pair ratios. On a shared machine the
 * bandwidth drifts by tens of percent within a minute; a ratio of two
 * neighbouring measurements is far steadier than one of two medians taken
 * minutes apart.
 */
export async function timePairedWithCopy(fn: () => unknown, copy: () => void, runs: number, warmup = 1): Promise<Paired> {
  for (let i = 0; i < warmup; i++) {
    copy();
    await fn();
  }
  const times: number[] = [];
  const ratios: number[] = [];
  for (let i = 0; i < runs; i++) {
    let t0 = process.hrtime.bigint();
    copy();
    const c = Number(process.hrtime.bigint() - t0) / 1e9;
    t0 = process.hrtime.bigint();
    await fn();
    const t = Number(process.hrtime.bigint() - t0) / 1e9;
    times.push(t);
    ratios.push(c / t);
  }
  return { seconds: median(times), copyRatio: median(ratios) };
}

/** 1, then every thread the library would use: the two ends of scaling. */
export function threadCounts(): number[] {
  const all = backends().cpu.threads;
  return all > 1 ? [1, all] : [1];
}

export interface MachineInfo {
  cpuModel: string;
  features: string[];
  kernel: string;
  threads: number;
  hardwareThreads: number;
  cuda: string;
  node: string;
  platform: string;
}

export function describeMachine(): MachineInfo {
  const b = backends();
  return {
    cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown CPU',
    features: b.cpu.features,
    kernel: b.cpu.kernel,
    threads: b.cpu.threads,
    hardwareThreads: b.cpu.hardwareThreads,
    cuda: b.cuda.available ? 'available' : `unavailable (${b.cuda.reason ?? 'no reason given'})`,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
  };
}

export function formatMachine(m: MachineInfo): string {
  return [
    `Machine: ${m.cpuModel}, ${m.platform}, Node ${m.node}`,
    `CPU features: ${m.features.join(', ') || 'none detected'}; kernel: ${m.kernel}; threads: ${m.threads} (hardware: ${m.hardwareThreads})`,
    `CUDA: ${m.cuda}`,
  ].join('  \n'); // two trailing spaces: a markdown line break
}

export type Align = 'left' | 'right';

/**
 * A markdown table, padded so it also reads well as plain text in a
 * terminal. `align` defaults to left for the first column, right for the
 * rest (numbers).
 */
export function markdownTable(headers: readonly string[], rows: readonly (readonly string[])[], align?: readonly Align[]): string {
  const al = headers.map((_, i) => align?.[i] ?? (i === 0 ? 'left' : 'right'));
  const widths = headers.map((h, i) => Math.max(3, h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const cell = (text: string, i: number): string => {
    const w = widths[i] as number;
    return al[i] === 'right' ? text.padStart(w) : text.padEnd(w);
  };
  const line = (cells: readonly string[]): string => `| ${headers.map((_, i) => cell(cells[i] ?? '', i)).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (al[i] === 'right' ? `${'-'.repeat(w + 1)}:` : `:${'-'.repeat(w + 1)}`)).join('|')}|`;
  return [line(headers), rule, ...rows.map(line)].join('\n');
}

/** GB/s to 2 decimals: enough to see a 1 % change at typical rates. */
/** '1 thread', '2 threads': the column and line labels of every bench. */
export function threadsLabel(n: number): string {
  return `${n} thread${n === 1 ? '' : 's'}`;
}

export function fmtGBs(v: number): string {
  return v.toFixed(2);
}

/** A ratio as "0.53×" or "41×"; '—' when there is nothing to compare with. */
export function fmtRatio(v: number | null): string {
  if (v === null || !Number.isFinite(v)) return '—';
  return `${v >= 10 ? v.toFixed(0) : v.toFixed(2)}×`;
}

export function fmtBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(1)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(0)} MiB`;
  return `${(n / 2 ** 10).toFixed(0)} KiB`;
}
