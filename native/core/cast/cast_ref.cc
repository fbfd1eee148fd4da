// The cast room's scalar reference: one element at a time through
// cast_math.h.
#include <cstring>

#include "cast_kernels.h"
#include "cast_math.h"

namespace st {
namespace ref {

namespace {

uint32_t load_f32_bits(const void* src, DType from, int64_t i) {
  if (from == DType::F32) {
    uint32_t x;
    std::memcpy(&x, static_cast<const uint8_t*>(src) + i * 4, 4);
    return x;
  }
  const uint16_t h = static_cast<const uint16_t*>(src)[i];
  return from == DType::F16 ? castm::f16_to_f32_bits(h) : castm::bf16_to_f32_bits(h);
}

void store(void* dst, DType to, int64_t i, uint32_t x) {
  if (to == DType::F32) {
    std::memcpy(static_cast<uint8_t*>(dst) + i * 4, &x, 4);
    return;
  }
  static_cast<uint16_t*>(dst)[i] = to == DType::F16 ? castm::f32_bits_to_f16(x) : castm::f32_bits_to_bf16(x);
}

template <DType From, DType To>
void cast_loop(const void* src, void* dst, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; i++) store(dst, To, i, load_f32_bits(src, From, i));
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
