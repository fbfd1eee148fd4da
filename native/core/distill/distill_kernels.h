// The row-kernel interface shared by the reference, AVX2, AVX-512 and CUDA
// implementations; distill.cc validates, plans, dispatches and threads over
// rows. The scalar helpers declared here are defined in distill_ref.cc (a
// baseline translation unit) and called by the SIMD kernels too, so the few
// values they produce (top-k terms, the gradient at the label and at the
// top-k indices) are the same arithmetic on every CPU path.
#pragma once
#include <cstdint>

#include "distill.h"
#include "distill_math.h"

namespace st {

// What distill.cc derives once from the arguments.
struct DistillPlan {
  dm::Coeffs c;
  Divergence div = Divergence::ForwardKL;
  bool kd = true;     // α > 0: the distillation term is computed (the teacher is read)
  bool ce = true;     // α < 1: the cross-entropy term is computed
  bool t1 = true;     // T == 1: s = q, one softmax fewer
  bool topk = false;  // the teacher is top-k (indices, logprobs)
  bool grad = true;   // write the gradient
  double kd_weight = 0;  // α·T²
  double ce_weight = 0;  // 1 − α
  // The teacher term of the gradient: Given (with p = 0) without one or
  // for a top-k teacher (whose p is added at its indices), else the
  // divergence's.
  dm::TeacherTerm term = dm::TeacherTerm::Given;
};

// The plan distill_loss() runs with, for validated arguments with `kept`
// rows not ignored (distill.cc).
DistillPlan distill_plan(const DistillArgs& a, int64_t kept);

// Why a row failed; the first failing row is described by distill.cc,
// which scans it again (slowly, once).
enum class RowError : int32_t {
  Ok = 0,
  NonFinite = 1,  // a student logit that is not finite, or a teacher logit/logprob that is NaN or +Infinity
  NoTeacher = 2,  // every teacher logit (or top-k logprob) of the row is −Infinity
  Overflow = 3,   // the inputs are finite but the row's loss is not
};

struct RowOut {
  double loss = 0;  // the row's unreduced loss
  RowError error = RowError::Ok;
};

// Computes one row: its loss and, when p.grad, its gradient.
using DistillRowFn = RowOut (*)(const DistillArgs& a, const DistillPlan& p, int64_t row);

namespace ref {
RowOut distill_row(const DistillArgs& a, const DistillPlan& p, int64_t row);
}  // namespace ref

namespace avx2 {
// Null when the file was built without AVX2 support.
DistillRowFn distill_row_fn(const DistillArgs& a);
// The vectorised exp and log1p (for e in [0, 1]) the kernel uses, over
// arrays: for the accuracy tests. False when built without AVX2.
bool exp_array(const float* x, float* y, int64_t n);
bool log1p01_array(const float* x, float* y, int64_t n);
}  // namespace avx2

namespace avx512 {
// The same kernel on 16-logit zmm vectors (distill_avx512.cc), bit for bit
// the AVX2 one (loss, row losses, every gradient byte: distill_test.cc
// test_avx512_matches_avx2 and test_streamed_gradients, test/distill.test.ts);
// null when the file was built without AVX-512 support.
DistillRowFn distill_row_fn(const DistillArgs& a);
// Its exp and log1p, over arrays (false when built without AVX-512): the
// AVX2 functions' bits on every input (distill_test.cc test_avx512_exp_bits).
bool exp_array(const float* x, float* y, int64_t n);
bool log1p01_array(const float* x, float* y, int64_t n);
}  // namespace avx512

// ---- scalar helpers shared by the CPU kernels (distill_ref.cc) -------------

// A gradient value the kernels write after the dense sweep: at the label
// (the one-hot term) and at the top-k indices (the teacher's mass). They are
// computed before the sweep, so an in-place gradient can overwrite the
// student's row freely.
struct Special {
  int64_t col;
  float g;
};

// Per-thread scratch, grown on demand.
Special* special_scratch(int64_t n);
float* float_scratch(int64_t n);
// A second float scratch (the AVX2 kernel's row of exps).
float* sweep_scratch(int64_t n);

// Top-k teacher: p_i = softmax over the k of logprobs/T, written to p_out
// (k floats), and D = Σ p_i (log p_i − log q_idx_i). Sets *err (NonFinite
// for a NaN/+Infinity logprob, NoTeacher when all are −Infinity).
double topk_divergence(const DistillArgs& a, const DistillPlan& p, int64_t row, const dm::RowStats& rs,
                       float* p_out, RowError* err);

// The gradient values at the label and top-k indices; returns their count
// (at most k + 1). kl is KL(q‖p) (reverse-kl) or KL(q‖m) (jsd), else unused.
int64_t row_specials(const DistillArgs& a, const DistillPlan& p, int64_t row, const dm::RowStats& rs, float kl,
                     const float* topk_p, Special* out);

// Writes the specials into the gradient row.
void write_specials(const DistillArgs& a, int64_t row, const Special* s, int64_t n);

// Zeroes a gradient row (ignored rows).
void zero_grad_row(const DistillArgs& a, int64_t row);

}  // namespace st
