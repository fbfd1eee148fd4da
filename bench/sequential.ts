// `npm run bench -- sequential`: the block-by-block calibration pass on a generated model of
// Llama-2-7B's shape (32 layers, 4096 wide, FFN 11008, 32 heads, vocabulary
// 32000; F16, 13 GB; --quick: a small one): wall time and peak resident
// set of the whole process (GNU time), without and with every input's
// Hessian (imatrix needs Σx² only; GPTQ needs H), against the bound the
// design promises — one block's weights in f32 + its Hessians + the
// calibration set's hidden states — and against the model's size. Each run
// is bench/sequential-child.ts in its own process. The model and the token
// file are generated once into .tmp/bench/ and reused.
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeTokenFile } from '../lib/model/tokens';
import { byteTokenizer, type LlamaShape } from '../test/support/llama-gguf';
import { Rng } from '../test/support/random';
import { fmtBytes, markdownTable, median, timeProcess, type Benchmark, type BenchOptions, type BenchOutcome } from './harness';
import { modelFile } from './llama-quantize';

const ROOT = path.join(__dirname, '..');
const FULL: LlamaShape = { layers: 32, hidden: 4096, ffn: 11008, heads: 32, kvHeads: 32, vocab: 32000, dtype: 'F16', seed: 7, repeat: 1 << 24, tokenizer: byteTokenizer() };
const QUICK: LlamaShape = { layers: 2, hidden: 256, ffn: 688, heads: 4, kvHeads: 4, vocab: 512, dtype: 'F16', seed: 7, repeat: 1 << 16, tokenizer: byteTokenizer() };
// compressModel with a gptq rule: GPTQ of the 7B shape's 224 layers takes far longer than its calibration on 2 cores, so a smaller model.
const COMPRESS: LlamaShape = { layers: 8, hidden: 2048, ffn: 5504, heads: 16, kvHeads: 16, vocab: 32000, dtype: 'F16', seed: 7, repeat: 1 << 20, tokenizer: byteTokenizer() };
const COMPRESS_LIMIT = 256 * 1024 ** 2;

interface CompressCase {
  mode: 'sequential' | 'whole-model';
  seconds: number;
  calibrationSeconds: number;
  peakRss: number;
  /** The calibration's planned peak (report.calibration.plannedPeakBytes) + the pipeline's memoryLimit. */
  planned: number;
  wholeModelBytes: number;
}

interface Case {
  hessian: boolean;
  seconds: number;
  blockSeconds: number;
  peakRss: number;
  /** Per block: the largest Hessian bytes held (all the block's inputs). */
  hessianBytes: number;
  bound: number;
}

export interface CalibrateBenchResult {
  model: { layers: number; hidden: number; ffn: number; heads: number; kvHeads: number; vocab: number; bytes: number };
  chunks: number;
  ctx: number;
  threads: number;
  /** One block's weights as f32, bytes. */
  blockF32: number;
  /** The calibration set's hidden states (chunks × ctx × hidden f32), bytes. */
  activations: number;
  cases: Case[];
  /** compressModel with a gptq rule (q4_0 GPTQ of every linear weight), sequential and whole-model calibration. */
  compress: { model: { layers: number; hidden: number; ffn: number; vocab: number; bytes: number }; chunks: number; ctx: number; memoryLimit: number; cases: CompressCase[] };
}

async function runCompressBench(o: BenchOptions, dir: string, ctx: number): Promise<CalibrateBenchResult['compress']> {
  const s = o.quick ? QUICK : COMPRESS;
  const model = await modelFile(dir, s, o.log);
  const chunks = 2;
  const tokens = path.join(dir, `compress-${chunks}x${ctx}.tokens`);
  const rng = new Rng(16);
  await writeTokenFile(tokens, Array.from({ length: chunks * ctx }, () => 3 + rng.int(256)));
  const limit = o.quick ? 16 * 1024 ** 2 : COMPRESS_LIMIT;
  const cases: CompressCase[] = [];
  for (const mode of ['sequential', 'whole-model'] as const) {
    o.log(`compressModel (gptq q4_0): ${s.layers} blocks, ${mode} calibration`);
    const output = path.join(dir, `compress-${mode}.gguf`);
    const r = await timeProcess(process.execPath, ['--import', 'tsx', path.join(ROOT, 'bench', 'sequential-compress-child.ts'), model, tokens, String(ctx), String(chunks), String(mode === 'sequential'), String(limit), output], ROOT);
    await fsp.rm(output, { force: true });
    const j = JSON.parse(r.stdout) as { seconds: number; calibration: { timeMs: number; plannedPeakBytes: number; wholeModelBytes: number }; maxRss: number };
    const c: CompressCase = { mode, seconds: r.seconds, calibrationSeconds: j.calibration.timeMs / 1000, peakRss: r.peakRss > 0 ? r.peakRss : j.maxRss, planned: j.calibration.plannedPeakBytes + limit, wholeModelBytes: j.calibration.wholeModelBytes };
    o.log(`  ${c.seconds.toFixed(1)} s, peak RSS ${fmtBytes(c.peakRss)} (planned ${fmtBytes(c.planned)})`);
    cases.push(c);
  }
  return { model: { layers: s.layers, hidden: s.hidden, ffn: s.ffn, vocab: s.vocab, bytes: (await fsp.stat(model)).size }, chunks, ctx, memoryLimit: limit, cases };
}

async function runCalibrateBench(o: BenchOptions, dir = path.join(ROOT, '.tmp', 'bench')): Promise<CalibrateBenchResult> {
  const s = o.quick ? QUICK : FULL;
  const ctx = o.quick ? 64 : 512;
  const chunks = o.quick ? 2 : 1;
  const threads = os.availableParallelism();
  const model = await modelFile(dir, s, o.log);
  const tokens = path.join(dir, `calibrate-${chunks}x${ctx}.tokens`);
  const rng = new Rng(16);
  await writeTokenFile(tokens, Array.from({ length: chunks * ctx }, () => 3 + rng.int(256)));
  const D = s.hidden;
  const kv = (D / s.heads) * s.kvHeads;
  const blockF32 = 4 * (D * D * 2 + 2 * kv * D + 3 * D * s.ffn + 2 * D);
  const activations = chunks * ctx * D * 4;
  const cases: Case[] = [];
  for (const hessian of [false, true]) {
    o.log(`calibrate: ${s.layers} blocks, ${chunks} chunk(s) of ${ctx}, Hessians ${hessian ? 'on' : 'off'}`);
    const r = await timeProcess(process.execPath, ['--import', 'tsx', path.join(ROOT, 'bench', 'sequential-child.ts'), model, tokens, String(ctx), String(chunks), hessian ? '1' : '0', String(threads)], ROOT);
    const j = JSON.parse(r.stdout) as { seconds: number; blockSeconds: number[]; blockHessianBytes: number; maxRss: number };
    const c: Case = {
      hessian,
      seconds: r.seconds,
      blockSeconds: median(j.blockSeconds),
      peakRss: r.peakRss > 0 ? r.peakRss : j.maxRss,
      hessianBytes: j.blockHessianBytes,
      bound: blockF32 + j.blockHessianBytes + activations,
    };
    o.log(`  ${c.seconds.toFixed(1)} s (a block: ${c.blockSeconds.toFixed(2)} s), peak RSS ${fmtBytes(c.peakRss)} (bound ${fmtBytes(c.bound)})`);
    cases.push(c);
  }
  const bytes = (await fsp.stat(model)).size;
  const compress = await runCompressBench(o, dir, ctx);
  return { compress, model: { layers: s.layers, hidden: s.hidden, ffn: s.ffn, heads: s.heads, kvHeads: s.kvHeads, vocab: s.vocab, bytes }, chunks, ctx, threads, blockF32, activations, cases };
}

function markdown(r: CalibrateBenchResult, quick: boolean): string {
  const m = r.model;
  return [
    `### Calibration, block by block${quick ? ' (--quick: a small model, not a measurement)' : ''}`,
    '',
    `A generated Llama GGUF (${m.layers} layers, ${m.hidden} wide, FFN ${m.ffn}, ${m.heads} heads / ${m.kvHeads} KV heads, vocabulary ${m.vocab}), F16, ${fmtBytes(m.bytes)}; ${r.chunks} chunk(s) of ${r.ctx} tokens; ${r.threads} threads; calibrateSequential in its own process.`,
    '',
    markdownTable(
      ['statistics', 'seconds', 'per block (median)', 'peak RSS', 'bound: block f32 + Hessians + activations', 'peak RSS / model size'],
      r.cases.map((c) => [c.hessian ? 'Σx², Σabs(x) and every input Hessian' : 'Σx², Σabs(x) (imatrix)', c.seconds.toFixed(1), c.blockSeconds.toFixed(2), fmtBytes(c.peakRss), `${fmtBytes(r.blockF32)} + ${fmtBytes(c.hessianBytes)} + ${fmtBytes(r.activations)} = ${fmtBytes(c.bound)}`, (c.peakRss / m.bytes).toFixed(3)]),
    ),
    '',
    'Seconds and peak RSS are the whole process (Node start-up, module loading and the V8 heap included).',
    '',
    `compressModel with a gptq rule (q4_0 GPTQ of every linear weight; embedding, head and norms kept) on a generated Llama (${r.compress.model.layers} layers, ${r.compress.model.hidden} wide, FFN ${r.compress.model.ffn}, vocabulary ${r.compress.model.vocab}, F16, ${fmtBytes(r.compress.model.bytes)}), ${r.compress.chunks} chunks of ${r.compress.ctx} tokens, memoryLimit ${fmtBytes(r.compress.memoryLimit)}:`,
    '',
    markdownTable(
      ['calibration', 'seconds (calibration)', 'peak RSS', 'planned: calibration + memoryLimit', 'whole-model estimate (f32 weights + Hessians)'],
      r.compress.cases.map((c) => [c.mode, `${c.seconds.toFixed(1)} (${c.calibrationSeconds.toFixed(1)})`, fmtBytes(c.peakRss), fmtBytes(c.planned), fmtBytes(c.wholeModelBytes)]),
    ),
  ].join('\n');
}

export const sequentialBench: Benchmark = {
  name: 'sequential',
  description: 'sequential calibration of a generated 7B-shaped Llama (F16, 13 GB): time and peak RSS against one block f32 + Hessians + activations; compressModel with a gptq rule, sequential vs whole-model, on an 8-block 2048-wide one',
  async run(o: BenchOptions): Promise<BenchOutcome> {
    const result = await runCalibrateBench(o);
    return { result, markdown: markdown(result, o.quick) };
  },
};
