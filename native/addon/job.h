// Runs a core operation synchronously or on the libuv thread pool.
//
// A Job pins the JS buffers it reads and writes, runs its core call without
// touching any napi value, and on the main thread checks that no buffer was
// detached or resized meanwhile; if one was, the result is an ERR_DETACHED
// rejection instead of data.
//
// The boundary's safety rules live here, so that no binding can skip them:
// - pin() accepts only TypedArrays over a fixed-length, attached
//   ArrayBuffer: SharedArrayBuffers and resizable ArrayBuffers are ERR_VALUE,
//   a detached buffer ERR_DETACHED.
// - An async call must not let its memory move or be freed while a kernel
//   runs. pin() marks the caller's buffers untransferable
//   (worker_threads.markAsUntransferable, registered by lib/native.ts) where
//   that mark stops every transfer the runtime offers to plain JS; where it
//   does not (ArrayBuffer.prototype.transfer ignores it before Node's detach
//   keys), or when SLIMTENSOR_ASYNC_BUFFERS=copy, the kernel works on private
//   copies instead (see buffer_policy()). Outputs lib/ allocated for this
//   very call (args.fresh) are unreachable from JS until the call returns:
//   they are neither marked nor copied.
// - Index-like inputs (labels, top-k indices) are copied when the call
//   starts (copy_in), so what the kernel validated is what it uses.
// - No C++ exception leaves the boundary: run() failures become ERR_SHAPE
//   (out of memory) or ERR_INTERNAL, sync and async, and a call whose
//   environment is torn down (worker.terminate(), exit) ends quietly.
#pragma once
#include <napi.h>

#include <functional>
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

// How async calls protect the caller's buffers in this environment:
// "mark" (zero-copy, marked untransferable) or "copy" (private copies), and why.
struct BufferPolicy {
  bool copy;
  std::string reason;
};
BufferPolicy buffer_policy(Napi::Env env);

class Job {
 public:
  Job();
  virtual ~Job();
  // Off the main thread when async: no napi calls.
  virtual Status run() = 0;
  // On the main thread after a successful run.
  virtual Napi::Value result(Napi::Env env) { return env.Undefined(); }

  // Pins a TypedArray the operation reads and returns its data pointer after
  // checking that it holds exactly `expect_bytes` bytes (or at least, if !exact).
  void* pin(Napi::Env env, const Napi::Value& v, const char* what, uint64_t expect_bytes, bool exact = true);
  // pin() for a buffer the operation reads and writes (accumulate, in place).
  void* pin_inout(Napi::Env env, const Napi::Value& v, const char* what, uint64_t bytes);
  // pin() for a buffer the operation overwrites entirely (on success): also
  // asks the kernel for transparent huge pages, so first-touch faults do not
  // dominate memory-bound kernels.
  void* pin_output(Napi::Env env, const Napi::Value& v, const char* what, uint64_t bytes);
  // Like pin() / pin_output(), but null/undefined give nullptr.
  void* pin_optional(Napi::Env env, const Napi::Value& v, const char* what, uint64_t expect_bytes);
  void* pin_output_optional(Napi::Env env, const Napi::Value& v, const char* what, uint64_t bytes);
  // Copies an index-like input (values used to compute addresses) now, on
  // the main thread: the kernel validates and uses this copy, which the
  // caller cannot change during the call. Checked like pin().
  const void* copy_in(Napi::Env env, const Napi::Value& v, const char* what, uint64_t expect_bytes);
  const void* copy_in_optional(Napi::Env env, const Napi::Value& v, const char* what, uint64_t expect_bytes);

  // The first pinned buffer that was detached or resized, or "".
  std::string changed_buffer(Napi::Env env) const;
  // Copy mode: writes the private copies of written buffers back into the
  // caller's memory (main thread, after a successful run, unchanged buffers).
  void copy_back();

 private:
  enum class Access { In, InOut, Out };
  struct Pinned;
  void* pin_as(Napi::Env env, const Napi::Value& v, const char* what, uint64_t expect_bytes, bool exact, Access access);
  std::vector<std::unique_ptr<Pinned>> pinned_;
  std::vector<std::unique_ptr<uint8_t[]>> copies_;  // copy_in's buffers
  bool async_;  // from the PinScope the job was built in (none: treated as async)
};

// Set by run_job around a Job's construction: whether the call is async
// and which outputs lib/ allocated for it (args.fresh).
class PinScope {
 public:
  PinScope(Napi::Env env, const Napi::Object& args, bool async);
  ~PinScope();
  static const PinScope* current();
  bool async() const { return async_; }
  const std::vector<napi_value>& fresh() const { return fresh_; }

 private:
  bool async_;
  std::vector<napi_value> fresh_;
  const PinScope* prev_;
};

// Runs the job now (sync: returns its result or throws) or queues it
// (async: returns a Promise).
Napi::Value dispatch(Napi::Env env, std::unique_ptr<Job> job, bool async);

// Runs `f` and turns any C++ exception other than a Napi::Error into a
// thrown SlimTensorError: nothing else may cross into V8.
Napi::Value guard(Napi::Env env, const std::function<Napi::Value()>& f);

// The N-API function of a Job type J built from (env, argument object):
// fn(args, async) -> result or Promise. Register as Napi::Function::New(env, run_job<J>).
template <class J>
Napi::Value run_job(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    if (!info[0].IsObject()) throw_error(env, Code::Internal, "expected an argument object");
    const Napi::Object args = info[0].As<Napi::Object>();
    const bool async = info[1].ToBoolean().Value();
    std::unique_ptr<Job> job;
    {
      PinScope scope(env, args, async);
      job = std::make_unique<J>(env, args);
    }
    return dispatch(env, std::move(job), async);
  });
}

// Small readers for the plain argument objects lib/ builds.
int64_t get_int(const Napi::Object& o, const char* key);
bool get_bool(const Napi::Object& o, const char* key);
double get_double(const Napi::Object& o, const char* key);
// A dtype code that must name f32, f16 or bf16 (ERR_DTYPE naming `key` otherwise).
DType get_float_dtype(const Napi::Object& o, const char* key);
uint64_t checked_mul(Napi::Env env, uint64_t a, uint64_t b, const char* what);

}  // namespace addon
}  // namespace st
