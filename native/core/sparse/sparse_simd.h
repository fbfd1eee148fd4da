// The spmm24 loops shared by the sparse room's SIMD translation units
// (sparse_avx2.cc, sparse_avx512.cc) and by nothing else. Everything is in
// an anonymous namespace (internal linkage): each SIMD file gets its own copy
// compiled with its own flags, and no copy can leak into baseline code.
// Include only where __AVX2__, __FMA__ and __F16C__ are defined.
//
// One fma chain per output element over the row's kept values in column
// order, as ref::spmm24_rows, with rows in lanes: 8 rows per ymm. The kept
// values 8w..8w+7 of every row lie in the same 4 column groups, so a 128-bit
// broadcast of X's group and vpermilps with each row's 2-bit index (straight
// from the meta word) gives every lane its X value: no gather. Columns of X
// go 8 at a time.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "sparse_kernels.h"

namespace st {
namespace {
namespace simd {

// 8 consecutive values from element i as f32 (exact conversions).
template <DType T>
inline __m256 load8(const void* base, int64_t i) {
  if (T == DType::F32) return _mm256_loadu_ps(static_cast<const float*>(base) + i);
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + i));
  if (T == DType::F16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// In-register transpose: r[q] lane t becomes r[t] lane q.
inline void transpose8(__m256 r[8]) {
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

// Software prefetch for the row streams of a block (values and meta, 16
// or 32 of them: more than the hardware prefetchers follow well): each row's
// values a little ahead, once per cache line, and its meta once per line.
constexpr int64_t kPrefetchBytes = 1536;
inline void prefetch_rows(const char* const* vrow, const uint8_t* const* mrow, int rows, int64_t w, int esize) {
  const int64_t off = 8 * w * esize;  // bytes of values before word w
  if (kPrefetchBytes > 0 && (off & 63) == 0) {
    for (int r = 0; r < rows; ++r) _mm_prefetch(vrow[r] + off + kPrefetchBytes, _MM_HINT_T0);
  }
  if (((2 * w) & 63) == 0 && mrow) {
    for (int r = 0; r < rows; ++r) _mm_prefetch(reinterpret_cast<const char*>(mrow[r]) + 2 * w + 64, _MM_HINT_T0);
  }
}

inline uint32_t u16_at(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

inline uint32_t u32_at(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// The meta nibble of group g of a row.
inline uint32_t nibble(const uint8_t* mrow, int64_t g) { return (mrow[g >> 1] >> (4 * (g & 1))) & 15u; }

// Continues the chains of Y(i, j0..j0+J) over groups [g0, groups) one
// element at a time (the same fma chain).
template <DType T>
inline void finish_row(const Spmm24Plan& p, int64_t i, int64_t g0, int64_t j0, int J) {
  constexpr int esize = T == DType::F32 ? 4 : 2;
  const int64_t groups = p.cols / 4;
  const void* vrow = static_cast<const char*>(p.values) + i * (p.cols / 2) * esize;
  const uint8_t* mrow = p.meta + i * p.meta_row_bytes;
  for (int j = 0; j < J; ++j) {
    const float* x = p.xt + (j0 + j) * p.cols;
    float a = p.y[i * p.n + j0 + j];
    for (int64_t g = g0; g < groups; ++g) {
      const uint32_t code = nibble(mrow, g);
      const float v0 = sm::raw_to_f32(sm::load_raw(vrow, esize, 2 * g), T);
      const float v1 = sm::raw_to_f32(sm::load_raw(vrow, esize, 2 * g + 1), T);
      a = __builtin_fmaf(v0, x[4 * g + (code & 3u)], a);
      a = __builtin_fmaf(v1, x[4 * g + (code >> 2)], a);
    }
    p.y[i * p.n + j0 + j] = a;
  }
}

// ---- rows in lanes -------------------------------------------------------------

// Rows i0..i0+nr-1 (nr <= 8) and columns j0..j0+J-1 (J <= 8) of Y; X from
// p.xt. Up to 3 columns everything stays in registers; from 4 on the
// transposed values and the index vectors go through an aligned stack
// buffer (memory operands of the fma and vpermilps), so the J accumulators
// keep their registers.
template <int J, DType T>
void rows8(const Spmm24Plan& p, int64_t i0, int nr, int64_t j0) {
  constexpr int esize = T == DType::F32 ? 4 : 2;
  constexpr bool kBuffered = J >= 4;
  const int64_t half = p.cols / 2, groups = p.cols / 4, words = groups / 4;
  const char* vrow[8];
  const uint8_t* mrow[8];
  for (int r = 0; r < 8; ++r) {
    const int64_t i = i0 + (r < nr ? r : nr - 1);  // missing lanes repeat the last row; never stored
    vrow[r] = static_cast<const char*>(p.values) + i * half * esize;
    mrow[r] = p.meta + i * p.meta_row_bytes;
  }
  const float* x[J];
  for (int j = 0; j < J; ++j) x[j] = p.xt + (j0 + j) * p.cols;
  alignas(32) float tmp[8];
  alignas(32) float vbuf[8][8];
  alignas(32) int32_t ibuf[8][8];
  __m256 acc[J];
  for (int j = 0; j < J; ++j) {
    if (p.accumulate) {
      for (int r = 0; r < 8; ++r) tmp[r] = r < nr ? p.y[(i0 + r) * p.n + j0 + j] : 0.0f;
      acc[j] = _mm256_load_ps(tmp);
    } else {
      acc[j] = _mm256_setzero_ps();
    }
  }
  for (int64_t w = 0; w < words; ++w) {
    prefetch_rows(vrow, mrow, 8, w, esize);
    __m256 v[8];
    for (int r = 0; r < 8; ++r) v[r] = load8<T>(vrow[r], 8 * w);
    transpose8(v);  // v[q] lane r: kept value 8w+q of row r
    const __m256i mv = _mm256_setr_epi32(static_cast<int>(u16_at(mrow[0] + 2 * w)), static_cast<int>(u16_at(mrow[1] + 2 * w)),
                                         static_cast<int>(u16_at(mrow[2] + 2 * w)), static_cast<int>(u16_at(mrow[3] + 2 * w)),
                                         static_cast<int>(u16_at(mrow[4] + 2 * w)), static_cast<int>(u16_at(mrow[5] + 2 * w)),
                                         static_cast<int>(u16_at(mrow[6] + 2 * w)), static_cast<int>(u16_at(mrow[7] + 2 * w)));
    if (!kBuffered) {
      for (int g = 0; g < 4; ++g) {
        // vpermilps reads the low 2 bits of each lane: idx0 and idx1 of group 4w+g.
        const __m256i idx0 = _mm256_srli_epi32(mv, 4 * g), idx1 = _mm256_srli_epi32(mv, 4 * g + 2);
        const int64_t col = 4 * (4 * w + g);
        for (int j = 0; j < J; ++j) {
          const __m256 xg = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(x[j] + col));
          acc[j] = _mm256_fmadd_ps(v[2 * g], _mm256_permutevar_ps(xg, idx0), acc[j]);
          acc[j] = _mm256_fmadd_ps(v[2 * g + 1], _mm256_permutevar_ps(xg, idx1), acc[j]);
        }
      }
    } else {
      for (int q = 0; q < 8; ++q) {
        _mm256_store_ps(vbuf[q], v[q]);
        _mm256_store_si256(reinterpret_cast<__m256i*>(ibuf[q]), _mm256_srli_epi32(mv, 2 * q));
      }
      for (int g = 0; g < 4; ++g) {
        const int64_t col = 4 * (4 * w + g);
        const int q0 = 2 * g, q1 = 2 * g + 1;
        for (int j = 0; j < J; ++j) {
          const __m256 xg = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(x[j] + col));
          acc[j] = _mm256_fmadd_ps(_mm256_load_ps(vbuf[q0]), _mm256_permutevar_ps(xg, _mm256_load_si256(reinterpret_cast<const __m256i*>(ibuf[q0]))), acc[j]);
          acc[j] = _mm256_fmadd_ps(_mm256_load_ps(vbuf[q1]), _mm256_permutevar_ps(xg, _mm256_load_si256(reinterpret_cast<const __m256i*>(ibuf[q1]))), acc[j]);
        }
      }
    }
  }
  for (int j = 0; j < J; ++j) {
    _mm256_store_ps(tmp, acc[j]);
    for (int r = 0; r < nr; ++r) p.y[(i0 + r) * p.n + j0 + j] = tmp[r];
  }
  if (words * 4 < groups) {
    for (int r = 0; r < nr; ++r) finish_row<T>(p, i0 + r, words * 4, j0, J);
  }
}

}  // namespace simd
}  // namespace
}  // namespace st
