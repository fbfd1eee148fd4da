// From a model path to what the native runtime loads: the architecture
// (the shared table), hyper-parameters, and for every tensor the forward
// loop uses its stored format, shape and byte ranges in the files. Headers
// are parsed here; the bytes are read by the native side, off the event
// loop. GGUF files (llama.cpp's names and layouts) and Hugging Face folders
// (config.json; plain safetensors, compressed-tensors pack-quantized int4 /
// int8, sparse-24-bitmask) are understood.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { SlimTensorError } from '../errors';
import { GGUFReader, type GGUFValue } from '../formats/gguf';
import { ggmlType } from '../formats/gguf-types';
import { SafetensorsModel, type SafetensorsModelTensor } from '../formats/safetensors';
import { schemeFromConfig } from '../formats/compressed-tensors';
import { jsonTooDeep, MAX_JSON_DEPTH } from '../formats/json';
import { dtypeCode, type DType } from '../tensor';
import {
  architectureOfGguf,
  architectureOfHfClass,
  tensorName,
  type Architecture,
  type RopeStyle,
  type TensorRole,
} from './architectures';
import { hyperparametersOfGguf, hyperparametersOfHfConfig, llama3RopeFactors, type ModelHyperparameters } from './hparams';

/** native/core/model/model_kernels.h WFormat. */
export const WEIGHT_FORMATS = {
  f32: 0, f16: 1, bf16: 2, q4_0: 3, q4_1: 4, q8_0: 5, int4: 6, int8: 7, '2:4': 8,
  q5_0: 9, q5_1: 10, q2_k: 11, q3_k: 12, q4_k: 13, q5_k: 14, q6_k: 15,
} as const;
export type WeightFormat = keyof typeof WEIGHT_FORMATS;

/** native/core/model/model.h Slot: what the forward loop does with a tensor, keyed by the role's GGUF name. */
const SLOTS: Readonly<Record<string, number>> = {
  'token_embd.weight': 0,
  'output_norm.weight': 1,
  'output.weight': 2,
  'rope_freqs.weight': 3,
  'attn_norm.weight': 10,
  'attn_q.weight': 11,
  'attn_k.weight': 12,
  'attn_v.weight': 13,
  'attn_output.weight': 14,
  'ffn_norm.weight': 15,
  'ffn_gate.weight': 16,
  'ffn_up.weight': 17,
  'ffn_down.weight': 18,
  'attn_q.bias': 19,
  'attn_k.bias': 20,
  'attn_v.bias': 21,
  'attn_q_norm.weight': 22,
  'attn_k_norm.weight': 23,
};

/** Whether a tensor is one of a block's linear weights (q, k, v, output, gate, up, down): those with activation statistics, and those a ModelBlock can replace. */
export function isBlockLinear(t: Pick<TensorSpec, 'slot'>): boolean {
  return t.slot >= 11 && t.slot <= 18 && t.slot !== 15;
}

function slotOf(role: TensorRole): number {
  const key = role.gguf.replace(/^blk\.\{L\}\./, '');
  const slot = SLOTS[key];
  if (slot === undefined) throw new SlimTensorError(`loadModel: the runtime has no use for tensor role ${role.gguf} (lib/model/load.ts SLOTS)`, 'ERR_INTERNAL');
  return slot;
}

/** A byte range of one of the plan's files. */
export interface FilePart {
  file: number;
  offset: number;
  bytes: number;
}

/** One tensor as the native loader reads it (see native/addon/model_binding.cc LoadJob). */
export interface TensorSpec {
  name: string;
  slot: number;
  layer: number;
  format: number;
  rows: number;
  cols: number;
  group: number;
  scaleDtype: number;
  valuesDtype: number;
  data: FilePart;
  scales?: FilePart;
  zeros?: FilePart;
  bitmask?: FilePart;
  /** For reports: the stored format's name. */
  formatName: WeightFormat;
}

export interface ModelPlan {
  path: string;
  /** 'gguf': a GGUF file; 'hf': a folder of safetensors with config.json. */
  source: 'gguf' | 'hf';
  /** Whose tensor names (and so Q/K layout) the files use. */
  naming: 'gguf' | 'hf';
  architecture: Architecture;
  hparams: ModelHyperparameters;
  /** The RoPE layout the stored Q/K rows need (Hugging Face layouts rotate halves). */
  rope: RopeStyle;
  ropeFactors: Float32Array | undefined;
  files: ModelFileEntry[];
  tensors: TensorSpec[];
  bosId: number | undefined;
  eosId: number | undefined;
  addBos: boolean;
  /** GGUF metadata (tokenizer, names), when the source or `hyperparameters` file is GGUF. */
  ggufMetadata: ReadonlyMap<string, GGUFValue> | undefined;
  /** The folder (its tokenizer files), for Hugging Face sources. */
  folder: string | undefined;
}

export interface PlanOptions {
  /**
   * A GGUF file whose metadata gives the architecture and hyper-parameters,
   * for a folder whose config.json has none (a compressed-tensors folder
   * slimtensor wrote from a GGUF model keeps llama.cpp's tensor names).
   */
  hyperparameters?: string;
}

const DTYPE_OF_STORAGE: Readonly<Record<string, DType>> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };

/**
 * A weight file as the header was read from it: the native loader refuses
 * to read it if any of these changed since (a rewrite in place changes size
 * or mtime; a file renamed over it within one mtime tick changes the inode).
 */
export interface ModelFileEntry {
  path: string;
  size: number;
  mtimeNs: bigint;
  ino: bigint;
  dev: bigint;
}

export async function fileEntry(p: string): Promise<ModelFileEntry> {
  const st = await fsp.stat(p, { bigint: true });
  return { path: p, size: Number(st.size), mtimeNs: st.mtimeNs, ino: st.ino, dev: st.dev };
}

function ggufInt(md: ReadonlyMap<string, GGUFValue>, key: string): number | undefined {
  const v = md.get(key);
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v < 2 ** 31 ? v : undefined;
}

function tokenIds(md: ReadonlyMap<string, GGUFValue> | undefined): { bosId?: number; eosId?: number; addBos: boolean } {
  if (md === undefined) return { addBos: false };
  const add = md.get('tokenizer.ggml.add_bos_token');
  const bosId = ggufInt(md, 'tokenizer.ggml.bos_token_id');
  return {
    ...(bosId !== undefined ? { bosId } : {}),
    ...(ggufInt(md, 'tokenizer.ggml.eos_token_id') !== undefined ? { eosId: ggufInt(md, 'tokenizer.ggml.eos_token_id') } : {}),
    // llama.cpp's default: SentencePiece vocabularies add BOS, BPE ones do not.
    addBos: bosId !== undefined && (typeof add === 'boolean' ? add : md.get('tokenizer.ggml.model') === 'llama'),
  };
}

/** Every (role, layer) of the architecture: global roles once, block roles per block. */
function* roleInstances(arch: Architecture, blocks: number): Generator<{ role: TensorRole; layer: number }> {
  for (const role of arch.global) yield { role, layer: -1 };
  for (let l = 0; l < blocks; l++) for (const role of arch.block) yield { role, layer: l };
}

/**
 * Every block has tensors of its own, so a block count above the file's
 * tensor count is a corrupt header: refused before the per-block walk
 * (a count of 2^28 would build and list a billion missing names).
 */
function checkBlockCount(blocks: number, tensorCount: number, where: string): void {
  if (blocks > tensorCount) throw new SlimTensorError(`${where}: ${blocks} blocks, but only ${tensorCount} tensors (each block has tensors of its own)`, 'ERR_FORMAT');
}

function missingError(where: string, missing: string[]): SlimTensorError {
  const shown = missing.slice(0, 8).join(', ');
  return new SlimTensorError(`${where}: missing tensor${missing.length === 1 ? '' : 's'} ${shown}${missing.length > 8 ? ` and ${missing.length - 8} more` : ''}`, 'ERR_FORMAT');
}

function matrixShape(shape: readonly number[], name: string, where: string): [number, number] {
  if (shape.length === 1) return [1, shape[0] as number];
  if (shape.length === 2) return [shape[0] as number, shape[1] as number];
  throw new SlimTensorError(`${where}: tensor ${name} is ${shape.length}-D; the runtime reads vectors and matrices`, 'ERR_SHAPE');
}

// ---- GGUF ------------------------------------------------------------------------

async function planGguf(file: string): Promise<ModelPlan> {
  const g = await GGUFReader.open(file);
  try {
    const archName = g.architecture;
    if (archName === undefined) throw new SlimTensorError(`${file}: general.architecture is missing`, 'ERR_FORMAT');
    const arch = architectureOfGguf(archName, file);
    const embd = g.tensor('token_embd.weight');
    const vocabFallback = embd?.shape[0] ?? (g.metadata.get('tokenizer.ggml.tokens') as unknown[] | undefined)?.length ?? 0;
    const hparams = hyperparametersOfGguf(g.metadata, archName, file, vocabFallback);
    checkBlockCount(hparams.blockCount, g.tensors.length, file);
    const tensors: TensorSpec[] = [];
    const missing: string[] = [];
    for (const { role, layer } of roleInstances(arch, hparams.blockCount)) {
      const name = tensorName(role, 'gguf', layer);
      const info = g.tensor(name);
      if (info === undefined) {
        if (role.required) missing.push(name);
        continue;
      }
      const type = ggmlType(info.typeId);
      const fmt = type?.dtype ?? type?.quant;
      if (fmt === undefined || !(fmt in WEIGHT_FORMATS) || fmt === 'int4' || fmt === 'int8') {
        throw new SlimTensorError(`${file}: tensor ${name} is stored as ${info.type}, which the runtime cannot multiply yet (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K)`, 'ERR_UNSUPPORTED');
      }
      const [rows, cols] = matrixShape(info.shape, name, file);
      tensors.push({
        name,
        slot: slotOf(role),
        layer,
        format: WEIGHT_FORMATS[fmt as WeightFormat],
        formatName: fmt as WeightFormat,
        rows,
        cols,
        group: 0,
        scaleDtype: 0,
        valuesDtype: 0,
        data: { file: 0, offset: info.fileOffset, bytes: info.byteLength },
      });
    }
    if (missing.length > 0) throw missingError(file, missing);
    hparams.tiedEmbeddings = g.tensor('output.weight') === undefined;
    return {
      path: file,
      source: 'gguf',
      naming: 'gguf',
      architecture: arch,
      hparams,
      rope: arch.rope,
      ropeFactors: undefined,
      files: [await fileEntry(file)],
      tensors,
      ...tokenIds(g.metadata),
      ggufMetadata: g.metadata,
      folder: undefined,
    } as ModelPlan;
  } finally {
    await g.close();
  }
}

// ---- Hugging Face folders ------------------------------------------------------

const MAX_JSON_BYTES = 16 << 20;

async function readJson(file: string): Promise<Record<string, unknown> | undefined> {
  let st;
  try {
    st = await fsp.stat(file);
  } catch {
    return undefined;
  }
  if (st.size > MAX_JSON_BYTES) throw new SlimTensorError(`${file}: ${st.size} bytes is too large for a JSON file here`, 'ERR_FORMAT');
  let v: unknown;
  try {
    v = JSON.parse(await fsp.readFile(file, 'utf8'));
  } catch (e) {
    throw new SlimTensorError(`${file}: not valid JSON (${(e as Error).message})`, 'ERR_FORMAT');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new SlimTensorError(`${file}: must hold a JSON object`, 'ERR_FORMAT');
  // Error messages quote values with JSON.stringify, which recurses.
  if (jsonTooDeep(v)) throw new SlimTensorError(`${file}: nests arrays or objects more than ${MAX_JSON_DEPTH} deep`, 'ERR_FORMAT');
  return v as Record<string, unknown>;
}

async function shapeValues(st: SafetensorsModel, t: SafetensorsModelTensor, count: number, where: string): Promise<number[]> {
  if ((t.dtype !== 'I64' && t.dtype !== 'I32') || t.shape.reduce((a, d) => a * d, 1) !== count) {
    throw new SlimTensorError(`${where}: ${t.name} must hold ${count} I64 values, got ${t.dtype} [${t.shape.join(', ')}]`, 'ERR_FORMAT');
  }
  const tensor = await st.readTensor(t.name);
  const dims = Array.from(tensor.data as ArrayLike<number | bigint>, Number);
  if (!dims.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new SlimTensorError(`${where}: ${t.name} [${dims.join(', ')}] is not a shape`, 'ERR_FORMAT');
  return dims;
}

async function planFolder(folder: string, options: PlanOptions): Promise<ModelPlan> {
  const configFile = path.join(folder, 'config.json');
  const config = (await readJson(configFile)) ?? {};
  const st = await SafetensorsModel.open(folder);
  try {
    const shardIndex = new Map(st.shards.map((s, i) => [s, i]));
    const partOf = (t: SafetensorsModelTensor): FilePart => ({ file: shardIndex.get(t.file) as number, offset: t.fileOffset, bytes: t.byteLength });
    let arch: Architecture;
    let hparams: ModelHyperparameters;
    let naming: 'gguf' | 'hf';
    let ggufMetadata: ReadonlyMap<string, GGUFValue> | undefined;
    const classes = config.architectures;
    if (Array.isArray(classes) && typeof classes[0] === 'string') {
      arch = architectureOfHfClass(classes[0], configFile);
      hparams = hyperparametersOfHfConfig(config, configFile);
      naming = 'hf';
    } else if (st.tensor('token_embd.weight') !== undefined && options.hyperparameters !== undefined) {
      // llama.cpp's names (a folder written from a GGUF model): the
      // architecture and hyper-parameters come from that GGUF file.
      const g = await GGUFReader.open(options.hyperparameters);
      try {
        const name = g.architecture ?? '';
        arch = architectureOfGguf(name, options.hyperparameters);
        hparams = hyperparametersOfGguf(g.metadata, name, options.hyperparameters, st.tensor('token_embd.weight')?.shape[0] ?? 0);
        ggufMetadata = g.metadata;
      } finally {
        await g.close();
      }
      naming = 'gguf';
    } else if (st.tensor('token_embd.weight') !== undefined) {
      throw new SlimTensorError(
        `${folder}: config.json names no architecture and the tensors carry llama.cpp's names (a folder written from a GGUF model); pass the original GGUF file as options.hyperparameters (--hparams on the command line) for its architecture and hyper-parameters`,
        'ERR_FORMAT',
      );
    } else {
      throw new SlimTensorError(`${configFile}: no "architectures" entry; the runtime needs the model class (e.g. LlamaForCausalLM)`, 'ERR_FORMAT');
    }
    checkBlockCount(hparams.blockCount, st.tensors.length, folder);
    const tensors: TensorSpec[] = [];
    const missing: string[] = [];
    for (const { role, layer } of roleInstances(arch, hparams.blockCount)) {
      if (role[naming] === '') continue; // no such tensor in this naming (rope factors in HF)
      const name = tensorName(role, naming, layer);
      const prefix = name.endsWith('.weight') ? name.slice(0, -'.weight'.length) : name;
      const base = { name, slot: slotOf(role), layer, group: 0, scaleDtype: 0, valuesDtype: 0 };
      const plain = st.tensor(name);
      const packed = st.tensor(`${prefix}.weight_packed`);
      const compressed = st.tensor(`${prefix}.compressed`);
      if (plain !== undefined) {
        const dtype = DTYPE_OF_STORAGE[plain.dtype];
        if (dtype === undefined) throw new SlimTensorError(`${folder}: tensor ${name} is ${plain.dtype}; the runtime reads F32, F16 and BF16 weights`, 'ERR_UNSUPPORTED');
        const [rows, cols] = matrixShape(plain.shape, name, folder);
        tensors.push({ ...base, format: WEIGHT_FORMATS[dtype as WeightFormat], formatName: dtype as WeightFormat, rows, cols, data: partOf(plain) });
      } else if (packed !== undefined) {
        const where = `${folder}: ${prefix}`;
        const scale = st.tensor(`${prefix}.weight_scale`);
        const shapeT = st.tensor(`${prefix}.weight_shape`);
        if (scale === undefined || shapeT === undefined) throw new SlimTensorError(`${where}: weight_packed without weight_scale and weight_shape`, 'ERR_FORMAT');
        const [rows, cols] = (await shapeValues(st, shapeT, 2, where)) as [number, number];
        const scaleDtype = DTYPE_OF_STORAGE[scale.dtype];
        if (scaleDtype === undefined) throw new SlimTensorError(`${where}: weight_scale must be F32, F16 or BF16, got ${scale.dtype}`, 'ERR_FORMAT');
        if (scale.shape.length !== 2 || scale.shape[0] !== rows || (scale.shape[1] as number) < 1 || cols % (scale.shape[1] as number) !== 0) {
          throw new SlimTensorError(`${where}: weight_scale [${scale.shape.join(', ')}] does not fit the weight [${rows}, ${cols}]`, 'ERR_FORMAT');
        }
        const words = packed.shape[1] as number;
        const scheme = schemeFromConfig(config, prefix);
        const bits = scheme?.num_bits === 4 || scheme?.num_bits === 8 ? scheme.num_bits : words === Math.ceil(cols / 8) ? 4 : words === Math.ceil(cols / 4) ? 8 : 0;
        if (packed.dtype !== 'I32' || packed.shape.length !== 2 || packed.shape[0] !== rows || words !== Math.ceil((cols * bits) / 32)) {
          throw new SlimTensorError(`${where}: weight_packed ${packed.dtype} [${packed.shape.join(', ')}] does not hold ${bits || '4- or 8'}-bit codes of [${rows}, ${cols}]`, 'ERR_FORMAT');
        }
        const zp = st.tensor(`${prefix}.weight_zero_point`);
        const fmt: WeightFormat = bits === 4 ? 'int4' : 'int8';
        tensors.push({
          ...base,
          format: WEIGHT_FORMATS[fmt],
          formatName: fmt,
          rows,
          cols,
          group: cols / (scale.shape[1] as number),
          scaleDtype: dtypeCode(scaleDtype),
          data: partOf(packed),
          scales: partOf(scale),
          ...(zp !== undefined ? { zeros: partOf(zp) } : {}),
        });
      } else if (compressed !== undefined) {
        const where = `${folder}: ${prefix} (sparse-24-bitmask)`;
        const mask = st.tensor(`${prefix}.bitmask`);
        const shapeT = st.tensor(`${prefix}.shape`);
        if (mask === undefined || shapeT === undefined) throw new SlimTensorError(`${where}: .compressed without .bitmask and .shape`, 'ERR_FORMAT');
        const [rows, cols] = (await shapeValues(st, shapeT, 2, where)) as [number, number];
        const valuesDtype = DTYPE_OF_STORAGE[compressed.dtype];
        if (valuesDtype === undefined) throw new SlimTensorError(`${where}: .compressed must be F32, F16 or BF16, got ${compressed.dtype}`, 'ERR_FORMAT');
        tensors.push({ ...base, format: WEIGHT_FORMATS['2:4'], formatName: '2:4', rows, cols, valuesDtype: dtypeCode(valuesDtype), data: partOf(compressed), bitmask: partOf(mask) });
      } else if (role.required) {
        missing.push(name);
      }
    }
    if (missing.length > 0) throw missingError(folder, missing);
    const hasHead = tensors.some((t) => t.slot === SLOTS['output.weight']);
    if (naming === 'hf' && !hasHead && config.tie_word_embeddings === false) {
      throw new SlimTensorError(`${folder}: lm_head.weight is missing and config.json says tie_word_embeddings: false`, 'ERR_FORMAT');
    }
    hparams.tiedEmbeddings = !hasHead;
    const embd = tensors.find((t) => t.slot === SLOTS['token_embd.weight']) as TensorSpec;
    if (embd.rows !== hparams.vocabSize) {
      if (naming === 'hf') throw new SlimTensorError(`${folder}: the embedding has ${embd.rows} rows but config.json says vocab_size ${hparams.vocabSize}`, 'ERR_FORMAT');
      hparams.vocabSize = embd.rows;
    }
    const files = await Promise.all(st.shards.map((s) => fileEntry(path.join(folder, s))));
    let ids = tokenIds(ggufMetadata);
    if (naming === 'hf') {
      const tc = (await readJson(path.join(folder, 'tokenizer_config.json'))) ?? {};
      const bos = typeof config.bos_token_id === 'number' ? config.bos_token_id : undefined;
      const eosRaw = Array.isArray(config.eos_token_id) ? config.eos_token_id[0] : config.eos_token_id;
      const add = tc.add_bos_token;
      ids = {
        ...(bos !== undefined ? { bosId: bos } : {}),
        ...(typeof eosRaw === 'number' ? { eosId: eosRaw } : {}),
        addBos: bos !== undefined && (typeof add === 'boolean' ? add : arch.gguf === 'llama'),
      };
    }
    return {
      path: folder,
      source: 'hf',
      naming,
      architecture: arch,
      hparams,
      // Hugging Face Q/K rows rotate halves; llama.cpp's permuted rows rotate pairs.
      rope: naming === 'hf' ? 'neox' : arch.rope,
      ropeFactors: llama3RopeFactors(hparams),
      files,
      tensors,
      ...ids,
      ggufMetadata,
      folder,
    } as ModelPlan;
  } finally {
    await st.close();
  }
}

/** Parses a model's headers into a load plan (no tensor bytes are read except small shape tensors). */
export async function planModel(p: string, options: PlanOptions = {}): Promise<ModelPlan> {
  const st = await fsp.stat(p);
  const plan = st.isDirectory() ? await planFolder(p, options) : await planGguf(p);
  const h = plan.hparams;
  const where = plan.path;
  if (h.ropeScaling.type === 'yarn') throw new SlimTensorError(`${where}: YaRN RoPE scaling is not supported by the runtime yet`, 'ERR_UNSUPPORTED');
  if (h.headCount % h.headCountKv !== 0) throw new SlimTensorError(`${where}: head_count ${h.headCount} is not a multiple of head_count_kv ${h.headCountKv}`, 'ERR_FORMAT');
  if (h.ropeDimensions > h.headDim || h.ropeDimensions % 2 !== 0) throw new SlimTensorError(`${where}: rope dimension count ${h.ropeDimensions} must be even and at most head_dim ${h.headDim}`, 'ERR_FORMAT');
  return plan;
}
