// `npm run fuzz -- --seconds N [--target NAME[,NAME]|all] [--seed S] [--jobs J]`
//
// Mutates the seed files in test/fixtures/fuzz (and test/fixtures/vocab)
// and runs every entry point that opens them (fuzz/targets.ts) in child
// processes, so that a crash (signal, abort, out of memory) or a hang
// (no answer within --timeout) is seen. Passing means: each entry point
// either returned a valid result or threw a SlimTensorError with a file
// error code, and left nothing in its output folder. Anything else is
// saved under --crashes (the mutated input and case.json) and replayed with
// `npm run fuzz -- --replay DIR`. Exit status 1 when anything failed.
import { fork, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { runEntries, type CaseInfo, type EntryOutcome, type FailureKind } from './cases';
import type { FromChild, ToChild } from './child';
import { TARGETS, targetNamed, type Target } from './targets';

const ROOT = path.join(__dirname, '..');

export interface FuzzOptions {
  seconds: number;
  /** Stop after this many cases (across targets) even before `seconds`. */
  maxCases?: number;
  targets: readonly Target[];
  seed: number;
  jobs: number;
  /** Seconds a case may take before it counts as a hang. */
  timeout: number;
  /** Where failing inputs are saved. */
  crashes: string;
  log?: (line: string) => void;
}

export interface Failure {
  kind: FailureKind;
  target: string;
  index: number;
  entry: string;
  message: string;
  /** The folder the input was saved to. */
  saved: string;
}

export interface FuzzSummary {
  seed: number;
  seconds: number;
  cases: number;
  /** Entry-point runs, by target, entry and outcome ('ok', 'ERR_FORMAT', ..., 'FAIL'). */
  outcomes: Record<string, Record<string, Record<string, number>>>;
  /** Cases per target. */
  perTarget: Record<string, number>;
  failures: Failure[];
  childStarts: number;
}

interface Worker {
  proc: ChildProcess;
  workDir: string;
  current: { target: string; index: number; info?: CaseInfo; caseDir?: string; entry?: string; timer?: NodeJS.Timeout } | undefined;
  stderr: string;
}

function bump(o: FuzzSummary['outcomes'], target: string, entry: string, outcome: string): void {
  const t = (o[target] ??= {});
  const e = (t[entry] ??= {});
  e[outcome] = (e[outcome] ?? 0) + 1;
}

async function saveCase(crashes: string, info: CaseInfo | { target: string; seed: number; index: number }, caseDir: string | undefined, kind: FailureKind, details: unknown): Promise<string> {
  const dir = path.join(crashes, `${info.target}-s${info.seed}-c${info.index}-${kind}`);
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true });
  if (caseDir !== undefined) await fsp.cp(path.join(caseDir, 'input'), path.join(dir, 'input'), { recursive: true }).catch(() => undefined);
  await fsp.writeFile(path.join(dir, 'case.json'), JSON.stringify({ ...info, kind, details, replay: `npm run fuzz -- --replay ${dir}` }, null, 2));
  return dir;
}

/** Runs the fuzzer; resolves with the counts once the time (or case budget) is spent and every worker has stopped. */
export async function runFuzz(o: FuzzOptions): Promise<FuzzSummary> {
  const log = o.log ?? (() => undefined);
  const summary: FuzzSummary = { seed: o.seed, seconds: 0, cases: 0, outcomes: {}, perTarget: {}, failures: [], childStarts: 0 };
  const started = Date.now();
  const deadline = started + o.seconds * 1000;
  let next = 0;
  const pending: Promise<void>[] = [];
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-fuzz-'));
  const nextCase = (): ToChild | undefined => {
    if (Date.now() >= deadline || (o.maxCases !== undefined && next >= o.maxCases)) return undefined;
    const index = next++;
    // Round-robin over the targets; each target numbers its own cases.
    const target = o.targets[index % o.targets.length] as Target;
    return { type: 'case', target: target.name, seed: o.seed, index: Math.floor(index / o.targets.length) };
  };

  const fail = async (w: Worker, kind: FailureKind, entry: string, message: string, details: unknown): Promise<void> => {
    const c = w.current as NonNullable<Worker['current']>;
    const info = c.info ?? { target: c.target, seed: o.seed, index: c.index };
    const saved = await saveCase(o.crashes, info, c.caseDir, kind, details);
    summary.failures.push({ kind, target: c.target, index: c.index, entry, message, saved });
    log(`FAIL ${kind} ${c.target} case ${c.index} (${entry}): ${message} -> ${path.relative(process.cwd(), saved)}`);
  };

  const runWorker = async (slot: number): Promise<void> => {
    let first = nextCase();
    while (first !== undefined) {
      const workDir = path.join(work, `w${slot}-${summary.childStarts}`);
      await fsp.mkdir(workDir, { recursive: true });
      summary.childStarts++;
      const proc = fork(path.join(__dirname, 'child.ts'), [workDir], {
        execArgv: ['--import', 'tsx', '--max-old-space-size=1024'],
        stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
        cwd: ROOT,
      });
      const w: Worker = { proc, workDir, current: undefined, stderr: '' };
      proc.stderr?.on('data', (d: Buffer) => {
        w.stderr = (w.stderr + d.toString()).slice(-4000);
      });
      let pendingCase: ToChild | undefined = first;
      first = undefined;
      const dispatch = (m: ToChild | undefined): void => {
        if (m === undefined || m.type !== 'case') {
          if (proc.connected) proc.send({ type: 'stop' } satisfies ToChild);
          return;
        }
        w.current = { target: m.target, index: m.index };
        w.current.timer = setTimeout(() => {
          const c = w.current;
          if (c === undefined) return;
          c.timer = undefined;
          proc.kill('SIGKILL');
          hung = true;
        }, o.timeout * 1000);
        proc.send(m);
      };
      let hung = false;
      const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
      const chain: Promise<void>[] = [];
      proc.on('message', (m: FromChild) => {
        if (m.type === 'ready') dispatch(pendingCase);
        else if (m.type === 'begin' && w.current !== undefined) {
          w.current.info = m.info;
          w.current.caseDir = m.caseDir;
        } else if (m.type === 'entry' && w.current !== undefined) w.current.entry = m.name;
        else if (m.type === 'end' && w.current !== undefined) {
          clearTimeout(w.current.timer);
          const c = w.current;
          summary.cases++;
          summary.perTarget[c.target] = (summary.perTarget[c.target] ?? 0) + 1;
          const bad: EntryOutcome[] = [];
          for (const r of m.results) {
            bump(summary.outcomes, c.target, r.entry, r.outcome);
            if (r.failure !== undefined) bad.push(r);
          }
          // Save failing inputs before the child reuses its case folder.
          chain.push(
            (async () => {
              for (const r of bad) {
                const f = r.failure as NonNullable<EntryOutcome['failure']>;
                await fail(w, f.kind, r.entry, f.message, { ops: m.info.ops, file: m.info.file, stack: f.stack });
              }
              w.current = undefined;
              dispatch(nextCase());
            })(),
          );
        }
      });
      const { code, signal } = await done;
      await Promise.all(chain);
      const c = w.current;
      if (code === 3) throw new Error(`the fuzz harness failed (not an entry point): ${w.stderr}`);
      if (c !== undefined) {
        clearTimeout(c.timer);
        const kind: FailureKind = hung ? 'hang' : 'crash';
        const what = hung ? `no answer within ${o.timeout} s` : `the process exited (${signal ?? `status ${code}`})`;
        summary.cases++;
        summary.perTarget[c.target] = (summary.perTarget[c.target] ?? 0) + 1;
        bump(summary.outcomes, c.target, c.entry ?? '(writing the case)', kind === 'hang' ? 'HANG' : 'CRASH');
        await fail(w, kind, c.entry ?? '(writing the case)', `${what}; stderr: ${w.stderr.trim().split('\n').slice(-3).join(' | ').slice(0, 400)}`, { ops: c.info?.ops, file: c.info?.file, stderr: w.stderr });
        w.current = undefined;
        first = nextCase();
      } else if (code !== 0 && code !== null) {
        throw new Error(`fuzz child exited with status ${code}: ${w.stderr}`);
      }
      await fsp.rm(workDir, { recursive: true, force: true });
    }
  };
  try {
    for (let j = 0; j < o.jobs; j++) pending.push(runWorker(j));
    await Promise.all(pending);
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
  summary.seconds = (Date.now() - started) / 1000;
  return summary;
}

export function renderSummary(s: FuzzSummary): string {
  const lines: string[] = [];
  lines.push(`fuzz: ${s.cases} cases in ${s.seconds.toFixed(1)} s (seed ${s.seed}, ${s.childStarts} worker process${s.childStarts === 1 ? '' : 'es'}), ${s.failures.length} failure${s.failures.length === 1 ? '' : 's'}`);
  for (const [target, entries] of Object.entries(s.outcomes)) {
    lines.push(`  ${target}: ${s.perTarget[target] ?? 0} cases`);
    for (const [entry, outcomes] of Object.entries(entries)) {
      const parts = Object.entries(outcomes)
        .sort((a, b) => b[1] - a[1])
        .map(([k, n]) => `${k} ${n}`);
      lines.push(`    ${entry.padEnd(24)} ${parts.join(', ')}`);
    }
  }
  for (const f of s.failures.slice(0, 50)) lines.push(`  FAIL ${f.kind} ${f.target} #${f.index} ${f.entry}: ${f.message}\n       saved: ${f.saved}`);
  return lines.join('\n');
}

/** Runs a saved case's entry points in this process (for a debugger), on a copy of its input. */
async function replay(dir: string): Promise<number> {
  const info = JSON.parse(await fsp.readFile(path.join(dir, 'case.json'), 'utf8')) as CaseInfo;
  const target = targetNamed(info.target);
  const spec = target?.seeds.find((s) => s.path === info.seedPath);
  if (spec === undefined) throw new Error(`replay: no seed ${info.seedPath} in target ${info.target}`);
  const caseDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'slimtensor-fuzz-replay-'));
  try {
    await fsp.cp(path.join(dir, 'input'), path.join(caseDir, 'input'), { recursive: true });
    const input = path.join(caseDir, 'input', (await fsp.readdir(path.join(caseDir, 'input')))[0] as string);
    process.stdout.write(`replaying ${info.target} case ${info.index} (seed ${info.seed}): ${info.file} <- ${info.ops.join('; ')}\n`);
    const results = await runEntries(spec, input, caseDir, info.index);
    let failed = 0;
    for (const r of results) {
      process.stdout.write(`  ${r.entry}: ${r.outcome}${r.failure ? ` ${r.failure.kind}: ${r.failure.message}\n${r.failure.stack ?? ''}` : ''}\n`);
      if (r.failure) failed++;
    }
    return failed > 0 ? 1 : 0;
  } finally {
    await fsp.rm(caseDir, { recursive: true, force: true });
  }
}

const USAGE = `usage: npm run fuzz -- [--seconds N] [--target ${[...TARGETS.map((t) => t.name), 'all'].join('|')}[,...]] [--seed S] [--jobs J] [--cases N] [--timeout S] [--crashes DIR] [--json]
       npm run fuzz -- --replay DIR

targets:
${TARGETS.map((t) => `  ${t.name.padEnd(20)} ${t.description}`).join('\n')}`;

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      seconds: { type: 'string', default: '60' },
      target: { type: 'string', default: 'all' },
      seed: { type: 'string' },
      jobs: { type: 'string', default: '1' },
      cases: { type: 'string' },
      timeout: { type: 'string', default: '60' },
      crashes: { type: 'string', default: path.join(ROOT, '.tmp', 'fuzz-crashes') },
      replay: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (values.replay !== undefined) return replay(values.replay);
  const num = (v: string | undefined, what: string, min: number): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new Error(`--${what} must be a number >= ${min}, got ${v}`);
    return n;
  };
  const names = (values.target as string).split(',');
  const targets = names.includes('all') ? TARGETS.filter((t) => t.name !== 'selftest') : names.map((n) => targetNamed(n) ?? (() => { throw new Error(`unknown target ${n}\n${USAGE}`); })());
  const seed = num(values.seed, 'seed', 0) ?? Math.floor(Math.random() * 2 ** 31);
  const summary = await runFuzz({
    seconds: num(values.seconds, 'seconds', 0) as number,
    maxCases: num(values.cases, 'cases', 1),
    targets,
    seed,
    jobs: num(values.jobs, 'jobs', 1) as number,
    timeout: num(values.timeout, 'timeout', 0.1) as number,
    crashes: path.resolve(values.crashes as string),
    log: (l) => process.stderr.write(`${l}\n`),
  });
  process.stdout.write(values.json ? `${JSON.stringify(summary, null, 2)}\n` : `${renderSummary(summary)}\n`);
  return summary.failures.length > 0 ? 1 : 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`${(e as Error).message}\n`);
      process.exit(2);
    },
  );
}
