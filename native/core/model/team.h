// A fixed team of threads for one model's forward passes. A pass runs as
// one function on every thread of the team (the caller is thread 0), with
// barriers between its steps, as ggml's graph compute does: one hand-off per
// pass instead of one per operation, so a one-token step with ~10 steps per
// block does not pay a thread wake-up per step. Between passes the workers
// spin for a short while (the next token usually comes within it), then
// sleep.
#pragma once
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace st {
namespace model {

class Team {
 public:
  // `threads` in total, the caller included (>= 1).
  explicit Team(int threads);
  ~Team();
  Team(const Team&) = delete;
  Team& operator=(const Team&) = delete;

  int size() const { return n_; }
  // Runs fn(ith) on threads 0..size()-1 (0 on the caller); returns when all
  // have returned. One run at a time.
  void run(const std::function<void(int)>& fn);
  // Inside run(): returns when every thread of the team has reached it.
  void barrier();

 private:
  void loop(int ith);

  int n_;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* fn_ = nullptr;
  std::atomic<uint64_t> gen_{0};       // bumped per run
  std::atomic<int> done_{0};           // workers finished with the current run
  std::atomic<int> bar_count_{0};
  std::atomic<uint64_t> bar_gen_{0};
  std::atomic<bool> stop_{false};
  std::mutex m_;
  std::condition_variable cv_;
};

}  // namespace model
}  // namespace st
