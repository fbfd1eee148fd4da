// compressed-tensors (vLLM) output: the safetensors tensors of a
// pack-quantized Linear weight and the quantization_config of config.json
// (shared/reference/FORMATS.md), and the way back (decoding a folder's
// tensors into QuantizedTensors, for reports).
// Beside pack-quantized, sparse-24-bitmask (2:4 sparse weights, in the
// compressed-tensors convention: the module prefix, `.weight` dropped).
import { SlimTensorError } from '../errors';
import { QuantizedTensor, type FloatDType, type QuantizeOptions } from '../quantize';
import { Sparse24Tensor } from '../sparsity';
import { Tensor } from '../tensor';
import { quoteName } from './gguf-header';
import { setOwn } from './json';
import { DTYPE_TO_SAFETENSORS, type PlannedTensor } from './safetensors-header';

/** One quantization scheme of a config group. */
export interface CTScheme {
  bits: 4 | 8;
  symmetric: boolean;
  /** 'group': groupSize values per scale; 'channel': one scale per output row. */
  strategy: 'group' | 'channel';
  groupSize?: number;
}

export function schemeKey(s: CTScheme): string {
  return `${s.bits}:${s.symmetric ? 's' : 'a'}:${s.strategy}:${s.strategy === 'group' ? s.groupSize : ''}`;
}

/** The scheme a QuantizedTensor (int4/int8) was made with. */
export function schemeOf(q: QuantizedTensor): CTScheme {
  if (q.format !== 'int4' && q.format !== 'int8') throw new SlimTensorError(`compressed-tensors: ${q.format} is not a compressed-tensors format (int4, int8)`, 'ERR_VALUE');
  const cols = q.shape[q.shape.length - 1] as number;
  const channel = q.groupSize === cols;
  return { bits: q.format === 'int4' ? 4 : 8, symmetric: q.symmetric, strategy: channel ? 'channel' : 'group', ...(channel ? {} : { groupSize: q.groupSize }) };
}

/** The scheme quantize() options (int4/int8) give. */
export function schemeOfOptions(o: QuantizeOptions): CTScheme {
  const channel = o.groupSize === 'channel';
  return { bits: o.format === 'int4' ? 4 : 8, symmetric: o.symmetric !== false, strategy: channel ? 'channel' : 'group', ...(channel ? {} : { groupSize: o.groupSize as number }) };
}

/** `model.layers.0.mlp.up_proj.weight` -> `model.layers.0.mlp.up_proj`: the module compressed-tensors names. */
export function modulePrefix(weightName: string): string {
  return weightName.endsWith('.weight') ? weightName.slice(0, -'.weight'.length) : weightName;
}

/** How one kind of compressed weight is laid out in safetensors. */
export interface WeightCodec {
  /** quantization_config.format */
  format: string;
  /** The tensors written for a weight of `shape` (2-D [N, K]). */
  plan(prefix: string, shape: readonly number[], scheme: CTScheme, scaleDtype: FloatDType): PlannedTensor[];
  /** Their bytes, in plan order. */
  encode(q: QuantizedTensor): ArrayBufferView[];
}

/** Words of `bits`-bit values packed 32/bits to an int32. */
function packedLength(n: number, bits: number): number {
  return Math.ceil((n * bits) / 32);
}

/**
 * Zero points [rows, groups] (signed, int8) packed along dim 0, as
 * compressed-tensors' pack_to_int32(packed_dim=0) does: biased by
 * 2^(bits-1) like the weights, 32/bits rows per int32, the first row in the
 * lowest bits. Result: Int32Array [ceil(rows·bits/32), groups].
 */
export function packZeroPoints(zeros: Int8Array, rows: number, groups: number, bits: number): Int32Array {
  const per = 32 / bits;
  const mask = (1 << bits) - 1;
  const bias = 1 << (bits - 1);
  const out = new Int32Array(packedLength(rows, bits) * groups);
  for (let r = 0; r < rows; r++) {
    const shift = bits * (r % per);
    const base = Math.floor(r / per) * groups;
    for (let g = 0; g < groups; g++) out[base + g] = (out[base + g] as number) | ((((zeros[r * groups + g] as number) + bias) & mask) << shift);
  }
  return out;
}

/** The inverse of packZeroPoints. */
export function unpackZeroPoints(packed: Int32Array, rows: number, groups: number, bits: number): Int8Array {
  const per = 32 / bits;
  const mask = (1 << bits) - 1;
  const bias = 1 << (bits - 1);
  const out = new Int8Array(rows * groups);
  for (let r = 0; r < rows; r++) {
    const shift = bits * (r % per);
    const base = Math.floor(r / per) * groups;
    for (let g = 0; g < groups; g++) out[r * groups + g] = (((packed[base + g] as number) >>> shift) & mask) - bias;
  }
  return out;
}

function checkMatrix(prefix: string, shape: readonly number[]): [number, number] {
  if (shape.length !== 2) throw new SlimTensorError(`compressed-tensors: ${quoteName(prefix)} is ${shape.length}-D; pack-quantized stores 2-D Linear weights [out, in]`, 'ERR_SHAPE');
  return [shape[0] as number, shape[1] as number];
}

/** pack-quantized: weight_packed, weight_scale, weight_zero_point (asymmetric), weight_shape. */
export const PACK_QUANTIZED: WeightCodec = {
  format: 'pack-quantized',
  plan(prefix, shape, scheme, scaleDtype) {
    const [n, k] = checkMatrix(prefix, shape);
    const groups = scheme.strategy === 'channel' ? 1 : k / (scheme.groupSize as number);
    const out: PlannedTensor[] = [
      { name: `${prefix}.weight_packed`, dtype: 'I32', shape: [n, packedLength(k, scheme.bits)] },
      { name: `${prefix}.weight_scale`, dtype: DTYPE_TO_SAFETENSORS[scaleDtype], shape: [n, groups] },
    ];
    if (!scheme.symmetric) out.push({ name: `${prefix}.weight_zero_point`, dtype: 'I32', shape: [packedLength(n, scheme.bits), groups] });
    out.push({ name: `${prefix}.weight_shape`, dtype: 'I64', shape: [2] });
    return out;
  },
  encode(q) {
    const [n, k] = checkMatrix('weight', q.shape);
    const scales = q.scales as Tensor;
    const parts: ArrayBufferView[] = [q.data, scales.data];
    if (q.zeros !== undefined) parts.push(packZeroPoints(q.zeros.data, n, scales.size / Math.max(n, 1), q.format === 'int4' ? 4 : 8));
    parts.push(new BigInt64Array([BigInt(n), BigInt(k)]));
    return parts;
  },
};

/** A config group: one scheme and the modules it applies to. */
export interface CTGroup {
  scheme: CTScheme;
  /** Module names (prefixes) using this scheme. */
  modules: string[];
}

/**
 * The compressed-tensors release whose writer (ModelCompressor.update_config)
 * and readers the quantization_config is checked against; written as its
 * `version` field, which readers discard.
 */
export const COMPRESSED_TENSORS_VERSION = '0.18.0';

/**
 * config.json's quantization_config for these groups, with the fields and
 * the key order (sorted) compressed-tensors writes. The group with the most
 * modules targets the class "Linear" and the others list their modules by
 * name (an exact name outranks a class in compressed-tensors' and vLLM's
 * matching). vLLM matches a merged layer (`qkv_proj`, `gate_up_proj`,
 * FusedMoE experts) by class before it looks at its shards' names, so when
 * a smaller group holds such a shard (`mergedShards`), every group lists its
 * modules by name. `ignore` lists every Linear module left unquantized.
 *
 * Each weights entry omits `scale_dtype` and `zp_dtype` (added in
 * compressed-tensors 0.13): older readers (vLLM 0.13 and before) reject the
 * config with "Extra inputs are not permitted", newer ones default them to
 * what would be written (no scale dtype: the model's; zero points int8).
 */
export function quantizationConfig(groups: readonly CTGroup[], ignore: readonly string[], mergedShards: ReadonlySet<string> = new Set(), format = PACK_QUANTIZED.format): Record<string, unknown> {
  const sorted = groups.slice().sort((a, b) => b.modules.length - a.modules.length);
  const byName = sorted.slice(1).some((g) => g.modules.some((m) => mergedShards.has(m)));
  const configGroups: Record<string, unknown> = {};
  sorted.forEach((g, i) => {
    configGroups[`group_${i}`] = {
      format,
      input_activations: null,
      output_activations: null,
      targets: i === 0 && !byName ? ['Linear'] : g.modules.slice(),
      weights: {
        actorder: null,
        block_structure: null,
        dynamic: false,
        group_size: g.scheme.strategy === 'group' ? (g.scheme.groupSize as number) : null,
        num_bits: g.scheme.bits,
        observer: 'minmax',
        observer_kwargs: {},
        strategy: g.scheme.strategy,
        symmetric: g.scheme.symmetric,
        type: 'int',
      },
    };
  });
  return {
    config_groups: configGroups,
    format,
    global_compression_ratio: null,
    ignore: ignore.slice(),
    kv_cache_scheme: null,
    quant_method: 'compressed-tensors',
    quantization_status: 'compressed',
    sparsity_config: {},
    transform_config: {},
    version: COMPRESSED_TENSORS_VERSION,
  };
}

/** A JSON value with every object's keys sorted, as Python's json.dump(sort_keys=True) writes config.json. */
export function sortKeysDeep(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeysDeep);
  if (typeof v !== 'object' || v === null) return v;
  const o = v as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(o).sort()) setOwn(out, k, sortKeysDeep(o[k]));
  return out;
}

// ---- what vLLM runs -------------------------------------------------------------------

/**
 * vLLM runs pack-quantized Linear layers (its WNA16 scheme) on the Marlin
 * kernel on NVIDIA GPUs (vllm/model_executor/layers/quantization/utils/
 * marlin_utils.py): output size per partition a multiple of
 * GPTQ_MARLIN_MIN_THREAD_N = 64, input size per partition a multiple of
 * GPTQ_MARLIN_MIN_THREAD_K = 128 and of the group size, group sizes
 * MARLIN_SUPPORTED_GROUP_SIZES = [-1 (channel), 32, 64, 128], types uint4b8
 * and uint8b128 (symmetric) or uint4 with zero points. Its other WNA16
 * kernels are narrower (Exllama: fp16 activations, no zero points; Machete:
 * Hopper only), so a layer outside these rules may find no kernel.
 */
export const MARLIN_MIN_N = 64;
export const MARLIN_MIN_K = 128;
export const MARLIN_GROUP_SIZES: readonly number[] = [32, 64, 128];

/** Why vLLM's Marlin kernel cannot run a scheme (bits, symmetry, group size), or undefined. */
export function marlinSchemeProblem(bits: 4 | 8, symmetric: boolean, groupSize: number | 'channel'): string | undefined {
  if (bits === 8 && !symmetric) return "vLLM's Marlin kernel takes zero points with 4-bit weights only (uint4), not asymmetric INT8";
  if (groupSize !== 'channel' && !MARLIN_GROUP_SIZES.includes(groupSize)) return `vLLM's Marlin kernel takes group sizes ${MARLIN_GROUP_SIZES.join(', ')} or one group per row, not ${groupSize}`;
  return undefined;
}

/**
 * Why vLLM's Marlin kernel cannot run a layer [n, k] (a merged layer: the
 * sum of its shards' n) with this scheme, checked for one GPU (tensor
 * parallel size 1), or undefined.
 */
export function marlinShapeProblem(n: number, k: number, scheme: CTScheme): string | undefined {
  const s = marlinSchemeProblem(scheme.bits, scheme.symmetric, scheme.strategy === 'channel' ? 'channel' : (scheme.groupSize as number));
  if (s !== undefined) return s;
  const bad: string[] = [];
  if (n % MARLIN_MIN_N !== 0) bad.push(`${n} outputs are not a multiple of ${MARLIN_MIN_N}`);
  // (a multiple of 128 is one of every Marlin group size too)
  if (k % MARLIN_MIN_K !== 0) bad.push(`${k} inputs are not a multiple of ${MARLIN_MIN_K}`);
  return bad.length === 0 ? undefined : `vLLM's Marlin kernel needs outputs a multiple of ${MARLIN_MIN_N} and inputs a multiple of ${MARLIN_MIN_K}: ${bad.join(' and ')}`;
}

/** The parts of one pack-quantized weight found in a folder. */
export interface CTWeightParts {
  prefix: string;
  packed: Tensor;
  scale: Tensor;
  zeroPoint?: Tensor;
  shape: Tensor;
}

/** Module prefixes with a weight_packed tensor among `names`. */
export function packedPrefixes(names: Iterable<string>): string[] {
  const out: string[] = [];
  for (const n of names) if (n.endsWith('.weight_packed')) out.push(n.slice(0, -'.weight_packed'.length));
  return out;
}

/** Rebuilds the QuantizedTensor a pack-quantized weight encodes (validated). */
export function decodePackQuantized(p: CTWeightParts, bitsHint?: 4 | 8): QuantizedTensor {
  const where = `compressed-tensors ${quoteName(p.prefix)}`;
  const fail: (m: string) => never = (m) => {
    throw new SlimTensorError(`${where}: ${m}`, 'ERR_FORMAT');
  };
  if (p.shape.dtype !== 'i64' && p.shape.dtype !== 'i32') fail(`weight_shape must be I64, got ${p.shape.dtype}`);
  if (p.shape.size !== 2) fail(`weight_shape must hold 2 values, got ${p.shape.size}`);
  const dims = Array.from(p.shape.data as ArrayLike<number | bigint>, Number);
  const [n, k] = dims as [number, number];
  if (!dims.every((d) => Number.isSafeInteger(d) && d >= 0)) fail(`weight_shape [${dims.join(', ')}] is not a shape`);
  if (p.packed.dtype !== 'i32' || p.packed.shape.length !== 2 || p.packed.shape[0] !== n) fail(`weight_packed must be I32 [${n}, words], got ${p.packed.dtype} [${p.packed.shape.join(', ')}]`);
  const words = p.packed.shape[1] as number;
  let bits: 4 | 8;
  if (bitsHint !== undefined) bits = bitsHint;
  else if (words === packedLength(k, 4) && words !== packedLength(k, 8)) bits = 4;
  else if (words === packedLength(k, 8)) bits = 8;
  else return fail(`weight_packed has ${words} words per row; ${k} values pack into ${packedLength(k, 4)} (4-bit) or ${packedLength(k, 8)} (8-bit)`);
  if (words !== packedLength(k, bits)) fail(`weight_packed has ${words} words per row; ${k} ${bits}-bit values need ${packedLength(k, bits)}`);
  const sd = p.scale.dtype;
  if (sd !== 'f16' && sd !== 'bf16' && sd !== 'f32') fail(`weight_scale must be F16, BF16 or F32, got ${sd}`);
  if (p.scale.shape.length !== 2 || p.scale.shape[0] !== n) fail(`weight_scale must be [${n}, groups], got [${p.scale.shape.join(', ')}]`);
  const groups = p.scale.shape[1] as number;
  if (groups === 0 || k % groups !== 0) fail(`weight_scale has ${groups} groups per row, which do not divide ${k}`);
  let zeros: Tensor<'i8'> | undefined;
  if (p.zeroPoint !== undefined) {
    const z = p.zeroPoint;
    if (z.dtype !== 'i32' || z.shape.length !== 2 || z.shape[0] !== packedLength(n, bits) || z.shape[1] !== groups) {
      fail(`weight_zero_point must be I32 [${packedLength(n, bits)}, ${groups}], got ${z.dtype} [${z.shape.join(', ')}]`);
    }
    zeros = Tensor.from(unpackZeroPoints(z.data as Int32Array, n, groups, bits), [n, groups], 'i8');
  }
  return new QuantizedTensor({
    format: bits === 4 ? 'int4' : 'int8',
    shape: [n, k],
    data: p.packed.data as Int32Array,
    scales: p.scale as Tensor<FloatDType>,
    zeros,
    groupSize: k / groups,
  });
}

/** The weights scheme quantization_config assigns to a module (exact name, then re:, then Linear), if any. */
export function schemeFromConfig(config: unknown, prefix: string): { num_bits?: number; symmetric?: boolean; strategy?: string } | undefined {
  const qc = (config as { quantization_config?: { config_groups?: Record<string, unknown>; ignore?: unknown } } | null)?.quantization_config;
  const groups = qc?.config_groups;
  if (typeof groups !== 'object' || groups === null) return undefined;
  let byRegex: unknown;
  let byClass: unknown;
  for (const g of Object.values(groups)) {
    const targets = (g as { targets?: unknown }).targets;
    if (!Array.isArray(targets)) continue;
    for (const t of targets) {
      if (typeof t !== 'string') continue;
      if (t === prefix) return (g as { weights?: { num_bits?: number; symmetric?: boolean; strategy?: string } }).weights;
      if (t.startsWith('re:')) {
        try {
          if (new RegExp(t.slice(3)).test(prefix)) byRegex ??= (g as { weights?: unknown }).weights;
        } catch {
          // an invalid pattern matches nothing
        }
      } else if (t === 'Linear') byClass ??= (g as { weights?: unknown }).weights;
    }
  }
  return (byRegex ?? byClass) as { num_bits?: number; symmetric?: boolean; strategy?: string } | undefined;
}

// ---- sparse-24-bitmask ----------------------------------------------------------------

/** quantization_config.sparsity_config.format of 2:4 weights stored as kept values + bitmask. */
export const SPARSE_24_BITMASK_FORMAT = 'sparse-24-bitmask';

/** Tensor names of one sparse-24-bitmask weight, in the order they are planned and encoded. */
export function sparse24Names(prefix: string): { compressed: string; bitmask: string; shape: string } {
  return { compressed: `${prefix}.compressed`, bitmask: `${prefix}.bitmask`, shape: `${prefix}.shape` };
}

/**
 * The tensors of a 2:4 weight [rows, cols]: `.compressed` (the kept values in
 * the weight's dtype, [rows, cols/2]), `.bitmask` (U8 [rows, ceil(cols/8)],
 * little bit order) and `.shape` (I64 [2, 1], the dense shape).
 */
export function planSparse24(prefix: string, shape: readonly number[], dtype: FloatDType): PlannedTensor[] {
  if (shape.length !== 2) throw new SlimTensorError(`compressed-tensors: ${quoteName(prefix)} is ${shape.length}-D; sparse-24-bitmask stores 2-D Linear weights [out, in]`, 'ERR_SHAPE');
  const [rows, cols] = shape as [number, number];
  if (cols % 4 !== 0) throw new SlimTensorError(`compressed-tensors: ${quoteName(prefix)} has rows of ${cols} values; 2:4 needs a multiple of 4`, 'ERR_SHAPE');
  const n = sparse24Names(prefix);
  return [
    { name: n.compressed, dtype: DTYPE_TO_SAFETENSORS[dtype], shape: [rows, cols / 2] },
    { name: n.bitmask, dtype: 'U8', shape: [rows, Math.ceil(cols / 8)] },
    { name: n.shape, dtype: 'I64', shape: [2, 1] },
  ];
}

/** The bytes of planSparse24's tensors for a float Sparse24Tensor with a bitmask (compress24's result). */
export function encodeSparse24(s: Sparse24Tensor): ArrayBufferView[] {
  if (s.quantized || s.bitmask === undefined || s.shape.length !== 2) throw new SlimTensorError('compressed-tensors: sparse-24-bitmask encodes a 2-D float Sparse24Tensor with a bitmask', 'ERR_VALUE');
  return [(s.values as Tensor).data, s.bitmask.data, new BigInt64Array(s.shape.map((d) => BigInt(d)))];
}

/** The parts of one sparse-24-bitmask weight found in a folder. */
export interface Sparse24BitmaskParts {
  prefix: string;
  compressed: Tensor;
  bitmask: Tensor;
  shape: Tensor;
}

/** Module prefixes with `.compressed` and `.bitmask` tensors among `names`. */
export function sparse24Prefixes(names: Iterable<string>): string[] {
  const set = new Set(names);
  const out: string[] = [];
  for (const n of set) {
    if (!n.endsWith('.compressed')) continue;
    const prefix = n.slice(0, -'.compressed'.length);
    if (set.has(`${prefix}.bitmask`)) out.push(prefix);
  }
  return out;
}

/** Rebuilds the Sparse24Tensor a sparse-24-bitmask weight stores (shapes and dtypes validated; decompress24 checks the bits). */
export function decodeSparse24Bitmask(p: Sparse24BitmaskParts): Sparse24Tensor {
  const where = `compressed-tensors ${quoteName(p.prefix)} (sparse-24-bitmask)`;
  const fail: (m: string) => never = (m) => {
    throw new SlimTensorError(`${where}: ${m}`, 'ERR_FORMAT');
  };
  if (p.shape.dtype !== 'i64' && p.shape.dtype !== 'i32') fail(`.shape must be I64, got ${p.shape.dtype}`);
  if (p.shape.size !== 2) fail(`.shape must hold 2 values (a 2-D weight), got ${p.shape.size}`);
  const dims = Array.from(p.shape.data as ArrayLike<number | bigint>, Number);
  if (!dims.every((d) => Number.isSafeInteger(d) && d >= 0)) fail(`.shape [${dims.join(', ')}] is not a shape`);
  const [rows, cols] = dims as [number, number];
  if (cols % 4 !== 0) fail(`the dense shape [${rows}, ${cols}] has rows that are not a multiple of 4`);
  const c = p.compressed;
  if (c.dtype !== 'f32' && c.dtype !== 'f16' && c.dtype !== 'bf16') fail(`.compressed must be F32, F16 or BF16, got ${c.dtype}`);
  if (c.shape.length !== 2 || c.shape[0] !== rows || c.shape[1] !== cols / 2) fail(`.compressed must be [${rows}, ${cols / 2}], got [${c.shape.join(', ')}]`);
  const b = p.bitmask;
  if (b.dtype !== 'u8' || b.shape.length !== 2 || b.shape[0] !== rows || b.shape[1] !== Math.ceil(cols / 8)) fail(`.bitmask must be U8 [${rows}, ${Math.ceil(cols / 8)}], got ${b.dtype} [${b.shape.join(', ')}]`);
  return new Sparse24Tensor({ shape: [rows, cols], values: c as Tensor<FloatDType>, bitmask: b as Tensor<'u8'> });
}

/**
 * quantization_config.sparsity_config for 2:4 weights. Like the quantization
 * config, the class "Linear" is targeted and the Linear-like weights left
 * dense are listed in `ignore`; global_sparsity is the fraction of zero
 * weights in the whole model, as llm-compressor computes it.
 */
export function sparsityConfig(ignore: readonly string[], globalSparsity: number): Record<string, unknown> {
  return {
    format: SPARSE_24_BITMASK_FORMAT,
    sparsity_structure: '2:4',
    targets: ['Linear'],
    ignore: ignore.slice(),
    global_sparsity: globalSparsity,
  };
}
