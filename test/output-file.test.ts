// OutputFile (lib/formats/output-file.ts): the writers' file, written
// around the page cache when large. Whatever the mode, the file holds
// exactly the bytes given, in order; direct mode is checked to be in use
// where this machine allows it, and to fall back where it does not.
import { expect } from 'chai';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { compressModel, GGUFReader } from '../lib/index';
import { DIRECT_MIN_BYTES, OutputFile } from '../lib/formats/output-file';
import { GGUFWriter } from '../lib/formats/gguf-writer';
import { SafetensorsModel, ShardedSafetensorsWriter } from '../lib/formats/safetensors';
import { rejected } from './support/assert';
import { Rng } from './support/random';
import { skip } from './support/skip';

const MODEL = path.join(__dirname, '..', 'models', 'stories260K.gguf');
const HAS_O_DIRECT = (fs.constants as Record<string, number | undefined>).O_DIRECT !== undefined;

/** Random bytes cut into pieces of random sizes (empty, tiny, and larger than a staging buffer). */
function pieces(total: number, seed: number): Uint8Array[] {
  const rng = new Rng(seed);
  const all = new Uint8Array(total);
  for (let i = 0; i < total; i++) all[i] = rng.u32() & 0xff;
  const out: Uint8Array[] = [];
  const sizes = [0, 1, 4095, 4097, 9 * 1024 * 1024, 3];
  let at = 0;
  for (let k = 0; at < total; k++) {
    const n = Math.min(total - at, k < sizes.length ? (sizes[k] as number) : 1 + rng.int(3 * 1024 * 1024));
    out.push(all.subarray(at, at + n));
    at += n;
  }
  return out;
}

async function writePieces(f: OutputFile, parts: readonly Uint8Array[]): Promise<Buffer> {
  let at = 0;
  for (const p of parts) {
    await f.write(p, at);
    at += p.length;
  }
  await f.close();
  return Buffer.concat(parts);
}

async function withEnv<T>(value: string | undefined, run: () => Promise<T>): Promise<T> {
  const old = process.env.SLIMTENSOR_DIRECT_IO;
  if (value === undefined) delete process.env.SLIMTENSOR_DIRECT_IO;
  else process.env.SLIMTENSOR_DIRECT_IO = value;
  try {
    return await run();
  } finally {
    if (old === undefined) delete process.env.SLIMTENSOR_DIRECT_IO;
    else process.env.SLIMTENSOR_DIRECT_IO = old;
  }
}

describe('OutputFile: large outputs around the page cache', () => {
  let tmp: string;
  before(async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-outfile-'));
  });
  after(async () => {
    await fsp.rm(tmp, { recursive: true, force: true });
  });

  it('direct: holds exactly the bytes written, in pieces of any size, cut to its length', async function () {
    if (!HAS_O_DIRECT) skip(this, `this platform (${process.platform}) has no O_DIRECT`);
    const file = path.join(tmp, 'direct.bin');
    const f = await OutputFile.create(file, { direct: true });
    // The temporary folder is on a filesystem with direct I/O on this project's machines (ext4).
    expect(f.direct, `${tmp} refused O_DIRECT`).to.equal(true);
    const want = await writePieces(f, pieces(21 * 1024 * 1024 + 13, 1));
    const got = await fsp.readFile(file);
    expect(got.length).to.equal(want.length);
    expect(Buffer.compare(got, want)).to.equal(0);
  });

  it('buffered (and every mode) writes the same bytes; a length that is a whole number of blocks is not padded', async () => {
    for (const direct of [false, true]) {
      const file = path.join(tmp, `even-${direct}.bin`);
      const want = await writePieces(await OutputFile.create(file, { direct }), pieces(8 * 1024 * 1024 + 4096, 2));
      expect(Buffer.compare(await fsp.readFile(file), want), `direct ${direct}`).to.equal(0);
    }
  });

  it("'auto' goes direct from DIRECT_MIN_BYTES on; SLIMTENSOR_DIRECT_IO=0 / =1 turn it off / on for every size", async function () {
    if (!HAS_O_DIRECT) skip(this, `this platform (${process.platform}) has no O_DIRECT`);
    const mode = async (plannedBytes: number): Promise<boolean> => {
      const f = await OutputFile.create(path.join(tmp, 'auto.bin'), { plannedBytes });
      const d = f.direct;
      await f.close();
      return d;
    };
    await withEnv(undefined, async () => {
      expect(await mode(DIRECT_MIN_BYTES - 1)).to.equal(false);
      expect(await mode(DIRECT_MIN_BYTES)).to.equal(true);
    });
    await withEnv('0', async () => expect(await mode(DIRECT_MIN_BYTES * 4)).to.equal(false));
    await withEnv('1', async () => expect(await mode(10)).to.equal(true));
  });

  it('falls back to the page cache where the filesystem refuses O_DIRECT at open or at the first write, writing the same bytes', async () => {
    const einval = (): NodeJS.ErrnoException => Object.assign(new Error('EINVAL: invalid argument'), { code: 'EINVAL' });
    const O_DIRECT = (fs.constants as Record<string, number | undefined>).O_DIRECT ?? 0;
    const isDirect = (flags: number | string): boolean => typeof flags === 'number' && (flags & O_DIRECT) !== 0 && O_DIRECT !== 0;
    // A filesystem without direct I/O at all: open fails with EINVAL.
    const refusesOpen = (f: string, flags: number | string, mode?: number): Promise<fsp.FileHandle> => (isDirect(flags) ? Promise.reject(einval()) : fsp.open(f, flags, mode));
    // One that opens but fails each direct write (some network and FUSE filesystems).
    const refusesWrite = async (f: string, flags: number | string, mode?: number): Promise<fsp.FileHandle> => {
      const fh = await fsp.open(f, typeof flags === 'number' ? flags & ~O_DIRECT : flags, mode);
      if (!isDirect(flags)) return fh;
      return new Proxy(fh, {
        get: (t, k) => {
          if (k === 'write') return () => Promise.reject(einval());
          const v: unknown = Reflect.get(t, k);
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
        },
      });
    };
    for (const [name, open] of [['at open', refusesOpen], ['at write', refusesWrite]] as const) {
      const file = path.join(tmp, `fallback-${name.replace(' ', '-')}.bin`);
      const f = await OutputFile.create(file, { direct: true, open });
      if (name === 'at open') expect(f.direct, name).to.equal(false);
      const want = await writePieces(f, pieces(19 * 1024 * 1024 + 7, 3));
      expect(f.direct, name).to.equal(false);
      expect(Buffer.compare(await fsp.readFile(file), want), name).to.equal(0);
    }
  });

  it('refuses writes out of order or after close; abort closes without throwing', async () => {
    for (const direct of [false, true]) {
      const f = await OutputFile.create(path.join(tmp, `order-${direct}.bin`), { direct });
      await f.write(new Uint8Array(10), 0);
      const e = await rejected(f.write(new Uint8Array(4), 20));
      expect(e.code).to.equal('ERR_VALUE');
      expect(e.message).to.match(/ends at 10/);
      await f.close();
      expect((await rejected(f.write(new Uint8Array(1), 10))).message).to.match(/already closed/);
      const g = await OutputFile.create(path.join(tmp, `abort-${direct}.bin`), { direct });
      await g.write(new Uint8Array(9 * 1024 * 1024), 0);
      await g.abort();
      await g.abort();
      expect((await rejected(g.close())).message).to.match(/already closed/);
    }
  });

  it('GGUF and sharded safetensors writers going direct write the same files as through the page cache', async function () {
    if (!HAS_O_DIRECT) skip(this, `this platform (${process.platform}) has no O_DIRECT`);
    const src = await GGUFReader.open(MODEL);
    try {
      const plan = { entries: src.entries, tensors: src.tensors.map((t) => ({ name: t.name, shape: t.shape, type: t.type })) };
      const files: Buffer[] = [];
      for (const env of ['1', '0']) {
        const out = path.join(tmp, `copy-${env}.gguf`);
        await withEnv(env, async () => {
          const w = await GGUFWriter.create(out, plan);
          for (const t of src.tensors) await w.write(t.name, await src.readTensorBytes(t));
          await w.close();
        });
        files.push(await fsp.readFile(out));
      }
      expect(Buffer.compare(files[0] as Buffer, await fsp.readFile(MODEL))).to.equal(0);
      expect(Buffer.compare(files[1] as Buffer, await fsp.readFile(MODEL))).to.equal(0);

      const f32 = src.tensors.filter((t) => t.type === 'F32');
      const planned = f32.map((t) => ({ name: t.name, shape: t.shape, dtype: 'F32' as const }));
      const shards: Buffer[][] = [];
      for (const env of ['1', '0']) {
        const dir = path.join(tmp, `st-${env}`);
        await fsp.mkdir(dir);
        await withEnv(env, async () => {
          const w = await ShardedSafetensorsWriter.create(dir, planned, { maxShardBytes: 64 * 1024 });
          for (const t of f32) await w.write(t.name, await src.readTensorBytes(t));
          await w.close();
          shards.push(await Promise.all(w.files.map((n) => fsp.readFile(path.join(dir, n)))));
        });
      }
      expect((shards[0] as Buffer[]).length).to.be.greaterThan(1);
      (shards[0] as Buffer[]).forEach((b, i) => expect(Buffer.compare(b, (shards[1] as Buffer[])[i] as Buffer), `shard ${i}`).to.equal(0));
      const m = await SafetensorsModel.open(path.join(tmp, 'st-1'));
      try {
        expect(m.tensors.map((t) => t.name).sort()).to.deep.equal(f32.map((t) => t.name).sort());
      } finally {
        await m.close();
      }
    } finally {
      await src.close();
    }
  });

  it('compressModel writes the same q8_0 file direct and through the page cache', async function () {
    if (!HAS_O_DIRECT) skip(this, `this platform (${process.platform}) has no O_DIRECT`);
    const outs: Buffer[] = [];
    for (const env of ['1', '0']) {
      const out = path.join(tmp, `q8-${env}.gguf`);
      await withEnv(env, () => compressModel({ input: MODEL, output: out, recipe: 'q8_0' }));
      outs.push(await fsp.readFile(out));
    }
    expect(Buffer.compare(outs[0] as Buffer, outs[1] as Buffer)).to.equal(0);
  });
});
