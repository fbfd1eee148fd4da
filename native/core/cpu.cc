#include "cpu.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <algorithm>
#include <cstring>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <cpuid.h>
#define ST_X86 1
#endif

namespace st {

namespace {

#if defined(ST_X86)
uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#if defined(ST_X86)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27);
  const bool fma = c & (1u << 12);
  const bool f16c = c & (1u << 29);
  const bool avx = c & (1u << 28);
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = xgetbv0();
  const bool ymm_state = (xcr0 & 0x6) == 0x6;
  const bool zmm_state = (xcr0 & 0xe6) == 0xe6;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  const bool avx2 = b & (1u << 5);
  f.avx2 = ymm_state && avx2 && fma && f16c;
  const bool avx512f = b & (1u << 16), avx512bw = b & (1u << 30), avx512vl = b & (1u << 31);
  f.avx512 = f.avx2 && zmm_state && avx512f && avx512bw && avx512vl;
  f.avx512vnni = f.avx512 && (c & (1u << 11));
#endif
  return f;
}

int env_int(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return 0;
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  if (*end != '\0' || n < 1 || n > 1024) return 0;
  return static_cast<int>(n);
}

// ---------------------------------------------------------------------------
// Thread pool. Each parallel_for call is a Job; workers take chunks from the
// oldest job that still has some, and the calling thread always works on its
// own job, so concurrent callers (libuv workers, worker_threads) never wait
// on each other for progress.

struct Job {
  const std::function<void(int64_t, int64_t)>* body;
  int64_t n, chunk;
  int64_t chunks;
  int max_helpers;                 // pool workers allowed to join
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::atomic<int> helpers{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;        // the first exception a body threw (written once, under m)
  std::mutex m;
  std::condition_variable cv;

  // Runs chunks until none are left; returns after the last one it took.
  // A body that throws does not escape (a pool thread would terminate the
  // process): the first exception is kept for the caller, and the chunks
  // not yet started are counted as done without running.
  void work() {
    for (;;) {
      const int64_t i = next.fetch_add(1);
      if (i >= chunks) return;
      if (!failed.load(std::memory_order_relaxed)) {
        const int64_t b = i * chunk, e = std::min(n, b + chunk);
        try {
          (*body)(b, e);
        } catch (...) {
          std::lock_guard<std::mutex> lk(m);
          if (!error) error = std::current_exception();
          failed.store(true);
        }
      }
      if (done.fetch_add(1) + 1 == chunks) {
        std::lock_guard<std::mutex> lk(m);
        cv.notify_all();
      }
    }
  }
};

thread_local bool t_inside_pool_body = false;

class Pool {
 public:
  static Pool& get() {
    static Pool* p = new Pool();  // never destroyed: workers may outlive static teardown
    return *p;
  }

  // The job is shared with the workers, so one that wakes late and finds
  // nothing left to do still touches live memory after the caller returned.
  void run(const std::shared_ptr<Job>& job) {
    if (job->max_helpers > 0) {
      std::unique_lock<std::mutex> lk(m_);
      ensure_workers(job->max_helpers);
      queue_.push_back(job);
      lk.unlock();
      if (job->max_helpers == 1) cv_.notify_one(); else cv_.notify_all();
    }
    {
      InsideBody inside;
      job->work();
    }
    {
      std::unique_lock<std::mutex> lk(job->m);
      job->cv.wait(lk, [&] { return job->done.load() == job->chunks; });
    }
    if (job->max_helpers > 0) remove(job);
    // Every chunk has finished (or was skipped): no thread still uses the
    // body, so the exception can leave with the caller's stack.
    if (job->error) std::rethrow_exception(job->error);
  }

 private:
  // Marks the calling thread as running a body (nested parallel_for calls
  // then run serially) and clears the mark however the scope is left.
  struct InsideBody {
    InsideBody() { t_inside_pool_body = true; }
    ~InsideBody() { t_inside_pool_body = false; }
  };

  // Starts workers up to n. A thread that cannot be created (a pids or
  // address-space limit) is not an error: the job runs on the workers that
  // exist, and always on the calling thread; a later call tries again.
  void ensure_workers(int n) {
    while (workers_ < n) {
      try {
        std::thread([this] { loop(); }).detach();
      } catch (...) {
        return;
      }
      ++workers_;
    }
  }

  void remove(const std::shared_ptr<Job>& job) {
    std::lock_guard<std::mutex> lk(m_);
    auto it = std::find(queue_.begin(), queue_.end(), job);
    if (it != queue_.end()) queue_.erase(it);
  }

  void loop() {
    t_inside_pool_body = true;
    std::unique_lock<std::mutex> lk(m_);
    for (;;) {
      std::shared_ptr<Job> job;
      for (auto& j : queue_) {
        if (j->next.load() < j->chunks && j->helpers.load() < j->max_helpers) { job = j; break; }
      }
      if (!job) { cv_.wait(lk); continue; }
      job->helpers.fetch_add(1);
      lk.unlock();
      job->work();
      lk.lock();
      // Drop exhausted jobs so later workers do not scan them.
      auto it = std::find(queue_.begin(), queue_.end(), job);
      if (it != queue_.end() && job->next.load() >= job->chunks) queue_.erase(it);
    }
  }

  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  int workers_ = 0;
};

std::atomic<int> g_threads{0};

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

const CpuFeatures& cpu_enabled() {
  static const CpuFeatures f = [] {
    CpuFeatures e = cpu_features();
    const char* isa = std::getenv("SLIMTENSOR_ISA");
    if (isa && std::string(isa) == "scalar") e = CpuFeatures{};
    if (isa && std::string(isa) == "avx2") e.avx512 = e.avx512vnni = false;
    return e;
  }();
  return f;
}

int hardware_threads() {
  // Read once: glibc opens and parses /sys/devices/system/cpu/online on
  // every call, and threads() asks on every parallel_for.
  static const int n = [] {
    const unsigned h = std::thread::hardware_concurrency();
    return h == 0 ? 1 : static_cast<int>(h);
  }();
  return n;
}

int threads() {
  const int t = g_threads.load();
  if (t > 0) return t;
  const int e = env_int("SLIMTENSOR_THREADS");
  return e > 0 ? e : hardware_threads();
}

void set_threads(int n) { g_threads.store(n < 0 ? 0 : n); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body,
                  int max_threads) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int t = max_threads > 0 ? max_threads : threads();
  if (t <= 1 || n <= grain || t_inside_pool_body) {
    body(0, n);
    return;
  }
  // A few chunks per thread balances uneven rows without much overhead.
  const int64_t want = static_cast<int64_t>(t) * 4;
  const int64_t chunk = std::max<int64_t>(grain, (n + want - 1) / want);
  auto job = std::make_shared<Job>();
  job->body = &body;
  job->n = n;
  job->chunk = chunk;
  job->chunks = (n + chunk - 1) / chunk;
  job->max_helpers = static_cast<int>(std::min<int64_t>(t - 1, job->chunks - 1));
  Pool::get().run(job);
}

void parallel_copy(void* dst, const void* src, size_t bytes, int max_threads) {
  constexpr int64_t kChunk = 1 << 20;
  const int64_t chunks = static_cast<int64_t>((bytes + kChunk - 1) / kChunk);
  parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
    const size_t b = static_cast<size_t>(c0 * kChunk);
    const size_t e = std::min(bytes, static_cast<size_t>(c1 * kChunk));
    std::memcpy(static_cast<char*>(dst) + b, static_cast<const char*>(src) + b, e - b);
  }, max_threads);
}

void hint_huge_pages(void* p, uint64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  // A hint only (THP in "madvise" mode honours it); 2 MiB-aligned interior.
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  if (p && bytes >= 2 * kHuge) {
    const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
    if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE);
  }
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace st
