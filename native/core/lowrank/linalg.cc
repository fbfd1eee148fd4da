// f64 linear algebra of the lowrank room (see linalg.h). The algorithms are
// the textbook ones (Golub & Van Loan, "Matrix Computations": Householder
// QR and bidiagonalization, the Golub–Kahan SVD step with a Wilkinson
// shift, right-looking blocked Cholesky); the loops are the f64 kernels of
// la_kernels.h and the Gram kernel of gemm_kernels.h.
//
// Why Golub–Kahan–Reinsch for the exact SVD (and not one-sided Jacobi):
// the inputs are f32, so an f64 backward-stable method already gives
// singular values to ~1e-16·‖A‖, far below the f32 data's own rounding
// (~6e-8·‖A‖); Jacobi's extra relative accuracy for tiny singular values
// buys nothing here. Speed decides: Jacobi needs ~6–10 sweeps of ~7n³ flops
// of level-1 work (≈ 60 GFLOP at n = 1024), GKR needs 8/3·n³ for the
// bidiagonalization plus the rotations, which are applied one whole sweep
// at a time as a chain that keeps a block of the carried row in registers
// (la_kernels.h rot_chain) and splits over threads by columns.
#include "linalg.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../cpu.h"
#include "gemm_kernels.h"
#include "la_kernels.h"

namespace st {
namespace la {

namespace {

constexpr double kEps = std::numeric_limits<double>::epsilon();

// Columns (or rows) per parallel chunk so that each carries ~1M flops: a
// dispatch to the pool costs microseconds, and the small SVDs inside the
// randomized one make hundreds of these calls.
int64_t grain_for(int64_t per_item) { return std::max<int64_t>(16, (int64_t{1} << 20) / std::max<int64_t>(1, per_item)); }

void gram_tile(const double* y, int64_t rows, int64_t ldy, int64_t i0, int mi, int64_t j0, int nj, double* g,
               int64_t ldg, bool acc) {
  const gemmk::Isa* isa = gemmk::best_isa();
  if (isa) isa->gram(y, rows, ldy, i0, mi, j0, nj, g, ldg, acc);
  else gemmk::ref::gram(y, rows, ldy, i0, mi, j0, nj, g, ldg, acc);
}

void gram_dims(int* mr, int* nr) {
  const gemmk::Isa* isa = gemmk::best_isa();
  // The reference takes any tile; 8 x 16 keeps its loops short.
  *mr = isa ? isa->gram_mr : 8;
  *nr = isa ? isa->gram_nr : 16;
}

// The Householder vector of x (length len, contiguous, overwritten by v
// with v[0] = 1): (I − tau·v·vᵀ)·x = beta·e1. Returns beta.
double make_reflector(int64_t len, double* x, double* tau) {
  const Kernels& k = kernels();
  const double alpha = x[0];
  const double sigma = len > 1 ? k.dot(len - 1, x + 1, x + 1) : 0.0;
  x[0] = 1.0;
  if (sigma == 0.0) {
    *tau = 0.0;
    return alpha;
  }
  const double mu = std::sqrt(alpha * alpha + sigma);
  const double beta = alpha >= 0 ? -mu : mu;  // alpha − beta without cancellation
  *tau = (beta - alpha) / beta;
  const double scale = 1.0 / (alpha - beta);
  for (int64_t i = 1; i < len; ++i) x[i] *= scale;
  return beta;
}

// A[r0.., c0..c1) := (I − tau·v·vᵀ)·A for rows r0..r0+len, column chunks in parallel.
void reflect_columns(const double* v, double tau, int64_t len, double* a, int64_t lda, int64_t c0, int64_t c1,
                     int threads) {
  if (tau == 0.0 || c1 <= c0 || len <= 0) return;
  std::vector<double> u(static_cast<size_t>(len));
  for (int64_t i = 0; i < len; ++i) u[i] = -tau * v[i];
  const Kernels& k = kernels();
  parallel_for(c1 - c0, grain_for(4 * len), [&](int64_t j0, int64_t j1) {
    std::vector<double> w(static_cast<size_t>(j1 - j0));
    k.gemv_t(len, j1 - j0, a + c0 + j0, lda, v, w.data());
    k.rank1(len, j1 - j0, a + c0 + j0, lda, u.data(), w.data());
  }, threads);
}

// Rows r0..r1 of A, columns c0..c0+len: A := A·(I − tau·v·vᵀ), row chunks in parallel.
void reflect_rows(const double* v, double tau, int64_t len, double* a, int64_t lda, int64_t r0, int64_t r1,
                  int64_t c0, int threads) {
  if (tau == 0.0 || r1 <= r0 || len <= 0) return;
  const Kernels& k = kernels();
  parallel_for(r1 - r0, grain_for(4 * len), [&](int64_t i0, int64_t i1) {
    std::vector<double> u(static_cast<size_t>(i1 - i0));
    for (int64_t i = i0; i < i1; ++i) u[i - i0] = -tau * k.dot(len, a + (r0 + i) * lda + c0, v);
    k.rank1(i1 - i0, len, a + (r0 + i0) * lda + c0, lda, u.data(), v);
  }, threads);
}

double hypot2(double y, double z) { return std::sqrt(y * y + z * z); }

// c, s with c·y + s·z = r, c·z − s·y = 0.
void givens(double y, double z, double* c, double* s, double* r) {
  if (z == 0.0) {
    *c = 1.0;
    *s = 0.0;
    *r = y;
    return;
  }
  const double h = hypot2(y, z);
  *c = y / h;
  *s = z / h;
  *r = h;
}

// Golub–Kahan SVD of the bidiagonal (d, e), rotations applied to the rows
// of ut (n x ulen) and vt (n x vlen). Returns false if it did not converge.
bool bidiagonal_qr(int64_t n, double* d, double* e, double* ut, int64_t ldu, int64_t ulen, double* vt, int64_t ldv,
                   int64_t vlen, int threads) {
  const Kernels& k = kernels();
  double anorm = 0;
  for (int64_t i = 0; i < n; ++i) anorm = std::max(anorm, std::fabs(d[i]));
  for (int64_t i = 0; i + 1 < n; ++i) anorm = std::max(anorm, std::fabs(e[i]));
  const double tiny = kEps * anorm;
  std::vector<double> cl(static_cast<size_t>(n)), sl(static_cast<size_t>(n)), cr(static_cast<size_t>(n)),
      sr(static_cast<size_t>(n));
  // Sweeps are queued and applied many at a time, per block of columns
  // small enough to stay in L2 (one sweep at a time would stream all of U
  // and V from L3 per sweep). Per element the rotations still come in
  // sweep order: the same bits as applying each sweep at once.
  struct Sweep {
    int64_t p, q;
    size_t at;  // offset of its q − p cosines/sines in the queue's arrays
  };
  struct Queue {
    std::vector<Sweep> sweeps;
    std::vector<double> c, s;
    int64_t rotations = 0;
  } qu, qv;
  auto push = [](Queue& qq, const double* c, const double* s, int64_t p, int64_t q) {
    qq.sweeps.push_back({p, q, qq.c.size()});
    qq.c.insert(qq.c.end(), c, c + (q - p));
    qq.s.insert(qq.s.end(), s, s + (q - p));
    qq.rotations += q - p;
  };
  auto flush = [&](Queue& qq, double* x, int64_t ldx, int64_t len) {
    if (qq.sweeps.empty()) return;
    constexpr int64_t CB = 128;  // 128 columns x 8 B x rows: ~1 MiB for 1024 rows
    parallel_for((len + CB - 1) / CB, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t j0 = b * CB, w = std::min(CB, len - j0);
        for (const Sweep& sw : qq.sweeps) k.rot_chain(sw.q - sw.p, qq.c.data() + sw.at, qq.s.data() + sw.at, x + sw.p * ldx + j0, ldx, w);
      }
    }, threads);
    qq.sweeps.clear();
    qq.c.clear();
    qq.s.clear();
    qq.rotations = 0;
  };
  auto flush_all = [&] {
    flush(qu, ut, ldu, ulen);
    flush(qv, vt, ldv, vlen);
  };
  const int64_t max_steps = 100 * n + 100;
  int64_t steps = 0;
  int64_t q = n - 1;
  while (q > 0) {
    for (int64_t i = 0; i < q; ++i) {
      if (std::fabs(e[i]) <= kEps * (std::fabs(d[i]) + std::fabs(d[i + 1])) || std::fabs(e[i]) <= tiny) e[i] = 0.0;
    }
    for (int64_t i = 0; i <= q; ++i) {
      if (std::fabs(d[i]) <= tiny) d[i] = 0.0;
    }
    while (q > 0 && e[q - 1] == 0.0) --q;
    if (q == 0) break;
    int64_t p = q - 1;
    while (p > 0 && e[p - 1] != 0.0) --p;
    // Block p..q, every e[p..q-1] non-zero.
    int64_t zero = -1;
    for (int64_t i = p; i < q; ++i) {
      if (d[i] == 0.0) {
        zero = i;
        break;
      }
    }
    if (zero >= 0) {
      // Row `zero` has only e[zero]: chase it off to the right with left
      // rotations of rows (j, zero).
      flush_all();
      double x = e[zero];
      e[zero] = 0.0;
      for (int64_t j = zero + 1; j <= q && x != 0.0; ++j) {
        double c, s, r;
        givens(d[j], x, &c, &s, &r);
        d[j] = r;
        if (j < q) {
          x = -s * e[j];
          e[j] = c * e[j];
        }
        k.rot(ulen, c, s, ut + j * ldu, ut + zero * ldu);
      }
      continue;
    }
    if (d[q] == 0.0) {
      // Column q has only e[q-1]: chase it up with right rotations of columns (j, q).
      flush_all();
      double x = e[q - 1];
      e[q - 1] = 0.0;
      for (int64_t j = q - 1; j >= p && x != 0.0; --j) {
        double c, s, r;
        givens(d[j], x, &c, &s, &r);
        d[j] = r;
        if (j > p) {
          x = -s * e[j - 1];
          e[j - 1] = c * e[j - 1];
        }
        k.rot(vlen, c, s, vt + j * ldv, vt + q * ldv);
      }
      continue;
    }
    if (++steps > max_steps) {
      flush_all();
      return false;
    }
    // Wilkinson shift from the trailing 2x2 of BᵀB.
    const double t11 = d[q - 1] * d[q - 1] + (q - 1 > p ? e[q - 2] * e[q - 2] : 0.0);
    const double t12 = d[q - 1] * e[q - 1];
    const double t22 = d[q] * d[q] + e[q - 1] * e[q - 1];
    double mu = t22;
    if (t12 != 0.0) {
      const double delta = 0.5 * (t11 - t22);
      const double root = std::sqrt(delta * delta + t12 * t12);
      mu = t22 - t12 * t12 / (delta + (delta >= 0 ? root : -root));
    }
    double y = d[p] * d[p] - mu, z = d[p] * e[p];
    for (int64_t i = p; i < q; ++i) {
      double c, s, r;
      // Right rotation of columns i, i+1 (zeroes z in row i-1, or starts the chase).
      givens(y, z, &c, &s, &r);
      if (i > p) e[i - 1] = r;
      double a = c * d[i] + s * e[i];
      e[i] = c * e[i] - s * d[i];
      d[i] = a;
      const double bulge = s * d[i + 1];
      d[i + 1] = c * d[i + 1];
      cr[i - p] = c;
      sr[i - p] = s;
      // Left rotation of rows i, i+1 (zeroes the bulge below the diagonal).
      givens(d[i], bulge, &c, &s, &r);
      d[i] = r;
      a = c * e[i] + s * d[i + 1];
      d[i + 1] = c * d[i + 1] - s * e[i];
      e[i] = a;
      if (i + 1 < q) {
        y = e[i];
        z = s * e[i + 1];
        e[i + 1] = c * e[i + 1];
      }
      cl[i - p] = c;
      sl[i - p] = s;
    }
    push(qv, cr.data(), sr.data(), p, q);
    push(qu, cl.data(), sl.data(), p, q);
    // Flush once the queued rotations touch each row ~32 times on average.
    if (qu.rotations >= 32 * n) flush_all();
  }
  flush_all();
  return true;
}

void transpose(const double* a, int64_t rows, int64_t cols, int64_t lda, double* t, int64_t ldt) {
  constexpr int64_t B = 32;
  for (int64_t i0 = 0; i0 < rows; i0 += B) {
    for (int64_t j0 = 0; j0 < cols; j0 += B) {
      for (int64_t i = i0; i < std::min(rows, i0 + B); ++i) {
        for (int64_t j = j0; j < std::min(cols, j0 + B); ++j) t[j * ldt + i] = a[i * lda + j];
      }
    }
  }
}

}  // namespace

void gram(const double* y, int64_t m, int64_t l, int64_t ldy, double* g, int64_t ldg, int threads) {
  int mr, nr;
  gram_dims(&mr, &nr);
  const int64_t ti = (l + mr - 1) / mr, tj = (l + nr - 1) / nr;
  if (m == 0) {
    for (int64_t i = 0; i < l; ++i) std::fill(g + i * ldg, g + i * ldg + l, 0.0);
    return;
  }
  // Chunks of rows that stay in L2 while every tile passes over them; each
  // tile's chain continues from its stored value (same bits as one pass).
  const int64_t rc = std::max<int64_t>(32, (int64_t{96} << 10) / (8 * std::max<int64_t>(l, 1)));
  for (int64_t r0 = 0; r0 < m; r0 += rc) {
    const int64_t rows = std::min(rc, m - r0);
    parallel_for(ti * tj, std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, rows * mr * nr)), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t i0 = (t / tj) * mr, j0 = (t % tj) * nr;
        if (j0 + nr <= i0) continue;  // strictly below the diagonal: mirrored
        const int mi = static_cast<int>(std::min<int64_t>(mr, l - i0)), nj = static_cast<int>(std::min<int64_t>(nr, l - j0));
        gram_tile(y + r0 * ldy, rows, ldy, i0, mi, j0, nj, g + i0 * ldg + j0, ldg, r0 > 0);
      }
    }, threads);
  }
  // fma(a, b, c) == fma(b, a, c): the mirrored entries are the same bits.
  for (int64_t i = 0; i < l; ++i) {
    for (int64_t j = 0; j < i; ++j) g[i * ldg + j] = g[j * ldg + i];
  }
}

int64_t cholesky_upper(double* g, int64_t n, int64_t ld, double floor, int threads) {
  const Kernels& k = kernels();
  double maxdiag = 0;
  for (int64_t i = 0; i < n; ++i) maxdiag = std::max(maxdiag, g[i * ld + i]);
  const double limit = floor * maxdiag;
  constexpr int64_t NB = 64;
  int mr, nr;
  gram_dims(&mr, &nr);
  for (int64_t kb = 0; kb < n; kb += NB) {
    const int64_t b = std::min(NB, n - kb);
    // The block's rows, all columns to the right: R11 and R12 = R11⁻ᵀ·G12.
    for (int64_t kk = kb; kk < kb + b; ++kk) {
      const double piv = g[kk * ld + kk];
      if (!(piv > limit) || !(piv > 0.0)) return kk;
      const double r = std::sqrt(piv), inv = 1.0 / r;
      g[kk * ld + kk] = r;
      for (int64_t j = kk + 1; j < n; ++j) g[kk * ld + j] *= inv;
      for (int64_t i = kk + 1; i < kb + b; ++i) k.axpy(n - i, -g[kk * ld + i], g + kk * ld + i, g + i * ld + i);
    }
    // Trailing update G22 −= R12ᵀ·R12 (upper triangle), tile by tile.
    const int64_t t0 = kb + b, l = n - t0;
    if (l <= 0) continue;
    const double* y = g + kb * ld + t0;
    const int64_t ti = (l + mr - 1) / mr, tj = (l + nr - 1) / nr;
    parallel_for(ti * tj, 4, [&](int64_t a0, int64_t a1) {
      std::vector<double> tile(static_cast<size_t>(mr * nr));
      for (int64_t t = a0; t < a1; ++t) {
        const int64_t i0 = (t / tj) * mr, j0 = (t % tj) * nr;
        if (j0 + nr <= i0) continue;
        const int mi = static_cast<int>(std::min<int64_t>(mr, l - i0)), nj = static_cast<int>(std::min<int64_t>(nr, l - j0));
        gram_tile(y, b, ld, i0, mi, j0, nj, tile.data(), nr, false);
        for (int ii = 0; ii < mi; ++ii) {
          double* row = g + (t0 + i0 + ii) * ld + t0 + j0;
          for (int jj = 0; jj < nj; ++jj) row[jj] -= tile[ii * nr + jj];
        }
      }
    }, threads);
  }
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < i; ++j) g[i * ld + j] = 0.0;
  }
  return -1;
}

void invert_upper(double* r, int64_t n, int64_t ld) {
  const Kernels& k = kernels();
  std::vector<double> w(static_cast<size_t>(n));
  for (int64_t i = n - 1; i >= 0; --i) {
    const double inv = 1.0 / r[i * ld + i];
    std::fill(w.begin(), w.end(), 0.0);
    // w = R[i, i+1:] · R⁻¹[i+1:, :] (rows below i already hold the inverse)
    for (int64_t p = i + 1; p < n; ++p) k.axpy(n - p, r[i * ld + p], r + p * ld + p, w.data() + p);
    r[i * ld + i] = inv;
    for (int64_t j = i + 1; j < n; ++j) r[i * ld + j] = -inv * w[j];
  }
}

void householder_qr(double* a, int64_t m, int64_t n, int64_t lda, const Reflectors& h, int threads) {
  for (int64_t kk = 0; kk < n; ++kk) {
    const int64_t len = m - kk;
    double* v = h.v + kk * h.ldv + kk;
    for (int64_t t = 0; t < len; ++t) v[t] = a[(kk + t) * lda + kk];
    double tau;
    const double beta = make_reflector(len, v, &tau);
    h.tau[kk] = tau;
    a[kk * lda + kk] = beta;
    for (int64_t t = 1; t < len; ++t) a[(kk + t) * lda + kk] = 0.0;
    reflect_columns(v, tau, len, a + kk * lda, lda, kk + 1, n, threads);
  }
}

void apply_reflectors(const Reflectors& h, int64_t shift, double* c, int64_t m, int64_t cols, int64_t ldc,
                      int threads) {
  for (int64_t kk = h.count - 1; kk >= 0; --kk) {
    const int64_t r0 = kk + shift, len = m - r0;
    reflect_columns(h.v + kk * h.ldv + r0, h.tau[kk], len, c + r0 * ldc, ldc, 0, cols, threads);
  }
}

namespace {

// Q = H0…H(count−1)·[I; 0] (m x cols): reflector k touches only columns >= k + shift.
void form_q(const Reflectors& h, int64_t shift, double* q, int64_t m, int64_t cols, int64_t ldq, int threads) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < cols; ++j) q[i * ldq + j] = i == j ? 1.0 : 0.0;
  }
  for (int64_t kk = h.count - 1; kk >= 0; --kk) {
    const int64_t r0 = kk + shift, len = m - r0;
    reflect_columns(h.v + kk * h.ldv + r0, h.tau[kk], len, q + r0 * ldq, ldq, r0, cols, threads);
  }
}

}  // namespace

Status svd(const double* a, int64_t m, int64_t n, int64_t lda, double* u, int64_t ldu, double* s, double* vt,
           int64_t ldvt, int threads) {
  if (n < 1 || m < n) return Status::Error(Code::Internal, "svd: needs m >= n >= 1");
  // QR first when the matrix is tall enough for it to pay off
  // (bidiagonalizing m x n costs 4mn² − 4n³/3; QR + bidiagonalizing R costs 2mn² + 2n³).
  const bool qr_first = m * 5 >= n * 8;
  const int64_t p = qr_first ? n : m;
  std::vector<double> work(static_cast<size_t>(p * n));
  std::vector<double> qr_v, qr_tau;
  Reflectors hq;
  if (qr_first) {
    std::vector<double> t(static_cast<size_t>(m * n));
    for (int64_t i = 0; i < m; ++i) std::copy(a + i * lda, a + i * lda + n, t.begin() + i * n);
    qr_v.assign(static_cast<size_t>(n * m), 0.0);
    qr_tau.assign(static_cast<size_t>(n), 0.0);
    hq = Reflectors{n, m, qr_v.data(), m, qr_tau.data()};
    householder_qr(t.data(), m, n, n, hq, threads);
    for (int64_t i = 0; i < n; ++i) std::copy(t.begin() + i * n, t.begin() + (i + 1) * n, work.begin() + i * n);
  } else {
    for (int64_t i = 0; i < m; ++i) std::copy(a + i * lda, a + i * lda + n, work.begin() + i * n);
  }
  // Bidiagonalize work (p x n): work = QL · B · QRᵀ.
  std::vector<double> d(static_cast<size_t>(n)), e(static_cast<size_t>(std::max<int64_t>(n - 1, 1)));
  std::vector<double> vl(static_cast<size_t>(n * p), 0.0), taul(static_cast<size_t>(n), 0.0);
  const int64_t nr = std::max<int64_t>(n - 2, 0);
  std::vector<double> vr(static_cast<size_t>(std::max<int64_t>(nr * n, 1)), 0.0), taur(static_cast<size_t>(std::max<int64_t>(nr, 1)), 0.0);
  const Reflectors hl{n, p, vl.data(), p, taul.data()};
  const Reflectors hr{nr, n, vr.data(), n, taur.data()};
  double* w = work.data();
  for (int64_t kk = 0; kk < n; ++kk) {
    const int64_t len = p - kk;
    double* v = vl.data() + kk * p + kk;
    for (int64_t t = 0; t < len; ++t) v[t] = w[(kk + t) * n + kk];
    double tau;
    d[kk] = make_reflector(len, v, &tau);
    taul[kk] = tau;
    reflect_columns(v, tau, len, w + kk * n, n, kk + 1, n, threads);
    if (kk + 2 < n) {
      const int64_t rlen = n - kk - 1;
      double* x = vr.data() + kk * n + kk + 1;
      std::copy(w + kk * n + kk + 1, w + kk * n + n, x);
      double rtau;
      e[kk] = make_reflector(rlen, x, &rtau);
      taur[kk] = rtau;
      reflect_rows(x, rtau, rlen, w, n, kk + 1, p, kk + 1, threads);
    } else if (kk + 1 < n) {
      e[kk] = w[kk * n + kk + 1];
    }
  }
  // Singular-vector matrices, transposed so rotations act on rows.
  std::vector<double> ql(static_cast<size_t>(p * n)), ut(static_cast<size_t>(n * p)), vtw(static_cast<size_t>(n * n));
  form_q(hl, 0, ql.data(), p, n, n, threads);
  transpose(ql.data(), p, n, n, ut.data(), p);
  std::vector<double>().swap(ql);
  std::vector<double> qrm(static_cast<size_t>(n * n));
  form_q(hr, 1, qrm.data(), n, n, n, threads);
  transpose(qrm.data(), n, n, n, vtw.data(), n);
  if (!bidiagonal_qr(n, d.data(), e.data(), ut.data(), p, p, vtw.data(), n, n, threads)) {
    return Status::Error(Code::Internal, "svd: the bidiagonal QR iteration did not converge");
  }
  // Non-negative, descending.
  for (int64_t i = 0; i < n; ++i) {
    if (d[i] < 0) {
      d[i] = -d[i];
      for (int64_t j = 0; j < n; ++j) vtw[i * n + j] = -vtw[i * n + j];
    }
  }
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return d[x] > d[y]; });
  for (int64_t i = 0; i < n; ++i) {
    s[i] = d[order[i]];
    std::copy(vtw.begin() + order[i] * n, vtw.begin() + (order[i] + 1) * n, vt + i * ldvt);
  }
  // U = [Q_qr ·] Utᵀ, columns in the sorted order.
  for (int64_t i = 0; i < m; ++i) std::fill(u + i * ldu, u + i * ldu + n, 0.0);
  for (int64_t c = 0; c < n; ++c) {
    const double* src = ut.data() + order[c] * p;
    for (int64_t i = 0; i < p; ++i) u[i * ldu + c] = src[i];
  }
  if (qr_first) apply_reflectors(hq, 0, u, m, n, ldu, threads);
  return Status::Ok();
}

}  // namespace la
}  // namespace st
