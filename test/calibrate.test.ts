// Calibration statistics (lib/calibrate): the collector's sums against a
// plain JS f64 accumulation of the same hook batches on stories260K, the
// chunking against llama-imatrix's rules, and bad input.
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { ActivationStatsCollector, calibrate, calibrationChunks, type ActivationStats } from '../lib/calibrate';
import { loadModel, type ActivationBatch, type Model } from '../lib/model/model';
import { rejected, thrown } from './support/assert';

const ROOT = path.join(__dirname, '..');
const STORIES = path.join(ROOT, 'models', 'stories260K.gguf');
const TOKENS = new Int32Array(readFileSync(path.join(ROOT, 'models', 'stories260K-eval.tokens')).buffer.slice(0));

interface Ref {
  rows: number;
  width: number;
  ss: Float64Array;
  sa: Float64Array;
  h: Float64Array;
}

/** Σx², Σ|x| and XᵀX in f64, rows in order, per input group (keyed by its first weight). */
function reference(batches: readonly ActivationBatch[]): Map<string, Ref> {
  const out = new Map<string, Ref>();
  for (const b of batches) {
    const key = b.weights[0] as string;
    let r = out.get(key);
    if (!r) {
      r = { rows: 0, width: b.width, ss: new Float64Array(b.width), sa: new Float64Array(b.width), h: new Float64Array(b.width * b.width) };
      out.set(key, r);
    }
    const w = b.width;
    for (let i = 0; i < b.rows; i++) {
      for (let c = 0; c < w; c++) {
        const v = b.data[i * w + c] as number;
        r.ss[c] += v * v;
        r.sa[c] += Math.abs(v);
        for (let d = 0; d < w; d++) r.h[c * w + d] += v * (b.data[i * w + d] as number);
      }
    }
    r.rows += b.rows;
  }
  return out;
}

function copyBatch(b: ActivationBatch): ActivationBatch {
  return { ...b, weights: [...b.weights], data: b.data.slice() };
}

/** Checks stats against the f64 reference: column sums bit-equal to fround of the f64 sums, H within blocked-f32 rounding. */
function expectMatches(stats: ActivationStats, ref: Map<string, Ref>, hessian: boolean): void {
  for (const [key, r] of ref) {
    const s = stats.get(key);
    expect(s, key).to.not.equal(undefined);
    if (!s) continue;
    expect(s.rows).to.equal(r.rows);
    expect(s.width).to.equal(r.width);
    // Native sums are f64 over the rows in the same order: the same doubles, rounded once to f32.
    expect(Array.from(s.sumSquares)).to.deep.equal(Array.from(r.ss, Math.fround));
    expect(Array.from(s.sumAbs)).to.deep.equal(Array.from(r.sa, Math.fround));
    if (!hessian) {
      expect(s.hessian).to.equal(undefined);
      continue;
    }
    const h = s.hessian as Float32Array;
    expect(h.length).to.equal(r.width * r.width);
    let worst = 0;
    for (let i = 0; i < r.width; i++) {
      expect(h[i * r.width + i]).to.be.closeTo(r.ss[i] as number, 1e-5 * (r.ss[i] as number) + 1e-30);
      for (let j = 0; j < r.width; j++) {
        // |Σ x_i x_j| ≤ sqrt(Σx_i² Σx_j²): errors scale with that bound.
        const scale = Math.sqrt((r.ss[i] as number) * (r.ss[j] as number));
        worst = Math.max(worst, Math.abs((h[i * r.width + j] as number) - (r.h[i * r.width + j] as number)) / (scale || 1));
      }
    }
    expect(worst, key).to.be.below(2e-6);
    expect(worst, `${key}: the f32 Hessian differs from f64 somewhere`).to.be.above(0);
  }
}

describe('calibrate: activation statistics', function () {
  this.timeout(60000);
  let model: Model;
  before(async () => {
    model = await loadModel(STORIES);
  });
  after(async () => {
    await model.dispose();
  });

  it('the collector sums Σx², Σ|x| and XᵀX of the hook batches as a JS f64 accumulation does (two chunks, async)', async () => {
    const c = new ActivationStatsCollector({ hessian: true });
    const seen: ActivationBatch[] = [];
    for (const start of [0, 128]) {
      await model.forward(TOKENS.subarray(start, start + 128), {
        logits: 'none',
        onActivation: (b) => {
          seen.push(copyBatch(b));
          return c.add(b);
        },
      });
    }
    const stats = c.stats();
    // 5 blocks × 7 linear weights; q/k/v and gate/up share their input's object
    expect(stats.size).to.equal(35);
    const q = stats.get('blk.0.attn_q.weight');
    expect(q).to.equal(stats.get('blk.0.attn_k.weight'));
    expect(q).to.equal(stats.get('blk.0.attn_v.weight'));
    expect(stats.get('blk.2.ffn_gate.weight')).to.equal(stats.get('blk.2.ffn_up.weight'));
    expect(stats.get('blk.4.ffn_down.weight')?.width).to.equal(172);
    expect(q?.weights).to.deep.equal(['blk.0.attn_q.weight', 'blk.0.attn_k.weight', 'blk.0.attn_v.weight']);
    expectMatches(stats, reference(seen), true);
    expect(q?.rows).to.equal(256);
  });

  it('inputs wider than one 256-row block of H (a scratch of 256 rows, not width²): the f64 sums, H symmetric, kernels and sync/async alike', async () => {
    const width = 600; // three block rows: 256, 256, 88
    const batches: ActivationBatch[] = [40, 7].map((rows, k) => ({
      site: 'ffn_down' as const,
      layer: 0,
      position: k === 0 ? 0 : 40,
      rows,
      width,
      weights: ['blk.0.ffn_down.weight'],
      data: Float32Array.from({ length: rows * width }, (_, i) => Math.sin(i * 0.37 + k) * (1 + (i % 13) / 7)),
    }));
    const a = new ActivationStatsCollector({ hessian: true });
    const r = new ActivationStatsCollector({ hessian: true, kernel: 'reference', threads: 1 });
    for (const b of batches) {
      await a.add(b);
      r.addSync(b);
    }
    expectMatches(a.stats(), reference(batches), true);
    const h = a.stats().get('blk.0.ffn_down.weight')?.hessian as Float32Array;
    const hr = r.stats().get('blk.0.ffn_down.weight')?.hessian as Float32Array;
    for (let i = 0; i < width; i += 7) for (let j = 0; j < width; j += 5) expect(h[i * width + j], `${i},${j}`).to.equal(h[j * width + i]);
    expectMatches(r.stats(), reference(batches), true);
    expect(hr.length).to.equal(width * width);
  });

  it('addSync gives the same bits as add; without hessian none is kept; a function picks inputs', async () => {
    const seen: ActivationBatch[] = [];
    await model.forward(TOKENS.subarray(300, 364), { logits: 'none', onActivation: (b) => void seen.push(copyBatch(b)) });
    const a = new ActivationStatsCollector({ hessian: true });
    const s = new ActivationStatsCollector({ hessian: true, kernel: 'reference', threads: 1 });
    const none = new ActivationStatsCollector();
    const some = new ActivationStatsCollector({ hessian: (w) => w.endsWith('ffn_down.weight') });
    for (const b of seen) {
      await a.add(b);
      s.addSync(b);
      none.addSync(b);
      some.addSync(b);
    }
    const [sa, ss] = [a.stats(), s.stats()];
    for (const [k, v] of sa) {
      const w = ss.get(k);
      expect(Buffer.from((v.hessian as Float32Array).buffer).equals(Buffer.from((w?.hessian as Float32Array).buffer)), k).to.equal(true);
      expect(v.sumSquares).to.deep.equal(w?.sumSquares);
    }
    expectMatches(none.stats(), reference(seen), false);
    const st = some.stats();
    expect([...st].filter(([, v]) => v.hessian !== undefined).map(([k]) => k)).to.deep.equal([0, 1, 2, 3, 4].map((l) => `blk.${l}.ffn_down.weight`));
  });

  it('calibrate() over calibrationChunks equals the collector on the same forward passes', async () => {
    const chunks = calibrationChunks(TOKENS.subarray(0, 200), model, { ctx: 64, chunks: 2 });
    expect(chunks.length).to.equal(2);
    const progress: number[] = [];
    const stats = await calibrate(model, chunks, { hessian: true, onProgress: (p) => progress.push(p.tokens) });
    expect(progress).to.deep.equal([64, 128]);
    const seen: ActivationBatch[] = [];
    for (const ch of chunks) await model.forward(ch, { logits: 'none', onActivation: (b) => void seen.push(copyBatch(b)) });
    expectMatches(stats, reference(seen), true);
    expect(stats.has('output.weight')).to.equal(false);
    const withHead = await calibrate(model, chunks.slice(0, 1), { head: true });
    expect(withHead.get('output.weight')?.rows).to.equal(64);
  });

  it('calibrationChunks forms chunks as llama-imatrix does (BOS first when the vocabulary adds it, the rest dropped)', () => {
    expect(model.addBos).to.equal(true);
    const bos = model.bosId as number;
    const ids = Array.from(TOKENS.subarray(10, 10 + 3 * 50 + 7));
    const chunks = calibrationChunks(ids, model, { ctx: 50 });
    expect(chunks.length).to.equal(3);
    chunks.forEach((ch, i) => {
      expect(ch.length).to.equal(50);
      expect(ch[0]).to.equal(bos);
      expect(Array.from(ch.subarray(1))).to.deep.equal(ids.slice(i * 50 + 1, (i + 1) * 50));
    });
    expect(calibrationChunks(ids, model, { ctx: 50, chunks: 2 }).length).to.equal(2);
    // default ctx: 512 capped by the model's context (128)
    expect(calibrationChunks(TOKENS.subarray(0, 300), model)[0]?.length).to.equal(128);
    // text: tokenized with BOS
    const text = 'Once upon a time there was a little girl. '.repeat(20);
    const t = model.tokenize(text);
    const tc = calibrationChunks(text, model, { ctx: 16 });
    expect(tc.length).to.equal(Math.floor(t.length / 16));
    expect(Array.from(tc[1] as Int32Array).slice(1)).to.deep.equal(Array.from(t.subarray(17, 32)));
  });

  it('bad input: text or tokens shorter than one chunk, ids out of range, a batch of another width', async () => {
    let e = thrown(() => calibrationChunks('Once upon', model, { ctx: 64 }));
    expect(e.code).to.equal('ERR_VALUE');
    expect(e.message).to.match(/calibration text tokenizes to \d+ tokens, fewer than one chunk of 64/);
    e = thrown(() => calibrationChunks(TOKENS.subarray(0, 63), model, { ctx: 64 }));
    expect(e.message).to.contain('63 tokens, fewer than one chunk of 64');
    e = thrown(() => calibrationChunks([1, 2, 512, 3], model, { ctx: 2 }));
    expect(e.message).to.contain('token 2 is 512, outside the vocabulary (0..511)');
    e = thrown(() => calibrationChunks([1, 2, -1, 3], model, { ctx: 2 }));
    expect(e.message).to.contain('token 2 is -1');
    e = thrown(() => calibrationChunks(TOKENS, model, { ctx: 129 }));
    expect(e.message).to.contain("ctx 129 is longer than the model's context of 128");
    e = await rejected(calibrate(model, [[1, 2, 3, 700]]));
    expect(e.message).to.contain('token 3 is 700');
    e = await rejected(calibrate(model, []));
    expect(e.message).to.contain('non-empty');
    const c = new ActivationStatsCollector();
    const b = { layer: 0, site: 'attn_in' as const, weights: ['a', 'b'], position: 0, rows: 2, width: 3, data: new Float32Array(6) };
    c.addSync(b);
    e = thrown(() => c.addSync({ ...b, width: 2, data: new Float32Array(4) }));
    expect(e.code).to.equal('ERR_SHAPE');
    expect(e.message).to.contain('was 3 wide, this batch is 2 wide');
    e = thrown(() => c.addSync({ ...b, weights: ['b'] }));
    expect(e.message).to.contain('weight b was seen with input group [a, b], now with [b]');
    e = thrown(() => c.addSync({ ...b, data: new Float32Array(5) }));
    expect(e.message).to.contain('rows × width is 2 × 3 = 6');
  });
});
