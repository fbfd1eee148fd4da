// Calibration statistics in the compression pipeline: imatrix-weighted
// quantize, Wanda prune, ASVD / SVD-LLM whitened lowrank, the CLI flags,
// bits per weight in the report, and bad calibration input. stories260K.
import { expect } from 'chai';
import { existsSync, promises as fsp, readFileSync, statSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { calibrate, calibrationChunks, type ActivationStats } from '../lib/calibrate';
import { GGUFReader } from '../lib/formats/gguf';
import { SafetensorsModel } from '../lib/formats/safetensors';
import { lowRank } from '../lib/lowrank';
import { loadModel } from '../lib/model/model';
import { writeTokenFile } from '../lib/model/tokens';
import { compressModel, type CompressReport } from '../lib/pipeline/compress';
import { renderCompressReport } from '../lib/cli/model-commands';
import { mergeCalibration, pruneRecipe, resolveRecipe, type Recipe } from '../lib/pipeline/recipe';
import { SlimTensorError } from '../lib/errors';
import { dequantize, QuantizedTensor } from '../lib/quantize';
import { Tensor } from '../lib/tensor';
import { bytesOf, rejected } from './support/assert';
import { runCli } from './support/cli';

const ROOT = path.join(__dirname, '..');
const STORIES = path.join(ROOT, 'models', 'stories260K.gguf');
const TOKENS_FILE = path.join(ROOT, 'models', 'stories260K-eval.tokens');
const TOKENS = new Int32Array(readFileSync(TOKENS_FILE).buffer.slice(0));

async function f32Of(g: GGUFReader, name: string): Promise<Float32Array> {
  const t = await g.readTensor(name);
  const d = t instanceof QuantizedTensor ? await dequantize(t, { dtype: 'f32' }) : t;
  return Float32Array.from(d.data as ArrayLike<number>);
}

/** tr(E·H·Eᵀ) in f64: the layer's output squared error summed over the calibration inputs. */
function outputError(w: Float32Array, q: Float32Array, h: Float32Array, cols: number): number {
  const rows = w.length / cols;
  const e = new Float64Array(cols);
  let total = 0;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) e[c] = (w[r * cols + c] as number) - (q[r * cols + c] as number);
    for (let i = 0; i < cols; i++) {
      let acc = 0;
      for (let j = 0; j < cols; j++) acc += (h[i * cols + j] as number) * (e[j] as number);
      total += (e[i] as number) * acc;
    }
  }
  return total;
}

describe('calibrate: statistics in the pipeline', function () {
  this.timeout(60000);
  let tmp: string;
  let stats: ActivationStats;
  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-calib-'));
    const model = await loadModel(STORIES);
    try {
      stats = await calibrate(model, calibrationChunks(TOKENS, model, { ctx: 128, chunks: 4 }), { hessian: true });
    } finally {
      await model.dispose();
    }
  });
  after(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  for (const format of ['q4_0', 'q4_1']) {
    it(`imatrix-weighted ${format} from calibration lowers the layer-output error tr(E·H·Eᵀ) against unweighted ${format}`, async () => {
      const recipe: Recipe = { format: 'gguf', rules: [{ match: 'blk.*', method: 'quantize', options: { format } }] };
      const weighted = path.join(tmp, `w-${format}.gguf`);
      const plain = path.join(tmp, `p-${format}.gguf`);
      const rw = await compressModel({ input: STORIES, output: weighted, recipe, activationStats: stats });
      const rp = await compressModel({ input: STORIES, output: plain, recipe });
      // q, k, v, o, gate, up of 5 blocks (ffn_down's rows of 172 fall back to F16)
      expect(rw.imatrix?.used).to.equal(30);
      expect(rp.imatrix).to.equal(undefined);
      expect(rw.calibration?.source).to.equal('(statistics given)');
      const [o, w, p] = await Promise.all([GGUFReader.open(STORIES), GGUFReader.open(weighted), GGUFReader.open(plain)]);
      let sw = 0;
      let sp = 0;
      let better = 0;
      const quantized = rw.tensors.filter((r) => r.method === 'quantize');
      for (const r of quantized) {
        const s = stats.get(r.name);
        expect(s?.hessian, r.name).to.be.instanceOf(Float32Array);
        const W = await f32Of(o, r.name);
        const ew = outputError(W, await f32Of(w, r.name), s?.hessian as Float32Array, s?.width as number);
        const ep = outputError(W, await f32Of(p, r.name), s?.hessian as Float32Array, s?.width as number);
        sw += ew;
        sp += ep;
        if (ew < ep) better++;
      }
      await Promise.all([o, w, p].map((g) => g.close()));
      expect(quantized.length).to.equal(30);
      expect(sw).to.be.below(0.95 * sp);
      expect(better).to.be.at.least(27);
    });
  }

  it("a recipe's calibration run from a token file gives the bytes the same statistics give (calibrate() on the same chunks)", async () => {
    const recipe: Recipe = { format: 'gguf', rules: [{ match: 'blk.*', method: 'quantize', options: { format: 'q4_1' } }] };
    const a = path.join(tmp, 'run.gguf');
    const b = path.join(tmp, 'given.gguf');
    const progress: number[] = [];
    // the recipe's own calibration (the q4_k_m-imatrix test below gives compressModel's)
    const ra = await compressModel({ input: STORIES, output: a, recipe: { ...recipe, calibration: { tokens: TOKENS_FILE, ctx: 128, chunks: 4 } }, onCalibrationProgress: (p) => progress.push(p.chunk) });
    await compressModel({ input: STORIES, output: b, recipe, activationStats: stats });
    expect(progress).to.deep.equal([1, 2, 3, 4]);
    expect(ra.calibration).to.include({ source: TOKENS_FILE, chunks: 4, ctx: 128, tokens: 512, inputs: 20, hessians: 0 });
    const [ga, gb] = await Promise.all([GGUFReader.open(a), GGUFReader.open(b)]);
    for (const t of gb.tensors) expect(bytesOf(await ga.readTensorBytes(t.name)).equals(bytesOf(await gb.readTensorBytes(t.name))), t.name).to.equal(true);
    expect(ga.metadata.get('quantize.imatrix.chunks_count')).to.equal(4);
    await Promise.all([ga.close(), gb.close()]);
  });

  it('a Wanda prune from calibration equals a prune given the same activationNorms explicitly, and differs from magnitude', async () => {
    const fromStats = path.join(tmp, 'wanda-stats.gguf');
    const explicit = path.join(tmp, 'wanda-explicit.gguf');
    const magnitude = path.join(tmp, 'magnitude.gguf');
    const r = await compressModel({ input: STORIES, output: fromStats, recipe: pruneRecipe('2:4'), activationStats: stats });
    expect(r.imatrix).to.equal(undefined); // no quantize rule: no imatrix in the report
    expect(r.calibration?.inputs).to.equal(20);
    const norms: Record<string, number[]> = {};
    for (const [name, s] of stats) norms[name] = Array.from(s.sumSquares, (v) => Math.sqrt(v));
    const rule = { match: 'blk.*.weight', method: 'prune' as const, options: { pattern: '2:4', score: { activationNorms: norms } } };
    await compressModel({ input: STORIES, output: explicit, recipe: { rules: [{ match: ['*norm*'], method: 'keep' }, rule] } });
    await compressModel({ input: STORIES, output: magnitude, recipe: { extends: '2of4', rules: [{ match: 'blk.*', method: 'prune', options: { score: 'magnitude' } }] } });
    const [a, b, m] = await Promise.all([GGUFReader.open(fromStats), GGUFReader.open(explicit), GGUFReader.open(magnitude)]);
    let differs = 0;
    for (const name of stats.keys()) {
      const x = bytesOf(await a.readTensorBytes(name));
      expect(x.equals(bytesOf(await b.readTensorBytes(name))), name).to.equal(true);
      if (!x.equals(bytesOf(await m.readTensorBytes(name)))) differs++;
    }
    await Promise.all([a, b, m].map((g) => g.close()));
    expect(differs).to.equal(stats.size);
  });

  it('lowrank whitening from calibration: SVD-LLM with the Hessian, ASVD with (mean |x|)^alpha, as lowRank() given them', async () => {
    const name = 'blk.1.ffn_up.weight';
    const s = stats.get(name);
    if (s === undefined) throw new Error('no stats');
    const o = await GGUFReader.open(STORIES);
    const w = Tensor.from(await f32Of(o, name), [172, 64]);
    for (const whiten of ['auto', 'asvd'] as const) {
      const out = path.join(tmp, `lowrank-${whiten}`);
      const recipe: Recipe = { format: 'safetensors', rules: [{ match: name, method: 'lowrank', options: { rank: 16, method: 'exact', whiten, alpha: 0.5 } }, { match: '*', method: 'keep' }] };
      await compressModel({ input: STORIES, output: out, recipe, activationStats: stats });
      const st = await SafetensorsModel.open(out);
      const left = (await st.readTensor(`${name}.lowrank_left`)).data;
      await st.close();
      const scale = Float32Array.from(s.sumAbs, (v) => Math.sqrt(v / s.rows));
      const ref = await lowRank(w, { rank: 16, method: 'exact', whiten: whiten === 'auto' ? { gram: s.hessian as Float32Array } : { activationScale: scale } });
      expect(Array.from(left as Float32Array), whiten).to.deep.equal(Array.from(ref.left.data));
      const plain = await lowRank(w, { rank: 16, method: 'exact' });
      expect(Array.from(left as Float32Array)).to.not.deep.equal(Array.from(plain.left.data));
    }
    await o.close();
  });

  it('the report states bits per weight of the quantized tensors and of the file (text and --json), with --calibrate-* flags', async () => {
    const out = path.join(tmp, 'cli.gguf');
    const tok = path.join(tmp, 'calib.tokens');
    await writeTokenFile(tok, TOKENS.subarray(0, 300));
    const r = await runCli(['compress', STORIES, '-o', out, '--recipe', path.join(ROOT, 'test', 'fixtures', 'recipe-q4_0-blocks.json'), '--calibrate-tokens', tok, '--calibrate-ctx', '100', '--json', '-q']);
    expect(r.code, r.stderr).to.equal(0);
    const j = JSON.parse(r.stdout) as { bitsPerWeight: { quantized: number; file: number }; calibration: { chunks: number; ctx: number }; tensors: { name: string; shape: number[] }[] };
    expect(j.bitsPerWeight.quantized).to.equal(4.5); // Q4_0: 18 bytes per 32 weights
    const params = j.tensors.reduce((a, t) => a + t.shape.reduce((x, d) => x * d, 1), 0);
    expect(j.bitsPerWeight.file).to.equal((statSync(out).size * 8) / params);
    expect(j.calibration).to.include({ chunks: 3, ctx: 100 });
    const text = renderCompressReport(j as unknown as CompressReport, false);
    expect(text).to.contain(`calibration on ${tok}: 3 chunks of 100 tokens, 20 layer inputs (0 with a Hessian)`);
    expect(text).to.match(/bits per weight: 4\.500 in the quantized tensors, \d+\.\d{3} for the whole file/);
    const usage = await runCli(['prune', STORIES, '-o', out, '-f', '--calibrate-ctx', '64']);
    expect(usage.code).to.not.equal(0);
    expect(usage.stderr).to.contain('--calibrate-ctx needs --calibrate-text or --calibrate-tokens');
  });

  it('bad calibration input: statistics of another model, too little text, ids out of range, a preset without data — nothing written', async () => {
    const out = path.join(tmp, 'bad.gguf');
    const q = { format: 'gguf' as const, rules: [{ match: 'blk.*', method: 'quantize' as const, options: { format: 'q4_0' } }] };
    const s0 = stats.get('blk.0.attn_q.weight');
    let e = await rejected(compressModel({ input: STORIES, output: out, recipe: q, activationStats: new Map([['model.layers.0.self_attn.q_proj.weight', s0 as never]]) }));
    expect(e.code).to.equal('ERR_VALUE');
    expect(e.message).to.contain('"model.layers.0.self_attn.q_proj.weight", which is not a tensor of the model');
    const narrow = { ...(s0 as NonNullable<typeof s0>), width: 32, sumSquares: new Float32Array(32), sumAbs: new Float32Array(32), hessian: undefined };
    e = await rejected(compressModel({ input: STORIES, output: out, recipe: q, activationStats: new Map([['blk.0.attn_q.weight', narrow]]) }));
    expect(e.code).to.equal('ERR_SHAPE');
    expect(e.message).to.contain('activationStats["blk.0.attn_q.weight"] is 32 wide, but the tensor\'s shape [64, 64] has 64 input channels');
    const txt = path.join(tmp, 'short.txt');
    await fsp.writeFile(txt, 'Once upon a time');
    e = await rejected(compressModel({ input: STORIES, output: out, recipe: q, calibration: { text: txt, ctx: 64 } }));
    expect(e.message).to.match(/calibration .*short\.txt: the calibration text tokenizes to \d+ tokens, fewer than one chunk of 64/);
    const bad = path.join(tmp, 'bad.tokens');
    await writeTokenFile(bad, [1, 2, 3, 9999, 5, 6]);
    e = await rejected(compressModel({ input: STORIES, output: out, recipe: q, calibration: { tokens: bad, ctx: 2 } }));
    expect(e.message).to.contain('token 3 is 9999, outside the vocabulary (0..511)');
    e = await rejected(compressModel({ input: STORIES, output: out, recipe: 'q4_k_m-imatrix' }));
    expect(e.code).to.equal('ERR_VALUE');
    expect(e.message).to.contain('recipe q4_k_m-imatrix needs calibration data');
    e = await rejected(compressModel({ input: STORIES, output: out, recipe: { extends: '2of4', rules: [{ match: 'blk.*', method: 'prune', options: { score: 'wanda' } }] } }));
    expect(e.message).to.contain('by Wanda scores, which need calibration statistics');
    expect(existsSync(out)).to.equal(false);
    expect((await fsp.readdir(tmp)).filter((f) => f.includes('.tmp'))).to.deep.equal([]);
  });

  it('recipe calibration: validated, merged over the extended preset and under compressModel\'s', () => {
    expect(resolveRecipe({ extends: 'q4_k_m-imatrix', calibration: { tokens: 'a.tokens', ctx: 64 } }).calibration).to.deep.equal({ tokens: 'a.tokens', ctx: 64 });
    expect(resolveRecipe('q4_k_m-imatrix').calibration).to.deep.equal({});
    expect(resolveRecipe('q4_k_m').calibration).to.equal(undefined);
    expect(mergeCalibration({ text: 'a.txt', ctx: 8, chunks: 3 }, { tokens: [1, 2] })).to.deep.equal({ tokens: [1, 2], ctx: 8, chunks: 3 });
    expect(mergeCalibration({ text: 'a.txt', ctx: 8 }, { ctx: 16 })).to.deep.equal({ text: 'a.txt', ctx: 16 });
    for (const [calibration, message] of [
      [{ text: 'a', tokens: 'b' }, 'give text or tokens, not both'],
      [{ tokens: [1, 2.5] }, 'tokens must be the path of a token file'],
      [{ ctx: 0 }, 'calibration.ctx must be an integer >= 1'],
      [{ text: 'a', size: 3 }, 'unknown key "size"'],
      ['wiki.txt', 'must be an object'],
    ] as const) {
      expect(() => resolveRecipe({ extends: 'q4_0', calibration } as unknown as Recipe)).to.throw(SlimTensorError, message);
    }
    expect(() => resolveRecipe({ rules: [{ match: '*', method: 'lowrank', options: { ratio: 0.5, whiten: 'pca' } }] })).to.throw(SlimTensorError, 'whiten must be one of auto, hessian, asvd, none');
  });

  it('preset q4_k_m-imatrix quantizes with the calibration imatrix', async () => {
    const out = path.join(tmp, 'kmi.gguf');
    const r = await compressModel({ input: STORIES, output: out, recipe: 'q4_k_m-imatrix', calibration: { tokens: TOKENS_FILE, ctx: 128, chunks: 2 } });
    expect(r.recipe).to.equal('q4_k_m-imatrix');
    expect(r.imatrix?.used).to.be.above(0);
    expect(r.imatrix?.files).to.deep.equal([`calibration ${TOKENS_FILE}`]);
    const g = await GGUFReader.open(out);
    expect(g.metadata.get('quantize.imatrix.chunks_count')).to.equal(2);
    await g.close();
  });
});
