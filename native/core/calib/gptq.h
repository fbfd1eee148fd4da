// GPTQ (Frantar et al., 2022): quantization that compensates each column's
// rounding error on the columns not yet quantized, weighted by the layer's
// input Hessian H = Σ x·xᵀ over calibration tokens. The output is exactly
// what quantize() writes for the same format (native/core/quant/quant.h):
// GGUF blocks (q4_0, q4_1, q8_0 and the K-quants q2_k..q6_k), or compressed-tensors packed codes + scales (+ zero points),
// so every reader of a QuantizedTensor accepts it.
#pragma once
#include <cstdint>

#include "../quant/quant.h"
#include "../tensor.h"

namespace st {

struct GptqArgs {
  MatrixView weight;               // f32/f16/bf16 [rows, cols]
  const float* hessian = nullptr;  // f32 [cols, cols]; symmetrised as (H + Hᵀ)/2
  QFormat format = QFormat::Int4;
  int64_t group = 128;             // ggml formats: their block; int4/int8: group size (cols: per channel)
  bool symmetric = true;           // int4/int8 only
  DType scale_dtype = DType::F16;  // int4/int8 only
  // Process columns in descending diag(H) order. Groups stay the contiguous
  // column ranges of the original order, their parameters taken from the
  // weights before any update (compressed-tensors actorder "weight"): no
  // g_idx is needed to read the result.
  bool act_order = false;
  // K-quants (q2_k..q6_k): each super-block's scales and minimums come from
  // llama.cpp's importance-weighted search with diag(H) as the importance
  // (quantize() with that importance); false: ggml's reference search
  // (quantize() without). Ignored by the other formats.
  bool imatrix = true;
  double dampening = 0.01;         // added to diag(H): dampening · mean(diag(H))
  int64_t block = 128;             // columns per lazy batch (the trailing update is one GEMM)
  bool measure = true;             // compute tr(E·H·Eᵀ) for GPTQ and RTN (two extra GEMMs' worth)
  // false: no GPTQ sweep (no Cholesky, H need not be definite); the output
  // is round-to-nearest with the same group parameters (dead columns as 0)
  // and only its error is measured (one GEMM's worth) — what AWQ's scale
  // search evaluates for each candidate.
  bool sweep = true;
  Kernel kernel = Kernel::Auto;    // the GEMM's kernel (CPU kernels only)
  int threads = 0;

  // Outputs, sized as for quantize() (quant_sizes).
  uint8_t* data = nullptr;
  void* scales = nullptr;
  int8_t* zeros = nullptr;
};

struct GptqStats {
  // tr(E·H·Eᵀ) with E = W − dequantized, on the caller's H (undamped): the
  // layer-output squared error summed over the calibration tokens. -1 when
  // not measured. Without the sweep gptq_error is rtn_error.
  double gptq_error = -1, rtn_error = -1;
  // The same quantity for the damped H, as GPTQ accounts it (Σ of the
  // squared scaled errors): no extra work, exact up to rounding.
  double damped_error = 0;
  double damp = 0;            // the value added to diag(H)
  int64_t dead_columns = 0;   // diag(H) == 0: weights set to 0, as the reference
};

// Validates, quantizes. ERR_VALUE when W or H hold non-finite values, H has
// a negative diagonal entry, or H + damp·I is not numerically positive
// definite (the message names the column and suggests more dampening).
Status gptq(const GptqArgs& a, GptqStats* stats);

}  // namespace st
