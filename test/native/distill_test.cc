// Native tests of the distill core, built with AddressSanitizer and
// UndefinedBehaviorSanitizer by scripts/native-test.cjs: the accuracy of the
// AVX2 and AVX-512 kernels' exp and log1p, both kernels against the scalar
// reference (every divergence, dtype, temperature, top-k, ragged row
// lengths, ignored rows, in place), AVX-512 against AVX2 bit for bit
// (including the non-temporal gradient stores at every row alignment),
// every gradient element written, results independent of the thread count,
// and the first bad input named. native-test.cjs runs it twice: with every
// ISA the CPU has, and with SLIMTENSOR_ISA=avx2 (the AVX-512 tests skip, and
// so does the 32 MiB streamed-gradient check, which names its kernels).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "cpu.h"
#include "distill/distill.h"
#include "distill/distill_cuda.h"
#include "distill/distill_kernels.h"
#include "fake_device.h"
#include "numeric.h"

using namespace st;
using st::test::check;

namespace {

// The bounds stated in the README (measured once over every f32 input
// with a normal result, in [-87.33, 88]: see the README); log1p on [0, 1]
// 8.33e-8 absolute. Here a strided sample.
constexpr double kExpMaxRelErr = 1e-7;       // normal results
constexpr double kLog1pMaxAbsErr = 1e-7;     // log1p(e), e in [0, 1]
// AVX2 vs reference: both compute in f32 (sums in double), with a
// different exp: the reference's std::exp (< 1 ulp), the kernel's vexp
// (< 1 ulp) of the block-relative logit times a per-block factor (itself a
// vexp), so a probability carries up to ~3 ulps (3.6e-7) more. Per element
// the gradient may differ by kGradTol relative to the magnitude of its
// parts (see elem_scale: differences of probabilities can cancel to far
// below either); the loss by kLossTol relative. Measured worst: 1.2e-6 and
// 3.9e-7.
constexpr double kGradTol = 2e-6;
constexpr double kLossTol = 2e-6;
constexpr double kLossAbs = 1e-7;  // per row

// The SIMD builds of the kernel and their array forms of exp and log1p.
struct Isa {
  const char* name;
  Kernel kernel;
  bool (*exp)(const float*, float*, int64_t);
  bool (*log1p01)(const float*, float*, int64_t);
};
const Isa kAvx2{"AVX2", Kernel::Avx2, avx2::exp_array, avx2::log1p01_array};
const Isa kAvx512{"AVX-512", Kernel::Avx512, avx512::exp_array, avx512::log1p01_array};

// Whether `isa` may run here; if not, records `what` as skipped and why
// (the binary also runs under SLIMTENSOR_ISA=avx2, which turns AVX-512 off
// on a CPU that has it).
bool usable(const Isa& isa, const char* what) {
  return st::test::isa_usable(isa.kernel == Kernel::Avx512 ? st::test::Isa::Avx512 : st::test::Isa::Avx2, what);
}

void test_exp_accuracy(const Isa& isa) {
  if (!usable(isa, "exp and log1p accuracy")) return;
  // Every 499th f32 in [-87.33, 88] (about 4.5 million values), every
  // f32 near the ends of the range, and around the worst input found by the
  // exhaustive measurement.
  std::vector<float> x;
  auto add_range = [&](float lo, float hi, uint32_t stride) {
    // walk the bit patterns of [lo, hi] (same sign) with the stride
    uint32_t a = f32_bits(lo), b = f32_bits(hi);
    if (a > b) std::swap(a, b);
    for (uint32_t u = a; u <= b && u >= a; u += stride) x.push_back(bits_f32(u));
  };
  add_range(0.0f, 88.0f, 499);
  add_range(-0.0f, -87.33f, 499);
  add_range(87.9f, 88.0f, 1);
  add_range(-87.3f, -87.33f, 1);
  add_range(-5.8911f, -5.8912f, 1);
  std::vector<float> y(x.size());
  check(isa.exp(x.data(), y.data(), static_cast<int64_t>(x.size())), std::string(isa.name) + " exp built");
  double worst = 0;
  float worst_x = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double e = std::exp(static_cast<double>(x[i]));
    const double rel = std::fabs(static_cast<double>(y[i]) - e) / e;
    if (rel > worst) { worst = rel; worst_x = x[i]; }
  }
  std::printf("%s exp: max relative error %.3g at x = %.9g over %zu inputs\n", isa.name, worst, worst_x, x.size());
  check(worst <= kExpMaxRelErr, std::string(isa.name) + " exp max relative error " + std::to_string(worst));

  // Below the normal range: results of [-87.5, -87.33] are subnormals
  // rounded once (within 2^-149 of the truth); below -87.5 the result is 0
  // (the truth is under 1.0e-38), as for -Infinity and NaN (clamped like
  // dm::floor_log).
  std::vector<float> xs;
  for (float v = -87.34f; v > -104.0f; v -= 0.0137f) xs.push_back(v);
  xs.push_back(-104.0f);
  xs.push_back(-1e30f);
  xs.push_back(-INFINITY);
  xs.push_back(NAN);
  std::vector<float> ys(xs.size());
  isa.exp(xs.data(), ys.data(), static_cast<int64_t>(xs.size()));
  double worst_abs = 0;
  bool flushed = true;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (xs[i] >= -87.5f) worst_abs = std::max(worst_abs, std::fabs(static_cast<double>(ys[i]) - std::exp(static_cast<double>(xs[i]))));
    else flushed = flushed && ys[i] == 0.0f;
  }
  check(worst_abs <= std::ldexp(1.0, -149), std::string(isa.name) + " exp subnormal results within 2^-149");
  check(flushed, std::string(isa.name) + " exp below -87.5, of -Infinity and of NaN is 0");
  const float big[2] = {88.0f, 1e30f};
  float ybig[2];
  isa.exp(big, ybig, 2);
  check(std::isfinite(ybig[0]) && ybig[1] == ybig[0], std::string(isa.name) + " exp saturates at e^88");

  std::vector<float> e;
  for (uint32_t u = 0; u <= f32_bits(1.0f); u += 401) e.push_back(bits_f32(u));
  e.push_back(1.0f);
  std::vector<float> l(e.size());
  check(isa.log1p01(e.data(), l.data(), static_cast<int64_t>(e.size())), std::string(isa.name) + " log1p built");
  double worst_l = 0, worst_lrel = 0;
  for (size_t i = 0; i < e.size(); ++i) {
    const double t = std::log1p(static_cast<double>(e[i]));
    const double d = std::fabs(static_cast<double>(l[i]) - t);
    worst_l = std::max(worst_l, d);
    if (t > 1e-30) worst_lrel = std::max(worst_lrel, d / t);
  }
  std::printf("%s log1p on [0, 1]: max absolute error %.3g, relative %.3g over %zu inputs\n", isa.name, worst_l, worst_lrel, e.size());
  check(worst_l <= kLog1pMaxAbsErr, std::string(isa.name) + " log1p max absolute error " + std::to_string(worst_l));
}

// The AVX-512 exp and log1p restate the AVX2 ones with VSCALEFPS and mask
// registers (distill_avx512.cc): the same bits on every input class. exp:
// a strided walk over all 2^32 patterns (both signs, NaNs, infinities,
// subnormal inputs), every f32 whose result is subnormal or about to be
// flushed ([-88, -87.3]), and every f32 next to the upper clamp; log1p: a
// strided walk of [0, 1] and both ends exhaustively.
void test_avx512_exp_bits() {
  if (!usable(kAvx2, "AVX-512 vs AVX2 exp and log1p bits") || !usable(kAvx512, "AVX-512 vs AVX2 exp and log1p bits")) return;
  size_t n_in = 0, n_diff = 0;
  float first_bad = 0;
  auto compare = [&](const std::vector<float>& x, bool log1p) {
    std::vector<float> a(x.size()), b(x.size());
    const int64_t n = static_cast<int64_t>(x.size());
    if (log1p) {
      avx2::log1p01_array(x.data(), a.data(), n);
      avx512::log1p01_array(x.data(), b.data(), n);
    } else {
      avx2::exp_array(x.data(), a.data(), n);
      avx512::exp_array(x.data(), b.data(), n);
    }
    for (size_t i = 0; i < x.size(); ++i) {
      if (f32_bits(a[i]) != f32_bits(b[i])) {
        if (n_diff++ == 0) first_bad = x[i];
      }
    }
    n_in += x.size();
  };
  auto walk = [](uint32_t lo, uint32_t hi, uint32_t stride) {
    std::vector<float> x;
    for (uint64_t u = lo; u <= hi; u += stride) x.push_back(bits_f32(static_cast<uint32_t>(u)));
    return x;
  };
  // All 2^32 patterns, stride 251, in 16 slices (bounded memory); odd
  // slice sizes exercise the masked tail.
  for (uint64_t s = 0; s < 16; ++s) compare(walk(static_cast<uint32_t>(s << 28) + static_cast<uint32_t>(s), static_cast<uint32_t>(((s + 1) << 28) - 1), 251), false);
    compare(walk(f32_bits(-87.3f), f32_bits(-88.0f), 1), false);                // [-88, -87.3]
  compare(walk(f32_bits(87.9f), f32_bits(88.01f), 1), false);               // the upper clamp
  compare({0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, bits_f32(0x7f800001u), bits_f32(0xffc00001u), -87.5f, std::nextafter(-87.5f, -100.0f),
           std::nextafter(-87.5f, 0.0f), 88.0f, std::nextafter(88.0f, 100.0f), 1e-45f, -1e-45f, 1e-38f, -1e-38f},
          false);
  const size_t exp_in = n_in, exp_diff = n_diff;
  check(exp_diff == 0, "AVX-512 exp differs from AVX2 on " + std::to_string(exp_diff) + " inputs, first x = " + std::to_string(first_bad));
  n_in = n_diff = 0;
  compare(walk(0, f32_bits(1.0f), 97), true);
  compare(walk(0, 0x00100000u, 1), true);                                // 0 and the subnormals / tiny values
  compare(walk(f32_bits(0.41421356f) - 4096, f32_bits(0.41421356f) + 4096, 1), true);  // around the k = 0 / 1 switch
  compare(walk(f32_bits(1.0f) - 65536, f32_bits(1.0f), 1), true);
  check(n_diff == 0, "AVX-512 log1p differs from AVX2 on " + std::to_string(n_diff) + " inputs, first e = " + std::to_string(first_bad));
  std::printf("AVX-512 vs AVX2: exp identical on %zu inputs, log1p on %zu\n", exp_in, n_in);
}

// ---------------------------------------------------------------------------

struct Case {
  int64_t rows, cols;
  DType zt, tt;
  float temperature, alpha, beta;
  Divergence div;
  Reduction red;
  int64_t k;          // > 0: top-k teacher
  bool ignore_some;   // some rows ignored
  float scale;        // logit spread
  std::string name() const {
    char buf[200];
    std::snprintf(buf, sizeof buf, "%lldx%lld z=%s t=%s T=%g a=%g b=%g div=%d red=%d k=%lld ign=%d scale=%g",
                  static_cast<long long>(rows), static_cast<long long>(cols), dtype_name(zt), dtype_name(tt), temperature,
                  alpha, beta, static_cast<int>(div), static_cast<int>(red), static_cast<long long>(k), ignore_some ? 1 : 0, scale);
    return buf;
  }
};

struct Inputs {
  std::vector<uint8_t> z, t;
  std::vector<int32_t> labels, idx;
  std::vector<float> lp;
};

std::vector<uint8_t> encode(const std::vector<float>& v, DType d) {
  std::vector<uint8_t> out(v.size() * dtype_size(d));
  for (size_t i = 0; i < v.size(); ++i) {
    if (d == DType::F32) std::memcpy(out.data() + 4 * i, &v[i], 4);
    else {
      const uint16_t h = d == DType::F16 ? f32_to_f16(v[i]) : f32_to_bf16(v[i]);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  return out;
}

Inputs make_inputs(const Case& c, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> nd;
  const size_t n = static_cast<size_t>(c.rows * c.cols);
  std::vector<float> z(n), t(n);
  for (size_t i = 0; i < n; ++i) {
    z[i] = nd(g) * c.scale;
    t[i] = nd(g) * c.scale + 0.5f * z[i];
  }
  // A few masked teacher entries (−Infinity): p = 0 there.
  if (c.cols > 1) for (size_t i = 3; i < n; i += 17) t[i] = -INFINITY;
  Inputs in;
  in.z = encode(z, c.zt);
  in.t = encode(t, c.tt);
  in.labels.resize(static_cast<size_t>(c.rows));
  for (int64_t r = 0; r < c.rows; ++r) in.labels[static_cast<size_t>(r)] = c.ignore_some && r % 3 == 1 ? -100 : static_cast<int32_t>(g() % c.cols);
  if (c.k > 0) {
    std::vector<int32_t> perm(static_cast<size_t>(c.cols));
    for (int64_t r = 0; r < c.rows; ++r) {
      for (int64_t j = 0; j < c.cols; ++j) perm[static_cast<size_t>(j)] = static_cast<int32_t>(j);
      std::shuffle(perm.begin(), perm.end(), g);
      for (int64_t i = 0; i < c.k; ++i) {
        in.idx.push_back(perm[static_cast<size_t>(i)]);
        in.lp.push_back(c.k > 1 && i == c.k - 1 && r % 2 ? -INFINITY : -0.3f * static_cast<float>(i) - std::fabs(nd(g)));
      }
    }
  }
  return in;
}

struct Result {
  Status st;
  DistillResult res;
  std::vector<float> rows;
  std::vector<float> grad;  // as f32
  std::vector<uint8_t> grad_raw;
};

DistillArgs make_args(const Case& c, const Inputs& in) {
  DistillArgs a;
  a.student = {in.z.data(), c.zt, c.rows, c.cols};
  if (c.k > 0) {
    a.teacher = {nullptr, DType::F32, c.rows, c.cols};
    a.topk_indices = in.idx.data();
    a.topk_logprobs = in.lp.data();
    a.k = c.k;
  } else {
    a.teacher = {in.t.data(), c.tt, c.rows, c.cols};
  }
  a.labels = in.labels.data();
  a.temperature = c.temperature;
  a.alpha = c.alpha;
  a.beta = c.beta;
  a.divergence = c.div;
  a.reduction = c.red;
  return a;
}

Result run(const Case& c, const Inputs& in, Kernel kernel, int threads, uint8_t fill = 0xcd) {
  Result r;
  DistillArgs a = make_args(c, in);
  a.kernel = kernel;
  a.threads = threads;
  const size_t n = static_cast<size_t>(c.rows * c.cols);
  r.grad_raw.assign(n * dtype_size(c.zt), fill);
  r.rows.assign(static_cast<size_t>(c.rows), -1.0f);
  a.grad = r.grad_raw.data();
  a.row_loss = r.rows.data();
  r.st = distill_loss(a, &r.res);
  r.grad.resize(n);
  for (size_t i = 0; i < n; ++i) r.grad[i] = dm::load_logit(r.grad_raw.data(), c.zt, static_cast<int64_t>(i));
  return r;
}

// The magnitude of an element's gradient parts, α·T·(q + p) + (1 − α)·(s + 1),
// times the reduction scale, estimated in double from the inputs: the
// yardstick for the per-element AVX2-vs-reference tolerance (a difference
// of two probabilities can cancel to far below either).
std::vector<double> elem_scale(const Case& c, const Inputs& in, double scale) {
  const size_t n = static_cast<size_t>(c.rows * c.cols);
  std::vector<double> out(n, 0.0);
  for (int64_t r = 0; r < c.rows; ++r) {
    const int64_t b = r * c.cols;
    double mz = -INFINITY, mt = -INFINITY;
    for (int64_t j = 0; j < c.cols; ++j) {
      mz = std::max(mz, static_cast<double>(dm::load_logit(in.z.data(), c.zt, b + j)));
      if (c.k == 0) mt = std::max(mt, static_cast<double>(dm::load_logit(in.t.data(), c.tt, b + j)));
    }
    double su = 0, sz = 0, st = 0;
    for (int64_t j = 0; j < c.cols; ++j) {
      const double z = dm::load_logit(in.z.data(), c.zt, b + j);
      su += std::exp((z - mz) / c.temperature);
      sz += std::exp(z - mz);
      if (c.k == 0) st += std::exp((dm::load_logit(in.t.data(), c.tt, b + j) - mt) / c.temperature);
    }
    for (int64_t j = 0; j < c.cols; ++j) {
      const double z = dm::load_logit(in.z.data(), c.zt, b + j);
      const double q = std::exp((z - mz) / c.temperature) / su, s = std::exp(z - mz) / sz;
      const double p = c.k == 0 ? std::exp((dm::load_logit(in.t.data(), c.tt, b + j) - mt) / c.temperature) / st : 1.0;
      // reverse-kl and jsd multiply q by log-ratios of size up to ~|log q|+|log p|
      const double lr = c.div == Divergence::ForwardKL ? 1.0 : 1.0 + std::fabs(std::log(std::max(q, 1e-30))) + std::fabs(std::log(std::max(p, 1e-30)));
      out[static_cast<size_t>(b + j)] = (c.alpha * c.temperature * (q * lr + p) + (1 - c.alpha) * (s + 1)) * scale;
    }
  }
  return out;
}


// Every divergence, dtype pair, temperature (1, 2: the squared-exp path,
// 0.7), alpha (including 0 and 1), reduction, top-k, ignored rows, row
// lengths around the 16-lane vector and 128-logit block, large logits and
// vocabulary-sized rows.
std::vector<Case> kernel_cases() {
  std::vector<Case> cases;
  const int64_t lens[] = {1, 7, 8, 9, 63, 64, 65, 200, 1031};
  const DType dts[] = {DType::F32, DType::F16, DType::BF16};
  const Divergence divs[] = {Divergence::ForwardKL, Divergence::ReverseKL, Divergence::JSD};
  int i = 0;
  for (int64_t v : lens) {
    for (Divergence d : divs) {
      for (DType zt : dts) {
        const DType tt = dts[(i++) % 3];
        const float T = (i % 3 == 0) ? 1.0f : (i % 3 == 1 ? 2.0f : 0.7f);
        const float alpha = (i % 4 == 0) ? 1.0f : (i % 4 == 1 ? 0.5f : (i % 4 == 2 ? 0.0f : 0.3f));
        cases.push_back({5, v, zt, tt, T, alpha, d == Divergence::JSD ? 0.3f : 0.5f, d, static_cast<Reduction>(i % 3), 0, i % 2 == 0, 2.0f});
      }
    }
    cases.push_back({6, v, DType::F32, DType::F32, 2.0f, 0.5f, 0.5f, Divergence::ForwardKL, Reduction::Mean, std::min<int64_t>(v, 5), true, 2.0f});
    cases.push_back({4, v, DType::BF16, DType::F32, 1.0f, 0.7f, 0.5f, Divergence::ForwardKL, Reduction::Sum, v, false, 1.0f});
  }
  // Large logits (±1e4 spreads), long rows.
  cases.push_back({3, 300, DType::F32, DType::F32, 1.5f, 0.5f, 0.5f, Divergence::ForwardKL, Reduction::Mean, 0, false, 5000.0f});
  cases.push_back({3, 300, DType::F32, DType::F32, 1.0f, 0.5f, 0.5f, Divergence::ReverseKL, Reduction::Mean, 0, false, 3000.0f});
  cases.push_back({3, 300, DType::F32, DType::F32, 3.0f, 0.5f, 0.4f, Divergence::JSD, Reduction::Mean, 0, false, 3000.0f});
  cases.push_back({2, 32000, DType::F32, DType::F32, 2.0f, 0.5f, 0.5f, Divergence::ForwardKL, Reduction::Mean, 0, false, 3.0f});
  cases.push_back({2, 32000, DType::F16, DType::F16, 1.0f, 0.5f, 0.5f, Divergence::JSD, Reduction::Mean, 0, false, 3.0f});
  return cases;
}

void test_simd_matches_reference(const Isa& isa) {
  if (!usable(isa, "kernel vs reference")) return;
  const std::vector<Case> cases = kernel_cases();
  double worst_g = 0, worst_l = 0;
  uint32_t seed = 1;
  for (const Case& c : cases) {
    const Inputs in = make_inputs(c, seed++);
    const Result ref = run(c, in, Kernel::Reference, 1);
    const Result avx = run(c, in, isa.kernel, 2);
    const std::string tag = std::string(isa.name) + " " + c.name();
    check(ref.st.ok() && avx.st.ok(), tag + ": " + ref.st.message + " / " + avx.st.message);
    if (!ref.st.ok() || !avx.st.ok()) continue;
    check(ref.res.kept_rows == avx.res.kept_rows, tag + ": kept rows");
    // Relative, with an absolute floor for losses that are themselves
    // rounding noise (e.g. jsd of a one-logit vocabulary, exactly 0).
    auto loss_ok = [&](double a, double b, double rows) {
      const double d = std::fabs(a - b);
      if (std::fabs(b) > 0.1) worst_l = std::max(worst_l, d / std::fabs(b));
      return d <= kLossTol * std::fabs(b) + kLossAbs * rows;
    };
    check(loss_ok(avx.res.loss, ref.res.loss, c.red == Reduction::Mean ? 1.0 : static_cast<double>(c.rows)), tag + ": loss " + std::to_string(ref.res.loss) + " vs " + std::to_string(avx.res.loss));
    for (int64_t r = 0; r < c.rows; ++r) {
      check(loss_ok(avx.rows[static_cast<size_t>(r)], ref.rows[static_cast<size_t>(r)], 1.0), tag + ": row loss " + std::to_string(r));
    }
    const double scale = c.red == Reduction::Mean && ref.res.kept_rows > 0 ? 1.0 / static_cast<double>(ref.res.kept_rows) : 1.0;
    const std::vector<double> es = elem_scale(c, in, scale);
    // 16-bit gradients: the rounding to the output dtype can turn a tiny
    // difference into one unit of the output (relative spacing 2^-10 for
    // f16, 2^-7 for bf16; 2^-24 absolute among f16 subnormals).
    const double out_ulp = c.zt == DType::F32 ? 0 : c.zt == DType::F16 ? std::ldexp(1.0, -10) : std::ldexp(1.0, -7);
    const double out_abs = c.zt == DType::F16 ? std::ldexp(1.0, -24) : 0;
    double worst_case = 0;
    size_t bad = 0;
    for (size_t e = 0; e < ref.grad.size(); ++e) {
      const double d = std::fabs(static_cast<double>(avx.grad[e]) - ref.grad[e]);
      const double allowed = kGradTol * es[e] + out_ulp * std::fabs(ref.grad[e]) + out_abs + 1e-30;
      worst_case = std::max(worst_case, d / (es[e] + 1e-30));
      if (d > allowed) ++bad;
    }
    if (c.zt == DType::F32) worst_g = std::max(worst_g, worst_case);
    check(bad == 0, tag + ": " + std::to_string(bad) + " gradient elements differ beyond the tolerance (worst " + std::to_string(worst_case) + ")");
  }
  std::printf("%s vs reference over %zu cases: worst loss relative difference %.3g (losses > 0.1), worst f32 gradient difference %.3g of the element's scale\n",
              isa.name, cases.size(), worst_l, worst_g);
}

// AVX-512 against AVX2: every loss, row loss and gradient byte equal, on
// the reference-comparison cases and on row lengths around the 16-lane
// vector and the 128-logit block (the masked tails of the AVX-512 build,
// the buffered ones of AVX2), at several temperatures including the
// T = 2 squared-exp path.
void test_avx512_matches_avx2() {
  if (!usable(kAvx2, "AVX-512 vs AVX2 bits") || !usable(kAvx512, "AVX-512 vs AVX2 bits")) return;
  std::vector<Case> cases = kernel_cases();
  const DType dts[] = {DType::F32, DType::F16, DType::BF16};
  const Divergence divs[] = {Divergence::ForwardKL, Divergence::ReverseKL, Divergence::JSD};
  const float temps[] = {1.0f, 2.0f, 0.5f, 3.0f};
  const float alphas[] = {0.5f, 1.0f, 0.0f, 0.8f};
  int i = 0;
  for (int64_t v : {15, 16, 17, 31, 127, 128, 129, 255, 256, 257, 2049}) {
    for (Divergence d : divs) {
      ++i;
      cases.push_back({4, v, dts[i % 3], dts[(i / 3) % 3], temps[i % 4], alphas[(i / 4) % 4], 0.25f, d, static_cast<Reduction>(i % 3), 0, i % 2 == 1,
                       i % 5 == 0 ? 4000.0f : 2.5f});
    }
    cases.push_back({5, v, dts[i % 3], DType::F32, 2.0f, 0.5f, 0.5f, Divergence::ForwardKL, Reduction::Mean, std::min<int64_t>(v, 40), true, 2.0f});
  }
  int same = 0;
  uint32_t seed = 1000;
  for (const Case& c : cases) {
    const Inputs in = make_inputs(c, seed++);
    const Result a = run(c, in, Kernel::Avx2, 2);
    const Result b = run(c, in, Kernel::Avx512, 2, 0x5a);
    check(a.st.ok() && b.st.ok(), "AVX-512 vs AVX2 " + c.name() + ": " + a.st.message + " / " + b.st.message);
    const bool eq = a.res.loss == b.res.loss && a.res.kept_rows == b.res.kept_rows && a.grad_raw == b.grad_raw &&
                    std::memcmp(a.rows.data(), b.rows.data(), a.rows.size() * sizeof(float)) == 0;
    check(eq, "AVX-512 vs AVX2 " + c.name() + ": not the same bits");
    same += eq;
  }
  std::printf("AVX-512 vs AVX2: %d of %zu cases identical bit for bit\n", same, cases.size());
}

// Large out-of-place gradients (>= 32 MiB) leave through non-temporal
// stores. The AVX-512 streamer writes whole 64-byte lines, joining two
// vectors when a row starts 4, 8 or 12 floats past a line boundary, and
// stores a row that is not 16-byte aligned normally; 16-bit gradients go
// out 16 bytes at a time. Each kernel's streamed gradient must equal its
// in-place gradient (ordinary stores) byte for byte, and AVX-512 the AVX2
// bytes, at every line offset of the buffer.
//
// The heaviest check here, and one that names each kernel: SLIMTENSOR_ISA
// (which only changes what Kernel::Auto picks and whether AVX-512 may run)
// cannot change what it computes, so it runs once.
void test_streamed_gradients() {
  if (!st::test::isa_independent("streamed gradients")) return;
  if (!usable(kAvx2, "streamed gradients")) return;
  const bool with512 = usable(kAvx512, "streamed gradients");
  struct Big {
    Case c;
    std::vector<size_t> offsets;  // of the gradient buffer past a 64-byte boundary
  };
  const Big bigs[] = {
      // every row at the same line offset: o = 0, 4, 8, 12 floats
      {{4100, 2048, DType::F32, DType::F32, 2.0f, 0.5f, 0.5f, Divergence::ForwardKL, Reduction::Mean, 0, true, 2.0f}, {0, 16, 32, 48}},
      // 2 logits past a multiple of 16: the line offset moves by 8 bytes a row,
      // so rows alternate between unaligned (ordinary stores) and o = 0, 4, 8,
      // 12, each with a 2-float tail. (Rows shorter than a vector, a million
      // of them to reach 32 MiB, take a minute under the sanitizers:
      // test/distill.test.ts covers those.)
      {{260, 32770, DType::F32, DType::F32, 2.0f, 0.7f, 0.5f, Divergence::ReverseKL, Reduction::Mean, 0, false, 3.0f}, {16}},
      {{520, 32770, DType::BF16, DType::BF16, 2.0f, 0.5f, 0.5f, Divergence::ForwardKL, Reduction::Mean, 0, true, 3.0f}, {16}},
      {{8200, 2050, DType::F16, DType::F32, 1.0f, 0.5f, 0.5f, Divergence::JSD, Reduction::None, 0, false, 2.0f}, {48}},
  };
  // 32 MiB buffers are reused, not reallocated: under ASan every fresh one
  // costs a page fault per 4 KiB (most of this test's time).
  std::vector<uint8_t> inplace, buf, avx2_grad;
  for (const Big& big : bigs) {
    const Case& c = big.c;
    const Inputs in = make_inputs(c, 4242);
    const size_t bytes = static_cast<size_t>(c.rows * c.cols) * dtype_size(c.zt);
    check(bytes >= (size_t{32} << 20), c.name() + ": large enough to stream");
    buf.resize(bytes + 128);
    for (Kernel k : {Kernel::Avx2, Kernel::Avx512}) {
      if (k == Kernel::Avx512 && !with512) continue;
      const std::string tag = std::string(k == Kernel::Avx2 ? "AVX2 " : "AVX-512 ") + c.name();
      inplace.assign(in.z.begin(), in.z.end());
      DistillArgs ap = make_args(c, in);
      ap.student.data = inplace.data();
      ap.kernel = k;
      ap.grad = inplace.data();
      DistillResult rp;
      check(distill_loss(ap, &rp).ok(), tag + ": in place runs");
      uint8_t* line = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t{63});
      for (size_t off : big.offsets) {
        std::memset(buf.data(), 0xa5, buf.size());
        DistillArgs a = make_args(c, in);
        a.kernel = k;
        a.grad = line + off;
        DistillResult r;
        check(distill_loss(a, &r).ok(), tag + ": runs");
        check(std::memcmp(line + off, inplace.data(), bytes) == 0 && r.loss == rp.loss,
              tag + " at line offset " + std::to_string(off) + ": streamed gradient equals the in-place one");
        bool fence = true;  // nothing written before or after the gradient
        for (uint8_t* q = buf.data(); q < line + off; ++q) fence = fence && *q == 0xa5;
        for (uint8_t* q = line + off + bytes; q < buf.data() + buf.size(); ++q) fence = fence && *q == 0xa5;
        check(fence, tag + " at line offset " + std::to_string(off) + ": writes stay inside the gradient");
      }
      if (k == Kernel::Avx2) avx2_grad.swap(inplace);
      else check(inplace == avx2_grad, c.name() + ": AVX-512 and AVX2 gradients are the same bytes");
    }
  }
  std::printf("streamed gradients: %zu sizes checked%s\n", sizeof bigs / sizeof bigs[0], with512 ? " (AVX2 and AVX-512)" : " (AVX2)");
}

void test_every_gradient_written_and_threads() {
  const Case c{9, 77, DType::F16, DType::BF16, 2.0f, 0.4f, 0.5f, Divergence::JSD, Reduction::Mean, 0, true, 1.5f};
  const Case ck{9, 77, DType::BF16, DType::F32, 1.0f, 0.4f, 0.5f, Divergence::ForwardKL, Reduction::Sum, 6, true, 1.5f};
  const bool avx2 = usable(kAvx2, "every gradient written, thread counts"), avx512 = usable(kAvx512, "every gradient written, thread counts");
  for (const Case& cc : {c, ck}) {
    const Inputs in = make_inputs(cc, 99);
    for (Kernel k : {Kernel::Reference, Kernel::Avx2, Kernel::Avx512}) {
      if ((k == Kernel::Avx2 && !avx2) || (k == Kernel::Avx512 && !avx512)) continue;
      const Result a = run(cc, in, k, 1, 0x00);
      const Result b = run(cc, in, k, 2, 0xff);
      check(a.st.ok() && b.st.ok(), cc.name() + ": runs");
      check(a.grad_raw == b.grad_raw, cc.name() + ": every gradient byte written, independent of the thread count");
      check(a.rows == b.rows && a.res.loss == b.res.loss, cc.name() + ": losses independent of the thread count");
      // ignored rows: zero gradient and zero loss
      for (int64_t r = 1; r < cc.rows; r += 3) {
        bool zero = a.rows[static_cast<size_t>(r)] == 0;
        for (int64_t j = 0; j < cc.cols; ++j) zero = zero && a.grad[static_cast<size_t>(r * cc.cols + j)] == 0;
        check(zero, cc.name() + ": ignored row " + std::to_string(r) + " has zero loss and gradient");
      }
      // in place: the gradient written over the student equals out of place
      Inputs io = in;
      DistillArgs ar = make_args(cc, io);
      ar.kernel = k;
      ar.grad = io.z.data();
      DistillResult res;
      const Status st = distill_loss(ar, &res);
      check(st.ok() && io.z == a.grad_raw && res.loss == a.res.loss, cc.name() + ": in place equals out of place");
    }
  }
}

void test_first_bad_input() {
  Case c{40, 50, DType::F32, DType::F32, 1.0f, 0.5f, 0.5f, Divergence::ForwardKL, Reduction::Mean, 0, false, 1.0f};
  Inputs in = make_inputs(c, 5);
  auto put = [&](std::vector<uint8_t>& v, int64_t i, float x) { std::memcpy(v.data() + 4 * i, &x, 4); };
  put(in.z, 33 * 50 + 7, NAN);
  put(in.t, 21 * 50 + 9, INFINITY);
  for (int64_t j = 0; j < 50; ++j) put(in.t, 37 * 50 + j, -INFINITY);
  const bool avx2 = usable(kAvx2, "first bad input named"), avx512 = usable(kAvx512, "first bad input named");
  for (Kernel k : {Kernel::Reference, Kernel::Avx2, Kernel::Avx512}) {
    if ((k == Kernel::Avx2 && !avx2) || (k == Kernel::Avx512 && !avx512)) continue;
    const Result r = run(c, in, k, 2);
    check(r.st.code == Code::Value && r.st.message.find("teacher[21, 9] is Infinity") != std::string::npos,
          "first bad input named: " + r.st.message);
  }
  put(in.t, 21 * 50 + 9, 0.0f);
  const Result r2 = run(c, in, Kernel::Auto, 2);
  check(r2.st.message.find("student[33, 7] is NaN") != std::string::npos, "student NaN named: " + r2.st.message);
  put(in.z, 33 * 50 + 7, 0.0f);
  const Result r3 = run(c, in, Kernel::Auto, 2);
  check(r3.st.message.find("teacher row 37 is all -Infinity") != std::string::npos, "teacher row without mass: " + r3.st.message);
}

// ---------------------------------------------------------------------------
// The CUDA path's host side (distill_rows_on_device) on the fake device.
// The kernel's stand-in runs the scalar reference on the chunk's device
// copies: the CUDA kernel's contract is the reference's (a failing row
// returns before writing any gradient), so the device path must give the
// reference's bytes, chunk by chunk.

void fake_distill_launch(const DistillChunk& c, gpu::Stream s) {
  fake::device().launch(s, [c] {
    DistillArgs a;
    a.student = {c.z, c.zt, c.rows, c.cols};
    a.teacher = {c.t, c.tt, c.rows, c.cols};
    a.topk_indices = c.idx;
    a.topk_logprobs = c.lp;
    a.k = c.k;
    a.labels = c.labels;
    a.ignore_index = c.ignore;
    a.beta = c.beta;
    a.grad = c.grad;
    for (int64_t r = 0; r < c.rows; ++r) {
      const RowOut o = ref::distill_row(a, c.p, r);
      c.loss[r] = o.loss;
      c.err[r] = static_cast<int32_t>(o.error);
    }
  });
}

// The plan distill_loss() runs with.
DistillPlan plan_for(const DistillArgs& a) {
  int64_t kept = a.student.rows;
  if (a.labels) {
    kept = 0;
    for (int64_t r = 0; r < a.student.rows; ++r) kept += a.labels[r] != a.ignore_index;
  }
  return distill_plan(a, kept);
}

// SLIMTENSOR_CUDA_CHUNK_BYTES for chunks of `rows` rows of this call.
void set_chunk_rows(const DistillArgs& a, const DistillPlan& p, int64_t rows) {
  const int64_t zrow = a.student.cols * static_cast<int64_t>(dtype_size(a.student.dtype));
  const int64_t trow = p.topk ? 0 : a.student.cols * static_cast<int64_t>(dtype_size(a.teacher.dtype));
  const int64_t row = zrow + trow + (p.topk ? a.k * 12 : 0) + (p.grad ? zrow : 0) + 16;
  setenv("SLIMTENSOR_CUDA_CHUNK_BYTES", std::to_string(row * rows).c_str(), 1);
}

// No contract broken, nothing left allocated, the stream destroyed, the
// error slot clear; then a fresh fake.
void expect_clean(const std::string& tag) {
  fake::Device& d = fake::device();
  for (const std::string& v : d.violations) check(false, tag + ": fake device: " + v);
  check(d.allocs.empty(), tag + ": every device allocation freed");
  check(!d.stream_live && d.streams_created == d.streams_destroyed, tag + ": the stream destroyed");
  check(d.pending == 0, tag + ": the runtime's last-error slot is clear after the call");
  d.reset();
}

void test_device_matches_reference() {
  const Case cases[] = {
      {11, 37, DType::F32, DType::F16, 2.0f, 0.5f, 0.5f, Divergence::JSD, Reduction::Mean, 0, true, 2.0f},
      {9, 64, DType::F16, DType::F32, 1.0f, 0.3f, 0.5f, Divergence::ReverseKL, Reduction::Sum, 0, false, 1.5f},
      {10, 40, DType::BF16, DType::F32, 1.5f, 0.7f, 0.5f, Divergence::ForwardKL, Reduction::Mean, 6, true, 2.0f},
  };
  uint32_t seed = 300;
  for (const Case& c : cases) {
    for (int64_t chunk : {1, 4, 100}) {
      for (bool in_place : {false, true}) {
        const std::string tag = "device path " + c.name() + " chunk " + std::to_string(chunk) + (in_place ? " in place" : "");
        const Inputs in = make_inputs(c, seed);
        // The reference on the host, row by row.
        Inputs ri = in;
        DistillArgs ra = make_args(c, ri);
        std::vector<uint8_t> want_grad(ri.z.size(), 0x3c);
        ra.grad = in_place ? static_cast<void*>(ri.z.data()) : want_grad.data();
        const DistillPlan p = plan_for(ra);
        std::vector<RowOut> want(static_cast<size_t>(c.rows));
        for (int64_t r = 0; r < c.rows; ++r) want[static_cast<size_t>(r)] = ref::distill_row(ra, p, r);
        if (in_place) want_grad = ri.z;
        // The device path.
        Inputs di = in;
        DistillArgs da = make_args(c, di);
        std::vector<uint8_t> got_grad(di.z.size(), 0x3c);
        da.grad = in_place ? static_cast<void*>(di.z.data()) : got_grad.data();
        std::vector<RowOut> got(static_cast<size_t>(c.rows));
        set_chunk_rows(da, p, chunk);
        const Status st = distill_rows_on_device(fake::runtime(), fake_distill_launch, da, p, got.data());
        unsetenv("SLIMTENSOR_CUDA_CHUNK_BYTES");
        check(st.ok(), tag + ": " + st.message);
        if (in_place) got_grad = di.z;
        check(got_grad == want_grad, tag + ": the reference's gradient bytes");
        bool rows_eq = true;
        for (size_t r = 0; r < got.size(); ++r) rows_eq = rows_eq && got[r].loss == want[r].loss && got[r].error == want[r].error;
        check(rows_eq, tag + ": the reference's row losses");
        check(fake::device().launches == static_cast<int>((c.rows + std::min(chunk, c.rows) - 1) / std::min(chunk, c.rows)),
              tag + ": one launch per chunk");
        expect_clean(tag);
      }
    }
    ++seed;
  }
}

// A failing row in the middle of a chunk: the errors come back before any
// gradient, only the rows before the failing one get their gradients, and
// no later chunk runs. In place, the failing row (and those after it) still
// hold the student logits distill_loss() describes the error from.
void test_device_failing_row() {
  const Case c{12, 50, DType::F32, DType::F32, 1.0f, 0.5f, 0.5f, Divergence::ForwardKL, Reduction::Mean, 0, false, 1.0f};
  for (int variant = 0; variant < 2; ++variant) {
    const bool in_place = variant == 0;
    const std::string tag = std::string("device path, failing row 7 (") + (in_place ? "NaN student, in place)" : "teacher row all -Infinity)");
    Inputs in = make_inputs(c, 41);
    auto put = [](std::vector<uint8_t>& v, int64_t i, float x) { std::memcpy(v.data() + 4 * i, &x, 4); };
    if (in_place) {
      put(in.z, 7 * 50 + 13, NAN);
    } else {
      for (int64_t j = 0; j < 50; ++j) put(in.t, 7 * 50 + j, -INFINITY);
    }
    const std::vector<uint8_t> student = in.z;
    // The reference gradients of rows 0..6 (rows before the failing one).
    Inputs ri = in;
    DistillArgs ra = make_args(c, ri);
    std::vector<uint8_t> want(in.z.size(), 0);
    ra.grad = want.data();
    const DistillPlan p = plan_for(ra);
    for (int64_t r = 0; r < 7; ++r) ref::distill_row(ra, p, r);

    DistillArgs a = make_args(c, in);
    std::vector<uint8_t> grad(in.z.size(), 0x3c);
    a.grad = in_place ? static_cast<void*>(in.z.data()) : grad.data();
    std::vector<RowOut> out(static_cast<size_t>(c.rows));
    set_chunk_rows(a, p, 5);  // chunks: rows 0-4, 5-9 (row 7 fails), 10-11
    const Status st = distill_rows_on_device(fake::runtime(), fake_distill_launch, a, p, out.data());
    unsetenv("SLIMTENSOR_CUDA_CHUNK_BYTES");
    check(st.ok(), tag + ": " + st.message);
    const RowError e = in_place ? RowError::NonFinite : RowError::NoTeacher;
    check(out[7].error == e, tag + ": row 7's error is reported");
    int64_t first = -1;
    for (int64_t r = 0; r < c.rows && first < 0; ++r) first = out[static_cast<size_t>(r)].error != RowError::Ok ? r : -1;
    check(first == 7, tag + ": row 7 is the first failing row");
    const std::vector<uint8_t>& g = in_place ? in.z : grad;
    const size_t row_bytes = 50 * 4;
    check(std::memcmp(g.data(), want.data(), 7 * row_bytes) == 0, tag + ": rows 0-6 hold the reference's gradients");
    if (in_place) {
      check(std::memcmp(g.data() + 7 * row_bytes, student.data() + 7 * row_bytes, 5 * row_bytes) == 0,
            tag + ": rows 7-11 still hold the student logits (row 7 with its NaN, which distill_loss() names)");
      float z = 0;
      std::memcpy(&z, g.data() + (7 * 50 + 13) * 4, 4);
      check(std::isnan(z), tag + ": student[7, 13] is still NaN");
    } else {
      bool untouched = true;
      for (size_t i = 7 * row_bytes; i < g.size(); ++i) untouched = untouched && g[i] == 0x3c;
      check(untouched, tag + ": the gradient of rows 7-11 is not written");
    }
    fake::Device& d = fake::device();
    check(d.launches == 2, tag + ": the chunk after the failing one does not run");
    // Copies to the host: per chunk errors, losses, then gradients; the
    // failing chunk's gradient copy covers its 2 rows before row 7.
    check(d.to_host.size() == 6 && d.to_host[0].second == 5 * 4 && d.to_host[2].second == 5 * row_bytes &&
              d.to_host[3].second == 5 * 4 && d.to_host[5].second == 2 * row_bytes,
          tag + ": errors first, then the gradients of the rows before the failing one");
    expect_clean(tag);
  }
}

// Every cudaMalloc failing in turn (out of memory, ERR_UNSUPPORTED: the
// caller may fall back) and a failed launch (ERR_INTERNAL): the runtime's
// last-error slot is clear afterwards, everything is freed, and the next
// call on the same thread succeeds; before the fix a stale "out of memory"
// failed that call's launch check.
void test_device_errors_clear_the_runtime() {
  const Case c{6, 30, DType::F16, DType::F16, 2.0f, 0.4f, 0.5f, Divergence::ForwardKL, Reduction::Mean, 4, true, 1.0f};
  Inputs in = make_inputs(c, 77);
  DistillArgs a = make_args(c, in);
  std::vector<uint8_t> grad(in.z.size());
  a.grad = grad.data();
  const DistillPlan p = plan_for(a);
  std::vector<RowOut> out(static_cast<size_t>(c.rows));
  Status st = distill_rows_on_device(fake::runtime(), fake_distill_launch, a, p, out.data());
  const int allocations = fake::device().mallocs;
  check(st.ok() && allocations >= 8, "device path: a clean run (" + std::to_string(allocations) + " allocations)");
  expect_clean("device path, clean run");
  const std::vector<uint8_t> want = grad;
  for (int fail = 0; fail <= allocations; ++fail) {
    const bool launch = fail == allocations;
    const std::string tag = launch ? "device path, failed launch" : "device path, cudaMalloc #" + std::to_string(fail) + " out of memory";
    if (launch) fake::device().fail_launch_at = 0;
    else fake::device().fail_malloc_at = fail;
    std::fill(grad.begin(), grad.end(), 0);
    st = distill_rows_on_device(fake::runtime(), fake_distill_launch, a, p, out.data());
    check(launch ? st.code == Code::Internal : st.code == Code::Unsupported && st.message.find("out of memory") != std::string::npos,
          tag + ": reported as " + std::string(code_name(st.code)) + ": " + st.message);
    expect_clean(tag);
    st = distill_rows_on_device(fake::runtime(), fake_distill_launch, a, p, out.data());
    check(st.ok() && grad == want, tag + ": the next call succeeds: " + st.message);
    expect_clean(tag + ", next call");
  }
}

}  // namespace

int main() {
  for (const Isa* isa : {&kAvx2, &kAvx512}) test_exp_accuracy(*isa);
  test_avx512_exp_bits();
  for (const Isa* isa : {&kAvx2, &kAvx512}) test_simd_matches_reference(*isa);
  test_avx512_matches_avx2();
  test_streamed_gradients();
  test_every_gradient_written_and_threads();
  test_first_bad_input();
  test_device_matches_reference();
  test_device_failing_row();
  test_device_errors_clear_the_runtime();
  return st::test::finish("native distill core");
}
