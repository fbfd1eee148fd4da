// GPTQ against an independent f64 implementation written here (the paper's
// Algorithm 1 without lazy batches: explicit inverse of the damped Hessian,
// its Cholesky factor, one column at a time; every GPTQ format: int4, int8,
// q4_0, q4_1, q8_0), against quantize() (a diagonal
// Hessian makes GPTQ round-to-nearest), and against the layer-output error
// computed here from the dequantized weights.
import { expect } from 'chai';
import { dequantizeSync, f16ToF32, f32ToF16, gptq, gptqSync, quantizeSync, Tensor, type GptqOptions, type QuantFormat, type QuantizedTensor } from '../lib/index';
import { bytesOf, rejected, thrown } from './support/assert';
import { code as ctCode, groupParams } from './support/ct-oracle';
import { Rng } from './support/random';
import { kernelsHere } from './support/skip';

const fr = Math.fround;

/** Calibration inputs whose columns are correlated (AR(1) along the row) and unevenly scaled; H = XᵀX. */
function hessian(rng: Rng, cols: number, tokens: number, spread: number): Float32Array {
  const scale = Array.from({ length: cols }, () => Math.exp(spread * rng.normal()));
  const h = new Float64Array(cols * cols);
  const x = new Float64Array(cols);
  for (let t = 0; t < tokens; t++) {
    let v = rng.normal();
    for (let j = 0; j < cols; j++) {
      v = 0.9 * v + rng.normal();
      x[j] = v * (scale[j] as number);
    }
    for (let i = 0; i < cols; i++) {
      const xi = x[i] as number;
      for (let j = 0; j < cols; j++) h[i * cols + j] += xi * (x[j] as number);
    }
  }
  return Float32Array.from(h);
}

/** One group's coder of the format, from the published formulas (f32 arithmetic where the format computes in f32). */
type Coder = (x: number) => number; // returns the dequantized value
function coderFor(format: QuantFormat, g: Float64Array, symmetric: boolean): Coder {
  const trunc15 = (v: number): number => (v >= 15 ? 15 : v > 0 ? Math.trunc(v) : 0);
  const h = (v: number): number => f16ToF32(f32ToF16(v));
  if (format === 'q4_0') {
    let amax = 0;
    let max = 0;
    for (const v of g) if (Math.abs(v) > amax) { amax = Math.abs(v); max = v; }
    const d = fr(max / -8);
    const inv = d !== 0 ? fr(1 / d) : 0;
    return (x) => (trunc15(fr(fr(x * inv) + 8.5)) - 8) * h(d);
  }
  if (format === 'q4_1') {
    let min = Infinity;
    let max = -Infinity;
    for (const v of g) {
      min = Math.min(min, v);
      max = Math.max(max, v);
    }
    const d = fr((max - min) / 15);
    const inv = d !== 0 ? fr(1 / d) : 0;
    return (x) => fr(fr(trunc15(fr(fr(fr(x - min) * inv) + 0.5)) * h(d)) + h(min));
  }
  if (format === 'q8_0') {
    let amax = 0;
    for (const v of g) amax = Math.max(amax, Math.abs(v));
    const d = fr(amax / 127);
    const inv = d !== 0 ? fr(1 / d) : 0;
    return (x) => {
      const v = fr(x * inv);
      const r = Math.sign(v) * Math.round(Math.abs(v)); // half away from zero
      return Math.min(127, Math.max(-128, r)) * h(d);
    };
  }
  const bits = format === 'int4' ? 4 : 8;
  const p = groupParams(g, bits, symmetric, 'f16');
  return (x) => fr((ctCode(fr(x), p.scale, p.zero, bits) - p.zero) * p.scale);
}

/** Upper Cholesky factor of a symmetric positive definite matrix (f64): A = RᵀR. */
function cholUpper(a: Float64Array, n: number): Float64Array {
  const r = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      let s = a[i * n + j] as number;
      for (let k = 0; k < i; k++) s -= (r[k * n + i] as number) * (r[k * n + j] as number);
      if (i === j) {
        if (!(s > 0)) throw new Error('not positive definite');
        r[i * n + i] = Math.sqrt(s);
      } else {
        r[i * n + j] = s / (r[i * n + i] as number);
      }
    }
  }
  return r;
}

/** Inverse of a symmetric positive definite matrix through its Cholesky factor (solves RᵀR·X = I column by column). */
function spdInverse(a: Float64Array, n: number): Float64Array {
  const r = cholUpper(a, n);
  const inv = new Float64Array(n * n);
  const y = new Float64Array(n);
  for (let c = 0; c < n; c++) {
    for (let i = 0; i < n; i++) {
      let s = i === c ? 1 : 0;
      for (let k = 0; k < i; k++) s -= (r[k * n + i] as number) * (y[k] as number);
      y[i] = s / (r[i * n + i] as number);
    }
    for (let i = n - 1; i >= 0; i--) {
      let s = y[i] as number;
      for (let k = i + 1; k < n; k++) s -= (r[i * n + k] as number) * (inv[k * n + c] as number);
      inv[i * n + c] = s / (r[i * n + i] as number);
    }
  }
  return inv;
}

interface RefOptions {
  format: QuantFormat;
  group: number;
  symmetric: boolean;
  actOrder: boolean;
  dampening: number;
}

/** The dequantized GPTQ weights [rows, cols], f64 throughout; `given`: each group's coder (row-major), else coderFor's from the weights. */
function referenceGptq(w32: Float32Array, h32: Float32Array, rows: number, cols: number, o: RefOptions, given?: Coder[]): Float64Array {
  const h = new Float64Array(cols * cols);
  for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) h[i * cols + j] = ((h32[i * cols + j] as number) + (h32[j * cols + i] as number)) / 2;
  const w = Float64Array.from(w32);
  let mean = 0;
  for (let i = 0; i < cols; i++) {
    if (h[i * cols + i] === 0) {
      h[i * cols + i] = 1;
      for (let r = 0; r < rows; r++) w[r * cols + i] = 0;
    }
    mean += (h[i * cols + i] as number) / cols;
  }
  // Static groups from the weights before any update.
  const coders: Coder[] = given ?? [];
  for (let r = 0; r < rows && given === undefined; r++) {
    for (let g = 0; g < cols / o.group; g++) coders.push(coderFor(o.format, w.subarray(r * cols + g * o.group, r * cols + (g + 1) * o.group), o.symmetric));
  }
  const perm = Array.from({ length: cols }, (_, i) => i);
  if (o.actOrder) perm.sort((a, b) => (h[b * cols + b] as number) - (h[a * cols + a] as number) || a - b);
  const hp = new Float64Array(cols * cols);
  for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) hp[i * cols + j] = (h[perm[i]! * cols + perm[j]!] as number) + (i === j ? o.dampening * mean : 0);
  const u = cholUpper(spdInverse(hp, cols), cols); // H⁻¹ = UᵀU
  const out = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const x = Float64Array.from(perm, (p) => w[r * cols + p] as number);
    for (let i = 0; i < cols; i++) {
      const col = perm[i] as number;
      const q = coders[r * (cols / o.group) + Math.floor(col / o.group)]!(x[i] as number);
      out[r * cols + col] = q;
      const e = ((x[i] as number) - q) / (u[i * cols + i] as number);
      for (let j = i + 1; j < cols; j++) x[j] -= e * (u[i * cols + j] as number);
    }
  }
  return out;
}

/** tr((W − Q)·H·(W − Q)ᵀ) in f64. */
function layerError(w: Float32Array, q: ArrayLike<number>, h: Float32Array, rows: number, cols: number, damp = 0): number {
  let total = 0;
  const e = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) e[j] = (w[r * cols + j] as number) - (q[r * cols + j] as number);
    for (let i = 0; i < cols; i++) {
      let s = damp * (e[i] as number);
      for (let j = 0; j < cols; j++) s += (h[i * cols + j] as number) * (e[j] as number);
      total += (e[i] as number) * s;
    }
  }
  return total;
}

function deq(q: QuantizedTensor): Float32Array {
  return dequantizeSync(q).data as Float32Array;
}

function rel(a: number, b: number): number {
  return Math.abs(a - b) / Math.abs(b);
}

/** A K-quant block's layout, from ggml-common.h: bytes, values per sub-block, and the sub-blocks' stored scale d and offset m (x ≈ d·q − m; symmetric: m = 0, q signed). */
const K_LAYOUT = {
  q2_k: { bytes: 84, sub: 16, nmax: 3, sym: false },
  q3_k: { bytes: 110, sub: 16, nmax: 3, sym: true }, // l in [-4, 3]
  q4_k: { bytes: 144, sub: 32, nmax: 15, sym: false },
  q5_k: { bytes: 176, sub: 32, nmax: 31, sym: false },
  q6_k: { bytes: 210, sub: 16, nmax: 31, sym: true }, // l in [-32, 31]
} as const;
type KFormat = keyof typeof K_LAYOUT;
const K_FORMATS = Object.keys(K_LAYOUT) as KFormat[];

function kSubParams(format: KFormat, y: Uint8Array): { d: number[]; m: number[] } {
  const f16 = (o: number): number => f16ToF32((y[o] as number) | ((y[o + 1] as number) << 8));
  const d: number[] = [];
  const m: number[] = [];
  if (format === 'q2_k') {
    for (let j = 0; j < 16; j++) {
      d.push(fr(f16(80) * ((y[j] as number) & 15)));
      m.push(fr(f16(82) * ((y[j] as number) >> 4)));
    }
  } else if (format === 'q3_k') {
    const s = y.subarray(96, 108);
    for (let j = 0; j < 16; j++) {
      const lo = j < 8 ? (s[j] as number) & 15 : (s[j - 8] as number) >> 4;
      const hi = ((s[8 + (j % 4)] as number) >> (2 * Math.floor(j / 4))) & 3;
      d.push(fr(f16(108) * ((lo | (hi << 4)) - 32)));
      m.push(0);
    }
  } else if (format === 'q6_k') {
    for (let j = 0; j < 16; j++) {
      d.push(fr(f16(208) * (((y[192 + j] as number) << 24) >> 24)));
      m.push(0);
    }
  } else {
    const s = y.subarray(4, 16);
    for (let j = 0; j < 8; j++) {
      const sc = j < 4 ? (s[j] as number) & 63 : ((s[j + 4] as number) & 15) | (((s[j - 4] as number) >> 6) << 4);
      const mn = j < 4 ? (s[j + 4] as number) & 63 : ((s[j + 4] as number) >> 4) | (((s[j] as number) >> 6) << 4);
      d.push(fr(f16(0) * sc));
      m.push(fr(f16(2) * mn));
    }
  }
  return { d, m };
}

/** Every sub-block's parameters of a K-quant tensor, row-major. */
function kParams(format: KFormat, q: QuantizedTensor): { d: number[]; m: number[] } {
  const data = bytesOf(q.data);
  const b = K_LAYOUT[format].bytes;
  const out = { d: [] as number[], m: [] as number[] };
  for (let o = 0; o < data.length; o += b) {
    const p = kSubParams(format, data.subarray(o, o + b));
    out.d.push(...p.d);
    out.m.push(...p.m);
  }
  return out;
}

/** The K-quant coders of the stored parameters: codes rounded to nearest and clamped to the format's range; what to_float reads back. */
function kCoders(format: KFormat, p: { d: number[]; m: number[] }): Coder[] {
  const { nmax, sym } = K_LAYOUT[format];
  return p.d.map((d, i) => {
    const m = p.m[i] as number;
    if (sym) return (x: number) => (d === 0 ? fr(d * -(nmax + 1)) : fr(d * Math.min(nmax, Math.max(-(nmax + 1), Math.round(x / d)))));
    return (x: number) => (d === 0 ? fr(-m) : fr(fr(d * Math.min(nmax, Math.max(0, Math.round((x + m) / d)))) - m));
  });
}

function diagonalOf(h: Float32Array, n: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => h[i * n + i] as number);
}

describe('gptq', () => {
  const rng = new Rng(1616);
  const small = { rows: 16, cols: 64 };
  const mid = { rows: 32, cols: 128 };
  const hSmall = hessian(rng, small.cols, 256, 0.3);
  const hMid = hessian(rng, mid.cols, 512, 0.8);
  const wSmall = rng.normals(small.rows * small.cols);
  const wMid = rng.normals(mid.rows * mid.cols, 0.05);

  const cases: { name: string; shape: typeof small; w: Float32Array; h: Float32Array; o: RefOptions }[] = [
    { name: 'int4 g32 symmetric 16×64', shape: small, w: wSmall, h: hSmall, o: { format: 'int4', group: 32, symmetric: true, actOrder: false, dampening: 0.01 } },
    { name: 'int4 g32 asymmetric act-order 32×128', shape: mid, w: wMid, h: hMid, o: { format: 'int4', group: 32, symmetric: false, actOrder: true, dampening: 0.01 } },
    { name: 'int4 per channel 32×128', shape: mid, w: wMid, h: hMid, o: { format: 'int4', group: 128, symmetric: true, actOrder: false, dampening: 0.01 } },
    { name: 'int8 g64 act-order 16×64', shape: small, w: wSmall, h: hSmall, o: { format: 'int8', group: 64, symmetric: true, actOrder: true, dampening: 0.05 } },
    { name: 'q4_0 32×128', shape: mid, w: wMid, h: hMid, o: { format: 'q4_0', group: 32, symmetric: true, actOrder: false, dampening: 0.01 } },
    { name: 'q4_0 act-order 32×128', shape: mid, w: wMid, h: hMid, o: { format: 'q4_0', group: 32, symmetric: true, actOrder: true, dampening: 0.01 } },
    { name: 'q4_1 act-order 32×128', shape: mid, w: wMid, h: hMid, o: { format: 'q4_1', group: 32, symmetric: true, actOrder: true, dampening: 0.01 } },
    { name: 'q8_0 16×64', shape: small, w: wSmall, h: hSmall, o: { format: 'q8_0', group: 32, symmetric: true, actOrder: false, dampening: 0.01 } },
  ];

  for (const c of cases) {
    it(`${c.name}: the codes and layer-output error of an independent f64 GPTQ, below RTN's`, () => {
      const { rows, cols } = c.shape;
      const ct = c.o.format.startsWith('int');
      const opts: GptqOptions = { format: c.o.format, actOrder: c.o.actOrder, dampening: c.o.dampening, blockSize: 32, scaleDtype: ct ? 'f16' : undefined };
      if (ct) Object.assign(opts, { groupSize: c.o.group, symmetric: c.o.symmetric });
      const r = gptqSync(Tensor.from(c.w, [rows, cols]), Tensor.from(c.h, [cols, cols]), opts);
      const got = deq(r.quantized);
      const ref = referenceGptq(c.w, c.h, rows, cols, c.o);
      let same = 0;
      for (let i = 0; i < got.length; i++) if (got[i] === fr(ref[i] as number)) same++;
      const errGot = layerError(c.w, got, c.h, rows, cols);
      const errRef = layerError(c.w, ref, c.h, rows, cols);
      // f32 sweeps against f64 could flip a code that sits on a rounding
      // boundary (its row diverges from there); on these inputs none does,
      // and the layer-output error must agree either way.
      expect(same, 'codes equal to the reference').to.equal(got.length);
      expect(rel(errGot, errRef), `error ${errGot} vs reference ${errRef}`).to.be.lessThan(0.01);
      // The statistics: the error of the returned tensor, and of quantize()'s.
      expect(rel(r.stats.gptqError, errGot)).to.be.lessThan(1e-4);
      const rtn = quantizeSync(Tensor.from(c.w, [rows, cols]), { format: c.o.format, ...(ct ? { groupSize: c.o.group, symmetric: c.o.symmetric, scaleDtype: 'f16' as const } : {}) });
      const errRtn = layerError(c.w, deq(rtn), c.h, rows, cols);
      expect(rel(r.stats.rtnError, errRtn)).to.be.lessThan(1e-4);
      // GPTQ's own accounting: the error for the damped H.
      const damp = r.stats.damp;
      let mean = 0;
      for (let i = 0; i < cols; i++) mean += (c.h[i * cols + i] as number) / cols;
      expect(rel(damp, c.o.dampening * mean)).to.be.lessThan(1e-9);
      expect(rel(r.stats.dampedError, layerError(c.w, got, c.h, rows, cols, damp))).to.be.lessThan(1e-3);
      // Scales are quantize()'s (static groups from the original weights).
      if (ct) {
        expect(bytesOf(r.quantized.scales!.data)).to.deep.equal(bytesOf(rtn.scales!.data));
        if (!c.o.symmetric) expect(bytesOf(r.quantized.zeros!.data)).to.deep.equal(bytesOf(rtn.zeros!.data));
      }
      expect(errGot).to.be.lessThan(0.7 * errRtn);
    });
  }

  describe('K-quants (super-blocks of 256)', () => {
    const rows = 8;
    const cols = 512;
    const hK = hessian(new Rng(256), cols, 600, 0.5);
    const wK = new Rng(257).normals(rows * cols, 0.05);
    for (const format of K_FORMATS) {
      for (const imatrix of format === 'q4_k' ? [true, false] : [true]) {
        const actOrder = format === 'q2_k' || format === 'q5_k';
        it(`${format}${imatrix ? '' : ' (imatrix: false)'}${actOrder ? ' act-order' : ''}: quantize()'s super-block parameters, the codes of an independent f64 GPTQ on them, below RTN's error`, () => {
          const W = Tensor.from(wK, [rows, cols]);
          const r = gptqSync(W, Tensor.from(hK, [cols, cols]), { format, blockSize: 64, imatrix, actOrder });
          // The parameters: quantize()'s, importance diag(H) (or none).
          const rtn = quantizeSync(W, { format, ...(imatrix ? { importance: diagonalOf(hK, cols) } : {}) });
          const params = kParams(format, r.quantized);
          expect(params).to.deep.equal(kParams(format, rtn));
          // The codes: an f64 GPTQ sweep rounding to those parameters' grids.
          const got = deq(r.quantized);
          const ref = referenceGptq(wK, hK, rows, cols, { format, group: K_LAYOUT[format].sub, symmetric: true, actOrder, dampening: 0.01 }, kCoders(format, params));
          let same = 0;
          for (let i = 0; i < got.length; i++) if (got[i] === fr(ref[i] as number)) same++;
          expect(same, 'values equal to the reference (dequantize of the output = the dequantized codes)').to.equal(got.length);
          const errGot = layerError(wK, got, hK, rows, cols);
          expect(rel(errGot, layerError(wK, ref, hK, rows, cols))).to.be.lessThan(0.01);
          expect(rel(r.stats.gptqError, errGot)).to.be.lessThan(1e-4);
          const errRtn = layerError(wK, deq(rtn), hK, rows, cols);
          expect(rel(r.stats.rtnError, errRtn)).to.be.lessThan(1e-4);
          expect(errGot).to.be.lessThan(0.7 * errRtn);
        });
      }
    }

    it('a diagonal Hessian gives quantize() byte for byte (importance diag(H), or none with imatrix: false; act-order too)', () => {
      const diag = new Float32Array(cols * cols);
      for (let i = 0; i < cols; i++) diag[i * cols + i] = 1 + (i % 5) * (i % 3);
      const W = Tensor.from(Uint16Array.from(wK, (v) => f32ToF16(v)), [rows, cols], 'f16');
      for (const format of K_FORMATS) {
        for (const actOrder of [false, true]) {
          const what = `${format} actOrder ${actOrder}`;
          const g = gptqSync(W, Tensor.from(diag, [cols, cols]), { format, actOrder });
          expect(bytesOf(g.quantized.data), what).to.deep.equal(bytesOf(quantizeSync(W, { format, importance: diagonalOf(diag, cols) }).data));
          const plain = gptqSync(W, Tensor.from(diag, [cols, cols]), { format, actOrder, imatrix: false });
          expect(bytesOf(plain.quantized.data), `${what} imatrix: false`).to.deep.equal(bytesOf(quantizeSync(W, { format }).data));
        }
      }
    });

    it('bad input: rows not a multiple of 256, formats gptq does not write, imatrix off the K-quants', () => {
      const W = Tensor.from(wSmall, [16, 64]);
      const H = Tensor.from(hSmall, [64, 64]);
      expect(thrown(() => gptqSync(W, H, { format: 'q4_k' })).message).to.match(/256/);
      expect(thrown(() => gptqSync(W, H, { format: 'q5_0' })).code).to.equal('ERR_UNSUPPORTED');
      expect(thrown(() => gptqSync(W, H, { format: 'q4_0', imatrix: true })).message).to.match(/options\.imatrix applies to the K-quants/);
      expect(thrown(() => gptqSync(Tensor.from(wK, [rows, cols]), Tensor.from(hK, [cols, cols]), { format: 'q6_k', imatrix: 1 } as unknown as GptqOptions)).code).to.equal('ERR_VALUE');
    });
  });

  it('a diagonal Hessian gives quantize() byte for byte (every format, f16 weights, bf16 scales)', () => {
    const { rows, cols } = mid;
    const diag = new Float32Array(cols * cols);
    for (let i = 0; i < cols; i++) diag[i * cols + i] = 1 + (i % 7);
    const w16 = Tensor.from(Uint16Array.from(wMid, (v) => f32ToF16(v)), [rows, cols], 'f16');
    const variants: { format: QuantFormat; groupSize?: number | 'channel'; symmetric?: boolean; scaleDtype?: 'bf16' | 'f32' }[] = [
      { format: 'q4_0' },
      { format: 'q4_1' },
      { format: 'q8_0' },
      { format: 'int4', groupSize: 32, symmetric: false, scaleDtype: 'bf16' },
      { format: 'int4', groupSize: 'channel' },
      { format: 'int8', groupSize: 64, symmetric: false, scaleDtype: 'f32' },
    ];
    for (const v of variants) {
      for (const actOrder of [false, true]) {
        const g = gptqSync(w16, Tensor.from(diag, [cols, cols]), { ...v, actOrder }).quantized;
        const q = quantizeSync(w16, v);
        const what = `${JSON.stringify(v)} actOrder ${actOrder}`;
        expect(bytesOf(g.data), what).to.deep.equal(bytesOf(q.data));
        if (q.scales) expect(bytesOf(g.scales!.data), what).to.deep.equal(bytesOf(q.scales.data));
        if (q.zeros) expect(bytesOf(g.zeros!.data), what).to.deep.equal(bytesOf(q.zeros.data));
      }
    }
  });

  it('act-order lowers the error where a few input channels dominate', () => {
    const cols = 128;
    const h = hessian(new Rng(7), cols, 512, 1.5);
    const w = new Rng(8).normals(32 * cols, 0.05);
    const run = (actOrder: boolean): number => gptqSync(Tensor.from(w, [32, cols]), Tensor.from(h, [cols, cols]), { format: 'int4', groupSize: 32, actOrder }).stats.gptqError;
    expect(run(true)).to.be.lessThan(run(false));
  });

  it('the same bits for every thread count; the block size moves only float order', () => {
    const { rows, cols } = mid;
    const W = Tensor.from(wMid, [rows, cols]);
    const H = Tensor.from(hMid, [cols, cols]);
    const one = gptqSync(W, H, { format: 'q4_1', threads: 1 });
    const two = gptqSync(W, H, { format: 'q4_1', threads: 2 });
    expect(bytesOf(two.quantized.data)).to.deep.equal(bytesOf(one.quantized.data));
    expect(two.stats).to.deep.equal(one.stats);
    for (const blockSize of [1, 7, 128, 1000]) {
      const b = gptqSync(W, H, { format: 'q4_1', blockSize });
      expect(rel(b.stats.gptqError, one.stats.gptqError), `blockSize ${blockSize}`).to.be.lessThan(0.01);
    }
  });

  for (const kernel of kernelsHere('gptq', ['reference', 'avx2', 'avx512'] as const)) {
    it(`GEMM kernel '${kernel}' gives the same bits as auto`, () => {
      const { rows, cols } = small;
      const W = Tensor.from(wSmall, [rows, cols]);
      const H = Tensor.from(hSmall, [cols, cols]);
      const a = gptqSync(W, H, { format: 'int4', groupSize: 32, blockSize: 16 });
      const b = gptqSync(W, H, { format: 'int4', groupSize: 32, blockSize: 16, kernel });
      expect(bytesOf(b.quantized.data)).to.deep.equal(bytesOf(a.quantized.data));
      expect(b.stats).to.deep.equal(a.stats);
    });
  }

  it('async gives the sync result; measure: false skips the two errors', async () => {
    const { rows, cols } = small;
    const W = Tensor.from(wSmall, [rows, cols]);
    const H = Tensor.from(hSmall, [cols, cols]);
    const s = gptqSync(W, H, { format: 'q8_0' });
    const a = await gptq(W, H, { format: 'q8_0' });
    expect(bytesOf(a.quantized.data)).to.deep.equal(bytesOf(s.quantized.data));
    expect(a.stats).to.deep.equal(s.stats);
    const m = gptqSync(W, H, { format: 'q8_0', measure: false });
    expect(bytesOf(m.quantized.data)).to.deep.equal(bytesOf(s.quantized.data));
    expect(m.stats.gptqError).to.be.NaN;
    expect(m.stats.rtnError).to.be.NaN;
    expect(m.stats.dampedError).to.equal(s.stats.dampedError);
  });

  it('sweep: false is round-to-nearest (quantize()) with its error measured: no sweep, no definiteness needed', () => {
    const { rows, cols } = mid;
    const W = Tensor.from(wMid, [rows, cols]);
    for (const v of [{ format: 'q4_1' as const }, { format: 'int4' as const, groupSize: 32, symmetric: false, scaleDtype: 'f16' as const }]) {
      const full = gptqSync(W, Tensor.from(hMid, [cols, cols]), v);
      const r = gptqSync(W, Tensor.from(hMid, [cols, cols]), { ...v, sweep: false });
      const q = quantizeSync(W, v);
      expect(bytesOf(r.quantized.data)).to.deep.equal(bytesOf(q.data));
      if (q.scales) expect(bytesOf(r.quantized.scales!.data)).to.deep.equal(bytesOf(q.scales.data));
      expect(rel(r.stats.rtnError, layerError(wMid, deq(q), hMid, rows, cols))).to.be.lessThan(1e-4);
      expect(rel(r.stats.rtnError, full.stats.rtnError)).to.be.lessThan(1e-6);
      expect(r.stats.gptqError).to.equal(r.stats.rtnError);
      expect(r.stats.dampedError).to.be.NaN;
    }
    // Rank 8, no dampening: the sweep refuses it, plain rounding does not need it.
    const lowRank = hessian(new Rng(3), cols, 8, 0);
    expect(thrown(() => gptqSync(W, Tensor.from(lowRank, [cols, cols]), { format: 'q4_0', dampening: 0 })).code).to.equal('ERR_VALUE');
    expect(gptqSync(W, Tensor.from(lowRank, [cols, cols]), { format: 'q4_0', dampening: 0, sweep: false }).stats.rtnError).to.be.greaterThan(0);
    expect(thrown(() => gptqSync(W, Tensor.from(hMid, [cols, cols]), { format: 'q4_0', sweep: 1 } as unknown as GptqOptions)).message).to.match(/options\.sweep must be a boolean/);
  });

  it('dead input columns (H_ii = 0) are quantized as 0 and cost nothing', () => {
    const { rows, cols } = small;
    const h = Float32Array.from(hSmall);
    for (const d of [3, 40]) for (let i = 0; i < cols; i++) h[d * cols + i] = h[i * cols + d] = 0;
    const r = gptqSync(Tensor.from(wSmall, [rows, cols]), Tensor.from(h, [cols, cols]), { format: 'int4', groupSize: 32, symmetric: false });
    expect(r.stats.deadColumns).to.equal(2);
    const got = deq(r.quantized);
    for (let row = 0; row < rows; row++) for (const d of [3, 40]) expect(got[row * cols + d]).to.equal(0);
    const ref = referenceGptq(wSmall, h, rows, cols, { format: 'int4', group: 32, symmetric: false, actOrder: false, dampening: 0.01 });
    expect(rel(r.stats.gptqError, layerError(wSmall, ref, h, rows, cols))).to.be.lessThan(0.01);
  });

  it('bad input: shapes, dtypes, non-finite values, a Hessian that is not positive definite', () => {
    const W = Tensor.from(wSmall, [16, 64]);
    const H = Tensor.from(hSmall, [64, 64]);
    expect(thrown(() => gptqSync(Tensor.from(wSmall, [1024]), H, { format: 'q4_0' })).code).to.equal('ERR_SHAPE');
    expect(thrown(() => gptqSync(W, Tensor.from(hSmall.subarray(0, 64 * 32), [64, 32]), { format: 'q4_0' })).message).to.match(/hessian must be \[64, 64\]/);
    expect(thrown(() => gptqSync(W, Tensor.from(hSmall.subarray(0, 32 * 32), [32, 32]), { format: 'q4_0' })).code).to.equal('ERR_SHAPE');
    expect(thrown(() => gptqSync(W, Tensor.from(Uint16Array.from(hSmall, (v) => f32ToF16(v)), [64, 64], 'f16'), { format: 'q4_0' })).code).to.equal('ERR_DTYPE');
    expect(thrown(() => gptqSync(W, H, { format: 'int4', groupSize: 48 })).code).to.equal('ERR_SHAPE');
    expect(thrown(() => gptqSync(W, H, { format: 'q4_0', symmetric: false })).code).to.equal('ERR_VALUE');
    expect(thrown(() => gptqSync(W, H, { format: 'q4_0', dampening: -1 })).code).to.equal('ERR_VALUE');
    expect(thrown(() => gptqSync(W, H, { format: 'q4_0', blockSize: 0 })).code).to.equal('ERR_VALUE');
    expect(thrown(() => gptqSync(W, H, { format: 'q4_0', kernel: 'cuda' })).code).to.equal('ERR_UNSUPPORTED');
    expect(thrown(() => gptqSync(W, H, { format: 'q4_0', groupsize: 32 } as unknown as GptqOptions)).message).to.match(/unknown option "groupsize"/);
    const wBad = Float32Array.from(wSmall);
    wBad[5 * 64 + 9] = NaN;
    expect(thrown(() => gptqSync(Tensor.from(wBad, [16, 64]), H, { format: 'q4_0' })).message).to.match(/weight\[5, 9\] is not finite/);
    const hBad = Float32Array.from(hSmall);
    hBad[2 * 64 + 3] = Infinity;
    expect(thrown(() => gptqSync(W, Tensor.from(hBad, [64, 64]), { format: 'q4_0' })).message).to.match(/hessian\[2, 3\] is not finite/);
    const hNeg = Float32Array.from(hSmall);
    hNeg[7 * 64 + 7] = -1;
    const neg = thrown(() => gptqSync(W, Tensor.from(hNeg, [64, 64]), { format: 'q4_0' }));
    expect(neg.code).to.equal('ERR_VALUE');
    expect(neg.message).to.match(/hessian\[7, 7\]/);
    // Rank 8 (8 tokens) and no dampening: singular.
    const lowRank = hessian(new Rng(3), 64, 8, 0);
    const sing = thrown(() => gptqSync(W, Tensor.from(lowRank, [64, 64]), { format: 'q4_0', dampening: 0 }));
    expect(sing.code).to.equal('ERR_VALUE');
    expect(sing.message).to.match(/not positive definite.*raise options\.dampening/);
    // The default dampening makes it definite.
    expect(gptqSync(W, Tensor.from(lowRank, [64, 64]), { format: 'q4_0' }).stats.gptqError).to.be.greaterThan(0);
    // Indefinite: a large negative eigenvalue no small dampening removes.
    const indef = new Float32Array(64 * 64);
    for (let i = 0; i < 64; i++) for (let j = 0; j < 64; j++) indef[i * 64 + j] = i === j ? 1 : 0.9 * (i < 32 === j < 32 ? 1 : -1) * (i === j + 1 || j === i + 1 ? 1 : 0) * 2;
    expect(thrown(() => gptqSync(W, Tensor.from(indef, [64, 64]), { format: 'q4_0' })).code).to.equal('ERR_VALUE');
    return rejected(gptq(W, H, { format: 'q4_0', dampening: Number.NaN })).then((e) => expect(e.code).to.equal('ERR_VALUE'));
  });
});
