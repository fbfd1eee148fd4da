// A fake CUDA runtime for the native tests (st::gpu::Runtime, device.h), so
// the host side of the CUDA rooms runs under ASan/UBSan without a GPU.
//
// - "Device" memory is host memory from malloc, filled with a poison byte
//   (0xA5) as uninitialised device memory would be garbage: a result that
//   was never written on the "device" shows up, and ASan catches accesses
//   past an allocation.
// - The stream is a queue. Copies to the device take their source at the
//   call (as the runtime stages pageable memory) and land when the queue
//   runs; copies to the host, memsets, kernels (fake launchers call
//   launch()) and fake cuSOLVER work (enqueue()) run only at a stream
//   synchronisation. Host code that reads results before synchronising
//   reads stale memory, and the tests see it.
// - Contracts are checked and breaches recorded in `violations`: copies
//   outside an allocation or between two host buffers, frees of unknown
//   pointers or while work is queued (the ordering must be explicit), work
//   on a destroyed stream.
// - Failures can be injected: the n-th cudaMalloc fails with out of memory,
//   the n-th launch fails, both leaving the error in the last-error slot
//   (`pending`) as the runtime does, until get_last_error() clears it.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "device.h"

namespace fake {

using st::gpu::Copy;
using st::gpu::Stream;

constexpr int kLaunchFailure = 98;  // cudaErrorInvalidDeviceFunction: any launch error will do

struct Device {
  // Configuration (reset() restores these).
  int fail_malloc_at = -1;  // index of the cudaMalloc call that fails
  int fail_launch_at = -1;  // index of the launch that fails

  // Observation.
  int mallocs = 0, frees = 0, launches = 0, syncs = 0, streams_created = 0, streams_destroyed = 0;
  int pending = 0;  // the last-error slot
  std::vector<std::string> violations;
  // Copies to the host in the order they were queued: (device address, bytes).
  std::vector<std::pair<const void*, size_t>> to_host;

  std::map<uintptr_t, size_t> allocs;  // base -> bytes
  std::vector<std::function<void()>> queue;
  bool stream_live = false;
  int stream_token = 0;

  Stream stream() { return reinterpret_cast<Stream>(&stream_token); }

  // The bytes from p to the end of its allocation; 0 when p is not in one.
  size_t extent(const void* p) const {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    auto it = allocs.upper_bound(a);
    if (it == allocs.begin()) return 0;
    --it;
    return a < it->first + it->second ? it->first + it->second - a : 0;
  }
  bool on_device(const void* p) const { return extent(p) > 0; }
  void violation(const std::string& what) { violations.push_back(what); }
  void need_device(const void* p, size_t bytes, const char* what) {
    if (bytes > 0 && extent(p) < bytes) violation(std::string(what) + ": " + std::to_string(bytes) + " bytes outside a device allocation");
  }
  void need_host(const void* p, size_t bytes, const char* what) {
    if (bytes > 0 && on_device(p)) violation(std::string(what) + ": device memory where host memory is expected");
  }
  void need_stream(Stream s, const char* what) {
    if (!stream_live || s != stream()) violation(std::string(what) + ": not the call's live stream");
  }

  void enqueue(std::function<void()> op) { queue.push_back(std::move(op)); }
  // A fake kernel launch: queued, or (the fail_launch_at-th) refused.
  void launch(Stream s, std::function<void()> op) {
    need_stream(s, "launch");
    if (launches++ == fail_launch_at) {
      pending = kLaunchFailure;
      return;
    }
    enqueue(std::move(op));
  }
  void run_queue() {
    std::vector<std::function<void()>> q;
    q.swap(queue);
    for (auto& op : q) op();
  }

  // Between tests: everything freed, no stream left, defaults restored.
  void reset() {
    if (!allocs.empty()) violation(std::to_string(allocs.size()) + " device allocations never freed");
    if (stream_live) violation("a stream never destroyed");
    for (auto& a : allocs) std::free(reinterpret_cast<void*>(a.first));
    *this = Device();
  }
};

inline Device& device() {
  static Device d;
  return d;
}

inline const st::gpu::Runtime& runtime() {
  static const st::gpu::Runtime rt = {
      [](void** p, size_t bytes) -> int {
        Device& d = device();
        *p = nullptr;
        if (d.mallocs++ == d.fail_malloc_at) return d.pending = st::gpu::kErrorMemoryAllocation;
        void* m = std::malloc(bytes);
        std::memset(m, 0xA5, bytes);
        d.allocs[reinterpret_cast<uintptr_t>(m)] = bytes;
        *p = m;
        return 0;
      },
      [](void* p) -> int {
        Device& d = device();
        ++d.frees;
        auto it = d.allocs.find(reinterpret_cast<uintptr_t>(p));
        if (it == d.allocs.end()) {
          d.violation("cudaFree of a pointer that is not an allocation");
          return d.pending = 1;  // cudaErrorInvalidValue
        }
        if (!d.queue.empty()) d.violation("cudaFree while work is queued on the stream (no synchronisation before it)");
        d.allocs.erase(it);
        std::free(p);
        return 0;
      },
      [](Stream* s) -> int {
        Device& d = device();
        if (d.stream_live) d.violation("a second stream while one is live");
        d.stream_live = true;
        ++d.streams_created;
        *s = d.stream();
        return 0;
      },
      [](Stream s) -> int {
        Device& d = device();
        d.need_stream(s, "cudaStreamDestroy");
        if (!d.queue.empty()) d.violation("cudaStreamDestroy with work queued");
        d.stream_live = false;
        ++d.streams_destroyed;
        return 0;
      },
      [](Stream s) -> int {
        Device& d = device();
        d.need_stream(s, "cudaStreamSynchronize");
        ++d.syncs;
        d.run_queue();
        return 0;
      },
      [](void* dst, const void* src, size_t bytes, Copy kind, Stream s) -> int {
        Device& d = device();
        d.need_stream(s, "cudaMemcpyAsync");
        if (kind == Copy::HostToDevice) {
          d.need_device(dst, bytes, "cudaMemcpyAsync to the device: destination");
          d.need_host(src, bytes, "cudaMemcpyAsync to the device: source");
          auto staged = std::make_shared<std::vector<uint8_t>>(static_cast<const uint8_t*>(src), static_cast<const uint8_t*>(src) + bytes);
          d.enqueue([dst, staged] { std::memcpy(dst, staged->data(), staged->size()); });
        } else {
          d.need_device(src, bytes, "cudaMemcpyAsync to the host: source");
          d.need_host(dst, bytes, "cudaMemcpyAsync to the host: destination");
          d.to_host.emplace_back(src, bytes);
          d.enqueue([dst, src, bytes] { std::memcpy(dst, src, bytes); });
        }
        return 0;
      },
      [](void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height, Copy kind, Stream s) -> int {
        Device& d = device();
        d.need_stream(s, "cudaMemcpy2DAsync");
        if (width > dpitch || width > spitch) d.violation("cudaMemcpy2DAsync: width wider than a pitch");
        const size_t dspan = (height - 1) * dpitch + width, sspan = (height - 1) * spitch + width;
        if (kind == Copy::HostToDevice) {
          d.need_device(dst, dspan, "cudaMemcpy2DAsync to the device: destination");
          d.need_host(src, sspan, "cudaMemcpy2DAsync to the device: source");
          auto staged = std::make_shared<std::vector<uint8_t>>(height * width);
          for (size_t r = 0; r < height; ++r) std::memcpy(staged->data() + r * width, static_cast<const uint8_t*>(src) + r * spitch, width);
          d.enqueue([=] {
            for (size_t r = 0; r < height; ++r) std::memcpy(static_cast<uint8_t*>(dst) + r * dpitch, staged->data() + r * width, width);
          });
        } else {
          d.need_device(src, sspan, "cudaMemcpy2DAsync to the host: source");
          d.need_host(dst, dspan, "cudaMemcpy2DAsync to the host: destination");
          d.to_host.emplace_back(src, sspan);
          d.enqueue([=] {
            for (size_t r = 0; r < height; ++r) {
              std::memcpy(static_cast<uint8_t*>(dst) + r * dpitch, static_cast<const uint8_t*>(src) + r * spitch, width);
            }
          });
        }
        return 0;
      },
      [](void* p, int value, size_t bytes, Stream s) -> int {
        Device& d = device();
        d.need_stream(s, "cudaMemsetAsync");
        d.need_device(p, bytes, "cudaMemsetAsync");
        d.enqueue([=] { std::memset(p, value, bytes); });
        return 0;
      },
      []() -> int {
        Device& d = device();
        const int e = d.pending;
        d.pending = 0;
        return e;
      },
      [](int e) -> const char* { return e == st::gpu::kErrorMemoryAllocation ? "cudaErrorMemoryAllocation" : "cudaErrorFake"; },
      [](int e) -> const char* { return e == st::gpu::kErrorMemoryAllocation ? "out of memory" : "a fake error"; },
  };
  return rt;
}

}  // namespace fake
