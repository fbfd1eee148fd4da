// cast(): every f16 and bf16 bit pattern, and a million f32 patterns plus
// rounding edges, against conversions computed here from the bits (and
// lib/half.ts's independent JS rounding), on every kernel; in place,
// options, errors.
import { expect } from 'chai';
import { cast, castSync, f16ToF32, f32ToBf16, f32ToF16, Tensor, type FloatDType } from '../lib/index';
import { rejected, thrown } from './support/assert';
import { Rng } from './support/random';
import { kernelsHere } from './support/skip';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const valueOf = (bits: number): number => {
  u32[0] = bits >>> 0;
  return f32[0] as number;
};
const isNanBits = (bits: number): boolean => (bits & 0x7fffffff) > 0x7f800000;

/** The f32 bits of an f16: exact, a NaN made quiet (vcvtph2ps). */
function f16Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  if ((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0) return (sign | 0x7f800000 | 0x400000 | ((h & 0x3ff) << 13)) >>> 0;
  f32[0] = f16ToF32(h);
  return u32[0] as number;
}

/** The f16 of f32 bits: lib/half.ts for numbers, the quiet NaN with the top payload bits. */
function toF16(bits: number): number {
  if (isNanBits(bits)) return ((bits >>> 16) & 0x8000) | 0x7e00 | ((bits >>> 13) & 0x3ff);
  const h = f32ToF16(valueOf(bits));
  return bits === 0x80000000 ? 0x8000 : h;
}

function toBf16(bits: number): number {
  if (isNanBits(bits)) return ((bits >>> 16) | 0x40) & 0xffff;
  return bits === 0x80000000 ? 0x8000 : f32ToBf16(valueOf(bits));
}

const ALL16 = Uint16Array.from({ length: 65536 }, (_, i) => i);

/** f32 bit patterns: random ones, and the rounding edges of both 16-bit formats. */
function f32Patterns(): Uint32Array {
  const rng = new Rng(7);
  const edges: number[] = [0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xffbfffff, 0x7f7fffff, 0x00000001, 0x807fffff];
  // f16: overflow threshold, smallest normal, subnormal range, ties at every exponent
  for (const b of [0x477fe000, 0x477fefff, 0x477ff000, 0x38800000, 0x387fffff, 0x33000000, 0x33000001, 0x32ffffff, 0x33800000]) edges.push(b, b | 0x80000000);
  for (let e = 0; e < 255; e++) for (const m of [0x1000, 0x3000, 0x8000, 0x18000, 0x7fff, 0x17fff, 0x7fffff]) edges.push(((e << 23) | m) >>> 0, ((e << 23) | m | 0x80000000) >>> 0);
  const out = new Uint32Array(1 << 20);
  out.set(edges);
  for (let i = edges.length; i < out.length; i++) out[i] = rng.u32();
  return out;
}

describe('cast', () => {
  // no AVX-512 kernel: the dispatched one ('auto') is AVX2 or the reference
  const KERNELS = [...kernelsHere('cast', ['reference', 'avx2'] as const), 'auto' as const];
  const patterns = f32Patterns();
  const expected: Record<string, (bits: number) => number> = {
    'f16>f32': f16Bits,
    'bf16>f32': (h) => (h << 16) >>> 0,
    'f16>bf16': (h) => toBf16(f16Bits(h)),
    'bf16>f16': (h) => toF16((h << 16) >>> 0),
    'f32>f16': toF16,
    'f32>bf16': toBf16,
  };
  for (const kernel of KERNELS) {
    for (const [pair, want] of Object.entries(expected)) {
      const [from, to] = pair.split('>') as [FloatDType, FloatDType];
      it(`${kernel}: ${from} -> ${to}, ${from === 'f32' ? 'a million bit patterns and the rounding edges' : 'every bit pattern'}`, async () => {
        const src = from === 'f32' ? Tensor.from(patterns, [patterns.length], 'f32') : Tensor.from(ALL16, [65536], from);
        const got = await cast(src, to, { kernel });
        expect(got.dtype).to.equal(to);
        const bits = to === 'f32' ? new Uint32Array(got.data.buffer, got.data.byteOffset, got.size) : (got.data as Uint16Array);
        const inBits = from === 'f32' ? patterns : ALL16;
        let bad = 0;
        let first = '';
        for (let i = 0; i < inBits.length; i++) {
          const w = want(inBits[i] as number);
          if (bits[i] !== w) {
            if (bad++ === 0) first = `input 0x${(inBits[i] as number).toString(16)}: got 0x${(bits[i] as number).toString(16)}, want 0x${w.toString(16)}`;
          }
        }
        expect(bad, first).to.equal(0);
      });
    }
  }

  it('odd lengths and offsets: the SIMD steps and the scalar tail agree with the reference', () => {
    for (const n of [1, 7, 8, 15, 16, 17, 33, 100003]) {
      const src = Tensor.from(patterns.subarray(3, 3 + n), [n], 'f32');
      for (const to of ['f16', 'bf16'] as const) {
        const a = castSync(src, to, { kernel: 'reference' });
        const b = castSync(src, to, { threads: 3 });
        expect(Buffer.from(b.data.buffer, b.data.byteOffset, b.byteLength).equals(Buffer.from(a.data.buffer, a.data.byteOffset, a.byteLength)), `${n} ${to}`).to.equal(true);
      }
    }
  });

  it('the same dtype is a copy; f16 <-> bf16 can run in place', async () => {
    const h = Tensor.from(ALL16.slice(), [256, 256], 'f16');
    const copy = await cast(h, 'f16');
    expect(copy.data).to.not.equal(h.data);
    expect(Array.from(copy.data)).to.deep.equal(Array.from(ALL16));
    const want = await cast(h, 'bf16');
    const view = Tensor.from(h.data, [256, 256], 'bf16');
    const inPlace = await cast(h, 'bf16', { out: view });
    expect(inPlace).to.equal(view);
    expect(Array.from(h.data)).to.deep.equal(Array.from(want.data));
  });

  it('writes into options.out, and refuses a wrong or overlapping one', async () => {
    const src = Tensor.from(new Float32Array([1, 2.5, -3, 65504, 1e9, 5.960464477539063e-8]), [2, 3]);
    const out = Tensor.zeros([2, 3], 'f16');
    expect(await cast(src, 'f16', { out })).to.equal(out);
    expect(Array.from(out.data)).to.deep.equal([0x3c00, 0x4100, 0xc200, 0x7bff, 0x7c00, 0x0001]);
    expect(thrown(() => castSync(src, 'f16', { out: Tensor.zeros([3, 2], 'f16') })).code).to.equal('ERR_SHAPE');
    expect(thrown(() => castSync(src, 'f16', { out: Tensor.zeros([2, 3], 'bf16') })).code).to.equal('ERR_DTYPE');
    const buf = new Uint16Array(12);
    const wide = Tensor.from(new Float32Array(buf.buffer, 0, 6), [6]);
    const e = thrown(() => castSync(wide, 'f16', { out: Tensor.from(buf.subarray(2, 8), [6], 'f16') }));
    expect(e.code).to.equal('ERR_VALUE');
    expect(e.message).to.match(/^castSync: .*overlaps/);
  });

  it('errors name the operation and the argument', async () => {
    const i8 = Tensor.from(new Int8Array(4), [4]);
    expect((await rejected(cast(i8, 'f16'))).message).to.match(/^cast: tensor has dtype i8/);
    expect(thrown(() => castSync(Tensor.from(new Float32Array(2), [2]), 'i8' as FloatDType)).code).to.equal('ERR_DTYPE');
    expect(thrown(() => castSync(Tensor.from(new Float32Array(2), [2]), 'f16', { kernel: 'cuda' })).code).to.equal('ERR_UNSUPPORTED');
    expect(thrown(() => castSync(Tensor.from(new Float32Array(2), [2]), 'f16', { threads: 0 })).code).to.equal('ERR_VALUE');
    expect(thrown(() => castSync(Tensor.from(new Float32Array(2), [2]), 'f16', { nope: 1 } as object)).message).to.match(/unknown option "nope"/);
  });
});
