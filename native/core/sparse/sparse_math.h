// Per-element and per-group arithmetic of the sparse room: scores, the N:M
// selection with its tie rule, the 2:4 nibble code, and the processing of
// one span of a row. These functions are the specification: the scalar
// reference runs select_span over every span of a row, the CUDA kernel runs
// it one span per thread, and the AVX2 kernel reproduces its outputs bit for
// bit (and calls it for the spans at a row's end).
#pragma once
#include <cstdint>

#include "../numeric.h"
#include "../tensor.h"
#include "sparse.h"

namespace st {
namespace sm {

constexpr uint32_t kInfBits = 0x7f800000u;  // a score above this is NaN
constexpr int kMaxM = 32;

ST_HD int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Raw bits of element i (4 or 2 bytes), and the element as f32.
ST_HD uint32_t load_raw(const void* p, int esize, int64_t i) {
  if (esize == 4) return static_cast<const uint32_t*>(p)[i];
  return static_cast<const uint16_t*>(p)[i];
}
ST_HD void store_raw(void* p, int esize, int64_t i, uint32_t v) {
  if (esize == 4) static_cast<uint32_t*>(p)[i] = v;
  else static_cast<uint16_t*>(p)[i] = static_cast<uint16_t>(v);
}
ST_HD float raw_to_f32(uint32_t raw, DType t) {
  if (t == DType::F32) return bits_f32(raw);
  return t == DType::F16 ? f16_to_f32(static_cast<uint16_t>(raw)) : bf16_to_f32(static_cast<uint16_t>(raw));
}

// The score of one element as the bits of a non-negative f32, so scores
// compare as unsigned integers; NaN scores are above kInfBits.
ST_HD uint32_t score_bits(float w, SparseScore s, float norm) {
  const uint32_t mag = f32_bits(w) & 0x7fffffffu;
  if (s == SparseScore::Magnitude) return mag;
  if (s == SparseScore::NonZero) return mag != 0 ? 1u : 0u;
  // Wanda: |w|·norm rounded to f32; the sign cleared (a norm of -0).
  return f32_bits(bits_f32(mag) * norm) & 0x7fffffffu;
}

// The kept set of one group of m <= 32 scores (bit i = element i): the n
// highest-ranked, where a higher score ranks first and equal scores rank by
// lower index.
ST_HD uint32_t select_group(const uint32_t* s, int n, int m) {
  uint32_t keep = 0;
  for (int i = 0; i < m; ++i) {
    int rank = 0;
    for (int j = 0; j < m; ++j) rank += (s[j] > s[i] || (s[j] == s[i] && j < i)) ? 1 : 0;
    if (rank < n) keep |= 1u << i;
  }
  return keep;
}

ST_HD int popcount32(uint32_t v) {
  int c = 0;
  for (; v != 0; v &= v - 1) ++c;
  return c;
}

// The 2:4 nibble of a group whose kept set (4 bits) has exactly two bits:
// idx0 | idx1 << 2 with idx0 < idx1.
ST_HD uint32_t code24(uint32_t keep) {
  uint32_t i0 = 0;
  while (((keep >> i0) & 1u) == 0) ++i0;
  uint32_t i1 = i0 + 1;
  while (((keep >> i1) & 1u) == 0) ++i1;
  return i0 | (i1 << 2);
}
ST_HD bool code24_valid(uint32_t code) { return (code & 3u) < (code >> 2); }
ST_HD uint32_t keep_of_code24(uint32_t code) { return (1u << (code & 3u)) | (1u << (code >> 2)); }

ST_HD int64_t gcd64(int64_t a, int64_t b) {
  while (b != 0) {
    const int64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

// Elements per span: a whole number of groups and of mask bytes.
ST_HD int64_t span_of(int m) { return (static_cast<int64_t>(m) * 8) / gcd64(m, 8); }

// Everything select_span needs, by value (it is also a CUDA kernel argument).
struct SelectCtx {
  const void* src;
  DType dtype;
  int esize;
  int64_t cols;
  int n, m;
  int64_t span;
  SparseScore score;
  const float* norms;
  const uint8_t* mask_in;
  uint8_t* mask;
  void* dense;
  void* values;           // 2:4 only
  uint8_t* meta;          // 2:4 only
  int64_t mask_row_bytes, meta_row_bytes;
};

ST_HD SelectCtx make_ctx(const SelectArgs& a) {
  SelectCtx c{};
  c.src = a.src.data;
  c.dtype = a.src.dtype;
  c.esize = a.src.dtype == DType::F32 ? 4 : 2;
  c.cols = a.src.cols;
  c.n = a.n;
  c.m = a.m;
  c.span = span_of(a.m);
  c.score = a.score;
  c.norms = a.norms;
  c.mask_in = a.mask_in;
  c.mask = a.mask;
  c.dense = a.dense;
  c.values = a.values;
  c.meta = a.meta;
  c.mask_row_bytes = (a.src.cols + 7) / 8;
  const int64_t groups = a.src.cols / 4, per = a.meta_word_bytes * 2;
  c.meta_row_bytes = ((groups + per - 1) / per) * a.meta_word_bytes;
  return c;
}

// Processes the span-th span of `row`: selects each group's kept elements
// and writes the span's mask bytes, dense values, compressed values and meta
// nibbles (each span owns whole bytes; the row's last span also writes the
// meta padding). Returns -1, or the column of the first NaN score
// (Magnitude/Wanda), or the first column of the first group that breaks the
// rule (NonZero: more than n non-zeros; Mask: not exactly n bits).
ST_HD int64_t select_span(const SelectCtx& c, int64_t row, int64_t span) {
  const int64_t e0 = span * c.span;
  const int64_t e1 = min64(c.cols, e0 + c.span);
  const int64_t base = row * c.cols;
  uint8_t* mrow = c.mask ? c.mask + row * c.mask_row_bytes : nullptr;
  uint8_t* meta = c.meta ? c.meta + row * c.meta_row_bytes : nullptr;
  const bool compress = c.values != nullptr || c.meta != nullptr;
  if (mrow) {
    for (int64_t b = e0 / 8; b < (e1 + 7) / 8; ++b) mrow[b] = 0;
  }
  if (meta) {
    for (int64_t b = e0 / 8; b < (e1 + 7) / 8; ++b) meta[b] = 0;
    if (e1 == c.cols) {
      for (int64_t b = (e1 + 7) / 8; b < c.meta_row_bytes; ++b) meta[b] = 0;
    }
  }
  const uint8_t* min_row = c.mask_in ? c.mask_in + row * c.mask_row_bytes : nullptr;
  uint32_t s[kMaxM];
  for (int64_t g0 = e0; g0 < e1; g0 += c.m) {
    uint32_t keep;
    if (c.score == SparseScore::Mask) {
      keep = 0;
      for (int i = 0; i < c.m; ++i) {
        const int64_t col = g0 + i;
        keep |= static_cast<uint32_t>((min_row[col >> 3] >> (col & 7)) & 1u) << i;
      }
      if (popcount32(keep) != c.n) return g0;
    } else {
      int nonzero = 0;
      for (int i = 0; i < c.m; ++i) {
        const int64_t col = g0 + i;
        const float w = raw_to_f32(load_raw(c.src, c.esize, base + col), c.dtype);
        s[i] = score_bits(w, c.score, c.score == SparseScore::Wanda ? c.norms[col] : 1.0f);
        if (s[i] > kInfBits) return col;
        nonzero += s[i] != 0 ? 1 : 0;  // not the score itself: magnitudes would overflow an int sum
      }
      if (c.score == SparseScore::NonZero && nonzero > c.n) return g0;
      keep = select_group(s, c.n, c.m);
    }
    int kept = 0;
    for (int i = 0; i < c.m; ++i) {
      const int64_t col = g0 + i;
      const bool k = ((keep >> i) & 1u) != 0;
      if (mrow && k) mrow[col >> 3] = static_cast<uint8_t>(mrow[col >> 3] | (1u << (col & 7)));
      if (c.dense) store_raw(c.dense, c.esize, base + col, k ? load_raw(c.src, c.esize, base + col) : 0u);
      if (k && c.values) store_raw(c.values, c.esize, row * (c.cols / 2) + g0 / 2 + kept, load_raw(c.src, c.esize, base + col));
      kept += k ? 1 : 0;
    }
    if (compress && meta) {
      const int64_t g = g0 / 4;
      meta[g >> 1] = static_cast<uint8_t>(meta[g >> 1] | (code24(keep) << (4 * (g & 1))));
    }
  }
  return -1;
}

// ---- int4/int8 codes (compressed-tensors packing) ---------------------------

// The biased code of element i of a packed row.
ST_HD uint32_t get_code(const int32_t* row, int64_t i, int bits) {
  const int per = 32 / bits;
  return (static_cast<uint32_t>(row[i / per]) >> (bits * (i % per))) & ((1u << bits) - 1u);
}
ST_HD void put_code(int32_t* row, int64_t i, uint32_t code, int bits) {
  const int per = 32 / bits;
  const int shift = bits * static_cast<int>(i % per);
  const uint32_t mask = ((1u << bits) - 1u) << shift;
  uint32_t w = static_cast<uint32_t>(row[i / per]);
  w = (w & ~mask) | ((code << shift) & mask);
  row[i / per] = static_cast<int32_t>(w);
}

}  // namespace sm
}  // namespace st
