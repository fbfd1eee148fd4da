// Tiny random llama / qwen2 / qwen3 models for the runtime's tests, written
// by hand (independent of lib/'s writers): a Hugging Face folder
// (config.json + model.safetensors, Hugging Face names and layout) and the
// same weights as a GGUF file (llama.cpp's names; llama's Q/K rows permuted
// as convert_hf_to_gguf does). Also the Hugging Face twin of a GGUF model.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { GGUFReader } from '../../lib/formats/gguf';
import { unpermuteQK } from './reference-llm';
import { bytesOf, f32ToBF16Bits, f32ToF16Bits, GGML, writeGGUF, type WValue } from './gguf-writer';
import { hfLlamaLayout, hfRoleOffset, type HfLlamaDims, type HfLlamaRole } from './models';
import { Rng } from './random';
import { stFile, stPack } from './st-bytes';

export type TinyArch = 'llama' | 'qwen2' | 'qwen3';

export interface TinyConfig extends HfLlamaDims {
  arch: TinyArch;
  eps: number;
  ropeBase: number;
  ctx: number;
}

export interface TinyTensor {
  /** Hugging Face name. */
  name: string;
  shape: number[];
  values: Float32Array;
}

const HF_CLASS: Record<TinyArch, string> = { llama: 'LlamaForCausalLM', qwen2: 'Qwen2ForCausalLM', qwen3: 'Qwen3ForCausalLM' };

/** Random weights in Hugging Face names and layout. */
export function tinyTensors(c: TinyConfig, seed: number): TinyTensor[] {
  const rng = new Rng(seed);
  const t = (name: string, shape: number[], scale: number, offset = 0): TinyTensor => {
    const v = rng.normals(shape.reduce((a, d) => a * d, 1), scale);
    if (offset) for (let i = 0; i < v.length; i++) v[i] = (v[i] as number) + offset;
    return { name, shape, values: v };
  };
  // Standard deviation per role (norms around 1).
  const scale: Record<HfLlamaRole, number> = { embed: 1, norm: 0.1, q: 0.3, k: 0.3, v: 0.3, o: 0.2, gate: 0.3, up: 0.3, down: 0.2, bias: 0.5, headNorm: 0.1, head: 0.3 };
  const layout = hfLlamaLayout({ ...c, qkvBias: c.arch === 'qwen2', qkNorm: c.arch === 'qwen3' });
  return layout.map((e) => t(e.name, e.shape, scale[e.role], hfRoleOffset(e.role)));
}

function encode(values: Float32Array, dtype: 'F32' | 'F16' | 'BF16'): Uint8Array {
  if (dtype === 'F32') return bytesOf(values);
  return bytesOf(Uint16Array.from(values, dtype === 'F16' ? f32ToF16Bits : f32ToBF16Bits));
}

export function tinyConfigJson(c: TinyConfig): Record<string, unknown> {
  return {
    architectures: [HF_CLASS[c.arch]],
    model_type: c.arch,
    vocab_size: c.vocab,
    hidden_size: c.embd,
    num_hidden_layers: c.layers,
    num_attention_heads: c.heads,
    num_key_value_heads: c.headsKv,
    ...(c.headDim !== c.embd / c.heads ? { head_dim: c.headDim } : {}),
    intermediate_size: c.ff,
    rms_norm_eps: c.eps,
    rope_theta: c.ropeBase,
    max_position_embeddings: c.ctx,
    tie_word_embeddings: c.tied,
    bos_token_id: 1,
    eos_token_id: 2,
  };
}

/** config.json + model.safetensors. */
export async function writeTinyHf(dir: string, c: TinyConfig, tensors: readonly TinyTensor[], dtype: 'F32' | 'F16' | 'BF16' = 'F32'): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  const { header, data } = stPack(tensors.map((t) => [t.name, dtype, t.shape, encode(t.values, dtype)]), { format: 'pt' });
  await fsp.writeFile(path.join(dir, 'model.safetensors'), stFile(header, data));
  await fsp.writeFile(path.join(dir, 'config.json'), JSON.stringify(tinyConfigJson(c), null, 2));
}

/** convert_hf_to_gguf's permute of Q/K rows: per head, HF row h·d/2 + i goes to row 2i + h. */
export function permuteQK(values: Float32Array, heads: number, cols: number): Float32Array {
  const rows = values.length / cols;
  const d = rows / heads;
  const out = new Float32Array(values.length);
  for (let hd = 0; hd < heads; hd++) {
    for (let h = 0; h < 2; h++) {
      for (let i = 0; i < d / 2; i++) {
        const src = hd * d + h * (d / 2) + i;
        const dst = hd * d + 2 * i + h;
        out.set(values.subarray(src * cols, (src + 1) * cols), dst * cols);
      }
    }
  }
  return out;
}

const GGUF_NAMES: [RegExp, string][] = [
  [/^model\.embed_tokens\.weight$/, 'token_embd.weight'],
  [/^model\.norm\.weight$/, 'output_norm.weight'],
  [/^lm_head\.weight$/, 'output.weight'],
  [/^model\.layers\.(\d+)\.input_layernorm\.weight$/, 'blk.$1.attn_norm.weight'],
  [/^model\.layers\.(\d+)\.post_attention_layernorm\.weight$/, 'blk.$1.ffn_norm.weight'],
  [/^model\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)$/, 'blk.$1.attn_q.$2'],
  [/^model\.layers\.(\d+)\.self_attn\.k_proj\.(weight|bias)$/, 'blk.$1.attn_k.$2'],
  [/^model\.layers\.(\d+)\.self_attn\.v_proj\.(weight|bias)$/, 'blk.$1.attn_v.$2'],
  [/^model\.layers\.(\d+)\.self_attn\.o_proj\.weight$/, 'blk.$1.attn_output.weight'],
  [/^model\.layers\.(\d+)\.self_attn\.q_norm\.weight$/, 'blk.$1.attn_q_norm.weight'],
  [/^model\.layers\.(\d+)\.self_attn\.k_norm\.weight$/, 'blk.$1.attn_k_norm.weight'],
  [/^model\.layers\.(\d+)\.mlp\.gate_proj\.weight$/, 'blk.$1.ffn_gate.weight'],
  [/^model\.layers\.(\d+)\.mlp\.up_proj\.weight$/, 'blk.$1.ffn_up.weight'],
  [/^model\.layers\.(\d+)\.mlp\.down_proj\.weight$/, 'blk.$1.ffn_down.weight'],
];

export function ggufName(hf: string): string {
  for (const [re, to] of GGUF_NAMES) if (re.test(hf)) return hf.replace(re, to);
  throw new Error(`no GGUF name for ${hf}`);
}

/** The same model as an F32 GGUF (extra metadata and tensor overrides for error tests). */
export function tinyGgufBytes(
  c: TinyConfig,
  tensors: readonly TinyTensor[],
  edit: { kv?: [string, WValue][]; drop?: string[]; reshape?: Record<string, number[]> } = {},
): Uint8Array {
  const u32 = (value: number): WValue => ({ type: 'u32', value });
  const f32 = (value: number): WValue => ({ type: 'f32', value });
  const a = c.arch;
  const kv: [string, WValue][] = [
    ['general.architecture', { type: 'string', value: a }],
    [`${a}.context_length`, u32(c.ctx)],
    [`${a}.embedding_length`, u32(c.embd)],
    [`${a}.block_count`, u32(c.layers)],
    [`${a}.feed_forward_length`, u32(c.ff)],
    [`${a}.attention.head_count`, u32(c.heads)],
    [`${a}.attention.head_count_kv`, u32(c.headsKv)],
    [`${a}.attention.key_length`, u32(c.headDim)],
    [`${a}.attention.value_length`, u32(c.headDim)],
    [`${a}.rope.freq_base`, f32(c.ropeBase)],
    [`${a}.attention.layer_norm_rms_epsilon`, f32(c.eps)],
    ['tokenizer.ggml.bos_token_id', u32(1)],
    ['tokenizer.ggml.eos_token_id', u32(2)],
  ];
  for (const [k, v] of edit.kv ?? []) {
    const i = kv.findIndex(([key]) => key === k);
    if (i >= 0) kv[i] = [k, v];
    else kv.push([k, v]);
  }
  const out = [];
  for (const t of tensors) {
    const name = ggufName(t.name);
    if (edit.drop?.includes(name)) continue;
    let values = t.values;
    if (a === 'llama' && /attn_q\.weight$/.test(name)) values = permuteQK(values, c.heads, c.embd);
    if (a === 'llama' && /attn_k\.weight$/.test(name)) values = permuteQK(values, c.headsKv, c.embd);
    const shape = edit.reshape?.[name] ?? t.shape;
    out.push({ name, dims: shape.slice().reverse(), typeId: GGML.F32, data: bytesOf(values.subarray(0, shape.reduce((x, d) => x * d, 1))) });
  }
  return writeGGUF({ kv, tensors: out }).bytes;
}

/**
 * A Hugging Face folder holding a llama GGUF model's weights (F32): HF
 * names, Q/K rows unpermuted, config.json from the GGUF metadata.
 */
export async function hfTwinOfGguf(gguf: string, dir: string): Promise<TinyConfig> {
  const g = await GGUFReader.open(gguf);
  try {
    const m = (k: string) => g.metadata.get(`llama.${k}`) as number;
    const c: TinyConfig = {
      arch: 'llama',
      vocab: g.tensor('token_embd.weight')?.shape[0] as number,
      embd: m('embedding_length'),
      layers: m('block_count'),
      heads: m('attention.head_count'),
      headsKv: m('attention.head_count_kv'),
      headDim: m('embedding_length') / m('attention.head_count'),
      ff: m('feed_forward_length'),
      eps: m('attention.layer_norm_rms_epsilon'),
      ropeBase: (g.metadata.get('llama.rope.freq_base') as number | undefined) ?? 10000,
      tied: g.tensor('output.weight') === undefined,
      ctx: m('context_length'),
    };
    const tensors: TinyTensor[] = [];
    for (const info of g.tensors) {
      const name = hfNameOf(info.name);
      if (name === undefined) continue;
      const t = await g.readTensor(info);
      let values = Float32Array.from(t.data as Float32Array);
      if (/attn_q\.weight$/.test(info.name)) values = unpermuteQK(values, c.heads, c.embd);
      if (/attn_k\.weight$/.test(info.name)) values = unpermuteQK(values, c.headsKv, c.embd);
      tensors.push({ name, shape: info.shape.slice(), values });
    }
    await writeTinyHf(dir, c, tensors, 'F32');
    return c;
  } finally {
    await g.close();
  }
}

function hfNameOf(gguf: string): string | undefined {
  const m = /^blk\.(\d+)\.(.*)$/.exec(gguf);
  const table: Record<string, string> = {
    'attn_norm.weight': 'input_layernorm.weight',
    'ffn_norm.weight': 'post_attention_layernorm.weight',
    'attn_q.weight': 'self_attn.q_proj.weight',
    'attn_k.weight': 'self_attn.k_proj.weight',
    'attn_v.weight': 'self_attn.v_proj.weight',
    'attn_output.weight': 'self_attn.o_proj.weight',
    'ffn_gate.weight': 'mlp.gate_proj.weight',
    'ffn_up.weight': 'mlp.up_proj.weight',
    'ffn_down.weight': 'mlp.down_proj.weight',
  };
  if (m) return table[m[2] as string] === undefined ? undefined : `model.layers.${m[1]}.${table[m[2] as string] as string}`;
  return ({ 'token_embd.weight': 'model.embed_tokens.weight', 'output_norm.weight': 'model.norm.weight', 'output.weight': 'lm_head.weight' } as Record<string, string>)[gguf];
}

