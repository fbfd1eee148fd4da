// Dense f64 linear algebra of the lowrank room: the pieces the exact and
// randomized SVDs and the whitening are built from. Row-major matrices with
// leading dimensions; work split over the thread pool with results that do
// not depend on the thread count (every element has one fixed operation
// order: see la_kernels.h and gemm_kernels.h).
#pragma once
#include <cstdint>

#include "../tensor.h"

namespace st {
namespace la {

// G = YᵀY (l x l, both triangles written) of a row-major m x l matrix:
// each entry one fma chain over the rows in order (the Gram kernel of
// gemm_kernels.h, AVX-512/AVX2/scalar with the same bits).
void gram(const double* y, int64_t m, int64_t l, int64_t ldy, double* g, int64_t ldg, int threads);

// In-place Cholesky G = RᵀR of a symmetric positive definite n x n matrix:
// reads the upper triangle, writes R there and zeroes the strict lower
// triangle. Blocked (the trailing update is the Gram kernel). Returns the
// index of the first pivot that is not > floor · max(diag(G)) (the matrix
// is not numerically positive definite), or -1 on success.
int64_t cholesky_upper(double* g, int64_t n, int64_t ld, double floor, int threads);

// R := R⁻¹ for an upper-triangular R with a non-zero diagonal.
void invert_upper(double* r, int64_t n, int64_t ld);

// Householder reflectors: H = I − tau·v·vᵀ with v[0] = 1; v is stored
// contiguously (row k of `v`, from column k: v[k*ldv + k .. k*ldv + m−1]).
struct Reflectors {
  int64_t count = 0, len = 0;  // count reflectors of vectors of length len
  double* v = nullptr;         // count x len, row k meaningful from column k
  int64_t ldv = 0;
  double* tau = nullptr;       // count
};

// Householder QR of the m x n matrix a (m >= n): on return the upper
// triangle of a holds R (diagonal signs as they come) and its strict lower
// triangle zeros; h (count n, len m) holds the reflectors: a = H0…H(n−1)·[R; 0].
void householder_qr(double* a, int64_t m, int64_t n, int64_t lda, const Reflectors& h, int threads);

// C := H(first)…H(count−1) · C for the m x c matrix C, where reflector k
// acts on rows k + shift .. m−1. (shift 0: left reflectors of a QR; shift
// 1: the right reflectors of a bidiagonalization, acting on coordinates
// k+1..n−1.)
void apply_reflectors(const Reflectors& h, int64_t shift, double* c, int64_t m, int64_t cols, int64_t ldc,
                      int threads);

// Exact thin SVD of the m x n matrix a (m >= n >= 1):
//   a = U · diag(s) · Vᵀ, U m x n and V n x n with orthonormal columns,
//   s descending and >= 0.
// Golub–Kahan–Reinsch: Householder bidiagonalization (after a QR when
// m >= 1.6n), then implicit-shift QR sweeps on the bidiagonal whose
// rotations are applied to the singular-vector matrices one sweep at a
// time. ERR_INTERNAL if the sweeps do not converge (never observed).
Status svd(const double* a, int64_t m, int64_t n, int64_t lda, double* u, int64_t ldu, double* s, double* vt,
           int64_t ldvt, int threads);

}  // namespace la
}  // namespace st
