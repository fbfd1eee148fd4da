// CUDA side of the lowrank room (see lowrank_cuda.h): the kernels and the
// entry points. The host side — copies, buffers, cuSOLVER calls and their
// limits, the gesvdj → gesvd fallback — is plain C++ in lowrank_device.cc,
// which the native tests run on a fake device.
//
//   gemm_kernel:   one thread per C element running the fma chain of gemm.h
//                  in k order through 16x16 shared-memory tiles: the same
//                  bits as the CPU kernels. f16/bf16 converted on load with
//                  numeric.h's __host__ __device__ functions.
//   to_f32_kernel: the tall column-major f32 operand cuSOLVER factors
//                  (lrd::tall_elem).
//   factor_kernel: L = U·Σ^½ and R = Σ^½·Vᵀ (row-major, as the CPU returns
//                  them) from cuSOLVER's vectors (lrd::factor_elem).
// cuSOLVER has no seed parameter: the randomized sketch on the GPU is
// cuSOLVER's own, so `seed` applies to the CPU path only.
#include <cuda_runtime.h>

#include <string>

#include "../cuda.h"
#include "lowrank_cuda.h"

namespace st {

namespace {

constexpr int kThreads = 256;

__global__ void gemm_kernel(GemmDev g) {
  __shared__ float as[kGemmTile][kGemmTile + 1];
  __shared__ float bs[kGemmTile][kGemmTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t row = static_cast<int64_t>(blockIdx.y) * kGemmTile + ty;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kGemmTile + tx;
  float acc = (g.accumulate && row < g.m && col < g.n) ? g.c[row * g.ldc + col] : 0.0f;
  for (int64_t p0 = 0; p0 < g.k; p0 += kGemmTile) {
    const int64_t ap = p0 + tx, bp = p0 + ty;
    as[ty][tx] = (row < g.m && ap < g.k) ? lrd::load_f32(g.a, g.at, g.ta ? ap * g.lda + row : row * g.lda + ap) : 0.0f;
    bs[ty][tx] = (bp < g.k && col < g.n) ? lrd::load_f32(g.b, g.bt, g.tb ? col * g.ldb + bp : bp * g.ldb + col) : 0.0f;
    __syncthreads();
    const int64_t steps = g.k - p0 < kGemmTile ? g.k - p0 : kGemmTile;
    for (int q = 0; q < steps; ++q) acc = fmaf(as[ty][q], bs[q][tx], acc);  // the chain, in k order
    __syncthreads();
  }
  if (row < g.m && col < g.n) g.c[row * g.ldc + col] = acc;
}

__global__ void to_f32_kernel(const void* src, DType t, int64_t rows, int64_t cols, bool transpose, float* dst) {
  const int64_t total = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = lrd::tall_elem(src, t, rows, cols, transpose, i);
  }
}

__global__ void factor_kernel(DeviceVectors v, int64_t len, int64_t r, const float* scale, bool as_rows, float* dst) {
  const int64_t total = len * r;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    lrd::factor_elem(v, len, r, scale, as_rows, dst, i);
  }
}

int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < 1 ? 1 : (b > 65535 ? 65535 : b));
}

const LowrankLaunch kLaunch = {
    [](const GemmDev& g, gpu::Stream s) {
      const dim3 grid(static_cast<unsigned>((g.n + kGemmTile - 1) / kGemmTile), static_cast<unsigned>((g.m + kGemmTile - 1) / kGemmTile));
      gemm_kernel<<<grid, dim3(kGemmTile, kGemmTile), 0, s>>>(g);
    },
    [](const void* src, DType t, int64_t rows, int64_t cols, bool transpose, float* dst, gpu::Stream s) {
      to_f32_kernel<<<blocks_for(rows * cols), kThreads, 0, s>>>(src, t, rows, cols, transpose, dst);
    },
    [](DeviceVectors v, int64_t len, int64_t r, const float* scale, bool as_rows, float* dst, gpu::Stream s) {
      factor_kernel<<<blocks_for(len * r), kThreads, 0, s>>>(v, len, r, scale, as_rows, dst);
    },
};

Status solver_ready(const cusolver::Api** api) {
  std::string why;
  if (!cusolver_available(&why, nullptr)) return Status::Error(Code::Unsupported, why);
  *api = cusolver::api(nullptr, nullptr);
  return Status::Ok();
}

}  // namespace

bool cusolver_available(std::string* why, std::string* library) {
  std::string device_why, loader_why;
  const bool device = cuda_available(&device_why);
  const bool loaded = cusolver::api(&loader_why, library) != nullptr;
  if (device && loaded) return true;
  if (why) {
    if (!device && !loaded) *why = device_why + "; and " + loader_why;
    else *why = device ? loader_why : device_why;
  }
  return false;
}

Status cuda_gemm(const GemmArgs& g) {
  std::string why;
  if (!cuda_available(&why)) return Status::Error(Code::Unsupported, why);
  return gemm_on_device(gpu::cuda_runtime(), kLaunch, g);
}

Status cuda_factor(const CudaFactor& a, CudaFactorResult* out) {
  const cusolver::Api* api = nullptr;
  ST_TRY(solver_ready(&api));
  return factor_on_device(gpu::cuda_runtime(), *api, kLaunch, a, out);
}

Status cuda_svd(const MatrixView& a, int64_t k, SvdResult* out) {
  const cusolver::Api* api = nullptr;
  ST_TRY(solver_ready(&api));
  return svd_on_device(gpu::cuda_runtime(), *api, kLaunch, a, k, out);
}

}  // namespace st
