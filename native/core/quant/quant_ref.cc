// The scalar reference: the specification of every format. It converts each
// block or group to f32 and hands it to the shared arithmetic of quant_math.h
// (the same functions the CUDA kernels run).
#include <vector>

#include "quant_kernels.h"
#include "quant_kmath.h"
#include "quant_math.h"
#include "quant_search.h"

namespace st {

int64_t load_f32(const void* src, DType t, int64_t offset, int64_t n, float* out, NonFinite mode) {
  for (int64_t j = 0; j < n; ++j) {
    float v;
    if (t == DType::F32) v = static_cast<const float*>(src)[offset + j];
    else if (t == DType::F16) v = f16_to_f32(static_cast<const uint16_t*>(src)[offset + j]);
    else v = bf16_to_f32(static_cast<const uint16_t*>(src)[offset + j]);
    if (!is_finite_bits(f32_bits(v))) {
      if (mode == NonFinite::Error) return j;
      v = 0.0f;
    }
    out[j] = v;
  }
  return -1;
}

namespace ref {

namespace {

// Per-thread scratch for one group (per-channel groups can be a whole row).
float* scratch(int64_t n, int slot) {
  thread_local std::vector<float> buf[2];
  if (static_cast<int64_t>(buf[slot].size()) < n) buf[slot].resize(static_cast<size_t>(n));
  return buf[slot].data();
}

int64_t quantize_ggml_row(const QuantizeArgs& a, int64_t row) {
  const QFormatTraits& tr = qformat_traits(a.format);
  const int64_t cols = a.src.cols, nb = cols / tr.block;
  uint8_t* out = a.data + row * nb * tr.block_bytes;
  if (a.search == Search::None) {
    const bool weighted = a.importance && ggml_weighted(a.format);
    if (weighted && tr.block == qm::QK) {
      // llama.cpp's weights need the whole row's Σx² first.
      float* x = scratch(cols, 0);
      const int64_t bad = load_f32(a.src.data, a.src.dtype, row * cols, cols, x, a.non_finite);
      if (bad >= 0) return bad;
      const float sigma2 = qk::sum_squares(x, static_cast<int>(cols)) / static_cast<float>(cols);
      for (int64_t b = 0; b < nb; ++b) {
        qk::ggml_block_weighted(a.format, x + b * qm::QK, a.importance + b * qm::QK, sigma2, out + b * tr.block_bytes);
      }
      return -1;
    }
    float x[qk::QK_K];
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t bad = load_f32(a.src.data, a.src.dtype, row * cols + b * tr.block, tr.block, x, a.non_finite);
      if (bad >= 0) return b * tr.block + bad;
      uint8_t* y = out + b * tr.block_bytes;
      if (weighted) qk::ggml_block_weighted(a.format, x, a.importance + b * tr.block, 0.0f, y);
      else qk::ggml_block(a.format, x, y);
    }
    return -1;
  }
  // search: 'mse' (q4_0, q4_1, q8_0)
  float x[qm::QK];
  float ones[qm::QK];
  for (int j = 0; j < qm::QK; ++j) ones[j] = 1.0f;
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t bad = load_f32(a.src.data, a.src.dtype, row * cols + b * qm::QK, qm::QK, x, a.non_finite);
    if (bad >= 0) return b * qm::QK + bad;
    uint8_t* y = out + b * tr.block_bytes;
    const float* w = a.importance ? a.importance + b * qm::QK : ones;
    if (a.format == QFormat::Q4_0) qs::q4_0_block_search(x, w, y);
    else if (a.format == QFormat::Q4_1) qs::q4_1_block_search(x, w, y);
    else qs::q8_0_block_search(x, w, y);
  }
  return -1;
}

int64_t quantize_int_row(const QuantizeArgs& a, int64_t row) {
  const int bits = qformat_traits(a.format).bits;
  const qm::IntRange r = qm::int_range(bits);
  const int64_t cols = a.src.cols, g = a.group, ng = cols / g;
  const QuantSizes sz = quant_sizes(a.format, cols, g);
  uint8_t* out = a.data + row * sz.data_row_bytes;
  float* x = scratch(g, 0);
  float* ones = nullptr;
  if (a.search == Search::Mse && !a.importance) {
    ones = scratch(g, 1);
    for (int64_t j = 0; j < g; ++j) ones[j] = 1.0f;
  }
  for (int64_t gi = 0; gi < ng; ++gi) {
    const int64_t bad = load_f32(a.src.data, a.src.dtype, row * cols + gi * g, g, x, a.non_finite);
    if (bad >= 0) return gi * g + bad;
    qm::GroupParams p;
    if (a.search == Search::Mse) {
      const float* w = a.importance ? a.importance + gi * g : ones;
      p = qs::int_group_search(x, w, static_cast<int>(g), bits, a.symmetric, a.scale_dtype);
    } else {
      float mn, mx;
      qm::group_minmax(x, static_cast<int>(g), &mn, &mx);
      p = qm::int_params_minmax(mn, mx, bits, a.symmetric, a.scale_dtype);
    }
    qm::store_scale(a.scales, row * ng + gi, p.scale, a.scale_dtype);
    if (!a.symmetric) a.zeros[row * ng + gi] = static_cast<int8_t>(p.zero);
    for (int64_t j = 0; j < g; ++j) qm::put_code(out, gi * g + j, qm::int_code(x[j], p, r), bits);
  }
  // Padding nibbles of the last int32 word stay zero.
  for (int64_t b = (cols * bits + 7) / 8; b < sz.data_row_bytes; ++b) out[b] = 0;
  if (bits == 4 && (cols & 1)) out[cols >> 1] &= 0x0f;
  return -1;
}

}  // namespace

int64_t quantize_row(const QuantizeArgs& a, int64_t row) {
  return qformat_traits(a.format).ggml ? quantize_ggml_row(a, row) : quantize_int_row(a, row);
}

void dequantize_row(const DequantizeArgs& a, int64_t row, float* out) {
  const QFormatTraits& tr = qformat_traits(a.format);
  const QuantSizes sz = quant_sizes(a.format, a.cols, a.group);
  if (tr.ggml) {
    const uint8_t* in = a.data + row * sz.data_row_bytes;
    for (int64_t b = 0; b < sz.groups_per_row; ++b) qk::ggml_unblock(a.format, in + b * tr.block_bytes, out + b * tr.block);
    return;
  }
  const uint8_t* in = a.data + row * sz.data_row_bytes;
  const int64_t ng = sz.groups_per_row;
  for (int64_t gi = 0; gi < ng; ++gi) {
    const float s = qm::load_scale(a.scales, row * ng + gi, a.scale_dtype);
    const int z = a.zeros ? a.zeros[row * ng + gi] : 0;
    for (int64_t j = gi * a.group; j < (gi + 1) * a.group; ++j) {
      out[j] = static_cast<float>(qm::get_code(in, j, tr.bits) - z) * s;
    }
  }
}

void error_row(const void* orig, DType t, int64_t offset, const float* deq, int64_t n, ErrorStats* s) {
  qm::ErrorLanes l;
  qm::error_lanes_zero(&l);
  float x[8];
  for (int64_t j = 0; j < n; j += 8) {
    const int64_t m = n - j < 8 ? n - j : 8;
    load_f32(orig, t, offset + j, m, x, NonFinite::Zero);
    for (int64_t k = 0; k < m; ++k) qm::error_lane_add(&l, static_cast<int>(k), x[k], deq[j + k]);
  }
  s->sum_sq_err = qm::error_fold8(l.se);
  s->sum_sq_ref = qm::error_fold8(l.sx);
  s->sum_sq_deq = qm::error_fold8(l.sy);
  s->dot = qm::error_fold8(l.dot);
  s->max_abs = l.max_abs;
}

}  // namespace ref
}  // namespace st
