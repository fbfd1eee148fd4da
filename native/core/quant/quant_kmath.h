// GGUF K-quants (Q2_K..Q6_K, super-blocks of 256 values) and llama.cpp's
// importance-weighted quantizers (K-quants and Q4_0/Q4_1/Q5_0/Q5_1), as
// ggml's ggml-quants.c computes them. These functions are the specification:
// the scalar reference calls them per super-block (per row for the 32-value
// formats), the CUDA kernels one super-block per thread, and the SIMD twins
// (quant_ksimd.h) must reproduce their bytes.
//
// Bit-exactness with ggml rests on three things, all kept here:
//  - every float operation in ggml's order, with no fused multiply-add (the
//    ggml build these vectors come from has none; this project builds with
//    -ffp-contract=off), and sums accumulated strictly left to right;
//  - ggml's rounding trick (nearest_int) and its integer conversions,
//    including the ones that wrap (int -> int8_t/uint8_t);
//  - strict comparisons, so the first of equal candidates wins.
#pragma once
#include <cstdint>

#include "quant.h"
#include "quant_math.h"

namespace st {
namespace qk {

constexpr int QK_K = 256;
// ggml's threshold below which a group counts as all zero.
constexpr float kGroupMaxEps = 1e-15f;

ST_HD float sqrt32(float v) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(v);
#else
  return std::sqrt(v);
#endif
}

// Round to nearest (ties to even) by adding 1.5 * 2^23 and reading the
// mantissa, as ggml does; for |v| >= 2^22 (or NaN) the result is what those
// bits say, which callers then clamp.
ST_HD int nearest_int(float v) {
  const float t = v + 12582912.0f;
  return static_cast<int>(f32_bits(t) & 0x007fffffu) - 0x00400000;
}

// C's conversions of an int to the 8-bit types ggml stores (modulo 256).
ST_HD int as_u8(int v) { return v & 0xff; }
ST_HD int as_i8(int v) { return static_cast<int>(static_cast<int8_t>(static_cast<uint8_t>(v & 0xff))); }

// ---------------------------------------------------------------------------
// Searches for one group's scale (and minimum).

// x ~ scale * L + min with L in [0, nmax] and min <= 0, minimising the
// weighted squared (use_mad: absolute) error. The starting point maps
// [min, max] onto [0, nmax]; then nstep + 1 candidate reciprocal scales
// (rmin + rdelta*k + nmax) / (max - min), min being the best offset found so
// far, each get their codes, a weighted least-squares (scale, min) for those
// codes (min clamped to 0, scale refit), and are kept when their error is
// strictly lower. Returns the scale; the
// offset is stored negated in *neg_min (ggml's "the_min"). Codes go to L.
// ggml's make_qkx2_quants and make_qkx3_quants (identical when weights are given).
ST_HD float search_scale_min(const float* x, const float* w, int n, int nmax, float rmin, float rdelta, int nstep,
                             bool use_mad, uint8_t* L, float* neg_min) {
  float lo = x[0], hi = x[0];
  float sum_w = w[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < lo) lo = x[i];
    if (x[i] > hi) hi = x[i];
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (lo > 0.0f) lo = 0.0f;
  if (!(hi > lo)) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *neg_min = -lo;
    return 0.0f;
  }
  // `min` is the offset of the best candidate so far: later candidates map
  // [min, hi] instead of [lo, hi], so they depend on the earlier ones.
  float min = lo;
  float iscale = static_cast<float>(nmax) / (hi - min);
  float scale = 1.0f / iscale;
  float best = 0.0f;
  for (int i = 0; i < n; ++i) {
    const int l = qm::iclamp(nearest_int(iscale * (x[i] - min)), 0, nmax);
    L[i] = static_cast<uint8_t>(l);
    float e = scale * static_cast<float>(l) + min - x[i];
    e = use_mad ? qm::fabs32(e) : e * e;
    best += w[i] * e;
  }
  if (nstep < 1) {
    *neg_min = -min;
    return scale;
  }
  uint8_t cand[32];
  for (int k = 0; k <= nstep; ++k) {
    const float cis = (rmin + rdelta * static_cast<float>(k) + static_cast<float>(nmax)) / (hi - min);
    float sl = 0.0f, sl2 = 0.0f, sxl = 0.0f;
    for (int i = 0; i < n; ++i) {
      const int l = qm::iclamp(nearest_int(cis * (x[i] - min)), 0, nmax);
      cand[i] = static_cast<uint8_t>(l);
      const float fl = static_cast<float>(l);
      sl += w[i] * fl;
      sl2 += w[i] * fl * fl;
      sxl += w[i] * fl * x[i];
    }
    const float det = sum_w * sl2 - sl * sl;
    if (!(det > 0.0f)) continue;
    float cs = (sum_w * sxl - sum_x * sl) / det;
    float cm = (sl2 * sum_x - sl * sxl) / det;
    if (cm > 0.0f) {
      cm = 0.0f;
      cs = sxl / sl2;
    }
    float err = 0.0f;
    for (int i = 0; i < n; ++i) {
      float e = cs * static_cast<float>(cand[i]) + cm - x[i];
      e = use_mad ? qm::fabs32(e) : e * e;
      err += w[i] * e;
    }
    if (err < best) {
      for (int i = 0; i < n; ++i) L[i] = cand[i];
      best = err;
      scale = cs;
      min = cm;
    }
  }
  *neg_min = -min;
  return scale;
}

// The signed extreme of x: the first element whose |x| is largest; *amax its |x|.
ST_HD float signed_extreme(const float* x, int n, float* amax) {
  float a = 0.0f, m = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float ax = qm::fabs32(x[i]);
    if (ax > a) { a = ax; m = x[i]; }
  }
  *amax = a;
  return m;
}

// Symmetric codes l in [-nmax, nmax-1] (stored + nmax in L) for x ~ scale*l,
// weighted by w (null: x²). Starts from the extreme mapped to -nmax, tries
// the 18 reciprocal scales -(nmax + k/10)/extreme, k = ±1..±9, and keeps the
// least-squares scale of the candidate explaining most of Σw·x² (strictly).
// ggml's make_qx_quants with rmse_type 1.
ST_HD float search_scale_sym(const float* x, const float* w, int n, int nmax, int8_t* L) {
  float amax;
  const float max = signed_extreme(x, n, &amax);
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  float iscale = static_cast<float>(-nmax) / max;
  float slx = 0.0f, sl2 = 0.0f;
  for (int i = 0; i < n; ++i) {
    const int l = qm::iclamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l + nmax);
    const float wi = w ? w[i] : x[i] * x[i];
    const float fl = static_cast<float>(l);
    slx += wi * x[i] * fl;
    sl2 += wi * fl * fl;
  }
  float scale = sl2 != 0.0f ? slx / sl2 : 0.0f;
  float best = scale * slx;
  for (int k = -9; k <= 9; ++k) {
    if (k == 0) continue;
    const float cis = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(k)) / max;
    float cx = 0.0f, c2 = 0.0f;
    for (int i = 0; i < n; ++i) {
      const float fl = static_cast<float>(qm::iclamp(nearest_int(cis * x[i]), -nmax, nmax - 1));
      const float wi = w ? w[i] : x[i] * x[i];
      cx += wi * x[i] * fl;
      c2 += wi * fl * fl;
    }
    if (c2 > 0.0f && cx * cx > best * c2) {
      for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(nmax + qm::iclamp(nearest_int(cis * x[i]), -nmax, nmax - 1));
      scale = cx / c2;
      best = scale * cx;
    }
  }
  return scale;
}

// Q3_K's search (ggml's make_q3_quants with do_rmse): codes l in [-nmax,
// nmax-1] from the extreme, then up to five sweeps of coordinate descent,
// each moving one code to its least-squares value when that raises the
// explained part of Σx⁴ (weights x²). L gets l + nmax (0 for an all-zero group).
ST_HD float search_scale_q3(const float* x, int n, int nmax, int8_t* L) {
  float amax;
  const float max = signed_extreme(x, n, &amax);
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  const float iscale = static_cast<float>(-nmax) / max;
  float slx = 0.0f, sl2 = 0.0f;
  for (int i = 0; i < n; ++i) {
    const int l = qm::iclamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l);
    const float wi = x[i] * x[i];
    slx += wi * x[i] * static_cast<float>(l);
    sl2 += wi * static_cast<float>(l) * static_cast<float>(l);
  }
  for (int sweep = 0; sweep < 5; ++sweep) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float wi = x[i] * x[i];
      const float li = static_cast<float>(L[i]);
      float tx = slx - wi * x[i] * li;
      if (!(tx > 0.0f)) continue;
      float t2 = sl2 - wi * li * li;
      const int nl = qm::iclamp(nearest_int(x[i] * t2 / tx), -nmax, nmax - 1);
      if (nl == L[i]) continue;
      const float fnl = static_cast<float>(nl);
      tx += wi * x[i] * fnl;
      t2 += wi * fnl * fnl;
      if (t2 > 0.0f && tx * tx * sl2 > slx * slx * t2) {
        L[i] = static_cast<int8_t>(nl);
        slx = tx;
        sl2 = t2;
        ++changed;
      }
    }
    if (!changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
  return sl2 > 0.0f ? slx / sl2 : 0.0f;
}

// Non-negative codes L in [0, nmax] for non-negative x ~ scale*L (the
// sub-block scales and minimums of a super-block), weighted by w: the best
// of nine reciprocal scales (nmax + k/10)/max by weighted squared error,
// then coordinate descent as in search_scale_q3. ggml's make_qp_quants.
ST_HD float search_scale_pos(const float* x, const float* w, int n, int nmax, uint8_t* L) {
  float max = 0.0f;
  for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];
  if (max < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  float iscale = static_cast<float>(nmax) / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(as_u8(nearest_int(iscale * x[i])));
  const float scale0 = 1.0f / iscale;
  float best = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float e = x[i] - scale0 * static_cast<float>(L[i]);
    best += w[i] * e * e;
  }
  for (int k = -4; k <= 4; ++k) {
    if (k == 0) continue;
    const float cis = (0.1f * static_cast<float>(k) + static_cast<float>(nmax)) / max;
    const float cs = 1.0f / cis;
    float err = 0.0f;
    for (int i = 0; i < n; ++i) {
      const int l = qm::imin(nmax, nearest_int(cis * x[i]));
      const float e = x[i] - cs * static_cast<float>(l);
      err += w[i] * e * e;
    }
    if (err < best) {
      best = err;
      iscale = cis;
    }
  }
  float slx = 0.0f, sl2 = 0.0f;
  for (int i = 0; i < n; ++i) {
    const int l = qm::imin(nmax, nearest_int(iscale * x[i]));  // the sums take l itself, L its low byte
    L[i] = static_cast<uint8_t>(as_u8(l));
    slx += w[i] * x[i] * static_cast<float>(l);
    sl2 += w[i] * static_cast<float>(l) * static_cast<float>(l);
  }
  for (int sweep = 0; sweep < 5; ++sweep) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float li = static_cast<float>(L[i]);
      float tx = slx - w[i] * x[i] * li;
      float t2 = sl2 - w[i] * li * li;
      if (!(tx > 0.0f && t2 > 0.0f)) continue;
      const int nl = qm::imin(nmax, nearest_int(x[i] * t2 / tx));
      if (nl == L[i]) continue;
      const float fnl = static_cast<float>(nl);
      tx += w[i] * x[i] * fnl;
      t2 += w[i] * fnl * fnl;
      if (tx * tx * sl2 > slx * slx * t2) {
        L[i] = static_cast<uint8_t>(as_u8(nl));
        slx = tx;
        sl2 = t2;
        ++changed;
      }
    }
    if (!changed) break;
  }
  return sl2 > 0.0f ? slx / sl2 : 0.0f;
}

// ---------------------------------------------------------------------------
// Block layouts (little-endian, ggml-common.h), bytes:
//   Q2_K  84: u8 scales[16] (low nibble scale, high nibble min), u8 qs[64], f16 d, f16 dmin
//   Q3_K 110: u8 hmask[32], u8 qs[64], u8 scales[12] (6-bit, biased by 32), f16 d
//   Q4_K 144: f16 d, f16 dmin, u8 scales[12] (8 six-bit scales + 8 six-bit mins), u8 qs[128]
//   Q5_K 176: f16 d, f16 dmin, u8 scales[12], u8 qh[32], u8 qs[128]
//   Q6_K 210: u8 ql[128], u8 qh[64], i8 scales[16], f16 d
constexpr int kQ2KBytes = 84, kQ3KBytes = 110, kQ4KBytes = 144, kQ5KBytes = 176, kQ6KBytes = 210;

// 2-bit codes of 256 values: byte 32*h + l holds codes 128h + l + 32k at bits 2k.
ST_HD void pack_2bit(const uint8_t* L, uint8_t* qs) {
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t* c = L + 128 * h + l;
      qs[32 * h + l] = static_cast<uint8_t>(c[0] | (c[32] << 2) | (c[64] << 4) | (c[96] << 6));
    }
  }
}

// Q4_K/Q5_K scales: sub-blocks 0..3 keep their 6-bit scale and min in bytes
// j and j+4; 4..7 keep the low nibbles in byte j+4 and their top two bits in
// the top bits of bytes j-4 (scale) and j (min).
ST_HD void pack_scale_min_k4(const int* ls, const int* lm, uint8_t* s) {
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      s[j] = static_cast<uint8_t>(ls[j]);
      s[j + 4] = static_cast<uint8_t>(lm[j]);
    } else {
      s[j + 4] = static_cast<uint8_t>((ls[j] & 0x0f) | ((lm[j] & 0x0f) << 4));
      s[j - 4] = static_cast<uint8_t>(s[j - 4] | ((ls[j] >> 4) << 6));
      s[j] = static_cast<uint8_t>(s[j] | ((lm[j] >> 4) << 6));
    }
  }
}

ST_HD void scale_min_k4(int j, const uint8_t* s, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Q3_K scales: sixteen 6-bit values; low nibbles in bytes 0..7 (j and j+8
// share byte j%8), top two bits of j in byte 8 + j%4 at bit 2*(j/4).
ST_HD void pack_scales_q3(const int* l6, uint8_t* s) {
  for (int k = 0; k < 12; ++k) s[k] = 0;
  for (int j = 0; j < 16; ++j) {
    const int l = l6[j];
    if (j < 8) s[j] = static_cast<uint8_t>(l & 0x0f);
    else s[j - 8] = static_cast<uint8_t>(s[j - 8] | ((l & 0x0f) << 4));
    s[8 + j % 4] = static_cast<uint8_t>(s[8 + j % 4] | ((l >> 4) << (2 * (j / 4))));
  }
}

ST_HD int scale_q3(int j, const uint8_t* s) {
  const int lo = j < 8 ? (s[j] & 0x0f) : (s[j - 8] >> 4);
  return as_i8(lo | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
}

// Codes of x with a stored sub-block scale d and offset dm: clamp(round((x + dm) / d)).
ST_HD void requantize_affine(const float* x, int n, float d, float dm, int nmax, uint8_t* L) {
  for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(qm::iclamp(nearest_int((x[i] + dm) / d), 0, nmax));
}

// Codes of x with a stored symmetric scale d: clamp(round(x / d)) + bias.
ST_HD void requantize_sym(const float* x, int n, float d, int lo, int hi, int8_t* L) {
  for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(qm::iclamp(nearest_int(x[i] / d), lo, hi) - lo);
}

// Σ x² over a super-block, left to right.
ST_HD float sum_squares(const float* x, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += x[i] * x[i];
  return s;
}

// The weights of llama.cpp's importance-weighted quantizers: imatrix[i] * sqrt(sigma2 + x²).
ST_HD void importance_weights(const float* x, const float* qw, int n, float sigma2, float* w) {
  for (int i = 0; i < n; ++i) w[i] = qw[i] * sqrt32(sigma2 + x[i] * x[i]);
}

ST_HD float sum_left(const float* v, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += v[i];
  return s;
}

// ---------------------------------------------------------------------------
// Q2_K: sixteen sub-blocks of 16 with 4-bit scale and min codes.

// Sub-block j's stored scale and offset (x ~ d*q - m) once the header is written.
ST_HD void q2_k_sub(const uint8_t* y, int j, float* d, float* m) {
  *d = f16_to_f32(qm::load_u16(y + 80)) * static_cast<float>(y[j] & 0x0f);
  *m = f16_to_f32(qm::load_u16(y + 82)) * static_cast<float>(y[j] >> 4);
}

// Requantizes with the stored scales (a sub-block whose scale is 0 keeps the
// search's codes) and packs the codes.
ST_HD void q2_k_finish(const float* x, uint8_t* L, uint8_t* y) {
  for (int j = 0; j < 16; ++j) {
    float d, m;
    q2_k_sub(y, j, &d, &m);
    if (d == 0.0f) continue;
    requantize_affine(x + 16 * j, 16, d, m, 3, L + 16 * j);
  }
  pack_2bit(L, y + 16);
}

// The reference's scale and min codes: each relative to the largest.
ST_HD void q2_k_header(const float* scales, const float* mins, uint8_t* y) {
  float max_scale = 0.0f, max_min = 0.0f;
  for (int j = 0; j < 16; ++j) {
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  if (max_scale > 0.0f) {
    const float is = 15.0f / max_scale;
    for (int j = 0; j < 16; ++j) y[j] = static_cast<uint8_t>(nearest_int(is * scales[j]));
    qm::store_u16(y + 80, f32_to_f16(max_scale / 15.0f));
  } else {
    for (int j = 0; j < 16; ++j) y[j] = 0;
    qm::store_u16(y + 80, f32_to_f16(0.0f));
  }
  if (max_min > 0.0f) {
    const float im = 15.0f / max_min;
    for (int j = 0; j < 16; ++j) y[j] = static_cast<uint8_t>(y[j] | (static_cast<unsigned>(nearest_int(im * mins[j])) << 4));
    qm::store_u16(y + 82, f32_to_f16(max_min / 15.0f));
  } else {
    qm::store_u16(y + 82, f32_to_f16(0.0f));
  }
}

// The weighted path's codes: the scales and mins themselves quantized by a search weighted by sw.
ST_HD void q2_k_header_weighted(const float* scales, const float* mins, const float* sw, uint8_t* y) {
  uint8_t ls[16], lm[16];
  const float dm = search_scale_pos(scales, sw, 16, 15, ls);
  const float mm = search_scale_pos(mins, sw, 16, 15, lm);
  qm::store_u16(y + 80, f32_to_f16(dm));
  qm::store_u16(y + 82, f32_to_f16(mm));
  for (int j = 0; j < 16; ++j) y[j] = static_cast<uint8_t>(ls[j] | (lm[j] << 4));
}

// quantize_row_q2_K_ref.
ST_HD void q2_k_block(const float* x, uint8_t* y) {
  uint8_t L[QK_K];
  float scales[16], mins[16], w[16];
  for (int j = 0; j < 16; ++j) {
    for (int i = 0; i < 16; ++i) w[i] = qm::fabs32(x[16 * j + i]);
    scales[j] = search_scale_min(x + 16 * j, w, 16, 3, -0.5f, 0.1f, 15, true, L + 16 * j, &mins[j]);
  }
  q2_k_header(scales, mins, y);
  q2_k_finish(x, L, y);
}

// quantize_row_q2_K_impl (an importance matrix qw for these 256 columns).
ST_HD void q2_k_block_weighted(const float* x, const float* qw, uint8_t* y) {
  uint8_t L[QK_K];
  float scales[16], mins[16], sw[16], w[16];
  const float sigma2 = sum_squares(x, QK_K) / static_cast<float>(QK_K);
  for (int j = 0; j < 16; ++j) {
    importance_weights(x + 16 * j, qw + 16 * j, 16, sigma2, w);
    sw[j] = sum_left(w, 16);
    scales[j] = search_scale_min(x + 16 * j, w, 16, 3, -0.9f, 0.05f, 36, false, L + 16 * j, &mins[j]);
  }
  q2_k_header_weighted(scales, mins, sw, y);
  q2_k_finish(x, L, y);
}

ST_HD void q2_k_unblock(const uint8_t* y, float* x) {
  const float d = f16_to_f32(qm::load_u16(y + 80)), dmin = f16_to_f32(qm::load_u16(y + 82));
  for (int i = 0; i < QK_K; ++i) {
    const int j = i / 16;  // sub-block
    const int q = (y[16 + 32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3;
    const float dl = d * static_cast<float>(y[j] & 0x0f), ml = dmin * static_cast<float>(y[j] >> 4);
    x[i] = dl * static_cast<float>(q) - ml;
  }
}

// ---------------------------------------------------------------------------
// Q3_K: sixteen sub-blocks of 16, symmetric 3-bit codes, 6-bit scales.

ST_HD float q3_k_sub(const uint8_t* y, int j) {
  return f16_to_f32(qm::load_u16(y + 108)) * static_cast<float>(scale_q3(j, y + 96));
}

// The high bit of code i goes to hmask[i % 32] bit i / 32, the low two bits to qs.
ST_HD void q3_k_pack(const int8_t* L, uint8_t* y) {
  uint8_t low[QK_K];
  for (int k = 0; k < 32; ++k) y[k] = 0;
  for (int i = 0; i < QK_K; ++i) {
    int l = L[i];
    if (l > 3) {
      y[i % 32] = static_cast<uint8_t>(y[i % 32] | (1 << (i / 32)));
      l -= 4;
    }
    low[i] = static_cast<uint8_t>(l);
  }
  pack_2bit(low, y + 32);
}

ST_HD void q3_k_finish(const float* x, int8_t* L, uint8_t* y) {
  for (int j = 0; j < 16; ++j) {
    const float d = q3_k_sub(y, j);
    if (d == 0.0f) continue;
    requantize_sym(x + 16 * j, 16, d, -4, 3, L + 16 * j);
  }
  q3_k_pack(L, y);
}

ST_HD void q3_k_header(const float* scales, uint8_t* y) {
  float amax;
  const float max_scale = signed_extreme(scales, 16, &amax);
  int l6[16];
  if (max_scale != 0.0f) {
    const float is = -32.0f / max_scale;
    for (int j = 0; j < 16; ++j) l6[j] = qm::iclamp(as_i8(nearest_int(is * scales[j])), -32, 31) + 32;
    pack_scales_q3(l6, y + 96);
    qm::store_u16(y + 108, f32_to_f16(1.0f / is));
  } else {
    for (int k = 0; k < 12; ++k) y[96 + k] = 0;
    qm::store_u16(y + 108, f32_to_f16(0.0f));
  }
}

ST_HD void q3_k_header_weighted(const float* scales, const float* sw, uint8_t* y) {
  int8_t ls[16];
  const float d = search_scale_sym(scales, sw, 16, 32, ls);
  int l6[16];
  for (int j = 0; j < 16; ++j) l6[j] = ls[j];
  pack_scales_q3(l6, y + 96);
  qm::store_u16(y + 108, f32_to_f16(d));
}

// quantize_row_q3_K_ref.
ST_HD void q3_k_block(const float* x, uint8_t* y) {
  int8_t L[QK_K];
  float scales[16];
  for (int j = 0; j < 16; ++j) scales[j] = search_scale_q3(x + 16 * j, 16, 4, L + 16 * j);
  q3_k_header(scales, y);
  q3_k_finish(x, L, y);
}

// quantize_row_q3_K_impl.
ST_HD void q3_k_block_weighted(const float* x, const float* qw, uint8_t* y) {
  int8_t L[QK_K];
  float scales[16], sw[16], w[16];
  const float sigma2 = 2.0f * sum_squares(x, QK_K) / static_cast<float>(QK_K);
  for (int j = 0; j < 16; ++j) {
    importance_weights(x + 16 * j, qw + 16 * j, 16, sigma2, w);
    sw[j] = sum_left(w, 16);
    scales[j] = search_scale_sym(x + 16 * j, w, 16, 4, L + 16 * j);
  }
  q3_k_header_weighted(scales, sw, y);
  q3_k_finish(x, L, y);
}

ST_HD void q3_k_unblock(const uint8_t* y, float* x) {
  const float d = f16_to_f32(qm::load_u16(y + 108));
  for (int i = 0; i < QK_K; ++i) {
    const int low = (y[32 + 32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3;
    const int high = (y[i % 32] >> (i / 32)) & 1;
    const float dl = d * static_cast<float>(scale_q3(i / 16, y + 96));
    x[i] = dl * static_cast<float>(low - (high ? 0 : 4));
  }
}

// ---------------------------------------------------------------------------
// Q4_K / Q5_K: eight sub-blocks of 32 with 6-bit scale and min codes.

// Stores the codes of 256 values (4 or 5 bits) in Q4_K's or Q5_K's layout.
// Nibbles: byte 32*h + l holds codes 64h + l (low) and 64h + 32 + l (high);
// Q5_K's fifth bits: qh[l] bit 2h for code 64h + l, bit 2h+1 for 64h + 32 + l.
ST_HD void pack_q45_k(const uint8_t* L, bool five, uint8_t* qh, uint8_t* qs) {
  if (five) {
    for (int l = 0; l < 32; ++l) qh[l] = 0;
  }
  for (int h = 0; h < 4; ++h) {
    for (int l = 0; l < 32; ++l) {
      int a = L[64 * h + l], b = L[64 * h + 32 + l];
      if (five) {
        if (a > 15) { a -= 16; qh[l] = static_cast<uint8_t>(qh[l] | (1 << (2 * h))); }
        if (b > 15) { b -= 16; qh[l] = static_cast<uint8_t>(qh[l] | (2 << (2 * h))); }
      }
      qs[32 * h + l] = static_cast<uint8_t>(a | (b << 4));
    }
  }
}

ST_HD void q45_k_store_header(const int* ls, const int* lm, uint16_t dh, uint16_t mh, uint8_t* y) {
  qm::store_u16(y, dh);
  qm::store_u16(y + 2, mh);
  pack_scale_min_k4(ls, lm, y + 4);
}

ST_HD void q45_k_sub(const uint8_t* y, int j, float* d, float* m) {
  int sc, mc;
  scale_min_k4(j, y + 4, &sc, &mc);
  *d = f16_to_f32(qm::load_u16(y)) * static_cast<float>(sc);
  *m = f16_to_f32(qm::load_u16(y + 2)) * static_cast<float>(mc);
}

ST_HD void q45_k_pack(const uint8_t* L, int nmax, uint8_t* y) {
  if (nmax == 31) pack_q45_k(L, true, y + 16, y + 48);
  else pack_q45_k(L, false, nullptr, y + 16);
}

// After the header: requantizes with the stored values and packs the
// codes. nmax = 15 (Q4_K) or 31 (Q5_K).
ST_HD void q45_k_finish(const float* x, int nmax, uint8_t* L, uint8_t* y) {
  for (int j = 0; j < 8; ++j) {
    float d, m;
    q45_k_sub(y, j, &d, &m);
    if (d == 0.0f) continue;
    requantize_affine(x + 32 * j, 32, d, m, nmax, L + 32 * j);
  }
  q45_k_pack(L, nmax, y);
}

// The reference's 6-bit scale and min codes, each relative to the largest.
ST_HD void q45_k_header(const float* scales, const float* mins, uint8_t* y) {
  float max_scale = 0.0f, max_min = 0.0f;
  for (int j = 0; j < 8; ++j) {
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float is = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
  const float im = max_min > 0.0f ? 63.0f / max_min : 0.0f;
  int ls[8], lm[8];
  for (int j = 0; j < 8; ++j) {
    ls[j] = qm::imin(63, as_u8(nearest_int(is * scales[j])));
    lm[j] = qm::imin(63, as_u8(nearest_int(im * mins[j])));
  }
  q45_k_store_header(ls, lm, f32_to_f16(max_scale / 63.0f), f32_to_f16(max_min / 63.0f), y);
}

// The weighted path's codes: the scales and mins quantized by a search weighted by sw.
ST_HD void q45_k_header_weighted(const float* scales, const float* mins, const float* sw, int nmax, uint8_t* y) {
  uint8_t us[8], um[8];
  const float d = search_scale_pos(scales, sw, 8, 63, us);
  const float m = search_scale_pos(mins, sw, 8, 63, um);
  int ls[8], lm[8];
  // Q5_K clamps the codes to 63, Q4_K does not: they differ only when a
  // negative scale wrapped to a byte above 63.
  for (int j = 0; j < 8; ++j) {
    ls[j] = nmax == 31 ? qm::imin(63, us[j]) : us[j];
    lm[j] = nmax == 31 ? qm::imin(63, um[j]) : um[j];
  }
  q45_k_store_header(ls, lm, f32_to_f16(d), f32_to_f16(m), y);
}

// The reference's search parameters of Q4_K (nmax 15) and Q5_K (31).
ST_HD float q45_k_rmin(int nmax) { return nmax == 15 ? -1.0f : -0.5f; }
ST_HD int q45_k_nstep(int nmax) { return nmax == 15 ? 20 : 15; }

// quantize_row_q4_K_ref / quantize_row_q5_K_ref.
ST_HD void q45_k_block(const float* x, int nmax, uint8_t* y) {
  uint8_t L[QK_K];
  float scales[8], mins[8], w[32];
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + 32 * j;
    const float av = sqrt32(sum_squares(xs, 32) / 32.0f);
    for (int i = 0; i < 32; ++i) w[i] = av + qm::fabs32(xs[i]);
    scales[j] = search_scale_min(xs, w, 32, nmax, q45_k_rmin(nmax), 0.1f, q45_k_nstep(nmax), false, L + 32 * j, &mins[j]);
  }
  q45_k_header(scales, mins, y);
  q45_k_finish(x, nmax, L, y);
}

// quantize_row_q4_K_impl / quantize_row_q5_K_impl.
ST_HD void q45_k_block_weighted(const float* x, const float* qw, int nmax, uint8_t* y) {
  uint8_t L[QK_K];
  float scales[8], mins[8], sw[8], w[32];
  const float sigma2 = 2.0f * sum_squares(x, QK_K) / static_cast<float>(QK_K);
  for (int j = 0; j < 8; ++j) {
    importance_weights(x + 32 * j, qw + 32 * j, 32, sigma2, w);
    sw[j] = sum_left(w, 32);
    scales[j] = search_scale_min(x + 32 * j, w, 32, nmax, -0.9f, 0.05f, 36, false, L + 32 * j, &mins[j]);
  }
  q45_k_header_weighted(scales, mins, sw, nmax, y);
  q45_k_finish(x, nmax, L, y);
}

ST_HD void q45_k_unblock(const uint8_t* y, bool five, float* x) {
  const float d = f16_to_f32(qm::load_u16(y)), dmin = f16_to_f32(qm::load_u16(y + 2));
  const uint8_t* qs = y + (five ? 48 : 16);
  for (int i = 0; i < QK_K; ++i) {
    const int h = i / 64, hi = (i % 64) / 32, l = i % 32;
    int sc, m;
    scale_min_k4(i / 32, y + 4, &sc, &m);
    int q = (qs[32 * h + l] >> (4 * hi)) & 0x0f;
    if (five && (y[16 + l] >> (2 * h + hi) & 1)) q += 16;
    x[i] = d * static_cast<float>(sc) * static_cast<float>(q) - dmin * static_cast<float>(m);
  }
}

// ---------------------------------------------------------------------------
// Q6_K: sixteen sub-blocks of 16, symmetric 6-bit codes, int8 scales.

// Stores the scales and codes; `d` is the stored f16 super-block scale.
// ql byte 64*h + l: codes 128h + l (low nibble) and 128h + 64 + l (high);
// byte 64*h + 32 + l: codes 128h + 32 + l and 128h + 96 + l.
// qh byte 32*h + l: the top two bits of codes 128h + l + 32k at bits 2k.
// Writes d and the int8 scales; false (the block all zero bytes) when every
// sub-block scale is below kGroupMaxEps.
ST_HD bool q6_k_header(const float* scales, uint8_t* y) {
  float amax;
  const float max_scale = signed_extreme(scales, 16, &amax);
  if (amax < kGroupMaxEps) {
    for (int k = 0; k < kQ6KBytes; ++k) y[k] = 0;
    return false;
  }
  const float is = -128.0f / max_scale;
  qm::store_u16(y + 208, f32_to_f16(1.0f / is));
  for (int j = 0; j < 16; ++j) y[192 + j] = static_cast<uint8_t>(qm::imin(127, nearest_int(is * scales[j])));
  return true;
}

ST_HD float q6_k_sub(const uint8_t* y, int j) {
  return f16_to_f32(qm::load_u16(y + 208)) * static_cast<float>(static_cast<int8_t>(y[192 + j]));
}

ST_HD void q6_k_pack(const int8_t* L, uint8_t* y) {
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 32; ++l) {
      const int8_t* c = L + 128 * h + l;
      y[64 * h + l] = static_cast<uint8_t>((c[0] & 0x0f) | ((c[64] & 0x0f) << 4));
      y[64 * h + 32 + l] = static_cast<uint8_t>((c[32] & 0x0f) | ((c[96] & 0x0f) << 4));
      y[128 + 32 * h + l] = static_cast<uint8_t>(((c[0] >> 4) & 3) | (((c[32] >> 4) & 3) << 2) | (((c[64] >> 4) & 3) << 4) |
                                                 (((c[96] >> 4) & 3) << 6));
    }
  }
}

ST_HD void q6_k_finish(const float* x, int8_t* L, uint8_t* y) {
  for (int j = 0; j < 16; ++j) {
    const float d = q6_k_sub(y, j);
    if (d == 0.0f) continue;
    requantize_sym(x + 16 * j, 16, d, -32, 31, L + 16 * j);
  }
  q6_k_pack(L, y);
}

// quantize_row_q6_K_ref (qw null) and quantize_row_q6_K_impl (qw: the
// importance of these 256 columns, used directly as the search's weights).
ST_HD void q6_k_block(const float* x, const float* qw, uint8_t* y) {
  int8_t L[QK_K];
  float scales[16];
  for (int j = 0; j < 16; ++j) scales[j] = search_scale_sym(x + 16 * j, qw ? qw + 16 * j : nullptr, 16, 32, L + 16 * j);
  if (!q6_k_header(scales, y)) return;
  q6_k_finish(x, L, y);
}

ST_HD void q6_k_unblock(const uint8_t* y, float* x) {
  const float d = f16_to_f32(qm::load_u16(y + 208));
  for (int i = 0; i < QK_K; ++i) {
    const int h = i / 128, k = (i % 128) / 32, l = i % 32;
    const int low = (y[64 * h + 32 * (k & 1) + l] >> (4 * (k >> 1))) & 0x0f;
    const int high = (y[128 + 32 * h + l] >> (2 * k)) & 3;
    const int q = (low | (high << 4)) - 32;
    x[i] = d * static_cast<float>(static_cast<int8_t>(y[192 + i / 16])) * static_cast<float>(q);
  }
}

// ---------------------------------------------------------------------------
// llama.cpp's importance-weighted 32-value formats. sigma2 = Σx²/cols over
// the whole row (the caller computes it left to right).

// quantize_row_q4_0_impl / quantize_row_q5_0_impl for one block: symmetric
// search with nmax 8 (Q4_0) or 16 (Q5_0).
ST_HD void q40_50_block_weighted(const float* x, const float* qw, float sigma2, bool five, uint8_t* y) {
  float w[qm::QK];
  int8_t L[qm::QK];
  importance_weights(x, qw, qm::QK, sigma2, w);
  const float d = search_scale_sym(x, w, qm::QK, five ? 16 : 8, L);
  qm::store_u16(y, f32_to_f16(d));
  int q[qm::QK];
  for (int j = 0; j < qm::QK; ++j) q[j] = L[j];
  if (five) qm::pack_q5(q, y + 2, y + 6);
  else qm::pack_nibbles_split(q, y + 2);
}

// quantize_row_q4_1_impl / quantize_row_q5_1_impl for one block.
ST_HD void q41_51_block_weighted(const float* x, const float* qw, float sigma2, bool five, uint8_t* y) {
  float w[qm::QK];
  uint8_t L[qm::QK];
  importance_weights(x, qw, qm::QK, sigma2, w);
  float neg_min;
  const float d = search_scale_min(x, w, qm::QK, five ? 31 : 15, -0.9f, 0.05f, 36, false, L, &neg_min);
  qm::store_u16(y, f32_to_f16(d));
  qm::store_u16(y + 2, f32_to_f16(-neg_min));
  int q[qm::QK];
  for (int j = 0; j < qm::QK; ++j) q[j] = L[j];
  if (five) qm::pack_q5(q, y + 4, y + 8);
  else qm::pack_nibbles_split(q, y + 4);
}

// ---------------------------------------------------------------------------
// Dispatch by format, for the reference loops and the CUDA kernels.

// ggml's reference quantizer of one block (32 values, K-quants 256).
ST_HD void ggml_block(QFormat f, const float* x, uint8_t* y) {
  switch (f) {
    case QFormat::Q4_0: qm::q4_0_block(x, y); break;
    case QFormat::Q4_1: qm::q4_1_block(x, y); break;
    case QFormat::Q5_0: qm::q5_0_block(x, y); break;
    case QFormat::Q5_1: qm::q5_1_block(x, y); break;
    case QFormat::Q8_0: qm::q8_0_block(x, y); break;
    case QFormat::Q2_K: q2_k_block(x, y); break;
    case QFormat::Q3_K: q3_k_block(x, y); break;
    case QFormat::Q4_K: q45_k_block(x, 15, y); break;
    case QFormat::Q5_K: q45_k_block(x, 31, y); break;
    case QFormat::Q6_K: q6_k_block(x, nullptr, y); break;
    default: break;
  }
}

// llama.cpp's importance-weighted quantizer of one block; qw: the block's
// columns of the imatrix; sigma2: the row's Σx²/cols (32-value formats only).
ST_HD void ggml_block_weighted(QFormat f, const float* x, const float* qw, float sigma2, uint8_t* y) {
  switch (f) {
    case QFormat::Q4_0: q40_50_block_weighted(x, qw, sigma2, false, y); break;
    case QFormat::Q5_0: q40_50_block_weighted(x, qw, sigma2, true, y); break;
    case QFormat::Q4_1: q41_51_block_weighted(x, qw, sigma2, false, y); break;
    case QFormat::Q5_1: q41_51_block_weighted(x, qw, sigma2, true, y); break;
    case QFormat::Q2_K: q2_k_block_weighted(x, qw, y); break;
    case QFormat::Q3_K: q3_k_block_weighted(x, qw, y); break;
    case QFormat::Q4_K: q45_k_block_weighted(x, qw, 15, y); break;
    case QFormat::Q5_K: q45_k_block_weighted(x, qw, 31, y); break;
    case QFormat::Q6_K: q6_k_block(x, qw, y); break;
    default: ggml_block(f, x, y); break;  // Q8_0 ignores the weights
  }
}

// ggml's to_float of one block.
ST_HD void ggml_unblock(QFormat f, const uint8_t* y, float* x) {
  switch (f) {
    case QFormat::Q4_0: qm::q4_0_unblock(y, x); break;
    case QFormat::Q4_1: qm::q4_1_unblock(y, x); break;
    case QFormat::Q5_0: qm::q5_0_unblock(y, x); break;
    case QFormat::Q5_1: qm::q5_1_unblock(y, x); break;
    case QFormat::Q8_0: qm::q8_0_unblock(y, x); break;
    case QFormat::Q2_K: q2_k_unblock(y, x); break;
    case QFormat::Q3_K: q3_k_unblock(y, x); break;
    case QFormat::Q4_K: q45_k_unblock(y, false, x); break;
    case QFormat::Q5_K: q45_k_unblock(y, true, x); break;
    case QFormat::Q6_K: q6_k_unblock(y, x); break;
    default: break;
  }
}

}  // namespace qk
}  // namespace st
