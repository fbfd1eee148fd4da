// The sequential (block-by-block) calibration pass on stories260K: without
// replacements it gives calibrate()'s statistics on the whole model bit for
// bit (Hessians included, handed to onBlock); replaced weights are the ones
// whose outputs feed the next block (checked against the next block's input
// statistics recomputed here in f64); bad input fails before any block loads.
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { calibrate, calibrateSequential, calibrationChunks, loadModel, Tensor, type ActivationStats, type LayerInputStats } from '../lib/index';
import { GGUFReader } from '../lib/formats/gguf';
import { rejected } from './support/assert';

const ROOT = path.join(__dirname, '..');
const MODEL = path.join(ROOT, 'models', 'stories260K.gguf');
const TEXT = readFileSync(path.join(__dirname, 'fixtures', 'calibrate', 'stories.txt'), 'utf8');

function same(a: Float32Array | undefined, b: Float32Array | undefined): boolean {
  return a !== undefined && b !== undefined && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

describe('calibrateSequential (block by block)', function () {
  this.timeout(60_000);
  let chunks: Int32Array[];
  let whole: ActivationStats;
  before(async () => {
    const m = await loadModel(MODEL, { activations: 'f32' });
    try {
      chunks = calibrationChunks(TEXT, m, { ctx: 128, chunks: 6 });
      whole = await calibrate(m, chunks, { hessian: true });
    } finally {
      await m.dispose();
    }
  });

  it("without replacements: the whole model's statistics, bit for bit, Hessians to onBlock", async () => {
    const seen: number[] = [];
    const progress: string[] = [];
    const hessians = new Map<string, Float32Array | undefined>();
    const stats = await calibrateSequential(MODEL, chunks, {
      hessian: true,
      load: { activations: 'f32' },
      onBlock: (b) => {
        seen.push(b.layer);
        expect(b.blocks).to.equal(5);
        expect([...b.stats.keys()].every((n) => n.startsWith(`blk.${b.layer}.`))).to.equal(true);
        for (const [n, s] of b.stats) hessians.set(n, s.hessian?.slice());
      },
      onProgress: (p) => progress.push(`${p.block}/${p.blocks}:${p.chunk}/${p.chunks}`),
    });
    expect(seen).to.deep.equal([0, 1, 2, 3, 4]);
    expect(progress.length).to.equal(5 * 6);
    expect(progress[progress.length - 1]).to.equal('5/5:6/6');
    expect([...stats.keys()].sort()).to.deep.equal([...whole.keys()].sort());
    expect(stats.size).to.equal(35);
    for (const [name, w] of whole) {
      const s = stats.get(name) as LayerInputStats;
      expect([s.width, s.rows], name).to.deep.equal([w.width, w.rows]);
      expect(same(s.sumSquares, w.sumSquares), name).to.equal(true);
      expect(same(s.sumAbs, w.sumAbs), name).to.equal(true);
      expect(s.hessian, 'returned without Hessians').to.equal(undefined);
      expect(same(hessians.get(name), w.hessian), name).to.equal(true);
    }
    // weights sharing one input share one object, as calibrate() gives them
    expect(stats.get('blk.2.attn_q.weight')).to.equal(stats.get('blk.2.attn_v.weight'));
  });

  it("a replaced block's outputs feed the next block: zero o and down in block 0 make block 1's input the embedding's", async () => {
    const g = await GGUFReader.open(MODEL);
    let embd: Float32Array;
    let norm: Float32Array;
    let same0: Tensor;
    try {
      embd = ((await g.readTensor('token_embd.weight')) as Tensor).data as Float32Array;
      norm = ((await g.readTensor('blk.1.attn_norm.weight')) as Tensor).data as Float32Array;
      same0 = (await g.readTensor('blk.0.ffn_up.weight')) as Tensor;
    } finally {
      await g.close();
    }
    const stats = await calibrateSequential(MODEL, chunks, {
      load: { activations: 'f32' },
      onBlock: (b) =>
        b.layer === 0
          ? new Map([
              ['blk.0.attn_output.weight', Tensor.zeros([64, 64], 'f32')],
              ['blk.0.ffn_down.weight', Tensor.zeros([64, 172], 'f32')],
            ])
          : b.layer === 1
            ? new Map([['blk.1.ffn_up.weight', same0]]) // shape-compatible, not the same weights: block 2 sees it
            : undefined,
    });
    // block 0 itself ran as stored
    for (const n of ['blk.0.attn_q.weight', 'blk.0.ffn_down.weight']) expect(same(stats.get(n)?.sumSquares, whole.get(n)?.sumSquares), n).to.equal(true);
    // block 1's attention input: rmsnorm(embedding row) · attn_norm, in f64 here
    const ss = new Float64Array(64);
    for (const c of chunks) {
      for (const t of c) {
        const x = embd.subarray(t * 64, t * 64 + 64);
        let m = 0;
        for (const v of x) m += v * v;
        const r = 1 / Math.sqrt(m / 64 + 1e-5);
        for (let i = 0; i < 64; i++) ss[i] += ((x[i] as number) * r * (norm[i] as number)) ** 2;
      }
    }
    const got = stats.get('blk.1.attn_q.weight') as LayerInputStats;
    for (let i = 0; i < 64; i++) expect(Math.abs((got.sumSquares[i] as number) - (ss[i] as number)), `column ${i}`).to.be.at.most(2e-5 * (ss[i] as number));
    expect(same(got.sumSquares, whole.get('blk.1.attn_q.weight')?.sumSquares)).to.equal(false);
    // block 1 replaced: block 2 differs from the run that kept block 1
    const keep1 = await calibrateSequential(MODEL, chunks, {
      load: { activations: 'f32' },
      onBlock: (b) => (b.layer === 0 ? new Map([['blk.0.attn_output.weight', Tensor.zeros([64, 64], 'f32')], ['blk.0.ffn_down.weight', Tensor.zeros([64, 172], 'f32')]]) : undefined),
    });
    // block 1's own statistics come before its replacement; block 2's after
    expect(same(keep1.get('blk.1.ffn_down.weight')?.sumSquares, stats.get('blk.1.ffn_down.weight')?.sumSquares)).to.equal(true);
    expect(same(keep1.get('blk.1.attn_q.weight')?.sumSquares, stats.get('blk.1.attn_q.weight')?.sumSquares)).to.equal(true);
    expect(same(keep1.get('blk.2.attn_q.weight')?.sumSquares, stats.get('blk.2.attn_q.weight')?.sumSquares)).to.equal(false);
  });

  it('bad input fails before any block runs, naming it', async () => {
    let blocks = 0;
    const onBlock = (): void => void blocks++;
    expect((await rejected(calibrateSequential(MODEL, [chunks[0] as Int32Array, Int32Array.of(1, 512)], { onBlock }))).message).to.match(/chunk 1: token 1 is 512, outside the vocabulary \(0..511\)/);
    expect((await rejected(calibrateSequential(MODEL, [new Int32Array(129).fill(1)], { onBlock }))).message).to.match(/chunk 0 has 129 tokens, more than the model's context of 128/);
    expect((await rejected(calibrateSequential(MODEL, [], { onBlock }))).message).to.match(/non-empty array/);
    expect(blocks).to.equal(0);
    expect((await rejected(calibrateSequential(MODEL, chunks.slice(0, 1), { onBlock: () => 'no' as never }))).message).to.match(/onBlock \(block 0\) must return nothing or a Map/);
  });
});
