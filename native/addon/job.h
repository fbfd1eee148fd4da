// Runs a core operation synchronously or on the libuv thread pool.
//
// A Job pins the JS buffers it reads and writes (references keep them
// alive), runs its core call without touching any napi value, and on the
// main thread checks that no buffer was detached or shrunk meanwhile; if one
// was, the result is an ERR_DETACHED rejection instead of data.
#pragma once
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "../core/tensor.h"

namespace st {
namespace addon {

// Creates the SlimTensorError registered by lib/native.ts (a plain Error
// with a `code` property before registration).
Napi::Error make_error(Napi::Env env, Code code, const std::string& message);
[[noreturn]] void throw_error(Napi::Env env, Code code, const std::string& message);

class Job {
 public:
  virtual ~Job() = default;
  // Off the main thread when async: no napi calls.
  virtual Status run() = 0;
  // On the main thread after a successful run.
  virtual Napi::Value result(Napi::Env env) { return env.Undefined(); }

  // Pins a TypedArray argument and returns its data pointer after checking
  // that it holds exactly `expect_bytes` bytes (or at least, if !exact).
  void* pin(Napi::Env env, const Napi::Value& v, const char* what, uint64_t expect_bytes, bool exact = true);
  // pin() for a buffer the operation overwrites entirely (freshly
  // allocated by lib/): also asks the kernel for transparent huge pages,
  // so first-touch faults do not dominate memory-bound kernels.
  void* pin_output(Napi::Env env, const Napi::Value& v, const char* what, uint64_t bytes);
  // Like pin(), but null/undefined give nullptr.
  void* pin_optional(Napi::Env env, const Napi::Value& v, const char* what, uint64_t expect_bytes);

  // The first pinned buffer that was detached or resized, or "".
  std::string changed_buffer(Napi::Env env) const;

 private:
  struct Pinned {
    Napi::Reference<Napi::ArrayBuffer> buffer;
    size_t byte_length;
    std::string what;
  };
  std::vector<Pinned> pinned_;
};

// Runs the job now (sync: returns its result or throws) or queues it
// (async: returns a Promise).
Napi::Value dispatch(Napi::Env env, std::unique_ptr<Job> job, bool async);

// The N-API function of a Job type J built from (env, argument object):
// fn(args, async) -> result or Promise. Register as Napi::Function::New(env, run_job<J>).
template <class J>
Napi::Value run_job(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw_error(env, Code::Internal, "expected an argument object");
  return dispatch(env, std::make_unique<J>(env, info[0].As<Napi::Object>()), info[1].ToBoolean().Value());
}

// Small readers for the plain argument objects lib/ builds.
int64_t get_int(const Napi::Object& o, const char* key);
bool get_bool(const Napi::Object& o, const char* key);
// A dtype code that must name f32, f16 or bf16 (ERR_DTYPE naming `key` otherwise).
DType get_float_dtype(const Napi::Object& o, const char* key);
uint64_t checked_mul(Napi::Env env, uint64_t a, uint64_t b, const char* what);

}  // namespace addon
}  // namespace st
