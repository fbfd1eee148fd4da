// A float64 implementation of the distillation loss straight from the
// formulas of FORMATS.md "Distillation loss": the yardstick for random
// cases (the fixtures cover a handful). Slow and simple on purpose.

export type OracleDivergence = 'forward-kl' | 'reverse-kl' | 'jsd';

export interface OracleCase {
  rows: number;
  cols: number;
  student: ArrayLike<number>; // rows × cols
  teacher?: ArrayLike<number>; // rows × cols (dense)
  topk?: { indices: ArrayLike<number>; logprobs: ArrayLike<number>; k: number };
  labels?: ArrayLike<number> | null;
  temperature: number;
  alpha: number;
  divergence: OracleDivergence;
  beta: number;
  ignoreIndex: number;
  reduction: 'mean' | 'sum' | 'none';
}

export interface OracleResult {
  loss: number;
  rowLoss: Float64Array;
  grad: Float64Array;
  /**
   * Per element: the size of the gradient's parts, each weighted by the
   * size of the exponent it comes from (an f32 exp of an argument rounded
   * in f32 carries ~ε·|x| relative error): α·T·(q·(1 + |log q|)·r +
   * p·(1 + |log p|)) + (1 − α)·(s·(1 + |log s|) + onehot), times the
   * reduction scale; r is 1, or for reverse-kl/jsd the size of the log
   * ratio q multiplies. The yardstick for comparing two f32 computations.
   */
  scale: Float64Array;
}

/** The kernels' floor on a log-probability relative to the row maximum (FORMATS.md: p = 0 must not make 0·log 0 a NaN). */
export const LOG_FLOOR = -104;

/**
 * log softmax(x/T). With `floor`, each (x − max)/T is floored at LOG_FLOOR
 * first, the teacher's convention in the kernels: an −Infinity logit has a
 * finite log-probability (and a probability of ~1e-45, i.e. 0).
 */
function logSoftmax(x: ArrayLike<number>, off: number, n: number, invT: number, floor = false): Float64Array {
  let m = -Infinity;
  for (let j = 0; j < n; j++) m = Math.max(m, x[off + j] as number);
  const d = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    const v = ((x[off + j] as number) - m) * invT;
    d[j] = floor ? Math.max(v, LOG_FLOOR) : v;
  }
  let s = 0;
  for (let j = 0; j < n; j++) s += Math.exp(d[j] as number);
  const ls = Math.log(s);
  return d.map((v) => v - ls);
}

function logAddExp(a: number, b: number): number {
  const hi = Math.max(a, b);
  return hi + Math.log1p(Math.exp(Math.min(a, b) - hi));
}

/** w·(lw − lo), 0 when w is 0. */
const term = (w: number, lw: number, lo: number): number => (w === 0 ? 0 : w * (lw - lo));

export function oracle(c: OracleCase): OracleResult {
  const { rows, cols, temperature: T, alpha, beta } = c;
  const invT = 1 / T;
  const labels = c.labels ?? null;
  let kept = 0;
  for (let r = 0; r < rows; r++) if (!labels || labels[r] !== c.ignoreIndex) kept++;
  const scale = c.reduction === 'mean' ? (kept > 0 ? 1 / kept : 1) : 1;
  const rowLoss = new Float64Array(rows);
  const grad = new Float64Array(rows * cols);
  const mag = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const off = r * cols;
    if (labels && labels[r] === c.ignoreIndex) continue;
    const lq = logSoftmax(c.student, off, cols, invT);
    const ls = logSoftmax(c.student, off, cols, 1);
    const q = lq.map(Math.exp);
    const s = ls.map(Math.exp);
    let lp: Float64Array;
    if (c.topk) {
      // p over the k, re-tempered; scattered into the vocabulary.
      const k = c.topk.k;
      const l = Float64Array.from({ length: k }, (_, i) => c.topk!.logprobs[r * k + i] as number);
      const lk = logSoftmax(l, 0, k, invT, true);
      lp = new Float64Array(cols).fill(-Infinity);
      for (let i = 0; i < k; i++) lp[c.topk.indices[r * k + i] as number] = lk[i] as number;
    } else {
      lp = logSoftmax(c.teacher as ArrayLike<number>, off, cols, invT, true);
    }
    const p = lp.map(Math.exp);
    // D and dD/du
    let d = 0;
    const dd = new Float64Array(cols);
    const ratio = new Float64Array(cols).fill(1);
    if (c.divergence === 'forward-kl') {
      for (let j = 0; j < cols; j++) {
        d += term(p[j] as number, lp[j] as number, lq[j] as number);
        dd[j] = (q[j] as number) - (p[j] as number);
      }
    } else if (c.divergence === 'reverse-kl') {
      for (let j = 0; j < cols; j++) d += term(q[j] as number, lq[j] as number, lp[j] as number);
      for (let j = 0; j < cols; j++) {
        dd[j] = (q[j] as number) * ((lq[j] as number) - (lp[j] as number) - d);
        ratio[j] = 1 + Math.abs(lq[j] as number) + Math.abs(lp[j] as number) + Math.abs(d);
      }
    } else {
      let kpm = 0;
      let kqm = 0;
      const lm = new Float64Array(cols);
      for (let j = 0; j < cols; j++) {
        lm[j] = logAddExp(Math.log(beta) + (lp[j] as number), Math.log(1 - beta) + (lq[j] as number));
        kpm += term(p[j] as number, lp[j] as number, lm[j] as number);
        kqm += term(q[j] as number, lq[j] as number, lm[j] as number);
      }
      d = beta * kpm + (1 - beta) * kqm;
      for (let j = 0; j < cols; j++) {
        dd[j] = q[j] === 0 ? 0 : (1 - beta) * (q[j] as number) * ((lq[j] as number) - (lm[j] as number) - kqm);
        ratio[j] = 1 + Math.abs(lq[j] as number) + Math.abs(lm[j] as number) + Math.abs(kqm);
      }
    }
    let ce = 0;
    const y = labels ? (labels[r] as number) : -1;
    if (alpha < 1) ce = -(ls[y] as number);
    rowLoss[r] = (alpha > 0 ? alpha * T * T * d : 0) + (alpha < 1 ? (1 - alpha) * ce : 0);
    for (let j = 0; j < cols; j++) {
      const onehot = j === y ? 1 : 0;
      const kdPart = alpha > 0 ? alpha * T * (dd[j] as number) : 0;
      const cePart = alpha < 1 ? (1 - alpha) * ((s[j] as number) - onehot) : 0;
      grad[off + j] = (kdPart + cePart) * scale;
      const w = (x: number, lx: number): number => (x === 0 ? 0 : x * (1 + Math.abs(lx)));
      mag[off + j] =
        (alpha * T * (w(q[j] as number, lq[j] as number) * (ratio[j] as number) + w(p[j] as number, lp[j] as number)) +
          (1 - alpha) * (w(s[j] as number, ls[j] as number) + onehot)) *
        scale;
    }
  }
  let total = 0;
  for (let r = 0; r < rows; r++) total += rowLoss[r] as number;
  const loss = c.reduction === 'mean' ? (kept > 0 ? total / kept : 0) : total;
  return { loss, rowLoss, grad, scale: mag };
}
