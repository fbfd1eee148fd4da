// The scalar reference of the sparse room: the specification the SIMD and
// CUDA kernels are tested against. Selection is sm::select_span over every
// span of a row; spmm24 is one fma chain per output element, by definition.
#include <cmath>

#include "sparse_kernels.h"

namespace st {

namespace {

constexpr SparseLuts make_luts() {
  SparseLuts t{};
  for (int b = 0; b < 256; ++b) {
    int k = 0;
    for (int q = 0; q < 16; ++q) t.shuf16[b][q] = 0x80;
    for (int l = 0; l < 8; ++l) {
      const bool on = ((b >> l) & 1) != 0;
      t.mask32[b][l] = on ? -1 : 0;
      t.mask16[b][l] = static_cast<int16_t>(on ? -1 : 0);
      t.perm32[b][l] = 0;
    }
    for (int l = 0; l < 8; ++l) {
      if (((b >> l) & 1) == 0) continue;
      t.perm32[b][k] = l;
      t.shuf16[b][2 * k] = static_cast<uint8_t>(2 * l);
      t.shuf16[b][2 * k + 1] = static_cast<uint8_t>(2 * l + 1);
      ++k;
    }
    const uint32_t lo = static_cast<uint32_t>(b) & 15u, hi = static_cast<uint32_t>(b) >> 4;
    const uint32_t clo = sm::popcount32(lo) == 2 ? sm::code24(lo) : 0u;
    const uint32_t chi = sm::popcount32(hi) == 2 ? sm::code24(hi) : 0u;
    t.code8[b] = static_cast<uint8_t>(clo | (chi << 4));
  }
  return t;
}

}  // namespace

// Built by the compiler (constant initialization): no start-up cost, no
// initialization-order question for the kernels that read it.
const SparseLuts kSparseLuts = make_luts();

namespace ref {

int64_t select_row(const SelectArgs& a, const sm::SelectCtx& c, int64_t row) {
  (void)a;
  const int64_t spans = (c.cols + c.span - 1) / c.span;
  for (int64_t s = 0; s < spans; ++s) {
    const int64_t bad = sm::select_span(c, row, s);
    if (bad >= 0) return bad;
  }
  return -1;
}

void spmm24_rows(const Spmm24Plan& p, int64_t i0, int64_t i1) {
  const int64_t half = p.cols / 2, groups = p.cols / 4;
  const int esize = p.dtype == DType::F32 ? 4 : 2;
  for (int64_t i = i0; i < i1; ++i) {
    const uint8_t* meta = p.meta + i * p.meta_row_bytes;
    for (int64_t j = 0; j < p.n; ++j) {
      float acc = p.accumulate ? p.y[i * p.n + j] : 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        const uint32_t code = (meta[g >> 1] >> (4 * (g & 1))) & 15u;
        const float* x = p.xg + (g * p.n + j) * 4;  // X(4g .. 4g+3, j)
        const float v0 = sm::raw_to_f32(sm::load_raw(p.values, esize, i * half + 2 * g), p.dtype);
        const float v1 = sm::raw_to_f32(sm::load_raw(p.values, esize, i * half + 2 * g + 1), p.dtype);
        acc = std::fma(v0, x[code & 3u], acc);
        acc = std::fma(v1, x[code >> 2], acc);
      }
      p.y[i * p.n + j] = acc;
    }
  }
}

int64_t select_quant_row(const QuantSelectArgs& a, int64_t row) {
  const int bits = a.bits;
  const uint32_t bias = 1u << (bits - 1), cmask = (1u << bits) - 1u;
  const int64_t in_words = (a.cols * bits + 31) / 32;
  const int64_t out_words = (a.cols / 2 * bits + 31) / 32;
  const int64_t qgroups = a.cols / a.group;
  const int64_t mask_bytes = (a.cols + 7) / 8;
  const int64_t meta_bytes = meta_row_bytes(a.cols, 4);
  const int32_t* in = a.codes + row * in_words;
  int32_t* out = a.values + row * out_words;
  uint8_t* meta = a.meta + row * meta_bytes;
  uint8_t* mrow = a.mask ? a.mask + row * mask_bytes : nullptr;
  const uint8_t* min_row = a.mask_in ? a.mask_in + row * mask_bytes : nullptr;
  for (int64_t w = 0; w < out_words; ++w) out[w] = 0;
  for (int64_t b = 0; b < meta_bytes; ++b) meta[b] = 0;
  if (mrow) {
    for (int64_t b = 0; b < mask_bytes; ++b) mrow[b] = 0;
  }
  for (int64_t g = 0; g < a.cols / 4; ++g) {
    const int64_t c0 = 4 * g;
    uint32_t keep = 0;
    uint32_t codes[4];
    for (int i = 0; i < 4; ++i) codes[i] = sm::get_code(in, c0 + i, bits);
    if (a.score == SparseScore::Mask) {
      for (int i = 0; i < 4; ++i) keep |= static_cast<uint32_t>((min_row[(c0 + i) >> 3] >> ((c0 + i) & 7)) & 1u) << i;
      if (sm::popcount32(keep) != 2) return c0;
    } else {
      const int32_t z = a.zeros ? a.zeros[row * qgroups + c0 / a.group] : 0;
      const uint32_t zcode = (static_cast<uint32_t>(z) + bias) & cmask;
      uint32_t s[4];
      int nonzero = 0;
      for (int i = 0; i < 4; ++i) {
        s[i] = codes[i] != zcode ? 1u : 0u;
        nonzero += static_cast<int>(s[i]);
      }
      if (nonzero > 2) return c0;
      keep = sm::select_group(s, 2, 4);
    }
    int k = 0;
    for (int i = 0; i < 4; ++i) {
      if (((keep >> i) & 1u) == 0) continue;
      sm::put_code(out, 2 * g + k, codes[i], bits);
      if (mrow) mrow[(c0 + i) >> 3] = static_cast<uint8_t>(mrow[(c0 + i) >> 3] | (1u << ((c0 + i) & 7)));
      ++k;
    }
    meta[g >> 1] = static_cast<uint8_t>(meta[g >> 1] | (sm::code24(keep) << (4 * (g & 1))));
  }
  return -1;
}

int64_t expand_row(const ExpandArgs& a, int64_t row) {
  const int64_t groups = a.cols / 4;
  const uint8_t* meta = a.meta ? a.meta + row * meta_row_bytes(a.cols, a.meta_word_bytes) : nullptr;
  const uint8_t* mrow = meta ? nullptr : a.mask + row * ((a.cols + 7) / 8);
  // The kept set of group g, or 0 when the code / mask is not a 2:4 one.
  auto keep_of = [&](int64_t g) -> uint32_t {
    if (meta) {
      const uint32_t code = (meta[g >> 1] >> (4 * (g & 1))) & 15u;
      return sm::code24_valid(code) ? sm::keep_of_code24(code) : 0u;
    }
    const int64_t c0 = 4 * g;
    const uint32_t k = (mrow[c0 >> 3] >> (c0 & 7)) & 15u;  // c0 is a multiple of 4: the group is inside one byte
    return sm::popcount32(k) == 2 ? k : 0u;
  };
  if (a.bits == 0) {
    const int esize = a.dtype == DType::F32 ? 4 : 2;
    const int64_t half = a.cols / 2;
    for (int64_t g = 0; g < groups; ++g) {
      const uint32_t keep = keep_of(g);
      if (keep == 0) return 4 * g;
      int k = 0;
      for (int i = 0; i < 4; ++i) {
        uint32_t v = 0;
        if ((keep >> i) & 1u) v = sm::load_raw(a.values, esize, row * half + 2 * g + k++);
        sm::store_raw(a.out, esize, row * a.cols + 4 * g + i, v);
      }
    }
    return -1;
  }
  const int bits = a.bits;
  const uint32_t bias = 1u << (bits - 1), cmask = (1u << bits) - 1u;
  const int64_t in_words = (a.cols / 2 * bits + 31) / 32;
  const int64_t out_words = (a.cols * bits + 31) / 32;
  const int64_t qgroups = a.cols / a.group;
  const int32_t* in = static_cast<const int32_t*>(a.values) + row * in_words;
  int32_t* out = static_cast<int32_t*>(a.out) + row * out_words;
  for (int64_t w = 0; w < out_words; ++w) out[w] = 0;
  for (int64_t g = 0; g < groups; ++g) {
    const uint32_t keep = keep_of(g);
    if (keep == 0) return 4 * g;
    const int32_t z = a.zeros ? a.zeros[row * qgroups + (4 * g) / a.group] : 0;
    const uint32_t zcode = (static_cast<uint32_t>(z) + bias) & cmask;
    int k = 0;
    for (int i = 0; i < 4; ++i) {
      const uint32_t code = ((keep >> i) & 1u) ? sm::get_code(in, 2 * g + k++, bits) : zcode;
      sm::put_code(out, 4 * g + i, code, bits);
    }
  }
  return -1;
}

}  // namespace ref
}  // namespace st
