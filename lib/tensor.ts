import { fail } from './errors';

/** Element types a Tensor can hold. f16 and bf16 live in Uint16Arrays. */
export type DType = 'f32' | 'f16' | 'bf16' | 'i8' | 'u8' | 'i32' | 'i64';
/** The floating-point dtypes the kernels take as input. */
export type FloatDType = 'f32' | 'f16' | 'bf16';

/** The TypedArray that backs each dtype. */
export interface DTypeArrays {
  f32: Float32Array;
  f16: Uint16Array;
  bf16: Uint16Array;
  i8: Int8Array;
  u8: Uint8Array;
  i32: Int32Array;
  i64: BigInt64Array;
}
export type TensorData = DTypeArrays[DType];

type ArrayCtor = {
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): TensorData;
  new (length: number): TensorData;
  readonly BYTES_PER_ELEMENT: number;
};

interface DTypeInfo {
  code: number; // the native side's DType value (native/core/tensor.h)
  bytes: number;
  ctor: ArrayCtor;
}

const DTYPES: Record<DType, DTypeInfo> = {
  f32: { code: 0, bytes: 4, ctor: Float32Array as unknown as ArrayCtor },
  f16: { code: 1, bytes: 2, ctor: Uint16Array as unknown as ArrayCtor },
  bf16: { code: 2, bytes: 2, ctor: Uint16Array as unknown as ArrayCtor },
  i8: { code: 3, bytes: 1, ctor: Int8Array as unknown as ArrayCtor },
  u8: { code: 4, bytes: 1, ctor: Uint8Array as unknown as ArrayCtor },
  i32: { code: 5, bytes: 4, ctor: Int32Array as unknown as ArrayCtor },
  i64: { code: 6, bytes: 8, ctor: BigInt64Array as unknown as ArrayCtor },
};

export const DTYPE_NAMES = Object.keys(DTYPES) as DType[];

export function isDType(v: unknown): v is DType {
  return typeof v === 'string' && Object.prototype.hasOwnProperty.call(DTYPES, v);
}

/** Bytes per element of a dtype. */
export function dtypeSize(dtype: DType): number {
  return DTYPES[dtype].bytes;
}

/** The native code of a dtype (internal). */
export function dtypeCode(dtype: DType): number {
  return DTYPES[dtype].code;
}

/** The dtype a TypedArray implies on its own; f16/bf16 must be named. */
function inferDType(a: ArrayBufferView): DType | undefined {
  if (a instanceof Float32Array) return 'f32';
  if (a instanceof Int8Array) return 'i8';
  if (a instanceof Uint8Array) return 'u8';
  if (a instanceof Int32Array) return 'i32';
  if (a instanceof BigInt64Array) return 'i64';
  return undefined;
}

/** Element count of a shape; validates each dimension. */
export function shapeSize(shape: readonly number[], where = 'Tensor', what = 'shape'): number {
  if (!Array.isArray(shape)) fail(where, 'ERR_SHAPE', `${what} must be an array of dimensions, got ${typeof shape}`);
  let n = 1;
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i];
    if (!Number.isSafeInteger(d) || (d as number) < 0) {
      fail(where, 'ERR_SHAPE', `${what}[${i}] must be a non-negative integer, got ${String(d)}`);
    }
    n *= d as number;
    if (!Number.isSafeInteger(n)) fail(where, 'ERR_SHAPE', `${what} [${shape.join(', ')}] has too many elements`);
  }
  return n;
}

/** True when two views share at least one byte (slices of one pooled Buffer may not). */
export function overlaps(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}

/**
 * Rejects buffers whose length can change under native code: resizable
 * ArrayBuffers and growable SharedArrayBuffers (a shrink during an async
 * call would leave the native side reading freed memory).
 */
export function assertFixedLength(view: ArrayBufferView, where: string, what: string): void {
  const buf = view.buffer as ArrayBufferLike & { resizable?: boolean; growable?: boolean; detached?: boolean };
  if (buf.resizable === true || buf.growable === true) {
    fail(where, 'ERR_VALUE', `${what} is backed by a resizable buffer; pass a fixed-length ArrayBuffer (slice() copies one)`);
  }
}

/**
 * A dense, row-major tensor: a dtype, a shape and a TypedArray view of its
 * elements. Creating one never copies: `data` is the caller's memory.
 */
export class Tensor<D extends DType = DType> {
  readonly dtype: D;
  readonly shape: readonly number[];
  readonly data: DTypeArrays[D];

  private constructor(data: DTypeArrays[D], shape: readonly number[], dtype: D) {
    this.data = data;
    this.shape = Object.freeze(shape.slice());
    this.dtype = dtype;
  }

  /**
   * Wraps a TypedArray (or any ArrayBufferView, reinterpreted as `dtype`)
   * without copying. A Uint16Array needs `dtype` 'f16' or 'bf16'; a
   * Uint8Array/Buffer with another dtype is reinterpreted in place, which
   * needs its byte offset aligned to the element size.
   */
  static from<D extends DType>(array: ArrayBufferView, shape: readonly number[], dtype?: D): Tensor<D> {
    const where = 'Tensor.from';
    if (!ArrayBuffer.isView(array) || array instanceof DataView) {
      fail(where, 'ERR_VALUE', 'array must be a TypedArray or Buffer');
    }
    assertFixedLength(array, where, 'array');
    const inferred = inferDType(array);
    let dt: DType;
    if (dtype === undefined) {
      if (inferred === undefined) {
        fail(where, 'ERR_DTYPE', `cannot infer the dtype of a ${array.constructor.name}; pass 'f16' or 'bf16' (or another dtype)`);
      }
      dt = inferred;
    } else {
      if (!isDType(dtype)) fail(where, 'ERR_DTYPE', `unknown dtype ${JSON.stringify(dtype)}; expected one of ${DTYPE_NAMES.join(', ')}`);
      dt = dtype;
    }
    const info = DTYPES[dt];
    const n = shapeSize(shape, where);
    let view: TensorData;
    if (array instanceof info.ctor && (inferred === dt || (dt === 'f16' || dt === 'bf16'))) {
      view = array as unknown as TensorData;
    } else {
      if (array.byteOffset % info.bytes !== 0 || array.byteLength % info.bytes !== 0) {
        fail(where, 'ERR_VALUE', `array (byteOffset ${array.byteOffset}, byteLength ${array.byteLength}) is not aligned to ${dt}'s ${info.bytes}-byte elements; copy it first (e.g. new Uint8Array(buf))`);
      }
      view = new info.ctor(array.buffer, array.byteOffset, array.byteLength / info.bytes);
    }
    if (view.length !== n) {
      fail(where, 'ERR_SHAPE', `shape [${shape.join(', ')}] needs ${n} elements of ${dt}, the array holds ${view.length}`);
    }
    return new Tensor(view as DTypeArrays[D], shape, dt as D);
  }

  /** A new zero-filled tensor. */
  static zeros<D extends DType>(shape: readonly number[], dtype: D): Tensor<D> {
    if (!isDType(dtype)) fail('Tensor.zeros', 'ERR_DTYPE', `unknown dtype ${JSON.stringify(dtype)}`);
    const n = shapeSize(shape, 'Tensor.zeros');
    const data = allocate('Tensor.zeros', n, DTYPES[dtype].bytes, () => new DTYPES[dtype].ctor(n));
    return new Tensor(data as DTypeArrays[D], shape, dtype);
  }

  /**
   * A new tensor whose contents are unspecified (internal: for outputs a
   * kernel overwrites completely). Skipping the zero-fill lets the
   * allocator hand back recycled memory instead of fresh pages, which the
   * OS must fault in and clear — for a memory-bound kernel that costs as
   * much as the kernel itself.
   */
  static uninitialized<D extends DType>(shape: readonly number[], dtype: D): Tensor<D> {
    const n = shapeSize(shape, 'Tensor.uninitialized');
    return new Tensor(uninitializedArray(DTYPES[dtype].ctor, n) as DTypeArrays[D], shape, dtype);
  }

  /** Number of elements. */
  get size(): number {
    return this.data.length;
  }

  /** Bytes of element data. */
  get byteLength(): number {
    return this.data.byteLength;
  }

  /** The same memory under another shape with the same element count. */
  reshape(shape: readonly number[]): Tensor<D> {
    const n = shapeSize(shape, 'Tensor.reshape');
    if (n !== this.size) fail('Tensor.reshape', 'ERR_SHAPE', `cannot view ${this.size} elements as [${shape.join(', ')}]`);
    return new Tensor(this.data, shape, this.dtype);
  }

  /** [rows, cols] with cols the last dimension (a scalar is [1, 1]). */
  matrixShape(): [number, number] {
    if (this.shape.length === 0) return [1, 1];
    const cols = this.shape[this.shape.length - 1] as number;
    return [cols === 0 ? 0 : this.size / cols, cols];
  }

  toString(): string {
    return `Tensor<${this.dtype}>[${this.shape.join(', ')}]`;
  }
}

/** A TypedArray of `length` elements whose contents are unspecified (see Tensor.uninitialized). */
export function uninitializedArray<A extends TensorData>(ctor: { new (buffer: ArrayBufferLike, byteOffset: number, length: number): A; readonly BYTES_PER_ELEMENT: number }, length: number): A {
  const bytes = allocate('Tensor.uninitialized', length, ctor.BYTES_PER_ELEMENT, () => Buffer.allocUnsafeSlow(length * ctor.BYTES_PER_ELEMENT));
  return new ctor(bytes.buffer, bytes.byteOffset, length);
}

/** Runs `make`, turning the RangeError of a too-large allocation into ERR_SHAPE (a shape can ask for more than a buffer holds). */
function allocate<T>(where: string, length: number, elementBytes: number, make: () => T): T {
  try {
    return make();
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    fail(where, 'ERR_SHAPE', `cannot allocate ${length} elements of ${elementBytes} bytes (${e.message})`);
  }
}

/** Checks that `t` is a Tensor usable as input and returns it. */
export function checkTensor(t: unknown, where: string, what: string, dtypes?: readonly DType[]): Tensor {
  if (!(t instanceof Tensor)) fail(where, 'ERR_VALUE', `${what} must be a Tensor (use Tensor.from(typedArray, shape, dtype))`);
  if (dtypes && !dtypes.includes(t.dtype)) {
    fail(where, 'ERR_DTYPE', `${what} has dtype ${t.dtype}; expected ${dtypes.join(', ')}`);
  }
  assertFixedLength(t.data, where, what);
  const expected = shapeSize(t.shape, where, `${what}.shape`);
  if (t.data.length !== expected) {
    fail(where, 'ERR_DETACHED', `${what} holds ${t.data.length} elements but its shape needs ${expected} (was its buffer detached?)`);
  }
  return t;
}

/** A call's buffers by the names its errors give them ('the input', 'x', 'options.out.mask', ...); null/undefined entries are skipped. */
export type NamedViews = Record<string, ArrayBufferView | null | undefined>;

/**
 * The overlap rules of every `out` option (output buffers the caller owns):
 * each part is fixed-length and shares no byte with an input (the kernel
 * would read what it already overwrote) nor with another part (two writers
 * of one byte). Parts and inputs are named as the errors name them.
 */
export function checkOutMemory(parts: NamedViews, inputs: NamedViews, where: string): void {
  const ps = Object.entries(parts).filter((e): e is [string, ArrayBufferView] => e[1] != null);
  ps.forEach(([name, p], i) => {
    assertFixedLength(p, where, name);
    for (const [input, v] of Object.entries(inputs)) {
      if (v != null && overlaps(p, v)) fail(where, 'ERR_VALUE', `${name} shares memory with ${input}`);
    }
    for (const [other, q] of ps.slice(i + 1)) {
      if (overlaps(p, q)) fail(where, 'ERR_VALUE', `${name} and ${other} share memory`);
    }
  });
}

/**
 * An output Tensor the caller passed (options.out, or a part of it): one
 * of `dtypes` and exactly `shape` (ERR_DTYPE, ERR_SHAPE). Returns it;
 * checkOutMemory then checks all the parts against the inputs.
 */
export function checkOutTensor<D extends DType>(out: unknown, where: string, what: string, dtypes: readonly D[], shape: readonly number[]): Tensor<D> {
  const t = checkTensor(out, where, what, dtypes) as Tensor<D>;
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    fail(where, 'ERR_SHAPE', `${what} is [${t.shape.join(', ')}]; this call writes [${shape.join(', ')}]`);
  }
  return t;
}

/**
 * An `out` given as an object of named parts ({ tensor, mask }, { left,
 * right }): an object holding each of `keys` (other properties are
 * ignored, so a previous call's result can be passed back).
 */
export function outParts<K extends string>(out: unknown, where: string, what: string, keys: readonly K[]): Record<K, unknown> {
  if (typeof out !== 'object' || out === null || ArrayBuffer.isView(out) || out instanceof Tensor) {
    fail(where, 'ERR_VALUE', `${what} must be an object { ${keys.join(', ')} }`);
  }
  for (const k of keys) {
    if ((out as Record<string, unknown>)[k] === undefined) fail(where, 'ERR_VALUE', `${what}.${k} is missing; ${what} holds ${keys.join(', ')}`);
  }
  return out as Record<K, unknown>;
}

/** The same bytes: one buffer, offset and length. */
export function sameView(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return a.buffer === b.buffer && a.byteOffset === b.byteOffset && a.byteLength === b.byteLength;
}
