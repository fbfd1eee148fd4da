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
import { SafetensorsFile, SafetensorsWriter } from '../lib/formats/safetensors';
import { GGUFReader } from '../lib/formats/gguf';
import { loadModel } from '../lib/model/model';
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

  it('a config.json value nested 100000 deep: loadModel is ERR_FORMAT (was a RangeError quoting it in the hyper-parameter error)', async () => {
    const seed = 'test/fixtures/fuzz/safetensors/hf-model';
    const config = JSON.parse(await fsp.readFile(path.join(ROOT, seed, 'config.json'), 'utf8')) as Record<string, unknown>;
    const input = await seedCopy(seed, { 'config.json': JSON.stringify({ ...config, hidden_size: 0 }).replace('"hidden_size":0', `"hidden_size":${deep}`) });
    const e = await rejected(loadModel(input, { contextSize: 8 }));
    expect(e.code).to.equal('ERR_FORMAT');
    expect(e.message).to.match(/config\.json: nests arrays or objects more than 64 deep/);
  });

  it('a block count of 2^28 + 1 (GGUF) or 10^8 (config.json): loadModel is ERR_FORMAT at once (was out of memory listing the missing tensors)', async () => {
    const gguf = await seedCopy('test/fixtures/fuzz/gguf/tiny-llama.gguf', {});
    const bytes = await fsp.readFile(gguf);
    const key = Buffer.from('llama.block_count');
    const at = bytes.indexOf(key) + key.length;
    expect(bytes.readUInt32LE(at)).to.equal(4); // value type u32
    expect(bytes.readUInt32LE(at + 4)).to.equal(1);
    bytes.writeUInt32LE(2 ** 28 + 1, at + 4);
    await fsp.writeFile(gguf, bytes);
    const seed = 'test/fixtures/fuzz/safetensors/hf-model';
    const config = JSON.parse(await fsp.readFile(path.join(ROOT, seed, 'config.json'), 'utf8')) as Record<string, unknown>;
    const folder = await seedCopy(seed, { 'config.json': JSON.stringify({ ...config, num_hidden_layers: 1e8 }) });
    for (const [input, blocks] of [[gguf, 2 ** 28 + 1], [folder, 1e8]] as const) {
      const t0 = performance.now();
      const e = await rejected(loadModel(input, { contextSize: 8 }));
      expect(e.code).to.equal('ERR_FORMAT');
      expect(e.message).to.include(`${blocks} blocks, but only`);
      expect(performance.now() - t0).to.be.below(2000);
    }
  });

  /** A copy of a seed (its `file` when a folder) with `bytes` written `byteOffset` bytes into `tensor`'s data. */
  async function patched(seed: string, file: string, tensor: string, byteOffset: number, bytes: number[]): Promise<string> {
    const copy = await seedCopy(seed, {});
    const target = file === '' ? copy : path.join(copy, file);
    const r = seed.endsWith('.gguf') ? await GGUFReader.open(target) : await SafetensorsFile.open(target);
    const info = (r.tensors as readonly { name: string; fileOffset: number }[]).find((t) => t.name === tensor);
    await r.close();
    expect(info, tensor).to.not.equal(undefined);
    const fh = await fsp.open(target, 'r+');
    await fh.write(Uint8Array.from(bytes), 0, bytes.length, (info?.fileOffset as number) + byteOffset);
    await fh.close();
    return copy;
  }

  it('a NaN or infinite weight: loadModel is ERR_VALUE naming the tensor (forward gave NaN logits)', async () => {
    const gguf = 'test/fixtures/fuzz/gguf/tiny-llama.gguf';
    const cases: [string, string, string, number, number[], RegExp][] = [
      // F16 NaN (0x7e00) as the 3rd value of the FFN gate
      [gguf, '', 'blk.0.ffn_gate.weight', 4, [0x00, 0x7e], /'blk\.0\.ffn_gate\.weight': value 2 is NaN or infinite/],
      // BF16 +Inf (0x7f80)
      [gguf, '', 'blk.0.ffn_down.weight', 0, [0x80, 0x7f], /'blk\.0\.ffn_down\.weight': value 0 is NaN or infinite/],
      // the f16 scale of Q8_0 block 1 (34-byte blocks) -> -Inf
      [gguf, '', 'blk.0.attn_q.weight', 34, [0x00, 0xfc], /'blk\.0\.attn_q\.weight': the scale of block 1 is NaN or infinite/],
      // the f16 minimum of Q4_1 block 0 (bytes 2..3) -> NaN
      [gguf, '', 'blk.0.attn_v.weight', 2, [0x01, 0x7c], /'blk\.0\.attn_v\.weight': the scale of block 0 is NaN or infinite/],
      // an F32 norm -> NaN
      [gguf, '', 'output_norm.weight', 8, [0, 0, 0xc0, 0x7f], /'output_norm\.weight': value 2 is NaN or infinite/],
      // a compressed-tensors group scale (F16) -> +Inf
      ['test/fixtures/fuzz/compressed-tensors/w4a16-model', 'model.safetensors', 'model.layers.0.mlp.up_proj.weight_scale', 6, [0x00, 0x7c], /up_proj.*: group scale 3 is NaN or infinite/],
    ];
    for (const [seed, file, tensor, at, bytes, message] of cases) {
      const input = await patched(seed, file, tensor, at, bytes);
      const e = await rejected(loadModel(input, { contextSize: 8 }));
      expect(e.code, tensor).to.equal('ERR_VALUE');
      expect(e.message, tensor).to.match(message);
    }
    // The unpatched seed loads and gives finite logits (the check refuses only what is bad).
    const m = await loadModel(path.join(ROOT, gguf), { contextSize: 8 });
    try {
      const logits = await m.forward([1, 2]);
      expect(logits.length).to.equal(m.hyperparameters.vocabSize);
      expect(logits.every((x) => Number.isFinite(x))).to.equal(true);
    } finally {
      await m.dispose();
    }
  });
});
