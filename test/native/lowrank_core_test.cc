// Native tests of the lowrank core, built with AddressSanitizer and
// UndefinedBehaviorSanitizer by scripts/native-test.cjs: the GEMM kernels
// (AVX2, AVX-512, skinny and packed paths) against the scalar reference bit
// for bit with every output element written; the f64 Gram and level-1/2
// kernels of each build against the baseline build; the exact SVD
// (reconstruction, orthonormality) and the randomized one; argument errors;
// concurrent calls from several threads. And the host side of the CUDA
// path (lowrank_device.cc) on a fake device and a fake cuSOLVER: the GEMM's
// ldc copies, the buffers and limits handed to cuSOLVER, the gesvdj → gesvd
// fallback, the stream, and the runtime's error slot after failures.
#include <algorithm>
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
#include "fake_device.h"
#include "lowrank/lowrank.h"
#include "lowrank/lowrank_cuda.h"
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

// ---------------------------------------------------------------------------
// The CUDA path's host side on the fake device (fake_device.h). The kernel
// stand-ins run what the kernels run: the reference GEMM (the CUDA GEMM's
// contract: its bits), lrd::tall_elem and lrd::factor_elem over every
// element. The fake cuSOLVER below computes a true SVD (la::svd, f64) and
// checks every argument against cuSOLVER's documentation.

const LowrankLaunch kFakeLaunch = {
    [](const GemmDev& g, gpu::Stream s) {
      fake::device().launch(s, [g] {
        GemmArgs a;
        a.m = g.m;
        a.n = g.n;
        a.k = g.k;
        a.a = {g.a, g.at, g.lda, g.ta};
        a.b = {g.b, g.bt, g.ldb, g.tb};
        a.c = g.c;
        a.ldc = g.ldc;
        a.accumulate = g.accumulate;
        a.kernel = GemmKernel::Reference;
        const Status st = gemm(a);
        check(st.ok(), "fake gemm kernel: " + st.message);
      });
    },
    [](const void* src, DType t, int64_t rows, int64_t cols, bool transpose, float* dst, gpu::Stream s) {
      fake::device().launch(s, [=] {
        for (int64_t i = 0; i < rows * cols; ++i) dst[i] = lrd::tall_elem(src, t, rows, cols, transpose, i);
      });
    },
    [](DeviceVectors v, int64_t len, int64_t r, const float* scale, bool as_rows, float* dst, gpu::Stream s) {
      fake::device().launch(s, [=] {
        for (int64_t i = 0; i < len * r; ++i) lrd::factor_elem(v, len, r, scale, as_rows, dst, i);
      });
    },
};

// The fake cuSOLVER: what it was asked, what it found wrong.
struct FakeSolver {
  int handles = 0, gesvdj = 0, gesvd = 0, xgesvdr = 0, max_sweeps = 0;
  double tolerance = 0;
  bool gesvdj_converges = true;
  int xgesvdr_status = 0;  // returned by cusolverDnXgesvdr (e.g. 2, ALLOC_FAILED)
  int64_t k = -1, p = -1;  // Xgesvdr's
  bool stream_set = false;
  std::vector<std::string> violations;
  int token = 0;
};
FakeSolver g_solver;

void solver_violation(const std::string& what) { g_solver.violations.push_back(what); }

void need_extent(const void* p, int64_t elems, size_t esize, const std::string& what) {
  const size_t need = static_cast<size_t>(elems) * esize;
  if (fake::device().extent(p) < need) {
    solver_violation(what + ": needs " + std::to_string(need) + " bytes of device memory, has " + std::to_string(fake::device().extent(p)));
  }
}

void need_stream_set() {
  if (!g_solver.stream_set) solver_violation("work queued before cusolverDnSetStream: the legacy default stream");
}

// The thin SVD of the column-major m x n matrix a (m >= n), written as
// cuSOLVER writes it: s (n values), U (columns 0..n-1, ldu) and V (as
// columns, ldv) or Vᵀ (as rows, ldvt); then a destroyed (NaN).
void fake_svd(float* a, int64_t m, int64_t n, int64_t lda, float* s, float* u, int64_t ldu, float* v, int64_t ldv, bool vt_rows) {
  std::vector<double> x(static_cast<size_t>(m * n)), uu(static_cast<size_t>(m * n)), ss(static_cast<size_t>(n)), vt(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) x[static_cast<size_t>(i * n + j)] = a[i + j * lda];
  }
  const Status st = la::svd(x.data(), m, n, n, uu.data(), n, ss.data(), vt.data(), n, 1);
  if (!st.ok()) solver_violation("the fake's SVD failed: " + st.message);
  for (int64_t c = 0; c < n; ++c) {
    s[c] = static_cast<float>(ss[static_cast<size_t>(c)]);
    for (int64_t i = 0; i < m; ++i) u[i + c * ldu] = static_cast<float>(uu[static_cast<size_t>(i * n + c)]);
    for (int64_t j = 0; j < n; ++j) {
      const float e = static_cast<float>(vt[static_cast<size_t>(c * n + j)]);
      if (vt_rows) v[c + j * ldv] = e;
      else v[j + c * ldv] = e;
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < m; ++i) a[i + j * lda] = NAN;
  }
}

cusolver::Api fake_solver_api() {
  cusolver::Api api{};
  api.create = [](cusolver::Handle* h) {
    ++g_solver.handles;
    *h = reinterpret_cast<cusolver::Handle>(&g_solver.token);
    return 0;
  };
  api.destroy = [](cusolver::Handle) {
    --g_solver.handles;
    if (!fake::device().queue.empty()) solver_violation("cusolverDnDestroy while work is queued");
    g_solver.stream_set = false;
    return 0;
  };
  api.set_stream = [](cusolver::Handle, cusolver::Stream s) {
    fake::device().need_stream(s, "cusolverDnSetStream");
    g_solver.stream_set = true;
    return 0;
  };
  api.create_gesvdj_info = [](cusolver::GesvdjInfo* p) {
    *p = reinterpret_cast<cusolver::GesvdjInfo>(&g_solver.token);
    return 0;
  };
  api.destroy_gesvdj_info = [](cusolver::GesvdjInfo) { return 0; };
  api.gesvdj_set_tolerance = [](cusolver::GesvdjInfo, double tol) {
    g_solver.tolerance = tol;
    return 0;
  };
  api.gesvdj_set_max_sweeps = [](cusolver::GesvdjInfo, int sweeps) {
    g_solver.max_sweeps = sweeps;
    return 0;
  };
  api.sgesvdj_buffer_size = [](cusolver::Handle, int, int econ, int m, int n, const float*, int lda, const float*, const float*, int ldu,
                               const float*, int ldv, int* lwork, cusolver::GesvdjInfo) {
    if (econ != 1 || lda < m || ldu < m || ldv < n) solver_violation("gesvdj_bufferSize: econ / leading dimensions");
    *lwork = 3 * m + n;
    return 0;
  };
  api.sgesvdj = [](cusolver::Handle, int jobz, int econ, int m, int n, float* a, int lda, float* s, float* u, int ldu, float* v, int ldv,
                   float* work, int lwork, int* info, cusolver::GesvdjInfo) {
    ++g_solver.gesvdj;
    need_stream_set();
    const int mn = std::min(m, n);
    if (jobz != cusolver::kEigModeVector || econ != 1 || m < n) solver_violation("gesvdj: jobz / econ / shape");
    need_extent(a, int64_t{lda} * n, 4, "gesvdj A");
    need_extent(s, mn, 4, "gesvdj S");
    need_extent(u, int64_t{ldu} * mn, 4, "gesvdj U (econ: ldu x min(m,n))");
    need_extent(v, int64_t{ldv} * mn, 4, "gesvdj V (econ: ldv x min(m,n))");
    need_extent(work, lwork, 4, "gesvdj work");
    need_extent(info, 1, 4, "gesvdj info");
    const bool converges = g_solver.gesvdj_converges;
    fake::device().enqueue([=] {
      if (converges) fake_svd(a, m, n, lda, s, u, ldu, v, ldv, false);
      else for (int64_t i = 0; i < int64_t{lda} * n; ++i) a[i] = NAN;  // destroyed, no result
      *info = converges ? 0 : mn + 1;
    });
    return 0;
  };
  api.sgesvd_buffer_size = [](cusolver::Handle, int m, int n, int* lwork) {
    *lwork = 5 * m + 2 * n;
    return 0;
  };
  api.sgesvd = [](cusolver::Handle, signed char jobu, signed char jobvt, int m, int n, float* a, int lda, float* s, float* u, int ldu,
                  float* vt, int ldvt, float* work, int lwork, float* rwork, int* info) {
    ++g_solver.gesvd;
    need_stream_set();
    const int mn = std::min(m, n);
    if (jobu != 'S' || jobvt != 'S' || m < n || lda < m || ldu < m || ldvt < mn) solver_violation("gesvd: jobs / shape / leading dimensions");
    need_extent(a, int64_t{lda} * n, 4, "gesvd A");
    need_extent(s, mn, 4, "gesvd S");
    need_extent(u, int64_t{ldu} * mn, 4, "gesvd U ('S': ldu x min(m,n))");
    need_extent(vt, int64_t{ldvt} * n, 4, "gesvd VT ('S': ldvt x n)");
    need_extent(work, lwork, 4, "gesvd work");
    need_extent(rwork, mn - 1, 4, "gesvd rwork");
    fake::device().enqueue([=] {
      fake_svd(a, m, n, lda, s, u, ldu, vt, ldvt, true);
      *info = 0;
    });
    return 0;
  };
  api.create_params = [](cusolver::Params* p) {
    *p = reinterpret_cast<cusolver::Params>(&g_solver.token);
    return 0;
  };
  api.destroy_params = [](cusolver::Params) { return 0; };
  // Xgesvdr: k < min(m,n) and k + p < min(m,n) (documented; the status
  // INVALID_VALUE otherwise); U and V as for 'S': min(m,n) columns.
  api.xgesvdr_buffer_size = [](cusolver::Handle, cusolver::Params, signed char jobu, signed char jobv, int64_t m, int64_t n, int64_t k,
                               int64_t p, int64_t, int, const void*, int64_t lda, int, const void*, int, const void*, int64_t ldu, int,
                               const void*, int64_t ldv, int, size_t* dbytes, size_t* hbytes) {
    const int64_t mn = std::min(m, n);
    if (jobu != 'S' || jobv != 'S' || lda < m || ldu < m || ldv < n) solver_violation("Xgesvdr_bufferSize: jobs / leading dimensions");
    if (!(k >= 1 && k < mn && p >= 0 && k + p < mn)) {
      solver_violation("Xgesvdr_bufferSize: k = " + std::to_string(k) + ", p = " + std::to_string(p) + " outside k < min(m,n), k + p < min(m,n) = " +
                       std::to_string(mn));
      return 3;
    }
    *dbytes = static_cast<size_t>(8 * m);
    *hbytes = 24;
    return 0;
  };
  api.xgesvdr = [](cusolver::Handle, cusolver::Params, signed char, signed char, int64_t m, int64_t n, int64_t k, int64_t p, int64_t, int,
                   void* a, int64_t lda, int, void* s, int, void* u, int64_t ldu, int, void* v, int64_t ldv, int, void* dwork,
                   size_t dbytes, void* hwork, size_t hbytes, int* info) {
    ++g_solver.xgesvdr;
    need_stream_set();
    g_solver.k = k;
    g_solver.p = p;
    const int64_t mn = std::min(m, n);
    if (!(k >= 1 && k < mn && p >= 0 && k + p < mn)) solver_violation("Xgesvdr: k / p outside the documented range");
    need_extent(a, lda * n, 4, "Xgesvdr A");
    need_extent(s, mn, 4, "Xgesvdr S");
    need_extent(u, ldu * mn, 4, "Xgesvdr U ('S': min(m,n) columns)");
    need_extent(v, ldv * mn, 4, "Xgesvdr V ('S': min(m,n) columns)");
    need_extent(dwork, static_cast<int64_t>(dbytes), 1, "Xgesvdr device workspace");
    if (hbytes > 0 && fake::device().on_device(hwork)) solver_violation("Xgesvdr host workspace in device memory");
    if (g_solver.xgesvdr_status != 0) {
      fake::device().pending = st::gpu::kErrorMemoryAllocation;  // as a failed allocation inside cuSOLVER leaves it
      return g_solver.xgesvdr_status;
    }
    fake::device().enqueue([=] {
      fake_svd(static_cast<float*>(a), m, n, lda, static_cast<float*>(s), static_cast<float*>(u), ldu, static_cast<float*>(v), ldv, false);
      *info = 0;
    });
    return 0;
  };
  return api;
}

// Fake device and solver clean after a call: no contract broken, nothing
// left allocated, the stream destroyed, the error slot clear.
void expect_device_clean(const std::string& tag) {
  fake::Device& d = fake::device();
  for (const std::string& v : d.violations) check(false, tag + ": fake device: " + v);
  for (const std::string& v : g_solver.violations) check(false, tag + ": fake cuSOLVER: " + v);
  check(d.allocs.empty(), tag + ": every device allocation freed");
  check(!d.stream_live && d.streams_created == d.streams_destroyed, tag + ": the stream destroyed");
  check(d.pending == 0, tag + ": the runtime's last-error slot is clear after the call");
  check(g_solver.handles == 0, tag + ": the cuSOLVER handle destroyed");
  d.reset();
  g_solver = FakeSolver();
}

// The largest |(L·R)_ij − (L'·R')_ij| of two factorizations (m x r · r x n).
double product_diff(const std::vector<float>& l1, const std::vector<float>& r1, const std::vector<float>& l2, const std::vector<float>& r2,
                    int64_t m, int64_t n, int64_t r) {
  double worst = 0;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double a = 0, b = 0;
      for (int64_t c = 0; c < r; ++c) {
        a += static_cast<double>(l1[i * r + c]) * r1[c * n + j];
        b += static_cast<double>(l2[i * r + c]) * r2[c * n + j];
      }
      worst = std::max(worst, std::fabs(a - b));
    }
  }
  return worst;
}

// C with ldc > n: the device's packed rows go to the host's strided rows
// and the gaps between them keep their bytes, as the CPU leaves them.
void test_device_gemm_ldc() {
  std::mt19937 rng(11);
  for (int variant = 0; variant < 4; ++variant) {
    const bool acc = variant & 1, ta = variant & 2;
    const int64_t m = 9, n = 7, k = 13, ldc = 12;
    const int64_t lda = (ta ? m : k) + 2, ldb = n + 3;
    std::vector<float> a = normals(rng, static_cast<size_t>((ta ? k : m) * lda)), b = normals(rng, static_cast<size_t>(k * ldb));
    std::vector<float> init = normals(rng, static_cast<size_t>(m * ldc));
    GemmArgs g;
    g.m = m;
    g.n = n;
    g.k = k;
    g.a = {a.data(), DType::F32, lda, ta};
    g.b = {b.data(), DType::F32, ldb, false};
    g.ldc = ldc;
    g.accumulate = acc;
    g.kernel = GemmKernel::Reference;
    std::vector<float> want = init, got = init;
    g.c = want.data();
    check(gemm(g).ok(), "reference gemm");
    g.c = got.data();
    const std::string tag = std::string("device gemm ldc ") + std::to_string(ldc) + " > n " + std::to_string(n) + (acc ? ", accumulate" : "") +
                            (ta ? ", A transposed" : "");
    const Status st = gemm_on_device(fake::runtime(), kFakeLaunch, g);
    check(st.ok(), tag + ": " + st.message);
    check(std::memcmp(got.data(), want.data(), got.size() * 4) == 0, tag + ": the CPU's bits, and the gaps between rows untouched");
    expect_device_clean(tag);
  }
}

// A test matrix (m x n, f32 or bf16 bits) with a decaying spectrum.
std::vector<uint16_t> g_bits;
MatrixView test_matrix(std::mt19937& rng, int64_t m, int64_t n, DType dt, std::vector<float>* f) {
  *f = normals(rng, static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) (*f)[static_cast<size_t>(i * n + j)] *= 1.0f / static_cast<float>(1 + ((i + 2 * j) % 7));
  }
  if (dt == DType::F32) return {f->data(), DType::F32, m, n};
  g_bits.resize(f->size());
  for (size_t i = 0; i < f->size(); ++i) {
    g_bits[i] = f32_to_bf16((*f)[i]);
    (*f)[i] = bf16_to_f32(g_bits[i]);
  }
  return {g_bits.data(), DType::BF16, m, n};
}

// lowRank's device path against the CPU's exact factorization: the same
// singular values and the same product L·R (the vectors' signs may differ).
void test_device_factor() {
  // The tolerance: f32's rounding over a column (1 ulp for one element, √R
  // ulps for 11008 rows: 1.25e-5), never looser than that.
  check(gesvdj_tolerance(1) == 0x1p-23 && std::fabs(gesvdj_tolerance(11008) - 1.2507e-5) < 1e-8, "gesvdj tolerance");
  std::mt19937 rng(12);
  const cusolver::Api api = fake_solver_api();
  struct Run {
    int64_t m, n;
    DType dt;
    bool exact;
    int64_t k, oversample;
    bool converges;
    const char* expect;  // the routines that must run
  };
  const Run runs[] = {
      {40, 24, DType::F32, true, 5, 10, true, "gesvdj"},            // tall
      {24, 40, DType::BF16, true, 5, 10, true, "gesvdj"},           // wide: T = Xᵀ
      {40, 24, DType::F32, true, 5, 10, false, "gesvdj gesvd"},     // no convergence: gesvd on a fresh T
      {24, 40, DType::F32, true, 6, 10, false, "gesvdj gesvd"},     // ... with Vᵀ on the left side
      {40, 24, DType::F32, false, 5, 10, true, "Xgesvdr"},          // p = 10
      {24, 40, DType::BF16, false, 20, 10, true, "Xgesvdr"},        // p clamped to 24 - 20 - 1 = 3
      {40, 24, DType::F32, false, 23, 10, true, "Xgesvdr"},         // k = C - 1: p = 0
      {40, 24, DType::F32, false, 24, 10, true, "gesvdj"},          // k = C: not Xgesvdr's, exact instead
      {24, 40, DType::F32, false, 30, 4, true, "gesvdj"},           // k > C
  };
  for (const Run& run : runs) {
    std::vector<float> f;
    const MatrixView x = test_matrix(rng, run.m, run.n, run.dt, &f);
    const int64_t C = std::min(run.m, run.n), r = std::min(run.k, C);
    char tag[200];
    std::snprintf(tag, sizeof tag, "device factor %lldx%lld %s %s k=%lld p=%lld%s", static_cast<long long>(run.m),
                  static_cast<long long>(run.n), dtype_name(run.dt), run.exact ? "exact" : "randomized", static_cast<long long>(run.k),
                  static_cast<long long>(run.oversample), run.converges ? "" : " (gesvdj does not converge)");
    g_solver.gesvdj_converges = run.converges;
    CudaFactor cf;
    cf.x = x;
    cf.exact = run.exact;
    cf.k = run.k;
    cf.oversample = run.oversample;
    cf.power_iters = 2;
    cf.choose = [r](const std::vector<double>&) { return r; };
    CudaFactorResult out;
    const Status st = factor_on_device(fake::runtime(), api, kFakeLaunch, cf, &out);
    check(st.ok(), std::string(tag) + ": " + st.message);
    std::string ran;
    for (int i = 0; i < g_solver.gesvdj; ++i) ran += " gesvdj";
    for (int i = 0; i < g_solver.gesvd; ++i) ran += " gesvd";
    for (int i = 0; i < g_solver.xgesvdr; ++i) ran += " Xgesvdr";
    check(ran == std::string(" ") + run.expect, std::string(tag) + ": ran" + ran + ", expected " + run.expect);
    const bool randomized = std::string(run.expect) == "Xgesvdr";
    check(out.exact == !randomized, std::string(tag) + ": reports which SVD ran");
    if (randomized) {
      const int64_t p = std::min(run.oversample, C - 1 - run.k);
      check(g_solver.k == run.k && g_solver.p == p && out.samples == run.k + p,
            std::string(tag) + ": Xgesvdr given k = " + std::to_string(g_solver.k) + ", p = " + std::to_string(g_solver.p));
    } else {
      check(g_solver.max_sweeps == kGesvdjMaxSweeps && g_solver.tolerance == gesvdj_tolerance(std::max(run.m, run.n)),
            std::string(tag) + ": gesvdj's sweep limit and tolerance set");
    }
    // The CPU's exact factorization of the same values.
    LowRankArgs la;
    la.w = x;
    la.rule = RankRule::Rank;
    la.rank = r;
    la.method = LrMethod::Exact;
    la.kernel = GemmKernel::Reference;
    LowRankResult cpu;
    check(low_rank(la, &cpu).ok(), std::string(tag) + ": CPU factorization");
    check(out.rank == r && out.left.size() == static_cast<size_t>(run.m * r) && out.right.size() == static_cast<size_t>(r * run.n),
          std::string(tag) + ": factor shapes");
    const size_t nsig = randomized ? static_cast<size_t>(run.k) : static_cast<size_t>(C);
    bool sig_ok = out.sigma.size() == nsig;
    for (size_t i = 0; sig_ok && i < nsig; ++i) sig_ok = std::fabs(out.sigma[i] - cpu.sigma[i]) <= 1e-5 * cpu.sigma[0];
    check(sig_ok, std::string(tag) + ": the CPU's singular values");
    if (out.left.size() == cpu.left.size() && out.right.size() == cpu.right.size()) {
      const double d = product_diff(out.left, out.right, cpu.left, cpu.right, run.m, run.n, r);
      check(d < 1e-5, std::string(tag) + ": L·R equals the CPU's (max difference " + std::to_string(d) + ")");
    }
    expect_device_clean(tag);
  }
}

// svd() on the device: the CPU's singular values, U·diag(s)·Vᵀ = X.
void test_device_svd() {
  std::mt19937 rng(13);
  const cusolver::Api api = fake_solver_api();
  for (const auto& dims : {std::pair<int64_t, int64_t>{30, 17}, {17, 30}}) {
    const int64_t m = dims.first, n = dims.second, k = std::min(m, n);
    std::vector<float> f;
    const MatrixView x = test_matrix(rng, m, n, DType::F32, &f);
    SvdResult out;
    const std::string tag = "device svd " + std::to_string(m) + "x" + std::to_string(n);
    const Status st = svd_on_device(fake::runtime(), api, kFakeLaunch, x, k, &out);
    check(st.ok() && out.cuda && out.k == k, tag + ": " + st.message);
    SvdArgs sa;
    sa.a = x;
    SvdResult cpu;
    check(exact_svd(sa, &cpu).ok(), tag + ": CPU svd");
    double ds = 0, rec = 0;
    for (int64_t c = 0; c < k; ++c) ds = std::max(ds, std::fabs(out.s[c] - cpu.s[c]));
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t c = 0; c < k; ++c) acc += static_cast<double>(out.u[i * k + c]) * out.s[c] * out.vt[c * n + j];
        rec = std::max(rec, std::fabs(acc - f[static_cast<size_t>(i * n + j)]));
      }
    }
    check(ds < 1e-5 * cpu.s[0] && rec < 1e-5, tag + ": singular values (" + std::to_string(ds) + ") and reconstruction (" + std::to_string(rec) + ")");
    expect_device_clean(tag);
  }
}

// Failures: every cudaMalloc in turn (out of memory: ERR_UNSUPPORTED, the
// caller falls back to the CPU), Xgesvdr out of memory (cuSOLVER's
// ALLOC_FAILED, the same code), a failed launch (ERR_INTERNAL). After each,
// the error slot is clear, everything freed and destroyed, and the next
// call succeeds.
void test_device_errors() {
  std::mt19937 rng(14);
  const cusolver::Api api = fake_solver_api();
  std::vector<float> f;
  const MatrixView x = test_matrix(rng, 30, 20, DType::F32, &f);
  CudaFactor cf;
  cf.x = x;
  cf.exact = false;
  cf.k = 4;
  cf.choose = [](const std::vector<double>&) { return int64_t{4}; };
  CudaFactorResult out;
  check(factor_on_device(fake::runtime(), api, kFakeLaunch, cf, &out).ok(), "device factor: a clean run");
  const int allocations = fake::device().mallocs;
  const std::vector<float> left = out.left;
  expect_device_clean("device factor: a clean run");
  for (int fail = 0; fail <= allocations + 1; ++fail) {
    std::string tag;
    if (fail < allocations) {
      fake::device().fail_malloc_at = fail;
      tag = "device factor: cudaMalloc #" + std::to_string(fail) + " out of memory";
    } else if (fail == allocations) {
      g_solver.xgesvdr_status = 2;
      tag = "device factor: Xgesvdr ALLOC_FAILED";
    } else {
      fake::device().fail_launch_at = 1;
      tag = "device factor: factor_kernel launch fails";
    }
    CudaFactorResult bad;
    const Status st = factor_on_device(fake::runtime(), api, kFakeLaunch, cf, &bad);
    const Code want = fail <= allocations ? Code::Unsupported : Code::Internal;
    check(st.code == want, tag + ": " + code_name(st.code) + ": " + st.message);
    expect_device_clean(tag);
    CudaFactorResult again;
    const Status st2 = factor_on_device(fake::runtime(), api, kFakeLaunch, cf, &again);
    check(st2.ok() && again.left == left, tag + ": the next call succeeds: " + st2.message);
    expect_device_clean(tag + ", next call");
  }
}

}  // namespace

int main() {
  test_gemm_matches_reference();
  test_gemm_errors();
  test_gram_and_la_kernels();
  test_svd();
  test_low_rank_and_threads();
  test_device_gemm_ldc();
  test_device_factor();
  test_device_svd();
  test_device_errors();
  return st::test::finish(std::string("native lowrank core (") + gemm_kernel_name(GemmKernel::Auto) + ")");
}
