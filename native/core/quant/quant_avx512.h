// AVX-512 code of the quant room (quant_avx512.cc), called by the AVX2
// kernels when the CPU has AVX-512 (cpu_enabled().avx512) and the kernel is
// 'auto' or 'avx512': the legacy GGUF batches, ggml's searches, the error
// sums, and the inner loops of the MSE search. Each of the last scores
// up to 8 candidates of one batch: for candidate k (k < m) it accumulates the
// weighted sums over the group's n floats (n a multiple of 8) in the
// reference's 16-lane order (quant_search.h) and stores them folded to 8
// lanes in out[k]; out[k] is zero for k >= m. w may be null (unit weights).
#pragma once
#include <immintrin.h>

#include "quant_kernels.h"

namespace st {
namespace avx512 {

// The K-quants, Q5_0/Q5_1 and llama.cpp's importance-weighted quantizers
// with 16 lanes (quant_ksimd.h), for the arguments ks::handles accepts;
// null when this binary was built without the AVX-512 file's flags.
QuantRowFn ggml_search_row_fn(const QuantizeArgs& a);

// False when this binary was built without the AVX-512 file's flags.
bool compiled();

// Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 without search or importance, eight
// blocks at a time: quantizes the 256 values of dtype t from element `off`
// of src into the 8 blocks at y, bit for bit as the reference (and
// quant_avx2.cc's batches) do. Returns
// false, having written nothing, when a block holds NaN/Inf or (Q8_0) a
// block's 1/d overflows: the caller takes those blocks one by one. Null for
// other formats and dtypes, or when built without the AVX-512 flags.
using GgmlBatchFn = bool (*)(const void* src, int64_t off, uint8_t* y);
GgmlBatchFn ggml_batch_fn(QFormat f, DType t);

// The error sums (quant_kernels.h's ErrorRowFn) with the reference's 8 lanes
// in one zmm of doubles; null when built without the AVX-512 file's flags.
ErrorRowFn error_row_fn();
// The same with the dequantization of `q` fused in, for Q8_0, Q4_0, Q4_1,
// Q4_K, Q5_K, Q6_K, and INT8 / INT4 with groups of a multiple of 8
// (originals of dtype `orig`); null for the other formats or such a build.
ErrorDeqRowFn error_deq_row_fn(const DequantizeArgs& q, DType orig);

// a = Σ w·q·x, b = Σ w·q² with q = clamp(round(x·inv[k]), qmin, qmax).
void sym_sums8(const float* x, const float* w, int n, const float* inv, int m, float qmin, float qmax, __m256* a,
               __m256* b);
// a = Σ w·d·x, b = Σ w·d² with d = clamp(round(x·inv[k]) + z[k], qmin, qmax) − z[k].
void asym_sums8(const float* x, const float* w, int n, const float* inv, const float* z, int m, float qmin,
                float qmax, __m256* a, __m256* b);
// Q41 over 32 values: sq = Σ w·q, sqq = Σ w·q², sxq = Σ w·q·x with q = clamp(round((x − mn)·inv[k]), 0, 15).
void q4_1_sums8(const float* x, const float* w, float mn, const float* inv, int m, __m256* sq, __m256* sqq,
                __m256* sxq);

}  // namespace avx512
}  // namespace st
