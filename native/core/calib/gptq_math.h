// Per-group quantization of one value with parameters fixed beforehand: the
// coders GPTQ applies to weights that its updates have moved. Each uses the
// formula of the format's round-to-nearest quantizer (quant_math.h), with the
// codes clamped to the format's range (an updated weight can leave the
// range its group's parameters were taken from): on values inside the range
// the codes are quant_math.h's, so GPTQ with a diagonal H is quantize().
#pragma once
#include <cstdint>

#include "../quant/quant.h"
#include "../quant/quant_kmath.h"
#include "../quant/quant_math.h"

namespace st {
namespace gq {

// One group's parameters: `inv` and `m` as the coder uses them (unrounded,
// as ggml's reference), `d`/`mq` as dequantization reads them (stored f16).
// K-quants: one sub-block's stored scale `d` and offset `m` (x ~ d·q − m;
// m = 0 for the symmetric Q3_K and Q6_K), as quant_kmath.h's *_sub read them.
struct Coder {
  float inv = 0, d = 0, m = 0, mq = 0;
  int zero = 0;
};

// The parameters of a group of n values (32 for GGUF), and its stored form:
// the block header (GGUF, at `block`) or the scale and zero point (int).
ST_HD Coder make_coder(QFormat f, const float* x, int n, bool symmetric, DType scale_dtype, uint8_t* block,
                       void* scales, int8_t* zeros, int64_t gi) {
  Coder c;
  if (f == QFormat::Q4_0) {
    const float max = qm::signed_absmax(x, n);
    const float d = max / -8.0f;
    c.inv = d != 0.0f ? 1.0f / d : 0.0f;
    qm::store_u16(block, f32_to_f16(d));
    c.d = f16_to_f32(qm::load_u16(block));
  } else if (f == QFormat::Q4_1) {
    float min = 3.402823466e+38f, max = -3.402823466e+38f;
    for (int j = 0; j < n; ++j) {
      if (x[j] < min) min = x[j];
      if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / 15.0f;
    c.inv = d != 0.0f ? 1.0f / d : 0.0f;
    c.m = min;
    qm::store_u16(block, f32_to_f16(d));
    qm::store_u16(block + 2, f32_to_f16(min));
    c.d = f16_to_f32(qm::load_u16(block));
    c.mq = f16_to_f32(qm::load_u16(block + 2));
  } else if (f == QFormat::Q8_0) {
    float amax = 0.0f;
    for (int j = 0; j < n; ++j) {
      const float a = qm::fabs32(x[j]);
      amax = amax > a ? amax : a;
    }
    const float d = amax / 127.0f;
    c.inv = d != 0.0f ? 1.0f / d : 0.0f;
    qm::store_u16(block, f32_to_f16(d));
    c.d = f16_to_f32(qm::load_u16(block));
  } else {
    float mn, mx;
    qm::group_minmax(x, n, &mn, &mx);
    const qm::GroupParams p = qm::int_params_minmax(mn, mx, f == QFormat::Int4 ? 4 : 8, symmetric, scale_dtype);
    qm::store_scale(scales, gi, p.scale, scale_dtype);
    if (!symmetric) zeros[gi] = static_cast<int8_t>(p.zero);
    c.d = p.scale;
    c.zero = p.zero;
  }
  return c;
}

ST_HD bool is_k(QFormat f) {
  return f == QFormat::Q2_K || f == QFormat::Q3_K || f == QFormat::Q4_K || f == QFormat::Q5_K || f == QFormat::Q6_K;
}

// Values per coder: a K-quant's sub-block (16 or 32), a 32-value GGUF
// block, or the int formats' group.
ST_HD int64_t coder_group(QFormat f, int64_t group) {
  if (f == QFormat::Q4_K || f == QFormat::Q5_K) return 32;
  if (is_k(f)) return 16;
  return f == QFormat::Q4_0 || f == QFormat::Q4_1 || f == QFormat::Q8_0 ? qm::QK : group;
}

// A K-quant super-block's parameters, fixed before the sweep: ggml's
// quantizer of the 256 values x (the reference one, or with `importance`
// llama.cpp's importance-weighted one) writes the block header — and codes,
// which the caller overwrites — at y; the coders read each sub-block's
// stored scale and offset back from it. So the parameters are quantize()'s
// and only the codes are GPTQ's.
ST_HD void make_k_coders(QFormat f, const float* x, const float* importance, uint8_t* y, Coder* out) {
  if (importance) qk::ggml_block_weighted(f, x, importance, 0.0f, y);
  else qk::ggml_block(f, x, y);
  const int subs = qk::QK_K / static_cast<int>(coder_group(f, 0));
  for (int j = 0; j < subs; ++j) {
    Coder& c = out[j];
    switch (f) {
      case QFormat::Q2_K: qk::q2_k_sub(y, j, &c.d, &c.m); break;
      case QFormat::Q3_K: c.d = qk::q3_k_sub(y, j); break;
      case QFormat::Q6_K: c.d = qk::q6_k_sub(y, j); break;
      default: qk::q45_k_sub(y, j, &c.d, &c.m); break;
    }
  }
}

// The K-quant's largest stored code (codes are 0..nmax; the symmetric
// formats store l + bias).
ST_HD int k_nmax(QFormat f) {
  switch (f) {
    case QFormat::Q2_K: return 3;
    case QFormat::Q3_K: return 7;
    case QFormat::Q4_K: return 15;
    case QFormat::Q5_K: return 31;
    default: return 63;
  }
}

// Packs a super-block's 256 stored codes into its layout at y (the header
// already written), with quant_kmath.h's packers.
ST_HD void pack_k_codes(QFormat f, const int8_t* codes, uint8_t* y) {
  if (f == QFormat::Q3_K) {
    qk::q3_k_pack(codes, y);
  } else if (f == QFormat::Q6_K) {
    qk::q6_k_pack(codes, y);
  } else {
    uint8_t L[qk::QK_K];
    for (int i = 0; i < qk::QK_K; ++i) L[i] = static_cast<uint8_t>(codes[i]);
    if (f == QFormat::Q2_K) qk::pack_2bit(L, y + 16);
    else qk::q45_k_pack(L, k_nmax(f), y);
  }
}

// Truncation of v to [0, 15]: ggml's min(15, (int8_t)v) on v >= 0, 0 below.
ST_HD int trunc_nibble(float v) { return v >= 15.0f ? 15 : v > 0.0f ? static_cast<int>(v) : 0; }

// The value dequantize() reads back for code q.
ST_HD float dequant(QFormat f, const Coder& c, int q) {
  switch (f) {
    case QFormat::Q4_0: return static_cast<float>(q - 8) * c.d;
    case QFormat::Q4_1: return static_cast<float>(q) * c.d + c.mq;
    case QFormat::Q8_0: return static_cast<float>(q) * c.d;
    // As the K-quants' to_float: (d·sc)·q − dmin·m, the symmetric ones (d·sc)·(L − bias).
    case QFormat::Q2_K: case QFormat::Q4_K: case QFormat::Q5_K: return c.d * static_cast<float>(q) - c.m;
    case QFormat::Q3_K: return c.d * static_cast<float>(q - 4);
    case QFormat::Q6_K: return c.d * static_cast<float>(q - 32);
    default: return static_cast<float>(q - c.zero) * c.d;
  }
}

// The code of x: GGUF the stored code (0..15, or -128..127 for q8_0), int
// formats q in [qmin, qmax].
ST_HD int code(QFormat f, const Coder& c, float x) {
  switch (f) {
    case QFormat::Q4_0: return trunc_nibble(x * c.inv + 8.5f);
    case QFormat::Q4_1: return trunc_nibble((x - c.m) * c.inv + 0.5f);
    case QFormat::Q8_0: return static_cast<int>(qm::fclamp(round_away(x * c.inv), -128.0f, 127.0f));
    // The K-quants' requantization with the stored scales (quant_kmath.h);
    // a sub-block whose scale is 0 dequantizes every code to −m (or 0):
    // code 0, what an all-zero block stores.
    case QFormat::Q2_K: case QFormat::Q4_K: case QFormat::Q5_K: {
      if (c.d == 0.0f) return 0;
      uint8_t l;
      qk::requantize_affine(&x, 1, c.d, c.m, k_nmax(f), &l);
      return l;
    }
    case QFormat::Q3_K: case QFormat::Q6_K: {
      if (c.d == 0.0f) return 0;
      int8_t l;
      const int bias = f == QFormat::Q3_K ? 4 : 32;
      qk::requantize_sym(&x, 1, c.d, -bias, bias - 1, &l);
      return l;
    }
    default: return qm::int_code(x, qm::GroupParams{c.d, c.zero}, qm::int_range(f == QFormat::Int4 ? 4 : 8));
  }
}

}  // namespace gq
}  // namespace st
