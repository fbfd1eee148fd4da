// AVX-512 (F/BW/VL + VNNI) matmul kernels of the runtime, compiled with
// their own flags. 8-bit activations: one zmm holds 64 codes (two blocks of
// 32); vpdpbusd multiplies unsigned by signed bytes and sums each 4 into an
// int32 lane, so 8 lanes hold a block's partial sums. The formats split in
// two kinds:
//   - 4-bit unsigned codes u in [0, 15] (q4_0, int4 symmetric: value u - 8;
//     q4_1: u·d + m): vpdpbusd(C, u, x) with C = -8·Σx per lane (from the
//     activations, once per token) for the centred ones; q4_1's m·Σx term is
//     a float fma with the block's s = d_x·Σx.
//   - signed 8-bit values w (q8_0, int8 symmetric, int4 with zero points:
//     q - z in [-15, 15]): vpdpbusd(C, x + 128, w) with C = -128·Σw per lane
//     (from the weights, once per row).
// Each lane's int sum is converted and multiplied by its block's scale_w·d_x
// into f32 accumulators, summed across lanes at the end of the row: the
// integer parts equal the reference's; the float sums differ in order only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "model_kernels.h"
#include "model_math.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

namespace st {
namespace model {
namespace avx512 {

namespace {

using mm::load_scale;
inline uint16_t u16_at(const uint8_t* p) { return mm::load_u16(p); }

// [a ×8, b ×8]
inline __m512 pair_ps(float a, float b) {
  return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_set1_ps(a)), _mm256_castps_pd(_mm256_set1_ps(b)), 1));
}

// Two f16 scales as [a ×8, b ×8] floats.
inline __m512 pair_f16(uint16_t a, uint16_t b) {
  const __m256i h = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16(static_cast<short>(a))), _mm_set1_epi16(static_cast<short>(b)), 1);
  return _mm512_cvtph_ps(h);
}

// 32 nibbles of a GGUF block (low nibbles = elements 0..15, high = 16..31)
// as 32 bytes in element order.
inline __m256i nibbles_split(const uint8_t* qs) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i m = _mm_set1_epi8(0x0f);
  return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(b, m)), _mm_and_si128(_mm_srli_epi16(b, 4), m), 1);
}

// 64 compressed-tensors int4 codes (element i in the low (even i) or high
// nibble of byte i/2) as 64 bytes in element order.
inline __m512i nibbles_interleaved(const uint8_t* p) {
  const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i m = _mm256_set1_epi8(0x0f);
  const __m256i lo = _mm256_and_si256(b, m), hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), m);
  // per 128-bit lane: unpacklo gives bytes 0..7 interleaved (elements 0..15 of the lane's 16 bytes)
  const __m256i a = _mm256_unpacklo_epi8(lo, hi);  // [e0..15, e32..47]
  const __m256i c = _mm256_unpackhi_epi8(lo, hi);  // [e16..31, e48..63]
  const __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(a), c, 1);  // [0..15, 32..47, 16..31, 48..63]
  return _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 4, 5, 2, 3, 6, 7), z);
}

inline __m256i nibbles_interleaved_half(const uint8_t* p) {  // 32 codes
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i m = _mm_set1_epi8(0x0f);
  const __m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
  return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi8(lo, hi)), _mm_unpackhi_epi8(lo, hi), 1);
}

inline __m512i join(__m256i a, __m256i b) { return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1); }

// ---- the formats: a pair of blocks (64 values; `single`: only the first
// block, the second zero) of row r.

struct RowPair {
  __m512i w;      // unsigned codes (kind A) or signed values (kind B)
  __m512 s;       // scale_w per lane
  __m512 o;       // kind A with offset: offset_w per lane
};

// Kind A: unsigned 4-bit codes. kCenter: value u - 8 (C from the activations).
struct Q4_0 {
  static constexpr bool kSigned = false, kCenter = true, kOffset = false;
  static void pair(const Weight& w, int64_t r, int64_t p, bool single, RowPair* o) {
    const uint8_t* a = w.data + r * w.row_bytes + 2 * p * 18;
    const uint8_t* b = a + 18;
    const __m256i wa = nibbles_split(a + 2);
    o->w = join(wa, single ? _mm256_setzero_si256() : nibbles_split(b + 2));
    o->s = pair_f16(u16_at(a), single ? 0 : u16_at(b));
  }
};

struct Q4_1 {
  static constexpr bool kSigned = false, kCenter = false, kOffset = true;
  static void pair(const Weight& w, int64_t r, int64_t p, bool single, RowPair* o) {
    const uint8_t* a = w.data + r * w.row_bytes + 2 * p * 20;
    const uint8_t* b = a + 20;
    o->w = join(nibbles_split(a + 4), single ? _mm256_setzero_si256() : nibbles_split(b + 4));
    o->s = pair_f16(u16_at(a), single ? 0 : u16_at(b));
    o->o = pair_f16(u16_at(a + 2), single ? 0 : u16_at(b + 2));
  }
};

struct Int4Sym {
  static constexpr bool kSigned = false, kCenter = true, kOffset = false;
  static void pair(const Weight& w, int64_t r, int64_t p, bool single, RowPair* o) {
    const uint8_t* row = w.data + r * w.row_bytes;
    o->w = single ? _mm512_castsi256_si512(nibbles_interleaved_half(row + 32 * p)) : nibbles_interleaved(row + 32 * p);
    if (single) o->w = _mm512_inserti64x4(o->w, _mm256_setzero_si256(), 1);
    const int64_t ng = w.cols / w.group, ga = (64 * p) / w.group, gb = (64 * p + 32) / w.group;
    o->s = pair_ps(load_scale(w.scales, r * ng + ga, w.scale_dtype), single ? 0.0f : load_scale(w.scales, r * ng + gb, w.scale_dtype));
  }
};

// Kind B: signed bytes (C from the weights).
struct Q8_0 {
  static constexpr bool kSigned = true, kCenter = false, kOffset = false;
  static void pair(const Weight& w, int64_t r, int64_t p, bool single, RowPair* o) {
    const uint8_t* a = w.data + r * w.row_bytes + 2 * p * 34;
    const uint8_t* b = a + 34;
    const __m256i wa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 2));
    o->w = join(wa, single ? _mm256_setzero_si256() : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2)));
    o->s = pair_f16(u16_at(a), single ? 0 : u16_at(b));
  }
};

struct Int8Sym {
  static constexpr bool kSigned = true, kCenter = false, kOffset = false;
  static void pair(const Weight& w, int64_t r, int64_t p, bool single, RowPair* o) {
    const uint8_t* row = w.data + r * w.row_bytes + 64 * p;
    const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
    const __m512i raw = single ? _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row))) : _mm512_loadu_si512(row);
    o->w = _mm512_xor_si512(raw, bias);  // u = q + 128 -> q
    if (single) o->w = _mm512_inserti64x4(o->w, _mm256_setzero_si256(), 1);
    const int64_t ng = w.cols / w.group, ga = (64 * p) / w.group, gb = (64 * p + 32) / w.group;
    o->s = pair_ps(load_scale(w.scales, r * ng + ga, w.scale_dtype), single ? 0.0f : load_scale(w.scales, r * ng + gb, w.scale_dtype));
  }
};

struct Int4Asym {
  static constexpr bool kSigned = true, kCenter = false, kOffset = false;
  static void pair(const Weight& w, int64_t r, int64_t p, bool single, RowPair* o) {
    const uint8_t* row = w.data + r * w.row_bytes;
    __m512i u = single ? _mm512_castsi256_si512(nibbles_interleaved_half(row + 32 * p)) : nibbles_interleaved(row + 32 * p);
    const int64_t ng = w.cols / w.group, ga = (64 * p) / w.group, gb = (64 * p + 32) / w.group;
    const int za = 8 + w.zeros[r * ng + ga], zb = single ? 0 : 8 + w.zeros[r * ng + gb];
    const __m512i z = join(_mm256_set1_epi8(static_cast<char>(za)), _mm256_set1_epi8(static_cast<char>(zb)));
    u = _mm512_sub_epi8(u, z);  // q - z = u - 8 - z
    if (single) u = _mm512_inserti64x4(u, _mm256_setzero_si256(), 1);
    o->w = u;
    o->s = pair_ps(load_scale(w.scales, r * ng + ga, w.scale_dtype), single ? 0.0f : load_scale(w.scales, r * ng + gb, w.scale_dtype));
  }
};

// The activations of one token for a pair.
struct TokPair {
  __m512i x;   // codes (kind A: signed; kind B: + 128, unsigned)
  __m512 d;    // d_x per lane
  __m512i c;   // kind A centred: -8·Σx per lane
  __m512 sx;   // kind A offset: s_x / 8 per lane (8 lanes sum to s_x)
};

template <class F>
inline void token_pair(const ActQ8& xq, int64_t t, int64_t p, bool single, TokPair* o) {
  const int8_t* x = xq.q + t * xq.ld + 64 * p;
  const float* d = xq.d + t * (xq.ld / 32) + 2 * p;
  __m512i v = single ? _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x))) : _mm512_loadu_si512(x);
  if (single) v = _mm512_inserti64x4(v, _mm256_setzero_si256(), 1);
  o->d = pair_ps(d[0], single ? 0.0f : d[1]);
  if (F::kSigned) {
    o->x = _mm512_xor_si512(v, _mm512_set1_epi8(static_cast<char>(0x80)));
  } else {
    o->x = v;
    if (F::kCenter) o->c = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(8), v));
    if (F::kOffset) {
      const float* s = xq.s + t * (xq.ld / 32) + 2 * p;
      o->sx = pair_ps(s[0] * 0.125f, single ? 0.0f : s[1] * 0.125f);
    }
  }
}

// Rows [r0, r0 + R) × tokens [t0, t0 + T) of Y.
template <class F, int R, int T>
void tile(const MatmulArgs& a, int64_t r0, int64_t t0) {
  const Weight& w = *a.w;
  const int64_t blocks = w.cols / 32, pairs = (blocks + 1) / 2;
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  const __m512i c128 = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t p = 0; p < pairs; ++p) {
    const bool single = 2 * p + 1 == blocks;
    TokPair tp[T];
    for (int t = 0; t < T; ++t) token_pair<F>(a.xq, t0 + t, p, single, &tp[t]);
    if (T == 1 && r0 + 2 * R <= w.rows) {
      // One token: the weight is streamed once. The rows of the next tile
      // (contiguous with this one's) are fetched while this tile runs.
      const char* next = reinterpret_cast<const char*>(w.data + (r0 + R) * w.row_bytes) + (p * R * w.row_bytes) / pairs;
      for (int64_t o = 0; o < (R * w.row_bytes + pairs - 1) / pairs + 64; o += 64) _mm_prefetch(next + o, _MM_HINT_T0);
    }
    for (int r = 0; r < R; ++r) {
      RowPair rp;
      F::pair(w, r0 + r, p, single, &rp);
      __m512i nc = _mm512_setzero_si512();
      if (F::kSigned) nc = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), c128, rp.w));
      for (int t = 0; t < T; ++t) {
        __m512i i;
        if (F::kSigned) i = _mm512_dpbusd_epi32(nc, tp[t].x, rp.w);
        else i = _mm512_dpbusd_epi32(F::kCenter ? tp[t].c : _mm512_setzero_si512(), rp.w, tp[t].x);
        acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(rp.s, tp[t].d), acc[r][t]);
        if (F::kOffset) acc[r][t] = _mm512_fmadd_ps(rp.o, tp[t].sx, acc[r][t]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      float* y = a.y + (t0 + t) * a.ldy + r0 + r;
      const float v = _mm512_reduce_add_ps(acc[r][t]);
      *y = a.accumulate ? *y + v : v;
    }
  }
}

template <class F, int R>
void tokens_of(const MatmulArgs& a, int64_t r0) {
  int64_t t = 0;
  for (; t + 4 <= a.n; t += 4) tile<F, R, 4>(a, r0, t);
  switch (a.n - t) {
    case 3: tile<F, R, 3>(a, r0, t); break;
    case 2: tile<F, R, 2>(a, r0, t); break;
    case 1: tile<F, R, 1>(a, r0, t); break;
    default: break;
  }
}

// Many tokens (a prompt): a tile of 4 rows is decoded once into a panel
// (per pair: each row's codes, scales and the kind's extra term), then every
// tile of T tokens runs over the panel from L1 instead of decoding the rows
// again.
// Only the arrays a format uses are filled (kind B: c; offset kinds: o), so a
// q4_0 panel of a 5632-wide row tile is 44 KiB.
struct Panel {
  __m512i* w;  // [pairs][4 rows]
  __m512* s;
  __m512i* c;  // kind B: -128·Σw per lane
  __m512* o;   // offset kinds: offset per lane
};

template <class F, int T>
void panel_tile(const MatmulArgs& a, const Panel& panel, int64_t pairs, int64_t blocks, int64_t r0, int64_t t0) {
  constexpr int R = 4;
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    const bool single = 2 * p + 1 == blocks;
    TokPair tp[T];
    for (int t = 0; t < T; ++t) token_pair<F>(a.xq, t0 + t, p, single, &tp[t]);
    for (int r = 0; r < R; ++r) {
      const int64_t e = p * R + r;
      const __m512i wv = panel.w[e];
      const __m512 sv = panel.s[e];
      for (int t = 0; t < T; ++t) {
        __m512i i;
        if (F::kSigned) i = _mm512_dpbusd_epi32(panel.c[e], tp[t].x, wv);
        else i = _mm512_dpbusd_epi32(F::kCenter ? tp[t].c : _mm512_setzero_si512(), wv, tp[t].x);
        acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(sv, tp[t].d), acc[r][t]);
        if (F::kOffset) acc[r][t] = _mm512_fmadd_ps(panel.o[e], tp[t].sx, acc[r][t]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      float* y = a.y + (t0 + t) * a.ldy + r0 + r;
      const float v = _mm512_reduce_add_ps(acc[r][t]);
      *y = a.accumulate ? *y + v : v;
    }
  }
}

template <class F>
void panel_rows(const MatmulArgs& a, int64_t r0, const Panel& panel) {
  const Weight& w = *a.w;
  const int64_t blocks = w.cols / 32, pairs = (blocks + 1) / 2;
  const __m512i c128 = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t p = 0; p < pairs; ++p) {
    const bool single = 2 * p + 1 == blocks;
    for (int r = 0; r < 4; ++r) {
      RowPair rp;
      F::pair(w, r0 + r, p, single, &rp);
      const int64_t e = p * 4 + r;
      panel.w[e] = rp.w;
      panel.s[e] = rp.s;
      if (F::kSigned) panel.c[e] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), c128, rp.w));
      if (F::kOffset) panel.o[e] = rp.o;
    }
  }
  int64_t t = 0;
  for (; t + 4 <= a.n; t += 4) panel_tile<F, 4>(a, panel, pairs, blocks, r0, t);
  switch (a.n - t) {
    case 3: panel_tile<F, 3>(a, panel, pairs, blocks, r0, t); break;
    case 2: panel_tile<F, 2>(a, panel, pairs, blocks, r0, t); break;
    case 1: panel_tile<F, 1>(a, panel, pairs, blocks, r0, t); break;
    default: break;
  }
}

constexpr int64_t kPanelTokens = 8;  // from this many tokens on, rows are decoded once into a panel

template <class F>
void q8_rows(const MatmulArgs& a, int64_t r0, int64_t r1) {
  int64_t r = r0;
  if (a.n >= kPanelTokens && r1 - r0 >= 4) {
    const int64_t entries = (a.w->cols / 32 + 1) / 2 * 4;
    const int64_t arrays = 2 + (F::kSigned ? 1 : 0) + (F::kOffset ? 1 : 0);
    char* mem = static_cast<char*>(std::aligned_alloc(64, static_cast<size_t>(entries * arrays) * 64));
    if (mem) {
      Panel panel{reinterpret_cast<__m512i*>(mem), reinterpret_cast<__m512*>(mem + entries * 64), nullptr, nullptr};
      int k = 2;
      if (F::kSigned) panel.c = reinterpret_cast<__m512i*>(mem + entries * 64 * k++);
      if (F::kOffset) panel.o = reinterpret_cast<__m512*>(mem + entries * 64 * k++);
      for (; r + 4 <= r1; r += 4) panel_rows<F>(a, r, panel);
      std::free(mem);
    }
  }
  for (; r + 4 <= r1; r += 4) tokens_of<F, 4>(a, r);
  for (; r < r1; ++r) tokens_of<F, 1>(a, r);
}

void q8_int4(const MatmulArgs& a, int64_t r0, int64_t r1) {
  if (a.w->zeros) q8_rows<Int4Asym>(a, r0, r1);
  else q8_rows<Int4Sym>(a, r0, r1);
}

// e^x for x in [-87, 88] (clamped outside): 2^n · p(r), r = x - n·ln 2 split
// in two constants, p the degree-6 Taylor polynomial (~2 ulp): the
// attention softmax and SiLU, where f32 rounding is already far below the
// activations' own error.
inline __m512 exp_ps(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

void swiglu(const float* g, const float* u, int64_t n, float* out) {
  int64_t i = 0;
  const __m512 one = _mm512_set1_ps(1.0f);
  for (; i + 16 <= n; i += 16) {
    const __m512 gv = _mm512_loadu_ps(g + i);
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), gv));
    _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(one, e)), _mm512_loadu_ps(u + i)));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 gv = _mm512_maskz_loadu_ps(m, g + i);
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), gv));
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(one, e)), _mm512_maskz_loadu_ps(m, u + i)));
  }
}

// Head dimensions that are multiples of 16, up to 256 (the output stays in registers).
template <int C>
void attend_c(const float* q, const float* k, const float* v, int64_t len, float scale, float* sc, float* out) {
  constexpr int64_t hd = 16 * C;
  __m512 qv[C];
  for (int c = 0; c < C; ++c) qv[c] = _mm512_loadu_ps(q + 16 * c);
  __m512 mx = _mm512_set1_ps(-INFINITY);
  int64_t j = 0;
  // Four positions at a time: their dot products reduced together.
  for (; j + 4 <= len; j += 4) {
    __m512 a[4];
    for (int t = 0; t < 4; ++t) {
      a[t] = _mm512_mul_ps(qv[0], _mm512_loadu_ps(k + (j + t) * hd));
      for (int c = 1; c < C; ++c) a[t] = _mm512_fmadd_ps(qv[c], _mm512_loadu_ps(k + (j + t) * hd + 16 * c), a[t]);
    }
    for (int t = 0; t < 4; ++t) sc[j + t] = _mm512_reduce_add_ps(a[t]) * scale;
  }
  for (; j < len; ++j) {
    __m512 a = _mm512_mul_ps(qv[0], _mm512_loadu_ps(k + j * hd));
    for (int c = 1; c < C; ++c) a = _mm512_fmadd_ps(qv[c], _mm512_loadu_ps(k + j * hd + 16 * c), a);
    sc[j] = _mm512_reduce_add_ps(a) * scale;
  }
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(sc + i));
  float m = _mm512_reduce_max_ps(mx);
  for (; i < len; ++i) m = sc[i] > m ? sc[i] : m;
  const __m512 mv = _mm512_set1_ps(m);
  __m512 sum = _mm512_setzero_ps();
  for (i = 0; i + 16 <= len; i += 16) {
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_loadu_ps(sc + i), mv));
    _mm512_storeu_ps(sc + i, e);
    sum = _mm512_add_ps(sum, e);
  }
  if (i < len) {
    const __mmask16 mk = static_cast<__mmask16>((1u << (len - i)) - 1);
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, sc + i), mv));
    _mm512_mask_storeu_ps(sc + i, mk, e);
    sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(mk, e));
  }
  const float inv = 1.0f / _mm512_reduce_add_ps(sum);
  __m512 o[C];
  for (int c = 0; c < C; ++c) o[c] = _mm512_setzero_ps();
  for (j = 0; j < len; ++j) {
    const __m512 p = _mm512_set1_ps(sc[j]);
    for (int c = 0; c < C; ++c) o[c] = _mm512_fmadd_ps(p, _mm512_loadu_ps(v + j * hd + 16 * c), o[c]);
  }
  const __m512 iv = _mm512_set1_ps(inv);
  for (int c = 0; c < C; ++c) _mm512_storeu_ps(out + 16 * c, _mm512_mul_ps(o[c], iv));
}

void attend(const float* q, const float* k, const float* v, int64_t len, int64_t hd, float scale, float* sc, float* out) {
  switch (hd) {
    case 32: return attend_c<2>(q, k, v, len, scale, sc, out);
    case 64: return attend_c<4>(q, k, v, len, scale, sc, out);
    case 80: return attend_c<5>(q, k, v, len, scale, sc, out);
    case 96: return attend_c<6>(q, k, v, len, scale, sc, out);
    case 128: return attend_c<8>(q, k, v, len, scale, sc, out);
    case 256: return attend_c<16>(q, k, v, len, scale, sc, out);
    default: return ref::kernels().attend(q, k, v, len, hd, scale, sc, out);
  }
}

KernelSet make() {
  KernelSet k{"avx512", 4, {}, {}, attend, swiglu};
  k.q8[static_cast<int>(WFormat::Q4_0)] = q8_rows<Q4_0>;
  k.q8[static_cast<int>(WFormat::Q4_1)] = q8_rows<Q4_1>;
  k.q8[static_cast<int>(WFormat::Q8_0)] = q8_rows<Q8_0>;
  k.q8[static_cast<int>(WFormat::Int4)] = q8_int4;
  k.q8[static_cast<int>(WFormat::Int8)] = q8_rows<Int8Sym>;
  return k;
}

}  // namespace

const KernelSet* kernels() {
  static const KernelSet k = make();
  return &k;
}

}  // namespace avx512
}  // namespace model
}  // namespace st

#else  // built without AVX-512 VNNI

namespace st {
namespace model {
namespace avx512 {
const KernelSet* kernels() { return nullptr; }
}  // namespace avx512
}  // namespace model
}  // namespace st

#endif
