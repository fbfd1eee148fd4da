// Reads a model's weights as f64 in Hugging Face layout for the reference
// forward pass (reference-llm.ts): GGUF files (llama's Q/K rows
// unpermuted), Hugging Face folders (plain, compressed-tensors pack-quantized
// and sparse-24-bitmask, each dequantized / decompressed with slimtensor's
// own dequantize and decompress24: "the dequantized weights"). The file
// readers are slimtensor's; the forward pass is not.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { GGUFReader } from '../../lib/formats/gguf';
import { SafetensorsModel } from '../../lib/formats/safetensors';
import { decodePackQuantized, decodeSparse24Bitmask } from '../../lib/formats/compressed-tensors';
import { dequantize, QuantizedTensor } from '../../lib/quantize';
import { decompress24 } from '../../lib/sparsity';
import { Tensor } from '../../lib/tensor';
import { unpermuteQK, type RefConfig, type RefLayer, type RefWeights } from './reference-llm';

async function toF64(t: Tensor | QuantizedTensor): Promise<Float64Array> {
  const f = t instanceof QuantizedTensor ? await dequantize(t) : t;
  if (f.dtype === 'f32') return Float64Array.from(f.data as Float32Array);
  // f16 / bf16 bits
  const bits = f.data as Uint16Array;
  const out = new Float64Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i] as number;
    if (f.dtype === 'bf16') out[i] = new Float32Array(new Uint32Array([h << 16]).buffer)[0] as number;
    else {
      const s = h & 0x8000 ? -1 : 1;
      const e = (h >>> 10) & 0x1f;
      const m = h & 0x3ff;
      out[i] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
    }
  }
  return out;
}

type Reader = (name: string) => Promise<Float64Array | undefined>;

/** gguf-named tensors -> RefWeights (unpermuting llama's Q/K when `permuted`). */
async function assemble(read: Reader, naming: 'gguf' | 'hf', config: RefConfig, permuted: boolean): Promise<RefWeights> {
  const g = naming === 'gguf';
  const need = async (n: string): Promise<Float64Array> => {
    const v = await read(n);
    if (v === undefined) throw new Error(`reference: missing ${n}`);
    return v;
  };
  const embed = await need(g ? 'token_embd.weight' : 'model.embed_tokens.weight');
  const layers: RefLayer[] = [];
  for (let l = 0; l < config.layers; l++) {
    const n = (gg: string, hf: string) => (g ? `blk.${l}.${gg}` : `model.layers.${l}.${hf}`);
    let q = await need(n('attn_q.weight', 'self_attn.q_proj.weight'));
    let k = await need(n('attn_k.weight', 'self_attn.k_proj.weight'));
    if (permuted) {
      q = unpermuteQK(q, config.heads, config.embd);
      k = unpermuteQK(k, config.headsKv, config.embd);
    }
    const opt = async (gg: string, hf: string) => read(n(gg, hf));
    const L: RefLayer = {
      inputNorm: await need(n('attn_norm.weight', 'input_layernorm.weight')),
      q,
      k,
      v: await need(n('attn_v.weight', 'self_attn.v_proj.weight')),
      o: await need(n('attn_output.weight', 'self_attn.o_proj.weight')),
      postNorm: await need(n('ffn_norm.weight', 'post_attention_layernorm.weight')),
      gate: await need(n('ffn_gate.weight', 'mlp.gate_proj.weight')),
      up: await need(n('ffn_up.weight', 'mlp.up_proj.weight')),
      down: await need(n('ffn_down.weight', 'mlp.down_proj.weight')),
    };
    const qb = await opt('attn_q.bias', 'self_attn.q_proj.bias');
    if (qb) {
      L.qBias = permuted ? unpermuteQK(qb, config.heads, 1) : qb;
      const kb = (await opt('attn_k.bias', 'self_attn.k_proj.bias')) as Float64Array;
      L.kBias = permuted ? unpermuteQK(kb, config.headsKv, 1) : kb;
      L.vBias = await opt('attn_v.bias', 'self_attn.v_proj.bias');
    }
    const qn = await opt('attn_q_norm.weight', 'self_attn.q_norm.weight');
    if (qn) {
      L.qNorm = qn;
      L.kNorm = await opt('attn_k_norm.weight', 'self_attn.k_norm.weight');
    }
    layers.push(L);
  }
  const head = (await read(g ? 'output.weight' : 'lm_head.weight')) ?? embed;
  return { config, embed, norm: await need(g ? 'output_norm.weight' : 'model.norm.weight'), head, layers };
}

function ggufConfig(g: GGUFReader): RefConfig {
  const arch = g.architecture as string;
  const m = (k: string, d?: number) => (g.metadata.get(`${arch}.${k}`) as number | undefined) ?? (d as number);
  const embd = m('embedding_length');
  const heads = m('attention.head_count');
  return {
    vocab: (g.tensor('token_embd.weight')?.shape[0] as number),
    embd,
    layers: m('block_count'),
    heads,
    headsKv: m('attention.head_count_kv', heads),
    headDim: m('attention.key_length', embd / heads),
    ff: m('feed_forward_length'),
    eps: m('attention.layer_norm_rms_epsilon', 1e-5),
    ropeBase: m('rope.freq_base', 10000),
  };
}

/** A GGUF file's weights. */
export async function referenceWeightsOfGguf(file: string): Promise<RefWeights> {
  const g = await GGUFReader.open(file);
  try {
    const config = ggufConfig(g);
    const read: Reader = async (name) => (g.tensor(name) ? toF64(await g.readTensor(name)) : undefined);
    return await assemble(read, 'gguf', config, g.architecture === 'llama');
  } finally {
    await g.close();
  }
}

/**
 * A safetensors folder's weights: Hugging Face names with config.json, or
 * llama.cpp's names with the hyper-parameters of `gguf` (a folder written
 * from that GGUF model).
 */
export async function referenceWeightsOfFolder(folder: string, gguf?: string): Promise<RefWeights> {
  const st = await SafetensorsModel.open(folder);
  try {
    const read: Reader = async (name) => {
      if (st.tensor(name)) return toF64(await st.readTensor(name));
      const prefix = name.replace(/\.weight$/, '');
      if (st.tensor(`${prefix}.weight_packed`)) {
        const zp = st.tensor(`${prefix}.weight_zero_point`);
        const q = decodePackQuantized({
          prefix,
          packed: await st.readTensor(`${prefix}.weight_packed`),
          scale: await st.readTensor(`${prefix}.weight_scale`),
          shape: await st.readTensor(`${prefix}.weight_shape`),
          ...(zp ? { zeroPoint: await st.readTensor(zp.name) } : {}),
        });
        return toF64(q);
      }
      if (st.tensor(`${prefix}.compressed`)) {
        const s = decodeSparse24Bitmask({
          prefix,
          compressed: await st.readTensor(`${prefix}.compressed`),
          bitmask: await st.readTensor(`${prefix}.bitmask`),
          shape: await st.readTensor(`${prefix}.shape`),
        });
        return toF64((await decompress24(s)) as Tensor);
      }
      return undefined;
    };
    if (gguf !== undefined) {
      const g = await GGUFReader.open(gguf);
      const config = ggufConfig(g);
      const permuted = g.architecture === 'llama';
      await g.close();
      return await assemble(read, 'gguf', config, permuted);
    }
    const cfg = JSON.parse(await fsp.readFile(path.join(folder, 'config.json'), 'utf8')) as Record<string, number>;
    const heads = cfg.num_attention_heads as number;
    const config: RefConfig = {
      vocab: cfg.vocab_size as number,
      embd: cfg.hidden_size as number,
      layers: cfg.num_hidden_layers as number,
      heads,
      headsKv: cfg.num_key_value_heads ?? heads,
      headDim: cfg.head_dim ?? (cfg.hidden_size as number) / heads,
      ff: cfg.intermediate_size as number,
      eps: cfg.rms_norm_eps as number,
      ropeBase: cfg.rope_theta ?? 10000,
    };
    return await assemble(read, 'hf', config, false);
  } finally {
    await st.close();
  }
}
