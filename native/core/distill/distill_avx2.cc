// AVX2 + FMA + F16C twin of distill_ref.cc. Compiled with -mavx2 -mfma
// -mf16c in its own translation unit and only called when cpuid says so.
// The sweeps are those of the reference, eight logits at a time, with the
// dtype conversion fused into the loads and stores:
//
//   sweep 1   per-lane online max / log-sum-exp, by blocks of 64 logits:
//             the block's maximum first (a cheap pass over data in L1),
//             then one exp per logit against it, so a lane's sum is
//             rescaled once per block that raises its maximum, not per
//             logit; the eight lanes are merged at the end of the row.
//             The exps are kept in a per-thread scratch row, with the
//             lane maxima of each block.
//   sweep 1b  reverse-kl / jsd: the divergence the gradient needs
//   sweep 2   the gradient (and forward-kl's divergence): probabilities
//             are sweep 1's exps times one factor per block and lane, so
//             this sweep needs no exp per logit
//
// Sweeps 1b and 2 read the row and the scratch from L2 (a 32000-logit f32
// row pair plus scratch is under 1 MiB), so memory sees one pass per row.
//
// The label and top-k terms are written afterwards from the scalar helpers
// of distill_ref.cc, exactly as the reference does. The exp is a
// polynomial (vexp below): results match the reference within a stated
// tolerance, not bit for bit (test/distill.test.ts, distill_test.cc).
#include "distill_kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

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

// The last n < 8 logits of a row, padded with zeros.
inline __m256 load_partial(const void* p, DType t, int64_t i, int n) {
  alignas(32) float buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int l = 0; l < n; ++l) buf[l] = dm::load_logit(p, t, i + l);
  return _mm256_load_ps(buf);
}

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

inline void store_partial(void* p, DType t, int64_t i, int n, __m256 v) {
  alignas(32) float buf[8];
  _mm256_store_ps(buf, v);
  for (int l = 0; l < n; ++l) dm::store_grad(p, t, i + l, buf[l]);
}

inline __m256 tail_mask(int n) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane));
}

inline bool all_set(__m256 m) { return _mm256_movemask_ps(m) == 0xff; }

// Sum of the eight lanes, in double, in a fixed order.
inline __m256d widen_sum(__m256 v) {
  return _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}
inline double hsum_pd(__m256d v) {
  alignas(32) double d[4];
  _mm256_store_pd(d, v);
  return (d[0] + d[2]) + (d[1] + d[3]);
}

// ---- sweep 1 ---------------------------------------------------------------

// Eight lane sums in double (as dm::Lse keeps them).
struct Sum8 {
  __m256d lo, hi;
};
inline Sum8 sum8_zero() { return {_mm256_setzero_pd(), _mm256_setzero_pd()}; }
inline void add8(Sum8& s, __m256 v) {
  s.lo = _mm256_add_pd(s.lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
  s.hi = _mm256_add_pd(s.hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}
inline void mul8(Sum8& s, __m256 f) {
  s.lo = _mm256_mul_pd(s.lo, _mm256_cvtps_pd(_mm256_castps256_ps128(f)));
  s.hi = _mm256_mul_pd(s.hi, _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
}

// The row's scratch (sweep_scratch): sweep 1's exps, kept for sweep 2,
// and the lane maxima each block's exps were taken against. With them,
// sweep 2 gets q = e·exp((m_block − M)/T − log S) with one multiply per
// logit and one exp per block, instead of an exp per logit.
struct Scratch {
  float* eu;   // exp((z − m)/T)
  float* ez;   // exp(z − m), T != 1 and a cross-entropy term
  float* et;   // exp((t − m_t)/T), dense teacher
  float* lm;   // jsd: log m, from sweep 1b
  float* bmz;  // per block: the 8 lane maxima of z
  float* bmt;  // and of t
};

Scratch make_scratch(int64_t cols, bool sep, bool dense, bool jsd) {
  const int64_t padded = (cols + 7) & ~int64_t{7};
  const int64_t blocks = (cols + 63) / 64 + 1;
  float* base = sweep_scratch(padded * 4 + blocks * 16);
  Scratch s;
  s.eu = base;
  s.ez = sep ? base + padded : nullptr;
  s.et = dense ? base + 2 * padded : nullptr;
  s.lm = jsd ? base + 3 * padded : nullptr;
  s.bmz = base + 4 * padded;
  s.bmt = s.bmz + blocks * 8;
  return s;
}

// Per-lane running state: maxima of the raw logits, sums of exp((x − m)/T).
struct Sweep1 {
  __m256 mz;           // student: shared maximum of u = z/T and (T != 1) z
  Sum8 su, sz;
  __m256 mt;           // dense teacher
  Sum8 st;
  __m256 zbad;         // Σ z·0: 0 while every student logit is finite, NaN after any other
  __m256 okt;          // all lanes stay set while teacher logits are < +Infinity (and not NaN)
};

// Raises the lane maxima to `bm`, rescaling the sums, when any lane grows.
inline void raise(__m256& m, __m256 bm, Sum8& s, __m256 inv_t, Sum8* s2) {
  const __m256 nm = _mm256_max_ps(m, bm);
  if (_mm256_movemask_ps(_mm256_cmp_ps(nm, m, _CMP_GT_OQ)) == 0) return;
  const __m256 d = _mm256_sub_ps(m, nm);
  mul8(s, vexp_le0(_mm256_mul_ps(d, inv_t)));
  if (s2) mul8(*s2, vexp_le0(d));
  m = nm;
}

struct Consts {
  __m256 inv_t, inf;
};

constexpr int64_t kBlock = 64;  // logits per block: 8 vectors
constexpr uint64_t kStreamBytes = uint64_t{32} << 20;  // gradients this large are stored non-temporally

template <DType ZT, DType TT>
void sweep1(const void* zp, const void* tp, int64_t base, int64_t cols, bool dense, bool sep, bool square, const Consts& k,
            Sweep1& w, const Scratch& sc) {
  const int64_t full = cols & ~int64_t{7};
  int64_t b = 0;
  for (int64_t j0 = 0; j0 < full; j0 += kBlock, ++b) {
    const int64_t j1 = j0 + kBlock < full ? j0 + kBlock : full;
    __m256 bz = _mm256_set1_ps(dm::neg_inf()), bt = bz;
    for (int64_t j = j0; j < j1; j += 8) {
      bz = _mm256_max_ps(bz, Src<ZT>::load(zp, base + j));
      if (dense) bt = _mm256_max_ps(bt, Src<TT>::load(tp, base + j));
    }
    raise(w.mz, bz, w.su, k.inv_t, sep ? &w.sz : nullptr);
    _mm256_storeu_ps(sc.bmz + 8 * b, w.mz);
    if (dense) {
      raise(w.mt, bt, w.st, k.inv_t, nullptr);
      _mm256_storeu_ps(sc.bmt + 8 * b, w.mt);
    }
    // The block's terms: up to 8 per lane summed in f32, then into double.
    __m256 su = _mm256_setzero_ps(), sz = su, st = su;
    for (int64_t j = j0; j < j1; j += 8) {
      const __m256 z = Src<ZT>::load(zp, base + j);
      w.zbad = _mm256_fmadd_ps(z, _mm256_setzero_ps(), w.zbad);
      const __m256 dz = _mm256_sub_ps(z, w.mz);
      const __m256 eu = vexp_le0(_mm256_mul_ps(dz, k.inv_t));
      _mm256_storeu_ps(sc.eu + j, eu);
      su = _mm256_add_ps(su, eu);
      if (sep) {
        // T = 2: exp(z − m) = exp((z − m)/2)², one multiply for an exp.
        const __m256 ez = square ? _mm256_mul_ps(eu, eu) : vexp_le0(dz);
        _mm256_storeu_ps(sc.ez + j, ez);
        sz = _mm256_add_ps(sz, ez);
      }
      if (dense) {
        const __m256 t = Src<TT>::load(tp, base + j);
        w.okt = _mm256_and_ps(w.okt, _mm256_cmp_ps(t, k.inf, _CMP_LT_OQ));
        const __m256 et = vexp_le0(_mm256_mul_ps(_mm256_sub_ps(t, w.mt), k.inv_t));
        _mm256_storeu_ps(sc.et + j, et);
        st = _mm256_add_ps(st, et);
      }
    }
    add8(w.su, su);
    if (sep) add8(w.sz, sz);
    if (dense) add8(w.st, st);
  }
  const int rest = static_cast<int>(cols - full);
  if (rest > 0) {
    // The last partial vector is a block of its own. Padding lanes hold 0
    // (finite) and are masked out of maxima, exps and sums.
    const __m256 valid = tail_mask(rest);
    const __m256 ninf = _mm256_set1_ps(dm::neg_inf());
    const __m256 z = load_partial(zp, ZT, base + full, rest);
    raise(w.mz, _mm256_blendv_ps(ninf, z, valid), w.su, k.inv_t, sep ? &w.sz : nullptr);
    _mm256_storeu_ps(sc.bmz + 8 * b, w.mz);
    w.zbad = _mm256_fmadd_ps(z, _mm256_setzero_ps(), w.zbad);  // padding is 0
    const __m256 dz = _mm256_sub_ps(z, w.mz);
    const __m256 eu = _mm256_and_ps(valid, vexp_le0(_mm256_mul_ps(dz, k.inv_t)));
    _mm256_storeu_ps(sc.eu + full, eu);
    add8(w.su, eu);
    if (sep) {
      const __m256 ez = _mm256_and_ps(valid, square ? _mm256_mul_ps(eu, eu) : vexp_le0(dz));
      _mm256_storeu_ps(sc.ez + full, ez);
      add8(w.sz, ez);
    }
    if (dense) {
      const __m256 t = load_partial(tp, TT, base + full, rest);
      raise(w.mt, _mm256_blendv_ps(ninf, t, valid), w.st, k.inv_t, nullptr);
      _mm256_storeu_ps(sc.bmt + 8 * b, w.mt);
      w.okt = _mm256_and_ps(w.okt, _mm256_cmp_ps(t, k.inf, _CMP_LT_OQ));
      const __m256 et = _mm256_and_ps(valid, vexp_le0(_mm256_mul_ps(_mm256_sub_ps(t, w.mt), k.inv_t)));
      _mm256_storeu_ps(sc.et + full, et);
      add8(w.st, et);
    }
  }
}

// Merges the eight lanes as dm::lse_merge does, lane 0 first.
inline dm::Lse merge_lanes(__m256 m, const Sum8& s, float inv_t) {
  alignas(32) float mm[8];
  alignas(32) double ss[8];
  _mm256_store_ps(mm, m);
  _mm256_store_pd(ss, s.lo);
  _mm256_store_pd(ss + 4, s.hi);
  dm::Lse acc = {mm[0], ss[0]};
  for (int l = 1; l < 8; ++l) acc = dm::lse_merge(acc, dm::Lse{mm[l], ss[l]}, inv_t);
  return acc;
}

// ---- sweeps 1b and 2 --------------------------------------------------------

struct Row {
  __m256 mz, mt, lsu, lsz, lst;       // broadcast row statistics
  __m256 a_t, a_t_jsd, b, scale;      // coefficients
  __m256 log_beta, log_1mb, kl;       // jsd; kl: KL(q‖p) or KL(q‖m)
  __m256 inv_t, floor;
};

inline __m256 log_q(const Row& r, __m256 z) { return _mm256_sub_ps(_mm256_mul_ps(_mm256_sub_ps(z, r.mz), r.inv_t), r.lsu); }
inline __m256 log_p(const Row& r, __m256 t) {
  return _mm256_sub_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_sub_ps(t, r.mt), r.inv_t), r.floor), r.lst);
}
// dm::log_m on 8 lanes.
inline __m256 log_m(const Row& r, __m256 lp, __m256 lq) {
  const __m256 x = _mm256_add_ps(r.log_beta, lp), y = _mm256_add_ps(r.log_1mb, lq);
  const __m256 hi = _mm256_max_ps(x, y), lo = _mm256_min_ps(x, y);
  return _mm256_add_ps(hi, vlog1p01(vexp_le0(_mm256_sub_ps(lo, hi))));
}

// A block's factors turning sweep 1's exps into probabilities:
// q = eu·fu, s = ez·fz, p = et·ft.
struct Factors {
  __m256 fu, fz, ft;
};

inline Factors factors(const Row& r, const Scratch& sc, int64_t b, bool sep, bool dense) {
  Factors f;
  const __m256 dz = _mm256_sub_ps(_mm256_loadu_ps(sc.bmz + 8 * b), r.mz);
  f.fu = vexp_le0(_mm256_sub_ps(_mm256_mul_ps(dz, r.inv_t), r.lsu));
  f.fz = sep ? vexp_le0(_mm256_sub_ps(dz, r.lsz)) : f.fu;
  f.ft = dense ? vexp_le0(_mm256_sub_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(sc.bmt + 8 * b), r.mt), r.inv_t), r.lst))
               : _mm256_setzero_ps();
  return f;
}

enum class Mode { NoTeacher, Forward, Reverse, Jsd };

// One vector of sweep 2: the gradient of 8 logits (without the one-hot and
// top-k terms) and, for forward-kl, their divergence terms in *dterm.
template <Mode M>
inline __m256 grad8(const Row& r, const Scratch& sc, const Factors& f, int64_t j, __m256 z, __m256 t, bool ce, bool t1,
                    __m256* dterm) {
  const __m256 q = _mm256_mul_ps(_mm256_loadu_ps(sc.eu + j), f.fu);
  __m256 s = _mm256_setzero_ps();
  if (ce) s = t1 ? q : _mm256_mul_ps(_mm256_loadu_ps(sc.ez + j), f.fz);
  const __m256 ce_part = _mm256_mul_ps(r.b, s);  // dm: b·(s − 0)
  __m256 kd_part;
  if (M == Mode::NoTeacher) {
    kd_part = _mm256_mul_ps(r.a_t, q);
  } else if (M == Mode::Forward) {
    const __m256 p = _mm256_mul_ps(_mm256_loadu_ps(sc.et + j), f.ft);
    *dterm = _mm256_mul_ps(p, _mm256_sub_ps(log_p(r, t), log_q(r, z)));
    kd_part = _mm256_mul_ps(r.a_t, _mm256_sub_ps(q, p));
  } else if (M == Mode::Reverse) {
    kd_part = _mm256_mul_ps(r.a_t, _mm256_mul_ps(q, _mm256_sub_ps(_mm256_sub_ps(log_q(r, z), log_p(r, t)), r.kl)));
  } else {
    const __m256 lm = _mm256_loadu_ps(sc.lm + j);
    kd_part = _mm256_mul_ps(r.a_t_jsd, _mm256_mul_ps(q, _mm256_sub_ps(_mm256_sub_ps(log_q(r, z), lm), r.kl)));
  }
  return _mm256_mul_ps(_mm256_add_ps(kd_part, ce_part), r.scale);
}

template <DType ZT, DType TT, Mode M>
double sweep2(const DistillArgs& a, const Row& r, const Scratch& sc, int64_t base, bool write, bool stream, bool ce, bool t1) {
  const void* zp = a.student.data;
  const void* tp = a.teacher.data;
  void* gp = a.grad;
  const bool sep = ce && !t1, dense = M != Mode::NoTeacher;
  const int64_t cols = a.student.cols, full = cols & ~int64_t{7};
  __m256d dsum = _mm256_setzero_pd();
  __m256 dterm = _mm256_setzero_ps();
  int64_t b = 0;
  for (int64_t j0 = 0; j0 < full; j0 += kBlock, ++b) {
    const int64_t j1 = j0 + kBlock < full ? j0 + kBlock : full;
    const Factors f = factors(r, sc, b, sep, dense);
    __m256 dacc = _mm256_setzero_ps();
    for (int64_t j = j0; j < j1; j += 8) {
      // z and t only where the divergence needs their log-probabilities.
      const __m256 z = M == Mode::NoTeacher ? dterm : Src<ZT>::load(zp, base + j);
      const __m256 t = M == Mode::NoTeacher || M == Mode::Jsd ? dterm : Src<TT>::load(tp, base + j);
      const __m256 g = grad8<M>(r, sc, f, j, z, t, ce, t1, &dterm);
      if (M == Mode::Forward) dacc = _mm256_add_ps(dacc, dterm);
      if (stream) Dst<ZT>::stream(gp, base + j, g);
      else if (write) Dst<ZT>::store(gp, base + j, g);
    }
    if (M == Mode::Forward) dsum = _mm256_add_pd(dsum, widen_sum(dacc));
  }
  const int rest = static_cast<int>(cols - full);
  if (rest > 0) {
    const Factors f = factors(r, sc, b, sep, dense);
    const __m256 z = load_partial(zp, ZT, base + full, rest);
    const __m256 t = M == Mode::NoTeacher || M == Mode::Jsd ? z : load_partial(tp, TT, base + full, rest);
    const __m256 g = grad8<M>(r, sc, f, full, z, t, ce, t1, &dterm);
    if (M == Mode::Forward) dsum = _mm256_add_pd(dsum, widen_sum(_mm256_and_ps(tail_mask(rest), dterm)));
    if (write) store_partial(gp, ZT, base + full, rest, g);
  }
  if (stream) _mm_sfence();  // order the streamed stores before the row is reported done
  return M == Mode::Forward ? hsum_pd(dsum) : 0.0;
}

// Sweep 1b: KL(q‖p) (reverse), or β·KL(p‖m) + (1 − β)·KL(q‖m) and KL(q‖m)
// (jsd, which keeps log m for sweep 2).
template <DType ZT, DType TT, bool JSD>
void sweep1b(const DistillArgs& a, const Row& r, const Scratch& sc, int64_t base, double* kpm_out, double* kqm_out) {
  const void* zp = a.student.data;
  const void* tp = a.teacher.data;
  const int64_t cols = a.student.cols, full = cols & ~int64_t{7};
  __m256d kpm = _mm256_setzero_pd(), kqm = kpm;
  auto terms = [&](const Factors& f, int64_t j, __m256 z, __m256 t, __m256* tp_, __m256* tq_) {
    const __m256 lq = log_q(r, z), lp = log_p(r, t);
    const __m256 q = _mm256_mul_ps(_mm256_loadu_ps(sc.eu + j), f.fu);
    if (!JSD) {
      *tq_ = _mm256_mul_ps(q, _mm256_sub_ps(lq, lp));
      return;
    }
    const __m256 p = _mm256_mul_ps(_mm256_loadu_ps(sc.et + j), f.ft);
    const __m256 lm = log_m(r, lp, lq);
    _mm256_storeu_ps(sc.lm + j, lm);
    *tp_ = _mm256_mul_ps(p, _mm256_sub_ps(lp, lm));
    *tq_ = _mm256_mul_ps(q, _mm256_sub_ps(lq, lm));
  };
  int64_t b = 0;
  for (int64_t j0 = 0; j0 < full; j0 += kBlock, ++b) {
    const int64_t j1 = j0 + kBlock < full ? j0 + kBlock : full;
    const Factors f = factors(r, sc, b, false, true);
    __m256 ap = _mm256_setzero_ps(), aq = ap;
    for (int64_t j = j0; j < j1; j += 8) {
      __m256 tp_ = _mm256_setzero_ps(), tq_ = tp_;
      terms(f, j, Src<ZT>::load(zp, base + j), Src<TT>::load(tp, base + j), &tp_, &tq_);
      ap = _mm256_add_ps(ap, tp_);
      aq = _mm256_add_ps(aq, tq_);
    }
    kpm = _mm256_add_pd(kpm, widen_sum(ap));
    kqm = _mm256_add_pd(kqm, widen_sum(aq));
  }
  const int rest = static_cast<int>(cols - full);
  if (rest > 0) {
    const Factors f = factors(r, sc, b, false, true);
    __m256 tp_ = _mm256_setzero_ps(), tq_ = tp_;
    terms(f, full, load_partial(zp, ZT, base + full, rest), load_partial(tp, TT, base + full, rest), &tp_, &tq_);
    const __m256 v = tail_mask(rest);
    kpm = _mm256_add_pd(kpm, widen_sum(_mm256_and_ps(v, tp_)));
    kqm = _mm256_add_pd(kqm, widen_sum(_mm256_and_ps(v, tq_)));
  }
  *kpm_out = hsum_pd(kpm);
  *kqm_out = hsum_pd(kqm);
}

template <DType ZT, DType TT>
RowOut distill_row(const DistillArgs& a, const DistillPlan& p, int64_t row) {
  RowOut out;
  const int64_t cols = a.student.cols, base = row * cols;
  if (a.labels && a.labels[row] == a.ignore_index) {
    if (p.grad) zero_grad_row(a, row);
    return out;
  }
  const dm::Coeffs& c = p.c;
  const bool dense = p.kd && !p.topk;
  const bool sep = p.ce && !p.t1;
  const Scratch sc = make_scratch(cols, sep, dense, dense && p.div == Divergence::JSD);

  Consts k;
  k.inv_t = _mm256_set1_ps(c.inv_t);
  k.inf = _mm256_set1_ps(bits_f32(0x7f800000u));
  Sweep1 w;
  w.mz = w.mt = _mm256_set1_ps(dm::neg_inf());
  w.su = w.sz = w.st = sum8_zero();
  w.zbad = _mm256_setzero_ps();
  w.okt = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  sweep1<ZT, TT>(a.student.data, a.teacher.data, base, cols, dense, sep, sep && c.inv_t == 0.5f, k, w, sc);
  if (!all_set(_mm256_cmp_ps(w.zbad, _mm256_setzero_ps(), _CMP_EQ_OQ)) || (dense && !all_set(w.okt))) {
    out.error = RowError::NonFinite;
    return out;
  }
  dm::RowStats rs;
  const dm::Lse u = merge_lanes(w.mz, w.su, c.inv_t);
  rs.mz = u.m;
  rs.lsu = dm::log_sum(u.s);
  rs.lsz = p.t1 ? rs.lsu : p.ce ? dm::log_sum(merge_lanes(w.mz, w.sz, 1.0f).s) : 0.0f;
  rs.mt = 0.0f;
  rs.lst = 0.0f;
  if (dense) {
    const dm::Lse t = merge_lanes(w.mt, w.st, c.inv_t);
    if (!(t.m > dm::neg_inf())) {
      out.error = RowError::NoTeacher;
      return out;
    }
    rs.mt = t.m;
    rs.lst = dm::log_sum(t.s);
  }

  double ce = 0;
  if (p.ce) {
    const float zy = dm::load_logit(a.student.data, a.student.dtype, base + a.labels[row]);
    ce = static_cast<double>(rs.lsz) - static_cast<double>(zy - rs.mz);
  }

  Row r;
  r.mz = _mm256_set1_ps(rs.mz);
  r.mt = _mm256_set1_ps(rs.mt);
  r.lsu = _mm256_set1_ps(rs.lsu);
  r.lsz = _mm256_set1_ps(rs.lsz);
  r.lst = _mm256_set1_ps(rs.lst);
  r.a_t = _mm256_set1_ps(c.a_t);
  r.a_t_jsd = _mm256_set1_ps(c.a_t_jsd);
  r.b = _mm256_set1_ps(c.b);
  r.scale = _mm256_set1_ps(c.scale);
  r.log_beta = _mm256_set1_ps(c.log_beta);
  r.log_1mb = _mm256_set1_ps(c.log_1mb);
  r.inv_t = k.inv_t;
  r.floor = _mm256_set1_ps(dm::kLogFloor);

  double d = 0;
  float kl = 0;
  float* topk_p = nullptr;
  if (p.kd && p.topk) {
    topk_p = float_scratch(a.k);
    RowError e = RowError::Ok;
    d = topk_divergence(a, p, row, rs, topk_p, &e);
    if (e != RowError::Ok) {
      out.error = e;
      return out;
    }
  } else if (dense && p.div != Divergence::ForwardKL) {
    double kpm = 0, kqm = 0;
    if (p.div == Divergence::ReverseKL) sweep1b<ZT, TT, false>(a, r, sc, base, &kpm, &kqm);
    else sweep1b<ZT, TT, true>(a, r, sc, base, &kpm, &kqm);
    kl = static_cast<float>(kqm);
    d = p.div == Divergence::ReverseKL ? kqm : static_cast<double>(a.beta) * kpm + (1.0 - a.beta) * kqm;
  }
  r.kl = _mm256_set1_ps(kl);

  Special* specials = nullptr;
  int64_t n_specials = 0;
  if (p.grad) {
    specials = special_scratch(a.k + 1);
    n_specials = row_specials(a, p, row, rs, kl, topk_p, specials);
  }
  const bool forward_dense = dense && p.div == Divergence::ForwardKL;
  if (p.grad || forward_dense) {
    // A large gradient (not in place) is streamed past the caches: no read
    // for ownership of lines about to be overwritten, no eviction of the
    // rows still to come. The row must start 16-byte aligned.
    constexpr int64_t esz = ZT == DType::F32 ? 4 : 2;
    const bool stream = p.grad && a.grad != a.student.data &&
                        static_cast<uint64_t>(a.student.rows) * static_cast<uint64_t>(cols * esz) >= kStreamBytes &&
                        reinterpret_cast<uintptr_t>(static_cast<char*>(a.grad) + base * esz) % 16 == 0;
    double dfw = 0;
    if (!dense) sweep2<ZT, TT, Mode::NoTeacher>(a, r, sc, base, p.grad, stream, p.ce, p.t1);
    else if (p.div == Divergence::ForwardKL) dfw = sweep2<ZT, TT, Mode::Forward>(a, r, sc, base, p.grad, stream, p.ce, p.t1);
    else if (p.div == Divergence::ReverseKL) sweep2<ZT, TT, Mode::Reverse>(a, r, sc, base, p.grad, stream, p.ce, p.t1);
    else sweep2<ZT, TT, Mode::Jsd>(a, r, sc, base, p.grad, stream, p.ce, p.t1);
    if (forward_dense) d = dfw;
    if (p.grad) write_specials(a, row, specials, n_specials);
  }
  out.loss = (p.kd ? p.kd_weight * d : 0.0) + (p.ce ? p.ce_weight * ce : 0.0);
  if (!(out.loss - out.loss == 0.0)) out.error = RowError::Overflow;  // NaN or ±inf
  return out;
}

template <DType ZT>
DistillRowFn for_teacher(DType tt) {
  switch (tt) {
    case DType::F16: return distill_row<ZT, DType::F16>;
    case DType::BF16: return distill_row<ZT, DType::BF16>;
    default: return distill_row<ZT, DType::F32>;
  }
}

}  // namespace

DistillRowFn distill_row_fn(const DistillArgs& a) {
  // A top-k teacher (no dense data) never reads teacher.dtype.
  const DType tt = a.teacher.data ? a.teacher.dtype : DType::F32;
  switch (a.student.dtype) {
    case DType::F32: return for_teacher<DType::F32>(tt);
    case DType::F16: return for_teacher<DType::F16>(tt);
    case DType::BF16: return for_teacher<DType::BF16>(tt);
    default: return nullptr;
  }
}

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
