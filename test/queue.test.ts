// The job queue (lib/queue) against a real redis-server and BullMQ from npm:
// no mocks. Each test has its own queue name on a shared server (the
// restart test has its own, with an append-only file). Models are tiny
// generated GGUF files, except a 16 MiB one whose low-rank recipe takes
// about a second on one thread: long enough to kill, stop or cut off
// Redis in the middle of a job.
import { expect } from 'chai';
import type { ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { compressModel, CompressionQueue, createWorker, enqueueCompression, SlimTensorError, type CompressionRequest, type CompressionResult, type CompressionWorker, type Recipe, type WorkerOptions } from '../lib/index';
import { parseDuration, submitRequests } from '../lib/cli/queue-commands';
import { checkRequest, failureError, failureMessage, jobIdOf } from '../lib/queue/job';
import { ggufTensors, writeGGUFModel, type GeneratedTensor } from './support/models';
import { Rng } from './support/random';
import { runCli, type CliRun } from './support/cli';
import { skip } from './support/skip';
import { redisRequired, RedisServer, redisServerBinary } from './support/redis';

/** A recipe slow enough to act in the middle of a job: rank-128 factors of 16 matrices 512x512 on one thread (~1 s). */
const SLOW_RECIPE: Recipe = { name: 'lowrank128', format: 'safetensors', rules: [{ match: '*', method: 'lowrank', options: { rank: 128 } }] };

/** Every file of a model output (a GGUF file or a folder), name -> bytes. */
async function outputBytes(p: string): Promise<Map<string, Buffer>> {
  const st = await fsp.stat(p);
  if (!st.isDirectory()) return new Map([['', await fsp.readFile(p)]]);
  const out = new Map<string, Buffer>();
  for (const n of (await fsp.readdir(p)).sort()) out.set(n, await fsp.readFile(path.join(p, n)));
  return out;
}

async function expectSameOutput(actual: string, expected: string): Promise<void> {
  const a = await outputBytes(actual);
  const e = await outputBytes(expected);
  expect([...a.keys()], actual).to.deep.equal([...e.keys()]);
  for (const [n, bytes] of e) expect(Buffer.compare(a.get(n) as Buffer, bytes), `${actual} ${n}`).to.equal(0);
}

/** Names in `dir` that are temporaries of a compression (staged outputs). */
async function temporaries(dir: string): Promise<string[]> {
  return (await fsp.readdir(dir)).filter((n) => n.includes('.slimtensor-'));
}

async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 20_000, stepMs = 10): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

function slowTensors(seed: number): GeneratedTensor[] {
  const rng = new Rng(seed);
  return Array.from({ length: 16 }, (_, i) => ({ name: `blk.${i}.attn_q.weight`, shape: [512, 512], values: rng.normals(512 * 512, 0.05) }));
}

/** A `slimtensor worker` process (through runCli: the package's bin when current). */
class WorkerProcess {
  /** Known from its first line on stderr (every worker writes one as it starts). */
  child: ChildProcess | undefined;
  stderr = '';
  done = false;
  readonly exited: Promise<CliRun>;

  constructor(args: string[]) {
    this.exited = runCli(['worker', ...args], (text, child) => {
      this.stderr = text;
      this.child = child;
    });
    void this.exited.then(() => (this.done = true));
  }

  async ready(): Promise<void> {
    await until('the worker to connect', () => / on redis:\/\/\S+, queue /.test(this.stderr) || this.done, 30_000, 20);
    if (this.done) throw new Error(`worker exited: ${this.stderr}`);
  }
}

describe('job queue: requests, job ids and errors (no Redis)', () => {
  it('checkRequest: absolute paths, known keys, a valid recipe; the job id depends on what decides the bytes only', () => {
    const r = { input: '/data/m.gguf', output: '/out/m-q4_0.gguf', recipe: 'q4_0' };
    expect(checkRequest(r, 'x')).to.deep.equal({ ...r, recipeName: 'q4_0' });
    expect(() => checkRequest({ ...r, input: 'm.gguf' }, 'x')).to.throw(SlimTensorError, 'must be an absolute path');
    expect(() => checkRequest({ ...r, outptu: '/o' }, 'x')).to.throw(SlimTensorError, 'unknown key "outptu"');
    expect(() => checkRequest({ ...r, recipe: 'q9_9' }, 'x')).to.throw(SlimTensorError, 'unknown preset "q9_9"');
    expect(() => checkRequest({ ...r, memoryLimit: -1 }, 'x')).to.throw(SlimTensorError, 'memoryLimit must be a positive integer');
    expect(() => checkRequest({ ...r, recipe: { name: 'x', rules: [], f: new Float32Array(1) } }, 'x')).to.throw(SlimTensorError, 'plain JSON');
    const id = jobIdOf(checkRequest(r, 'x'));
    expect(id).to.match(/^c[0-9a-f]{32}$/);
    // How it runs is not part of the id; what it writes is.
    expect(jobIdOf(checkRequest({ ...r, threads: 2, memoryLimit: 4096, overwrite: true }, 'x'))).to.equal(id);
    expect(jobIdOf(checkRequest({ ...r, recipe: 'q8_0' }, 'x'))).to.not.equal(id);
    expect(jobIdOf(checkRequest({ ...r, output: '/out/other.gguf' }, 'x'))).to.not.equal(id);
    // Key order of a recipe object does not matter.
    const a = { name: 'r', extends: 'q4_0', rules: [{ match: '*', method: 'keep' }] };
    const b = { rules: [{ method: 'keep', match: '*' }], extends: 'q4_0', name: 'r' };
    expect(jobIdOf(checkRequest({ ...r, recipe: a as Recipe }, 'x'))).to.equal(jobIdOf(checkRequest({ ...r, recipe: b as Recipe }, 'x')));
  });

  it("a SlimTensorError's code crosses Redis in the failure message; other errors keep their errno code", () => {
    const back = failureError(failureMessage(new SlimTensorError('bad magic in /a.gguf', 'ERR_FORMAT')));
    expect(back).to.be.instanceOf(SlimTensorError);
    expect(back.message).to.equal('bad magic in /a.gguf');
    expect((back as SlimTensorError).code).to.equal('ERR_FORMAT');
    const io = Object.assign(new Error('disk gone'), { code: 'EIO' });
    expect(failureMessage(io)).to.equal('disk gone (EIO)');
    expect(failureError('disk gone (EIO)')).to.not.be.instanceOf(SlimTensorError);
  });

  it('submit: one request per input and preset, {name} and {preset} in -o, absolute paths; durations', () => {
    const reqs = submitRequests({ inputs: ['a/m1.gguf', 'b/m2'], output: 'out/{name}-{preset}.gguf', recipes: ['q4_0', 'q8_0'], target: undefined, shardSize: undefined, memory: 2 ** 20, threads: undefined, force: false });
    expect(reqs.map((r) => [r.input, r.output, r.recipe])).to.deep.equal([
      [path.resolve('a/m1.gguf'), path.resolve('out/m1-q4_0.gguf'), 'q4_0'],
      [path.resolve('a/m1.gguf'), path.resolve('out/m1-q8_0.gguf'), 'q8_0'],
      [path.resolve('b/m2'), path.resolve('out/m2-q4_0.gguf'), 'q4_0'],
      [path.resolve('b/m2'), path.resolve('out/m2-q8_0.gguf'), 'q8_0'],
    ]);
    expect(reqs.every((r) => r.memoryLimit === 2 ** 20 && r.overwrite === undefined)).to.equal(true);
    const base = { inputs: ['m.gguf'], output: 'o.gguf', recipes: ['q4_0'], target: undefined, shardSize: undefined, memory: undefined, threads: undefined, force: false };
    expect(() => submitRequests({ ...base, recipes: ['q4_0', 'q8_0'] })).to.throw(SlimTensorError, 'must contain {preset}');
    expect(() => submitRequests({ ...base, inputs: ['a.gguf', 'b.gguf'] })).to.throw(SlimTensorError, 'must contain {name}');
    expect(() => submitRequests({ ...base, inputs: ['x/a.gguf', 'y/a.gguf'], output: '{name}.gguf' })).to.throw(SlimTensorError, 'two jobs would write');
    expect(parseDuration('30s', 'x')).to.equal(30_000);
    expect(parseDuration('250ms', 'x')).to.equal(250);
    expect(parseDuration('2m', 'x')).to.equal(120_000);
    expect(parseDuration('1.5', 'x')).to.equal(1500);
    expect(() => parseDuration('soon', '--grace')).to.throw(SlimTensorError, '--grace: "soon" is not a duration');
  });

  it('createWorker and enqueueCompression refuse bad locations and options before connecting', async () => {
    expect(() => createWorker({ redis: 'http://127.0.0.1:6379' })).to.throw(SlimTensorError, 'must start with redis://');
    expect(() => createWorker({ redis: 'redis://127.0.0.1:6379', queue: 'a b' })).to.throw(SlimTensorError, 'queue must be');
    expect(() => createWorker({ redis: 'redis://127.0.0.1:6379', concurrency: 0 })).to.throw(SlimTensorError, 'concurrency must be an integer');
    let err: unknown;
    try {
      await enqueueCompression({ input: 'rel.gguf', output: '/o.gguf', recipe: 'q4_0' }, { redis: 'redis://127.0.0.1:1' });
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(SlimTensorError);
    expect((err as Error).message).to.include('must be an absolute path');
  });

  it('a worker with no Redis to reach says so, keeps retrying, and still stops when closed', async () => {
    const logs: string[] = [];
    const w = createWorker({ redis: 'redis://127.0.0.1:1', maxBackoffMs: 200, log: (l) => logs.push(l) });
    await until('the worker to report the outage', () => logs.some((l) => l.includes('unavailable; retrying the connection in')), 10_000);
    const t0 = Date.now();
    await w.close(30_000);
    expect(Date.now() - t0, 'close() does not wait for Redis or the grace period when no job runs').to.be.below(5000);
    expect(logs).to.include('redis redis://127.0.0.1:1 is unavailable: stopping without it');
    expect(logs.at(-1)).to.match(/^worker \S+ stopped$/);
  });

  it('submitting to an address where no Redis answers fails within connectTimeoutMs, naming the address and the error', async () => {
    const t0 = Date.now();
    let err: unknown;
    try {
      // Port 1: nothing listens there (connection refused).
      await enqueueCompression({ input: '/m.gguf', output: '/o.gguf', recipe: 'q4_0' }, { redis: 'redis://:secret@127.0.0.1:1', connectTimeoutMs: 300 });
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(SlimTensorError);
    expect((err as SlimTensorError).code).to.equal('ERR_VALUE');
    expect((err as Error).message).to.match(/^cannot reach Redis at redis:\/\/:\*\*\*@127\.0\.0\.1:1 within 0\.3 s \(connect ECONNREFUSED 127\.0\.0\.1:1\)/);
    expect((err as Error).message).to.not.include('secret');
    expect(Date.now() - t0).to.be.below(10_000);
  });
});

const binary = redisServerBinary();
if (binary === undefined && !redisRequired()) {
  describe('job queue on Redis', () => {
    it('runs against a real redis-server', function () {
      skip(this, 'no redis-server here (Debian package redis-server; .ci/run installs it)');
    });
  });
} else {
  describe('job queue on Redis (real redis-server, BullMQ)', function () {
    this.timeout(60_000);
    let redis: RedisServer;
    let tmp: string;
    let tiny: string[];
    let slow: string;
    let slowRef: string;
    const workers: CompressionWorker[] = [];
    const queues: CompressionQueue[] = [];
    const procs: WorkerProcess[] = [];
    let queueNo = 0;
    let queueName = '';

    before(async () => {
      if (binary === undefined) throw new Error('redis-server is missing (install the Debian package redis-server); CI requires it');
      redis = await RedisServer.start(binary);
      tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-queue-'));
      await fsp.mkdir(path.join(tmp, 'in'));
      tiny = [];
      for (let i = 0; i < 10; i++) {
        const f = path.join(tmp, 'in', `tiny${i}.gguf`);
        await writeGGUFModel(f, ggufTensors(100 + i, 1, 32));
        tiny.push(f);
      }
      slow = path.join(tmp, 'in', 'slow.gguf');
      await writeGGUFModel(slow, slowTensors(7));
      slowRef = path.join(tmp, 'slow-ref');
      await compressModel({ input: slow, output: slowRef, recipe: SLOW_RECIPE });
    });
    beforeEach(() => {
      queueName = `t${++queueNo}`;
    });
    afterEach(async () => {
      for (const p of procs.splice(0)) if (!p.done) p.child?.kill('SIGKILL');
      await Promise.all(workers.splice(0).map((w) => w.close(0)));
      await Promise.all(queues.splice(0).map((q) => q.close()));
    });
    after(async () => {
      await redis?.dispose();
      if (tmp !== undefined) await fsp.rm(tmp, { recursive: true, force: true });
    });

    function worker(o: Partial<WorkerOptions> & { logs?: string[] } = {}): CompressionWorker {
      const logs = o.logs;
      const w = createWorker({ redis: redis.url, queue: queueName, threads: 1, lockDurationMs: 2000, stalledIntervalMs: 300, ...o, log: logs === undefined ? undefined : (l) => logs.push(l) });
      workers.push(w);
      return w;
    }
    function openQueue(url = redis.url): CompressionQueue {
      const q = CompressionQueue.open({ redis: url, queue: queueName });
      queues.push(q);
      return q;
    }
    async function outDir(name: string): Promise<string> {
      const d = path.join(tmp, `${queueName}-${name}`);
      await fsp.mkdir(d);
      return d;
    }

    it('3 workers, 30 jobs: each completes exactly once, byte-identical to compressModel run directly; submitting again redoes nothing', async () => {
      const out = await outDir('out');
      const ref = await outDir('ref');
      const presets = ['q4_0', 'q8_0', 'q4_1'];
      const requests: CompressionRequest[] = tiny.flatMap((input, i) => presets.map((recipe) => ({ input, recipe, output: path.join(out, `tiny${i}-${recipe}.gguf`) })));
      const q = openQueue();
      await q.subscribe();
      const jobs = await q.enqueue(requests, { attempts: 2, backoffMs: 10 });
      expect(jobs.map((j) => j.status)).to.deep.equal(new Array(30).fill('added'));
      expect(new Set(jobs.map((j) => j.id)).size).to.equal(30);
      // The same requests again while they wait: nothing new.
      const again = await q.enqueue(requests);
      expect(again.map((j) => [j.id, j.status, j.state])).to.deep.equal(jobs.map((j) => [j.id, 'existing', 'waiting']));

      const logs: string[][] = [[], [], []];
      const names = ['w1', 'w2', 'w3'];
      for (let i = 0; i < 3; i++) worker({ name: names[i], logs: logs[i] });
      const outcomes = await q.wait(jobs.map((j) => j.id));
      expect(outcomes.filter((o) => !o.ok).map((o) => (o.ok ? '' : o.error.message))).to.deep.equal([]);
      const started = new Map<string, number>();
      for (const line of logs.flat()) {
        const m = /^job (\S+) started/.exec(line);
        if (m !== null) started.set(m[1] as string, (started.get(m[1] as string) ?? 0) + 1);
      }
      expect(started.size).to.equal(30);
      expect([...started.values()].every((n) => n === 1), 'each job started once').to.equal(true);
      for (const o of outcomes) {
        const r = (o as { result: CompressionResult }).result;
        expect(r.outcome).to.equal('compressed');
        expect(r.attempt).to.equal(1);
        expect(names).to.include(r.worker);
        const job = await q.job(o.id);
        expect(await job?.getState()).to.equal('completed');
      }
      for (const r of requests) {
        const direct = path.join(ref, path.basename(r.output));
        await compressModel({ input: r.input, output: direct, recipe: r.recipe });
        await expectSameOutput(r.output, direct);
      }
      expect(await temporaries(out)).to.deep.equal([]);

      // Submitting the finished requests again: new jobs, which find complete outputs and leave them alone.
      const mtimes = await Promise.all(requests.map(async (r) => (await fsp.stat(r.output)).mtimeMs));
      const redo = await q.enqueue(requests.slice(0, 6));
      expect(redo.map((j) => j.status)).to.deep.equal(new Array(6).fill('added'));
      const redone = await q.wait(redo.map((j) => j.id));
      for (const [i, o] of redone.entries()) {
        expect(o.ok).to.equal(true);
        const r = (o as { result: CompressionResult }).result;
        expect(r.outcome).to.equal('exists');
        if (r.outcome === 'exists') expect(r.output).to.include({ path: requests[i]?.output, format: 'gguf' });
        expect((await fsp.stat(requests[i]?.output as string)).mtimeMs).to.equal(mtimes[i]);
      }
    });

    it("the worker's memory budget bounds concurrency: two jobs taken at once whose limits do not fit together run one after the other", async () => {
      const out = await outDir('out');
      const q = openQueue();
      await q.subscribe();
      const budget = 64 * 2 ** 20;
      const jobs = await q.enqueue([
        { input: slow, output: path.join(out, 'a'), recipe: SLOW_RECIPE, memoryLimit: budget },
        { input: slow, output: path.join(out, 'b'), recipe: SLOW_RECIPE, memoryLimit: 2 * budget },
      ]);
      const logs: string[] = [];
      worker({ concurrency: 2, memory: budget, logs });
      const events: [string, string][] = [];
      const outcomes = await q.wait(
        jobs.map((j) => j.id),
        { onProgress: (id, p) => events.push([id, p.phase]) },
      );
      expect(outcomes.map((o) => o.ok)).to.deep.equal([true, true]);
      // Both were taken (waiting for memory) before either finished: concurrency 2 ...
      const firstDone = events.findIndex(([, ph]) => ph === 'done');
      expect(new Set(events.slice(0, firstDone).filter(([, ph]) => ph === 'memory').map(([id]) => id)).size).to.equal(2);
      // ... but the compressions did not overlap: each job's start..done has no other job's event.
      const running = events.filter(([, ph]) => ph !== 'memory').map(([id]) => id);
      const order = running.filter((id, i) => i === 0 || running[i - 1] !== id);
      expect(order).to.have.length(2);
      expect(logs.join('\n')).to.include("memoryLimit 0.13 GiB is over this worker's budget; running with 0.06 GiB");
      await expectSameOutput(path.join(out, 'a'), slowRef);
      await expectSameOutput(path.join(out, 'b'), slowRef);
    });

    it('a bad input fails its job with ERR_FORMAT and no retry; an output folder the worker lacks fails up front; the other jobs go on', async () => {
      const out = await outDir('out');
      const bad = path.join(tmp, 'in', `${queueName}-bad.gguf`);
      await fsp.writeFile(bad, 'this is not a GGUF file at all, just text');
      const q = openQueue();
      await q.subscribe();
      const jobs = await q.enqueue(
        [
          { input: bad, output: path.join(out, 'bad.gguf'), recipe: 'q8_0' },
          { input: tiny[0] as string, output: path.join(out, 'nowhere', 'x.gguf'), recipe: 'q8_0' },
          { input: tiny[1] as string, output: path.join(out, 'good.gguf'), recipe: 'q8_0' },
        ],
        { attempts: 3, backoffMs: 10 },
      );
      worker();
      const [b, missing, good] = await q.wait(jobs.map((j) => j.id));
      expect(b?.ok).to.equal(false);
      if (b?.ok === false) {
        expect(b.error).to.be.instanceOf(SlimTensorError);
        expect((b.error as SlimTensorError).code).to.equal('ERR_FORMAT');
        expect(b.error.message).to.include(bad);
        expect(b.attempts, 'not retried').to.equal(1);
      }
      expect(missing?.ok).to.equal(false);
      if (missing?.ok === false) {
        expect((missing.error as SlimTensorError).code).to.equal('ERR_VALUE');
        expect(missing.error.message).to.include(`the output's folder ${path.join(out, 'nowhere')} does not exist here`).and.include('storage every worker sees');
        expect(missing.attempts).to.equal(1);
      }
      expect(good?.ok).to.equal(true);
      expect((await fsp.readdir(out)).sort()).to.deep.equal(['good.gguf']);
    });

    it('a worker SIGKILLed in the middle of a job: another worker takes the stalled job and redoes it; no partial output remains', async () => {
      const out = await outDir('out');
      const output = path.join(out, 'slow');
      const q = openQueue();
      await q.subscribe();
      const doomed = new WorkerProcess(['--redis', redis.url, '--queue', queueName, '--name', 'doomed', '--threads', '1', '--lock-duration', '1s', '--stalled-interval', '0.3s']);
      procs.push(doomed);
      await doomed.ready();
      const [job] = await q.enqueue({ input: slow, output, recipe: SLOW_RECIPE });
      // Mid-job: the staged (temporary) output exists and has tensors in it.
      await until('the doomed worker to write part of the output', async () => {
        const t = await temporaries(out);
        return t.length === 1 && (await fsp.readdir(path.join(out, t[0] as string))).length > 0;
      });
      doomed.child?.kill('SIGKILL');
      expect((await doomed.exited).code, 'killed by the signal').to.equal(null);
      const left = await temporaries(out);
      expect(left, 'the killed worker left its partial output').to.have.length(1);
      expect(left[0]).to.match(/^\.slow\.slimtensor-qc[0-9a-f]{32}-[0-9a-z]+\.tmp$/);

      const logs: string[] = [];
      worker({ name: 'rescuer', logs });
      const [o] = await q.wait([job?.id as string]);
      expect(o?.ok, o?.ok === false ? o.error.message : '').to.equal(true);
      const r = (o as { result: CompressionResult }).result;
      expect(r).to.include({ outcome: 'compressed', worker: 'rescuer', attempt: 2 });
      expect(logs.join('\n')).to.match(/removed 1 partial output of an earlier attempt/);
      await expectSameOutput(output, slowRef);
      expect(await temporaries(out)).to.deep.equal([]);
      expect(await q.counts()).to.include({ completed: 1, waiting: 0, active: 0, failed: 0 });
    });

    it('SIGTERM: a running job past the grace period goes back to the queue (nothing written), and another worker completes it', async () => {
      const out = await outDir('out');
      const output = path.join(out, 'slow');
      const q = openQueue();
      await q.subscribe();
      const w = new WorkerProcess(['--redis', redis.url, '--queue', queueName, '--name', 'leaving', '--threads', '1', '--grace', '50ms']);
      procs.push(w);
      await w.ready();
      const [job] = await q.enqueue({ input: slow, output, recipe: SLOW_RECIPE });
      await until('the job to start', async () => (await temporaries(out)).length === 1);
      w.child?.kill('SIGTERM');
      const exit = await w.exited;
      expect(exit.code, w.stderr).to.equal(0);
      expect(w.stderr).to.include('SIGTERM: stopping').and.include('returned to the queue (shutdown)');
      expect(await temporaries(out)).to.deep.equal([]);
      expect(await fsp.readdir(out)).to.deep.equal([]);
      const j = await q.job(job?.id as string);
      expect(await j?.getState()).to.equal('waiting');

      worker({ name: 'next' });
      const [o] = await q.wait([job?.id as string]);
      expect(o?.ok).to.equal(true);
      expect((o as { result: CompressionResult }).result).to.include({ outcome: 'compressed', worker: 'next' });
      await expectSameOutput(output, slowRef);
    });

    it('close() during a job: within the grace period the running job finishes, and no new job is taken', async () => {
      const out = await outDir('out');
      const q = openQueue();
      await q.subscribe();
      const w = worker({ name: 'closing' });
      await w.ready();
      const [first] = await q.enqueue({ input: slow, output: path.join(out, 'slow'), recipe: SLOW_RECIPE });
      await until('the job to start', async () => (await temporaries(out)).length === 1);
      const closed = w.close(30_000);
      const [second] = await q.enqueue({ input: tiny[2] as string, output: path.join(out, 'tiny.gguf'), recipe: 'q8_0' });
      await closed;
      expect(await (await q.job(first?.id as string))?.getState()).to.equal('completed');
      expect(((await q.job(first?.id as string))?.returnvalue as CompressionResult).worker).to.equal('closing');
      expect(await (await q.job(second?.id as string))?.getState()).to.equal('waiting');
      await expectSameOutput(path.join(out, 'slow'), slowRef);
    });

    it('submit --wait (CLI): progress, the report of the good job, the bad one named with its code; exit 1', async () => {
      const out = await outDir('out');
      const bad = path.join(tmp, 'in', `${queueName}-bad.gguf`);
      await fsp.writeFile(bad, 'GGUF but not really');
      worker();
      const r = await runCli(['submit', '--redis', redis.url, '--queue', queueName, tiny[3] as string, bad, '-o', path.join(out, '{name}-{preset}.gguf'), '-p', 'q8_0', '--wait', '--attempts', '2']);
      expect(r.code, r.stderr).to.equal(1);
      expect(r.stdout, r.stderr).to.include(`${path.join(out, 'tiny3-q8_0.gguf')} (gguf,`).and.include('recipe q8_0:');
      expect(r.stderr).to.match(/taken by a worker/).and.match(/ (\d+)\/\1 tensors.*, done/);
      expect(r.stderr, r.stdout).to.match(new RegExp(`job c[0-9a-f]{32} \\(${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} -> .*bad-q8_0\\.gguf \\(q8_0\\)\\) failed after 1 attempt: .*\\[ERR_FORMAT\\]`));
      expect((await fsp.readdir(out)).sort()).to.deep.equal(['tiny3-q8_0.gguf']);
    });

    it('Redis stopped mid-job and started again: the worker says so and retries, the running job finishes, no job is lost', async () => {
      const persistent = await RedisServer.start(binary as string, { persistent: true });
      try {
        const out = await outDir('out');
        const q = openQueue(persistent.url);
        await q.subscribe();
        const requests: CompressionRequest[] = [
          { input: slow, output: path.join(out, 'slow'), recipe: SLOW_RECIPE },
          ...tiny.slice(0, 6).map((input, i) => ({ input, output: path.join(out, `tiny${i}.gguf`), recipe: 'q4_0' })),
        ];
        const jobs = await q.enqueue(requests, { attempts: 1 });
        const logs: string[] = [];
        worker({ redis: persistent.url, name: 'steady', logs, maxBackoffMs: 200 });
        await until('the slow job to start', async () => (await temporaries(out)).length === 1);
        await persistent.stop();
        await until('the worker to notice', () => logs.some((l) => l.includes('unavailable; retrying the connection')), 10_000);
        // The slow job runs on without Redis; give it time to finish while Redis is away.
        await until('the slow output', async () => (await fsp.readdir(out)).includes('slow'), 20_000, 50);
        await persistent.startAgain();
        const outcomes = await q.wait(jobs.map((j) => j.id));
        expect(outcomes.map((o) => o.ok)).to.deep.equal(new Array(requests.length).fill(true));
        expect(logs.join('\n')).to.include('is back; going on');
        expect(await q.counts()).to.include({ completed: requests.length, waiting: 0, active: 0, failed: 0 });
        await expectSameOutput(path.join(out, 'slow'), slowRef);
        for (const r of requests.slice(1)) {
          const ref = path.join(tmp, `${queueName}-ref-${path.basename(r.output)}`);
          await compressModel({ input: r.input, output: ref, recipe: r.recipe });
          await expectSameOutput(r.output, ref);
        }
        expect(await temporaries(out)).to.deep.equal([]);
      } finally {
        await Promise.all(workers.splice(0).map((w) => w.close(0)));
        await Promise.all(queues.splice(0).map((q) => q.close()));
        await persistent.dispose();
      }
    });
  });
}
