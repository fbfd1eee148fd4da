// AWQ (Lin et al., 2023): per-input-channel scales s that protect the
// channels with large activations. A layer's weight W is stored as
// Q(W·diag(s)) and its input divided by s, which is folded into what
// produces the input (the RMSNorm weight before q/k/v and gate/up, the
// rows of v before o, of up before down), so the output is an ordinary
// model. s = mean|x|^α (normalised), α on a grid, chosen to minimise the
// layer-output error on the calibration inputs: with H = Σ xᵀx that error is
// tr(E·H·Eᵀ) for E = W − Q(W·S)·S⁻¹ = (W·S − Q(W·S))·S⁻¹, i.e. the error of
// plain rounding of W·S against H' = S⁻¹·H·S⁻¹, which the GPTQ op measures
// natively (gptq with sweep: false).
import { cast } from '../cast';
import { SlimTensorError } from '../errors';
import { gptq, type GptqOptions } from '../gptq';
import type { QuantFormat } from '../quantize';
import { Tensor, type FloatDType } from '../tensor';

/** The calibration statistics AWQ reads of one layer input (a subset of calibration's LayerInputStats). */
export interface AwqInputStats {
  /** Input width (columns of the weights). */
  width: number;
  /** Tokens accumulated. */
  rows: number;
  /** Σ|x| per column. */
  sumAbs: Float32Array;
  /** Σ xᵀx, width × width, row-major. */
  hessian?: Float32Array;
}

export interface AwqSearchOptions {
  format: QuantFormat;
  /** int4/int8: values per scale along a row, or 'channel'. Default 128. GGUF formats: blocks of 32. */
  groupSize?: number | 'channel';
  symmetric?: boolean;
  scaleDtype?: FloatDType;
  /** Points of the α grid: α = i/grid for i = 0..grid−1 (the paper's 20). Default 20. */
  grid?: number;
  threads?: number;
}

export interface AwqSearchResult {
  /** Per input column: the weights' columns are multiplied by it, the input divided by it. All ones when α = 0 wins. */
  scales: Float32Array;
  /** The chosen exponent. */
  alpha: number;
  /** Layer-output error tr(E·H·Eᵀ) summed over the weights, at the chosen α. */
  error: number;
  /** The same for plain rounding (α = 0). */
  rtnError: number;
  /** The error at each grid point. */
  errors: number[];
}

/** Smallest scale before normalisation (llm-awq clamps the same way): dead channels keep a finite scale. */
const MIN_SCALE = 1e-4;

/**
 * AWQ's candidate scales for exponent α: max(mean|x|^α, 1e-4), divided by
 * sqrt(max·min) so that they centre on 1 (as llm-awq), rounded to f32.
 */
export function awqScales(meanAbs: ArrayLike<number>, alpha: number): Float32Array {
  const n = meanAbs.length;
  const s = new Float64Array(n);
  let max = 0;
  let min = Infinity;
  for (let j = 0; j < n; j++) {
    const v = Math.max(Math.pow(meanAbs[j] as number, alpha), MIN_SCALE);
    s[j] = v;
    if (v > max) max = v;
    if (v < min) min = v;
  }
  const norm = Math.sqrt(max * min);
  return Float32Array.from(s, (v) => v / norm);
}

/**
 * Searches AWQ's scales for weights that share one input (q/k/v, gate/up,
 * or a single layer): each weight [rows_i, width] as f32, f16 or bf16.
 * Errors are measured natively (gptq with sweep: false) on W·S and
 * S⁻¹·H·S⁻¹; the first α of the least error wins (α = 0 is plain rounding,
 * so the result is never worse than it on H).
 */
export async function awqSearch(weights: readonly Tensor[], stats: AwqInputStats, options: AwqSearchOptions): Promise<AwqSearchResult> {
  const w = 'awqSearch';
  if (!Array.isArray(weights) || weights.length === 0) throw new SlimTensorError(`${w}: weights must be a non-empty array of 2-D tensors`, 'ERR_VALUE');
  const n = stats.width;
  if (!(Number.isSafeInteger(n) && n > 0)) throw new SlimTensorError(`${w}: stats.width must be a positive integer`, 'ERR_VALUE');
  if (stats.hessian === undefined || stats.hessian.length !== n * n) throw new SlimTensorError(`${w}: stats.hessian must hold width² = ${n * n} values (calibrate with hessian: true)`, 'ERR_SHAPE');
  if (stats.sumAbs.length !== n) throw new SlimTensorError(`${w}: stats.sumAbs has ${stats.sumAbs.length} values; width is ${n}`, 'ERR_SHAPE');
  if (!(stats.rows > 0)) throw new SlimTensorError(`${w}: stats.rows must be > 0 (no calibration tokens)`, 'ERR_VALUE');
  const grid = options.grid ?? 20;
  if (!(Number.isInteger(grid) && grid >= 1 && grid <= 1000)) throw new SlimTensorError(`${w}: options.grid must be an integer in 1..1000, got ${String(grid)}`, 'ERR_VALUE');
  // The weights stacked into one f32 matrix (group parameters are per row, so stacking changes nothing).
  let rows = 0;
  for (const [i, t] of weights.entries()) {
    if (!(t instanceof Tensor) || t.shape.length !== 2 || t.shape[1] !== n) {
      throw new SlimTensorError(`${w}: weights[${i}] must be a 2-D tensor with ${n} columns (the input width); got ${t instanceof Tensor ? `[${t.shape.join(', ')}]` : typeof t}`, 'ERR_SHAPE');
    }
    rows += t.shape[0] as number;
  }
  const stacked = new Float32Array(rows * n);
  let at = 0;
  for (const t of weights) {
    const f = t.dtype === 'f32' ? (t.data as Float32Array) : ((await cast(t, 'f32')).data as Float32Array);
    stacked.set(f, at);
    at += f.length;
  }
  const meanAbs = Float64Array.from(stats.sumAbs, (v) => v / stats.rows);
  const h = stats.hessian;
  const scaledW = new Float32Array(rows * n);
  const scaledH = new Float32Array(n * n);
  const base: GptqOptions = { format: options.format, sweep: false, measure: true };
  if (options.groupSize !== undefined) base.groupSize = options.groupSize;
  if (options.symmetric !== undefined) base.symmetric = options.symmetric;
  if (options.scaleDtype !== undefined) base.scaleDtype = options.scaleDtype;
  if (options.threads !== undefined) base.threads = options.threads;
  const errors: number[] = [];
  let best = { alpha: 0, error: Infinity, scales: new Float32Array(n).fill(1) };
  for (let i = 0; i < grid; i++) {
    const alpha = i / grid;
    const s = i === 0 ? new Float32Array(n).fill(1) : awqScales(meanAbs, alpha);
    for (let r = 0; r < rows; r++) for (let j = 0; j < n; j++) scaledW[r * n + j] = (stacked[r * n + j] as number) * (s[j] as number);
    for (let a = 0; a < n; a++) {
      const ia = 1 / (s[a] as number);
      for (let b = 0; b < n; b++) scaledH[a * n + b] = ((h[a * n + b] as number) * ia) / (s[b] as number);
    }
    const r = await gptq(Tensor.from(scaledW, [rows, n]), Tensor.from(scaledH, [n, n]), base);
    const e = r.stats.rtnError;
    errors.push(e);
    if (e < best.error) best = { alpha, error: e, scales: s };
  }
  return { scales: best.scales, alpha: best.alpha, error: best.error, rtnError: errors[0] as number, errors };
}
