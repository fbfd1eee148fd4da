// `out` on every operation that allocates a large output (issue 13): the
// result written into the caller's buffers is the result without `out`,
// byte for byte, whatever the buffers held before (two fill patterns); the
// result is (or holds) the `out`; bad `out`s are refused with the error
// codes of quantize's; and an async call treats `out` as the caller's
// memory: marked untransferable here ('mark'), copied and written back
// under SLIMTENSOR_ASYNC_BUFFERS=copy (in a child process).
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import * as workerThreads from 'node:worker_threads';
import { backends, prune, Tensor } from '../lib/index';
import { bytesOf, thrown, transferAway } from './support/assert';
import { outCases } from './support/out-cases';

/** worker_threads.isMarkedAsUntransferable (Node 21+); on Node 20, whether a transfer leaves the buffer in place. */
function isMarked(b: ArrayBufferLike): boolean {
  const f = (workerThreads as { isMarkedAsUntransferable?: (o: unknown) => boolean }).isMarkedAsUntransferable;
  return f ? f(b) : transferAway(b) !== 'moved';
}

function expectSameBytes(got: ArrayBufferView[], want: ArrayBufferView[], what: string): void {
  expect(got.length, `${what}: outputs`).to.equal(want.length);
  got.forEach((g, i) => expect(Buffer.compare(bytesOf(g), bytesOf(want[i])), `${what}: output ${i}`).to.equal(0));
}

describe('out: every operation writes into caller buffers', () => {
  for (const c of outCases()) {
    describe(c.name, () => {
      it('sync and async, over two fill patterns: the bytes of the call without out, and the out returned', async () => {
        const want = c.plain();
        for (const async of [false, true]) {
          for (const fill of [0x00, 0xa5]) {
            const r = await c.withOut(fill, async);
            const what = `${async ? 'async' : 'sync'}, fill 0x${fill.toString(16)}`;
            expect(r.returned, `${what}: the result holds the out`).to.equal(true);
            expectSameBytes(r.outputs, want, what);
          }
        }
      });

      for (const bad of c.bad) {
        it(`refuses ${bad.what}: ${bad.code}`, () => {
          const e = thrown(bad.call);
          expect(e.code).to.equal(bad.code);
          expect(e.message).to.match(bad.message);
        });
      }
    });
  }
});

describe('out: async calls protect the buffers passed as out', () => {
  const mode = backends().buffers.async;

  it(`an async call's out buffers are the caller's (${mode}): marked, where its own outputs are not`, async function () {
    if (mode !== 'mark') {
      this.test!.title += ' (skipped: this runtime copies instead of marking; the child below covers copy mode)';
      this.skip();
    }
    for (const c of outCases()) {
      const r = await c.withOut(0, true);
      for (const b of r.buffers) expect(isMarked(b.buffer), `${c.name}: an out buffer`).to.equal(true);
    }
    const w = Tensor.from(new Float32Array(4 * 16).fill(1), [4, 16]);
    const own = await prune(w, { pattern: '2:4' });
    expect(transferAway(own.tensor.data.buffer)).to.equal('moved');
  });

  it('SLIMTENSOR_ASYNC_BUFFERS=copy: each async call with out gives the sync bytes, and an out transferred mid-call rejects with ERR_DETACHED', () => {
    const child = path.join(__dirname, 'support', 'out-child.ts');
    const r = spawnSync(process.execPath, ['--import', 'tsx', child], {
      cwd: path.join(__dirname, '..'),
      env: { ...process.env, SLIMTENSOR_ASYNC_BUFFERS: 'copy' },
      encoding: 'utf8',
      timeout: 120000,
    });
    expect(r.status, r.stderr.slice(-2000)).to.equal(0);
    const report = JSON.parse(r.stdout) as { mode: string; cases: Record<string, string>; transferred: string };
    expect(report.mode).to.equal('copy');
    const names = outCases().map((c) => c.name);
    expect(Object.keys(report.cases)).to.deep.equal(names);
    for (const n of names) expect(report.cases[n], n).to.equal('same');
    expect(report.transferred).to.equal('ERR_DETACHED');
  });
});
