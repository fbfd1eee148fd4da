// CUDA kernels of the runtime room: the activation blocks and the matmul of
// every stored format except 2:4, on the per-block arithmetic of
// model_math.h (mm::quantize_act_block, mm::isum_*, mm::values_*,
// mm::ct_code), the functions the CPU reference runs. One warp per output
// (row, token): its lanes take blocks in turn, then a shuffle reduction.
// The host side copies the weight, the activations and the output in one
// DeviceCall (one stream); compiled by the CUDA check, run only where a GPU
// is present.
#include <cuda_runtime.h>

#include "../device.h"
#include "matmul.h"
#include "model_cuda.h"
#include "model_math.h"

namespace st {
namespace model {

namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 4;

__global__ void quantize_act_kernel(const float* x, int64_t blocks, int8_t* q, float* d, float* s) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= blocks) return;
  mm::quantize_act_block(x + b * mm::QK, q + b * mm::QK, d + b, s + b);
}

__device__ float warp_sum(float v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

struct DevWeight {
  WFormat format;
  int64_t rows, cols, row_bytes, group;
  const uint8_t* data;
  const void* scales;
  DType scale_dtype;
  const int8_t* zeros;
};

// One term of a q8 dot product: block b of row `row` against token t's block.
__device__ float q8_block(const DevWeight& w, const uint8_t* row, int64_t r, int64_t b, const int8_t* xq, float xd, float xs) {
  switch (w.format) {
    case WFormat::Q4_0: {
      const uint8_t* blk = row + b * 18;
      return (f16_to_f32(mm::load_u16(blk)) * xd) * static_cast<float>(mm::isum_q4_0(blk, xq));
    }
    case WFormat::Q4_1: {
      const uint8_t* blk = row + b * 20;
      return (f16_to_f32(mm::load_u16(blk)) * xd) * static_cast<float>(mm::isum_q4_1(blk, xq)) + f16_to_f32(mm::load_u16(blk + 2)) * xs;
    }
    case WFormat::Q8_0: {
      const uint8_t* blk = row + b * 34;
      return (f16_to_f32(mm::load_u16(blk)) * xd) * static_cast<float>(mm::isum_q8_0(blk, xq));
    }
    default: {  // Int4 / Int8, groups a multiple of 32
      const int bits = w.format == WFormat::Int4 ? 4 : 8;
      const int64_t ng = w.cols / w.group, g = (b * mm::QK) / w.group;
      const float s = mm::load_scale(w.scales, r * ng + g, w.scale_dtype);
      const int z = w.zeros ? w.zeros[r * ng + g] : 0;
      return (s * xd) * static_cast<float>(mm::isum_ct(row, b * mm::QK, bits, z, xq));
    }
  }
}

__global__ void q8_kernel(DevWeight w, int64_t n, const int8_t* xq, const float* xd, const float* xs, float* y) {
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (item >= w.rows * n) return;
  const int64_t t = item / w.rows, r = item % w.rows, nb = w.cols / mm::QK;
  const uint8_t* row = w.data + r * w.row_bytes;
  float acc = 0.0f;
  for (int64_t b = lane; b < nb; b += kWarp) acc += q8_block(w, row, r, b, xq + t * w.cols + b * mm::QK, xd[t * nb + b], xs[t * nb + b]);
  acc = warp_sum(acc);
  if (lane == 0) y[t * w.rows + r] = acc;
}

// f32 activations: the weight's values as floats (dequantized here), fma.
__device__ float value_at(const DevWeight& w, const uint8_t* row, int64_t r, int64_t k) {
  switch (w.format) {
    case WFormat::F32: return mm::float_at(row, k, DType::F32);
    case WFormat::F16: return mm::float_at(row, k, DType::F16);
    case WFormat::BF16: return mm::float_at(row, k, DType::BF16);
    case WFormat::Q4_0: {
      const uint8_t* blk = row + (k / mm::QK) * 18;
      return static_cast<float>(mm::q4_nibble(blk + 2, static_cast<int>(k % mm::QK)) - 8) * f16_to_f32(mm::load_u16(blk));
    }
    case WFormat::Q4_1: {
      const uint8_t* blk = row + (k / mm::QK) * 20;
      return static_cast<float>(mm::q4_nibble(blk + 4, static_cast<int>(k % mm::QK))) * f16_to_f32(mm::load_u16(blk)) + f16_to_f32(mm::load_u16(blk + 2));
    }
    case WFormat::Q8_0: {
      const uint8_t* blk = row + (k / mm::QK) * 34;
      return static_cast<float>(static_cast<int8_t>(blk[2 + k % mm::QK])) * f16_to_f32(mm::load_u16(blk));
    }
    default: {
      const int bits = w.format == WFormat::Int4 ? 4 : 8;
      const int64_t ng = w.cols / w.group, g = k / w.group;
      const int z = w.zeros ? w.zeros[r * ng + g] : 0;
      return static_cast<float>(mm::ct_code(row, k, bits) - z) * mm::load_scale(w.scales, r * ng + g, w.scale_dtype);
    }
  }
}

__global__ void f32_kernel(DevWeight w, int64_t n, const float* x, float* y) {
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (item >= w.rows * n) return;
  const int64_t t = item / w.rows, r = item % w.rows;
  const uint8_t* row = w.data + r * w.row_bytes;
  float acc = 0.0f;
  for (int64_t k = lane; k < w.cols; k += kWarp) acc = fmaf(value_at(w, row, r, k), x[t * w.cols + k], acc);
  acc = warp_sum(acc);
  if (lane == 0) y[t * w.rows + r] = acc;
}

unsigned int grid_for(int64_t items, int64_t per_block) { return static_cast<unsigned int>((items + per_block - 1) / per_block); }

}  // namespace

Status cuda_linear(const Weight& w, const float* x, int64_t n, ActMode act, float* y) {
  if (w.format == WFormat::Sparse24) return Status::Error(Code::Unsupported, "2:4 weights have no CUDA kernel in the runtime; use the CPU ('auto')");
  ST_TRY(gpu::device_ready());
  gpu::DeviceCall call(gpu::cuda_runtime());
  ST_TRY(call.begin());
  const int64_t groups = w.group > 0 ? w.rows * (w.cols / w.group) : 0;
  void *data = nullptr, *scales = nullptr, *zeros = nullptr, *dx = nullptr, *dy = nullptr;
  ST_TRY(call.alloc(static_cast<size_t>(w.rows * w.row_bytes), &data));
  ST_TRY(call.to_device(data, w.data, static_cast<size_t>(w.rows * w.row_bytes)));
  if (w.scales) {
    ST_TRY(call.alloc(static_cast<size_t>(groups) * dtype_size(w.scale_dtype), &scales));
    ST_TRY(call.to_device(scales, w.scales, static_cast<size_t>(groups) * dtype_size(w.scale_dtype)));
  }
  if (w.zeros) {
    ST_TRY(call.alloc(static_cast<size_t>(groups), &zeros));
    ST_TRY(call.to_device(zeros, w.zeros, static_cast<size_t>(groups)));
  }
  ST_TRY(call.alloc(static_cast<size_t>(n * w.cols) * sizeof(float), &dx));
  ST_TRY(call.to_device(dx, x, static_cast<size_t>(n * w.cols) * sizeof(float)));
  ST_TRY(call.alloc(static_cast<size_t>(n * w.rows) * sizeof(float), &dy));
  const DevWeight dw{w.format, w.rows, w.cols, w.row_bytes, w.group, static_cast<const uint8_t*>(data), scales, w.scale_dtype, static_cast<const int8_t*>(zeros)};
  const int64_t items = w.rows * n;
  if (act == ActMode::Auto && q8_layout_ok(w)) {
    const int64_t blocks = n * w.cols / mm::QK;
    void *q = nullptr, *d = nullptr, *s = nullptr;
    ST_TRY(call.alloc(static_cast<size_t>(n * w.cols), &q));
    ST_TRY(call.alloc(static_cast<size_t>(blocks) * sizeof(float), &d));
    ST_TRY(call.alloc(static_cast<size_t>(blocks) * sizeof(float), &s));
    quantize_act_kernel<<<grid_for(blocks, 128), 128, 0, call.stream()>>>(static_cast<const float*>(dx), blocks, static_cast<int8_t*>(q), static_cast<float*>(d), static_cast<float*>(s));
    ST_TRY(call.launched("quantize_act_kernel"));
    q8_kernel<<<grid_for(items, kWarpsPerBlock), kWarpsPerBlock * kWarp, 0, call.stream()>>>(dw, n, static_cast<const int8_t*>(q), static_cast<const float*>(d),
                                                                                         static_cast<const float*>(s), static_cast<float*>(dy));
    ST_TRY(call.launched("q8_kernel"));
  } else {
    f32_kernel<<<grid_for(items, kWarpsPerBlock), kWarpsPerBlock * kWarp, 0, call.stream()>>>(dw, n, static_cast<const float*>(dx), static_cast<float*>(dy));
    ST_TRY(call.launched("f32_kernel"));
  }
  ST_TRY(call.to_host(y, dy, static_cast<size_t>(n * w.rows) * sizeof(float)));
  return call.sync();
}

}  // namespace model
}  // namespace st
