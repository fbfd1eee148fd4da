// Activation statistics: column sums in f64, H = Σ xᵀx through the GEMM.
#include "stats.h"

#include <cmath>
#include <string>

#include "../cpu.h"
#include "../lowrank/gemm.h"

namespace st {

Status accumulate_activation_stats(const ActStatsArgs& a) {
  if (a.rows < 0 || a.width < 0) return Status::Error(Code::Shape, "negative dimension");
  if (a.kernel == Kernel::Cuda) return Status::Error(Code::Unsupported, "activation statistics run on the CPU only");
  if (a.rows == 0 || a.width == 0) return Status::Ok();
  if (!a.x || !a.sum_squares || !a.sum_abs) return Status::Error(Code::Value, "missing buffer");
  if (a.hessian && !a.scratch) return Status::Error(Code::Value, "missing scratch buffer for the hessian");
  const int64_t rows = a.rows, width = a.width;
  const float* x = a.x;
  // Column blocks of 64: every column's sum runs over rows in order.
  parallel_for((width + 63) / 64, 1, [&](int64_t b0, int64_t b1) {
    const int64_t c0 = b0 * 64, c1 = b1 * 64 < width ? b1 * 64 : width;
    for (int64_t r = 0; r < rows; r++) {
      const float* row = x + r * width;
      for (int64_t c = c0; c < c1; c++) {
        const double v = row[c];
        a.sum_squares[c] += v * v;
        a.sum_abs[c] += std::fabs(v);
      }
    }
  }, a.threads);
  if (!a.hessian) return Status::Ok();
  GemmArgs g;
  g.m = width;
  g.n = width;
  g.k = rows;
  g.a = GemmOperand{x, DType::F32, width, true};
  g.b = GemmOperand{x, DType::F32, width, false};
  g.c = a.scratch;
  g.ldc = width;
  g.accumulate = false;
  g.kernel = a.kernel;
  g.threads = a.threads;
  Status st = gemm(g);
  if (!st.ok()) return st;
  parallel_for(width, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      float* h = a.hessian + i * width;
      const float* s = a.scratch + i * width;
      for (int64_t j = 0; j < width; j++) h[j] += s[j];
    }
  }, a.threads);
  return Status::Ok();
}

}  // namespace st
