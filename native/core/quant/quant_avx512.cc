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

#include <cstring>

#include "quant_ksimd.h"
#include "quant_math.h"

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

// ---- error statistics: the reference's 8 lanes (quant_math.h) as one zmm of
// doubles, element j of a row in lane j % 8, the same operations per lane.

namespace {

template <DType T> __m256 load8(const void* p, int64_t i);
template <> __m256 load8<DType::F32>(const void* p, int64_t i) { return _mm256_loadu_ps(static_cast<const float*>(p) + i); }
template <> __m256 load8<DType::F16>(const void* p, int64_t i) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i)));
}
template <> __m256 load8<DType::BF16>(const void* p, int64_t i) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

struct ErrorAcc512 {
  __m512d se, sx, sy, dot, mx;
};

ErrorAcc512 error_acc_zero() {
  ErrorAcc512 a;
  a.se = a.sx = a.sy = a.dot = a.mx = _mm512_setzero_pd();
  return a;
}

// Eight originals (element j of the row in lane j % 8) and their
// reconstructions into the lanes. Masked: non-finite originals count as 0
// (load_f32 with NonFinite::Zero); unmasked, they are taken as they are,
// which only the caller's check makes right.
template <bool Masked>
inline void error_add8(ErrorAcc512& a, __m256 xf, __m256 yf) {
  if (Masked) {
    const __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), xf);
    xf = _mm256_and_ps(xf, _mm256_cmp_ps(ax, _mm256_set1_ps(__builtin_inff()), _CMP_LT_OQ));
  }
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

// The vector part of a row: n8 values (a multiple of 8).
template <DType T, bool Masked>
ErrorAcc512 error_lanes8(const void* orig, int64_t offset, const float* deq, int64_t n8) {
  ErrorAcc512 a = error_acc_zero();
  for (int64_t j = 0; j < n8; j += 8) error_add8<Masked>(a, load8<T>(orig, offset + j), _mm256_loadu_ps(deq + j));
  return a;
}

// Optimistically without the non-finite mask (an eighth of the loop's work):
// a non-finite x makes x*x, hence its sx lane, infinite or NaN for good,
// while finite floats' squares (< 2^256 each) cannot overflow the double
// sum. So all-finite sx lanes prove every x was finite and the unmasked sums
// are the masked ones; otherwise the caller sums the row again, masked.
inline bool all_x_finite(const ErrorAcc512& a) {
  return _mm512_cmp_pd_mask(a.sx, _mm512_set1_pd(__builtin_inf()), _CMP_LT_OQ) == 0xff;
}

// The lanes folded as quant_math.h specifies, after the tail (n % 8 values,
// from element j8 of the row, in lanes 0..) added the reference's way.
template <DType T>
void error_finish(const ErrorAcc512& a, const void* orig, int64_t offset, const float* deq, int64_t j8, int64_t n,
                  ErrorStats* s) {
  qm::ErrorLanes l;
  _mm512_storeu_pd(l.se, a.se);
  _mm512_storeu_pd(l.sx, a.sx);
  _mm512_storeu_pd(l.sy, a.sy);
  _mm512_storeu_pd(l.dot, a.dot);
  double m[8];
  _mm512_storeu_pd(m, a.mx);
  l.max_abs = 0.0;
  for (int k = 0; k < 8; ++k) l.max_abs = m[k] > l.max_abs ? m[k] : l.max_abs;
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

template <DType T>
void error_row_t(const void* orig, DType, int64_t offset, const float* deq, int64_t n, ErrorStats* s) {
  const int64_t n8 = n - n % 8;
  ErrorAcc512 a = error_lanes8<T, false>(orig, offset, deq, n8);
  if (!all_x_finite(a)) a = error_lanes8<T, true>(orig, offset, deq, n8);
  error_finish<T>(a, orig, offset, deq, n8, n, s);
}

// ---- the same with Q8_0 / Q4_0 / Q4_K / Q5_K / INT8 / INT4 dequantized in registers (the values of
// qm::q8_0_unblock / q4_0_unblock, qk's K-quant unblocking, ref::
// dequantize_row's groups and the AVX2 dequantize_*_row), so the row never
// goes through memory.

template <DType T, QFormat F, bool Masked>
ErrorAcc512 error_lanes_ggml(const void* orig, int64_t offset, const uint8_t* in, int64_t nb) {
  constexpr int kBytes = F == QFormat::Q8_0 ? 34 : 18;
  ErrorAcc512 a = error_acc_zero();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = in + b * kBytes;
    const __m256 d = _mm256_set1_ps(f16_to_f32(qm::load_u16(blk)));
    const int64_t o = offset + b * qm::QK;
    for (int k = 0; k < 4; ++k) {
      __m256i q;
      if (F == QFormat::Q8_0) {
        q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 2 + 8 * k)));
      } else {  // element j < 16: low nibble of qs[j]; j >= 16: high nibble of qs[j - 16]
        const __m256i u = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 2 + 8 * (k & 1))));
        q = _mm256_sub_epi32(_mm256_and_si256(k < 2 ? u : _mm256_srli_epi32(u, 4), _mm256_set1_epi32(0x0f)),
                             _mm256_set1_epi32(8));
      }
      error_add8<Masked>(a, load8<T>(orig, o + 8 * k), _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
    }
  }
  return a;
}

template <DType T, QFormat F>
void error_ggml_row_t(const MatrixView& orig, const DequantizeArgs& q, int64_t row, ErrorStats* s) {
  const int64_t nb = q.cols / qm::QK;
  const uint8_t* in = q.data + row * nb * (F == QFormat::Q8_0 ? 34 : 18);
  const int64_t offset = row * q.cols;
  ErrorAcc512 a = error_lanes_ggml<T, F, false>(orig.data, offset, in, nb);
  if (!all_x_finite(a)) a = error_lanes_ggml<T, F, true>(orig.data, offset, in, nb);
  error_finish<T>(a, orig.data, offset, nullptr, q.cols, q.cols, s);  // no tail: rows are whole blocks
}

// Q4_K / Q5_K super-blocks of 256, as the AVX2 dequantize_kquant_row:
// sub-block j of 32 values has dl = d * sc_j, ml = dmin * m_j (qk::q45_k_sub)
// and x = dl * q - ml.
template <DType T, QFormat F, bool Masked>
ErrorAcc512 error_lanes_k45(const void* orig, int64_t offset, const uint8_t* in, int64_t nb) {
  constexpr bool kFive = F == QFormat::Q5_K;
  constexpr int kBytes = kFive ? 176 : 144;
  ErrorAcc512 a = error_acc_zero();
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
        error_add8<Masked>(a, load8<T>(orig, o + i), _mm256_sub_ps(_mm256_mul_ps(dl, _mm256_cvtepi32_ps(q)), ml));
      }
    }
  }
  return a;
}

template <DType T, QFormat F>
void error_k45_row_t(const MatrixView& orig, const DequantizeArgs& q, int64_t row, ErrorStats* s) {
  const int64_t nb = q.cols / qk::QK_K;
  const uint8_t* in = q.data + row * nb * (F == QFormat::Q5_K ? 176 : 144);
  const int64_t offset = row * q.cols;
  ErrorAcc512 a = error_lanes_k45<T, F, false>(orig.data, offset, in, nb);
  if (!all_x_finite(a)) a = error_lanes_k45<T, F, true>(orig.data, offset, in, nb);
  error_finish<T>(a, orig.data, offset, nullptr, q.cols, q.cols, s);  // no tail: rows are whole blocks
}

template <QFormat F>
ErrorDeqRowFn error_k45_row_fn(DType t) {
  if (t == DType::F16) return error_k45_row_t<DType::F16, F>;
  if (t == DType::BF16) return error_k45_row_t<DType::BF16, F>;
  return error_k45_row_t<DType::F32, F>;
}

// INT8 / INT4 groups (a multiple of 8 values), as the AVX2
// dequantize_int_row: (u - 2^(bits-1) - z) * s with u the stored code.
template <DType T, int Bits, bool Masked>
ErrorAcc512 error_lanes_int(const void* orig, int64_t offset, const DequantizeArgs& q, int64_t row, const uint8_t* in) {
  const int64_t ng = q.cols / q.group;
  ErrorAcc512 a = error_acc_zero();
  for (int64_t gi = 0; gi < ng; ++gi) {
    const __m256 sc = _mm256_set1_ps(qm::load_scale(q.scales, row * ng + gi, q.scale_dtype));
    const __m256i off = _mm256_set1_epi32((1 << (Bits - 1)) + (q.zeros ? q.zeros[row * ng + gi] : 0));
    for (int64_t j = gi * q.group; j < (gi + 1) * q.group; j += 8) {
      __m256i u;
      if (Bits == 8) {
        u = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + j)));
      } else {
        uint32_t word;
        std::memcpy(&word, in + j / 2, 4);
        u = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int32_t>(word)), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)),
                             _mm256_set1_epi32(0x0f));
      }
      error_add8<Masked>(a, load8<T>(orig, offset + j), _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(u, off)), sc));
    }
  }
  return a;
}

template <DType T, int Bits>
void error_int_row_t(const MatrixView& orig, const DequantizeArgs& q, int64_t row, ErrorStats* s) {
  const uint8_t* in = q.data + row * quant_sizes(q.format, q.cols, q.group).data_row_bytes;
  const int64_t offset = row * q.cols;
  ErrorAcc512 a = error_lanes_int<T, Bits, false>(orig.data, offset, q, row, in);
  if (!all_x_finite(a)) a = error_lanes_int<T, Bits, true>(orig.data, offset, q, row, in);
  error_finish<T>(a, orig.data, offset, nullptr, q.cols, q.cols, s);  // no tail: rows are whole groups of 8k
}

template <int Bits>
ErrorDeqRowFn error_int_row_fn(DType t) {
  if (t == DType::F16) return error_int_row_t<DType::F16, Bits>;
  if (t == DType::BF16) return error_int_row_t<DType::BF16, Bits>;
  return error_int_row_t<DType::F32, Bits>;
}

template <QFormat F>
ErrorDeqRowFn error_ggml_row_fn(DType t) {
  if (t == DType::F16) return error_ggml_row_t<DType::F16, F>;
  if (t == DType::BF16) return error_ggml_row_t<DType::BF16, F>;
  return error_ggml_row_t<DType::F32, F>;
}

void error_row_any(const void* orig, DType t, int64_t offset, const float* deq, int64_t n, ErrorStats* s) {
  switch (t) {
    case DType::F16: error_row_t<DType::F16>(orig, t, offset, deq, n, s); return;
    case DType::BF16: error_row_t<DType::BF16>(orig, t, offset, deq, n, s); return;
    default: error_row_t<DType::F32>(orig, t, offset, deq, n, s); return;
  }
}

}  // namespace

ErrorRowFn error_row_fn() { return error_row_any; }

ErrorDeqRowFn error_deq_row_fn(const DequantizeArgs& q, DType orig) {
  if (q.format == QFormat::Q8_0) return error_ggml_row_fn<QFormat::Q8_0>(orig);
  if (q.format == QFormat::Q4_0) return error_ggml_row_fn<QFormat::Q4_0>(orig);
  if (q.format == QFormat::Q4_K) return error_k45_row_fn<QFormat::Q4_K>(orig);
  if (q.format == QFormat::Q5_K) return error_k45_row_fn<QFormat::Q5_K>(orig);
  if (q.group % 8 == 0 && q.format == QFormat::Int8) return error_int_row_fn<8>(orig);
  if (q.group % 8 == 0 && q.format == QFormat::Int4) return error_int_row_fn<4>(orig);
  return nullptr;
}

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
