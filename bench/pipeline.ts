// The pipeline benchmark: end-to-end compression of generated models on
// disk, as `slimtensor quantize` runs them.
//
//   - a 1B-shaped (TinyLlama: 22 layers, hidden 2048, FFN 5632, 4 KV heads of
//     64, vocabulary 32000) F16 GGUF -> q8_0 and -> q4_0
//   - the same model as one F16 safetensors file -> w4a16 (compressed-tensors)
//
// Each preset runs with the error measurement (the CLI's default) and with
// --no-error. Every run is `slimtensor quantize` in its own process (so its
// peak resident set is measured as the peer's is: GNU time's maximum RSS);
// the throughput is input bytes over the report's own time (the pipeline,
// without Node's start-up). Against: reading the input alone (the floor any
// pipeline pays; measured right before each run, since the machine's load
// moves; dirty pages are written out before each phase), and for the GGUF cases llama.cpp's llama-quantize on the same file
// and thread count (a benchmark-only peer: --llama-quantize PATH, else
// ../shared/peers/llama.cpp/llama-quantize; not with --quick unless given).
// The models are generated into a temporary folder (random values, one
// reused block) and removed afterwards. `--quick` uses a small model of the
// same layout; SLIMTENSOR_BENCH_LAYERS=N sets the layer count.
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GGUFWriter, type GGUFPlannedTensor } from '../lib/formats/gguf-writer';
import { ShardedSafetensorsWriter, type PlannedTensor } from '../lib/formats/safetensors';
import { f32ToBf16, f32ToF16 } from '../lib/half';
import type { CompressReport, StageTimes } from '../lib/pipeline/compress';
import { sizeOnDisk } from '../lib/pipeline/output';
import { findPeer, fmtBytes, fmtGBs, fmtRatio, gbps, markdownTable, median, type Benchmark, type BenchOptions, type BenchOutcome, type ProcessRun, timeProcess } from './harness';
import { Rng } from '../test/support/random';

const ROOT = path.join(__dirname, '..');

export interface Shape {
  layers: number;
  hidden: number;
  ffn: number;
  /** Rows of attn_k / attn_v (KV heads x head size). */
  kv: number;
  heads: number;
  vocab: number;
}

const FULL: Shape = { layers: 22, hidden: 2048, ffn: 5632, kv: 256, heads: 32, vocab: 32000 };
const QUICK: Shape = { layers: 2, hidden: 512, ffn: 1376, kv: 128, heads: 8, vocab: 4096 };
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
    const shapes = [[s.hidden], [s.hidden, s.hidden], [s.kv, s.hidden], [s.kv, s.hidden], [s.hidden, s.hidden], [s.hidden], [s.ffn, s.hidden], [s.ffn, s.hidden], [s.hidden, s.ffn]];
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

/** A random block of N(0, 0.02) weights in `dtype`, repeated by the generated tensors (seeded: the same bytes every run). */
function randomBlock(blockBytes: number, dtype: 'F32' | 'F16' | 'BF16'): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(new Rng(8).normals(blockBytes / 4, 0.02).buffer);
  const rng = new Rng(7);
  const block = new Uint16Array(blockBytes / 2);
  const encode = dtype === 'F16' ? f32ToF16 : f32ToBf16;
  for (let i = 0; i < block.length; i++) block[i] = encode(rng.normal() * 0.02);
  return new Uint8Array(block.buffer);
}

/** A Llama-shaped Hugging Face folder: safetensors shards of 5 GB in `dtype` and a config.json with the hyper-parameters. */
export async function generateSafetensors(dir: string, s: Shape, blockBytes: number, dtype: 'F16' | 'BF16' = 'F16'): Promise<void> {
  await fsp.mkdir(dir);
  const bytes = randomBlock(blockBytes, dtype);
  const plan: PlannedTensor[] = llamaTensors(s, false).map(([name, shape]) => ({ name, dtype, shape }));
  const w = await ShardedSafetensorsWriter.create(dir, plan, { maxShardBytes: 5e9, metadata: { format: 'pt' } });
  for (const t of plan) await w.write(t.name, ...parts(bytes, t.shape.reduce((a, d) => a * d, 2)));
  await w.close();
  const config = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: s.hidden,
    intermediate_size: s.ffn,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kv / (s.hidden / s.heads),
    max_position_embeddings: 4096,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    vocab_size: s.vocab,
    torch_dtype: dtype === 'F16' ? 'float16' : 'bfloat16',
  };
  await fsp.writeFile(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
}

/** A Llama GGUF: `matrices`-typed matrices (repeating one random block), F32 norms, and the hyper-parameters llama-quantize reads. */
export async function generateGGUF(file: string, s: Shape, blockBytes: number, matrices: 'F16' | 'F32' = 'F16'): Promise<void> {
  const block = randomBlock(blockBytes, matrices);
  const ones = new Uint8Array(new Float32Array(s.hidden).fill(1).buffer);
  const tensors: GGUFPlannedTensor[] = llamaTensors(s, true).map(([name, shape]) => ({ name, shape, type: shape.length === 1 ? 'F32' : matrices }));
  const headDim = s.hidden / s.heads;
  const w = await GGUFWriter.create(file, {
    entries: [
      { key: 'general.architecture', type: 'string', value: 'llama' },
      { key: 'general.name', type: 'string', value: 'generated 1B-shaped' },
      { key: 'general.file_type', type: 'u32', value: matrices === 'F16' ? 1 : 0 },
      { key: 'llama.block_count', type: 'u32', value: s.layers },
      { key: 'llama.context_length', type: 'u32', value: 2048 },
      { key: 'llama.embedding_length', type: 'u32', value: s.hidden },
      { key: 'llama.feed_forward_length', type: 'u32', value: s.ffn },
      { key: 'llama.attention.head_count', type: 'u32', value: s.heads },
      { key: 'llama.attention.head_count_kv', type: 'u32', value: s.kv / headDim },
      { key: 'llama.attention.layer_norm_rms_epsilon', type: 'f32', value: 1e-5 },
      { key: 'llama.rope.dimension_count', type: 'u32', value: headDim },
    ],
    tensors,
  });
  for (const t of tensors) await w.write(t.name, ...(t.shape.length === 1 ? [ones] : parts(block, t.shape.reduce((a, d) => a * d, matrices === 'F16' ? 2 : 4))));
  await w.close();
}

/** The files under `p` (itself when a file), in name order. */
export async function filesUnder(p: string): Promise<string[]> {
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

/**
 * Writes the system's dirty pages to disk (sync(1)) before a timed phase,
 * so a run does not pay for the writeback of the one before it (each writes
 * a gigabyte; the kernel throttles writers beyond its dirty-page limit).
 */
export function flushDirtyPages(): void {
  try {
    execFileSync('sync', { stdio: 'ignore' });
  } catch {
    // no sync(1): the phases share the writeback
  }
}

/** A `slimtensor quantize` or peer process, timed after the dirty pages are written out. */
async function timed(cmd: string, args: readonly string[]): Promise<ProcessRun> {
  flushDirtyPages();
  return timeProcess(cmd, args, ROOT);
}

export interface PipelineRun {
  label: string;
  /** Median seconds: the report's timeMs for slimtensor, the process's wall time for the peer. */
  seconds: number;
  runs: number[];
  /** Input bytes per second, GB/s. */
  gbps: number;
  /** Median of the per-run ratios to reading the input alone just before. */
  readRatio: number;
  /** Largest peak resident set of the runs, bytes (0: unknown). */
  peakRss: number;
  /** Median CPU seconds of the process (user + system, every thread, Node's start-up included; 0: unknown): what the run costs whatever else holds the cores. */
  cpuSeconds: number;
  outputBytes: number;
}

export interface PipelineCase {
  id: string;
  label: string;
  preset: string;
  inputBytes: number;
  tensors: number;
  /** Reading the input alone, GB/s (median). */
  readGbps: number;
  /** slimtensor with the error measured (the CLI's default). */
  withError: PipelineRun & { stages: StageTimes; bufferPeak: number; memoryLimit: number };
  /** slimtensor with --no-error. */
  noError: PipelineRun;
  /** llama-quantize on the same file (GGUF cases), or why it did not run. */
  peer: PipelineRun | { missing: string } | undefined;
}

interface Sample {
  s: number;
  rss: number;
  cpu: number;
}

function summarise(label: string, inputBytes: number, samples: readonly Sample[], reads: number[], outputBytes: number): PipelineRun {
  const runs = samples.map((x) => x.s);
  const seconds = median(runs);
  return {
    label,
    seconds,
    runs,
    gbps: gbps(inputBytes, seconds),
    readRatio: median(runs.map((s, i) => (reads[i] as number) / s)),
    peakRss: Math.max(...samples.map((x) => x.rss)),
    cpuSeconds: median(samples.map((x) => x.cpu)),
    outputBytes,
  };
}

const LLAMA_TYPE: Record<string, string> = { q8_0: 'Q8_0', q4_0: 'Q4_0' };

async function measure(
  id: string,
  label: string,
  input: string,
  output: string,
  preset: string,
  runs: number,
  peer: { path: string } | { missing: string } | undefined,
  log: (m: string) => void,
): Promise<PipelineCase> {
  const inputBytes = await sizeOnDisk(input);
  const threads = os.availableParallelism();
  const buf = new Uint8Array(BLOCK_BYTES);
  const reads: number[] = [];
  const err: (Sample & { r: CompressReport })[] = [];
  const noErr: Sample[] = [];
  const peerRuns: Sample[] = [];
  // Each run writes a new file: the previous run's output is removed first,
  // outside the timing (replacing a file would add its deletion to the run).
  const slim = async (extra: string[]): Promise<Sample & { r: CompressReport }> => {
    await fsp.rm(output, { recursive: true, force: true });
    const c = await timed(process.execPath, ['--import', 'tsx', path.join(ROOT, 'lib', 'cli', 'main.ts'), 'quantize', input, '-o', output, '-p', preset, '--threads', String(threads), '--json', '--quiet', '--force', ...extra]);
    const r = JSON.parse(c.stdout) as CompressReport;
    return { s: r.timeMs / 1000, rss: c.peakRss, cpu: c.cpuSeconds, r };
  };
  const peerOut = `${output}.llama-quantize`;
  try {
    for (let i = 0; i < runs; i++) {
      // Interleaved, each against a read just before it: the load moves.
      flushDirtyPages();
      const read = await readAll(input, buf);
      reads.push(read);
      err.push(await slim([]));
      noErr.push(await slim(['--no-error']));
      const e = err[i] as Sample;
      const n = noErr[i] as Sample;
      let line = `  ${id} run ${i + 1}/${runs}: read alone ${read.toFixed(2)} s, error on ${e.s.toFixed(2)} s (${fmtGBs(gbps(inputBytes, e.s))} GB/s, ${fmtBytes(e.rss)}), --no-error ${n.s.toFixed(2)} s (${fmtGBs(gbps(inputBytes, n.s))} GB/s)`;
      if (peer !== undefined && 'path' in peer) {
        await fsp.rm(peerOut, { force: true });
        const p = await timed(peer.path, [input, peerOut, LLAMA_TYPE[preset] as string, String(threads)]);
        peerRuns.push({ s: p.seconds, rss: p.peakRss, cpu: p.cpuSeconds });
        line += `, llama-quantize ${p.seconds.toFixed(2)} s (${fmtBytes(p.peakRss)})`;
      }
      log(line);
    }
    const last = (err[err.length - 1] as { r: CompressReport }).r;
    const mid = [...err].sort((a, b) => a.s - b.s)[err.length >> 1] as { r: CompressReport };
    const outputBytes = last.output.bytes;
    return {
      id,
      label,
      preset,
      inputBytes,
      tensors: last.tensors.length,
      readGbps: gbps(inputBytes, median(reads)),
      withError: {
        ...summarise('slimtensor', inputBytes, err, reads, outputBytes),
        stages: mid.r.stages,
        bufferPeak: Math.max(...err.map((x) => x.r.memory.peakBytes)),
        memoryLimit: last.memory.limit,
      },
      noError: summarise('slimtensor --no-error', inputBytes, noErr, reads, outputBytes),
      peer: peer === undefined ? undefined : 'missing' in peer ? peer : summarise('llama-quantize', inputBytes, peerRuns, reads, (await fsp.stat(peerOut)).size),
    };
  } finally {
    await fsp.rm(peerOut, { force: true });
  }
}

export async function runPipelineBench(options: BenchOptions): Promise<{ threads: number; cases: PipelineCase[] }> {
  const shape = options.quick ? QUICK : layersFromEnv(FULL);
  const runs = options.quick ? Math.min(options.runs, 2) : Math.min(options.runs, 3);
  // The random block the tensors repeat: big enough that the data does not fit a cache.
  const block = options.quick ? 1024 * 1024 : BLOCK_BYTES;
  // --quick is a smoke test (and runs in the test suite): the peer only when named.
  const peer = options.quick && options.llamaQuantize === undefined ? undefined : findPeer('llama-quantize', options.llamaQuantize, '--llama-quantize');
  if (peer !== undefined && 'missing' in peer) options.log(`pipeline: ${peer.missing}; measuring slimtensor alone`);
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-bench-pipeline-'));
  const cases: PipelineCase[] = [];
  const what = `${shape.layers}-layer ${shape.hidden}/${shape.ffn}/${shape.vocab}`;
  try {
    const gf = path.join(tmp, 'model-f16.gguf');
    options.log(`pipeline: generating a ${what} F16 GGUF in ${tmp}`);
    await generateGGUF(gf, shape, block);
    // --quick (a smoke test, run by the test suite): one GGUF preset.
    for (const preset of options.quick ? ['q4_0'] : ['q8_0', 'q4_0']) {
      cases.push(await measure(`gguf-f16-${preset}`, `GGUF F16 ${shape.layers} layers -> ${preset}`, gf, path.join(tmp, `out-${preset}.gguf`), preset, runs, peer, options.log));
      await fsp.rm(path.join(tmp, `out-${preset}.gguf`), { force: true });
    }
    await fsp.rm(gf, { force: true });

    const hf = path.join(tmp, 'hf-f16');
    options.log(`pipeline: generating a ${what} F16 safetensors model`);
    await generateSafetensors(hf, shape, block);
    cases.push(await measure('safetensors-f16-w4a16', `safetensors F16 ${shape.layers} layers -> w4a16`, hf, path.join(tmp, 'out-w4a16'), 'w4a16', runs, undefined, options.log));
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
  return { threads: os.availableParallelism(), cases };
}

function markdown(r: { threads: number; cases: readonly PipelineCase[] }, quick: boolean): string {
  const rows: string[][] = [];
  for (const c of r.cases) {
    const runs: [string, PipelineRun | { missing: string } | undefined][] = [
      ['slimtensor', c.withError],
      ['slimtensor --no-error', c.noError],
      ['llama-quantize', c.peer],
    ];
    for (const [who, run] of runs) {
      if (run === undefined) continue;
      if ('missing' in run) {
        rows.push([c.label, who, fmtBytes(c.inputBytes), '-', '-', '-', fmtGBs(c.readGbps), '-', '-', '-']);
        continue;
      }
      rows.push([c.label, who, fmtBytes(c.inputBytes), fmtBytes(run.outputBytes), run.seconds.toFixed(2), fmtGBs(run.gbps), fmtGBs(c.readGbps), fmtRatio(run.readRatio), run.cpuSeconds === 0 ? '-' : run.cpuSeconds.toFixed(2), run.peakRss === 0 ? '-' : fmtBytes(run.peakRss)]);
    }
  }
  const ms = (v: number): string => (v / 1000).toFixed(2);
  const stages = r.cases.map((c) => {
    const s = c.withError.stages;
    return [c.label, ms(s.readMs), ms(s.compressMs), ms(s.errorMs), ms(s.writeMs), ms(s.computeWaitMs), ms(s.writeWaitMs), ms(s.admitWaitMs), `${fmtBytes(c.withError.bufferPeak)} / ${fmtBytes(c.withError.memoryLimit)}`];
  });
  const peerNote = r.cases.map((c) => c.peer).find((p) => p !== undefined && 'missing' in p) as { missing: string } | undefined;
  return [
    `### pipeline${quick ? ' (--quick: a small model, not a measurement)' : ''}`,
    '',
    `\`slimtensor quantize\` end to end (read, quantize on ${r.threads} threads, measure the error, write, rename), each run its own process; GB/s of input over the report's time (the pipeline, without Node's start-up) and, for llama-quantize (${r.threads} threads), over the process's wall time. "× read" is the median of each run's ratio to reading the input alone just before it (the floor any pipeline pays). CPU s: user + system seconds of the whole process, start-up included (what a run costs whatever else holds the cores). Peak RSS: GNU time's maximum resident set of the process.`,
    '',
    markdownTable(['model -> preset', 'tool', 'input', 'output', 'seconds', 'GB/s', 'read alone GB/s', '× read', 'CPU s', 'peak RSS'], rows),
    '',
    'Where the time went (the median run with the error; seconds summed over tensors — stages of different tensors overlap — then the waits: read tensors waiting for the compute lane, compressed tensors for the ordered write, the planner for room under the memory limit; plain quantization measures each row right after quantizing it, so its error time is in "compress"):',
    '',
    markdownTable(['model -> preset', 'read', 'compress', 'error', 'write', 'wait compute', 'wait write', 'wait admit', 'tensor buffers peak / limit'], stages),
    ...(peerNote !== undefined ? ['', `llama-quantize: ${peerNote.missing}.`] : []),
  ].join('\n');
}

export const pipelineBench: Benchmark = {
  name: 'pipeline',
  description: 'end-to-end model compression: a 1B-shaped F16 GGUF -> q8_0, q4_0 (against llama-quantize) and F16 safetensors -> w4a16, with and without the error',
  async run(options: BenchOptions): Promise<BenchOutcome> {
    const result = await runPipelineBench(options);
    return { result, markdown: markdown(result, options.quick) };
  },
};
