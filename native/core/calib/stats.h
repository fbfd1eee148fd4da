// Activation statistics of a linear layer's inputs (calibration): per
// column Σx² (llama.cpp imatrix's in_sum2) and Σ|x| (AWQ, Wanda, ASVD) in
// f64, and the input Hessian H = Σ xᵀx (GPTQ, SVD-LLM whitening) in f32 on
// the lowrank room's GEMM.
//
// H is accumulated blocked: each call's rows give XᵀX (one fma chain over
// the call's rows, the GEMM's order; its upper triangle only, a block row
// of kHessianBlockRows rows at a time through the scratch, added to H, the
// lower triangle mirrored). The
// rounding therefore grows with rows per call plus the number of calls, not
// with the total row count (for 512-row batches: a few 2⁻²⁴ relative).
#pragma once
#include <cstdint>

#include "../tensor.h"

namespace st {

// Rows of H computed per GEMM: the scratch holds this many rows of width.
constexpr int64_t kHessianBlockRows = 256;

struct ActStatsArgs {
  const float* x = nullptr;      // [rows, width] row-major
  int64_t rows = 0, width = 0;
  double* sum_squares = nullptr; // [width], added to
  double* sum_abs = nullptr;     // [width], added to
  float* hessian = nullptr;      // [width, width], added to; nullptr: none
  float* scratch = nullptr;      // [min(kHessianBlockRows, width), width] work space (required with hessian)
  Kernel kernel = Kernel::Auto;  // the GEMM's kernel (CPU kernels only)
  int threads = 0;               // 0: the pool's count
};

// Adds the rows of x to the statistics. Column sums run row by row in
// order for each column (the same bits for any thread count).
Status accumulate_activation_stats(const ActStatsArgs& a);

}  // namespace st
