// A llama-architecture GGUF with random weights that llama.cpp's
// llama-quantize accepts as a model: the hyper-parameters it reads (block
// count, widths, heads, KV heads, vocabulary size) and every tensor of a
// Llama block, in f16 or f32. Deterministic for a seed, so a test can write
// the same file llama-quantize was run on to make its fixtures; large
// models (the benchmark's) repeat one random block instead of drawing
// every value.
import { GGUFWriter, type GGUFPlannedTensor } from '../../lib/formats/gguf-writer';
import type { GGUFMetadataEntry } from '../../lib/formats/gguf';
import { f32ToF16 } from '../../lib/half';
import { Rng } from './random';

export interface LlamaShape {
  layers: number;
  hidden: number;
  ffn: number;
  heads: number;
  kvHeads: number;
  vocab: number;
  /** No output.weight: the head reuses token_embd (llama-quantize then treats token_embd as the head). */
  tied?: boolean;
  dtype: 'F16' | 'F32';
  seed: number;
  /** Draw this many random values and repeat them (0 or absent: every value drawn). */
  repeat?: number;
  /** Tokenizer metadata (`tokenizer.*` entries) for tools that load the vocabulary (llama-imatrix). */
  tokenizer?: readonly GGUFMetadataEntry[];
}

/**
 * A llama (SentencePiece) tokenizer of 259 tokens — <unk>, <s>, </s> and
 * the 256 byte tokens — so llama.cpp tokenizes any text (byte fallback);
 * enough for llama-imatrix to run a generated model.
 */
export function byteTokenizer(): GGUFMetadataEntry[] {
  const hex = (i: number): string => `<0x${i.toString(16).toUpperCase().padStart(2, '0')}>`;
  const tokens = ['<unk>', '<s>', '</s>', ...Array.from({ length: 256 }, (_, i) => hex(i))];
  return [
    { key: 'tokenizer.ggml.model', type: 'string', value: 'llama' },
    { key: 'tokenizer.ggml.tokens', type: 'array', itemType: 'string', value: tokens },
    { key: 'tokenizer.ggml.scores', type: 'array', itemType: 'f32', value: new Float32Array(tokens.length) },
    { key: 'tokenizer.ggml.token_type', type: 'array', itemType: 'i32', value: Int32Array.from(tokens, (_, i) => (i === 0 ? 2 : i < 3 ? 3 : 6)) },
    { key: 'tokenizer.ggml.unknown_token_id', type: 'u32', value: 0 },
    { key: 'tokenizer.ggml.bos_token_id', type: 'u32', value: 1 },
    { key: 'tokenizer.ggml.eos_token_id', type: 'u32', value: 2 },
  ];
}

/** [name, shape] of every tensor, in the order llama.cpp's converter writes them. */
export function llamaTensorShapes(s: LlamaShape): [string, number[]][] {
  const kvDim = (s.hidden / s.heads) * s.kvHeads;
  const out: [string, number[]][] = [['token_embd.weight', [s.vocab, s.hidden]]];
  for (let l = 0; l < s.layers; l++) {
    const p = `blk.${l}.`;
    out.push(
      [`${p}attn_norm.weight`, [s.hidden]],
      [`${p}attn_q.weight`, [s.hidden, s.hidden]],
      [`${p}attn_k.weight`, [kvDim, s.hidden]],
      [`${p}attn_v.weight`, [kvDim, s.hidden]],
      [`${p}attn_output.weight`, [s.hidden, s.hidden]],
      [`${p}ffn_norm.weight`, [s.hidden]],
      [`${p}ffn_gate.weight`, [s.ffn, s.hidden]],
      [`${p}ffn_up.weight`, [s.ffn, s.hidden]],
      [`${p}ffn_down.weight`, [s.hidden, s.ffn]],
    );
  }
  out.push(['output_norm.weight', [s.hidden]]);
  if (s.tied !== true) out.push(['output.weight', [s.vocab, s.hidden]]);
  return out;
}

export function llamaMetadata(s: LlamaShape, name = 'slimtensor test llama'): GGUFMetadataEntry[] {
  return [
    { key: 'general.architecture', type: 'string', value: 'llama' },
    { key: 'general.name', type: 'string', value: name },
    { key: 'general.file_type', type: 'u32', value: s.dtype === 'F16' ? 1 : 0 },
    { key: 'llama.vocab_size', type: 'u32', value: s.vocab },
    { key: 'llama.context_length', type: 'u32', value: 2048 },
    { key: 'llama.embedding_length', type: 'u32', value: s.hidden },
    { key: 'llama.block_count', type: 'u32', value: s.layers },
    { key: 'llama.feed_forward_length', type: 'u32', value: s.ffn },
    { key: 'llama.rope.dimension_count', type: 'u32', value: s.hidden / s.heads },
    { key: 'llama.attention.head_count', type: 'u32', value: s.heads },
    { key: 'llama.attention.head_count_kv', type: 'u32', value: s.kvHeads },
    { key: 'llama.attention.layer_norm_rms_epsilon', type: 'f32', value: 1e-5 },
    ...(s.tokenizer ?? []),
  ];
}

/** Writes the model to `file`. Norms are f32 around 1, weights N(0, 0.02²) (a few larger outliers). */
export async function writeLlamaGguf(file: string, s: LlamaShape): Promise<void> {
  const rng = new Rng(s.seed);
  const tensors: GGUFPlannedTensor[] = llamaTensorShapes(s).map(([name, shape]) => ({ name, shape, type: shape.length === 1 ? 'F32' : s.dtype }));
  const w = await GGUFWriter.create(file, { entries: llamaMetadata(s), tensors });
  const weight = (): number => {
    const x = rng.normal() * 0.02;
    // ~1 in 500 weights an outlier, as trained models have
    return rng.int(500) === 0 ? x * 8 : x;
  };
  let block: Uint8Array | undefined;
  if (s.repeat !== undefined && s.repeat > 0) {
    block = s.dtype === 'F16' ? new Uint8Array(Uint16Array.from({ length: s.repeat }, () => f32ToF16(weight())).buffer) : new Uint8Array(Float32Array.from({ length: s.repeat }, weight).buffer);
  }
  try {
    for (const t of tensors) {
      const n = t.shape.reduce((a, d) => a * d, 1);
      if (t.type === 'F32' && t.shape.length === 1) {
        await w.write(t.name, new Uint8Array(Float32Array.from({ length: n }, () => 1 + rng.normal() * 0.1).buffer));
      } else if (block !== undefined) {
        const bytes = n * (s.dtype === 'F16' ? 2 : 4);
        const parts: Uint8Array[] = [];
        for (let at = 0; at < bytes; at += block.length) parts.push(block.subarray(0, Math.min(block.length, bytes - at)));
        await w.write(t.name, ...parts);
      } else if (s.dtype === 'F16') {
        const v = new Uint16Array(n);
        for (let i = 0; i < n; i++) v[i] = f32ToF16(weight());
        await w.write(t.name, new Uint8Array(v.buffer));
      } else {
        const v = new Float32Array(n);
        for (let i = 0; i < n; i++) v[i] = weight();
        await w.write(t.name, new Uint8Array(v.buffer));
      }
    }
    await w.close();
  } catch (e) {
    await w.abort();
    throw e;
  }
}
