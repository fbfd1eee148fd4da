// The fuzz harness (fuzz/, `npm run fuzz`): its seeds are valid inputs for
// every entry point that mutates them, a short run with a fixed seed finds
// nothing, and the harness itself sees each way an entry point can fail
// (crash, hang, a foreign error, ERR_INTERNAL, a stray file). Then the bugs
// the fuzzer found, each as a plain regression test.
import { expect } from 'chai';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runEntries } from '../fuzz/cases';
import { runFuzz } from '../fuzz/main';
import { SELFTEST_TARGET, seedFiles, TARGETS } from '../fuzz/targets';
import { inspect } from '../lib/cli/model-commands';
import { compareModels } from '../lib/pipeline/compare';
import { compressModel } from '../lib/pipeline/compress';
import { openModel } from '../lib/pipeline/source';
import { SafetensorsWriter } from '../lib/formats/safetensors';
import { rejected } from './support/assert';

const ROOT = path.join(__dirname, '..');

let tmp: string;
before(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-fuzz-test-'));
});
after(async () => {
  if (tmp !== undefined) await fsp.rm(tmp, { recursive: true, force: true });
});

/** A copy of a seed folder under tmp, with some files replaced. */
async function seedCopy(seed: string, replace: Record<string, string>): Promise<string> {
  const dir = path.join(tmp, `${path.basename(seed)}-${Math.random().toString(36).slice(2, 8)}`);
  await fsp.cp(path.join(ROOT, seed), dir, { recursive: true });
  for (const [f, text] of Object.entries(replace)) await fsp.writeFile(path.join(dir, f), text);
  return dir;
}

describe('fuzz harness (npm run fuzz)', () => {
  it('every seed is a valid input of every entry point run on it (mutations start from files that work)', async function () {
    this.timeout(120000);
    let runs = 0;
    for (const target of TARGETS) {
      for (const spec of target.seeds) {
        const files = await seedFiles(spec);
        const caseDir = path.join(tmp, `seed-${runs}`);
        const input = path.join(caseDir, 'input', path.basename(files.root));
        await fsp.cp(files.root, input, { recursive: true });
        const results = await runEntries(spec, input, caseDir, 0);
        for (const r of results) expect(r.outcome, `${target.name}: ${spec.path}: ${r.entry}: ${r.failure?.message ?? ''}`).to.equal('ok');
        runs += results.length;
      }
    }
    expect(runs).to.be.greaterThan(30);
  });

  it('a short run over every target with a fixed seed: only SlimTensorErrors or valid results, nothing left behind', async function () {
    this.timeout(120000);
    const crashes = path.join(tmp, 'crashes');
    const s = await runFuzz({ seconds: 2.5, targets: TARGETS, seed: 1, jobs: 1, timeout: 60, crashes });
    expect(s.failures.map((f) => `${f.kind} ${f.target} #${f.index} ${f.entry}: ${f.message}`)).to.deep.equal([]);
    expect(s.cases).to.be.greaterThan(0);
    const runs = Object.values(s.outcomes).flatMap((e) => Object.values(e).flatMap((o) => Object.values(o)));
    expect(runs.reduce((a, n) => a + n, 0)).to.be.greaterThanOrEqual(s.cases);
    await fsp.access(crashes).then(
      () => expect.fail('nothing should have been saved'),
      () => undefined,
    );
  });

  it('sees a crash, a hang, a foreign error, ERR_INTERNAL and a stray output file, and saves each input to replay', async function () {
    this.timeout(120000);
    const crashes = path.join(tmp, 'selftest');
    process.env.SLIMTENSOR_FUZZ_SELFTEST = '1';
    try {
      // Case i behaves as SELFTEST_MODES[i]: ok, throw, leftover, bad-code, crash, hang.
      // Two workers: the crash and the hang rarely both need a new one (process starts are most of this test's time).
      const s = await runFuzz({ seconds: 600, maxCases: 6, targets: [SELFTEST_TARGET], seed: 7, jobs: 2, timeout: 2, crashes });
      expect(s.cases).to.equal(6);
      expect(s.failures.map((f) => [f.index, f.kind]).sort((a, b) => (a[0] as number) - (b[0] as number))).to.deep.equal([
        [1, 'other-error'],
        [2, 'leftover'],
        [3, 'bad-code'],
        [4, 'crash'],
        [5, 'hang'],
      ]);
      expect(s.failures.find((f) => f.index === 1)?.message).to.match(/^TypeError: Cannot read properties of null/);
      expect(s.failures.find((f) => f.index === 4)?.message).to.match(/SIGABRT/);
      expect(s.outcomes.selftest?.selftest).to.deep.equal({ ok: 1, FAIL: 3, CRASH: 1, HANG: 1 });
      // Two workers, and a new one after the crash when a case was still to come.
      expect(s.childStarts).to.be.within(2, 3);
      for (const f of s.failures) {
        const saved = await fsp.readdir(path.join(f.saved, 'input'));
        expect(saved).to.deep.equal(['tiny-llama.gguf']);
        const info = JSON.parse(await fsp.readFile(path.join(f.saved, 'case.json'), 'utf8')) as { kind: string; index: number; seedPath: string; ops: string[] };
        expect([info.kind, info.index, info.seedPath]).to.deep.equal([f.kind, f.index, SELFTEST_TARGET.seeds[0]?.path]);
        expect(info.ops.length).to.be.greaterThan(0);
      }
    } finally {
      delete process.env.SLIMTENSOR_FUZZ_SELFTEST;
    }
  });
});

describe('bugs the fuzzer found', () => {
  const deep = `${'['.repeat(100000)}${']'.repeat(100000)}`;

  it('config.json nested 100000 deep: compressModel is ERR_FORMAT (was a RangeError from JSON.stringify) and leaves nothing', async () => {
    const input = await seedCopy('test/fixtures/fuzz/compressed-tensors/w4a16', { 'config.json': `{"architectures": ["LlamaForCausalLM"], "x": ${deep}}` });
    const outDir = path.join(tmp, 'deep-out');
    await fsp.mkdir(outDir);
    const e = await rejected(compressModel({ input, output: path.join(outDir, 'o'), recipe: 'w4a16' }));
    expect(e.code).to.equal('ERR_FORMAT');
    expect(e.message).to.match(/config\.json: nests arrays or objects more than 64 deep/);
    expect(await fsp.readdir(outDir)).to.deep.equal([]);
  });

  it('a sparsity_config nested that deep: inspect and compare treat config.json as unreadable, as they do malformed JSON', async () => {
    const input = await seedCopy('test/fixtures/fuzz/compressed-tensors/sparse24', { 'config.json': `{"quantization_config": {"sparsity_config": {"format": ${deep}}}}` });
    const text = JSON.parse(await inspect(input, true)) as { sparsityConfig?: unknown; tensors: unknown[] };
    expect(text.sparsityConfig).to.equal(undefined);
    expect(text.tensors.length).to.be.greaterThan(0);
    const r = await compareModels(path.join(ROOT, 'test/fixtures/fuzz/safetensors/hf-folder'), input);
    expect(r.tensors.length).to.be.greaterThan(0);
  });

  it('config.json holding null or a list: compare reads the folder as one without a config (was a TypeError)', async () => {
    for (const text of ['null', '[1]', '"x"']) {
      const input = await seedCopy('test/fixtures/fuzz/compressed-tensors/w4a16', { 'config.json': text });
      const r = await compareModels(path.join(ROOT, 'test/fixtures/fuzz/safetensors/hf-folder'), input);
      expect(r.compressed.format, text).to.equal('safetensors');
      expect(r.tensors.length).to.be.greaterThan(0);
    }
  });

  it('a tensor named __proto__ (and such a key in config.json): compressModel writes a folder that reads back with it (the writers used to drop it)', async () => {
    const src = path.join(tmp, 'proto-src');
    await fsp.mkdir(src);
    const w = await SafetensorsWriter.create(path.join(src, 'model.safetensors'), [
      { name: 'model.layers.0.mlp.up_proj.weight', dtype: 'F32', shape: [64, 128] },
      { name: '__proto__', dtype: 'F32', shape: [2] },
    ]);
    await w.write('model.layers.0.mlp.up_proj.weight', new Float32Array(64 * 128).map((_, i) => Math.sin(i)));
    await w.write('__proto__', new Float32Array([1, 2]));
    await w.close();
    await fsp.writeFile(path.join(src, 'config.json'), '{"architectures": ["LlamaForCausalLM"], "__proto__": {"kept": true}}');
    const out = path.join(tmp, 'proto-out');
    const r = await compressModel({ input: src, output: out, recipe: 'w4a16', target: 'transformers' });
    expect(r.tensors.find((t) => t.name === 'model.layers.0.mlp.up_proj.weight')?.method).to.equal('quantize');
    const m = await openModel(out);
    try {
      expect(m.tensors.map((t) => t.name)).to.include('__proto__');
      expect(Array.from(new Float32Array((await m.readBytes('__proto__')).slice().buffer))).to.deep.equal([1, 2]);
    } finally {
      await m.close();
    }
    const text = await fsp.readFile(path.join(out, 'config.json'), 'utf8');
    expect(Object.keys(JSON.parse(text) as object)).to.deep.equal(['__proto__', 'architectures', 'quantization_config']);
  });
});
