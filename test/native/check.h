// The native tests' harness, shared by every room's test/native/*_test.cc:
// counted checks, counted skips with their reason, and the closing line
// scripts/native-test.cjs reads into npm test's "N passed, N failed, N
// skipped":
//
//   <name>: <passed> passed, <failed> failed, <skipped> skipped
//
// A failed check prints "FAIL: <what>" to stderr and the test goes on (one
// run shows every failure); a skip prints "SKIP: <what> (<why>)". main()
// ends with `return st::test::finish("native quant core");`, whose exit
// status is non-zero when a check failed.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <string>

#include "cpu.h"
#include "tensor.h"

namespace st {
namespace test {

struct Counts {
  int passed = 0, failed = 0, skipped = 0;
};

inline Counts& counts() {
  static Counts c;
  return c;
}

// One check: passes when `ok`; `what` names it in the failure message.
inline bool check(bool ok, const std::string& what) {
  if (ok) {
    ++counts().passed;
  } else {
    ++counts().failed;
    std::fprintf(stderr, "FAIL: %s\n", what.c_str());
  }
  return ok;
}

// A failing Status with the expected code whose message names `part`.
inline void check_error(const Status& s, Code code, const std::string& part, const std::string& what) {
  check(s.code == code && s.message.find(part) != std::string::npos, what + ": got " + code_name(s.code) + " \"" + s.message + "\"");
}

// A test (or a variant of one) that cannot run here, and why.
inline void skip(const std::string& what, const std::string& why) {
  ++counts().skipped;
  std::printf("SKIP: %s (%s)\n", what.c_str(), why.c_str());
}

enum class Isa { Avx2, Avx512 };

// Whether kernels of `isa` may run in this process (cpu_enabled()); if
// not, records `what` as skipped, saying whether the CPU lacks the ISA or
// SLIMTENSOR_ISA turned it off (native-test.cjs runs each test under
// several SLIMTENSOR_ISA values).
inline bool isa_usable(Isa isa, const std::string& what) {
  const bool avx512 = isa == Isa::Avx512;
  if (avx512 ? cpu_enabled().avx512 : cpu_enabled().avx2) return true;
  const bool hw = avx512 ? cpu_features().avx512 : cpu_features().avx2;
  const char* name = avx512 ? "AVX-512" : "AVX2";
  const char* env = std::getenv("SLIMTENSOR_ISA");
  skip(what + " (" + name + ")", hw ? std::string(name) + " turned off by SLIMTENSOR_ISA=" + (env ? env : "")
                                    : std::string("this CPU has no ") + name);
  return false;
}

// Whether a check that SLIMTENSOR_ISA cannot change (it calls no
// ISA-dispatched code, or names its kernels) should run in this process:
// it runs once, in the run without SLIMTENSOR_ISA (native-test.cjs runs
// every test that way too); under SLIMTENSOR_ISA it is recorded as skipped.
// For the expensive checks: running them again would repeat the same code.
inline bool isa_independent(const std::string& what) {
  const char* env = std::getenv("SLIMTENSOR_ISA");
  if (!env) return true;
  skip(what, std::string("SLIMTENSOR_ISA=") + env + " cannot change what it runs; it runs without SLIMTENSOR_ISA");
  return false;
}

// Prints the closing line and returns main()'s exit status.
inline int finish(const std::string& name) {
  const Counts& c = counts();
  std::fflush(stderr);
  std::printf("%s: %d passed, %d failed, %d skipped\n", name.c_str(), c.passed, c.failed, c.skipped);
  std::fflush(stdout);
  return c.failed == 0 ? 0 : 1;
}

}  // namespace test
}  // namespace st
