// GGUF formats against ggml: every vector of test/fixtures/ggml (all types,
// with and without an importance matrix) byte for byte on every CPU kernel,
// dequantization included; the AVX2/AVX-512 twins against the reference on
// random and edge data; an independent JS decoder of the block layouts; the
// option, shape and NaN/Inf rules of the K-quants and Q5_0/Q5_1.
import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  dequantize,
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
} from '../lib/index';
import { bytesOf } from './support/assert';
import { kernelsHere, simdUnavailable, skip } from './support/skip';
import { Rng } from './support/random';

const FIXTURES = path.join(__dirname, 'fixtures', 'ggml');
const GGML = ['q4_0', 'q4_1', 'q5_0', 'q5_1', 'q8_0', 'q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k'] as const;
type Ggml = (typeof GGML)[number];
const NEW = ['q5_0', 'q5_1', 'q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k'] as const;
const KQUANTS = ['q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k'] as const;
const BLOCK: Record<Ggml, [values: number, bytes: number]> = {
  q4_0: [32, 18], q4_1: [32, 20], q5_0: [32, 22], q5_1: [32, 24], q8_0: [32, 34],
  q2_k: [256, 84], q3_k: [256, 110], q4_k: [256, 144], q5_k: [256, 176], q6_k: [256, 210],
};
const KERNELS = ['reference', 'avx2', 'avx512'] as const;
// The CPU kernels this process can run; the others are reported as skipped tests with the reason.
const HERE = kernelsHere('GGUF formats', KERNELS);

function readF32(file: string): Float32Array {
  const b = fs.readFileSync(path.join(FIXTURES, file));
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

function sameBytes(a: ArrayBufferView, b: ArrayBufferView, what: string): void {
  const x = bytesOf(a);
  const y = bytesOf(b);
  expect(x.length, `${what}: length`).to.equal(y.length);
  const i = x.findIndex((v, k) => v !== y[k]);
  expect(i, `${what}: first differing byte`).to.equal(-1);
}

describe('GGUF formats: ggml vectors byte for byte (quantize with and without importance, dequantize)', () => {
  for (const kernel of HERE) {
    describe(`${kernel} kernel`, () => {
      for (const name of ['normal', 'edge', 'heavy']) {
        for (const format of GGML) {
          it(`${name} ${format}`, () => {
            const x = readF32(`${name}.f32`);
            const importance = readF32(`${name}.imatrix.f32`);
            const t = Tensor.from(x, [x.length / importance.length, importance.length]);
            const q = quantizeSync(t, { format, kernel });
            sameBytes(q.data, fs.readFileSync(path.join(FIXTURES, `${name}.${format}`)), 'reference quantizer');
            sameBytes(dequantizeSync(q, { kernel }).data, readF32(`${name}.${format}.dequant.f32`), 'dequantize');
            const weighted = quantizeSync(t, { format, importance, kernel });
            // ggml's Q8_0 ignores the importance matrix (no .imatrix vector)
            const file = format === 'q8_0' ? `${name}.q8_0` : `${name}.${format}.imatrix`;
            sameBytes(weighted.data, fs.readFileSync(path.join(FIXTURES, file)), 'importance-weighted quantizer');
          });
        }
      }
    });
  }
});

// ---------------------------------------------------------------------------
// SIMD twins against the reference.

// Rows of the kinds that reach every branch of the searches: all zero, ±0,
// an outlier, subnormals, ties, f16 extremes, constants, non-negative,
// sparse, tiny noise, and plain normals.
function edgeRows(rng: Rng, rows: number, cols: number): Float32Array {
  const x = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const kind = r % 12;
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      const n = rng.normal();
      switch (kind) {
        case 0: x[i] = 0; break;
        case 1: x[i] = c % 2 ? -0 : 0; break;
        case 2: x[i] = c % 97 === 5 ? -1e4 : n * 1e-3; break;
        case 3: x[i] = n * 1e-39; break;
        case 4: x[i] = (c % 17) - 8 + 0.5; break;
        case 5: x[i] = c % 3 === 0 ? 65504 : c % 3 === 1 ? -65504 : 0; break;
        case 6: x[i] = c % 64 < 32 ? 3.25 : -1; break;
        case 7: x[i] = Math.abs(n); break;
        case 8: x[i] = c % 16 < 13 ? 0 : n; break;
        case 9: x[i] = n * 1e-8; break;
        case 10: x[i] = Math.round(n * 4) / 4; break;
        default: x[i] = n;
      }
    }
  }
  return x;
}

function sameQuantized(a: QuantizedTensor, b: QuantizedTensor, what: string): void {
  sameBytes(a.data, b.data, what);
}

describe('GGUF formats: AVX2 and AVX-512 kernels are bit-identical to the scalar reference', () => {
  const rng = new Rng(21);
  // odd and even super-block counts, several rows
  const shapes: Array<[number, number]> = [[12, 256], [5, 768], [3, 1280], [2, 2048]];
  const inputs = shapes.map(([rows, cols]) => ({
    rows,
    cols,
    x: [rng.normals(rows * cols), edgeRows(rng, rows, cols)],
    importance: Float32Array.from({ length: cols }, (_, c) => (c % 11 === 3 ? 0 : c % 29 === 0 ? 40 * rng.uniform() : 0.05 + 2 * rng.uniform())),
  }));
  for (const kernel of ['avx2', 'avx512'] as const) {
    for (const format of GGML) {
      it(`${format} (${kernel}): f32/f16/bf16 inputs, with and without importance`, function () {
        const why = simdUnavailable(kernel);
        if (why !== null) skip(this, why);
        for (const { rows, cols, x: xs, importance } of inputs) {
          for (const x of xs) {
            for (const dtype of ['f32', 'f16', 'bf16'] as const) {
              const t = dtype === 'f32' ? Tensor.from(x, [rows, cols])
                : Tensor.from(Uint16Array.from(x, (v) => (dtype === 'f16' ? f32ToF16(v) : f32ToBf16(v))), [rows, cols], dtype);
              for (const opts of [{ format }, { format, importance }] as QuantizeOptions[]) {
                const ref = quantizeSync(t, { ...opts, kernel: 'reference' });
                sameQuantized(quantizeSync(t, { ...opts, kernel }), ref, `${dtype} [${rows}, ${cols}] importance ${opts.importance !== undefined}`);
                sameBytes(dequantizeSync(ref, { kernel }).data, dequantizeSync(ref, { kernel: 'reference' }).data, 'dequantize');
              }
            }
          }
        }
      });
    }
  }
});

// ---------------------------------------------------------------------------
// An independent decoder of ggml's block layouts, written from the layout
// description (README / quant_kmath.h), with f32 rounding after every
// operation as the C code has it. Run on random bytes, it checks
// dequantization beyond what the quantizers produce.

const f = Math.fround;
function half(b: Uint8Array, o: number): number {
  return f16ToF32(b[o]! | (b[o + 1]! << 8));
}
function i8(v: number): number {
  return (v << 24) >> 24;
}

function decodeBlock(format: Ggml, b: Uint8Array, out: Float32Array): void {
  const n = BLOCK[format][0];
  for (let i = 0; i < n; i++) {
    let v: number;
    switch (format) {
      case 'q4_0': { const q = i < 16 ? b[2 + i]! & 15 : b[2 + i - 16]! >> 4; v = f((q - 8) * half(b, 0)); break; }
      case 'q4_1': { const q = i < 16 ? b[4 + i]! & 15 : b[4 + i - 16]! >> 4; v = f(f(q * half(b, 0)) + half(b, 2)); break; }
      case 'q5_0':
      case 'q5_1': {
        const o = format === 'q5_0' ? 2 : 4;
        const qh = (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
        const q = (i < 16 ? b[o + 4 + i]! & 15 : b[o + 4 + i - 16]! >> 4) | (((qh >>> i) & 1) << 4);
        v = format === 'q5_0' ? f((q - 16) * half(b, 0)) : f(f(q * half(b, 0)) + half(b, 2));
        break;
      }
      case 'q8_0': v = f(i8(b[2 + i]!) * half(b, 0)); break;
      case 'q2_k': {
        const sc = b[i >> 4]!;
        const q = (b[16 + 32 * (i >> 7) + (i & 31)]! >> (2 * ((i & 127) >> 5))) & 3;
        v = f(f(f(half(b, 80) * (sc & 15)) * q) - f(half(b, 82) * (sc >> 4)));
        break;
      }
      case 'q3_k': {
        const j = i >> 4;
        const lo = j < 8 ? b[96 + j]! & 15 : b[96 + j - 8]! >> 4;
        const s = (lo | (((b[104 + (j & 3)]! >> (2 * (j >> 2))) & 3) << 4)) - 32;
        const q = ((b[32 + 32 * (i >> 7) + (i & 31)]! >> (2 * ((i & 127) >> 5))) & 3) - ((b[i & 31]! >> (i >> 5)) & 1 ? 0 : 4);
        v = f(f(half(b, 108) * s) * q);
        break;
      }
      case 'q4_k':
      case 'q5_k': {
        const j = i >> 5;
        const s = b.subarray(4, 16);
        const sc = j < 4 ? s[j]! & 63 : (s[j + 4]! & 15) | ((s[j - 4]! >> 6) << 4);
        const m = j < 4 ? s[j + 4]! & 63 : (s[j + 4]! >> 4) | ((s[j]! >> 6) << 4);
        const qs = format === 'q4_k' ? 16 : 48;
        let q = (b[qs + 32 * (i >> 6) + (i & 31)]! >> (4 * ((i >> 5) & 1))) & 15;
        if (format === 'q5_k' && (b[16 + (i & 31)]! >> (i >> 5)) & 1) q += 16;
        v = f(f(f(half(b, 0) * sc) * q) - f(half(b, 2) * m));
        break;
      }
      case 'q6_k': {
        const h = i >> 7, k = (i & 127) >> 5, l = i & 31;
        const low = (b[64 * h + 32 * (k & 1) + l]! >> (4 * (k >> 1))) & 15;
        const high = (b[128 + 32 * h + l]! >> (2 * k)) & 3;
        v = f(f(half(b, 208) * i8(b[192 + (i >> 4)]!)) * ((low | (high << 4)) - 32));
        break;
      }
    }
    out[i] = v;
  }
}

describe('GGUF formats: dequantization of arbitrary blocks matches an independent decoder', () => {
  const rng = new Rng(5);
  for (const format of GGML) {
    it(format, () => {
      const [n, bytes] = BLOCK[format];
      const rows = 3;
      const cols = n * 4;
      const data = new Uint8Array(rows * (cols / n) * bytes);
      for (let i = 0; i < data.length; i++) data[i] = rng.int(256);
      // finite f16 scales: clear the top exponent bit of every f16 field
      const halves: Record<Ggml, number[]> = {
        q4_0: [0], q4_1: [0, 2], q5_0: [0], q5_1: [0, 2], q8_0: [0], q2_k: [80, 82], q3_k: [108], q4_k: [0, 2], q5_k: [0, 2], q6_k: [208],
      };
      for (let b = 0; b < data.length; b += bytes) for (const o of halves[format]) data[b + o + 1]! &= 0xbf;
      const q = new QuantizedTensor({ format, shape: [rows, cols], data });
      const want = new Float32Array(rows * cols);
      for (let b = 0; b < data.length / bytes; b++) decodeBlock(format, data.subarray(b * bytes, (b + 1) * bytes), want.subarray(b * n, (b + 1) * n));
      for (const kernel of HERE) {
        sameBytes(dequantizeSync(q, { kernel }).data, want, `${kernel} kernel`);
      }
    });
  }
});

// ---------------------------------------------------------------------------
// Options, shapes, edge values.

describe('GGUF formats: K-quants and Q5 options, shapes and non-finite values', () => {
  const rng = new Rng(17);
  const t = Tensor.from(rng.normals(4 * 1024), [2, 2, 1024]);

  it('K-quant rows must be a multiple of 256 values (ERR_SHAPE); Q5 rows a multiple of 32', () => {
    const x = Tensor.from(rng.normals(2 * 288), [2, 288]);
    for (const format of KQUANTS) {
      expect(() => quantizeSync(x, { format })).to.throw(/last dimension 288 is not a multiple of .* blocks of 256/).with.property('code', 'ERR_SHAPE');
      expect(() => new QuantizedTensor({ format, shape: [2, 288], data: new Uint8Array(100) })).to.throw().with.property('code', 'ERR_SHAPE');
    }
    for (const format of ['q5_0', 'q5_1'] as const) {
      expect(quantizeSync(x, { format }).data.byteLength).to.equal(2 * 9 * BLOCK[format][1]);
      expect(() => quantizeSync(Tensor.from(new Float32Array(40), [1, 40]), { format })).to.throw(/multiple of/).with.property('code', 'ERR_SHAPE');
    }
  });

  it('reports block sizes, bits per weight and symmetry', () => {
    const bpw: Record<(typeof NEW)[number], number> = { q5_0: 5.5, q5_1: 6, q2_k: 2.625, q3_k: 3.4375, q4_k: 4.5, q5_k: 5.5, q6_k: 6.5625 };
    for (const format of NEW) {
      const q = quantizeSync(t, { format });
      expect(q.groupSize, format).to.equal(BLOCK[format][0]);
      expect(q.byteLength, format).to.equal((t.size / BLOCK[format][0]) * BLOCK[format][1]);
      expect(q.bitsPerWeight, format).to.equal(bpw[format]);
      expect(q.symmetric, format).to.equal(['q5_0', 'q3_k', 'q6_k'].includes(format));
      expect(q.shape).to.deep.equal([2, 2, 1024]);
    }
  });

  it("rejects options that do not apply: groupSize, search 'mse', a wrong-length importance", () => {
    for (const format of NEW) {
      expect(() => quantizeSync(t, { format, search: 'mse' })).to.throw(/search: 'mse' is implemented for q4_0, q4_1, q8_0, int4 and int8/).with.property('code', 'ERR_VALUE');
      expect(() => quantizeSync(t, { format, groupSize: 64 })).to.throw(/fixed blocks of/).with.property('code', 'ERR_VALUE');
      expect(() => quantizeSync(t, { format, importance: new Float32Array(512) })).to.throw(/has 512 values/).with.property('code', 'ERR_SHAPE');
      expect(() => quantizeSync(t, { format, importance: new Float32Array(1024).fill(-1) })).to.throw(/must be finite and >= 0/).with.property('code', 'ERR_VALUE');
    }
  });

  it("importance on GGUF formats is llama.cpp's weighted quantizer; search: 'mse' keeps slimtensor's own (q4_0/q4_1)", () => {
    const importance = Float32Array.from({ length: 1024 }, (_, c) => (c % 4 === 0 ? 20 : 0.05));
    for (const format of ['q4_0', 'q4_1'] as const) {
      const weighted = quantizeSync(t, { format, importance });
      const mse = quantizeSync(t, { format, importance, search: 'mse' });
      expect(Buffer.compare(bytesOf(weighted.data), bytesOf(mse.data)), format).to.not.equal(0);
      expect(Buffer.compare(bytesOf(weighted.data), bytesOf(quantizeSync(t, { format }).data)), format).to.not.equal(0);
    }
    // Q8_0 ignores it, as ggml does
    sameQuantized(quantizeSync(t, { format: 'q8_0', importance }), quantizeSync(t, { format: 'q8_0' }), 'q8_0');
  });

  it('importance lowers the error it weighs, for every weighted format', () => {
    const x = Tensor.from(rng.normals(32 * 1024), [32, 1024]);
    const importance = Float32Array.from({ length: 1024 }, (_, c) => (c % 4 === 0 ? 20 : 0.05));
    const weightedError = (q: QuantizedTensor) => {
      const d = dequantizeSync(q).data as Float32Array;
      let s = 0;
      for (let i = 0; i < d.length; i++) s += importance[i % 1024]! * ((x.data[i] as number) - d[i]!) ** 2;
      return s;
    };
    for (const format of GGML) {
      if (format === 'q8_0') continue;
      const plain = weightedError(quantizeSync(x, { format }));
      const aware = weightedError(quantizeSync(x, { format, importance }));
      expect(aware, format).to.be.below(plain * 0.9);
    }
  });

  it('more bits, lower RMSE on N(0,1); Q4_K lands at ggml\'s 0.0713', () => {
    const x = Tensor.from(rng.normals(64 * 1024), [64, 1024]);
    const rmse = (format: QuantFormat) => quantizationErrorSync(x, quantizeSync(x, { format })).rmse;
    const r = KQUANTS.map(rmse);
    for (let i = 1; i < r.length; i++) expect(r[i], KQUANTS[i]).to.be.below(r[i - 1]!);
    // ggml's reference Q4_K gives 0.0713 on 4096×4096 N(0,1) (bench/quantize.ts measures it)
    expect(r[2]).to.be.within(0.070, 0.0725);
    expect(rmse('q5_1')).to.be.below(rmse('q5_0'));
    expect(rmse('q5_0')).to.be.below(rmse('q4_0'));
  });

  it('NaN/Inf: named by index across threads, or quantized as zeros with nonFinite: zero', () => {
    const x = rng.normals(8 * 512);
    x[5 * 512 + 300] = NaN;
    x[6 * 512 + 3] = Infinity;
    const importance = new Float32Array(512).fill(1);
    const clean = x.slice();
    clean[5 * 512 + 300] = 0;
    clean[6 * 512 + 3] = 0;
    for (const format of NEW) {
      for (const opts of [{}, { importance }]) {
        for (const threads of [1, 2]) {
          expect(() => quantizeSync(Tensor.from(x, [8, 512]), { format, threads, ...opts }))
            .to.throw(/non-finite value \(NaN\) at index \[5, 300\]/)
            .with.property('code', 'ERR_VALUE');
        }
        sameQuantized(
          quantizeSync(Tensor.from(x, [8, 512]), { format, nonFinite: 'zero', ...opts }),
          quantizeSync(Tensor.from(clean, [8, 512]), { format, ...opts }),
          `${format} nonFinite zero`,
        );
      }
    }
  });

  it('huge values (beyond f16) quantize like the reference on every kernel', () => {
    const x = Float32Array.from({ length: 4 * 256 }, (_, i) => (i % 5 === 0 ? 3e38 : i % 7 === 0 ? -1e30 : i % 3 === 0 ? 1e-30 : 1));
    const tt = Tensor.from(x, [4, 256]);
    for (const format of NEW) {
      const ref = quantizeSync(tt, { format, kernel: 'reference' });
      for (const kernel of HERE.filter((k) => k !== 'reference')) {
        sameQuantized(quantizeSync(tt, { format, kernel }), ref, `${format} ${kernel}`);
      }
    }
  });

  it('threads, async and out reuse do not change the bytes', async () => {
    const importance = Float32Array.from({ length: 1024 }, () => rng.uniform());
    for (const format of NEW) {
      for (const opts of [{ format }, { format, importance }] as QuantizeOptions[]) {
        const one = quantizeSync(t, { ...opts, threads: 1 });
        sameQuantized(quantizeSync(t, { ...opts, threads: 2 }), one, `${format} threads`);
        sameQuantized(await quantize(t, opts), one, `${format} async`);
        const out = quantizeSync(Tensor.from(rng.normals(t.size), t.shape), opts);
        expect(await quantize(t, { ...opts, out })).to.equal(out);
        sameQuantized(out, one, `${format} out`);
        const d = dequantizeSync(one);
        const into = Tensor.zeros(t.shape, 'f32');
        expect(await dequantize(one, { out: into })).to.equal(into);
        sameBytes(into.data, d.data, `${format} dequantize out`);
      }
    }
  });

  it('quantizationError agrees with the dequantized tensor', () => {
    for (const format of NEW) {
      const q = quantizeSync(t, { format });
      const d = dequantizeSync(q).data as Float32Array;
      let se = 0;
      for (let i = 0; i < d.length; i++) se += ((t.data[i] as number) - d[i]!) ** 2;
      expect(quantizationErrorSync(t, q).rmse, format).to.be.closeTo(Math.sqrt(se / d.length), 1e-12);
    }
  });
});
