// Native tests of the lowrank core, built with AddressSanitizer and
// UndefinedBehaviorSanitizer by scripts/native-test.cjs: the GEMM kernels
// (AVX2, AVX-512, skinny and packed paths) against the scalar reference bit
// for bit with every output element written; the f64 Gram and level-1/2
// kernels of each build against the baseline build; the exact SVD
// (reconstruction, orthonormality) and the randomized one; argument errors;
// concurrent calls from several threads.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "cpu.h"
#include "lowrank/gemm.h"
#include "lowrank/gemm_kernels.h"
#include "lowrank/la_kernels.h"
#include "lowrank/linalg.h"
#include "lowrank/lowrank.h"
#include "numeric.h"

using namespace st;
using st::test::check;
using st::test::Isa;
using st::test::isa_usable;

namespace {

std::vector<float> normals(std::mt19937& rng, size_t n) {
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// The SIMD GEMM kernels that run here; each one that cannot is recorded as
// a skipped variant of `what`, with the reason.
std::vector<GemmKernel> simd_kernels(const std::string& what) {
  std::vector<GemmKernel> k;
  for (GemmKernel g : {GemmKernel::Avx2, GemmKernel::Avx512}) {
    std::string why;
    if (gemm_kernel_available(g, &why)) {
      k.push_back(g);
    } else {
      st::test::skip(what + " (" + gemm_kernel_name(g) + ")", why);
    }
  }
  return k;
}

// C from `kernel`, starting from `fill` (NaN patterns prove every element is written).
std::vector<float> run_gemm(const GemmArgs& base, GemmKernel kernel, float fill, const std::vector<float>* init) {
  GemmArgs g = base;
  std::vector<float> c(static_cast<size_t>(g.m * g.ldc), fill);
  if (init) c = *init;
  g.c = c.data();
  g.kernel = kernel;
  Status s = gemm(g);
  check(s.ok(), "gemm status: " + s.message);
  return c;
}

void test_gemm_matches_reference() {
  std::mt19937 rng(1);
  // Edges of the micro tiles (6x16, 24x16), the skinny limits (8, 16) and
  // the k-slab (256); mocha's test covers larger shapes at full speed.
  const int64_t shapes[][3] = {{1, 1, 1}, {17, 33, 5}, {5, 17, 33}, {33, 5, 17}, {40, 9, 70},
                               {9, 40, 70}, {50, 37, 260}, {25, 17, 0}};
  const std::vector<GemmKernel> kernels = simd_kernels("GEMM vs reference");
  for (const auto& sh : shapes) {
    for (int variant = 0; variant < 8; ++variant) {
      const bool ta = variant & 1, tb = variant & 2, acc = variant & 4;
      const int64_t m = sh[0], n = sh[1], k = sh[2];
      const DType da = variant == 3 ? DType::F16 : DType::F32, db = variant == 5 ? DType::BF16 : DType::F32;
      const int64_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1;
      std::vector<float> af = normals(rng, static_cast<size_t>((ta ? k : m) * lda + 1));
      std::vector<float> bf = normals(rng, static_cast<size_t>((tb ? n : k) * ldb + 1));
      std::vector<uint16_t> ah(af.size()), bh(bf.size());
      for (size_t i = 0; i < af.size(); ++i) ah[i] = f32_to_f16(af[i]);
      for (size_t i = 0; i < bf.size(); ++i) bh[i] = f32_to_bf16(bf[i]);
      GemmArgs g;
      g.m = m;
      g.n = n;
      g.k = k;
      g.a = {da == DType::F32 ? static_cast<const void*>(af.data()) : ah.data(), da, lda, ta};
      g.b = {db == DType::F32 ? static_cast<const void*>(bf.data()) : bh.data(), db, ldb, tb};
      g.ldc = n + 2;
      g.accumulate = acc;
      const std::vector<float> init = normals(rng, static_cast<size_t>(m * g.ldc));
      const std::vector<float> ref = run_gemm(g, GemmKernel::Reference, 0, acc ? &init : nullptr);
      for (GemmKernel kernel : kernels) {
        const std::vector<float> c1 = run_gemm(g, kernel, NAN, acc ? &init : nullptr);
        const std::vector<float> c2 = run_gemm(g, kernel, 7.0f, acc ? &init : nullptr);
        bool same = true;
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t j = 0; j < n; ++j) {
            const size_t x = static_cast<size_t>(i * g.ldc + j);
            same = same && std::memcmp(&ref[x], &c1[x], 4) == 0 && std::memcmp(&c1[x], &c2[x], 4) == 0;
          }
        }
        check(same, std::string(gemm_kernel_name(kernel)) + " vs reference, shape " + std::to_string(m) + "x" +
                        std::to_string(n) + "x" + std::to_string(k) + " variant " + std::to_string(variant));
      }
    }
  }
}

void test_gemm_errors() {
  float x = 1;
  GemmArgs g;
  g.m = g.n = g.k = 1;
  g.a = {&x, DType::I8, 1, false};
  g.b = {&x, DType::F32, 1, false};
  g.c = &x;
  g.ldc = 1;
  check(gemm(g).code == Code::DType, "gemm rejects an i8 operand");
  g.a.dtype = DType::F32;
  g.b.ld = 0;
  check(gemm(g).code == Code::Shape, "gemm rejects a short leading dimension");
  g.b.ld = 1;
  g.m = -1;
  check(gemm(g).code == Code::Shape, "gemm rejects a negative dimension");
}

void test_gram_and_la_kernels() {
  std::mt19937 rng(2);
  std::vector<float> yf = normals(rng, 300 * 37);
  std::vector<double> y(yf.begin(), yf.end());
  std::vector<double> ref(37 * 37), got(37 * 37);
  // The reference in one pass vs each ISA's tiles in two row chunks (the chain continues).
  for (int64_t i0 = 0; i0 < 37; i0 += 5) {
    for (int64_t j0 = 0; j0 < 37; j0 += 7) {
      const int mi = static_cast<int>(std::min<int64_t>(5, 37 - i0)), nj = static_cast<int>(std::min<int64_t>(7, 37 - j0));
      gemmk::ref::gram(y.data(), 300, 37, i0, mi, j0, nj, ref.data() + i0 * 37 + j0, 37, false);
    }
  }
  const bool avx2 = isa_usable(Isa::Avx2, "Gram tiles vs reference");
  const bool avx512 = isa_usable(Isa::Avx512, "Gram tiles vs reference");
  for (const gemmk::Isa* isa : {gemmk::avx2::isa(), gemmk::avx512::isa()}) {
    if (!isa || !avx2 || (isa == gemmk::avx512::isa() && !avx512)) continue;
    std::fill(got.begin(), got.end(), NAN);
    for (int64_t i0 = 0; i0 < 37; i0 += isa->gram_mr) {
      for (int64_t j0 = 0; j0 < 37; j0 += isa->gram_nr) {
        const int mi = static_cast<int>(std::min<int64_t>(isa->gram_mr, 37 - i0));
        const int nj = static_cast<int>(std::min<int64_t>(isa->gram_nr, 37 - j0));
        isa->gram(y.data(), 130, 37, i0, mi, j0, nj, got.data() + i0 * 37 + j0, 37, false);
        isa->gram(y.data() + 130 * 37, 170, 37, i0, mi, j0, nj, got.data() + i0 * 37 + j0, 37, true);
      }
    }
    check(std::memcmp(ref.data(), got.data(), ref.size() * 8) == 0, std::string(isa->name) + " Gram tiles equal the reference");
  }
  const la::Kernels* v = la::avx2::kernels();
  if (!avx2) return;  // recorded as skipped above
  if (!check(v != nullptr, "the AVX2 build of the f64 kernels exists")) return;
  const la::Kernels& r = la::ref::kernels();
  std::vector<double> a(y.begin(), y.begin() + 1000), b(y.begin() + 1000, y.begin() + 2000);
  for (int64_t n : {0, 1, 15, 16, 17, 999}) {
    const double x = r.dot(n, a.data(), b.data()), z = v->dot(n, a.data(), b.data());
    check(std::memcmp(&x, &z, 8) == 0, "dot " + std::to_string(n) + ": avx2 build = baseline build");
    double d1, n1, d2, n2;
    r.sqdiff(n, yf.data(), yf.data() + 1000, &d1, &n1);
    v->sqdiff(n, yf.data(), yf.data() + 1000, &d2, &n2);
    check(d1 == d2 && n1 == n2, "sqdiff " + std::to_string(n) + ": avx2 build = baseline build");
  }
  std::vector<double> c(20), s(20);
  for (int i = 0; i < 20; ++i) {
    c[i] = std::cos(0.1 * i);
    s[i] = std::sin(0.1 * i);
  }
  std::vector<double> x1(y.begin(), y.begin() + 21 * 150), x2 = x1;
  r.rot_chain(20, c.data(), s.data(), x1.data(), 150, 150);
  v->rot_chain(20, c.data(), s.data(), x2.data(), 150, 150);
  check(x1 == x2, "rot_chain: avx2 build = baseline build");
  std::vector<double> w1(150), w2(150);
  r.gemv_t(21, 150, x1.data(), 150, a.data(), w1.data());
  v->gemv_t(21, 150, x1.data(), 150, a.data(), w2.data());
  check(w1 == w2, "gemv_t: avx2 build = baseline build");
}

// A = U diag(s) Vᵀ with orthonormal U, V from Householder QR of Gaussians.
std::vector<double> orthonormal(std::mt19937& rng, int64_t m, int64_t r) {
  std::normal_distribution<double> d;
  std::vector<double> a(static_cast<size_t>(m * r)), v(static_cast<size_t>(r * m)), tau(static_cast<size_t>(r)),
      q(static_cast<size_t>(m * r), 0.0);
  for (auto& x : a) x = d(rng);
  const la::Reflectors h{r, m, v.data(), m, tau.data()};
  la::householder_qr(a.data(), m, r, r, h, 0);
  for (int64_t i = 0; i < r; ++i) q[i * r + i] = 1;
  la::apply_reflectors(h, 0, q.data(), m, r, r, 0);
  return q;
}

void test_svd() {
  std::mt19937 rng(3);
  const int64_t dims[][2] = {{20, 12}, {12, 20}, {40, 40}, {1, 9}, {9, 1}, {70, 10}};
  for (const auto& dm : dims) {
    const int64_t m = dm[0], n = dm[1], r = std::min(m, n);
    std::vector<double> u = orthonormal(rng, m, r), v = orthonormal(rng, n, r), s(static_cast<size_t>(r));
    for (int64_t i = 0; i < r; ++i) s[i] = i < 3 ? 1.0 / (i + 1) : (i % 4 == 0 ? 0.0 : 1.0 / (i + 1));  // zeros: rank-deficient
    std::vector<float> a(static_cast<size_t>(m * n));
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t c = 0; c < r; ++c) acc += u[i * r + c] * s[c] * v[j * r + c];
        a[i * n + j] = static_cast<float>(acc);
      }
    }
    SvdArgs sa;
    sa.a = {a.data(), DType::F32, m, n};
    SvdResult out;
    const Status st = exact_svd(sa, &out);
    check(st.ok(), "exact_svd status " + st.message);
    if (!st.ok()) continue;
    double rec = 0, orth_u = 0, orth_v = 0;
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t c = 0; c < r; ++c) acc += out.u[i * r + c] * out.s[c] * out.vt[c * n + j];
        rec = std::max(rec, std::fabs(acc - a[i * n + j]));
      }
    }
    for (int64_t p = 0; p < r; ++p) {
      for (int64_t q = 0; q < r; ++q) {
        double du = 0, dv = 0;
        for (int64_t i = 0; i < m; ++i) du += out.u[i * r + p] * out.u[i * r + q];
        for (int64_t j = 0; j < n; ++j) dv += out.vt[p * n + j] * out.vt[q * n + j];
        orth_u = std::max(orth_u, std::fabs(du - (p == q)));
        orth_v = std::max(orth_v, std::fabs(dv - (p == q)));
      }
    }
    const std::string name = std::to_string(m) + "x" + std::to_string(n);
    check(rec < 1e-5, "svd " + name + " reconstructs");
    check(orth_u < 1e-5 && orth_v < 1e-5, "svd " + name + " orthonormal");
    for (int64_t i = 1; i < r; ++i) check(out.s[i] <= out.s[i - 1], "svd " + name + " descending");
  }
}

// ||W - L·R||_F / ||W||_F in f64, from the factors a result returned.
double measured_rel_error(const std::vector<float>& w, int64_t m, int64_t n, const LowRankResult& r) {
  double res = 0, tot = 0;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double p = 0;
      for (int64_t k = 0; k < r.rank; ++k) p += static_cast<double>(r.left[i * r.rank + k]) * r.right[k * n + j];
      const double x = w[i * n + j];
      res += (x - p) * (x - p);
      tot += x * x;
    }
  }
  return std::sqrt(res / tot);
}

// sqrt(Σ_{i >= rank} σᵢ² / Σ σᵢ²): the Eckart–Young error of keeping `rank` values.
double tail_rel_error(const std::vector<double>& sigma, int64_t rank) {
  double tail = 0, all = 0;
  for (size_t i = 0; i < sigma.size(); ++i) {
    all += sigma[i] * sigma[i];
    if (static_cast<int64_t>(i) >= rank) tail += sigma[i] * sigma[i];
  }
  return std::sqrt(tail / all);
}

bool near(double got, double want, double rel) { return std::fabs(got - want) <= rel * std::fabs(want); }

void test_low_rank_and_threads() {
  std::mt19937 rng(4);
  const int64_t m = 90, n = 70;
  std::vector<float> w = normals(rng, static_cast<size_t>(m * n));
  double wnorm2 = 0;
  for (float x : w) wnorm2 += static_cast<double>(x) * x;
  LowRankArgs a;
  a.w = {w.data(), DType::F32, m, n};
  a.rule = RankRule::Rank;
  a.rank = 6;
  // The exact rank-6 truncation: its error is the Eckart–Young optimum.
  a.method = LrMethod::Exact;
  LowRankResult ex;
  check(low_rank(a, &ex).ok() && ex.rank == 6 && ex.sigma.size() == 70, "low_rank exact, rank 6");
  double s2 = 0;
  for (double v : ex.sigma) s2 += v * v;
  check(near(s2, wnorm2, 1e-9), "exact: Σσ² = ||W||²");
  const double optimal6 = tail_rel_error(ex.sigma, 6);
  check(near(ex.optimal_rel_error, optimal6, 1e-12), "exact: optimal error = sqrt of the spectrum's tail");
  check(near(ex.rel_error, measured_rel_error(w, m, n, ex), 1e-6), "exact: reported error = ||W - LR|| / ||W|| measured here");
  check(near(ex.rel_error, optimal6, 1e-5), "exact: the error is the Eckart–Young optimum");
  // Randomized (oversample 10, 2 power iterations) on a flat Gaussian
  // spectrum, its hardest case: within 2 % of the optimum (measured 0.57 %).
  a.method = LrMethod::Randomized;
  LowRankResult r1, r2, r3;
  check(low_rank(a, &r1).ok() && r1.rank == 6, "low_rank randomized");
  check(near(r1.rel_error, measured_rel_error(w, m, n, r1), 1e-6), "randomized: reported error = ||W - LR|| / ||W|| measured here");
  std::printf("randomized rank 6 of a 90x70 Gaussian: relative error %.6f, optimum %.6f (+%.2f %%)\n", r1.rel_error, optimal6,
              100 * (r1.rel_error / optimal6 - 1));
  check(r1.rel_error >= optimal6 * (1 - 1e-6) && r1.rel_error <= optimal6 * 1.02,
        "randomized: error within 2 % of the optimum: " + std::to_string(r1.rel_error) + " vs " + std::to_string(optimal6));
  // Two threads at once (the pool is shared): the same bits.
  std::thread t([&] { low_rank(a, &r2); });
  low_rank(a, &r3);
  t.join();
  check(r1.left == r2.left && r1.left == r3.left && r1.right == r3.right, "concurrent low_rank calls give the same bits");
  a.method = LrMethod::Exact;
  a.rule = RankRule::Energy;
  a.energy = 0.5;
  LowRankResult e;
  // The smallest rank whose leading σ² hold half of Σσ².
  int64_t half = 0;
  for (double kept = 0; kept < 0.5 * s2; ++half) kept += ex.sigma[static_cast<size_t>(half)] * ex.sigma[static_cast<size_t>(half)];
  std::printf("energy 0.5 keeps rank %lld of 70\n", static_cast<long long>(half));
  check(low_rank(a, &e).ok() && e.rank == half, "energy rule 0.5 keeps rank " + std::to_string(half) + ", got " + std::to_string(e.rank));
  check(near(e.rel_error, tail_rel_error(ex.sigma, half), 1e-5) && e.rel_error <= std::sqrt(0.5),
        "energy rule: error = the optimum at that rank, <= sqrt(1/2)");
  a.energy = 2;
  check(low_rank(a, &e).code == Code::Value, "energy > 1 rejected");
  a.rule = RankRule::Rank;
  a.rank = 3;
  a.whiten = Whiten::Scale;
  std::vector<float> sc(static_cast<size_t>(n), 1.0f);
  sc[5] = -1;
  a.scale = sc.data();
  check(low_rank(a, &e).code == Code::Value, "negative activation scale rejected");
  w[17] = NAN;
  a.whiten = Whiten::None;
  check(low_rank(a, &e).code == Code::Value, "NaN input rejected");
}

}  // namespace

int main() {
  test_gemm_matches_reference();
  test_gemm_errors();
  test_gram_and_la_kernels();
  test_svd();
  test_low_rank_and_threads();
  return st::test::finish(std::string("native lowrank core (") + gemm_kernel_name(GemmKernel::Auto) + ")");
}
