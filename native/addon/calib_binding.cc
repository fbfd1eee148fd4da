// gptq: argument object -> GptqArgs, a Job returning the statistics.
#include <algorithm>

#include "../core/calib/gptq.h"
#include "../core/calib/stats.h"

#include "job.h"

namespace st {
namespace addon {

namespace {

class GptqJob : public Job {
 public:
  GptqJob(Napi::Env env, const Napi::Object& o) {
    const int64_t dt = get_int(o, "weightDtype"), sdt = get_int(o, "scaleDtype"), f = get_int(o, "format"), k = get_int(o, "kernel");
    if (dt < 0 || dt > 2) throw_error(env, Code::DType, "weight must be f32, f16 or bf16");
    if (sdt < 0 || sdt > 2) throw_error(env, Code::DType, "scale dtype must be f32, f16 or bf16");
    if (f < 0 || f >= kQFormatCount) throw_error(env, Code::Value, "unknown quantization format code");
    if (k < 0 || k > 4) throw_error(env, Code::Value, "unknown kernel code");
    a_.weight.dtype = static_cast<DType>(dt);
    a_.weight.rows = get_int(o, "rows");
    a_.weight.cols = get_int(o, "cols");
    a_.format = static_cast<QFormat>(f);
    a_.group = get_int(o, "group");
    a_.symmetric = get_bool(o, "symmetric");
    a_.scale_dtype = static_cast<DType>(sdt);
    a_.act_order = get_bool(o, "actOrder");
    a_.imatrix = get_bool(o, "imatrix");
    a_.dampening = get_double(o, "dampening");
    a_.block = get_int(o, "blockSize");
    a_.measure = get_bool(o, "measure");
    a_.sweep = get_bool(o, "sweep");
    a_.kernel = static_cast<Kernel>(k);
    a_.threads = static_cast<int>(get_int(o, "threads"));
    const int64_t rows = a_.weight.rows, cols = a_.weight.cols;
    if (rows < 0 || cols < 0) throw_error(env, Code::Shape, "negative dimension");
    const QFormatTraits& tr = qformat_traits(a_.format);
    const int64_t group = tr.ggml ? tr.block : a_.group;
    if (group <= 0 || cols % group != 0) {
      throw_error(env, Code::Shape, "row length " + std::to_string(cols) + " is not a multiple of the group size " + std::to_string(group));
    }
    checked_mul(env, static_cast<uint64_t>(cols), static_cast<uint64_t>(cols), "hessian");
    const QuantSizes sz = quant_sizes(a_.format, cols, group);
    const uint64_t n = checked_mul(env, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), "weight");
    a_.weight.data = pin(env, o.Get("weight"), "weight", checked_mul(env, n, dtype_size(a_.weight.dtype), "weight"));
    a_.hessian = static_cast<const float*>(pin(env, o.Get("hessian"), "hessian", checked_mul(env, static_cast<uint64_t>(cols) * static_cast<uint64_t>(cols), 4, "hessian")));
    a_.data = static_cast<uint8_t*>(pin_output(env, o.Get("data"), "data", checked_mul(env, static_cast<uint64_t>(rows), static_cast<uint64_t>(sz.data_row_bytes), "data")));
    if (!tr.ggml) {
      const uint64_t groups = checked_mul(env, static_cast<uint64_t>(rows), static_cast<uint64_t>(sz.groups_per_row), "scales");
      a_.scales = pin_output(env, o.Get("scales"), "scales", checked_mul(env, groups, dtype_size(a_.scale_dtype), "scales"));
      if (!a_.symmetric) a_.zeros = static_cast<int8_t*>(pin_output(env, o.Get("zeros"), "zeros", groups));
    }
  }
  Status run() override { return gptq(a_, &stats_); }
  Napi::Value result(Napi::Env env) override {
    Napi::Object r = Napi::Object::New(env);
    r.Set("gptqError", stats_.gptq_error);
    r.Set("rtnError", stats_.rtn_error);
    r.Set("dampedError", stats_.damped_error);
    r.Set("damp", stats_.damp);
    r.Set("deadColumns", static_cast<double>(stats_.dead_columns));
    return r;
  }

 private:
  GptqArgs a_;
  GptqStats stats_;
};


// Activation statistics: x read, the sums and the Hessian added to (in-out),
// scratch overwritten.
class ActStatsJob : public Job {
 public:
  ActStatsJob(Napi::Env env, const Napi::Object& o) {
    const int64_t k = get_int(o, "kernel");
    if (k < 0 || k > 4) throw_error(env, Code::Value, "unknown kernel code");
    a_.rows = get_int(o, "rows");
    a_.width = get_int(o, "width");
    if (a_.rows < 0 || a_.width < 0) throw_error(env, Code::Shape, "negative dimension");
    a_.kernel = static_cast<Kernel>(k);
    a_.threads = static_cast<int>(get_int(o, "threads"));
    const uint64_t w = static_cast<uint64_t>(a_.width);
    const uint64_t n = checked_mul(env, static_cast<uint64_t>(a_.rows), w, "x");
    a_.x = static_cast<const float*>(pin(env, o.Get("x"), "x", checked_mul(env, n, 4, "x")));
    a_.sum_squares = static_cast<double*>(pin_inout(env, o.Get("sumSquares"), "sumSquares", checked_mul(env, w, 8, "sumSquares")));
    a_.sum_abs = static_cast<double*>(pin_inout(env, o.Get("sumAbs"), "sumAbs", checked_mul(env, w, 8, "sumAbs")));
    const Napi::Value h = o.Get("hessian");
    if (!h.IsUndefined() && !h.IsNull()) {
      const uint64_t hb = checked_mul(env, checked_mul(env, w, w, "hessian"), 4, "hessian");
      a_.hessian = static_cast<float*>(pin_inout(env, h, "hessian", hb));
      const uint64_t sr = std::min<uint64_t>(w, static_cast<uint64_t>(kHessianBlockRows));
      a_.scratch = static_cast<float*>(pin_output(env, o.Get("scratch"), "scratch", checked_mul(env, checked_mul(env, sr, w, "scratch"), 4, "scratch")));
    }
  }
  Status run() override { return accumulate_activation_stats(a_); }
  Napi::Value result(Napi::Env env) override { return env.Undefined(); }

 private:
  ActStatsArgs a_;
};

}  // namespace

void register_calib(Napi::Env env, Napi::Object exports) {
  exports.Set("gptq", Napi::Function::New(env, run_job<GptqJob>, "gptq"));
  exports.Set("activationStats", Napi::Function::New(env, run_job<ActStatsJob>, "activationStats"));
}

}  // namespace addon
}  // namespace st
