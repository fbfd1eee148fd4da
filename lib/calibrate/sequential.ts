// The sequential (layer-by-layer) calibration pass, GPTQ's sequential mode,
// for models larger than memory: the calibration set runs through block i
// alone (its weights read from the file, nothing else of the model held),
// block i's input statistics are collected, a callback may replace block
// i's weights (quantize it), and the outputs of block i as it now is feed
// block i+1. Peak memory: one block's weights (as stored, plus replacements)
// + its inputs' Hessians when asked + the hidden states of the calibration
// set (twice while a callback's replacement runs: the block's inputs are
// kept to run them again) + the embedding while block 0 runs; not the
// model's size.
import { fail } from '../errors';
import { ModelBlock, type ActivationSite, type BlockWeight, type LoadModelOptions } from '../model/model';
import { planModel, type ModelPlan } from '../model/load';
import { checkOptions } from '../options';
import { ActivationStatsCollector, type ActivationStats, type LayerInputStats } from './stats';

export interface SequentialBlock {
  /** Block index. */
  layer: number;
  /** Blocks of the model. */
  blocks: number;
  /** The statistics of this block's linear inputs (with Hessians where asked), on the outputs of the blocks before it as they were replaced. */
  stats: ActivationStats;
  /** The model's load plan (tensor names, shapes, formats; the weights are read from plan.files). */
  plan: ModelPlan;
}

export interface CalibrateSequentialOptions {
  /** Hessians Σ xᵀx of the inputs (all, none, or those of weights the function accepts). Handed to onBlock, then dropped. Default false. */
  hessian?: boolean | ((weightName: string) => boolean);
  /**
   * Called once per block, in order, after its statistics are collected.
   * Returning weights (tensor names as stored → Tensor or QuantizedTensor)
   * replaces them for the rest of the pass: the calibration set runs
   * through the block again with them, and those outputs feed the next block.
   */
  onBlock?: (block: SequentialBlock) => void | ReadonlyMap<string, BlockWeight> | Promise<void | ReadonlyMap<string, BlockWeight>>;
  signal?: AbortSignal;
  onProgress?: (p: { block: number; blocks: number; chunk: number; chunks: number }) => void;
  /** Runtime options of each block (threads, kernel, activations); the context is the longest chunk. */
  load?: Pick<LoadModelOptions, 'threads' | 'kernel' | 'activations' | 'sparse' | 'batchSize'>;
  /** Folder for the replacement weights' short-lived file. Default os.tmpdir(). */
  tempDir?: string;
}

const BLOCK_SITES: readonly ActivationSite[] = ['attn_in', 'attn_out', 'ffn_in', 'ffn_down'];

/**
 * Collects the statistics of every block's linear inputs over `chunks`
 * (calibrationChunks' output, each from position 0) one block at a time
 * (see the module comment). Returns the statistics of every block, without
 * Hessians (each block's go to onBlock). The output head's input is not
 * collected (llama-imatrix's default). Without replacements the result is
 * calibrate()'s on the whole model, bit for bit.
 */
export async function calibrateSequential(source: string | ModelPlan, chunks: readonly ArrayLike<number>[], options: CalibrateSequentialOptions = {}): Promise<ActivationStats> {
  const where = 'calibrateSequential';
  const o = checkOptions(options, where, ['hessian', 'onBlock', 'signal', 'onProgress', 'load', 'tempDir']) as CalibrateSequentialOptions;
  if (o.onBlock !== undefined && typeof o.onBlock !== 'function') fail(where, 'ERR_VALUE', 'options.onBlock must be a function');
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') fail(where, 'ERR_VALUE', 'options.onProgress must be a function');
  if (!Array.isArray(chunks) || chunks.length === 0) fail(where, 'ERR_VALUE', 'chunks must be a non-empty array of token arrays (calibrationChunks)');
  const plan = typeof source === 'string' ? await planModel(source) : source;
  if (typeof plan !== 'object' || plan === null || !Array.isArray(plan.tensors)) fail(where, 'ERR_VALUE', 'source must be a model path or a load plan (planModel)');
  const h = plan.hparams;
  // Every chunk is checked before the first block loads.
  const ids = chunks.map((c, i) => {
    if (c === null || typeof c !== 'object' || typeof c.length !== 'number' || c.length === 0) fail(where, 'ERR_VALUE', `chunk ${i} must be a non-empty array of token ids`);
    if (c.length > h.contextLength) fail(where, 'ERR_VALUE', `chunk ${i} has ${c.length} tokens, more than the model's context of ${h.contextLength}`);
    const t = Int32Array.from(c);
    for (let j = 0; j < t.length; j++) if (!(t[j] === c[j] && (t[j] as number) >= 0 && (t[j] as number) < h.vocabSize)) fail(where, 'ERR_VALUE', `chunk ${i}: token ${j} is ${String(c[j])}, outside the vocabulary (0..${h.vocabSize - 1})`);
    return t;
  });
  const contextSize = Math.max(...ids.map((c) => c.length));
  const signal = o.signal;
  const blockOptions = { ...(o.load ?? {}), contextSize, ...(signal ? { signal } : {}), ...(o.tempDir !== undefined ? { tempDir: o.tempDir } : {}) };
  const result: ActivationStats = new Map();
  let hidden: (Float32Array | undefined)[] = ids.map(() => undefined);
  const L = h.blockCount;
  for (let l = 0; l < L; l++) {
    signal?.throwIfAborted();
    const collector = new ActivationStatsCollector(o.hessian !== undefined ? { hessian: o.hessian } : {});
    const inputOf = (c: number): { tokens: Int32Array } | { hidden: Float32Array } => (l === 0 ? { tokens: ids[c] as Int32Array } : { hidden: hidden[c] as Float32Array });
    const outs: Float32Array[] = [];
    const block = await ModelBlock.load(plan, l, { ...blockOptions, embedding: l === 0 });
    try {
      for (let c = 0; c < ids.length; c++) {
        const out = await block.run(inputOf(c), { activationSites: BLOCK_SITES, onActivation: (b) => collector.add(b), ...(signal ? { signal } : {}) });
        // Without a callback nothing runs the block again: its inputs go now.
        if (o.onBlock === undefined) hidden[c] = out;
        else outs.push(out);
        o.onProgress?.({ block: l + 1, blocks: L, chunk: c + 1, chunks: ids.length });
      }
    } finally {
      block.dispose();
    }
    const stats = collector.stats();
    const replace = o.onBlock ? await o.onBlock({ layer: l, blocks: L, stats, plan }) : undefined;
    if (replace !== undefined && replace !== null && !(replace instanceof Map)) fail(where, 'ERR_VALUE', `onBlock (block ${l}) must return nothing or a Map of tensor names to weights`);
    if (replace instanceof Map && replace.size > 0) {
      outs.length = 0;
      const again = await ModelBlock.load(plan, l, { ...blockOptions, embedding: l === 0, replace });
      try {
        for (let c = 0; c < ids.length; c++) outs.push(await again.run(inputOf(c), signal ? { signal } : {}));
      } finally {
        again.dispose();
      }
    }
    if (o.onBlock !== undefined) hidden = outs;
    // The block's statistics stay, its Hessians go (memory stays one block's).
    const light = new Map<LayerInputStats, LayerInputStats>();
    for (const [name, s] of stats) {
      let t = light.get(s);
      if (t === undefined) {
        const { hessian: _dropped, ...rest } = s;
        t = rest;
        light.set(s, t);
      }
      result.set(name, t);
    }
  }
  return result;
}
