// The legacy GGUF row quantizers (q8_0, q4_0, q4_1, q5_0, q5_1; no search) on a
// 5632 x 2048 f16 tensor at 2 threads, the AVX-512 rows ('auto' on a CPU
// with AVX-512) against the AVX2 ones ('avx2'), timed in alternation so a
// busy machine slows both alike: median of 9 rounds, each the mean of 5 calls.
//   npx tsx bench/quantize-legacy-rows.ts [rounds]
import { f32ToF16, quantize, Tensor, type Kernel, type QuantizedTensor } from '../lib/index';

const rows = 5632, cols = 2048;
const rounds = Number(process.argv[2] ?? 9), calls = 5;
const x = new Uint16Array(rows * cols);
let s = 12345;
for (let i = 0; i < x.length; i++) {
  s = (Math.imul(s, 1103515245) + 12345) >>> 0;
  x[i] = f32ToF16(((s >>> 8) / 16777216 - 0.5) * 0.1);
}
const t = Tensor.from(x, [rows, cols], 'f16');
const median = (v: number[]) => [...v].sort((a, b) => a - b)[v.length >> 1];

async function time(format: 'q8_0' | 'q4_0' | 'q4_1' | 'q5_0' | 'q5_1', kernel: Kernel, out: QuantizedTensor): Promise<number> {
  const t0 = process.hrtime.bigint();
  for (let c = 0; c < calls; c++) await quantize(t, { format, kernel, threads: 2, out });
  return Number(process.hrtime.bigint() - t0) / 1e6 / calls;
}

(async () => {
  for (const format of ['q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1'] as const) {
    const out = await quantize(t, { format, threads: 2 });
    const ms: Record<string, number[]> = { auto: [], avx2: [] };
    const ratio: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const a = await time(format, 'auto', out), b = await time(format, 'avx2', out);
      ms.auto.push(a);
      ms.avx2.push(b);
      ratio.push(b / a);
    }
    const gb = (m: number) => ((x.byteLength / m) / 1e6).toFixed(2);
    console.log(`${format}: auto ${median(ms.auto).toFixed(3)} ms (${gb(median(ms.auto))} GB/s of f16), avx2 ${median(ms.avx2).toFixed(3)} ms (${gb(median(ms.avx2))} GB/s); avx2/auto per round, median ${median(ratio).toFixed(3)}`);
  }
})();
