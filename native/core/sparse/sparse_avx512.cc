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

// The traits of sparse_simd.h's loop: 16 rows per zmm, up to 16 columns of
// Y per chunk (16 accumulators and 7 working registers of the 32), so a
// batch of 16 is one chunk; up to 4 columns with a word's 8 value vectors
// kept in registers too.
struct Isa {
  static constexpr int kLanes = 16;
  static constexpr int kChunk = 16;
  static constexpr int kDirect = 4;
  using V = __m512;
  using Vi = __m512i;
  static V load(const float* p) { return _mm512_load_ps(p); }
  static void store(float* p, V v) { _mm512_store_ps(p, v); }
  static Vi loadi(const int32_t* p) { return _mm512_load_si512(p); }
  static Vi srli(Vi v, int s) { return _mm512_srli_epi32(v, static_cast<unsigned>(s)); }
  static V bcast4(const float* p) { return _mm512_broadcast_f32x4(_mm_loadu_ps(p)); }
  static V perm(V v, Vi idx) { return _mm512_permutevar_ps(v, idx); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }

  // Kept values 8w..8w+7 of the block's 16 rows, transposed: v[q] lane r
  // is value 8w+q of row r.
  template <DType T>
  static void word_values(const simd::Block& b, int64_t w, V v[8]) {
    for (int r = 0; r < 8; ++r) {
      v[r] = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(simd::load8<T>(b.vrow[r], 8 * w))),
                                                 _mm256_castps_pd(simd::load8<T>(b.vrow[r + 8], 8 * w)), 1));
    }
    transpose8x2(v);
  }
  // The 16 rows' meta words w, one per lane (bits above the word
  // unspecified: the loop reads bits 0..15). One gather: the 4 bytes ending
  // with word w (never past the row's end), or for w = 0 the first 4 bytes
  // when the row has them.
  static Vi word_meta(const simd::Block& b, int64_t meta_row_bytes, int64_t w) {
    const __m512i offs = _mm512_load_si512(b.moff);
    if (w > 0) return _mm512_srli_epi32(_mm512_i32gather_epi32(offs, b.meta0 + 2 * w - 2, 1), 16);
    if (meta_row_bytes >= 4) return _mm512_i32gather_epi32(offs, b.meta0, 1);
    alignas(64) int32_t words0[16];
    for (int r = 0; r < 16; ++r) words0[r] = static_cast<int32_t>(simd::u16_at(b.mrow[r]));
    return _mm512_load_si512(words0);
  }
  static void store_i(int32_t* p, Vi v) { _mm512_store_si512(p, v); }
};

}  // namespace

Spmm24Fn spmm24_fn() { return simd::spmm_rows<Isa>; }

}  // namespace avx512
}  // namespace st

#else  // built without AVX-512: the AVX2 kernel (or the reference) runs

namespace st {
namespace avx512 {
Spmm24Fn spmm24_fn() { return nullptr; }
}  // namespace avx512
}  // namespace st

#endif
