// CPU feature detection and the engine's thread pool.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace st {

struct CpuFeatures {
  bool avx2 = false;     // AVX2 + FMA + F16C, all three, with OS support for YMM state
  bool avx512 = false;   // AVX-512 F/BW/VL with OS support for ZMM state
  bool avx512vnni = false;  // avx512 plus AVX512_VNNI (vpdpbusd: the runtime's 8-bit dot products)
};

// What the hardware offers (cpuid + xgetbv), read once.
const CpuFeatures& cpu_features();

// What kernels may use: the hardware features, capped by the environment
// variable SLIMTENSOR_ISA=scalar|avx2 (for tests and comparisons).
const CpuFeatures& cpu_enabled();

// Thread count used by parallel_for: the SLIMTENSOR_THREADS environment
// variable if set, else all online cores. set_threads(0) restores that.
int threads();
void set_threads(int n);
int hardware_threads();

// Runs body(begin, end) over [0, n) in chunks of at least `grain` items,
// on up to `max_threads` threads (0 = threads()) including the caller.
// Safe to call from several threads at once; nested calls from inside a
// body run serially on the calling thread.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body,
                  int max_threads = 0);

// memcpy split over up to `max_threads` threads: the copy-bandwidth limit
// benchmarks compare memory-bound kernels against.
void parallel_copy(void* dst, const void* src, size_t bytes, int max_threads = 0);

// Asks the kernel for transparent huge pages over the 2 MiB-aligned interior
// of [p, p + bytes) (a hint; THP in "madvise" mode honours it): fresh
// buffers of hundreds of MB fault in 512 times fewer pages.
void hint_huge_pages(void* p, uint64_t bytes);

}  // namespace st
