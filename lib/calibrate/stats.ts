// In-memory activation statistics of every linear layer's input: what
// calibration collects for the activation-aware methods. Per input column
// Σx² (llama.cpp imatrix's in_sum2: the K-quant importance) and Σ|x| (AWQ,
// Wanda, ASVD), and optionally the input Hessian H = Σ xᵀx (GPTQ, SVD-LLM
// whitening). The sums run natively (native/core/calib/stats.cc): columns
// in f64, H in f32 on the lowrank room's GEMM, blocked per batch (each
// batch's XᵀX is one fma chain over its rows, then added to H).
import { fail } from '../errors';
import { binding, callAsync, callSync, type NativeArgs } from '../native';
import { checkOptions, kernelCode, threadCount, type Kernel } from '../options';
import type { ActivationBatch } from '../model/model';

/** The statistics of one linear layer input (shared by every weight reading it). */
export interface LayerInputStats {
  /** Input size: the weights' columns. */
  width: number;
  /** Input rows (tokens) summed. */
  rows: number;
  /** Σx² per column (llama.cpp imatrix's in_sum2; divide by rows for the mean). */
  sumSquares: Float32Array;
  /** Σ|x| per column. */
  sumAbs: Float32Array;
  /** Σ xᵀx, width × width row-major, f32 (blocked per batch, see the module comment); when collected. */
  hessian?: Float32Array;
  /** The weights (tensor names as stored) that read this input. */
  weights: readonly string[];
}

/** Weight tensor name (as stored) → the statistics of its input. Weights sharing one input share one object. */
export type ActivationStats = Map<string, LayerInputStats>;

export interface ActivationStatsCollectorOptions {
  /** Collect the Hessian Σ xᵀx: for every input, none (default), or the inputs of weights the function accepts (an input is shared: one accepted weight is enough). */
  hessian?: boolean | ((weightName: string) => boolean);
  /** The GEMM's kernel: 'auto', 'reference', 'avx2', 'avx512'. */
  kernel?: Kernel;
  threads?: number;
}

interface Accumulator {
  key: string;
  width: number;
  rows: number;
  weights: string[];
  sumSquares: Float64Array;
  sumAbs: Float64Array;
  hessian: Float32Array | undefined;
}

const WHERE = 'ActivationStatsCollector';
/** Rows of H per GEMM in the native sum (kHessianBlockRows): the scratch is that many rows. */
const HESSIAN_BLOCK_ROWS = 256;

/**
 * Sums activation statistics over batches of linear-layer inputs.
 * `add` is usable as Model.forward's `onActivation` (it returns a promise the
 * forward pass waits for; the work runs on the libuv pool); `addSync` blocks.
 *
 * ```ts
 * const c = new ActivationStatsCollector({ hessian: true });
 * await model.forward(tokens, { logits: 'none', onActivation: (b) => c.add(b) });
 * const stats = c.stats();
 * ```
 */
export class ActivationStatsCollector {
  private readonly wantHessian: (weightName: string) => boolean;
  private readonly kernel: number;
  private readonly threads: number;
  private readonly byKey = new Map<string, Accumulator>();
  private readonly byWeight = new Map<string, Accumulator>();
  private scratch = new Float32Array(0);
  private tail: Promise<unknown> = Promise.resolve();
  private pending = 0;

  constructor(options: ActivationStatsCollectorOptions = {}) {
    const o = checkOptions(options, WHERE, ['hessian', 'kernel', 'threads']) as ActivationStatsCollectorOptions;
    const h = o.hessian ?? false;
    if (typeof h === 'boolean') this.wantHessian = () => h;
    else if (typeof h === 'function') this.wantHessian = h;
    else fail(WHERE, 'ERR_VALUE', `options.hessian must be a boolean or a function of the weight name, got ${String(h)}`);
    this.kernel = kernelCode(o.kernel, WHERE);
    if (o.kernel === 'cuda') fail(WHERE, 'ERR_UNSUPPORTED', "activation statistics run on the CPU; options.kernel 'cuda' does not apply");
    this.threads = threadCount(o.threads, WHERE);
  }

  /** Adds a batch on the thread pool; batches queue behind each other. Usable as Model.forward's onActivation. */
  add(batch: ActivationBatch): Promise<void> {
    const { args, acc } = this.plan(batch, 'ActivationStatsCollector.add');
    this.pending++;
    const run = async (): Promise<void> => {
      try {
        this.fillScratch(args, acc);
        await callAsync('ActivationStatsCollector.add', () => binding.activationStats(args, true));
        acc.rows += batch.rows;
      } finally {
        this.pending--;
      }
    };
    const p = this.tail.then(run, run);
    this.tail = p.catch(() => undefined);
    return p;
  }

  /** add() on the calling thread. */
  addSync(batch: ActivationBatch): void {
    const where = 'ActivationStatsCollector.addSync';
    if (this.pending > 0) fail(where, 'ERR_VALUE', 'add() calls are still running; await them first');
    const { args, acc } = this.plan(batch, where);
    this.fillScratch(args, acc);
    callSync(where, () => binding.activationStats(args, false));
    acc.rows += batch.rows;
  }

  /**
   * The statistics so far, keyed by weight name. Σx² and Σ|x| are f32
   * copies of the f64 sums; `hessian` is the collector's own array (later
   * add() calls keep adding to it).
   */
  stats(): ActivationStats {
    if (this.pending > 0) fail('ActivationStatsCollector.stats', 'ERR_VALUE', 'add() calls are still running; await them first');
    const out: ActivationStats = new Map();
    for (const acc of this.byKey.values()) {
      const s: LayerInputStats = {
        width: acc.width,
        rows: acc.rows,
        sumSquares: Float32Array.from(acc.sumSquares),
        sumAbs: Float32Array.from(acc.sumAbs),
        weights: Object.freeze([...acc.weights]),
        ...(acc.hessian ? { hessian: acc.hessian } : {}),
      };
      for (const w of acc.weights) out.set(w, s);
    }
    return out;
  }

  /** Validates a batch and finds (or makes) its accumulator. */
  private plan(batch: ActivationBatch, where: string): { args: NativeArgs; acc: Accumulator } {
    if (typeof batch !== 'object' || batch === null) fail(where, 'ERR_VALUE', 'batch must be an ActivationBatch object');
    const { rows, width, data, weights } = batch;
    if (!Number.isSafeInteger(rows) || rows < 0) fail(where, 'ERR_VALUE', `batch.rows must be an integer >= 0, got ${String(rows)}`);
    if (!Number.isSafeInteger(width) || width < 1) fail(where, 'ERR_VALUE', `batch.width must be an integer >= 1, got ${String(width)}`);
    if (!(data instanceof Float32Array)) fail(where, 'ERR_VALUE', 'batch.data must be a Float32Array');
    if (data.length !== rows * width) fail(where, 'ERR_SHAPE', `batch.data has ${data.length} values; rows × width is ${rows} × ${width} = ${rows * width}`);
    if (!Array.isArray(weights) || weights.length === 0 || !weights.every((w) => typeof w === 'string')) {
      fail(where, 'ERR_VALUE', 'batch.weights must be a non-empty array of tensor names');
    }
    const key = weights.join('\n');
    let acc = this.byKey.get(key);
    if (acc === undefined) {
      for (const w of weights) {
        const other = this.byWeight.get(w);
        if (other !== undefined) fail(where, 'ERR_VALUE', `weight ${w} was seen with input group [${other.weights.join(', ')}], now with [${weights.join(', ')}]`);
      }
      acc = {
        key,
        width,
        rows: 0,
        weights: [...weights],
        sumSquares: new Float64Array(width),
        sumAbs: new Float64Array(width),
        hessian: weights.some((w) => this.wantHessian(w)) ? new Float32Array(width * width) : undefined,
      };
      this.byKey.set(key, acc);
      for (const w of weights) this.byWeight.set(w, acc);
    } else if (acc.width !== width) {
      fail(where, 'ERR_SHAPE', `the input of ${weights.join(', ')} was ${acc.width} wide, this batch is ${width} wide`);
    }
    const args: NativeArgs = {
      x: data,
      rows,
      width,
      sumSquares: acc.sumSquares,
      sumAbs: acc.sumAbs,
      hessian: acc.hessian ?? null,
      scratch: null,
      kernel: this.kernel,
      threads: this.threads,
    };
    return { args, acc };
  }

  /** The shared GEMM scratch (min(256, width) × width floats: a block row of H, native/core/calib/stats.h), grown when needed; set right before the call (calls are serial). */
  private fillScratch(args: NativeArgs, acc: Accumulator): void {
    if (acc.hessian === undefined) return;
    const n = Math.min(HESSIAN_BLOCK_ROWS, acc.width) * acc.width;
    if (this.scratch.length < n) this.scratch = new Float32Array(n);
    args.scratch = this.scratch.subarray(0, n);
  }
}
