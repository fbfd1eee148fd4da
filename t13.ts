import { loadModel } from './lib/model/model';
import { argmax } from './lib/model/sampling';
const [file, kernel] = [process.argv[2]!, process.argv[3] as any];
(async () => {
  const m = await loadModel(file, { threads: 1, contextSize: 64, batchSize: 8, kernel });
  let logits = await m.forward([1], {});
  const c0 = process.cpuUsage();
  for (let i = 0; i < 16; i++) logits = await m.forward([argmax(logits)], { position: 1 + i });
  const c = process.cpuUsage(c0);
  console.log(kernel, m.linears[0]!.kernel, ((c.user + c.system) / 1000 / 16).toFixed(1), 'ms/token cpu');
  await m.dispose();
})();
