// compressed-tensors outputs checked against what their consumers do with
// them: tiny Hugging Face folders (Llama with and without tied embeddings,
// GPT-2 with position embeddings and Conv1D attention, OPT with learned
// positions, a Qwen-MoE with router gates) are compressed, then read back
// by test/support/ct-reader.ts — an independent model of compressed-tensors'
// and vLLM's loading rules — which must find every module the config
// quantizes packed, every other module's `.weight`, the head in `ignore`,
// and (for the vLLM target) a Marlin kernel for every quantized layer.
import { expect } from 'chai';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { compressModel, type CompressReport } from '../lib/pipeline/compress';
import { f32ToF16Bits } from './support/gguf-writer';
import { stored } from './support/models';
import { Rng } from './support/random';
import { rejected } from './support/assert';
import { stFile, stPack } from './support/st-bytes';
import { quantizationConfigOf, readAsCompressedTensors, readAsVllm, type ModuleSpec, type VllmLayers } from './support/ct-reader';

interface TinyModel {
  config: Record<string, unknown>;
  modules: ModuleSpec[];
  vllm: VllmLayers;
}

const H = 128;
const V = 64;

const linear = (name: string, out: number, inp: number, bias = false): ModuleSpec => ({ name, cls: 'Linear', weight: [out, inp], ...(bias ? { bias: [out] } : {}) });
const norm = (name: string, cls: 'RMSNorm' | 'LayerNorm' = 'RMSNorm'): ModuleSpec => ({ name, cls, weight: [H], ...(cls === 'LayerNorm' ? { bias: [H] } : {}) });

/** Llama with GQA: q [128], k/v [32] (merged qkv 192: Marlin's 64 divides it, not k alone), gate/up [160] (merged 320), down with 160 inputs (no Marlin kernel). */
function llama(tied: boolean): TinyModel {
  const p = 'model.layers.0.';
  return {
    config: { architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: H, intermediate_size: 160, num_attention_heads: 2, num_key_value_heads: 1, num_hidden_layers: 1, vocab_size: V, tie_word_embeddings: tied, torch_dtype: 'float16' },
    modules: [
      { name: 'model.embed_tokens', cls: 'Embedding', weight: [V, H] },
      norm(`${p}input_layernorm`),
      linear(`${p}self_attn.q_proj`, 128, H),
      linear(`${p}self_attn.k_proj`, 32, H),
      linear(`${p}self_attn.v_proj`, 32, H),
      linear(`${p}self_attn.o_proj`, H, 128),
      norm(`${p}post_attention_layernorm`),
      linear(`${p}mlp.gate_proj`, 160, H),
      linear(`${p}mlp.up_proj`, 160, H),
      linear(`${p}mlp.down_proj`, H, 160),
      norm('model.norm'),
      { name: 'lm_head', cls: 'Linear', weight: tied ? undefined : [V, H] },
    ],
    vllm: {
      merged: { [`${p}self_attn.qkv_proj`]: [`${p}self_attn.q_proj`, `${p}self_attn.k_proj`, `${p}self_attn.v_proj`], [`${p}mlp.gate_up_proj`]: [`${p}mlp.gate_proj`, `${p}mlp.up_proj`] },
      fusedMoe: {},
      unquantized: ['lm_head'],
    },
  };
}

/** GPT-2: token and position embeddings, Conv1D attention and MLP (weights [in, out]), LayerNorms with biases, the head tied to wte. */
function gpt2(): TinyModel {
  const p = 'transformer.h.0.';
  return {
    config: { architectures: ['GPT2LMHeadModel'], model_type: 'gpt2', n_embd: H, n_layer: 1, n_head: 2, n_positions: 32, vocab_size: V, torch_dtype: 'float16' },
    modules: [
      { name: 'transformer.wte', cls: 'Embedding', weight: [V, H] },
      { name: 'transformer.wpe', cls: 'Embedding', weight: [32, H] },
      norm(`${p}ln_1`, 'LayerNorm'),
      { name: `${p}attn.c_attn`, cls: 'Conv1D', weight: [H, 3 * H], bias: [3 * H] },
      { name: `${p}attn.c_proj`, cls: 'Conv1D', weight: [H, H], bias: [H] },
      norm(`${p}ln_2`, 'LayerNorm'),
      { name: `${p}mlp.c_fc`, cls: 'Conv1D', weight: [H, 4 * H], bias: [4 * H] },
      { name: `${p}mlp.c_proj`, cls: 'Conv1D', weight: [4 * H, H], bias: [H] },
      norm('transformer.ln_f', 'LayerNorm'),
      { name: 'lm_head', cls: 'Linear', weight: undefined },
    ],
    vllm: { merged: {}, fusedMoe: {}, unquantized: ['lm_head'] },
  };
}

/** OPT: learned position embeddings (an Embedding of 32 + 2 rows), q/k/v/out_proj and fc1/fc2 with biases, the head tied. */
function opt(): TinyModel {
  const p = 'model.decoder.layers.0.';
  return {
    config: { architectures: ['OPTForCausalLM'], model_type: 'opt', hidden_size: H, ffn_dim: 256, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 32, vocab_size: V, torch_dtype: 'float16' },
    modules: [
      { name: 'model.decoder.embed_tokens', cls: 'Embedding', weight: [V, H] },
      { name: 'model.decoder.embed_positions', cls: 'Embedding', weight: [34, H] },
      linear(`${p}self_attn.q_proj`, H, H, true),
      linear(`${p}self_attn.k_proj`, H, H, true),
      linear(`${p}self_attn.v_proj`, H, H, true),
      linear(`${p}self_attn.out_proj`, H, H, true),
      norm(`${p}self_attn_layer_norm`, 'LayerNorm'),
      linear(`${p}fc1`, 256, H, true),
      linear(`${p}fc2`, H, 256, true),
      norm(`${p}final_layer_norm`, 'LayerNorm'),
      norm('model.decoder.final_layer_norm', 'LayerNorm'),
      { name: 'lm_head', cls: 'Linear', weight: undefined },
    ],
    vllm: { merged: { [`${p}self_attn.qkv_proj`]: [`${p}self_attn.q_proj`, `${p}self_attn.k_proj`, `${p}self_attn.v_proj`] }, fusedMoe: {}, unquantized: ['lm_head'] },
  };
}

/** Qwen2-MoE: q/k/v with biases, a router gate (a Linear vLLM builds unquantized), 2 experts (intermediate 256: their projections' input sizes differ), a shared expert and its gate. */
function qwenMoe(inter = 256): TinyModel {
  const p = 'model.layers.0.';
  const experts = [0, 1];
  return {
    config: { architectures: ['Qwen2MoeForCausalLM'], model_type: 'qwen2_moe', hidden_size: H, num_experts: 2, num_experts_per_tok: 1, moe_intermediate_size: inter, shared_expert_intermediate_size: 256, num_hidden_layers: 1, vocab_size: V, torch_dtype: 'float16' },
    modules: [
      { name: 'model.embed_tokens', cls: 'Embedding', weight: [V, H] },
      norm(`${p}input_layernorm`),
      linear(`${p}self_attn.q_proj`, H, H, true),
      linear(`${p}self_attn.k_proj`, 64, H, true),
      linear(`${p}self_attn.v_proj`, 64, H, true),
      linear(`${p}self_attn.o_proj`, H, H),
      norm(`${p}post_attention_layernorm`),
      linear(`${p}mlp.gate`, 2, H),
      ...experts.flatMap((e) => [linear(`${p}mlp.experts.${e}.gate_proj`, inter, H), linear(`${p}mlp.experts.${e}.up_proj`, inter, H), linear(`${p}mlp.experts.${e}.down_proj`, H, inter)]),
      linear(`${p}mlp.shared_expert.gate_proj`, 256, H),
      linear(`${p}mlp.shared_expert.up_proj`, 256, H),
      linear(`${p}mlp.shared_expert.down_proj`, H, 256),
      linear(`${p}mlp.shared_expert_gate`, 1, H),
      norm('model.norm'),
      linear('lm_head', V, H),
    ],
    vllm: {
      merged: {
        [`${p}self_attn.qkv_proj`]: [`${p}self_attn.q_proj`, `${p}self_attn.k_proj`, `${p}self_attn.v_proj`],
        [`${p}mlp.shared_expert.gate_up_proj`]: [`${p}mlp.shared_expert.gate_proj`, `${p}mlp.shared_expert.up_proj`],
      },
      fusedMoe: { [`${p}mlp.experts`]: { gateUp: experts.flatMap((e) => [`${p}mlp.experts.${e}.gate_proj`, `${p}mlp.experts.${e}.up_proj`]), down: experts.map((e) => `${p}mlp.experts.${e}.down_proj`) } },
      unquantized: [`${p}mlp.gate`, `${p}mlp.shared_expert_gate`, 'lm_head'],
    },
  };
}

/** Writes the model as an F16 folder (one safetensors file, config.json); returns each module's weight as stored (f16-rounded). */
async function writeModel(dir: string, m: TinyModel, seed: number): Promise<Map<string, Float32Array>> {
  await fsp.mkdir(dir, { recursive: true });
  const rng = new Rng(seed);
  const tensors: [string, string, number[], Uint8Array][] = [];
  const originals = new Map<string, Float32Array>();
  const put = (name: string, shape: number[], scale: number): Float32Array => {
    const v = stored(rng.normals(shape.reduce((a, d) => a * d, 1), scale), 'F16');
    tensors.push([name, 'F16', shape, new Uint8Array(Uint16Array.from(v, f32ToF16Bits).buffer)]);
    return v;
  };
  for (const mod of m.modules) {
    if (mod.weight !== undefined) originals.set(mod.name, put(`${mod.name}.weight`, mod.weight, mod.weight.length === 1 ? 1 : 0.05));
    if (mod.bias !== undefined) put(`${mod.name}.bias`, mod.bias, 0.01);
  }
  const { header, data } = stPack(tensors, { format: 'pt' });
  await fsp.writeFile(path.join(dir, 'model.safetensors'), stFile(header, data));
  await fsp.writeFile(path.join(dir, 'config.json'), JSON.stringify(m.config, null, 2));
  return originals;
}

type QC = { ignore: string[]; config_groups: Record<string, { targets: string[]; weights: Record<string, unknown> }> } & Record<string, unknown>;

describe('compressed-tensors outputs as their consumers load them', function () {
  this.timeout(60_000);
  let tmp: string;
  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-ct-'));
  });
  after(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  /** Writes `m`, compresses it, and reads the result with the independent readers. */
  async function run(id: string, m: TinyModel, recipe: Parameters<typeof compressModel>[0]['recipe'], extra: Partial<Parameters<typeof compressModel>[0]> = {}) {
    const input = path.join(tmp, `${id}-in`);
    const output = path.join(tmp, `${id}-out`);
    const originals = await writeModel(input, m, id.length * 7 + 1);
    const report = await compressModel({ input, output, recipe, ...extra });
    const ct = readAsCompressedTensors(output, m.modules, originals);
    const vllm = readAsVllm(output, m.modules, m.vllm, ct);
    return { report, ct, vllm, output, qc: quantizationConfigOf(output) as QC | undefined };
  }

  const quantized = (r: { ct: { schemes: Map<string, unknown> } }): string[] => [...r.ct.schemes].filter(([, s]) => s !== undefined).map(([n]) => n);
  // Half a step, plus the scale's f16 rounding (relative 2^-11) over the at most 2^4 steps an INT4 group spans.
  const HALF_STEP_INT4 = 0.5 + 16 * 2 ** -11;

  it('Llama, untied head, w4a16 (vLLM): merged q/k/v and gate/up fit Marlin and are quantized; down_proj (160 inputs) is kept, listed in ignore and reported', async () => {
    const r = await run('llama', llama(false), 'w4a16');
    expect(r.ct.problems).to.deep.equal([]);
    expect(r.vllm).to.deep.equal([]);
    const p = 'model.layers.0.';
    expect(quantized(r)).to.deep.equal(['q_proj', 'k_proj', 'v_proj', 'o_proj'].map((x) => `${p}self_attn.${x}`).concat([`${p}mlp.gate_proj`, `${p}mlp.up_proj`]));
    expect(r.qc?.ignore).to.deep.equal([`${p}mlp.down_proj`, 'lm_head']);
    expect(Object.values(r.qc?.config_groups ?? {}).map((g) => g.targets)).to.deep.equal([['Linear']]);
    // the dequantized weights are the originals to within half a step
    for (const [name, e] of r.ct.errorInScales) expect(e, name).to.be.at.most(HALF_STEP_INT4);
    expect(r.ct.errorInScales.size).to.equal(6);
    const down = r.report.tensors.find((t) => t.name === `${p}mlp.down_proj.weight`);
    expect(down?.method).to.equal('keep');
    expect(down?.fallback).to.deep.equal({ from: 'int4 g128 sym', to: 'F16 (kept)', reason: "vLLM's Marlin kernel needs outputs a multiple of 64 and inputs a multiple of 128: 160 inputs are not a multiple of 128" });
    expect(r.report.modules).to.deep.include({ architecture: 'LlamaForCausalLM', rule: 'architecture table', target: 'vllm', ignore: [`${p}mlp.down_proj`, 'lm_head'] });
    expect(r.report.modules?.kept.map((k) => k.name)).to.deep.equal(['model.embed_tokens.weight', `${p}mlp.down_proj.weight`, 'lm_head.weight']);
  });

  it('Llama, tied embeddings: no lm_head tensor, yet lm_head is in ignore — and a config without it fails the reader as transformers would', async () => {
    const m = llama(true);
    const r = await run('llama-tied', m, 'w4a16');
    expect(r.ct.problems).to.deep.equal([]);
    expect(r.vllm).to.deep.equal([]);
    expect(r.qc?.ignore).to.include('lm_head');
    expect(r.ct.schemes.get('lm_head')).to.equal(undefined);
    // the checkpoint holds no head: tied heads stay tied
    expect(r.report.tensors.map((t) => t.name)).not.to.include('lm_head.weight');
    // what the old writer did — ignore built from stored tensors only — leaves the tied head matched by "Linear"
    const cfgFile = path.join(r.output, 'config.json');
    const cfg = JSON.parse(await fsp.readFile(cfgFile, 'utf8')) as { quantization_config: QC };
    cfg.quantization_config.ignore = cfg.quantization_config.ignore.filter((x) => x !== 'lm_head');
    await fsp.writeFile(cfgFile, JSON.stringify(cfg));
    expect(readAsCompressedTensors(r.output, m.modules).problems).to.deep.equal(['lm_head: tied (no tensor of its own) but matched by a scheme: compressed-tensors looks for lm_head.weight_packed']);
  });

  it('Llama for transformers: every Linear quantized (down_proj one group per row), which compressed-tensors loads and vLLM would find no kernel for', async () => {
    const r = await run('llama-tf', llama(false), 'w4a16', { target: 'transformers' });
    expect(r.ct.problems).to.deep.equal([]);
    expect(r.ct.schemes.get('model.layers.0.mlp.down_proj')).to.deep.equal({ bits: 4, symmetric: true, groupSize: -1 });
    expect(r.qc?.ignore).to.deep.equal(['lm_head']);
    expect(r.vllm).to.deep.equal(['model.layers.0.mlp.down_proj: Marlin needs [N % 64, K % 128] = 0, got [128, 160]']);
    for (const [name, e] of r.ct.errorInScales) expect(e, name).to.be.at.most(HALF_STEP_INT4);
  });

  it('GPT-2 (not in the table): Conv1D and position embeddings are no Linear layers — nothing is quantized, each kept 2-D tensor reported, config.json untouched', async () => {
    const m = gpt2();
    const r = await run('gpt2', m, 'w4a16');
    expect(r.ct.problems).to.deep.equal([]);
    expect(r.qc).to.equal(undefined);
    expect(r.report.modules?.rule).to.equal('conservative');
    expect(r.report.modules?.kept.map((k) => k.name)).to.deep.equal(['transformer.wte.weight', 'transformer.wpe.weight', 'transformer.h.0.attn.c_attn.weight', 'transformer.h.0.attn.c_proj.weight', 'transformer.h.0.mlp.c_fc.weight', 'transformer.h.0.mlp.c_proj.weight']);
    expect(r.report.modules?.kept.find((k) => k.name === 'transformer.h.0.attn.c_attn.weight')?.reason).to.equal(
      'not a Linear layer of an attention or MLP block (GPT2LMHeadModel is not in the architecture table: conservative rule by name): its consumers would look for its .weight',
    );
    expect(r.report.warnings.join('\n')).to.include('GPT2LMHeadModel is not in slimtensor\'s architecture table').and.include('nothing was quantized');
    // a recipe asking for the Conv1D weights by name gets the same answer
    const named = await compressModel({ input: path.join(tmp, 'gpt2-in'), output: path.join(tmp, 'gpt2-named'), recipe: { format: 'compressed-tensors', rules: [{ match: '*.c_attn.weight', method: 'quantize', options: { format: 'int8' } }] } });
    expect(named.tensors.find((t) => t.name === 'transformer.h.0.attn.c_attn.weight')?.method).to.equal('keep');
    expect(readAsCompressedTensors(path.join(tmp, 'gpt2-named'), m.modules).problems).to.deep.equal([]);
  });

  it('OPT (conservative rule): q/k/v/out_proj and fc1/fc2 quantized, embed_positions kept with its .weight and out of ignore', async () => {
    const r = await run('opt', opt(), 'w4a16-asym');
    expect(r.ct.problems).to.deep.equal([]);
    expect(r.vllm).to.deep.equal([]);
    expect(quantized(r)).to.have.length(6);
    expect(r.ct.schemes.get('model.decoder.embed_positions')).to.equal(undefined);
    expect(r.qc?.ignore).to.deep.equal(['lm_head']);
    expect(r.report.modules?.kept.find((k) => k.name === 'model.decoder.embed_positions.weight')?.reason).to.include('an embedding, not a Linear layer');
    for (const [name, e] of r.ct.errorInScales) expect(e, name).to.be.at.most(HALF_STEP_INT4);
  });

  it('Qwen-MoE (conservative rule): experts, shared expert and attention quantized; router gates kept with their .weight and listed in ignore', async () => {
    const r = await run('qwen-moe', qwenMoe(), 'w4a16');
    expect(r.ct.problems).to.deep.equal([]);
    expect(r.vllm).to.deep.equal([]);
    const p = 'model.layers.0.';
    expect(r.qc?.ignore).to.deep.equal([`${p}mlp.gate`, `${p}mlp.shared_expert_gate`, 'lm_head']);
    expect(quantized(r)).to.have.length(4 + 6 + 3);
    for (const g of [`${p}mlp.gate`, `${p}mlp.shared_expert_gate`, 'lm_head', 'model.embed_tokens']) expect(r.ct.schemes.get(g), g).to.equal(undefined);
    // experts whose down_proj has 96 inputs: vLLM's FusedMoE layer is kept whole, listed by its own name too
    const small = await run('qwen-moe-96', qwenMoe(96), 'w4a16');
    expect(small.ct.problems).to.deep.equal([]);
    expect(small.vllm).to.deep.equal([]);
    const experts = [0, 1].flatMap((e) => ['gate_proj', 'up_proj', 'down_proj'].map((x) => `${p}mlp.experts.${e}.${x}`));
    expect(small.qc?.ignore).to.deep.equal([`${p}mlp.gate`, ...experts, `${p}mlp.shared_expert_gate`, `${p}mlp.experts`, 'lm_head']);
    expect(small.report.fallbacks[0]?.reason).to.equal(`vLLM's Marlin kernel needs outputs a multiple of 64 and inputs a multiple of 128: 96 outputs are not a multiple of 64 (vLLM's FusedMoE layer '${p}mlp.experts': '${p}mlp.experts.0.gate_proj.weight' is [96, 128])`);
  });

  it('target vllm: shards of one merged layer treated differently are an ERR_VALUE naming the layer; for transformers vLLM would refuse the same folder', async () => {
    const m = llama(false);
    const keepK = { extends: 'w4a16', rules: [{ match: '*.k_proj.weight', method: 'keep' as const }] };
    await writeModel(path.join(tmp, 'shards-in'), m, 3);
    const e = await rejected(compressModel({ input: path.join(tmp, 'shards-in'), output: path.join(tmp, 'shards-out'), recipe: keepK }));
    expect(e.code).to.equal('ERR_VALUE');
    expect(e.message).to.include("target 'vllm': vLLM's merged layer 'model.layers.0.self_attn.qkv_proj' (q_proj, k_proj, v_proj) must be quantized as one");
    const r = await run('shards-tf', m, { ...keepK, target: 'transformers' });
    expect(r.ct.problems).to.deep.equal([]);
    expect(r.vllm).to.include('model.layers.0.self_attn.qkv_proj: vLLM requires all of model.layers.0.self_attn.q_proj, model.layers.0.self_attn.k_proj, model.layers.0.self_attn.v_proj ignored or none (ValueError)');
  });

  it('two schemes with a merged layer in the smaller group: every group lists its modules by name, so vLLM finds each merged layer its own scheme', async () => {
    const recipe = { extends: 'w4a16', rules: [{ match: '*.self_attn.*_proj.weight', method: 'quantize' as const, options: { format: 'int8' } }] };
    const r = await run('two-schemes', llama(false), recipe);
    expect(r.ct.problems).to.deep.equal([]);
    expect(r.vllm).to.deep.equal([]);
    const groups = Object.values(r.qc?.config_groups ?? {});
    expect(groups.map((g) => [g.weights.num_bits, g.targets.length])).to.deep.equal([[8, 4], [4, 2]]);
    expect(groups.flatMap((g) => g.targets)).not.to.include('Linear');
    // with "Linear" for the larger group, vLLM would match gate_up_proj by class before its shards' names
    const cfgFile = path.join(r.output, 'config.json');
    const cfg = JSON.parse(await fsp.readFile(cfgFile, 'utf8')) as { quantization_config: QC };
    (cfg.quantization_config.config_groups.group_0 as { targets: string[] }).targets = ['Linear'];
    await fsp.writeFile(cfgFile, JSON.stringify(cfg));
    const m = llama(false);
    const again = readAsCompressedTensors(r.output, m.modules);
    expect(again.problems).to.deep.equal([]);
    expect(readAsVllm(r.output, m.modules, m.vllm, again)).to.deep.equal([
      'model.layers.0.mlp.gate_up_proj: vLLM loads model.layers.0.mlp.gate_proj as {"bits":8,"symmetric":true,"groupSize":128}, the checkpoint holds {"bits":4,"symmetric":true,"groupSize":128}',
      'model.layers.0.mlp.gate_up_proj: vLLM loads model.layers.0.mlp.up_proj as {"bits":8,"symmetric":true,"groupSize":128}, the checkpoint holds {"bits":4,"symmetric":true,"groupSize":128}',
    ]);
  });

  it('2:4 on Llama: dense by default (a plain folder every reader loads); sparse-24-bitmask only when asked, for Linear weights only', async () => {
    const m = llama(true);
    const dense = await run('prune', m, '2of4');
    expect(dense.report.output.format).to.equal('safetensors');
    expect(dense.qc).to.equal(undefined);
    expect(dense.ct.problems).to.deep.equal([]);
    expect(dense.report.sparsity?.tensors).to.equal(7);
    const bitmask = (await compressModel({ input: path.join(tmp, 'prune-in'), output: path.join(tmp, 'prune-bitmask'), recipe: { rules: [{ match: '*norm*', method: 'keep' }, { match: '*', method: 'prune', options: { layout: 'sparse-24-bitmask' } }] } })) as CompressReport;
    // the embedding is no Linear: pruned as asked, but written dense
    expect(bitmask.tensors.find((t) => t.name === 'model.embed_tokens.weight')?.pruned?.layout).to.equal('dense');
    expect(bitmask.tensors.filter((t) => t.pruned?.layout === 'sparse-24-bitmask')).to.have.length(7);
    const sc = (quantizationConfigOf(path.join(tmp, 'prune-bitmask')) as { sparsity_config: { ignore: string[] } }).sparsity_config;
    expect(sc.ignore).to.deep.equal(['lm_head']);
  });
});
