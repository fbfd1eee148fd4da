// The CUDA backend's presence in a build made with nvcc (npm run build:cuda).
// The runtime is linked statically; it loads the driver (libcuda) on first
// use, so on a machine without a driver or GPU these calls return an error
// code, which is reported, never thrown.
#include <cuda_runtime.h>

#include <string>

#include "cuda.h"
#include "device.h"

#ifndef ST_CUDA_MIN_CC
#define ST_CUDA_MIN_CC 0  // unknown: set by CMakeLists.txt from CMAKE_CUDA_ARCHITECTURES
#endif

namespace st {

namespace {

std::string cuda_error(const char* call, cudaError_t e) {
  return std::string(call) + " failed: " + cudaGetErrorString(e) + " (" + cudaGetErrorName(e) + ")";
}

}  // namespace

bool cuda_compiled() { return true; }

// The values device.h's host logic uses, as the runtime defines them.
static_assert(gpu::kSuccess == cudaSuccess && gpu::kErrorMemoryAllocation == cudaErrorMemoryAllocation &&
                  gpu::kErrorInsufficientDriver == cudaErrorInsufficientDriver && gpu::kErrorNoDevice == cudaErrorNoDevice &&
                  gpu::kErrorNoKernelImageForDevice == cudaErrorNoKernelImageForDevice,
              "cudaError_t values");
static_assert(static_cast<int>(gpu::Copy::HostToDevice) == cudaMemcpyHostToDevice &&
                  static_cast<int>(gpu::Copy::DeviceToHost) == cudaMemcpyDeviceToHost,
              "cudaMemcpyKind values");

const gpu::Runtime& gpu::cuda_runtime() {
  static const Runtime rt = {
      [](void** p, size_t bytes) -> int { return cudaMalloc(p, bytes); },
      [](void* p) -> int { return cudaFree(p); },
      [](Stream* s) -> int { return cudaStreamCreateWithFlags(s, cudaStreamNonBlocking); },
      [](Stream s) -> int { return cudaStreamDestroy(s); },
      [](Stream s) -> int { return cudaStreamSynchronize(s); },
      [](void* dst, const void* src, size_t bytes, Copy kind, Stream s) -> int {
        return cudaMemcpyAsync(dst, src, bytes, static_cast<cudaMemcpyKind>(kind), s);
      },
      [](void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height, Copy kind, Stream s) -> int {
        return cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, static_cast<cudaMemcpyKind>(kind), s);
      },
      [](void* p, int value, size_t bytes, Stream s) -> int { return cudaMemsetAsync(p, value, bytes, s); },
      []() -> int { return cudaGetLastError(); },
      [](int e) { return cudaGetErrorName(static_cast<cudaError_t>(e)); },
      [](int e) { return cudaGetErrorString(static_cast<cudaError_t>(e)); },
  };
  return rt;
}

bool cuda_available(std::string* why) {
  std::string reason;
  int count = 0, dev = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e == cudaErrorInsufficientDriver) {
    reason = cuda_error("cudaGetDeviceCount", e) + ": no NVIDIA driver is loaded, or it is older than the CUDA " +
             std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10) +
             " runtime this addon was built with";
  } else if (e != cudaSuccess) {
    reason = cuda_error("cudaGetDeviceCount", e);
  } else if (count == 0) {
    reason = "no CUDA device found";
  } else if ((e = cudaGetDevice(&dev)) != cudaSuccess) {
    reason = cuda_error("cudaGetDevice", e);
  } else {
    cudaDeviceProp p;
    if ((e = cudaGetDeviceProperties(&p, dev)) != cudaSuccess) {
      reason = cuda_error("cudaGetDeviceProperties", e);
    } else if (p.major * 10 + p.minor < ST_CUDA_MIN_CC) {
      reason = "CUDA device " + std::to_string(dev) + " (" + p.name + ") has compute capability " +
               std::to_string(p.major) + "." + std::to_string(p.minor) + "; this build has kernels for " +
               std::to_string(ST_CUDA_MIN_CC / 10) + "." + std::to_string(ST_CUDA_MIN_CC % 10) + " and newer";
    } else {
      return true;
    }
  }
  // These failures are not sticky; clear the runtime's last-error slot so a
  // later cudaGetLastError() does not report them again.
  (void)cudaGetLastError();
  if (why) *why = reason;
  return false;
}

}  // namespace st
