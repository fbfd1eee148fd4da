#include "job.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace st {
namespace addon {

namespace {

struct InstanceData {
  Napi::FunctionReference error_class;
};

InstanceData* instance(Napi::Env env) {
  auto* d = env.GetInstanceData<InstanceData>();
  if (!d) {
    d = new InstanceData();
    env.SetInstanceData(d);
  }
  return d;
}

class Worker : public Napi::AsyncWorker {
 public:
  Worker(Napi::Env env, std::unique_ptr<Job> job)
      : Napi::AsyncWorker(env, "slimtensor"), job_(std::move(job)), deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override { status_ = job_->run(); }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    const std::string changed = job_->changed_buffer(env);
    if (!changed.empty()) {
      deferred_.Reject(make_error(env, Code::Detached,
                                  changed + " was detached or resized while the operation ran; its result was discarded")
                           .Value());
    } else if (!status_.ok()) {
      deferred_.Reject(make_error(env, status_.code, status_.message).Value());
    } else {
      try {
        deferred_.Resolve(job_->result(env));
      } catch (const Napi::Error& e) {
        deferred_.Reject(e.Value());
      }
    }
    job_.reset();  // releases the buffer references on the main thread
  }

 private:
  std::unique_ptr<Job> job_;
  Napi::Promise::Deferred deferred_;
  Status status_;
};

}  // namespace

Napi::Error make_error(Napi::Env env, Code code, const std::string& message) {
  InstanceData* d = instance(env);
  if (!d->error_class.IsEmpty()) {
    Napi::Object e = d->error_class.New({Napi::String::New(env, message), Napi::String::New(env, code_name(code))});
    return Napi::Error(env, e);
  }
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code_name(code)));
  return e;
}

void throw_error(Napi::Env env, Code code, const std::string& message) { throw make_error(env, code, message); }

Napi::Value set_error_class(const Napi::CallbackInfo& info);

void* Job::pin(Napi::Env env, const Napi::Value& v, const char* what, uint64_t expect_bytes, bool exact) {
  if (!v.IsTypedArray()) throw_error(env, Code::Value, std::string(what) + " must be a TypedArray");
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  Napi::ArrayBuffer ab = ta.ArrayBuffer();
  const size_t bytes = ta.ByteLength();
  if (exact ? bytes != expect_bytes : bytes < expect_bytes) {
    throw_error(env, Code::Shape, std::string(what) + " holds " + std::to_string(bytes) + " bytes, expected " +
                                      (exact ? "" : "at least ") + std::to_string(expect_bytes));
  }
  pinned_.push_back({Napi::Persistent(ab), ab.ByteLength(), what});
  if (bytes == 0) return nullptr;
  return static_cast<uint8_t*>(ab.Data()) + ta.ByteOffset();
}

void* Job::pin_output(Napi::Env env, const Napi::Value& v, const char* what, uint64_t bytes) {
  void* p = pin(env, v, what, bytes);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  // A hint only (THP in "madvise" mode honours it); 2 MiB-aligned interior.
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  if (p && bytes >= 2 * kHuge) {
    const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
    if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE);
  }
#endif
  return p;
}

void* Job::pin_optional(Napi::Env env, const Napi::Value& v, const char* what, uint64_t expect_bytes) {
  if (v.IsNull() || v.IsUndefined()) return nullptr;
  return pin(env, v, what, expect_bytes);
}

std::string Job::changed_buffer(Napi::Env env) const {
  for (const Pinned& p : pinned_) {
    Napi::ArrayBuffer ab = p.buffer.Value();
    if (ab.IsDetached() || ab.ByteLength() != p.byte_length) return p.what;
  }
  (void)env;
  return "";
}

Napi::Value dispatch(Napi::Env env, std::unique_ptr<Job> job, bool async) {
  if (async) {
    auto* w = new Worker(env, std::move(job));
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  }
  Status s = job->run();
  if (!s.ok()) throw_error(env, s.code, s.message);
  return job->result(env);
}

int64_t get_int(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw_error(o.Env(), Code::Internal, std::string("argument field ") + key + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= -9007199254740991.0 && d <= 9007199254740991.0) || d != static_cast<double>(static_cast<int64_t>(d))) {
    throw_error(o.Env(), Code::Value, std::string("argument field ") + key + " must be a safe integer");
  }
  return static_cast<int64_t>(d);
}

bool get_bool(const Napi::Object& o, const char* key) { return o.Get(key).ToBoolean().Value(); }

DType get_float_dtype(const Napi::Object& o, const char* key) {
  const int64_t v = get_int(o, key);
  if (v < 0 || v > 6) throw_error(o.Env(), Code::DType, std::string("unknown dtype code for ") + key);
  const DType t = static_cast<DType>(v);
  if (!is_float_dtype(t)) throw_error(o.Env(), Code::DType, std::string(key) + " must be f32, f16 or bf16, got " + dtype_name(t));
  return t;
}

uint64_t checked_mul(Napi::Env env, uint64_t a, uint64_t b, const char* what) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) throw_error(env, Code::Shape, std::string(what) + ": size overflows 64 bits");
  return r;
}

Napi::Value set_error_class(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) throw_error(info.Env(), Code::Internal, "setErrorClass needs a constructor");
  instance(info.Env())->error_class = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

}  // namespace addon
}  // namespace st
