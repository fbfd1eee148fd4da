// AVX-512 inner loops of the MSE search (see quant_avx512.h). Compiled with
// -mavx512f -mavx512bw -mavx512vl in its own translation unit. A zmm register
// holds exactly the reference's 16 accumulation lanes (element j in lane
// j % 16), so a 32-value block is two vector steps instead of four, with the
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
ErrorRowFn error_row_fn() { return nullptr; }
ErrorDeqRowFn error_deq_row_fn(const DequantizeArgs&, DType) { return nullptr; }
void sym_sums8(const float*, const float*, int, const float*, int, float, float, __m256*, __m256*) {}
void asym_sums8(const float*, const float*, int, const float*, const float*, int, float, float, __m256*, __m256*) {}
void q4_1_sums8(const float*, const float*, float, const float*, int, __m256*, __m256*, __m256*) {}
}  // namespace avx512
}  // namespace st

#endif
