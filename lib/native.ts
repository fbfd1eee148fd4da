// Loads the addon (a prebuild from prebuilds/, else build/Release) and wraps
// its calls so every failure is a SlimTensorError naming the operation.
import * as path from 'node:path';
import { markAsUntransferable } from 'node:worker_threads';
import { SlimTensorError } from './errors';

/** Argument objects the addon reads (see native/addon/*_binding.cc). */
export type NativeArgs = Record<string, unknown>;

/** What the gptq binding returns (native/addon/calib_binding.cc). */
export interface NativeGptqStats {
  gptqError: number;
  rtnError: number;
  dampedError: number;
  damp: number;
  deadColumns: number;
}

export interface ErrorSums {
  sumSqErr: number;
  sumSqRef: number;
  sumSqDeq: number;
  dot: number;
  maxAbs: number;
  count: number;
}

export interface NativeSvd {
  k: number;
  /** u and vt are absent when written into the caller's buffers (args.outU, args.outVt). */
  u: Float32Array;
  s: Float64Array;
  vt: Float32Array;
  cuda: boolean;
}

export interface NativeLowRank {
  rank: number;
  /** left and right are absent when written into the caller's buffers (args.outLeft, args.outRight). */
  left: Float32Array;
  right: Float32Array;
  singularValues: Float64Array;
  relError: number;
  optimalRelError: number;
  method: 'exact' | 'randomized';
  backend: 'cpu' | 'cuda';
  samples: number;
  damping: number;
}

export interface NativeUnstructured {
  /** Per tensor: the largest pruned |w| of its selection (the tensor, or all of them when global; 0 when none). */
  thresholds: number[];
  pruned: number[];
}

export interface NativeBackends {
  cpu: { features: string[]; kernel: 'avx512' | 'avx2' | 'scalar'; threads: number; hardwareThreads: number };
  cuda: { compiled: boolean; available: boolean; reason?: string; cusolver?: { available: boolean; reason?: string; library?: string } };
  buffers: { async: 'mark' | 'copy'; reason: string };
}

interface Binding {
  backends(): NativeBackends;
  setThreads(n: number): void;
  getThreads(): number;
  setErrorClass(ctor: typeof SlimTensorError): void;
  /** Hands over worker_threads.markAsUntransferable: async calls mark the buffers they use with it (see native/addon/job.h). */
  setBufferGuard(mark: (o: object) => void): void;
  /** memcpy on `threads` threads (0 = all): bench/'s copy-bandwidth limit. */
  parallelCopy(dst: ArrayBufferView, src: ArrayBufferView, threads: number): void;
  /** Bytes from the start of `view` to the next address that is a multiple of `alignment` (a power of two): O_DIRECT's buffers. */
  alignmentOffset(view: ArrayBufferView, alignment: number): number;
  /** With args.measureError, also returns the result's error sums (as quantizationError's). */
  quantize(args: NativeArgs, async: false): ErrorSums | undefined;
  quantize(args: NativeArgs, async: true): Promise<ErrorSums | undefined>;
  dequantize(args: NativeArgs, async: false): undefined;
  dequantize(args: NativeArgs, async: true): Promise<undefined>;
  quantizationError(args: NativeArgs, async: false): ErrorSums;
  quantizationError(args: NativeArgs, async: true): Promise<ErrorSums>;
  /** Returns the reduced loss; fills the rowLoss and grad buffers of `args`. */
  distillLoss(args: NativeArgs, async: false): number;
  distillLoss(args: NativeArgs, async: true): Promise<number>;
  /** Writes op(A)·op(B) into args.out (see native/addon/lowrank_binding.cc). */
  matmul(args: NativeArgs, async: false): undefined;
  matmul(args: NativeArgs, async: true): Promise<undefined>;
  svd(args: NativeArgs, async: false): NativeSvd;
  svd(args: NativeArgs, async: true): Promise<NativeSvd>;
  lowRank(args: NativeArgs, async: false): NativeLowRank;
  lowRank(args: NativeArgs, async: true): Promise<NativeLowRank>;
  /** The sparse room (see native/addon/sparse_binding.cc): selection, compression, expansion write into args' buffers. */
  sparseSelect(args: NativeArgs, async: false): undefined;
  sparseSelect(args: NativeArgs, async: true): Promise<undefined>;
  sparseSelectQuant(args: NativeArgs, async: false): undefined;
  sparseSelectQuant(args: NativeArgs, async: true): Promise<undefined>;
  sparseExpand(args: NativeArgs, async: false): undefined;
  sparseExpand(args: NativeArgs, async: true): Promise<undefined>;
  spmm24(args: NativeArgs, async: false): undefined;
  spmm24(args: NativeArgs, async: true): Promise<undefined>;
  pruneUnstructured(args: NativeArgs, async: false): NativeUnstructured;
  pruneUnstructured(args: NativeArgs, async: true): Promise<NativeUnstructured>;
  /** GPTQ (native/addon/calib_binding.cc): fills data/scales/zeros of `args`, returns the error statistics. */
  gptq(args: NativeArgs, async: false): NativeGptqStats;
  gptq(args: NativeArgs, async: true): Promise<NativeGptqStats>;
  /** Activation statistics (native/addon/calib_binding.cc): adds x's rows to sumSquares/sumAbs (f64) and hessian (f32, via scratch). */
  activationStats(args: NativeArgs, async: false): undefined;
  activationStats(args: NativeArgs, async: true): Promise<undefined>;
  /** The CPU kernel a spmm24 kernel code resolves to ('reference', 'avx2', 'avx512', 'unavailable'). */
  spmm24Kernel(kernel: number): string;
  /** The runtime (native/addon/model_binding.cc): a model handle, loading, forward steps. */
  modelNew(): object;
  modelLoad(args: NativeArgs, async: true): Promise<{ weightBytes: number; filled: number; linears: string[] }>;
  /** begin/layers/finish of a forward step; resolves to the cache's filled positions. */
  modelStep(args: NativeArgs, async: true): Promise<number>;
  modelCancel(model: object, cancel: boolean): void;
  modelDispose(model: object): void;
  modelInfo(model: object): { weightBytes: number; filled: number; linears: string[] };
  /** One linear layer Y = X·Wᵀ from buffers (tests, benchmarks). */
  modelLinear(args: NativeArgs, async: false): undefined;
  modelLinear(args: NativeArgs, async: true): Promise<undefined>;
  /** Scores rows of logits (nll, and against base logits KL and top-1 agreement) into args' Float64Array/Uint8Array buffers. */
  modelScore(args: NativeArgs, async: true): Promise<undefined>;
  /** The kernel set and activations a weight would run with ("avx512/q8", ...). */
  modelLinearKernel(args: NativeArgs): string;
  cast(args: NativeArgs, async: false): undefined;
  cast(args: NativeArgs, async: true): Promise<undefined>;
  /** bench/: clock and FMA-throughput probes (seconds for `iterations`). */
  lowrankProbe(iterations: number): { addSeconds: number; fma256Seconds: number; fma512Seconds: number; gemmKernel: string };
}

function load(): Binding {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const gypBuild = require('node-gyp-build') as (dir: string) => Binding;
  const b = gypBuild(path.join(__dirname, '..'));
  b.setErrorClass(SlimTensorError);
  b.setBufferGuard(markAsUntransferable);
  return b;
}

export const binding: Binding = load();

function prefixed(where: string, e: unknown): unknown {
  if (e instanceof SlimTensorError && !e.message.startsWith(`${where}: `)) {
    const err = new SlimTensorError(`${where}: ${e.message}`, e.code);
    return err;
  }
  return e;
}

/** Runs a synchronous native call, prefixing its errors with `where`. */
export function callSync<T>(where: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw prefixed(where, e);
  }
}

/** Awaits an asynchronous native call, prefixing its errors with `where`. */
export async function callAsync<T>(where: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw prefixed(where, e);
  }
}
