// SIMD twins of quant_kmath.h: the K-quants, Q5_0/Q5_1 and llama.cpp's
// importance-weighted quantizers, byte-identical to the scalar reference.
//
// ggml's searches accumulate each group's sums strictly left to right, and a
// group's candidates depend on each other (the next candidate starts from
// the best offset so far), so neither the elements of a group nor its
// candidates can be spread over lanes without changing the bits. The groups
// can: lane k of every vector below belongs to group k of a batch, the
// groups' values are transposed so that element i of all groups is one
// vector, and each scalar variable of the reference becomes a vector, each
// branch a lane mask. Every lane then runs the reference's operations in the
// reference's order, so it produces the reference's bits; several batches
// are interleaved (P) so the long chains of dependent additions overlap.
//
// Included by quant_avx2.cc (V = 8 lanes of __m256) and quant_avx512.cc
// (V = 16 lanes of __m512); everything here has internal linkage, so each
// file gets its own copy compiled for its instruction set.
#pragma once
#include <immintrin.h>

#include <cstdlib>
#include <cstring>

#include "quant_kernels.h"
#include "quant_kmath.h"

namespace st {
namespace {
namespace ks {

constexpr int kMaxLanes = 16;

// The loops over the P interleaved batches must be unrolled for their
// accumulators (arrays of P vectors) to live in registers.
#define ST_UNROLL_P _Pragma("GCC unroll 4")
constexpr int kMaxGroup = 32;

// ---- per-thread scratch ----------------------------------------------------
// Not std::vector: a template instantiated in a SIMD-compiled file could be
// merged by the linker with the baseline files' copy and then run on a CPU
// without the instructions (scripts/native-test.cjs checks the SIMD objects
// define no weak symbols). Slots 0–5 are this file's; quant_avx2.cc uses 6.

template <class E>
E* scratch_of(int64_t n, int slot) {
  struct Buf {
    void* p = nullptr;
    int64_t bytes = 0;
    ~Buf() { std::free(p); }
  };
  thread_local Buf buf[7];
  Buf& b = buf[slot];
  const int64_t bytes = n * static_cast<int64_t>(sizeof(E)) + 64;
  if (b.bytes < bytes) {
    std::free(b.p);
    b.p = std::malloc(static_cast<size_t>(bytes));
    if (!b.p) std::abort();
    b.bytes = bytes;
  }
  return static_cast<E*>(b.p);
}

// ---- the row as f32 (dtype conversion fused, NaN/Inf policy of load_f32) ----

template <DType T>
inline __m256 load8(const void* p, int64_t i) {
  if (T == DType::F32) return _mm256_loadu_ps(static_cast<const float*>(p) + i);
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i));
  if (T == DType::F16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// Converts n values (a multiple of 8) at element `off` into out. Returns the
// index of the first NaN/Inf with NonFinite::Error, else -1 (zeroing them).
template <DType T>
int64_t load_row(const void* src, int64_t off, int64_t n, float* out, NonFinite mode) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f7fffff);
  for (int64_t j = 0; j < n; j += 8) {
    const __m256 v = load8<T>(src, off + j);
    const __m256i bad = _mm256_cmpgt_epi32(_mm256_and_si256(_mm256_castps_si256(v), abs_mask), inf);
    const int m = _mm256_movemask_ps(_mm256_castsi256_ps(bad));
    if (m) {
      if (mode == NonFinite::Error) return j + __builtin_ctz(static_cast<unsigned>(m));
      _mm256_storeu_ps(out + j, _mm256_andnot_ps(_mm256_castsi256_ps(bad), v));
    } else {
      _mm256_storeu_ps(out + j, v);
    }
  }
  return -1;
}

// ---- batches: groups of n consecutive values, one group per lane ----------

// Element i of group g0 + k at t[i * N + k]; groups past `count` read as 0.
// n is a multiple of N: N x N tiles transposed in registers.
template <class V>
inline void transpose_in(const float* x, int64_t g0, int count, int n, float* t) {
  constexpr int N = V::N;
  for (int i0 = 0; i0 < n; i0 += N) {
    typename V::F r[N];
    for (int k = 0; k < N; ++k) r[k] = k < count ? V::loadu(x + (g0 + k) * n + i0) : V::zero();
    V::transpose(r);
    for (int j = 0; j < N; ++j) V::store(t + (i0 + j) * N, r[j]);
  }
}

// Lane-wise nearest_int (exact for every input, as the reference's bit trick).
template <class V>
inline typename V::I nearest(typename V::F v) {
  const typename V::I b = V::castfi(V::add(v, V::set1(12582912.0f)));
  return V::isub(V::iand(b, V::set1i(0x007fffff)), V::set1i(0x00400000));
}

// clamp(nearest_int(v), lo, hi) as a float. Fast: when |v| < 2^22 ggml's
// rounding gives round-half-even of v, one instruction.
template <class V, bool Fast>
inline typename V::F round_clamp(typename V::F v, typename V::F lo, typename V::F hi) {
  if (Fast) return V::min(V::max(V::round(v), lo), hi);
  const typename V::I l = nearest<V>(v);
  return V::cvt(V::imax(V::imin(l, V::cvtf(hi)), V::cvtf(lo)));
}

// Whether |t| < 2^21 (safely inside the fast rounding's range) in every
// lane outside `skip` (lanes whose results are discarded).
template <class V>
inline bool all_small(typename V::F t, typename V::M skip) {
  return V::bits(V::mor(V::lt(V::abs(t), V::set1(2097152.0f)), skip)) == V::kAll;
}

// ---------------------------------------------------------------------------
// search_scale_min (make_qkx2_quants / make_qkx3_quants), P batches at once.
// X, W: P transposed batches (n x N each, batch p at + p*n*N). Per lane out:
// the scale, -min, and the reciprocal scale and offset whose codes are the
// search's L (L = clamp(nearest(lis * (x - lmin)), 0, nmax); 0 for groups
// whose range is empty, which get lis = 0, lmin = 0).

template <class V>
struct MinSearch {
  typename V::F scale, neg_min, lis, lmin;
};

// One candidate's sums: codes l = clamp(round(cis·(x − min)), 0, nmax) (kept
// in lbuf for the error pass), Σw·l, Σw·l², Σw·l·x, left to right.
template <class V, int P, bool Fast>
inline void candidate_sums(const float* X, const float* W, int n, const typename V::F* cis, const typename V::F* min,
                           typename V::F zero, typename V::F fn, float* lbuf, typename V::F* sl_out,
                           typename V::F* sl2_out, typename V::F* sxl_out) {
  using F = typename V::F;
  constexpr int N = V::N;
  F sl[P], sl2[P], sxl[P], c[P], m[P];
  ST_UNROLL_P for (int p = 0; p < P; ++p) {
    sl[p] = sl2[p] = sxl[p] = zero;
    c[p] = cis[p];
    m[p] = min[p];
  }
  for (int i = 0; i < n; ++i) {
    ST_UNROLL_P for (int p = 0; p < P; ++p) {
      const F xi = V::load(X + p * n * N + i * N), wi = V::load(W + p * n * N + i * N);
      const F l = round_clamp<V, Fast>(V::mul(c[p], V::sub(xi, m[p])), zero, fn);
      V::store(lbuf + p * kMaxGroup * kMaxLanes + i * N, l);
      const F wl = V::mul(wi, l);
      sl[p] = V::add(sl[p], wl);
      sl2[p] = V::add(sl2[p], V::mul(wl, l));
      sxl[p] = V::add(sxl[p], V::mul(wl, xi));
    }
  }
  ST_UNROLL_P for (int p = 0; p < P; ++p) {
    sl_out[p] = sl[p];
    sl2_out[p] = sl2[p];
    sxl_out[p] = sxl[p];
  }
}

template <class V, int P, bool Mad>
void search_min(const float* X, const float* W, int n, int nmax, float rmin, float rdelta, int nstep,
                MinSearch<V>* out) {
  using F = typename V::F;
  constexpr int N = V::N;
  const F zero = V::zero(), fn = V::set1(static_cast<float>(nmax));
  F lo[P], hi[P], sum_w[P], sum_x[P], min[P], best[P], scale[P], lis[P], lmin[P];
  typename V::M empty_m[P];
  ST_UNROLL_P for (int p = 0; p < P; ++p) {
    const float* x = X + p * n * N;
    const float* w = W + p * n * N;
    lo[p] = hi[p] = V::load(x);
    sum_w[p] = V::load(w);
    sum_x[p] = V::mul(sum_w[p], V::load(x));
    for (int i = 1; i < n; ++i) {
      const F xi = V::load(x + i * N), wi = V::load(w + i * N);
      lo[p] = V::sel(V::lt(xi, lo[p]), xi, lo[p]);
      hi[p] = V::sel(V::gt(xi, hi[p]), xi, hi[p]);
      sum_w[p] = V::add(sum_w[p], wi);
      sum_x[p] = V::add(sum_x[p], V::mul(wi, xi));
    }
    lo[p] = V::sel(V::gt(lo[p], zero), zero, lo[p]);
    empty_m[p] = V::mnot(V::gt(hi[p], lo[p]));
    min[p] = lo[p];
    const F iscale = V::div(fn, V::sub(hi[p], min[p]));
    scale[p] = V::div(V::set1(1.0f), iscale);
    lis[p] = iscale;
    lmin[p] = min[p];
    F err = zero;
    const bool fast = all_small<V>(V::mul(iscale, V::sub(hi[p], lo[p])), empty_m[p]);
    for (int i = 0; i < n; ++i) {
      const F xi = V::load(x + i * N);
      const F t = V::mul(iscale, V::sub(xi, min[p]));
      const F l = fast ? round_clamp<V, true>(t, zero, fn) : round_clamp<V, false>(t, zero, fn);
      F e = V::sub(V::add(V::mul(scale[p], l), min[p]), xi);
      e = Mad ? V::abs(e) : V::mul(e, e);
      err = V::add(err, V::mul(V::load(w + i * N), e));
    }
    best[p] = err;
  }
  alignas(64) float lbuf[P][kMaxGroup * kMaxLanes];
  for (int k = 0; k <= nstep; ++k) {
    const F c = V::set1(rmin + rdelta * static_cast<float>(k) + static_cast<float>(nmax));
    F cis[P], sl[P], sl2[P], sxl[P];
    ST_UNROLL_P for (int p = 0; p < P; ++p) {
      cis[p] = V::div(c, V::sub(hi[p], min[p]));
      sl[p] = sl2[p] = sxl[p] = zero;
    }
    // The fast rounding needs |cis * (x - min)| < 2^21 for x in [lo, hi].
    bool fast = true;
    ST_UNROLL_P for (int p = 0; p < P; ++p) {
      const F span = V::max(V::abs(V::sub(hi[p], min[p])), V::abs(V::sub(lo[p], min[p])));
      fast = fast && all_small<V>(V::mul(V::abs(cis[p]), span), empty_m[p]);
    }
    if (fast) candidate_sums<V, P, true>(X, W, n, cis, min, zero, fn, lbuf[0], sl, sl2, sxl);
    else candidate_sums<V, P, false>(X, W, n, cis, min, zero, fn, lbuf[0], sl, sl2, sxl);
    F cs[P], cm[P], err[P];
    typename V::M valid[P];
    ST_UNROLL_P for (int p = 0; p < P; ++p) {
      const F det = V::sub(V::mul(sum_w[p], sl2[p]), V::mul(sl[p], sl[p]));
      valid[p] = V::gt(det, zero);
      cs[p] = V::div(V::sub(V::mul(sum_w[p], sxl[p]), V::mul(sum_x[p], sl[p])), det);
      cm[p] = V::div(V::sub(V::mul(sl2[p], sum_x[p]), V::mul(sl[p], sxl[p])), det);
      const typename V::M pos = V::gt(cm[p], zero);
      cm[p] = V::sel(pos, zero, cm[p]);
      cs[p] = V::sel(pos, V::div(sxl[p], sl2[p]), cs[p]);
      err[p] = zero;
    }
    for (int i = 0; i < n; ++i) {
      ST_UNROLL_P for (int p = 0; p < P; ++p) {
        const F xi = V::load(X + p * n * N + i * N), wi = V::load(W + p * n * N + i * N);
        F e = V::sub(V::add(V::mul(cs[p], V::load(lbuf[p] + i * N)), cm[p]), xi);
        e = Mad ? V::abs(e) : V::mul(e, e);
        err[p] = V::add(err[p], V::mul(wi, e));
      }
    }
    ST_UNROLL_P for (int p = 0; p < P; ++p) {
      const typename V::M better = V::mand(V::mand(valid[p], V::lt(err[p], best[p])), V::mnot(empty_m[p]));
      best[p] = V::sel(better, err[p], best[p]);
      scale[p] = V::sel(better, cs[p], scale[p]);
      lis[p] = V::sel(better, cis[p], lis[p]);
      lmin[p] = V::sel(better, min[p], lmin[p]);
      min[p] = V::sel(better, cm[p], min[p]);
    }
  }
  ST_UNROLL_P for (int p = 0; p < P; ++p) {
    const typename V::M e = empty_m[p];
    out[p].scale = V::sel(e, zero, scale[p]);
    out[p].neg_min = V::neg(V::sel(e, lo[p], min[p]));
    out[p].lis = V::sel(e, zero, lis[p]);
    out[p].lmin = V::sel(e, zero, lmin[p]);
  }
}

// ---------------------------------------------------------------------------
// search_scale_sym (make_qx_quants, rmse_type 1), P batches at once. W: the
// weights, or null for x². Per lane out: the scale and the reciprocal scale
// whose codes are the search's L (L = clamp(nearest(lis * x), -nmax,
// nmax-1) + nmax; all-zero groups have zero = true and L = 0).

template <class V>
struct SymSearch {
  typename V::F scale, lis;
  typename V::M zero;  // the all-zero groups
};

template <class V>
inline void signed_extreme(const float* x, int n, typename V::F* amax, typename V::F* max) {
  using F = typename V::F;
  F a = V::zero(), m = V::zero();
  for (int i = 0; i < n; ++i) {
    const F xi = V::load(x + i * V::N), ax = V::abs(xi);
    const typename V::M g = V::gt(ax, a);
    a = V::sel(g, ax, a);
    m = V::sel(g, xi, m);
  }
  *amax = a;
  *max = m;
}

template <class V, int P>
void search_sym(const float* X, const float* W, int n, int nmax, SymSearch<V>* out) {
  using F = typename V::F;
  constexpr int N = V::N;
  const F zero = V::zero(), lo = V::set1(static_cast<float>(-nmax)), hi = V::set1(static_cast<float>(nmax - 1));
  // w·x and w per element: the reference's wi * x[i] * l is (w·x)·l
  alignas(64) float wx[P][kMaxGroup * kMaxLanes], ww[P][kMaxGroup * kMaxLanes];
  F mx[P], scale[P], best[P], lis[P];
  typename V::M zm[P];
  ST_UNROLL_P for (int p = 0; p < P; ++p) {
    const float* x = X + p * n * N;
    for (int i = 0; i < n; ++i) {
      const F xi = V::load(x + i * N);
      const F wi = W ? V::load(W + p * n * N + i * N) : V::mul(xi, xi);
      V::store(ww[p] + i * N, wi);
      V::store(wx[p] + i * N, V::mul(wi, xi));
    }
    F amax;
    signed_extreme<V>(x, n, &amax, &mx[p]);
    zm[p] = V::lt(amax, V::set1(qk::kGroupMaxEps));
    const F iscale = V::div(lo, mx[p]);
    F slx = zero, sl2 = zero;
    for (int i = 0; i < n; ++i) {
      const F l = round_clamp<V, true>(V::mul(iscale, V::load(x + i * N)), lo, hi);
      slx = V::add(slx, V::mul(V::load(wx[p] + i * N), l));
      sl2 = V::add(sl2, V::mul(V::mul(V::load(ww[p] + i * N), l), l));
    }
    scale[p] = V::sel(V::neq(sl2, zero), V::div(slx, sl2), zero);
    best[p] = V::mul(scale[p], slx);
    lis[p] = iscale;
  }
  // |cis * x| <= (nmax + 1) |x| / max|x|: always inside the fast rounding's range
  // (all-zero groups divide by 0; their lanes are discarded).
  for (int k = -9; k <= 9; ++k) {
    if (k == 0) continue;
    const F c = V::set1(-(static_cast<float>(nmax) + 0.1f * static_cast<float>(k)));
    F cis[P], cx[P], c2[P];
    ST_UNROLL_P for (int p = 0; p < P; ++p) {
      cis[p] = V::div(c, mx[p]);
      cx[p] = c2[p] = zero;
    }
    for (int i = 0; i < n; ++i) {
      ST_UNROLL_P for (int p = 0; p < P; ++p) {
        const F l = round_clamp<V, true>(V::mul(cis[p], V::load(X + p * n * N + i * N)), lo, hi);
        cx[p] = V::add(cx[p], V::mul(V::load(wx[p] + i * N), l));
        c2[p] = V::add(c2[p], V::mul(V::mul(V::load(ww[p] + i * N), l), l));
      }
    }
    ST_UNROLL_P for (int p = 0; p < P; ++p) {
      const typename V::M better = V::mand(V::gt(c2[p], zero), V::gt(V::mul(cx[p], cx[p]), V::mul(best[p], c2[p])));
      scale[p] = V::sel(better, V::div(cx[p], c2[p]), scale[p]);
      best[p] = V::sel(better, V::mul(scale[p], cx[p]), best[p]);
      lis[p] = V::sel(better, cis[p], lis[p]);
    }
  }
  ST_UNROLL_P for (int p = 0; p < P; ++p) {
    const typename V::M z = zm[p];
    out[p].scale = V::sel(z, zero, scale[p]);
    out[p].lis = V::sel(z, zero, lis[p]);
    out[p].zero = zm[p];
  }
}

// ---------------------------------------------------------------------------
// search_scale_q3 (make_q3_quants with do_rmse), P batches at once. Writes
// the codes (l + nmax; 0 for all-zero groups) transposed into Lt as floats.

template <class V, int P>
void search_q3(const float* X, int n, int nmax, typename V::F* scale_out, float* Lt) {
  using F = typename V::F;
  using M = typename V::M;
  constexpr int N = V::N;
  const F zero = V::zero(), lo = V::set1(static_cast<float>(-nmax)), hi = V::set1(static_cast<float>(nmax - 1));
  alignas(64) float wx[P][kMaxGroup * kMaxLanes], ww[P][kMaxGroup * kMaxLanes];
  F slx[P], sl2[P];
  M zm[P];
  ST_UNROLL_P for (int p = 0; p < P; ++p) {
    const float* x = X + p * n * N;
    float* L = Lt + p * n * N;
    F amax, mx;
    signed_extreme<V>(x, n, &amax, &mx);
    zm[p] = V::lt(amax, V::set1(qk::kGroupMaxEps));
    const F iscale = V::div(lo, mx);
    slx[p] = sl2[p] = zero;
    for (int i = 0; i < n; ++i) {
      const F xi = V::load(x + i * N), wi = V::mul(xi, xi), wxi = V::mul(wi, xi);
      V::store(ww[p] + i * N, wi);
      V::store(wx[p] + i * N, wxi);
      const F l = round_clamp<V, true>(V::mul(iscale, xi), lo, hi);
      V::store(L + i * N, l);
      slx[p] = V::add(slx[p], V::mul(wxi, l));
      sl2[p] = V::add(sl2[p], V::mul(V::mul(wi, l), l));
    }
  }
  // A group whose sweep changed nothing stops in the reference; another
  // sweep over the same state would change nothing either, so a batch
  // sweeps until its lanes all stopped (active), each batch on its own.
  bool active[P];
  ST_UNROLL_P for (int p = 0; p < P; ++p) active[p] = true;
  for (int sweep = 0; sweep < 5; ++sweep) {
    int changed[P];
    ST_UNROLL_P for (int p = 0; p < P; ++p) changed[p] = 0;
    for (int i = 0; i < n; ++i) {
      ST_UNROLL_P for (int p = 0; p < P; ++p) {
        if (!active[p]) continue;
        float* L = Lt + p * n * N;
        const F xi = V::load(X + p * n * N + i * N), wi = V::load(ww[p] + i * N), wxi = V::load(wx[p] + i * N);
        const F li = V::load(L + i * N);
        F tx = V::sub(slx[p], V::mul(wxi, li));
        const M pos = V::gt(tx, zero);
        F t2 = V::sub(sl2[p], V::mul(V::mul(wi, li), li));
        // x·t2/tx can be huge (tx tiny): the exact integer rounding
        const F nl = round_clamp<V, false>(V::div(V::mul(xi, t2), tx), lo, hi);
        const M moved = V::mand(pos, V::neq(nl, li));
        tx = V::add(tx, V::mul(wxi, nl));
        t2 = V::add(t2, V::mul(V::mul(wi, nl), nl));
        const M take = V::mand(V::mand(moved, V::gt(t2, zero)),
                               V::gt(V::mul(V::mul(tx, tx), sl2[p]), V::mul(V::mul(slx[p], slx[p]), t2)));
        // A branch, not only a blend: in the later sweeps almost no code
        // moves, and a predicted branch lets the next elements start
        // without waiting for this one's long chain (division included).
        if (const int t = V::bits(take)) {
          V::store(L + i * N, V::sel(take, nl, li));
          slx[p] = V::sel(take, tx, slx[p]);
          sl2[p] = V::sel(take, t2, sl2[p]);
          changed[p] |= t;
        }
      }
    }
    bool any = false;
    ST_UNROLL_P for (int p = 0; p < P; ++p) {
      active[p] = active[p] && changed[p] != 0;
      any = any || active[p];
    }
    if (!any) break;
  }
  const F bias = V::set1(static_cast<float>(nmax));
  ST_UNROLL_P for (int p = 0; p < P; ++p) {
    const M z = zm[p];
    float* L = Lt + p * n * N;
    for (int i = 0; i < n; ++i) V::store(L + i * N, V::sel(z, zero, V::add(V::load(L + i * N), bias)));
    scale_out[p] = V::sel(z, zero, V::sel(V::gt(sl2[p], zero), V::div(slx[p], sl2[p]), zero));
  }
}

// ---------------------------------------------------------------------------
// Codes in natural order (8 values per AVX2 step): the requantization with a
// stored scale, and the codes a search chose.

// out[i] = clamp(nearest(t(x[i])), lo, hi) + bias for i < n (n a multiple of 8).
template <class T>
inline void codes8(const float* x, int n, T t, int lo, int hi, int bias, uint8_t* out) {
  const __m256i vlo = _mm256_set1_epi32(lo), vhi = _mm256_set1_epi32(hi), vb = _mm256_set1_epi32(bias);
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  for (int i = 0; i < n; i += 8) {
    const __m256i b = _mm256_castps_si256(_mm256_add_ps(t(_mm256_loadu_ps(x + i)), magic));
    __m256i l = _mm256_sub_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x00400000));
    l = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(l, vlo), vhi), vb);
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(l), _mm256_extracti128_si256(l, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + i), _mm_packus_epi16(w, w));
  }
}

// clamp(nearest((x + m) / d), 0, nmax)
inline void codes_affine(const float* x, int n, float d, float m, int nmax, uint8_t* out) {
  const __m256 vd = _mm256_set1_ps(d), vm = _mm256_set1_ps(m);
  codes8(x, n, [&](__m256 v) { return _mm256_div_ps(_mm256_add_ps(v, vm), vd); }, 0, nmax, 0, out);
}

// clamp(nearest(x / d), lo, hi) - lo
inline void codes_sym(const float* x, int n, float d, int lo, int hi, uint8_t* out) {
  const __m256 vd = _mm256_set1_ps(d);
  codes8(x, n, [&](__m256 v) { return _mm256_div_ps(v, vd); }, lo, hi, -lo, out);
}

// A min search's codes: clamp(nearest(lis * (x - lmin)), 0, nmax).
inline void codes_min_search(const float* x, int n, float lis, float lmin, int nmax, uint8_t* out) {
  const __m256 vi = _mm256_set1_ps(lis), vm = _mm256_set1_ps(lmin);
  codes8(x, n, [&](__m256 v) { return _mm256_mul_ps(vi, _mm256_sub_ps(v, vm)); }, 0, nmax, 0, out);
}

// A symmetric search's codes: clamp(nearest(lis * x), -nmax, nmax-1) + nmax, or 0 for an all-zero group.
inline void codes_sym_search(const float* x, int n, float lis, bool zero, int nmax, uint8_t* out) {
  if (zero) {
    for (int i = 0; i < n; ++i) out[i] = 0;
    return;
  }
  const __m256 vi = _mm256_set1_ps(lis);
  codes8(x, n, [&](__m256 v) { return _mm256_mul_ps(vi, v); }, -nmax, nmax - 1, nmax, out);
}

// ---- packing the 256 codes of a super-block (twins of quant_kmath.h's) ----
// Codes are bytes; a shift of whole 16-bit lanes is safe on them because
// every value is masked to bits that stay inside their byte.

inline __m256i load32(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline void store32(uint8_t* p, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
inline __m256i bytes(int v) { return _mm256_set1_epi8(static_cast<char>(v)); }
// (v & (1 << from)) moved to bit `to`, per byte.
inline __m256i move_bit(__m256i v, int from, int to) {
  const __m256i b = _mm256_and_si256(v, bytes(1 << from));
  if (to >= from) return _mm256_sll_epi16(b, _mm_cvtsi32_si128(to - from));
  return _mm256_srl_epi16(b, _mm_cvtsi32_si128(from - to));
}

// qk::pack_2bit; the codes are masked to their low two bits (Q3_K passes 3-bit codes).
inline void pack_2bit_v(const uint8_t* L, uint8_t* qs) {
  for (int h = 0; h < 2; ++h) {
    const uint8_t* c = L + 128 * h;
    const __m256i m = bytes(3);
    __m256i v = _mm256_and_si256(load32(c), m);
    v = _mm256_or_si256(v, _mm256_slli_epi16(_mm256_and_si256(load32(c + 32), m), 2));
    v = _mm256_or_si256(v, _mm256_slli_epi16(_mm256_and_si256(load32(c + 64), m), 4));
    v = _mm256_or_si256(v, _mm256_slli_epi16(_mm256_and_si256(load32(c + 96), m), 6));
    store32(qs + 32 * h, v);
  }
}

// qk::q3_k_pack: hmask bit k of byte l = bit 2 of code 32k + l; qs the low two bits.
inline void q3_k_pack_v(const uint8_t* L, uint8_t* y) {
  __m256i h = _mm256_setzero_si256();
  for (int k = 0; k < 8; ++k) h = _mm256_or_si256(h, move_bit(load32(L + 32 * k), 2, k));
  store32(y, h);
  pack_2bit_v(L, y + 32);
}

// qk::q45_k_pack.
inline void q45_k_pack_v(const uint8_t* L, int nmax, uint8_t* y) {
  const bool five = nmax == 31;
  uint8_t* qs = y + (five ? 48 : 16);
  __m256i h = _mm256_setzero_si256();
  const __m256i lo = bytes(0x0f);
  for (int k = 0; k < 4; ++k) {
    const __m256i a = load32(L + 64 * k), b = load32(L + 64 * k + 32);
    store32(qs + 32 * k, _mm256_or_si256(_mm256_and_si256(a, lo), _mm256_slli_epi16(_mm256_and_si256(b, lo), 4)));
    if (five) h = _mm256_or_si256(h, _mm256_or_si256(move_bit(a, 4, 2 * k), move_bit(b, 4, 2 * k + 1)));
  }
  if (five) store32(y + 16, h);
}

// qk::q6_k_pack.
inline void q6_k_pack_v(const uint8_t* L, uint8_t* y) {
  const __m256i lo = bytes(0x0f), hi2 = bytes(0x30);
  for (int h = 0; h < 2; ++h) {
    const uint8_t* c = L + 128 * h;
    const __m256i c0 = load32(c), c1 = load32(c + 32), c2 = load32(c + 64), c3 = load32(c + 96);
    store32(y + 64 * h, _mm256_or_si256(_mm256_and_si256(c0, lo), _mm256_slli_epi16(_mm256_and_si256(c2, lo), 4)));
    store32(y + 64 * h + 32, _mm256_or_si256(_mm256_and_si256(c1, lo), _mm256_slli_epi16(_mm256_and_si256(c3, lo), 4)));
    __m256i q = _mm256_srli_epi16(_mm256_and_si256(c0, hi2), 4);
    q = _mm256_or_si256(q, _mm256_srli_epi16(_mm256_and_si256(c1, hi2), 2));
    q = _mm256_or_si256(q, _mm256_and_si256(c2, hi2));
    q = _mm256_or_si256(q, _mm256_slli_epi16(_mm256_and_si256(c3, hi2), 2));
    store32(y + 128 + 32 * h, q);
  }
}

// ---------------------------------------------------------------------------
// Batches over a row: groups of n consecutive values, G = P·N per batch.

// Σx² of each super-block, left to right; eight independent chains at a time.
inline void superblock_sum_squares(const float* x, int64_t nsb, float* out) {
  for (int64_t s0 = 0; s0 < nsb; s0 += 8) {
    const int m = static_cast<int>(nsb - s0 < 8 ? nsb - s0 : 8);
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const float* b = x + s0 * qk::QK_K;
    for (int i = 0; i < qk::QK_K; ++i) {
      for (int k = 0; k < 8; ++k) {
        if (k < m) acc[k] += b[k * qk::QK_K + i] * b[k * qk::QK_K + i];
      }
    }
    for (int k = 0; k < m; ++k) out[s0 + k] = acc[k];
  }
}

// llama.cpp's σ² of each super-block: factor·Σx²/256 (factor 1 for Q2_K, 2
// for Q3_K, Q4_K, Q5_K), as the reference computes it.
inline float* superblock_sigma2(const float* x, int64_t nsb, float factor) {
  float* sig = scratch_of<float>(nsb, 3);
  superblock_sum_squares(x, nsb, sig);
  for (int64_t s = 0; s < nsb; ++s) sig[s] = factor * sig[s] / static_cast<float>(qk::QK_K);  // 1·s is s, exactly
  return sig;
}

// How the weights of a search are made, per group (lane-wise, transposed).
enum class Weights {
  AbsX,        // |x| (Q2_K)
  RmsPlusAbs,  // sqrt(Σx²/n) + |x| (Q4_K, Q5_K)
  SquareX,     // x² (the symmetric searches without importance; passed as null)
  Importance,  // qw (Q6_K with importance)
  Llama,       // qw · sqrt(sigma2 + x²), sigma2 per super-block or per row
};

// Per-group results of a row's searches.
struct GroupResults {
  float* scale;
  float* neg_min;  // min searches
  float* lis;
  float* lmin;     // min searches
  float* sw;       // Σ weights (weighted headers)
  uint8_t* zero;   // symmetric searches: all-zero group
  int8_t* codes;   // Q3_K reference: the codes of the coordinate descent
};

// slot: 0 for a row's groups, 1 for a second level (the super-blocks' scales).
inline GroupResults group_results(int64_t ng, int n, int slot = 0) {
  float* f = scratch_of<float>(5 * ng, 1 + 3 * slot);
  uint8_t* b = scratch_of<uint8_t>(ng + ng * n, 2 + 3 * slot);
  return {f, f + ng, f + 2 * ng, f + 3 * ng, f + 4 * ng, b, reinterpret_cast<int8_t*>(b + ng)};
}

enum class Kind { Min, MinMad, Sym, Q3 };

struct SearchSpec {
  Kind kind;
  int n, nmax;
  float rmin, rdelta;
  int nstep;
  Weights weights;
  const float* qw;     // the row's importance (Importance, Llama)
  const float* sigma;  // Llama: sigma2 per super-block (or one for the row: per_row)
  bool per_row;
};

// Runs spec's search over all ng groups of row x, P batches of N groups at a time.
template <class V, int P>
void search_groups(const float* x, int64_t ng, const SearchSpec& sp, const GroupResults& r) {
  using F = typename V::F;
  constexpr int N = V::N;
  const int n = sp.n;
  alignas(64) float X[P * kMaxGroup * N], W[P * kMaxGroup * N], Q[P * kMaxGroup * N];
  for (int64_t g0 = 0; g0 < ng; g0 += P * N) {
    int count[P];
    ST_UNROLL_P for (int p = 0; p < P; ++p) {
      const int64_t left = ng - (g0 + p * N);
      count[p] = static_cast<int>(left < 0 ? 0 : left < N ? left : N);
      transpose_in<V>(x, g0 + p * N, count[p], n, X + p * n * N);
      float* w = W + p * n * N;
      const float* xp = X + p * n * N;
      switch (sp.weights) {
        case Weights::AbsX:
          for (int i = 0; i < n; ++i) V::store(w + i * N, V::abs(V::load(xp + i * N)));
          break;
        case Weights::RmsPlusAbs: {
          F ss = V::zero();
          for (int i = 0; i < n; ++i) ss = V::add(ss, V::mul(V::load(xp + i * N), V::load(xp + i * N)));
          const F av = V::sqrt(V::div(ss, V::set1(static_cast<float>(n))));
          for (int i = 0; i < n; ++i) V::store(w + i * N, V::add(av, V::abs(V::load(xp + i * N))));
          break;
        }
        case Weights::SquareX: break;
        case Weights::Importance:
          transpose_in<V>(sp.qw, g0 + p * N, count[p], n, w);
          break;
        case Weights::Llama: {
          transpose_in<V>(sp.qw, g0 + p * N, count[p], n, Q + p * n * N);
          alignas(64) float sig[N];
          for (int k = 0; k < N; ++k) {
            const int64_t g = g0 + p * N + k;
            sig[k] = sp.per_row ? sp.sigma[0] : g < ng ? sp.sigma[g * n / qk::QK_K] : 0.0f;
          }
          const F vs = V::load(sig);
          F sw = V::zero();
          for (int i = 0; i < n; ++i) {
            const F xi = V::load(xp + i * N);
            const F wi = V::mul(V::load(Q + p * n * N + i * N), V::sqrt(V::add(vs, V::mul(xi, xi))));
            V::store(w + i * N, wi);
            sw = V::add(sw, wi);
          }
          alignas(64) float swl[N];
          V::store(swl, sw);
          for (int k = 0; k < count[p]; ++k) r.sw[g0 + p * N + k] = swl[k];
          break;
        }
      }
    }
    alignas(64) float lane[4][N];
    auto scatter = [&](int p, int field, float* dst) {
      for (int k = 0; k < count[p]; ++k) dst[g0 + p * N + k] = lane[field][k];
    };
    if (sp.kind == Kind::Min || sp.kind == Kind::MinMad) {
      MinSearch<V> res[P];
      if (sp.kind == Kind::MinMad) search_min<V, P, true>(X, W, n, sp.nmax, sp.rmin, sp.rdelta, sp.nstep, res);
      else search_min<V, P, false>(X, W, n, sp.nmax, sp.rmin, sp.rdelta, sp.nstep, res);
      ST_UNROLL_P for (int p = 0; p < P; ++p) {
        V::store(lane[0], res[p].scale);
        V::store(lane[1], res[p].neg_min);
        V::store(lane[2], res[p].lis);
        V::store(lane[3], res[p].lmin);
        scatter(p, 0, r.scale);
        scatter(p, 1, r.neg_min);
        scatter(p, 2, r.lis);
        scatter(p, 3, r.lmin);
      }
    } else if (sp.kind == Kind::Sym) {
      SymSearch<V> res[P];
      search_sym<V, P>(X, sp.weights == Weights::SquareX ? nullptr : W, n, sp.nmax, res);
      ST_UNROLL_P for (int p = 0; p < P; ++p) {
        V::store(lane[0], res[p].scale);
        V::store(lane[1], res[p].lis);
        scatter(p, 0, r.scale);
        scatter(p, 1, r.lis);
        const int z = V::bits(res[p].zero);
        for (int k = 0; k < count[p]; ++k) r.zero[g0 + p * N + k] = static_cast<uint8_t>((z >> k) & 1);
      }
    } else {
      F sc[P];
      alignas(64) float Lt[P * kMaxGroup * N];
      search_q3<V, P>(X, n, sp.nmax, sc, Lt);
      ST_UNROLL_P for (int p = 0; p < P; ++p) {
        V::store(lane[0], sc[p]);
        scatter(p, 0, r.scale);
        // back to one group per vector, as bytes
        for (int i0 = 0; i0 < n; i0 += N) {
          F t[N];
          for (int j = 0; j < N; ++j) t[j] = V::load(Lt + p * n * N + (i0 + j) * N);
          V::transpose(t);
          for (int k = 0; k < count[p]; ++k) V::store_i8(r.codes + (g0 + p * N + k) * n + i0, t[k]);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Rows of each format. x: the row as f32; qw: the row's importance (null:
// ggml's reference quantizer); out: the row's blocks.

template <class V, int P>
void row_q2_k(const float* x, int64_t cols, const float* qw, uint8_t* out) {
  const int64_t nsb = cols / qk::QK_K, ng = cols / 16;
  const GroupResults r = group_results(ng, 16);
  float* sig = qw ? superblock_sigma2(x, nsb, 1.0f) : nullptr;
  const SearchSpec sp = qw ? SearchSpec{Kind::Min, 16, 3, -0.9f, 0.05f, 36, Weights::Llama, qw, sig, false}
                           : SearchSpec{Kind::MinMad, 16, 3, -0.5f, 0.1f, 15, Weights::AbsX, nullptr, nullptr, false};
  search_groups<V, P>(x, ng, sp, r);
  for (int64_t s = 0; s < nsb; ++s) {
    const float* xs = x + s * qk::QK_K;
    uint8_t* y = out + s * qk::kQ2KBytes;
    const int64_t g = s * 16;
    if (qw) qk::q2_k_header_weighted(r.scale + g, r.neg_min + g, r.sw + g, y);
    else qk::q2_k_header(r.scale + g, r.neg_min + g, y);
    uint8_t L[qk::QK_K];
    for (int j = 0; j < 16; ++j) {
      float d, m;
      qk::q2_k_sub(y, j, &d, &m);
      if (d == 0.0f) codes_min_search(xs + 16 * j, 16, r.lis[g + j], r.lmin[g + j], 3, L + 16 * j);
      else codes_affine(xs + 16 * j, 16, d, m, 3, L + 16 * j);
    }
    pack_2bit_v(L, y + 16);
  }
}

template <class V, int P>
void row_q3_k(const float* x, int64_t cols, const float* qw, uint8_t* out) {
  const int64_t nsb = cols / qk::QK_K, ng = cols / 16;
  const GroupResults r = group_results(ng, 16);
  float* sig = qw ? superblock_sigma2(x, nsb, 2.0f) : nullptr;
  const SearchSpec sp = qw ? SearchSpec{Kind::Sym, 16, 4, 0, 0, 0, Weights::Llama, qw, sig, false}
                           : SearchSpec{Kind::Q3, 16, 4, 0, 0, 0, Weights::SquareX, nullptr, nullptr, false};
  search_groups<V, P>(x, ng, sp, r);
  GroupResults top{};
  if (qw) {
    // The weighted header quantizes each super-block's 16 scales with the
    // symmetric search weighted by the sub-blocks' Σw: one super-block per lane.
    top = group_results(nsb, 16, 1);
    search_groups<V, P>(r.scale, nsb, SearchSpec{Kind::Sym, 16, 32, 0, 0, 0, Weights::Importance, r.sw, nullptr, false}, top);
  }
  for (int64_t s = 0; s < nsb; ++s) {
    const float* xs = x + s * qk::QK_K;
    uint8_t* y = out + s * qk::kQ3KBytes;
    const int64_t g = s * 16;
    if (qw) {
      // qk::q3_k_header_weighted from the batched search's results
      uint8_t ls[16];
      codes_sym_search(r.scale + g, 16, top.lis[s], top.zero[s] != 0, 32, ls);
      int l6[16];
      for (int j = 0; j < 16; ++j) l6[j] = ls[j];
      qk::pack_scales_q3(l6, y + 96);
      qm::store_u16(y + 108, f32_to_f16(top.scale[s]));
    } else {
      qk::q3_k_header(r.scale + g, y);
    }
    int8_t L[qk::QK_K];
    uint8_t* u = reinterpret_cast<uint8_t*>(L);
    for (int j = 0; j < 16; ++j) {
      const float d = qk::q3_k_sub(y, j);
      if (d != 0.0f) codes_sym(xs + 16 * j, 16, d, -4, 3, u + 16 * j);
      else if (qw) codes_sym_search(xs + 16 * j, 16, r.lis[g + j], r.zero[g + j] != 0, 4, u + 16 * j);
      else for (int i = 0; i < 16; ++i) L[16 * j + i] = r.codes[(g + j) * 16 + i];
    }
    q3_k_pack_v(u, y);
  }
}

template <class V, int P>
void row_q45_k(const float* x, int64_t cols, const float* qw, int nmax, uint8_t* out) {
  const int64_t nsb = cols / qk::QK_K, ng = cols / 32;
  const GroupResults r = group_results(ng, 32);
  float* sig = qw ? superblock_sigma2(x, nsb, 2.0f) : nullptr;
  const SearchSpec sp = qw ? SearchSpec{Kind::Min, 32, nmax, -0.9f, 0.05f, 36, Weights::Llama, qw, sig, false}
                           : SearchSpec{Kind::Min, 32, nmax, qk::q45_k_rmin(nmax), 0.1f, qk::q45_k_nstep(nmax),
                                        Weights::RmsPlusAbs, nullptr, nullptr, false};
  search_groups<V, P>(x, ng, sp, r);
  const int bytes = nmax == 15 ? qk::kQ4KBytes : qk::kQ5KBytes;
  for (int64_t s = 0; s < nsb; ++s) {
    const float* xs = x + s * qk::QK_K;
    uint8_t* y = out + s * bytes;
    const int64_t g = s * 8;
    if (qw) qk::q45_k_header_weighted(r.scale + g, r.neg_min + g, r.sw + g, nmax, y);
    else qk::q45_k_header(r.scale + g, r.neg_min + g, y);
    uint8_t L[qk::QK_K];
    for (int j = 0; j < 8; ++j) {
      float d, m;
      qk::q45_k_sub(y, j, &d, &m);
      if (d == 0.0f) codes_min_search(xs + 32 * j, 32, r.lis[g + j], r.lmin[g + j], nmax, L + 32 * j);
      else codes_affine(xs + 32 * j, 32, d, m, nmax, L + 32 * j);
    }
    q45_k_pack_v(L, nmax, y);
  }
}

template <class V, int P>
void row_q6_k(const float* x, int64_t cols, const float* qw, uint8_t* out) {
  const int64_t nsb = cols / qk::QK_K, ng = cols / 16;
  const GroupResults r = group_results(ng, 16);
  const SearchSpec sp{Kind::Sym, 16, 32, 0, 0, 0, qw ? Weights::Importance : Weights::SquareX, qw, nullptr, false};
  search_groups<V, P>(x, ng, sp, r);
  for (int64_t s = 0; s < nsb; ++s) {
    const float* xs = x + s * qk::QK_K;
    uint8_t* y = out + s * qk::kQ6KBytes;
    const int64_t g = s * 16;
    if (!qk::q6_k_header(r.scale + g, y)) continue;
    int8_t L[qk::QK_K];
    uint8_t* u = reinterpret_cast<uint8_t*>(L);
    for (int j = 0; j < 16; ++j) {
      const float d = qk::q6_k_sub(y, j);
      if (d != 0.0f) codes_sym(xs + 16 * j, 16, d, -32, 31, u + 16 * j);
      else codes_sym_search(xs + 16 * j, 16, r.lis[g + j], r.zero[g + j] != 0, 32, u + 16 * j);
    }
    q6_k_pack_v(u, y);
  }
}

// llama.cpp's weighted Q4_0/Q5_0 (symmetric search) and Q4_1/Q5_1 (min search).
template <class V, int P>
void row_q32_weighted(const float* x, int64_t cols, const float* qw, QFormat f, uint8_t* out) {
  const int64_t ng = cols / 32;
  const GroupResults r = group_results(ng, 32);
  const float sigma2 = qk::sum_squares(x, static_cast<int>(cols)) / static_cast<float>(cols);
  const bool five = f == QFormat::Q5_0 || f == QFormat::Q5_1;
  const bool offset = f == QFormat::Q4_1 || f == QFormat::Q5_1;
  const int nmax = offset ? (five ? 31 : 15) : (five ? 16 : 8);
  const SearchSpec sp{offset ? Kind::Min : Kind::Sym, 32, nmax, -0.9f, 0.05f, 36, Weights::Llama, qw, &sigma2, true};
  search_groups<V, P>(x, ng, sp, r);
  const int bytes = qformat_traits(f).block_bytes;
  for (int64_t b = 0; b < ng; ++b) {
    const float* xb = x + b * 32;
    uint8_t* y = out + b * bytes;
    uint8_t L[32];
    qm::store_u16(y, f32_to_f16(r.scale[b]));
    if (offset) {
      qm::store_u16(y + 2, f32_to_f16(-r.neg_min[b]));
      codes_min_search(xb, 32, r.lis[b], r.lmin[b], nmax, L);
    } else {
      codes_sym_search(xb, 32, r.lis[b], r.zero[b] != 0, nmax, L);
    }
    int q[32];
    for (int j = 0; j < 32; ++j) q[j] = L[j];
    const int o = offset ? 4 : 2;
    if (five) qm::pack_q5(q, y + o, y + o + 4);
    else qm::pack_nibbles_split(q, y + o);
  }
}

// ggml's reference Q5_0 / Q5_1 blocks (no search), 32 values at a time.
inline void row_q5_plain(const float* x, int64_t cols, QFormat f, uint8_t* out) {
  const int bytes = qformat_traits(f).block_bytes;
  for (int64_t b = 0; b < cols / 32; ++b) {
    const float* xb = x + b * 32;
    uint8_t* y = out + b * bytes;
    __m256 v[4];
    for (int k = 0; k < 4; ++k) v[k] = _mm256_loadu_ps(xb + 8 * k);
    __m256i q[4];
    if (f == QFormat::Q5_0) {
      float amax;
      const float max = qk::signed_extreme(xb, 32, &amax);
      const float d = max / -16.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      qm::store_u16(y, f32_to_f16(d));
      const __m256 vid = _mm256_set1_ps(id), half = _mm256_set1_ps(16.5f);
      for (int k = 0; k < 4; ++k) {
        // min(31, (int8_t)(x*id + 16.5)): cvtt, sign-extended low byte
        __m256i i = _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(v[k], vid), half));
        i = _mm256_srai_epi32(_mm256_slli_epi32(i, 24), 24);
        q[k] = _mm256_min_epi32(i, _mm256_set1_epi32(31));
      }
    } else {
      float mn = 3.402823466e+38f, mx = -3.402823466e+38f;
      for (int j = 0; j < 32; ++j) {
        if (xb[j] < mn) mn = xb[j];
        if (xb[j] > mx) mx = xb[j];
      }
      const float d = (mx - mn) / 31.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      qm::store_u16(y, f32_to_f16(d));
      qm::store_u16(y + 2, f32_to_f16(mn));
      const __m256 vid = _mm256_set1_ps(id), vmn = _mm256_set1_ps(mn), half = _mm256_set1_ps(0.5f);
      for (int k = 0; k < 4; ++k) q[k] = _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v[k], vmn), vid), half));
    }
    // low nibbles split as Q4's; fifth bits: bit 4 of each code, in element order
    const int o = f == QFormat::Q5_0 ? 2 : 4;
    uint32_t h = 0;
    for (int k = 0; k < 4; ++k) {
      h |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32(q[k], 27)))) << (8 * k);
    }
    std::memcpy(y + o, &h, 4);
    alignas(32) int32_t c[32];
    for (int k = 0; k < 4; ++k) _mm256_store_si256(reinterpret_cast<__m256i*>(c + 8 * k), q[k]);
    for (int j = 0; j < 16; ++j) y[o + 4 + j] = static_cast<uint8_t>((c[j] & 0x0f) | ((c[j + 16] & 0x0f) << 4));
  }
}

// The row function: loads the row (dtype conversion, NaN/Inf policy) and
// runs the format's quantizer. Plain Q4_0/Q4_1/Q8_0 and search 'mse' are
// not here (quant_avx2.cc has them), nor, with AVX-512, plain Q5_0/Q5_1
// (quant_avx512.cc's batches).
template <class V, int P, DType T>
int64_t quantize_row(const QuantizeArgs& a, int64_t row) {
  const int64_t cols = a.src.cols;
  float* x = scratch_of<float>(cols, 0);
  const int64_t bad = load_row<T>(a.src.data, row * cols, cols, x, a.non_finite);
  if (bad >= 0) return bad;
  const QFormatTraits& tr = qformat_traits(a.format);
  uint8_t* out = a.data + row * (cols / tr.block) * tr.block_bytes;
  const float* qw = a.importance && ggml_weighted(a.format) ? a.importance : nullptr;
  switch (a.format) {
    case QFormat::Q2_K: row_q2_k<V, P>(x, cols, qw, out); break;
    case QFormat::Q3_K:
      // Q3_K's coordinate descent is one long dependent chain per group:
      // four interleaved batches when the row has the groups to fill them.
      if (cols / 16 >= 4 * V::N) row_q3_k<V, 4>(x, cols, qw, out);
      else row_q3_k<V, P>(x, cols, qw, out);
      break;
    case QFormat::Q4_K: row_q45_k<V, P>(x, cols, qw, 15, out); break;
    case QFormat::Q5_K: row_q45_k<V, P>(x, cols, qw, 31, out); break;
    case QFormat::Q6_K: row_q6_k<V, P>(x, cols, qw, out); break;
    default:
      if (qw) row_q32_weighted<V, P>(x, cols, qw, a.format, out);
      else row_q5_plain(x, cols, a.format, out);
      break;
  }
  return -1;
}

// Whether quantize_row handles these arguments.
inline bool handles(const QuantizeArgs& a) {
  if (!qformat_traits(a.format).ggml || a.search != st::Search::None) return false;
  const bool legacy = a.format == QFormat::Q4_0 || a.format == QFormat::Q4_1 || a.format == QFormat::Q8_0;
  return !legacy || (a.importance && ggml_weighted(a.format));
}

template <class V, int P>
QuantRowFn row_fn(const QuantizeArgs& a) {
  switch (a.src.dtype) {
    case DType::F32: return quantize_row<V, P, DType::F32>;
    case DType::F16: return quantize_row<V, P, DType::F16>;
    case DType::BF16: return quantize_row<V, P, DType::BF16>;
    default: return nullptr;
  }
}

}  // namespace ks
}  // namespace
}  // namespace st
