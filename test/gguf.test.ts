import { expect } from 'chai';
import * as fc from 'fast-check';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gguf as hfGguf } from '@huggingface/gguf';
import {
  dequantizeSync,
  GGUFReader,
  QuantizedTensor,
  quantizeSync,
  SlimTensorError,
  Tensor,
  type QuantFormat,
} from '../lib/index';
import { bytesOf, f32ToBF16Bits, f32ToF16Bits, GGML, writeGGUF, type WFile, type WTensor, type WValue } from './support/gguf-writer';
import { spyOnReads } from './support/read-spy';

const MODEL = path.join(__dirname, '..', 'models', 'stories260K.gguf');

/** A deterministic generator (mulberry32), so failures reproduce. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomF32(n: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => (r() - 0.5) * 2);
}

let tmp: string;
let fileNo = 0;

async function writeTemp(bytes: Uint8Array, name?: string): Promise<string> {
  const file = path.join(tmp, name ?? `t${fileNo++}.gguf`);
  await fsp.writeFile(file, bytes);
  return file;
}

/** Opens `file`, reads every tensor it can, and closes it. */
async function openAndReadAll(file: string, options?: { maxHeaderBytes?: number }): Promise<GGUFReader> {
  const g = await GGUFReader.open(file, options);
  try {
    for (const t of g.tensors) {
      if (GGUFReader.canRead(t)) await g.readTensor(t);
      else await g.readTensorBytes(t);
    }
  } finally {
    await g.close();
  }
  return g;
}

async function rejection(p: Promise<unknown>): Promise<SlimTensorError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof SlimTensorError) return e;
    throw new Error(`expected a SlimTensorError, got ${String(e)}`, { cause: e });
  }
  throw new Error('expected a rejection, but the call succeeded');
}

/** Writes `bytes`, expects ERR_FORMAT naming the file and matching every pattern. */
async function expectFormatError(bytes: Uint8Array, ...patterns: (RegExp | string)[]): Promise<SlimTensorError> {
  const file = await writeTemp(bytes);
  const e = await rejection(openAndReadAll(file));
  expect(e.code, e.message).to.equal('ERR_FORMAT');
  expect(e.message).to.include(file);
  for (const p of patterns) {
    if (typeof p === 'string') expect(e.message).to.include(p);
    else expect(e.message).to.match(p);
  }
  return e;
}

function f32Tensor(name: string, dims: readonly number[], seed = 1): WTensor {
  const n = dims.reduce((a, b) => a * b, 1);
  return { name, dims, typeId: GGML.F32, data: bytesOf(randomF32(n, seed)) };
}

const ARCH: [string, WValue] = ['general.architecture', { type: 'string', value: 'llama' }];

before(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-gguf-'));
});

after(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

describe('GGUFReader: the bundled stories260K model', () => {
  let g: GGUFReader;
  before(async () => {
    g = await GGUFReader.open(MODEL);
  });
  after(async () => {
    await g.close();
  });

  it('reads the header the model README describes', () => {
    expect(g.version).to.equal(3);
    expect(g.architecture).to.equal('llama');
    expect(g.metadata.get('general.architecture')).to.equal('llama');
    expect(g.entries).to.have.length(19);
    expect(g.tensors).to.have.length(48);
    expect(g.tensors.every((t) => t.type === 'F32')).to.equal(true);
    expect(g.alignment).to.equal(32);
    expect(g.dataOffset % 32).to.equal(0);
    expect(g.metadata.get('llama.embedding_length')).to.equal(64);
    expect(g.metadata.get('llama.feed_forward_length')).to.equal(172);
    expect(g.metadata.get('llama.block_count')).to.equal(5);
    expect(g.metadata.get('llama.attention.head_count')).to.equal(8);
    expect(g.metadata.get('llama.attention.head_count_kv')).to.equal(4);
    const tokens = g.metadata.get('tokenizer.ggml.tokens');
    expect(tokens).to.be.an('array').with.length(512);
    expect(g.metadata.get('tokenizer.ggml.scores')).to.be.instanceOf(Float32Array);
    expect(g.entries.find((e) => e.key === 'tokenizer.ggml.token_type')).to.include({ type: 'array', itemType: 'i32' });
  });

  it('gives shapes in PyTorch order (GGUF dims reversed)', () => {
    expect(g.tensor('token_embd.weight')?.shape).to.deep.equal([512, 64]);
    expect(g.tensor('token_embd.weight')?.dims).to.deep.equal([64, 512]);
    expect(g.tensor('blk.0.ffn_down.weight')?.shape).to.deep.equal([64, 172]);
    expect(g.tensor('blk.0.ffn_gate.weight')?.shape).to.deep.equal([172, 64]);
    expect(g.tensor('blk.4.attn_k.weight')?.shape).to.deep.equal([32, 64]);
    expect(g.tensor('output_norm.weight')?.shape).to.deep.equal([64]);
    expect(g.tensor('nope')).to.equal(undefined);
  });

  it('reads every tensor as f32 with sane values', async () => {
    for (const info of g.tensors) {
      const t = await g.readTensor(info);
      expect(t).to.be.instanceOf(Tensor);
      const x = t as Tensor;
      expect(x.dtype).to.equal('f32');
      expect(x.shape).to.deep.equal(info.shape);
      expect(x.byteLength).to.equal(info.byteLength);
      let sumSq = 0;
      let maxAbs = 0;
      for (const v of x.data as Float32Array) {
        sumSq += v * v;
        maxAbs = Math.max(maxAbs, Math.abs(v)); // NaN propagates to the check below
      }
      expect(maxAbs, info.name).to.be.below(100);
      const rms = Math.sqrt(sumSq / x.size);
      // Trained weights: neither all zero nor blown up.
      expect(rms, info.name).to.be.within(1e-3, 10);
      // RMSNorm gains sit around 1, not around 0.
      if (info.name.endsWith('norm.weight')) expect(rms, info.name).to.be.above(0.3);
    }
  });

  it('reads one tensor at a time: the header from a bounded prefix, each tensor from its own offset', async () => {
    const stat = await fsp.stat(MODEL);
    const { result: reader, calls: openCalls } = await spyOnReads(() => GGUFReader.open(MODEL));
    try {
      const opened = openCalls.reduce((s, c) => s + c.length, 0);
      expect(opened).to.be.below(stat.size);
      expect(opened).to.be.at.least(reader.dataOffset);
      const info = reader.tensor('blk.2.ffn_up.weight');
      if (info === undefined) throw new Error('missing tensor');
      const { calls } = await spyOnReads(() => reader.readTensor(info));
      expect(calls.reduce((s, c) => s + c.length, 0)).to.equal(info.byteLength);
      for (const c of calls) {
        expect(c.bufferBytes).to.equal(info.byteLength);
        expect(c.position).to.be.within(info.fileOffset, info.fileOffset + info.byteLength - 1);
      }
    } finally {
      await reader.close();
    }
  });

  it('agrees with @huggingface/gguf on metadata and every tensor info', async () => {
    const hf = await hfGguf(MODEL, { allowLocalFile: true });
    expect(hf.tensorDataOffset).to.equal(BigInt(g.dataOffset));
    expect(hf.tensorInfos).to.have.length(g.tensors.length);
    hf.tensorInfos.forEach((h, i) => {
      const t = g.tensors[i];
      if (t === undefined) throw new Error(`missing tensor #${i}`);
      expect(t.name).to.equal(h.name);
      expect(t.dims).to.deep.equal(h.shape.map(Number));
      expect(t.dims.length).to.equal(h.n_dims);
      expect(t.typeId).to.equal(h.dtype);
      expect(BigInt(t.offset)).to.equal(h.offset);
    });
    for (const e of g.entries) {
      const theirs: unknown = (hf.metadata as Record<string, unknown>)[e.key];
      const ours = e.value;
      if (ArrayBuffer.isView(ours) || Array.isArray(ours)) {
        expect(Array.from(ours as ArrayLike<unknown>), e.key).to.deep.equal(theirs);
      } else {
        expect(ours, e.key).to.equal(theirs);
      }
    }
  });

  it('returns the bytes at the offsets @huggingface/gguf reports', async () => {
    const hf = await hfGguf(MODEL, { allowLocalFile: true });
    const fh = await fsp.open(MODEL, 'r');
    try {
      for (const h of hf.tensorInfos.filter((_, i) => i % 7 === 0)) {
        const t = (await g.readTensor(h.name)) as Tensor;
        const raw = new Uint8Array(t.byteLength);
        await fh.read(raw, 0, raw.length, Number(hf.tensorDataOffset + h.offset));
        expect(bytesOf(t.data)).to.deep.equal(raw);
      }
    } finally {
      await fh.close();
    }
  });
});

describe('GGUFReader: synthetic files', () => {
  const ROWS = 4;
  const COLS = 64;
  const source = Tensor.from(randomF32(ROWS * COLS, 7), [ROWS, COLS]);
  const quantized = new Map<QuantFormat, QuantizedTensor>(
    (['q8_0', 'q4_0', 'q4_1'] as const).map((f) => [f, quantizeSync(source, { format: f })]),
  );
  const f32 = randomF32(3 * 64, 11);
  const f16 = Uint16Array.from(randomF32(2 * 32, 12), f32ToF16Bits);
  const bf16 = Uint16Array.from(randomF32(4 * 8, 13), f32ToBF16Bits);

  function tensorsFile(extra: Partial<WFile> = {}): WFile {
    const q = (f: QuantFormat): Uint8Array => (quantized.get(f) as QuantizedTensor).data as Uint8Array;
    return {
      kv: [ARCH, ['general.quantization_version', { type: 'u32', value: 2 }]],
      tensors: [
        { name: 'w.f32', dims: [64, 3], typeId: GGML.F32, data: bytesOf(f32) },
        { name: 'w.f16', dims: [32, 2], typeId: GGML.F16, data: bytesOf(f16) },
        { name: 'w.bf16', dims: [8, 4], typeId: GGML.BF16, data: bytesOf(bf16) },
        { name: 'w.q8_0', dims: [COLS, ROWS], typeId: GGML.Q8_0, data: q('q8_0') },
        { name: 'w.q4_0', dims: [COLS, ROWS], typeId: GGML.Q4_0, data: q('q4_0') },
        { name: 'w.q4_1', dims: [COLS, ROWS], typeId: GGML.Q4_1, data: q('q4_1') },
        { name: 'w.3d', dims: [8, 3, 2], typeId: GGML.F32, data: bytesOf(Float32Array.from({ length: 48 }, (_, i) => i)) },
        { name: 'w.scalar', dims: [], typeId: GGML.F32, data: bytesOf(new Float32Array([42.5])) },
        { name: 'w.empty', dims: [32, 0], typeId: GGML.F32, data: new Uint8Array(0) },
      ],
      ...extra,
    };
  }

  it('returns F32/F16/BF16 tensors with exactly the values written, in the right dtype', async () => {
    const g = await GGUFReader.open(await writeTemp(writeGGUF(tensorsFile()).bytes));
    try {
      const a = (await g.readTensor('w.f32')) as Tensor<'f32'>;
      expect(a.dtype).to.equal('f32');
      expect(a.shape).to.deep.equal([3, 64]);
      expect(Array.from(a.data)).to.deep.equal(Array.from(f32));
      const b = (await g.readTensor('w.f16')) as Tensor<'f16'>;
      expect(b.dtype).to.equal('f16');
      expect(b.shape).to.deep.equal([2, 32]);
      expect(Array.from(b.data)).to.deep.equal(Array.from(f16));
      const c = (await g.readTensor('w.bf16')) as Tensor<'bf16'>;
      expect(c.dtype).to.equal('bf16');
      expect(c.shape).to.deep.equal([4, 8]);
      expect(Array.from(c.data)).to.deep.equal(Array.from(bf16));
      const d = (await g.readTensor('w.3d')) as Tensor<'f32'>;
      expect(d.shape).to.deep.equal([2, 3, 8]);
      expect(d.data[47]).to.equal(47);
      const s = (await g.readTensor('w.scalar')) as Tensor<'f32'>;
      expect(s.shape).to.deep.equal([]);
      expect(Array.from(s.data)).to.deep.equal([42.5]);
      const e = (await g.readTensor('w.empty')) as Tensor<'f32'>;
      expect(e.shape).to.deep.equal([0, 32]);
      expect(e.size).to.equal(0);
    } finally {
      await g.close();
    }
  });

  it('returns Q8_0/Q4_0/Q4_1 tensors as QuantizedTensors holding the written blocks', async () => {
    const g = await GGUFReader.open(await writeTemp(writeGGUF(tensorsFile()).bytes));
    try {
      for (const [format, q] of quantized) {
        const t = await g.readTensor(`w.${format}`);
        expect(t).to.be.instanceOf(QuantizedTensor);
        const r = t as QuantizedTensor;
        expect(r.format).to.equal(format);
        expect(r.shape).to.deep.equal([ROWS, COLS]);
        expect(bytesOf(r.data)).to.deep.equal(bytesOf(q.data));
        // The caller can dequantize: same floats as from the original blocks.
        expect(Array.from(dequantizeSync(r).data)).to.deep.equal(Array.from(dequantizeSync(q).data));
      }
    } finally {
      await g.close();
    }
  });

  it('honours general.alignment and agrees with @huggingface/gguf on tensor infos', async () => {
    const w = writeGGUF(tensorsFile({ alignment: 64 }));
    const file = await writeTemp(w.bytes);
    const g = await GGUFReader.open(file);
    try {
      expect(g.alignment).to.equal(64);
      expect(g.dataOffset).to.equal(w.dataOffset);
      expect(g.dataOffset % 64).to.equal(0);
      expect(g.tensors.map((t) => BigInt(t.offset))).to.deep.equal(w.offsets);
      const hf = await hfGguf(file, { allowLocalFile: true });
      expect(hf.tensorDataOffset).to.equal(BigInt(g.dataOffset));
      expect(hf.tensorInfos.map((t) => [t.name, t.shape.map(Number), t.dtype, t.offset])).to.deep.equal(
        g.tensors.map((t) => [t.name, [...t.dims], t.typeId, BigInt(t.offset)]),
      );
      const q = (await g.readTensor('w.q4_1')) as QuantizedTensor;
      expect(bytesOf(q.data)).to.deep.equal(bytesOf((quantized.get('q4_1') as QuantizedTensor).data));
    } finally {
      await g.close();
    }
  });

  it('reads GGUF v2 (same layout as v3)', async () => {
    const g = await openAndReadAll(await writeTemp(writeGGUF(tensorsFile({ version: 2 })).bytes));
    expect(g.version).to.equal(2);
    expect(g.tensors).to.have.length(9);
  });

  it('reads every metadata value type, nested arrays included', async () => {
    const kv: [string, WValue][] = [
      ['u8', { type: 'u8', value: 255 }],
      ['i8', { type: 'i8', value: -128 }],
      ['u16', { type: 'u16', value: 65535 }],
      ['i16', { type: 'i16', value: -32768 }],
      ['u32', { type: 'u32', value: 4294967295 }],
      ['i32', { type: 'i32', value: -2147483648 }],
      ['f32', { type: 'f32', value: 1.5 }],
      ['f64', { type: 'f64', value: Math.PI }],
      ['bool.t', { type: 'bool', value: true }],
      ['bool.f', { type: 'bool', value: false }],
      ['str', { type: 'string', value: 'héllo 🌍' }],
      ['str.empty', { type: 'string', value: '' }],
      ['u64.small', { type: 'u64', value: 42n }],
      ['u64.big', { type: 'u64', value: 2n ** 64n - 1n }],
      ['i64.small', { type: 'i64', value: -5n }],
      ['i64.big', { type: 'i64', value: -(2n ** 63n) }],
      ['arr.u8', { type: 'array', itemType: 'u8', value: [1, 2, 255].map((v) => ({ type: 'u8', value: v })) }],
      ['arr.i16', { type: 'array', itemType: 'i16', value: [-1, 7].map((v) => ({ type: 'i16', value: v })) }],
      ['arr.f64', { type: 'array', itemType: 'f64', value: [0.1, -2].map((v) => ({ type: 'f64', value: v })) }],
      ['arr.u64', { type: 'array', itemType: 'u64', value: [1n, 2n ** 64n - 1n].map((v) => ({ type: 'u64', value: v })) }],
      ['arr.bool', { type: 'array', itemType: 'bool', value: [true, false].map((v) => ({ type: 'bool', value: v })) }],
      ['arr.str', { type: 'array', itemType: 'string', value: ['a', '', 'ß'].map((v) => ({ type: 'string', value: v })) }],
      ['arr.empty', { type: 'array', itemType: 'f32', value: [] }],
      [
        'arr.nested',
        {
          type: 'array',
          itemType: 'array',
          value: [
            { type: 'array', itemType: 'i32', value: [{ type: 'i32', value: -3 }] },
            { type: 'array', itemType: 'string', value: [{ type: 'string', value: 'x' }] },
          ],
        },
      ],
    ];
    const g = await openAndReadAll(await writeTemp(writeGGUF({ kv }).bytes));
    const m = g.metadata;
    expect(m.get('u8')).to.equal(255);
    expect(m.get('i8')).to.equal(-128);
    expect(m.get('u16')).to.equal(65535);
    expect(m.get('i16')).to.equal(-32768);
    expect(m.get('u32')).to.equal(4294967295);
    expect(m.get('i32')).to.equal(-2147483648);
    expect(m.get('f32')).to.equal(1.5);
    expect(m.get('f64')).to.equal(Math.PI);
    expect(m.get('bool.t')).to.equal(true);
    expect(m.get('bool.f')).to.equal(false);
    expect(m.get('str')).to.equal('héllo 🌍');
    expect(m.get('str.empty')).to.equal('');
    // u64/i64: numbers when exact, bigints beyond 2^53.
    expect(m.get('u64.small')).to.equal(42);
    expect(m.get('u64.big')).to.equal(2n ** 64n - 1n);
    expect(m.get('i64.small')).to.equal(-5);
    expect(m.get('i64.big')).to.equal(-(2n ** 63n));
    expect(m.get('arr.u8')).to.deep.equal(new Uint8Array([1, 2, 255]));
    expect(m.get('arr.i16')).to.deep.equal(new Int16Array([-1, 7]));
    expect(m.get('arr.f64')).to.deep.equal(new Float64Array([0.1, -2]));
    expect(m.get('arr.u64')).to.deep.equal(new BigUint64Array([1n, 2n ** 64n - 1n]));
    expect(m.get('arr.bool')).to.deep.equal([true, false]);
    expect(m.get('arr.str')).to.deep.equal(['a', '', 'ß']);
    expect(m.get('arr.empty')).to.deep.equal(new Float32Array(0));
    expect(m.get('arr.nested')).to.deep.equal([new Int32Array([-3]), ['x']]);
    expect(g.entries.map((e) => e.key)).to.deep.equal(kv.map(([k]) => k));
    expect(g.entries.map((e) => e.type)).to.deep.equal(kv.map(([, v]) => v.type));
    expect(g.entries.find((e) => e.key === 'arr.nested')?.itemType).to.equal('array');
    expect(g.tensors).to.have.length(0);
  });

  it('grows the header read past the first prefix, up to maxHeaderBytes', async () => {
    // About 1.2 MB of token strings: more than the first read.
    const tokens: WValue[] = Array.from({ length: 30000 }, (_, i) => ({ type: 'string', value: `token-${i}-${'x'.repeat(24)}` }));
    const w = writeGGUF({ kv: [ARCH, ['tokenizer.ggml.tokens', { type: 'array', itemType: 'string', value: tokens }]], tensors: [f32Tensor('w', [32, 2])] });
    const file = await writeTemp(w.bytes);
    const g = await openAndReadAll(file);
    expect((g.metadata.get('tokenizer.ggml.tokens') as string[])[29999]).to.equal(`token-29999-${'x'.repeat(24)}`);
    const e = await rejection(openAndReadAll(file, { maxHeaderBytes: 512 * 1024 }));
    expect(e.code).to.equal('ERR_FORMAT');
    expect(e.message).to.include('maxHeaderBytes');
  });

  it("reads llama-quantize's K-quant and Q5 blocks as QuantizedTensors that dequantize", async () => {
    // llama-quantize's Q4_K_M of a generated model (test/fixtures/llama-quantize): Q4_K and Q6_K tensors
    const g = await GGUFReader.open(path.join(__dirname, 'fixtures', 'llama-quantize', 'a.q4_k_m.gguf'));
    try {
      const seen = new Set<string>();
      for (const info of g.tensors) {
        expect(GGUFReader.canRead(info), info.name).to.equal(true);
        const t = await g.readTensor(info);
        if (!(t instanceof QuantizedTensor)) continue;
        seen.add(t.format);
        expect(t.format.toUpperCase()).to.equal(info.type);
        const x = dequantizeSync(t).data as Float32Array;
        // the generated weights are N(0, 0.02²) with rare 8x outliers
        let ss = 0;
        for (const v of x) ss += v * v;
        expect(Math.sqrt(ss / x.length), info.name).to.be.within(0.015, 0.03);
      }
      expect([...seen].sort()).to.deep.equal(['q4_k', 'q6_k']);
    } finally {
      await g.close();
    }
  });

  it('reports unsupported tensor types on read, and still returns their raw bytes', async () => {
    // Q8_K (id 15): ggml's intermediate type for dot products, never stored by slimtensor
    const blocks = Uint8Array.from({ length: 292 * 2 }, (_, i) => i & 0xff);
    const file = await writeTemp(writeGGUF({ kv: [ARCH], tensors: [{ name: 'k', dims: [256, 2], typeId: 15, data: blocks }] }).bytes);
    const g = await GGUFReader.open(file);
    try {
      const info = g.tensors[0];
      expect(info).to.include({ type: 'Q8_K', byteLength: 584 });
      expect(GGUFReader.canRead(info as NonNullable<typeof info>)).to.equal(false);
      const e = await rejection(g.readTensor('k'));
      expect(e.code).to.equal('ERR_UNSUPPORTED');
      expect(e.message).to.include("'k'").and.include('Q8_K');
      expect(await g.readTensorBytes('k')).to.deep.equal(blocks);
      expect((await rejection(g.readTensor('missing'))).code).to.equal('ERR_VALUE');
    } finally {
      await g.close();
    }
    expect((await rejection(g.readTensor('k'))).message).to.include('closed');
    await g.close(); // twice is fine
  });

  it('lets I/O errors through as Node errors', async () => {
    let caught: unknown;
    await GGUFReader.open(path.join(tmp, 'does-not-exist.gguf')).catch((e: unknown) => {
      caught = e;
    });
    expect((caught as NodeJS.ErrnoException).code).to.equal('ENOENT');
  });
});

describe('GGUFReader: hostile files are rejected with ERR_FORMAT', () => {
  const good = (): WFile => ({ kv: [ARCH], tensors: [f32Tensor('a', [32, 2]), f32Tensor('b', [64, 1])] });
  const at = (bytes: Uint8Array, pos: number, f: (d: DataView) => void): Uint8Array => {
    const out = bytes.slice();
    f(new DataView(out.buffer, pos));
    return out;
  };

  it('bad magic, short files', async () => {
    const w = writeGGUF(good());
    await expectFormatError(at(w.bytes, 0, (d) => d.setUint8(0, 0x48)), 'not a GGUF file', '48 47 55 46');
    await expectFormatError(new Uint8Array(0), 'too short');
    await expectFormatError(w.bytes.slice(0, 20), 'too short');
  });

  it('unsupported versions, with a hint for v1 and big-endian files', async () => {
    await expectFormatError(writeGGUF({ ...good(), version: 1 }).bytes, 'unsupported GGUF version 1', 'v1');
    await expectFormatError(writeGGUF({ ...good(), version: 4 }).bytes, 'unsupported GGUF version 4');
    await expectFormatError(writeGGUF({ ...good(), version: 0x03000000 }).bytes, 'big-endian');
  });

  it('counts that exceed the file', async () => {
    await expectFormatError(writeGGUF({ ...good(), tensorCount: 1n << 40n }).bytes, 'tensor count');
    await expectFormatError(writeGGUF({ ...good(), tensorCount: 2n ** 64n - 1n }).bytes, 'tensor count');
    await expectFormatError(writeGGUF({ ...good(), kvCount: 1n << 62n }).bytes, 'metadata count');
    // A u32 array whose count claims 2^59 elements.
    const w = writeGGUF({ kv: [['a', { type: 'array', itemType: 'u32', value: [{ type: 'u32', value: 1 }] }]] });
    const countAt = w.fields.find((f) => f.what === 'array count')?.pos as number;
    await expectFormatError(at(w.bytes, countAt, (d) => d.setBigUint64(0, 1n << 59n, true)), "metadata 'a'", 'element count');
  });

  it('string lengths beyond the caps or the file', async () => {
    const w = writeGGUF(good());
    const keyLenAt = 24; // the first key's length follows the 24-byte preamble
    await expectFormatError(at(w.bytes, keyLenAt, (d) => d.setBigUint64(0, 1n << 40n, true)), 'metadata key #0', 'limit');
    await expectFormatError(at(w.bytes, keyLenAt, (d) => d.setBigUint64(0, 60000n, true)), 'metadata key #0', 'remain in the file');
    const longName = 'n'.repeat(65);
    await expectFormatError(writeGGUF({ kv: [ARCH], tensors: [f32Tensor(longName, [32])] }).bytes, 'tensor #0 name', 'limit is 64');
    // 64 bytes is allowed.
    await openAndReadAll(await writeTemp(writeGGUF({ kv: [ARCH], tensors: [f32Tensor('n'.repeat(64), [32])] }).bytes));
  });

  it('more than 4 dimensions', async () => {
    await expectFormatError(writeGGUF({ kv: [ARCH], tensors: [f32Tensor('five', [32, 1, 1, 1, 1])] }).bytes, "tensor 'five'", '5 dimensions');
  });

  it('unknown ggml type ids (removed, unlisted or out of range)', async () => {
    for (const id of [4, 5, 16, 29, 31, 0xffffffff]) {
      await expectFormatError(writeGGUF({ kv: [ARCH], tensors: [{ ...f32Tensor('t', [32]), typeId: id }] }).bytes, "tensor 't'", `unknown ggml type id ${id}`);
    }
  });

  it('offsets not aligned or outside the data section, overlapping tensors', async () => {
    const [a, b] = good().tensors as [WTensor, WTensor];
    await expectFormatError(writeGGUF({ kv: [ARCH], tensors: [a, { ...b, offset: 264n }] }).bytes, "tensor 'b'", 'not a multiple of the alignment 32');
    await expectFormatError(writeGGUF({ kv: [ARCH], tensors: [a, { ...b, offset: 1n << 40n }] }).bytes, "tensor 'b'", 'data section');
    await expectFormatError(writeGGUF({ kv: [ARCH], tensors: [a, { ...b, offset: 2n ** 64n - 32n }] }).bytes, "tensor 'b'", 'data section');
    await expectFormatError(writeGGUF({ kv: [ARCH], tensors: [a, { ...b, offset: 0n }] }).bytes, 'overlaps', "'a'", "'b'");
    await expectFormatError(writeGGUF({ kv: [ARCH], tensors: [a, { ...b, offset: 224n }] }).bytes, 'overlaps');
    // Out of order and with gaps is fine: only overlaps are unsafe. The
    // writer packs data in order, so place it by hand.
    const c = f32Tensor('c', [32], 3);
    const w = writeGGUF({ kv: [ARCH], tensors: [{ ...a, offset: 512n }, { ...b, offset: 0n }, { ...c, offset: 1024n }] });
    const bytes = new Uint8Array(w.dataOffset + 1024 + c.data.length);
    bytes.set(w.bytes.subarray(0, w.dataOffset));
    bytes.set(a.data, w.dataOffset + 512);
    bytes.set(b.data, w.dataOffset);
    bytes.set(c.data, w.dataOffset + 1024);
    const g = await GGUFReader.open(await writeTemp(bytes));
    try {
      for (const t of [a, b, c]) expect(bytesOf(((await g.readTensor(t.name)) as Tensor).data)).to.deep.equal(t.data);
    } finally {
      await g.close();
    }
  });

  it('data that the file does not hold (truncated)', async () => {
    const w = writeGGUF(good());
    await expectFormatError(w.bytes.slice(0, w.bytes.length - 100), "tensor 'b'", 'data section');
    await expectFormatError(w.bytes.slice(0, 40), 'metadata key #0', 'remain in the file');
    await expectFormatError(w.bytes.slice(0, 30), 'the metadata count is 1');
    await expectFormatError(w.bytes.slice(0, w.headerBytes - 4), "tensor 'a'", 'more than the whole file');
    const kv = writeGGUF({ kv: [['k', { type: 'u64', value: 1n }]] });
    await expectFormatError(kv.bytes.slice(0, kv.headerBytes - 4), "metadata 'k'", 'truncated');
  });

  it('element count x type size overflow, and dims beyond 2^53', async () => {
    await expectFormatError(writeGGUF({ kv: [ARCH], tensors: [{ ...f32Tensor('big', [32]), dims: [1n << 32n, 1n << 32n] }] }).bytes, "tensor 'big'", 'overflows int64');
    await expectFormatError(writeGGUF({ kv: [ARCH], tensors: [{ ...f32Tensor('big', [32]), dims: [1n << 20n, 1n << 20n] }] }).bytes, "tensor 'big'", 'more than the whole file');
    await expectFormatError(writeGGUF({ kv: [ARCH], tensors: [{ ...f32Tensor('huge', [32]), dims: [0n, 1n << 60n] }] }).bytes, "tensor 'huge'", 'beyond 2^53');
  });

  it('a row length that is not a multiple of the block size', async () => {
    const data = new Uint8Array(18 * 3);
    await expectFormatError(writeGGUF({ kv: [ARCH], tensors: [{ name: 'q', dims: [48, 2], typeId: GGML.Q4_0, data }] }).bytes, "tensor 'q'", 'Q4_0', 'rows of 48 values', 'block size 32');
  });

  it('duplicate keys and tensor names', async () => {
    await expectFormatError(writeGGUF({ kv: [ARCH, ARCH] }).bytes, "metadata 'general.architecture'", 'duplicate key');
    await expectFormatError(writeGGUF({ kv: [ARCH], tensors: [f32Tensor('a', [32]), f32Tensor('a', [32])] }).bytes, "tensor 'a'", 'duplicate name');
  });

  it('a bad general.alignment, unknown value types, arrays nested too deep', async () => {
    await expectFormatError(writeGGUF({ ...good(), alignment: 48 }).bytes, 'general.alignment', 'power of two');
    await expectFormatError(writeGGUF({ ...good(), alignment: 0 }).bytes, 'general.alignment', 'power of two');
    await expectFormatError(writeGGUF({ kv: [['general.alignment', { type: 'u64', value: 32n }]] }).bytes, 'general.alignment', 'must be a u32');
    const w = writeGGUF({ kv: [['k', { type: 'u32', value: 1 }]] });
    const typeAt = w.fields.find((f) => f.what === 'value type')?.pos as number;
    await expectFormatError(at(w.bytes, typeAt, (d) => d.setUint32(0, 13, true)), "metadata 'k'", 'unknown value type 13');
    let deep: WValue = { type: 'array', itemType: 'u8', value: [] };
    for (let i = 0; i < 10; i++) deep = { type: 'array', itemType: 'array', value: [deep] };
    await expectFormatError(writeGGUF({ kv: [['deep', deep]] }).bytes, "metadata 'deep'", 'nests arrays');
  });

  it('escapes control characters of hostile names in messages', async () => {
    const e = await expectFormatError(writeGGUF({ kv: [ARCH], tensors: [{ ...f32Tensor('a\u001b[31m', [32]), typeId: 99 }] }).bytes, "'a\\x1b[31m'");
    expect(e.message).not.to.include('\u001b');
  });
});

describe('GGUFReader: fuzzing the header', function () {
  this.timeout(120_000);

  // A small valid file touching every reader path: strings, scalars, arrays
  // (typed, string, nested), and tensors of every readable type.
  const base = writeGGUF({
    kv: [
      ARCH,
      ['general.name', { type: 'string', value: 'fuzz' }],
      ['n', { type: 'u64', value: 7n }],
      ['f', { type: 'f32', value: 0.5 }],
      ['tok', { type: 'array', itemType: 'string', value: ['a', 'bc'].map((v) => ({ type: 'string', value: v })) }],
      ['sc', { type: 'array', itemType: 'f32', value: [1, 2, 3].map((v) => ({ type: 'f32', value: v })) }],
      ['nest', { type: 'array', itemType: 'array', value: [{ type: 'array', itemType: 'i8', value: [{ type: 'i8', value: -1 }] }] }],
    ],
    tensors: [
      f32Tensor('f32', [32, 2]),
      { name: 'f16', dims: [32, 1], typeId: GGML.F16, data: new Uint8Array(64).fill(0x3c) },
      { name: 'bf16', dims: [32], typeId: GGML.BF16, data: new Uint8Array(64).fill(0x3f) },
      { name: 'q8', dims: [32, 2], typeId: GGML.Q8_0, data: new Uint8Array(68).fill(1) },
      { name: 'q40', dims: [64], typeId: GGML.Q4_0, data: new Uint8Array(36).fill(2) },
      { name: 'q41', dims: [32], typeId: GGML.Q4_1, data: new Uint8Array(20).fill(3) },
    ],
  });
  const headerEnd = base.dataOffset;
  const RUNS = Number(process.env.FUZZ_RUNS ?? 300);
  const EXTREMES_64 = [0n, 1n, 31n, 32n, 64n, 255n, 0xffffffffn, 1n << 32n, (1n << 53n) + 1n, 1n << 62n, 1n << 63n, 2n ** 64n - 1n];
  const EXTREMES_32 = [0, 1, 2, 3, 4, 5, 8, 9, 12, 13, 30, 31, 0x7fffffff, 0xffffffff];

  type Mutation =
    | { kind: 'byte'; pos: number; value: number }
    | { kind: 'field'; field: number; pick: number; delta: number };

  const mutation: fc.Arbitrary<Mutation> = fc.oneof(
    fc.record({ kind: fc.constant('byte' as const), pos: fc.nat({ max: headerEnd - 1 }), value: fc.nat({ max: 255 }) }),
    fc.record({
      kind: fc.constant('field' as const),
      field: fc.nat({ max: base.fields.length - 1 }),
      pick: fc.nat({ max: 31 }),
      delta: fc.integer({ min: -2, max: 2 }),
    }),
  );

  function mutate(ms: readonly Mutation[], truncateTo: number | null): Uint8Array {
    const out = base.bytes.slice();
    const d = new DataView(out.buffer);
    for (const m of ms) {
      if (m.kind === 'byte') {
        out[m.pos] = m.value;
        continue;
      }
      const f = base.fields[m.field];
      if (f === undefined) continue;
      // Half the time a nearby value (off-by-one lengths and counts), else an extreme.
      if (f.size === 8) {
        const old = d.getBigUint64(f.pos, true);
        const v = m.pick < 16 ? old + BigInt(m.delta) : (EXTREMES_64[m.pick % EXTREMES_64.length] as bigint);
        d.setBigUint64(f.pos, BigInt.asUintN(64, v), true);
      } else {
        const old = d.getUint32(f.pos, true);
        const v = m.pick < 16 ? old + m.delta : (EXTREMES_32[m.pick % EXTREMES_32.length] as number);
        d.setUint32(f.pos, v >>> 0, true);
      }
    }
    return truncateTo === null ? out : out.slice(0, truncateTo);
  }

  it('succeeds or throws ERR_FORMAT, reads nothing larger than the file, and stays fast', async () => {
    expect((await openAndReadAll(await writeTemp(base.bytes))).tensors).to.have.length(6);
    const file = path.join(tmp, 'fuzz.gguf');
    let failures = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 4 }), fc.option(fc.nat({ max: base.bytes.length }), { freq: 5 }), async (ms, cut) => {
        const bytes = mutate(ms, cut);
        await fsp.writeFile(file, bytes);
        const started = performance.now();
        const { calls } = await spyOnReads(async () => {
          try {
            await openAndReadAll(file);
          } catch (e) {
            if (!(e instanceof SlimTensorError) || e.code !== 'ERR_FORMAT') throw e;
            failures++;
          }
        });
        expect(performance.now() - started, 'one file took too long').to.be.below(2000);
        for (const c of calls) {
          expect(c.bufferBytes).to.be.at.most(bytes.length);
          expect(c.position + c.length).to.be.at.most(bytes.length);
        }
      }),
      // FUZZ_RUNS=20000 for a deeper local run; the default keeps the suite fast.
      { numRuns: RUNS },
    );
    // Most mutations must be caught: the property is not vacuous.
    expect(failures).to.be.above(RUNS / 3);
  });
});
