// Per-element conversions of the cast room: the specification the SIMD
// kernel reproduces bit for bit. Every conversion goes through binary32,
// which holds every f16 and bf16 value exactly.
#pragma once
#include <cstdint>

#include "../numeric.h"

namespace st {
namespace castm {

// binary16 -> binary32 as F16C's vcvtph2ps: exact, and a signaling NaN
// comes out quiet (the quiet bit set, payload kept).
ST_HD uint32_t f16_to_f32_bits(uint16_t h) {
  uint32_t x = f32_bits(f16_to_f32(h));
  if ((x & 0x7fffffffu) > 0x7f800000u) x |= 0x00400000u;
  return x;
}

ST_HD uint32_t bf16_to_f32_bits(uint16_t h) { return static_cast<uint32_t>(h) << 16; }

ST_HD uint16_t f32_bits_to_f16(uint32_t x) { return f32_to_f16(bits_f32(x)); }

ST_HD uint16_t f32_bits_to_bf16(uint32_t x) { return f32_to_bf16(bits_f32(x)); }

}  // namespace castm
}  // namespace st
