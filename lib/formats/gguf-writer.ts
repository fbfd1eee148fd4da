// GGUF writer (version 3, little-endian): the header (metadata and tensor
// infos with offsets computed from the planned shapes and types) is written
// first, then each tensor's data in plan order, padded to the alignment.
// Metadata entries are written as given, typed: copy a source file's
// `entries` and set what changed (writer helpers below).
import { SlimTensorError } from '../errors';
import { nestedArrayItemType, quoteName, GGUF_LIMITS, type GGUFArrayValue, type GGUFMetadataEntry, type GGUFValue } from './gguf-header';
import { GGUF_VALUE_TYPES, ggmlTypeByName, SCALAR_BYTES, type GGMLTypeName, type GGUFValueTypeName } from './gguf-types';
import { OutputFile } from './output-file';
import { viewBytes } from './safetensors';

/** A tensor to write: PyTorch-order shape (outermost first) and a ggml type. */
export interface GGUFPlannedTensor {
  name: string;
  shape: readonly number[];
  type: GGMLTypeName;
}

/**
 * general.file_type values (llama.cpp's llama_ftype) of a file "mostly" of
 * each type slimtensor writes. A K-quant names llama-quantize's alias for
 * it (Q3_K → Q3_K_M 12, Q4_K → Q4_K_M 15, Q5_K → Q5_K_M 17); the mixes
 * (lib/pipeline/gguf-mix.ts) write their own value.
 */
export const GGUF_FILE_TYPES: Readonly<Partial<Record<GGMLTypeName, number>>> = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q8_0: 7,
  Q5_0: 8,
  Q5_1: 9,
  Q2_K: 10,
  Q3_K: 12,
  Q4_K: 15,
  Q5_K: 17,
  Q6_K: 18,
  BF16: 32,
};

/** general.quantization_version: ggml's GGML_QNT_VERSION, the block layouts of the types written. */
export const GGUF_QUANTIZATION_VERSION = 2;

/** Bytes of data of a tensor of this type and shape; ERR_SHAPE when rows do not fit the block. */
export function ggufTensorBytes(t: GGUFPlannedTensor): number {
  const type = ggmlTypeByName(t.type);
  if (type === undefined) throw new SlimTensorError(`GGUF writer: tensor ${quoteName(t.name)} has unknown type ${String(t.type)}`, 'ERR_VALUE');
  const row = t.shape.length === 0 ? 1 : (t.shape[t.shape.length - 1] as number);
  if (row % type.blockSize !== 0) {
    throw new SlimTensorError(`GGUF writer: tensor ${quoteName(t.name)} of type ${t.type} has rows of ${row} values, not a multiple of its block size ${type.blockSize}`, 'ERR_SHAPE');
  }
  const n = t.shape.reduce((a, d) => a * d, 1);
  return (n / type.blockSize) * type.blockBytes;
}

/** Growable little-endian byte sink for the header. */
class Sink {
  private buf = new Uint8Array(4096);
  private view = new DataView(this.buf.buffer);
  length = 0;

  private room(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const b = new Uint8Array(size);
    b.set(this.buf.subarray(0, this.length));
    this.buf = b;
    this.view = new DataView(b.buffer);
  }

  bytes(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }

  u32(v: number): void {
    this.room(4);
    this.view.setUint32(this.length, v, true);
    this.length += 4;
  }

  u64(v: number | bigint): void {
    this.room(8);
    this.view.setBigUint64(this.length, BigInt(v), true);
    this.length += 8;
  }

  string(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.bytes(b);
  }

  scalar(type: Exclude<GGUFValueTypeName, 'string' | 'array'>, v: unknown, what: string): void {
    const n = SCALAR_BYTES[type];
    this.room(n);
    const d = this.view;
    const p = this.length;
    const num = (): number => {
      if (typeof v !== 'number' && typeof v !== 'bigint') throw new SlimTensorError(`GGUF writer: ${what} must be a number for type ${type}`, 'ERR_VALUE');
      return Number(v);
    };
    switch (type) {
      case 'u8':
        d.setUint8(p, num());
        break;
      case 'i8':
        d.setInt8(p, num());
        break;
      case 'u16':
        d.setUint16(p, num(), true);
        break;
      case 'i16':
        d.setInt16(p, num(), true);
        break;
      case 'u32':
        d.setUint32(p, num(), true);
        break;
      case 'i32':
        d.setInt32(p, num(), true);
        break;
      case 'f32':
        d.setFloat32(p, num(), true);
        break;
      case 'f64':
        d.setFloat64(p, num(), true);
        break;
      case 'bool':
        d.setUint8(p, v ? 1 : 0);
        break;
      case 'u64':
        d.setBigUint64(p, BigInt.asUintN(64, BigInt(v as number | bigint)), true);
        break;
      case 'i64':
        d.setBigInt64(p, BigInt.asIntN(64, BigInt(v as number | bigint)), true);
        break;
    }
    this.length += n;
  }

  done(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
}

const TYPED_ITEM_TYPES: [new (...a: never[]) => unknown, GGUFValueTypeName][] = [
  [Uint8Array, 'u8'],
  [Int8Array, 'i8'],
  [Uint16Array, 'u16'],
  [Int16Array, 'i16'],
  [Uint32Array, 'u32'],
  [Int32Array, 'i32'],
  [Float32Array, 'f32'],
  [Float64Array, 'f64'],
  [BigUint64Array, 'u64'],
  [BigInt64Array, 'i64'],
];

/** The element type of an inner array: declared by the reader, implied by a TypedArray, or guessed from its elements. */
function innerItemType(v: GGUFArrayValue, what: string): GGUFValueTypeName {
  const declared = nestedArrayItemType(v);
  if (declared !== undefined) return declared;
  for (const [ctor, name] of TYPED_ITEM_TYPES) if (v instanceof ctor) return name;
  const first = (v as unknown[])[0];
  if (first === undefined) return 'u8';
  if (typeof first === 'string') return 'string';
  if (typeof first === 'boolean') return 'bool';
  if (Array.isArray(first) || ArrayBuffer.isView(first)) return 'array';
  throw new SlimTensorError(`GGUF writer: ${what} has elements of an unsupported kind`, 'ERR_VALUE');
}

function writeArray(s: Sink, itemType: GGUFValueTypeName, value: GGUFArrayValue, what: string, depth: number): void {
  if (depth > GGUF_LIMITS.maxArrayDepth) throw new SlimTensorError(`GGUF writer: ${what} nests arrays more than ${GGUF_LIMITS.maxArrayDepth} deep`, 'ERR_VALUE');
  s.u32(GGUF_VALUE_TYPES[itemType]);
  const items = value as ArrayLike<unknown>;
  s.u64(items.length);
  if (itemType !== 'string' && itemType !== 'array' && itemType !== 'bool' && ArrayBuffer.isView(value)) {
    // Numeric TypedArrays of the declared type: their bytes as they are (little-endian host).
    const [ctor] = TYPED_ITEM_TYPES.find(([, n]) => n === itemType) ?? [];
    if (ctor !== undefined && value instanceof ctor) {
      s.bytes(viewBytes(value));
      return;
    }
  }
  for (let i = 0; i < items.length; i++) {
    const v = items[i];
    if (itemType === 'string') {
      if (typeof v !== 'string') throw new SlimTensorError(`GGUF writer: ${what}[${i}] must be a string`, 'ERR_VALUE');
      s.string(v);
    } else if (itemType === 'array') {
      const inner = v as GGUFArrayValue;
      writeArray(s, innerItemType(inner, `${what}[${i}]`), inner, `${what}[${i}]`, depth + 1);
    } else {
      s.scalar(itemType, v, `${what}[${i}]`);
    }
  }
}

function writeEntry(s: Sink, e: GGUFMetadataEntry): void {
  const what = `metadata ${quoteName(e.key)}`;
  if (!Object.prototype.hasOwnProperty.call(GGUF_VALUE_TYPES, e.type)) throw new SlimTensorError(`GGUF writer: ${what} has unknown type ${String(e.type)}`, 'ERR_VALUE');
  s.string(e.key);
  s.u32(GGUF_VALUE_TYPES[e.type]);
  if (e.type === 'string') {
    if (typeof e.value !== 'string') throw new SlimTensorError(`GGUF writer: ${what} must be a string`, 'ERR_VALUE');
    s.string(e.value);
  } else if (e.type === 'array') {
    const v = e.value as GGUFArrayValue;
    writeArray(s, e.itemType ?? innerItemType(v, what), v, what, 1);
  } else {
    s.scalar(e.type, e.value, what);
  }
}

/**
 * Returns `entries` with `key` set to (type, value): replaced in place when
 * present (`where: 'in place'`, the default), or removed and appended at
 * the end (`'at end'`: what ggml's gguf_set_val_* does, so llama-quantize's
 * outputs list general.file_type last), appended when absent.
 */
export function setMetadata(
  entries: readonly GGUFMetadataEntry[],
  key: string,
  type: Exclude<GGUFValueTypeName, 'array'>,
  value: GGUFValue,
  where: 'in place' | 'at end' = 'in place',
): GGUFMetadataEntry[] {
  const entry: GGUFMetadataEntry = { key, type, value };
  if (where === 'at end') return [...removeMetadata(entries, key), entry];
  const out = entries.slice();
  const i = out.findIndex((e) => e.key === key);
  if (i >= 0) out[i] = entry;
  else out.push(entry);
  return out;
}

/** Returns `entries` without `key`. */
export function removeMetadata(entries: readonly GGUFMetadataEntry[], key: string): GGUFMetadataEntry[] {
  return entries.filter((e) => e.key !== key);
}

export interface GGUFWriterPlan {
  /** Metadata in the order to write (general.alignment, when present, sets the alignment). */
  entries: readonly GGUFMetadataEntry[];
  tensors: readonly GGUFPlannedTensor[];
}

/** Writes a GGUF v3 file: header from the plan, then tensors in plan order. */
export class GGUFWriter {
  readonly path: string;
  readonly alignment: number;
  /** Absolute offset of the data section. */
  readonly dataOffset: number;
  private out: OutputFile | undefined;
  private readonly tensors: readonly GGUFPlannedTensor[];
  private readonly sizes: number[];
  private readonly offsets: number[];
  private next = 0;
  /** Bytes of the tensor `next` appended so far. */
  private filled = 0;

  private constructor(p: string, out: OutputFile, plan: GGUFWriterPlan, alignment: number, dataOffset: number, sizes: number[], offsets: number[]) {
    this.path = p;
    this.out = out;
    this.tensors = plan.tensors.slice();
    this.alignment = alignment;
    this.dataOffset = dataOffset;
    this.sizes = sizes;
    this.offsets = offsets;
  }

  /** The header bytes, the data section offset and each tensor's size and offset. */
  static layout(plan: GGUFWriterPlan): { header: Uint8Array; alignment: number; dataOffset: number; sizes: number[]; offsets: number[]; fileSize: number } {
    const al = plan.entries.find((e) => e.key === 'general.alignment');
    let alignment: number = GGUF_LIMITS.defaultAlignment;
    if (al !== undefined) {
      const a = al.value;
      if (al.type !== 'u32' || typeof a !== 'number' || a === 0 || (a & (a - 1)) !== 0) {
        throw new SlimTensorError(`GGUF writer: general.alignment must be a u32 power of two, got ${String(a)} (${al.type})`, 'ERR_VALUE');
      }
      alignment = a;
    }
    const keys = new Set<string>();
    for (const e of plan.entries) {
      if (keys.has(e.key)) throw new SlimTensorError(`GGUF writer: metadata ${quoteName(e.key)} is given twice`, 'ERR_VALUE');
      keys.add(e.key);
    }
    const names = new Set<string>();
    const sizes: number[] = [];
    const offsets: number[] = [];
    let at = 0;
    for (const t of plan.tensors) {
      if (Buffer.byteLength(t.name, 'utf8') > GGUF_LIMITS.maxTensorNameBytes) {
        throw new SlimTensorError(`GGUF writer: tensor name ${quoteName(t.name)} is longer than GGUF's ${GGUF_LIMITS.maxTensorNameBytes} bytes`, 'ERR_VALUE');
      }
      if (names.has(t.name)) throw new SlimTensorError(`GGUF writer: tensor ${quoteName(t.name)} is planned twice`, 'ERR_VALUE');
      names.add(t.name);
      if (t.shape.length > GGUF_LIMITS.maxDims) throw new SlimTensorError(`GGUF writer: tensor ${quoteName(t.name)} has ${t.shape.length} dimensions; GGUF allows ${GGUF_LIMITS.maxDims}`, 'ERR_SHAPE');
      const n = ggufTensorBytes(t);
      sizes.push(n);
      offsets.push(at);
      at += Math.ceil(n / alignment) * alignment;
    }
    const s = new Sink();
    s.bytes(new Uint8Array([0x47, 0x47, 0x55, 0x46]));
    s.u32(3);
    s.u64(plan.tensors.length);
    s.u64(plan.entries.length);
    for (const e of plan.entries) writeEntry(s, e);
    plan.tensors.forEach((t, i) => {
      s.string(t.name);
      s.u32(t.shape.length);
      for (let d = t.shape.length - 1; d >= 0; d--) s.u64(t.shape[d] as number); // innermost first
      s.u32(ggmlTypeByName(t.type).id);
      s.u64(offsets[i] as number);
    });
    const dataOffset = Math.ceil(s.length / alignment) * alignment;
    const header = new Uint8Array(dataOffset);
    header.set(s.done());
    return { header, alignment, dataOffset, sizes, offsets, fileSize: dataOffset + at };
  }

  static async create(file: string, plan: GGUFWriterPlan): Promise<GGUFWriter> {
    const l = GGUFWriter.layout(plan);
    const out = await OutputFile.create(file, { plannedBytes: l.fileSize });
    try {
      await out.write(l.header, 0);
    } catch (e) {
      await out.abort();
      throw e;
    }
    return new GGUFWriter(file, out, plan, l.alignment, l.dataOffset, l.sizes, l.offsets);
  }

  get expected(): string | undefined {
    return this.tensors[this.next]?.name;
  }

  /** Writes the next planned tensor's data (`parts` concatenated) and the padding after it. */
  async write(name: string, ...parts: ArrayBufferView[]): Promise<void> {
    const t = this.expect(name);
    const size = this.sizes[this.next] as number;
    const total = parts.reduce((n, p) => n + p.byteLength, 0);
    if (total !== size || this.filled > 0) throw new SlimTensorError(`GGUFWriter ${this.path}: tensor ${quoteName(name)} (${t.type} [${t.shape.join(', ')}]) needs ${size} bytes, got ${total}${this.filled > 0 ? ` after ${this.filled} appended` : ''}`, 'ERR_SHAPE');
    if (size === 0) return this.finishTensor();
    for (const p of parts) if (p.byteLength > 0) await this.append(name, p);
  }

  /**
   * Writes the next bytes of the planned tensor `name` (the one expected):
   * a tensor written in pieces, e.g. bands of rows. When its size is
   * reached the padding follows and the next tensor is expected.
   */
  async append(name: string, bytes: ArrayBufferView): Promise<void> {
    const out = this.handle();
    const t = this.expect(name);
    const size = this.sizes[this.next] as number;
    if (this.filled + bytes.byteLength > size) throw new SlimTensorError(`GGUFWriter ${this.path}: tensor ${quoteName(name)} (${t.type} [${t.shape.join(', ')}]) needs ${size} bytes; ${this.filled} written and ${bytes.byteLength} more given`, 'ERR_SHAPE');
    await out.write(viewBytes(bytes), this.dataOffset + (this.offsets[this.next] as number) + this.filled);
    this.filled += bytes.byteLength;
    if (this.filled === size) await this.finishTensor();
  }

  /** The planned tensor `name`, when it is the one expected next. */
  private expect(name: string): GGUFPlannedTensor {
    this.handle();
    const t = this.tensors[this.next];
    if (t === undefined || t.name !== name) throw new SlimTensorError(`GGUFWriter ${this.path}: got tensor ${quoteName(name)}, expected ${t === undefined ? 'no more tensors' : quoteName(t.name)}`, 'ERR_VALUE');
    return t;
  }

  /** The padding after the current tensor; the next one is expected. */
  private async finishTensor(): Promise<void> {
    const size = this.sizes[this.next] as number;
    const pad = (this.alignment - (size % this.alignment)) % this.alignment;
    if (pad > 0) await this.handle().write(new Uint8Array(pad), this.dataOffset + (this.offsets[this.next] as number) + size);
    this.next++;
    this.filled = 0;
  }

  async close(): Promise<void> {
    const out = this.handle();
    if (this.next !== this.tensors.length) {
      throw new SlimTensorError(`GGUFWriter ${this.path}: closed after ${this.next} of ${this.tensors.length} tensors`, 'ERR_VALUE');
    }
    this.out = undefined;
    await out.close();
  }

  async abort(): Promise<void> {
    const out = this.out;
    this.out = undefined;
    await out?.abort();
  }

  private handle(): OutputFile {
    if (this.out === undefined) throw new SlimTensorError(`GGUFWriter ${this.path}: already closed`, 'ERR_VALUE');
    return this.out;
  }
}
