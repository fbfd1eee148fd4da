// The `slimtensor demo`: compresses a GGUF model (the bundled stories260K by
// default) with several recipes through the streaming pipeline
// (compressModel), each into a temporary file or folder, and reports what
// each gives: output format and size, compression ratio, error and time.
// Everything runs on the async API: the event loop stays free throughout.
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { backends } from './backend';
import { SlimTensorError } from './errors';
import { GGUFReader } from './formats/gguf';
import { compressModel, type CompressReport } from './pipeline/compress';
import { pruneRecipe, type OutputFormat, type Recipe } from './pipeline/recipe';
import { evaluateAgainst } from './model/evaluate';
import { loadModel, type Model } from './model/model';
import { readTokenFile } from './model/tokens';

/** The package root: this file is lib/demo.ts (tsx) or dist/demo.js (built). */
export const PACKAGE_ROOT = path.join(__dirname, '..');

/** The bundled sample model (see models/README.md for its origin and licence). */
export function bundledModelPath(): string {
  return path.join(PACKAGE_ROOT, 'models', 'stories260K.gguf');
}

/** The bundled evaluation tokens of the sample model (see scripts/make-eval-tokens.mjs). */
export function bundledTokensPath(): string {
  return path.join(PACKAGE_ROOT, 'models', 'stories260K-eval.tokens');
}

/** One recipe the demo runs. */
export interface DemoPreset {
  id: string;
  description: string;
  recipe: Recipe | string;
}

// GGUF presets first (what llama.cpp loads), then compressed-tensors (what
// vLLM loads); each 'mse' row sits under its plain twin. The bundled model's
// rows of 64 and 172 values fit no vLLM Marlin kernel, so the
// compressed-tensors rows are written for transformers' reader (one group
// per row where groups of 128 do not fit) — with the vLLM target the presets
// would keep every layer.
const forTransformers = (id: string, extra: Partial<Recipe> = {}): Recipe => ({ name: id, extends: id.replace(/-mse$/, ''), target: 'transformers', ...extra });

export const DEMO_PRESETS: readonly DemoPreset[] = [
  { id: 'q4_0', description: "GGUF Q4_0 as llama-quantize (head Q6_K, here Q8_0: rows of 64)", recipe: 'q4_0' },
  { id: 'q4_0-mse', description: 'GGUF Q4_0, MSE-searched scales', recipe: { name: 'q4_0-mse', extends: 'q4_0', search: 'mse' } },
  { id: 'q4_1', description: 'GGUF Q4_1 (scale + minimum)', recipe: 'q4_1' },
  { id: 'q8_0', description: 'GGUF Q8_0', recipe: 'q8_0' },
  // The K-quant mixes: llama-quantize's Q4_K_M, Q5_K_M, Q6_K. The bundled
  // model's rows of 64 and 172 values fit no 256-value super-block, so each
  // of its tensors takes llama-quantize's fallback (Q4_K → Q5_0, Q5_K →
  // Q5_1, Q6_K → Q8_0, F16 for the rows of 172): on a model 256 wide or
  // wider (every released one) they are Q4_K/Q5_K/Q6_K.
  { id: 'q4_k_m', description: "GGUF Q4_K_M as llama-quantize (here Q5_0 fallbacks: rows of 64)", recipe: 'q4_k_m' },
  { id: 'q5_k_m', description: "GGUF Q5_K_M as llama-quantize (here Q5_1 / Q8_0 fallbacks)", recipe: 'q5_k_m' },
  { id: 'q6_k', description: "GGUF Q6_K as llama-quantize (here Q8_0 fallbacks)", recipe: 'q6_k' },
  { id: 'w4a16', description: 'compressed-tensors INT4 symmetric, groups of 128', recipe: forTransformers('w4a16') },
  { id: 'w4a16-mse', description: 'compressed-tensors INT4, groups of 128, MSE-searched scales', recipe: forTransformers('w4a16-mse', { search: 'mse' }) },
  { id: 'w4a16-asym', description: 'compressed-tensors INT4 with zero points, groups of 128', recipe: forTransformers('w4a16-asym') },
  { id: 'w8a16', description: 'compressed-tensors INT8 symmetric, groups of 128', recipe: forTransformers('w8a16') },
  // From a GGUF model the 2of4 preset writes GGUF, where pruned tensors stay
  // dense; the demo asks for compressed-tensors' sparse-24-bitmask (a layout
  // only older vLLM/transformers releases read) to show what 2:4 stores.
  { id: '2of4', description: 'compressed-tensors sparse-24-bitmask: 2:4 pruned by magnitude', recipe: { ...pruneRecipe('2:4', 'sparse-24-bitmask'), name: '2of4', format: 'compressed-tensors' } },
];

export const DEMO_PRESET_IDS: readonly string[] = DEMO_PRESETS.map((p) => p.id);

export interface DemoOptions {
  /** A GGUF file; default the bundled stories260K. */
  model?: string;
  /** Preset ids to run (default all, in DEMO_PRESETS order). */
  formats?: readonly string[];
  /** Threads per operation. */
  threads?: number;
  /**
   * A token file (little-endian int32 ids) to run the original and every
   * output on, for the perplexity and KL columns. Default: the bundled
   * tokens when the model is the bundled one; none otherwise.
   */
  tokens?: string;
}

/** A tensor and a reason (kept, or the fallback taken). */
export interface DemoSkip {
  name: string;
  reason: string;
}

export interface DemoFormatResult {
  id: string;
  description: string;
  /** What the recipe writes. */
  format: OutputFormat;
  /** Tensors quantized (pruned, for the 2:4 recipe). */
  quantized: number;
  /** Tensors left as stored (norms, 1-D, what the recipe keeps), each with the reason. */
  kept: DemoSkip[];
  /** Tensors whose rows did not fit the recipe's block or group, and what they got instead. */
  fallbacks: DemoSkip[];
  /** Weights in the quantized tensors. */
  weights: number;
  /** Bytes the quantized tensors take in the input file. */
  originalBytes: number;
  /** Bytes they take once quantized (codes, scales and zero points as the file stores them). */
  quantizedBytes: number;
  /** quantizedBytes · 8 / weights. */
  bitsPerWeight: number;
  /** Root-mean-square error over all quantized weights together. */
  rmse: number;
  /** Largest absolute error of any quantized weight. */
  maxAbs: number;
  /** Bytes of the output on disk (file, or every file of the folder). */
  outputBytes: number;
  /** Input file size / outputBytes. */
  ratio: number;
  /** Wall time of the whole compression (read, quantize, measure, write), in milliseconds. */
  timeMs: number;
  /** On the evaluation tokens (when the demo has some): perplexity, and KL(original ‖ output) per token. */
  perplexity?: number;
  kl?: { mean: number; p99: number; top1Agreement: number };
}

export interface DemoReport {
  model: {
    path: string;
    bundled: boolean;
    name: string | undefined;
    architecture: string | undefined;
    tensors: number;
    /** Bytes of the file. */
    bytes: number;
  };
  formats: DemoFormatResult[];
  /** The evaluation of the outputs (perplexity, KL), or why there is none. */
  evaluation: { tokens: string; count: number; ctx: number; chunks: number; originalPerplexity: number } | { skipped: string };
  /** The CPU kernel family in use. */
  kernel: string;
  totalMs: number;
}

/** Resolves `--formats` ids to presets; unknown ids are an ERR_VALUE naming the valid ones. */
export function selectPresets(ids: readonly string[] | undefined): DemoPreset[] {
  if (ids === undefined || ids.length === 0) return DEMO_PRESETS.slice();
  const unknown = ids.filter((id) => !DEMO_PRESET_IDS.includes(id));
  if (unknown.length > 0) {
    throw new SlimTensorError(`demo: unknown format ${unknown.map((u) => JSON.stringify(u)).join(', ')}; choose from ${DEMO_PRESET_IDS.join(', ')}`, 'ERR_VALUE');
  }
  return DEMO_PRESETS.filter((p) => ids.includes(p.id));
}

function summarise(p: DemoPreset, r: CompressReport): DemoFormatResult {
  let weights = 0;
  let originalBytes = 0;
  let quantizedBytes = 0;
  let se = 0;
  let maxAbs = 0;
  let quantized = 0;
  const kept: DemoSkip[] = [];
  for (const t of r.tensors) {
    if (t.method === 'keep') kept.push({ name: t.name, reason: t.reason ?? 'kept' });
    if (t.method !== 'quantize' && t.method !== 'prune') continue;
    const n = t.shape.reduce((a, d) => a * d, 1);
    quantized++;
    weights += n;
    originalBytes += t.bytesIn;
    quantizedBytes += t.bytesOut;
    if (t.error !== undefined) {
      se += t.error.rmse * t.error.rmse * n;
      maxAbs = Math.max(maxAbs, t.error.maxAbs);
    }
  }
  return {
    id: p.id,
    description: p.description,
    format: r.output.format,
    quantized,
    kept,
    fallbacks: r.fallbacks.map((f) => ({ name: f.name, reason: `${f.reason}: ${f.to}` })),
    weights,
    originalBytes,
    quantizedBytes,
    bitsPerWeight: weights === 0 ? 0 : (quantizedBytes * 8) / weights,
    rmse: weights === 0 ? 0 : Math.sqrt(se / weights),
    maxAbs,
    outputBytes: r.output.bytes,
    ratio: r.ratio,
    timeMs: r.timeMs,
  };
}

/** Runs the demo and returns its measurements (render them with cli/demo-output). */
export async function runDemo(options: DemoOptions = {}): Promise<DemoReport> {
  const started = performance.now();
  const presets = selectPresets(options.formats);
  const modelPath = options.model ?? bundledModelPath();
  // Open it first: a missing or malformed file fails before any work.
  const gguf = await GGUFReader.open(modelPath);
  const name = gguf.metadata.get('general.name');
  const model = {
    path: modelPath,
    bundled: options.model === undefined,
    name: typeof name === 'string' ? name : undefined,
    architecture: gguf.architecture,
    tensors: gguf.tensors.length,
    bytes: gguf.fileSize,
  };
  await gguf.close();
  const tokensPath = options.tokens ?? (options.model === undefined ? bundledTokensPath() : undefined);
  let evaluation: DemoReport['evaluation'] = { skipped: 'no evaluation tokens (pass a token file)' };
  let base: Model | undefined;
  let tokens: Int32Array | undefined;
  const ctxOf = (m: Model): number => Math.min(512, m.contextSize);
  if (tokensPath !== undefined) {
    tokens = await readTokenFile(tokensPath);
    try {
      base = await loadModel(modelPath, { ...(options.threads !== undefined ? { threads: options.threads } : {}) });
    } catch (e) {
      if (!(e instanceof SlimTensorError)) throw e;
      evaluation = { skipped: `the runtime cannot run ${modelPath}: ${e.message}` };
    }
  }
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-demo-'));
  try {
    const formats: DemoFormatResult[] = [];
    for (const p of presets) {
      const output = path.join(tmp, p.id);
      const r = await compressModel({
        input: modelPath,
        output,
        recipe: p.recipe,
        measureError: true,
        ...(options.threads !== undefined ? { threads: options.threads } : {}),
      });
      const f = summarise(p, r);
      if (base !== undefined && tokens !== undefined) {
        // Folders written from the GGUF keep its names: its metadata gives the hyper-parameters.
        const m = await loadModel(output, { hyperparameters: modelPath, ...(options.threads !== undefined ? { threads: options.threads } : {}) });
        try {
          const e = await evaluateAgainst(m, base, tokens, { ctx: ctxOf(base) });
          f.perplexity = e.compressed.perplexity;
          f.kl = { mean: e.kl.mean, p99: e.kl.p99, top1Agreement: e.kl.top1Agreement };
          evaluation = { tokens: tokensPath as string, count: tokens.length, ctx: e.ctx, chunks: e.chunks, originalPerplexity: e.original.perplexity };
        } finally {
          await m.dispose();
        }
      }
      formats.push(f);
    }
    return { model, formats, evaluation, kernel: backends().cpu.kernel, totalMs: performance.now() - started };
  } finally {
    await base?.dispose();
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}
