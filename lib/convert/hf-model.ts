// A Hugging Face folder seen as the GGUF file llama.cpp's
// convert_hf_to_gguf.py writes for it, so every GGUF recipe runs on it as
// on a GGUF input: llama.cpp's architecture name and hyper-parameter keys,
// general.* metadata, the tokenizer (tokenizer.ggml.*), GGUF tensor names,
// and the converter's layouts — Q and K rows permuted for the `llama`
// architecture's RoPE (none for qwen2/qwen3), 1-D tensors (norms, biases)
// as F32, Llama 3's rope_freqs computed from rope_scaling — in the
// converter's tensor order for files the safetensors library wrote (each
// file in data order: read front to back). Weights stay in their stored type (F32, F16 or
// BF16) until the recipe converts or quantizes them; nothing is read until
// the pipeline asks for a tensor. Every problem with the folder is an error
// naming the file and the key or tensor.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { castSync } from '../cast';
import { SlimTensorError } from '../errors';
import type { GGUFMetadataEntry } from '../formats/gguf';
import { quoteName } from '../formats/gguf-header';
import { SAFETENSORS_INDEX } from '../formats/safetensors';
import {
  architectureOfHfClass,
  GGUF_HPARAM_KEYS,
  HF_HPARAM_KEYS,
  permutedHeads,
  resolveTensor,
  roleDims,
  roleDimSize,
  tensorName,
  type Architecture,
  type RoleDim,
  type TensorRole,
} from '../model/architectures';
import { hyperparametersOfHfConfig, llama3RopeFactors, type ModelHyperparameters } from '../model/hparams';
import { floatDtypeOf, readConfigJson, type ModelSource, type SourceTensor } from '../pipeline/source';
import { dtypeSize, Tensor, type FloatDType } from '../tensor';
import { generalMetadata } from './general-metadata';
import { ggufTokenizerMetadata } from './tokenizer-metadata';

/** Tensors llama.cpp's converter drops (buffers transformers saves, not weights). */
const SKIPPED_SUFFIXES = ['.rotary_emb.inv_freq', '.attention.masked_bias', '.attention.bias'];

const STORAGE: Record<FloatDType, string> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };

/** One tensor of the GGUF view and where its bytes come from. */
interface ViewTensor {
  out: SourceTensor;
  /** The Hugging Face tensor read for it (undefined: computed, `data`). */
  hf: { name: string; dtype: FloatDType } | undefined;
  /** Computed tensors (rope_freqs). */
  data: Float32Array | undefined;
  /** Stored 16-bit, presented as F32 (a 1-D tensor). */
  widen: boolean;
  /** Rows permuted per head (llama's Q/K), with this many heads. */
  heads: number | undefined;
}

function fail(file: string, key: string, message: string, code: 'ERR_FORMAT' | 'ERR_SHAPE' | 'ERR_UNSUPPORTED' = 'ERR_FORMAT'): never {
  throw new SlimTensorError(`${file}: ${key} ${message}`, code);
}

/** config.json's keys behind a role dimension, with their values, for messages. */
function dimKeys(d: RoleDim, h: ModelHyperparameters): string {
  const K = HF_HPARAM_KEYS;
  switch (d) {
    case 'vocab':
      return `${K.vocabSize} ${h.vocabSize}`;
    case 'embd':
      return `${K.embeddingLength} ${h.embeddingLength}`;
    case 'ff':
      return `${K.feedForwardLength} ${h.feedForwardLength}`;
    case 'q':
      return `${K.headCount} ${h.headCount} × ${K.headDim} ${h.headDim}`;
    case 'kv':
      return `${K.headCountKv} ${h.headCountKv} × ${K.headDim} ${h.headDim}`;
    case 'headDim':
    case 'ropePairs':
      return `${K.headDim} ${h.headDim}`;
  }
}

/**
 * transformers 5 keeps rope_theta and the scaling in `rope_parameters`;
 * older configs have `rope_theta` and `rope_scaling` at the top level.
 * Returns the config in the older spelling.
 */
function withRopeParameters(config: Record<string, unknown>): Record<string, unknown> {
  const rp = config.rope_parameters;
  if (rp === null || typeof rp !== 'object' || Array.isArray(rp)) return config;
  const p = rp as Record<string, unknown>;
  const out = { ...config };
  if (out.rope_theta === undefined && p.rope_theta !== undefined) out.rope_theta = p.rope_theta;
  const type = p.rope_type ?? p.type;
  if (out.rope_scaling === undefined && type !== undefined && type !== 'default') out.rope_scaling = p;
  return out;
}

/** The checked hyper-parameters of a config.json. */
function hyperparameters(config: Record<string, unknown>, file: string): ModelHyperparameters {
  const K = HF_HPARAM_KEYS;
  const c = withRopeParameters(config);
  const h = hyperparametersOfHfConfig(c, file);
  if (c[K.headDim] === undefined && h.embeddingLength % h.headCount !== 0) {
    fail(file, K.embeddingLength, `${h.embeddingLength} is not a multiple of ${K.headCount} ${h.headCount}, and there is no ${K.headDim}`);
  }
  if (h.headCount % h.headCountKv !== 0) fail(file, K.headCountKv, `${h.headCountKv} does not divide ${K.headCount} ${h.headCount}`);
  if (h.headDim % 2 !== 0) fail(file, K.headDim, `${h.headDim} is odd; rotary embeddings rotate pairs of dimensions`);
  return h;
}

/** `${arch}.*` hyper-parameter metadata, as convert_hf_to_gguf writes it (with llama.cpp's defaults written out). */
function hyperparameterMetadata(arch: Architecture, h: ModelHyperparameters, config: Record<string, unknown>): GGUFMetadataEntry[] {
  const K = GGUF_HPARAM_KEYS;
  const a = arch.gguf;
  const e: GGUFMetadataEntry[] = [];
  const u32 = (k: string, v: number): void => void e.push({ key: `${a}.${k}`, type: 'u32', value: v });
  const f32 = (k: string, v: number): void => void e.push({ key: `${a}.${k}`, type: 'f32', value: v });
  u32(K.blockCount, h.blockCount);
  u32(K.contextLength, h.contextLength);
  u32(K.embeddingLength, h.embeddingLength);
  u32(K.feedForwardLength, h.feedForwardLength);
  u32(K.headCount, h.headCount);
  u32(K.headCountKv, h.headCountKv);
  const r = h.ropeScaling;
  if (r.type === 'linear' || r.type === 'yarn') {
    e.push({ key: `${a}.${K.ropeScalingType}`, type: 'string', value: r.type });
    f32(K.ropeScalingFactor, r.factor);
    if (r.type === 'yarn') {
      u32(K.ropeScalingOriginalContextLength, r.originalContextLength);
      const p = withRopeParameters(config).rope_scaling as Record<string, unknown>;
      const extra: [string, unknown][] = [
        ['rope.scaling.yarn_ext_factor', p.extrapolation_factor],
        ['rope.scaling.yarn_attn_factor', p.attention_factor ?? p.attn_factor],
        ['rope.scaling.yarn_beta_fast', p.beta_fast],
        ['rope.scaling.yarn_beta_slow', p.beta_slow],
      ];
      for (const [k, v] of extra) if (typeof v === 'number') f32(k, v);
    }
  }
  f32(K.ropeFreqBase, h.ropeFreqBase);
  f32(K.rmsNormEps, h.rmsNormEps);
  if (config[HF_HPARAM_KEYS.headDim] !== undefined) {
    u32(K.keyLength, h.headDim);
    u32(K.valueLength, h.headDim);
  }
  u32(K.vocabSize, h.vocabSize);
  u32(K.ropeDimensionCount, h.ropeDimensions);
  return e;
}

/**
 * llama.cpp's Q/K permutation in place: per head, row h·d/2 + i becomes row
 * 2i + h. A head at a time (a 7B's Q is 32 MiB: tens of milliseconds of
 * copying), yielding to the event loop between heads.
 */
async function permuteRows(bytes: Uint8Array, heads: number, rowBytes: number): Promise<void> {
  const d = bytes.byteLength / rowBytes / heads;
  const half = d / 2;
  const headBytes = d * rowBytes;
  const scratch = new Uint8Array(headBytes);
  for (let hd = 0; hd < heads; hd++) {
    const base = hd * headBytes;
    scratch.set(bytes.subarray(base, base + headBytes));
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const from = (j * half + i) * rowBytes;
        bytes.set(scratch.subarray(from, from + rowBytes), base + (2 * i + j) * rowBytes);
      }
    }
    if (hd + 1 < heads) await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

/**
 * The GGUF view of a Hugging Face folder opened as `source` (openModel). Its
 * tensors carry GGUF names and types; reading one applies the layout
 * changes; ggufMetadata holds what a GGUF output starts from. Closing it
 * closes `source`.
 */
export async function hfModelAsGguf(source: ModelSource): Promise<ModelSource> {
  const st = source.safetensors;
  const folder = source.folder;
  if (source.format !== 'safetensors' || st === undefined || folder === undefined) {
    throw new SlimTensorError(
      `${source.path}: a GGUF file is written from a GGUF file or from a Hugging Face folder (config.json, tokenizer files and the safetensors weights); a lone .safetensors file has no architecture or tokenizer`,
      'ERR_UNSUPPORTED',
    );
  }
  const cfgFile = path.join(folder, 'config.json');
  const config = await readConfigJson(cfgFile);
  if (config === undefined) throw new SlimTensorError(`${folder}: no config.json; converting a Hugging Face model to GGUF needs its config.json (architectures and hyper-parameters)`, 'ERR_FORMAT');
  const classes = config.architectures;
  if (!Array.isArray(classes) || classes.length === 0 || typeof classes[0] !== 'string') fail(cfgFile, 'architectures', `must be a list naming the model class (e.g. ["LlamaForCausalLM"]), got ${JSON.stringify(classes)}`);
  const hfClass = classes[0] as string;
  const arch = architectureOfHfClass(hfClass, cfgFile);
  if (config.quantization_config !== undefined) {
    fail(cfgFile, 'quantization_config', 'is present: the weights are already quantized; convert the unquantized model (F32, F16 or BF16 weights)', 'ERR_UNSUPPORTED');
  }
  const h = hyperparameters(config, cfgFile);

  // ---- tensors: the generated ones first, as llama.cpp writes them
  const view: ViewTensor[] = [];
  const ropeFactors = llama3RopeFactors(h);
  if (ropeFactors !== undefined) {
    const role = arch.global.find((r) => r.kind === 'rope');
    if (role === undefined) fail(cfgFile, 'rope_scaling', `is llama3 scaling, which llama.cpp's ${arch.gguf} architecture does not read`, 'ERR_UNSUPPORTED');
    view.push({ out: { name: role.gguf, shape: [ropeFactors.length], storage: 'F32', dtype: 'f32', quant: undefined, byteLength: ropeFactors.byteLength }, hf: undefined, data: ropeFactors, widen: false, heads: undefined });
  }
  const storedByName = new Map(source.tensors.map((s) => [s.name, s]));
  const seen = new Map<TensorRole, Set<number>>();
  // The source's order (shards by name, then data order): reads each file
  // front to back, and is llama.cpp's order (each shard's names sorted) for
  // files the safetensors library wrote, which lays tensors out by name.
  for (const t of st.tensors) {
    const file = path.join(folder, t.file);
    if (SKIPPED_SUFFIXES.some((s) => t.name.endsWith(s))) continue;
    const r = resolveTensor(arch, t.name, 'hf');
    if (r === undefined || r.role.hf === '') fail(file, `tensor ${quoteName(t.name)}`, `is not a tensor of ${hfClass} that llama.cpp's ${arch.gguf} architecture has`, 'ERR_UNSUPPORTED');
    if (r.layer >= h.blockCount) fail(file, `tensor ${quoteName(t.name)}`, `belongs to layer ${r.layer}, but ${cfgFile} ${HF_HPARAM_KEYS.blockCount} is ${h.blockCount}`);
    const stored = storedByName.get(t.name) as SourceTensor;
    const dtype = floatDtypeOf(stored);
    if (dtype === undefined) fail(file, `tensor ${quoteName(t.name)}`, `is ${stored.storage}; GGUF conversion takes F32, F16 and BF16 weights`, 'ERR_UNSUPPORTED');
    const dims = roleDims(r.role) ?? [];
    const want = dims.map((d) => roleDimSize(d, h));
    if (want.length !== t.shape.length || want.some((n, i) => n !== t.shape[i])) {
      const keys = [...new Set(dims.map((d) => dimKeys(d, h)))].join(', ');
      fail(file, `tensor ${quoteName(t.name)}`, `is [${t.shape.join(', ')}], but ${cfgFile} (${keys}) makes it [${want.join(', ')}]`, 'ERR_SHAPE');
    }
    const layers = seen.get(r.role) ?? new Set<number>();
    layers.add(r.layer);
    seen.set(r.role, layers);
    const widen = t.shape.length <= 1 && dtype !== 'f32';
    const outDtype: FloatDType = t.shape.length <= 1 ? 'f32' : dtype;
    const n = t.shape.reduce((a, d) => a * d, 1);
    view.push({
      out: { name: tensorName(r.role, 'gguf', r.layer), shape: t.shape, storage: STORAGE[outDtype], dtype: outDtype, quant: undefined, byteLength: n * dtypeSize(outDtype) },
      hf: { name: t.name, dtype },
      data: undefined,
      widen,
      heads: permutedHeads(arch, r.role, h),
    });
  }
  // ---- every tensor the architecture needs is there
  const indexed = await fsp.stat(path.join(folder, SAFETENSORS_INDEX)).then(
    (s) => s.isFile(),
    () => false,
  );
  const where = indexed ? path.join(folder, SAFETENSORS_INDEX) : path.join(folder, st.shards[0] as string);
  // A shard in the folder that the index does not list is the likely reason (an index from another download).
  const unlisted = indexed ? (await fsp.readdir(folder)).filter((n) => n.endsWith('.safetensors') && !st.shards.includes(n)).sort() : [];
  const because = unlisted.length === 0 ? '' : `; the folder also holds ${unlisted.join(', ')}, which ${SAFETENSORS_INDEX} does not list`;
  for (const role of arch.global) {
    if (role.hf === '' || seen.has(role)) continue;
    if (role.required) fail(where, `tensor ${quoteName(role.hf)}`, `is missing (llama.cpp's ${role.gguf})${because}`);
    if (role.kind === 'head' && !h.tiedEmbeddings) fail(cfgFile, HF_HPARAM_KEYS.tiedEmbeddings, `is not true, but the weights have no ${quoteName(role.hf)} (the output head)${because}`);
  }
  for (const role of arch.block) {
    if (!role.required) continue;
    const layers = seen.get(role);
    for (let l = 0; l < h.blockCount; l++) {
      if (!layers?.has(l)) fail(where, `tensor ${quoteName(tensorName(role, 'hf', l))}`, `is missing (llama.cpp's ${tensorName(role, 'gguf', l)}; ${HF_HPARAM_KEYS.blockCount} is ${h.blockCount})${because}`);
    }
  }

  // ---- metadata
  const totalParams = view.reduce((s, v) => s + v.out.shape.reduce((a, d) => a * d, 1), 0);
  const metadata: GGUFMetadataEntry[] = [
    { key: 'general.architecture', type: 'string', value: arch.gguf },
    ...(await generalMetadata(folder, config, totalParams)),
    ...hyperparameterMetadata(arch, h, config),
    ...(await ggufTokenizerMetadata(folder, { vocabSize: h.vocabSize })),
  ];

  const byName = new Map(view.map((v) => [v.out.name, v]));
  return {
    format: 'safetensors',
    path: source.path,
    folder,
    tensors: view.map((v) => v.out),
    gguf: undefined,
    ggufMetadata: metadata,
    safetensors: st,
    async readBytes(name, into) {
      const v = byName.get(name);
      if (v === undefined) throw new SlimTensorError(`${folder}: the GGUF view has no tensor ${quoteName(name)}`, 'ERR_VALUE');
      const out = into === undefined ? new Uint8Array(v.out.byteLength) : into.subarray(0, v.out.byteLength);
      if (v.data !== undefined) {
        out.set(new Uint8Array(v.data.buffer, v.data.byteOffset, v.data.byteLength));
        return out;
      }
      const src = v.hf as NonNullable<ViewTensor['hf']>;
      let bytes: Uint8Array;
      if (v.widen) {
        const raw = await source.readBytes(src.name);
        // a fresh array when the caller's is not 4-byte aligned for an f32 view
        bytes = out.byteOffset % 4 === 0 ? out : new Uint8Array(v.out.byteLength);
        castSync(Tensor.from(raw, v.out.shape, src.dtype), 'f32', { out: Tensor.from(bytes, v.out.shape, 'f32') });
        if (bytes !== out) out.set(bytes);
        bytes = out;
      } else {
        bytes = await source.readBytes(src.name, out);
      }
      if (v.heads !== undefined) await permuteRows(bytes, v.heads, (v.out.shape.length > 1 ? (v.out.shape[1] as number) : 1) * dtypeSize(v.out.dtype as FloatDType));
      return bytes;
    },
    close: () => source.close(),
  };
}
