// Validation, kernel choice and threading for the cast room. The math is in
// cast_math.h; the loops in cast_ref.cc (reference) and cast_avx2.cc.
#include <algorithm>
#include <cstring>
#include <string>

#include "../cpu.h"
#include "cast_kernels.h"

namespace st {

Status cast(const CastArgs& a) {
  if (!is_float_dtype(a.from) || !is_float_dtype(a.to)) return Status::Error(Code::DType, "cast converts f32, f16 and bf16 only");
  if (a.n < 0) return Status::Error(Code::Shape, "negative element count");
  if (a.n == 0) return Status::Ok();
  if (a.src == nullptr || a.dst == nullptr) return Status::Error(Code::Value, "null buffer");
  const size_t in_bytes = static_cast<size_t>(a.n) * dtype_size(a.from);
  const size_t out_bytes = static_cast<size_t>(a.n) * dtype_size(a.to);
  const uint8_t* s = static_cast<const uint8_t*>(a.src);
  uint8_t* d = static_cast<uint8_t*>(a.dst);
  const bool overlap = s < d + out_bytes && d < s + in_bytes;
  if (overlap && !(s == d && in_bytes == out_bytes)) return Status::Error(Code::Value, "the output overlaps the input (only an in-place cast between types of one size is allowed)");
  if (a.from == a.to) {
    if (s != d) parallel_copy(d, s, in_bytes, a.threads);
    return Status::Ok();
  }
  CastFn fn = nullptr;
  switch (a.kernel) {
    case Kernel::Reference:
      fn = ref::cast_fn(a.from, a.to);
      break;
    case Kernel::Avx2:
      if (!cpu_enabled().avx2) return Status::Error(Code::Unsupported, "the AVX2 kernel of cast is not available on this CPU or build");
      fn = avx2::cast_fn(a.from, a.to);
      break;
    case Kernel::Auto:
      fn = cpu_enabled().avx2 ? avx2::cast_fn(a.from, a.to) : nullptr;
      if (fn == nullptr) fn = ref::cast_fn(a.from, a.to);
      break;
    case Kernel::Avx512:
      return Status::Error(Code::Unsupported, "cast has no AVX-512 kernel; use 'avx2' or 'auto'");
    case Kernel::Cuda:
      return Status::Error(Code::Unsupported, "cast has no CUDA kernel; use the CPU ('auto')");
  }
  if (fn == nullptr) return Status::Error(Code::Unsupported, "the requested cast kernel is not in this build");
  // Chunks of 64 Ki elements (a multiple of every kernel's step): large
  // enough to amortise a thread hand-off, small enough to spread a tensor.
  constexpr int64_t kGrain = int64_t{1} << 16;
  parallel_for((a.n + kGrain - 1) / kGrain, 1, [&](int64_t c0, int64_t c1) { fn(a.src, a.dst, c0 * kGrain, std::min(a.n, c1 * kGrain)); }, a.threads);
  return Status::Ok();
}

}  // namespace st
