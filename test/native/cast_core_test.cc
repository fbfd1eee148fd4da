// The cast core under AddressSanitizer/UBSan, built by
// scripts/native-test.cjs: the AVX2 kernel against the reference bit for bit
// (every 16-bit pattern of each source type, random f32 patterns, lengths
// around the SIMD steps, in place), threading, and the errors of the driver.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cast/cast.h"
#include "check.h"
#include "cpu.h"

using namespace st;
using st::test::check;

namespace {

const char* name_of(DType t) {
  return t == DType::F32 ? "f32" : t == DType::F16 ? "f16" : "bf16";
}

std::vector<uint8_t> run(const std::vector<uint8_t>& src, DType from, DType to, int64_t n, Kernel k, int threads) {
  std::vector<uint8_t> dst(static_cast<size_t>(n) * dtype_size(to) + 1, 0xa5);  // one guard byte
  CastArgs a;
  a.src = src.data();
  a.from = from;
  a.dst = dst.data();
  a.to = to;
  a.n = n;
  a.kernel = k;
  a.threads = threads;
  const std::string what = std::string(name_of(from)) + " -> " + name_of(to) + ", " + std::to_string(n) + " elements";
  check(cast(a).ok(), what + ": succeeds");
  check(dst.back() == 0xa5, what + ": nothing written past the end");
  return dst;
}

}  // namespace

int main() {
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
      const std::string pair = std::string(name_of(from)) + " -> " + name_of(to);
      const std::vector<uint8_t> want = run(src, from, to, n, Kernel::Reference, 1);
      if (from == to) check(std::memcmp(want.data(), src.data(), src.size()) == 0, pair + ": the reference copies");
      if (st::test::isa_usable(st::test::Isa::Avx2, pair + ": AVX2 kernel against the reference")) {
        check(run(src, from, to, n, Kernel::Avx2, 0) == want, pair + ": AVX2 kernel equals the reference bit for bit");
        // lengths around the 8- and 16-element steps: the tail must agree
        for (int64_t m : {0, 1, 7, 8, 9, 15, 16, 17, 31, 33}) {
          std::vector<uint8_t> w = run(src, from, to, m, Kernel::Reference, 1);
          check(run(src, from, to, m, Kernel::Avx2, 1) == w, pair + ": AVX2 tail of " + std::to_string(m) + " elements");
        }
      }
      check(run(src, from, to, n, Kernel::Auto, 3) == want, pair + ": the dispatched kernel on 3 threads equals the reference");
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
    check(cast(a).ok(), "f16 -> bf16 in place: succeeds");
    check(std::memcmp(buf.data(), want.data(), bytes.size()) == 0, "f16 -> bf16 in place equals the reference out of place");
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
    check(cast(a).code == Code::Value, "overlapping buffers of different element sizes: ERR_VALUE");
    a.dst = h;
    a.to = DType::I8;
    check(cast(a).code == Code::DType, "a target type other than f32/f16/bf16: ERR_DTYPE");
    a.to = DType::F16;
    a.n = -1;
    check(cast(a).code == Code::Shape, "a negative length: ERR_SHAPE");
    a.n = 4;
    a.kernel = Kernel::Avx512;
    check(cast(a).code == Code::Unsupported, "the AVX-512 kernel (none): unsupported");
    a.kernel = Kernel::Cuda;
    check(cast(a).code == Code::Unsupported, "the CUDA kernel (none): unsupported");
    a.kernel = Kernel::Avx2;
    check(cast(a).code == (cpu_enabled().avx2 ? Code::Ok : Code::Unsupported), "the AVX2 kernel asked for: runs where enabled, unsupported elsewhere");
    a.n = 0;
    a.src = nullptr;
    check(cast(a).ok(), "nothing to cast: succeeds without reading");
  }
  return st::test::finish("native cast core");
}
