// One fuzz case: (run seed, target, case index) -> a seed file set with one
// file mutated, written to a case folder, then every entry point of that seed
// run on it, each outcome classified.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { SlimTensorError } from '../lib/errors';
import { Rng } from '../test/support/random';
import { mutateFile } from './mutate';
import { ENTRIES, InvalidResult, seedFiles, type SeedSpec, type Target } from './targets';

/** The error codes a SlimTensorError may carry for a bad file (ERR_INTERNAL is a bug, ERR_DETACHED cannot come from a file). */
const FILE_ERROR_CODES = new Set(['ERR_SHAPE', 'ERR_DTYPE', 'ERR_VALUE', 'ERR_FORMAT', 'ERR_UNSUPPORTED']);

export type FailureKind = 'crash' | 'hang' | 'other-error' | 'bad-code' | 'invalid-result' | 'leftover';

export interface EntryOutcome {
  entry: string;
  /** 'ok', or the SlimTensorError code, or 'FAIL'. */
  outcome: string;
  ms: number;
  failure?: { kind: FailureKind; message: string; stack?: string };
}

export interface CaseInfo {
  target: string;
  seed: number;
  index: number;
  /** The seed (repository-relative). */
  seedPath: string;
  /** The mutated file (relative to the seed folder, or the file's name). */
  file: string;
  ops: string[];
}

/** A 32-bit mix of the run seed, the target and the case index (each case is reproducible alone). */
function caseSeed(seed: number, target: string, index: number): number {
  let h = 0x811c9dc5 ^ seed;
  for (const ch of `${target}:${index}`) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193);
  return Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) >>> 0;
}

/**
 * Writes case `index` of `target` under `caseDir/input` (the mutated file, or
 * a copy of the seed folder with one file mutated). The same arguments
 * always give the same bytes.
 */
export async function writeCase(target: Target, seed: number, index: number, caseDir: string): Promise<{ info: CaseInfo; spec: SeedSpec; input: string }> {
  const rng = new Rng(caseSeed(seed, target.name, index));
  const spec = target.seeds[rng.u32() % target.seeds.length] as SeedSpec;
  const files = await seedFiles(spec);
  const file = files.mutate[rng.u32() % files.mutate.length] as string;
  const original = await fsp.readFile(files.isFolder ? path.join(files.root, file) : files.root);
  const { bytes, ops } = mutateFile(rng, file, new Uint8Array(original.buffer, original.byteOffset, original.byteLength));
  const inputDir = path.join(caseDir, 'input');
  await fsp.rm(caseDir, { recursive: true, force: true });
  await fsp.mkdir(inputDir, { recursive: true });
  let input: string;
  if (files.isFolder) {
    input = path.join(inputDir, path.basename(files.root));
    await fsp.mkdir(input);
    for (const f of files.all) {
      if (f !== file) await fsp.copyFile(path.join(files.root, f), path.join(input, f));
    }
    await fsp.writeFile(path.join(input, file), bytes);
  } else {
    input = path.join(inputDir, file);
    await fsp.writeFile(input, bytes);
  }
  return { info: { target: target.name, seed, index, seedPath: spec.path, file, ops }, spec, input };
}

/** Every file and folder under dir (relative names). */
async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fsp.readdir(dir, { withFileTypes: true })) {
    out.push(e.name);
    if (e.isDirectory()) for (const sub of await listTree(path.join(dir, e.name))) out.push(path.join(e.name, sub));
  }
  return out;
}

function firstLine(s: string): string {
  const i = s.indexOf('\n');
  return (i < 0 ? s : s.slice(0, i)).slice(0, 400);
}

/** What an entry point threw: a SlimTensorError with a file error code passes, anything else is a failure. */
export function classify(e: unknown): Pick<EntryOutcome, 'outcome' | 'failure'> {
  if (e instanceof SlimTensorError) {
    if (FILE_ERROR_CODES.has(e.code)) return { outcome: e.code };
    return { outcome: 'FAIL', failure: { kind: 'bad-code', message: `SlimTensorError ${String(e.code)}: ${firstLine(e.message)}`, stack: e.stack } };
  }
  if (e instanceof InvalidResult) return { outcome: 'FAIL', failure: { kind: 'invalid-result', message: e.message, stack: e.stack } };
  const err = e as NodeJS.ErrnoException;
  const name = err?.constructor?.name ?? typeof e;
  const code = typeof err?.code === 'string' ? ` (${err.code})` : '';
  return { outcome: 'FAIL', failure: { kind: 'other-error', message: `${name}${code}: ${firstLine(String(err?.message ?? e))}`, stack: err?.stack } };
}

/** Runs every entry point of the case's seed on its input; the output folder must hold only a returned output, and nothing after a failure. */
export async function runEntries(spec: SeedSpec, input: string, caseDir: string, index: number, onEntry?: (name: string) => void): Promise<EntryOutcome[]> {
  const seed = path.join(__dirname, '..', spec.path);
  const results: EntryOutcome[] = [];
  for (const name of spec.entries) {
    const entry = ENTRIES[name];
    if (entry === undefined) throw new Error(`fuzz: seed ${spec.path} names an unknown entry point ${JSON.stringify(name)}`);
    onEntry?.(name);
    const outDir = path.join(caseDir, 'out');
    await fsp.rm(outDir, { recursive: true, force: true });
    await fsp.mkdir(outDir);
    const t0 = performance.now();
    let r: Pick<EntryOutcome, 'outcome' | 'failure'>;
    let output: string | undefined;
    try {
      output = await entry.run({ input, seed, outDir, index });
      r = { outcome: 'ok' };
    } catch (e) {
      r = classify(e);
    }
    const left = (await listTree(outDir)).filter((f) => output === undefined || (f !== path.basename(output) && !f.startsWith(path.basename(output) + path.sep)));
    if (left.length > 0 && r.failure === undefined) {
      r = { outcome: 'FAIL', failure: { kind: 'leftover', message: `${r.outcome === 'ok' ? 'after success' : `after ${r.outcome}`} the output folder holds ${left.slice(0, 5).join(', ')}` } };
    }
    results.push({ entry: name, ...r, ms: performance.now() - t0 });
    await fsp.rm(outDir, { recursive: true, force: true });
  }
  return results;
}
