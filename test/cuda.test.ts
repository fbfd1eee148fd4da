// The CUDA backend. Three builds can be on disk:
//   build/Release        the default CPU-only addon (node-gyp), used by lib/
//   build-cuda/Release   the CUDA variant (cmake-js; scripts/check-cuda.cjs
//                        builds it wherever nvcc exists), loaded here directly
// Without a GPU the CUDA build must load, say why CUDA is unavailable and
// reject kernel 'cuda' with ERR_UNSUPPORTED. With one, every CUDA output must
// equal the CPU reference byte for byte. Tests that cannot run here are
// reported as skipped (pending), with the reason in their title.
import { expect } from 'chai';
import { backends, dequantize, quantize, SlimTensorError, Tensor, type FloatDType, type QuantFormat, type QuantizeOptions } from '../lib/index';
import { binding as defaultBinding, type NativeArgs } from '../lib/native';
import { planDequantize, planQuantize, type QuantizedTensor } from '../lib/quantize';
import { bytesOf, rejected, thrown } from './support/assert';
import { cudaBuild, requireCudaBuild, type RawAddon, waitForCudaCheck } from './support/cuda-build';
import { kernelsHere, skip } from './support/skip';

/** The part of an addon instance these tests call (see lib/native.ts). */
interface RawBinding extends RawAddon {
  quantize(args: NativeArgs, async: boolean): Promise<unknown> | undefined;
  dequantize(args: NativeArgs, async: boolean): Promise<undefined> | undefined;
}

// ---------------------------------------------------------------------------
// Test data: seeded, with the edge values the kernels must agree on.

/** mulberry32: a small seeded generator, enough for test data. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const F32_EDGES = [0, -0, 1e-45, -1e-40, 1.1754942e-38, 65504, -65504, 65520, 1e-8, 0.5, -0.5, 7.5, -8, 3e38, -3e38];
const F16_EDGES = [0x0000, 0x8000, 0x0001, 0x83ff, 0x0400, 0x7bff, 0xfbff, 0x3800, 0xb800, 0x4780, 0xc800];
const BF16_EDGES = [0x0000, 0x8000, 0x0001, 0x807f, 0x0080, 0x7f7f, 0xff7f, 0x3f00, 0xbf00, 0x40f0, 0xc100];
const F32_NONFINITE = [NaN, Infinity, -Infinity];
const F16_NONFINITE = [0x7c00, 0xfc00, 0x7e00, 0xfd01];
const BF16_NONFINITE = [0x7f80, 0xff80, 0x7fc0, 0xffc1];

/**
 * rows x cols values of `dtype`: rows of different character (normal,
 * all zero, constant, tiny, huge, ties, random bit patterns) sprinkled with
 * edge values; non-finite ones only when `nonFinite`.
 */
function makeInput(dtype: FloatDType, rows: number, cols: number, seed: number, nonFinite: boolean): Tensor<FloatDType> {
  const r = rng(seed);
  const normal = (): number => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  const n = rows * cols;
  const data = dtype === 'f32' ? new Float32Array(n) : new Uint16Array(n);
  const edges = dtype === 'f32' ? F32_EDGES : dtype === 'f16' ? F16_EDGES : BF16_EDGES;
  const bad = dtype === 'f32' ? F32_NONFINITE : dtype === 'f16' ? F16_NONFINITE : BF16_NONFINITE;
  const finite16 = (h: number): boolean => (dtype === 'f16' ? (h & 0x7c00) !== 0x7c00 : (h & 0x7f80) !== 0x7f80);
  for (let row = 0; row < rows; row++) {
    const kind = row % 8;
    const scale = [1, 0, 1, 1e-6, 1e3, 1, 1, 1][kind] as number;
    for (let c = 0; c < cols; c++) {
      const i = row * cols + c;
      let v = kind === 2 ? 3.25 : kind === 5 ? Math.round(normal() * 8) / 2 : normal() * scale;
      if (dtype === 'f32') {
        if (kind === 6) {
          u[0] = (r() * 4294967296) >>> 0; // any f32 bit pattern
          v = Number.isFinite(f[0]) ? (f[0] as number) : 0;
        }
        if (r() < 0.05) v = edges[Math.floor(r() * edges.length)] as number;
        if (nonFinite && r() < 0.02) v = bad[Math.floor(r() * bad.length)] as number;
        data[i] = v;
      } else {
        f[0] = v;
        // Truncation is as good as rounding for test data.
        let h = dtype === 'bf16' ? (u[0] as number) >>> 16 : truncF16(u[0] as number);
        if (kind === 6) h = Math.floor(r() * 65536);
        if (r() < 0.05) h = edges[Math.floor(r() * edges.length)] as number;
        if (!finite16(h)) h = 0;
        if (nonFinite && r() < 0.02) h = bad[Math.floor(r() * bad.length)] as number;
        data[i] = h;
      }
    }
  }
  return Tensor.from(data, [rows, cols], dtype);
}

/** f16 bits of a finite f32 (bits `x`), truncating; out of range saturates, underflow flushes. */
function truncF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const e = ((x >>> 23) & 0xff) - 127 + 15;
  if (e >= 31) return sign | 0x7bff;
  if (e <= 0) return sign;
  return sign | (e << 10) | ((x >>> 13) & 0x3ff);
}

function importance(cols: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: cols }, (_, j) => (j % 7 === 3 ? 0 : r() * 4));
}

/** Each int-format variant: group size, symmetry, scale dtype. */
const INT_VARIANTS: { groupSize: number | 'channel'; symmetric: boolean; scaleDtype: FloatDType; cols: number }[] = [
  { groupSize: 32, symmetric: true, scaleDtype: 'f16', cols: 96 },
  { groupSize: 32, symmetric: false, scaleDtype: 'bf16', cols: 96 },
  { groupSize: 'channel', symmetric: true, scaleDtype: 'f32', cols: 160 },
  { groupSize: 'channel', symmetric: false, scaleDtype: 'f16', cols: 160 },
  // Odd groups: INT4 neighbours share a byte; odd rows leave a padding nibble.
  { groupSize: 3, symmetric: true, scaleDtype: 'f32', cols: 99 },
  { groupSize: 3, symmetric: false, scaleDtype: 'bf16', cols: 99 },
  { groupSize: 5, symmetric: false, scaleDtype: 'f16', cols: 35 },
];

interface Variant {
  label: string;
  input: Tensor<FloatDType>;
  options: QuantizeOptions;
}

/** GGUF formats whose rows are super-blocks of 256 values. */
const isK = (format: QuantFormat): boolean => format.endsWith('_k');
/** Formats with slimtensor's search: 'mse'. */
const hasMse = (format: QuantFormat): boolean => ['q4_0', 'q4_1', 'q8_0', 'int4', 'int8'].includes(format);

// search 'none' on GGUF formats comes without and with importance (ggml's
// reference and llama.cpp's weighted quantizers); 'mse' only where it exists.
function variants(format: QuantFormat, search: 'none' | 'mse', dtype: FloatDType, seed: number): Variant[] {
  const rows = 37;
  const out: Variant[] = [];
  if (search === 'mse' && !hasMse(format)) return out;
  const ggml = format.startsWith('q');
  const shapes = isK(format)
    ? [{ cols: 512, extra: {} }, { cols: 256, extra: {} }]
    : ggml
      ? [{ cols: 96, extra: {} }, { cols: 32, extra: {} }]
      : INT_VARIANTS.map(({ cols, ...extra }) => ({ cols, extra }));
  for (const { cols, extra } of shapes) {
    for (const nonFinite of ['error', 'zero'] as const) {
      for (const weighted of search === 'mse' || ggml ? [false, true] : [false]) {
        const options: QuantizeOptions = { format, search, nonFinite, ...extra };
        if (weighted) options.importance = importance(cols, seed + cols);
        out.push({
          label: `${JSON.stringify({ cols, ...extra, nonFinite, weighted })}`,
          input: makeInput(dtype, rows, cols, seed++, nonFinite === 'zero'),
          options,
        });
      }
    }
  }
  return out;
}

/** Quantizes with one kernel of an addon instance (sync), returning the tensor or the error. */
function runQuantize(b: RawBinding, t: Tensor, options: QuantizeOptions): QuantizedTensor | SlimTensorError {
  const { args, result } = planQuantize(t, options, 'test');
  try {
    b.quantize(args, false);
    return result;
  } catch (e) {
    if (e instanceof SlimTensorError) return e;
    throw e;
  }
}

/** Differences between two quantizations ([] when byte-identical). */
function compareQuantized(a: QuantizedTensor | SlimTensorError, b: QuantizedTensor | SlimTensorError): string[] {
  if (a instanceof SlimTensorError || b instanceof SlimTensorError) {
    const show = (x: QuantizedTensor | SlimTensorError): string => (x instanceof SlimTensorError ? `${x.code}: ${x.message}` : 'ok');
    return show(a) === show(b) ? [] : [`${show(a)} vs ${show(b)}`];
  }
  const diffs: string[] = [];
  if (!bytesOf(a.data).equals(bytesOf(b.data))) diffs.push('data');
  if (!bytesOf(a.scales?.data).equals(bytesOf(b.scales?.data))) diffs.push('scales');
  if (!bytesOf(a.zeros?.data).equals(bytesOf(b.zeros?.data))) diffs.push('zeros');
  return diffs;
}

function runDequantize(b: RawBinding, q: QuantizedTensor, dtype: FloatDType, kernel: 'reference' | 'cuda'): Buffer {
  const { args, out } = planDequantize(q, { dtype, kernel }, 'test');
  b.dequantize(args, false);
  return bytesOf(out.data);
}

/** The addon instance with CUDA kernels and a device for the running test; skips it (naming why) when there is none. */
function gpuBinding(ctx: Mocha.Context): RawBinding {
  const candidates: [string, RawBinding][] = [];
  if (defaultBinding.backends().cuda.compiled) candidates.push(['build/', defaultBinding]);
  const c = cudaBuild<RawBinding>('quantize');
  if ('fail' in c) throw new Error(c.fail);
  if ('binding' in c) candidates.push(['build-cuda/', c.binding]);
  if (candidates.length === 0) skip(ctx, `no CUDA build: ${'skip' in c ? c.skip : ''}`);
  for (const [, b] of candidates) if (b.backends().cuda.available) return b;
  const [where, b] = candidates[0] as [string, RawBinding];
  return skip(ctx, `no CUDA device: ${b.backends().cuda.reason ?? 'unknown'} (${where})`);
}

const FORMATS: QuantFormat[] = ['q4_0', 'q4_1', 'q8_0', 'int4', 'int8', 'q5_0', 'q5_1', 'q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k'];
const DTYPES: FloatDType[] = ['f32', 'f16', 'bf16'];

// ---------------------------------------------------------------------------

describe('cuda: the default build (build/Release)', () => {
  it("kernel 'cuda' rejects with ERR_UNSUPPORTED: CUDA is not built in", async function () {
    if (backends().cuda.compiled) skip(this, 'build/ holds a CUDA build (npm run build:cuda); restore the CPU-only one with node-gyp rebuild');
    const b = backends().cuda;
    expect(b.available).to.equal(false);
    expect(b.reason).to.match(/no CUDA kernels/);
    const t = Tensor.from(new Float32Array(64).fill(1), [2, 32]);
    const e = await rejected(quantize(t, { format: 'q4_0', kernel: 'cuda' }));
    expect(e.code).to.equal('ERR_UNSUPPORTED');
    expect(e.message).to.match(/^quantize: this build has no CUDA kernels \(build them with `npm run build:cuda`/);
    const q = await quantize(t, { format: 'q4_0' });
    const d = await rejected(dequantize(q, { kernel: 'cuda' }));
    expect(d.code).to.equal('ERR_UNSUPPORTED');
    expect(d.message).to.match(/no CUDA kernels/);
  });
});

describe('cuda: the CUDA build (build-cuda/Release)', () => {
  waitForCudaCheck();
  it('loads next to the default build and reports CUDA compiled in, and whether a device is usable', function () {
    const cudaBuild = requireCudaBuild<RawBinding>(this, 'quantize');
    const c = cudaBuild.backends().cuda;
    expect(c.compiled).to.equal(true);
    if (c.available) {
      expect(c.reason).to.equal(undefined);
    } else {
      // One of cuda_available()'s reasons (native/core/cuda_runtime.cu).
      expect(c.reason).to.match(/^(cudaGetDeviceCount failed: |no CUDA device found$|cudaGetDevice failed: |cudaGetDeviceProperties failed: |CUDA device \d+ \(.*\) has compute capability )/);
      if (this.test) this.test.title += ` (no device: ${c.reason})`;
    }
  });

  it("without a device, kernel 'cuda' rejects with ERR_UNSUPPORTED and the reason", async function () {
    const cudaBuild = requireCudaBuild<RawBinding>(this, 'quantize');
    const c = cudaBuild.backends().cuda;
    if (c.available) skip(this, 'a CUDA device is available; the comparison tests below exercise it');
    const t = Tensor.from(new Float32Array(512).fill(1), [2, 256]);
    for (const format of FORMATS) {
      const { args } = planQuantize(t, { format, kernel: 'cuda', groupSize: format.startsWith('q') ? undefined : 32 }, 'test');
      const e = await rejected(cudaBuild.quantize(args, true));
      expect(e.code, format).to.equal('ERR_UNSUPPORTED');
      expect(e.message, format).to.contain(c.reason as string);
      expect(thrown(() => cudaBuild.quantize(args, false)).code, format).to.equal('ERR_UNSUPPORTED');
    }
    const q = runQuantize(cudaBuild, t, { format: 'int4', groupSize: 32, kernel: 'reference' });
    if (q instanceof SlimTensorError) throw q;
    const { args } = planDequantize(q, { kernel: 'cuda' }, 'test');
    expect((await rejected(cudaBuild.dequantize(args, true))).code).to.equal('ERR_UNSUPPORTED');
  });

  // npm test's check links build/'s CPU objects into build-cuda/
  // (scripts/check-cuda.cjs); a build:cuda or a check without a current
  // build/ compiles them with CMake (at -O0 in the check): with
  // -ffp-contract=off neither the build system nor the level may change a
  // bit (test/build-files.test.ts keeps the flags equal).
  const kernels = kernelsHere('cuda: CPU kernels of build-cuda/ vs build/', ['reference', 'avx2'] as const);
  it('its CPU kernels give the same bytes as the default build', function () {
    const cudaBuild = requireCudaBuild<RawBinding>(this, 'quantize');
    const diffs: string[] = [];
    let seed = 100;
    let compared = 0;
    let errors = 0;
    for (const format of FORMATS) {
      for (const search of ['none', 'mse'] as const) {
        for (const v of variants(format, search, 'f32', seed++)) {
          for (const kernel of kernels) {
            const options = { ...v.options, kernel };
            const here = runQuantize(defaultBinding, v.input, options);
            const d = compareQuantized(here, runQuantize(cudaBuild, v.input, options));
            if (d.length) diffs.push(`${format} ${search} ${kernel} ${v.label}: ${d.join(', ')}`);
            if (here instanceof SlimTensorError) errors++;
            else compared++;
          }
        }
      }
    }
    const hint = 'build/ and build-cuda/ disagree; if the sources changed since either was built, rebuild both (npx node-gyp build; node scripts/check-cuda.cjs)';
    expect(diffs, hint).to.deep.equal([]);
    // Agreement on an error compares no bytes: none of these inputs is an
    // error (non-finite values only where nonFinite is 'zero').
    expect(errors, `${errors} of ${compared + errors} cases were errors`).to.equal(0);
    expect(compared).to.be.above(0);
  });
});

describe('cuda: CUDA kernels equal the CPU reference byte for byte (needs a GPU)', () => {
  waitForCudaCheck();
  let seed = 1;
  for (const format of FORMATS) {
    const s = (seed += 1000);
    it(`${format}: codes, scales, zero points and errors for f32/f16/bf16 inputs, search none/mse; dequantized values`, function () {
      const gpu = gpuBinding(this);
      const diffs: string[] = [];
      let n = s;
      let compared = 0;
      let errors = 0;
      for (const search of ['none', 'mse'] as const) {
        for (const dtype of DTYPES) {
          for (const v of variants(format, search, dtype, (n += 100))) {
            const label = `${search} ${dtype} ${v.label}`;
            const ref = runQuantize(gpu, v.input, { ...v.options, kernel: 'reference' });
            const dev = runQuantize(gpu, v.input, { ...v.options, kernel: 'cuda' });
            for (const d of compareQuantized(ref, dev)) diffs.push(`${label}: ${d}`);
            if (ref instanceof SlimTensorError || dev instanceof SlimTensorError) {
              errors++;
              continue;
            }
            compared++;
            for (const out of DTYPES) {
              if (!runDequantize(gpu, ref, out, 'reference').equals(runDequantize(gpu, ref, out, 'cuda'))) {
                diffs.push(`${label}: dequantize to ${out}`);
              }
            }
          }
        }
      }
      expect(diffs).to.deep.equal([]);
      // Agreement on an error compares no bytes: none of these inputs is an
      // error (non-finite values only where nonFinite is 'zero').
      expect(errors, `${errors} of ${compared + errors} cases were errors`).to.equal(0);
    });
  }

  it('the first non-finite value is named the same way', function () {
    const gpu = gpuBinding(this);
    const x = new Float32Array(300 * 256).fill(0.25);
    x[250 * 256 + 9] = Infinity;
    x[17 * 256 + 40] = NaN;
    x[17 * 256 + 41] = -Infinity;
    const t = Tensor.from(x, [300, 256]);
    for (const format of FORMATS) {
      const options: QuantizeOptions = { format, groupSize: format.startsWith('q') ? undefined : 16 };
      const ref = runQuantize(gpu, t, { ...options, kernel: 'reference' });
      const dev = runQuantize(gpu, t, { ...options, kernel: 'cuda' });
      expect(dev, format).to.be.instanceOf(SlimTensorError);
      expect((dev as SlimTensorError).message, format).to.match(/non-finite value \(NaN\) at index \[17, 40\]/);
      expect(compareQuantized(ref, dev), format).to.deep.equal([]);
    }
  });

  it('results do not depend on how rows are split into device-sized chunks', function () {
    const gpu = gpuBinding(this);
    const saved = process.env.SLIMTENSOR_CUDA_CHUNK_BYTES;
    try {
      for (const chunk of ['1', '3000']) {
        process.env.SLIMTENSOR_CUDA_CHUNK_BYTES = chunk; // 1: one row per chunk
        for (const format of FORMATS) {
          const v = variants(format, hasMse(format) ? 'mse' : 'none', 'f16', 7)[1] as Variant;
          const ref = runQuantize(gpu, v.input, { ...v.options, kernel: 'reference' });
          const dev = runQuantize(gpu, v.input, { ...v.options, kernel: 'cuda' });
          expect(compareQuantized(ref, dev), `${format} chunk ${chunk}`).to.deep.equal([]);
          if (!(ref instanceof SlimTensorError)) {
            expect(runDequantize(gpu, ref, 'bf16', 'cuda').equals(runDequantize(gpu, ref, 'bf16', 'reference'))).to.equal(true);
          }
        }
      }
    } finally {
      if (saved === undefined) delete process.env.SLIMTENSOR_CUDA_CHUNK_BYTES;
      else process.env.SLIMTENSOR_CUDA_CHUNK_BYTES = saved;
    }
  });
});
