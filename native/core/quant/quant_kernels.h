// The row-kernel interface shared by the reference, AVX2 and CUDA
// implementations; quant.cc validates, dispatches and threads over rows.
#pragma once
#include <cstdint>

#include "quant.h"

namespace st {

// Quantizes one row. Returns -1, or (with NonFinite::Error) the column of
// the first NaN/Inf, in which case the row's outputs are unspecified.
using QuantRowFn = int64_t (*)(const QuantizeArgs& a, int64_t row);
// Dequantizes one row to f32.
using DequantRowFn = void (*)(const DequantizeArgs& a, int64_t row, float* out);
// The error sums of n values of `orig` (a float dtype, from element `offset`;
// non-finite values count as 0) against `deq`, in the lane order of
// quant_math.h (error_lane_add, error_fold8). Sets every field but count.
using ErrorRowFn = void (*)(const void* orig, DType t, int64_t offset, const float* deq, int64_t n, ErrorStats* s);
// The same for row `row` of `orig` against row `row` of `q`, dequantized on
// the fly: equal to DequantRowFn then ErrorRowFn.
using ErrorDeqRowFn = void (*)(const MatrixView& orig, const DequantizeArgs& q, int64_t row, ErrorStats* s);

namespace ref {
int64_t quantize_row(const QuantizeArgs& a, int64_t row);
void dequantize_row(const DequantizeArgs& a, int64_t row, float* out);
void error_row(const void* orig, DType t, int64_t offset, const float* deq, int64_t n, ErrorStats* s);
}  // namespace ref

namespace avx2 {
// Null when the file was built without AVX2 support.
QuantRowFn quantize_row_fn(const QuantizeArgs& a);
DequantRowFn dequantize_row_fn(const DequantizeArgs& a);
// The AVX-512 twin when `k` allows it (Auto, Avx512) and the CPU has it.
ErrorRowFn error_row_fn(Kernel k);
// A fused ErrorDeqRowFn (AVX-512, when q.kernel allows it) for q's format
// (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K, INT8/INT4 with groups of 8k) and the originals'
// dtype; else null.
ErrorDeqRowFn error_deq_row_fn(const DequantizeArgs& q, DType orig);
}  // namespace avx2

// Reads n values of a float dtype starting at element `offset` as f32.
// Non-finite values: with NonFinite::Zero they become 0; otherwise the
// index (0..n-1) of the first one is returned and the copy stops there.
int64_t load_f32(const void* src, DType t, int64_t offset, int64_t n, float* out, NonFinite mode);

inline const uint8_t* row_ptr(const void* base, int64_t row, int64_t row_bytes) {
  return static_cast<const uint8_t*>(base) + row * row_bytes;
}

}  // namespace st
