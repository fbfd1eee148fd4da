// The model commands of the CLI: inspect, quantize/prune/lowrank/compress
// (all through compressModel) and report. Each returns the text or JSON to
// print; main.ts wires them to yargs.
import { promises as fsp, rmSync } from 'node:fs';
import { SlimTensorError } from '../errors';
import { GGUFReader } from '../formats/gguf';
import { jsonTooDeep } from '../formats/json';
import type { GGUFValue } from '../formats/gguf-header';
import { compareModels, type ComparisonReport } from '../pipeline/compare';
import { fileTypeLabel } from '../pipeline/gguf-mix';
import { compressModel, type CompressReport } from '../pipeline/compress';
import { evaluateFiles, renderEvaluation, type ModelFlags } from './run-commands';
import { renderReportHtml } from '../pipeline/html';
import { LIVE_TEMPS } from '../pipeline/output';
import { EMBED_GLOBS, HEAD_GLOBS, NORM_GLOBS, PRESETS, type CalibrationSpec, type Recipe, type Target } from '../pipeline/recipe';
import { openModel, type ModelSource } from '../pipeline/source';
import { sparse24Names, sparse24Prefixes } from '../formats/compressed-tensors';
import * as path from 'node:path';
import { progressReporter } from './progress';
import { formatBytes, formatMs, renderTable, type Column } from './table';

/** Parses '512MiB', '2GB', '1e9', '4096' into bytes. */
export function parseSize(v: unknown, what: string): number {
  const m = /^\s*([0-9]+(?:\.[0-9]+)?(?:e[0-9]+)?)\s*([kmgt]i?b?|b)?\s*$/i.exec(String(v));
  if (m === null) throw new SlimTensorError(`${what}: ${JSON.stringify(v)} is not a size (e.g. 512MiB, 2GB, 1000000)`, 'ERR_VALUE');
  const unit = (m[2] ?? 'b').toLowerCase();
  const base = unit.includes('i') ? 1024 : 1000;
  const pow = { b: 0, k: 1, m: 2, g: 3, t: 4 }[unit[0] as 'b' | 'k' | 'm' | 'g' | 't'];
  const n = Math.round(Number(m[1]) * base ** pow);
  if (!Number.isSafeInteger(n) || n <= 0) throw new SlimTensorError(`${what}: ${JSON.stringify(v)} is out of range`, 'ERR_VALUE');
  return n;
}

function metaValue(v: GGUFValue): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 80 ? `${v.slice(0, 77)}...` : v);
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') return String(v);
  const arr = v as ArrayLike<unknown>;
  const head = Array.from({ length: Math.min(arr.length, 4) }, (_, i) => {
    const x = arr[i];
    return typeof x === 'string' ? JSON.stringify(x) : ArrayBuffer.isView(x) || Array.isArray(x) ? '[...]' : String(x);
  });
  return `[${head.join(', ')}${arr.length > 4 ? `, ... (${arr.length} items)` : ''}]`;
}

const TENSOR_COLUMNS: readonly Column[] = [
  { header: 'tensor', align: 'left' },
  { header: 'dtype', align: 'left' },
  { header: 'shape', align: 'left' },
  { header: 'bytes', align: 'right' },
];

const SPARSE_COLUMNS: readonly Column[] = [
  { header: 'weight', align: 'left' },
  { header: 'dtype', align: 'left' },
  { header: 'dense shape', align: 'left' },
  { header: 'stored', align: 'right' },
  { header: 'dense', align: 'right' },
];

interface SparseWeight {
  /** The module prefix: `<prefix>.compressed`, `.bitmask`, `.shape`. */
  module: string;
  dtype: string;
  shape: number[];
  /** Bytes of the three tensors. */
  bytes: number;
  /** Bytes of the dense weight. */
  denseBytes: number;
}

/** The sparse-24-bitmask weights of a safetensors model: each one's three tensors read as one dense weight. */
async function sparseWeights(m: ModelSource): Promise<SparseWeight[]> {
  const out: SparseWeight[] = [];
  const byName = new Map(m.tensors.map((t) => [t.name, t]));
  for (const prefix of sparse24Prefixes(byName.keys())) {
    const n = sparse24Names(prefix);
    const c = byName.get(n.compressed);
    const b = byName.get(n.bitmask);
    const sh = byName.get(n.shape);
    if (c === undefined || b === undefined || sh === undefined || c.dtype === undefined) continue;
    // The dense shape from the .shape tensor (16 bytes); a malformed one falls back to what .compressed implies.
    let shape = [c.shape[0] ?? 0, (c.shape[1] ?? 0) * 2];
    if ((sh.dtype === 'i64' || sh.dtype === 'i32') && sh.shape.reduce((a, d) => a * d, 1) === 2) {
      const bytes = await m.readBytes(n.shape);
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      shape = sh.dtype === 'i64' ? [Number(dv.getBigInt64(0, true)), Number(dv.getBigInt64(8, true))] : [dv.getInt32(0, true), dv.getInt32(4, true)];
    }
    const elem = c.byteLength / Math.max(1, c.shape.reduce((a, d) => a * d, 1));
    out.push({ module: prefix, dtype: c.storage, shape, bytes: c.byteLength + b.byteLength + sh.byteLength, denseBytes: shape.reduce((a, d) => a * d, 1) * elem });
  }
  return out;
}

/** config.json's quantization_config.sparsity_config of a folder, if any. */
async function sparsityConfigOf(folder: string | undefined): Promise<Record<string, unknown> | undefined> {
  if (folder === undefined) return undefined;
  try {
    const cfg = JSON.parse(await fsp.readFile(path.join(folder, 'config.json'), 'utf8')) as { quantization_config?: { sparsity_config?: unknown } };
    const sc = cfg.quantization_config?.sparsity_config;
    // printed with JSON.stringify, which recurses
    if (jsonTooDeep(sc)) return undefined;
    // compressed-tensors writes `sparsity_config: {}` for a model without sparsity
    return typeof sc === 'object' && sc !== null && Object.keys(sc).length > 0 ? (sc as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** `inspect`: metadata and a tensor table of a GGUF file, safetensors file or folder. */
export async function inspect(p: string, json: boolean): Promise<string> {
  const m = await openModel(p);
  try {
    const tensors = m.tensors.map((t) => ({ name: t.name, dtype: t.storage, shape: [...t.shape], bytes: t.byteLength }));
    const total = tensors.reduce((s, t) => s + t.bytes, 0);
    const g: GGUFReader | undefined = m.gguf;
    const st = m.safetensors;
    const sparse = st !== undefined ? await sparseWeights(m) : [];
    const sparsityConfig = await sparsityConfigOf(m.folder);
    if (json) {
      const metadata = g !== undefined ? Object.fromEntries(g.entries.map((e) => [e.key, jsonable(e.value)])) : { ...(st?.metadata ?? {}) };
      return JSON.stringify(
        {
          path: p,
          format: m.format,
          ...(g ? { version: g.version, alignment: g.alignment } : {}),
          ...(st ? { shards: st.shards } : {}),
          metadata,
          ...(sparsityConfig !== undefined ? { sparsityConfig } : {}),
          tensorBytes: total,
          tensors,
          ...(sparse.length > 0 ? { sparse24: sparse } : {}),
        },
        null,
        2,
      );
    }
    const out: string[] = [];
    out.push(`${p}: ${m.format === 'gguf' ? `GGUF v${g?.version}, alignment ${g?.alignment}` : `safetensors, ${st?.shards.length} file${st?.shards.length === 1 ? '' : 's'}`}; ${tensors.length} tensors, ${formatBytes(total)}`);
    if (g !== undefined) {
      // What the file is "mostly", and its mix of types (a K-quant file mixes several).
      const ft = g.metadata.get('general.file_type');
      const label = typeof ft === 'number' ? fileTypeLabel(ft) : undefined;
      const counts = new Map<string, number>();
      for (const t of tensors) counts.set(t.dtype, (counts.get(t.dtype) ?? 0) + 1);
      out.push(`${typeof ft === 'number' ? `file type ${ft}${label !== undefined ? ` (${label})` : ''}; ` : ''}tensor types: ${[...counts].map(([k, n]) => `${k} ×${n}`).join(', ')}`);
    }
    if (g !== undefined) {
      out.push('', 'metadata:');
      for (const e of g.entries) out.push(`  ${e.key} (${e.type}${e.itemType ? ` of ${e.itemType}` : ''}) = ${metaValue(e.value)}`);
    } else if (st !== undefined && Object.keys(st.metadata).length > 0) {
      out.push('', 'metadata:');
      for (const [k, v] of Object.entries(st.metadata)) out.push(`  ${k} = ${metaValue(v)}`);
    }
    if (sparsityConfig !== undefined) {
      const sc = sparsityConfig;
      const gs = typeof sc.global_sparsity === 'number' ? `, global sparsity ${(sc.global_sparsity * 100).toFixed(1)} %` : '';
      out.push('', `sparsity_config (config.json): ${String(sc.format)} ${String(sc.sparsity_structure)}${gs}; targets ${JSON.stringify(sc.targets)}, ignore ${JSON.stringify(sc.ignore)}`);
    }
    out.push('', renderTable(TENSOR_COLUMNS, tensors.map((t) => [t.name, t.dtype, `[${t.shape.join(', ')}]`, formatBytes(t.bytes)])));
    if (sparse.length > 0) {
      const stored = sparse.reduce((a, w) => a + w.bytes, 0);
      const dense = sparse.reduce((a, w) => a + w.denseBytes, 0);
      out.push('', `sparse-24-bitmask weights: ${sparse.length} (each <module>.compressed kept values + .bitmask + .shape), ${formatBytes(stored)} stored for ${formatBytes(dense)} dense (${(dense / Math.max(stored, 1)).toFixed(2)}x)`);
      out.push(renderTable(SPARSE_COLUMNS, sparse.map((w) => [w.module, w.dtype, `[${w.shape.join(', ')}]`, formatBytes(w.bytes), formatBytes(w.denseBytes)])));
    }
    return out.join('\n');
  } finally {
    await m.close();
  }
}

function jsonable(v: unknown): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<number | bigint>, (x) => (typeof x === 'bigint' ? x.toString() : x));
  if (Array.isArray(v)) return v.map(jsonable);
  return v;
}

export interface RunOptions {
  input: string;
  output: string;
  recipe: Recipe | string;
  threads?: number | undefined;
  force: boolean;
  json: boolean;
  quiet: boolean;
  memory?: number | undefined;
  shardSize?: number | undefined;
  verbose: boolean;
  target?: Target | undefined;
  imatrix?: string | undefined;
  /** --calibrate-text / --calibrate-tokens / --calibrate-ctx / --calibrate-chunks. */
  calibration?: CalibrationSpec | undefined;
  /** Measure each changed tensor's error (default true; `--no-error`). */
  measureError?: boolean | undefined;
}

/** The exit code for an interrupted run (128 + SIGINT). */
export const EXIT_INTERRUPTED = 130;

/**
 * Runs compressModel with a progress bar; Ctrl-C aborts it (the partial
 * output is removed), a second Ctrl-C exits at once after a last cleanup.
 */
export async function runCompression(o: RunOptions): Promise<string> {
  const ac = new AbortController();
  let interrupts = 0;
  const onSigint = (): void => {
    interrupts++;
    if (interrupts === 1) {
      process.stderr.write('\nslimtensor: interrupted; removing the partial output (Ctrl-C again to quit now)\n');
      ac.abort(new InterruptedError());
      return;
    }
    for (const t of LIVE_TEMPS) rmSync(t, { recursive: true, force: true });
    process.exit(EXIT_INTERRUPTED);
  };
  process.on('SIGINT', onSigint);
  const progress = progressReporter(process.stderr, o.quiet);
  try {
    const report = await compressModel({
      input: o.input,
      output: o.output,
      recipe: o.recipe,
      ...(o.threads !== undefined ? { threads: o.threads } : {}),
      ...(o.memory !== undefined ? { memoryLimit: o.memory } : {}),
      ...(o.shardSize !== undefined ? { maxShardBytes: o.shardSize } : {}),
      ...(o.target !== undefined ? { target: o.target } : {}),
      ...(o.imatrix !== undefined ? { imatrix: o.imatrix } : {}),
      ...(o.calibration !== undefined ? { calibration: o.calibration } : {}),
      ...(o.quiet ? {} : { onCalibrationProgress: calibrationProgress(process.stderr) }),
      overwrite: o.force,
      signal: ac.signal,
      onProgress: progress,
      measureError: o.measureError ?? true,
    });
    progress.stop();
    return o.json ? JSON.stringify(report, null, 2) : renderCompressReport(report, o.verbose);
  } finally {
    progress.stop();
    process.removeListener('SIGINT', onSigint);
  }
}

/** Calibration progress on stderr: a line per chunk, at most every half second, and the last one. */
function calibrationProgress(stream: NodeJS.WriteStream): (p: { chunk: number; chunks: number; tokens: number }) => void {
  let last = 0;
  return (p) => {
    const now = Date.now();
    if (p.chunk !== p.chunks && now - last < 500) return;
    last = now;
    stream.write(`calibrating: chunk ${p.chunk}/${p.chunks} (${p.tokens} tokens)\n`);
  };
}

/** The abort reason of a Ctrl-C. */
export class InterruptedError extends Error {
  constructor(message = 'interrupted (SIGINT); no output was written') {
    super(message);
    this.name = 'AbortError';
  }
}

const SUMMARY_COLUMNS: readonly Column[] = [
  { header: 'stored as', align: 'left' },
  { header: 'tensors', align: 'right' },
  { header: 'before', align: 'right' },
  { header: 'after', align: 'right' },
  { header: 'RMSE', align: 'right' },
];

const DETAIL_COLUMNS: readonly Column[] = [
  { header: 'tensor', align: 'left' },
  { header: 'from', align: 'left' },
  { header: 'to', align: 'left' },
  { header: 'shape', align: 'left' },
  { header: 'before', align: 'right' },
  { header: 'after', align: 'right' },
  { header: 'RMSE', align: 'right' },
];

/** A compression report for the terminal: totals, one line per output type, fallbacks and warnings. */
export function renderCompressReport(r: CompressReport, verbose: boolean): string {
  const out: string[] = [];
  const secs = r.timeMs / 1000;
  out.push(`${r.input.path} (${r.input.format}, ${formatBytes(r.input.bytes)}) -> ${r.output.path} (${r.output.format}, ${formatBytes(r.output.bytes)})`);
  out.push(`recipe ${r.recipe}: ${r.ratio.toFixed(2)}x smaller, ${formatMs(r.timeMs)} (${(r.input.tensorBytes / 1e6 / Math.max(secs, 1e-9)).toFixed(0)} MB/s), tensor buffers peaked at ${formatBytes(r.memory.peakBytes)} (limit ${formatBytes(r.memory.limit)})`);
  const groups = new Map<string, { n: number; before: number; after: number; se: number; w: number }>();
  for (const t of r.tensors) {
    const key = t.method === 'keep' ? `${t.to} (kept)` : t.to;
    const g = groups.get(key) ?? { n: 0, before: 0, after: 0, se: 0, w: 0 };
    g.n++;
    g.before += t.bytesIn;
    g.after += t.bytesOut;
    if (t.error !== undefined) {
      const n = t.shape.reduce((a, d) => a * d, 1);
      g.se += t.error.rmse * t.error.rmse * n;
      g.w += n;
    }
    groups.set(key, g);
  }
  out.push('');
  out.push(renderTable(SUMMARY_COLUMNS, [...groups].map(([k, g]) => [k, String(g.n), formatBytes(g.before), formatBytes(g.after), g.w === 0 ? '-' : Math.sqrt(g.se / g.w).toExponential(3)])));
  if (r.fallbacks.length > 0) {
    out.push('', 'fallbacks (the rule\'s format did not fit; the next one that fits was used):');
    const by = new Map<string, string[]>();
    for (const f of r.fallbacks) {
      const k = `${f.from} -> ${f.to}: ${f.reason}`;
      by.set(k, [...(by.get(k) ?? []), f.name]);
    }
    for (const [k, names] of by) out.push(`  ${names.length} tensor${names.length === 1 ? '' : 's'} (${names.slice(0, 3).join(', ')}${names.length > 3 ? ', ...' : ''}): ${k}`);
  }
  const bpw = r.bitsPerWeight;
  out.push('', `bits per weight: ${bpw.quantized === undefined ? '' : `${bpw.quantized.toFixed(3)} in the quantized tensors, `}${bpw.file.toFixed(3)} for the whole file`);
  if (r.calibration !== undefined) {
    const c = r.calibration;
    out.push('', c.chunks === 0 ? `calibration: statistics given (${c.inputs} layer inputs, ${c.hessians} with a Hessian)` : `calibration on ${c.source}: ${c.chunks} chunk${c.chunks === 1 ? '' : 's'} of ${c.ctx} tokens, ${c.inputs} layer inputs (${c.hessians} with a Hessian), ${formatMs(c.timeMs)}; ${c.mode === 'sequential' ? `sequential (block by block, each compressed before the next), planned peak ${formatBytes(c.plannedPeakBytes)} (whole model: ${formatBytes(c.wholeModelBytes)})` : `whole model at once, planned peak ${formatBytes(c.plannedPeakBytes)}`}`);
  }
  const gptqd = r.tensors.filter((t) => t.calibrated?.method === 'gptq');
  if (gptqd.length > 0) {
    const sum = (k: 'error' | 'rtnError'): number => gptqd.reduce((x, t) => x + (t.calibrated?.[k] as number), 0);
    out.push('', `gptq: ${gptqd.length} tensor${gptqd.length === 1 ? '' : 's'}, layer-output error tr(E·H·Eᵀ) on the calibration inputs ${(sum('error') / sum('rtnError')).toFixed(3)}× round-to-nearest's (summed)`);
  }
  if (r.awq !== undefined) {
    const g = r.awq.groups;
    const sum = (k: 'error' | 'rtnError'): number => g.reduce((x, y) => x + y[k], 0);
    const alphas = g.map((x) => x.alpha).sort((a, b) => a - b);
    out.push('', `awq: ${g.length} group${g.length === 1 ? '' : 's'} of weights scaled (α ${alphas[0]?.toFixed(2) ?? '-'}..${alphas.at(-1)?.toFixed(2) ?? '-'}), layer-output error ${g.length === 0 ? '-' : (sum('error') / sum('rtnError')).toFixed(3)}× unscaled's on the calibration inputs`);
    const why = new Map<string, number>();
    for (const k of r.awq.skipped) {
      const reason = k.reason.replace(/blk\.\d+\.|model\.layers\.\d+\./g, '').replace(/\d+ output rows and \S+ \d+ input columns/, 'output rows ≠ input columns');
      why.set(reason, (why.get(reason) ?? 0) + 1);
    }
    for (const [reason, n] of why) out.push(`  not scaled (${n}): ${reason}`);
  }
  if (r.imatrix !== undefined) out.push('', `imatrix ${r.imatrix.files.join(', ')}: ${r.imatrix.used} tensor${r.imatrix.used === 1 ? '' : 's'} quantized with it, ${r.imatrix.notCovered.length} not covered`);
  for (const w of r.warnings) out.push('', `note: ${w}`);
  if (r.sparsity !== undefined) {
    const s = r.sparsity;
    out.push('', `sparsity: ${s.tensors} pruned tensor${s.tensors === 1 ? '' : 's'}, ${s.prunedWeights} weights zeroed; ${(s.globalSparsity * 100).toFixed(1)} % of all float weights written are zero`);
  }
  if (r.modules !== undefined) {
    const m = r.modules;
    out.push('', `compressed-tensors for ${m.target}: ${m.architecture ?? 'model class unknown'}, Linear layers by the ${m.rule === 'conservative' ? 'conservative rule (names of the usual projections)' : 'architecture table'}; ignore: ${m.ignore.length === 0 ? '(none)' : m.ignore.length > 6 ? `${m.ignore.slice(0, 6).join(', ')}, … (${m.ignore.length})` : m.ignore.join(', ')}`);
    if (m.kept.length > 0) {
      out.push('2-D tensors kept as they were:');
      for (const k of m.kept) out.push(`  ${k.name} [${k.shape.join(', ')}]: ${k.reason}`);
    }
  }
  if (verbose) {
    out.push('', renderTable(DETAIL_COLUMNS, r.tensors.map((t) => [t.name, t.from, t.to, `[${t.shape.join(', ')}]`, formatBytes(t.bytesIn), formatBytes(t.bytesOut), t.error === undefined ? '-' : t.error.rmse.toExponential(3)])));
  }
  out.push('', `files: ${r.output.files.join(', ')}`);
  return out.join('\n');
}

/** The recipe of `slimtensor lowrank`: every matrix but norms, embedding and head factored. */
export function lowrankRecipe(options: Record<string, unknown>): Recipe {
  return {
    name: 'lowrank',
    format: 'safetensors',
    rules: [
      { match: [...NORM_GLOBS, ...EMBED_GLOBS, ...HEAD_GLOBS], method: 'keep' },
      { match: '*', method: 'lowrank', options },
    ],
  };
}

/** Reads a recipe file (JSON). */
export async function readRecipeFile(file: string): Promise<Recipe> {
  const text = await fsp.readFile(file, 'utf8');
  try {
    return JSON.parse(text) as Recipe;
  } catch (e) {
    throw new SlimTensorError(`recipe ${file}: not valid JSON (${(e as Error).message})`, 'ERR_VALUE');
  }
}

const REPORT_COLUMNS: readonly Column[] = [
  { header: 'tensor', align: 'left' },
  { header: 'type', align: 'left' },
  { header: 'shape', align: 'left' },
  { header: 'original', align: 'right' },
  { header: 'compressed', align: 'right' },
  { header: 'RMSE', align: 'right' },
  { header: 'SQNR dB', align: 'right' },
  { header: 'cosine', align: 'right' },
];

export function renderComparison(r: ComparisonReport): string {
  const t = r.total;
  const out: string[] = [];
  out.push(`original:   ${r.original.path} (${r.original.format}, ${formatBytes(r.original.bytes)})`);
  out.push(`compressed: ${r.compressed.path} (${r.compressed.format}, ${formatBytes(r.compressed.bytes)})`);
  out.push(`tensor bytes ${formatBytes(t.originalBytes)} -> ${formatBytes(t.compressedBytes)} (${t.ratio.toFixed(2)}x); RMSE ${t.rmse.toExponential(3)}; SQNR ${Number.isFinite(t.sqnrDb) ? t.sqnrDb.toFixed(2) : 'inf'} dB over the changed tensors`);
  out.push('');
  out.push(
    renderTable(
      REPORT_COLUMNS,
      r.tensors.map((x) => [
        x.name,
        `${x.originalType} -> ${x.compressedType}`,
        `[${x.shape.join(', ')}]`,
        formatBytes(x.originalBytes),
        formatBytes(x.compressedBytes),
        x.error === undefined ? '-' : x.error.rmse.toExponential(3),
        x.error === undefined ? '-' : Number.isFinite(x.error.sqnrDb) ? x.error.sqnrDb.toFixed(2) : 'inf',
        x.error === undefined ? '-' : x.error.cosine.toFixed(6),
      ]),
    ),
  );
  const missing = r.tensors.filter((x) => x.compressedType === 'missing');
  if (missing.length > 0) out.push('', `missing from the compressed model: ${missing.map((x) => x.name).join(', ')}`);
  return out.join('\n');
}

/** `report`: the comparison as text or JSON, and the HTML page when asked. */
export async function report(original: string, compressed: string, html: string | undefined, json: boolean, evalOptions?: ModelFlags & { tokens: string; ctx?: number; chunks?: number }): Promise<string> {
  const r = await compareModels(original, compressed, { histograms: html !== undefined ? 6 : 0 });
  if (evalOptions !== undefined) {
    const { tokens, ...flags } = evalOptions;
    r.evaluation = await evaluateFiles(original, compressed, tokens, flags);
  }
  if (html !== undefined) await fsp.writeFile(html, renderReportHtml(r));
  if (json) return JSON.stringify(r, (_k, v: unknown) => (v === Infinity ? 'Infinity' : v), 2);
  const text = renderComparison(r) + (r.evaluation !== undefined ? `\n\n${renderEvaluation(r.evaluation)}` : '');
  return text + (html !== undefined ? `\n\nHTML report: ${html}` : '');
}

/** `presets`: the built-in recipes. */
export function presets(json: boolean): string {
  if (json) return JSON.stringify(PRESETS, null, 2);
  const width = Math.max(...Object.keys(PRESETS).map((n) => n.length));
  return Object.entries(PRESETS)
    .map(([name, r]) => `${name.padEnd(width)} ${(r.format ?? "input's family").padEnd(19)} ${r.description ?? ''}`)
    .join('\n');
}
