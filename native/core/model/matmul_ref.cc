// The scalar reference matmul of every quantized weight format: the
// specification the SIMD kernels are tested against (f32/f16/bf16 weights
// go through the lowrank room's GEMM, whose reference is its own). f32
// activations: each output is one fma chain over the row's values
// (dequantized by the model_math.h formulas) in column order. 8-bit activations: per block of 32
// the exact integer sum, then acc += (scale_w · d_x) · isum (+ the format's
// offset term) in block order.
#include <cmath>

#include "model_kernels.h"
#include "model_math.h"

namespace st {
namespace model {
namespace ref {

namespace {

const uint8_t* row_of(const Weight& w, int64_t r) { return w.data + r * w.row_bytes; }

void store(const MatmulArgs& a, int64_t t, int64_t r, float v) {
  float* y = a.y + t * a.ldy + r;
  *y = a.accumulate ? *y + v : v;
}

// ---- f32 activations

template <void (*Values)(const uint8_t*, float*), int BlockBytes>
void f32_blocks(const MatmulArgs& a, int64_t r0, int64_t r1) {
  const Weight& w = *a.w;
  const int64_t nb = w.cols / mm::QK;
  float v[mm::QK];
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = row_of(w, r);
    for (int64_t t = 0; t < a.n; ++t) {
      const float* x = a.x + t * a.ldx;
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        Values(row + b * BlockBytes, v);
        for (int j = 0; j < mm::QK; ++j) acc = std::fma(v[j], x[b * mm::QK + j], acc);
      }
      store(a, t, r, acc);
    }
  }
}

template <int Bits>
void f32_ct(const MatmulArgs& a, int64_t r0, int64_t r1) {
  const Weight& w = *a.w;
  const int64_t ng = w.cols / w.group;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = row_of(w, r);
    for (int64_t t = 0; t < a.n; ++t) {
      const float* x = a.x + t * a.ldx;
      float acc = 0.0f;
      for (int64_t g = 0; g < ng; ++g) {
        const float s = mm::load_scale(w.scales, r * ng + g, w.scale_dtype);
        const int z = w.zeros ? w.zeros[r * ng + g] : 0;
        for (int64_t k = g * w.group; k < (g + 1) * w.group; ++k) {
          acc = std::fma(static_cast<float>(mm::ct_code(row, k, Bits) - z) * s, x[k], acc);
        }
      }
      store(a, t, r, acc);
    }
  }
}

// ---- 8-bit activations

template <int32_t (*Isum)(const uint8_t*, const int8_t*), int BlockBytes, bool Offset>
void q8_blocks(const MatmulArgs& a, int64_t r0, int64_t r1) {
  const Weight& w = *a.w;
  const int64_t nb = w.cols / mm::QK;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = row_of(w, r);
    for (int64_t t = 0; t < a.n; ++t) {
      const int8_t* xq = a.xq.q + t * a.xq.ld;
      const float* xd = a.xq.d + t * (a.xq.ld / mm::QK);
      const float* xs = a.xq.s + t * (a.xq.ld / mm::QK);
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = row + b * BlockBytes;
        const float dw = f16_to_f32(mm::load_u16(blk));
        acc += (dw * xd[b]) * static_cast<float>(Isum(blk, xq + b * mm::QK));
        if (Offset) acc += f16_to_f32(mm::load_u16(blk + 2)) * xs[b];
      }
      store(a, t, r, acc);
    }
  }
}

template <int Bits>
void q8_ct(const MatmulArgs& a, int64_t r0, int64_t r1) {
  const Weight& w = *a.w;
  const int64_t ng = w.cols / w.group, per = w.group / mm::QK;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = row_of(w, r);
    for (int64_t t = 0; t < a.n; ++t) {
      const int8_t* xq = a.xq.q + t * a.xq.ld;
      const float* xd = a.xq.d + t * (a.xq.ld / mm::QK);
      float acc = 0.0f;
      for (int64_t g = 0; g < ng; ++g) {
        const float s = mm::load_scale(w.scales, r * ng + g, w.scale_dtype);
        const int z = w.zeros ? w.zeros[r * ng + g] : 0;
        for (int64_t i = 0; i < per; ++i) {
          const int64_t b = g * per + i;
          acc += (s * xd[b]) * static_cast<float>(mm::isum_ct(row, b * mm::QK, Bits, z, xq + b * mm::QK));
        }
      }
      store(a, t, r, acc);
    }
  }
}

// The specification: scores one fma chain each, softmax against the
// maximum, the output one fma chain per dimension in position order.
void attend(const float* q, const float* k, const float* v, int64_t len, int64_t hd, float scale, float* sc, float* out) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < len; ++j) {
    float s = 0.0f;
    for (int64_t i = 0; i < hd; ++i) s = std::fma(q[i], k[j * hd + i], s);
    sc[j] = s * scale;
    mx = sc[j] > mx ? sc[j] : mx;
  }
  float sum = 0.0f;
  for (int64_t j = 0; j < len; ++j) {
    sc[j] = std::exp(sc[j] - mx);
    sum += sc[j];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < hd; ++i) out[i] = 0.0f;
  for (int64_t j = 0; j < len; ++j) {
    const float p = sc[j] * inv;
    for (int64_t i = 0; i < hd; ++i) out[i] = std::fma(p, v[j * hd + i], out[i]);
  }
}

void swiglu(const float* g, const float* u, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = mm::swiglu(g[i], u[i]);
}

KernelSet make() {
  KernelSet k{"reference", 1, {}, {}, attend, swiglu};
  k.f32[static_cast<int>(WFormat::Q4_0)] = f32_blocks<mm::values_q4_0, 18>;
  k.f32[static_cast<int>(WFormat::Q4_1)] = f32_blocks<mm::values_q4_1, 20>;
  k.f32[static_cast<int>(WFormat::Q8_0)] = f32_blocks<mm::values_q8_0, 34>;
  k.f32[static_cast<int>(WFormat::Int4)] = f32_ct<4>;
  k.f32[static_cast<int>(WFormat::Int8)] = f32_ct<8>;
  k.q8[static_cast<int>(WFormat::Q4_0)] = q8_blocks<mm::isum_q4_0, 18, false>;
  k.q8[static_cast<int>(WFormat::Q4_1)] = q8_blocks<mm::isum_q4_1, 20, true>;
  k.q8[static_cast<int>(WFormat::Q8_0)] = q8_blocks<mm::isum_q8_0, 34, false>;
  k.q8[static_cast<int>(WFormat::Int4)] = q8_ct<4>;
  k.q8[static_cast<int>(WFormat::Int8)] = q8_ct<8>;
  return k;
}

}  // namespace

const KernelSet& kernels() {
  static const KernelSet k = make();
  return k;
}

}  // namespace ref
}  // namespace model
}  // namespace st
