// Mutations of seed files. Binary files get bit flips, byte changes, chunk
// deletion/duplication, truncation and extension anywhere, and integer
// specials (0, 1, 2^31-1, 2^32-1, 2^63, 2^64-1, ...) at the integer fields of
// the header (found by walking the seed's structure: counts, lengths, types,
// dims, offsets, scalar values). JSON files (and the safetensors header) get
// edits of the parsed tree — dtypes, shapes, offsets, numbers at the edge of
// what JSON and doubles hold, path-like and duplicate names, deep nesting,
// deletions — and text-level damage (truncation, invalid UTF-8). Everything
// is drawn from the case's Rng, so a (seed, case) pair always gives the same
// bytes.
import type { Rng } from '../test/support/random';

export type FileKind = 'gguf' | 'safetensors' | 'json' | 'binary';

export function kindOf(file: string): FileKind {
  if (file.endsWith('.gguf')) return 'gguf';
  if (file.endsWith('.safetensors')) return 'safetensors';
  if (file.endsWith('.json')) return 'json';
  return 'binary';
}

/** An integer field of a binary header: where, how wide, and what it holds. */
export interface IntField {
  pos: number;
  width: 1 | 2 | 4 | 8;
  what: string;
}

const pick = <T>(rng: Rng, a: readonly T[]): T => a[rng.u32() % a.length] as T;
const below = (rng: Rng, n: number): number => (n <= 0 ? 0 : rng.u32() % n);

// ---- binary structure walkers (for valid seeds; they stop quietly at anything odd)

const GGUF_SCALAR_WIDTH: Record<number, 1 | 2 | 4 | 8> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
const GGUF_STRING = 8;
const GGUF_ARRAY = 9;

/** The integer fields of a GGUF header, and where the header ends (the data section's start, roughly). */
export function ggufFields(b: Uint8Array): { fields: IntField[]; headerEnd: number } {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const fields: IntField[] = [];
  let p = 0;
  const u32 = (what: string): number => {
    fields.push({ pos: p, width: 4, what });
    const v = dv.getUint32(p, true);
    p += 4;
    return v;
  };
  const u64 = (what: string): number => {
    fields.push({ pos: p, width: 8, what });
    const v = Number(dv.getBigUint64(p, true));
    p += 8;
    return v;
  };
  const str = (what: string): void => {
    const n = u64(`${what} length`);
    p += n;
  };
  const value = (type: number, what: string, depth: number): void => {
    if (type === GGUF_STRING) return str(what);
    if (type === GGUF_ARRAY) {
      if (depth > 3) throw new Error('deep');
      const item = u32(`${what} item type`);
      const n = u64(`${what} count`);
      if (item !== GGUF_STRING && item !== GGUF_ARRAY) {
        const w = GGUF_SCALAR_WIDTH[item];
        if (w === undefined) throw new Error('type');
        // A few elements of numeric arrays, not all of them.
        for (let i = 0; i < n; i++) {
          if (i < 4) fields.push({ pos: p, width: w, what: `${what}[${i}]` });
          p += w;
        }
        return;
      }
      for (let i = 0; i < n; i++) value(item, `${what}[${i}]`, depth + 1);
      return;
    }
    const w = GGUF_SCALAR_WIDTH[type];
    if (w === undefined) throw new Error('type');
    fields.push({ pos: p, width: w, what });
    p += w;
  };
  try {
    p = 4;
    u32('version');
    const nTensors = u64('tensor count');
    const nKv = u64('metadata count');
    for (let i = 0; i < nKv; i++) {
      str(`key ${i}`);
      value(u32(`value type ${i}`), `value ${i}`, 0);
    }
    for (let i = 0; i < nTensors; i++) {
      str(`tensor ${i} name`);
      const dims = u32(`tensor ${i} n_dims`);
      for (let d = 0; d < dims; d++) u64(`tensor ${i} dim ${d}`);
      u32(`tensor ${i} type`);
      u64(`tensor ${i} offset`);
    }
  } catch {
    // a seed the walker does not follow to the end: keep what it found
  }
  return { fields: fields.filter((f) => f.pos + f.width <= b.length), headerEnd: Math.min(p, b.length) };
}

/** The safetensors header: its length field and the JSON text's extent. */
export function safetensorsHeader(b: Uint8Array): { fields: IntField[]; headerEnd: number } {
  if (b.length < 8) return { fields: [], headerEnd: b.length };
  const n = Number(new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true));
  return { fields: [{ pos: 0, width: 8, what: 'header length' }], headerEnd: Math.min(8 + n, b.length) };
}

// ---- integer specials

const SPECIALS_64: readonly bigint[] = [0n, 1n, 2n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 1n];
const SPECIALS_32: readonly bigint[] = [0n, 1n, 2n, 2n ** 15n, 2n ** 16n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 32n - 1n];
const SPECIALS_16: readonly bigint[] = [0n, 1n, 2n ** 15n - 1n, 2n ** 15n, 2n ** 16n - 1n];
const SPECIALS_8: readonly bigint[] = [0n, 1n, 2n, 0x7fn, 0x80n, 0xffn];

function readUint(b: Uint8Array, pos: number, width: number): bigint {
  let v = 0n;
  for (let i = width - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[pos + i] as number);
  return v;
}

function writeUint(b: Uint8Array, pos: number, width: number, v: bigint): void {
  let x = BigInt.asUintN(width * 8, v);
  for (let i = 0; i < width; i++) {
    b[pos + i] = Number(x & 0xffn);
    x >>= 8n;
  }
}

/** Sets an integer field to a special value, or to its old value nudged (±1, ×2, a power of two). */
function integerSpecial(rng: Rng, b: Uint8Array, f: IntField): string {
  const old = readUint(b, f.pos, f.width);
  const specials = f.width === 8 ? SPECIALS_64 : f.width === 4 ? SPECIALS_32 : f.width === 2 ? SPECIALS_16 : SPECIALS_8;
  let v: bigint;
  const r = below(rng, 10);
  if (r < 7) v = pick(rng, specials);
  else if (r === 7) v = old + 1n;
  else if (r === 8) v = old - 1n;
  else v = old * 2n + BigInt(below(rng, 2));
  writeUint(b, f.pos, f.width, v);
  return `${f.what} @${f.pos}: ${old} -> ${BigInt.asUintN(f.width * 8, v)}`;
}

// ---- binary mutations

const INTERESTING_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x20, 0x22, 0x5c, 0x2f];

/** A position, biased towards the header (where the parser decides things). */
function position(rng: Rng, length: number, headerEnd: number): number {
  if (length === 0) return 0;
  return below(rng, 4) < 3 && headerEnd > 0 ? below(rng, Math.min(headerEnd, length)) : below(rng, length);
}

/** One or more binary mutations; returns the new bytes and what was done. */
export function mutateBinary(rng: Rng, seed: Uint8Array, structure: { fields: IntField[]; headerEnd: number }): { bytes: Uint8Array; ops: string[] } {
  let b: Uint8Array = Uint8Array.from(seed);
  const ops: string[] = [];
  const n = 1 + (below(rng, 3) === 0 ? below(rng, 4) : 0);
  for (let k = 0; k < n; k++) {
    const r = below(rng, 100);
    if (r < 30 && structure.fields.length > 0) {
      const f = pick(rng, structure.fields);
      if (f.pos + f.width <= b.length) ops.push(`int ${integerSpecial(rng, b, f)}`);
    } else if (r < 50) {
      const bits = 1 + below(rng, 4);
      for (let i = 0; i < bits && b.length > 0; i++) {
        const p = position(rng, b.length, structure.headerEnd);
        const bit = below(rng, 8);
        b[p] = (b[p] as number) ^ (1 << bit);
        ops.push(`flip @${p} bit ${bit}`);
      }
    } else if (r < 62) {
      if (b.length > 0) {
        const p = position(rng, b.length, structure.headerEnd);
        const v = below(rng, 2) === 0 ? pick(rng, INTERESTING_BYTES) : below(rng, 256);
        b[p] = v;
        ops.push(`byte @${p} = ${v}`);
      }
    } else if (r < 74) {
      // truncation: anywhere, or a few bytes short of the end
      const p = below(rng, 2) === 0 ? position(rng, b.length, structure.headerEnd) : Math.max(0, b.length - 1 - below(rng, 64));
      b = b.slice(0, p);
      ops.push(`truncate to ${p}`);
    } else if (r < 82) {
      const p = position(rng, b.length, structure.headerEnd);
      const len = 1 + below(rng, 16);
      b = Uint8Array.from([...b.subarray(0, p), ...b.subarray(Math.min(b.length, p + len))]);
      ops.push(`delete ${len} @${p}`);
    } else if (r < 90) {
      const p = position(rng, b.length, structure.headerEnd);
      const len = 1 + below(rng, 32);
      const chunk = b.slice(p, p + len);
      const at = position(rng, b.length, structure.headerEnd);
      b = Uint8Array.from([...b.subarray(0, at), ...chunk, ...b.subarray(at)]);
      ops.push(`insert ${chunk.length} bytes from @${p} at @${at}`);
    } else {
      const len = 1 + below(rng, 256);
      const fill = below(rng, 2) === 0 ? 0 : below(rng, 256);
      const tail = new Uint8Array(len).fill(fill);
      const out = new Uint8Array(b.length + len);
      out.set(b);
      out.set(tail, b.length);
      b = out;
      ops.push(`append ${len} x ${fill}`);
    }
  }
  return { bytes: b, ops };
}

// ---- JSON mutations

type J = unknown;
type Path = (string | number)[];

const HUGE_TEXT = ['1e400', '-1e400', '18446744073709551616', '18446744073709551615', '9223372036854775808', '9007199254740993', '-0', '1e-400', '4294967295', '2147483648'];
const PATH_NAMES = ['../x', '../../etc/passwd', '/etc/passwd', 'a/../../b', '..', '.', '', 'a\\..\\b', 'nul\u0000byte', '__proto__', 'constructor', '__metadata__'];
const ST_DTYPES = ['F32', 'F16', 'BF16', 'F64', 'I8', 'U8', 'I16', 'I32', 'I64', 'BOOL', 'F8_E4M3', 'F8_E5M2', 'U64', 'Q4_0', 'f16', '', 'F16 '];

/** Every path into the tree (objects and arrays), with a cap so huge trees stay cheap. */
function paths(root: J): Path[] {
  const out: Path[] = [];
  const stack: [J, Path][] = [[root, []]];
  while (stack.length > 0 && out.length < 200000) {
    const [v, p] = stack.pop() as [J, Path];
    out.push(p);
    if (Array.isArray(v)) v.forEach((x, i) => stack.push([x, [...p, i]]));
    else if (v !== null && typeof v === 'object') for (const [k, x] of Object.entries(v)) stack.push([x, [...p, k]]);
  }
  return out;
}

function getAt(root: J, p: Path): J {
  let v = root;
  for (const k of p) v = (v as Record<string | number, J>)[k];
  return v;
}

function setAt(root: J, p: Path, value: J): J {
  if (p.length === 0) return value;
  const parent = getAt(root, p.slice(0, -1)) as Record<string | number, J>;
  parent[p[p.length - 1] as string | number] = value;
  return root;
}

/** Placeholders replaced after JSON.stringify: raw number text and duplicate keys. */
class Raw {
  private n = 0;
  readonly subs = new Map<string, string>();
  token(raw: string): string {
    const t = `@@RAW${this.n++}@@`;
    this.subs.set(JSON.stringify(t), raw);
    return t;
  }
  render(v: J): string {
    let s = JSON.stringify(v) ?? 'null';
    for (const [t, raw] of this.subs) s = s.split(t).join(raw);
    return s;
  }
}

/** Arrays nested `depth` deep, as raw text (JSON.stringify would recurse that deep). */
function deep(raw: Raw, depth: number): J {
  return raw.token(`${'['.repeat(depth)}0${']'.repeat(depth)}`);
}

/** A value to put somewhere: edge numbers, wrong types, path-like strings, big or deep structures. */
function edgeValue(rng: Rng, raw: Raw, old: J): J {
  const r = below(rng, 16);
  if (typeof old === 'number' && r < 6) {
    const nums = [0, -1, 1, 2, old + 1, old - 1, old * 2, -old, old + 0.5, 2 ** 31 - 1, 2 ** 32 - 1, 2 ** 32, 2 ** 53, 2 ** 63, 2 ** 64, Number.MAX_VALUE, 1e-300, Number.MIN_SAFE_INTEGER];
    return below(rng, 4) === 0 ? raw.token(pick(rng, HUGE_TEXT)) : pick(rng, nums);
  }
  if (typeof old === 'string' && r < 6) {
    const strs = [...PATH_NAMES, old + old, old.slice(0, -1), old.toUpperCase(), 'x'.repeat(1 + below(rng, 100000)), '\ud800', '\uffff'];
    return pick(rng, strs);
  }
  switch (r % 10) {
    case 0:
      return raw.token(pick(rng, HUGE_TEXT));
    case 1:
      return null;
    case 2:
      return below(rng, 2) === 0;
    case 3:
      return [];
    case 4:
      return {};
    case 5:
      return pick(rng, PATH_NAMES);
    case 6:
      return deep(raw, 1 + below(rng, 200000));
    case 7:
      return Array.from({ length: 1 + below(rng, 20) }, () => below(rng, 3) - 1);
    case 8:
      return -1;
    default:
      return pick(rng, [0, 1, 2 ** 53, -(2 ** 31), 1.5]);
  }
}

/** The safetensors-specific edits of a header object: dtype, shape, data_offsets. */
function safetensorsEdit(rng: Rng, raw: Raw, h: Record<string, J>): string | undefined {
  const names = Object.keys(h).filter((k) => k !== '__metadata__');
  if (names.length === 0) return undefined;
  const name = pick(rng, names);
  const t = h[name] as Record<string, J> | null;
  if (t === null || typeof t !== 'object') return undefined;
  const r = below(rng, 6);
  if (r === 0) {
    t.dtype = pick(rng, ST_DTYPES);
    return `${name}.dtype = ${JSON.stringify(t.dtype)}`;
  }
  if (r === 1 && Array.isArray(t.shape)) {
    const s = t.shape as J[];
    const k = below(rng, 5);
    if (k === 0) s.push(pick(rng, [1, 2, 0]));
    else if (k === 1) s.pop();
    else if (s.length > 0) s[below(rng, s.length)] = pick(rng, [0, -1, 1, 2 ** 32, 2 ** 53, 2 ** 62, 1.5, raw.token('1e400'), '8']);
    return `${name}.shape = ${raw.render(s)}`;
  }
  if (r <= 3 && Array.isArray(t.data_offsets)) {
    const o = t.data_offsets as J[];
    const others = names.filter((n) => n !== name).map((n) => (h[n] as { data_offsets?: J[] } | null)?.data_offsets).filter((x) => Array.isArray(x)) as J[][];
    const k = below(rng, 6);
    const i = below(rng, 2);
    if (k === 0 && others.length > 0) o[i] = (pick(rng, others)[i] as number) ?? 0;
    else if (k === 1) o.reverse();
    else if (k === 2) o[i] = (o[i] as number) + pick(rng, [1, -1, 2, 4096, -4096]);
    else if (k === 3) o[i] = pick(rng, [0, -1, 2 ** 32, 2 ** 53, 2 ** 64, 1.5]);
    else if (k === 4) o.push(0);
    else t.data_offsets = pick(rng, [[], null, '0,4', [0]]);
    return `${name}.data_offsets = ${raw.render(t.data_offsets)}`;
  }
  // rename: path-like, duplicate of another tensor (duplicate key in the text), or __metadata__
  const to = below(rng, 2) === 0 && names.length > 1 ? pick(rng, names.filter((n) => n !== name)) : pick(rng, PATH_NAMES);
  delete h[name];
  const key = raw.token(JSON.stringify(to));
  h[key] = t;
  return `rename ${name} -> ${JSON.stringify(to)}`;
}

/** Mutates a JSON document's text; `safetensors` adds the header-specific edits. */
export function mutateJsonText(rng: Rng, text: string, safetensors: boolean): { text: string; ops: string[] } {
  let root: J;
  try {
    root = JSON.parse(text) as J;
  } catch {
    return { text: text.slice(0, below(rng, text.length + 1)), ops: ['truncate (unparsable seed)'] };
  }
  const ops: string[] = [];
  const raw = new Raw();
  const r0 = below(rng, 100);
  if (r0 < 8) {
    const p = below(rng, text.length);
    return { text: text.slice(0, p), ops: [`truncate text to ${p}`] };
  }
  if (r0 < 12) {
    const p = below(rng, text.length);
    const junk = pick(rng, ['\uFEFF', '\u0000', ',', '}', ']', '"', '\\', ' '.repeat(1000)]);
    return { text: text.slice(0, p) + junk + text.slice(p), ops: [`insert ${JSON.stringify(junk.slice(0, 4))} @${p}`] };
  }
  const n = 1 + (below(rng, 3) === 0 ? below(rng, 3) : 0);
  for (let k = 0; k < n; k++) {
    const r = below(rng, 100);
    if (safetensors && r < 50 && root !== null && typeof root === 'object' && !Array.isArray(root)) {
      const op = safetensorsEdit(rng, raw, root as Record<string, J>);
      if (op !== undefined) {
        ops.push(op);
        continue;
      }
    }
    const all = paths(root);
    const p = pick(rng, all);
    const parent = p.length > 0 ? getAt(root, p.slice(0, -1)) : undefined;
    const v = getAt(root, p);
    if (r < 75 || p.length === 0) {
      root = setAt(root, p, edgeValue(rng, raw, v));
      ops.push(`set ${p.join('.')}`);
    } else if (r < 85 && parent !== undefined) {
      if (Array.isArray(parent)) parent.splice(p[p.length - 1] as number, 1);
      else delete (parent as Record<string, J>)[p[p.length - 1] as string];
      ops.push(`delete ${p.join('.')}`);
    } else if (r < 95 && parent !== undefined && !Array.isArray(parent)) {
      // a duplicate key: the same name again with another value (JSON.parse keeps the last)
      const obj = parent as Record<string, J>;
      const name = p[p.length - 1] as string;
      obj[raw.token(JSON.stringify(name))] = edgeValue(rng, raw, v);
      ops.push(`duplicate key ${p.join('.')}`);
    } else if (Array.isArray(parent)) {
      const i = p[p.length - 1] as number;
      parent.splice(i, 0, structuredClone(v));
      ops.push(`duplicate item ${p.join('.')}`);
    } else {
      root = setAt(root, p, edgeValue(rng, raw, v));
      ops.push(`set ${p.join('.')}`);
    }
  }
  return { text: raw.render(root), ops };
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A JSON file: mostly tree edits, sometimes binary damage (invalid UTF-8 etc.). */
export function mutateJsonFile(rng: Rng, seed: Uint8Array): { bytes: Uint8Array; ops: string[] } {
  if (below(rng, 8) === 0) return mutateBinary(rng, seed, { fields: [], headerEnd: seed.length });
  const { text, ops } = mutateJsonText(rng, dec.decode(seed), false);
  return { bytes: enc.encode(text), ops };
}

/** A safetensors file: binary mutations, or an edited header re-serialised (its length field fixed, padded to 8, or left stale). */
export function mutateSafetensors(rng: Rng, seed: Uint8Array): { bytes: Uint8Array; ops: string[] } {
  const h = safetensorsHeader(seed);
  if (below(rng, 5) < 2 || seed.length < 8) return mutateBinary(rng, seed, h);
  const n = h.headerEnd - 8;
  const { text, ops } = mutateJsonText(rng, dec.decode(seed.subarray(8, 8 + n)), true);
  let header = enc.encode(text);
  const fix = below(rng, 8);
  if (fix < 6) {
    const padded = new Uint8Array(Math.ceil(header.length / 8) * 8).fill(0x20);
    padded.set(header);
    header = padded;
  }
  const out = new Uint8Array(8 + header.length + (seed.length - 8 - n));
  const len = fix < 7 ? BigInt(header.length) : BigInt(n);
  new DataView(out.buffer).setBigUint64(0, len, true);
  out.set(header, 8);
  out.set(seed.subarray(8 + n), 8 + header.length);
  return { bytes: out, ops: [...ops, fix < 7 ? 'header length fixed' : 'header length stale'] };
}

/** Mutates one file's bytes according to its kind. */
export function mutateFile(rng: Rng, file: string, seed: Uint8Array): { bytes: Uint8Array; ops: string[] } {
  const kind = kindOf(file);
  if (kind === 'gguf') return mutateBinary(rng, seed, ggufFields(seed));
  if (kind === 'safetensors') return mutateSafetensors(rng, seed);
  if (kind === 'json') return mutateJsonFile(rng, seed);
  return mutateBinary(rng, seed, { fields: [], headerEnd: Math.min(seed.length, 4096) });
}
