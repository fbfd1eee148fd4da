// Recipes: ordered rules that say what happens to each tensor of a model,
// the built-in presets, and the planning step that turns a rule into a
// concrete action for one tensor (with the fallbacks llama-quantize-like
// defaults need when a row does not fit a block or group).
import { SlimTensorError } from '../errors';
import { marlinSchemeProblem } from '../formats/compressed-tensors';
import { GPTQ_FORMATS } from '../gptq';
import type { GGMLTypeName } from '../formats/gguf-types';
import { GGML_QUANT_FORMATS, hasMseSearch, QUANT_FORMATS, type FloatDType, type QuantFormat, type QuantizeOptions } from '../quantize';
import { parsePattern } from '../sparsity';
import { blockFallback, GGUF_MIXES, isMixName, MIX_NAMES, type MixChoice, type MixName } from './gguf-mix';
import type { ActivationStats, LayerInputStats } from '../calibrate/stats';
import type { Whitening } from '../lowrank';

/** What a compressed model is written as. */
export type OutputFormat = 'gguf' | 'compressed-tensors' | 'safetensors';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['gguf', 'compressed-tensors', 'safetensors'];

/**
 * Which consumer a compressed-tensors output is written for. 'vllm': every
 * quantized layer fits vLLM's Marlin kernel (shape and group rules; layers
 * that do not are kept and reported). 'transformers': compressed-tensors'
 * own rules (transformers decompresses any layout it writes), a group size
 * that does not divide a row falling back to one group per row.
 */
export type Target = 'vllm' | 'transformers';
export const TARGETS: readonly Target[] = ['vllm', 'transformers'];

/** How pruned 2:4 weights are stored in a compressed-tensors output. */
export type PruneLayout = 'dense' | 'sparse-24-bitmask';
export const PRUNE_LAYOUTS: readonly PruneLayout[] = ['dense', 'sparse-24-bitmask'];

export type RecipeMethod = 'quantize' | 'gptq' | 'awq' | 'prune' | 'lowrank' | 'keep';
const METHODS: readonly RecipeMethod[] = ['quantize', 'gptq', 'awq', 'prune', 'lowrank', 'keep'];
/** The formats GPTQ and AWQ write (the gptq op's). */
/** The formats a gptq rule writes by GPTQ (the gptq op's); an awq rule's (the K-quants are GPTQ's only). */
export const CALIBRATED_FORMATS: readonly QuantFormat[] = GPTQ_FORMATS;
export const AWQ_FORMATS: readonly QuantFormat[] = ['q4_0', 'q4_1', 'q8_0', 'int4', 'int8'];
function calibratedFormats(method: 'gptq' | 'awq'): readonly QuantFormat[] {
  return method === 'gptq' ? CALIBRATED_FORMATS : AWQ_FORMATS;
}

/**
 * What a rule needs from calibration: nothing, the per-column sums (Σx²,
 * Σ|x|) or the input Hessian too. compressModel runs the calibration only
 * when some rule needs it, collecting Hessians only for the inputs of the
 * tensors whose rule asks for one. A method that reads activation
 * statistics adds its entry here.
 */
export const METHOD_STATS: Record<RecipeMethod, (options: Record<string, unknown>) => 'none' | 'columns' | 'hessian'> = {
  quantize: (o) => (o.importance === false ? 'none' : 'columns'),
  prune: (o) => (o.score === 'magnitude' || (typeof o.score === 'object' && o.score !== null) ? 'none' : 'columns'),
  lowrank: (o) => (o.whiten === 'none' ? 'none' : o.whiten === 'asvd' ? 'columns' : 'hessian'),
  keep: () => 'none',
  gptq: () => 'hessian',
  awq: () => 'hessian',
};

/** One rule: tensors whose name matches get `method` with `options`. The first matching rule wins. */
export interface RecipeRule {
  /**
   * A glob on the whole tensor name (`*` any run of characters, dots
   * included; `?` one character), a `/regex/flags` string, or a list of
   * either (any may match).
   */
  match: string | readonly string[];
  method: RecipeMethod;
  /**
   * quantize: { format | mix, groupSize?, symmetric?, search?, scaleDtype?, importance? }
   *   mix: a llama.cpp file type ('q4_k_m', …): each tensor gets the type llama-quantize gives it in that mix
   *   importance: { file } (an imatrix for this rule's tensors) or false (none, even when compressModel has one)
   * gptq: { format, groupSize?, symmetric?, scaleDtype?, actOrder?, dampening?, blockSize? } (needs calibration statistics with the Hessian)
   * awq: { format, groupSize?, symmetric?, scaleDtype?, grid?, gptq?, actOrder?, dampening?, blockSize? } (needs calibration statistics with the
   *   Hessian; scales folded into the preceding norm or linear; gptq: true quantizes the scaled weights by GPTQ, the search measuring GPTQ's error)
   *   format: one of q4_0, q4_1, q8_0 (GGUF), int4, int8 (compressed-tensors)
   * keep: { dtype?: 'f32' | 'f16' | 'bf16' } (convert float tensors)
   *   with calibration statistics and no imatrix, weighted by each column's mean x² (imatrix importance)
   * prune: { pattern?: 'N:M' (default '2:4'), score?: 'magnitude' | 'wanda' | { activationNorms: { [tensor]: number[] } },
   *          layout?: 'dense' (default) | 'sparse-24-bitmask' }
   *   score unset: Wanda (‖x_j‖₂ from calibration) when there are calibration statistics, else magnitude
   * lowrank: { rank | ratio, whiten?: 'auto' | 'hessian' | 'asvd' | 'none', alpha?: number (ASVD exponent, default 0.5), ... }
   *   whiten 'auto' (default): SVD-LLM whitening with the input Hessian when calibration gives one, else none
   */
  options?: Record<string, unknown>;
}

export interface Recipe {
  name?: string;
  description?: string;
  /** A preset whose rules apply after this recipe's own (and whose format is the default). */
  extends?: string;
  /** Output format; default: the extended preset's, else the input's family. */
  format?: OutputFormat;
  /** compressed-tensors outputs: the consumer (see Target); default: the extended preset's, else 'transformers'. */
  target?: Target;
  rules?: readonly RecipeRule[];
  /** Applied to every quantize rule that does not set search. */
  search?: 'none' | 'mse';
  /** safetensors outputs: largest shard in bytes (default: one file). */
  maxShardBytes?: number;
  /**
   * Calibration data for the activation-aware methods (imatrix-weighted
   * quantize, Wanda, ASVD / SVD-LLM whitening): the model is run over it
   * before compressing. Without text or tokens the recipe only asks for
   * calibration: compressModel's `calibration` (CLI --calibrate-text /
   * --calibrate-tokens) or an imatrix must supply it.
   */
  calibration?: CalibrationSpec;
}

/** Where calibration statistics come from (see Recipe.calibration). */
export interface CalibrationSpec {
  /** A UTF-8 text file, tokenized with the model's tokenizer as llama-imatrix does. */
  text?: string;
  /** A token file (little-endian int32 ids) or the ids themselves. */
  tokens?: string | readonly number[];
  /** Tokens per chunk. Default 512 (llama-imatrix's), at most the model's context. */
  ctx?: number;
  /** Most chunks (default: all whole chunks). */
  chunks?: number;
  /**
   * Calibrate block by block, compressing each block before the next one is
   * calibrated on its outputs (GPTQ's sequential mode, memory bounded by one
   * block), or the whole model at once. 'auto' (default): sequential when the
   * whole-model calibration's estimate (weights in f32 + every Hessian the
   * rules need) exceeds compressModel's memoryLimit.
   */
  sequential?: boolean | 'auto';
}

// Name patterns of the tensors llama-quantize treats specially, in GGUF
// (llama.cpp) and Hugging Face spellings.
export const NORM_GLOBS = ['*norm*'];
export const EMBED_GLOBS = ['token_embd.weight', '*embed_tokens.weight', '*wte.weight', '*word_embeddings.weight', '*tok_embeddings.weight'];
export const HEAD_GLOBS = ['output.weight', 'lm_head.weight', '*.lm_head.weight'];

/** A llama-quantize file mix as a preset: every tensor gets the type llama-quantize gives it (lib/pipeline/gguf-mix.ts). */
function mixPreset(mix: MixName, description: string): Recipe {
  return { name: mix, description: `GGUF ${GGUF_MIXES[mix].label} as llama-quantize makes it: ${description}`, format: 'gguf', rules: [{ match: '*', method: 'quantize', options: { mix } }] };
}

function ctPreset(name: string, description: string, format: 'int4' | 'int8', symmetric: boolean, method: 'quantize' | 'gptq' | 'awq' = 'quantize'): Recipe {
  return {
    name,
    description,
    // GPTQ and AWQ read calibration statistics: the preset asks for them.
    ...(method === 'quantize' ? {} : { calibration: {} }),
    format: 'compressed-tensors',
    target: 'vllm',
    rules: [
      { match: NORM_GLOBS, method: 'keep' },
      // Only Linear layers of attention and MLP blocks are quantized (the
      // pipeline decides that from the model's modules); these rules say the
      // same by name for a recipe's readers: the embedding is not a Linear,
      // and the head is left out as llm-compressor does.
      { match: [...EMBED_GLOBS, ...HEAD_GLOBS], method: 'keep' },
      { match: '*', method, options: { format, groupSize: 128, symmetric } },
    ],
  };
}

/**
 * N:M pruning of every matrix but norms, embedding and head. No fixed
 * output format: a GGUF input gives a GGUF file, a Hugging Face input a
 * Hugging Face folder; the pruned weights are written dense (every
 * consumer loads them, the N:M structure intact). Layout
 * 'sparse-24-bitmask' writes 2:4 Linear weights of a Hugging Face input
 * as compressed-tensors' sparse-24-bitmask instead, which only older vLLM
 * and transformers releases (and slimtensor) read.
 */
export function pruneRecipe(pattern: string, layout: PruneLayout = 'dense'): Recipe {
  const bitmask = layout === 'sparse-24-bitmask';
  const name = `${pattern === '2:4' ? '2of4' : `prune-${pattern.replace(':', 'of')}`}${bitmask ? '-bitmask' : ''}`;
  return {
    name,
    description: bitmask
      ? `${pattern} structured sparsity by magnitude: 2:4 Linear weights as compressed-tensors sparse-24-bitmask (older vLLM/transformers only; GGUF: written dense); embedding, head and norms kept`
      : `${pattern} structured sparsity by magnitude, pruned weights written dense (loadable everywhere); embedding, head and norms kept`,
    rules: [
      { match: [...NORM_GLOBS, ...EMBED_GLOBS, ...HEAD_GLOBS], method: 'keep' },
      { match: '*', method: 'prune', options: bitmask ? { pattern, layout } : { pattern } },
    ],
  };
}

/** The built-in recipes (`--preset`). */
export const PRESETS: Readonly<Record<string, Recipe>> = {
  q4_0: mixPreset('q4_0', 'Q4_0 (4.5 bits/weight), output head Q6_K; with an imatrix the first eighth of ffn_down Q4_1'),
  q4_1: mixPreset('q4_1', 'Q4_1 (5 bits/weight), output head Q6_K'),
  q5_0: mixPreset('q5_0', 'Q5_0 (5.5 bits/weight), output head Q6_K; with an imatrix the first eighth of ffn_down Q5_1'),
  q5_1: mixPreset('q5_1', 'Q5_1 (6 bits/weight), output head Q6_K'),
  q8_0: mixPreset('q8_0', 'Q8_0 (8.5 bits/weight)'),
  q2_k: mixPreset('q2_k', 'Q2_K, attn_v Q3_K (Q4_K with GQA >= 4), ffn_down and attn_output Q3_K, output head Q6_K'),
  q3_k_s: mixPreset('q3_k_s', 'Q3_K, output head Q6_K'),
  q3_k_m: mixPreset('q3_k_m', 'Q3_K, attn_v Q5_K (first two) / Q4_K, attn_output Q4_K, ffn_down Q4_K (Q5_K in the first sixteenth), output head Q6_K'),
  q3_k_l: mixPreset('q3_k_l', 'Q3_K, attn_v, attn_output and ffn_down Q5_K, output head Q6_K'),
  q4_k_s: mixPreset('q4_k_s', 'Q4_K, attn_v Q5_K (first four), ffn_down Q5_K in the first eighth, output head Q6_K'),
  q4_k_m: mixPreset('q4_k_m', 'Q4_K, attn_v and ffn_down Q6_K on the layers use_more_bits picks (first and last eighth, every third between), output head Q6_K'),
  'q4_k_m-imatrix': {
    ...mixPreset('q4_k_m', 'Q4_K, attn_v and ffn_down Q6_K on the layers use_more_bits picks, output head Q6_K'),
    name: 'q4_k_m-imatrix',
    description: 'GGUF Q4_K_M as llama-quantize --imatrix makes it, the importance from calibration: needs calibration data (--calibrate-text / --calibrate-tokens) or an --imatrix',
    calibration: {},
  },
  q5_k_s: mixPreset('q5_k_s', 'Q5_K, output head Q6_K'),
  q5_k_m: mixPreset('q5_k_m', 'Q5_K, attn_v and ffn_down Q6_K on the layers use_more_bits picks, output head Q6_K'),
  q6_k: mixPreset('q6_k', 'Q6_K everywhere it fits'),
  w4a16: ctPreset('w4a16', 'compressed-tensors W4A16 for vLLM: INT4 symmetric, groups of 128, Linear layers that fit Marlin; embedding, head and norms kept', 'int4', true),
  'w4a16-asym': ctPreset('w4a16-asym', 'compressed-tensors W4A16_ASYM for vLLM: INT4 with zero points, groups of 128, Linear layers that fit Marlin; embedding, head and norms kept', 'int4', false),
  w8a16: ctPreset('w8a16', 'compressed-tensors W8A16 for vLLM: INT8 symmetric, groups of 128, Linear layers that fit Marlin; embedding, head and norms kept', 'int8', true),
  '2of4': pruneRecipe('2:4'),
  'w4a16-gptq': ctPreset('w4a16-gptq', 'compressed-tensors W4A16 for vLLM by GPTQ (needs calibration): INT4 symmetric, groups of 128, no act-order, dampening 0.01; embedding, head and norms kept', 'int4', true, 'gptq'),
  'w4a16-awq': ctPreset('w4a16-awq', 'compressed-tensors W4A16 for vLLM by AWQ (needs calibration): scales folded into the norms and preceding linears, INT4 symmetric, groups of 128; embedding, head and norms kept', 'int4', true, 'awq'),
  'q4_0-gptq': {
    name: 'q4_0-gptq',
    description: 'GGUF Q4_0 by GPTQ (needs calibration): block weights GPTQ-rounded in the standard Q4_0 layout, embedding Q4_0 and output head Q6_K as llama-quantize, norms kept',
    format: 'gguf',
    calibration: {},
    rules: [
      { match: NORM_GLOBS, method: 'keep' },
      { match: EMBED_GLOBS, method: 'quantize', options: { format: 'q4_0' } },
      { match: HEAD_GLOBS, method: 'quantize', options: { format: 'q6_k' } },
      { match: '*', method: 'gptq', options: { format: 'q4_0' } },
    ],
  },
  'q4_k_m-gptq': {
    name: 'q4_k_m-gptq',
    description:
      "GGUF Q4_K_M by GPTQ (needs calibration): every linear weight GPTQ-rounded in the type llama-quantize's Q4_K_M gives it (Q4_K; Q6_K for attn_v and ffn_down on the layers use_more_bits picks; q8_0 where rows fall back to it), in the standard blocks; the types GPTQ does not write (the q5_0/q5_1 fallbacks of rows not a multiple of 256), the embedding and the output head rounded as llama-quantize --imatrix does, from the calibration's imatrix; norms F32",
    format: 'gguf',
    calibration: {},
    rules: [
      // No Hessian for these (the embedding reads token ids; the head's input is not calibrated, as llama-imatrix by default).
      { match: [...EMBED_GLOBS, ...HEAD_GLOBS], method: 'quantize', options: { mix: 'q4_k_m' } },
      { match: '*', method: 'gptq', options: { mix: 'q4_k_m' } },
    ],
  },
};
export const PRESET_NAMES: readonly string[] = Object.keys(PRESETS);

/** A compiled name matcher. */
type Matcher = (name: string) => boolean;

function globToRegExp(glob: string): RegExp {
  let re = '^';
  for (const ch of glob) {
    if (ch === '*') re += '.*';
    else if (ch === '?') re += '.';
    else re += ch.replace(/[.+^${}()|[\]\\/-]/g, '\\$&');
  }
  return new RegExp(`${re}$`, 's');
}

function compilePattern(p: unknown, where: string): Matcher {
  if (typeof p !== 'string' || p === '') throw new SlimTensorError(`${where}: match must be a non-empty string (glob or /regex/) or a list of them`, 'ERR_VALUE');
  const m = /^\/(.*)\/([a-z]*)$/s.exec(p);
  if (m !== null) {
    let re: RegExp;
    try {
      re = new RegExp(m[1] as string, (m[2] as string).replace(/[gy]/g, ''));
    } catch (e) {
      throw new SlimTensorError(`${where}: ${p} is not a valid regular expression (${(e as Error).message})`, 'ERR_VALUE');
    }
    return (name) => re.test(name);
  }
  const re = globToRegExp(p);
  return (name) => re.test(name);
}

/** A validated rule, ready to match. */
export interface CompiledRule {
  /** Where the rule came from, for messages: `rule #2` or `preset q4_0 rule #3`. */
  label: string;
  match: Matcher;
  pattern: string;
  method: RecipeMethod;
  options: Record<string, unknown>;
}

export interface ResolvedRecipe {
  name: string;
  format: OutputFormat | undefined;
  target: Target;
  rules: CompiledRule[];
  maxShardBytes: number | undefined;
  /** The llama-quantize mix its quantize rules use, if any (one per recipe): GGUF output as llama-quantize writes it. */
  mix: MixName | undefined;
  /** The recipe's calibration (its own fields over the extended preset's). */
  calibration: CalibrationSpec | undefined;
}

const QUANT_OPTION_KEYS = ['format', 'mix', 'groupSize', 'symmetric', 'search', 'scaleDtype', 'importance'];
const KEEP_OPTION_KEYS = ['dtype'];
const GPTQ_OPTION_KEYS = ['format', 'mix', 'groupSize', 'symmetric', 'scaleDtype', 'actOrder', 'dampening', 'blockSize'];
const AWQ_OPTION_KEYS = ['format', 'groupSize', 'symmetric', 'scaleDtype', 'grid', 'gptq', 'actOrder', 'dampening', 'blockSize'];
const PRUNE_OPTION_KEYS = ['pattern', 'score', 'layout'];
const CALIBRATION_KEYS = ['text', 'tokens', 'ctx', 'chunks', 'sequential'];
const WHITEN = ['auto', 'hessian', 'asvd', 'none'];
const FLOAT_DTYPES: readonly FloatDType[] = ['f32', 'f16', 'bf16'];
const GGUF_QUANTS: readonly QuantFormat[] = GGML_QUANT_FORMATS;
const RECIPE_KEYS = ['name', 'description', 'extends', 'format', 'target', 'rules', 'search', 'maxShardBytes', 'calibration'];

function checkKeys(o: Record<string, unknown>, known: readonly string[], where: string): void {
  for (const k of Object.keys(o)) if (!known.includes(k)) throw new SlimTensorError(`${where}: unknown key ${JSON.stringify(k)}; known: ${known.join(', ')}`, 'ERR_VALUE');
}

function compileRule(r: unknown, label: string, search: unknown): CompiledRule {
  if (typeof r !== 'object' || r === null || Array.isArray(r)) throw new SlimTensorError(`recipe ${label}: a rule must be an object { match, method, options? }`, 'ERR_VALUE');
  const rule = r as Record<string, unknown>;
  checkKeys(rule, ['match', 'method', 'options'], `recipe ${label}`);
  const patterns = Array.isArray(rule.match) ? (rule.match as unknown[]) : [rule.match];
  if (patterns.length === 0) throw new SlimTensorError(`recipe ${label}: match is an empty list`, 'ERR_VALUE');
  const matchers = patterns.map((p) => compilePattern(p, `recipe ${label}`));
  const method = rule.method;
  if (typeof method !== 'string' || !METHODS.includes(method as RecipeMethod)) {
    throw new SlimTensorError(`recipe ${label}: method must be one of ${METHODS.join(', ')}; got ${JSON.stringify(method)}`, 'ERR_VALUE');
  }
  const opts = rule.options ?? {};
  if (typeof opts !== 'object' || opts === null || Array.isArray(opts)) throw new SlimTensorError(`recipe ${label}: options must be an object`, 'ERR_VALUE');
  const options = { ...(opts as Record<string, unknown>) };
  if (method === 'quantize') {
    checkKeys(options, QUANT_OPTION_KEYS, `recipe ${label} options`);
    if (options.mix !== undefined) {
      if (!isMixName(options.mix)) throw new SlimTensorError(`recipe ${label}: options.mix must be one of ${MIX_NAMES.join(', ')}; got ${JSON.stringify(options.mix)}`, 'ERR_VALUE');
      if (options.format !== undefined) throw new SlimTensorError(`recipe ${label}: give options.format or options.mix, not both`, 'ERR_VALUE');
      for (const k of ['groupSize', 'symmetric', 'scaleDtype']) if (options[k] !== undefined) throw new SlimTensorError(`recipe ${label}: a mix writes GGUF blocks; ${k} does not apply`, 'ERR_VALUE');
    } else if (!QUANT_FORMATS.includes(options.format as QuantFormat)) {
      throw new SlimTensorError(`recipe ${label}: quantize needs options.format, one of ${QUANT_FORMATS.join(', ')}, or options.mix, one of ${MIX_NAMES.join(', ')}; got ${JSON.stringify(options.format)}`, 'ERR_VALUE');
    }
    if (options.search !== undefined && options.search !== 'none' && options.search !== 'mse') throw new SlimTensorError(`recipe ${label}: options.search must be 'none' or 'mse'`, 'ERR_VALUE');
    if (options.search === 'mse' && options.format !== undefined && !hasMseSearch(options.format as QuantFormat)) {
      throw new SlimTensorError(`recipe ${label}: search 'mse' is implemented for q4_0, q4_1, q8_0, int4 and int8, not ${String(options.format)}`, 'ERR_VALUE');
    }
    // The recipe's search applies where it is implemented (a mix: on the tensors it gives such a type).
    if (options.search === undefined && search !== undefined && (options.mix !== undefined || hasMseSearch(options.format as QuantFormat))) options.search = search;
    options.importance = compileImportance(options.importance, label);
    checkGrouping(options, label);
  } else if (method === 'gptq' || method === 'awq') {
    checkKeys(options, method === 'gptq' ? GPTQ_OPTION_KEYS : AWQ_OPTION_KEYS, `recipe ${label} options`);
    const formats = calibratedFormats(method);
    if (options.mix !== undefined) {
      // A gptq rule with a llama-quantize mix: each tensor in the mix's type, by GPTQ where the op writes it.
      if (!isMixName(options.mix)) throw new SlimTensorError(`recipe ${label}: options.mix must be one of ${MIX_NAMES.join(', ')}; got ${JSON.stringify(options.mix)}`, 'ERR_VALUE');
      if (options.format !== undefined) throw new SlimTensorError(`recipe ${label}: give options.format or options.mix, not both`, 'ERR_VALUE');
      for (const k of ['groupSize', 'symmetric', 'scaleDtype']) if (options[k] !== undefined) throw new SlimTensorError(`recipe ${label}: a mix writes GGUF blocks; ${k} does not apply`, 'ERR_VALUE');
    } else if (!formats.includes(options.format as QuantFormat)) {
      throw new SlimTensorError(`recipe ${label}: ${method} needs options.format, one of ${formats.join(', ')}${method === 'gptq' ? `, or options.mix, one of ${MIX_NAMES.join(', ')}` : ''}; got ${JSON.stringify(options.format)}`, 'ERR_VALUE');
    }
    checkGrouping(options, label);
    if (options.actOrder !== undefined && typeof options.actOrder !== 'boolean') throw new SlimTensorError(`recipe ${label}: options.actOrder must be a boolean`, 'ERR_VALUE');
    if (options.dampening !== undefined && !(typeof options.dampening === 'number' && options.dampening >= 0 && options.dampening < 1e6)) throw new SlimTensorError(`recipe ${label}: options.dampening must be a number in [0, 1e6)`, 'ERR_VALUE');
    if (options.blockSize !== undefined && !(Number.isInteger(options.blockSize) && (options.blockSize as number) >= 1 && (options.blockSize as number) <= 65536)) throw new SlimTensorError(`recipe ${label}: options.blockSize must be an integer in 1..65536`, 'ERR_VALUE');
    if (options.gptq !== undefined && typeof options.gptq !== 'boolean') throw new SlimTensorError(`recipe ${label}: options.gptq must be a boolean`, 'ERR_VALUE');
    if (method === 'awq' && options.gptq !== true && (options.actOrder !== undefined || options.dampening !== undefined || options.blockSize !== undefined)) throw new SlimTensorError(`recipe ${label}: actOrder, dampening and blockSize are GPTQ settings; an awq rule takes them with gptq: true`, 'ERR_VALUE');
    if (options.grid !== undefined && !(Number.isInteger(options.grid) && (options.grid as number) >= 1 && (options.grid as number) <= 1000)) throw new SlimTensorError(`recipe ${label}: options.grid must be an integer in 1..1000`, 'ERR_VALUE');
  } else if (method === 'prune') {
    checkKeys(options, PRUNE_OPTION_KEYS, `recipe ${label} options`);
    options.pattern ??= '2:4';
    const nm = parsePrunePattern(options.pattern, `recipe ${label}`);
    options.pattern = `${nm.n}:${nm.m}`;
    options.score = compileScore(options.score, label);
    options.layout ??= 'dense';
    if (!PRUNE_LAYOUTS.includes(options.layout as PruneLayout)) throw new SlimTensorError(`recipe ${label}: prune options.layout must be one of ${PRUNE_LAYOUTS.join(', ')}; got ${JSON.stringify(options.layout)}`, 'ERR_VALUE');
  } else if (method === 'lowrank') {
    if (options.whiten !== undefined && !WHITEN.includes(options.whiten as string)) throw new SlimTensorError(`recipe ${label}: lowrank options.whiten must be one of ${WHITEN.join(', ')}; got ${JSON.stringify(options.whiten)}`, 'ERR_VALUE');
    if (options.alpha !== undefined && !(typeof options.alpha === 'number' && options.alpha > 0 && options.alpha <= 4)) throw new SlimTensorError(`recipe ${label}: lowrank options.alpha must be a number in (0, 4]; got ${JSON.stringify(options.alpha)}`, 'ERR_VALUE');
  } else if (method === 'keep') {
    checkKeys(options, KEEP_OPTION_KEYS, `recipe ${label} options`);
    if (options.dtype !== undefined && !FLOAT_DTYPES.includes(options.dtype as FloatDType)) throw new SlimTensorError(`recipe ${label}: keep options.dtype must be f32, f16 or bf16`, 'ERR_VALUE');
  }
  return { label, match: (n) => matchers.some((m) => m(n)), pattern: patterns.map(String).join(' | '), method: method as RecipeMethod, options };
}

/** groupSize, symmetric and scaleDtype of a quantize, gptq or awq rule. */
function checkGrouping(options: Record<string, unknown>, label: string): void {
  const g = options.groupSize;
  if (g !== undefined && g !== 'channel' && !(Number.isSafeInteger(g) && (g as number) > 0)) throw new SlimTensorError(`recipe ${label}: options.groupSize must be a positive integer or 'channel'`, 'ERR_VALUE');
  if (options.symmetric !== undefined && typeof options.symmetric !== 'boolean') throw new SlimTensorError(`recipe ${label}: options.symmetric must be a boolean`, 'ERR_VALUE');
  if (options.scaleDtype !== undefined && !FLOAT_DTYPES.includes(options.scaleDtype as FloatDType)) throw new SlimTensorError(`recipe ${label}: options.scaleDtype must be f32, f16 or bf16`, 'ERR_VALUE');
  if (GGUF_QUANTS.includes(options.format as QuantFormat) && (options.groupSize !== undefined || options.symmetric !== undefined)) {
    throw new SlimTensorError(`recipe ${label}: ${String(options.format)} has fixed blocks of 32; groupSize and symmetric do not apply`, 'ERR_VALUE');
  }
}

/** Where a quantize rule's importance weights come from. */
export type ImportanceSource = { file: string } | false | undefined;

function compileImportance(v: unknown, label: string): ImportanceSource {
  if (v === undefined || v === false) return v;
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
    checkKeys(v as Record<string, unknown>, ['file'], `recipe ${label} options.importance`);
    const file = (v as { file?: unknown }).file;
    if (typeof file === 'string' && file !== '') return { file };
  }
  throw new SlimTensorError(`recipe ${label}: options.importance must be { file: "<llama.cpp imatrix, .dat or GGUF>" } or false; got ${JSON.stringify(v)}`, 'ERR_VALUE');
}

/** prune()'s pattern rule ('N:M', 1 <= N <= M <= 32), worded for a recipe rule or a CLI flag. */
export function parsePrunePattern(p: unknown, where: string): { n: number; m: number } {
  return parsePattern(p, where, 'prune options.pattern');
}

/**
 * How a prune rule ranks weights: magnitude; Wanda from calibration
 * statistics ('wanda'; 'auto', the default, when there are statistics, else
 * magnitude); or Wanda with one norm vector per tensor name.
 */
export type PruneScore = 'magnitude' | 'wanda' | 'auto' | { activationNorms: ReadonlyMap<string, Float32Array> };

function compileScore(score: unknown, label: string): PruneScore {
  if (score === undefined || score === 'auto') return 'auto';
  if (score === 'magnitude' || score === 'wanda') return score;
  const where = `recipe ${label}: prune options.score`;
  if (typeof score !== 'object' || score === null || Array.isArray(score)) throw new SlimTensorError(`${where} must be 'magnitude', 'wanda' or { activationNorms: { <tensor name>: [norm per input channel] } }`, 'ERR_VALUE');
  checkKeys(score as Record<string, unknown>, ['activationNorms'], where);
  const norms = (score as { activationNorms?: unknown }).activationNorms;
  if (norms instanceof Map) return { activationNorms: norms as ReadonlyMap<string, Float32Array> };
  if (typeof norms !== 'object' || norms === null || Array.isArray(norms)) throw new SlimTensorError(`${where}.activationNorms must map tensor names to arrays of norms (one per input channel)`, 'ERR_VALUE');
  const map = new Map<string, Float32Array>();
  for (const [name, v] of Object.entries(norms as Record<string, unknown>)) {
    if (!(v instanceof Float32Array) && !(Array.isArray(v) && v.every((x) => typeof x === 'number'))) {
      throw new SlimTensorError(`${where}.activationNorms[${JSON.stringify(name)}] must be an array of numbers or a Float32Array`, 'ERR_VALUE');
    }
    map.set(name, v instanceof Float32Array ? v : Float32Array.from(v as number[]));
  }
  return { activationNorms: map };
}

function count(v: unknown, where: string, min: number): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isSafeInteger(v) || (v as number) < min) throw new SlimTensorError(`${where} must be an integer >= ${min}, got ${JSON.stringify(v)}`, 'ERR_VALUE');
  return v as number;
}

/** Validates a calibration spec (a recipe's or compressModel's). */
export function compileCalibration(c: unknown, where: string): CalibrationSpec | undefined {
  if (c === undefined) return undefined;
  if (typeof c !== 'object' || c === null || Array.isArray(c)) throw new SlimTensorError(`${where} must be an object { text | tokens, ctx?, chunks? }`, 'ERR_VALUE');
  checkKeys(c as Record<string, unknown>, CALIBRATION_KEYS, where);
  const o = c as Record<string, unknown>;
  if (o.text !== undefined && o.tokens !== undefined) throw new SlimTensorError(`${where}: give text or tokens, not both`, 'ERR_VALUE');
  if (o.text !== undefined && (typeof o.text !== 'string' || o.text === '')) throw new SlimTensorError(`${where}.text must be the path of a text file`, 'ERR_VALUE');
  const tokens = o.tokens;
  if (tokens !== undefined && !(typeof tokens === 'string' && tokens !== '') && !(Array.isArray(tokens) && tokens.every((t) => Number.isInteger(t)))) {
    throw new SlimTensorError(`${where}.tokens must be the path of a token file (little-endian int32 ids) or an array of integer ids`, 'ERR_VALUE');
  }
  const ctx = count(o.ctx, `${where}.ctx`, 1);
  const chunks = count(o.chunks, `${where}.chunks`, 1);
  const sequential = o.sequential;
  if (sequential !== undefined && typeof sequential !== 'boolean' && sequential !== 'auto') throw new SlimTensorError(`${where}.sequential must be true, false or 'auto', got ${JSON.stringify(sequential)}`, 'ERR_VALUE');
  return {
    ...(o.text !== undefined ? { text: o.text as string } : {}),
    ...(tokens !== undefined ? { tokens: tokens as string | number[] } : {}),
    ...(ctx !== undefined ? { ctx } : {}),
    ...(chunks !== undefined ? { chunks } : {}),
    ...(sequential !== undefined ? { sequential } : {}),
  };
}

/** `over`'s fields on top of `base`'s; the input (text or tokens) is `over`'s when it gives one, else `base`'s. */
export function mergeCalibration(base: CalibrationSpec | undefined, over: CalibrationSpec | undefined): CalibrationSpec | undefined {
  if (base === undefined || over === undefined) return over ?? base;
  const from = over.text !== undefined || over.tokens !== undefined ? over : base;
  const ctx = over.ctx ?? base.ctx;
  const chunks = over.chunks ?? base.chunks;
  const sequential = over.sequential ?? base.sequential;
  return {
    ...(from.text !== undefined ? { text: from.text } : {}),
    ...(from.tokens !== undefined ? { tokens: from.tokens } : {}),
    ...(ctx !== undefined ? { ctx } : {}),
    ...(chunks !== undefined ? { chunks } : {}),
    ...(sequential !== undefined ? { sequential } : {}),
  };
}

/**
 * A tensor gets its first matching rule only, so a recipe with both prune
 * and quantize rules never prunes and quantizes the same weight; and the
 * layouts that would store such a weight (compressed-tensors' marlin-24,
 * sparse-24-bitmask stacked on quantized codes) are not in FORMATS.md.
 */
function refusePruneWithQuantize(rules: readonly CompiledRule[]): void {
  const p = rules.find((r) => r.method === 'prune');
  const q = rules.find((r) => r.method === 'quantize' || r.method === 'gptq' || r.method === 'awq');
  if (p === undefined || q === undefined) return;
  throw new SlimTensorError(
    `recipe ${p.label} prunes (${p.pattern}) and ${q.label} quantizes (${q.pattern}): pruning and quantizing in one recipe is not supported — a tensor takes only its first matching rule, and no sparse + quantized layout (such as compressed-tensors' marlin-24) is among the formats slimtensor writes; prune and quantize in separate recipes`,
    'ERR_UNSUPPORTED',
  );
}

/** Validates a recipe (an object, a JSON text, or a preset name) and compiles its rules. */
export function resolveRecipe(recipe: Recipe | string): ResolvedRecipe {
  if (typeof recipe === 'string') {
    const preset = PRESETS[recipe];
    if (preset !== undefined && Object.prototype.hasOwnProperty.call(PRESETS, recipe)) return resolveRecipe(preset);
    const trimmed = recipe.trim();
    if (!trimmed.startsWith('{')) throw new SlimTensorError(`recipe: unknown preset ${JSON.stringify(recipe)}; presets: ${PRESET_NAMES.join(', ')}`, 'ERR_VALUE');
    let parsed: unknown;
    try {
      parsed = JSON.parse(trimmed);
    } catch (e) {
      throw new SlimTensorError(`recipe: not valid JSON (${(e as Error).message})`, 'ERR_VALUE');
    }
    return resolveRecipe(parsed as Recipe);
  }
  if (typeof recipe !== 'object' || recipe === null || Array.isArray(recipe)) throw new SlimTensorError('recipe must be an object, a JSON text or a preset name', 'ERR_VALUE');
  checkKeys(recipe as unknown as Record<string, unknown>, RECIPE_KEYS, 'recipe');
  if (recipe.format !== undefined && !OUTPUT_FORMATS.includes(recipe.format)) throw new SlimTensorError(`recipe: format must be one of ${OUTPUT_FORMATS.join(', ')}; got ${JSON.stringify(recipe.format)}`, 'ERR_VALUE');
  if (recipe.search !== undefined && recipe.search !== 'none' && recipe.search !== 'mse') throw new SlimTensorError(`recipe: search must be 'none' or 'mse'`, 'ERR_VALUE');
  if (recipe.maxShardBytes !== undefined && !(Number.isSafeInteger(recipe.maxShardBytes) && recipe.maxShardBytes > 0)) throw new SlimTensorError('recipe: maxShardBytes must be a positive integer', 'ERR_VALUE');
  if (recipe.rules !== undefined && !Array.isArray(recipe.rules)) throw new SlimTensorError('recipe: rules must be an array', 'ERR_VALUE');
  const rules = (recipe.rules ?? []).map((r, i) => compileRule(r, `rule #${i + 1}`, recipe.search));
  if (recipe.target !== undefined && !TARGETS.includes(recipe.target)) throw new SlimTensorError(`recipe: target must be one of ${TARGETS.join(', ')}; got ${JSON.stringify(recipe.target)}`, 'ERR_VALUE');
  let format = recipe.format;
  let target = recipe.target;
  let calibration = compileCalibration(recipe.calibration, 'recipe: calibration');
  if (recipe.extends !== undefined) {
    const base = PRESETS[recipe.extends];
    if (base === undefined || !Object.prototype.hasOwnProperty.call(PRESETS, recipe.extends)) throw new SlimTensorError(`recipe: extends names unknown preset ${JSON.stringify(recipe.extends)}; presets: ${PRESET_NAMES.join(', ')}`, 'ERR_VALUE');
    rules.push(...(base.rules ?? []).map((r, i) => compileRule(r, `preset ${recipe.extends} rule #${i + 1}`, recipe.search)));
    format ??= base.format;
    target ??= base.target;
    calibration = mergeCalibration(compileCalibration(base.calibration, `preset ${recipe.extends}: calibration`), calibration);
  }
  if (rules.length === 0) throw new SlimTensorError('recipe: no rules (give rules, or extends a preset)', 'ERR_VALUE');
  refusePruneWithQuantize(rules);
  const mixRules = rules.filter((r) => (r.method === 'quantize' || r.method === 'gptq') && r.options.mix !== undefined);
  const mix = mixRules[0]?.options.mix as MixName | undefined;
  const other = mixRules.find((r) => r.options.mix !== mix);
  if (other !== undefined) throw new SlimTensorError(`recipe ${(mixRules[0] as CompiledRule).label} uses mix ${String(mix)} and ${other.label} mix ${String(other.options.mix)}: a file is one llama.cpp file type; use one mix and format rules for the exceptions`, 'ERR_VALUE');
  if (mix !== undefined && format !== undefined && format !== 'gguf') throw new SlimTensorError(`recipe: mix ${mix} is a GGUF file type; the recipe writes ${format}`, 'ERR_VALUE');
  const resolved: ResolvedRecipe = { name: recipe.name ?? recipe.extends ?? 'custom', format: format ?? (mix !== undefined ? 'gguf' : undefined), target: target ?? 'transformers', rules, maxShardBytes: recipe.maxShardBytes, mix, calibration };
  checkTarget(resolved);
  return resolved;
}

/**
 * For target 'vllm', every compressed-tensors quantize rule asks for a
 * scheme vLLM's Marlin kernel runs (ERR_VALUE naming the rule otherwise);
 * layer shapes are checked per tensor when planning.
 */
export function checkTarget(r: ResolvedRecipe): void {
  if (r.target !== 'vllm') return;
  for (const rule of r.rules) {
    const o = rule.options;
    if ((rule.method !== 'quantize' && rule.method !== 'gptq' && rule.method !== 'awq') || (o.format !== 'int4' && o.format !== 'int8')) continue;
    const problem = marlinSchemeProblem(o.format === 'int4' ? 4 : 8, o.symmetric !== false, (o.groupSize as number | 'channel' | undefined) ?? 128);
    if (problem !== undefined) throw new SlimTensorError(`recipe ${rule.label}: target 'vllm': ${problem}; use target 'transformers' to write it for compressed-tensors' own readers`, 'ERR_VALUE');
  }
}

/** What the planner needs to know about a source tensor. */
export interface PlanInput {
  name: string;
  shape: readonly number[];
  /** Dense float dtype when the tensor is one (F32/F16/BF16). */
  floatDtype: FloatDType | undefined;
  /** How it is stored ('F32', 'Q8_0', 'I64', ...), for messages. */
  storage: string;
}

/** What happens to one tensor. */
export type TensorAction =
  | { kind: 'keep'; reason: string }
  | { kind: 'convert'; dtype: FloatDType; reason: string }
  | {
      kind: 'quantize';
      options: QuantizeOptions;
      /** The rule's importance source (undefined: compressModel's imatrix, if any; false: none). */
      importance?: ImportanceSource;
      /** GPTQ or AWQ (from calibration statistics) instead of round-to-nearest. */
      calibrated?: CalibratedMethod;
    }
  | {
      kind: 'lowrank';
      options: Record<string, unknown>;
      /** Activation-aware factorization from calibration statistics (SVD-LLM gram or ASVD scale); undefined: plain SVD. */
      whiten?: Whitening;
    }
  | {
      kind: 'prune';
      /** 'N:M', normalised. */
      pattern: string;
      n: number;
      m: number;
      /** Wanda's per-input-channel norms for this tensor; undefined: magnitude. */
      activationNorms: Float32Array | undefined;
      /** Written as compressed-tensors sparse-24-bitmask (else: the pruned tensor, dense). */
      sparse24: boolean;
      /** The layout the rule asked for. */
      layout: PruneLayout;
      /** Why a pruned tensor is written dense. */
      dense?: string;
    };

/** A gptq or awq rule's method and settings, on a quantize action of a 2-D tensor in one of CALIBRATED_FORMATS. */
export type CalibratedMethod =
  | { method: 'gptq'; actOrder?: boolean; dampening?: number; blockSize?: number }
  | { method: 'awq'; grid?: number; gptq?: GptqSettings };

/** A gptq rule's settings (also an awq rule's with gptq: true). */
export interface GptqSettings {
  actOrder?: boolean;
  dampening?: number;
  blockSize?: number;
}

/** Model-wide facts a rule needs beyond the tensor itself. */
export interface PlanContext {
  /** The recipe's mix (ResolvedRecipe.mix) planned over the whole model: planMix in gguf-mix.ts. */
  mix?: ReadonlyMap<string, MixChoice>;
  /** Calibration statistics of the linear layers' inputs (lib/calibrate), by tensor name as the pipeline sees it. */
  activationStats?: ActivationStats;
}

export interface TensorPlan {
  name: string;
  action: TensorAction;
  /** The rule that matched (undefined: none did, so the tensor is kept). */
  rule: string | undefined;
  /** Set when the rule's setting did not fit and the next format that fits was used. */
  fallback?: { from: string; to: string; reason: string };
}

function shapeText(s: readonly number[]): string {
  return `[${s.join(', ')}]`;
}

/**
 * The action for one tensor: the first matching rule's method, adjusted to
 * what the tensor and the output format allow. Throws ERR_VALUE for
 * settings the output cannot hold (and for Wanda norms missing for a
 * pruned tensor), ERR_SHAPE for norms of the wrong length.
 */
export function planTensor(t: PlanInput, recipe: ResolvedRecipe, format: OutputFormat, ctx: PlanContext = {}): TensorPlan {
  const rule = recipe.rules.find((r) => r.match(t.name));
  const base = { name: t.name, rule: rule?.label };
  if (rule === undefined) return { ...base, action: { kind: 'keep', reason: 'no rule matches' } };
  if (rule.method === 'keep') {
    const dtype = rule.options.dtype as FloatDType | undefined;
    if (dtype !== undefined && t.floatDtype !== undefined && dtype !== t.floatDtype) {
      return { ...base, action: { kind: 'convert', dtype, reason: `${rule.label}: keep as ${dtype}` } };
    }
    return { ...base, action: { kind: 'keep', reason: `${rule.label} keeps it` } };
  }
  // quantize and lowrank need a floating-point matrix.
  if (t.floatDtype === undefined) return { ...base, action: { kind: 'keep', reason: `stored as ${t.storage}${t.storage.startsWith('Q') ? ' (already quantized)' : ''}: only F32/F16/BF16 tensors are compressed` } };
  if (t.shape.length < 2) return { ...base, action: { kind: 'keep', reason: `${t.shape.length}-D: only matrices are compressed` } };
  if (t.shape.some((d) => d === 0)) return { ...base, action: { kind: 'keep', reason: 'empty tensor' } };
  if (rule.method === 'lowrank') return planLowRank(t, rule, ctx, base);
  if (rule.method === 'prune') return planPrune(t, rule, format, base, ctx);
  if (rule.method === 'gptq' || rule.method === 'awq') return planCalibrated(t, rule, recipe, format, ctx);

  const o = rule.options as Omit<QuantizeOptions, 'importance'> & { mix?: MixName; importance: ImportanceSource } & Record<string, unknown>;
  const cols = t.shape[t.shape.length - 1] as number;
  if (o.mix !== undefined) {
    if (format !== 'gguf') throw new SlimTensorError(`recipe ${rule.label} quantizes '${t.name}' with mix ${o.mix}, a GGUF file type; this recipe writes ${format}`, 'ERR_VALUE');
    const choice = ctx.mix?.get(t.name);
    if (choice === undefined) throw new SlimTensorError(`recipe ${rule.label}: mix ${o.mix} is planned over the whole model (compressModel, or planTensor with context.mix from planMix); '${t.name}' is not in the plan`, 'ERR_VALUE');
    if (choice.type === undefined) return { ...base, action: { kind: 'keep', reason: choice.reason ?? 'llama-quantize keeps it' } };
    return planGguf(t, base, o, choice.fallback?.from ?? choice.type, choice.fallback);
  }
  const ggml = GGUF_QUANTS.includes(o.format);
  if (format === 'gguf' && !ggml) throw new SlimTensorError(`recipe ${rule.label} quantizes '${t.name}' to ${o.format}, a compressed-tensors format; this recipe writes GGUF (${GGUF_QUANTS.join(', ')})`, 'ERR_VALUE');
  if (format === 'compressed-tensors' && ggml) throw new SlimTensorError(`recipe ${rule.label} quantizes '${t.name}' to ${o.format}, a GGUF format; this recipe writes compressed-tensors (int4, int8)`, 'ERR_VALUE');
  if (format === 'safetensors') throw new SlimTensorError(`recipe ${rule.label} quantizes '${t.name}', but plain safetensors output has no quantized layout; use format 'compressed-tensors' or 'gguf'`, 'ERR_VALUE');
  const options: QuantizeOptions = { format: o.format };
  if (o.search !== undefined) options.search = o.search;
  if (ggml) {
    const chosen = o.format.toUpperCase() as GGMLTypeName;
    const fb = blockFallback(chosen, cols);
    return planGguf(t, base, o, chosen, fb === undefined ? undefined : { from: chosen, ...fb });
  }
  if (format === 'compressed-tensors' && t.shape.length !== 2) {
    return { ...base, action: { kind: 'keep', reason: `${t.shape.length}-D: compressed-tensors quantizes 2-D Linear weights` } };
  }
  const importance = o.importance !== undefined ? { importance: o.importance } : {};
  options.symmetric = o.symmetric ?? true;
  options.scaleDtype = o.scaleDtype ?? t.floatDtype;
  const g = o.groupSize ?? 128;
  options.groupSize = g;
  // For vLLM the layer is kept instead (Marlin needs inputs a multiple of
  // 128, so a group that does not divide them means no kernel): the
  // compressed-tensors planner (linear-modules.ts) decides, per vLLM layer.
  if (g !== 'channel' && cols % g !== 0 && !(format === 'compressed-tensors' && recipe.target === 'vllm')) {
    const reason = `rows of ${cols} values are not a multiple of the group size ${g}`;
    options.groupSize = 'channel';
    return { ...base, action: { kind: 'quantize', options, ...importance }, fallback: { from: `${o.format} group ${g}`, to: `${o.format} channel (one group per row)`, reason } };
  }
  return { ...base, action: { kind: 'quantize', options, ...importance } };
}

/**
 * A gptq or awq rule: planned as a quantize rule of the same format and
 * grouping (fallbacks included); the method applies where the planned
 * format is one the gptq op writes and the tensor is 2-D, round-to-nearest
 * elsewhere (the fallback says so).
 */
function planCalibrated(t: PlanInput, rule: CompiledRule, recipe: ResolvedRecipe, format: OutputFormat, ctx: PlanContext): TensorPlan {
  const o = rule.options;
  const q: Record<string, unknown> = { ...(o.mix !== undefined ? { mix: o.mix } : { format: o.format }), importance: false };
  for (const k of ['groupSize', 'symmetric', 'scaleDtype']) if (o[k] !== undefined) q[k] = o[k];
  const asQuantize: CompiledRule = { ...rule, method: 'quantize', options: q };
  const plan = planTensor(t, { ...recipe, rules: [asQuantize] }, format, ctx);
  const a = plan.action;
  if (a.kind !== 'quantize') return plan;
  const method = rule.method as 'gptq' | 'awq';
  const formats = calibratedFormats(method);
  if (!formats.includes(a.options.format) || t.shape.length !== 2) {
    const reason = t.shape.length !== 2 ? `${t.shape.length}-D: ${method} quantizes 2-D weights` : `${method} writes ${formats.join(', ')}`;
    // A mix's other types are rounded as the quantize method does: with the run's imatrix (from calibration), if any.
    if (o.mix !== undefined) delete a.importance;
    return { ...plan, fallback: plan.fallback ?? { from: `${method} ${String(o.format ?? a.options.format)}`, to: `${a.options.format} round-to-nearest`, reason } };
  }
  const settings: GptqSettings = { ...(o.actOrder !== undefined ? { actOrder: o.actOrder as boolean } : {}), ...(o.dampening !== undefined ? { dampening: o.dampening as number } : {}), ...(o.blockSize !== undefined ? { blockSize: o.blockSize as number } : {}) };
  // What the method measured is what is written: no importance-weighted rounding.
  a.importance = false;
  a.calibrated = method === 'gptq' ? { method, ...settings } : { method, ...(o.grid !== undefined ? { grid: o.grid as number } : {}), ...(o.gptq === true ? { gptq: settings } : {}) };
  return plan;
}

/**
 * A GGUF tensor of type `chosen`, or — when its blocks do not fit the rows
 * — of `fallback.to` (llama-quantize's fallbacks, blockFallback): a block
 * format is quantized, F16 is a conversion (or the tensor as it is, when
 * stored as F16).
 */
function planGguf(
  t: PlanInput,
  base: { name: string; rule: string | undefined },
  o: { search?: 'none' | 'mse'; importance: ImportanceSource },
  chosen: GGMLTypeName,
  fallback: { from: GGMLTypeName; to: GGMLTypeName; reason: string } | undefined,
): TensorPlan {
  const type = fallback?.to ?? chosen;
  const fb = fallback === undefined ? {} : { fallback };
  if (type === 'F16') {
    const reason = (fallback as { reason: string }).reason;
    if (t.floatDtype === 'f16') return { ...base, action: { kind: 'keep', reason }, ...fb };
    return { ...base, action: { kind: 'convert', dtype: 'f16', reason }, ...fb };
  }
  const format = type.toLowerCase() as QuantFormat;
  const options: QuantizeOptions = { format };
  if (o.search === 'mse' && hasMseSearch(format)) options.search = 'mse';
  return { ...base, action: { kind: 'quantize', options, ...(o.importance !== undefined ? { importance: o.importance } : {}) }, ...fb };
}

/** A tensor's calibration statistics, checked against its input width (ERR_SHAPE: statistics of another model). */
export function statsFor(t: PlanInput, ctx: PlanContext, label: string): LayerInputStats | undefined {
  const s = ctx.activationStats?.get(t.name);
  if (s === undefined) return undefined;
  const cols = t.shape[t.shape.length - 1] as number;
  if (s.width !== cols) throw new SlimTensorError(`recipe ${label}: the calibration statistics of '${t.name}' are ${s.width} wide; the tensor has ${cols} input channels (shape ${shapeText(t.shape)}) — statistics of another model?`, 'ERR_SHAPE');
  return s;
}

/** Wanda's per-input-channel norm ‖x_j‖₂ = sqrt(Σ x_j²). */
export function wandaNorms(s: LayerInputStats): Float32Array {
  return s.sumSquares.map(Math.sqrt);
}

/** ASVD's scale per input column: (mean |x_j|)^alpha, columns that saw nothing given the smallest positive scale. */
export function asvdScale(s: LayerInputStats, alpha: number): Float32Array {
  const out = new Float32Array(s.width);
  let min = Infinity;
  for (let j = 0; j < s.width; j++) {
    const v = Math.pow((s.sumAbs[j] as number) / Math.max(1, s.rows), alpha);
    out[j] = v;
    if (v > 0 && v < min) min = v;
  }
  const floor = Number.isFinite(min) ? min : 1;
  for (let j = 0; j < s.width; j++) if (!((out[j] as number) > 0)) out[j] = floor;
  return out;
}

function planLowRank(t: PlanInput, rule: CompiledRule, ctx: PlanContext, base: { name: string; rule: string | undefined }): TensorPlan {
  const { whiten: mode = 'auto', alpha = 0.5, ...options } = rule.options;
  const s = mode === 'none' ? undefined : statsFor(t, ctx, rule.label);
  if (mode !== 'auto' && mode !== 'none' && s === undefined) {
    throw new SlimTensorError(`recipe ${rule.label}: lowrank whiten '${String(mode)}' of '${t.name}' needs calibration statistics of its input (recipe calibration, --calibrate-text / --calibrate-tokens)`, 'ERR_VALUE');
  }
  let whiten: Whitening | undefined;
  if (s !== undefined) {
    if (mode === 'asvd' || (mode === 'auto' && s.hessian === undefined)) whiten = { activationScale: asvdScale(s, alpha as number) };
    else if (s.hessian !== undefined) whiten = { gram: s.hessian };
    else throw new SlimTensorError(`recipe ${rule.label}: lowrank whiten 'hessian' of '${t.name}': the calibration statistics hold no Hessian for it`, 'ERR_VALUE');
  }
  return { ...base, action: { kind: 'lowrank', options, ...(whiten !== undefined ? { whiten } : {}) } };
}

function planPrune(t: PlanInput, rule: CompiledRule, format: OutputFormat, base: { name: string; rule: string | undefined }, ctx: PlanContext): TensorPlan {
  const pattern = rule.options.pattern as string;
  const { n, m } = parsePrunePattern(pattern, `recipe ${rule.label}`);
  const cols = t.shape[t.shape.length - 1] as number;
  if (cols % m !== 0) {
    const reason = `rows of ${cols} values are not a multiple of M = ${m} (pattern ${pattern})`;
    return { ...base, action: { kind: 'keep', reason }, fallback: { from: `prune ${pattern}`, to: `${t.storage} (not pruned)`, reason } };
  }
  const score = rule.options.score as PruneScore;
  let activationNorms: Float32Array | undefined;
  if (score === 'wanda' || score === 'auto') {
    const s = statsFor(t, ctx, rule.label);
    if (s !== undefined) activationNorms = wandaNorms(s);
    else if (score === 'wanda') throw new SlimTensorError(`recipe ${rule.label} prunes '${t.name}' by Wanda scores, which need calibration statistics of its input (recipe calibration, --calibrate-text / --calibrate-tokens); none cover it`, 'ERR_VALUE');
  } else if (score !== 'magnitude') {
    activationNorms = score.activationNorms.get(t.name);
    if (activationNorms === undefined) throw new SlimTensorError(`recipe ${rule.label} prunes '${t.name}' by Wanda scores, but options.score.activationNorms has no entry for it`, 'ERR_VALUE');
    if (activationNorms.length !== cols) throw new SlimTensorError(`recipe ${rule.label}: options.score.activationNorms['${t.name}'] has ${activationNorms.length} norms; the tensor has ${cols} input channels (shape ${shapeText(t.shape)})`, 'ERR_SHAPE');
  }
  const layout = rule.options.layout as PruneLayout;
  const action = { kind: 'prune' as const, pattern, n, m, activationNorms, layout };
  // compressed-tensors' sparse-24-bitmask holds 2-D 2:4 weights only.
  let dense: string | undefined;
  if (format === 'gguf') dense = 'GGUF has no sparse tensor type';
  else if (layout === 'dense') dense = "the default layout 'dense': every consumer loads dense weights, and current vLLM and transformers read no sparse layout";
  else if (format === 'safetensors') dense = 'plain safetensors has no sparse layout';
  else if (n !== 2 || m !== 4) dense = `compressed-tensors' sparse-24-bitmask stores 2:4 only, not ${pattern}`;
  else if (t.shape.length !== 2) dense = `${t.shape.length}-D: sparse-24-bitmask stores 2-D Linear weights`;
  if (dense !== undefined) return { ...base, action: { ...action, sparse24: false, dense: `${dense}: the pruned tensor is written dense` } };
  return { ...base, action: { ...action, sparse24: true } };
}

/** A short name of an action's output: 'Q4_0', 'int4 g128 sym', 'F16', 'kept'. */
export function describeAction(a: TensorAction, storage: string): string {
  switch (a.kind) {
    case 'keep':
      return storage;
    case 'convert':
      return a.dtype.toUpperCase();
    case 'lowrank':
      return 'low-rank';
    case 'prune':
      return a.sparse24 ? `${a.pattern} sparse-24-bitmask` : `${a.pattern} pruned ${storage}`;
    case 'quantize': {
      const o = a.options;
      if (GGUF_QUANTS.includes(o.format)) return o.format.toUpperCase();
      const g = o.groupSize === 'channel' ? 'channel' : `g${o.groupSize ?? 128}`;
      return `${o.format} ${g} ${o.symmetric === false ? 'asym' : 'sym'}${o.search === 'mse' ? ' mse' : ''}`;
    }
  }
}

export { shapeText };
