// The HTML report: one self-contained page (inline CSS and SVG, no scripts
// or external assets) with the error of every tensor as a bar chart, weight
// histograms of the most damaged tensors with their quantization grid, and
// the full table.
import * as path from 'node:path';
import type { ComparisonReport, GridHistogram, Histogram, TensorComparison } from './compare';

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function fmtBytes(n: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < u.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${u[i]}`;
}

function fmtNum(v: number | undefined, digits = 3): string {
  if (v === undefined || Number.isNaN(v)) return '–';
  if (v === Infinity) return '∞';
  if (v === 0) return '0';
  return Math.abs(v) >= 1e-3 && Math.abs(v) < 1e4 ? v.toPrecision(digits) : v.toExponential(digits - 1);
}

/** report --eval: both models run on a token file. */
function evaluationSection(r: ComparisonReport): string {
  const e = r.evaluation;
  if (e === undefined) return '';
  const rel = (e.deltaPerplexity / e.original.perplexity) * 100;
  return `<h2>Quality on text <small>${e.tokens.count} tokens${e.tokens.path ? ` of ${esc(path.basename(e.tokens.path))}` : ''}, ${e.chunks} chunks of ${e.ctx}, the second half of each scored (${e.scored} tokens), as llama-perplexity computes it</small></h2>
<table class="sum">
<tr><td>perplexity</td><td>${e.compressed.perplexity.toFixed(4)} ± ${e.compressed.perplexityError.toFixed(4)}</td><td>original ${e.original.perplexity.toFixed(4)} ± ${e.original.perplexityError.toFixed(4)}</td><td>ΔPPL ${e.deltaPerplexity >= 0 ? '+' : ''}${e.deltaPerplexity.toFixed(4)} (${rel >= 0 ? '+' : ''}${rel.toFixed(2)} %)</td></tr>
<tr><td>KL divergence</td><td>mean ${fmtNum(e.kl.mean, 4)}</td><td>p99 ${fmtNum(e.kl.p99, 4)}</td><td>max ${fmtNum(e.kl.max, 4)}</td></tr>
<tr><td>top-1 agreement</td><td>${(e.kl.top1Agreement * 100).toFixed(2)} %</td><td colspan="2">of next-token predictions equal to the original's</td></tr>
<tr><td>speed</td><td>${e.compressed.tokensPerSecond.toFixed(1)} tokens/s</td><td colspan="2">original ${e.original.tokensPerSecond.toFixed(1)} tokens/s</td></tr>
</table>`;
}

const PALETTE = ['#3b6fb6', '#d9822b', '#3a9d5d', '#b8455a', '#7a5cb8', '#8c6d46', '#c75fa8', '#5f7f8c'];

function colorFor(types: string[], t: string): string {
  const i = types.indexOf(t);
  return PALETTE[i % PALETTE.length] as string;
}

/** Horizontal bars of SQNR (dB) per tensor, in file order. */
function errorChart(rows: readonly TensorComparison[], types: string[]): string {
  const shown = rows.filter((r) => r.error !== undefined && Number.isFinite(r.error.sqnrDb));
  if (shown.length === 0) return '<p>No tensor changed: every compared tensor is exact.</p>';
  const labelW = 260;
  const barW = 420;
  const rowH = 16;
  const top = 24;
  const maxDb = Math.max(...shown.map((r) => (r.error as { sqnrDb: number }).sqnrDb), 1);
  const h = top + shown.length * rowH + 8;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${labelW + barW + 90}" height="${h}" role="img" aria-label="SQNR per tensor">`);
  for (let db = 0; db <= maxDb; db += maxDb > 60 ? 20 : 10) {
    const x = labelW + (db / maxDb) * barW;
    out.push(`<line x1="${x}" y1="${top - 6}" x2="${x}" y2="${h - 6}" stroke="#ddd"/><text x="${x}" y="${top - 10}" class="ax" text-anchor="middle">${db} dB</text>`);
  }
  shown.forEach((r, i) => {
    const e = r.error as { sqnrDb: number; rmse: number };
    const y = top + i * rowH;
    const w = Math.max(1, (Math.max(0, e.sqnrDb) / maxDb) * barW);
    out.push(
      `<g><title>${esc(r.name)}: ${esc(r.originalType)} → ${esc(r.compressedType)}, SQNR ${e.sqnrDb.toFixed(2)} dB, RMSE ${fmtNum(e.rmse)}</title>` +
        `<text x="${labelW - 6}" y="${y + 11}" class="lb" text-anchor="end">${esc(r.name.length > 40 ? `…${r.name.slice(-39)}` : r.name)}</text>` +
        `<rect x="${labelW}" y="${y + 2}" width="${w.toFixed(1)}" height="${rowH - 4}" fill="${colorFor(types, r.compressedType)}"/>` +
        `<text x="${labelW + w + 4}" y="${y + 11}" class="ax">${e.sqnrDb.toFixed(1)}</text></g>`,
    );
  });
  out.push('</svg>');
  return out.join('');
}

function bars(h: Histogram, width: number, height: number, x0: number, y0: number, color: string): string {
  const peak = Math.max(1, ...h.counts);
  const bw = width / Math.max(1, h.counts.length);
  return h.counts
    .map((c, i) => (c === 0 ? '' : `<rect x="${(x0 + i * bw).toFixed(2)}" y="${(y0 + height - (c / peak) * height).toFixed(2)}" width="${Math.max(0.5, bw - 0.3).toFixed(2)}" height="${((c / peak) * height).toFixed(2)}" fill="${color}"/>`))
    .join('');
}

function rawHistogram(h: Histogram): string {
  const W = 360;
  const H = 150;
  const pad = 28;
  const zeroX = pad + ((0 - h.min) / (h.max - h.min)) * W;
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W + 2 * pad}" height="${H + 2 * pad}" role="img" aria-label="weight histogram">` +
    `<text x="${pad}" y="14" class="tt">weights</text>` +
    bars(h, W, H, pad, pad, '#3b6fb6') +
    `<line x1="${pad}" y1="${pad + H}" x2="${pad + W}" y2="${pad + H}" stroke="#888"/>` +
    (zeroX >= pad && zeroX <= pad + W ? `<line x1="${zeroX}" y1="${pad}" x2="${zeroX}" y2="${pad + H}" stroke="#888" stroke-dasharray="3,3"/>` : '') +
    `<text x="${pad}" y="${pad + H + 16}" class="ax">${fmtNum(h.min)}</text><text x="${pad + W}" y="${pad + H + 16}" class="ax" text-anchor="end">${fmtNum(h.max)}</text>` +
    `</svg>`
  );
}

function gridHistogram(g: GridHistogram): string {
  const W = 420;
  const H = 150;
  const pad = 28;
  const xOf = (u: number): number => pad + ((u - g.min) / (g.max - g.min)) * W;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W + 2 * pad}" height="${H + 2 * pad}" role="img" aria-label="weights on the quantization grid">`);
  parts.push(`<text x="${pad}" y="14" class="tt">${esc(g.axis)} on the code grid ${g.levels[0]}…${g.levels[1]}${g.outside > 0 ? ` (${g.outside} outside the plot)` : ''}</text>`);
  // Outside the representable range: shaded (values there are clipped).
  parts.push(`<rect x="${pad}" y="${pad}" width="${(xOf(g.levels[0] - 0.5) - pad).toFixed(1)}" height="${H}" fill="#f3dede"/>`);
  parts.push(`<rect x="${xOf(g.levels[1] + 0.5).toFixed(1)}" y="${pad}" width="${(pad + W - xOf(g.levels[1] + 0.5)).toFixed(1)}" height="${H}" fill="#f3dede"/>`);
  const many = g.levels[1] - g.levels[0] > 32;
  for (let l = g.levels[0]; l <= g.levels[1]; l++) {
    if (many && l % 16 !== 0 && l !== g.levels[0] && l !== g.levels[1]) continue;
    const x = xOf(l);
    parts.push(`<line x1="${x.toFixed(1)}" y1="${pad}" x2="${x.toFixed(1)}" y2="${pad + H}" stroke="#c99" stroke-width="0.7"/>`);
    parts.push(`<text x="${x.toFixed(1)}" y="${pad + H + 14}" class="ax" text-anchor="middle">${l}</text>`);
  }
  parts.push(bars(g, W, H, pad, pad, '#d9822b'));
  parts.push(`<line x1="${pad}" y1="${pad + H}" x2="${pad + W}" y2="${pad + H}" stroke="#888"/>`);
  parts.push('</svg>');
  return parts.join('');
}

/** Renders the comparison as one self-contained HTML page. */
export function renderReportHtml(r: ComparisonReport): string {
  const types = [...new Set(r.tensors.map((t) => t.compressedType))];
  const legend = types
    .filter((t) => r.tensors.some((x) => x.compressedType === t && x.error !== undefined && Number.isFinite(x.error.sqnrDb)))
    .map((t) => `<span class="key"><i style="background:${colorFor(types, t)}"></i>${esc(t)}</span>`)
    .join(' ');
  const rows = r.tensors
    .map((t) => {
      const e = t.error;
      return `<tr><td class="n">${esc(t.name)}</td><td>${esc(t.originalType)} → ${esc(t.compressedType)}</td><td>[${t.shape.join(', ')}]</td><td>${fmtBytes(t.originalBytes)}</td><td>${fmtBytes(t.compressedBytes)}</td><td>${fmtNum(e?.rmse)}</td><td>${e === undefined ? '–' : Number.isFinite(e.sqnrDb) ? e.sqnrDb.toFixed(2) : '∞'}</td><td>${e === undefined ? '–' : e.cosine.toFixed(6)}</td></tr>`;
    })
    .join('\n');
  const hists = r.tensors
    .filter((t) => t.histogram !== undefined)
    .map(
      (t) =>
        `<section class="h"><h3>${esc(t.name)} <small>${esc(t.originalType)} → ${esc(t.compressedType)}, SQNR ${t.error ? t.error.sqnrDb.toFixed(2) : '–'} dB</small></h3>` +
        `<div class="row">${rawHistogram(t.histogram as Histogram)}${t.grid !== undefined ? gridHistogram(t.grid) : ''}</div></section>`,
    )
    .join('\n');
  const tot = r.total;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>slimtensor report: ${esc(path.basename(r.compressed.path))}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;color:#222;margin:24px auto;max-width:1100px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #eee}h3{font-size:14px;margin:10px 0 2px}
small{color:#666;font-weight:normal}.sum td{padding:2px 12px 2px 0}.key{margin-right:12px}.key i{display:inline-block;width:10px;height:10px;margin-right:4px}
table.t{border-collapse:collapse;width:100%;font-size:12.5px}table.t td,table.t th{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
table.t td.n,table.t th.n{text-align:left;font-family:ui-monospace,monospace}.row{display:flex;flex-wrap:wrap;gap:8px}
svg .lb{font:11px ui-monospace,monospace;fill:#333}svg .ax{font:10px system-ui,sans-serif;fill:#666}svg .tt{font:12px system-ui,sans-serif;fill:#333}
</style></head><body>
<h1>slimtensor report</h1>
<table class="sum">
<tr><td>original</td><td>${esc(r.original.path)}</td><td>${esc(r.original.format)}</td><td>${fmtBytes(r.original.bytes)}</td></tr>
<tr><td>compressed</td><td>${esc(r.compressed.path)}</td><td>${esc(r.compressed.format)}</td><td>${fmtBytes(r.compressed.bytes)}</td></tr>
<tr><td>tensor bytes</td><td colspan="3">${fmtBytes(tot.originalBytes)} → ${fmtBytes(tot.compressedBytes)} (${tot.ratio.toFixed(2)}×); RMSE ${fmtNum(tot.rmse)} over ${tot.weights} weights; SQNR ${Number.isFinite(tot.sqnrDb) ? tot.sqnrDb.toFixed(2) : '∞'} dB over the changed tensors</td></tr>
</table>
${evaluationSection(r)}
<h2>Error per tensor <small>signal-to-quantization-noise ratio, higher is better; exact tensors are left out</small></h2>
<p>${legend}</p>
${errorChart(r.tensors, types)}
<h2>Weights and the quantization grid <small>the ${r.tensors.filter((t) => t.histogram).length} tensors with the lowest SQNR</small></h2>
<p>Left: the original weights. Right: the same weights in units of their group's quantization step; the quantizer rounds each to the nearest grid line, and values in the shaded area are clipped.</p>
${hists || '<p>No quantized tensor to show.</p>'}
<h2>All tensors</h2>
<table class="t"><tr><th class="n">tensor</th><th>type</th><th>shape</th><th>original</th><th>compressed</th><th>RMSE</th><th>SQNR dB</th><th>cosine</th></tr>
${rows}
</table>
</body></html>
`;
}
