// CUDA entry points of the lowrank room (lowrank.cu with the cuSOLVER
// loader cusolver_loader.cc; stubs in native/core/cuda_stub.cc for builds
// without nvcc).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "../cuda.h"
#include "gemm.h"
#include "lowrank.h"

namespace st {

// gemm() on the device: the same fma chain per element (bit-identical to
// the CPU kernels). ERR_UNSUPPORTED when no device is usable.
Status cuda_gemm(const GemmArgs& g);

// Whether the GPU SVD can run: a usable device and libcusolver loaded with
// dlopen (its few entry points resolved). *why says what is missing;
// *library names the file that was loaded.
bool cusolver_available(std::string* why, std::string* library);

struct CudaFactor {
  MatrixView x;                // host memory, m x n, f32/f16/bf16 (converted on the device)
  bool exact = true;           // gesvdj; else Xgesvdr with rank k
  int64_t k = 0;
  int64_t oversample = 10, power_iters = 2;
  // Picks the rank from the singular values (descending), or -1 for "more
  // are needed" (randomized only).
  std::function<int64_t(const std::vector<double>&)> choose;
};

struct CudaFactorResult {
  bool retry = false;          // choose() asked for a larger k
  int64_t rank = 0;
  std::vector<double> sigma;
  std::vector<float> left;     // m x rank, U·Σ^½
  std::vector<float> right;    // rank x n, Σ^½·Vᵀ
};

// Factor on the device: SVD by cuSOLVER, then L and R formed by a CUDA
// kernel.
Status cuda_factor(const CudaFactor& a, CudaFactorResult* out);

// exact_svd() on the device (gesvdj): the top k triplets.
Status cuda_svd(const MatrixView& a, int64_t k, SvdResult* out);

}  // namespace st
