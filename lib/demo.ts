// The `slimtensor demo`: quantizes every 2-D tensor of a GGUF model to a
// set of formats and measures size and error. Tensors are read one at a
// time and each is quantized to every format before the next is read, so
// memory stays bounded by one tensor whatever the model size. Everything
// runs on the async API: the event loop stays free throughout.
import * as path from 'node:path';
import { backends } from './backend';
import { GGUFReader, type GGUFTensorInfo } from './formats/gguf';
import { quantizationError, quantize, QuantizedTensor, type QuantizeOptions } from './quantize';
import { Tensor, type DType } from './tensor';
import { SlimTensorError } from './errors';

/** The package root: this file is lib/demo.ts (tsx) or dist/demo.js (built). */
export const PACKAGE_ROOT = path.join(__dirname, '..');

/** The bundled sample model (see models/README.md for its origin and licence). */
export function bundledModelPath(): string {
  return path.join(PACKAGE_ROOT, 'models', 'stories260K.gguf');
}

/** One quantization setting the demo compares. */
export interface DemoPreset {
  id: string;
  description: string;
  options: QuantizeOptions & { groupSize?: number };
}

// GGUF block formats first (what llama.cpp stores), then compressed-tensors
// groups (what vLLM loads); each 'mse' row sits under its plain twin.
export const DEMO_PRESETS: readonly DemoPreset[] = [
  { id: 'q4_0', description: 'GGUF Q4_0 (llama.cpp reference)', options: { format: 'q4_0' } },
  { id: 'q4_0-mse', description: 'GGUF Q4_0, MSE-searched scales', options: { format: 'q4_0', search: 'mse' } },
  { id: 'q4_1', description: 'GGUF Q4_1 (scale + minimum)', options: { format: 'q4_1' } },
  { id: 'q8_0', description: 'GGUF Q8_0', options: { format: 'q8_0' } },
  { id: 'int4-g32', description: 'INT4 symmetric, groups of 32', options: { format: 'int4', groupSize: 32 } },
  { id: 'int4-g128', description: 'INT4 symmetric, groups of 128 (W4A16)', options: { format: 'int4', groupSize: 128 } },
  { id: 'int4-g128-mse', description: 'INT4 symmetric, groups of 128, MSE-searched scales', options: { format: 'int4', groupSize: 128, search: 'mse' } },
  { id: 'int4-g128-asym', description: 'INT4 asymmetric, groups of 128 (W4A16_ASYM)', options: { format: 'int4', groupSize: 128, symmetric: false } },
  { id: 'int8-g128', description: 'INT8 symmetric, groups of 128 (W8A16)', options: { format: 'int8', groupSize: 128 } },
];

export const DEMO_PRESET_IDS: readonly string[] = DEMO_PRESETS.map((p) => p.id);

export interface DemoOptions {
  /** A GGUF file; default the bundled stories260K. */
  model?: string;
  /** Preset ids to run (default all, in DEMO_PRESETS order). */
  formats?: readonly string[];
}

/** A tensor left at its stored precision, and why. */
export interface DemoSkip {
  name: string;
  reason: string;
}

export interface DemoFormatResult {
  id: string;
  description: string;
  options: QuantizeOptions;
  /** Tensors quantized. */
  quantized: number;
  /** 2-D tensors left at their stored precision, each with the reason. */
  skipped: DemoSkip[];
  /** Quantized with an adjusted setting (e.g. one group per row when a row is shorter than the group). */
  fallbacks: DemoSkip[];
  /** Weights in the quantized tensors. */
  weights: number;
  /** Bytes the quantized tensors take in the input file. */
  originalBytes: number;
  /** Bytes they take once quantized (codes, scales and zero points as a file stores them). */
  quantizedBytes: number;
  /** originalBytes / quantizedBytes. */
  ratio: number;
  /** quantizedBytes · 8 / weights. */
  bitsPerWeight: number;
  /** Root-mean-square error over all quantized weights together. */
  rmse: number;
  /** Largest absolute error of any weight. */
  maxAbs: number;
  /** All tensor bytes of the model once this format is applied (skipped and 1-D tensors as stored). */
  modelBytes: number;
  /** Wall time of the quantize calls, in milliseconds. */
  timeMs: number;
}

export interface DemoReport {
  model: {
    path: string;
    bundled: boolean;
    name: string | undefined;
    architecture: string | undefined;
    tensors: number;
    /** Bytes of all tensor data. */
    tensorBytes: number;
    /** 2-D tensors the demo tries to quantize. */
    candidates: number;
    /** Tensors the demo leaves alone for every format (not 2-D, not float), with the reason. */
    untouched: DemoSkip[];
  };
  formats: DemoFormatResult[];
  /** The CPU kernel family in use ('avx2' or 'scalar'). */
  kernel: string;
  totalMs: number;
}

/** Resolves `--formats` ids to presets; unknown ids are an ERR_VALUE naming the valid ones. */
export function selectPresets(ids: readonly string[] | undefined): DemoPreset[] {
  if (ids === undefined || ids.length === 0) return DEMO_PRESETS.slice();
  const unknown = ids.filter((id) => !DEMO_PRESET_IDS.includes(id));
  if (unknown.length > 0) {
    throw new SlimTensorError(`demo: unknown format ${unknown.map((u) => JSON.stringify(u)).join(', ')}; choose from ${DEMO_PRESET_IDS.join(', ')}`, 'ERR_VALUE');
  }
  return DEMO_PRESETS.filter((p) => ids.includes(p.id));
}

const GGML_BLOCK = 32;

type Plan = { options: QuantizeOptions; fallback?: string } | { skip: string };

/**
 * How a preset applies to a row length. Block formats need whole blocks of
 * 32; no GGUF block type fits other lengths, so such tensors stay at their
 * stored precision (as llama-quantize keeps them). For compressed-tensors
 * groups, a row that the group does not divide falls back to one group per
 * row (compressed-tensors' channel strategy), and the report says so.
 */
function planFor(preset: DemoPreset, cols: number): Plan {
  const o = preset.options;
  if (o.format === 'q4_0' || o.format === 'q4_1' || o.format === 'q8_0') {
    if (cols % GGML_BLOCK !== 0) return { skip: `rows of ${cols} values are not a multiple of the ${GGML_BLOCK}-value block` };
    return { options: o };
  }
  const group = o.groupSize ?? 128;
  if (cols % group === 0) return { options: o };
  const why = cols < group ? `rows of ${cols} values (< ${group})` : `rows of ${cols} values (not a multiple of ${group})`;
  return { options: { ...o, groupSize: 'channel' }, fallback: `${why} use one group per row` };
}

const FLOAT_DTYPES: readonly DType[] = ['f32', 'f16', 'bf16'];

/** Why a tensor is not a candidate for any format, or undefined when it is. */
function notCandidate(info: GGUFTensorInfo): string | undefined {
  if (info.shape.length !== 2) return `${info.shape.length}-D (only 2-D weight matrices are quantized)`;
  if (!GGUFReader.canRead(info)) return `stored as ${info.type}, which slimtensor cannot read`;
  if (info.type !== 'F32' && info.type !== 'F16' && info.type !== 'BF16') return `already quantized (${info.type})`;
  return undefined;
}

interface Accumulator {
  result: DemoFormatResult;
  sumSqErr: number;
}

function emptyResult(p: DemoPreset): Accumulator {
  return {
    sumSqErr: 0,
    result: {
      id: p.id,
      description: p.description,
      options: p.options,
      quantized: 0,
      skipped: [],
      fallbacks: [],
      weights: 0,
      originalBytes: 0,
      quantizedBytes: 0,
      ratio: 0,
      bitsPerWeight: 0,
      rmse: 0,
      maxAbs: 0,
      modelBytes: 0,
      timeMs: 0,
    },
  };
}

/** Storage of a quantized tensor: bitsPerWeight counts packed zero points as a file holds them. */
function storedBytes(q: QuantizedTensor, weights: number): number {
  return Math.ceil((q.bitsPerWeight * weights) / 8);
}

async function quantizeOne(acc: Accumulator, preset: DemoPreset, info: GGUFTensorInfo, t: Tensor): Promise<void> {
  const r = acc.result;
  const plan = planFor(preset, info.shape[1] as number);
  if ('skip' in plan) {
    r.skipped.push({ name: info.name, reason: plan.skip });
    return;
  }
  if (plan.fallback !== undefined) r.fallbacks.push({ name: info.name, reason: plan.fallback });
  const start = performance.now();
  const q = await quantize(t, plan.options);
  r.timeMs += performance.now() - start;
  const err = await quantizationError(t, q);
  const n = t.size;
  const bytes = storedBytes(q, n);
  r.quantized += 1;
  r.weights += n;
  r.originalBytes += info.byteLength;
  r.quantizedBytes += bytes;
  // Saved bytes: the model shrinks by what this tensor no longer needs.
  r.modelBytes -= info.byteLength - bytes;
  acc.sumSqErr += err.rmse * err.rmse * n;
  r.maxAbs = Math.max(r.maxAbs, err.maxAbs);
}

function finish(acc: Accumulator): DemoFormatResult {
  const r = acc.result;
  r.ratio = r.quantizedBytes === 0 ? 0 : r.originalBytes / r.quantizedBytes;
  r.bitsPerWeight = r.weights === 0 ? 0 : (r.quantizedBytes * 8) / r.weights;
  r.rmse = r.weights === 0 ? 0 : Math.sqrt(acc.sumSqErr / r.weights);
  return r;
}

/** Runs the demo and returns its measurements (render them with cli/demo-output). */
export async function runDemo(options: DemoOptions = {}): Promise<DemoReport> {
  const started = performance.now();
  const presets = selectPresets(options.formats);
  const modelPath = options.model ?? bundledModelPath();
  const gguf = await GGUFReader.open(modelPath);
  try {
    const tensorBytes = gguf.tensors.reduce((s, t) => s + t.byteLength, 0);
    const accs = presets.map(emptyResult);
    for (const a of accs) a.result.modelBytes = tensorBytes;
    const untouched: DemoSkip[] = [];
    let candidates = 0;
    for (const info of gguf.tensors) {
      const why = notCandidate(info);
      if (why !== undefined) {
        untouched.push({ name: info.name, reason: why });
        continue;
      }
      candidates += 1;
      const t = await gguf.readTensor(info);
      // notCandidate admits only F32/F16/BF16, which read as float Tensors.
      if (!(t instanceof Tensor) || !FLOAT_DTYPES.includes(t.dtype)) continue;
      for (let i = 0; i < presets.length; i++) {
        await quantizeOne(accs[i] as Accumulator, presets[i] as DemoPreset, info, t);
      }
    }
    const name = gguf.metadata.get('general.name');
    return {
      model: {
        path: modelPath,
        bundled: options.model === undefined,
        name: typeof name === 'string' ? name : undefined,
        architecture: gguf.architecture,
        tensors: gguf.tensors.length,
        tensorBytes,
        candidates,
        untouched,
      },
      formats: accs.map(finish),
      kernel: backends().cpu.kernel,
      totalMs: performance.now() - started,
    };
  } finally {
    await gguf.close();
  }
}
