// The lowrank room's drivers (see lowrank.h): validation, the randomized
// SVD, the exact SVD, rank rules, activation-aware whitening, the measured
// error, and the choice between CPU and CUDA.
//
// Randomized SVD (Halko, Martinsson & Tropp 2011; FORMATS.md), for a rank k,
// oversampling p and q power iterations, l = k + p:
//   Ω ~ N(0, 1) n x l (counter-based, from the seed: column j of Ω does not
//   depend on l);  Q = orth(X·Ω);
//   q times:  Q = orth(X·orth(Xᵀ·Q))          (re-orthonormalised)
//   Z = Xᵀ·Q = Qz·Rz                          (so B = QᵀX = Rzᵀ·Qzᵀ)
//   Rzᵀ = Ũ·Σ·Ṽᵀ  (exact SVD of an l x l matrix)
//   L = Q·Ũ_k·Σ_k^½,  R = Σ_k^½·Ṽ_kᵀ·Qzᵀ
// Six passes over X for q = 2, all GEMMs. orth is CholeskyQR2 with the
// Gram matrix and the Cholesky factor in f64 (one f32 GEMM per pass),
// repeated a third time when the first pass left Q far from orthonormal,
// and Householder QR (f64) when the Gram matrix is numerically singular
// (rank-deficient input).
#include "lowrank.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "../cpu.h"
#include "../numeric.h"
#include "gemm_kernels.h"
#include "la_kernels.h"
#include "linalg.h"
#include "lowrank_cuda.h"

namespace st {

namespace {

struct Ctx {
  GemmKernel kernel;
  int threads;
};

float elem(const MatrixView& x, int64_t idx) {
  switch (x.dtype) {
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(x.data)[idx]);
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(x.data)[idx]);
    default: return static_cast<const float*>(x.data)[idx];
  }
}

// Rows per chunk of the fixed-order reductions (independent of threads).
constexpr int64_t kRowChunk = 64;

double sum_chunks(const std::vector<double>& parts) {
  double s = 0;
  for (double v : parts) s += v;
  return s;
}

// f32 copy of `n` elements of X from flat index `at` (f16/bf16 converted).
const float* row_f32(const MatrixView& x, int64_t at, int64_t n, std::vector<float>* buf) {
  if (x.dtype == DType::F32) return static_cast<const float*>(x.data) + at;
  buf->resize(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) (*buf)[j] = elem(x, at + j);
  return buf->data();
}

double norm_sq(const MatrixView& x, int threads) {
  const int64_t chunks = (x.rows + kRowChunk - 1) / kRowChunk;
  std::vector<double> parts(static_cast<size_t>(chunks), 0.0);
  const la::Kernels& k = la::kernels();
  parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<float> buf;
    for (int64_t c = c0; c < c1; ++c) {
      double s = 0;
      for (int64_t i = c * kRowChunk; i < std::min(x.rows, (c + 1) * kRowChunk); ++i) {
        double d2, n2;
        k.sqdiff(x.cols, row_f32(x, i * x.cols, x.cols, &buf), nullptr, &d2, &n2);
        s += n2;
      }
      parts[c] = s;
    }
  }, threads);
  return sum_chunks(parts);
}

// The first non-finite element's flat index (a slow scan, only after a
// non-finite ‖X‖²: squares of f32 values summed in f64 cannot overflow,
// so the norm is finite exactly when every element is).
int64_t first_non_finite(const MatrixView& x) {
  for (int64_t i = 0; i < x.rows * x.cols; ++i) {
    if (!std::isfinite(elem(x, i))) return i;
  }
  return -1;
}

Status non_finite(const MatrixView& x, const char* what) {
  const int64_t i = first_non_finite(x);
  const float v = i >= 0 ? elem(x, i) : 0.0f;
  return Status::Error(Code::Value, std::string(what) + " has a non-finite value (" +
                                        (std::isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity") + ") at [" +
                                        std::to_string(i / x.cols) + ", " + std::to_string(i % x.cols) + "]");
}

// f64 copy of X (rows x cols) or of its transpose.
void to_f64(const MatrixView& x, bool transpose, double* out) {
  for (int64_t i = 0; i < x.rows; ++i) {
    for (int64_t j = 0; j < x.cols; ++j) {
      const double v = elem(x, i * x.cols + j);
      if (transpose) out[j * x.rows + i] = v;
      else out[i * x.cols + j] = v;
    }
  }
}

uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Ω[i][j] ~ N(0, 1), counter-based: Marsaglia's polar method on pairs of
// 24-bit uniforms hashed from (seed, i, j / 2, attempt); the pair gives
// columns 2t and 2t+1. One log and one square root per pair, no sin/cos.
void gaussian(uint64_t seed, int64_t rows, int64_t cols, float* out, int threads) {
  const uint64_t s = mix64(seed ^ 0x5eed5eed5eedull);
  parallel_for(rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      const uint64_t row = mix64(s + static_cast<uint64_t>(i) * 0x9e3779b97f4a7c15ull);
      for (int64_t j = 0; j < cols; j += 2) {
        uint64_t ctr = static_cast<uint64_t>(j >> 1) << 8;  // 256 attempts per pair; 21.5 % are rejected
        float u, v, q;
        do {
          const uint64_t h = mix64(row ^ ctr++);
          u = (static_cast<float>(h >> 40) + 0.5f) * 0x1.0p-23f - 1.0f;                // (-1, 1)
          v = (static_cast<float>((h >> 16) & 0xffffffu) + 0.5f) * 0x1.0p-23f - 1.0f;  // (-1, 1)
          q = u * u + v * v;
        } while (q >= 1.0f || q == 0.0f);
        const float f = std::sqrt(-2.0f * std::log(q) / q);
        out[i * cols + j] = u * f;
        if (j + 1 < cols) out[i * cols + j + 1] = v * f;
      }
    }
  }, threads);
}

Status mm(const Ctx& c, int64_t m, int64_t n, int64_t k, const void* a, DType at, int64_t lda, bool ta, const void* b,
          DType bt, int64_t ldb, bool tb, float* out, int64_t ldc) {
  GemmArgs g;
  g.m = m;
  g.n = n;
  g.k = k;
  g.a = {a, at, lda, ta};
  g.b = {b, bt, ldb, tb};
  g.c = out;
  g.ldc = ldc;
  g.kernel = c.kernel;
  g.threads = c.threads;
  return gemm(g);
}

// R := A·R for upper-triangular l x l A and R (f64).
void upper_times(const double* a, double* r, int64_t l) {
  std::vector<double> out(static_cast<size_t>(l * l), 0.0);
  const la::Kernels& k = la::kernels();
  for (int64_t i = 0; i < l; ++i) {
    for (int64_t p = i; p < l; ++p) k.axpy(l - p, a[i * l + p], r + p * l + p, out.data() + i * l + p);
  }
  std::copy(out.begin(), out.end(), r);
}

// Householder QR of y (m x l, f32) in place: y := Q; r := R·r when r is given.
void orth_householder(float* y, int64_t m, int64_t l, double* r, int threads) {
  std::vector<double> yd(static_cast<size_t>(m * l)), v(static_cast<size_t>(l * m), 0.0), tau(static_cast<size_t>(l));
  for (int64_t i = 0; i < m * l; ++i) yd[i] = y[i];
  const la::Reflectors h{l, m, v.data(), m, tau.data()};
  la::householder_qr(yd.data(), m, l, l, h, threads);
  if (r) {
    std::vector<double> rh(static_cast<size_t>(l * l), 0.0);
    for (int64_t i = 0; i < l; ++i) {
      for (int64_t j = i; j < l; ++j) rh[i * l + j] = yd[i * l + j];
    }
    upper_times(rh.data(), r, l);
  }
  std::fill(yd.begin(), yd.end(), 0.0);
  for (int64_t i = 0; i < l; ++i) yd[i * l + i] = 1.0;
  la::apply_reflectors(h, 0, yd.data(), m, l, l, threads);
  for (int64_t i = 0; i < m * l; ++i) y[i] = static_cast<float>(yd[i]);
}

// Buffers of orth(), reused across its calls (fresh pages cost a fault
// each, ~2 µs per 4 KiB on the VM this was measured on).
struct OrthWork {
  std::vector<double> yd, g;
  std::vector<float> rinv, tmp;
  void ensure(int64_t rows, int64_t l) {
    if (yd.size() < static_cast<size_t>(rows * l)) yd.resize(static_cast<size_t>(rows * l));
    if (tmp.size() < static_cast<size_t>(rows * l)) tmp.resize(static_cast<size_t>(rows * l));
    if (g.size() < static_cast<size_t>(l * l)) g.resize(static_cast<size_t>(l * l));
    if (rinv.size() < static_cast<size_t>(l * l)) rinv.resize(static_cast<size_t>(l * l));
  }
};

// Orthonormal columns for y (m x l, f32, m >= l) in place, y_in = Q·R with
// R (l x l, f64, upper) written to r when given. `exact` asks for Q
// orthonormal to f32 rounding (two passes or three); otherwise (the bases
// inside the power iterations, which only carry a subspace) one pass is
// kept when the Cholesky factor is well conditioned: its Q is then
// orthonormal to ~1e-4 at worst.
Status orth(float* y, int64_t m, int64_t l, double* r, bool exact, const Ctx& c, OrthWork& w) {
  if (r) {
    std::fill(r, r + l * l, 0.0);
    for (int64_t i = 0; i < l; ++i) r[i * l + i] = 1.0;
  }
  w.ensure(m, l);
  double* yd = w.yd.data();
  double* g = w.g.data();
  for (int pass = 0; pass < 3; ++pass) {
    for (int64_t i = 0; i < m * l; ++i) yd[i] = y[i];
    la::gram(yd, m, l, l, g, l, c.threads);
    double dev = 0;  // how far the previous pass left y from orthonormal
    if (pass > 0) {
      for (int64_t i = 0; i < l; ++i) {
        for (int64_t j = 0; j < l; ++j) dev = std::max(dev, std::fabs(g[i * l + j] - (i == j ? 1.0 : 0.0)));
      }
    }
    if (la::cholesky_upper(g, l, l, 1e-14, c.threads) >= 0) {
      orth_householder(y, m, l, r, c.threads);
      return Status::Ok();
    }
    double dmin = g[0], dmax = g[0];
    for (int64_t i = 1; i < l; ++i) {
      dmin = std::min(dmin, g[i * l + i]);
      dmax = std::max(dmax, g[i * l + i]);
    }
    if (r) upper_times(g, r, l);
    la::invert_upper(g, l, l);
    for (int64_t i = 0; i < l * l; ++i) w.rinv[i] = static_cast<float>(g[i]);
    Status st = mm(c, m, l, l, y, DType::F32, l, false, w.rinv.data(), DType::F32, l, false, w.tmp.data(), l);
    if (!st.ok()) return st;
    std::copy(w.tmp.begin(), w.tmp.begin() + m * l, y);
    if (pass == 0 && !exact && dmax <= 1e3 * dmin) return Status::Ok();
    // A second pass on a nearly orthonormal input leaves it orthonormal to
    // f32 rounding; a third when the first left it far off.
    if (pass >= 1 && dev <= 1e-2) return Status::Ok();
  }
  return Status::Ok();
}

// left (m x r) = base (m x c, f32, ld c) · (small (c x r, f64, ld ldsmall) scaled by √σ by column)
Status scaled_product(const Ctx& ctx, const float* base, int64_t m, int64_t c, const double* small, int64_t ldsmall,
                      const std::vector<double>& sigma, int64_t r, float* out) {
  std::vector<float> sm(static_cast<size_t>(c * r));
  for (int64_t i = 0; i < c; ++i) {
    for (int64_t j = 0; j < r; ++j) sm[i * r + j] = static_cast<float>(small[i * ldsmall + j] * std::sqrt(sigma[j]));
  }
  return mm(ctx, m, r, c, base, DType::F32, c, false, sm.data(), DType::F32, r, false, out, r);
}

using Chooser = std::function<int64_t(const std::vector<double>& sigma)>;


// Randomized SVD of X (m x n). choose() picks the rank from the l
// estimated singular values, or returns -1 to ask for a larger k.
Status rsvd(const MatrixView& x, int64_t k, int64_t p, int64_t q, uint64_t seed, const Ctx& c, const Chooser& choose,
            LowRankResult* out, bool* retry) {
  const int64_t m = x.rows, n = x.cols;
  // The GEMM kernels compute 16 columns at a time (half a 32-wide AVX-512
  // strip, two 8-wide AVX2 vectors), so up to 15 more sketch columns cost
  // nothing in the passes over X: oversampling is rounded up to fill them.
  const int64_t l = std::min((k + p + 15) / 16 * 16, std::min(m, n));
  *retry = false;
  std::vector<float> qy(static_cast<size_t>(m * l)), qz(static_cast<size_t>(n * l));
  OrthWork ow;
  // Ω lives in the buffer Z uses later.
  float* omega = qz.data();
  gaussian(seed, n, l, omega, c.threads);
  Status st = mm(c, m, l, n, x.data, x.dtype, n, false, omega, DType::F32, l, false, qy.data(), l);
  if (!st.ok()) return st;
  if (!(st = orth(qy.data(), m, l, nullptr, q == 0, c, ow)).ok()) return st;
  for (int64_t it = 0; it < q; ++it) {
    if (!(st = mm(c, n, l, m, x.data, x.dtype, n, true, qy.data(), DType::F32, l, false, qz.data(), l)).ok()) return st;
    if (!(st = orth(qz.data(), n, l, nullptr, false, c, ow)).ok()) return st;
    if (!(st = mm(c, m, l, n, x.data, x.dtype, n, false, qz.data(), DType::F32, l, false, qy.data(), l)).ok()) return st;
    if (!(st = orth(qy.data(), m, l, nullptr, it + 1 == q, c, ow)).ok()) return st;
  }
  if (!(st = mm(c, n, l, m, x.data, x.dtype, n, true, qy.data(), DType::F32, l, false, qz.data(), l)).ok()) return st;
  std::vector<double> rz(static_cast<size_t>(l * l));
  if (!(st = orth(qz.data(), n, l, rz.data(), true, c, ow)).ok()) return st;
  // Rzᵀ = Ũ Σ Ṽᵀ
  std::vector<double> rzt(static_cast<size_t>(l * l)), ut(static_cast<size_t>(l * l)), vt(static_cast<size_t>(l * l));
  for (int64_t i = 0; i < l; ++i) {
    for (int64_t j = 0; j < l; ++j) rzt[i * l + j] = rz[j * l + i];
  }
  out->sigma.assign(static_cast<size_t>(l), 0.0);
  if (!(st = la::svd(rzt.data(), l, l, l, ut.data(), l, out->sigma.data(), vt.data(), l, c.threads)).ok()) return st;
  const int64_t r = choose(out->sigma);
  if (r < 0) {
    *retry = true;
    return Status::Ok();
  }
  out->rank = r;
  out->samples = l;
  out->left.assign(static_cast<size_t>(m * r), 0.0f);
  out->right.assign(static_cast<size_t>(r * n), 0.0f);
  if (r == 0) return Status::Ok();
  // L = Q·Ũ_r·Σ^½ ;  R = Σ^½·Ṽ_rᵀ·Qzᵀ  (Ṽᵀ rows are vt's rows)
  if (!(st = scaled_product(c, qy.data(), m, l, ut.data(), l, out->sigma, r, out->left.data())).ok()) return st;
  std::vector<float> sv(static_cast<size_t>(r * l));
  for (int64_t i = 0; i < r; ++i) {
    const double f = std::sqrt(out->sigma[i]);
    for (int64_t j = 0; j < l; ++j) sv[i * l + j] = static_cast<float>(vt[i * l + j] * f);
  }
  return mm(c, r, n, l, sv.data(), DType::F32, l, false, qz.data(), DType::F32, l, true, out->right.data(), n);
}

// Exact SVD of X as f64: U (rows x cols of the tall orientation), s, Vt.
struct Exact {
  bool tall;
  int64_t big, small;  // the tall orientation's m >= n
  std::vector<double> u, s, vt;
};

Status exact_core(const MatrixView& x, int threads, Exact* e) {
  e->tall = x.rows >= x.cols;
  e->big = std::max(x.rows, x.cols);
  e->small = std::min(x.rows, x.cols);
  std::vector<double> a(static_cast<size_t>(e->big * e->small));
  to_f64(x, !e->tall, a.data());
  e->u.assign(static_cast<size_t>(e->big * e->small), 0.0);
  e->s.assign(static_cast<size_t>(e->small), 0.0);
  e->vt.assign(static_cast<size_t>(e->small * e->small), 0.0);
  return la::svd(a.data(), e->big, e->small, e->small, e->u.data(), e->small, e->s.data(), e->vt.data(), e->small,
                 threads);
}

// Singular vector c of X's left (i < m) or right (j < n) side from an Exact.
double left_vec(const Exact& e, int64_t i, int64_t c) { return e.tall ? e.u[i * e.small + c] : e.vt[c * e.small + i]; }
double right_vec(const Exact& e, int64_t j, int64_t c) { return e.tall ? e.vt[c * e.small + j] : e.u[j * e.small + c]; }

Status exact_factor(const MatrixView& x, const Chooser& choose, int threads, LowRankResult* out) {
  Exact e;
  Status st = exact_core(x, threads, &e);
  if (!st.ok()) return st;
  out->sigma = e.s;
  const int64_t r = choose(out->sigma);
  out->rank = r;
  const int64_t m = x.rows, n = x.cols;
  out->left.assign(static_cast<size_t>(m * r), 0.0f);
  out->right.assign(static_cast<size_t>(r * n), 0.0f);
  for (int64_t c = 0; c < r; ++c) {
    const double f = std::sqrt(e.s[c]);
    for (int64_t i = 0; i < m; ++i) out->left[i * r + c] = static_cast<float>(left_vec(e, i, c) * f);
    for (int64_t j = 0; j < n; ++j) out->right[c * n + j] = static_cast<float>(right_vec(e, j, c) * f);
  }
  return Status::Ok();
}

// Whitening with a Gram matrix: R (n x n, upper, f64) with G + λI = RᵀR.
Status whiten_factor(const float* gram, int64_t n, int threads, std::vector<double>* r, double* damping) {
  std::vector<double> g0(static_cast<size_t>(n * n));
  double trace = 0;
  for (int64_t i = 0; i < n * n; ++i) {
    if (!std::isfinite(gram[i])) {
      return Status::Error(Code::Value, "whiten.gram has a non-finite value at index " + std::to_string(i));
    }
    g0[i] = gram[i];
  }
  for (int64_t i = 0; i < n; ++i) {
    if (g0[i * n + i] < 0) {
      return Status::Error(Code::Value, "whiten.gram has a negative diagonal entry at [" + std::to_string(i) + ", " +
                                            std::to_string(i) + "]; it must be XᵀX of the layer's inputs");
    }
    trace += g0[i * n + i];
  }
  if (!(trace > 0)) return Status::Error(Code::Value, "whiten.gram is zero: the activations carry no signal");
  const double mean = trace / static_cast<double>(n);
  // As SVD-LLM: a singular Gram (fewer samples than features, dead inputs)
  // gets the smallest diagonal damping that makes it positive definite.
  double lambda = 0;
  for (int attempt = 0; attempt < 8; ++attempt) {
    r->assign(g0.begin(), g0.end());
    for (int64_t i = 0; i < n; ++i) (*r)[i * n + i] += lambda;
    if (la::cholesky_upper(r->data(), n, n, 1e-12, threads) < 0) {
      *damping = lambda;
      return Status::Ok();
    }
    lambda = lambda == 0 ? 1e-6 * mean : lambda * 10;
  }
  return Status::Error(Code::Value, "whiten.gram is not positive semi-definite (Cholesky failed even with damping " +
                                        std::to_string(lambda / 10) + "); it must be XᵀX of the layer's inputs");
}

// right := right · R⁻ᵀ (right: rank x n, R upper n x n): back substitution
// on the columns of rightᵀ, split over threads by columns.
void unwhiten(std::vector<float>* right, int64_t rank, int64_t n, const std::vector<double>& R, int threads) {
  if (rank == 0) return;
  std::vector<double> xt(static_cast<size_t>(n * rank));
  for (int64_t c = 0; c < rank; ++c) {
    for (int64_t j = 0; j < n; ++j) xt[j * rank + c] = (*right)[c * n + j];
  }
  const la::Kernels& k = la::kernels();
  parallel_for(rank, 8, [&](int64_t c0, int64_t c1) {
    const int64_t w = c1 - c0;
    for (int64_t j = n - 1; j >= 0; --j) {
      double* row = xt.data() + j * rank + c0;
      for (int64_t i = j + 1; i < n; ++i) k.axpy(w, -R[j * n + i], xt.data() + i * rank + c0, row);
      const double inv = 1.0 / R[j * n + j];
      for (int64_t c = 0; c < w; ++c) row[c] *= inv;
    }
  }, threads);
  for (int64_t c = 0; c < rank; ++c) {
    for (int64_t j = 0; j < n; ++j) (*right)[c * n + j] = static_cast<float>(xt[j * rank + c]);
  }
}

double tail_energy(const std::vector<double>& sigma, int64_t r) {
  double t = 0;
  for (size_t i = static_cast<size_t>(r); i < sigma.size(); ++i) t += sigma[i] * sigma[i];
  return t;
}

double head_energy(const std::vector<double>& sigma, int64_t r) {
  double t = 0;
  for (int64_t i = 0; i < r && i < static_cast<int64_t>(sigma.size()); ++i) t += sigma[i] * sigma[i];
  return t;
}

bool use_cuda(GemmKernel k) {
  if (k == GemmKernel::Cuda) return true;
  if (k != GemmKernel::Auto) return false;
  return cusolver_available(nullptr, nullptr);
}

}  // namespace

int64_t pick_rank(RankRule rule, int64_t rank, double energy, double ratio, int64_t m, int64_t n,
                  const std::vector<double>& sigma, double total) {
  const int64_t full = std::min(m, n);
  switch (rule) {
    case RankRule::Rank: return std::min(rank, full);
    case RankRule::Ratio: {
      const double r = std::floor(ratio * static_cast<double>(m) * static_cast<double>(n) / static_cast<double>(m + n));
      return static_cast<int64_t>(std::min<double>(r, static_cast<double>(full)));
    }
    case RankRule::Energy: {
      const double want = energy * total;
      double acc = 0;
      for (size_t i = 0; i < sigma.size(); ++i) {
        acc += sigma[i] * sigma[i];
        if (acc >= want) return static_cast<int64_t>(i + 1);
      }
      // All of the spectrum (up to rounding) is kept by the full rank.
      if (static_cast<int64_t>(sigma.size()) >= full) return full;
      return -1;
    }
  }
  return -1;
}

Status residual_sq(const MatrixView& x, const float* l, const float* r, int64_t k, double* res_sq, double* norm_sq_out,
                   GemmKernel kernel, int threads) {
  const int64_t m = x.rows, n = x.cols;
  // R packed once; each block of 96 rows (a multiple of both micro tiles)
  // of L·R is formed on one thread and compared with X while it is hot.
  constexpr int64_t RB = 96;
  GemmArgs g;
  g.m = m;
  g.n = n;
  g.k = k;
  g.a = {l, DType::F32, std::max<int64_t>(k, 1), false};
  g.b = {r, DType::F32, n, false};
  g.ldc = n;
  g.kernel = kernel == GemmKernel::Cuda ? GemmKernel::Auto : kernel;
  PackedB pb;
  Status st = gemm_pack_b(g, &pb);
  if (!st.ok()) return st;
  const int64_t blocks = (m + RB - 1) / RB;
  std::vector<double> parts(static_cast<size_t>(blocks), 0.0), nparts(static_cast<size_t>(blocks), 0.0);
  const la::Kernels& kk = la::kernels();
  parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
    thread_local std::vector<float> cbuf;
    std::vector<float> row;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * RB, i1 = std::min(m, i0 + RB);
      if (cbuf.size() < static_cast<size_t>(RB * n)) cbuf.resize(static_cast<size_t>(RB * n));
      GemmArgs gb = g;
      gb.c = cbuf.data();  // rows i0..i1 of C land in cbuf
      gemm_rows(gb, pb, i0, i1);
      double s = 0, t = 0;
      for (int64_t i = i0; i < i1; ++i) {
        double d2, n2;
        kk.sqdiff(n, row_f32(x, i * n, n, &row), cbuf.data() + (i - i0) * n, &d2, &n2);
        s += d2;
        t += n2;
      }
      parts[b] = s;
      nparts[b] = t;
    }
  }, threads);
  *res_sq = sum_chunks(parts);
  if (norm_sq_out) *norm_sq_out = sum_chunks(nparts);
  return Status::Ok();
}

Status exact_svd(const SvdArgs& a, SvdResult* out) {
  if (!is_float_dtype(a.a.dtype)) return Status::Error(Code::DType, "input must be f32, f16 or bf16");
  if (a.a.rows < 1 || a.a.cols < 1) return Status::Error(Code::Shape, "input must have at least one row and one column");
  const int64_t full = std::min(a.a.rows, a.a.cols);
  const int64_t k = a.k > 0 ? std::min(a.k, full) : full;
  if (!std::isfinite(norm_sq(a.a, a.threads))) return non_finite(a.a, "input");
  if (a.kernel == GemmKernel::Cuda || (a.kernel == GemmKernel::Auto && cusolver_available(nullptr, nullptr))) {
    Status st = cuda_svd(a.a, k, out);
    if (st.ok() || a.kernel == GemmKernel::Cuda) return st;
  }
  Exact e;
  Status st = exact_core(a.a, a.threads, &e);
  if (!st.ok()) return st;
  const int64_t m = a.a.rows, n = a.a.cols;
  out->k = k;
  out->cuda = false;
  out->s.assign(e.s.begin(), e.s.begin() + k);
  out->u.assign(static_cast<size_t>(m * k), 0.0f);
  out->vt.assign(static_cast<size_t>(k * n), 0.0f);
  for (int64_t c = 0; c < k; ++c) {
    for (int64_t i = 0; i < m; ++i) out->u[i * k + c] = static_cast<float>(left_vec(e, i, c));
    for (int64_t j = 0; j < n; ++j) out->vt[c * n + j] = static_cast<float>(right_vec(e, j, c));
  }
  return Status::Ok();
}

Status low_rank(const LowRankArgs& a, LowRankResult* out) {
  const int64_t m = a.w.rows, n = a.w.cols;
  if (!is_float_dtype(a.w.dtype)) return Status::Error(Code::DType, "input must be f32, f16 or bf16");
  if (m < 1 || n < 1) return Status::Error(Code::Shape, "input must have at least one row and one column");
  if (a.oversample < 0 || a.power_iters < 0) return Status::Error(Code::Value, "oversample and powerIters must be >= 0");
  if (a.rule == RankRule::Rank && a.rank < 1) return Status::Error(Code::Value, "rank must be >= 1");
  if (a.rule == RankRule::Energy && !(a.energy > 0 && a.energy <= 1)) return Status::Error(Code::Value, "energy must be in (0, 1]");
  if (a.rule == RankRule::Ratio && !(a.ratio > 0)) return Status::Error(Code::Value, "ratio must be > 0");
  if (a.whiten == Whiten::Gram && !a.gram) return Status::Error(Code::Value, "whiten.gram is missing");
  if (a.whiten == Whiten::Scale && !a.scale) return Status::Error(Code::Value, "whiten.activationScale is missing");
  const Ctx ctx{a.kernel == GemmKernel::Cuda ? GemmKernel::Auto : a.kernel, a.threads};
  *out = LowRankResult{};
  const double wnorm2 = norm_sq(a.w, a.threads);
  if (!std::isfinite(wnorm2)) return non_finite(a.w, "input");

  // The matrix to factor: W, W·diag(scale) or W·S with XᵀX (+ λI) = S·Sᵀ, S = Rᵀ.
  std::vector<float> xbuf;
  std::vector<double> wr;
  MatrixView x = a.w;
  if (a.whiten == Whiten::Scale) {
    for (int64_t j = 0; j < n; ++j) {
      if (!(a.scale[j] > 0) || !std::isfinite(a.scale[j])) {
        return Status::Error(Code::Value, "whiten.activationScale[" + std::to_string(j) + "] is " +
                                              std::to_string(a.scale[j]) + "; scales must be finite and > 0");
      }
    }
    xbuf.resize(static_cast<size_t>(m * n));
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) xbuf[i * n + j] = elem(a.w, i * n + j) * a.scale[j];
    }
  } else if (a.whiten == Whiten::Gram) {
    Status st = whiten_factor(a.gram, n, a.threads, &wr, &out->damping);
    if (!st.ok()) return st;
    std::vector<float> rf(wr.begin(), wr.end());
    xbuf.resize(static_cast<size_t>(m * n));
    st = mm(ctx, m, n, n, a.w.data, a.w.dtype, n, false, rf.data(), DType::F32, n, true, xbuf.data(), n);
    if (!st.ok()) return st;
  }
  if (!xbuf.empty()) x = MatrixView{xbuf.data(), DType::F32, m, n};
  const double xnorm2 = xbuf.empty() ? wnorm2 : norm_sq(x, a.threads);
  const int64_t full = std::min(m, n);

  // Rank targets known before the spectrum.
  const int64_t fixed = a.rule == RankRule::Energy ? -1 : pick_rank(a.rule, a.rank, a.energy, a.ratio, m, n, {}, 0);
  if (a.rule == RankRule::Ratio && fixed < 1) {
    return Status::Error(Code::Value, "ratio " + std::to_string(a.ratio) + " keeps fewer parameters than rank 1 needs (m + n = " +
                                          std::to_string(m + n) + " of " + std::to_string(m * n) + ")");
  }
  // auto: the exact SVD when the matrix is small or the sketch would be
  // nearly as large as the matrix.
  auto exact_pays = [&](int64_t k) { return full <= 384 || 3 * (k + a.oversample) >= full; };
  LrMethod method = a.method;
  if (method == LrMethod::Auto) method = exact_pays(fixed > 0 ? fixed : std::max<int64_t>(1, full / 8)) ? LrMethod::Exact : LrMethod::Randomized;
  const Chooser fixed_choice = [&](const std::vector<double>&) { return fixed; };
  const Chooser energy_choice = [&](const std::vector<double>& s) {
    return pick_rank(RankRule::Energy, 0, a.energy, 0, m, n, s, xnorm2);
  };
  const Chooser& choose = a.rule == RankRule::Energy ? energy_choice : fixed_choice;

  bool done = false;
  if (use_cuda(a.kernel)) {
    CudaFactor cf;
    cf.x = x;
    cf.exact = method == LrMethod::Exact;
    cf.k = fixed > 0 ? fixed : std::min<int64_t>(full, 64);
    cf.oversample = a.oversample;
    cf.power_iters = a.power_iters;
    cf.choose = choose;
    Status st;
    for (;;) {
      CudaFactorResult cr;
      st = cuda_factor(cf, &cr);
      if (!st.ok()) break;
      if (cr.retry) {
        cf.k = std::min(full, cf.k * 2);
        if (3 * (cf.k + a.oversample) >= full) cf.exact = true;
        continue;
      }
      out->rank = cr.rank;
      out->sigma = std::move(cr.sigma);
      out->left = std::move(cr.left);
      out->right = std::move(cr.right);
      out->method = cr.exact ? LrMethod::Exact : LrMethod::Randomized;  // a k too large for Xgesvdr runs the exact SVD
      out->samples = cr.samples;
      out->cuda = true;
      done = true;
      break;
    }
    if (!done && a.kernel == GemmKernel::Cuda) return st;  // asked for: report; auto: fall back
  }
  if (!done && method == LrMethod::Randomized) {
    int64_t k = fixed > 0 ? fixed : std::min<int64_t>(full, 64);
    for (;;) {
      bool retry = false;
      Status st = rsvd(x, k, a.oversample, a.power_iters, a.seed, ctx, choose, out, &retry);
      if (!st.ok()) return st;
      if (!retry) {
        out->method = LrMethod::Randomized;
        done = true;
        break;
      }
      k = std::min(full, k * 2);
      if (exact_pays(k)) break;  // the energy needs most of the spectrum: exact
    }
  }
  if (!done) {
    Status st = exact_factor(x, choose, a.threads, out);
    if (!st.ok()) return st;
    out->method = LrMethod::Exact;
    out->samples = 0;
  }
  const int64_t r = out->rank;

  // Measured error on the factored matrix, before undoing the whitening.
  double res2 = 0;
  Status st = residual_sq(x, out->left.data(), out->right.data(), r, &res2, nullptr, ctx.kernel, a.threads);
  if (!st.ok()) return st;
  double opt2 = out->method == LrMethod::Exact ? tail_energy(out->sigma, r)
                                               : std::max(0.0, xnorm2 - head_energy(out->sigma, r));
  double denom = xnorm2;

  if (a.whiten == Whiten::Scale) {
    for (int64_t c = 0; c < r; ++c) {
      for (int64_t j = 0; j < n; ++j) out->right[c * n + j] /= a.scale[j];
    }
  } else if (a.whiten == Whiten::Gram) {
    unwhiten(&out->right, r, n, wr, a.threads);
    if (out->damping > 0) {
      // ‖E·S_λ‖² = tr(E (G + λI) Eᵀ) = ‖E·X‖² + λ‖E‖²: take the λ part out.
      double e2 = 0, w2 = 0;
      st = residual_sq(a.w, out->left.data(), out->right.data(), r, &e2, &w2, ctx.kernel, a.threads);
      if (!st.ok()) return st;
      res2 = std::max(0.0, res2 - out->damping * e2);
      opt2 = std::max(0.0, opt2 - out->damping * e2);
      denom = std::max(0.0, denom - out->damping * w2);
    }
  }
  out->rel_error = denom > 0 ? std::sqrt(res2 / denom) : 0.0;
  out->optimal_rel_error = denom > 0 ? std::sqrt(opt2 / denom) : 0.0;
  return Status::Ok();
}

PeakProbe probe_peak(int64_t iters) {
  using clock = std::chrono::steady_clock;
  PeakProbe p;
  auto t0 = clock::now();
  volatile uint64_t sink = gemmk::ref::add_chain(static_cast<uint64_t>(iters));
  p.add_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  (void)sink;
  volatile double f = 0;
  if (cpu_enabled().avx2 && gemmk::avx2::isa()) {
    t0 = clock::now();
    f = gemmk::avx2::fma_probe(iters);
    p.fma256_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  }
  if (cpu_enabled().avx512 && gemmk::avx512::isa()) {
    t0 = clock::now();
    f = gemmk::avx512::fma_probe(iters);
    p.fma512_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  }
  (void)f;
  return p;
}

}  // namespace st
