// One compressModel run in its own process, so a benchmark can measure its
// wall time and peak resident set as it measures a peer tool's:
//   node --import tsx bench/compress-child.ts INPUT OUTPUT PRESET THREADS
// Prints the report's timing and memory as JSON on stdout.
import { compressModel } from '../lib/pipeline/compress';

async function main(): Promise<void> {
  const [input, output, recipe, threads] = process.argv.slice(2);
  if (input === undefined || output === undefined || recipe === undefined || threads === undefined) throw new Error('usage: compress-child.ts INPUT OUTPUT PRESET THREADS');
  const r = await compressModel({ input, output, recipe, threads: Number(threads), overwrite: true });
  process.stdout.write(`${JSON.stringify({ timeMs: r.timeMs, bufferPeak: r.memory.peakBytes, outputBytes: r.output.bytes })}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
