// A small GGUF writer for tests, written from the format description in
// shared/reference/FORMATS.md and deliberately independent of lib/ (it
// uses raw ids, not the reader's tables), so reader and writer do not
// share mistakes. It can also write files that break the rules on
// purpose: explicit offsets, any version, any type id.

/** A metadata value with its GGUF type. Arrays carry their element type. */
export type WValue =
  | { type: 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'f64'; value: number }
  | { type: 'u64' | 'i64'; value: bigint }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | { type: 'array'; itemType: WType; value: WValue[] };
export type WType = WValue['type'];

const VALUE_TYPE_IDS: Record<WType, number> = {
  u8: 0,
  i8: 1,
  u16: 2,
  i16: 3,
  u32: 4,
  i32: 5,
  f32: 6,
  bool: 7,
  string: 8,
  array: 9,
  u64: 10,
  i64: 11,
  f64: 12,
};

/** ggml type ids used by the tests. */
export const GGML = { F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q5_0: 6, Q8_0: 8, Q4_K: 12, BF16: 30 } as const;

export interface WTensor {
  name: string;
  /** GGUF order: innermost (row length) first. */
  dims: readonly (number | bigint)[];
  typeId: number;
  data: Uint8Array;
  /** Data-section offset to write instead of the packed one. */
  offset?: bigint;
}

export interface WFile {
  version?: number;
  /** Written as the first key, as a u32, when given. */
  alignment?: number;
  kv?: readonly [string, WValue][];
  tensors?: readonly WTensor[];
  /** Overrides the written counts (to forge headers). */
  tensorCount?: bigint;
  kvCount?: bigint;
}

/** A numeric field of the header: where it is and how wide (for fuzzing). */
export interface Field {
  pos: number;
  size: 4 | 8;
  what: string;
}

class Bytes {
  private chunks: Uint8Array[] = [];
  length = 0;
  readonly fields: Field[] = [];

  /** Notes that the next `size` bytes hold a count, length, type id, dim or offset. */
  mark(size: 4 | 8, what: string): void {
    this.fields.push({ pos: this.length, size, what });
  }

  push(b: Uint8Array): void {
    this.chunks.push(b);
    this.length += b.length;
  }

  private fixed(n: number, f: (v: DataView) => void): void {
    const b = new Uint8Array(n);
    f(new DataView(b.buffer));
    this.push(b);
  }

  u8(v: number): void {
    this.fixed(1, (d) => d.setUint8(0, v));
  }
  u32(v: number): void {
    this.fixed(4, (d) => d.setUint32(0, v, true));
  }
  u64(v: bigint): void {
    this.fixed(8, (d) => d.setBigUint64(0, v, true));
  }
  str(s: string): void {
    const b = new TextEncoder().encode(s);
    this.mark(8, 'string length');
    this.u64(BigInt(b.length));
    this.push(b);
  }
  pad(to: number): void {
    const n = (to - (this.length % to)) % to;
    this.push(new Uint8Array(n));
  }

  value(v: WValue): void {
    switch (v.type) {
      case 'u8':
        return this.fixed(1, (d) => d.setUint8(0, v.value));
      case 'i8':
        return this.fixed(1, (d) => d.setInt8(0, v.value));
      case 'u16':
        return this.fixed(2, (d) => d.setUint16(0, v.value, true));
      case 'i16':
        return this.fixed(2, (d) => d.setInt16(0, v.value, true));
      case 'u32':
        return this.fixed(4, (d) => d.setUint32(0, v.value, true));
      case 'i32':
        return this.fixed(4, (d) => d.setInt32(0, v.value, true));
      case 'f32':
        return this.fixed(4, (d) => d.setFloat32(0, v.value, true));
      case 'f64':
        return this.fixed(8, (d) => d.setFloat64(0, v.value, true));
      case 'u64':
        return this.fixed(8, (d) => d.setBigUint64(0, v.value, true));
      case 'i64':
        return this.fixed(8, (d) => d.setBigInt64(0, v.value, true));
      case 'bool':
        return this.u8(v.value ? 1 : 0);
      case 'string':
        return this.str(v.value);
      case 'array':
        this.mark(4, 'array type');
        this.u32(VALUE_TYPE_IDS[v.itemType]);
        this.mark(8, 'array count');
        this.u64(BigInt(v.value.length));
        for (const item of v.value) this.value(item);
        return;
    }
  }

  concat(): Uint8Array {
    const out = new Uint8Array(this.length);
    let p = 0;
    for (const c of this.chunks) {
      out.set(c, p);
      p += c.length;
    }
    return out;
  }
}

export interface Written {
  bytes: Uint8Array;
  /** Absolute offset of the data section. */
  dataOffset: number;
  /** Bytes before the padding that precedes the data section. */
  headerBytes: number;
  /** Data-section offset of each tensor, as written. */
  offsets: bigint[];
  /** Every numeric header field (counts, lengths, type ids, dims, offsets). */
  fields: Field[];
}

/** Serialises a GGUF file: header, metadata, tensor infos, padding, data (each tensor padded). */
export function writeGGUF(f: WFile): Written {
  // Pad with a usable alignment even when writing a bad general.alignment on purpose.
  const a = f.alignment ?? 32;
  const align = a > 0 && (a & (a - 1)) === 0 ? a : 32;
  const kv: [string, WValue][] = [];
  if (f.alignment !== undefined) kv.push(['general.alignment', { type: 'u32', value: f.alignment }]);
  kv.push(...(f.kv ?? []));
  const tensors = f.tensors ?? [];

  // Packed offsets, each tensor padded to the alignment.
  const offsets: bigint[] = [];
  let next = 0n;
  for (const t of tensors) {
    offsets.push(t.offset ?? next);
    const padded = BigInt(Math.ceil(t.data.length / align) * align);
    next += padded;
  }

  const w = new Bytes();
  w.push(new Uint8Array([0x47, 0x47, 0x55, 0x46]));
  w.mark(4, 'version');
  w.u32(f.version ?? 3);
  w.mark(8, 'tensor count');
  w.u64(f.tensorCount ?? BigInt(tensors.length));
  w.mark(8, 'kv count');
  w.u64(f.kvCount ?? BigInt(kv.length));
  for (const [key, value] of kv) {
    w.str(key);
    w.mark(4, 'value type');
    w.u32(VALUE_TYPE_IDS[value.type]);
    w.value(value);
  }
  tensors.forEach((t, i) => {
    w.str(t.name);
    w.mark(4, 'n_dims');
    w.u32(t.dims.length);
    for (const d of t.dims) {
      w.mark(8, 'dim');
      w.u64(BigInt(d));
    }
    w.mark(4, 'ggml type');
    w.u32(t.typeId);
    w.mark(8, 'offset');
    w.u64(offsets[i] as bigint);
  });
  const headerBytes = w.length;
  w.pad(align);
  const dataOffset = w.length;
  for (const t of tensors) {
    w.push(t.data);
    w.pad(align);
  }
  return { bytes: w.concat(), dataOffset, headerBytes, offsets, fields: w.fields };
}

function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  if (d !== 0.5) return d > 0.5 ? f + 1 : f;
  return f % 2 === 0 ? f : f + 1;
}

const SCRATCH_F32 = new Float32Array(1);
const SCRATCH_U32 = new Uint32Array(SCRATCH_F32.buffer);

/** The bits of x rounded to f32 (no allocation: these run per element over large tensors). */
function f32Bits(x: number): number {
  SCRATCH_F32[0] = x;
  return SCRATCH_U32[0] as number;
}

/** f32 -> IEEE half bits, round-to-nearest-even (all steps exact in doubles). */
export function f32ToF16Bits(x: number): number {
  const u = f32Bits(x);
  const sign = (u >>> 16) & 0x8000;
  const abs = u & 0x7fffffff;
  if (abs >= 0x7f800000) return sign | 0x7c00 | (abs > 0x7f800000 ? 0x200 : 0);
  const a = Math.abs(Math.fround(x));
  if (a < 2 ** -14) return sign | roundHalfEven(a * 2 ** 24); // subnormal; 1024 is the smallest normal's code
  let e = (abs >>> 23) - 127;
  let q = roundHalfEven((a / 2 ** e - 1) * 1024);
  if (q === 1024) {
    q = 0;
    e += 1;
  }
  if (e + 15 >= 31) return sign | 0x7c00;
  return sign | ((e + 15) << 10) | q;
}

/** IEEE half bits -> number. */
export function f16BitsToNumber(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m === 0 ? s * Infinity : NaN;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** f32 -> bfloat16 bits, round-to-nearest-even. */
export function f32ToBF16Bits(x: number): number {
  const u = f32Bits(x);
  if ((u & 0x7fffffff) > 0x7f800000) return (u >>> 16) | 0x40;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** The bytes of a TypedArray (a copy). */
export function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
}
