// llama-quantize's file mixes: every tensor's type against llama.cpp's rules
// written out here on their own (explicit layer sets, not the library's
// formula), and the bytes of every preset against llama-quantize's own
// outputs (c392e50) on two generated models, kept in
// test/fixtures/llama-quantize/ (see its README; the peer is not needed).
import { expect } from 'chai';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GGUFReader, imatrixWeights, quantizeSync, readImatrix, Tensor, type ImatrixEntry, type ImportanceMatrix } from '../lib/index';
import { GGUFWriter } from '../lib/formats/gguf-writer';
import { compressModel } from '../lib/pipeline/compress';
import { GGUF_MIXES, llamaQuantizeOrder, mixModelOf, planMix, type MixModel, type MixName } from '../lib/pipeline/gguf-mix';
import { planTensor, resolveRecipe } from '../lib/pipeline/recipe';
import { rejected } from './support/assert';
import { llamaTensorShapes, writeLlamaGguf, type LlamaShape } from './support/llama-gguf';
import { FIXTURE_MODELS, FIXTURE_PRESETS, FIXTURES, fixtureImatrixArg, sha256, tensorHashes, WHOLE_OUTPUTS, type Manifest } from './support/llama-quantize-fixtures';
import { Rng } from './support/random';
import { runLlamaQuantizeBench } from '../bench/llama-quantize';

// ---- llama.cpp's rules for a dense Llama model, written out ---------------
//
// Layers llama.cpp's use_more_bits picks (the first and last eighth, and
// every third layer between), for the layer counts tested:
const MORE_BITS: Record<number, readonly number[]> = {
  4: [2, 3],
  8: [0, 3, 6, 7],
  12: [0, 3, 6, 9, 10, 11],
  22: [0, 1, 4, 7, 10, 13, 16, 19, 20, 21],
  32: [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31],
};
const BASE: Record<MixName, string> = {
  q4_0: 'Q4_0', q4_1: 'Q4_1', q5_0: 'Q5_0', q5_1: 'Q5_1', q8_0: 'Q8_0', q2_k: 'Q2_K', q3_k_s: 'Q3_K', q3_k_m: 'Q3_K', q3_k_l: 'Q3_K',
  q4_k_s: 'Q4_K', q4_k_m: 'Q4_K', q5_k_s: 'Q5_K', q5_k_m: 'Q5_K', q6_k: 'Q6_K',
};
const FILE_TYPE: Record<MixName, number> = { q4_0: 2, q4_1: 3, q8_0: 7, q5_0: 8, q5_1: 9, q2_k: 10, q3_k_s: 11, q3_k_m: 12, q3_k_l: 13, q4_k_s: 14, q4_k_m: 15, q5_k_s: 16, q5_k_m: 17, q6_k: 18 };

interface Model {
  layers: number;
  gqa: number;
  cols: (name: string) => number;
  tied: boolean;
}

/** The type llama-quantize gives `name` (undefined: kept), before and after the block fallback. */
function expected(mix: MixName, name: string, m: Model, imatrix: boolean): string | undefined {
  if (!name.endsWith('.weight') || name.includes('_norm')) return undefined;
  const layer = /^blk\.(\d+)\./.exec(name);
  const i = layer === null ? -1 : Number(layer[1]);
  const n = m.layers;
  const promoted = (MORE_BITS[n] as readonly number[]).includes(i);
  let t = BASE[mix];
  const head = name === 'output.weight' || (m.tied && name === 'token_embd.weight');
  if (head) t = mix === 'q8_0' || m.cols(name) % (t.endsWith('K') ? 256 : 32) !== 0 ? 'Q8_0' : 'Q6_K';
  else if (name.endsWith('attn_v.weight')) {
    // attn_v tensors are counted in file order, which is layer order here
    if (mix === 'q2_k') t = m.gqa >= 4 ? 'Q4_K' : 'Q3_K';
    if (mix === 'q3_k_m') t = i < 2 ? 'Q5_K' : 'Q4_K';
    if (mix === 'q3_k_l') t = 'Q5_K';
    if ((mix === 'q4_k_m' || mix === 'q5_k_m') && promoted) t = 'Q6_K';
    if (mix === 'q4_k_s' && i < 4) t = 'Q5_K';
  } else if (name.endsWith('ffn_down.weight')) {
    if (mix === 'q2_k') t = 'Q3_K';
    if (mix === 'q3_k_m') t = i < Math.floor(n / 16) ? 'Q5_K' : 'Q4_K';
    if (mix === 'q3_k_l') t = 'Q5_K';
    if ((mix === 'q4_k_m' || mix === 'q5_k_m') && promoted) t = 'Q6_K';
    if (mix === 'q4_k_s' && i < Math.floor(n / 8)) t = 'Q5_K';
    if (imatrix && mix === 'q4_0' && i < Math.floor(n / 8)) t = 'Q4_1';
    if (imatrix && mix === 'q5_0' && i < Math.floor(n / 8)) t = 'Q5_1';
  } else if (name.endsWith('attn_output.weight')) {
    if (mix === 'q2_k') t = 'Q3_K';
    if (mix === 'q3_k_m') t = 'Q4_K';
    if (mix === 'q3_k_l') t = 'Q5_K';
  }
  // Rows that do not fit: K-quants to the 32-value type llama-quantize picks, then F16.
  const cols = m.cols(name);
  if (t.endsWith('K') && cols % 256 !== 0) t = ({ Q2_K: 'Q4_0', Q3_K: 'Q4_0', Q4_K: 'Q5_0', Q5_K: 'Q5_1', Q6_K: 'Q8_0' } as Record<string, string>)[t] as string;
  if (cols % 32 !== 0) t = 'F16';
  return t;
}

function modelOf(s: LlamaShape): Model {
  const shapes = new Map(llamaTensorShapes(s));
  return { layers: s.layers, gqa: s.heads / s.kvHeads, tied: s.tied === true, cols: (name) => (shapes.get(name) as number[]).at(-1) as number };
}

const MIXES = Object.keys(GGUF_MIXES) as MixName[];

describe('gguf mixes (llama-quantize file types)', function () {
  this.timeout(120_000);
  let tmp: string;

  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-mix-'));
  });
  after(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  it('orders tensors as llama-quantize does: outside blocks first, then by block index, then by name', () => {
    const names = ['token_embd.weight', 'blk.10.attn_q.weight', 'blk.2.ffn_up.weight', 'output_norm.weight', 'blk.2.attn_k.weight', 'output.weight', 'blk.0.ffn_down.weight', 'blk.1.attn_v.weight'];
    expect(llamaQuantizeOrder(names.map((name) => ({ name }))).map((t) => t.name)).to.deep.equal([
      'output.weight', 'output_norm.weight', 'token_embd.weight', 'blk.0.ffn_down.weight', 'blk.1.attn_v.weight', 'blk.2.attn_k.weight', 'blk.2.ffn_up.weight', 'blk.10.attn_q.weight',
    ]);
  });

  it('gives every tensor of dense Llama models llama.cpp\'s type, for every mix and layer count', () => {
    const shapes: LlamaShape[] = [
      { layers: 4, hidden: 256, ffn: 512, heads: 8, kvHeads: 2, vocab: 1000, dtype: 'F16', seed: 0 },
      { layers: 12, hidden: 64, ffn: 172, heads: 4, kvHeads: 2, vocab: 512, dtype: 'F32', seed: 0, tied: true },
      // the benchmark's 1.1B shape (TinyLlama) and Llama-2-7B's
      { layers: 22, hidden: 2048, ffn: 5632, heads: 32, kvHeads: 4, vocab: 32000, dtype: 'F16', seed: 0 },
      { layers: 32, hidden: 4096, ffn: 11008, heads: 32, kvHeads: 32, vocab: 32000, dtype: 'F16', seed: 0 },
    ];
    for (const s of shapes) {
      const tensors = llamaQuantizeOrder(llamaTensorShapes(s).map(([name, shape]) => ({ name, shape })));
      const model: MixModel = { architecture: 'llama', layers: s.layers, gqa: s.heads / s.kvHeads, experts: 0, is70B: false };
      const m = modelOf(s);
      for (const mix of MIXES) {
        for (const imatrix of [false, true]) {
          const plan = planMix(mix, tensors, model, imatrix);
          for (const t of tensors) {
            expect(plan.get(t.name)?.type, `${mix}${imatrix ? '+imatrix' : ''} ${s.layers} layers: ${t.name}`).to.equal(expected(mix, t.name, m, imatrix));
          }
        }
      }
    }
  });

  it('applies the mixture-of-experts, 70B and Falcon rules', () => {
    const moe = llamaQuantizeOrder(
      [0, 1, 2, 3, 4, 5, 6, 7].flatMap((l) => [
        { name: `blk.${l}.attn_v.weight`, shape: [512, 4096] },
        { name: `blk.${l}.attn_k.weight`, shape: [512, 4096] },
        { name: `blk.${l}.attn_output.weight`, shape: [4096, 4096] },
        { name: `blk.${l}.ffn_gate_inp.weight`, shape: [8, 4096] },
        { name: `blk.${l}.ffn_down_exps.weight`, shape: [8, 4096, 14336] },
      ]),
    );
    const p = planMix('q4_k_m', moe, { architecture: 'llama', layers: 8, gqa: 4, experts: 8, is70B: false }, false);
    expect(p.get('blk.3.attn_v.weight')?.type).to.equal('Q8_0');
    expect(p.get('blk.3.attn_k.weight')?.type).to.equal('Q8_0');
    expect(p.get('blk.3.attn_output.weight')?.type).to.equal('Q5_K');
    expect(p.get('blk.3.ffn_gate_inp.weight')).to.deep.include({ type: undefined });
    // ffn_down of an MoE model: the layer comes from the name (use_more_bits(i, 8) picks 0, 3, 6, 7)
    expect([0, 1, 2, 3, 4, 5, 6, 7].map((l) => p.get(`blk.${l}.ffn_down_exps.weight`)?.type)).to.deep.equal(['Q6_K', 'Q4_K', 'Q4_K', 'Q6_K', 'Q4_K', 'Q4_K', 'Q6_K', 'Q6_K']);

    // 70B: attn_v Q3_K / Q4_K become Q5_K
    const v = Array.from({ length: 80 }, (_, l) => ({ name: `blk.${l}.attn_v.weight`, shape: [1024, 8192] }));
    const m70 = mixModelOf(new Map<string, number | string>([['general.architecture', 'llama'], ['llama.block_count', 80], ['llama.attention.head_count', 64], ['llama.attention.head_count_kv', 8]]));
    expect(m70).to.deep.equal({ architecture: 'llama', layers: 80, gqa: 8, experts: 0, is70B: true });
    expect(new Set([...planMix('q3_k_s', v, m70, false).values()].map((c) => c.type))).to.deep.equal(new Set(['Q5_K']));
    expect(planMix('q4_k_m', v, m70, false).get('blk.11.attn_v.weight')?.type).to.equal('Q5_K'); // not promoted: Q4_K -> Q5_K
    expect(planMix('q4_k_m', v, m70, false).get('blk.0.attn_v.weight')?.type).to.equal('Q6_K');
    // Llama with as many KV heads as heads at 80 layers is llama.cpp's 65B, not 70B
    expect(mixModelOf(new Map<string, number | string>([['general.architecture', 'llama'], ['llama.block_count', 80], ['llama.attention.head_count', 64]])).is70B).to.equal(false);
    // without llama.cpp's keys (a file llama-quantize refuses): the block count from the tensor names
    expect(mixModelOf(new Map(), ['blk.0.attn_q.weight', 'blk.11.ffn_up.weight', 'output.weight'])).to.deep.equal({ architecture: '', layers: 12, gqa: 0, experts: 0, is70B: false });

    // Falcon: the head at Q8_0; Q4_K_M's ffn_down Q6_K / Q5_K / Q4_K by layer
    const falcon = llamaQuantizeOrder([{ name: 'output.weight', shape: [1000, 4544] }, ...Array.from({ length: 32 }, (_, l) => ({ name: `blk.${l}.ffn_down.weight`, shape: [4544, 18176] }))]);
    const pf = planMix('q4_k_m', falcon, { architecture: 'falcon', layers: 32, gqa: 1, experts: 0, is70B: false }, false);
    expect(pf.get('output.weight')?.type).to.equal('Q8_0');
    expect(['blk.0', 'blk.1', 'blk.2', 'blk.5', 'blk.6'].map((b) => pf.get(`${b}.ffn_down.weight`)?.fallback?.from ?? pf.get(`${b}.ffn_down.weight`)?.type)).to.deep.equal(['Q6_K', 'Q6_K', 'Q5_K', 'Q4_K', 'Q5_K']);
  });

  it('keeps what llama-quantize keeps, saying why', () => {
    const tensors = [
      { name: 'blk.0.attn_norm.weight', shape: [256] },
      { name: 'blk.0.attn_q.bias', shape: [256, 256] },
      { name: 'blk.0.ffn_gate_inp.weight', shape: [8, 256] },
      { name: 'blk.0.attn_q.weight', shape: [1, 256] },
      { name: 'position_embd.weight', shape: [512, 256] },
    ];
    const p = planMix('q4_k_m', tensors, { architecture: 'llama', layers: 1, gqa: 1, experts: 0, is70B: false }, false);
    for (const t of tensors) expect(p.get(t.name)?.type, t.name).to.equal(undefined);
    expect(p.get('blk.0.attn_q.bias')?.reason).to.include('weight');
    expect(p.get('blk.0.attn_q.weight')?.reason).to.include('1-D');
  });

  it('plans a mix only over the whole model, and only for GGUF', () => {
    const r = resolveRecipe('q4_k_m');
    expect(r.mix).to.equal('q4_k_m');
    expect(r.format).to.equal('gguf');
    const t = { name: 'blk.0.attn_q.weight', shape: [256, 256], floatDtype: 'f16' as const, storage: 'F16' };
    expect(() => planTensor(t, r, 'gguf')).to.throw(/planned over the whole model/);
    expect(() => planTensor(t, r, 'compressed-tensors', { mix: new Map() })).to.throw(/GGUF file type/);
    expect(() => resolveRecipe({ rules: [{ match: 'a*', method: 'quantize', options: { mix: 'q4_k_m' } }, { match: '*', method: 'quantize', options: { mix: 'q6_k' } }] })).to.throw(/one llama.cpp file type/);
    expect(() => resolveRecipe({ rules: [{ match: '*', method: 'quantize', options: { mix: 'q4_k' } }] })).to.throw(/options.mix must be one of/);
    expect(() => resolveRecipe({ rules: [{ match: '*', method: 'quantize', options: { mix: 'q4_k_m', format: 'q4_k' } }] })).to.throw(/not both/);
    expect(() => resolveRecipe({ extends: 'q4_k_m', format: 'compressed-tensors' })).to.throw(/GGUF file type/);
    // an explicit K-quant in a recipe: llama-quantize's fallback when the rows do not fit
    const plain = resolveRecipe({ format: 'gguf', rules: [{ match: '*', method: 'quantize', options: { format: 'q4_k' } }] });
    expect(planTensor({ ...t, shape: [64, 64] }, plain, 'gguf')).to.deep.include({ action: { kind: 'quantize', options: { format: 'q5_0' } }, fallback: { from: 'Q4_K', to: 'Q5_0', reason: 'rows of 64 values are not a multiple of the 256-value block' } });
    expect(planTensor({ ...t, shape: [64, 80] }, plain, 'gguf').fallback).to.deep.include({ from: 'Q4_K', to: 'F16' });
    expect(() => resolveRecipe({ format: 'gguf', rules: [{ match: '*', method: 'quantize', options: { format: 'q4_k', search: 'mse' } }] })).to.throw(/search 'mse'/);
  });

  describe('bytes identical with llama-quantize (c392e50)', () => {
    let manifest: Manifest;
    const inputs: Record<string, string> = {};
    const imatrices: Record<string, ImportanceMatrix> = {};

    before(async () => {
      manifest = JSON.parse(await fsp.readFile(path.join(FIXTURES, 'manifest.json'), 'utf8')) as Manifest;
      for (const model of ['a', 'b'] as const) {
        const file = path.join(tmp, `${model}.gguf`);
        await writeLlamaGguf(file, FIXTURE_MODELS[model]);
        expect(sha256(await fsp.readFile(file)), `generated model ${model} (the input llama-quantize was run on)`).to.equal(manifest.models[model].sha256);
        inputs[model] = file;
        // llama-quantize wrote the imatrix path it was given into the output
        const m = await readImatrix(path.join(FIXTURES, `${model}.imatrix.dat`));
        imatrices[model] = { ...m, source: { path: fixtureImatrixArg(model), format: 'dat' } };
      }
    });

    it('every preset, with and without an imatrix, on a 256-wide model and a 64-wide one', async () => {
      expect(manifest.outputs.length).to.equal(2 * (FIXTURE_PRESETS.a.length + FIXTURE_PRESETS.b.length));
      const failures: string[] = [];
      for (const o of manifest.outputs) {
        const out = path.join(tmp, `${o.model}.${o.preset}${o.imatrix ? '.imatrix' : ''}.gguf`);
        await compressModel({ input: inputs[o.model] as string, output: out, recipe: o.preset, overwrite: true, ...(o.imatrix ? { imatrix: imatrices[o.model] } : {}) });
        const bytes = await fsp.readFile(out);
        if (sha256(bytes) === o.sha256 && bytes.length === o.bytes) continue;
        const ours = await tensorHashes(out);
        const first = o.tensors.findIndex((t, i) => JSON.stringify(t) !== JSON.stringify(ours[i]));
        failures.push(`${o.model} ${o.preset}${o.imatrix ? ' + imatrix' : ''}: ${first < 0 ? 'header differs' : `tensor ${JSON.stringify(o.tensors[first])} vs ${JSON.stringify(ours[first])}`}`);
      }
      expect(failures).to.deep.equal([]);
    });

    it('Q4_K_M byte for byte against the files llama-quantize wrote', async () => {
      for (const name of WHOLE_OUTPUTS) {
        const imatrix = name.includes('.imatrix.');
        const out = path.join(tmp, `whole-${name}`);
        const r = await compressModel({ input: inputs.a as string, output: out, recipe: 'q4_k_m', ...(imatrix ? { imatrix: imatrices.a } : {}) });
        expect(Buffer.compare(await fsp.readFile(out), await fsp.readFile(path.join(FIXTURES, name))), name).to.equal(0);
        if (imatrix) {
          // llama-imatrix does not collect the head; the embedding is a lookup, never a matmul
          expect(r.imatrix).to.deep.equal({ files: [fixtureImatrixArg('a')], used: 28, notCovered: ['output.weight', 'token_embd.weight'] });
          expect(r.warnings.join('\n')).to.include('2 quantized tensors are not in the imatrix');
          const g = await GGUFReader.open(out);
          try {
            expect(g.entries.slice(-6).map((e) => [e.key, e.type, e.value])).to.deep.equal([
              ['general.quantization_version', 'u32', 2],
              ['general.file_type', 'u32', FILE_TYPE.q4_k_m],
              ['quantize.imatrix.file', 'string', fixtureImatrixArg('a')],
              ['quantize.imatrix.dataset', 'string', 'calibration.txt'],
              ['quantize.imatrix.entries_count', 'i32', 28],
              ['quantize.imatrix.chunks_count', 'i32', (imatrices.a as ImportanceMatrix).chunkCount],
            ]);
          } finally {
            await g.close();
          }
        }
      }
    });
  });

  it('writes a q4_k_m file whose tensors, read back, have llama.cpp\'s types (a 256-wide Llama GGUF)', async () => {
    const s: LlamaShape = { layers: 8, hidden: 256, ffn: 256, heads: 4, kvHeads: 2, vocab: 300, dtype: 'F16', seed: 7 };
    const input = path.join(tmp, 'types-f16.gguf');
    const out = path.join(tmp, 'types-q4_k_m.gguf');
    await writeLlamaGguf(input, s);
    await compressModel({ input, output: out, recipe: 'q4_k_m' });
    const m = modelOf(s);
    const src = await GGUFReader.open(input);
    const g = await GGUFReader.open(out);
    try {
      expect(g.tensors.map((t) => t.name).sort()).to.deep.equal(src.tensors.map((t) => t.name).sort());
      const types = Object.fromEntries(g.tensors.map((t) => [t.name, t.type]));
      for (const t of src.tensors) expect(types[t.name], t.name).to.equal(expected('q4_k_m', t.name, m, false) ?? t.type);
      // what the rules promote, seen in the file
      expect(types['output.weight']).to.equal('Q6_K');
      expect([0, 3, 6, 7].map((i) => types[`blk.${i}.ffn_down.weight`])).to.deep.equal(['Q6_K', 'Q6_K', 'Q6_K', 'Q6_K']);
      expect(types['blk.1.attn_v.weight']).to.equal('Q4_K');
      expect(g.metadata.get('general.file_type')).to.equal(FILE_TYPE.q4_k_m);
    } finally {
      await g.close();
      await src.close();
    }
  });

  it('writes general.file_type as llama.cpp numbers it', async () => {
    const file = path.join(tmp, 'ft.gguf');
    await writeLlamaGguf(file, { layers: 1, hidden: 256, ffn: 256, heads: 2, kvHeads: 2, vocab: 8, dtype: 'F16', seed: 1 });
    for (const mix of ['q3_k_l', 'q5_k_s', 'q6_k', 'q5_1'] as const) {
      const out = path.join(tmp, `ft-${mix}.gguf`);
      await compressModel({ input: file, output: out, recipe: mix });
      const g = await GGUFReader.open(out);
      expect(g.metadata.get('general.file_type'), mix).to.equal(FILE_TYPE[mix]);
      await g.close();
    }
  });

  it('quantizes each expert of a 3-D weight with its own slice of the imatrix', async () => {
    const rng = new Rng(5);
    const [experts, rows, cols] = [3, 4, 256];
    const w = rng.normals(experts * rows * cols, 0.02);
    const file = path.join(tmp, 'moe.gguf');
    const writer = await GGUFWriter.create(file, {
      entries: [
        { key: 'general.architecture', type: 'string', value: 'llama' },
        { key: 'llama.block_count', type: 'u32', value: 1 },
        { key: 'llama.expert_count', type: 'u32', value: experts },
      ],
      tensors: [{ name: 'blk.0.ffn_down_exps.weight', shape: [experts, rows, cols], type: 'F32' }],
    });
    await writer.write('blk.0.ffn_down_exps.weight', new Uint8Array(w.buffer));
    await writer.close();
    const weights = Float32Array.from({ length: experts * cols }, () => rng.uniform() * 4);
    const imatrix: ImportanceMatrix = {
      entries: new Map([['blk.0.ffn_down_exps.weight', { cols, matrices: experts, sums: weights.map((x) => x * 10), counts: Float32Array.of(10, 10, 10) }]]),
      datasets: [],
      chunkCount: 0,
      chunkSize: undefined,
      source: undefined,
    };
    const out = path.join(tmp, 'moe-q4k.gguf');
    const r = await compressModel({ input: file, output: out, recipe: 'q4_k_s', imatrix });
    expect(r.imatrix?.used).to.equal(1);
    const g = await GGUFReader.open(out);
    const got = await g.readTensorBytes('blk.0.ffn_down_exps.weight');
    await g.close();
    // llama-quantize's weights: in_sum2 / counts per expert
    const perExpert = imatrixWeights(imatrix.entries.get('blk.0.ffn_down_exps.weight') as ImatrixEntry);
    const want = Buffer.concat(
      [0, 1, 2].map((x) => quantizeSync(Tensor.from(w.subarray(x * rows * cols, (x + 1) * rows * cols), [rows, cols]), { format: 'q4_k', importance: perExpert.subarray(x * cols, (x + 1) * cols) }).data as Uint8Array),
    );
    expect(Buffer.compare(Buffer.from(got), want)).to.equal(0);
    // the whole matrix with one expert's weights would differ: the slices matter
    expect(Buffer.compare(Buffer.from(got), Buffer.from(quantizeSync(Tensor.from(w, [experts * rows, cols]), { format: 'q4_k', importance: perExpert.subarray(0, cols) }).data))).to.not.equal(0);
    // an imatrix of the wrong width is an error naming the tensor
    const bad: ImportanceMatrix = { ...imatrix, entries: new Map([['blk.0.ffn_down_exps.weight', { cols, matrices: 1, sums: new Float32Array(cols), counts: Float32Array.of(1) }]]) };
    const e = await rejected(compressModel({ input: file, output: path.join(tmp, 'bad.gguf'), recipe: 'q4_k_s', imatrix: bad }));
    expect(e.code).to.equal('ERR_SHAPE');
    expect(e.message).to.include('blk.0.ffn_down_exps.weight').and.include('3 experts');
  });

  it('the llama-quantize benchmark runs end to end (--quick; without the peer, slimtensor alone)', async () => {
    const r = await runLlamaQuantizeBench({ runs: 1, quick: true, log: () => undefined, llamaQuantize: path.join(tmp, 'no-llama-quantize') }, path.join(tmp, 'bench'));
    expect(r.peer).to.deep.equal({ missing: `--llama-quantize ${path.join(tmp, 'no-llama-quantize')} does not exist` });
    expect([r.speedup, r.identical]).to.deep.equal([null, null]);
    expect(r.slimtensor.runs).to.have.length(1);
    expect(r.slimtensor.seconds).to.be.above(0);
    expect(r.slimtensor.outputBytes).to.be.above(0).and.below(r.model.bytes);
    expect(r.model).to.include({ layers: 2, hidden: 256 });
  });
});
