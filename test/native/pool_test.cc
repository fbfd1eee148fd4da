// Native tests of the thread pool (native/core/cpu.cc) under AddressSanitizer
// and UndefinedBehaviorSanitizer, built by scripts/native-test.cjs: a body
// that throws — on the calling thread or on a pool thread — reaches the
// caller of parallel_for as that exception, after every chunk has finished
// or been skipped (no thread runs a body whose caller has left), and leaves
// the pool usable and the caller's thread not marked as "inside a body".
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "cpu.h"

using namespace st;
using st::test::check;

namespace {

// Runs parallel_for with a body that throws on chunk `bad` (or on every
// chunk) and reports what reached the caller and which chunks ran.
struct Outcome {
  std::string caught;
  int64_t covered = 0;    // indices whose chunk ran to the end
  bool overlap = false;   // an index covered twice
};

Outcome throwing_run(int64_t n, int64_t grain, int threads, int64_t bad_index, bool all) {
  Outcome o;
  std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
  std::atomic<int64_t> covered{0};
  try {
    parallel_for(n, grain, [&](int64_t b, int64_t e) {
      // Long enough for pool threads to take chunks of their own.
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      if (all || (bad_index >= b && bad_index < e)) throw std::runtime_error("chunk at " + std::to_string(b));
      for (int64_t i = b; i < e; ++i) seen[static_cast<size_t>(i)].fetch_add(1);
      covered.fetch_add(e - b);
    }, threads);
    o.caught = "nothing";
  } catch (const std::runtime_error& e) {
    o.caught = e.what();
  } catch (...) {
    o.caught = "another type";
  }
  o.covered = covered.load();
  for (auto& s : seen) o.overlap |= s.load() > 1;
  return o;
}

void test_exception_reaches_the_caller() {
  // Thrown on whichever thread runs the chunk of index 500.
  const Outcome one = throwing_run(1000, 10, 4, 500, false);
  check(one.caught.rfind("chunk at ", 0) == 0, "a body's exception reaches the caller: " + one.caught);
  check(!one.overlap && one.covered < 1000, "chunks after the failure are skipped, none runs twice");
  // Every chunk throws, on every thread: one exception, the process lives.
  const Outcome all = throwing_run(256, 1, 4, 0, true);
  check(all.caught.rfind("chunk at ", 0) == 0 && all.covered == 0, "every chunk throwing: one exception for the caller");
  // A body that throws when no pool thread takes part.
  const Outcome serial = throwing_run(8, 100, 1, 3, false);
  check(serial.caught == "chunk at 0", "a serial body's exception reaches the caller: " + serial.caught);
}

// After an exception the calling thread is no longer "inside a body": a
// nested call would run serially as one body(0, n) call, a top-level one
// is split into chunks.
void test_no_stale_nesting_mark() {
  (void)throwing_run(64, 1, 4, 0, true);
  std::atomic<int> calls{0};
  parallel_for(64, 1, [&](int64_t, int64_t) { calls.fetch_add(1); }, 4);
  check(calls.load() > 1, "a call after an exception is split into chunks again (" + std::to_string(calls.load()) + " body calls)");
  // And nesting still runs serially inside a body.
  std::atomic<int> inner{0};
  parallel_for(4, 1, [&](int64_t, int64_t) {
    parallel_for(64, 1, [&](int64_t b, int64_t e) {
      if (b == 0 && e == 64) inner.fetch_add(1);
    }, 4);
  }, 2);
  check(inner.load() == 4, "nested calls run as one serial body each");
}

// Callers on several threads, some of whose bodies throw, do not disturb
// each other: each gets its own exception or its own complete result.
void test_concurrent_callers() {
  std::atomic<int> ok{0}, threw{0}, wrong{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&, t] {
      for (int rep = 0; rep < 20; ++rep) {
        std::atomic<int64_t> total{0};
        try {
          parallel_for(500, 5, [&](int64_t b, int64_t e) {
            if (t % 2 == 1 && b <= 250 && 250 < e) throw std::logic_error("odd caller");
            total.fetch_add(e - b);
          }, 3);
          (total.load() == 500 ? ok : wrong).fetch_add(1);
        } catch (const std::logic_error&) {
          (t % 2 == 1 ? threw : wrong).fetch_add(1);
        }
      }
    });
  }
  for (auto& c : callers) c.join();
  check(ok.load() == 40 && threw.load() == 40 && wrong.load() == 0,
        "concurrent callers: " + std::to_string(ok.load()) + " complete, " + std::to_string(threw.load()) + " threw, " + std::to_string(wrong.load()) + " wrong");
}

}  // namespace

int main() {
  test_exception_reaches_the_caller();
  test_no_stale_nesting_mark();
  test_concurrent_callers();
  return st::test::finish("native thread pool");
}
