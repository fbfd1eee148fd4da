// AWQ's scale search against a plain f64 re-implementation written here:
// for each α of the grid, the scales from mean|x| as the paper (clamped,
// centred on 1), the weights scaled and rounded to nearest (quantize()),
// scaled back, and the layer-output error Σ‖x·(W − Ŵ)ᵀ‖² computed from the
// calibration inputs themselves in f64 — not through the Hessian transform
// the implementation uses.
import { expect } from 'chai';
import { awqScales, awqSearch, dequantizeSync, quantizeSync, Tensor, type QuantFormat } from '../lib/index';
import { rejected } from './support/assert';
import { Rng } from './support/random';

const fr = Math.fround;

/** Calibration inputs [tokens, width]: channels of uneven scale and a few outliers, as LLM activations. */
function activations(rng: Rng, tokens: number, width: number): Float64Array {
  const scale = Array.from({ length: width }, (_, j) => Math.exp(0.7 * rng.normal()) * (j % 17 === 3 ? 12 : 1));
  const x = new Float64Array(tokens * width);
  for (let t = 0; t < tokens; t++) for (let j = 0; j < width; j++) x[t * width + j] = fr(rng.normal() * (scale[j] as number));
  return x;
}

function statsOf(x: Float64Array, tokens: number, width: number): { width: number; rows: number; sumAbs: Float32Array; hessian: Float32Array } {
  const h = new Float64Array(width * width);
  const sumAbs = new Float64Array(width);
  for (let t = 0; t < tokens; t++) {
    for (let i = 0; i < width; i++) {
      const xi = x[t * width + i] as number;
      sumAbs[i] += Math.abs(xi);
      for (let j = 0; j < width; j++) h[i * width + j] += xi * (x[t * width + j] as number);
    }
  }
  return { width, rows: tokens, sumAbs: Float32Array.from(sumAbs), hessian: Float32Array.from(h) };
}

interface Quant {
  format: QuantFormat;
  groupSize?: number;
  symmetric?: boolean;
}

/** The reference: errors per α, from the activations, f64. */
function referenceErrors(ws: Float32Array[], width: number, x: Float64Array, tokens: number, meanAbs: Float64Array, grid: number, q: Quant): { errors: number[]; scales: Float64Array[] } {
  const errors: number[] = [];
  const scales: Float64Array[] = [];
  for (let i = 0; i < grid; i++) {
    const alpha = i / grid;
    const raw = Array.from(meanAbs, (m) => (i === 0 ? 1 : Math.max(m ** alpha, 1e-4)));
    const norm = i === 0 ? 1 : Math.sqrt(Math.max(...raw) * Math.min(...raw));
    const s = Float64Array.from(raw, (v) => v / norm);
    scales.push(s);
    let total = 0;
    for (const w of ws) {
      const rows = w.length / width;
      const scaled = Float32Array.from(w, (v, k) => fr(v * fr(s[k % width] as number)));
      const deq = dequantizeSync(quantizeSync(Tensor.from(scaled, [rows, width]), { ...q, ...(q.format.startsWith('int') ? { scaleDtype: 'f16' as const } : {}) })).data as Float32Array;
      for (let t = 0; t < tokens; t++) {
        for (let r = 0; r < rows; r++) {
          let y = 0;
          for (let j = 0; j < width; j++) {
            const e = (w[r * width + j] as number) - (deq[r * width + j] as number) / fr(s[j] as number);
            y += (x[t * width + j] as number) * e;
          }
          total += y * y;
        }
      }
    }
    errors.push(total);
  }
  return { errors, scales };
}

describe('awq', () => {
  const width = 64;
  const tokens = 96;
  const rng = new Rng(2316);
  const x = activations(rng, tokens, width);
  const stats = statsOf(x, tokens, width);
  const meanAbs = Float64Array.from(stats.sumAbs, (v) => v / tokens);
  // Two weights sharing the input (as q and k), and one alone.
  const wa = rng.normals(16 * width, 0.05);
  const wb = rng.normals(8 * width, 0.08);

  const cases: { name: string; q: Quant; ws: Float32Array[] }[] = [
    { name: 'int4 g32 symmetric, two weights', q: { format: 'int4', groupSize: 32, symmetric: true }, ws: [wa, wb] },
    { name: 'int4 g64 asymmetric', q: { format: 'int4', groupSize: 64, symmetric: false }, ws: [wa] },
    { name: 'q4_0, two weights', q: { format: 'q4_0' }, ws: [wa, wb] },
    { name: 'q4_1', q: { format: 'q4_1' }, ws: [wb] },
  ];
  for (const c of cases) {
    it(`${c.name}: per-α errors and the chosen α of an f64 re-implementation; better than RTN`, async () => {
      const grid = 20;
      const tensors = c.ws.map((w) => Tensor.from(w, [w.length / width, width]));
      const r = await awqSearch(tensors, stats, { ...c.q, ...(c.q.format.startsWith('int') ? { scaleDtype: 'f16' as const } : {}), grid });
      const ref = referenceErrors(c.ws, width, x, tokens, meanAbs, grid, c.q);
      expect(r.errors).to.have.length(grid);
      for (let i = 0; i < grid; i++) {
        const rel = Math.abs((r.errors[i] as number) - (ref.errors[i] as number)) / (ref.errors[i] as number);
        expect(rel, `α = ${i / grid}: ${r.errors[i]} vs reference ${ref.errors[i]}`).to.be.lessThan(2e-3);
      }
      const refBest = Math.min(...ref.errors);
      const chosen = Math.round(r.alpha * grid);
      expect(ref.errors[chosen] as number, 'the chosen α is the reference optimum (or ties it within f32 noise)').to.be.at.most(refBest * 1.002);
      expect(r.error).to.equal(r.errors[chosen]);
      expect(r.rtnError).to.equal(r.errors[0]);
      // The scales are the chosen α's.
      const s = ref.scales[chosen] as Float64Array;
      for (let j = 0; j < width; j++) expect(Math.abs((r.scales[j] as number) - (s[j] as number)) / (s[j] as number)).to.be.lessThan(1e-6);
      // Outlier channels make scaling pay on this data.
      expect(r.alpha).to.be.greaterThan(0);
      expect(r.error).to.be.lessThan(0.9 * r.rtnError);
    });
  }

  it('awqScales: clamped, centred on 1 (max·min = 1), increasing in mean|x| for α > 0', () => {
    const m = [0, 1e-9, 0.5, 2, 8];
    const s = awqScales(m, 0.5);
    const max = Math.max(...s);
    const min = Math.min(...s);
    expect(max * min).to.be.closeTo(1, 1e-6);
    expect(s[0]).to.equal(s[1]); // both clamped to 1e-4 before normalising
    expect(s[3]! / s[2]!).to.be.closeTo(2, 1e-6); // (2/0.5)^0.5
    for (const v of awqScales(m, 0)) expect(v).to.equal(1);
  });

  it('bad input: no Hessian, wrong widths, no tokens, a bad grid', async () => {
    const W = Tensor.from(wa, [16, width]);
    expect((await rejected(awqSearch([W], { ...stats, hessian: undefined }, { format: 'q4_0' }))).message).to.match(/hessian must hold width² = 4096 values/);
    expect((await rejected(awqSearch([Tensor.from(wa, [32, 32])], stats, { format: 'q4_0' }))).code).to.equal('ERR_SHAPE');
    expect((await rejected(awqSearch([W], { ...stats, sumAbs: stats.sumAbs.subarray(1) }, { format: 'q4_0' }))).code).to.equal('ERR_SHAPE');
    expect((await rejected(awqSearch([W], { ...stats, rows: 0 }, { format: 'q4_0' }))).message).to.match(/no calibration tokens/);
    expect((await rejected(awqSearch([W], stats, { format: 'q4_0', grid: 0 }))).code).to.equal('ERR_VALUE');
    expect((await rejected(awqSearch([], stats, { format: 'q4_0' }))).code).to.equal('ERR_VALUE');
  });
});
