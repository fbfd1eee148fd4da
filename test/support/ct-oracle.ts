// An independent JS model of the compressed-tensors INT4/INT8 layout, used
// as an oracle: codes from the published formulas (computed in f32 with
// Math.fround), and a decoder of the packed int32 words.
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../lib/half';

const fr = Math.fround;
const EPS = fr(1.1920929e-7);

export type ScaleDType = 'f16' | 'bf16' | 'f32';

export function storeScale(s: number, dt: ScaleDType): number {
  if (dt === 'f16') return f16ToF32(f32ToF16(s));
  if (dt === 'bf16') return bf16ToF32(f32ToBf16(s));
  return fr(s);
}

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** min/max observer: returns the stored scale and integer zero point of one group. */
export function groupParams(x: ArrayLike<number>, bits: number, symmetric: boolean, dt: ScaleDType): { scale: number; zero: number } {
  const qmin = -(2 ** (bits - 1));
  const qmax = 2 ** (bits - 1) - 1;
  let mn = 0;
  let mx = 0;
  for (let i = 0; i < x.length; i++) {
    mn = Math.min(mn, x[i] as number);
    mx = Math.max(mx, x[i] as number);
  }
  if (symmetric) {
    const amax = Math.max(-mn, mx);
    const s = Math.max(fr(amax / fr((qmax - qmin) / 2)), EPS);
    return { scale: storeScale(s, dt), zero: 0 };
  }
  const s = storeScale(Math.max(fr(fr(mx - mn) / (qmax - qmin)), EPS), dt);
  const zero = Math.min(qmax, Math.max(qmin, roundHalfEven(fr(qmin - fr(mn / s)))));
  return { scale: s, zero };
}

/** q = round(clamp(x / s + z)) in f32 arithmetic. */
export function code(x: number, scale: number, zero: number, bits: number): number {
  const qmin = -(2 ** (bits - 1));
  const qmax = 2 ** (bits - 1) - 1;
  const v = fr(fr(x / scale) + zero);
  return roundHalfEven(Math.min(qmax, Math.max(qmin, v)));
}

/** Signed code of element `col` of a packed row of int32 words. */
export function unpack(words: Int32Array, rowWords: number, row: number, col: number, bits: number): number {
  const perWord = 32 / bits;
  const w = words[row * rowWords + Math.floor(col / perWord)] as number;
  const u = (w >>> (bits * (col % perWord))) & ((1 << bits) - 1);
  return u - 2 ** (bits - 1);
}

/**
 * Dense elements of a sparse-24-bitmask weight, decoded from the published
 * layout alone: row r's k-th set bit (bit j of byte b is column 8b+j) takes
 * compressed[r, k]; unset positions are 0. Elements are raw (f32 values or
 * f16/bf16 bits), so the result compares bit for bit. Throws when a row's
 * bit count is not cols/2.
 */
export function decodeSparse24Bitmask<T extends Float32Array | Uint16Array>(compressed: T, bitmask: Uint8Array, rows: number, cols: number): T {
  const out = new (compressed.constructor as new (n: number) => T)(rows * cols);
  const bytesPerRow = Math.ceil(cols / 8);
  for (let r = 0; r < rows; r++) {
    let k = 0;
    for (let c = 0; c < cols; c++) {
      if ((((bitmask[r * bytesPerRow + (c >> 3)] as number) >> (c & 7)) & 1) === 0) continue;
      if (k >= cols / 2) throw new Error(`row ${r}: more than ${cols / 2} bits set`);
      out[r * cols + c] = compressed[r * (cols / 2) + k] as number;
      k++;
    }
    if (k !== cols / 2) throw new Error(`row ${r}: ${k} bits set, want ${cols / 2}`);
  }
  return out;
}
