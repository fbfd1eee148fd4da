// llama.cpp's importance-matrix files, read into one in-memory form.
//
// - GGUF (llama.cpp since mid-2025): general.type = "imatrix"; per weight
//   tensor `<name>.in_sum2` (F32, dims [ne0, n_mat]: Σx² of each input
//   column over the calibration tokens, per expert matrix) and
//   `<name>.counts` (F32, dims [1, n_mat]: tokens seen per matrix);
//   metadata imatrix.datasets (strings), imatrix.chunk_count,
//   imatrix.chunk_size. Other tensors (e.g. `<name>.in_sum`) are ignored.
// - Legacy .dat (what llama-imatrix wrote before, and c392e50 still
//   writes): i32 n_entries, then per entry i32 name length, the name, i32
//   ncall, i32 nval, nval f32 values (mean x² per column × ncall); then
//   optionally i32 chunk count, i32 length and the dataset's file name.
//
// Both become an ImportanceMatrix: per tensor the sums and the counts per
// matrix, the weights being sums / counts (llama-quantize's rule). A legacy
// entry is one matrix of nval columns whose count is its ncall (1 when ncall
// is 0, which llama-quantize leaves undivided), so the weights are the
// values llama-quantize derives from either form. The same form is what an
// imatrix writer starts from.
//
// Writers (writeImatrix) take the same form back to either file:
// - GGUF as llama.cpp's llama-imatrix writes it since mid-2025: the keys
//   above, then per entry (in name order) `<name>.in_sum2` F32 [cols,
//   matrices] and `<name>.counts` F32 [1, matrices], both 2-D.
// - legacy .dat: per entry ncall = the chunk count (c392e50 counts one call
//   per chunk of up to 512 tokens; 1 when the chunk count is unknown) and
//   values = (sums / count) × ncall, so llama-quantize's value / ncall is
//   the weight; a mixture-of-experts entry becomes one run of cols ×
//   matrices values (the legacy form has one count per entry); the trailer
//   holds the chunk count and the first dataset name.
//
// Files are hostile input, as for the model readers: a size cap, every
// count and length checked against the bytes that remain before anything
// is allocated, values finite and >= 0, duplicate names refused; every
// failure is ERR_FORMAT naming the file and the entry.
import { promises as fsp } from 'node:fs';
import { SlimTensorError } from '../errors';
import { stageOutput } from '../pipeline/output';
import { GGUFReader } from './gguf';
import { GGUF_LIMITS, quoteName, type GGUFMetadataEntry, type GGUFValue } from './gguf-header';
import { GGUFWriter, type GGUFPlannedTensor } from './gguf-writer';
import { writeAll } from './output-file';

/** One tensor's statistics. */
export interface ImatrixEntry {
  /** Columns of the weight (its input width, ne0). */
  cols: number;
  /** Matrices: 1, or the experts of a 3-D mixture-of-experts weight. */
  matrices: number;
  /** Σx² per column, `matrices` runs of `cols` values. */
  sums: Float32Array;
  /** Activations counted per matrix. */
  counts: Float32Array;
}

export interface ImportanceMatrix {
  /** Entries by llama.cpp tensor name (`blk.0.attn_q.weight`). */
  entries: ReadonlyMap<string, ImatrixEntry>;
  /** Calibration text files it was computed on (legacy files hold at most one). */
  datasets: readonly string[];
  /** Chunks of calibration text processed (0: unknown). */
  chunkCount: number;
  /** Tokens per chunk (undefined: unknown; legacy files do not say). */
  chunkSize: number | undefined;
  /** The file it was read from, as given, and its form. */
  source: { path: string; format: 'gguf' | 'dat' } | undefined;
}

export interface ImatrixReadOptions {
  /** Largest file accepted, in bytes. Default 2 GiB (a 256-expert MoE imatrix is about 1.3 GB). */
  maxBytes?: number;
}

const DEFAULT_MAX_BYTES = 2 * 1024 ** 3;
/** Longest tensor name in a legacy file (GGUF's own limit is 64 bytes; llama-imatrix names are tens). */
const MAX_DAT_NAME_BYTES = 4096;

function bad(file: string, message: string): SlimTensorError {
  return new SlimTensorError(`imatrix ${file}: ${message}`, 'ERR_FORMAT');
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function checkValues(file: string, name: string, what: string, v: Float32Array): void {
  for (let i = 0; i < v.length; i++) {
    const x = v[i] as number;
    if (!(x >= 0 && x !== Infinity)) throw bad(file, `${quoteName(name)}: ${what}[${i}] is ${x}; importance statistics must be finite and >= 0`);
  }
}

/**
 * The importance weights of one entry, `matrices` runs of `cols`: sums /
 * count per matrix, 1 for a matrix that saw no activations (as
 * llama-quantize derives them).
 */
export function imatrixWeights(e: ImatrixEntry): Float32Array {
  const out = new Float32Array(e.sums.length);
  for (let j = 0; j < e.matrices; j++) {
    const c = e.counts[j] as number;
    for (let i = j * e.cols; i < (j + 1) * e.cols; i++) out[i] = c > 0 ? (e.sums[i] as number) / c : 1;
  }
  return out;
}

/** Parses a legacy .dat imatrix held in `bytes` (`file` names it in errors). */
export function parseImatrixDat(bytes: Uint8Array, file: string): ImportanceMatrix {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  const i32 = (what: string): number => {
    if (bytes.length - pos < 4) throw bad(file, `the file ends at byte ${bytes.length} while reading ${what} at ${pos}`);
    const v = dv.getInt32(pos, true);
    pos += 4;
    return v;
  };
  const text = (n: number, what: string): string => {
    const b = bytes.subarray(pos, pos + n);
    pos += n;
    try {
      return utf8.decode(b);
    } catch {
      throw bad(file, `${what} is not valid UTF-8`);
    }
  };
  const n = i32('the entry count');
  // The smallest entry: name length, a 1-byte name, ncall, nval, one value.
  if (n < 1 || n > (bytes.length - 4) / 17) throw bad(file, `entry count ${n} is impossible for a file of ${bytes.length} bytes (need 1 and at most one per 17 bytes)`);
  const entries = new Map<string, ImatrixEntry>();
  for (let k = 0; k < n; k++) {
    const len = i32(`the name length of entry ${k}`);
    if (len < 1 || len > MAX_DAT_NAME_BYTES || len > bytes.length - pos) throw bad(file, `entry ${k}: name length ${len} is out of range (1..${Math.min(MAX_DAT_NAME_BYTES, bytes.length - pos)})`);
    const name = text(len, `the name of entry ${k}`);
    const ncall = i32(`ncall of ${quoteName(name)}`);
    const nval = i32(`nval of ${quoteName(name)}`);
    if (ncall < 0) throw bad(file, `${quoteName(name)}: ncall ${ncall} is negative`);
    if (nval < 1 || nval > (bytes.length - pos) / 4) throw bad(file, `${quoteName(name)}: ${nval} values do not fit the ${bytes.length - pos} bytes left`);
    if (entries.has(name)) throw bad(file, `${quoteName(name)} appears twice`);
    const sums = new Float32Array(nval);
    new Uint8Array(sums.buffer).set(bytes.subarray(pos, pos + nval * 4));
    pos += nval * 4;
    checkValues(file, name, 'value', sums);
    entries.set(name, { cols: nval, matrices: 1, sums, counts: Float32Array.of(ncall > 0 ? ncall : 1) });
  }
  let chunkCount = 0;
  const datasets: string[] = [];
  if (pos < bytes.length) {
    chunkCount = i32('the chunk count');
    if (chunkCount < 0) throw bad(file, `chunk count ${chunkCount} is negative`);
    const len = i32('the dataset name length');
    if (len < 0 || len > bytes.length - pos) throw bad(file, `dataset name length ${len} does not fit the ${bytes.length - pos} bytes left`);
    const dataset = text(len, 'the dataset name');
    if (dataset !== '') datasets.push(dataset);
    if (pos !== bytes.length) throw bad(file, `${bytes.length - pos} bytes follow the dataset name`);
  }
  return { entries, datasets, chunkCount, chunkSize: undefined, source: { path: file, format: 'dat' } };
}

function intValue(v: GGUFValue | undefined): number | undefined {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return v;
  if (typeof v === 'bigint' && v >= 0n && v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
  return undefined;
}

async function readGgufImatrix(g: GGUFReader, file: string): Promise<ImportanceMatrix> {
  const type = g.metadata.get('general.type');
  if (type !== 'imatrix') throw bad(file, `a GGUF file whose general.type is ${type === undefined ? 'missing' : JSON.stringify(type)}, not "imatrix" (a model, not an importance matrix?)`);
  const meta = (key: string, ok: (v: GGUFValue) => boolean, expected: string): GGUFValue | undefined => {
    const v = g.metadata.get(key);
    if (v !== undefined && !ok(v)) throw bad(file, `${key} must be ${expected}`);
    return v;
  };
  const ds = meta('imatrix.datasets', (v) => Array.isArray(v) && v.every((x) => typeof x === 'string'), 'an array of strings') as string[] | undefined;
  const chunkCount = intValue(meta('imatrix.chunk_count', (v) => intValue(v) !== undefined, 'a non-negative integer'));
  const chunkSize = intValue(meta('imatrix.chunk_size', (v) => intValue(v) !== undefined, 'a non-negative integer'));
  const sums = new Map<string, (typeof g.tensors)[number]>();
  const counts = new Map<string, (typeof g.tensors)[number]>();
  for (const t of g.tensors) {
    if (t.name.endsWith('.in_sum2')) sums.set(t.name.slice(0, -'.in_sum2'.length), t);
    else if (t.name.endsWith('.counts')) counts.set(t.name.slice(0, -'.counts'.length), t);
  }
  const entries = new Map<string, ImatrixEntry>();
  for (const [name, s] of sums) {
    const c = counts.get(name);
    if (c === undefined) throw bad(file, `${quoteName(`${name}.in_sum2`)} has no ${quoteName(`${name}.counts`)}`);
    if (s.type !== 'F32' || c.type !== 'F32') throw bad(file, `${quoteName(name)}: in_sum2 and counts must be F32, got ${s.type} and ${c.type}`);
    // dims are GGUF order: in_sum2 [ne0, n_mat], counts [1, n_mat]
    const [cols = 0, matrices = 1, ...rest] = s.dims;
    const [one = 0, cm = 1, ...crest] = c.dims;
    if (s.dims.length > 2 || rest.length > 0 || cols < 1 || matrices < 1) throw bad(file, `${quoteName(`${name}.in_sum2`)} has dims [${s.dims.join(', ')}]; expected [columns, matrices]`);
    if (c.dims.length > 2 || crest.length > 0 || one !== 1 || cm !== matrices) throw bad(file, `${quoteName(`${name}.counts`)} has dims [${c.dims.join(', ')}]; expected [1, ${matrices}] to match its in_sum2`);
    const sb = await g.readTensorBytes(s);
    const cb = await g.readTensorBytes(c);
    const e: ImatrixEntry = { cols, matrices, sums: new Float32Array(sb.buffer, sb.byteOffset, cols * matrices), counts: new Float32Array(cb.buffer, cb.byteOffset, matrices) };
    checkValues(file, name, 'in_sum2', e.sums);
    checkValues(file, name, 'counts', e.counts);
    entries.set(name, e);
  }
  for (const name of counts.keys()) if (!sums.has(name)) throw bad(file, `${quoteName(`${name}.counts`)} has no ${quoteName(`${name}.in_sum2`)}`);
  if (entries.size === 0) throw bad(file, 'no <tensor>.in_sum2 / <tensor>.counts pairs: nothing to weigh');
  return { entries, datasets: ds ?? [], chunkCount: chunkCount ?? 0, chunkSize, source: { path: file, format: 'gguf' } };
}

/**
 * Reads an importance matrix made by llama.cpp's llama-imatrix, in either
 * form (told apart by the GGUF magic). Malformed files → ERR_FORMAT naming
 * the file; I/O failures are the usual Node errors.
 */
export async function readImatrix(file: string, options: ImatrixReadOptions = {}): Promise<ImportanceMatrix> {
  const cap = options.maxBytes ?? DEFAULT_MAX_BYTES;
  if (!Number.isSafeInteger(cap) || cap < 1) throw new SlimTensorError(`readImatrix: maxBytes must be a positive integer, got ${String(cap)}`, 'ERR_VALUE');
  const st = await fsp.stat(file);
  if (!st.isFile()) throw bad(file, 'not a regular file');
  if (st.size > cap) throw bad(file, `${st.size} bytes, more than the ${cap} accepted (maxBytes)`);
  const fh = await fsp.open(file, 'r');
  let magic: Uint8Array;
  try {
    magic = new Uint8Array(4);
    await fh.read(magic, 0, 4, 0);
  } finally {
    await fh.close();
  }
  if (st.size >= 4 && magic[0] === 0x47 && magic[1] === 0x47 && magic[2] === 0x55 && magic[3] === 0x46) {
    const g = await GGUFReader.open(file).catch((e: unknown) => {
      throw e instanceof SlimTensorError && e.code === 'ERR_FORMAT' ? bad(file, e.message) : e;
    });
    try {
      return await readGgufImatrix(g, file);
    } finally {
      await g.close();
    }
  }
  const bytes = await fsp.readFile(file);
  if (bytes.length !== st.size) throw bad(file, `the file changed size while being read (${st.size} then ${bytes.length} bytes)`);
  return parseImatrixDat(bytes, file);
}

// ---- writing ---------------------------------------------------------------------

/** What a writer needs: an ImportanceMatrix without its source. */
export type ImatrixData = Pick<ImportanceMatrix, 'entries' | 'datasets' | 'chunkCount' | 'chunkSize'>;

export interface ImatrixWriteOptions {
  /** 'gguf' (llama.cpp since mid-2025) or 'dat' (legacy). Default: 'dat' for a name ending in .dat, else 'gguf'. */
  format?: 'gguf' | 'dat';
  /** Replace an existing file. Default false (ERR_VALUE). */
  overwrite?: boolean;
}

function badWrite(message: string): SlimTensorError {
  return new SlimTensorError(`writeImatrix: ${message}`, 'ERR_VALUE');
}

const I32_MAX = 2 ** 31 - 1;

/** Checks what a writer is given (shapes, counts, finite values, names); returns the entries in name order. */
function checkData(m: ImatrixData, format: 'gguf' | 'dat'): [string, ImatrixEntry][] {
  if (m === null || typeof m !== 'object' || !(m.entries instanceof Map)) throw badWrite('the importance matrix must have an entries Map');
  if (m.entries.size === 0) throw badWrite('no entries: nothing to write');
  if (!Number.isSafeInteger(m.chunkCount) || m.chunkCount < 0 || m.chunkCount > I32_MAX) throw badWrite(`chunkCount must be an integer in 0..${I32_MAX}, got ${String(m.chunkCount)}`);
  if (m.chunkSize !== undefined && (!Number.isSafeInteger(m.chunkSize) || m.chunkSize < 0 || m.chunkSize > 2 ** 32 - 1)) throw badWrite(`chunkSize must be an integer in 0..4294967295, got ${String(m.chunkSize)}`);
  if (!Array.isArray(m.datasets) || !m.datasets.every((d) => typeof d === 'string')) throw badWrite('datasets must be an array of strings');
  for (const [name, e] of m.entries) {
    if (typeof name !== 'string' || name === '') throw badWrite('an entry has an empty name');
    const bytes = Buffer.byteLength(name, 'utf8');
    // ggml keeps names in 64 bytes with the terminating zero
    if (format === 'gguf' && bytes + '.in_sum2'.length >= GGUF_LIMITS.maxTensorNameBytes) {
      throw badWrite(`${quoteName(name)}: with .in_sum2 the name has ${bytes + 8} bytes; ggml takes at most ${GGUF_LIMITS.maxTensorNameBytes - 1}`);
    }
    if (format === 'dat' && bytes > MAX_DAT_NAME_BYTES) throw badWrite(`${quoteName(name)}: longer than ${MAX_DAT_NAME_BYTES} bytes`);
    if (e === null || typeof e !== 'object') throw badWrite(`${quoteName(name)}: not an entry`);
    if (!Number.isSafeInteger(e.cols) || !Number.isSafeInteger(e.matrices) || e.cols < 1 || e.matrices < 1 || e.cols * e.matrices > I32_MAX) {
      throw badWrite(`${quoteName(name)}: cols ${String(e.cols)} × matrices ${String(e.matrices)} is not a positive size`);
    }
    if (!(e.sums instanceof Float32Array) || e.sums.length !== e.cols * e.matrices) throw badWrite(`${quoteName(name)}: sums must be a Float32Array of cols × matrices = ${e.cols * e.matrices} values`);
    if (!(e.counts instanceof Float32Array) || e.counts.length !== e.matrices) throw badWrite(`${quoteName(name)}: counts must be a Float32Array of ${e.matrices} values`);
    for (const [what, v] of [['sums', e.sums], ['counts', e.counts]] as const) {
      for (let i = 0; i < v.length; i++) {
        const x = v[i] as number;
        if (!(x >= 0 && x !== Infinity)) throw badWrite(`${quoteName(name)}: ${what}[${i}] is ${x}; importance statistics must be finite and >= 0`);
      }
    }
  }
  return [...m.entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** The legacy .dat bytes of `m` (see the file's head for the layout and the rule for ncall). */
export function imatrixDatBytes(m: ImatrixData): Uint8Array {
  const entries = checkData(m, 'dat');
  const ncall = m.chunkCount > 0 ? m.chunkCount : 1;
  const names = entries.map(([name]) => Buffer.from(name, 'utf8'));
  const dataset = Buffer.from(m.datasets[0] ?? '', 'utf8');
  let size = 4 + 8 + dataset.length;
  entries.forEach(([, e], k) => (size += 12 + (names[k] as Buffer).length + 4 * e.sums.length));
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  let pos = 0;
  const i32 = (v: number): void => {
    dv.setInt32(pos, v, true);
    pos += 4;
  };
  i32(entries.length);
  entries.forEach(([, e], k) => {
    const nb = names[k] as Buffer;
    i32(nb.length);
    out.set(nb, pos);
    pos += nb.length;
    i32(ncall);
    i32(e.sums.length);
    for (let j = 0; j < e.matrices; j++) {
      const c = e.counts[j] as number;
      for (let i = j * e.cols; i < (j + 1) * e.cols; i++) {
        // value / ncall is the weight llama-quantize takes: sums / count (1 for an unseen matrix)
        dv.setFloat32(pos, (c > 0 ? (e.sums[i] as number) / c : 1) * ncall, true);
        pos += 4;
      }
    }
  });
  i32(m.chunkCount);
  i32(dataset.length);
  out.set(dataset, pos);
  return out;
}

/** The GGUF plan (metadata, tensors in name order) of `m`. */
function ggufPlan(m: ImatrixData): { entries: GGUFMetadataEntry[]; tensors: GGUFPlannedTensor[]; data: Float32Array[] } {
  const sorted = checkData(m, 'gguf');
  const entries: GGUFMetadataEntry[] = [
    { key: 'general.type', type: 'string', value: 'imatrix' },
    { key: 'imatrix.datasets', type: 'array', itemType: 'string', value: [...m.datasets] },
    { key: 'imatrix.chunk_count', type: 'u32', value: m.chunkCount },
    { key: 'imatrix.chunk_size', type: 'u32', value: m.chunkSize ?? 0 },
  ];
  const tensors: GGUFPlannedTensor[] = [];
  const data: Float32Array[] = [];
  for (const [name, e] of sorted) {
    // PyTorch order (outermost first): in_sum2 [matrices, cols], counts [matrices, 1]
    tensors.push({ name: `${name}.in_sum2`, shape: [e.matrices, e.cols], type: 'F32' }, { name: `${name}.counts`, shape: [e.matrices, 1], type: 'F32' });
    data.push(e.sums, e.counts);
  }
  return { entries, tensors, data };
}

/**
 * Writes an importance matrix as llama.cpp reads it (GGUF or legacy .dat,
 * see the file's head), through a temporary name renamed into place: on
 * any failure nothing is left behind. Bad statistics → ERR_VALUE naming the
 * entry; an existing file without `overwrite` → ERR_VALUE.
 */
export async function writeImatrix(file: string, m: ImatrixData, options: ImatrixWriteOptions = {}): Promise<void> {
  if (typeof file !== 'string' || file === '') throw badWrite('file must be a non-empty string');
  const format = options.format ?? (file.toLowerCase().endsWith('.dat') ? 'dat' : 'gguf');
  if (format !== 'gguf' && format !== 'dat') throw badWrite(`options.format must be 'gguf' or 'dat', got ${JSON.stringify(format)}`);
  // Checked (and serialised, for .dat) before anything touches the disk.
  const dat = format === 'dat' ? imatrixDatBytes(m) : undefined;
  const plan = format === 'gguf' ? ggufPlan(m) : undefined;
  const staged = await stageOutput(file, 'file', undefined, options.overwrite === true);
  try {
    if (dat !== undefined) {
      const fh = await fsp.open(staged.tmp, 'w');
      try {
        await writeAll(fh, dat, 0);
      } finally {
        await fh.close();
      }
    } else if (plan !== undefined) {
      const w = await GGUFWriter.create(staged.tmp, plan);
      try {
        for (let i = 0; i < plan.tensors.length; i++) await w.write((plan.tensors[i] as GGUFPlannedTensor).name, plan.data[i] as Float32Array);
        await w.close();
      } catch (e) {
        await w.abort();
        throw e;
      }
    }
    await staged.commit();
  } catch (e) {
    await staged.discard();
    throw e;
  }
}
