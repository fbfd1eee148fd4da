// compressModel quantizing large tensors in bands of rows (GGUF to GGUF):
// the file is the same bytes as quantizing each tensor whole, the error
// the same statistics, the progress one event per tensor. The bands are
// forced small here (bandBytes) so tiny models are cut into many.
import { expect } from 'chai';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { compressModel, GGUFReader, type CompressProgress, type CompressReport, type ImportanceMatrix } from '../lib/index';
import { GGUFWriter } from '../lib/formats/gguf-writer';
import { SafetensorsModel, ShardedSafetensorsWriter } from '../lib/formats/safetensors';
import { rejected } from './support/assert';
import { f32ToF16Bits, GGML, writeGGUF } from './support/gguf-writer';
import { ggufTensors, hfTensors, writeHFFolder, type GeneratedTensor } from './support/models';

/** The tensors as a GGUF of F32 or F16 matrices (norms F32). */
async function writeModel(file: string, tensors: readonly GeneratedTensor[], matrices: 'F32' | 'F16'): Promise<void> {
  const w = writeGGUF({
    kv: [
      ['general.architecture', { type: 'string', value: 'llama' }],
      ['general.name', { type: 'string', value: 'generated' }],
      ['llama.block_count', { type: 'u32', value: 2 }],
    ],
    tensors: tensors.map((t) => {
      const f16 = matrices === 'F16' && t.shape.length === 2;
      const data = f16 ? new Uint8Array(Uint16Array.from(t.values, (v) => f32ToF16Bits(v)).buffer) : new Uint8Array(t.values.buffer.slice(0));
      return { name: t.name, dims: t.shape.slice().reverse(), typeId: f16 ? GGML.F16 : GGML.F32, data };
    }),
  });
  await fsp.writeFile(file, w.bytes);
}

describe('pipeline: large tensors quantized in bands of rows', function () {
  this.timeout(60000);
  let tmp: string;
  let tensors: GeneratedTensor[];
  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-bands-'));
    // 256 columns: the K-quants' rows fit; token_embd/output are 96 rows
    tensors = ggufTensors(7, 2, 256);
    await writeModel(path.join(tmp, 'f32.gguf'), tensors, 'F32');
    await writeModel(path.join(tmp, 'f16.gguf'), tensors, 'F16');
  });
  after(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  const run = async (input: string, recipe: string, bandBytes: number, extra: { imatrix?: ImportanceMatrix } = {}): Promise<{ bytes: Buffer; r: CompressReport; events: CompressProgress[] }> => {
    const output = path.join(tmp, `out-${path.basename(input)}-${recipe}-${bandBytes}.gguf`);
    const events: CompressProgress[] = [];
    const r = await compressModel({ input, output, overwrite: true, recipe, bandBytes, measureError: true, threads: 2, onProgress: (p) => events.push(p), ...extra });
    return { bytes: await fsp.readFile(output), r, events };
  };

  const sameAsWhole = (whole: CompressReport, banded: CompressReport, label: string): void => {
    expect(banded.tensors.length).to.equal(whole.tensors.length);
    whole.tensors.forEach((w, i) => {
      const b = banded.tensors[i] as CompressReport['tensors'][number];
      const at = `${label} ${w.name}`;
      expect(b.name, at).to.equal(w.name);
      if (w.error === undefined) return expect(b.error, at).to.equal(undefined);
      const e = b.error as NonNullable<typeof w.error>;
      // Row sums add up in another grouping: equal to rounding.
      expect(e.maxAbs, at).to.equal(w.error.maxAbs);
      expect(e.rmse, at).to.be.closeTo(w.error.rmse, 1e-12 * w.error.rmse);
      expect(e.sqnrDb, at).to.be.closeTo(w.error.sqnrDb, 1e-9);
      expect(e.cosine, at).to.be.closeTo(w.error.cosine, 1e-12);
    });
  };

  for (const input of ['f32.gguf', 'f16.gguf']) {
    for (const recipe of ['q8_0', 'q4_0', 'q4_k_m']) {
      it(`${input} -> ${recipe}: bands of 1, 3 and 5 rows write the same bytes and error statistics as whole tensors`, async () => {
        const file = path.join(tmp, input);
        const rowBytes = 256 * (input === 'f16.gguf' ? 2 : 4);
        const whole = await run(file, recipe, 0);
        for (const rows of [1, 3, 5]) {
          // a byte count between whole rows rounds down to whole rows
          const banded = await run(file, recipe, rows * rowBytes + 17);
          expect(Buffer.compare(banded.bytes, whole.bytes), `${rows} rows`).to.equal(0);
          sameAsWhole(whole.r, banded.r, `${rows} rows`);
          // one progress event per tensor, as whole
          expect(banded.events.map((p) => `${p.phase} ${p.tensor ?? ''} ${p.index} ${p.bytesDone}`)).to.deep.equal(whole.events.map((p) => `${p.phase} ${p.tensor ?? ''} ${p.index} ${p.bytesDone}`));
          // buffers of a band at a time: less held than whole tensors
          expect(banded.r.memory.peakBytes, `${rows} rows`).to.be.below(whole.r.memory.peakBytes);
        }
      });
    }
  }

  it('importance-weighted K-quants (an imatrix) are the same bytes in bands', async () => {
    const entries = new Map(
      tensors
        .filter((t) => t.shape.length === 2 && t.name !== 'token_embd.weight')
        .map((t) => {
          const cols = t.shape[1] as number;
          return [t.name, { cols, matrices: 1, sums: Float32Array.from({ length: cols }, (_, i) => 0.5 + ((i * 37) % 11)), counts: Float32Array.of(4) }] as const;
        }),
    );
    const imatrix: ImportanceMatrix = { entries, datasets: [], chunkCount: 1, chunkSize: 8, source: undefined };
    const file = path.join(tmp, 'f16.gguf');
    const whole = await run(file, 'q4_k_m', 0, { imatrix });
    const banded = await run(file, 'q4_k_m', 3 * 512);
    expect(whole.r.imatrix?.used).to.be.greaterThan(0);
    const banded2 = await run(file, 'q4_k_m', 3 * 512, { imatrix });
    // the imatrix changes the bytes, and banding does not
    expect(Buffer.compare(banded.bytes, whole.bytes)).to.not.equal(0);
    expect(Buffer.compare(banded2.bytes, whole.bytes)).to.equal(0);
  });

  it('kept tensors go in bands too (GGUF, and a sharded safetensors folder to w4a16 and to 2:4 pruning): the same files, the same zero count', async () => {
    const keepAll = { name: 'copy', rules: [{ match: '*', method: 'keep' as const }] };
    for (const input of ['f32.gguf', 'f16.gguf']) {
      const outs: Buffer[] = [];
      for (const bandBytes of [0, 3 * 1024 + 5]) {
        const output = path.join(tmp, `kept-${input}-${bandBytes}.gguf`);
        const r = await compressModel({ input: path.join(tmp, input), output, overwrite: true, recipe: keepAll, bandBytes });
        outs.push(await fsp.readFile(output));
        if (bandBytes > 0) expect(r.memory.peakBytes, input).to.be.below(2 * 4096 + 3 * 1024 * 4);
      }
      expect(Buffer.compare(outs[0] as Buffer, outs[1] as Buffer), input).to.equal(0);
    }
    const hf = path.join(tmp, 'hf');
    // embed_tokens [64, 128] F16 = 16 KiB, kept by w4a16 and by the pruning presets
    await writeHFFolder(hf, hfTensors(5, 128), 'F16', 2);
    for (const recipe of ['w4a16', '2of4', 'keep']) {
      const folders: Map<string, Buffer>[] = [];
      const sparsity: unknown[] = [];
      const peaks: number[] = [];
      for (const bandBytes of [0, 1000]) {
        const output = path.join(tmp, `hf-${recipe}-${bandBytes}`);
        const r = await compressModel({ input: hf, output, overwrite: true, recipe: recipe === 'keep' ? { ...keepAll, format: 'safetensors' } : recipe, bandBytes, maxShardBytes: 40 * 1024 });
        peaks.push(r.memory.peakBytes);
        const names = (await fsp.readdir(output)).sort();
        folders.push(new Map(await Promise.all(names.map(async (n) => [n, await fsp.readFile(path.join(output, n))] as const))));
        sparsity.push((JSON.parse(await fsp.readFile(path.join(output, 'config.json'), 'utf8')) as { quantization_config?: unknown }).quantization_config);
      }
      const [whole, banded] = folders as [Map<string, Buffer>, Map<string, Buffer>];
      expect([...banded.keys()], recipe).to.deep.equal([...whole.keys()]);
      expect([...whole.keys()].filter((n) => n.endsWith('.safetensors')).length, recipe).to.be.greaterThan(1);
      for (const [n, b] of whole) expect(Buffer.compare(banded.get(n) as Buffer, b), `${recipe} ${n}`).to.equal(0);
      expect(sparsity[1], recipe).to.deep.equal(sparsity[0]);
      // every tensor kept: all go in bands, and the buffers held shrink
      if (recipe === 'keep') expect(peaks[1]).to.be.below(peaks[0] as number);
    }
  });

  it('readTensorBytes reads a byte range (GGUF and safetensors) and refuses ranges outside the tensor', async () => {
    const g = await GGUFReader.open(path.join(tmp, 'f32.gguf'));
    const dir = path.join(tmp, 'st');
    await fsp.mkdir(dir);
    try {
      const t = tensors[0] as GeneratedTensor;
      const whole = await g.readTensorBytes(t.name);
      const part = await g.readTensorBytes(t.name, { range: { offset: 1024, length: 3000 } });
      expect(Buffer.compare(part, whole.subarray(1024, 4024))).to.equal(0);
      const into = new Uint8Array(5000);
      const viaInto = await g.readTensorBytes(t.name, { into, range: { offset: whole.length - 100, length: 100 } });
      expect(viaInto.buffer).to.equal(into.buffer);
      expect(Buffer.compare(viaInto, whole.subarray(whole.length - 100))).to.equal(0);
      for (const range of [{ offset: -1, length: 4 }, { offset: whole.length - 3, length: 4 }, { offset: 0.5, length: 4 }, { offset: 0, length: Number.NaN }]) {
        const e = await rejected(g.readTensorBytes(t.name, { range }));
        expect(e.code, JSON.stringify(range)).to.equal('ERR_VALUE');
        expect(e.message).to.match(/options\.range/);
      }
      expect((await rejected(g.readTensor(t.name, { range: { offset: 0, length: 4 } }))).code).to.equal('ERR_VALUE');

      const w = await ShardedSafetensorsWriter.create(dir, [{ name: t.name, dtype: 'F32', shape: t.shape }]);
      await w.write(t.name, whole);
      await w.close();
      const m = await SafetensorsModel.open(dir);
      try {
        const sp = await m.readTensorBytes(t.name, { range: { offset: 4, length: 8 } });
        expect(Buffer.compare(sp, whole.subarray(4, 12))).to.equal(0);
        expect((await rejected(m.readTensorBytes(t.name, { range: { offset: whole.length, length: 1 } }))).code).to.equal('ERR_VALUE');
        expect((await rejected(m.readTensor(t.name, { range: { offset: 0, length: 4 } }))).code).to.equal('ERR_VALUE');
      } finally {
        await m.close();
      }
    } finally {
      await g.close();
    }
  });

  it('GGUFWriter.append writes a tensor in pieces: the same file as write(); too many bytes, a whole write after a piece, or closing mid-tensor are errors', async () => {
    const src = await GGUFReader.open(path.join(tmp, 'f32.gguf'));
    try {
      const plan = { entries: src.entries, tensors: src.tensors.map((t) => ({ name: t.name, shape: t.shape, type: t.type })) };
      const out = path.join(tmp, 'appended.gguf');
      const w = await GGUFWriter.create(out, plan);
      for (const t of src.tensors) {
        const b = await src.readTensorBytes(t);
        for (let at = 0; at < b.length; at += 1000) await w.append(t.name, b.subarray(at, Math.min(b.length, at + 1000)));
      }
      await w.close();
      expect(Buffer.compare(await fsp.readFile(out), await fsp.readFile(path.join(tmp, 'f32.gguf')))).to.equal(0);

      const first = src.tensors[0] as (typeof src.tensors)[number];
      const w2 = await GGUFWriter.create(path.join(tmp, 'bad.gguf'), plan);
      await w2.append(first.name, new Uint8Array(8));
      expect((await rejected(w2.append(first.name, new Uint8Array(first.byteLength)))).code).to.equal('ERR_SHAPE');
      expect((await rejected(w2.write(first.name, new Uint8Array(first.byteLength)))).code).to.equal('ERR_SHAPE');
      expect((await rejected(w2.append('no-such-tensor', new Uint8Array(1)))).code).to.equal('ERR_VALUE');
      expect((await rejected(w2.close())).message).to.match(/closed after 0 of/);
      await w2.abort();
    } finally {
      await src.close();
    }
  });

  it('refuses a bandBytes that is not a whole number >= 0', async () => {
    for (const bandBytes of [-1, 1.5, Number.NaN]) {
      const e = await rejected(compressModel({ input: path.join(tmp, 'f32.gguf'), output: path.join(tmp, 'never.gguf'), recipe: 'q8_0', bandBytes }));
      expect(e.code).to.equal('ERR_VALUE');
    }
    expect(await fsp.stat(path.join(tmp, 'never.gguf')).catch(() => undefined)).to.equal(undefined);
  });
});
