// AVX-512 twin of distill_avx2.cc: the row kernel of distill_simd.h on one
// zmm register per 16 logits. Compiled with -mavx512f -mavx512bw -mavx512vl
// (plus the AVX2 flags) in its own translation unit and only called when
// cpuid says so (cpu_enabled().avx512; SLIMTENSOR_ISA=avx2 turns it off).
//
// Same operations in the same order as the AVX2 kernel, so the same bits:
// the exp below is the AVX2 polynomial with two AVX-512 shortcuts that
// cannot change a result — the 2^n scaling by VSCALEFPS (p·2^n rounded once,
// as the AVX2 multiply by the float 2^n) and the zeroing of lanes below
// −87.5 by a mask instead of a clamp and an AND (the clamp only ever changed
// lanes that are zeroed). What the zmm width buys: half the instructions per
// logit, 32 registers (the AVX2 kernel spills), masked loads and stores for
// row tails, and 64-byte non-temporal stores for large f32 gradients.
// GCC 12 reports its own AVX-512 intrinsics' undefined pass-through operand
// as uninitialized (a false positive inside its headers, so the pragma must
// precede them).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "distill_kernels.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX2__) && defined(__FMA__) && \
    defined(__F16C__)
#include <immintrin.h>

#include "distill_simd.h"

namespace st {
namespace avx512 {

namespace {

// The traits distill_simd.h runs on: 16 floats in a zmm, a 16-bit mask.
struct Isa {
  using V = __m512;
  using M = __mmask16;
  struct D {  // 16 per-lane doubles
    __m512d lo, hi;
  };

  static V set1(float x) { return _mm512_set1_ps(x); }
  static V zero() { return _mm512_setzero_ps(); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  // MAXPS/MINPS semantics: the second operand when either is NaN.
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }   // a·b + c
  static V fmsub(V a, V b, V c) { return _mm512_fmsub_ps(a, b, c); }   // a·b − c
  static V fnmadd(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); } // c − a·b
  // The largest lane (exact, in any order).
  static float hmax(V v) { return _mm512_reduce_max_ps(v); }
  static M gt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static M eq(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
  // k ∧ (a < b)
  static M and_lt(M k, V a, V b) { return _mm512_mask_cmp_ps_mask(k, a, b, _CMP_LT_OQ); }
  static bool any(M m) { return m != 0; }
  static bool all(M m) { return m == 0xffff; }
  // Lanes [0, n), n in 0..16.
  static M first(int n) { return static_cast<M>((1u << n) - 1u); }
  static V maskz(M k, V v) { return _mm512_maskz_mov_ps(k, v); }
  // b where k is set, else a.
  static V blend(M k, V a, V b) { return _mm512_mask_blend_ps(k, a, b); }

  // ---- exp and log1p: the AVX2 polynomials (see distill_avx2.cc) ----------

  // x already <= 88; lanes not in `keep` (x < −87.5 or NaN) are 0.
  static V exp_core(V x, M keep) {
    const V magic = set1(12582912.0f + 127.0f);
    const V t = _mm512_fmadd_ps(x, set1(1.44269504088896341f), magic);
    const V n = _mm512_sub_ps(t, magic);
    V r = _mm512_fnmadd_ps(n, set1(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, set1(-2.12194440e-4f), r);
    V p = set1(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, set1(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, set1(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, set1(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, set1(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, set1(0.5f));
    p = _mm512_fmadd_ps(p, r, set1(1.0f));
    p = _mm512_fmadd_ps(p, r, set1(1.0f));
    // p·2^n, n an integer in [−126, 127] for the kept lanes: rounded once.
    return _mm512_maskz_scalef_ps(keep, p, n);
  }
  static V exp(V x) {
    const M keep = _mm512_cmp_ps_mask(x, set1(-87.5f), _CMP_GE_OQ);
    return exp_core(_mm512_min_ps(x, set1(88.0f)), keep);
  }
  // For arguments <= 0 (or NaN), as every exp of the kernel.
  static V exp_le0(V x) { return exp_core(x, _mm512_cmp_ps_mask(x, set1(-87.5f), _CMP_GE_OQ)); }

  static V log1p01(V e) {
    const M big = _mm512_cmp_ps_mask(e, set1(0.41421356f), _CMP_GT_OQ);
    const V one = set1(1.0f);
    const V f = _mm512_mask_blend_ps(big, e, _mm512_mul_ps(_mm512_sub_ps(e, one), set1(0.5f)));
    const V s = _mm512_div_ps(f, _mm512_add_ps(set1(2.0f), f));
    const V s2 = _mm512_mul_ps(s, s);
    V p = set1(1.0f / 11.0f);
    p = _mm512_fmadd_ps(p, s2, set1(1.0f / 9.0f));
    p = _mm512_fmadd_ps(p, s2, set1(1.0f / 7.0f));
    p = _mm512_fmadd_ps(p, s2, set1(1.0f / 5.0f));
    p = _mm512_fmadd_ps(p, s2, set1(1.0f / 3.0f));
    p = _mm512_fmadd_ps(p, s2, one);
    const V two_s = _mm512_add_ps(s, s);
    return _mm512_fmadd_ps(two_s, p, _mm512_maskz_mov_ps(big, set1(0.693147181f)));
  }

  // ---- loads and stores, the dtype conversion fused in ----------------------

  static V widen(__m256i h, DType t) {
    if (t == DType::F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  template <DType T>
  static V load(const void* p, int64_t i) {
    if constexpr (T == DType::F32) {
      return _mm512_loadu_ps(static_cast<const float*>(p) + i);
    } else {
      return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i)), T);
    }
  }
  // The first n (< 16) values from element i, zeros after them; reads nothing beyond.
  template <DType T>
  static V load_n(const void* p, int64_t i, int n) {
    if constexpr (T == DType::F32) {
      return _mm512_maskz_loadu_ps(first(n), static_cast<const float*>(p) + i);
    } else {
      return widen(_mm256_maskz_loadu_epi16(first(n), static_cast<const uint16_t*>(p) + i), T);
    }
  }
  static V loadf(const float* p) { return _mm512_loadu_ps(p); }
  static void storef(float* p, V v) { _mm512_storeu_ps(p, v); }

  // 16 gradients to 16-bit values: f16 and bf16 rounded to nearest even
  // (as f32_to_f16 / f32_to_bf16; gradients are finite here).
  template <DType T>
  static __m256i narrow(V v) {
    if constexpr (T == DType::F16) {
      return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    } else {
      const __m512i b = _mm512_castps_si512(v);
      const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
      const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
      return _mm512_cvtepi32_epi16(r);
    }
  }
  template <DType T>
  static void store(void* p, int64_t i, V v) {
    if constexpr (T == DType::F32) {
      _mm512_storeu_ps(static_cast<float*>(p) + i, v);
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<uint16_t*>(p) + i), narrow<T>(v));
    }
  }
  template <DType T>
  static void store_n(void* p, int64_t i, int n, V v) {
    if constexpr (T == DType::F32) {
      _mm512_mask_storeu_ps(static_cast<float*>(p) + i, first(n), v);
    } else {
      _mm256_mask_storeu_epi16(static_cast<uint16_t*>(p) + i, first(n), narrow<T>(v));
    }
  }

  // Non-temporal stores of one gradient row (which starts 16-byte aligned).
  // 16-bit gradients: two 16-byte stores per vector, the tail stored
  // normally. f32: whole 64-byte lines. A row starting o floats past a line
  // boundary writes its first 16 − o floats as 16-byte streams; after that,
  // each vector completes the line the previous one began (the last o floats
  // of the previous vector and the first 16 − o of this one, joined by one
  // permute), and the last line's floats go out at the end of the row.
  template <DType T>
  struct Streamer {
    void* row;
    int o = 0;           // f32: floats between the line boundary and the row start (0, 4, 8 or 12)
    bool begun = false;  // f32, o > 0: a vector was put
    __m512 prev;         // the last vector put
    __m512i idx;         // the join: lanes 16 − o .. 15 of prev, then lanes 0 .. 15 − o of the next
    __m512 tail_v;       // the row's partial vector, if any
    int tail_n = 0;

    Streamer(void* g, int64_t base, bool on)
        : row(static_cast<uint8_t*>(g) + base * (T == DType::F32 ? 4 : 2)), prev(_mm512_setzero_ps()), tail_v(prev) {
      if (T == DType::F32 && on) o = static_cast<int>((reinterpret_cast<uintptr_t>(row) & 63) / 4);
      idx = _mm512_add_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(16 - o));
    }
    // Floats [0, n) of src to dst (16-byte aligned): 16-byte streams, then
    // ordinary stores for the last n % 4.
    static void write(float* dst, const float* src, int n) {
      int i = 0;
      for (; i + 4 <= n; i += 4) _mm_stream_ps(dst + i, _mm_load_ps(src + i));
      for (; i < n; ++i) dst[i] = src[i];
    }
    void put(int64_t j, V g) {
      if constexpr (T != DType::F32) {
        const __m256i h = narrow<T>(g);
        uint16_t* q = static_cast<uint16_t*>(row) + j;
        _mm_stream_si128(reinterpret_cast<__m128i*>(q), _mm256_castsi256_si128(h));
        _mm_stream_si128(reinterpret_cast<__m128i*>(q + 8), _mm256_extracti128_si256(h, 1));
      } else {
        float* f = static_cast<float*>(row);
        if (o == 0) {
          _mm512_stream_ps(f + j, g);
        } else if (begun) {
          _mm512_stream_ps(f + j - o, _mm512_permutex2var_ps(prev, idx, g));
          prev = g;
        } else {
          alignas(64) float buf[16];
          _mm512_store_ps(buf, g);
          write(f, buf, 16 - o);
          prev = g;
          begun = true;
        }
      }
    }
    // The row's last n (< 16) gradients, at element `full`.
    void tail(int64_t full, V g, int n) {
      if constexpr (T != DType::F32) {
        store_n<T>(row, full, n, g);
      } else {
        tail_v = g;
        tail_n = n;
      }
    }
    // Once the row is done (`full` floats put, then the tail).
    void flush(int64_t full) {
      if constexpr (T == DType::F32) {
        alignas(64) float buf[32];
        int n = 0;
        if (begun) {  // the last o floats of the last full vector are pending
          alignas(64) float pv[16];
          _mm512_store_ps(pv, prev);
          for (int l = 0; l < o; ++l) buf[l] = pv[16 - o + l];
          n = o;
        }
        alignas(64) float tv[16];
        _mm512_store_ps(tv, tail_v);
        for (int l = 0; l < tail_n; ++l) buf[n + l] = tv[l];
        write(static_cast<float*>(row) + full - n, buf, n + tail_n);
      } else {
        (void)full;
      }
    }
  };

  // ---- per-lane double sums -------------------------------------------------

  static D dzero() { return {_mm512_setzero_pd(), _mm512_setzero_pd()}; }
  static __m512d lo_pd(V v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
  static __m512d hi_pd(V v) { return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))); }
  static void dadd(D& s, V v) {
    s.lo = _mm512_add_pd(s.lo, lo_pd(v));
    s.hi = _mm512_add_pd(s.hi, hi_pd(v));
  }
  static void dmul(D& s, V f) {
    s.lo = _mm512_mul_pd(s.lo, lo_pd(f));
    s.hi = _mm512_mul_pd(s.hi, hi_pd(f));
  }
  static void dstore(double* out, const D& s) {
    _mm512_storeu_pd(out, s.lo);
    _mm512_storeu_pd(out + 8, s.hi);
  }

  static void prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1); }
  static void sfence() { _mm_sfence(); }
};

}  // namespace

DistillRowFn distill_row_fn(const DistillArgs& a) { return dsimd::row_fn<Isa>(a); }

bool exp_array(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, Isa::exp(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 k = Isa::first(static_cast<int>(n - i));
    _mm512_mask_storeu_ps(y + i, k, Isa::exp(_mm512_maskz_loadu_ps(k, x + i)));
  }
  return true;
}

bool log1p01_array(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, Isa::log1p01(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 k = Isa::first(static_cast<int>(n - i));
    _mm512_mask_storeu_ps(y + i, k, Isa::log1p01(_mm512_maskz_loadu_ps(k, x + i)));
  }
  return true;
}

}  // namespace avx512
}  // namespace st

#else  // built without AVX-512 flags (non-x86): no AVX-512 kernel

namespace st {
namespace avx512 {
DistillRowFn distill_row_fn(const DistillArgs&) { return nullptr; }
bool exp_array(const float*, float*, int64_t) { return false; }
bool log1p01_array(const float*, float*, int64_t) { return false; }
}  // namespace avx512
}  // namespace st

#endif
