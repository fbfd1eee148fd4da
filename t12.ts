import { GGUFReader } from './lib/formats/gguf';
(async () => { const g = await GGUFReader.open(process.argv[2]!); const c: Record<string, number> = {}; for (const t of g.tensors) c[t.name.replace(/blk\.\d+\./, '')+':'+t.type] = (c[t.name.replace(/blk\.\d+\./, '')+':'+t.type] ?? 0) + 1; console.log(c); await g.close(); })();
