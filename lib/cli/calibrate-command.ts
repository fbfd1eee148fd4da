// `slimtensor calibrate`: runs a model over calibration text or tokens and
// writes llama.cpp's importance matrix (imatrix: Σx² per input column of
// every linear layer, chunked as llama-imatrix chunks) as GGUF or legacy
// .dat. A model whose weights exceed the memory budget runs block by block
// (calibrateSequential: one block's weights in memory at a time).
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import { calibrate, calibrationChunks } from '../calibrate/calibrate';
import { calibrateSequential } from '../calibrate/sequential';
import type { ActivationStats } from '../calibrate/stats';
import { SlimTensorError } from '../errors';
import { writeImatrix } from '../formats/imatrix';
import { planModel } from '../model/load';
import { loadModel, tokenizerOf } from '../model/model';
import { readTokenFile } from '../model/tokens';
import { ggufNameOf, statsImportance } from '../pipeline/calibration';
import type { ModelFlags } from './run-commands';
import { formatBytes } from './table';

export interface CalibrateArgs extends ModelFlags {
  model: string;
  text?: string;
  tokens?: string;
  /** Tokens per chunk (default 512, at most the model's context). */
  ctx?: number;
  chunks?: number;
  imatrix: string;
  format?: 'gguf' | 'dat';
  force?: boolean;
  /** Largest weights (bytes, as stored) run as a whole model; above it, block by block. Default half the physical memory. */
  memoryBudget?: number;
  /** Block by block whatever the size. */
  sequential?: boolean;
  json?: boolean;
  /** Progress lines (stderr); undefined: none. */
  progress?: (line: string) => void;
}

export interface CalibrateReport {
  model: string;
  mode: 'whole' | 'sequential';
  weightBytes: number;
  budget: number;
  source: string;
  chunks: number;
  ctx: number;
  tokens: number;
  entries: number;
  imatrix: string;
  format: 'gguf' | 'dat';
  seconds: number;
  peakRss: number;
}

const where = 'calibrate';

function fail(message: string): never {
  throw new SlimTensorError(`${where}: ${message}`, 'ERR_VALUE');
}

/** Throttled progress: a line at most every half second, and the last one. */
function throttled(sink: ((line: string) => void) | undefined): (line: string, last: boolean) => void {
  let at = 0;
  return (line, last) => {
    if (sink === undefined) return;
    const now = Date.now();
    if (!last && now - at < 500) return;
    at = now;
    sink(line);
  };
}

export async function calibrateCommand(a: CalibrateArgs): Promise<string> {
  if ((a.text === undefined) === (a.tokens === undefined)) fail('give one of --text FILE or --tokens FILE');
  const format = a.format ?? (a.imatrix.toLowerCase().endsWith('.dat') ? 'dat' : 'gguf');
  // An existing output is refused before the model runs (writeImatrix checks again when it writes).
  if (a.force !== true && (await fsp.stat(a.imatrix).then(() => true, () => false))) fail(`${a.imatrix} already exists; pass --force to replace it`);
  const t0 = performance.now();
  const plan = await planModel(a.model, a.hparams !== undefined ? { hyperparameters: a.hparams } : {});
  const weightBytes = plan.tensors.reduce((n, t) => n + t.data.bytes + (t.scales?.bytes ?? 0) + (t.zeros?.bytes ?? 0) + (t.bitmask?.bytes ?? 0), 0);
  const budget = a.memoryBudget ?? Math.floor(os.totalmem() / 2);
  const mode = a.sequential === true || weightBytes > budget ? 'sequential' : 'whole';
  const ctxLimit = plan.hparams.contextLength;
  const ctx = a.ctx ?? Math.min(512, ctxLimit);
  if (ctx > ctxLimit) fail(`--ctx ${ctx} is longer than the model's context of ${ctxLimit} tokens`);
  const source = (a.text ?? a.tokens) as string;
  let input: string | Int32Array;
  if (a.text !== undefined) input = await fsp.readFile(a.text, 'utf8');
  else input = await readTokenFile(a.tokens as string);
  const chunkOpts = { ctx, ...(a.chunks !== undefined ? { chunks: a.chunks } : {}) };
  const loadFlags = {
    ...(a.threads !== undefined ? { threads: a.threads } : {}),
    ...(a.kernel !== undefined ? { kernel: a.kernel } : {}),
    ...(a.activations !== undefined ? { activations: a.activations } : {}),
  };
  const say = throttled(a.progress);
  const named = (e: unknown): never => {
    if (e instanceof SlimTensorError) throw new SlimTensorError(`${where}: ${source}: ${e.message.replace(/^calibrationChunks: /, '')}`, e.code);
    throw e;
  };
  a.progress?.(`calibrate: ${a.model}: ${formatBytes(weightBytes)} of weights, ${mode === 'whole' ? 'the whole model in memory' : `block by block (${a.sequential === true ? '--sequential' : `over the ${formatBytes(budget)} budget`})`}`);
  let stats: ActivationStats;
  let chunks: Int32Array[];
  if (mode === 'whole') {
    const model = await loadModel(a.model, { ...loadFlags, contextSize: ctx, ...(a.hparams !== undefined ? { hyperparameters: a.hparams } : {}), ...(a.signal ? { signal: a.signal } : {}) });
    try {
      try {
        chunks = calibrationChunks(input, model, chunkOpts);
      } catch (e) {
        return named(e);
      }
      stats = await calibrate(model, chunks, {
        ...(a.signal ? { signal: a.signal } : {}),
        onProgress: (p) => say(`calibrate: chunk ${p.chunk}/${p.chunks} (${p.tokens} tokens, ${((performance.now() - t0) / 1000).toFixed(1)} s)`, p.chunk === p.chunks),
      });
    } finally {
      await model.dispose();
    }
  } else {
    const { tokenizer, error } = await tokenizerOf(plan);
    if (typeof input === 'string' && tokenizer === undefined) fail(`${a.model} has no tokenizer the runtime can use (${error ?? 'none found'}); pass --tokens`);
    try {
      // Token ids need only the vocabulary size and BOS rule: the model's tokenizer, or one standing in for ids.
      chunks = calibrationChunks(input, tokenizer ?? fail(`${a.model} has no tokenizer (${error ?? 'none found'}); its BOS rule is unknown`), chunkOpts);
    } catch (e) {
      return named(e);
    }
    stats = await calibrateSequential(plan, chunks, {
      load: loadFlags,
      ...(a.signal ? { signal: a.signal } : {}),
      onProgress: (p) => say(`calibrate: block ${p.block}/${p.blocks}, chunk ${p.chunk}/${p.chunks} (${((performance.now() - t0) / 1000).toFixed(1)} s)`, p.block === p.blocks && p.chunk === p.chunks),
    });
  }
  // llama.cpp's tensor names (a Hugging Face folder's are converted).
  if (plan.naming === 'hf') stats = new Map([...stats].map(([k, v]) => [ggufNameOf(k, plan.architecture), v]));
  const c0 = chunks[0] as Int32Array;
  const inputs = new Set(stats.values());
  const record = { source, chunks: chunks.length, ctx: c0.length, tokens: chunks.length * c0.length, inputs: inputs.size, hessians: 0, timeMs: performance.now() - t0 };
  const m = statsImportance(stats, record);
  await writeImatrix(a.imatrix, m, { format, overwrite: a.force === true });
  const report: CalibrateReport = {
    model: a.model,
    mode,
    weightBytes,
    budget,
    source,
    chunks: record.chunks,
    ctx: record.ctx,
    tokens: record.tokens,
    entries: m.entries.size,
    imatrix: a.imatrix,
    format,
    seconds: (performance.now() - t0) / 1000,
    peakRss: process.resourceUsage().maxRSS * 1024,
  };
  if (a.json === true) return JSON.stringify(report, null, 2);
  return [
    `${a.model}: ${formatBytes(weightBytes)} of weights, ${mode === 'whole' ? 'run whole' : 'run block by block'}`,
    `calibration: ${source}: ${report.chunks} chunk${report.chunks === 1 ? '' : 's'} of ${report.ctx} tokens (${report.tokens} tokens)`,
    `imatrix: ${a.imatrix} (${format}), ${report.entries} tensors`,
    `time: ${report.seconds.toFixed(1)} s; peak RSS ${formatBytes(report.peakRss)}`,
  ].join('\n');
}
