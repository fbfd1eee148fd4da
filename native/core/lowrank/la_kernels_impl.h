// The bodies of la_kernels.h, included by la_ref.cc and la_avx2.cc (each
// compiles them with its own flags into its own namespace). Static
// functions only: no symbol is shared between the two copies.
#include <cmath>
#include <cstdint>

#include "la_kernels.h"

namespace {

inline double fmad(double a, double b, double c) { return __builtin_fma(a, b, c); }

double k_dot(int64_t n, const double* x, const double* y) {
  double acc[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int l = 0; l < 16; ++l) acc[l] = fmad(x[i + l], y[i + l], acc[l]);
  }
  for (int l = 0; i + l < n; ++l) acc[l] = fmad(x[i + l], y[i + l], acc[l]);
  for (int w = 8; w >= 1; w /= 2) {
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  }
  return acc[0];
}

void k_axpy(int64_t n, double a, const double* x, double* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = fmad(a, x[i], y[i]);
}

void k_gemv_t(int64_t rows, int64_t cols, const double* a, int64_t lda, const double* v, double* w) {
  for (int64_t j = 0; j < cols; ++j) w[j] = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    const double vr = v[r];
    const double* ar = a + r * lda;
    for (int64_t j = 0; j < cols; ++j) w[j] = fmad(vr, ar[j], w[j]);
  }
}

void k_rank1(int64_t rows, int64_t cols, double* a, int64_t lda, const double* u, const double* w) {
  for (int64_t r = 0; r < rows; ++r) {
    const double ur = u[r];
    double* ar = a + r * lda;
    for (int64_t j = 0; j < cols; ++j) ar[j] = fmad(ur, w[j], ar[j]);
  }
}

// The chain in column blocks of 64: a block of the carried row stays in
// registers/L1 while it walks down the rows. The walk has a stride of a
// whole row (beyond what the hardware's stride prefetcher follows), so the
// rows a few steps ahead are prefetched explicitly.
void k_rot_chain(int64_t nrot, const double* c, const double* s, double* x, int64_t ldx, int64_t cols) {
  constexpr int64_t B = 64, PF = 6;
  double carry[B];
  for (int64_t j0 = 0; j0 < cols; j0 += B) {
    const int64_t w = cols - j0 < B ? cols - j0 : B;
    for (int64_t j = 0; j < w; ++j) carry[j] = x[j0 + j];
    for (int64_t k = 0; k < nrot; ++k) {
      if (k + PF <= nrot) {
        const char* ahead = reinterpret_cast<const char*>(x + (k + PF) * ldx + j0);
        for (int64_t off = 0; off < w * 8; off += 64) __builtin_prefetch(ahead + off, 1);
      }
      const double ck = c[k], sk = s[k];
      double* out = x + k * ldx + j0;
      const double* nx = x + (k + 1) * ldx + j0;
      for (int64_t j = 0; j < w; ++j) {
        const double xv = carry[j], yv = nx[j];
        out[j] = fmad(ck, xv, sk * yv);
        carry[j] = fmad(ck, yv, -(sk * xv));
      }
    }
    double* last = x + nrot * ldx + j0;
    for (int64_t j = 0; j < w; ++j) last[j] = carry[j];
  }
}

void k_rot(int64_t n, double c, double s, double* x, double* y) {
  for (int64_t i = 0; i < n; ++i) {
    const double xv = x[i], yv = y[i];
    x[i] = fmad(c, xv, s * yv);
    y[i] = fmad(c, yv, -(s * xv));
  }
}

void k_sqdiff(int64_t n, const float* x, const float* y, double* diff2, double* norm2) {
  double d[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  double q[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int l = 0; l < 16; ++l) {
      const double xv = x[i + l];
      const double e = xv - (y ? static_cast<double>(y[i + l]) : 0.0);
      d[l] = fmad(e, e, d[l]);
      q[l] = fmad(xv, xv, q[l]);
    }
  }
  for (int l = 0; i + l < n; ++l) {
    const double xv = x[i + l];
    const double e = xv - (y ? static_cast<double>(y[i + l]) : 0.0);
    d[l] = fmad(e, e, d[l]);
    q[l] = fmad(xv, xv, q[l]);
  }
  for (int w = 8; w >= 1; w /= 2) {
    for (int l = 0; l < w; ++l) {
      d[l] += d[l + w];
      q[l] += q[l + w];
    }
  }
  *diff2 = d[0];
  *norm2 = q[0];
}

const st::la::Kernels kKernels = {k_dot, k_axpy, k_gemv_t, k_rank1, k_rot_chain, k_rot, k_sqdiff};

}  // namespace
