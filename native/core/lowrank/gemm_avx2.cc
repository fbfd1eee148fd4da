// AVX2 + FMA + F16C kernels of the GEMM (see gemm.h, gemm_kernels.h).
// Compiled with -mavx2 -mfma -mf16c in its own translation unit and only
// called when cpuid says so. Every output element is the fma chain of the
// definition in k order, so results equal the scalar reference bit for bit.
//
// Micro-kernel: 6 rows x 16 columns of C in 12 ymm accumulators; per k step
// two loads of packed B, six broadcasts of packed A, twelve FMAs (two FMA
// ports: 6 cycles of FMA work against 8 loads on three load ports). A 6x8
// variant serves the last strip when at most 8 columns remain.
//
// Skinny path (min(m, n) <= 8, e.g. a matrix-vector product): no packing of
// the big operand. Vectors run along its long dimension i (8 values of C
// per register, one register per small column): directly when W is
// contiguous along i, else through in-register 4x4 transposes of 8 rows x 4
// k-steps (each row stays a contiguous stream).
#include "gemm_kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#include "gemm_simd.h"

namespace st {
namespace gemmk {
namespace avx2 {

namespace {

using simd::lane_mask;
using simd::load1;
using simd::load8;
using simd::load8_partial;

constexpr int MR = 6, NR = 16, SMAX = 8, GMR = 6, GNR = 8;

// ---- micro-kernel ----------------------------------------------------------

// The 6 x (8*NV) tile as named variables: GCC keeps an array of twelve ymm
// accumulators in registers but also stores it to the stack every step.
template <int NV>
void micro_t(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool load_c, int mr, int nr) {
  constexpr int W = 8 * NV;
  const bool full = mr == MR && nr == W;
  alignas(32) float edge[MR * W];
  const float* src = c;
  int64_t lds = ldc;
  if (!full) {
    for (int i = 0; i < MR; ++i) {
      for (int j = 0; j < W; ++j) edge[i * W + j] = (load_c && i < mr && j < nr) ? c[i * ldc + j] : 0.0f;
    }
    src = edge;
    lds = W;
  }
#define ST_LOAD(i, v) (load_c ? _mm256_loadu_ps(src + (i) * lds + 8 * (v)) : _mm256_setzero_ps())
  __m256 c00 = ST_LOAD(0, 0), c10 = ST_LOAD(1, 0), c20 = ST_LOAD(2, 0);
  __m256 c30 = ST_LOAD(3, 0), c40 = ST_LOAD(4, 0), c50 = ST_LOAD(5, 0);
  __m256 c01 = _mm256_setzero_ps(), c11 = c01, c21 = c01, c31 = c01, c41 = c01, c51 = c01;
  if (NV == 2) {
    c01 = ST_LOAD(0, 1);
    c11 = ST_LOAD(1, 1);
    c21 = ST_LOAD(2, 1);
    c31 = ST_LOAD(3, 1);
    c41 = ST_LOAD(4, 1);
    c51 = ST_LOAD(5, 1);
  }
#undef ST_LOAD
  for (int64_t p = 0; p < kc; ++p) {
    const float* bp = b + p * NR;
    const float* ap = a + p * MR;
    const __m256 b0 = _mm256_loadu_ps(bp);
    const __m256 b1 = NV == 2 ? _mm256_loadu_ps(bp + 8) : b0;
    __m256 x;
#define ST_ROW(i)                                        \
  x = _mm256_broadcast_ss(ap + (i));                      \
  c##i##0 = _mm256_fmadd_ps(x, b0, c##i##0);              \
  if (NV == 2) c##i##1 = _mm256_fmadd_ps(x, b1, c##i##1);
    ST_ROW(0) ST_ROW(1) ST_ROW(2) ST_ROW(3) ST_ROW(4) ST_ROW(5)
#undef ST_ROW
  }
  float* dst = full ? c : edge;
  const int64_t ldd = full ? ldc : W;
#define ST_STORE(i)                                                   \
  _mm256_storeu_ps(dst + (i) * ldd, c##i##0);                          \
  if (NV == 2) _mm256_storeu_ps(dst + (i) * ldd + 8, c##i##1);
  ST_STORE(0) ST_STORE(1) ST_STORE(2) ST_STORE(3) ST_STORE(4) ST_STORE(5)
#undef ST_STORE
  if (full) return;
  for (int i = 0; i < mr; ++i) {
    for (int j = 0; j < nr; ++j) c[i * ldc + j] = edge[i * W + j];
  }
}

void micro(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool load_c, int mr, int nr) {
  if (nr <= 8) micro_t<1>(kc, a, b, c, ldc, load_c, mr, nr);
  else micro_t<2>(kc, a, b, c, ldc, load_c, mr, nr);
}

// ---- skinny path -------------------------------------------------------------

// C(i, j) for 8 rows from i (n of them valid) and S columns, from/to registers.
template <int S>
void load_c8(const Skinny& s, int64_t i, int n, __m256* acc) {
  alignas(32) float tmp[8];
  for (int j = 0; j < S; ++j) {
    if (!s.load_c) {
      acc[j] = _mm256_setzero_ps();
      continue;
    }
    for (int r = 0; r < 8; ++r) tmp[r] = r < n ? s.c[(i + r) * s.c_si + j * s.c_sj] : 0.0f;
    acc[j] = _mm256_load_ps(tmp);
  }
}

template <int S>
void store_c8(const Skinny& s, int64_t i, int n, const __m256* acc) {
  alignas(32) float tmp[8];
  for (int j = 0; j < S; ++j) {
    _mm256_store_ps(tmp, acc[j]);
    for (int r = 0; r < n; ++r) s.c[(i + r) * s.c_si + j * s.c_sj] = tmp[r];
  }
}

// W contiguous along i: U registers of 8 rows per step.
template <int S, int U>
void skinny_icontig_block(const Skinny& s, int64_t i, int n) {
  __m256 acc[U][S];
  for (int u = 0; u < U; ++u) {
    const int nu = n - 8 * u;
    load_c8<S>(s, i + 8 * u, nu > 8 ? 8 : nu, acc[u]);
  }
  const bool full = n == 8 * U;
  for (int64_t p = 0; p < s.k; ++p) {
    const int64_t base = p * s.w_sk + i;
    __m256 wv[U];
    for (int u = 0; u < U; ++u) {
      wv[u] = full ? load8(s.w, s.w_dtype, base + 8 * u) : load8_partial(s.w, s.w_dtype, base + 8 * u, n - 8 * u);
    }
    const float* xp = s.x + p * S;
    for (int j = 0; j < S; ++j) {
      const __m256 xb = _mm256_broadcast_ss(xp + j);
      for (int u = 0; u < U; ++u) acc[u][j] = _mm256_fmadd_ps(wv[u], xb, acc[u][j]);
    }
  }
  for (int u = 0; u < U; ++u) {
    const int nu = n - 8 * u;
    store_c8<S>(s, i + 8 * u, nu > 8 ? 8 : nu, acc[u]);
  }
}

template <int S>
void skinny_icontig(const Skinny& s, int64_t i0, int64_t i1) {
  constexpr int U = S >= 4 ? 1 : (S == 1 ? 4 : 2);
  int64_t i = i0;
  for (; i + 8 * U <= i1; i += 8 * U) skinny_icontig_block<S, U>(s, i, 8 * U);
  for (; i < i1; i += 8) skinny_icontig_block<S, 1>(s, i, static_cast<int>(i1 - i < 8 ? i1 - i : 8));
}

// 4 consecutive values of a row as f32 in an xmm register.
inline __m128 load4(const void* data, DType t, int64_t idx) {
  if (t == DType::F32) return _mm_loadu_ps(static_cast<const float*>(data) + idx);
  const __m128i h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(data) + idx));
  if (t == DType::F16) return _mm_cvtph_ps(h);
  return _mm_castsi128_ps(_mm_slli_epi32(_mm_cvtepu16_epi32(h), 16));
}

// W contiguous along k: 8 full rows from i, k in steps of 4 through 4x4
// transposes (rows q and q+4 share a register, one per 128-bit half).
template <int S>
void skinny_kcontig_block(const Skinny& s, int64_t i) {
  __m256 acc[S];
  load_c8<S>(s, i, 8, acc);
  const int64_t k4 = s.k & ~int64_t{3};
  const int64_t ld = s.w_si;
  for (int64_t p = 0; p < k4; p += 4) {
    __m256 y[4];
    for (int q = 0; q < 4; ++q) {
      y[q] = _mm256_insertf128_ps(_mm256_castps128_ps256(load4(s.w, s.w_dtype, (i + q) * ld + p)),
                                  load4(s.w, s.w_dtype, (i + q + 4) * ld + p), 1);
    }
    const __m256 t0 = _mm256_unpacklo_ps(y[0], y[1]), t1 = _mm256_unpackhi_ps(y[0], y[1]);
    const __m256 t2 = _mm256_unpacklo_ps(y[2], y[3]), t3 = _mm256_unpackhi_ps(y[2], y[3]);
    __m256 tv[4];
    tv[0] = _mm256_shuffle_ps(t0, t2, 0x44);
    tv[1] = _mm256_shuffle_ps(t0, t2, 0xee);
    tv[2] = _mm256_shuffle_ps(t1, t3, 0x44);
    tv[3] = _mm256_shuffle_ps(t1, t3, 0xee);
    for (int q = 0; q < 4; ++q) {
      const float* xp = s.x + (p + q) * S;
      for (int j = 0; j < S; ++j) acc[j] = _mm256_fmadd_ps(tv[q], _mm256_broadcast_ss(xp + j), acc[j]);
    }
  }
  for (int64_t p = k4; p < s.k; ++p) {
    alignas(32) float col[8];
    for (int r = 0; r < 8; ++r) col[r] = load1(s.w, s.w_dtype, (i + r) * ld + p);
    const __m256 wv = _mm256_load_ps(col);
    const float* xp = s.x + p * S;
    for (int j = 0; j < S; ++j) acc[j] = _mm256_fmadd_ps(wv, _mm256_broadcast_ss(xp + j), acc[j]);
  }
  store_c8<S>(s, i, 8, acc);
}

// Rows the 8-row blocks leave: one element at a time (the same chain).
void skinny_scalar_rows(const Skinny& s, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    for (int64_t j = 0; j < s.small; ++j) {
      float acc = s.load_c ? s.c[i * s.c_si + j * s.c_sj] : 0.0f;
      for (int64_t p = 0; p < s.k; ++p) {
        acc = __builtin_fmaf(load1(s.w, s.w_dtype, i * s.w_si + p * s.w_sk), s.x[p * s.small + j], acc);
      }
      s.c[i * s.c_si + j * s.c_sj] = acc;
    }
  }
}

template <int S>
void skinny_kcontig(const Skinny& s, int64_t i0, int64_t i1) {
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8) skinny_kcontig_block<S>(s, i);
  skinny_scalar_rows(s, i, i1);
}

using SkinnyImpl = void (*)(const Skinny&, int64_t, int64_t);
const SkinnyImpl kIContig[SMAX] = {skinny_icontig<1>, skinny_icontig<2>, skinny_icontig<3>, skinny_icontig<4>,
                                   skinny_icontig<5>, skinny_icontig<6>, skinny_icontig<7>, skinny_icontig<8>};
const SkinnyImpl kKContig[SMAX] = {skinny_kcontig<1>, skinny_kcontig<2>, skinny_kcontig<3>, skinny_kcontig<4>,
                                   skinny_kcontig<5>, skinny_kcontig<6>, skinny_kcontig<7>, skinny_kcontig<8>};

void skinny(const Skinny& s, int64_t i0, int64_t i1) {
  if (s.small < 1 || s.small > SMAX) return;
  if (s.w_si == 1) kIContig[s.small - 1](s, i0, i1);
  else kKContig[s.small - 1](s, i0, i1);
}

// ---- f64 Gram tile -------------------------------------------------------------

// Edge tiles (rare): the same chain, one element at a time.
void gram_edge(const double* y, int64_t rows, int64_t ldy, int64_t i0, int mi, int64_t j0, int nj, double* g, int64_t ldg,
               bool accumulate) {
  for (int ii = 0; ii < mi; ++ii) {
    for (int jj = 0; jj < nj; ++jj) {
      double acc = accumulate ? g[ii * ldg + jj] : 0.0;
      for (int64_t r = 0; r < rows; ++r) acc = __builtin_fma(y[r * ldy + i0 + ii], y[r * ldy + j0 + jj], acc);
      g[ii * ldg + jj] = acc;
    }
  }
}

// Full 6 x 8 tiles: two ymm of y[r][j0..j0+8) per row, six broadcasts of
// y[r][i0+i] (load-port only on AVX2), twelve FMAs.
void gram(const double* y, int64_t rows, int64_t ldy, int64_t i0, int mi, int64_t j0, int nj, double* g,
          int64_t ldg, bool accumulate) {
  if (mi != GMR || nj != GNR) return gram_edge(y, rows, ldy, i0, mi, j0, nj, g, ldg, accumulate);
#define ST_G(i)                                                                        \
  __m256d c##i##0 = accumulate ? _mm256_loadu_pd(g + (i) * ldg) : _mm256_setzero_pd();     \
  __m256d c##i##1 = accumulate ? _mm256_loadu_pd(g + (i) * ldg + 4) : _mm256_setzero_pd();
  ST_G(0) ST_G(1) ST_G(2) ST_G(3) ST_G(4) ST_G(5)
#undef ST_G
  const double* a = y + i0;
  const double* b = y + j0;
  for (int64_t r = 0; r < rows; ++r) {
    const __m256d b0 = _mm256_loadu_pd(b + r * ldy), b1 = _mm256_loadu_pd(b + r * ldy + 4);
    const double* ar = a + r * ldy;
    __m256d x;
#define ST_G(i)                                  \
  x = _mm256_broadcast_sd(ar + (i));             \
  c##i##0 = _mm256_fmadd_pd(x, b0, c##i##0);     \
  c##i##1 = _mm256_fmadd_pd(x, b1, c##i##1);
    ST_G(0) ST_G(1) ST_G(2) ST_G(3) ST_G(4) ST_G(5)
#undef ST_G
  }
#define ST_G(i)                                  \
  _mm256_storeu_pd(g + (i) * ldg, c##i##0);      \
  _mm256_storeu_pd(g + (i) * ldg + 4, c##i##1);
  ST_G(0) ST_G(1) ST_G(2) ST_G(3) ST_G(4) ST_G(5)
#undef ST_G
}

const Isa kIsa = {"avx2", MR, NR, SMAX, GMR, GNR, simd::pack_copy, simd::pack_transpose, micro, skinny, gram};

}  // namespace

const Isa* isa() { return &kIsa; }

double fma_probe(int64_t iters) {
  __m256 a[12];
  for (int i = 0; i < 12; ++i) a[i] = _mm256_set1_ps(1.0f + 0.001f * static_cast<float>(i));
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (int64_t t = 0; t < iters; ++t) {
    for (int i = 0; i < 12; ++i) a[i] = _mm256_fmadd_ps(a[i], m, c);
  }
  __m256 s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, a[i]);
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  return out[0];
}

}  // namespace avx2
}  // namespace gemmk
}  // namespace st

#else  // built without AVX2 flags (non-x86): the reference runs

namespace st {
namespace gemmk {
namespace avx2 {
const Isa* isa() { return nullptr; }
double fma_probe(int64_t) { return 0.0; }
}  // namespace avx2
}  // namespace gemmk
}  // namespace st

#endif
