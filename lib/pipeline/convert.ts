// Reading float arrays of any float dtype as f32 (the comparisons and
// error measures). Converting whole tensors between float dtypes is
// lib/cast.ts (native).
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
