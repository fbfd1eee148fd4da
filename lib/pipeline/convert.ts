// Float conversions for tensors the pipeline keeps at another precision
// (an F32 tensor whose rows fit no block falls back to F16, as
// llama-quantize does). Round to nearest, ties to even, like lib/half.ts,
// over whole arrays.
import type { FloatDType } from '../quantize';

const F16_TO_F32 = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const man = h & 0x3ff;
    t[h] = exp === 0 ? sign * man * 2 ** -24 : exp === 31 ? (man ? NaN : sign * Infinity) : sign * (1 + man / 1024) * 2 ** (exp - 15);
  }
  return t;
})();

/** IEEE binary16 bits of the f32 whose bits are `bits`. */
function f32BitsToF16(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const abs = bits & 0x7fffffff;
  if (abs >= 0x7f800000) return sign | 0x7c00 | (abs > 0x7f800000 ? 0x0200 | ((abs >>> 13) & 0x3ff) : 0);
  if (abs >= 0x477ff000) return sign | 0x7c00;
  if (abs < 0x38800000) {
    // subnormal half: shift the significand (with its implicit bit) into place, round half to even
    if (abs < 0x33000000) return sign; // below half the smallest subnormal: rounds to 0
    const e = abs >>> 23;
    const m = (abs & 0x7fffff) | 0x800000;
    const shift = 126 - e; // 14..24
    const q = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    return sign | (q + (rem > half || (rem === half && (q & 1) === 1) ? 1 : 0));
  }
  const rebased = abs - 0x38000000;
  return sign | ((rebased + 0x0fff + ((rebased >>> 13) & 1)) >>> 13);
}

function f32BitsToBf16(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Element i of a float array of dtype `from` as f32 bits. */
function toF32Bits(from: FloatDType, src: Uint32Array | Uint16Array, i: number, scratch: { f: Float32Array; u: Uint32Array }): number {
  if (from === 'f32') return src[i] as number;
  if (from === 'bf16') return ((src[i] as number) << 16) >>> 0;
  scratch.f[0] = F16_TO_F32[src[i] as number] as number;
  return scratch.u[0] as number;
}

/**
 * Converts `n` elements of `src` (bytes of dtype `from`) into `dst` (bytes of
 * dtype `to`). Both must be aligned to their element size.
 */
export function convertFloats(src: Uint8Array, from: FloatDType, dst: Uint8Array, to: FloatDType, n: number): void {
  const s = from === 'f32' ? new Uint32Array(src.buffer, src.byteOffset, n) : new Uint16Array(src.buffer, src.byteOffset, n);
  const f = new Float32Array(1);
  const scratch = { f, u: new Uint32Array(f.buffer) };
  if (to === 'f32') {
    const d = new Uint32Array(dst.buffer, dst.byteOffset, n);
    for (let i = 0; i < n; i++) d[i] = toF32Bits(from, s, i, scratch);
    return;
  }
  const d = new Uint16Array(dst.buffer, dst.byteOffset, n);
  const conv = to === 'f16' ? f32BitsToF16 : f32BitsToBf16;
  if (from === to) {
    d.set(s as Uint16Array);
    return;
  }
  for (let i = 0; i < n; i++) d[i] = conv(toF32Bits(from, s, i, scratch));
}

/** Element i of a float array as a number. */
export function floatAt(a: Uint32Array | Uint16Array | Float32Array, dtype: FloatDType, i: number): number {
  if (dtype === 'f32') return a[i] as number;
  if (dtype === 'f16') return F16_TO_F32[a[i] as number] as number;
  const f = new Float32Array(new Uint32Array([((a[i] as number) << 16) >>> 0]).buffer);
  return f[0] as number;
}

/** Typed view of float bytes: Float32Array for f32, Uint16Array of bits otherwise. */
export function floatView(bytes: Uint8Array, dtype: FloatDType): Float32Array | Uint16Array {
  return dtype === 'f32' ? new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4) : new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
}

/** Floats of any float dtype as a Float32Array (a copy unless already f32). */
export function toFloat32(data: Float32Array | Uint16Array, dtype: FloatDType): Float32Array {
  if (dtype === 'f32') return data as Float32Array;
  const out = new Float32Array(data.length);
  const u = data as Uint16Array;
  if (dtype === 'f16') for (let i = 0; i < u.length; i++) out[i] = F16_TO_F32[u[i] as number] as number;
  else {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < u.length; i++) bits[i] = ((u[i] as number) << 16) >>> 0;
  }
  return out;
}
