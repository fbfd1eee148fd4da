// Renders a DemoReport for the terminal: a header naming the model, one
// table row per format, then what was skipped or adjusted and why.
import * as path from 'node:path';
import type { DemoFormatResult, DemoReport, DemoSkip } from '../demo';
import { formatBytes, formatMs, renderTable, type Column } from './table';

const COLUMNS: readonly Column[] = [
  { header: 'format', align: 'left' },
  { header: 'tensors', align: 'right' },
  { header: 'skipped', align: 'right' },
  { header: 'original', align: 'right' },
  { header: 'quantized', align: 'right' },
  { header: 'ratio', align: 'right' },
  { header: 'bits/w', align: 'right' },
  { header: 'RMSE', align: 'right' },
  { header: 'max |err|', align: 'right' },
  { header: 'model', align: 'right' },
  { header: 'time', align: 'right' },
];

function row(f: DemoFormatResult): string[] {
  const none = f.quantized === 0;
  return [
    f.id,
    String(f.quantized),
    String(f.skipped.length),
    formatBytes(f.originalBytes),
    formatBytes(f.quantizedBytes),
    none ? '-' : `${f.ratio.toFixed(2)}x`,
    none ? '-' : f.bitsPerWeight.toFixed(2),
    none ? '-' : f.rmse.toExponential(3),
    none ? '-' : f.maxAbs.toExponential(2),
    formatBytes(f.modelBytes),
    formatMs(f.timeMs),
  ];
}

/** 'blk.3.ffn_down.weight' and its siblings in other blocks read as 'blk.*.ffn_down.weight'. */
function summariseNames(names: readonly string[]): string {
  const patterns = [...new Set(names.map((n) => n.replace(/^blk\.\d+\./, 'blk.*.')))];
  const shown = patterns.slice(0, 4).join(', ');
  return patterns.length > 4 ? `${shown}, ... (${patterns.length - 4} more)` : shown;
}

/**
 * Groups (reason -> tensors -> formats): formats that skipped the same
 * tensors for the same reason share one line.
 */
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
  return [...groups.values()].map(
    (g) => `  ${g.formats.join(', ')}: ${g.names.length} tensor${g.names.length === 1 ? '' : 's'} (${summariseNames(g.names)}): ${g.reason}`,
  );
}

/** The demo's text output. */
export function renderDemo(r: DemoReport): string {
  const m = r.model;
  const title = m.bundled ? `${path.basename(m.path)} (bundled sample: llama2.c stories260K by Andrej Karpathy, MIT; see models/README.md)` : m.path;
  const out: string[] = [];
  out.push(`model: ${title}`);
  out.push(
    `  ${m.architecture ?? 'unknown architecture'}, ${m.tensors} tensors, ${formatBytes(m.tensorBytes)} of weights; ` +
      `${m.candidates} 2-D tensors to quantize, ${m.untouched.length} left as stored`,
  );
  out.push('');
  out.push(renderTable(COLUMNS, r.formats.map(row)));
  out.push('');
  out.push('tensors/skipped: 2-D tensors quantized / kept at their stored precision. original/quantized: bytes of the quantized');
  out.push('tensors before and after; ratio = original/quantized. RMSE and max |err| over all quantized weights together.');
  out.push('model: all tensor bytes after quantization (skipped and 1-D tensors as stored). time: the quantize calls only.');
  const skipped = reasonLines(r.formats, (f) => f.skipped);
  if (skipped.length > 0) out.push('', 'skipped (kept at stored precision):', ...skipped);
  const fallbacks = reasonLines(r.formats, (f) => f.fallbacks);
  if (fallbacks.length > 0) out.push('', 'fallbacks:', ...fallbacks);
  if (m.untouched.length > 0) {
    const byReason = new Map<string, string[]>();
    for (const s of m.untouched) byReason.set(s.reason, [...(byReason.get(s.reason) ?? []), s.name]);
    out.push('', 'not quantized by any format:');
    for (const [reason, names] of byReason) out.push(`  ${names.length} tensor${names.length === 1 ? '' : 's'} (${summariseNames(names)}): ${reason}`);
  }
  out.push('', `kernel: ${r.kernel}; total ${formatMs(r.totalMs)}`);
  return out.join('\n');
}
