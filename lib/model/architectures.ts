// The one table of model architectures slimtensor understands. The runtime
// (lib/model/), the Hugging Face → GGUF converter (lib/convert/) and the
// compressed-tensors writer (which Linear layers to quantize) all read it:
// an architecture is a table entry here, never a copy of a loop elsewhere.
//
// Facts (names, layouts, metadata keys) follow llama.cpp's GGUF conventions
// (gguf-py's tensor and key names) and Hugging Face transformers' module
// names for each model class.
import { SlimTensorError } from '../errors';

/**
 * How rotary embeddings pair the dimensions of a head.
 * - `normal`: adjacent pairs (2i, 2i+1) — llama.cpp's LLAMA_ROPE_TYPE_NORM.
 *   Hugging Face's Llama code rotates halves (i, i + d/2), so the converter
 *   permutes the rows of Q and K (`permuteQK`) to make adjacent pairs.
 * - `neox`: halves (i, i + d/2) — LLAMA_ROPE_TYPE_NEOX, Hugging Face's own
 *   layout, no permutation.
 */
export type RopeStyle = 'normal' | 'neox';

/** What a tensor is, for the decisions that depend on it (quantize it? which kernel?). */
export type TensorKind = 'embedding' | 'linear' | 'norm' | 'bias' | 'head' | 'rope';

/** One per-layer or global tensor role of an architecture. */
export interface TensorRole {
  /** llama.cpp's name; `{L}` is the block index. */
  gguf: string;
  /** Hugging Face's name; `{L}` is the layer index. */
  hf: string;
  kind: TensorKind;
  /** Needed for the architecture to run (biases and q/k norms are required where the architecture has them). */
  required: boolean;
  /**
   * vLLM loads this Linear as one shard of a merged layer of that name in the
   * same module (QKVParallelLinear `qkv_proj`, MergedColumnParallelLinear
   * `gate_up_proj`): the shards of one merged layer take one quantization
   * scheme, and kernel shape rules apply to the merged layer.
   */
  vllmMerged?: string;
}

export interface Architecture {
  /** llama.cpp's `general.architecture`. */
  gguf: string;
  /** Hugging Face `config.json` `architectures[0]` values mapped to this entry. */
  hfClasses: readonly string[];
  rope: RopeStyle;
  /** The HF → GGUF conversion permutes Q and K rows (see RopeStyle). */
  permuteQK: boolean;
  /** Global tensors (embedding, final norm, head). */
  global: readonly TensorRole[];
  /** Per-block tensors, `{L}` in both names. */
  block: readonly TensorRole[];
}

const LLAMA_GLOBAL: readonly TensorRole[] = [
  { gguf: 'token_embd.weight', hf: 'model.embed_tokens.weight', kind: 'embedding', required: true },
  { gguf: 'output_norm.weight', hf: 'model.norm.weight', kind: 'norm', required: true },
  // Absent when the embeddings are tied (`tie_word_embeddings`): the head reuses token_embd.
  { gguf: 'output.weight', hf: 'lm_head.weight', kind: 'head', required: false },
  // Llama 3's RoPE frequency divisors (one per rotated pair). Hugging Face has
  // no such tensor (hf: ''): transformers computes the factors from
  // config.json's rope_scaling (hparams.ts llama3RopeFactors), which is what
  // a converter writes here.
  { gguf: 'rope_freqs.weight', hf: '', kind: 'rope', required: false },
];

function blockRole(gguf: string, hf: string, kind: TensorKind, required = true, vllmMerged?: string): TensorRole {
  return { gguf: `blk.{L}.${gguf}`, hf: `model.layers.{L}.${hf}`, kind, required, ...(vllmMerged !== undefined ? { vllmMerged } : {}) };
}

const LLAMA_BLOCK: readonly TensorRole[] = [
  blockRole('attn_norm.weight', 'input_layernorm.weight', 'norm'),
  blockRole('attn_q.weight', 'self_attn.q_proj.weight', 'linear', true, 'qkv_proj'),
  blockRole('attn_k.weight', 'self_attn.k_proj.weight', 'linear', true, 'qkv_proj'),
  blockRole('attn_v.weight', 'self_attn.v_proj.weight', 'linear', true, 'qkv_proj'),
  blockRole('attn_output.weight', 'self_attn.o_proj.weight', 'linear'),
  blockRole('ffn_norm.weight', 'post_attention_layernorm.weight', 'norm'),
  blockRole('ffn_gate.weight', 'mlp.gate_proj.weight', 'linear', true, 'gate_up_proj'),
  blockRole('ffn_up.weight', 'mlp.up_proj.weight', 'linear', true, 'gate_up_proj'),
  blockRole('ffn_down.weight', 'mlp.down_proj.weight', 'linear'),
];

const QKV_BIASES: readonly TensorRole[] = [
  blockRole('attn_q.bias', 'self_attn.q_proj.bias', 'bias'),
  blockRole('attn_k.bias', 'self_attn.k_proj.bias', 'bias'),
  blockRole('attn_v.bias', 'self_attn.v_proj.bias', 'bias'),
];

const QK_NORMS: readonly TensorRole[] = [
  blockRole('attn_q_norm.weight', 'self_attn.q_norm.weight', 'norm'),
  blockRole('attn_k_norm.weight', 'self_attn.k_norm.weight', 'norm'),
];

/** Every architecture, keyed by llama.cpp's name. */
export const ARCHITECTURES: Readonly<Record<string, Architecture>> = {
  // Llama 1/2/3.x, TinyLlama, SmolLM, Mistral (llama.cpp converts Mistral to `llama`).
  llama: {
    gguf: 'llama',
    hfClasses: ['LlamaForCausalLM', 'MistralForCausalLM'],
    rope: 'normal',
    permuteQK: true,
    global: LLAMA_GLOBAL,
    block: LLAMA_BLOCK,
  },
  // Qwen2 / Qwen2.5: q/k/v biases, NeoX rotary layout.
  qwen2: {
    gguf: 'qwen2',
    hfClasses: ['Qwen2ForCausalLM'],
    rope: 'neox',
    permuteQK: false,
    global: LLAMA_GLOBAL,
    block: [...LLAMA_BLOCK, ...QKV_BIASES],
  },
  // Qwen3: per-head RMSNorm of q and k before RoPE, no biases, head_dim may differ from hidden/heads.
  qwen3: {
    gguf: 'qwen3',
    hfClasses: ['Qwen3ForCausalLM'],
    rope: 'neox',
    permuteQK: false,
    global: LLAMA_GLOBAL,
    block: [...LLAMA_BLOCK, ...QK_NORMS],
  },
};

export const SUPPORTED_HF_CLASSES: readonly string[] = Object.values(ARCHITECTURES).flatMap((a) => a.hfClasses);
export const SUPPORTED_GGUF_ARCHITECTURES: readonly string[] = Object.keys(ARCHITECTURES);

/** The entry for a GGUF `general.architecture`, or an ERR_UNSUPPORTED naming it and the supported list. */
export function architectureOfGguf(name: string, where = 'model'): Architecture {
  const a = Object.prototype.hasOwnProperty.call(ARCHITECTURES, name) ? ARCHITECTURES[name] : undefined;
  if (!a) {
    throw new SlimTensorError(
      `${where}: architecture '${name}' is not supported (supported: ${SUPPORTED_GGUF_ARCHITECTURES.join(', ')})`,
      'ERR_UNSUPPORTED',
    );
  }
  return a;
}

/** The entry for a Hugging Face model class (`config.json` `architectures[0]`), or undefined. */
export function findArchitectureOfHfClass(hfClass: string): Architecture | undefined {
  return Object.values(ARCHITECTURES).find((a) => a.hfClasses.includes(hfClass));
}

/** findArchitectureOfHfClass, or an ERR_UNSUPPORTED naming the class and the supported list. */
export function architectureOfHfClass(hfClass: string, where = 'model'): Architecture {
  const a = findArchitectureOfHfClass(hfClass);
  if (!a) {
    throw new SlimTensorError(
      `${where}: Hugging Face architecture '${hfClass}' is not supported (supported: ${SUPPORTED_HF_CLASSES.join(', ')})`,
      'ERR_UNSUPPORTED',
    );
  }
  return a;
}

/** A tensor name resolved against an architecture: its role and block index (-1 for global tensors). */
export interface ResolvedTensor {
  role: TensorRole;
  layer: number;
}

const patternCache = new WeakMap<TensorRole, { gguf: RegExp; hf: RegExp }>();

function rolePatterns(role: TensorRole): { gguf: RegExp; hf: RegExp } {
  let p = patternCache.get(role);
  if (!p) {
    const compile = (name: string) =>
      new RegExp(`^${name.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace('{L}', '(0|[1-9][0-9]*)')}$`);
    p = { gguf: compile(role.gguf), hf: compile(role.hf) };
    patternCache.set(role, p);
  }
  return p;
}

/** The role of a tensor name in either spelling (`naming`), or undefined when the architecture has no such tensor. */
export function resolveTensor(arch: Architecture, name: string, naming: 'gguf' | 'hf'): ResolvedTensor | undefined {
  for (const role of arch.global) {
    if (rolePatterns(role)[naming].test(name)) return { role, layer: -1 };
  }
  for (const role of arch.block) {
    const m = rolePatterns(role)[naming].exec(name);
    if (m) return { role, layer: Number(m[1]) };
  }
  return undefined;
}

/** The name of a role in one spelling, for block `layer` (ignored for global roles). */
export function tensorName(role: TensorRole, naming: 'gguf' | 'hf', layer = -1): string {
  const name = role[naming];
  return name.includes('{L}') ? name.replace('{L}', String(layer)) : name;
}

/**
 * Hugging Face module names of the Linear projections of attention and MLP
 * blocks, for models whose architecture is not in the table (the
 * conservative rule: only these are treated as quantizable Linear layers;
 * every other 2-D tensor is kept and reported). Covers Llama-like,
 * Mixtral/Qwen-MoE experts (`experts.N.gate_proj`, `w1/w2/w3`), Falcon/GPT-NeoX
 * style `query_key_value`/`dense*`, OPT/BART `fc1/fc2`.
 */
export const GENERIC_LINEAR_SUFFIXES: readonly string[] = [
  'q_proj.weight', 'k_proj.weight', 'v_proj.weight', 'o_proj.weight', 'out_proj.weight',
  'gate_proj.weight', 'up_proj.weight', 'down_proj.weight',
  'w1.weight', 'w2.weight', 'w3.weight',
  'query_key_value.weight', 'dense.weight', 'dense_h_to_4h.weight', 'dense_4h_to_h.weight',
  'fc1.weight', 'fc2.weight',
];

/**
 * Hugging Face names of embedding tables outside the table (token, position
 * and token-type embeddings of GPT-2, BERT, OPT, Falcon-style models): 2-D
 * weights that are not Linear layers.
 */
export const GENERIC_EMBEDDING_SUFFIXES: readonly string[] = [
  'embed_tokens.weight', 'embed_positions.weight', 'wte.weight', 'wpe.weight', 'tok_embeddings.weight',
  'word_embeddings.weight', 'position_embeddings.weight', 'token_type_embeddings.weight',
];

/** `name` is `suffix` or ends with `.suffix` (a whole module path component). */
function endsWithComponent(name: string, suffix: string): boolean {
  return name === suffix || name.endsWith(`.${suffix}`);
}

/**
 * What a tensor is under the conservative rule for architectures not in
 * the table, with its role when one is known. GGUF names are llama.cpp's,
 * shared across architectures, so they resolve against every entry;
 * Hugging Face names match GENERIC_LINEAR_SUFFIXES (linear),
 * GENERIC_EMBEDDING_SUFFIXES (embedding) or `lm_head.weight` (head).
 * Undefined: not recognised.
 */
export function genericTensorKind(name: string, naming: 'gguf' | 'hf'): { kind: TensorKind; role: TensorRole | undefined } | undefined {
  if (naming === 'gguf') {
    for (const a of Object.values(ARCHITECTURES)) {
      const r = resolveTensor(a, name, 'gguf');
      if (r !== undefined) return { kind: r.role.kind, role: r.role };
    }
    return undefined;
  }
  if (GENERIC_LINEAR_SUFFIXES.some((s) => endsWithComponent(name, s))) return { kind: 'linear', role: undefined };
  if (GENERIC_EMBEDDING_SUFFIXES.some((s) => endsWithComponent(name, s))) return { kind: 'embedding', role: undefined };
  if (name === GENERIC_HEAD.hf) return { kind: 'head', role: GENERIC_HEAD };
  return undefined;
}

/** The output head in both spellings, for architectures outside the table: llama.cpp's `output`, transformers' `lm_head`. */
const GENERIC_HEAD = LLAMA_GLOBAL.find((r) => r.kind === 'head') as TensorRole;

/** The output head role of an architecture (the generic `output` / `lm_head` when it is not in the table). */
export function headRole(arch: Architecture | undefined): TensorRole {
  return arch?.global.find((r) => r.kind === 'head') ?? GENERIC_HEAD;
}

/** vLLM's usual merged layers (its packed_modules_mapping) by leaf module name, for Hugging Face names outside the table. */
const GENERIC_VLLM_MERGED: Readonly<Record<string, string>> = { q_proj: 'qkv_proj', k_proj: 'qkv_proj', v_proj: 'qkv_proj', gate_proj: 'gate_up_proj', up_proj: 'gate_up_proj' };

/**
 * The merged vLLM layer a Linear module loads into, named by its full path
 * (`model.layers.0.self_attn.qkv_proj`), or undefined when vLLM loads it
 * alone. `role` is the module's role when the architecture is in the table.
 * Outside the table: experts of a mixture-of-experts block (`….experts.N.*`)
 * all load into one FusedMoE layer (`….experts`), and q/k/v and gate/up
 * projections merge as in vLLM's Llama-like models.
 */
export function vllmMergedLayer(module: string, role: TensorRole | undefined): string | undefined {
  const dot = module.lastIndexOf('.');
  const parent = dot < 0 ? '' : `${module.slice(0, dot)}.`;
  if (role?.vllmMerged !== undefined) return `${parent}${role.vllmMerged}`;
  const experts = /^(.*\.experts)\.(?:0|[1-9][0-9]*)\.[^.]+$/.exec(module);
  if (experts !== null) return experts[1];
  const leaf = module.slice(dot + 1);
  const merged = Object.prototype.hasOwnProperty.call(GENERIC_VLLM_MERGED, leaf) ? GENERIC_VLLM_MERGED[leaf] : undefined;
  return merged === undefined ? undefined : `${parent}${merged}`;
}

/** Llama-family hyper-parameters, as the runtime and the converter use them. */
export interface Hyperparameters {
  vocabSize: number;
  contextLength: number;
  embeddingLength: number;
  blockCount: number;
  feedForwardLength: number;
  headCount: number;
  headCountKv: number;
  /** Per-head dimension of q/k (= v here); embeddingLength / headCount unless the config says otherwise (Qwen3). */
  headDim: number;
  ropeFreqBase: number;
  /** RoPE scaling as the source states it; `none` when absent. */
  ropeScaling:
    | { type: 'none' }
    | { type: 'linear'; factor: number }
    | { type: 'yarn'; factor: number; originalContextLength: number }
    | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalContextLength: number };
  rmsNormEps: number;
  tiedEmbeddings: boolean;
}

/**
 * GGUF metadata keys of the hyper-parameters (prefixed with `${arch}.`),
 * as llama.cpp reads them. `rope.dimension_count` is headDim;
 * `attention.key_length`/`value_length` are written when headDim differs
 * from embedding_length / head_count.
 */
export const GGUF_HPARAM_KEYS = {
  contextLength: 'context_length',
  embeddingLength: 'embedding_length',
  blockCount: 'block_count',
  feedForwardLength: 'feed_forward_length',
  headCount: 'attention.head_count',
  headCountKv: 'attention.head_count_kv',
  ropeFreqBase: 'rope.freq_base',
  rmsNormEps: 'attention.layer_norm_rms_epsilon',
  ropeDimensionCount: 'rope.dimension_count',
  keyLength: 'attention.key_length',
  valueLength: 'attention.value_length',
  vocabSize: 'vocab_size',
  /** Mixture-of-experts models: experts per layer (absent for dense models). */
  expertCount: 'expert_count',
  ropeScalingType: 'rope.scaling.type',
  ropeScalingFactor: 'rope.scaling.factor',
  ropeScalingOriginalContextLength: 'rope.scaling.original_context_length',
} as const;

/**
 * Hugging Face `config.json` keys of the hyper-parameters (llama family):
 * vocab_size, max_position_embeddings, hidden_size, num_hidden_layers,
 * intermediate_size, num_attention_heads, num_key_value_heads (default:
 * num_attention_heads), head_dim (default: hidden_size / heads), rope_theta
 * (default 10000), rope_scaling ({ rope_type | type: linear | yarn | llama3, factor, … }),
 * rms_norm_eps, tie_word_embeddings (default false).
 */
export const HF_HPARAM_KEYS = {
  vocabSize: 'vocab_size',
  contextLength: 'max_position_embeddings',
  embeddingLength: 'hidden_size',
  blockCount: 'num_hidden_layers',
  feedForwardLength: 'intermediate_size',
  headCount: 'num_attention_heads',
  headCountKv: 'num_key_value_heads',
  headDim: 'head_dim',
  ropeFreqBase: 'rope_theta',
  ropeScaling: 'rope_scaling',
  rmsNormEps: 'rms_norm_eps',
  tiedEmbeddings: 'tie_word_embeddings',
} as const;

/**
 * A dimension of a tensor role, in terms of the hyper-parameters: the
 * vocabulary, the embedding, the feed-forward width, the rows of all query
 * heads (heads × headDim) and of all key/value heads (kv heads × headDim),
 * one head, and the rotated pairs of one head (rope_freqs).
 */
export type RoleDim = 'vocab' | 'embd' | 'ff' | 'q' | 'kv' | 'headDim' | 'ropePairs';

/** Shapes (PyTorch order, outermost first) of the roles, keyed by the GGUF name without `blk.{L}.`. */
const ROLE_DIMS: Readonly<Record<string, readonly RoleDim[]>> = {
  'token_embd.weight': ['vocab', 'embd'],
  'output_norm.weight': ['embd'],
  'output.weight': ['vocab', 'embd'],
  'rope_freqs.weight': ['ropePairs'],
  'attn_norm.weight': ['embd'],
  'attn_q.weight': ['q', 'embd'],
  'attn_k.weight': ['kv', 'embd'],
  'attn_v.weight': ['kv', 'embd'],
  'attn_output.weight': ['embd', 'q'],
  'ffn_norm.weight': ['embd'],
  'ffn_gate.weight': ['ff', 'embd'],
  'ffn_up.weight': ['ff', 'embd'],
  'ffn_down.weight': ['embd', 'ff'],
  'attn_q.bias': ['q'],
  'attn_k.bias': ['kv'],
  'attn_v.bias': ['kv'],
  'attn_q_norm.weight': ['headDim'],
  'attn_k_norm.weight': ['headDim'],
};

function roleKey(role: TensorRole): string {
  return role.gguf.startsWith('blk.{L}.') ? role.gguf.slice('blk.{L}.'.length) : role.gguf;
}

/** The dimensions of a role's tensor (undefined for a role without a fixed shape). */
export function roleDims(role: TensorRole): readonly RoleDim[] | undefined {
  const k = roleKey(role);
  return Object.prototype.hasOwnProperty.call(ROLE_DIMS, k) ? ROLE_DIMS[k] : undefined;
}

/** The size of a role dimension under the hyper-parameters. */
export function roleDimSize(d: RoleDim, h: Hyperparameters): number {
  switch (d) {
    case 'vocab':
      return h.vocabSize;
    case 'embd':
      return h.embeddingLength;
    case 'ff':
      return h.feedForwardLength;
    case 'q':
      return h.headCount * h.headDim;
    case 'kv':
      return h.headCountKv * h.headDim;
    case 'headDim':
      return h.headDim;
    case 'ropePairs':
      return h.headDim / 2;
  }
}

/**
 * The head count whose rows the Hugging Face → GGUF conversion permutes
 * for this role (Q by the query heads, K by the key/value heads, weights
 * and biases alike: convert_hf_to_gguf's permute), or undefined when the
 * architecture keeps Hugging Face's layout or the role is not Q or K.
 */
export function permutedHeads(arch: Architecture, role: TensorRole, h: Hyperparameters): number | undefined {
  if (!arch.permuteQK) return undefined;
  const k = roleKey(role);
  if (k === 'attn_q.weight' || k === 'attn_q.bias') return h.headCount;
  if (k === 'attn_k.weight' || k === 'attn_k.bias') return h.headCountKv;
  return undefined;
}
