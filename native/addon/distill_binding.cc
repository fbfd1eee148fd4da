// distillLoss: argument object -> DistillArgs, run as a Job.
#include "../core/distill/distill.h"

#include <cmath>

#include "job.h"

namespace st {
namespace addon {

namespace {

DType get_float_dtype(const Napi::Object& o, const char* key, const char* what) {
  const int64_t v = get_int(o, key);
  if (v < 0 || v > 2) throw_error(o.Env(), Code::DType, std::string(what) + " must be f32, f16 or bf16");
  return static_cast<DType>(v);
}

float get_float(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw_error(o.Env(), Code::Internal, std::string("argument field ") + key + " must be a number");
  return static_cast<float>(v.As<Napi::Number>().DoubleValue());
}

int64_t get_code(const Napi::Object& o, const char* key, int64_t max) {
  const int64_t v = get_int(o, key);
  if (v < 0 || v > max) throw_error(o.Env(), Code::Value, std::string("unknown ") + key + " code");
  return v;
}

class DistillJob : public Job {
 public:
  DistillJob(Napi::Env env, const Napi::Object& o) {
    a_.student.dtype = get_float_dtype(o, "studentDtype", "student");
    a_.student.rows = get_int(o, "rows");
    a_.student.cols = get_int(o, "cols");
    if (a_.student.rows < 0 || a_.student.cols < 0) throw_error(env, Code::Shape, "negative dimension");
    const uint64_t n = checked_mul(env, static_cast<uint64_t>(a_.student.rows), static_cast<uint64_t>(a_.student.cols), "student");
    const uint64_t zbytes = checked_mul(env, n, dtype_size(a_.student.dtype), "student");
    a_.student.data = pin(env, o.Get("student"), "student", zbytes);

    a_.teacher.rows = a_.student.rows;
    a_.teacher.cols = a_.student.cols;
    if (o.Get("teacher").IsNull()) {
      a_.k = get_int(o, "k");
      if (a_.k < 0) throw_error(env, Code::Shape, "negative k");
      const uint64_t kn = checked_mul(env, static_cast<uint64_t>(a_.student.rows), static_cast<uint64_t>(a_.k), "teacher");
      const uint64_t kbytes = checked_mul(env, kn, 4, "teacher");
      a_.topk_indices = static_cast<const int32_t*>(copy_in(env, o.Get("topkIndices"), "teacher.indices", kbytes));
      a_.topk_logprobs = static_cast<const float*>(pin(env, o.Get("topkLogprobs"), "teacher.logprobs", kbytes));
    } else {
      a_.teacher.dtype = get_float_dtype(o, "teacherDtype", "teacher");
      a_.teacher.data = pin(env, o.Get("teacher"), "teacher", checked_mul(env, n, dtype_size(a_.teacher.dtype), "teacher"));
    }
    // Index-like: copied, so the rows the kernel checked are the rows it addresses.
    a_.labels = static_cast<const int32_t*>(copy_in_optional(env, o.Get("labels"), "labels", static_cast<uint64_t>(a_.student.rows) * 4));
    a_.ignore_index = get_int(o, "ignoreIndex");
    a_.temperature = get_float(o, "temperature");
    a_.alpha = get_float(o, "alpha");
    a_.beta = get_float(o, "beta");
    a_.divergence = static_cast<Divergence>(get_code(o, "divergence", 2));
    a_.reduction = static_cast<Reduction>(get_code(o, "reduction", 2));
    a_.kernel = static_cast<Kernel>(get_code(o, "kernel", 4));
    a_.threads = static_cast<int>(get_int(o, "threads"));
    Napi::Value g = o.Get("grad");
    if (!g.IsNull() && !g.IsUndefined()) {
      // A fresh buffer is overwritten entirely (huge-page hint); the
      // caller's own (or the student's, in place) is used as it is.
      a_.grad = get_bool(o, "gradFresh") ? pin_output(env, g, "grad", zbytes) : pin_inout(env, g, "grad", zbytes);
    }
    a_.row_loss = static_cast<float*>(pin_output_optional(env, o.Get("rowLoss"), "rowLoss", static_cast<uint64_t>(a_.student.rows) * 4));
  }

  Status run() override { return distill_loss(a_, &res_); }

  Napi::Value result(Napi::Env env) override { return Napi::Number::New(env, res_.loss); }

 private:
  DistillArgs a_;
  DistillResult res_;
};

}  // namespace

void register_distill(Napi::Env env, Napi::Object exports) {
  exports.Set("distillLoss", Napi::Function::New(env, run_job<DistillJob>, "distillLoss"));
}

}  // namespace addon
}  // namespace st
