// CUDA entry points of the lowrank room (lowrank.cu with the cuSOLVER
// loader cusolver_loader.cc; stubs in native/core/cuda_stub.cc for builds
// without nvcc), and their host side in plain C++ (lowrank_device.cc),
// which the native tests run on a fake device and a fake cuSOLVER
// (test/native/fake_device.h, lowrank_core_test.cc).
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "../cuda.h"
#include "../device.h"
#include "../numeric.h"
#include "cusolver_loader.h"
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
  bool exact = true;           // the exact SVD ran (asked for, or k too large for Xgesvdr)
  int64_t samples = 0;         // randomized: k + p, the subspace Xgesvdr used
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

// ---- the host side (lowrank_device.cc) and what it shares with the kernels

// gesvdj's parameters. Its defaults are a tolerance of machine epsilon
// (1 ulp of 1 in f32) and 100 sweeps. Computed in f32 over columns of
// length R, the residual the sweeps drive down carries rounding of about
// √R ulps, so on a large tall matrix the default tolerance may never be met
// and all 100 sweeps (about 10x the work of a converged run) end in
// info = min(m,n) + 1. Here the tolerance is that rounding level, which the
// sweeps can reach and which is far below what a low-rank truncation
// changes; and the sweep limit is 30: Jacobi converges quadratically once
// the off-diagonal mass is small (about 10 sweeps for these sizes), so a
// matrix not converged after 30 has stalled, and the QR-based gesvd
// finishes it instead. The README's CUDA section has the arithmetic.
constexpr int kGesvdjMaxSweeps = 30;
inline double gesvdj_tolerance(int64_t rows) {
  const double eps = 1.1920928955078125e-07;  // FLT_EPSILON
  return rows > 1 ? std::sqrt(static_cast<double>(rows)) * eps : eps;
}

// The GEMM kernel's tile: a 16 x 16 thread block per 16 x 16 block of C.
constexpr int64_t kGemmTile = 16;
// Grid limits: blocks of C rows in gridDim.y, of columns in gridDim.x.
constexpr int64_t kGemmMaxRowBlocks = 65535, kGemmMaxColBlocks = 2147483647;

// gemm() on device memory: C (m x n, leading dimension ldc) = or +=
// op(A)·op(B).
struct GemmDev {
  int64_t m, n, k;
  const void* a;
  DType at;
  int64_t lda;
  bool ta;
  const void* b;
  DType bt;
  int64_t ldb;
  bool tb;
  float* c;
  int64_t ldc;
  bool accumulate;
};

// Singular vectors on the device: element (j, c), the j-th entry of vector
// c, is data[j * row_stride + c * col_stride] (column-major vectors with
// leading dimension ld: strides 1 and ld; rows of gesvd's Vᵀ: ld and 1).
struct DeviceVectors {
  const float* data = nullptr;
  int64_t row_stride = 0, col_stride = 0;
};

namespace lrd {

ST_HD float load_f32(const void* p, DType t, int64_t i) {
  if (t == DType::F32) return static_cast<const float*>(p)[i];
  const uint16_t h = static_cast<const uint16_t*>(p)[i];
  return t == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

// Element i of the column-major f32 copy (rows x cols) of a row-major
// source: the same memory read as f32 (transpose false) or its transpose
// (source cols x rows).
ST_HD float tall_elem(const void* src, DType t, int64_t rows, int64_t cols, bool transpose, int64_t i) {
  if (!transpose) return load_f32(src, t, i);
  const int64_t r = i % rows, c = i / rows;
  return load_f32(src, t, r * cols + c);
}

// Element i (j = i % len, c = i / len) of a factor: entry j of vector c
// times scale[c], stored row-major as rows of dst (dst[c*len + j], for R)
// or as its columns (dst[j*r + c], for L).
ST_HD void factor_elem(DeviceVectors v, int64_t len, int64_t r, const float* scale, bool as_rows, float* dst, int64_t i) {
  const int64_t j = i % len, c = i / len;
  const float x = v.data[j * v.row_stride + c * v.col_stride] * scale[c];
  if (as_rows) dst[c * len + j] = x;
  else dst[j * r + c] = x;
}

}  // namespace lrd

// The kernels (lowrank.cu), each queued on the stream over all elements.
struct LowrankLaunch {
  void (*gemm)(const GemmDev& g, gpu::Stream s);
  // dst (rows x cols, column-major f32): lrd::tall_elem for every element.
  void (*to_f32)(const void* src, DType t, int64_t rows, int64_t cols, bool transpose, float* dst, gpu::Stream s);
  // dst (len x r or r x len, row-major): lrd::factor_elem for every element.
  void (*factor)(DeviceVectors v, int64_t len, int64_t r, const float* scale, bool as_rows, float* dst, gpu::Stream s);
};

// cuda_gemm's host side: A and B as stored, C packed (n floats per row) on
// the device and copied row by row between it and the host's ldc-strided
// rows (the host's gaps between rows are never touched).
Status gemm_on_device(const gpu::Runtime& rt, const LowrankLaunch& launch, const GemmArgs& g);

// cuda_factor's and cuda_svd's host side: the SVD by cuSOLVER (see
// lowrank_device.cc for the buffers and limits), then the factors.
Status factor_on_device(const gpu::Runtime& rt, const cusolver::Api& api, const LowrankLaunch& launch, const CudaFactor& a,
                        CudaFactorResult* out);
Status svd_on_device(const gpu::Runtime& rt, const cusolver::Api& api, const LowrankLaunch& launch, const MatrixView& a,
                     int64_t k, SvdResult* out);

}  // namespace st
