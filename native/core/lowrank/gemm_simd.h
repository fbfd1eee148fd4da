// Helpers shared by the SIMD translation units of the GEMM (gemm_avx2.cc,
// gemm_avx512.cc) and by nothing else: 8-float loads with the f16/bf16
// conversion fused in, the 8x8 transpose, and the two packing routines.
// Everything is static (internal linkage): each SIMD file gets its own copy
// compiled with its own flags, and no copy can leak into baseline code.
// Include only where __AVX2__, __FMA__ and __F16C__ are defined.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "../numeric.h"
#include "gemm_kernels.h"

namespace st {
namespace gemmk {
namespace simd {

static inline float load1(const void* data, DType t, int64_t i) {
  if (t == DType::F32) return static_cast<const float*>(data)[i];
  const uint16_t h = static_cast<const uint16_t*>(data)[i];
  return t == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

// 8 consecutive values from element i, as f32 (exact conversions).
static inline __m256 load8(const void* data, DType t, int64_t i) {
  if (t == DType::F32) return _mm256_loadu_ps(static_cast<const float*>(data) + i);
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(data) + i));
  if (t == DType::F16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// n (< 8) consecutive values from element i, zeros after them; never reads
// past element i + n - 1.
static inline __m256 load8_partial(const void* data, DType t, int64_t i, int n) {
  alignas(32) float tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int q = 0; q < n; ++q) tmp[q] = load1(data, t, i + q);
  return _mm256_load_ps(tmp);
}

// Lanes [0, n) set: for maskload / maskstore.
static inline __m256i lane_mask(int n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

static inline void store8_partial(float* dst, __m256 v, int n) {
  if (n >= 8) _mm256_storeu_ps(dst, v);
  else if (n > 0) _mm256_maskstore_ps(dst, lane_mask(n), v);
}

// In-register transpose: r[q] (lane t) becomes r[t] (lane q).
static inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// Loads specialised by dtype (the packing loops dispatch once per call).
template <DType T>
static inline __m256 load8_t(const void* data, int64_t i) {
  if (T == DType::F32) return _mm256_loadu_ps(static_cast<const float*>(data) + i);
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(data) + i));
  if (T == DType::F16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

template <DType T>
static void pack_copy_t(const Src& s, int64_t r0, int64_t c0, int64_t kc, int wv, int w, float* dst) {
  for (int64_t p = 0; p < kc; ++p) {
    const int64_t row = (r0 + p) * s.ld + c0;
    float* d = dst + p * w;
    for (int t = 0; t < w; t += 8) {
      const int width = w - t >= 8 ? 8 : w - t;
      const int valid = wv - t >= 8 ? 8 : (wv - t > 0 ? wv - t : 0);
      // A full 8-value load also serves a narrower tile (w = 6) when the
      // source row has the values: the extra lanes are not stored.
      const bool whole = valid == 8 || (valid == width && c0 + t + 8 <= s.cols);
      const __m256 v = whole ? load8_t<T>(s.data, row + t)
                             : (valid > 0 ? load8_partial(s.data, T, row + t, valid) : _mm256_setzero_ps());
      if (width == 8) _mm256_storeu_ps(d + t, v);
      else store8_partial(d + t, v, width);
    }
  }
}

template <DType T>
static void pack_transpose_t(const Src& s, int64_t r0, int64_t c0, int64_t kc, int wv, int w, float* dst) {
  const int64_t k8 = kc & ~int64_t{7};
  for (int t = 0; t < w; t += 8) {
    const int rows = wv - t >= 8 ? 8 : (wv - t > 0 ? wv - t : 0);
    const int width = w - t >= 8 ? 8 : w - t;
    const int64_t base = (r0 + t) * s.ld + c0;
    for (int64_t p = 0; p < k8; p += 8) {
      __m256 r[8];
      for (int q = 0; q < 8; ++q) r[q] = q < rows ? load8_t<T>(s.data, base + q * s.ld + p) : _mm256_setzero_ps();
      transpose8(r);
      if (width == 8) {
        for (int q = 0; q < 8; ++q) _mm256_storeu_ps(dst + (p + q) * w + t, r[q]);
      } else {
        for (int q = 0; q < 8; ++q) store8_partial(dst + (p + q) * w + t, r[q], width);
      }
    }
    for (int64_t p = k8; p < kc; ++p) {
      for (int q = 0; q < width; ++q) dst[p * w + t + q] = q < rows ? load1(s.data, T, base + q * s.ld + p) : 0.0f;
    }
  }
}

// dst[p*w + t] = src(r0 + p, c0 + t) for t < wv, 0 for wv <= t < w.
static void pack_copy(const Src& s, int64_t r0, int64_t c0, int64_t kc, int wv, int w, float* dst) {
  switch (s.dtype) {
    case DType::F16: return pack_copy_t<DType::F16>(s, r0, c0, kc, wv, w, dst);
    case DType::BF16: return pack_copy_t<DType::BF16>(s, r0, c0, kc, wv, w, dst);
    default: return pack_copy_t<DType::F32>(s, r0, c0, kc, wv, w, dst);
  }
}

// dst[p*w + t] = src(r0 + t, c0 + p) for t < wv, 0 for wv <= t < w: rows of
// the source become the lanes, through 8x8 transposes.
static void pack_transpose(const Src& s, int64_t r0, int64_t c0, int64_t kc, int wv, int w, float* dst) {
  switch (s.dtype) {
    case DType::F16: return pack_transpose_t<DType::F16>(s, r0, c0, kc, wv, w, dst);
    case DType::BF16: return pack_transpose_t<DType::BF16>(s, r0, c0, kc, wv, w, dst);
    default: return pack_transpose_t<DType::F32>(s, r0, c0, kc, wv, w, dst);
  }
}

}  // namespace simd
}  // namespace gemmk
}  // namespace st
