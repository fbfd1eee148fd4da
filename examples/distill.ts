// Knowledge distillation end to end: a fixed random teacher network (two
// layers) labels synthetic inputs; a smaller student (one linear layer)
// learns to imitate it with plain SGD, its loss and gradient coming from
// slimtensor's fused distillLoss. Prints how often the student's top-1
// class agrees with the teacher's, before and after training.
//
//   npx tsx examples/distill.ts [--samples 8192] [--epochs 20] [--seed 1]
//
// The matrix products are a small plain-JS loop (matmul below); swap in
// slimtensor's matmul once the low-rank issue has landed.
import { parseArgs } from 'node:util';
import { distillLoss, Tensor } from '../lib/index';

export interface DistillExampleOptions {
  /** Training inputs (as many again are held out for the agreement). Default 8192. */
  samples?: number;
  /** Passes over the training inputs. Default 20. */
  epochs?: number;
  seed?: number;
  /** Called once per epoch. */
  onEpoch?: (epoch: number, loss: number) => void;
}

export interface DistillExampleResult {
  /** Student/teacher top-1 agreement on held-out inputs, in [0, 1]. */
  before: number;
  after: number;
  /** Mean distillation loss of each epoch. */
  losses: number[];
}

const DIM = 32; // input features
const HIDDEN = 128; // teacher's hidden layer
const CLASSES = 24; // vocabulary of the "logits"
const BATCH = 256;
const TEMPERATURE = 2;
const ALPHA = 0.8; // mostly distillation, some cross-entropy on the teacher's hard labels
const LEARNING_RATE = 1.0;

/** mulberry32 + Box–Muller: a seeded normal generator. */
function normals(seed: number): () => number {
  let s = seed >>> 0;
  const uniform = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
}

/**
 * C[m×n] = A·B with A [m×k] and B [k×n], row-major; transA/transB read A
 * as [k×m] / B as [n×k] and use their transposes. A plain loop: swap for
 * slimtensor's matmul (issue 4) when it exists.
 */
export function matmul(a: Float32Array, b: Float32Array, m: number, k: number, n: number, transA = false, transB = false): Float32Array {
  const c = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < k; p++) {
      const av = transA ? (a[p * m + i] as number) : (a[i * k + p] as number);
      if (av === 0) continue;
      const row = i * n;
      if (transB) for (let j = 0; j < n; j++) c[row + j] = (c[row + j] as number) + av * (b[j * k + p] as number);
      else for (let j = 0; j < n; j++) c[row + j] = (c[row + j] as number) + av * (b[p * n + j] as number);
    }
  }
  return c;
}

function addBias(x: Float32Array, bias: Float32Array, rows: number): void {
  const n = bias.length;
  for (let r = 0; r < rows; r++) for (let j = 0; j < n; j++) x[r * n + j] = (x[r * n + j] as number) + (bias[j] as number);
}

function argmaxRows(x: Float32Array, rows: number, cols: number): Int32Array {
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let j = 1; j < cols; j++) if ((x[r * cols + j] as number) > (x[r * cols + best] as number)) best = j;
    out[r] = best;
  }
  return out;
}

/** The teacher: logits = W2·tanh(W1·x + b1) + b2, fixed random weights. */
function makeTeacher(randn: () => number): (x: Float32Array, rows: number) => Float32Array {
  const w1 = Float32Array.from({ length: DIM * HIDDEN }, () => (randn() * 1.0) / Math.sqrt(DIM)); // [DIM × HIDDEN]
  const b1 = Float32Array.from({ length: HIDDEN }, () => randn() * 0.5);
  const w2 = Float32Array.from({ length: HIDDEN * CLASSES }, () => (randn() * 3) / Math.sqrt(HIDDEN)); // [HIDDEN × CLASSES]
  const b2 = Float32Array.from({ length: CLASSES }, () => randn() * 0.5);
  return (x, rows) => {
    const h = matmul(x, w1, rows, DIM, HIDDEN);
    addBias(h, b1, rows);
    for (let i = 0; i < h.length; i++) h[i] = Math.tanh(h[i] as number);
    const logits = matmul(h, w2, rows, HIDDEN, CLASSES);
    addBias(logits, b2, rows);
    return logits;
  };
}

function agreement(a: Int32Array, b: Int32Array): number {
  let same = 0;
  for (let i = 0; i < a.length; i++) same += a[i] === b[i] ? 1 : 0;
  return same / a.length;
}

export async function runDistillExample(options: DistillExampleOptions = {}): Promise<DistillExampleResult> {
  const samples = options.samples ?? 8192;
  const epochs = options.epochs ?? 20;
  const randn = normals(options.seed ?? 1);
  const teacher = makeTeacher(randn);
  const train = Float32Array.from({ length: samples * DIM }, randn);
  const held = Float32Array.from({ length: samples * DIM }, randn);
  const trainLogits = teacher(train, samples);
  const trainLabels = argmaxRows(trainLogits, samples, CLASSES);
  const heldTop1 = argmaxRows(teacher(held, samples), samples, CLASSES);

  // The student: logits = x·W + b, W [DIM × CLASSES], small random start.
  const w = Float32Array.from({ length: DIM * CLASSES }, () => randn() * 0.01);
  const b = new Float32Array(CLASSES);
  const studentLogits = (x: Float32Array, rows: number): Float32Array => {
    const z = matmul(x, w, rows, DIM, CLASSES);
    addBias(z, b, rows);
    return z;
  };
  const evaluate = (): number => agreement(argmaxRows(studentLogits(held, samples), samples, CLASSES), heldTop1);

  const before = evaluate();
  const losses: number[] = [];
  for (let epoch = 0; epoch < epochs; epoch++) {
    let sum = 0;
    let batches = 0;
    for (let start = 0; start + BATCH <= samples; start += BATCH) {
      const x = train.subarray(start * DIM, (start + BATCH) * DIM);
      const z = Tensor.from(studentLogits(x, BATCH), [BATCH, CLASSES]);
      const t = Tensor.from(trainLogits.subarray(start * CLASSES, (start + BATCH) * CLASSES), [BATCH, CLASSES]);
      // dL/dz, written over the student's logits (in place: no allocation).
      const { loss } = await distillLoss(z, t, {
        labels: trainLabels.subarray(start, start + BATCH),
        temperature: TEMPERATURE,
        alpha: ALPHA,
        grad: z,
      });
      const g = z.data as Float32Array; // [BATCH × CLASSES], already divided by BATCH ('mean')
      const gw = matmul(x, g, DIM, BATCH, CLASSES, true); // xᵀ·g
      for (let i = 0; i < w.length; i++) w[i] = (w[i] as number) - LEARNING_RATE * (gw[i] as number);
      for (let r = 0; r < BATCH; r++) for (let j = 0; j < CLASSES; j++) b[j] = (b[j] as number) - LEARNING_RATE * (g[r * CLASSES + j] as number);
      sum += loss;
      batches++;
    }
    losses.push(sum / Math.max(1, batches));
    options.onEpoch?.(epoch, losses[losses.length - 1] as number);
  }
  return { before, after: evaluate(), losses };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      samples: { type: 'string', default: '8192' },
      epochs: { type: 'string', default: '20' },
      seed: { type: 'string', default: '1' },
    },
  });
  const samples = Number(values.samples);
  const epochs = Number(values.epochs);
  console.log(`teacher: ${DIM} → ${HIDDEN} (tanh) → ${CLASSES} logits, fixed random weights; student: one linear layer ${DIM} → ${CLASSES}`);
  console.log(`training on ${samples} inputs, ${epochs} epochs of SGD (batch ${BATCH}, lr ${LEARNING_RATE}), distillLoss with T = ${TEMPERATURE}, alpha = ${ALPHA}`);
  const r = await runDistillExample({
    samples,
    epochs,
    seed: Number(values.seed),
    onEpoch: (e, loss) => {
      if (e === 0 || (e + 1) % 5 === 0 || e === epochs - 1) console.log(`epoch ${String(e + 1).padStart(3)}: loss ${loss.toFixed(4)}`);
    },
  });
  console.log(`top-1 agreement with the teacher on ${samples} held-out inputs: before ${(r.before * 100).toFixed(1)}%, after ${(r.after * 100).toFixed(1)}%`);
}

if (require.main === module) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  });
}
