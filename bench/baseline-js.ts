// Plain-JS reference quantizers: what a competent JS developer would write
// from the published formulas (shared/reference/FORMATS.md), one thread, no
// SIMD, no native code. The quantize benchmark reports the native kernels'
// speed against these, and checks that they produce the same bytes, so a
// baseline that drifted from the format (and got faster by being wrong)
// shows up as a mismatch.
//
// The formats are defined in f32 arithmetic, so every f32 operation of the
// reference is rounded with Math.fround. (A JS double holds the exact
// product of two f32s, and rounding a double result of +, -, *, / to f32 is
// the same as doing the operation in f32, so fround after each step is exact
// emulation, not an approximation.)
//
// Inputs are assumed finite (the benchmark feeds N(0, 1) data); NaN/Inf
// handling is the native side's job.

import { f16ToF32, f32ToF16 } from '../lib/half';

const BLOCK = 32; // GGUF block length

// The f16 conversions are the library's plain-JS ones (lib/half.ts).
function putF16(out: Uint8Array, at: number, value: number): void {
  const h = f32ToF16(value);
  out[at] = h & 0xff;
  out[at + 1] = h >>> 8;
}

// Rounding. Math.floor(v + 0.5) rather than Math.round(v): they agree here
// (v is an f32, so v + 0.5 is exact in a double unless |v| < 2^-30, and then
// both give 0), but V8 compiles
// Math.round with a data-dependent branch that random data mispredicts half
// the time, and floor to a single instruction. The tie fix-ups below test
// for the rare tie first, so their branches stay predictable.

/** C's roundf: halves away from zero (floor(v + 0.5) sends -2.5 to -2). */
function roundHalfAway(v: number): number {
  const r = Math.floor(v + 0.5);
  return r - v === 0.5 && v < 0 ? r - 1 : r;
}

/** Round half to even, the rounding of torch.round and of compressed-tensors. */
function roundHalfEven(v: number): number {
  const r = Math.floor(v + 0.5); // halves go up
  return r - v === 0.5 && (r & 1) !== 0 ? r - 1 : r;
}

function checkBlocks(x: Float32Array, what: string): void {
  if (x.length % BLOCK !== 0) throw new RangeError(`${what}: ${x.length} values are not whole blocks of ${BLOCK}`);
}

/**
 * GGUF Q4_0: per block of 32, d = m / -8 with m the signed value of largest
 * magnitude; q = min(15, trunc(x/d + 8.5)). 18 bytes per block: f16 d, then
 * 16 bytes with element j in the low nibble and j+16 in the high nibble.
 */
export function quantizeQ4_0(x: Float32Array): Uint8Array {
  checkBlocks(x, 'quantizeQ4_0');
  const blocks = x.length / BLOCK;
  const out = new Uint8Array(blocks * 18);
  for (let b = 0; b < blocks; b++) {
    const base = b * BLOCK;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < BLOCK; j++) {
      const v = x[base + j] as number;
      const a = Math.abs(v);
      if (a > amax) {
        amax = a;
        max = v;
      }
    }
    const d = Math.fround(max / -8);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    const o = b * 18;
    putF16(out, o, d);
    for (let j = 0; j < BLOCK / 2; j++) {
      const lo = Math.min(15, Math.fround(Math.fround((x[base + j] as number) * id) + 8.5) | 0);
      const hi = Math.min(15, Math.fround(Math.fround((x[base + j + 16] as number) * id) + 8.5) | 0);
      out[o + 2 + j] = lo | (hi << 4);
    }
  }
  return out;
}

/**
 * GGUF Q4_1: per block of 32, d = (max - min) / 15, q = min(15,
 * trunc((x - min)/d + 0.5)). 20 bytes: f16 d, f16 min, 16 bytes of nibbles
 * split as in Q4_0.
 */
export function quantizeQ4_1(x: Float32Array): Uint8Array {
  checkBlocks(x, 'quantizeQ4_1');
  const blocks = x.length / BLOCK;
  const out = new Uint8Array(blocks * 20);
  const FLT_MAX = 3.4028234663852886e38;
  for (let b = 0; b < blocks; b++) {
    const base = b * BLOCK;
    let min = FLT_MAX;
    let max = -FLT_MAX;
    for (let j = 0; j < BLOCK; j++) {
      const v = x[base + j] as number;
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const d = Math.fround(Math.fround(max - min) / 15);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    const o = b * 20;
    putF16(out, o, d);
    putF16(out, o + 2, min);
    for (let j = 0; j < BLOCK / 2; j++) {
      const lo = Math.min(15, Math.fround(Math.fround(Math.fround((x[base + j] as number) - min) * id) + 0.5) | 0);
      const hi = Math.min(15, Math.fround(Math.fround(Math.fround((x[base + j + 16] as number) - min) * id) + 0.5) | 0);
      out[o + 4 + j] = lo | (hi << 4);
    }
  }
  return out;
}

/**
 * GGUF Q8_0: per block of 32, d = max|x| / 127, q = roundf(x/d). 34 bytes:
 * f16 d, 32 int8 codes.
 */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  checkBlocks(x, 'quantizeQ8_0');
  const blocks = x.length / BLOCK;
  const out = new Uint8Array(blocks * 34);
  for (let b = 0; b < blocks; b++) {
    const base = b * BLOCK;
    let amax = 0;
    for (let j = 0; j < BLOCK; j++) {
      const a = Math.abs(x[base + j] as number);
      if (a > amax) amax = a;
    }
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    const o = b * 34;
    putF16(out, o, d);
    for (let j = 0; j < BLOCK; j++) {
      // & 0xff stores the int8 two's complement byte.
      out[o + 2 + j] = roundHalfAway(Math.fround((x[base + j] as number) * id)) & 0xff;
    }
  }
  return out;
}

/** compressed-tensors output: packed biased codes and f16 scales. */
export interface IntQuantized {
  /** [rows, ceil(cols·bits/32)] int32 words, element i at bits [bits·(i mod 32/bits), +bits). */
  data: Int32Array;
  /** [rows, cols/group] f16 bits. */
  scales: Uint16Array;
}

// torch.finfo(float32).eps: compressed-tensors' floor for a scale.
const SCALE_EPS = 2 ** -23;

/**
 * compressed-tensors symmetric group quantization (INT4 or INT8, "pack-
 * quantized"): per group, s = max|x| / ((qmax - qmin)/2) stored as f16,
 * q = round_half_even(clamp(x / s, qmin, qmax)), stored as q - qmin.
 */
export function quantizeIntSymmetric(x: Float32Array, rows: number, cols: number, bits: 4 | 8, group: number): IntQuantized {
  if (rows * cols !== x.length || cols % group !== 0) {
    throw new RangeError(`quantizeIntSymmetric: [${rows}, ${cols}] with group ${group} does not fit ${x.length} values`);
  }
  const qmin = -(1 << (bits - 1));
  const qmax = (1 << (bits - 1)) - 1;
  const halfRange = (qmax - qmin) / 2; // 7.5 for INT4, 127.5 for INT8
  const perWord = 32 / bits; // 8 or 4: a power of two, so shifts and masks below
  const wordShift = bits === 4 ? 3 : 2;
  const wordsPerRow = Math.ceil((cols * bits) / 32);
  const groupsPerRow = cols / group;
  const data = new Int32Array(rows * wordsPerRow);
  const scales = new Uint16Array(rows * groupsPerRow);
  for (let r = 0; r < rows; r++) {
    const rowBase = r * cols;
    const wordBase = r * wordsPerRow;
    for (let g = 0; g < groupsPerRow; g++) {
      const start = rowBase + g * group;
      // Starting at 0 is the observer's "range widened to include 0".
      let min = 0;
      let max = 0;
      for (let j = 0; j < group; j++) {
        const v = x[start + j] as number;
        if (v < min) min = v;
        if (v > max) max = v;
      }
      let s = Math.fround(Math.max(-min, max) / halfRange);
      if (s < SCALE_EPS) s = SCALE_EPS;
      const h = f32ToF16(s);
      scales[r * groupsPerRow + g] = h;
      // Codes are computed against the scale as stored, so dequantizing
      // with the file's f16 scale reproduces what was intended.
      const stored = f16ToF32(h);
      for (let j = 0; j < group; j++) {
        let v = Math.fround((x[start + j] as number) / stored);
        if (v < qmin) v = qmin;
        else if (v > qmax) v = qmax;
        const col = g * group + j;
        const u = roundHalfEven(v) - qmin;
        data[wordBase + (col >>> wordShift)] |= u << ((col & (perWord - 1)) * bits);
      }
    }
  }
  return { data, scales };
}
