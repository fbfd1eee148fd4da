// AVX2 twins of the sparse room's hot loops, compiled with -mavx2 -mfma
// -mf16c in their own translation unit:
//
// - N:4 selection (prune, compress24, both fused): 8 groups (32 columns) per
//   step. Scores are computed in f32 as the reference does, the 4×4
//   transposes put element e of 8 groups in one register, six compares give
//   every element's rank, and the kept set comes out as 32 mask bits; the
//   outputs (mask, dense copy, compressed values, meta) are written from
//   tables indexed by mask bytes. Bit-identical to sm::select_span, which
//   also handles the spans at a row's end.
// - spmm24: 8 rows per step in the 8 lanes. A row's kept values 8w..8w+7
//   sit in 4 groups of columns shared by all rows, so one 128-bit broadcast
//   of X's group and a vpermilps with each row's 2-bit index (straight from
//   the meta word) gives every lane its X value: no gather. One fma chain per
//   output element in the reference's order, so the bits are the
//   reference's.
#include "sparse_kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#include <cstring>

namespace st {
namespace avx2 {

namespace {

// ---- selection ------------------------------------------------------------

constexpr int64_t kPrefetchAhead = 2048;  // elements
// A dense output this large is written with non-temporal stores: it cannot
// stay in the caches anyway, and ordinary stores read every line before
// writing it (a third stream of traffic beside the input and the output).
constexpr int64_t kStreamBytes = int64_t{32} << 20;

// Elements i..i+3 and i+16..i+19 (groups g and g+4 of a 32-column step) as f32.
template <DType T>
inline __m256 load_pair(const void* src, int64_t i) {
  if (T == DType::F32) {
    const float* p = static_cast<const float*>(src) + i;
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(p)), _mm_loadu_ps(p + 16), 1);
  }
  const uint16_t* p = static_cast<const uint16_t*>(src) + i;
  const __m128i h = _mm_unpacklo_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)),
                                       _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 16)));
  if (T == DType::F16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

template <DType T, SparseScore S>
inline __m256i scores(const void* src, const float* norms, int64_t e, int64_t i) {
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
  const __m256i mag = _mm256_and_si256(_mm256_castps_si256(load_pair<T>(src, e + i)), absmask);
  if (S == SparseScore::Magnitude) return mag;
  if (S == SparseScore::NonZero) return _mm256_add_epi32(_mm256_cmpeq_epi32(mag, _mm256_setzero_si256()), _mm256_set1_epi32(1));
  // The norms are per column: the same offset as the row's elements.
  const __m256 nv = load_pair<DType::F32>(norms, e + i);
  return _mm256_and_si256(_mm256_castps_si256(_mm256_mul_ps(_mm256_castsi256_ps(mag), nv)), absmask);
}

// The reference's score of element `col`, for the rare rescans.
template <DType T, SparseScore S>
inline uint32_t score1(const sm::SelectCtx& c, int64_t base, int64_t col) {
  const float w = sm::raw_to_f32(sm::load_raw(c.src, c.esize, base + col), c.dtype);
  return sm::score_bits(w, S, S == SparseScore::Wanda ? c.norms[col] : 1.0f);
}

template <DType T, SparseScore S>
int64_t select24_row(const SelectArgs& a, const sm::SelectCtx& c, int64_t row) {
  constexpr int esize = T == DType::F32 ? 4 : 2;
  const int64_t cols = c.cols;
  const int64_t full = (cols / 32) * 32;
  const int64_t base = row * cols;
  const void* src = static_cast<const char*>(c.src) + base * esize;
  uint8_t* mrow = c.mask ? c.mask + row * c.mask_row_bytes : nullptr;
  uint8_t* meta = c.meta ? c.meta + row * c.meta_row_bytes : nullptr;
  char* dense = c.dense ? static_cast<char*>(c.dense) + base * esize : nullptr;
  char* vals = c.values ? static_cast<char*>(c.values) + row * (cols / 2) * esize : nullptr;
  // 16-byte stores: every one aligned when the output and the row length are.
  const bool stream = dense && a.src.rows * cols * esize >= kStreamBytes && (reinterpret_cast<uintptr_t>(c.dense) & 15) == 0 && (cols * esize) % 16 == 0;
  const __m256i nv = _mm256_set1_epi32(c.n);
  const __m256i one = _mm256_set1_epi32(1), two = _mm256_set1_epi32(2), three = _mm256_set1_epi32(3);
  // Within each 128-bit lane, byte 4e+g (element e of group g) goes to byte 4g+e.
  const __m256i regroup = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                           0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const SparseLuts& L = kSparseLuts;
  __m256i bad = _mm256_setzero_si256();
  const char* pf = static_cast<const char*>(src);
  for (int64_t e = 0; e < full; e += 32) {
    // The input a few KiB ahead: one core alone keeps too few lines in
    // flight for the bandwidth otherwise.
    _mm_prefetch(pf + (e + kPrefetchAhead) * esize, _MM_HINT_T0);
    if (esize == 4) _mm_prefetch(pf + (e + kPrefetchAhead) * esize + 64, _MM_HINT_T0);
    // s[k] = scores of groups k and k+4.
    const __m256i s0 = scores<T, S>(src, c.norms, e, 0), s1 = scores<T, S>(src, c.norms, e, 4);
    const __m256i s2 = scores<T, S>(src, c.norms, e, 8), s3 = scores<T, S>(src, c.norms, e, 12);
    if (S != SparseScore::NonZero) bad = _mm256_max_epi32(bad, _mm256_max_epi32(_mm256_max_epi32(s0, s1), _mm256_max_epi32(s2, s3)));
    // Lane g (group g of the 8) of A, B, C, D: the group's elements 0..3.
    const __m256i t0 = _mm256_unpacklo_epi32(s0, s1), t1 = _mm256_unpackhi_epi32(s0, s1);
    const __m256i t2 = _mm256_unpacklo_epi32(s2, s3), t3 = _mm256_unpackhi_epi32(s2, s3);
    const __m256i A = _mm256_unpacklo_epi64(t0, t2), B = _mm256_unpackhi_epi64(t0, t2);
    const __m256i C = _mm256_unpacklo_epi64(t1, t3), D = _mm256_unpackhi_epi64(t1, t3);
    // Gij (i < j): j beats i (a strictly higher score; equal scores go to the lower index).
    const __m256i G01 = _mm256_cmpgt_epi32(B, A), G02 = _mm256_cmpgt_epi32(C, A), G03 = _mm256_cmpgt_epi32(D, A);
    const __m256i G12 = _mm256_cmpgt_epi32(C, B), G13 = _mm256_cmpgt_epi32(D, B), G23 = _mm256_cmpgt_epi32(D, C);
    // Ranks (masks are -1 when true): rA = -(G01+G02+G03), rB = 1+G01-G12-G13,
    // rC = 2+G02+G12-G23, rD = 3+G03+G13+G23.
    const __m256i rA = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_add_epi32(_mm256_add_epi32(G01, G02), G03));
    const __m256i rB = _mm256_sub_epi32(_mm256_add_epi32(one, G01), _mm256_add_epi32(G12, G13));
    const __m256i rC = _mm256_sub_epi32(_mm256_add_epi32(two, _mm256_add_epi32(G02, G12)), G23);
    const __m256i rD = _mm256_add_epi32(_mm256_add_epi32(three, G03), _mm256_add_epi32(G13, G23));
    const __m256i kA = _mm256_cmpgt_epi32(nv, rA), kB = _mm256_cmpgt_epi32(nv, rB);
    const __m256i kC = _mm256_cmpgt_epi32(nv, rC), kD = _mm256_cmpgt_epi32(nv, rD);
    if (S == SparseScore::NonZero) {
      const __m256i cnt = _mm256_add_epi32(_mm256_add_epi32(A, B), _mm256_add_epi32(C, D));
      bad = _mm256_or_si256(bad, _mm256_cmpgt_epi32(cnt, nv));
    }
    // 32 mask bits, bit 4g+e: pack the four masks to bytes, regroup, movemask.
    const __m256i ab = _mm256_packs_epi32(kA, kB), cd = _mm256_packs_epi32(kC, kD);
    const __m256i bytes = _mm256_shuffle_epi8(_mm256_packs_epi16(ab, cd), regroup);
    const uint32_t bits = static_cast<uint32_t>(_mm256_movemask_epi8(bytes));
    if (mrow) std::memcpy(mrow + e / 8, &bits, 4);
    if (meta) {
      const uint32_t mw = static_cast<uint32_t>(L.code8[bits & 0xff]) | (static_cast<uint32_t>(L.code8[(bits >> 8) & 0xff]) << 8) |
                          (static_cast<uint32_t>(L.code8[(bits >> 16) & 0xff]) << 16) | (static_cast<uint32_t>(L.code8[bits >> 24]) << 24);
      std::memcpy(meta + e / 8, &mw, 4);
    }
    if (dense || vals) {
      for (int k = 0; k < 4; ++k) {
        const uint32_t b = (bits >> (8 * k)) & 0xffu;
        const int64_t i = e + 8 * k;
        if (esize == 4) {
          const __m256 v = _mm256_loadu_ps(static_cast<const float*>(src) + i);
          if (dense) {
            const __m256 m = _mm256_castsi256_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(L.mask32[b])));
            const __m256 kept = _mm256_and_ps(v, m);
            float* d = reinterpret_cast<float*>(dense) + i;
            if (stream) {
              _mm_stream_ps(d, _mm256_castps256_ps128(kept));
              _mm_stream_ps(d + 4, _mm256_extractf128_ps(kept, 1));
            } else {
              _mm256_storeu_ps(d, kept);
            }
          }
          if (vals) {
            const __m256 pk = _mm256_permutevar8x32_ps(v, _mm256_load_si256(reinterpret_cast<const __m256i*>(L.perm32[b])));
            _mm_storeu_ps(reinterpret_cast<float*>(vals) + i / 2, _mm256_castps256_ps128(pk));
          }
        } else {
          const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(src) + i));
          if (dense) {
            const __m128i m = _mm_load_si128(reinterpret_cast<const __m128i*>(L.mask16[b]));
            __m128i* d = reinterpret_cast<__m128i*>(reinterpret_cast<uint16_t*>(dense) + i);
            if (stream) _mm_stream_si128(d, _mm_and_si128(v, m));
            else _mm_storeu_si128(d, _mm_and_si128(v, m));
          }
          if (vals) {
            const __m128i pk = _mm_shuffle_epi8(v, _mm_load_si128(reinterpret_cast<const __m128i*>(L.shuf16[b])));
            _mm_storel_epi64(reinterpret_cast<__m128i*>(reinterpret_cast<uint16_t*>(vals) + i / 2), pk);
          }
        }
      }
    }
  }
  // The streamed lines are weakly ordered: make them visible before the
  // row counts as done (another thread may read the output next).
  if (stream) _mm_sfence();
  // A NaN score or a group with too many non-zeros in the vector part: the
  // first one, by the reference's rules.
  if (S != SparseScore::NonZero) {
    if (_mm256_movemask_epi8(_mm256_cmpgt_epi32(bad, _mm256_set1_epi32(static_cast<int>(sm::kInfBits)))) != 0) {
      for (int64_t col = 0; col < full; ++col) {
        if (score1<T, S>(c, base, col) > sm::kInfBits) return col;
      }
    }
  } else if (_mm256_movemask_epi8(bad) != 0) {
    for (int64_t g0 = 0; g0 < full; g0 += 4) {
      int nz = 0;
      for (int i = 0; i < 4; ++i) nz += static_cast<int>(score1<T, S>(c, base, g0 + i));
      if (nz > c.n) return g0;
    }
  }
  // The columns after the last whole step (spans of 8): the reference.
  const int64_t spans = (cols + 7) / 8;
  for (int64_t s = full / 8; s < spans; ++s) {
    const int64_t b = sm::select_span(c, row, s);
    if (b >= 0) return b;
  }
  if (meta && full == cols) {
    for (int64_t b = cols / 8; b < c.meta_row_bytes; ++b) meta[b] = 0;
  }
  return -1;
}

template <DType T>
SelectRowFn select_for_score(SparseScore s) {
  switch (s) {
    case SparseScore::Magnitude: return select24_row<T, SparseScore::Magnitude>;
    case SparseScore::Wanda: return select24_row<T, SparseScore::Wanda>;
    case SparseScore::NonZero: return select24_row<T, SparseScore::NonZero>;
    case SparseScore::Mask: return nullptr;
  }
  return nullptr;
}

}  // namespace
}  // namespace avx2
}  // namespace st

#include "sparse_simd.h"

namespace st {
namespace avx2 {
namespace {

// ---- spmm24 -------------------------------------------------------------------

// The traits of sparse_simd.h's loop: 8 rows per ymm, 8 columns of Y per
// chunk (8 accumulators, the group's two value and index vectors, the
// broadcast and its two permutations: 15 of the 16 registers); up to 3
// columns with a word's 8 value vectors kept in registers too.
struct Isa {
  static constexpr int kLanes = 8;
  static constexpr int kChunk = 8;
  static constexpr int kDirect = 3;
  using V = __m256;
  using Vi = __m256i;
  static V load(const float* p) { return _mm256_load_ps(p); }
  static void store(float* p, V v) { _mm256_store_ps(p, v); }
  static Vi loadi(const int32_t* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); }
  static Vi srli(Vi v, int s) { return _mm256_srli_epi32(v, s); }
  static V bcast4(const float* p) { return _mm256_broadcast_ps(reinterpret_cast<const __m128*>(p)); }
  static V perm(V v, Vi idx) { return _mm256_permutevar_ps(v, idx); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }

  // Kept values 8w..8w+7 of the block's rows, transposed: v[q] lane r is
  // value 8w+q of row r.
  template <DType T>
  static void word_values(const simd::Block& b, int64_t w, V v[8]) {
    for (int r = 0; r < 8; ++r) v[r] = simd::load8<T>(b.vrow[r], 8 * w);
    simd::transpose8(v);
  }
  // The rows' meta words w, one per lane.
  static Vi word_meta(const simd::Block& b, int64_t meta_row_bytes, int64_t w) {
    (void)meta_row_bytes;
    return _mm256_setr_epi32(static_cast<int>(simd::u16_at(b.mrow[0] + 2 * w)), static_cast<int>(simd::u16_at(b.mrow[1] + 2 * w)),
                             static_cast<int>(simd::u16_at(b.mrow[2] + 2 * w)), static_cast<int>(simd::u16_at(b.mrow[3] + 2 * w)),
                             static_cast<int>(simd::u16_at(b.mrow[4] + 2 * w)), static_cast<int>(simd::u16_at(b.mrow[5] + 2 * w)),
                             static_cast<int>(simd::u16_at(b.mrow[6] + 2 * w)), static_cast<int>(simd::u16_at(b.mrow[7] + 2 * w)));
  }
  static void store_i(int32_t* p, Vi v) { _mm256_store_si256(reinterpret_cast<__m256i*>(p), v); }
};

}  // namespace

SelectRowFn select_row_fn(const SelectArgs& a) {
  if (a.m != 4 || a.score == SparseScore::Mask) return nullptr;
  switch (a.src.dtype) {
    case DType::F32: return select_for_score<DType::F32>(a.score);
    case DType::F16: return select_for_score<DType::F16>(a.score);
    case DType::BF16: return select_for_score<DType::BF16>(a.score);
    default: return nullptr;
  }
}

Spmm24Fn spmm24_fn() { return simd::spmm_rows<Isa>; }

}  // namespace avx2
}  // namespace st

#else  // built without AVX2: the reference runs

namespace st {
namespace avx2 {
SelectRowFn select_row_fn(const SelectArgs&) { return nullptr; }
Spmm24Fn spmm24_fn() { return nullptr; }
}  // namespace avx2
}  // namespace st

#endif
