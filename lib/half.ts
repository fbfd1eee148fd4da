// Scalar conversions between JS numbers and 16-bit float bit patterns, for
// building f16/bf16 tensors in JS and for reading them back. Both round to
// nearest, ties to even, like the native kernels and F16C hardware.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE binary16 bits of `x` (rounded to f32 first, as typed arrays do). */
export function f32ToF16(x: number): number {
  f32[0] = x;
  const bits = u32[0] as number;
  const sign = (bits >>> 16) & 0x8000;
  const abs = bits & 0x7fffffff;
  if (abs >= 0x7f800000) return sign | 0x7c00 | (abs > 0x7f800000 ? 0x0200 | ((abs >>> 13) & 0x3ff) : 0);
  if (abs >= 0x477ff000) return sign | 0x7c00; // rounds up to infinity
  if (abs < 0x38800000) {
    // subnormal half: a count of 2^-24 units, rounded half to even
    f32[0] = Math.abs(x);
    const units = (f32[0] as number) * 16777216;
    let r = Math.round(units);
    if (r - units === 0.5 && r % 2 !== 0) r -= 1; // Math.round breaks ties upward
    return sign | r;
  }
  const rebased = abs - 0x38000000;
  return sign | ((rebased + 0x0fff + ((rebased >>> 13) & 1)) >>> 13);
}

/** The number a binary16 bit pattern encodes. */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const man = h & 0x3ff;
  if (exp === 0) return sign * man * 2 ** -24;
  if (exp === 31) return man ? NaN : sign * Infinity;
  return sign * (1 + man / 1024) * 2 ** (exp - 15);
}

/** bfloat16 bits of `x` (rounded to f32 first). */
export function f32ToBf16(x: number): number {
  f32[0] = x;
  const bits = u32[0] as number;
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** The number a bfloat16 bit pattern encodes. */
export function bf16ToF32(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0] as number;
}
