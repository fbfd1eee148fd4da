// The runtime's matmul driver (matmul.cc): the table of weight formats
// (byte sizes, which activations each can read) and the choice of kernel for
// one weight. forward.cc threads the chosen kernel over row ranges.
#pragma once
#include <cstdint>
#include <string>

#include "../quant/quant.h"
#include "model.h"

namespace st {
namespace model {

struct FormatInfo {
  const char* name;
  int k_multiple;   // a row's length must be a multiple of this
  int block_bytes;  // GGUF blocks of 32 read by the kernel tables: bytes per block (0 otherwise)
};
const FormatInfo& format_info(WFormat f);
bool valid_format(int32_t code);

// The quant room's format of a GGUF block or compressed-tensors weight
// (false for f32/f16/bf16 and 2:4).
bool quant_format_of(WFormat f, QFormat* out);

// Bytes of one stored row of a weight (Int4/Int8: whole int32 words;
// Sparse24: the kept half of the values).
int64_t stored_row_bytes(WFormat f, int64_t cols, DType values_dtype);

// Whether the weight's layout lets it read 8-bit activation blocks.
bool q8_layout_ok(const Weight& w);

// The kernel for one weight: the set `kernel` names (Auto: the widest the
// CPU has), falling back to narrower sets for formats a set lacks.
struct LinearPlan {
  MatmulFn fn = nullptr;
  bool q8 = false;         // reads 8-bit activation blocks
  int rows = 1;            // split row ranges at multiples of this
  const char* set = "";    // "reference", "avx2", "avx512"
  Kernel kernel = Kernel::Auto;  // passed to kernels that call another room
};
Status plan_linear(const Weight& w, Kernel kernel, ActMode act, LinearPlan* p);

// The attention and SwiGLU kernels of the widest set `kernel` allows.
struct PointwiseKernels {
  AttendFn attend;
  SwigluFn swiglu;
};
PointwiseKernels pointwise_kernels(Kernel kernel);

}  // namespace model
}  // namespace st
