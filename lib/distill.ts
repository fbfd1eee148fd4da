// Fused knowledge-distillation loss: forward and backward in one pass over
// the logits. Validation and output allocation live here; the arithmetic is
// native (native/core/distill/). Conventions: FORMATS.md "Distillation loss".
import { fail } from './errors';
import { binding, callAsync, callSync, type NativeArgs } from './native';
import { checkOptions, FLOAT_DTYPES, kernelCode, sameShape, threadCount, type Kernel } from './options';
import type { FloatDType } from './tensor';
import { assertFixedLength, checkOutMemory, checkOutTensor, checkTensor, dtypeCode, sameView, Tensor, uninitializedArray, type NamedViews } from './tensor';

/** The distillation term D: KL(p‖q) (Hinton), KL(q‖p), or the β-skewed Jensen–Shannon divergence. */
export type Divergence = 'forward-kl' | 'reverse-kl' | 'jsd';
/** 'mean' over the rows that are not ignored, 'sum', or 'none' (see DistillLossResult). */
export type Reduction = 'mean' | 'sum' | 'none';

/**
 * A teacher stored as its k best log-probabilities per row (offline
 * distillation): `indices` [N, k] are vocabulary positions (distinct within
 * a row), `logprobs` [N, k] the teacher's log-probabilities there at T = 1
 * (−Infinity allowed). Flat arrays of N·k values, or Tensors of shape [..., k].
 */
export interface TopKTeacher {
  indices: Int32Array | Tensor<'i32'>;
  logprobs: Float32Array | Tensor<'f32'>;
}

/** Class indices, one per row; `ignoreIndex` marks rows to skip. */
export type Labels = Int32Array | BigInt64Array | readonly number[] | Tensor<'i32'> | Tensor<'i64'>;

export interface DistillLossOptions {
  /** One label per row (required when alpha < 1). Rows labelled `ignoreIndex` contribute nothing and get a zero gradient. */
  labels?: Labels | null;
  /** T > 0, softens both distributions; the distillation term is scaled by T². Default 1. */
  temperature?: number;
  /** Weight of the distillation term, in [0, 1]; 1 − alpha weighs the cross-entropy with the labels. Default 0.5. */
  alpha?: number;
  /** Default 'forward-kl'. A top-k teacher supports 'forward-kl' only. */
  divergence?: Divergence;
  /** jsd: the mixture m = β·p + (1 − β)·q, β in (0, 1). Default 0.5 (the symmetric JSD). */
  beta?: number;
  /** The label of rows to skip. Default −100 (PyTorch's). */
  ignoreIndex?: number;
  /** Default 'mean'. */
  reduction?: Reduction;
  /**
   * true (default): return dloss/dstudent in a new tensor of the student's
   * dtype and shape. false: the loss only. A Tensor: write the gradient
   * there (same dtype and shape as the student; it may be the student
   * itself, for an in-place update, but must not otherwise overlap an input).
   */
  grad?: boolean | Tensor;
  /** Which implementation runs: 'auto' (default) picks AVX-512, else AVX2, where the CPU has them; 'avx512' gives the same bits as 'avx2' (ERR_UNSUPPORTED without AVX-512). */
  kernel?: Kernel;
  /** Threads for this call (default: setThreads / all cores). */
  threads?: number;
  /**
   * Write the outputs into these instead of allocating (a previous result
   * will do): `rowLoss` (N floats) and `grad` (as a `grad` Tensor: the
   * student's dtype and shape, or the student itself). The result holds them.
   */
  out?: { rowLoss?: Float32Array; grad?: Tensor };
}

export interface DistillLossResult {
  /** 'mean': the mean over kept rows (0 when every row is ignored); 'sum' and 'none': the sum over rows. */
  loss: number;
  /** Each row's own (unreduced) loss; 0 for ignored rows. */
  rowLoss: Float32Array;
  /** dloss/dstudent ('none': the gradient of the sum), in the student's dtype; absent with grad: false. */
  grad?: Tensor<FloatDType>;
}

const DIVERGENCES: Record<Divergence, number> = { 'forward-kl': 0, 'reverse-kl': 1, jsd: 2 };
const REDUCTIONS: Record<Reduction, number> = { mean: 0, sum: 1, none: 2 };
const OPTIONS = ['labels', 'temperature', 'alpha', 'divergence', 'beta', 'ignoreIndex', 'reduction', 'grad', 'kernel', 'threads', 'out'];
const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;

function pick<T extends string>(table: Record<T, number>, value: unknown, fallback: T, where: string, what: string): number {
  if (value === undefined) return table[fallback];
  if (typeof value !== 'string' || !Object.prototype.hasOwnProperty.call(table, value)) {
    fail(where, 'ERR_VALUE', `options.${what} must be one of ${Object.keys(table).map((k) => `'${k}'`).join(', ')}; got ${JSON.stringify(value)}`);
  }
  return table[value as T];
}

function number(value: unknown, fallback: number, ok: (v: number) => boolean, where: string, what: string, range: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !ok(value)) fail(where, 'ERR_VALUE', `options.${what} must be ${range}, got ${String(value)}`);
  return value;
}


function labelArray(labels: Labels, rows: number, where: string): Int32Array {
  let out: Int32Array;
  if (labels instanceof Tensor) {
    const t = checkTensor(labels, where, 'options.labels', ['i32', 'i64']);
    if (t.size !== rows) fail(where, 'ERR_SHAPE', `options.labels has ${t.size} values; the student has ${rows} rows`);
    return t.dtype === 'i32' ? (t.data as Int32Array) : labelArray(t.data as BigInt64Array, rows, where);
  }
  if (labels instanceof Int32Array) {
    assertFixedLength(labels, where, 'options.labels');
    out = labels;
  } else if (labels instanceof BigInt64Array) {
    out = new Int32Array(labels.length);
    for (let i = 0; i < labels.length; i++) {
      const v = labels[i] as bigint;
      if (v < BigInt(INT32_MIN) || v > BigInt(INT32_MAX)) fail(where, 'ERR_VALUE', `options.labels[${i}] is ${v}, outside the int32 range`);
      out[i] = Number(v);
    }
  } else if (Array.isArray(labels)) {
    out = new Int32Array(labels.length);
    for (let i = 0; i < labels.length; i++) {
      const v: unknown = labels[i];
      if (typeof v !== 'number' || !Number.isInteger(v) || v < INT32_MIN || v > INT32_MAX) {
        fail(where, 'ERR_VALUE', `options.labels[${i}] must be an int32 integer, got ${String(v)}`);
      }
      out[i] = v;
    }
  } else {
    fail(where, 'ERR_VALUE', 'options.labels must be an Int32Array, a BigInt64Array, an array of integers or an i32/i64 Tensor');
  }
  if (out.length !== rows) fail(where, 'ERR_SHAPE', `options.labels has ${out.length} values; the student has ${rows} rows`);
  return out;
}

/** A top-k part as a flat array of `rows`·k values; returns it and k. */
function topkPart<A extends Int32Array | Float32Array>(
  part: unknown,
  ctor: { new (n: number): A; name: string },
  dtype: 'i32' | 'f32',
  rows: number,
  where: string,
  what: string,
): { data: A; k: number | undefined } {
  let data: A;
  let k: number | undefined;
  if (part instanceof Tensor) {
    const t = checkTensor(part, where, what, [dtype]);
    if (t.shape.length === 0) fail(where, 'ERR_SHAPE', `${what} must be [N, k]`);
    k = t.shape[t.shape.length - 1] as number;
    data = t.data as A;
  } else if (part instanceof ctor) {
    assertFixedLength(part, where, what);
    data = part;
  } else {
    fail(where, 'ERR_VALUE', `${what} must be a ${ctor.name} or a ${dtype} Tensor`);
  }
  if (rows > 0) {
    if (data.length % rows !== 0) fail(where, 'ERR_SHAPE', `${what} holds ${data.length} values, not k per row for ${rows} rows`);
    const perRow = data.length / rows;
    if (k !== undefined && k !== perRow) fail(where, 'ERR_SHAPE', `${what} has ${k} values per row in its shape but ${perRow} per student row`);
    k = perRow;
  }
  return { data, k };
}

/**
 * Validates inputs, allocates the outputs and builds the native argument object.
 * @internal Exported for tests that call an addon instance directly (test/distill.test.ts); not part of the API.
 */
export function planDistill(
  student: Tensor,
  teacher: Tensor | TopKTeacher,
  options: DistillLossOptions | undefined,
  where: string,
): { args: NativeArgs; rowLoss: Float32Array; grad: Tensor<FloatDType> | undefined } {
  checkTensor(student, where, 'student', FLOAT_DTYPES);
  if (student.shape.length === 0) fail(where, 'ERR_SHAPE', 'student must be [N, V] logits (or [..., V]), got a scalar');
  const cols = student.shape[student.shape.length - 1] as number;
  const rows = student.shape.slice(0, -1).reduce((x, y) => x * y, 1);
  if (cols === 0 && rows > 0) fail(where, 'ERR_SHAPE', `student is [${student.shape.join(', ')}]: the vocabulary dimension must be at least 1`);
  if (!Number.isSafeInteger(rows * cols) || rows > INT32_MAX) fail(where, 'ERR_SHAPE', 'student is too large');
  const o = checkOptions(options, where, OPTIONS) as DistillLossOptions;

  const inputs: ArrayBufferView[] = [student.data];
  const args: NativeArgs = { student: student.data, studentDtype: dtypeCode(student.dtype), rows, cols };
  let topk = false;
  if (teacher instanceof Tensor) {
    checkTensor(teacher, where, 'teacher', FLOAT_DTYPES);
    if (!sameShape(teacher.shape, student.shape)) {
      fail(where, 'ERR_SHAPE', `teacher is [${teacher.shape.join(', ')}] but the student is [${student.shape.join(', ')}]`);
    }
    args.teacher = teacher.data;
    args.teacherDtype = dtypeCode(teacher.dtype);
    inputs.push(teacher.data);
  } else if (typeof teacher === 'object' && teacher !== null && 'indices' in teacher && 'logprobs' in teacher) {
    topk = true;
    const idx = topkPart(teacher.indices, Int32Array, 'i32', rows, where, 'teacher.indices');
    const lp = topkPart(teacher.logprobs, Float32Array, 'f32', rows, where, 'teacher.logprobs');
    if (idx.data.length !== lp.data.length) {
      fail(where, 'ERR_SHAPE', `teacher.indices holds ${idx.data.length} values but teacher.logprobs ${lp.data.length}`);
    }
    const k = idx.k ?? lp.k ?? 1;
    if (rows > 0 && (k < 1 || k > cols)) fail(where, 'ERR_SHAPE', `a top-k teacher needs 1 <= k <= V = ${cols}; got k = ${k}`);
    args.teacher = null;
    args.topkIndices = idx.data;
    args.topkLogprobs = lp.data;
    args.k = k;
    inputs.push(idx.data, lp.data);
  } else {
    fail(where, 'ERR_VALUE', 'teacher must be a Tensor of logits or a top-k teacher { indices, logprobs }');
  }

  const temperature = number(o.temperature, 1, (v) => v > 0 && Number.isFinite(v), where, 'temperature', 'a finite number > 0');
  const alpha = number(o.alpha, 0.5, (v) => v >= 0 && v <= 1, where, 'alpha', 'in [0, 1]');
  const beta = number(o.beta, 0.5, (v) => v > 0 && v < 1, where, 'beta', 'in (0, 1)');
  const ignoreIndex = number(o.ignoreIndex, -100, (v) => Number.isInteger(v) && v >= INT32_MIN && v <= INT32_MAX, where, 'ignoreIndex', 'an int32 integer');
  const divergence = pick(DIVERGENCES, o.divergence, 'forward-kl', where, 'divergence');
  if (topk && divergence !== DIVERGENCES['forward-kl']) fail(where, 'ERR_VALUE', `a top-k teacher supports divergence 'forward-kl' only, got '${String(o.divergence)}'`);
  const reduction = pick(REDUCTIONS, o.reduction, 'mean', where, 'reduction');
  const kernel = kernelCode(o.kernel, where);
  const threads = threadCount(o.threads, where);

  let labels: Int32Array | null = null;
  if (o.labels !== undefined && o.labels !== null) {
    labels = labelArray(o.labels, rows, where);
    inputs.push(labels);
  } else if (alpha < 1) {
    fail(where, 'ERR_VALUE', `options.labels is required when alpha < 1 (the cross-entropy term needs them); alpha is ${alpha}`);
  }

  let outGrad: unknown;
  let outRowLoss: unknown;
  if (o.out !== undefined) {
    if (typeof o.out !== 'object' || o.out === null || o.out instanceof Tensor || ArrayBuffer.isView(o.out)) fail(where, 'ERR_VALUE', 'options.out must be an object { rowLoss?, grad? }');
    ({ grad: outGrad, rowLoss: outRowLoss } = o.out);
    if (outGrad !== undefined && o.grad !== undefined && o.grad !== true) {
      fail(where, 'ERR_VALUE', o.grad === false ? 'options.out.grad is given but options.grad is false (no gradient)' : 'options.grad and options.out.grad both name a gradient buffer; give one');
    }
  }
  let grad: Tensor<FloatDType> | undefined;
  let gradFresh = false;
  const g = outGrad ?? o.grad ?? true;
  const gradName = outGrad !== undefined ? 'options.out.grad' : 'options.grad';
  const parts: NamedViews = {};
  if (g instanceof Tensor) {
    checkOutTensor(g, where, gradName, [student.dtype], student.shape);
    // In place: the very memory of the student (the kernel reads each row before writing it).
    if (!sameView(g.data, student.data)) parts[gradName] = g.data;
    grad = g as Tensor<FloatDType>;
  } else if (g === true) {
    // Every element is written by the kernel (native tests check it).
    grad = Tensor.uninitialized(student.shape, student.dtype as FloatDType);
    gradFresh = true;
  } else if (g !== false) {
    fail(where, 'ERR_VALUE', `${gradName} must be ${outGrad !== undefined ? 'a Tensor' : 'true, false or a Tensor'}, got ${String(g)}`);
  }
  let rowLoss: Float32Array;
  if (outRowLoss !== undefined) {
    if (!(outRowLoss instanceof Float32Array)) fail(where, 'ERR_VALUE', 'options.out.rowLoss must be a Float32Array');
    if (outRowLoss.length !== rows) fail(where, 'ERR_SHAPE', `options.out.rowLoss has ${outRowLoss.length} values; the student has ${rows} rows`);
    rowLoss = outRowLoss;
    parts['options.out.rowLoss'] = rowLoss;
  } else {
    rowLoss = uninitializedArray(Float32Array, rows);
  }
  const inputNames = ['the student (in place needs the very same memory: pass the student tensor)', topk ? 'the top-k teacher indices' : 'the teacher', 'the top-k teacher log-probabilities'];
  const named: NamedViews = {};
  inputs.forEach((view, i) => (named[view === labels ? 'options.labels' : (inputNames[i] as string)] = view));
  checkOutMemory(parts, named, where);

  Object.assign(args, {
    labels,
    ignoreIndex,
    temperature,
    alpha,
    beta,
    divergence,
    reduction,
    kernel,
    threads,
    grad: grad?.data ?? null,
    gradFresh,
    rowLoss,
    // Outputs made for this call (native/addon/job.h: neither marked nor copied).
    fresh: [...(outRowLoss === undefined ? [rowLoss] : []), ...(gradFresh && grad ? [grad.data] : [])],
  });
  return { args, rowLoss, grad };
}

function result(loss: number, rowLoss: Float32Array, grad: Tensor<FloatDType> | undefined): DistillLossResult {
  return grad === undefined ? { loss, rowLoss } : { loss, rowLoss, grad };
}

/**
 * The knowledge-distillation loss of `student` logits [N, V] against a
 * teacher (logits [N, V], or its top-k log-probabilities), and its gradient
 * with respect to the student, in one pass on the thread pool:
 *
 *   loss_row = alpha·T²·D(p_teacher, q_student) + (1 − alpha)·CE(label, softmax(student))
 *
 * with q = softmax(student/T), p = softmax(teacher/T). Inputs f32, f16 or
 * bf16 (teacher and student independently); arithmetic in f32 with sums in
 * double; the gradient in the student's dtype.
 */
export async function distillLoss(student: Tensor, teacher: Tensor | TopKTeacher, options?: DistillLossOptions): Promise<DistillLossResult> {
  const { args, rowLoss, grad } = planDistill(student, teacher, options, 'distillLoss');
  const loss = await callAsync('distillLoss', () => binding.distillLoss(args, true));
  return result(loss, rowLoss, grad);
}

/** Synchronous distillLoss: blocks the calling thread; for small tensors and scripts. */
export function distillLossSync(student: Tensor, teacher: Tensor | TopKTeacher, options?: DistillLossOptions): DistillLossResult {
  const { args, rowLoss, grad } = planDistill(student, teacher, options, 'distillLossSync');
  const loss = callSync('distillLossSync', () => binding.distillLoss(args, false));
  return result(loss, rowLoss, grad);
}
