import { linear } from './lib/model/linear';
import { quantize } from './lib/quantize';
import { Tensor } from './lib/tensor';
import { Rng } from './test/support/random';
(async () => {
  const rng = new Rng(1);
  const rows = 2048, cols = 2048;
  const W = Tensor.from(rng.normals(rows * cols, 1), [rows, cols]);
  for (const fmt of ['q4_0', 'q8_0', 'f16'] as const) {
    const q = fmt === 'f16' ? Tensor.from(Uint16Array.from({ length: rows * cols }, () => 0x3c00), [rows, cols], 'f16') : await quantize(W, { format: fmt });
    for (const n of [1, 64]) {
      const x = rng.normals(n * cols, 1);
      for (const threads of [1, 2]) {
        await linear(q, x, n, { threads });
        const t0 = performance.now(); let it = 0;
        while (performance.now() - t0 < 1000) { await linear(q, x, n, { threads }); it++; }
        const s = (performance.now() - t0) / 1000 / it;
        console.log(fmt, 'n', n, 'threads', threads, (s * 1e3).toFixed(3), 'ms', (rows * cols * n / s / 1e9).toFixed(2), 'GMAC/s');
      }
    }
  }
})();
