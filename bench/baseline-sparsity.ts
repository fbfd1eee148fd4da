// Plain-JS 2:4 magnitude pruning: what a competent JS developer would write
// from the definition (keep the two largest |w| of every four consecutive
// elements of a row, equal magnitudes keeping the lower column), one
// thread, no native code. The sparsity benchmark reports the native
// kernels' speed against these and checks their output byte for byte, so a
// baseline that skipped work (and got faster by being wrong) shows up as a
// mismatch.
//
// Layouts as shared/reference/FORMATS.md and lib/sparsity.ts: the bitmask
// has bit j of byte k for column 8k+j of the row; meta is one nibble per
// group, idx0 | idx1 << 2 with idx0 < idx1 the kept positions, four groups
// per little-endian int16 word. Inputs are assumed finite (NaN is the
// native side's ERR_VALUE).

/** The two kept positions of the group at x[at..at+3], lower first, packed as idx0 | idx1 << 2. */
function keep24(x: Float32Array, at: number): number {
  const a0 = Math.abs(x[at] as number);
  const a1 = Math.abs(x[at + 1] as number);
  const a2 = Math.abs(x[at + 2] as number);
  const a3 = Math.abs(x[at + 3] as number);
  // Strict comparisons: on a tie the earlier element stays ahead.
  let best = 0;
  let bestA = a0;
  let second = 1;
  let secondA = a1;
  if (a1 > a0) {
    best = 1;
    bestA = a1;
    second = 0;
    secondA = a0;
  }
  if (a2 > bestA) {
    second = best;
    secondA = bestA;
    best = 2;
    bestA = a2;
  } else if (a2 > secondA) {
    second = 2;
    secondA = a2;
  }
  if (a3 > bestA) {
    second = best;
    best = 3;
  } else if (a3 > secondA) {
    second = 3;
  }
  return best < second ? best | (second << 2) : second | (best << 2);
}

function checkShape(x: Float32Array, rows: number, cols: number, what: string): void {
  if (cols % 8 !== 0 || x.length !== rows * cols) throw new RangeError(`${what}: needs cols a multiple of 8 and ${rows}×${cols} values, got ${cols} and ${x.length}`);
}

/** prune(t, { pattern: '2:4' }): the pruned copy (+0 where dropped) and the bitmask. */
export function prune24(x: Float32Array, rows: number, cols: number): { dense: Float32Array; mask: Uint8Array } {
  checkShape(x, rows, cols, 'prune24');
  const dense = new Float32Array(x.length);
  const mask = new Uint8Array((rows * cols) / 8);
  for (let i = 0; i < x.length; i += 8) {
    const lo = keep24(x, i);
    const hi = keep24(x, i + 4);
    const l0 = lo & 3;
    const l1 = lo >> 2;
    const h0 = (hi & 3) + 4;
    const h1 = (hi >> 2) + 4;
    dense[i + l0] = x[i + l0] as number;
    dense[i + l1] = x[i + l1] as number;
    dense[i + h0] = x[i + h0] as number;
    dense[i + h1] = x[i + h1] as number;
    mask[i >> 3] = (1 << l0) | (1 << l1) | (1 << h0) | (1 << h1);
  }
  return { dense, mask };
}

/** compress24(t, { prune: true }): the kept values, the int16 meta words and the bitmask. */
export function pruneCompress24(x: Float32Array, rows: number, cols: number): { values: Float32Array; meta: Int16Array; mask: Uint8Array } {
  checkShape(x, rows, cols, 'pruneCompress24');
  const values = new Float32Array(x.length / 2);
  const wordsPerRow = Math.ceil(cols / 16);
  const meta = new Int16Array(rows * wordsPerRow);
  const mask = new Uint8Array((rows * cols) / 8);
  for (let r = 0; r < rows; r++) {
    const row = r * cols;
    const mrow = r * wordsPerRow;
    let word = 0;
    for (let g = 0; g < cols / 4; g++) {
      const at = row + 4 * g;
      const code = keep24(x, at);
      const k0 = code & 3;
      const k1 = code >> 2;
      values[at >> 1] = x[at + k0] as number;
      values[(at >> 1) + 1] = x[at + k1] as number;
      mask[at >> 3] = (g & 1 ? mask[at >> 3] as number : 0) | (((1 << k0) | (1 << k1)) << (4 * (g & 1)));
      word |= code << (4 * (g & 3));
      if ((g & 3) === 3) {
        meta[mrow + (g >> 2)] = word;
        word = 0;
      }
    }
    if ((cols / 4) % 4 !== 0) meta[mrow + wordsPerRow - 1] = word;
  }
  return { values, meta, mask };
}
