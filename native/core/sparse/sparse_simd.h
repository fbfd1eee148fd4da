// The spmm24 loop of the sparse room's SIMD translation units, written once
// over the ISA traits `I` that each file defines before instantiating it:
// sparse_avx2.cc (8 rows per ymm) and sparse_avx512.cc (16 rows per zmm).
// Everything is in an anonymous namespace (internal linkage): each SIMD
// file gets its own copy compiled with its own flags, and no copy can leak
// into baseline code. Include only where __AVX2__, __FMA__ and __F16C__ are
// defined.
//
// One fma chain per output element over the row's kept values in column
// order, as ref::spmm24_rows, with rows in lanes. The kept values 8w..8w+7
// of every row lie in the same 4 column groups (meta word w), so a 128-bit
// broadcast of X's group and vpermilps with each row's 2-bit index
// (straight from the meta word) give every lane its X value: no gather.
//
// One pass over the weight for up to kPassCols columns of Y. The values of
// a panel of kPanel meta words are transposed once into an aligned stack
// buffer (rows in lanes), then each chunk of up to I::kChunk columns of Y
// runs over the whole panel with its accumulators in registers, kept in a
// per-block tile between panels. (Running a pass over the weight per 8
// columns made batch 9–16 read it twice and redo every transpose: slower
// than the dense GEMM.) Up to I::kDirect columns skip the panel: each
// word's transposed values stay in registers, as the buffer's stores and
// reloads would cost as much as the few fmas they feed.
//
// X arrives grouped, [cols/4][n][4] (Spmm24Plan::xg): the broadcasts of a
// group for consecutive columns of Y read consecutive 16 bytes, where rows
// of an [n, cols] X would sit a multiple of 4 KiB apart, all in one L1 set.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "sparse_kernels.h"

namespace st {
namespace {
namespace simd {

constexpr int kPanel = 8;        // meta words (16 columns of A each) per panel
constexpr int kPassCols = 64;    // columns of Y per pass over A
constexpr int kMaxLanes = 16;

// 8 consecutive values from element i as f32 (exact conversions).
template <DType T>
inline __m256 load8(const void* base, int64_t i) {
  if (T == DType::F32) return _mm256_loadu_ps(static_cast<const float*>(base) + i);
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + i));
  if (T == DType::F16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// In-register transpose: r[q] lane t becomes r[t] lane q.
inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

inline uint32_t u16_at(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// The rows of one block. Lanes past the matrix's last row repeat it (their
// results are never stored), so every load stays inside A.
struct Block {
  int64_t i0 = 0;
  int nr = 0;
  const char* vrow[kMaxLanes];
  const uint8_t* mrow[kMaxLanes];
  const uint8_t* meta0 = nullptr;           // meta of row i0
  alignas(64) int32_t moff[kMaxLanes];      // mrow[r] - meta0
};

// Software prefetch for the row streams of a block (values and meta, 8 or
// 16 of them: more than the hardware prefetchers follow well): each row's
// values a little ahead, once per cache line, and its meta once per line.
constexpr int64_t kPrefetchBytes = 1536;
inline void prefetch_rows(const Block& b, int lanes, int64_t w, int esize) {
  const int64_t off = 8 * w * esize;  // bytes of values before word w
  if ((off & 63) == 0) {
    for (int r = 0; r < lanes; ++r) _mm_prefetch(b.vrow[r] + off + kPrefetchBytes, _MM_HINT_T0);
  }
  if (((2 * w) & 63) == 0) {
    for (int r = 0; r < lanes; ++r) _mm_prefetch(reinterpret_cast<const char*>(b.mrow[r]) + 2 * w + 64, _MM_HINT_T0);
  }
}

// Y(i, j) for j in [j0, j0 + J): its chain continued over groups [g0,
// groups) one element at a time (the columns after the last whole meta
// word).
template <DType T>
inline void finish_row(const Spmm24Plan& p, int64_t i, int64_t g0, int64_t j0, int J) {
  constexpr int esize = T == DType::F32 ? 4 : 2;
  const int64_t groups = p.cols / 4;
  const void* vrow = static_cast<const char*>(p.values) + i * (p.cols / 2) * esize;
  const uint8_t* mrow = p.meta + i * p.meta_row_bytes;
  for (int j = 0; j < J; ++j) {
    float a = p.y[i * p.n + j0 + j];
    for (int64_t g = g0; g < groups; ++g) {
      const uint32_t code = (mrow[g >> 1] >> (4 * (g & 1))) & 15u;
      const float* x = p.xg + (g * p.n + j0 + j) * 4;
      const float v0 = sm::raw_to_f32(sm::load_raw(vrow, esize, 2 * g), T);
      const float v1 = sm::raw_to_f32(sm::load_raw(vrow, esize, 2 * g + 1), T);
      a = __builtin_fmaf(v0, x[code & 3u], a);
      a = __builtin_fmaf(v1, x[code >> 2], a);
    }
    p.y[i * p.n + j0 + j] = a;
  }
}

// Columns [jc, jc + J) of Y over the `pw` words of a panel: vb holds the
// transposed values (word wi, kept value q: vb[(8·wi + q)·L ...], one
// lane per row), mb the rows' meta words (mb[wi·L + r]), x the panel's
// first group at column jc, gstride the floats between groups of X.
template <class I, int J>
void run_chunk(const float* vb, const int32_t* mb, int pw, const float* x, int64_t gstride, float* tile) {
  constexpr int L = I::kLanes;
  typename I::V acc[J];
  for (int j = 0; j < J; ++j) acc[j] = I::load(tile + j * L);
  for (int wi = 0; wi < pw; ++wi) {
    const typename I::Vi mv = I::loadi(mb + wi * L);
    const float* v = vb + wi * 8 * L;
    for (int g = 0; g < 4; ++g) {
      // vpermilps reads the low 2 bits of each lane: idx0 and idx1 of the group.
      const typename I::Vi idx0 = I::srli(mv, 4 * g), idx1 = I::srli(mv, 4 * g + 2);
      const typename I::V v0 = I::load(v + 2 * g * L), v1 = I::load(v + (2 * g + 1) * L);
      const float* xp = x + (4 * wi + g) * gstride;
      for (int j = 0; j < J; ++j) {
        const typename I::V xv = I::bcast4(xp + 4 * j);
        acc[j] = I::fma(v0, I::perm(xv, idx0), acc[j]);
        acc[j] = I::fma(v1, I::perm(xv, idx1), acc[j]);
      }
    }
  }
  for (int j = 0; j < J; ++j) I::store(tile + j * L, acc[j]);
}

// Up to I::kDirect columns of Y, [j0, j0 + J), over the whole row: each
// word's transposed values stay in registers (no panel buffer: for a few
// columns its stores and reloads cost as much as the arithmetic). x: X's
// first group at column j0.
template <class I, int J, DType T>
void run_direct(const Block& b, int64_t meta_row_bytes, int64_t words, const float* x, int64_t gstride, float* tile) {
  constexpr int L = I::kLanes;
  constexpr int esize = T == DType::F32 ? 4 : 2;
  typename I::V acc[J];
  for (int j = 0; j < J; ++j) acc[j] = I::load(tile + j * L);
  for (int64_t w = 0; w < words; ++w) {
    prefetch_rows(b, L, w, esize);
    typename I::V v[8];
    I::template word_values<T>(b, w, v);
    const typename I::Vi mv = I::word_meta(b, meta_row_bytes, w);
    for (int g = 0; g < 4; ++g) {
      const typename I::Vi idx0 = I::srli(mv, 4 * g), idx1 = I::srli(mv, 4 * g + 2);
      const float* xp = x + (4 * w + g) * gstride;
      for (int j = 0; j < J; ++j) {
        const typename I::V xv = I::bcast4(xp + 4 * j);
        acc[j] = I::fma(v[2 * g], I::perm(xv, idx0), acc[j]);
        acc[j] = I::fma(v[2 * g + 1], I::perm(xv, idx1), acc[j]);
      }
    }
  }
  for (int j = 0; j < J; ++j) I::store(tile + j * L, acc[j]);
}

template <class I, DType T>
inline void run_direct_any(int J, const Block& b, int64_t meta_row_bytes, int64_t words, const float* x, int64_t gstride, float* tile) {
  static_assert(I::kDirect >= 1 && I::kDirect <= 4, "direct paths exist for 1 to 4 columns");
  switch (J) {
    case 1: return run_direct<I, 1, T>(b, meta_row_bytes, words, x, gstride, tile);
    case 2: return run_direct<I, 2 <= I::kDirect ? 2 : 1, T>(b, meta_row_bytes, words, x, gstride, tile);
    case 3: return run_direct<I, 3 <= I::kDirect ? 3 : 1, T>(b, meta_row_bytes, words, x, gstride, tile);
    default: return run_direct<I, 4 <= I::kDirect ? 4 : 1, T>(b, meta_row_bytes, words, x, gstride, tile);
  }
}

template <class I, int... Js>
struct ChunkTable {
  using Fn = void (*)(const float*, const int32_t*, int, const float*, int64_t, float*);
  static constexpr Fn fns[sizeof...(Js)] = {run_chunk<I, Js>...};
};

template <class I>
inline void run_chunk_any(int J, const float* vb, const int32_t* mb, int pw, const float* x, int64_t gstride, float* tile) {
  static_assert(I::kChunk == 8 || I::kChunk == 16, "chunk tables exist for 8 and 16 columns");
  if (I::kChunk == 8) {
    ChunkTable<I, 1, 2, 3, 4, 5, 6, 7, 8>::fns[J - 1](vb, mb, pw, x, gstride, tile);
  } else {
    ChunkTable<I, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16>::fns[J - 1](vb, mb, pw, x, gstride, tile);
  }
}

// Rows i0..i0+nr-1 (nr <= I::kLanes) of Y, every column.
template <class I, DType T>
void block_rows(const Spmm24Plan& p, int64_t i0, int nr) {
  constexpr int L = I::kLanes;
  constexpr int esize = T == DType::F32 ? 4 : 2;
  const int64_t half = p.cols / 2, groups = p.cols / 4, words = groups / 4;
  Block b;
  b.i0 = i0;
  b.nr = nr;
  b.meta0 = p.meta + i0 * p.meta_row_bytes;
  for (int r = 0; r < L; ++r) {
    const int64_t rr = r < nr ? r : nr - 1;
    b.vrow[r] = static_cast<const char*>(p.values) + (i0 + rr) * half * esize;
    b.moff[r] = static_cast<int32_t>(rr * p.meta_row_bytes);
    b.mrow[r] = b.meta0 + b.moff[r];
  }
  alignas(64) float vbuf[kPanel * 8 * L];
  alignas(64) int32_t mbuf[kPanel * L];
  alignas(64) float tile[kPassCols * L];
  for (int64_t jp = 0; jp < p.n; jp += kPassCols) {
    const int np = static_cast<int>(p.n - jp < kPassCols ? p.n - jp : kPassCols);
    for (int j = 0; j < np; ++j) {
      for (int r = 0; r < L; ++r) tile[j * L + r] = p.accumulate && r < nr ? p.y[(i0 + r) * p.n + jp + j] : 0.0f;
    }
    if (np <= I::kDirect) {
      run_direct_any<I, T>(np, b, p.meta_row_bytes, words, p.xg + jp * 4, 4 * p.n, tile);
    }
    for (int64_t w0 = 0; np > I::kDirect && w0 < words; w0 += kPanel) {
      const int pw = static_cast<int>(words - w0 < kPanel ? words - w0 : kPanel);
      for (int wi = 0; wi < pw; ++wi) {
        prefetch_rows(b, L, w0 + wi, esize);
        typename I::V v[8];
        I::template word_values<T>(b, w0 + wi, v);
        for (int q = 0; q < 8; ++q) I::store(vbuf + (wi * 8 + q) * L, v[q]);
        I::store_i(mbuf + wi * L, I::word_meta(b, p.meta_row_bytes, w0 + wi));
      }
      const float* x = p.xg + (4 * w0 * p.n + jp) * 4;
      for (int jc = 0; jc < np; jc += I::kChunk) {
        const int J = np - jc < I::kChunk ? np - jc : I::kChunk;
        run_chunk_any<I>(J, vbuf, mbuf, pw, x + 4 * jc, 4 * p.n, tile + jc * L);
      }
    }
    for (int j = 0; j < np; ++j) {
      for (int r = 0; r < nr; ++r) p.y[(i0 + r) * p.n + jp + j] = tile[j * L + r];
    }
    if (words * 4 < groups) {
      for (int r = 0; r < nr; ++r) finish_row<T>(p, i0 + r, words * 4, jp, np);
    }
  }
}

template <class I, DType T>
void rows_t(const Spmm24Plan& p, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; i += I::kLanes) block_rows<I, T>(p, i, static_cast<int>(i1 - i < I::kLanes ? i1 - i : I::kLanes));
}

// The Spmm24Fn of traits I.
template <class I>
void spmm_rows(const Spmm24Plan& p, int64_t i0, int64_t i1) {
  switch (p.dtype) {
    case DType::F16: return rows_t<I, DType::F16>(p, i0, i1);
    case DType::BF16: return rows_t<I, DType::BF16>(p, i0, i1);
    default: return rows_t<I, DType::F32>(p, i0, i1);
  }
}

}  // namespace simd
}  // namespace
}  // namespace st
