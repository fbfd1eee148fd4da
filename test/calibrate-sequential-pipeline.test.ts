// compressModel with sequential calibration (GPTQ's sequential mode):
// block i calibrated on the outputs of blocks 0..i-1 as compressed. Checked
// on stories260K and a tiny generated Hugging Face model: where nothing
// upstream changes, the same file bytes as the whole-model run; sequential
// GPTQ against a loop written here (calibrateSequential + gptqSync per
// block); its KL against whole-model GPTQ's; 'auto'; bad input.
import { expect } from 'chai';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { calibrateSequential, calibrationChunks } from '../lib/calibrate';
import { cast } from '../lib/cast';
import { GGUFReader } from '../lib/formats/gguf';
import { gptqSync } from '../lib/gptq';
import { evaluateAgainst } from '../lib/model/evaluate';
import { loadModel, type BlockWeight } from '../lib/model/model';
import { compressModel, type CompressReport } from '../lib/pipeline/compress';
import { renderCompressReport } from '../lib/cli/model-commands';
import { dequantizeSync } from '../lib/quantize';
import { Tensor } from '../lib/tensor';
import { rejected } from './support/assert';
import { runCli } from './support/cli';
import { tinyTensors, writeTinyHf, type TinyConfig } from './support/tiny-models';

const ROOT = path.join(__dirname, '..');
const MODEL = path.join(ROOT, 'models', 'stories260K.gguf');
const CALIB = path.join(ROOT, 'models', 'stories260K-calib.tokens');
const tokens = (f: string): Int32Array => new Int32Array(readFileSync(f).buffer.slice(0));
const KEEP = ['*norm*', 'token_embd.weight', 'output.weight'];
const LINEARS = ['attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_gate', 'ffn_up', 'ffn_down'];

describe('compressModel: sequential calibration', function () {
  this.timeout(60_000);
  let tmp: string;
  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-seqpipe-'));
  });
  after(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  const run = (output: string, rules: unknown[], sequential: boolean | 'auto', extra: Record<string, unknown> = {}): Promise<CompressReport> =>
    compressModel({ input: MODEL, output: path.join(tmp, output), recipe: { format: 'gguf', calibration: { tokens: CALIB, ctx: 128, chunks: 6, sequential }, rules } as never, ...extra });

  it('nothing upstream replaced (blocks 0–3 kept, block 4 by gptq and imatrix-weighted quantize): the whole-model file, byte for byte', async () => {
    const rules = [
      { match: KEEP, method: 'keep' },
      { match: 'blk.4.attn_*', method: 'gptq', options: { format: 'q4_0' } },
      { match: 'blk.4.ffn_*', method: 'quantize', options: { format: 'q4_1' } },
      { match: '*', method: 'keep' },
    ];
    const whole = await run('whole.gguf', rules, false);
    const seq = await run('seq.gguf', rules, true);
    expect(whole.calibration?.mode).to.equal('whole-model');
    expect(seq.calibration?.mode).to.equal('sequential');
    expect(seq.calibration?.inputs).to.equal(whole.calibration?.inputs);
    expect(seq.calibration?.hessians).to.equal(2); // block 4's attention input (q, k, v) and attn_output's: the gptq rule's inputs only
    expect(seq.tensors.filter((t) => t.calibrated?.method === 'gptq')).to.have.length(4);
    expect(seq.imatrix?.used).to.equal(whole.imatrix?.used).and.to.be.greaterThan(0);
    const [a, b] = await Promise.all([fsp.readFile(path.join(tmp, 'whole.gguf')), fsp.readFile(path.join(tmp, 'seq.gguf'))]);
    expect(b.equals(a)).to.equal(true);
    // The report says which mode ran and what it planned.
    const text = renderCompressReport(seq, false);
    expect(text).to.match(/sequential \(block by block, each compressed before the next\), planned peak [\d.]+ [KMG]i?B \(whole model: [\d.]+ [KMG]i?B\)/);
    expect(seq.calibration?.plannedPeakBytes).to.be.greaterThan(0);
  });

  it('sequential GPTQ equals a loop of calibrateSequential + gptqSync per block, each block fed the dequantized weights of the ones before', async () => {
    const rules = [{ match: KEEP, method: 'keep' }, { match: '*', method: 'gptq', options: { format: 'q4_0' } }];
    const r = await run('seq-gptq.gguf', rules, true);
    expect(r.calibration?.mode).to.equal('sequential');
    // The loop: q4_0 GPTQ where rows of 32 fit, ffn_down (172 columns) F16 as the pipeline's fallback writes it.
    const src = await GGUFReader.open(MODEL);
    const want = new Map<string, Buffer>();
    try {
      const m = await loadModel(MODEL);
      const chunks = calibrationChunks(tokens(CALIB), m, { ctx: 128, chunks: 6 });
      await m.dispose();
      await calibrateSequential(MODEL, chunks, {
        hessian: (n) => !n.endsWith('ffn_down.weight'),
        onBlock: async ({ layer, stats }) => {
          const replace = new Map<string, BlockWeight>();
          for (const l of LINEARS) {
            const name = `blk.${layer}.${l}.weight`;
            const w = (await src.readTensor(name)) as Tensor;
            const cols = w.shape[1] as number;
            if (l === 'ffn_down') {
              const h = await cast(w, 'f16');
              want.set(name, Buffer.from(h.data.buffer, h.data.byteOffset, h.data.byteLength));
              replace.set(name, await cast(h, 'f32'));
              continue;
            }
            const q = gptqSync(w, Tensor.from(stats.get(name)?.hessian as Float32Array, [cols, cols]), { format: 'q4_0', measure: false }).quantized;
            const d = q.data as Uint8Array;
            want.set(name, Buffer.from(d.buffer, d.byteOffset, d.byteLength));
            replace.set(name, dequantizeSync(q, { dtype: 'f32' }));
          }
          return replace;
        },
      });
    } finally {
      await src.close();
    }
    const out = await GGUFReader.open(path.join(tmp, 'seq-gptq.gguf'));
    try {
      expect(want.size).to.equal(35);
      for (const [name, bytes] of want) expect(Buffer.from(await out.readTensorBytes(name)).equals(bytes), name).to.equal(true);
    } finally {
      await out.close();
    }
  });

  it("sequential GPTQ's KL on held-out tokens is not worse than whole-model GPTQ's beyond noise", async () => {
    const rules = [{ match: KEEP, method: 'keep' }, { match: '*', method: 'gptq', options: { format: 'q4_0' } }];
    await run('kl-whole.gguf', rules, false);
    if (!existsSync(path.join(tmp, 'seq-gptq.gguf'))) await run('seq-gptq.gguf', rules, true);
    const base = await loadModel(MODEL);
    const evalTokens = tokens(path.join(ROOT, 'models', 'stories260K-eval.tokens')).subarray(0, 128 * 8);
    const kl = async (file: string): Promise<number> => {
      const m = await loadModel(path.join(tmp, file));
      try {
        return (await evaluateAgainst(m, base, evalTokens, { ctx: 128 })).kl.mean;
      } finally {
        await m.dispose();
      }
    };
    try {
      const [whole, seq] = [await kl('kl-whole.gguf'), await kl('seq-gptq.gguf')];
      console.log(`      KL vs f32 on 1024 held-out tokens: whole-model GPTQ ${whole.toFixed(5)}, sequential GPTQ ${seq.toFixed(5)}`);
      expect(seq, `sequential ${seq} vs whole-model ${whole}`).to.be.lessThan(whole * 1.1);
    } finally {
      await base.dispose();
    }
  });

  it("'auto': sequential when the whole-model estimate (f32 weights + Hessians) exceeds memoryLimit, whole-model otherwise", async () => {
    const rules = [{ match: KEEP, method: 'keep' }, { match: 'blk.4.*', method: 'gptq', options: { format: 'q8_0' } }, { match: '*', method: 'keep' }];
    const big = await run('auto-big.gguf', rules, 'auto');
    expect(big.calibration?.mode).to.equal('whole-model');
    // f32 weights of stories260K: 260K parameters; Hessians: 4 inputs of 64² and 1 of 172²
    const weights = big.tensors.reduce((s, t) => s + t.shape.reduce((a, d) => a * d, 1), 0) * 4;
    expect(big.calibration?.wholeModelBytes).to.equal(weights + (64 * 64 * 3 + 172 * 172) * 4);
    const small = await run('auto-small.gguf', rules, 'auto', { memoryLimit: 1 << 20 });
    expect(small.calibration?.mode).to.equal('sequential');
    expect(small.calibration?.plannedPeakBytes).to.be.lessThan(small.calibration?.wholeModelBytes as number);
    const [a, b] = await Promise.all([fsp.readFile(path.join(tmp, 'auto-big.gguf')), fsp.readFile(path.join(tmp, 'auto-small.gguf'))]);
    expect(b.equals(a)).to.equal(true);
  });

  it('a tiny generated Hugging Face model (safetensors out): Wanda prune and whitened lowrank on the last block give the whole-model bytes; earlier blocks replaced change them', async () => {
    const c: TinyConfig = { arch: 'llama', vocab: 64, embd: 32, layers: 3, heads: 4, headsKv: 2, headDim: 8, ff: 48, eps: 1e-5, ropeBase: 10000, tied: false, ctx: 64 };
    const dir = path.join(tmp, 'tiny-hf');
    await writeTinyHf(dir, c, tinyTensors(c, 7));
    const ids = Array.from({ length: 32 * 4 }, (_, i) => (i * 37 + 11) % c.vocab);
    const go = async (out: string, sequential: boolean, upstream: boolean): Promise<Buffer> => {
      const last = upstream ? 'model.layers.*' : 'model.layers.2.*';
      const rules = [
        { match: '*norm*', method: 'keep' },
        { match: `${last}self_attn.*`, method: 'prune', options: { pattern: '2:4', score: 'wanda' } },
        { match: `${last}mlp.*`, method: 'lowrank', options: { rank: 8, whiten: 'hessian' } },
        { match: '*', method: 'keep' },
      ];
      const r = await compressModel({ input: dir, output: path.join(tmp, out), recipe: { format: 'safetensors', calibration: { tokens: ids, ctx: 32, sequential }, rules } as never });
      expect(r.calibration?.mode).to.equal(sequential ? 'sequential' : 'whole-model');
      return fsp.readFile(path.join(tmp, out, 'model.safetensors'));
    };
    expect((await go('t-seq', true, false)).equals(await go('t-whole', false, false))).to.equal(true);
    // Pruned and factored blocks 0 and 1 feed block 2 other inputs: its prune and factors differ.
    expect((await go('t-seq-all', true, true)).equals(await go('t-whole-all', false, true))).to.equal(false);
  });

  it('the CLI: --calibrate-sequential true|false states the mode; the bytes of both equal the API runs; a bad value is a usage error', async () => {
    const args = (out: string, mode: string): string[] => ['compress', MODEL, '-o', path.join(tmp, out), '--preset', 'q4_0-gptq', '--calibrate-tokens', CALIB, '--calibrate-ctx', '128', '--calibrate-chunks', '6', '--calibrate-sequential', mode, '-q'];
    const s = await runCli(args('cli-seq.gguf', 'true'));
    expect(s.code, s.stderr).to.equal(0);
    expect(s.stdout).to.match(/calibration on .*stories260K-calib\.tokens: 6 chunks of 128 tokens, .*; sequential \(block by block, each compressed before the next\), planned peak/);
    const w = await runCli(args('cli-whole.gguf', 'false'));
    expect(w.code, w.stderr).to.equal(0);
    expect(w.stdout).to.match(/; whole model at once, planned peak/);
    const api = await compressModel({ input: MODEL, output: path.join(tmp, 'api-seq.gguf'), recipe: { extends: 'q4_0-gptq', calibration: { tokens: CALIB, ctx: 128, chunks: 6, sequential: true } } });
    expect(api.calibration?.mode).to.equal('sequential');
    expect((await fsp.readFile(path.join(tmp, 'cli-seq.gguf'))).equals(await fsp.readFile(path.join(tmp, 'api-seq.gguf')))).to.equal(true);
    expect((await fsp.readFile(path.join(tmp, 'cli-seq.gguf'))).equals(await fsp.readFile(path.join(tmp, 'cli-whole.gguf')))).to.equal(false);
    const bad = await runCli(args('cli-bad.gguf', 'maybe'));
    expect(bad.code).to.not.equal(0);
    expect(bad.stderr).to.match(/calibrate-sequential/);
    expect(existsSync(path.join(tmp, 'cli-bad.gguf'))).to.equal(false);
  });

  it('bad input: a source the runtime cannot run, awq or scaling with sequential, a bad sequential value — clear errors, nothing written', async () => {
    const rules = [{ match: KEEP, method: 'keep' }, { match: '*', method: 'gptq', options: { format: 'q4_0' } }];
    // A bare safetensors file: compressModel reads it, the runtime has no architecture to run.
    const st = path.join(tmp, 'bare.safetensors');
    await writeTinyHf(path.join(tmp, 'bare-hf'), { arch: 'llama', vocab: 64, embd: 32, layers: 1, heads: 4, headsKv: 2, headDim: 8, ff: 48, eps: 1e-5, ropeBase: 10000, tied: false, ctx: 64 }, tinyTensors({ arch: 'llama', vocab: 64, embd: 32, layers: 1, heads: 4, headsKv: 2, headDim: 8, ff: 48, eps: 1e-5, ropeBase: 10000, tied: false, ctx: 64 }, 3));
    await fsp.copyFile(path.join(tmp, 'bare-hf', 'model.safetensors'), st);
    const out = path.join(tmp, 'bad-out');
    let e = await rejected(compressModel({ input: st, output: out, recipe: { format: 'safetensors', calibration: { tokens: [1, 2, 3, 4], ctx: 4, sequential: true }, rules: [{ match: '*', method: 'gptq', options: { format: 'int4', groupSize: 32 } }] } as never }));
    expect(e.message).to.match(/^compressModel: sequential calibration runs the model block by block, and the runtime cannot run .*bare\.safetensors: /);
    e = await rejected(run('bad-awq.gguf', [{ match: KEEP, method: 'keep' }, { match: '*', method: 'awq', options: { format: 'q4_0' } }], true));
    expect(e.code).to.equal('ERR_UNSUPPORTED');
    expect(e.message).to.match(/sequential calibration: awq rules fold scales into the norms/);
    e = await rejected(run('bad-seq.gguf', rules, 'sometimes' as never));
    expect(e.code).to.equal('ERR_VALUE');
    expect(e.message).to.match(/calibration\.sequential must be true, false or 'auto', got "sometimes"/);
    e = await rejected(run('bad-scaling.gguf', rules, true, { scaling: new Map([['blk.0.attn_norm.weight', { rows: new Float32Array(64).fill(1) }]]) }));
    expect(e.message).to.match(/runs the blocks without compressModel's scaling factors/);
    for (const f of ['bad-out', 'bad-awq.gguf', 'bad-seq.gguf', 'bad-scaling.gguf']) expect(existsSync(path.join(tmp, f)), f).to.equal(false);
    expect((await fsp.readdir(tmp)).filter((f) => f.endsWith('.tmp'))).to.deep.equal([]);
  });

  it('a failure inside a block (gptq of a tensor with no statistics) stops both sides: the error, nothing written', async () => {
    // output.weight has no input statistics (the head's input is not collected): the pipeline fails while the calibration runs.
    const e = await rejected(run('bad-head.gguf', [{ match: ['*norm*', 'token_embd.weight'], method: 'keep' }, { match: '*', method: 'gptq', options: { format: 'q8_0' } }], true));
    expect(e.message).to.match(/output\.weight/);
    expect(existsSync(path.join(tmp, 'bad-head.gguf'))).to.equal(false);
  });
});
