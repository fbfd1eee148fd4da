// llama.cpp importance-matrix files: the legacy .dat files llama-imatrix
// (c392e50) wrote for the fixture models, GGUF imatrix files built here
// with the independent test writer, hostile variants of both (fuzzed), and
// their use in compressModel (per rule, or none).
import { expect } from 'chai';
import * as fc from 'fast-check';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { imatrixWeights, parseImatrixDat, readImatrix, SlimTensorError } from '../lib/index';
import { compressModel } from '../lib/pipeline/compress';
import { rejected } from './support/assert';
import { datValues, parseDatByHand } from './support/imatrix-dat';
import { writeGGUF, GGML, type WTensor } from './support/gguf-writer';
import { writeLlamaGguf } from './support/llama-gguf';
import { FIXTURE_MODELS, FIXTURES, fixtureImatrixArg, tensorHashes, type Manifest } from './support/llama-quantize-fixtures';

const RUNS = Number(process.env.FUZZ_RUNS ?? 120);

/** A legacy file from entries (name, ncall, values) and an optional trailer. */
function dat(entries: [string, number, number[]][], trailer?: [number, string]): Buffer {
  const parts: Buffer[] = [];
  const i32 = (v: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    return b;
  };
  parts.push(i32(entries.length));
  for (const [name, ncall, values] of entries) {
    const nb = Buffer.from(name);
    parts.push(i32(nb.length), nb, i32(ncall), i32(values.length), Buffer.from(Float32Array.from(values).buffer));
  }
  if (trailer !== undefined) {
    const d = Buffer.from(trailer[1]);
    parts.push(i32(trailer[0]), i32(d.length), d);
  }
  return Buffer.concat(parts);
}

function f32(values: number[]): Uint8Array {
  return new Uint8Array(Float32Array.from(values).buffer);
}

/** A GGUF imatrix: general.type, datasets, chunk count/size and the given tensors. */
function ggufImatrix(tensors: WTensor[], kv: Parameters<typeof writeGGUF>[0]['kv'] = undefined): Uint8Array {
  return writeGGUF({
    kv: kv ?? [
      ['general.type', { type: 'string', value: 'imatrix' }],
      ['imatrix.datasets', { type: 'array', itemType: 'string', value: [{ type: 'string', value: 'wiki.train.raw' }, { type: 'string', value: 'code.txt' }] }],
      ['imatrix.chunk_count', { type: 'u32', value: 120 }],
      ['imatrix.chunk_size', { type: 'u32', value: 512 }],
    ],
    tensors,
  }).bytes;
}

describe('imatrix files', function () {
  this.timeout(120_000);
  let tmp: string;
  const write = async (name: string, bytes: Uint8Array): Promise<string> => {
    const f = path.join(tmp, name);
    await fsp.writeFile(f, bytes);
    return f;
  };

  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-imatrix-'));
  });
  after(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  it("reads llama-imatrix's legacy .dat files: entries, weights = values / ncall, chunks and dataset", async () => {
    for (const model of ['a', 'b'] as const) {
      const file = path.join(FIXTURES, `${model}.imatrix.dat`);
      const m = await readImatrix(file);
      const byHand = parseDatByHand(await fsp.readFile(file));
      const layers = FIXTURE_MODELS[model].layers;
      // q, k, v, output, gate, up, down of every block; llama-imatrix skips the head by default
      expect(m.entries.size, model).to.equal(7 * layers);
      expect(byHand.entries.length).to.equal(m.entries.size);
      expect(m.source).to.deep.equal({ path: file, format: 'dat' });
      expect(m.datasets).to.deep.equal(['calibration.txt']);
      expect(m.chunkCount).to.equal(byHand.chunks).and.be.above(1);
      expect(m.chunkSize).to.equal(undefined);
      for (const entry of byHand.entries) {
        const { name, ncall } = entry;
        const values = datValues(entry);
        const e = m.entries.get(name);
        expect(e, name).to.not.equal(undefined);
        expect(e?.cols).to.equal(values.length);
        expect(e?.matrices).to.equal(1);
        // llama-quantize: value / ncall in float
        const w = imatrixWeights(e as NonNullable<typeof e>);
        expect(Array.from(w)).to.deep.equal(Array.from(values, (v) => Math.fround(v / ncall)));
      }
      expect([...m.entries.keys()].filter((n) => n.startsWith('blk.0.')).sort()).to.deep.equal(['attn_k', 'attn_output', 'attn_q', 'attn_v', 'ffn_down', 'ffn_gate', 'ffn_up'].map((s) => `blk.0.${s}.weight`));
    }
  });

  it('reads a legacy file without the trailer, and ncall 0 as values taken as they are', () => {
    const m = parseImatrixDat(dat([['w', 0, [2, 4]], ['v', 4, [2, 4]]]), 'x.dat');
    expect(m.chunkCount).to.equal(0);
    expect(m.datasets).to.deep.equal([]);
    expect(Array.from(imatrixWeights(m.entries.get('w') as never))).to.deep.equal([2, 4]);
    expect(Array.from(imatrixWeights(m.entries.get('v') as never))).to.deep.equal([0.5, 1]);
  });

  it('reads GGUF imatrix files: in_sum2 / counts per matrix, 1 where a matrix saw nothing', async () => {
    const file = await write(
      'im.gguf',
      ggufImatrix([
        { name: 'blk.0.ffn_down_exps.weight.in_sum2', dims: [4, 2], typeId: GGML.F32, data: f32([3, 6, 9, 12, 5, 5, 5, 5]) },
        { name: 'blk.0.ffn_down_exps.weight.counts', dims: [1, 2], typeId: GGML.F32, data: f32([3, 0]) },
        // newer files add Σx as `.in_sum`: ignored
        { name: 'blk.0.ffn_down_exps.weight.in_sum', dims: [4, 2], typeId: GGML.F32, data: f32([1, 1, 1, 1, 1, 1, 1, 1]) },
        { name: 'blk.0.attn_q.weight.in_sum2', dims: [4], typeId: GGML.F32, data: f32([1, 2, 3, 4]) },
        { name: 'blk.0.attn_q.weight.counts', dims: [1], typeId: GGML.F32, data: f32([2]) },
      ]),
    );
    const m = await readImatrix(file);
    expect(m.source).to.deep.equal({ path: file, format: 'gguf' });
    expect(m.datasets).to.deep.equal(['wiki.train.raw', 'code.txt']);
    expect(m.chunkCount).to.equal(120);
    expect(m.chunkSize).to.equal(512);
    expect([...m.entries.keys()]).to.deep.equal(['blk.0.ffn_down_exps.weight', 'blk.0.attn_q.weight']);
    const e = m.entries.get('blk.0.ffn_down_exps.weight') as NonNullable<ReturnType<typeof m.entries.get>>;
    expect([e.cols, e.matrices]).to.deep.equal([4, 2]);
    expect(Array.from(imatrixWeights(e))).to.deep.equal([1, 2, 3, 4, 1, 1, 1, 1]);
    expect(Array.from(imatrixWeights(m.entries.get('blk.0.attn_q.weight') as never))).to.deep.equal([0.5, 1, 1.5, 2]);
  });

  it('rejects broken GGUF imatrix files with ERR_FORMAT naming the file and the tensor', async () => {
    const sums = (dims: number[], typeId: number = GGML.F32, data = f32(Array(dims.reduce((a, d) => a * d, 1)).fill(1))): WTensor => ({ name: 'w.in_sum2', dims, typeId, data });
    const counts = (dims: number[], data = f32(Array(dims.reduce((a, d) => a * d, 1)).fill(1))): WTensor => ({ name: 'w.counts', dims, typeId: GGML.F32, data });
    const cases: [string, Uint8Array, string][] = [
      ['model', ggufImatrix([sums([4])], [['general.architecture', { type: 'string', value: 'llama' }]]), 'not "imatrix"'],
      ['alone', ggufImatrix([sums([4, 2])]), "has no 'w.counts'"],
      ['orphan', ggufImatrix([counts([1, 2])]), "has no 'w.in_sum2'"],
      ['f16', ggufImatrix([sums([4], GGML.F16, new Uint8Array(8)), counts([1])]), 'must be F32'],
      ['mismatch', ggufImatrix([sums([4, 2]), counts([1, 3])]), 'expected [1, 2]'],
      ['3d', ggufImatrix([sums([4, 2, 2]), counts([1, 2])]), 'expected [columns, matrices]'],
      ['negative', ggufImatrix([sums([2], GGML.F32, f32([1, -1])), counts([1])]), 'in_sum2[1] is -1'],
      ['nan', ggufImatrix([sums([2]), counts([1], f32([NaN]))]), 'counts[0] is NaN'],
      ['empty', ggufImatrix([]), 'nothing to weigh'],
      ['datasets', ggufImatrix([sums([2]), counts([1])], [['general.type', { type: 'string', value: 'imatrix' }], ['imatrix.datasets', { type: 'u32', value: 3 }]]), 'imatrix.datasets must be'],
      ['truncated', ggufImatrix([sums([2]), counts([1])]).subarray(0, 60), 'imatrix'],
    ];
    for (const [name, bytes, msg] of cases) {
      const file = await write(`${name}.gguf`, bytes);
      const e = await rejected(readImatrix(file));
      expect(e.code, name).to.equal('ERR_FORMAT');
      expect(e.message, name).to.include(`imatrix ${file}`).and.include(msg);
    }
  });

  it('rejects broken legacy files with ERR_FORMAT naming the entry', () => {
    const ok = dat([['blk.0.attn_q.weight', 2, [1, 2, 3]]], [5, 'data.txt']);
    expect(parseImatrixDat(ok, 'ok.dat').entries.size).to.equal(1);
    const cases: [Buffer | Uint8Array, string][] = [
      [Buffer.alloc(0), 'the file ends'],
      [dat([]), 'entry count 0'],
      [Buffer.from(Int32Array.of(1 << 30).buffer), 'entry count 1073741824'],
      [dat([['', 1, [1, 1, 1, 1]]]), 'name length 0'],
      [dat([['w', -1, [1]]]), 'ncall -1 is negative'],
      [dat([['wwwwwwww', 1, []]]), '0 values'],
      [dat([['w', 1, [1]], ['w', 1, [2]]]), "'w' appears twice"],
      [dat([['w', 1, [1, NaN]]]), 'value[1] is NaN'],
      [dat([['w', 1, [Infinity]]]), 'value[0] is Infinity'],
      [dat([['w', 1, [-2]]]), 'value[0] is -2'],
      [dat([['w', 1, [1]]], [-3, 'x']), 'chunk count -3'],
      [Buffer.concat([dat([['w', 1, [1]]], [3, 'x']), Buffer.from([0])]), '1 bytes follow'],
      [Buffer.concat([dat([['w', 1, [1]]]), Buffer.from([7, 0])]), 'the file ends'],
      [ok.subarray(0, ok.length - 3), 'dataset name length 8 does not fit'],
      [ok.subarray(0, 29), 'while reading ncall'],
    ];
    const badName = dat([['ww', 1, [1]]]);
    badName[8] = 0xff;
    cases.push([badName, 'not valid UTF-8']);
    for (const [bytes, msg] of cases) {
      let e: unknown;
      try {
        parseImatrixDat(bytes, 'bad.dat');
      } catch (x) {
        e = x;
      }
      expect(e, msg).to.be.instanceOf(SlimTensorError);
      expect((e as SlimTensorError).code, msg).to.equal('ERR_FORMAT');
      expect((e as SlimTensorError).message, msg).to.include('imatrix bad.dat:').and.include(msg);
    }
  });

  it('refuses files over maxBytes before reading them', async () => {
    const file = await write('big.dat', dat([['w', 1, Array(1000).fill(1)]]));
    const e = await rejected(readImatrix(file, { maxBytes: 1000 }));
    expect(e.code).to.equal('ERR_FORMAT');
    expect(e.message).to.include('maxBytes');
    expect((await rejected(readImatrix(file, { maxBytes: 0 }))).code).to.equal('ERR_VALUE');
  });

  it('fuzzed legacy and GGUF files: read, or ERR_FORMAT', async () => {
    const legacy = await fsp.readFile(path.join(FIXTURES, 'b.imatrix.dat'));
    const gguf = ggufImatrix([
      { name: 'a.in_sum2', dims: [8, 2], typeId: GGML.F32, data: f32(Array(16).fill(2)) },
      { name: 'a.counts', dims: [1, 2], typeId: GGML.F32, data: f32([1, 2]) },
    ]);
    const file = path.join(tmp, 'fuzz');
    let failures = 0;
    const mutation = fc.record({ pos: fc.nat(), value: fc.integer({ min: 0, max: 255 }), wide: fc.boolean() });
    for (const base of [Buffer.from(legacy.subarray(0, 4096)), Buffer.from(gguf)]) {
      await fc.assert(
        fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 4 }), fc.option(fc.nat({ max: base.length }), { freq: 4 }), async (ms, cut) => {
          const b = Buffer.from(base);
          for (const m of ms) {
            const p = m.pos % b.length;
            // bytes, or a whole little-endian word set to a large value (lengths, counts)
            if (m.wide && p + 4 <= b.length) b.writeUInt32LE(((m.value << 24) | 0xffff) >>> 0, p);
            else b[p] = m.value;
          }
          await fsp.writeFile(file, cut === null ? b : b.subarray(0, cut));
          try {
            await readImatrix(file);
          } catch (e) {
            if (!(e instanceof SlimTensorError) || e.code !== 'ERR_FORMAT') throw e;
            failures++;
          }
        }),
        { numRuns: RUNS },
      );
    }
    expect(failures).to.be.above(RUNS / 4);
  });

  describe('in compressModel', () => {
    let input: string;
    let manifest: Manifest;
    const hashesOf = (preset: string, imatrix: boolean): Map<string, string> => new Map(manifest.outputs.find((o) => o.model === 'a' && o.preset === preset && o.imatrix === imatrix)?.tensors.map((t) => [t[0], t[2]]) ?? []);

    before(async () => {
      input = path.join(tmp, 'a.gguf');
      await writeLlamaGguf(input, FIXTURE_MODELS.a);
      manifest = JSON.parse(await fsp.readFile(path.join(FIXTURES, 'manifest.json'), 'utf8')) as Manifest;
    });

    it('per rule: importance { file } and importance false', async () => {
      const out = path.join(tmp, 'rules.gguf');
      const r = await compressModel({
        input,
        output: out,
        recipe: {
          extends: 'q4_k_m',
          rules: [
            { match: 'blk.0.*', method: 'quantize', options: { mix: 'q4_k_m', importance: false } },
            { match: '*', method: 'quantize', options: { mix: 'q4_k_m', importance: { file: path.join(FIXTURES, 'a.imatrix.dat') } } },
          ],
        },
      });
      const withIm = hashesOf('q4_k_m', true);
      const without = hashesOf('q4_k_m', false);
      for (const [name, type, hash] of await tensorHashes(out)) {
        if (type === 'F32') continue;
        // llama.cpp's mix decides with the imatrix in view; blk.0's tensors are quantized without it
        expect(hash, name).to.equal((name.startsWith('blk.0.') ? without : withIm).get(name));
      }
      expect(r.imatrix?.used).to.equal(21);
      expect(r.tensors.filter((t) => t.name.startsWith('blk.0.') && t.method === 'quantize').every((t) => t.imatrix === undefined)).to.equal(true);
    });

    it('an imatrix of another model: ERR_SHAPE naming the tensor; a missing file: ENOENT', async () => {
      const wrong = await write('wrong.dat', dat([['blk.1.attn_q.weight', 1, [1, 2, 3]]]));
      const e = await rejected(compressModel({ input, output: path.join(tmp, 'x.gguf'), recipe: 'q4_k_m', imatrix: wrong }));
      expect(e.code).to.equal('ERR_SHAPE');
      expect(e.message).to.include("'blk.1.attn_q.weight'").and.include('3 values').and.include(wrong);
      const missing = await compressModel({ input, output: path.join(tmp, 'x.gguf'), recipe: 'q4_k_m', imatrix: path.join(tmp, 'nope.dat') }).catch((x: unknown) => x);
      expect((missing as NodeJS.ErrnoException).code).to.equal('ENOENT');
      await fsp.access(path.join(tmp, 'x.gguf')).then(
        () => expect.fail('no output may be left'),
        () => undefined,
      );
      expect(fixtureImatrixArg('a')).to.equal('test/fixtures/llama-quantize/a.imatrix.dat');
    });
  });
});
