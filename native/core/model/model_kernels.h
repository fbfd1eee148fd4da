// The matmul interface between the runtime's driver (matmul.cc: the table of
// weight formats, kernel choice; forward.cc: threading) and the kernels of
// each instruction set: the scalar reference (matmul_ref.cc), AVX2
// (matmul_avx2.cc) and AVX-512 (matmul_avx512.cc). Plain functions on raw
// pointers: the SIMD files share no templates or inline functions with
// baseline code.
#pragma once
#include <cstdint>

#include "../tensor.h"

namespace st {
namespace model {

// How a linear weight is stored. Values match lib/model/native.ts
// WEIGHT_FORMATS. A new format is a new value here, a row of the format
// table in matmul.cc and entries in the kernel tables below (or, like the
// K-quants, a route through the quant room's dequantization: matmul.cc).
enum class WFormat : int32_t {
  F32 = 0,
  F16 = 1,
  BF16 = 2,
  Q4_0 = 3,      // GGUF blocks of 32: f16 d, 16 bytes of nibbles
  Q4_1 = 4,      // f16 d, f16 m, 16 bytes of nibbles
  Q8_0 = 5,      // f16 d, 32 int8
  Int4 = 6,      // compressed-tensors pack-quantized: codes + scales per group (+ zero points)
  Int8 = 7,
  Sparse24 = 8,  // 2:4: kept values (f32/f16/bf16) + int16 meta words (the sparse room's layout)
  // GGUF formats multiplied through the quant room's row dequantization
  // (layouts: quant_kmath.h): no kernel-table entries.
  Q5_0 = 9,
  Q5_1 = 10,
  Q2_K = 11,  // super-blocks of 256 values
  Q3_K = 12,
  Q4_K = 13,
  Q5_K = 14,
  Q6_K = 15,
};
constexpr int kFormatCount = 16;

// A linear weight [rows = outputs, cols = inputs] in its stored form.
struct Weight {
  WFormat format = WFormat::F32;
  int64_t rows = 0, cols = 0;
  const uint8_t* data = nullptr;  // row r at data + r * row_bytes
  int64_t row_bytes = 0;
  // Int4 / Int8: groups of `group` columns, scales [rows, cols/group] of
  // scale_dtype, zeros [rows, cols/group] (null: symmetric).
  int64_t group = 0;
  const void* scales = nullptr;
  DType scale_dtype = DType::F16;
  const int8_t* zeros = nullptr;
  // Sparse24: values [rows, cols/2] of values_dtype at `data`, meta at `meta`.
  DType values_dtype = DType::F32;
  const uint8_t* meta = nullptr;
  int64_t meta_row_bytes = 0;
};

// Activations quantized to 8 bits in blocks of 32 (mm::quantize_act_block):
// token t's codes at q + t*ld, its block scales at d + t*ld/32 and
// s = d·Σcodes at s + t*ld/32.
struct ActQ8 {
  const int8_t* q = nullptr;
  const float* d = nullptr;
  const float* s = nullptr;
  int64_t ld = 0;
};

// Y(t, r) = Σ_k W(r, k) · X(t, k) for tokens t < n and rows r in [r0, r1),
// written to y[t*ldy + r] (added to it with accumulate). The f32 kernels read
// x (token t at x + t*ldx); the q8 kernels read xq.
struct MatmulArgs {
  const Weight* w = nullptr;
  int64_t n = 0;
  const float* x = nullptr;
  int64_t ldx = 0;
  ActQ8 xq;
  float* y = nullptr;
  int64_t ldy = 0;
  bool accumulate = false;
  Kernel kernel = Kernel::Auto;  // for kernels that call another room (spmm24)
};
using MatmulFn = void (*)(const MatmulArgs& a, int64_t r0, int64_t r1);

// Attention of one query head over `len` cached positions:
//   out = Σ_j softmax_j(scale · q·K_j) · V_j
// K and V rows of hd floats (row j at k + j*hd); scores: len floats of scratch.
using AttendFn = void (*)(const float* q, const float* k, const float* v, int64_t len, int64_t hd, float scale, float* scores, float* out);
// out[i] = silu(g[i]) · u[i] = g[i] / (1 + e^-g[i]) · u[i].
using SwigluFn = void (*)(const float* g, const float* u, int64_t n, float* out);

// One instruction set's kernels per format: f32[f] reads f32 activations,
// q8[f] 8-bit blocks; null where the set has none (the driver falls back to
// a narrower set, then to the reference). `rows` is the row granularity the
// set prefers (ranges are split at multiples of it).
struct KernelSet {
  const char* name;
  int rows;
  MatmulFn f32[kFormatCount];
  MatmulFn q8[kFormatCount];
  AttendFn attend;  // null: the reference's
  SwigluFn swiglu;
};

namespace ref {
const KernelSet& kernels();
}  // namespace ref
namespace avx2 {
// Null when the file was built without AVX2.
const KernelSet* kernels();
}  // namespace avx2
namespace avx512 {
// Null when the file was built without AVX-512 (F/BW/VL/VNNI).
const KernelSet* kernels();
}  // namespace avx512

}  // namespace model
}  // namespace st
