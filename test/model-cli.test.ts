// `slimtensor eval`, `run` and `report --eval` on the bundled model and its
// bundled evaluation tokens, through the CLI's main() in this process (one
// case in a child process, as a user runs it); their
// numbers are checked against the API (whose numbers model.test.ts checks
// against the f64 reference) and against perplexity computed here from the
// API's logits.
import { expect } from 'chai';
import { promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadModel } from '../lib/model/model';
import { readTokenFile, writeTokenFile } from '../lib/model/tokens';
import { compressModel } from '../lib/pipeline/compress';
import { nll } from './support/reference-llm';
import { tinyGgufBytes, tinyTensors, type TinyConfig } from './support/tiny-models';
import { runDemo } from '../lib/demo';
import { main } from '../lib/cli/main';
import { runCli } from './support/cli';
import { renderDemo } from '../lib/cli/demo-output';

const ROOT = path.join(__dirname, '..');
const MODEL = path.join(ROOT, 'models', 'stories260K.gguf');
const TOKENS = path.join(ROOT, 'models', 'stories260K-eval.tokens');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The CLI in this process (main() as the bin calls it), its output captured: cheaper than a child per call. */
async function cli(args: readonly string[]): Promise<Run> {
  let stdout = '';
  let stderr = '';
  const out = process.stdout.write.bind(process.stdout);
  const err = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((chunk: string | Uint8Array) => ((stdout += chunk.toString()), true)) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array) => ((stderr += chunk.toString()), true)) as typeof process.stderr.write;
  try {
    const code = await main([...args]);
    return { code, stdout, stderr };
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
}

describe('cli: eval, run, report --eval', function () {
  this.timeout(120000);
  let tmp: string;
  let q8: string;
  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-cli-rt-'));
    q8 = path.join(tmp, 'q8.gguf');
    await compressModel({ input: MODEL, output: q8, recipe: 'q8_0' });
  });
  after(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  it('eval --json: llama-perplexity rule, recomputed here from the logits', async () => {
    const r = await runCli(['eval', MODEL, '--tokens', TOKENS, '--ctx', '128', '--chunks', '3', '--json']);
    expect(r.code, r.stderr).to.equal(0);
    const j = JSON.parse(r.stdout) as { perplexity: number; count: number; chunks: number; ctx: number; tokensPerSecond: number };
    expect([j.chunks, j.ctx, j.count]).to.deep.equal([3, 128, 3 * 63]);
    const ids = Array.from(await readTokenFile(TOKENS));
    const m = await loadModel(MODEL);
    let sum = 0;
    for (let c = 0; c < 3; c++) {
      const chunk = ids.slice(c * 128, (c + 1) * 128);
      chunk[0] = 1;
      const logits = await m.forward(chunk, { logits: 'all' });
      for (let i = 64; i < 127; i++) sum += nll(logits.subarray(i * 512, (i + 1) * 512), chunk[i + 1] as number);
    }
    await m.dispose();
    expect(j.perplexity).to.be.closeTo(Math.exp(sum / (3 * 63)), 1e-9 * j.perplexity);
    expect(j.tokensPerSecond).to.be.above(0);
  });

  it('eval --base: KL 0 and full agreement against itself; a q8_0 copy differs a little', async () => {
    let r = await cli(['eval', MODEL, '--tokens', TOKENS, '--ctx', '128', '--chunks', '2', '--base', MODEL, '--json']);
    expect(r.code, r.stderr).to.equal(0);
    let j = JSON.parse(r.stdout) as { deltaPerplexity: number; kl: { mean: number; p99: number; top1Agreement: number } };
    expect(j.deltaPerplexity).to.equal(0);
    expect(j.kl.mean).to.equal(0);
    expect(j.kl.top1Agreement).to.equal(1);
    r = await cli(['eval', q8, '--tokens', TOKENS, '--ctx', '128', '--chunks', '2', '--base', MODEL]);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/perplexity: [\d.]+ ± [\d.]+ \(base [\d.]+ ± [\d.]+\); ΔPPL/);
    expect(r.stdout).to.match(/KL divergence from the base: mean 0\.0\d+, median [\d.]+, p99 [\d.]+/);
    expect(r.stdout).to.match(/top-1 agreement with the base: [\d.]+ %/);
    r = await cli(['eval', q8, '--tokens', TOKENS, '--ctx', '128', '--chunks', '2', '--base', MODEL, '--json']);
    j = JSON.parse(r.stdout);
    expect(j.kl.mean).to.be.above(0).and.below(0.2);
    expect(j.kl.p99).to.be.at.least(j.kl.mean);
    expect(j.kl.top1Agreement).to.be.above(0.5).and.below(1);
    // KL(base ‖ q8_0) and top-1 agreement recomputed here (f64) from both models' logits
    const ids = Array.from(await readTokenFile(TOKENS));
    const [mb, mq] = [await loadModel(MODEL), await loadModel(q8)];
    const kls: number[] = [];
    let agree = 0;
    const logSoftmax = (row: Float32Array): number[] => {
      let mx = -Infinity;
      for (const v of row) mx = Math.max(mx, v);
      let s = 0;
      for (const v of row) s += Math.exp(v - mx);
      return Array.from(row, (v) => v - mx - Math.log(s));
    };
    const argmax = (a: number[]): number => a.reduce((b, v, i) => (v > (a[b] as number) ? i : b), 0);
    for (let c = 0; c < 2; c++) {
      const chunk = ids.slice(c * 128, (c + 1) * 128);
      chunk[0] = 1;
      const lb = await mb.forward(chunk, { logits: 'all' });
      const lq = await mq.forward(chunk, { logits: 'all' });
      for (let i = 64; i < 127; i++) {
        const pb = logSoftmax(lb.subarray(i * 512, (i + 1) * 512));
        const pq = logSoftmax(lq.subarray(i * 512, (i + 1) * 512));
        kls.push(pb.reduce((a, v, t) => a + Math.exp(v) * (v - (pq[t] as number)), 0));
        if (argmax(pb) === argmax(pq)) agree++;
      }
    }
    await mb.dispose();
    await mq.dispose();
    const full = j as unknown as { kl: { mean: number; max: number; top1Agreement: number } };
    expect(full.kl.mean).to.be.closeTo(kls.reduce((a, v) => a + v, 0) / kls.length, 1e-9);
    expect(full.kl.max).to.be.closeTo(Math.max(...kls), 1e-9);
    expect(full.kl.top1Agreement).to.equal(agree / kls.length);
  });

  it('eval of a --preset q4_k_m GGUF with 256-wide rows (q4_k / q6_k weights) equals the API', async () => {
    const c: TinyConfig = { arch: 'llama', vocab: 96, embd: 256, layers: 1, heads: 4, headsKv: 2, headDim: 64, ff: 256, eps: 1e-5, ropeBase: 10000, tied: false, ctx: 64 };
    const f32 = path.join(tmp, 'kq-f32.gguf');
    const kq = path.join(tmp, 'kq-q4_k_m.gguf');
    const toks = path.join(tmp, 'kq.tokens');
    await fsp.writeFile(f32, tinyGgufBytes(c, tinyTensors(c, 4)));
    await compressModel({ input: f32, output: kq, recipe: 'q4_k_m' });
    await writeTokenFile(toks, Array.from({ length: 64 }, (_, i) => (i * 29 + 3) % c.vocab));
    const r = await cli(['eval', kq, '--tokens', toks, '--ctx', '32', '--base', f32, '--json']);
    expect(r.code, r.stderr).to.equal(0);
    const j = JSON.parse(r.stdout) as { scored: number; compressed: { perplexity: number }; kl: { mean: number } };
    const m = await loadModel(kq);
    try {
      expect(new Set(m.linears.map((l) => l.format)).has('q4_k')).to.equal(true);
      const api = await m.perplexity(Array.from(await readTokenFile(toks)), { ctx: 32 });
      expect(j.scored).to.equal(api.count);
      expect(j.compressed.perplexity).to.be.closeTo(api.perplexity, 1e-9 * api.perplexity);
    } finally {
      await m.dispose();
    }
    expect(j.kl.mean).to.be.above(0); // 4-bit weights differ from their f32 originals
  });

  it('run: greedy tokens equal the API; prompt and generation speed', async () => {
    const r = await cli(['run', MODEL, '--prompt-tokens', '1,100', '-n', '12', '--json']);
    expect(r.code, r.stderr).to.equal(0);
    const j = JSON.parse(r.stdout) as { tokens: number[]; promptTokens: number; generatedTokens: number; promptTokensPerSecond: number; generationTokensPerSecond: number };
    const m = await loadModel(MODEL);
    const want: number[] = [];
    let wantText = '';
    for await (const t of m.generate([1, 100], { temperature: 0, maxTokens: 12 })) {
      want.push(t.token);
      wantText += t.text;
    }
    const promptText = m.detokenize([1, 100], { removeSpecial: true });
    await m.dispose();
    expect(j.tokens).to.deep.equal(want);
    expect(j.promptTokens).to.equal(2);
    expect(j.promptTokensPerSecond).to.be.above(0);
    expect(j.generationTokensPerSecond).to.be.above(0);
    const text = await cli(['run', MODEL, '--prompt-tokens', '1,100', '-n', '12']);
    // The model has a tokenizer: the prompt's text and the generated text.
    expect(wantText.length).to.be.above(0);
    expect(text.stdout.startsWith(promptText + wantText + '\n'), text.stdout).to.equal(true);
    expect(text.stdout).to.match(/prompt: 2 tokens, [\d.]+ tokens\/s; generation: 12 tokens, [\d.]+ tokens\/s/);
  });

  it('report --eval adds perplexity and KL (text, JSON, HTML)', async () => {
    const html = path.join(tmp, 'r.html');
    const r = await cli(['report', MODEL, q8, '--eval', TOKENS, '--ctx', '128', '--chunks', '2', '--html', html]);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/KL divergence from the base: mean/);
    expect(readFileSync(html, 'utf8')).to.include('Quality on text').and.include('top-1 agreement');
    const j = await cli(['report', MODEL, q8, '--eval', TOKENS, '--ctx', '128', '--chunks', '2', '--json']);
    const e = (JSON.parse(j.stdout) as { evaluation: { scored: number; kl: { mean: number } } }).evaluation;
    expect(e.scored).to.equal(2 * 63);
    expect(e.kl.mean).to.be.above(0);
  });

  it('the demo shows perplexity and KL of each output on the bundled tokens', async () => {
    const d = await runDemo({ formats: ['q8_0', 'w8a16'] });
    const ev = d.evaluation as { originalPerplexity: number; count: number };
    expect(ev.count).to.equal(2048);
    const m = await loadModel(MODEL);
    const own = await m.perplexity(await readTokenFile(TOKENS), { ctx: 128 });
    await m.dispose();
    expect(ev.originalPerplexity).to.equal(own.perplexity);
    for (const f of d.formats) {
      expect(Math.abs((f.perplexity as number) / ev.originalPerplexity - 1), f.id).to.be.below(0.1);
      expect(f.kl?.mean, f.id).to.be.above(0).and.below(0.2);
    }
    expect(renderDemo(d)).to.match(/PPL\s+KL\s+top-1/);
  });

  it('eval --text and run --prompt tokenize with the model\'s tokenizer', async () => {
    const text = path.join(tmp, 'story.txt');
    const words = 'Once upon a time there was a little dog. He liked to play in the park with his friends. ';
    await fsp.writeFile(text, words.repeat(12));
    const r = await cli(['eval', MODEL, '--text', text, '--ctx', '128', '--json']);
    expect(r.code, r.stderr).to.equal(0);
    const j = JSON.parse(r.stdout) as { perplexity: number; tokens: { count: number } };
    const m = await loadModel(MODEL);
    const ids = m.tokenize(words.repeat(12));
    expect(ids[0]).to.equal(1); // BOS, as llama-perplexity adds it
    expect(j.tokens.count).to.equal(ids.length);
    expect(j.perplexity).to.equal((await m.perplexity(ids, { ctx: 128 })).perplexity);
    const want: number[] = [];
    for await (const t of m.generate('Once upon', { temperature: 0, maxTokens: 8 })) want.push(t.token);
    const run = await cli(['run', MODEL, '--prompt', 'Once upon', '-n', '8', '--json']);
    const rj = JSON.parse(run.stdout) as { tokens: number[]; text: string };
    expect(rj.tokens).to.deep.equal(want);
    expect(rj.text).to.equal(m.detokenize(want));
    await m.dispose();
  });

  it('errors: a model without a tokenizer, bad token files, usage', async () => {
    // tiny-models' GGUF carries no tokenizer metadata
    const bare = path.join(tmp, 'bare.gguf');
    const c: TinyConfig = { arch: 'llama', vocab: 96, embd: 64, layers: 1, heads: 4, headsKv: 2, headDim: 16, ff: 96, eps: 1e-5, ropeBase: 10000, tied: true, ctx: 64 };
    await fsp.writeFile(bare, tinyGgufBytes(c, tinyTensors(c, 1)));
    let r = await cli(['eval', bare, '--text', MODEL]);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/has no tokenizer the runtime can use.*pass token ids \[ERR_UNSUPPORTED\]/);
    // without a tokenizer, run prints the generated ids
    r = await cli(['run', bare, '--prompt-tokens', '1,5', '-n', '4', '--json']);
    expect(r.code, r.stderr).to.equal(0);
    const ids = (JSON.parse(r.stdout) as { tokens: number[]; text?: string });
    expect(ids.text).to.equal(undefined);
    r = await cli(['run', bare, '--prompt-tokens', '1,5', '-n', '4']);
    expect(r.stdout.split('\n')[0]).to.equal(ids.tokens.join(' '));
    const odd = path.join(tmp, 'odd.tokens');
    await fsp.writeFile(odd, Buffer.alloc(7));
    r = await cli(['eval', MODEL, '--tokens', odd]);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/not a whole number of little-endian int32 token ids \[ERR_FORMAT\]/);
    const big = path.join(tmp, 'big.tokens');
    await writeTokenFile(big, new Array(300).fill(999));
    r = await cli(['eval', MODEL, '--tokens', big, '--ctx', '128']);
    expect(r.stderr).to.match(/token 0 is 999, outside the vocabulary \(0\.\.511\) \[ERR_VALUE\]/);
    r = await cli(['eval', MODEL, '--tokens', TOKENS, '--ctx', '256']);
    expect(r.stderr).to.match(/ctx 256 is longer than the context/);
    r = await cli(['eval', MODEL]);
    expect(r.code).to.equal(2);
    r = await cli(['run', MODEL, '--prompt-tokens', 'a,b']);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/comma-separated integer ids/);
  });
});
