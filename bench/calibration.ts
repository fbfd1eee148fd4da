// The quality table of activation-aware quantization on stories260K:
// calibrate on models/stories260K-calib.tokens (32 sampled stories, seeds
// 5000+), evaluate on models/stories260K-eval.tokens (16 other sampled
// stories, seeds 1000+; scripts/make-eval-tokens.mjs makes both), chunks of
// 128 tokens as llama-perplexity (second half scored), embedding and head
// kept. Per format (int4 g32, q4_0, q4_1, int8, the q4_k_m mix), per method
// (round-to-nearest, imatrix-weighted, GPTQ, GPTQ with act-order, AWQ, AWQ
// scales then GPTQ with act-order):
// perplexity, KL(f32 ‖ output) and bits per weight — of the tensors the
// method quantized, and of every linear weight (fallbacks included: the
// 172-wide ffn_down rows fit no 32-block, so GGUF stores them F16 and int4
// g32 falls back to one group per row).
import { promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { calibrate, calibrationChunks } from '../lib/calibrate';
import { evaluateAgainst } from '../lib/model/evaluate';
import { loadModel } from '../lib/model/model';
import { compressModel, type CompressReport } from '../lib/pipeline/compress';
import type { Recipe, RecipeRule } from '../lib/pipeline/recipe';
import { markdownTable, type Benchmark, type BenchOptions, type BenchOutcome } from './harness';

const ROOT = path.join(__dirname, '..');
const MODEL = path.join(ROOT, 'models', 'stories260K.gguf');
const tokens = (f: string): Int32Array => new Int32Array(readFileSync(path.join(ROOT, 'models', f)).buffer.slice(0));
const KEEP: RecipeRule = { match: ['*norm*', 'token_embd.weight', 'output.weight'], method: 'keep' };

type Method = 'rtn' | 'imatrix' | 'gptq' | 'gptq-actorder' | 'awq' | 'awq+gptq';
interface Row {
  format: string;
  method: Method;
  recipe: Recipe;
}

function rowsToRun(): Row[] {
  const rows: Row[] = [];
  const add = (format: string, out: 'gguf' | 'compressed-tensors', q: Record<string, unknown>, methods: readonly Method[]): void => {
    for (const method of methods) {
      // With statistics, a quantize rule is imatrix-weighted unless it says importance: false.
      const rule: RecipeRule =
        method === 'rtn' || method === 'imatrix'
          ? { match: '*', method: 'quantize', options: { ...q, ...(method === 'rtn' ? { importance: false } : {}) } }
          : { match: '*', method: method.startsWith('awq') ? 'awq' : 'gptq', options: { ...q, ...(method === 'gptq-actorder' || method === 'awq+gptq' ? { actOrder: true } : {}), ...(method === 'awq+gptq' ? { gptq: true } : {}) } };
      rows.push({ format, method, recipe: { name: `${format} ${method}`, format: out, ...(out === 'compressed-tensors' ? { target: 'transformers' as const } : {}), rules: [KEEP, rule] } });
    }
  };
  const all: Method[] = ['rtn', 'imatrix', 'gptq', 'gptq-actorder', 'awq', 'awq+gptq'];
  add('int4 g32', 'compressed-tensors', { format: 'int4', groupSize: 32, symmetric: true, scaleDtype: 'f16' }, all);
  add('q4_0', 'gguf', { format: 'q4_0' }, all);
  add('q4_1', 'gguf', { format: 'q4_1' }, all);
  add('int8 g128', 'compressed-tensors', { format: 'int8', groupSize: 128, symmetric: true, scaleDtype: 'f16' }, ['rtn', 'gptq']);
  add('q8_0', 'gguf', { format: 'q8_0' }, ['rtn', 'gptq']);
  // llama-quantize's Q4_K_M mix (every tensor its type; here the 256-block
  // K-quants fall back on rows of 64 and 172), with and without the imatrix.
  for (const method of ['rtn', 'imatrix'] as const) {
    rows.push({ format: 'q4_k_m mix', method, recipe: { name: `q4_k_m ${method}`, format: 'gguf', rules: [KEEP, { match: '*', method: 'quantize', options: { mix: 'q4_k_m', ...(method === 'rtn' ? { importance: false } : {}) } }] } });
  }
  return rows;
}

interface Bits {
  /** Bits per weight of the tensors quantized by the method (as written). */
  quantized: number;
  /** Bits per weight over every 2-D linear weight (attention and FFN), fallbacks included. */
  linear: number;
}

function bitsOf(r: CompressReport): Bits {
  const linear = r.tensors.filter((t) => t.shape.length === 2 && /\.(attn_[qkvo]|attn_output|ffn_gate|ffn_up|ffn_down)\.weight$/.test(t.name));
  const elems = (ts: typeof linear): number => ts.reduce((s, t) => s + t.shape.reduce((a, d) => a * d, 1), 0);
  const bytes = (ts: typeof linear): number => ts.reduce((s, t) => s + t.bytesOut, 0);
  const q = linear.filter((t) => t.method === 'quantize');
  return { quantized: (8 * bytes(q)) / elems(q), linear: (8 * bytes(linear)) / elems(linear) };
}

export interface CalibrationRow {
  format: string;
  method: Method;
  perplexity: number;
  perplexityError: number;
  kl: number;
  top1: number;
  bits: Bits;
  /** Tensors the method itself quantized (the rest: fallbacks). */
  tensors: number;
  seconds: number;
}

export interface CalibrationBenchResult {
  calibration: { file: string; chunks: number; ctx: number; seconds: number };
  evaluation: { file: string; chunks: number; ctx: number; perplexity: number };
  rows: CalibrationRow[];
}

export async function runCalibrationBench(o: BenchOptions): Promise<CalibrationBenchResult> {
  const ctx = 128;
  const calibChunks = o.quick ? 8 : 32;
  const evalTokens = tokens('stories260K-eval.tokens').subarray(0, (o.quick ? 4 : 16) * ctx);
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-bench-calib-'));
  const base = await loadModel(MODEL);
  try {
    const t0 = performance.now();
    const chunks = calibrationChunks(tokens('stories260K-calib.tokens'), base, { ctx, chunks: calibChunks });
    const stats = await calibrate(base, chunks, { hessian: true });
    const calibSeconds = (performance.now() - t0) / 1000;
    const rows: CalibrationRow[] = [];
    let basePpl = NaN;
    for (const row of rowsToRun()) {
      o.log(`calibration: ${row.format} ${row.method}`);
      const gguf = row.recipe.format === 'gguf';
      const out = path.join(tmp, `${row.format}-${row.method}`.replace(/[^a-z0-9_-]/gi, '_') + (gguf ? '.gguf' : ''));
      const t1 = performance.now();
      const report = await compressModel({ input: MODEL, output: out, recipe: row.recipe, activationStats: stats });
      const seconds = (performance.now() - t1) / 1000;
      const m = await loadModel(out, gguf ? {} : { hyperparameters: MODEL });
      const e = await evaluateAgainst(m, base, evalTokens, { ctx });
      await m.dispose();
      basePpl = e.original.perplexity;
      const tensors = report.tensors.filter((t) => (row.method === 'rtn' || row.method === 'imatrix' ? t.method === 'quantize' : t.calibrated !== undefined)).length;
      rows.push({ format: row.format, method: row.method, perplexity: e.compressed.perplexity, perplexityError: e.compressed.perplexityError, kl: e.kl.mean, top1: e.kl.top1Agreement, bits: bitsOf(report), tensors, seconds });
    }
    return {
      calibration: { file: 'models/stories260K-calib.tokens', chunks: chunks.length, ctx, seconds: calibSeconds },
      evaluation: { file: 'models/stories260K-eval.tokens', chunks: evalTokens.length / ctx, ctx, perplexity: basePpl },
      rows,
    };
  } finally {
    await base.dispose();
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}

function formatCalibrationBench(r: CalibrationBenchResult): string {
  const rtnOf = new Map(r.rows.filter((x) => x.method === 'rtn').map((x) => [x.format, x.perplexity] as const));
  const gapClosed = (x: CalibrationRow): string => {
    const rtn = rtnOf.get(x.format) as number;
    return x.method === 'rtn' ? '' : `${(((rtn - x.perplexity) / (rtn - r.evaluation.perplexity)) * 100).toFixed(0)} %`;
  };
  return [
    `Activation-aware quantization of stories260K: calibrated on ${r.calibration.file} (${r.calibration.chunks} chunks of ${r.calibration.ctx}, ${r.calibration.seconds.toFixed(1)} s with the Hessian), evaluated on ${r.evaluation.file} (${r.evaluation.chunks} chunks of ${r.evaluation.ctx}, second half scored); f32 perplexity ${r.evaluation.perplexity.toFixed(2)}. Embedding, head and norms kept.`,
    '',
    markdownTable(
      ['format', 'method', 'PPL', 'KL', 'top-1', 'bits/w quantized', 'bits/w linear', 'gap to f32 closed', 'time'],
      r.rows.map((x) => [x.format, x.method, `${x.perplexity.toFixed(2)} ± ${x.perplexityError.toFixed(2)}`, x.kl.toFixed(4), `${(x.top1 * 100).toFixed(1)} %`, x.bits.quantized.toFixed(2), x.bits.linear.toFixed(2), gapClosed(x), `${x.seconds.toFixed(2)} s`]),
      ['left', 'left', 'right', 'right', 'right', 'right', 'right', 'right', 'right'],
    ),
    '',
    'bits/w quantized: over the tensors the rule quantized in its format; bits/w linear: over every attention and FFN weight (ffn_down, rows of 172, is F16 in the GGUF rows and one group per row in int4 g32). gap to f32 closed: (PPL of round-to-nearest − PPL) / (PPL of round-to-nearest − f32 PPL).',
  ].join('\n');
}

export const calibrationBench: Benchmark = {
  name: 'calibration',
  description: 'stories260K: PPL and KL of RTN, imatrix, GPTQ and AWQ at int4 g32 / q4_0 / q4_1 / int8 (calibrated on one token file, evaluated on another)',
  async run(o: BenchOptions): Promise<BenchOutcome> {
    const result = await runCalibrationBench(o);
    return { result, markdown: formatCalibrationBench(result) };
  },
};
