// Per-group quantization of one value with parameters fixed beforehand: the
// coders GPTQ applies to weights that its updates have moved. Each uses the
// formula of the format's round-to-nearest quantizer (quant_math.h), with the
// codes clamped to the format's range (an updated weight can leave the
// range its group's parameters were taken from): on values inside the range
// the codes are quant_math.h's, so GPTQ with a diagonal H is quantize().
#pragma once
#include <cstdint>

#include "../quant/quant.h"
#include "../quant/quant_math.h"

namespace st {
namespace gq {

// One group's parameters: `inv` and `m` as the coder uses them (unrounded,
// as ggml's reference), `d`/`mq` as dequantization reads them (stored f16).
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

// Truncation of v to [0, 15]: ggml's min(15, (int8_t)v) on v >= 0, 0 below.
ST_HD int trunc_nibble(float v) { return v >= 15.0f ? 15 : v > 0.0f ? static_cast<int>(v) : 0; }

// The value dequantize() reads back for code q.
ST_HD float dequant(QFormat f, const Coder& c, int q) {
  switch (f) {
    case QFormat::Q4_0: return static_cast<float>(q - 8) * c.d;
    case QFormat::Q4_1: return static_cast<float>(q) * c.d + c.mq;
    case QFormat::Q8_0: return static_cast<float>(q) * c.d;
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
    default: return qm::int_code(x, qm::GroupParams{c.d, c.zero}, qm::int_range(f == QFormat::Int4 ? 4 : 8));
  }
}

}  // namespace gq
}  // namespace st
