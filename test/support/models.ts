// Small generated models for pipeline and CLI tests: a llama-like GGUF (F32)
// written with the independent test writer, and a Hugging Face folder
// (sharded safetensors in F16 or BF16, config.json, tokenizer files and a
// stray pytorch_model.bin) built by hand.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { bytesOf, f32ToBF16Bits, f32ToF16Bits, GGML, writeGGUF } from './gguf-writer';
import { Rng } from './random';
import { stFile, stPack } from './st-bytes';

export interface GeneratedTensor {
  name: string;
  /** PyTorch order. */
  shape: number[];
  values: Float32Array;
}

/** What a tensor of a Hugging Face Llama-family model is, for generators that pick a scale per role. */
export type HfLlamaRole = 'embed' | 'norm' | 'q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down' | 'bias' | 'headNorm' | 'head';

/** A Llama-family model's dimensions, as the test generators describe them. */
export interface HfLlamaDims {
  vocab: number;
  embd: number;
  layers: number;
  heads: number;
  headsKv: number;
  headDim: number;
  ff: number;
  tied: boolean;
}

export interface HfLlamaShape extends HfLlamaDims {
  /** q/k/v biases (Qwen2). */
  qkvBias: boolean;
  /** per-head q/k RMSNorms (Qwen3). */
  qkNorm: boolean;
}

/** The tensors of a Llama / Qwen2 / Qwen3 model in transformers' names and shapes, in the order the generators draw them. */
export function hfLlamaLayout(c: HfLlamaShape): { name: string; shape: number[]; role: HfLlamaRole }[] {
  const q = c.heads * c.headDim;
  const kv = c.headsKv * c.headDim;
  const out: { name: string; shape: number[]; role: HfLlamaRole }[] = [{ name: 'model.embed_tokens.weight', shape: [c.vocab, c.embd], role: 'embed' }];
  for (let l = 0; l < c.layers; l++) {
    const p = `model.layers.${l}.`;
    const add = (name: string, shape: number[], role: HfLlamaRole): void => void out.push({ name: p + name, shape, role });
    add('input_layernorm.weight', [c.embd], 'norm');
    add('self_attn.q_proj.weight', [q, c.embd], 'q');
    add('self_attn.k_proj.weight', [kv, c.embd], 'k');
    add('self_attn.v_proj.weight', [kv, c.embd], 'v');
    add('self_attn.o_proj.weight', [c.embd, q], 'o');
    add('post_attention_layernorm.weight', [c.embd], 'norm');
    add('mlp.gate_proj.weight', [c.ff, c.embd], 'gate');
    add('mlp.up_proj.weight', [c.ff, c.embd], 'up');
    add('mlp.down_proj.weight', [c.embd, c.ff], 'down');
    if (c.qkvBias) for (const [n, w] of [['q', q], ['k', kv], ['v', kv]] as const) add(`self_attn.${n}_proj.bias`, [w], 'bias');
    if (c.qkNorm) for (const n of ['q', 'k']) add(`self_attn.${n}_norm.weight`, [c.headDim], 'headNorm');
  }
  out.push({ name: 'model.norm.weight', shape: [c.embd], role: 'norm' });
  if (!c.tied) out.push({ name: 'lm_head.weight', shape: [c.vocab, c.embd], role: 'head' });
  return out;
}

/** Norm weights are drawn around 1, everything else around 0. */
export const hfRoleOffset = (role: HfLlamaRole): number => (role === 'norm' || role === 'headNorm' ? 1 : 0);

/** llama.cpp names: embedding, head, norms, attention and MLP of `layers` blocks; ffn_down has rows of 48 (no block of 32 fits). */
export function ggufTensors(seed = 1, layers = 2, dim = 64): GeneratedTensor[] {
  const rng = new Rng(seed);
  const t = (name: string, shape: number[], scale = 0.05): GeneratedTensor => ({ name, shape, values: rng.normals(shape.reduce((a, d) => a * d, 1), scale) });
  const out = [t('token_embd.weight', [96, dim]), t('output_norm.weight', [dim], 1), t('output.weight', [96, dim])];
  for (let l = 0; l < layers; l++) {
    out.push(t(`blk.${l}.attn_norm.weight`, [dim], 1), t(`blk.${l}.attn_q.weight`, [dim, dim]), t(`blk.${l}.ffn_up.weight`, [48, dim]), t(`blk.${l}.ffn_down.weight`, [dim, 48]));
  }
  return out;
}

/** Writes the tensors as an F32 GGUF with a few metadata keys. */
export async function writeGGUFModel(file: string, tensors: readonly GeneratedTensor[]): Promise<void> {
  const w = writeGGUF({
    kv: [
      ['general.architecture', { type: 'string', value: 'llama' }],
      ['general.name', { type: 'string', value: 'generated' }],
      ['general.file_type', { type: 'u32', value: 0 }],
      ['llama.block_count', { type: 'u32', value: 2 }],
      ['tokenizer.ggml.tokens', { type: 'array', itemType: 'string', value: ['<s>', 'a', 'b'].map((v) => ({ type: 'string' as const, value: v })) }],
    ],
    tensors: tensors.map((t) => ({ name: t.name, dims: t.shape.slice().reverse(), typeId: GGML.F32, data: bytesOf(t.values) })),
  });
  await fsp.writeFile(file, w.bytes);
}

/** Hugging Face names; down_proj has rows of 96 (groups of 128 do not fit). */
export function hfTensors(seed = 2, dim = 128): GeneratedTensor[] {
  const rng = new Rng(seed);
  const t = (name: string, shape: number[], scale = 0.05): GeneratedTensor => ({ name, shape, values: rng.normals(shape.reduce((a, d) => a * d, 1), scale) });
  return [
    t('model.embed_tokens.weight', [64, dim]),
    t('model.layers.0.input_layernorm.weight', [dim], 1),
    t('model.layers.0.self_attn.q_proj.weight', [dim, dim]),
    t('model.layers.0.self_attn.k_proj.weight', [32, dim]),
    t('model.layers.0.mlp.up_proj.weight', [96, dim]),
    t('model.layers.0.mlp.down_proj.weight', [dim, 96]),
    t('model.norm.weight', [dim], 1),
    t('lm_head.weight', [64, dim]),
  ];
}

export type HalfDType = 'F16' | 'BF16' | 'F32';

/** The value of every f16 bit pattern (infinities and NaN included). */
const F16_VALUES = Float32Array.from({ length: 65536 }, (_, h) => {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 31) return m === 0 ? s * Infinity : NaN;
  return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
});

/** Values as they are stored in `dtype` (rounded), as f32. */
export function stored(values: Float32Array, dtype: HalfDType): Float32Array {
  if (dtype === 'F32') return values;
  const out = new Float32Array(values.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < values.length; i++) {
    const v = values[i] as number;
    if (dtype === 'F16') {
      out[i] = F16_VALUES[f32ToF16Bits(v)] as number;
    } else {
      bits[i] = (f32ToBF16Bits(v) << 16) >>> 0;
    }
  }
  return out;
}

function encode(values: Float32Array, dtype: HalfDType): Uint8Array {
  if (dtype === 'F32') return bytesOf(values);
  const out = new Uint16Array(values.length);
  const convert = dtype === 'F16' ? f32ToF16Bits : f32ToBF16Bits;
  for (let i = 0; i < values.length; i++) out[i] = convert(values[i] as number);
  return new Uint8Array(out.buffer);
}

export const CONFIG = { architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 128, torch_dtype: 'float16' };
export const TOKENIZER = '{"version":"1.0","model":{"type":"BPE"}}';

export interface HFFolderFiles {
  /** config.json (default CONFIG). */
  config?: object;
  /** A folder whose tokenizer.json and tokenizer_config.json are copied (default: a stub tokenizer.json). */
  tokenizerFrom?: string;
  /** More files: name -> text. */
  extra?: Record<string, string>;
}

/**
 * A Hugging Face folder: the tensors in `shards` safetensors files with an
 * index (or one model.safetensors), config.json, tokenizer.json,
 * generation_config.json and a pytorch_model.bin that must not be copied.
 */
export async function writeHFFolder(dir: string, tensors: readonly GeneratedTensor[], dtype: HalfDType, shards: number, files: HFFolderFiles = {}): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  const per = Math.ceil(tensors.length / shards);
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < shards; s++) {
    const part = tensors.slice(s * per, (s + 1) * per);
    const file = shards === 1 ? 'model.safetensors' : `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    const { header, data } = stPack(
      part.map((t) => [t.name, dtype, t.shape, encode(t.values, dtype)]),
      { format: 'pt' },
    );
    await fsp.writeFile(path.join(dir, file), stFile(header, data));
    for (const t of part) weightMap[t.name] = file;
  }
  if (shards > 1) await fsp.writeFile(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
  await fsp.writeFile(path.join(dir, 'config.json'), JSON.stringify(files.config ?? CONFIG, null, 2));
  if (files.tokenizerFrom === undefined) await fsp.writeFile(path.join(dir, 'tokenizer.json'), TOKENIZER);
  else for (const f of ['tokenizer.json', 'tokenizer_config.json']) await fsp.copyFile(path.join(files.tokenizerFrom, f), path.join(dir, f));
  for (const [name, text] of Object.entries(files.extra ?? {})) await fsp.writeFile(path.join(dir, name), text);
  await fsp.writeFile(path.join(dir, 'generation_config.json'), '{"bos_token_id": 1}');
  await fsp.writeFile(path.join(dir, 'pytorch_model.bin'), 'not copied');
}

/** Names of the entries of a folder, sorted. */
export async function listing(dir: string): Promise<string[]> {
  return (await fsp.readdir(dir)).sort();
}
