// The row-kernel interface between the sparse room's driver (sparse.cc:
// validation, kernel choice, threading) and its implementations: the scalar
// reference (sparse_ref.cc), AVX2 (sparse_avx2.cc) and AVX-512
// (sparse_avx512.cc). Plain functions on raw pointers: the SIMD files share
// no templates or inline functions with baseline code (the ST_HD math is
// static, so each file has its own copy).
#pragma once
#include <cstdint>

#include "sparse.h"
#include "sparse_math.h"

namespace st {

// Lookup tables for the SIMD kernels, indexed by one mask byte (8 columns).
// Data only, defined in sparse_ref.cc and built at compile time.
struct SparseLuts {
  alignas(32) int32_t mask32[256][8];   // lane l: -1 where bit l is set, else 0
  alignas(32) int32_t perm32[256][8];   // the set lanes in order, then 0 (vpermps indices)
  alignas(16) int16_t mask16[256][8];   // as mask32 for 16-bit lanes
  alignas(16) uint8_t shuf16[256][16];  // pshufb bytes gathering the set 16-bit lanes in order, then 0x80
  uint8_t code8[256];                   // the 2:4 nibbles of the byte's two groups (0 for a group without exactly 2 bits)
};
extern const SparseLuts kSparseLuts;

// Selects and writes one row (every span of it). Returns -1 or the column
// select_span reports for the row's first bad span.
using SelectRowFn = int64_t (*)(const SelectArgs& a, const sm::SelectCtx& c, int64_t row);

// What spmm24 kernels read: X as f32 grouped by 4 columns of A, [cols/4][n][4]
// (X(c, j) at xg[((c/4)·n + j)·4 + c%4]), rearranged once by the driver so
// the SIMD loops read a group's X for consecutive j from consecutive bytes.
struct Spmm24Plan {
  int64_t rows = 0, cols = 0, n = 0;
  DType dtype = DType::F32;
  const void* values = nullptr;
  const uint8_t* meta = nullptr;
  int64_t meta_row_bytes = 0;
  const float* xg = nullptr;   // [cols/4][n][4]
  float* y = nullptr;          // [rows, n]
  bool accumulate = false;
};
// Rows [i0, i1) of Y.
using Spmm24Fn = void (*)(const Spmm24Plan& p, int64_t i0, int64_t i1);

namespace ref {
int64_t select_row(const SelectArgs& a, const sm::SelectCtx& c, int64_t row);
void spmm24_rows(const Spmm24Plan& p, int64_t i0, int64_t i1);
// Returns -1 or the first column of the row's first bad group.
int64_t select_quant_row(const QuantSelectArgs& a, int64_t row);
// Returns -1 or the first column of the row's first group with an invalid code / mask.
int64_t expand_row(const ExpandArgs& a, int64_t row);
}  // namespace ref

namespace avx2 {
// Null when the file was built without AVX2, or for a case it does not
// cover (the driver then runs the reference): M = 4 with a computed score.
SelectRowFn select_row_fn(const SelectArgs& a);
Spmm24Fn spmm24_fn();
}  // namespace avx2

namespace avx512 {
// Null when the file was built without AVX-512.
Spmm24Fn spmm24_fn();
}  // namespace avx512

}  // namespace st
