// The scalar reference: the specification of the distillation loss. One
// row at a time, element by element, over the shared arithmetic of
// distill_math.h (the functions the CUDA kernels run):
//
//   sweep 1   online max and log-sum-exp of z/T, z and t/T (reads the row
//             from memory; checks the inputs)
//   sweep 1b  reverse-kl and jsd only: D (and KL(q‖m)), which their
//             gradients need before they can be written
//   sweep 2   the gradient (and forward-kl's D), then the values at the
//             label and the top-k indices
//
// Sweeps 1b and 2 re-read a row that sweep 1 left in the cache (a 32000-
// logit f32 row pair is 250 KiB), so memory sees one pass per row. Each
// element's arithmetic is f32; sums (of exps, of loss terms) accumulate in
// double.
#include <vector>

#include "distill_kernels.h"

namespace st {

Special* special_scratch(int64_t n) {
  thread_local std::vector<Special> buf;
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(static_cast<size_t>(n));
  return buf.data();
}

float* float_scratch(int64_t n) {
  thread_local std::vector<float> buf;
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(static_cast<size_t>(n));
  return buf.data();
}

float* sweep_scratch(int64_t n) {
  thread_local std::vector<float> buf;
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(static_cast<size_t>(n));
  return buf.data();
}

double topk_divergence(const DistillArgs& a, const DistillPlan& p, int64_t row, const dm::RowStats& rs,
                       float* p_out, RowError* err) {
  const int64_t k = a.k;
  const float* lp = a.topk_logprobs + row * k;
  const int32_t* idx = a.topk_indices + row * k;
  dm::Lse l = dm::lse_init();
  for (int64_t i = 0; i < k; ++i) {
    if (!dm::teacher_ok(lp[i])) {
      *err = RowError::NonFinite;
      return 0;
    }
    dm::lse_push(l, lp[i], p.c.inv_t);
  }
  if (!(l.m > dm::neg_inf())) {
    *err = RowError::NoTeacher;
    return 0;
  }
  const float ls = dm::log_sum(l.s);
  double d = 0;
  for (int64_t i = 0; i < k; ++i) {
    const float lpi = dm::floor_log((lp[i] - l.m) * p.c.inv_t) - ls;
    const float pi = dm::exp32(lpi);
    if (p_out) p_out[i] = pi;
    const float z = dm::load_logit(a.student.data, a.student.dtype, row * a.student.cols + idx[i]);
    d += dm::kl_term(pi, lpi, dm::log_q(rs, p.c, z));
  }
  return d;
}

namespace {

// The gradient at column j, with the one-hot term `onehot` and, for a
// top-k teacher, teacher probability `ptk`.
float special_value(const DistillArgs& a, const DistillPlan& p, int64_t row, const dm::RowStats& rs, float kl,
                    int64_t j, float onehot, float ptk) {
  const int64_t off = row * a.student.cols + j;
  const float z = dm::load_logit(a.student.data, a.student.dtype, off);
  const float t = p.term == dm::TeacherTerm::Given ? 0.0f : dm::load_logit(a.teacher.data, a.teacher.dtype, off);
  return dm::grad_element(p.c, rs, p.term, p.ce, p.t1, z, t, ptk, kl, onehot);
}

}  // namespace

int64_t row_specials(const DistillArgs& a, const DistillPlan& p, int64_t row, const dm::RowStats& rs, float kl,
                     const float* topk_p, Special* out) {
  int64_t n = 0;
  const int64_t y = a.labels ? a.labels[row] : -1;
  bool label_done = !p.ce || y < 0;
  if (p.topk && p.kd) {
    const int32_t* idx = a.topk_indices + row * a.k;
    for (int64_t i = 0; i < a.k; ++i) {
      const bool at_label = idx[i] == y && p.ce;
      out[n++] = {idx[i], special_value(a, p, row, rs, kl, idx[i], at_label ? 1.0f : 0.0f, topk_p[i])};
      if (at_label) label_done = true;
    }
  }
  if (!label_done) out[n++] = {y, special_value(a, p, row, rs, kl, y, 1.0f, 0.0f)};
  return n;
}

void write_specials(const DistillArgs& a, int64_t row, const Special* s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dm::store_grad(a.grad, a.student.dtype, row * a.student.cols + s[i].col, s[i].g);
}

void zero_grad_row(const DistillArgs& a, int64_t row) {
  const int64_t cols = a.student.cols;
  for (int64_t j = 0; j < cols; ++j) dm::store_grad(a.grad, a.student.dtype, row * cols + j, 0.0f);
}

namespace ref {

RowOut distill_row(const DistillArgs& a, const DistillPlan& p, int64_t row) {
  RowOut out;
  const int64_t cols = a.student.cols, base = row * cols;
  if (a.labels && a.labels[row] == a.ignore_index) {
    if (p.grad) zero_grad_row(a, row);
    return out;
  }
  const dm::Coeffs& c = p.c;
  const bool dense = p.kd && !p.topk;
  const void* zs = a.student.data;
  const void* ts = a.teacher.data;
  const DType zt = a.student.dtype, tt = a.teacher.dtype;

  // Sweep 1: online max / log-sum-exp; input checks.
  dm::Lse u = dm::lse_init(), z1 = dm::lse_init(), t = dm::lse_init();
  bool ok = true;
  for (int64_t j = 0; j < cols; ++j) {
    const float z = dm::load_logit(zs, zt, base + j);
    ok = ok && dm::student_ok(z);
    dm::lse_push(u, z, c.inv_t);
    if (p.ce && !p.t1) dm::lse_push(z1, z, 1.0f);
    if (dense) {
      const float tv = dm::load_logit(ts, tt, base + j);
      ok = ok && dm::teacher_ok(tv);
      dm::lse_push(t, tv, c.inv_t);
    }
  }
  if (!ok) {
    out.error = RowError::NonFinite;
    return out;
  }
  if (dense && !(t.m > dm::neg_inf())) {
    out.error = RowError::NoTeacher;
    return out;
  }
  dm::RowStats rs;
  rs.mz = u.m;
  rs.lsu = dm::log_sum(u.s);
  rs.lsz = p.t1 ? rs.lsu : p.ce ? dm::log_sum(z1.s) : 0.0f;
  rs.mt = dense ? t.m : 0.0f;
  rs.lst = dense ? dm::log_sum(t.s) : 0.0f;

  double ce = 0;
  if (p.ce) {
    const float zy = dm::load_logit(zs, zt, base + a.labels[row]);
    ce = static_cast<double>(rs.lsz) - static_cast<double>(zy - rs.mz);
  }

  // The divergence, where the gradient needs it first.
  double d = 0;
  float kl = 0;  // reverse-kl: KL(q‖p); jsd: KL(q‖m)
  float* topk_p = nullptr;
  if (p.kd && p.topk) {
    topk_p = float_scratch(a.k);
    RowError e = RowError::Ok;
    d = topk_divergence(a, p, row, rs, topk_p, &e);
    if (e != RowError::Ok) {
      out.error = e;
      return out;
    }
  } else if (dense && p.div != Divergence::ForwardKL) {
    double kpm = 0, kqm = 0;
    for (int64_t j = 0; j < cols; ++j) {
      const float lq = dm::log_q(rs, c, dm::load_logit(zs, zt, base + j));
      const float lp = dm::log_p(rs, c, dm::load_logit(ts, tt, base + j));
      const float q = dm::exp32(lq);
      if (p.div == Divergence::ReverseKL) {
        kqm += dm::kl_term(q, lq, lp);
      } else {
        const float lm = dm::log_m(c, lp, lq);
        kpm += dm::kl_term(dm::exp32(lp), lp, lm);
        kqm += dm::kl_term(q, lq, lm);
      }
    }
    kl = static_cast<float>(kqm);
    d = p.div == Divergence::ReverseKL ? kqm : static_cast<double>(a.beta) * kpm + (1.0 - a.beta) * kqm;
  }

  Special* specials = nullptr;
  int64_t n_specials = 0;
  if (p.grad) {
    specials = special_scratch(a.k + 1);
    n_specials = row_specials(a, p, row, rs, kl, topk_p, specials);
  }

  // Sweep 2: the gradient without the one-hot and top-k terms (written
  // afterwards), and forward-kl's divergence.
  const bool forward_dense = dense && p.div == Divergence::ForwardKL;
  if (p.grad || forward_dense) {
    double dfw = 0;
    for (int64_t j = 0; j < cols; ++j) {
      const float z = dm::load_logit(zs, zt, base + j);
      const float lq = dm::log_q(rs, c, z);
      const float q = dm::exp32(lq);
      const float s = !p.ce ? 0.0f : p.t1 ? q : dm::exp32(dm::log_s(rs, z));
      float g;
      if (!dense) {
        g = dm::grad_forward(c, q, 0.0f, s, 0.0f);
      } else {
        const float lp = dm::log_p(rs, c, dm::load_logit(ts, tt, base + j));
        if (p.div == Divergence::ForwardKL) {
          const float pj = dm::exp32(lp);
          dfw += dm::kl_term(pj, lp, lq);
          g = dm::grad_forward(c, q, pj, s, 0.0f);
        } else if (p.div == Divergence::ReverseKL) {
          g = dm::grad_reverse(c, q, lq, lp, kl, s, 0.0f);
        } else {
          g = dm::grad_jsd(c, q, lq, dm::log_m(c, lp, lq), kl, s, 0.0f);
        }
      }
      if (p.grad) dm::store_grad(a.grad, zt, base + j, g);
    }
    if (forward_dense) d = dfw;
    if (p.grad) write_specials(a, row, specials, n_specials);
  }

  out.loss = (p.kd ? p.kd_weight * d : 0.0) + (p.ce ? p.ce_weight * ce : 0.0);
  if (!std::isfinite(out.loss)) out.error = RowError::Overflow;
  return out;
}

}  // namespace ref
}  // namespace st
