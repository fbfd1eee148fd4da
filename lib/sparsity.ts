// N:M structured sparsity (2:4 and others), 2:4 compression in the
// CUTLASS/PyTorch and compressed-tensors layouts, the 2:4 sparse matrix
// multiply, and unstructured magnitude pruning. Validation and output
// allocation live here; the arithmetic is native (native/core/sparse/).
import { fail } from './errors';
import { binding, callAsync, callSync, type NativeArgs, type NativeUnstructured } from './native';
import { checkOptions, FLOAT_DTYPES, kernelCode, sameShape, threadCount, type Kernel } from './options';
import { checkQuantizedOut, QuantizedTensor } from './quantize';
import { assertFixedLength, checkOutMemory, checkOutTensor, checkTensor, dtypeCode, outParts, sameView, shapeSize, Tensor, uninitializedArray, type FloatDType, type NamedViews } from './tensor';

/**
 * How the kept elements of each group are chosen: 'magnitude' (default,
 * |w|), or Wanda's |w_ij|·‖X_j‖₂ from the L2 norm of each input channel's
 * calibration activations (one value per column, finite and >= 0). The
 * product is computed in f32. Equal scores keep the lower column.
 */
export type SparsityScore = 'magnitude' | { activationNorms: Float32Array };

export interface PruneOptions {
  /** 'N:M': keep N of every M consecutive elements along the last dimension ('2:4', '1:4', '4:8', ...; M <= 32). */
  pattern: string;
  score?: SparsityScore;
  /** 'auto', 'reference', 'avx2' (M = 4; other patterns run the reference loop), 'cuda'. */
  kernel?: Kernel;
  /** Threads for this call (default: setThreads / all cores). */
  threads?: number;
  /**
   * Write into these instead of allocating (a previous result of the same
   * dtype and shape will do: `tensor` in the input's dtype and shape, `mask`
   * u8 [..., ceil(cols/8)]); the object is returned.
   */
  out?: PruneResult;
}

export interface PruneResult {
  /** The input with the pruned elements set to +0 (same dtype and shape). */
  tensor: Tensor<FloatDType>;
  /**
   * 1 bit per element, 1 = kept: [...leading dims, ceil(cols/8)] bytes, bit j
   * of byte k is column 8k+j of the row (little bit order) — the layout of
   * compressed-tensors' bitmask.
   */
  mask: Tensor<'u8'>;
}

export interface Compress24Options {
  /**
   * Prune to 2:4 first (by `score`) instead of requiring a 2:4 input: the
   * fused prune + compress (one pass, no dense copy written).
   */
  prune?: boolean;
  /** With prune: how to rank (default 'magnitude'). */
  score?: SparsityScore;
  /** Keep exactly these elements (a mask from prune(), two bits per group of 4); the rest are dropped. */
  mask?: Tensor<'u8'>;
  kernel?: Kernel;
  threads?: number;
  /**
   * Write into this Sparse24Tensor instead of allocating (one compress24
   * made for the same shape and dtype will do: values, meta and bitmask
   * are overwritten); it is returned. For a quantized input its values
   * must have the input's format, symmetry and scale dtype, and get the
   * input's scales and zero points (copied, unless they are that memory).
   */
  out?: Sparse24Tensor;
}

export interface Decompress24Options {
  threads?: number;
  /**
   * Write into this instead of allocating: a Tensor of the values' dtype
   * and the dense shape, or for quantized values a QuantizedTensor of
   * their format with twice their group size (its scales and zero points
   * are set to the values'); it is returned.
   */
  out?: Tensor<FloatDType> | QuantizedTensor;
}

export interface Spmm24Options {
  /** x is stored [n, cols] (one row per input vector) instead of [cols, n]. */
  transB?: boolean;
  /** Write into this f32 tensor [rows, n] instead of allocating one; it is returned. */
  out?: Tensor<'f32'>;
  /** out += A·op(x) instead of out = … (needs `out`). */
  accumulate?: boolean;
  /** 'auto' (AVX-512 where the CPU has it, else AVX2), 'reference', 'avx2', 'avx512'. */
  kernel?: Kernel;
  threads?: number;
}

export interface PruneUnstructuredOptions {
  /** Fraction of elements to zero, in [0, 1]: round(sparsity × count) of them (ties to even, as Python's round). */
  sparsity: number;
  /** 'layer' (default): each tensor on its own; 'global': one threshold across all the tensors given. */
  scope?: 'layer' | 'global';
  threads?: number;
  /**
   * Write into these instead of allocating: { tensor, mask } as prune's
   * `out` (one per tensor, an array when given an array; previous results
   * will do). The results' `tensor` and `mask` are these.
   */
  out?: PruneResult | readonly PruneResult[];
}

export interface UnstructuredResult {
  /** The input with the pruned elements set to +0. */
  tensor: Tensor<FloatDType>;
  /** 1 = kept, the layout of PruneResult.mask. */
  mask: Tensor<'u8'>;
  /**
   * The cut: the largest pruned |w| of the selection — of this tensor
   * ('layer'), or of all of them ('global', the same number for each) — or
   * 0 when the selection prunes nothing.
   */
  threshold: number;
  /** Elements zeroed in this tensor. */
  pruned: number;
}

const SCORES = { magnitude: 0, wanda: 1, nonzero: 2, mask: 3 } as const;
const MAX_M = 32;

/**
 * 'N:M' -> { n, m } (1 <= N <= M <= 32), or ERR_VALUE `${where}: ${what} ...`.
 * The recipe and CLI checks use it too, so a pattern is valid everywhere or nowhere.
 */
export function parsePattern(p: unknown, where: string, what = 'options.pattern'): { n: number; m: number } {
  const m = typeof p === 'string' ? /^\s*(\d+)\s*:\s*(\d+)\s*$/.exec(p) : null;
  if (m === null) fail(where, 'ERR_VALUE', `${what} must be 'N:M' (e.g. '2:4', '1:4', '4:8'); got ${JSON.stringify(p)}`);
  const n = Number(m[1]);
  const mm = Number(m[2]);
  if (!(n >= 1 && n <= mm && mm <= MAX_M)) fail(where, 'ERR_VALUE', `${what} ${p as string}: need 1 <= N <= M <= ${MAX_M}`);
  return { n, m: mm };
}

function rowsCols(shape: readonly number[]): [number, number] {
  if (shape.length === 0) return [1, 1];
  // From the leading dimensions: a [5, 0] matrix still has 5 rows (spmm24's output is [5, n]).
  return [shapeSize(shape.slice(0, -1)), shape[shape.length - 1] as number];
}

/** An Int16Array whose contents are unspecified (the kernel writes every word; see Tensor.uninitialized). */
function uninitializedInt16(length: number): Int16Array {
  const bytes = Buffer.allocUnsafeSlow(length * 2);
  return new Int16Array(bytes.buffer, bytes.byteOffset, length);
}

function bitmaskShape(shape: readonly number[]): number[] {
  const cols = shape.length === 0 ? 1 : (shape[shape.length - 1] as number);
  return [...(shape.length === 0 ? [1] : shape.slice(0, -1)), Math.ceil(cols / 8)];
}

function metaWords(cols: number, wordBytes: 2 | 4): number {
  return Math.ceil(cols / 4 / (wordBytes * 2));
}

function checkColumns(shape: readonly number[], m: number, pattern: string, where: string, what = 'input'): void {
  const cols = rowsCols(shape)[1];
  if (shape.length === 0 || cols % m !== 0) {
    fail(where, 'ERR_SHAPE', `the last dimension of ${what} [${shape.join(', ')}] (${shape.length === 0 ? 'a scalar' : cols}) is not a multiple of M = ${m} (pattern ${pattern})`);
  }
}

/** options.score → the native score code and norms. */
function scoreArgs(score: unknown, cols: number, where: string, what = 'options.score'): { score: number; norms: Float32Array | null } {
  if (score === undefined || score === 'magnitude') return { score: SCORES.magnitude, norms: null };
  if (typeof score !== 'object' || score === null || !('activationNorms' in score)) {
    fail(where, 'ERR_VALUE', `${what} must be 'magnitude' or { activationNorms: Float32Array }; got ${JSON.stringify(score)}`);
  }
  checkOptions(score, where, ['activationNorms']);
  const norms = (score as { activationNorms: unknown }).activationNorms;
  if (!(norms instanceof Float32Array)) fail(where, 'ERR_VALUE', `${what}.activationNorms must be a Float32Array`);
  assertFixedLength(norms, where, `${what}.activationNorms`);
  if (norms.length !== cols) fail(where, 'ERR_SHAPE', `${what}.activationNorms has ${norms.length} values; the input's last dimension is ${cols}`);
  for (let i = 0; i < norms.length; i++) {
    const v = norms[i] as number;
    if (!(v >= 0 && v < Infinity)) fail(where, 'ERR_VALUE', `${what}.activationNorms[${i}] is ${v}; norms must be finite and >= 0`);
  }
  return { score: SCORES.wanda, norms };
}

function checkMask(mask: unknown, shape: readonly number[], where: string): Tensor<'u8'> {
  const t = checkTensor(mask, where, 'options.mask', ['u8']) as Tensor<'u8'>;
  const want = bitmaskShape(shape);
  if (!sameShape(t.shape, want)) fail(where, 'ERR_SHAPE', `options.mask is [${t.shape.join(', ')}]; a bitmask of [${shape.join(', ')}] is [${want.join(', ')}]`);
  return t;
}

/** A dense pruning output the caller passed ({ tensor, mask } for input `t`); memory is checked by the caller. */
function checkDenseOut(out: unknown, t: Tensor, where: string, what: string): PruneResult {
  const p = outParts(out, where, what, ['tensor', 'mask']);
  checkOutTensor(p.tensor, where, `${what}.tensor`, [t.dtype as FloatDType], t.shape);
  checkOutTensor(p.mask, where, `${what}.mask`, ['u8'], bitmaskShape(t.shape));
  return out as PruneResult;
}

/**
 * Scales and zero points a quantized `out` takes over from the input's
 * (`from`): nothing to do when they are that very memory; else they are
 * checked with the other parts (returned to add to them) and copied by
 * the returned function once every check has passed.
 */
function adoptGroups(out: QuantizedTensor, from: QuantizedTensor, what: string): { parts: NamedViews; copy: () => void } {
  const parts: NamedViews = {};
  const copies: (() => void)[] = [];
  const pairs = [
    ['scales', out.scales?.data, from.scales?.data],
    ['zeros', out.zeros?.data, from.zeros?.data],
  ] as const;
  for (const [name, dst, src] of pairs) {
    if (dst === undefined || src === undefined || sameView(dst, src)) continue;
    parts[`${what}.${name}`] = dst;
    copies.push(() => (dst as Uint16Array | Float32Array | Int8Array).set(src as Uint16Array | Float32Array | Int8Array));
  }
  return { parts, copy: () => copies.forEach((c) => c()) };
}

// ---- prune ------------------------------------------------------------------------

/** @internal Validates a prune call and builds the native arguments (exported for tests). */
export function planPrune(t: Tensor, options: PruneOptions, where: string): { args: NativeArgs; result: PruneResult } {
  checkTensor(t, where, 'input', FLOAT_DTYPES);
  if (options === undefined) fail(where, 'ERR_VALUE', "options.pattern is required (e.g. '2:4')");
  const o = checkOptions(options, where, ['pattern', 'score', 'kernel', 'threads', 'out']) as Partial<PruneOptions>;
  const { n, m } = parsePattern(o.pattern, where);
  checkColumns(t.shape, m, o.pattern as string, where);
  const [rows, cols] = rowsCols(t.shape);
  const sc = scoreArgs(o.score, cols, where);
  let result: PruneResult;
  if (o.out !== undefined) {
    result = checkDenseOut(o.out, t, where, 'options.out');
    checkOutMemory({ 'options.out.tensor': result.tensor.data, 'options.out.mask': result.mask.data }, { 'the input': t.data, 'options.score.activationNorms': sc.norms }, where);
  } else {
    // Every byte of both outputs is written.
    result = { tensor: Tensor.uninitialized(t.shape, t.dtype as FloatDType), mask: Tensor.uninitialized(bitmaskShape(t.shape), 'u8') };
  }
  const { tensor, mask } = result;
  const args: NativeArgs = {
    src: t.data,
    srcDtype: dtypeCode(t.dtype),
    rows,
    cols,
    n,
    m,
    score: sc.score,
    norms: sc.norms,
    maskIn: null,
    kernel: kernelCode(o.kernel, where),
    threads: threadCount(o.threads, where),
    metaWordBytes: 2,
    mask: mask.data,
    dense: tensor.data,
    values: null,
    meta: null,
    // Outputs made for this call (native/addon/job.h: neither marked nor copied); an `out` is the caller's.
    fresh: o.out === undefined ? [tensor.data, mask.data] : [],
  };
  return { args, result };
}

/**
 * N:M pruning along the last dimension: keeps the N highest-scoring of every
 * M consecutive elements (equal scores keep the lower column). NaN weights
 * (or NaN scores) are ERR_VALUE; a last dimension that is not a multiple of
 * M is ERR_SHAPE. On the thread pool.
 */
export async function prune(t: Tensor, options: PruneOptions): Promise<PruneResult> {
  const { args, result } = planPrune(t, options, 'prune');
  await callAsync('prune', () => binding.sparseSelect(args, true));
  return result;
}

/** Synchronous prune: blocks the calling thread. */
export function pruneSync(t: Tensor, options: PruneOptions): PruneResult {
  const { args, result } = planPrune(t, options, 'pruneSync');
  callSync('pruneSync', () => binding.sparseSelect(args, false));
  return result;
}

// ---- Sparse24Tensor -------------------------------------------------------------

export interface Sparse24Parts {
  /** The dense shape; the last dimension is a multiple of 4. */
  shape: readonly number[];
  /** The kept values, [...leading, cols/2]: floats, or int4/int8 codes (a QuantizedTensor with half the group size). */
  values: Tensor<FloatDType> | QuantizedTensor;
  /** The 2-bit index pairs (see Sparse24Tensor.meta); at least one of meta and bitmask. */
  meta?: Int16Array | Int32Array | undefined;
  bitmask?: Tensor<'u8'> | undefined;
}

/**
 * A 2:4-sparse matrix (or a stack of them along leading dimensions): two
 * values kept in every group of 4 consecutive elements of a row.
 */
export class Sparse24Tensor {
  /** The dense shape. */
  readonly shape: readonly number[];
  /**
   * The kept values of each row in column order, [...leading, cols/2]:
   * float (the input's dtype) or, for a compressed quantized tensor, a
   * QuantizedTensor of the kept codes with the original scales (and zero
   * points): its group size is half the original's, as each group keeps
   * half its elements.
   */
  readonly values: Tensor<FloatDType> | QuantizedTensor;
  /**
   * 2-bit indices, the CUTLASS/PyTorch convention: per row, group g's nibble
   * idx0 | idx1 << 2 (idx0 < idx1 the kept positions; {0,1} → 0b0100,
   * {2,3} → 0b1110) at bits 4·(g mod w) of word g/w. Int16Array (w = 4,
   * 16 columns per word) for float values, Int32Array (w = 8) for int8/int4
   * codes; rows × metaWordsPerRow words, padding nibbles 0.
   */
  readonly meta: Int16Array | Int32Array | undefined;
  /**
   * compressed-tensors' sparse-24-bitmask: [...leading, ceil(cols/8)] bytes,
   * bit j of byte k is column 8k+j (little bit order), 1 = kept.
   */
  readonly bitmask: Tensor<'u8'> | undefined;

  constructor(parts: Sparse24Parts) {
    const where = 'Sparse24Tensor';
    if (typeof parts !== 'object' || parts === null) fail(where, 'ERR_VALUE', 'parts must be an object { shape, values, meta?, bitmask? }');
    shapeSize(parts.shape, where);
    const shape = parts.shape.slice();
    checkColumns(shape, 4, '2:4', where, 'shape');
    const [rows, cols] = rowsCols(shape);
    const vshape = [...shape.slice(0, -1), cols / 2];
    const v = parts.values;
    if (v instanceof QuantizedTensor) {
      if (v.format !== 'int4' && v.format !== 'int8') fail(where, 'ERR_VALUE', `quantized values must be int4 or int8, got ${v.format}`);
      if (!sameShape(v.shape, vshape)) fail(where, 'ERR_SHAPE', `values is [${v.shape.join(', ')}]; a 2:4 tensor of [${shape.join(', ')}] keeps [${vshape.join(', ')}]`);
      if (v.groupSize % 2 !== 0) fail(where, 'ERR_SHAPE', `values has group size ${v.groupSize}; the dense group (${2 * v.groupSize}) must be a multiple of 4, whole 2:4 groups`);
    } else {
      checkTensor(v, where, 'values', FLOAT_DTYPES);
      if (!sameShape(v.shape, vshape)) fail(where, 'ERR_SHAPE', `values is [${v.shape.join(', ')}]; a 2:4 tensor of [${shape.join(', ')}] keeps [${vshape.join(', ')}]`);
    }
    const quantized = v instanceof QuantizedTensor;
    if (parts.meta !== undefined) {
      const ctor = quantized ? Int32Array : Int16Array;
      if (!(parts.meta instanceof ctor)) fail(where, 'ERR_VALUE', `meta must be an ${ctor.name} (${quantized ? 'int32 words for int8/int4 codes' : 'int16 words for float values'})`);
      assertFixedLength(parts.meta, where, 'meta');
      const want = rows * metaWords(cols, quantized ? 4 : 2);
      if (parts.meta.length !== want) fail(where, 'ERR_SHAPE', `meta holds ${parts.meta.length} words; [${shape.join(', ')}] needs ${want}`);
    }
    if (parts.bitmask !== undefined) {
      const b = checkTensor(parts.bitmask, where, 'bitmask', ['u8']);
      const want = bitmaskShape(shape);
      if (!sameShape(b.shape, want)) fail(where, 'ERR_SHAPE', `bitmask is [${b.shape.join(', ')}]; [${shape.join(', ')}] needs [${want.join(', ')}]`);
    }
    if (parts.meta === undefined && parts.bitmask === undefined) fail(where, 'ERR_VALUE', 'give meta, bitmask or both');
    this.shape = Object.freeze(shape);
    this.values = v;
    this.meta = parts.meta;
    this.bitmask = parts.bitmask as Tensor<'u8'> | undefined;
  }

  /** The values are int4/int8 codes. */
  get quantized(): boolean {
    return this.values instanceof QuantizedTensor;
  }

  /** Meta words per row: ceil(cols/16) int16 or ceil(cols/32) int32. */
  get metaWordsPerRow(): number {
    return metaWords(rowsCols(this.shape)[1], this.quantized ? 4 : 2);
  }

  /** Bytes of values (with scales and zero points), meta and bitmask. */
  get byteLength(): number {
    const v = this.values instanceof QuantizedTensor ? this.values.byteLength : this.values.byteLength;
    return v + (this.meta?.byteLength ?? 0) + (this.bitmask?.byteLength ?? 0);
  }

  toString(): string {
    const v = this.values instanceof QuantizedTensor ? this.values.format : this.values.dtype;
    return `Sparse24Tensor<${v}>[${this.shape.join(', ')}]`;
  }
}

// ---- compress24 / decompress24 ------------------------------------------------------

/**
 * compress24's options.out: a Sparse24Tensor of the input's shape with
 * float (or, for a quantized input, quantized) values, meta and bitmask,
 * all still attached. Its values and memory are checked by the caller.
 */
function checkSparseOut(out: unknown, shape: readonly number[], quantized: boolean, where: string): Sparse24Tensor {
  if (!(out instanceof Sparse24Tensor)) fail(where, 'ERR_VALUE', 'options.out must be a Sparse24Tensor (from compress24())');
  if (!sameShape(out.shape, shape)) fail(where, 'ERR_SHAPE', `options.out is [${out.shape.join(', ')}]; this call writes [${shape.join(', ')}]`);
  if (out.quantized !== quantized) fail(where, 'ERR_DTYPE', `options.out holds ${out.quantized ? 'quantized' : 'float'} values; this call writes ${quantized ? 'quantized' : 'float'} ones`);
  if (out.meta === undefined || out.bitmask === undefined) fail(where, 'ERR_VALUE', `options.out has no ${out.meta === undefined ? 'meta' : 'bitmask'}; compress24 writes values, meta and bitmask`);
  checkIntact(out, where, 'options.out');
  return out;
}

/** @internal Validates a compress24 call and builds the native arguments (exported for tests). */
export function planCompress24(t: Tensor | QuantizedTensor, options: Compress24Options | undefined, where: string): { args: NativeArgs; quant: boolean; result: Sparse24Tensor } {
  const o = checkOptions(options, where, ['prune', 'score', 'mask', 'kernel', 'threads', 'out']) as Compress24Options;
  if (o.prune !== undefined && typeof o.prune !== 'boolean') fail(where, 'ERR_VALUE', `options.prune must be a boolean, got ${String(o.prune)}`);
  if (o.prune === true && o.mask !== undefined) fail(where, 'ERR_VALUE', 'options.prune and options.mask exclude each other: the mask already says what to keep');
  if (o.score !== undefined && o.prune !== true) fail(where, 'ERR_VALUE', 'options.score ranks the elements to prune; it needs prune: true');
  const threads = threadCount(o.threads, where);
  if (t instanceof QuantizedTensor) {
    if (t.format !== 'int4' && t.format !== 'int8') fail(where, 'ERR_VALUE', `quantized inputs must be int4 or int8 (compressed-tensors), got ${t.format}`);
    if (o.prune === true) fail(where, 'ERR_VALUE', 'a quantized tensor is compressed as it is (or by options.mask); prune the float tensor, then quantize it');
    const kernel = kernelCode(o.kernel, where);
    // Only the scalar loop handles packed codes: pinning any other kernel would silently not run it.
    if (kernel !== kernelCode('auto', where) && kernel !== kernelCode('reference', where)) fail(where, 'ERR_UNSUPPORTED', `quantized inputs are compressed by the CPU reference loop; kernel ${String(o.kernel)} has none`);
    checkColumns(t.shape, 4, '2:4', where);
    const [rows, cols] = rowsCols(t.shape);
    if (t.groupSize % 4 !== 0) fail(where, 'ERR_SHAPE', `the group size ${t.groupSize} is not a multiple of 4: a group would not keep exactly half its codes`);
    const mask = o.mask !== undefined ? checkMask(o.mask, t.shape, where) : undefined;
    const bits = t.format === 'int4' ? 4 : 8;
    const half = cols / 2;
    let result: Sparse24Tensor;
    if (o.out !== undefined) {
      const out = checkSparseOut(o.out, t.shape, true, where);
      const values = checkQuantizedOut(out.values, where, 'options.out.values', {
        format: t.format,
        shape: [...t.shape.slice(0, -1), half],
        groupSize: t.groupSize / 2,
        symmetric: t.symmetric,
        scaleDtype: t.scales?.dtype,
      });
      const groups = adoptGroups(values, t, 'options.out.values');
      checkOutMemory(
        { 'options.out.values': values.data, 'options.out.meta': out.meta, 'options.out.bitmask': out.bitmask?.data, ...groups.parts },
        { 'the input': t.data, "the input's scales": t.scales?.data, "the input's zero points": t.zeros?.data, 'options.mask': mask?.data },
        where,
      );
      groups.copy();
      result = out;
    } else {
      const values = new QuantizedTensor({
        format: t.format,
        shape: [...t.shape.slice(0, -1), half],
        data: uninitializedArray(Int32Array, rows * Math.ceil((half * bits) / 32)),
        scales: t.scales,
        zeros: t.zeros,
        groupSize: t.groupSize / 2,
      });
      result = new Sparse24Tensor({ shape: t.shape, values, meta: uninitializedArray(Int32Array, rows * metaWords(cols, 4)), bitmask: Tensor.uninitialized(bitmaskShape(t.shape), 'u8') });
    }
    const values = (result.values as QuantizedTensor).data;
    const meta = result.meta as Int32Array;
    const bitmask = (result.bitmask as Tensor<'u8'>).data;
    const args: NativeArgs = {
      bits,
      rows,
      cols,
      group: t.groupSize,
      codes: t.data,
      zeros: t.zeros?.data ?? null,
      score: mask ? SCORES.mask : SCORES.nonzero,
      maskIn: mask?.data ?? null,
      threads,
      values,
      meta,
      mask: bitmask,
      // Outputs made for this call (native/addon/job.h: neither marked nor copied); an `out` is the caller's.
      fresh: o.out === undefined ? [values, meta, bitmask] : [],
    };
    return { args, quant: true, result };
  }
  checkTensor(t, where, 'input', FLOAT_DTYPES);
  checkColumns(t.shape, 4, '2:4', where);
  const [rows, cols] = rowsCols(t.shape);
  const mask = o.mask !== undefined ? checkMask(o.mask, t.shape, where) : undefined;
  const sc = o.prune === true ? scoreArgs(o.score, cols, where) : { score: mask ? SCORES.mask : SCORES.nonzero, norms: null };
  const valuesShape = [...t.shape.slice(0, -1), cols / 2];
  let result: Sparse24Tensor;
  if (o.out !== undefined) {
    const out = checkSparseOut(o.out, t.shape, false, where);
    const values = checkOutTensor(out.values, where, 'options.out.values', [t.dtype as FloatDType], valuesShape);
    checkOutMemory(
      { 'options.out.values': values.data, 'options.out.meta': out.meta, 'options.out.bitmask': out.bitmask?.data },
      { 'the input': t.data, 'options.score.activationNorms': sc.norms, 'options.mask': mask?.data },
      where,
    );
    result = out;
  } else {
    const values = Tensor.uninitialized(valuesShape, t.dtype as FloatDType);
    result = new Sparse24Tensor({ shape: t.shape, values, meta: uninitializedInt16(rows * metaWords(cols, 2)), bitmask: Tensor.uninitialized(bitmaskShape(t.shape), 'u8') });
  }
  const values = (result.values as Tensor).data;
  const meta = result.meta as Int16Array;
  const bitmask = (result.bitmask as Tensor<'u8'>).data;
  const args: NativeArgs = {
    src: t.data,
    srcDtype: dtypeCode(t.dtype),
    rows,
    cols,
    n: 2,
    m: 4,
    score: sc.score,
    norms: sc.norms,
    maskIn: mask?.data ?? null,
    kernel: kernelCode(o.kernel, where),
    threads,
    metaWordBytes: 2,
    mask: bitmask,
    dense: null,
    values,
    meta,
    // Outputs made for this call (native/addon/job.h: neither marked nor copied); an `out` is the caller's.
    fresh: o.out === undefined ? [values, meta, bitmask] : [],
  };
  return { args, quant: false, result };
}

/**
 * Compresses a 2:4-sparse tensor: the kept values, their 2-bit indices
 * (CUTLASS/PyTorch meta) and the compressed-tensors bitmask. The input must
 * be 2:4 already (at most 2 non-zeros per group of 4 along the last
 * dimension; a group with fewer keeps its non-zeros and then its
 * lowest-index zeros) — else ERR_VALUE naming the first bad group — unless
 * `prune` (prune and compress in one pass) or `mask` says what to keep.
 * An int4/int8 QuantizedTensor is compressed code by code (a code equal to
 * its group's zero point counts as zero), keeping its scales.
 */
export async function compress24(t: Tensor | QuantizedTensor, options?: Compress24Options): Promise<Sparse24Tensor> {
  const { args, quant, result } = planCompress24(t, options, 'compress24');
  await callAsync('compress24', () => (quant ? binding.sparseSelectQuant(args, true) : binding.sparseSelect(args, true)));
  return result;
}

/** Synchronous compress24. */
export function compress24Sync(t: Tensor | QuantizedTensor, options?: Compress24Options): Sparse24Tensor {
  const { args, quant, result } = planCompress24(t, options, 'compress24Sync');
  callSync('compress24Sync', () => (quant ? binding.sparseSelectQuant(args, false) : binding.sparseSelect(args, false)));
  return result;
}

/**
 * The parts of `a` still hold what its shape needs: a buffer detached since
 * construction is ERR_DETACHED here, before the native side sees it.
 */
function checkIntact(a: Sparse24Tensor, where: string, what = 'a'): void {
  const [rows, cols] = rowsCols(a.shape);
  const v = a.values;
  if (v instanceof QuantizedTensor) {
    const bits = v.format === 'int4' ? 4 : 8;
    const want = rows * Math.ceil(((cols / 2) * bits) / 32) * 4;
    if (v.data.byteLength !== want) fail(where, 'ERR_DETACHED', `${what}.values holds ${v.data.byteLength} bytes of codes but its shape needs ${want} (was its buffer detached?)`);
    if (v.scales) checkTensor(v.scales, where, `${what}.values.scales`);
    if (v.zeros) checkTensor(v.zeros, where, `${what}.values.zeros`);
  } else {
    checkTensor(v, where, `${what}.values`);
  }
  if (a.meta !== undefined) {
    const want = rows * metaWords(cols, a.quantized ? 4 : 2);
    if (a.meta.length !== want) fail(where, 'ERR_DETACHED', `${what}.meta holds ${a.meta.length} words but [${a.shape.join(', ')}] needs ${want} (was its buffer detached?)`);
  }
  if (a.bitmask !== undefined) checkTensor(a.bitmask, where, `${what}.bitmask`);
}

/** @internal Validates a decompress24 call and builds the native arguments (exported for tests). */
export function planDecompress24(a: Sparse24Tensor, options: Decompress24Options | undefined, where: string): { args: NativeArgs; result: Tensor<FloatDType> | QuantizedTensor } {
  if (!(a instanceof Sparse24Tensor)) fail(where, 'ERR_VALUE', 'expected a Sparse24Tensor (from compress24())');
  const o = checkOptions(options, where, ['threads', 'out']) as Decompress24Options;
  checkIntact(a, where);
  const [rows, cols] = rowsCols(a.shape);
  const base: NativeArgs = {
    rows,
    cols,
    threads: threadCount(o.threads, where),
    kernel: 0,
    meta: a.meta ?? null,
    metaWordBytes: a.quantized ? 4 : 2,
    mask: a.meta === undefined ? (a.bitmask as Tensor<'u8'>).data : null,
  };
  const v = a.values;
  const inputs: NamedViews = { 'a.values': v.data, 'a.meta': a.meta, 'a.bitmask': a.bitmask?.data };
  if (v instanceof QuantizedTensor) {
    const bits = v.format === 'int4' ? 4 : 8;
    let result: QuantizedTensor;
    if (o.out !== undefined) {
      result = checkQuantizedOut(o.out, where, 'options.out', { format: v.format, shape: a.shape, groupSize: v.groupSize * 2, symmetric: v.symmetric, scaleDtype: v.scales?.dtype });
      const groups = adoptGroups(result, v, 'options.out');
      checkOutMemory({ 'options.out': result.data, ...groups.parts }, { ...inputs, 'a.values.scales': v.scales?.data, 'a.values.zeros': v.zeros?.data }, where);
      groups.copy();
    } else {
      const data = uninitializedArray(Int32Array, rows * Math.ceil((cols * bits) / 32));
      result = new QuantizedTensor({ format: v.format, shape: a.shape, data, scales: v.scales, zeros: v.zeros, groupSize: v.groupSize * 2 });
    }
    const fresh = o.out === undefined ? [result.data] : [];
    return { args: { ...base, bits, group: v.groupSize * 2, values: v.data, zeros: v.zeros?.data ?? null, out: result.data, fresh }, result };
  }
  let out: Tensor<FloatDType>;
  if (o.out !== undefined) {
    out = checkOutTensor(o.out, where, 'options.out', [v.dtype as FloatDType], a.shape);
    checkOutMemory({ 'options.out': out.data }, inputs, where);
  } else {
    out = Tensor.uninitialized(a.shape, v.dtype as FloatDType);
  }
  const fresh = o.out === undefined ? [out.data] : [];
  return { args: { ...base, bits: 0, dtype: dtypeCode(v.dtype), values: v.data, out: out.data, fresh }, result: out };
}

/**
 * The dense tensor of a Sparse24Tensor (from its meta, else its bitmask):
 * a float Tensor with +0 at the pruned positions, or for quantized values a
 * QuantizedTensor with the zero-point code there. A meta nibble that is not
 * a 2:4 code, or a bitmask group without exactly two bits, is ERR_VALUE
 * naming the first bad group.
 */
export async function decompress24(a: Sparse24Tensor, options?: Decompress24Options): Promise<Tensor<FloatDType> | QuantizedTensor> {
  const { args, result } = planDecompress24(a, options, 'decompress24');
  await callAsync('decompress24', () => binding.sparseExpand(args, true));
  return result;
}

export function decompress24Sync(a: Sparse24Tensor, options?: Decompress24Options): Tensor<FloatDType> | QuantizedTensor {
  const { args, result } = planDecompress24(a, options, 'decompress24Sync');
  callSync('decompress24Sync', () => binding.sparseExpand(args, false));
  return result;
}

// ---- spmm24 ------------------------------------------------------------------------

/** @internal Validates a spmm24 call and builds the native arguments (exported for tests). */
export function planSpmm24(a: Sparse24Tensor, x: Tensor, options: Spmm24Options | undefined, where: string): { args: NativeArgs; out: Tensor<'f32'> } {
  if (!(a instanceof Sparse24Tensor)) fail(where, 'ERR_VALUE', 'a must be a Sparse24Tensor (from compress24())');
  const o = checkOptions(options, where, ['transB', 'out', 'accumulate', 'kernel', 'threads']) as Spmm24Options;
  if (a.quantized) fail(where, 'ERR_UNSUPPORTED', 'spmm24 multiplies float values; dequantize(a.values) into a float Sparse24Tensor first');
  if (a.meta === undefined) fail(where, 'ERR_VALUE', 'a has no meta (the 2-bit indices spmm24 reads); compress24 makes both');
  checkIntact(a, where);
  checkTensor(x, where, 'x', ['f32']);
  if (x.shape.length !== 2) fail(where, 'ERR_SHAPE', `x must be 2-D, got [${x.shape.join(', ')}]`);
  for (const [k, v] of [['transB', o.transB], ['accumulate', o.accumulate]] as const) {
    if (v !== undefined && typeof v !== 'boolean') fail(where, 'ERR_VALUE', `options.${k} must be a boolean, got ${String(v)}`);
  }
  const transB = o.transB === true;
  const [rows, cols] = rowsCols(a.shape);
  const kx = transB ? (x.shape[1] as number) : (x.shape[0] as number);
  const n = transB ? (x.shape[0] as number) : (x.shape[1] as number);
  if (kx !== cols) fail(where, 'ERR_SHAPE', `inner dimensions differ: a is [${rows}, ${cols}], x is [${x.shape.join(', ')}]${transB ? ' (transB: [n, cols])' : ' ([cols, n])'}`);
  const values = a.values as Tensor;
  let out: Tensor<'f32'>;
  let fresh = false;
  if (o.out !== undefined) {
    out = checkOutTensor(o.out, where, 'options.out', ['f32'], [rows, n]);
    checkOutMemory({ 'options.out': out.data }, { 'a.values': values.data, 'a.meta': a.meta, x: x.data }, where);
  } else {
    if (o.accumulate === true) fail(where, 'ERR_VALUE', 'options.accumulate adds to options.out, which is missing');
    out = Tensor.uninitialized([rows, n], 'f32');
    fresh = true;
  }
  const args: NativeArgs = {
    rows,
    cols,
    n,
    dtype: dtypeCode(values.dtype),
    values: values.data,
    meta: a.meta,
    x: x.data,
    transX: transB,
    out: out.data,
    accumulate: o.accumulate === true,
    kernel: kernelCode(o.kernel, where),
    threads: threadCount(o.threads, where),
    fresh: fresh ? [out.data] : [],
  };
  return { args, out };
}

/**
 * A·x for a 2:4-compressed A [rows, cols] (float values) and f32 x
 * [cols, n] (or [n, cols] with transB), reading only the kept values and
 * their indices. Each output is one fused-multiply-add chain over the row's
 * kept values in column order: for finite x the same bits as
 * matmul(decompress24(a), x) on every kernel and thread count (except that,
 * with accumulate, an output of -0 can stay -0 where matmul gives +0). Meant for a
 * few columns (1–16: a batch of activation vectors). On the thread pool.
 */
export async function spmm24(a: Sparse24Tensor, x: Tensor, options?: Spmm24Options): Promise<Tensor<'f32'>> {
  const { args, out } = planSpmm24(a, x, options, 'spmm24');
  await callAsync('spmm24', () => binding.spmm24(args, true));
  return out;
}

export function spmm24Sync(a: Sparse24Tensor, x: Tensor, options?: Spmm24Options): Tensor<'f32'> {
  const { args, out } = planSpmm24(a, x, options, 'spmm24Sync');
  callSync('spmm24Sync', () => binding.spmm24(args, false));
  return out;
}

// ---- unstructured ------------------------------------------------------------------

/** Python's round(): halves to even. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** @internal Validates a pruneUnstructured call and builds the native arguments (exported for tests). */
export function planUnstructured(input: Tensor | readonly Tensor[], options: PruneUnstructuredOptions, where: string): { args: NativeArgs; results: Omit<UnstructuredResult, 'threshold' | 'pruned'>[]; single: boolean } {
  const single = !Array.isArray(input);
  const list = (single ? [input] : input) as readonly Tensor[];
  if (options === undefined) fail(where, 'ERR_VALUE', 'options.sparsity is required (a fraction in [0, 1])');
  const o = checkOptions(options, where, ['sparsity', 'scope', 'threads', 'out']) as Partial<PruneUnstructuredOptions>;
  const sparsity = o.sparsity;
  if (typeof sparsity !== 'number' || !(sparsity >= 0 && sparsity <= 1)) fail(where, 'ERR_VALUE', `options.sparsity must be a number in [0, 1], got ${String(sparsity)}`);
  const scope = o.scope ?? 'layer';
  if (scope !== 'layer' && scope !== 'global') fail(where, 'ERR_VALUE', `options.scope must be 'layer' or 'global', got ${JSON.stringify(scope)}`);
  if (list.length === 0) fail(where, 'ERR_VALUE', 'no tensors given');
  let outs: readonly unknown[] | undefined;
  if (o.out !== undefined) {
    if (single === Array.isArray(o.out)) fail(where, 'ERR_VALUE', single ? 'options.out must be one { tensor, mask } for one tensor' : 'options.out must be an array of { tensor, mask }, one per tensor');
    outs = single ? [o.out] : (o.out as readonly unknown[]);
    if (outs.length !== list.length) fail(where, 'ERR_SHAPE', `options.out has ${outs.length} entries for ${list.length} tensors`);
  }
  const outViews: NamedViews = {};
  const inputViews: NamedViews = {};
  const tensors: NativeArgs[] = [];
  const fresh: ArrayBufferView[] = [];
  const results: Omit<UnstructuredResult, 'threshold' | 'pruned'>[] = [];
  let total = 0;
  const ks: number[] = [];
  list.forEach((t, i) => {
    const what = single ? 'input' : `tensors[${i}]`;
    checkTensor(t, where, what, FLOAT_DTYPES);
    inputViews[what] = t.data;
    const [rows, cols] = rowsCols(t.shape);
    let tensor: Tensor<FloatDType>;
    let mask: Tensor<'u8'>;
    if (outs !== undefined) {
      const name = single ? 'options.out' : `options.out[${i}]`;
      ({ tensor, mask } = checkDenseOut(outs[i], t, where, name));
      outViews[`${name}.tensor`] = tensor.data;
      outViews[`${name}.mask`] = mask.data;
    } else {
      tensor = Tensor.uninitialized(t.shape, t.dtype as FloatDType);
      mask = Tensor.uninitialized(bitmaskShape(t.shape), 'u8');
      fresh.push(tensor.data, mask.data);
    }
    results.push({ tensor, mask });
    tensors.push({ src: t.data, dtype: dtypeCode(t.dtype), rows, cols, dense: tensor.data, mask: mask.data });
    total += t.size;
    ks.push(roundHalfEven(sparsity * t.size));
  });
  // Every input is read in both passes (all of them, for 'global'), so no output may overlap any.
  checkOutMemory(outViews, inputViews, where);
  const args: NativeArgs = {
    tensors,
    global: scope === 'global',
    k: scope === 'global' ? [roundHalfEven(sparsity * total)] : ks,
    threads: threadCount(o.threads, where),
    fresh,
  };
  return { args, results, single };
}

function finish(r: NativeUnstructured, results: Omit<UnstructuredResult, 'threshold' | 'pruned'>[]): UnstructuredResult[] {
  return results.map((x, i) => ({ ...x, threshold: r.thresholds[i] as number, pruned: r.pruned[i] as number }));
}

/**
 * Unstructured magnitude pruning: zeros the round(sparsity × n) smallest |w|
 * of each tensor ('layer') or of all of them together ('global', one
 * threshold). Elements rank by |w|, then by position (tensors in the order
 * given, row-major), so exactly that many are zeroed: among the values tied
 * at the threshold, the last ones go. Selection by radix histograms (two
 * passes over the data, no sort). NaN is ERR_VALUE. Returns one result per
 * tensor (an array when given an array).
 */
export async function pruneUnstructured(t: Tensor, options: PruneUnstructuredOptions): Promise<UnstructuredResult>;
export async function pruneUnstructured(t: readonly Tensor[], options: PruneUnstructuredOptions): Promise<UnstructuredResult[]>;
export async function pruneUnstructured(t: Tensor | readonly Tensor[], options: PruneUnstructuredOptions): Promise<UnstructuredResult | UnstructuredResult[]> {
  const { args, results, single } = planUnstructured(t, options, 'pruneUnstructured');
  const r = finish(await callAsync('pruneUnstructured', () => binding.pruneUnstructured(args, true)), results);
  return single ? (r[0] as UnstructuredResult) : r;
}

export function pruneUnstructuredSync(t: Tensor, options: PruneUnstructuredOptions): UnstructuredResult;
export function pruneUnstructuredSync(t: readonly Tensor[], options: PruneUnstructuredOptions): UnstructuredResult[];
export function pruneUnstructuredSync(t: Tensor | readonly Tensor[], options: PruneUnstructuredOptions): UnstructuredResult | UnstructuredResult[] {
  const { args, results, single } = planUnstructured(t, options, 'pruneUnstructuredSync');
  const r = finish(callSync('pruneUnstructuredSync', () => binding.pruneUnstructured(args, false)), results);
  return single ? (r[0] as UnstructuredResult) : r;
}

/** The CPU kernel spmm24 runs for options.kernel (default 'auto'): 'reference', 'avx2' or 'avx512'. */
export function spmm24Kernel(kernel?: Kernel): string {
  return binding.spmm24Kernel(kernelCode(kernel, 'spmm24Kernel'));
}

export type { Kernel, FloatDType };
