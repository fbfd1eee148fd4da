// The GPTQ sweep's column-by-column work inside one lazy block, for a range
// of rows: each column rounded with its group's coder, its error moved onto
// the block's later columns (the rank-1 updates of the recurrence). One
// source (gptq_kernels_impl.h) compiled three times: gptq_ref.cc with the
// baseline flags, gptq_avx2.cc and gptq_avx512.cc with theirs, where the
// compiler vectorizes the updates over columns. Every update is the
// elementwise t[j] += e·v[j] (a product rounded, then a sum: no fused
// multiply-add, -ffp-contract=off) in column order, so all builds give the
// same bits as each other and as the loop gptq.cc had before (one row at a
// time): the rows are only interleaved, four at a time, for parallelism.
#pragma once
#include <cstdint>

#include "../quant/quant.h"
#include "../tensor.h"

namespace st {
namespace gq {
struct Coder;
}

namespace gk {

struct BlockArgs {
  QFormat format = QFormat::Int4;
  const void* weight = nullptr;   // [rows, n] of `dtype`
  DType dtype = DType::F32;
  int64_t n = 0;                  // columns (row stride of weight, t and codes)
  int64_t i1 = 0, i2 = 0;         // the block: processing positions [i1, i2)
  const int64_t* perm = nullptr;  // processing position → column
  const int64_t* group_of = nullptr;  // processing position → group, −1 dead
  int64_t group = 0, ngroups = 0;
  const gq::Coder* coders = nullptr;  // [rows, ngroups]
  const float* vblock = nullptr;  // V'[i1:i2, i1:i2], b×b row-major (upper triangle read)
  const double* vdiag = nullptr;  // [n], processing order
  float* t = nullptr;             // [rows, n]: the accumulated updates; columns [i1, i2) are overwritten
  float* err = nullptr;           // [rows, b]: w − deq of the block's columns
  int8_t* codes = nullptr;        // [rows, n], original column order
  double* row_err = nullptr;      // [rows]: += Σ ((w̃ − deq)·V_ii)² over the block
};

struct Kernels {
  // Rows [r0, r1) of one block.
  void (*block)(const BlockArgs& a, int64_t r0, int64_t r1);
};

// The widest build the CPU has (and SLIMTENSOR_ISA allows).
const Kernels& kernels();

namespace ref {
const Kernels& kernels();
}
namespace avx2 {
const Kernels* kernels();  // null when built without the flags
}
namespace avx512 {
const Kernels* kernels();  // null when built without the flags
}

}  // namespace gk
}  // namespace st
