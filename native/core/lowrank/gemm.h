// Dense matrix multiply: the GEMM every room can use (low-rank factors,
// the dense baseline of 2:4 sparsity, distillation heads).
//
//   C = op(A) · op(B)      or, with accumulate, C += op(A) · op(B)
//
// op(X) is X or Xᵀ. A and B are f32, f16 or bf16 (converted to f32 while
// packing, never in a separate pass); C is f32. C is m×n, op(A) m×k,
// op(B) k×n, all row-major with leading dimensions (elements between rows).
//
// The arithmetic is fixed: each C element is one fused-multiply-add chain
// over k in order,
//
//   acc = accumulate ? C[i][j] : +0;  for p in 0..k-1: acc = fma(op(A)[i][p], op(B)[p][j], acc)
//
// so the scalar reference, the AVX2 and AVX-512 kernels, the skinny
// (matrix-vector) path, the CUDA kernel and every thread count give the same
// bits. Blocking over k restarts the chain from the stored C value, which is
// the same f32 number the register held.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../tensor.h"

namespace st {

// Which implementation runs. Auto: AVX-512 when the CPU has it (and
// SLIMTENSOR_ISA does not cap it), else AVX2+FMA, else the reference.
// The library-wide kernel choice (native/core/tensor.h).
using GemmKernel = Kernel;

struct GemmOperand {
  const void* data = nullptr;
  DType dtype = DType::F32;  // F32, F16 or BF16
  int64_t ld = 0;            // elements between consecutive stored rows
  bool trans = false;        // use the stored matrix transposed
};

struct GemmArgs {
  int64_t m = 0, n = 0, k = 0;
  GemmOperand a, b;          // op(A): m×k, op(B): k×n
  float* c = nullptr;        // m×n
  int64_t ldc = 0;
  bool accumulate = false;
  GemmKernel kernel = GemmKernel::Auto;
  int threads = 0;           // 0: the pool's count
};

// Validates (dtypes, leading dimensions, pointers) and multiplies.
Status gemm(const GemmArgs& g);

// The kernel Auto resolves to on this machine (never Auto or Cuda).
GemmKernel gemm_auto_kernel();

// "reference", "avx2", "avx512" or "cuda".
const char* gemm_kernel_name(GemmKernel k);

// Whether `k` can run here; *why says what is missing when not.
bool gemm_kernel_available(GemmKernel k, std::string* why);

// op(B) packed once for many blocks of C rows (for fused epilogues such as
// a residual norm): gemm_rows computes rows [i0, i1) of C on the calling
// thread, with the same bits as gemm(), writing row i at g.c + (i − i0)·ldc. `g` must stay the same between the
// two calls except for c/ldc/accumulate. CPU kernels only.
struct PackedB {
  std::vector<float> data;
  GemmKernel kernel = GemmKernel::Reference;
  int64_t strips = 0;
};
Status gemm_pack_b(const GemmArgs& g, PackedB* out);
Status gemm_rows(const GemmArgs& g, const PackedB& b, int64_t i0, int64_t i1);

}  // namespace st
