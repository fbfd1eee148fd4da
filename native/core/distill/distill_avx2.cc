// AVX2 + FMA + F16C build of the SIMD distillation kernel (distill_simd.h:
// sweeps, order of operations, the gradient's regrouping), on two ymm
// registers per 16 logits. Compiled with -mavx2 -mfma -mf16c in its own
// translation unit and only called when cpuid says so. The AVX-512 build
// (distill_avx512.cc) runs the same code on one zmm register and gives the
// same bits; this file holds the exp and log1p both use (the AVX-512 file
// restates them with instructions that cannot change a result) and the
// 8-float loads and stores with the dtype conversion fused in.
//
// The label and top-k terms are written afterwards from the scalar helpers
// of distill_ref.cc, exactly as the reference does. The exp is a
// polynomial (vexp below): results match the reference within a stated
// tolerance, not bit for bit (test/distill.test.ts, distill_test.cc).
#include "distill_kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#include "distill_simd.h"

namespace st {
namespace avx2 {

namespace {

// ---- vectorised exp and log1p ----------------------------------------------

// exp(x): x = n·ln2 + r with |r| <= ln2/2 (ln2 split in a 9-bit head, exact
// when multiplied by n, and a tail), e^r by its Taylor series to r^7
// (truncation error below 4e-9 relative), times 2^n. n comes from adding
// 1.5·2^23 + 127: the sum rounds x·log2(e) to an integer and its low
// mantissa bits are n + 127, the exponent field of 2^n. Inputs are clamped
// to [-87.5, 88]; below -87.5 (e^x < 1.0e-38, and NaN, like dm::floor_log)
// the result is 0, so results under 2^-126 other than those of [-87.5,
// -87.34] flush to zero. Every argument here is <= 0 (differences to a
// maximum, log-probabilities).
//
// Accuracy, measured against std::exp in double over every one of the
// 2.24e9 f32 inputs in [-87.33, 88] (those with a normal result): max
// relative error 7.89e-8 (0.94 ulp), at x = -5.89112377; distill_test.cc
// (test_exp_accuracy) checks a strided sample against a 1e-7 bound.
//
// vexp_core: x already clamped to [-87.5, 88]; `keep` zeroes the lanes
// whose input was below -87.5 (or NaN).
inline __m256 vexp_core(__m256 x, __m256 keep) {
  const __m256 magic = _mm256_set1_ps(12582912.0f + 127.0f);
  const __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), magic);
  const __m256 n = _mm256_sub_ps(t, magic);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(t), 23));
  return _mm256_and_ps(_mm256_mul_ps(p, scale), keep);
}

inline __m256 vexp(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.5f);
  const __m256 keep = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);
  return vexp_core(_mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.0f)), keep);
}

// vexp for arguments <= 0 (or NaN): every exp of the kernel, whose
// arguments are differences to a maximum or log-probabilities. One
// instruction fewer (no upper clamp); the same results.
inline __m256 vexp_le0(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.5f);
  return vexp_core(_mm256_max_ps(x, lo), _mm256_cmp_ps(x, lo, _CMP_GE_OQ));
}

// log(1 + e) for e in [0, 1] (what log-add-exp needs): 1 + e = 2^k (1 + f)
// with k in {0, 1} and |f| <= sqrt(2) − 1, then log(1 + f) = 2·atanh(s),
// s = f / (2 + f), |s| <= 0.172, by its odd series to s^11 (truncation
// error below 1e-10 relative). f is e itself for k = 0, so small e keeps
// its precision. Max absolute error over every f32 e in [0, 1]: 8.33e-8
// (against std::log1p in double). Used by jsd's log m only.
inline __m256 vlog1p01(__m256 e) {
  const __m256 big = _mm256_cmp_ps(e, _mm256_set1_ps(0.41421356f), _CMP_GT_OQ);
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 f = _mm256_blendv_ps(e, _mm256_mul_ps(_mm256_sub_ps(e, one), _mm256_set1_ps(0.5f)), big);
  const __m256 s = _mm256_div_ps(f, _mm256_add_ps(_mm256_set1_ps(2.0f), f));
  const __m256 s2 = _mm256_mul_ps(s, s);
  __m256 p = _mm256_set1_ps(1.0f / 11.0f);
  p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 9.0f));
  p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 7.0f));
  p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 5.0f));
  p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 3.0f));
  p = _mm256_fmadd_ps(p, s2, one);
  const __m256 two_s = _mm256_add_ps(s, s);
  return _mm256_fmadd_ps(two_s, p, _mm256_and_ps(big, _mm256_set1_ps(0.693147181f)));
}

// ---- loads and stores with the dtype conversion fused in ---------------------

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

template <DType T> struct Dst;
// store: ordinary; stream: non-temporal, 16 bytes at a time (the address
// must be 16-byte aligned: what malloc, hence a JS ArrayBuffer, gives), for
// large gradients nobody reads soon.
template <> struct Dst<DType::F32> {
  static void store(void* p, int64_t i, __m256 v) { _mm256_storeu_ps(static_cast<float*>(p) + i, v); }
  static void stream(void* p, int64_t i, __m256 v) {
    float* q = static_cast<float*>(p) + i;
    _mm_stream_ps(q, _mm256_castps256_ps128(v));
    _mm_stream_ps(q + 4, _mm256_extractf128_ps(v, 1));
  }
};
template <> struct Dst<DType::F16> {
  static __m128i pack(__m256 v) { return _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT); }
  static void store(void* p, int64_t i, __m256 v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(p) + i), pack(v)); }
  static void stream(void* p, int64_t i, __m256 v) { _mm_stream_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(p) + i), pack(v)); }
};
template <> struct Dst<DType::BF16> {
  // Round to nearest even as f32_to_bf16 (gradients are finite here).
  static __m128i pack(__m256 v) {
    const __m256i b = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(b, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08));
  }
  static void store(void* p, int64_t i, __m256 v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(p) + i), pack(v)); }
  static void stream(void* p, int64_t i, __m256 v) { _mm_stream_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(p) + i), pack(v)); }
};

inline __m256 tail_mask(int n) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane));
}

// ---- the traits distill_simd.h runs on: 16 floats as two ymm registers ------

struct V2 {
  __m256 a, b;  // lanes 0-7, 8-15
};

struct Isa {
  using V = V2;
  using M = V2;  // all-ones lanes
  struct D {     // 16 per-lane doubles
    __m256d d0, d1, d2, d3;
  };

  static V set1(float x) { return {_mm256_set1_ps(x), _mm256_set1_ps(x)}; }
  static V zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  static V add(V x, V y) { return {_mm256_add_ps(x.a, y.a), _mm256_add_ps(x.b, y.b)}; }
  static V sub(V x, V y) { return {_mm256_sub_ps(x.a, y.a), _mm256_sub_ps(x.b, y.b)}; }
  static V mul(V x, V y) { return {_mm256_mul_ps(x.a, y.a), _mm256_mul_ps(x.b, y.b)}; }
  // MAXPS/MINPS semantics: the second operand when either is NaN.
  static V max(V x, V y) { return {_mm256_max_ps(x.a, y.a), _mm256_max_ps(x.b, y.b)}; }
  static V min(V x, V y) { return {_mm256_min_ps(x.a, y.a), _mm256_min_ps(x.b, y.b)}; }
  static V fmadd(V x, V y, V z) { return {_mm256_fmadd_ps(x.a, y.a, z.a), _mm256_fmadd_ps(x.b, y.b, z.b)}; }    // x·y + z
  static V fmsub(V x, V y, V z) { return {_mm256_fmsub_ps(x.a, y.a, z.a), _mm256_fmsub_ps(x.b, y.b, z.b)}; }    // x·y − z
  static V fnmadd(V x, V y, V z) { return {_mm256_fnmadd_ps(x.a, y.a, z.a), _mm256_fnmadd_ps(x.b, y.b, z.b)}; }  // z − x·y
  static float hmax(V v) {
    __m256 m = _mm256_max_ps(v.a, v.b);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
  }
  static M gt(V x, V y) { return {_mm256_cmp_ps(x.a, y.a, _CMP_GT_OQ), _mm256_cmp_ps(x.b, y.b, _CMP_GT_OQ)}; }
  static M eq(V x, V y) { return {_mm256_cmp_ps(x.a, y.a, _CMP_EQ_OQ), _mm256_cmp_ps(x.b, y.b, _CMP_EQ_OQ)}; }
  // k ∧ (x < y)
  static M and_lt(M k, V x, V y) {
    return {_mm256_and_ps(k.a, _mm256_cmp_ps(x.a, y.a, _CMP_LT_OQ)), _mm256_and_ps(k.b, _mm256_cmp_ps(x.b, y.b, _CMP_LT_OQ))};
  }
  static bool any(M m) { return _mm256_movemask_ps(_mm256_or_ps(m.a, m.b)) != 0; }
  static bool all(M m) { return _mm256_movemask_ps(_mm256_and_ps(m.a, m.b)) == 0xff; }
  // Lanes [0, n), n in 0..16.
  static M first(int n) { return {tail_mask(n < 8 ? n : 8), tail_mask(n > 8 ? n - 8 : 0)}; }
  static V maskz(M k, V v) { return {_mm256_and_ps(k.a, v.a), _mm256_and_ps(k.b, v.b)}; }
  // y where k is set, else x.
  static V blend(M k, V x, V y) { return {_mm256_blendv_ps(x.a, y.a, k.a), _mm256_blendv_ps(x.b, y.b, k.b)}; }

  static V exp_le0(V x) { return {vexp_le0(x.a), vexp_le0(x.b)}; }
  static V log1p01(V e) { return {vlog1p01(e.a), vlog1p01(e.b)}; }

  template <DType T>
  static V load(const void* p, int64_t i) { return {Src<T>::load(p, i), Src<T>::load(p, i + 8)}; }
  // The first n (< 16) values from element i, zeros after them; reads nothing beyond.
  template <DType T>
  static V load_n(const void* p, int64_t i, int n) {
    alignas(32) float buf[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    for (int l = 0; l < n; ++l) buf[l] = dm::load_logit(p, T, i + l);
    return {_mm256_load_ps(buf), _mm256_load_ps(buf + 8)};
  }
  static V loadf(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
  static void storef(float* p, V v) {
    _mm256_storeu_ps(p, v.a);
    _mm256_storeu_ps(p + 8, v.b);
  }
  template <DType T>
  static void store(void* p, int64_t i, V v) {
    Dst<T>::store(p, i, v.a);
    Dst<T>::store(p, i + 8, v.b);
  }
  template <DType T>
  static void store_n(void* p, int64_t i, int n, V v) {
    alignas(32) float buf[16];
    _mm256_store_ps(buf, v.a);
    _mm256_store_ps(buf + 8, v.b);
    for (int l = 0; l < n; ++l) dm::store_grad(p, T, i + l, buf[l]);
  }
  // Non-temporal stores of one gradient row (which starts 16-byte aligned):
  // 16 bytes at a time; the row's partial vector is stored normally.
  template <DType T>
  struct Streamer {
    void* g;
    int64_t base;
    Streamer(void* g_, int64_t base_, bool) : g(g_), base(base_) {}
    void put(int64_t j, V v) {
      Dst<T>::stream(g, base + j, v.a);
      Dst<T>::stream(g, base + j + 8, v.b);
    }
    void tail(int64_t full, V v, int n) { store_n<T>(g, base + full, n, v); }
    void flush(int64_t) {}
  };

  static D dzero() { return {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()}; }
  static void dadd(D& s, V v) {
    s.d0 = _mm256_add_pd(s.d0, _mm256_cvtps_pd(_mm256_castps256_ps128(v.a)));
    s.d1 = _mm256_add_pd(s.d1, _mm256_cvtps_pd(_mm256_extractf128_ps(v.a, 1)));
    s.d2 = _mm256_add_pd(s.d2, _mm256_cvtps_pd(_mm256_castps256_ps128(v.b)));
    s.d3 = _mm256_add_pd(s.d3, _mm256_cvtps_pd(_mm256_extractf128_ps(v.b, 1)));
  }
  static void dstore(double* out, const D& s) {
    _mm256_storeu_pd(out, s.d0);
    _mm256_storeu_pd(out + 4, s.d1);
    _mm256_storeu_pd(out + 8, s.d2);
    _mm256_storeu_pd(out + 12, s.d3);
  }

  static void prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1); }
  static void sfence() { _mm_sfence(); }
};

}  // namespace

DistillRowFn distill_row_fn(const DistillArgs& a) { return dsimd::row_fn<Isa>(a); }

bool exp_array(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, vexp(_mm256_loadu_ps(x + i)));
  for (; i < n; ++i) _mm_store_ss(y + i, _mm256_castps256_ps128(vexp(_mm256_set1_ps(x[i]))));
  return true;
}

bool log1p01_array(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) _mm_store_ss(y + i, _mm256_castps256_ps128(vlog1p01(_mm256_set1_ps(x[i]))));
  return true;
}

}  // namespace avx2
}  // namespace st

#else  // built without AVX2 flags (non-x86): no AVX2 kernels

namespace st {
namespace avx2 {
DistillRowFn distill_row_fn(const DistillArgs&) { return nullptr; }
bool exp_array(const float*, float*, int64_t) { return false; }
bool log1p01_array(const float*, float*, int64_t) { return false; }
}  // namespace avx2
}  // namespace st

#endif
