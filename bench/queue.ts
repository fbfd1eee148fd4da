// The queue benchmark: what the BullMQ job queue (lib/queue) costs and
// gives on this machine. The same jobs run
//
//   - one after another in this process (compressModel, all cores): "direct";
//   - through a queue on a local redis-server, taken by 1, 2 and 4
//     `slimtensor worker` processes (each with cores/workers threads).
//
// Two job sizes: small (models/stories260K.gguf, 1.2 MB, -> q4_0: the queue's
// fixed cost per job dominates) and large (a generated 0.94 GB Llama-shaped
// F32 GGUF -> q4_0: the compression dominates). Timed from the first
// enqueue to the last completion (workers already started and connected).
// Reported: jobs per minute, input GB/s, and the time against direct.
// `--quick`: few jobs and a 25 MB "large" model; a smoke test.
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { compressModel } from '../lib/pipeline/compress';
import { sizeOnDisk } from '../lib/pipeline/output';
import { CompressionQueue } from '../lib/queue/submit';
import type { CompressionRequest } from '../lib/queue/job';
import { RedisServer, redisServerBinary } from '../test/support/redis';
import { fmtGBs, gbps, markdownTable, median, type Benchmark, type BenchOptions, type BenchOutcome } from './harness';
import { generateGGUF, type Shape } from './pipeline';

const ROOT = path.join(__dirname, '..');
const SMALL_MODEL = path.join(ROOT, 'models', 'stories260K.gguf');
const LARGE: Shape = { layers: 2, hidden: 2048, ffn: 5632, kv: 2048, heads: 16, vocab: 32000 };
const LARGE_QUICK: Shape = { layers: 1, hidden: 512, ffn: 1376, kv: 512, heads: 4, vocab: 4096 };
const PRESET = 'q4_0';

export interface QueueRow {
  /** 0: direct (one process, one job after another). */
  workers: number;
  threadsPerWorker: number;
  /** Median seconds from the first enqueue to the last completion. */
  seconds: number;
  runs: number[];
  jobsPerMinute: number;
  gbps: number;
  /** seconds / direct seconds (below 1: faster than direct). */
  vsDirect: number;
}

export interface QueueCase {
  id: 'small' | 'large';
  label: string;
  jobs: number;
  inputBytes: number;
  rows: QueueRow[];
}

/** A `slimtensor worker` process. */
class WorkerProcess {
  readonly child: ChildProcess;
  private stderr = '';
  readonly exited: Promise<number | null>;

  constructor(args: string[]) {
    this.child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'lib', 'cli', 'main.ts'), 'worker', ...args], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
    this.child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }

  async ready(): Promise<void> {
    const end = Date.now() + 60_000;
    while (!/ on redis:\/\/\S+, queue /.test(this.stderr)) {
      if (this.child.exitCode !== null) throw new Error(`worker exited at start: ${this.stderr}`);
      if (Date.now() > end) throw new Error(`worker not ready after 60 s: ${this.stderr}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null) this.child.kill('SIGTERM');
    const code = await this.exited;
    if (code !== 0) throw new Error(`worker exited with ${String(code)}: ${this.stderr}`);
  }
}

async function clean(dir: string): Promise<void> {
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir);
}

async function measureCase(id: QueueCase['id'], label: string, input: string, jobs: number, workerCounts: readonly number[], runs: number, redis: RedisServer, tmp: string, log: (m: string) => void): Promise<QueueCase> {
  const inputBytes = await sizeOnDisk(input);
  const outDir = path.join(tmp, `out-${id}`);
  const requests: CompressionRequest[] = Array.from({ length: jobs }, (_, i) => ({ input, output: path.join(outDir, `job${i}.gguf`), recipe: PRESET }));
  const cores = os.availableParallelism();
  const rows: QueueRow[] = [];
  const row = (workers: number, threadsPerWorker: number, times: number[]): QueueRow => {
    const seconds = median(times);
    const direct = rows[0]?.seconds ?? seconds;
    return { workers, threadsPerWorker, seconds, runs: times, jobsPerMinute: (jobs / seconds) * 60, gbps: gbps(inputBytes * jobs, seconds), vsDirect: seconds / direct };
  };

  const direct: number[] = [];
  for (let r = 0; r < runs; r++) {
    await clean(outDir);
    const t0 = process.hrtime.bigint();
    for (const q of requests) await compressModel({ input: q.input, output: q.output, recipe: q.recipe });
    direct.push(Number(process.hrtime.bigint() - t0) / 1e9);
    log(`  queue ${id}: direct run ${r + 1}/${runs}: ${(direct[r] as number).toFixed(2)} s`);
  }
  rows.push(row(0, cores, direct));

  for (const n of workerCounts) {
    const queue = `bench-${id}-${n}`;
    const threads = Math.max(1, Math.floor(cores / n));
    const procs = Array.from({ length: n }, (_, i) => new WorkerProcess(['--redis', redis.url, '--queue', queue, '--name', `w${i + 1}`, '--threads', String(threads)]));
    const q = CompressionQueue.open({ redis: redis.url, queue });
    try {
      await Promise.all(procs.map((p) => p.ready()));
      await q.subscribe();
      const times: number[] = [];
      for (let r = 0; r < runs; r++) {
        await clean(outDir);
        const t0 = process.hrtime.bigint();
        const added = await q.enqueue(requests);
        const outcomes = await q.wait(added.map((j) => j.id));
        times.push(Number(process.hrtime.bigint() - t0) / 1e9);
        const failed = outcomes.find((o) => !o.ok);
        if (failed !== undefined && !failed.ok) throw new Error(`queue ${id}: job ${failed.id} failed: ${failed.error.message}`);
        log(`  queue ${id}: ${n} worker${n === 1 ? '' : 's'} run ${r + 1}/${runs}: ${(times[r] as number).toFixed(2)} s`);
      }
      rows.push(row(n, threads, times));
    } finally {
      await q.close();
      await Promise.all(procs.map((p) => p.stop()));
    }
  }
  await fsp.rm(outDir, { recursive: true, force: true });
  return { id, label, jobs, inputBytes, rows };
}

export interface QueueBenchOptions extends BenchOptions {
  /** Worker counts to measure; default 1, 2, 4. */
  workerCounts?: readonly number[];
}

export async function runQueueBench(options: QueueBenchOptions): Promise<{ cases: QueueCase[] }> {
  const binary = redisServerBinary();
  if (binary === undefined) throw new Error('the queue benchmark needs redis-server (Debian package redis-server)');
  const workerCounts = options.workerCounts ?? [1, 2, 4];
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-bench-queue-'));
  const redis = await RedisServer.start(binary);
  const cases: QueueCase[] = [];
  try {
    const smallJobs = options.quick ? 8 : 60;
    options.log(`queue: ${smallJobs} small jobs (stories260K -> ${PRESET}) on redis-server at ${redis.url}`);
    cases.push(await measureCase('small', `stories260K (1.2 MB) -> ${PRESET}, ${smallJobs} jobs`, SMALL_MODEL, smallJobs, workerCounts, Math.min(options.runs, 3), redis, tmp, options.log));

    const shape = options.quick ? LARGE_QUICK : LARGE;
    const large = path.join(tmp, 'large-f32.gguf');
    options.log(`queue: generating a ${shape.layers}-layer ${shape.hidden}/${shape.ffn}/${shape.vocab} F32 GGUF`);
    await generateGGUF(large, shape, options.quick ? 1024 * 1024 : 64 * 1024 * 1024, 'F32');
    const largeJobs = 4;
    const bytes = await sizeOnDisk(large);
    cases.push(await measureCase('large', `${(bytes / 1e9).toFixed(2)} GB F32 GGUF -> ${PRESET}, ${largeJobs} jobs`, large, largeJobs, workerCounts, options.quick ? 1 : Math.min(options.runs, 2), redis, tmp, options.log));
  } finally {
    await redis.dispose();
    await fsp.rm(tmp, { recursive: true, force: true });
  }
  return { cases };
}

function markdown(cases: readonly QueueCase[], quick: boolean): string {
  const rows = cases.flatMap((c) =>
    c.rows.map((r) => [
      c.label,
      r.workers === 0 ? 'direct (one process, in turn)' : `${r.workers} worker${r.workers === 1 ? '' : 's'}`,
      String(r.threadsPerWorker),
      r.seconds.toFixed(2),
      r.jobsPerMinute.toFixed(r.jobsPerMinute < 100 ? 1 : 0),
      fmtGBs(r.gbps),
      `${r.vsDirect.toFixed(2)}×`,
    ]),
  );
  return [
    `### queue${quick ? ' (--quick: few and small jobs, not a measurement)' : ''}`,
    '',
    'The same jobs run one after another in one process ("direct") and through the BullMQ queue on a local redis-server by 1, 2 and 4 `slimtensor worker` processes; timed from the first enqueue to the last completion, workers already connected. "time / direct" above 1 is the queue\'s overhead.',
    '',
    markdownTable(['jobs', 'run by', 'threads each', 'seconds', 'jobs/min', 'input GB/s', 'time / direct'], rows),
  ].join('\n');
}

export const queueBench: Benchmark = {
  name: 'queue',
  description: 'the BullMQ job queue: jobs/min and input GB/s with 1, 2 and 4 worker processes against the same jobs in turn in one process (small and 1 GB models)',
  async run(options: BenchOptions): Promise<BenchOutcome> {
    const result = await runQueueBench(options);
    return { result, markdown: markdown(result.cases, options.quick) };
  },
};
