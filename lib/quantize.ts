// Group quantization: GGUF blocks (q4_0, q4_1, q5_0, q5_1, q8_0 and the
// K-quants q2_k..q6_k) and compressed-tensors INT4/INT8 groups. Validation and output allocation live here; the
// arithmetic is native (native/core/quant/).
import { fail } from './errors';
import { binding, callAsync, callSync, type ErrorSums, type NativeArgs } from './native';
import { checkOptions, FLOAT_DTYPES, kernelCode, sameShape, threadCount, type Kernel } from './options';
import { assertFixedLength, checkOutMemory, checkOutTensor, checkTensor, dtypeCode, shapeSize, Tensor, uninitializedArray, type DType, type FloatDType } from './tensor';

export type QuantFormat = 'q4_0' | 'q4_1' | 'q5_0' | 'q5_1' | 'q8_0' | 'q2_k' | 'q3_k' | 'q4_k' | 'q5_k' | 'q6_k' | 'int4' | 'int8';

interface FormatInfo {
  code: number; // native QFormat
  bits: number;
  ggml: boolean;
  block: number; // GGUF: values per block (K-quants: super-blocks of 256); int formats: 0
  blockBytes: number; // GGUF: bytes per block
  offset: boolean; // GGUF: blocks store a minimum (x ≈ d·q − m) besides the scale
  search: boolean; // search: 'mse' is implemented
}

const FORMATS: Record<QuantFormat, FormatInfo> = {
  q4_0: { code: 0, bits: 4, ggml: true, block: 32, blockBytes: 18, offset: false, search: true },
  q4_1: { code: 1, bits: 4, ggml: true, block: 32, blockBytes: 20, offset: true, search: true },
  q5_0: { code: 5, bits: 5, ggml: true, block: 32, blockBytes: 22, offset: false, search: false },
  q5_1: { code: 6, bits: 5, ggml: true, block: 32, blockBytes: 24, offset: true, search: false },
  q8_0: { code: 2, bits: 8, ggml: true, block: 32, blockBytes: 34, offset: false, search: true },
  q2_k: { code: 7, bits: 2, ggml: true, block: 256, blockBytes: 84, offset: true, search: false },
  q3_k: { code: 8, bits: 3, ggml: true, block: 256, blockBytes: 110, offset: false, search: false },
  q4_k: { code: 9, bits: 4, ggml: true, block: 256, blockBytes: 144, offset: true, search: false },
  q5_k: { code: 10, bits: 5, ggml: true, block: 256, blockBytes: 176, offset: true, search: false },
  q6_k: { code: 11, bits: 6, ggml: true, block: 256, blockBytes: 210, offset: false, search: false },
  int4: { code: 3, bits: 4, ggml: false, block: 0, blockBytes: 0, offset: false, search: true },
  int8: { code: 4, bits: 8, ggml: false, block: 0, blockBytes: 0, offset: false, search: true },
};
export const QUANT_FORMATS = Object.keys(FORMATS) as QuantFormat[];
/** The GGUF formats (blocks with the scales inside), in QUANT_FORMATS order. */
export const GGML_QUANT_FORMATS = QUANT_FORMATS.filter((f) => FORMATS[f].ggml);
/** Values per GGUF block of `format` (32; 256 for the K-quants' super-blocks); 0 for int4/int8. */
export function ggmlBlockSize(format: QuantFormat): number {
  return formatInfo(format, 'ggmlBlockSize').block;
}
/** Whether `search: 'mse'` is implemented for `format` (q4_0, q4_1, q8_0, int4, int8). */
export function hasMseSearch(format: QuantFormat): boolean {
  return formatInfo(format, 'hasMseSearch').search;
}
const DEFAULT_GROUP = 128;

export interface QuantizeOptions {
  format: QuantFormat;
  /** int4/int8: values per scale along the last dimension, or 'channel' (one per row). Default 128. */
  groupSize?: number | 'channel';
  /** int4/int8: symmetric (zero point 0, the default) or asymmetric (int8 zero points in `zeros`). */
  symmetric?: boolean;
  /** int4/int8: dtype of the stored scales. Default: the input's dtype if 16-bit, else f16. */
  scaleDtype?: FloatDType;
  /**
   * 'none' (default): GGUF formats byte-identical to ggml's quantizers
   * (llama.cpp's importance-weighted ones when `importance` is given);
   * int4/int8 scales from the group's extremes. 'mse' (q4_0, q4_1, q8_0,
   * int4, int8): slimtensor's own search, each group's scale (and offset)
   * chosen to minimise its (importance-weighted) squared error.
   */
  search?: 'none' | 'mse';
  /**
   * Per-input-channel importance (length = last dimension, finite, >= 0),
   * e.g. llama.cpp's imatrix (mean squared activation of each input).
   * GGUF formats: selects llama.cpp's importance-weighted quantizer, the
   * bytes of `ggml_quantize_chunk(type, x, out, 0, rows, cols, imatrix)`;
   * q8_0 ignores it, as ggml does. With search 'mse' it weighs slimtensor's
   * search instead. int4/int8: weighs the 'mse' search (implied).
   */
  importance?: Float32Array;
  /** NaN/Inf in the input: 'error' (default, ERR_VALUE naming the first) or 'zero' (quantized as 0). */
  nonFinite?: 'error' | 'zero';
  kernel?: Kernel;
  /** Threads for this call (default: setThreads / all cores). */
  threads?: number;
  /**
   * Write into this QuantizedTensor's buffers instead of allocating new ones
   * (it must have the same format, shape, group size, scale dtype and
   * symmetry); it is returned. For streaming many tensors of one shape:
   * fresh memory costs page faults that can rival the kernel itself.
   */
  out?: QuantizedTensor;
}

export interface QuantizedTensorParts {
  format: QuantFormat;
  shape: readonly number[];
  data: Uint8Array | Int32Array;
  scales?: Tensor<FloatDType> | undefined;
  zeros?: Tensor<'i8'> | undefined;
  groupSize?: number;
}

/**
 * A quantized tensor. GGUF formats: `data` is the Uint8Array of blocks
 * (rows × cols/block blocks of ggml's layout, the scales inside each block;
 * block = 32 values, 256 for the K-quants). int4/int8: `data`
 * holds the codes biased by +8/+128 and packed into int32 words along each
 * row (compressed-tensors `weight_packed`), `scales` is [rows, groups] and,
 * when asymmetric, `zeros` the int8 zero points [rows, groups].
 */
export class QuantizedTensor {
  readonly format: QuantFormat;
  /** The original tensor's shape; quantized along the last dimension. */
  readonly shape: readonly number[];
  readonly data: Uint8Array | Int32Array;
  readonly scales: Tensor<FloatDType> | undefined;
  readonly zeros: Tensor<'i8'> | undefined;
  /** int4/int8: values per scale. GGUF formats: values per block (32; 256 for the K-quants). */
  readonly groupSize: number;

  constructor(parts: QuantizedTensorParts) {
    const where = 'QuantizedTensor';
    const info = formatInfo(parts.format, where);
    this.format = parts.format;
    shapeSize(parts.shape, where);
    this.shape = Object.freeze(parts.shape.slice());
    const [rows, cols] = rowsCols(this.shape);
    this.groupSize = info.ggml ? info.block : (parts.groupSize ?? cols);
    checkGroup(this.format, this.shape, this.groupSize, where);
    const sizes = byteSizes(info, rows, cols, this.groupSize);
    const expectData = info.ggml ? Uint8Array : Int32Array;
    if (!(parts.data instanceof expectData)) fail(where, 'ERR_VALUE', `${parts.format} data must be a ${expectData.name}`);
    assertFixedLength(parts.data, where, 'data');
    if (parts.data.byteLength !== sizes.data) fail(where, 'ERR_SHAPE', `data holds ${parts.data.byteLength} bytes; ${parts.format} of [${this.shape.join(', ')}] needs ${sizes.data}`);
    this.data = parts.data;
    if (info.ggml) {
      if (parts.scales || parts.zeros) fail(where, 'ERR_VALUE', `${parts.format} keeps its scales inside the blocks; scales/zeros do not apply`);
      this.scales = undefined;
      this.zeros = undefined;
    } else {
      const s = checkTensor(parts.scales, where, 'scales', FLOAT_DTYPES);
      if (s.size !== sizes.groups) fail(where, 'ERR_SHAPE', `scales holds ${s.size} values, expected ${sizes.groups} ([${rows}, ${sizes.groups / Math.max(rows, 1)}])`);
      this.scales = s as Tensor<FloatDType>;
      if (parts.zeros !== undefined) {
        const z = checkTensor(parts.zeros, where, 'zeros', ['i8']);
        if (z.size !== sizes.groups) fail(where, 'ERR_SHAPE', `zeros holds ${z.size} values, expected ${sizes.groups}`);
        this.zeros = z as Tensor<'i8'>;
      } else {
        this.zeros = undefined;
      }
    }
  }

  /** Zero point 0 (no `zeros`). GGUF formats: false when the blocks store a minimum (q4_1, q5_1, q2_k, q4_k, q5_k). */
  get symmetric(): boolean {
    if (FORMATS[this.format].offset) return false;
    return this.zeros === undefined;
  }

  /** Bytes of data, scales and zero points together. */
  get byteLength(): number {
    return this.data.byteLength + (this.scales?.byteLength ?? 0) + (this.zeros?.byteLength ?? 0);
  }

  /**
   * Storage cost per weight, in bits (codes + scales + zero points). Zero
   * points are counted at the code width, as compressed-tensors packs them.
   */
  get bitsPerWeight(): number {
    const n = shapeSize(this.shape);
    if (n === 0) return 0;
    const info = FORMATS[this.format];
    if (info.ggml) return (this.data.byteLength * 8) / n;
    const [rows, cols] = rowsCols(this.shape);
    const codeBits = rows * cols * info.bits;
    const scaleBits = (this.scales?.byteLength ?? 0) * 8;
    const zeroBits = this.zeros ? this.zeros.size * info.bits : 0;
    return (codeBits + scaleBits + zeroBits) / n;
  }

  toString(): string {
    return `QuantizedTensor<${this.format}${FORMATS[this.format].ggml ? '' : `, group ${this.groupSize}`}>[${this.shape.join(', ')}]`;
  }
}

function formatInfo(format: unknown, where: string): FormatInfo {
  if (typeof format !== 'string' || !Object.prototype.hasOwnProperty.call(FORMATS, format)) {
    fail(where, 'ERR_VALUE', `format must be one of ${QUANT_FORMATS.join(', ')}; got ${JSON.stringify(format)}`);
  }
  return FORMATS[format as QuantFormat];
}

function rowsCols(shape: readonly number[]): [number, number] {
  if (shape.length === 0) return [1, 1];
  const cols = shape[shape.length - 1] as number;
  const n = shapeSize(shape);
  return [cols === 0 ? 0 : n / cols, cols];
}

function checkGroup(format: QuantFormat, shape: readonly number[], group: number, where: string): void {
  const cols = rowsCols(shape)[1];
  if (!Number.isSafeInteger(group) || group <= 0) fail(where, 'ERR_VALUE', `groupSize must be a positive integer or 'channel', got ${String(group)}`);
  if (cols % group !== 0) {
    const what = FORMATS[format].ggml ? `${format} blocks of ${group}` : `the group size ${group}`;
    fail(where, 'ERR_SHAPE', `shape [${shape.join(', ')}]: the last dimension ${cols} is not a multiple of ${what}`);
  }
}

function byteSizes(info: FormatInfo, rows: number, cols: number, group: number): { data: number; groups: number } {
  if (info.ggml) return { data: rows * (cols / info.block) * info.blockBytes, groups: 0 };
  const words = Math.ceil((cols * info.bits) / 32);
  return { data: rows * words * 4, groups: rows * (cols / group) };
}

const QUANTIZE_OPTIONS = ['format', 'groupSize', 'symmetric', 'scaleDtype', 'search', 'importance', 'nonFinite', 'kernel', 'threads', 'out'];

/**
 * Validates inputs, allocates the outputs, and builds the native argument object.
 * @internal Exported for tests that call an addon instance directly (test/cuda.test.ts); not part of the API.
 */
export function planQuantize(t: Tensor, options: QuantizeOptions, where: string): { args: NativeArgs; result: QuantizedTensor } {
  checkTensor(t, where, 'input', FLOAT_DTYPES);
  if (options === undefined) fail(where, 'ERR_VALUE', `options.format is required (one of ${QUANT_FORMATS.join(', ')})`);
  const o = checkOptions(options, where, QUANTIZE_OPTIONS) as Partial<QuantizeOptions>;
  const info = formatInfo(o.format, where);
  const format = o.format as QuantFormat;
  const [rows, cols] = t.matrixShape();

  let group = info.block;
  if (info.ggml) {
    if (o.groupSize !== undefined && o.groupSize !== info.block) fail(where, 'ERR_VALUE', `${format} uses fixed blocks of ${info.block} values; groupSize ${String(o.groupSize)} does not apply`);
    if (o.symmetric !== undefined) fail(where, 'ERR_VALUE', `${format} has a fixed scheme; symmetric does not apply`);
    if (o.scaleDtype !== undefined && o.scaleDtype !== 'f16') fail(where, 'ERR_VALUE', `${format} stores f16 scales; scaleDtype ${String(o.scaleDtype)} does not apply`);
  } else {
    group = o.groupSize === 'channel' ? cols : (o.groupSize ?? DEFAULT_GROUP);
    if (group === 0 && cols === 0) group = 1;
  }
  checkGroup(format, t.shape, group, where);
  const symmetric = o.symmetric ?? true;
  if (typeof symmetric !== 'boolean') fail(where, 'ERR_VALUE', `options.symmetric must be a boolean, got ${String(symmetric)}`);
  const scaleDtype: FloatDType = o.scaleDtype ?? (t.dtype === 'f16' || t.dtype === 'bf16' ? t.dtype : 'f16');
  if (!FLOAT_DTYPES.includes(scaleDtype)) fail(where, 'ERR_DTYPE', `options.scaleDtype must be f16, bf16 or f32; got ${JSON.stringify(scaleDtype)}`);

  let search = o.search;
  if (search === undefined) search = o.importance !== undefined && !info.ggml ? 'mse' : 'none';
  if (search !== 'none' && search !== 'mse') fail(where, 'ERR_VALUE', `options.search must be 'none' or 'mse'; got ${JSON.stringify(search)}`);
  if (search === 'mse' && !info.search) {
    fail(where, 'ERR_VALUE', `search: 'mse' is implemented for q4_0, q4_1, q8_0, int4 and int8, not ${format}; ${format}'s importance-weighted quantizer is llama.cpp's (importance without search)`);
  }
  if (o.importance !== undefined) {
    if (!(o.importance instanceof Float32Array)) fail(where, 'ERR_VALUE', 'options.importance must be a Float32Array');
    assertFixedLength(o.importance, where, 'options.importance');
    if (search !== 'mse' && !info.ggml) fail(where, 'ERR_VALUE', "options.importance on int4/int8 weighs the search; it needs search: 'mse'");
    if (o.importance.length !== cols) fail(where, 'ERR_SHAPE', `options.importance has ${o.importance.length} values; the input's last dimension is ${cols}`);
    for (let i = 0; i < o.importance.length; i++) {
      const v = o.importance[i] as number;
      if (!(v >= 0 && v < Infinity)) fail(where, 'ERR_VALUE', `options.importance[${i}] is ${v}; weights must be finite and >= 0`);
    }
  }
  const nonFinite = o.nonFinite ?? 'error';
  if (nonFinite !== 'error' && nonFinite !== 'zero') fail(where, 'ERR_VALUE', `options.nonFinite must be 'error' or 'zero'; got ${JSON.stringify(nonFinite)}`);

  let result: QuantizedTensor;
  let fresh = false;
  if (o.out !== undefined) {
    result = checkOut(o.out, t, o.importance, { format, shape: t.shape, groupSize: group, symmetric: info.ggml ? true : symmetric, scaleDtype: info.ggml ? undefined : scaleDtype }, where);
  } else {
    fresh = true;
    const sizes = byteSizes(info, rows, cols, group);
    // Every output byte is written by the kernel (native tests check it).
    const data = info.ggml ? uninitializedArray(Uint8Array, sizes.data) : uninitializedArray(Int32Array, sizes.data / 4);
    const groupsPerRow = rows === 0 ? 0 : sizes.groups / rows;
    const scales = info.ggml ? undefined : Tensor.uninitialized([...t.shape.slice(0, -1), groupsPerRow], scaleDtype);
    const zeros = info.ggml || symmetric ? undefined : Tensor.uninitialized([...t.shape.slice(0, -1), groupsPerRow], 'i8');
    result = new QuantizedTensor({ format, shape: t.shape, data, scales, zeros, groupSize: group });
  }
  const { data, scales, zeros } = result;
  const args: NativeArgs = {
    src: t.data,
    srcDtype: dtypeCode(t.dtype),
    rows,
    cols,
    format: info.code,
    group,
    symmetric: info.ggml ? true : symmetric,
    scaleDtype: dtypeCode(scaleDtype),
    search: search === 'mse' ? 1 : 0,
    importance: o.importance ?? null,
    nonFinite: nonFinite === 'zero' ? 1 : 0,
    kernel: kernelCode(o.kernel, where),
    threads: threadCount(o.threads, where),
    data,
    scales: scales?.data ?? null,
    zeros: zeros?.data ?? null,
    // Outputs made for this call (native/addon/job.h: neither marked nor copied).
    fresh: fresh ? [data, scales?.data, zeros?.data].filter((a) => a !== undefined) : [],
  };
  return { args, result };
}

/** The layout of a QuantizedTensor a call writes: what an `out` QuantizedTensor must match. */
export interface QuantLayout {
  format: QuantFormat;
  shape: readonly number[];
  groupSize: number;
  symmetric: boolean;
  /** int formats: the dtype of the scales. */
  scaleDtype: FloatDType | undefined;
}

function describeLayout(l: QuantLayout): string {
  return `${l.format}${FORMATS[l.format].ggml ? '' : ` group ${l.groupSize} ${l.symmetric ? 'symmetric' : 'asymmetric'} ${l.scaleDtype} scales`} [${l.shape.join(', ')}]`;
}

/**
 * @internal `what` (options.out, or a part of it) as a QuantizedTensor of
 * exactly `want`'s layout (ERR_SHAPE naming both); checkOutMemory then
 * checks its parts against the inputs.
 */
export function checkQuantizedOut(out: unknown, where: string, what: string, want: QuantLayout): QuantizedTensor {
  if (!(out instanceof QuantizedTensor)) fail(where, 'ERR_VALUE', `${what} must be a QuantizedTensor`);
  const got = describeLayout({ format: out.format, shape: out.shape, groupSize: out.groupSize, symmetric: out.symmetric, scaleDtype: out.scales?.dtype });
  if (got !== describeLayout(want)) fail(where, 'ERR_SHAPE', `${what} is ${got}; this call writes ${describeLayout(want)}`);
  return out;
}

/** options.out must be a QuantizedTensor this call would have created, not sharing the inputs' memory. */
function checkOut(out: unknown, t: Tensor, importance: Float32Array | undefined, want: QuantLayout, where: string): QuantizedTensor {
  const q = checkQuantizedOut(out, where, 'options.out', want);
  checkOutMemory({ 'options.out': q.data, 'options.out.scales': q.scales?.data, 'options.out.zeros': q.zeros?.data }, { 'the input': t.data, 'options.importance': importance }, where);
  return q;
}

/** Quantizes `t` along its last dimension on the thread pool. */
export async function quantize(t: Tensor, options: QuantizeOptions): Promise<QuantizedTensor> {
  const { args, result } = planQuantize(t, options, 'quantize');
  await callAsync('quantize', () => binding.quantize(args, true));
  return result;
}

/**
 * quantize, and the result's quantizationError sums, each row measured
 * right after it is quantized (while it is in the core's cache): the same
 * bytes and the same sums, bit for bit, as the two calls (not exported
 * from the package; the pipeline's measured quantize).
 */
export async function quantizeMeasured(t: Tensor, options: QuantizeOptions): Promise<{ q: QuantizedTensor; sums: ErrorSums }> {
  const { args, result } = planQuantize(t, options, 'quantize');
  args.measureError = true;
  const sums = await callAsync('quantize', () => binding.quantize(args, true));
  return { q: result, sums: sums as ErrorSums };
}

/** Synchronous quantize: blocks the calling thread; for small tensors and scripts. */
export function quantizeSync(t: Tensor, options: QuantizeOptions): QuantizedTensor {
  const { args, result } = planQuantize(t, options, 'quantizeSync');
  callSync('quantizeSync', () => binding.quantize(args, false));
  return result;
}

export interface DequantizeOptions {
  /** Output dtype (default f32, or out's dtype). */
  dtype?: FloatDType;
  kernel?: Kernel;
  threads?: number;
  /** Write into this tensor (same shape, a float dtype) instead of allocating; it is returned. */
  out?: Tensor<FloatDType>;
}

function quantizedArgs(q: QuantizedTensor, where: string, kernel: unknown, threads: unknown): NativeArgs {
  if (!(q instanceof QuantizedTensor)) fail(where, 'ERR_VALUE', 'expected a QuantizedTensor (from quantize())');
  const [rows, cols] = rowsCols(q.shape);
  return {
    format: FORMATS[q.format].code,
    rows,
    cols,
    group: q.groupSize,
    scaleDtype: dtypeCode(q.scales?.dtype ?? 'f16'),
    kernel: kernelCode(kernel, where),
    threads: threadCount(threads, where),
    data: q.data,
    scales: q.scales?.data ?? null,
    zeros: q.zeros?.data ?? null,
  };
}

/** @internal Like planQuantize, for dequantize. */
export function planDequantize(q: QuantizedTensor, options: DequantizeOptions | undefined, where: string): { args: NativeArgs; out: Tensor<FloatDType> } {
  const o = checkOptions(options, where, ['dtype', 'kernel', 'threads', 'out']) as DequantizeOptions;
  const dtype = o.dtype ?? o.out?.dtype ?? 'f32';
  if (!FLOAT_DTYPES.includes(dtype)) fail(where, 'ERR_DTYPE', `options.dtype must be f32, f16 or bf16; got ${JSON.stringify(dtype)}`);
  const args = quantizedArgs(q, where, o.kernel, o.threads);
  let out: Tensor<FloatDType>;
  if (o.out !== undefined) {
    out = checkOutTensor(o.out, where, 'options.out', [dtype], q.shape);
    checkOutMemory({ 'options.out': out.data }, { 'the quantized tensor': q.data, 'its scales': q.scales?.data, 'its zero points': q.zeros?.data }, where);
  } else {
    out = Tensor.uninitialized(q.shape, dtype);
    args.fresh = [out.data];
  }
  args.out = out.data;
  args.outDtype = dtypeCode(dtype);
  return { args, out };
}

/** Reconstructs a float tensor from a QuantizedTensor on the thread pool. */
export async function dequantize(q: QuantizedTensor, options?: DequantizeOptions): Promise<Tensor<FloatDType>> {
  const { args, out } = planDequantize(q, options, 'dequantize');
  await callAsync('dequantize', () => binding.dequantize(args, true));
  return out;
}

export function dequantizeSync(q: QuantizedTensor, options?: DequantizeOptions): Tensor<FloatDType> {
  const { args, out } = planDequantize(q, options, 'dequantizeSync');
  callSync('dequantizeSync', () => binding.dequantize(args, false));
  return out;
}

/** How far a quantized tensor is from its original. */
export interface QuantizationError {
  /** Root-mean-square error. */
  rmse: number;
  /** Largest absolute error. */
  maxAbs: number;
  /** Signal-to-quantization-noise ratio, 10·log10(Σx² / Σ(x−x̂)²) dB (Infinity when exact). */
  sqnrDb: number;
  /** Cosine similarity of original and reconstruction. */
  cosine: number;
}

function planError(original: Tensor, q: QuantizedTensor, where: string): NativeArgs {
  checkTensor(original, where, 'original', FLOAT_DTYPES);
  const args = quantizedArgs(q, where, undefined, undefined);
  if (!sameShape(original.shape, q.shape)) {
    fail(where, 'ERR_SHAPE', `original is [${original.shape.join(', ')}] but the quantized tensor is [${q.shape.join(', ')}]`);
  }
  args.orig = original.data;
  args.origDtype = dtypeCode(original.dtype);
  return args;
}

/** The error statistics the sums describe (quantizationError's result). */
export function errorFromSums(s: ErrorSums): QuantizationError {
  const n = s.count;
  const cosDen = Math.sqrt(s.sumSqRef * s.sumSqDeq);
  return {
    rmse: n === 0 ? 0 : Math.sqrt(s.sumSqErr / n),
    maxAbs: s.maxAbs,
    sqnrDb: s.sumSqErr === 0 ? Infinity : 10 * Math.log10(s.sumSqRef / s.sumSqErr),
    cosine: cosDen === 0 ? (s.sumSqRef === s.sumSqDeq ? 1 : 0) : s.dot / cosDen,
  };
}

/** Error statistics of `q` against `original`, without materialising the dequantized tensor. */
export async function quantizationError(original: Tensor, q: QuantizedTensor): Promise<QuantizationError> {
  return errorFromSums(await quantizationErrorSums(original, q));
}

/** quantizationError's sums (not exported from the package): parts of one tensor add up with addErrorSums. */
export async function quantizationErrorSums(original: Tensor, q: QuantizedTensor): Promise<ErrorSums> {
  const args = planError(original, q, 'quantizationError');
  return callAsync('quantizationError', () => binding.quantizationError(args, true));
}

/** The sums of two disjoint parts of one tensor. */
export function addErrorSums(a: ErrorSums, b: ErrorSums): ErrorSums {
  return {
    sumSqErr: a.sumSqErr + b.sumSqErr,
    sumSqRef: a.sumSqRef + b.sumSqRef,
    sumSqDeq: a.sumSqDeq + b.sumSqDeq,
    dot: a.dot + b.dot,
    maxAbs: Math.max(a.maxAbs, b.maxAbs),
    count: a.count + b.count,
  };
}

export function quantizationErrorSync(original: Tensor, q: QuantizedTensor): QuantizationError {
  const args = planError(original, q, 'quantizationErrorSync');
  return errorFromSums(callSync('quantizationErrorSync', () => binding.quantizationError(args, false)));
}

export type { DType, FloatDType, Kernel };
