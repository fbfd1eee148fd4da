// Calibration runs: text or token ids → chunks of ctx tokens as llama.cpp's
// llama-imatrix forms them, and a run of the runtime (lib/model) over the
// chunks collecting every linear layer's input statistics.
import { fail } from '../errors';
import { ACTIVATION_SITES, Model, type ActivationSite } from '../model/model';
import { Tokenizer } from '../model/tokenizer';
import { checkOptions } from '../options';
import { ActivationStatsCollector, type ActivationStats } from './stats';

export interface CalibrationChunkOptions {
  /** Tokens per chunk. Default 512 (llama-imatrix's), at most the model's context size. */
  ctx?: number;
  /** Most chunks (default: every whole chunk of the input). */
  chunks?: number;
}

/** What calibrationChunks reads from a model or a tokenizer. */
/** What splitting token ids needs of a model without a tokenizer: its vocabulary size and BOS rule (a ModelPlan's). */
export interface TokenIdRule {
  vocabSize: number;
  bosId: number | undefined;
  addBos: boolean;
}

type TokenSource = Model | Tokenizer | TokenIdRule;

function vocabOf(src: TokenSource): number {
  return src instanceof Model ? src.hyperparameters.vocabSize : src.vocabSize;
}

function isIdRule(src: unknown): src is TokenIdRule {
  const s = src as TokenIdRule;
  return typeof s === 'object' && s !== null && Number.isSafeInteger(s.vocabSize) && typeof s.addBos === 'boolean' && (s.bosId === undefined || Number.isSafeInteger(s.bosId));
}

/**
 * Splits calibration input into chunks of `ctx` tokens as llama-imatrix does:
 * text is tokenized with BOS (as the vocabulary asks); consecutive
 * non-overlapping chunks of ctx tokens, the rest dropped; when the vocabulary
 * adds BOS, each chunk's first token is replaced by BOS. Token ids are taken
 * as given (checked against the vocabulary). Input shorter than one chunk is
 * an ERR_VALUE naming both lengths.
 */
export function calibrationChunks(input: string | ArrayLike<number>, source: TokenSource, options: CalibrationChunkOptions = {}): Int32Array[] {
  const where = 'calibrationChunks';
  if (!(source instanceof Model) && !(source instanceof Tokenizer) && !isIdRule(source)) fail(where, 'ERR_VALUE', 'source must be a Model, a Tokenizer or a token id rule { vocabSize, bosId, addBos }');
  const o = checkOptions(options, where, ['ctx', 'chunks']) as CalibrationChunkOptions;
  const limit = source instanceof Model ? source.contextSize : Infinity;
  const ctx = o.ctx ?? Math.min(512, limit);
  if (!Number.isInteger(ctx) || ctx < 1) fail(where, 'ERR_VALUE', `ctx must be an integer >= 1, got ${String(o.ctx)}`);
  if (ctx > limit) fail(where, 'ERR_VALUE', `ctx ${ctx} is longer than the model's context of ${limit} tokens`);
  if (o.chunks !== undefined && (!Number.isInteger(o.chunks) || o.chunks < 1)) fail(where, 'ERR_VALUE', `chunks must be an integer >= 1, got ${String(o.chunks)}`);
  const vocab = vocabOf(source);
  let ids: Int32Array;
  let what: string;
  if (typeof input === 'string') {
    if (!(source instanceof Model) && !(source instanceof Tokenizer)) fail(where, 'ERR_VALUE', 'text needs a Model or a Tokenizer to be tokenized; a token id rule splits ids only');
    ids = source instanceof Model ? source.tokenize(input) : source.encode(input);
    what = `the calibration text tokenizes to ${ids.length} tokens`;
  } else {
    if (input === null || typeof input !== 'object' || typeof input.length !== 'number') fail(where, 'ERR_VALUE', 'input must be text or an array of token ids');
    ids = new Int32Array(input.length);
    for (let i = 0; i < input.length; i++) {
      const t = input[i] as number;
      if (!Number.isInteger(t) || t < 0 || t >= vocab) fail(where, 'ERR_VALUE', `token ${i} is ${String(t)}, outside the vocabulary (0..${vocab - 1})`);
      ids[i] = t;
    }
    what = `the calibration input has ${ids.length} tokens`;
  }
  const available = Math.floor(ids.length / ctx);
  if (available < 1) fail(where, 'ERR_VALUE', `${what}, fewer than one chunk of ${ctx}; give more text/tokens or a smaller ctx`);
  const n = Math.min(o.chunks ?? available, available);
  const addBos = source instanceof Tokenizer ? source.addBos && source.bosId !== undefined : source.addBos;
  const bos = source.bosId;
  const out: Int32Array[] = [];
  for (let c = 0; c < n; c++) {
    const chunk = ids.slice(c * ctx, (c + 1) * ctx);
    if (addBos && bos !== undefined) chunk[0] = bos;
    out.push(chunk);
  }
  return out;
}

export interface CalibrateOptions {
  /** Collect the input Hessians Σ xᵀx too (all, none, or the inputs of the weights the function accepts). Default false. */
  hessian?: boolean | ((weightName: string) => boolean);
  /** Also the output head's input (llama-imatrix's --process-output). Default false. */
  head?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: { chunk: number; chunks: number; tokens: number }) => void;
}

/**
 * Runs `chunks` (calibrationChunks' output, each from position 0) through
 * `model`, summing the statistics of every linear layer's input.
 */
export async function calibrate(model: Model, chunks: readonly ArrayLike<number>[], options: CalibrateOptions = {}): Promise<ActivationStats> {
  const where = 'calibrate';
  if (!(model instanceof Model)) fail(where, 'ERR_VALUE', 'model must be a Model (loadModel)');
  const o = checkOptions(options, where, ['hessian', 'head', 'signal', 'onProgress']) as CalibrateOptions;
  if (!Array.isArray(chunks) || chunks.length === 0) fail(where, 'ERR_VALUE', 'chunks must be a non-empty array of token arrays (calibrationChunks)');
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') fail(where, 'ERR_VALUE', 'options.onProgress must be a function');
  const head = o.head ?? false;
  if (typeof head !== 'boolean') fail(where, 'ERR_VALUE', `options.head must be a boolean, got ${String(head)}`);
  const collector = new ActivationStatsCollector(o.hessian !== undefined ? { hessian: o.hessian } : {});
  const sites: ActivationSite[] = ACTIVATION_SITES.filter((s) => head || s !== 'head_in');
  // Every chunk is checked before the first runs (no half-done run on bad input).
  const ids = chunks.map((c, i) => {
    if (c === null || typeof c !== 'object' || typeof c.length !== 'number' || c.length === 0) fail(where, 'ERR_VALUE', `chunk ${i} must be a non-empty array of token ids`);
    if (c.length > model.contextSize) fail(where, 'ERR_VALUE', `chunk ${i} has ${c.length} tokens, more than the model's context of ${model.contextSize}`);
    return model.tokens(c, `${where}: chunk ${i}`);
  });
  let tokens = 0;
  for (let i = 0; i < ids.length; i++) {
    const c = ids[i] as Int32Array;
    await model.forward(c, {
      position: 0,
      logits: head ? 'all' : 'none',
      activationSites: sites,
      onActivation: (b) => collector.add(b),
      ...(o.signal ? { signal: o.signal } : {}),
    });
    tokens += c.length;
    o.onProgress?.({ chunk: i + 1, chunks: ids.length, tokens });
  }
  return collector.stats();
}
