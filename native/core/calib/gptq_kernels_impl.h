// The bodies of gptq_kernels.h, included by gptq_ref.cc, gptq_avx2.cc and
// gptq_avx512.cc (each compiles them with its own flags). Internal linkage
// only (an anonymous namespace and gptq_math.h's static functions): no
// symbol is shared between the copies, and no std:: template is used.
#include <cstdint>

#include "gptq_kernels.h"
#include "gptq_math.h"

namespace {

using st::DType;
using st::QFormat;
namespace gq = st::gq;

// Rows interleaved per pass: independent rounding chains for the core to
// overlap, and each row of V' loaded once for all of them.
constexpr int kRows = 4;

inline float weight_at(const st::gk::BlockArgs& a, int64_t i) {
  if (a.dtype == DType::F32) return static_cast<const float*>(a.weight)[i];
  const uint16_t h = static_cast<const uint16_t*>(a.weight)[i];
  return a.dtype == DType::F16 ? st::f16_to_f32(h) : st::bf16_to_f32(h);
}

// R rows starting at r: column by column, round, record, and update the
// block's later columns of each row's t.
template <int F, int R>
void rows_block(const st::gk::BlockArgs& a, int64_t r) {
  constexpr QFormat f = static_cast<QFormat>(F);
  const int64_t n = a.n, i1 = a.i1, b = a.i2 - a.i1;
  float* __restrict t0 = a.t + r * n + i1;
  float* __restrict t1 = R > 1 ? a.t + (r + 1) * n + i1 : t0;
  float* __restrict t2 = R > 2 ? a.t + (r + 2) * n + i1 : t0;
  float* __restrict t3 = R > 3 ? a.t + (r + 3) * n + i1 : t0;
  float* tr[4] = {t0, t1, t2, t3};
  double acc[R];
  for (int k = 0; k < R; ++k) acc[k] = 0;
  for (int64_t i = 0; i < b; ++i) {
    const int64_t col = a.perm[i1 + i];
    const int64_t gi = a.group_of[i1 + i];
    const int64_t ci = gi < 0 ? col / a.group : gi;
    float e[4] = {0, 0, 0, 0};
    for (int k = 0; k < R; ++k) {
      const int64_t row = r + k;
      const float w0 = gi < 0 ? 0.0f : weight_at(a, row * n + col);
      const float x = w0 + tr[k][i];
      const gq::Coder& c = a.coders[row * a.ngroups + ci];
      const int q = gq::code(f, c, x);
      const float deq = gq::dequant(f, c, q);
      a.codes[row * n + col] = static_cast<int8_t>(q);
      const double scaled = static_cast<double>(x - deq) * a.vdiag[i1 + i];  // the paper's (w̃ − q)/U_ii
      acc[k] += scaled * scaled;
      e[k] = w0 - deq;
      a.err[row * b + i] = e[k];
    }
    const float* __restrict v = a.vblock + i * b;  // v[j] = V'[i1 + i][i1 + j]
    const float e0 = e[0], e1 = e[1], e2 = e[2], e3 = e[3];
    // From i + 1 rounded down to a multiple of 16: whole vectors, no
    // scalar head. The columns below i + 1 are already rounded (their t is
    // not read again) and V' is zero there, so they only receive zeros.
    const int64_t j0 = (i + 1) & ~int64_t{15};
    if (R == 4) {
      for (int64_t j = j0; j < b; ++j) {
        const float vj = v[j];
        t0[j] += e0 * vj;
        t1[j] += e1 * vj;
        t2[j] += e2 * vj;
        t3[j] += e3 * vj;
      }
    } else {
      for (int64_t j = j0; j < b; ++j) t0[j] += e0 * v[j];
    }
  }
  for (int k = 0; k < R; ++k) a.row_err[r + k] += acc[k];
}

template <int F>
void block_rows(const st::gk::BlockArgs& a, int64_t r0, int64_t r1) {
  int64_t r = r0;
  for (; r + kRows <= r1; r += kRows) rows_block<F, kRows>(a, r);
  for (; r < r1; ++r) rows_block<F, 1>(a, r);
}

void k_block(const st::gk::BlockArgs& a, int64_t r0, int64_t r1) {
  switch (a.format) {
    case QFormat::Q4_0: return block_rows<static_cast<int>(QFormat::Q4_0)>(a, r0, r1);
    case QFormat::Q4_1: return block_rows<static_cast<int>(QFormat::Q4_1)>(a, r0, r1);
    case QFormat::Q8_0: return block_rows<static_cast<int>(QFormat::Q8_0)>(a, r0, r1);
    case QFormat::Q2_K: return block_rows<static_cast<int>(QFormat::Q2_K)>(a, r0, r1);
    case QFormat::Q3_K: return block_rows<static_cast<int>(QFormat::Q3_K)>(a, r0, r1);
    case QFormat::Q4_K: return block_rows<static_cast<int>(QFormat::Q4_K)>(a, r0, r1);
    case QFormat::Q5_K: return block_rows<static_cast<int>(QFormat::Q5_K)>(a, r0, r1);
    case QFormat::Q6_K: return block_rows<static_cast<int>(QFormat::Q6_K)>(a, r0, r1);
    case QFormat::Int8: return block_rows<static_cast<int>(QFormat::Int8)>(a, r0, r1);
    default: return block_rows<static_cast<int>(QFormat::Int4)>(a, r0, r1);
  }
}

const st::gk::Kernels kKernels = {k_block};

}  // namespace
