// `slimtensor calibrate` against llama.cpp's llama-imatrix on stories260K.
// The reference, test/fixtures/calibrate/stories260K.imatrix.dat, was made
// from the package root with llama.cpp c392e50:
//
//   llama-imatrix -m models/stories260K.gguf -f test/fixtures/calibrate/stories.txt \
//     -c 128 -t 1 -ctk f32 -ctv f32 -o test/fixtures/calibrate/stories260K.imatrix.dat
//
// (an f32 KV cache, as slimtensor's runtime keeps it; see the fixture's
// README). Every importance weight must be within 1e-3 relative of it, in
// the whole-model and the block-by-block mode, .dat and GGUF; then the
// errors, run in-process (a child process per case would cost seconds).
import { expect } from 'chai';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { imatrixWeights, readImatrix, writeTokenFile, type ImportanceMatrix } from '../lib/index';
import { calibrateCommand } from '../lib/cli/calibrate-command';
import { rejected } from './support/assert';
import { runCli } from './support/cli';

const MODEL = 'models/stories260K.gguf';
const TEXT = 'test/fixtures/calibrate/stories.txt';
const REFERENCE = path.join(__dirname, 'fixtures', 'calibrate', 'stories260K.imatrix.dat');

/** The largest relative difference of the importance weights from the reference's, over the same entries. */
function worstRelative(m: ImportanceMatrix, ref: ImportanceMatrix): number {
  expect([...m.entries.keys()].sort()).to.deep.equal([...ref.entries.keys()].sort());
  let worst = 0;
  for (const [name, e] of ref.entries) {
    const want = imatrixWeights(e);
    const got = imatrixWeights(m.entries.get(name) as never);
    expect(got.length, name).to.equal(want.length);
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs((got[i] as number) - (want[i] as number)) / (want[i] as number));
  }
  return worst;
}

describe('slimtensor calibrate', function () {
  this.timeout(60_000);
  let tmp: string;
  let ref: ImportanceMatrix;
  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-calibrate-'));
    ref = await readImatrix(REFERENCE);
  });
  after(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  it("equals llama-imatrix within 1e-3 relative: whole model to .dat, block by block to GGUF", async () => {
    const dat = path.join(tmp, 'whole.dat');
    const r1 = await runCli(['calibrate', MODEL, '--text', TEXT, '--ctx', '128', '--imatrix', dat]);
    expect(r1.code, r1.stderr).to.equal(0);
    expect(r1.stdout).to.match(/run whole/).and.match(/16 chunks of 128 tokens \(2048 tokens\)/).and.match(/35 tensors/);
    expect(r1.stderr).to.match(/chunk 16\/16/);
    const a = await readImatrix(dat);
    expect(worstRelative(a, ref)).to.be.below(1e-3);
    expect([a.chunkCount, a.datasets]).to.deep.equal([16, [TEXT]]);
    // the same ncall and layout as llama-imatrix's file
    expect((await fsp.stat(dat)).size).to.equal((await fsp.stat(REFERENCE)).size);

    const gguf = path.join(tmp, 'seq.gguf');
    const r2 = await runCli(['calibrate', MODEL, '--text', TEXT, '--ctx', '128', '-o', gguf, '--sequential', '--json', '--quiet']);
    expect(r2.code, r2.stderr).to.equal(0);
    expect(r2.stderr).to.equal('');
    const j = JSON.parse(r2.stdout) as Record<string, unknown>;
    expect([j.mode, j.format, j.chunks, j.ctx, j.tokens, j.entries]).to.deep.equal(['sequential', 'gguf', 16, 128, 2048, 35]);
    const b = await readImatrix(gguf);
    expect(worstRelative(b, ref)).to.be.below(1e-3);
    expect([b.chunkCount, b.chunkSize, b.datasets]).to.deep.equal([16, 128, [TEXT]]);
    expect(Array.from((b.entries.get('blk.3.ffn_down.weight') as { counts: Float32Array }).counts)).to.deep.equal([2048]);
  });

  it('token files, the memory budget choosing block by block, ctx defaulting to the model context', async () => {
    const out = path.join(tmp, 'tok.gguf');
    const r = JSON.parse(await calibrateCommand({ model: MODEL, tokens: 'models/stories260K-eval.tokens', chunks: 3, imatrix: out, memoryBudget: 1024, json: true })) as Record<string, unknown>;
    expect([r.mode, r.chunks, r.ctx, r.entries, r.budget]).to.deep.equal(['sequential', 3, 128, 35, 1024]);
    const whole = path.join(tmp, 'tok-whole.gguf');
    await calibrateCommand({ model: MODEL, tokens: 'models/stories260K-eval.tokens', chunks: 3, imatrix: whole });
    const [x, y] = [await readImatrix(out), await readImatrix(whole)];
    for (const [n, e] of x.entries) expect(Array.from(e.sums), n).to.deep.equal(Array.from((y.entries.get(n) as { sums: Float32Array }).sums));
  });

  it('errors: short text, tokens out of range, an existing output, no input, a ctx over the context — nothing written', async () => {
    const short = path.join(tmp, 'short.txt');
    await fsp.writeFile(short, 'Once upon a time.');
    const bad = path.join(tmp, 'bad.tokens');
    await writeTokenFile(bad, Array.from({ length: 256 }, (_, i) => (i === 200 ? 9999 : 1)));
    const out = path.join(tmp, 'never.gguf');
    const cases: [Parameters<typeof calibrateCommand>[0], RegExp][] = [
      [{ model: MODEL, text: short, imatrix: out }, /short\.txt: the calibration text tokenizes to \d+ tokens, fewer than one chunk of 128/],
      [{ model: MODEL, text: short, imatrix: out, sequential: true }, /fewer than one chunk of 128/],
      [{ model: MODEL, tokens: bad, imatrix: out }, /bad\.tokens: token 200 is 9999, outside the vocabulary \(0..511\)/],
      [{ model: MODEL, imatrix: out }, /give one of --text FILE or --tokens FILE/],
      [{ model: MODEL, text: TEXT, ctx: 256, imatrix: out }, /--ctx 256 is longer than the model's context of 128/],
      [{ model: MODEL, text: TEXT, imatrix: REFERENCE }, /already exists; pass --force/],
    ];
    for (const [args, re] of cases) expect((await rejected(calibrateCommand(args))).message).to.match(re);
    expect(await fsp.readdir(tmp)).to.not.include('never.gguf');
    expect((await readImatrix(REFERENCE)).entries.size).to.equal(35);
  });
});
