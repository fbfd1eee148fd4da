// The cast core under AddressSanitizer/UBSan: the AVX2 kernel against the
// reference bit for bit (every 16-bit pattern of each source type, random
// f32 patterns, lengths around the SIMD steps, in place), threading, and the
// errors of the driver.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "cast/cast.h"
#include "cpu.h"

using namespace st;

static int failures = 0;
#define CHECK(c)                                                    \
  do {                                                              \
    if (!(c)) {                                                     \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
      failures++;                                                   \
    }                                                               \
  } while (0)

static std::vector<uint8_t> run(const std::vector<uint8_t>& src, DType from, DType to, int64_t n, Kernel k, int threads) {
  std::vector<uint8_t> dst(static_cast<size_t>(n) * dtype_size(to) + 1, 0xa5);  // one guard byte
  CastArgs a;
  a.src = src.data();
  a.from = from;
  a.dst = dst.data();
  a.to = to;
  a.n = n;
  a.kernel = k;
  a.threads = threads;
  const Status st = cast(a);
  CHECK(st.ok());
  CHECK(dst.back() == 0xa5);
  return dst;
}

int main() {
  const bool avx2 = cpu_enabled().avx2;
  std::printf("cast core test (avx2 %s)\n", avx2 ? "on" : "off");
  const DType types[] = {DType::F32, DType::F16, DType::BF16};
  std::mt19937 rng(11);
  for (DType from : types) {
    // every pattern of a 16-bit type; 2^20 random f32 patterns
    const int64_t n = from == DType::F32 ? (int64_t{1} << 20) : 65536;
    std::vector<uint8_t> src(static_cast<size_t>(n) * dtype_size(from));
    for (int64_t i = 0; i < n; i++) {
      if (from == DType::F32) {
        const uint32_t x = static_cast<uint32_t>(rng());
        std::memcpy(&src[static_cast<size_t>(i) * 4], &x, 4);
      } else {
        const uint16_t h = static_cast<uint16_t>(i);
        std::memcpy(&src[static_cast<size_t>(i) * 2], &h, 2);
      }
    }
    for (DType to : types) {
      const std::vector<uint8_t> want = run(src, from, to, n, Kernel::Reference, 1);
      if (from == to) CHECK(std::memcmp(want.data(), src.data(), src.size()) == 0);
      if (avx2) {
        CHECK(run(src, from, to, n, Kernel::Avx2, 0) == want);
        // lengths around the 8- and 16-element steps: the tail must agree
        for (int64_t m : {0, 1, 7, 8, 9, 15, 16, 17, 31, 33}) {
          std::vector<uint8_t> w = run(src, from, to, m, Kernel::Reference, 1);
          CHECK(run(src, from, to, m, Kernel::Avx2, 1) == w);
        }
      }
      CHECK(run(src, from, to, n, Kernel::Auto, 3) == want);
    }
  }
  // in place between the two 16-bit types
  {
    std::vector<uint16_t> buf(65536);
    for (int i = 0; i < 65536; i++) buf[static_cast<size_t>(i)] = static_cast<uint16_t>(i);
    std::vector<uint8_t> bytes(buf.size() * 2);
    std::memcpy(bytes.data(), buf.data(), bytes.size());
    const std::vector<uint8_t> want = run(bytes, DType::F16, DType::BF16, 65536, Kernel::Reference, 1);
    CastArgs a;
    a.src = buf.data();
    a.dst = buf.data();
    a.from = DType::F16;
    a.to = DType::BF16;
    a.n = 65536;
    CHECK(cast(a).ok());
    CHECK(std::memcmp(buf.data(), want.data(), bytes.size()) == 0);
  }
  // errors
  {
    float f[8] = {};
    uint16_t h[8] = {};
    CastArgs a;
    a.src = f;
    a.dst = f + 1;
    a.from = DType::F32;
    a.to = DType::F16;
    a.n = 4;
    CHECK(cast(a).code == Code::Value);  // overlapping, different sizes
    a.dst = h;
    a.to = DType::I8;
    CHECK(cast(a).code == Code::DType);
    a.to = DType::F16;
    a.n = -1;
    CHECK(cast(a).code == Code::Shape);
    a.n = 4;
    a.kernel = Kernel::Avx512;
    CHECK(cast(a).code == Code::Unsupported);
    a.kernel = Kernel::Cuda;
    CHECK(cast(a).code == Code::Unsupported);
    a.kernel = Kernel::Avx2;
    CHECK(cast(a).code == (avx2 ? Code::Ok : Code::Unsupported));
    a.n = 0;
    a.src = nullptr;
    CHECK(cast(a).ok());  // nothing to do
  }
  if (failures) {
    std::fprintf(stderr, "%d failures\n", failures);
    return 1;
  }
  std::printf("cast core test: ok\n");
  return 0;
}
