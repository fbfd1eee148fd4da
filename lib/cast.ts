// cast: a float tensor in another float format (f32 / f16 / bf16), on the
// thread pool. Narrowing rounds to nearest, ties to even (overflow to
// infinity, NaN stays NaN, quiet) — what F16C's vcvtps2ph and torch's
// .to(float16 / bfloat16) do; widening is exact. The pipeline converts
// whole tensors through it (a Hugging Face bf16 model written as an f16
// GGUF), so it runs at memory speed instead of a JS loop's.
import { fail } from './errors';
import { binding, callAsync, callSync, type NativeArgs } from './native';
import { checkOptions, FLOAT_DTYPES, kernelCode, sameShape, threadCount, type Kernel } from './options';
import { checkTensor, dtypeCode, overlaps, Tensor, type FloatDType } from './tensor';

export interface CastOptions {
  /** Write here (a tensor of the target dtype and the same shape) instead of a new tensor. May be the input itself when both types have one size (f16 <-> bf16). */
  out?: Tensor;
  /** 'auto' (default), 'reference' or 'avx2'; all give the same bits. */
  kernel?: Kernel;
  threads?: number;
}

function planCast(t: Tensor, dtype: FloatDType, options: CastOptions | undefined, where: string): { args: NativeArgs; out: Tensor<FloatDType> } {
  const src = checkTensor(t, where, 'tensor', FLOAT_DTYPES);
  if (!FLOAT_DTYPES.includes(dtype)) fail(where, 'ERR_DTYPE', `dtype must be f32, f16 or bf16; got ${JSON.stringify(dtype)}`);
  const o = checkOptions(options, where, ['out', 'kernel', 'threads']) as CastOptions;
  let out: Tensor<FloatDType>;
  let fresh = false;
  if (o.out !== undefined) {
    out = checkTensor(o.out, where, 'options.out', [dtype]) as Tensor<FloatDType>;
    if (!sameShape(out.shape, src.shape)) fail(where, 'ERR_SHAPE', `options.out is [${out.shape.join(', ')}]; the tensor is [${src.shape.join(', ')}]`);
    const inPlace = out.data.buffer === src.data.buffer && out.data.byteOffset === src.data.byteOffset && out.byteLength === src.byteLength;
    if (!inPlace && overlaps(out.data, src.data)) fail(where, 'ERR_VALUE', 'options.out overlaps the tensor without being the same memory of a same-sized type');
  } else {
    out = Tensor.uninitialized(src.shape, dtype);
    fresh = true;
  }
  const args: NativeArgs = {
    src: src.data,
    srcDtype: dtypeCode(src.dtype),
    dst: out.data,
    dstDtype: dtypeCode(dtype),
    n: src.size,
    kernel: kernelCode(o.kernel, where),
    threads: threadCount(o.threads, where),
    // an output made for this call (native/addon/job.h: neither marked nor copied)
    fresh: fresh ? [out.data] : [],
  };
  return { args, out };
}

/** The tensor converted to `dtype` (a copy when it already has it), on the thread pool. */
export async function cast(t: Tensor, dtype: FloatDType, options?: CastOptions): Promise<Tensor<FloatDType>> {
  const { args, out } = planCast(t, dtype, options, 'cast');
  await callAsync('cast', () => binding.cast(args, true));
  return out;
}

/** cast() on the calling thread (small tensors, scripts). */
export function castSync(t: Tensor, dtype: FloatDType, options?: CastOptions): Tensor<FloatDType> {
  const { args, out } = planCast(t, dtype, options, 'castSync');
  callSync('castSync', () => binding.cast(args, false));
  return out;
}
