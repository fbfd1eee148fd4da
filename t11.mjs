import { getLlama, LlamaLogLevel } from 'node-llama-cpp';
const [file, threads, promptLen, gen] = [process.argv[2], Number(process.argv[3] ?? 1), Number(process.argv[4] ?? 128), Number(process.argv[5] ?? 16)];
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: file });
const ctx = await model.createContext({ contextSize: promptLen + gen + 8, batchSize: promptLen, threads });
const seq = ctx.getSequence();
const prompt = Array.from({ length: promptLen }, (_, i) => 3 + ((i * 7919) % 31000));
for (let r = 0; r < 2; r++) {
  await seq.clearHistory();
  let c0 = process.cpuUsage();
  let t0 = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens(prompt.slice(0, -1));
  const tp = (performance.now() - t0) / 1000;
  const cp = process.cpuUsage(c0);
  t0 = performance.now(); let c = 0, first = 0, c1;
  for await (const t of seq.evaluate(prompt.slice(-1), { temperature: 0 })) { if (c === 0) { first = (performance.now() - t0) / 1000; c1 = process.cpuUsage(); } if (++c > gen) break; }
  const cg = process.cpuUsage(c1);
  const tg = (performance.now() - t0) / 1000 - first;
  console.log(`  cpu: prompt ${((cp.user + cp.system) / 1000 / (promptLen - 1)).toFixed(1)} ms/token, gen ${((cg.user + cg.system) / 1000 / gen).toFixed(1)} ms/token`);
  console.log(`llama.cpp prompt ${(promptLen / (tp + first)).toFixed(1)} tok/s, gen ${(gen / tg).toFixed(2)} tok/s`);
}
