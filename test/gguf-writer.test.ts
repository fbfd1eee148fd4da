import { expect } from 'chai';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gguf as hfGguf } from '@huggingface/gguf';
import { GGUFReader, quantizeSync, Tensor } from '../lib/index';
import { GGUFWriter, setMetadata } from '../lib/formats/gguf-writer';
import type { GGUFMetadataEntry } from '../lib/formats/gguf-header';
import { bytesOf, rejected, thrown } from './support/assert';
import { writeGGUF, GGML } from './support/gguf-writer';
import { Rng } from './support/random';

const MODEL = path.join(__dirname, '..', 'models', 'stories260K.gguf');

describe('GGUF writer', () => {
  let tmp: string;
  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-ggufw-'));
  });
  after(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  it('round trip: the metadata and tensors of stories260K written back read the same', async () => {
    const src = await GGUFReader.open(MODEL);
    const out = path.join(tmp, 'copy.gguf');
    try {
      const w = await GGUFWriter.create(out, { entries: src.entries, tensors: src.tensors.map((t) => ({ name: t.name, shape: t.shape, type: t.type })) });
      for (const t of src.tensors) await w.write(t.name, await src.readTensorBytes(t));
      await w.close();
      // Same layout as llama.cpp's writer produced: the file is byte-identical.
      expect(Buffer.compare(await fsp.readFile(out), await fsp.readFile(MODEL))).to.equal(0);
    } finally {
      await src.close();
    }
  });

  it('writes every value type (nested and empty arrays included), honours general.alignment, and @huggingface/gguf agrees', async () => {
    // Written by the independent test writer, read by the reader, written again by the library writer.
    const written = writeGGUF({
      alignment: 64,
      kv: [
        ['general.architecture', { type: 'string', value: 'llama' }],
        ['u8', { type: 'u8', value: 200 }],
        ['i16', { type: 'i16', value: -300 }],
        ['u64', { type: 'u64', value: 2n ** 60n }],
        ['i64', { type: 'i64', value: -5n }],
        ['f64', { type: 'f64', value: 0.1 }],
        ['b', { type: 'bool', value: true }],
        ['strs', { type: 'array', itemType: 'string', value: [{ type: 'string', value: 'a' }, { type: 'string', value: 'ü' }] }],
        ['f32s', { type: 'array', itemType: 'f32', value: [{ type: 'f32', value: 1.5 }] }],
        ['bools', { type: 'array', itemType: 'bool', value: [{ type: 'bool', value: false }, { type: 'bool', value: true }] }],
        [
          'nest',
          {
            type: 'array',
            itemType: 'array',
            value: [
              { type: 'array', itemType: 'string', value: [] },
              { type: 'array', itemType: 'bool', value: [] },
              { type: 'array', itemType: 'i8', value: [{ type: 'i8', value: -1 }] },
            ],
          },
        ],
      ],
      tensors: [
        { name: 'w', dims: [32, 2], typeId: GGML.F32, data: bytesOf(new Float32Array(64).fill(0.5)) },
        { name: 'n', dims: [5], typeId: GGML.F16, data: bytesOf(new Uint16Array(5).fill(0x3c00)) },
      ],
    });
    const a = path.join(tmp, 'a.gguf');
    await fsp.writeFile(a, written.bytes);
    const r = await GGUFReader.open(a);
    const b = path.join(tmp, 'b.gguf');
    try {
      const w = await GGUFWriter.create(b, { entries: r.entries, tensors: r.tensors.map((t) => ({ name: t.name, shape: t.shape, type: t.type })) });
      for (const t of r.tensors) await w.write(t.name, await r.readTensorBytes(t));
      await w.close();
    } finally {
      await r.close();
    }
    expect(Buffer.compare(await fsp.readFile(b), Buffer.from(written.bytes))).to.equal(0);
    const hf = await hfGguf(b, { allowLocalFile: true });
    expect(hf.tensorDataOffset % 64n).to.equal(0n);
    expect(hf.tensorInfos.map((t) => [t.name, t.shape.map(Number), t.dtype, t.offset])).to.deep.equal([
      ['w', [32, 2], GGML.F32, 0n],
      ['n', [5], GGML.F16, 256n],
    ]);
    expect((hf.metadata as Record<string, unknown>).strs).to.deep.equal(['a', 'ü']);
  });

  it('writes quantized tensors the reader and @huggingface/gguf see as written', async () => {
    const rng = new Rng(3);
    const x = Tensor.from(rng.normals(4 * 96), [4, 96]);
    const q = quantizeSync(x, { format: 'q4_1' });
    let entries: GGUFMetadataEntry[] = [{ key: 'general.architecture', type: 'string', value: 'test' }];
    entries = setMetadata(entries, 'general.file_type', 'u32', 3);
    entries = setMetadata(entries, 'general.file_type', 'u32', 3); // replaced, not duplicated
    const file = path.join(tmp, 'q.gguf');
    const w = await GGUFWriter.create(file, { entries, tensors: [{ name: 'x', shape: [4, 96], type: 'Q4_1' }] });
    await w.write('x', q.data);
    await w.close();
    const g = await GGUFReader.open(file);
    try {
      expect(g.entries).to.have.length(2);
      expect(g.tensors[0]).to.include({ type: 'Q4_1', byteLength: 4 * 3 * 20 });
      expect(bytesOf(await g.readTensorBytes('x'))).to.deep.equal(bytesOf(q.data));
      // Reading into a caller's buffer (what the pipeline does to reuse memory).
      const into = new Uint8Array(1024).fill(0xaa);
      const back = await g.readTensor('x', { into });
      expect(back.data.buffer).to.equal(into.buffer);
      expect(bytesOf(back.data)).to.deep.equal(bytesOf(q.data));
      expect((await rejected(g.readTensorBytes('x', { into: new Uint8Array(16) }))).code).to.equal('ERR_VALUE');
    } finally {
      await g.close();
    }
    const hf = await hfGguf(file, { allowLocalFile: true });
    expect(hf.tensorInfos[0]?.dtype).to.equal(GGML.Q4_1);
    expect(hf.tensorInfos[0]?.shape.map(Number)).to.deep.equal([96, 4]);
  });

  it('rejects what GGUF cannot hold and writes that break the plan', async () => {
    const e = (tensors: { name: string; shape: number[]; type: 'Q4_0' | 'F32' }[], entries: GGUFMetadataEntry[] = []): string => thrown(() => GGUFWriter.layout({ entries, tensors })).message;
    expect(e([{ name: 'x', shape: [2, 48], type: 'Q4_0' }])).to.include('not a multiple of its block size 32');
    expect(e([{ name: 'x'.repeat(65), shape: [1], type: 'F32' }])).to.include('longer than');
    expect(e([{ name: 'x', shape: [1], type: 'F32' }, { name: 'x', shape: [1], type: 'F32' }])).to.include('planned twice');
    expect(e([], [{ key: 'general.alignment', type: 'u32', value: 48 }])).to.include('power of two');
    const w = await GGUFWriter.create(path.join(tmp, 'bad.gguf'), { entries: [], tensors: [{ name: 'x', shape: [32], type: 'F32' }] });
    expect((await rejected(w.write('y', new Uint8Array(128)))).message).to.include("expected 'x'");
    expect((await rejected(w.write('x', new Uint8Array(4)))).code).to.equal('ERR_SHAPE');
    expect((await rejected(w.close())).message).to.include('after 0 of 1');
    await w.abort();
  });
});
