// The pipeline benchmark: end-to-end compression of generated models on
// disk, as `slimtensor quantize` runs it.
//
//   - a 7B-shaped (Llama-2-7B: 32 layers, hidden 4096, FFN 11008, vocabulary
//     32000) F16 safetensors folder in 5 GB shards -> w4a16 (compressed-tensors)
//   - a 7B-shaped F32 GGUF (16 layers by default) -> q4_0
//
// Each is generated into a temporary folder (random values, one reused
// block) and removed afterwards. Reported: input GB/s end to end, the same
// against reading the input alone (the limit: the pipeline reads every
// byte), output size, and memory: peak resident set (sampled), its growth
// over the process before the run, and the pipeline's own peak of tensor
// buffers. `--quick` uses a small model of the same layout.
// SLIMTENSOR_BENCH_LAYERS=N sets the layer count of both (default 32 and 16).
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GGUFWriter } from '../lib/formats/gguf-writer';
import { ShardedSafetensorsWriter, type PlannedTensor } from '../lib/formats/safetensors';
import { f32ToBf16, f32ToF16 } from '../lib/half';
import { compressModel, type CompressOptions, type CompressReport } from '../lib/pipeline/compress';
import type { Recipe } from '../lib/pipeline/recipe';
import { sizeOnDisk } from '../lib/pipeline/output';
import { fmtBytes, fmtGBs, fmtRatio, gbps, markdownTable, median, type Benchmark, type BenchOptions, type BenchOutcome } from './harness';
import { Rng } from '../test/support/random';

export interface Shape {
  layers: number;
  hidden: number;
  ffn: number;
  vocab: number;
}

const FULL_ST: Shape = { layers: 32, hidden: 4096, ffn: 11008, vocab: 32000 };
const FULL_GGUF: Shape = { layers: 16, hidden: 4096, ffn: 11008, vocab: 32000 };
export const QUICK: Shape = { layers: 2, hidden: 512, ffn: 1376, vocab: 4096 };
export const BLOCK_BYTES = 64 * 1024 * 1024;

export function layersFromEnv(s: Shape): Shape {
  const n = Number(process.env.SLIMTENSOR_BENCH_LAYERS);
  return Number.isInteger(n) && n > 0 ? { ...s, layers: n } : s;
}

/** [name, shape] of a Llama model in Hugging Face or GGUF spelling. */
function llamaTensors(s: Shape, gguf: boolean): [string, number[]][] {
  const out: [string, number[]][] = [[gguf ? 'token_embd.weight' : 'model.embed_tokens.weight', [s.vocab, s.hidden]]];
  for (let l = 0; l < s.layers; l++) {
    const p = gguf ? `blk.${l}.` : `model.layers.${l}.`;
    const names = gguf
      ? ['attn_norm.weight', 'attn_q.weight', 'attn_k.weight', 'attn_v.weight', 'attn_output.weight', 'ffn_norm.weight', 'ffn_gate.weight', 'ffn_up.weight', 'ffn_down.weight']
      : ['input_layernorm.weight', 'self_attn.q_proj.weight', 'self_attn.k_proj.weight', 'self_attn.v_proj.weight', 'self_attn.o_proj.weight', 'post_attention_layernorm.weight', 'mlp.gate_proj.weight', 'mlp.up_proj.weight', 'mlp.down_proj.weight'];
    const shapes = [[s.hidden], [s.hidden, s.hidden], [s.hidden, s.hidden], [s.hidden, s.hidden], [s.hidden, s.hidden], [s.hidden], [s.ffn, s.hidden], [s.ffn, s.hidden], [s.hidden, s.ffn]];
    names.forEach((n, i) => out.push([p + n, shapes[i] as number[]]));
  }
  out.push([gguf ? 'output_norm.weight' : 'model.norm.weight', [s.hidden]]);
  out.push([gguf ? 'output.weight' : 'lm_head.weight', [s.vocab, s.hidden]]);
  return out;
}

/** Views of a reused random block adding up to `bytes` (a tensor's data, written in parts). */
function parts(block: Uint8Array, bytes: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at < bytes; at += block.length) out.push(block.subarray(0, Math.min(block.length, bytes - at)));
  return out;
}

/**
 * A Llama-shaped Hugging Face folder: safetensors shards of 5 GB in `dtype`
 * and a config.json with the hyper-parameters (32 heads, as Llama 2 7B).
 */
export async function generateSafetensors(dir: string, s: Shape, blockBytes: number, dtype: 'F16' | 'BF16' = 'F16'): Promise<void> {
  await fsp.mkdir(dir);
  const rng = new Rng(7);
  const block = new Uint16Array(blockBytes / 2);
  const encode = dtype === 'F16' ? f32ToF16 : f32ToBf16;
  for (let i = 0; i < block.length; i++) block[i] = encode(rng.normal() * 0.02);
  const bytes = new Uint8Array(block.buffer);
  const plan: PlannedTensor[] = llamaTensors(s, false).map(([name, shape]) => ({ name, dtype, shape }));
  const w = await ShardedSafetensorsWriter.create(dir, plan, { maxShardBytes: 5e9, metadata: { format: 'pt' } });
  for (const t of plan) await w.write(t.name, ...parts(bytes, t.shape.reduce((a, d) => a * d, 2)));
  await w.close();
  const heads = s.hidden / 128;
  await fsp.writeFile(
    path.join(dir, 'config.json'),
    JSON.stringify(
      {
        architectures: ['LlamaForCausalLM'],
        model_type: 'llama',
        hidden_size: s.hidden,
        intermediate_size: s.ffn,
        num_hidden_layers: s.layers,
        num_attention_heads: heads,
        num_key_value_heads: heads,
        max_position_embeddings: 4096,
        rms_norm_eps: 1e-5,
        rope_theta: 10000,
        vocab_size: s.vocab,
        torch_dtype: dtype === 'F16' ? 'float16' : 'bfloat16',
      },
      null,
      2,
    ),
  );
}

/** A Llama-shaped F32 GGUF whose tensors repeat one random block of `blockBytes`. */
export async function generateGGUF(file: string, s: Shape, blockBytes: number): Promise<void> {
  const block = new Rng(8).normals(blockBytes / 4, 0.02);
  const bytes = new Uint8Array(block.buffer);
  const tensors = llamaTensors(s, true).map(([name, shape]) => ({ name, shape, type: 'F32' as const }));
  const w = await GGUFWriter.create(file, {
    entries: [
      { key: 'general.architecture', type: 'string', value: 'llama' },
      { key: 'general.name', type: 'string', value: 'generated 7B-shaped' },
      { key: 'general.file_type', type: 'u32', value: 0 },
      { key: 'llama.block_count', type: 'u32', value: s.layers },
      { key: 'llama.embedding_length', type: 'u32', value: s.hidden },
      { key: 'llama.feed_forward_length', type: 'u32', value: s.ffn },
    ],
    tensors,
  });
  for (const t of tensors) await w.write(t.name, ...parts(bytes, t.shape.reduce((a, d) => a * d, 4)));
  await w.close();
}

/** The files under `p` (itself when a file), in name order. */
async function filesUnder(p: string): Promise<string[]> {
  const files: string[] = [];
  const walk = async (q: string): Promise<void> => {
    const st = await fsp.stat(q);
    if (st.isDirectory()) for (const e of (await fsp.readdir(q)).sort()) await walk(path.join(q, e));
    else files.push(q);
  };
  await walk(p);
  return files;
}

/** Seconds to read every file under `p` front to back into one reused buffer: what reading the input alone costs. */
export async function readAll(p: string, buf: Uint8Array): Promise<number> {
  const files = await filesUnder(p);
  const t0 = process.hrtime.bigint();
  for (const f of files) {
    const fh = await fsp.open(f, 'r');
    try {
      let pos = 0;
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
        if (bytesRead === 0) break;
        pos += bytesRead;
      }
    } finally {
      await fh.close();
    }
  }
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

export interface PipelineCase {
  id: string;
  label: string;
  inputBytes: number;
  outputBytes: number;
  ratio: number;
  tensors: number;
  /** Median wall time of the runs, seconds. */
  seconds: number;
  runs: number[];
  /** Median CPU time of the runs (user + system, every thread of the process), seconds: with the wall time, whether a run waited on the disk or on the cores (which other jobs may hold). */
  cpuSeconds: number;
  /** Input bytes per second, GB/s. */
  gbps: number;
  /** Reading the input alone, GB/s (median). */
  readGbps: number;
  /** gbps / readGbps. */
  readRatio: number;
  /** With `copy`: reading the input and writing as many bytes to a file beside the output, GB/s of input (median), and gbps / copyGbps. */
  copyGbps?: number;
  copyRatio?: number;
  /** Peak resident set during the runs (sampled every 10 ms), bytes. */
  peakRss: number;
  /** Peak resident set minus the resident set before the run. */
  rssGrowth: number;
  /** The pipeline's own peak of tensor-buffer bytes, and its limit. */
  bufferPeak: number;
  memoryLimit: number;
}

/**
 * Seconds to read every file under `p` and write the bytes to `to` (one file,
 * removed afterwards): what a same-sized output costs on this disk beyond
 * reading the input, the floor of a format conversion.
 */
export async function copyAll(p: string, to: string, buf: Uint8Array): Promise<number> {
  const files = await filesUnder(p);
  const t0 = process.hrtime.bigint();
  const out = await fsp.open(to, 'w');
  try {
    let at = 0;
    for (const f of files) {
      const fh = await fsp.open(f, 'r');
      try {
        let pos = 0;
        for (;;) {
          const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
          if (bytesRead === 0) break;
          pos += bytesRead;
          await out.write(buf, 0, bytesRead, at);
          at += bytesRead;
        }
      } finally {
        await fh.close();
      }
    }
  } finally {
    await out.close();
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  await fsp.rm(to, { force: true });
  return seconds;
}

/**
 * Writes every dirty page of the system to disk (sync(1)) before a timed
 * phase, so a phase does not pay for the writeback of the one before (the
 * copy's or the previous run's output, gigabytes beyond the kernel's
 * dirty-page limit).
 */
function flushDirtyPages(): void {
  try {
    execFileSync('sync', { stdio: 'ignore' });
  } catch {
    // no sync(1): the phases share the writeback as before
  }
}

export interface MeasureOptions {
  /** Passed to compressModel (memoryLimit, ...). */
  compress?: Partial<CompressOptions>;
  /** Also time copyAll (the input read and written again) before each run. */
  copy?: boolean;
}

export async function measure(id: string, label: string, input: string, output: string, preset: Recipe | string, runs: number, log: (m: string) => void, mo: MeasureOptions = {}): Promise<PipelineCase> {
  const inputBytes = await sizeOnDisk(input);
  const buf = new Uint8Array(BLOCK_BYTES);
  const copies: number[] = [];
  const reads: number[] = [];
  const times: number[] = [];
  const cpu: number[] = [];
  let peakRss = 0;
  let growth = 0;
  let last: CompressReport | undefined;
  for (let i = 0; i < runs; i++) {
    flushDirtyPages();
    if (mo.copy === true) {
      copies.push(await copyAll(input, `${output}.copy`, buf));
      flushDirtyPages();
    }
    reads.push(await readAll(input, buf));
    await fsp.rm(output, { recursive: true, force: true });
    flushDirtyPages();
    const base = process.memoryUsage.rss();
    let peak = base;
    const timer = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage.rss());
    }, 10);
    const t0 = process.hrtime.bigint();
    const c0 = process.cpuUsage();
    last = await compressModel({ ...mo.compress, input, output, recipe: preset });
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1e6);
    clearInterval(timer);
    peak = Math.max(peak, process.memoryUsage.rss());
    peakRss = Math.max(peakRss, peak);
    growth = Math.max(growth, peak - base);
    log(`  ${id} run ${i + 1}/${runs}: ${times[i]?.toFixed(1)} s (${fmtGBs(gbps(inputBytes, times[i] as number))} GB/s, CPU ${(cpu[i] as number).toFixed(1)} s), read alone ${(reads[i] as number).toFixed(1)} s${mo.copy === true ? `, copy alone ${(copies[i] as number).toFixed(1)} s` : ''}`);
  }
  const r = last as CompressReport;
  const seconds = median(times);
  const readGbps = gbps(inputBytes, median(reads));
  return {
    id,
    label,
    inputBytes,
    outputBytes: r.output.bytes,
    ratio: r.ratio,
    tensors: r.tensors.length,
    seconds,
    runs: times,
    cpuSeconds: median(cpu),
    gbps: gbps(inputBytes, seconds),
    readGbps,
    readRatio: gbps(inputBytes, seconds) / readGbps,
    ...(mo.copy === true ? { copyGbps: gbps(inputBytes, median(copies)), copyRatio: gbps(inputBytes, seconds) / gbps(inputBytes, median(copies)) } : {}),
    peakRss,
    rssGrowth: growth,
    bufferPeak: r.memory.peakBytes,
    memoryLimit: r.memory.limit,
  };
}

export async function runPipelineBench(options: BenchOptions): Promise<{ cases: PipelineCase[] }> {
  const st = options.quick ? QUICK : layersFromEnv(FULL_ST);
  const gg = options.quick ? QUICK : layersFromEnv(FULL_GGUF);
  // Full size: each run moves many GB; the median of a few is enough.
  const runs = options.quick ? Math.min(options.runs, 2) : Math.min(options.runs, 3);
  // The random block the tensors repeat: big enough that the data does not fit a cache.
  const block = options.quick ? 1024 * 1024 : BLOCK_BYTES;
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-bench-pipeline-'));
  const cases: PipelineCase[] = [];
  try {
    const hf = path.join(tmp, 'hf-f16');
    options.log(`pipeline: generating a ${st.layers}-layer ${st.hidden}/${st.ffn}/${st.vocab} F16 safetensors model in ${tmp}`);
    await generateSafetensors(hf, st, block);
    cases.push(await measure('safetensors-f16-w4a16', `safetensors F16, ${st.layers} layers -> w4a16`, hf, path.join(tmp, 'out-w4a16'), 'w4a16', runs, options.log));
    await fsp.rm(hf, { recursive: true, force: true });
    await fsp.rm(path.join(tmp, 'out-w4a16'), { recursive: true, force: true });

    const gf = path.join(tmp, 'model-f32.gguf');
    options.log(`pipeline: generating a ${gg.layers}-layer F32 GGUF`);
    await generateGGUF(gf, gg, block);
    cases.push(await measure('gguf-f32-q4_0', `GGUF F32, ${gg.layers} layers -> q4_0`, gf, path.join(tmp, 'out-q4_0.gguf'), 'q4_0', runs, options.log));
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
  return { cases };
}

/** The table of cases (`title`: the heading's name). */
export function markdown(cases: readonly PipelineCase[], quick: boolean, title = 'pipeline'): string {
  const copy = cases.some((c) => c.copyGbps !== undefined);
  const rows = cases.map((c) => [
    c.label,
    fmtBytes(c.inputBytes),
    fmtBytes(c.outputBytes),
    `${c.ratio.toFixed(2)}×`,
    c.seconds.toFixed(c.seconds < 10 ? 2 : 1),
    c.cpuSeconds.toFixed(c.cpuSeconds < 10 ? 2 : 1),
    fmtGBs(c.gbps),
    fmtGBs(c.readGbps),
    fmtRatio(c.readRatio),
    ...(copy ? [c.copyGbps === undefined ? '-' : fmtGBs(c.copyGbps), fmtRatio(c.copyRatio ?? null)] : []),
    fmtBytes(c.peakRss),
    fmtBytes(c.rssGrowth),
    `${fmtBytes(c.bufferPeak)} / ${fmtBytes(c.memoryLimit)}`,
  ]);
  return [
    `### ${title}${quick ? ' (--quick: a small model, not a measurement)' : ''}`,
    '',
    'End to end (read, quantize on the thread pool, write, rename), input bytes per second; "read alone" streams the same files into one buffer, the floor any pipeline pays.',
    '',
    ...(copy ? ['"copy alone" reads the same files and writes them again to one file: the floor of a conversion whose output is as large as its input.', ''] : []),
    markdownTable(['model -> preset', 'input', 'output', 'ratio', 'seconds', 'CPU seconds', 'GB/s', 'read alone GB/s', '× read', ...(copy ? ['copy alone GB/s', '× copy'] : []), 'peak RSS', 'RSS growth', 'tensor buffers peak / limit'], rows),
  ].join('\n');
}

export const pipelineBench: Benchmark = {
  name: 'pipeline',
  description: 'end-to-end model compression: 7B-shaped F16 safetensors -> w4a16 and F32 GGUF -> q4_0 (generated on disk)',
  async run(options: BenchOptions): Promise<BenchOutcome> {
    const result = await runPipelineBench(options);
    return { result, markdown: markdown(result.cases, options.quick) };
  },
};
