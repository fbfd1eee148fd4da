// AVX2 (+FMA, F16C) matmul kernels of the runtime, compiled with their own
// flags. 8-bit activations, one block of 32 per ymm: every format's codes
// become signed bytes (q4_0: u - 8, q4_1: u, q8_0: q, int4: u - 8 - z,
// int8: u - 128); vpmaddubsw needs an unsigned operand, so it multiplies
// |w| by x with w's sign (ggml's trick; |w| <= 128 and |x| <= 127 keep the
// pair sums inside int16), vpmaddwd sums pairs into 8 int32 lanes, and
// each block's lanes are converted and multiplied by scale_w·d_x into f32
// accumulators (q4_1 adds m·s_x). Integer parts equal the reference's; the
// float sums differ in order only. f32/f16/bf16 weights read f32
// activations through the lowrank room's GEMM (the reference's bits).
#include "model_kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#include <cstring>

#include "../lowrank/gemm.h"

namespace st {
namespace model {
namespace avx2 {

namespace {

inline uint16_t u16_at(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

inline float f16(uint16_t h) { return _cvtsh_ss(h); }

inline float load_scale(const void* s, int64_t i, DType t) {
  if (t == DType::F32) return static_cast<const float*>(s)[i];
  const uint16_t h = static_cast<const uint16_t*>(s)[i];
  if (t == DType::F16) return f16(h);
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

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

void f32_floats(const MatmulArgs& a, int64_t r0, int64_t r1) {
  const Weight& w = *a.w;
  GemmArgs g;
  g.m = a.n;
  g.n = r1 - r0;
  g.k = w.cols;
  g.a = GemmOperand{a.x, DType::F32, a.ldx, false};
  const DType dt = w.format == WFormat::F32 ? DType::F32 : w.format == WFormat::F16 ? DType::F16 : DType::BF16;
  g.b = GemmOperand{w.data + r0 * w.row_bytes, dt, w.cols, true};
  g.c = a.y + r0;
  g.ldc = a.ldy;
  g.accumulate = a.accumulate;
  g.kernel = Kernel::Avx2;
  g.threads = 1;
  gemm(g);
}

KernelSet make() {
  KernelSet k{"avx2", 4, {}, {}};
  k.f32[static_cast<int>(WFormat::F32)] = f32_floats;
  k.f32[static_cast<int>(WFormat::F16)] = f32_floats;
  k.f32[static_cast<int>(WFormat::BF16)] = f32_floats;
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
