// The sparse room: N:M selection (magnitude and Wanda scores) on every CPU
// kernel against the scalar reference and an independent JS model of the
// rule (ties to the lower column); the 2:4 layouts (meta nibbles of
// FORMATS.md on the raw bytes, kept values, compressed-tensors'
// sparse-24-bitmask) against a JS model built from the dense input; round
// trips for floats and int4/int8 codes; unstructured pruning against a
// sort-based model; spmm24 against the dense GEMM of the decompressed
// weight; the boundary (async = sync, detached buffers, option errors); the
// CUDA build without a device.
import { expect } from 'chai';
import {
  backends,
  bf16ToF32,
  compress24,
  compress24Sync,
  decompress24,
  decompress24Sync,
  dequantizeSync,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  matmulSync,
  prune,
  pruneSync,
  pruneUnstructured,
  pruneUnstructuredSync,
  quantizeSync,
  QuantizedTensor,
  Sparse24Tensor,
  spmm24,
  spmm24Kernel,
  spmm24Sync,
  Tensor,
  type FloatDType,
  type Kernel,
  type PruneOptions,
  type UnstructuredResult,
} from '../lib/index';
import { binding, type NativeArgs, type NativeUnstructured } from '../lib/native';
import { planCompress24, planDecompress24, planPrune, planUnstructured } from '../lib/sparsity';
import { bytesOf, rejected, thrown, transferAway } from './support/assert';
import { unpack } from './support/ct-oracle';
import { requireCudaBuild, type RawAddon, waitForCudaCheck } from './support/cuda-build';
import { Rng } from './support/random';
import { kernelsHere, skip } from './support/skip';

const HW = backends().cpu;
const HAS_AVX2 = HW.kernel !== 'scalar';
const HAS_AVX512 = HW.kernel === 'avx512';
/** The CPU kernels prune/compress24 accept here ('avx512' has no selection loop). */
const SELECT_KERNELS: Kernel[] = kernelsHere('sparsity: prune and compress24 selection', ['reference', 'avx2', 'auto']);
const SPMM_KERNELS: Kernel[] = kernelsHere('sparsity: spmm24', ['reference', 'avx2', 'avx512', 'auto']);
const DTYPES: FloatDType[] = ['f32', 'f16', 'bf16'];

// ---------------------------------------------------------------------------
// Test data

/** `x` stored as `dtype` (f16/bf16 rounded to nearest even by lib/half). */
function tensorOf(x: Float32Array, shape: readonly number[], dtype: FloatDType): Tensor<FloatDType> {
  if (dtype === 'f32') return Tensor.from(x, shape, 'f32');
  const conv = dtype === 'f16' ? f32ToF16 : f32ToBf16;
  return Tensor.from(Uint16Array.from(x, (v) => conv(v)), shape, dtype);
}

/** Element i of a float tensor as a number (f16/bf16 widened exactly). */
function valueAt(t: Tensor, i: number): number {
  const v = t.data[i] as number;
  if (t.dtype === 'f16') return f16ToF32(v);
  if (t.dtype === 'bf16') return bf16ToF32(v);
  return v;
}

/**
 * Weights with many exact ties: signed zeros, small integers and halves of
 * both signs (equal magnitudes), a few normals and large values; the kind of
 * data where a tie rule that differs between kernels shows.
 */
function tiedValues(rng: Rng, n: number): Float32Array {
  const pool = [0, -0, 1, -1, 2, -2, 0.5, -0.5, 3, 60000, -60000];
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = rng.int(4) === 0 ? rng.normal() : (pool[rng.int(pool.length)] as number);
  return x;
}

/** Random leading dims whose product is `rows` (1-, 2- or 3-D shapes). */
function shapeFor(rng: Rng, rows: number, cols: number): number[] {
  if (rows === 1 && rng.int(2) === 0) return [cols];
  if (rows % 2 === 0 && rng.int(2) === 0) return [2, rows / 2, cols];
  return [rows, cols];
}

// ---------------------------------------------------------------------------
// An independent JS model of N:M selection and of the 2:4 layouts, written
// from FORMATS.md and the contract of issue 3 (not from the C++).

interface Selection {
  keep: Uint8Array; // 1 per kept element
}

/**
 * The N highest-scoring elements of each group of M along the rows, a
 * higher score first and equal scores by lower column. Scores: |w|, or
 * |w|·norm rounded to f32 (the product of two f32 is exact in f64, so one
 * fround is the f32 multiply). Throws the flat index of the first NaN score.
 */
function modelSelect(t: Tensor, n: number, m: number, norms?: Float32Array): Selection {
  const cols = t.shape.length === 0 ? 1 : (t.shape[t.shape.length - 1] as number);
  const keep = new Uint8Array(t.size);
  const score = new Float64Array(t.size);
  for (let i = 0; i < t.size; i++) {
    const mag = Math.abs(valueAt(t, i));
    const s = norms ? Math.fround(mag * (norms[i % cols] as number)) : mag;
    if (Number.isNaN(s)) throw new ModelNaN(i);
    score[i] = s;
  }
  for (let g0 = 0; g0 < t.size; g0 += m) {
    const order = Array.from({ length: m }, (_, k) => g0 + k);
    order.sort((a, b) => (score[b] as number) - (score[a] as number) || a - b);
    for (let k = 0; k < n; k++) keep[order[k] as number] = 1;
  }
  return { keep };
}

class ModelNaN extends Error {
  constructor(readonly flat: number) {
    super(`NaN at ${flat}`);
  }
}

/** compress24's rule for an input that must already be 2:4: its non-zeros, then its lowest-index zeros (null: a group has more than 2). */
function modelNonZero(isNonZero: (i: number) => boolean, size: number): { keep: Uint8Array; firstBad: number } {
  const keep = new Uint8Array(size);
  for (let g0 = 0; g0 < size; g0 += 4) {
    const nz = [0, 1, 2, 3].filter((k) => isNonZero(g0 + k));
    if (nz.length > 2) return { keep, firstBad: g0 };
    const chosen = [...nz, ...[0, 1, 2, 3].filter((k) => !isNonZero(g0 + k))].slice(0, 2);
    for (const k of chosen) keep[g0 + k] = 1;
  }
  return { keep, firstBad: -1 };
}

/** numpy.packbits(keep, axis=-1, bitorder='little') per row of `cols`. */
function packbitsLittle(keep: Uint8Array, cols: number): Uint8Array {
  const rows = cols === 0 ? 0 : keep.length / cols;
  const rb = Math.ceil(cols / 8);
  const out = new Uint8Array(rows * rb);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) if (keep[r * cols + c]) out[r * rb + (c >> 3)] |= 1 << (c & 7);
  }
  return out;
}

/** The input with the dropped elements set to +0, same element type (raw bits kept, so -0 stays -0). */
function modelDense(t: Tensor, keep: Uint8Array): Buffer {
  const src = t.data as Float32Array | Uint16Array;
  const out = src.slice();
  for (let i = 0; i < out.length; i++) if (!keep[i]) out[i] = 0;
  return bytesOf(out);
}

/** The kept elements in row-major order (compressed-tensors' `.compressed`, CUTLASS's values). */
function modelValues(t: Tensor, keep: Uint8Array): Buffer {
  const src = t.data as Float32Array | Uint16Array;
  return bytesOf(src.filter((_, i) => keep[i] === 1));
}

/**
 * CUTLASS/PyTorch meta as little-endian words of `wordBytes`: per row,
 * group g's nibble idx0 | idx1 << 2 at bits 4·(g mod w) of word g / w.
 */
function modelMeta(keep: Uint8Array, cols: number, wordBytes: 2 | 4): Buffer {
  const rows = cols === 0 ? 0 : keep.length / cols;
  const perWord = wordBytes * 2;
  const words = Math.ceil(cols / 4 / perWord);
  const out = Buffer.alloc(rows * words * wordBytes);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < cols / 4; g++) {
      const idx = [0, 1, 2, 3].filter((k) => keep[r * cols + 4 * g + k] === 1);
      expect(idx.length, 'the model keeps two per group').to.equal(2);
      const nibble = (idx[0] as number) | ((idx[1] as number) << 2);
      const wordIndex = r * words + Math.floor(g / perWord);
      const shift = 4 * (g % perWord);
      if (wordBytes === 2) out.writeUInt16LE(out.readUInt16LE(wordIndex * 2) | (nibble << shift), wordIndex * 2);
      else out.writeUInt32LE((out.readUInt32LE(wordIndex * 4) | (nibble << shift)) >>> 0, wordIndex * 4);
    }
  }
  return out;
}

/** Fills the bytes of each view with `byte` (prefill patterns that prove every output byte is written). */
function poison(byte: number, ...views: (ArrayBufferView | null | undefined)[]): void {
  for (const v of views) if (v) bytesOf(v).fill(byte);
}

function colsOf(t: { shape: readonly number[] }): number {
  return t.shape[t.shape.length - 1] as number;
}

// ---------------------------------------------------------------------------

describe('sparsity: N:M selection (prune)', () => {
  it('keeps the N largest |w| of each group; equal magnitudes keep the lower column', () => {
    // One group per row, with the expected kept columns worked out by hand from the rule.
    const cases: Array<[number[], string, number[]]> = [
      [[1, 1, 1, 1], '2:4', [0, 1]],
      [[-2, 2, 1, 2], '2:4', [0, 1]],
      [[1, 3, 3, 2], '2:4', [1, 2]],
      [[0, -0, 0, -0], '2:4', [0, 1]],
      [[-0, 0, 5, -0], '1:4', [2]],
      [[0.5, -7, 7, 0.25], '1:4', [1]],
      [[4, 3, 2, 1], '3:4', [0, 1, 2]],
      [[1, 2, 3, 4], '4:4', [0, 1, 2, 3]],
      [[1, 1, 2, 2, 2, 2, 1, 1], '4:8', [2, 3, 4, 5]],
      [[5, 0, 0, 5, 5, 0], '2:6', [0, 3]],
      [[Infinity, -Infinity, 1, 2], '2:4', [0, 1]],
      [[1e-45, -1e-45, 0, 0], '1:4', [0]],
    ];
    for (const [w, pattern, kept] of cases) {
      for (const kernel of SELECT_KERNELS) {
        for (const dtype of DTYPES) {
          if (dtype !== 'f32' && w.some((v) => Math.abs(v) > 0 && Math.abs(v) < 1e-30)) continue; // subnormal f32 flushes in f16
          const t = tensorOf(Float32Array.from(w), [1, w.length], dtype);
          const r = pruneSync(t, { pattern, kernel });
          const bits = kept.reduce((a, c) => a | (1 << c), 0);
          const what = `${JSON.stringify(w)} ${pattern} ${kernel} ${dtype}`;
          expect(Array.from(r.mask.data), what).to.deep.equal([bits & 0xff]);
          for (let c = 0; c < w.length; c++) {
            const want = kept.includes(c) ? valueAt(t, c) : 0;
            expect(Object.is(valueAt(r.tensor, c), want), `${what} column ${c}`).to.equal(true);
          }
        }
      }
    }
  });

  it('reference, AVX2 and the JS model agree bit for bit on random shapes, dtypes, patterns and scores', () => {
    const rng = new Rng(11);
    const patterns: Array<[number, number]> = [[2, 4], [1, 4], [3, 4], [4, 4], [4, 8], [2, 8], [1, 2], [3, 6], [5, 32], [2, 3]];
    for (let trial = 0; trial < 90; trial++) {
      const [n, m] = patterns[trial % patterns.length] as [number, number];
      const dtype = DTYPES[trial % 3] as FloatDType;
      // Row lengths around the AVX2 step (32 columns) and the mask byte (8).
      const groups = 1 + rng.int(m === 4 ? 40 : 12);
      const cols = m * groups;
      const rows = 1 + rng.int(6);
      const shape = shapeFor(rng, rows, cols);
      const x = tiedValues(rng, rows * cols);
      const t = tensorOf(x, shape, dtype);
      const wanda = trial % 2 === 1;
      const norms = wanda ? Float32Array.from({ length: cols }, () => (rng.int(3) === 0 ? 0 : rng.int(3) === 0 ? 2 : rng.uniform() * 4)) : undefined;
      const options: PruneOptions = { pattern: `${n}:${m}`, score: norms ? { activationNorms: norms } : 'magnitude' };
      const model = modelSelect(t, n, m, norms);
      const wantMask = packbitsLittle(model.keep, cols);
      const wantDense = modelDense(t, model.keep);
      for (const kernel of SELECT_KERNELS) {
        for (const fill of [0x00, 0xff]) {
          const { args, result } = planPrune(t, { ...options, kernel, threads: 1 + (trial % 2) }, 'test');
          poison(fill, result.tensor.data, result.mask.data);
          binding.sparseSelect(args, false);
          const what = `trial ${trial}: ${n}:${m} ${dtype} [${shape.join(', ')}] ${wanda ? 'wanda' : 'magnitude'} ${kernel} fill ${fill}`;
          expect(bytesOf(result.mask.data).equals(Buffer.from(wantMask)), `${what}: mask`).to.equal(true);
          expect(bytesOf(result.tensor.data).equals(wantDense), `${what}: tensor`).to.equal(true);
          expect(result.mask.shape).to.deep.equal([...shape.slice(0, -1), Math.ceil(cols / 8)]);
        }
      }
      // The fused compress24 with prune: the same selection, in the 2:4 layouts.
      if (n === 2 && m === 4) {
        for (const kernel of SELECT_KERNELS) {
          const { args, result } = planCompress24(t, { prune: true, score: options.score, kernel }, 'test');
          poison(0xa5, result.values instanceof Tensor ? result.values.data : null, result.meta, result.bitmask?.data);
          binding.sparseSelect(args, false);
          const what = `trial ${trial} compress24 ${kernel}`;
          expect(bytesOf((result.values as Tensor).data).equals(modelValues(t, model.keep)), `${what}: values`).to.equal(true);
          expect(bytesOf(result.meta).equals(modelMeta(model.keep, cols, 2)), `${what}: meta`).to.equal(true);
          expect(bytesOf(result.bitmask?.data).equals(Buffer.from(wantMask)), `${what}: bitmask`).to.equal(true);
        }
      }
    }
  });

  it('Wanda: |w|·activationNorms[col] in f32, in every column of long rows (against the JS model)', () => {
    // The norms decide, and they favour other positions after the first 32
    // columns (one AVX2 step): a kernel that reads the wrong norms keeps the
    // wrong elements there.
    const rng = new Rng(5);
    const favoured = (c: number): boolean => (c < 32 ? c % 4 < 2 : c % 4 >= 2);
    for (const cols of [64, 100, 4096 + 36]) {
      const rows = 3;
      const x = Float32Array.from({ length: rows * cols }, (_, i) => 1 + (i % 4) + rng.uniform() * 0.1);
      const norms = Float32Array.from({ length: cols }, (_, c) => (favoured(c) ? 1000 + rng.uniform() : rng.uniform()));
      for (const dtype of DTYPES) {
        const t = tensorOf(x, [rows, cols], dtype);
        const model = modelSelect(t, 2, 4, norms);
        for (let i = 0; i < t.size; i++) expect(model.keep[i], `model at ${i}`).to.equal(favoured(i % cols) ? 1 : 0);
        const want = packbitsLittle(model.keep, cols);
        for (const kernel of SELECT_KERNELS) {
          const r = pruneSync(t, { pattern: '2:4', score: { activationNorms: norms }, kernel });
          expect(bytesOf(r.mask.data).equals(Buffer.from(want)), `${dtype} cols ${cols} ${kernel}`).to.equal(true);
        }
      }
    }
    // f32 rounding of the product decides a tie: 3·fround(1/3) is
    // 1.0000000298 in f64 but exactly 1 in f32, so the scores are
    // [1, 0.5, 1, 1] and the tie goes to the lower columns: {0, 2}. Scores
    // kept in f64 would keep column 3 and then 0: 0b1001.
    const third = Math.fround(1 / 3);
    const t = Tensor.from(new Float32Array([1, 0.5, 1, 3]), [1, 4]);
    const norms = new Float32Array([1, 1, 1, third]);
    expect(Math.fround(3 * third)).to.equal(1);
    expect(3 * third).to.be.above(1);
    for (const kernel of SELECT_KERNELS) {
      expect(Array.from(pruneSync(t, { pattern: '2:4', score: { activationNorms: norms }, kernel }).mask.data), kernel).to.deep.equal([0b0101]);
    }
  });

  it('a NaN weight (or NaN Wanda score) is ERR_VALUE naming the first one', async () => {
    // Several row chunks (~256 KiB each) in flight, NaNs in more than one.
    const rows = 3000;
    const cols = 72;
    const x = new Rng(8).normals(rows * cols);
    x[2950 * cols + 70] = NaN;
    x[1523 * cols + 41] = NaN; // the first, row-major
    x[1523 * cols + 45] = NaN;
    x[2200 * cols + 3] = NaN;
    for (const dtype of DTYPES) {
      const t = tensorOf(x, [rows, cols], dtype);
      for (const pattern of ['2:4', '4:8', '1:3']) {
        for (const kernel of SELECT_KERNELS) {
          const e = thrown(() => pruneSync(t, { pattern, kernel, threads: 4 }));
          expect(e.code).to.equal('ERR_VALUE');
          expect(e.message, `${dtype} ${pattern} ${kernel}`).to.match(/^pruneSync: input has a NaN at \[1523, 41\] \(flat 109697\)/);
        }
      }
      const e = thrown(() => compress24Sync(t, { prune: true }));
      expect(e.message).to.match(/^compress24Sync: input has a NaN at \[1523, 41\]/);
      expect((await rejected(prune(t, { pattern: '2:4' }))).message).to.match(/^prune: input has a NaN at \[1523, 41\]/);
    }
    // Infinity · 0 is NaN: the score, not the weight, is named.
    const w = new Float32Array(64).fill(1);
    w[37] = -Infinity;
    const norms = new Float32Array(64).fill(1);
    norms[37] = 0;
    const model = (() => {
      try {
        modelSelect(Tensor.from(w, [1, 64]), 2, 4, norms);
      } catch (err) {
        return (err as ModelNaN).flat;
      }
      return -1;
    })();
    expect(model).to.equal(37);
    for (const kernel of SELECT_KERNELS) {
      const e = thrown(() => pruneSync(Tensor.from(w, [1, 64]), { pattern: '2:4', score: { activationNorms: norms }, kernel }));
      expect(e.code).to.equal('ERR_VALUE');
      expect(e.message, kernel).to.match(/the Wanda score \|w\|·activationNorms\[37\] of \[0, 37\] is NaN \(w = -Infinity, norm = 0\)/);
    }
  });

  it('a last dimension that is not a multiple of M is ERR_SHAPE', () => {
    const cases: Array<[number[], string]> = [[[3, 6], '2:4'], [[2, 12], '4:8'], [[8], '2:6'], [[5, 2], '1:4'], [[], '1:1']];
    for (const [shape, pattern] of cases) {
      const t = Tensor.zeros(shape, 'f32');
      const e = thrown(() => pruneSync(t, { pattern }));
      expect(e.code, `${JSON.stringify(shape)} ${pattern}`).to.equal('ERR_SHAPE');
      expect(e.message).to.match(new RegExp(`is not a multiple of M = ${pattern.split(':')[1]} \\(pattern ${pattern}\\)`));
    }
    expect(thrown(() => compress24Sync(Tensor.zeros([2, 6], 'f32'))).code).to.equal('ERR_SHAPE');
    expect(thrown(() => compress24Sync(Tensor.zeros([2, 6], 'f32'), { prune: true })).message).to.match(/not a multiple of M = 4 \(pattern 2:4\)/);
  });

  it('the mask is 1 bit per element, little bit order, padding bits 0, every byte written', () => {
    // Row length 12: two mask bytes per row, the second with 4 padding bits.
    const x = new Float32Array([
      0, 0, 5, 6, /**/ 7, 0, 0, 8, /**/ 1, 2, 0, 0,
      9, 1, 1, 9, /**/ 0, 3, 3, 0, /**/ 0, 0, 0, 4,
    ]);
    // Row 0 keeps columns 2,3 | 4,7 | 8,9; row 1 keeps 0,3 | 5,6 | 11 and,
    // of the tied zeros, the lowest column 8.
    const want = [0b10011100, 0b0011, 0b01101001, 0b1001];
    for (const dtype of DTYPES) {
      const t = tensorOf(x, [2, 12], dtype);
      for (const kernel of SELECT_KERNELS) {
        for (const fill of [0x00, 0xff]) {
          const { args, result } = planPrune(t, { pattern: '2:4', kernel }, 'test');
          poison(fill, result.mask.data, result.tensor.data);
          binding.sparseSelect(args, false);
          expect(Array.from(result.mask.data), `${dtype} ${kernel} ${fill}`).to.deep.equal(want);
          expect(result.mask.shape).to.deep.equal([2, 2]);
        }
      }
    }
  });

  it('outputs are the same for every thread count', () => {
    const rows = 517;
    const cols = 260;
    const t = tensorOf(tiedValues(new Rng(3), rows * cols), [rows, cols], 'bf16');
    const one = pruneSync(t, { pattern: '2:4', threads: 1 });
    for (const threads of [2, 3, 7]) {
      const r = pruneSync(t, { pattern: '2:4', threads });
      expect(bytesOf(r.mask.data).equals(bytesOf(one.mask.data)), `threads ${threads}`).to.equal(true);
      expect(bytesOf(r.tensor.data).equals(bytesOf(one.tensor.data)), `threads ${threads}`).to.equal(true);
    }
  });
});

// ---------------------------------------------------------------------------

describe('sparsity: compress24 / decompress24', () => {
  it("meta nibbles follow FORMATS.md on the raw bytes ({0,1} → 0b0100, {2,3} → 0b1110), values in column order", () => {
    // One row of 8 groups, each keeping a known pair; the last two have
    // fewer than two non-zeros and keep their lowest-index zeros.
    const groups: number[][] = [
      [1, 2, 0, 0], // {0,1} -> 0b0100
      [0, 0, 3, 4], // {2,3} -> 0b1110
      [5, 0, 6, 0], // {0,2} -> 0b1000
      [7, 0, 0, 8], // {0,3} -> 0b1100
      [0, 9, 10, 0], // {1,2} -> 0b1001
      [0, 11, 0, 12], // {1,3} -> 0b1101
      [0, 0, 0, 13], // {0,3}: the non-zero, then the first zero
      [0, 0, 0, 0], // {0,1}
    ];
    const nibbles = [0b0100, 0b1110, 0b1000, 0b1100, 0b1001, 0b1101, 0b1100, 0b0100];
    const bytes = [0, 1, 2, 3].map((k) => (nibbles[2 * k] as number) | ((nibbles[2 * k + 1] as number) << 4));
    expect(bytes).to.deep.equal([0xe4, 0xc8, 0xd9, 0x4c]);
    const x = Float32Array.from(groups.flat());
    for (const dtype of DTYPES) {
      for (const kernel of SELECT_KERNELS) {
        const a = compress24Sync(tensorOf(x, [1, 32], dtype), { kernel });
        expect(a.meta).to.be.instanceOf(Int16Array);
        expect(a.metaWordsPerRow).to.equal(2);
        expect(Array.from(bytesOf(a.meta)), `${dtype} ${kernel}`).to.deep.equal(bytes);
        const values = a.values as Tensor;
        expect(values.shape).to.deep.equal([1, 16]);
        expect(Array.from({ length: 16 }, (_, i) => valueAt(values, i))).to.deep.equal([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 13, 0, 0]);
      }
    }
    // Two groups: one int16 word, the upper two nibbles are padding (0).
    for (const kernel of SELECT_KERNELS) {
      for (const fill of [0x00, 0xff]) {
        const { args, result } = planCompress24(Tensor.from(new Float32Array([0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 1, 1, 0, 1, 0]), [2, 8]), { kernel }, 'test');
        poison(fill, result.meta, (result.values as Tensor).data, result.bitmask?.data);
        binding.sparseSelect(args, false);
        expect(Array.from(bytesOf(result.meta)), `${kernel} ${fill}`).to.deep.equal([0b0100_1110, 0, 0b1000_1101, 0]);
      }
    }
  });

  it('round trips f32/f16/bf16 through compress24 and decompress24 (meta or bitmask), every layout as the JS model says', async () => {
    const rng = new Rng(21);
    for (let trial = 0; trial < 36; trial++) {
      const dtype = DTYPES[trial % 3] as FloatDType;
      const cols = 4 * (1 + rng.int(trial < 18 ? 12 : 70));
      const rows = 1 + rng.int(7);
      const shape = shapeFor(rng, rows, cols);
      // A 2:4 input: each group keeps a random pair (some of them zeros, -0 among them).
      const x = new Float32Array(rows * cols);
      for (let g0 = 0; g0 < x.length; g0 += 4) {
        const a = rng.int(4);
        const b = (a + 1 + rng.int(3)) % 4;
        for (const k of [a, b]) x[g0 + k] = rng.int(5) === 0 ? (rng.int(2) ? -0 : 0) : rng.normal();
      }
      const t = tensorOf(x, shape, dtype);
      const nz = modelNonZero((i) => valueAt(t, i) !== 0, t.size);
      expect(nz.firstBad).to.equal(-1);
      for (const kernel of SELECT_KERNELS) {
        const a = compress24Sync(t, { kernel });
        const what = `trial ${trial} ${dtype} [${shape.join(', ')}] ${kernel}`;
        expect((a.values as Tensor).shape, what).to.deep.equal([...shape.slice(0, -1), cols / 2]);
        expect(bytesOf((a.values as Tensor).data).equals(modelValues(t, nz.keep)), `${what}: values`).to.equal(true);
        expect(bytesOf(a.meta).equals(modelMeta(nz.keep, cols, 2)), `${what}: meta`).to.equal(true);
        expect(bytesOf(a.bitmask?.data).equals(Buffer.from(packbitsLittle(nz.keep, cols))), `${what}: bitmask`).to.equal(true);
        // A dropped -0 comes back as +0; everything else comes back as it was.
        const dense = decompress24Sync(a) as Tensor;
        expect(dense.dtype).to.equal(dtype);
        expect(dense.shape).to.deep.equal(shape);
        expect(bytesOf(dense.data).equals(modelDense(t, nz.keep)), `${what}: round trip`).to.equal(true);
      }
      const a = compress24Sync(t);
      for (const parts of [{ meta: a.meta }, { bitmask: a.bitmask }]) {
        const b = new Sparse24Tensor({ shape, values: a.values, ...parts });
        for (const fill of [0x00, 0xff]) {
          const { args, result } = planDecompress24(b, { threads: 1 + (trial % 3) }, 'test');
          poison(fill, (result as Tensor).data);
          binding.sparseExpand(args, false);
          expect(bytesOf((result as Tensor).data).equals(modelDense(t, nz.keep)), `trial ${trial} from ${Object.keys(parts)[0]} fill ${fill}`).to.equal(true);
        }
        expect(bytesOf(((await decompress24(b)) as Tensor).data).equals(modelDense(t, nz.keep))).to.equal(true);
      }
    }
  });

  it("the bitmask and values follow compressed-tensors' sparse-24-bitmask (packbits little, row-major kept values)", () => {
    // Straight from the convention: the mask of the non-zeros, packed per row
    // with numpy's bitorder='little'; `.compressed` is w[mask] (row-major).
    const rng = new Rng(4);
    const rows = 5;
    const cols = 28; // ceil(28/8) = 4 bytes per row, 4 padding bits
    const w = new Float32Array(rows * cols);
    for (let g0 = 0; g0 < w.length; g0 += 4) {
      const a = rng.int(4);
      const b = (a + 1 + rng.int(3)) % 4;
      w[g0 + a] = 1 + rng.uniform();
      w[g0 + b] = -1 - rng.uniform();
    }
    const packed = new Uint8Array(rows * 4);
    const compressed: number[] = [];
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const v = w[r * cols + c] as number;
        if (v !== 0) {
          packed[r * 4 + Math.floor(c / 8)] |= 1 << c % 8;
          compressed.push(v);
        }
      }
    }
    for (const kernel of SELECT_KERNELS) {
      const a = compress24Sync(Tensor.from(w, [rows, cols]), { kernel });
      expect(a.bitmask?.shape).to.deep.equal([rows, 4]);
      expect(Array.from(a.bitmask?.data ?? []), kernel).to.deep.equal(Array.from(packed));
      expect(Array.from((a.values as Tensor<'f32'>).data), kernel).to.deep.equal(compressed);
    }
  });

  it('a tensor that is not 2:4 is ERR_VALUE naming the first bad group (-0 counts as zero)', async () => {
    const rows = 2000; // several row chunks
    const cols = 72;
    const x = new Float32Array(rows * cols);
    for (let i = 0; i < x.length; i += 4) {
      x[i] = 1;
      x[i + 2] = -0; // a signed zero does not count
      x[i + 3] = -2;
    }
    x[1733 * cols + 61] = 5; // group 15 of row 1733 now has 3 non-zeros
    x[1937 * cols + 5] = 1e-40; // a later bad group (subnormal: non-zero in f32 and bf16, 0 in f16)
    for (const dtype of DTYPES) {
      const t = tensorOf(x, [rows, cols], dtype);
      for (const kernel of SELECT_KERNELS) {
        const e = thrown(() => compress24Sync(t, { kernel, threads: 3 }));
        expect(e.code).to.equal('ERR_VALUE');
        expect(e.message, `${dtype} ${kernel}`).to.match(/^compress24Sync: the input is not 2:4 sparse: group 15 of row 1733 \(columns 60\.\.63\) has 3 non-zeros/);
      }
      expect((await rejected(compress24(t))).message).to.match(/^compress24: the input is not 2:4 sparse: group 15 of row 1733/);
    }
    x[1733 * cols + 61] = 0;
    const t = Tensor.from(x, [rows, cols]);
    expect(thrown(() => compress24Sync(t)).message).to.match(/group 1 of row 1937 \(columns 4\.\.7\) has 3 non-zeros/);
    // In f16 1e-40 rounds to 0: the tensor is 2:4 there.
    const h = tensorOf(x, [rows, cols], 'f16');
    const keep = modelNonZero((i) => valueAt(h, i) !== 0, h.size).keep;
    expect(bytesOf((decompress24Sync(compress24Sync(h)) as Tensor).data).equals(modelDense(h, keep))).to.equal(true);
  });

  it('options.mask keeps exactly the masked elements; a mask group without two bits is ERR_VALUE', () => {
    const rng = new Rng(6);
    const rows = 6;
    const cols = 44;
    const x = rng.normals(rows * cols);
    const norms = Float32Array.from({ length: cols }, () => rng.uniform());
    for (const dtype of DTYPES) {
      const t = tensorOf(x, [rows, cols], dtype);
      const pruned = pruneSync(t, { pattern: '2:4', score: { activationNorms: norms } });
      const fused = compress24Sync(t, { prune: true, score: { activationNorms: norms } });
      const masked = compress24Sync(t, { mask: pruned.mask });
      const after = compress24Sync(pruned.tensor);
      for (const a of [fused, masked, after]) {
        expect(bytesOf(a.bitmask?.data).equals(bytesOf(pruned.mask.data))).to.equal(true);
        expect(bytesOf(a.meta).equals(bytesOf(fused.meta))).to.equal(true);
        expect(bytesOf((a.values as Tensor).data).equals(bytesOf((fused.values as Tensor).data))).to.equal(true);
      }
    }
    const bad = pruneSync(Tensor.from(x, [rows, cols]), { pattern: '2:4' }).mask;
    bad.data[3 * 6 + 2] ^= 0b0100_0000; // row 3, column 22: group 5 keeps 1 or 3
    const e = thrown(() => compress24Sync(Tensor.from(x, [rows, cols]), { mask: bad }));
    expect(e.code).to.equal('ERR_VALUE');
    expect(e.message).to.match(/mask: group 5 of row 3 \(columns 20\.\.23\) keeps [13] elements; 2:4 needs exactly 2/);
  });

  it('decompress24 rejects a meta nibble or a bitmask group that is not 2:4, naming it', () => {
    const t = Tensor.from(new Float32Array(3 * 16).map((_, i) => (i % 4 < 2 ? 1 : 0)), [3, 16]);
    const a = compress24Sync(t);
    const meta = (a.meta as Int16Array).slice();
    // Row 2, group 3: nibble 3 of word 0 of row 2 becomes 0b0101 (idx0 = idx1).
    meta[2] = ((meta[2] as number) & 0x0fff) | (0b0101 << 12);
    const e = thrown(() => decompress24Sync(new Sparse24Tensor({ shape: a.shape, values: a.values, meta })));
    expect(e.code).to.equal('ERR_VALUE');
    expect(e.message).to.match(/^decompress24Sync: not 2:4: meta of group 3 of row 2 \(columns 12\.\.15\) is 0b0101, not a 2:4 code/);
    const mask = Tensor.from(Uint8Array.from(a.bitmask?.data ?? []), [3, 2], 'u8');
    mask.data[3] |= 0b0100_0000; // row 1, column 14: group 3 keeps 3
    const e2 = thrown(() => decompress24Sync(new Sparse24Tensor({ shape: a.shape, values: a.values, bitmask: mask })));
    expect(e2.message).to.match(/not 2:4: the bitmask of group 3 of row 1 \(columns 12\.\.15\) does not keep exactly 2 elements/);
  });
});

// ---------------------------------------------------------------------------

describe('sparsity: compress24 of int4/int8 quantized tensors', () => {
  /** A 2:4-pruned random matrix. */
  function pruned24(seed: number, rows: number, cols: number): Tensor<FloatDType> {
    return pruneSync(Tensor.from(new Rng(seed).normals(rows * cols), [rows, cols]), { pattern: '2:4' }).tensor;
  }

  it('keeps the codes of the non-zero-point elements with their scales; decompress24 restores the codes exactly', async () => {
    const rows = 9;
    const cols = 192;
    for (const format of ['int4', 'int8'] as const) {
      const bits = format === 'int4' ? 4 : 8;
      for (const symmetric of [true, false]) {
        for (const groupSize of [32, 64, 'channel'] as const) {
          const w = pruned24(bits + cols, rows, cols);
          const q = quantizeSync(w, { format, groupSize, symmetric });
          const what = `${format} ${symmetric ? 'sym' : 'asym'} group ${groupSize}`;
          const group = q.groupSize;
          const inWords = Math.ceil((cols * bits) / 32);
          // The model: a code counts as zero when it equals its group's zero point.
          const zeroOf = (r: number, c: number): number => (q.zeros ? (q.zeros.data[r * (cols / group) + Math.floor(c / group)] as number) : 0);
          const code = (r: number, c: number): number => unpack(q.data as Int32Array, inWords, r, c, bits);
          const nz = modelNonZero((i) => code(Math.floor(i / cols), i % cols) !== zeroOf(Math.floor(i / cols), i % cols), rows * cols);
          expect(nz.firstBad, what).to.equal(-1);
          const a = compress24Sync(q);
          expect(a.quantized).to.equal(true);
          const v = a.values as QuantizedTensor;
          expect(v.format).to.equal(format);
          expect(v.shape).to.deep.equal([rows, cols / 2]);
          expect(v.groupSize).to.equal(group / 2);
          expect(v.scales).to.equal(q.scales);
          expect(v.zeros).to.equal(q.zeros);
          const outWords = Math.ceil((cols / 2) * bits / 32);
          for (let r = 0; r < rows; r++) {
            let k = 0;
            for (let c = 0; c < cols; c++) {
              if (!nz.keep[r * cols + c]) continue;
              expect(unpack(v.data as Int32Array, outWords, r, k, bits), `${what} [${r}, ${c}]`).to.equal(code(r, c));
              k++;
            }
          }
          expect(a.meta).to.be.instanceOf(Int32Array);
          expect(bytesOf(a.meta).equals(modelMeta(nz.keep, cols, 4)), `${what}: meta`).to.equal(true);
          expect(bytesOf(a.bitmask?.data).equals(Buffer.from(packbitsLittle(nz.keep, cols))), `${what}: bitmask`).to.equal(true);
          // Kept codes dequantize with their original scales: the same floats as the dense dequantization.
          const back = decompress24Sync(a) as QuantizedTensor;
          expect(back).to.be.instanceOf(QuantizedTensor);
          expect(back.groupSize).to.equal(group);
          expect(bytesOf(back.data).equals(bytesOf(q.data)), `${what}: round trip`).to.equal(true);
          expect(bytesOf(dequantizeSync(back).data).equals(bytesOf(dequantizeSync(q).data))).to.equal(true);
          const fromMask = (await decompress24(new Sparse24Tensor({ shape: a.shape, values: a.values, bitmask: a.bitmask }))) as QuantizedTensor;
          expect(bytesOf(fromMask.data).equals(bytesOf(q.data)), `${what}: from the bitmask`).to.equal(true);
          const viaMask = compress24Sync(q, { mask: a.bitmask });
          expect(bytesOf(viaMask.meta).equals(bytesOf(a.meta))).to.equal(true);
          expect(bytesOf((viaMask.values as QuantizedTensor).data).equals(bytesOf(v.data))).to.equal(true);
        }
      }
    }
  });

  it('a quantized tensor that is not 2:4 is ERR_VALUE naming the group; a group size not a multiple of 4 is ERR_SHAPE', async () => {
    const x = new Rng(1).normals(4 * 64);
    const q = quantizeSync(Tensor.from(x, [4, 64]), { format: 'int8', groupSize: 32 });
    const e = thrown(() => compress24Sync(q));
    expect(e.code).to.equal('ERR_VALUE');
    expect(e.message).to.match(/^compress24Sync: the quantized input is not 2:4 sparse: group 0 of row 0 \(columns 0\.\.3\) has more than 2 codes other than the zero point/);
    expect((await rejected(compress24(q))).code).to.equal('ERR_VALUE');
    const q6 = quantizeSync(pruneSync(Tensor.from(new Rng(2).normals(2 * 24), [2, 24]), { pattern: '2:4' }).tensor, { format: 'int4', groupSize: 6 });
    expect(thrown(() => compress24Sync(q6)).code).to.equal('ERR_SHAPE');
    expect(thrown(() => compress24Sync(q, { prune: true })).message).to.match(/prune the float tensor, then quantize it/);
    const q40 = quantizeSync(Tensor.from(x, [4, 64]), { format: 'q4_0' });
    expect(thrown(() => compress24Sync(q40)).message).to.match(/must be int4 or int8/);
    for (const kernel of ['avx2', 'avx512', 'cuda'] as const) {
      expect(thrown(() => compress24Sync(q, { kernel })).message).to.match(/reference loop; kernel \w+ has none/);
    }
    // Kept codes with a dense group of 6: a 2:4 group would straddle two zero points.
    const codes = quantizeSync(Tensor.from(new Float32Array(2 * 12), [2, 12]), { format: 'int8', groupSize: 3, symmetric: false });
    const bitmask = Tensor.from(new Uint8Array([0x33, 0x03, 0x33, 0x03]), [2, 2], 'u8');
    const e2 = thrown(() => new Sparse24Tensor({ shape: [2, 24], values: codes, bitmask }));
    expect(e2.code).to.equal('ERR_SHAPE');
    expect(e2.message).to.match(/values has group size 3; the dense group \(6\) must be a multiple of 4/);
  });
});

// ---------------------------------------------------------------------------

describe('sparsity: pruneUnstructured', () => {
  /** Python's round() of sparsity·n, by its definition (ties to even), written independently of lib/. */
  function count(sparsity: number, n: number): number {
    const x = sparsity * n;
    const f = Math.floor(x);
    const d = x - f;
    return d > 0.5 || (d === 0.5 && f % 2 === 1) ? f + 1 : f;
  }

  /**
   * Sort-based model: the k smallest |w| are pruned; among equal
   * magnitudes the later position (tensor, then flat index) goes first, so
   * the earlier ones stay, as N:M ties keep the lower column.
   */
  function modelUnstructured(ts: readonly Tensor[], ks: readonly number[], global: boolean): { keep: Uint8Array[]; pruned: number[]; threshold: number[] } {
    const keep = ts.map((t) => new Uint8Array(t.size).fill(1));
    const pruned = ts.map(() => 0);
    const threshold = ts.map(() => 0);
    const groups = global ? [ts.map((_, i) => i)] : ts.map((_, i) => [i]);
    groups.forEach((members, gi) => {
      const all: Array<[number, number, number]> = [];
      for (const ti of members) {
        const t = ts[ti] as Tensor;
        for (let i = 0; i < t.size; i++) all.push([Math.abs(valueAt(t, i)), ti, i]);
      }
      all.sort((a, b) => a[0] - b[0] || b[1] - a[1] || b[2] - a[2]);
      const k = ks[gi] as number;
      for (let j = 0; j < k; j++) {
        const [mag, ti, i] = all[j] as [number, number, number];
        (keep[ti] as Uint8Array)[i] = 0;
        pruned[ti] = (pruned[ti] as number) + 1;
        for (const m of members) threshold[m] = Math.max(threshold[m] as number, mag);
      }
    });
    return { keep, pruned, threshold };
  }

  function checkAgainstModel(ts: Tensor[], rs: UnstructuredResult[], model: ReturnType<typeof modelUnstructured>, what: string): void {
    rs.forEach((r, i) => {
      const t = ts[i] as Tensor;
      const keep = model.keep[i] as Uint8Array;
      expect(r.pruned, `${what} tensor ${i}: pruned`).to.equal(model.pruned[i]);
      expect(r.threshold, `${what} tensor ${i}: threshold`).to.equal(model.threshold[i]);
      expect(r.tensor.dtype).to.equal(t.dtype);
      expect(r.tensor.shape).to.deep.equal(t.shape);
      expect(bytesOf(r.tensor.data).equals(modelDense(t, keep)), `${what} tensor ${i}: tensor`).to.equal(true);
      expect(bytesOf(r.mask.data).equals(Buffer.from(packbitsLittle(keep, colsOf(t)))), `${what} tensor ${i}: mask`).to.equal(true);
    });
  }

  it("scope 'layer' zeros exactly round(sparsity·n) of each tensor, ties broken by position (sort-based model)", () => {
    const rng = new Rng(31);
    for (let trial = 0; trial < 24; trial++) {
      const dtype = DTYPES[trial % 3] as FloatDType;
      const rows = 1 + rng.int(40);
      const cols = 1 + rng.int(70);
      // Heavy ties: few distinct magnitudes, signed zeros among them.
      const x = trial % 2 === 0 ? tiedValues(rng, rows * cols) : Float32Array.from({ length: rows * cols }, () => rng.int(5) - 2);
      const t = tensorOf(x, [rows, cols], dtype);
      for (const sparsity of [0, 0.5, 0.37, 0.9, 1]) {
        const k = count(sparsity, t.size);
        const r = pruneUnstructuredSync(t, { sparsity, threads: 1 + (trial % 3) });
        checkAgainstModel([t], [r], modelUnstructured([t], [k], false), `trial ${trial} ${dtype} [${rows}, ${cols}] sparsity ${sparsity}`);
      }
    }
    // Python's round(): halves go to the even count (sparsities exact in binary).
    const t = Tensor.from(new Float32Array([4, 3, 2, 1, 5, 8, 7, 6]), [8]);
    expect(pruneUnstructuredSync(t, { sparsity: 0.0625 }).pruned).to.equal(0); // 0.5 -> 0
    expect(pruneUnstructuredSync(t, { sparsity: 0.1875 }).pruned).to.equal(2); // 1.5 -> 2
    expect(pruneUnstructuredSync(t, { sparsity: 0.3125 }).pruned).to.equal(2); // 2.5 -> 2
    expect(pruneUnstructuredSync(t, { sparsity: 0.4375 }).pruned).to.equal(4); // 3.5 -> 4
    expect(Array.from(pruneUnstructuredSync(t, { sparsity: 0.4375 }).tensor.data as Float32Array)).to.deep.equal([0, 0, 0, 0, 5, 8, 7, 6]);
  });

  it("scope 'global' uses one cut across tensors of mixed dtypes and hits the total count exactly", async () => {
    const rng = new Rng(41);
    for (let trial = 0; trial < 10; trial++) {
      const ts = Array.from({ length: 2 + rng.int(3) }, (_, i) => {
        const rows = 1 + rng.int(30);
        const cols = 1 + rng.int(50);
        const x = trial % 2 === 0 ? tiedValues(rng, rows * cols) : Float32Array.from({ length: rows * cols }, () => (rng.int(4) - 2) * 0.5);
        return tensorOf(x, [rows, cols], DTYPES[(i + trial) % 3] as FloatDType);
      });
      const total = ts.reduce((s, t) => s + t.size, 0);
      for (const sparsity of [0.25, 0.5, 0.8]) {
        const k = count(sparsity, total);
        const rs = pruneUnstructuredSync(ts, { sparsity, scope: 'global' });
        expect(rs.reduce((s, r) => s + r.pruned, 0)).to.equal(k);
        checkAgainstModel(ts, rs, modelUnstructured(ts, [k], true), `trial ${trial} sparsity ${sparsity}`);
        const ra = await pruneUnstructured(ts, { sparsity, scope: 'global' });
        ra.forEach((r, i) => expect(bytesOf(r.tensor.data).equals(bytesOf((rs[i] as UnstructuredResult).tensor.data))).to.equal(true));
      }
    }
    // Seven ties at the cut across two tensors: the later positions go first.
    const a = Tensor.from(new Float32Array([1, 1, 1, 1]), [4]);
    const b = Tensor.from(Uint16Array.from([1, -1, 1, 2], (v) => f32ToBf16(v)), [4], 'bf16');
    const [ra, rb] = pruneUnstructuredSync([a, b], { sparsity: 0.75, scope: 'global' }) as [UnstructuredResult, UnstructuredResult];
    expect([ra.pruned, rb.pruned]).to.deep.equal([3, 3]);
    expect(Array.from(ra.tensor.data as Float32Array)).to.deep.equal([1, 0, 0, 0]);
    expect(Array.from(rb.tensor.data).map((h) => bf16ToF32(h as number))).to.deep.equal([0, 0, 0, 2]);
    expect(Array.from(rb.mask.data)).to.deep.equal([0b1000]);
    expect([ra.threshold, rb.threshold]).to.deep.equal([1, 1]);
  });

  it('every output byte is written (a large tensor on several threads, ties across chunk borders)', () => {
    const rows = 1200;
    const cols = 99;
    const x = Float32Array.from({ length: rows * cols }, (_, i) => (i % 7) * 0.25);
    const t = Tensor.from(x, [rows, cols]);
    const k = count(0.4, t.size);
    const model = modelUnstructured([t], [k], false);
    for (const fill of [0x00, 0xff]) {
      const { args, results } = planUnstructured(t, { sparsity: 0.4, threads: 3 }, 'test');
      poison(fill, ...results.flatMap((r) => [r.tensor.data, r.mask.data]));
      const native = binding.pruneUnstructured(args, false) as NativeUnstructured;
      expect(native.pruned).to.deep.equal([k]);
      expect(bytesOf((results[0] as UnstructuredResult).tensor.data).equals(modelDense(t, model.keep[0] as Uint8Array)), `fill ${fill}`).to.equal(true);
      expect(bytesOf((results[0] as UnstructuredResult).mask.data).equals(Buffer.from(packbitsLittle(model.keep[0] as Uint8Array, cols))), `fill ${fill}`).to.equal(true);
    }
  });

  it('a NaN is ERR_VALUE naming the tensor and the first index; bad options are rejected', async () => {
    // Several row chunks, a NaN in a later one too.
    const x = new Float32Array(3000 * 40).fill(1);
    x[2500 * 40 + 7] = NaN;
    x[101 * 40 + 33] = NaN;
    const e = thrown(() => pruneUnstructuredSync(Tensor.from(x, [3000, 40]), { sparsity: 0.5, threads: 4 }));
    expect(e.code).to.equal('ERR_VALUE');
    expect(e.message).to.match(/^pruneUnstructuredSync: input has a NaN at \[101, 33\] \(flat 4073\)/);
    const ok = Tensor.from(new Float32Array(8), [8]);
    const e2 = await rejected(pruneUnstructured([ok, Tensor.from(x, [3000, 40])], { sparsity: 0.5, scope: 'global' }));
    expect(e2.message).to.match(/^pruneUnstructured: tensor 1 has a NaN at \[101, 33\]/);
    const cases: Array<[() => unknown, string, RegExp]> = [
      [() => pruneUnstructuredSync(ok, { sparsity: 1.5 }), 'ERR_VALUE', /options\.sparsity must be a number in \[0, 1\], got 1\.5/],
      [() => pruneUnstructuredSync(ok, { sparsity: NaN }), 'ERR_VALUE', /options\.sparsity must be a number/],
      [() => pruneUnstructuredSync(ok, undefined as never), 'ERR_VALUE', /options\.sparsity is required/],
      [() => pruneUnstructuredSync(ok, { sparsity: 0.5, scope: 'model' as never }), 'ERR_VALUE', /options\.scope must be 'layer' or 'global'/],
      [() => pruneUnstructuredSync([], { sparsity: 0.5 }), 'ERR_VALUE', /no tensors given/],
      [() => pruneUnstructuredSync([ok, Tensor.from(new Int8Array(4), [4])], { sparsity: 0.5 }), 'ERR_DTYPE', /tensors\[1\] has dtype i8/],
      [() => pruneUnstructuredSync(ok, { sparsity: 0.5, threads: 0 }), 'ERR_VALUE', /options\.threads must be an integer/],
      [() => pruneUnstructuredSync(ok, { sparsity: 0.5, global: true } as never), 'ERR_VALUE', /unknown option "global"/],
    ];
    for (const [f, code, re] of cases) {
      const err = thrown(f);
      expect(err.code, re.source).to.equal(code);
      expect(err.message, re.source).to.match(re);
    }
  });
});

// ---------------------------------------------------------------------------

describe('sparsity: spmm24', () => {
  /** A compressed random 2:4 matrix and its dense form. */
  function sparseMatrix(rng: Rng, rows: number, cols: number, dtype: FloatDType): { a: Sparse24Tensor; dense: Tensor } {
    const a = compress24Sync(tensorOf(rng.normals(rows * cols), [rows, cols], dtype), { prune: true });
    return { a, dense: decompress24Sync(a) as Tensor };
  }

  it('equals matmul of the decompressed weight bit for bit (every kernel, batch 1..16, transB, accumulate), within 1e-5 of f64', async () => {
    const rng = new Rng(51);
    const shapes: Array<[number, number]> = [[37, 100], [16, 64], [9, 36], [1, 4], [70, 260]];
    for (const [rows, cols] of shapes) {
      for (const dtype of DTYPES) {
        const { a, dense } = sparseMatrix(rng, rows, cols, dtype);
        for (const n of [1, 2, 3, 4, 5, 7, 8, 9, 12, 16]) {
          const transB = (n + rows) % 2 === 0;
          const x = Tensor.from(rng.normals(cols * n), transB ? [n, cols] : [cols, n]);
          const want = matmulSync(dense, x, { transB });
          // f64 with the relative bound of issue 3 (relative to Σ|a·x|).
          for (let i = 0; i < rows; i++) {
            for (let j = 0; j < n; j++) {
              let s = 0;
              let mag = 0;
              for (let p = 0; p < cols; p++) {
                const term = valueAt(dense, i * cols + p) * (x.data[transB ? j * cols + p : p * n + j] as number);
                s += term;
                mag += Math.abs(term);
              }
              expect(Math.abs((want.data[i * n + j] as number) - s), `[${i}, ${j}]`).to.be.at.most(1e-5 * mag + 1e-30);
            }
          }
          for (const kernel of SPMM_KERNELS) {
            const what = `${rows}x${cols} ${dtype} n=${n} transB=${transB} ${kernel}`;
            const y = spmm24Sync(a, x, { transB, kernel, threads: 1 + (n % 3) });
            expect(y.shape).to.deep.equal([rows, n]);
            expect(bytesOf(y.data).equals(bytesOf(want.data)), what).to.equal(true);
            // accumulate: out += A·x, the chain starting from out.
            const init = rng.normals(rows * n);
            const out = Tensor.from(init.slice(), [rows, n], 'f32');
            const wantAcc = matmulSync(dense, x, { transB, out: Tensor.from(init.slice(), [rows, n], 'f32'), accumulate: true });
            const r = spmm24Sync(a, x, { transB, kernel, out, accumulate: true });
            expect(r).to.equal(out);
            expect(bytesOf(out.data).equals(bytesOf(wantAcc.data)), `${what} accumulate`).to.equal(true);
          }
        }
      }
    }
    const { a, dense } = sparseMatrix(rng, 33, 48, 'f32');
    const x = Tensor.from(rng.normals(48 * 6), [48, 6]);
    expect(bytesOf((await spmm24(a, x)).data).equals(bytesOf(matmulSync(dense, x).data))).to.equal(true);
  });

  it('writes every output element, reads only meta-selected columns, and names its kernels', () => {
    const rng = new Rng(52);
    const { a, dense } = sparseMatrix(rng, 21, 52, 'bf16');
    const x = Tensor.from(rng.normals(52 * 11), [52, 11]);
    const want = matmulSync(dense, x);
    for (const kernel of SPMM_KERNELS) {
      for (const fill of [0x00, 0xff]) {
        const out = Tensor.zeros([21, 11], 'f32');
        poison(fill, out.data);
        spmm24Sync(a, x, { kernel, out });
        expect(bytesOf(out.data).equals(bytesOf(want.data)), `${kernel} fill ${fill}`).to.equal(true);
      }
    }
    // The dropped positions of x are never read: Infinity there changes nothing.
    const xi = Tensor.from(x.data.slice(), [52, 11]);
    const keep = a.bitmask?.data as Uint8Array;
    for (let c = 0; c < 52; c++) if (!((keep[Math.floor(c / 8)] as number) & (1 << c % 8))) for (let j = 0; j < 11; j++) xi.data[c * 11 + j] = Infinity;
    // row 0 only: other rows keep other columns
    const row0 = new Sparse24Tensor({ shape: [1, 52], values: Tensor.from((a.values as Tensor).data.slice(0, 26), [1, 26], 'bf16'), meta: (a.meta as Int16Array).slice(0, 4) });
    for (const kernel of SPMM_KERNELS) {
      expect(bytesOf(spmm24Sync(row0, xi, { kernel }).data).equals(bytesOf(want.data.subarray(0, 11))), kernel).to.equal(true);
    }
    expect(spmm24Kernel('reference')).to.equal('reference');
    expect(spmm24Kernel()).to.equal(HAS_AVX512 ? 'avx512' : HAS_AVX2 ? 'avx2' : 'reference');
    if (HAS_AVX2) expect(spmm24Kernel('avx2')).to.equal('avx2');
    expect(spmm24Kernel('avx512')).to.equal(HAS_AVX512 ? 'avx512' : 'unavailable');
  });

  it('an empty row length gives zeros (or leaves out alone with accumulate); a -0 in out is where the dense chain differs', () => {
    const a = compress24Sync(Tensor.zeros([3, 0], 'f32'));
    const x = Tensor.zeros([0, 2], 'f32');
    for (const kernel of SPMM_KERNELS) {
      const y = spmm24Sync(a, x, { kernel, out: Tensor.from(new Float32Array(6).fill(NaN), [3, 2]) });
      expect(Array.from(y.data), kernel).to.deep.equal([0, 0, 0, 0, 0, 0]);
      const acc = spmm24Sync(a, x, { kernel, out: Tensor.from(new Float32Array([1, 2, 3, 4, 5, 6]), [3, 2]), accumulate: true });
      expect(Array.from(acc.data), kernel).to.deep.equal([1, 2, 3, 4, 5, 6]);
    }
    // The dense chain's dropped term fma(+0, 1, -0) is +0; the sparse chain
    // never sees it and keeps -0 (both -0 products): the documented exception.
    const s = compress24Sync(Tensor.from(new Float32Array([0, -1, -1, 0]), [1, 4]));
    const xs = Tensor.from(new Float32Array([1, 0, 0, 1]), [4, 1]);
    for (const kernel of SPMM_KERNELS) {
      const y = spmm24Sync(s, xs, { kernel, out: Tensor.from(new Float32Array([-0]), [1, 1]), accumulate: true });
      expect(Object.is(y.data[0], -0), kernel).to.equal(true);
    }
    const dense = matmulSync(decompress24Sync(s) as Tensor, xs, { out: Tensor.from(new Float32Array([-0]), [1, 1]), accumulate: true });
    expect(Object.is(dense.data[0], 0)).to.equal(true);
  });

  it('rejects bad arguments with the code and a message naming them', () => {
    const rng = new Rng(53);
    const { a } = sparseMatrix(rng, 8, 16, 'f32');
    const x = Tensor.from(rng.normals(16 * 2), [16, 2]);
    const q = compress24Sync(quantizeSync(decompress24Sync(a) as Tensor, { format: 'int8', groupSize: 16 }));
    const cases: Array<[() => unknown, string, RegExp]> = [
      [() => spmm24Sync(a, Tensor.from(rng.normals(15 * 2), [15, 2])), 'ERR_SHAPE', /inner dimensions differ: a is \[8, 16\], x is \[15, 2\]/],
      [() => spmm24Sync(a, x, { transB: true }), 'ERR_SHAPE', /inner dimensions differ.*transB/],
      [() => spmm24Sync(a, Tensor.from(new Float32Array(32), [2, 16, 1])), 'ERR_SHAPE', /x must be 2-D/],
      [() => spmm24Sync(a, tensorOf(x.data as Float32Array, [16, 2], 'f16')), 'ERR_DTYPE', /x has dtype f16/],
      [() => spmm24Sync(a, x, { accumulate: true }), 'ERR_VALUE', /options\.accumulate adds to options\.out, which is missing/],
      [() => spmm24Sync(a, x, { out: Tensor.zeros([8, 3], 'f32') }), 'ERR_SHAPE', /options\.out is \[8, 3\]; this call writes \[8, 2\]/],
      [() => spmm24Sync(a, x, { out: Tensor.from(x.data, [8, 4]) as Tensor<'f32'> }), 'ERR_SHAPE', /options\.out is \[8, 4\]/],
      [() => spmm24Sync(a, x, { out: Tensor.from(new Float32Array(x.data.buffer, 0, 16), [8, 2]) as Tensor<'f32'> }), 'ERR_VALUE', /options\.out shares memory with x/],
      [() => spmm24Sync(a, x, { kernel: 'cuda' }), 'ERR_UNSUPPORTED', /spmm24 has no CUDA kernel/],
      [() => spmm24Sync(a, x, { kernel: 'gpu' as never }), 'ERR_VALUE', /options\.kernel must be one of/],
      [() => spmm24Sync(a, x, { transB: 1 as never }), 'ERR_VALUE', /options\.transB must be a boolean/],
      [() => spmm24Sync(q, x), 'ERR_UNSUPPORTED', /spmm24 multiplies float values/],
      [() => spmm24Sync(new Sparse24Tensor({ shape: a.shape, values: a.values, bitmask: a.bitmask }), x), 'ERR_VALUE', /a has no meta/],
      [() => spmm24Sync(decompress24Sync(a) as never, x), 'ERR_VALUE', /a must be a Sparse24Tensor/],
    ];
    if (!HAS_AVX512) cases.push([() => spmm24Sync(a, x, { kernel: 'avx512' }), 'ERR_UNSUPPORTED', /AVX-512 kernel of spmm24 is not available/]);
    for (const [f, code, re] of cases) {
      const e = thrown(f);
      expect(e.code, re.source).to.equal(code);
      expect(e.message, re.source).to.match(re);
      expect(e.message).to.match(/^spmm24Sync: /);
    }
  });
});

// ---------------------------------------------------------------------------

describe('sparsity: the boundary', () => {
  it('the Promise forms give the bytes of the Sync forms', async () => {
    const rng = new Rng(61);
    const t = tensorOf(rng.normals(64 * 96), [64, 96], 'f16');
    const norms = Float32Array.from({ length: 96 }, () => rng.uniform());
    const options: PruneOptions = { pattern: '2:4', score: { activationNorms: norms } };
    const [p, ps] = [await prune(t, options), pruneSync(t, options)];
    expect(bytesOf(p.tensor.data).equals(bytesOf(ps.tensor.data))).to.equal(true);
    expect(bytesOf(p.mask.data).equals(bytesOf(ps.mask.data))).to.equal(true);
    const [c, cs] = [await compress24(p.tensor), compress24Sync(p.tensor)];
    expect(bytesOf(c.meta).equals(bytesOf(cs.meta))).to.equal(true);
    expect(bytesOf((c.values as Tensor).data).equals(bytesOf((cs.values as Tensor).data))).to.equal(true);
    expect(bytesOf(((await decompress24(c)) as Tensor).data).equals(bytesOf(p.tensor.data))).to.equal(true);
    const u = await pruneUnstructured(t, { sparsity: 0.3 });
    const us = pruneUnstructuredSync(t, { sparsity: 0.3 });
    expect(bytesOf(u.tensor.data).equals(bytesOf(us.tensor.data))).to.equal(true);
    expect([u.pruned, u.threshold]).to.deep.equal([us.pruned, us.threshold]);
    // Several calls in flight at once on the pool.
    const many = await Promise.all(Array.from({ length: 6 }, () => prune(t, { ...options, threads: 2 })));
    for (const r of many) expect(bytesOf(r.mask.data).equals(bytesOf(ps.mask.data))).to.equal(true);
  });

  // An async call either marks its buffers untransferable (the transfer
  // copies or is refused, the call returns the sync result) or works on
  // copies (the transfer moves the memory, the call rejects): README,
  // "Buffers and async calls"; the crash-prone variants are in
  // test/safety.test.ts.
  it(`a buffer transferred while an operation runs (${backends().buffers.async})`, async () => {
    const marked = backends().buffers.async === 'mark';
    const rows = 512;
    const cols = 2048;
    {
      const t = Tensor.from(new Rng(62).normals(rows * cols), [rows, cols]);
      const want = pruneSync(t, { pattern: '2:4' });
      const pending = prune(t, { pattern: '2:4', threads: 1 });
      const how = transferAway(t.data.buffer);
      if (marked) {
        expect(how).to.not.equal('moved');
        expect(bytesOf((await pending).tensor.data).equals(bytesOf(want.tensor.data))).to.equal(true);
      } else {
        expect(how).to.equal('moved');
        const e = await rejected(pending);
        expect(e.code).to.equal('ERR_DETACHED');
        expect(e.message).to.match(/^prune: input was detached or resized while the operation ran/);
      }
    }
    {
      const t = Tensor.from(new Rng(63).normals(rows * cols), [rows, cols]);
      const want = pruneUnstructuredSync(t, { sparsity: 0.5 });
      const pending = pruneUnstructured(t, { sparsity: 0.5, threads: 1 });
      const how = transferAway(t.data.buffer);
      if (marked) {
        expect(how).to.not.equal('moved');
        expect((await pending).threshold).to.equal(want.threshold);
      } else {
        expect((await rejected(pending)).code).to.equal('ERR_DETACHED');
      }
    }
    {
      const a = compress24Sync(Tensor.from(new Rng(64).normals(rows * cols), [rows, cols]), { prune: true });
      const x = Tensor.from(new Rng(65).normals(cols * 8), [cols, 8]);
      const want = spmm24Sync(a, x);
      const pending = spmm24(a, x, { threads: 1 });
      const how = transferAway(x.data.buffer);
      if (marked) {
        expect(how).to.not.equal('moved');
        expect(bytesOf((await pending).data).equals(bytesOf(want.data))).to.equal(true);
      } else {
        const e = await rejected(pending);
        expect(e.code).to.equal('ERR_DETACHED');
        expect(e.message).to.match(/^spmm24: x was detached/);
      }
    }
  });

  it('an input detached before the call is rejected up front', async () => {
    const x = new Float32Array(64);
    const t = Tensor.from(x, [4, 16]);
    const a = compress24Sync(t);
    structuredClone(x.buffer, { transfer: [x.buffer] });
    for (const p of [prune(t, { pattern: '2:4' }), compress24(t), pruneUnstructured(t, { sparsity: 0.5 })]) {
      const e = await rejected(p);
      expect(e.code).to.equal('ERR_DETACHED');
      expect(e.message).to.match(/input holds 0 elements but its shape needs 64/);
    }
    const xs = Tensor.from(new Float32Array(16 * 2), [16, 2]);
    const meta = a.meta as Int16Array;
    structuredClone(meta.buffer, { transfer: [meta.buffer] });
    for (const p of [decompress24(a), spmm24(a, xs)]) {
      const e = await rejected(p);
      expect(e.code).to.equal('ERR_DETACHED');
      expect(e.message).to.match(/a\.meta holds 0 words but \[4, 16\] needs 4/);
    }
    const v = (a.values as Tensor).data;
    structuredClone(v.buffer, { transfer: [v.buffer] });
    const e = thrown(() => decompress24Sync(a));
    expect(e.code).to.equal('ERR_DETACHED');
    expect(e.message).to.match(/^decompress24Sync: a\.values holds 0 elements/);
  });

  it('empty tensors (no rows or no columns) give empty results', async () => {
    for (const shape of [[0, 8], [3, 0], [2, 0, 4]]) {
      const t = Tensor.zeros(shape, 'f16');
      const p = pruneSync(t, { pattern: '2:4' });
      expect(p.tensor.shape).to.deep.equal(shape);
      expect(p.mask.shape).to.deep.equal([...shape.slice(0, -1), Math.ceil((shape[shape.length - 1] as number) / 8)]);
      const a = await compress24(t);
      expect((a.values as Tensor).shape).to.deep.equal([...shape.slice(0, -1), (shape[shape.length - 1] as number) / 2]);
      expect((decompress24Sync(a) as Tensor).shape).to.deep.equal(shape);
      expect(pruneUnstructuredSync(t, { sparsity: 0.5 }).pruned).to.equal(0);
    }
    const [r0, r1] = pruneUnstructuredSync([Tensor.zeros([0, 5], 'f32'), Tensor.from(new Float32Array([3, 1, 2, 4]), [4])], { sparsity: 0.5, scope: 'global' }) as [UnstructuredResult, UnstructuredResult];
    expect([r0.pruned, r1.pruned, r1.threshold]).to.deep.equal([0, 2, 2]);
  });

  it('bad options and inputs are rejected with the code and a message naming them', () => {
    const t = Tensor.from(new Float32Array(4 * 8), [4, 8]);
    const cases: Array<[() => unknown, string, RegExp]> = [
      [() => pruneSync(t, undefined as never), 'ERR_VALUE', /options\.pattern is required/],
      [() => pruneSync(t, { pattern: '2-4' }), 'ERR_VALUE', /options\.pattern must be 'N:M'/],
      [() => pruneSync(t, { pattern: '5:4' }), 'ERR_VALUE', /need 1 <= N <= M <= 32/],
      [() => pruneSync(t, { pattern: '0:4' }), 'ERR_VALUE', /need 1 <= N <= M <= 32/],
      [() => pruneSync(Tensor.zeros([2, 64], 'f32'), { pattern: '2:64' }), 'ERR_VALUE', /need 1 <= N <= M <= 32/],
      [() => pruneSync(t, { pattern: '2:4', score: 'wanda' as never }), 'ERR_VALUE', /options\.score must be 'magnitude' or \{ activationNorms: Float32Array \}/],
      [() => pruneSync(t, { pattern: '2:4', score: { activationNorms: new Float32Array(7) } }), 'ERR_SHAPE', /activationNorms has 7 values; the input's last dimension is 8/],
      [() => pruneSync(t, { pattern: '2:4', score: { activationNorms: new Float64Array(8) as never } }), 'ERR_VALUE', /activationNorms must be a Float32Array/],
      [() => pruneSync(t, { pattern: '2:4', score: { activationNorms: new Float32Array(8).fill(-1) } }), 'ERR_VALUE', /activationNorms\[0\] is -1; norms must be finite and >= 0/],
      [() => pruneSync(t, { pattern: '2:4', score: { activationNorms: new Float32Array([1, 1, 1, NaN, 1, 1, 1, 1]) } }), 'ERR_VALUE', /activationNorms\[3\] is NaN/],
      [() => pruneSync(t, { pattern: '2:4', kernel: 'avx512' }), 'ERR_UNSUPPORTED', /prune\/compress24 has no AVX-512 kernel/],
      [() => pruneSync(t, { pattern: '2:4', kernel: 'fast' as never }), 'ERR_VALUE', /options\.kernel must be one of/],
      [() => pruneSync(t, { pattern: '2:4', threads: 1.5 }), 'ERR_VALUE', /options\.threads must be an integer/],
      [() => pruneSync(t, { pattern: '2:4', sparsity: 0.5 } as never), 'ERR_VALUE', /unknown option "sparsity"/],
      [() => pruneSync(Tensor.from(new Int32Array(8), [2, 4]), { pattern: '2:4' }), 'ERR_DTYPE', /input has dtype i32/],
      [() => pruneSync(new Float32Array(8) as never, { pattern: '2:4' }), 'ERR_VALUE', /input must be a Tensor/],
      [() => compress24Sync(t, { prune: 1 as never }), 'ERR_VALUE', /options\.prune must be a boolean/],
      [() => compress24Sync(t, { score: 'magnitude' }), 'ERR_VALUE', /options\.score .* needs prune: true/],
      [() => compress24Sync(t, { prune: true, mask: Tensor.zeros([4, 1], 'u8') }), 'ERR_VALUE', /prune and options\.mask exclude each other/],
      [() => compress24Sync(t, { mask: Tensor.zeros([4, 2], 'u8') }), 'ERR_SHAPE', /options\.mask is \[4, 2\]; a bitmask of \[4, 8\] is \[4, 1\]/],
      [() => compress24Sync(t, { mask: Tensor.zeros([4, 1], 'i8') as never }), 'ERR_DTYPE', /options\.mask has dtype i8/],
      [() => decompress24Sync(t as never), 'ERR_VALUE', /expected a Sparse24Tensor/],
      [() => decompress24Sync(compress24Sync(t), { kernel: 'avx2' } as never), 'ERR_VALUE', /unknown option "kernel"/],
      [() => new Sparse24Tensor({ shape: [4, 8], values: Tensor.zeros([4, 3], 'f32'), meta: new Int16Array(4) }), 'ERR_SHAPE', /values is \[4, 3\]; a 2:4 tensor of \[4, 8\] keeps \[4, 4\]/],
      [() => new Sparse24Tensor({ shape: [4, 8], values: Tensor.zeros([4, 4], 'f32'), meta: new Int16Array(3) }), 'ERR_SHAPE', /meta holds 3 words; \[4, 8\] needs 4/],
      [() => new Sparse24Tensor({ shape: [4, 8], values: Tensor.zeros([4, 4], 'f32'), meta: new Int32Array(4) as never }), 'ERR_VALUE', /meta must be an Int16Array/],
      [() => new Sparse24Tensor({ shape: [4, 8], values: Tensor.zeros([4, 4], 'f32') }), 'ERR_VALUE', /give meta, bitmask or both/],
      [() => new Sparse24Tensor({ shape: [4, 6], values: Tensor.zeros([4, 3], 'f32'), meta: new Int16Array(4) }), 'ERR_SHAPE', /not a multiple of M = 4/],
      [() => new Sparse24Tensor({ shape: [4, 8], values: Tensor.zeros([4, 4], 'f32'), bitmask: Tensor.zeros([4, 2], 'u8') }), 'ERR_SHAPE', /bitmask is \[4, 2\]; \[4, 8\] needs \[4, 1\]/],
    ];
    for (const [f, code, re] of cases) {
      const e = thrown(f);
      expect(e.code, re.source).to.equal(code);
      expect(e.message, re.source).to.match(re);
    }
  });
});

// ---------------------------------------------------------------------------
// CUDA: the default build has no CUDA kernels; the CUDA build
// (build-cuda/, compiled by scripts/check-cuda.cjs wherever nvcc exists) is
// loaded directly, as test/cuda.test.ts does.

interface RawSparse extends RawAddon {
  sparseSelect: (args: NativeArgs, async: boolean) => Promise<undefined> | undefined;
}

describe('sparsity: CUDA', function () {
  waitForCudaCheck();

  it("the default build rejects kernel 'cuda' with ERR_UNSUPPORTED", async function () {
    if (backends().cuda.compiled) skip(this, 'build/ holds a CUDA build; see the tests below');
    const t = Tensor.from(new Float32Array(16), [2, 8]);
    const e = await rejected(prune(t, { pattern: '2:4', kernel: 'cuda' }));
    expect(e.code).to.equal('ERR_UNSUPPORTED');
    expect(e.message).to.match(/^prune: this build has no CUDA kernels/);
    expect(thrown(() => compress24Sync(t, { kernel: 'cuda' })).code).to.equal('ERR_UNSUPPORTED');
  });

  it("without a device, kernel 'cuda' rejects with ERR_UNSUPPORTED and the reason", async function () {
    const cb = requireCudaBuild<RawSparse>(this, 'sparseSelect');
    const c = cb.backends().cuda;
    if (c.available) skip(this, 'a CUDA device is available; see the comparison test');
    const sel = cb.sparseSelect;
    const { args } = planPrune(Tensor.from(new Float32Array(64), [4, 16]), { pattern: '2:4', kernel: 'cuda' }, 'test');
    const e = await rejected(sel(args, true) as Promise<undefined>);
    expect(e.code).to.equal('ERR_UNSUPPORTED');
    expect(e.message).to.contain(c.reason as string);
    // The CPU path of the CUDA build is the default build's.
    const t = tensorOf(tiedValues(new Rng(71), 8 * 40), [8, 40], 'f16');
    const { args: cpu, result } = planCompress24(t, { prune: true, kernel: 'reference' }, 'test');
    sel(cpu, false);
    const here = compress24Sync(t, { prune: true });
    expect(bytesOf(result.meta).equals(bytesOf(here.meta))).to.equal(true);
  });

  it('with a device: mask, dense, values and meta equal the CPU reference byte for byte', function () {
    const cb = requireCudaBuild<RawSparse>(this, 'sparseSelect');
    const c = cb.backends().cuda;
    if (!c.available) skip(this, `no CUDA device: ${c.reason ?? 'unknown'}`);
    const sel = cb.sparseSelect;
    const rng = new Rng(72);
    for (const dtype of DTYPES) {
      for (const pattern of ['2:4', '1:4', '4:8', '2:6']) {
        const m = Number(pattern.split(':')[1]);
        const rows = 33;
        const cols = m * 27;
        const t = tensorOf(tiedValues(rng, rows * cols), [rows, cols], dtype);
        const norms = Float32Array.from({ length: cols }, () => rng.uniform());
        for (const score of ['magnitude', { activationNorms: norms }] as const) {
          const dev = planPrune(t, { pattern, score, kernel: 'cuda' }, 'test');
          sel(dev.args, false);
          const ref = pruneSync(t, { pattern, score, kernel: 'reference' });
          expect(bytesOf(dev.result.mask.data).equals(bytesOf(ref.mask.data)), `${dtype} ${pattern}`).to.equal(true);
          expect(bytesOf(dev.result.tensor.data).equals(bytesOf(ref.tensor.data)), `${dtype} ${pattern}`).to.equal(true);
        }
        if (pattern === '2:4') {
          const dev = planCompress24(t, { prune: true, kernel: 'cuda' }, 'test');
          sel(dev.args, false);
          const ref = compress24Sync(t, { prune: true, kernel: 'reference' });
          expect(bytesOf(dev.result.meta).equals(bytesOf(ref.meta))).to.equal(true);
          expect(bytesOf((dev.result.values as Tensor).data).equals(bytesOf((ref.values as Tensor).data))).to.equal(true);
        }
      }
    }
  });
});
