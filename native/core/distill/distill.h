// Fused knowledge-distillation loss: the public entry point of the distill
// room. Forward and backward in one pass over each row of logits; the
// conventions and formulas are those of FORMATS.md "Distillation loss":
//
//   L_row = α·T²·D(p, q) + (1 − α)·CE(y, s)
//   q = softmax(z/T), p = softmax(t/T), s = softmax(z)
//
// with z the student's logits, t the teacher's, y the label, T the
// temperature. Reduction "mean" divides by the rows that are not ignored.
#pragma once
#include <cstdint>

#include "../tensor.h"

namespace st {

// Values match lib/distill.ts DIVERGENCE_CODES / REDUCTION_CODES.
enum class Divergence : int32_t { ForwardKL = 0, ReverseKL = 1, JSD = 2 };
enum class Reduction : int32_t { Mean = 0, Sum = 1, None = 2 };

struct DistillArgs {
  MatrixView student;               // [rows, cols] logits, f32/f16/bf16
  MatrixView teacher;               // dense teacher [rows, cols] (any float dtype), or data == null with top-k
  const int32_t* topk_indices = nullptr;  // top-k teacher: [rows, k] vocabulary indices (distinct per row)
  const float* topk_logprobs = nullptr;   // [rows, k] log-probabilities at T = 1 (finite or -inf)
  int64_t k = 0;
  const int32_t* labels = nullptr;  // [rows], or null (then alpha must be 1 and every row counts)
  int64_t ignore_index = -100;      // rows whose label equals it contribute nothing
  float temperature = 1.0f;         // T > 0
  float alpha = 0.5f;               // weight of the distillation term, in [0, 1]
  float beta = 0.5f;                // jsd mixture weight, in (0, 1)
  Divergence divergence = Divergence::ForwardKL;
  Reduction reduction = Reduction::Mean;
  Kernel kernel = Kernel::Auto;
  int threads = 0;                  // 0: the pool's count

  // Outputs, allocated by the caller.
  void* grad = nullptr;             // [rows, cols] of student.dtype: dL/dz; null = loss only.
                                    // May be student.data itself (in place); no other overlap.
  float* row_loss = nullptr;        // [rows] each row's unreduced loss (0 for ignored rows), or null
};

struct DistillResult {
  double loss = 0;        // mean over kept rows ("mean"), else their sum
  int64_t kept_rows = 0;  // rows not ignored
};

// Validates arguments (shapes, options, labels, top-k indices) and computes
// the loss and, when a.grad is set, its gradient. Non-finite inputs (a NaN
// or ±Infinity student logit, a NaN or +Infinity teacher logit, a teacher
// row with no finite logit) are ERR_VALUE naming the first such element; rows
// processed before it was found may already hold their gradients.
Status distill_loss(const DistillArgs& a, DistillResult* out);

}  // namespace st
