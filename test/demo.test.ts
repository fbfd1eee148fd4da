import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { renderDemo } from '../lib/cli/demo-output';
import { bundledModelPath, DEMO_PRESET_IDS, runDemo, type DemoFormatResult, type DemoReport } from '../lib/demo';
import { SlimTensorError } from '../lib/index';
import { bytesOf, f32ToF16Bits, GGML, writeGGUF } from './support/gguf-writer';

const ROOT = path.join(__dirname, '..');

/** Runs the CLI under tsx and collects its exit code and output. */
function cli(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'lib', 'cli', 'main.ts'), ...args], { cwd: ROOT });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

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
    expect(report.model.candidates).to.equal(37);
    expect(report.model.untouched).to.have.length(11);
    expect(report.model.untouched.every((u) => u.reason.startsWith('1-D'))).to.equal(true);
  });

  it('has a row for every format, each compressing with a sane error', () => {
    expect(report.formats.map((f) => f.id)).to.deep.equal(DEMO_PRESET_IDS);
    for (const f of report.formats) {
      // GGUF formats keep the 5 ffn_down tensors (rows of 172); int formats take them per channel
      expect(f.quantized, f.id).to.equal(['q4_0', 'q4_1', 'q8_0'].includes(f.options.format) ? 32 : 37);
      expect(f.ratio, f.id).to.be.above(1);
      expect(f.quantizedBytes, f.id).to.be.below(f.originalBytes);
      expect(f.modelBytes, f.id).to.be.below(report.model.tensorBytes);
      expect(f.originalBytes, f.id).to.equal(f.weights * 4);
      // The weights have an RMS of order 0.1: 4-bit error is a few percent of that, 8-bit far less.
      expect(f.rmse, f.id).to.be.within(1e-5, 0.05);
      expect(f.maxAbs, f.id).to.be.at.least(f.rmse);
    }
  });

  it('stores the bits per weight each format implies', () => {
    const m = byId(report);
    expect(get(m, 'q4_0').bitsPerWeight).to.equal(4.5); // 18 bytes per 32
    expect(get(m, 'q4_1').bitsPerWeight).to.equal(5); // 20 bytes per 32
    expect(get(m, 'q8_0').bitsPerWeight).to.equal(8.5); // 34 bytes per 32
    // int formats mix two layouts: rows of 64 (groups of 32, or one per row
    // when the group is 128) and the ffn_down rows of 172 (one group per row).
    const ffnDown = 5 * 64 * 172;
    const mixed = (id: string, bits64: number, bits172: number): void => {
      const f = get(m, id);
      const expected = ((f.weights - ffnDown) * bits64 + ffnDown * bits172) / f.weights;
      expect(f.bitsPerWeight, id).to.be.closeTo(expected, 1e-3);
    };
    mixed('int4-g32', 4 + 16 / 32, 4 + 16 / 172); // an f16 scale per group
    mixed('int4-g128', 4 + 16 / 64, 4 + 16 / 172);
    mixed('int4-g128-asym', 4 + 20 / 64, 4 + 20 / 172); // + a 4-bit zero point per group
    mixed('int8-g128', 8 + 16 / 64, 8 + 16 / 172);
  });

  it('orders errors as the formats promise', () => {
    const m = byId(report);
    const rmse = (id: string): number => get(m, id).rmse;
    for (const four of ['q4_0', 'q4_1', 'int4-g32', 'int4-g128', 'int4-g128-asym']) {
      expect(rmse('q8_0'), four).to.be.below(rmse(four));
      expect(rmse('int8-g128'), four).to.be.below(rmse(four));
    }
    // An MSE search never does worse than the plain scales it starts from.
    expect(rmse('q4_0-mse')).to.be.at.most(rmse('q4_0'));
    expect(rmse('int4-g128-mse')).to.be.at.most(rmse('int4-g128'));
    // Smaller groups and a zero point fit better.
    expect(rmse('int4-g32')).to.be.below(rmse('int4-g128'));
    expect(rmse('int4-g128-asym')).to.be.below(rmse('int4-g128'));
    expect(rmse('q4_1')).to.be.below(rmse('q4_0'));
  });

  it('GGUF formats skip the rows of 172 and say why; int formats fall back to one group per row', () => {
    const ffnDown = [0, 1, 2, 3, 4].map((i) => `blk.${i}.ffn_down.weight`);
    for (const f of report.formats) {
      const ggml = ['q4_0', 'q4_1', 'q8_0'].includes(f.options.format);
      expect(f.skipped.map((s) => s.name), f.id).to.deep.equal(ggml ? ffnDown : []);
      for (const s of f.skipped) expect(s.reason).to.include('172');
      // rows of 64 (< 128) in 32 tensors, and the 5 ffn_down tensors (172 % 32, 172 % 128)
      const expectFallbacks = ggml ? 0 : f.id.includes('g128') ? 37 : 5;
      expect(f.fallbacks, f.id).to.have.length(expectFallbacks);
      for (const s of f.fallbacks) expect(s.reason).to.include('one group per row');
      if (!ggml) expect(f.fallbacks.map((s) => s.name)).to.include.members(ffnDown);
    }
  });

  it('keeps the event loop turning', () => {
    expect(ticks).to.be.above(0);
    expect(maxGapMs).to.be.below(1000);
  });

  it('renders an aligned table with one row per format', () => {
    const text = renderDemo(report);
    const lines = text.split('\n');
    const header = lines.findIndex((l) => l.startsWith('format'));
    expect(header).to.be.above(-1);
    for (const h of ['tensors', 'skipped', 'original', 'quantized', 'ratio', 'bits/w', 'RMSE', 'time']) expect(lines[header]).to.include(h);
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

  it('quantizes F16 weights, skips what it cannot and says why', async () => {
    const f16 = (n: number, seed: number): Uint8Array => bytesOf(Uint16Array.from({ length: n }, (_, i) => f32ToF16Bits(Math.sin(i * 0.37 + seed) * 0.1)));
    const file = path.join(tmp, 'small.gguf');
    const w = writeGGUF({
      kv: [['general.architecture', { type: 'string', value: 'test' }]],
      tensors: [
        { name: 'a', dims: [64, 8], typeId: GGML.F16, data: f16(512, 1) },
        { name: 'b', dims: [48, 4], typeId: GGML.F16, data: f16(192, 2) },
        { name: 'norm', dims: [64], typeId: GGML.F16, data: f16(64, 3) },
        { name: 'q', dims: [32, 2], typeId: GGML.Q8_0, data: new Uint8Array(68) },
      ],
    });
    await fsp.writeFile(file, w.bytes);
    const r = await runDemo({ model: file, formats: ['int4-g128', 'q4_0'] });
    expect(r.model.bundled).to.equal(false);
    expect(r.model.candidates).to.equal(2);
    expect(r.model.untouched.map((u) => u.reason)).to.deep.equal(['1-D (only 2-D weight matrices are quantized)', 'already quantized (Q8_0)']);
    // Formats run in the demo's order, whatever order they were asked in.
    expect(r.formats.map((f) => f.id)).to.deep.equal(['q4_0', 'int4-g128']);
    const [q4, i4] = r.formats as [DemoFormatResult, DemoFormatResult];
    expect(q4.quantized).to.equal(1);
    expect(q4.skipped).to.deep.equal([{ name: 'b', reason: 'rows of 48 values are not a multiple of the 32-value block' }]);
    expect(q4.originalBytes).to.equal(512 * 2);
    expect(q4.ratio).to.be.closeTo(16 / 4.5, 1e-9);
    expect(i4.quantized).to.equal(2);
    expect(i4.fallbacks.map((s) => s.name)).to.deep.equal(['a', 'b']);
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
  this.timeout(60_000);

  it('demo --json prints every requested format', async () => {
    const r = await cli(['demo', '--json', '--formats', 'q8_0,int4-g32', '--formats', 'q4_0']);
    expect(r.code, r.stderr).to.equal(0);
    const report = JSON.parse(r.stdout) as DemoReport;
    expect(report.formats.map((f) => f.id)).to.deep.equal(['q4_0', 'q8_0', 'int4-g32']);
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
