// The two type tables of GGUF: metadata value types and ggml tensor types.
// Facts from ggml's docs/gguf.md and ggml-common.h (see
// shared/reference/FORMATS.md); ids not listed here are rejected on read.
import type { DType } from '../tensor';
import type { QuantFormat } from '../quantize';

/** Metadata value type ids (the u32 after each key). */
export const GGUF_VALUE_TYPES = {
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
} as const;
export type GGUFValueTypeName = keyof typeof GGUF_VALUE_TYPES;

const VALUE_TYPE_NAMES = new Map<number, GGUFValueTypeName>(
  (Object.entries(GGUF_VALUE_TYPES) as [GGUFValueTypeName, number][]).map(([name, id]) => [id, name]),
);

/** The name of a value type id, or undefined when the id is unknown. */
export function valueTypeName(id: number): GGUFValueTypeName | undefined {
  return VALUE_TYPE_NAMES.get(id);
}

/** Bytes of a fixed-size scalar value; strings and arrays are variable. */
export const SCALAR_BYTES: Readonly<Record<Exclude<GGUFValueTypeName, 'string' | 'array'>, number>> = {
  u8: 1,
  i8: 1,
  u16: 2,
  i16: 2,
  u32: 4,
  i32: 4,
  f32: 4,
  bool: 1,
  u64: 8,
  i64: 8,
  f64: 8,
};

/**
 * The fewest bytes one value of a type can occupy in a file: used to reject
 * a count before anything is allocated for it (a string is at least its
 * u64 length, an array at least its u32 type and u64 count).
 */
export function minValueBytes(type: GGUFValueTypeName): number {
  if (type === 'string') return 8;
  if (type === 'array') return 12;
  return SCALAR_BYTES[type];
}

/** ggml tensor type names, as llama.cpp prints them. */
export type GGMLTypeName =
  | 'F32'
  | 'F16'
  | 'Q4_0'
  | 'Q4_1'
  | 'Q5_0'
  | 'Q5_1'
  | 'Q8_0'
  | 'Q8_1'
  | 'Q2_K'
  | 'Q3_K'
  | 'Q4_K'
  | 'Q5_K'
  | 'Q6_K'
  | 'Q8_K'
  | 'BF16';

export interface GGMLTypeInfo {
  id: number;
  name: GGMLTypeName;
  /** Values per block (1 for plain floats). A row length must be a multiple of it. */
  blockSize: number;
  /** Bytes per block. */
  blockBytes: number;
  /** How readTensor returns it: a dense Tensor dtype, a QuantizedTensor format, or neither. */
  dtype?: DType;
  quant?: QuantFormat;
}

const GGML_TYPE_LIST: readonly GGMLTypeInfo[] = [
  { id: 0, name: 'F32', blockSize: 1, blockBytes: 4, dtype: 'f32' },
  { id: 1, name: 'F16', blockSize: 1, blockBytes: 2, dtype: 'f16' },
  { id: 2, name: 'Q4_0', blockSize: 32, blockBytes: 18, quant: 'q4_0' },
  { id: 3, name: 'Q4_1', blockSize: 32, blockBytes: 20, quant: 'q4_1' },
  // ids 4 and 5 (Q4_2, Q4_3) were removed from ggml long ago: unknown here too.
  { id: 6, name: 'Q5_0', blockSize: 32, blockBytes: 22, quant: 'q5_0' },
  { id: 7, name: 'Q5_1', blockSize: 32, blockBytes: 24, quant: 'q5_1' },
  { id: 8, name: 'Q8_0', blockSize: 32, blockBytes: 34, quant: 'q8_0' },
  { id: 9, name: 'Q8_1', blockSize: 32, blockBytes: 36 },
  { id: 10, name: 'Q2_K', blockSize: 256, blockBytes: 84, quant: 'q2_k' },
  { id: 11, name: 'Q3_K', blockSize: 256, blockBytes: 110, quant: 'q3_k' },
  { id: 12, name: 'Q4_K', blockSize: 256, blockBytes: 144, quant: 'q4_k' },
  { id: 13, name: 'Q5_K', blockSize: 256, blockBytes: 176, quant: 'q5_k' },
  { id: 14, name: 'Q6_K', blockSize: 256, blockBytes: 210, quant: 'q6_k' },
  { id: 15, name: 'Q8_K', blockSize: 256, blockBytes: 292 },
  { id: 30, name: 'BF16', blockSize: 1, blockBytes: 2, dtype: 'bf16' },
];

const GGML_BY_ID = new Map<number, GGMLTypeInfo>(GGML_TYPE_LIST.map((t) => [t.id, Object.freeze(t)]));
const GGML_BY_NAME = new Map<GGMLTypeName, GGMLTypeInfo>(GGML_TYPE_LIST.map((t) => [t.name, GGML_BY_ID.get(t.id) as GGMLTypeInfo]));

/** The ggml type with this id, or undefined when the id is unknown. */
export function ggmlType(id: number): GGMLTypeInfo | undefined {
  return GGML_BY_ID.get(id);
}

/** The ggml type with this name (e.g. 'Q8_0'). */
export function ggmlTypeByName(name: GGMLTypeName): GGMLTypeInfo {
  return GGML_BY_NAME.get(name) as GGMLTypeInfo;
}

/** Every ggml type this reader knows, by id. */
export const GGML_TYPES: readonly GGMLTypeInfo[] = [...GGML_BY_ID.values()];
