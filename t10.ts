import { loadModel } from './lib/model/model';
import { argmax } from './lib/model/sampling';
const [file, threads, promptLen, gen, sparse] = [process.argv[2]!, Number(process.argv[3] ?? 1), Number(process.argv[4] ?? 128), Number(process.argv[5] ?? 16), process.argv[6] !== 'dense'];
(async () => {
  let t0 = performance.now();
  const m = await loadModel(file, { threads, contextSize: promptLen + gen + 8, batchSize: Math.max(promptLen, 1), sparse });
  console.log('load', ((performance.now() - t0) / 1000).toFixed(2), 's', (m.weightBytes / 1e9).toFixed(3), 'GB', m.linears[0]!.kernel, m.linears[0]!.format);
  const prompt = Array.from({ length: promptLen }, (_, i) => 3 + ((i * 7919) % 31000));
  for (let r = 0; r < 2; r++) {
    let c0 = process.cpuUsage();
    t0 = performance.now();
    let logits = await m.forward(prompt, { logits: 'last' });
    const tp = (performance.now() - t0) / 1000;
    const cp = process.cpuUsage(c0); c0 = process.cpuUsage();
    t0 = performance.now();
    for (let i = 0; i < gen; i++) logits = await m.forward([argmax(logits)], { position: promptLen + i });
    const tg = (performance.now() - t0) / 1000;
    const cg = process.cpuUsage(c0);
    console.log(`  cpu: prompt ${((cp.user + cp.system) / 1000 / promptLen).toFixed(1)} ms/token, gen ${((cg.user + cg.system) / 1000 / gen).toFixed(1)} ms/token`);
    console.log(`prompt ${(promptLen / tp).toFixed(1)} tok/s, gen ${(gen / tg).toFixed(2)} tok/s (${(gen / tg * m.weightBytes / 1e9).toFixed(1)} GB/s)`);
  }
  await m.dispose();
})();
