// The runtime's public face: loadModel() → Model with forward, generate,
// perplexity and an activation hook. Every heavy step runs in native code
// on the libuv pool (the event loop stays free); calls on one model queue
// behind each other; an AbortSignal stops a running step at the next block.
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SlimTensorError, fail } from '../errors';
import { packZeroPoints } from '../formats/compressed-tensors';
import { writeAll } from '../formats/output-file';
import { binding, callAsync } from '../native';
import { kernelCode, threadCount, type Kernel } from '../options';
import { QuantizedTensor } from '../quantize';
import { dtypeCode, Tensor } from '../tensor';
import { fileEntry, isBlockLinear, planModel, WEIGHT_FORMATS, type FilePart, type ModelPlan, type PlanOptions, type TensorSpec, type WeightFormat } from './load';
import type { Architecture } from './architectures';
import type { ModelHyperparameters } from './hparams';
import { createSampler, type SamplingOptions } from './sampling';
import { perplexity, type PerplexityOptions, type PerplexityResult } from './evaluate';
import { tokenizerFromGguf, tokenizerFromHfFolder, type DecodeOptions, type EncodeOptions, type Tokenizer } from './tokenizer';

export interface LoadModelOptions extends PlanOptions {
  /** Positions of the KV cache. Default: the model's context length, at most 4096. */
  contextSize?: number;
  /** Most tokens per native step (longer inputs are split). Default 512. */
  batchSize?: number;
  /**
   * Threads of the model's team. Default: setThreads() / all cores, or 1
   * for a model under 32 MiB of weights (stories260K), whose steps are too
   * short for a team's barriers to pay, and on a busy machine cost a
   * scheduler slice each.
   */
  threads?: number;
  /** 'auto' (widest the CPU has), 'reference', 'avx2', 'avx512'. */
  kernel?: Kernel;
  /**
   * 'auto': quantized weights read 8-bit activation blocks where their
   * kernel has such a path (as llama.cpp does); 'f32': every matmul reads f32
   * activations (exact up to f32 rounding, slower).
   */
  activations?: 'auto' | 'f32';
  /** Dense float weights whose every group of 4 has ≤ 2 non-zeros run on spmm24. Default true. */
  sparse?: boolean;
  signal?: AbortSignal;
}

/** Where a batch of linear-layer inputs was taken. */
export type ActivationSite = 'attn_in' | 'attn_out' | 'ffn_in' | 'ffn_down' | 'head_in';
export const ACTIVATION_SITES: readonly ActivationSite[] = ['attn_in', 'attn_out', 'ffn_in', 'ffn_down', 'head_in'];

/** The inputs of one group of linear layers for a batch of tokens (rows), as f32. */
export interface ActivationBatch {
  /** Block index (-1 for the output head). */
  layer: number;
  site: ActivationSite;
  /** The weights that multiply this input (tensor names as stored). */
  weights: readonly string[];
  /** Position of the first row. */
  position: number;
  /** Rows (tokens) × width (the layers' input size), row-major. */
  rows: number;
  width: number;
  data: Float32Array;
}

export interface ForwardOptions {
  /** Position of the first token; the cache must hold every earlier one. Default 0 (a fresh sequence). */
  position?: number;
  /** Logits of the last token (default), of every token, or none (only fill the cache). */
  logits?: 'last' | 'all' | 'none';
  signal?: AbortSignal;
  /**
   * Called with the inputs of every linear layer, block by block (the step
   * waits for a returned promise). With a hook each block is its own native
   * call; without one a batch is one call.
   */
  onActivation?: (batch: ActivationBatch) => void | Promise<void>;
  /** Which sites the hook receives (default all). */
  activationSites?: readonly ActivationSite[];
}

export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate. Default 64. */
  maxTokens?: number;
  /** Tokens that end generation (not yielded). Default the model's end-of-sequence id. */
  stop?: readonly number[];
  signal?: AbortSignal;
}

export interface GeneratedToken {
  token: number;
  /** Its position in the sequence. */
  position: number;
  /**
   * The text it completes (with a tokenizer): characters split over byte
   * tokens come out whole, with the token that finishes them; '' otherwise.
   */
  text: string;
}

/** A linear weight as loaded: stored format and the kernel running it. */
export interface LinearInfo {
  name: string;
  format: string;
  kernel: string;
}

interface NativeInfo {
  weightBytes: number;
  filled: number;
  linears: string[];
}

/** Below this many bytes of weights a model runs on one thread unless told otherwise (see LoadModelOptions.threads). */
const SMALL_MODEL_BYTES = 32 << 20;

function isAbort(e: unknown): boolean {
  return e instanceof SlimTensorError && /(^|: )aborted$/.test(e.message);
}

/** Checks a token array: integers in [0, vocab). */
function tokenArray(tokens: ArrayLike<number>, vocab: number, where: string): Int32Array {
  if (tokens === null || typeof tokens !== 'object' || typeof tokens.length !== 'number') fail(where, 'ERR_VALUE', 'tokens must be an array of token ids');
  const out = new Int32Array(tokens.length);
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i] as number;
    if (!Number.isInteger(t) || t < 0 || t >= vocab) fail(where, 'ERR_VALUE', `token ${i} is ${String(t)}, outside the vocabulary (0..${vocab - 1})`);
    out[i] = t;
  }
  return out;
}

export class Model {
  readonly path: string;
  readonly architecture: Architecture;
  readonly hyperparameters: Readonly<ModelHyperparameters>;
  /** Bytes of weights held in memory (as stored, plus 2:4 metadata and zero points derived at load). */
  readonly weightBytes: number;
  readonly contextSize: number;
  readonly batchSize: number;
  readonly linears: readonly LinearInfo[];
  /** Beginning-of-sequence id, and whether sequences start with it (llama.cpp's add_bos). */
  readonly bosId: number | undefined;
  readonly addBos: boolean;
  readonly eosId: number | undefined;
  /** The load plan (file layout of every tensor). */
  readonly plan: ModelPlan;
  /** llama.cpp's tokenizer of the model (from the GGUF metadata or the folder's tokenizer files), when it has one. */
  readonly tokenizer: Tokenizer | undefined;
  /** Why there is no tokenizer. */
  readonly tokenizerError: string | undefined;

  private readonly box: object;
  private tail: Promise<unknown> = Promise.resolve();
  private disposed = false;
  private filled = 0;

  private constructor(plan: ModelPlan, box: object, info: NativeInfo, contextSize: number, batchSize: number, tokenizer: Tokenizer | undefined, tokenizerError: string | undefined) {
    this.plan = plan;
    this.path = plan.path;
    this.architecture = plan.architecture;
    this.hyperparameters = Object.freeze({ ...plan.hparams });
    this.box = box;
    this.weightBytes = info.weightBytes;
    this.contextSize = contextSize;
    this.batchSize = batchSize;
    this.linears = Object.freeze(
      info.linears.map((l) => {
        const [name, format, kernel] = l.split('\t') as [string, string, string];
        return Object.freeze({ name, format, kernel });
      }),
    );
    this.tokenizer = tokenizer;
    this.tokenizerError = tokenizerError;
    // The tokenizer's view wins: it reads the same metadata as llama.cpp does.
    this.bosId = tokenizer ? tokenizer.bosId : plan.bosId;
    this.eosId = tokenizer ? tokenizer.eosId : plan.eosId;
    this.addBos = tokenizer ? tokenizer.addBos && tokenizer.bosId !== undefined : plan.addBos;
  }

  /** @internal Use loadModel(). */
  static async load(p: string, options: LoadModelOptions = {}): Promise<Model> {
    const where = 'loadModel';
    if (typeof p !== 'string') fail(where, 'ERR_VALUE', 'path must be a string');
    if (typeof options !== 'object' || options === null) fail(where, 'ERR_VALUE', 'options must be an object');
    const known = ['contextSize', 'batchSize', 'threads', 'kernel', 'activations', 'sparse', 'signal', 'hyperparameters'];
    for (const k of Object.keys(options)) if (!known.includes(k)) fail(where, 'ERR_VALUE', `unknown option ${JSON.stringify(k)}; known: ${known.join(', ')}`);
    kernelCode(options.kernel, where);
    if (options.kernel === 'cuda') fail(where, 'ERR_UNSUPPORTED', "the runtime runs on the CPU; options.kernel 'cuda' is not available for models");
    threadCount(options.threads, where);
    if (options.activations !== undefined && options.activations !== 'auto' && options.activations !== 'f32') fail(where, 'ERR_VALUE', `options.activations must be 'auto' or 'f32', got ${JSON.stringify(options.activations)}`);
    options.signal?.throwIfAborted();
    const plan = await planModel(p, options.hyperparameters !== undefined ? { hyperparameters: options.hyperparameters } : {});
    return Model.fromPlan(plan, options);
  }

  /** @internal Loads the tensors of a plan (planModel's result; the files must not have changed since). */
  static async fromPlan(plan: ModelPlan, options: LoadModelOptions = {}): Promise<Model> {
    const { box, info, contextSize, batchSize } = await loadNative('loadModel', plan, plan.tensors, plan.files, plan.hparams.blockCount, false, options);
    try {
      const { tokenizer, error } = await tokenizerOf(plan);
      return new Model(plan, box, info, contextSize, batchSize, tokenizer, error);
    } catch (e) {
      binding.modelDispose(box);
      throw e;
    }
  }

  /** Text to token ids with the model's tokenizer (BOS added as the vocabulary asks unless addSpecial: false). */
  tokenize(text: string, options: EncodeOptions = {}): Int32Array {
    if (typeof text !== 'string') fail('Model.tokenize', 'ERR_VALUE', 'text must be a string');
    return this.requireTokenizer('Model.tokenize').encode(text, options);
  }

  /** Token ids to text with the model's tokenizer. */
  detokenize(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    return this.requireTokenizer('Model.detokenize').decode(ids, options);
  }

  private requireTokenizer(where: string): Tokenizer {
    if (this.tokenizer === undefined) fail(where, 'ERR_UNSUPPORTED', `${this.path} has no tokenizer the runtime can use (${this.tokenizerError ?? 'none found'}); pass token ids`);
    return this.tokenizer;
  }

  /** Positions of the cache filled by finished steps (where a continuation starts). */
  get position(): number {
    return this.filled;
  }

  /** Checks and converts token ids (integers in 0..vocab-1). */
  tokens(ids: ArrayLike<number>, where = 'Model'): Int32Array {
    return tokenArray(ids, this.hyperparameters.vocabSize, where);
  }

  /**
   * Runs tokens at positions [position, position + n) and returns logits:
   * [vocab] for the last token, [n × vocab] for all, or an empty array.
   */
  async forward(tokens: ArrayLike<number>, options: ForwardOptions = {}): Promise<Float32Array> {
    const where = 'Model.forward';
    const ids = tokenArray(tokens, this.hyperparameters.vocabSize, where);
    if (ids.length === 0) fail(where, 'ERR_VALUE', 'no tokens');
    const position = options.position ?? 0;
    if (!Number.isInteger(position) || position < 0) fail(where, 'ERR_VALUE', `options.position must be an integer >= 0, got ${String(options.position)}`);
    const mode = options.logits ?? 'last';
    if (mode !== 'last' && mode !== 'all' && mode !== 'none') fail(where, 'ERR_VALUE', `options.logits must be 'last', 'all' or 'none'`);
    if (position + ids.length > this.contextSize) {
      fail(where, 'ERR_VALUE', `positions ${position}..${position + ids.length - 1} do not fit the context of ${this.contextSize} tokens (loadModel's contextSize; the model was trained for ${this.hyperparameters.contextLength})`);
    }
    const sites = options.activationSites ?? ACTIVATION_SITES;
    if (options.onActivation !== undefined && typeof options.onActivation !== 'function') fail(where, 'ERR_VALUE', 'options.onActivation must be a function');
    for (const s of sites) if (!ACTIVATION_SITES.includes(s)) fail(where, 'ERR_VALUE', `unknown activation site ${JSON.stringify(s)}; known: ${ACTIVATION_SITES.join(', ')}`);
    return this.exclusive(where, options.signal, () => this.run(ids, position, mode, options.signal, options.onActivation, sites));
  }

  private async run(
    ids: Int32Array,
    position: number,
    mode: 'last' | 'all' | 'none',
    signal: AbortSignal | undefined,
    hook: ForwardOptions['onActivation'],
    sites: readonly ActivationSite[],
  ): Promise<Float32Array> {
    const where = 'Model.forward';
    if (position > this.filled) fail(where, 'ERR_VALUE', `position ${position} is past the ${this.filled} positions the cache holds`);
    const vocab = this.hyperparameters.vocabSize;
    const out = new Float32Array(mode === 'all' ? ids.length * vocab : mode === 'last' ? vocab : 0);
    const L = this.hyperparameters.blockCount;
    for (let start = 0; start < ids.length; start += this.batchSize) {
      signal?.throwIfAborted();
      const chunk = ids.subarray(start, Math.min(ids.length, start + this.batchSize));
      const n = chunk.length;
      const last = start + n === ids.length;
      const wantLogits = mode === 'all' || (mode === 'last' && last);
      const logits = mode === 'all' ? out.subarray(start * vocab, (start + n) * vocab) : wantLogits ? out : undefined;
      const pos = position + start;
      // `fresh`: outputs made here for the call, out of the caller's reach until it returns (native/addon/job.h).
      const base = { model: this.box, n, l0: 0, l1: 0, all: mode === 'all' };
      if (hook === undefined) {
        this.filled = await callAsync(where, () => binding.modelStep({ ...base, begin: true, tokens: chunk, pos, l1: L, finish: true, logits, fresh: logits ? [logits] : [] }, true));
        continue;
      }
      await callAsync(where, () => binding.modelStep({ ...base, begin: true, tokens: chunk, pos, finish: false }, true));
      const h = this.hyperparameters;
      const widths = [h.embeddingLength, h.headCount * h.headDim, h.embeddingLength, h.feedForwardLength];
      for (let l = 0; l < L; l++) {
        signal?.throwIfAborted();
        const capture = widths.map((w, i) => (sites.includes(ACTIVATION_SITES[i] as ActivationSite) ? new Float32Array(n * w) : null));
        await callAsync(where, () => binding.modelStep({ ...base, l0: l, l1: l + 1, capture, finish: false, fresh: capture.filter((c) => c !== null) }, true));
        for (let i = 0; i < 4; i++) {
          const data = capture[i];
          if (data) await hook({ layer: l, site: ACTIVATION_SITES[i] as ActivationSite, weights: this.weightsOf(l, i), position: pos, rows: n, width: widths[i] as number, data });
        }
      }
      const outs = mode === 'all' ? n : 1;
      const headIn = sites.includes('head_in') && wantLogits ? new Float32Array(outs * h.embeddingLength) : null;
      this.filled = await callAsync(where, () => binding.modelStep({ ...base, finish: true, logits, headIn, fresh: [logits, headIn].filter((c) => c != null) }, true));
      if (headIn) {
        const head = this.plan.tensors.find((t) => t.slot === 2) ?? (this.plan.tensors.find((t) => t.slot === 0) as TensorSpec);
        await hook({ layer: -1, site: 'head_in', weights: [head.name], position: pos + n - outs, rows: outs, width: h.embeddingLength, data: headIn });
      }
    }
    return out;
  }

  private weightsOf(layer: number, site: number): string[] {
    return siteWeights(this.plan.tensors, layer, site);
  }

  /**
   * Generates up to maxTokens tokens after `prompt` (text, tokenized with
   * BOS as the vocabulary asks, or token ids), yielding each as it comes.
   * The prompt starts at position 0. Generation stops at an end-of-generation
   * token (the tokenizer's, else the EOS id) unless options.stop says otherwise.
   */
  async *generate(prompt: string | ArrayLike<number>, options: GenerateOptions = {}): AsyncGenerator<GeneratedToken, void, undefined> {
    const where = 'Model.generate';
    const ids = typeof prompt === 'string' ? this.requireTokenizer(where).encode(prompt) : tokenArray(prompt, this.hyperparameters.vocabSize, where);
    if (ids.length === 0) fail(where, 'ERR_VALUE', 'the prompt is empty (start it with the BOS token)');
    const maxTokens = options.maxTokens ?? 64;
    if (!Number.isInteger(maxTokens) || maxTokens < 0) fail(where, 'ERR_VALUE', `maxTokens must be an integer >= 0, got ${String(options.maxTokens)}`);
    const stop = options.stop ?? (this.tokenizer ? [...this.tokenizer.eogIds] : this.eosId !== undefined ? [this.eosId] : []);
    const sampler = createSampler(options, where);
    const text = this.tokenizer?.decoder();
    const signal = options.signal;
    let logits = await this.forward(ids, { position: 0, logits: 'last', ...(signal ? { signal } : {}) });
    let pos = ids.length;
    for (let i = 0; i < maxTokens; i++) {
      const token = sampler.next(logits);
      if (stop.includes(token)) return;
      yield { token, position: pos, text: text ? text.push(token) : '' };
      if (i + 1 === maxTokens || pos + 1 > this.contextSize) return;
      logits = await this.forward([token], { position: pos, logits: 'last', ...(signal ? { signal } : {}) });
      pos++;
    }
  }

  /**
   * Perplexity on token ids as llama.cpp's llama-perplexity computes it
   * (chunks of ctx, the second half of each scored); with options.base, the
   * KL divergence from the base model too. See evaluate.ts.
   */
  perplexity(tokens: ArrayLike<number>, options: PerplexityOptions = {}): Promise<PerplexityResult> {
    return perplexity(this, tokens, options);
  }

  /** Frees the weights and the cache (waits for a running call, which is asked to stop). Safe to call twice. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    binding.modelCancel(this.box, true);
    await this.tail.catch(() => undefined);
    binding.modelDispose(this.box);
  }

  /** Runs `fn` after every earlier call on this model, with the signal wired to the native cancel flag. */
  private exclusive<T>(where: string, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    if (this.disposed) fail(where, 'ERR_VALUE', 'the model was disposed');
    signal?.throwIfAborted();
    const run = async (): Promise<T> => {
      if (this.disposed) fail(where, 'ERR_VALUE', 'the model was disposed');
      signal?.throwIfAborted();
      binding.modelCancel(this.box, false);
      const onAbort = (): void => binding.modelCancel(this.box, true);
      signal?.addEventListener('abort', onAbort);
      try {
        return await fn();
      } catch (e) {
        // A step that stopped part-way (aborted, a hook that threw) leaves
        // the cache holding what finished before it.
        this.filled = Math.min(this.filled, (binding.modelInfo(this.box) as NativeInfo).filled);
        if (isAbort(e) && signal?.aborted) throw signal.reason;
        throw e;
      } finally {
        signal?.removeEventListener('abort', onAbort);
      }
    };
    const p = this.tail.then(run, run);
    this.tail = p.catch(() => undefined);
    return p;
  }
}

/** A weight given in place of the file's to a ModelBlock: dense, or in a format the runtime multiplies. */
export type BlockWeight = Tensor | QuantizedTensor;

export interface ModelBlockOptions extends Omit<LoadModelOptions, 'hyperparameters'> {
  /** Load the token embedding too, so run() takes token ids (the first block of a sequential pass). */
  embedding?: boolean;
  /** Weights to use instead of the file's (tensor names as stored), e.g. the block quantized. */
  replace?: ReadonlyMap<string, BlockWeight>;
  /** Folder for the replacement weights' temporary file (removed once they are loaded). Default os.tmpdir(). */
  tempDir?: string;
}

export interface ModelBlockRunOptions {
  signal?: AbortSignal;
  /** As ForwardOptions.onActivation (batches name the block's own layer and weights). */
  onActivation?: ForwardOptions['onActivation'];
  activationSites?: readonly ActivationSite[];
}

/** Where one replacement's parts sit in the temporary file, and its spec. */
function replacementSpec(spec: TensorSpec, w: BlockWeight, where: string, parts: Uint8Array[], at: { offset: number }, file: number): TensorSpec {
  const part = (b: ArrayBufferView): FilePart => {
    const bytes = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
    const p = { file, offset: at.offset, bytes: bytes.length };
    parts.push(bytes);
    const padded = Math.ceil(bytes.length / 64) * 64;
    if (padded > bytes.length) parts.push(new Uint8Array(padded - bytes.length));
    at.offset += padded;
    return p;
  };
  const shape = w instanceof Tensor || w instanceof QuantizedTensor ? w.shape : undefined;
  if (shape === undefined) fail(where, 'ERR_VALUE', `options.replace: ${spec.name} must be a Tensor or a QuantizedTensor`);
  if (shape.length !== 2 || shape[0] !== spec.rows || shape[1] !== spec.cols) {
    fail(where, 'ERR_SHAPE', `options.replace: ${spec.name} is [${shape.join(', ')}]; the block needs [${spec.rows}, ${spec.cols}]`);
  }
  const base = { name: spec.name, slot: spec.slot, layer: spec.layer, rows: spec.rows, cols: spec.cols, group: 0, scaleDtype: 0, valuesDtype: 0 };
  if (w instanceof Tensor) {
    if (w.dtype !== 'f32' && w.dtype !== 'f16' && w.dtype !== 'bf16') fail(where, 'ERR_DTYPE', `options.replace: ${spec.name} is ${w.dtype}; dense weights are f32, f16 or bf16`);
    return { ...base, format: WEIGHT_FORMATS[w.dtype], formatName: w.dtype, data: part(w.data) };
  }
  const fmt = w.format as WeightFormat;
  if (!(fmt in WEIGHT_FORMATS)) fail(where, 'ERR_UNSUPPORTED', `options.replace: ${spec.name} is ${w.format}, which the runtime does not multiply`);
  if (fmt !== 'int4' && fmt !== 'int8') return { ...base, format: WEIGHT_FORMATS[fmt], formatName: fmt, data: part(w.data) };
  const scales = w.scales as Tensor;
  const groups = spec.cols / w.groupSize;
  return {
    ...base,
    format: WEIGHT_FORMATS[fmt],
    formatName: fmt,
    group: w.groupSize,
    scaleDtype: dtypeCode(scales.dtype),
    data: part(w.data),
    scales: part(scales.data),
    ...(w.zeros ? { zeros: part(packZeroPoints(w.zeros.data, spec.rows, groups, fmt === 'int4' ? 4 : 8)) } : {}),
  };
}

/**
 * One block of a model loaded alone (with the token embedding when asked):
 * what a sequential pass over a model too large for memory holds at a
 * time. run() takes one sequence — token ids (with the embedding) or the
 * previous block's hidden states — from position 0, and returns the hidden
 * states after the block; the activation hook sees the block's linear
 * inputs as Model.forward's does.
 */
export class ModelBlock {
  readonly layer: number;
  readonly plan: ModelPlan;
  readonly weightBytes: number;
  readonly contextSize: number;
  readonly batchSize: number;
  readonly linears: readonly LinearInfo[];
  readonly hasEmbedding: boolean;
  private readonly box: object;
  private readonly tensors: readonly TensorSpec[];
  private busy = false;
  private disposed = false;

  private constructor(plan: ModelPlan, layer: number, box: object, info: NativeInfo, contextSize: number, batchSize: number, tensors: TensorSpec[], embedding: boolean) {
    this.plan = plan;
    this.layer = layer;
    this.box = box;
    this.weightBytes = info.weightBytes;
    this.contextSize = contextSize;
    this.batchSize = batchSize;
    this.tensors = tensors;
    this.hasEmbedding = embedding;
    this.linears = Object.freeze(
      info.linears.map((l) => {
        const [name, format, kernel] = l.split('\t') as [string, string, string];
        return Object.freeze({ name, format, kernel });
      }),
    );
  }

  /** Loads block `layer` of a plan (planModel's result), its weights replaced where options.replace says. */
  static async load(plan: ModelPlan, layer: number, options: ModelBlockOptions = {}): Promise<ModelBlock> {
    const where = 'ModelBlock.load';
    if (typeof options !== 'object' || options === null) fail(where, 'ERR_VALUE', 'options must be an object');
    const known = ['contextSize', 'batchSize', 'threads', 'kernel', 'activations', 'sparse', 'signal', 'embedding', 'replace', 'tempDir'];
    for (const k of Object.keys(options)) if (!known.includes(k)) fail(where, 'ERR_VALUE', `unknown option ${JSON.stringify(k)}; known: ${known.join(', ')}`);
    if (!Number.isInteger(layer) || layer < 0 || layer >= plan.hparams.blockCount) fail(where, 'ERR_VALUE', `layer must be an integer in 0..${plan.hparams.blockCount - 1}, got ${String(layer)}`);
    if (options.replace !== undefined && !(options.replace instanceof Map)) fail(where, 'ERR_VALUE', 'options.replace must be a Map from tensor names to weights');
    const embedding = options.embedding === true;
    const own = plan.tensors.filter((t) => t.layer === layer);
    const replace = options.replace ?? new Map<string, BlockWeight>();
    for (const name of replace.keys()) {
      if (!own.some((t) => t.name === name && isBlockLinear(t))) fail(where, 'ERR_VALUE', `options.replace: ${JSON.stringify(name)} is not a linear weight of block ${layer}`);
    }
    const files = plan.files.slice();
    const parts: Uint8Array[] = [];
    const at = { offset: 0 };
    // The native model counts blocks from 0: this block is its block 0.
    const tensors = own.map((t) => ({ ...(replace.has(t.name) ? replacementSpec(t, replace.get(t.name) as BlockWeight, where, parts, at, files.length) : t), layer: 0 }));
    if (embedding) tensors.unshift(plan.tensors.find((t) => t.slot === 0) as TensorSpec);
    // Llama 3's rope frequency factors (a global tensor in GGUF) shape every block's RoPE.
    tensors.push(...plan.tensors.filter((t) => t.slot === 3));
    let tmp: string | undefined;
    try {
      if (parts.length > 0) {
        tmp = path.join(options.tempDir ?? os.tmpdir(), `.slimtensor-block-${process.pid}-${Math.random().toString(36).slice(2, 10)}.tmp`);
        const fh = await fsp.open(tmp, 'wx');
        try {
          let pos = 0;
          for (const p of parts) {
            await writeAll(fh, p, pos);
            pos += p.length;
          }
        } finally {
          await fh.close();
        }
        files.push(await fileEntry(tmp));
      }
      const { box, info, contextSize, batchSize } = await loadNative(where, plan, tensors, files, 1, true, options);
      return new ModelBlock(plan, layer, box, info, contextSize, batchSize, tensors, embedding);
    } finally {
      if (tmp !== undefined) await fsp.rm(tmp, { force: true });
    }
  }

  /**
   * Runs one sequence through the block from position 0: `tokens` (needs
   * the embedding) or `hidden` states [n × embedding_length]. Returns the
   * hidden states after the block, [n × embedding_length].
   */
  async run(input: { tokens: ArrayLike<number> } | { hidden: Float32Array }, options: ModelBlockRunOptions = {}): Promise<Float32Array> {
    const where = 'ModelBlock.run';
    if (this.disposed) fail(where, 'ERR_VALUE', 'the block was disposed');
    if (this.busy) fail(where, 'ERR_VALUE', 'the block is running another sequence');
    const h = this.plan.hparams;
    const D = h.embeddingLength;
    let tokens: Int32Array | undefined;
    let hidden: Float32Array | undefined;
    if (typeof input === 'object' && input !== null && 'tokens' in input) {
      if (!this.hasEmbedding) fail(where, 'ERR_VALUE', `block ${this.layer} was loaded without the token embedding: pass hidden states`);
      tokens = tokenArray(input.tokens, h.vocabSize, where);
    } else if (typeof input === 'object' && input !== null && input.hidden instanceof Float32Array) {
      hidden = input.hidden;
      if (hidden.length === 0 || hidden.length % D !== 0) fail(where, 'ERR_SHAPE', `hidden holds ${hidden.length} values, not a positive multiple of embedding_length ${D}`);
    } else {
      fail(where, 'ERR_VALUE', 'input must be { tokens } or { hidden: Float32Array }');
    }
    const n = tokens ? tokens.length : (hidden as Float32Array).length / D;
    if (n < 1 || n > this.contextSize) fail(where, 'ERR_VALUE', `${n} positions do not fit the context of ${this.contextSize} (1..${this.contextSize})`);
    const sites = options.activationSites ?? ACTIVATION_SITES;
    const hook = options.onActivation;
    if (hook !== undefined && typeof hook !== 'function') fail(where, 'ERR_VALUE', 'options.onActivation must be a function');
    const signal = options.signal;
    signal?.throwIfAborted();
    this.busy = true;
    binding.modelCancel(this.box, false);
    const onAbort = (): void => binding.modelCancel(this.box, true);
    signal?.addEventListener('abort', onAbort);
    try {
      const out = new Float32Array(n * D);
      const widths = [D, h.headCount * h.headDim, D, h.feedForwardLength];
      for (let start = 0; start < n; start += this.batchSize) {
        signal?.throwIfAborted();
        const m = Math.min(this.batchSize, n - start);
        const capture = hook ? widths.map((w, i) => (sites.includes(ACTIVATION_SITES[i] as ActivationSite) ? new Float32Array(m * w) : null)) : undefined;
        const hiddenOut = out.subarray(start * D, (start + m) * D);
        const input = tokens ? { tokens: tokens.subarray(start, start + m) } : { hidden: (hidden as Float32Array).subarray(start * D, (start + m) * D) };
        await callAsync(where, () =>
          binding.modelStep(
            { model: this.box, n: m, l0: 0, l1: 1, all: false, begin: true, ...input, pos: start, capture, finish: true, hiddenOut, fresh: [hiddenOut, ...(capture ?? []).filter((c) => c !== null)] },
            true,
          ),
        );
        if (hook && capture) {
          for (let i = 0; i < 4; i++) {
            const data = capture[i];
            if (data) await hook({ layer: this.layer, site: ACTIVATION_SITES[i] as ActivationSite, weights: siteWeights(this.tensors, 0, i), position: start, rows: m, width: widths[i] as number, data });
          }
        }
      }
      return out;
    } catch (e) {
      if (isAbort(e) && signal?.aborted) throw signal.reason;
      throw e;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      this.busy = false;
    }
  }

  /** Frees the block's weights. Safe to call twice; not while run() is pending. */
  dispose(): void {
    if (this.disposed) return;
    if (this.busy) fail('ModelBlock.dispose', 'ERR_VALUE', 'the block is running a sequence');
    this.disposed = true;
    binding.modelDispose(this.box);
  }
}

/** The tensor names reading a site (index into ACTIVATION_SITES, not the head) of block `layer`. */
function siteWeights(tensors: readonly TensorSpec[], layer: number, site: number): string[] {
  const slots = [[11, 12, 13], [14], [16, 17], [18]][site] as number[];
  return slots.map((s) => (tensors.find((t) => t.slot === s && t.layer === layer) as TensorSpec).name);
}

/**
 * Checks the load options and loads `tensors` (of `files`) into a new
 * native model of `layers` blocks: the whole model, or (blocksOnly) blocks
 * alone, with or without the token embedding.
 */
async function loadNative(
  where: string,
  plan: ModelPlan,
  tensors: readonly TensorSpec[],
  files: ModelPlan['files'],
  layers: number,
  blocksOnly: boolean,
  options: LoadModelOptions,
): Promise<{ box: object; info: NativeInfo; contextSize: number; batchSize: number; threads: number }> {
  const kernel = kernelCode(options.kernel, where);
  const weightBytes = tensors.reduce((a, t) => a + t.data.bytes + (t.scales?.bytes ?? 0) + (t.zeros?.bytes ?? 0) + (t.bitmask?.bytes ?? 0), 0);
  const threads = options.threads === undefined && weightBytes < SMALL_MODEL_BYTES ? 1 : threadCount(options.threads, where);
  const signal = options.signal;
  signal?.throwIfAborted();
  const h = plan.hparams;
  const contextSize = options.contextSize ?? Math.min(h.contextLength, 4096);
  if (!Number.isInteger(contextSize) || contextSize < 1 || contextSize > 1 << 22) fail(where, 'ERR_VALUE', `options.contextSize must be an integer in 1..4194304, got ${String(options.contextSize)}`);
  const batchSize = options.batchSize ?? 512;
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 65536) fail(where, 'ERR_VALUE', `options.batchSize must be an integer in 1..65536, got ${String(options.batchSize)}`);
  const box = binding.modelNew();
  const onAbort = (): void => binding.modelCancel(box, true);
  signal?.addEventListener('abort', onAbort);
  try {
    const info = await callAsync(where, () =>
      binding.modelLoad(
        {
          model: box,
          config: {
            vocab: h.vocabSize,
            embd: h.embeddingLength,
            layers,
            heads: h.headCount,
            headsKv: h.headCountKv,
            headDim: h.headDim,
            ff: h.feedForwardLength,
            ctxTrain: h.contextLength,
            ropeStyle: plan.rope === 'neox' ? 1 : 0,
            ropeDims: h.ropeDimensions,
            ropeBase: h.ropeFreqBase,
            ropePosScale: h.ropeScaling.type === 'linear' ? 1 / h.ropeScaling.factor : 1,
            ropeFactors: plan.ropeFactors,
            eps: h.rmsNormEps,
          },
          options: { ctx: contextSize, batch: Math.min(batchSize, contextSize), threads, kernel, act: options.activations === 'f32' ? 1 : 0, detectSparse: options.sparse !== false, blocksOnly },
          files,
          tensors,
        },
        true,
      ),
    );
    return { box, info, contextSize, batchSize: Math.min(batchSize, contextSize), threads };
  } catch (e) {
    binding.modelDispose(box);
    if (isAbort(e) && signal?.aborted) throw signal.reason;
    throw e;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

/** The tokenizer a plan's files describe (GGUF metadata, or the folder's tokenizer files), or why there is none. */
export async function tokenizerOf(plan: ModelPlan): Promise<{ tokenizer: Tokenizer | undefined; error: string | undefined }> {
  try {
    let t: Tokenizer | undefined;
    if (plan.ggufMetadata?.has('tokenizer.ggml.model')) t = tokenizerFromGguf(plan.ggufMetadata);
    else if (plan.naming === 'hf' && plan.folder !== undefined) t = await tokenizerFromHfFolder(plan.folder);
    if (t === undefined) return { tokenizer: undefined, error: 'no tokenizer metadata' };
    if (t.vocabSize > plan.hparams.vocabSize) {
      return { tokenizer: undefined, error: `its tokenizer has ${t.vocabSize} tokens but the embedding only ${plan.hparams.vocabSize}` };
    }
    return { tokenizer: t, error: undefined };
  } catch (e) {
    return { tokenizer: undefined, error: e instanceof Error ? e.message : String(e) };
  }
}

/** Loads a GGUF file or a Hugging Face folder for inference (see LoadModelOptions). */
export function loadModel(path: string, options: LoadModelOptions = {}): Promise<Model> {
  return Model.load(path, options);
}

export type { WeightFormat };
