// Per-element conversions of the cast room: the specification the SIMD
// kernel reproduces bit for bit. Every conversion goes through binary32,
// which holds every f16 and bf16 value exactly.
#pragma once
#include <cstdint>
#include <cstring>

#include "../numeric.h"
#include "../tensor.h"

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

// Element i of an array of `from` as f32 bits.
ST_HD uint32_t load_f32_bits(const void* src, DType from, int64_t i) {
  if (from == DType::F32) {
    uint32_t x;
    std::memcpy(&x, static_cast<const uint8_t*>(src) + i * 4, 4);
    return x;
  }
  const uint16_t h = static_cast<const uint16_t*>(src)[i];
  return from == DType::F16 ? f16_to_f32_bits(h) : bf16_to_f32_bits(h);
}

// Stores f32 bits as element i of an array of `to` (rounded when narrower).
ST_HD void store_f32_bits(void* dst, DType to, int64_t i, uint32_t x) {
  if (to == DType::F32) {
    std::memcpy(static_cast<uint8_t*>(dst) + i * 4, &x, 4);
    return;
  }
  static_cast<uint16_t*>(dst)[i] = to == DType::F16 ? f32_bits_to_f16(x) : f32_bits_to_bf16(x);
}

}  // namespace castm
}  // namespace st
