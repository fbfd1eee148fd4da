// Every operation with an `out` option, as one table: how to call it with
// and without `out`, how to make an `out` (filled with a byte pattern, so
// an element the kernel forgot shows up), which buffers a result holds, and
// the bad `out`s each must refuse. test/out.test.ts runs the table in
// process; test/support/out-child.ts runs it under SLIMTENSOR_ASYNC_BUFFERS=copy.
import {
  compress24,
  compress24Sync,
  decompress24,
  decompress24Sync,
  dequantize,
  dequantizeSync,
  distillLoss,
  f32ToF16,
  distillLossSync,
  lowRank,
  lowRankSync,
  matmul,
  matmulSync,
  prune,
  pruneSync,
  pruneUnstructured,
  pruneUnstructuredSync,
  QuantizedTensor,
  quantize,
  quantizeSync,
  Sparse24Tensor,
  spmm24,
  spmm24Sync,
  svd,
  svdSync,
  Tensor,
  type DType,
  type FloatDType,
} from '../../lib/index';
import { Rng } from './random';

type Views = ArrayBufferView[];

export interface BadOut {
  what: string;
  /** Calls the operation (sync) with a bad `out`. */
  call: () => unknown;
  code: string;
  message: RegExp;
}

export interface OutCase {
  name: string;
  /** The operation without `out`, sync: its outputs. */
  plain: () => Views;
  /**
   * Makes an `out` filled with `fill` bytes, runs the operation with it
   * (sync or async), and returns the result's outputs, the `out`'s
   * buffers, and whether the result is (or holds) the `out`.
   */
  withOut: (fill: number, async: boolean) => Promise<{ outputs: Views; buffers: Views; returned: boolean }>;
  bad: BadOut[];
}

/** An uninitialised-looking tensor: every byte `fill`. */
function filled<D extends DType>(shape: readonly number[], dtype: D, fill: number): Tensor<D> {
  const t = Tensor.zeros(shape, dtype);
  new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength).fill(fill);
  return t;
}

function filledArray<A extends Int16Array | Int32Array | Float32Array>(ctor: new (n: number) => A, n: number, fill: number): A {
  const a = new ctor(n);
  new Uint8Array(a.buffer).fill(fill);
  return a;
}

/** A tensor whose memory is `inside`'s (the first bytes): an out that aliases an input. */
function aliasOf<D extends DType>(inside: ArrayBufferView, shape: readonly number[], dtype: D, offsetBytes = 0): Tensor<D> {
  const n = shape.reduce((a, b) => a * b, 1);
  const bytes = Tensor.zeros([n], dtype).byteLength;
  return Tensor.from(new Uint8Array(inside.buffer, inside.byteOffset + offsetBytes, bytes), shape, dtype);
}

function quantizedViews(q: QuantizedTensor): Views {
  return [q.data, ...(q.scales ? [q.scales.data] : []), ...(q.zeros ? [q.zeros.data] : [])];
}

function sparseViews(s: Sparse24Tensor): Views {
  const v = s.values instanceof QuantizedTensor ? quantizedViews(s.values) : [s.values.data];
  return [...v, s.meta as Int16Array, (s.bitmask as Tensor).data];
}

export function outCases(): OutCase[] {
  const rng = new Rng(1307);
  const w = Tensor.from(rng.normals(6 * 64), [6, 64]);
  const wh = Tensor.from(Uint16Array.from(rng.normals(3 * 2 * 32), f32ToF16), [3, 2, 32], 'f16');
  const norms = Float32Array.from({ length: 64 }, (_, i) => 0.5 + (i % 7));
  const cases: OutCase[] = [];

  // prune (f32 with Wanda scores, and f16 1:4 of a 3-D tensor)
  for (const [t, opts] of [
    [w, { pattern: '2:4', score: { activationNorms: norms } }],
    [wh, { pattern: '1:4' }],
  ] as const) {
    const maskShape = [...t.shape.slice(0, -1), t.shape[t.shape.length - 1]! / 8];
    const dtype = t.dtype as FloatDType;
    cases.push({
      name: `prune ${opts.pattern} ${t.dtype}`,
      plain: () => {
        const r = pruneSync(t, opts);
        return [r.tensor.data, r.mask.data];
      },
      withOut: async (fill, async) => {
        const out = { tensor: filled(t.shape, dtype, fill), mask: filled(maskShape, 'u8', fill) };
        const r = async ? await prune(t, { ...opts, out }) : pruneSync(t, { ...opts, out });
        return { outputs: [r.tensor.data, r.mask.data], buffers: [out.tensor.data, out.mask.data], returned: r === out };
      },
      bad: [
        { what: 'a mask of the wrong shape', call: () => pruneSync(t, { ...opts, out: { tensor: filled(t.shape, dtype, 0), mask: filled([1, 8], 'u8', 0) } }), code: 'ERR_SHAPE', message: /options\.out\.mask is \[1, 8\]; this call writes \[/ },
        { what: 'a tensor of another dtype', call: () => pruneSync(t, { ...opts, out: { tensor: filled(t.shape, dtype === 'f32' ? 'bf16' : 'f32', 0), mask: filled(maskShape, 'u8', 0) } }), code: 'ERR_DTYPE', message: /options\.out\.tensor has dtype (bf16|f32); expected (f32|f16)/ },
        { what: 'a missing part', call: () => pruneSync(t, { ...opts, out: { tensor: filled(t.shape, dtype, 0) } as never }), code: 'ERR_VALUE', message: /options\.out\.mask is missing/ },
        { what: 'the input as the out', call: () => pruneSync(t, { ...opts, out: { tensor: t as Tensor<FloatDType>, mask: filled(maskShape, 'u8', 0) } }), code: 'ERR_VALUE', message: /options\.out\.tensor shares memory with the input/ },
        {
          what: 'a mask inside the tensor',
          call: () => {
            const tensor = filled(t.shape, dtype, 0);
            return pruneSync(t, { ...opts, out: { tensor, mask: aliasOf(tensor.data, maskShape, 'u8', 8) } });
          },
          code: 'ERR_VALUE',
          message: /options\.out\.tensor and options\.out\.mask share memory/,
        },
      ],
    });
  }

  // compress24 of a float tensor (fused prune)
  {
    const vShape = [6, 32];
    const outFor = (fill: number, values: Tensor<FloatDType> = filled(vShape, 'f32', fill)): Sparse24Tensor =>
      new Sparse24Tensor({ shape: w.shape, values, meta: filledArray(Int16Array, 6 * 4, fill), bitmask: filled([6, 8], 'u8', fill) });
    cases.push({
      name: 'compress24 prune f32',
      plain: () => sparseViews(compress24Sync(w, { prune: true })),
      withOut: async (fill, async) => {
        const out = outFor(fill);
        const r = async ? await compress24(w, { prune: true, out }) : compress24Sync(w, { prune: true, out });
        return { outputs: sparseViews(r), buffers: sparseViews(out), returned: r === out };
      },
      bad: [
        { what: 'values of another dtype', call: () => compress24Sync(w, { prune: true, out: outFor(0, filled(vShape, 'f16', 0)) }), code: 'ERR_DTYPE', message: /options\.out\.values has dtype f16; expected f32/ },
        { what: 'another shape', call: () => compress24Sync(Tensor.from(w.data, [12, 32]), { prune: true, out: outFor(0) }), code: 'ERR_SHAPE', message: /options\.out is \[6, 64\]; this call writes \[12, 32\]/ },
        { what: 'no bitmask', call: () => compress24Sync(w, { prune: true, out: new Sparse24Tensor({ shape: w.shape, values: filled(vShape, 'f32', 0), meta: new Int16Array(24) }) }), code: 'ERR_VALUE', message: /options\.out has no bitmask/ },
        { what: 'values inside the input', call: () => compress24Sync(w, { prune: true, out: outFor(0, aliasOf(w.data, vShape, 'f32', 4)) }), code: 'ERR_VALUE', message: /options\.out\.values shares memory with the input/ },
      ],
    });
  }

  // compress24 / decompress24 of int4 codes with zero points; the out's
  // scales and zero points are its own (copied) or the input's (kept)
  {
    const q = quantizeSync(pruneSync(w, { pattern: '2:4' }).tensor, { format: 'int4', groupSize: 32, symmetric: false, scaleDtype: 'bf16' });
    const values = (fill: number, shared: boolean): QuantizedTensor =>
      new QuantizedTensor({
        format: 'int4',
        shape: [6, 32],
        data: filledArray(Int32Array, 6 * 4, fill),
        scales: shared ? q.scales : filled([6, 2], 'bf16', fill),
        zeros: shared ? q.zeros : filled([6, 2], 'i8', fill),
        groupSize: 16,
      });
    for (const shared of [false, true]) {
      cases.push({
        name: `compress24 int4 asym (${shared ? "the input's scales" : 'own scales'})`,
        plain: () => sparseViews(compress24Sync(q)),
        withOut: async (fill, async) => {
          const out = new Sparse24Tensor({ shape: q.shape, values: values(fill, shared), meta: filledArray(Int32Array, 6 * 2, fill), bitmask: filled([6, 8], 'u8', fill) });
          const r = async ? await compress24(q, { out }) : compress24Sync(q, { out });
          // The kernel writes codes, meta and bitmask; the scales and zero points were copied (or kept) when the call started.
          return { outputs: sparseViews(r), buffers: [(out.values as QuantizedTensor).data, out.meta as Int32Array, (out.bitmask as Tensor).data], returned: r === out };
        },
        bad: shared
          ? []
          : [
              { what: 'another group size', call: () => compress24Sync(q, { out: new Sparse24Tensor({ shape: q.shape, values: new QuantizedTensor({ format: 'int4', shape: [6, 32], data: new Int32Array(24), scales: filled([6, 1], 'bf16', 0), zeros: filled([6, 1], 'i8', 0), groupSize: 32 }), meta: new Int32Array(12), bitmask: filled([6, 8], 'u8', 0) }) }), code: 'ERR_SHAPE', message: /options\.out\.values is int4 group 32 asymmetric bf16 scales \[6, 32\]; this call writes int4 group 16 asymmetric bf16 scales \[6, 32\]/ },
              { what: 'float values', call: () => compress24Sync(q, { out: new Sparse24Tensor({ shape: q.shape, values: filled([6, 32], 'f32', 0), meta: new Int16Array(24), bitmask: filled([6, 8], 'u8', 0) }) }), code: 'ERR_DTYPE', message: /options\.out holds float values; this call writes quantized ones/ },
              {
                what: 'codes over the input codes',
                call: () => {
                  const v = values(0, false);
                  const over = new QuantizedTensor({ format: 'int4', shape: [6, 32], data: (q.data as Int32Array).subarray(0, 24), scales: v.scales, zeros: v.zeros, groupSize: 16 });
                  return compress24Sync(q, { out: new Sparse24Tensor({ shape: q.shape, values: over, meta: new Int32Array(12), bitmask: filled([6, 8], 'u8', 0) }) });
                },
                code: 'ERR_VALUE',
                message: /options\.out\.values shares memory with the input/,
              },
            ],
      });
    }
    const s = compress24Sync(q);
    cases.push({
      name: 'decompress24 int4 asym',
      plain: () => quantizedViews(decompress24Sync(s) as QuantizedTensor),
      withOut: async (fill, async) => {
        const out = new QuantizedTensor({ format: 'int4', shape: q.shape, data: filledArray(Int32Array, 6 * 8, fill), scales: filled([6, 2], 'bf16', fill), zeros: filled([6, 2], 'i8', fill), groupSize: 32 });
        const r = async ? await decompress24(s, { out }) : decompress24Sync(s, { out });
        return { outputs: quantizedViews(r as QuantizedTensor), buffers: [out.data], returned: r === out };
      },
      bad: [
        { what: 'a symmetric out', call: () => decompress24Sync(s, { out: new QuantizedTensor({ format: 'int4', shape: q.shape, data: new Int32Array(48), scales: filled([6, 2], 'bf16', 0), groupSize: 32 }) }), code: 'ERR_SHAPE', message: /options\.out is int4 group 32 symmetric bf16 scales \[6, 64\]; this call writes int4 group 32 asymmetric/ },
        { what: 'a float out', call: () => decompress24Sync(s, { out: filled(q.shape, 'f32', 0) }), code: 'ERR_VALUE', message: /options\.out must be a QuantizedTensor/ },
      ],
    });
  }

  // decompress24 of float values
  {
    const s = compress24Sync(w, { prune: true });
    cases.push({
      name: 'decompress24 f32',
      plain: () => [(decompress24Sync(s) as Tensor).data],
      withOut: async (fill, async) => {
        const out = filled(w.shape, 'f32', fill);
        const r = async ? await decompress24(s, { out }) : decompress24Sync(s, { out });
        return { outputs: [(r as Tensor).data], buffers: [out.data], returned: r === out };
      },
      bad: [
        { what: 'another dtype', call: () => decompress24Sync(s, { out: filled(w.shape, 'bf16', 0) }), code: 'ERR_DTYPE', message: /options\.out has dtype bf16; expected f32/ },
        { what: 'the values as the out', call: () => decompress24Sync(s, { out: aliasOf((s.values as Tensor).data, [3, 64], 'f32') }), code: 'ERR_SHAPE', message: /options\.out is \[3, 64\]; this call writes \[6, 64\]/ },
        {
          what: 'an out over the meta',
          call: () => {
            const big = new Float32Array(6 * 64);
            const meta = new Int16Array(big.buffer, 64, s.meta!.length);
            meta.set(s.meta as Int16Array);
            return decompress24Sync(new Sparse24Tensor({ shape: s.shape, values: s.values, meta }), { out: Tensor.from(big, [6, 64]) });
          },
          code: 'ERR_VALUE',
          message: /options\.out shares memory with a\.meta/,
        },
      ],
    });
  }

  // pruneUnstructured: one tensor, and two with one global cut
  {
    const w2 = Tensor.from(rng.normals(4 * 16), [4, 16]);
    const outFor = (t: Tensor, fill: number) => ({ tensor: filled(t.shape, t.dtype as FloatDType, fill), mask: filled([t.shape[0]!, t.shape[1]! / 8], 'u8', fill) });
    cases.push({
      name: 'pruneUnstructured layer',
      plain: () => {
        const r = pruneUnstructuredSync(w, { sparsity: 0.6 });
        return [r.tensor.data, r.mask.data, Float64Array.of(r.threshold, r.pruned)];
      },
      withOut: async (fill, async) => {
        const out = outFor(w, fill);
        const r = async ? await pruneUnstructured(w, { sparsity: 0.6, out }) : pruneUnstructuredSync(w, { sparsity: 0.6, out });
        return { outputs: [r.tensor.data, r.mask.data, Float64Array.of(r.threshold, r.pruned)], buffers: [out.tensor.data, out.mask.data], returned: r.tensor === out.tensor && r.mask === out.mask };
      },
      bad: [
        { what: 'an array for one tensor', call: () => pruneUnstructuredSync(w, { sparsity: 0.5, out: [outFor(w, 0)] }), code: 'ERR_VALUE', message: /options\.out must be one \{ tensor, mask \} for one tensor/ },
        { what: 'a tensor of another shape', call: () => pruneUnstructuredSync(w, { sparsity: 0.5, out: outFor(w2, 0) }), code: 'ERR_SHAPE', message: /options\.out\.tensor is \[4, 16\]; this call writes \[6, 64\]/ },
      ],
    });
    cases.push({
      name: 'pruneUnstructured global',
      plain: () => pruneUnstructuredSync([w, w2], { sparsity: 0.3, scope: 'global' }).flatMap((r) => [r.tensor.data, r.mask.data, Float64Array.of(r.threshold, r.pruned)]),
      withOut: async (fill, async) => {
        const out = [outFor(w, fill), outFor(w2, fill)];
        const o = { sparsity: 0.3, scope: 'global' as const, out };
        const r = async ? await pruneUnstructured([w, w2], o) : pruneUnstructuredSync([w, w2], o);
        return {
          outputs: r.flatMap((x) => [x.tensor.data, x.mask.data, Float64Array.of(x.threshold, x.pruned)]),
          buffers: out.flatMap((x) => [x.tensor.data, x.mask.data]),
          returned: r.every((x, i) => x.tensor === out[i]!.tensor && x.mask === out[i]!.mask),
        };
      },
      bad: [
        { what: 'one out for two tensors', call: () => pruneUnstructuredSync([w, w2], { sparsity: 0.5, out: [outFor(w, 0)] }), code: 'ERR_SHAPE', message: /options\.out has 1 entries for 2 tensors/ },
        { what: "an out over the other tensor's input", call: () => pruneUnstructuredSync([w, w2], { sparsity: 0.5, out: [outFor(w, 0), { tensor: aliasOf(w.data, [4, 16], 'f32'), mask: filled([4, 2], 'u8', 0) }] }), code: 'ERR_VALUE', message: /options\.out\[1\]\.tensor shares memory with tensors\[0\]/ },
        {
          what: 'two outs sharing a mask',
          call: () => {
            const a = outFor(w, 0);
            return pruneUnstructuredSync([w, w2], { sparsity: 0.5, out: [a, { tensor: outFor(w2, 0).tensor, mask: aliasOf(a.mask.data, [4, 2], 'u8') }] });
          },
          code: 'ERR_VALUE',
          message: /options\.out\[0\]\.mask and options\.out\[1\]\.mask share memory/,
        },
      ],
    });
  }

  // svd and lowRank (factors written off the main thread into the out)
  {
    const a = Tensor.from(rng.normals(12 * 9), [12, 9]);
    cases.push({
      name: 'svd k=5',
      plain: () => {
        const r = svdSync(a, { k: 5 });
        return [r.u.data, r.s, r.vt.data];
      },
      withOut: async (fill, async) => {
        const out = { u: filled([12, 5], 'f32', fill), vt: filled([5, 9], 'f32', fill) };
        const r = async ? await svd(a, { k: 5, out }) : svdSync(a, { k: 5, out });
        return { outputs: [r.u.data, r.s, r.vt.data], buffers: [out.u.data, out.vt.data], returned: r.u === out.u && r.vt === out.vt };
      },
      bad: [
        { what: 'u for another k', call: () => svdSync(a, { k: 5, out: { u: filled([12, 4], 'f32', 0), vt: filled([5, 9], 'f32', 0) } }), code: 'ERR_SHAPE', message: /options\.out\.u is \[12, 4\]; this call writes \[12, 5\]/ },
        { what: 'vt of f16', call: () => svdSync(a, { k: 5, out: { u: filled([12, 5], 'f32', 0), vt: filled([5, 9], 'f16', 0) as never } }), code: 'ERR_DTYPE', message: /options\.out\.vt has dtype f16; expected f32/ },
      ],
    });
    const scale = Float32Array.from({ length: 9 }, (_, i) => 1 + i / 4);
    // ratio 0.2 of [12, 9]: floor(0.2·108 / 21) = rank 1
    for (const [rule, rank] of [[{ rank: 3 }, 3], [{ ratio: 0.2 }, 1]] as const) {
      const opts = { ...rule, whiten: { activationScale: scale } };
      cases.push({
        name: `lowRank ${JSON.stringify(rule)}`,
        plain: () => {
          const r = lowRankSync(a, opts);
          return [r.left.data, r.right.data, r.singularValues, Float64Array.of(r.rank, r.relError, r.optimalRelError)];
        },
        withOut: async (fill, async) => {
          const out = { left: filled([12, rank], 'f32', fill), right: filled([rank, 9], 'f32', fill) };
          const r = async ? await lowRank(a, { ...opts, out }) : lowRankSync(a, { ...opts, out });
          return { outputs: [r.left.data, r.right.data, r.singularValues, Float64Array.of(r.rank, r.relError, r.optimalRelError)], buffers: [out.left.data, out.right.data], returned: r.left === out.left && r.right === out.right };
        },
        bad: [
          { what: 'left for another rank', call: () => lowRankSync(a, { ...opts, out: { left: filled([12, rank + 1], 'f32', 0), right: filled([rank, 9], 'f32', 0) } }), code: 'ERR_SHAPE', message: new RegExp(`options\\.out\\.left is \\[12, ${rank + 1}\\]; this call writes \\[12, ${rank}\\]`) },
          { what: 'the energy rule', call: () => lowRankSync(a, { energy: 0.9, out: { left: filled([12, rank], 'f32', 0), right: filled([rank, 9], 'f32', 0) } }), code: 'ERR_VALUE', message: /options\.out needs the rank before the factorization/ },
          rank === 1
            ? { what: 'right over the whitening scale', call: () => lowRankSync(a, { ...opts, out: { left: filled([12, 1], 'f32', 0), right: Tensor.from(scale, [1, 9]) } }), code: 'ERR_VALUE', message: /options\.out\.right shares memory with options\.whiten\.activationScale/ }
            : { what: 'left over the input', call: () => lowRankSync(a, { ...opts, out: { left: aliasOf(a.data, [12, rank], 'f32'), right: filled([rank, 9], 'f32', 0) } }), code: 'ERR_VALUE', message: /options\.out\.left shares memory with the input/ },
        ],
      });
    }
  }

  // distillLoss: rowLoss and grad
  {
    const student = Tensor.from(rng.normals(5 * 40), [5, 40]);
    const teacher = Tensor.from(rng.normals(5 * 40), [5, 40]);
    const labels = Int32Array.from([3, 0, -100, 39, 7]);
    const opts = { labels, temperature: 2, alpha: 0.7 };
    cases.push({
      name: 'distillLoss',
      plain: () => {
        const r = distillLossSync(student, teacher, opts);
        return [r.rowLoss, r.grad!.data, Float64Array.of(r.loss)];
      },
      withOut: async (fill, async) => {
        const out = { rowLoss: filledArray(Float32Array, 5, fill), grad: filled([5, 40], 'f32', fill) };
        const r = async ? await distillLoss(student, teacher, { ...opts, out }) : distillLossSync(student, teacher, { ...opts, out });
        return { outputs: [r.rowLoss, r.grad!.data, Float64Array.of(r.loss)], buffers: [out.rowLoss, out.grad.data], returned: r.rowLoss === out.rowLoss && r.grad === out.grad };
      },
      bad: [
        { what: 'rowLoss of the wrong length', call: () => distillLossSync(student, teacher, { ...opts, out: { rowLoss: new Float32Array(4) } }), code: 'ERR_SHAPE', message: /options\.out\.rowLoss has 4 values; the student has 5 rows/ },
        { what: 'grad and out.grad', call: () => distillLossSync(student, teacher, { ...opts, grad: filled([5, 40], 'f32', 0), out: { grad: filled([5, 40], 'f32', 0) } }), code: 'ERR_VALUE', message: /options\.grad and options\.out\.grad both name a gradient buffer/ },
        { what: 'out.grad with grad: false', call: () => distillLossSync(student, teacher, { ...opts, grad: false, out: { grad: filled([5, 40], 'f32', 0) } }), code: 'ERR_VALUE', message: /options\.out\.grad is given but options\.grad is false/ },
        { what: 'rowLoss inside the teacher', call: () => distillLossSync(student, teacher, { ...opts, out: { rowLoss: (teacher.data as Float32Array).subarray(10, 15) } }), code: 'ERR_VALUE', message: /options\.out\.rowLoss shares memory with the teacher/ },
        { what: 'rowLoss inside grad', call: () => { const grad = filled([5, 40], 'f32', 0); return distillLossSync(student, teacher, { ...opts, out: { grad, rowLoss: grad.data.subarray(0, 5) as Float32Array } }); }, code: 'ERR_VALUE', message: /options\.out\.grad and options\.out\.rowLoss share memory/ },
      ],
    });
  }

  // The operations that had `out` before: the same checks now.
  {
    const b = Tensor.from(rng.normals(64 * 3), [64, 3]);
    cases.push({
      name: 'matmul',
      plain: () => [matmulSync(w, b).data],
      withOut: async (fill, async) => {
        const out = filled([6, 3], 'f32', fill);
        const r = async ? await matmul(w, b, { out }) : matmulSync(w, b, { out });
        return { outputs: [r.data], buffers: [out.data], returned: r === out };
      },
      bad: [{ what: 'an out over b', call: () => matmulSync(w, b, { out: aliasOf(b.data, [6, 3], 'f32', 8) }), code: 'ERR_VALUE', message: /options\.out shares memory with b/ }],
    });
    const s = compress24Sync(w, { prune: true });
    const x = Tensor.from(rng.normals(64 * 2), [64, 2]);
    cases.push({
      name: 'spmm24',
      plain: () => [spmm24Sync(s, x).data],
      withOut: async (fill, async) => {
        const out = filled([6, 2], 'f32', fill);
        const r = async ? await spmm24(s, x, { out }) : spmm24Sync(s, x, { out });
        return { outputs: [r.data], buffers: [out.data], returned: r === out };
      },
      bad: [{ what: 'an out over the values', call: () => spmm24Sync(s, x, { out: aliasOf((s.values as Tensor).data, [6, 2], 'f32') }), code: 'ERR_VALUE', message: /options\.out shares memory with a\.values/ }],
    });
    const q = quantizeSync(w, { format: 'int8', groupSize: 32, symmetric: false });
    cases.push({
      name: 'quantize int8 asym',
      plain: () => quantizedViews(quantizeSync(w, { format: 'int8', groupSize: 32, symmetric: false })),
      withOut: async (fill, async) => {
        const out = new QuantizedTensor({ format: 'int8', shape: w.shape, data: filledArray(Int32Array, 6 * 16, fill), scales: filled([6, 2], 'f16', fill), zeros: filled([6, 2], 'i8', fill), groupSize: 32 });
        const o = { format: 'int8' as const, groupSize: 32, symmetric: false, out };
        const r = async ? await quantize(w, o) : quantizeSync(w, o);
        return { outputs: quantizedViews(r), buffers: quantizedViews(out), returned: r === out };
      },
      bad: [
        {
          what: 'scales inside the data',
          call: () => {
            const data = new Int32Array(6 * 16);
            return quantizeSync(w, { format: 'int8', groupSize: 32, symmetric: false, out: new QuantizedTensor({ format: 'int8', shape: w.shape, data, scales: aliasOf(data, [6, 2], 'f16'), zeros: filled([6, 2], 'i8', 0), groupSize: 32 }) });
          },
          code: 'ERR_VALUE',
          message: /options\.out and options\.out\.scales share memory/,
        },
      ],
    });
    cases.push({
      name: 'dequantize',
      plain: () => [dequantizeSync(q, { dtype: 'bf16' }).data],
      withOut: async (fill, async) => {
        const out = filled(w.shape, 'bf16', fill);
        const r = async ? await dequantize(q, { out }) : dequantizeSync(q, { out });
        return { outputs: [r.data], buffers: [out.data], returned: r === out };
      },
      bad: [
        {
          what: 'an out over the scales',
          call: () => {
            const big = new Uint16Array(6 * 64);
            const scales = Tensor.from(new Uint16Array(big.buffer, 32, 12), [6, 2], 'f16');
            scales.data.set(q.scales!.data as Uint16Array);
            const q2 = new QuantizedTensor({ format: 'int8', shape: q.shape, data: q.data, scales, zeros: q.zeros, groupSize: 32 });
            return dequantizeSync(q2, { out: Tensor.from(big, [6, 64], 'bf16') });
          },
          code: 'ERR_VALUE',
          message: /options\.out shares memory with its scales/,
        },
      ],
    });
  }
  return cases;
}
