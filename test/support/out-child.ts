// Child process of test/out.test.ts, run with SLIMTENSOR_ASYNC_BUFFERS=copy:
// each operation of the `out` table async (the kernel on private copies of
// the caller's buffers, written back at the end) against its sync bytes,
// and an `out` transferred away while the call runs. Prints one JSON line.
import { backends, lowRank, SlimTensorError, Tensor } from '../../lib/index';
import { outCases } from './out-cases';
import { Rng } from './random';

function sameBytes(a: ArrayBufferView[], b: ArrayBufferView[]): boolean {
  return a.length === b.length && a.every((x, i) => Buffer.compare(Buffer.from(x.buffer, x.byteOffset, x.byteLength), Buffer.from(b[i]!.buffer, b[i]!.byteOffset, b[i]!.byteLength)) === 0);
}

async function main(): Promise<void> {
  const cases: Record<string, string> = {};
  for (const c of outCases()) {
    const want = c.plain();
    const r = await c.withOut(0x5a, true);
    cases[c.name] = !r.returned ? 'not returned' : sameBytes(r.outputs, want) ? 'same' : 'different';
  }
  // A factorization long enough to transfer its out while it runs: the
  // kernel writes its private copy, the caller's memory has moved, the call rejects.
  const w = Tensor.from(new Rng(5).normals(384 * 384), [384, 384]);
  const out = { left: Tensor.zeros([384, 64], 'f32'), right: Tensor.zeros([64, 384], 'f32') };
  const pending = lowRank(w, { rank: 64, method: 'exact', out, threads: 1 });
  structuredClone(out.left.data.buffer, { transfer: [out.left.data.buffer] });
  let transferred: string;
  try {
    await pending;
    transferred = 'resolved';
  } catch (e) {
    transferred = e instanceof SlimTensorError ? e.code : String(e);
  }
  process.stdout.write(JSON.stringify({ mode: backends().buffers.async, cases, transferred }) + '\n');
}

void main();
