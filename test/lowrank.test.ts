// The lowrank room: GEMM kernels against the scalar reference (bit for bit)
// and the reference against an independent f64 product; exact SVD against
// the analytic spectra of U·diag(s)·Vᵀ matrices built here; the randomized
// SVD against the Eckart–Young optimum; rank rules; activation-aware
// whitening; the boundary (async = sync, errors, detached buffers); the
// CUDA build without a device.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  backends,
  f32ToBf16,
  f32ToF16,
  lowRank,
  lowRankSync,
  matmul,
  matmulSync,
  svd,
  svdSync,
  Tensor,
  type LowRankKernel,
  type LowRankOptions,
} from '../lib/index';
import { planLowRank, planMatmul } from '../lib/lowrank';
import type { NativeArgs, NativeLowRank } from '../lib/native';
import { bytesOf, rejected, thrown, transferAway } from './support/assert';
import { requireCudaBuild, CUDA_ADDON, type RawAddon, waitForCudaCheck } from './support/cuda-build';
import { Rng } from './support/random';
import { kernelsHere, simdUnavailable, skip } from './support/skip';

const HW = backends().cpu;
const HAS_AVX512 = HW.kernel === 'avx512';


// ---------------------------------------------------------------------------
// Test matrices

function randn(rng: Rng, n: number): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal();
  return a;
}

/** rows x cols (rows >= cols) with orthonormal columns: Gram–Schmidt twice, in f64. */
function orthonormal(rng: Rng, rows: number, cols: number): Float64Array {
  const q = randn(rng, rows * cols);
  for (let j = 0; j < cols; j++) {
    for (let pass = 0; pass < 2; pass++) {
      for (let p = 0; p < j; p++) {
        let d = 0;
        for (let i = 0; i < rows; i++) d += (q[i * cols + p] as number) * (q[i * cols + j] as number);
        for (let i = 0; i < rows; i++) q[i * cols + j] = (q[i * cols + j] as number) - d * (q[i * cols + p] as number);
      }
    }
    let nrm = 0;
    for (let i = 0; i < rows; i++) nrm += (q[i * cols + j] as number) ** 2;
    nrm = Math.sqrt(nrm);
    for (let i = 0; i < rows; i++) q[i * cols + j] = (q[i * cols + j] as number) / nrm;
  }
  return q;
}

/** U·diag(s)·Vᵀ (m x n) with random orthonormal U (m x r) and V (n x r), r = s.length. */
function withSpectrum(rng: Rng, m: number, n: number, s: readonly number[]): Float32Array {
  const r = s.length;
  const u = orthonormal(rng, m, r);
  const v = orthonormal(rng, n, r);
  const a = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let c = 0; c < r; c++) acc += (u[i * r + c] as number) * (s[c] as number) * (v[j * r + c] as number);
      a[i * n + j] = acc;
    }
  }
  return a;
}

const inverse = (r: number): number[] => Array.from({ length: r }, (_, i) => 1 / (i + 1));
const geometric = (r: number, q: number): number[] => Array.from({ length: r }, (_, i) => q ** i);

function gaussian(rng: Rng, rows: number, cols: number): Tensor<'f32'> {
  return Tensor.from(rng.normals(rows * cols), [rows, cols]);
}

/** A · B in f64 (plain loops): the independent oracle of the GEMM reference. */
function product64(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number, ta = false, tb = false): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let p = 0; p < k; p++) acc += (a[ta ? p * m + i : i * k + p] as number) * (b[tb ? j * k + p : p * n + j] as number);
      c[i * n + j] = acc;
    }
  }
  return c;
}

/** max |x − y| / max |y|. */
function relMaxDiff(x: ArrayLike<number>, y: ArrayLike<number>): number {
  let d = 0;
  let s = 0;
  for (let i = 0; i < y.length; i++) {
    d = Math.max(d, Math.abs((x[i] as number) - (y[i] as number)));
    s = Math.max(s, Math.abs(y[i] as number));
  }
  return s === 0 ? d : d / s;
}

/** max |QᵀQ − I| for the columns (byRows: the rows) of q. */
function orthoError(q: Float32Array, rows: number, cols: number, byRows = false): number {
  const nv = byRows ? rows : cols;
  const len = byRows ? cols : rows;
  const at = (v: number, t: number): number => (byRows ? (q[v * cols + t] as number) : (q[t * cols + v] as number));
  let e = 0;
  for (let a = 0; a < nv; a++) {
    for (let b = a; b < nv; b++) {
      let d = 0;
      for (let t = 0; t < len; t++) d += at(a, t) * at(b, t);
      e = Math.max(e, Math.abs(d - (a === b ? 1 : 0)));
    }
  }
  return e;
}

function frob(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += (x[i] as number) ** 2;
  return Math.sqrt(s);
}

/** ‖A − L·R‖ / ‖A‖ computed here in f64. */
function relError(a: Float32Array, left: Tensor<'f32'>, right: Tensor<'f32'>): number {
  const [m, r] = left.shape as [number, number];
  const n = right.shape[1] as number;
  const lr = product64(left.data, right.data, m, r, n);
  let d = 0;
  for (let i = 0; i < a.length; i++) d += ((a[i] as number) - (lr[i] as number)) ** 2;
  return Math.sqrt(d) / frob(a);
}

function ekartYoung(s: readonly number[], r: number): number {
  const tot = s.reduce((t, v) => t + v * v, 0);
  const tail = s.slice(r).reduce((t, v) => t + v * v, 0);
  return Math.sqrt(tail / tot);
}

// ---------------------------------------------------------------------------

describe('lowrank: matmul kernels', function () {
  // Odd sizes around every blocking boundary: micro tiles (AVX2 6x16,
  // AVX-512 24x16), the skinny limits (8 and 16), the k-slab (256).
  const SHAPES: [number, number, number][] = [
    [1, 1, 1], [17, 33, 5], [5, 17, 33], [33, 5, 17], [1, 100, 7], [100, 1, 7], [7, 3, 100], [64, 64, 64],
    [13, 47, 300], [200, 150, 513], [250, 31, 260], [31, 250, 260], [197, 193, 257], [25, 17, 9], [40, 9, 70], [9, 40, 70],
  ];
  const kernels = ['avx2', 'avx512'] as const;

  function run(kernel: LowRankKernel, a: Tensor, b: Tensor, ta: boolean, tb: boolean): Buffer {
    return bytesOf(matmulSync(a, b, { transA: ta, transB: tb, kernel }).data);
  }

  it('the reference equals an f64 product to f32 rounding (odd shapes, transposes)', function () {
    const rng = new Rng(11);
    for (const [m, n, k] of SHAPES) {
      for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
        const a = gaussian(rng, ta ? k : m, ta ? m : k);
        const b = gaussian(rng, tb ? n : k, tb ? k : n);
        const c = matmulSync(a, b, { transA: ta, transB: tb, kernel: 'reference' });
        expect(c.shape).to.deep.equal([m, n]);
        const ref = product64(a.data, b.data, m, k, n, ta, tb);
        expect(relMaxDiff(c.data, ref), `${m}x${n}x${k} ${ta} ${tb}`).to.be.below(2e-6 * Math.sqrt(k));
      }
    }
  });

  for (const kernel of kernels) {
    it(`${kernel} equals the reference bit for bit (odd shapes, transposes, non-multiples of the block)`, function () {
      const why = simdUnavailable(kernel);
      if (why !== null) skip(this, why);
      const rng = new Rng(kernel === 'avx2' ? 21 : 22);
      const diffs: string[] = [];
      for (const [m, n, k] of SHAPES) {
        for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
          const a = gaussian(rng, ta ? k : m, ta ? m : k);
          const b = gaussian(rng, tb ? n : k, tb ? k : n);
          if (!run(kernel, a, b, ta, tb).equals(run('reference', a, b, ta, tb))) diffs.push(`${m}x${n}x${k} transA=${ta} transB=${tb}`);
        }
      }
      expect(diffs).to.deep.equal([]);
    });

    it(`${kernel}: f16 and bf16 inputs converted while packing, bit for bit`, function () {
      const why = simdUnavailable(kernel);
      if (why !== null) skip(this, why);
      const rng = new Rng(31);
      for (const [m, n, k] of [[37, 29, 270], [3, 200, 41], [200, 5, 41], [50, 50, 50]] as const) {
        for (const dt of ['f16', 'bf16'] as const) {
          const conv = dt === 'f16' ? f32ToF16 : f32ToBf16;
          const a = Tensor.from(Uint16Array.from(rng.normals(m * k), conv), [m, k], dt);
          const b = Tensor.from(Uint16Array.from(rng.normals(k * n), conv), [n, k], dt);
          const bf = gaussian(rng, k, n);
          for (const [x, y, tb] of [[a, b, true], [a, bf, false]] as const) {
            const got = bytesOf(matmulSync(x, y, { transB: tb, kernel }).data);
            const want = bytesOf(matmulSync(x, y, { transB: tb, kernel: 'reference' }).data);
            expect(got.equals(want), `${dt} ${m}x${n}x${k} transB=${tb}`).to.equal(true);
          }
        }
      }
    });
  }

  const WIDE_B_KERNELS = kernelsHere('lowrank: matmul with a wide B', ['avx2', 'avx512'] as const);
  it('a wide B (more than the stationary budget) takes the column-blocked path, same bits', function () {
    const why = simdUnavailable('avx2');
    if (why !== null) skip(this, why);
    const rng = new Rng(41);
    // k * n * 4 bytes = 36 MB > 32 MB: B is packed one column block at a time.
    const a = gaussian(rng, 17, 1100);
    const b = gaussian(rng, 1100, 8200);
    const want = bytesOf(matmulSync(a, b, { kernel: 'reference' }).data);
    for (const kernel of WIDE_B_KERNELS) {
      expect(bytesOf(matmulSync(a, b, { kernel }).data).equals(want), kernel).to.equal(true);
    }
  });

  it('is the same for every thread count, and accumulate adds the chain to out', async function () {
    const rng = new Rng(51);
    const a = gaussian(rng, 300, 500);
    const b = gaussian(rng, 500, 140);
    const one = matmulSync(a, b, { threads: 1 });
    const two = await matmul(a, b, { threads: 2 });
    expect(bytesOf(one.data).equals(bytesOf(two.data))).to.equal(true);
    // C = A[:, :250]·B[:250] then C += A[:, 250:]·B[250:] is the one chain
    // split in two (the stored f32 is what the register held).
    const a1 = Tensor.from(new Float32Array(300 * 250), [300, 250], 'f32');
    const a2 = Tensor.from(new Float32Array(300 * 250), [300, 250], 'f32');
    for (let i = 0; i < 300; i++) {
      a1.data.set(a.data.subarray(i * 500, i * 500 + 250), i * 250);
      a2.data.set(a.data.subarray(i * 500 + 250, i * 500 + 500), i * 250);
    }
    const b1 = Tensor.from(b.data.slice(0, 250 * 140), [250, 140]);
    const b2 = Tensor.from(b.data.slice(250 * 140), [250, 140]);
    const out = matmulSync(a1, b1);
    const same = matmulSync(a2, b2, { out, accumulate: true });
    expect(same).to.equal(out);
    expect(bytesOf(out.data).equals(bytesOf(one.data))).to.equal(true);
  });

  it('writes every output element (prefilled out, two patterns) and k = 0 gives zeros', function () {
    const rng = new Rng(61);
    for (const [m, n, k] of [[29, 31, 40], [100, 3, 20], [3, 100, 20], [5, 7, 0]] as const) {
      const a = gaussian(rng, m, k);
      const b = gaussian(rng, k, n);
      const results = [NaN, 12345].map((fill) => {
        const out = Tensor.from(new Float32Array(m * n).fill(fill), [m, n], 'f32');
        return bytesOf(matmulSync(a, b, { out }).data);
      });
      expect((results[0] as Buffer).equals(results[1] as Buffer), `${m}x${n}x${k}`).to.equal(true);
      if (k === 0) expect(Array.from(matmulSync(a, b).data).every((v) => v === 0)).to.equal(true);
    }
  });

  it('async and sync agree; a skinny right-hand side (batch 1–16) matches the packed result of the reference', async function () {
    const rng = new Rng(71);
    const w = gaussian(rng, 700, 300);
    for (const batch of [1, 2, 5, 8, 13, 16]) {
      const x = gaussian(rng, 300, batch);
      const s = matmulSync(w, x);
      const p = await matmul(w, x);
      expect(bytesOf(s.data).equals(bytesOf(p.data)), `batch ${batch}`).to.equal(true);
      expect(bytesOf(s.data).equals(bytesOf(matmulSync(w, x, { kernel: 'reference' }).data)), `batch ${batch}`).to.equal(true);
      // the activations-times-weightsᵀ form: X (batch x 300) · Wᵀ
      const xt = gaussian(rng, batch, 300);
      const y = matmulSync(xt, w, { transB: true });
      expect(bytesOf(y.data).equals(bytesOf(matmulSync(xt, w, { transB: true, kernel: 'reference' }).data))).to.equal(true);
    }
  });
});

describe('lowrank: exact svd against analytic spectra', function () {
  const rng = new Rng(101);
  const cases: { name: string; m: number; n: number; s: number[] }[] = [
    { name: '1/i, tall', m: 60, n: 40, s: inverse(40) },
    { name: '1/i, wide', m: 40, n: 70, s: inverse(40) },
    { name: 'geometric 0.8^i', m: 50, n: 50, s: geometric(50, 0.8) },
    { name: 'repeated values', m: 45, n: 12, s: [3, 3, 3, 2, 2, 1, 1, 1, 1, 0.5, 0.5, 0.25] },
    { name: 'rank-deficient (rank 3 of 20)', m: 50, n: 20, s: [5, 4, 3] },
    { name: '1 x n', m: 1, n: 30, s: [2.5] },
    { name: 'n x 1', m: 30, n: 1, s: [1.5] },
    { name: 'tall enough for QR first', m: 300, n: 50, s: inverse(50) },
  ];
  for (const c of cases) {
    it(`${c.name}: singular values, orthonormal U and V, reconstruction`, function () {
      const a = withSpectrum(rng, c.m, c.n, c.s);
      const r = svdSync(Tensor.from(a, [c.m, c.n]));
      const full = Math.min(c.m, c.n);
      expect(r.s.length).to.equal(full);
      expect(r.u.shape).to.deep.equal([c.m, full]);
      expect(r.vt.shape).to.deep.equal([full, c.n]);
      const want = Array.from({ length: full }, (_, i) => c.s[i] ?? 0);
      for (let i = 0; i < full; i++) {
        expect(Math.abs((r.s[i] as number) - (want[i] as number)), `σ${i}`).to.be.below(2e-6 * (want[0] as number));
        if (i > 0) expect(r.s[i] as number).to.be.at.most(r.s[i - 1] as number);
      }
      expect(orthoError(r.u.data, c.m, full)).to.be.below(1e-5);
      expect(orthoError(r.vt.data, full, c.n, true)).to.be.below(1e-5);
      const us = Tensor.from(Float32Array.from(r.u.data, (v, idx) => v * (r.s[idx % full] as number)), [c.m, full], 'f32');
      expect(relError(a, us, r.vt)).to.be.below(1e-5);
    });
  }

  it('k keeps the top triplets; f16 input; async = sync', async function () {
    const a = withSpectrum(rng, 40, 30, inverse(30));
    const t = Tensor.from(a, [40, 30]);
    const top = svdSync(t, { k: 5 });
    expect(top.s.length).to.equal(5);
    expect(top.u.shape).to.deep.equal([40, 5]);
    expect(top.vt.shape).to.deep.equal([5, 30]);
    const all = svdSync(t);
    expect(Array.from(top.s)).to.deep.equal(Array.from(all.s.subarray(0, 5)));
    const p = await svd(t, { k: 5 });
    expect(bytesOf(p.u.data).equals(bytesOf(top.u.data))).to.equal(true);
    expect(bytesOf(p.vt.data).equals(bytesOf(top.vt.data))).to.equal(true);
    const h = svdSync(Tensor.from(Uint16Array.from(a, f32ToF16), [40, 30], 'f16'));
    for (let i = 0; i < 30; i++) expect(Math.abs((h.s[i] as number) - (all.s[i] as number))).to.be.below(2e-3);
  });
});

describe('lowrank: lowRank', function () {
  const rng = new Rng(201);
  const S = inverse(200);
  const A = withSpectrum(rng, 300, 200, S);
  const T = Tensor.from(A, [300, 200]);

  it('exact: relError is measured and equals the Eckart–Young optimum; W ≈ left · right', function () {
    for (const rank of [1, 7, 40]) {
      const r = lowRankSync(T, { rank, method: 'exact' });
      expect(r.rank).to.equal(rank);
      expect(r.method).to.equal('exact');
      expect(r.left.shape).to.deep.equal([300, rank]);
      expect(r.right.shape).to.deep.equal([rank, 200]);
      const opt = ekartYoung(S, rank);
      expect(Math.abs(r.optimalRelError - opt)).to.be.below(1e-5);
      expect(Math.abs(r.relError - opt)).to.be.below(1e-5);
      expect(Math.abs(relError(A, r.left, r.right) - r.relError)).to.be.below(1e-5);
    }
  });

  it('randomized: error <= 1.05 x optimal on a 1/i spectrum at q = 2 (and > optimal); more sketch, more accuracy', function () {
    for (const rank of [10, 20, 40]) {
      const r = lowRankSync(T, { rank, method: 'randomized', powerIters: 2 });
      expect(r.method).to.equal('randomized');
      expect(r.samples).to.be.at.least(rank + 10);
      const opt = ekartYoung(S, rank);
      expect(r.relError / opt, `rank ${rank}`).to.be.below(1.05);
      expect(r.relError).to.be.at.least(opt * (1 - 1e-6));
      expect(Math.abs(relError(A, r.left, r.right) - r.relError)).to.be.below(1e-5);
      expect(r.singularValues.length).to.equal(r.samples);
    }
    const q0 = lowRankSync(T, { rank: 20, method: 'randomized', powerIters: 0 });
    const q2 = lowRankSync(T, { rank: 20, method: 'randomized', powerIters: 2 });
    expect(q2.relError).to.be.below(q0.relError);
  });

  it('randomized: the seed decides the sketch; the same seed gives the same bits on any thread count and kernel', function () {
    const base = lowRankSync(T, { rank: 12, method: 'randomized', seed: 5, threads: 1 });
    const again = lowRankSync(T, { rank: 12, method: 'randomized', seed: 5, threads: 2 });
    expect(bytesOf(base.left.data).equals(bytesOf(again.left.data))).to.equal(true);
    expect(bytesOf(base.right.data).equals(bytesOf(again.right.data))).to.equal(true);
    const other = lowRankSync(T, { rank: 12, method: 'randomized', seed: 6 });
    expect(bytesOf(base.left.data).equals(bytesOf(other.left.data))).to.equal(false);
  });

  it('randomized: kernel avx2 gives the same bits as auto', function () {
    const why = simdUnavailable('avx2');
    if (why !== null) skip(this, why);
    const base = lowRankSync(T, { rank: 12, method: 'randomized', seed: 5, threads: 1 });
    const k2 = lowRankSync(T, { rank: 12, method: 'randomized', seed: 5, kernel: 'avx2' });
    expect(bytesOf(base.right.data).equals(bytesOf(k2.right.data))).to.equal(true);
  });

  it('energy picks the smallest rank holding the fraction of Σσ²; ratio the largest rank within the budget', function () {
    const total = S.reduce((t, v) => t + v * v, 0);
    for (const energy of [0.5, 0.9, 0.97, 0.995]) {
      let acc = 0;
      let want = 0;
      while (acc < energy * total) acc += (S[want++] as number) ** 2;
      const r = lowRankSync(T, { energy, method: 'exact' });
      expect(r.rank, `energy ${energy}`).to.equal(want);
      expect(1 - r.optimalRelError ** 2).to.be.at.least(energy - 1e-6);
    }
    for (const ratio of [0.05, 0.2, 0.5]) {
      const r = lowRankSync(T, { ratio });
      expect(r.rank, `ratio ${ratio}`).to.equal(Math.floor((ratio * 300 * 200) / 500));
      expect(r.rank * 500).to.be.at.most(ratio * 300 * 200);
    }
    expect(lowRankSync(T, { ratio: 5 }).rank).to.equal(200);
  });

  it('energy with the randomized method grows the sketch until the estimates hold it', function () {
    const big = withSpectrum(rng, 400, 300, geometric(300, 0.95));
    const t = Tensor.from(big, [400, 300]);
    const exact = lowRankSync(t, { energy: 0.95, method: 'exact' });
    const rand = lowRankSync(t, { energy: 0.95, method: 'randomized' });
    expect(rand.method).to.equal('randomized');
    // The estimates are <= the true values: the rule can only keep more.
    expect(rand.rank).to.be.within(exact.rank, exact.rank + 2);
    expect(1 - rand.relError ** 2).to.be.at.least(0.95 - 1e-4);
  });

  it('auto picks exact for small matrices and randomized for large ones with a small rank', function () {
    expect(lowRankSync(T, { rank: 5 }).method).to.equal('exact');
    const big = Tensor.from(new Rng(3).normals(520 * 400), [520, 400]);
    expect(lowRankSync(big, { rank: 8 }).method).to.equal('randomized');
    expect(lowRankSync(big, { rank: 200 }).method).to.equal('exact');
  });

  it('async and sync agree', async function () {
    const o: LowRankOptions = { rank: 9, method: 'randomized', seed: 3 };
    const s = lowRankSync(T, o);
    const p = await lowRank(T, o);
    expect(bytesOf(p.left.data).equals(bytesOf(s.left.data))).to.equal(true);
    expect(bytesOf(p.right.data).equals(bytesOf(s.right.data))).to.equal(true);
    expect(p.relError).to.equal(s.relError);
  });
});

describe('lowrank: activation-aware factorization', function () {
  // Correlated activations: X (samples x n) = Z·M with a random mixing M
  // and strongly unequal column scales, so the directions that matter for
  // the output are not the ones with the largest weights.
  const rng = new Rng(301);
  const m = 96;
  const n = 64;
  const N = 400;
  const mix = rng.normals(n * n);
  const scales = Float64Array.from({ length: n }, (_, j) => Math.exp(-j / 16) * 3);
  const X = new Float32Array(N * n);
  for (let s = 0; s < N; s++) {
    const z = rng.normals(n);
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let p = 0; p < n; p++) acc += (z[p] as number) * (scales[p] as number) * (mix[p * n + j] as number);
      X[s * n + j] = acc;
    }
  }
  const W = rng.normals(m * n);
  const Wt = Tensor.from(W, [m, n]);
  const gram = Float32Array.from(product64(X, X, n, N, n, true, false));

  /** ‖(W − L·R)·Xᵀ‖ / ‖W·Xᵀ‖ */
  function outputError(left: Tensor<'f32'>, right: Tensor<'f32'>): number {
    const r = left.shape[1] as number;
    const lr = product64(left.data, right.data, m, r, n);
    const e = Float64Array.from(W, (v, i) => v - (lr[i] as number));
    return frob(product64(e, X, m, n, N, false, true)) / frob(product64(W, X, m, n, N, false, true));
  }

  it('gram whitening (SVD-LLM) lowers the output-space error against plain SVD, and reports it', function () {
    for (const rank of [4, 12, 24]) {
      const plain = lowRankSync(Wt, { rank, method: 'exact' });
      const white = lowRankSync(Wt, { rank, method: 'exact', whiten: { gram } });
      const ePlain = outputError(plain.left, plain.right);
      const eWhite = outputError(white.left, white.right);
      expect(eWhite, `rank ${rank}`).to.be.below(ePlain * 0.9);
      expect(white.damping).to.equal(0);
      expect(Math.abs(white.relError - eWhite), `rank ${rank}: reported vs measured here`).to.be.below(2e-4);
      // optimal in output space: the whitened spectrum's Eckart–Young error
      expect(Math.abs(white.optimalRelError - white.relError)).to.be.below(2e-4);
    }
  });

  it('randomized whitening is within 5 % of exact whitening', function () {
    const ex = lowRankSync(Wt, { rank: 12, method: 'exact', whiten: { gram } });
    const rd = lowRankSync(Wt, { rank: 12, method: 'randomized', whiten: { gram } });
    expect(rd.relError / ex.relError).to.be.below(1.05);
  });

  it('a singular Gram (fewer samples than inputs) is damped, and the reported error stays the output error', function () {
    const few = X.subarray(0, 20 * n);
    const g = Float32Array.from(product64(few, few, n, 20, n, true, false));
    const r = lowRankSync(Wt, { rank: 8, method: 'exact', whiten: { gram: g } });
    expect(r.damping).to.be.above(0);
    const lr = product64(r.left.data, r.right.data, m, 8, n);
    const e = Float64Array.from(W, (v, i) => v - (lr[i] as number));
    const want = frob(product64(e, few, m, n, 20, false, true)) / frob(product64(W, few, m, n, 20, false, true));
    expect(Math.abs(r.relError - want)).to.be.below(1e-3);
  });

  it('activationScale (ASVD) lowers the scaled error against plain SVD, and reports it', function () {
    const s = Float32Array.from({ length: n }, (_, j) => {
      let acc = 0;
      for (let t = 0; t < N; t++) acc += Math.abs(X[t * n + j] as number);
      return acc / N;
    });
    const scaledErr = (left: Tensor<'f32'>, right: Tensor<'f32'>): number => {
      const r = left.shape[1] as number;
      const lr = product64(left.data, right.data, m, r, n);
      let d = 0;
      let w = 0;
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          d += (((W[i * n + j] as number) - (lr[i * n + j] as number)) * (s[j] as number)) ** 2;
          w += ((W[i * n + j] as number) * (s[j] as number)) ** 2;
        }
      }
      return Math.sqrt(d / w);
    };
    const plain = lowRankSync(Wt, { rank: 10, method: 'exact' });
    const asvd = lowRankSync(Wt, { rank: 10, method: 'exact', whiten: { activationScale: s } });
    expect(scaledErr(asvd.left, asvd.right)).to.be.below(scaledErr(plain.left, plain.right));
    expect(Math.abs(asvd.relError - scaledErr(asvd.left, asvd.right))).to.be.below(1e-5);
    // The output error follows (the scales carry most of the activations' structure here).
    expect(outputError(asvd.left, asvd.right)).to.be.below(outputError(plain.left, plain.right));
  });
});

describe('lowrank: errors', function () {
  const t = Tensor.from(new Rng(1).normals(12), [3, 4]);

  it('matmul: shapes, dtypes, options, out', async function () {
    const e1 = thrown(() => matmulSync(t, t));
    expect(e1.code).to.equal('ERR_SHAPE');
    expect(e1.message).to.match(/^matmulSync: inner dimensions differ: op\(a\) is \[3, 4\].*op\(b\) is \[3, 4\]/);
    expect((await rejected(matmul(t, t))).message).to.match(/^matmul: inner dimensions differ/);
    expect(thrown(() => matmulSync(t.reshape([12]), t)).code).to.equal('ERR_SHAPE');
    expect(thrown(() => matmulSync(Tensor.from(new Int8Array(12), [3, 4]), t, { transB: true })).code).to.equal('ERR_DTYPE');
    expect(thrown(() => matmulSync(t, t, { transB: 1 as unknown as boolean })).code).to.equal('ERR_VALUE');
    expect(thrown(() => matmulSync(t, t, { transB: true, kernel: 'gpu' as LowRankKernel })).message).to.match(/options\.kernel must be one of/);
    expect(thrown(() => matmulSync(t, t, { transB: true, threads: 0 })).code).to.equal('ERR_VALUE');
    expect(thrown(() => matmulSync(t, t, { transB: true, bogus: 1 } as never)).message).to.match(/unknown option "bogus"/);
    expect(thrown(() => matmulSync(t, t, { transB: true, accumulate: true })).message).to.match(/options\.out, which is missing/);
    expect(thrown(() => matmulSync(t, t, { transB: true, out: Tensor.zeros([3, 4], 'f32') })).code).to.equal('ERR_SHAPE');
    expect(thrown(() => matmulSync(t, t, { transB: true, out: Tensor.from(t.data.subarray(0, 9) as Float32Array, [3, 3], 'f32') })).message).to.match(/shares memory/);
  });

  it('matmul: kernel cuda in this build is ERR_UNSUPPORTED with the reason', async function () {
    if (backends().cuda.available) skip(this, 'a CUDA device is available');
    const e = await rejected(matmul(t, t, { transB: true, kernel: 'cuda' }));
    expect(e.code).to.equal('ERR_UNSUPPORTED');
    expect(e.message).to.contain(backends().cuda.reason as string);
  });

  it('matmul: kernel avx512 without AVX-512 is ERR_UNSUPPORTED naming why', function () {
    if (HAS_AVX512) skip(this, 'the CPU has AVX-512 (SLIMTENSOR_ISA=avx2 would turn it off)');
    const e = thrown(() => matmulSync(t, t, { transB: true, kernel: 'avx512' }));
    expect(e.code).to.equal('ERR_UNSUPPORTED');
    expect(e.message).to.match(/avx512 kernel is not available/);
  });

  it('lowRank / svd: rules, options, whitening, non-finite input', async function () {
    const cases: [() => unknown, string, RegExp][] = [
      [() => lowRankSync(t, undefined as unknown as LowRankOptions), 'ERR_VALUE', /name one of rank, energy or ratio/],
      [() => lowRankSync(t, {}), 'ERR_VALUE', /name one of rank, energy or ratio/],
      [() => lowRankSync(t, { rank: 2, energy: 0.5 }), 'ERR_VALUE', /rank and energy; give exactly one/],
      [() => lowRankSync(t, { rank: 0 }), 'ERR_VALUE', /options\.rank must be an integer in 1\.\.3/],
      [() => lowRankSync(t, { rank: 4 }), 'ERR_VALUE', /options\.rank must be an integer in 1\.\.3/],
      [() => lowRankSync(t, { energy: 1.5 }), 'ERR_VALUE', /options\.energy must be a number in \(0, 1\]/],
      [() => lowRankSync(t, { ratio: 0.1 }), 'ERR_VALUE', /fewer parameters than rank 1 needs \(7\)/],
      [() => lowRankSync(t, { rank: 1, method: 'svd' as 'exact' }), 'ERR_VALUE', /options\.method must be one of/],
      [() => lowRankSync(t, { rank: 1, oversample: -1 }), 'ERR_VALUE', /options\.oversample/],
      [() => lowRankSync(t, { rank: 1, powerIters: 1.5 }), 'ERR_VALUE', /options\.powerIters/],
      [() => lowRankSync(t, { rank: 1, seed: -3 }), 'ERR_VALUE', /options\.seed/],
      [() => lowRankSync(t, { rank: 1, whiten: {} as never }), 'ERR_VALUE', /exactly one of gram, activationScale/],
      [() => lowRankSync(t, { rank: 1, whiten: { gram: new Float32Array(15) } }), 'ERR_SHAPE', /gram has 15 values; the input needs 16/],
      [() => lowRankSync(t, { rank: 1, whiten: { gram: new Float64Array(16) as never } }), 'ERR_VALUE', /must be a Float32Array/],
      [() => lowRankSync(t, { rank: 1, whiten: { activationScale: new Float32Array([1, 0, 1, 1]) } }), 'ERR_VALUE', /activationScale\[1\] is 0; values must be finite and > 0/],
      [() => lowRankSync(t, { rank: 1, whiten: { gram: new Float32Array(16).fill(-1) } }), 'ERR_VALUE', /negative diagonal/],
      [() => lowRankSync(Tensor.from(new Float32Array([1, NaN, 3, 4]), [2, 2]), { rank: 1 }), 'ERR_VALUE', /non-finite value/],
      [() => lowRankSync(Tensor.from(new Uint8Array(4), [2, 2]), { rank: 1 }), 'ERR_DTYPE', /input has dtype u8/],
      [() => lowRankSync(Tensor.zeros([0, 4], 'f32'), { rank: 1 }), 'ERR_SHAPE', /at least one row/],
      [() => svdSync(t, { k: 4 }), 'ERR_VALUE', /options\.k must be an integer in 1\.\.3/],
      [() => svdSync(Tensor.from(new Float32Array([Infinity, 1]), [1, 2])), 'ERR_VALUE', /non-finite/],
    ];
    for (const [f, code, re] of cases) {
      const e = thrown(f);
      expect(e.code, re.source).to.equal(code);
      expect(e.message, re.source).to.match(re);
      expect(e.message).to.match(/^(lowRankSync|svdSync): /);
    }
    expect((await rejected(lowRank(t, { rank: 9 }))).message).to.match(/^lowRank: options\.rank/);
    expect((await rejected(svd(t, { k: 0 }))).message).to.match(/^svd: options\.k/);
  });

  // README, "Buffers and async calls": marked (the call returns the sync
  // result) or copied (the transfer moves the memory, the call rejects).
  it(`a buffer transferred while lowRank runs (${backends().buffers.async})`, async function () {
    const w = Tensor.from(new Rng(9).normals(400 * 300), [400, 300]);
    const want = lowRankSync(w, { rank: 20, method: 'exact' });
    const p = lowRank(w, { rank: 20, method: 'exact' });
    const how = transferAway(w.data.buffer);
    if (backends().buffers.async === 'mark') {
      expect(how).to.not.equal('moved');
      expect(bytesOf((await p).left.data).equals(bytesOf(want.left.data))).to.equal(true);
    } else {
      const e = await rejected(p);
      expect(e.code).to.equal('ERR_DETACHED');
      expect(e.message).to.match(/input was detached/);
    }
  });
});

// ---------------------------------------------------------------------------
// The CUDA build (build-cuda/, compiled by scripts/check-cuda.cjs wherever
// nvcc exists): loaded directly, as test/cuda.test.ts does.

interface RawLowrank extends RawAddon {
  matmul(args: NativeArgs, async: boolean): Promise<undefined> | undefined;
  lowRank(args: NativeArgs, async: boolean): Promise<NativeLowRank> | NativeLowRank;
}

describe('lowrank: CUDA (cuSOLVER loaded with dlopen)', function () {
  waitForCudaCheck();
  it('the CUDA build reports cuSOLVER available (with its library) or why not', function () {
    const cb = requireCudaBuild<RawLowrank>(this, 'lowRank');
    const c = cb.backends().cuda;
    expect(c.compiled).to.equal(true);
    expect(c.cusolver).to.be.an('object');
    if (c.cusolver?.available) {
      expect(c.cusolver.library).to.be.a('string').and.not.equal('');
      expect(c.cusolver.reason).to.equal(undefined);
    } else {
      expect(c.cusolver?.reason).to.be.a('string').and.not.equal('');
      if (this.test) this.test.title += ` (here: ${c.cusolver?.reason})`;
    }
  });

  it('without cuSOLVER, kernel auto falls back to the CPU, bit for bit the default build', function () {
    const cb = requireCudaBuild<RawLowrank>(this, 'lowRank');
    const c = cb.backends().cuda;
    if (c.cusolver?.available) skip(this, `cuSOLVER is available (${c.cusolver.library ?? ''}); the comparison test below exercises it`);
    const w = Tensor.from(new Rng(4).normals(60 * 40), [60, 40]);
    const { args } = planLowRank(w, { rank: 5 }, 'test');
    const r = cb.lowRank(args, false) as NativeLowRank;
    expect(r.backend).to.equal('cpu');
    // the CPU path of the CUDA build is the default build's, bit for bit
    const here = lowRankSync(w, { rank: 5 });
    expect(bytesOf(r.left).equals(bytesOf(here.left.data))).to.equal(true);
  });

  it("without a device, kernel 'cuda' rejects with ERR_UNSUPPORTED and the reason", async function () {
    const cb = requireCudaBuild<RawLowrank>(this, 'lowRank');
    const c = cb.backends().cuda;
    if (c.available && c.cusolver?.available) skip(this, 'a CUDA device and cuSOLVER are available; see the comparison test');
    const w = Tensor.from(new Rng(4).normals(60 * 40), [60, 40]);
    const { args } = planLowRank(w, { rank: 5, kernel: 'cuda' }, 'test');
    const e = await rejected(cb.lowRank(args, true) as Promise<NativeLowRank>);
    expect(e.code).to.equal('ERR_UNSUPPORTED');
    const m = planMatmul(w, w, { transB: true, kernel: 'cuda' }, 'test');
    const e2 = thrown(() => cb.matmul(m.args, false));
    expect(e2.code).to.equal('ERR_UNSUPPORTED');
    expect(e2.message).to.contain(c.reason as string);
  });

  it('the loader resolves the declared entry points of a library given by SLIMTENSOR_CUSOLVER, or names the missing ones', function () {
    const cb = requireCudaBuild<RawLowrank>(this, 'lowRank');
    const cxx = process.env.CXX || 'g++';
    if (spawnSync(cxx, ['--version']).status !== 0) skip(this, `no C++ compiler (${cxx}) to build a stand-in libcusolver`);
    // Stand-ins: every entry point (returning "not supported"), or only some.
    const names = ['cusolverDnCreate', 'cusolverDnDestroy', 'cusolverDnSetStream', 'cusolverDnCreateGesvdjInfo', 'cusolverDnDestroyGesvdjInfo',
      'cusolverDnXgesvdjSetTolerance', 'cusolverDnXgesvdjSetMaxSweeps', 'cusolverDnSgesvdj_bufferSize', 'cusolverDnSgesvdj',
      'cusolverDnSgesvd_bufferSize', 'cusolverDnSgesvd', 'cusolverDnCreateParams', 'cusolverDnDestroyParams', 'cusolverDnXgesvdr_bufferSize', 'cusolverDnXgesvdr'];
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'st-cusolver-'));
    const build = (file: string, fns: string[]): string => {
      const src = path.join(dir, `${file}.c`);
      fs.writeFileSync(src, fns.map((f) => `int ${f}(void) { return 7; }`).join('\n') + '\n');
      const lib = path.join(dir, `${file}.so`);
      expect(spawnSync(cxx, ['-x', 'c', '-shared', '-fPIC', src, '-o', lib]).status).to.equal(0);
      return lib;
    };
    const probe = (lib: string): { available: boolean; reason?: string; library?: string } => {
      const r = spawnSync(process.execPath, ['-e', `process.stdout.write(JSON.stringify(require(${JSON.stringify(CUDA_ADDON)}).backends().cuda.cusolver))`], {
        env: { ...process.env, SLIMTENSOR_CUSOLVER: lib },
        encoding: 'utf8',
      });
      expect(r.status, r.stderr).to.equal(0);
      return JSON.parse(r.stdout) as { available: boolean; reason?: string };
    };
    try {
      const partial = probe(build('partial', names.slice(0, 5)));
      expect(partial.available).to.equal(false);
      expect(partial.reason).to.contain('partial.so lacks cusolverDnXgesvdjSetTolerance');
      expect(partial.reason).to.contain('cusolverDnXgesvdr');
      const full = probe(build('full', names));
      const device = cb.backends().cuda;
      if (device.available) {
        expect(full.available).to.equal(true);
      } else {
        // The library loads; only the device is missing now.
        expect(full.available).to.equal(false);
        expect(full.reason).to.equal(device.reason);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('with a device: the CUDA GEMM equals the CPU bit for bit, and lowRank matches the CPU error', async function () {
    const cb = requireCudaBuild<RawLowrank>(this, 'lowRank');
    const c = cb.backends().cuda;
    if (!c.available) skip(this, `no CUDA device: ${c.reason ?? 'unknown'}`);
    const rng = new Rng(8);
    const a = gaussian(rng, 130, 270);
    const b = gaussian(rng, 270, 70);
    const { args, out } = planMatmul(a, b, { kernel: 'cuda' }, 'test');
    await cb.matmul(args, true);
    expect(bytesOf(out.data).equals(bytesOf(matmulSync(a, b, { kernel: 'reference' }).data))).to.equal(true);
    if (!c.cusolver?.available) skip(this, `cuSOLVER: ${c.cusolver?.reason ?? 'unknown'}`);
    const S = inverse(120);
    const w = Tensor.from(withSpectrum(rng, 200, 120, S), [200, 120]);
    for (const method of ['exact', 'randomized'] as const) {
      const { args: la } = planLowRank(w, { rank: 10, method, kernel: 'cuda' }, 'test');
      const r = (await cb.lowRank(la, true)) as NativeLowRank;
      expect(r.backend).to.equal('cuda');
      expect(r.relError / ekartYoung(S, 10), method).to.be.below(1.05);
    }
  });
});
