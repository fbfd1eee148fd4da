// llama-quantize's file mixes: for a llama.cpp file type (Q4_K_M, Q5_K_S,
// Q6_K, Q4_0 …) the ggml type of every tensor of a GGUF model, chosen as
// llama.cpp's llama_tensor_get_type does it (src/llama-quant.cpp at
// c392e50, the build in shared/peers): which tensors are quantized at all,
// the output head at Q6_K, attn_v / ffn_down given more bits on the layers
// `use_more_bits` picks, GQA, mixture-of-experts and 70B rules, and the
// fallbacks when a row is not a multiple of the type's block. Written from
// the rules, not from llama.cpp's code.
//
// llama.cpp decides by substrings of llama.cpp's tensor names ("attn_v.weight",
// "ffn_down" — which also matches ffn_down_exps / ffn_down_shexp of MoE
// models), whatever the architecture; so does this module, so that any
// GGUF llama-quantize accepts gets the same mix. The head and embedding
// names come from the architecture table. The counters llama.cpp keeps
// (the i-th attn_v, the i-th ffn_down) follow the order it processes
// tensors in: llamaQuantizeOrder.
import { SlimTensorError } from '../errors';
import type { GGUFValue } from '../formats/gguf-header';
import { ggmlTypeByName, type GGMLTypeName } from '../formats/gguf-types';
import { ARCHITECTURES, GGUF_HPARAM_KEYS, headRole } from '../model/architectures';

/** The llama.cpp file types slimtensor writes, by preset name. */
export type MixName = 'q4_0' | 'q4_1' | 'q5_0' | 'q5_1' | 'q8_0' | 'q2_k' | 'q3_k_s' | 'q3_k_m' | 'q3_k_l' | 'q4_k_s' | 'q4_k_m' | 'q5_k_s' | 'q5_k_m' | 'q6_k';

export interface MixInfo {
  /** llama.cpp's name: 'Q4_K_M'. */
  label: string;
  /** llama_ftype: the general.file_type llama-quantize writes. */
  fileType: number;
  /** The type of every tensor no rule gives another. */
  base: GGMLTypeName;
}

/** llama_ftype values and base types (llama.cpp's include/llama.h and llama_model_quantize_impl). */
export const GGUF_MIXES: Readonly<Record<MixName, MixInfo>> = {
  q4_0: { label: 'Q4_0', fileType: 2, base: 'Q4_0' },
  q4_1: { label: 'Q4_1', fileType: 3, base: 'Q4_1' },
  q8_0: { label: 'Q8_0', fileType: 7, base: 'Q8_0' },
  q5_0: { label: 'Q5_0', fileType: 8, base: 'Q5_0' },
  q5_1: { label: 'Q5_1', fileType: 9, base: 'Q5_1' },
  q2_k: { label: 'Q2_K', fileType: 10, base: 'Q2_K' },
  q3_k_s: { label: 'Q3_K_S', fileType: 11, base: 'Q3_K' },
  q3_k_m: { label: 'Q3_K_M', fileType: 12, base: 'Q3_K' },
  q3_k_l: { label: 'Q3_K_L', fileType: 13, base: 'Q3_K' },
  q4_k_s: { label: 'Q4_K_S', fileType: 14, base: 'Q4_K' },
  q4_k_m: { label: 'Q4_K_M', fileType: 15, base: 'Q4_K' },
  q5_k_s: { label: 'Q5_K_S', fileType: 16, base: 'Q5_K' },
  q5_k_m: { label: 'Q5_K_M', fileType: 17, base: 'Q5_K' },
  q6_k: { label: 'Q6_K', fileType: 18, base: 'Q6_K' },
};
export const MIX_NAMES = Object.keys(GGUF_MIXES) as MixName[];

/** llama.cpp's name of a general.file_type value slimtensor knows ('Q4_K_M', 'F16'), or undefined. */
export function fileTypeLabel(id: number): string | undefined {
  const plain: Record<number, string> = { 0: 'F32', 1: 'F16', 32: 'BF16' };
  return plain[id] ?? Object.values(GGUF_MIXES).find((m) => m.fileType === id)?.label;
}

export function isMixName(s: unknown): s is MixName {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(GGUF_MIXES, s);
}

/** What the rules need to know about the model (from its GGUF metadata). */
export interface MixModel {
  architecture: string;
  /** {arch}.block_count. */
  layers: number;
  /** n_head / n_head_kv of the first layer (integer division; 0 without KV heads), llama.cpp's n_gqa(). */
  gqa: number;
  /** {arch}.expert_count (0 for dense models). */
  experts: number;
  /** llama.cpp classifies the model as LLM_TYPE_70B (attn_v gets Q5_K where it would get Q3_K/Q4_K). */
  is70B: boolean;
}

function firstInt(v: GGUFValue | undefined): number | undefined {
  // Per-layer hyper-parameters are arrays; llama.cpp's n_gqa() reads layer 0.
  const x = ArrayBuffer.isView(v) || Array.isArray(v) ? (v as ArrayLike<unknown>)[0] : v;
  if (typeof x === 'number' && Number.isSafeInteger(x)) return x;
  if (typeof x === 'bigint' && x >= 0n && x <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(x);
  return undefined;
}

/**
 * The model facts of a GGUF file's metadata. llama.cpp requires
 * general.architecture and {arch}.block_count; a file without them (which
 * llama-quantize refuses) gets the block count from its `blk.N.` tensor
 * names and no architecture-specific rule.
 */
export function mixModelOf(metadata: ReadonlyMap<string, GGUFValue>, tensorNames: Iterable<string> = []): MixModel {
  const archValue = metadata.get('general.architecture');
  const arch = typeof archValue === 'string' ? archValue : '';
  const key = (k: string): number | undefined => (arch === '' ? undefined : firstInt(metadata.get(`${arch}.${k}`)));
  let layers = key(GGUF_HPARAM_KEYS.blockCount);
  if (layers === undefined || layers < 0) {
    layers = 0;
    for (const n of tensorNames) layers = Math.max(layers, layerOf(n) + 1);
  }
  const heads = key(GGUF_HPARAM_KEYS.headCount) ?? 0;
  const kvHeads = key(GGUF_HPARAM_KEYS.headCountKv) ?? heads;
  const experts = key(GGUF_HPARAM_KEYS.expertCount) ?? 0;
  // llama.cpp's model type: 80 layers is LLM_TYPE_70B for Llama with
  // grouped-query attention (65B without) and for Qwen2.
  const is70B = layers === 80 && ((arch === 'llama' && heads !== kvHeads) || arch === 'qwen2');
  return { architecture: arch, layers, gqa: kvHeads === 0 ? 0 : Math.floor(heads / kvHeads), experts, is70B };
}

/** The block index of `blk.N.…` names (sscanf "blk.%d."), or -1. */
function layerOf(name: string): number {
  const m = /^blk\.([+-]?[0-9]+)\./.exec(name);
  return m === null ? -1 : Number(m[1]);
}

/**
 * `tensors` in the order llama-quantize processes and writes them: by block
 * index (tensors outside `blk.N.` first), then by name (byte order).
 */
export function llamaQuantizeOrder<T extends { name: string }>(tensors: readonly T[]): T[] {
  const keyed = tensors.map((t) => ({ t, layer: layerOf(t.name), bytes: Buffer.from(t.name, 'utf8') }));
  keyed.sort((a, b) => (a.layer !== b.layer ? a.layer - b.layer : Buffer.compare(a.bytes, b.bytes)));
  return keyed.map((k) => k.t);
}

/** GGUF order of a PyTorch-order shape's dimensions, and ggml_n_dims (trailing 1s do not count). */
function ggmlDims(shape: readonly number[]): { ne: number[]; nDims: number } {
  const ne = shape.slice().reverse();
  let nDims = 1;
  for (let i = ne.length - 1; i >= 1; i--) {
    if ((ne[i] as number) > 1) {
      nDims = i + 1;
      break;
    }
  }
  return { ne, nDims };
}

// Names llama-quantize never quantizes (substrings), beside norms and 1-D tensors.
const NOT_QUANTIZED = [
  'ffn_gate_inp.weight',
  'ssm_conv1d.weight',
  'attn_rel_b.weight',
  ...['first', 'w0', 'w1', 'w2', 'v0', 'v1', 'v2', 'a0', 'a1', 'a2', 'g1', 'g2', 'decay_w1', 'decay_w2', 'lerp_fused'].map((s) => `time_mix_${s}.weight`),
];
const NOT_QUANTIZED_EXACT = ['position_embd.weight', 'token_types.weight'];

/** Why llama-quantize leaves this tensor as it is stored, or undefined when it quantizes it. */
export function notQuantizedReason(name: string, shape: readonly number[]): string | undefined {
  if (!name.endsWith('weight')) return "llama-quantize quantizes only '…weight' tensors";
  if (ggmlDims(shape).nDims < 2) return `${shape.length === 1 ? '1-D' : `[${shape.join(', ')}] is 1-D to ggml`}: llama-quantize quantizes matrices only`;
  if (name.includes('_norm.weight')) return 'a norm: llama-quantize keeps norms';
  const hit = NOT_QUANTIZED.find((s) => name.includes(s)) ?? NOT_QUANTIZED_EXACT.find((s) => name === s);
  if (hit !== undefined) return `llama-quantize keeps ${hit} tensors`;
  return undefined;
}

export interface MixTensor {
  name: string;
  /** PyTorch order. */
  shape: readonly number[];
}

/** What a mix does with one tensor. */
export interface MixChoice {
  /** The ggml type; undefined: left as it is stored (see reason). */
  type: GGMLTypeName | undefined;
  reason?: string;
  /** The rules chose `from`, whose blocks do not fit the rows; `to` is llama-quantize's fallback. */
  fallback?: { from: GGMLTypeName; to: GGMLTypeName; reason: string };
}

/**
 * The fallback of a type whose blocks do not fit a row (llama.cpp's
 * convert_incompatible_tensor): Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0;
 * Q2_K and Q3_K → Q4_0, as llama.cpp does since mid-2025 (c392e50 writes
 * IQ4_NL, a type slimtensor does not write); a 32-value block that does not
 * fit either → F16. Where llama-quantize gives up (Q4_0 … Q8_0 on rows not
 * a multiple of 32) slimtensor writes F16 as well.
 */
export function blockFallback(type: GGMLTypeName, cols: number): { to: GGMLTypeName; reason: string } | undefined {
  const block = ggmlTypeByName(type).blockSize;
  if (cols % block === 0) return undefined;
  const reason = `rows of ${cols} values are not a multiple of the ${block}-value block`;
  const next: Partial<Record<GGMLTypeName, GGMLTypeName>> = { Q2_K: 'Q4_0', Q3_K: 'Q4_0', Q4_K: 'Q5_0', Q5_K: 'Q5_1', Q6_K: 'Q8_0' };
  let to: GGMLTypeName = next[type] ?? 'F16';
  if (cols % ggmlTypeByName(to).blockSize !== 0) to = 'F16';
  return { to, reason };
}

const HEAD = headRole(undefined).gguf;
const EMBEDDING = (ARCHITECTURES.llama?.global.find((r) => r.kind === 'embedding')?.gguf ?? 'token_embd.weight') as string;

/**
 * Every tensor's type under the mix, keyed by name. `tensors` must be in
 * llamaQuantizeOrder (the counters follow it). `hasImatrix`: llama.cpp
 * changes a few choices when an importance matrix is given.
 */
export function planMix(mix: MixName, tensors: readonly MixTensor[], model: MixModel, hasImatrix: boolean): Map<string, MixChoice> {
  const info = GGUF_MIXES[mix];
  const falcon = model.architecture === 'falcon';
  const hasOutput = tensors.some((t) => t.name === HEAD);
  const nAttnV = tensors.filter((t) => t.name.includes('attn_v.weight') || t.name.includes('attn_qkv.weight') || t.name.includes('attn_kv_b.weight')).length;
  const nLayer = model.layers;
  let iAttnV = 0;
  let iFfnDown = 0;
  const moreBits = (i: number, n: number): boolean => i < Math.trunc(n / 8) || i >= Math.trunc((7 * n) / 8) || (i - Math.trunc(n / 8)) % 3 === 2;
  // The layer of an ffn tensor: the counter for dense models; for MoE the
  // name's block index (experts are not stored in layer order).
  const layerInfo = (counter: number, name: string): number => {
    if (model.experts <= 1) return counter;
    const l = layerOf(name);
    if (l < 0 || l >= nLayer) throw new SlimTensorError(`tensor '${name}': llama-quantize needs its block index in [0, ${nLayer}) for this mixture-of-experts model`, 'ERR_FORMAT');
    return l;
  };

  const choose = (name: string, cols: number): GGMLTypeName => {
    let t = info.base;
    if (name === HEAD || (!hasOutput && name === EMBEDDING)) {
      // The head (or a tied embedding): Q6_K unless the base is Q8_0; Q8_0 for Falcon or rows the base's blocks do not fit.
      if (falcon || cols % ggmlTypeByName(t).blockSize !== 0) t = 'Q8_0';
      else if (t !== 'Q8_0') t = 'Q6_K';
      return t;
    }
    if (name === EMBEDDING) return t;
    if (name.includes('attn_v.weight')) {
      if (mix === 'q2_k') t = model.gqa >= 4 ? 'Q4_K' : 'Q3_K';
      else if (mix === 'q3_k_m') t = iAttnV < 2 ? 'Q5_K' : 'Q4_K';
      else if (mix === 'q3_k_l') t = 'Q5_K';
      else if ((mix === 'q4_k_m' || mix === 'q5_k_m') && moreBits(iAttnV, nAttnV)) t = 'Q6_K';
      else if (mix === 'q4_k_s' && iAttnV < 4) t = 'Q5_K';
      if (model.is70B && (t === 'Q3_K' || t === 'Q4_K')) t = 'Q5_K';
      if (model.experts === 8) t = 'Q8_0';
      iAttnV++;
      return t;
    }
    if (name.includes('attn_k.weight')) return model.experts === 8 ? 'Q8_0' : t;
    if (name.includes('attn_q.weight')) return t;
    if (name.includes('ffn_down')) {
      const i = layerInfo(iFfnDown, name);
      const n = nLayer;
      if (mix === 'q2_k') t = 'Q3_K';
      else if (mix === 'q3_k_m') t = i < Math.trunc(n / 16) ? 'Q5_K' : !falcon || moreBits(i, n) ? 'Q4_K' : 'Q3_K';
      else if (mix === 'q3_k_l') t = falcon ? 'Q4_K' : 'Q5_K';
      else if (mix === 'q4_k_m') {
        if (falcon) t = i < Math.trunc(n / 16) ? 'Q6_K' : moreBits(i, n) ? 'Q5_K' : 'Q4_K';
        else if (moreBits(i, n)) t = 'Q6_K';
      } else if (mix === 'q5_k_m' && moreBits(i, n)) t = 'Q6_K';
      else if (mix === 'q4_k_s' && !falcon && i < Math.trunc(n / 8)) t = 'Q5_K';
      else if ((mix === 'q4_0' || mix === 'q5_0') && hasImatrix && i < Math.trunc(n / 8)) t = mix === 'q4_0' ? 'Q4_1' : 'Q5_1';
      iFfnDown++;
      return t;
    }
    if (name.includes('attn_output.weight')) {
      if (!falcon) {
        if (model.experts === 8) {
          if (mix === 'q2_k' || mix === 'q3_k_s' || mix === 'q3_k_m' || mix === 'q4_k_s' || mix === 'q4_k_m') t = 'Q5_K';
        } else if (mix === 'q2_k') t = 'Q3_K';
        else if (mix === 'q3_k_m') t = 'Q4_K';
        else if (mix === 'q3_k_l') t = 'Q5_K';
      } else if (mix === 'q3_k_l') t = 'Q4_K';
      return t;
    }
    if (name.includes('attn_qkv.weight')) {
      if (mix === 'q3_k_m' || mix === 'q3_k_l') t = 'Q4_K';
      else if (mix === 'q4_k_m') t = 'Q5_K';
      else if (mix === 'q5_k_m') t = 'Q6_K';
      return t;
    }
    return t;
  };

  const out = new Map<string, MixChoice>();
  for (const tensor of tensors) {
    const reason = notQuantizedReason(tensor.name, tensor.shape);
    if (reason !== undefined) {
      out.set(tensor.name, { type: undefined, reason });
      continue;
    }
    const cols = tensor.shape[tensor.shape.length - 1] as number;
    const chosen = choose(tensor.name, cols);
    const fb = blockFallback(chosen, cols);
    out.set(tensor.name, fb === undefined ? { type: chosen } : { type: fb.to, fallback: { from: chosen, to: fb.to, reason: fb.reason } });
  }
  return out;
}
