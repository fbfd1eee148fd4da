import { expect } from 'chai';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, Tensor } from '../lib/index';

describe('Tensor', () => {
  it('wraps a TypedArray without copying', () => {
    const a = new Float32Array(6);
    const t = Tensor.from(a, [2, 3]);
    a[4] = 42;
    expect(t.data).to.equal(a);
    expect(t.data[4]).to.equal(42);
    expect(t.dtype).to.equal('f32');
    expect(t.shape).to.deep.equal([2, 3]);
    expect(t.size).to.equal(6);
    expect(t.matrixShape()).to.deep.equal([2, 3]);
  });

  it('infers dtypes, and needs one for Uint16Array', () => {
    expect(Tensor.from(new Int8Array(2), [2]).dtype).to.equal('i8');
    expect(Tensor.from(new Uint8Array(2), [2]).dtype).to.equal('u8');
    expect(Tensor.from(new Int32Array(2), [2]).dtype).to.equal('i32');
    expect(Tensor.from(new BigInt64Array(2), [2]).dtype).to.equal('i64');
    expect(Tensor.from(new Uint16Array(2), [2], 'bf16').dtype).to.equal('bf16');
    expect(() => Tensor.from(new Uint16Array(2), [2])).to.throw(/pass 'f16' or 'bf16'/).with.property('code', 'ERR_DTYPE');
    expect(() => Tensor.from(new Float32Array(2), [2], 'f8' as never)).to.throw(/unknown dtype/).with.property('code', 'ERR_DTYPE');
  });

  it('reinterprets Buffer bytes in place when aligned', () => {
    const buf = Buffer.alloc(16);
    const t = Tensor.from(buf, [4], 'f32');
    (t.data as Float32Array)[1] = 1;
    expect(buf.readFloatLE(4)).to.equal(1);
    const odd = new Uint8Array(new ArrayBuffer(17), 1, 16);
    expect(() => Tensor.from(odd, [4], 'f32')).to.throw(/not aligned/).with.property('code', 'ERR_VALUE');
  });

  it('rejects shapes that do not match the data', () => {
    expect(() => Tensor.from(new Float32Array(6), [4, 2])).to.throw(/needs 8 elements of f32, the array holds 6/).with.property('code', 'ERR_SHAPE');
    expect(() => Tensor.from(new Float32Array(6), [-1, 6])).to.throw(/shape\[0\] must be a non-negative integer/).with.property('code', 'ERR_SHAPE');
    expect(() => Tensor.from(new Float32Array(6), [2.5, 2])).to.throw().with.property('code', 'ERR_SHAPE');
  });

  it('rejects resizable and growable buffers up front', () => {
    const Resizable = ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => ArrayBuffer;
    const rab = new Resizable(16, { maxByteLength: 64 });
    expect(() => Tensor.from(new Float32Array(rab), [4])).to.throw(/resizable/).with.property('code', 'ERR_VALUE');
    const Growable = SharedArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => SharedArrayBuffer;
    const gsab = new Growable(16, { maxByteLength: 64 });
    expect(() => Tensor.from(new Float32Array(gsab), [4])).to.throw(/resizable/).with.property('code', 'ERR_VALUE');
  });

  it('reshapes views of the same memory', () => {
    const t = Tensor.from(new Float32Array(12), [3, 4]);
    const r = t.reshape([2, 2, 3]);
    expect(r.data).to.equal(t.data);
    expect(r.matrixShape()).to.deep.equal([4, 3]);
    expect(() => t.reshape([5])).to.throw().with.property('code', 'ERR_SHAPE');
  });

  it('zeros allocates typed storage', () => {
    const z = Tensor.zeros([2, 3], 'f16');
    expect(z.data).to.be.instanceOf(Uint16Array);
    expect(z.byteLength).to.equal(12);
  });
});

describe('f16/bf16 conversions', () => {
  it('round to nearest even and cover the special values', () => {
    expect(f32ToF16(1)).to.equal(0x3c00);
    expect(f32ToF16(-2)).to.equal(0xc000);
    expect(f32ToF16(65504)).to.equal(0x7bff);
    expect(f32ToF16(65520)).to.equal(0x7c00); // rounds up to infinity
    expect(f32ToF16(-0)).to.equal(0x8000);
    expect(f32ToF16(2 ** -24)).to.equal(1); // smallest subnormal
    expect(f32ToF16(2 ** -25)).to.equal(0); // tie to even: 0
    expect(f32ToF16(3 * 2 ** -25)).to.equal(2); // tie to even: 2
    expect(f32ToF16(1 + 2 ** -11)).to.equal(0x3c00); // tie, even mantissa
    expect(f32ToF16(1 + 3 * 2 ** -11)).to.equal(0x3c02);
    expect(f32ToF16(NaN) & 0x7e00).to.equal(0x7e00);
    expect(f16ToF32(0x7bff)).to.equal(65504);
    expect(f16ToF32(0x0001)).to.equal(2 ** -24);
    expect(f16ToF32(0xfc00)).to.equal(-Infinity);
    expect(f32ToBf16(1 + 2 ** -8)).to.equal(0x3f80); // tie to even
    expect(f32ToBf16(1 + 3 * 2 ** -8)).to.equal(0x3f82);
    expect(bf16ToF32(0xc040)).to.equal(-3);
  });

  it('f16 round trip is exact for every finite half', () => {
    for (let h = 0; h < 0x10000; h++) {
      if ((h & 0x7c00) === 0x7c00) continue;
      expect(f32ToF16(f16ToF32(h))).to.equal(h);
    }
  });
});
