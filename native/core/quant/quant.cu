// CUDA kernels of the quant room. One thread per GGUF block or
// compressed-tensors group, running the same __host__ __device__ functions
// as the scalar reference (quant_ref.cc): the GPU's codes, scales and packed
// bytes are those of the CPU. The host side moves a chunk of rows to the
// device, runs one kernel over it and copies the outputs back, so device
// memory use is bounded whatever the tensor's size.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "../cuda.h"
#include "../device.h"
#include "quant_cuda.h"
#include "quant_kmath.h"
#include "quant_math.h"
#include "quant_search.h"

namespace st {

namespace {

constexpr int kThreadsPerBlock = 128;
constexpr unsigned long long kNoBad = ~0ull;

// ---------------------------------------------------------------------------
// Device side. Chunk geometry and device pointers, passed by value; row 0 is
// the chunk's first row.

struct QuantChunk {
  const void* src;        // rows x cols values of `dtype`
  DType dtype;
  int64_t rows, cols;
  QFormat format;
  int bits;
  int block;              // GGUF formats: values per block (32, K-quants 256)
  int block_bytes;        // GGUF formats
  int64_t group;          // int formats
  int64_t groups;         // blocks (GGUF) or groups (int) per row
  int groups_per_thread;  // int formats: 2 when odd INT4 groups share bytes, else 1
  int64_t data_row_bytes;
  bool symmetric;
  DType scale_dtype;
  bool search;
  bool ggml_weighted;     // llama.cpp's importance-weighted GGUF quantizers (weights = importance)
  bool zero_non_finite;   // NonFinite::Zero
  const float* weights;   // search: `cols` weights (importance, or ones); ggml_weighted: the importance
  float* sigma2;          // ggml_weighted 32-value formats: each row's Σx²/cols
  float* scratch;         // int formats: rows x cols f32, each group converted once
  uint8_t* data;
  void* scales;
  int8_t* zeros;
};

__device__ float load_value(const void* src, DType t, int64_t i) {
  if (t == DType::F32) return static_cast<const float*>(src)[i];
  const uint16_t h = static_cast<const uint16_t*>(src)[i];
  return t == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

// Reads n values at flat index `off` as f32 (what load_f32 does on the CPU):
// non-finite values become 0 with NonFinite::Zero; otherwise the flat index
// of the first one is returned. -1 when all were read.
__device__ int64_t load_group(const QuantChunk& c, int64_t off, int64_t n, float* x) {
  for (int64_t j = 0; j < n; ++j) {
    float v = load_value(c.src, c.dtype, off + j);
    if (!is_finite_bits(f32_bits(v))) {
      if (!c.zero_non_finite) return off + j;
      v = 0.0f;
    }
    x[j] = v;
  }
  return -1;
}

// One GGUF block (a K-quant super-block: 256 values); as ref::quantize_ggml_row's loop body.
__device__ int64_t quantize_block(const QuantChunk& c, int64_t item) {
  const int64_t row = item / c.groups, b = item % c.groups;
  float x[qk::QK_K];
  const int64_t bad = load_group(c, row * c.cols + b * c.block, c.block, x);
  if (bad >= 0) return bad;
  uint8_t* y = c.data + row * c.data_row_bytes + b * c.block_bytes;
  if (c.search) {
    const float* w = c.weights + b * qm::QK;
    if (c.format == QFormat::Q4_0) qs::q4_0_block_search(x, w, y);
    else if (c.format == QFormat::Q4_1) qs::q4_1_block_search(x, w, y);
    else qs::q8_0_block_search(x, w, y);
  } else if (c.ggml_weighted) {
    qk::ggml_block_weighted(c.format, x, c.weights + b * c.block, c.sigma2 ? c.sigma2[row] : 0.0f, y);
  } else {
    qk::ggml_block(c.format, x, y);
  }
  return -1;
}

// llama.cpp's Σx²/cols of each row, left to right as the reference (one
// thread per row). A row with a NaN/Inf is reported by the block kernel.
__global__ void row_sigma2_kernel(QuantChunk c) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= c.rows) return;
  float s = 0.0f;
  for (int64_t j = 0; j < c.cols; ++j) {
    float v = load_value(c.src, c.dtype, row * c.cols + j);
    if (!is_finite_bits(f32_bits(v))) v = 0.0f;
    s += v * v;
  }
  c.sigma2[row] = s / static_cast<float>(c.cols);
}

// One or two compressed-tensors groups; as ref::quantize_int_row's loop
// body. With an odd INT4 group size two neighbouring groups share a byte,
// so one thread takes both (2k and 2k+1 together start on a byte boundary);
// the output starts zeroed, which leaves padding nibbles zero.
__device__ int64_t quantize_groups(const QuantChunk& c, int64_t item) {
  const int64_t items_per_row = (c.groups + c.groups_per_thread - 1) / c.groups_per_thread;
  const int64_t row = item / items_per_row;
  const int64_t g = c.group;
  const qm::IntRange r = qm::int_range(c.bits);
  uint8_t* out = c.data + row * c.data_row_bytes;
  const int64_t g0 = (item % items_per_row) * c.groups_per_thread;
  const int64_t g1 = g0 + c.groups_per_thread < c.groups ? g0 + c.groups_per_thread : c.groups;
  for (int64_t gi = g0; gi < g1; ++gi) {
    const int64_t off = row * c.cols + gi * g;
    float* x = c.scratch + off;
    const int64_t bad = load_group(c, off, g, x);
    if (bad >= 0) return bad;
    qm::GroupParams p;
    if (c.search) {
      p = qs::int_group_search(x, c.weights + gi * g, static_cast<int>(g), c.bits, c.symmetric, c.scale_dtype);
    } else {
      float mn, mx;
      qm::group_minmax(x, static_cast<int>(g), &mn, &mx);
      p = qm::int_params_minmax(mn, mx, c.bits, c.symmetric, c.scale_dtype);
    }
    qm::store_scale(c.scales, row * c.groups + gi, p.scale, c.scale_dtype);
    if (!c.symmetric) c.zeros[row * c.groups + gi] = static_cast<int8_t>(p.zero);
    for (int64_t j = 0; j < g; ++j) qm::put_code(out, gi * g + j, qm::int_code(x[j], p, r), c.bits);
  }
  return -1;
}

__global__ void quantize_kernel(QuantChunk c, int64_t items, bool ggml, unsigned long long* first_bad) {
  const int64_t item = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (item >= items) return;
  const int64_t bad = ggml ? quantize_block(c, item) : quantize_groups(c, item);
  if (bad >= 0) atomicMin(first_bad, static_cast<unsigned long long>(bad));
}

struct DequantChunk {
  QFormat format;
  int bits;
  int block_bytes;
  int64_t rows, cols, group, groups, data_row_bytes;
  const uint8_t* data;
  const void* scales;
  DType scale_dtype;
  const int8_t* zeros;  // null: symmetric
  void* out;            // rows x cols values of out_dtype
  DType out_dtype;
};

// As write_row in quant.cc.
__device__ void store_value(void* out, DType t, int64_t i, float v) {
  if (t == DType::F32) static_cast<float*>(out)[i] = v;
  else if (t == DType::F16) static_cast<uint16_t*>(out)[i] = f32_to_f16(v);
  else static_cast<uint16_t*>(out)[i] = f32_to_bf16(v);
}

// One block or group per thread; as ref::dequantize_row.
__global__ void dequantize_kernel(DequantChunk c, int64_t items, bool ggml) {
  const int64_t item = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (item >= items) return;
  const int64_t row = item / c.groups, b = item % c.groups;
  const uint8_t* in = c.data + row * c.data_row_bytes;
  if (ggml) {
    const uint8_t* y = in + b * c.block_bytes;
    float x[qk::QK_K];
    qk::ggml_unblock(c.format, y, x);
    for (int j = 0; j < c.group; ++j) store_value(c.out, c.out_dtype, row * c.cols + b * c.group + j, x[j]);
    return;
  }
  const float s = qm::load_scale(c.scales, row * c.groups + b, c.scale_dtype);
  const int z = c.zeros ? c.zeros[row * c.groups + b] : 0;
  for (int64_t j = b * c.group; j < (b + 1) * c.group; ++j) {
    store_value(c.out, c.out_dtype, row * c.cols + j, static_cast<float>(qm::get_code(in, j, c.bits) - z) * s);
  }
}

// ---------------------------------------------------------------------------
// Host side.

unsigned int grid_for(int64_t items) {
  return static_cast<unsigned int>((items + kThreadsPerBlock - 1) / kThreadsPerBlock);
}

}  // namespace

Status cuda_quantize(const QuantizeArgs& a) {
  ST_TRY(gpu::device_ready());
  const QFormatTraits& tr = qformat_traits(a.format);
  const QuantSizes sz = quant_sizes(a.format, a.src.cols, a.group);
  const int64_t rows = a.src.rows, cols = a.src.cols;
  const int64_t in_row = cols * static_cast<int64_t>(dtype_size(a.src.dtype));
  const int64_t scale_row = tr.ggml ? 0 : sz.groups_per_row * static_cast<int64_t>(dtype_size(a.scale_dtype));
  const int64_t zero_row = tr.ggml || a.symmetric ? 0 : sz.groups_per_row;
  const int64_t scratch_row = tr.ggml ? 0 : cols * 4;
  const int64_t n = gpu::chunk_rows(rows, in_row + scratch_row + sz.data_row_bytes + scale_row + zero_row);

  QuantChunk c{};
  c.dtype = a.src.dtype;
  c.cols = cols;
  c.format = a.format;
  c.bits = tr.bits;
  c.block = tr.block;
  c.block_bytes = tr.block_bytes;
  c.group = a.group;
  c.groups = sz.groups_per_row;
  c.groups_per_thread = !tr.ggml && tr.bits == 4 && (a.group & 1) ? 2 : 1;
  c.data_row_bytes = sz.data_row_bytes;
  c.symmetric = tr.ggml || a.symmetric;
  c.scale_dtype = a.scale_dtype;
  c.search = a.search == Search::Mse;
  c.ggml_weighted = a.search == Search::None && a.importance && ggml_weighted(a.format);
  c.zero_non_finite = a.non_finite == NonFinite::Zero;

  std::vector<float> ones;  // the search's weights without `importance` (copied from by the stream)
  gpu::DeviceCall call(gpu::cuda_runtime());
  ST_TRY(call.begin());
  void *src = nullptr, *scratch = nullptr, *data = nullptr, *scales = nullptr, *zeros = nullptr, *weights = nullptr, *sigma2 = nullptr;
  unsigned long long* first_bad = nullptr;
  ST_TRY(call.alloc(static_cast<size_t>(n * in_row), &src));
  ST_TRY(call.alloc(static_cast<size_t>(n * scratch_row), &scratch));
  ST_TRY(call.alloc(static_cast<size_t>(n * sz.data_row_bytes), &data));
  ST_TRY(call.alloc(static_cast<size_t>(n * scale_row), &scales));
  ST_TRY(call.alloc(static_cast<size_t>(n * zero_row), &zeros));
  ST_TRY(call.alloc(1, &first_bad));
  if (c.search) {
    // The reference weighs by `importance`, or by ones without it.
    ST_TRY(call.alloc(static_cast<size_t>(cols) * sizeof(float), &weights));
    const float* w = a.importance;
    if (!w) {
      ones.assign(static_cast<size_t>(cols), 1.0f);
      w = ones.data();
    }
    ST_TRY(call.to_device(weights, w, static_cast<size_t>(cols) * sizeof(float)));
  }
  if (c.ggml_weighted) {
    // llama.cpp's weighted quantizers weigh by `importance`; the 32-value
    // formats also need each row's Σx²/cols (row_sigma2_kernel).
    ST_TRY(call.alloc(static_cast<size_t>(cols) * sizeof(float), &weights));
    ST_TRY(call.to_device(weights, a.importance, static_cast<size_t>(cols) * sizeof(float)));
    if (tr.block == qm::QK) ST_TRY(call.alloc(static_cast<size_t>(n) * sizeof(float), &sigma2));
  }
  c.src = src;
  c.scratch = static_cast<float*>(scratch);
  c.data = static_cast<uint8_t*>(data);
  c.scales = scales;
  c.zeros = static_cast<int8_t*>(zeros);
  c.weights = static_cast<const float*>(weights);
  c.sigma2 = static_cast<float*>(sigma2);

  const int64_t items_per_row = (c.groups + c.groups_per_thread - 1) / c.groups_per_thread;
  for (int64_t r0 = 0; r0 < rows; r0 += n) {
    c.rows = std::min(n, rows - r0);
    ST_TRY(call.to_device(src, static_cast<const uint8_t*>(a.src.data) + r0 * in_row, static_cast<size_t>(c.rows * in_row)));
    if (!tr.ggml) ST_TRY(call.fill(data, 0, static_cast<size_t>(c.rows * sz.data_row_bytes)));
    ST_TRY(call.fill(first_bad, 0xff, sizeof(unsigned long long)));
    if (c.sigma2) {
      row_sigma2_kernel<<<grid_for(c.rows), kThreadsPerBlock, 0, call.stream()>>>(c);
      ST_TRY(call.launched("row_sigma2_kernel"));
    }
    const int64_t items = c.rows * items_per_row;
    quantize_kernel<<<grid_for(items), kThreadsPerBlock, 0, call.stream()>>>(c, items, tr.ggml, first_bad);
    ST_TRY(call.launched("quantize_kernel"));
    unsigned long long bad = kNoBad;
    ST_TRY(call.to_host(&bad, first_bad, sizeof bad));
    ST_TRY(call.sync());  // the kernel's errors, and `bad`, are known here
    // Chunks run in row order, so the first chunk with a bad value holds the
    // first bad flat index, as the CPU reports it.
    if (bad != kNoBad) return non_finite_error(a.src, r0 * cols + static_cast<int64_t>(bad));
    ST_TRY(call.to_host(a.data + r0 * sz.data_row_bytes, data, static_cast<size_t>(c.rows * sz.data_row_bytes)));
    ST_TRY(call.to_host(static_cast<uint8_t*>(a.scales) + r0 * scale_row, scales, static_cast<size_t>(c.rows * scale_row)));
    if (zero_row > 0) ST_TRY(call.to_host(a.zeros + r0 * zero_row, zeros, static_cast<size_t>(c.rows * zero_row)));
    // The device buffers are reused by the next chunk (same stream: ordered
    // after these copies); the host outputs are complete after this.
    ST_TRY(call.sync());
  }
  return Status::Ok();
}

Status cuda_dequantize(const DequantizeArgs& a, void* out, DType out_dtype) {
  ST_TRY(gpu::device_ready());
  const QFormatTraits& tr = qformat_traits(a.format);
  const QuantSizes sz = quant_sizes(a.format, a.cols, a.group);
  const int64_t rows = a.rows, cols = a.cols;
  const int64_t scale_row = tr.ggml ? 0 : sz.groups_per_row * static_cast<int64_t>(dtype_size(a.scale_dtype));
  const int64_t zero_row = tr.ggml || !a.zeros ? 0 : sz.groups_per_row;
  const int64_t out_row = cols * static_cast<int64_t>(dtype_size(out_dtype));
  const int64_t n = gpu::chunk_rows(rows, sz.data_row_bytes + scale_row + zero_row + out_row);

  DequantChunk c{};
  c.format = a.format;
  c.bits = tr.bits;
  c.block_bytes = tr.block_bytes;
  c.cols = cols;
  c.group = tr.ggml ? tr.block : a.group;
  c.groups = sz.groups_per_row;
  c.data_row_bytes = sz.data_row_bytes;
  c.scale_dtype = a.scale_dtype;
  c.out_dtype = out_dtype;

  gpu::DeviceCall call(gpu::cuda_runtime());
  ST_TRY(call.begin());
  void *data = nullptr, *scales = nullptr, *zeros = nullptr, *dout = nullptr;
  ST_TRY(call.alloc(static_cast<size_t>(n * sz.data_row_bytes), &data));
  ST_TRY(call.alloc(static_cast<size_t>(n * scale_row), &scales));
  ST_TRY(call.alloc(static_cast<size_t>(n * zero_row), &zeros));
  ST_TRY(call.alloc(static_cast<size_t>(n * out_row), &dout));
  c.data = static_cast<const uint8_t*>(data);
  c.scales = scales;
  c.zeros = static_cast<const int8_t*>(zeros);
  c.out = dout;

  for (int64_t r0 = 0; r0 < rows; r0 += n) {
    c.rows = std::min(n, rows - r0);
    ST_TRY(call.to_device(data, a.data + r0 * sz.data_row_bytes, static_cast<size_t>(c.rows * sz.data_row_bytes)));
    ST_TRY(call.to_device(scales, static_cast<const uint8_t*>(a.scales) + r0 * scale_row, static_cast<size_t>(c.rows * scale_row)));
    if (zero_row > 0) ST_TRY(call.to_device(zeros, a.zeros + r0 * zero_row, static_cast<size_t>(c.rows * zero_row)));
    const int64_t items = c.rows * c.groups;
    dequantize_kernel<<<grid_for(items), kThreadsPerBlock, 0, call.stream()>>>(c, items, tr.ggml);
    ST_TRY(call.launched("dequantize_kernel"));
    ST_TRY(call.to_host(static_cast<uint8_t*>(out) + r0 * out_row, dout, static_cast<size_t>(c.rows * out_row)));
    ST_TRY(call.sync());
  }
  return Status::Ok();
}

}  // namespace st
