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
import { loadModel } from '../model/model';
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
export function statsImportance(stats: ActivationStats, record: CalibrationRecord): ImportanceMatrix {
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
}

/**
 * The statistics a run uses, or undefined: given ones (checked), or a
 * calibration run when the recipe's rules read statistics and calibration
 * data were given. A recipe asking for calibration (Recipe.calibration)
 * without data, statistics or an imatrix is an ERR_VALUE.
 */
export async function pipelineStats(recipe: ResolvedRecipe, o: PipelineCalibrationOptions): Promise<{ stats: ActivationStats; record: CalibrationRecord } | undefined> {
  const where = 'compressModel';
  const spec: CalibrationSpec | undefined = mergeCalibration(recipe.calibration, compileCalibration(o.calibration, `${where}: calibration`));
  const hasInput = spec !== undefined && (spec.text !== undefined || spec.tokens !== undefined);
  if (o.activationStats !== undefined) {
    if (hasInput) throw new SlimTensorError(`${where}: give calibration data or activationStats, not both`, 'ERR_VALUE');
    const stats = checkStats(o.activationStats, o.tensors, where);
    const any = stats.values().next().value as LayerInputStats | undefined;
    return { stats, record: { source: '(statistics given)', chunks: 0, ctx: 0, tokens: any?.rows ?? 0, inputs: new Set(stats.values()).size, hessians: [...new Set(stats.values())].filter((s) => s.hessian).length, timeMs: 0 } };
  }
  if (spec !== undefined && !hasInput && !o.hasImatrix) {
    throw new SlimTensorError(`recipe ${recipe.name} needs calibration data: give a text or token file (--calibrate-text FILE / --calibrate-tokens FILE, or compressModel's calibration: { text | tokens }) or an imatrix`, 'ERR_VALUE');
  }
  const need = statsNeeded(recipe);
  if (!hasInput || need === 'none') return undefined;
  const t0 = performance.now();
  const model = await loadModel(o.input, {
    ...(spec.ctx !== undefined ? { contextSize: spec.ctx } : {}),
    ...(o.threads !== undefined ? { threads: o.threads } : {}),
    ...(o.signal !== undefined ? { signal: o.signal } : {}),
  });
  try {
    let input: string | ArrayLike<number>;
    let source: string;
    if (spec.text !== undefined) {
      input = await fsp.readFile(spec.text, 'utf8');
      source = spec.text;
    } else if (typeof spec.tokens === 'string') {
      input = await readTokenFile(spec.tokens);
      source = spec.tokens;
    } else {
      input = spec.tokens as readonly number[];
      source = '(tokens in memory)';
    }
    let chunks: Int32Array[];
    try {
      chunks = calibrationChunks(input, model, { ...(spec.ctx !== undefined ? { ctx: spec.ctx } : {}), ...(spec.chunks !== undefined ? { chunks: spec.chunks } : {}) });
    } catch (e) {
      if (e instanceof SlimTensorError) throw new SlimTensorError(`${where}: calibration ${source}: ${e.message.replace(/^calibrationChunks: /, '')}`, e.code);
      throw e;
    }
    const rename = (name: string): string => (o.ggufNames && model.plan.naming === 'hf' ? ggufNameOf(name, model.architecture) : name);
    // Hessians only for the inputs of tensors whose rule reads one (the first matching rule, as planning picks it).
    const hessian = (name: string): boolean => {
      const rule = recipe.rules.find((r) => r.match(rename(name)));
      return rule !== undefined && METHOD_STATS[rule.method](rule.options) === 'hessian';
    };
    const raw = await calibrate(model, chunks, { hessian, ...(o.signal ? { signal: o.signal } : {}), ...(o.onProgress ? { onProgress: o.onProgress } : {}) });
    const stats: ActivationStats = new Map([...raw].map(([k, v]) => [rename(k), v]));
    const ctx = (chunks[0] as Int32Array).length;
    const inputs = new Set(stats.values());
    const record: CalibrationRecord = { source, chunks: chunks.length, ctx, tokens: chunks.length * ctx, inputs: inputs.size, hessians: [...inputs].filter((s) => s.hessian).length, timeMs: performance.now() - t0 };
    return { stats, record };
  } finally {
    await model.dispose();
  }
}
