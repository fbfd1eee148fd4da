// Child process of the memory-bound test: writes a large f32 safetensors
// model (48 matrices of 1024 x 1024) into argv[2], compresses it to w4a16
// with memoryLimit = argv[3] while sampling its own resident memory, and
// prints the measurements as JSON.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { ShardedSafetensorsWriter, type PlannedTensor } from '../../lib/formats/safetensors';
import { compressModel } from '../../lib/pipeline/compress';

async function main(): Promise<void> {
  const dir = process.argv[2] as string;
  const limit = Number(process.argv[3]);
  const input = path.join(dir, 'in');
  await fsp.mkdir(input);
  const plan: PlannedTensor[] = Array.from({ length: 48 }, (_, i) => ({ name: `model.layers.${i}.mlp.up_proj.weight`, dtype: 'F32', shape: [1024, 1024] }));
  const w = await ShardedSafetensorsWriter.create(input, plan);
  const block = new Float32Array(1024 * 1024);
  for (let i = 0; i < block.length; i++) block[i] = Math.sin(i * 0.001) * 0.05;
  for (const p of plan) await w.write(p.name, block);
  await w.close();
  const fileBytes = (await fsp.stat(path.join(input, 'model.safetensors'))).size;
  // Let the generator's garbage go before the baseline.
  (globalThis as { gc?: () => void }).gc?.();
  await new Promise((r) => setTimeout(r, 50));
  const base = process.memoryUsage.rss();
  let peak = base;
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 2);
  const r = await compressModel({
    input,
    output: path.join(dir, 'out'),
    recipe: 'w4a16',
    memoryLimit: limit,
    onProgress: () => {
      peak = Math.max(peak, process.memoryUsage.rss());
    },
  });
  clearInterval(timer);
  peak = Math.max(peak, process.memoryUsage.rss());
  process.stdout.write(
    JSON.stringify({ fileBytes, peakBytes: r.memory.peakBytes, limit: r.memory.limit, largest: r.memory.largestTensorBytes, allocations: r.memory.allocations, rssGrowth: peak - base, tensors: r.tensors.length }),
  );
}

main().catch((e: unknown) => {
  process.stderr.write(String(e instanceof Error ? e.stack : e));
  process.exitCode = 1;
});
