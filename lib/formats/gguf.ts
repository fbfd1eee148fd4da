// GGUF reader: parses the header from a bounded prefix of the file, then
// reads one tensor at a time at its offset, so memory stays bounded by the
// header and the largest tensor asked for, never by the model size.
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import { SlimTensorError } from '../errors';
import { QuantizedTensor } from '../quantize';
import { Tensor } from '../tensor';
import {
  NeedMoreBytes,
  parseGGUFHeader,
  quoteName,
  type GGUFHeader,
  type GGUFMetadataEntry,
  type GGUFTensorInfo,
  type GGUFValue,
} from './gguf-header';
import { ggmlType, type GGMLTypeInfo } from './gguf-types';
import { readExact, readSpan, type TensorByteRange } from './safetensors';

export { GGUF_LIMITS, nestedArrayItemType, type GGUFArrayValue, type GGUFMetadataEntry, type GGUFTensorInfo, type GGUFValue } from './gguf-header';
export { GGML_TYPES, type GGMLTypeInfo, type GGMLTypeName, type GGUFValueTypeName } from './gguf-types';

export interface GGUFOpenOptions {
  /**
   * Largest header (metadata + tensor infos) to read into memory, in bytes.
   * Default 256 MiB: big-vocabulary models carry headers of 10-20 MB.
   */
  maxHeaderBytes?: number;
}

export interface GGUFReadOptions {
  /**
   * Read into this buffer (its first byteLength bytes) instead of a fresh
   * allocation, e.g. to reuse memory across tensors; the result views it.
   * Its byteOffset must suit the tensor's element type.
   */
  into?: Uint8Array;
  /** Read only these bytes of the tensor (e.g. a band of rows): `length` bytes from `offset` (readTensorBytes). */
  range?: TensorByteRange;
}

const DEFAULT_MAX_HEADER = 256 * 1024 * 1024;
// Most headers fit in the first read; larger ones grow it as the parser asks.
const FIRST_READ = 256 * 1024;

/** Parses the header, growing the prefix read from disk until it fits or hits the cap. */
async function readHeader(fh: fsp.FileHandle, fileSize: number, file: string, cap: number): Promise<GGUFHeader> {
  let prefix = new Uint8Array(0);
  let want = Math.min(fileSize, cap, FIRST_READ);
  for (;;) {
    const grown = new Uint8Array(want);
    grown.set(prefix);
    await readExact(fh, grown, prefix.length, prefix.length, `GGUF ${file}`);
    prefix = grown;
    try {
      return parseGGUFHeader(prefix, fileSize, file);
    } catch (e) {
      if (!(e instanceof NeedMoreBytes)) throw e;
      // The parser only asks for bytes the file has, so `needed` <= fileSize.
      if (e.needed > cap) {
        throw new SlimTensorError(`GGUF ${file}: the header needs more than ${cap} bytes (maxHeaderBytes); raise the limit if the file is trusted`, 'ERR_FORMAT');
      }
      // Each retry re-parses from the start, so grow fast: the total work
      // stays within ~1.3x of one parse of the final prefix.
      want = Math.min(fileSize, cap, Math.max(e.needed, prefix.length * 4));
    }
  }
}

function checkHost(): void {
  // Tensors and metadata arrays are viewed in place as little-endian data.
  if (os.endianness() !== 'LE') throw new SlimTensorError('GGUFReader: this host is big-endian; the reader supports little-endian hosts only', 'ERR_UNSUPPORTED');
}

/**
 * An open GGUF file (versions 2 and 3, little-endian).
 *
 * ```ts
 * const gguf = await GGUFReader.open('model.gguf');
 * try {
 *   gguf.metadata.get('general.architecture'); // 'llama'
 *   for (const info of gguf.tensors) {
 *     const t = await gguf.readTensor(info); // Tensor (F32/F16/BF16) or QuantizedTensor (Q4_0 … Q8_0, Q2_K … Q6_K)
 *   }
 * } finally {
 *   await gguf.close();
 * }
 * ```
 *
 * Malformed files are rejected with SlimTensorError ERR_FORMAT naming the
 * file, the key or tensor, and the rule broken. I/O failures (a missing
 * file, permissions) are the usual Node errors with `code` ENOENT etc.
 */
export class GGUFReader {
  /** The path the file was opened with. */
  readonly path: string;
  readonly fileSize: number;
  readonly version: number;
  /** Metadata values by key. See GGUFValue for how u64/i64 and arrays are represented. */
  readonly metadata: ReadonlyMap<string, GGUFValue>;
  /** Metadata in file order, with declared types (what a writer needs to copy them). */
  readonly entries: readonly GGUFMetadataEntry[];
  /** Tensor infos in file order. */
  readonly tensors: readonly GGUFTensorInfo[];
  /** Alignment of tensor data: general.alignment, else 32. */
  readonly alignment: number;
  /** Absolute offset of the data section. */
  readonly dataOffset: number;

  private fh: fsp.FileHandle | undefined;
  private readonly byName: Map<string, GGUFTensorInfo>;

  private constructor(path: string, fh: fsp.FileHandle, fileSize: number, header: GGUFHeader) {
    this.path = path;
    this.fh = fh;
    this.fileSize = fileSize;
    this.version = header.version;
    this.metadata = header.metadata;
    this.entries = Object.freeze(header.entries.map((e) => Object.freeze(e)));
    this.tensors = Object.freeze(header.tensors.map((t) => Object.freeze(t)));
    this.alignment = header.alignment;
    this.dataOffset = header.dataOffset;
    this.byName = new Map(this.tensors.map((t) => [t.name, t]));
  }

  /** Opens `path` and parses its header. The file stays open until close(). */
  static async open(path: string, options: GGUFOpenOptions = {}): Promise<GGUFReader> {
    checkHost();
    const cap = options.maxHeaderBytes ?? DEFAULT_MAX_HEADER;
    if (!Number.isSafeInteger(cap) || cap < 24) {
      throw new SlimTensorError(`GGUFReader.open: maxHeaderBytes must be an integer >= 24, got ${String(cap)}`, 'ERR_VALUE');
    }
    const fh = await fsp.open(path, 'r');
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new SlimTensorError(`GGUF ${path}: not a regular file`, 'ERR_FORMAT');
      const header = await readHeader(fh, st.size, path, cap);
      return new GGUFReader(path, fh, st.size, header);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  /** general.architecture, when the file names one (llama.cpp requires it; this reader does not). */
  get architecture(): string | undefined {
    const a = this.metadata.get('general.architecture');
    return typeof a === 'string' ? a : undefined;
  }

  /** The info of the tensor called `name`, if there is one. */
  tensor(name: string): GGUFTensorInfo | undefined {
    return this.byName.get(name);
  }

  /** Whether readTensor can return this tensor (F32, F16, BF16, and the block formats slimtensor writes). */
  static canRead(info: Pick<GGUFTensorInfo, 'typeId'>): boolean {
    const t = ggmlType(info.typeId);
    return t !== undefined && (t.dtype !== undefined || t.quant !== undefined);
  }

  /**
   * The stored bytes of one tensor (without padding), whatever its type:
   * for copying tensors this library cannot interpret.
   */
  async readTensorBytes(tensor: string | GGUFTensorInfo, options: GGUFReadOptions = {}): Promise<Uint8Array> {
    const info = this.resolve(tensor, 'readTensorBytes');
    const fh = this.handle('readTensorBytes');
    // Without `into`, a fresh allocation per tensor: offset 0 of its own
    // ArrayBuffer, so any typed view over it is aligned.
    const into = options.into;
    const span = readSpan(options.range, info.byteLength, 'GGUFReader.readTensorBytes');
    if (into !== undefined && (!(into instanceof Uint8Array) || into.byteLength < span.length)) {
      throw new SlimTensorError(`GGUFReader.readTensorBytes: options.into must be a Uint8Array of at least ${span.length} bytes`, 'ERR_VALUE');
    }
    const bytes = into === undefined ? new Uint8Array(span.length) : into.subarray(0, span.length);
    await readExact(fh, bytes, 0, info.fileOffset + span.offset, `GGUF ${this.path}`);
    return bytes;
  }

  /**
   * Reads one tensor from disk. F32/F16/BF16 come back as a Tensor of dtype
   * f32/f16/bf16; Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K … Q6_K as a QuantizedTensor holding the stored
   * blocks (dequantize() it for floats). The shape is in PyTorch order (the
   * GGUF dims reversed). Other types throw ERR_UNSUPPORTED; readTensorBytes
   * returns their raw blocks.
   */
  async readTensor(tensor: string | GGUFTensorInfo, options: GGUFReadOptions = {}): Promise<Tensor | QuantizedTensor> {
    this.handle('readTensor');
    const info = this.resolve(tensor, 'readTensor');
    const type = ggmlType(info.typeId) as GGMLTypeInfo;
    if (type.dtype === undefined && type.quant === undefined) {
      throw new SlimTensorError(`GGUFReader.readTensor: tensor ${quoteName(info.name)} in ${this.path} has type ${type.name}, which slimtensor cannot represent; readTensorBytes() returns its raw blocks`, 'ERR_UNSUPPORTED');
    }
    if (options.range !== undefined) throw new SlimTensorError('GGUFReader.readTensor reads whole tensors; readTensorBytes takes options.range', 'ERR_VALUE');
    const bytes = await this.readTensorBytes(info, options);
    if (type.quant !== undefined) return new QuantizedTensor({ format: type.quant, shape: info.shape, data: bytes });
    return Tensor.from(bytes, info.shape, type.dtype);
  }

  /** Closes the file. Safe to call twice. */
  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    if (fh !== undefined) await fh.close();
  }

  private handle(where: string): fsp.FileHandle {
    if (this.fh === undefined) throw new SlimTensorError(`GGUFReader.${where}: ${this.path} is closed`, 'ERR_VALUE');
    return this.fh;
  }

  /** Looks a tensor up by name; an info object is only trusted for its name. */
  private resolve(tensor: string | GGUFTensorInfo, where: string): GGUFTensorInfo {
    const name = typeof tensor === 'string' ? tensor : (tensor as Partial<GGUFTensorInfo> | null)?.name;
    if (typeof name !== 'string') throw new SlimTensorError(`GGUFReader.${where}: expected a tensor name or an entry of reader.tensors`, 'ERR_VALUE');
    const info = this.byName.get(name);
    if (info === undefined) throw new SlimTensorError(`GGUFReader.${where}: ${this.path} has no tensor named ${quoteName(name)}`, 'ERR_VALUE');
    return info;
  }
}
