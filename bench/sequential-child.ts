// One sequential calibration pass in its own process, so the calibration
// benchmark can measure its wall time and peak resident set:
//   node --import tsx bench/sequential-child.ts MODEL TOKENS CTX CHUNKS HESSIAN(0|1) THREADS
// Runs calibrateSequential over CHUNKS chunks of CTX tokens of the token
// file (Hessians of every input when HESSIAN is 1) and prints its timing,
// the block count and the statistics' size as JSON on stdout.
import { calibrateSequential, calibrationChunks } from '../lib/calibrate';
import { planModel } from '../lib/model/load';
import { tokenizerOf } from '../lib/model/model';
import { readTokenFile } from '../lib/model/tokens';

async function main(): Promise<void> {
  const [model, tokens, ctx, chunks, hessian, threads] = process.argv.slice(2);
  if (model === undefined || tokens === undefined || ctx === undefined || chunks === undefined || hessian === undefined || threads === undefined) {
    throw new Error('usage: sequential-child.ts MODEL TOKENS CTX CHUNKS HESSIAN THREADS');
  }
  const t0 = performance.now();
  const plan = await planModel(model);
  const { tokenizer, error } = await tokenizerOf(plan);
  if (tokenizer === undefined) throw new Error(`${model}: no tokenizer (${error ?? ''})`);
  const c = calibrationChunks(await readTokenFile(tokens), tokenizer, { ctx: Number(ctx), chunks: Number(chunks) });
  let hessianBytes = 0;
  const blockSeconds: number[] = [];
  const blockRss: number[] = [];
  let tb = performance.now();
  const stats = await calibrateSequential(plan, c, {
    hessian: hessian === '1',
    load: { threads: Number(threads) },
    onBlock: (b) => {
      const per = [...new Set(b.stats.values())].reduce((n, s) => n + (s.hessian?.byteLength ?? 0), 0);
      hessianBytes = Math.max(hessianBytes, per);
      blockRss.push(process.memoryUsage.rss());
      if (process.env.CALIBRATE_CHILD_GC === '1') (globalThis as { gc?: () => void }).gc?.();
      const now = performance.now();
      blockSeconds.push((now - tb) / 1000);
      tb = now;
    },
  });
  const seconds = (performance.now() - t0) / 1000;
  process.stdout.write(`${JSON.stringify({ seconds, blocks: plan.hparams.blockCount, entries: stats.size, tokens: c.length * Number(ctx), blockHessianBytes: hessianBytes, blockSeconds, blockRss, maxRss: process.resourceUsage().maxRSS * 1024 })}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
