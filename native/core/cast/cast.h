// Float format conversion (f32 / f16 / bf16 in any direction): the entry
// point of the cast room. Narrowing rounds to nearest, ties to even, exactly
// as F16C's vcvtps2ph does (overflow to infinity, NaN kept as a quiet NaN
// with its sign and top payload bits); widening is exact.
#pragma once
#include <cstdint>

#include "../tensor.h"

namespace st {

struct CastArgs {
  const void* src = nullptr;
  DType from = DType::F32;
  void* dst = nullptr;
  DType to = DType::F32;
  int64_t n = 0;                 // elements
  Kernel kernel = Kernel::Auto;  // Auto, Reference or Avx2
  int threads = 0;               // 0: the pool's count
};

// Converts n elements of `from` at src into `to` at dst. src and dst either
// do not overlap or are the same memory with types of one size (in place).
Status cast(const CastArgs& a);

}  // namespace st
