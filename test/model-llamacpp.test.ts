// The runtime against llama.cpp itself (node-llama-cpp's prebuilt CPU build,
// a devDependency) on the bundled stories260K, its q8_0 copy and its
// q4_0-gptq copy (GPTQ-rounded codes in the standard Q4_0 blocks): the same
// greedy continuation, the same most likely tokens, and perplexity on the
// bundled tokens within a small margin (llama.cpp rounds differently: its
// RoPE angles in f32; in the q8_0 file it also rounds the activations of
// the F16 tensors (ffn_down, rows of 172) to f16, where the runtime
// multiplies f16 weights by f32 activations — a few percent of perplexity
// on this tiny, sensitive model). And a random llama 256 wide written by
// the q4_k_m-gptq preset (GPTQ-rounded Q4_K and Q6_K blocks, which
// stories260K's rows cannot hold): llama.cpp predicts as the runtime does.
import { expect } from 'chai';
import { skip } from './support/skip';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadModel } from '../lib/model/model';
import { readTokenFile } from '../lib/model/tokens';
import { compressModel } from '../lib/pipeline/compress';
import { GGUFReader } from '../lib/formats/gguf';
import { GGUFWriter, type GGUFPlannedTensor } from '../lib/formats/gguf-writer';
import { Rng } from './support/random';

/**
 * A one-block llama E wide (F the feed-forward width) with random f32
 * weights (N(0, (0.5·√(32/E))²), so the activations do not grow with E)
 * and the tokenizer metadata of a vocabulary file.
 */
async function writeRandomLlamaWithVocab(file: string, vocabFile: string, E = 32, F = 64): Promise<void> {
  const v = await GGUFReader.open(vocabFile);
  const tok = v.entries.filter((e) => e.key.startsWith('tokenizer.'));
  const n = (v.metadata.get('tokenizer.ggml.tokens') as string[]).length;
  await v.close();
  const entries = [
    { key: 'general.architecture', type: 'string' as const, value: 'llama' },
    { key: 'llama.context_length', type: 'u32' as const, value: E === 32 ? 64 : 128 },
    { key: 'llama.embedding_length', type: 'u32' as const, value: E },
    { key: 'llama.block_count', type: 'u32' as const, value: 1 },
    { key: 'llama.feed_forward_length', type: 'u32' as const, value: F },
    { key: 'llama.attention.head_count', type: 'u32' as const, value: 4 },
    { key: 'llama.attention.head_count_kv', type: 'u32' as const, value: 2 },
    { key: 'llama.attention.layer_norm_rms_epsilon', type: 'f32' as const, value: 1e-5 },
    ...tok,
  ];
  const tensors: GGUFPlannedTensor[] = [
    { name: 'token_embd.weight', shape: [n, E], type: 'F32' },
    { name: 'output_norm.weight', shape: [E], type: 'F32' },
    { name: 'output.weight', shape: [n, E], type: 'F32' },
    { name: 'blk.0.attn_norm.weight', shape: [E], type: 'F32' },
    { name: 'blk.0.attn_q.weight', shape: [E, E], type: 'F32' },
    { name: 'blk.0.attn_k.weight', shape: [E / 2, E], type: 'F32' },
    { name: 'blk.0.attn_v.weight', shape: [E / 2, E], type: 'F32' },
    { name: 'blk.0.attn_output.weight', shape: [E, E], type: 'F32' },
    { name: 'blk.0.ffn_norm.weight', shape: [E], type: 'F32' },
    { name: 'blk.0.ffn_gate.weight', shape: [F, E], type: 'F32' },
    { name: 'blk.0.ffn_up.weight', shape: [F, E], type: 'F32' },
    { name: 'blk.0.ffn_down.weight', shape: [E, F], type: 'F32' },
  ];
  const rng = new Rng(9);
  const w = await GGUFWriter.create(file, { entries, tensors });
  for (const t of tensors) {
    const count = t.shape.reduce((a, d) => a * d, 1);
    await w.write(t.name, t.shape.length === 1 ? new Float32Array(count).fill(1) : rng.normals(count, 0.5 * Math.sqrt(32 / E)));
  }
  await w.close();
}

const ROOT = path.join(__dirname, '..');
const MODEL = path.join(ROOT, 'models', 'stories260K.gguf');
const TOKENS = path.join(ROOT, 'models', 'stories260K-eval.tokens');

type Probabilities = Map<number, number>;
interface Sequence {
  evaluate(tokens: number[], o: object): AsyncGenerator<number>;
  controlledEvaluate(input: (number | [number, object])[]): Promise<({ next?: { probabilities?: Probabilities } } | undefined)[]>;
  clearHistory(): Promise<void>;
}
interface Llama {
  loadModel(o: { modelPath: string }): Promise<{ createContext(o: object): Promise<{ getSequence(): Sequence; dispose(): Promise<void> }>; dispose(): Promise<void> }>;
}

describe('runtime vs llama.cpp (node-llama-cpp)', function () {
  this.timeout(180000);
  let llama: Llama | undefined;
  let tmp: string;
  let why = '';
  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-llamacpp-'));
    try {
      const m = (await import('node-llama-cpp')) as unknown as { getLlama(o: object): Promise<Llama>; LlamaLogLevel: { error: unknown } };
      llama = await m.getLlama({ gpu: false, build: 'never', logLevel: m.LlamaLogLevel.error });
    } catch (e) {
      why = `node-llama-cpp did not load (${(e as Error).message}); install the dev dependencies`;
    }
  });
  after(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  /** llama.cpp's next-token probabilities after each prefix of `chunk` at positions [from, to). */
  async function llamaProbabilities(file: string, chunks: number[][], from: number, to: number): Promise<Probabilities[][]> {
    const model = await (llama as Llama).loadModel({ modelPath: file });
    const ctx = await model.createContext({ contextSize: 128, threads: 1 });
    const seq = ctx.getSequence();
    const out: Probabilities[][] = [];
    try {
      for (const chunk of chunks) {
        await seq.clearHistory();
        const res = await seq.controlledEvaluate(chunk.map((t, i): number | [number, object] => (i >= from && i < to ? [t, { generateNext: { probabilities: true } }] : t)));
        out.push(res.slice(from, to).map((r) => r?.next?.probabilities as Probabilities));
      }
    } finally {
      await ctx.dispose();
      await model.dispose();
    }
    return out;
  }

  it('greedy continuation of BOS: the same 30 tokens', async function () {
    if (!llama) this.skip();
    const model = await llama.loadModel({ modelPath: MODEL });
    const ctx = await model.createContext({ contextSize: 128, threads: 1 });
    const want: number[] = [];
    for await (const t of ctx.getSequence().evaluate([1], { temperature: 0 })) {
      want.push(t);
      if (want.length === 30) break;
    }
    await ctx.dispose();
    await model.dispose();
    const m = await loadModel(MODEL);
    const got: number[] = [];
    for await (const t of m.generate([1], { temperature: 0, maxTokens: 30, stop: [] })) got.push(t.token);
    await m.dispose();
    expect(got).to.deep.equal(want);
  });

  // q4_0-gptq: the preset's GPTQ-rounded Q4_0 blocks (calibrated on the bundled calibration tokens), which llama.cpp must read as any Q4_0.
  const LIMITS = { f32: { ppl: 1e-3, kl: 2e-4, top: 0.99 }, q8_0: { ppl: 3e-2, kl: 0.03, top: 0.85 }, 'q4_0-gptq': { ppl: 3e-2, kl: 0.03, top: 0.85 } };
  for (const variant of ['f32', 'q8_0', 'q4_0-gptq'] as const) {
    it(`${variant}: next-token distributions close (mean KL), the same most likely tokens, perplexity within ${LIMITS[variant].ppl * 100} % on 4 chunks`, async function () {
      if (!llama) {
        this.skip();
        return;
      }
      const file = variant === 'f32' ? MODEL : path.join(tmp, `${variant}.gguf`);
      if (variant === 'q8_0') await compressModel({ input: MODEL, output: file, recipe: 'q8_0' });
      if (variant === 'q4_0-gptq') await compressModel({ input: MODEL, output: file, recipe: 'q4_0-gptq', calibration: { tokens: path.join(ROOT, 'models', 'stories260K-calib.tokens'), ctx: 128, chunks: 8 } });
      const ids = Array.from(await readTokenFile(TOKENS));
      const chunks = [0, 1, 2, 3].map((c) => {
        const ch = ids.slice(c * 128, (c + 1) * 128);
        ch[0] = 1;
        return ch;
      });
      const theirs = await llamaProbabilities(file, chunks, 64, 127);
      const m = await loadModel(file);
      let ours = 0;
      let ref = 0;
      let sameTop = 0;
      let kl = 0;
      let positions = 0;
      for (let c = 0; c < 4; c++) {
        const chunk = chunks[c] as number[];
        const logits = await m.forward(chunk, { logits: 'all' });
        for (let i = 64; i < 127; i++) {
          const row = logits.subarray(i * 512, (i + 1) * 512);
          let mx = -Infinity;
          for (const v of row) mx = Math.max(mx, v);
          let s = 0;
          for (const v of row) s += Math.exp(v - mx);
          const next = chunk[i + 1] as number;
          ours += Math.log(s) + mx - (row[next] as number);
          const p = (theirs[c] as Probabilities[])[i - 64] as Probabilities;
          ref -= Math.log(p.get(next) as number);
          let ourTop = 0;
          for (let j = 1; j < 512; j++) if ((row[j] as number) > (row[ourTop] as number)) ourTop = j;
          const theirTop = [...p.entries()].reduce((a, b) => (b[1] > a[1] ? b : a))[0];
          if (ourTop === theirTop) sameTop++;
          // KL(llama.cpp ‖ ours) over llama.cpp's distribution
          for (const [tok, pt] of p) if (pt > 0) kl += pt * (Math.log(pt) - ((row[tok] as number) - mx - Math.log(s)));
          positions++;
        }
      }
      await m.dispose();
      const pplOurs = Math.exp(ours / positions);
      const pplTheirs = Math.exp(ref / positions);
      expect(Math.abs(pplOurs / pplTheirs - 1), `ours ${pplOurs}, llama.cpp ${pplTheirs}`).to.be.below(LIMITS[variant].ppl);
      // f32: the two agree to f32 rounding. q8_0: their difference is well below
      // what q8_0 changes against f32 itself (mean KL ~0.05 on these tokens).
      expect(kl / positions, 'mean KL(llama.cpp ‖ runtime)').to.be.below(LIMITS[variant].kl);
      expect(sameTop / positions).to.be.at.least(LIMITS[variant].top);
    });
  }

  it('q4_k_m-gptq: GPTQ-rounded Q4_K and Q6_K blocks (a random llama 256 wide, rows of 256 and 512) read by llama.cpp as the runtime reads them', async function () {
    if (!llama) {
      this.skip();
      return;
    }
    const src = path.join(tmp, 'random-256.gguf');
    await writeRandomLlamaWithVocab(src, MODEL, 256, 512);
    const file = path.join(tmp, 'random-256-q4_k_m-gptq.gguf');
    const r = await compressModel({ input: src, output: file, recipe: 'q4_k_m-gptq', calibration: { tokens: path.join(ROOT, 'models', 'stories260K-calib.tokens'), ctx: 64, chunks: 4 } });
    const types = new Map(r.tensors.map((t) => [t.name, t] as const));
    // llama-quantize's Q4_K_M types (layer 0 of 1 is a use_more_bits layer: attn_v and ffn_down Q6_K), all linears by GPTQ.
    for (const [name, type] of [['blk.0.attn_q.weight', 'Q4_K'], ['blk.0.ffn_gate.weight', 'Q4_K'], ['blk.0.attn_v.weight', 'Q6_K'], ['blk.0.ffn_down.weight', 'Q6_K']] as const) {
      const t = types.get(name);
      expect(t?.to, name).to.equal(type);
      expect(t?.calibrated?.method, name).to.equal('gptq');
      expect(t?.calibrated?.error, name).to.be.lessThan(t?.calibrated?.rtnError as number);
    }
    expect(types.get('token_embd.weight')?.to).to.equal('Q4_K');
    expect(types.get('token_embd.weight')?.calibrated).to.equal(undefined);
    expect(types.get('output.weight')?.to).to.equal('Q6_K');
    const ids = Array.from(await readTokenFile(TOKENS));
    const chunks = [0, 1].map((c) => {
      const ch = ids.slice(c * 64, (c + 1) * 64);
      ch[0] = 1;
      return ch;
    });
    const theirs = await llamaProbabilities(file, chunks, 32, 63);
    const m = await loadModel(file);
    let kl = 0;
    let sameTop = 0;
    let positions = 0;
    for (let c = 0; c < chunks.length; c++) {
      const chunk = chunks[c] as number[];
      const logits = await m.forward(chunk, { logits: 'all' });
      for (let i = 32; i < 63; i++) {
        const row = logits.subarray(i * 512, (i + 1) * 512);
        let mx = -Infinity;
        for (const v of row) mx = Math.max(mx, v);
        let s = 0;
        for (const v of row) s += Math.exp(v - mx);
        const p = (theirs[c] as Probabilities[])[i - 32] as Probabilities;
        let ourTop = 0;
        for (let j = 1; j < 512; j++) if ((row[j] as number) > (row[ourTop] as number)) ourTop = j;
        if (ourTop === [...p.entries()].reduce((a, b) => (b[1] > a[1] ? b : a))[0]) sameTop++;
        for (const [tok, pt] of p) if (pt > 0) kl += pt * (Math.log(pt) - ((row[tok] as number) - mx - Math.log(s)));
        positions++;
      }
    }
    await m.dispose();
    // llama.cpp quantizes the activations to Q8_K for K-quant dot products; the runtime does not: close, not equal.
    expect(kl / positions, 'mean KL(llama.cpp ‖ runtime)').to.be.below(0.03);
    expect(sameTop / positions).to.be.at.least(0.85);
  });

  it('text in, text out: a real SentencePiece vocabulary (llama.cpp\'s llama-spm) on random weights gives llama.cpp\'s tokens and text', async function () {
    if (!llama) {
      this.skip();
      return;
    }
    const file = path.join(tmp, 'spm-random.gguf');
    await writeRandomLlamaWithVocab(file, path.join(ROOT, 'test', 'fixtures', 'vocab', 'ggml-vocab-llama-spm.gguf'));
    const prompt = 'Hello world, this is a test';
    const lm = (await llama.loadModel({ modelPath: file })) as unknown as {
      tokenize(text: string): number[];
      detokenize(ids: number[]): string;
      createContext(o: object): Promise<{ getSequence(): Sequence; dispose(): Promise<void> }>;
      dispose(): Promise<void>;
    };
    const ctx = await lm.createContext({ contextSize: 64, threads: 1 });
    const theirPrompt = lm.tokenize(prompt);
    const theirs: number[] = [];
    for await (const t of ctx.getSequence().evaluate([1, ...theirPrompt], { temperature: 0 })) {
      theirs.push(t);
      if (theirs.length === 16) break;
    }
    const theirText = lm.detokenize(theirs);
    await ctx.dispose();
    await lm.dispose();
    const m = await loadModel(file);
    expect(Array.from(m.tokenize(prompt))).to.deep.equal([1, ...theirPrompt]);
    const ours: number[] = [];
    let text = '';
    for await (const t of m.generate(prompt, { temperature: 0, maxTokens: 16, stop: [] })) {
      ours.push(t.token);
      text += t.text;
    }
    expect(ours).to.deep.equal(theirs);
    expect(text).to.equal(m.detokenize(ours));
    expect(text.replace(/^ /, '')).to.equal(theirText.replace(/^ /, ''));
    await m.dispose();
  });

  it('reports why when node-llama-cpp is missing', function () {
    if (llama) skip(this, 'node-llama-cpp is installed: nothing to report');
    expect(why).to.match(/node-llama-cpp/);
  });
});
