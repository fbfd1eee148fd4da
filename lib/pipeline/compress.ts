// compressModel: model file(s) in, model file(s) out, one tensor at a time.
//
// Each tensor goes through read -> compress -> write. Reads run one after
// another (files are read front to back), compression runs on the thread
// pool (the async API) one tensor at a time with every thread (two tensors
// compressing at once would only split the same cores, and would hold libuv
// threads the next read and write need), and writes run one after another
// in plan order; the three overlap across tensors. A tensor enters the pipeline only when its
// bytes (input + output buffers) fit under `memoryLimit` next to the tensors
// already in it, so the tensor buffers held at any moment stay under
// max(memoryLimit, the largest single tensor's input + output). Buffers are
// reused through a pool, which is what that accounting counts.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { SlimTensorError } from '../errors';
import {
  encodeSparse24,
  modulePrefix,
  PACK_QUANTIZED,
  planSparse24,
  quantizationConfig,
  schemeKey,
  sparsityConfig,
  schemeOfOptions,
  sortKeysDeep,
  type CTGroup,
} from '../formats/compressed-tensors';
import { quoteName, type GGUFMetadataEntry } from '../formats/gguf-header';
import { GGUF_FILE_TYPES, GGUF_QUANTIZATION_VERSION, GGUFWriter, ggufTensorBytes, removeMetadata, setMetadata, type GGUFPlannedTensor } from '../formats/gguf-writer';
import { ggmlTypeByName, type GGMLTypeName } from '../formats/gguf-types';
import { imatrixWeights, readImatrix, type ImatrixEntry, type ImportanceMatrix } from '../formats/imatrix';
import { DTYPE_TO_SAFETENSORS, plannedBytes, SAFETENSORS_INDEX, ShardedSafetensorsWriter, type PlannedTensor } from '../formats/safetensors';
import { lowRank, matmul, rankForRatio } from '../lowrank';
import { addErrorSums, dequantize, errorFromSums, GGML_QUANT_FORMATS, quantizationError, quantize, quantizeMeasured, QuantizedTensor, type FloatDType, type QuantizeOptions } from '../quantize';
import type { ErrorSums } from '../native';
import { compress24, decompress24, prune, Sparse24Tensor, type SparsityScore } from '../sparsity';
import { dtypeSize, Tensor } from '../tensor';
import { cast } from '../cast';
import { BufferPool, Gate, poolSize } from './memory';
import { sizeOnDisk, stageOutput, TEMP_TAG } from './output';
import { GGUF_MIXES, llamaQuantizeOrder, mixModelOf, planMix } from './gguf-mix';
import { checkTarget, describeAction, planTensor, resolveRecipe, TARGETS, type CalibratedMethod, type GptqSettings, type ImportanceSource, type OutputFormat, type CalibrationSpec, type PlanContext, type Recipe, type ResolvedRecipe, type Target, type TensorAction, type TensorPlan } from './recipe';
import { modelModules, planModules, type ModelModules, type ModulePlan } from './linear-modules';
import { SUPPORTED_GGUF_ARCHITECTURES, SUPPORTED_HF_CLASSES } from '../model/architectures';
import { hfModelAsGguf } from '../convert/hf-model';
import { floatDtypeOf, openModel, readConfigJson, viewStored, type ModelSource, type SourceTensor } from './source';
import { denseError } from './error';
import { applyTensorScale, awqFold, awqGroups, awqSearch, type AwqSkipped, type TensorScale } from '../calibrate/awq';
import type { ActivationStats, LayerInputStats } from '../calibrate/stats';
import { gptq } from '../gptq';
import { pipelineStats, statsImportance, type CalibrationRecord, type SequentialCalibration } from './calibration';
import { calibrateSequential } from '../calibrate/sequential';
import { isBlockLinear } from '../model/load';
import type { BlockWeight } from '../model/model';

export interface CompressOptions {
  /** A GGUF file, a .safetensors file or a Hugging Face folder. */
  input: string;
  /** The GGUF file or folder to write. */
  output: string;
  /** A Recipe, a preset name ('q4_0', 'w4a16', ...) or a recipe's JSON text. */
  recipe: Recipe | string;
  /** Threads per quantize call (default: setThreads / all cores). */
  threads?: number;
  /** Called after each tensor is written (and once at the start). */
  onProgress?: (p: CompressProgress) => void;
  /** Aborting stops the run; nothing is left at the output. Rejects with signal.reason. */
  signal?: AbortSignal;
  /** Replace an existing output. Default false (ERR_VALUE). */
  overwrite?: boolean;
  /** Bytes of tensor buffers the pipeline may hold (a larger single tensor still runs, alone). Default 1 GiB. */
  memoryLimit?: number;
  /** Tensors (or bands of a large tensor's rows) in flight at once (reading, compressing, writing). Default 4. */
  maxInFlight?: number;
  /**
   * Input bytes per band when a large tensor is quantized to a GGML format
   * in bands of rows (GGUF to GGUF, plain quantize rules); 0 quantizes every
   * tensor whole. Default BAND_BYTES (8 MiB). The output is the same bytes
   * either way.
   */
  bandBytes?: number;
  /** Measure each quantized tensor's error against its original (one more pass). Default false. */
  measureError?: boolean;
  /** Output format; overrides the recipe's. */
  format?: OutputFormat;
  /** compressed-tensors outputs: the consumer they are written for ('vllm': Marlin's rules; 'transformers'); overrides the recipe's. */
  target?: Target;
  /** safetensors outputs: largest shard in bytes; overrides the recipe's. */
  maxShardBytes?: number;
  /**
   * Goes into the temporary output's name (`.<output>.slimtensor-<tag>-<random>.tmp`;
   * letters, digits, _), so a later run can remove what a killed one left
   * (removeTemps in ./output). Default: the process id.
   */
  tempTag?: string;
  /**
   * llama.cpp's importance matrix (a .dat or GGUF imatrix file, or one read
   * with readImatrix) for every quantize rule that does not name its own:
   * the weights of llama.cpp's importance-weighted quantizers, as
   * `llama-quantize --imatrix`. Tensors it does not cover are quantized
   * without it and listed in the report.
   */
  imatrix?: string | ImportanceMatrix;
  /**
   * Calibration data (a text or token file, ctx, chunks) over the recipe's
   * own `calibration`: the model is run over it and its linear-layer input
   * statistics feed the activation-aware rules — quantize weighted by the
   * mean x² per column (as an imatrix, unless `imatrix` is given), prune by
   * Wanda scores, lowrank whitened (SVD-LLM with the input Hessian, or ASVD).
   */
  calibration?: CalibrationSpec;
  /** Statistics already collected (calibrate()), by tensor name, instead of a calibration run. */
  activationStats?: ActivationStats;
  /** Called after each calibration chunk. */
  onCalibrationProgress?: (p: { chunk: number; chunks: number; tokens: number }) => void;
  /**
   * Factors applied to tensors as they are read, before the recipe's method
   * (awqFold()'s output: AWQ scales folded into norms and linears). An awq
   * rule computes its own and multiplies them with these.
   */
  scaling?: ReadonlyMap<string, TensorScale>;
}

export interface CompressProgress {
  phase: 'start' | 'tensor' | 'done';
  /** The tensor just written ('tensor' phase). */
  tensor?: string;
  /** Tensors written so far, of `count`. */
  index: number;
  count: number;
  /** Input bytes of the tensors written so far, of `totalBytes`. */
  bytesDone: number;
  totalBytes: number;
  elapsedMs: number;
}

export interface TensorRecord {
  name: string;
  shape: readonly number[];
  /** Stored type in the input. */
  from: string;
  /** What it became: 'Q4_0', 'int4 g128 sym', 'F16', or the stored type when kept. */
  to: string;
  method: 'quantize' | 'keep' | 'convert' | 'lowrank' | 'prune';
  /** The rule that decided (undefined: none matched). */
  rule: string | undefined;
  /** Why it was kept or converted. */
  reason?: string;
  fallback?: { from: string; to: string; reason: string };
  bytesIn: number;
  bytesOut: number;
  /** Pruned tensors: the pattern, how they are stored, and how many weights were kept of how many. */
  pruned?: { pattern: string; layout: 'sparse-24-bitmask' | 'dense'; kept: number; total: number };
  /** With measureError, for quantized, converted, pruned and low-rank tensors. */
  error?: { rmse: number; maxAbs: number; sqnrDb: number; cosine: number };
  /** Quantized with an imatrix: the file; or 'not covered' when the imatrix has no entry for it. */
  imatrix?: string;
  /**
   * GPTQ: the layer-output error tr(E·H·Eᵀ) on the calibration inputs and
   * round-to-nearest's. AWQ: the chosen α and the error of the tensor's
   * group (the weights sharing its input) against plain rounding's.
   */
  calibrated?: { method: 'gptq' | 'awq'; error: number; rtnError: number; alpha?: number };
}

export interface CompressReport {
  input: { path: string; format: 'gguf' | 'safetensors'; tensors: number; tensorBytes: number; bytes: number };
  output: { path: string; format: OutputFormat; files: string[]; tensorBytes: number; bytes: number };
  recipe: string;
  tensors: TensorRecord[];
  /** Tensors whose rule's setting did not fit and used the next format that fits. */
  fallbacks: { name: string; from: string; to: string; reason: string }[];
  /** Things a user should know (e.g. names kept in GGUF spelling, pruned tensors written dense). */
  warnings: string[];
  /** compressed-tensors outputs: how the Linear layers were chosen and what config.json lists (no ignore when nothing was quantized: no quantization_config is written). */
  modules?: {
    /** config.json `architectures[0]` or GGUF `general.architecture`. */
    architecture: string | undefined;
    /** 'architecture table' (lib/model/architectures.ts) or 'conservative' (names of the usual Linear projections). */
    rule: 'architecture table' | 'conservative';
    target: Target;
    /** quantization_config.ignore (or sparsity_config.ignore). */
    ignore: string[];
    /** Every 2-D tensor written as it was, with the reason. */
    kept: { name: string; shape: number[]; reason: string }[];
  };
  /** awq rules: each group's chosen α and layer-output errors, and the groups not scaled (with why). */
  awq?: { groups: { layer: number; prev: string; linears: string[]; alpha: number; error: number; rtnError: number }[]; skipped: AwqSkipped[] };
  /** When an imatrix was given: its files, and the quantized tensors it covered and did not. */
  imatrix?: { files: string[]; used: number; notCovered: string[] };
  /** When the recipe's rules read calibration statistics: where they came from. */
  calibration?: CalibrationRecord;
  /**
   * Bits per weight: of the quantized tensors (their bytes written × 8 over
   * their weights; undefined when none was quantized), and of the whole
   * output (bytes on disk × 8 over every tensor element of the input).
   */
  bitsPerWeight: { quantized: number | undefined; file: number };
  /** When tensors were pruned: how many, how many weights were zeroed, and the zero fraction of all float weights written. */
  sparsity?: { tensors: number; prunedWeights: number; globalSparsity: number };
  /** input bytes / output bytes (files on disk). */
  ratio: number;
  timeMs: number;
  /** The memory accounting: the limit, and the most tensor-buffer bytes held at once. */
  memory: { limit: number; peakBytes: number; largestTensorBytes: number; allocations: number };
  /** Where the time went, per stage (see StageTimes). */
  stages: StageTimes;
}

/**
 * Milliseconds spent in each stage of the pipeline, summed over tensors.
 * Stages of different tensors overlap (one tensor is read while another is
 * quantized and a third written), so the busy times can add up to more
 * than `timeMs`; the wait times say which stage the others waited for.
 */
export interface StageTimes {
  /** Reading tensor bytes from the input. */
  readMs: number;
  /** Quantizing, converting, pruning or factorizing (on the thread pool). */
  compressMs: number;
  /**
   * Measuring the error (measureError) as a pass of its own: converted and
   * GPTQ-quantized tensors. Plain quantization measures each row right
   * after quantizing it, and pruned and low-rank tensors measure theirs as
   * part of the method: those count in compressMs.
   */
  errorMs: number;
  /** Writing to the output. */
  writeMs: number;
  /** The planner waiting for room (memoryLimit or maxInFlight) to admit the next tensor. */
  admitWaitMs: number;
  /** Compressed tensors waiting for the previous tensor's write (the output is written in order). */
  writeWaitMs: number;
  /** Tensors read and waiting for the previous tensor's compression (one at a time, on every thread). */
  computeWaitMs: number;
}

function noStageTimes(): StageTimes {
  return { readMs: 0, compressMs: 0, errorMs: 0, writeMs: 0, admitWaitMs: 0, writeWaitMs: 0, computeWaitMs: 0 };
}

/** Runs `f` and adds its duration to `times[stage]`. */
async function timed<T>(times: StageTimes, stage: keyof StageTimes, f: () => Promise<T> | T): Promise<T> {
  const t0 = performance.now();
  try {
    return await f();
  } finally {
    times[stage] += performance.now() - t0;
  }
}

const DEFAULT_MEMORY = 1024 ** 3;
const DEFAULT_IN_FLIGHT = 4;
/** Weight files of a Hugging Face folder in other formats: not copied next to the compressed weights. */
const WEIGHT_FILE = /\.(safetensors|bin|pt|pth|ckpt|h5|msgpack|gguf|onnx|npz)$|\.safetensors\.index\.json$|\.bin\.index\.json$/;

interface Entry {
  src: SourceTensor;
  plan: TensorPlan;
  /** The imatrix entry of a quantized tensor (its weights are computed when it is quantized: cols per matrix, matrices = experts of a 3-D weight). */
  importance: ImatrixEntry | undefined;
  /** Output tensors (safetensors names/dtypes, or one GGUF tensor). */
  st: PlannedTensor[];
  gguf: GGUFPlannedTensor | undefined;
  outBytes: number;
  /** Buffer bytes this tensor holds in the pipeline (input + output). */
  need: number;
  record: TensorRecord;
  /** Zero weights among `elements` in what was written (float tensors; counted for sparsity_config's global_sparsity). */
  zeros: number;
  elements: number;
  /** Factors applied to the tensor as read (AWQ folding). */
  scale?: TensorScale;
  /** The input's calibration statistics (gptq). */
  stats?: LayerInputStats;
  /** A tensor quantized in bands: the error sums of the bands so far. */
  bandError?: ErrorSums;
}

type Result =
  | { kind: 'raw'; bytes: Uint8Array }
  | { kind: 'quant'; q: QuantizedTensor }
  /** Several output tensors, in the order of Entry.st; `weight` rebuilds the dense weight they stand for (f32, fresh memory). */
  | { kind: 'parts'; parts: ArrayBufferView[]; weight: () => Promise<Tensor> };

const GGUF_TYPE_OF_DTYPE: Record<FloatDType, GGMLTypeName> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };

function chooseFormat(recipeFormat: OutputFormat | undefined, source: ModelSource, plans: (r: OutputFormat) => boolean): OutputFormat {
  if (recipeFormat !== undefined) return recipeFormat;
  if (source.format === 'gguf') return 'gguf';
  return plans('compressed-tensors') ? 'compressed-tensors' : 'safetensors';
}

function quantBytes(shape: readonly number[], o: QuantizeOptions): { data: number; scales: number; zeros: number; groups: number } {
  const cols = shape[shape.length - 1] as number;
  const rows = shape.reduce((a, d) => a * d, 1) / cols;
  if (GGML_QUANT_FORMATS.includes(o.format)) {
    const t = ggmlTypeByName(o.format.toUpperCase() as GGMLTypeName);
    return { data: rows * (cols / t.blockSize) * t.blockBytes, scales: 0, zeros: 0, groups: 0 };
  }
  const bits = o.format === 'int4' ? 4 : 8;
  const group = o.groupSize === 'channel' ? cols : (o.groupSize as number);
  const groups = cols / group;
  const sd = o.scaleDtype as FloatDType;
  return { data: rows * Math.ceil((cols * bits) / 32) * 4, scales: rows * groups * dtypeSize(sd), zeros: o.symmetric === false ? rows * groups : 0, groups };
}

/** Wraps a failure with the tensor and the step it happened in. */
function tensorError(e: unknown, name: string, step: string): unknown {
  const prefix = `compressModel: tensor ${quoteName(name)} (${step})`;
  if (e instanceof SlimTensorError) return new SlimTensorError(`${prefix}: ${e.message}`, e.code);
  if (e instanceof Error && typeof (e as NodeJS.ErrnoException).code === 'string') {
    const w = new Error(`${prefix}: ${e.message}`, { cause: e }) as NodeJS.ErrnoException;
    w.code = (e as NodeJS.ErrnoException).code as string;
    return w;
  }
  return e;
}

/** Compresses a model file or folder with a recipe, streaming tensor by tensor. */
export async function compressModel(options: CompressOptions): Promise<CompressReport> {
  const started = performance.now();
  const o = options;
  if (typeof o !== 'object' || o === null) throw new SlimTensorError('compressModel: options must be an object', 'ERR_VALUE');
  if (typeof o.input !== 'string' || typeof o.output !== 'string') throw new SlimTensorError('compressModel: input and output must be paths', 'ERR_VALUE');
  const memoryLimit = o.memoryLimit ?? DEFAULT_MEMORY;
  if (!(Number.isSafeInteger(memoryLimit) && memoryLimit > 0)) throw new SlimTensorError('compressModel: memoryLimit must be a positive integer (bytes)', 'ERR_VALUE');
  const maxInFlight = o.maxInFlight ?? DEFAULT_IN_FLIGHT;
  const bandBytes = o.bandBytes ?? BAND_BYTES;
  if (!(Number.isSafeInteger(bandBytes) && bandBytes >= 0)) throw new SlimTensorError('compressModel: bandBytes must be an integer >= 0', 'ERR_VALUE');
  if (!(Number.isSafeInteger(maxInFlight) && maxInFlight >= 1)) throw new SlimTensorError('compressModel: maxInFlight must be an integer >= 1', 'ERR_VALUE');
  if (o.threads !== undefined && !(Number.isInteger(o.threads) && o.threads >= 1 && o.threads <= 1024)) throw new SlimTensorError(`compressModel: threads must be an integer in 1..1024, got ${String(o.threads)}`, 'ERR_VALUE');
  if (o.tempTag !== undefined && !(typeof o.tempTag === 'string' && TEMP_TAG.test(o.tempTag))) throw new SlimTensorError(`compressModel: tempTag must be 1 to 64 letters, digits or _, got ${JSON.stringify(o.tempTag)}`, 'ERR_VALUE');
  const recipe = resolveRecipe(o.recipe);
  if (o.target !== undefined && !TARGETS.includes(o.target)) throw new SlimTensorError(`compressModel: target must be one of ${TARGETS.join(', ')}; got ${JSON.stringify(o.target)}`, 'ERR_VALUE');
  const target = o.target ?? recipe.target;
  if (o.target !== undefined) checkTarget({ ...recipe, target });
  const signal = o.signal;
  signal?.throwIfAborted();

  let source = await openModel(o.input);
  try {
    // ---- plan: every tensor's action and outputs, before anything is written
    let format = o.format ?? recipe.format;
    format = chooseFormat(format, source, (f) =>
      source.tensors.some((t) => {
        try {
          const a = planTensor(planInputOf(t), recipe, f).action;
          return a.kind === 'quantize' || (a.kind === 'prune' && a.sparse24);
        } catch {
          return false;
        }
      }),
    );
    const warnings: string[] = [];
    // A Hugging Face folder becomes what llama.cpp's converter would write
    // (GGUF names, layouts, metadata, tokenizer); the recipe then applies as to a GGUF input.
    const converted = format === 'gguf' && source.format !== 'gguf';
    if (converted) source = await hfModelAsGguf(source);
    if (format !== 'gguf' && source.format === 'gguf') {
      warnings.push(`the ${format} output keeps the GGUF tensor names and layouts (llama.cpp's); Hugging Face loaders such as vLLM expect the model's own names`);
    }
    // The source folder's config.json: the model class, and what compressed-tensors adds quantization_config to.
    let config: Record<string, unknown> | undefined;
    if (source.folder !== undefined) config = await readConfigJson(path.join(source.folder, 'config.json'));
    // Importance matrices: compressModel's and the rules' own files, read once each.
    const imatrices = await loadImatrices(o.imatrix, recipe);
    // Calibration statistics (given, or a run of the model over the calibration data) for the activation-aware rules.
    // Sequential calibration hands each compressed block back to the runtime by the names it loads: not through a conversion, nor under factors it does not apply.
    const sequentialBlocked = converted
      ? 'the Hugging Face folder is converted to GGUF (names and Q/K layouts change), and the compressed blocks are handed back to the runtime by the stored names'
      : o.scaling !== undefined
        ? "the runtime runs the blocks without compressModel's scaling factors"
        : recipe.rules.some((r) => r.method === 'awq')
          ? "awq rules fold scales into the norms, which a block's replacement weights cannot carry"
          : undefined;
    const calibrated = await pipelineStats(recipe, {
      input: o.input,
      tensors: new Map(source.tensors.map((t) => [t.name, t.shape] as const)),
      ggufNames: converted,
      calibration: o.calibration,
      activationStats: o.activationStats,
      hasImatrix: imatrices.global !== undefined || imatrices.byFile.size > 0,
      threads: o.threads,
      signal,
      onProgress: o.onCalibrationProgress,
      memoryLimit,
      sequentialBlocked,
    });
    const stats = calibrated?.kind === 'stats' ? calibrated.stats : undefined;
    const seqRun = calibrated?.kind === 'sequential' ? calibrated.run : undefined;
    const calibrationRecord = calibrated?.kind === 'stats' ? calibrated.record : seqRun?.record;
    // Quantize rules read them as an imatrix: Σx² and the rows counted (llama-imatrix's in_sum2 and counts).
    // A sequential run fills the matrix block by block (its entries are named now: the header counts them).
    const blockStats = seqRun !== undefined ? placeholderStats(seqRun) : undefined;
    if (calibrationRecord !== undefined && imatrices.global === undefined && recipe.rules.some((r) => (r.method === 'quantize' && r.options.importance === undefined) || (r.method === 'gptq' && r.options.mix !== undefined))) {
      imatrices.global = statsImportance((stats ?? blockStats) as ActivationStats, calibrationRecord);
    }
    // (statsImportance's own Map, which the sequential run fills in)
    const liveImatrix = blockStats !== undefined && imatrices.global !== undefined ? (imatrices.global.entries as Map<string, ImatrixEntry>) : undefined;
    // A llama-quantize mix: planned over the whole model, tensors in llama-quantize's order.
    // Sequential: the blocks' rules are planned on placeholders, and prune / lowrank planned again on each block's statistics.
    const ctx: PlanContext = stats !== undefined ? { activationStats: stats } : blockStats !== undefined ? { activationStats: blockStats } : {};
    let tensors = source.tensors;
    if (recipe.mix !== undefined && format === 'gguf' && source.ggufMetadata !== undefined) {
      tensors = llamaQuantizeOrder(source.tensors);
      const mixRule = recipe.rules.find((r) => r.options.mix !== undefined);
      const hasImatrix = imatrixFor(mixRule?.options.importance as ImportanceSource, imatrices) !== undefined;
      ctx.mix = planMix(recipe.mix, tensors, mixModelOf(new Map(source.ggufMetadata.map((e) => [e.key, e.value] as const)), tensors.map((t) => t.name)), hasImatrix);
    }
    const inputs = tensors.map(planInputOf);
    let plans = inputs.map((t) => planTensor(t, { ...recipe, target }, format, ctx));
    let modulePlan: ModulePlan | undefined;
    let modules: ModelModules | undefined;
    if (format === 'compressed-tensors') {
      modules = modelModules(source, config);
      modulePlan = planModules(inputs, plans, modules, target);
      plans = modulePlan.plans;
    }
    let entries = tensors.map((t, i) => planEntry(t, plans[i] as TensorPlan, format, o.measureError === true));
    // Sequential: blocks in order in the output (a source already in that order keeps its order), each
    // block's tensors given their statistics when the calibration reaches it.
    const seq = seqRun !== undefined ? sequentialPlan(seqRun, entries) : undefined;
    if (seq !== undefined) entries = seq.entries;
    const early = seq === undefined ? entries : entries.filter((e) => !seq.layerOf.has(e.src.name));
    const imatrixUse = attachImportance(early, imatrices);
    const awqReport = await attachCalibrated(early, source, stats, o.scaling, o.threads, signal);
    const notCoveredWarning = (): void => {
      if (imatrixUse === undefined || imatrixUse.notCovered.length === 0) return;
      const n = imatrixUse.notCovered;
      warnings.push(`${n.length} quantized tensor${n.length === 1 ? ' is' : 's are'} not in the imatrix and ${n.length === 1 ? 'was' : 'were'} quantized without it: ${n.slice(0, 4).join(', ')}${n.length > 4 ? ', …' : ''}`);
    };
    // (a sequential run knows the block tensors' coverage once it has run)
    if (seq === undefined) notCoveredWarning();
    const ctGroups = new Map<string, CTGroup>();
    let sparse24 = 0;
    let pruned = 0;
    for (const e of entries) {
      const a = e.plan.action;
      if (a.kind === 'prune') pruned++;
      if (format !== 'compressed-tensors') continue;
      if (a.kind === 'prune' && a.sparse24) sparse24++;
      else if (a.kind === 'quantize') {
        const s = schemeOfOptions(a.options);
        const g = ctGroups.get(schemeKey(s)) ?? { scheme: s, modules: [] };
        g.modules.push(modulePrefix(e.src.name));
        ctGroups.set(schemeKey(s), g);
      }
    }
    const ignore = modulePlan?.ignore ?? [];
    if (modules !== undefined && !modules.table) {
      warnings.push(
        `${modules.architecture ?? 'this model'} is not in slimtensor's architecture table (${(source.format === 'gguf' ? SUPPORTED_GGUF_ARCHITECTURES : SUPPORTED_HF_CLASSES).join(', ')}): only Linear projections with the usual names (q_proj, …, down_proj, fc1, fc2, dense…) are compressed, every other 2-D tensor is kept (listed in the report) and listed in ignore unless it is an embedding`,
      );
    }
    if (format === 'compressed-tensors' && ctGroups.size === 0 && sparse24 === 0) {
      warnings.push('nothing was quantized (no tensor is a Linear weight the recipe quantizes): the folder holds the model as it was, and config.json gets no quantization_config');
    }
    if (sparse24 > 0) {
      warnings.push(
        `${sparse24} weight${sparse24 === 1 ? ' is' : 's are'} stored as sparse-24-bitmask, which only older releases read: vLLM before 0.19.1 (Sparse24 removed, vllm#36799), transformers before #46342 with compressed-tensors before #610, and slimtensor; current vLLM and transformers cannot load this folder — the default layout 'dense' loads everywhere`,
      );
    }
    // One line per reason a pruned tensor is written dense.
    const dense = new Map<string, number>();
    for (const e of entries) {
      const a = e.plan.action;
      if (a.kind === 'prune' && a.dense !== undefined) {
        const key = `${a.pattern}\u0000${a.dense.replace(/: the pruned tensor is written dense$/, '')}`;
        dense.set(key, (dense.get(key) ?? 0) + 1);
      }
    }
    for (const [key, n] of dense) {
      const [pattern, why] = key.split('\u0000') as [string, string];
      warnings.push(`${n} pruned tensor${n === 1 ? '' : 's'} (${pattern}) ${n === 1 ? 'is' : 'are'} written dense, the pruned weights stored as zeros (${why}): ${n === 1 ? 'it takes' : 'they take'} as many bytes as before`);
    }
    if (format === 'compressed-tensors' && (ctGroups.size > 0 || sparse24 > 0) && config?.quantization_config !== undefined) {
      throw new SlimTensorError(`compressModel: ${o.input} is already quantized (config.json has quantization_config)`, 'ERR_UNSUPPORTED');
    }

    const staged = await stageOutput(o.output, format === 'gguf' ? 'file' : 'folder', o.input, o.overwrite === true, o.tempTag);
    const pool = new BufferPool(memoryLimit);
    const stages = noStageTimes();
    let files: string[] = [];
    try {
      signal?.throwIfAborted();
      const sink = await createSink(format, staged.tmp, entries, source, o.maxShardBytes ?? recipe.maxShardBytes, recipe, imatrices);
      files = format === 'gguf' ? [path.basename(staged.output)] : sink.files;
      try {
        const ro: RunOptions = { memoryLimit, maxInFlight, bandBytes, threads: o.threads, measureError: o.measureError === true, countZeros: pruned > 0, signal, onProgress: o.onProgress, started, stages };
        if (seq === undefined) await runPipeline(entries, source, sink, pool, ro);
        else {
          await runSequential(seq, ro, (r) => runPipeline(entries, source, sink, pool, r), async (block, l) => {
            // The block's statistics reach its tensors: prune / lowrank planned on them, quantize's imatrix entries, gptq's Hessians.
            for (const e of block) {
              const k = e.plan.action.kind;
              if (k === 'prune' || k === 'lowrank') {
                const again = planTensor(planInputOf(e.src), { ...recipe, target }, format, { ...ctx, activationStats: l.stats });
                if (again.action.kind === k) e.plan = { ...e.plan, action: again.action };
              }
            }
            if (liveImatrix !== undefined) {
              for (const e of block) {
                const s = l.stats.get(e.src.name);
                if (s !== undefined) liveImatrix.set(e.src.name, { cols: s.width, matrices: 1, sums: s.sumSquares, counts: Float32Array.of(s.rows) });
              }
            }
            const use = attachImportance(block, imatrices);
            if (use !== undefined && imatrixUse !== undefined) {
              imatrixUse.used += use.used;
              imatrixUse.notCovered.push(...use.notCovered);
            }
            await attachCalibrated(block, source, l.stats, undefined, o.threads, signal);
          }, o.onCalibrationProgress);
        }
        await sink.finish();
      } catch (e) {
        await sink.abort();
        throw e;
      }
      if (format !== 'gguf') {
        const sparsity = sparse24 > 0 ? sparsityConfig(ignore, globalSparsity(entries)) : undefined;
        files.push(...(await finishFolder(format, staged.tmp, source, config, [...ctGroups.values()], ignore, modulePlan?.mergedShards ?? new Set(), sparsity)));
      }
      signal?.throwIfAborted();
      await staged.commit();
    } catch (e) {
      await staged.discard();
      throw e;
    } finally {
      pool.clear();
    }

    if (seq !== undefined) notCoveredWarning();
    const inputBytes = await sizeOnDisk(o.input).catch(() => 0);
    const outputBytes = await sizeOnDisk(staged.output);
    const records = entries.map((e) => e.record);
    const report: CompressReport = {
      input: { path: o.input, format: source.format, tensors: entries.length, tensorBytes: records.reduce((s, r) => s + r.bytesIn, 0), bytes: inputBytes },
      output: { path: o.output, format, files, tensorBytes: records.reduce((s, r) => s + r.bytesOut, 0), bytes: outputBytes },
      recipe: recipe.name,
      tensors: records,
      fallbacks: records.filter((r) => r.fallback !== undefined).map((r) => ({ name: r.name, ...(r.fallback as { from: string; to: string; reason: string }) })),
      warnings,
      ...(modules !== undefined && modulePlan !== undefined
        ? { modules: { architecture: modules.architecture, rule: modules.table ? ('architecture table' as const) : ('conservative' as const), target, ignore: ctGroups.size > 0 || sparse24 > 0 ? ignore : [], kept: modulePlan.kept } }
        : {}),
      ...(imatrixUse !== undefined ? { imatrix: imatrixUse } : {}),
      ...(awqReport !== undefined ? { awq: awqReport } : {}),
      ...(calibrationRecord !== undefined ? { calibration: calibrationRecord } : {}),
      bitsPerWeight: bitsPerWeight(records, outputBytes),
      ...(pruned > 0
        ? { sparsity: { tensors: pruned, prunedWeights: records.reduce((n, r) => n + (r.pruned === undefined ? 0 : r.pruned.total - r.pruned.kept), 0), globalSparsity: globalSparsity(entries) } }
        : {}),
      ratio: outputBytes === 0 ? 0 : inputBytes / outputBytes,
      timeMs: performance.now() - started,
      memory: { limit: memoryLimit, peakBytes: pool.peak, largestTensorBytes: Math.max(0, ...entries.map((e) => e.need)), allocations: pool.allocations },
      stages,
    };
    o.onProgress?.({ phase: 'done', index: entries.length, count: entries.length, bytesDone: report.input.tensorBytes, totalBytes: report.input.tensorBytes, elapsedMs: report.timeMs });
    return report;
  } finally {
    await source.close();
  }
}

function bitsPerWeight(records: readonly TensorRecord[], fileBytes: number): CompressReport['bitsPerWeight'] {
  let qBytes = 0;
  let qWeights = 0;
  let weights = 0;
  for (const r of records) {
    const n = r.shape.reduce((a, d) => a * d, 1);
    weights += n;
    if (r.method === 'quantize') {
      qBytes += r.bytesOut;
      qWeights += n;
    }
  }
  return { quantized: qWeights === 0 ? undefined : (qBytes * 8) / qWeights, file: weights === 0 ? 0 : (fileBytes * 8) / weights };
}

function planInputOf(t: SourceTensor): { name: string; shape: readonly number[]; floatDtype: FloatDType | undefined; storage: string } {
  return { name: t.name, shape: t.shape, floatDtype: floatDtypeOf(t), storage: t.storage };
}

/** The importance matrices a run uses: compressModel's (`global`) and each rule's own file, by path. */
interface Imatrices {
  global: ImportanceMatrix | undefined;
  byFile: Map<string, ImportanceMatrix>;
}

async function loadImatrices(given: string | ImportanceMatrix | undefined, recipe: ResolvedRecipe): Promise<Imatrices> {
  const byFile = new Map<string, ImportanceMatrix>();
  let global: ImportanceMatrix | undefined;
  if (typeof given === 'string') global = await readImatrix(given);
  else if (given !== undefined) {
    if (typeof given !== 'object' || given === null || !(given.entries instanceof Map)) throw new SlimTensorError('compressModel: imatrix must be a file path or an ImportanceMatrix (readImatrix)', 'ERR_VALUE');
    global = given;
  }
  for (const r of recipe.rules) {
    const src = r.options.importance as ImportanceSource;
    if (src && !byFile.has(src.file)) byFile.set(src.file, await readImatrix(src.file));
  }
  return { global, byFile };
}

/** The matrix a quantize rule's importance source selects. */
function imatrixFor(src: ImportanceSource, m: Imatrices): ImportanceMatrix | undefined {
  if (src === false) return undefined;
  if (src === undefined) return m.global;
  return m.byFile.get(src.file);
}

function imatrixName(m: ImportanceMatrix): string {
  return m.source?.path ?? (m.datasets[0] !== undefined ? `calibration ${m.datasets[0]}` : '(in memory)');
}

/**
 * Gives each quantized tensor its importance weights, as llama-quantize
 * looks them up: by tensor name, [cols × experts] values; a tensor the
 * matrix does not cover is quantized without (reported), a covered one of
 * the wrong size is an error (except the token embedding, which
 * llama-quantize also quantizes without). Q8_0 and conversions use none.
 */
function attachImportance(entries: readonly Entry[], m: Imatrices): CompressReport['imatrix'] {
  if (m.global === undefined && m.byFile.size === 0) return undefined;
  const files = new Set<string>([...(m.global !== undefined ? [m.global] : []), ...m.byFile.values()].map(imatrixName));
  const notCovered: string[] = [];
  let used = 0;
  for (const e of entries) {
    const a = e.plan.action;
    if (a.kind !== 'quantize' || a.options.format === 'q8_0') continue;
    const mat = imatrixFor(a.importance, m);
    if (mat === undefined) continue;
    const entry = mat.entries.get(e.src.name);
    if (entry === undefined) {
      notCovered.push(e.src.name);
      e.record.imatrix = 'not covered';
      continue;
    }
    const shape = e.src.shape;
    const cols = shape[shape.length - 1] as number;
    // a 3-D weight holds one matrix per expert (llama-quantize: ne[0] × ne[2] values)
    const experts = shape.length === 3 ? (shape[0] as number) : 1;
    if (entry.sums.length !== cols * experts) {
      if (e.src.name === 'token_embd.weight') {
        notCovered.push(e.src.name);
        e.record.imatrix = 'not covered';
        continue;
      }
      throw new SlimTensorError(
        `compressModel: tensor ${quoteName(e.src.name)}: the imatrix ${imatrixName(mat)} has ${entry.sums.length} values for it; its shape [${shape.join(', ')}] needs ${cols * experts} (${cols} columns${experts > 1 ? ` × ${experts} experts` : ''}) — an imatrix of another model?`,
        'ERR_SHAPE',
      );
    }
    e.importance = entry;
    e.record.imatrix = imatrixName(mat);
    used++;
  }
  return { files: [...files], used, notCovered };
}

/** A conversion between two types of one size (f16 <-> bf16) overwrites its input, unless the input is still needed to measure the error. */
function convertsInPlace(src: SourceTensor, to: FloatDType, measureError: boolean): boolean {
  return !measureError && dtypeSize(src.dtype as FloatDType) === dtypeSize(to);
}

function planEntry(src: SourceTensor, plan: TensorPlan, format: OutputFormat, measureError: boolean): Entry {
  const a = plan.action;
  let st: PlannedTensor[] = [];
  let gguf: GGUFPlannedTensor | undefined;
  let extra = 0; // buffers beyond the input
  const dense = (dtype: FloatDType | undefined): void => {
    if (format === 'gguf') {
      gguf = { name: src.name, shape: src.shape, type: dtype === undefined ? (src.storage as GGMLTypeName) : GGUF_TYPE_OF_DTYPE[dtype] };
    } else {
      const sd = dtype !== undefined ? DTYPE_TO_SAFETENSORS[dtype] : src.dtype !== undefined ? DTYPE_TO_SAFETENSORS[src.dtype] : src.quant === undefined ? (src.storage as PlannedTensor['dtype']) : undefined;
      if (sd === undefined) {
        throw new SlimTensorError(`compressModel: tensor ${quoteName(src.name)} is stored as ${src.storage} (GGUF blocks), which ${format} cannot hold; quantize from a float model instead`, 'ERR_UNSUPPORTED');
      }
      st = [{ name: src.name, dtype: sd, shape: src.shape }];
    }
  };
  if (a.kind === 'keep') dense(undefined);
  else if (a.kind === 'convert') {
    dense(a.dtype);
    // f16 <-> bf16 converts in place unless the error is measured (compressOne)
    if (!convertsInPlace(src, a.dtype, measureError)) extra = poolSize((src.byteLength / dtypeSize(src.dtype as FloatDType)) * dtypeSize(a.dtype));
  } else if (a.kind === 'quantize') {
    const b = quantBytes(src.shape, a.options);
    extra = poolSize(b.data) + (b.scales > 0 ? poolSize(b.scales) : 0) + (b.zeros > 0 ? poolSize(b.zeros) : 0);
    if (format === 'gguf') gguf = { name: src.name, shape: src.shape, type: a.options.format.toUpperCase() as GGMLTypeName };
    else st = PACK_QUANTIZED.plan(modulePrefix(src.name), src.shape, schemeOfOptions(a.options), a.options.scaleDtype as FloatDType);
  } else if (a.kind === 'prune') {
    const dtype = floatDtypeOf(src) as FloatDType;
    const b = pruneBytes(src.shape, dtype);
    if (a.sparse24) {
      st = planSparse24(modulePrefix(src.name), src.shape, dtype);
      // compress24's values, bitmask and meta (pool buffers passed as its
      // out), and the dense reconstruction when the error is measured
      extra = poolSize(b.values) + poolSize(b.mask) + poolSize(b.meta) + poolSize(b.dense);
    } else {
      dense(undefined);
      // prune's dense copy and mask (pool buffers passed as its out)
      extra = poolSize(b.dense) + poolSize(b.mask);
    }
  } else {
    // Two plain tensors, <name>.lowrank_left [m, r] and <name>.lowrank_right
    // [r, n], in the source's float dtype (W ≈ left · right). The writer
    // needs every shape before the first byte, so the rank must be known
    // now: `rank` or `ratio`, not `energy` (which depends on the spectrum).
    if (format !== 'safetensors') {
      throw new SlimTensorError(`compressModel: tensor ${quoteName(src.name)}: low-rank factors are written as plain safetensors tensors; ${format} output cannot hold them (use a recipe with "format": "safetensors")`, 'ERR_UNSUPPORTED');
    }
    const dtype = floatDtypeOf(src) as FloatDType;
    const rank = lowRankPlanRank(src, a.options);
    const [m, n] = [src.shape[0] as number, src.shape[1] as number];
    const sd = DTYPE_TO_SAFETENSORS[dtype];
    st = [
      { name: `${src.name}.lowrank_left`, dtype: sd, shape: [m, rank] },
      { name: `${src.name}.lowrank_right`, dtype: sd, shape: [rank, n] },
    ];
    // the factors in f32 (pool buffers passed as lowRank's out) and, for
    // 16-bit sources, converted; plus the f32 reconstruction when the error
    // is measured (all from the pool)
    extra = poolSize(m * rank * 4) + poolSize(rank * n * 4) + poolSize(m * n * 4);
    if (dtype !== 'f32') extra += poolSize(m * rank * dtypeSize(dtype)) + poolSize(rank * n * dtypeSize(dtype));
  }
  const outBytes = gguf !== undefined ? ggufTensorBytes(gguf) : st.reduce((s, t) => s + plannedBytes(t), 0);
  const record: TensorRecord = {
    name: src.name,
    shape: src.shape,
    from: src.storage,
    to: describeAction(a, src.storage),
    method: a.kind,
    rule: plan.rule,
    bytesIn: src.byteLength,
    bytesOut: outBytes,
  };
  if (a.kind === 'keep' || a.kind === 'convert') record.reason = a.reason;
  if (a.kind === 'prune') {
    const total = src.shape.reduce((x, d) => x * d, 1);
    record.pruned = { pattern: a.pattern, layout: a.sparse24 ? 'sparse-24-bitmask' : 'dense', kept: (total / a.m) * a.n, total };
    if (a.dense !== undefined) record.reason = a.dense;
  }
  if (plan.fallback !== undefined) record.fallback = plan.fallback;
  return { src, plan, st, gguf, outBytes, need: poolSize(src.byteLength) + extra, record, zeros: 0, elements: 0, importance: undefined };
}

interface Sink {
  files: string[];
  write(e: Entry, r: Result): Promise<void>;
  /** GGUF output (one data tensor per input tensor: quantized tensors can be written in bands). */
  gguf: boolean;
  /** The next band of a tensor written in bands (bandsOf): raw bytes, or (GGUF) quantized blocks. */
  append?(e: Entry, r: Result): Promise<void>;
  finish(): Promise<void>;
  abort(): Promise<void>;
}

async function createSink(
  format: OutputFormat,
  tmp: string,
  entries: readonly Entry[],
  source: ModelSource,
  maxShardBytes: number | undefined,
  recipe: ResolvedRecipe,
  imatrices: Imatrices,
): Promise<Sink> {
  if (format === 'gguf') {
    const base = source.ggufMetadata;
    if (base === undefined) throw new SlimTensorError('compressModel: GGUF output needs a GGUF input or a Hugging Face folder', 'ERR_UNSUPPORTED');
    const tensors = entries.map((e) => e.gguf as GGUFPlannedTensor);
    const imatrix = imatrices.global ?? (imatrices.byFile.size === 1 ? [...imatrices.byFile.values()][0] : undefined);
    const meta = ggufOutputMetadata(base, tensors, recipe, imatrix);
    const w = await GGUFWriter.create(tmp, { entries: meta, tensors });
    const bytesOf = (r: Result): ArrayBufferView => {
      if (r.kind === 'raw') return r.bytes;
      if (r.kind === 'quant') return r.q.data;
      throw new SlimTensorError('compressModel: GGUF output holds one tensor per input tensor (no low-rank factors or sparse parts)', 'ERR_UNSUPPORTED');
    };
    return {
      files: [],
      write: (e, r) => w.write(e.src.name, bytesOf(r)),
      gguf: true,
      append: (e, r) => w.append(e.src.name, bytesOf(r)),
      finish: () => w.close(),
      abort: () => w.abort(),
    };
  }
  const planned = entries.flatMap((e) => e.st);
  const w = await ShardedSafetensorsWriter.create(tmp, planned, { ...(maxShardBytes !== undefined ? { maxShardBytes } : {}), metadata: { format: 'pt' } });
  const files = [...w.files];
  if (w.indexFile !== undefined) files.push(w.indexFile);
  return {
    files,
    write: async (e, r) => {
      if (r.kind === 'raw') await w.write((e.st[0] as PlannedTensor).name, r.bytes);
      else if (r.kind === 'quant') {
        const parts = PACK_QUANTIZED.encode(r.q);
        for (let i = 0; i < e.st.length; i++) await w.write((e.st[i] as PlannedTensor).name, parts[i] as ArrayBufferView);
      } else {
        for (let i = 0; i < e.st.length; i++) await w.write((e.st[i] as PlannedTensor).name, r.parts[i] as ArrayBufferView);
      }
    },
    gguf: false,
    append: async (e, r) => {
      // bands come only from tensors written as they are read (bandsOf)
      if (r.kind !== 'raw') throw new SlimTensorError(`compressModel: tensor ${quoteName(e.src.name)}: only kept tensors are written in bands to ${format}`, 'ERR_INTERNAL');
      await w.append((e.st[0] as PlannedTensor).name, r.bytes);
    },
    finish: () => w.close(),
    abort: () => w.abort(),
  };
}

/** A string as llama-quantize stores a metadata override: at most 127 bytes (cut at a whole character here). */
function overrideString(s: string): string {
  let out = s.split('\u0000')[0] as string;
  while (Buffer.byteLength(out, 'utf8') > 127) out = Array.from(out).slice(0, -1).join('');
  return out;
}

/**
 * The output's metadata: the input's, with general.quantization_version and
 * general.file_type set, and the imatrix it was quantized with described
 * (quantize.imatrix.file / dataset / entries_count / chunks_count, as
 * llama-quantize writes them). A mix writes them as llama-quantize does —
 * moved to the end, in that order, split keys dropped, file_type the mix's
 * llama_ftype — so its header is byte for byte llama-quantize's; other
 * recipes update the keys in place and name the file by its main type.
 */
function ggufOutputMetadata(input: readonly GGUFMetadataEntry[], tensors: readonly GGUFPlannedTensor[], recipe: ResolvedRecipe, imatrix: ImportanceMatrix | undefined): GGUFMetadataEntry[] {
  const where = recipe.mix !== undefined ? 'at end' : 'in place';
  let meta: GGUFMetadataEntry[] = input.slice();
  meta = setMetadata(meta, 'general.quantization_version', 'u32', GGUF_QUANTIZATION_VERSION, where);
  const fileType = recipe.mix !== undefined ? GGUF_MIXES[recipe.mix].fileType : mainFileType(tensors);
  if (fileType !== undefined) meta = setMetadata(meta, 'general.file_type', 'u32', fileType, where);
  if (recipe.mix !== undefined) for (const k of ['split.no', 'split.count', 'split.tensors.count']) meta = removeMetadata(meta, k);
  if (imatrix !== undefined) {
    meta = setMetadata(meta, 'quantize.imatrix.file', 'string', overrideString(imatrixName(imatrix)), where);
    if (imatrix.datasets.length > 0) meta = setMetadata(meta, 'quantize.imatrix.dataset', 'string', overrideString(imatrix.datasets[0] as string), where);
    meta = setMetadata(meta, 'quantize.imatrix.entries_count', 'i32', imatrix.entries.size, where);
    if (imatrix.chunkCount > 0) meta = setMetadata(meta, 'quantize.imatrix.chunks_count', 'i32', imatrix.chunkCount, where);
  }
  return meta;
}

/** general.file_type: the type holding the most weights among matrices (llama.cpp names the file by it). */
function mainFileType(tensors: readonly GGUFPlannedTensor[]): number | undefined {
  const weights = new Map<GGMLTypeName, number>();
  for (const t of tensors) {
    if (t.shape.length < 2) continue;
    weights.set(t.type, (weights.get(t.type) ?? 0) + t.shape.reduce((a, d) => a * d, 1));
  }
  let best: GGMLTypeName | undefined;
  for (const [type, n] of weights) {
    const isQuant = type.startsWith('Q');
    const bestQuant = best?.startsWith('Q') ?? false;
    // A quantized type wins over floats (a "Q4_0 model" keeps some tensors at F32).
    if (best === undefined || (isQuant && !bestQuant) || (isQuant === bestQuant && n > (weights.get(best) as number))) best = type;
  }
  return best === undefined ? undefined : GGUF_FILE_TYPES[best];
}

/** config.json and the source folder's other files (tokenizer, generation config, ...). */
async function finishFolder(
  format: OutputFormat,
  tmp: string,
  source: ModelSource,
  config: Record<string, unknown> | undefined,
  groups: CTGroup[],
  ignore: string[],
  mergedShards: ReadonlySet<string>,
  sparsity: Record<string, unknown> | undefined,
): Promise<string[]> {
  const written: string[] = [];
  let cfg = config;
  // compressed-tensors rewrites the whole config.json with sorted keys.
  if (format === 'compressed-tensors' && groups.length > 0) cfg = sortKeysDeep({ ...(cfg ?? {}), quantization_config: quantizationConfig(groups, ignore, mergedShards) }) as Record<string, unknown>;
  // A sparse-only model: compressed-tensors wrote quant_method and
  // sparsity_config, with no quantization fields (recipes never mix the two).
  if (format === 'compressed-tensors' && sparsity !== undefined) cfg = sortKeysDeep({ ...(cfg ?? {}), quantization_config: { quant_method: 'compressed-tensors', sparsity_config: sparsity } }) as Record<string, unknown>;
  if (cfg !== undefined) {
    await fsp.writeFile(path.join(tmp, 'config.json'), `${JSON.stringify(cfg, null, 2)}\n`);
    written.push('config.json');
  }
  if (source.folder !== undefined) {
    for (const name of await fsp.readdir(source.folder)) {
      if (name === 'config.json' || name === SAFETENSORS_INDEX || WEIGHT_FILE.test(name)) continue;
      await fsp.cp(path.join(source.folder, name), path.join(tmp, name), { recursive: true, dereference: true, errorOnExist: true, force: false });
      written.push(name);
    }
  }
  return written;
}

interface RunOptions {
  memoryLimit: number;
  maxInFlight: number;
  /** Input bytes per band of a large tensor (0: whole tensors). */
  bandBytes: number;
  threads: number | undefined;
  measureError: boolean;
  /** Count the zero weights each tensor is written with (Entry.zeros). */
  countZeros: boolean;
  signal: AbortSignal | undefined;
  onProgress: ((p: CompressProgress) => void) | undefined;
  started: number;
  /** Accumulates the stage times of the run. */
  stages: StageTimes;
  /** Sequential calibration: waits until a tensor's statistics are there (before it is compressed). */
  ready?: (e: Entry) => Promise<void> | undefined;
  /** Sequential calibration: sees each tensor's compressed result (before its buffers go back to the pool). */
  onComputed?: (e: Entry, r: Result) => Promise<void>;
}

/** A promise that never rejects: for ordering steps on earlier ones however they ended. */
function settled(p: Promise<unknown>): Promise<void> {
  return p.then(
    () => undefined,
    () => undefined,
  );
}

/**
 * A band of rows of a large tensor, quantized (or copied, when kept) on its
 * own: its input and output buffers stay small enough to be reused warm
 * (and mostly cached) from band to band, and one band's output is written
 * while the next is read and quantized, instead of the tensor going
 * through each stage whole. GGML formats quantize rows independently, so
 * the bands' bytes are the tensor's.
 */
interface Band {
  rows: number;
  /** The band's stored bytes in the tensor: from `offset`, `bytes` of them. */
  offset: number;
  bytes: number;
  index: number;
  count: number;
}

/** Input bytes per band (a tensor under 1.5× this goes whole). */
export const BAND_BYTES = 8 * 1024 * 1024;

/** One unit of the pipeline: a whole tensor, or one band of it. */
interface WorkItem {
  e: Entry;
  band: Band | undefined;
  /** Buffer bytes it holds (the gate's accounting). */
  need: number;
}

/**
 * The bands a tensor goes through the pipeline in, or undefined when it
 * goes whole: tensors kept as they are, and (GGUF output) plain quantize
 * rules to a GGML format, read from a source that reads byte ranges.
 */
function bandsOf(e: Entry, source: ModelSource, sink: Sink, ro: RunOptions): { bands: Band[]; need: number } | undefined {
  const a = e.plan.action;
  if (ro.bandBytes === 0 || e.src.byteLength < 1.5 * ro.bandBytes || source.readRange === undefined || sink.append === undefined) return undefined;
  if (ro.ready !== undefined || ro.onComputed !== undefined || e.scale !== undefined) return undefined;
  const cols = e.src.shape[e.src.shape.length - 1] as number;
  const rows = e.src.shape.reduce((x, d) => x * d, 1) / cols;
  const rowIn = e.src.byteLength / rows;
  if (!(rows >= 2 && Number.isInteger(rowIn))) return undefined;
  let rowOut = 0; // kept: the output is the band as read
  if (a.kind === 'quantize') {
    if (!sink.gguf || !GGML_QUANT_FORMATS.includes(a.options.format) || a.calibrated !== undefined || floatDtypeOf(e.src) === undefined) return undefined;
    // a 3-D weight with one importance vector per expert goes whole (compressOne)
    if (e.importance !== undefined && e.importance.sums.length > cols) return undefined;
    rowOut = quantBytes([1, cols], a.options).data;
  } else if (a.kind !== 'keep') return undefined;
  const per = Math.max(1, Math.floor(ro.bandBytes / rowIn));
  const bands: Band[] = [];
  for (let r = 0; r < rows; r += per) {
    const n = Math.min(per, rows - r);
    bands.push({ rows: n, offset: r * rowIn, bytes: n * rowIn, index: bands.length, count: 0 });
  }
  for (const b of bands) b.count = bands.length;
  return { bands, need: poolSize(per * rowIn) + (rowOut > 0 ? poolSize(per * rowOut) : 0) };
}

async function runPipeline(entries: readonly Entry[], source: ModelSource, sink: Sink, pool: BufferPool, ro: RunOptions): Promise<void> {
  const gate = new Gate(ro.memoryLimit, ro.maxInFlight);
  const totalBytes = entries.reduce((s, e) => s + e.src.byteLength, 0);
  let failure: { error: unknown } | undefined;
  const stopped = (): boolean => failure !== undefined || ro.signal?.aborted === true;
  const onAbort = (): void => gate.wake();
  ro.signal?.addEventListener('abort', onAbort);
  let prevRead: Promise<void> = Promise.resolve();
  let prevWrite: Promise<void> = Promise.resolve();
  let prevCompute: Promise<void> = Promise.resolve();
  let done = 0;
  let bytesDone = 0;
  const jobs: Promise<void>[] = [];
  ro.onProgress?.({ phase: 'start', index: 0, count: entries.length, bytesDone: 0, totalBytes, elapsedMs: performance.now() - ro.started });

  const runOne = async ({ e, band, need }: WorkItem, afterRead: Promise<void>, afterCompute: Promise<void>, afterWrite: Promise<void>, readDone: () => void, computeDone: () => void): Promise<void> => {
    const held: Uint8Array[] = [];
    const take = (n: number): Uint8Array => {
      const b = pool.acquire(n);
      held.push(b);
      return b;
    };
    let step = 'read';
    const st = ro.stages;
    try {
      let input: Uint8Array;
      try {
        await afterRead;
        if (stopped()) return;
        input = await timed(st, 'readMs', () =>
          band === undefined ? source.readBytes(e.src.name, take(e.src.byteLength)) : (source.readRange as NonNullable<ModelSource['readRange']>)(e.src.name, band.offset, band.bytes, take(band.bytes)),
        );
      } finally {
        readDone();
      }
      if (stopped()) return;
      step = e.plan.action.kind === 'keep' ? 'write' : e.plan.action.kind;
      let result: Result;
      try {
        await timed(st, 'computeWaitMs', async () => {
          await afterCompute;
          if (!stopped()) await ro.ready?.(e);
        });
        if (stopped()) return;
        // The error is timed apart from the compression it follows.
        const mine = noStageTimes();
        const t0 = performance.now();
        result = band === undefined ? await compressOne(e, input, take, ro, mine) : await bandOne(e, band, input, take, ro);
        st.compressMs += performance.now() - t0 - mine.errorMs;
        st.errorMs += mine.errorMs;
        await ro.onComputed?.(e, result);
      } finally {
        computeDone();
      }
      step = 'write';
      await timed(st, 'writeWaitMs', () => afterWrite);
      if (stopped()) return;
      await timed(st, 'writeMs', () => (band === undefined ? sink.write(e, result) : (sink.append as NonNullable<Sink['append']>)(e, result)));
      if (band !== undefined && band.index < band.count - 1) return;
      done++;
      bytesDone += e.src.byteLength;
      ro.onProgress?.({ phase: 'tensor', tensor: e.src.name, index: done, count: entries.length, bytesDone, totalBytes, elapsedMs: performance.now() - ro.started });
    } catch (err) {
      failure ??= { error: tensorError(err, e.src.name, step) };
      gate.wake();
    } finally {
      for (const b of held) pool.release(b);
      gate.release(need);
    }
  };

  try {
    for (const e of entries) {
      const split = bandsOf(e, source, sink, ro);
      const items: WorkItem[] = split === undefined ? [{ e, band: undefined, need: e.need }] : split.bands.map((band) => ({ e, band, need: split.need }));
      for (const item of items) {
        if (!(await timed(ro.stages, 'admitWaitMs', () => gate.acquire(item.need, stopped)))) break;
        let readDone!: () => void;
        let computeDone!: () => void;
        const readP = new Promise<void>((r) => (readDone = r));
        const computeP = new Promise<void>((r) => (computeDone = r));
        const job = runOne(item, prevRead, prevCompute, prevWrite, readDone, computeDone);
        prevRead = readP;
        prevCompute = computeP;
        prevWrite = settled(job);
        jobs.push(job);
      }
      if (stopped()) break;
    }
    await Promise.all(jobs);
  } finally {
    ro.signal?.removeEventListener('abort', onAbort);
  }
  if (failure !== undefined) throw failure.error;
  ro.signal?.throwIfAborted();
}

/** One band of a tensor's rows (bandsOf): kept as read, or quantized; the tensor's error is complete after its last band. */
async function bandOne(e: Entry, band: Band, input: Uint8Array, take: (n: number) => Uint8Array, ro: RunOptions): Promise<Result> {
  const a = e.plan.action;
  if (a.kind !== 'quantize') return keptResult(e, input, ro);
  const o = a.options;
  const cols = e.src.shape[e.src.shape.length - 1] as number;
  const shape = [band.rows, cols];
  const t = Tensor.from(input, shape, floatDtypeOf(e.src) as FloatDType);
  const out = new QuantizedTensor({ format: o.format, shape, data: take(quantBytes(shape, o).data) });
  const { q, sums } = await quantizePlain(t, o, out, e.importance === undefined ? undefined : imatrixWeights(e.importance), ro);
  if (sums !== undefined) {
    e.bandError = band.index === 0 || e.bandError === undefined ? sums : addErrorSums(e.bandError, sums);
    if (band.index === band.count - 1) e.record.error = errorFromSums(e.bandError);
  }
  return { kind: 'quant', q };
}

/** A tensor (or band) written as read; its zeros counted when the run counts them. */
function keptResult(e: Entry, input: Uint8Array, ro: RunOptions): Result {
  const dt = floatDtypeOf(e.src);
  if (ro.countZeros && dt !== undefined) countZerosInto(e, input, dt);
  return { kind: 'raw', bytes: input };
}

/**
 * Quantizes `t` into `out` with importance weights `w` (no GPTQ); with
 * ro.measureError each row is measured right after it is quantized (the
 * time counts as compressing) and the error sums come back.
 */
async function quantizePlain(t: Tensor, o: QuantizeOptions, out: QuantizedTensor, w: Float32Array | undefined, ro: RunOptions): Promise<{ q: QuantizedTensor; sums: ErrorSums | undefined }> {
  const qo = { ...o, out, ...(w !== undefined ? { importance: w } : {}), ...(ro.threads !== undefined ? { threads: ro.threads } : {}) };
  if (!ro.measureError) return { q: await quantize(t, qo), sums: undefined };
  return quantizeMeasured(t, qo);
}

async function compressOne(e: Entry, input: Uint8Array, take: (n: number) => Uint8Array, ro: RunOptions, times: StageTimes): Promise<Result> {
  const a = e.plan.action;
  if (e.scale !== undefined) await scaleInPlace(e, input, take);
  if (a.kind === 'keep') return keptResult(e, input, ro);
  const from = floatDtypeOf(e.src) as FloatDType;
  const n = e.src.byteLength / dtypeSize(from);
  if (a.kind === 'convert') {
    const out = convertsInPlace(e.src, a.dtype, ro.measureError) ? input : take(n * dtypeSize(a.dtype));
    await cast(Tensor.from(input, e.src.shape, from), a.dtype, { out: Tensor.from(out, e.src.shape, a.dtype), ...(ro.threads !== undefined ? { threads: ro.threads } : {}) });
    if (ro.measureError) e.record.error = await timed(times, 'errorMs', () => denseError(Tensor.from(input, e.src.shape, from), Tensor.from(out, e.src.shape, a.dtype)));
    if (ro.countZeros) countZerosInto(e, out, a.dtype);
    return { kind: 'raw', bytes: out };
  }
  if (a.kind === 'lowrank') return lowRankOne(e, input, take, ro, from, a);
  if (a.kind === 'prune') return pruneOne(e, input, take, ro, from, a);
  const t = viewStored(e.src, input) as Tensor;
  const o = a.options;
  const b = quantBytes(e.src.shape, o);
  const cols = e.src.shape[e.src.shape.length - 1] as number;
  const lead = e.src.shape.slice(0, -1);
  const threads = ro.threads !== undefined ? { threads: ro.threads } : {};
  const w = e.importance === undefined ? undefined : imatrixWeights(e.importance);
  let out: QuantizedTensor;
  if (GGML_QUANT_FORMATS.includes(o.format)) {
    out = new QuantizedTensor({ format: o.format, shape: e.src.shape, data: take(b.data) });
    if (w !== undefined && w.length > cols) {
      // A 3-D expert weight: each expert's matrix with its own weights, as llama-quantize does.
      const experts = w.length / cols;
      const inPer = t.data.length / experts;
      const outPer = b.data / experts;
      const shape = e.src.shape.slice(-2);
      const data = out.data as Uint8Array;
      for (let x = 0; x < experts; x++) {
        const part = Tensor.from(t.data.subarray(x * inPer, (x + 1) * inPer), shape, t.dtype);
        const q = new QuantizedTensor({ format: o.format, shape, data: data.subarray(x * outPer, (x + 1) * outPer) });
        await quantize(part, { ...o, importance: w.subarray(x * cols, (x + 1) * cols), out: q, ...threads });
      }
      if (ro.measureError) e.record.error = await timed(times, 'errorMs', () => quantizationError(t, out));
      return { kind: 'quant', q: out };
    }
  } else {
    const d = take(b.data);
    const sd = o.scaleDtype as FloatDType;
    out = new QuantizedTensor({
      format: o.format,
      shape: e.src.shape,
      data: new Int32Array(d.buffer, d.byteOffset, b.data / 4),
      scales: Tensor.from(take(b.scales), [...lead, b.groups], sd),
      zeros: o.symmetric === false ? Tensor.from(take(b.zeros), [...lead, b.groups], 'i8') : undefined,
      groupSize: o.groupSize === 'channel' ? cols : (o.groupSize as number),
    });
  }
  const gptqSettings = a.calibrated?.method === 'gptq' ? a.calibrated : a.calibrated?.method === 'awq' ? a.calibrated.gptq : undefined;
  if (gptqSettings !== undefined) {
    const c: GptqSettings = gptqSettings;
    let h = (e.stats as LayerInputStats).hessian as Float32Array;
    // AWQ-scaled columns (W·S): the Hessian of the scaled inputs S⁻¹·H·S⁻¹.
    const s = e.scale?.cols;
    if (s !== undefined) h = Float32Array.from(h, (v, i) => v / ((s[Math.floor(i / cols)] as number) * (s[i % cols] as number)));
    const r = await gptq(t, Tensor.from(h, [cols, cols]), { ...groupingOf(o), ...gptqSettingsOf(c), ...threads });
    if (a.calibrated?.method === 'gptq') e.record.calibrated = { method: 'gptq', error: r.stats.gptqError, rtnError: r.stats.rtnError };
    if (ro.measureError) e.record.error = await timed(times, 'errorMs', () => quantizationError(t, r.quantized));
    return { kind: 'quant', q: r.quantized };
  }
  const { q, sums } = await quantizePlain(t, o, out, w, ro);
  if (sums !== undefined) e.record.error = errorFromSums(sums);
  return { kind: 'quant', q };
}

/** A planned quantize action's format and grouping, as gptq() and awqSearch() take them (what is unset stays unset). */
function groupingOf(o: QuantizeOptions): { format: QuantizeOptions['format']; groupSize?: number | 'channel'; symmetric?: boolean; scaleDtype?: FloatDType } {
  const { format, groupSize, symmetric, scaleDtype } = o;
  return { format, ...(groupSize !== undefined ? { groupSize } : {}), ...(symmetric !== undefined ? { symmetric } : {}), ...(scaleDtype !== undefined ? { scaleDtype } : {}) };
}

/** A rule's GPTQ settings without the method tag. */
function gptqSettingsOf(c: GptqSettings): GptqSettings {
  const { actOrder, dampening, blockSize } = c;
  return { ...(actOrder !== undefined ? { actOrder } : {}), ...(dampening !== undefined ? { dampening } : {}), ...(blockSize !== undefined ? { blockSize } : {}) };
}

/** Multiplies a float tensor's bytes (as read) by its entry's factors, in place (through f32 for 16-bit tensors). */
async function scaleInPlace(e: Entry, input: Uint8Array, take: (n: number) => Uint8Array): Promise<void> {
  const dtype = floatDtypeOf(e.src);
  if (dtype === undefined) throw new SlimTensorError(`AWQ scales fold into '${e.src.name}', stored as ${e.src.storage}: only F32/F16/BF16 tensors can be scaled`, 'ERR_UNSUPPORTED');
  const n = e.src.byteLength / dtypeSize(dtype);
  if (dtype === 'f32') {
    applyTensorScale(new Float32Array(input.buffer, input.byteOffset, n), e.src.shape, e.scale as TensorScale, e.src.name);
    return;
  }
  const f = Tensor.from(take(n * 4), e.src.shape, 'f32');
  await cast(Tensor.from(input, e.src.shape, dtype), 'f32', { out: f });
  applyTensorScale(f.data as Float32Array, e.src.shape, e.scale as TensorScale, e.src.name);
  await cast(f, dtype, { out: Tensor.from(input, e.src.shape, dtype) });
}

/**
 * gptq and awq rules: checks that calibration statistics cover their
 * tensors, gives gptq tensors their Hessian, runs AWQ's scale search over
 * each group of awq-planned weights sharing an input (reading those
 * weights), and gives every tensor its factors (the search's folded scales
 * times `scaling`).
 */
async function attachCalibrated(
  entries: readonly Entry[],
  source: ModelSource,
  stats: ActivationStats | undefined,
  scaling: ReadonlyMap<string, TensorScale> | undefined,
  threads: number | undefined,
  signal: AbortSignal | undefined,
): Promise<CompressReport['awq']> {
  const byName = new Map(entries.map((e) => [e.src.name, e] as const));
  const calibrated = entries.filter((e) => e.plan.action.kind === 'quantize' && e.plan.action.calibrated !== undefined);
  for (const e of calibrated) {
    const a = e.plan.action as Extract<TensorAction, { kind: 'quantize' }>;
    const method = (a.calibrated as { method: string }).method;
    const s = stats?.get(e.src.name);
    if (s === undefined) {
      throw new SlimTensorError(`compressModel: recipe ${e.plan.rule ?? ''} quantizes '${e.src.name}' by ${method}, which needs calibration statistics for it (activationStats from calibrate(), or the recipe's calibration)${stats === undefined ? '' : '; the statistics have no entry for it'}`, 'ERR_VALUE');
    }
    if (s.hessian === undefined) throw new SlimTensorError(`compressModel: ${method} of '${e.src.name}' needs the Hessian of its input; calibrate with hessian: true`, 'ERR_VALUE');
    e.stats = s;
  }
  let report: CompressReport['awq'];
  const factors = new Map<string, TensorScale>();
  const awq = calibrated.filter((e) => (e.plan.action as { calibrated: { method: string } }).calibrated.method === 'awq');
  if (awq.length > 0) {
    const { groups, skipped } = awqGroups(source.tensors);
    const awqNames = new Set(awq.map((e) => e.src.name));
    const chosen = new Map<string, Float32Array>();
    const used: typeof groups = [];
    report = { groups: [], skipped: [...skipped] };
    for (const g of groups) {
      signal?.throwIfAborted();
      const notAwq = g.linears.filter((n) => !awqNames.has(n));
      if (notAwq.length > 0) {
        if (notAwq.length < g.linears.length || awqNames.has(g.prev)) report.skipped.push({ layer: g.layer, prev: g.prev, linears: g.linears, reason: `${notAwq.join(', ')} not quantized by awq (a group's weights share one scale)` });
        continue;
      }
      const first = (byName.get(g.linears[0] as string) as Entry).plan.action as Extract<TensorAction, { kind: 'quantize' }>;
      const differ = g.linears.find((n) => JSON.stringify(((byName.get(n) as Entry).plan.action as Extract<TensorAction, { kind: 'quantize' }>).options) !== JSON.stringify(first.options));
      if (differ !== undefined) {
        report.skipped.push({ layer: g.layer, prev: g.prev, linears: g.linears, reason: `${differ} is quantized differently from ${g.linears[0] as string} (one scale search per format)` });
        continue;
      }
      const prev = source.tensors.find((t) => t.name === g.prev);
      if (prev === undefined || floatDtypeOf(prev) === undefined) {
        report.skipped.push({ layer: g.layer, prev: g.prev, linears: g.linears, reason: `${g.prev} is stored as ${prev?.storage ?? 'nothing'}; scales fold into F32/F16/BF16 tensors only` });
        continue;
      }
      const weights: Tensor[] = [];
      for (const n of g.linears) {
        const src = (byName.get(n) as Entry).src;
        weights.push(viewStored(src, await source.readBytes(n)) as Tensor);
      }
      const c = first.calibrated as Extract<CalibratedMethod, { method: 'awq' }>;
      const o = first.options;
      const r = await awqSearch(weights, (byName.get(g.linears[0] as string) as Entry).stats as LayerInputStats, {
        ...groupingOf(o),
        ...(c.grid !== undefined ? { grid: c.grid } : {}),
        ...(c.gptq !== undefined ? { gptq: gptqSettingsOf(c.gptq) } : {}),
        ...(threads !== undefined ? { threads } : {}),
      });
      chosen.set(g.prev, r.scales);
      used.push(g);
      report.groups.push({ layer: g.layer, prev: g.prev, linears: g.linears, alpha: r.alpha, error: r.error, rtnError: r.rtnError });
      for (const n of g.linears) (byName.get(n) as Entry).record.calibrated = { method: 'awq', error: r.error, rtnError: r.rtnError, alpha: r.alpha };
    }
    for (const [name, f] of awqFold(used, chosen)) factors.set(name, f);
    // Weights of an awq rule outside any scaled group: plain rounding.
    for (const e of awq) e.record.calibrated ??= { method: 'awq', error: NaN, rtnError: NaN, alpha: 0 };
  }
  for (const [name, f] of scaling ?? []) {
    const t = factors.get(name) ?? {};
    const mul = (x: Float32Array | undefined, y: Float32Array | undefined): Float32Array | undefined => (x === undefined ? y : y === undefined ? x : Float32Array.from(x, (v, i) => v * (y[i] as number)));
    factors.set(name, { ...(mul(t.rows, f.rows) !== undefined ? { rows: mul(t.rows, f.rows) } : {}), ...(mul(t.cols, f.cols) !== undefined ? { cols: mul(t.cols, f.cols) } : {}) });
  }
  for (const [name, f] of factors) {
    const e = byName.get(name);
    if (e === undefined) throw new SlimTensorError(`compressModel: scaling names '${name}', which is not in the model`, 'ERR_VALUE');
    e.scale = f;
  }
  return report;
}

/** Adds a float tensor's zeros (either sign) and element count to the entry. */
function countZerosInto(e: Entry, bytes: Uint8Array, dtype: FloatDType): void {
  // Branch-free (((x & ~sign) - 1) >>> 31 is 1 for ±0, else 0): every pruned
  // run counts every weight, and half of them are zero in no predictable order.
  let zeros = 0;
  if (dtype === 'f32') {
    const u = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    for (let i = 0; i < u.length; i++) zeros += (((u[i] as number) & 0x7fffffff) - 1) >>> 31;
  } else {
    let at = 0;
    if (bytes.byteOffset % 4 === 0) {
      // two 16-bit weights per 32-bit word
      const w = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
      for (let i = 0; i < w.length; i++) {
        const x = w[i] as number;
        zeros += ((x & 0x7fff) - 1) >>> 31;
        zeros += (((x >>> 16) & 0x7fff) - 1) >>> 31;
      }
      at = w.length * 2;
    }
    const u = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
    for (let i = at; i < u.length; i++) zeros += (((u[i] as number) & 0x7fff) - 1) >>> 31;
  }
  e.zeros += zeros;
  e.elements += bytes.byteLength / dtypeSize(dtype);
}

/** sparsity_config.global_sparsity: zero weights over all float weights written. */
function globalSparsity(entries: readonly Entry[]): number {
  const total = entries.reduce((s, e) => s + e.elements, 0);
  return total === 0 ? 0 : entries.reduce((s, e) => s + e.zeros, 0) / total;
}

/** Bytes of pruning's outputs for a tensor of `shape` and `dtype`: dense copy, 2:4 values, bitmask, 2:4 meta (int16 words). */
function pruneBytes(shape: readonly number[], dtype: FloatDType): { dense: number; values: number; mask: number; meta: number } {
  const cols = shape[shape.length - 1] as number;
  const n = shape.reduce((x, d) => x * d, 1);
  const rows = n / cols;
  return { dense: n * dtypeSize(dtype), values: (n / 2) * dtypeSize(dtype), mask: rows * Math.ceil(cols / 8), meta: rows * Math.ceil(cols / 16) * 2 };
}

/**
 * N:M pruning on the thread pool: 2:4 weights bound for sparse-24-bitmask
 * go through the fused prune + compress (no dense copy), the others through
 * prune() and are written dense. Every output is a pool buffer handed over
 * as `out`, so it counts in the pool's accounting and is reused.
 */
async function pruneOne(e: Entry, input: Uint8Array, take: (n: number) => Uint8Array, ro: RunOptions, dtype: FloatDType, a: Extract<TensorAction, { kind: 'prune' }>): Promise<Result> {
  const w = viewStored(e.src, input) as Tensor;
  const score: SparsityScore = a.activationNorms === undefined ? 'magnitude' : { activationNorms: a.activationNorms };
  const threads = ro.threads !== undefined ? { threads: ro.threads } : {};
  const b = pruneBytes(w.shape, dtype);
  const lead = w.shape.slice(0, -1);
  const cols = w.shape[w.shape.length - 1] as number;
  const mask = Tensor.from(take(b.mask), [...lead, Math.ceil(cols / 8)], 'u8');
  const dense = (): Tensor<FloatDType> => Tensor.from(take(b.dense), w.shape, dtype);
  if (a.sparse24) {
    const metaBytes = take(b.meta);
    const out = new Sparse24Tensor({
      shape: w.shape,
      values: Tensor.from(take(b.values), [...lead, cols / 2], dtype),
      meta: new Int16Array(metaBytes.buffer, metaBytes.byteOffset, b.meta / 2),
      bitmask: mask,
    });
    const s = await compress24(w, { prune: true, score, out, ...threads });
    const values = (s.values as Tensor).data;
    if (ro.countZeros) {
      // the kept values' zeros, plus the pruned half
      countZerosInto(e, new Uint8Array(values.buffer, values.byteOffset, values.byteLength), dtype);
      e.zeros += w.size / 2;
      e.elements += w.size / 2;
    }
    if (ro.measureError) e.record.error = denseError(w, (await decompress24(s, { out: dense(), ...threads })) as Tensor);
    return { kind: 'parts', parts: encodeSparse24(s), weight: async () => {
        const d = (await decompress24(s, threads)) as Tensor;
        return d.dtype === 'f32' ? d : cast(d, 'f32');
      },
    };
  }
  const r = await prune(w, { pattern: a.pattern, score, out: { tensor: dense(), mask }, ...threads });
  const out = new Uint8Array(r.tensor.data.buffer, r.tensor.data.byteOffset, r.tensor.data.byteLength);
  if (ro.measureError) e.record.error = denseError(w, r.tensor);
  if (ro.countZeros) countZerosInto(e, out, dtype);
  return { kind: 'raw', bytes: out };
}

const LOWRANK_PIPELINE_OPTIONS = ['rank', 'ratio', 'energy', 'method', 'oversample', 'powerIters', 'seed', 'kernel'];

/** The rank a lowrank rule gives a 2-D tensor, known before any data is read. */
function lowRankPlanRank(src: SourceTensor, o: Record<string, unknown>): number {
  const where = `compressModel: tensor ${quoteName(src.name)} (lowrank)`;
  if (src.shape.length !== 2) throw new SlimTensorError(`${where}: needs a 2-D matrix, got [${src.shape.join(', ')}]`, 'ERR_SHAPE');
  for (const k of Object.keys(o)) {
    if (!LOWRANK_PIPELINE_OPTIONS.includes(k)) throw new SlimTensorError(`${where}: unknown option ${JSON.stringify(k)}; known: ${LOWRANK_PIPELINE_OPTIONS.join(', ')}`, 'ERR_VALUE');
  }
  const [m, n] = [src.shape[0] as number, src.shape[1] as number];
  if (o.energy !== undefined) {
    throw new SlimTensorError(`${where}: the pipeline writes each tensor's shape before its data, so the rank must be known in advance: use "rank" or "ratio", not "energy"`, 'ERR_UNSUPPORTED');
  }
  if (o.rank !== undefined && o.ratio !== undefined) throw new SlimTensorError(`${where}: give one of rank or ratio`, 'ERR_VALUE');
  let rank: number;
  if (o.rank !== undefined) {
    if (!Number.isInteger(o.rank) || (o.rank as number) < 1) throw new SlimTensorError(`${where}: rank must be a positive integer, got ${String(o.rank)}`, 'ERR_VALUE');
    rank = Math.min(o.rank as number, m, n);
  } else if (o.ratio !== undefined) {
    if (typeof o.ratio !== 'number' || !(o.ratio > 0)) throw new SlimTensorError(`${where}: ratio must be a number > 0, got ${String(o.ratio)}`, 'ERR_VALUE');
    rank = rankForRatio(o.ratio, m, n);
    if (rank < 1) throw new SlimTensorError(`${where}: ratio ${o.ratio} leaves less than one rank of [${m}, ${n}]`, 'ERR_VALUE');
  } else {
    throw new SlimTensorError(`${where}: options need "rank" or "ratio"`, 'ERR_VALUE');
  }
  return rank;
}

/** Factors W ≈ left · right (into pool buffers) and converts them to the source's dtype. */
async function lowRankOne(e: Entry, input: Uint8Array, take: (n: number) => Uint8Array, ro: RunOptions, dtype: FloatDType, a: Extract<TensorAction, { kind: 'lowrank' }>): Promise<Result> {
  const o = a.options;
  const w = viewStored(e.src, input) as Tensor;
  const [left, right] = e.st as [PlannedTensor, PlannedTensor];
  const rank = left.shape[1] as number;
  const { ratio: _ratio, energy: _energy, ...rest } = o;
  const f32 = (shape: readonly number[]): Tensor<'f32'> => Tensor.from(take(shape.reduce((x, d) => x * d, 1) * 4), shape, 'f32');
  const out = { left: f32(left.shape), right: f32(right.shape) };
  const r = await lowRank(w, { ...rest, rank, out, ...(a.whiten !== undefined ? { whiten: a.whiten } : {}), ...(ro.threads !== undefined ? { threads: ro.threads } : {}) });
  const parts = await Promise.all(
    [r.left, r.right].map(async (f) => {
      const bytes = new Uint8Array(f.data.buffer, f.data.byteOffset, f.data.byteLength);
      if (dtype === 'f32') return bytes;
      const converted = take(f.size * dtypeSize(dtype));
      await cast(f, dtype, { out: Tensor.from(converted, f.shape, dtype) });
      return converted;
    }),
  );
  const product = (out?: Tensor<'f32'>): Promise<Tensor<'f32'>> => matmul(Tensor.from(parts[0] as Uint8Array, left.shape, dtype), Tensor.from(parts[1] as Uint8Array, right.shape, dtype), out !== undefined ? { out } : {});
  if (ro.measureError) e.record.error = denseError(w, await product(f32(e.src.shape)));
  return { kind: 'parts', parts, weight: () => product() };
}

// ---- sequential calibration (GPTQ's sequential mode) next to the pipeline

/**
 * Statistics of the right widths (no rows) for every block linear weight,
 * so that a sequential run plans its block tensors (and names its imatrix
 * entries) before their statistics exist; an empty Hessian where the rules
 * want one. Each block's tensors get their real statistics when the
 * calibration reaches it.
 */
function placeholderStats(run: SequentialCalibration): ActivationStats {
  const out: ActivationStats = new Map();
  for (const t of run.plan.tensors) {
    if (!isBlockLinear(t)) continue;
    out.set(t.name, { width: t.cols, rows: 0, sumSquares: new Float32Array(t.cols), sumAbs: new Float32Array(t.cols), weights: [t.name], ...(run.hessian(t.name) ? { hessian: new Float32Array(0) } : {}) });
  }
  return out;
}

interface SequentialPlan {
  run: SequentialCalibration;
  /** The entries in output order: blocks ascending. */
  entries: Entry[];
  /** The block of each tensor the runtime loads in a block. */
  layerOf: Map<string, number>;
  byLayer: Entry[][];
}

/**
 * Orders the output so that block i's tensors come before block i+1's (a
 * source already in that order keeps it; a tensor outside the blocks stays
 * after the block tensors it followed), and groups the entries by block.
 */
function sequentialPlan(run: SequentialCalibration, entries: readonly Entry[]): SequentialPlan {
  const runtime = new Map(run.plan.tensors.filter((t) => t.slot >= 10).map((t) => [t.name, t.layer] as const));
  const layerOf = new Map<string, number>();
  let last = -1;
  const keyed = entries.map((e, i) => {
    const l = runtime.get(e.src.name);
    if (l !== undefined) {
      layerOf.set(e.src.name, l);
      last = Math.max(last, l);
    }
    return { e, i, key: l ?? last };
  });
  keyed.sort((a, b) => a.key - b.key || a.i - b.i);
  const byLayer: Entry[][] = Array.from({ length: run.plan.hparams.blockCount }, () => []);
  for (const { e } of keyed) {
    const l = layerOf.get(e.src.name);
    if (l !== undefined) (byLayer[l] as Entry[]).push(e);
  }
  return { run, entries: keyed.map((k) => k.e), layerOf, byLayer };
}

/** The weight a compressed block tensor hands back to the runtime: what was written, dequantized to f32 (fresh memory). Kept tensors: none. */
async function replacementOf(e: Entry, r: Result): Promise<BlockWeight | undefined> {
  const a = e.plan.action;
  if (a.kind === 'keep') return undefined;
  if (r.kind === 'quant') return dequantize(r.q, { dtype: 'f32' });
  if (r.kind === 'parts') return r.weight();
  const dtype = a.kind === 'convert' ? a.dtype : (floatDtypeOf(e.src) as FloatDType);
  if (dtype === 'f32') return Tensor.from(new Float32Array(r.bytes.buffer.slice(r.bytes.byteOffset, r.bytes.byteOffset + r.bytes.byteLength)), e.src.shape, 'f32');
  return cast(Tensor.from(r.bytes, e.src.shape, dtype), 'f32');
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: unknown) => void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((a, b) => {
    resolve = a;
    reject = b;
  });
  // Rejected when the run fails; whoever waits sees it, nobody else has to.
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

/**
 * Runs the pipeline and the sequential calibration together: block i's
 * tensors wait in the pipeline until the calibration has block i's
 * statistics (`attach` gives them their plans, imatrix and Hessians); the
 * calibration waits until they are compressed, hands their compressed
 * weights back to the runtime (so block i+1 is calibrated on the
 * compressed block's outputs) and drops block i's Hessians. Either side's
 * failure stops the other; the first error is thrown.
 */
async function runSequential(
  seq: SequentialPlan,
  ro: RunOptions,
  pipeline: (ro: RunOptions) => Promise<void>,
  attach: (block: Entry[], stats: { layer: number; stats: ActivationStats }) => Promise<void>,
  onProgress: ((p: { chunk: number; chunks: number; tokens: number }) => void) | undefined,
): Promise<void> {
  const { run, byLayer, layerOf } = seq;
  const inner = new AbortController();
  const onAbort = (): void => inner.abort(ro.signal?.reason);
  if (ro.signal?.aborted) onAbort();
  ro.signal?.addEventListener('abort', onAbort);
  const statsReady = byLayer.map(() => deferred<void>());
  const computed = byLayer.map(() => deferred<void>());
  const left = byLayer.map((b) => b.length);
  const replace = byLayer.map(() => new Map<string, BlockWeight>());
  const linear = new Set(run.plan.tensors.filter(isBlockLinear).map((t) => t.name));
  left.forEach((n, l) => n === 0 && (computed[l] as Deferred<void>).resolve());
  let failure: { error: unknown } | undefined;
  const stop = (error: unknown): never => {
    if (failure === undefined) {
      failure = { error };
      for (const d of [...statsReady, ...computed]) d.reject(error);
      inner.abort(error);
    }
    throw error;
  };
  const r: RunOptions = {
    ...ro,
    signal: inner.signal,
    ready: (e) => {
      const l = layerOf.get(e.src.name);
      return l === undefined ? undefined : (statsReady[l] as Deferred<void>).promise;
    },
    onComputed: async (e, res) => {
      const l = layerOf.get(e.src.name);
      if (l === undefined) return;
      if (linear.has(e.src.name) && l < byLayer.length - 1) {
        const w = await replacementOf(e, res);
        if (w !== undefined) (replace[l] as Map<string, BlockWeight>).set(e.src.name, w);
      }
      // The block's Hessians go with their last use.
      delete e.stats;
      const a = e.plan.action;
      if (a.kind === 'lowrank' && a.whiten !== undefined) {
        const { whiten: _dropped, ...rest } = a;
        e.plan = { ...e.plan, action: rest };
      }
      left[l] = (left[l] as number) - 1;
      if (left[l] === 0) (computed[l] as Deferred<void>).resolve();
    },
  };
  const ctx = (run.chunks[0] as Int32Array).length;
  const calibration = calibrateSequential(run.plan, run.chunks, {
    hessian: run.hessian,
    signal: inner.signal,
    ...(ro.threads !== undefined ? { load: { threads: ro.threads } } : {}),
    ...(onProgress !== undefined ? { onProgress: (p) => onProgress({ chunk: (p.block - 1) * p.chunks + p.chunk, chunks: p.blocks * p.chunks, tokens: ((p.block - 1) * p.chunks + p.chunk) * ctx }) } : {}),
    onBlock: async (b) => {
      await attach(byLayer[b.layer] as Entry[], { layer: b.layer, stats: b.stats });
      for (const s of new Set(b.stats.values())) {
        run.record.inputs++;
        if (s.hessian !== undefined) run.record.hessians++;
      }
      (statsReady[b.layer] as Deferred<void>).resolve();
      await (computed[b.layer] as Deferred<void>).promise;
      const m = replace[b.layer] as Map<string, BlockWeight>;
      replace[b.layer] = new Map();
      // The last block feeds nothing: no second run.
      return b.layer < b.blocks - 1 ? m : undefined;
    },
  }).then(() => {
    run.record.timeMs = performance.now() - run.started;
  }, stop);
  try {
    await Promise.allSettled([calibration, pipeline(r).catch(stop)]);
  } finally {
    ro.signal?.removeEventListener('abort', onAbort);
  }
  if (failure !== undefined) throw failure.error;
}
