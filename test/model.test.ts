// The runtime against an independent f64 forward pass (test/support/
// reference-llm.ts, Hugging Face semantics): stories260K as stored (f32) and
// compressed every way slimtensor writes (GGUF q8_0 / q4_0, compressed-tensors
// w4a16 / w8a16 / 2:4 from the GGUF and from its Hugging Face twin), and tiny
// random llama / qwen2 / qwen3 models as GGUF and Hugging Face folders.
import { expect } from 'chai';
import { promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { compressModel } from '../lib/pipeline/compress';
import { pruneRecipe } from '../lib/pipeline/recipe';
import { loadModel, Model, type ActivationBatch, type LoadModelOptions } from '../lib/model/model';
import { planModel } from '../lib/model/load';
import { rejected } from './support/assert';
import { referenceForward, referencePerplexity, type RefWeights } from './support/reference-llm';
import { referenceWeightsOfFolder, referenceWeightsOfGguf } from './support/reference-weights';
import { hfTwinOfGguf, tinyGgufBytes, tinyTensors, writeTinyHf, type TinyConfig } from './support/tiny-models';

const ROOT = path.join(__dirname, '..');
const STORIES = path.join(ROOT, 'models', 'stories260K.gguf');
const TOKENS = Array.from(new Int32Array(readFileSync(path.join(ROOT, 'models', 'stories260K-eval.tokens')).buffer.slice(0)));
const CTX = 128;
const BOS = 1;

/** max |a - b| / max |b| over the rows given. */
function relDiff(a: Float32Array, b: readonly ArrayLike<number>[], vocab: number): number {
  let d = 0;
  let m = 0;
  b.forEach((row, i) => {
    for (let j = 0; j < vocab; j++) {
      d = Math.max(d, Math.abs((a[i * vocab + j] as number) - (row[j] as number)));
      m = Math.max(m, Math.abs(row[j] as number));
    }
  });
  return d / m;
}

interface Expected {
  logits: Float64Array[];
  ppl: number;
  chunks: number;
}

function expected(ref: RefWeights, chunks: number): Expected {
  return {
    logits: referenceForward(ref, TOKENS.slice(0, 8)),
    ppl: referencePerplexity((t) => referenceForward(ref, t), TOKENS, CTX, BOS, chunks).ppl,
    chunks,
  };
}

async function withModel<T>(p: string, options: LoadModelOptions, f: (m: Model) => Promise<T>): Promise<T> {
  const m = await loadModel(p, options);
  try {
    return await f(m);
  } finally {
    await m.dispose();
  }
}

/** f32 activations: logits within 1e-4, perplexity within 0.05 %; 8-bit activations (the fast path): within the stated bounds. */
async function checkAgainst(p: string, exp: Expected, extra: LoadModelOptions = {}, q8Bound = { logits: 0.1, ppl: 0.05 }): Promise<Model['linears']> {
  let linears: Model['linears'] = [];
  for (const activations of ['f32', 'auto'] as const) {
    await withModel(p, { ...extra, activations }, async (m) => {
      linears = m.linears;
      const logits = await m.forward(TOKENS.slice(0, 8), { logits: 'all' });
      const r = await m.perplexity(TOKENS, { ctx: CTX, chunks: exp.chunks });
      const d = relDiff(logits, exp.logits, m.hyperparameters.vocabSize);
      const e = Math.abs(r.perplexity / exp.ppl - 1);
      if (activations === 'f32') {
        expect(d, `${p} logits (f32 activations)`).to.be.below(1e-4);
        expect(e, `${p} perplexity ${r.perplexity} vs ${exp.ppl}`).to.be.below(5e-4);
      } else {
        expect(d, `${p} logits (8-bit activations)`).to.be.below(q8Bound.logits);
        expect(e, `${p} perplexity ${r.perplexity} vs ${exp.ppl} (8-bit activations)`).to.be.below(q8Bound.ppl);
      }
    });
  }
  return linears;
}

describe('runtime: stories260K against the f64 reference', function () {
  this.timeout(300000);
  let tmp: string;
  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-runtime-'));
  });
  after(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  it('f32 GGUF: logits of the first positions within 1e-4, perplexity within 0.05 %, on every kernel set', async () => {
    const exp = expected(await referenceWeightsOfGguf(STORIES), 4);
    for (const kernel of ['reference', 'auto'] as const) {
      await withModel(STORIES, { kernel }, async (m) => {
        expect(m.linears.every((l) => l.format === 'f32')).to.equal(true);
        const logits = await m.forward(TOKENS.slice(0, 8), { logits: 'all' });
        expect(relDiff(logits, exp.logits, 512)).to.be.below(1e-4);
        const r = await m.perplexity(TOKENS, { ctx: CTX, chunks: 4 });
        expect(r.count).to.equal(4 * (CTX / 2 - 1));
        expect(Math.abs(r.perplexity / exp.ppl - 1)).to.be.below(5e-4);
        // a team of 3 threads (this small model runs on 1 by default): each output has one owner, the same bits
        await withModel(STORIES, { kernel, threads: 3 }, async (m3) => {
          expect(Array.from(await m3.forward(TOKENS.slice(0, 40), { logits: 'all' }))).to.deep.equal(Array.from(await m.forward(TOKENS.slice(0, 40), { logits: 'all' })));
        });
      });
    }
  });

  for (const preset of ['q8_0', 'q4_0'] as const) {
    it(`${preset} GGUF: f32 activations match the dequantized weights; 8-bit activations within bounds`, async () => {
      const out = path.join(tmp, `${preset}.gguf`);
      await compressModel({ input: STORIES, output: out, recipe: preset });
      const exp = expected(await referenceWeightsOfGguf(out), 2);
      const linears = await checkAgainst(out, exp);
      expect(linears.some((l) => l.format === preset)).to.equal(true);
    });
  }

  it('q4_k_m GGUF (64-wide rows: llama-quantize\'s q5_0 fallbacks) runs through the dequantizing path', async () => {
    const out = path.join(tmp, 'q4_k_m.gguf');
    await compressModel({ input: STORIES, output: out, recipe: 'q4_k_m' });
    const exp = expected(await referenceWeightsOfGguf(out), 2);
    const linears = await checkAgainst(out, exp);
    expect(linears.some((l) => l.format === 'q5_0')).to.equal(true);
  });

  for (const preset of ['w4a16', 'w8a16'] as const) {
    it(`${preset} compressed-tensors written from the GGUF (llama.cpp names, hyper-parameters from the GGUF)`, async () => {
      const out = path.join(tmp, `${preset}-gguf-names`);
      // target 'transformers': every Linear quantized (vLLM's shape rules would keep stories260K's 64-wide layers)
      await compressModel({ input: STORIES, output: out, recipe: { name: preset, extends: preset, target: 'transformers' }, format: 'compressed-tensors' });
      const exp = expected(await referenceWeightsOfFolder(out, STORIES), 2);
      const linears = await checkAgainst(out, exp, { hyperparameters: STORIES });
      expect(linears.some((l) => l.format === (preset === 'w4a16' ? 'int4' : 'int8'))).to.equal(true);
      // Without the GGUF the folder names no architecture: a clear error.
      const e = await rejected(loadModel(out));
      expect(e.code).to.equal('ERR_FORMAT');
      expect(e.message).to.match(/hyperparameters/);
    });
  }

  it('the Hugging Face twin (config.json, HF names and layout) and its w4a16 / w8a16 / 2:4 compressed-tensors outputs', async () => {
    const twin = path.join(tmp, 'hf');
    await hfTwinOfGguf(STORIES, twin);
    // The twin is the same function: the reference of the GGUF applies.
    const exp = expected(await referenceWeightsOfGguf(STORIES), 2);
    await checkAgainst(twin, exp);
    for (const [preset, recipe] of [
      ['w4a16', { name: 'w4a16', extends: 'w4a16', target: 'transformers' as const }],
      ['w8a16', { name: 'w8a16', extends: 'w8a16', target: 'transformers' as const }],
      // 2:4 stored as sparse-24-bitmask, and stored dense (found 2:4 at load): both on spmm24
      ['2of4-bitmask', { ...pruneRecipe('2:4', 'sparse-24-bitmask'), format: 'compressed-tensors' as const }],
      ['2of4-dense', { ...pruneRecipe('2:4'), format: 'compressed-tensors' as const }],
    ] as const) {
      const out = path.join(tmp, `hf-${preset}`);
      await compressModel({ input: twin, output: out, recipe });
      const ref = await referenceWeightsOfFolder(out);
      const linears = await checkAgainst(out, expected(ref, 2));
      if (preset.startsWith('2of4')) expect(linears.filter((l) => l.format === '2:4 (f32)').length, preset).to.be.above(30);
      if (preset === 'w4a16') expect(linears.filter((l) => l.format === 'int4').length).to.be.above(30);
    }
  });

  it('a 2:4-pruned GGUF (pruned weights stored dense) runs its pruned weights on spmm24, unless told not to', async () => {
    const out = path.join(tmp, 'pruned.gguf');
    await compressModel({ input: STORIES, output: out, recipe: pruneRecipe('2:4') });
    const exp = expected(await referenceWeightsOfGguf(out), 2);
    const linears = await checkAgainst(out, exp);
    const sparse = linears.filter((l) => l.format.startsWith('2:4'));
    expect(sparse.length).to.be.above(30);
    await withModel(out, { sparse: false }, async (m) => {
      expect(m.linears.some((l) => l.format.startsWith('2:4'))).to.equal(false);
      expect(relDiff(await m.forward(TOKENS.slice(0, 8), { logits: 'all' }), exp.logits, 512)).to.be.below(1e-4);
    });
  });
});

const TINY: Record<string, TinyConfig> = {
  llama: { arch: 'llama', vocab: 96, embd: 64, layers: 2, heads: 4, headsKv: 2, headDim: 16, ff: 96, eps: 1e-5, ropeBase: 10000, tied: false, ctx: 64 },
  qwen2: { arch: 'qwen2', vocab: 96, embd: 64, layers: 2, heads: 4, headsKv: 2, headDim: 16, ff: 128, eps: 1e-6, ropeBase: 1000000, tied: true, ctx: 64 },
  // head_dim (32) differs from embd / heads (16), as Qwen3's does
  qwen3: { arch: 'qwen3', vocab: 96, embd: 64, layers: 2, heads: 4, headsKv: 1, headDim: 32, ff: 96, eps: 1e-6, ropeBase: 1000000, tied: false, ctx: 64 },
};

describe('runtime: tiny random llama, qwen2 and qwen3 models', function () {
  this.timeout(120000);
  let tmp: string;
  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-tiny-'));
  });
  after(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  const tokens = [1, 17, 42, 5, 88, 63, 0, 95, 33, 12, 7, 70];
  for (const [name, c] of Object.entries(TINY)) {
    it(`${name}: the Hugging Face folder (f32, bf16) and the GGUF give the reference's logits`, async () => {
      const tensors = tinyTensors(c, 7);
      const hf = path.join(tmp, `${name}-hf`);
      await writeTinyHf(hf, c, tensors, 'F32');
      const ref = await referenceWeightsOfFolder(hf);
      const want = referenceForward(ref, tokens);
      const gguf = path.join(tmp, `${name}.gguf`);
      await fsp.writeFile(gguf, tinyGgufBytes(c, tensors));
      for (const p of [hf, gguf]) {
        await withModel(p, { activations: 'f32' }, async (m) => {
          expect(m.architecture.gguf).to.equal(name);
          expect(m.hyperparameters.tiedEmbeddings).to.equal(c.tied);
          const logits = await m.forward(tokens, { logits: 'all' });
          expect(relDiff(logits, want, c.vocab), p).to.be.below(1e-4);
          // A continuation from the cache equals the one-pass logits.
          await m.forward(tokens.slice(0, 5), { logits: 'none' });
          const rest = await m.forward(tokens.slice(5), { position: 5, logits: 'all' });
          expect(relDiff(rest, want.slice(5), c.vocab)).to.be.below(1e-4);
        });
      }
      const bf16 = path.join(tmp, `${name}-bf16`);
      await writeTinyHf(bf16, c, tensors, 'BF16');
      const refBf16 = referenceForward(await referenceWeightsOfFolder(bf16), tokens);
      await withModel(bf16, {}, async (m) => {
        expect(m.linears[0]?.format).to.equal('bf16');
        expect(relDiff(await m.forward(tokens, { logits: 'all' }), refBf16, c.vocab)).to.be.below(1e-4);
      });
    });
  }
});

describe('runtime: a 256-wide llama GGUF quantized --preset q4_k_m (K-quants)', function () {
  this.timeout(120000);
  it('logits and perplexity of q4_k / q6_k weights match the reference over the dequantized weights, on every kernel set', async () => {
    const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-kq-'));
    try {
      const c: TinyConfig = { arch: 'llama', vocab: 96, embd: 256, layers: 2, heads: 4, headsKv: 2, headDim: 64, ff: 256, eps: 1e-5, ropeBase: 10000, tied: false, ctx: 64 };
      const f32 = path.join(tmp, 'f32.gguf');
      const tensors = tinyTensors(c, 9);
      // logits of a few units (tinyTensors' head, sized for 64-wide rows, makes them tens here and the perplexity ill-conditioned)
      for (const t of tensors) if (t.name === 'lm_head.weight') t.values.forEach((v, i) => (t.values[i] = v * 0.1));
      await fsp.writeFile(f32, tinyGgufBytes(c, tensors));
      const out = path.join(tmp, 'q4_k_m.gguf');
      await compressModel({ input: f32, output: out, recipe: 'q4_k_m' });
      const ref = await referenceWeightsOfGguf(out);
      // each chunk of 32 starts with BOS, whether or not the scorer puts it there (this GGUF names no BOS)
      const tokens = Array.from({ length: 64 }, (_, i) => (i % 32 === 0 ? BOS : (i * 37 + 11) % c.vocab));
      const want = referenceForward(ref, tokens.slice(0, 12));
      const ppl = referencePerplexity((t) => referenceForward(ref, t), tokens, 32, BOS, 2).ppl;
      for (const kernel of ['reference', 'auto'] as const) {
        await withModel(out, { kernel }, async (m) => {
          const formats = new Set(m.linears.map((l) => l.format));
          expect(formats.has('q4_k') && formats.has('q6_k'), [...formats].join(', ')).to.equal(true);
          expect(relDiff(await m.forward(tokens.slice(0, 12), { logits: 'all' }), want, c.vocab), kernel).to.be.below(1e-4);
          const r = await m.perplexity(tokens, { ctx: 32, chunks: 2 });
          expect(Math.abs(r.perplexity / ppl - 1), `${kernel}: ${r.perplexity} vs ${ppl}`).to.be.below(5e-4);
        });
      }
    } finally {
      await fsp.rm(tmp, { recursive: true, force: true });
    }
  });
});

describe('runtime: API', function () {
  this.timeout(120000);
  let tmp: string;
  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-api-'));
  });
  after(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  it('generate: greedy equals the reference argmax chain; sampling is reproducible by seed; stop tokens end it', async () => {
    const ref = await referenceWeightsOfGguf(STORIES);
    await withModel(STORIES, {}, async (m) => {
      const got: number[] = [];
      for await (const t of m.generate([BOS], { temperature: 0, maxTokens: 12 })) got.push(t.token);
      const seq = [BOS];
      for (let i = 0; i < 12; i++) {
        const logits = referenceForward(ref, seq)[seq.length - 1] as Float64Array;
        let best = 0;
        for (let j = 1; j < logits.length; j++) if ((logits[j] as number) > (logits[best] as number)) best = j;
        seq.push(best);
      }
      expect(got).to.deep.equal(seq.slice(1));
      const sample = async (seed: number) => {
        const out: number[] = [];
        for await (const t of m.generate([BOS], { temperature: 1, topK: 0, topP: 1, seed, maxTokens: 20, stop: [] })) out.push(t.token);
        return out;
      };
      const a = await sample(5);
      expect(await sample(5)).to.deep.equal(a);
      expect(await sample(6)).to.not.deep.equal(a);
      const stopped: number[] = [];
      for await (const t of m.generate([BOS], { temperature: 0, maxTokens: 12, stop: [seq[3] as number] })) stopped.push(t.token);
      expect(stopped).to.deep.equal(seq.slice(1, 3));
    });
  });

  it('the activation hook: every linear input of every block and the head, batch by batch, equals the reference forward pass; async hooks awaited, a throwing hook rejects', async () => {
    const ref = await referenceWeightsOfGguf(STORIES);
    const toks = TOKENS.slice(0, 12);
    toks[0] = BOS;
    // the reference's linear inputs, by site, layer and position
    const want = new Map<string, Float64Array>();
    referenceForward(ref, toks, (layer, site, pos, x) => void want.set(`${layer}/${site}/${pos}`, x.slice()));
    // batches of 4 tokens, then a continuation: each batch hooked with its positions
    await withModel(STORIES, { batchSize: 4 }, async (m) => {
      const plain = await m.forward(toks.slice(0, 10), { logits: 'all' });
      const seen: ActivationBatch[] = [];
      const hooked = await m.forward(toks.slice(0, 10), { logits: 'all', onActivation: (b) => void seen.push(b) });
      expect(Array.from(hooked)).to.deep.equal(Array.from(plain));
      await m.forward(toks.slice(10, 12), { position: 10, logits: 'last', onActivation: (b) => void seen.push(b) });
      // 3 + 1 batches × (5 blocks × 4 sites + head)
      expect(seen.length).to.equal(4 * (5 * 4 + 1));
      const first = seen[0] as ActivationBatch;
      expect([first.layer, first.site, first.position, first.rows, first.width]).to.deep.equal([0, 'attn_in', 0, 4, 64]);
      expect(first.weights).to.deep.equal(['blk.0.attn_q.weight', 'blk.0.attn_k.weight', 'blk.0.attn_v.weight']);
      const widths = { attn_in: 64, attn_out: 64, ffn_in: 64, ffn_down: 172, head_in: 64 };
      const covered = new Set<string>();
      for (const b of seen) {
        expect(b.width, b.site).to.equal(widths[b.site]);
        expect(b.data.length).to.equal(b.rows * b.width);
        if (b.site === 'head_in') expect(b.weights).to.deep.equal(['output.weight']);
        else expect(b.weights.every((w) => w.startsWith(`blk.${b.layer}.`))).to.equal(true);
        for (let r = 0; r < b.rows; r++) {
          const key = `${b.layer}/${b.site}/${b.position + r}`;
          const x = want.get(key) as Float64Array;
          const got = b.data.subarray(r * b.width, (r + 1) * b.width);
          const scale = x.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
          const err = x.reduce((a, v, i) => Math.max(a, Math.abs(v - (got[i] as number))), 0);
          expect(err / scale, key).to.be.below(1e-4);
          covered.add(key);
        }
      }
      // every block and site at every position; the head's input where logits were asked for (0..9 and 11)
      expect(covered.size).to.equal(5 * 4 * 12 + 11);
      // the hook's arrays and the logits are the caller's: transferable
      expect(() => structuredClone(first.data.buffer, { transfer: [first.data.buffer] })).to.not.throw();
      expect(() => structuredClone(hooked.buffer, { transfer: [hooked.buffer] })).to.not.throw();
      // only the sites asked for; an async hook is awaited before the next block
      const few: string[] = [];
      await m.forward(toks.slice(0, 4), {
        logits: 'none',
        activationSites: ['ffn_down'],
        onActivation: async (b) => {
          await new Promise((r) => setTimeout(r, 1));
          few.push(`${b.site}${b.layer}`);
        },
      });
      expect(few).to.deep.equal(['ffn_down0', 'ffn_down1', 'ffn_down2', 'ffn_down3', 'ffn_down4']);
      // a hook that throws rejects the forward with its error; the cache keeps the batches before
      const boom = new Error('boom');
      const e = await m.forward(toks.slice(0, 10), { onActivation: (b) => { if (b.position === 4) throw boom; } }).catch((err: unknown) => err);
      expect(e).to.equal(boom);
      expect(m.position).to.equal(4);
      expect(Array.from(await m.forward(toks.slice(0, 10), { logits: 'all' }))).to.deep.equal(Array.from(plain));
    });
  });

  it('an AbortSignal stops a running forward; the model stays usable', async () => {
    await withModel(STORIES, { kernel: 'reference', batchSize: 128 }, async (m) => {
      const ac = new AbortController();
      const p = m.forward(TOKENS.slice(0, 128), { logits: 'all', signal: ac.signal, onActivation: () => new Promise((r) => setTimeout(r, 5)) });
      setTimeout(() => ac.abort(), 20);
      const e = await p.then(
        () => undefined,
        (err: unknown) => err,
      );
      expect((e as Error).name).to.equal('AbortError');
      expect(m.position).to.equal(0);
      const logits = await m.forward([BOS, 5]);
      expect(logits.length).to.equal(512);
      expect(m.position).to.equal(2);
      const pre = new AbortController();
      pre.abort();
      expect(((await m.forward([1], { signal: pre.signal }).catch((err: unknown) => err)) as Error).name).to.equal('AbortError');
    });
    const ac = new AbortController();
    ac.abort();
    expect(((await loadModel(STORIES, { signal: ac.signal }).catch((err: unknown) => err)) as Error).name).to.equal('AbortError');
  });

  it('bad input: clear SlimTensorErrors, no crash', async () => {
    const c = TINY.llama as TinyConfig;
    const tensors = tinyTensors(c, 3);
    const write = async (name: string, bytes: Uint8Array) => {
      const f = path.join(tmp, name);
      await fsp.writeFile(f, bytes);
      return f;
    };
    // an architecture not in the table, named
    let e = await rejected(loadModel(await write('gpt2.gguf', tinyGgufBytes(c, tensors, { kv: [['general.architecture', { type: 'string', value: 'gpt2' }]] }))));
    expect(e.code).to.equal('ERR_UNSUPPORTED');
    expect(e.message).to.match(/'gpt2' is not supported.*llama, qwen2, qwen3/);
    // missing tensors, named
    e = await rejected(loadModel(await write('missing.gguf', tinyGgufBytes(c, tensors, { drop: ['blk.1.ffn_up.weight', 'output_norm.weight'] }))));
    expect(e.code).to.equal('ERR_FORMAT');
    expect(e.message).to.match(/missing tensors output_norm.weight, blk.1.ffn_up.weight/);
    // a wrong shape, named with what was expected
    e = await rejected(loadModel(await write('shape.gguf', tinyGgufBytes(c, tensors, { reshape: { 'blk.0.attn_k.weight': [16, 64] } }))));
    expect(e.code).to.equal('ERR_SHAPE');
    expect(e.message).to.match(/blk\.0\.attn_k\.weight.*\[16, 64\].*\[32, 64\]/);
    // a truncated file
    const whole = tinyGgufBytes(c, tensors);
    e = await rejected(loadModel(await write('truncated.gguf', whole.subarray(0, whole.length - 1000))));
    expect(e.code).to.equal('ERR_FORMAT');
    // a file truncated after its header was read
    const later = await write('later.gguf', whole);
    const plan = await planModel(later);
    await fsp.truncate(later, whole.length - 1000);
    e = await rejected(Model.fromPlan(plan));
    expect(e.code).to.equal('ERR_FORMAT');
    expect(e.message).to.match(/changed .*after its header was read/);
    // replaced (renamed over) after its header was read
    await fsp.writeFile(later, whole);
    const plan2 = await planModel(later);
    await fsp.writeFile(`${later}.new`, tinyGgufBytes(c, tinyTensors(c, 4)));
    await fsp.rename(`${later}.new`, later);
    e = await rejected(Model.fromPlan(plan2));
    expect(e.code).to.equal('ERR_FORMAT');
    // token ids out of range, a context too long, a disposed model
    await withModel(await write('ok.gguf', whole), {}, async (m) => {
      e = await rejected(m.forward([1, 96]));
      expect(e.code).to.equal('ERR_VALUE');
      expect(e.message).to.match(/token 1 is 96, outside the vocabulary \(0\.\.95\)/);
      e = await rejected(m.forward(new Array(65).fill(1)));
      expect(e.message).to.match(/do not fit the context of 64 tokens/);
      e = await rejected(m.perplexity(new Array(200).fill(1), { ctx: 100 }));
      expect(e.message).to.match(/ctx 100 is longer than the context/);
      e = await rejected(m.forward([1], { position: 3 }));
      expect(e.message).to.match(/past the 0 positions/);
    });
    const m = await loadModel(STORIES);
    await m.dispose();
    e = await rejected(m.forward([1]));
    expect(e.message).to.match(/disposed/);
    e = await rejected(loadModel(STORIES, { contextSize: 0 }));
    expect(e.code).to.equal('ERR_VALUE');
  });
});
