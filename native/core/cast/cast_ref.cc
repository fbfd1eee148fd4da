// The cast room's scalar reference: one element at a time through
// cast_math.h.
#include "cast_kernels.h"
#include "cast_math.h"

namespace st {
namespace ref {

namespace {

template <DType From, DType To>
void cast_loop(const void* src, void* dst, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; i++) castm::store_f32_bits(dst, To, i, castm::load_f32_bits(src, From, i));
}

}  // namespace

// Null for one type to itself (the driver copies the bytes).
CastFn cast_fn(DType from, DType to) {
#define ST_CAST_CASE(F, T) \
  if (from == DType::F && to == DType::T) return cast_loop<DType::F, DType::T>;
  ST_CAST_CASE(F32, F16) ST_CAST_CASE(F32, BF16)
  ST_CAST_CASE(F16, F32) ST_CAST_CASE(F16, BF16)
  ST_CAST_CASE(BF16, F32) ST_CAST_CASE(BF16, F16)
#undef ST_CAST_CASE
  return nullptr;
}

}  // namespace ref
}  // namespace st
