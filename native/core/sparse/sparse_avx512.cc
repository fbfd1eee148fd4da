// AVX-512 spmm24, compiled with -mavx512f -mavx512bw -mavx512vl (and the
// AVX2 flags) in its own translation unit: the loop of sparse_simd.h at
// twice the width. 16 rows per zmm: a row's kept values 8w..8w+7 come from
// 8 rows' ymm pairs transposed per 256-bit half; the 16 rows' meta words
// arrive by one gather; a 128-bit broadcast of X's column group and
// vpermilps with each lane's 2-bit index give every row its X value. Same
// fma chains in the same order as the reference: the same bits.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "sparse_kernels.h"

#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__AVX512BW__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include "sparse_simd.h"

namespace st {
namespace avx512 {

namespace {

using simd::load8;

// Within each 256-bit half, r[q] lane t becomes r[t] lane q (two 8×8 transposes).
inline void transpose8x2(__m512 r[8]) {
  const __m512 t0 = _mm512_unpacklo_ps(r[0], r[1]), t1 = _mm512_unpackhi_ps(r[0], r[1]);
  const __m512 t2 = _mm512_unpacklo_ps(r[2], r[3]), t3 = _mm512_unpackhi_ps(r[2], r[3]);
  const __m512 t4 = _mm512_unpacklo_ps(r[4], r[5]), t5 = _mm512_unpackhi_ps(r[4], r[5]);
  const __m512 t6 = _mm512_unpacklo_ps(r[6], r[7]), t7 = _mm512_unpackhi_ps(r[6], r[7]);
  const __m512 u0 = _mm512_shuffle_ps(t0, t2, 0x44), u1 = _mm512_shuffle_ps(t0, t2, 0xee);
  const __m512 u2 = _mm512_shuffle_ps(t1, t3, 0x44), u3 = _mm512_shuffle_ps(t1, t3, 0xee);
  const __m512 u4 = _mm512_shuffle_ps(t4, t6, 0x44), u5 = _mm512_shuffle_ps(t4, t6, 0xee);
  const __m512 u6 = _mm512_shuffle_ps(t5, t7, 0x44), u7 = _mm512_shuffle_ps(t5, t7, 0xee);
  // [a.L0, b.L0, a.L2, b.L2] and [a.L1, b.L1, a.L3, b.L3] (L: 128-bit lanes).
  const __m512i lo = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
  const __m512i hi = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
  r[0] = _mm512_permutex2var_ps(u0, lo, u4);
  r[1] = _mm512_permutex2var_ps(u1, lo, u5);
  r[2] = _mm512_permutex2var_ps(u2, lo, u6);
  r[3] = _mm512_permutex2var_ps(u3, lo, u7);
  r[4] = _mm512_permutex2var_ps(u0, hi, u4);
  r[5] = _mm512_permutex2var_ps(u1, hi, u5);
  r[6] = _mm512_permutex2var_ps(u2, hi, u6);
  r[7] = _mm512_permutex2var_ps(u3, hi, u7);
}

// Rows i0..i0+nr-1 (nr <= 16) and columns j0..j0+J-1 (J <= 8) of Y; X from
// p.xt. From 4 columns on, the transposed values and index vectors go
// through an aligned stack buffer (as simd::rows8).
template <int J, DType T>
void rows16(const Spmm24Plan& p, int64_t i0, int nr, int64_t j0) {
  constexpr int esize = T == DType::F32 ? 4 : 2;
  constexpr bool kBuffered = J >= 4;
  const int64_t half = p.cols / 2, groups = p.cols / 4, words = groups / 4;
  const char* vrow[16];
  alignas(64) int32_t moff[16];
  for (int r = 0; r < 16; ++r) {
    const int64_t rr = r < nr ? r : nr - 1;  // missing lanes repeat the last row; never stored
    vrow[r] = static_cast<const char*>(p.values) + (i0 + rr) * half * esize;
    moff[r] = static_cast<int32_t>(rr * p.meta_row_bytes);
  }
  const uint8_t* meta0 = p.meta + i0 * p.meta_row_bytes;
  const __m512i offs = _mm512_load_si512(moff);
  const float* x[J];
  for (int j = 0; j < J; ++j) x[j] = p.xt + (j0 + j) * p.cols;
  alignas(64) float tmp[16];
  alignas(64) float vbuf[8][16];
  alignas(64) int32_t ibuf[8][16];
  __m512 acc[J];
  for (int j = 0; j < J; ++j) {
    if (p.accumulate) {
      for (int r = 0; r < 16; ++r) tmp[r] = r < nr ? p.y[(i0 + r) * p.n + j0 + j] : 0.0f;
      acc[j] = _mm512_load_ps(tmp);
    } else {
      acc[j] = _mm512_setzero_ps();
    }
  }
  const uint8_t* mrow[16];
  for (int r = 0; r < 16; ++r) mrow[r] = meta0 + moff[r];
  for (int64_t w = 0; w < words; ++w) {
    simd::prefetch_rows(vrow, mrow, 16, w, esize);
    __m512 v[8];
    for (int r = 0; r < 8; ++r) {
      v[r] = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(load8<T>(vrow[r], 8 * w))),
                                                 _mm256_castps_pd(load8<T>(vrow[r + 8], 8 * w)), 1));
    }
    transpose8x2(v);  // v[q] lane r: kept value 8w+q of row r
    // Each row's meta word w: 4 bytes ending with it (never past the row's
    // end), or for w = 0 the first 4 bytes when the row has them.
    __m512i mv;
    if (w > 0) {
      mv = _mm512_srli_epi32(_mm512_i32gather_epi32(offs, meta0 + 2 * w - 2, 1), 16);
    } else if (p.meta_row_bytes >= 4) {
      mv = _mm512_i32gather_epi32(offs, meta0, 1);
    } else {
      alignas(64) int32_t words0[16];
      for (int r = 0; r < 16; ++r) words0[r] = static_cast<int32_t>(simd::u16_at(meta0 + moff[r]));
      mv = _mm512_load_si512(words0);
    }
    if (!kBuffered) {
      for (int g = 0; g < 4; ++g) {
        const __m512i idx0 = _mm512_srli_epi32(mv, 4 * g), idx1 = _mm512_srli_epi32(mv, 4 * g + 2);
        const int64_t col = 4 * (4 * w + g);
        for (int j = 0; j < J; ++j) {
          const __m512 xg = _mm512_broadcast_f32x4(_mm_loadu_ps(x[j] + col));
          acc[j] = _mm512_fmadd_ps(v[2 * g], _mm512_permutevar_ps(xg, idx0), acc[j]);
          acc[j] = _mm512_fmadd_ps(v[2 * g + 1], _mm512_permutevar_ps(xg, idx1), acc[j]);
        }
      }
    } else {
      for (int q = 0; q < 8; ++q) {
        _mm512_store_ps(vbuf[q], v[q]);
        _mm512_store_si512(ibuf[q], _mm512_srli_epi32(mv, 2 * q));
      }
      for (int g = 0; g < 4; ++g) {
        const int64_t col = 4 * (4 * w + g);
        for (int j = 0; j < J; ++j) {
          const __m512 xg = _mm512_broadcast_f32x4(_mm_loadu_ps(x[j] + col));
          acc[j] = _mm512_fmadd_ps(_mm512_load_ps(vbuf[2 * g]), _mm512_permutevar_ps(xg, _mm512_load_si512(ibuf[2 * g])), acc[j]);
          acc[j] = _mm512_fmadd_ps(_mm512_load_ps(vbuf[2 * g + 1]), _mm512_permutevar_ps(xg, _mm512_load_si512(ibuf[2 * g + 1])), acc[j]);
        }
      }
    }
  }
  for (int j = 0; j < J; ++j) {
    _mm512_store_ps(tmp, acc[j]);
    for (int r = 0; r < nr; ++r) p.y[(i0 + r) * p.n + j0 + j] = tmp[r];
  }
  if (words * 4 < groups) {
    for (int r = 0; r < nr; ++r) simd::finish_row<T>(p, i0 + r, words * 4, j0, J);
  }
}

template <DType T>
void spmm_t(const Spmm24Plan& p, int64_t i0, int64_t i1) {
  using Rows = void (*)(const Spmm24Plan&, int64_t, int, int64_t);
  static constexpr Rows kRows[8] = {rows16<1, T>, rows16<2, T>, rows16<3, T>, rows16<4, T>,
                                    rows16<5, T>, rows16<6, T>, rows16<7, T>, rows16<8, T>};
  for (int64_t j0 = 0; j0 < p.n; j0 += 8) {
    const int J = static_cast<int>(p.n - j0 < 8 ? p.n - j0 : 8);
    for (int64_t i = i0; i < i1; i += 16) kRows[J - 1](p, i, static_cast<int>(i1 - i < 16 ? i1 - i : 16), j0);
  }
}

void spmm_rows(const Spmm24Plan& p, int64_t i0, int64_t i1) {
  switch (p.dtype) {
    case DType::F16: return spmm_t<DType::F16>(p, i0, i1);
    case DType::BF16: return spmm_t<DType::BF16>(p, i0, i1);
    default: return spmm_t<DType::F32>(p, i0, i1);
  }
}

}  // namespace

Spmm24Fn spmm24_fn() { return spmm_rows; }

}  // namespace avx512
}  // namespace st

#else  // built without AVX-512: the AVX2 kernel (or the reference) runs

namespace st {
namespace avx512 {
Spmm24Fn spmm24_fn() { return nullptr; }
}  // namespace avx512
}  // namespace st

#endif
