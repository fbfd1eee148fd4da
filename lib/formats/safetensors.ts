// safetensors: a reader for one file or a Hugging Face folder (a single
// model.safetensors, or shards listed by model.safetensors.index.json) that
// reads one tensor at a time, and streaming writers (one file, or shards of
// a chosen size with an index) that write the header from the planned
// shapes and then the data tensor by tensor.
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SlimTensorError } from '../errors';
import { Tensor, type DType } from '../tensor';
import { quoteName } from './gguf-header';
import { setOwn } from './json';
import { OutputFile } from './output-file';
import {
  buildSafetensorsHeader,
  headerLength,
  parseSafetensorsHeader,
  SAFETENSORS_DTYPES,
  type PlannedTensor,
  type SafetensorsTensorInfo,
} from './safetensors-header';

export {
  SAFETENSORS_DTYPES,
  SAFETENSORS_LIMITS,
  DTYPE_TO_SAFETENSORS,
  type SafetensorsDType,
  type SafetensorsTensorInfo,
  type PlannedTensor,
} from './safetensors-header';

/** The index file of a sharded Hugging Face checkpoint. */
export const SAFETENSORS_INDEX = 'model.safetensors.index.json';
/** Largest index file read (real ones are well under 1 MB). */
const MAX_INDEX_BYTES = 64 * 1024 * 1024;

/**
 * Reads of at least this many bytes run as two halves on two libuv threads:
 * a copy out of the page cache runs at one core's memory bandwidth, and a
 * model's tensors are tens of megabytes.
 */
const SPLIT_READ = 8 * 1024 * 1024;

/** Reads `into.length - start` bytes at `position` (`what` names the file in errors); a short read means the file shrank. */
export async function readExact(fh: fsp.FileHandle, into: Uint8Array, start: number, position: number, what: string): Promise<void> {
  const n = into.length - start;
  if (n >= SPLIT_READ) {
    const mid = start + Math.ceil(n / 2 / 4096) * 4096;
    await Promise.all([readRun(fh, into.subarray(0, mid), start, position, what), readRun(fh, into, mid, position + (mid - start), what)]);
    return;
  }
  await readRun(fh, into, start, position, what);
}

async function readRun(fh: fsp.FileHandle, into: Uint8Array, start: number, position: number, what: string): Promise<void> {
  let done = start;
  while (done < into.length) {
    const { bytesRead } = await fh.read(into, done, into.length - done, position + (done - start));
    if (bytesRead === 0) {
      throw new SlimTensorError(`${what}: the file ended at ${position + (done - start)} while reading ${into.length - start} bytes at ${position} (was it truncated after opening?)`, 'ERR_FORMAT');
    }
    done += bytesRead;
  }
}

/** The bytes an ArrayBufferView covers, as a Uint8Array view (no copy). */
export function viewBytes(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function checkHost(where: string): void {
  if (os.endianness() !== 'LE') throw new SlimTensorError(`${where}: this host is big-endian; safetensors data is little-endian`, 'ERR_UNSUPPORTED');
}

/** A buffer to read into: `into` when given (must be large enough), else a fresh one. */
function target(into: Uint8Array | undefined, n: number, where: string): Uint8Array {
  if (into === undefined) return new Uint8Array(n);
  if (!(into instanceof Uint8Array) || into.byteLength < n) throw new SlimTensorError(`${where}: options.into must be a Uint8Array of at least ${n} bytes`, 'ERR_VALUE');
  return into.subarray(0, n);
}

export interface ReadTensorOptions {
  /**
   * Read into this buffer (its first byteLength bytes) instead of a fresh
   * allocation; the result views it. Its byteOffset must suit the dtype.
   */
  into?: Uint8Array;
  /** Read only these bytes of the tensor (e.g. a band of rows): `length` bytes from `offset`. */
  range?: TensorByteRange;
}

export interface TensorByteRange {
  offset: number;
  length: number;
}

/** The [offset, length] a read covers: the whole tensor, or `range` checked against its byteLength. */
export function readSpan(range: TensorByteRange | undefined, byteLength: number, where: string): { offset: number; length: number } {
  if (range === undefined) return { offset: 0, length: byteLength };
  const { offset, length } = (range ?? {}) as Partial<TensorByteRange>;
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || (offset as number) < 0 || (length as number) < 0 || (offset as number) + (length as number) > byteLength) {
    throw new SlimTensorError(`${where}: options.range must be whole bytes inside the tensor's ${byteLength} (got offset ${String(offset)}, length ${String(length)})`, 'ERR_VALUE');
  }
  return { offset: offset as number, length: length as number };
}

/** One open safetensors file. */
export class SafetensorsFile {
  readonly path: string;
  readonly fileSize: number;
  /** Tensors in data order. */
  readonly tensors: readonly SafetensorsTensorInfo[];
  readonly metadata: Readonly<Record<string, string>>;
  readonly dataOffset: number;
  private fh: fsp.FileHandle | undefined;
  private readonly byName: Map<string, SafetensorsTensorInfo>;

  private constructor(file: string, fh: fsp.FileHandle, fileSize: number, tensors: SafetensorsTensorInfo[], metadata: Record<string, string>, dataOffset: number) {
    this.path = file;
    this.fh = fh;
    this.fileSize = fileSize;
    this.tensors = Object.freeze(tensors.map((t) => Object.freeze(t)));
    this.metadata = Object.freeze(metadata);
    this.dataOffset = dataOffset;
    this.byName = new Map(this.tensors.map((t) => [t.name, t]));
  }

  /** Opens `file` and validates its header. The file stays open until close(). */
  static async open(file: string): Promise<SafetensorsFile> {
    checkHost('SafetensorsFile.open');
    const fh = await fsp.open(file, 'r');
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new SlimTensorError(`safetensors ${file}: not a regular file`, 'ERR_FORMAT');
      const first8 = new Uint8Array(8);
      if (st.size >= 8) await readExact(fh, first8, 0, 0, `safetensors ${file}`);
      const n = headerLength(first8, st.size, file);
      // n + 8 <= file size was checked: the allocation is bounded by the file.
      const json = new Uint8Array(n);
      await readExact(fh, json, 0, 8, `safetensors ${file}`);
      const header = parseSafetensorsHeader(json, st.size, file);
      return new SafetensorsFile(file, fh, st.size, header.tensors, header.metadata, header.dataOffset);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  tensor(name: string): SafetensorsTensorInfo | undefined {
    return this.byName.get(name);
  }

  /** The stored bytes of one tensor. */
  async readTensorBytes(tensor: string | SafetensorsTensorInfo, options: ReadTensorOptions = {}): Promise<Uint8Array> {
    const info = this.resolve(tensor, 'readTensorBytes');
    const fh = this.handle('readTensorBytes');
    const span = readSpan(options.range, info.byteLength, 'SafetensorsFile.readTensorBytes');
    const bytes = target(options.into, span.length, 'SafetensorsFile.readTensorBytes');
    await readExact(fh, bytes, 0, info.fileOffset + span.offset, `safetensors ${this.path}`);
    return bytes;
  }

  /**
   * One tensor as a Tensor (F32, F16, BF16, I8, U8, I32, I64). Other dtypes
   * throw ERR_UNSUPPORTED; readTensorBytes returns their bytes.
   */
  async readTensor(tensor: string | SafetensorsTensorInfo, options: ReadTensorOptions = {}): Promise<Tensor> {
    const info = this.resolve(tensor, 'readTensor');
    const dtype = SAFETENSORS_DTYPES[info.dtype].dtype as DType | undefined;
    if (dtype === undefined) {
      throw new SlimTensorError(`SafetensorsFile.readTensor: tensor ${quoteName(info.name)} in ${this.path} has dtype ${info.dtype}, which slimtensor cannot represent; readTensorBytes() returns its bytes`, 'ERR_UNSUPPORTED');
    }
    if (options.range !== undefined) throw new SlimTensorError('SafetensorsFile.readTensor reads whole tensors; readTensorBytes takes options.range', 'ERR_VALUE');
    const bytes = await this.readTensorBytes(info, options);
    return Tensor.from(bytes, info.shape, dtype);
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    if (fh !== undefined) await fh.close();
  }

  private handle(where: string): fsp.FileHandle {
    if (this.fh === undefined) throw new SlimTensorError(`SafetensorsFile.${where}: ${this.path} is closed`, 'ERR_VALUE');
    return this.fh;
  }

  private resolve(tensor: string | SafetensorsTensorInfo, where: string): SafetensorsTensorInfo {
    const name = typeof tensor === 'string' ? tensor : (tensor as Partial<SafetensorsTensorInfo> | null)?.name;
    if (typeof name !== 'string') throw new SlimTensorError(`SafetensorsFile.${where}: expected a tensor name or an entry of .tensors`, 'ERR_VALUE');
    const info = this.byName.get(name);
    if (info === undefined) throw new SlimTensorError(`SafetensorsFile.${where}: ${this.path} has no tensor named ${quoteName(name)}`, 'ERR_VALUE');
    return info;
  }
}

/** A tensor of a (possibly sharded) model, and the shard holding it. */
export interface SafetensorsModelTensor extends SafetensorsTensorInfo {
  /** The shard's file name inside the folder (or the file's own path for a single file). */
  file: string;
}

/**
 * A safetensors model: one file, or a Hugging Face folder with one
 * model.safetensors or shards listed in model.safetensors.index.json.
 * Tensors come in shard order, then data order, so reading them in turn
 * reads each file front to back.
 */
export class SafetensorsModel {
  /** The path opened (file or folder). */
  readonly path: string;
  /** The folder holding the shards (the file's folder for a single file). */
  readonly folder: string;
  readonly isFolder: boolean;
  /** Shard file names (relative to folder), in order. */
  readonly shards: readonly string[];
  readonly tensors: readonly SafetensorsModelTensor[];
  /** __metadata__ of the first shard. */
  readonly metadata: Readonly<Record<string, string>>;
  /** The index's metadata (e.g. total_size), when sharded. */
  readonly indexMetadata: Readonly<Record<string, unknown>> | undefined;
  private readonly files: Map<string, SafetensorsFile>;
  private readonly byName: Map<string, SafetensorsModelTensor>;

  private constructor(p: string, folder: string, isFolder: boolean, files: Map<string, SafetensorsFile>, indexMetadata: Record<string, unknown> | undefined) {
    this.path = p;
    this.folder = folder;
    this.isFolder = isFolder;
    this.files = files;
    this.shards = Object.freeze([...files.keys()]);
    const tensors: SafetensorsModelTensor[] = [];
    for (const [file, f] of files) for (const t of f.tensors) tensors.push(Object.freeze({ ...t, file }));
    this.tensors = Object.freeze(tensors);
    this.byName = new Map(tensors.map((t) => [t.name, t]));
    this.metadata = files.values().next().value?.metadata ?? {};
    this.indexMetadata = indexMetadata;
  }

  /** Opens a .safetensors file or a Hugging Face folder. */
  static async open(p: string): Promise<SafetensorsModel> {
    const st = await fsp.stat(p);
    if (!st.isDirectory()) {
      const f = await SafetensorsFile.open(p);
      return new SafetensorsModel(p, path.dirname(p), false, new Map([[path.basename(p), f]]), undefined);
    }
    const indexPath = path.join(p, SAFETENSORS_INDEX);
    const hasIndex = await fsp.stat(indexPath).then(
      (s) => s.isFile(),
      () => false,
    );
    const files = new Map<string, SafetensorsFile>();
    const closeAll = async (): Promise<void> => {
      for (const f of files.values()) await f.close();
    };
    try {
      if (!hasIndex) {
        const names = (await fsp.readdir(p)).filter((n) => n.endsWith('.safetensors')).sort();
        if (names.length === 0) throw new SlimTensorError(`safetensors ${p}: the folder holds no .safetensors file`, 'ERR_FORMAT');
        if (names.length > 1) throw new SlimTensorError(`safetensors ${p}: the folder holds ${names.length} .safetensors files but no ${SAFETENSORS_INDEX} saying how they form one model`, 'ERR_FORMAT');
        const name = names[0] as string;
        files.set(name, await SafetensorsFile.open(path.join(p, name)));
        return new SafetensorsModel(p, p, true, files, undefined);
      }
      const index = await readIndex(indexPath);
      for (const shard of index.shards) {
        // A shard the index names but the folder lacks is a broken model (a download cut short), not an I/O failure.
        const file = path.join(p, shard);
        if (!(await fsp.stat(file).then((st) => st.isFile(), () => false))) {
          const names = [...index.weightMap].filter(([, s]) => s === shard).map(([n]) => n);
          throw new SlimTensorError(
            `safetensors ${indexPath}: weight_map names the shard ${quoteName(shard)}, which is not in the folder; it maps ${names.length} tensor${names.length === 1 ? '' : 's'} there (${names.slice(0, 2).map(quoteName).join(', ')}${names.length > 2 ? ', …' : ''})`,
            'ERR_FORMAT',
          );
        }
        files.set(shard, await SafetensorsFile.open(file));
      }
      // Every indexed tensor is in its shard, and every shard tensor is indexed there.
      for (const [name, shard] of index.weightMap) {
        if ((files.get(shard) as SafetensorsFile).tensor(name) === undefined) {
          throw new SlimTensorError(`safetensors ${indexPath}: tensor ${quoteName(name)} is mapped to ${shard}, which does not hold it`, 'ERR_FORMAT');
        }
      }
      for (const [shard, f] of files) {
        for (const t of f.tensors) {
          const mapped = index.weightMap.get(t.name);
          if (mapped !== shard) {
            throw new SlimTensorError(`safetensors ${path.join(p, shard)}: tensor ${quoteName(t.name)} is ${mapped === undefined ? `not listed in ${SAFETENSORS_INDEX}` : `also in ${mapped} (the index maps it there): a duplicate name`}`, 'ERR_FORMAT');
          }
        }
      }
      return new SafetensorsModel(p, p, true, files, index.metadata);
    } catch (e) {
      await closeAll();
      throw e;
    }
  }

  tensor(name: string): SafetensorsModelTensor | undefined {
    return this.byName.get(name);
  }

  /** The open file of a shard. */
  file(shard: string): SafetensorsFile {
    const f = this.files.get(shard);
    if (f === undefined) throw new SlimTensorError(`SafetensorsModel: ${this.path} has no shard ${quoteName(shard)}`, 'ERR_VALUE');
    return f;
  }

  async readTensorBytes(name: string, options: ReadTensorOptions = {}): Promise<Uint8Array> {
    const t = this.lookup(name, 'readTensorBytes');
    return this.file(t.file).readTensorBytes(name, options);
  }

  async readTensor(name: string, options: ReadTensorOptions = {}): Promise<Tensor> {
    const t = this.lookup(name, 'readTensor');
    return this.file(t.file).readTensor(name, options);
  }

  async close(): Promise<void> {
    for (const f of this.files.values()) await f.close();
  }

  private lookup(name: string, where: string): SafetensorsModelTensor {
    const t = this.byName.get(name);
    if (t === undefined) throw new SlimTensorError(`SafetensorsModel.${where}: ${this.path} has no tensor named ${quoteName(String(name))}`, 'ERR_VALUE');
    return t;
  }
}

/** A shard name from an index must name a file inside the folder: no paths. */
function checkShardName(name: string, indexPath: string): void {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\\') || name.includes('\0') || path.isAbsolute(name)) {
    throw new SlimTensorError(`safetensors ${indexPath}: shard ${quoteName(name)} is not a plain file name in the folder`, 'ERR_FORMAT');
  }
}

async function readIndex(indexPath: string): Promise<{ weightMap: Map<string, string>; shards: string[]; metadata: Record<string, unknown> | undefined }> {
  const fail: (m: string) => never = (m) => {
    throw new SlimTensorError(`safetensors ${indexPath}: ${m}`, 'ERR_FORMAT');
  };
  const st = await fsp.stat(indexPath);
  if (st.size > MAX_INDEX_BYTES) fail(`the index is ${st.size} bytes; the limit is ${MAX_INDEX_BYTES}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(await fsp.readFile(indexPath)));
  } catch (e) {
    return fail(`not valid UTF-8 JSON (${(e as Error).message})`);
  }
  const wm = (parsed as { weight_map?: unknown } | null)?.weight_map;
  if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) return fail('weight_map must be an object of tensor name -> shard file');
  const weightMap = new Map<string, string>();
  const shards: string[] = [];
  for (const [name, shard] of Object.entries(wm as Record<string, unknown>)) {
    if (typeof shard !== 'string') fail(`weight_map ${quoteName(name)} must be a file name`);
    checkShardName(shard as string, indexPath);
    weightMap.set(name, shard as string);
    if (!shards.includes(shard as string)) shards.push(shard as string);
  }
  shards.sort();
  const md = (parsed as { metadata?: unknown }).metadata;
  return { weightMap, shards, metadata: typeof md === 'object' && md !== null && !Array.isArray(md) ? (md as Record<string, unknown>) : undefined };
}

/** Writes one safetensors file: the header from the plan, then each tensor's bytes in plan order. */
export class SafetensorsWriter {
  readonly path: string;
  private out: OutputFile | undefined;
  private readonly planned: readonly PlannedTensor[];
  private readonly offsets: [number, number][];
  private readonly dataStart: number;
  private next = 0;
  private written = 0;
  /** Bytes of the tensor `next` appended so far. */
  private filled = 0;

  private constructor(p: string, out: OutputFile, planned: readonly PlannedTensor[], offsets: [number, number][], dataStart: number) {
    this.path = p;
    this.out = out;
    this.planned = planned;
    this.offsets = offsets;
    this.dataStart = dataStart;
  }

  /** Creates (or truncates) `file` and writes the header for `tensors`. */
  static async create(file: string, tensors: readonly PlannedTensor[], metadata?: Readonly<Record<string, string>>): Promise<SafetensorsWriter> {
    checkHost('SafetensorsWriter.create');
    const header = buildSafetensorsHeader(tensors, metadata);
    const dataBytes = header.offsets.reduce((m, [, end]) => Math.max(m, end), 0);
    const out = await OutputFile.create(file, { plannedBytes: header.bytes.length + dataBytes });
    try {
      await out.write(header.bytes, 0);
    } catch (e) {
      await out.abort();
      throw e;
    }
    return new SafetensorsWriter(file, out, tensors.slice(), header.offsets, header.bytes.length);
  }

  /** The name of the tensor write() expects next, or undefined when all are written. */
  get expected(): string | undefined {
    return this.planned[this.next]?.name;
  }

  /** Bytes of header and data written so far. */
  get bytesWritten(): number {
    return this.dataStart + this.written;
  }

  /** Writes the next planned tensor; `parts` are concatenated and must add up to its planned size. */
  async write(name: string, ...parts: ArrayBufferView[]): Promise<void> {
    this.expect(name);
    const [begin, end] = this.offsets[this.next] as [number, number];
    const total = parts.reduce((s, p) => s + p.byteLength, 0);
    if (total !== end - begin || this.filled > 0) throw new SlimTensorError(`SafetensorsWriter ${this.path}: tensor ${quoteName(name)} is planned as ${end - begin} bytes, got ${total}${this.filled > 0 ? ` after ${this.filled} appended` : ''}`, 'ERR_SHAPE');
    if (total === 0) {
      this.next++;
      return;
    }
    for (const p of parts) if (p.byteLength > 0) await this.append(name, p);
  }

  /**
   * Writes the next bytes of the planned tensor `name` (the one expected):
   * a tensor written in pieces, e.g. bands of rows. When its planned size
   * is reached the next tensor is expected.
   */
  async append(name: string, bytes: ArrayBufferView): Promise<void> {
    const out = this.handle();
    this.expect(name);
    const [begin, end] = this.offsets[this.next] as [number, number];
    if (this.filled + bytes.byteLength > end - begin) throw new SlimTensorError(`SafetensorsWriter ${this.path}: tensor ${quoteName(name)} is planned as ${end - begin} bytes; ${this.filled} written and ${bytes.byteLength} more given`, 'ERR_SHAPE');
    await out.write(viewBytes(bytes), this.dataStart + begin + this.filled);
    this.filled += bytes.byteLength;
    this.written += bytes.byteLength;
    if (this.filled === end - begin) {
      this.next++;
      this.filled = 0;
    }
  }

  private expect(name: string): void {
    this.handle();
    const t = this.planned[this.next];
    if (t === undefined || t.name !== name) {
      throw new SlimTensorError(`SafetensorsWriter ${this.path}: got tensor ${quoteName(name)}, expected ${t === undefined ? 'no more tensors' : quoteName(t.name)}`, 'ERR_VALUE');
    }
  }

  /** Closes the file after checking every planned tensor was written. */
  async close(): Promise<void> {
    const out = this.handle();
    if (this.next !== this.planned.length) {
      throw new SlimTensorError(`SafetensorsWriter ${this.path}: closed after ${this.next} of ${this.planned.length} tensors (next: ${quoteName(this.planned[this.next]?.name ?? '')})`, 'ERR_VALUE');
    }
    this.out = undefined;
    await out.close();
  }

  /** Closes without checks (the caller removes the file). */
  async abort(): Promise<void> {
    const out = this.out;
    this.out = undefined;
    await out?.abort();
  }

  private handle(): OutputFile {
    if (this.out === undefined) throw new SlimTensorError(`SafetensorsWriter ${this.path}: already closed`, 'ERR_VALUE');
    return this.out;
  }
}

/** Bytes a planned tensor takes. */
export function plannedBytes(t: PlannedTensor): number {
  return t.shape.reduce((n, d) => n * d, SAFETENSORS_DTYPES[t.dtype].bytes);
}

export interface ShardOptions {
  /** Largest shard in bytes of tensor data (a single larger tensor gets a shard of its own). Default: no sharding. */
  maxShardBytes?: number;
  /** File name stem: `<stem>.safetensors` or `<stem>-00001-of-00003.safetensors`. Default 'model'. */
  stem?: string;
  /** __metadata__ of every shard. */
  metadata?: Readonly<Record<string, string>>;
}

/**
 * Groups planned tensors into shards in order: a shard closes when the next
 * tensor would take it past maxShardBytes.
 */
export function planShards(tensors: readonly PlannedTensor[], maxShardBytes: number = Infinity): PlannedTensor[][] {
  if (!(maxShardBytes > 0)) throw new SlimTensorError(`planShards: maxShardBytes must be > 0, got ${maxShardBytes}`, 'ERR_VALUE');
  const shards: PlannedTensor[][] = [];
  let cur: PlannedTensor[] = [];
  let bytes = 0;
  for (const t of tensors) {
    const n = plannedBytes(t);
    if (cur.length > 0 && bytes + n > maxShardBytes) {
      shards.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(t);
    bytes += n;
  }
  if (cur.length > 0 || shards.length === 0) shards.push(cur);
  return shards;
}

/**
 * Writes a model into a folder as Hugging Face does: one `<stem>.safetensors`,
 * or shards `<stem>-0000i-of-0000n.safetensors` and `<stem>.safetensors.index.json`
 * (weight_map and metadata.total_size). Tensors are written in plan order.
 */
export class ShardedSafetensorsWriter {
  readonly folder: string;
  /** Files created, relative to folder. */
  readonly files: readonly string[];
  private readonly plan: PlannedTensor[][];
  private readonly stem: string;
  private readonly metadata: Readonly<Record<string, string>> | undefined;
  private shard = -1;
  private current: SafetensorsWriter | undefined;

  private constructor(folder: string, plan: PlannedTensor[][], files: string[], stem: string, metadata: Readonly<Record<string, string>> | undefined) {
    this.folder = folder;
    this.plan = plan;
    this.files = Object.freeze(files);
    this.stem = stem;
    this.metadata = metadata;
  }

  static async create(folder: string, tensors: readonly PlannedTensor[], options: ShardOptions = {}): Promise<ShardedSafetensorsWriter> {
    const stem = options.stem ?? 'model';
    const plan = planShards(tensors, options.maxShardBytes ?? Infinity);
    const n = plan.length;
    const pad = (i: number): string => String(i).padStart(5, '0');
    const files = n === 1 ? [`${stem}.safetensors`] : plan.map((_, i) => `${stem}-${pad(i + 1)}-of-${pad(n)}.safetensors`);
    const w = new ShardedSafetensorsWriter(folder, plan, files, stem, options.metadata);
    if (n > 1) {
      const weightMap: Record<string, string> = {};
      let total = 0;
      plan.forEach((shard, i) => {
        for (const t of shard) {
          setOwn(weightMap, t.name, files[i] as string);
          total += plannedBytes(t);
        }
      });
      const index = { metadata: { total_size: total }, weight_map: weightMap };
      await fsp.writeFile(path.join(folder, `${stem}.safetensors.index.json`), `${JSON.stringify(index, null, 2)}\n`);
    }
    return w;
  }

  /** Writes the next planned tensor (opening the next shard when the current one is full). */
  async write(name: string, ...parts: ArrayBufferView[]): Promise<void> {
    await (await this.shardFor(name)).write(name, ...parts);
  }

  /** Writes the next bytes of the planned tensor `name` (SafetensorsWriter.append). */
  async append(name: string, bytes: ArrayBufferView): Promise<void> {
    await (await this.shardFor(name)).append(name, bytes);
  }

  /** The shard writer expecting a tensor, the next shard opened when the current one is full. */
  private async shardFor(name: string): Promise<SafetensorsWriter> {
    while (this.current === undefined || this.current.expected === undefined) {
      if (this.current !== undefined) await this.current.close();
      this.current = undefined;
      this.shard++;
      const shard = this.plan[this.shard];
      if (shard === undefined) throw new SlimTensorError(`ShardedSafetensorsWriter ${this.folder}: got tensor ${quoteName(name)} after every planned tensor`, 'ERR_VALUE');
      this.current = await SafetensorsWriter.create(path.join(this.folder, this.files[this.shard] as string), shard, this.metadata);
    }
    return this.current;
  }

  /** Finishes the last shard (and creates shards with no tensors left, e.g. an empty model). */
  async close(): Promise<void> {
    for (;;) {
      if (this.current !== undefined) await this.current.close();
      this.current = undefined;
      if (this.shard + 1 >= this.plan.length) return;
      this.shard++;
      const shard = this.plan[this.shard] as PlannedTensor[];
      this.current = await SafetensorsWriter.create(path.join(this.folder, this.files[this.shard] as string), shard, this.metadata);
    }
  }

  async abort(): Promise<void> {
    await this.current?.abort();
    this.current = undefined;
  }

  /** Index file name, when sharded. */
  get indexFile(): string | undefined {
    return this.plan.length > 1 ? `${this.stem}.safetensors.index.json` : undefined;
  }
}
