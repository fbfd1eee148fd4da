// A GGUF llama.cpp loads as a model: given tokenizer metadata, adds the
// hyper-parameters and all-zero weights of a one-block `llama` model 8 wide,
// so tests can hand the file to llama.cpp (node-llama-cpp) and compare its
// tokenizer with ours. Written with lib's GGUFWriter.
import { GGUFWriter, type GGUFPlannedTensor } from '../../lib/formats/gguf-writer';
import type { GGUFMetadataEntry } from '../../lib/formats/gguf';

const EMBD = 8;
const FF = 16;

export async function writeTinyLlamaGguf(file: string, tokenizerEntries: readonly GGUFMetadataEntry[]): Promise<void> {
  const tokens = tokenizerEntries.find((e) => e.key === 'tokenizer.ggml.tokens')?.value as string[] | undefined;
  if (tokens === undefined) throw new Error('writeTinyLlamaGguf: the metadata has no tokenizer.ggml.tokens');
  const entries: GGUFMetadataEntry[] = [
    { key: 'general.architecture', type: 'string', value: 'llama' },
    { key: 'general.name', type: 'string', value: 'tokenizer test' },
    { key: 'llama.context_length', type: 'u32', value: 64 },
    { key: 'llama.embedding_length', type: 'u32', value: EMBD },
    { key: 'llama.block_count', type: 'u32', value: 1 },
    { key: 'llama.feed_forward_length', type: 'u32', value: FF },
    { key: 'llama.attention.head_count', type: 'u32', value: 2 },
    { key: 'llama.attention.head_count_kv', type: 'u32', value: 2 },
    { key: 'llama.attention.layer_norm_rms_epsilon', type: 'f32', value: 1e-5 },
    ...tokenizerEntries.filter((e) => !e.key.startsWith('general.') && !e.key.startsWith('llama.')),
  ];
  const tensors: GGUFPlannedTensor[] = [
    { name: 'token_embd.weight', shape: [tokens.length, EMBD], type: 'F16' },
    { name: 'output_norm.weight', shape: [EMBD], type: 'F32' },
    { name: 'blk.0.attn_norm.weight', shape: [EMBD], type: 'F32' },
    { name: 'blk.0.attn_q.weight', shape: [EMBD, EMBD], type: 'F32' },
    { name: 'blk.0.attn_k.weight', shape: [EMBD, EMBD], type: 'F32' },
    { name: 'blk.0.attn_v.weight', shape: [EMBD, EMBD], type: 'F32' },
    { name: 'blk.0.attn_output.weight', shape: [EMBD, EMBD], type: 'F32' },
    { name: 'blk.0.ffn_norm.weight', shape: [EMBD], type: 'F32' },
    { name: 'blk.0.ffn_gate.weight', shape: [FF, EMBD], type: 'F32' },
    { name: 'blk.0.ffn_up.weight', shape: [FF, EMBD], type: 'F32' },
    { name: 'blk.0.ffn_down.weight', shape: [EMBD, FF], type: 'F32' },
  ];
  const w = await GGUFWriter.create(file, { entries, tensors });
  try {
    for (const t of tensors) {
      const n = t.shape.reduce((a, d) => a * d, 1);
      await w.write(t.name, new Uint8Array(n * (t.type === 'F16' ? 2 : 4)));
    }
    await w.close();
  } catch (e) {
    await w.abort();
    throw e;
  }
}
