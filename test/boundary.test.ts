// The native boundary: async work on the thread pool, worker_threads,
// buffers detached mid-call, error codes, backends and thread settings.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { MessageChannel, Worker } from 'node:worker_threads';
import * as workerThreads from 'node:worker_threads';
import {
  backends,
  dequantize,
  getThreads,
  quantize,
  quantizeSync,
  setThreads,
  Tensor,
  type QuantizeOptions,
} from '../lib/index';
import { bytesOf, rejected, thrown, transferAway } from './support/assert';
import { Rng } from './support/random';
import { skip } from './support/skip';

/** worker_threads.isMarkedAsUntransferable (Node 21+); on Node 20, whether a transfer leaves the buffer in place. */
function isMarkedAsUntransferable(b: ArrayBufferLike): boolean {
  const f = (workerThreads as { isMarkedAsUntransferable?: (o: unknown) => boolean }).isMarkedAsUntransferable;
  return f ? f(b) : transferAway(b) !== 'moved';
}

describe('boundary: asynchronous calls', () => {
  it('do not block the event loop', async () => {
    const t = Tensor.from(new Rng(1).normals(1024 * 4096), [1024, 4096]);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    await quantize(t, { format: 'q4_0', search: 'mse', threads: 1 });
    clearInterval(timer);
    expect(ticks).to.be.greaterThan(0);
  });

  it('agree across 4 worker_threads running at once', async () => {
    const options: QuantizeOptions[] = [
      { format: 'q4_0' },
      { format: 'q8_0', search: 'mse' },
      { format: 'int4', groupSize: 64, symmetric: false },
      { format: 'int8', groupSize: 'channel' },
    ];
    const job = { seed: 21, rows: 96, cols: 512, options };
    const t = Tensor.from(new Rng(job.seed).normals(job.rows * job.cols), [job.rows, job.cols]);
    const expected = options.map((o) => quantizeSync(t, o));
    const script = path.join(__dirname, 'support', 'quantize-worker.ts');
    const runs = await Promise.all(
      Array.from({ length: 4 }, () =>
        new Promise<Array<{ data: ArrayBufferView; scales?: ArrayBufferView; zeros?: ArrayBufferView }>>((resolve, reject) => {
          // tsx's CommonJS hook lets the worker load TypeScript directly
          const w = new Worker(`require('tsx/cjs'); require(${JSON.stringify(script)});`, { eval: true, workerData: job });
          w.once('message', (m: unknown) => {
            void w.terminate();
            if (m && typeof m === 'object' && 'error' in m) reject(new Error(String((m as { error: unknown }).error)));
            else resolve(m as Array<{ data: ArrayBufferView }>);
          });
          w.once('error', reject);
        }),
      ),
    );
    for (const run of runs) {
      run.forEach((r, i) => {
        const q = expected[i]!;
        expect(Buffer.compare(bytesOf(r.data), bytesOf(q.data)), `format ${i} data`).to.equal(0);
        expect(Buffer.compare(bytesOf(r.scales), bytesOf(q.scales?.data)), `format ${i} scales`).to.equal(0);
        expect(Buffer.compare(bytesOf(r.zeros), bytesOf(q.zeros?.data)), `format ${i} zeros`).to.equal(0);
      });
    }
  });

  // The crash-prone versions (the receiver collected while the kernel runs,
  // and SLIMTENSOR_ASYNC_BUFFERS=copy) run in a child: test/safety.test.ts.
  const mode = backends().buffers.async;

  it(`a buffer transferred by structuredClone during the call (${mode}): marked buffers stay, copies are detached`, async () => {
    const x = new Rng(2).normals(512 * 2048);
    const t = Tensor.from(x, [512, 2048]);
    const pending = quantize(t, { format: 'q4_1', search: 'mse', threads: 1 });
    const how = transferAway(x.buffer);
    if (mode === 'mark') {
      // Node 20 clones a marked buffer instead of moving it; 21+ refuses.
      expect(how).to.be.oneOf(['copied', 'refused']);
      expect(x.length).to.equal(512 * 2048);
      const q = await pending;
      expect(quantizeSync(t, { format: 'q4_1', search: 'mse', threads: 1 }).data).to.deep.equal(q.data);
    } else {
      expect(how).to.equal('moved');
      const e = await rejected(pending);
      expect(e.code).to.equal('ERR_DETACHED');
      expect(e.message).to.match(/^quantize: input was detached or resized while the operation ran/);
    }
  });

  it(`a buffer transferred to a MessagePort during the call (${mode})`, async () => {
    const x = new Rng(3).normals(512 * 2048);
    const importance = new Float32Array(2048).fill(1);
    const t = Tensor.from(x, [512, 2048]);
    const pending = quantize(t, { format: 'int4', importance, threads: 1 });
    const { port1, port2 } = new MessageChannel();
    try {
      port1.postMessage(importance.buffer, [importance.buffer]);
    } catch {
      // Node 21+: a marked buffer is not transferable
    }
    if (mode === 'mark') {
      expect(importance.length).to.equal(2048);
      const q = await pending;
      expect(q.data).to.deep.equal(quantizeSync(t, { format: 'int4', importance, threads: 1 }).data);
    } else {
      const e = await rejected(pending);
      expect(e.code).to.equal('ERR_DETACHED');
      expect(e.message).to.match(/importance was detached/);
    }
    port1.close();
    port2.close();
  });

  it('outputs made for an async call stay transferable; inputs it read are marked', async () => {
    const x = new Rng(5).normals(64 * 256);
    const q = await quantize(Tensor.from(x, [64, 256]), { format: 'q8_0' });
    expect(transferAway(q.data.buffer)).to.equal('moved'); // the result was not marked
    if (mode === 'mark') expect(isMarkedAsUntransferable(x.buffer)).to.equal(true);
  });

  it('an input detached before the call is rejected up front', async () => {
    const x = new Float32Array(64);
    const t = Tensor.from(x, [2, 32]);
    structuredClone(x.buffer, { transfer: [x.buffer] });
    const e = await rejected(quantize(t, { format: 'q8_0' }));
    expect(e.code).to.equal('ERR_DETACHED');
    expect(e.message).to.match(/input holds 0 elements but its shape needs 64/);
  });
});

describe('boundary: every error code is reachable', () => {
  const t = Tensor.from(new Float32Array(4 * 128), [4, 128]);
  // Why kernel 'cuda' cannot run here, as the addon says it: "this build has
  // no CUDA kernels (…)" for the CPU-only build, the device's reason for a
  // CUDA build without one (npm run build:cuda into build/).
  const cuda = backends().cuda;
  const noCuda = new RegExp(`^quantizeSync: ${(cuda.reason ?? '').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`);
  const cases: Array<[string, () => unknown, string, RegExp]> = [
    ['row length not a multiple of the block', () => quantizeSync(Tensor.from(new Float32Array(4 * 40), [4, 40]), { format: 'q4_0' }), 'ERR_SHAPE', /last dimension 40 is not a multiple of q4_0 blocks of 32/],
    ['row length not a multiple of the group', () => quantizeSync(t, { format: 'int4', groupSize: 48 }), 'ERR_SHAPE', /not a multiple of the group size 48/],
    ['importance of the wrong length', () => quantizeSync(t, { format: 'int4', importance: new Float32Array(3) }), 'ERR_SHAPE', /importance has 3 values/],
    ['integer input', () => quantizeSync(Tensor.from(new Int32Array(64), [2, 32]), { format: 'q8_0' }), 'ERR_DTYPE', /input has dtype i32; expected f32, f16, bf16/],
    ['scale dtype', () => quantizeSync(t, { format: 'int8', scaleDtype: 'i8' as never }), 'ERR_DTYPE', /scaleDtype must be f16, bf16 or f32/],
    ['unknown format', () => quantizeSync(t, { format: 'iq2_xs' as never }), 'ERR_VALUE', /format must be one of q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k, int4, int8; got "iq2_xs"/],
    ['missing options', () => quantizeSync(t, undefined as never), 'ERR_VALUE', /options.format is required/],
    ['unknown option', () => quantizeSync(t, { format: 'q4_0', group: 32 } as never), 'ERR_VALUE', /unknown option "group"/],
    ['groupSize on a GGUF format', () => quantizeSync(t, { format: 'q4_0', groupSize: 64 }), 'ERR_VALUE', /fixed blocks of 32/],
    ['bad group size', () => quantizeSync(t, { format: 'int4', groupSize: 0 }), 'ERR_VALUE', /groupSize must be a positive integer/],
    ['importance without search', () => quantizeSync(t, { format: 'int4', search: 'none', importance: new Float32Array(128) }), 'ERR_VALUE', /needs search: 'mse'/],
    ['negative importance', () => quantizeSync(t, { format: 'int4', importance: new Float32Array(128).fill(-1) }), 'ERR_VALUE', /importance\[0\] is -1/],
    ['NaN input', () => quantizeSync(Tensor.from(new Float32Array([1, NaN, ...new Array(30).fill(0)]), [1, 32]), { format: 'q4_0' }), 'ERR_VALUE', /non-finite value \(NaN\) at index \[0, 1\]/],
    ['bad thread count', () => quantizeSync(t, { format: 'q4_0', threads: 0 }), 'ERR_VALUE', /threads must be an integer in 1..1024/],
    ['not a tensor', () => quantizeSync(new Float32Array(64) as never, { format: 'q4_0' }), 'ERR_VALUE', /input must be a Tensor/],
    ['no usable CUDA build or device', () => quantizeSync(t, { format: 'q4_0', kernel: 'cuda' }), 'ERR_UNSUPPORTED', noCuda],
    ['setThreads out of range', () => setThreads(-1), 'ERR_VALUE', /n must be an integer in 0..1024/],
  ];
  for (const [what, call, code, message] of cases) {
    it(`${code}: ${what}`, function () {
      if (message === noCuda && cuda.available) skip(this, 'a CUDA device is available: kernel cuda runs');
      if (message === noCuda) {
        // The pattern is only as strong as the reason it quotes.
        expect(cuda.reason).to.match(cuda.compiled ? /\w{8}/ : /^this build has no CUDA kernels \(build them with `npm run build:cuda`/);
      }
      const err = thrown(call);
      expect(err.code).to.equal(code);
      expect(err.message).to.match(message);
    });
  }

  it('async calls reject with the same errors', async () => {
    const e = await rejected(quantize(Tensor.from(new Float32Array(4 * 40), [4, 40]), { format: 'q4_1' }));
    expect(e.code).to.equal('ERR_SHAPE');
    const n = await rejected(quantize(Tensor.from(new Float32Array([Infinity, ...new Array(31).fill(0)]), [1, 32]), { format: 'int8', groupSize: 32 }));
    expect(n.code).to.equal('ERR_VALUE');
    expect(n.message).to.match(/^quantize: input has a non-finite value \(Infinity\) at index \[0, 0\]/);
    const d = await rejected(dequantize({} as never));
    expect(d.code).to.equal('ERR_VALUE');
  });
});

describe('boundary: backends and threads', () => {
  const node = process.execPath;
  const run = (code: string, env: Record<string, string>) =>
    execFileSync(node, ['--import', 'tsx', '-e', code], { env: { ...process.env, ...env }, cwd: path.join(__dirname, '..'), encoding: 'utf8' }).trim();

  it('backends() reports the CPU kernel and CUDA with a reason', () => {
    const b = backends();
    expect(['avx512', 'avx2', 'scalar']).to.include(b.cpu.kernel);
    expect(b.cpu.threads).to.be.at.least(1);
    expect(b.cuda.compiled).to.be.a('boolean');
    if (!b.cuda.available) expect(b.cuda.reason).to.be.a('string').and.not.equal('');
  });

  it('setThreads changes the pool size and 0 restores the default', () => {
    const before = getThreads();
    setThreads(1);
    expect(getThreads()).to.equal(1);
    expect(backends().cpu.threads).to.equal(1);
    setThreads(0);
    expect(getThreads()).to.equal(before);
  });

  it('SLIMTENSOR_THREADS sets the default thread count', () => {
    expect(run("console.log(require('./lib/index').getThreads())", { SLIMTENSOR_THREADS: '3' })).to.equal('3');
  });

  it('SLIMTENSOR_ISA=avx2 turns the AVX-512 loops off and gives the same bytes', () => {
    const code = `
      const st = require('./lib/index');
      const { Rng } = require('./test/support/random');
      const t = st.Tensor.from(new Rng(6).normals(16 * 256), [16, 256]);
      const q = st.quantizeSync(t, { format: 'int4', groupSize: 32, search: 'mse' });
      let avx512 = 'none';
      try { st.quantizeSync(t, { format: 'q4_0', kernel: 'avx512' }); } catch (e) { avx512 = e.code; }
      console.log(st.backends().cpu.kernel, Buffer.from(q.data.buffer).toString('base64'), Buffer.from(q.scales.data.buffer).toString('base64'), avx512);`;
    const [kernel, data, scales, avx512] = run(code, { SLIMTENSOR_ISA: 'avx2' }).split(' ');
    expect(kernel).to.equal(backends().cpu.kernel === 'scalar' ? 'scalar' : 'avx2');
    expect(avx512).to.equal('ERR_UNSUPPORTED');
    const q = quantizeSync(Tensor.from(new Rng(6).normals(16 * 256), [16, 256]), { format: 'int4', groupSize: 32, search: 'mse' });
    expect(data).to.equal(Buffer.from(q.data.buffer).toString('base64'));
    expect(scales).to.equal(Buffer.from(q.scales!.data.buffer).toString('base64'));
  });

  it('SLIMTENSOR_ISA=scalar runs the reference and gives the same bytes', () => {
    const code = `
      const st = require('./lib/index');
      const { Rng } = require('./test/support/random');
      const t = st.Tensor.from(new Rng(4).normals(8 * 256), [8, 256]);
      const q = st.quantizeSync(t, { format: 'q4_0' });
      let avx2 = 'none';
      try { st.quantizeSync(t, { format: 'q4_0', kernel: 'avx2' }); } catch (e) { avx2 = e.code; }
      console.log(st.backends().cpu.kernel, avx2, Buffer.from(q.data).toString('base64'));`;
    const [kernel, avx2, b64] = run(code, { SLIMTENSOR_ISA: 'scalar' }).split(' ');
    expect(kernel).to.equal('scalar');
    expect(avx2).to.equal('ERR_UNSUPPORTED');
    const t = Tensor.from(new Rng(4).normals(8 * 256), [8, 256]);
    expect(b64).to.equal(Buffer.from(quantizeSync(t, { format: 'q4_0' }).data).toString('base64'));
  });
});
