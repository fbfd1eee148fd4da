// What a compression job is on the queue: the request a submitter sends (one
// input, one recipe, one output), its id (the same request always gets the
// same id, which is what makes submitting idempotent), what a worker
// returns, and how a SlimTensorError crosses Redis (BullMQ keeps only an
// error's message, so the code travels at its end, as the CLI prints it).
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import { SlimTensorError, type ErrorCode } from '../errors';
import { sortKeysDeep } from '../formats/compressed-tensors';
import type { CompressProgress, CompressReport } from '../pipeline/compress';
import { OUTPUT_FORMATS, resolveRecipe, TARGETS, type OutputFormat, type Recipe, type Target } from '../pipeline/recipe';

/** One compression: `input` through `recipe` into `output`. Paths are on storage every worker sees. */
export interface CompressionRequest {
  /** Absolute path of a GGUF file, a .safetensors file or a Hugging Face folder. */
  input: string;
  /** Absolute path of the GGUF file or folder to write; its folder must exist. */
  output: string;
  /** A preset name ('q4_0', 'w4a16', ...), a Recipe object or a recipe's JSON text. */
  recipe: Recipe | string;
  /** Output format; overrides the recipe's. */
  format?: OutputFormat;
  /** compressed-tensors outputs: the consumer; overrides the recipe's. */
  target?: Target;
  /** safetensors outputs: largest shard in bytes. */
  maxShardBytes?: number;
  /** Measure each tensor's error against its original (in the report). Default false. */
  measureError?: boolean;
  /** Bytes of tensor buffers the job may hold; counts against the worker's memory budget. Default 1 GiB. */
  memoryLimit?: number;
  /** Threads per operation (default: the worker's). */
  threads?: number;
  /** Replace an existing output (and redo a job that completed before). Default false: an existing complete output is not redone. */
  overwrite?: boolean;
}

/** What is stored in Redis as the job's data. */
export interface CompressionJobData extends CompressionRequest {
  /** The recipe's name, for listings. */
  recipeName: string;
}

/** What a worker publishes with job.updateProgress. */
export interface CompressionProgress {
  /** 'memory': waiting for the worker's memory budget; then compressModel's phases. */
  phase: 'memory' | CompressProgress['phase'];
  worker: string;
  tensorsDone: number;
  tensors: number;
  bytesDone: number;
  totalBytes: number;
  /** The tensor just written. */
  tensor?: string;
  elapsedMs: number;
}

/** A job's result (its BullMQ return value). */
export type CompressionResult =
  | { outcome: 'compressed'; worker: string; attempt: number; report: CompressReport }
  /** The output existed and was a complete model: not redone. */
  | { outcome: 'exists'; worker: string; attempt: number; output: { path: string; bytes: number; format: 'gguf' | 'safetensors'; tensors: number } };

/** The default queue name. */
export const DEFAULT_QUEUE = 'slimtensor';

/** Bytes a job's memoryLimit defaults to (compressModel's default). */
export const DEFAULT_JOB_MEMORY = 1024 ** 3;

const REQUEST_KEYS = ['input', 'output', 'recipe', 'format', 'target', 'maxShardBytes', 'measureError', 'memoryLimit', 'threads', 'overwrite'];

/** Throws unless `v` is made of JSON values only (no Map, typed array, function, ...): jobs travel as JSON. */
function checkJson(v: unknown, where: string): void {
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new SlimTensorError(`${where}: ${v} cannot travel as JSON`, 'ERR_VALUE');
    return;
  }
  if (Array.isArray(v)) {
    v.forEach((x, i) => checkJson(x, `${where}[${i}]`));
    return;
  }
  if (typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
    for (const [k, x] of Object.entries(v)) if (x !== undefined) checkJson(x, `${where}.${k}`);
    return;
  }
  throw new SlimTensorError(`${where}: a job's recipe must be plain JSON (objects, arrays, strings, numbers, booleans); got ${Object.prototype.toString.call(v)}`, 'ERR_VALUE');
}

/**
 * Checks a request (on the submitter, and again on the worker: the data
 * comes from Redis) and returns the job data. Paths must be absolute: a
 * worker on another machine has another working directory.
 */
export function checkRequest(r: unknown, where: string): CompressionJobData {
  if (typeof r !== 'object' || r === null || Array.isArray(r)) throw new SlimTensorError(`${where}: a compression request must be an object`, 'ERR_VALUE');
  const o = r as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!REQUEST_KEYS.includes(k) && k !== 'recipeName') throw new SlimTensorError(`${where}: unknown key ${JSON.stringify(k)}; known: ${REQUEST_KEYS.join(', ')}`, 'ERR_VALUE');
  }
  for (const k of ['input', 'output'] as const) {
    const p = o[k];
    if (typeof p !== 'string' || p === '') throw new SlimTensorError(`${where}: ${k} must be a path`, 'ERR_VALUE');
    if (!path.isAbsolute(p)) throw new SlimTensorError(`${where}: ${k} ${JSON.stringify(p)} must be an absolute path (workers on other machines have other working directories)`, 'ERR_VALUE');
  }
  checkJson(o.recipe, `${where}: recipe`);
  const recipe = resolveRecipe(o.recipe as Recipe | string);
  if (o.format !== undefined && !OUTPUT_FORMATS.includes(o.format as OutputFormat)) throw new SlimTensorError(`${where}: format must be one of ${OUTPUT_FORMATS.join(', ')}; got ${JSON.stringify(o.format)}`, 'ERR_VALUE');
  if (o.target !== undefined && !TARGETS.includes(o.target as Target)) throw new SlimTensorError(`${where}: target must be one of ${TARGETS.join(', ')}; got ${JSON.stringify(o.target)}`, 'ERR_VALUE');
  for (const k of ['maxShardBytes', 'memoryLimit'] as const) {
    const v = o[k];
    if (v !== undefined && !(Number.isSafeInteger(v) && (v as number) > 0)) throw new SlimTensorError(`${where}: ${k} must be a positive integer (bytes), got ${String(v)}`, 'ERR_VALUE');
  }
  if (o.threads !== undefined && !(Number.isInteger(o.threads) && (o.threads as number) >= 1 && (o.threads as number) <= 1024)) throw new SlimTensorError(`${where}: threads must be an integer in 1..1024, got ${String(o.threads)}`, 'ERR_VALUE');
  for (const k of ['measureError', 'overwrite'] as const) {
    if (o[k] !== undefined && typeof o[k] !== 'boolean') throw new SlimTensorError(`${where}: ${k} must be a boolean`, 'ERR_VALUE');
  }
  const data: CompressionJobData = { input: path.normalize(o.input as string), output: path.normalize(o.output as string), recipe: o.recipe as Recipe | string, recipeName: recipe.name };
  for (const k of REQUEST_KEYS.slice(3)) if (o[k] !== undefined) (data as unknown as Record<string, unknown>)[k] = o[k];
  return data;
}

/**
 * The job id: a hash of what decides the output's bytes (input, output,
 * recipe, format, target, shard size, measured errors). The same request
 * submitted twice is one job; how it runs (memory, threads, overwrite) is
 * not part of it.
 */
export function jobIdOf(d: CompressionJobData): string {
  const key = sortKeysDeep({ input: d.input, output: d.output, recipe: d.recipe, format: d.format, target: d.target, maxShardBytes: d.maxShardBytes, measureError: d.measureError === true });
  return `c${createHash('sha256').update(JSON.stringify(key)).digest('hex').slice(0, 32)}`;
}

/** The tag of a job's temporary outputs (removeTemps finds what a killed attempt left). */
export function tempTagOf(jobId: string): string {
  return `q${jobId}`;
}

const CODE_SUFFIX = / \[(ERR_[A-Z]+)\]$/;

/** An error's message as BullMQ stores it: a SlimTensorError's code appended as ` [ERR_X]`. */
export function failureMessage(e: unknown): string {
  if (e instanceof SlimTensorError) return `${e.message} [${e.code}]`;
  if (e instanceof Error) {
    const code = (e as NodeJS.ErrnoException).code;
    return typeof code === 'string' && !e.message.includes(code) ? `${e.message} (${code})` : e.message;
  }
  return String(e);
}

/** A failed job's reason back as an error: a SlimTensorError when it carries a code. */
export function failureError(reason: string): Error {
  const m = CODE_SUFFIX.exec(reason);
  if (m === null) return new Error(reason);
  return new SlimTensorError(reason.slice(0, m.index), m[1] as ErrorCode);
}
