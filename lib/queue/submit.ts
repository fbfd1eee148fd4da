// The submitting side: enqueue compression jobs, follow their progress,
// collect their results. A request always maps to the same job id, so
// submitting again while the job waits or runs adds nothing; a job that
// finished (completed or failed) is replaced by a fresh one, and a worker
// does not redo a job whose output is already there and complete.
import type { Job, Queue, QueueEvents } from 'bullmq';
import { SlimTensorError } from '../errors';
import { bullmq, checkRedisUrl, closeClient, connectionOptions, queueName, readyWithin, redisClient, timingsOf, type QueueLocation } from './connection';
import { checkRequest, failureError, jobIdOf, type CompressionJobData, type CompressionProgress, type CompressionRequest, type CompressionResult } from './job';

export interface EnqueueOptions {
  /** Tries per job for failures that may pass (I/O errors): SlimTensorErrors are not retried, and a worker's death is counted by its maxStalledCount instead. Default 3. */
  attempts?: number;
  /** Delay before the first retry in ms, doubling after each. Default 5000. */
  backoffMs?: number;
  /** How long finished jobs and their results stay in Redis, in seconds. Default 7 days. */
  keepSeconds?: number;
  /** BullMQ priority: 1 is the highest; jobs without one go first. */
  priority?: number;
}

export interface EnqueuedJob {
  id: string;
  input: string;
  output: string;
  recipe: string;
  /** 'added': a new job; 'existing': the same job was already waiting or running (`state` says which). */
  status: 'added' | 'existing';
  state: string;
}

/** How a job ended. */
export type JobOutcome = { id: string; ok: true; result: CompressionResult } | { id: string; ok: false; error: Error; attempts: number };

export interface WaitOptions {
  onProgress?: (id: string, p: CompressionProgress) => void;
  /** Stops waiting (the jobs go on); rejects with signal.reason. */
  signal?: AbortSignal;
}

const DEFAULT_ATTEMPTS = 3;
const DEFAULT_BACKOFF_MS = 5000;
const DEFAULT_KEEP_SECONDS = 7 * 24 * 3600;

function checkEnqueueOptions(o: EnqueueOptions): void {
  if (o.attempts !== undefined && !(Number.isInteger(o.attempts) && o.attempts >= 1 && o.attempts <= 100)) throw new SlimTensorError(`enqueueCompression: attempts must be an integer in 1..100, got ${String(o.attempts)}`, 'ERR_VALUE');
  if (o.backoffMs !== undefined && !(Number.isFinite(o.backoffMs) && o.backoffMs >= 0)) throw new SlimTensorError(`enqueueCompression: backoffMs must be a number >= 0, got ${String(o.backoffMs)}`, 'ERR_VALUE');
  if (o.keepSeconds !== undefined && !(Number.isFinite(o.keepSeconds) && o.keepSeconds > 0)) throw new SlimTensorError(`enqueueCompression: keepSeconds must be a number > 0, got ${String(o.keepSeconds)}`, 'ERR_VALUE');
  if (o.priority !== undefined && !(Number.isInteger(o.priority) && o.priority >= 1 && o.priority <= 2 ** 21)) throw new SlimTensorError(`enqueueCompression: priority must be an integer in 1..2097152, got ${String(o.priority)}`, 'ERR_VALUE');
}

/** A connection to a compression queue for submitting and following jobs. */
export class CompressionQueue {
  readonly name: string;
  readonly redis: string;
  private readonly queue: Queue<CompressionJobData, CompressionResult>;
  /** The queue's connection (ours, shared with BullMQ): also reads where the event stream ends. */
  private readonly client: import('ioredis').Redis;
  private readonly location: QueueLocation;
  private readonly maxBackoffMs: number;
  private readonly connectTimeoutMs: number;
  private events: Promise<QueueEvents> | undefined;
  private lastError: Error | undefined;
  private ready: Promise<void> | undefined;

  private constructor(location: QueueLocation) {
    const { url, shown } = checkRedisUrl(location.redis, 'CompressionQueue');
    this.name = queueName(location.queue, 'CompressionQueue');
    this.redis = shown;
    this.location = { ...location, redis: url };
    ({ maxBackoffMs: this.maxBackoffMs, connectTimeoutMs: this.connectTimeoutMs } = timingsOf(location, 'CompressionQueue'));
    const { Queue } = bullmq();
    this.client = redisClient(url, this.maxBackoffMs);
    this.queue = new Queue<CompressionJobData, CompressionResult>(this.name, { connection: this.client, ...(location.prefix !== undefined ? { prefix: location.prefix } : {}) });
    // Connection errors surface on the calls that need Redis (connected()
    // names the last one); this also keeps an unheard 'error' event from
    // ending the process.
    this.client.on('error', (e: Error) => (this.lastError = e));
    this.queue.on('error', (e: Error) => (this.lastError = e));
  }

  /** Resolves once Redis has been reached; a SlimTensorError when not within connectTimeoutMs. Later outages make calls wait. */
  private connected(): Promise<void> {
    this.ready ??= readyWithin(this.queue.waitUntilReady(), this.connectTimeoutMs, this.redis, () => this.lastError);
    const ready = this.ready;
    // A failed first attempt is not cached: the next call tries again.
    ready.catch(() => {
      if (this.ready === ready) this.ready = undefined;
    });
    return ready;
  }

  /** Opens the queue (connecting happens on first use). */
  static open(location: QueueLocation): CompressionQueue {
    return new CompressionQueue(location);
  }

  /** Adds one job per request (or finds the identical one already there). */
  async enqueue(requests: CompressionRequest | readonly CompressionRequest[], options: EnqueueOptions = {}): Promise<EnqueuedJob[]> {
    checkEnqueueOptions(options);
    const list = Array.isArray(requests) ? requests : [requests as CompressionRequest];
    // Check every request before adding any.
    const datas = list.map((r, i) => checkRequest(r, list.length === 1 ? 'enqueueCompression' : `enqueueCompression: request #${i + 1}`));
    const keep = { age: options.keepSeconds ?? DEFAULT_KEEP_SECONDS };
    await this.connected();
    const out: EnqueuedJob[] = [];
    for (const data of datas) {
      const id = jobIdOf(data);
      const base = { id, input: data.input, output: data.output, recipe: data.recipeName };
      const existing = await this.queue.getJob(id);
      if (existing !== undefined) {
        const state = await existing.getState();
        if (state !== 'completed' && state !== 'failed' && state !== 'unknown') {
          out.push({ ...base, status: 'existing', state });
          continue;
        }
        // Finished: a fresh job (the worker will not redo a complete output unless overwrite).
        await existing.remove().catch(() => undefined);
      }
      await this.queue.add(data.recipeName, data, {
        jobId: id,
        attempts: options.attempts ?? DEFAULT_ATTEMPTS,
        backoff: { type: 'exponential', delay: options.backoffMs ?? DEFAULT_BACKOFF_MS },
        removeOnComplete: keep,
        removeOnFail: keep,
        ...(options.priority !== undefined ? { priority: options.priority } : {}),
      });
      out.push({ ...base, status: 'added', state: 'waiting' });
    }
    return out;
  }

  /** The job (BullMQ's object: state, progress, returnvalue, failedReason), or undefined. */
  async job(id: string): Promise<Job<CompressionJobData, CompressionResult> | undefined> {
    await this.connected();
    return this.queue.getJob(id);
  }

  /** Job counts by state. */
  async counts(): Promise<Record<string, number>> {
    await this.connected();
    return this.queue.getJobCounts('waiting', 'active', 'completed', 'failed', 'delayed', 'prioritized');
  }

  /** Starts listening to the queue's events now: call it before enqueue() so wait() hears every progress update. */
  async subscribe(): Promise<void> {
    await this.queueEvents();
  }

  /** Waits until every job has completed or failed (for good: retries included). */
  async wait(ids: readonly string[], options: WaitOptions = {}): Promise<JobOutcome[]> {
    options.signal?.throwIfAborted();
    const events = await this.queueEvents();
    const outcomes = new Map<string, JobOutcome>();
    let finishedAll: () => void = () => undefined;
    const allDone = new Promise<void>((resolve) => (finishedAll = resolve));
    const settle = (o: JobOutcome): void => {
      if (outcomes.has(o.id) || !ids.includes(o.id)) return;
      outcomes.set(o.id, o);
      if (outcomes.size === new Set(ids).size) finishedAll();
    };
    const failed = async (id: string, reason?: string): Promise<JobOutcome> => {
      const job = await this.queue.getJob(id);
      return { id, ok: false, error: failureError(job?.failedReason ?? reason ?? 'failed'), attempts: job?.attemptsMade ?? 0 };
    };
    // One listener per event for all the jobs (not one per job), attached
    // before the states are read: a job that ends in between is heard either way.
    const onCompleted = ({ jobId, returnvalue }: { jobId: string; returnvalue: unknown }): void => {
      if (!ids.includes(jobId)) return;
      settle({ id: jobId, ok: true, result: returnvalue as CompressionResult });
    };
    const onFailed = ({ jobId, failedReason }: { jobId: string; failedReason: string }): void => {
      if (!ids.includes(jobId)) return;
      failed(jobId, failedReason).then(settle, () => settle({ id: jobId, ok: false, error: failureError(failedReason), attempts: 0 }));
    };
    const onProgress = ({ jobId, data }: { jobId: string; data: unknown }): void => {
      if (ids.includes(jobId) && typeof data === 'object' && data !== null) options.onProgress?.(jobId, data as CompressionProgress);
    };
    events.on('completed', onCompleted);
    events.on('failed', onFailed);
    if (options.onProgress !== undefined) events.on('progress', onProgress);
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(options.signal?.reason);
      options.signal?.addEventListener('abort', onAbort, { once: true });
    });
    aborted.catch(() => undefined);
    try {
      if (ids.length === 0) finishedAll();
      for (const id of new Set(ids)) {
        // The state first, then the job: a job read before it completed has no result yet.
        const state = await this.queue.getJobState(id);
        if (state === 'unknown') settle({ id, ok: false, error: new SlimTensorError(`job ${id} is not in queue ${this.name}`, 'ERR_VALUE'), attempts: 0 });
        else if (state === 'completed') {
          const job = await this.queue.getJob(id);
          if (job !== undefined) settle({ id, ok: true, result: job.returnvalue });
        } else if (state === 'failed') settle(await failed(id));
      }
      await Promise.race([allDone, aborted]);
      return ids.map((id) => outcomes.get(id) as JobOutcome);
    } finally {
      if (onAbort !== undefined) options.signal?.removeEventListener('abort', onAbort);
      events.off('completed', onCompleted);
      events.off('failed', onFailed);
      events.off('progress', onProgress);
    }
  }

  private queueEvents(): Promise<QueueEvents> {
    this.events ??= (async () => {
      await this.connected();
      // Read from where the stream ends now, not from '$' when the first
      // XREAD reaches Redis, which may be later: an event in between (a job
      // completing as wait() starts) would be lost.
      const last = await this.client.xrevrange(this.queue.keys.events as string, '+', '-', 'COUNT', 1);
      const lastEventId = last[0]?.[0] ?? '0-0';
      const { QueueEvents } = bullmq();
      const e = new QueueEvents(this.name, { connection: connectionOptions(this.location.redis, this.maxBackoffMs), lastEventId, ...(this.location.prefix !== undefined ? { prefix: this.location.prefix } : {}) });
      e.on('error', () => undefined);
      await e.waitUntilReady();
      return e;
    })();
    const events = this.events;
    events.catch(() => {
      if (this.events === events) this.events = undefined;
    });
    return events;
  }

  /** Closes the connections. */
  async close(): Promise<void> {
    const events = this.events;
    this.events = undefined;
    await Promise.all([this.queue.close(), events?.then((e) => e.close(), () => undefined)]);
    await closeClient(this.client);
  }
}

/** Adds compression jobs to the queue at `options.redis` (one connection, closed afterwards). */
export async function enqueueCompression(requests: CompressionRequest | readonly CompressionRequest[], options: QueueLocation & EnqueueOptions): Promise<EnqueuedJob[]> {
  const q = CompressionQueue.open(options);
  try {
    return await q.enqueue(requests, options);
  } finally {
    await q.close();
  }
}
