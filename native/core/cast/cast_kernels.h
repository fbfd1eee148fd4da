// The chunk-kernel interface between the cast room's driver (cast.cc:
// validation, kernel choice, threading) and its implementations: the scalar
// reference (cast_ref.cc) and AVX2 + F16C (cast_avx2.cc). Plain functions on
// raw pointers; the SIMD file shares no templates or inline functions with
// baseline code (numeric.h's helpers are static).
#pragma once
#include <cstdint>

#include "cast.h"

namespace st {

// Converts elements [begin, end) of src (type `from`) into dst (type `to`).
using CastFn = void (*)(const void* src, void* dst, int64_t begin, int64_t end);

namespace ref {
CastFn cast_fn(DType from, DType to);
}  // namespace ref

namespace avx2 {
// Null when the file was built without AVX2/F16C.
CastFn cast_fn(DType from, DType to);
}  // namespace avx2

}  // namespace st
