// GPTQ and AWQ as recipe methods on stories260K: AWQ's folding keeps the f32
// model's function (the runtime's logits before and after), a gptq rule
// writes what the gptq op gives for the calibrated Hessian (byte for byte,
// in the standard Q4_0 layout the runtime reads; test/model-llamacpp.test.ts
// runs the q4_0-gptq preset's file in llama.cpp), and both lower the
// output's divergence from the original against round-to-nearest.
import { expect } from 'chai';
import { promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { awqFold, awqGroups } from '../lib/calibrate/awq';
import { calibrate, calibrationChunks, type ActivationStats } from '../lib/calibrate';
import { GGUFReader } from '../lib/formats/gguf';
import { SafetensorsFile } from '../lib/formats/safetensors';
import { gptqSync } from '../lib/gptq';
import { evaluateAgainst } from '../lib/model/evaluate';
import { loadModel, type Model } from '../lib/model/model';
import { compressModel } from '../lib/pipeline/compress';
import { openModel } from '../lib/pipeline/source';
import { Tensor } from '../lib/tensor';
import { bytesOf, rejected, thrown } from './support/assert';
import { runCli } from './support/cli';
import { tinyTensors, writeTinyHf, type TinyConfig } from './support/tiny-models';
import { resolveRecipe } from '../lib/pipeline/recipe';

const ROOT = path.join(__dirname, '..');
const MODEL = path.join(ROOT, 'models', 'stories260K.gguf');
const tokens = (f: string): Int32Array => new Int32Array(readFileSync(path.join(ROOT, 'models', f)).buffer.slice(0));
const KEEP = ['*norm*', 'token_embd.weight', 'output.weight'];

describe('gptq and awq recipe methods (stories260K)', function () {
  this.timeout(60000);
  let tmp: string;
  let base: Model;
  let stats: ActivationStats;
  const evalTokens = tokens('stories260K-eval.tokens').subarray(0, 128 * 8);
  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-calibrated-'));
    base = await loadModel(MODEL);
    stats = await calibrate(base, calibrationChunks(tokens('stories260K-calib.tokens'), base, { ctx: 128, chunks: 8 }), { hessian: true });
  });
  after(async () => {
    await base.dispose();
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  it("folding AWQ scales keeps the f32 model's function: the runtime's logits within f32 rounding", async () => {
    const src = await openModel(MODEL);
    const { groups, skipped } = awqGroups(src.tensors);
    await src.close();
    // q/k/v and gate/up after the norms, down after up; o is not scaled (4 KV heads of 8: v rows ≠ o columns).
    expect(groups.map((g) => g.prev.replace(/^blk\.\d+\./, ''))).to.deep.equal(Array(5).fill(['attn_norm.weight', 'ffn_norm.weight', 'ffn_up.weight']).flat());
    expect(skipped.map((s) => s.prev)).to.deep.equal([0, 1, 2, 3, 4].map((l) => `blk.${l}.attn_v.weight`));
    expect(skipped[0]?.reason).to.match(/32 output rows .* 64 input columns/);
    // Scales far from 1 (e^±1), different per group and channel.
    const scales = new Map(groups.map((g, i) => [g.prev, Float32Array.from({ length: g.kind === 'norm' ? 64 : 172 }, (_, j) => Math.exp(Math.sin(7 * i + j)))] as const));
    const folded = path.join(tmp, 'folded.gguf');
    await compressModel({ input: MODEL, output: folded, recipe: { format: 'gguf', rules: [{ match: '*', method: 'keep' }] }, scaling: awqFold(groups, scales) });
    // The weights did change as the fold says.
    const a = await GGUFReader.open(MODEL);
    const b = await GGUFReader.open(folded);
    const norm0 = (await b.readTensor('blk.0.attn_norm.weight')).data as Float32Array;
    const norm0Was = (await a.readTensor('blk.0.attn_norm.weight')).data as Float32Array;
    const q0 = (await b.readTensor('blk.0.attn_q.weight')).data as Float32Array;
    const q0Was = (await a.readTensor('blk.0.attn_q.weight')).data as Float32Array;
    const s0 = scales.get('blk.0.attn_norm.weight') as Float32Array;
    for (const j of [0, 5, 63]) {
      expect(norm0[j]).to.equal(Math.fround((norm0Was[j] as number) * (1 / (s0[j] as number))));
      expect(q0[64 + j]).to.equal(Math.fround((q0Was[64 + j] as number) * (s0[j] as number)));
    }
    await a.close();
    await b.close();
    const m = await loadModel(folded);
    const chunk = Array.from(evalTokens.subarray(0, 64));
    const want = await base.forward(chunk, { logits: 'all' });
    const got = await m.forward(chunk, { logits: 'all' });
    await m.dispose();
    let worst = 0;
    let scale = 0;
    for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i] as number));
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs((got[i] as number) - (want[i] as number)));
    expect(worst / scale, 'largest logit difference relative to the largest logit').to.be.lessThan(2e-5);
  });

  it('awqGroups on Hugging Face names: v→o with its bias when v rows match o columns, a missing weight skipped', () => {
    const L = (i: number, n: string): string => `model.layers.${i}.${n}`;
    const t = (name: string, shape: number[]): { name: string; shape: number[] } => ({ name, shape });
    const tensors = [0, 1].flatMap((i) => [
      t(L(i, 'input_layernorm.weight'), [32]),
      t(L(i, 'self_attn.q_proj.weight'), [32, 32]),
      t(L(i, 'self_attn.k_proj.weight'), [32, 32]),
      t(L(i, 'self_attn.v_proj.weight'), [32, 32]),
      t(L(i, 'self_attn.v_proj.bias'), [32]),
      t(L(i, 'self_attn.o_proj.weight'), [32, 32]),
      t(L(i, 'post_attention_layernorm.weight'), [32]),
      ...(i === 1 ? [] : [t(L(i, 'mlp.gate_proj.weight'), [48, 32])]),
      t(L(i, 'mlp.up_proj.weight'), [48, 32]),
      t(L(i, 'mlp.down_proj.weight'), [32, 48]),
    ]);
    const { groups, skipped } = awqGroups(tensors);
    expect(groups.filter((g) => g.layer === 0).map((g) => [g.prev, g.linears, g.prevBias])).to.deep.equal([
      [L(0, 'input_layernorm.weight'), [L(0, 'self_attn.q_proj.weight'), L(0, 'self_attn.k_proj.weight'), L(0, 'self_attn.v_proj.weight')], undefined],
      [L(0, 'self_attn.v_proj.weight'), [L(0, 'self_attn.o_proj.weight')], L(0, 'self_attn.v_proj.bias')],
      [L(0, 'post_attention_layernorm.weight'), [L(0, 'mlp.gate_proj.weight'), L(0, 'mlp.up_proj.weight')], undefined],
      [L(0, 'mlp.up_proj.weight'), [L(0, 'mlp.down_proj.weight')], undefined],
    ]);
    expect(skipped).to.deep.equal([{ layer: 1, prev: L(1, 'post_attention_layernorm.weight'), linears: [L(1, 'mlp.gate_proj.weight'), L(1, 'mlp.up_proj.weight')], reason: `${L(1, 'mlp.gate_proj.weight')} not in the model` }]);
    // The fold: v's bias and rows ÷ s, o's columns × s.
    const s = Float32Array.from({ length: 32 }, (_, j) => 1 + j);
    const f = awqFold(groups.filter((g) => g.prev === L(0, 'self_attn.v_proj.weight')), new Map([[L(0, 'self_attn.v_proj.weight'), s]]));
    expect([...f.keys()]).to.deep.equal([L(0, 'self_attn.o_proj.weight'), L(0, 'self_attn.v_proj.weight'), L(0, 'self_attn.v_proj.bias')]);
    expect(f.get(L(0, 'self_attn.v_proj.bias'))?.rows?.[3]).to.equal(Math.fround(1 / 4));
    expect(f.get(L(0, 'self_attn.o_proj.weight'))?.cols?.[3]).to.equal(4);
  });

  it('folding into a Qwen2 Hugging Face folder (no grouped-query attention, v biases): v→o folds too, the logits stay', async () => {
    const c: TinyConfig = { arch: 'qwen2', vocab: 64, embd: 32, layers: 2, heads: 4, headsKv: 4, headDim: 8, ff: 48, eps: 1e-6, ropeBase: 10000, tied: false, ctx: 64 };
    const hf = path.join(tmp, 'qwen2-hf');
    await writeTinyHf(hf, c, tinyTensors(c, 11), 'F32');
    const src = await openModel(hf);
    const { groups, skipped } = awqGroups(src.tensors);
    await src.close();
    expect(skipped).to.deep.equal([]);
    expect(groups.filter((g) => g.prevBias !== undefined)).to.have.length(2);
    const scales = new Map(groups.map((g, i) => [g.prev, Float32Array.from({ length: g.kind === 'norm' ? 32 : g.prev.includes('up_proj') ? 48 : 32 }, (_, j) => Math.exp(Math.cos(5 * i + j)))] as const));
    const out = path.join(tmp, 'qwen2-folded');
    await compressModel({ input: hf, output: out, recipe: { format: 'safetensors', rules: [{ match: '*', method: 'keep' }] }, scaling: awqFold(groups, scales) });
    const tokens = [1, 17, 42, 5, 33, 12, 7, 60];
    const logits = async (dir: string): Promise<Float32Array> => {
      const m = await loadModel(dir, { activations: 'f32' });
      const l = await m.forward(tokens, { logits: 'all' });
      await m.dispose();
      return l;
    };
    const [want, got] = [await logits(hf), await logits(out)];
    let worst = 0;
    let scale = 0;
    for (let i = 0; i < want.length; i++) {
      scale = Math.max(scale, Math.abs(want[i] as number));
      worst = Math.max(worst, Math.abs((got[i] as number) - (want[i] as number)));
    }
    expect(worst / scale).to.be.lessThan(2e-5);
    // and the fold changed the v bias
    const a = await SafetensorsFile.open(path.join(hf, 'model.safetensors'));
    const b = await SafetensorsFile.open(path.join(out, 'model.safetensors'));
    const bias = 'model.layers.1.self_attn.v_proj.bias';
    const was = (await a.readTensor(bias)).data as Float32Array;
    const now = (await b.readTensor(bias)).data as Float32Array;
    expect(now[2]).to.equal(Math.fround((was[2] as number) * Math.fround(1 / (scales.get('model.layers.1.self_attn.v_proj.weight')?.[2] as number))));
    await a.close();
    await b.close();
  });

  it('a gptq rule writes the gptq op’s Q4_0 blocks for the calibrated Hessian, and lowers the KL against round-to-nearest', async () => {
    const rtn = path.join(tmp, 'rtn.gguf');
    const out = path.join(tmp, 'gptq.gguf');
    await compressModel({ input: MODEL, output: rtn, recipe: { format: 'gguf', rules: [{ match: KEEP, method: 'keep' }, { match: '*', method: 'quantize', options: { format: 'q4_0' } }] } });
    const r = await compressModel({ input: MODEL, output: out, recipe: { format: 'gguf', rules: [{ match: KEEP, method: 'keep' }, { match: '*', method: 'gptq', options: { format: 'q4_0' } }] }, activationStats: stats });
    const q = r.tensors.filter((t) => t.calibrated !== undefined);
    expect(q.map((t) => t.name)).to.have.length(30); // q, k, v, o, gate, up of 5 blocks (ffn_down: rows of 172, F16)
    for (const t of q) expect(t.calibrated?.error as number, t.name).to.be.lessThan(t.calibrated?.rtnError as number);
    // An independent call of the op on the same weights and Hessian: the same bytes.
    const src = await GGUFReader.open(MODEL);
    const written = await GGUFReader.open(out);
    for (const name of ['blk.0.attn_k.weight', 'blk.3.ffn_gate.weight']) {
      const w = await src.readTensor(name);
      const h = stats.get(name)?.hessian as Float32Array;
      const cols = w.shape[1] as number;
      const want = gptqSync(w as Tensor, Tensor.from(h, [cols, cols]), { format: 'q4_0', measure: false }).quantized.data as Uint8Array;
      const got = await written.readTensorBytes(name);
      expect(Buffer.from(got).equals(Buffer.from(want.buffer, want.byteOffset, want.byteLength)), name).to.equal(true);
    }
    await src.close();
    await written.close();
    const kl = async (file: string): Promise<number> => {
      const m = await loadModel(file);
      const e = await evaluateAgainst(m, base, evalTokens, { ctx: 128 });
      await m.dispose();
      return e.kl.mean;
    };
    const [klRtn, klGptq] = [await kl(rtn), await kl(out)];
    expect(klGptq, `KL gptq ${klGptq} vs round-to-nearest ${klRtn}`).to.be.lessThan(0.9 * klRtn);
  });

  it('w4a16-gptq for transformers: compressed-tensors pack-quantized with the gptq op’s codes and scales; the folder runs', async () => {
    const out = path.join(tmp, 'w4a16-gptq');
    const r = await compressModel({ input: MODEL, output: out, recipe: { extends: 'w4a16-gptq', target: 'transformers', rules: [{ match: '*ffn_down*', method: 'gptq', options: { format: 'int4', groupSize: 'channel' } }] }, activationStats: stats });
    expect(r.tensors.filter((t) => t.calibrated?.method === 'gptq')).to.have.length(35); // rows of 64 and 172: one group per row
    const st = await SafetensorsFile.open(path.join(out, 'model.safetensors'));
    const src = await GGUFReader.open(MODEL);
    const name = 'blk.1.attn_v.weight';
    const w = await src.readTensor(name);
    const want = gptqSync(w as Tensor, Tensor.from(stats.get(name)?.hessian as Float32Array, [64, 64]), { format: 'int4', groupSize: 'channel', scaleDtype: 'f32', measure: false }).quantized;
    const prefix = name.replace(/\.weight$/, '');
    expect(Buffer.from(await st.readTensorBytes(`${prefix}.weight_packed`)).equals(bytesOf(want.data))).to.equal(true);
    expect(Buffer.from(await st.readTensorBytes(`${prefix}.weight_scale`)).equals(bytesOf(want.scales?.data))).to.equal(true);
    await st.close();
    await src.close();
    const m = await loadModel(out, { hyperparameters: MODEL });
    const e = await evaluateAgainst(m, base, evalTokens, { ctx: 128 });
    await m.dispose();
    expect(Number.isFinite(e.compressed.perplexity)).to.equal(true);
  });

  it('an awq rule: scales searched per group (never worse than rounding on the calibration Hessian), folded, the file runs', async () => {
    const out = path.join(tmp, 'awq.gguf');
    const r = await compressModel({ input: MODEL, output: out, recipe: { format: 'gguf', rules: [{ match: KEEP, method: 'keep' }, { match: '*', method: 'awq', options: { format: 'q4_0' } }] }, activationStats: stats });
    const awq = r.awq as NonNullable<typeof r.awq>;
    // q/k/v and gate/up of 5 blocks; v→o (grouped-query attention) and up→down (down is F16: rows of 172) not scaled.
    expect(awq.groups).to.have.length(10);
    expect(awq.skipped.map((s) => s.reason)).to.satisfy((rs: string[]) => rs.filter((x) => /grouped-query/.test(x)).length === 5 && rs.filter((x) => /ffn_down.weight not quantized by awq/.test(x)).length === 5);
    for (const g of awq.groups) {
      expect(g.error, g.prev).to.be.at.most(g.rtnError);
      expect(g.alpha).to.be.within(0, 0.95);
    }
    expect(awq.groups.some((g) => g.alpha > 0 && g.error < 0.95 * g.rtnError)).to.equal(true);
    const m = await loadModel(out);
    const e = await evaluateAgainst(m, base, evalTokens, { ctx: 128 });
    await m.dispose();
    expect(Number.isFinite(e.compressed.perplexity)).to.equal(true);
  });

  it('the CLI: compress --preset q4_0-gptq with --calibrate-tokens states GPTQ’s error against rounding; an awq recipe its α and what it did not scale', async () => {
    const calib = path.join(ROOT, 'models', 'stories260K-calib.tokens');
    const g = await runCli(['compress', MODEL, '-o', path.join(tmp, 'cli-gptq.gguf'), '--preset', 'q4_0-gptq', '--calibrate-tokens', calib, '--calibrate-ctx', '128', '--calibrate-chunks', '4', '-q']);
    expect(g.code, g.stderr).to.equal(0);
    const ratio = /gptq: 30 tensors, layer-output error tr\(E·H·Eᵀ\) on the calibration inputs ([0-9.]+)× round-to-nearest's/.exec(g.stdout);
    expect(ratio, g.stdout).to.not.equal(null);
    expect(Number(ratio?.[1])).to.be.within(0.2, 0.95);
    const recipe = path.join(tmp, 'awq.json');
    await fsp.writeFile(recipe, JSON.stringify({ format: 'gguf', rules: [{ match: KEEP, method: 'keep' }, { match: '*', method: 'awq', options: { format: 'q4_1' } }] }));
    const a = await runCli(['compress', MODEL, '-o', path.join(tmp, 'cli-awq.gguf'), '--recipe', recipe, '--calibrate-tokens', calib, '--calibrate-ctx', '128', '--calibrate-chunks', '4', '--json', '-q']);
    expect(a.code, a.stderr).to.equal(0);
    const report = JSON.parse(a.stdout) as { awq: { groups: { alpha: number; error: number; rtnError: number }[]; skipped: { reason: string }[] }; calibration: { chunks: number } };
    expect(report.calibration.chunks).to.equal(4);
    expect(report.awq.groups).to.have.length(10);
    expect(report.awq.skipped).to.have.length(10);
    for (const x of report.awq.groups) expect(x.error).to.be.at.most(x.rtnError);
  });

  it('the presets: w4a16-gptq, w4a16-awq (compressed-tensors for vLLM) and q4_0-gptq resolve to their methods', () => {
    expect(resolveRecipe('w4a16-gptq').rules.map((x) => x.method)).to.deep.equal(['keep', 'keep', 'gptq']);
    expect(resolveRecipe('w4a16-awq').rules.at(-1)?.options).to.deep.equal({ format: 'int4', groupSize: 128, symmetric: true });
    expect(resolveRecipe('w4a16-awq')).to.include({ format: 'compressed-tensors', target: 'vllm' });
    expect(resolveRecipe('q4_0-gptq')).to.include({ format: 'gguf' });
    expect(thrown(() => resolveRecipe({ rules: [{ match: '*', method: 'awq', options: { format: 'q4_0', actOrder: true } }] })).message).to.match(/GPTQ settings; an awq rule takes them with gptq: true/);
    expect(thrown(() => resolveRecipe({ rules: [{ match: '*', method: 'gptq', options: { format: 'q5_0' } }] })).message).to.match(/gptq needs options.format, one of q4_0, q4_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k, int4, int8, or options.mix/);
    expect(thrown(() => resolveRecipe({ rules: [{ match: '*', method: 'awq', options: { format: 'q4_k' } }] })).message).to.match(/awq needs options.format, one of q4_0, q4_1, q8_0, int4, int8;/);
    expect(resolveRecipe('q4_k_m-gptq')).to.include({ format: 'gguf', mix: 'q4_k_m' });
    expect(resolveRecipe({ rules: [{ match: '*', method: 'gptq', options: { format: 'q4_k', actOrder: true } }] }).rules[0]?.options).to.deep.equal({ format: 'q4_k', actOrder: true });
    expect(thrown(() => resolveRecipe({ rules: [{ match: '*', method: 'gptq', options: { mix: 'q4_k_m', format: 'q4_k' } }] })).message).to.match(/format or options.mix, not both/);
    expect(thrown(() => resolveRecipe({ rules: [{ match: '*', method: 'gptq', options: { mix: 'q9' } }] })).message).to.match(/options.mix must be one of/);
    expect(thrown(() => resolveRecipe({ rules: [{ match: 'a', method: 'quantize', options: { mix: 'q4_0' } }, { match: '*', method: 'gptq', options: { mix: 'q4_k_m' } }] })).message).to.match(/one llama.cpp file type/);
  });

  it('q4_k_m-gptq on stories260K (rows of 64 and 172: no 256 block fits): each linear in its llama-quantize fallback type, by GPTQ where the op writes it (q8_0), imatrix-weighted rounding elsewhere (q5_0/q5_1), F16 where no block fits', async () => {
    const r = await compressModel({ input: MODEL, output: path.join(tmp, 'q4_k_m-gptq.gguf'), recipe: 'q4_k_m-gptq', activationStats: stats });
    const linears = r.tensors.filter((t) => /^blk\.\d+\.(attn_[qkvo]|attn_output|ffn_(gate|up|down))\.weight$/.test(t.name));
    expect(linears.length).to.equal(35);
    let gptqd = 0;
    let rounded = 0;
    for (const t of linears) {
      expect(t.fallback, t.name).to.not.equal(undefined);
      if (t.to === 'Q8_0') {
        gptqd++;
        expect(t.calibrated?.method, t.name).to.equal('gptq');
        expect(t.calibrated?.error, t.name).to.be.lessThan(t.calibrated?.rtnError as number);
      } else if (t.to === 'F16') {
        expect(t.name, 'ffn_down: rows of 172, no block of 32 fits').to.match(/ffn_down/);
        expect(t.method).to.equal('convert');
      } else {
        rounded++;
        expect(['Q5_0', 'Q5_1'], t.name).to.include(t.to);
        expect(t.calibrated, t.name).to.equal(undefined);
        expect(t.imatrix, t.name).to.be.a('string').and.not.equal('not covered');
      }
    }
    expect(gptqd).to.be.greaterThan(0);
    expect(rounded).to.be.greaterThan(0);
  });

  it('bad input: no statistics, statistics without the Hessian', async () => {
    const recipe = { format: 'gguf' as const, rules: [{ match: KEEP, method: 'keep' as const }, { match: '*', method: 'gptq' as const, options: { format: 'q4_0' } }] };
    const none = await rejected(compressModel({ input: MODEL, output: path.join(tmp, 'x.gguf'), recipe }));
    expect(none.code).to.equal('ERR_VALUE');
    expect(none.message).to.match(/blk\.0\.attn_q\.weight' by gptq, which needs calibration statistics/);
    // Statistics collected without the Hessian.
    const wrong = new Map(stats);
    const s = stats.get('blk.2.ffn_up.weight');
    const { hessian: _h, ...noHessian } = s as NonNullable<typeof s>;
    wrong.set('blk.2.ffn_up.weight', noHessian);
    const bad = await rejected(compressModel({ input: MODEL, output: path.join(tmp, 'y.gguf'), recipe, activationStats: wrong }));
    expect(bad.code).to.equal('ERR_VALUE');
    expect(bad.message).to.match(/gptq of 'blk\.2\.ffn_up\.weight' needs the Hessian of its input; calibrate with hessian: true/);
    expect(await fsp.readdir(tmp)).to.not.include('y.gguf');
  });
});
