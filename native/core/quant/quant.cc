// Validation, kernel choice and threading for the quant room. The math is
// in quant_math.h / quant_search.h; the loops are in quant_ref.cc (scalar
// reference), quant_avx2.cc and quant.cu.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>
#include <vector>

#include "../cpu.h"
#include "quant_cuda.h"
#include "quant_kernels.h"
#include "quant_math.h"

namespace st {

namespace {

const QFormatTraits kTraits[] = {
    {"q4_0", 4, true, 32, 18},
    {"q4_1", 4, true, 32, 20},
    {"q8_0", 8, true, 32, 34},
    {"int4", 4, false, 0, 0},
    {"int8", 8, false, 0, 0},
    {"q5_0", 5, true, 32, 22},
    {"q5_1", 5, true, 32, 24},
    {"q2_k", 2, true, 256, 84},
    {"q3_k", 3, true, 256, 110},
    {"q4_k", 4, true, 256, 144},
    {"q5_k", 5, true, 256, 176},
    {"q6_k", 6, true, 256, 210},
};
static_assert(sizeof(kTraits) / sizeof(kTraits[0]) == kQFormatCount, "one traits row per QFormat");

bool valid_format(QFormat f) { return static_cast<int32_t>(f) >= 0 && static_cast<int32_t>(f) < kQFormatCount; }

// Rows per parallel chunk: enough work (~256 KiB of input) to amortise the
// hand-off, at least one row.
int64_t row_grain(int64_t cols, size_t elem_bytes) {
  const int64_t row_bytes = std::max<int64_t>(1, cols * static_cast<int64_t>(elem_bytes));
  return std::max<int64_t>(1, (256 * 1024) / row_bytes);
}

Status check_common(QFormat f, int64_t rows, int64_t cols, int64_t group, DType scale_dtype) {
  if (!valid_format(f)) return Status::Error(Code::Value, "unknown quantization format code");
  if (rows < 0 || cols < 0) return Status::Error(Code::Shape, "negative dimension");
  const QFormatTraits& tr = qformat_traits(f);
  if (tr.ggml) {
    if (cols % tr.block != 0) {
      return Status::Error(Code::Shape, std::string(tr.name) + " needs rows whose length is a multiple of " +
                                            std::to_string(tr.block) + ", got " + std::to_string(cols));
    }
  } else {
    if (group <= 0) return Status::Error(Code::Value, "group size must be positive, got " + std::to_string(group));
    if (cols % group != 0) {
      return Status::Error(Code::Shape, "row length " + std::to_string(cols) + " is not a multiple of the group size " +
                                            std::to_string(group));
    }
    if (scale_dtype != DType::F16 && scale_dtype != DType::BF16 && scale_dtype != DType::F32) {
      return Status::Error(Code::DType, std::string("scale dtype must be f16, bf16 or f32, got ") + dtype_name(scale_dtype));
    }
  }
  return Status::Ok();
}

QuantRowFn pick_quant(const QuantizeArgs& a, Status* st) {
  const bool avx2_ok = cpu_enabled().avx2 && avx2::quantize_row_fn(a) != nullptr;
  switch (a.kernel) {
    case Kernel::Reference: return ref::quantize_row;
    case Kernel::Avx2:
      if (!avx2_ok) { *st = Status::Error(Code::Unsupported, "the AVX2 kernel is not available on this CPU or build"); return nullptr; }
      return avx2::quantize_row_fn(a);
    // avx2::quantize_row_fn picks the AVX-512 rows (legacy GGUF batches,
    // searches) itself for Auto and Avx512 when the CPU has AVX-512
    case Kernel::Avx512:
      if (!avx2_ok || !cpu_enabled().avx512) {
        *st = Status::Error(Code::Unsupported, "the AVX-512 kernels are not available on this CPU or build");
        return nullptr;
      }
      return avx2::quantize_row_fn(a);
    case Kernel::Auto: return avx2_ok ? avx2::quantize_row_fn(a) : ref::quantize_row;
    case Kernel::Cuda: break;
  }
  *st = Status::Error(Code::Unsupported, "unknown kernel");
  return nullptr;
}

DequantRowFn pick_dequant(const DequantizeArgs& a, Status* st) {
  const bool avx2_ok = cpu_enabled().avx2 && avx2::dequantize_row_fn(a) != nullptr;
  switch (a.kernel) {
    case Kernel::Reference: return ref::dequantize_row;
    case Kernel::Avx2:
      if (!avx2_ok) { *st = Status::Error(Code::Unsupported, "the AVX2 kernel is not available on this CPU or build"); return nullptr; }
      return avx2::dequantize_row_fn(a);
    case Kernel::Avx512:  // the AVX2 kernels with their AVX-512 loops (the search)
      if (!avx2_ok || !cpu_enabled().avx512) {
        *st = Status::Error(Code::Unsupported, "the AVX-512 kernels are not available on this CPU or build");
        return nullptr;
      }
      return avx2::dequantize_row_fn(a);
    case Kernel::Auto: return avx2_ok ? avx2::dequantize_row_fn(a) : ref::dequantize_row;
    case Kernel::Cuda: break;
  }
  *st = Status::Error(Code::Unsupported, "unknown kernel");
  return nullptr;
}

float read_f32(const MatrixView& m, int64_t i) {
  if (m.dtype == DType::F32) return static_cast<const float*>(m.data)[i];
  const uint16_t h = static_cast<const uint16_t*>(m.data)[i];
  return m.dtype == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

void write_row(const float* row, int64_t n, void* out, int64_t offset, DType t) {
  if (t == DType::F32) {
    std::copy(row, row + n, static_cast<float*>(out) + offset);
  } else if (t == DType::F16) {
    uint16_t* o = static_cast<uint16_t*>(out) + offset;
    for (int64_t j = 0; j < n; ++j) o[j] = f32_to_f16(row[j]);
  } else {
    uint16_t* o = static_cast<uint16_t*>(out) + offset;
    for (int64_t j = 0; j < n; ++j) o[j] = f32_to_bf16(row[j]);
  }
}

float* row_scratch(int64_t n) {
  thread_local std::vector<float> buf;
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(static_cast<size_t>(n));
  return buf.data();
}

}  // namespace

const QFormatTraits& qformat_traits(QFormat f) { return kTraits[static_cast<int32_t>(f)]; }

bool ggml_weighted(QFormat f) { return qformat_traits(f).ggml && f != QFormat::Q8_0; }

Status non_finite_error(const MatrixView& src, int64_t flat) {
  const float v = read_f32(src, flat);
  // Read again to name it: a caller writing into the input during an async
  // call may have replaced it since.
  const char* what = std::isnan(v) ? "NaN" : std::isinf(v) ? (v > 0 ? "Infinity" : "-Infinity") : "since overwritten";
  return Status::Error(Code::Value, std::string("input has a non-finite value (") + what + ") at index [" +
                                        std::to_string(flat / src.cols) + ", " + std::to_string(flat % src.cols) +
                                        "] (flat " + std::to_string(flat) +
                                        "); pass nonFinite: 'zero' to quantize such values as 0");
}

QuantSizes quant_sizes(QFormat f, int64_t cols, int64_t group) {
  const QFormatTraits& tr = qformat_traits(f);
  if (tr.ggml) return {cols / tr.block, (cols / tr.block) * tr.block_bytes};
  const int64_t words = (cols * tr.bits + 31) / 32;
  return {group > 0 ? cols / group : 0, words * 4};
}

namespace {

// One row's error statistics against its original: the SIMD twin that
// dequantizes inside the sums where there is one (AVX-512 with Q8_0, Q4_0,
// Q4_1, Q4_K, Q5_K, Q6_K, INT8, INT4), else the row dequantized into
// scratch and summed. The sums' lane order is fixed (quant_math.h), so the
// AVX2 and AVX-512 twins' equal the reference's.
class RowError {
 public:
  RowError(const MatrixView& original, const DequantizeArgs& q) : orig_(original), q_(q) {
    if (q_.kernel == Kernel::Cuda) q_.kernel = Kernel::Auto;  // the statistics run on the CPU
  }
  Status init() {
    Status st;
    deq_ = pick_dequant(q_, &st);
    if (!deq_) return st;
    err_ = ref::error_row;
    if (q_.kernel != Kernel::Reference && cpu_enabled().avx2 && avx2::error_row_fn(q_.kernel) != nullptr) err_ = avx2::error_row_fn(q_.kernel);
    if (q_.kernel != Kernel::Reference && cpu_enabled().avx2) fused_ = avx2::error_deq_row_fn(q_, orig_.dtype);
    return Status::Ok();
  }
  // `scratch`: row_scratch(cols) of the calling thread (unused when fused).
  void row(int64_t r, float* scratch, ErrorStats* out) const {
    if (fused_) {
      fused_(orig_, q_, r, out);
      return;
    }
    deq_(q_, r, scratch);
    err_(orig_.data, orig_.dtype, r * q_.cols, scratch, q_.cols, out);
  }
  bool fused() const { return fused_ != nullptr; }
  const DequantizeArgs& args() const { return q_; }

 private:
  MatrixView orig_;
  DequantizeArgs q_;
  DequantRowFn deq_ = nullptr;
  ErrorRowFn err_ = nullptr;
  ErrorDeqRowFn fused_ = nullptr;
};

// Per-row partial sums in double, combined in row order: the result does
// not depend on the thread count, nor on whether the rows were summed
// right after quantizing them (quantize with `error`) or later.
void combine_rows(const std::vector<ErrorStats>& rows, int64_t count, ErrorStats* out) {
  *out = ErrorStats{};
  for (const ErrorStats& s : rows) {
    out->sum_sq_err += s.sum_sq_err;
    out->sum_sq_ref += s.sum_sq_ref;
    out->sum_sq_deq += s.sum_sq_deq;
    out->dot += s.dot;
    out->max_abs = std::max(out->max_abs, s.max_abs);
  }
  out->count = count;
}

// The quantized output of `a` as dequantize reads it.
DequantizeArgs output_of(const QuantizeArgs& a) {
  DequantizeArgs d;
  d.format = a.format;
  d.rows = a.src.rows;
  d.cols = a.src.cols;
  d.group = a.group;
  d.data = a.data;
  d.scales = a.scales;
  d.scale_dtype = a.scale_dtype;
  d.zeros = a.symmetric ? nullptr : a.zeros;
  d.kernel = a.kernel;
  d.threads = a.threads;
  return d;
}

}  // namespace

Status quantize(const QuantizeArgs& a, ErrorStats* error) {
  Status st = check_common(a.format, a.src.rows, a.src.cols, a.group, a.scale_dtype);
  if (!st.ok()) return st;
  if (!is_float_dtype(a.src.dtype)) {
    return Status::Error(Code::DType, std::string("input must be f32, f16 or bf16, got ") + dtype_name(a.src.dtype));
  }
  const QFormatTraits& tr = qformat_traits(a.format);
  if (!tr.ggml && !a.symmetric && !a.zeros) return Status::Error(Code::Value, "asymmetric quantization needs a zeros buffer");
  if (a.search == Search::Mse && tr.ggml && a.format != QFormat::Q4_0 && a.format != QFormat::Q4_1 &&
      a.format != QFormat::Q8_0) {
    return Status::Error(Code::Value, std::string("search 'mse' is implemented for q4_0, q4_1, q8_0, int4 and int8, not ") +
                                          tr.name + "; its importance-weighted quantizer is llama.cpp's (importance without search)");
  }
  if (a.search == Search::None && a.importance && !tr.ggml) {
    return Status::Error(Code::Value, "importance weights on int4/int8 need search 'mse'");
  }
  if (error) *error = ErrorStats{};
  if (a.src.rows == 0 || a.src.cols == 0) return Status::Ok();
  if (a.kernel == Kernel::Cuda) {
    st = cuda_quantize(a);
    if (!st.ok() || !error) return st;
    return quantization_error(a.src, output_of(a), error);
  }

  QuantRowFn fn = pick_quant(a, &st);
  if (!fn) return st;
  // With `error`: each row's statistics right after the row is quantized,
  // while its input and blocks are still in the core's cache.
  RowError measure(a.src, output_of(a));
  if (error) {
    st = measure.init();
    if (!st.ok()) return st;
  }
  std::vector<ErrorStats> rows(error ? static_cast<size_t>(a.src.rows) : 0);
  // First non-finite element (flat index), or INT64_MAX. A chunk may stop
  // early only once a smaller index is known, so the minimum is exact.
  std::atomic<int64_t> first_bad{INT64_MAX};
  const int64_t cols = a.src.cols;
  parallel_for(a.src.rows, row_grain(cols, dtype_size(a.src.dtype)), [&](int64_t r0, int64_t r1) {
    float* scratch = error && !measure.fused() ? row_scratch(cols) : nullptr;
    for (int64_t r = r0; r < r1; ++r) {
      if (first_bad.load(std::memory_order_relaxed) < r * cols) return;
      const int64_t bad = fn(a, r);
      if (bad >= 0) {
        int64_t flat = r * cols + bad, cur = first_bad.load();
        while (flat < cur && !first_bad.compare_exchange_weak(cur, flat)) {}
        return;
      }
      if (error) measure.row(r, scratch, &rows[static_cast<size_t>(r)]);
    }
  }, a.threads);
  const int64_t bad = first_bad.load();
  if (bad != INT64_MAX) return non_finite_error(a.src, bad);
  if (error) combine_rows(rows, a.src.rows * cols, error);
  return Status::Ok();
}

Status dequantize(const DequantizeArgs& a, void* out, DType out_dtype) {
  Status st = check_common(a.format, a.rows, a.cols, a.group, a.scale_dtype);
  if (!st.ok()) return st;
  if (!is_float_dtype(out_dtype)) {
    return Status::Error(Code::DType, std::string("output dtype must be f32, f16 or bf16, got ") + dtype_name(out_dtype));
  }
  if (a.rows == 0 || a.cols == 0) return Status::Ok();
  if (a.kernel == Kernel::Cuda) return cuda_dequantize(a, out, out_dtype);
  DequantRowFn fn = pick_dequant(a, &st);
  if (!fn) return st;
  parallel_for(a.rows, row_grain(a.cols, 4), [&](int64_t r0, int64_t r1) {
    if (out_dtype == DType::F32) {
      for (int64_t r = r0; r < r1; ++r) fn(a, r, static_cast<float*>(out) + r * a.cols);
      return;
    }
    float* tmp = row_scratch(a.cols);
    for (int64_t r = r0; r < r1; ++r) {
      fn(a, r, tmp);
      write_row(tmp, a.cols, out, r * a.cols, out_dtype);
    }
  }, a.threads);
  return Status::Ok();
}

Status quantization_error(const MatrixView& original, const DequantizeArgs& q, ErrorStats* out) {
  Status st = check_common(q.format, q.rows, q.cols, q.group, q.scale_dtype);
  if (!st.ok()) return st;
  if (original.rows != q.rows || original.cols != q.cols) {
    return Status::Error(Code::Shape, "original is [" + std::to_string(original.rows) + ", " +
                                          std::to_string(original.cols) + "] but the quantized tensor is [" +
                                          std::to_string(q.rows) + ", " + std::to_string(q.cols) + "]");
  }
  *out = ErrorStats{};
  if (q.rows == 0 || q.cols == 0) return Status::Ok();
  RowError measure(original, q);
  st = measure.init();
  if (!st.ok()) return st;
  std::vector<ErrorStats> rows(static_cast<size_t>(q.rows));
  parallel_for(q.rows, row_grain(q.cols, 4), [&](int64_t r0, int64_t r1) {
    float* scratch = measure.fused() ? nullptr : row_scratch(q.cols);
    for (int64_t r = r0; r < r1; ++r) measure.row(r, scratch, &rows[static_cast<size_t>(r)]);
  }, measure.args().threads);
  combine_rows(rows, q.rows * q.cols, out);
  return Status::Ok();
}

}  // namespace st
