// One linear layer of the runtime on its own, Y [n, rows] = X [n, cols] · Wᵀ,
// with a weight as slimtensor holds it (Tensor, QuantizedTensor,
// Sparse24Tensor) and the kernels a loaded model would use: for tests of the
// kernels and for benchmarks.
import { fail } from '../errors';
import { binding, callSync, callAsync } from '../native';
import { kernelCode, threadCount, type Kernel } from '../options';
import { QuantizedTensor } from '../quantize';
import { Sparse24Tensor } from '../sparsity';
import { dtypeCode, Tensor } from '../tensor';
import { WEIGHT_FORMATS } from './load';

export interface LinearOptions {
  kernel?: Kernel;
  /** 'auto': 8-bit activation blocks where the weight's kernel takes them; 'f32': f32 activations. */
  activations?: 'auto' | 'f32';
  threads?: number;
}

function args(w: Tensor | QuantizedTensor | Sparse24Tensor, x: Float32Array, n: number, options: LinearOptions, where: string): Record<string, unknown> {
  if (!(x instanceof Float32Array)) fail(where, 'ERR_DTYPE', 'x must be a Float32Array');
  const shape = w.shape;
  if (shape.length !== 2) fail(where, 'ERR_SHAPE', `the weight must be 2-D [rows, cols], got [${shape.join(', ')}]`);
  const [rows, cols] = shape as [number, number];
  if (!Number.isInteger(n) || n < 1 || x.length !== n * cols) fail(where, 'ERR_SHAPE', `x must hold n × ${cols} values`);
  const y = new Float32Array(n * rows);
  const base = {
    rows,
    cols,
    n,
    x,
    y,
    fresh: [y],
    kernel: kernelCode(options.kernel, where),
    act: options.activations === 'f32' ? 1 : 0,
    threads: threadCount(options.threads, where),
    group: 0,
    scaleDtype: 0,
    valuesDtype: 0,
  };
  if (w instanceof QuantizedTensor) {
    return {
      ...base,
      format: WEIGHT_FORMATS[w.format],
      data: w.data,
      group: w.groupSize,
      ...(w.scales ? { scales: w.scales.data, scaleDtype: dtypeCode(w.scales.dtype) } : {}),
      ...(w.zeros ? { zeros: w.zeros.data } : {}),
    };
  }
  if (w instanceof Sparse24Tensor) {
    if (w.quantized || !(w.meta instanceof Int16Array)) fail(where, 'ERR_VALUE', 'a 2:4 weight must hold float values and int16 meta');
    const values = w.values as Tensor;
    return { ...base, format: WEIGHT_FORMATS['2:4'], data: values.data, valuesDtype: dtypeCode(values.dtype), meta: w.meta };
  }
  if (w.dtype !== 'f32' && w.dtype !== 'f16' && w.dtype !== 'bf16') fail(where, 'ERR_DTYPE', `weights must be f32, f16 or bf16, got ${w.dtype}`);
  return { ...base, format: WEIGHT_FORMATS[w.dtype], data: w.data };
}

export function linearSync(w: Tensor | QuantizedTensor | Sparse24Tensor, x: Float32Array, n: number, options: LinearOptions = {}): Float32Array {
  const a = args(w, x, n, options, 'linear');
  callSync('linear', () => binding.modelLinear(a, false));
  return a.y as Float32Array;
}

export async function linear(w: Tensor | QuantizedTensor | Sparse24Tensor, x: Float32Array, n: number, options: LinearOptions = {}): Promise<Float32Array> {
  const a = args(w, x, n, options, 'linear');
  await callAsync('linear', () => binding.modelLinear(a, true));
  return a.y as Float32Array;
}

/** The kernel set and activations a weight of this format would run with, e.g. 'avx512/q8'. */
export function linearKernel(format: keyof typeof WEIGHT_FORMATS, cols: number, options: LinearOptions & { group?: number; asymmetric?: boolean } = {}): string {
  return binding.modelLinearKernel({
    format: WEIGHT_FORMATS[format],
    cols,
    group: options.group ?? cols,
    asymmetric: options.asymmetric === true,
    kernel: kernelCode(options.kernel, 'linearKernel'),
    act: options.activations === 'f32' ? 1 : 0,
  });
}
