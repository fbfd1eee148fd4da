// llama-imatrix's legacy .dat layout parsed on its own, independently of
// lib/formats/imatrix.ts, for the tests of its reader and its writer:
// int32 count, then per entry int32 name length, name, int32 ncall, int32
// value count, f32 values; then int32 chunk count, int32 length, dataset.

export interface DatEntryByHand {
  name: string;
  ncall: number;
  /** The entry's f32 values as stored (little-endian bytes). */
  bytes: Buffer;
}

export function parseDatByHand(b: Buffer): { entries: DatEntryByHand[]; chunks: number; dataset: string; end: number } {
  let p = 0;
  const n = b.readInt32LE(p);
  p += 4;
  const entries: DatEntryByHand[] = [];
  for (let i = 0; i < n; i++) {
    const len = b.readInt32LE(p);
    const name = b.toString('utf8', p + 4, p + 4 + len);
    p += 4 + len;
    const ncall = b.readInt32LE(p);
    const nval = b.readInt32LE(p + 4);
    p += 8;
    entries.push({ name, ncall, bytes: b.subarray(p, p + 4 * nval) });
    p += 4 * nval;
  }
  const chunks = b.readInt32LE(p);
  const dlen = b.readInt32LE(p + 4);
  return { entries, chunks, dataset: b.toString('utf8', p + 8, p + 8 + dlen), end: p + 8 + dlen };
}

/** An entry's values as numbers. */
export function datValues(e: DatEntryByHand): Float32Array {
  const v = new Float32Array(e.bytes.length / 4);
  for (let j = 0; j < v.length; j++) v[j] = e.bytes.readFloatLE(4 * j);
  return v;
}
