// Per-block and per-group arithmetic of every quantization format. These
// functions are the specification: the scalar reference calls them row by
// row, the CUDA kernels call them one group per thread, and the AVX2 kernels
// must reproduce their results bit for bit.
#pragma once
#include <cstdint>

#include "../numeric.h"
#include "../tensor.h"

namespace st {
namespace qm {

constexpr int QK = 32;                 // GGUF block length
constexpr float kScaleEps = 1.1920929e-07f;  // torch.finfo(float32).eps, compressed-tensors' floor

ST_HD int imin(int a, int b) { return a < b ? a : b; }
ST_HD int imax(int a, int b) { return a > b ? a : b; }
ST_HD int iclamp(int v, int lo, int hi) { return imin(hi, imax(lo, v)); }
// min(max(v, lo), hi) with x86 MAXPS/MINPS semantics (a NaN v becomes lo),
// so the SIMD twins' _mm256_min_ps(_mm256_max_ps(v, lo), hi) agrees on every input.
ST_HD float fclamp(float v, float lo, float hi) {
  const float t = v > lo ? v : lo;
  return t < hi ? t : hi;
}

ST_HD float fabs32(float x) { return bits_f32(f32_bits(x) & 0x7fffffffu); }

ST_HD void store_u16(uint8_t* p, uint16_t v) { p[0] = static_cast<uint8_t>(v); p[1] = static_cast<uint8_t>(v >> 8); }
ST_HD uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

// ---------------------------------------------------------------------------
// GGUF blocks (ggml's reference quantizers, ggml-quants.c). Block layouts:
//   Q4_0: f16 d, u8 qs[16]        Q4_1: f16 d, f16 m, u8 qs[16]
//   Q8_0: f16 d, i8 qs[32]
// Nibbles: qs[j] = q[j] | q[j+16] << 4.

// Packs 32 codes (0..15) the GGUF way. Codes are ints in 0..255 so that the
// degenerate blocks of the reference (whose int8 casts can wrap) come out
// byte-identical: the reference stores `q0 | q1 << 4` into a uint8_t.
ST_HD void pack_nibbles_split(const int* q, uint8_t* qs) {
  for (int j = 0; j < QK / 2; ++j) qs[j] = static_cast<uint8_t>((q[j] & 0xff) | ((q[j + QK / 2] & 0xff) << 4));
}

// The range: strict comparisons from the left, so the first of equal
// extremes wins (ggml's references; decides the sign of a zero minimum).
ST_HD void group_minmax(const float* x, int n, float* mn, float* mx) {
  float lo = x[0], hi = x[0];
  for (int j = 1; j < n; ++j) {
    lo = x[j] < lo ? x[j] : lo;
    hi = x[j] > hi ? x[j] : hi;
  }
  *mn = lo;
  *mx = hi;
}

// The signed extreme: the first element (left to right) whose |x| is largest
// keeps its sign; 0 when every element is zero.
ST_HD float signed_absmax(const float* x, int n) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < n; ++j) {
    const float a = fabs32(x[j]);
    if (amax < a) { amax = a; max = x[j]; }
  }
  return max;
}

ST_HD void q4_0_block(const float* x, uint8_t* y) {
  const float max = signed_absmax(x, QK);
  const float d = max / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_u16(y, f32_to_f16(d));
  int q[QK];
  for (int j = 0; j < QK; ++j) q[j] = imin(15, cvtt_i8(x[j] * id + 8.5f));
  pack_nibbles_split(q, y + 2);
}

ST_HD void q4_1_block(const float* x, uint8_t* y) {
  float min, max;
  group_minmax(x, QK, &min, &max);
  const float d = (max - min) / 15.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_u16(y, f32_to_f16(d));
  store_u16(y + 2, f32_to_f16(min));
  int q[QK];
  for (int j = 0; j < QK; ++j) q[j] = imin(15, cvtt_i8((x[j] - min) * id + 0.5f));
  pack_nibbles_split(q, y + 4);
}

ST_HD void q8_0_block(const float* x, uint8_t* y) {
  float amax = 0.0f;
  for (int j = 0; j < QK; ++j) {
    const float a = fabs32(x[j]);
    amax = amax > a ? amax : a;  // MAX(amax, fabsf(v)): never picks a -0
  }
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_u16(y, f32_to_f16(d));
  for (int j = 0; j < QK; ++j) y[2 + j] = static_cast<uint8_t>(cvtt_i8(round_away(x[j] * id)));
}

// Q5_0 / Q5_1: the low nibbles as Q4's, the fifth bits in a little-endian
// u32 after the scale(s): bit j for element j.
ST_HD void pack_q5(const int* q, uint8_t* qh, uint8_t* qs) {
  uint32_t h = 0;
  for (int j = 0; j < QK / 2; ++j) {
    const int a = q[j] & 0xff, b = q[j + QK / 2] & 0xff;
    qs[j] = static_cast<uint8_t>((a & 0x0f) | ((b & 0x0f) << 4));
    h |= static_cast<uint32_t>((a & 0x10) >> 4) << j;
    h |= static_cast<uint32_t>((b & 0x10) >> 4) << (j + QK / 2);
  }
  for (int k = 0; k < 4; ++k) qh[k] = static_cast<uint8_t>(h >> (8 * k));
}

ST_HD int q5_code(const uint8_t* qh, const uint8_t* qs, int j) {
  const uint32_t h = qh[0] | (qh[1] << 8) | (qh[2] << 16) | (static_cast<uint32_t>(qh[3]) << 24);
  const int lo = j < QK / 2 ? (qs[j] & 0x0f) : (qs[j - QK / 2] >> 4);
  return lo | static_cast<int>(((h >> j) & 1u) << 4);
}

// Layouts: Q5_0: f16 d, u8 qh[4], u8 qs[16]; Q5_1: f16 d, f16 m, u8 qh[4], u8 qs[16].
ST_HD void q5_0_block(const float* x, uint8_t* y) {
  const float max = signed_absmax(x, QK);
  const float d = max / -16.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_u16(y, f32_to_f16(d));
  int q[QK];
  for (int j = 0; j < QK; ++j) q[j] = imin(31, cvtt_i8(x[j] * id + 16.5f));
  pack_q5(q, y + 2, y + 6);
}

ST_HD void q5_1_block(const float* x, uint8_t* y) {
  float min, max;
  group_minmax(x, QK, &min, &max);
  const float d = (max - min) / 31.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_u16(y, f32_to_f16(d));
  store_u16(y + 2, f32_to_f16(min));
  int q[QK];
  // The reference converts straight to uint8_t: no clamp, the low byte of the truncation.
  for (int j = 0; j < QK; ++j) q[j] = cvtt_i32((x[j] - min) * id + 0.5f) & 0xff;
  pack_q5(q, y + 4, y + 8);
}

ST_HD void q5_0_unblock(const uint8_t* y, float* x) {
  const float d = f16_to_f32(load_u16(y));
  for (int j = 0; j < QK; ++j) x[j] = static_cast<float>(q5_code(y + 2, y + 6, j) - 16) * d;
}

ST_HD void q5_1_unblock(const uint8_t* y, float* x) {
  const float d = f16_to_f32(load_u16(y)), m = f16_to_f32(load_u16(y + 2));
  for (int j = 0; j < QK; ++j) x[j] = static_cast<float>(q5_code(y + 4, y + 8, j)) * d + m;
}

ST_HD void q4_0_unblock(const uint8_t* y, float* x) {
  const float d = f16_to_f32(load_u16(y));
  for (int j = 0; j < QK / 2; ++j) {
    x[j] = static_cast<float>((y[2 + j] & 0x0f) - 8) * d;
    x[j + QK / 2] = static_cast<float>((y[2 + j] >> 4) - 8) * d;
  }
}

ST_HD void q4_1_unblock(const uint8_t* y, float* x) {
  const float d = f16_to_f32(load_u16(y)), m = f16_to_f32(load_u16(y + 2));
  for (int j = 0; j < QK / 2; ++j) {
    x[j] = static_cast<float>(y[4 + j] & 0x0f) * d + m;
    x[j + QK / 2] = static_cast<float>(y[4 + j] >> 4) * d + m;
  }
}

ST_HD void q8_0_unblock(const uint8_t* y, float* x) {
  const float d = f16_to_f32(load_u16(y));
  for (int j = 0; j < QK; ++j) x[j] = static_cast<float>(static_cast<int8_t>(y[2 + j])) * d;
}

// ---------------------------------------------------------------------------
// compressed-tensors groups. Codes q in [qmin, qmax] = [-2^(b-1), 2^(b-1)-1];
// x ~ (q - z) * s. Stored biased (u = q + 2^(b-1)), packed along the row:
// INT4 element i at bits [4*(i%8), +4) of int32 word i/8, INT8 one byte each.

struct IntRange { int qmin, qmax; };
ST_HD IntRange int_range(int bits) { return {-(1 << (bits - 1)), (1 << (bits - 1)) - 1}; }

// A scale as the file stores it: rounded to the scale dtype, read back.
ST_HD float scale_as_stored(float s, DType t) {
  if (t == DType::F16) return f16_to_f32(f32_to_f16(s));
  if (t == DType::BF16) return bf16_to_f32(f32_to_bf16(s));
  return s;
}

ST_HD void store_scale(void* scales, int64_t i, float s, DType t) {
  if (t == DType::F16) static_cast<uint16_t*>(scales)[i] = f32_to_f16(s);
  else if (t == DType::BF16) static_cast<uint16_t*>(scales)[i] = f32_to_bf16(s);
  else static_cast<float*>(scales)[i] = s;
}

ST_HD float load_scale(const void* scales, int64_t i, DType t) {
  if (t == DType::F16) return f16_to_f32(static_cast<const uint16_t*>(scales)[i]);
  if (t == DType::BF16) return bf16_to_f32(static_cast<const uint16_t*>(scales)[i]);
  return static_cast<const float*>(scales)[i];
}

// The min/max observer of compressed-tensors: the range is widened to
// include 0; symmetric: s = max(|min|, |max|) / ((qmax - qmin) / 2);
// asymmetric: s = (max - min) / (qmax - qmin), z = clamp(round(qmin - min/s)).
// A scale below float32's epsilon is raised to it. Returns the stored scale.
struct GroupParams { float scale; int zero; };

ST_HD GroupParams int_params_minmax(float min, float max, int bits, bool symmetric, DType scale_dtype) {
  const IntRange r = int_range(bits);
  min = min < 0.0f ? min : 0.0f;
  max = max > 0.0f ? max : 0.0f;
  const float range = static_cast<float>(r.qmax - r.qmin);
  GroupParams p{0.0f, 0};
  if (symmetric) {
    const float amax = -min > max ? -min : max;
    float s = amax / (range / 2.0f);
    s = s > kScaleEps ? s : kScaleEps;
    p.scale = scale_as_stored(s, scale_dtype);
  } else {
    float s = (max - min) / range;
    s = s > kScaleEps ? s : kScaleEps;
    p.scale = scale_as_stored(s, scale_dtype);
    p.zero = static_cast<int>(fclamp(round_even(static_cast<float>(r.qmin) - min / p.scale),
                                     static_cast<float>(r.qmin), static_cast<float>(r.qmax)));
  }
  return p;
}

// q = clamp(round(x / s + z)): division, then the zero point, as the
// reference (x / scale; += zero_point; clamp; round half to even).
ST_HD int int_code(float x, GroupParams p, IntRange r) {
  const float v = x / p.scale + static_cast<float>(p.zero);
  return static_cast<int>(round_even(fclamp(v, static_cast<float>(r.qmin), static_cast<float>(r.qmax))));
}

// Writes the biased code of element `col` into a packed row.
ST_HD void put_code(uint8_t* row, int64_t col, int q, int bits) {
  const int u = q + (1 << (bits - 1));
  if (bits == 8) { row[col] = static_cast<uint8_t>(u); return; }
  uint8_t& b = row[col >> 1];
  if (col & 1) b = static_cast<uint8_t>((b & 0x0f) | (u << 4));
  else b = static_cast<uint8_t>((b & 0xf0) | u);
}

ST_HD int get_code(const uint8_t* row, int64_t col, int bits) {
  if (bits == 8) return static_cast<int>(row[col]) - 128;
  const int u = (col & 1) ? (row[col >> 1] >> 4) : (row[col >> 1] & 0x0f);
  return u - 8;
}


// ---------------------------------------------------------------------------
// Error statistics (quantization_error): x the original, y its
// reconstruction, in double. Each sum is kept in 8 lanes, element j of a row
// in lane j % 8, and folded lane l += l + 4, then l += l + 2, then 0 += 1:
// the order the AVX2 twin (two vectors of 4 doubles) and the AVX-512 one (a
// vector of 8) reproduce bit for bit.
// The largest |x - y| ignores NaN differences, as x86 MAXPD(d, m) does.
// The SIMD twins may fuse x*x, y*y and x*y with their additions: x and y are
// floats (24-bit significands, exponents within 2^-149..2^128), so each
// product has at most 48 significant bits and lies far inside double's
// normal range: it is exact, and fma(x, y, s) rounds once, exactly as
// s + x*y does here (compiled without contraction). With an infinite or
// NaN factor both give the same infinity, or both NaN. e*e is not exact
// (x - y can carry up to 53 bits), so se is always a rounded product, then a
// rounded add.

struct ErrorLanes {
  double se[8], sx[8], sy[8], dot[8];
  double max_abs;
};

ST_HD void error_lanes_zero(ErrorLanes* l) {
  for (int k = 0; k < 8; ++k) l->se[k] = l->sx[k] = l->sy[k] = l->dot[k] = 0.0;
  l->max_abs = 0.0;
}

ST_HD void error_lane_add(ErrorLanes* l, int k, float xf, float yf) {
  const double x = xf, y = yf, e = x - y;
  l->se[k] += e * e;
  l->sx[k] += x * x;
  l->sy[k] += y * y;
  l->dot[k] += x * y;
  const double a = e < 0.0 ? -e : e;
  l->max_abs = a > l->max_abs ? a : l->max_abs;
}

ST_HD double error_fold8(double* v) {
  for (int k = 0; k < 4; ++k) v[k] += v[k + 4];
  for (int k = 0; k < 2; ++k) v[k] += v[k + 2];
  return v[0] + v[1];
}

}  // namespace qm

// Host only (defined in quant.cc): the ERR_VALUE Status naming the first
// non-finite input element, at flat index `flat` of `src`. The CPU and CUDA
// paths both report through it, so the message is the same on either.
Status non_finite_error(const MatrixView& src, int64_t flat);

}  // namespace st
