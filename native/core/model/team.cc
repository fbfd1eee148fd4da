#include "team.h"

#include <chrono>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#define ST_PAUSE() _mm_pause()
#else
#define ST_PAUSE() std::this_thread::yield()
#endif

namespace st {
namespace model {

namespace {

// Spins before a worker sleeps between runs: long enough to cover the gap
// between two decode steps (sampling, the next call's hand-off).
constexpr auto kIdleSpin = std::chrono::milliseconds(2);
// Pauses between yields while waiting inside a run (a peer may have been
// descheduled on a busy machine).
constexpr int kSpinsPerYield = 4096;

}  // namespace

Team::Team(int threads) : n_(threads < 1 ? 1 : threads) {
  for (int i = 1; i < n_; ++i) workers_.emplace_back([this, i] { loop(i); });
}

Team::~Team() {
  {
    std::lock_guard<std::mutex> lk(m_);
    stop_.store(true);
    gen_.fetch_add(1);
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void Team::run(const std::function<void(int)>& fn) {
  if (n_ == 1) {
    fn(0);
    return;
  }
  fn_ = &fn;
  done_.store(0, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lk(m_);
    gen_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  fn(0);
  int spins = 0;
  while (done_.load(std::memory_order_acquire) != n_ - 1) {
    ST_PAUSE();
    if (++spins % kSpinsPerYield == 0) std::this_thread::yield();
  }
  fn_ = nullptr;
}

void Team::barrier() {
  if (n_ == 1) return;
  const uint64_t gen = bar_gen_.load(std::memory_order_acquire);
  if (bar_count_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
    bar_count_.store(0, std::memory_order_relaxed);
    bar_gen_.fetch_add(1, std::memory_order_release);
    return;
  }
  int spins = 0;
  while (bar_gen_.load(std::memory_order_acquire) == gen) {
    ST_PAUSE();
    if (++spins % kSpinsPerYield == 0) std::this_thread::yield();
  }
}

void Team::loop(int ith) {
  uint64_t seen = 0;
  for (;;) {
    // Spin a while for the next run, then sleep.
    const auto until = std::chrono::steady_clock::now() + kIdleSpin;
    int spins = 0;
    while (gen_.load(std::memory_order_acquire) == seen) {
      ST_PAUSE();
      if (++spins % 256 == 0 && std::chrono::steady_clock::now() > until) {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return gen_.load() != seen; });
        break;
      }
    }
    seen = gen_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    (*fn_)(ith);
    done_.fetch_add(1, std::memory_order_acq_rel);
  }
}

}  // namespace model
}  // namespace st
