// SIMD twins of ref::error_row (quantization_error's sums, quant_math.h's
// lane order), plain (against a dequantized row) and with the row's
// dequantization fused in, for Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K and
// INT8/INT4 groups of a multiple of 8: those values are made in registers
// the way the AVX2 dequantize_*_row (and the reference unblocking) make
// them, so the row never goes through memory.
//
// The 8 lanes live in an accumulator policy A:
//   A::Acc                      the lanes' sums and largest |x - y|
//   A::zero()                   empty lanes
//   A::add8(acc, x, y)          elements j..j+7 of a row (j % 8 == 0) in lanes 0..7
//   A::x_finite(acc)            every sx lane finite
//   A::store(acc, ErrorLanes*)  the lanes and max_abs, for the scalar tail and fold
// quant_avx2.cc gives two vectors of 4 doubles, quant_avx512.cc one of 8.
// Everything here has internal linkage, so each of those files gets its own
// copy compiled for its instruction set. quant_avx2.cc uses the plain loop
// only (see its error_deq_row_fn).
//
// Each row is first summed without the non-finite mask: a non-finite x
// makes x*x, hence its sx lane, infinite or NaN for good, while finite
// floats' squares (< 2^256 each) cannot overflow the double sum. So
// all-finite sx lanes prove every x was finite and the unmasked sums are the
// masked ones; otherwise the row is summed again with non-finite originals
// as 0 (load_f32 with NonFinite::Zero).
#pragma once
#include <immintrin.h>

#include <cstring>

#include "quant_kernels.h"
#include "quant_kmath.h"
#include "quant_math.h"

namespace st {
namespace {
namespace es {

template <DType T> inline __m256 load8(const void* p, int64_t i);
template <> inline __m256 load8<DType::F32>(const void* p, int64_t i) {
  return _mm256_loadu_ps(static_cast<const float*>(p) + i);
}
template <> inline __m256 load8<DType::F16>(const void* p, int64_t i) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i)));
}
template <> inline __m256 load8<DType::BF16>(const void* p, int64_t i) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// The stored codes of values j..j+7 (j % 8 == 0) of an INT8 (bits 8) or
// INT4 row, as 32-bit integers (the AVX2 dequantize_int_row's unpacking too).
inline __m256i int_codes8(const uint8_t* in, int64_t j, int bits) {
  if (bits == 8) return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + j)));
  uint32_t word;
  std::memcpy(&word, in + j / 2, 4);
  return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int32_t>(word)), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)),
                          _mm256_set1_epi32(0x0f));
}

// Eight originals, non-finite ones as 0 when Masked.
template <DType T, bool Masked>
inline __m256 orig8(const void* p, int64_t i) {
  const __m256 x = load8<T>(p, i);
  if (!Masked) return x;
  const __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
  return _mm256_and_ps(x, _mm256_cmp_ps(ax, _mm256_set1_ps(__builtin_inff()), _CMP_LT_OQ));
}

// The lanes folded as quant_math.h specifies, after the tail (n % 8 values
// from element j8 of the row, in lanes 0..) added the reference's way.
template <class A, DType T>
void finish(const typename A::Acc& a, const void* orig, int64_t offset, const float* deq, int64_t j8, int64_t n,
            ErrorStats* s) {
  qm::ErrorLanes l;
  A::store(a, &l);
  for (int64_t j = j8, k = 0; j < n; ++j, ++k) {
    float x;
    if (T == DType::F32) x = static_cast<const float*>(orig)[offset + j];
    else if (T == DType::F16) x = f16_to_f32(static_cast<const uint16_t*>(orig)[offset + j]);
    else x = bf16_to_f32(static_cast<const uint16_t*>(orig)[offset + j]);
    if (!is_finite_bits(f32_bits(x))) x = 0.0f;
    qm::error_lane_add(&l, static_cast<int>(k), x, deq[j]);
  }
  s->sum_sq_err = qm::error_fold8(l.se);
  s->sum_sq_ref = qm::error_fold8(l.sx);
  s->sum_sq_deq = qm::error_fold8(l.sy);
  s->dot = qm::error_fold8(l.dot);
  s->max_abs = l.max_abs;
}

// ---- against a dequantized row: n8 values (a multiple of 8)

template <class A, DType T, bool Masked>
typename A::Acc lanes_plain(const void* orig, int64_t offset, const float* deq, int64_t n8) {
  typename A::Acc a = A::zero();
  for (int64_t j = 0; j < n8; j += 8) A::add8(a, orig8<T, Masked>(orig, offset + j), _mm256_loadu_ps(deq + j));
  return a;
}

template <class A, DType T>
void row_plain(const void* orig, DType, int64_t offset, const float* deq, int64_t n, ErrorStats* s) {
  const int64_t n8 = n - n % 8;
  typename A::Acc a = lanes_plain<A, T, false>(orig, offset, deq, n8);
  if (!A::x_finite(a)) a = lanes_plain<A, T, true>(orig, offset, deq, n8);
  finish<A, T>(a, orig, offset, deq, n8, n, s);
}

template <class A>
void row_plain_any(const void* orig, DType t, int64_t offset, const float* deq, int64_t n, ErrorStats* s) {
  switch (t) {
    case DType::F16: row_plain<A, DType::F16>(orig, t, offset, deq, n, s); return;
    case DType::BF16: row_plain<A, DType::BF16>(orig, t, offset, deq, n, s); return;
    default: row_plain<A, DType::F32>(orig, t, offset, deq, n, s); return;
  }
}

// ---- fused: the row's blocks or groups dequantized in registers

// Q8_0: x = q * d. Q4_0 / Q4_1: element j < 16 the low nibble of qs[j],
// j >= 16 the high nibble of qs[j - 16]; Q4_0: x = (q - 8) * d, Q4_1:
// x = q * d + m (qm::q8_0_unblock / q4_0_unblock / q4_1_unblock).
template <class A, DType T, QFormat F, bool Masked>
typename A::Acc lanes_ggml(const void* orig, int64_t offset, const uint8_t* in, int64_t nb) {
  constexpr int kBytes = F == QFormat::Q8_0 ? 34 : F == QFormat::Q4_0 ? 18 : 20;
  constexpr int kCodes = F == QFormat::Q4_1 ? 4 : 2;  // the codes' offset in the block
  typename A::Acc a = A::zero();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = in + b * kBytes;
    const __m256 d = _mm256_set1_ps(f16_to_f32(qm::load_u16(blk)));
    const __m256 m = _mm256_set1_ps(F == QFormat::Q4_1 ? f16_to_f32(qm::load_u16(blk + 2)) : 0.0f);
    const int64_t o = offset + b * qm::QK;
    for (int k = 0; k < 4; ++k) {
      __m256i q;
      if (F == QFormat::Q8_0) {
        q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + kCodes + 8 * k)));
      } else {
        const __m256i u = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + kCodes + 8 * (k & 1))));
        q = _mm256_and_si256(k < 2 ? u : _mm256_srli_epi32(u, 4), _mm256_set1_epi32(0x0f));
        if (F == QFormat::Q4_0) q = _mm256_sub_epi32(q, _mm256_set1_epi32(8));
      }
      __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(q), d);
      if (F == QFormat::Q4_1) y = _mm256_add_ps(y, m);
      A::add8(a, orig8<T, Masked>(orig, o + 8 * k), y);
    }
  }
  return a;
}

// Q4_K / Q5_K super-blocks of 256: sub-block j of 32 values has
// dl = d * sc_j, ml = dmin * m_j (qk::q45_k_sub) and x = dl * q - ml
// (qk::q45_k_unblock).
template <class A, DType T, QFormat F, bool Masked>
typename A::Acc lanes_k45(const void* orig, int64_t offset, const uint8_t* in, int64_t nb) {
  constexpr bool kFive = F == QFormat::Q5_K;
  constexpr int kBytes = kFive ? 176 : 144;
  typename A::Acc a = A::zero();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* y = in + b * kBytes;
    const uint8_t* qs = y + (kFive ? 48 : 16);
    const float d = f16_to_f32(qm::load_u16(y)), dmin = f16_to_f32(qm::load_u16(y + 2));
    const int64_t o = offset + b * qk::QK_K;
    for (int j = 0; j < 8; ++j) {
      int sc, mc;
      qk::scale_min_k4(j, y + 4, &sc, &mc);
      const __m256 dl = _mm256_set1_ps(d * static_cast<float>(sc)), ml = _mm256_set1_ps(dmin * static_cast<float>(mc));
      for (int i = 32 * j; i < 32 * j + 32; i += 8) {
        const __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs + 32 * (i / 64) + i % 32)));
        __m256i q = _mm256_and_si256(_mm256_srli_epi32(bytes, 4 * ((i / 32) & 1)), _mm256_set1_epi32(0x0f));
        if (kFive) {
          const __m256i hb = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(y + 16 + i % 32)));
          q = _mm256_or_si256(q, _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(hb, i / 32), _mm256_set1_epi32(1)), 4));
        }
        A::add8(a, orig8<T, Masked>(orig, o + i), _mm256_sub_ps(_mm256_mul_ps(dl, _mm256_cvtepi32_ps(q)), ml));
      }
    }
  }
  return a;
}

// Q6_K super-blocks of 256 (210 bytes): sixteen sub-blocks of 16 with
// dl = qk::q6_k_sub, x = dl * (q - 32), q's low nibble and top two bits
// where the AVX2 dequantize_kquant_row (and qk's unblocking) take them.
template <class A, DType T, bool Masked>
typename A::Acc lanes_q6k(const void* orig, int64_t offset, const uint8_t* in, int64_t nb) {
  typename A::Acc a = A::zero();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* y = in + b * 210;
    const int64_t o = offset + b * qk::QK_K;
    const float d = f16_to_f32(qm::load_u16(y + 208));  // qk::q6_k_sub's, converted once
    for (int j = 0; j < 16; ++j) {
      const __m256 dl = _mm256_set1_ps(d * static_cast<float>(static_cast<int8_t>(y[192 + j])));
      for (int i = 16 * j; i < 16 * j + 16; i += 8) {
        const int h = i / 128, k = (i % 128) / 32, l = i % 32;
        const __m256i lb = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(y + 64 * h + 32 * (k & 1) + l)));
        const __m256i hb = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(y + 128 + 32 * h + l)));
        const __m256i low = _mm256_and_si256(_mm256_srli_epi32(lb, 4 * (k >> 1)), _mm256_set1_epi32(0x0f));
        const __m256i high = _mm256_and_si256(_mm256_srli_epi32(hb, 2 * k), _mm256_set1_epi32(3));
        const __m256i q = _mm256_sub_epi32(_mm256_or_si256(low, _mm256_slli_epi32(high, 4)), _mm256_set1_epi32(32));
        A::add8(a, orig8<T, Masked>(orig, o + i), _mm256_mul_ps(dl, _mm256_cvtepi32_ps(q)));
      }
    }
  }
  return a;
}

// INT8 / INT4 groups (a multiple of 8 values): x = (u - 2^(bits-1) - z) * s
// with u the stored code (ref::dequantize_row).
template <class A, DType T, int Bits, bool Masked>
typename A::Acc lanes_int(const void* orig, int64_t offset, const DequantizeArgs& q, int64_t row, const uint8_t* in) {
  const int64_t ng = q.cols / q.group;
  typename A::Acc a = A::zero();
  for (int64_t gi = 0; gi < ng; ++gi) {
    const __m256 sc = _mm256_set1_ps(qm::load_scale(q.scales, row * ng + gi, q.scale_dtype));
    const __m256i off = _mm256_set1_epi32((1 << (Bits - 1)) + (q.zeros ? q.zeros[row * ng + gi] : 0));
    for (int64_t j = gi * q.group; j < (gi + 1) * q.group; j += 8) {
      const __m256i u = int_codes8(in, j, Bits);
      A::add8(a, orig8<T, Masked>(orig, offset + j), _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(u, off)), sc));
    }
  }
  return a;
}

// One format's lanes, masked or not (rows hold whole blocks / groups of 8k,
// so there is no tail).
template <class A, DType T, QFormat F, bool Masked>
typename A::Acc lanes_fused(const MatrixView& orig, const DequantizeArgs& q, int64_t row) {
  const int64_t offset = row * q.cols;
  const uint8_t* in = q.data + row * quant_sizes(q.format, q.cols, q.group).data_row_bytes;
  if (F == QFormat::Q8_0 || F == QFormat::Q4_0 || F == QFormat::Q4_1) {
    return lanes_ggml<A, T, F, Masked>(orig.data, offset, in, q.cols / qm::QK);
  }
  if (F == QFormat::Q4_K || F == QFormat::Q5_K) return lanes_k45<A, T, F, Masked>(orig.data, offset, in, q.cols / qk::QK_K);
  if (F == QFormat::Q6_K) return lanes_q6k<A, T, Masked>(orig.data, offset, in, q.cols / qk::QK_K);
  return lanes_int<A, T, F == QFormat::Int8 ? 8 : 4, Masked>(orig.data, offset, q, row, in);
}

template <class A, DType T, QFormat F>
void row_fused(const MatrixView& orig, const DequantizeArgs& q, int64_t row, ErrorStats* s) {
  typename A::Acc a = lanes_fused<A, T, F, false>(orig, q, row);
  if (!A::x_finite(a)) a = lanes_fused<A, T, F, true>(orig, q, row);
  finish<A, T>(a, orig.data, row * q.cols, nullptr, q.cols, q.cols, s);
}

template <class A, QFormat F>
ErrorDeqRowFn fused_for(DType t) {
  if (t == DType::F16) return row_fused<A, DType::F16, F>;
  if (t == DType::BF16) return row_fused<A, DType::BF16, F>;
  return row_fused<A, DType::F32, F>;
}

template <class A>
ErrorDeqRowFn fused_fn(const DequantizeArgs& q, DType orig) {
  switch (q.format) {
    case QFormat::Q8_0: return fused_for<A, QFormat::Q8_0>(orig);
    case QFormat::Q4_0: return fused_for<A, QFormat::Q4_0>(orig);
    case QFormat::Q4_1: return fused_for<A, QFormat::Q4_1>(orig);
    case QFormat::Q4_K: return fused_for<A, QFormat::Q4_K>(orig);
    case QFormat::Q5_K: return fused_for<A, QFormat::Q5_K>(orig);
    case QFormat::Q6_K: return fused_for<A, QFormat::Q6_K>(orig);
    case QFormat::Int8: return q.group % 8 == 0 ? fused_for<A, QFormat::Int8>(orig) : nullptr;
    case QFormat::Int4: return q.group % 8 == 0 ? fused_for<A, QFormat::Int4>(orig) : nullptr;
    default: return nullptr;
  }
}

}  // namespace es
}  // namespace
}  // namespace st
