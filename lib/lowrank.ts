// Low-rank factorization and the dense GEMM it is built on. Validation and
// output allocation live here; the arithmetic is native
// (native/core/lowrank/).
import { fail } from './errors';
import { binding, callAsync, callSync, type NativeArgs, type NativeLowRank, type NativeSvd } from './native';
import { assertFixedLength, checkOutMemory, checkOutTensor, checkTensor, dtypeCode, outParts, Tensor } from './tensor';
import { checkOptions, FLOAT_DTYPES, kernelCode, threadCount, type Kernel } from './options';

/**
 * Which implementation runs (see Kernel in lib/options.ts). For svd and
 * lowRank 'auto' tries the GPU first when `backends().cuda.cusolver` is
 * available.
 */
export type LowRankKernel = Kernel;

const METHODS = { auto: 0, exact: 1, randomized: 2 } as const;

/**
 * The rank the `ratio` rule picks for a [rows, cols] matrix: the largest r
 * with r·(rows + cols) <= ratio·rows·cols, at most min(rows, cols) (the
 * native code applies the same rule; 0 means not even rank 1 fits).
 */
export function rankForRatio(ratio: number, rows: number, cols: number): number {
  return Math.min(Math.floor((ratio * rows * cols) / (rows + cols)), Math.min(rows, cols));
}

export interface MatmulOptions {
  /** Use A transposed: A is stored [k, m]. */
  transA?: boolean;
  /** Use B transposed: B is stored [n, k]. */
  transB?: boolean;
  kernel?: LowRankKernel;
  /** Threads for this call (default: setThreads / all cores). */
  threads?: number;
  /** Write into this f32 tensor of shape [m, n] instead of allocating one; it is returned. */
  out?: Tensor<'f32'>;
  /** out += op(A)·op(B) instead of out = … (needs `out`). */
  accumulate?: boolean;
}

export interface SvdOptions {
  /** Keep the top k singular triplets (default: all min(m, n)). */
  k?: number;
  kernel?: LowRankKernel;
  threads?: number;
  /** Write u (f32 [m, k]) and vt (f32 [k, n]) into these instead of allocating (a previous result will do); the result holds them. */
  out?: { u: Tensor<'f32'>; vt: Tensor<'f32'> };
}

/** A = u · diag(s) · vt (thin: u [m, k], vt [k, n]), s descending. */
export interface SvdResult {
  u: Tensor<'f32'>;
  s: Float64Array;
  vt: Tensor<'f32'>;
  backend: 'cpu' | 'cuda';
}

/** Activation statistics for activation-aware factorization. */
export type Whitening =
  /** SVD-LLM: XᵀX (n×n, row-major) of the layer's inputs X (samples × n). */
  | { gram: Float32Array }
  /** ASVD: a positive scale per input column (e.g. mean |x_j|^α). */
  | { activationScale: Float32Array };

export interface LowRankOptions {
  /** Keep this many singular values (1..min(m, n)). */
  rank?: number;
  /** Keep the smallest rank whose singular values hold this fraction of Σσ², in (0, 1]. */
  energy?: number;
  /** Parameter budget: the largest rank r with r·(m + n) <= ratio·m·n. */
  ratio?: number;
  /**
   * 'exact' (full SVD), 'randomized' (Halko–Martinsson–Tropp), or 'auto'
   * (default): exact when min(m, n) <= 384 or the sketch would hold a third
   * of the spectrum or more, else randomized.
   */
  method?: 'auto' | 'exact' | 'randomized';
  /** Randomized: extra sketch columns, at least (rounded up so k + p is a multiple of 16). Default 10. */
  oversample?: number;
  /** Randomized: re-orthonormalised power iterations. Default 2. */
  powerIters?: number;
  /** Randomized: seed of the Gaussian sketch (a non-negative integer). Default 0. */
  seed?: number;
  whiten?: Whitening;
  kernel?: LowRankKernel;
  threads?: number;
  /**
   * Write the factors into these f32 tensors (left [m, rank], right
   * [rank, n]; a previous result will do) instead of allocating; the
   * result holds them. Needs the rank before the factorization: `rank` or
   * `ratio`, not `energy`.
   */
  out?: { left: Tensor<'f32'>; right: Tensor<'f32'> };
}

export interface LowRankResult {
  /** [m, rank] = U·Σ^½. */
  left: Tensor<'f32'>;
  /** [rank, n] = Σ^½·Vᵀ (whitening undone: W ≈ left · right). */
  right: Tensor<'f32'>;
  /**
   * Singular values of the matrix that was factored (W, W·diag(scale) or
   * W·S with XᵀX = S·Sᵀ), descending: all min(m, n) for 'exact', the k + p
   * estimates for 'randomized'.
   */
  singularValues: Float64Array;
  rank: number;
  /**
   * Measured by forming left · right tile by tile: ‖W − LR‖/‖W‖; with
   * activationScale, ‖(W − LR)·diag(s)‖/‖W·diag(s)‖; with gram, the output
   * error ‖(W − LR)·Xᵀ‖/‖W·Xᵀ‖.
   */
  relError: number;
  /**
   * Eckart–Young: sqrt(Σ_{i>rank} σ_i²)/‖·‖ from `singularValues` (exact).
   * Randomized: from the estimates, the energy they miss, sqrt(‖·‖² −
   * Σ_{i<=rank} σ̃_i²)/‖·‖ — an upper bound of the true optimum that the
   * achieved error equals in exact arithmetic, so compare against 'exact'
   * to judge a randomized result.
   */
  optimalRelError: number;
  /** The method that ran. */
  method: 'exact' | 'randomized';
  backend: 'cpu' | 'cuda';
  /** Randomized: the sketch width k + p used (0 for exact). */
  samples: number;
  /** gram: λ added to XᵀX's diagonal when it was singular (0 otherwise). */
  damping: number;
}

function bool(v: unknown, where: string, name: string): boolean {
  if (v === undefined) return false;
  if (typeof v !== 'boolean') fail(where, 'ERR_VALUE', `options.${name} must be a boolean, got ${String(v)}`);
  return v;
}

function int(v: unknown, where: string, name: string, min: number, max: number): number {
  if (!Number.isSafeInteger(v) || (v as number) < min || (v as number) > max) {
    fail(where, 'ERR_VALUE', `options.${name} must be an integer in ${min}..${max}, got ${String(v)}`);
  }
  return v as number;
}

function matrix2d(t: Tensor, where: string, what: string): [number, number] {
  checkTensor(t, where, what, FLOAT_DTYPES);
  if (t.shape.length !== 2) fail(where, 'ERR_SHAPE', `${what} must be 2-D, got shape [${t.shape.join(', ')}]`);
  return [t.shape[0] as number, t.shape[1] as number];
}

/** @internal Validates a matmul call and builds the native arguments (exported for tests). */
export function planMatmul(a: Tensor, b: Tensor, options: MatmulOptions | undefined, where: string): { args: NativeArgs; out: Tensor<'f32'> } {
  const o = checkOptions(options, where, ['transA', 'transB', 'kernel', 'threads', 'out', 'accumulate']) as MatmulOptions;
  const [ar, ac] = matrix2d(a, where, 'a');
  const [br, bc] = matrix2d(b, where, 'b');
  const transA = bool(o.transA, where, 'transA');
  const transB = bool(o.transB, where, 'transB');
  const accumulate = bool(o.accumulate, where, 'accumulate');
  const m = transA ? ac : ar;
  const k = transA ? ar : ac;
  const kb = transB ? bc : br;
  const n = transB ? br : bc;
  if (k !== kb) {
    fail(where, 'ERR_SHAPE', `inner dimensions differ: op(a) is [${m}, ${k}] (a [${ar}, ${ac}]${transA ? ', transA' : ''}), op(b) is [${kb}, ${n}] (b [${br}, ${bc}]${transB ? ', transB' : ''})`);
  }
  let out: Tensor<'f32'>;
  let fresh = false;
  if (o.out !== undefined) {
    out = checkOutTensor(o.out, where, 'options.out', ['f32'], [m, n]);
    checkOutMemory({ 'options.out': out.data }, { a: a.data, b: b.data }, where);
  } else {
    if (accumulate) fail(where, 'ERR_VALUE', 'options.accumulate adds to options.out, which is missing');
    // Every element is written (k = 0 writes zeros).
    out = Tensor.uninitialized([m, n], 'f32');
    fresh = true;
  }
  const args: NativeArgs = {
    a: a.data,
    aDtype: dtypeCode(a.dtype),
    aRows: ar,
    aCols: ac,
    transA,
    b: b.data,
    bDtype: dtypeCode(b.dtype),
    bRows: br,
    bCols: bc,
    transB,
    out: out.data,
    accumulate,
    kernel: kernelCode(o.kernel, where),
    threads: threadCount(o.threads, where),
    fresh: fresh ? [out.data] : [],
  };
  return { args, out };
}

/**
 * op(a) · op(b) as a new f32 tensor [m, n] (or into options.out). a and b
 * are 2-D f32, f16 or bf16 tensors. Each element is one fused-multiply-add
 * chain over k in order, so every kernel and thread count gives the same
 * bits. On the thread pool.
 */
export async function matmul(a: Tensor, b: Tensor, options?: MatmulOptions): Promise<Tensor<'f32'>> {
  const { args, out } = planMatmul(a, b, options, 'matmul');
  await callAsync('matmul', () => binding.matmul(args, true));
  return out;
}

/** Synchronous matmul: blocks the calling thread. */
export function matmulSync(a: Tensor, b: Tensor, options?: MatmulOptions): Tensor<'f32'> {
  const { args, out } = planMatmul(a, b, options, 'matmulSync');
  callSync('matmulSync', () => binding.matmul(args, false));
  return out;
}

function matrixArgs(t: Tensor, where: string, prefix: string): { rows: number; cols: number; args: NativeArgs } {
  checkTensor(t, where, 'input', FLOAT_DTYPES);
  const [rows, cols] = t.matrixShape();
  if (rows < 1 || cols < 1) fail(where, 'ERR_SHAPE', `input must have at least one row and one column, got shape [${t.shape.join(', ')}]`);
  return { rows, cols, args: { [prefix]: t.data, [`${prefix}Dtype`]: dtypeCode(t.dtype), [`${prefix}Rows`]: rows, [`${prefix}Cols`]: cols } };
}

/** @internal */
export function planSvd(t: Tensor, options: SvdOptions | undefined, where: string): { args: NativeArgs; rows: number; cols: number; out?: { u: Tensor<'f32'>; vt: Tensor<'f32'> } } {
  const o = checkOptions(options, where, ['k', 'kernel', 'threads', 'out']) as SvdOptions;
  const { rows, cols, args } = matrixArgs(t, where, 'a');
  const full = Math.min(rows, cols);
  const k = o.k === undefined ? full : int(o.k, where, 'k', 1, full);
  args.k = k;
  args.kernel = kernelCode(o.kernel, where);
  args.threads = threadCount(o.threads, where);
  if (o.out === undefined) return { args, rows, cols };
  const p = outParts(o.out, where, 'options.out', ['u', 'vt']);
  const out = { u: checkOutTensor(p.u, where, 'options.out.u', ['f32'], [rows, k]), vt: checkOutTensor(p.vt, where, 'options.out.vt', ['f32'], [k, cols]) };
  checkOutMemory({ 'options.out.u': out.u.data, 'options.out.vt': out.vt.data }, { 'the input': t.data }, where);
  args.outU = out.u.data;
  args.outVt = out.vt.data;
  return { args, rows, cols, out };
}

function svdResult(r: NativeSvd, rows: number, cols: number, out: { u: Tensor<'f32'>; vt: Tensor<'f32'> } | undefined): SvdResult {
  const u = out?.u ?? Tensor.from(r.u, [rows, r.k]);
  const vt = out?.vt ?? Tensor.from(r.vt, [r.k, cols]);
  return { u, s: r.s, vt, backend: r.cuda ? 'cuda' : 'cpu' };
}

/**
 * Exact thin SVD of a matrix (tensors of more dimensions are read as
 * [product of leading dimensions, last]): singular values descending, u
 * and vt with orthonormal columns/rows. Computed in f64 (Householder
 * bidiagonalization and implicit-shift QR; see the README); on the GPU
 * with cuSOLVER gesvdj when available.
 */
export async function svd(t: Tensor, options?: SvdOptions): Promise<SvdResult> {
  const { args, rows, cols, out } = planSvd(t, options, 'svd');
  return svdResult(await callAsync('svd', () => binding.svd(args, true)), rows, cols, out);
}

export function svdSync(t: Tensor, options?: SvdOptions): SvdResult {
  const { args, rows, cols, out } = planSvd(t, options, 'svdSync');
  return svdResult(callSync('svdSync', () => binding.svd(args, false)), rows, cols, out);
}

const LOWRANK_OPTIONS = ['rank', 'energy', 'ratio', 'method', 'oversample', 'powerIters', 'seed', 'whiten', 'kernel', 'threads', 'out'];

function finiteArray(a: unknown, where: string, name: string, length: number, positive: boolean): Float32Array {
  if (!(a instanceof Float32Array)) fail(where, 'ERR_VALUE', `options.whiten.${name} must be a Float32Array`);
  assertFixedLength(a, where, `options.whiten.${name}`);
  if (a.length !== length) fail(where, 'ERR_SHAPE', `options.whiten.${name} has ${a.length} values; the input needs ${length}`);
  for (let i = 0; i < a.length; i++) {
    const v = a[i] as number;
    if (!Number.isFinite(v) || (positive && !(v > 0))) {
      fail(where, 'ERR_VALUE', `options.whiten.${name}[${i}] is ${v}; values must be finite${positive ? ' and > 0' : ''}`);
    }
  }
  return a;
}

/** @internal */
export function planLowRank(t: Tensor, options: LowRankOptions | undefined, where: string): { args: NativeArgs; rows: number; cols: number; out?: { left: Tensor<'f32'>; right: Tensor<'f32'> } } {
  if (options === undefined) fail(where, 'ERR_VALUE', 'options must name one of rank, energy or ratio');
  const o = checkOptions(options, where, LOWRANK_OPTIONS) as LowRankOptions;
  const { rows, cols, args } = matrixArgs(t, where, 'w');
  const full = Math.min(rows, cols);
  const rules = (['rank', 'energy', 'ratio'] as const).filter((r) => o[r] !== undefined);
  if (rules.length !== 1) {
    fail(where, 'ERR_VALUE', rules.length === 0 ? 'options must name one of rank, energy or ratio' : `options name ${rules.join(' and ')}; give exactly one of rank, energy or ratio`);
  }
  args.rule = 0;
  args.rank = 0;
  args.energy = 0;
  args.ratio = 0;
  if (o.rank !== undefined) {
    args.rank = int(o.rank, where, 'rank', 1, full);
  } else if (o.energy !== undefined) {
    if (typeof o.energy !== 'number' || !(o.energy > 0 && o.energy <= 1)) fail(where, 'ERR_VALUE', `options.energy must be a number in (0, 1], got ${String(o.energy)}`);
    args.rule = 1;
    args.energy = o.energy;
  } else {
    const ratio = o.ratio;
    if (typeof ratio !== 'number' || !Number.isFinite(ratio) || !(ratio > 0)) fail(where, 'ERR_VALUE', `options.ratio must be a finite number > 0, got ${String(ratio)}`);
    if (rankForRatio(ratio, rows, cols) < 1) {
      fail(where, 'ERR_VALUE', `options.ratio ${ratio} allows ${((ratio * rows * cols) / (rows + cols)).toFixed(3)} ranks of [${rows}, ${cols}]: fewer parameters than rank 1 needs (${rows + cols})`);
    }
    args.rule = 2;
    args.ratio = ratio;
  }
  const method = o.method ?? 'auto';
  if (typeof method !== 'string' || !Object.prototype.hasOwnProperty.call(METHODS, method)) {
    fail(where, 'ERR_VALUE', `options.method must be one of auto, exact, randomized; got ${JSON.stringify(method)}`);
  }
  args.method = METHODS[method as keyof typeof METHODS];
  args.oversample = o.oversample === undefined ? 10 : int(o.oversample, where, 'oversample', 0, 1 << 20);
  args.powerIters = o.powerIters === undefined ? 2 : int(o.powerIters, where, 'powerIters', 0, 100);
  args.seed = o.seed === undefined ? 0 : int(o.seed, where, 'seed', 0, Number.MAX_SAFE_INTEGER);
  args.whiten = 0;
  args.gram = null;
  args.scale = null;
  if (o.whiten !== undefined) {
    const w = o.whiten as unknown;
    if (typeof w !== 'object' || w === null) fail(where, 'ERR_VALUE', 'options.whiten must be { gram } or { activationScale }');
    const keys = Object.keys(w);
    if (keys.length !== 1 || (keys[0] !== 'gram' && keys[0] !== 'activationScale')) {
      fail(where, 'ERR_VALUE', `options.whiten must have exactly one of gram, activationScale; got ${keys.join(', ') || 'none'}`);
    }
    if (keys[0] === 'gram') {
      args.whiten = 1;
      args.gram = finiteArray((w as { gram: unknown }).gram, where, 'gram', cols * cols, false);
    } else {
      args.whiten = 2;
      args.scale = finiteArray((w as { activationScale: unknown }).activationScale, where, 'activationScale', cols, true);
    }
  }
  args.kernel = kernelCode(o.kernel, where);
  args.threads = threadCount(o.threads, where);
  args.outRank = 0;
  if (o.out === undefined) return { args, rows, cols };
  if (o.energy !== undefined) fail(where, 'ERR_VALUE', 'options.out needs the rank before the factorization, which energy chooses from the spectrum: use rank or ratio with out');
  const rank = o.rank ?? rankForRatio(o.ratio as number, rows, cols);
  const p = outParts(o.out, where, 'options.out', ['left', 'right']);
  const out = { left: checkOutTensor(p.left, where, 'options.out.left', ['f32'], [rows, rank]), right: checkOutTensor(p.right, where, 'options.out.right', ['f32'], [rank, cols]) };
  checkOutMemory(
    { 'options.out.left': out.left.data, 'options.out.right': out.right.data },
    { 'the input': t.data, 'options.whiten.gram': args.gram as Float32Array | null, 'options.whiten.activationScale': args.scale as Float32Array | null },
    where,
  );
  args.outRank = rank;
  args.outLeft = out.left.data;
  args.outRight = out.right.data;
  return { args, rows, cols, out };
}

function lowRankResult(r: NativeLowRank, rows: number, cols: number, out: { left: Tensor<'f32'>; right: Tensor<'f32'> } | undefined): LowRankResult {
  return {
    left: out?.left ?? Tensor.from(r.left, [rows, r.rank]),
    right: out?.right ?? Tensor.from(r.right, [r.rank, cols]),
    singularValues: r.singularValues,
    rank: r.rank,
    relError: r.relError,
    optimalRelError: r.optimalRelError,
    method: r.method,
    backend: r.backend,
    samples: r.samples,
    damping: r.damping,
  };
}

/**
 * W ≈ left · right with left [m, rank] and right [rank, n], for a rank
 * given or chosen by an energy or parameter-budget rule, by the exact or
 * the randomized SVD, optionally activation-aware (whiten). Tensors of
 * more dimensions are read as [product of leading dimensions, last]. On
 * the thread pool (or the GPU: see kernel).
 */
export async function lowRank(t: Tensor, options: LowRankOptions): Promise<LowRankResult> {
  const { args, rows, cols, out } = planLowRank(t, options, 'lowRank');
  return lowRankResult(await callAsync('lowRank', () => binding.lowRank(args, true)), rows, cols, out);
}

export function lowRankSync(t: Tensor, options: LowRankOptions): LowRankResult {
  const { args, rows, cols, out } = planLowRank(t, options, 'lowRankSync');
  return lowRankResult(callSync('lowRankSync', () => binding.lowRank(args, false)), rows, cols, out);
}
