// The host side of every CUDA entry point, in plain C++: the few CUDA
// runtime calls it makes, as a table of function pointers (gpu::Runtime),
// and one device call's resources (gpu::DeviceCall): its stream, its
// allocations and its errors.
//
// cuda_runtime.cu fills the table with the real runtime (cuda_runtime());
// the native tests fill it with a fake that keeps "device" memory on the
// host, records calls and injects failures (test/native/fake_device.h), so
// the order of copies, the sizes of buffers and the error handling of the
// CUDA rooms run under the sanitizers on machines without a GPU.
//
// Ordering is explicit. A DeviceCall owns one stream (non-blocking: it does
// not wait for the legacy default stream, nor does anything else wait for
// it); copies, kernels and cuSOLVER (cusolverDnSetStream) all go on it.
// Host memory is read only after a stream synchronisation, and device
// memory is freed only after one (never relying on cudaFree's implicit
// synchronisation).
//
// Errors. A runtime call that fails also records its error in the calling
// thread's "last error" slot, where the next launch check
// (cudaGetLastError) would find it and report a stale error in an unrelated
// later call on the same libuv worker. Every failure path here clears the
// slot. Sticky errors (an illegal address) cannot be cleared: they keep
// failing every call, which is what they should do.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "tensor.h"

struct CUstream_st;  // the runtime's stream type (cudaStream_t is CUstream_st*)

// Returns the Status of `expr` from the calling function unless it is OK.
#define ST_TRY(expr)                       \
  do {                                     \
    ::st::Status st_try_ = (expr);         \
    if (!st_try_.ok()) return st_try_;     \
  } while (0)

namespace st {
namespace gpu {

using Stream = CUstream_st*;

// cudaError_t values the host logic distinguishes (cuda_runtime.cu checks
// them against the runtime's header).
constexpr int kSuccess = 0;
constexpr int kErrorMemoryAllocation = 2;
constexpr int kErrorInsufficientDriver = 35;
constexpr int kErrorNoDevice = 100;
constexpr int kErrorNoKernelImageForDevice = 209;

// cudaMemcpyKind values.
enum class Copy : int { HostToDevice = 1, DeviceToHost = 2 };

struct Runtime {
  int (*malloc)(void** p, size_t bytes);
  int (*free)(void* p);
  int (*stream_create)(Stream* s);  // non-blocking
  int (*stream_destroy)(Stream s);
  int (*stream_synchronize)(Stream s);
  int (*memcpy_async)(void* dst, const void* src, size_t bytes, Copy kind, Stream s);
  // `height` rows of `width` bytes, rows `dpitch` / `spitch` bytes apart.
  int (*memcpy2d_async)(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height, Copy kind,
                        Stream s);
  int (*memset_async)(void* p, int value, size_t bytes, Stream s);
  int (*get_last_error)();  // returns and clears the thread's last error
  const char* (*error_name)(int e);
  const char* (*error_string)(int e);
};

// The real runtime (cuda_runtime.cu; only in builds with CUDA kernels).
const Runtime& cuda_runtime();

// A failed runtime call as a Status: a device that cannot run this binary
// (none, an old driver, no kernel image for it) or out of memory is a
// missing backend, ERR_UNSUPPORTED (the caller may fall back to the CPU);
// anything else is a bug, ERR_INTERNAL.
Status runtime_status(const Runtime& rt, const char* call, int e);

// A failed cuSOLVER call: out of memory (CUSOLVER_STATUS_ALLOC_FAILED), no
// usable device (NOT_INITIALIZED) or an architecture it does not support
// (ARCH_MISMATCH) are ERR_UNSUPPORTED, as for the runtime; others
// ERR_INTERNAL.
Status solver_status(const char* call, int status);

// One call's device work: create with the runtime, begin(), then allocate,
// copy, launch and synchronise through it. The destructor synchronises the
// stream, frees every allocation, destroys the stream and clears any error
// those left behind.
class DeviceCall {
 public:
  explicit DeviceCall(const Runtime& rt) : rt_(rt) {}
  DeviceCall(const DeviceCall&) = delete;
  DeviceCall& operator=(const DeviceCall&) = delete;
  ~DeviceCall();

  // Creates the stream.
  Status begin();
  Stream stream() const { return stream_; }
  const Runtime& runtime() const { return rt_; }

  // OK, or the status of a failed call `what` (the last-error slot cleared).
  Status check(const char* what, int e);
  // A failed cuSOLVER call (which may have left a runtime error behind).
  Status solver_failed(const char* what, int status);
  // After a kernel launch: the launch error, if any.
  Status launched(const char* kernel) { return check(kernel, rt_.get_last_error()); }

  // A device allocation of `bytes` (null for 0 bytes: kernels test optional
  // buffers for null), freed by the destructor or by release().
  Status alloc(size_t bytes, void** out);
  template <class T>
  Status alloc(size_t count, T** out) {
    void* p = nullptr;
    Status st = alloc(count * sizeof(T), &p);
    *out = static_cast<T*>(p);
    return st;
  }
  // Frees one allocation now, after the work queued on the stream (which may
  // still use it) has finished.
  Status release(void* p);

  Status to_device(void* dst, const void* src, size_t bytes);
  Status to_host(void* dst, const void* src, size_t bytes);
  // Rows of `width` bytes between differently pitched host and device memory.
  Status to_device_2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height);
  Status to_host_2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height);
  Status fill(void* dst, int byte, size_t bytes);
  // Waits for everything queued: host memory written by to_host*() may be
  // read after it returns OK; it also reports errors of kernels that ran.
  Status sync();
  // sync() for error paths and teardown: failures are dropped (and cleared).
  void drain();

 private:
  const Runtime& rt_;
  Stream stream_ = nullptr;
  bool has_stream_ = false;
  std::vector<void*> buffers_;
};

// Rows per chunk of a row-wise kernel: as many as fit in 256 MiB of device
// memory (SLIMTENSOR_CUDA_CHUNK_BYTES overrides it, e.g. for tests that want
// many chunks), at least one.
int64_t chunk_rows(int64_t rows, int64_t row_bytes);

// ERR_UNSUPPORTED with the reason when no device can run the kernels.
Status device_ready();

}  // namespace gpu
}  // namespace st
