// `npm run bench -- infer`: the runtime against llama.cpp (node-llama-cpp's
// prebuilt CPU build, a devDependency) on the same files and thread
// counts, in the same run. A 1B-shaped llama GGUF (TinyLlama's shape: 22
// blocks, 2048 wide, FFN 5632, 32 heads, 4 KV heads, vocabulary 32000) with
// random f16 weights is generated once under .tmp/ (never committed), then
// quantized to q4_0, q8_0 and llama-quantize's Q4_K_M mix (q4_k/q6_k, run
// through the dequantizing path) by slimtensor's own quantizer and pruned 2:4
// (pruned weights stored dense, as GGUF keeps them). Per file and thread
// count: prompt processing (512 tokens) and generation (tokens after that
// prompt, one at a time) in tokens/s, and generation's share of memory
// bandwidth: tokens/s × bytes of weights read per token ÷ copy bandwidth
// measured in the same run. The 2:4 file runs on spmm24 (its pruned
// weights detected at load) and, as its dense twin, with detection off.
// --quick: a tiny model of the same structure, a smoke test only.
import { randomFillSync } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { GGUFWriter } from '../lib/formats/gguf-writer';
import type { GGUFMetadataEntry } from '../lib/formats/gguf';
import { loadModel, type Model } from '../lib/model/model';
import { argmax } from '../lib/model/sampling';
import { compressModel } from '../lib/pipeline/compress';
import { pruneRecipe } from '../lib/pipeline/recipe';
import { fmtBytes, fmtRatio, markdownTable, measureCopyBandwidth, median, threadCounts, threadsLabel, type Benchmark, type BenchOptions } from './harness';

interface Shape {
  layers: number;
  embd: number;
  ff: number;
  heads: number;
  headsKv: number;
  vocab: number;
  ctx: number;
}

export const FULL: Shape = { layers: 22, embd: 2048, ff: 5632, heads: 32, headsKv: 4, vocab: 32000, ctx: 2048 };
const QUICK: Shape = { layers: 2, embd: 256, ff: 704, heads: 8, headsKv: 2, vocab: 1000, ctx: 256 };
const VERSION = 1; // bump when the generated file changes

const ROOT = path.join(__dirname, '..');

function shapeId(s: Shape): string {
  return `l${s.layers}-d${s.embd}-ff${s.ff}-h${s.heads}-kv${s.headsKv}-v${s.vocab}-v${VERSION}`;
}

/** Random f16 weights, |w| in [2^-8, 2^-4): magnitudes of a trained 1B model's weights. */
function randomF16(n: number): Uint16Array {
  const out = new Uint16Array(n);
  randomFillSync(out);
  for (let i = 0; i < n; i++) {
    const r = out[i] as number;
    out[i] = (r & 0x83ff) | ((7 + ((r >>> 10) & 3)) << 10);
  }
  return out;
}

/** A llama GGUF with random f16 weights, f32 norms of 1 and a stand-in SentencePiece vocabulary (llama.cpp loads it). */
async function writeModel(file: string, s: Shape): Promise<void> {
  const u32 = (key: string, value: number): GGUFMetadataEntry => ({ key, type: 'u32', value });
  const tokens = ['<unk>', '<s>', '</s>', ...Array.from({ length: 256 }, (_, i) => `<0x${i.toString(16).toUpperCase().padStart(2, '0')}>`)];
  while (tokens.length < s.vocab) tokens.push(`▁t${tokens.length}`);
  const types = Int32Array.from(tokens, (_, i) => (i === 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1));
  const entries: GGUFMetadataEntry[] = [
    { key: 'general.architecture', type: 'string', value: 'llama' },
    { key: 'general.name', type: 'string', value: 'random-1b' },
    u32('general.file_type', 1),
    u32('llama.context_length', s.ctx),
    u32('llama.embedding_length', s.embd),
    u32('llama.block_count', s.layers),
    u32('llama.feed_forward_length', s.ff),
    u32('llama.attention.head_count', s.heads),
    u32('llama.attention.head_count_kv', s.headsKv),
    u32('llama.rope.dimension_count', s.embd / s.heads),
    { key: 'llama.attention.layer_norm_rms_epsilon', type: 'f32', value: 1e-5 },
    { key: 'llama.rope.freq_base', type: 'f32', value: 10000 },
    { key: 'tokenizer.ggml.model', type: 'string', value: 'llama' },
    { key: 'tokenizer.ggml.tokens', type: 'array', itemType: 'string', value: tokens },
    { key: 'tokenizer.ggml.scores', type: 'array', itemType: 'f32', value: new Float32Array(s.vocab) },
    { key: 'tokenizer.ggml.token_type', type: 'array', itemType: 'i32', value: types },
    u32('tokenizer.ggml.bos_token_id', 1),
    u32('tokenizer.ggml.eos_token_id', 2),
    u32('tokenizer.ggml.unknown_token_id', 0),
  ];
  const q = s.embd;
  const kv = (s.embd / s.heads) * s.headsKv;
  const plan: { name: string; shape: number[]; norm?: boolean }[] = [{ name: 'token_embd.weight', shape: [s.vocab, s.embd] }];
  for (let l = 0; l < s.layers; l++) {
    plan.push(
      { name: `blk.${l}.attn_norm.weight`, shape: [s.embd], norm: true },
      { name: `blk.${l}.attn_q.weight`, shape: [q, s.embd] },
      { name: `blk.${l}.attn_k.weight`, shape: [kv, s.embd] },
      { name: `blk.${l}.attn_v.weight`, shape: [kv, s.embd] },
      { name: `blk.${l}.attn_output.weight`, shape: [s.embd, q] },
      { name: `blk.${l}.ffn_norm.weight`, shape: [s.embd], norm: true },
      { name: `blk.${l}.ffn_gate.weight`, shape: [s.ff, s.embd] },
      { name: `blk.${l}.ffn_up.weight`, shape: [s.ff, s.embd] },
      { name: `blk.${l}.ffn_down.weight`, shape: [s.embd, s.ff] },
    );
  }
  plan.push({ name: 'output_norm.weight', shape: [s.embd], norm: true }, { name: 'output.weight', shape: [s.vocab, s.embd] });
  const tmp = `${file}.partial`;
  const w = await GGUFWriter.create(tmp, { entries, tensors: plan.map((t) => ({ name: t.name, shape: t.shape, type: t.norm ? 'F32' : 'F16' })) });
  try {
    for (const t of plan) {
      const n = t.shape.reduce((a, d) => a * d, 1);
      await w.write(t.name, t.norm ? new Float32Array(n).fill(1) : randomF16(n));
    }
    await w.close();
  } catch (e) {
    await w.abort();
    throw e;
  }
  await fsp.rename(tmp, file);
}

interface Files {
  f16: string;
  q4_0: string;
  q8_0: string;
  q4_k_m: string;
  sparse: string;
}

async function exists(p: string): Promise<boolean> {
  return fsp.stat(p).then(
    () => true,
    () => false,
  );
}

/** Makes (once) the f16 model and its q4_0, q8_0, q4_k_m and 2:4 copies under .tmp/infer/. */
export async function prepare(s: Shape, log: (m: string) => void): Promise<Files> {
  const dir = path.join(ROOT, '.tmp', 'infer');
  await fsp.mkdir(dir, { recursive: true });
  const id = shapeId(s);
  const files: Files = {
    f16: path.join(dir, `${id}-f16.gguf`),
    q4_0: path.join(dir, `${id}-q4_0.gguf`),
    q8_0: path.join(dir, `${id}-q8_0.gguf`),
    q4_k_m: path.join(dir, `${id}-q4_k_m.gguf`),
    sparse: path.join(dir, `${id}-f16-2of4.gguf`),
  };
  if (!(await exists(files.f16))) {
    log(`infer: writing ${files.f16} (random f16 weights)`);
    await writeModel(files.f16, s);
  }
  for (const [key, recipe] of [
    ['q4_0', 'q4_0'],
    ['q8_0', 'q8_0'],
    ['q4_k_m', 'q4_k_m'],
    ['sparse', pruneRecipe('2:4')],
  ] as const) {
    if (!(await exists(files[key]))) {
      log(`infer: ${typeof recipe === 'string' ? `quantizing to ${recipe}` : 'pruning 2:4'} -> ${files[key]}`);
      await compressModel({ input: files.f16, output: files[key], recipe });
    }
  }
  return files;
}

export interface InferRow {
  model: string;
  file: string;
  threads: number;
  /** Bytes of weights one generated token reads (the runtime's stored weights). */
  weightBytes: number;
  slim: { promptTps: number; genTps: number; bandwidthShare: number };
  llama: { promptTps: number; genTps: number; bandwidthShare: number } | null;
}

interface Measure {
  promptTps: number;
  genTps: number;
}

// node-llama-cpp, loaded lazily (an ES module; a devDependency).
type LlamaCpp = { loadModel(o: { modelPath: string }): Promise<LlamaModel> };
type LlamaModel = { createContext(o: object): Promise<LlamaContext>; dispose(): Promise<void> };
type LlamaContext = { getSequence(): LlamaSequence; dispose(): Promise<void> };
type LlamaSequence = {
  evaluateWithoutGeneratingNewTokens(tokens: number[]): Promise<void>;
  evaluate(tokens: number[], o: object): AsyncGenerator<number>;
  clearHistory(): Promise<void>;
};

async function getLlamaCpp(): Promise<LlamaCpp | null> {
  try {
    const m = (await import('node-llama-cpp')) as unknown as { getLlama(o: object): Promise<LlamaCpp>; LlamaLogLevel: { error: unknown } };
    return await m.getLlama({ gpu: false, build: 'never', logLevel: m.LlamaLogLevel.error });
  } catch {
    return null;
  }
}

function promptTokens(n: number, vocab: number): number[] {
  const out = [1];
  let x = 12345;
  while (out.length < n) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out.push(3 + (x % (vocab - 3)));
  }
  return out;
}

async function measureSlim(m: Model, prompt: number[], gen: number, runs: number): Promise<Measure> {
  const prompts: number[] = [];
  const gens: number[] = [];
  for (let r = 0; r <= runs; r++) {
    let t0 = performance.now();
    let logits = await m.forward(prompt, { logits: 'last' });
    const tp = (performance.now() - t0) / 1000;
    t0 = performance.now();
    for (let i = 0; i < gen; i++) logits = await m.forward([argmax(logits)], { position: prompt.length + i });
    const tg = (performance.now() - t0) / 1000;
    if (r > 0) {
      prompts.push(prompt.length / tp);
      gens.push(gen / tg);
    }
  }
  return { promptTps: median(prompts), genTps: median(gens) };
}

async function measureLlama(llama: LlamaCpp, file: string, threads: number, prompt: number[], gen: number, runs: number): Promise<Measure> {
  const model = await llama.loadModel({ modelPath: file });
  const ctx = await model.createContext({ contextSize: prompt.length + gen + 8, batchSize: prompt.length, threads });
  const seq = ctx.getSequence();
  const prompts: number[] = [];
  const gens: number[] = [];
  try {
    for (let r = 0; r <= runs; r++) {
      await seq.clearHistory();
      let t0 = performance.now();
      await seq.evaluateWithoutGeneratingNewTokens(prompt.slice(0, -1));
      const head = prompt.slice(-1);
      // The prompt's last token is evaluated with the first generated one; count it in the prompt.
      const tp = (performance.now() - t0) / 1000;
      t0 = performance.now();
      let count = 0;
      let first = 0;
      for await (const _ of seq.evaluate(head, { temperature: 0 })) {
        if (count === 0) first = (performance.now() - t0) / 1000;
        if (++count > gen) break;
      }
      const tg = (performance.now() - t0) / 1000 - first;
      if (r > 0) {
        prompts.push(prompt.length / (tp + first));
        gens.push(gen / tg);
      }
    }
  } finally {
    await ctx.dispose();
    await model.dispose();
  }
  return { promptTps: median(prompts), genTps: median(gens) };
}

export async function runInfer(options: BenchOptions): Promise<{ rows: InferRow[]; copy: { threads: number; gbps: number }[]; shape: Shape; notes: string[] }> {
  const s = options.quick ? QUICK : FULL;
  const files = await prepare(s, options.log);
  const threads = threadCounts();
  const runs = Math.max(1, Math.min(options.runs, options.quick ? 1 : 3));
  const promptLen = options.quick ? 64 : 512;
  const gen = options.quick ? 8 : 32;
  const prompt = promptTokens(promptLen, s.vocab);
  const copy = (await measureCopyBandwidth(256 << 20, threads, 5)).map((c) => ({ threads: c.threads, gbps: c.gbps }));
  const llama = await getLlamaCpp();
  const notes: string[] = [];
  if (!llama) notes.push('node-llama-cpp is not installed: llama.cpp columns are empty (npm install --include=dev)');
  const cases: { model: string; file: string; sparse: boolean; llama: boolean }[] = [
    { model: 'q4_0', file: files.q4_0, sparse: true, llama: true },
    { model: 'q8_0', file: files.q8_0, sparse: true, llama: true },
    { model: 'q4_k_m', file: files.q4_k_m, sparse: true, llama: true },
    { model: 'f16', file: files.f16, sparse: true, llama: true },
    { model: 'f16 2:4 (spmm24)', file: files.sparse, sparse: true, llama: true },
    { model: 'f16 2:4 dense twin', file: files.sparse, sparse: false, llama: false },
  ];
  const rows: InferRow[] = [];
  for (const c of cases) {
    for (const t of threads) {
      options.log(`infer: ${c.model}, ${threadsLabel(t)}`);
      const m = await loadModel(c.file, { threads: t, contextSize: promptLen + gen + 8, batchSize: promptLen, sparse: c.sparse });
      let slim: Measure;
      let weightBytes: number;
      try {
        // Bytes a generated token reads: every linear weight plus one embedding row (negligible).
        weightBytes = m.weightBytes;
        slim = await measureSlim(m, prompt, gen, runs);
      } finally {
        await m.dispose();
      }
      const bw = (copy.find((x) => x.threads === t) as { gbps: number }).gbps * 1e9;
      const llamaM = llama && c.llama ? await measureLlama(llama, c.file, t, prompt, gen, runs) : null;
      // llama.cpp reads the same weights (its file's tensor bytes).
      const fileBytes = (await fsp.stat(c.file)).size;
      const row: InferRow = {
        model: c.model,
        file: path.basename(c.file),
        threads: t,
        weightBytes,
        slim: { ...slim, bandwidthShare: (slim.genTps * weightBytes) / bw },
        llama: llamaM ? { ...llamaM, bandwidthShare: (llamaM.genTps * fileBytes) / bw } : null,
      };
      rows.push(row);
      // each row as it is measured: a long run shows what it has so far
      options.log(`infer: ${c.model}, ${threadsLabel(t)}: prompt ${slim.promptTps.toFixed(1)} tok/s (llama.cpp ${llamaM ? llamaM.promptTps.toFixed(1) : '—'}), generation ${slim.genTps.toFixed(2)} tok/s (llama.cpp ${llamaM ? llamaM.genTps.toFixed(2) : '—'})`);
    }
  }
  return { rows, copy, shape: s, notes };
}

export const inferBench: Benchmark = {
  name: 'infer',
  description: 'the runtime vs llama.cpp (node-llama-cpp) on a generated 1B-shaped llama: prompt and generation tokens/s, bandwidth share',
  async run(options) {
    const r = await runInfer(options);
    const table = markdownTable(
      ['model', 'threads', 'weights', 'prompt tok/s', 'llama.cpp', 'ratio', 'gen tok/s', 'llama.cpp', 'ratio', 'gen bandwidth share', 'llama.cpp'],
      r.rows.map((x) => [
        x.model,
        String(x.threads),
        fmtBytes(x.weightBytes),
        x.slim.promptTps.toFixed(1),
        x.llama ? x.llama.promptTps.toFixed(1) : '—',
        fmtRatio(x.llama ? x.slim.promptTps / x.llama.promptTps : null),
        x.slim.genTps.toFixed(2),
        x.llama ? x.llama.genTps.toFixed(2) : '—',
        fmtRatio(x.llama ? x.slim.genTps / x.llama.genTps : null),
        `${(x.slim.bandwidthShare * 100).toFixed(0)} %`,
        x.llama ? `${(x.llama.bandwidthShare * 100).toFixed(0)} %` : '—',
      ]),
    );
    const dense = r.rows.filter((x) => x.model === 'f16 2:4 dense twin');
    const sparse = r.rows.filter((x) => x.model === 'f16 2:4 (spmm24)');
    const speedups = sparse.map((x, i) => `${threadsLabel(x.threads)}: ${fmtRatio(x.slim.genTps / (dense[i] as InferRow).slim.genTps)} generation, ${fmtRatio(x.slim.promptTps / (dense[i] as InferRow).slim.promptTps)} prompt`);
    const s = r.shape;
    const markdown = [
      `### infer: ${s.layers} blocks × ${s.embd} (FFN ${s.ff}, ${s.heads} heads, ${s.headsKv} KV heads, vocabulary ${s.vocab}), random weights`,
      '',
      `Copy bandwidth: ${r.copy.map((c) => `${c.gbps.toFixed(1)} GB/s at ${threadsLabel(c.threads)}`).join(', ')}. Prompt: ${options.quick ? 64 : 512} tokens; generation: ${options.quick ? 8 : 32} tokens after it.`,
      '',
      table,
      '',
      `2:4 on spmm24 vs its dense twin: ${speedups.join('; ')}.`,
      ...r.notes.map((n) => `\n${n}`),
    ].join('\n');
    return { result: r, markdown };
  },
};
