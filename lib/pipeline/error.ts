// Error statistics of two float tensors of the same size, in double
// precision (for results that are not QuantizedTensors: conversions,
// low-rank reconstructions, float outputs).
import type { QuantizationError } from '../quantize';
import type { FloatDType, Tensor } from '../tensor';
import { toFloat32 } from './convert';

export function denseError(a: Tensor, b: Tensor): QuantizationError {
  const x = toFloat32(a.data as Float32Array | Uint16Array, a.dtype as FloatDType);
  const y = toFloat32(b.data as Float32Array | Uint16Array, b.dtype as FloatDType);
  let se = 0;
  let sx = 0;
  let sy = 0;
  let dot = 0;
  let maxAbs = 0;
  for (let i = 0; i < x.length; i++) {
    const u = x[i] as number;
    const v = y[i] as number;
    const d = u - v;
    se += d * d;
    sx += u * u;
    sy += v * v;
    dot += u * v;
    if (Math.abs(d) > maxAbs) maxAbs = Math.abs(d);
  }
  return {
    rmse: x.length === 0 ? 0 : Math.sqrt(se / x.length),
    maxAbs,
    sqnrDb: se === 0 ? Infinity : 10 * Math.log10(sx / se),
    cosine: sx * sy === 0 ? (sx === sy ? 1 : 0) : dot / Math.sqrt(sx * sy),
  };
}
