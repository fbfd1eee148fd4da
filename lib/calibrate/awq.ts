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
import { ARCHITECTURES } from '../model/architectures';
import type { LayerInputStats } from './stats';

/** The calibration statistics AWQ reads of one layer input (width, rows, Σ|x| and the Hessian). */
export type AwqInputStats = Pick<LayerInputStats, 'width' | 'rows' | 'sumAbs' | 'hessian'>;

export interface AwqSearchOptions {
  format: QuantFormat;
  /** int4/int8: values per scale along a row, or 'channel'. Default 128. GGUF formats: blocks of 32. */
  groupSize?: number | 'channel';
  symmetric?: boolean;
  scaleDtype?: FloatDType;
  /** Points of the α grid: α = i/grid for i = 0..grid−1 (the paper's 20). Default 20. */
  grid?: number;
  /**
   * The scaled weights will be quantized by GPTQ with these settings: each
   * candidate's error is then GPTQ's (the full sweep per α) instead of
   * round-to-nearest's.
   */
  gptq?: { actOrder?: boolean; dampening?: number; blockSize?: number };
  threads?: number;
}

export interface AwqSearchResult {
  /** Per input column: the weights' columns are multiplied by it, the input divided by it. All ones when α = 0 wins. */
  scales: Float32Array;
  /** The chosen exponent. */
  alpha: number;
  /** Layer-output error tr(E·H·Eᵀ) summed over the weights, at the chosen α. */
  error: number;
  /** The same without scales (α = 0): plain rounding, or GPTQ with options.gptq. */
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
  const base: GptqOptions = { format: options.format, sweep: options.gptq !== undefined, measure: true, ...(options.gptq ?? {}) };
  if (options.groupSize !== undefined) base.groupSize = options.groupSize;
  if (options.symmetric !== undefined) base.symmetric = options.symmetric;
  if (options.scaleDtype !== undefined) base.scaleDtype = options.scaleDtype;
  if (options.threads !== undefined) base.threads = options.threads;
  const errors: number[] = [];
  let best: { alpha: number; error: number; scales: Float32Array } = { alpha: 0, error: Infinity, scales: new Float32Array(n).fill(1) };
  for (let i = 0; i < grid; i++) {
    const alpha = i / grid;
    const s = i === 0 ? new Float32Array(n).fill(1) : awqScales(meanAbs, alpha);
    for (let r = 0; r < rows; r++) for (let j = 0; j < n; j++) scaledW[r * n + j] = (stacked[r * n + j] as number) * (s[j] as number);
    for (let a = 0; a < n; a++) {
      const ia = 1 / (s[a] as number);
      for (let b = 0; b < n; b++) scaledH[a * n + b] = ((h[a * n + b] as number) * ia) / (s[b] as number);
    }
    const r = await gptq(Tensor.from(scaledW, [rows, n]), Tensor.from(scaledH, [n, n]), base);
    const e = options.gptq !== undefined ? r.stats.gptqError : r.stats.rtnError;
    errors.push(e);
    if (e < best.error) best = { alpha, error: e, scales: s };
  }
  return { scales: best.scales, alpha: best.alpha, error: best.error, rtnError: errors[0] as number, errors };
}

// ---- Folding: where each group's scales go.

/** Linear layers sharing one input, and what produces that input. */
export interface AwqGroup {
  layer: number;
  /** 'norm': the input is an RMSNorm's output (its weight divided by s); 'linear': a linear layer's output (its rows divided by s). */
  kind: 'norm' | 'linear';
  /** The tensor the inverse scales fold into. */
  prev: string;
  /** prev's bias, when it has one (divided by s too). */
  prevBias?: string;
  /** The weights whose columns are multiplied by s. */
  linears: string[];
}

export interface AwqSkipped {
  layer: number;
  prev: string;
  linears: string[];
  reason: string;
}

// The groups, in llama.cpp's role names (each mapped to the Hugging Face
// name through the architecture table).
const GROUPS: readonly { kind: 'norm' | 'linear'; prev: string; bias?: string; linears: readonly string[] }[] = [
  { kind: 'norm', prev: 'attn_norm.weight', linears: ['attn_q.weight', 'attn_k.weight', 'attn_v.weight'] },
  { kind: 'linear', prev: 'attn_v.weight', bias: 'attn_v.bias', linears: ['attn_output.weight'] },
  { kind: 'norm', prev: 'ffn_norm.weight', linears: ['ffn_gate.weight', 'ffn_up.weight'] },
  { kind: 'linear', prev: 'ffn_up.weight', linears: ['ffn_down.weight'] },
];

function roleNames(role: string, layer: number): string[] {
  const r = (ARCHITECTURES.llama as { block: readonly { gguf: string; hf: string }[] }).block.find((x) => x.gguf === `blk.{L}.${role}`);
  const hf = r?.hf ?? '';
  const bias = role === 'attn_v.bias' ? 'model.layers.{L}.self_attn.v_proj.bias' : hf;
  return [`blk.${layer}.${role}`, bias.replace('{L}', String(layer))];
}

/**
 * AWQ's groups in a model's tensors (llama-style blocks, GGUF or Hugging
 * Face names): q/k/v after attn_norm, gate/up after ffn_norm, o after v and
 * down after up where v's rows match o's columns (with grouped-query
 * attention they do not: one v row feeds several o columns, so o is not
 * scaled — listed in `skipped`).
 */
export function awqGroups(tensors: readonly { name: string; shape: readonly number[] }[]): { groups: AwqGroup[]; skipped: AwqSkipped[] } {
  const shapes = new Map(tensors.map((t) => [t.name, t.shape] as const));
  const layers = new Set<number>();
  for (const t of tensors) {
    const m = /^(?:blk|model\.layers)\.(\d+)\./.exec(t.name);
    if (m !== null) layers.add(Number(m[1]));
  }
  const groups: AwqGroup[] = [];
  const skipped: AwqSkipped[] = [];
  for (const layer of [...layers].sort((a, b) => a - b)) {
    for (const g of GROUPS) {
      // The spelling (GGUF or HF) the model uses.
      const spelling = roleNames(g.prev, layer).findIndex((n) => shapes.has(n));
      if (spelling < 0) continue;
      const name = (role: string): string => roleNames(role, layer)[spelling] as string;
      const prev = name(g.prev);
      const linears = g.linears.map(name);
      const missing = linears.filter((n) => !shapes.has(n));
      if (missing.length > 0) {
        skipped.push({ layer, prev, linears, reason: `${missing.join(', ')} not in the model` });
        continue;
      }
      const width = (shapes.get(linears[0] as string) as readonly number[])[1] as number;
      const bad = linears.find((n) => (shapes.get(n) as readonly number[]).length !== 2 || (shapes.get(n) as readonly number[])[1] !== width);
      const prevShape = shapes.get(prev) as readonly number[];
      const produced = g.kind === 'norm' ? prevShape[0] : prevShape.length === 2 ? prevShape[0] : undefined;
      if (bad !== undefined || produced !== width) {
        const why =
          g.kind === 'linear' && produced !== undefined
            ? `${prev} has ${produced} output rows and ${linears[0]} ${width} input columns (grouped-query attention: one v row feeds several o columns), so no per-column scale folds into it`
            : `shapes do not match (${prev} [${prevShape.join(', ')}], ${linears.map((n) => `${n} [${(shapes.get(n) as readonly number[]).join(', ')}]`).join(', ')})`;
        skipped.push({ layer, prev, linears, reason: why });
        continue;
      }
      const group: AwqGroup = { layer, kind: g.kind, prev, linears };
      if (g.bias !== undefined && shapes.has(name(g.bias))) group.prevBias = name(g.bias);
      groups.push(group);
    }
  }
  return { groups, skipped };
}

/** Factors a tensor is multiplied by as it is read: W[r][c]·rows[r]·cols[c]; a 1-D tensor v[i]·rows[i]. */
export interface TensorScale {
  rows?: Float32Array;
  cols?: Float32Array;
}

function mulInto(into: Map<string, TensorScale>, name: string, key: 'rows' | 'cols', f: Float32Array): void {
  const t = into.get(name) ?? {};
  const old = t[key];
  t[key] = old === undefined ? Float32Array.from(f) : Float32Array.from(old, (v, i) => v * (f[i] as number));
  into.set(name, t);
}

/**
 * The per-tensor factors that fold each group's scales s (keyed by the
 * group's `prev`): the group's weights' columns × s, prev (and its bias) ÷ s.
 * A model with these applied computes the same function (up to float
 * rounding); AWQ then quantizes the scaled weights.
 */
export function awqFold(groups: readonly AwqGroup[], scales: ReadonlyMap<string, Float32Array>): Map<string, TensorScale> {
  const out = new Map<string, TensorScale>();
  for (const g of groups) {
    const s = scales.get(g.prev);
    if (s === undefined) continue;
    const inv = Float32Array.from(s, (v) => 1 / v);
    for (const l of g.linears) mulInto(out, l, 'cols', s);
    mulInto(out, g.prev, 'rows', inv);
    if (g.prevBias !== undefined) mulInto(out, g.prevBias, 'rows', inv);
  }
  return out;
}

/** Applies a TensorScale to f32 data of `shape` in place (the last dimension is the columns). */
export function applyTensorScale(data: Float32Array, shape: readonly number[], t: TensorScale, name = 'tensor'): void {
  const cols = shape.length >= 2 ? (shape[shape.length - 1] as number) : 1;
  const rows = data.length / cols;
  if (t.rows !== undefined && t.rows.length !== rows) throw new SlimTensorError(`awq: ${name} has ${rows} rows; its scales have ${t.rows.length}`, 'ERR_SHAPE');
  if (t.cols !== undefined && (shape.length < 2 || t.cols.length !== cols)) throw new SlimTensorError(`awq: ${name} has ${shape.length < 2 ? 'no' : cols} columns; its scales have ${t.cols.length}`, 'ERR_SHAPE');
  for (let r = 0; r < rows; r++) {
    const fr = t.rows === undefined ? 1 : (t.rows[r] as number);
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      let v = (data[i] as number) * fr;
      if (t.cols !== undefined) v *= t.cols[c] as number;
      data[i] = v;
    }
  }
}
