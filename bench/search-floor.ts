// How close `search: 'mse'` gets to the best any scale could do. For each
// 32-value group of an N(0,1) sample it tries every f16 scale in a wide
// window around the plain rule (and, for the zero-point layout, every zero
// point), with the optimal codes for each, and keeps the lowest error: the
// floor of the layout at 4.5 / 4.625 bits per weight. It then quantizes the
// same data with the library and prints both RMSEs. This is the evidence for
// the README's statement that 0.0713 (llama.cpp's Q4_K) is out of reach for
// these layouts.
import { quantizationError, quantize, Tensor, type QuantizeOptions } from '../lib/index';
import { f16ToF32 } from '../lib/half';
import { Rng } from '../test/support/random';
import { markdownTable, type Benchmark, type BenchOptions, type BenchOutcome } from './harness';

const GROUP = 32;
const SEED = 7;

/** Every positive finite f16 value, ascending. */
function positiveHalves(): Float64Array {
  const out: number[] = [];
  for (let h = 1; h < 0x7c00; h++) out.push(f16ToF32(h));
  return Float64Array.from(out);
}

function lowerBound(a: Float64Array, v: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((a[mid] as number) < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Squared error of x ≈ s·(q − z) with the nearest q in [-8, 7] for each x. */
function groupError(x: Float32Array, off: number, s: number, z: number): number {
  let e = 0;
  for (let j = 0; j < GROUP; j++) {
    const v = x[off + j] as number;
    const q = Math.min(7, Math.max(-8, Math.round(v / s) + z));
    const d = v - s * (q - z);
    e += d * d;
  }
  return e;
}

interface Floors {
  /** Symmetric 16-level grid, scale of either sign (q4_0's layout; int4 g32 symmetric with a signed scale). */
  symmetric: number;
  /** Integer zero point (int4 g32 asymmetric). */
  zeroPoint: number;
}

function floors(x: Float32Array, groups: number): Floors {
  const halves = positiveHalves();
  let sym = 0;
  let zp = 0;
  for (let g = 0; g < groups; g++) {
    const off = g * GROUP;
    let amax = 0;
    let mn = 0;
    let mx = 0;
    for (let j = 0; j < GROUP; j++) {
      const v = x[off + j] as number;
      amax = Math.max(amax, Math.abs(v));
      mn = Math.min(mn, v);
      mx = Math.max(mx, v);
    }
    // Symmetric: every f16 |s| in [amax/12, amax/5], both signs.
    let best = Infinity;
    for (let i = lowerBound(halves, amax / 12); i < halves.length && (halves[i] as number) <= amax / 5; i++) {
      const s = halves[i] as number;
      best = Math.min(best, groupError(x, off, s, 0), groupError(x, off, -s, 0));
    }
    sym += best;
    // Zero point: every f16 s in [range/24, range/10], every z.
    best = Infinity;
    const range = mx - mn;
    for (let i = lowerBound(halves, range / 24); i < halves.length && (halves[i] as number) <= range / 10; i++) {
      for (let z = -8; z <= 7; z++) best = Math.min(best, groupError(x, off, halves[i] as number, z));
    }
    zp += best;
  }
  const n = groups * GROUP;
  return { symmetric: Math.sqrt(sym / n), zeroPoint: Math.sqrt(zp / n) };
}

interface Row {
  layout: string;
  bitsPerWeight: number;
  floor: number;
  rmse: { label: string; value: number }[];
}

export interface SearchFloorResult {
  groups: number;
  rows: Row[];
}

async function rmseOf(t: Tensor, o: QuantizeOptions): Promise<number> {
  return (await quantizationError(t, await quantize(t, o))).rmse;
}

export async function runSearchFloor(o: BenchOptions): Promise<SearchFloorResult> {
  const groups = o.quick ? 128 : 2048;
  o.log(`search-floor: ${groups} groups of ${GROUP} N(0,1) values, every f16 scale`);
  const x = new Rng(SEED).normals(groups * GROUP);
  const t = Tensor.from(x, [groups / 64, 64 * GROUP]);
  const f = floors(x, groups);
  return {
    groups,
    rows: [
      {
        layout: '16 levels, signed scale (q4_0)',
        bitsPerWeight: 4.5,
        floor: f.symmetric,
        rmse: [
          { label: "q4_0 search: 'none'", value: await rmseOf(t, { format: 'q4_0' }) },
          { label: "q4_0 search: 'mse'", value: await rmseOf(t, { format: 'q4_0', search: 'mse' }) },
        ],
      },
      {
        layout: '16 levels, integer zero point (int4 g32 asym)',
        bitsPerWeight: 4.625,
        floor: f.zeroPoint,
        rmse: [
          { label: "int4 g32 asym search: 'none'", value: await rmseOf(t, { format: 'int4', groupSize: 32, symmetric: false }) },
          { label: "int4 g32 asym search: 'mse'", value: await rmseOf(t, { format: 'int4', groupSize: 32, symmetric: false, search: 'mse' }) },
        ],
      },
    ],
  };
}

export function formatSearchFloor(r: SearchFloorResult): string {
  const rows = r.rows.flatMap((row) =>
    row.rmse.map((m) => [row.layout, row.bitsPerWeight.toFixed(3), row.floor.toFixed(5), m.label, m.value.toFixed(5), `${((m.value / row.floor - 1) * 100).toFixed(2)} %`]),
  );
  return [
    `### search-floor: ${r.groups} groups of ${GROUP} N(0,1) values`,
    '',
    markdownTable(['layout', 'bits/weight', 'floor RMSE', 'slimtensor', 'RMSE', 'above floor'], rows),
    '',
    'floor: the lowest RMSE any f16 scale (and zero point) achieves on each group with the best codes for it, found by trying them all.',
    "llama.cpp's Q4_K reaches 0.0713 at 4.5 bits per weight with a different layout (per-block minimum, 6-bit sub-scales).",
  ].join('\n');
}

export const searchFloorBench: Benchmark = {
  name: 'search-floor',
  description: "search: 'mse' RMSE against the exhaustive best of its layout (every f16 scale)",
  async run(o: BenchOptions): Promise<BenchOutcome> {
    const result = await runSearchFloor(o);
    return { result, markdown: formatSearchFloor(result) };
  },
};
