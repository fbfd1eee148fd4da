// The Redis connection every queue object uses, and BullMQ itself, loaded
// only when a queue is used: `require('slimtensor')` must not pay for it
// (BullMQ and ioredis take longer to load than the rest of slimtensor).
import { SlimTensorError } from '../errors';
import { DEFAULT_QUEUE } from './job';

/** Where the queue lives. */
export interface QueueLocation {
  /** redis://[user:password@]host:port[/db] or rediss:// (TLS). */
  redis: string;
  /** The queue's name. Default 'slimtensor'. */
  queue?: string;
  /** BullMQ's key prefix in Redis. Default 'bull'. */
  prefix?: string;
  /** Longest wait between attempts to reach Redis while it is unavailable, in ms. Default 2000. */
  maxBackoffMs?: number;
  /**
   * Submitting side (CompressionQueue, enqueueCompression): how long to try
   * reaching Redis before a call fails, in ms. Default 10000. (A worker
   * waits for Redis as long as it takes.)
   */
  connectTimeoutMs?: number;
}

const DEFAULT_MAX_BACKOFF_MS = 2000;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/** A duration option in milliseconds, checked; undefined when not given. */
export function msOption(v: unknown, where: string, what: string, min = 0): number | undefined {
  if (v === undefined) return undefined;
  if (!(typeof v === 'number' && Number.isFinite(v) && v >= min)) throw new SlimTensorError(`${where}: ${what} must be a number of milliseconds >= ${min}, got ${String(v)}`, 'ERR_VALUE');
  return v;
}

/** The location's maxBackoffMs and connectTimeoutMs, checked, with their defaults. */
export function timingsOf(l: QueueLocation, where: string): { maxBackoffMs: number; connectTimeoutMs: number } {
  return {
    maxBackoffMs: msOption(l.maxBackoffMs, where, 'maxBackoffMs', 1) ?? DEFAULT_MAX_BACKOFF_MS,
    connectTimeoutMs: msOption(l.connectTimeoutMs, where, 'connectTimeoutMs', 1) ?? DEFAULT_CONNECT_TIMEOUT_MS,
  };
}

/**
 * Resolves when `ready` does; rejects with a SlimTensorError naming the
 * server and the last connection error when it has not within `timeoutMs`.
 */
export async function readyWithin(ready: Promise<unknown>, timeoutMs: number, shown: string, lastError: () => Error | undefined): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const e = lastError();
      reject(new SlimTensorError(`cannot reach Redis at ${shown} within ${(timeoutMs / 1000).toFixed(1)} s${e !== undefined ? ` (${e.message})` : ''}; is redis-server running there, and is the address right?`, 'ERR_VALUE'));
    }, timeoutMs);
  });
  try {
    await Promise.race([ready, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export type BullMQ = typeof import('bullmq');

let loaded: BullMQ | undefined;

/** The bullmq module, loaded on first use. */
export function bullmq(): BullMQ {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  loaded ??= require('bullmq') as BullMQ;
  return loaded;
}

/** Checks a redis:// URL; returns it without a trailing slash, and a form safe to print (no password). */
export function checkRedisUrl(url: unknown, where: string): { url: string; shown: string } {
  if (typeof url !== 'string') throw new SlimTensorError(`${where}: redis must be a redis:// URL`, 'ERR_VALUE');
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new SlimTensorError(`${where}: ${JSON.stringify(url)} is not a URL; expected redis://host:port`, 'ERR_VALUE');
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new SlimTensorError(`${where}: ${JSON.stringify(url)} must start with redis:// or rediss://`, 'ERR_VALUE');
  if (u.hostname === '') throw new SlimTensorError(`${where}: ${JSON.stringify(url)} names no host`, 'ERR_VALUE');
  if (u.pathname !== '' && u.pathname !== '/' && !/^\/[0-9]+$/.test(u.pathname)) throw new SlimTensorError(`${where}: ${JSON.stringify(url)}: the path must be a database number (/0 .. /15)`, 'ERR_VALUE');
  const shown = new URL(url);
  if (shown.password !== '') shown.password = '***';
  return { url, shown: shown.toString().replace(/\/$/, '') };
}

export function queueName(q: unknown, where: string): string {
  if (q === undefined) return DEFAULT_QUEUE;
  if (typeof q !== 'string' || !/^[A-Za-z0-9_.-]{1,100}$/.test(q)) throw new SlimTensorError(`${where}: queue must be 1 to 100 letters, digits, '.', '_' or '-', got ${JSON.stringify(q)}`, 'ERR_VALUE');
  return q;
}

/** Reconnection delays: 0.1 s doubling up to `maxMs` (ioredis' retryStrategy). */
export function backoffMs(attempt: number, maxMs: number): number {
  return Math.min(maxMs, 100 * 2 ** Math.min(attempt - 1, 20));
}

/**
 * BullMQ connection options for `url`: ioredis reconnects with backoff until
 * `giveUp()` (default: forever), and `onRetry` hears each attempt (a worker
 * logs it). BullMQ opens several connections; each retries on its own.
 */
export function connectionOptions(url: string, maxBackoffMs: number, onRetry?: (attempt: number, delayMs: number) => void, giveUp?: () => boolean): import('bullmq').ConnectionOptions {
  return {
    url,
    maxRetriesPerRequest: null,
    retryStrategy: (attempt: number) => {
      // null ends the connection: commands waiting for it fail.
      if (giveUp?.() === true) return null;
      const delay = backoffMs(attempt, maxBackoffMs);
      onRetry?.(attempt, delay);
      return delay;
    },
  };
}

/**
 * An ioredis client for `url` with connectionOptions' reconnection (ioredis
 * loaded now). BullMQ objects given it share it and leave closing it to us;
 * closeClient does.
 */
export function redisClient(url: string, maxBackoffMs: number, onRetry?: (attempt: number, delayMs: number) => void, giveUp?: () => boolean): import('ioredis').Redis {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const IORedis = (require('ioredis') as typeof import('ioredis')).Redis;
  return new IORedis(url, connectionOptions(url, maxBackoffMs, onRetry, giveUp) as object);
}

/** Closes a client: QUIT when connected, else drop it (QUIT would wait for Redis). */
export async function closeClient(client: import('ioredis').Redis): Promise<void> {
  if (client.status === 'ready') await client.quit().catch(() => client.disconnect());
  else client.disconnect();
}

/** Keeps the first line of a repeated message per `intervalMs` (connection errors arrive from every connection at once). */
export function throttledLog(log: (line: string) => void, intervalMs: number): (key: string, line: string) => void {
  const last = new Map<string, number>();
  return (key, line) => {
    const now = Date.now();
    if (now - (last.get(key) ?? -Infinity) < intervalMs) return;
    last.set(key, now);
    log(line);
  };
}
