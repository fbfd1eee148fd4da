// compareModels: how far a compressed model is from its original, tensor by
// tensor (RMSE, SQNR, cosine, size), reading one tensor of each at a time.
// Understands GGUF blocks (Q4_0/Q4_1/Q8_0), compressed-tensors
// pack-quantized weights (weight_packed + weight_scale [+ weight_zero_point]),
// sparse-24-bitmask weights (compressed + bitmask + shape, decompressed to
// dense) and plain float tensors. For the HTML report it also bins the weights of
// the worst tensors, raw and in units of their quantization step, so the
// code grid can be drawn under them.
import { SlimTensorError } from '../errors';
import { jsonTooDeep } from '../formats/json';
import { decodePackQuantized, decodeSparse24Bitmask, modulePrefix, schemeFromConfig, sparse24Names } from '../formats/compressed-tensors';
import { quoteName } from '../formats/gguf-header';
import { dequantize, quantizationError, QuantizedTensor, type FloatDType, type QuantizationError } from '../quantize';
import { decompress24 } from '../sparsity';
import { Tensor } from '../tensor';
import { f16ToF32, bf16ToF32 } from '../half';
import { toFloat32 } from './convert';
import { floatDtypeOf, openModel, viewStored, type ModelSource, type SourceTensor } from './source';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { sizeOnDisk } from './output';
import { sameShape } from '../options';
import { denseError } from './error';
import type { ModelEvaluation } from '../model/evaluate';

export interface Histogram {
  /** Left edge of the first bin and right edge of the last. */
  min: number;
  max: number;
  counts: number[];
}

export interface GridHistogram extends Histogram {
  /** Integer code levels (in step units) the format can store. */
  levels: [number, number];
  /** What the axis means, e.g. 'x / d' or 'x / s + z'. */
  axis: string;
  /** Values outside [min, max] (clipped by the grid). */
  outside: number;
}

export interface TensorComparison {
  name: string;
  shape: readonly number[];
  originalType: string;
  /** 'Q4_0', 'int4 g128 sym', 'F16', ...; 'missing' when the compressed model lacks it. */
  compressedType: string;
  originalBytes: number;
  /** Bytes of every tensor that stores it (weight_packed + scale + zero point + shape). */
  compressedBytes: number;
  error: QuantizationError | undefined;
  /** Set for the tensors chosen for histograms. */
  histogram?: Histogram;
  grid?: GridHistogram;
}

export interface ComparisonReport {
  original: { path: string; format: string; bytes: number; tensors: number };
  compressed: { path: string; format: string; bytes: number; tensors: number };
  tensors: TensorComparison[];
  /** Over all compared tensors together. */
  total: { weights: number; rmse: number; sqnrDb: number; originalBytes: number; compressedBytes: number; ratio: number };
  /** Both models run on a token file (report --eval): perplexity, KL divergence, top-1 agreement. */
  evaluation?: ModelEvaluation;
}

export interface CompareOptions {
  /** Tensors to bin for histograms: the N lowest-SQNR compressed ones (default 6). */
  histograms?: number;
  /** Bins of the raw-weight histogram (default 80). */
  bins?: number;
}

interface Located {
  kind: 'same' | 'packed' | 'sparse24' | 'missing';
  names: string[];
}

function locate(orig: SourceTensor, comp: ModelSource): Located {
  if (comp.tensors.some((t) => t.name === orig.name)) return { kind: 'same', names: [orig.name] };
  const prefix = modulePrefix(orig.name);
  const has = (suffix: string): boolean => comp.tensors.some((t) => t.name === `${prefix}.${suffix}`);
  if (orig.name.endsWith('.weight') && has('weight_packed')) {
    return { kind: 'packed', names: ['weight_packed', 'weight_scale', 'weight_zero_point', 'weight_shape'].filter(has).map((s) => `${prefix}.${s}`) };
  }
  if (orig.name.endsWith('.weight') && has('compressed') && has('bitmask') && has('shape')) {
    const n = sparse24Names(prefix);
    return { kind: 'sparse24', names: [n.compressed, n.bitmask, n.shape] };
  }
  return { kind: 'missing', names: [] };
}

async function readConfig(folder: string | undefined): Promise<unknown> {
  if (folder === undefined) return undefined;
  try {
    const config: unknown = JSON.parse(await fsp.readFile(path.join(folder, 'config.json'), 'utf8'));
    // Like an unreadable one: a config.json that is not an object (null, a list), or nests without bound.
    return typeof config === 'object' && config !== null && !Array.isArray(config) && !jsonTooDeep(config) ? config : undefined;
  } catch {
    return undefined;
  }
}

async function readTensor(src: ModelSource, name: string): Promise<Tensor | QuantizedTensor> {
  const t = src.tensors.find((x) => x.name === name) as SourceTensor;
  const v = viewStored(t, await src.readBytes(name));
  if (v === undefined) throw new SlimTensorError(`compareModels: tensor ${quoteName(name)} in ${src.path} is stored as ${t.storage}, which slimtensor cannot read`, 'ERR_UNSUPPORTED');
  return v;
}

/** The compressed form of one original tensor: a QuantizedTensor or a dense float Tensor. */
async function loadCompressed(comp: ModelSource, loc: Located, config: unknown, orig: SourceTensor): Promise<{ value: Tensor | QuantizedTensor; type: string; bytes: number }> {
  const bytes = loc.names.reduce((s, n) => s + (comp.tensors.find((t) => t.name === n) as SourceTensor).byteLength, 0);
  if (loc.kind === 'same') {
    const t = comp.tensors.find((x) => x.name === orig.name) as SourceTensor;
    return { value: await readTensor(comp, orig.name), type: t.storage, bytes };
  }
  const prefix = modulePrefix(orig.name);
  if (loc.kind === 'sparse24') {
    const [compressed, bitmask, shape] = (await Promise.all(loc.names.map((n) => readTensor(comp, n)))) as [Tensor, Tensor, Tensor];
    const s = decodeSparse24Bitmask({ prefix, compressed, bitmask, shape });
    let dense: Tensor;
    try {
      dense = (await decompress24(s)) as Tensor;
    } catch (e) {
      // a bitmask group without exactly two bits: the file is at fault
      if (e instanceof SlimTensorError) throw new SlimTensorError(`compressed-tensors ${quoteName(prefix)} (sparse-24-bitmask) in ${comp.path}: ${e.message}`, 'ERR_FORMAT');
      throw e;
    }
    return { value: dense, type: `sparse-24-bitmask ${compressed.dtype.toUpperCase()}`, bytes };
  }
  const get = async (s: string): Promise<Tensor | undefined> => (loc.names.includes(`${prefix}.${s}`) ? ((await readTensor(comp, `${prefix}.${s}`)) as Tensor) : undefined);
  const scheme = schemeFromConfig(config, prefix);
  const bits = scheme?.num_bits === 4 || scheme?.num_bits === 8 ? scheme.num_bits : undefined;
  const q = decodePackQuantized(
    {
      prefix,
      packed: (await get('weight_packed')) as Tensor,
      scale: (await get('weight_scale')) as Tensor,
      ...(loc.names.includes(`${prefix}.weight_zero_point`) ? { zeroPoint: (await get('weight_zero_point')) as Tensor } : {}),
      shape: (await get('weight_shape')) as Tensor,
    },
    bits,
  );
  const cols = q.shape[1] as number;
  const channel = scheme?.strategy !== undefined ? scheme.strategy === 'channel' : q.groupSize === cols;
  return { value: q, type: `${q.format} ${channel ? 'channel' : `g${q.groupSize}`} ${q.symmetric ? 'sym' : 'asym'}`, bytes };
}

/** The original as a float Tensor (dequantized when it is itself stored quantized). */
async function originalFloat(v: Tensor | QuantizedTensor): Promise<Tensor> {
  if (v instanceof QuantizedTensor) return dequantize(v);
  return v;
}

async function errorOf(orig: Tensor, comp: Tensor | QuantizedTensor, name: string): Promise<QuantizationError> {
  if (!sameShape(orig.shape, comp.shape)) {
    throw new SlimTensorError(`compareModels: tensor ${quoteName(name)} is [${orig.shape.join(', ')}] in the original but [${comp.shape.join(', ')}] in the compressed model`, 'ERR_SHAPE');
  }
  if (comp instanceof QuantizedTensor) return quantizationError(orig, comp);
  if (floatDtypeOf({ dtype: comp.dtype } as SourceTensor) === undefined) throw new SlimTensorError(`compareModels: tensor ${quoteName(name)} is ${comp.dtype} in the compressed model; cannot compare with floats`, 'ERR_DTYPE');
  return denseError(orig, comp);
}

/** Bins values into `bins` equal bins over [min, max]. */
function histogram(x: Float32Array, bins: number): Histogram {
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < x.length; i++) {
    const v = x[i] as number;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  if (!(min <= max)) return { min: 0, max: 0, counts: [] };
  if (min === max) max = min + 1;
  const counts = new Array<number>(bins).fill(0);
  const k = bins / (max - min);
  for (let i = 0; i < x.length; i++) {
    const b = Math.min(bins - 1, Math.floor(((x[i] as number) - min) * k));
    counts[b] = (counts[b] as number) + 1;
  }
  return { min, max, counts };
}

/**
 * Each weight in units of its group's step (x/d for Q4_0/Q5_0/Q8_0, (x-m)/d
 * for Q4_1/Q5_1, x/s + z for int4/int8): the quantizer rounds these to the
 * integer levels, so a histogram over the grid shows how the codes are
 * used. Undefined for the K-quants, whose step is a sub-block scale times a
 * super-block scale (no one grid per block).
 */
function gridHistogram(x: Float32Array, q: QuantizedTensor): GridHistogram | undefined {
  const cols = q.shape[q.shape.length - 1] as number;
  const group = q.groupSize;
  const groupsPerRow = cols / group;
  let levels: [number, number];
  let axis: string;
  let scaleOf: (g: number) => number;
  let offsetOf: (g: number) => number;
  const asym = q.format === 'q4_1' || q.format === 'q5_1';
  if (q.format === 'q4_0' || q.format === 'q8_0' || q.format === 'q4_1' || q.format === 'q5_0' || q.format === 'q5_1') {
    const bytes = q.data as Uint8Array;
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const bb = { q4_0: 18, q4_1: 20, q5_0: 22, q5_1: 24, q8_0: 34 }[q.format];
    scaleOf = (g) => f16ToF32(dv.getUint16(g * bb, true));
    if (asym) {
      offsetOf = (g) => f16ToF32(dv.getUint16(g * bb + 2, true));
      levels = q.format === 'q4_1' ? [0, 15] : [0, 31];
      axis = '(x − m) / d';
    } else {
      offsetOf = () => 0;
      // Q4_0 stores d = m/−8, so x/d spans [−8, 8]: codes q−8 in −8..7 (Q5_0: −16..15).
      levels = q.format === 'q4_0' ? [-8, 7] : q.format === 'q5_0' ? [-16, 15] : [-127, 127];
      axis = 'x / d';
    }
  } else if (q.format === 'int4' || q.format === 'int8') {
    const s = q.scales as Tensor;
    const sd = s.data as Uint16Array | Float32Array;
    scaleOf = s.dtype === 'f32' ? (g) => sd[g] as number : s.dtype === 'f16' ? (g) => f16ToF32(sd[g] as number) : (g) => bf16ToF32(sd[g] as number);
    const z = q.zeros?.data;
    offsetOf = z === undefined ? () => 0 : (g) => z[g] as number;
    levels = q.format === 'int4' ? [-8, 7] : [-128, 127];
    axis = z === undefined ? 'x / s' : 'x / s + z';
  } else {
    return undefined;
  }
  const lo = levels[0] - 2;
  const hi = levels[1] + 2;
  const perLevel = levels[1] - levels[0] > 32 ? 1 : 8;
  const bins = (hi - lo) * perLevel;
  const counts = new Array<number>(bins).fill(0);
  let outside = 0;
  for (let i = 0; i < x.length; i++) {
    const g = Math.floor(i / cols) * groupsPerRow + Math.floor((i % cols) / group);
    const d = scaleOf(g);
    const v = x[i] as number;
    const u = d === 0 ? 0 : asym ? (v - offsetOf(g)) / d : v / d + offsetOf(g);
    const b = Math.floor((u - lo) * perLevel);
    if (b < 0 || b >= bins) outside++;
    else counts[b] = (counts[b] as number) + 1;
  }
  return { min: lo, max: hi, counts, levels, axis, outside };
}

/** Compares every tensor of `original` with its counterpart in `compressed`. */
export async function compareModels(original: string, compressed: string, options: CompareOptions = {}): Promise<ComparisonReport> {
  const nHist = options.histograms ?? 6;
  const bins = options.bins ?? 80;
  const orig = await openModel(original);
  try {
    const comp = await openModel(compressed);
    try {
      const config = await readConfig(comp.folder);
      const rows: TensorComparison[] = [];
      for (const t of orig.tensors) {
        const loc = locate(t, comp);
        const row: TensorComparison = { name: t.name, shape: t.shape, originalType: t.storage, compressedType: 'missing', originalBytes: t.byteLength, compressedBytes: 0, error: undefined };
        rows.push(row);
        if (loc.kind === 'missing') continue;
        const c = await loadCompressed(comp, loc, config, t);
        row.compressedType = c.type;
        row.compressedBytes = c.bytes;
        const o = await readTensor(orig, t.name);
        if (!(o instanceof QuantizedTensor) && floatDtypeOf(t) === undefined) {
          // Integer tensors (ids, masks): equal or not.
          const same = c.value instanceof Tensor && Buffer.compare(Buffer.from(o.data.buffer, o.data.byteOffset, o.data.byteLength), Buffer.from(c.value.data.buffer, c.value.data.byteOffset, c.value.data.byteLength)) === 0;
          row.error = same ? { rmse: 0, maxAbs: 0, sqnrDb: Infinity, cosine: 1 } : undefined;
          continue;
        }
        row.error = await errorOf(await originalFloat(o), c.value, t.name);
      }
      // Histograms for the most damaged compressed tensors.
      const chosen = rows
        .filter((r) => r.error !== undefined && r.compressedType !== r.originalType && r.shape.length >= 2)
        .sort((a, b) => (a.error as QuantizationError).sqnrDb - (b.error as QuantizationError).sqnrDb)
        .slice(0, nHist);
      for (const r of chosen) {
        const t = orig.tensors.find((x) => x.name === r.name) as SourceTensor;
        const o = await originalFloat(await readTensor(orig, r.name));
        const x = toFloat32(o.data as Float32Array | Uint16Array, o.dtype as FloatDType);
        r.histogram = histogram(x, bins);
        const c = await loadCompressed(comp, locate(t, comp), config, t);
        const grid = c.value instanceof QuantizedTensor ? gridHistogram(x, c.value) : undefined;
        if (grid !== undefined) r.grid = grid;
      }
      let weights = 0;
      let se = 0;
      let sx = 0;
      for (const r of rows) {
        if (r.error === undefined || r.compressedType === 'missing') continue;
        const n = r.shape.reduce((a, d) => a * d, 1);
        weights += n;
        se += r.error.rmse * r.error.rmse * n;
        // SQNR = 10 log10(Σx²/Σe²): recover Σx² from each tensor's own SQNR.
        if (Number.isFinite(r.error.sqnrDb)) sx += r.error.rmse * r.error.rmse * n * 10 ** (r.error.sqnrDb / 10);
      }
      const originalBytes = rows.reduce((s, r) => s + r.originalBytes, 0);
      const compressedBytes = rows.reduce((s, r) => s + r.compressedBytes, 0);
      return {
        original: { path: original, format: orig.format, bytes: await sizeOnDisk(original), tensors: orig.tensors.length },
        compressed: { path: compressed, format: comp.folder !== undefined && config !== undefined && (config as { quantization_config?: unknown }).quantization_config !== undefined ? 'compressed-tensors' : comp.format, bytes: await sizeOnDisk(compressed), tensors: comp.tensors.length },
        tensors: rows,
        total: {
          weights,
          rmse: weights === 0 ? 0 : Math.sqrt(se / weights),
          sqnrDb: se === 0 ? Infinity : 10 * Math.log10(sx / se),
          originalBytes,
          compressedBytes,
          ratio: compressedBytes === 0 ? 0 : originalBytes / compressedBytes,
        },
      };
    } finally {
      await comp.close();
    }
  } finally {
    await orig.close();
  }
}
