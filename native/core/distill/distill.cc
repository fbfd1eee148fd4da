// Validation, planning, kernel choice and threading for the distill room.
// The math is in distill_math.h; the row loops in distill_ref.cc (scalar
// reference), distill_simd.h (compiled as distill_avx2.cc and
// distill_avx512.cc) and distill.cu.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "../cpu.h"
#include "distill_cuda.h"
#include "distill_kernels.h"

namespace st {

namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string at(int64_t r, int64_t c) { return "[" + std::to_string(r) + ", " + std::to_string(c) + "]"; }

const char* describe_value(float v) {
  if (std::isnan(v)) return "NaN";
  return v > 0 ? "Infinity" : "-Infinity";
}

// Rows per parallel chunk: about 256 KiB of logits, at least one row.
int64_t row_grain(int64_t cols, size_t elem_bytes) {
  const int64_t row_bytes = std::max<int64_t>(1, cols * static_cast<int64_t>(elem_bytes));
  return std::max<int64_t>(1, (256 * 1024) / row_bytes);
}

struct Range {
  const uint8_t* begin;
  const uint8_t* end;
};

bool overlaps(Range a, Range b) { return a.begin < b.end && b.begin < a.end; }

Range range_of(const void* p, uint64_t bytes) {
  const uint8_t* b = static_cast<const uint8_t*>(p);
  return {b, b + bytes};
}

Status check_args(const DistillArgs& a) {
  const int64_t rows = a.student.rows, cols = a.student.cols;
  if (rows < 0 || cols < 0) return Status::Error(Code::Shape, "student: negative dimension");
  if (!is_float_dtype(a.student.dtype)) {
    return Status::Error(Code::DType, std::string("student must be f32, f16 or bf16, got ") + dtype_name(a.student.dtype));
  }
  if (rows > 0 && cols == 0) return Status::Error(Code::Shape, "student: rows of zero logits (the vocabulary dimension must be at least 1)");
  if (!(a.temperature > 0.0f && std::isfinite(a.temperature))) {
    return Status::Error(Code::Value, "temperature must be a finite number > 0, got " + num(a.temperature));
  }
  if (!(a.alpha >= 0.0f && a.alpha <= 1.0f)) return Status::Error(Code::Value, "alpha must be in [0, 1], got " + num(a.alpha));
  if (!(a.beta > 0.0f && a.beta < 1.0f)) return Status::Error(Code::Value, "beta must be in (0, 1), got " + num(a.beta));
  const int32_t div = static_cast<int32_t>(a.divergence), red = static_cast<int32_t>(a.reduction);
  if (div < 0 || div > 2) return Status::Error(Code::Value, "unknown divergence code " + std::to_string(div));
  if (red < 0 || red > 2) return Status::Error(Code::Value, "unknown reduction code " + std::to_string(red));

  const bool topk = a.teacher.data == nullptr && (a.topk_indices != nullptr || a.topk_logprobs != nullptr || a.k > 0);
  if (topk) {
    if (a.divergence != Divergence::ForwardKL) {
      return Status::Error(Code::Value, "a top-k teacher supports divergence 'forward-kl' only");
    }
    if (a.k < 1 || a.k > cols) {
      return Status::Error(Code::Shape, "top-k teacher: k must be in 1.." + std::to_string(cols) + " (the vocabulary), got " +
                                            std::to_string(a.k));
    }
    if (rows > 0 && (!a.topk_indices || !a.topk_logprobs)) return Status::Error(Code::Value, "top-k teacher: indices and logprobs are both required");
  } else {
    if (!is_float_dtype(a.teacher.dtype)) {
      return Status::Error(Code::DType, std::string("teacher must be f32, f16 or bf16, got ") + dtype_name(a.teacher.dtype));
    }
    if (a.teacher.rows != rows || a.teacher.cols != cols) {
      return Status::Error(Code::Shape, "teacher is [" + std::to_string(a.teacher.rows) + ", " + std::to_string(a.teacher.cols) +
                                            "] but the student is [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
    }
    if (rows > 0 && (!a.teacher.data || !a.student.data)) return Status::Error(Code::Value, "student and teacher need data");
  }
  if (!a.labels && a.alpha < 1.0f) {
    return Status::Error(Code::Value, "labels are required when alpha < 1 (the cross-entropy term needs them); alpha is " + num(a.alpha));
  }
  if (a.labels) {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t y = a.labels[r];
      if (y != a.ignore_index && (y < 0 || y >= cols)) {
        return Status::Error(Code::Value, "labels[" + std::to_string(r) + "] is " + std::to_string(y) + ": not a class in 0.." +
                                              std::to_string(cols - 1) + " nor ignoreIndex " + std::to_string(a.ignore_index));
      }
    }
  }
  if (topk && rows > 0) {
    // Indices in range and distinct within each row: each row stamps the
    // columns it uses.
    std::vector<int64_t> stamp(static_cast<size_t>(cols), -1);
    for (int64_t r = 0; r < rows; ++r) {
      const int32_t* idx = a.topk_indices + r * a.k;
      for (int64_t i = 0; i < a.k; ++i) {
        const int64_t j = idx[i];
        if (j < 0 || j >= cols) {
          return Status::Error(Code::Value, "teacher.indices" + at(r, i) + " is " + std::to_string(j) + ", outside the vocabulary 0.." +
                                                std::to_string(cols - 1));
        }
        if (stamp[static_cast<size_t>(j)] == r) {
          return Status::Error(Code::Value, "teacher.indices row " + std::to_string(r) + " holds " + std::to_string(j) +
                                                " twice; the top-k indices of a row must be distinct");
        }
        stamp[static_cast<size_t>(j)] = r;
      }
    }
  }
  if (a.grad && rows > 0) {
    const uint64_t n = static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols);
    const Range g = range_of(a.grad, n * dtype_size(a.student.dtype));
    const Range s = range_of(a.student.data, n * dtype_size(a.student.dtype));
    if (a.grad != a.student.data && overlaps(g, s)) {
      return Status::Error(Code::Value, "grad overlaps the student without being the same buffer (in place needs grad to be the student tensor itself)");
    }
    if (!topk && overlaps(g, range_of(a.teacher.data, n * dtype_size(a.teacher.dtype)))) {
      return Status::Error(Code::Value, "grad overlaps the teacher");
    }
    const uint64_t kn = static_cast<uint64_t>(rows) * static_cast<uint64_t>(a.k);
    if (topk && (overlaps(g, range_of(a.topk_indices, kn * 4)) || overlaps(g, range_of(a.topk_logprobs, kn * 4)))) {
      return Status::Error(Code::Value, "grad overlaps the top-k teacher");
    }
    if (a.labels && overlaps(g, range_of(a.labels, static_cast<uint64_t>(rows) * 4))) return Status::Error(Code::Value, "grad overlaps the labels");
    if (a.row_loss && overlaps(g, range_of(a.row_loss, static_cast<uint64_t>(rows) * 4))) return Status::Error(Code::Value, "grad overlaps rowLoss");
  }
  return Status::Ok();
}

DistillRowFn pick_kernel(const DistillArgs& a, Status* st) {
  const bool avx2_ok = cpu_enabled().avx2 && avx2::distill_row_fn(a) != nullptr;
  const bool avx512_ok = cpu_enabled().avx512 && avx512::distill_row_fn(a) != nullptr;
  switch (a.kernel) {
    case Kernel::Reference: return ref::distill_row;
    case Kernel::Avx2:
      if (!avx2_ok) {
        *st = Status::Error(Code::Unsupported, "the AVX2 kernel is not available on this CPU or build");
        return nullptr;
      }
      return avx2::distill_row_fn(a);
    case Kernel::Avx512:
      if (!avx512_ok) {
        *st = Status::Error(Code::Unsupported, cpu_features().avx512 && avx512::distill_row_fn(a) != nullptr
                                                   ? "the AVX-512 kernel is turned off (SLIMTENSOR_ISA); use 'avx2' or 'auto'"
                                                   : "the AVX-512 kernel is not available on this CPU or build; use 'avx2' or 'auto'");
        return nullptr;
      }
      return avx512::distill_row_fn(a);
    case Kernel::Auto:
      return avx512_ok ? avx512::distill_row_fn(a) : avx2_ok ? avx2::distill_row_fn(a) : ref::distill_row;
    case Kernel::Cuda: break;
  }
  *st = Status::Error(Code::Unsupported, "unknown kernel");
  return nullptr;
}

// Names the offending element of a failed row (rescans it once).
Status describe_row_error(const DistillArgs& a, const DistillPlan& p, int64_t r, RowError e) {
  const int64_t cols = a.student.cols;
  if (e == RowError::Overflow) {
    return Status::Error(Code::Value, "row " + std::to_string(r) + ": the loss is not finite although the inputs are (logits too large for f32 arithmetic at temperature " +
                                          num(a.temperature) + ")");
  }
  for (int64_t j = 0; j < cols; ++j) {
    const float z = dm::load_logit(a.student.data, a.student.dtype, r * cols + j);
    if (!dm::student_ok(z)) {
      return Status::Error(Code::Value, "student" + at(r, j) + " is " + describe_value(z) + "; student logits must be finite");
    }
  }
  if (p.topk) {
    for (int64_t i = 0; i < a.k; ++i) {
      const float l = a.topk_logprobs[r * a.k + i];
      if (!dm::teacher_ok(l)) {
        return Status::Error(Code::Value, "teacher.logprobs" + at(r, i) + " is " + describe_value(l) + "; logprobs must be finite or -Infinity");
      }
    }
    return Status::Error(Code::Value, "teacher.logprobs row " + std::to_string(r) + " is all -Infinity: no teacher distribution");
  }
  for (int64_t j = 0; j < cols; ++j) {
    const float t = dm::load_logit(a.teacher.data, a.teacher.dtype, r * cols + j);
    if (!dm::teacher_ok(t)) {
      return Status::Error(Code::Value, "teacher" + at(r, j) + " is " + describe_value(t) + "; teacher logits must be finite or -Infinity");
    }
  }
  return Status::Error(Code::Value, "teacher row " + std::to_string(r) + " is all -Infinity: no teacher distribution");
}

}  // namespace

DistillPlan distill_plan(const DistillArgs& a, int64_t kept) {
  DistillPlan p;
  const float scale = a.reduction == Reduction::Mean && kept > 0 ? static_cast<float>(1.0 / static_cast<double>(kept)) : 1.0f;
  p.c = dm::make_coeffs(a.temperature, a.alpha, a.beta, scale);
  p.div = a.divergence;
  p.kd = a.alpha > 0.0f;
  p.ce = a.alpha < 1.0f;
  p.t1 = a.temperature == 1.0f;
  p.topk = a.teacher.data == nullptr;
  p.grad = a.grad != nullptr;
  p.kd_weight = static_cast<double>(a.alpha) * static_cast<double>(a.temperature) * static_cast<double>(a.temperature);
  p.ce_weight = 1.0 - static_cast<double>(a.alpha);
  if (p.kd && !p.topk) {
    p.term = a.divergence == Divergence::ReverseKL ? dm::TeacherTerm::Reverse
             : a.divergence == Divergence::JSD    ? dm::TeacherTerm::Jsd
                                                  : dm::TeacherTerm::Forward;
  }
  return p;
}

Status distill_loss(const DistillArgs& a, DistillResult* out) {
  *out = DistillResult{};
  Status st = check_args(a);
  if (!st.ok()) return st;
  const int64_t rows = a.student.rows;

  int64_t kept = rows;
  if (a.labels) {
    kept = 0;
    for (int64_t r = 0; r < rows; ++r) kept += a.labels[r] != a.ignore_index;
  }
  out->kept_rows = kept;
  const DistillPlan p = distill_plan(a, kept);
  if (rows == 0) return Status::Ok();

  std::vector<RowOut> res(static_cast<size_t>(rows));
  if (a.kernel == Kernel::Cuda) {
    st = cuda_distill_rows(a, p, res.data());
    if (!st.ok()) return st;
  } else {
    DistillRowFn fn = pick_kernel(a, &st);
    if (!fn) return st;
    // The first failing row; a chunk stops once a smaller one is known.
    std::atomic<int64_t> first_bad{INT64_MAX};
    const size_t elem = dtype_size(a.student.dtype) + (p.topk ? 0 : dtype_size(a.teacher.dtype));
    parallel_for(rows, row_grain(a.student.cols, elem), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        if (first_bad.load(std::memory_order_relaxed) < r) return;
        const RowOut o = fn(a, p, r);
        res[static_cast<size_t>(r)] = o;
        if (o.error != RowError::Ok) {
          int64_t cur = first_bad.load();
          while (r < cur && !first_bad.compare_exchange_weak(cur, r)) {}
          return;
        }
      }
    }, a.threads);
    const int64_t bad = first_bad.load();
    if (bad != INT64_MAX) return describe_row_error(a, p, bad, res[static_cast<size_t>(bad)].error);
  }
  for (int64_t r = 0; r < rows; ++r) {
    const RowOut& o = res[static_cast<size_t>(r)];
    if (o.error != RowError::Ok) return describe_row_error(a, p, r, o.error);
  }
  // Row order, whatever the thread count: the total is deterministic.
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const double l = res[static_cast<size_t>(r)].loss;
    if (a.row_loss) a.row_loss[r] = static_cast<float>(l);
    total += l;
  }
  out->loss = a.reduction == Reduction::Mean ? (kept > 0 ? total / static_cast<double>(kept) : 0.0) : total;
  return Status::Ok();
}

}  // namespace st
