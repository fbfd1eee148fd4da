// Scalar numeric primitives shared by the CPU reference, the SIMD kernels'
// scalar tails and the CUDA kernels. Everything here is __host__ __device__
// so the GPU runs exactly the arithmetic the CPU tests exercise.
#pragma once
#include <cstdint>
#include <cstring>
#include <cmath>

// Internal linkage on purpose: these headers are compiled into baseline and
// AVX2 translation units; with ordinary inline linkage the linker could keep
// an AVX2-compiled copy for the baseline code (a SIGILL on older CPUs).
#if defined(__CUDACC__)
#define ST_HD static __host__ __device__ __forceinline__
#else
#define ST_HD static inline
#endif

namespace st {

ST_HD uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

ST_HD float bits_f32(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// Round-half-even, the mode every IEEE unit is in by default. nearbyint
// honours the current rounding mode; nothing in slimtensor changes it.
ST_HD float round_even(float x) {
#if defined(__CUDA_ARCH__)
  return rintf(x);
#else
  return std::nearbyint(x);
#endif
}

// Round half away from zero (C's roundf), what ggml's Q8_0 reference uses.
ST_HD float round_away(float x) {
#if defined(__CUDA_ARCH__)
  return roundf(x);
#else
  return std::round(x);
#endif
}

// float -> int32 with x86 cvttss2si semantics: truncate toward zero, and
// any NaN or out-of-range value becomes INT32_MIN. ggml's references cast
// floats to int8_t, which x86 compilers lower to this instruction plus
// "keep the low byte"; emulating it keeps degenerate blocks bit-identical.
ST_HD int32_t cvtt_i32(float x) {
  if (!(x > -2147483904.0f && x < 2147483648.0f)) return INT32_MIN;
  return static_cast<int32_t>(x);
}

// The low byte of cvtt_i32 read as int8_t: C's `(int8_t)f` on x86.
ST_HD int32_t cvtt_i8(float x) {
  return static_cast<int32_t>(static_cast<int8_t>(static_cast<uint8_t>(cvtt_i32(x) & 0xff)));
}

// IEEE binary16 from binary32, round-to-nearest-even; overflow goes to
// infinity, NaN stays NaN (sign and top payload bits kept, as F16C does).
ST_HD uint16_t f32_to_f16(float f) {
  uint32_t x = f32_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) {
    return static_cast<uint16_t>(sign | 0x7c00u | (x > 0x7f800000u ? (0x0200u | ((x >> 13) & 0x3ffu)) : 0u));
  }
  if (x >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds up to inf
  if (x < 0x38800000u) {
    // Below the smallest normal half (2^-14): the result is a subnormal
    // count of 2^-24 units. Scaling by 2^24 is exact, round_even does RNE.
    const float units = bits_f32(x) * 16777216.0f;
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(round_even(units)));
  }
  x -= 0x38000000u;                      // rebias exponent 127 -> 15
  x += 0x0fffu + ((x >> 13) & 1u);       // round to nearest, ties to even
  return static_cast<uint16_t>(sign | (x >> 13));
}

ST_HD float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0) {
    // zero or subnormal: man * 2^-24, exact in binary32
    const float v = static_cast<float>(man) * 5.9604644775390625e-8f;
    return bits_f32(f32_bits(v) | sign);
  }
  if (exp == 31) return bits_f32(sign | 0x7f800000u | (man << 13));
  return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

// bfloat16 from binary32, round-to-nearest-even; NaN stays a quiet NaN.
ST_HD uint16_t f32_to_bf16(float f) {
  uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

ST_HD float bf16_to_f32(uint16_t h) { return bits_f32(static_cast<uint32_t>(h) << 16); }

ST_HD bool is_finite_bits(uint32_t bits) { return (bits & 0x7fffffffu) < 0x7f800000u; }

}  // namespace st
