// End to end against llama.cpp's llama-quantize: a generated Llama GGUF of
// 1.1B parameters (F16; TinyLlama's shape: 22 layers, 2048 wide, FFN 5632,
// 32 heads, 4 KV heads, vocabulary 32000) quantized to Q4_K_M by
// `slimtensor`'s pipeline and by `llama-quantize MODEL OUT Q4_K_M THREADS`,
// each in its own process on the same file and threads, runs interleaved
// (the machine's load changes; the ratio of one run pair is what holds).
// Reported: wall time (median), GB/s of input, peak resident set (GNU
// time's maximum RSS), and whether the two files are identical byte for
// byte.
//
// The peer is a benchmark-only tool, never a dependency: --llama-quantize
// PATH, else ../shared/peers/llama.cpp/llama-quantize. Without it
// slimtensor is measured alone. The
// model is generated once into .tmp/bench/ (about 2.2 GB; ignored by git)
// and reused; `--quick` uses a small model.
import { createHash } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { llamaTensorShapes, writeLlamaGguf, type LlamaShape } from '../test/support/llama-gguf';
import { findPeer, fmtBytes, fmtGBs, gbps, markdownTable, median, type Benchmark, type BenchOptions, type BenchOutcome, timeProcess } from './harness';

const ROOT = path.join(__dirname, '..');
const FULL: LlamaShape = { layers: 22, hidden: 2048, ffn: 5632, heads: 32, kvHeads: 4, vocab: 32000, dtype: 'F16', seed: 22, repeat: 1 << 24 };
const QUICK: LlamaShape = { layers: 2, hidden: 256, ffn: 512, heads: 4, kvHeads: 1, vocab: 512, dtype: 'F16', seed: 22, repeat: 1 << 16 };
const PRESET = 'q4_k_m';

export interface ToolRun {
  seconds: number;
  /** slimtensor: compressModel's own time (the process's wall time less Node's start-up and module loading). */
  pipelineSeconds?: number;
  /** Peak resident set, bytes (GNU time's %M); 0 when /usr/bin/time is missing. */
  peakRss: number;
}

export interface ToolResult {
  tool: string;
  runs: ToolRun[];
  seconds: number;
  gbps: number;
  peakRss: number;
  outputBytes: number;
}

export interface LlamaQuantizeResult {
  model: { layers: number; hidden: number; ffn: number; heads: number; kvHeads: number; vocab: number; parameters: number; bytes: number };
  preset: string;
  threads: number;
  slimtensor: ToolResult;
  peer: ToolResult | { missing: string };
  /** peer seconds / slimtensor seconds, median of the per-pair ratios. */
  speedup: number | null;
  /** Both outputs identical byte for byte (null without the peer). */
  identical: boolean | null;
}

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** The model file in `dir`, generated once per shape and reused (its shape and size recorded beside it). */
export async function modelFile(dir: string, s: LlamaShape, log: (m: string) => void): Promise<string> {
  await fsp.mkdir(dir, { recursive: true });
  const file = path.join(dir, `llama-${s.layers}x${s.hidden}-${s.dtype.toLowerCase()}.gguf`);
  const stamp = `${file}.json`;
  const want = JSON.stringify({ ...s, tokenizer: undefined });
  const st = await fsp.stat(file).catch(() => undefined);
  const recorded = await fsp.readFile(stamp, 'utf8').catch(() => '');
  if (st !== undefined && recorded === `${want}\n${st.size}`) return file;
  log(`bench: generating a ${s.layers}-layer ${s.hidden}-wide ${s.dtype} Llama GGUF in ${file}`);
  await writeLlamaGguf(file, s);
  await fsp.writeFile(stamp, `${want}\n${(await fsp.stat(file)).size}`);
  return file;
}

function summarise(tool: string, runs: ToolRun[], inputBytes: number, outputBytes: number): ToolResult {
  const seconds = median(runs.map((r) => r.seconds));
  return { tool, runs, seconds, gbps: gbps(inputBytes, seconds), peakRss: Math.max(...runs.map((r) => r.peakRss)), outputBytes };
}

/** `dir`: where the model is generated and kept (default .tmp/bench in the package). */
export async function runLlamaQuantizeBench(options: BenchOptions, dir = path.join(ROOT, '.tmp', 'bench')): Promise<LlamaQuantizeResult> {
  const shape = options.quick ? QUICK : FULL;
  const runs = options.quick ? 1 : Math.min(options.runs, 3);
  const threads = os.availableParallelism();
  const input = await modelFile(dir, shape, options.log);
  const inputBytes = (await fsp.stat(input)).size;
  const found = findPeer('llama-quantize', options.llamaQuantize, '--llama-quantize');
  const peerPath = 'path' in found ? found.path : undefined;
  const peerMissing = 'missing' in found ? found.missing : undefined;
  const tmp = await fsp.mkdtemp(path.join(dir, 'out-'));
  const ours = path.join(tmp, 'slimtensor.gguf');
  const theirs = path.join(tmp, 'llama-quantize.gguf');
  try {
    const slim: ToolRun[] = [];
    const peer: ToolRun[] = [];
    const ratios: number[] = [];
    for (let i = 0; i < runs; i++) {
      const child = await timeProcess(process.execPath, ['--import', 'tsx', path.join(ROOT, 'bench', 'compress-child.ts'), input, ours, PRESET, String(threads)], ROOT);
      const s: ToolRun = { seconds: child.seconds, peakRss: child.peakRss, pipelineSeconds: (JSON.parse(child.stdout) as { timeMs: number }).timeMs / 1000 };
      slim.push(s);
      options.log(`  slimtensor ${PRESET} run ${i + 1}/${runs}: ${s.seconds.toFixed(1)} s (${fmtGBs(gbps(inputBytes, s.seconds))} GB/s), peak RSS ${fmtBytes(s.peakRss)}`);
      if (peerMissing === undefined) {
        const p = await timeProcess(peerPath as string, [input, theirs, PRESET.toUpperCase(), String(threads)], ROOT);
        peer.push({ seconds: p.seconds, peakRss: p.peakRss });
        ratios.push(p.seconds / s.seconds);
        options.log(`  llama-quantize ${PRESET.toUpperCase()} run ${i + 1}/${runs}: ${p.seconds.toFixed(1)} s (${fmtGBs(gbps(inputBytes, p.seconds))} GB/s), peak RSS ${fmtBytes(p.peakRss)}; ${(p.seconds / s.seconds).toFixed(1)}× slimtensor's time`);
      }
    }
    const identical = peerMissing === undefined ? (await sha256File(ours)) === (await sha256File(theirs)) : null;
    const parameters = llamaTensorShapes(shape).reduce((n, [, sh]) => n + sh.reduce((a, d) => a * d, 1), 0);
    return {
      model: { layers: shape.layers, hidden: shape.hidden, ffn: shape.ffn, heads: shape.heads, kvHeads: shape.kvHeads, vocab: shape.vocab, parameters, bytes: inputBytes },
      preset: PRESET,
      threads,
      slimtensor: summarise('slimtensor', slim, inputBytes, (await fsp.stat(ours)).size),
      peer: peerMissing === undefined ? summarise('llama-quantize', peer, inputBytes, (await fsp.stat(theirs)).size) : { missing: peerMissing },
      speedup: ratios.length > 0 ? median(ratios) : null,
      identical,
    };
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}

function markdown(r: LlamaQuantizeResult, quick: boolean): string {
  const m = r.model;
  const rows = [r.slimtensor, ...('missing' in r.peer ? [] : [r.peer])].map((t) => [
    `${t.tool} ${t.tool === 'slimtensor' ? `--preset ${r.preset}` : r.preset.toUpperCase()}`,
    t.seconds.toFixed(t.seconds < 10 ? 2 : 1),
    fmtGBs(t.gbps),
    t.peakRss === 0 ? '-' : fmtBytes(t.peakRss),
    fmtBytes(t.outputBytes),
    t.runs.map((x) => x.seconds.toFixed(1)).join(', '),
    t.tool === 'slimtensor' ? median(t.runs.map((x) => x.pipelineSeconds ?? 0)).toFixed(1) : '-',
  ]);
  return [
    `### llama-quantize${quick ? ' (--quick: a small model, not a measurement)' : ''}`,
    '',
    `A generated Llama GGUF, ${(m.parameters / 1e9).toFixed(2)}B parameters (${m.layers} layers, ${m.hidden} wide, FFN ${m.ffn}, ${m.heads} heads / ${m.kvHeads} KV heads, vocabulary ${m.vocab}), F16, ${fmtBytes(m.bytes)} -> ${r.preset.toUpperCase()}, ${r.threads} threads each, runs interleaved; GB/s of F16 input.`,
    '',
    markdownTable(['tool', 'seconds (median)', 'GB/s', 'peak RSS', 'output', 'runs (s)', 'of which compressModel (s)'], rows),
    '',
    'Seconds and peak RSS are the whole process (slimtensor: Node start-up and module loading included).',
    '',
    'missing' in r.peer
      ? `llama-quantize: ${r.peer.missing}.`
      : `llama-quantize takes ${(r.speedup as number).toFixed(1)}× slimtensor's time (median of the per-pair ratios); the outputs are ${r.identical ? 'identical byte for byte' : 'DIFFERENT'}.`,
  ].join('\n');
}

export const llamaQuantizeBench: Benchmark = {
  name: 'llama-quantize',
  description: 'end to end against llama.cpp: a generated 1.1B Llama F16 GGUF -> Q4_K_M, time, GB/s, peak RSS, identical bytes (--llama-quantize PATH)',
  async run(options: BenchOptions): Promise<BenchOutcome> {
    const result = await runLlamaQuantizeBench(options);
    return { result, markdown: markdown(result, options.quick) };
  },
};
