// One view over the model files the pipeline reads: a GGUF file, a
// safetensors file, or a Hugging Face folder of safetensors shards. Tensors
// are listed from the headers and read one at a time, optionally into a
// caller's buffer.
import { promises as fsp } from 'node:fs';
import { SlimTensorError } from '../errors';
import { GGUFReader, type GGUFMetadataEntry } from '../formats/gguf';
import { jsonTooDeep, MAX_JSON_DEPTH } from '../formats/json';
import { ggmlType } from '../formats/gguf-types';
import { SAFETENSORS_DTYPES, SafetensorsModel } from '../formats/safetensors';
import { QuantizedTensor, type FloatDType, type QuantFormat } from '../quantize';
import { Tensor, type DType } from '../tensor';

export type SourceFormat = 'gguf' | 'safetensors';

export interface SourceTensor {
  name: string;
  /** PyTorch order (outermost first). */
  shape: readonly number[];
  /** Stored type as the file names it: 'F32', 'BF16', 'Q8_0', 'I64', ... */
  storage: string;
  /** Dense dtype when slimtensor can view it as a Tensor. */
  dtype: DType | undefined;
  /** GGUF block format when stored quantized (Q4_0 … Q8_0, Q2_K … Q6_K). */
  quant: QuantFormat | undefined;
  byteLength: number;
}

export interface ModelSource {
  format: SourceFormat;
  path: string;
  /** safetensors folders: the folder (its other files travel with the model). */
  folder: string | undefined;
  tensors: readonly SourceTensor[];
  /** GGUF sources: the open reader (metadata, alignment). */
  gguf: GGUFReader | undefined;
  /**
   * The metadata a GGUF output starts from: a GGUF source's own entries, or
   * what llama.cpp's converter writes for a Hugging Face folder seen through
   * hfModelAsGguf (whose tensors then carry GGUF names and layouts).
   */
  ggufMetadata: readonly GGUFMetadataEntry[] | undefined;
  safetensors: SafetensorsModel | undefined;
  /** A tensor's stored bytes, read into `into` when given. */
  readBytes(name: string, into?: Uint8Array): Promise<Uint8Array>;
  /**
   * `length` stored bytes of a tensor from byte `offset` (a band of its
   * rows), read into `into`. Absent where tensors are not read as stored
   * (a Hugging Face folder seen as GGUF reorders rows).
   */
  readRange?(name: string, offset: number, length: number, into: Uint8Array): Promise<Uint8Array>;
  close(): Promise<void>;
}

/** Views stored bytes as what they hold: a Tensor, a QuantizedTensor, or undefined (other types). */
export function viewStored(t: SourceTensor, bytes: Uint8Array): Tensor | QuantizedTensor | undefined {
  if (t.quant !== undefined) return new QuantizedTensor({ format: t.quant, shape: t.shape, data: bytes });
  if (t.dtype !== undefined) return Tensor.from(bytes, t.shape, t.dtype);
  return undefined;
}

export function floatDtypeOf(t: SourceTensor): FloatDType | undefined {
  return t.dtype === 'f32' || t.dtype === 'f16' || t.dtype === 'bf16' ? t.dtype : undefined;
}

async function isGGUF(file: string): Promise<boolean> {
  const fh = await fsp.open(file, 'r');
  try {
    const b = new Uint8Array(4);
    const { bytesRead } = await fh.read(b, 0, 4, 0);
    return bytesRead === 4 && b[0] === 0x47 && b[1] === 0x47 && b[2] === 0x55 && b[3] === 0x46;
  } finally {
    await fh.close();
  }
}

/** Opens a GGUF file, a .safetensors file or a Hugging Face folder. */
export async function openModel(p: string): Promise<ModelSource> {
  const st = await fsp.stat(p);
  if (!st.isDirectory() && (await isGGUF(p))) {
    const g = await GGUFReader.open(p);
    const tensors = g.tensors.map((t): SourceTensor => {
      const type = ggmlType(t.typeId);
      return { name: t.name, shape: t.shape, storage: t.type, dtype: type?.dtype, quant: type?.quant, byteLength: t.byteLength };
    });
    return {
      format: 'gguf',
      path: p,
      folder: undefined,
      tensors,
      gguf: g,
      ggufMetadata: g.entries,
      safetensors: undefined,
      readBytes: (name, into) => g.readTensorBytes(name, into === undefined ? {} : { into }),
      readRange: (name, offset, length, into) => g.readTensorBytes(name, { into, range: { offset, length } }),
      close: () => g.close(),
    };
  }
  if (!st.isDirectory() && !p.endsWith('.safetensors')) {
    // Not GGUF; try safetensors, and say what was expected if that fails too.
    try {
      return await openSafetensors(p, false);
    } catch (e) {
      if (e instanceof SlimTensorError && e.code === 'ERR_FORMAT') {
        throw new SlimTensorError(`${p}: neither a GGUF file (no 'GGUF' magic) nor a safetensors file (${e.message})`, 'ERR_FORMAT');
      }
      throw e;
    }
  }
  return openSafetensors(p, st.isDirectory());
}

async function openSafetensors(p: string, isFolder: boolean): Promise<ModelSource> {
  const m = await SafetensorsModel.open(p);
  const tensors = m.tensors.map((t): SourceTensor => ({ name: t.name, shape: t.shape, storage: t.dtype, dtype: SAFETENSORS_DTYPES[t.dtype].dtype, quant: undefined, byteLength: t.byteLength }));
  return {
    format: 'safetensors',
    path: p,
    folder: isFolder ? p : undefined,
    tensors,
    gguf: undefined,
    ggufMetadata: undefined,
    safetensors: m,
    readBytes: (name, into) => m.readTensorBytes(name, into === undefined ? {} : { into }),
    readRange: (name, offset, length, into) => m.readTensorBytes(name, { into, range: { offset, length } }),
    close: () => m.close(),
  };
}

const MAX_CONFIG_BYTES = 16 * 1024 * 1024;

/** A Hugging Face config.json (undefined when the file is absent); ERR_FORMAT naming the file when it is not a JSON object. */
export async function readConfigJson(file: string): Promise<Record<string, unknown> | undefined> {
  const st = await fsp.stat(file).catch(() => undefined);
  if (st === undefined || !st.isFile()) return undefined;
  if (st.size > MAX_CONFIG_BYTES) throw new SlimTensorError(`${file}: ${st.size} bytes; config.json is limited to ${MAX_CONFIG_BYTES}`, 'ERR_FORMAT');
  let parsed: unknown;
  try {
    parsed = JSON.parse(await fsp.readFile(file, 'utf8'));
  } catch (e) {
    throw new SlimTensorError(`${file}: not valid JSON (${(e as Error).message})`, 'ERR_FORMAT');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new SlimTensorError(`${file}: config.json must hold a JSON object`, 'ERR_FORMAT');
  if (jsonTooDeep(parsed)) throw new SlimTensorError(`${file}: nests arrays or objects more than ${MAX_JSON_DEPTH} deep`, 'ERR_FORMAT');
  return parsed as Record<string, unknown>;
}
