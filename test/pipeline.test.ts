import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { gguf as hfGguf } from '@huggingface/gguf';
import { GGUFReader, lowRank, matmul, pruneSync, quantizeSync, SlimTensorError, Tensor } from '../lib/index';
import { compressModel, type CompressProgress, type CompressReport } from '../lib/pipeline/compress';
import { compareModels } from '../lib/pipeline/compare';
import { renderReportHtml } from '../lib/pipeline/html';
import { PRESETS, pruneRecipe, resolveRecipe, planTensor } from '../lib/pipeline/recipe';
import { llamaQuantizeOrder, planMix } from '../lib/pipeline/gguf-mix';
import { SafetensorsModel } from '../lib/formats/safetensors';
import { f16ToF32, f32ToF16 } from '../lib/half';
import { bytesOf, rejected } from './support/assert';
import { code, decodeSparse24Bitmask, groupParams, unpack } from './support/ct-oracle';
import { f32ToF16Bits, GGML, writeGGUF } from './support/gguf-writer';
import { runPipelineBench } from '../bench/pipeline';
import { CONFIG, ggufTensors, hfTensors, listing, stored, TOKENIZER, writeGGUFModel, writeHFFolder, type GeneratedTensor } from './support/models';

const ROOT = path.join(__dirname, '..');
const STORIES = path.join(ROOT, 'models', 'stories260K.gguf');

/** f16 bits of generated values, as writeHFFolder stores them. */
function f16Tensor(t: GeneratedTensor): Tensor {
  return Tensor.from(Uint16Array.from(t.values, f32ToF16Bits), t.shape, 'f16');
}

/** Root-mean-square of a - b over float tensors of one shape, in double precision. */
function rmseOf(a: Tensor, b: Tensor): number {
  const x = a.dtype === 'f16' ? Array.from(a.data as Uint16Array, f16ToF32) : Array.from(a.data as Float32Array);
  const y = b.dtype === 'f16' ? Array.from(b.data as Uint16Array, f16ToF32) : Array.from(b.data as Float32Array);
  let se = 0;
  for (let i = 0; i < x.length; i++) se += ((x[i] as number) - (y[i] as number)) ** 2;
  return Math.sqrt(se / x.length);
}

/** Nonzero elements (either sign of zero counts as zero) in each group of m along rows of a float tensor. */
function keptPerGroup(t: Tensor, m: number): number[] {
  const bits = t.dtype === 'f32' ? new Uint32Array(t.data.buffer, t.data.byteOffset, t.size) : (t.data as Uint16Array);
  const signless = t.dtype === 'f32' ? 0x7fffffff : 0x7fff;
  const out: number[] = [];
  for (let g = 0; g < t.size / m; g++) {
    let k = 0;
    for (let j = 0; j < m; j++) if (((bits[g * m + j] as number) & signless) !== 0) k++;
    out.push(k);
  }
  return out;
}

describe('pipeline', function () {
  this.timeout(120_000);
  let tmp: string;
  let ggufFile: string;
  let hfDir: string;
  let ggufT: GeneratedTensor[];
  let hfT: GeneratedTensor[];

  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-pipe-'));
    ggufFile = path.join(tmp, 'model.gguf');
    ggufT = ggufTensors();
    await writeGGUFModel(ggufFile, ggufT);
    hfDir = path.join(tmp, 'hf');
    hfT = hfTensors();
    await writeHFFolder(hfDir, hfT, 'F16', 3);
  });
  after(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  describe('recipes', () => {
    const plan = (recipe: Parameters<typeof resolveRecipe>[0], name: string, shape: number[], format: 'gguf' | 'compressed-tensors' = 'gguf', floatDtype: 'f32' | 'f16' | 'Q8_0' = 'f32') => {
      const r = resolveRecipe(recipe);
      // a mix is planned over the model: here the tensor and an output head
      const tensors = name === 'output.weight' ? [{ name, shape }] : [{ name: 'output.weight', shape: [96, 64] }, { name, shape }];
      const mix = r.mix === undefined ? undefined : planMix(r.mix, tensors, { architecture: 'llama', layers: 1, gqa: 1, experts: 0, is70B: false }, false);
      return planTensor({ name, shape, floatDtype: floatDtype === 'Q8_0' ? undefined : floatDtype, storage: floatDtype.toUpperCase() }, r, format, mix === undefined ? {} : { mix });
    };

    it("llama-quantize's choices: norms and 1-D kept, the output head Q6_K (Q8_0 when its rows do not fit), the rest at the preset", () => {
      expect(plan('q4_0', 'blk.0.attn_norm.weight', [64]).action.kind).to.equal('keep');
      expect(plan('q4_0', 'blk.0.attn_q.bias', [64]).action).to.deep.include({ kind: 'keep', reason: '1-D: only matrices are compressed' });
      expect(plan('q4_0', 'token_embd.weight', [96, 64]).action).to.deep.equal({ kind: 'quantize', options: { format: 'q4_0' } });
      expect(plan('q4_0', 'output.weight', [96, 256]).action).to.deep.equal({ kind: 'quantize', options: { format: 'q6_k' } });
      expect(plan('q4_0', 'output.weight', [96, 64])).to.deep.include({ action: { kind: 'quantize', options: { format: 'q8_0' } }, fallback: { from: 'Q6_K', to: 'Q8_0', reason: 'rows of 64 values are not a multiple of the 256-value block' } });
      expect(plan('q4_0', 'blk.0.attn_q.weight', [64, 64]).action).to.deep.equal({ kind: 'quantize', options: { format: 'q4_0' } });
      expect(plan('q4_0', 'blk.0.attn_q.weight', [64, 64], 'gguf', 'Q8_0').action).to.deep.include({ kind: 'keep', reason: 'stored as Q8_0 (already quantized): only F32/F16/BF16 tensors are compressed' });
      const w = plan('w4a16', 'model.layers.0.self_attn.q_proj.weight', [256, 256], 'compressed-tensors', 'f16');
      expect(w.action).to.deep.equal({ kind: 'quantize', options: { format: 'int4', symmetric: true, scaleDtype: 'f16', groupSize: 128 } });
      expect(plan('w4a16', 'lm_head.weight', [64, 128], 'compressed-tensors', 'f16').action.kind).to.equal('keep');
    });

    it('rows that do not fit fall back to the next format that fits, and say so', () => {
      expect(plan('q4_0', 'blk.0.ffn_down.weight', [64, 48]).fallback).to.deep.equal({ from: 'Q4_0', to: 'F16', reason: 'rows of 48 values are not a multiple of the 32-value block' });
      expect(plan('q4_0', 'blk.0.ffn_down.weight', [64, 48]).action.kind).to.equal('convert');
      const p = plan({ extends: 'w4a16-asym', target: 'transformers' }, 'x.weight', [8, 96], 'compressed-tensors', 'f16');
      expect(p.action).to.deep.include({ kind: 'quantize' });
      expect((p.action as { options: { groupSize: unknown } }).options.groupSize).to.equal('channel');
      expect(p.fallback?.reason).to.equal('rows of 96 values are not a multiple of the group size 128');
      // for vLLM no per-row fallback: Marlin needs inputs a multiple of 128, so the layer planner keeps it (test/compressed-tensors.test.ts)
      const v = plan('w4a16-asym', 'x.weight', [8, 96], 'compressed-tensors', 'f16');
      expect([(v.action as { options: { groupSize: unknown } }).options.groupSize, v.fallback]).to.deep.equal([128, undefined]);
    });

    it('rules: first match wins, globs and /regex/, extends a preset, search for all', () => {
      const r = { extends: 'q4_0', search: 'mse' as const, rules: [{ match: '/^blk\\.[01]\\.attn_q\\./', method: 'quantize' as const, options: { format: 'q8_0' } }, { match: ['blk.*.ffn_up.weight'], method: 'keep' as const }] };
      expect(plan(r, 'blk.1.attn_q.weight', [64, 64]).action).to.deep.equal({ kind: 'quantize', options: { format: 'q8_0', search: 'mse' } });
      expect(plan(r, 'blk.2.attn_q.weight', [64, 64]).action).to.deep.equal({ kind: 'quantize', options: { format: 'q4_0', search: 'mse' } });
      expect(plan(r, 'blk.7.ffn_up.weight', [64, 64]).action.kind).to.equal('keep');
      expect(plan({ rules: [{ match: 'a?c', method: 'keep', options: { dtype: 'f16' } }] }, 'abc', [2, 32]).action).to.deep.equal({ kind: 'convert', dtype: 'f16', reason: 'rule #1: keep as f16' });
      expect(plan({ rules: [{ match: 'x', method: 'keep' }] }, 'y', [2, 32]).action).to.deep.equal({ kind: 'keep', reason: 'no rule matches' });
    });

    it('rejects bad recipes with ERR_VALUE naming the rule; prune with quantize is ERR_UNSUPPORTED', () => {
      const bad: [unknown, string][] = [
        ['q9_9', 'unknown preset'],
        ['{not json', 'not valid JSON'],
        [{ rules: [] }, 'no rules'],
        [{ rules: [{ match: '*', method: 'squash' }] }, 'rule #1: method must be one of'],
        [{ rules: [{ match: '/(/', method: 'keep' }] }, 'not a valid regular expression'],
        [{ rules: [{ match: '*', method: 'quantize', options: { format: 'int3' } }] }, 'options.format'],
        [{ rules: [{ match: '*', method: 'quantize', options: { format: 'q4_0', groupSize: 64 } }] }, 'fixed blocks'],
        [{ rules: [{ match: '*', method: 'keep', options: { nope: 1 } }] }, 'unknown key "nope"'],
        [{ extends: 'q5_k' }, 'unknown preset'],
        [{ format: 'onnx', extends: 'q4_0' }, 'format must be one of'],
        [{ rules: [{ match: '*', method: 'prune', options: { pattern: '2/4' } }] }, "rule #1: prune options.pattern must be 'N:M'"],
        [{ rules: [{ match: '*', method: 'prune', options: { pattern: '5:4' } }] }, 'need 1 <= N <= M <= 32'],
        [{ rules: [{ match: '*', method: 'prune', options: { pattern: '2:4', sparsity: 0.5 } }] }, 'unknown key "sparsity"'],
        [{ rules: [{ match: '*', method: 'prune', options: { score: 'random' } }] }, "options.score must be 'magnitude', 'wanda' or { activationNorms"],
        [{ rules: [{ match: '*', method: 'prune', options: { layout: 'bitmask' } }] }, "prune options.layout must be one of dense, sparse-24-bitmask"],
        [{ extends: 'w4a16', target: 'tgi' }, 'target must be one of vllm, transformers'],
        // vLLM's Marlin kernel: group sizes 32, 64, 128 or per row; zero points with 4-bit weights only
        [{ extends: 'w4a16', rules: [{ match: '*', method: 'quantize', options: { format: 'int4', groupSize: 256 } }] }, "rule #1: target 'vllm': vLLM's Marlin kernel takes group sizes 32, 64, 128 or one group per row, not 256"],
        [{ extends: 'w8a16', rules: [{ match: '*', method: 'quantize', options: { format: 'int8', symmetric: false } }] }, "rule #1: target 'vllm': vLLM's Marlin kernel takes zero points with 4-bit weights only (uint4), not asymmetric INT8"],
      ];
      for (const [r, msg] of bad) {
        let e: unknown;
        try {
          resolveRecipe(r as never);
        } catch (x) {
          e = x;
        }
        expect(e, msg).to.be.instanceOf(SlimTensorError);
        expect((e as SlimTensorError).code).to.equal('ERR_VALUE');
        expect((e as SlimTensorError).message).to.include(msg);
      }
      for (const r of [{ extends: 'w4a16', rules: [{ match: '*.q_proj.weight', method: 'prune' }] }, { extends: '2of4', rules: [{ match: 'blk.0.*', method: 'quantize', options: { format: 'q8_0' } }] }]) {
        let e: unknown;
        try {
          resolveRecipe(r as never);
        } catch (x) {
          e = x;
        }
        expect((e as SlimTensorError).code).to.equal('ERR_UNSUPPORTED');
        expect((e as SlimTensorError).message).to.match(/recipe (rule #1|preset 2of4 rule #2) prunes .* and (rule #1|preset w4a16 rule #3) quantizes/).and.include('marlin-24');
      }
      expect(() => plan({ rules: [{ match: '*', method: 'quantize', options: { format: 'int4' } }] }, 'w', [4, 32], 'gguf')).to.throw(SlimTensorError, 'compressed-tensors format');
      expect(Object.keys(PRESETS)).to.deep.equal(['q4_0', 'q4_1', 'q5_0', 'q5_1', 'q8_0', 'q2_k', 'q3_k_s', 'q3_k_m', 'q3_k_l', 'q4_k_s', 'q4_k_m', 'q4_k_m-imatrix', 'q5_k_s', 'q5_k_m', 'q6_k', 'w4a16', 'w4a16-asym', 'w8a16', '2of4', 'w4a16-gptq', 'w4a16-awq', 'q4_0-gptq', 'q4_k_m-gptq']);
      // the same schemes are fine for compressed-tensors' own readers, and presets say whom they are for
      expect(resolveRecipe({ extends: 'w4a16', target: 'transformers', rules: [{ match: '*', method: 'quantize', options: { format: 'int4', groupSize: 256 } }] }).target).to.equal('transformers');
      expect(['w4a16', 'w4a16-asym', 'w8a16', '2of4', 'q4_0'].map((p) => resolveRecipe(p).target)).to.deep.equal(['vllm', 'vllm', 'vllm', 'transformers', 'transformers']);
      expect(resolveRecipe({ extends: 'w8a16', rules: [{ match: 'x', method: 'keep' }] }).target).to.equal('vllm');
    });

    it('2of4: pruned weights dense by default; sparse-24-bitmask only when asked, for compressed-tensors 2:4; rows that do not fit M are kept and say so', () => {
      const q = 'model.layers.0.self_attn.q_proj.weight';
      expect(plan('2of4', q, [128, 128], 'compressed-tensors', 'f16').action).to.deep.equal({
        kind: 'prune', pattern: '2:4', n: 2, m: 4, activationNorms: undefined, layout: 'dense', sparse24: false,
        dense: "the default layout 'dense': every consumer loads dense weights, and current vLLM and transformers read no sparse layout: the pruned tensor is written dense",
      });
      const bitmask = pruneRecipe('2:4', 'sparse-24-bitmask');
      expect(bitmask.name).to.equal('2of4-bitmask');
      expect(plan(bitmask, q, [128, 128], 'compressed-tensors', 'f16').action).to.deep.equal({ kind: 'prune', pattern: '2:4', n: 2, m: 4, activationNorms: undefined, layout: 'sparse-24-bitmask', sparse24: true });
      expect(plan(bitmask, 'blk.0.attn_q.weight', [64, 64]).action).to.deep.include({ sparse24: false, dense: 'GGUF has no sparse tensor type: the pruned tensor is written dense' });
      const g = plan('2of4', 'blk.0.attn_q.weight', [64, 64]).action;
      expect(g).to.deep.include({ kind: 'prune', sparse24: false, dense: 'GGUF has no sparse tensor type: the pruned tensor is written dense' });
      for (const name of ['blk.0.attn_norm.weight', 'token_embd.weight', 'output.weight', 'model.embed_tokens.weight', 'lm_head.weight']) expect(plan('2of4', name, [96, 64]).action.kind, name).to.equal('keep');
      expect(plan('2of4', 'blk.0.attn_q.bias', [64]).action).to.deep.include({ kind: 'keep', reason: '1-D: only matrices are compressed' });
      const odd = plan('2of4', q, [8, 70], 'compressed-tensors', 'f16');
      expect(odd.action.kind).to.equal('keep');
      expect(odd.fallback).to.deep.equal({ from: 'prune 2:4', to: 'F16 (not pruned)', reason: 'rows of 70 values are not a multiple of M = 4 (pattern 2:4)' });
      const r14 = { rules: [{ match: '*', method: 'prune' as const, options: { pattern: ' 4 : 8 ', layout: 'sparse-24-bitmask' } }] };
      expect(plan(r14, q, [16, 64], 'compressed-tensors', 'f16').action).to.deep.include({ pattern: '4:8', n: 4, m: 8, sparse24: false, dense: "compressed-tensors' sparse-24-bitmask stores 2:4 only, not 4:8: the pruned tensor is written dense" });
      expect(plan(r14, q, [16, 60], 'compressed-tensors', 'f16').fallback?.reason).to.equal('rows of 60 values are not a multiple of M = 8 (pattern 4:8)');
      // Wanda: norms per tensor name; a missing or mis-sized entry names the tensor
      const wanda = (norms: Record<string, number[]>) => ({ rules: [{ match: '*', method: 'prune' as const, options: { score: { activationNorms: norms } } }] });
      const a = plan(wanda({ [q]: [1, 2, 3, 4] }), q, [2, 4], 'compressed-tensors', 'f16').action as { activationNorms: Float32Array };
      expect(Array.from(a.activationNorms)).to.deep.equal([1, 2, 3, 4]);
      expect(() => plan(wanda({}), q, [2, 4], 'compressed-tensors', 'f16')).to.throw(SlimTensorError, `prunes '${q}' by Wanda scores, but options.score.activationNorms has no entry for it`);
      expect(() => plan(wanda({ [q]: [1, 2] }), q, [2, 4], 'compressed-tensors', 'f16')).to.throw(SlimTensorError, 'has 2 norms; the tensor has 4 input channels');
    });
  });

  describe('GGUF out', () => {
    let out: string;
    before(async () => {
      out = path.join(tmp, 'q4.gguf');
      await compressModel({ input: ggufFile, output: out, recipe: 'q4_0', measureError: true });
    });

    it('@huggingface/gguf parses it: tensor infos match the plan (in llama-quantize\'s order), metadata copied, file type and quantization version set', async () => {
      const hf = await hfGguf(out, { allowLocalFile: true });
      const want = llamaQuantizeOrder(ggufT).map((t) => {
        // the head Q6_K falls back to Q8_0 on rows of 64; ffn_down's rows of 48 fit no block: F16
        const type = t.shape.length === 1 ? GGML.F32 : t.name.startsWith('output.') ? GGML.Q8_0 : t.name.includes('ffn_down') ? GGML.F16 : GGML.Q4_0;
        return [t.name, t.shape.slice().reverse(), type];
      });
      expect(hf.tensorInfos.map((t) => [t.name, t.shape.map(Number), t.dtype])).to.deep.equal(want);
      const md = hf.metadata as Record<string, unknown>;
      expect(md['general.file_type']).to.equal(2);
      expect(md['general.quantization_version']).to.equal(2);
      expect(md['general.name']).to.equal('generated');
      expect(md['tokenizer.ggml.tokens']).to.deep.equal(['<s>', 'a', 'b']);
      expect(Number(hf.tensorDataOffset) % 32).to.equal(0);
      for (const t of hf.tensorInfos) expect(Number(t.offset) % 32).to.equal(0);
    });

    it('holds exactly the blocks quantize() makes, the F32 norms as stored and the F16 fallback rounded to nearest', async () => {
      const g = await GGUFReader.open(out);
      try {
        for (const t of ggufT) {
          const info = g.tensor(t.name);
          const bytes = await g.readTensorBytes(t.name);
          const x = Tensor.from(t.values, t.shape);
          if (info?.type === 'Q4_0' || info?.type === 'Q8_0') {
            expect(bytesOf(bytes), t.name).to.deep.equal(bytesOf(quantizeSync(x, { format: info.type === 'Q4_0' ? 'q4_0' : 'q8_0' }).data));
          } else if (info?.type === 'F16') {
            expect(Array.from(new Uint16Array(bytes.buffer, bytes.byteOffset, t.values.length)), t.name).to.deep.equal(Array.from(t.values, (v) => f32ToF16(v)));
          } else {
            expect(bytesOf(bytes), t.name).to.deep.equal(bytesOf(t.values));
          }
        }
      } finally {
        await g.close();
      }
    });

    it('round trip read -> write -> read: a keep-everything recipe reproduces every tensor and metadata value', async () => {
      const copy = path.join(tmp, 'copy.gguf');
      const r = await compressModel({ input: ggufFile, output: copy, recipe: { rules: [{ match: '*', method: 'keep' }] } });
      expect(r.output.format).to.equal('gguf');
      const [a, b] = [await GGUFReader.open(ggufFile), await GGUFReader.open(copy)];
      try {
        const strip = (g: GGUFReader) => g.entries.filter((e) => e.key !== 'general.quantization_version');
        expect(strip(b)).to.deep.equal(strip(a));
        for (const t of a.tensors) expect(bytesOf(await b.readTensorBytes(t.name)), t.name).to.deep.equal(bytesOf(await a.readTensorBytes(t.name)));
      } finally {
        await a.close();
        await b.close();
      }
    });

    it('reports per tensor: what it became, why, the error, and the fallbacks', async () => {
      const r = await compressModel({ input: ggufFile, output: path.join(tmp, 'q8.gguf'), recipe: 'q8_0', measureError: true, threads: 1 });
      expect(r.tensors.map((t) => t.to)).to.deep.equal(llamaQuantizeOrder(ggufT).map((t) => (t.shape.length === 1 ? 'F32' : t.name.includes('ffn_down') ? 'F16' : 'Q8_0')));
      expect(r.fallbacks.map((f) => f.name)).to.deep.equal(['blk.0.ffn_down.weight', 'blk.1.ffn_down.weight']);
      const q = r.tensors.find((t) => t.name === 'blk.0.attn_q.weight');
      expect(q?.error?.rmse).to.be.above(0).and.below(0.001);
      expect(q?.bytesOut).to.equal(64 * 2 * 34);
      expect(r.ratio).to.be.above(2);
      expect(r.output.bytes).to.equal((await fsp.stat(path.join(tmp, 'q8.gguf'))).size);
    });
  });

  describe('compressed-tensors out', () => {
    // This model's rows of 96 and merged q/k outputs of 160 fit no vLLM Marlin
    // kernel (test/compressed-tensors.test.ts covers that target): written for
    // transformers, every matrix is quantized, down_proj with one group per row.
    let out: string;
    before(async () => {
      out = path.join(tmp, 'w4asym');
      await compressModel({ input: hfDir, output: out, recipe: { extends: 'w4a16-asym', target: 'transformers' }, maxShardBytes: 24 * 1024 });
    });

    it('writes a Hugging Face folder: shards with an index, config.json with quantization_config, the other files unchanged', async () => {
      const files = await listing(out);
      expect(files).to.include.members(['config.json', 'tokenizer.json', 'generation_config.json', 'model.safetensors.index.json']);
      expect(files).not.to.include('pytorch_model.bin');
      expect(files.filter((f) => f.endsWith('.safetensors')).length).to.be.above(1);
      expect(await fsp.readFile(path.join(out, 'tokenizer.json'), 'utf8')).to.equal(TOKENIZER);
      const cfg = JSON.parse(await fsp.readFile(path.join(out, 'config.json'), 'utf8')) as Record<string, unknown> & { quantization_config: Record<string, unknown> };
      for (const [k, v] of Object.entries(CONFIG)) expect(cfg[k]).to.deep.equal(v);
      const qc = cfg.quantization_config;
      // the fields compressed-tensors' ModelCompressor.update_config writes, keys sorted as its json.dump(sort_keys=True)
      expect(qc).to.deep.include({ quant_method: 'compressed-tensors', format: 'pack-quantized', quantization_status: 'compressed', version: '0.18.0', sparsity_config: {}, transform_config: {}, global_compression_ratio: null, kv_cache_scheme: null });
      expect(Object.keys(qc)).to.deep.equal(Object.keys(qc).slice().sort());
      expect(Object.keys(cfg)).to.deep.equal(Object.keys(cfg).slice().sort());
      // ignore lists the Linear modules left unquantized (the head), not the embedding: llm-compressor
      // lists only modules of a class some group targets
      expect(qc.ignore).to.deep.equal(['lm_head']);
      const groups = Object.values(qc.config_groups as Record<string, { targets: string[]; weights: Record<string, unknown> }>);
      // group 128 for q/k/up (rows of 128), channel for down_proj (rows of 96)
      expect(groups).to.have.length(2);
      expect(groups[0]?.targets).to.deep.equal(['Linear']);
      expect(groups[0]?.weights).to.deep.include({ num_bits: 4, type: 'int', symmetric: false, strategy: 'group', group_size: 128, dynamic: false, actorder: null, observer: 'minmax' });
      expect(groups[1]?.targets).to.deep.equal(['model.layers.0.mlp.down_proj']);
      expect(groups[1]?.weights).to.deep.include({ strategy: 'channel', group_size: null });
    });

    it('packs codes, scales and zero points as an independent decoder reads them back from the original', async () => {
      const m = await SafetensorsModel.open(out);
      try {
        for (const t of hfT.filter((x) => x.shape.length === 2 && !x.name.includes('embed') && !x.name.startsWith('lm_head'))) {
          const prefix = t.name.slice(0, -'.weight'.length);
          const [n, k] = t.shape as [number, number];
          const packed = await m.readTensor(`${prefix}.weight_packed`);
          const scale = await m.readTensor(`${prefix}.weight_scale`);
          const zp = await m.readTensor(`${prefix}.weight_zero_point`);
          const shape = await m.readTensor(`${prefix}.weight_shape`);
          expect(Array.from(shape.data as BigInt64Array)).to.deep.equal([BigInt(n), BigInt(k)]);
          expect([packed.dtype, packed.shape]).to.deep.equal(['i32', [n, k / 8]]);
          const group = k % 128 === 0 ? 128 : k;
          const groups = k / group;
          expect([scale.dtype, scale.shape]).to.deep.equal(['f16', [n, groups]]);
          expect([zp.dtype, zp.shape]).to.deep.equal(['i32', [Math.ceil(n / 8), groups]]);
          const x = stored(t.values, 'F16');
          const zWords = zp.data as Int32Array;
          for (let r = 0; r < n; r++) {
            for (let g = 0; g < groups; g++) {
              // zero points: 8 rows per int32 along dim 0, biased by 8
              const zero = ((zWords[Math.floor(r / 8) * groups + g] as number) >>> (4 * (r % 8))) & 15;
              const xs = x.subarray(r * k + g * group, r * k + (g + 1) * group);
              const p = groupParams(xs, 4, false, 'f16');
              expect(f16ToF32((scale.data as Uint16Array)[r * groups + g] as number), `${t.name} scale [${r}, ${g}]`).to.equal(p.scale);
              expect(zero - 8, `${t.name} zero [${r}, ${g}]`).to.equal(p.zero);
              for (let j = 0; j < group; j++) expect(unpack(packed.data as Int32Array, k / 8, r, g * group + j, 4)).to.equal(code(xs[j] as number, p.scale, p.zero, 4));
            }
          }
        }
        // Kept tensors are copied as stored.
        const emb = await m.readTensor('model.embed_tokens.weight');
        expect(emb.dtype).to.equal('f16');
      } finally {
        await m.close();
      }
    });

    it('report: every tensor compared; errors match quantizationError; HTML is one self-contained page', async () => {
      const r = await compareModels(hfDir, out, { histograms: 2 });
      expect(r.compressed.format).to.equal('compressed-tensors');
      expect(r.tensors.map((t) => t.name)).to.deep.equal(hfT.map((t) => t.name));
      const q = r.tensors.find((t) => t.name === 'model.layers.0.self_attn.q_proj.weight');
      expect(q?.compressedType).to.equal('int4 g128 asym');
      // The error of q_proj as decoded here from the file's codes, scales
      // and zero points, in f64: x̂ = (code − zero)·scale.
      const hq = hfT.find((t) => t.name === 'model.layers.0.self_attn.q_proj.weight') as GeneratedTensor;
      const [n, k] = hq.shape as [number, number];
      const x = stored(hq.values, 'F16');
      const xh = new Float64Array(n * k);
      const m = await SafetensorsModel.open(out);
      try {
        const prefix = 'model.layers.0.self_attn.q_proj';
        const packed = (await m.readTensor(`${prefix}.weight_packed`)).data as Int32Array;
        const scale = (await m.readTensor(`${prefix}.weight_scale`)).data as Uint16Array;
        const zWords = (await m.readTensor(`${prefix}.weight_zero_point`)).data as Int32Array;
        const groups = k / 128;
        for (let row = 0; row < n; row++) {
          for (let c = 0; c < k; c++) {
            const g = Math.floor(c / 128);
            const zero = (((zWords[Math.floor(row / 8) * groups + g] as number) >>> (4 * (row % 8))) & 15) - 8;
            xh[row * k + c] = (unpack(packed, k / 8, row, c, 4) - zero) * f16ToF32(scale[row * groups + g] as number);
          }
        }
      } finally {
        await m.close();
      }
      let se = 0;
      let sx = 0;
      let sh = 0;
      let dot = 0;
      let maxAbs = 0;
      for (let i = 0; i < n * k; i++) {
        const a = x[i] as number;
        const b = xh[i] as number;
        se += (a - b) ** 2;
        sx += a * a;
        sh += b * b;
        dot += a * b;
        maxAbs = Math.max(maxAbs, Math.abs(a - b));
      }
      expect(se).to.be.above(0);
      expect(q?.error?.rmse).to.be.closeTo(Math.sqrt(se / (n * k)), 1e-6 * Math.sqrt(se / (n * k)));
      expect(q?.error?.maxAbs).to.be.closeTo(maxAbs, 1e-6 * maxAbs);
      expect(q?.error?.sqnrDb).to.be.closeTo(10 * Math.log10(sx / se), 1e-5);
      expect(q?.error?.cosine).to.be.closeTo(dot / Math.sqrt(sx * sh), 1e-7);
      const emb = r.tensors.find((t) => t.name === 'model.embed_tokens.weight');
      expect(emb?.error?.rmse).to.equal(0);
      expect(r.tensors.filter((t) => t.grid !== undefined)).to.have.length(2);
      const grid = r.tensors.find((t) => t.grid !== undefined)?.grid;
      expect(grid?.levels).to.deep.equal([-8, 7]);
      // Asymmetric min/max scaling puts every weight inside the grid.
      expect(grid?.outside).to.equal(0);
      const html = renderReportHtml(r);
      expect(html).to.match(/^<!doctype html>/);
      expect(html).to.include('<svg').and.include('model.layers.0.mlp.down_proj.weight');
      expect(html).not.to.match(/(src|href)\s*=|<script|@import|url\(/i);
    });

    it('round trip safetensors -> safetensors: a keep recipe reproduces every tensor; BF16 and sharded inputs read', async () => {
      const bf = path.join(tmp, 'hf-bf16');
      await writeHFFolder(bf, hfT, 'BF16', 1);
      const copy = path.join(tmp, 'hf-copy');
      const r = await compressModel({ input: bf, output: copy, recipe: { format: 'safetensors', rules: [{ match: '*', method: 'keep' }] } });
      expect(r.output.format).to.equal('safetensors');
      const [a, b] = [await SafetensorsModel.open(bf), await SafetensorsModel.open(copy)];
      try {
        expect(b.tensors.map((t) => [t.name, t.dtype, [...t.shape]])).to.deep.equal(a.tensors.map((t) => [t.name, t.dtype, [...t.shape]]));
        for (const t of a.tensors) expect(bytesOf(await b.readTensorBytes(t.name))).to.deep.equal(bytesOf(await a.readTensorBytes(t.name)));
      } finally {
        await a.close();
        await b.close();
      }
      expect(JSON.parse(await fsp.readFile(path.join(copy, 'config.json'), 'utf8'))).to.deep.equal(CONFIG);
      // w8a16 from BF16: scales in BF16
      const w8 = path.join(tmp, 'w8');
      await compressModel({ input: bf, output: w8, recipe: 'w8a16', target: 'transformers' });
      const m = await SafetensorsModel.open(w8);
      expect(m.tensor('model.layers.0.self_attn.q_proj.weight_scale')?.dtype).to.equal('BF16');
      expect(m.tensor('model.layers.0.self_attn.q_proj.weight_packed')?.shape).to.deep.equal([128, 32]);
      await m.close();
    });
  });

  describe('low-rank factors', () => {
    it('writes W ≈ left · right as two tensors in the source dtype, as good as lowRank itself', async () => {
      const out = path.join(tmp, 'lowrank');
      const recipe = { format: 'safetensors' as const, rules: [{ match: '*_proj.weight', method: 'lowrank' as const, options: { ratio: 0.5 } }] };
      const report = await compressModel({ input: hfDir, output: out, recipe, measureError: true });
      const m = await SafetensorsModel.open(out);
      const name = 'model.layers.0.self_attn.q_proj.weight';
      const w = hfT.find((t) => t.name === name) as GeneratedTensor;
      const [rows, cols] = w.shape as [number, number];
      const rank = Math.floor((0.5 * rows * cols) / (rows + cols));
      const left = await m.readTensor(`${name}.lowrank_left`);
      const right = await m.readTensor(`${name}.lowrank_right`);
      expect(left.dtype).to.equal('f16');
      expect(left.shape).to.deep.equal([rows, rank]);
      expect(right.shape).to.deep.equal([rank, cols]);
      expect(m.tensor(name)).to.equal(undefined);
      // the product of the stored factors vs the f16 original
      const orig = Tensor.from(stored(w.values, 'F16'), w.shape);
      const approx = (await matmul(left, right)).data as Float32Array;
      let se = 0;
      let sx = 0;
      for (let i = 0; i < approx.length; i++) {
        se += ((orig.data[i] as number) - (approx[i] as number)) ** 2;
        sx += (orig.data[i] as number) ** 2;
      }
      const direct = await lowRank(orig, { rank });
      expect(Math.sqrt(se / sx)).to.be.closeTo(direct.relError, 2e-3); // the factors' f16 rounding
      const rec = report.tensors.find((t) => t.name === name);
      expect(rec?.to).to.equal('low-rank');
      expect(rec?.error?.rmse).to.be.closeTo(Math.sqrt(se / approx.length), 1e-6);
      await m.close();
    });
  });

  describe('pruning', () => {
    const matrices = (ts: readonly GeneratedTensor[]): GeneratedTensor[] => ts.filter((t) => t.shape.length === 2 && !t.name.includes('embed') && !t.name.startsWith('lm_head'));
    let out: string;
    let report: CompressReport;
    before(async () => {
      out = path.join(tmp, '2of4');
      report = await compressModel({ input: hfDir, output: out, recipe: pruneRecipe('2:4', 'sparse-24-bitmask'), measureError: true, maxShardBytes: 24 * 1024 });
    });

    it('2of4 (the default, dense) on a Hugging Face folder: a plain folder with config.json as it was, the pruned weights dense, the sparsity in the report', async () => {
      const o = path.join(tmp, '2of4-dense');
      const r = await compressModel({ input: hfDir, output: o, recipe: '2of4' });
      expect(r.output.format).to.equal('safetensors');
      expect(await fsp.readFile(path.join(o, 'config.json'), 'utf8')).to.equal(`${JSON.stringify(CONFIG, null, 2)}\n`);
      const m = await SafetensorsModel.open(o);
      let zeros = 0;
      let total = 0;
      try {
        expect(m.tensors.map((t) => t.name).sort()).to.deep.equal(hfT.map((t) => t.name).sort());
        for (const t of hfT) {
          const got = await m.readTensor(t.name);
          const want = matrices(hfT).includes(t) ? pruneSync(f16Tensor(t), { pattern: '2:4' }).tensor : f16Tensor(t);
          expect(bytesOf(got.data), t.name).to.deep.equal(bytesOf(want.data));
          for (const h of got.data as Uint16Array) if ((h & 0x7fff) === 0) zeros++;
          total += got.size;
        }
      } finally {
        await m.close();
      }
      const prunedWeights = matrices(hfT).reduce((a, t) => a + t.values.length / 2, 0);
      expect(r.sparsity).to.deep.equal({ tensors: 4, prunedWeights, globalSparsity: zeros / total });
      for (const t of matrices(hfT)) expect(r.tensors.find((x) => x.name === t.name)?.pruned, t.name).to.deep.include({ pattern: '2:4', layout: 'dense' });
      expect(r.warnings).to.deep.equal([
        "4 pruned tensors (2:4) are written dense, the pruned weights stored as zeros (the default layout 'dense': every consumer loads dense weights, and current vLLM and transformers read no sparse layout): they take as many bytes as before",
      ]);
    });

    it('2of4 with layout sparse-24-bitmask on a Hugging Face folder: tensors named, typed and shaped as compressed-tensors does; kept tensors as stored', async () => {
      expect(report.output.format).to.equal('compressed-tensors');
      const m = await SafetensorsModel.open(out);
      try {
        for (const t of matrices(hfT)) {
          const prefix = t.name.slice(0, -'.weight'.length);
          const [rows, cols] = t.shape as [number, number];
          expect(m.tensor(t.name), t.name).to.equal(undefined);
          expect([m.tensor(`${prefix}.compressed`)?.dtype, m.tensor(`${prefix}.compressed`)?.shape], t.name).to.deep.equal(['F16', [rows, cols / 2]]);
          expect([m.tensor(`${prefix}.bitmask`)?.dtype, m.tensor(`${prefix}.bitmask`)?.shape], t.name).to.deep.equal(['U8', [rows, Math.ceil(cols / 8)]]);
          expect([m.tensor(`${prefix}.shape`)?.dtype, m.tensor(`${prefix}.shape`)?.shape], t.name).to.deep.equal(['I64', [2, 1]]);
          expect(Array.from((await m.readTensor(`${prefix}.shape`)).data as BigInt64Array), t.name).to.deep.equal([BigInt(rows), BigInt(cols)]);
        }
        for (const t of hfT.filter((x) => !matrices(hfT).includes(x))) {
          expect(bytesOf(await m.readTensorBytes(t.name)), t.name).to.deep.equal(bytesOf(f16Tensor(t).data));
        }
        expect(m.tensors).to.have.length(hfT.length + 2 * matrices(hfT).length);
      } finally {
        await m.close();
      }
      const files = await listing(out);
      expect(files).to.include.members(['config.json', 'tokenizer.json', 'generation_config.json', 'model.safetensors.index.json']);
    });

    it('an independent decoder of the bitmask layout gives back exactly prune() of the original, and the bitmask is prune()\'s mask', async () => {
      const m = await SafetensorsModel.open(out);
      try {
        for (const t of matrices(hfT)) {
          const prefix = t.name.slice(0, -'.weight'.length);
          const [rows, cols] = t.shape as [number, number];
          const compressed = await m.readTensor(`${prefix}.compressed`);
          const bitmask = await m.readTensor(`${prefix}.bitmask`);
          const want = pruneSync(f16Tensor(t), { pattern: '2:4' });
          const dense = decodeSparse24Bitmask(compressed.data as Uint16Array, bitmask.data as Uint8Array, rows, cols);
          expect(bytesOf(dense), t.name).to.deep.equal(bytesOf(want.tensor.data));
          expect(bytesOf(bitmask.data), t.name).to.deep.equal(bytesOf(want.mask.data));
          // two bits in every group of four: the file is 2:4, not just half-dense per row
          const b = bitmask.data as Uint8Array;
          for (let i = 0; i < b.length; i++) {
            for (const nib of [(b[i] as number) & 15, (b[i] as number) >> 4]) expect(((nib & 1) + ((nib >> 1) & 1) + ((nib >> 2) & 1) + (nib >> 3)) as number, `${t.name} byte ${i}`).to.equal(2);
          }
        }
      } finally {
        await m.close();
      }
    });

    it('config.json: quantization_config with sparsity_config (format, structure, targets, ignore, global sparsity counted in the files)', async () => {
      const cfg = JSON.parse(await fsp.readFile(path.join(out, 'config.json'), 'utf8')) as Record<string, unknown> & { quantization_config: { sparsity_config: { global_sparsity: number } } };
      for (const [k, v] of Object.entries(CONFIG)) expect(cfg[k]).to.deep.equal(v);
      const gs = cfg.quantization_config.sparsity_config.global_sparsity;
      expect(cfg.quantization_config).to.deep.equal({
        quant_method: 'compressed-tensors',
        sparsity_config: { format: 'sparse-24-bitmask', global_sparsity: gs, ignore: ['lm_head'], sparsity_structure: '2:4', targets: ['Linear'] },
      });
      // zero weights over all float weights, counted from the decoded files
      const m = await SafetensorsModel.open(out);
      let zeros = 0;
      let total = 0;
      try {
        for (const t of hfT) {
          const prefix = t.name.slice(0, -'.weight'.length);
          const sparse = m.tensor(`${prefix}.compressed`) !== undefined;
          const [rows, cols] = t.shape.length === 2 ? (t.shape as [number, number]) : [1, t.shape[0] as number];
          const bits = sparse ? decodeSparse24Bitmask((await m.readTensor(`${prefix}.compressed`)).data as Uint16Array, (await m.readTensor(`${prefix}.bitmask`)).data as Uint8Array, rows, cols) : ((await m.readTensor(t.name)).data as Uint16Array);
          for (const h of bits) if ((h & 0x7fff) === 0) zeros++;
          total += bits.length;
        }
      } finally {
        await m.close();
      }
      expect(gs).to.equal(zeros / total);
      const pruned = matrices(hfT).reduce((a, t) => a + t.values.length / 2, 0);
      expect(gs).to.be.closeTo(pruned / total, 1e-3);
    });

    it('the report: each pruned tensor\'s layout, kept count, bytes and error (against prune() of the original)', () => {
      for (const t of matrices(hfT)) {
        const rec = report.tensors.find((r) => r.name === t.name);
        const [rows, cols] = t.shape as [number, number];
        expect(rec?.method, t.name).to.equal('prune');
        expect(rec?.to, t.name).to.equal('2:4 sparse-24-bitmask');
        expect(rec?.pruned, t.name).to.deep.equal({ pattern: '2:4', layout: 'sparse-24-bitmask', kept: (rows * cols) / 2, total: rows * cols });
        expect(rec?.bytesOut, t.name).to.equal(rows * (cols / 2) * 2 + rows * (cols / 8) + 16);
        const orig = f16Tensor(t);
        expect(rec?.error?.rmse, t.name).to.be.closeTo(rmseOf(orig, pruneSync(orig, { pattern: '2:4' }).tensor), 1e-9);
      }
      expect(report.tensors.find((r) => r.name === 'lm_head.weight')?.method).to.equal('keep');
      expect(report.warnings).to.have.length(1);
      expect(report.warnings[0]).to.include('4 weights are stored as sparse-24-bitmask, which only older releases read: vLLM before 0.19.1').and.include("the default layout 'dense' loads everywhere");
      expect(report.ratio).to.be.above(1.2);
    });

    it('compareModels decodes sparse-24-bitmask back to dense: errors are those of prune()', async () => {
      const r = await compareModels(hfDir, out, { histograms: 1 });
      expect(r.compressed.format).to.equal('compressed-tensors');
      expect(r.tensors.map((t) => t.name)).to.deep.equal(hfT.map((t) => t.name));
      for (const t of matrices(hfT)) {
        const row = r.tensors.find((x) => x.name === t.name);
        const orig = f16Tensor(t);
        expect(row?.compressedType, t.name).to.equal('sparse-24-bitmask F16');
        expect(row?.error?.rmse, t.name).to.be.closeTo(rmseOf(orig, pruneSync(orig, { pattern: '2:4' }).tensor), 1e-9);
        expect(row?.compressedBytes).to.equal(report.tensors.find((x) => x.name === t.name)?.bytesOut);
      }
      expect(r.tensors.find((t) => t.name === 'lm_head.weight')?.error?.rmse).to.equal(0);
      expect(r.tensors.filter((t) => t.histogram !== undefined)).to.have.length(1);
    });

    it('Wanda scores from the recipe: the kept weights are prune()\'s with the same norms', async () => {
      const t = hfT.find((x) => x.name === 'model.layers.0.self_attn.k_proj.weight') as GeneratedTensor;
      const norms = Array.from({ length: t.shape[1] as number }, (_, j) => (j % 7) + 0.5);
      const o = path.join(tmp, 'wanda');
      await compressModel({ input: hfDir, output: o, recipe: { rules: [{ match: t.name, method: 'prune', options: { layout: 'sparse-24-bitmask', score: { activationNorms: { [t.name]: norms } } } }] } });
      const m = await SafetensorsModel.open(o);
      try {
        const prefix = 'model.layers.0.self_attn.k_proj';
        const [rows, cols] = t.shape as [number, number];
        const dense = decodeSparse24Bitmask((await m.readTensor(`${prefix}.compressed`)).data as Uint16Array, (await m.readTensor(`${prefix}.bitmask`)).data as Uint8Array, rows, cols);
        const wanda = pruneSync(f16Tensor(t), { pattern: '2:4', score: { activationNorms: Float32Array.from(norms) } });
        expect(bytesOf(dense)).to.deep.equal(bytesOf(wanda.tensor.data));
        expect(bytesOf(dense)).not.to.deep.equal(bytesOf(pruneSync(f16Tensor(t), { pattern: '2:4' }).tensor.data));
        expect(m.tensor('model.layers.0.self_attn.q_proj.weight')?.dtype).to.equal('F16');
      } finally {
        await m.close();
      }
    });

    it('2of4 on stories260K (GGUF): a GGUF whose pruned matrices are dense F32, equal to prune() of the original; the report says they are dense', async () => {
      const o = path.join(tmp, 'stories-2of4.gguf');
      const r = await compressModel({ input: STORIES, output: o, recipe: '2of4', measureError: true });
      expect(r.output.format).to.equal('gguf');
      const pruned = r.tensors.filter((t) => t.method === 'prune');
      expect(pruned).to.have.length(35);
      for (const t of pruned) expect(t.reason, t.name).to.equal('GGUF has no sparse tensor type: the pruned tensor is written dense');
      expect(r.warnings).to.deep.equal(['35 pruned tensors (2:4) are written dense, the pruned weights stored as zeros (GGUF has no sparse tensor type): they take as many bytes as before']);
      const [a, b] = [await GGUFReader.open(STORIES), await GGUFReader.open(o)];
      let zeros = 0;
      let total = 0;
      try {
        for (const t of a.tensors) {
          const orig = await a.readTensor(t.name);
          const got = await b.readTensor(t.name);
          expect(b.tensor(t.name)?.type, t.name).to.equal(t.type);
          for (const x of (got as Tensor).data as Float32Array) if (x === 0) zeros++;
          total += (got as Tensor).size;
          if (pruned.some((p) => p.name === t.name)) {
            expect(bytesOf(got.data), t.name).to.deep.equal(bytesOf(pruneSync(orig as Tensor, { pattern: '2:4' }).tensor.data));
            expect(new Set(keptPerGroup(got as Tensor, 4)), t.name).to.deep.equal(new Set([2]));
            expect(pruned.find((p) => p.name === t.name)?.error?.rmse, t.name).to.be.closeTo(rmseOf(orig as Tensor, got as Tensor), 1e-9);
          } else {
            expect(bytesOf(got.data), t.name).to.deep.equal(bytesOf(orig.data));
          }
        }
      } finally {
        await a.close();
        await b.close();
      }
      // the report's sparsity: the f32 weights counted one by one here
      expect(r.sparsity).to.deep.equal({ tensors: 35, prunedWeights: pruned.reduce((n, t) => n + t.shape.reduce((x, d) => x * d, 1) / 2, 0), globalSparsity: zeros / total });
    });

    it('1:4 and 4:8 recipes write pruned dense tensors with exactly N kept in every group of M (safetensors and GGUF)', async () => {
      for (const [pattern, n, m] of [['1:4', 1, 4], ['4:8', 4, 8]] as const) {
        const recipe = { rules: [{ match: '*norm*', method: 'keep' as const }, { match: '*', method: 'prune' as const, options: { pattern } }] };
        const o = path.join(tmp, `hf-${n}of${m}`);
        const r = await compressModel({ input: hfDir, output: o, recipe });
        expect(r.output.format, pattern).to.equal('safetensors');
        expect(r.warnings.join('\n'), pattern).to.include(`6 pruned tensors (${pattern}) are written dense`);
        const st = await SafetensorsModel.open(o);
        try {
          for (const t of hfT.filter((x) => x.shape.length === 2)) {
            const got = await st.readTensor(t.name);
            expect(got.dtype, t.name).to.equal('f16');
            expect(new Set(keptPerGroup(got, m)), `${pattern} ${t.name}`).to.deep.equal(new Set([n]));
            expect(bytesOf(got.data), `${pattern} ${t.name}`).to.deep.equal(bytesOf(pruneSync(f16Tensor(t), { pattern }).tensor.data));
            expect(r.tensors.find((x) => x.name === t.name)?.pruned).to.deep.equal({ pattern, layout: 'dense', kept: (t.values.length / m) * n, total: t.values.length });
          }
        } finally {
          await st.close();
        }
        const g = path.join(tmp, `${n}of${m}.gguf`);
        await compressModel({ input: ggufFile, output: g, recipe });
        const gr = await GGUFReader.open(g);
        try {
          for (const t of ggufT.filter((x) => x.shape.length === 2)) {
            const got = (await gr.readTensor(t.name)) as Tensor;
            expect(new Set(keptPerGroup(got, m)), `${pattern} ${t.name}`).to.deep.equal(new Set([n]));
            expect(bytesOf(got.data), `${pattern} ${t.name}`).to.deep.equal(bytesOf(pruneSync(Tensor.from(t.values, t.shape), { pattern }).tensor.data));
          }
        } finally {
          await gr.close();
        }
      }
    });

    it('a NaN in a pruned tensor fails naming it; abort mid-run leaves the output folder as it was', async () => {
      const dir = path.join(tmp, 'prune-fail');
      await fsp.mkdir(dir);
      const bad = hfTensors();
      (bad[3] as GeneratedTensor).values[5] = NaN; // model.layers.0.self_attn.k_proj.weight
      const input = path.join(dir, 'in');
      await writeHFFolder(input, bad, 'F16', 2);
      const before = await listing(dir);
      const e = await rejected(compressModel({ input, output: path.join(dir, 'out'), recipe: '2of4', memoryLimit: 4096 }));
      expect(e.code).to.equal('ERR_VALUE');
      expect(e.message).to.include("tensor 'model.layers.0.self_attn.k_proj.weight' (prune)").and.include('NaN');
      expect(await listing(dir)).to.deep.equal(before);
      for (const [output, src] of [
        [path.join(dir, 'out'), hfDir],
        [path.join(dir, 'out.gguf'), ggufFile],
      ] as const) {
        const ac = new AbortController();
        let err: unknown;
        let written = 0;
        await compressModel({
          input: src,
          output,
          recipe: '2of4',
          memoryLimit: 4096,
          signal: ac.signal,
          onProgress: (p) => {
            if (p.phase === 'tensor' && ++written === 3) ac.abort();
          },
        }).catch((x: unknown) => (err = x));
        expect((err as Error).name, src).to.equal('AbortError');
        expect(written, src).to.be.below(5);
        expect(await listing(dir), src).to.deep.equal(before);
      }
    });
  });

  describe('failures leave nothing behind', () => {
    it('GGUF out from a lone safetensors file, prune with quantize, lowrank into GGUF or by energy: ERR_UNSUPPORTED before anything is written', async () => {
      const before = await listing(tmp);
      for (const [input, recipe, msg] of [
        [path.join(hfDir, 'model-00001-of-00003.safetensors'), 'q4_0', 'a lone .safetensors file has no architecture or tokenizer'],
        [hfDir, { extends: '2of4', rules: [{ match: 'lm_head.weight', method: 'quantize', options: { format: 'int8' } }] }, 'not supported'],
        [ggufFile, { rules: [{ match: 'blk.*', method: 'lowrank', options: { rank: 4 } }] }, 'gguf output cannot hold them'],
        [hfDir, { format: 'safetensors', rules: [{ match: '*.q_proj.weight', method: 'lowrank', options: { energy: 0.9 } }] }, 'use "rank" or "ratio"'],
      ] as const) {
        const e = await rejected(compressModel({ input, output: path.join(tmp, 'never'), recipe: recipe as never }));
        expect(e.code).to.equal('ERR_UNSUPPORTED');
        expect(e.message).to.include(msg);
      }
      expect(await listing(tmp)).to.deep.equal(before);
    });

    it('an error in one tensor names it, and the output folder is left as it was', async () => {
      const bad = ggufTensors(5);
      (bad[4] as GeneratedTensor).values[7] = NaN; // blk.0.attn_q.weight
      const dir = path.join(tmp, 'nan');
      await fsp.mkdir(dir);
      const input = path.join(dir, 'in.gguf');
      await writeGGUFModel(input, bad);
      const before = await listing(dir);
      const e = await rejected(compressModel({ input, output: path.join(dir, 'out.gguf'), recipe: 'q4_0', memoryLimit: 4096 }));
      expect(e.code).to.equal('ERR_VALUE');
      expect(e.message).to.include("tensor 'blk.0.attn_q.weight'").and.include('NaN');
      expect(await listing(dir)).to.deep.equal(before);
    });

    it('refuses an existing output unless overwrite; overwrite replaces it', async () => {
      const dir = path.join(tmp, 'ow');
      await fsp.mkdir(dir);
      await fsp.writeFile(path.join(dir, 'keep.txt'), 'x');
      const e = await rejected(compressModel({ input: hfDir, output: dir, recipe: 'w4a16' }));
      expect(e.message).to.include('already exists');
      expect(await listing(dir)).to.deep.equal(['keep.txt']);
      await compressModel({ input: hfDir, output: dir, recipe: 'w4a16', overwrite: true });
      expect(await listing(dir)).to.include('model.safetensors').and.not.include('keep.txt');
      expect((await rejected(compressModel({ input: hfDir, output: path.join(hfDir, 'inside'), recipe: 'w4a16' }))).message).to.include('inside');
    });

    it('abort mid-run: rejects with the abort reason and leaves the output folder as it was', async () => {
      const dir = path.join(tmp, 'abort');
      await fsp.mkdir(dir);
      await fsp.writeFile(path.join(dir, 'other.txt'), 'unrelated');
      for (const [output, recipe, input] of [
        [path.join(dir, 'out.gguf'), 'q4_0', ggufFile],
        [path.join(dir, 'out'), 'w4a16', hfDir],
      ] as const) {
        const ac = new AbortController();
        const seen: CompressProgress[] = [];
        let err: unknown;
        await compressModel({
          input,
          output,
          recipe,
          memoryLimit: 4096, // one tensor at a time: the abort lands between tensors
          signal: ac.signal,
          onProgress: (p) => {
            seen.push(p);
            if (p.phase === 'tensor' && p.index === 2) ac.abort();
          },
        }).catch((e: unknown) => (err = e));
        expect((err as Error).name).to.equal('AbortError');
        expect(seen.filter((p) => p.phase === 'tensor').length).to.be.below(4);
        expect(await listing(dir)).to.deep.equal(['other.txt']);
      }
      // Already aborted: rejects at once.
      const ac = new AbortController();
      ac.abort();
      expect(((await compressModel({ input: ggufFile, output: path.join(dir, 'x.gguf'), recipe: 'q4_0', signal: ac.signal }).catch((e: unknown) => e)) as Error).name).to.equal('AbortError');
      expect(await listing(dir)).to.deep.equal(['other.txt']);
    });
  });

  describe('scheduling', () => {
    // sha256 of the outputs below as main writes them with the old scheduler
    // and error pass (main at c1c7a13, after the llama-quantize mixes changed
    // the GGUF outputs; w4a16 unchanged since e680815): the scheduler and the
    // error pass must not change a byte.
    const BEFORE = {
      q8_0: '0c8733b963131d836c78af4ef98d3e77e107564b29a1e7c986c8411af9bb4d45',
      q4_0: 'c1c2f676187a4a8d95a483ab4fb5a9ad766f36841eb5d0b43b14fd57a9f47163',
      w4a16: '34f7f7c5a302352667bba0db230ecbdb7f6a5885d17689f1d2d4c871bc3dfcf7',
    };
    /** sha256 of a file, or of a folder's files (names and bytes, in name order). */
    async function digest(p: string): Promise<string> {
      const h = createHash('sha256');
      if ((await fsp.stat(p)).isDirectory()) {
        for (const name of await listing(p)) h.update(`${name}\0`).update(await fsp.readFile(path.join(p, name)));
      } else h.update(await fsp.readFile(p));
      return h.digest('hex');
    }

    it('changes no byte: F16 GGUF -> q8_0 / q4_0 and F16 safetensors -> w4a16 under any memory limit, in-flight count and thread count, with or without the error pass', async () => {
      const dir = path.join(tmp, 'sched');
      await fsp.mkdir(dir);
      const f16Gguf = path.join(dir, 'f16.gguf');
      const t16 = ggufTensors(5, 2, 128);
      await fsp.writeFile(
        f16Gguf,
        writeGGUF({
          kv: [
            ['general.architecture', { type: 'string', value: 'llama' }],
            ['general.file_type', { type: 'u32', value: 1 }],
          ],
          tensors: t16.map((t) => (t.shape.length === 1 ? { name: t.name, dims: t.shape.slice(), typeId: GGML.F32, data: bytesOf(t.values) } : { name: t.name, dims: t.shape.slice().reverse(), typeId: GGML.F16, data: bytesOf(Uint16Array.from(t.values, f32ToF16Bits)) })),
        }).bytes,
      );
      const settings = [{}, { memoryLimit: 1, maxInFlight: 1, threads: 1 }, { maxInFlight: 16, threads: 2 }, { memoryLimit: 200_000, maxInFlight: 3, measureError: false }];
      for (const [preset, input] of [['q8_0', f16Gguf], ['q4_0', f16Gguf], ['w4a16', hfDir]] as const) {
        const got: string[] = [];
        for (const [i, o] of settings.entries()) {
          const output = path.join(dir, `${preset}-${i}${preset === 'w4a16' ? '' : '.gguf'}`);
          await compressModel({ input, output, recipe: preset, measureError: true, ...o });
          got.push(await digest(output));
        }
        expect(got, preset).to.deep.equal(new Array(settings.length).fill(BEFORE[preset]));
      }
    });
  });

  describe('outputs from the pool', () => {
    // memoryLimit 4096: every tensor runs alone and no released buffer is
    // kept, so the peak is the largest tensor's own buffers, whole pages.
    const page = (n: number): number => Math.max(4096, Math.ceil(n / 4096) * 4096);
    const pruned = (t: GeneratedTensor): boolean => t.shape.length === 2 && !t.name.includes('embed') && !t.name.startsWith('lm_head');
    const peakOf = (perTensor: (t: GeneratedTensor, rows: number, cols: number) => number): number =>
      Math.max(...hfT.map((t) => (pruned(t) ? perTensor(t, t.shape[0] as number, t.shape[1] as number) : page(t.values.length * 2))));

    it('prune and compress24 write into pool buffers: peakBytes counts input, outputs and the reconstruction', async () => {
      const sparse = await compressModel({ input: hfDir, output: path.join(tmp, 'pool-24'), recipe: pruneRecipe('2:4', 'sparse-24-bitmask'), measureError: true, memoryLimit: 4096 });
      // f16 input, values [rows, cols/2], bitmask, int16 meta, the dense reconstruction
      const want24 = peakOf((_, r, c) => page(r * c * 2) + page(r * c) + page(r * Math.ceil(c / 8)) + page(r * Math.ceil(c / 16) * 2) + page(r * c * 2));
      expect(sparse.memory.peakBytes).to.equal(want24);
      const dense = await compressModel({ input: hfDir, output: path.join(tmp, 'pool-dense'), recipe: pruneRecipe('2:4', 'dense'), measureError: true, memoryLimit: 4096 });
      // f16 input, the pruned copy (also what the error is measured on) and its mask
      expect(dense.memory.peakBytes).to.equal(peakOf((_, r, c) => 2 * page(r * c * 2) + page(r * Math.ceil(c / 8))));
    });

    it('lowRank writes its factors into pool buffers: peakBytes counts them, converted, and the reconstruction', async () => {
      const recipe = { format: 'safetensors' as const, rules: [{ match: '*_proj.weight', method: 'lowrank' as const, options: { ratio: 0.5 } }] };
      const report = await compressModel({ input: hfDir, output: path.join(tmp, 'pool-lowrank'), recipe, measureError: true, memoryLimit: 4096 });
      const projected = (t: GeneratedTensor): boolean => /_proj\.weight$/.test(t.name);
      const want = Math.max(
        ...hfT.map((t) => {
          if (!projected(t)) return page(t.values.length * 2);
          const [m, n] = t.shape as [number, number];
          const r = Math.floor((0.5 * m * n) / (m + n));
          // f16 input, f32 factors, f16 factors, the f32 product
          return page(m * n * 2) + page(m * r * 4) + page(r * n * 4) + page(m * r * 2) + page(r * n * 2) + page(m * n * 4);
        }),
      );
      expect(report.memory.peakBytes).to.equal(want);
    });
  });

  describe('memory bound', () => {
    it('a 192 MiB model compresses holding at most the 24 MiB limit of tensor buffers, and the process grows far less than the file', async function () {
      const dir = path.join(tmp, 'big');
      await fsp.mkdir(dir);
      // 48 f32 matrices of 1024 x 1024 (4 MiB each): 192 MiB, 8x the limit.
      const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', path.join(ROOT, 'test', 'support', 'memory-child.ts'), dir, String(24 * 1024 * 1024)], { cwd: ROOT, maxBuffer: 1 << 20 });
      const r = JSON.parse(stdout) as { fileBytes: number; peakBytes: number; limit: number; largest: number; rssGrowth: number; allocations: number; tensors: number };
      expect(r.fileBytes).to.be.at.least(192 * 1024 * 1024);
      expect(r.tensors).to.equal(48);
      // The pipeline's own accounting: every buffer it held, reused or not.
      expect(r.peakBytes).to.be.at.most(r.limit);
      expect(r.peakBytes).to.be.at.least(r.largest);
      // Buffers are reused: far fewer allocations than tensors x buffers.
      expect(r.allocations).to.be.below(24);
      // The process: resident memory grows by much less than the model (the limit plus heap and GC slack).
      expect(r.rssGrowth).to.be.below(r.fileBytes / 4);
    });
  });

  describe('benchmark', () => {
    it('pipeline --quick runs every case end to end (CLI processes, with and without the error) with sane numbers', async () => {
      const { cases } = await runPipelineBench({ quick: true, runs: 1, log: () => undefined });
      expect(cases.map((c) => c.id)).to.deep.equal(['gguf-f16-q4_0', 'safetensors-f16-w4a16']);
      for (const c of cases) {
        // --quick never looks for the peer unless it is named
        expect(c.peer, c.id).to.equal(undefined);
        expect(c.readGbps > 0 && Number.isFinite(c.readGbps), c.id).to.equal(true);
        for (const r of [c.withError, c.noError]) {
          for (const v of [r.gbps, r.seconds, r.readRatio]) expect(Number.isFinite(v) && v > 0, c.id).to.equal(true);
          expect(r.outputBytes).to.be.below(c.inputBytes);
        }
        // plain quantization measures each row as it quantizes it: its error time counts in compressMs
        expect(c.withError.stages.compressMs, c.id).to.be.above(0);
        expect(c.withError.bufferPeak).to.be.at.most(c.withError.memoryLimit);
      }
    });
  });
});
