// Child process of test/safety.test.ts: runs the ways a plain-JS program
// could crash, abort or hang the process at the native boundary (issue 18)
// named on its command line, one after the other, and prints what each
// call returned as one JSON line per scenario. The parent asserts that the
// child exited normally and what it printed. Sizes are the
// smallest that reproduced each crash on the code before the fix (noted per
// scenario); the delays are swept because where a kernel is when the input
// changes decides what goes wrong.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { binding } from '../../lib/native';
import {
  dequantize,
  dequantizeSync,
  distillLoss,
  distillLossSync,
  pruneUnstructured,
  pruneUnstructuredSync,
  QuantizedTensor,
  quantize,
  quantizeSync,
  SlimTensorError,
  Tensor,
  backends,
} from '../../lib/index';

type Outcome = Record<string, unknown>;

/** The error code of a rejection or throw ('none' when it succeeded). */
async function codeOf(f: () => unknown): Promise<string> {
  try {
    await f();
    return 'none';
  } catch (e) {
    return e instanceof SlimTensorError ? e.code : `not a SlimTensorError: ${String(e)}`;
  }
}

function spin(ms: number): void {
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    // busy: the kernel runs on the pool meanwhile
  }
}

const DELAYS = [0, 0.25, 0.5, 1, 2, 4, 8];

function sameBytes(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

function logits(rows: number, cols: number): Tensor {
  const x = new Float32Array(rows * cols);
  for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.37) * 3;
  return Tensor.from(x, [rows, cols]);
}

// 1. Labels rewritten during async distillLoss (out-of-bounds write before
// the fix: 128×8192 with labels[R-1] = 2e9 gave SIGSEGV, with C+3 a
// silently overwritten canary after the gradient). The labels are read
// when the call starts, so every call returns the sync result.
async function labels(): Promise<Outcome> {
  const R = 128, C = 8192;
  const s = logits(R, C);
  const labels = new Int32Array(R).map((_, i) => (i * 7) % C);
  const want = distillLossSync(s, s, { labels, alpha: 0, threads: 1 });
  const outcomes: string[] = [];
  let canary = true;
  for (const bad of [2e9, C + 3]) {
    for (const d of DELAYS) {
      labels.set(labels.map((_, i) => (i * 7) % C));
      const space = new Float32Array(R * C + 1024).fill(7);
      const grad = Tensor.from(space.subarray(0, R * C), [R, C]);
      const p = distillLoss(s, s, { labels, alpha: 0, threads: 1, grad });
      spin(d);
      labels[R - 1] = bad;
      try {
        const r = await p;
        outcomes.push(r.loss === want.loss && sameBytes(grad.data, want.grad!.data) && sameBytes(r.rowLoss, want.rowLoss) ? 'same' : 'different');
      } catch (e) {
        outcomes.push((e as SlimTensorError).code);
      }
      canary &&= space.subarray(R * C).every((v) => v === 7);
    }
  }
  return { outcomes, canary };
}

// 2. Top-k teacher indices rewritten during async distillLoss (SIGSEGV
// before the fix at 128×8192, k = 8).
async function topk(): Promise<Outcome> {
  const R = 128, C = 8192, k = 8;
  const s = logits(R, C);
  const fresh = () => new Int32Array(R * k).map((_, i) => ((i % k) * 977 + Math.floor(i / k)) % C);
  const indices = fresh();
  const logprobs = new Float32Array(R * k).fill(Math.log(1 / k));
  const want = distillLossSync(s, { indices, logprobs }, { alpha: 1, threads: 1 });
  const outcomes: string[] = [];
  for (const d of DELAYS) {
    indices.set(fresh());
    const p = distillLoss(s, { indices, logprobs }, { alpha: 1, threads: 1 });
    spin(d);
    indices.fill(2e9);
    try {
      const r = await p;
      outcomes.push(r.loss === want.loss && sameBytes(r.grad!.data, want.grad!.data) ? 'same' : 'different');
    } catch (e) {
      outcomes.push((e as SlimTensorError).code);
    }
  }
  return { outcomes };
}

// 3. The input of async pruneUnstructured rewritten between its passes
// (before the fix, 4M elements of 2.0 refilled with 1.0 after ~1 ms read
// past the 32768-entry histogram: threshold 2.0078125, a value the input
// never held; 64M elements gave SIGSEGV). Now: a threshold the input held
// (all of it pruned), or ERR_VALUE saying the input changed.
async function unstructured(): Promise<Outcome> {
  const N = 1 << 22;
  const a = new Float32Array(N);
  const t = Tensor.from(a, [N / 1024, 1024]);
  const outcomes: string[] = [];
  for (const d of DELAYS) {
    a.fill(2);
    const p = pruneUnstructured(t, { sparsity: 1, threads: 1 });
    spin(d);
    a.fill(1);
    try {
      const r = await p;
      outcomes.push((r.threshold === 1 || r.threshold === 2) && r.pruned === N ? 'held' : `threshold ${r.threshold}, pruned ${r.pruned}`);
    } catch (e) {
      const err = e as SlimTensorError;
      outcomes.push(err.code === 'ERR_VALUE' && /input changed while the operation ran/.test(err.message) ? 'changed' : `${err.code}: ${err.message}`);
    }
  }
  return { outcomes };
}

// 4. worker.terminate() while an async call runs in that worker (before the
// fix: "terminate called after throwing an instance of 'Napi::Error'",
// exit 134, at 64×1024 q4_1 mse, on the resolve and on the reject path).
async function terminate(): Promise<Outcome> {
  const lib = JSON.stringify(require.resolve('../../lib/index'));
  const runs: string[] = [];
  for (const path of ['resolve', 'reject']) {
    const code = `
      require('tsx/cjs');
      const st = require(${lib});
      const { parentPort } = require('node:worker_threads');
      const x = new Float32Array(256 * 1024).map((_, i) => Math.sin(i));
      if (${path === 'reject'}) x[x.length - 1] = NaN;
      const p = st.quantize(st.Tensor.from(x, [256, 1024]), { format: 'q4_1', search: 'mse', threads: 1 });
      parentPort.postMessage('started');
      p.then(() => parentPort.postMessage('settled'), () => parentPort.postMessage('settled'));`;
    const w = new Worker(code, { eval: true });
    runs.push(
      await new Promise<string>((resolve, reject) => {
        w.on('error', reject);
        w.on('message', (m) => {
          if (m === 'started') void w.terminate().then(() => resolve(`${path}: terminated`));
          else resolve(`${path}: settled before terminate`);
        });
      }),
    );
  }
  // The addon still works in this thread.
  const q = await quantize(logits(4, 64), { format: 'q8_0' });
  return { runs, after: q.data.byteLength };
}

// 5, 6, 11. Buffers whose memory could change size or be shared with other
// threads are refused before any kernel runs: a resizable ArrayBuffer as a
// QuantizedTensor part or as importance (SIGSEGV before the fix when
// resized to 0 during async dequantize / quantize at 256×4096), and a
// SharedArrayBuffer anywhere (a plain Error without a code before the
// fix). Also through the raw binding, where lib/'s checks do not run.
async function refused(): Promise<Outcome> {
  const Resizable = ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => ArrayBuffer;
  const rows = 256, cols = 4096;
  const t = logits(rows, cols);
  const q = quantizeSync(t, { format: 'q8_0' });
  const rab = new Resizable(q.data.byteLength, { maxByteLength: q.data.byteLength });
  const rabData = new Uint8Array(rab);
  rabData.set(q.data);
  const sabData = new Uint8Array(new SharedArrayBuffer(q.data.byteLength));
  sabData.set(q.data);
  const rawArgs = (data: Uint8Array) => ({ format: 2, rows, cols, group: 32, scaleDtype: 1, kernel: 0, threads: 1, data, scales: null, zeros: null, out: new Float32Array(rows * cols), outDtype: 0 });
  const imp = new Float32Array(new Resizable(cols * 4, { maxByteLength: cols * 4 })).fill(1);
  const sabTensor = Tensor.from(new Float32Array(new SharedArrayBuffer(rows * cols * 4)), [rows, cols]);
  const sabLabels = new Int32Array(new SharedArrayBuffer(rows * 4));
  const codes: Record<string, string> = {
    resizableQuantizedData: await codeOf(() => new QuantizedTensor({ format: 'q8_0', shape: [rows, cols], data: rabData })),
    resizableImportance: await codeOf(() => quantize(t, { format: 'q4_0', importance: imp, threads: 1 })),
    resizableRawDequantize: await codeOf(() => binding.dequantize(rawArgs(rabData), true)),
    resizableRawDequantizeSync: await codeOf(() => binding.dequantize(rawArgs(rabData), false)),
    sharedTensor: await codeOf(() => quantize(sabTensor, { format: 'q8_0' })),
    sharedTensorSync: await codeOf(() => quantizeSync(sabTensor, { format: 'q8_0' })),
    sharedQuantizedData: await codeOf(() => dequantize(new QuantizedTensor({ format: 'q8_0', shape: [rows, cols], data: sabData }))),
    sharedLabels: await codeOf(() => distillLoss(t, t, { labels: sabLabels, alpha: 0 })),
    sharedRawDequantizeSync: await codeOf(() => binding.dequantize(rawArgs(sabData), false)),
  };
  let message = '';
  try {
    dequantizeSync(new QuantizedTensor({ format: 'q8_0', shape: [rows, cols], data: sabData }));
  } catch (e) {
    message = (e as Error).message;
  }
  // Resizing after the refusal touches nothing.
  (rab as unknown as { resize(n: number): void }).resize(0);
  return { codes, message };
}

// 7. An input's ArrayBuffer transferred during an async call, the receiver
// dropped and the garbage collected (SIGSEGV before the fix: 32 MiB, 3
// rounds, with structuredClone or a MessagePort). Async calls mark their
// buffers untransferable ('mark': the transfer copies on Node 20, throws
// DataCloneError on 21+, and the call returns the sync result) or work on
// copies ('copy': the transfer moves the memory away and the call rejects
// with ERR_DETACHED). The byte-stream case runs in 'copy' mode only: Node
// 20's byte streams detach even marked buffers (README).
async function transfer(): Promise<Outcome> {
  const gc = (globalThis as { gc?: () => void }).gc!;
  const mode = backends().buffers.async;
  const n = (32 << 20) / 4;
  const base = new Float32Array(n);
  for (let i = 0; i < n; i++) base[i] = Math.sin(i * 0.01);
  const want = quantizeSync(Tensor.from(base, [n / 1024, 1024]), { format: 'q8_0', threads: 1 });
  const ways: Array<[string, (b: ArrayBuffer) => void]> = [
    ['structuredClone', (b) => void structuredClone(b, { transfer: [b] })],
    [
      'MessagePort',
      (b) => {
        const { port1, port2 } = new MessageChannel();
        port1.postMessage(b, [b]);
        port1.close();
        port2.close();
      },
    ],
  ];
  const transferFn = (ArrayBuffer.prototype as unknown as { transfer?: () => ArrayBuffer }).transfer;
  if (typeof transferFn === 'function') ways.push(['ArrayBuffer.prototype.transfer', (b) => void transferFn.call(b)]);
  if (mode === 'copy') {
    ways.push([
      'byte stream',
      (b) => {
        const rs = new ReadableStream({ type: 'bytes', start: (c) => c.enqueue(new Uint8Array(b)) });
        void rs.getReader().read();
      },
    ]);
  }
  const outcomes: Record<string, string[]> = {};
  for (const [name, move] of ways) {
    outcomes[name] = [];
    for (let round = 0; round < (name === 'structuredClone' ? 3 : 1); round++) {
      const x = new Float32Array(n);
      x.set(base);
      const p = quantize(Tensor.from(x, [n / 1024, 1024]), { format: 'q8_0', threads: 1 });
      let moved: string;
      try {
        move(x.buffer);
        moved = x.length === 0 ? 'moved' : 'copied';
      } catch (e) {
        moved = `refused (${(e as Error).name})`;
      }
      gc();
      try {
        const q = await p;
        outcomes[name]!.push(`${moved}, ${sameBytes(q.data, want.data) ? 'same result' : 'different result'}`);
      } catch (e) {
        outcomes[name]!.push(`${moved}, ${(e as SlimTensorError).code}`);
      }
      gc();
    }
  }
  return { mode, outcomes };
}

/**
 * Lowers this process's address-space limit to what it uses now plus
 * `slackMiB` (prlimit(1)). tsx may still be instantiating its WebAssembly
 * lexer, which reserves gigabytes: that failure is tsx's (it falls back to
 * its JavaScript parser), not the scenario's, so it is let go.
 */
function limitMemory(slackMiB: number): string | undefined {
  process.on('unhandledRejection', (e) => {
    if (e instanceof RangeError && /WebAssembly/.test(e.message)) return;
    throw e;
  });
  try {
    const vm = Number(/VmSize:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))![1]) * 1024;
    execFileSync('prlimit', ['--pid', String(process.pid), `--as=${vm + slackMiB * 2 ** 20}`], { stdio: 'ignore' });
    return undefined;
  } catch (e) {
    return `cannot lower the address-space limit (needs Linux and prlimit): ${(e as Error).message}`;
  }
}

// 8. Degenerate shapes return at once: a zero-column tensor of 1e14 rows
// planned one chunk per 65536 rows before the fix ([1e10, 0] spun for
// 6.5 s; [1e14, 0] under an address-space limit aborted with std::bad_alloc
// sync and hung async).
async function degenerate(): Promise<Outcome> {
  const t = Tensor.from(new Float32Array(0), [1e14, 0]);
  const skipped = limitMemory(256);
  if (skipped) return { skipped };
  const t0 = performance.now();
  const sync = pruneUnstructuredSync(t, { sparsity: 0.5 });
  const asyncResult = await pruneUnstructured(t, { sparsity: 0.5 });
  return { pruned: [sync.pruned, asyncResult.pruned], ms: performance.now() - t0 };
}

// 8, 9. C++ exceptions: a kernel whose working memory cannot be allocated
// (an address-space limit) throws std::bad_alloc inside the thread pool's
// bodies — on the calling thread and on a pool thread. Before the fix: sync
// "terminate called after throwing std::bad_alloc" (exit 134), async
// std::bad_function_call from a pool thread running a dead body (exit 134),
// at distillLoss [2, 1M] with 20 MiB to spare. Now ERR_SHAPE, sync and async.
async function outOfMemory(): Promise<Outcome> {
  const C = 1 << 22;  // 64 MiB of scratch per thread, more than the limit leaves
  const s = Tensor.from(new Float32Array(2 * C).fill(0.25), [2, C]);
  const skipped = limitMemory(32);
  if (skipped) return { skipped };
  const codes: string[] = [];
  for (const threads of [1, 2]) {
    codes.push(await codeOf(() => distillLossSync(s, s, { alpha: 1, grad: false, threads })));
    codes.push(await codeOf(() => distillLoss(s, s, { alpha: 1, grad: false, threads })));
  }
  return { codes };
}

// 9. Thread creation failing in the pool (threads: 64 under an
// address-space limit; before the fix std::system_error aborted a sync
// call and hung an async one). The pool runs on the threads it has.
async function threads(): Promise<Outcome> {
  const t = logits(2048, 1024);
  const want = quantizeSync(t, { format: 'q8_0', threads: 1 });
  const skipped = limitMemory(40);
  if (skipped) return { skipped };
  const sync = quantizeSync(t, { format: 'q8_0', threads: 64 });
  const asyncResult = await quantize(t, { format: 'q8_0', threads: 64 });
  return { same: [sameBytes(sync.data, want.data), sameBytes(asyncResult.data, want.data)] };
}

// 4. The process exits while an async call runs: nothing may throw out of
// the addon during teardown. Prints its report first, then exits; the
// parent checks the exit status.
async function exitDuringCall(): Promise<Outcome> {
  const t = logits(1024, 1024);
  void quantize(t, { format: 'q4_1', search: 'mse', threads: 1 });
  setImmediate(() => process.exit(0));
  return { started: true };
}

// The policy probe, on what a newer runtime does (this machine may not have
// it): SAFETY_TRANSFER=detaches installs an ArrayBuffer.prototype.transfer
// that detaches even a marked buffer (as Node 21+ without detach keys
// does; a byte stream takes the memory), =refuses one that throws (as with
// a detach key). Must run before anything asks for the policy.
async function probe(): Promise<Outcome> {
  const detaches = process.env.SAFETY_TRANSFER === 'detaches';
  Object.defineProperty(ArrayBuffer.prototype, 'transfer', {
    configurable: true,
    writable: true,
    value: detaches
      ? function (this: ArrayBuffer) {
          const b = this;
          new ReadableStream({ type: 'bytes', start: (c) => c.enqueue(new Uint8Array(b)) });
          return new ArrayBuffer(0);
        }
      : function () {
          throw new TypeError('Cannot perform ArrayBuffer.prototype.transfer on a non-detachable ArrayBuffer');
        },
  });
  const buffers = backends().buffers;
  // And the chosen mode works: an async call gives the sync result.
  const t = logits(64, 256);
  const same = sameBytes((await quantize(t, { format: 'q4_0' })).data, quantizeSync(t, { format: 'q4_0' }).data);
  return { ...buffers, same };
}

const SCENARIOS: Record<string, () => Promise<Outcome>> = {
  probe, labels, topk, unstructured, terminate, refused, transfer, degenerate, outOfMemory, threads, exitDuringCall };

async function main(): Promise<void> {
  for (const name of process.argv.slice(2)) {
    const run = SCENARIOS[name];
    if (!run) throw new Error(`unknown scenario ${name}`);
    process.stderr.write(`scenario ${name}\n`);
    process.stdout.write(`${JSON.stringify({ name, report: await run() })}\n`);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(String(e instanceof Error ? e.stack : e));
  process.exitCode = 1;
});
