// GPTQ: quantization that compensates each column's rounding error on the
// columns not yet quantized, using the layer's input Hessian. Validation and
// output allocation here (shared with quantize()); the algorithm is native
// (native/core/calib/gptq.cc).
import { fail } from './errors';
import { binding, callAsync, callSync, type NativeArgs, type NativeGptqStats } from './native';
import { checkOptions, kernelCode, threadCount, type Kernel } from './options';
import { planQuantize, type QuantFormat, type QuantizedTensor } from './quantize';
import { checkTensor, dtypeCode, Tensor, type FloatDType } from './tensor';

/** The formats gptq() writes. */
export const GPTQ_FORMATS: readonly QuantFormat[] = ['q4_0', 'q4_1', 'q8_0', 'q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k', 'int4', 'int8'];

export interface GptqOptions {
  /** One of GPTQ_FORMATS: GGUF q4_0, q4_1, q8_0, the K-quants q2_k..q6_k (rows a multiple of 256), or int4/int8. */
  format: QuantFormat;
  /** int4/int8: values per scale along a row, or 'channel'. Default 128. GGUF formats: fixed blocks of 32. */
  groupSize?: number | 'channel';
  /** int4/int8: symmetric (default) or asymmetric (zero points). */
  symmetric?: boolean;
  /** int4/int8: dtype of the stored scales (default: the weight's if 16-bit, else f16). */
  scaleDtype?: FloatDType;
  /**
   * Quantize columns in descending order of the Hessian's diagonal (the
   * paper's "act-order"). Groups stay contiguous column ranges with
   * parameters from the weights before any update — compressed-tensors'
   * actorder "weight" (a.k.a. "static") — so no g_idx is stored and vLLM
   * and llama.cpp read the result as any other group-quantized tensor.
   * Default false.
   */
  actOrder?: boolean;
  /**
   * K-quants: each 256-value super-block's scales and minimums (and their
   * 6-/4-bit codes) come from llama.cpp's importance-weighted search with
   * diag(H) as the importance — `quantize()` with `importance: diag(H)` —
   * before the sweep; false: ggml's reference search (`quantize()` without
   * importance). Default true. The other formats take no importance.
   */
  imatrix?: boolean;
  /** Added to diag(H): dampening · mean(diag(H)). Default 0.01. */
  dampening?: number;
  /** Columns per lazy batch update. Default 128. */
  blockSize?: number;
  /**
   * Compute `stats.gptqError` and `stats.rtnError` (tr(E·H·Eᵀ)). It costs
   * about two times the GPTQ sweep's arithmetic; default true.
   */
  measure?: boolean;
  /**
   * false: skip GPTQ's sweep and return round-to-nearest with the same group
   * parameters (as quantize(), dead columns as 0), measuring only its error
   * (`rtnError`, also given as `gptqError`): the layer-output error of plain
   * rounding for one GEMM's worth of arithmetic, what AWQ's scale search
   * evaluates. H need not be definite. Default true.
   */
  sweep?: boolean;
  /** The GEMM's kernel: 'auto', 'reference', 'avx2', 'avx512' (CPU only). */
  kernel?: Kernel;
  threads?: number;
}

export interface GptqStats {
  /** tr((W−Q)·H·(W−Q)ᵀ) on the given H: the layer's output squared error summed over the calibration inputs. NaN if not measured. */
  gptqError: number;
  /** The same for round-to-nearest with the same scales (what quantize() gives). NaN if not measured. */
  rtnError: number;
  /** The same for the damped H, as GPTQ accounts it while it runs (free). NaN without the sweep. */
  dampedError: number;
  /** The value added to diag(H). */
  damp: number;
  /** Input columns with H_ii = 0: their weights are quantized as 0. */
  deadColumns: number;
}

export interface GptqResult {
  quantized: QuantizedTensor;
  stats: GptqStats;
}

const GPTQ_OPTIONS = ['format', 'groupSize', 'symmetric', 'scaleDtype', 'actOrder', 'imatrix', 'dampening', 'blockSize', 'measure', 'sweep', 'kernel', 'threads'];

function planGptq(weight: Tensor, hessian: Tensor, options: GptqOptions, where: string): { args: NativeArgs; quantized: QuantizedTensor } {
  const w = checkTensor(weight, where, 'weight', ['f32', 'f16', 'bf16']);
  if (w.shape.length !== 2) fail(where, 'ERR_SHAPE', `weight must be 2-D [rows, cols]; got shape [${w.shape.join(', ')}]`);
  const [rows, cols] = w.shape as [number, number];
  const h = checkTensor(hessian, where, 'hessian', ['f32']);
  if (h.shape.length !== 2 || h.shape[0] !== cols || h.shape[1] !== cols) {
    fail(where, 'ERR_SHAPE', `hessian must be [${cols}, ${cols}] (the weight's columns squared); got [${h.shape.join(', ')}]`);
  }
  if (options === undefined) fail(where, 'ERR_VALUE', 'options.format is required');
  const o = checkOptions(options, where, GPTQ_OPTIONS) as Partial<GptqOptions>;
  const actOrder = o.actOrder ?? false;
  if (typeof actOrder !== 'boolean') fail(where, 'ERR_VALUE', `options.actOrder must be a boolean, got ${String(actOrder)}`);
  if (o.format !== undefined && typeof o.format === 'string' && ['q5_0', 'q5_1'].includes(o.format)) {
    fail(where, 'ERR_UNSUPPORTED', `gptq writes ${GPTQ_FORMATS.join(', ')}; not ${o.format}`);
  }
  const kquant = typeof o.format === 'string' && o.format.endsWith('_k');
  const imatrix = o.imatrix ?? true;
  if (typeof imatrix !== 'boolean') fail(where, 'ERR_VALUE', `options.imatrix must be a boolean, got ${String(imatrix)}`);
  if (o.imatrix !== undefined && !kquant) fail(where, 'ERR_VALUE', `options.imatrix applies to the K-quants (q2_k..q6_k), not ${String(o.format)}`);
  const measure = o.measure ?? true;
  if (typeof measure !== 'boolean') fail(where, 'ERR_VALUE', `options.measure must be a boolean, got ${String(measure)}`);
  const sweep = o.sweep ?? true;
  if (typeof sweep !== 'boolean') fail(where, 'ERR_VALUE', `options.sweep must be a boolean, got ${String(sweep)}`);
  const dampening = o.dampening ?? 0.01;
  if (typeof dampening !== 'number' || !(dampening >= 0 && dampening < 1e6)) {
    fail(where, 'ERR_VALUE', `options.dampening must be a number in [0, 1e6), got ${String(dampening)}`);
  }
  const blockSize = o.blockSize ?? 128;
  if (!Number.isInteger(blockSize) || blockSize < 1 || blockSize > 65536) {
    fail(where, 'ERR_VALUE', `options.blockSize must be an integer in 1..65536, got ${String(blockSize)}`);
  }
  const kernel = kernelCode(o.kernel, where);
  if (o.kernel === 'cuda') fail(where, 'ERR_UNSUPPORTED', 'gptq runs on the CPU; options.kernel cuda does not apply');
  // The format, group, symmetry and scale dtype as quantize() takes them,
  // and outputs of its layout (every byte written by the kernel).
  const q = planQuantize(w, { format: o.format as QuantFormat, groupSize: o.groupSize, symmetric: o.symmetric, scaleDtype: o.scaleDtype }, where);
  const qa = q.args;
  const args: NativeArgs = {
    weight: w.data,
    weightDtype: dtypeCode(w.dtype),
    rows,
    cols,
    hessian: h.data,
    format: qa.format,
    group: qa.group,
    symmetric: qa.symmetric,
    scaleDtype: qa.scaleDtype,
    actOrder,
    imatrix,
    dampening,
    blockSize,
    measure,
    sweep,
    kernel,
    threads: threadCount(o.threads, where),
    data: qa.data,
    scales: qa.scales,
    zeros: qa.zeros,
    fresh: qa.fresh,
  };
  return { args, quantized: q.result };
}

function toStats(s: NativeGptqStats, measured: boolean, swept: boolean): GptqStats {
  return {
    gptqError: measured ? s.gptqError : NaN,
    rtnError: measured ? s.rtnError : NaN,
    dampedError: swept ? s.dampedError : NaN,
    damp: s.damp,
    deadColumns: s.deadColumns,
  };
}

/**
 * GPTQ-quantizes `weight` [rows, cols] given `hessian` [cols, cols] = Σ x·xᵀ
 * over the layer's calibration inputs x. Returns a QuantizedTensor in the
 * same layout quantize() writes (GGUF blocks or compressed-tensors groups)
 * and the layer-output error against round-to-nearest.
 */
export async function gptq(weight: Tensor, hessian: Tensor, options: GptqOptions): Promise<GptqResult> {
  const { args, quantized } = planGptq(weight, hessian, options, 'gptq');
  const s = await callAsync('gptq', () => binding.gptq(args, true));
  return { quantized, stats: toStats(s, args.measure as boolean, args.sweep as boolean) };
}

/** Synchronous gptq: blocks the calling thread. */
export function gptqSync(weight: Tensor, hessian: Tensor, options: GptqOptions): GptqResult {
  const { args, quantized } = planGptq(weight, hessian, options, 'gptqSync');
  const s = callSync('gptqSync', () => binding.gptq(args, false));
  return { quantized, stats: toStats(s, args.measure as boolean, args.sweep as boolean) };
}
