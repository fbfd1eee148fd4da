// Calibration inside compressModel: the statistics a recipe's activation-
// aware rules read (imatrix-weighted quantize, Wanda, ASVD / SVD-LLM
// whitening, and any method listed in METHOD_STATS), from the recipe's or
// the caller's calibration data run through the runtime, or given.
import { promises as fsp } from 'node:fs';
import { SlimTensorError } from '../errors';
import type { ImportanceMatrix, ImatrixEntry } from '../formats/imatrix';
import { calibrate, calibrationChunks } from '../calibrate/calibrate';
import type { ActivationStats, LayerInputStats } from '../calibrate/stats';
import { resolveTensor, tensorName, type Architecture } from '../model/architectures';
import { loadModel, tokenizerOf } from '../model/model';
import { isBlockLinear, planModel, type ModelPlan } from '../model/load';
import { readTokenFile } from '../model/tokens';
import { compileCalibration, mergeCalibration, METHOD_STATS, type CalibrationSpec, type ResolvedRecipe } from './recipe';

/** What the report says about a calibration run. */
export interface CalibrationRecord {
  /** The text or token file, or '(tokens in memory)' / '(statistics given)'. */
  source: string;
  chunks: number;
  ctx: number;
  tokens: number;
  /** Linear-layer inputs with statistics, and how many of them have a Hessian. */
  inputs: number;
  hessians: number;
  timeMs: number;
  /** How the statistics were had: one run of the whole model, block by block (compressing each block before the next is calibrated), or given. */
  mode: 'whole-model' | 'sequential' | 'given';
  /** Estimated peak bytes of a whole-model calibration: every weight in f32 + every Hessian the rules need (what 'auto' compares with memoryLimit). */
  wholeModelBytes: number;
  /**
   * The calibration's peak bytes as the chosen mode planned them (the
   * pipeline's tensor buffers, under memoryLimit, come on top): whole-model,
   * wholeModelBytes; sequential, the largest block's weights as stored + its
   * replacement weights in f32 + its Hessians + the calibration set's hidden
   * states twice + the embedding as stored.
   */
  plannedPeakBytes: number;
}

/** The most a recipe's rules need from calibration ('none' when no rule reads statistics). */
export function statsNeeded(recipe: ResolvedRecipe): 'none' | 'columns' | 'hessian' {
  let need: 'none' | 'columns' | 'hessian' = 'none';
  for (const r of recipe.rules) {
    const n = METHOD_STATS[r.method](r.options);
    if (n === 'hessian') return n;
    if (n === 'columns') need = n;
  }
  return need;
}

/** Checks statistics given by the caller against the model's tensors: names and input widths. */
function checkStats(stats: unknown, tensors: ReadonlyMap<string, readonly number[]>, where: string): ActivationStats {
  if (!(stats instanceof Map)) throw new SlimTensorError(`${where}: activationStats must be a Map of tensor name → LayerInputStats (calibrate())`, 'ERR_VALUE');
  for (const [name, s] of stats as Map<unknown, LayerInputStats>) {
    const shape = typeof name === 'string' ? tensors.get(name) : undefined;
    if (shape === undefined) {
      const known = [...tensors.keys()].slice(0, 3).join(', ');
      throw new SlimTensorError(`${where}: activationStats has statistics for ${JSON.stringify(name)}, which is not a tensor of the model (its tensors are named like ${known}) — statistics of another model?`, 'ERR_VALUE');
    }
    const ok = typeof s === 'object' && s !== null && Number.isSafeInteger(s.width) && s.sumSquares instanceof Float32Array && s.sumAbs instanceof Float32Array && s.sumSquares.length === s.width && s.sumAbs.length === s.width && Number.isSafeInteger(s.rows) && s.rows >= 0;
    if (!ok) throw new SlimTensorError(`${where}: activationStats[${JSON.stringify(name)}] must be a LayerInputStats (width, rows, sumSquares and sumAbs of width values)`, 'ERR_VALUE');
    if (s.hessian !== undefined && (!(s.hessian instanceof Float32Array) || s.hessian.length !== s.width * s.width)) {
      throw new SlimTensorError(`${where}: activationStats[${JSON.stringify(name)}].hessian must be a Float32Array of width² = ${s.width * s.width} values`, 'ERR_SHAPE');
    }
    const cols = shape[shape.length - 1] as number;
    if (shape.length < 2 || s.width !== cols) {
      throw new SlimTensorError(`${where}: activationStats[${JSON.stringify(name)}] is ${s.width} wide, but the tensor's shape [${shape.join(', ')}] has ${shape.length < 2 ? 'no input channels' : `${cols} input channels`} — statistics of another model?`, 'ERR_SHAPE');
    }
  }
  return stats as ActivationStats;
}

/** The GGUF name a Hugging Face tensor name gets in conversion (the name itself when the architecture does not know it). */
export function ggufNameOf(name: string, arch: Architecture): string {
  const r = resolveTensor(arch, name, 'hf');
  return r === undefined ? name : tensorName(r.role, 'gguf', r.layer);
}

/** The importance matrix (imatrix) a quantize rule reads from calibration statistics: Σx² and the rows counted, per tensor. */
export function statsImportance(stats: ActivationStats, record: Pick<CalibrationRecord, 'source' | 'chunks' | 'ctx'>): ImportanceMatrix {
  const entries = new Map<string, ImatrixEntry>();
  for (const [name, s] of stats) entries.set(name, { cols: s.width, matrices: 1, sums: s.sumSquares, counts: Float32Array.of(s.rows) });
  return { entries, datasets: [record.source], chunkCount: record.chunks, chunkSize: record.ctx > 0 ? record.ctx : undefined, source: undefined };
}

export interface PipelineCalibrationOptions {
  input: string;
  /** The tensors as the pipeline names them (after a Hugging Face folder's GGUF conversion, when it has one). */
  tensors: ReadonlyMap<string, readonly number[]>;
  /** Whether the pipeline uses GGUF names for a Hugging Face folder (GGUF output). */
  ggufNames: boolean;
  calibration: unknown;
  activationStats: unknown;
  hasImatrix: boolean;
  threads: number | undefined;
  signal: AbortSignal | undefined;
  onProgress: ((p: { chunk: number; chunks: number; tokens: number }) => void) | undefined;
  /** compressModel's memoryLimit: what 'auto' compares the whole-model estimate with. */
  memoryLimit: number;
  /** Why this run cannot calibrate sequentially (undefined: it can). */
  sequentialBlocked: string | undefined;
}

/** A sequential calibration compressModel runs next to its pipeline (see compress.ts). */
export interface SequentialCalibration {
  plan: ModelPlan;
  chunks: Int32Array[];
  /** Whether a weight's input needs its Hessian. */
  hessian: (name: string) => boolean;
  /** Filled in (inputs, hessians, timeMs) when the run ends. */
  record: CalibrationRecord;
  started: number;
}

export type PipelineCalibration = { kind: 'stats'; stats: ActivationStats; record: CalibrationRecord } | { kind: 'sequential'; run: SequentialCalibration };

/** Whether a weight's rule (the first matching, as planning picks it) reads the Hessian of its input. */
function hessianRule(recipe: ResolvedRecipe, name: string): boolean {
  const rule = recipe.rules.find((r) => r.match(name));
  return rule !== undefined && METHOD_STATS[rule.method](rule.options) === 'hessian';
}

/**
 * The input a weight reads, for the estimate: q/k/v share the attention's
 * input and gate/up the feed-forward's (in GGUF and Hugging Face names);
 * any other weight is counted alone.
 */
function inputKey(name: string): string {
  return name.replace(/(attn_[qkv]|self_attn\.[qkv]_proj)\.weight$/, 'attn_in').replace(/(ffn_gate|ffn_up|mlp\.gate_proj|mlp\.up_proj)\.weight$/, 'ffn_in');
}

/** Bytes of the Hessians of `names`' inputs (each input once, width² f32). */
function hessianBytes(recipe: ResolvedRecipe, tensors: Iterable<readonly [string, readonly number[]]>): number {
  const seen = new Map<string, number>();
  for (const [name, shape] of tensors) {
    if (shape.length < 2 || !hessianRule(recipe, name)) continue;
    const cols = shape[shape.length - 1] as number;
    seen.set(inputKey(name), cols * cols * 4);
  }
  let total = 0;
  for (const b of seen.values()) total += b;
  return total;
}

/** Estimated peak of a whole-model calibration: every weight in f32 + every Hessian the rules need. */
export function wholeModelCalibrationBytes(recipe: ResolvedRecipe, tensors: ReadonlyMap<string, readonly number[]>): number {
  let weights = 0;
  for (const shape of tensors.values()) weights += shape.reduce((a, d) => a * d, 1) * 4;
  return weights + hessianBytes(recipe, tensors);
}

/**
 * The planned peak of a sequential calibration (see CalibrationRecord.plannedPeakBytes),
 * `rename` giving the pipeline's name of a runtime tensor.
 */
function sequentialPeakBytes(recipe: ResolvedRecipe, plan: ModelPlan, chunks: readonly Int32Array[], rename: (n: string) => string): number {
  const bytes = (t: ModelPlan['tensors'][number]): number => t.data.bytes + (t.scales?.bytes ?? 0) + (t.zeros?.bytes ?? 0) + (t.bitmask?.bytes ?? 0);
  let block = 0;
  for (let l = 0; l < plan.hparams.blockCount; l++) {
    const own = plan.tensors.filter((t) => t.layer === l && t.slot !== 0 && t.slot !== 3);
    const replaced = own.filter((t) => isBlockLinear(t) && recipe.rules.find((r) => r.match(rename(t.name)))?.method !== 'keep');
    const b = own.reduce((s, t) => s + bytes(t), 0) + replaced.reduce((s, t) => s + t.rows * t.cols * 4, 0) + hessianBytes(recipe, own.map((t) => [rename(t.name), [t.rows, t.cols]] as const));
    block = Math.max(block, b);
  }
  const embd = plan.tensors.find((t) => t.slot === 0);
  const hidden = chunks.reduce((s, c) => s + c.length, 0) * plan.hparams.embeddingLength * 4;
  return block + 2 * hidden + (embd === undefined ? 0 : bytes(embd));
}

async function readCalibrationInput(spec: CalibrationSpec): Promise<{ input: string | ArrayLike<number>; source: string }> {
  if (spec.text !== undefined) return { input: await fsp.readFile(spec.text, 'utf8'), source: spec.text };
  if (typeof spec.tokens === 'string') return { input: await readTokenFile(spec.tokens), source: spec.tokens };
  return { input: spec.tokens as readonly number[], source: '(tokens in memory)' };
}

function chunksOf(input: string | ArrayLike<number>, from: Parameters<typeof calibrationChunks>[1], spec: CalibrationSpec, ctx: number | undefined, source: string): Int32Array[] {
  const where = 'compressModel';
  try {
    return calibrationChunks(input, from, { ...(ctx !== undefined ? { ctx } : {}), ...(spec.chunks !== undefined ? { chunks: spec.chunks } : {}) });
  } catch (e) {
    if (e instanceof SlimTensorError) throw new SlimTensorError(`${where}: calibration ${source}: ${e.message.replace(/^calibrationChunks: /, '')}`, e.code);
    throw e;
  }
}

/**
 * The statistics a run uses, or undefined: given ones (checked), a
 * whole-model calibration run when the recipe's rules read statistics and
 * calibration data were given, or — when the calibration's `sequential`
 * asks for it (or 'auto' finds the whole model over memoryLimit) — a
 * sequential run for compressModel to run block by block. A recipe asking
 * for calibration (Recipe.calibration) without data, statistics or an
 * imatrix is an ERR_VALUE.
 */
export async function pipelineStats(recipe: ResolvedRecipe, o: PipelineCalibrationOptions): Promise<PipelineCalibration | undefined> {
  const where = 'compressModel';
  const spec: CalibrationSpec | undefined = mergeCalibration(recipe.calibration, compileCalibration(o.calibration, `${where}: calibration`));
  const hasInput = spec !== undefined && (spec.text !== undefined || spec.tokens !== undefined);
  if (o.activationStats !== undefined) {
    if (hasInput) throw new SlimTensorError(`${where}: give calibration data or activationStats, not both`, 'ERR_VALUE');
    const stats = checkStats(o.activationStats, o.tensors, where);
    const any = stats.values().next().value as LayerInputStats | undefined;
    return {
      kind: 'stats',
      stats,
      record: { source: '(statistics given)', chunks: 0, ctx: 0, tokens: any?.rows ?? 0, inputs: new Set(stats.values()).size, hessians: [...new Set(stats.values())].filter((s) => s.hessian).length, timeMs: 0, mode: 'given', wholeModelBytes: 0, plannedPeakBytes: 0 },
    };
  }
  if (spec !== undefined && !hasInput && !o.hasImatrix) {
    throw new SlimTensorError(`recipe ${recipe.name} needs calibration data: give a text or token file (--calibrate-text FILE / --calibrate-tokens FILE, or compressModel's calibration: { text | tokens }) or an imatrix`, 'ERR_VALUE');
  }
  const need = statsNeeded(recipe);
  if (!hasInput || need === 'none') return undefined;
  const t0 = performance.now();
  const wholeModelBytes = wholeModelCalibrationBytes(recipe, o.tensors);
  const asked = spec.sequential ?? 'auto';
  const sequential = asked === true || (asked === 'auto' && wholeModelBytes > o.memoryLimit && o.sequentialBlocked === undefined);
  if (asked === true && o.sequentialBlocked !== undefined) throw new SlimTensorError(`${where}: sequential calibration: ${o.sequentialBlocked}; use calibration.sequential false`, 'ERR_UNSUPPORTED');
  if (sequential) {
    let plan: ModelPlan;
    try {
      plan = await planModel(o.input);
    } catch (e) {
      if (e instanceof SlimTensorError) throw new SlimTensorError(`${where}: sequential calibration runs the model block by block, and the runtime cannot run ${o.input}: ${e.message}`, e.code);
      throw e;
    }
    const { input, source } = await readCalibrationInput(spec);
    // The model's tokenizer splits text (and gives ids their BOS rule) as the whole-model run does, without loading the weights.
    // (Without a tokenizer, ids take the plan's BOS rule, as a Model without one does.)
    const { tokenizer, error } = await tokenizerOf(plan);
    if (tokenizer === undefined && typeof input === 'string') throw new SlimTensorError(`${where}: calibration ${source}: ${o.input} has no tokenizer the runtime can use (${error ?? 'none found'}); give token ids`, 'ERR_VALUE');
    const ctx = Math.min(spec.ctx ?? 512, plan.hparams.contextLength);
    if (spec.ctx !== undefined && spec.ctx > plan.hparams.contextLength) throw new SlimTensorError(`${where}: calibration ctx ${spec.ctx} is longer than the model's context of ${plan.hparams.contextLength} tokens`, 'ERR_VALUE');
    const chunks = chunksOf(input, tokenizer ?? { vocabSize: plan.hparams.vocabSize, bosId: plan.bosId, addBos: plan.addBos }, spec, ctx, source);
    const rename = (name: string): string => (o.ggufNames && plan.naming === 'hf' ? ggufNameOf(name, plan.architecture) : name);
    const c = (chunks[0] as Int32Array).length;
    const record: CalibrationRecord = { source, chunks: chunks.length, ctx: c, tokens: chunks.length * c, inputs: 0, hessians: 0, timeMs: 0, mode: 'sequential', wholeModelBytes, plannedPeakBytes: sequentialPeakBytes(recipe, plan, chunks, rename) };
    return { kind: 'sequential', run: { plan, chunks, hessian: (name) => hessianRule(recipe, rename(name)), record, started: t0 } };
  }
  const model = await loadModel(o.input, {
    ...(spec.ctx !== undefined ? { contextSize: spec.ctx } : {}),
    ...(o.threads !== undefined ? { threads: o.threads } : {}),
    ...(o.signal !== undefined ? { signal: o.signal } : {}),
  });
  try {
    const { input, source } = await readCalibrationInput(spec);
    const chunks = chunksOf(input, model, spec, spec.ctx, source);
    const rename = (name: string): string => (o.ggufNames && model.plan.naming === 'hf' ? ggufNameOf(name, model.architecture) : name);
    const raw = await calibrate(model, chunks, { hessian: (name) => hessianRule(recipe, rename(name)), ...(o.signal ? { signal: o.signal } : {}), ...(o.onProgress ? { onProgress: o.onProgress } : {}) });
    const stats: ActivationStats = new Map([...raw].map(([k, v]) => [rename(k), v]));
    const ctx = (chunks[0] as Int32Array).length;
    const inputs = new Set(stats.values());
    const record: CalibrationRecord = {
      source,
      chunks: chunks.length,
      ctx,
      tokens: chunks.length * ctx,
      inputs: inputs.size,
      hessians: [...inputs].filter((s) => s.hessian).length,
      timeMs: performance.now() - t0,
      mode: 'whole-model',
      wholeModelBytes,
      plannedPeakBytes: wholeModelBytes,
    };
    return { kind: 'stats', stats, record };
  } finally {
    await model.dispose();
  }
}
