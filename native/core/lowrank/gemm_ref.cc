// The scalar reference of the lowrank room's kernels: the GEMM definition of
// gemm.h one element at a time, the f64 Gram tile, and the clock probe. The
// SIMD kernels must give the same bits (native and mocha tests compare).
#include <cmath>

#include "../numeric.h"
#include "gemm_kernels.h"

namespace st {
namespace gemmk {
namespace ref {

namespace {

float load(const Src& s, int64_t r, int64_t c) {
  const int64_t i = r * s.ld + c;
  switch (s.dtype) {
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(s.data)[i]);
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(s.data)[i]);
    default: return static_cast<const float*>(s.data)[i];
  }
}

}  // namespace

void rows(int64_t n, int64_t k, const Src& a, bool ta, const Src& b, bool tb, float* c, int64_t ldc, bool accumulate,
          int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      float acc = accumulate ? c[i * ldc + j] : 0.0f;
      for (int64_t p = 0; p < k; ++p) {
        const float x = ta ? load(a, p, i) : load(a, i, p);
        const float y = tb ? load(b, j, p) : load(b, p, j);
        acc = std::fma(x, y, acc);
      }
      c[i * ldc + j] = acc;
    }
  }
}

void gram(const double* y, int64_t rows, int64_t ldy, int64_t i0, int mi, int64_t j0, int nj, double* g,
          int64_t ldg, bool accumulate) {
  for (int ii = 0; ii < mi; ++ii) {
    for (int jj = 0; jj < nj; ++jj) {
      double acc = accumulate ? g[ii * ldg + jj] : 0.0;
      for (int64_t r = 0; r < rows; ++r) acc = std::fma(y[r * ldy + i0 + ii], y[r * ldy + j0 + jj], acc);
      g[ii * ldg + jj] = acc;
    }
  }
}

uint64_t add_chain(uint64_t iters) {
  uint64_t x = 0;
#if defined(__x86_64__) || defined(_M_X64)
  const uint64_t one = 1;
  for (uint64_t i = 0; i < iters; ++i) {
    __asm__ volatile(
        "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\t"
        "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0"
        : "+r"(x)
        : "r"(one));
  }
#else
  volatile uint64_t v = 0;
  for (uint64_t i = 0; i < iters * 10; ++i) v = v + 1;
  x = v;
#endif
  return x;
}

}  // namespace ref
}  // namespace gemmk
}  // namespace st
