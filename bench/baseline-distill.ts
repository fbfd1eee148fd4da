// Plain-JS distillation loss: what a competent JS developer would write from
// the formulas (FORMATS.md "Distillation loss"), forward-kl with labels,
// one thread, no SIMD, no native code. Per row: the three maxima and
// log-sum-exps (z/T, t/T, z), then one loop writing the gradient and
// summing the loss. Math.exp/Math.log in double, Float32Array in and out.
// The distill benchmark reports the native kernel's speed against this and
// checks that the two agree, so a baseline that got faster by being wrong
// would show.

export interface BaselineResult {
  loss: number;
  rowLoss: Float64Array;
}

function logSumExp(x: Float32Array, off: number, n: number, scale: number, max: number): number {
  let s = 0;
  for (let j = 0; j < n; j++) s += Math.exp(((x[off + j] as number) - max) * scale);
  return Math.log(s);
}

/**
 * loss = mean over rows of α·T²·KL(softmax(t/T) ‖ softmax(z/T)) + (1 − α)·CE(y, softmax(z));
 * writes dloss/dz into `grad`. Rows labelled -100 are skipped (zero gradient).
 */
export function distillForwardKl(
  z: Float32Array,
  t: Float32Array,
  labels: Int32Array,
  rows: number,
  cols: number,
  temperature: number,
  alpha: number,
  grad: Float32Array,
): BaselineResult {
  const invT = 1 / temperature;
  let kept = 0;
  for (let r = 0; r < rows; r++) if (labels[r] !== -100) kept++;
  const scale = kept > 0 ? 1 / kept : 0;
  const rowLoss = new Float64Array(rows);
  let total = 0;
  for (let r = 0; r < rows; r++) {
    const off = r * cols;
    const y = labels[r] as number;
    if (y === -100) {
      grad.fill(0, off, off + cols);
      continue;
    }
    let mz = -Infinity;
    let mt = -Infinity;
    for (let j = 0; j < cols; j++) {
      const a = z[off + j] as number;
      const b = t[off + j] as number;
      if (a > mz) mz = a;
      if (b > mt) mt = b;
    }
    const lsu = logSumExp(z, off, cols, invT, mz); // log Σ exp((z − mz)/T)
    const lst = logSumExp(t, off, cols, invT, mt);
    const lsz = temperature === 1 ? lsu : logSumExp(z, off, cols, 1, mz);
    let kl = 0;
    for (let j = 0; j < cols; j++) {
      const lq = ((z[off + j] as number) - mz) * invT - lsu;
      const lp = Math.max(((t[off + j] as number) - mt) * invT, -104) - lst;
      const q = Math.exp(lq);
      const p = Math.exp(lp);
      const s = temperature === 1 ? q : Math.exp((z[off + j] as number) - mz - lsz);
      kl += p * (lp - lq);
      grad[off + j] = (alpha * temperature * (q - p) + (1 - alpha) * (s - (j === y ? 1 : 0))) * scale;
    }
    const ce = lsz - ((z[off + y] as number) - mz);
    rowLoss[r] = alpha * temperature * temperature * kl + (1 - alpha) * ce;
    total += rowLoss[r] as number;
  }
  return { loss: total * scale, rowLoss };
}
