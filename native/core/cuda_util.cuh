// Host-side helpers the CUDA rooms share: CUDA errors as Status, and an
// owner for device allocations. Included by .cu files only.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "cuda.h"
#include "tensor.h"

namespace st {

// A device that cannot run this binary (none, an old driver, no kernel image
// for it, out of memory) is a missing backend, ERR_UNSUPPORTED; anything
// else is a bug.
inline Status cuda_status(const char* call, cudaError_t e) {
  const bool unusable = e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver ||
                        e == cudaErrorNoKernelImageForDevice || e == cudaErrorMemoryAllocation;
  return Status::Error(unusable ? Code::Unsupported : Code::Internal,
                       std::string("CUDA: ") + call + " failed: " + cudaGetErrorString(e) + " (" + cudaGetErrorName(e) + ")");
}

#define ST_CUDA_CHECK(call)                                                   \
  do {                                                                        \
    const cudaError_t st_cuda_err_ = (call);                                  \
    if (st_cuda_err_ != cudaSuccess) return ::st::cuda_status(#call, st_cuda_err_); \
  } while (0)

// Owns one device allocation.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (p_) cudaFree(p_);
  }
  Status alloc(size_t bytes) {
    if (bytes == 0) return Status::Ok();
    ST_CUDA_CHECK(cudaMalloc(&p_, bytes));
    return Status::Ok();
  }
  template <class T>
  T* get() const { return static_cast<T*>(p_); }

 private:
  void* p_ = nullptr;
};

// ERR_UNSUPPORTED with the reason when no device can run the kernels.
inline Status device_ready() {
  std::string why;
  if (!cuda_available(&why)) return Status::Error(Code::Unsupported, "the CUDA kernel is not usable: " + why);
  return Status::Ok();
}

// Rows per chunk of a row-wise kernel: as many as fit in 256 MiB of device
// memory (SLIMTENSOR_CUDA_CHUNK_BYTES overrides it, e.g. for tests that want
// many chunks), at least one.
inline int64_t chunk_rows(int64_t rows, int64_t row_bytes) {
  int64_t budget = int64_t{256} << 20;
  if (const char* env = std::getenv("SLIMTENSOR_CUDA_CHUNK_BYTES")) {
    const long long v = std::atoll(env);
    if (v > 0) budget = v;
  }
  return std::max<int64_t>(1, std::min<int64_t>(rows, budget / std::max<int64_t>(1, row_bytes)));
}

}  // namespace st
