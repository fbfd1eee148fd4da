// Hyper-parameters of a llama-family model from a GGUF file's metadata or a
// Hugging Face config.json (the keys of architectures.ts), checked: a
// missing or nonsensical value is an ERR_FORMAT naming the file and key.
import { SlimTensorError } from '../errors';
import type { GGUFValue } from '../formats/gguf';
import { GGUF_HPARAM_KEYS, HF_HPARAM_KEYS, type Hyperparameters } from './architectures';

/** Hyper-parameters plus what the runtime reads beside them. */
export interface ModelHyperparameters extends Hyperparameters {
  /** Rotated dimensions per head (GGUF rope.dimension_count; headDim otherwise). */
  ropeDimensions: number;
}

function positiveInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v > 0;
}

/** Typed readers of one source's keys: `get` returns undefined for a missing key, `fail` names the key. */
function readers(get: (k: string) => unknown, fail: (k: string, why: string) => never) {
  return {
    int(k: string, fallback?: number): number {
      const v = get(k);
      if (v === undefined || v === null) {
        if (fallback === undefined) fail(k, 'is missing');
        return fallback as number;
      }
      if (!positiveInt(v)) fail(k, `must be a positive integer, got ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`);
      return v as number;
    },
    num(k: string, fallback: number): number {
      const v = get(k);
      if (v === undefined || v === null) return fallback;
      if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) fail(k, `must be a positive number, got ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`);
      return v as number;
    },
  };
}

type Readers = ReturnType<typeof readers>;
type CommonKeys = Record<'contextLength' | 'blockCount' | 'feedForwardLength' | 'headCountKv' | 'ropeFreqBase' | 'rmsNormEps', string>;

/** The fields both sources state the same way (under their own key names). */
function commonFields(r: Readers, K: CommonKeys, headCount: number, epsDefault: number) {
  return {
    contextLength: r.int(K.contextLength, 2048),
    blockCount: r.int(K.blockCount),
    feedForwardLength: r.int(K.feedForwardLength),
    headCountKv: r.int(K.headCountKv, headCount),
    ropeFreqBase: r.num(K.ropeFreqBase, 10000),
    rmsNormEps: r.num(K.rmsNormEps, epsDefault),
  };
}

/** From GGUF metadata (`${arch}.…` keys as llama.cpp reads them); `vocabFallback` when the file states none. */
export function hyperparametersOfGguf(md: ReadonlyMap<string, GGUFValue>, arch: string, file: string, vocabFallback: number): ModelHyperparameters {
  const K = GGUF_HPARAM_KEYS;
  const key = (k: string) => `${arch}.${k}`;
  const fail = (k: string, why: string): never => {
    throw new SlimTensorError(`${file}: metadata ${key(k)} ${why}`, 'ERR_FORMAT');
  };
  const r = readers((k) => md.get(key(k)), fail);
  const { int, num } = r;
  const embeddingLength = int(K.embeddingLength);
  const headCount = int(K.headCount);
  const headDim = int(K.keyLength, Math.floor(embeddingLength / headCount));
  const valueLength = int(K.valueLength, headDim);
  if (valueLength !== headDim) fail(K.valueLength, `(${valueLength}) differs from the key length (${headDim}); the runtime needs them equal`);
  // As llama.cpp reads them: the type defaults to linear, the factor comes
  // from rope.scaling.factor or the older rope.scale_linear; none without one.
  let ropeScaling: Hyperparameters['ropeScaling'] = { type: 'none' };
  const scalingType = md.get(key(K.ropeScalingType)) ?? 'linear';
  const factor = md.has(key(K.ropeScalingFactor)) ? num(K.ropeScalingFactor, 1) : md.has(key('rope.scale_linear')) ? num('rope.scale_linear', 1) : 0;
  if (scalingType !== 'none' && factor !== 0 && factor !== 1) {
    if (scalingType === 'linear') ropeScaling = { type: 'linear', factor };
    else if (scalingType === 'yarn') ropeScaling = { type: 'yarn', factor, originalContextLength: int(K.ropeScalingOriginalContextLength, 0) };
    else fail(K.ropeScalingType, `'${String(scalingType)}' is not a RoPE scaling the runtime knows (none, linear, yarn)`);
  }
  const vocab = md.get(key(K.vocabSize));
  return {
    vocabSize: vocab === undefined ? vocabFallback : int(K.vocabSize),
    ...commonFields(r, K, headCount, 1e-5),
    embeddingLength,
    headCount,
    headDim,
    ropeScaling,
    tiedEmbeddings: false, // decided by the tensors (no output.weight)
    ropeDimensions: int(K.ropeDimensionCount, headDim),
  };
}

/** From a Hugging Face config.json object. */
export function hyperparametersOfHfConfig(config: Record<string, unknown>, file: string): ModelHyperparameters {
  const K = HF_HPARAM_KEYS;
  const fail = (k: string, why: string): never => {
    throw new SlimTensorError(`${file}: ${k} ${why}`, 'ERR_FORMAT');
  };
  const r = readers((k) => config[k], fail);
  const { int } = r;
  const embeddingLength = int(K.embeddingLength);
  const headCount = int(K.headCount);
  const headDim = int(K.headDim, Math.floor(embeddingLength / headCount));
  let ropeScaling: Hyperparameters['ropeScaling'] = { type: 'none' };
  const rs = config[K.ropeScaling];
  if (rs !== undefined && rs !== null) {
    if (typeof rs !== 'object' || Array.isArray(rs)) fail(K.ropeScaling, 'must be an object');
    const r = rs as Record<string, unknown>;
    const type = r.rope_type ?? r.type;
    const factor = typeof r.factor === 'number' && r.factor > 0 ? r.factor : fail(`${K.ropeScaling}.factor`, 'must be a positive number');
    if (type === 'linear') ropeScaling = { type: 'linear', factor };
    else if (type === 'llama3') {
      const n = (k: string): number => (typeof r[k] === 'number' && (r[k] as number) > 0 ? (r[k] as number) : fail(`${K.ropeScaling}.${k}`, 'must be a positive number'));
      ropeScaling = { type: 'llama3', factor, lowFreqFactor: n('low_freq_factor'), highFreqFactor: n('high_freq_factor'), originalContextLength: n('original_max_position_embeddings') };
    } else if (type === 'yarn') {
      ropeScaling = { type: 'yarn', factor, originalContextLength: typeof r.original_max_position_embeddings === 'number' ? r.original_max_position_embeddings : 0 };
    } else if (type !== 'default') fail(K.ropeScaling, `type '${String(type)}' is not a RoPE scaling the runtime knows (linear, llama3, yarn)`);
  }
  const tied = config[K.tiedEmbeddings];
  return {
    vocabSize: int(K.vocabSize),
    ...commonFields(r, K, headCount, 1e-6),
    embeddingLength,
    headCount,
    headDim,
    ropeScaling,
    tiedEmbeddings: tied === true,
    ropeDimensions: headDim,
  };
}

/**
 * Llama 3's per-dimension divisors of the rotary frequencies (transformers'
 * _compute_llama3_parameters; llama.cpp stores them as rope_freqs.weight):
 * wavelengths above original_context / low_freq_factor are divided by
 * `factor`, below original_context / high_freq_factor kept, and blended in
 * between.
 */
export function llama3RopeFactors(h: ModelHyperparameters): Float32Array | undefined {
  const r = h.ropeScaling;
  if (r.type !== 'llama3') return undefined;
  const half = h.ropeDimensions / 2;
  const out = new Float32Array(half);
  const lowWavelen = r.originalContextLength / r.lowFreqFactor;
  const highWavelen = r.originalContextLength / r.highFreqFactor;
  for (let i = 0; i < half; i++) {
    const freq = 1 / h.ropeFreqBase ** ((2 * i) / h.ropeDimensions);
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < highWavelen) out[i] = 1;
    else if (wavelen > lowWavelen) out[i] = r.factor;
    else {
      const smooth = (r.originalContextLength / wavelen - r.lowFreqFactor) / (r.highFreqFactor - r.lowFreqFactor);
      out[i] = 1 / ((1 - smooth) / r.factor + smooth);
    }
  }
  return out;
}
