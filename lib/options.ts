// Option checks every operation shares: the kernel names, thread counts,
// unknown keys, shapes.
import { fail } from './errors';
import type { FloatDType } from './tensor';

/**
 * Which implementation runs. 'auto' picks the fastest the machine has;
 * 'reference' is the scalar specification; 'avx2' pins the AVX2 kernels
 * (even where AVX-512 loops exist); 'avx512' asks for them (ERR_UNSUPPORTED
 * where an operation has none); 'cuda' the GPU. All CPU kernels give the
 * same results (bit for bit where the operation says so).
 */
export type Kernel = 'auto' | 'reference' | 'avx2' | 'avx512' | 'cuda';

// native/core/tensor.h Kernel
const KERNELS: Record<Kernel, number> = { auto: 0, reference: 1, avx2: 2, cuda: 3, avx512: 4 };

export const FLOAT_DTYPES: readonly FloatDType[] = ['f32', 'f16', 'bf16'];

/** The native code of options.kernel (undefined: 'auto'). */
export function kernelCode(kernel: unknown, where: string): number {
  if (kernel === undefined) return KERNELS.auto;
  if (typeof kernel !== 'string' || !Object.prototype.hasOwnProperty.call(KERNELS, kernel)) {
    fail(where, 'ERR_VALUE', `options.kernel must be one of ${Object.keys(KERNELS).join(', ')}; got ${JSON.stringify(kernel)}`);
  }
  return KERNELS[kernel as Kernel];
}

/** options.threads checked (undefined: 0, the pool's count). */
export function threadCount(threads: unknown, where: string): number {
  if (threads === undefined) return 0;
  if (!Number.isInteger(threads) || (threads as number) < 1 || (threads as number) > 1024) {
    fail(where, 'ERR_VALUE', `options.threads must be an integer in 1..1024, got ${String(threads)}`);
  }
  return threads as number;
}

/** An options object with only `known` keys (undefined: {}). */
export function checkOptions(options: unknown, where: string, known: readonly string[]): Record<string, unknown> {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null) fail(where, 'ERR_VALUE', 'options must be an object');
  for (const k of Object.keys(options)) {
    if (!known.includes(k)) fail(where, 'ERR_VALUE', `unknown option ${JSON.stringify(k)}; known: ${known.join(', ')}`);
  }
  return options as Record<string, unknown>;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
