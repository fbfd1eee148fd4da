// The cast room's AVX2 + F16C kernel: 8 (f32 output: 8, 16-bit output: 16)
// elements per step, bit-identical with cast_ref.cc (vcvtps2ph rounds to
// nearest even and quiets NaNs as f32_to_f16 does; bf16 rounding is the
// same integer arithmetic), the tail through cast_math.h.
#include "cast_kernels.h"

#if defined(__AVX2__) && defined(__F16C__)
#include <immintrin.h>

#include "cast_math.h"

namespace st {
namespace avx2 {

namespace {

// 8 elements of each source type as f32 lanes.
__m256 load8_f32(const float* p) { return _mm256_loadu_ps(p); }
__m256 load8_f16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
__m256 load8_bf16(const uint16_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}

// bf16 bits of 8 f32 lanes (in the low 16 bits of each 32-bit lane):
// NaN -> top half with the quiet bit, else round to nearest even.
__m256i bf16_bits(__m256 v) {
  const __m256i x = _mm256_castps_si256(v);
  const __m256i abs = _mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff));
  const __m256i nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(x, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff))), 16);
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x40));
  return _mm256_blendv_epi8(rounded, quiet, nan);
}

// Stores 16 bf16 values from two vectors of 8 f32 lanes.
void store16_bf16(uint16_t* p, __m256 a, __m256 b) {
  // packus works per 128-bit lane: [a0-3 b0-3 | a4-7 b4-7] -> reorder the quarters.
  const __m256i packed = _mm256_packus_epi32(bf16_bits(a), bf16_bits(b));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_permute4x64_epi64(packed, 0xd8));
}

void store8_f16(uint16_t* p, __m256 v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)); }

void tail(const void* src, DType from, void* dst, DType to, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; i++) castm::store_f32_bits(dst, to, i, castm::load_f32_bits(src, from, i));
}

__m256 load8(const void* src, DType from, int64_t i) {
  if (from == DType::F32) return load8_f32(static_cast<const float*>(src) + i);
  if (from == DType::F16) return load8_f16(static_cast<const uint16_t*>(src) + i);
  return load8_bf16(static_cast<const uint16_t*>(src) + i);
}

// One loop body per pair, the types fixed by the caller's switch (the
// branches on `from` fold away once inlined into each wrapper).
inline __attribute__((always_inline)) void run(const void* src, DType from, void* dst, DType to, int64_t begin, int64_t end) {
  int64_t i = begin;
  if (to == DType::F32) {
    float* d = static_cast<float*>(dst);
    for (; i + 8 <= end; i += 8) _mm256_storeu_ps(d + i, load8(src, from, i));
  } else if (to == DType::F16) {
    uint16_t* d = static_cast<uint16_t*>(dst);
    for (; i + 8 <= end; i += 8) store8_f16(d + i, load8(src, from, i));
  } else {
    uint16_t* d = static_cast<uint16_t*>(dst);
    for (; i + 16 <= end; i += 16) store16_bf16(d + i, load8(src, from, i), load8(src, from, i + 8));
  }
  tail(src, from, dst, to, i, end);
}

void f32_f16(const void* s, void* d, int64_t b, int64_t e) { run(s, DType::F32, d, DType::F16, b, e); }
void f32_bf16(const void* s, void* d, int64_t b, int64_t e) { run(s, DType::F32, d, DType::BF16, b, e); }
void f16_f32(const void* s, void* d, int64_t b, int64_t e) { run(s, DType::F16, d, DType::F32, b, e); }
void f16_bf16(const void* s, void* d, int64_t b, int64_t e) { run(s, DType::F16, d, DType::BF16, b, e); }
void bf16_f32(const void* s, void* d, int64_t b, int64_t e) { run(s, DType::BF16, d, DType::F32, b, e); }
void bf16_f16(const void* s, void* d, int64_t b, int64_t e) { run(s, DType::BF16, d, DType::F16, b, e); }

}  // namespace

CastFn cast_fn(DType from, DType to) {
  if (from == DType::F32 && to == DType::F16) return f32_f16;
  if (from == DType::F32 && to == DType::BF16) return f32_bf16;
  if (from == DType::F16 && to == DType::F32) return f16_f32;
  if (from == DType::F16 && to == DType::BF16) return f16_bf16;
  if (from == DType::BF16 && to == DType::F32) return bf16_f32;
  if (from == DType::BF16 && to == DType::F16) return bf16_f16;
  return nullptr;
}

}  // namespace avx2
}  // namespace st

#else

namespace st {
namespace avx2 {
CastFn cast_fn(DType, DType) { return nullptr; }
}  // namespace avx2
}  // namespace st

#endif
