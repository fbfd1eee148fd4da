// AVX-512 twins (see quant_avx512.h): the legacy GGUF batches, ggml's
// searches, the error sums and the MSE search's inner loops. Compiled with
// -mavx512f -mavx512bw -mavx512vl in its own translation unit. A zmm register
// holds exactly the reference's 16 accumulation lanes (element j in lane
// j % 16) in the searches, so a 32-value block is two vector steps instead of four, with the
// same operations in the same order per lane as quant_search.h.
// GCC 12 reports its own AVX-512 intrinsics' undefined pass-through operand
// as uninitialized (a false positive inside its headers, so the pragma must
// precede them).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "quant_avx512.h"

#if defined(__AVX512F__) && defined(__AVX512VL__)

#include <cstring>

#include "quant_errsimd.h"
#include "quant_ksimd.h"

namespace st {
namespace avx512 {

namespace {

// Sixteen lanes for quant_ksimd.h, with mask registers.
struct V16 {
  static constexpr int N = 16;
  static constexpr int kAll = 0xffff;
  using F = __m512;
  using I = __m512i;
  using M = __mmask16;
  static F set1(float v) { return _mm512_set1_ps(v); }
  static F zero() { return _mm512_setzero_ps(); }
  static F load(const float* p) { return _mm512_load_ps(p); }
  static F loadu(const float* p) { return _mm512_loadu_ps(p); }
  // Lanes holding small integers, stored as 16 bytes.
  static void store_i8(int8_t* p, F v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(v)));
  }
  // In-place 16 x 16 transpose: r[j] lane k <- r[k] lane j.
  static void transpose(F r[16]) {
    F t[16], u[16];
    for (int i = 0; i < 8; ++i) {
      t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4i + j], 128-bit lane L: column 4L + j of rows 4i..4i+3
    for (int i = 0; i < 4; ++i) {
      u[4 * i + 0] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
      u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
      u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
      u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
    }
    for (int j = 0; j < 4; ++j) {
      const F w0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88), w1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xdd);
      const F w2 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88), w3 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xdd);
      r[j] = _mm512_shuffle_f32x4(w0, w2, 0x88);
      r[8 + j] = _mm512_shuffle_f32x4(w0, w2, 0xdd);
      r[4 + j] = _mm512_shuffle_f32x4(w1, w3, 0x88);
      r[12 + j] = _mm512_shuffle_f32x4(w1, w3, 0xdd);
    }
  }
  static void store(float* p, F v) { _mm512_store_ps(p, v); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F div(F a, F b) { return _mm512_div_ps(a, b); }
  static F sqrt(F a) { return _mm512_sqrt_ps(a); }
  static F round(F a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static F abs(F a) { return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_set1_epi32(0x7fffffff))); }
  static F neg(F a) { return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), _mm512_set1_epi32(INT32_MIN))); }
  static F min(F a, F b) { return _mm512_min_ps(a, b); }
  static F max(F a, F b) { return _mm512_max_ps(a, b); }
  static M lt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static M gt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static M neq(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_NEQ_UQ); }
  static M mand(M a, M b) { return static_cast<M>(a & b); }
  static M mor(M a, M b) { return static_cast<M>(a | b); }
  static M mnot(M a) { return static_cast<M>(~a); }
  static M mfalse() { return 0; }
  static int bits(M m) { return static_cast<int>(m); }
  static F sel(M m, F t, F f) { return _mm512_mask_blend_ps(m, f, t); }
  static I castfi(F a) { return _mm512_castps_si512(a); }
  static I set1i(int v) { return _mm512_set1_epi32(v); }
  static I iand(I a, I b) { return _mm512_and_si512(a, b); }
  static I isub(I a, I b) { return _mm512_sub_epi32(a, b); }
  static I imin(I a, I b) { return _mm512_min_epi32(a, b); }
  static I imax(I a, I b) { return _mm512_max_epi32(a, b); }
  static F cvt(I a) { return _mm512_cvtepi32_ps(a); }
  static I cvtf(F a) { return _mm512_cvttps_epi32(a); }
};

inline __m512 rne(__m512 v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// min(max(v, lo), hi) with MAXPS/MINPS NaN rules, as qm::fclamp.
inline __m512 clampv(__m512 v, __m512 lo, __m512 hi) { return _mm512_min_ps(_mm512_max_ps(v, lo), hi); }
// Lane i + 8 folded into lane i.
inline __m256 fold(__m512 v) {
  return _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

// Lanes of the step starting at element j that exist: all 16, or the low 8
// for a trailing half step (n is a multiple of 8).
inline __mmask16 lanes(int j, int n) { return j + 16 <= n ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>(0x00ff); }

// w·q, or q for unit weights (the reference multiplies by 1.0: exact).
inline __m512 weigh(const float* w, int j, __mmask16 k, __m512 q) {
  return w ? _mm512_mul_ps(_mm512_maskz_loadu_ps(k, w + j), q) : q;
}

}  // namespace

bool compiled() { return true; }

void sym_sums8(const float* x, const float* w, int n, const float* inv, int m, float qmin, float qmax, __m256* a,
               __m256* b) {
  const __m512 lo = _mm512_set1_ps(qmin), hi = _mm512_set1_ps(qmax);
  for (int c = 0; c < 8; ++c) {
    __m512 sa = _mm512_setzero_ps(), sb = _mm512_setzero_ps();
    if (c < m) {
      const __m512 vinv = _mm512_set1_ps(inv[c]);
      for (int j = 0; j < n; j += 16) {
        const __mmask16 k = lanes(j, n);
        const __m512 xv = _mm512_maskz_loadu_ps(k, x + j);
        const __m512 q = clampv(rne(_mm512_mul_ps(xv, vinv)), lo, hi);
        const __m512 wq = weigh(w, j, k, q);
        sa = _mm512_mask3_fmadd_ps(wq, xv, sa, k);
        sb = _mm512_mask3_fmadd_ps(wq, q, sb, k);
      }
    }
    a[c] = fold(sa);
    b[c] = fold(sb);
  }
}

void asym_sums8(const float* x, const float* w, int n, const float* inv, const float* z, int m, float qmin,
                float qmax, __m256* a, __m256* b) {
  const __m512 lo = _mm512_set1_ps(qmin), hi = _mm512_set1_ps(qmax);
  for (int c = 0; c < 8; ++c) {
    __m512 sa = _mm512_setzero_ps(), sb = _mm512_setzero_ps();
    if (c < m) {
      const __m512 vinv = _mm512_set1_ps(inv[c]), vz = _mm512_set1_ps(z[c]);
      for (int j = 0; j < n; j += 16) {
        const __mmask16 k = lanes(j, n);
        const __m512 xv = _mm512_maskz_loadu_ps(k, x + j);
        const __m512 d = _mm512_sub_ps(clampv(_mm512_add_ps(rne(_mm512_mul_ps(xv, vinv)), vz), lo, hi), vz);
        const __m512 wd = weigh(w, j, k, d);
        sa = _mm512_mask3_fmadd_ps(wd, xv, sa, k);
        sb = _mm512_mask3_fmadd_ps(wd, d, sb, k);
      }
    }
    a[c] = fold(sa);
    b[c] = fold(sb);
  }
}

void q4_1_sums8(const float* x, const float* w, float mn, const float* inv, int m, __m256* sq, __m256* sqq,
                __m256* sxq) {
  const __m512 zero = _mm512_setzero_ps(), fifteen = _mm512_set1_ps(15.0f), vmn = _mm512_set1_ps(mn);
  const __mmask16 all = 0xffff;
  for (int c = 0; c < 8; ++c) {
    __m512 s1 = zero, s2 = zero, s3 = zero;
    if (c < m) {
      const __m512 vinv = _mm512_set1_ps(inv[c]);
      for (int j = 0; j < 32; j += 16) {
        const __m512 xv = _mm512_loadu_ps(x + j);
        const __m512 q = clampv(rne(_mm512_mul_ps(_mm512_sub_ps(xv, vmn), vinv)), zero, fifteen);
        const __m512 wq = weigh(w, j, all, q);
        s1 = _mm512_add_ps(s1, wq);
        s2 = _mm512_fmadd_ps(wq, q, s2);
        s3 = _mm512_fmadd_ps(wq, xv, s3);
      }
    }
    sq[c] = fold(s1);
    sqq[c] = fold(s2);
    sxq[c] = fold(s3);
  }
}

QuantRowFn ggml_search_row_fn(const QuantizeArgs& a) { return ks::row_fn<V16, 2>(a); }

// ---- Q4_0 / Q4_1 / Q8_0 without search: twins of quant_avx2.cc's batches.
// The 8 blocks' 256 values stay in 16 zmm registers from the statistics to
// the codes (AVX2's 16 ymm cannot hold them, so its batches load and convert
// the input twice). A block is two zmm: elements 0-15 and 16-31. The scale
// arithmetic runs on 8 lanes (lane b: block b) with the AVX2 batches' exact
// operations; the codes' per-element operations are theirs too.

namespace {

template <DType T> struct Src16;
template <> struct Src16<DType::F32> {
  static __m512 load(const void* p, int64_t i) { return _mm512_loadu_ps(static_cast<const float*>(p) + i); }
};
template <> struct Src16<DType::F16> {
  static __m512 load(const void* p, int64_t i) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i)));
  }
};
template <> struct Src16<DType::BF16> {
  static __m512 load(const void* p, int64_t i) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
};

inline __m512i abs_bits16(__m512 v) { return _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff)); }
inline __m256 hi_half(__m512 v) { return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)); }
inline __m256i hi_half(__m512i v) { return _mm512_extracti64x4_epi64(v, 1); }

// Lane b of the result = op over the 8 lanes of v[b] (any order: max and
// min of finite values, the signs of zeros aside, do not depend on it).
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
inline __m256 op_imax(__m256 a, __m256 b) {
  return _mm256_castsi256_ps(_mm256_max_epi32(_mm256_castps_si256(a), _mm256_castps_si256(b)));
}

struct Block8 {
  __m512 x[16];      // block b: x[2b] (elements 0-15), x[2b + 1] (16-31)
  __m256 amax_bits;  // lane b: max |x| of block b as int bits (>= 0x7f800000: NaN/Inf inside)
  __m256 max, min;   // lane b: max / min of block b (signs of zeros unspecified)
};

template <DType T>
inline void load8(const void* src, int64_t off, Block8* k, bool extremes) {
  __m256 a[8], mx[8], mn[8];
  for (int b = 0; b < 8; ++b) {
    const __m512 x0 = k->x[2 * b] = Src16<T>::load(src, off + 32 * b);
    const __m512 x1 = k->x[2 * b + 1] = Src16<T>::load(src, off + 32 * b + 16);
    const __m512i ab = _mm512_max_epi32(abs_bits16(x0), abs_bits16(x1));
    a[b] = _mm256_castsi256_ps(_mm256_max_epi32(_mm512_castsi512_si256(ab), hi_half(ab)));
    if (extremes) {
      const __m512 hi = _mm512_max_ps(x0, x1), lo = _mm512_min_ps(x0, x1);
      mx[b] = _mm256_max_ps(_mm512_castps512_ps256(hi), hi_half(hi));
      mn[b] = _mm256_min_ps(_mm512_castps512_ps256(lo), hi_half(lo));
    }
  }
  k->amax_bits = reduce8(a, op_imax);
  if (extremes) {
    k->max = reduce8(mx, op_max);
    k->min = reduce8(mn, op_min);
  }
}

inline bool any_non_finite(__m256 amax_bits) {
  return _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_castps_si256(amax_bits), _mm256_set1_epi32(0x7f7fffff)))) != 0;
}

// id = d != 0 ? 1/d : 0, lane-wise (the references' guard).
inline __m256 safe_recip(__m256 d) {
  const __m256 nz = _mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_NEQ_OQ);
  return _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0f), d), nz);
}

// Element i (0-31) of block b.
inline float element(const Block8& k, int b, int i) {
  alignas(64) float t[16];
  _mm512_store_ps(t, k.x[2 * b + (i >> 4)]);
  return t[i & 15];
}

// Block b's 32 codes clamp(cvtt((x - sub)·id + bias), 0, 15) as split nibbles
// (qs[j] = q[j] | q[j + 16] << 4). Sub is skipped when null (x − 0 == x).
inline void nibbles16(const Block8& k, int b, const __m512* sub, __m512 id, __m512 bias, uint8_t* qs) {
  const __m512i zero = _mm512_setzero_si512(), fifteen = _mm512_set1_epi32(15);
  __m512i q[2];
  for (int h = 0; h < 2; ++h) {
    const __m512 x = sub ? _mm512_sub_ps(k.x[2 * b + h], *sub) : k.x[2 * b + h];
    q[h] = _mm512_max_epi32(_mm512_min_epi32(_mm512_cvttps_epi32(_mm512_add_ps(_mm512_mul_ps(x, id), bias)), fifteen), zero);
  }
  _mm_storeu_si128(reinterpret_cast<__m128i*>(qs), _mm512_cvtepi32_epi8(_mm512_or_si512(q[0], _mm512_slli_epi32(q[1], 4))));
}

// Q5_0 / Q5_1: block b's 32 codes (bits 0-7 of each lane as the
// reference's byte) as its qh (bit j: bit 4 of code j, little-endian) and
// qs (byte j: low nibbles of codes j and j + 16).
inline void pack_q5(__m512i q0, __m512i q1, uint8_t* qh) {
  const __m512i m15 = _mm512_set1_epi32(0x0f), m16 = _mm512_set1_epi32(0x10);
  const uint32_t h = static_cast<uint32_t>(_mm512_test_epi32_mask(q0, m16)) | (static_cast<uint32_t>(_mm512_test_epi32_mask(q1, m16)) << 16);
  std::memcpy(qh, &h, 4);
  const __m512i lo = _mm512_or_si512(_mm512_and_si512(q0, m15), _mm512_slli_epi32(_mm512_and_si512(q1, m15), 4));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(qh + 4), _mm512_cvtepi32_epi8(lo));
}

// Q5_0: min(31, (int8_t)cvtt(x·id + 16.5)) exactly as the reference writes it.
inline void q5_0_codes(const Block8& k, int b, __m512 id, uint8_t* qh) {
  __m512i q[2];
  for (int h = 0; h < 2; ++h) {
    const __m512i i = _mm512_cvttps_epi32(_mm512_add_ps(_mm512_mul_ps(k.x[2 * b + h], id), _mm512_set1_ps(16.5f)));
    q[h] = _mm512_min_epi32(_mm512_srai_epi32(_mm512_slli_epi32(i, 24), 24), _mm512_set1_epi32(31));
  }
  pack_q5(q[0], q[1], qh);
}

// Q5_1: the low byte of cvtt((x − min)·id + 0.5), no clamp, as the reference.
inline void q5_1_codes(const Block8& k, int b, __m512 mn, __m512 id, uint8_t* qh) {
  __m512i q[2];
  for (int h = 0; h < 2; ++h) {
    q[h] = _mm512_cvttps_epi32(_mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(k.x[2 * b + h], mn), id), _mm512_set1_ps(0.5f)));
  }
  pack_q5(q[0], q[1], qh);
}

// Q4_0 (Five false) and Q5_0.
template <DType T, bool Five>
bool sym_batch(const void* src, int64_t off, uint8_t* y) {
  Block8 k;
  load8<T>(src, off, &k, true);
  if (any_non_finite(k.amax_bits)) return false;
  // The signed extreme: +amax if the block's max reaches it, else -amax;
  // blocks holding both take the first one's sign (the reference's order).
  const __m256 amax = k.amax_bits;
  const __m256 pos = _mm256_cmp_ps(k.max, amax, _CMP_EQ_OQ);
  const __m256 neg = _mm256_cmp_ps(k.min, _mm256_xor_ps(amax, _mm256_set1_ps(-0.0f)), _CMP_EQ_OQ);
  const __m256 nonzero = _mm256_cmp_ps(amax, _mm256_setzero_ps(), _CMP_NEQ_OQ);
  __m256 max = _mm256_and_ps(_mm256_blendv_ps(k.min, k.max, pos), nonzero);  // all-zero block: +0
  int ties = _mm256_movemask_ps(_mm256_and_ps(_mm256_and_ps(pos, neg), nonzero));
  if (ties) {
    alignas(32) float m[8];
    _mm256_store_ps(m, max);
    const __m512i a = _mm512_castps_si512(_mm512_castps256_ps512(amax));
    while (ties) {
      const int b = __builtin_ctz(static_cast<unsigned>(ties));
      ties &= ties - 1;
      const __m512i ab = _mm512_permutexvar_epi32(_mm512_set1_epi32(b), a);
      const uint32_t eq = static_cast<uint32_t>(_mm512_cmpeq_epi32_mask(abs_bits16(k.x[2 * b]), ab)) |
                          (static_cast<uint32_t>(_mm512_cmpeq_epi32_mask(abs_bits16(k.x[2 * b + 1]), ab)) << 16);
      m[b] = element(k, b, __builtin_ctz(eq));
    }
    max = _mm256_load_ps(m);
  }
  const __m256 d = _mm256_div_ps(max, _mm256_set1_ps(Five ? -16.0f : -8.0f));
  alignas(32) float id[8];
  _mm256_store_ps(id, safe_recip(d));
  alignas(16) uint16_t dh[8];
  _mm_store_si128(reinterpret_cast<__m128i*>(dh), _mm256_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT));
  const __m512 bias = _mm512_set1_ps(8.5f);
  for (int b = 0; b < 8; ++b) {
    uint8_t* yb = y + (Five ? 22 : 18) * b;
    qm::store_u16(yb, dh[b]);
    if (Five) q5_0_codes(k, b, _mm512_set1_ps(id[b]), yb + 2);
    else nibbles16(k, b, nullptr, _mm512_set1_ps(id[b]), bias, yb + 2);
  }
  return true;
}

// Q4_1 (Five false) and Q5_1.
template <DType T, bool Five>
bool asym_batch(const void* src, int64_t off, uint8_t* y) {
  Block8 k;
  load8<T>(src, off, &k, true);
  if (any_non_finite(k.amax_bits)) return false;
  __m256 min = k.min, max = k.max;
  // A zero extreme carries the sign of the block's first zero.
  const __m256 zero = _mm256_setzero_ps();
  int zeros = _mm256_movemask_ps(_mm256_or_ps(_mm256_cmp_ps(min, zero, _CMP_EQ_OQ), _mm256_cmp_ps(max, zero, _CMP_EQ_OQ)));
  if (zeros) {
    alignas(32) float lo[8], hi[8];
    _mm256_store_ps(lo, min);
    _mm256_store_ps(hi, max);
    while (zeros) {
      const int b = __builtin_ctz(static_cast<unsigned>(zeros));
      zeros &= zeros - 1;
      const uint32_t eq = static_cast<uint32_t>(_mm512_cmp_ps_mask(k.x[2 * b], _mm512_setzero_ps(), _CMP_EQ_OQ)) |
                          (static_cast<uint32_t>(_mm512_cmp_ps_mask(k.x[2 * b + 1], _mm512_setzero_ps(), _CMP_EQ_OQ)) << 16);
      const float first_zero = element(k, b, __builtin_ctz(eq));
      if (lo[b] == 0.0f) lo[b] = first_zero;
      if (hi[b] == 0.0f) hi[b] = first_zero;
    }
    min = _mm256_load_ps(lo);
    max = _mm256_load_ps(hi);
  }
  const __m256 d = _mm256_div_ps(_mm256_sub_ps(max, min), _mm256_set1_ps(Five ? 31.0f : 15.0f));
  alignas(32) float id[8], mn[8];
  _mm256_store_ps(id, safe_recip(d));
  _mm256_store_ps(mn, min);
  alignas(16) uint16_t dh[8], mh[8];
  _mm_store_si128(reinterpret_cast<__m128i*>(dh), _mm256_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT));
  _mm_store_si128(reinterpret_cast<__m128i*>(mh), _mm256_cvtps_ph(min, _MM_FROUND_TO_NEAREST_INT));
  const __m512 bias = _mm512_set1_ps(0.5f);
  for (int b = 0; b < 8; ++b) {
    uint8_t* yb = y + (Five ? 24 : 20) * b;
    qm::store_u16(yb, dh[b]);
    qm::store_u16(yb + 2, mh[b]);
    const __m512 sub = _mm512_set1_ps(mn[b]);
    if (Five) q5_1_codes(k, b, sub, _mm512_set1_ps(id[b]), yb + 4);
    else nibbles16(k, b, &sub, _mm512_set1_ps(id[b]), bias, yb + 4);
  }
  return true;
}

template <DType T>
bool q8_0_batch(const void* src, int64_t off, uint8_t* y) {
  Block8 k;
  load8<T>(src, off, &k, false);
  if (any_non_finite(k.amax_bits)) return false;
  const __m256 d = _mm256_div_ps(k.amax_bits, _mm256_set1_ps(127.0f));
  const __m256 idv = safe_recip(d);
  if (_mm256_movemask_ps(_mm256_cmp_ps(idv, _mm256_set1_ps(3.402823466e+38f), _CMP_GT_OQ))) return false;
  alignas(32) float id[8];
  _mm256_store_ps(id, idv);
  alignas(16) uint16_t dh[8];
  _mm_store_si128(reinterpret_cast<__m128i*>(dh), _mm256_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT));
  // roundf(t) == trunc(t + copysign(0.49999997f, t)) for |t| < 2^8, as in
  // quant_avx2.cc; |t| <= 127(1+eps).
  const __m512i sign = _mm512_set1_epi32(INT32_MIN), half = _mm512_castps_si512(_mm512_set1_ps(0.49999997f));
  // Two blocks' 64 codes: saturating packs (exact: |q| <= 127) leave 128-bit
  // lane L holding elements 4L..4L+3 of block b's halves, then of block
  // b + 1's, one dword each; a dword permutation puts them in order.
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  for (int b = 0; b < 8; b += 2) {
    __m512i p[2];
    for (int j = 0; j < 2; ++j) {
      const __m512 vid = _mm512_set1_ps(id[b + j]);
      __m512i q[2];
      for (int h = 0; h < 2; ++h) {
        const __m512 t = _mm512_mul_ps(k.x[2 * (b + j) + h], vid);
        // (t & sign) | half in one ternary-logic op (0xea: (A & B) | C)
        const __m512 r = _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_castps_si512(t), sign, half, 0xea));
        q[h] = _mm512_cvttps_epi32(_mm512_add_ps(t, r));
      }
      p[j] = _mm512_packs_epi32(q[0], q[1]);
    }
    const __m512i codes = _mm512_permutexvar_epi32(order, _mm512_packs_epi16(p[0], p[1]));
    uint8_t* yb = y + 34 * b;
    qm::store_u16(yb, dh[b]);
    qm::store_u16(yb + 34, dh[b + 1]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(yb + 2), _mm512_castsi512_si256(codes));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(yb + 36), _mm512_extracti64x4_epi64(codes, 1));
  }
  return true;
}

template <DType T>
GgmlBatchFn batch_for(QFormat f) {
  switch (f) {
    case QFormat::Q4_0: return sym_batch<T, false>;
    case QFormat::Q4_1: return asym_batch<T, false>;
    case QFormat::Q5_0: return sym_batch<T, true>;
    case QFormat::Q5_1: return asym_batch<T, true>;
    case QFormat::Q8_0: return q8_0_batch<T>;
    default: return nullptr;
  }
}

}  // namespace

GgmlBatchFn ggml_batch_fn(QFormat f, DType t) {
  switch (t) {
    case DType::F32: return batch_for<DType::F32>(f);
    case DType::F16: return batch_for<DType::F16>(f);
    case DType::BF16: return batch_for<DType::BF16>(f);
    default: return nullptr;
  }
}

// ---- error statistics (quant_errsimd.h): the reference's 8 lanes
// (quant_math.h) as one zmm of doubles, the same operations per lane.

namespace {

struct Zmm {
  struct Acc {
    __m512d se, sx, sy, dot, mx;
  };
  static Acc zero() {
    Acc a;
    a.se = a.sx = a.sy = a.dot = a.mx = _mm512_setzero_pd();
    return a;
  }
  static void add8(Acc& a, __m256 xf, __m256 yf) {
    const __m512d x = _mm512_cvtps_pd(xf), y = _mm512_cvtps_pd(yf);
    const __m512d e = _mm512_sub_pd(x, y);
    a.se = _mm512_add_pd(a.se, _mm512_mul_pd(e, e));  // e*e is rounded: no FMA here
    // x*x, y*y, x*y of two floats are exact in double (quant_math.h), so
    // the fused multiply-add rounds once, as the reference's add does.
    a.sx = _mm512_fmadd_pd(x, x, a.sx);
    a.sy = _mm512_fmadd_pd(y, y, a.sy);
    a.dot = _mm512_fmadd_pd(x, y, a.dot);
    // MAXPD(|e|, m) returns m when |e| is NaN: the reference's comparison.
    const __m512i abs_mask = _mm512_set1_epi64(0x7fffffffffffffffLL);
    a.mx = _mm512_max_pd(_mm512_castsi512_pd(_mm512_and_si512(_mm512_castpd_si512(e), abs_mask)), a.mx);
  }
  static bool x_finite(const Acc& a) {
    return _mm512_cmp_pd_mask(a.sx, _mm512_set1_pd(__builtin_inf()), _CMP_LT_OQ) == 0xff;
  }
  static void store(const Acc& a, qm::ErrorLanes* l) {
    _mm512_storeu_pd(l->se, a.se);
    _mm512_storeu_pd(l->sx, a.sx);
    _mm512_storeu_pd(l->sy, a.sy);
    _mm512_storeu_pd(l->dot, a.dot);
    double m[8];
    _mm512_storeu_pd(m, a.mx);
    l->max_abs = 0.0;
    for (int k = 0; k < 8; ++k) l->max_abs = m[k] > l->max_abs ? m[k] : l->max_abs;
  }
};

}  // namespace

ErrorRowFn error_row_fn() { return es::row_plain_any<Zmm>; }

ErrorDeqRowFn error_deq_row_fn(const DequantizeArgs& q, DType orig) { return es::fused_fn<Zmm>(q, orig); }

}  // namespace avx512
}  // namespace st

#elif defined(__x86_64__) || defined(_M_X64)  // built without AVX-512 flags: never called

namespace st {
namespace avx512 {
bool compiled() { return false; }
QuantRowFn ggml_search_row_fn(const QuantizeArgs&) { return nullptr; }
GgmlBatchFn ggml_batch_fn(QFormat, DType) { return nullptr; }
ErrorRowFn error_row_fn() { return nullptr; }
ErrorDeqRowFn error_deq_row_fn(const DequantizeArgs&, DType) { return nullptr; }
void sym_sums8(const float*, const float*, int, const float*, int, float, float, __m256*, __m256*) {}
void asym_sums8(const float*, const float*, int, const float*, const float*, int, float, float, __m256*, __m256*) {}
void q4_1_sums8(const float*, const float*, float, const float*, int, __m256*, __m256*, __m256*) {}
}  // namespace avx512
}  // namespace st

#endif
