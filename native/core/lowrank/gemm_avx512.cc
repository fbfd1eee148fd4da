// AVX-512 kernels of the GEMM (see gemm.h, gemm_kernels.h). Compiled with
// -mavx512f -mavx512bw -mavx512vl (+ AVX2/FMA/F16C) in its own translation
// unit and chosen at run time when cpuid reports AVX-512 (SLIMTENSOR_ISA=avx2
// turns it off). Results equal the reference and the AVX2 kernels bit for
// bit: each element is the same fma chain in k order; only the register
// width differs.
//
// Micro-kernel: 24 rows x 16 columns of C in 24 zmm accumulators; per k step
// one load of packed B and 24 FMAs whose A operand is a broadcast folded
// into the FMA's memory operand ({1to16}): 12 cycles of FMA work on two
// ports against 25 loads. (A 12x32 tile reuses each broadcast for two FMAs,
// which keeps it a separate instruction competing with FMAs for port 5:
// ~90 % of the FMA probe against ~97 % for 24x16, measured in isolation.)
//
// Skinny path (min(m, n) <= 16): vectors of 16 values of C along the long
// dimension, W read in place; when W is contiguous along k, 16 rows x 8
// k-steps at a time go through two 8x8 transposes in one set of zmm
// registers (rows q and q+8 share a register).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "gemm_kernels.h"

#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__AVX512BW__) && defined(__AVX2__) && defined(__FMA__) && \
    defined(__F16C__)
#include <immintrin.h>

#include "gemm_simd.h"

namespace st {
namespace gemmk {
namespace avx512 {

namespace {

using simd::load1;

constexpr int MR = 24, NR = 16, SMAX = 16, GMR = 16, GNR = 8;

inline __mmask16 mask16(int n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff) : (n <= 0 ? 0 : static_cast<__mmask16>((1u << n) - 1u));
}

// 16 consecutive values from element i as f32; lanes past n are zero and
// never read.
inline __m512 load16(const void* data, DType t, int64_t i, int n = 16) {
  const __mmask16 k = mask16(n);
  if (t == DType::F32) return _mm512_maskz_loadu_ps(k, static_cast<const float*>(data) + i);
  const __m256i h = _mm256_maskz_loadu_epi16(k, static_cast<const uint16_t*>(data) + i);
  if (t == DType::F16) return _mm512_cvtph_ps(h);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// 8 consecutive values from element i as f32, in a ymm register.
inline __m256 load8(const void* data, DType t, int64_t i) { return simd::load8(data, t, i); }

// ---- micro-kernel ----------------------------------------------------------

template <int NV>
void micro_t(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool load_c, int mr, int nr) {
  // Accumulators are only indexed by constants, so they stay in registers;
  // edge rows go through `edge` on the stack, edge columns through masks.
  __m512 acc[MR][NV];
  __mmask16 km[NV];
  for (int v = 0; v < NV; ++v) km[v] = mask16(nr - 16 * v);
  const bool full = mr == MR;
  alignas(64) float edge[MR * 16 * NV];
  if (!full && load_c) {
    for (int i = 0; i < MR; ++i) {
      for (int v = 0; v < NV; ++v) {
        _mm512_store_ps(edge + (i * NV + v) * 16,
                        i < mr ? _mm512_maskz_loadu_ps(km[v], c + i * ldc + 16 * v) : _mm512_setzero_ps());
      }
    }
  }
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      acc[i][v] = !load_c ? _mm512_setzero_ps()
                          : full ? _mm512_maskz_loadu_ps(km[v], c + i * ldc + 16 * v)
                                 : _mm512_load_ps(edge + (i * NV + v) * 16);
    }
  }
  // Packed panels 8 steps ahead into L1 (the B strips come from L2).
  constexpr int64_t kPf = 8;
#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; ++p) {
    const float* bp = b + p * NR;
    const float* ap = a + p * MR;
    _mm_prefetch(reinterpret_cast<const char*>(ap + kPf * MR), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(ap + kPf * MR + 16), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(bp + kPf * NR), _MM_HINT_T0);
    __m512 bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_ps(bp + 16 * v);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(ap[i]);
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
    }
  }
  if (full) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      for (int v = 0; v < NV; ++v) _mm512_mask_storeu_ps(c + i * ldc + 16 * v, km[v], acc[i][v]);
    }
    return;
  }
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < NV; ++v) _mm512_store_ps(edge + (i * NV + v) * 16, acc[i][v]);
  }
  for (int i = 0; i < mr; ++i) {
    for (int v = 0; v < NV; ++v) _mm512_mask_storeu_ps(c + i * ldc + 16 * v, km[v], _mm512_load_ps(edge + (i * NV + v) * 16));
  }
}

void micro(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool load_c, int mr, int nr) {
  micro_t<1>(kc, a, b, c, ldc, load_c, mr, nr);
}

// ---- skinny path -------------------------------------------------------------

template <int S>
void load_c16(const Skinny& s, int64_t i, int n, __m512* acc) {
  alignas(64) float tmp[16];
  for (int j = 0; j < S; ++j) {
    if (!s.load_c) {
      acc[j] = _mm512_setzero_ps();
      continue;
    }
    for (int r = 0; r < 16; ++r) tmp[r] = r < n ? s.c[(i + r) * s.c_si + j * s.c_sj] : 0.0f;
    acc[j] = _mm512_load_ps(tmp);
  }
}

template <int S>
void store_c16(const Skinny& s, int64_t i, int n, const __m512* acc) {
  alignas(64) float tmp[16];
  for (int j = 0; j < S; ++j) {
    _mm512_store_ps(tmp, acc[j]);
    for (int r = 0; r < n; ++r) s.c[(i + r) * s.c_si + j * s.c_sj] = tmp[r];
  }
}

// W contiguous along i: U registers of 16 rows per k step.
template <int S, int U>
void skinny_icontig_block(const Skinny& s, int64_t i, int n) {
  __m512 acc[U][S];
  for (int u = 0; u < U; ++u) {
    const int nu = n - 16 * u;
    load_c16<S>(s, i + 16 * u, nu > 16 ? 16 : (nu < 0 ? 0 : nu), acc[u]);
  }
  for (int64_t p = 0; p < s.k; ++p) {
    const int64_t base = p * s.w_sk + i;
    __m512 wv[U];
    for (int u = 0; u < U; ++u) wv[u] = load16(s.w, s.w_dtype, base + 16 * u, n - 16 * u);
    const float* xp = s.x + p * S;
    for (int j = 0; j < S; ++j) {
      const __m512 xb = _mm512_set1_ps(xp[j]);
      for (int u = 0; u < U; ++u) acc[u][j] = _mm512_fmadd_ps(wv[u], xb, acc[u][j]);
    }
  }
  for (int u = 0; u < U; ++u) {
    const int nu = n - 16 * u;
    store_c16<S>(s, i + 16 * u, nu > 16 ? 16 : (nu < 0 ? 0 : nu), acc[u]);
  }
}

template <int S>
void skinny_icontig(const Skinny& s, int64_t i0, int64_t i1) {
  constexpr int U = S >= 8 ? 1 : (S >= 3 ? 2 : 4);
  int64_t i = i0;
  for (; i + 16 * U <= i1; i += 16 * U) skinny_icontig_block<S, U>(s, i, 16 * U);
  for (; i < i1; i += 16) skinny_icontig_block<S, 1>(s, i, static_cast<int>(i1 - i < 16 ? i1 - i : 16));
}

// W contiguous along k: 16 full rows from i, k in steps of 8. Register q
// holds row q (low half) and row q+8 (high half); an 8x8 transpose inside
// each 256-bit half turns them into tv[q] = W(i..i+15, p+q).
template <int S>
void skinny_kcontig_block(const Skinny& s, int64_t i) {
  __m512 acc[S];
  load_c16<S>(s, i, 16, acc);
  const int64_t k8 = s.k & ~int64_t{7};
  const int64_t ld = s.w_si;
  // final stage: [u.L0, v.L0, u.L2, v.L2] and [u.L1, v.L1, u.L3, v.L3]
  const __m512i lo = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
  const __m512i hi = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
  for (int64_t p = 0; p < k8; p += 8) {
    __m512 z[8];
    for (int q = 0; q < 8; ++q) {
      // insertf64x4: AVX-512F (insertf32x8 would need DQ)
      z[q] = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(load8(s.w, s.w_dtype, (i + q) * ld + p))),
                                                 _mm256_castps_pd(load8(s.w, s.w_dtype, (i + q + 8) * ld + p)), 1));
    }
    const __m512 t0 = _mm512_unpacklo_ps(z[0], z[1]), t1 = _mm512_unpackhi_ps(z[0], z[1]);
    const __m512 t2 = _mm512_unpacklo_ps(z[2], z[3]), t3 = _mm512_unpackhi_ps(z[2], z[3]);
    const __m512 t4 = _mm512_unpacklo_ps(z[4], z[5]), t5 = _mm512_unpackhi_ps(z[4], z[5]);
    const __m512 t6 = _mm512_unpacklo_ps(z[6], z[7]), t7 = _mm512_unpackhi_ps(z[6], z[7]);
    const __m512 u0 = _mm512_shuffle_ps(t0, t2, 0x44), u1 = _mm512_shuffle_ps(t0, t2, 0xee);
    const __m512 u2 = _mm512_shuffle_ps(t1, t3, 0x44), u3 = _mm512_shuffle_ps(t1, t3, 0xee);
    const __m512 u4 = _mm512_shuffle_ps(t4, t6, 0x44), u5 = _mm512_shuffle_ps(t4, t6, 0xee);
    const __m512 u6 = _mm512_shuffle_ps(t5, t7, 0x44), u7 = _mm512_shuffle_ps(t5, t7, 0xee);
    __m512 tv[8];
    tv[0] = _mm512_permutex2var_ps(u0, lo, u4);
    tv[1] = _mm512_permutex2var_ps(u1, lo, u5);
    tv[2] = _mm512_permutex2var_ps(u2, lo, u6);
    tv[3] = _mm512_permutex2var_ps(u3, lo, u7);
    tv[4] = _mm512_permutex2var_ps(u0, hi, u4);
    tv[5] = _mm512_permutex2var_ps(u1, hi, u5);
    tv[6] = _mm512_permutex2var_ps(u2, hi, u6);
    tv[7] = _mm512_permutex2var_ps(u3, hi, u7);
    for (int q = 0; q < 8; ++q) {
      const float* xp = s.x + (p + q) * S;
      for (int j = 0; j < S; ++j) acc[j] = _mm512_fmadd_ps(tv[q], _mm512_set1_ps(xp[j]), acc[j]);
    }
  }
  for (int64_t p = k8; p < s.k; ++p) {
    alignas(64) float col[16];
    for (int r = 0; r < 16; ++r) col[r] = load1(s.w, s.w_dtype, (i + r) * ld + p);
    const __m512 wv = _mm512_load_ps(col);
    const float* xp = s.x + p * S;
    for (int j = 0; j < S; ++j) acc[j] = _mm512_fmadd_ps(wv, _mm512_set1_ps(xp[j]), acc[j]);
  }
  store_c16<S>(s, i, 16, acc);
}

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
  for (; i + 16 <= i1; i += 16) skinny_kcontig_block<S>(s, i);
  skinny_scalar_rows(s, i, i1);
}

using SkinnyImpl = void (*)(const Skinny&, int64_t, int64_t);
const SkinnyImpl kIContig[SMAX] = {
    skinny_icontig<1>,  skinny_icontig<2>,  skinny_icontig<3>,  skinny_icontig<4>,  skinny_icontig<5>,  skinny_icontig<6>,
    skinny_icontig<7>,  skinny_icontig<8>,  skinny_icontig<9>,  skinny_icontig<10>, skinny_icontig<11>, skinny_icontig<12>,
    skinny_icontig<13>, skinny_icontig<14>, skinny_icontig<15>, skinny_icontig<16>};
const SkinnyImpl kKContig[SMAX] = {
    skinny_kcontig<1>,  skinny_kcontig<2>,  skinny_kcontig<3>,  skinny_kcontig<4>,  skinny_kcontig<5>,  skinny_kcontig<6>,
    skinny_kcontig<7>,  skinny_kcontig<8>,  skinny_kcontig<9>,  skinny_kcontig<10>, skinny_kcontig<11>, skinny_kcontig<12>,
    skinny_kcontig<13>, skinny_kcontig<14>, skinny_kcontig<15>, skinny_kcontig<16>};

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

// Full 16 x 8 tiles: one zmm of y[r][j0..j0+8) per row, sixteen FMAs with
// y[r][i0+i] broadcast from memory (folded into the FMA, {1to8}).
void gram(const double* y, int64_t rows, int64_t ldy, int64_t i0, int mi, int64_t j0, int nj, double* g,
          int64_t ldg, bool accumulate) {
  if (mi != GMR || nj != GNR) return gram_edge(y, rows, ldy, i0, mi, j0, nj, g, ldg, accumulate);
  __m512d acc[GMR];
#pragma GCC unroll 16
  for (int i = 0; i < GMR; ++i) acc[i] = accumulate ? _mm512_loadu_pd(g + i * ldg) : _mm512_setzero_pd();
  const double* a = y + i0;
  const double* b = y + j0;
#pragma GCC unroll 2
  for (int64_t r = 0; r < rows; ++r) {
    const __m512d bv = _mm512_loadu_pd(b + r * ldy);
    const double* ar = a + r * ldy;
#pragma GCC unroll 16
    for (int i = 0; i < GMR; ++i) acc[i] = _mm512_fmadd_pd(_mm512_set1_pd(ar[i]), bv, acc[i]);
  }
#pragma GCC unroll 16
  for (int i = 0; i < GMR; ++i) _mm512_storeu_pd(g + i * ldg, acc[i]);
}

const Isa kIsa = {"avx512", MR, NR, SMAX, GMR, GNR, simd::pack_copy, simd::pack_transpose, micro, skinny, gram};

}  // namespace

const Isa* isa() { return &kIsa; }

double fma_probe(int64_t iters) {
  __m512 a[12];
  for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(1.0f + 0.001f * static_cast<float>(i));
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (int64_t t = 0; t < iters; ++t) {
    for (int i = 0; i < 12; ++i) a[i] = _mm512_fmadd_ps(a[i], m, c);
  }
  __m512 s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, a[i]);
  return _mm512_reduce_add_ps(s);
}

}  // namespace avx512
}  // namespace gemmk
}  // namespace st

#else  // built without AVX-512 flags: never chosen

namespace st {
namespace gemmk {
namespace avx512 {
const Isa* isa() { return nullptr; }
double fma_probe(int64_t) { return 0.0; }
}  // namespace avx512
}  // namespace gemmk
}  // namespace st

#endif
