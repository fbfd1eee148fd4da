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
  // H is symmetric: only its upper triangle is computed, a block row of
  // kBlock rows at a time (rows [i0, i1) × columns [i0, width)), about
  // half of the full product's arithmetic. Each element is still one fma
  // chain over the rows in order, and fma(x_i, x_j, ·) = fma(x_j, x_i, ·),
  // so the mirrored lower triangle has the bits the full GEMM would give.
  // Each block row goes through the scratch (kHessianBlockRows × width,
  // not width²) and is added to H's upper triangle at once.
  constexpr int64_t kBlock = kHessianBlockRows;
  for (int64_t i0 = 0; i0 < width; i0 += kBlock) {
    const int64_t i1 = i0 + kBlock < width ? i0 + kBlock : width;
    GemmArgs g;
    g.m = i1 - i0;
    g.n = width - i0;
    g.k = rows;
    g.a = GemmOperand{x + i0, DType::F32, width, true};
    g.b = GemmOperand{x + i0, DType::F32, width, false};
    g.c = a.scratch + i0;  // scratch row r holds H's row i0 + r, columns i0..width
    g.ldc = width;
    g.accumulate = false;
    g.kernel = a.kernel;
    g.threads = a.threads;
    Status st = gemm(g);
    if (!st.ok()) return st;
    // H += the block row's upper triangle.
    parallel_for(i1 - i0, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        const int64_t i = i0 + r;
        float* h = a.hessian + i * width;
        const float* s = a.scratch + r * width;
        for (int64_t j = i; j < width; j++) h[j] += s[j];
      }
    }, a.threads);
  }
  // Then the lower triangle, mirrored from the upper one.
  // The mirror goes tile by tile (64 × 64) so that the column reads stay in cache.
  constexpr int64_t kTile = 64;
  const int64_t tiles = (width + kTile - 1) / kTile;
  parallel_for(tiles, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t ti = t0; ti < t1; ti++) {
      const int64_t i0 = ti * kTile, i1 = i0 + kTile < width ? i0 + kTile : width;
      for (int64_t j0 = 0; j0 <= i0; j0 += kTile) {
        for (int64_t i = i0; i < i1; i++) {
          const int64_t j1 = j0 + kTile < i ? j0 + kTile : i;
          for (int64_t j = j0; j < j1; j++) a.hessian[i * width + j] = a.hessian[j * width + i];
        }
      }
    }
  }, a.threads);
  return Status::Ok();
}

}  // namespace st
