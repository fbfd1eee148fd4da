// AVX2 + FMA + F16C twins of quant_ref.cc. Compiled with -mavx2 -mfma -mf16c
// in its own translation unit and only called when cpuid says so. Each
// function mirrors the reference arithmetic operation for operation, so codes
// and scales come out bit-identical (the tests check it).
#include "quant_kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#include <cstdlib>

#include "../cpu.h"
#include "quant_avx512.h"
#include "quant_errsimd.h"
#include "quant_ksimd.h"
#include "quant_math.h"
#include "quant_search.h"

namespace st {
namespace avx2 {

namespace {

// Eight lanes for quant_ksimd.h: a mask is a vector of all-ones / zero lanes.
struct V8 {
  static constexpr int N = 8;
  static constexpr int kAll = 0xff;
  using F = __m256;
  using I = __m256i;
  using M = __m256;
  static F set1(float v) { return _mm256_set1_ps(v); }
  static F zero() { return _mm256_setzero_ps(); }
  static F load(const float* p) { return _mm256_load_ps(p); }
  static F loadu(const float* p) { return _mm256_loadu_ps(p); }
  // Lanes holding small integers, stored as 8 bytes.
  static void store_i8(int8_t* p, F v) {
    const __m256i i = _mm256_cvttps_epi32(v);
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packs_epi16(w, w));
  }
  // In-place 8 x 8 transpose: r[j] lane k <- r[k] lane j.
  static void transpose(F r[8]) {
    F t[8], u[8];
    for (int i = 0; i < 4; ++i) {
      t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; ++i) {
      u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
      u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
      u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
      u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
    }
    for (int j = 0; j < 4; ++j) {
      r[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
      r[4 + j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
    }
  }
  static void store(float* p, F v) { _mm256_store_ps(p, v); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F div(F a, F b) { return _mm256_div_ps(a, b); }
  static F sqrt(F a) { return _mm256_sqrt_ps(a); }
  static F round(F a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static F abs(F a) { return _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }
  static F neg(F a) { return _mm256_xor_ps(a, _mm256_set1_ps(-0.0f)); }
  static F min(F a, F b) { return _mm256_min_ps(a, b); }
  static F max(F a, F b) { return _mm256_max_ps(a, b); }
  static M lt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static M gt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static M neq(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_NEQ_UQ); }
  static M mand(M a, M b) { return _mm256_and_ps(a, b); }
  static M mor(M a, M b) { return _mm256_or_ps(a, b); }
  static M mnot(M a) { return _mm256_xor_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(-1))); }
  static M mfalse() { return _mm256_setzero_ps(); }
  static int bits(M m) { return _mm256_movemask_ps(m); }
  static F sel(M m, F t, F f) { return _mm256_blendv_ps(f, t, m); }
  static I castfi(F a) { return _mm256_castps_si256(a); }
  static I set1i(int v) { return _mm256_set1_epi32(v); }
  static I iand(I a, I b) { return _mm256_and_si256(a, b); }
  static I isub(I a, I b) { return _mm256_sub_epi32(a, b); }
  static I imin(I a, I b) { return _mm256_min_epi32(a, b); }
  static I imax(I a, I b) { return _mm256_max_epi32(a, b); }
  static F cvt(I a) { return _mm256_cvtepi32_ps(a); }
  static I cvtf(F a) { return _mm256_cvttps_epi32(a); }
};

// ---- loads with the dtype conversion fused in ------------------------------

template <DType T> struct Src;
template <> struct Src<DType::F32> {
  static __m256 load(const void* p, int64_t i) { return _mm256_loadu_ps(static_cast<const float*>(p) + i); }
};
template <> struct Src<DType::F16> {
  static __m256 load(const void* p, int64_t i) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i)));
  }
};
template <> struct Src<DType::BF16> {
  static __m256 load(const void* p, int64_t i) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
};

inline __m256i abs_bits(__m256 v) { return _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x7fffffff)); }

inline int32_t hmax_epi32(__m256i v) {
  __m128i m = _mm_max_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0x4e));
  m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0xb1));
  return _mm_cvtsi128_si32(m);
}
inline float hmax_ps(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}
inline float hmin_ps(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  m = _mm_min_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}
// The reference's lane tree over eight (already folded) lanes:
// ((l0+l2) + (l1+l3)) + ((l4+l6) + (l5+l7)).
inline float lane_tree(__m256 v) {
  __m256 t = _mm256_add_ps(v, _mm256_permute_ps(v, 0x4e));  // lane i: l_i + l_(i^2)
  t = _mm256_add_ps(t, _mm256_permute_ps(t, 0xb1));          // lane 0: (l0+l2) + (l1+l3)
  return _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
}

// Lane b of the result = op over the 8 lanes of v[b]. For op = add this is
// the lane tree above, applied to eight vectors at once.
template <class Op>
inline __m256 reduce8(const __m256 v[8], Op op) {
  const __m256 t0 = op(_mm256_unpacklo_ps(v[0], v[1]), _mm256_unpackhi_ps(v[0], v[1]));
  const __m256 t1 = op(_mm256_unpacklo_ps(v[2], v[3]), _mm256_unpackhi_ps(v[2], v[3]));
  const __m256 t2 = op(_mm256_unpacklo_ps(v[4], v[5]), _mm256_unpackhi_ps(v[4], v[5]));
  const __m256 t3 = op(_mm256_unpacklo_ps(v[6], v[7]), _mm256_unpackhi_ps(v[6], v[7]));
  const __m256 u0 = op(_mm256_shuffle_ps(t0, t1, 0x44), _mm256_shuffle_ps(t0, t1, 0xee));
  const __m256 u1 = op(_mm256_shuffle_ps(t2, t3, 0x44), _mm256_shuffle_ps(t2, t3, 0xee));
  return op(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}
inline __m256 op_max(__m256 a, __m256 b) { return _mm256_max_ps(a, b); }
inline __m256 op_min(__m256 a, __m256 b) { return _mm256_min_ps(a, b); }
// Integer max of non-negative int32 (absolute-value bit patterns), in float lanes.
inline __m256 op_imax(__m256 a, __m256 b) {
  return _mm256_castsi256_ps(_mm256_max_epi32(_mm256_castps_si256(a), _mm256_castps_si256(b)));
}

inline __m256 op_add(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }

inline uint16_t to_f16(float f) { return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT)); }

// C's (int8_t) of a float on x86, lane-wise: cvtt, keep the low byte signed.
inline __m256i cvtt_i8(__m256 v) {
  const __m256i i = _mm256_cvttps_epi32(v);
  return _mm256_srai_epi32(_mm256_slli_epi32(i, 24), 24);
}

// qs[j] = q[j] | q[j+16] << 4 for 32 codes in four vectors (values 0..255,
// reduced to bytes as the reference's uint8_t stores do).
inline void pack_nibbles_split(const __m256i q[4], uint8_t* qs) {
  const __m256i ff = _mm256_set1_epi32(0xff);
  const __m256i lo = _mm256_and_si256(_mm256_or_si256(_mm256_and_si256(q[0], ff), _mm256_slli_epi32(_mm256_and_si256(q[2], ff), 4)), ff);
  const __m256i hi = _mm256_and_si256(_mm256_or_si256(_mm256_and_si256(q[1], ff), _mm256_slli_epi32(_mm256_and_si256(q[3], ff), 4)), ff);
  const __m128i w0 = _mm_packus_epi32(_mm256_castsi256_si128(lo), _mm256_extracti128_si256(lo, 1));
  const __m128i w1 = _mm_packus_epi32(_mm256_castsi256_si128(hi), _mm256_extracti128_si256(hi, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(qs), _mm_packus_epi16(w0, w1));
}

// 32 int32 in [-128, 127] to 32 bytes in element order.
inline __m256i pack_i8x32(const __m256i q[4]) {
  const __m256i p01 = _mm256_packs_epi32(q[0], q[1]);
  const __m256i p23 = _mm256_packs_epi32(q[2], q[3]);
  const __m256i b = _mm256_packs_epi16(p01, p23);
  return _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// ---- GGUF blocks -------------------------------------------------------

template <DType T>
inline void load_block(const void* src, int64_t off, __m256 v[4]) {
  for (int k = 0; k < 4; ++k) v[k] = Src<T>::load(src, off + 8 * k);
}

inline uint32_t block_amax_bits(const __m256 v[4]) {
  const __m256i m = _mm256_max_epi32(_mm256_max_epi32(abs_bits(v[0]), abs_bits(v[1])),
                                     _mm256_max_epi32(abs_bits(v[2]), abs_bits(v[3])));
  return static_cast<uint32_t>(hmax_epi32(m));
}

// Bit mask over the 32 elements of the lanes where pred holds.
inline uint32_t mask32(const __m256 p[4]) {
  return static_cast<uint32_t>(_mm256_movemask_ps(p[0])) | (static_cast<uint32_t>(_mm256_movemask_ps(p[1])) << 8) |
         (static_cast<uint32_t>(_mm256_movemask_ps(p[2])) << 16) | (static_cast<uint32_t>(_mm256_movemask_ps(p[3])) << 24);
}

// Mask over 32 elements of the lanes with |x| == |m|.
inline uint32_t mask32_abs_eq(const __m256 v[4], float m) {
  const __m256i a = _mm256_set1_epi32(static_cast<int32_t>(f32_bits(m) & 0x7fffffffu));
  __m256 eq[4];
  for (int k = 0; k < 4; ++k) eq[k] = _mm256_castsi256_ps(_mm256_cmpeq_epi32(abs_bits(v[k]), a));
  return mask32(eq);
}

inline float lane_value(const __m256 v[4], int idx) {
  alignas(32) float t[8];
  _mm256_store_ps(t, v[idx >> 3]);
  return t[idx & 7];
}

// The reference's signed extreme: the first element whose |x| is the block's
// maximum keeps its sign; +0 for an all-zero block.
inline float signed_extreme(const __m256 v[4], uint32_t amax_bits) {
  return amax_bits == 0 ? 0.0f : lane_value(v, __builtin_ctz(mask32_abs_eq(v, bits_f32(amax_bits))));
}

inline void q4_0_block(const __m256 v[4], uint32_t amax_bits, uint8_t* y) {
  const float max = signed_extreme(v, amax_bits);
  const float d = max / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  qm::store_u16(y, to_f16(d));
  const __m256 vid = _mm256_set1_ps(id), half = _mm256_set1_ps(8.5f);
  const __m256i fifteen = _mm256_set1_epi32(15);
  __m256i q[4];
  for (int k = 0; k < 4; ++k) q[k] = _mm256_min_epi32(fifteen, cvtt_i8(_mm256_add_ps(_mm256_mul_ps(v[k], vid), half)));
  pack_nibbles_split(q, y + 2);
}

inline void q4_1_block(const __m256 v[4], uint8_t* y) {
  float min = hmin_ps(_mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3])));
  float max = hmax_ps(_mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3])));
  if (min == 0.0f || max == 0.0f) {
    // The reference's strict comparisons keep the first zero they meet, so
    // an extreme that is zero carries that element's sign (min is stored,
    // and max - min decides the sign of d).
    __m256 eq[4];
    for (int k = 0; k < 4; ++k) eq[k] = _mm256_cmp_ps(v[k], _mm256_setzero_ps(), _CMP_EQ_OQ);
    const float first_zero = lane_value(v, __builtin_ctz(mask32(eq)));
    if (min == 0.0f) min = first_zero;
    if (max == 0.0f) max = first_zero;
  }
  const float d = (max - min) / 15.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  qm::store_u16(y, to_f16(d));
  qm::store_u16(y + 2, to_f16(min));
  const __m256 vid = _mm256_set1_ps(id), vmin = _mm256_set1_ps(min), half = _mm256_set1_ps(0.5f);
  const __m256i fifteen = _mm256_set1_epi32(15);
  __m256i q[4];
  for (int k = 0; k < 4; ++k) {
    q[k] = _mm256_min_epi32(fifteen, cvtt_i8(_mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v[k], vmin), vid), half)));
  }
  pack_nibbles_split(q, y + 4);
}

// roundf: half away from zero, exactly (t - trunc(t) is exact).
inline __m256 round_away(__m256 t) {
  const __m256 tr = _mm256_round_ps(t, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 frac = _mm256_and_ps(_mm256_sub_ps(t, tr), _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
  const __m256 one = _mm256_or_ps(_mm256_and_ps(t, _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MIN))), _mm256_set1_ps(1.0f));
  return _mm256_add_ps(tr, _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ), one));
}

inline void q8_0_block(const __m256 v[4], uint32_t amax_bits, uint8_t* y) {
  const float amax = bits_f32(amax_bits);
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  qm::store_u16(y, to_f16(d));
  const __m256 vid = _mm256_set1_ps(id);
  __m256i q[4];
  for (int k = 0; k < 4; ++k) q[k] = cvtt_i8(round_away(_mm256_mul_ps(v[k], vid)));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + 2), pack_i8x32(q));
}

// ---- search: twins of quant_search.h -------------------------------------

inline __m256 clampv(__m256 v, __m256 lo, __m256 hi) { return _mm256_min_ps(_mm256_max_ps(v, lo), hi); }
inline __m256 rne(__m256 v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }

// Candidates are scored eight at a time: lane k of the reduced sums belongs
// to candidate t0 + k. The reference evaluates them one by one and keeps
// the first strictly better score; taking the first lane that attains the
// batch maximum, if it beats the best so far, selects the same candidate.
struct Batch {
  __m256 score;  // -inf in lanes without a valid candidate
  __m256 s;      // the candidate's fitted scale (or d)
};

// Lane k: candidate t0 + k's reciprocal scale (first + step*t) / e, the
// reference's scalar expression evaluated lane-wise.
inline __m256 candidate_multipliers(qs::Grid g, int t0, float e) {
  const __m256 t = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_set1_epi32(t0), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
  const __m256 c = _mm256_add_ps(_mm256_set1_ps(g.first), _mm256_mul_ps(_mm256_set1_ps(g.step), t));
  return _mm256_div_ps(c, _mm256_set1_ps(e));
}

// Returns the lane chosen, or -1 when no lane beats *best_score.
inline int take_best(const Batch& bt, float* best_score, float* best_s) {
  alignas(32) float sc[8], sv[8];
  _mm256_store_ps(sc, bt.score);
  _mm256_store_ps(sv, bt.s);
  const float m = hmax_ps(bt.score);
  if (!(m > *best_score)) return -1;
  const int k = __builtin_ctz(static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(bt.score, _mm256_set1_ps(m), _CMP_EQ_OQ))));
  *best_score = m;
  *best_s = sv[k];
  return k;
}

// score = a * (a / b) where valid, as the reference computes it.
inline Batch ls_scores(__m256 a, __m256 b, __m256 valid) {
  const __m256 r = _mm256_div_ps(a, b);
  const __m256 score = _mm256_mul_ps(a, r);
  return {_mm256_blendv_ps(_mm256_set1_ps(-INFINITY), score, valid), r};
}

// w * q, skipped when unweighted: the reference multiplies by 1.0, which is exact.
template <bool Weighted>
inline __m256 weigh(const float* w, int64_t j, __m256 q) {
  return Weighted ? _mm256_mul_ps(_mm256_loadu_ps(w + j), q) : q;
}

// x and w: n floats (n a multiple of 8), f32, in memory; w unused unless Weighted.
// AVX-512 takes the candidate loops when the CPU has it (same sums, same bits).
// Whether the AVX-512 loops may run: the CPU has them (and SLIMTENSOR_ISA
// allows them) and the caller asked for 'auto' or 'avx512' ('avx2' pins the
// AVX2 loops).
inline bool avx512_allowed(Kernel k) {
  static const bool on = cpu_enabled().avx512 && avx512::compiled();
  return on && (k == Kernel::Auto || k == Kernel::Avx512);
}

// The sums of up to 8 candidates (the AVX2 loop, or the AVX-512 one): lanes
// j % 16 < 8 and >= 8 accumulate apart and are folded at the end, as the
// reference's 16 lanes are.
template <bool Weighted>
void sym_sums8(const float* x, const float* w, int n, const float* invs, int m, int qmin, int qmax, __m256* A, __m256* B,
               bool zmm) {
  // For 32-value blocks the inlined, fully unrolled AVX2 loop measured
  // faster than the out-of-line AVX-512 one; longer groups gain from zmm.
  if (zmm && n >= 64) {
    avx512::sym_sums8(x, Weighted ? w : nullptr, n, invs, m, static_cast<float>(qmin), static_cast<float>(qmax), A, B);
    return;
  }
  const __m256 lo = _mm256_set1_ps(static_cast<float>(qmin)), hi = _mm256_set1_ps(static_cast<float>(qmax));
  for (int k = 0; k < 8; ++k) {
    A[k] = B[k] = _mm256_setzero_ps();
    if (k >= m) continue;
    const __m256 vinv = _mm256_set1_ps(invs[k]);
    __m256 a1 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
    auto step = [&](int j, __m256& a, __m256& b) {
      const __m256 xv = _mm256_loadu_ps(x + j);
      const __m256 q = clampv(rne(_mm256_mul_ps(xv, vinv)), lo, hi);
      const __m256 wq = weigh<Weighted>(w, j, q);
      a = _mm256_fmadd_ps(wq, xv, a);
      b = _mm256_fmadd_ps(wq, q, b);
    };
    for (int j = 0; j < n; j += 16) {
      step(j, A[k], B[k]);
      if (j + 8 < n) step(j + 8, a1, b1);
    }
    A[k] = _mm256_add_ps(A[k], a1);
    B[k] = _mm256_add_ps(B[k], b1);
  }
}

template <bool Weighted>
void asym_sums8(const float* x, const float* w, int n, const float* invs, const float* zs, int m, int qmin, int qmax,
                __m256* A, __m256* B, bool zmm) {
  if (zmm) {
    avx512::asym_sums8(x, Weighted ? w : nullptr, n, invs, zs, m, static_cast<float>(qmin), static_cast<float>(qmax), A, B);
    return;
  }
  const __m256 lo = _mm256_set1_ps(static_cast<float>(qmin)), hi = _mm256_set1_ps(static_cast<float>(qmax));
  for (int k = 0; k < 8; ++k) {
    A[k] = B[k] = _mm256_setzero_ps();
    if (k >= m) continue;
    const __m256 vinv = _mm256_set1_ps(invs[k]), vz = _mm256_set1_ps(zs[k]);
    __m256 a1 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
    auto step = [&](int j, __m256& a, __m256& b) {
      const __m256 xv = _mm256_loadu_ps(x + j);
      const __m256 d = _mm256_sub_ps(clampv(_mm256_add_ps(rne(_mm256_mul_ps(xv, vinv)), vz), lo, hi), vz);
      const __m256 wd = weigh<Weighted>(w, j, d);
      a = _mm256_fmadd_ps(wd, xv, a);
      b = _mm256_fmadd_ps(wd, d, b);
    };
    for (int j = 0; j < n; j += 16) {
      step(j, A[k], B[k]);
      if (j + 8 < n) step(j + 8, a1, b1);
    }
    A[k] = _mm256_add_ps(A[k], a1);
    B[k] = _mm256_add_ps(B[k], b1);
  }
}

template <bool Weighted>
void q4_1_sums8(const float* x, const float* w, float mn, const float* invs, int m, __m256* Q, __m256* QQ, __m256* XQ,
                bool zmm) {
  if (zmm) {
    avx512::q4_1_sums8(x, Weighted ? w : nullptr, mn, invs, m, Q, QQ, XQ);
    return;
  }
  const __m256 zero = _mm256_setzero_ps(), fifteen = _mm256_set1_ps(15.0f), vmn = _mm256_set1_ps(mn);
  for (int k = 0; k < 8; ++k) {
    Q[k] = QQ[k] = XQ[k] = zero;
    if (k >= m) continue;
    const __m256 vinv = _mm256_set1_ps(invs[k]);
    __m256 q1 = zero, qq1 = zero, xq1 = zero;
    auto step = [&](int j, __m256& sq, __m256& sqq, __m256& sxq) {
      const __m256 xv = _mm256_loadu_ps(x + j);
      const __m256 q = clampv(rne(_mm256_mul_ps(_mm256_sub_ps(xv, vmn), vinv)), zero, fifteen);
      const __m256 wq = weigh<Weighted>(w, j, q);
      sq = _mm256_add_ps(sq, wq);
      sqq = _mm256_fmadd_ps(wq, q, sqq);
      sxq = _mm256_fmadd_ps(wq, xv, sxq);
    };
    for (int j = 0; j < qm::QK; j += 16) {
      step(j, Q[k], QQ[k], XQ[k]);
      step(j + 8, q1, qq1, xq1);
    }
    Q[k] = _mm256_add_ps(Q[k], q1);
    QQ[k] = _mm256_add_ps(QQ[k], qq1);
    XQ[k] = _mm256_add_ps(XQ[k], xq1);
  }
}

// x and w: n floats (n a multiple of 8), f32, in memory; w unused unless Weighted.
template <bool Weighted>
void simd_sym_candidates(const float* x, const float* w, int n, float e, qs::Grid g, int qmin, int qmax,
                         float* best_score, float* best_s, bool zmm) {
  for (int t0 = 0; t0 < g.count; t0 += 8) {
    __m256 A[8], B[8];
    alignas(32) float invs[8];
    _mm256_store_ps(invs, candidate_multipliers(g, t0, e));
    sym_sums8<Weighted>(x, w, n, invs, g.count - t0 < 8 ? g.count - t0 : 8, qmin, qmax, A, B, zmm);
    const __m256 a = reduce8(A, op_add), b = reduce8(B, op_add);
    take_best(ls_scores(a, b, _mm256_cmp_ps(b, _mm256_setzero_ps(), _CMP_GT_OQ)), best_score, best_s);
  }
}

template <bool Weighted>
void simd_asym_candidates(const float* x, const float* w, int n, float lo_x, float hi_x, qs::Grid g, int qmin, int qmax,
                          float* best_score, float* best_s, int* best_z, bool zmm) {
  for (int t0 = 0; t0 < g.count; t0 += 8) {
    const int m = g.count - t0 < 8 ? g.count - t0 : 8;
    __m256 A[8], B[8];
    alignas(32) float invs[8];
    float zs[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    _mm256_store_ps(invs, candidate_multipliers(g, t0, hi_x - lo_x));
    for (int k = 0; k < m; ++k) {
      zs[k] = qm::fclamp(round_even(static_cast<float>(qmin) - lo_x * invs[k]), static_cast<float>(qmin), static_cast<float>(qmax));
    }
    asym_sums8<Weighted>(x, w, n, invs, zs, m, qmin, qmax, A, B, zmm);
    const __m256 a = reduce8(A, op_add), b = reduce8(B, op_add);
    const __m256 zero = _mm256_setzero_ps();
    const __m256 valid = _mm256_and_ps(_mm256_cmp_ps(b, zero, _CMP_GT_OQ), _mm256_cmp_ps(a, zero, _CMP_GT_OQ));
    const int k = take_best(ls_scores(a, b, valid), best_score, best_s);
    if (k >= 0) *best_z = static_cast<int>(zs[k]);
  }
}

// Per-thread scratch for one group (quant_ksimd.h's pool, its slot 6).
float* scratch(int64_t n) { return ks::scratch_of<float>(n, 6); }


template <bool Weighted>
// e: the block's signed extreme (signed_extreme), computed by the caller.
void q4_0_block_search(const float* x, const float* w, float e, uint8_t* y, bool zmm) {
  if (e == 0.0f) { qm::q4_0_block(x, y); return; }
  float best_score = 0.0f, s = 0.0f;
  simd_sym_candidates<Weighted>(x, w, qm::QK, e, qs::kGrid4Neg, -8, 7, &best_score, &s, zmm);
  simd_sym_candidates<Weighted>(x, w, qm::QK, e, qs::kGrid4Pos, -8, 7, &best_score, &s, zmm);
  const uint16_t dh = to_f16(s);
  const float d = f16_to_f32(dh);
  if (d == 0.0f) { qm::q4_0_block(x, y); return; }
  const __m256 vid = _mm256_set1_ps(1.0f / d);
  qm::store_u16(y, dh);
  __m256i q[4];
  for (int k = 0; k < 4; ++k) {
    const __m256 r = clampv(rne(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), vid)), _mm256_set1_ps(-8.0f), _mm256_set1_ps(7.0f));
    q[k] = _mm256_add_epi32(_mm256_cvttps_epi32(r), _mm256_set1_epi32(8));
  }
  pack_nibbles_split(q, y + 2);
}

template <bool Weighted>
// e: the block's max |x|.
void q8_0_block_search(const float* x, const float* w, float e, uint8_t* y, bool zmm) {
  if (e == 0.0f) { qm::q8_0_block(x, y); return; }
  float best_score = 0.0f, s = 0.0f;
  simd_sym_candidates<Weighted>(x, w, qm::QK, e, qs::kGrid8Sym, -127, 127, &best_score, &s, zmm);
  const uint16_t dh = to_f16(s);
  const float d = f16_to_f32(dh);
  if (d == 0.0f) { qm::q8_0_block(x, y); return; }
  const __m256 vid = _mm256_set1_ps(1.0f / d);
  qm::store_u16(y, dh);
  __m256i q[4];
  for (int k = 0; k < 4; ++k) {
    const __m256 r = clampv(rne(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), vid)), _mm256_set1_ps(-127.0f), _mm256_set1_ps(127.0f));
    q[k] = _mm256_cvttps_epi32(r);
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + 2), pack_i8x32(q));
}

template <bool Weighted>
// mn, mx: the block's min and max values.
void q4_1_block_search(const float* x, const float* w, float mn, float mx, uint8_t* y, bool zmm) {
  if (mx == mn) { qm::q4_1_block(x, y); return; }
  // the reference's 16 lanes: vectors 0, 2 and 1, 3 accumulate apart
  __m256 sw[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()}, sx[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int j = 0; j < qm::QK; j += 8) {
    const __m256 wv = Weighted ? _mm256_loadu_ps(w + j) : _mm256_set1_ps(1.0f);
    sw[(j >> 3) & 1] = _mm256_add_ps(sw[(j >> 3) & 1], wv);
    sx[(j >> 3) & 1] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + j), sx[(j >> 3) & 1]);
  }
  const float Sw = lane_tree(_mm256_add_ps(sw[0], sw[1])), Sx = lane_tree(_mm256_add_ps(sx[0], sx[1]));
  float best = -3.402823466e+38f, bd = 0.0f, bm = 0.0f;
  bool found = false;
  const qs::Grid g = qs::kGrid4Rng;
  const __m256 zero = _mm256_setzero_ps(), fifteen = _mm256_set1_ps(15.0f);
  for (int t0 = 0; t0 < g.count; t0 += 8) {
    __m256 Q[8], QQ[8], XQ[8];
    alignas(32) float invs[8];
    _mm256_store_ps(invs, candidate_multipliers(g, t0, mx - mn));
    q4_1_sums8<Weighted>(x, w, mn, invs, g.count - t0 < 8 ? g.count - t0 : 8, Q, QQ, XQ, zmm);
    // The weighted least-squares (d, m) of each candidate, as the reference.
    const __m256 sq = reduce8(Q, op_add), sqq = reduce8(QQ, op_add), sxq = reduce8(XQ, op_add);
    const __m256 vsw = _mm256_set1_ps(Sw), vsx = _mm256_set1_ps(Sx);
    const __m256 det = _mm256_sub_ps(_mm256_mul_ps(vsw, sqq), _mm256_mul_ps(sq, sq));
    const __m256 d = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(vsw, sxq), _mm256_mul_ps(sq, vsx)), det);
    const __m256 m = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sqq, vsx), _mm256_mul_ps(sq, sxq)), det);
    const __m256 score = _mm256_add_ps(_mm256_mul_ps(d, sxq), _mm256_mul_ps(m, vsx));
    const __m256 valid = _mm256_cmp_ps(det, zero, _CMP_GT_OQ);
    alignas(32) float dv[8], mv[8];
    _mm256_store_ps(dv, d);
    _mm256_store_ps(mv, m);
    float chosen_d = 0.0f;
    const int k = take_best({_mm256_blendv_ps(_mm256_set1_ps(-INFINITY), score, valid), d}, &best, &chosen_d);
    if (k >= 0) {
      bd = dv[k];
      bm = mv[k];
      found = true;
    }
  }
  if (!found) { qm::q4_1_block(x, y); return; }
  const uint16_t dh = to_f16(bd), mh = to_f16(bm);
  const float d = f16_to_f32(dh), m = f16_to_f32(mh);
  const __m256 vid = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f), vm = _mm256_set1_ps(m);
  qm::store_u16(y, dh);
  qm::store_u16(y + 2, mh);
  __m256i q[4];
  for (int k = 0; k < 4; ++k) {
    const __m256 r = clampv(rne(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + 8 * k), vm), vid)), zero, fifteen);
    q[k] = _mm256_cvttps_epi32(r);
  }
  pack_nibbles_split(q, y + 4);
}

// ---- batches of 8 GGUF blocks -----------------------------------------------
// The per-block statistics (extremes) of 8 consecutive blocks are reduced
// into one vector each, so the scale arithmetic (divisions, f16 rounding)
// runs once per 8 blocks in vector registers instead of as a serial scalar
// chain per block. Lane b of every vector below belongs to block b.

// Asks for the input kPrefetch bytes ahead of the batch being read: one
// core's demand misses alone do not keep enough loads in flight to reach
// the memory bandwidth.
constexpr int64_t kPrefetch = 4096;
template <DType T>
inline void prefetch_ahead(const void* src, int64_t off, int64_t n = 256) {
  const char* p = static_cast<const char*>(src) + off * static_cast<int64_t>(dtype_size(T)) + kPrefetch;
  for (int64_t i = 0; i < n * static_cast<int64_t>(dtype_size(T)); i += 64) _mm_prefetch(p + i, _MM_HINT_T0);
}

struct BlockStats {
  __m256 amax_bits;  // lane b: max |x| of block b as int bits (>= 0x7f800000: NaN/Inf inside)
  __m256 max, min;   // lane b: max / min of block b (vector min/max: sign of zeros unspecified)
};

template <DType T>
inline BlockStats block_stats8(const void* src, int64_t off) {
  __m256 a[8], mx[8], mn[8];
  for (int b = 0; b < 8; ++b) {
    __m256 v[4];
    load_block<T>(src, off + 32 * b, v);
    a[b] = _mm256_castsi256_ps(_mm256_max_epi32(_mm256_max_epi32(abs_bits(v[0]), abs_bits(v[1])),
                                                _mm256_max_epi32(abs_bits(v[2]), abs_bits(v[3]))));
    mx[b] = _mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3]));
    mn[b] = _mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3]));
  }
  return {reduce8(a, op_imax), reduce8(mx, op_max), reduce8(mn, op_min)};
}

inline bool any_non_finite(__m256 amax_bits) {
  return _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_castps_si256(amax_bits), _mm256_set1_epi32(0x7f7fffff)))) != 0;
}

// id = d != 0 ? 1/d : 0, lane-wise (the references' guard).
inline __m256 safe_recip(__m256 d) {
  const __m256 nz = _mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_NEQ_OQ);
  return _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0f), d), nz);
}

// Quantizes 32 values with q = clamp(cvtt(x*id + bias) ...) into split nibbles.
// The references compute min(15, (int8_t)(...)); for the values reachable
// here (|x*id| <= 8(1+eps), or +-Inf/NaN when id overflowed, which cvtt maps
// to INT32_MIN whose low byte is 0) clamping to [0, 15] gives the same codes.
template <DType T>
inline void nibbles(const void* src, int64_t off, __m256 sub, __m256 id, __m256 bias, uint8_t* qs) {
  const __m256i zero = _mm256_setzero_si256(), fifteen = _mm256_set1_epi32(15);
  __m256i q[4];
  for (int k = 0; k < 4; ++k) {
    const __m256 x = _mm256_sub_ps(Src<T>::load(src, off + 8 * k), sub);
    q[k] = _mm256_max_epi32(_mm256_min_epi32(_mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(x, id), bias)), fifteen), zero);
  }
  pack_nibbles_split(q, qs);
}

template <DType T>
void q4_0_batch(const void* src, int64_t off, uint8_t* y) {
  const BlockStats st = block_stats8<T>(src, off);
  // The signed extreme: +amax if the block's max reaches it, else -amax
  // (the min). A block holding both +amax and -amax is a tie the reference
  // breaks by position: those lanes are fixed up below.
  const __m256 amax = st.amax_bits;
  const __m256 pos = _mm256_cmp_ps(st.max, amax, _CMP_EQ_OQ);
  const __m256 neg = _mm256_cmp_ps(st.min, _mm256_xor_ps(amax, _mm256_set1_ps(-0.0f)), _CMP_EQ_OQ);
  const __m256 nonzero = _mm256_cmp_ps(amax, _mm256_setzero_ps(), _CMP_NEQ_OQ);
  __m256 max = _mm256_and_ps(_mm256_blendv_ps(st.min, st.max, pos), nonzero);  // all-zero block: +0
  int ties = _mm256_movemask_ps(_mm256_and_ps(_mm256_and_ps(pos, neg), nonzero));
  if (ties) {
    alignas(32) float m[8];
    _mm256_store_ps(m, max);
    while (ties) {
      const int b = __builtin_ctz(static_cast<unsigned>(ties));
      ties &= ties - 1;
      __m256 v[4];
      load_block<T>(src, off + 32 * b, v);
      m[b] = lane_value(v, __builtin_ctz(mask32_abs_eq(v, m[b])));
    }
    max = _mm256_load_ps(m);
  }
  const __m256 d = _mm256_div_ps(max, _mm256_set1_ps(-8.0f));
  alignas(32) float id[8];
  _mm256_store_ps(id, safe_recip(d));
  alignas(16) uint16_t dh[8];
  _mm_store_si128(reinterpret_cast<__m128i*>(dh), _mm256_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT));
  const __m256 zero = _mm256_setzero_ps(), bias = _mm256_set1_ps(8.5f);
  for (int b = 0; b < 8; ++b) {
    uint8_t* yb = y + 18 * b;
    qm::store_u16(yb, dh[b]);
    nibbles<T>(src, off + 32 * b, zero, _mm256_set1_ps(id[b]), bias, yb + 2);
  }
}

template <DType T>
void q4_1_batch(const void* src, int64_t off, uint8_t* y) {
  const BlockStats st = block_stats8<T>(src, off);
  __m256 min = st.min, max = st.max;
  // A zero extreme carries the sign of the block's first zero (the
  // reference's strict comparisons keep the first one they meet).
  const __m256 zero = _mm256_setzero_ps();
  int zeros = _mm256_movemask_ps(_mm256_or_ps(_mm256_cmp_ps(min, zero, _CMP_EQ_OQ), _mm256_cmp_ps(max, zero, _CMP_EQ_OQ)));
  if (zeros) {
    alignas(32) float lo[8], hi[8];
    _mm256_store_ps(lo, min);
    _mm256_store_ps(hi, max);
    while (zeros) {
      const int b = __builtin_ctz(static_cast<unsigned>(zeros));
      zeros &= zeros - 1;
      __m256 v[4];
      load_block<T>(src, off + 32 * b, v);
      __m256 eq[4];
      for (int k = 0; k < 4; ++k) eq[k] = _mm256_cmp_ps(v[k], zero, _CMP_EQ_OQ);
      const float first_zero = lane_value(v, __builtin_ctz(mask32(eq)));
      if (lo[b] == 0.0f) lo[b] = first_zero;
      if (hi[b] == 0.0f) hi[b] = first_zero;
    }
    min = _mm256_load_ps(lo);
    max = _mm256_load_ps(hi);
  }
  const __m256 d = _mm256_div_ps(_mm256_sub_ps(max, min), _mm256_set1_ps(15.0f));
  alignas(32) float id[8], mn[8];
  _mm256_store_ps(id, safe_recip(d));
  _mm256_store_ps(mn, min);
  alignas(16) uint16_t dh[8], mh[8];
  _mm_store_si128(reinterpret_cast<__m128i*>(dh), _mm256_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT));
  _mm_store_si128(reinterpret_cast<__m128i*>(mh), _mm256_cvtps_ph(min, _MM_FROUND_TO_NEAREST_INT));
  const __m256 bias = _mm256_set1_ps(0.5f);
  for (int b = 0; b < 8; ++b) {
    uint8_t* yb = y + 20 * b;
    qm::store_u16(yb, dh[b]);
    qm::store_u16(yb + 2, mh[b]);
    nibbles<T>(src, off + 32 * b, _mm256_set1_ps(mn[b]), _mm256_set1_ps(id[b]), bias, yb + 4);
  }
}

// Returns false (nothing written) when some block's 1/d overflowed to
// infinity: the reference's int8 casts of +-Inf/NaN then need the exact
// emulation of the single-block path.
template <DType T>
bool q8_0_batch(const void* src, int64_t off, uint8_t* y) {
  const BlockStats st = block_stats8<T>(src, off);
  const __m256 d = _mm256_div_ps(st.amax_bits, _mm256_set1_ps(127.0f));
  const __m256 idv = safe_recip(d);
  if (_mm256_movemask_ps(_mm256_cmp_ps(idv, _mm256_set1_ps(3.402823466e+38f), _CMP_GT_OQ))) return false;
  alignas(32) float id[8];
  _mm256_store_ps(id, idv);
  alignas(16) uint16_t dh[8];
  _mm_store_si128(reinterpret_cast<__m128i*>(dh), _mm256_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT));
  // roundf(t) == trunc(t + copysign(0.49999997f, t)) for |t| < 2^8 (checked
  // exhaustively); here |t| <= 127(1+eps).
  const __m256 sign = _mm256_set1_ps(-0.0f), half = _mm256_set1_ps(0.49999997f);
  for (int b = 0; b < 8; ++b) {
    uint8_t* yb = y + 34 * b;
    qm::store_u16(yb, dh[b]);
    const __m256 vid = _mm256_set1_ps(id[b]);
    __m256i q[4];
    for (int k = 0; k < 4; ++k) {
      const __m256 t = _mm256_mul_ps(Src<T>::load(src, off + 32 * b + 8 * k), vid);
      q[k] = _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_or_ps(_mm256_and_ps(t, sign), half)));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(yb + 2), pack_i8x32(q));
  }
  return true;
}

// ---- row drivers -------------------------------------------------------

// One block at a time: tails of rows, batches holding NaN/Inf, and the
// search. Returns the column of the first non-finite value, or -1.
template <DType T>
int64_t quantize_ggml_block(const QuantizeArgs& a, int64_t row, int64_t b, uint8_t* y) {
  const int64_t cols = a.src.cols;
  const int64_t off = row * cols + b * qm::QK;
  alignas(32) float xb[qm::QK];
  if (a.format == QFormat::Q5_0 || a.format == QFormat::Q5_1) {
    // the AVX-512 rows' tails and non-finite batches: the reference block
    const int64_t bad = load_f32(a.src.data, a.src.dtype, off, qm::QK, xb, a.non_finite);
    if (bad >= 0) return b * qm::QK + bad;
    a.format == QFormat::Q5_0 ? qm::q5_0_block(xb, y) : qm::q5_1_block(xb, y);
    return -1;
  }
  __m256 v[4];
  load_block<T>(a.src.data, off, v);
  uint32_t amax_bits = block_amax_bits(v);
  if (amax_bits >= 0x7f800000u) {
    // Rare: through the reference loader, which reads each value once, so
    // the value reported (or zeroed) is the one quantized — a caller that
    // rewrites the input during an async call cannot make a block that was
    // found bad go unwritten.
    const int64_t bad = load_f32(a.src.data, a.src.dtype, off, qm::QK, xb, a.non_finite);
    if (bad >= 0) return b * qm::QK + bad;
    for (int k = 0; k < 4; ++k) v[k] = _mm256_load_ps(xb + 8 * k);
    amax_bits = block_amax_bits(v);
  }
  if (a.search == Search::Mse) {
    for (int k = 0; k < 4; ++k) _mm256_store_ps(xb + 8 * k, v[k]);
    const float* w = a.importance ? a.importance + b * qm::QK : nullptr;
    const bool wt = a.importance != nullptr;
    const bool zmm = avx512_allowed(a.kernel);
    if (a.format == QFormat::Q4_0) {
      const float e = signed_extreme(v, amax_bits);
      wt ? q4_0_block_search<true>(xb, w, e, y, zmm) : q4_0_block_search<false>(xb, w, e, y, zmm);
    } else if (a.format == QFormat::Q4_1) {
      const float mn = hmin_ps(_mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3])));
      const float mx = hmax_ps(_mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3])));
      wt ? q4_1_block_search<true>(xb, w, mn, mx, y, zmm) : q4_1_block_search<false>(xb, w, mn, mx, y, zmm);
    } else {
      const float e = bits_f32(amax_bits);
      wt ? q8_0_block_search<true>(xb, w, e, y, zmm) : q8_0_block_search<false>(xb, w, e, y, zmm);
    }
  } else if (a.format == QFormat::Q4_0) {
    q4_0_block(v, amax_bits, y);
  } else if (a.format == QFormat::Q4_1) {
    q4_1_block(v, y);
  } else {
    q8_0_block(v, amax_bits, y);
  }
  return -1;
}

// Zmm: the batches are quant_avx512.cc's (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 without
// search or importance).
template <DType T, bool Zmm>
int64_t quantize_ggml_row(const QuantizeArgs& a, int64_t row) {
  const QFormatTraits& tr = qformat_traits(a.format);
  const int64_t cols = a.src.cols, nb = cols / qm::QK;
  uint8_t* out = a.data + row * nb * tr.block_bytes;
  int64_t b = 0;
  if (Zmm) {
    const avx512::GgmlBatchFn batch = avx512::ggml_batch_fn(a.format, T);
    for (; b + 8 <= nb; b += 8) {
      const int64_t off = row * cols + b * qm::QK;
      prefetch_ahead<T>(a.src.data, off);
      if (batch(a.src.data, off, out + b * tr.block_bytes)) continue;
      // NaN/Inf inside, or a Q8_0 scale whose reciprocal overflows
      for (int64_t k = b; k < b + 8; ++k) {
        const int64_t bad = quantize_ggml_block<T>(a, row, k, out + k * tr.block_bytes);
        if (bad >= 0) return bad;
      }
    }
  } else if (a.search == Search::None) {
    for (; b + 8 <= nb; b += 8) {
      const int64_t off = row * cols + b * qm::QK;
      uint8_t* y = out + b * tr.block_bytes;
      prefetch_ahead<T>(a.src.data, off);
      if (any_non_finite(block_stats8<T>(a.src.data, off).amax_bits)) {
        for (int64_t k = b; k < b + 8; ++k) {
          const int64_t bad = quantize_ggml_block<T>(a, row, k, out + k * tr.block_bytes);
          if (bad >= 0) return bad;
        }
        continue;
      }
      if (a.format == QFormat::Q4_0) {
        q4_0_batch<T>(a.src.data, off, y);
      } else if (a.format == QFormat::Q4_1) {
        q4_1_batch<T>(a.src.data, off, y);
      } else if (!q8_0_batch<T>(a.src.data, off, y)) {
        for (int64_t k = b; k < b + 8; ++k) quantize_ggml_block<T>(a, row, k, out + k * tr.block_bytes);
      }
    }
  }
  for (; b < nb; ++b) {
    const int64_t bad = quantize_ggml_block<T>(a, row, b, out + b * tr.block_bytes);
    if (bad >= 0) return bad;
  }
  return -1;
}

// Pass 2 of a compressed-tensors group: q = round(clamp(x / s + z)) (the
// conversion rounds half to even, as the reference's round), biased and
// packed. `load(j)` yields elements j..j+7 of the group as f32.
template <int Bits, bool Symmetric, class Load>
inline void emit_group_codes(Load load, int64_t g, qm::GroupParams p, qm::IntRange r, uint8_t* o) {
  constexpr int bits = Bits;
  constexpr bool symmetric = Symmetric;
  const __m256 vs = _mm256_set1_ps(p.scale), vz = _mm256_set1_ps(static_cast<float>(p.zero));
  const __m256 qlo = _mm256_set1_ps(static_cast<float>(r.qmin)), qhi = _mm256_set1_ps(static_cast<float>(r.qmax));
  auto code = [&](int64_t j) {
    __m256 v = _mm256_div_ps(load(j), vs);
    if (!symmetric) v = _mm256_add_ps(v, vz);  // z = 0 would only turn -0 into +0
    return _mm256_cvtps_epi32(clampv(v, qlo, qhi));
  };
  int64_t j = 0;
  if (bits == 4) {
    const __m256i bias = _mm256_set1_epi32(8);
    for (; j + 32 <= g; j += 32) {
      __m256i q[4];
      for (int k = 0; k < 4; ++k) q[k] = _mm256_add_epi32(code(j + 8 * k), bias);
      const __m256i b = pack_i8x32(q);  // one code per byte, in order
      const __m256i pairs = _mm256_maddubs_epi16(b, _mm256_set1_epi16(0x1001));  // b[2k] + 16*b[2k+1]
      const __m128i bytes = _mm_packus_epi16(_mm256_castsi256_si128(pairs), _mm256_extracti128_si256(pairs, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + j / 2), bytes);
    }
    for (; j < g; j += 8) {
      const __m256i u = _mm256_sllv_epi32(_mm256_add_epi32(code(j), bias), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28));
      __m128i w = _mm_or_si128(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
      w = _mm_or_si128(w, _mm_shuffle_epi32(w, 0x4e));
      w = _mm_or_si128(w, _mm_shuffle_epi32(w, 0xb1));
      const uint32_t word = static_cast<uint32_t>(_mm_cvtsi128_si32(w));
      std::memcpy(o + j / 2, &word, 4);
    }
  } else {
    const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));  // q + 128 as a byte
    for (; j + 32 <= g; j += 32) {
      __m256i q[4];
      for (int k = 0; k < 4; ++k) q[k] = code(j + 8 * k);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + j), _mm256_xor_si256(pack_i8x32(q), flip));
    }
    for (; j < g; j += 8) {
      const __m256i q = code(j);
      const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(o + j), _mm_xor_si128(_mm_packs_epi16(w, w), _mm256_castsi256_si128(flip)));
    }
  }
}

// emit_group_codes with the format fixed at compile time.
template <class Load>
void emit_codes(Load load, int64_t g, int bits, bool symmetric, qm::GroupParams p, qm::IntRange r, uint8_t* o) {
  if (bits == 4) {
    if (symmetric) emit_group_codes<4, true>(load, g, p, r, o);
    else emit_group_codes<4, false>(load, g, p, r, o);
  } else {
    if (symmetric) emit_group_codes<8, true>(load, g, p, r, o);
    else emit_group_codes<8, false>(load, g, p, r, o);
  }
}

// The searched parameters of a group held as f32 in xg (twin of
// qs::int_group_search, whose plain fallback it shares).
template <bool Weighted>
qm::GroupParams int_group_search(const float* xg, const float* w, int64_t g, float mn, float mx, int bits, bool symmetric,
                                 DType scale_dtype, bool zmm) {
  const qm::IntRange r = qm::int_range(bits);
  const qm::GroupParams plain = qm::int_params_minmax(mn, mx, bits, symmetric, scale_dtype);
  float best_score = 0.0f, s = 0.0f;
  int z = 0;
  if (symmetric) {
    const float e = -mn > mx ? -mn : mx;
    if (e == 0.0f) return plain;
    simd_sym_candidates<Weighted>(xg, w, static_cast<int>(g), e, bits == 4 ? qs::kGrid4Sym : qs::kGrid8Sym, r.qmin, r.qmax, &best_score, &s, zmm);
  } else {
    const float lo = mn < 0.0f ? mn : 0.0f, hi = mx > 0.0f ? mx : 0.0f;
    if (hi == lo) return plain;
    simd_asym_candidates<Weighted>(xg, w, static_cast<int>(g), lo, hi, bits == 4 ? qs::kGrid4Rng : qs::kGrid8Rng, r.qmin, r.qmax, &best_score, &s, &z, zmm);
  }
  if (!(s > 0.0f)) return plain;
  s = s > qm::kScaleEps ? s : qm::kScaleEps;
  return {qm::scale_as_stored(s, scale_dtype), z};
}

// compressed-tensors groups one at a time (g a multiple of 8): the search,
// and rows holding NaN/Inf.
template <DType T>
int64_t quantize_int_row_groupwise(const QuantizeArgs& a, int64_t row) {
  const int bits = qformat_traits(a.format).bits;
  const qm::IntRange r = qm::int_range(bits);
  const int64_t cols = a.src.cols, g = a.group, ng = cols / g;
  const QuantSizes sz = quant_sizes(a.format, cols, g);
  uint8_t* out = a.data + row * sz.data_row_bytes;
  const bool search = a.search == Search::Mse;
  const bool zmm = avx512_allowed(a.kernel);
  float* xg = scratch(g);
  for (int64_t gi = 0; gi < ng; ++gi) {
    const int64_t off = row * cols + gi * g;
    if (gi * g % 256 == 0) prefetch_ahead<T>(a.src.data, off);
    // Pass 1: the range, any non-finite value, and (for the search) an f32
    // copy. Two vectors per step into two accumulator sets: a single chain
    // of max/min would wait out their latency on every vector.
    const __m256 big = _mm256_set1_ps(3.402823466e+38f), nbig = _mm256_set1_ps(-3.402823466e+38f);
    __m256 vmin = big, vmax = nbig, vmin2 = big, vmax2 = nbig;
    __m256i abits = _mm256_setzero_si256(), abits2 = _mm256_setzero_si256();
    int64_t j = 0;
    for (; j + 16 <= g; j += 16) {
      const __m256 v = Src<T>::load(a.src.data, off + j), u = Src<T>::load(a.src.data, off + j + 8);
      if (search) {
        _mm256_storeu_ps(xg + j, v);
        _mm256_storeu_ps(xg + j + 8, u);
      }
      abits = _mm256_max_epi32(abits, abs_bits(v));
      abits2 = _mm256_max_epi32(abits2, abs_bits(u));
      vmin = _mm256_min_ps(vmin, v);
      vmin2 = _mm256_min_ps(vmin2, u);
      vmax = _mm256_max_ps(vmax, v);
      vmax2 = _mm256_max_ps(vmax2, u);
    }
    for (; j < g; j += 8) {
      const __m256 v = Src<T>::load(a.src.data, off + j);
      if (search) _mm256_storeu_ps(xg + j, v);
      abits = _mm256_max_epi32(abits, abs_bits(v));
      vmin = _mm256_min_ps(vmin, v);
      vmax = _mm256_max_ps(vmax, v);
    }
    vmin = _mm256_min_ps(vmin, vmin2);
    vmax = _mm256_max_ps(vmax, vmax2);
    abits = _mm256_max_epi32(abits, abits2);
    bool from_scratch = search;
    if (static_cast<uint32_t>(hmax_epi32(abits)) >= 0x7f800000u) {
      // As for GGUF blocks: one read of the group, then everything from it.
      const int64_t bad = load_f32(a.src.data, a.src.dtype, off, g, xg, a.non_finite);
      if (bad >= 0) return gi * g + bad;
      from_scratch = true;
      vmin = _mm256_set1_ps(3.402823466e+38f);
      vmax = _mm256_set1_ps(-3.402823466e+38f);
      for (int64_t j = 0; j < g; j += 8) {
        vmin = _mm256_min_ps(vmin, _mm256_loadu_ps(xg + j));
        vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(xg + j));
      }
    }
    const float mn = hmin_ps(vmin), mx = hmax_ps(vmax);
    const qm::GroupParams p =
        !search ? qm::int_params_minmax(mn, mx, bits, a.symmetric, a.scale_dtype)
        : a.importance ? int_group_search<true>(xg, a.importance + gi * g, g, mn, mx, bits, a.symmetric, a.scale_dtype, zmm)
                       : int_group_search<false>(xg, nullptr, g, mn, mx, bits, a.symmetric, a.scale_dtype, zmm);
    qm::store_scale(a.scales, row * ng + gi, p.scale, a.scale_dtype);
    if (!a.symmetric) a.zeros[row * ng + gi] = static_cast<int8_t>(p.zero);
    uint8_t* o = out + (gi * g * bits) / 8;
    if (from_scratch) {
      emit_codes([&](int64_t j) { return _mm256_loadu_ps(xg + j); }, g, bits, a.symmetric, p, r, o);
    } else {
      emit_codes([&](int64_t j) { return Src<T>::load(a.src.data, off + j); }, g, bits, a.symmetric, p, r, o);
    }
  }
  for (int64_t b = (cols * bits + 7) / 8; b < sz.data_row_bytes; ++b) out[b] = 0;
  return -1;
}

// ---- batches of 8 compressed-tensors groups ---------------------------------
// As for GGUF blocks: the ranges of up to 8 groups are reduced into one
// vector each and their scales and zero points computed together, instead of
// a serial scalar chain per group.

struct RangeVecs {
  __m256 mn, mx;   // lane-wise min/max over the group
  __m256i abits;   // lane-wise max |x| bits (>= 0x7f800000: NaN/Inf inside)
};

template <DType T>
inline RangeVecs group_range(const void* src, int64_t off, int64_t g) {
  // two accumulator sets: one chain of max/min would wait out their latency
  const __m256 big = _mm256_set1_ps(3.402823466e+38f), nbig = _mm256_set1_ps(-3.402823466e+38f);
  __m256 mn = big, mx = nbig, mn2 = big, mx2 = nbig;
  __m256i ab = _mm256_setzero_si256(), ab2 = _mm256_setzero_si256();
  int64_t j = 0;
  const char* ahead = static_cast<const char*>(src) + off * static_cast<int64_t>(dtype_size(T)) + kPrefetch;
  for (; j + 16 <= g; j += 16) {
    // one line ahead per line read: keeps the stream of misses even
    _mm_prefetch(ahead + j * static_cast<int64_t>(dtype_size(T)), _MM_HINT_T0);
    const __m256 v = Src<T>::load(src, off + j), u = Src<T>::load(src, off + j + 8);
    ab = _mm256_max_epi32(ab, abs_bits(v));
    ab2 = _mm256_max_epi32(ab2, abs_bits(u));
    mn = _mm256_min_ps(mn, v);
    mn2 = _mm256_min_ps(mn2, u);
    mx = _mm256_max_ps(mx, v);
    mx2 = _mm256_max_ps(mx2, u);
  }
  if (j < g) {
    const __m256 v = Src<T>::load(src, off + j);
    ab = _mm256_max_epi32(ab, abs_bits(v));
    mn = _mm256_min_ps(mn, v);
    mx = _mm256_max_ps(mx, v);
  }
  return {_mm256_min_ps(mn, mn2), _mm256_max_ps(mx, mx2), _mm256_max_epi32(ab, ab2)};
}

// Lane-wise qm::scale_as_stored.
inline __m256 scale_as_stored8(__m256 s, DType t) {
  if (t == DType::F16) return _mm256_cvtph_ps(_mm256_cvtps_ph(s, _MM_FROUND_TO_NEAREST_INT));
  if (t == DType::BF16) {
    // round to nearest even on the top 16 bits (scales are never NaN here)
    const __m256i b = _mm256_castps_si256(s);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    const __m256i r = _mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7fff)), odd);
    return _mm256_castsi256_ps(_mm256_and_si256(r, _mm256_set1_epi32(static_cast<int32_t>(0xffff0000u))));
  }
  return s;
}

// Lane-wise qm::int_params_minmax: lane k holds group k's scale and zero.
inline void int_params8(__m256 mn, __m256 mx, int bits, bool symmetric, DType sdt, float* scale, float* zero) {
  const qm::IntRange r = qm::int_range(bits);
  const __m256 z0 = _mm256_setzero_ps();
  mn = _mm256_min_ps(mn, z0);  // mn < 0 ? mn : 0
  mx = _mm256_max_ps(mx, z0);  // mx > 0 ? mx : 0
  const float range = static_cast<float>(r.qmax - r.qmin);
  const __m256 eps = _mm256_set1_ps(qm::kScaleEps);
  if (symmetric) {
    const __m256 neg = _mm256_xor_ps(mn, _mm256_set1_ps(-0.0f));
    const __m256 amax = _mm256_blendv_ps(mx, neg, _mm256_cmp_ps(neg, mx, _CMP_GT_OQ));
    const __m256 s = _mm256_max_ps(_mm256_div_ps(amax, _mm256_set1_ps(range / 2.0f)), eps);
    _mm256_storeu_ps(scale, scale_as_stored8(s, sdt));
    _mm256_storeu_ps(zero, z0);
  } else {
    const __m256 s = scale_as_stored8(_mm256_max_ps(_mm256_div_ps(_mm256_sub_ps(mx, mn), _mm256_set1_ps(range)), eps), sdt);
    const __m256 zf = rne(_mm256_sub_ps(_mm256_set1_ps(static_cast<float>(r.qmin)), _mm256_div_ps(mn, s)));
    _mm256_storeu_ps(scale, s);
    _mm256_storeu_ps(zero, clampv(zf, _mm256_set1_ps(static_cast<float>(r.qmin)), _mm256_set1_ps(static_cast<float>(r.qmax))));
  }
}

// compressed-tensors groups (g a multiple of 8), plain min/max scales.
template <DType T>
int64_t quantize_int_row(const QuantizeArgs& a, int64_t row) {
  if (a.search == Search::Mse) return quantize_int_row_groupwise<T>(a, row);
  const int bits = qformat_traits(a.format).bits;
  const qm::IntRange r = qm::int_range(bits);
  const int64_t cols = a.src.cols, g = a.group, ng = cols / g;
  const QuantSizes sz = quant_sizes(a.format, cols, g);
  uint8_t* out = a.data + row * sz.data_row_bytes;
  for (int64_t g0 = 0; g0 < ng; g0 += 8) {
    const int m = static_cast<int>(ng - g0 < 8 ? ng - g0 : 8);
    const int64_t off = row * cols + g0 * g;
    __m256 mn[8], mx[8], ab[8];
    for (int k = 0; k < 8; ++k) {
      if (k < m) {
        const RangeVecs rv = group_range<T>(a.src.data, off + k * g, g);
        mn[k] = rv.mn;
        mx[k] = rv.mx;
        ab[k] = _mm256_castsi256_ps(rv.abits);
      } else {
        mn[k] = mx[k] = ab[k] = _mm256_setzero_ps();
      }
    }
    // NaN/Inf anywhere: the group-by-group path reports or zeroes them.
    if (any_non_finite(reduce8(ab, op_imax))) return quantize_int_row_groupwise<T>(a, row);
    alignas(32) float sc[8], zf[8];
    int_params8(reduce8(mn, op_min), reduce8(mx, op_max), bits, a.symmetric, a.scale_dtype, sc, zf);
    for (int k = 0; k < m; ++k) {
      const int64_t gi = g0 + k;
      const qm::GroupParams p{sc[k], static_cast<int>(zf[k])};
      qm::store_scale(a.scales, row * ng + gi, p.scale, a.scale_dtype);
      if (!a.symmetric) a.zeros[row * ng + gi] = static_cast<int8_t>(p.zero);
      const int64_t goff = off + k * g;
      emit_codes([&](int64_t j) { return Src<T>::load(a.src.data, goff + j); }, g, bits, a.symmetric, p, r,
                 out + (gi * g * bits) / 8);
    }
  }
  for (int64_t b = (cols * bits + 7) / 8; b < sz.data_row_bytes; ++b) out[b] = 0;
  return -1;
}

template <DType T>
QuantRowFn pick_for(const QuantizeArgs& a) {
  if (qformat_traits(a.format).ggml) {
    // Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 without search or importance: AVX-512's batches when allowed
    const bool plain = a.search == Search::None && !(a.importance && ggml_weighted(a.format));
    if (plain && avx512_allowed(a.kernel) && avx512::ggml_batch_fn(a.format, T) != nullptr) return quantize_ggml_row<T, true>;
    if (!ks::handles(a)) return quantize_ggml_row<T, false>;
    // ggml's searches: 16 lanes with AVX-512, else 8
    if (avx512_allowed(a.kernel)) {
      if (QuantRowFn f = avx512::ggml_search_row_fn(a)) return f;
    }
    return ks::row_fn<V8, 2>(a);
  }
  if (a.group % 8 != 0) return ref::quantize_row;  // odd per-channel widths: the reference handles them
  return quantize_int_row<T>;
}

}  // namespace

QuantRowFn quantize_row_fn(const QuantizeArgs& a) {
  switch (a.src.dtype) {
    case DType::F32: return pick_for<DType::F32>(a);
    case DType::F16: return pick_for<DType::F16>(a);
    case DType::BF16: return pick_for<DType::BF16>(a);
    default: return nullptr;
  }
}

namespace {

// ---- dequantization: twins of the reference's (q - bias) * d [+ m] -------

// The 32 codes of a GGUF nibble block as int32 lanes, in element order.
inline void unpack_nibbles_split(const uint8_t* qs, __m256i q[4]) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i lo = _mm_and_si128(b, _mm_set1_epi8(0x0f));
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(0x0f));
  q[0] = _mm256_cvtepu8_epi32(lo);
  q[1] = _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8));
  q[2] = _mm256_cvtepu8_epi32(hi);
  q[3] = _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8));
}

void dequantize_ggml_row(const DequantizeArgs& a, int64_t row, float* out) {
  const QFormatTraits& tr = qformat_traits(a.format);
  const QuantSizes sz = quant_sizes(a.format, a.cols, a.group);
  const uint8_t* in = a.data + row * sz.data_row_bytes;
  for (int64_t b = 0; b < sz.groups_per_row; ++b) {
    const uint8_t* y = in + b * tr.block_bytes;
    float* x = out + b * qm::QK;
    const __m256 d = _mm256_set1_ps(f16_to_f32(qm::load_u16(y)));
    __m256i q[4];
    if (a.format == QFormat::Q8_0) {
      for (int k = 0; k < 4; ++k) {
        q[k] = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(y + 2 + 8 * k)));
        _mm256_storeu_ps(x + 8 * k, _mm256_mul_ps(_mm256_cvtepi32_ps(q[k]), d));
      }
    } else if (a.format == QFormat::Q4_0) {
      unpack_nibbles_split(y + 2, q);
      for (int k = 0; k < 4; ++k) {
        _mm256_storeu_ps(x + 8 * k, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q[k], _mm256_set1_epi32(8))), d));
      }
    } else {
      const __m256 m = _mm256_set1_ps(f16_to_f32(qm::load_u16(y + 2)));
      unpack_nibbles_split(y + 4, q);
      for (int k = 0; k < 4; ++k) _mm256_storeu_ps(x + 8 * k, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(q[k]), d), m));
    }
  }
}

// compressed-tensors rows, groups a multiple of 8 values.
void dequantize_int_row(const DequantizeArgs& a, int64_t row, float* out) {
  const int bits = qformat_traits(a.format).bits;
  const QuantSizes sz = quant_sizes(a.format, a.cols, a.group);
  const uint8_t* in = a.data + row * sz.data_row_bytes;
  const int64_t ng = sz.groups_per_row;
  for (int64_t gi = 0; gi < ng; ++gi) {
    const __m256 s = _mm256_set1_ps(qm::load_scale(a.scales, row * ng + gi, a.scale_dtype));
    // (u - bias - z) with u the stored code: one integer offset per group
    const __m256i off = _mm256_set1_epi32((1 << (bits - 1)) + (a.zeros ? a.zeros[row * ng + gi] : 0));
    for (int64_t j = gi * a.group; j < (gi + 1) * a.group; j += 8) {
      const __m256i u = es::int_codes8(in, j, bits);
      _mm256_storeu_ps(out + j, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(u, off)), s));
    }
  }
}

}  // namespace

// ---- Q5_0/Q5_1 and the K-quants: twins of quant_kmath.h's unblock functions.
// Eight consecutive codes become int32 lanes; then the reference's float
// operations per value: (d·sc)·q − dmin·m and its variants.

// 8 bytes at p as int32 lanes.
inline __m256i bytes8(const uint8_t* p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }
// (bytes8(p) >> shift) & mask
inline __m256i field8(const uint8_t* p, int shift, int mask) {
  return _mm256_and_si256(_mm256_srli_epi32(bytes8(p), shift), _mm256_set1_epi32(mask));
}
// out = cvt(q) * dl - ml (ml = null: no subtraction)
inline void scale8(__m256i q, float dl, const float* ml, float* out) {
  __m256 v = _mm256_mul_ps(_mm256_set1_ps(dl), _mm256_cvtepi32_ps(q));
  if (ml) v = _mm256_sub_ps(v, _mm256_set1_ps(*ml));
  _mm256_storeu_ps(out, v);
}

void dequantize_kquant_row(const DequantizeArgs& a, int64_t row, float* out) {
  const QFormatTraits& tr = qformat_traits(a.format);
  const QuantSizes sz = quant_sizes(a.format, a.cols, a.group);
  const uint8_t* in = a.data + row * sz.data_row_bytes;
  for (int64_t b = 0; b < sz.groups_per_row; ++b) {
    const uint8_t* y = in + b * tr.block_bytes;
    float* x = out + b * tr.block;
    switch (a.format) {
      case QFormat::Q5_0:
      case QFormat::Q5_1: {
        const bool one = a.format == QFormat::Q5_1;
        const float d = f16_to_f32(qm::load_u16(y)), m = one ? f16_to_f32(qm::load_u16(y + 2)) : 0.0f;
        const uint8_t* qh = y + (one ? 4 : 2);
        const uint8_t* qs = qh + 4;
        uint32_t h;
        std::memcpy(&h, qh, 4);
        for (int i = 0; i < 32; i += 8) {
          const __m256i lo = field8(qs + (i & 15), i < 16 ? 0 : 4, 0x0f);
          const __m256i hb = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int32_t>(h >> i)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)),
                                              _mm256_set1_epi32(1));
          const __m256i q = _mm256_or_si256(lo, _mm256_slli_epi32(hb, 4));
          if (one) {
            _mm256_storeu_ps(x + i, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(q), _mm256_set1_ps(d)), _mm256_set1_ps(m)));
          } else {
            _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, _mm256_set1_epi32(16))), _mm256_set1_ps(d)));
          }
        }
        break;
      }
      case QFormat::Q2_K:
        for (int j = 0; j < 16; ++j) {
          float dl, ml;
          qk::q2_k_sub(y, j, &dl, &ml);
          for (int i = 16 * j; i < 16 * j + 16; i += 8) scale8(field8(y + 16 + 32 * (i / 128) + i % 32, 2 * ((i % 128) / 32), 3), dl, &ml, x + i);
        }
        break;
      case QFormat::Q3_K:
        for (int j = 0; j < 16; ++j) {
          const float dl = qk::q3_k_sub(y, j);
          for (int i = 16 * j; i < 16 * j + 16; i += 8) {
            const __m256i low = field8(y + 32 + 32 * (i / 128) + i % 32, 2 * ((i % 128) / 32), 3);
            const __m256i high = field8(y + i % 32, i / 32, 1);
            // low − (high ? 0 : 4)
            scale8(_mm256_add_epi32(_mm256_sub_epi32(low, _mm256_set1_epi32(4)), _mm256_slli_epi32(high, 2)), dl, nullptr, x + i);
          }
        }
        break;
      case QFormat::Q4_K:
      case QFormat::Q5_K: {
        const bool five = a.format == QFormat::Q5_K;
        const uint8_t* qs = y + (five ? 48 : 16);
        // qk::q45_k_sub's products with the two f16 conversions done once per block
        const float d = f16_to_f32(qm::load_u16(y)), dmin = f16_to_f32(qm::load_u16(y + 2));
        for (int j = 0; j < 8; ++j) {
          int sc, mc;
          qk::scale_min_k4(j, y + 4, &sc, &mc);
          const float dl = d * static_cast<float>(sc), ml = dmin * static_cast<float>(mc);
          for (int i = 32 * j; i < 32 * j + 32; i += 8) {
            __m256i q = field8(qs + 32 * (i / 64) + i % 32, 4 * ((i / 32) & 1), 0x0f);
            if (five) q = _mm256_or_si256(q, _mm256_slli_epi32(field8(y + 16 + i % 32, i / 32, 1), 4));
            scale8(q, dl, &ml, x + i);
          }
        }
        break;
      }
      case QFormat::Q6_K:
        for (int j = 0; j < 16; ++j) {
          const float dl = qk::q6_k_sub(y, j);
          for (int i = 16 * j; i < 16 * j + 16; i += 8) {
            const int h = i / 128, k = (i % 128) / 32, l = i % 32;
            const __m256i low = field8(y + 64 * h + 32 * (k & 1) + l, 4 * (k >> 1), 0x0f);
            const __m256i high = field8(y + 128 + 32 * h + l, 2 * k, 3);
            scale8(_mm256_sub_epi32(_mm256_or_si256(low, _mm256_slli_epi32(high, 4)), _mm256_set1_epi32(32)), dl, nullptr, x + i);
          }
        }
        break;
      default: qk::ggml_unblock(a.format, y, x); break;
    }
  }
}

DequantRowFn dequantize_row_fn(const DequantizeArgs& a) {
  if (qformat_traits(a.format).ggml) {
    const bool legacy = a.format == QFormat::Q4_0 || a.format == QFormat::Q4_1 || a.format == QFormat::Q8_0;
    return legacy ? dequantize_ggml_row : dequantize_kquant_row;
  }
  return a.group % 8 == 0 ? dequantize_int_row : ref::dequantize_row;
}

namespace {

// ---- error statistics (quant_errsimd.h): the reference's 8 lanes as two
// vectors of 4 doubles (with AVX-512 allowed, quant_avx512.cc's twin holds
// them in one zmm instead)

struct Ymm2 {
  struct Half {
    __m256d se, sx, sy, dot, mx;
  };
  struct Acc {
    Half lo, hi;  // lanes 0-3, 4-7
  };
  static Acc zero() {
    const __m256d z = _mm256_setzero_pd();
    return {{z, z, z, z, z}, {z, z, z, z, z}};
  }
  static void add4(Half& a, __m128 xf, __m128 yf) {
    const __m256d x = _mm256_cvtps_pd(xf), y = _mm256_cvtps_pd(yf), e = _mm256_sub_pd(x, y);
    a.se = _mm256_add_pd(a.se, _mm256_mul_pd(e, e));  // e*e is rounded: no FMA here (quant_math.h)
    a.sx = _mm256_fmadd_pd(x, x, a.sx);  // exact products: fused = the reference's mul then add
    a.sy = _mm256_fmadd_pd(y, y, a.sy);
    a.dot = _mm256_fmadd_pd(x, y, a.dot);
    // MAXPD(|e|, m) returns m when |e| is NaN: the reference's comparison.
    a.mx = _mm256_max_pd(_mm256_andnot_pd(_mm256_set1_pd(-0.0), e), a.mx);
  }
  static void add8(Acc& a, __m256 x, __m256 y) {
    add4(a.lo, _mm256_castps256_ps128(x), _mm256_castps256_ps128(y));
    add4(a.hi, _mm256_extractf128_ps(x, 1), _mm256_extractf128_ps(y, 1));
  }
  static bool x_finite(const Acc& a) {
    const __m256d inf = _mm256_set1_pd(__builtin_inf());
    const __m256d f = _mm256_and_pd(_mm256_cmp_pd(a.lo.sx, inf, _CMP_LT_OQ), _mm256_cmp_pd(a.hi.sx, inf, _CMP_LT_OQ));
    return _mm256_movemask_pd(f) == 0xf;
  }
  static void store(const Acc& a, qm::ErrorLanes* l) {
    _mm256_storeu_pd(l->se, a.lo.se);
    _mm256_storeu_pd(l->se + 4, a.hi.se);
    _mm256_storeu_pd(l->sx, a.lo.sx);
    _mm256_storeu_pd(l->sx + 4, a.hi.sx);
    _mm256_storeu_pd(l->sy, a.lo.sy);
    _mm256_storeu_pd(l->sy + 4, a.hi.sy);
    _mm256_storeu_pd(l->dot, a.lo.dot);
    _mm256_storeu_pd(l->dot + 4, a.hi.dot);
    alignas(32) double m[4];
    _mm256_store_pd(m, _mm256_max_pd(a.lo.mx, a.hi.mx));
    l->max_abs = 0.0;
    for (int k = 0; k < 4; ++k) l->max_abs = m[k] > l->max_abs ? m[k] : l->max_abs;
  }
};

}  // namespace

// AVX-512 only: with AVX2's 16 registers the ten accumulators and the
// dequantization's temporaries spill, and the fused loop measured slower
// than dequantizing the row first (es::fused_fn<Ymm2> would be correct).
ErrorDeqRowFn error_deq_row_fn(const DequantizeArgs& q, DType orig) {
  return avx512_allowed(q.kernel) ? avx512::error_deq_row_fn(q, orig) : nullptr;
}

ErrorRowFn error_row_fn(Kernel k) {
  if (avx512_allowed(k)) {
    if (ErrorRowFn f = avx512::error_row_fn()) return f;
  }
  return es::row_plain_any<Ymm2>;
}

}  // namespace avx2
}  // namespace st

#else  // built without AVX2 flags (non-x86): no AVX2 kernels

namespace st {
namespace avx2 {
QuantRowFn quantize_row_fn(const QuantizeArgs&) { return nullptr; }
DequantRowFn dequantize_row_fn(const DequantizeArgs&) { return nullptr; }
ErrorRowFn error_row_fn(Kernel) { return nullptr; }
ErrorDeqRowFn error_deq_row_fn(const DequantizeArgs&, DType) { return nullptr; }
}  // namespace avx2
}  // namespace st

#endif
