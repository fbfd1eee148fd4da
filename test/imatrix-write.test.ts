// Writing llama.cpp importance matrices (writeImatrix): the legacy .dat and
// the GGUF form, checked against llama-imatrix's own file for stories260K
// (test/fixtures/calibrate/README.md says how it was made), through our
// reader and a by-hand parse of the bytes, on random statistics, on bad
// input (nothing left behind), and — when SLIMTENSOR_LLAMA_QUANTIZE names
// a llama-quantize binary — in llama-quantize --imatrix itself.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import * as fc from 'fast-check';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { imatrixDatBytes, imatrixWeights, readImatrix, writeImatrix, type ImatrixData, type ImatrixEntry } from '../lib/index';
import { GGUFReader } from '../lib/formats/gguf';
import { rejected } from './support/assert';
import { parseDatByHand } from './support/imatrix-dat';
import { skip } from './support/skip';

const FIXTURES = path.join(__dirname, 'fixtures', 'calibrate');
const REFERENCE = path.join(FIXTURES, 'stories260K.imatrix.dat');
const MODEL = path.join(__dirname, '..', 'models', 'stories260K.gguf');

/** The legacy layout parsed on its own (test/support/imatrix-dat.ts): name → [ncall, value bytes], chunk count, dataset. */
function parseDat(b: Buffer): { entries: Map<string, [number, Buffer]>; chunks: number; dataset: string; end: number } {
  const d = parseDatByHand(b);
  return { ...d, entries: new Map(d.entries.map((e) => [e.name, [e.ncall, e.bytes]])) };
}

function entry(cols: number, sums: number[], counts: number[]): ImatrixEntry {
  return { cols, matrices: counts.length, sums: Float32Array.from(sums), counts: Float32Array.from(counts) };
}

describe('imatrix writers', function () {
  this.timeout(60_000);
  let tmp: string;
  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-imatrix-write-'));
  });
  after(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  it("writes llama-imatrix's .dat back entry for entry, byte for byte (values, ncall, trailer)", async () => {
    const ref = await readImatrix(REFERENCE);
    const out = path.join(tmp, 'back.dat');
    await writeImatrix(out, ref);
    const a = parseDat(await fsp.readFile(REFERENCE));
    const b = parseDat(await fsp.readFile(out));
    expect(b.end).to.equal((await fsp.stat(out)).size);
    expect(b.entries.size).to.equal(35); // 7 weights × 5 blocks, no output head (llama-imatrix's default)
    expect([...b.entries.keys()].sort()).to.deep.equal([...a.entries.keys()].sort());
    for (const [name, [ncall, values]] of a.entries) {
      const [n2, v2] = b.entries.get(name) as [number, Buffer];
      expect(n2, name).to.equal(ncall);
      expect(v2.equals(values), name).to.equal(true);
    }
    expect([b.chunks, b.dataset]).to.deep.equal([a.chunks, a.dataset]);
    expect(b.chunks).to.equal(16);
    // our writer's entries come in name order
    expect([...b.entries.keys()]).to.deep.equal([...b.entries.keys()].sort());
    expect(Buffer.from(imatrixDatBytes(ref)).equals(await fsp.readFile(out))).to.equal(true);
  });

  it('writes the GGUF form: general.type, datasets, chunk count/size, 2-D in_sum2 / counts that read back exactly', async () => {
    const ref = await readImatrix(REFERENCE);
    const out = path.join(tmp, 'ref.gguf');
    await writeImatrix(out, { ...ref, chunkSize: 128 });
    const g = await GGUFReader.open(out);
    try {
      expect(g.metadata.get('general.type')).to.equal('imatrix');
      expect(g.metadata.get('imatrix.datasets')).to.deep.equal(ref.datasets);
      expect(g.metadata.get('imatrix.chunk_count')).to.equal(16);
      expect(g.metadata.get('imatrix.chunk_size')).to.equal(128);
      expect(g.tensors.length).to.equal(70);
      const s = g.tensor('blk.0.ffn_down.weight.in_sum2');
      const c = g.tensor('blk.0.ffn_down.weight.counts');
      expect([s?.type, s?.dims]).to.deep.equal(['F32', [172, 1]]);
      expect([c?.type, c?.dims]).to.deep.equal(['F32', [1, 1]]);
    } finally {
      await g.close();
    }
    const back = await readImatrix(out);
    expect(back.source).to.deep.equal({ path: out, format: 'gguf' });
    expect([back.chunkCount, back.chunkSize, back.datasets]).to.deep.equal([16, 128, ref.datasets]);
    expect(back.entries.size).to.equal(ref.entries.size);
    for (const [name, e] of ref.entries) {
      const f = back.entries.get(name) as ImatrixEntry;
      expect([f.cols, f.matrices], name).to.deep.equal([e.cols, e.matrices]);
      expect(Buffer.from(f.sums.buffer, f.sums.byteOffset, f.sums.byteLength).equals(Buffer.from(e.sums.buffer, e.sums.byteOffset, e.sums.byteLength)), name).to.equal(true);
      expect(Array.from(f.counts)).to.deep.equal(Array.from(e.counts));
    }
  });

  it('mixture-of-experts entries: GGUF keeps each matrix and its count; .dat flattens them, unseen matrices weigh 1', async () => {
    const m: ImatrixData = {
      entries: new Map([['blk.0.ffn_down_exps.weight', entry(3, [2, 4, 6, 9, 9, 9], [2, 0])]]),
      datasets: ['a.txt', 'b.txt'],
      chunkCount: 4,
      chunkSize: 512,
    };
    const g = path.join(tmp, 'moe.gguf');
    const d = path.join(tmp, 'moe.dat');
    await writeImatrix(g, m);
    await writeImatrix(d, m);
    const eg = (await readImatrix(g)).entries.get('blk.0.ffn_down_exps.weight') as ImatrixEntry;
    expect([eg.cols, eg.matrices, Array.from(eg.counts)]).to.deep.equal([3, 2, [2, 0]]);
    expect(Array.from(imatrixWeights(eg))).to.deep.equal([1, 2, 3, 1, 1, 1]);
    const md = await readImatrix(d);
    expect(md.datasets).to.deep.equal(['a.txt']); // the legacy trailer holds one name
    const raw = parseDat(await fsp.readFile(d)).entries.get('blk.0.ffn_down_exps.weight') as [number, Buffer];
    expect(raw[0]).to.equal(4);
    expect(Array.from(new Float32Array(raw[1].buffer.slice(raw[1].byteOffset, raw[1].byteOffset + raw[1].length)))).to.deep.equal([4, 8, 12, 4, 4, 4]);
    expect(Array.from(imatrixWeights(md.entries.get('blk.0.ffn_down_exps.weight') as ImatrixEntry))).to.deep.equal([1, 2, 3, 1, 1, 1]);
  });

  it('random statistics: GGUF round trips exactly, .dat keeps the weights within one rounding', async () => {
    let k = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            cols: fc.integer({ min: 1, max: 40 }),
            matrices: fc.integer({ min: 1, max: 3 }),
            seed: fc.integer({ min: 1, max: 1e6 }),
          }),
          { minLength: 1, maxLength: 6 },
        ),
        fc.integer({ min: 0, max: 1000 }),
        async (specs, chunks) => {
          const entries = new Map<string, ImatrixEntry>();
          specs.forEach((s, i) => {
            let x = s.seed;
            const rnd = (): number => ((x = (x * 1103515245 + 12345) % 2147483648) / 2147483648);
            const sums = Float32Array.from({ length: s.cols * s.matrices }, () => (rnd() < 0.1 ? 0 : rnd() * 10 ** (rnd() * 8 - 4)));
            const counts = Float32Array.from({ length: s.matrices }, () => (rnd() < 0.2 ? 0 : Math.floor(rnd() * 5000) + 1));
            entries.set(`blk.${i}.w${s.seed}.weight`, { cols: s.cols, matrices: s.matrices, sums, counts });
          });
          const m: ImatrixData = { entries, datasets: ['t.txt'], chunkCount: chunks, chunkSize: 64 };
          const g = path.join(tmp, `r${k}.gguf`);
          const d = path.join(tmp, `r${k++}.dat`);
          await writeImatrix(g, m);
          await writeImatrix(d, m);
          const rg = await readImatrix(g);
          const rd = await readImatrix(d);
          for (const [name, e] of entries) {
            const a = rg.entries.get(name) as ImatrixEntry;
            expect(Array.from(a.sums)).to.deep.equal(Array.from(e.sums));
            expect(Array.from(a.counts)).to.deep.equal(Array.from(e.counts));
            const want = imatrixWeights(e);
            const got = imatrixWeights(rd.entries.get(name) as ImatrixEntry);
            expect(got.length).to.equal(want.length);
            for (let i = 0; i < want.length; i++) {
              const w = want[i] as number;
              expect(Math.abs((got[i] as number) - w), `${name}[${i}]`).to.be.at.most(w * 2 ** -22);
            }
          }
          expect(rd.chunkCount).to.equal(chunks);
          await fsp.rm(g);
          await fsp.rm(d);
        },
      ),
      { numRuns: 40, seed: 16 },
    );
  });

  it('refuses bad statistics and existing files with ERR_VALUE naming what is wrong, leaving nothing behind', async () => {
    const dir = await fsp.mkdtemp(path.join(tmp, 'bad-'));
    const ok = entry(2, [1, 2], [1]);
    const cases: [ImatrixData, RegExp][] = [
      [{ entries: new Map([['w', entry(2, [1, NaN], [1])]]), datasets: [], chunkCount: 1, chunkSize: 8 }, /'w': sums\[1\] is NaN/],
      [{ entries: new Map([['w', entry(2, [1, 2], [-1])]]), datasets: [], chunkCount: 1, chunkSize: 8 }, /'w': counts\[0\] is -1/],
      [{ entries: new Map([['w', { ...ok, cols: 3 }]]), datasets: [], chunkCount: 1, chunkSize: 8 }, /sums must be a Float32Array of cols × matrices = 3/],
      [{ entries: new Map(), datasets: [], chunkCount: 1, chunkSize: 8 }, /no entries/],
      [{ entries: new Map([['w', ok]]), datasets: [], chunkCount: -2, chunkSize: 8 }, /chunkCount must be an integer/],
      [{ entries: new Map([[`blk.0.${'x'.repeat(60)}.weight`, ok]]), datasets: [], chunkCount: 1, chunkSize: 8 }, /ggml takes at most 63/],
    ];
    for (const [m, re] of cases) {
      for (const format of ['gguf', 'dat'] as const) {
        if (format === 'dat' && re.source.includes('ggml')) continue; // a GGUF name limit
        const e = await rejected(writeImatrix(path.join(dir, `x.${format}`), m, { format }));
        expect(e.message, re.source).to.match(re);
        expect((e as { code?: string }).code).to.equal('ERR_VALUE');
      }
    }
    expect(await fsp.readdir(dir)).to.deep.equal([]);
    const f = path.join(dir, 'here.gguf');
    await fsp.writeFile(f, 'keep');
    const m: ImatrixData = { entries: new Map([['w', ok]]), datasets: [], chunkCount: 1, chunkSize: 8 };
    expect((await rejected(writeImatrix(f, m))).message).to.match(/already exists; pass overwrite/);
    expect(await fsp.readFile(f, 'utf8')).to.equal('keep');
    await writeImatrix(f, m, { overwrite: true });
    expect((await readImatrix(f)).entries.size).to.equal(1);
    expect(await fsp.readdir(dir)).to.deep.equal(['here.gguf']);
  });

  it('llama-quantize --imatrix takes the written .dat (set SLIMTENSOR_LLAMA_QUANTIZE to its binary)', async function () {
    const bin = process.env.SLIMTENSOR_LLAMA_QUANTIZE;
    if (bin === undefined || bin === '') skip(this, 'SLIMTENSOR_LLAMA_QUANTIZE is not set (a llama.cpp llama-quantize binary)');
    const run = promisify(execFile);
    const env = { ...process.env, LD_LIBRARY_PATH: [path.dirname(bin), process.env.LD_LIBRARY_PATH ?? ''].join(':') };
    // llama-imatrix's statistics as our writer lays them out (entries in name order)
    const ref = await readImatrix(REFERENCE);
    const ours = path.join(tmp, 'ours.dat');
    await writeImatrix(ours, ref);
    expect(Buffer.from(imatrixDatBytes(ref)).equals(await fsp.readFile(REFERENCE))).to.equal(false);
    const q = async (imatrix: string | undefined, out: string): Promise<{ log: string; meta: ReadonlyMap<string, unknown>; data: Map<string, Buffer> }> => {
      const r = await run(bin, [...(imatrix ? ['--imatrix', imatrix] : []), MODEL, out, 'Q4_K_M', '1'], { env });
      const g = await GGUFReader.open(out);
      try {
        const data = new Map<string, Buffer>();
        for (const t of g.tensors) data.set(t.name, Buffer.from(await g.readTensorBytes(t)));
        return { log: r.stdout + r.stderr, meta: g.metadata, data };
      } finally {
        await g.close();
      }
    };
    const withOurs = await q(ours, path.join(tmp, 'ours.q4_k_m.gguf'));
    const withRef = await q(REFERENCE, path.join(tmp, 'ref.q4_k_m.gguf'));
    const without = await q(undefined, path.join(tmp, 'plain.q4_k_m.gguf'));
    expect(withOurs.log).to.match(/loaded 35 importance matrix entries/);
    expect(withOurs.meta.get('quantize.imatrix.entries_count')).to.equal(35);
    expect(withOurs.meta.get('quantize.imatrix.chunks_count')).to.equal(16);
    // the same tensors as with llama-imatrix's own .dat; not those made without one
    const same = (a: Map<string, Buffer>, b: Map<string, Buffer>): boolean => a.size === b.size && [...a].every(([n, v]) => b.get(n)?.equals(v) === true);
    expect(same(withOurs.data, withRef.data)).to.equal(true);
    expect(same(withOurs.data, without.data)).to.equal(false);
  });
});
