// The runtime's matmul kernels one weight at a time (lib/model/linear.ts):
// every stored format on every kernel set this machine has, against the
// product computed here in f64 from the dequantized weights. f32
// activations: f32 rounding only (float weights: the same bits on every
// set, the GEMM's fma chain). 8-bit activations: within the bound the
// rounding of x to blocks of 32 allows, |Σ w·(x - x̂)| <= Σ_b (d_b / 2)·Σ_{j∈b} |w_j|
// with d_b = max|x_b| / 127, and the SIMD sets within float-order tolerance
// of the reference.
import { expect } from 'chai';
import { skip } from './support/skip';
import { backends } from '../lib/backend';
import { linearKernel, linearSync } from '../lib/model/linear';
import { compress24Sync } from '../lib/sparsity';
import { dequantizeSync, quantizeSync, QuantizedTensor } from '../lib/quantize';
import { Tensor } from '../lib/tensor';
import type { Kernel } from '../lib/options';
import { thrown } from './support/assert';
import { Rng } from './support/random';

const cpu = backends().cpu;
const SETS: Kernel[] = ['reference', ...(cpu.kernel !== 'scalar' ? (['avx2'] as const) : []), ...(cpu.kernel === 'avx512' && cpu.features.includes('avx512vnni') ? (['avx512'] as const) : [])];

function f32Of(t: Tensor | QuantizedTensor): Float32Array {
  if (t instanceof QuantizedTensor) return dequantizeSync(t).data as Float32Array;
  if (t.dtype === 'f32') return t.data as Float32Array;
  return Float32Array.from(t.data as Uint16Array, (h) => halfToNumber(h, t.dtype as 'f16' | 'bf16'));
}

function halfToNumber(h: number, dtype: 'f16' | 'bf16'): number {
  if (dtype === 'bf16') return new Float32Array(new Uint32Array([h << 16]).buffer)[0] as number;
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
}

interface Case {
  name: string;
  weight: Tensor | QuantizedTensor;
  q8: boolean;
}

function cases(rows: number, cols: number, seed: number): Case[] {
  const rng = new Rng(seed);
  const w = Tensor.from(rng.normals(rows * cols, 1), [rows, cols]);
  const q = (o: Parameters<typeof quantizeSync>[1]) => quantizeSync(w, o);
  return [
    { name: 'f32', weight: w, q8: false },
    { name: 'f16', weight: Tensor.from(Uint16Array.from(rng.normals(rows * cols, 1), (v) => f16Bits(v)), [rows, cols], 'f16'), q8: false },
    { name: 'bf16', weight: Tensor.from(Uint16Array.from(rng.normals(rows * cols, 1), (v) => new Uint32Array(new Float32Array([v]).buffer)[0]! >>> 16), [rows, cols], 'bf16'), q8: false },
    { name: 'q4_0', weight: q({ format: 'q4_0' }), q8: true },
    { name: 'q4_1', weight: q({ format: 'q4_1' }), q8: true },
    { name: 'q8_0', weight: q({ format: 'q8_0' }), q8: true },
    { name: 'int4 g32', weight: q({ format: 'int4', groupSize: 32 }), q8: true },
    { name: 'int4 g32 asymmetric', weight: q({ format: 'int4', groupSize: 32, symmetric: false }), q8: true },
    { name: 'int4 per channel, bf16 scales', weight: q({ format: 'int4', groupSize: 'channel', scaleDtype: 'bf16' }), q8: true },
    { name: 'int8 g32, f32 scales', weight: q({ format: 'int8', groupSize: 32, scaleDtype: 'f32' }), q8: true },
    { name: 'int8 asymmetric (f32 activations)', weight: q({ format: 'int8', groupSize: 32, symmetric: false }), q8: false },
  ];
}

// The formats read through the quant room's dequantization: rows of 512
// (two K-quant super-blocks), 37 rows (the 16-row tiles' tail).
const DEQUANTIZED = ['q5_0', 'q5_1', 'q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k'] as const;
function dequantizedCases(rows: number, cols: number, seed: number): Case[] {
  const rng = new Rng(seed);
  const w = Tensor.from(rng.normals(rows * cols, 1), [rows, cols]);
  return DEQUANTIZED.map((format) => ({ name: format, weight: quantizeSync(w, { format }), q8: false }));
}

function f16Bits(v: number): number {
  const f = new Float32Array([v]);
  const x = new Uint32Array(f.buffer)[0] as number;
  const sign = (x >>> 16) & 0x8000;
  const e = ((x >>> 23) & 0xff) - 127 + 15;
  if (e <= 0) return sign;
  return sign | (e << 10) | ((x >>> 13) & 0x3ff);
}

describe('runtime kernels: one linear layer, every format and kernel set', () => {
  it(`sets on this machine: ${SETS.join(', ')}`, () => {
    expect(SETS[0]).to.equal('reference');
  });

  // 7 blocks per row (an odd count: a pair kernel's tail), 67 rows (not a multiple of 4), 1 and 5 tokens.
  const shapes = [
    { rows: 67, cols: 224, list: cases(67, 224, 11) },
    { rows: 37, cols: 512, list: dequantizedCases(37, 512, 13) },
  ];
  for (const { rows, cols, list } of shapes) for (const c of list) {
    it(`${c.name}: f32 activations to f32 rounding; ${c.q8 ? '8-bit activations within the rounding bound' : 'no 8-bit path'}`, () => {
      const w = f32Of(c.weight);
      const rng = new Rng(5);
      for (const n of [1, 5, 9]) { // 9: the prompt path (rows decoded once into a panel)
        const x = rng.normals(n * cols, 1);
        x[3] = 0; // a zero and a large value in the first block
        x[7] = 9;
        const exact = new Float64Array(n * rows);
        const abs = new Float64Array(n * rows);
        const bound = new Float64Array(n * rows);
        for (let t = 0; t < n; t++) {
          for (let r = 0; r < rows; r++) {
            let s = 0;
            let a = 0;
            let b = 0;
            for (let blk = 0; blk < cols / 32; blk++) {
              let amax = 0;
              let wsum = 0;
              for (let j = blk * 32; j < blk * 32 + 32; j++) {
                const wv = w[r * cols + j] as number;
                const xv = x[t * cols + j] as number;
                s += wv * xv;
                a += Math.abs(wv * xv);
                amax = Math.max(amax, Math.abs(xv));
                wsum += Math.abs(wv);
              }
              b += (amax / 127 / 2) * wsum;
            }
            exact[t * rows + r] = s;
            abs[t * rows + r] = a;
            bound[t * rows + r] = b * (1 + 1e-3) + 1e-5 * a;
          }
        }
        const results: Record<string, Float32Array> = {};
        for (const kernel of SETS) {
          const yf = linearSync(c.weight, x, n, { kernel, activations: 'f32' });
          yf.forEach((v, i) => expect(Math.abs(v - (exact[i] as number)), `${kernel} f32 [${i}]`).to.be.at.most(2e-6 * (abs[i] as number) + 1e-30));
          // Float weights: the GEMM's bits; the dequantized formats: the same floats (the quant room's twins) into it.
          if ((c.weight instanceof Tensor || (DEQUANTIZED as readonly string[]).includes(c.weight.format)) && kernel !== 'reference') expect(Array.from(yf), `${kernel}: the GEMM's bits`).to.deep.equal(Array.from(results['reference/f32'] as Float32Array));
          results[`${kernel}/f32`] = yf;
          const yq = linearSync(c.weight, x, n, { kernel });
          if (!c.q8) {
            expect(Array.from(yq)).to.deep.equal(Array.from(yf));
            continue;
          }
          yq.forEach((v, i) => expect(Math.abs(v - (exact[i] as number)), `${kernel} q8 [${i}]`).to.be.at.most(bound[i] as number));
          if (kernel !== 'reference') {
            const ref = results['reference/q8'] as Float32Array;
            yq.forEach((v, i) => expect(Math.abs(v - (ref[i] as number)), `${kernel} q8 vs reference [${i}]`).to.be.at.most(2e-6 * (abs[i] as number)));
          }
          results[`${kernel}/q8`] = yq;
        }
      }
    });
  }

  it('a 2:4 weight (spmm24) equals the dense product with its zeros', () => {
    const rng = new Rng(3);
    const dense = Tensor.from(rng.normals(40 * 64, 1), [40, 64]);
    const s = compress24Sync(dense, { prune: true });
    const x = rng.normals(3 * 64, 1);
    const w = f32Of(dequantizeWith24(s.values as Tensor, s.meta as Int16Array, 40, 64));
    for (const kernel of SETS) {
      const y = linearSync(s, x, 3, { kernel });
      for (let t = 0; t < 3; t++) {
        for (let r = 0; r < 40; r++) {
          let e = 0;
          for (let k = 0; k < 64; k++) e += (w[r * 64 + k] as number) * (x[t * 64 + k] as number);
          expect(y[t * 40 + r]).to.be.closeTo(e, 1e-4);
        }
      }
    }
  });

  it('CUDA: every format but 2:4 against the CPU reference', function () {
    const cuda = backends().cuda;
    if (!cuda.available) skip(this, `no usable GPU: ${cuda.reason ?? 'unknown'} (the kernels are compiled by the CUDA check)`);
    const rng = new Rng(8);
    const x = rng.normals(3 * 224, 1);
    for (const c of cases(40, 224, 12)) {
      for (const activations of ['auto', 'f32'] as const) {
        const ref = linearSync(c.weight, x, 3, { kernel: 'reference', activations });
        const got = linearSync(c.weight, x, 3, { kernel: 'cuda', activations });
        got.forEach((v, i) => expect(v, `${c.name} ${activations} [${i}]`).to.be.closeTo(ref[i] as number, 1e-4 * Math.max(1, Math.abs(ref[i] as number))));
      }
    }
  });

  it('which kernel a weight gets; errors', () => {
    expect(linearKernel('q4_0', 64, { kernel: 'reference' })).to.equal('reference/q8');
    expect(linearKernel('q4_0', 64, { kernel: 'reference', activations: 'f32' })).to.equal('reference/f32');
    expect(linearKernel('int8', 64, { kernel: 'reference', asymmetric: true })).to.equal('reference/f32');
    expect(linearKernel('int4', 172, { kernel: 'reference' })).to.equal('reference/f32'); // rows not in blocks of 32
    expect(linearKernel('f16', 64, { kernel: 'reference' })).to.equal('reference/f32');
    const q = quantizeSync(Tensor.from(new Float32Array(64), [2, 32]), { format: 'q8_0' });
    expect(thrown(() => linearSync(q, new Float32Array(31), 1)).code).to.equal('ERR_SHAPE');
    if (!SETS.includes('avx512')) expect(thrown(() => linearSync(q, new Float32Array(32), 1, { kernel: 'avx512' })).code).to.equal('ERR_UNSUPPORTED');
  });
});

/** The dense weight of a 2:4 float weight (values + int16 meta), as f32. */
function dequantizeWith24(values: Tensor, meta: Int16Array, rows: number, cols: number): Tensor {
  const v = values.data as Float32Array;
  const out = new Float32Array(rows * cols);
  const words = Math.ceil(cols / 16);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < cols / 4; g++) {
      const code = ((meta[r * words + (g >> 2)] as number) >> (4 * (g & 3))) & 15;
      out[r * cols + 4 * g + (code & 3)] = v[r * (cols / 2) + 2 * g] as number;
      out[r * cols + 4 * g + (code >> 2)] = v[r * (cols / 2) + 2 * g + 1] as number;
    }
  }
  return Tensor.from(out, [rows, cols]);
}
