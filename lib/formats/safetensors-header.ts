// Parses and builds safetensors headers. Parsing treats the bytes as
// hostile and enforces every rule of shared/reference/FORMATS.md: the
// header size cap, strict UTF-8 and JSON, no duplicate names, known dtypes,
// shapes whose byte size matches the offsets, offsets contiguous from 0 in
// sorted order (no gaps, overlaps or aliasing) and data ending exactly at
// the end of the file. Pure and synchronous: the I/O is in safetensors.ts.
import { SlimTensorError } from '../errors';
import type { DType } from '../tensor';
import { quoteName } from './gguf-header';
import { jsonTooDeep, MAX_JSON_DEPTH, setOwn } from './json';

/** The dtypes safetensors defines, with their sizes and the Tensor dtype each reads as (if any). */
export const SAFETENSORS_DTYPES = {
  BOOL: { bytes: 1, dtype: undefined },
  U8: { bytes: 1, dtype: 'u8' },
  I8: { bytes: 1, dtype: 'i8' },
  I16: { bytes: 2, dtype: undefined },
  U16: { bytes: 2, dtype: undefined },
  F16: { bytes: 2, dtype: 'f16' },
  BF16: { bytes: 2, dtype: 'bf16' },
  I32: { bytes: 4, dtype: 'i32' },
  U32: { bytes: 4, dtype: undefined },
  F32: { bytes: 4, dtype: 'f32' },
  F64: { bytes: 8, dtype: undefined },
  I64: { bytes: 8, dtype: 'i64' },
  U64: { bytes: 8, dtype: undefined },
  F8_E4M3: { bytes: 1, dtype: undefined },
  F8_E5M2: { bytes: 1, dtype: undefined },
} as const satisfies Record<string, { bytes: number; dtype: DType | undefined }>;
export type SafetensorsDType = keyof typeof SAFETENSORS_DTYPES;

/** The safetensors dtype a Tensor dtype is stored as. */
export const DTYPE_TO_SAFETENSORS: Readonly<Record<DType, SafetensorsDType>> = {
  f32: 'F32',
  f16: 'F16',
  bf16: 'BF16',
  i8: 'I8',
  u8: 'U8',
  i32: 'I32',
  i64: 'I64',
};

export function isSafetensorsDType(v: unknown): v is SafetensorsDType {
  return typeof v === 'string' && Object.prototype.hasOwnProperty.call(SAFETENSORS_DTYPES, v);
}

/** Limits of the reader (FORMATS.md: the reference rejects headers above 100 MB). */
export const SAFETENSORS_LIMITS = {
  maxHeaderBytes: 100_000_000,
  /** More dimensions than any real tensor has; keeps shapes small. */
  maxDims: 64,
} as const;

/** One tensor of a safetensors file. */
export interface SafetensorsTensorInfo {
  name: string;
  dtype: SafetensorsDType;
  shape: readonly number[];
  /** Bytes of data (end - begin). */
  byteLength: number;
  /** Offset relative to the data section (begin). */
  offset: number;
  /** Absolute offset in the file. */
  fileOffset: number;
}

export interface SafetensorsHeader {
  /** Tensors in data order (sorted by offset). */
  tensors: SafetensorsTensorInfo[];
  /** `__metadata__`: string to string. */
  metadata: Record<string, string>;
  /** Absolute offset of the data section (8 + header length). */
  dataOffset: number;
}

function formatError(file: string, message: string): SlimTensorError {
  return new SlimTensorError(`safetensors ${file}: ${message}`, 'ERR_FORMAT');
}

/**
 * The header length N from the first 8 bytes, checked against the cap and
 * the file size before anything is allocated for it.
 */
export function headerLength(first8: Uint8Array, fileSize: number, file: string, cap: number = SAFETENSORS_LIMITS.maxHeaderBytes): number {
  if (fileSize < 8) throw formatError(file, `the file is ${fileSize} bytes, too short for the 8-byte header length`);
  const n = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(cap)) throw formatError(file, `the header length is ${n} bytes; the limit is ${cap}`);
  if (n + 8n > BigInt(fileSize)) throw formatError(file, `the header length ${n} + 8 exceeds the file size ${fileSize} (truncated?)`);
  return Number(n);
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The top-level keys of a JSON object text in order, duplicates included
 * (JSON.parse keeps the last of duplicate keys silently). `text` must
 * already be valid JSON whose top level is an object.
 */
export function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  let i = 0;
  const ws = (): void => {
    while (i < text.length && (text[i] === ' ' || text[i] === '\t' || text[i] === '\n' || text[i] === '\r')) i++;
  };
  const skipString = (): void => {
    // at the opening quote
    i++;
    while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i++;
  };
  const skipValue = (): void => {
    let depth = 0;
    for (;;) {
      ws();
      const ch = text[i];
      if (ch === '"') skipString();
      else if (ch === '{' || ch === '[') {
        depth++;
        i++;
      } else if (ch === '}' || ch === ']') {
        depth--;
        i++;
      } else {
        while (i < text.length && !',}] \t\n\r'.includes(text[i] as string)) i++;
      }
      ws();
      if (depth === 0) return;
      if (text[i] === ',' || text[i] === ':') i++;
    }
  };
  ws();
  i++; // '{'
  ws();
  if (text[i] === '}') return keys;
  for (;;) {
    ws();
    const start = i;
    skipString();
    keys.push(JSON.parse(text.slice(start, i)) as string);
    ws();
    i++; // ':'
    skipValue();
    ws();
    if (text[i] === ',') {
      i++;
      continue;
    }
    return keys;
  }
}

function isIntegerIn(v: unknown, max: number): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= max;
}

/**
 * Parses a header: `json` is the N bytes after the length, `fileSize` the
 * size of the whole file (the data section is fileSize - 8 - N bytes).
 */
export function parseSafetensorsHeader(json: Uint8Array, fileSize: number, file: string): SafetensorsHeader {
  const fail: (m: string) => never = (m) => {
    throw formatError(file, m);
  };
  const dataOffset = 8 + json.length;
  const dataBytes = fileSize - dataOffset;
  let text: string;
  try {
    text = utf8.decode(json);
  } catch {
    return fail('the header is not valid UTF-8');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    return fail(`the header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) fail('the header must be a JSON object');
  // Messages below print values (String() of a nested array recurses).
  if (jsonTooDeep(parsed)) fail(`the header nests arrays or objects more than ${MAX_JSON_DEPTH} deep`);
  const obj = parsed as Record<string, unknown>;
  const keys = topLevelKeys(text);
  if (keys.length !== Object.keys(obj).length) {
    const seen = new Set<string>();
    for (const k of keys) {
      if (seen.has(k)) fail(`tensor ${quoteName(k)} is a duplicate name`);
      seen.add(k);
    }
  }
  const metadata: Record<string, string> = {};
  const tensors: SafetensorsTensorInfo[] = [];
  for (const name of keys) {
    const entry = obj[name];
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail('__metadata__ must be an object of strings');
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`__metadata__ ${quoteName(k)} must be a string, got ${v === null ? 'null' : typeof v}`);
        setOwn(metadata, k, v);
      }
      continue;
    }
    const what = `tensor ${quoteName(name)}`;
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail(`${what} must be an object with dtype, shape and data_offsets`);
    const e = entry as Record<string, unknown>;
    const dtype = e.dtype;
    if (!isSafetensorsDType(dtype)) fail(`${what} has unknown dtype ${typeof dtype === 'string' ? quoteName(dtype) : String(dtype)} (known: ${Object.keys(SAFETENSORS_DTYPES).join(' ')})`);
    const shape = e.shape;
    if (!Array.isArray(shape)) fail(`${what} has no shape array`);
    if (shape.length > SAFETENSORS_LIMITS.maxDims) fail(`${what} has ${shape.length} dimensions; the limit is ${SAFETENSORS_LIMITS.maxDims}`);
    const offsets = e.data_offsets;
    if (!Array.isArray(offsets) || offsets.length !== 2) fail(`${what} must have data_offsets [begin, end]`);
    const [begin, end] = offsets as unknown[];
    if (!isIntegerIn(begin, Number.MAX_SAFE_INTEGER) || !isIntegerIn(end, Number.MAX_SAFE_INTEGER)) fail(`${what} has data_offsets ${JSON.stringify(offsets)}; expected two non-negative integers`);
    if (begin > end) fail(`${what} has data_offsets [${begin}, ${end}): begin > end`);
    // Element count x dtype size in BigInt: no overflow can slip through.
    let bytes = BigInt(SAFETENSORS_DTYPES[dtype].bytes);
    for (let d = 0; d < shape.length; d++) {
      const dim = shape[d] as unknown;
      if (!isIntegerIn(dim, Number.MAX_SAFE_INTEGER)) fail(`${what} has shape ${JSON.stringify(shape)}; dims must be non-negative integers`);
      bytes *= BigInt(dim);
    }
    if (bytes !== BigInt(end - begin)) fail(`${what}: shape [${shape.join(', ')}] of ${dtype} needs ${bytes} bytes but data_offsets [${begin}, ${end}) hold ${end - begin}`);
    tensors.push({ name, dtype, shape: Object.freeze((shape as number[]).slice()), byteLength: end - begin, offset: begin, fileOffset: dataOffset + begin });
  }
  // Contiguous from 0 in sorted order: each tensor starts where the previous
  // ended (empty tensors take no bytes and may sit at any boundary), and the
  // last one ends where the file does.
  const sorted = tensors.map((t, i) => ({ t, i })).sort((a, b) => a.t.offset - b.t.offset || a.t.byteLength - b.t.byteLength || a.i - b.i);
  let cursor = 0;
  let prev: SafetensorsTensorInfo | undefined;
  for (const { t } of sorted) {
    if (t.offset !== cursor) {
      const where = prev === undefined ? 'the start of the data section' : `the end of tensor ${quoteName(prev.name)} (${cursor})`;
      fail(`tensor ${quoteName(t.name)} starts at data offset ${t.offset}, not at ${where}: ${t.offset > cursor ? 'a gap' : 'overlapping or aliased data'}`);
    }
    cursor = t.offset + t.byteLength;
    if (t.byteLength > 0) prev = t;
  }
  if (cursor !== dataBytes) {
    fail(cursor > dataBytes ? `the tensors need ${cursor} data bytes but the file holds ${dataBytes} (truncated?)` : `the tensors end at data offset ${cursor} but the file has ${dataBytes - cursor} more bytes after them`);
  }
  return { tensors: sorted.map((s) => s.t), metadata, dataOffset };
}

export interface PlannedTensor {
  name: string;
  dtype: SafetensorsDType;
  shape: readonly number[];
}

/**
 * The bytes of a header for `tensors` in this order, data packed from 0,
 * padded with spaces to a multiple of 8 (as the reference writer does), and
 * each tensor's [begin, end).
 */
export function buildSafetensorsHeader(tensors: readonly PlannedTensor[], metadata?: Readonly<Record<string, string>>): { bytes: Uint8Array; offsets: [number, number][]; dataBytes: number } {
  const where = 'safetensors writer';
  const obj: Record<string, unknown> = {};
  if (metadata !== undefined && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new SlimTensorError(`${where}: metadata ${quoteName(k)} must be a string`, 'ERR_VALUE');
    }
    obj.__metadata__ = { ...metadata };
  }
  const offsets: [number, number][] = [];
  let at = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || Object.prototype.hasOwnProperty.call(obj, t.name)) {
      throw new SlimTensorError(`${where}: tensor name ${quoteName(t.name)} is ${t.name === '__metadata__' ? 'reserved' : 'used twice'}`, 'ERR_VALUE');
    }
    if (!isSafetensorsDType(t.dtype)) throw new SlimTensorError(`${where}: tensor ${quoteName(t.name)} has unknown dtype ${String(t.dtype)}`, 'ERR_DTYPE');
    let n = SAFETENSORS_DTYPES[t.dtype].bytes;
    for (const d of t.shape) {
      if (!Number.isSafeInteger(d) || d < 0) throw new SlimTensorError(`${where}: tensor ${quoteName(t.name)} has a bad shape [${t.shape.join(', ')}]`, 'ERR_SHAPE');
      n *= d;
    }
    if (!Number.isSafeInteger(n)) throw new SlimTensorError(`${where}: tensor ${quoteName(t.name)} is too large`, 'ERR_SHAPE');
    offsets.push([at, at + n]);
    setOwn(obj, t.name, { dtype: t.dtype, shape: [...t.shape], data_offsets: [at, at + n] });
    at += n;
  }
  const json = Buffer.from(JSON.stringify(obj), 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  const bytes = new Uint8Array(8 + padded);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(padded), true);
  bytes.set(json, 8);
  bytes.fill(0x20, 8 + json.length);
  return { bytes, offsets, dataBytes: at };
}
