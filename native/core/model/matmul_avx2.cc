// AVX2 (+FMA, F16C) matmul kernels of the runtime, compiled with their own
// flags. 8-bit activations, one block of 32 per ymm: every format's codes
// become signed bytes (q4_0: u - 8, q4_1: u, q8_0: q, int4: u - 8 - z,
// int8: u - 128); vpmaddubsw needs an unsigned operand, so it multiplies
// |w| by x with w's sign (ggml's trick; |w| <= 128 and |x| <= 127 keep the
// pair sums inside int16), vpmaddwd sums pairs into 8 int32 lanes, and
// each block's lanes are converted and multiplied by scale_w·d_x into f32
// accumulators (q4_1 adds m·s_x). Integer parts equal the reference's; the
// float sums differ in order only.
#include "model_kernels.h"
#include "model_math.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#include <cmath>
#include <cstring>

namespace st {
namespace model {
namespace avx2 {

namespace {

inline float f16(uint16_t h) { return _cvtsh_ss(h); }  // F16C: the exact conversion, one instruction
using mm::load_scale;
inline uint16_t u16_at(const uint8_t* p) { return mm::load_u16(p); }

// GGUF nibbles (low = elements 0..15, high = 16..31) in element order.
inline __m256i nibbles_split(const uint8_t* qs) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i m = _mm_set1_epi8(0x0f);
  return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(b, m)), _mm_and_si128(_mm_srli_epi16(b, 4), m), 1);
}

// compressed-tensors int4 (element i in byte i/2, low nibble for even i), 32 codes.
inline __m256i nibbles_interleaved(const uint8_t* p) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i m = _mm_set1_epi8(0x0f);
  const __m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
  return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi8(lo, hi)), _mm_unpackhi_epi8(lo, hi), 1);
}

struct RowBlock {
  __m256i w;     // signed codes
  float s;       // scale
  float m;       // q4_1: offset
};

struct Q4_0 {
  static constexpr bool kOffset = false;
  static void block(const Weight& w, int64_t r, int64_t b, RowBlock* o) {
    const uint8_t* p = w.data + r * w.row_bytes + b * 18;
    o->w = _mm256_sub_epi8(nibbles_split(p + 2), _mm256_set1_epi8(8));
    o->s = f16(u16_at(p));
  }
};
struct Q4_1 {
  static constexpr bool kOffset = true;
  static void block(const Weight& w, int64_t r, int64_t b, RowBlock* o) {
    const uint8_t* p = w.data + r * w.row_bytes + b * 20;
    o->w = nibbles_split(p + 4);
    o->s = f16(u16_at(p));
    o->m = f16(u16_at(p + 2));
  }
};
struct Q8_0 {
  static constexpr bool kOffset = false;
  static void block(const Weight& w, int64_t r, int64_t b, RowBlock* o) {
    const uint8_t* p = w.data + r * w.row_bytes + b * 34;
    o->w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2));
    o->s = f16(u16_at(p));
  }
};
struct Int4 {
  static constexpr bool kOffset = false;
  static void block(const Weight& w, int64_t r, int64_t b, RowBlock* o) {
    const int64_t ng = w.cols / w.group, g = (32 * b) / w.group;
    const int z = 8 + (w.zeros ? w.zeros[r * ng + g] : 0);
    o->w = _mm256_sub_epi8(nibbles_interleaved(w.data + r * w.row_bytes + 16 * b), _mm256_set1_epi8(static_cast<char>(z)));
    o->s = load_scale(w.scales, r * ng + g, w.scale_dtype);
  }
};
struct Int8 {
  static constexpr bool kOffset = false;
  static void block(const Weight& w, int64_t r, int64_t b, RowBlock* o) {
    const int64_t ng = w.cols / w.group, g = (32 * b) / w.group;
    o->w = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.data + r * w.row_bytes + 32 * b)), _mm256_set1_epi8(static_cast<char>(0x80)));
    o->s = load_scale(w.scales, r * ng + g, w.scale_dtype);
  }
};

// Rows [r0, r0 + R) × tokens [t0, t0 + T).
template <class F, int R, int T>
void tile(const MatmulArgs& a, int64_t r0, int64_t t0) {
  const Weight& w = *a.w;
  const int64_t blocks = w.cols / 32, dld = a.xq.ld / 32;
  __m256 acc[R][T];
  float off[R][T];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      acc[r][t] = _mm256_setzero_ps();
      off[r][t] = 0.0f;
    }
  }
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < blocks; ++b) {
    if (T == 1 && r0 + 2 * R <= w.rows) {
      // One token: the weight is streamed once. The rows of the next tile
      // (contiguous with this one's) are fetched while this tile runs.
      const char* next = reinterpret_cast<const char*>(w.data + (r0 + R) * w.row_bytes) + (b * R * w.row_bytes) / blocks;
      for (int64_t o = 0; o < (R * w.row_bytes + blocks - 1) / blocks + 64; o += 64) _mm_prefetch(next + o, _MM_HINT_T0);
    }
    __m256i x[T];
    for (int t = 0; t < T; ++t) x[t] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.xq.q + (t0 + t) * a.xq.ld + 32 * b));
    for (int r = 0; r < R; ++r) {
      RowBlock rb;
      F::block(w, r0 + r, b, &rb);
      const __m256i aw = _mm256_sign_epi8(rb.w, rb.w);  // |w|
      for (int t = 0; t < T; ++t) {
        const __m256i sx = _mm256_sign_epi8(x[t], rb.w);
        const __m256i i32 = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), ones);
        const float d = a.xq.d[(t0 + t) * dld + b];
        acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i32), _mm256_set1_ps(rb.s * d), acc[r][t]);
        if (F::kOffset) off[r][t] += rb.m * a.xq.s[(t0 + t) * dld + b];
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      const __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc[r][t]), _mm256_extractf128_ps(acc[r][t], 1));
      const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
      const float v = _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q))) + off[r][t];
      float* y = a.y + (t0 + t) * a.ldy + r0 + r;
      *y = a.accumulate ? *y + v : v;
    }
  }
}

template <class F, int R>
void tokens_of(const MatmulArgs& a, int64_t r0) {
  int64_t t = 0;
  for (; t + 3 <= a.n; t += 3) tile<F, R, 3>(a, r0, t);
  switch (a.n - t) {
    case 2: tile<F, R, 2>(a, r0, t); break;
    case 1: tile<F, R, 1>(a, r0, t); break;
    default: break;
  }
}

template <class F>
void q8_rows(const MatmulArgs& a, int64_t r0, int64_t r1) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) tokens_of<F, 4>(a, r);
  for (; r < r1; ++r) tokens_of<F, 1>(a, r);
}

// e^x for x in [-87, 88] (clamped outside): 2^n · p(r) as in the AVX-512
// file, 2^n built in the exponent field.
inline __m256 exp_ps(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  // n in [-126, 127]: 2^n is exact as a normal float.
  const __m256 two_n = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
  return _mm256_mul_ps(p, two_n);
}

inline float hsum(__m256 v) {
  const __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}

void swiglu(const float* g, const float* u, int64_t n, float* out) {
  int64_t i = 0;
  const __m256 one = _mm256_set1_ps(1.0f);
  for (; i + 8 <= n; i += 8) {
    const __m256 gv = _mm256_loadu_ps(g + i);
    const __m256 e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), gv));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
  }
  for (; i < n; ++i) out[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

template <int C>
void attend_c(const float* q, const float* k, const float* v, int64_t len, float scale, float* sc, float* out) {
  constexpr int64_t hd = 8 * C;
  __m256 qv[C];
  for (int c = 0; c < C; ++c) qv[c] = _mm256_loadu_ps(q + 8 * c);
  float m = -INFINITY;
  for (int64_t j = 0; j < len; ++j) {
    __m256 a = _mm256_mul_ps(qv[0], _mm256_loadu_ps(k + j * hd));
    for (int c = 1; c < C; ++c) a = _mm256_fmadd_ps(qv[c], _mm256_loadu_ps(k + j * hd + 8 * c), a);
    sc[j] = hsum(a) * scale;
    m = sc[j] > m ? sc[j] : m;
  }
  const __m256 mv = _mm256_set1_ps(m);
  __m256 sum = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= len; i += 8) {
    const __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(sc + i), mv));
    _mm256_storeu_ps(sc + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  float tail = 0.0f;
  for (; i < len; ++i) {
    sc[i] = std::exp(sc[i] - m);
    tail += sc[i];
  }
  const float inv = 1.0f / (hsum(sum) + tail);
  __m256 o[C];
  for (int c = 0; c < C; ++c) o[c] = _mm256_setzero_ps();
  for (int64_t j = 0; j < len; ++j) {
    const __m256 p = _mm256_set1_ps(sc[j]);
    for (int c = 0; c < C; ++c) o[c] = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + j * hd + 8 * c), o[c]);
  }
  const __m256 iv = _mm256_set1_ps(inv);
  for (int c = 0; c < C; ++c) _mm256_storeu_ps(out + 8 * c, _mm256_mul_ps(o[c], iv));
}

void attend(const float* q, const float* k, const float* v, int64_t len, int64_t hd, float scale, float* sc, float* out) {
  switch (hd) {
    case 32: return attend_c<4>(q, k, v, len, scale, sc, out);
    case 64: return attend_c<8>(q, k, v, len, scale, sc, out);
    case 128: return attend_c<16>(q, k, v, len, scale, sc, out);
    default: return ref::kernels().attend(q, k, v, len, hd, scale, sc, out);
  }
}

KernelSet make() {
  KernelSet k{"avx2", 4, {}, {}, attend, swiglu};
  k.q8[static_cast<int>(WFormat::Q4_0)] = q8_rows<Q4_0>;
  k.q8[static_cast<int>(WFormat::Q4_1)] = q8_rows<Q4_1>;
  k.q8[static_cast<int>(WFormat::Q8_0)] = q8_rows<Q8_0>;
  k.q8[static_cast<int>(WFormat::Int4)] = q8_rows<Int4>;
  k.q8[static_cast<int>(WFormat::Int8)] = q8_rows<Int8>;
  return k;
}

}  // namespace

const KernelSet* kernels() {
  static const KernelSet k = make();
  return &k;
}

}  // namespace avx2
}  // namespace model
}  // namespace st

#else  // built without AVX2

namespace st {
namespace model {
namespace avx2 {
const KernelSet* kernels() { return nullptr; }
}  // namespace avx2
}  // namespace model
}  // namespace st

#endif
