// `slimtensor worker` and `slimtensor submit`: the CLI of the job queue
// (lib/queue). main.ts parses the options; these run them.
import * as path from 'node:path';
import { SlimTensorError } from '../errors';
import type { Recipe } from '../pipeline/recipe';
import { resolveRecipe } from '../pipeline/recipe';
import type { CompressionProgress, CompressionRequest, CompressionResult } from '../queue/job';
import { CompressionQueue, type EnqueuedJob, type JobOutcome } from '../queue/submit';
import { createWorker } from '../queue/worker';
import { EXIT_INTERRUPTED, InterruptedError, renderCompressReport } from './model-commands';
import { formatBytes } from './table';

/** Parses '30s', '500ms', '2m', '1h' or a number of seconds into milliseconds. */
export function parseDuration(v: unknown, what: string): number {
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*$/i.exec(String(v));
  if (m === null) throw new SlimTensorError(`${what}: ${JSON.stringify(v)} is not a duration (e.g. 30s, 500ms, 2m)`, 'ERR_VALUE');
  const scale = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's').toLowerCase() as 'ms' | 's' | 'm' | 'h'];
  return Number(m[1]) * scale;
}

function stamp(line: string): string {
  return `${new Date().toISOString()} ${line}\n`;
}

export interface WorkerCommand {
  redis: string;
  queue: string | undefined;
  concurrency: number | undefined;
  memory: number | undefined;
  threads: number | undefined;
  name: string | undefined;
  graceMs: number;
  lockDurationMs: number | undefined;
  stalledIntervalMs: number | undefined;
  maxStalled: number | undefined;
  maxBackoffMs: number | undefined;
}

/**
 * Runs a worker until SIGTERM or SIGINT: then it takes no new jobs, lets
 * the running ones finish within the grace period and sends the others
 * back to the queue; a second signal sends them back at once.
 */
export async function runWorker(o: WorkerCommand): Promise<void> {
  const log = (line: string): void => {
    process.stderr.write(stamp(`slimtensor worker: ${line}`));
  };
  const w = createWorker({
    redis: o.redis,
    graceMs: o.graceMs,
    log,
    ...(o.queue !== undefined ? { queue: o.queue } : {}),
    ...(o.concurrency !== undefined ? { concurrency: o.concurrency } : {}),
    ...(o.memory !== undefined ? { memory: o.memory } : {}),
    ...(o.threads !== undefined ? { threads: o.threads } : {}),
    ...(o.name !== undefined ? { name: o.name } : {}),
    ...(o.lockDurationMs !== undefined ? { lockDurationMs: o.lockDurationMs } : {}),
    ...(o.stalledIntervalMs !== undefined ? { stalledIntervalMs: o.stalledIntervalMs } : {}),
    ...(o.maxStalled !== undefined ? { maxStalledCount: o.maxStalled } : {}),
    ...(o.maxBackoffMs !== undefined ? { maxBackoffMs: o.maxBackoffMs } : {}),
  });
  await new Promise<void>((resolve, reject) => {
    let signals = 0;
    const onSignal = (sig: NodeJS.Signals): void => {
      signals++;
      if (signals === 1) log(`${sig}: stopping`);
      else log(`${sig} again: sending the running jobs back to the queue now`);
      w.close(signals === 1 ? o.graceMs : 0).then(
        () => {
          process.removeListener('SIGTERM', onSignal);
          process.removeListener('SIGINT', onSignal);
          resolve();
        },
        reject,
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}

export interface SubmitCommand {
  redis: string;
  queue: string | undefined;
  inputs: string[];
  /** May hold {name} (the input's name without extension) and {preset} (the recipe's name). */
  output: string;
  recipes: (Recipe | string)[];
  target: CompressionRequest['target'];
  shardSize: number | undefined;
  memory: number | undefined;
  threads: number | undefined;
  force: boolean;
  attempts: number | undefined;
  priority: number | undefined;
  wait: boolean;
  json: boolean;
  quiet: boolean;
  verbose: boolean;
}

/** An input's name without its extension: model.gguf -> model, a folder -> its name. */
function stem(input: string): string {
  const base = path.basename(input.replace(/[\\/]+$/, ''));
  return base.replace(/\.(gguf|safetensors)$/i, '');
}

/** One request per (input, recipe), with the output path filled in; the template must tell them apart. */
export function submitRequests(o: Pick<SubmitCommand, 'inputs' | 'output' | 'recipes' | 'target' | 'shardSize' | 'memory' | 'threads' | 'force'>): CompressionRequest[] {
  if (o.recipes.length > 1 && !o.output.includes('{preset}')) throw new SlimTensorError(`-o ${o.output}: with several presets the output must contain {preset} (e.g. out/model-{preset}.gguf)`, 'ERR_VALUE');
  if (o.inputs.length > 1 && !o.output.includes('{name}')) throw new SlimTensorError(`-o ${o.output}: with several inputs the output must contain {name} (the input's name without extension)`, 'ERR_VALUE');
  const out: CompressionRequest[] = [];
  for (const input of o.inputs) {
    for (const recipe of o.recipes) {
      const preset = resolveRecipe(recipe).name;
      const output = o.output.replaceAll('{name}', stem(input)).replaceAll('{preset}', preset);
      out.push({
        input: path.resolve(input),
        output: path.resolve(output),
        recipe,
        ...(o.target !== undefined ? { target: o.target } : {}),
        ...(o.shardSize !== undefined ? { maxShardBytes: o.shardSize } : {}),
        ...(o.memory !== undefined ? { memoryLimit: o.memory } : {}),
        ...(o.threads !== undefined ? { threads: o.threads } : {}),
        ...(o.force ? { overwrite: true } : {}),
      });
    }
  }
  const seen = new Set<string>();
  for (const r of out) {
    if (seen.has(r.output)) throw new SlimTensorError(`-o ${o.output}: two jobs would write ${r.output}`, 'ERR_VALUE');
    seen.add(r.output);
  }
  return out;
}

function describeJob(j: EnqueuedJob): string {
  return `${j.input} -> ${j.output} (${j.recipe})`;
}

function renderResult(r: CompressionResult, verbose: boolean): string {
  if (r.outcome === 'exists') return `${r.output.path} exists and is complete (${r.output.format}, ${r.output.tensors} tensors, ${formatBytes(r.output.bytes)}): not redone`;
  return renderCompressReport(r.report, verbose);
}

/** Progress of several jobs as plain lines on stderr, at most one per job every half second (and each job's last). */
function progressLines(jobs: readonly EnqueuedJob[]): (id: string, p: CompressionProgress) => void {
  const last = new Map<string, number>();
  const label = new Map(jobs.map((j) => [j.id, `${path.basename(j.output)} (${j.recipe})`]));
  return (id, p) => {
    const now = Date.now();
    const final = p.phase === 'done' || p.phase === 'start' || p.phase === 'memory';
    if (!final && now - (last.get(id) ?? 0) < 500) return;
    last.set(id, now);
    const what =
      p.phase === 'memory'
        ? 'taken by a worker'
        : `${p.tensorsDone}/${p.tensors} tensors${p.elapsedMs > 0 ? `, ${(p.bytesDone / 1e6 / (p.elapsedMs / 1000)).toFixed(0)} MB/s` : ''}${p.phase === 'done' ? ', done' : p.tensor !== undefined ? `, ${p.tensor}` : ''}`;
    process.stderr.write(`[${label.get(id) ?? id}] ${what} (worker ${p.worker})\n`);
  };
}

/**
 * Submits one job per (input, recipe); with `wait`, follows them and
 * returns the reports. Failures are printed to stderr and make the command
 * fail (exit 1) after every job has ended.
 */
export async function runSubmit(o: SubmitCommand): Promise<{ text: string; failed: number }> {
  const requests = submitRequests(o);
  const q = CompressionQueue.open({ redis: o.redis, ...(o.queue !== undefined ? { queue: o.queue } : {}) });
  try {
    if (o.wait) await q.subscribe();
    const jobs = await q.enqueue(requests, { ...(o.attempts !== undefined ? { attempts: o.attempts } : {}), ...(o.priority !== undefined ? { priority: o.priority } : {}) });
    if (!o.wait) {
      if (o.json) return { text: JSON.stringify(jobs, null, 2), failed: 0 };
      return { text: jobs.map((j) => `${j.id} ${j.status === 'added' ? 'added' : `already ${j.state}`}: ${describeJob(j)}`).join('\n'), failed: 0 };
    }
    if (!o.quiet) for (const j of jobs) process.stderr.write(`${j.id} ${j.status === 'added' ? 'added' : `already ${j.state}`}: ${describeJob(j)}\n`);
    const ac = new AbortController();
    const onSigint = (): void => ac.abort(new InterruptedError('interrupted (SIGINT): stopped waiting; the jobs go on in the queue'));
    process.once('SIGINT', onSigint);
    let outcomes: JobOutcome[];
    try {
      outcomes = await q.wait(
        jobs.map((j) => j.id),
        { signal: ac.signal, ...(o.quiet ? {} : { onProgress: progressLines(jobs) }) },
      );
    } finally {
      process.removeListener('SIGINT', onSigint);
    }
    const failed = outcomes.filter((x) => !x.ok);
    for (const f of failed) {
      const j = jobs.find((x) => x.id === f.id) as EnqueuedJob;
      const e = f.error;
      process.stderr.write(`slimtensor: job ${f.id} (${describeJob(j)}) failed after ${f.attempts} attempt${f.attempts === 1 ? '' : 's'}: ${e.message}${e instanceof SlimTensorError ? ` [${e.code}]` : ''}\n`);
    }
    if (o.json) {
      const doc = outcomes.map((x) => (x.ok ? { id: x.id, ok: true, result: x.result } : { id: x.id, ok: false, error: { message: x.error.message, ...(x.error instanceof SlimTensorError ? { code: x.error.code } : {}) }, attempts: x.attempts }));
      return { text: JSON.stringify(doc, null, 2), failed: failed.length };
    }
    const text = outcomes
      .filter((x): x is Extract<JobOutcome, { ok: true }> => x.ok)
      .map((x) => renderResult(x.result, o.verbose))
      .join('\n\n');
    return { text, failed: failed.length };
  } finally {
    await q.close();
  }
}

export { EXIT_INTERRUPTED };
