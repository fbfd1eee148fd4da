import { expect } from 'chai';
import * as fc from 'fast-check';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SlimTensorError } from '../lib/index';
import { SafetensorsFile, SafetensorsModel, SafetensorsWriter, ShardedSafetensorsWriter, planShards, type PlannedTensor } from '../lib/formats/safetensors';
import { topLevelKeys } from '../lib/formats/safetensors-header';
import { bytesOf, rejected } from './support/assert';
import { spyOnReads } from './support/read-spy';
import { stFile, stPack } from './support/st-bytes';

describe('safetensors', () => {
  let tmp: string;
  let n = 0;

  async function write(bytes: Uint8Array, name?: string): Promise<string> {
    const f = path.join(tmp, name ?? `t${n++}.safetensors`);
    await fsp.writeFile(f, bytes);
    return f;
  }

  async function openAndReadAll(file: string): Promise<SafetensorsFile> {
    const f = await SafetensorsFile.open(file);
    try {
      for (const t of f.tensors) await f.readTensorBytes(t);
    } finally {
      await f.close();
    }
    return f;
  }

  /** Expects ERR_FORMAT naming the file and every pattern. */
  async function formatError(bytes: Uint8Array, ...patterns: (string | RegExp)[]): Promise<void> {
    const file = await write(bytes);
    const e = await rejected(openAndReadAll(file));
    expect(e.code, e.message).to.equal('ERR_FORMAT');
    expect(e.message).to.include(file);
    for (const p of patterns) {
      if (typeof p === 'string') expect(e.message).to.include(p);
      else expect(e.message).to.match(p);
    }
  }

  const f32 = (...v: number[]): Uint8Array => bytesOf(new Float32Array(v));
  const t = (dtype: string, shape: number[], begin: number, end: number): object => ({ dtype, shape, data_offsets: [begin, end] });

  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-st-'));
  });
  after(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  describe('safetensors reader', () => {
    it('reads tensors, dtypes, shapes and metadata; lists them in data order', async () => {
      const { header, data } = stPack(
        [
          ['b.f16', 'F16', [2, 2], bytesOf(new Uint16Array([0x3c00, 0x4000, 0xc000, 0]))],
          ['a.f32', 'F32', [3], f32(1.5, -2, 3)],
          ['ids', 'I64', [2], bytesOf(new BigInt64Array([7n, -1n]))],
          ['f64', 'F64', [1], bytesOf(new Float64Array([0.25]))],
          ['empty', 'F32', [0, 4], new Uint8Array(0)],
          ['scalar', 'F32', [], f32(42)],
        ],
        { format: 'pt' },
      );
      const file = await write(stFile(header, data));
      const f = await SafetensorsFile.open(file);
      try {
        expect(f.metadata).to.deep.equal({ format: 'pt' });
        expect(f.tensors.map((x) => x.name)).to.deep.equal(['b.f16', 'a.f32', 'ids', 'f64', 'empty', 'scalar']);
        const a = await f.readTensor('a.f32');
        expect(a.dtype).to.equal('f32');
        expect(Array.from(a.data as Float32Array)).to.deep.equal([1.5, -2, 3]);
        const b = await f.readTensor('b.f16');
        expect([b.dtype, b.shape]).to.deep.equal(['f16', [2, 2]]);
        expect(Array.from(b.data as Uint16Array)).to.deep.equal([0x3c00, 0x4000, 0xc000, 0]);
        expect(Array.from((await f.readTensor('ids')).data as BigInt64Array)).to.deep.equal([7n, -1n]);
        expect((await f.readTensor('empty')).size).to.equal(0);
        expect(Array.from((await f.readTensor('scalar')).data as Float32Array)).to.deep.equal([42]);
        // F64 has no Tensor dtype: an explicit error, and its bytes on request.
        const e = await rejected(f.readTensor('f64'));
        expect(e.code).to.equal('ERR_UNSUPPORTED');
        expect(new Float64Array((await f.readTensorBytes('f64')).slice().buffer)[0]).to.equal(0.25);
        // into: reads into the caller's buffer.
        const into = new Uint8Array(64).fill(0xee);
        const got = await f.readTensorBytes('a.f32', { into });
        expect(got.buffer).to.equal(into.buffer);
        expect(Array.from(new Float32Array(into.buffer, 0, 3))).to.deep.equal([1.5, -2, 3]);
        expect((await rejected(f.readTensorBytes('a.f32', { into: new Uint8Array(4) }))).code).to.equal('ERR_VALUE');
      } finally {
        await f.close();
      }
    });

    it('reads a tensor of 8 MiB and more (two halves at once) byte for byte, and names a file cut short under either half', async () => {
      // 9 MiB + 3 bytes: two halves, the second not a whole number of pages.
      const big = new Uint8Array(9 * 1024 * 1024 + 3);
      for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24;
      const { header, data } = stPack([['small', 'U8', [5], new Uint8Array([9, 8, 7, 6, 5])], ['big', 'U8', [big.length], big]]);
      const file = await write(stFile(header, data));
      const f = await SafetensorsFile.open(file);
      try {
        expect(Buffer.compare(await f.readTensorBytes('big'), big)).to.equal(0);
        const into = new Uint8Array(big.length + 100).fill(0xee);
        const got = await f.readTensorBytes('big', { into });
        expect(Buffer.compare(got, big)).to.equal(0);
        expect(into[big.length]).to.equal(0xee);
        // shrink the file under the open reader: each half's end, then the first half's
        for (const cut of [big.length - 10, 1024 * 1024]) {
          await fsp.truncate(file, (await fsp.stat(file)).size - (big.length - cut));
          const e = await rejected(f.readTensorBytes('big'));
          expect(e.code).to.equal('ERR_FORMAT');
          expect(e.message).to.include(file).and.include('the file ended');
        }
      } finally {
        await f.close();
      }
    });

    it('reads a header padded with spaces, and one that is not', async () => {
      const { header, data } = stPack([['x', 'U8', [3], new Uint8Array([1, 2, 3])]]);
      for (const pad of [true, false]) {
        const f = await openAndReadAll(await write(stFile(header, data, pad)));
        expect(f.tensors[0]?.byteLength).to.equal(3);
      }
    });

    it('finds duplicate keys that JSON.parse would hide', () => {
      expect(topLevelKeys('{"a":{"x":[1,{"b":"}"}]},"a" : "q\\"x", "c":null}')).to.deep.equal(['a', 'a', 'c']);
      expect(topLevelKeys('{ }')).to.deep.equal([]);
    });
  });

  describe('safetensors reader: every rule of FORMATS.md is enforced with ERR_FORMAT', () => {
    const ok = stPack([
      ['w', 'F32', [2], f32(1, 2)],
      ['v', 'F32', [1], f32(3)],
    ]);

    it('header length: beyond 100,000,000, beyond the file, or a file shorter than 8 bytes', async () => {
      const big = new Uint8Array(16);
      new DataView(big.buffer).setBigUint64(0, 100_000_001n, true);
      await formatError(big, 'limit is 100000000');
      const past = new Uint8Array(16);
      new DataView(past.buffer).setBigUint64(0, 9n, true);
      await formatError(past, 'exceeds the file size');
      const huge = new Uint8Array(8).fill(0xff);
      await formatError(huge, 'limit');
      await formatError(new Uint8Array(5), 'too short');
    });

    it('invalid UTF-8, invalid JSON, a header that is not an object', async () => {
      const bad = stFile('{"a":1}');
      bad[10] = 0xff;
      await formatError(bad, 'not valid UTF-8');
      await formatError(stFile('{"w": {'), 'not valid JSON');
      await formatError(stFile('[1,2]'), 'must be a JSON object');
      await formatError(stFile('null'), 'must be a JSON object');
    });

    it('duplicate names', async () => {
      const text = `{"w":${JSON.stringify(t('F32', [2], 0, 8))},"w":${JSON.stringify(t('F32', [1], 8, 12))}}`;
      await formatError(stFile(text, f32(1, 2, 3)), "tensor 'w' is a duplicate name");
    });

    it('unknown dtypes, bad shapes, bad offsets, sizes that do not match', async () => {
      await formatError(stFile({ w: t('F4', [2], 0, 1) }, new Uint8Array(1)), "tensor 'w' has unknown dtype 'F4'");
      await formatError(stFile({ w: { dtype: 'F32', data_offsets: [0, 4] } }, f32(1)), "tensor 'w' has no shape");
      await formatError(stFile({ w: t('F32', [-1], 0, 4) }, f32(1)), 'non-negative integers');
      await formatError(stFile({ w: t('F32', [1.5], 0, 4) }, f32(1)), 'non-negative integers');
      await formatError(stFile({ w: { dtype: 'F32', shape: [1], data_offsets: [0] } }, f32(1)), 'data_offsets');
      await formatError(stFile({ w: t('F32', [1], -4, 0) }, f32(1)), 'data_offsets');
      await formatError(stFile({ w: t('F32', [3], 0, 8) }, f32(1, 2)), "tensor 'w': shape [3] of F32 needs 12 bytes but data_offsets [0, 8) hold 8");
      await formatError(stFile({ w: t('F32', [2], 8, 0) }, f32(1, 2)), 'begin > end');
      await formatError(stFile({ w: 'x' }), 'must be an object');
      await formatError(stFile({ __metadata__: { a: 1 } }), '__metadata__');
      // Found by npm run fuzz: a dtype nested 100000 deep parsed, then String() of it in the message overflowed the stack (RangeError).
      const deep = `${'['.repeat(100000)}${']'.repeat(100000)}`;
      await formatError(stFile(`{"w": {"dtype": ${deep}, "shape": [1], "data_offsets": [0, 4]}}`, f32(1)), 'the header nests arrays or objects more than 64 deep');
    });

    it('element count x dtype size overflow', async () => {
      await formatError(stFile({ w: t('F32', [2 ** 31, 2 ** 31, 2 ** 31], 0, 8) }, f32(1, 2)), 'needs 39614081257132168796771975168 bytes');
      await formatError(stFile({ w: t('F64', [Number.MAX_SAFE_INTEGER], 0, 8) }, f32(1, 2)), 'needs');
    });

    it('offsets not contiguous from 0: gaps, overlaps, aliasing; data ending before or after the file end', async () => {
      await formatError(stFile({ w: t('F32', [1], 4, 8) }, f32(1, 2)), "tensor 'w' starts at data offset 4, not at the start of the data section: a gap");
      await formatError(stFile({ a: t('F32', [1], 0, 4), b: t('F32', [1], 8, 12) }, f32(1, 2, 3)), 'a gap');
      await formatError(stFile({ a: t('F32', [2], 0, 8), b: t('F32', [2], 4, 12) }, f32(1, 2, 3)), 'overlapping or aliased');
      await formatError(stFile({ a: t('F32', [2], 0, 8), b: t('F32', [2], 0, 8) }, f32(1, 2)), 'overlapping or aliased');
      await formatError(stFile(ok.header, Buffer.concat([ok.data, new Uint8Array(4)])), 'more bytes after them');
      await formatError(stFile(ok.header, ok.data.slice(0, 8)), 'truncated');
    });

    it('empty tensors are valid anywhere, including at the same offset', async () => {
      const f = await openAndReadAll(await write(stFile({ a: t('F32', [0], 0, 0), w: t('F32', [2], 0, 8), b: t('I8', [3, 0], 8, 8), c: t('F32', [0], 8, 8) }, f32(1, 2))));
      expect(f.tensors.map((x) => x.name)).to.deep.equal(['a', 'w', 'b', 'c']);
    });

    it('escapes control characters of hostile names', async () => {
      const file = await write(stFile({ 'a\u001b[31m': t('X', [1], 0, 1) }, new Uint8Array(1)));
      const e = await rejected(openAndReadAll(file));
      expect(e.message).to.include('a\\x1b[31m');
      expect(e.message).not.to.include('\u001b');
    });
  });

  describe('safetensors writer', () => {
    const tensors: [PlannedTensor, Uint8Array][] = [
      [{ name: 'w', dtype: 'F32', shape: [2, 3] }, f32(1, 2, 3, 4, 5, 6)],
      [{ name: 's', dtype: 'BF16', shape: [3] }, bytesOf(new Uint16Array([1, 2, 3]))],
      [{ name: 'e', dtype: 'F32', shape: [0] }, new Uint8Array(0)],
      [{ name: 'i', dtype: 'I64', shape: [2] }, bytesOf(new BigInt64Array([5n, 6n]))],
    ];

    it('round trip: header from the plan, data tensor by tensor, read back exactly', async () => {
      const file = path.join(tmp, 'rt.safetensors');
      const w = await SafetensorsWriter.create(
        file,
        tensors.map(([p]) => p),
        { note: 'x' },
      );
      for (const [p, bytes] of tensors) {
        // A tensor may arrive in parts (e.g. data and scales).
        if (bytes.length > 4) await w.write(p.name, bytes.subarray(0, 4), bytes.subarray(4));
        else await w.write(p.name, bytes);
      }
      await w.close();
      const raw = await fsp.readFile(file);
      const headerLen = Number(raw.readBigUInt64LE(0));
      expect(headerLen % 8).to.equal(0);
      const f = await SafetensorsFile.open(file);
      try {
        expect(f.metadata).to.deep.equal({ note: 'x' });
        expect(f.tensors.map((x) => [x.name, x.dtype, [...x.shape]])).to.deep.equal(tensors.map(([p]) => [p.name, p.dtype, [...p.shape]]));
        for (const [p, bytes] of tensors) expect(bytesOf(await f.readTensorBytes(p.name))).to.deep.equal(Buffer.from(bytes));
      } finally {
        await f.close();
      }
    });

    it('rejects tensors out of order, of the wrong size, or missing at close', async () => {
      const file = path.join(tmp, 'bad.safetensors');
      const w = await SafetensorsWriter.create(
        file,
        tensors.map(([p]) => p),
      );
      expect((await rejected(w.write('s', new Uint8Array(6)))).message).to.include("expected 'w'");
      expect((await rejected(w.write('w', new Uint8Array(5)))).code).to.equal('ERR_SHAPE');
      await w.write('w', new Uint8Array(24));
      expect((await rejected(w.close())).message).to.include('after 1 of 4');
      await w.abort();
    });

    it('shards of a chosen size with a model.safetensors.index.json, read back as one model', async () => {
      const dir = path.join(tmp, 'sharded');
      await fsp.mkdir(dir);
      const plan: PlannedTensor[] = Array.from({ length: 5 }, (_, i) => ({ name: `layer.${i}.weight`, dtype: 'F32', shape: [4, 4] }));
      expect(planShards(plan, 130).map((s) => s.length)).to.deep.equal([2, 2, 1]);
      const w = await ShardedSafetensorsWriter.create(dir, plan, { maxShardBytes: 130 });
      expect(w.files).to.deep.equal(['model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors']);
      for (let i = 0; i < 5; i++) await w.write(`layer.${i}.weight`, new Float32Array(16).fill(i));
      await w.close();
      const index = JSON.parse(await fsp.readFile(path.join(dir, 'model.safetensors.index.json'), 'utf8')) as { metadata: { total_size: number }; weight_map: Record<string, string> };
      expect(index.metadata.total_size).to.equal(5 * 64);
      expect(index.weight_map['layer.4.weight']).to.equal('model-00003-of-00003.safetensors');
      const m = await SafetensorsModel.open(dir);
      try {
        expect(m.shards).to.have.length(3);
        expect(m.tensors.map((x) => x.name)).to.deep.equal(plan.map((p) => p.name));
        for (let i = 0; i < 5; i++) expect(Array.from((await m.readTensor(`layer.${i}.weight`)).data as Float32Array)).to.deep.equal(new Array(16).fill(i));
      } finally {
        await m.close();
      }
      // Found by npm run fuzz: a tensor (or metadata key) named __proto__ is read as any other name, and the
      // writers kept it out of the header and the index (a plain assignment set the prototype): files that did not read back.
      const proto = path.join(tmp, 'proto');
      await fsp.mkdir(proto);
      const protoPlan: PlannedTensor[] = [plan[0] as PlannedTensor, { name: '__proto__', dtype: 'F32', shape: [4, 4] }];
      const wp = await ShardedSafetensorsWriter.create(proto, protoPlan, { maxShardBytes: 64, metadata: { ['__proto__']: 'kept', format: 'pt' } });
      await wp.write('layer.0.weight', new Float32Array(16).fill(1));
      await wp.write('__proto__', new Float32Array(16).fill(2));
      await wp.close();
      const protoIndex = JSON.parse(await fsp.readFile(path.join(proto, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
      expect(Object.keys(protoIndex.weight_map)).to.deep.equal(['layer.0.weight', '__proto__']);
      const mp = await SafetensorsModel.open(proto);
      try {
        expect(mp.tensors.map((x) => x.name)).to.deep.equal(['layer.0.weight', '__proto__']);
        expect(Object.entries(mp.metadata)).to.deep.equal([['__proto__', 'kept'], ['format', 'pt']]);
        expect(Array.from((await mp.readTensor('__proto__')).data as Float32Array)).to.deep.equal(new Array(16).fill(2));
      } finally {
        await mp.close();
      }
      const single = await SafetensorsFile.open(await write(stFile(`{"__metadata__": {"__proto__": "m"}, "__proto__": ${JSON.stringify(t('F32', [1], 0, 4))}}`, f32(5))));
      expect(single.tensors.map((x) => x.name)).to.deep.equal(['__proto__']);
      expect(Object.entries(single.metadata)).to.deep.equal([['__proto__', 'm']]);
      await single.close();
      // One shard: model.safetensors and no index.
      const one = path.join(tmp, 'one');
      await fsp.mkdir(one);
      const w1 = await ShardedSafetensorsWriter.create(one, plan.slice(0, 1));
      await w1.write('layer.0.weight', new Float32Array(16));
      await w1.close();
      expect(await fsp.readdir(one)).to.deep.equal(['model.safetensors']);
    });

    it('folder rules: shard names are plain file names, the index and the shards agree', async () => {
      const mk = async (name: string, index: object | undefined, shards: Record<string, Uint8Array>): Promise<string> => {
        const dir = path.join(tmp, name);
        await fsp.mkdir(dir);
        if (index) await fsp.writeFile(path.join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
        for (const [f, b] of Object.entries(shards)) await fsp.writeFile(path.join(dir, f), b);
        return dir;
      };
      const a = stPack([['a', 'F32', [1], f32(1)]]);
      const b = stPack([['b', 'F32', [1], f32(2)]]);
      const fa = stFile(a.header, a.data);
      const fb = stFile(b.header, b.data);
      const good = await mk('good', { weight_map: { a: '1.safetensors', b: '2.safetensors' } }, { '1.safetensors': fa, '2.safetensors': fb });
      const m = await SafetensorsModel.open(good);
      expect(m.tensors.map((x) => [x.name, x.file])).to.deep.equal([
        ['a', '1.safetensors'],
        ['b', '2.safetensors'],
      ]);
      await m.close();
      const cases: [string, object | undefined, Record<string, Uint8Array>, string][] = [
        ['traversal', { weight_map: { a: '../x.safetensors' } }, {}, "shard '../x.safetensors' is not a plain file name"],
        ['wrongshard', { weight_map: { a: '2.safetensors', b: '2.safetensors' } }, { '2.safetensors': fb }, "tensor 'a' is mapped to 2.safetensors, which does not hold it"],
        ['unlisted', { weight_map: { a: '1.safetensors' } }, { '1.safetensors': stFile(stPack([['a', 'F32', [1], f32(1)], ['z', 'F32', [1], f32(1)]]).header, f32(1, 1)) }, "tensor 'z' is not listed"],
        ['dup', { weight_map: { a: '1.safetensors' } }, { '1.safetensors': fa, '2.safetensors': fa }, ''],
        ['noindex', undefined, { '1.safetensors': fa, '2.safetensors': fb }, 'no model.safetensors.index.json'],
        ['badindex', { weight_map: [1] }, {}, 'weight_map must be an object'],
        // Found by npm run fuzz: a shard the folder lacks was a bare ENOENT.
        ['missingshard', { weight_map: { a: '1.safetensors', b: '3.safetensors' } }, { '1.safetensors': fa, '2.safetensors': fb }, "weight_map names the shard '3.safetensors', which is not in the folder"],
      ];
      for (const [name, index, shards, msg] of cases) {
        const dir = await mk(name, index, shards);
        if (name === 'dup') {
          // A shard the index does not name is ignored (it is not part of the model).
          const d = await SafetensorsModel.open(dir);
          expect(d.shards).to.deep.equal(['1.safetensors']);
          await d.close();
          continue;
        }
        const e = await rejected(SafetensorsModel.open(dir));
        expect(e.code, name).to.equal('ERR_FORMAT');
        expect(e.message, name).to.include(msg);
      }
    });
  });

  describe('safetensors reader: fuzzing the header', function () {
    this.timeout(120_000);
    const base = stPack(
      [
        ['model.layers.0.w', 'F16', [2, 4], bytesOf(new Uint16Array(8).fill(0x3c00))],
        ['b', 'F32', [3], f32(1, 2, 3)],
        ['e', 'I8', [0], new Uint8Array(0)],
        ['i', 'I64', [1], bytesOf(new BigInt64Array([9n]))],
      ],
      { format: 'pt' },
    );
    const baseBytes = stFile(base.header, base.data);
    const headerEnd = 8 + Number(new DataView(baseBytes.buffer).getBigUint64(0, true));
    const text = Buffer.from(baseBytes.subarray(8, headerEnd)).toString('utf8');
    // Positions of number tokens in the JSON: offsets and dims.
    const numbers = [...text.matchAll(/\d+/g)].map((m) => ({ pos: 8 + (m.index as number), len: m[0].length }));
    const EXTREMES = ['0', '1', '7', '8', '9', '16', '4294967296', '9007199254740993', '1e400', '-1', '1.5', '99999999999999999999'];
    const DTYPES = ['"F32"', '"F16"', '"I8"', '"U64"', '"X"', '1', 'null', '"BOOL"'];
    const RUNS = Number(process.env.FUZZ_RUNS ?? 300);

    type Mutation = { kind: 'byte'; pos: number; value: number } | { kind: 'number'; which: number; pick: number } | { kind: 'dtype'; pick: number } | { kind: 'length'; delta: number };
    const mutation: fc.Arbitrary<Mutation> = fc.oneof(
      fc.record({ kind: fc.constant('byte' as const), pos: fc.nat({ max: headerEnd - 1 }), value: fc.nat({ max: 255 }) }),
      fc.record({ kind: fc.constant('number' as const), which: fc.nat({ max: numbers.length - 1 }), pick: fc.nat({ max: EXTREMES.length - 1 }) }),
      fc.record({ kind: fc.constant('dtype' as const), pick: fc.nat({ max: DTYPES.length - 1 }) }),
      fc.record({ kind: fc.constant('length' as const), delta: fc.integer({ min: -16, max: 16 }) }),
    );

    function mutate(ms: readonly Mutation[], cut: number | null): Uint8Array {
      let bytes: Uint8Array = baseBytes.slice();
      for (const m of ms) {
        if (m.kind === 'byte') bytes[m.pos] = m.value;
        else if (m.kind === 'length') {
          const d = new DataView(bytes.buffer, bytes.byteOffset);
          d.setBigUint64(0, BigInt.asUintN(64, d.getBigUint64(0, true) + BigInt(m.delta)), true);
        } else {
          // Text substitutions change the header's length: rebuild the file around the new text.
          const len = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
          if (8 + len > bytes.length) continue;
          let h = Buffer.from(bytes.subarray(8, 8 + len)).toString('latin1');
          if (m.kind === 'number') {
            const at = numbers[m.which] as { pos: number; len: number };
            if (at.pos - 8 + at.len > h.length) continue;
            h = h.slice(0, at.pos - 8) + EXTREMES[m.pick] + h.slice(at.pos - 8 + at.len);
          } else {
            h = h.replace('"F32"', DTYPES[m.pick] as string);
          }
          const hb = Buffer.from(h, 'latin1');
          const out = new Uint8Array(8 + hb.length + (bytes.length - 8 - len));
          new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
          out.set(hb, 8);
          out.set(bytes.subarray(8 + len), 8 + hb.length);
          bytes = out;
        }
      }
      return cut === null ? bytes : bytes.slice(0, cut);
    }

    it('succeeds or throws ERR_FORMAT, reads nothing beyond the file, allocates nothing larger than it', async () => {
      expect((await openAndReadAll(await write(baseBytes))).tensors).to.have.length(4);
      const file = path.join(tmp, 'fuzz.safetensors');
      let failures = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 4 }), fc.option(fc.nat({ max: baseBytes.length }), { freq: 5 }), async (ms, cut) => {
          const bytes = mutate(ms, cut);
          await fsp.writeFile(file, bytes);
          const { calls } = await spyOnReads(async () => {
            try {
              await openAndReadAll(file);
            } catch (e) {
              if (!(e instanceof SlimTensorError) || e.code !== 'ERR_FORMAT') throw e;
              failures++;
            }
          });
          for (const c of calls) {
            expect(c.bufferBytes).to.be.at.most(Math.max(bytes.length, 8));
            expect(c.position + c.length).to.be.at.most(bytes.length);
          }
        }),
        { numRuns: RUNS },
      );
      expect(failures).to.be.above(RUNS / 3);
    });
  });
});
