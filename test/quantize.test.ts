import { expect } from 'chai';
import {
  dequantizeSync,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  quantizationErrorSync,
  quantize,
  quantizeSync,
  QuantizedTensor,
  Tensor,
  type QuantFormat,
  type QuantizeOptions,
  castSync,
} from '../lib/index';
import { quantizationErrorSums, quantizeMeasured } from '../lib/quantize';
import { code, groupParams, unpack, type ScaleDType } from './support/ct-oracle';
import { bytesOf } from './support/assert';
import { Rng } from './support/random';
import { kernelsHere, simdUnavailable, skip } from './support/skip';

const GGML_FORMATS = ['q4_0', 'q4_1', 'q8_0'] as const;

// Inputs that exercise every corner of the references: zero groups, signed
// zeros, a huge outlier, f32 subnormals, exact .5 ties at common scales,
// f16 extremes, constants and symmetric extremes (+m and -m in one group).
function edgeMatrix(rng: Rng, rows: number, cols: number): Float32Array {
  const x = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const kind = r % 10;
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      switch (kind) {
        case 0: x[i] = 0; break;
        case 1: x[i] = c % 2 ? -0 : 0; break;
        case 2: x[i] = c === 5 ? -1e4 : rng.normal() * 1e-3; break;
        case 3: x[i] = (rng.normal() * 1e-39); break; // f32 subnormals
        case 4: x[i] = (c % 17) - 8 + 0.5; break; // .5 ties
        case 5: x[i] = c % 3 === 0 ? 65504 : c % 3 === 1 ? -65504 : 0; break;
        case 6: x[i] = 3.25; break;
        case 7: x[i] = c % 32 === 3 ? 2 : c % 32 === 9 ? -2 : rng.normal(); break; // tie of |max|
        case 8: x[i] = rng.normal() * 1e-8; break;
        default: x[i] = rng.normal();
      }
    }
  }
  return x;
}

function toF16(x: Float32Array): Uint16Array {
  return Uint16Array.from(x, (v) => f32ToF16(v));
}
function toBf16(x: Float32Array): Uint16Array {
  return Uint16Array.from(x, (v) => f32ToBf16(v));
}

// The ggml vectors themselves (every GGUF format, every kernel) are checked in quantize-ggml.test.ts.

interface Case {
  format: QuantFormat;
  opts: Partial<QuantizeOptions>;
}
function cases(): Case[] {
  const out: Case[] = [];
  for (const search of ['none', 'mse'] as const) {
    for (const format of GGML_FORMATS) out.push({ format, opts: { search } });
    for (const format of ['int4', 'int8'] as const) {
      for (const symmetric of [true, false]) {
        for (const groupSize of [32, 64, 128, 'channel'] as const) {
          for (const scaleDtype of ['f16', 'bf16', 'f32'] as const) {
            if (scaleDtype !== 'f16' && groupSize !== 64) continue;
            out.push({ format, opts: { search, symmetric, groupSize, scaleDtype } });
          }
        }
      }
    }
  }
  return out;
}

function label(c: Case): string {
  return `${c.format} ${JSON.stringify(c.opts)}`;
}

function sameQuantized(a: QuantizedTensor, b: QuantizedTensor): void {
  expect(Buffer.compare(bytesOf(a.data), bytesOf(b.data)), 'codes').to.equal(0);
  if (a.scales || b.scales) expect(Buffer.compare(bytesOf(a.scales!.data), bytesOf(b.scales!.data)), 'scales').to.equal(0);
  if (a.zeros || b.zeros) expect(Buffer.compare(bytesOf(a.zeros!.data), bytesOf(b.zeros!.data)), 'zeros').to.equal(0);
}

describe('quantize: AVX2 kernels are bit-identical to the scalar reference', function () {
  const noAvx2 = simdUnavailable('avx2');
  // Where AVX-512 is enabled, its search loops are compared too; elsewhere
  // that variant is reported skipped.
  const withAvx512 = kernelsHere('quantize: AVX-512 kernels bit-identical to the scalar reference', ['avx512'] as const).length > 0;
  const rng = new Rng(7);
  const shapes: Array<[number, number]> = [[3, 256], [17, 384], [1, 128], [40, 128], [5, 2048]];
  for (const c of cases()) {
    it(label(c), function () {
      if (noAvx2 !== null) skip(this, noAvx2);
      for (const [rows, cols] of shapes) {
        for (const input of ['normal', 'edge'] as const) {
          const x = input === 'normal' ? rng.normals(rows * cols) : edgeMatrix(rng, rows, cols);
          const importance = c.opts.search === 'mse' && rows % 2 === 1 ? Float32Array.from({ length: cols }, () => rng.uniform() * 4) : undefined;
          for (const dtype of ['f32', 'f16', 'bf16'] as const) {
            const t = dtype === 'f32' ? Tensor.from(x, [rows, cols]) : Tensor.from(dtype === 'f16' ? toF16(x) : toBf16(x), [rows, cols], dtype);
            const opts = { format: c.format, ...c.opts, ...(importance ? { importance } : {}) } as QuantizeOptions;
            const ref = quantizeSync(t, { ...opts, kernel: 'reference' });
            const simd = quantizeSync(t, { ...opts, kernel: 'avx2' });
            sameQuantized(simd, ref);
            if (withAvx512) sameQuantized(quantizeSync(t, { ...opts, kernel: 'avx512' }), ref);
            for (const dtype of ['f32', 'bf16'] as const) {
              const a = dequantizeSync(ref, { kernel: 'reference', dtype }).data;
              const b = dequantizeSync(ref, { kernel: 'avx2', dtype }).data;
              expect(Buffer.compare(bytesOf(a), bytesOf(b)), `dequantize to ${dtype}`).to.equal(0);
            }
          }
        }
      }
    });
  }
  it('per-channel groups whose width is not a multiple of 8 (reference fallback) agree too', function () {
    if (noAvx2 !== null) skip(this, noAvx2);
    const x = rng.normals(6 * 172);
    const t = Tensor.from(x, [6, 172]);
    for (const format of ['int4', 'int8'] as const) {
      sameQuantized(quantizeSync(t, { format, groupSize: 'channel', kernel: 'avx2' }), quantizeSync(t, { format, groupSize: 'channel', kernel: 'reference' }));
    }
  });
});

describe('quantize: fused f16/bf16 conversion', () => {
  const rng = new Rng(11);
  for (const format of ['q4_0', 'q4_1', 'q8_0', 'int4', 'int8'] as const) {
    it(`${format}: f16 and bf16 inputs equal their exact f32 values quantized`, () => {
      const x = rng.normals(8 * 256);
      for (const [dtype, bits, back] of [['f16', toF16(x), f16ToF32], ['bf16', toBf16(x), (h: number) => new Float32Array(new Uint32Array([h << 16]).buffer)[0] as number]] as const) {
        const wide = Float32Array.from(bits, back);
        const opts = { format, ...(format.startsWith('int') ? { scaleDtype: 'f32' as const } : {}) };
        sameQuantized(quantizeSync(Tensor.from(bits, [8, 256], dtype), opts), quantizeSync(Tensor.from(wide, [8, 256]), opts));
      }
    });
  }
});

describe('quantize: compressed-tensors layout and formulas', () => {
  const rng = new Rng(3);
  for (const bits of [4, 8]) {
    for (const symmetric of [true, false]) {
      for (const scaleDtype of ['f16', 'bf16', 'f32'] as ScaleDType[]) {
        it(`int${bits} ${symmetric ? 'symmetric' : 'asymmetric'} ${scaleDtype} scales: codes, scales and zero points match an independent JS model`, () => {
          const rows = 6;
          const cols = 192;
          const group = 64;
          const x = edgeMatrix(rng, rows, cols);
          const format = bits === 4 ? 'int4' : 'int8';
          const q = quantizeSync(Tensor.from(x, [rows, cols]), { format, groupSize: group, symmetric, scaleDtype });
          const rowWords = (cols * bits) / 32;
          expect(q.data).to.be.instanceOf(Int32Array);
          expect(q.data.length).to.equal(rows * rowWords);
          expect(q.scales!.shape).to.deep.equal([rows, cols / group]);
          expect(q.scales!.dtype).to.equal(scaleDtype);
          expect(q.zeros === undefined).to.equal(symmetric);
          const scaleAt = (i: number) => {
            const v = q.scales!.data[i] as number;
            return scaleDtype === 'f32' ? v : scaleDtype === 'f16' ? f16ToF32(v) : new Float32Array(new Uint32Array([v << 16]).buffer)[0]!;
          };
          const deq = dequantizeSync(q).data as Float32Array;
          for (let r = 0; r < rows; r++) {
            for (let g = 0; g < cols / group; g++) {
              const xs = x.subarray(r * cols + g * group, r * cols + (g + 1) * group);
              const p = groupParams(xs, bits, symmetric, scaleDtype);
              const gi = r * (cols / group) + g;
              expect(scaleAt(gi), `scale of row ${r} group ${g}`).to.equal(p.scale);
              if (!symmetric) expect(q.zeros!.data[gi], `zero point of row ${r} group ${g}`).to.equal(p.zero);
              for (let j = 0; j < group; j++) {
                const col = g * group + j;
                const want = code(xs[j] as number, p.scale, p.zero, bits);
                expect(unpack(q.data as Int32Array, rowWords, r, col, bits), `code [${r}, ${col}]`).to.equal(want);
                expect(deq[r * cols + col]).to.equal(Math.fround((want - p.zero) * p.scale));
              }
            }
          }
        });
      }
    }
  }

  it('packs element i at bits [4(i mod 8), +4) of word i/8, biased by +8', () => {
    // one group per row with a scale of exactly 1: codes equal the inputs
    const x = Float32Array.from({ length: 16 }, (_, i) => (i % 2 ? -(i % 8) : i % 8) * (i < 8 ? 1 : 1));
    x[0] = 7.5; // absmax 7.5 -> scale 1
    const q = quantizeSync(Tensor.from(x, [1, 16]), { format: 'int4', groupSize: 16, scaleDtype: 'f32' });
    expect((q.scales!.data as Float32Array)[0]).to.equal(1);
    const words = q.data as Int32Array;
    const codes = Array.from(x, (v, i) => Math.min(7, Math.round(v)) + 8 + 0 * i);
    codes[0] = 8 + 7; // 7.5 rounds half to even = 8, clamped to 7
    const expectWord = (k: number) => codes.slice(8 * k, 8 * k + 8).reduce((w, u, i) => w | (u << (4 * i)), 0) | 0;
    expect(words[0]).to.equal(expectWord(0));
    expect(words[1]).to.equal(expectWord(1));
  });

  it('int8 stores q + 128 one byte per value, four per int32 word', () => {
    const x = Float32Array.from({ length: 8 }, (_, i) => i * 10 - 35);
    const q = quantizeSync(Tensor.from(x, [1, 8]), { format: 'int8', groupSize: 8, scaleDtype: 'f32' });
    const s = (q.scales!.data as Float32Array)[0] as number;
    const bytes = new Uint8Array(q.data.buffer);
    for (let i = 0; i < 8; i++) expect(bytes[i]! - 128).to.equal(code(x[i]!, s, 0, 8));
  });
});

describe('quantize: error bounds of dequantize(quantize(x))', () => {
  const rng = new Rng(5);
  it('symmetric int4/int8: every error is at most half a step (scale / 2)', () => {
    for (const format of ['int4', 'int8'] as const) {
      const x = rng.normals(16 * 256, 3);
      const q = quantizeSync(Tensor.from(x, [16, 256]), { format, groupSize: 32, scaleDtype: 'f32' });
      const d = dequantizeSync(q).data as Float32Array;
      const s = q.scales!.data as Float32Array;
      const qmax = format === 'int4' ? 8 : 128;
      for (let i = 0; i < x.length; i++) {
        const step = s[Math.floor(i / 32)] as number;
        // half a step, plus the f32 rounding of x / s and of q * s
        expect(Math.abs((x[i] as number) - (d[i] as number))).to.be.at.most(step * (0.5 + qmax * 2 ** -23), `element ${i}`);
      }
    }
  });

  it('GGUF formats: errors are bounded by the block scale', () => {
    const x = rng.normals(16 * 256, 2);
    for (const format of GGML_FORMATS) {
      const q = quantizeSync(Tensor.from(x, [16, 256]), { format });
      const d = dequantizeSync(q).data as Float32Array;
      const blockBytes = { q4_0: 18, q4_1: 20, q8_0: 34 }[format];
      const raw = q.data as Uint8Array;
      for (let b = 0; b < x.length / 32; b++) {
        const scale = Math.abs(f16ToF32(raw[b * blockBytes]! | (raw[b * blockBytes + 1]! << 8)));
        // half a step, plus the f16 rounding of the stored scale times the
        // largest code, plus one step where q4_0 clamps its top code
        const codeMax = format === 'q8_0' ? 127 : 15;
        const bound = (format === 'q4_0' ? 1 : 0.5) * scale + codeMax * scale * 2 ** -10;
        for (let j = 0; j < 32; j++) {
          const i = b * 32 + j;
          expect(Math.abs((x[i] as number) - (d[i] as number))).to.be.at.most(bound, `${format} element ${i}`);
        }
      }
    }
  });

  it('more bits, smaller groups and search each lower the RMSE on N(0,1)', () => {
    const t = Tensor.from(rng.normals(64 * 512), [64, 512]);
    const rmse = (o: QuantizeOptions) => quantizationErrorSync(t, quantizeSync(t, o)).rmse;
    expect(rmse({ format: 'q8_0' })).to.be.below(rmse({ format: 'q4_0' }) / 10);
    expect(rmse({ format: 'int4', groupSize: 32 })).to.be.below(rmse({ format: 'int4', groupSize: 128 }));
    expect(rmse({ format: 'int4', groupSize: 32, symmetric: false })).to.be.below(rmse({ format: 'int4', groupSize: 32 }));
    for (const o of [{ format: 'q4_0' }, { format: 'q4_1' }, { format: 'q8_0' }, { format: 'int4', groupSize: 32 }, { format: 'int4', groupSize: 128, symmetric: false }, { format: 'int8' }] as QuantizeOptions[]) {
      expect(rmse({ ...o, search: 'mse' }), JSON.stringify(o)).to.be.below(rmse(o));
    }
  });

  it("search: 'mse' reaches the expected RMSE at 4.5 bits per weight on N(0,1)", () => {
    // Exhaustive search over f16 scales puts the floor of a symmetric
    // 16-level grid with 32-value groups at ~0.081 (q4_0 reference: 0.0859).
    const t = Tensor.from(rng.normals(256 * 1024), [256, 1024]);
    const q = quantizeSync(t, { format: 'q4_0', search: 'mse' });
    expect(q.bitsPerWeight).to.equal(4.5);
    const e = quantizationErrorSync(t, q).rmse;
    expect(e).to.be.within(0.078, 0.0825);
  });

  it("importance weights lower the weighted error slimtensor's search is given", () => {
    const rows = 64;
    const cols = 256;
    const t = Tensor.from(rng.normals(rows * cols), [rows, cols]);
    const importance = Float32Array.from({ length: cols }, (_, c) => (c % 4 === 0 ? 20 : 0.05));
    const weighted = (q: QuantizedTensor) => {
      const d = dequantizeSync(q).data as Float32Array;
      let s = 0;
      for (let i = 0; i < d.length; i++) s += (importance[i % cols] as number) * ((t.data[i] as number) - (d[i] as number)) ** 2;
      return s;
    };
    for (const format of ['q4_0', 'int4'] as const) {
      const plain = weighted(quantizeSync(t, { format, groupSize: format === 'int4' ? 32 : undefined, search: 'mse' } as QuantizeOptions));
      const aware = weighted(quantizeSync(t, { format, groupSize: format === 'int4' ? 32 : undefined, search: 'mse', importance } as QuantizeOptions));
      expect(aware, format).to.be.below(plain * 0.9);
    }
  });
});

describe('quantize: non-finite inputs', () => {
  it("names the first NaN/Inf by index, across threads", () => {
    const x = new Float32Array(64 * 256).fill(0.5);
    x[40 * 256 + 7] = Infinity;
    x[3 * 256 + 200] = NaN;
    for (const format of ['q4_0', 'q4_1', 'q8_0', 'int4', 'int8'] as const) {
      for (const threads of [1, 2]) {
        expect(() => quantizeSync(Tensor.from(x, [64, 256]), { format, threads }))
          .to.throw(/non-finite value \(NaN\) at index \[3, 200\]/)
          .with.property('code', 'ERR_VALUE');
      }
    }
  });

  it("nonFinite: 'zero' equals quantizing zeros in their place", () => {
    const rng = new Rng(9);
    const x = rng.normals(8 * 256);
    const clean = x.slice();
    for (const i of [0, 31, 300, 1000, 2047]) {
      x[i] = i % 2 ? -Infinity : NaN;
      clean[i] = 0;
    }
    for (const format of ['q4_0', 'q4_1', 'q8_0', 'int4', 'int8'] as const) {
      for (const search of ['none', 'mse'] as const) {
        sameQuantized(
          quantizeSync(Tensor.from(x, [8, 256]), { format, search, nonFinite: 'zero' }),
          quantizeSync(Tensor.from(clean, [8, 256]), { format, search }),
        );
      }
    }
  });
});

describe('quantize: API behaviour', () => {
  const rng = new Rng(13);
  const t = Tensor.from(rng.normals(32 * 512), [4, 8, 512]);

  it('async and sync agree for every format', async () => {
    for (const c of cases()) {
      const opts = { format: c.format, ...c.opts } as QuantizeOptions;
      sameQuantized(await quantize(t, opts), quantizeSync(t, opts));
    }
  });

  it('keeps the shape and quantizes along the last dimension of any rank', () => {
    const q = quantizeSync(t, { format: 'int4', groupSize: 128 });
    expect(q.shape).to.deep.equal([4, 8, 512]);
    expect(q.scales!.shape).to.deep.equal([4, 8, 4]);
    sameQuantized(q, quantizeSync(t.reshape([32, 512]), { format: 'int4', groupSize: 128 }));
    expect(dequantizeSync(q).shape).to.deep.equal([4, 8, 512]);
  });

  it('thread count does not change the result', () => {
    for (const format of ['q4_0', 'int4'] as const) {
      sameQuantized(quantizeSync(t, { format, threads: 1 }), quantizeSync(t, { format, threads: 2 }));
    }
  });

  it('reports sizes and bits per weight', () => {
    const q4 = quantizeSync(t, { format: 'q4_0' });
    expect(q4.byteLength).to.equal((t.size / 32) * 18);
    expect(q4.bitsPerWeight).to.equal(4.5);
    const i4 = quantizeSync(t, { format: 'int4', groupSize: 32, scaleDtype: 'f16' });
    expect(i4.bitsPerWeight).to.equal(4.5);
    const a4 = quantizeSync(t, { format: 'int4', groupSize: 128, symmetric: false });
    expect(a4.bitsPerWeight).to.equal(4 + 16 / 128 + 4 / 128);
    expect(quantizeSync(t, { format: 'q8_0' }).bitsPerWeight).to.equal(8.5);
  });

  it('dequantize to f16/bf16 rounds the f32 reconstruction', () => {
    for (const format of ['q4_1', 'int8'] as const) {
      const q = quantizeSync(t, { format });
      const f = dequantizeSync(q).data as Float32Array;
      const h = dequantizeSync(q, { dtype: 'f16' });
      const b = dequantizeSync(q, { dtype: 'bf16' });
      expect(h.dtype).to.equal('f16');
      expect(Array.from(h.data as Uint16Array)).to.deep.equal(Array.from(f, (v) => f32ToF16(v)));
      expect(Array.from(b.data as Uint16Array)).to.deep.equal(Array.from(f, (v) => f32ToBf16(v)));
    }
  });

  it('quantizationError equals the statistics of the dequantized tensor', () => {
    const q = quantizeSync(t, { format: 'int4', groupSize: 64, symmetric: false });
    const d = dequantizeSync(q).data as Float32Array;
    let se = 0;
    let sx = 0;
    let sy = 0;
    let dot = 0;
    let mx = 0;
    for (let i = 0; i < d.length; i++) {
      const x = t.data[i] as number;
      const y = d[i] as number;
      se += (x - y) ** 2;
      sx += x * x;
      sy += y * y;
      dot += x * y;
      mx = Math.max(mx, Math.abs(x - y));
    }
    const e = quantizationErrorSync(t, q);
    expect(e.rmse).to.be.closeTo(Math.sqrt(se / d.length), 1e-12);
    expect(e.maxAbs).to.equal(mx);
    expect(e.sqnrDb).to.be.closeTo(10 * Math.log10(sx / se), 1e-9);
    expect(e.cosine).to.be.closeTo(dot / Math.sqrt(sx * sy), 1e-12);
    const exact = quantizeSync(Tensor.from(new Float32Array(64).fill(0), [2, 32]), { format: 'q8_0' });
    expect(quantizationErrorSync(Tensor.from(new Float32Array(64), [2, 32]), exact)).to.deep.equal({ rmse: 0, maxAbs: 0, sqnrDb: Infinity, cosine: 1 });
  });

  it('out: writes into an existing QuantizedTensor / Tensor and returns it', async () => {
    for (const o of [{ format: 'q4_0' }, { format: 'int4', groupSize: 64, symmetric: false, scaleDtype: 'bf16' }] as QuantizeOptions[]) {
      const fresh = quantizeSync(t, o);
      const other = Tensor.from(new Rng(99).normals(t.size), t.shape);
      const out = quantizeSync(other, o);
      expect(await quantize(t, { ...o, out })).to.equal(out);
      sameQuantized(out, fresh);
      expect(quantizeSync(other, { ...o, out })).to.equal(out);
      sameQuantized(out, quantizeSync(other, o));
      const d = dequantizeSync(out);
      const into = Tensor.zeros(t.shape, 'f32');
      expect(dequantizeSync(out, { out: into })).to.equal(into);
      expect(Array.from(into.data as Float32Array)).to.deep.equal(Array.from(d.data as Float32Array));
    }
    const q8 = quantizeSync(t, { format: 'q8_0' });
    expect(() => quantizeSync(t, { format: 'q4_0', out: q8 })).to.throw(/options.out is q8_0 \[4, 8, 512\]; this call writes q4_0/).with.property('code', 'ERR_SHAPE');
    const g64 = quantizeSync(t, { format: 'int4', groupSize: 64 });
    expect(() => quantizeSync(t, { format: 'int4', groupSize: 128, out: g64 })).to.throw(/group 64/).with.property('code', 'ERR_SHAPE');
    expect(() => dequantizeSync(q8, { out: Tensor.zeros([4, 8, 256], 'f32') })).to.throw(/options.out is \[4, 8, 256\]/).with.property('code', 'ERR_SHAPE');
    expect(() => dequantizeSync(q8, { dtype: 'f16', out: Tensor.zeros(t.shape, 'f32') })).to.throw(/dtype f32; expected f16/).with.property('code', 'ERR_DTYPE');
    const shared = new ArrayBuffer(256);
    const input = Tensor.from(new Float32Array(shared, 0, 32), [1, 32]);
    const alias = new QuantizedTensor({ format: 'q8_0', shape: [1, 32], data: new Uint8Array(shared, 100, 34) });
    expect(() => quantizeSync(input, { format: 'q8_0', out: alias })).to.throw(/shares memory with the input/).with.property('code', 'ERR_VALUE');
    // Disjoint slices of one ArrayBuffer (Node's pooled Buffers) are fine.
    (input.data as Float32Array).set(Float32Array.from({ length: 32 }, (_, i) => i - 16));
    const beside = new QuantizedTensor({ format: 'q8_0', shape: [1, 32], data: new Uint8Array(shared, 128, 34) });
    expect(quantizeSync(input, { format: 'q8_0', out: beside }).data).to.deep.equal(quantizeSync(input, { format: 'q8_0' }).data);
  });

  it('QuantizedTensor can be rebuilt from its parts (e.g. read from a file)', () => {
    const q = quantizeSync(t, { format: 'int4', groupSize: 64, symmetric: false });
    const copy = new QuantizedTensor({ format: q.format, shape: q.shape, data: q.data.slice(), scales: q.scales, zeros: q.zeros, groupSize: 64 });
    expect(Array.from(dequantizeSync(copy).data as Float32Array)).to.deep.equal(Array.from(dequantizeSync(q).data as Float32Array));
    expect(() => new QuantizedTensor({ format: 'q4_0', shape: [2, 32], data: new Uint8Array(35) })).to.throw(/needs 36/).with.property('code', 'ERR_SHAPE');
  });
});

describe('quantizeMeasured (the pipeline measuring each row as it quantizes it)', () => {
  it('writes the same bytes and returns the same sums as quantize then quantizationError, for every format, with and without an importance vector', async () => {
    const rng = new Rng(31);
    const rows = 7;
    const cols = 512;
    const x = Float32Array.from(rng.normals(rows * cols, 0.05), (v, i) => (i % 97 === 0 ? v * 40 : v));
    const importance = Float32Array.from({ length: cols }, (_, i) => 0.25 + ((i * 13) % 7));
    const cases: QuantizeOptions[] = [
      { format: 'q8_0' },
      { format: 'q4_0' },
      { format: 'q4_1' },
      { format: 'q4_k' },
      { format: 'q6_k' },
      { format: 'q4_k', importance },
      { format: 'int4', groupSize: 128 },
      { format: 'int4', groupSize: 32, symmetric: false },
      { format: 'int8', groupSize: 'channel' },
    ];
    for (const dtype of ['f32', 'f16'] as const) {
      const t = dtype === 'f32' ? Tensor.from(x, [rows, cols]) : castSync(Tensor.from(x, [rows, cols]), 'f16');
      for (const o of cases) {
        const label = `${dtype} ${JSON.stringify({ ...o, importance: o.importance === undefined ? undefined : 'given' })}`;
        const plain = await quantize(t, { ...o, threads: 2 });
        const sums = await quantizationErrorSums(t, plain);
        const m = await quantizeMeasured(t, { ...o, threads: 2 });
        expect(Buffer.compare(bytesOf(m.q.data), bytesOf(plain.data)), label).to.equal(0);
        if (plain.scales !== undefined) expect(Buffer.compare(bytesOf((m.q.scales as Tensor).data), bytesOf(plain.scales.data)), label).to.equal(0);
        expect(m.sums, label).to.deep.equal(sums);
        expect(m.sums.count, label).to.equal(rows * cols);
      }
    }
  });
});
