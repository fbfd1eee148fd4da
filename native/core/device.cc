// One device call's resources and errors (see device.h).
#include "device.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "cuda.h"

namespace st {
namespace gpu {

Status runtime_status(const Runtime& rt, const char* call, int e) {
  const bool unusable = e == kErrorNoDevice || e == kErrorInsufficientDriver || e == kErrorNoKernelImageForDevice ||
                        e == kErrorMemoryAllocation;
  return Status::Error(unusable ? Code::Unsupported : Code::Internal,
                       std::string("CUDA: ") + call + " failed: " + rt.error_string(e) + " (" + rt.error_name(e) + ")");
}

Status solver_status(const char* call, int status) {
  // cusolverStatus_t: 1 NOT_INITIALIZED, 2 ALLOC_FAILED, 4 ARCH_MISMATCH.
  const bool unusable = status == 1 || status == 2 || status == 4;
  const char* what = status == 1 ? " (NOT_INITIALIZED)" : status == 2 ? " (ALLOC_FAILED: out of device memory)"
                     : status == 3 ? " (INVALID_VALUE)" : status == 4 ? " (ARCH_MISMATCH)"
                     : status == 6 ? " (EXECUTION_FAILED)" : status == 7 ? " (INTERNAL_ERROR)" : "";
  return Status::Error(unusable ? Code::Unsupported : Code::Internal,
                       std::string("cuSOLVER: ") + call + " failed with status " + std::to_string(status) + what);
}

DeviceCall::~DeviceCall() {
  // Explicit order: the queued work finishes, then its memory goes.
  drain();
  bool failed = false;
  for (auto it = buffers_.rbegin(); it != buffers_.rend(); ++it) failed |= rt_.free(*it) != kSuccess;
  if (has_stream_) failed |= rt_.stream_destroy(stream_) != kSuccess;
  if (failed) (void)rt_.get_last_error();
}

Status DeviceCall::begin() {
  if (has_stream_) return Status::Ok();
  Status st = check("cudaStreamCreateWithFlags", rt_.stream_create(&stream_));
  has_stream_ = st.ok();
  return st;
}

Status DeviceCall::check(const char* what, int e) {
  if (e == kSuccess) return Status::Ok();
  (void)rt_.get_last_error();  // the failure's copy in the last-error slot
  return runtime_status(rt_, what, e);
}

Status DeviceCall::solver_failed(const char* what, int status) {
  (void)rt_.get_last_error();  // a runtime call inside cuSOLVER may have failed too
  return solver_status(what, status);
}

Status DeviceCall::alloc(size_t bytes, void** out) {
  *out = nullptr;
  if (bytes == 0) return Status::Ok();
  buffers_.reserve(buffers_.size() + 1);  // so the push_back below cannot throw
  void* p = nullptr;
  Status st = check("cudaMalloc", rt_.malloc(&p, bytes));
  if (!st.ok()) return st;
  buffers_.push_back(p);
  *out = p;
  return Status::Ok();
}

Status DeviceCall::release(void* p) {
  if (!p) return Status::Ok();
  auto it = std::find(buffers_.begin(), buffers_.end(), p);
  if (it == buffers_.end()) return Status::Error(Code::Internal, "DeviceCall::release: not an allocation of this call");
  Status st = sync();
  if (!st.ok()) return st;  // the destructor frees it after draining
  buffers_.erase(it);
  return check("cudaFree", rt_.free(p));
}

Status DeviceCall::to_device(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return Status::Ok();
  return check("cudaMemcpyAsync (to the device)", rt_.memcpy_async(dst, src, bytes, Copy::HostToDevice, stream_));
}

Status DeviceCall::to_host(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return Status::Ok();
  return check("cudaMemcpyAsync (to the host)", rt_.memcpy_async(dst, src, bytes, Copy::DeviceToHost, stream_));
}

Status DeviceCall::to_device_2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height) {
  if (width == 0 || height == 0) return Status::Ok();
  return check("cudaMemcpy2DAsync (to the device)",
               rt_.memcpy2d_async(dst, dpitch, src, spitch, width, height, Copy::HostToDevice, stream_));
}

Status DeviceCall::to_host_2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height) {
  if (width == 0 || height == 0) return Status::Ok();
  return check("cudaMemcpy2DAsync (to the host)",
               rt_.memcpy2d_async(dst, dpitch, src, spitch, width, height, Copy::DeviceToHost, stream_));
}

Status DeviceCall::fill(void* dst, int byte, size_t bytes) {
  if (bytes == 0) return Status::Ok();
  return check("cudaMemsetAsync", rt_.memset_async(dst, byte, bytes, stream_));
}

Status DeviceCall::sync() {
  if (!has_stream_) return Status::Ok();
  return check("cudaStreamSynchronize", rt_.stream_synchronize(stream_));
}

void DeviceCall::drain() {
  if (has_stream_ && rt_.stream_synchronize(stream_) != kSuccess) (void)rt_.get_last_error();
}

int64_t chunk_rows(int64_t rows, int64_t row_bytes) {
  int64_t budget = int64_t{256} << 20;
  if (const char* env = std::getenv("SLIMTENSOR_CUDA_CHUNK_BYTES")) {
    const long long v = std::atoll(env);
    if (v > 0) budget = v;
  }
  return std::max<int64_t>(1, std::min<int64_t>(rows, budget / std::max<int64_t>(1, row_bytes)));
}

Status device_ready() {
  std::string why;
  if (!cuda_available(&why)) return Status::Error(Code::Unsupported, "the CUDA kernel is not usable: " + why);
  return Status::Ok();
}

}  // namespace gpu
}  // namespace st
