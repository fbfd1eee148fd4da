// Per-element arithmetic of the distillation loss: the specification. The
// scalar reference (distill_ref.cc) runs these functions over each row, the
// CUDA kernels (distill.cu) run them per thread, and the AVX2 kernels
// (distill_avx2.cc) mirror them operation for operation on 8 lanes, with a
// polynomial exp (hence a stated tolerance instead of bit identity).
//
// Conventions (FORMATS.md "Distillation loss"):
//   u = z/T, v = t/T; q = softmax(u), p = softmax(v), s = softmax(z)
//   L_row = α·T²·D + (1 − α)·(log Σ exp z − z_y)
//   forward-kl  D = KL(p‖q)        dD/du = q − p
//   reverse-kl  D = KL(q‖p)        dD/du = q ⊙ (log q − log p − D)
//   jsd         D = β·KL(p‖m) + (1 − β)·KL(q‖m), m = βp + (1 − β)q
//                                  dD/du = (1 − β)·q ⊙ (log q − log m − KL(q‖m))
//   dL/dz = α·T·dD/du + (1 − α)·(s − onehot(y)), times 1/kept rows for "mean"
//
// Every log-probability is computed from differences to the row maximum,
// (x − max)/T − log Σ exp((x' − max)/T), never as log(softmax): no overflow
// for logits of ±1e4, and no precision lost to the size of the logits. A
// teacher log-probability is floored at kLogFloor, where exp() of an f32 is
// already 0: an −Infinity teacher logit has p = 0 (and contributes 0 to
// every sum) and a finite log p, so no 0·∞ = NaN appears anywhere.
#pragma once
#include <cmath>
#include <cstdint>

#include "../numeric.h"
#include "../tensor.h"

namespace st {
namespace dm {

// exp(x) of an f32 rounds to 0 for x < −103.97 (e^x < 2^−150); log(0) is
// taken to be this.
constexpr float kLogFloor = -104.0f;

ST_HD float neg_inf() { return bits_f32(0xff800000u); }

// max(x, kLogFloor), with a NaN becoming the floor (x86 MAXPS(x, floor)
// semantics, which the AVX2 twin uses): (−inf) − (−inf) is NaN.
ST_HD float floor_log(float x) { return x > kLogFloor ? x : kLogFloor; }

ST_HD float exp32(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  return std::exp(x);
#endif
}

ST_HD float log32(float x) {
#if defined(__CUDA_ARCH__)
  return logf(x);
#else
  return std::log(x);
#endif
}

ST_HD float log1p32(float x) {
#if defined(__CUDA_ARCH__)
  return log1pf(x);
#else
  return std::log1p(x);
#endif
}

ST_HD float exp_floor(float x) { return exp32(floor_log(x)); }

// ---------------------------------------------------------------------------
// Online log-sum-exp. `m` is the running maximum of the raw logits x, `s`
// the running Σ exp((x − m)·inv_t): the scaled stream u = x/T shares the
// maximum of the raw one (T > 0), and differences are taken before scaling.
// Each exp is an f32; their sum is kept in double, so the log-sum-exp does
// not drift with the row length (a 128k-term f32 sum would lose ~√V ulps).

struct Lse {
  float m;
  double s;
};

ST_HD Lse lse_init() { return {neg_inf(), 0.0}; }

ST_HD void lse_push(Lse& a, float x, float inv_t) {
  if (x > a.m) {
    a.s = a.s * static_cast<double>(exp_floor((a.m - x) * inv_t));
    a.m = x;
  }
  a.s = a.s + static_cast<double>(exp_floor((x - a.m) * inv_t));
}

// Combines two partial sums (threads, lanes). Two empty ones stay empty.
ST_HD Lse lse_merge(Lse a, Lse b, float inv_t) {
  const float m = a.m > b.m ? a.m : b.m;
  return {m, a.s * static_cast<double>(exp_floor((a.m - m) * inv_t)) + b.s * static_cast<double>(exp_floor((b.m - m) * inv_t))};
}

// log of a sum, rounded to f32 once.
ST_HD float log_sum(double s) {
#if defined(__CUDA_ARCH__)
  return static_cast<float>(log(s));
#else
  return static_cast<float>(std::log(s));
#endif
}

// ---------------------------------------------------------------------------
// One row's constants.

struct Coeffs {
  float inv_t;     // 1/T
  float a_t;       // α·T: weight of dD/du in dL/dz
  float a_t_jsd;   // α·T·(1 − β)
  float b;         // 1 − α: weight of the cross-entropy
  float scale;     // 1/kept rows ("mean") or 1
  float log_beta;  // log β, log(1 − β): jsd's mixture in log space
  float log_1mb;
};

ST_HD Coeffs make_coeffs(float temperature, float alpha, float beta, float scale) {
  Coeffs c;
  c.inv_t = 1.0f / temperature;
  c.a_t = alpha * temperature;
  c.a_t_jsd = c.a_t * (1.0f - beta);
  c.b = 1.0f - alpha;
  c.scale = scale;
  c.log_beta = log32(beta);
  c.log_1mb = log32(1.0f - beta);
  return c;
}

// The row's maxima and log-sum-exps, after the first sweep.
struct RowStats {
  float mz;   // max student logit
  float mt;   // max teacher logit (dense teacher)
  float lsu;  // log Σ exp((z − mz)/T)
  float lsz;  // log Σ exp(z − mz): the cross-entropy's softmax (= lsu when T = 1)
  float lst;  // log Σ exp((t − mt)/T), the teacher's
};

ST_HD float log_q(const RowStats& r, const Coeffs& c, float z) { return (z - r.mz) * c.inv_t - r.lsu; }
ST_HD float log_s(const RowStats& r, float z) { return (z - r.mz) - r.lsz; }
ST_HD float log_p(const RowStats& r, const Coeffs& c, float t) { return floor_log((t - r.mt) * c.inv_t) - r.lst; }

// log(β·p + (1 − β)·q) from log p and log q: log-add-exp, so it stays finite
// when both probabilities underflow.
ST_HD float log_m(const Coeffs& c, float lp, float lq) {
  const float x = c.log_beta + lp, y = c.log_1mb + lq;
  const float hi = x > y ? x : y, lo = x > y ? y : x;
  return hi + log1p32(exp32(lo - hi));
}

// w·(log w − log other): one term of KL(w‖other); 0 when w is 0 (log w is
// floored, never −inf, so this needs no special case).
ST_HD float kl_term(float w, float log_w, float log_other) { return w * (log_w - log_other); }

// dL/dz of one element. `onehot` is 1 at the label, else 0; `s` is unused
// (pass 0) when the cross-entropy weight is 0.
ST_HD float grad_forward(const Coeffs& c, float q, float p, float s, float onehot) {
  return (c.a_t * (q - p) + c.b * (s - onehot)) * c.scale;
}
ST_HD float grad_reverse(const Coeffs& c, float q, float lq, float lp, float kl_qp, float s, float onehot) {
  return (c.a_t * (q * ((lq - lp) - kl_qp)) + c.b * (s - onehot)) * c.scale;
}
ST_HD float grad_jsd(const Coeffs& c, float q, float lq, float lm, float kl_qm, float s, float onehot) {
  return (c.a_t_jsd * (q * ((lq - lm) - kl_qm)) + c.b * (s - onehot)) * c.scale;
}

// Which teacher term an element's gradient has.
enum class TeacherTerm : int32_t {
  Given = 0,    // p is given (a top-k teacher's probability, or 0 with no teacher term)
  Forward = 1,  // dense teacher, forward-kl
  Reverse = 2,  // dense teacher, reverse-kl (kl = KL(q‖p))
  Jsd = 3,      // dense teacher, jsd (kl = KL(q‖m))
};

// The whole gradient at one element from its logits z and t, once the row
// statistics are known: what the kernels write at the label and at top-k
// indices, after their dense sweep.
ST_HD float grad_element(const Coeffs& c, const RowStats& rs, TeacherTerm term, bool ce, bool t1, float z, float t,
                         float p_given, float kl, float onehot) {
  const float lq = log_q(rs, c, z);
  const float q = exp32(lq);
  const float s = !ce ? 0.0f : t1 ? q : exp32(log_s(rs, z));
  if (term == TeacherTerm::Given) return grad_forward(c, q, p_given, s, onehot);
  const float lp = log_p(rs, c, t);
  if (term == TeacherTerm::Reverse) return grad_reverse(c, q, lq, lp, kl, s, onehot);
  if (term == TeacherTerm::Jsd) return grad_jsd(c, q, lq, log_m(c, lp, lq), kl, s, onehot);
  return grad_forward(c, q, exp32(lp), s, onehot);
}

// ---------------------------------------------------------------------------
// Element access for the three input dtypes.

ST_HD float load_logit(const void* p, DType t, int64_t i) {
  if (t == DType::F32) return static_cast<const float*>(p)[i];
  const uint16_t h = static_cast<const uint16_t*>(p)[i];
  return t == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

ST_HD void store_grad(void* p, DType t, int64_t i, float v) {
  if (t == DType::F32) static_cast<float*>(p)[i] = v;
  else if (t == DType::F16) static_cast<uint16_t*>(p)[i] = f32_to_f16(v);
  else static_cast<uint16_t*>(p)[i] = f32_to_bf16(v);
}

// A student logit must be finite; a teacher logit finite or −Infinity.
ST_HD bool student_ok(float z) { return is_finite_bits(f32_bits(z)); }
ST_HD bool teacher_ok(float t) { return t < bits_f32(0x7f800000u); }

}  // namespace dm
}  // namespace st
