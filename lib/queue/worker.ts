// The working side: takes compression jobs from the queue and runs
// compressModel on each.
//
// - Concurrency is BullMQ's (`concurrency` jobs at once) and also bounded by
//   a memory budget: a job's memoryLimit (clamped to the budget) is admitted
//   through the same Gate compressModel uses for tensors.
// - Outputs are written under a temporary name tagged with the job id and
//   renamed when complete (compressModel's staging); a retry first removes
//   what a killed attempt left under that tag, so nothing partial stays.
// - A job whose output already exists and opens as a complete model is not
//   redone (unless overwrite): its result says so.
// - A SlimTensorError (bad input, bad recipe, unreadable path) fails the job
//   for good; other errors (I/O) are retried with BullMQ's backoff. A worker
//   killed mid-job loses its lock; BullMQ's stalled-job check hands the job
//   to another worker, which starts it again from the beginning.
// - close(): no new jobs; running ones get a grace period, then are aborted
//   (their temporaries removed) and moved back to the queue.
import { promises as fsp, constants as fsc } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Job, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { SlimTensorError } from '../errors';
import { compressModel, type CompressProgress } from '../pipeline/compress';
import { Gate } from '../pipeline/memory';
import { removeTemps } from '../pipeline/output';
import { openModel } from '../pipeline/source';
import { bullmq, checkRedisUrl, closeClient, msOption, queueName, redisClient, throttledLog, timingsOf, type QueueLocation } from './connection';
import { checkRequest, DEFAULT_JOB_MEMORY, failureMessage, tempTagOf, type CompressionJobData, type CompressionProgress, type CompressionResult } from './job';

export interface WorkerOptions extends QueueLocation {
  /** Jobs at once. Default 1. */
  concurrency?: number;
  /** Bytes of tensor buffers all running jobs may hold together. Default: half the machine's memory. */
  memory?: number;
  /** Threads per operation for jobs that do not set theirs (default: all cores). */
  threads?: number;
  /** Shown in logs and job results, stored on each job. Default host:pid. */
  name?: string;
  /** close(): how long running jobs get to finish before they are aborted and returned to the queue. Default 30 s. */
  graceMs?: number;
  /** BullMQ lockDuration: a job whose worker stops renewing its lock for this long is stalled. Default 30 s. */
  lockDurationMs?: number;
  /** BullMQ stalledInterval: how often this worker looks for stalled jobs. Default 30 s. */
  stalledIntervalMs?: number;
  /** BullMQ maxStalledCount: stalls (worker deaths) a job survives; one more fails it. Default 2. */
  maxStalledCount?: number;
  /** Where the worker says what it does (started, completed, failed, Redis unavailable, ...). Default: nowhere. */
  log?: (line: string) => void;
  /** Seconds between progress updates of a job (the first and last always go out). Default 0.25. */
  progressIntervalMs?: number;
}

export interface CompressionWorker {
  readonly name: string;
  /** Jobs being run now. */
  readonly running: number;
  /** Resolves once connected to Redis and taking jobs. */
  ready(): Promise<void>;
  /**
   * Stops taking jobs; running ones get `graceMs` (default the option's) to
   * finish, then are aborted and moved back to the queue. Resolves when
   * every job has finished or gone back, and the connections are closed.
   */
  close(graceMs?: number): Promise<void>;
}

const DEFAULT_GRACE_MS = 30_000;
const DEFAULT_MAX_STALLED = 2;
const DEFAULT_PROGRESS_MS = 250;
/** close() with Redis away: how long past the grace period to wait for jobs stuck on Redis calls. */
const FORCE_AFTER_GRACE_MS = 10_000;

/** Why a job was aborted by close(): it goes back to the queue. */
class ShutdownAbort extends Error {
  constructor() {
    super('the worker is shutting down; the job goes back to the queue');
    this.name = 'AbortError';
  }
}

function positiveInt(v: unknown, where: string, what: string, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (v === undefined) return undefined;
  if (!(Number.isSafeInteger(v) && (v as number) >= 1 && (v as number) <= max)) throw new SlimTensorError(`${where}: ${what} must be an integer in 1..${max}, got ${String(v)}`, 'ERR_VALUE');
  return v as number;
}

function gib(n: number): string {
  return `${(n / 1024 ** 3).toFixed(n >= 1024 ** 3 ? 1 : 2)} GiB`;
}

/** Fails a job up front, with a clear reason, when this worker cannot read its input or write its output's folder. */
async function checkAccess(d: CompressionJobData, worker: string): Promise<void> {
  const where = `worker ${worker}`;
  try {
    await fsp.access(d.input, fsc.R_OK);
  } catch (e) {
    throw new SlimTensorError(`${where} cannot read the input ${d.input} (${(e as NodeJS.ErrnoException).code ?? String(e)}); inputs and outputs must be on storage every worker sees, at the same path`, 'ERR_VALUE');
  }
  const folder = path.dirname(d.output);
  const st = await fsp.stat(folder).catch(() => undefined);
  if (st === undefined || !st.isDirectory()) throw new SlimTensorError(`${where}: the output's folder ${folder} does not exist here; inputs and outputs must be on storage every worker sees, at the same path`, 'ERR_VALUE');
  try {
    await fsp.access(folder, fsc.W_OK | fsc.X_OK);
  } catch (e) {
    throw new SlimTensorError(`${where} cannot write to the output's folder ${folder} (${(e as NodeJS.ErrnoException).code ?? String(e)})`, 'ERR_VALUE');
  }
}

/** The output when it exists and opens as a complete model (outputs appear only when complete: they are renamed into place). */
async function existingOutput(output: string): Promise<Extract<CompressionResult, { outcome: 'exists' }>['output'] | undefined> {
  const st = await fsp.lstat(output).catch(() => undefined);
  if (st === undefined) return undefined;
  try {
    const m = await openModel(output);
    try {
      const bytes = st.isDirectory() ? await folderBytes(output) : st.size;
      return { path: output, bytes, format: m.format, tensors: m.tensors.length };
    } finally {
      await m.close();
    }
  } catch (e) {
    throw new SlimTensorError(`the output ${output} exists but is not a complete model (${e instanceof Error ? e.message : String(e)}); submit with overwrite (CLI: --force) to replace it`, 'ERR_VALUE');
  }
}

async function folderBytes(p: string): Promise<number> {
  let total = 0;
  for (const e of await fsp.readdir(p, { withFileTypes: true })) total += e.isDirectory() ? await folderBytes(path.join(p, e.name)) : (await fsp.stat(path.join(p, e.name))).size;
  return total;
}

/** Starts a worker on the queue at `options.redis`. It connects (and reconnects) on its own; see ready(). */
export function createWorker(options: WorkerOptions): CompressionWorker {
  const where = 'createWorker';
  const { url, shown } = checkRedisUrl(options.redis, where);
  const queue = queueName(options.queue, where);
  const concurrency = positiveInt(options.concurrency, where, 'concurrency', 1024) ?? 1;
  const memory = positiveInt(options.memory, where, 'memory (bytes)') ?? Math.floor(os.totalmem() / 2);
  const threads = positiveInt(options.threads, where, 'threads', 1024);
  const graceDefault = msOption(options.graceMs, where, 'graceMs') ?? DEFAULT_GRACE_MS;
  const lockDuration = msOption(options.lockDurationMs, where, 'lockDurationMs', 100);
  const stalledInterval = msOption(options.stalledIntervalMs, where, 'stalledIntervalMs', 100);
  const maxStalledCount = options.maxStalledCount === undefined ? DEFAULT_MAX_STALLED : positiveInt(options.maxStalledCount, where, 'maxStalledCount', 1000);
  const maxBackoff = timingsOf(options, where).maxBackoffMs;
  const progressMs = msOption(options.progressIntervalMs, where, 'progressIntervalMs') ?? DEFAULT_PROGRESS_MS;
  const name = options.name ?? `${os.hostname()}:${process.pid}`;
  if (typeof name !== 'string' || name === '') throw new SlimTensorError(`${where}: name must be a non-empty string`, 'ERR_VALUE');
  const log = options.log ?? (() => undefined);
  const say = throttledLog(log, 5000);

  const { Worker: BullWorker, UnrecoverableError, WaitingError } = bullmq();
  // One ioredis client of our own: its 'ready' after an outage is how the
  // worker knows (and says) Redis is back. BullMQ duplicates it for its
  // blocking connection; both reconnect with the same backoff.
  let down = false;
  // close() with Redis away: stop reconnecting, so that what waits for Redis fails and close() can end.
  let givingUp = false;
  const client: Redis = redisClient(
    url,
    maxBackoff,
    (attempt, delay) => {
      down = true;
      say('retry', `redis ${shown} unavailable; retrying the connection in ${(delay / 1000).toFixed(1)} s (attempt ${attempt})`);
    },
    () => givingUp,
  );
  client.on('error', (e: Error) => say(`error:${e.message}`, `redis ${shown}: ${e.message}`));
  client.on('ready', () => {
    if (down) log(`redis ${shown} is back; going on`);
    down = false;
  });

  const gate = new Gate(memory, concurrency);
  const running = new Map<string, AbortController>();
  let shuttingDown = false;

  const processor = async (job: Job<CompressionJobData, CompressionResult>, token?: string, bullSignal?: AbortSignal): Promise<CompressionResult> => {
    const id = job.id as string;
    const ac = new AbortController();
    const onBullAbort = (): void => ac.abort(bullSignal?.reason);
    bullSignal?.addEventListener('abort', onBullAbort);
    running.set(id, ac);
    const attempt = job.attemptsStarted;
    const started = performance.now();
    try {
      if (shuttingDown) throw new ShutdownAbort();
      const data = checkRequest(job.data, `job ${id}`);
      log(`job ${id} started (attempt ${attempt}): ${data.input} -> ${data.output} (${data.recipeName})`);
      const stale = await removeTemps(data.output, tempTagOf(id));
      if (stale.length > 0) log(`job ${id}: removed ${stale.length} partial output${stale.length === 1 ? '' : 's'} of an earlier attempt (${stale.map((p) => path.basename(p)).join(', ')})`);
      await checkAccess(data, name);
      if (data.overwrite !== true) {
        const out = await existingOutput(data.output);
        if (out !== undefined) {
          log(`job ${id}: ${data.output} exists and is complete; not redone`);
          return { outcome: 'exists', worker: name, attempt, output: out };
        }
      }
      let last = 0;
      const publish = (p: CompressionProgress, force: boolean): void => {
        const now = performance.now();
        if (!force && now - last < progressMs) return;
        last = now;
        // Not awaited: with Redis away, updates wait in ioredis' queue and the job goes on.
        job.updateProgress(p).catch(() => undefined);
      };
      const need = Math.min(data.memoryLimit ?? DEFAULT_JOB_MEMORY, memory);
      if (need < (data.memoryLimit ?? DEFAULT_JOB_MEMORY)) log(`job ${id}: memoryLimit ${gib(data.memoryLimit as number)} is over this worker's budget; running with ${gib(need)}`);
      publish({ phase: 'memory', worker: name, tensorsDone: 0, tensors: 0, bytesDone: 0, totalBytes: 0, elapsedMs: 0 }, true);
      if (!(await gate.acquire(need, () => ac.signal.aborted))) throw ac.signal.reason;
      try {
        const onProgress = (p: CompressProgress): void =>
          publish(
            { phase: p.phase, worker: name, tensorsDone: p.index, tensors: p.count, bytesDone: p.bytesDone, totalBytes: p.totalBytes, ...(p.tensor !== undefined ? { tensor: p.tensor } : {}), elapsedMs: p.elapsedMs },
            p.phase !== 'tensor' || p.index === p.count,
          );
        const report = await compressModel({
          input: data.input,
          output: data.output,
          recipe: data.recipe,
          memoryLimit: need,
          signal: ac.signal,
          onProgress,
          tempTag: tempTagOf(id),
          overwrite: data.overwrite === true,
          ...(data.format !== undefined ? { format: data.format } : {}),
          ...(data.target !== undefined ? { target: data.target } : {}),
          ...(data.maxShardBytes !== undefined ? { maxShardBytes: data.maxShardBytes } : {}),
          ...(data.measureError === true ? { measureError: true } : {}),
          ...((data.threads ?? threads) !== undefined ? { threads: (data.threads ?? threads) as number } : {}),
        });
        log(`job ${id} completed in ${((performance.now() - started) / 1000).toFixed(2)} s: ${report.output.bytes} bytes, ${report.ratio.toFixed(2)}x smaller`);
        return { outcome: 'compressed', worker: name, attempt, report };
      } finally {
        gate.release(need);
      }
    } catch (e) {
      if (ac.signal.aborted && ac.signal.reason instanceof ShutdownAbort) {
        // compressModel removed its temporary output; the job waits for another worker.
        if (client.status === 'ready') {
          await job.moveToWait(token);
          log(`job ${id} returned to the queue (shutdown)`);
        } else {
          // Moving it needs Redis; its lock expiring does the same.
          log(`job ${id} aborted (shutdown); Redis is unavailable, so it returns to the queue when its lock expires`);
        }
        throw new WaitingError();
      }
      const message = failureMessage(e);
      if (e instanceof SlimTensorError) {
        log(`job ${id} failed: ${message}`);
        throw new UnrecoverableError(message);
      }
      log(`job ${id} failed (attempt ${attempt} of ${job.opts.attempts ?? 1}): ${message}`);
      throw new Error(message);
    } finally {
      bullSignal?.removeEventListener('abort', onBullAbort);
      running.delete(id);
    }
  };

  const worker: Worker<CompressionJobData, CompressionResult> = new BullWorker<CompressionJobData, CompressionResult>(queue, processor, {
    connection: client,
    name,
    concurrency,
    maxStalledCount: maxStalledCount as number,
    ...(lockDuration !== undefined ? { lockDuration } : {}),
    ...(stalledInterval !== undefined ? { stalledInterval } : {}),
    ...(options.prefix !== undefined ? { prefix: options.prefix } : {}),
  });
  worker.on('error', (e: Error) => say(`error:${e.message}`, `queue ${queue}: ${e.message}`));
  worker.on('stalled', (jobId: string) => log(`job ${jobId} stalled (its worker stopped renewing the lock); back in the queue`));

  let closing: Promise<void> | undefined;
  let deadline = Infinity;
  let graceTimer: NodeJS.Timeout | undefined;
  const abortAll = (): void => {
    for (const ac of running.values()) ac.abort(new ShutdownAbort());
    gate.wake();
  };
  const ready = (async () => {
    await worker.waitUntilReady();
    log(`worker ${name} on ${shown}, queue ${queue}: ${concurrency} job${concurrency === 1 ? '' : 's'} at once, memory ${gib(memory)}`);
  })();
  ready.catch(() => undefined);

  return {
    name,
    get running() {
      return running.size;
    },
    ready: () => ready,
    close(graceMs = graceDefault) {
      if (msOption(graceMs, 'close', 'graceMs') === undefined) graceMs = graceDefault;
      // A second close() can only bring the deadline closer (a second Ctrl-C: abort now).
      const at = Date.now() + graceMs;
      if (at < deadline) {
        deadline = at;
        clearTimeout(graceTimer);
        graceTimer = setTimeout(abortAll, graceMs);
      }
      closing ??= (async () => {
        shuttingDown = true;
        if (running.size > 0) log(`stopping: no new jobs; ${running.size} running get ${(graceMs / 1000).toFixed(1)} s to finish, then go back to the queue`);
        // BullMQ's close() waits for Redis to hear how each job ended. With
        // Redis away that is forever: once no job runs (or the grace period
        // is long over), stop without it. The jobs' locks then expire and
        // another worker's stalled-job check hands them on (a completed
        // output is found complete there, not redone).
        const graceful = worker.close();
        graceful.catch(() => undefined);
        let settled = false;
        const withoutRedis = (async () => {
          while (!settled) {
            await new Promise((r) => setTimeout(r, 100));
            if (client.status !== 'ready' && (running.size === 0 || Date.now() > deadline + FORCE_AFTER_GRACE_MS)) return true;
          }
          return false;
        })();
        try {
          if (await Promise.race([graceful.then(() => false), withoutRedis])) {
            log(`redis ${shown} is unavailable: stopping without it${running.size > 0 ? `; ${running.size} job(s) go back to the queue when their locks expire` : ''}`);
            givingUp = true;
            client.disconnect();
            await worker.disconnect().catch(() => undefined);
            await graceful.catch(() => undefined);
          }
        } finally {
          settled = true;
          clearTimeout(graceTimer);
          await closeClient(client);
        }
        log(`worker ${name} stopped`);
      })();
      return closing;
    },
  };
}
