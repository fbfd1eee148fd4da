import { expect } from 'chai';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gguf as hfGguf } from '@huggingface/gguf';
import { parseSize } from '../lib/cli/model-commands';
import type { CompressReport } from '../lib/pipeline/compress';
import type { ComparisonReport } from '../lib/pipeline/compare';
import { pruneSync, Tensor } from '../lib/index';
import { SafetensorsModel } from '../lib/formats/safetensors';
import { f16ToF32 } from '../lib/half';
import { runCli } from './support/cli';
import { decodeSparse24Bitmask } from './support/ct-oracle';
import { f32ToF16Bits, GGML, writeGGUF } from './support/gguf-writer';
import { hfTensors, listing, writeHFFolder } from './support/models';
import { writeLlamaGguf } from './support/llama-gguf';
import { FIXTURE_MODELS, FIXTURES, fixtureImatrixArg } from './support/llama-quantize-fixtures';

const ROOT = path.join(__dirname, '..');
const MODEL = path.join(ROOT, 'models', 'stories260K.gguf');

const cli = runCli;

describe('slimtensor CLI: model commands', function () {
  this.timeout(120_000);
  let tmp: string;
  let hf: string;

  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-cli-'));
    hf = path.join(tmp, 'hf');
    await writeHFFolder(hf, hfTensors(), 'F16', 2);
  });
  after(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  it('parses sizes', () => {
    expect(parseSize('512MiB', 'x')).to.equal(512 * 2 ** 20);
    expect(parseSize('2GB', 'x')).to.equal(2e9);
    expect(parseSize('1.5k', 'x')).to.equal(1500);
    expect(parseSize(4096, 'x')).to.equal(4096);
    expect(() => parseSize('lots', 'x')).to.throw('not a size');
  });

  it('inspect: metadata and the tensor table of a GGUF file and of a Hugging Face folder; --json', async () => {
    const t = await cli(['inspect', MODEL]);
    expect(t.code, t.stderr).to.equal(0);
    expect(t.stdout).to.include('GGUF v3').and.include('48 tensors').and.include("general.architecture (string) = \"llama\"");
    expect(t.stdout).to.match(/^blk\.0\.ffn_down\.weight\s+F32\s+\[64, 172\]\s+43\.0 KiB$/m);
    const j = await cli(['inspect', MODEL, '--json']);
    const doc = JSON.parse(j.stdout) as { format: string; tensors: { name: string; dtype: string; shape: number[]; bytes: number }[]; metadata: Record<string, unknown> };
    expect(doc.format).to.equal('gguf');
    expect(doc.tensors).to.have.length(48);
    expect(doc.tensors[0]).to.deep.equal({ name: 'token_embd.weight', dtype: 'F32', shape: [512, 64], bytes: 131072 });
    expect(doc.metadata['general.architecture']).to.equal('llama');
    const h = await cli(['inspect', hf, '--json']);
    const hd = JSON.parse(h.stdout) as { format: string; shards: string[]; tensors: { name: string; dtype: string }[] };
    expect(hd.format).to.equal('safetensors');
    expect(hd.shards).to.have.length(2);
    expect(hd.tensors.map((x) => x.dtype)).to.deep.equal(new Array(8).fill('F16'));
  });

  it('quantize stories260K with each GGUF preset: exit 0, a GGUF that @huggingface/gguf reads, a JSON report', async () => {
    for (const preset of ['q4_0', 'q4_1', 'q8_0']) {
      const out = path.join(tmp, `stories-${preset}.gguf`);
      const r = await cli(['quantize', MODEL, '-o', out, '--preset', preset, '--json', '--threads', '1']);
      expect(r.code, r.stderr).to.equal(0);
      const report = JSON.parse(r.stdout) as CompressReport;
      expect(report.recipe).to.equal(preset);
      expect(report.output.format).to.equal('gguf');
      expect(report.ratio).to.be.above(2.5);
      // ffn_down's rows of 172 fit no block: F16; the head's Q6_K needs rows of 256: Q8_0 (already Q8_0 for q8_0)
      expect(report.fallbacks).to.have.length(preset === 'q8_0' ? 5 : 6);
      // Progress went to stderr as plain lines (not a TTY here).
      expect(r.stderr).to.match(/^\[\d+\/48\] \S+ \d+ MB\/s ETA/m);
      const g = await hfGguf(out, { allowLocalFile: true });
      expect(g.tensorInfos).to.have.length(48);
      expect((g.metadata as Record<string, unknown>)['general.file_type']).to.equal({ q4_0: 2, q4_1: 3, q8_0: 7 }[preset]);
      expect(g.tensorInfos.find((t) => t.name === 'blk.0.attn_q.weight')?.dtype).to.equal({ q4_0: GGML.Q4_0, q4_1: GGML.Q4_1, q8_0: GGML.Q8_0 }[preset]);
    }
  });

  it('quantize --no-error: the same bytes without the error pass; the report has no errors and says where the time went', async () => {
    const withError = path.join(tmp, 'stories-err.gguf');
    const without = path.join(tmp, 'stories-noerr.gguf');
    const a = await cli(['quantize', MODEL, '-o', withError, '-p', 'q8_0', '--json', '--quiet']);
    const b = await cli(['quantize', MODEL, '-o', without, '-p', 'q8_0', '--json', '--quiet', '--no-error']);
    expect(a.code, a.stderr).to.equal(0);
    expect(b.code, b.stderr).to.equal(0);
    const ra = JSON.parse(a.stdout) as CompressReport;
    const rb = JSON.parse(b.stdout) as CompressReport;
    const quantized = (r: CompressReport) => r.tensors.filter((t) => t.method === 'quantize');
    expect(quantized(ra)).to.not.be.empty;
    for (const t of quantized(ra)) expect(t.error?.rmse, t.name).to.be.above(0);
    for (const t of rb.tensors) expect(t.error, t.name).to.equal(undefined);
    expect(Buffer.compare(await fsp.readFile(withError), await fsp.readFile(without))).to.equal(0);
    expect(ra.stages.errorMs).to.be.above(0);
    expect(rb.stages.errorMs).to.equal(0);
    for (const r of [ra, rb]) {
      expect(Object.keys(r.stages).sort()).to.deep.equal(['admitWaitMs', 'compressMs', 'computeWaitMs', 'errorMs', 'readMs', 'writeMs', 'writeWaitMs']);
      expect(r.stages.readMs).to.be.above(0);
      expect(r.stages.compressMs).to.be.above(0);
      expect(r.stages.writeMs).to.be.above(0);
    }
  });

  it('quantize --preset q4_k_m --imatrix: llama-quantize --imatrix\'s bytes; inspect names the file type; report dequantizes the K-quants', async () => {
    const input = path.join(tmp, 'a.gguf');
    await writeLlamaGguf(input, FIXTURE_MODELS.a);
    const out = path.join(tmp, 'a-q4_k_m.gguf');
    // the path as llama-quantize was given it (relative to the package root, the CLI's cwd here): it is written into the file
    const r = await cli(['quantize', input, '-o', out, '-p', 'q4_k_m', '--imatrix', fixtureImatrixArg('a'), '-q']);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.include(`imatrix ${fixtureImatrixArg('a')}: 28 tensors quantized with it, 2 not covered`);
    expect(Buffer.compare(await fsp.readFile(out), await fsp.readFile(path.join(FIXTURES, 'a.q4_k_m.imatrix.gguf')))).to.equal(0);
    const i = await cli(['inspect', out]);
    expect(i.stdout).to.include('file type 15 (Q4_K_M); tensor types: Q6_K ×5, F32 ×9, Q4_K ×25');
    const rep = await cli(['report', input, out, '--json']);
    expect(rep.code, rep.stderr).to.equal(0);
    const c = JSON.parse(rep.stdout) as ComparisonReport;
    expect(c.tensors.find((t) => t.name === 'blk.3.ffn_down.weight')).to.deep.include({ originalType: 'F16', compressedType: 'Q6_K' });
    // Q6_K loses less than Q4_K; both far below the weights' RMS of 0.02
    const rmse = (name: string): number => c.tensors.find((t) => t.name === name)?.error?.rmse ?? NaN;
    expect(rmse('blk.3.ffn_down.weight')).to.be.below(rmse('blk.0.ffn_down.weight'));
    expect(rmse('blk.0.ffn_down.weight')).to.be.within(1e-4, 3e-3);
  });

  it('quantize a Hugging Face folder to compressed-tensors (for vLLM, --target transformers); text report; --force to replace; --quiet', async () => {
    const out = path.join(tmp, 'w4');
    const r = await cli(['quantize', hf, '-o', out, '-p', 'w4a16', '--shard-size', '40kB']);
    expect(r.code, r.stderr).to.equal(0);
    // this model's layers (rows of 96, merged q/k outputs of 160) fit no vLLM Marlin kernel: all kept, and the report says why, one line per tensor
    expect(r.stdout).to.include('recipe w4a16').and.include('fallbacks').and.include("vLLM's Marlin kernel needs").and.include('nothing was quantized');
    expect(r.stdout).to.include('compressed-tensors for vllm: LlamaForCausalLM, Linear layers by the architecture table; ignore: (none)');
    expect(r.stdout).to.match(/^ {2}model\.layers\.0\.mlp\.down_proj\.weight \[128, 96\]: kept for vLLM: vLLM's Marlin kernel needs outputs a multiple of 64 and inputs a multiple of 128: 96 inputs are not a multiple of 128$/m);
    expect(r.stdout).to.match(/^ {2}model\.embed_tokens\.weight \[64, 128\]: rule /m);
    expect(await listing(out)).to.include.members(['config.json', 'tokenizer.json', 'model.safetensors.index.json']);
    const again = await cli(['quantize', hf, '-o', out, '-p', 'w4a16']);
    expect(again.code).to.equal(1);
    expect(again.stderr).to.include('already exists').and.include('--force');
    const forced = await cli(['quantize', hf, '-o', out, '-p', 'w4a16-asym', '--target', 'transformers', '--force', '--quiet']);
    expect(forced.code, forced.stderr).to.equal(0);
    expect(forced.stderr).to.equal('');
    expect(forced.stdout).to.include('int4 g128 asym').and.include('compressed-tensors for transformers');
    const cfg = JSON.parse(await fsp.readFile(path.join(out, 'config.json'), 'utf8')) as { quantization_config: { config_groups: { group_0: { weights: { symmetric: boolean } } } } };
    expect(cfg.quantization_config.config_groups.group_0.weights.symmetric).to.equal(false);
  });

  it('compress --recipe r.json; compress --preset; report text, --json and --html', async () => {
    const recipe = path.join(tmp, 'r.json');
    await fsp.writeFile(recipe, JSON.stringify({ name: 'mixed', extends: 'q4_0', rules: [{ match: 'blk.*.attn_*.weight', method: 'quantize', options: { format: 'q8_0' } }] }));
    const out = path.join(tmp, 'mixed.gguf');
    const r = await cli(['compress', MODEL, '-o', out, '--recipe', recipe, '--json', '-q']);
    expect(r.code, r.stderr).to.equal(0);
    const report = JSON.parse(r.stdout) as CompressReport;
    expect(report.recipe).to.equal('mixed');
    expect(report.tensors.find((t) => t.name === 'blk.2.attn_k.weight')?.to).to.equal('Q8_0');
    expect(report.tensors.find((t) => t.name === 'blk.2.ffn_up.weight')?.to).to.equal('Q4_0');
    expect(report.tensors.find((t) => t.name === 'blk.2.attn_k.weight')?.rule).to.equal('rule #1');

    const text = await cli(['report', MODEL, out]);
    expect(text.code, text.stderr).to.equal(0);
    expect(text.stdout).to.match(/^blk\.2\.attn_k\.weight\s+F32 -> Q8_0\s+\[32, 64\]/m);
    expect(text.stdout).to.match(/^blk\.0\.ffn_down\.weight\s+F32 -> F16/m);
    const html = path.join(tmp, 'report.html');
    const j = await cli(['report', MODEL, out, '--json', '--html', html]);
    expect(j.code, j.stderr).to.equal(0);
    const cmp = JSON.parse(j.stdout) as ComparisonReport;
    expect(cmp.tensors).to.have.length(48);
    const k = cmp.tensors.find((t) => t.name === 'blk.2.attn_k.weight');
    expect(k?.error?.sqnrDb).to.be.above(35);
    expect(cmp.tensors.find((t) => t.name === 'blk.2.attn_norm.weight')?.error?.sqnrDb).to.equal('Infinity');
    const page = await fsp.readFile(html, 'utf8');
    expect(page).to.include('<svg').and.include('code grid');
    expect(page).not.to.match(/(src|href)\s*=|<script/i);

    // a compressed-tensors folder against its original
    const ct = path.join(tmp, 'w8');
    expect((await cli(['compress', hf, '-o', ct, '--preset', 'w8a16', '--target', 'transformers', '-q'])).code).to.equal(0);
    const rc = await cli(['report', hf, ct]);
    expect(rc.code, rc.stderr).to.equal(0);
    expect(rc.stdout).to.match(/^model\.layers\.0\.self_attn\.q_proj\.weight\s+F16 -> int8 g128 sym/m);
  });

  it('prune stories260K (GGUF): exit 0, a GGUF with the pruned matrices dense, a report saying so; report compares it', async () => {
    const out = path.join(tmp, 'stories-2of4.gguf');
    const r = await cli(['prune', MODEL, '-o', out, '--json', '--threads', '1']);
    expect(r.code, r.stderr).to.equal(0);
    const report = JSON.parse(r.stdout) as CompressReport;
    expect(report.recipe).to.equal('2of4');
    expect(report.output.format).to.equal('gguf');
    expect(report.tensors.filter((t) => t.to === '2:4 pruned F32')).to.have.length(35);
    expect(report.warnings.join('\n')).to.include('written dense').and.include('GGUF has no sparse tensor type');
    const g = await hfGguf(out, { allowLocalFile: true });
    expect(g.tensorInfos.map((t) => t.dtype)).to.deep.equal(new Array(48).fill(GGML.F32));
    const rep = await cli(['report', MODEL, out]);
    expect(rep.code, rep.stderr).to.equal(0);
    expect(rep.stdout).to.match(/^blk\.0\.attn_q\.weight\s+F32 -> F32\s+\[64, 64\]/m);
  });

  it('prune a Hugging Face folder: dense by default; --layout sparse-24-bitmask, which inspect lists with dense shapes and sizes and report decodes', async () => {
    const plain = path.join(tmp, 'hf-2of4-dense');
    const d = await cli(['prune', hf, '-o', plain]);
    expect(d.code, d.stderr).to.equal(0);
    expect(d.stdout).to.include('recipe 2of4').and.match(/^2:4 pruned F16\s+4\s/m).and.match(/^sparsity: 4 pruned tensors, 22528 weights zeroed; \d+\.\d % of all float weights written are zero$/m);
    expect(JSON.parse(await fsp.readFile(path.join(plain, 'config.json'), 'utf8'))).not.to.have.property('quantization_config');
    const out = path.join(tmp, 'hf-2of4');
    const r = await cli(['prune', hf, '-o', out, '--layout', 'sparse-24-bitmask']);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.include('recipe 2of4-bitmask').and.match(/^2:4 sparse-24-bitmask\s+4\s/m).and.include('which only older releases read');
    const ins = await cli(['inspect', out]);
    expect(ins.code, ins.stderr).to.equal(0);
    expect(ins.stdout).to.include('sparsity_config (config.json): sparse-24-bitmask 2:4').and.include('sparse-24-bitmask weights: 4');
    expect(ins.stdout).to.match(/^model\.layers\.0\.self_attn\.q_proj\s+F16\s+\[128, 128\]\s+18\.0 KiB\s+32\.0 KiB$/m);
    expect(ins.stdout).to.match(/^model\.layers\.0\.mlp\.down_proj\.bitmask\s+U8\s+\[128, 12\]/m);
    const j = JSON.parse((await cli(['inspect', out, '--json'])).stdout) as { sparse24: { module: string; shape: number[]; bytes: number; denseBytes: number }[] };
    expect(j.sparse24.map((w) => [w.module, w.shape])).to.deep.equal([
      ['model.layers.0.self_attn.q_proj', [128, 128]],
      ['model.layers.0.self_attn.k_proj', [32, 128]],
      ['model.layers.0.mlp.up_proj', [96, 128]],
      ['model.layers.0.mlp.down_proj', [128, 96]],
    ]);
    // report: errors from the decoded weights, checked against prune() of the original and an independent decode of the files
    const rep = await cli(['report', hf, out, '--json']);
    expect(rep.code, rep.stderr).to.equal(0);
    const cmp = JSON.parse(rep.stdout) as ComparisonReport;
    const t = hfTensors().find((x) => x.name === 'model.layers.0.mlp.up_proj.weight');
    const orig = Tensor.from(Uint16Array.from(t?.values ?? [], f32ToF16Bits), [96, 128], 'f16');
    const pruned = pruneSync(orig, { pattern: '2:4' }).tensor.data as Uint16Array;
    const m = await SafetensorsModel.open(out);
    const decoded = decodeSparse24Bitmask((await m.readTensor('model.layers.0.mlp.up_proj.compressed')).data as Uint16Array, (await m.readTensor('model.layers.0.mlp.up_proj.bitmask')).data as Uint8Array, 96, 128);
    await m.close();
    expect(Buffer.from(decoded.buffer)).to.deep.equal(Buffer.from(pruned.buffer, pruned.byteOffset, pruned.byteLength));
    let se = 0;
    const o = orig.data as Uint16Array;
    for (let i = 0; i < o.length; i++) se += (f16ToF32(o[i] as number) - f16ToF32(decoded[i] as number)) ** 2;
    const row = cmp.tensors.find((x) => x.name === 'model.layers.0.mlp.up_proj.weight');
    expect(row?.compressedType).to.equal('sparse-24-bitmask F16');
    expect(row?.error?.rmse).to.be.closeTo(Math.sqrt(se / o.length), 1e-9);
    const text = await cli(['report', hf, out]);
    expect(text.stdout).to.match(/^model\.layers\.0\.self_attn\.q_proj\.weight\s+F16 -> sparse-24-bitmask F16\s+\[128, 128\]/m);
  });

  it('prune --pattern 1:4 writes pruned dense tensors and says so; bad patterns are usage errors', async () => {
    const out = path.join(tmp, 'hf-1of4');
    const r = await cli(['prune', hf, '-o', out, '--pattern', '1:4', '--json', '-q']);
    expect(r.code, r.stderr).to.equal(0);
    const report = JSON.parse(r.stdout) as CompressReport;
    expect(report.recipe).to.equal('prune-1of4');
    expect(report.output.format).to.equal('safetensors');
    const q = report.tensors.find((x) => x.name === 'model.layers.0.self_attn.q_proj.weight');
    expect(q?.pruned).to.deep.equal({ pattern: '1:4', layout: 'dense', kept: 128 * 32, total: 128 * 128 });
    expect(report.warnings.join('\n')).to.include('4 pruned tensors (1:4) are written dense');
    for (const bad of ['5:4', 'two', '2:64']) {
      const u = await cli(['prune', hf, '-o', path.join(tmp, 'never'), '--pattern', bad]);
      expect(u.code, bad).to.equal(2);
      expect(u.stderr, bad).to.include('--pattern');
    }
    expect(await listing(tmp)).not.to.include('never');
  });

  it('exit codes: 2 for usage errors, 1 for failures (with the error code)', async () => {
    for (const args of [
      ['quantize', MODEL],
      ['quantize', MODEL, '-o', path.join(tmp, 'x.gguf'), '--preset', 'q5_k'],
      ['compress', MODEL, '-o', path.join(tmp, 'x.gguf')],
      ['lowrank', MODEL, '-o', path.join(tmp, 'x'), '--rank', '4', '--energy', '0.9'],
      ['quantize', MODEL, '-o', path.join(tmp, 'x.gguf'), '-p', 'q4_0', '--memory', 'lots'],
      ['report', MODEL],
    ]) {
      const r = await cli(args);
      expect(r.code, args.join(' ')).to.equal(2);
      expect(r.stderr, args.join(' ')).to.match(/^slimtensor: /);
    }
    const recipe = path.join(tmp, 'prune-and-quantize.json');
    await fsp.writeFile(recipe, JSON.stringify({ extends: '2of4', rules: [{ match: 'output.weight', method: 'quantize', options: { format: 'q8_0' } }] }));
    const both = await cli(['compress', MODEL, '-o', path.join(tmp, 'p'), '--recipe', recipe]);
    expect(both.code).to.equal(1);
    expect(both.stderr).to.include('pruning and quantizing in one recipe is not supported').and.include('[ERR_UNSUPPORTED]');
    const ggufFromHf = await cli(['quantize', hf, '-o', path.join(tmp, 'x.gguf'), '-p', 'q4_0']);
    expect(ggufFromHf.code).to.equal(1);
    // this folder's config.json lacks the hyper-parameters a GGUF needs
    expect(ggufFromHf.stderr).to.include('config.json: num_attention_heads is missing').and.include('[ERR_FORMAT]');
    const missing = await cli(['inspect', path.join(tmp, 'nope.gguf')]);
    expect(missing.code).to.equal(1);
    expect(missing.stderr).to.include('ENOENT');
    const notModel = await cli(['inspect', path.join(ROOT, 'package.json')]);
    expect(notModel.code).to.equal(1);
    expect(notModel.stderr).to.include('[ERR_FORMAT]');
    // Each output named above, and its staging file (.<name>.slimtensor-*.tmp), is absent.
    const left = await listing(tmp);
    for (const name of ['x.gguf', 'p', 'x']) {
      expect(left, `${name} left behind`).not.to.include(name);
      expect(left.filter((f) => f.startsWith(`.${name}.slimtensor-`)), `staging file of ${name} left behind`).to.deep.equal([]);
    }
  });

  it('Ctrl-C (SIGINT) mid-run: exit 130 and the output folder as it was', async function () {
    // A model big enough to take a while with the MSE search: 24 tensors of 512 x 1024 f32.
    const dir = path.join(tmp, 'sigint');
    await fsp.mkdir(dir);
    const data = new Uint8Array(512 * 1024 * 4);
    const dv = new DataView(data.buffer);
    for (let i = 0; i < 512 * 1024; i++) dv.setFloat32(i * 4, Math.sin(i) * 0.1, true);
    const input = path.join(dir, 'in.gguf');
    await fsp.writeFile(
      input,
      writeGGUF({
        kv: [['general.architecture', { type: 'string', value: 'llama' }]],
        tensors: Array.from({ length: 24 }, (_, i) => ({ name: `blk.${i}.ffn_up.weight`, dims: [1024, 512], typeId: GGML.F32, data })),
      }).bytes,
    );
    const before = await listing(dir);
    let sent = false;
    const r = await cli(['quantize', input, '-o', path.join(dir, 'out.gguf'), '-p', 'q4_0', '--search', 'mse', '--threads', '1', '--memory', '4MiB'], (text, child) => {
      if (!sent && /\[\d+\/24\]/.test(text)) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    expect(sent, r.stderr).to.equal(true);
    expect(r.code, r.stderr).to.equal(130);
    expect(r.stderr).to.include('interrupted');
    expect(await listing(dir)).to.deep.equal(before);
  });
});
