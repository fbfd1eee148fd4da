// One compressModel run with a gptq rule in its own process, so the
// sequential benchmark can measure its wall time and peak resident set:
//   node --import tsx bench/sequential-compress-child.ts MODEL TOKENS CTX CHUNKS SEQUENTIAL(true|false) MEMORY_LIMIT OUTPUT
// Linear weights by GPTQ q4_0 (embedding, head and norms kept), the
// calibration whole-model or sequential; prints the time, the report's
// calibration record and the process's peak RSS as JSON on stdout.
import { compressModel } from '../lib/pipeline/compress';

async function main(): Promise<void> {
  const [model, tokens, ctx, chunks, sequential, limit, output] = process.argv.slice(2);
  if (model === undefined || tokens === undefined || ctx === undefined || chunks === undefined || sequential === undefined || limit === undefined || output === undefined) {
    throw new Error('usage: sequential-compress-child.ts MODEL TOKENS CTX CHUNKS SEQUENTIAL MEMORY_LIMIT OUTPUT');
  }
  const t0 = performance.now();
  const r = await compressModel({
    input: model,
    output,
    overwrite: true,
    memoryLimit: Number(limit),
    recipe: {
      format: 'gguf',
      calibration: { tokens, ctx: Number(ctx), chunks: Number(chunks), sequential: sequential === 'true' },
      rules: [
        { match: ['*norm*', 'token_embd.weight', 'output.weight'], method: 'keep' },
        { match: '*', method: 'gptq', options: { format: 'q4_0' } },
      ],
    },
  });
  const seconds = (performance.now() - t0) / 1000;
  process.stdout.write(`${JSON.stringify({ seconds, calibration: r.calibration, gptq: r.tensors.filter((t) => t.calibrated?.method === 'gptq').length, peakBytes: r.memory.peakBytes, maxRss: process.resourceUsage().maxRSS * 1024 })}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
