// search: 'mse' — choose each group's scale (and offset) to minimise the
// group's weighted squared error, instead of deriving it from the extremes.
//
// Every candidate is a reciprocal scale inv = c / e (e: the group's extreme
// or range, c from a small grid around the plain rule). Rounding x·inv gives
// codes; for fixed codes the best scale (and offset) is a least-squares fit,
// and the candidate whose fit explains most of Σw·x² wins (first one on
// ties). The stored scale is that fit rounded to its dtype, and the final
// codes are recomputed from the stored value with the format's own rule.
//
// Sums run in a fixed order that SIMD registers reproduce: element j goes
// to lane j % 16 (fused multiply-add), lane i + 8 is folded into lane i,
// and the eight lanes combine as ((l0+l2) + (l1+l3)) + ((l4+l6) + (l5+l7))
// — the order of a transposing reduction of eight vectors, which lets the
// AVX2 twin score eight candidates at once with two independent
// accumulators each — so it gets the same bits, and so does the CUDA kernel,
// which runs this code.
#pragma once
#include "quant_math.h"

namespace st {
namespace qs {

ST_HD float fma32(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// The total of 16 lane sums, in the order above.
ST_HD float lane_tree(const float* l) {
  float f[8];
  for (int i = 0; i < 8; ++i) f[i] = l[i] + l[i + 8];
  return ((f[0] + f[2]) + (f[1] + f[3])) + ((f[4] + f[6]) + (f[5] + f[7]));
}

// A grid of multipliers c = first + step * t, t = 0..count-1.
struct Grid { float first, step; int count; };

// The grids, chosen by measuring RMSE on N(0,1) groups against an exhaustive
// search (see the README's quantization section for the numbers).
// Functions, because device code cannot read a namespace-scope constexpr
// object of class type; the kGrid* constants below are the same values for
// host-only code (the AVX2 kernels).
ST_HD constexpr Grid grid4_neg() { return {-8.8f, 0.2f, 8}; }     // Q4_0 family mapping the extreme to -8
ST_HD constexpr Grid grid4_pos() { return {6.4f, 0.2f, 8}; }     // Q4_0 family mapping the extreme to +7
ST_HD constexpr Grid grid4_sym() { return {5.8f, 0.2f, 16}; }    // int4 symmetric, s > 0, e = max|x|
ST_HD constexpr Grid grid4_rng() { return {13.0f, 0.25f, 16}; }   // int4 asymmetric / Q4_1, e = max - min
ST_HD constexpr Grid grid8_sym() { return {124.0f, 0.5f, 8}; }   // int8 symmetric / Q8_0
ST_HD constexpr Grid grid8_rng() { return {250.0f, 1.0f, 8}; }   // int8 asymmetric

constexpr Grid kGrid4Neg = grid4_neg();
constexpr Grid kGrid4Pos = grid4_pos();
constexpr Grid kGrid4Sym = grid4_sym();
constexpr Grid kGrid4Rng = grid4_rng();
constexpr Grid kGrid8Sym = grid8_sym();
constexpr Grid kGrid8Rng = grid8_rng();

// Best signed scale s for x ~ s*q, q = clamp(round(x*inv), qmin, qmax).
// Updates (best_score, best_s) in place so several grids can be chained.
ST_HD void sym_candidates(const float* x, const float* w, int n, float e, Grid g, int qmin, int qmax,
                          float* best_score, float* best_s) {
  for (int t = 0; t < g.count; ++t) {
    const float inv = (g.first + g.step * static_cast<float>(t)) / e;
    float sxq[16] = {}, sqq[16] = {};
    for (int j = 0; j < n; ++j) {
      const float q = qm::fclamp(round_even(x[j] * inv), static_cast<float>(qmin), static_cast<float>(qmax));
      const float wq = w[j] * q;
      sxq[j & 15] = fma32(wq, x[j], sxq[j & 15]);
      sqq[j & 15] = fma32(wq, q, sqq[j & 15]);
    }
    const float a = lane_tree(sxq), b = lane_tree(sqq);
    if (b > 0.0f) {
      const float score = a * (a / b);
      if (score > *best_score) { *best_score = score; *best_s = a / b; }
    }
  }
}

// Best (s, z) for x ~ s*(q - z) with an integer zero point z in [qmin, qmax]:
// each candidate takes z from the widened minimum, then fits s.
ST_HD void asym_candidates(const float* x, const float* w, int n, float lo, float hi, Grid g, int qmin,
                           int qmax, float* best_score, float* best_s, int* best_z) {
  for (int t = 0; t < g.count; ++t) {
    const float inv = (g.first + g.step * static_cast<float>(t)) / (hi - lo);
    const float zf = qm::fclamp(round_even(static_cast<float>(qmin) - lo * inv), static_cast<float>(qmin),
                                static_cast<float>(qmax));
    float sxd[16] = {}, sdd[16] = {};
    for (int j = 0; j < n; ++j) {
      const float d = qm::fclamp(round_even(x[j] * inv) + zf, static_cast<float>(qmin), static_cast<float>(qmax)) - zf;
      const float wd = w[j] * d;
      sxd[j & 15] = fma32(wd, x[j], sxd[j & 15]);
      sdd[j & 15] = fma32(wd, d, sdd[j & 15]);
    }
    const float a = lane_tree(sxd), b = lane_tree(sdd);
    if (b > 0.0f && a > 0.0f) {
      const float score = a * (a / b);
      if (score > *best_score) { *best_score = score; *best_s = a / b; *best_z = static_cast<int>(zf); }
    }
  }
}

ST_HD float group_absmax(const float* x, int n) {
  float m = 0.0f;
  for (int j = 0; j < n; ++j) {
    const float a = qm::fabs32(x[j]);
    m = a > m ? a : m;
  }
  return m;
}

// compressed-tensors INT4/INT8 group. Falls back to the min/max rule for a
// group the search cannot improve (all zero).
ST_HD qm::GroupParams int_group_search(const float* x, const float* w, int n, int bits, bool symmetric,
                                       DType scale_dtype) {
  const qm::IntRange r = qm::int_range(bits);
  float mn, mx;
  qm::group_minmax(x, n, &mn, &mx);
  const qm::GroupParams plain = qm::int_params_minmax(mn, mx, bits, symmetric, scale_dtype);
  float best_score = 0.0f, s = 0.0f;
  int z = 0;
  if (symmetric) {
    const float e = group_absmax(x, n);
    if (e == 0.0f) return plain;
    sym_candidates(x, w, n, e, bits == 4 ? grid4_sym() : grid8_sym(), r.qmin, r.qmax, &best_score, &s);
  } else {
    const float lo = mn < 0.0f ? mn : 0.0f, hi = mx > 0.0f ? mx : 0.0f;
    if (hi == lo) return plain;
    asym_candidates(x, w, n, lo, hi, bits == 4 ? grid4_rng() : grid8_rng(), r.qmin, r.qmax, &best_score, &s, &z);
  }
  if (!(s > 0.0f)) return plain;
  s = s > qm::kScaleEps ? s : qm::kScaleEps;
  return {qm::scale_as_stored(s, scale_dtype), z};
}

// GGUF blocks with a searched scale. The layouts are the reference's; codes
// are recomputed from the stored f16 values: q = round(x / d) (+ bias).
ST_HD void q4_0_block_search(const float* x, const float* w, uint8_t* y) {
  const float e = qm::signed_absmax(x, qm::QK);
  if (e == 0.0f) { qm::q4_0_block(x, y); return; }
  float best_score = 0.0f, s = 0.0f;
  sym_candidates(x, w, qm::QK, e, grid4_neg(), -8, 7, &best_score, &s);
  sym_candidates(x, w, qm::QK, e, grid4_pos(), -8, 7, &best_score, &s);
  const uint16_t dh = f32_to_f16(s);
  const float d = f16_to_f32(dh);
  if (d == 0.0f) { qm::q4_0_block(x, y); return; }
  const float id = 1.0f / d;
  qm::store_u16(y, dh);
  int q[qm::QK];
  for (int j = 0; j < qm::QK; ++j) q[j] = static_cast<int>(qm::fclamp(round_even(x[j] * id), -8.0f, 7.0f)) + 8;
  qm::pack_nibbles_split(q, y + 2);
}

ST_HD void q8_0_block_search(const float* x, const float* w, uint8_t* y) {
  const float e = group_absmax(x, qm::QK);
  if (e == 0.0f) { qm::q8_0_block(x, y); return; }
  float best_score = 0.0f, s = 0.0f;
  sym_candidates(x, w, qm::QK, e, grid8_sym(), -127, 127, &best_score, &s);
  const uint16_t dh = f32_to_f16(s);
  const float d = f16_to_f32(dh);
  if (d == 0.0f) { qm::q8_0_block(x, y); return; }
  const float id = 1.0f / d;
  qm::store_u16(y, dh);
  for (int j = 0; j < qm::QK; ++j) {
    y[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(qm::fclamp(round_even(x[j] * id), -127.0f, 127.0f)));
  }
}

// Q4_1: x ~ d*q + m with q in 0..15 and a free offset m: each candidate's
// codes get the weighted least-squares (d, m); the score is the explained
// part d*Σwxq + m*Σwx of Σwx².
ST_HD void q4_1_block_search(const float* x, const float* w, uint8_t* y) {
  float mn, mx;
  qm::group_minmax(x, qm::QK, &mn, &mx);
  if (mx == mn) { qm::q4_1_block(x, y); return; }
  float sw[16] = {}, sx[16] = {};
  for (int j = 0; j < qm::QK; ++j) {
    sw[j & 15] += w[j];
    sx[j & 15] = fma32(w[j], x[j], sx[j & 15]);
  }
  const float Sw = lane_tree(sw), Sx = lane_tree(sx);
  float best = -3.402823466e+38f, bd = 0.0f, bm = 0.0f;
  bool found = false;
  const Grid g = grid4_rng();
  for (int t = 0; t < g.count; ++t) {
    const float inv = (g.first + g.step * static_cast<float>(t)) / (mx - mn);
    float sq[16] = {}, sqq[16] = {}, sxq[16] = {};
    for (int j = 0; j < qm::QK; ++j) {
      const float q = qm::fclamp(round_even((x[j] - mn) * inv), 0.0f, 15.0f);
      const float wq = w[j] * q;
      sq[j & 15] += wq;
      sqq[j & 15] = fma32(wq, q, sqq[j & 15]);
      sxq[j & 15] = fma32(wq, x[j], sxq[j & 15]);
    }
    const float Sq = lane_tree(sq), Sqq = lane_tree(sqq), Sxq = lane_tree(sxq);
    const float det = Sw * Sqq - Sq * Sq;
    if (!(det > 0.0f)) continue;
    const float d = (Sw * Sxq - Sq * Sx) / det;
    const float m = (Sqq * Sx - Sq * Sxq) / det;
    const float score = d * Sxq + m * Sx;
    if (score > best) { best = score; bd = d; bm = m; found = true; }
  }
  if (!found) { qm::q4_1_block(x, y); return; }
  const uint16_t dh = f32_to_f16(bd), mh = f32_to_f16(bm);
  const float d = f16_to_f32(dh), m = f16_to_f32(mh);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  qm::store_u16(y, dh);
  qm::store_u16(y + 2, mh);
  int q[qm::QK];
  for (int j = 0; j < qm::QK; ++j) q[j] = static_cast<int>(qm::fclamp(round_even((x[j] - m) * id), 0.0f, 15.0f));
  qm::pack_nibbles_split(q, y + 4);
}

}  // namespace qs
}  // namespace st
