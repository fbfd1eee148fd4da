// quantize / dequantize / quantizationError: argument objects -> core structs.
#include "../core/quant/quant.h"

#include "job.h"

namespace st {
namespace addon {

namespace {

DType get_dtype(const Napi::Object& o, const char* key) {
  const int64_t v = get_int(o, key);
  if (v < 0 || v > 6) throw_error(o.Env(), Code::DType, std::string("unknown dtype code for ") + key);
  return static_cast<DType>(v);
}

QFormat get_format(const Napi::Object& o) {
  const int64_t v = get_int(o, "format");
  if (v < 0 || v >= kQFormatCount) throw_error(o.Env(), Code::Value, "unknown quantization format code");
  return static_cast<QFormat>(v);
}

Kernel get_kernel(const Napi::Object& o) {
  const int64_t v = get_int(o, "kernel");
  if (v < 0 || v > 4) throw_error(o.Env(), Code::Value, "unknown kernel code");
  return static_cast<Kernel>(v);
}

// The shape-dependent byte counts of the quantized buffers, overflow-checked.
struct QBytes { uint64_t data, scales, zeros; };

QBytes quant_bytes(Napi::Env env, QFormat f, int64_t rows, int64_t cols, int64_t group, DType scale_dtype) {
  if (rows < 0 || cols < 0) throw_error(env, Code::Shape, "negative dimension");
  const QFormatTraits& tr = qformat_traits(f);
  if (!tr.ggml && (group <= 0 || cols % group != 0)) {
    throw_error(env, Code::Shape, "row length " + std::to_string(cols) + " is not a multiple of the group size " +
                                      std::to_string(group));
  }
  if (tr.ggml && cols % tr.block != 0) {
    throw_error(env, Code::Shape, std::string(tr.name) + " needs rows whose length is a multiple of " +
                                      std::to_string(tr.block) + ", got " + std::to_string(cols));
  }
  checked_mul(env, static_cast<uint64_t>(cols), tr.bits, "row");
  const QuantSizes sz = quant_sizes(f, cols, group);
  QBytes b;
  b.data = checked_mul(env, static_cast<uint64_t>(rows), static_cast<uint64_t>(sz.data_row_bytes), "data");
  const uint64_t groups = tr.ggml ? 0 : checked_mul(env, static_cast<uint64_t>(rows), static_cast<uint64_t>(sz.groups_per_row), "scales");
  b.scales = checked_mul(env, groups, dtype_size(scale_dtype), "scales");
  b.zeros = groups;
  return b;
}

// quantizationError's result object (and quantize's, when it measures).
Napi::Object error_sums(Napi::Env env, const ErrorStats& s) {
  Napi::Object r = Napi::Object::New(env);
  r.Set("sumSqErr", s.sum_sq_err);
  r.Set("sumSqRef", s.sum_sq_ref);
  r.Set("sumSqDeq", s.sum_sq_deq);
  r.Set("dot", s.dot);
  r.Set("maxAbs", s.max_abs);
  r.Set("count", static_cast<double>(s.count));
  return r;
}

class QuantizeJob : public Job {
 public:
  QuantizeJob(Napi::Env env, const Napi::Object& o) {
    a_.src.dtype = get_dtype(o, "srcDtype");
    a_.src.rows = get_int(o, "rows");
    a_.src.cols = get_int(o, "cols");
    a_.format = get_format(o);
    a_.group = get_int(o, "group");
    a_.symmetric = get_bool(o, "symmetric");
    a_.scale_dtype = get_dtype(o, "scaleDtype");
    a_.search = static_cast<Search>(get_int(o, "search") == 1 ? 1 : 0);
    a_.non_finite = static_cast<NonFinite>(get_int(o, "nonFinite") == 1 ? 1 : 0);
    a_.kernel = get_kernel(o);
    a_.threads = static_cast<int>(get_int(o, "threads"));
    if (!is_float_dtype(a_.src.dtype)) {
      throw_error(env, Code::DType, std::string("input must be f32, f16 or bf16, got ") + dtype_name(a_.src.dtype));
    }
    const QBytes b = quant_bytes(env, a_.format, a_.src.rows, a_.src.cols, a_.group, a_.scale_dtype);
    const uint64_t n = checked_mul(env, static_cast<uint64_t>(a_.src.rows), static_cast<uint64_t>(a_.src.cols), "input");
    a_.src.data = pin(env, o.Get("src"), "input", checked_mul(env, n, dtype_size(a_.src.dtype), "input"));
    a_.importance = static_cast<const float*>(pin_optional(env, o.Get("importance"), "importance", static_cast<uint64_t>(a_.src.cols) * 4));
    a_.data = static_cast<uint8_t*>(pin_output(env, o.Get("data"), "data", b.data));
    const bool ggml = qformat_traits(a_.format).ggml;
    if (!ggml) a_.scales = pin_output(env, o.Get("scales"), "scales", b.scales);
    if (!ggml && !a_.symmetric) a_.zeros = static_cast<int8_t*>(pin_output(env, o.Get("zeros"), "zeros", b.zeros));
    // The error statistics of the result against the input, each row measured right after it is quantized.
    measure_ = o.Has("measureError") && get_bool(o, "measureError");
  }
  Status run() override { return quantize(a_, measure_ ? &stats_ : nullptr); }
  Napi::Value result(Napi::Env env) override { return measure_ ? error_sums(env, stats_) : env.Undefined(); }

 private:
  QuantizeArgs a_;
  bool measure_ = false;
  ErrorStats stats_;
};

// Shared by dequantize and quantizationError: the quantized operand.
DequantizeArgs read_quantized(Napi::Env env, Job* job, const Napi::Object& o) {
  DequantizeArgs d;
  d.format = get_format(o);
  d.rows = get_int(o, "rows");
  d.cols = get_int(o, "cols");
  d.group = get_int(o, "group");
  d.scale_dtype = get_dtype(o, "scaleDtype");
  d.kernel = get_kernel(o);
  d.threads = static_cast<int>(get_int(o, "threads"));
  const QBytes b = quant_bytes(env, d.format, d.rows, d.cols, d.group, d.scale_dtype);
  d.data = static_cast<const uint8_t*>(job->pin(env, o.Get("data"), "data", b.data));
  if (!qformat_traits(d.format).ggml) {
    d.scales = job->pin(env, o.Get("scales"), "scales", b.scales);
    d.zeros = static_cast<const int8_t*>(job->pin_optional(env, o.Get("zeros"), "zeros", b.zeros));
  }
  return d;
}

class DequantizeJob : public Job {
 public:
  DequantizeJob(Napi::Env env, const Napi::Object& o) {
    d_ = read_quantized(env, this, o);
    out_dtype_ = get_dtype(o, "outDtype");
    if (!is_float_dtype(out_dtype_)) throw_error(env, Code::DType, "output dtype must be f32, f16 or bf16");
    const uint64_t n = checked_mul(env, static_cast<uint64_t>(d_.rows), static_cast<uint64_t>(d_.cols), "output");
    out_ = pin_output(env, o.Get("out"), "output", checked_mul(env, n, dtype_size(out_dtype_), "output"));
  }
  Status run() override { return dequantize(d_, out_, out_dtype_); }

 private:
  DequantizeArgs d_;
  void* out_ = nullptr;
  DType out_dtype_ = DType::F32;
};

class ErrorJob : public Job {
 public:
  ErrorJob(Napi::Env env, const Napi::Object& o) {
    d_ = read_quantized(env, this, o);
    orig_.dtype = get_dtype(o, "origDtype");
    if (!is_float_dtype(orig_.dtype)) throw_error(env, Code::DType, "original must be f32, f16 or bf16");
    orig_.rows = d_.rows;
    orig_.cols = d_.cols;
    const uint64_t n = checked_mul(env, static_cast<uint64_t>(d_.rows), static_cast<uint64_t>(d_.cols), "original");
    orig_.data = pin(env, o.Get("orig"), "original", checked_mul(env, n, dtype_size(orig_.dtype), "original"));
  }
  Status run() override { return quantization_error(orig_, d_, &stats_); }
  Napi::Value result(Napi::Env env) override { return error_sums(env, stats_); }

 private:
  DequantizeArgs d_;
  MatrixView orig_;
  ErrorStats stats_;
};

}  // namespace

void register_quant(Napi::Env env, Napi::Object exports) {
  exports.Set("quantize", Napi::Function::New(env, run_job<QuantizeJob>, "quantize"));
  exports.Set("dequantize", Napi::Function::New(env, run_job<DequantizeJob>, "dequantize"));
  exports.Set("quantizationError", Napi::Function::New(env, run_job<ErrorJob>, "quantizationError"));
}

}  // namespace addon
}  // namespace st
