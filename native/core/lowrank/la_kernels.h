// f64 level-1/2 kernels of the lowrank room's linear algebra (QR, Cholesky,
// bidiagonalization, rotations). One source (la_kernels_impl.h) compiled
// twice: la_ref.cc with the baseline flags and la_avx2.cc with
// -mavx2 -mfma, where the compiler vectorizes the loops. Every operation is
// defined element by element (fused multiply-adds in a fixed order;
// reductions over 16 fixed lanes, element i in lane i % 16, folded by a
// fixed tree), so both builds give the same bits.
#pragma once
#include <cstdint>

namespace st {
namespace la {

struct Kernels {
  // Σ x[i]·y[i] in the 16-lane order.
  double (*dot)(int64_t n, const double* x, const double* y);
  // y[i] = fma(a, x[i], y[i])
  void (*axpy)(int64_t n, double a, const double* x, double* y);
  // w[j] = Σ_r v[r]·A[r][j] for j < cols (chain over r in order, from +0)
  void (*gemv_t)(int64_t rows, int64_t cols, const double* a, int64_t lda, const double* v, double* w);
  // A[r][j] = fma(u[r], w[j], A[r][j])
  void (*rank1)(int64_t rows, int64_t cols, double* a, int64_t lda, const double* u, const double* w);
  // Rotations k = 0..nrot-1 applied in order to rows k, k+1 of X (columns
  // [0, cols)): (x, y) <- (c[k]·x + s[k]·y, c[k]·y - s[k]·x), each as
  // fma(c, x, s·y) and fma(c, y, -(s·x)).
  void (*rot_chain)(int64_t nrot, const double* c, const double* s, double* x, int64_t ldx, int64_t cols);
  // One rotation of two vectors, the same formula.
  void (*rot)(int64_t n, double c, double s, double* x, double* y);
  // Σ (x[i] − y[i])² and Σ x[i]² of f32 vectors, in f64, 16-lane order
  // (y null: zeros).
  void (*sqdiff)(int64_t n, const float* x, const float* y, double* diff2, double* norm2);
};

// The AVX2 build when the CPU has it (and SLIMTENSOR_ISA allows), else the
// baseline one.
const Kernels& kernels();

namespace ref {
const Kernels& kernels();
}
namespace avx2 {
// Null when built without the flags.
const Kernels* kernels();
}

}  // namespace la
}  // namespace st
