// Per-block arithmetic of the runtime: the 8-bit activation blocks, the
// integer dot product of one weight block with one activation block for
// every stored format, weight values as floats, RMSNorm, RoPE angles and
// SiLU. These functions are the specification: the scalar reference
// (matmul_ref.cc, forward.cc) calls them, the CUDA kernels (model.cu) call
// them one block per thread, and the SIMD kernels compute the same integer
// sums (their float sums may differ in order: a stated tolerance).
#pragma once
#include <cmath>
#include <cstdint>

#include "../numeric.h"
#include "../tensor.h"

namespace st {
namespace mm {

constexpr int QK = 32;  // activation block (and GGUF block) length

ST_HD float fabs32(float x) { return bits_f32(f32_bits(x) & 0x7fffffffu); }
ST_HD uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

// ---- activations: blocks of 32 as int8 codes, a scale d and s = d * sum(codes)

// d = max|x| / 127, q = round_half_even(x / d) via x * (1/d), as ggml's
// quantize_row_q8_0/q8_1 (ggml rounds half away from zero in the scalar
// reference and half to even in its SIMD code; here every kernel rounds to
// even). A NaN input gives code 0 and the block's scale NaN.
ST_HD void quantize_act_block(const float* x, int8_t* q, float* d_out, float* s_out) {
  float amax = 0.0f;
  bool nan = false;
  for (int j = 0; j < QK; ++j) {
    const float a = fabs32(x[j]);
    nan = nan || a != a;
    amax = amax > a ? amax : a;
  }
  const float d = nan ? bits_f32(0x7fc00000u) : amax / 127.0f;
  const float id = amax != 0.0f && !nan ? 127.0f / amax : 0.0f;
  int sum = 0;
  for (int j = 0; j < QK; ++j) {
    float v = round_even(x[j] * id);
    v = v > -127.0f ? v : -127.0f;  // NaN -> -127, then masked below
    v = v < 127.0f ? v : 127.0f;
    const int c = nan ? 0 : static_cast<int>(v);
    q[j] = static_cast<int8_t>(c);
    sum += c;
  }
  *d_out = d;
  *s_out = d * static_cast<float>(sum);
}

// ---- GGUF blocks (ggml-common.h layouts). Nibbles: qs[j] low = element j,
// high = element j + 16. Values: q4_0 (q - 8)·d, q4_1 q·d + m, q8_0 q·d.

ST_HD int q4_nibble(const uint8_t* qs, int j) { return j < 16 ? (qs[j] & 0x0f) : (qs[j - 16] >> 4); }

// The integer part of block · activations: sum_j code_j · x_j, with the
// code as the format's signed value (q4_0: q - 8, q4_1: q, q8_0: q).
ST_HD int32_t isum_q4_0(const uint8_t* blk, const int8_t* x) {
  int32_t s = 0;
  for (int j = 0; j < QK; ++j) s += (q4_nibble(blk + 2, j) - 8) * x[j];
  return s;
}
ST_HD int32_t isum_q4_1(const uint8_t* blk, const int8_t* x) {
  int32_t s = 0;
  for (int j = 0; j < QK; ++j) s += q4_nibble(blk + 4, j) * x[j];
  return s;
}
ST_HD int32_t isum_q8_0(const uint8_t* blk, const int8_t* x) {
  int32_t s = 0;
  for (int j = 0; j < QK; ++j) s += static_cast<int8_t>(blk[2 + j]) * x[j];
  return s;
}

// The weight values of a block as floats (the quant room's unblock formulas).
ST_HD void values_q4_0(const uint8_t* blk, float* w) {
  const float d = f16_to_f32(load_u16(blk));
  for (int j = 0; j < QK; ++j) w[j] = static_cast<float>(q4_nibble(blk + 2, j) - 8) * d;
}
ST_HD void values_q4_1(const uint8_t* blk, float* w) {
  const float d = f16_to_f32(load_u16(blk)), m = f16_to_f32(load_u16(blk + 2));
  for (int j = 0; j < QK; ++j) w[j] = static_cast<float>(q4_nibble(blk + 4, j)) * d + m;
}
ST_HD void values_q8_0(const uint8_t* blk, float* w) {
  const float d = f16_to_f32(load_u16(blk));
  for (int j = 0; j < QK; ++j) w[j] = static_cast<float>(static_cast<int8_t>(blk[2 + j])) * d;
}

// ---- compressed-tensors groups: codes biased by 2^(bits-1), packed along the
// row (int4: element i in the low (even i) or high (odd i) nibble of byte
// i/2; int8: byte i). Value (q - z)·s with q the unbiased code.

ST_HD int ct_code(const uint8_t* row, int64_t i, int bits) {
  if (bits == 8) return static_cast<int>(row[i]) - 128;
  const int u = (i & 1) ? (row[i >> 1] >> 4) : (row[i >> 1] & 0x0f);
  return u - 8;
}

ST_HD float load_scale(const void* scales, int64_t i, DType t) {
  if (t == DType::F16) return f16_to_f32(static_cast<const uint16_t*>(scales)[i]);
  if (t == DType::BF16) return bf16_to_f32(static_cast<const uint16_t*>(scales)[i]);
  return static_cast<const float*>(scales)[i];
}

// sum_j (q_j - z) · x_j over the 32 elements of a row starting at `col`.
ST_HD int32_t isum_ct(const uint8_t* row, int64_t col, int bits, int z, const int8_t* x) {
  int32_t s = 0;
  for (int j = 0; j < QK; ++j) s += (ct_code(row, col + j, bits) - z) * x[j];
  return s;
}

// ---- plain floats

ST_HD float float_at(const void* p, int64_t i, DType t) {
  if (t == DType::F32) return static_cast<const float*>(p)[i];
  const uint16_t h = static_cast<const uint16_t*>(p)[i];
  return t == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

// ---- norms, activations, rotary angles

// 1 / sqrt(mean(x²) + eps), the sum of squares in double in index order (so
// every kernel computes the same scale).
ST_HD float rms_scale(const float* x, int64_t n, float eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  return static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + static_cast<double>(eps)));
}

// silu(g)·u = g / (1 + e^-g) · u
ST_HD float swiglu(float g, float u) { return g / (1.0f + std::exp(-g)) * u; }

}  // namespace mm
}  // namespace st
