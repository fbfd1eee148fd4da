// Parses a GGUF header (magic, counts, metadata, tensor infos) out of a
// prefix of the file, treating every byte as hostile: each count and length
// is checked against the bytes the *file* has left before anything is
// allocated for it, so a forged u64 can neither allocate nor loop beyond the
// file size. Pure and synchronous: the file I/O lives in gguf.ts, which
// re-runs the parse on a longer prefix when this one asks for more bytes.
import { SlimTensorError } from '../errors';
import {
  ggmlType,
  minValueBytes,
  SCALAR_BYTES,
  valueTypeName,
  type GGMLTypeInfo,
  type GGMLTypeName,
  type GGUFValueTypeName,
} from './gguf-types';

/**
 * A metadata array. Numeric elements come back as the matching TypedArray
 * (u64/i64 as BigUint64Array/BigInt64Array), bool and string elements as
 * plain arrays, nested arrays as an array of arrays.
 */
export type GGUFArrayValue =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | Float64Array
  | BigUint64Array
  | BigInt64Array
  | boolean[]
  | string[]
  | GGUFArrayValue[];

/**
 * A metadata value. Scalar u64/i64 values are numbers when they fit in a
 * double exactly (Number.isSafeInteger) and bigints otherwise, so counts and
 * ids read naturally while large values (e.g. a u64 seed) stay exact; check
 * `typeof` or the entry's `type` when it matters.
 */
export type GGUFValue = number | bigint | boolean | string | GGUFArrayValue;

/** One metadata key/value pair, in file order, with its declared type. */
export interface GGUFMetadataEntry {
  key: string;
  type: GGUFValueTypeName;
  /** For arrays: the element type. */
  itemType?: GGUFValueTypeName;
  value: GGUFValue;
}

/** Where and how one tensor is stored. */
export interface GGUFTensorInfo {
  name: string;
  /** PyTorch order (outermost first): the GGUF dims reversed. */
  shape: readonly number[];
  /** GGUF order, innermost first, as written in the file. */
  dims: readonly number[];
  /** ggml type name, e.g. 'F32', 'Q8_0'. */
  type: GGMLTypeName;
  /** ggml type id. */
  typeId: number;
  /** Bytes of data, excluding alignment padding. */
  byteLength: number;
  /** Offset relative to the start of the data section (as stored). */
  offset: number;
  /** Absolute offset of the data in the file. */
  fileOffset: number;
}

export interface GGUFHeader {
  version: number;
  entries: GGUFMetadataEntry[];
  metadata: Map<string, GGUFValue>;
  tensors: GGUFTensorInfo[];
  alignment: number;
  /** Absolute offset of the data section. */
  dataOffset: number;
  /** Bytes of magic, counts, metadata and tensor infos (before the padding). */
  headerBytes: number;
}

/** Limits beyond which a header is rejected rather than trusted (string limits must stay below 2^32). */
export const GGUF_LIMITS = {
  /** Longest metadata key. Real keys are tens of bytes. */
  maxKeyBytes: 64 * 1024,
  /** Longest string value: room for an embedded tokenizer JSON or chat template. */
  maxStringBytes: 64 * 1024 * 1024,
  /** Longest tensor name: the GGUF spec's limit. */
  maxTensorNameBytes: 64,
  /** ggml tensors have at most 4 dimensions. */
  maxDims: 4,
  /** Arrays of arrays this deep at most (keeps the recursion bounded). */
  maxArrayDepth: 8,
  /** Default alignment of tensor data when general.alignment is absent. */
  defaultAlignment: 32,
} as const;

/** Thrown by the parser when the prefix it was given ends too early. */
export class NeedMoreBytes extends Error {
  constructor(readonly needed: number) {
    super(`GGUF header parser needs ${needed} bytes`);
  }
}

const MAGIC = 0x46554747; // 'GGUF' read as a little-endian u32
const SUPPORTED_VERSIONS = [2, 3];
// Smallest encodings, to bound counts before looping over them:
// a KV is a key length (8) + value type (4) + at least one value byte;
// a tensor info is a name length (8) + n_dims (4) + type (4) + offset (8).
const MIN_KV_BYTES = 8 + 4 + 1;
const MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8;
const HEADER_FIXED_BYTES = 4 + 4 + 8 + 8;
const INT64_MAX = (1n << 63n) - 1n;

/**
 * What is being read, for error messages. Hot loops (a 150k-token
 * vocabulary) pass a function so the text is only built on failure.
 */
type Label = string | (() => string);

function label(what: Label): string {
  return typeof what === 'string' ? what : what();
}

/**
 * A name from the file, fit for an error message: control characters
 * escaped (a hostile name must not drive the terminal) and long names cut.
 */
export function quoteName(s: string): string {
  const cut = s.length > 96 ? `${s.slice(0, 96)}...` : s;
  return `'${cut.replace(/[\u0000-\u001f\u007f-\u009f]/g, (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`)}'`;
}

function formatError(file: string, message: string): SlimTensorError {
  return new SlimTensorError(`GGUF ${file}: ${message}`, 'ERR_FORMAT');
}

/** A bounds-checked little-endian reader over the file prefix. */
class Cursor {
  pos = 0;
  private readonly view: DataView;
  // Buffer's UTF-8 decoding is much faster than TextDecoder on short
  // strings; like it, it replaces invalid sequences with U+FFFD (some
  // vocabularies hold byte tokens that are not valid UTF-8 on their own).
  private readonly buf: Buffer;

  constructor(
    private readonly bytes: Uint8Array,
    readonly fileSize: number,
    readonly file: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  fail(message: string): never {
    throw formatError(this.file, message);
  }

  /** Bytes the file has after the cursor (not just the prefix in memory). */
  get fileRemaining(): number {
    return this.fileSize - this.pos;
  }

  /** Ensures `n` more bytes are in the prefix, asking for a longer one if the file has them. */
  private need(n: number, what: Label): void {
    const end = this.pos + n;
    if (end > this.fileSize) {
      this.fail(`${label(what)} at offset ${this.pos} needs ${n} bytes but the file ends at ${this.fileSize} (truncated?)`);
    }
    if (end > this.bytes.length) throw new NeedMoreBytes(end);
  }

  /** Rejects `count` items of at least `minBytes` each when the rest of the file cannot hold them. */
  checkCount(count: bigint, minBytes: number, what: Label): number {
    const room = BigInt(this.fileRemaining);
    if (count * BigInt(minBytes) > room) {
      this.fail(`${label(what)} is ${count}, but the ${room} bytes left in the file hold at most ${room / BigInt(minBytes)}`);
    }
    return Number(count);
  }

  u32(what: Label): number {
    this.need(4, what);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }

  u64(what: Label): bigint {
    this.need(8, what);
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    return v;
  }

  /** Copies `n` bytes out (copies are aligned, so typed views over them are legal). */
  take(n: number, what: Label): Uint8Array<ArrayBuffer> {
    this.need(n, what);
    const out = this.bytes.slice(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  string(maxBytes: number, what: Label): string {
    const at = this.pos;
    // The u64 length as two u32 halves: BigInt arithmetic would dominate
    // the cost of a vocabulary's worth of short strings.
    this.need(8, () => `${label(what)} length`);
    const lo = this.view.getUint32(at, true);
    const hi = this.view.getUint32(at + 4, true);
    this.pos += 8;
    if (hi !== 0 || lo > maxBytes) {
      this.fail(`${label(what)} at offset ${at} is ${(BigInt(hi) << 32n) | BigInt(lo)} bytes long; the limit is ${maxBytes}`);
    }
    const n = lo;
    if (n > this.fileRemaining) this.fail(`${label(what)} at offset ${at} is ${n} bytes long but only ${this.fileRemaining} bytes remain in the file`);
    this.need(n, what);
    const s = this.buf.toString('utf8', this.pos, this.pos + n);
    this.pos += n;
    return s;
  }

  scalar(type: Exclude<GGUFValueTypeName, 'string' | 'array'>, what: string): number | bigint | boolean {
    this.need(SCALAR_BYTES[type], what);
    const p = this.pos;
    this.pos += SCALAR_BYTES[type];
    const v = this.view;
    switch (type) {
      case 'u8':
        return v.getUint8(p);
      case 'i8':
        return v.getInt8(p);
      case 'u16':
        return v.getUint16(p, true);
      case 'i16':
        return v.getInt16(p, true);
      case 'u32':
        return v.getUint32(p, true);
      case 'i32':
        return v.getInt32(p, true);
      case 'f32':
        return v.getFloat32(p, true);
      case 'f64':
        return v.getFloat64(p, true);
      // GGUF says 0 or 1; any other byte is read as true, as a C reader would.
      case 'bool':
        return v.getUint8(p) !== 0;
      case 'u64':
        return narrow(v.getBigUint64(p, true));
      case 'i64':
        return narrow(v.getBigInt64(p, true));
    }
  }
}

function narrow(v: bigint): number | bigint {
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : v;
}

function readValueType(c: Cursor, what: Label): GGUFValueTypeName {
  const at = c.pos;
  const id = c.u32(() => `${label(what)} type`);
  const name = valueTypeName(id);
  if (name === undefined) c.fail(`${label(what)} at offset ${at} has unknown value type ${id} (known: 0..12)`);
  return name;
}

function readArray(c: Cursor, what: Label, depth: number): { itemType: GGUFValueTypeName; value: GGUFArrayValue } {
  if (depth > GGUF_LIMITS.maxArrayDepth) c.fail(`${label(what)} nests arrays more than ${GGUF_LIMITS.maxArrayDepth} deep`);
  const itemType = readValueType(c, () => `${label(what)} element`);
  const at = c.pos;
  const count = c.checkCount(c.u64(() => `${label(what)} count`), minValueBytes(itemType), () => `${label(what)}: the element count at offset ${at}`);
  return { itemType, value: readArrayItems(c, itemType, count, label(what), depth) };
}

/**
 * The element type of nested arrays read from a file, for plain arrays whose
 * JS value cannot tell (an empty string[] and an empty boolean[] look the
 * same): a writer copying metadata needs it. TypedArrays imply their type.
 */
const PLAIN_ARRAY_ITEM_TYPES = new WeakMap<object, GGUFValueTypeName>();

/** The declared element type of a nested array value read by the parser, if it recorded one. */
export function nestedArrayItemType(value: GGUFArrayValue): GGUFValueTypeName | undefined {
  return PLAIN_ARRAY_ITEM_TYPES.get(value);
}

// Fixed-size elements are copied out in one piece and viewed as the
// matching TypedArray (the host is little-endian; gguf.ts checks).
const TYPED_ARRAYS = {
  u8: Uint8Array,
  i8: Int8Array,
  u16: Uint16Array,
  i16: Int16Array,
  u32: Uint32Array,
  i32: Int32Array,
  f32: Float32Array,
  f64: Float64Array,
  u64: BigUint64Array,
  i64: BigInt64Array,
} as const;

function readArrayItems(c: Cursor, itemType: GGUFValueTypeName, count: number, what: string, depth: number): GGUFArrayValue {
  switch (itemType) {
    case 'string': {
      const out: string[] = [];
      for (let i = 0; i < count; i++) out.push(c.string(GGUF_LIMITS.maxStringBytes, () => `${what}[${i}]`));
      return out;
    }
    case 'array': {
      const out: GGUFArrayValue[] = [];
      for (let i = 0; i < count; i++) {
        const inner = readArray(c, () => `${what}[${i}]`, depth + 1);
        if (Array.isArray(inner.value)) PLAIN_ARRAY_ITEM_TYPES.set(inner.value, inner.itemType);
        out.push(inner.value);
      }
      return out;
    }
    case 'bool': {
      const raw = c.take(count, what);
      return Array.from(raw, (b) => b !== 0);
    }
    default: {
      const ctor = TYPED_ARRAYS[itemType];
      const raw = c.take(count * SCALAR_BYTES[itemType], what);
      return new ctor(raw.buffer, 0, count);
    }
  }
}

function readMetadata(c: Cursor, kvCount: number, header: Pick<GGUFHeader, 'entries' | 'metadata'>): void {
  for (let i = 0; i < kvCount; i++) {
    const at = c.pos;
    const key = c.string(GGUF_LIMITS.maxKeyBytes, `metadata key #${i}`);
    const what = `metadata ${quoteName(key)}`;
    if (header.metadata.has(key)) c.fail(`${what} at offset ${at} is a duplicate key`);
    const type = readValueType(c, what);
    let entry: GGUFMetadataEntry;
    if (type === 'array') {
      const { itemType, value } = readArray(c, what, 1);
      entry = { key, type, itemType, value };
    } else {
      entry = { key, type, value: type === 'string' ? c.string(GGUF_LIMITS.maxStringBytes, what) : c.scalar(type, what) };
    }
    header.entries.push(entry);
    header.metadata.set(key, entry.value);
  }
}

/** general.alignment: a u32 power of two, as llama.cpp requires. */
function alignmentOf(c: Cursor, entries: readonly GGUFMetadataEntry[]): number {
  const e = entries.find((x) => x.key === 'general.alignment');
  if (e === undefined) return GGUF_LIMITS.defaultAlignment;
  if (e.type !== 'u32') c.fail(`metadata 'general.alignment' must be a u32, got ${e.type}`);
  const a = e.value as number;
  if (a === 0 || (a & (a - 1)) !== 0) c.fail(`metadata 'general.alignment' is ${a}; it must be a power of two`);
  return a;
}

interface RawTensorInfo {
  name: string;
  dims: number[];
  type: GGMLTypeInfo;
  offset: bigint;
  byteLength: number;
}

function readTensorInfo(c: Cursor, index: number): RawTensorInfo {
  const at = c.pos;
  const name = c.string(GGUF_LIMITS.maxTensorNameBytes, `tensor #${index} name`);
  const what = `tensor ${quoteName(name)}`;
  const nDims = c.u32(`${what} n_dims`);
  if (nDims > GGUF_LIMITS.maxDims) c.fail(`${what} (info at offset ${at}) has ${nDims} dimensions; ggml allows at most ${GGUF_LIMITS.maxDims}`);
  const dims: number[] = [];
  let elements = 1n;
  for (let d = 0; d < nDims; d++) {
    const dim = c.u64(`${what} dims[${d}]`);
    // Each dimension must be exact as a JS number even when another is 0
    // (an empty tensor), because shapes are number[].
    if (dim > BigInt(Number.MAX_SAFE_INTEGER)) c.fail(`${what} dims[${d}] is ${dim}, beyond 2^53`);
    dims.push(Number(dim));
    elements *= dim;
    if (elements > INT64_MAX) c.fail(`${what} has dims [${dims.join(', ')}...] whose element count overflows int64`);
  }
  const typeAt = c.pos;
  const typeId = c.u32(`${what} type`);
  const type = ggmlType(typeId);
  if (type === undefined) c.fail(`${what} has unknown ggml type id ${typeId} (at offset ${typeAt})`);
  const offset = c.u64(`${what} offset`);
  const rowLength = nDims === 0 ? 1 : (dims[0] as number);
  if (rowLength % type.blockSize !== 0) {
    c.fail(`${what} of type ${type.name} has rows of ${rowLength} values, not a multiple of its block size ${type.blockSize}`);
  }
  const bytes = (elements / BigInt(type.blockSize)) * BigInt(type.blockBytes);
  if (bytes > BigInt(c.fileSize)) {
    c.fail(`${what} of type ${type.name} with dims [${dims.join(', ')}] needs ${bytes} bytes, more than the whole file (${c.fileSize})`);
  }
  return { name, dims, type, offset, byteLength: Number(bytes) };
}

/** Checks offsets (aligned, inside the data section) and that no two tensors share bytes. */
function placeTensors(c: Cursor, raw: readonly RawTensorInfo[], alignment: number, dataOffset: number): GGUFTensorInfo[] {
  const dataBytes = BigInt(Math.max(0, c.fileSize - dataOffset));
  const placed = raw.map((t): GGUFTensorInfo => {
    const what = `tensor ${quoteName(t.name)}`;
    if (t.offset % BigInt(alignment) !== 0n) c.fail(`${what} has offset ${t.offset}, not a multiple of the alignment ${alignment}`);
    if (t.offset + BigInt(t.byteLength) > dataBytes) {
      c.fail(`${what} spans data bytes [${t.offset}, ${t.offset + BigInt(t.byteLength)}) but the data section (from file offset ${dataOffset}) holds ${dataBytes} bytes`);
    }
    const offset = Number(t.offset);
    return {
      name: t.name,
      shape: Object.freeze(t.dims.slice().reverse()),
      dims: Object.freeze(t.dims.slice()),
      type: t.type.name,
      typeId: t.type.id,
      byteLength: t.byteLength,
      offset,
      fileOffset: dataOffset + offset,
    };
  });
  // Tensors may come in any order and leave gaps (llama.cpp wants them packed
  // in order; we only need them disjoint). Empty tensors occupy no bytes.
  const byOffset = placed.filter((t) => t.byteLength > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byOffset.length; i++) {
    const prev = byOffset[i - 1] as GGUFTensorInfo;
    const cur = byOffset[i] as GGUFTensorInfo;
    if (cur.offset < prev.offset + prev.byteLength) {
      c.fail(`tensor ${quoteName(cur.name)} at data offset ${cur.offset} overlaps tensor ${quoteName(prev.name)} (bytes [${prev.offset}, ${prev.offset + prev.byteLength}))`);
    }
  }
  return placed;
}

function readPreamble(c: Cursor): { version: number; tensorCount: bigint; kvCount: bigint } {
  if (c.fileSize < HEADER_FIXED_BYTES) c.fail(`the file is ${c.fileSize} bytes, too short for a GGUF header (${HEADER_FIXED_BYTES} bytes)`);
  const magic = c.u32('magic');
  if (magic !== MAGIC) {
    const hex = [0, 8, 16, 24].map((s) => ((magic >>> s) & 0xff).toString(16).padStart(2, '0')).join(' ');
    c.fail(`not a GGUF file: the magic bytes are ${hex}, expected 47 47 55 46 ('GGUF')`);
  }
  const version = c.u32('version');
  if (!SUPPORTED_VERSIONS.includes(version)) {
    // A big-endian v2/v3 file reads as 0x02000000/0x03000000 here.
    const hint = version === 0x02000000 || version === 0x03000000 ? ' (a big-endian GGUF; only little-endian files are supported)' : version === 1 ? ' (GGUF v1 used 32-bit counts; re-convert the model)' : '';
    c.fail(`unsupported GGUF version ${version}${hint}; supported: ${SUPPORTED_VERSIONS.join(', ')}`);
  }
  const tensorCount = c.u64('tensor count');
  const kvCount = c.u64('metadata count');
  return { version, tensorCount, kvCount };
}

/**
 * Parses the header from `bytes`, the first bytes.length bytes of a file of
 * `fileSize` bytes named `file` (for messages). Throws NeedMoreBytes when
 * the prefix is too short but the file is not, SlimTensorError ERR_FORMAT
 * when the header breaks a rule.
 */
export function parseGGUFHeader(bytes: Uint8Array, fileSize: number, file: string): GGUFHeader {
  const c = new Cursor(bytes, fileSize, file);
  const { version, tensorCount, kvCount } = readPreamble(c);
  const header: GGUFHeader = {
    version,
    entries: [],
    metadata: new Map(),
    tensors: [],
    alignment: GGUF_LIMITS.defaultAlignment,
    dataOffset: 0,
    headerBytes: 0,
  };
  readMetadata(c, c.checkCount(kvCount, MIN_KV_BYTES, 'the metadata count'), header);
  header.alignment = alignmentOf(c, header.entries);

  const nTensors = c.checkCount(tensorCount, MIN_TENSOR_INFO_BYTES, 'the tensor count');
  const raw: RawTensorInfo[] = [];
  const names = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const t = readTensorInfo(c, i);
    if (names.has(t.name)) c.fail(`tensor ${quoteName(t.name)} (#${i}) is a duplicate name`);
    names.add(t.name);
    raw.push(t);
  }
  header.headerBytes = c.pos;
  header.dataOffset = Math.ceil(c.pos / header.alignment) * header.alignment;
  header.tensors = placeTensors(c, raw, header.alignment, header.dataOffset);
  return header;
}
