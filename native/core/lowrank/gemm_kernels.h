// The interface between the GEMM driver (gemm.cc: blocking, threading,
// path choice) and the instruction-set files (gemm_avx2.cc, gemm_avx512.cc:
// packing, micro-kernels, the skinny path, the f64 Gram kernel) and the
// scalar reference (gemm_ref.cc). Plain functions on raw pointers only: the
// SIMD files may not share templates or inline functions with baseline code.
#pragma once
#include <cstdint>

#include "../tensor.h"

namespace st {
namespace gemmk {

// A source matrix: element (r, c) is data[r * ld + c] of `dtype`
// (F32, F16 or BF16), r < rows, c < cols.
struct Src {
  const void* data;
  DType dtype;
  int64_t ld;
  int64_t rows, cols;
};

// Packing into the micro-kernels' layout: `kc` steps of `w` floats, the
// first `wv` of each from the source, the rest zero.
//   pack_copy:      dst[p*w + t] = src(r0 + p, c0 + t)   (source contiguous along t)
//   pack_transpose: dst[p*w + t] = src(r0 + t, c0 + p)   (source contiguous along p)
using PackFn = void (*)(const Src& s, int64_t r0, int64_t c0, int64_t kc, int wv, int w, float* dst);

// One tile: C[0..mr)[0..nr) = (load_c ? C : +0) + Σ_p a[p*MR + i] · b[p*NR + j],
// one fma chain per element in p order; mr <= MR, nr <= NR (edges).
using MicroFn = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool load_c, int mr,
                         int nr);

// The skinny path: C (long × small) with small <= skinny_max columns.
//   C(i, j) = (load_c ? C(i, j) : +0) + Σ_p W(i, p) · X[p * small + j]
// W(i, p) is w[i * w_si + p * w_sk] with w_si == 1 or w_sk == 1; X is
// packed f32 (k × small, row-major); C(i, j) is c[i * c_si + j * c_sj].
struct Skinny {
  int64_t k = 0, small = 0;
  const void* w = nullptr;
  DType w_dtype = DType::F32;
  int64_t w_si = 0, w_sk = 0;
  const float* x = nullptr;
  float* c = nullptr;
  int64_t c_si = 0, c_sj = 0;
  bool load_c = false;
};
using SkinnyFn = void (*)(const Skinny& s, int64_t i0, int64_t i1);

// f64 Gram tile: for ii < mi, jj < nj (i = i0 + ii, j = j0 + jj):
//   g[ii*ldg + jj] = (acc ? g[ii*ldg + jj] : +0) + Σ_r y[r*ldy + i] · y[r*ldy + j]
// one fma chain over r in order; g points at the tile (mi <= gram_mr,
// nj <= gram_nr). With acc, a chain split over row chunks gives the same bits.
using GramFn = void (*)(const double* y, int64_t rows, int64_t ldy, int64_t i0, int mi, int64_t j0, int nj,
                        double* g, int64_t ldg, bool acc);

struct Isa {
  const char* name;
  int mr, nr;           // micro-kernel tile
  int skinny_max;       // the skinny path takes min(m, n) <= this
  int gram_mr, gram_nr; // Gram tile
  PackFn pack_copy, pack_transpose;
  MicroFn micro;
  SkinnyFn skinny;
  GramFn gram;
};

namespace avx2 {
// Null when this binary was built without the file's flags.
const Isa* isa();
// Measured peak probes for the benchmark: `iters` iterations of 12
// independent 8-lane FMAs; returns a value that depends on the result.
double fma_probe(int64_t iters);
}  // namespace avx2
namespace avx512 {
const Isa* isa();
double fma_probe(int64_t iters);
}  // namespace avx512

// The fastest enabled ISA table (AVX-512, AVX2), or null: the reference.
const Isa* best_isa();

namespace ref {
// Rows [i0, i1) of C by the definition (gemm.h), one element at a time.
void rows(int64_t n, int64_t k, const Src& a, bool ta, const Src& b, bool tb, float* c, int64_t ldc, bool accumulate,
          int64_t i0, int64_t i1);
void gram(const double* y, int64_t rows, int64_t ldy, int64_t i0, int mi, int64_t j0, int nj, double* g,
          int64_t ldg, bool acc);
// A dependent chain of `iters` × 10 register adds (1 cycle each): the
// clock probe (add reg, imm chains are folded by recent cores; reg, reg are not).
uint64_t add_chain(uint64_t iters);
}  // namespace ref

}  // namespace gemmk
}  // namespace st
