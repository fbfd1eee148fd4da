// Native tests of the quant core, built with AddressSanitizer and
// UndefinedBehaviorSanitizer by scripts/native-test.cjs: the AVX2 kernels
// against the scalar reference on random and edge inputs (every format,
// search, dtype, thread count), the ggml vectors, and the thread pool.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "cpu.h"
#include "numeric.h"
#include "quant/quant.h"
#include "quant/quant_kernels.h"

using namespace st;
using st::test::check;
using st::test::Isa;
using st::test::isa_usable;

namespace {

std::vector<char> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

struct Output {
  std::vector<uint8_t> data, scales;
  std::vector<int8_t> zeros;
  Status status;
  bool operator==(const Output& o) const { return data == o.data && scales == o.scales && zeros == o.zeros; }
};

// Outputs start filled with `fill`: lib/ hands the kernels uninitialized
// memory, so every byte must be written (test_every_output_byte_written).
// With `error`, quantize also measures the result (quantize's `error`).
Output run(QuantizeArgs a, uint8_t fill = 0xcd, ErrorStats* error = nullptr) {
  Output o;
  const QuantSizes sz = quant_sizes(a.format, a.src.cols, a.group);
  o.data.assign(static_cast<size_t>(a.src.rows * sz.data_row_bytes), fill);
  const size_t groups = qformat_traits(a.format).ggml ? 0 : static_cast<size_t>(a.src.rows * sz.groups_per_row);
  o.scales.assign(groups * dtype_size(a.scale_dtype), fill);
  o.zeros.assign(a.symmetric ? 0 : groups, static_cast<int8_t>(fill));
  a.data = o.data.data();
  a.scales = o.scales.data();
  a.zeros = o.zeros.data();
  o.status = quantize(a, error);
  return o;
}

std::vector<float> edge_values(std::mt19937& g, int64_t n) {
  std::normal_distribution<float> nd;
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int kind = static_cast<int>((i / 32) % 9);
    float v = nd(g);
    switch (kind) {
      case 0: v = 0; break;
      case 1: v = (i & 1) ? -0.0f : 0.0f; break;
      case 2: v = (i % 32 == 7) ? 3e4f : v * 1e-3f; break;
      case 3: v = v * 1e-39f; break;
      case 4: v = static_cast<float>(i % 16) - 7.5f; break;
      case 5: v = (i % 32 == 1) ? 2.0f : (i % 32 == 9) ? -2.0f : v; break;
      case 6: v = 1.25f; break;
      case 7: v = v * 1e-8f; break;
      default: break;
    }
    x[static_cast<size_t>(i)] = v;
  }
  return x;
}

// Every ggml vector (all GGUF formats, with and without the importance
// matrix) on every kernel the CPU has; dequantization too.
void test_ggml_vectors(const std::string& dir) {
  const char* names[] = {"normal", "edge", "heavy"};
  const QFormat ff[] = {QFormat::Q4_0, QFormat::Q4_1, QFormat::Q5_0, QFormat::Q5_1, QFormat::Q8_0, QFormat::Q2_K,
                        QFormat::Q3_K, QFormat::Q4_K, QFormat::Q5_K, QFormat::Q6_K};
  const bool avx2 = isa_usable(Isa::Avx2, "ggml vectors"), avx512 = isa_usable(Isa::Avx512, "ggml vectors");
  for (int n = 0; n < 3; ++n) {
    const std::vector<char> x = read_file(dir + "/" + names[n] + ".f32");
    const std::vector<char> imp = read_file(dir + "/" + names[n] + ".imatrix.f32");
    check(!x.empty() && !imp.empty(), std::string("fixtures ") + names[n] + ".f32/.imatrix.f32 readable");
    if (x.empty() || imp.empty()) continue;
    const int64_t cols = static_cast<int64_t>(imp.size() / 4), rows = static_cast<int64_t>(x.size() / 4) / cols;
    for (QFormat f : ff) {
      const std::string fmt = qformat_traits(f).name;
      for (int weighted = 0; weighted < 2; ++weighted) {
        const std::string file = std::string(names[n]) + "." + fmt + (weighted && f != QFormat::Q8_0 ? ".imatrix" : "");
        const std::vector<char> want = read_file(dir + "/" + file);
        const std::vector<char> deq = read_file(dir + "/" + names[n] + "." + fmt + ".dequant.f32");
        for (Kernel k : {Kernel::Reference, Kernel::Avx2, Kernel::Avx512}) {
          if (k == Kernel::Avx2 && !avx2) continue;
          if (k == Kernel::Avx512 && !avx512) continue;
          const char* kn = k == Kernel::Reference ? " reference" : k == Kernel::Avx2 ? " avx2" : " avx512";
          QuantizeArgs a;
          a.src = {x.data(), DType::F32, rows, cols};
          a.format = f;
          a.kernel = k;
          a.importance = weighted ? reinterpret_cast<const float*>(imp.data()) : nullptr;
          const Output o = run(a);
          check(o.status.ok() && o.data.size() == want.size() && std::memcmp(o.data.data(), want.data(), want.size()) == 0,
                "ggml vector " + file + kn);
          if (weighted) continue;
          DequantizeArgs d;
          d.format = f;
          d.rows = rows;
          d.cols = cols;
          d.data = o.data.data();
          d.kernel = k;
          std::vector<float> y(static_cast<size_t>(rows * cols), -1.0f);
          const Status st = dequantize(d, y.data(), DType::F32);
          check(st.ok() && deq.size() == y.size() * 4 && std::memcmp(y.data(), deq.data(), deq.size()) == 0,
                "ggml dequantization " + std::string(names[n]) + "." + fmt + kn);
        }
      }
    }
  }
}

void test_avx2_matches_reference() {
  if (!isa_usable(Isa::Avx2, "AVX2 vs reference")) return;
  const bool avx512 = isa_usable(Isa::Avx512, "AVX-512 vs reference");
  std::mt19937 g(1234);
  const QFormat formats[] = {QFormat::Q4_0, QFormat::Q4_1, QFormat::Q8_0, QFormat::Int4, QFormat::Int8, QFormat::Q5_0, QFormat::Q5_1};
  for (QFormat f : formats) {
    const bool ggml = qformat_traits(f).ggml;
    const bool five = f == QFormat::Q5_0 || f == QFormat::Q5_1;  // no search 'mse'
    for (int search = 0; search < (five ? 1 : 2); ++search) {
      for (int sym = 0; sym < (ggml ? 1 : 2); ++sym) {
        for (int64_t group : ggml ? std::vector<int64_t>{32} : std::vector<int64_t>{32, 128, 384}) {
          for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
            const int64_t rows = 7, cols = 768;
            std::vector<float> x = edge_values(g, rows * cols);
            std::vector<uint16_t> h(x.size());
            for (size_t i = 0; i < x.size(); ++i) h[i] = dt == DType::F16 ? f32_to_f16(x[i]) : f32_to_bf16(x[i]);
            std::vector<float> imp(static_cast<size_t>(cols));
            for (auto& v : imp) v = std::uniform_real_distribution<float>(0.0f, 3.0f)(g);
            QuantizeArgs a;
            a.src = {dt == DType::F32 ? static_cast<const void*>(x.data()) : h.data(), dt, rows, cols};
            a.format = f;
            a.group = group;
            a.symmetric = sym == 0;
            a.search = search ? Search::Mse : Search::None;
            a.importance = search && (group == 32) ? imp.data() : nullptr;
            a.kernel = Kernel::Reference;
            const Output ref = run(a);
            a.kernel = Kernel::Avx2;
            a.threads = 2;
            const Output simd = run(a);
            char what[160];
            std::snprintf(what, sizeof what, "avx2 == reference: %s search=%d sym=%d group=%lld dtype=%s",
                          qformat_traits(f).name, search, sym == 0, static_cast<long long>(group), dtype_name(dt));
            check(ref.status.ok() && simd.status.ok() && ref == simd, what);
            if (avx512) {
              a.kernel = Kernel::Avx512;
              const Output zmm = run(a);
              std::snprintf(what, sizeof what, "avx512 == reference: %s search=%d sym=%d group=%lld dtype=%s",
                            qformat_traits(f).name, search, sym == 0, static_cast<long long>(group), dtype_name(dt));
              check(zmm.status.ok() && ref == zmm, what);
            }
          }
        }
      }
    }
  }
}

// quantization_error: the AVX2 sums (two vectors of 4 doubles, then a scalar
// tail) and the AVX-512 ones (one vector of 8 doubles) equal the reference's
// 8-lane sums bit for bit, for every dtype, row lengths with and without a
// tail, non-finite originals (counted as 0) and any thread count; and all are
// close to a plain sequential sum.
void test_error_avx2_matches_reference() {
  if (!cpu_enabled().avx2) {
    std::printf("skipped: AVX2 error statistics vs reference (this CPU has no AVX2)\n");
    return;
  }
  const bool avx512 = isa_usable(Isa::Avx512, "AVX-512 error statistics vs reference");
  std::mt19937 g(77);
  // INT groups of a multiple of 8, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K take the
  // AVX-512 loop with the dequantization fused in; the others the plain one.
  struct Case { QFormat f; int64_t cols, group; bool asym; };
  const Case cases[] = {{QFormat::Q8_0, 64, 32, false}, {QFormat::Q4_0, 96, 32, false}, {QFormat::Int8, 100, 20, false},
                        {QFormat::Int4, 13, 13, false},  {QFormat::Int4, 384, 128, false}, {QFormat::Int8, 96, 32, true},
                        {QFormat::Int4, 48, 16, true},   {QFormat::Q4_K, 256, 256, false}, {QFormat::Q5_K, 512, 256, false},
                        {QFormat::Q4_1, 64, 32, false},  {QFormat::Q6_K, 256, 256, false},
                        {QFormat::Q3_K, 256, 256, false},
                        // rows of several AVX-512 batches of 8 blocks and a tail of blocks: the batched
                        // quantizers, then each row's measurement
                        {QFormat::Q8_0, 576, 32, false}, {QFormat::Q4_0, 544, 32, false}, {QFormat::Q4_1, 800, 32, false}};
  for (const Case& c : cases) {
    for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
      const int64_t rows = 9;
      std::vector<float> x = edge_values(g, rows * c.cols);
      x[3] = std::nanf("");
      x[static_cast<size_t>(c.cols + 1)] = INFINITY;
      x[static_cast<size_t>(3 * c.cols - 5)] = -INFINITY;  // row 2: in the last block (past the batches when there are any)
      std::vector<uint16_t> h(x.size());
      for (size_t i = 0; i < x.size(); ++i) h[i] = dt == DType::F16 ? f32_to_f16(x[i]) : f32_to_bf16(x[i]);
      const void* src = dt == DType::F32 ? static_cast<const void*>(x.data()) : h.data();
      QuantizeArgs a;
      a.src = {src, dt, rows, c.cols};
      a.format = c.f;
      a.group = c.group;
      a.symmetric = !c.asym;
      a.non_finite = NonFinite::Zero;
      const Output q = run(a);
      DequantizeArgs d;
      d.format = c.f;
      d.rows = rows;
      d.cols = c.cols;
      d.group = c.group;
      d.data = q.data.data();
      d.scales = q.scales.data();
      d.scale_dtype = a.scale_dtype;
      d.zeros = c.asym ? q.zeros.data() : nullptr;
      ErrorStats ref, simd, simd1;
      d.kernel = Kernel::Reference;
      const Status s0 = quantization_error({src, dt, rows, c.cols}, d, &ref);
      d.kernel = Kernel::Avx2;
      d.threads = 2;
      const Status s1 = quantization_error({src, dt, rows, c.cols}, d, &simd);
      d.threads = 1;
      const Status s2 = quantization_error({src, dt, rows, c.cols}, d, &simd1);
      char what[160];
      std::snprintf(what, sizeof what, "error avx2 == reference: %s cols=%lld dtype=%s", qformat_traits(c.f).name,
                    static_cast<long long>(c.cols), dtype_name(dt));
      const auto same = [](const ErrorStats& u, const ErrorStats& v) {
        return u.sum_sq_err == v.sum_sq_err && u.sum_sq_ref == v.sum_sq_ref && u.sum_sq_deq == v.sum_sq_deq && u.dot == v.dot &&
               u.max_abs == v.max_abs && u.count == v.count;
      };
      check(s0.ok() && s1.ok() && s2.ok() && same(ref, simd) && same(simd, simd1), what);
      // quantize measuring each row as it goes: the same bytes and the same sums, on every kernel and thread count
      for (const Kernel k : {Kernel::Reference, Kernel::Avx2, Kernel::Avx512}) {
        if (k == Kernel::Avx512 && !avx512) continue;
        for (const int threads : {1, 2}) {
          QuantizeArgs m = a;
          m.kernel = k;
          m.threads = threads;
          ErrorStats measured;
          measured.sum_sq_err = -1;  // overwritten
          const Output qm = run(m, 0xcd, &measured);
          check(qm.status.ok() && qm == q && same(measured, ref),
                std::string(what) + ": quantize with error == quantize then quantization_error (kernel " + std::to_string(static_cast<int>(k)) + ", " + std::to_string(threads) + " threads)");
        }
      }
      if (avx512) {
        ErrorStats zmm, zmm1;
        d.kernel = Kernel::Avx512;
        d.threads = 2;
        const Status s3 = quantization_error({src, dt, rows, c.cols}, d, &zmm);
        d.threads = 1;
        const Status s4 = quantization_error({src, dt, rows, c.cols}, d, &zmm1);
        check(s3.ok() && s4.ok() && same(ref, zmm) && same(zmm, zmm1), std::string(what) + " (avx512)");
      }
      // against a sequential sum over the dequantized tensor
      std::vector<float> y(x.size());
      d.kernel = Kernel::Reference;
      check(dequantize(d, y.data(), DType::F32).ok(), std::string(what) + ": dequantize");
      double se = 0, mx = 0;
      for (size_t i = 0; i < x.size(); ++i) {
        float xv = dt == DType::F32 ? x[i] : dt == DType::F16 ? f16_to_f32(h[i]) : bf16_to_f32(h[i]);
        if (!std::isfinite(xv)) xv = 0;
        const double e = static_cast<double>(xv) - y[i];
        se += e * e;
        mx = std::max(mx, std::fabs(e));
      }
      check(std::fabs(ref.sum_sq_err - se) <= 1e-12 * std::max(1.0, se) && ref.max_abs == mx && ref.count == rows * c.cols,
            std::string(what) + ": close to a sequential sum");
    }
  }
}

// The row sums on pairs quantization rarely produces: originals and
// reconstructions of unrelated magnitudes (x - y then has more than 26
// significant bits, so e*e rounds and a fused e*e + s would differ),
// subnormals, an infinite original (counted as 0), an infinite and a NaN
// reconstruction. Each SIMD row kernel equals the reference.
void test_error_rows_unrelated_values() {
  if (!isa_usable(Isa::Avx2, "error rows on unrelated values")) return;
  const bool avx512 = isa_usable(Isa::Avx512, "error rows on unrelated values");
  const ErrorRowFn f2 = avx2::error_row_fn(Kernel::Avx2), f512 = avx2::error_row_fn(Kernel::Avx512);
  check(f2 != nullptr && (!avx512 || (f512 != nullptr && f512 != f2)), "error row kernels: AVX2 and AVX-512 present and distinct");
  std::mt19937 g(5);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::uniform_int_distribution<int> ex(-20, 20);
  const auto same = [](double a, double b) { return a == b || (std::isnan(a) && std::isnan(b)); };
  for (int64_t n : {1, 7, 8, 37, 256, 1001}) {
    for (int special = 0; special < 2; ++special) {
      for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
        const int64_t off = 3;
        std::vector<float> x(static_cast<size_t>(off + n)), y(static_cast<size_t>(n));
        for (auto& v : x) v = std::ldexp(u(g), ex(g));
        for (auto& v : y) v = std::ldexp(u(g), ex(g));
        if (n > 20) { x[off + 2] = 1e-41f; y[4] = 3e-42f; }
        if (special && n > 20) { x[off + 5] = -INFINITY; y[9] = INFINITY; y[17] = std::nanf(""); }
        std::vector<uint16_t> h(x.size());
        for (size_t i = 0; i < x.size(); ++i) h[i] = dt == DType::F16 ? f32_to_f16(x[i]) : f32_to_bf16(x[i]);
        const void* src = dt == DType::F32 ? static_cast<const void*>(x.data()) : h.data();
        ErrorStats r, s2, s512;
        ref::error_row(src, dt, off, y.data(), n, &r);
        f2(src, dt, off, y.data(), n, &s2);
        if (avx512) f512(src, dt, off, y.data(), n, &s512);
        else s512 = r;
        char what[120];
        std::snprintf(what, sizeof what, "error row == reference on unrelated values: n=%lld dtype=%s%s",
                      static_cast<long long>(n), dtype_name(dt), special ? " with inf/NaN" : "");
        for (const ErrorStats* s : {&s2, &s512}) {
          check(same(r.sum_sq_err, s->sum_sq_err) && same(r.sum_sq_ref, s->sum_sq_ref) && same(r.sum_sq_deq, s->sum_sq_deq) &&
                    same(r.dot, s->dot) && r.max_abs == s->max_abs,
                std::string(what) + (s == &s2 ? " (avx2)" : " (avx512)"));
        }
      }
    }
  }
}

// Groups whose range is a few subnormals overflow 1/range to infinity inside
// the search; reference and AVX2 must still agree (NaN codes clamp alike).
void test_search_degenerate_ranges() {
  if (!isa_usable(Isa::Avx2, "subnormal-range groups, AVX2 vs reference")) return;
  std::vector<float> x(4 * 32, 0.0f);
  x[30] = 1.4e-45f;
  x[32 + 3] = -1.4e-45f;
  x[64 + 7] = 3e-45f;
  x[64 + 8] = -1.4e-45f;
  x[96 + 0] = 1e-38f;
  for (QFormat f : {QFormat::Q4_0, QFormat::Q4_1, QFormat::Q8_0, QFormat::Int4, QFormat::Int8}) {
    for (int sym = 0; sym < 2; ++sym) {
      QuantizeArgs a;
      a.src = {x.data(), DType::F32, 4, 32};
      a.format = f;
      a.group = 32;
      a.symmetric = sym == 0;
      a.search = Search::Mse;
      a.kernel = Kernel::Reference;
      const Output ref = run(a);
      a.kernel = Kernel::Avx2;
      const Output simd = run(a);
      check(ref.status.ok() && simd.status.ok() && ref == simd,
            std::string("subnormal-range groups: avx2 == reference for ") + qformat_traits(f).name);
    }
  }
}

void test_non_finite_first_index() {
  std::vector<float> x(64 * 256, 0.25f);
  x[50 * 256 + 3] = NAN;
  x[9 * 256 + 100] = -INFINITY;
  for (Kernel k : {Kernel::Reference, Kernel::Auto}) {
    QuantizeArgs a;
    a.src = {x.data(), DType::F32, 64, 256};
    a.format = QFormat::Int4;
    a.group = 128;
    a.kernel = k;
    const Output o = run(a);
    check(o.status.code == Code::Value && o.status.message.find("[9, 100]") != std::string::npos,
          "first non-finite index reported: " + o.status.message);
  }
}

// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 with NaN/Inf inside 8-block batches and in row tails, on
// every kernel and dtype: NonFinite::Error names the first one (flat and
// [row, col]); NonFinite::Zero gives the bytes the reference gives for the
// input with those values replaced by +0.
void test_non_finite_ggml() {
  const bool avx2 = isa_usable(Isa::Avx2, "non-finite ggml rows"), avx512 = isa_usable(Isa::Avx512, "non-finite ggml rows");
  std::mt19937 g(77);
  std::normal_distribution<float> nd;
  struct Bad {
    int64_t at;
    float v;
  };
  const int64_t rows = 5;
  for (const int64_t cols : {int64_t{512}, int64_t{288}}) {  // two whole batches; one batch and a tail of one block
    // a NaN alone; three in different rows (the first by flat index is in
    // row 0, past the other rows' columns); a -Inf in the last block of row 2
    const std::vector<std::vector<Bad>> cases = {
        {{3 * cols + 45, NAN}},
        {{1 * cols + 7, INFINITY}, {0 * cols + 200, NAN}, {4 * cols + 1, -INFINITY}},
        {{2 * cols + cols - 3, -INFINITY}, {3 * cols + 31, NAN}},
    };
    for (size_t ci = 0; ci < cases.size(); ++ci) {
      std::vector<float> x(static_cast<size_t>(rows * cols));
      for (auto& v : x) v = nd(g);
      std::vector<float> clean = x;
      int64_t first = INT64_MAX;
      for (const Bad& b : cases[ci]) {
        x[static_cast<size_t>(b.at)] = b.v;
        clean[static_cast<size_t>(b.at)] = 0.0f;
        first = std::min(first, b.at);
      }
      const std::string where = "[" + std::to_string(first / cols) + ", " + std::to_string(first % cols) + "] (flat " + std::to_string(first) + ")";
      for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
        std::vector<uint16_t> h(x.size()), hc(x.size());
        for (size_t i = 0; i < x.size(); ++i) {
          h[i] = dt == DType::F16 ? f32_to_f16(x[i]) : f32_to_bf16(x[i]);
          hc[i] = dt == DType::F16 ? f32_to_f16(clean[i]) : f32_to_bf16(clean[i]);
        }
        const void* src = dt == DType::F32 ? static_cast<const void*>(x.data()) : h.data();
        const void* csrc = dt == DType::F32 ? static_cast<const void*>(clean.data()) : hc.data();
        for (QFormat f : {QFormat::Q4_0, QFormat::Q4_1, QFormat::Q5_0, QFormat::Q5_1, QFormat::Q8_0}) {
          QuantizeArgs c;
          c.src = {csrc, dt, rows, cols};
          c.format = f;
          c.kernel = Kernel::Reference;
          const Output want = run(c);
          for (Kernel k : {Kernel::Reference, Kernel::Avx2, Kernel::Avx512}) {
            if (k == Kernel::Avx2 && !avx2) continue;
            if (k == Kernel::Avx512 && !avx512) continue;
            const std::string what = std::string(qformat_traits(f).name) + " " + dtype_name(dt) + " cols=" + std::to_string(cols) +
                                     " case " + std::to_string(ci) + (k == Kernel::Reference ? " reference" : k == Kernel::Avx2 ? " avx2" : " avx512");
            QuantizeArgs a;
            a.src = {src, dt, rows, cols};
            a.format = f;
            a.kernel = k;
            a.threads = 2;
            const Output e = run(a);
            check(e.status.code == Code::Value && e.status.message.find(where) != std::string::npos,
                  "non-finite error names " + where + ": " + what + ": " + e.status.message);
            a.non_finite = NonFinite::Zero;
            const Output z = run(a);
            check(z.status.ok() && want.status.ok() && z == want, "non-finite values quantized as 0: " + what);
          }
        }
      }
    }
  }
}

// Quantizing into outputs prefilled with 0x00 and with 0xff gives the same
// bytes: no output byte is left unwritten (odd widths, padding words, tails).
void test_every_output_byte_written() {
  std::mt19937 g(99);
  std::normal_distribution<float> nd;
  const QFormat formats[] = {QFormat::Q4_0, QFormat::Q4_1, QFormat::Q8_0, QFormat::Int4, QFormat::Int8, QFormat::Q5_0,
                             QFormat::Q5_1, QFormat::Q2_K, QFormat::Q3_K, QFormat::Q4_K, QFormat::Q5_K, QFormat::Q6_K};
  const bool avx2 = isa_usable(Isa::Avx2, "every output byte written"), avx512 = isa_usable(Isa::Avx512, "every output byte written");
  for (QFormat f : formats) {
    const QFormatTraits& tr = qformat_traits(f);
    const bool ggml = tr.ggml;
    const std::vector<int64_t> widths = !ggml ? std::vector<int64_t>{8, 24, 172, 264}
                                        : tr.block == 256 ? std::vector<int64_t>{256, 768}
                                                          : std::vector<int64_t>{32, 96, 288};
    std::vector<float> imp(768);
    for (auto& v : imp) v = std::uniform_real_distribution<float>(0.0f, 3.0f)(g);
    for (int64_t cols : widths) {
      // search 0: none, 1: mse (where implemented), 2: llama.cpp's importance-weighted quantizer
      for (int search = 0; search < 3; ++search) {
        if (search == 1 && ggml && f != QFormat::Q4_0 && f != QFormat::Q4_1 && f != QFormat::Q8_0) continue;
        if (search == 2 && !ggml) continue;
        for (int sym = 0; sym < (ggml ? 1 : 2); ++sym) {
          for (Kernel k : {Kernel::Reference, Kernel::Avx2, Kernel::Avx512}) {
            if (k == Kernel::Avx2 && !avx2) continue;
            if (k == Kernel::Avx512 && !avx512) continue;
            std::vector<float> x(static_cast<size_t>(3 * cols));
            for (auto& v : x) v = nd(g);
            QuantizeArgs a;
            a.src = {x.data(), DType::F32, 3, cols};
            a.format = f;
            a.group = ggml ? tr.block : cols;
            a.symmetric = sym == 0;
            a.search = search == 1 ? Search::Mse : Search::None;
            a.importance = search == 2 ? imp.data() : nullptr;
            a.kernel = k;
            const Output lo = run(a, 0x00), hi = run(a, 0xff);
            check(lo.status.ok() && lo == hi, std::string("every output byte written: ") + qformat_traits(f).name +
                                                  " cols=" + std::to_string(cols) + (search == 1 ? " mse" : "") +
                                                  (search == 2 ? " weighted" : "") + (sym ? " asym" : "") +
                                                  (k == Kernel::Reference ? " reference" : k == Kernel::Avx2 ? " avx2" : " avx512"));
          }
        }
      }
    }
  }
}

void test_thread_pool() {
  // concurrent callers, each with its own parallel_for, all complete
  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&] {
      for (int rep = 0; rep < 50; ++rep) {
        parallel_for(1000, 7, [&](int64_t b, int64_t e) { total += e - b; }, 2);
      }
    });
  }
  for (auto& c : callers) c.join();
  check(total.load() == 4 * 50 * 1000, "parallel_for covers every index exactly once under concurrency");
}

// An input rewritten while it is quantized (an async JS caller writing into
// it): another thread flips one value between NaN and 1 while rows are
// quantized over and over with nonFinite 'error'. Each call must either
// report a non-finite value or write every output byte: a value found bad
// and then read again as finite must not leave its group unwritten (stale
// memory handed back as codes). The writes race with the kernel's reads on
// purpose. Outputs are prefilled with 0xee; sin() data never gives a run of
// 16 such bytes. The race needs both threads on a core at once: each case
// runs until the kernel has seen the NaN a thousand times (or a cap).
// The int formats have no AVX-512 code, so SLIMTENSOR_ISA=avx2 runs their
// AVX2 kernel again: they run once (5 s of CPU under ASan). Q8_0 and Q4_0
// rows of 8 blocks take AVX-512's batches, or with SLIMTENSOR_ISA=avx2
// AVX2's: they run under both.
void test_input_changed_during_call() {
  struct Case {
    QFormat format;
    int64_t cols, at;
  };
  const bool all = !std::getenv("SLIMTENSOR_ISA");
  if (!all) st::test::isa_independent("input rewritten during the call (int4, int8)");
  for (const Case c : {Case{QFormat::Int8, 256, 0}, Case{QFormat::Int8, 256, 100}, Case{QFormat::Int4, 512, 300}, Case{QFormat::Q8_0, 256, 40},
                       Case{QFormat::Q4_0, 32, 5}, Case{QFormat::Q4_0, 256, 100}}) {
    if (!all && !qformat_traits(c.format).ggml) continue;
    std::vector<float> x(static_cast<size_t>(c.cols));
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(static_cast<float>(i));
    x[static_cast<size_t>(c.at)] = 1.0f;
    std::atomic<bool> stop{false}, running{false};
    std::thread flipper([&] {
      volatile float* p = &x[static_cast<size_t>(c.at)];
      running = true;
      while (!stop.load(std::memory_order_relaxed)) {
        *p = NAN;
        *p = 1.0f;
      }
    });
    const bool ggml = qformat_traits(c.format).ggml;
    const QuantSizes sz = quant_sizes(c.format, c.cols, ggml ? 32 : c.cols);
    std::vector<uint8_t> data(static_cast<size_t>(sz.data_row_bytes));
    std::vector<uint16_t> scales(static_cast<size_t>(sz.groups_per_row) + 1);
    while (!running.load()) std::this_thread::yield();
    int ok = 0, reported = 0, stale = 0, rep = 0;
    for (; rep < 200000 && (reported < 1000 || rep < 20000); ++rep) {
      QuantizeArgs a;
      a.src = {x.data(), DType::F32, 1, c.cols};
      a.format = c.format;
      a.group = ggml ? 32 : c.cols;
      a.threads = 1;
      a.data = data.data();
      a.scales = scales.data();
      std::fill(data.begin(), data.end(), uint8_t{0xee});
      const Status s = quantize(a);
      if (!s.ok()) {
        reported += s.code == Code::Value;
        continue;
      }
      ++ok;
      int run = 0, longest = 0;
      for (uint8_t b : data) longest = std::max(longest, run = b == 0xee ? run + 1 : 0);
      stale += longest >= 16;
    }
    stop = true;
    flipper.join();
    check(stale == 0 && ok + reported == rep, std::string("input rewritten during the call, ") + qformat_traits(c.format).name + " at " +
                                                     std::to_string(c.at) + ": " + std::to_string(ok) + " written, " + std::to_string(reported) +
                                                     " reported, " + std::to_string(stale) + " left unwritten");
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string fixtures = argc > 1 ? argv[1] : "test/fixtures/ggml";
  // The AVX2 kernels run their AVX-512 search loops where AVX-512 is
  // enabled: the AVX2 checks below then cover those loops (and, under
  // SLIMTENSOR_ISA=avx2, the AVX2 ones).
  isa_usable(Isa::Avx512, "the AVX-512 search loops");
  test_ggml_vectors(fixtures);
  test_avx2_matches_reference();
  test_error_avx2_matches_reference();
  test_error_rows_unrelated_values();
  test_search_degenerate_ranges();
  test_non_finite_first_index();
  test_non_finite_ggml();
  test_every_output_byte_written();
  test_thread_pool();
  test_input_changed_during_call();
  return st::test::finish("native quant core");
}
