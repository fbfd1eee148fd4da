import { expect } from 'chai';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { renderDemo } from '../lib/cli/demo-output';
import { bundledModelPath, DEMO_PRESET_IDS, runDemo, type DemoFormatResult, type DemoReport } from '../lib/demo';
import { SlimTensorError } from '../lib/index';
import { runCli } from './support/cli';
import { bytesOf, f32ToF16Bits, GGML, writeGGUF } from './support/gguf-writer';

const ROOT = path.join(__dirname, '..');

const cli = runCli;

function byId(r: DemoReport): Map<string, DemoFormatResult> {
  return new Map(r.formats.map((f) => [f.id, f]));
}

function get(m: Map<string, DemoFormatResult>, id: string): DemoFormatResult {
  const f = m.get(id);
  if (f === undefined) throw new Error(`no row for ${id}`);
  return f;
}

describe('demo on the bundled stories260K', () => {
  let report: DemoReport;
  let maxGapMs = 0;
  let ticks = 0;

  before(async () => {
    // Watch the event loop while the demo runs: the async API must keep it turning.
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      maxGapMs = Math.max(maxGapMs, now - last);
      last = now;
      ticks++;
    }, 5);
    try {
      report = await runDemo();
    } finally {
      clearInterval(timer);
    }
  });

  it('describes the bundled model', () => {
    expect(report.model.bundled).to.equal(true);
    expect(report.model.path).to.equal(bundledModelPath());
    expect(report.model.architecture).to.equal('llama');
    expect(report.model.tensors).to.equal(48);
    expect(report.model.bytes).to.equal(1185408);
  });

  it('has a row for every recipe, each compressing with a sane error', () => {
    expect(report.formats.map((f) => f.id)).to.deep.equal(DEMO_PRESET_IDS);
    for (const f of report.formats) {
      const gguf = f.id.startsWith('q');
      expect(f.format, f.id).to.equal(gguf ? 'gguf' : 'compressed-tensors');
      // GGUF: 30 matrices + embedding and head (the 5 ffn_down fall back to F16);
      // compressed-tensors: the 35 block matrices (embedding and head kept).
      expect(f.quantized, f.id).to.equal(gguf ? 32 : 35);
      expect(f.kept.length, f.id).to.equal(gguf ? 11 : 13);
      expect(f.ratio, f.id).to.be.above(1.5);
      expect(f.outputBytes, f.id).to.be.below(report.model.bytes);
      expect(f.quantizedBytes, f.id).to.be.below(f.originalBytes);
      expect(f.originalBytes, f.id).to.equal(f.weights * 4);
      // The weights have an RMS of order 0.1: 4-bit error is a few percent of that, 8-bit far less;
      // dropping half the weights costs about half the RMS.
      expect(f.rmse, f.id).to.be.within(1e-5, f.id === '2of4' ? 0.1 : 0.05);
      expect(f.maxAbs, f.id).to.be.at.least(f.rmse);
      expect(f.timeMs, f.id).to.be.above(0);
    }
  });

  it('stores the bits per weight each recipe implies', () => {
    const m = byId(report);
    const emb = 512 * 64; // the embedding, and the head of the same shape
    const v = 32 * 64; // attn_v of one block
    const mats = 5 * 4 * 64 * 64 - 5 * 2 * 32 * 64 + 5 * 2 * 172 * 64; // q, o [64,64]; k, v [32,64]; gate, up [172,64]
    // bits of the embedding and the other matrices; the head is Q8_0 in every GGUF recipe here
    // (Q6_K needs rows of 256), and so are Q4_K_M's and Q5_K_M's attn_v on the blocks use_more_bits picks (2 and 4)
    const gguf = (id: string, bits: number, promotedV = 0): void => {
      const f = get(m, id);
      expect(f.weights, id).to.equal(2 * emb + mats);
      const total = emb * bits + emb * 8.5 + (mats - promotedV * v) * bits + promotedV * v * 8.5;
      expect(f.bitsPerWeight, id).to.be.closeTo(total / (2 * emb + mats), 1e-9);
    };
    gguf('q4_0', 4.5);
    gguf('q4_1', 5);
    gguf('q8_0', 8.5);
    // the K-quants fall back: Q4_K -> Q5_0 (5.5 bits), Q5_K -> Q5_1 (6), Q6_K -> Q8_0
    gguf('q4_k_m', 5.5, 2);
    gguf('q5_k_m', 6, 2);
    gguf('q6_k', 8.5);
    // compressed-tensors: every matrix takes one group per row (rows of 64 or 172 do not
    // fit groups of 128); scales in the model's dtype (f32), plus the I64 weight_shape.
    const shapes = [[64, 64], [32, 64], [32, 64], [64, 64], [172, 64], [172, 64], [64, 172]] as const;
    const ct = (id: string, bits: number): void => {
      const f = get(m, id);
      let bytes = 0;
      for (const [n, k] of shapes) bytes += 5 * (n * Math.ceil((k * bits) / 32) * 4 + n * 4 + 16);
      expect(f.quantizedBytes, id).to.equal(bytes);
      expect(f.bitsPerWeight, id).to.be.closeTo((bytes * 8) / f.weights, 1e-12);
    };
    ct('w4a16', 4);
    ct('w8a16', 8);
    // 2of4: half the f32 values, a bit per weight, and the I64 [2, 1] shape
    const sparse = get(m, '2of4');
    let bytes = 0;
    let weights = 0;
    for (const [n, k] of shapes) {
      bytes += 5 * (n * (k / 2) * 4 + n * Math.ceil(k / 8) + 16);
      weights += 5 * n * k;
    }
    expect(sparse.quantizedBytes).to.equal(bytes);
    expect(sparse.weights).to.equal(weights);
    expect(sparse.bitsPerWeight).to.be.closeTo((bytes * 8) / weights, 1e-12);
  });

  it('orders errors as the recipes promise', () => {
    const m = byId(report);
    const rmse = (id: string): number => get(m, id).rmse;
    for (const four of ['q4_0', 'q4_1', 'w4a16', 'w4a16-asym']) {
      expect(rmse('q8_0'), four).to.be.below(rmse(four));
      expect(rmse('w8a16'), four).to.be.below(rmse(four));
    }
    // An MSE search never does worse than the plain scales it starts from.
    expect(rmse('q4_0-mse')).to.be.at.most(rmse('q4_0'));
    expect(rmse('w4a16-mse')).to.be.at.most(rmse('w4a16'));
    expect(rmse('w4a16-asym')).to.be.below(rmse('w4a16'));
    expect(rmse('q4_1')).to.be.below(rmse('q4_0'));
    // the fallbacks: Q5_0 beats Q4_0 and Q4_1; Q6_K's fallback is Q8_0 throughout, as q8_0
    expect(rmse('q4_k_m')).to.be.below(rmse('q4_1'));
    expect(rmse('q5_k_m')).to.be.below(rmse('q4_k_m'));
    expect(rmse('q6_k')).to.equal(rmse('q8_0'));
    // Pruning half the weights loses more than any 4-bit grid.
    for (const id of DEMO_PRESET_IDS.filter((x) => x !== '2of4')) expect(rmse(id), id).to.be.below(rmse('2of4'));
  });

  it("GGUF recipes take llama-quantize's fallbacks (F16 for the rows of 172, K-quants to 32-value blocks); int recipes one group per row", () => {
    const ffnDown = [0, 1, 2, 3, 4].map((i) => `blk.${i}.ffn_down.weight`);
    const k256 = 'rows of 64 values are not a multiple of the 256-value block';
    for (const f of report.formats) {
      if (f.format === 'gguf') {
        const k = f.id.includes('_k');
        const down = f.fallbacks.filter((s) => s.name.includes('ffn_down'));
        expect(down.map((s) => s.name), f.id).to.deep.equal(ffnDown);
        for (const s of down) expect(s.reason).to.equal(`rows of 172 values are not a multiple of the ${k ? 256 : 32}-value block: F16`);
        const others = new Map<string, number>();
        for (const s of f.fallbacks.filter((x) => !x.name.includes('ffn_down'))) others.set(s.reason, (others.get(s.reason) ?? 0) + 1);
        // the head's Q6_K -> Q8_0 (q8_0 keeps Q8_0; a K-quant mix chooses Q8_0 for it outright, its rows
        // not fitting the base type); a K-quant mix: every other matrix too (Q6_K attn_v on blocks 2 and 4 -> Q8_0)
        const want: Record<string, [string, number][]> = {
          q4_0: [[`${k256}: Q8_0`, 1]],
          'q4_0-mse': [[`${k256}: Q8_0`, 1]],
          q4_1: [[`${k256}: Q8_0`, 1]],
          q8_0: [],
          q4_k_m: [[`${k256}: Q8_0`, 2], [`${k256}: Q5_0`, 29]],
          q5_k_m: [[`${k256}: Q8_0`, 2], [`${k256}: Q5_1`, 29]],
          q6_k: [[`${k256}: Q8_0`, 31]],
        };
        expect([...others].sort(), f.id).to.deep.equal((want[f.id] as [string, number][]).sort());
      } else if (f.id === '2of4') {
        // every row length (64, 172) is a multiple of 4
        expect(f.fallbacks, f.id).to.deep.equal([]);
      } else {
        expect(f.fallbacks, f.id).to.have.length(35);
        for (const s of f.fallbacks) expect(s.reason).to.include('one group per row');
        expect(f.fallbacks.map((s) => s.name)).to.include.members(ffnDown);
      }
    }
  });

  it('keeps the event loop turning', () => {
    expect(ticks).to.be.above(0);
    expect(maxGapMs).to.be.below(1000);
  });

  it('renders an aligned table with one row per recipe', () => {
    const text = renderDemo(report);
    const lines = text.split('\n');
    const header = lines.findIndex((l) => l.startsWith('recipe'));
    expect(header).to.be.above(-1);
    for (const h of ['format', 'size', 'ratio', 'bits/w', 'RMSE', 'time']) expect(lines[header]).to.include(h);
    const rows = lines.slice(header + 2, header + 2 + DEMO_PRESET_IDS.length);
    expect(rows.map((l) => l.split(/\s+/)[0])).to.deep.equal(DEMO_PRESET_IDS);
    // Right-aligned numbers: every row ends at the same column as the header's time.
    const width = (lines[header] as string).length;
    for (const r of rows) expect(r.length).to.equal(width);
    expect(text).to.include('rows of 172 values are not a multiple of the 32-value block');
    expect(text).to.include('MIT');
  });
});

describe('demo on another model', () => {
  let tmp: string;
  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-demo-'));
  });
  after(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  it('quantizes F16 weights, keeps what it cannot and says why', async () => {
    const f16 = (n: number, seed: number): Uint8Array => bytesOf(Uint16Array.from({ length: n }, (_, i) => f32ToF16Bits(Math.sin(i * 0.37 + seed) * 0.1)));
    const file = path.join(tmp, 'small.gguf');
    const w = writeGGUF({
      kv: [['general.architecture', { type: 'string', value: 'test' }]],
      tensors: [
        { name: 'blk.0.a.weight', dims: [64, 8], typeId: GGML.F16, data: f16(512, 1) },
        { name: 'blk.0.b.weight', dims: [48, 4], typeId: GGML.F16, data: f16(192, 2) },
        { name: 'blk.0.attn_norm.weight', dims: [64], typeId: GGML.F16, data: f16(64, 3) },
        { name: 'blk.0.q.weight', dims: [32, 2], typeId: GGML.Q8_0, data: new Uint8Array(68) },
      ],
    });
    await fsp.writeFile(file, w.bytes);
    const r = await runDemo({ model: file, formats: ['q8_0', 'q4_0'] });
    expect(r.model.bundled).to.equal(false);
    expect(r.model.tensors).to.equal(4);
    // Recipes run in the demo's order, whatever order they were asked in.
    expect(r.formats.map((f) => f.id)).to.deep.equal(['q4_0', 'q8_0']);
    const q4 = r.formats[0] as DemoFormatResult;
    expect(q4.quantized).to.equal(1);
    expect(q4.fallbacks).to.deep.equal([{ name: 'blk.0.b.weight', reason: 'rows of 48 values are not a multiple of the 32-value block: F16' }]);
    // in llama-quantize's order (by name within a block)
    expect(q4.kept.map((k) => k.name)).to.deep.equal(['blk.0.attn_norm.weight', 'blk.0.b.weight', 'blk.0.q.weight']);
    expect(q4.kept[2]?.reason).to.include('already quantized');
    expect(q4.originalBytes).to.equal(512 * 2);
    expect(q4.quantizedBytes).to.equal(16 * 18);
    // GGUF blocks cannot go into safetensors: a compressed-tensors recipe says which tensor.
    let e: unknown;
    await runDemo({ model: file, formats: ['w4a16'] }).catch((x: unknown) => (e = x));
    expect((e as SlimTensorError).code).to.equal('ERR_UNSUPPORTED');
    expect((e as SlimTensorError).message).to.include("'blk.0.q.weight'");
  });

  it('rejects unknown formats and non-GGUF files', async () => {
    let e: unknown;
    await runDemo({ formats: ['q3_z'] }).catch((x: unknown) => (e = x));
    expect(e).to.be.instanceOf(SlimTensorError);
    expect((e as SlimTensorError).code).to.equal('ERR_VALUE');
    const notGguf = path.join(tmp, 'x.gguf');
    await fsp.writeFile(notGguf, 'not a model at all, just text');
    e = undefined;
    await runDemo({ model: notGguf }).catch((x: unknown) => (e = x));
    expect((e as SlimTensorError).code).to.equal('ERR_FORMAT');
  });
});

describe('slimtensor CLI', function () {
  // the demo runs every output on the bundled tokens (PPL / KL columns): seconds alone, a minute on a crowded machine
  this.timeout(120_000);

  it('demo --json prints every requested format', async () => {
    const r = await cli(['demo', '--json', '--formats', 'q8_0,w4a16', '--formats', 'q4_0']);
    expect(r.code, r.stderr).to.equal(0);
    const report = JSON.parse(r.stdout) as DemoReport;
    expect(report.formats.map((f) => f.id)).to.deep.equal(['q4_0', 'q8_0', 'w4a16']);
    for (const f of report.formats) expect(f.ratio).to.be.above(1);
  });

  it('demo prints the table', async () => {
    const r = await cli(['demo']);
    expect(r.code, r.stderr).to.equal(0);
    for (const id of DEMO_PRESET_IDS) expect(r.stdout).to.match(new RegExp(`^${id}\\s`, 'm'));
  });

  it('backends / info', async () => {
    const r = await cli(['info', '--json']);
    expect(r.code, r.stderr).to.equal(0);
    expect(JSON.parse(r.stdout)).to.have.nested.property('cpu.kernel');
    const t = await cli(['backends']);
    expect(t.code).to.equal(0);
    expect(t.stdout).to.match(/^cpu: /m).and.match(/^cuda: /m);
  });

  it('exits 2 on usage errors', async () => {
    for (const args of [[], ['frobnicate'], ['demo', '--no-such-option'], ['demo', '--formats', 'q4_0,q9_9']]) {
      const r = await cli(args);
      expect(r.code, args.join(' ')).to.equal(2);
      expect(r.stderr, args.join(' ')).to.match(/^slimtensor: /);
    }
  });

  it('exits 1 with the error message on failures', async () => {
    const missing = await cli(['demo', '--model', path.join(os.tmpdir(), 'no-such-model.gguf')]);
    expect(missing.code).to.equal(1);
    expect(missing.stderr).to.include('ENOENT');
    const notGguf = await cli(['demo', '--model', path.join(ROOT, 'package.json')]);
    expect(notGguf.code).to.equal(1);
    expect(notGguf.stderr).to.include('not a GGUF file').and.include('[ERR_FORMAT]');
  });
});
