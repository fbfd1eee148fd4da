// Renders a DemoReport for the terminal: a header naming the model, one
// table row per recipe, then the fallbacks taken and why.
import * as path from 'node:path';
import type { DemoFormatResult, DemoReport, DemoSkip } from '../demo';
import { formatBytes, formatMs, renderTable, type Column } from './table';

const COLUMNS: readonly Column[] = [
  { header: 'recipe', align: 'left' },
  { header: 'format', align: 'left' },
  { header: 'size', align: 'right' },
  { header: 'ratio', align: 'right' },
  { header: 'quantized', align: 'right' },
  { header: 'bits/w', align: 'right' },
  { header: 'RMSE', align: 'right' },
  { header: 'max |err|', align: 'right' },
  { header: 'time', align: 'right' },
];

const EVAL_COLUMNS: readonly Column[] = [
  { header: 'PPL', align: 'right' },
  { header: 'KL', align: 'right' },
  { header: 'top-1', align: 'right' },
];

function row(f: DemoFormatResult, evaluated: boolean): string[] {
  const none = f.quantized === 0;
  const evalCells = !evaluated
    ? []
    : f.perplexity === undefined || f.kl === undefined
      ? ['-', '-', '-']
      : [f.perplexity.toFixed(2), f.kl.mean.toFixed(4), `${(f.kl.top1Agreement * 100).toFixed(1)}%`];
  return [
    f.id,
    f.format,
    formatBytes(f.outputBytes),
    `${f.ratio.toFixed(2)}x`,
    String(f.quantized),
    none ? '-' : f.bitsPerWeight.toFixed(2),
    none ? '-' : f.rmse.toExponential(3),
    none ? '-' : f.maxAbs.toExponential(2),
    ...evalCells,
    formatMs(f.timeMs),
  ];
}

/** 'blk.3.ffn_down.weight' and its siblings in other blocks read as 'blk.*.ffn_down.weight'. */
function summariseNames(names: readonly string[]): string {
  const patterns = [...new Set(names.map((n) => n.replace(/^blk\.\d+\./, 'blk.*.')))];
  const shown = patterns.slice(0, 4).join(', ');
  return patterns.length > 4 ? `${shown}, ... (${patterns.length - 4} more)` : shown;
}

/** Groups (reason -> tensors -> recipes): recipes that did the same to the same tensors share one line. */
function reasonLines(formats: readonly DemoFormatResult[], pick: (f: DemoFormatResult) => DemoSkip[]): string[] {
  const groups = new Map<string, { formats: string[]; names: string[]; reason: string }>();
  for (const f of formats) {
    const byReason = new Map<string, string[]>();
    for (const s of pick(f)) byReason.set(s.reason, [...(byReason.get(s.reason) ?? []), s.name]);
    for (const [reason, names] of byReason) {
      const key = `${reason}\u0000${names.join('\u0000')}`;
      const g = groups.get(key) ?? { formats: [], names, reason };
      g.formats.push(f.id);
      groups.set(key, g);
    }
  }
  return [...groups.values()].map((g) => `  ${g.formats.join(', ')}: ${g.names.length} tensor${g.names.length === 1 ? '' : 's'} (${summariseNames(g.names)}): ${g.reason}`);
}

/** The demo's text output. */
export function renderDemo(r: DemoReport): string {
  const m = r.model;
  const title = m.bundled ? `${path.basename(m.path)} (bundled sample: llama2.c stories260K by Andrej Karpathy, MIT; see models/README.md)` : m.path;
  const out: string[] = [];
  out.push(`model: ${title}`);
  out.push(`  ${m.architecture ?? 'unknown architecture'}, ${m.tensors} tensors, ${formatBytes(m.bytes)}`);
  out.push('');
  const ev = r.evaluation;
  const evaluated = 'tokens' in ev;
  const columns = evaluated ? [...COLUMNS.slice(0, -1), ...EVAL_COLUMNS, COLUMNS[COLUMNS.length - 1] as Column] : COLUMNS;
  out.push(renderTable(columns, r.formats.map((f) => row(f, evaluated))));
  out.push('');
  out.push('Each recipe ran through the streaming pipeline (slimtensor compress) into a GGUF file or a compressed-tensors folder.');
  out.push('size: the output on disk; ratio = input file / output. quantized: tensors quantized, or pruned by 2of4 (norms and 1-D');
  out.push('tensors are kept; GGUF recipes choose every tensor\'s type as llama-quantize does, compressed-tensors recipes keep');
  out.push('embedding and head). RMSE, max |err| and bits/w over those weights (2of4: the kept values in the model\'s dtype plus a');
  out.push('1-bit mask per weight). time: the whole run (read, compress, measure the error, write). This model is 64 wide: the');
  out.push('K-quant mixes (q4_k_m, q5_k_m, q6_k) need rows of 256, so every tensor here takes llama-quantize\'s fallback type.');
  if ('tokens' in ev) {
    out.push(`PPL: perplexity of the output run by slimtensor's runtime on ${path.basename(ev.tokens)} (${ev.count} tokens, ${ev.chunks} chunks of`);
    out.push(`${ev.ctx}, the second half of each scored, as llama-perplexity does); the original's is ${ev.originalPerplexity.toFixed(2)}. KL: mean`);
    out.push('KL divergence of the output\'s next-token distribution from the original\'s; top-1: how often both predict the same token.');
  } else {
    out.push(`(no perplexity columns: ${ev.skipped})`);
  }
  const fallbacks = reasonLines(r.formats, (f) => f.fallbacks);
  if (fallbacks.length > 0) out.push('', 'fallbacks (rows that do not fit the block or group):', ...fallbacks);
  out.push('', `kernel: ${r.kernel}; total ${formatMs(r.totalMs)}`);
  return out.join('\n');
}
